/* SPDX-License-Identifier: MIT */
/*
 * Tests of how the HTTP server moves messages over a connection: keep-alive
 * and Connection: close on HTTP/1.1 and HTTP/1.0, pipelining (50 requests
 * in one write, answered strictly in order), a request arriving one byte at
 * a time, chunked request bodies (extensions ignored, trailers kept),
 * Expect: 100-continue, streamed responses (chunked on HTTP/1.1,
 * close-delimited on HTTP/1.0, none on HEAD), 1 MiB request and response
 * bodies, bodies of unmatched requests skipped, and a slow reader that must
 * not stop the server from serving others. Raw sockets on 127.0.0.1
 * (http_test.h); handlers answer with what they saw.
 */
#include "http_test.h"

#include <netinet/tcp.h>
#include <stdio.h>

#define MIB (1024u * 1024u)

/* --- Handlers of this file ------------------------------------------------ */

/* Answers "<target>|<body>", so each response names its request. */
static void h_target_body(es_http_request_t *req, es_http_response_t *res,
                          void *arg)
{
    size_t len = 0;
    const char *b = es_http_request_body(req, &len);
    const char *t = es_http_request_target(req);
    size_t tl = strlen(t);
    char *out = malloc(tl + 1 + len);

    (void)arg;
    if (!out)
        return;
    memcpy(out, t, tl);
    out[tl] = '|';
    memcpy(out + tl + 1, b, len);
    es_http_response_body(res, out, tl + 1 + len);
    free(out);
}

/* Answers with every field as "name=value\n", then "body=<body>". */
static void h_dump(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    const es_http_headers_t *h = es_http_request_headers(req);
    const char *name, *value;
    size_t blen = 0;
    const char *body = es_http_request_body(req, &blen);
    struct body_buf bb;
    FILE *f = body_open(&bb);

    (void)arg;
    if (!f)
        return;
    for (size_t i = 0; es_http_headers_at(h, i, &name, &value) == 0; i++)
        fprintf(f, "%s=%s\n", name, value);
    fputs("body=", f);
    fwrite(body, 1, blen, f);
    body_send(&bb, res);
}

/* Streams "alpha", an empty piece (skipped) and "beta". */
static void h_stream(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    es_http_response_header(res, "X-Streamed", "1");
    if (es_http_response_begin(res) != 0)
        return;
    es_http_response_write(res, "alpha", 5);
    es_http_response_write(res, "", 0);
    es_http_response_write(res, "beta", 4);
    es_http_response_end(res);
}

/* Answers with (size_t)arg pattern bytes, copied. */
static void h_big_copy(es_http_request_t *req, es_http_response_t *res,
                       void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    char *b = pattern_alloc(n);

    (void)req;
    es_http_response_body(res, b, n);
    free(b);
}

/* Answers with (size_t)arg pattern bytes, by reference. */
static void h_big_ref(es_http_request_t *req, es_http_response_t *res,
                      void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    char *b = pattern_alloc(n);

    (void)req;
    if (es_http_response_body_ref(res, b, n, free) != 0)
        free(b);
}

static void transfer_fixture(struct hts *t, atomic_ullong *count,
                             const es_http_server_opts_t *o)
{
    hts_init(t, 2, o);
    hts_route(t, NULL, "/t/*", h_target_body, NULL);
    hts_route(t, NULL, "/dump", h_dump, NULL);
    hts_route(t, NULL, "/echo", h_echo_body, NULL);
    hts_route(t, "GET", "/stream", h_stream, NULL);
    hts_route(t, "GET", "/big1", h_big_copy, (void *)(uintptr_t)MIB);
    hts_route(t, "GET", "/big8", h_big_ref, (void *)(uintptr_t)(8 * MIB));
    hts_route(t, NULL, "/count", h_count, count);
    hts_start(t);
}

/* Most tests: the fixture's server and one connection to it. */
static void tx_open(struct htc *x, const es_http_server_opts_t *o)
{
    htc_open(x, transfer_fixture, o);
}

/* --- Keep-alive and closing ----------------------------------------------- */

