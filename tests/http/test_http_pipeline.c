/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP server's parser state across reads and of pipelining
 * under pressure: two requests (one with a Content-Length body, one chunked
 * with an extension and a trailer) split at every byte offset into two
 * writes; 200 requests with bodies cut into segments of varying sizes; and
 * 3000 pipelined requests queued behind a deferred one, more than the
 * server buffers before it stops reading, all answered strictly in order;
 * a client that leaves while its pipelined requests wait unread behind a
 * deferred response; and a handler that streams more than the send
 * queue's high mark in one go.
 */
#include "http_test.h"

#include <netinet/tcp.h>
#include <stdio.h>

/* Answers "<target>|<body>". */
static void h_tb(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    size_t len = 0;
    const char *b = es_http_request_body(req, &len);
    const char *t = es_http_request_target(req);
    const char *tr = es_http_request_header(req, "X-Trailer");
    struct body_buf bb;
    FILE *f = body_open(&bb);

    (void)arg;
    if (!f)
        return;
    fprintf(f, "%s|", t);
    fwrite(b, 1, len, f);
    if (tr)
        fprintf(f, "|%s", tr);
    body_send(&bb, res);
}

/* --- A deferral finished by a short-lived thread ----------------------------
 */

static pthread_t g_th;
static atomic_int g_th_started;

/* Defers res and hands it to a new thread *th running fn(res); ends it at
 * once if the thread cannot start. True if the thread runs. */
static bool defer_to_thread(es_http_response_t *res, pthread_t *th,
                            void *(*fn)(void *))
{
    if (es_http_response_defer(res, NULL, NULL) != 0)
        return false;
    if (pthread_create(th, NULL, fn, res) != 0) {
        es_http_response_end(res);
        return false;
    }
    return true;
}

static void *end_later(void *res)
{
    es_test_sleep_ms(50);
    es_http_response_body(res, "late", 4);
    res_end_retry(res, NULL);
    return NULL;
}

static void h_later(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    if (defer_to_thread(res, &g_th, end_later))
        atomic_store(&g_th_started, 1);
}

static void pipe_fixture(struct hts *t)
{
    hts_init(t, 2, NULL);
    hts_route(t, NULL, "/p/*", h_tb, NULL);
    hts_route(t, "GET", "/later", h_later, NULL);
    hts_start(t);
}

