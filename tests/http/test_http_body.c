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
