/* SPDX-License-Identifier: MIT */
/*
 * Shared by the HTTP tests (tests/http/): a server fixture (runtime, server
 * on 127.0.0.1 port 0, tear-down bounded by timeouts), the same with one
 * client connection (struct htc), the raw-socket client of
 * http_client_sock.h, a few handlers most tests use with a stdio body
 * builder for others, and begin/write/end wrappers that retry -EAGAIN for
 * holders off the connection's thread. The fixtures and the HC_* macros
 * cr_assert() and belong to the test thread; handlers only count, in
 * atomics.
 */
#ifndef ES_HTTP_TEST_H
#define ES_HTTP_TEST_H

#include "http_client_sock.h"

#include <eventserver/http.h>

#include <stdio.h>

/* --- Server fixture ------------------------------------------------------- */

/* A runtime with one HTTP server listening on 127.0.0.1:port. */
struct hts {
    es_runtime_t *rt;
    es_http_server_t *srv;
    int port;
};

/* Starts a runtime of `threads` demux threads and creates the server (not
 * started: add routes, then hts_start()). opts may be NULL. */
static inline void hts_init(struct hts *t, unsigned threads,
                            const es_http_server_opts_t *opts)
{
    memset(t, 0, sizeof(*t));
    t->rt = es_test_runtime_start(threads);
    ES_OK(es_http_server_new(t->rt, opts, &t->srv));
    cr_assert_not_null(t->srv);
}

/* Adds a route; fails the test on error. */
static inline void hts_route(struct hts *t, const char *method,
                             const char *path, es_http_handler_cb cb, void *arg)
{
    ES_OK(es_http_server_route(t->srv, method, path, cb, arg));
}

/* Listens on 127.0.0.1 port 0, starts, and learns the port. */
static inline void hts_start(struct hts *t)
{
    int port;

    ES_OK(es_http_server_listen(t->srv, "127.0.0.1:0"));
    ES_OK(es_http_server_start(t->srv));
    port = es_http_server_port(t->srv, 0);
    cr_assert_gt(port, 0, "es_http_server_port = %d", port);
    t->port = port;
}

/* A one-thread server with the single route method path -> cb(arg),
 * started. */
static inline void hts_serve1(struct hts *t, const char *method,
                              const char *path, es_http_handler_cb cb,
                              void *arg)
{
    hts_init(t, 1, NULL);
    hts_route(t, method, path, cb, arg);
    hts_start(t);
}

/* The server's counters now. */
static inline es_http_server_stats_t hts_stats(const struct hts *t)
{
    es_http_server_stats_t st;

    memset(&st, 0, sizeof(st));
    ES_OK(es_http_server_stats(t->srv, &st));
    return st;
}

/* Polls until the server has exactly `n` open connections or secs pass. */
static inline bool hts_wait_conns(const struct hts *t, uint64_t n, double secs)
{
    double end = es_test_now() + secs;

    while (hts_stats(t).connections != n) {
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(2);
    }
    return true;
}

/* Fails the test unless the server reaches n open connections in time. */
#define HTS_WAIT_CONNS(t, n)                                                   \
    cr_assert(hts_wait_conns((t), (n), ES_TEST_WAIT_S),                        \
              "open connections: %llu, want %llu",                             \
              (unsigned long long)hts_stats(t).connections,                    \
              (unsigned long long)(n))

/* Polls until the server has accepted at least n connections in all. */
static inline bool hts_wait_accepted(const struct hts *t, uint64_t n,
                                     double secs)
{
    double end = es_test_now() + secs;

    while (hts_stats(t).accepted < n) {
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(2);
    }
    return true;
}

static inline void *hts_free_thread(void *srv)
{
    es_http_server_free(srv);
    return NULL;
}

/* es_http_server_free() on a helper thread, bounded by ES_TEST_JOIN_S. */
static inline void hts_free_server(struct hts *t)
{
    pthread_t th;

    if (!t->srv)
        return;
    cr_assert_eq(pthread_create(&th, NULL, hts_free_thread, t->srv), 0);
    cr_assert(es_test_join(th, NULL, ES_TEST_JOIN_S),
              "es_http_server_free() did not return in %.0f s", ES_TEST_JOIN_S);
    t->srv = NULL;
}

/* Frees the server, then the runtime; both bounded by timeouts. */
static inline void hts_fini(struct hts *t)
{
    hts_free_server(t);
    es_test_free(t->rt);
    t->rt = NULL;
}

/* --- A server and one connection ------------------------------------------ */

/* A server whose routes count in n (h_count), and one client connection:
 * where most single-connection tests start. */
struct htc {
    struct hts t;
    struct hc c;
    atomic_ullong n;
};

