/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP server's strict parsing where the outcome is not a
 * plain refusal (test_http_framing.c has those): an HTTP/0.9 request line
 * answered at once rather than at the header deadline; trailer fields
 * that must not act on the connection (Connection, Transfer-Encoding,
 * Content-Length in a trailer leave the connection and its framing alone,
 * other trailers reach the handler); valid Host values that must still be
 * served; chunk sizes with leading zeros accepted with or without an
 * extension; the CRLF after chunk data checked when it arrives in pieces;
 * and es_http_server_listen() refusing an address at once, with the same
 * grammar as es_listen().
 */
#include "http_test.h"

/* Answers with the body, then "|" and the X-T and Connection fields. */
static void h_trailers(es_http_request_t *req, es_http_response_t *res,
                       void *arg)
{
    size_t len = 0;
    const char *b = es_http_request_body(req, &len);
    const char *t = es_http_request_header(req, "X-T");
    const char *c = es_http_request_header(req, "Connection");
    const char *te = es_http_request_header(req, "Transfer-Encoding");
    char out[256];
    int n;

    (void)arg;
    n = snprintf(out, sizeof(out), "%.*s|%s|%s|%s", (int)len, b, t ? t : "-",
                 c ? c : "-", te ? te : "-");
    es_http_response_body(res, out, (size_t)n);
}

#define CHUNKED                                                                \
    "POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
#define NEXT "GET /t HTTP/1.1\r\nHost: t\r\n\r\n"

/* --- HTTP/0.9 ------------------------------------------------------------- */

/* With a header deadline far beyond the test's wait, only an answer at the
 * end of the request line gets here in time. */
Test(http_strict, http09_answered_at_once, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.header_timeout_ms = 3600 * 1000};
    struct hts t;
    struct hc c;
    struct hr r;

    hts_init(&t, 1, &o);
    hts_route(&t, "GET", "/plaintext", h_text, "ok");
    hts_start(&t);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /plaintext\r\n");
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 505);
    hr_release(&r);
    cr_assert_eq(hc_wait_eof(&c, ES_TEST_WAIT_S), 0);
    hc_close(&c);
    hts_fini(&t);
}

/* --- Trailers ------------------------------------------------------------- */

/* Sends a chunked request with `trailer`, then NEXT twice more on the same
 * connection: every one is answered 200, the first with body `want`. */
static void trailer_inert(const char *trailer, const char *want)
{
    struct hts t;
    struct hc c;
    char raw[512];

    hts_serve1(&t, NULL, "/t", h_trailers, NULL);
    hc_open(&c, t.port);
    snprintf(raw, sizeof(raw), CHUNKED "3\r\nabc\r\n0\r\n%s\r\n" NEXT, trailer);
    HC_SEND(&c, raw);
    HC_EXPECT(&c, 200, want);
    HC_EXPECT(&c, 200, "|-|-|-");
    HC_SEND(&c, NEXT);
    HC_EXPECT(&c, 200, "|-|-|-");
    hc_close(&c);
    cr_assert_eq(hts_stats(&t).requests, 3);
    cr_assert_eq(hts_stats(&t).rejected, 0);
    hts_fini(&t);
}

Test(http_strict, trailer_connection_close_is_data, .timeout = ES_TEST_TIMEOUT)
{
    trailer_inert("Connection: close\r\n", "abc|-|-|chunked");
}

Test(http_strict, trailer_transfer_encoding_is_data, .timeout = ES_TEST_TIMEOUT)
{
    trailer_inert("Transfer-Encoding: chunked\r\n", "abc|-|-|chunked");
}

Test(http_strict, trailer_content_length_is_data, .timeout = ES_TEST_TIMEOUT)
{
    trailer_inert("Content-Length: 5\r\n", "abc|-|-|chunked");
}

Test(http_strict, trailer_upgrade_is_data, .timeout = ES_TEST_TIMEOUT)
{
    trailer_inert("Connection: upgrade\r\nUpgrade: websocket\r\n",
                  "abc|-|-|chunked");
}