static void nodelay(struct hc *c)
{
    int one = 1;

    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* --- Every split point
 * -------------------------------------------------------- */

static const char two_requests[] =
    "POST /p/a?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    "POST /p/b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t1\r\n\r\n";

Test(http_pipeline, split_at_every_offset, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    size_t len = sizeof(two_requests) - 1;

    pipe_fixture(&t);
    for (size_t k = 1; k < len; k++) {
        struct hc c;
        struct hr r;

        hc_open(&c, t.port);
        nodelay(&c);
        cr_assert(hc_send(&c, two_requests, k));
        es_test_sleep_ms(1);
        cr_assert(hc_send(&c, two_requests + k, len - k));
        HC_READ(&c, &r, 0);
        cr_assert_eq(r.status, 200, "split at %zu: %d", k, r.status);
        HR_BODY_IS(&r, "/p/a?x=1|hello");
        hr_release(&r);
        HC_READ(&c, &r, 0);
        cr_assert_eq(r.status, 200, "split at %zu: %d", k, r.status);
        HR_BODY_IS(&r, "/p/b|abcde|t1");
        hr_release(&r);
        hc_close(&c);
    }
    cr_assert_eq(hts_stats(&t).requests, 2 * (len - 1));
    hts_fini(&t);
}

/* --- Bodies in uneven segments
 * ------------------------------------------------ */

Test(http_pipeline, bodies_in_uneven_segments, .timeout = ES_TEST_TIMEOUT)
{
    enum { N = 200, BODY = 1000 };
    struct hts t;
    struct hc c;
    char *all = NULL;
    size_t all_len = 0, off = 0;
    unsigned seed = 12345;
    FILE *f;

    pipe_fixture(&t);
    f = open_memstream(&all, &all_len);
    cr_assert_not_null(f);
    for (int i = 0; i < N; i++) {
        fprintf(f, "POST /p/%d HTTP/1.1\r\nHost: t\r\n", i);
        if (i % 2) {
            fprintf(f, "Content-Length: %d\r\n\r\n", BODY);
            for (int j = 0; j < BODY; j++)
                fputc('a' + (i + j) % 26, f);
        } else {
            fputs("Transfer-Encoding: chunked\r\n\r\n", f);
            for (int j = 0; j < BODY; j += 250) {
                fputs("fa\r\n", f);
                for (int k = j; k < j + 250; k++)
                    fputc('a' + (i + k) % 26, f);
                fputs("\r\n", f);
            }
            fputs("0\r\n\r\n", f);
        }
    }
    fclose(f);
    hc_open(&c, t.port);
    nodelay(&c);
    /* Segments of 1..1500 bytes, read back as we go. */
    while (off < all_len) {
        size_t n = 1 + (seed = seed * 1103515245u + 12345u) % 1500;

        if (n > all_len - off)
            n = all_len - off;
        cr_assert(hc_send(&c, all + off, n));
        off += n;
    }
    free(all);
    for (int i = 0; i < N; i++) {
        struct hr r;
        char want[64];

        HC_READ(&c, &r, 0);
        snprintf(want, sizeof(want), "/p/%d|", i);
        cr_assert_eq(r.status, 200);
        cr_assert_eq(r.body_len, strlen(want) + BODY, "response %d", i);
        cr_assert(memcmp(r.body, want, strlen(want)) == 0, "response %d: %.20s",
                  i, r.body);
        for (int j = 0; j < BODY; j++)
            cr_assert_eq(r.body[strlen(want) + j], 'a' + (i + j) % 26,
                         "response %d byte %d", i, j);
        hr_release(&r);
    }
    hc_close(&c);
    hts_fini(&t);
}

/* "GET <first>" and then n GETs of /p/flood?i=<i>, in one buffer (the
 * caller frees it). */
static char *flood_requests(const char *first, int n, size_t *len)
{
    char *all = NULL;
    FILE *f = open_memstream(&all, len);

    cr_assert_not_null(f);
    fprintf(f, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", first);
    for (int i = 0; i < n; i++)
        fprintf(f, "GET /p/flood?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    fclose(f);
    return all;
}

/* --- A flood behind a deferred response -------------------------------------
 */

Test(http_pipeline, flood_behind_deferred, .timeout = ES_TEST_TIMEOUT)
{
    enum { N = 3000 };
    struct hts t;
    struct hc c;
    size_t all_len = 0;
    char *all;

    pipe_fixture(&t);
    all = flood_requests("/later", N, &all_len);
    cr_assert_gt(all_len, 100000);
    hc_open(&c, t.port);
    cr_assert(hc_send(&c, all, all_len));
    free(all);
    HC_EXPECT_BODY(&c, "late");
    for (int i = 0; i < N; i++) {
        char want[64];

        snprintf(want, sizeof(want), "/p/flood?i=%d|", i);
        HC_EXPECT_BODY(&c, want);
    }
    hc_close(&c);
    cr_assert(atomic_load(&g_th_started));
    cr_assert(es_test_join(g_th, NULL, ES_TEST_JOIN_S));
    cr_assert_eq(hts_stats(&t).requests, N + 1);
    hts_fini(&t);
}

/* --- Leaving behind a full input buffer --------------------------------------
 */

static atomic_ullong g_gone;
static _Atomic(es_http_response_t *) g_held;

static void on_gone(es_http_response_t *res, void *arg)
{
    (void)res;
    (void)arg;
    atomic_fetch_add(&g_gone, 1);
}

static void h_hold(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    if (es_http_response_defer(res, on_gone, NULL) == 0)
        atomic_store(&g_held, res);
}

/* Starts a one-thread server whose /hold parks its response, sends it a
 * /hold followed by n pipelined requests of `len` bytes in all, waits until
 * the response is parked, then closes the client. */
static void hold_flood_then_leave(struct hts *t, int n, size_t *len)
{
    struct hc c;
    char *all;

    atomic_store(&g_held, NULL);
    atomic_store(&g_gone, 0);
    hts_init(t, 1, NULL);
    hts_route(t, "GET", "/hold", h_hold, NULL);
    hts_route(t, NULL, "/p/*", h_tb, NULL);
    hts_start(t);
    all = flood_requests("/hold", n, len);
    hc_open(&c, t->port);
    cr_assert(hc_send(&c, all, *len));
    free(all);
    for (int i = 0; i < 1000 && !atomic_load(&g_held); i++)
        es_test_sleep_ms(5);
    cr_assert_not_null(atomic_load(&g_held));
    es_test_sleep_ms(50);
    hc_close(&c);
}

/*
 * http.h: while a response is deferred the connection "still notices the
 * client leaving", also when the client pipelined requests behind it that
 * wait in the input buffer (below its bound, ES__HTTP_IN_MAX = 64 KiB).
 */
Test(http_pipeline, gone_noticed_behind_pipelined, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    size_t len;

    hold_flood_then_leave(&t, 500, &len);
    cr_assert_lt(len, 32u << 10);
    HTS_WAIT_CONNS(&t, 0);
    ES_WAIT_GE(g_gone, 1);
    cr_assert_eq(es_http_response_end(atomic_load(&g_held)), -ECONNRESET);
    hts_fini(&t);
}

/*
 * Past the input bound reading pauses, so a client that pipelined more than
 * that and left is not seen until reading resumes: ending the held response
 * resumes it, the rest is answered into a closed socket, and the connection
 * goes. Nothing waits for a timeout and nothing leaks.
 */
Test(http_pipeline, gone_noticed_after_full_buffer, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    size_t len;

    hold_flood_then_leave(&t, 4000, &len);
    cr_assert_gt(len, 128u << 10);
    int rc = es_http_response_end(atomic_load(&g_held));
    cr_assert(rc == 0 || rc == -ECONNRESET, "end: %d", rc);
    HTS_WAIT_CONNS(&t, 0);
    hts_fini(&t);
}

/* --- Streaming more than the send queue's high mark
 * --------------------------- */

static atomic_ullong g_write_fail, g_write_ok;
static atomic_int g_write_rc;

/* Streams 16 MiB from inside the handler, counting failed writes. */
static void h_stream4(es_http_request_t *req, es_http_response_t *res,
                      void *arg)
{
    char *chunk = malloc(65536);

    (void)req;
    (void)arg;
    if (!chunk)
        return;
    memset(chunk, 'q', 65536);
    if (es_http_response_begin(res) == 0) {
        for (int i = 0; i < 256; i++) {
            int rc = es_http_response_write(res, chunk, 65536);

            if (rc == 0) {
                atomic_fetch_add(&g_write_ok, 1);
            } else {
                atomic_fetch_add(&g_write_fail, 1);
                atomic_store(&g_write_rc, rc);
            }
        }
        es_http_response_end(res);
    }
    free(chunk);
}

/*
 * On the connection's thread (inside the handler) es_http_response_write()
 * has no -EAGAIN (http.h: only off that thread): a handler that streams
 * 16 MiB, more than the send queue's high mark and the socket buffers,
 * must see every write accepted and its client every byte.
 */
Test(http_pipeline, stream_beyond_write_high, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;

    hts_serve1(&t, "GET", "/stream4", h_stream4, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /stream4 HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&c, &r, 0);
    cr_assert_eq(atomic_load(&g_write_fail), 0,
                 "%llu of 256 writes failed (last: %d); the client got %zu "
                 "bytes",
                 (unsigned long long)atomic_load(&g_write_fail),
                 atomic_load(&g_write_rc), r.body_len);
    cr_assert_eq(r.body_len, 256u * 65536u);
    hr_release(&r);
    hc_close(&c);
    hts_fini(&t);
}

/* Streams 8000 pieces of 1000 bytes (8 MB, far above write_high) from a
 * foreign thread as fast as it can, retrying on -EAGAIN as http.h says. */
static atomic_ullong g_small_fail, g_small_again;
static atomic_int g_small_rc, g_end_rc = 99;
static pthread_t g_small_th;

static void *small_writes(void *res)
{
    static char piece[1000]; /* this thread's only */
    unsigned again = 0;
    int rc = res_begin_retry(res, &again);

    memset(piece, 'w', sizeof(piece));
    for (int i = 0; rc == 0 && i < 8000; i++) {
        int w = res_write_retry(res, piece, sizeof(piece), &again);

        if (w != 0) {
            atomic_fetch_add(&g_small_fail, 1);
            atomic_store(&g_small_rc, w);
        }
    }
    rc = res_end_retry(res, &again);
    atomic_store(&g_small_again, again);
    atomic_store(&g_end_rc, rc);
    return NULL;
}

static void h_small(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    defer_to_thread(res, &g_small_th, small_writes);
}

Test(http_pipeline, deferred_stream_many_small_writes,
     .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;

    hts_serve1(&t, "GET", "/small", h_small, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /small HTTP/1.1\r\nHost: t\r\n\r\n");
    /* The client reads meanwhile, so the socket never backs up. */
    for (double end = es_test_now() + ES_TEST_WAIT_S;
         atomic_load(&g_end_rc) == 99 && es_test_now() < end;)
        if (hc_fill(&c, 0.05) == 0)
            break;
    cr_assert(es_test_join(g_small_th, NULL, ES_TEST_JOIN_S));
    cr_assert_eq(atomic_load(&g_small_fail), 0,
                 "%llu of 8000 writes failed (last: %d), end() gave %d",
                 (unsigned long long)atomic_load(&g_small_fail),
                 atomic_load(&g_small_rc), atomic_load(&g_end_rc));
    cr_log_info("%llu retries after -EAGAIN",
                (unsigned long long)atomic_load(&g_small_again));
    cr_assert_eq(atomic_load(&g_end_rc), 0, "end(): %d",
                 atomic_load(&g_end_rc));
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.body_len, 8000000);
    hr_release(&r);
    hc_close(&c);
    hts_fini(&t);
}