Test(http_transfer, keepalive_two_requests, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "GET /t/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    HR_BODY_IS(&r, "/t/1|");
    cr_assert_eq(r.version, 11);
    cr_assert(!hr_has_token(&r, "Connection", "close"));
    hr_release(&r);
    HC_SEND(&x.c, "GET /t/2 HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_EXPECT_BODY(&x.c, "/t/2|");
    cr_assert(hc_quiet_for(&x.c, 100), "the connection did not stay open");
    cr_assert_eq(hts_stats(&x.t).accepted, 1);
    cr_assert_eq(hts_stats(&x.t).requests, 2);
    hc_close(&x.c);
    HTS_WAIT_CONNS(&x.t, 0);
    htc_close(&x);
}

Test(http_transfer, http10_closes_by_default, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "GET /t/a HTTP/1.0\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(!r.chunked, "chunked response to HTTP/1.0");
    HR_BODY_IS(&r, "/t/a|");
    hr_release(&r);
    cr_assert_eq(hc_wait_eof(&x.c, ES_TEST_WAIT_S), 0);
    htc_close(&x);
}

Test(http_transfer, http10_keepalive_on_request, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "GET /t/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert(hr_has_token(&r, "Connection", "keep-alive"),
              "no Connection: keep-alive in the reply to HTTP/1.0");
    cr_assert_not_null(hr_header(&r, "Content-Length"));
    HR_BODY_IS(&r, "/t/a|");
    hr_release(&r);
    cr_assert(hc_quiet_for(&x.c, 100), "closed despite keep-alive");
    /* A streamed response to HTTP/1.0 cannot be chunked: it ends with the
     * connection even though keep-alive was asked for. */
    HC_SEND(&x.c, "POST /t/b HTTP/1.0\r\nConnection: keep-alive\r\n"
                  "Content-Length: 3\r\n\r\nxyz");
    HC_EXPECT_BODY(&x.c, "/t/b|xyz");
    HC_SEND(&x.c, "GET /t/c HTTP/1.0\r\n\r\n");
    HC_EXPECT_BODY(&x.c, "/t/c|");
    cr_assert_eq(hc_wait_eof(&x.c, ES_TEST_WAIT_S), 0);
    hc_close(&x.c);
    cr_assert_eq(hts_stats(&x.t).accepted, 1);
    htc_close(&x);
}

