/* SPDX-License-Identifier: MIT */
/*
 * Tests of how the HTTP server holds request bodies: the server-wide
 * budget for buffered body bytes (max_body_buffer: a Content-Length body
 * reserves its size or gets 503, a chunked body pauses while the budget is
 * spent and resumes when it frees; the reservation is given back on
 * completion, on 408, when the client leaves mid-body and when a deferred
 * response ends), the inter-read timeout (body_read_timeout_ms), the way a
 * deadlock of paused bodies is broken by the body deadline, and bodies
 * streamed to on_body (es_http_server_route_body) in order, whatever the
 * framing and however the bytes are split. Memory is checked twice: by the
 * server's own counter (es_http_server_stats) and by allocator hooks that
 * count every byte the library holds.
 */
#include "http_test.h"

#include <malloc.h>
#include <netinet/tcp.h>

/* --- Allocator hooks: bytes the library holds now ------------------------- */

static atomic_long live_bytes;

static void *t_malloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live_bytes, (long)malloc_usable_size(p));
    return p;
}

static void *t_calloc(size_t c, size_t n)
{
    void *p = calloc(c, n);
    if (p)
        atomic_fetch_add(&live_bytes, (long)malloc_usable_size(p));
    return p;
}

static void *t_realloc(void *p, size_t n)
{
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q) {
        atomic_fetch_sub(&live_bytes, (long)old);
        atomic_fetch_add(&live_bytes, (long)malloc_usable_size(q));
    }
    return q;
}

static void t_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live_bytes, (long)malloc_usable_size(p));
    free(p);
}

/* Waits until live_bytes has not moved for 300 ms (at most `secs`). */
static long live_settled(double secs)
{
    double end = es_test_now() + secs;
    long last = atomic_load(&live_bytes);
    double since = es_test_now();

    while (es_test_now() < end && es_test_now() - since < 0.3) {
        es_test_sleep_ms(20);
        long now = atomic_load(&live_bytes);
        if (now != last) {
            last = now;
            since = es_test_now();
        }
    }
    return last;
}

/* --- Helpers -------------------------------------------------------------- */

