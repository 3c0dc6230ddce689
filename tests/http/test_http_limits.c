/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP server's limits (es_http_server_opts_t): request target
 * length [414], header bytes and field count [431], body size [413, before
 * the body is read when Content-Length announces it], the header and body
 * deadlines [408 or a close, while other clients are served], the
 * keep-alive idle timeout, and max_connections [503 for the extra one].
 * Each limit is checked just below (served) and just above (refused, the
 * connection closed, nothing after it processed), and the server keeps
 * serving other connections afterwards.
 */
#include "http_test.h"

#include <stdio.h>

/* The valid request sent after a refused one, which must not run. */
#define NEXT "GET /count HTTP/1.1\r\nHost: t\r\n\r\n"

struct lim {
    struct hts t;
    atomic_ullong count;
};

static void lim_start(struct lim *l, const es_http_server_opts_t *o)
{
    atomic_store(&l->count, 0);
    hts_init(&l->t, 2, o);
    hts_route(&l->t, NULL, "/count", h_count, &l->count);
    hts_route(&l->t, NULL, "/count/*", h_count, &l->count);
    hts_route(&l->t, NULL, "/echo", h_echo_body, NULL);
    hts_route(&l->t, "GET", "/ok", h_text, "ok");
    hts_start(&l->t);
}

/* Sends raw (+ NEXT), expects one `status` (or status2) response, then
 * the end. */
static void expect_refused2(struct lim *l, const char *raw, size_t len,
                            int status, int status2)
{
    struct hc c;
    struct hr r;
    unsigned long long before = atomic_load(&l->count);
    long extra;
    int rc;

    hc_open(&c, l->t.port);
    cr_assert(hc_send(&c, raw, len));
    hc_send(&c, NEXT, strlen(NEXT)); /* may fail if already closed */
    rc = hc_read_response(&c, &r, 0, ES_TEST_WAIT_S);
    cr_assert_eq(rc, 0, "no whole response: %d (%s)", rc, strerror(-rc));
    cr_assert(r.status == status || r.status == status2, "status %d, want %d",
              r.status, status);
    hr_release(&r);
    extra = hc_wait_eof(&c, ES_TEST_WAIT_S);
    cr_assert_eq(extra, 0, "after %d: %ld", status, extra);
    hc_close(&c);
    cr_assert_eq(atomic_load(&l->count), before, "a refused request ran");
    http_expect(l->t.port, "/ok", 200);
}

static void expect_refused(struct lim *l, const char *raw, size_t len,
                           int status)
{
    expect_refused2(l, raw, len, status, status);
}

/* Sends raw and expects a 200 (whose body has body_len bytes, unless
 * body_len < 0). */
static void expect_served_len(struct lim *l, const char *raw, size_t len,
                              long body_len)
{
    struct hc c;
    struct hr r;

    hc_open(&c, l->t.port);
    cr_assert(hc_send(&c, raw, len));
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 200, "status %d, want 200", r.status);
    if (body_len >= 0)
        cr_assert_eq(r.body_len, (size_t)body_len,
                     "body of %zu bytes, want %ld", r.body_len, body_len);
    hr_release(&r);
    hc_close(&c);
}

/* Sends raw and expects a 200 from /count. */
static void expect_served(struct lim *l, const char *raw, size_t len)
{
    expect_served_len(l, raw, len, -1);
}

/* expect_served() and expect_refused() of a malloc'd request, which they
 * free. */
static void served_free(struct lim *l, char *raw)
{
    expect_served(l, raw, strlen(raw));
    free(raw);
}

static void refused_free(struct lim *l, char *raw, int status)
{
    expect_refused(l, raw, strlen(raw), status);
    free(raw);
}

/* Sends s on c and expects one response with `status`. */
static void send_expect(struct hc *c, const char *s, int status)
{
    HC_SEND(c, s);
    HC_EXPECT_STATUS(c, status);
}

/*
 * Waits up to secs for the server to close c: an optional 408 then the
 * end of the stream, or the end at once (-ENODATA; a reset too if
 * reset_ok). `what` names the case.
 */
static void expect_closed(struct hc *c, double secs, bool reset_ok,
                          const char *what)
{
    struct hr r;
    int rc = hc_read_response(c, &r, 0, secs);

    if (rc == 0) {
        cr_assert_eq(r.status, 408, "%s: status %d", what, r.status);
        hr_release(&r);
        cr_assert_eq(hc_wait_eof(c, ES_TEST_WAIT_S), 0, "%s: not closed", what);
    } else {
        cr_assert(rc == -ENODATA || (reset_ok && rc == -ECONNRESET), "%s: %d",
                  what, rc);
    }
}