Test(http_strict, trailer_fields_reach_handler, .timeout = ES_TEST_TIMEOUT)
{
    trailer_inert("X-T:  v 1 \r\nConnection: close\r\n", "abc|v 1|-|chunked");
}

/* --- Host ----------------------------------------------------------------- */

Test(http_strict, valid_hosts_served, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const hosts[] = {
        "example.com", "example.com:8080",
        "127.0.0.1",   "127.0.0.1:80",
        "[::1]",       "[::1]:8080",
        "[v1.fe:x]",   "",
        "a:",          "a:0",
        "a:65535",     "a%41b",
        "A-b_c~d.e",   "xn--bcher-kva.ch",
        "a!$&'()*+;=", "00080.x:00080",
    };
    struct hts t;
    char raw[256];
    struct hr r;

    hts_serve1(&t, "GET", "/t", h_text, "ok");
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        snprintf(raw, sizeof(raw), "GET /t HTTP/1.1\r\nHost: %s\r\n\r\n",
                 hosts[i]);
        HTTP_ONCE(t.port, raw, &r, 0);
        cr_assert_eq(r.status, 200, "Host: %s -> %d", hosts[i], r.status);
        hr_release(&r);
    }
    hts_fini(&t);
}

/* --- Chunk sizes and the CRLF after chunk data ---------------------------- */

/* RFC 9112 7.1: chunk-size = 1*HEXDIG; leading zeros are not an overflow,
 * with or without an extension. */
Test(http_strict, chunk_size_leading_zeros, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;

    hts_serve1(&t, NULL, "/t", h_echo_body, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, CHUNKED "000000000000000000000003\r\nabc\r\n"
                        "0000000000000000000000000\r\n\r\n");
    HC_EXPECT(&c, 200, "abc");
    HC_SEND(&c, CHUNKED "000000000000000000000003;e=1\r\nabc\r\n"
                        "0000000000000000000000000;e=2\r\n\r\n");
    HC_EXPECT(&c, 200, "abc");
    hc_close(&c);
    hts_fini(&t);
}

/* Sends the pieces one by one with a pause between (each its own read). */
static void send_pieces(struct hc *c, const char *const *pieces, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        HC_SEND(c, pieces[i]);
        es_test_sleep_ms(30);
    }
}

Test(http_strict, chunk_crlf_in_pieces, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const good[] = {CHUNKED "5\r\nhello", "\r", "\n",
                                       "0\r\n\r\n"};
    static const char *const bad[] = {CHUNKED "5\r\nhello", "\r", "X",
                                      "0\r\n\r\n" NEXT};
    struct hts t;
    struct hc c;

    hts_serve1(&t, NULL, "/t", h_echo_body, NULL);
    hc_open(&c, t.port);
    send_pieces(&c, good, 4);
    HC_EXPECT(&c, 200, "hello");
    send_pieces(&c, bad, 4);
    HC_EXPECT_STATUS(&c, 400);
    cr_assert_eq(hc_wait_eof(&c, ES_TEST_WAIT_S), 0);
    hc_close(&c);
    cr_assert_eq(hts_stats(&t).requests, 1);
    hts_fini(&t);
}

/* --- Listen addresses ----------------------------------------------------- */

/* The address grammar of es_listen() (es_addr_parse()), checked at once. */
Test(http_strict, listen_refuses_bad_address, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const bad[] = {
        "localhost:80", "127.0.0.1:99999", "::1:80",
        "127.0.0.1",    "127.0.0.1:",      "[::1]",
        "1.2.3:80",     "127.0.0.1:80x",   "",
        "unix:",        "[::1]:-1",        "127.0.0.1: 80",
    };
    struct hts t;

    hts_init(&t, 1, NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = es_http_server_listen(t.srv, bad[i]);
        cr_assert_eq(rc, -EINVAL, "listen(\"%s\") = %d", bad[i], rc);
    }
    ES_OK(es_http_server_listen(t.srv, "127.0.0.1:0"));
    ES_OK(es_http_server_listen(t.srv, "[::1]:0"));
    hts_fini(&t);
}