/* Sends what the socket takes now of p[*off..len), without blocking. */
static void send_some(int fd, const char *p, size_t len, size_t *off)
{
    while (*off < len) {
        ssize_t n = send(fd, p + *off, len - *off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            return;
        *off += (size_t)n;
    }
}

static char *cl_head(size_t len)
{
    char *h = NULL;
    cr_assert_gt(asprintf(&h,
                          "POST /echo HTTP/1.1\r\nHost: t\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          len),
                 0);
    return h;
}

/* Expects a 200 whose body is the pattern of `len` bytes. */
static void expect_echo(struct hc *c, size_t len)
{
    struct hr r;

    HC_READ(c, &r, 0);
    cr_assert_eq(r.status, 200, "status %d", r.status);
    cr_assert_eq(r.body_len, len, "echoed %zu of %zu", r.body_len, len);
    cr_assert(pattern_ok(r.body, len));
    hr_release(&r);
}

/* Expects one response with `status`, then the end of the stream. */
static void expect_status_close(struct hc *c, int status)
{
    struct hr r;

    HC_READ(c, &r, 0);
    cr_assert_eq(r.status, status, "status %d, want %d", r.status, status);
    cr_assert(hr_has_token(&r, "Connection", "close"));
    hr_release(&r);
    cr_assert_geq(hc_wait_eof(c, ES_TEST_WAIT_S), 0);
}

/* Polls until the server reserves exactly `n` body bytes. */
static bool wait_body_bytes(const struct hts *t, uint64_t n)
{
    double end = es_test_now() + ES_TEST_WAIT_S;

    while (hts_stats(t).body_bytes != n) {
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(2);
    }
    return true;
}

#define WAIT_BODY_BYTES(t, n)                                                  \
    cr_assert(wait_body_bytes((t), (n)), "body bytes %llu, want %llu",         \
              (unsigned long long)hts_stats(t).body_bytes,                     \
              (unsigned long long)(n))

/* --- The budget ----------------------------------------------------------- */

#define STALL_CONNS 16
#define STALL_CL (256u << 10)
#define STALL_SENT (200u << 10)
#define STALL_BUDGET (1u << 20)

/* Polls until the server has answered at least n errors (or secs pass). */
static bool wait_rejected(const struct hts *t, uint64_t n, double secs)
{
    double end = es_test_now() + secs;

    while (hts_stats(t).rejected < n) {
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(2);
    }
    return true;
}

/*
 * 16 uploads announce 256 KiB each; the ones the server admits stall after
 * 200 KiB: without a budget that is 3.2 MiB of body, against a 1 MiB
 * budget. The library may hold the budget plus a read buffer and state
 * per connection, never every body. The three bodies that fit complete
 * once their clients send the rest, the others got 503 at once; every
 * reservation comes back.
 */
Test(http_body, budget_bounds_stalled_uploads, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body_buffer = STALL_BUDGET};
    struct hts t;
    struct hc c[STALL_CONNS];
    size_t off[STALL_CONNS] = {0};
    bool admitted[STALL_CONNS];
    char *body = pattern_alloc(STALL_CL);
    char *head = cl_head(STALL_CL);
    int nadmitted = 0;

    ES_OK(es_set_allocator(t_malloc, t_realloc, t_calloc, t_free));
    hts_init(&t, 2, &o);
    hts_route(&t, "POST", "/echo", h_echo_body, NULL);
    hts_start(&t);
    long base = live_settled(2.0);
    for (int i = 0; i < STALL_CONNS; i++) {
        hc_open(&c[i], t.port);
        HC_SEND(&c[i], head);
    }
    (void)wait_rejected(&t, STALL_CONNS - 3, 2.0);
    for (int i = 0; i < STALL_CONNS; i++) {
        admitted[i] = !poll_one(c[i].fd, POLLIN, 50);
        nadmitted += admitted[i];
    }
    double end = es_test_now() + 2.0;
    while (es_test_now() < end)
        for (int i = 0; i < STALL_CONNS; i++)
            if (admitted[i])
                send_some(c[i].fd, body, STALL_SENT, &off[i]);
    long held = live_settled(5.0) - base;
    es_http_server_stats_t st = hts_stats(&t);
    cr_assert_leq(st.body_bytes_peak, STALL_BUDGET, "peak %llu",
                  (unsigned long long)st.body_bytes_peak);
    /* The budget, plus a read buffer (64 KiB) and state per connection. */
    long bound = (long)STALL_BUDGET + STALL_CONNS * (72L << 10);
    cr_assert_leq(held, bound, "the server holds %ld bytes (bound %ld)", held,
                  bound);
    cr_assert_eq(nadmitted, 3, "%d bodies admitted", nadmitted);
    for (int i = 0; i < STALL_CONNS; i++) {
        if (admitted[i]) {
            cr_assert(hc_send(&c[i], body + off[i], STALL_CL - off[i]));
            expect_echo(&c[i], STALL_CL);
        } else {
            expect_status_close(&c[i], 503);
        }
        hc_close(&c[i]);
    }
    WAIT_BODY_BYTES(&t, 0);
    cr_assert_leq(hts_stats(&t).body_bytes_peak, STALL_BUDGET);
    free(head);
    free(body);
    hts_fini(&t);
    ES_OK(es_set_allocator(malloc, realloc, calloc, free));
}

/* A chunked request head for /echo. */
#define CHUNKED_HEAD                                                           \
    "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"

/* A chunked body: one chunk of the pattern's first n bytes, then the end. */
static char *chunked_one(size_t n, size_t *len)
{
    char *b = pattern_alloc(n), *out = NULL;
    size_t cap = n + 64;

    out = malloc(cap);
    cr_assert_not_null(out);
    int h = snprintf(out, cap, "%zx\r\n", n);
    memcpy(out + h, b, n);
    memcpy(out + h + n, "\r\n0\r\n\r\n", 7);
    *len = (size_t)h + n + 7;
    free(b);
    return out;
}

/* A chunked body that must wait for budget resumes once a Content-Length
 * body holding most of the budget completes and gives it back. */
Test(http_body, chunked_pauses_and_resumes, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body_buffer = 256u << 10};
    struct hts t;
    struct hc a, b;
    size_t alen = 200u << 10, blen, boff = 0;
    char *abody = pattern_alloc(alen), *ahead = cl_head(alen);
    char *bbody = chunked_one(150u << 10, &blen);

    hts_init(&t, 2, &o);
    hts_route(&t, "POST", "/echo", h_echo_body, NULL);
    hts_start(&t);
    hc_open(&a, t.port);
    HC_SEND(&a, ahead);
    cr_assert(hc_send(&a, abody, 10));
    WAIT_BODY_BYTES(&t, alen + 1);
    hc_open(&b, t.port);
    HC_SEND(&b, CHUNKED_HEAD);
    double end = es_test_now() + ES_TEST_WAIT_S;
    while (hts_stats(&t).body_waits == 0 && es_test_now() < end) {
        send_some(b.fd, bbody, blen, &boff);
        es_test_sleep_ms(2);
    }
    cr_assert_gt(hts_stats(&t).body_waits, 0, "the chunked body never waited");
    cr_assert(hc_quiet_for(&b, 100), "answered while waiting for budget");
    cr_assert(hc_send(&a, abody + 10, alen - 10));
    expect_echo(&a, alen);
    cr_assert(hc_send(&b, bbody + boff, blen - boff));
    expect_echo(&b, 150u << 10);
    WAIT_BODY_BYTES(&t, 0);
    cr_assert_leq(hts_stats(&t).body_bytes_peak, 256u << 10);
    hc_close(&a);
    hc_close(&b);
    free(abody);
    free(ahead);
    free(bbody);
    hts_fini(&t);
}

