/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the URL grammar of the HTTP client (http/client_url.c,
 * through es__creq_new(), which parses the URL and serializes the request)
 * and the listen-address grammar. For a URL that is accepted, the request
 * must be one well-formed head: a request line with a target starting
 * with '/', CRLF only as line ends, a Host field, a blank line at the end.
 * Addresses are parsed by two functions today (issue 8 defect 9):
 * es_http_server_listen()'s check in http/server.c and parse_address() in
 * actors/acceptor.c, reached through es_listen(); both must give the same
 * verdict. address_verdicts() is the only call site: point it at the one
 * public parser once there is one.
 */
#include "fuzz_util.h"

#include "client_private.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Never started: es_listen() and es_http_server_new() need a runtime, not
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

/*
 * acceptor.c's verdict through es_listen(): with no file descriptor left
 * (RLIMIT_NOFILE 0) a parsed address fails at socket() with -EMFILE before
 * anything is bound or created, and a malformed one fails with -EINVAL.
 */
static bool acceptor_accepts(const char *addr)
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
    if (rc != -EMFILE && rc != -EINVAL)
        fz_fail("es_listen(\"%s\"): %d", addr, rc);
    return rc == -EMFILE;
}

/* http/server.c's verdict, on a server that is never started. */
static bool http_server_accepts(const char *addr)
{
    es_http_server_t *s;
    if (es_http_server_new(g_rt, NULL, &s))
        fz_fail("es_http_server_new failed");
    int rc = es_http_server_listen(s, addr);
    es_http_server_free(s);
    if (rc && rc != -EINVAL)
        fz_fail("es_http_server_listen: %d", rc);
    return rc == 0;
}

static void address_verdicts(const char *addr, bool *a, bool *b)
{
    *a = acceptor_accepts(addr);
    *b = http_server_accepts(addr);
}

static void fuzz_address(const char *addr)
{
    bool acc, http;
    address_verdicts(addr, &acc, &http);
    if (acc == http || !ES_FUZZ_KNOWN_DEFECTS)
        return; /* !ES_FUZZ_KNOWN_DEFECTS: issue 8 defect 9, two grammars */
    fz_fail("address \"%s\": the acceptor %s it, es_http_server_listen %s it",
            addr, acc ? "accepts" : "refuses", http ? "accepts" : "refuses");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        fz_fail("out of memory");
    memcpy(s, data, size);
    s[size] = '\0';
    fuzz_client_url(s);
    /* Every input goes to both grammars: a URL's authority and a listen
     * address share most of their syntax. */
    fuzz_address(s);
    free(s);
    return 0;
}
