/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the HTTP client (http/client*.c) against a fake server
 * that answers with the fuzz bytes. One runtime and client per process;
 * the fake server is a loopback listening socket served by the fuzzing
 * thread. Each input: the first byte picks the method (GET, HEAD or POST)
 * and whether the reply is written in two pieces; the rest is the reply,
 * after which the fake server half-closes. Checked: exactly one callback
 * per request (a second one aborts at once, wherever it comes from); a
 * reply's status is three digits, its version 10 or 11, and a HEAD reply
 * has no body; a failure is one of the documented codes; a POST reaches
 * the server at most once.
 */
#include "fuzz_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SLOTS 64    /* requests whose callback count is watched */
#define MAX_CONNS 4 /* connections one request may open (retries) */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct slot {
    atomic_int calls;
    bool head;
};

static es_runtime_t *g_rt;
static es_http_client_t *g_client;
static int g_lfd;
static char g_url[64];
static struct slot g_slots[SLOTS];
static unsigned g_seq;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    es_runtime_opts_t ro = {.threads = 2};
    if (es_runtime_new(&ro, &g_rt) || es_runtime_start(g_rt) ||
        es_http_client_new(g_rt, NULL, &g_client))
        fz_fail("client start failed");
    g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (g_lfd < 0 || bind(g_lfd, (struct sockaddr *)&a, sizeof(a)) ||
        listen(g_lfd, 16) || getsockname(g_lfd, (struct sockaddr *)&a, &len))
        fz_fail("fake server: %s", strerror(errno));
    snprintf(g_url, sizeof(g_url), "http://127.0.0.1:%u/fuzz",
             (unsigned)ntohs(a.sin_port));
    return 0;
}

static void called(struct slot *s)
{
    if (atomic_fetch_add(&s->calls, 1) != 0)
        fz_fail("a second callback for one request");
}

static void on_reply(const es_http_reply_t *r, void *arg)
{
    struct slot *s = arg;
    int st = es_http_reply_status(r);
    size_t len;
    const char *body = es_http_reply_body(r, &len);
    int v = es_http_reply_version(r);
    if (st < 100 || st > 999)
        fz_fail("a reply with status %d", st);
    if (v != 10 && v != 11)
        fz_fail("a reply with version %d", v);
    if (!body || body[len] != '\0' || (s->head && len))
        fz_fail("a reply body of %zu bytes (HEAD: %d)", len, s->head);
    called(s);
}

static void on_fail(int err, void *arg)
{
    if (err != -ECONNRESET && err != -EPROTO && err != -EMSGSIZE &&
        err != -ETIMEDOUT && err != -ENOMEM)
        fz_fail("on_fail(%d): not a code the header documents here", err);
    called(arg);
}

/* One connection of the fake server. */
struct fconn {
    int fd;
    size_t got; /* request bytes read */
    bool answered;
    char req[8192];
};

/* True once c holds a whole request (head, and the POST's 3-byte body). */
static bool have_request(const struct fconn *c)
{
    const char *end = memmem(c->req, c->got, "\r\n\r\n", 4);
    if (!end)
        return false;
    size_t need = (size_t)(end + 4 - c->req);
    if (memcmp(c->req, "POST ", 5) == 0)
        need += 3;
    return c->got >= need;
}

static void answer(struct fconn *c, const uint8_t *p, size_t n, size_t cut)
{
    if (n && cut && cut < n) {
        (void)send(c->fd, p, cut, MSG_NOSIGNAL);
        usleep(200); /* lets the client read the first piece alone */
        (void)send(c->fd, p + cut, n - cut, MSG_NOSIGNAL);
    } else if (n) {
        (void)send(c->fd, p, n, MSG_NOSIGNAL);
    }
    (void)shutdown(c->fd, SHUT_WR);
    c->answered = true;
}

/* Reads from c; answers once the request is whole. Returns POSTs seen. */
static int serve(struct fconn *c, const uint8_t *p, size_t n, size_t cut)
{
    char tmp[4096];
    ssize_t r =
        recv(c->fd, c->answered ? tmp : c->req + c->got,
             c->answered ? sizeof(tmp) : sizeof(c->req) - c->got, MSG_DONTWAIT);
    if (r <= 0 || c->answered)
        return 0;
    c->got += (size_t)r;
    if (c->got == sizeof(c->req))
        fz_fail("a request head of 8 KiB");
    if (!have_request(c))
        return 0;
    answer(c, p, n, cut);
    return memcmp(c->req, "POST ", 5) == 0;
}

static void serve_until_called(struct slot *s, const uint8_t *p, size_t n,
                               size_t cut)
{
    static struct fconn conns[MAX_CONNS];
    size_t nc = 0;
    int posts = 0;
    uint64_t end = fz_now_ms() + FZ_WAIT_MS;
    while (!atomic_load(&s->calls)) {
        struct pollfd pf[MAX_CONNS + 1] = {{.fd = g_lfd, .events = POLLIN}};
        for (size_t i = 0; i < nc; i++)
            pf[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        (void)poll(pf, nc + 1, 5);
        int fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            if (nc == MAX_CONNS)
                fz_fail("a request opened more than %d connections", MAX_CONNS);
            conns[nc].fd = fd;
            conns[nc].got = 0;
            conns[nc++].answered = false;
        }
        for (size_t i = 0; i < nc; i++)
            posts += serve(&conns[i], p, n, cut);
        if (posts > 1)
            fz_fail("the POST reached the server %d times", posts);
        if (fz_now_ms() > end)
            fz_fail("hang: no callback %d ms after the request", FZ_WAIT_MS);
    }
    for (size_t i = 0; i < nc; i++)
        close(conns[i].fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const methods[] = {"GET", "HEAD", "POST", "GET"};
    const char *method = methods[data[0] & 3];
    size_t cut = (size_t)(data[0] >> 2) * 4;
    struct slot *s = &g_slots[g_seq++ % SLOTS];
    atomic_store(&s->calls, 0);
    s->head = strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    es_http_client_req_t req = {.url = g_url,
                                .method = method,
                                .body = post ? "abc" : NULL,
                                .body_len = post ? 3 : 0,
                                .timeout_ms = 2000};
    int rc = es_http_client_request(g_client, &req, on_reply, on_fail, s);
    if (rc)
        fz_fail("es_http_client_request: %d", rc);
    serve_until_called(s, data + 1, size - 1, cut);
    return 0;
}