/* The reservation comes back on 408 (inter-read timeout) and when the
 * client leaves mid-body. */
Test(http_body, released_on_408_and_disconnect, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.body_read_timeout_ms = 300};
    struct hts t;
    struct hc c;
    char *head = cl_head(100000);

    hts_init(&t, 2, &o);
    hts_route(&t, "POST", "/echo", h_echo_body, NULL);
    hts_start(&t);
    hc_open(&c, t.port);
    HC_SEND(&c, head);
    HC_SEND(&c, "0123456789");
    WAIT_BODY_BYTES(&t, 100001);
    expect_status_close(&c, 408);
    hc_close(&c);
    WAIT_BODY_BYTES(&t, 0);
    hc_open(&c, t.port);
    HC_SEND(&c, head);
    HC_SEND(&c, "0123456789");
    WAIT_BODY_BYTES(&t, 100001);
    hc_close(&c);
    WAIT_BODY_BYTES(&t, 0);
    HTS_WAIT_CONNS(&t, 0);
    free(head);
    hts_fini(&t);
}

static _Atomic(es_http_response_t *) parked;

static void h_defer(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    es_http_response_defer(res, NULL, NULL);
    atomic_store(&parked, res);
}

/* A deferred request keeps its body's reservation until the holder ends
 * the response, from another thread. */
Test(http_body, released_when_deferred_ends, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;
    char *head = cl_head(1000), *body = pattern_alloc(1000);
    es_http_response_t *res = NULL;

    atomic_store(&parked, NULL);
    hts_serve1(&t, "POST", "/defer", h_defer, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c,
            "POST /defer HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n");
    cr_assert(hc_send(&c, body, 1000));
    double end = es_test_now() + ES_TEST_WAIT_S;
    while (!(res = atomic_load(&parked)) && es_test_now() < end)
        es_test_sleep_ms(2);
    cr_assert_not_null(res);
    cr_assert(hc_quiet_for(&c, 100));
    cr_assert_eq(hts_stats(&t).body_bytes, 1001);
    ES_OK(res_end_retry(res, NULL));
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 200);
    hr_release(&r);
    WAIT_BODY_BYTES(&t, 0);
    hc_close(&c);
    free(head);
    free(body);
    hts_fini(&t);
}

/* body_read_timeout_ms: a body that stops gets 408 long before the
 * absolute body deadline; one that trickles, each gap shorter than the
 * timeout, is served. */