Test(http_transfer, connection_close_honoured, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    /* The request after "Connection: close" must not be processed. */
    HC_SEND(&x.c, "GET /count HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                  "GET /count HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(hr_has_token(&r, "Connection", "close"));
    hr_release(&r);
    cr_assert_eq(hc_wait_eof(&x.c, ES_TEST_WAIT_S), 0,
                 "bytes after a Connection: close response");
    hc_close(&x.c);
    cr_assert_eq(atomic_load(&x.n), 1);
    htc_close(&x);
}

/* --- Pipelining and fragmentation ----------------------------------------- */

Test(http_transfer, pipelining_50_in_one_write, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;
    char *all = NULL;
    size_t all_len = 0;
    FILE *f;

    tx_open(&x, NULL);
    f = open_memstream(&all, &all_len);
    cr_assert_not_null(f);
    for (int i = 0; i < 50; i++) {
        if (i % 3 == 0)
            fprintf(f, "GET /t/echo-path?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        else if (i % 3 == 1)
            fprintf(f,
                    "POST /t/echo-path?i=%d HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: %d\r\n\r\nbody%03d",
                    i, 7, i);
        else
            fprintf(f,
                    "POST /t/echo-path?i=%d HTTP/1.1\r\nHost: t\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                    "4\r\nchnk\r\n3\r\n%03d\r\n0\r\n\r\n",
                    i, i);
    }
    fclose(f);
    cr_assert(hc_send(&x.c, all, all_len));
    free(all);
    for (int i = 0; i < 50; i++) {
        char want[64];

        if (i % 3 == 0)
            snprintf(want, sizeof(want), "/t/echo-path?i=%d|", i);
        else if (i % 3 == 1)
            snprintf(want, sizeof(want), "/t/echo-path?i=%d|body%03d", i, i);
        else
            snprintf(want, sizeof(want), "/t/echo-path?i=%d|chnk%03d", i, i);
        HC_READ(&x.c, &r, 0);
        cr_assert_eq(r.status, 200, "response %d: %d", i, r.status);
        HR_BODY_IS(&r, want);
        hr_release(&r);
    }
    cr_assert(hc_quiet_for(&x.c, 50), "more responses than requests");
    hc_close(&x.c);
    cr_assert_eq(hts_stats(&x.t).requests, 50);
    htc_close(&x);
}

/* Sends s one byte per segment (TCP_NODELAY, 1 ms apart). */
static void send_bytewise(struct hc *c, const char *s)
{
    int one = 1;

    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (; *s; s++) {
        cr_assert(hc_send(c, s, 1));
        es_test_sleep_ms(1);
    }
}

Test(http_transfer, request_one_byte_at_a_time, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;

    tx_open(&x, NULL);
    send_bytewise(&x.c, "POST /t/one?by=byte HTTP/1.1\r\nHost: t\r\n"
                        "Content-Length: 6\r\n\r\nsix!!!");
    HC_EXPECT_BODY(&x.c, "/t/one?by=byte|six!!!");
    send_bytewise(&x.c, "POST /t/two HTTP/1.1\r\nHost: t\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"
                        "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n");
    HC_EXPECT_BODY(&x.c, "/t/two|abcde");
    /* The parser state was reset properly: a plain request still works. */
    HC_SEND(&x.c, "GET /t/three HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_EXPECT_BODY(&x.c, "/t/three|");
    htc_close(&x);
}

/* --- Chunked request bodies ----------------------------------------------- */

Test(http_transfer, chunked_body_extensions_trailers,
     .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "POST /dump HTTP/1.1\r\nHost: t\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n"
                  "5;name=value;flag\r\nhello\r\n"
                  "006;flag;other\r\n world\r\n"
                  "A;q=\"a;b\";x\r\n0123456789\r\n"
                  "0\r\nX-Trailer: yes\r\nX-Sum: 21\r\n\r\n");
    HC_EXPECT(&x.c, 200,
              "Host=t\nTransfer-Encoding=chunked\nX-Trailer=yes\n"
              "X-Sum=21\nbody=hello world0123456789");
    /* An empty chunked body. */
    HC_SEND(&x.c, "POST /dump HTTP/1.1\r\nHost: t\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    HC_EXPECT_BODY(&x.c, "Host=t\nTransfer-Encoding=chunked\nbody=");
    htc_close(&x);
}

/* Trailer fields that would change framing or routing must not end up
 * among the request's fields (RFC 9110 6.5.1); others are appended. */
Test(http_transfer, framing_fields_in_trailers_ignored,
     .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "POST /dump HTTP/1.1\r\nHost: t\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n"
                  "3\r\nabc\r\n0\r\nContent-Length: 99\r\n"
                  "Host: evil\r\nX-Kept: 1\r\n\r\n"
                  "GET /t/next HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "X-Kept=1\n"), "%s", r.body);
    cr_assert_null(strstr(r.body, "Content-Length="), "%s", r.body);
    cr_assert_null(strstr(r.body, "evil"), "%s", r.body);
    hr_release(&r);
    HC_EXPECT_BODY(&x.c, "/t/next|");
    htc_close(&x);
}

/* --- Expect: 100-continue ------------------------------------------------- */

Test(http_transfer, expect_100_continue, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 100, "got %d before the body was sent", r.status);
    cr_assert_eq(r.version, 11);
    cr_assert_eq(r.nfields, 0, "fields in 100 Continue");
    cr_assert_str_eq(r.head, "HTTP/1.1 100 Continue");
    hr_release(&r);
    HC_SEND(&x.c, "hello");
    HC_EXPECT(&x.c, 200, "hello");
    /* Chunked, on the same connection. */
    HC_SEND(&x.c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                  "Transfer-Encoding: chunked\r\nExpect: 100-Continue\r\n\r\n");
    HC_EXPECT_STATUS(&x.c, 100);
    HC_SEND(&x.c, "3\r\nabc\r\n0\r\n\r\n");
    HC_EXPECT_BODY(&x.c, "abc");
    htc_close(&x);
}

Test(http_transfer, expect_100_not_sent_with_body, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;
    unsigned interim = 0;

    tx_open(&x, NULL);
    /* The body is already there: no 100 is needed (RFC 9110 10.1.1). */
    HC_SEND(&x.c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\nhello");
    cr_assert_eq(hc_read_final(&x.c, &r, 0, &interim), 0);
    HR_BODY_IS(&r, "hello");
    hr_release(&r);
    cr_assert_eq(interim, 0, "100 Continue sent though the body was there");
    /* A body-less request needs no 100 either. */
    HC_SEND(&x.c,
            "GET /t/x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n");
    cr_assert_eq(hc_read_final(&x.c, &r, 0, &interim), 0);
    HR_BODY_IS(&r, "/t/x|");
    hr_release(&r);
    cr_assert_eq(interim, 0, "100 Continue for a request without a body");
    htc_close(&x);
}

Test(http_transfer, expect_100_rejected_by_size, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_body = 1000};
    struct htc x;
    struct hr r;

    tx_open(&x, &o);
    HC_SEND(&x.c, "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                  "Expect: 100-continue\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 413, "want 413 at once, got %d", r.status);
    hr_release(&r);
    cr_assert_eq(hc_wait_eof(&x.c, ES_TEST_WAIT_S), 0);
    hc_close(&x.c);
    cr_assert_eq(atomic_load(&x.n), 0);
    http_expect(x.t.port, "/t/after", 200);
    htc_close(&x);
}

Test(http_transfer, expect_ignored_on_http10, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;

    tx_open(&x, NULL);
    /* RFC 9110 10.1.1: a server MUST ignore 100-continue from HTTP/1.0. */
    HC_SEND(&x.c, "POST /echo HTTP/1.0\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\n");
    cr_assert(hc_quiet_for(&x.c, 200), "answered HTTP/1.0 before its body");
    HC_SEND(&x.c, "hello");
    HC_EXPECT(&x.c, 200, "hello");
    htc_close(&x);
}

/* --- Streamed responses --------------------------------------------------- */

Test(http_transfer, streamed_chunked_on_11, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /t/next HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.chunked, "a streamed HTTP/1.1 response is chunked");
    cr_assert_null(hr_header(&r, "Content-Length"));
    cr_assert_str_eq(hr_header(&r, "X-Streamed") ?: "", "1");
    /* An empty write must not become a chunk: "0\r\n\r\n" would end the
     * body after "alpha". Pieces may be joined, never split into more. */
    cr_assert(r.chunks >= 1 && r.chunks <= 2, "%u chunks", r.chunks);
    HR_BODY_IS(&r, "alphabeta");
    hr_release(&r);
    HC_EXPECT_BODY(&x.c, "/t/next|");
    htc_close(&x);
}

Test(http_transfer, streamed_close_delimited_on_10, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.until_close, "HTTP/1.0 stream must end with the connection");
    cr_assert_null(hr_header(&r, "Transfer-Encoding"));
    cr_assert_null(hr_header(&r, "Content-Length"));
    cr_assert(!hr_has_token(&r, "Connection", "keep-alive"));
    HR_BODY_IS(&r, "alphabeta");
    hr_release(&r);
    htc_close(&x);
}

