/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the URL grammar of the HTTP client (http/client_url.c,
 * through es__creq_new(), which parses the URL and serializes the request)
 * and the listen-address grammar, es_addr_parse() (actors/addr.c). For a
 * URL that is accepted, the request must be one well-formed head: a
 * request line with a target starting with '/', CRLF only as line ends, a
 * Host field, a blank line at the end. For an address: only the errors its
 * contract names; a 0 return fills a sockaddr of the family and length
 * the address's form states; formatted back to text (inet_ntop) it parses
 * to the same bytes; es_listen() accepts or refuses it alike (checked
 * with no descriptor left, so that nothing is ever bound).
 */
#include "fuzz_util.h"

#include "client_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/un.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Never started: es_listen() needs a runtime, not
 * its threads, and without threads this process stays single-threaded. */
static es_runtime_t *g_rt;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    es_runtime_opts_t ro = {.threads = 1};
    if (es_runtime_new(&ro, &g_rt))
        fz_fail("es_runtime_new failed");
    return 0;
}

static void no_reply(const es_http_reply_t *r, void *arg)
{
    fz_fail("a callback ran for a request that was never sent");
}

static void no_fail(int err, void *arg)
{
    fz_fail("a callback ran for a request that was never sent");
}

static int no_conn(es_actor_t *self, es_msg_t *msg)
{
    fz_fail("a connection actor ran although nothing listens");
}

/* The serialized head of an accepted URL must be well formed. */
static void check_request(const struct es__creq *r)
{
    const char *d = r->data;
    if (r->len < 5 || memcmp(d, "GET /", 5) != 0)
        fz_fail("request line: %.*s", (int)r->len, d);
    const char *end = memmem(d, r->len, "\r\n\r\n", 4);
    if (!end || (size_t)(end + 4 - d) != r->len)
        fz_fail("the head does not end once, at the end");
    const char *line_end = memmem(d, r->len, "\r\n", 2);
    if (memmem(d, (size_t)(line_end - d), " HTTP/1.1", 9) != line_end - 9)
        fz_fail("the request target contains a space or CR/LF");
    for (const char *p = d; p < end; p++)
        if ((*p == '\r') != (p[1] == '\n') || (*p == '\n' && p[-1] != '\r'))
            fz_fail("a bare CR or LF in the head at byte %zu", (size_t)(p - d));
    if (!memmem(d, r->len, "\r\nHost: ", 8))
        fz_fail("no Host field");
    if (!r->host[0] || r->port == 0)
        fz_fail("empty host or port 0 accepted");
}

static void fuzz_client_url(const char *url)
{
    es_http_client_req_t req = {.url = url};
    struct es__creq *r = NULL;
    int rc = es__creq_new(NULL, &req, no_reply, no_fail, NULL, &r);
    if (rc == 0) {
        check_request(r);
        es__creq_free(r);
    } else if (rc != -EINVAL) {
        fz_fail("es__creq_new: %d", rc);
    }
}

/* A sockaddr as text in es_addr_parse()'s grammar: "a.b.c.d:port",
 * "[v6]:port" or "unix:path". */
static void format_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
    const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
    if (ss->ss_family == AF_UNIX) {
        snprintf(out, n, "unix:%s", un->sun_path);
    } else if (ss->ss_family == AF_INET &&
               inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof(ip))) {
        snprintf(out, n, "%s:%u", ip, (unsigned)ntohs(v4->sin_port));
    } else if (ss->ss_family == AF_INET6 &&
               inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof(ip))) {
        snprintf(out, n, "[%s]:%u", ip, (unsigned)ntohs(v6->sin6_port));
    } else {
        fz_fail("inet_ntop refused a parsed address");
    }
}

/* The family and length an accepted address must have, by its form. */
static void check_sockaddr(const char *addr, const struct sockaddr_storage *ss,
                           socklen_t len)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
    if (strncmp(addr, "unix:", 5) == 0) {
        size_t n = strlen(addr + 5);
        if (ss->ss_family != AF_UNIX ||
            len != offsetof(struct sockaddr_un, sun_path) + n + 1 ||
            memcmp(un->sun_path, addr + 5, n + 1) != 0)
            fz_fail("\"%s\": not the Unix address of that path", addr);
    } else if (addr[0] == '[') {
        if (ss->ss_family != AF_INET6 || len != sizeof(struct sockaddr_in6))
            fz_fail("\"%s\": family %d, length %u", addr, ss->ss_family,
                    (unsigned)len);
    } else if (ss->ss_family != AF_INET || len != sizeof(struct sockaddr_in)) {
        fz_fail("\"%s\": family %d, length %u", addr, ss->ss_family,
                (unsigned)len);
    }
}

/* An accepted address, formatted back to text, parses to the same bytes. */
static void check_round_trip(const char *addr,
                             const struct sockaddr_storage *ss, socklen_t len)
{
    char text[sizeof(struct sockaddr_un) + 8];
    struct sockaddr_storage again;
    socklen_t again_len = 0;
    memset(&again, 0x5a, sizeof(again));
    format_addr(ss, text, sizeof(text));
    int rc = es_addr_parse(text, &again, &again_len);
    if (rc || again_len != len || memcmp(ss, &again, len) != 0)
        fz_fail("\"%s\" -> \"%s\" does not parse to the same sockaddr (%d)",
                addr, text, rc);
}

/*
 * es_listen()'s verdict: with no file descriptor left (RLIMIT_NOFILE 0) an
 * address it parsed fails at socket() with -EMFILE before anything is
 * bound or created; a refused one fails with es_addr_parse()'s error.
 */
static int listen_verdict(const char *addr)
{
    struct rlimit old, none = {0, 0};
    if (getrlimit(RLIMIT_NOFILE, &old))
        fz_fail("getrlimit");
    none.rlim_max = old.rlim_max;
    es_listen_opts_t lo = {.address = addr, .conn.behaviour = no_conn};
    es_listener_t *l = NULL;
    if (setrlimit(RLIMIT_NOFILE, &none))
        fz_fail("setrlimit");
    int rc = es_listen(g_rt, &lo, &l);
    (void)setrlimit(RLIMIT_NOFILE, &old);
    if (rc == 0)
        fz_fail("es_listen bound a socket with no descriptor left");
    return rc;
}

/*
 * es_addr_parse(), the one address grammar: the error codes its contract
 * names, the same verdict without output pointers, a sockaddr of the form's
 * family and length, a round trip through text, and es_listen() agreeing.
 */
static void fuzz_address(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    memset(&ss, 0xa5, sizeof(ss));
    int rc = es_addr_parse(addr, &ss, &len);
    if (rc != 0 && rc != -EINVAL && rc != -ENAMETOOLONG)
        fz_fail("es_addr_parse(\"%s\"): %d", addr, rc);
    if (es_addr_parse(addr, NULL, NULL) != rc)
        fz_fail("es_addr_parse(\"%s\"): another verdict without ss", addr);
    if (rc == 0) {
        check_sockaddr(addr, &ss, len);
        check_round_trip(addr, &ss, len);
    }
    int lrc = listen_verdict(addr);
    if (lrc != (rc ? rc : -EMFILE))
        fz_fail("address \"%s\": es_addr_parse %d, es_listen %d", addr, rc,
                lrc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        fz_fail("out of memory");
    memcpy(s, data, size);
    s[size] = '\0';
    fuzz_client_url(s);
    /* Every input goes to both parsers: a URL's authority and a listen
     * address share most of their syntax. */
    fuzz_address(s);
    free(s);
    return 0;
}