Test(http_body, inter_read_timeout, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.body_read_timeout_ms = 300,
                               .body_timeout_ms = 60000};
    struct hts t;
    struct hc c;
    struct hr r;
    char *head = cl_head(20);

    hts_init(&t, 1, &o);
    hts_route(&t, "POST", "/echo", h_echo_body, NULL);
    hts_start(&t);
    hc_open(&c, t.port);
    HC_SEND(&c, head);
    HC_SEND(&c, "abc");
    HC_READ(&c, &r, 0); /* within ES_TEST_WAIT_S, far below 60 s */
    cr_assert_eq(r.status, 408);
    hr_release(&r);
    hc_close(&c);
    hc_open(&c, t.port);
    HC_SEND(&c, head);
    for (int i = 0; i < 20; i++) {
        es_test_sleep_ms(100);
        HC_SEND(&c, "x");
    }
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 200, "status %d after trickling", r.status);
    cr_assert_eq(r.body_len, 20);
    hr_release(&r);
    hc_close(&c);
    WAIT_BODY_BYTES(&t, 0);
    free(head);
    hts_fini(&t);
}

#define DL_CONNS 4

/*
 * Four chunked bodies share a 128 KiB budget and each needs 96 KiB: they
 * take it in growing pieces until all of it is held and all of them wait.
 * None can finish; the body deadline breaks the deadlock with 503 (the
 * server held them back), every reservation comes back, and a new upload
 * is then served. No request runs twice or is lost.
 */
Test(http_body, deadlock_broken_by_deadline, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body_buffer = 128u << 10,
                               .body_timeout_ms = 1500};
    struct hts t;
    struct hc c[DL_CONNS];
    size_t off[DL_CONNS] = {0}, len;
    char *body = chunked_one(96u << 10, &len);
    int ok = 0, refused = 0;

    hts_init(&t, 2, &o);
    hts_route(&t, "POST", "/echo", h_echo_body, NULL);
    hts_start(&t);
    for (int i = 0; i < DL_CONNS; i++) {
        hc_open(&c[i], t.port);
        HC_SEND(&c[i], CHUNKED_HEAD);
    }
    double end = es_test_now() + ES_TEST_WAIT_S;
    int answered = 0;
    while (answered < DL_CONNS && es_test_now() < end) {
        answered = 0;
        for (int i = 0; i < DL_CONNS; i++) {
            /* In step, 4 KiB at a time, so that they grow together. */
            size_t upto = off[i] + 4096 < len ? off[i] + 4096 : len;
            send_some(c[i].fd, body, upto, &off[i]);
            answered += poll_one(c[i].fd, POLLIN, 0) != 0;
        }
        cr_assert_leq(hts_stats(&t).body_bytes, 128u << 10);
        es_test_sleep_ms(5);
    }
    for (int i = 0; i < DL_CONNS; i++) {
        struct hr r;
        HC_READ(&c[i], &r, 0);
        cr_assert(r.status == 200 || r.status == 503, "status %d", r.status);
        ok += r.status == 200;
        refused += r.status == 503;
        hr_release(&r);
        hc_close(&c[i]);
    }
    cr_assert_eq(ok + refused, DL_CONNS);
    cr_assert_gt(hts_stats(&t).body_waits, 0);
    cr_assert_eq(hts_stats(&t).requests, (uint64_t)ok);
    WAIT_BODY_BYTES(&t, 0);
    struct hc n;
    hc_open(&n, t.port);
    HC_SEND(&n, CHUNKED_HEAD);
    cr_assert(hc_send(&n, body, len));
    expect_echo(&n, 96u << 10);
    hc_close(&n);
    cr_assert_leq(hts_stats(&t).body_bytes_peak, 128u << 10);
    free(body);
    hts_fini(&t);
}

/* --- Streamed bodies ------------------------------------------------------ */

/* What a streamed request collects, through its user pointer. */
struct sreq {
    size_t len;
    bool ok;
};

static atomic_ullong s_calls, s_handled, s_abandoned;

static int on_up(es_http_request_t *req, const void *data, size_t len,
                 void *arg)
{
    struct sreq *r = es_http_request_user(req);
    const uint8_t *p = data;

    (void)arg;
    if (!data) {
        atomic_fetch_add(&s_abandoned, 1);
        free(r);
        return 0;
    }
    if (!r) {
        r = calloc(1, sizeof(*r));
        cr_assert_not_null(r);
        r->ok = true;
        es_http_request_set_user(req, r);
    }
    atomic_fetch_add(&s_calls, 1);
    for (size_t i = 0; i < len && r->ok; i++)
        r->ok = p[i] == pat(r->len + i);
    r->len += len;
    return 0;
}