/* Sets up a file's server: hts_init(), its routes (h_count counting in
 * *count), hts_start(). */
typedef void (*htc_setup_cb)(struct hts *t, atomic_ullong *count,
                             const es_http_server_opts_t *o);

/* Starts the server with setup (opts o, may be NULL) and connects. */
static inline void htc_open(struct htc *x, htc_setup_cb setup,
                            const es_http_server_opts_t *o)
{
    atomic_init(&x->n, 0);
    setup(&x->t, &x->n, o);
    hc_open(&x->c, x->t.port);
}

/* Closes the connection (if still open), then the server. */
static inline void htc_close(struct htc *x)
{
    hc_close(&x->c);
    hts_fini(&x->t);
}

/* --- Handlers many tests use ---------------------------------------------- */

/* Answers with the NUL-terminated text in arg. */
static inline void h_text(es_http_request_t *req, es_http_response_t *res,
                          void *arg)
{
    (void)req;
    es_http_response_body(res, arg, strlen(arg));
}

/* Counts its calls in the atomic_ullong arg and answers "ok". */
static inline void h_count(es_http_request_t *req, es_http_response_t *res,
                           void *arg)
{
    (void)req;
    atomic_fetch_add((atomic_ullong *)arg, 1);
    es_http_response_body(res, "ok", 2);
}

/* Answers with the request's target, so that each response names its
 * request ("/echo-path?i=7"). */
static inline void h_target(es_http_request_t *req, es_http_response_t *res,
                            void *arg)
{
    const char *t = es_http_request_target(req);

    (void)arg;
    es_http_response_body(res, t, strlen(t));
}

/* Answers with the request body, and its size in X-Body-Len. */
static inline void h_echo_body(es_http_request_t *req, es_http_response_t *res,
                               void *arg)
{
    size_t len = 0;
    const void *b = es_http_request_body(req, &len);
    char n[32];

    (void)arg;
    snprintf(n, sizeof(n), "%zu", len);
    es_http_response_header(res, "X-Body-Len", n);
    es_http_response_body(res, b, len);
}

/* A response body built with stdio (open_memstream()). */
struct body_buf {
    FILE *f;
    char *out;
    size_t len;
};

/* Opens b->f to write the body to; NULL if memory runs out. */
static inline FILE *body_open(struct body_buf *b)
{
    b->out = NULL;
    b->len = 0;
    b->f = open_memstream(&b->out, &b->len);
    return b->f;
}

/* Closes b->f and makes what was written res's body. */
static inline void body_send(struct body_buf *b, es_http_response_t *res)
{
    fclose(b->f);
    es_http_response_body(res, b->out, b->len);
    free(b->out);
}

/* A malloc'd buffer of n pattern bytes (pat() of net_test.h). */
static inline char *pattern_alloc(size_t n)
{
    char *b = malloc(n + 1);

    cr_assert_not_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)pat(i);
    b[n] = '\0';
    return b;
}

/* True if p holds the pattern at offsets 0..n-1. */
static inline bool pattern_ok(const void *p, size_t n)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(i))
            return false;
    return true;
}

/* --- Holders off the connection's thread ------------------------------------
 */

/*
 * http.h: begin(), write() and end() called off the connection's thread
 * return -EAGAIN when the connection's mailbox is full (or, for write(),
 * its send queue is above write_high); nothing was done and the holder
 * calls again later. These retry for at most ES_TEST_WAIT_S and count the
 * retries in *again (may be NULL).
 */
static inline int res_begin_retry(es_http_response_t *res, unsigned *again)
{
    double end = es_test_now() + ES_TEST_WAIT_S;
    int rc;

    while ((rc = es_http_response_begin(res)) == -EAGAIN &&
           es_test_now() < end) {
        if (again)
            (*again)++;
        es_test_sleep_ms(1);
    }
    return rc;
}

static inline int res_write_retry(es_http_response_t *res, const void *data,
                                  size_t len, unsigned *again)
{
    double end = es_test_now() + ES_TEST_WAIT_S;
    int rc;

    while ((rc = es_http_response_write(res, data, len)) == -EAGAIN &&
           es_test_now() < end) {
        if (again)
            (*again)++;
        es_test_sleep_ms(1);
    }
    return rc;
}

static inline int res_end_retry(es_http_response_t *res, unsigned *again)
{
    double end = es_test_now() + ES_TEST_WAIT_S;
    int rc;

    while ((rc = es_http_response_end(res)) == -EAGAIN && es_test_now() < end) {
        if (again)
            (*again)++;
        es_test_sleep_ms(1);
    }
    return rc;
}

#endif /* ES_HTTP_TEST_H */