Test(http_transfer, head_of_streamed_route, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /t/after-head HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&x.c, &r, HR_HEAD);
    cr_assert_eq(r.status, 200);
    hr_release(&r);
    /* No chunk may follow the HEAD response, or this would misparse. */
    HC_EXPECT(&x.c, 200, "/t/after-head|");
    htc_close(&x);
}

/* Begun and written but not ended: returning from the handler ends it. */
static void h_begin_return(es_http_request_t *req, es_http_response_t *res,
                           void *arg)
{
    (void)req;
    (void)arg;
    if (es_http_response_begin(res) == 0)
        es_http_response_write(res, "partial", 7);
}

Test(http_transfer, streamed_ended_by_return, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;

    hts_serve1(&t, "GET", "/br", h_begin_return, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /br HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /br HTTP/1.1\r\nHost: t\r\n\r\n");
    for (int i = 0; i < 2; i++) {
        HC_READ(&c, &r, 0);
        cr_assert(r.chunked);
        HR_BODY_IS(&r, "partial");
        hr_release(&r);
    }
    hc_close(&c);
    hts_fini(&t);
}

/* --- Large bodies --------------------------------------------------------- */

/* Reads one response on c; fails the test unless it has `status` and n
 * pattern bytes as its body (`what` names the case). */
static void expect_pattern(struct hc *c, int status, size_t n, const char *what)
{
    struct hr r;

    HC_READ(c, &r, 0);
    if (status)
        cr_assert_eq(r.status, status, "%s: status %d", what, r.status);
    cr_assert_eq(r.body_len, n, "%s: %zu bytes, want %zu", what, r.body_len, n);
    cr_assert(pattern_ok(r.body, n), "%s differs", what);
    hr_release(&r);
}

Test(http_transfer, one_mib_body_content_length, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;
    char *body = pattern_alloc(MIB);
    char head[128];

    tx_open(&x, NULL);
    snprintf(head, sizeof(head),
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %u\r\n\r\n",
             MIB);
    HC_SEND(&x.c, head);
    cr_assert(hc_send(&x.c, body, MIB));
    HC_READ(&x.c, &r, 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, MIB);
    cr_assert(pattern_ok(r.body, MIB), "1 MiB echo differs");
    cr_assert_str_eq(hr_header(&r, "X-Body-Len") ?: "", "1048576");
    hr_release(&r);
    free(body);
    htc_close(&x);
}

Test(http_transfer, one_mib_body_chunked, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    char *body = pattern_alloc(MIB);
    size_t off = 0, step = 1;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n");
    /* Chunk sizes from 1 byte up to 64 KiB, doubling. */
    while (off < MIB) {
        size_t len = step < MIB - off ? step : MIB - off;
        char sz[32];

        snprintf(sz, sizeof(sz), "%zx\r\n", len);
        HC_SEND(&x.c, sz);
        cr_assert(hc_send(&x.c, body + off, len));
        HC_SEND(&x.c, "\r\n");
        off += len;
        if (step < 65536)
            step *= 2;
    }
    HC_SEND(&x.c, "0\r\n\r\n");
    expect_pattern(&x.c, 200, MIB, "1 MiB chunked echo");
    free(body);
    htc_close(&x);
}

Test(http_transfer, large_response_bodies, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;

    tx_open(&x, NULL);
    HC_SEND(&x.c, "GET /big1 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /big8 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /t/tail HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_pattern(&x.c, 0, MIB, "/big1");
    expect_pattern(&x.c, 0, 8 * MIB, "/big8");
    HC_EXPECT_BODY(&x.c, "/t/tail|");
    htc_close(&x);
}

/* The body of a request that gets an error response must still be skipped
 * (or the connection closed): its bytes must never be read as a request. */
Test(http_transfer, body_of_unmatched_request_skipped,
     .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;
    const char *smuggled = "GET /count HTTP/1.1\r\nHost: t\r\n\r\n";
    char head[256];
    long extra;

    tx_open(&x, NULL);
    snprintf(head, sizeof(head),
             "POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s"
             "GET /t/next HTTP/1.1\r\nHost: t\r\n\r\n",
             strlen(smuggled), smuggled);
    HC_SEND(&x.c, head);
    HC_EXPECT_STATUS(&x.c, 404);
    /* Either the next request is served, or the connection ends. */
    if (hc_read_response(&x.c, &r, 0, ES_TEST_WAIT_S) == 0) {
        HR_BODY_IS(&r, "/t/next|");
        hr_release(&r);
    }
    extra = hc_wait_eof(&x.c, 0.2);
    cr_assert(extra == 0 || extra == -ETIMEDOUT, "%ld stray bytes", extra);
    hc_close(&x.c);
    cr_assert_eq(atomic_load(&x.n), 0, "a request body was run as a request");
    htc_close(&x);
}

/* --- Slow reader ---------------------------------------------------------- */

Test(http_transfer, slow_reader_does_not_block_others,
     .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    atomic_ullong n = 0;
    int small = 16384;

    /* One demux thread: the slow client and the others share it. */
    hts_init(&t, 1, NULL);
    hts_route(&t, "GET", "/big8", h_big_ref, (void *)(uintptr_t)(8 * MIB));
    hts_route(&t, NULL, "/count", h_count, &n);
    hts_start(&t);
    hc_open(&c, t.port);
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    HC_SEND(&c, "GET /big8 HTTP/1.1\r\nHost: t\r\n\r\n");
    /* Read nothing for a while; the server's writes back up meanwhile. */
    es_test_sleep_ms(100);
    for (int i = 0; i < 5; i++)
        http_expect(t.port, "/count", 200);
    /* Now read it, a little at a time, serving others in between. */
    for (int i = 0; i < 20; i++) {
        cr_assert_gt(hc_fill(&c, ES_TEST_WAIT_S), 0);
        es_test_sleep_ms(5);
        if (i % 5 == 0)
            http_expect(t.port, "/count", 200);
    }
    expect_pattern(&c, 0, 8 * MIB, "slow read body");
    hc_close(&c);
    cr_assert_eq(atomic_load(&n), 9);
    hts_fini(&t);
}