static void h_up(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    struct sreq *r = es_http_request_user(req);
    size_t blen = 99;
    char out[64];

    (void)arg;
    es_http_request_body(req, &blen);
    atomic_fetch_add(&s_handled, 1);
    snprintf(out, sizeof(out), "len=%zu ok=%d body=%zu", r ? r->len : 0,
             r ? r->ok : 1, blen);
    free(r);
    es_http_response_body(res, out, strlen(out));
}

static void stream_start(struct hts *t, const es_http_server_opts_t *o)
{
    atomic_store(&s_calls, 0);
    atomic_store(&s_handled, 0);
    atomic_store(&s_abandoned, 0);
    hts_init(t, 2, o);
    ES_OK(es_http_server_route_body(t->srv, "POST", "/up", on_up, h_up, NULL));
    hts_start(t);
}

/* Sends p[0..len) in pieces of 1..4000 bytes, pausing now and then, so
 * that the server reads it in many small reads. */
static void send_pieces(struct hc *c, const char *p, size_t len)
{
    int one = 1;
    unsigned seed = 7;

    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (size_t off = 0, i = 0; off < len; i++) {
        size_t n = 1 + rand_r(&seed) % 4000;
        n = n < len - off ? n : len - off;
        cr_assert(hc_send(c, p + off, n));
        off += n;
        if (i % 16 == 0)
            es_test_sleep_ms(1);
    }
}

static void expect_streamed(struct hc *c, size_t len)
{
    struct hr r;
    char want[64];

    HC_READ(c, &r, 0);
    cr_assert_eq(r.status, 200, "status %d", r.status);
    snprintf(want, sizeof(want), "len=%zu ok=1 body=0", len);
    cr_assert_str_eq(r.body, want);
    hr_release(&r);
}

/* A chunked body in chunks of many sizes: "<hex>\r\n<data>\r\n"..., end. */
static char *chunked_many(size_t total, size_t *len)
{
    char *b = pattern_alloc(total), *out = malloc(total * 2 + 64);
    unsigned seed = 3;
    size_t o = 0;

    cr_assert_not_null(out);
    for (size_t off = 0; off < total;) {
        size_t n = 1 + rand_r(&seed) % 5000;
        n = n < total - off ? n : total - off;
        o += (size_t)sprintf(out + o, "%zx\r\n", n);
        memcpy(out + o, b + off, n);
        o += n;
        memcpy(out + o, "\r\n", 2);
        o += 2;
        off += n;
    }
    memcpy(out + o, "0\r\n\r\n", 5);
    *len = o + 5;
    free(b);
    return out;
}

/* Every byte reaches on_body once and in order, across Content-Length and
 * chunked bodies and many small reads; the handler runs once per request
 * with an empty body; none of it is charged to the (tiny) budget. */
Test(http_body, stream_in_order, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body_buffer = 4096};
    struct hts t;
    struct hc c;
    size_t total = 1u << 20, clen;
    char *body = pattern_alloc(total), *head = NULL;
    char *chunked = chunked_many(total, &clen);

    stream_start(&t, &o);
    cr_assert_gt(asprintf(&head,
                          "POST /up HTTP/1.1\r\nHost: t\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          total),
                 0);
    hc_open(&c, t.port);
    HC_SEND(&c, head);
    send_pieces(&c, body, total);
    expect_streamed(&c, total);
    HC_SEND(&c, "POST /up HTTP/1.1\r\nHost: t\r\n"
                "Transfer-Encoding: chunked\r\n\r\n");
    send_pieces(&c, chunked, clen);
    expect_streamed(&c, total);
    HC_SEND(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    expect_streamed(&c, 0);
    hc_close(&c);
    cr_assert_eq(atomic_load(&s_handled), 3);
    cr_assert_eq(atomic_load(&s_abandoned), 0);
    cr_assert_gt(atomic_load(&s_calls), 20, "%llu on_body calls",
                 (unsigned long long)atomic_load(&s_calls));
    cr_assert_eq(hts_stats(&t).body_bytes_peak, 0);
    free(head);
    free(body);
    free(chunked);
    hts_fini(&t);
}

/* A streamed request that does not complete (client gone, max_body) ends
 * with on_body(NULL) once and no handler call. */
Test(http_body, stream_abandoned, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body = 1000};
    struct hts t;
    struct hc c;

    stream_start(&t, &o);
    hc_open(&c, t.port);
    HC_SEND(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n"
                "0123");
    ES_WAIT_GE(s_calls, 1);
    hc_close(&c);
    ES_WAIT_GE(s_abandoned, 1);
    hc_open(&c, t.port);
    HC_SEND(&c, "POST /up HTTP/1.1\r\nHost: t\r\n"
                "Transfer-Encoding: chunked\r\n\r\n3e8\r\n");
    char *big = pattern_alloc(1000);
    cr_assert(hc_send(&c, big, 1000));
    HC_SEND(&c, "\r\n5\r\n");
    expect_status_close(&c, 413);
    hc_close(&c);
    ES_WAIT_GE(s_abandoned, 2);
    HTS_WAIT_CONNS(&t, 0);
    cr_assert_eq(atomic_load(&s_abandoned), 2);
    cr_assert_eq(atomic_load(&s_handled), 0);
    free(big);
    hts_fini(&t);
}