/* "GET <target> HTTP/1.1", Host and then `fields` (each ending in CRLF),
 * malloc'd. */
static char *get_request(const char *target, const char *fields)
{
    char *raw = NULL;

    cr_assert_gt(
        asprintf(&raw, "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", target, fields),
        0);
    return raw;
}

/* A malloc'd string: prefix, then `fill` up to n bytes, then suffix. */
static char *filled(const char *prefix, char fill, size_t n, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(n + sl + 1);

    cr_assert_not_null(s);
    cr_assert_geq(n, pl);
    memset(s, fill, n);
    memcpy(s, prefix, pl);
    memcpy(s + n, suffix, sl + 1);
    return s;
}

/* "GET /count/xxx...x HTTP/1.1" with a target of exactly n bytes. */
static char *request_with_target(size_t n)
{
    char *t = filled("/count/", 'x', n, "");
    char *raw = get_request(t, "");

    free(t);
    return raw;
}

/* --- Request target, header bytes, field count ---------------------------- */

Test(http_limits, url_too_long_414, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_url = 100};
    struct lim l;

    lim_start(&l, &o);
    served_free(&l, request_with_target(100));
    refused_free(&l, request_with_target(101), 414);
    refused_free(&l, request_with_target(20000), 414);
    cr_assert_eq(atomic_load(&l.count), 1);
    hts_fini(&l.t);
}

Test(http_limits, url_default_limit, .timeout = ES_TEST_TIMEOUT)
{
    struct lim l;

    lim_start(&l, NULL);
    served_free(&l, request_with_target(ES_HTTP_DEFAULT_MAX_URL));
    refused_free(&l, request_with_target(ES_HTTP_DEFAULT_MAX_URL + 1), 414);
    hts_fini(&l.t);
}

/* A request whose request line and fields take about `bytes` bytes. */
static char *request_of_size(size_t bytes)
{
    size_t fill = bytes > 200 ? bytes - 200 : 1;
    char *field = filled("X-Fill: ", 'v', strlen("X-Fill: ") + fill, "\r\n");
    char *raw = get_request("/count", field);

    free(field);
    return raw;
}

Test(http_limits, header_bytes_431, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_header_bytes = 1024};
    struct lim l;
    char *raw;

    lim_start(&l, &o);
    served_free(&l, request_of_size(900));
    refused_free(&l, request_of_size(1200), 431);
    /* Far above: the server must answer without reading all of it. */
    raw = request_of_size(256 * 1024);
    expect_refused(&l, raw, 4096, 431);
    free(raw);
    cr_assert_eq(atomic_load(&l.count), 1);
    hts_fini(&l.t);
}

Test(http_limits, header_bytes_across_reads, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_header_bytes = 1024};
    struct lim l;
    struct hc c;
    struct hr r;
    char line[64];
    int rc = -1;

    lim_start(&l, &o);
    hc_open(&c, l.t.port);
    HC_SEND(&c, "GET /count HTTP/1.1\r\nHost: t\r\n");
    /* Small fields, each in its own write, until the server objects. */
    for (int i = 0; i < 200; i++) {
        snprintf(line, sizeof(line), "X-Field-%03d: some value here\r\n", i);
        if (!hc_sends(&c, line))
            break;
        es_test_sleep_ms(1);
        if (poll_one(c.fd, POLLIN, 0))
            break;
    }
    rc = hc_read_response(&c, &r, 0, ES_TEST_WAIT_S);
    cr_assert_eq(rc, 0, "%d", rc);
    cr_assert_eq(r.status, 431);
    hr_release(&r);
    cr_assert_eq(hc_wait_eof(&c, ES_TEST_WAIT_S), 0);
    hc_close(&c);
    cr_assert_eq(atomic_load(&l.count), 0);
    http_expect(l.t.port, "/ok", 200);
    hts_fini(&l.t);
}

/* A request with Host plus n-1 other fields. */
static char *request_with_fields(unsigned n)
{
    char *fields = calloc(n, 32);
    char *raw;

    cr_assert_not_null(fields);
    for (unsigned i = 1; i < n; i++)
        sprintf(fields + strlen(fields), "X-F%u: %u\r\n", i, i);
    raw = get_request("/count", fields);
    free(fields);
    return raw;
}

Test(http_limits, too_many_fields_431, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_headers = 10};
    struct lim l;

    lim_start(&l, &o);
    served_free(&l, request_with_fields(10));
    refused_free(&l, request_with_fields(11), 431);
    refused_free(&l, request_with_fields(500), 431);
    hts_fini(&l.t);
}