/* --- Pipelined input behind a request in flight ------------------------ */

#define PIPE_CONNS 4
#define PIPE_BYTES (2u << 20) /* what each client tries to pipeline */

static _Atomic(es_http_response_t *) pipe_parked[PIPE_CONNS];
static atomic_int pipe_nparked;

static void h_park(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    /* Once the test ends the parked responses, the requests pipelined
     * behind them reach this handler too: those are answered at once. */
    int i = atomic_fetch_add(&pipe_nparked, 1);
    if (i >= PIPE_CONNS) {
        (void)es_http_response_end(res);
        return;
    }
    ES_OK(es_http_response_defer(res, NULL, NULL));
    atomic_store(&pipe_parked[i], res);
}

/* PIPE_BYTES of small GETs, each a complete request. */
static char *pipelined_gets(size_t *len)
{
    static const char req[] = "GET /park HTTP/1.1\r\nHost: t\r\n\r\n";
    size_t n = PIPE_BYTES / (sizeof req - 1);
    char *p = malloc(n * (sizeof req - 1));
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        memcpy(p + i * (sizeof req - 1), req, sizeof req - 1);
    *len = n * (sizeof req - 1);
    return p;
}

/*
 * A client that pipelines megabytes behind a deferred response costs the
 * server a bounded input buffer (ES__HTTP_IN_MAX plus one read), not
 * write_high's 1 MiB or more: bytes behind a request in flight are not
 * read past the bound, the kernel's window pushes back.
 */
Test(http_body, pipelined_input_bounded, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c[PIPE_CONNS];
    size_t off[PIPE_CONNS] = {0}, len;
    char *reqs = pipelined_gets(&len);

    atomic_store(&pipe_nparked, 0);
    ES_OK(es_set_allocator(t_malloc, t_realloc, t_calloc, t_free));
    hts_serve1(&t, "GET", "/park", h_park, NULL);
    long base = live_settled(2.0);
    for (int i = 0; i < PIPE_CONNS; i++)
        hc_open(&c[i], t.port);
    double end = es_test_now() + 2.0;
    while (es_test_now() < end)
        for (int i = 0; i < PIPE_CONNS; i++)
            send_some(c[i].fd, reqs, len, &off[i]);
    long held = live_settled(5.0) - base;
    cr_assert_eq(atomic_load(&pipe_nparked), PIPE_CONNS,
                 "requests handled while their connection had one in flight");
    /* Per connection: the input bound and one 64 KiB read, capacity at most
     * doubled, plus the parked exchange and its state. */
    long bound = PIPE_CONNS * (288L << 10);
    cr_assert_leq(held, bound, "the server holds %ld bytes (bound %ld)", held,
                  bound);
    for (int i = 0; i < PIPE_CONNS; i++)
        hc_close(&c[i]);
    for (int i = 0; i < PIPE_CONNS; i++)
        (void)res_end_retry(atomic_load(&pipe_parked[i]), NULL);
    free(reqs);
    hts_fini(&t);
    ES_OK(es_set_allocator(malloc, realloc, calloc, free));
}