Test(http_limits, default_field_count, .timeout = ES_TEST_TIMEOUT)
{
    struct lim l;

    lim_start(&l, NULL);
    served_free(&l, request_with_fields(ES_HTTP_DEFAULT_MAX_HEADERS));
    refused_free(&l, request_with_fields(ES_HTTP_DEFAULT_MAX_HEADERS + 1), 431);
    hts_fini(&l.t);
}

/* The trailer section counts against the same limits as the head, also
 * when its fields are ones the server drops (Host, Content-Length, ...):
 * else a client could send trailers without end. */
static void trailer_flood(struct lim *l, const char *line, unsigned times,
                          int status2)
{
    char *raw = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&raw, &len);

    cr_assert_not_null(f);
    fputs("POST /count HTTP/1.1\r\nHost: t\r\n"
          "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n",
          f);
    for (unsigned i = 0; i < times; i++)
        fputs(line, f);
    fputs("\r\n", f);
    fclose(f);
    cr_log_info("trailers: %u x %s", times, line);
    expect_refused2(l, raw, len, 431, status2);
    free(raw);
}

Test(http_limits, trailer_section_limits, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_header_bytes = 1024, .max_headers = 10};
    struct lim l;

    lim_start(&l, &o);
    trailer_flood(&l, "X-Trailer-Field: value\r\n", 11, 431);
    trailer_flood(&l, "X-Trailer-Field: value\r\n", 100, 431);
    trailer_flood(&l, "Host: x\r\n", 200, 431);
    /* A repeated Content-Length is also malformed: 400 will do. */
    trailer_flood(&l, "Content-Length: 1\r\n", 200, 400);
    cr_assert_eq(atomic_load(&l.count), 0);
    hts_fini(&l.t);
}

/* --- Body size ------------------------------------------------------------ */

Test(http_limits, body_content_length_413, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body = 1000};
    struct lim l;
    char *raw = NULL;
    char body[1001];

    memset(body, 'b', 1000);
    body[1000] = '\0';
    lim_start(&l, &o);
    /* Exactly max_body is fine. */
    cr_assert_gt(asprintf(&raw,
                          "POST /echo HTTP/1.1\r\nHost: t\r\n"
                          "Content-Length: 1000\r\n\r\n%s",
                          body),
                 0);
    expect_served_len(&l, raw, strlen(raw), 1000);
    free(raw);
    /* One more, announced and never sent: 413 without waiting for it. */
    raw = "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n";
    expect_refused(&l, raw, strlen(raw), 413);
    raw = "POST /count HTTP/1.1\r\nHost: t\r\n"
          "Content-Length: 1000000000000\r\n\r\n";
    expect_refused(&l, raw, strlen(raw), 413);
    hts_fini(&l.t);
}

/* Sends a chunked body of `total` bytes in 100-byte chunks. */
static char *chunked_request(size_t total)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    cr_assert_not_null(f);
    fputs(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        f);
    for (size_t off = 0; off < total; off += 100) {
        size_t n = total - off < 100 ? total - off : 100;

        fprintf(f, "%zx\r\n", n);
        for (size_t i = 0; i < n; i++)
            fputc('c', f);
        fputs("\r\n", f);
    }
    fputs("0\r\n\r\n", f);
    fclose(f);
    return out;
}

Test(http_limits, body_chunked_413, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body = 1000};
    struct lim l;
    char *raw;

    lim_start(&l, &o);
    raw = chunked_request(1000);
    expect_served_len(&l, raw, strlen(raw), 1000);
    free(raw);
    refused_free(&l, chunked_request(1001), 413);
    /* One huge chunk announced: refused before its data arrives. */
    raw = "POST /count HTTP/1.1\r\nHost: t\r\n"
          "Transfer-Encoding: chunked\r\n\r\n100000\r\nabc";
    expect_refused(&l, raw, strlen(raw), 413);
    hts_fini(&l.t);
}

/* --- Deadlines ------------------------------------------------------------ */

/*
 * Trickles `prefix` and then one byte every 50 ms without ever finishing;
 * the server must answer 408 or close within `limit_s`, and serve another
 * client meanwhile.
 */
static void expect_deadline(struct lim *l, const char *prefix, double limit_s)
{
    struct hc c;
    double start = es_test_now();
    bool served_other = false;

    hc_open(&c, l->t.port);
    HC_SEND(&c, prefix);
    while (es_test_now() - start < limit_s) {
        if (!hc_sends(&c, "a"))
            break; /* closed */
        if (poll_one(c.fd, POLLIN, 50))
            break;
        if (!served_other) {
            http_expect(l->t.port, "/ok", 200);
            served_other = true;
        }
    }
    cr_assert_lt(es_test_now() - start, limit_s,
                 "still open after %.1f s of trickling", limit_s);
    expect_closed(&c, ES_TEST_WAIT_S, true, prefix);
    hc_close(&c);
    cr_assert(served_other);
    cr_assert_eq(atomic_load(&l->count), 0);
    http_expect(l->t.port, "/ok", 200);
}

Test(http_limits, header_deadline_slowloris, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.header_timeout_ms = 200};
    struct lim l;

    lim_start(&l, &o);
    expect_deadline(&l, "GET /count HTTP/1.1\r\nHost: t\r\nX-Slow: ", 5.0);
    /* A request line that never ends counts too. */
    expect_deadline(&l, "GET /count", 5.0);
    hts_fini(&l.t);
}

Test(http_limits, body_deadline, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.body_timeout_ms = 200};
    struct lim l;

    lim_start(&l, &o);
    expect_deadline(&l,
                    "POST /count HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 100000\r\n\r\n",
                    5.0);
    expect_deadline(&l,
                    "POST /count HTTP/1.1\r\nHost: t\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n10000\r\n",
                    5.0);
    hts_fini(&l.t);
}

Test(http_limits, header_deadline_spares_fast_clients,
     .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.header_timeout_ms = 300};
    struct lim l;
    struct hc c;

    lim_start(&l, &o);
    /* Requests on a kept-alive connection each get a fresh deadline. */
    hc_open(&c, l.t.port);
    for (int i = 0; i < 4; i++) {
        send_expect(&c, NEXT, 200);
        es_test_sleep_ms(100);
    }
    hc_close(&c);
    cr_assert_eq(atomic_load(&l.count), 4);
    hts_fini(&l.t);
}

Test(http_limits, keepalive_idle_timeout, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.keepalive_timeout_ms = 200};
    struct lim l;
    struct hc c;

    lim_start(&l, &o);
    hc_open(&c, l.t.port);
    send_expect(&c, NEXT, 200);
    /* Idle: the server closes, possibly after a 408 (RFC 9110 15.5.9). */
    expect_closed(&c, 5.0, false, "idle connection");
    hc_close(&c);
    HTS_WAIT_CONNS(&l.t, 0);
    http_expect(l.t.port, "/ok", 200);
    hts_fini(&l.t);
}

/* A client that connects and never sends a byte is closed too. */
Test(http_limits, silent_client_closed, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.keepalive_timeout_ms = 200,
                               .header_timeout_ms = 200};
    struct lim l;
    struct hc c;

    lim_start(&l, &o);
    hc_open(&c, l.t.port);
    expect_closed(&c, 5.0, false, "silent connection");
    hc_close(&c);
    HTS_WAIT_CONNS(&l.t, 0);
    hts_fini(&l.t);
}

/* --- Connections ---------------------------------------------------------- */

Test(http_limits, max_connections_503, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_connections = 3};
    struct lim l;
    struct hc c[3], extra, late;

    lim_start(&l, &o);
    for (int i = 0; i < 3; i++) {
        hc_open(&c[i], l.t.port);
        send_expect(&c[i], NEXT, 200);
    }
    HTS_WAIT_CONNS(&l.t, 3);
    /* The fourth gets 503 and is closed. */
    hc_open(&extra, l.t.port);
    send_expect(&extra, NEXT, 503);
    cr_assert_eq(hc_wait_eof(&extra, ES_TEST_WAIT_S), 0);
    hc_close(&extra);
    cr_assert_eq(atomic_load(&l.count), 3);
    HTS_WAIT_CONNS(&l.t, 3);
    /* The first three still work. */
    for (int i = 0; i < 3; i++)
        send_expect(&c[i], NEXT, 200);
    /* Once one leaves, a new one is accepted. */
    hc_close(&c[0]);
    HTS_WAIT_CONNS(&l.t, 2);
    hc_open(&late, l.t.port);
    send_expect(&late, NEXT, 200);
    hc_close(&late);
    hc_close(&c[1]);
    hc_close(&c[2]);
    HTS_WAIT_CONNS(&l.t, 0);
    cr_assert_eq(atomic_load(&l.count), 7);
    cr_assert_geq(hts_stats(&l.t).rejected, 1);
    hts_fini(&l.t);
}
