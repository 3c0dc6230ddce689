/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP server's strict parsing where the outcome is not a
 * plain refusal (test_http_framing.c has those): an HTTP/0.9 request line
 * answered at once rather than at the header deadline; trailer fields
 * that must not act on the connection (Connection, Transfer-Encoding,
 * Content-Length in a trailer leave the connection and its framing alone,
 * other trailers reach the handler); valid Host values that must still be
 * served; chunk sizes with leading zeros accepted with or without an
 * extension; chunk extensions on the RFC 9112 grammar served; the CRLF
 * after chunk data checked when it arrives in pieces; the same answer to
 * a bad request sent whole and byte by byte; and es_http_server_listen()
 * refusing an address at once, with the same grammar as es_listen().
 */
#include "http_test.h"

#include <netinet/tcp.h>
#include <poll.h>

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

/* Extensions on the grammar of RFC 9112 7.1.1 are served (and ignored):
 * BWS around ";" and "=", names without values, quoted-strings with
 * quoted-pairs, and obs-text inside a quoted-string. */
Test(http_strict, chunk_ext_valid_served, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;

    hts_serve1(&t, NULL, "/t", h_echo_body, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c,
            CHUNKED "3 ;\ta = b ; c;d=\"x y\\\"z\xe9\";e=!#$%&'*+-.^_`|~\r\n"
                    "abc\r\n0;f=\"\"\r\n\r\n");
    HC_EXPECT(&c, 200, "abc");
    HC_SEND(&c, CHUNKED "2;a\r\nab\r\n1;b=\"\t\\\x80\"\r\nc\r\n0\r\n\r\n");
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

/* --- Split-independence -------------------------------------------------- */

/*
 * Sends raw whole, or one byte per send() with TCP_NODELAY and a short
 * pause between (so the server reads it in many pieces), stopping early
 * once the answer is there. Returns: the status of the one response.
 */
static int status_when_sent(int port, const char *raw, size_t len, bool bytes)
{
    struct hc c;
    struct hr r;
    int one = 1, status;

    hc_open(&c, port);
    cr_assert_eq(setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)),
                 0);
    if (!bytes) {
        cr_assert(hc_send(&c, raw, len));
    } else {
        struct pollfd pfd = {.fd = c.fd, .events = POLLIN};
        for (size_t i = 0; i < len; i++) {
            cr_assert(hc_send(&c, raw + i, 1));
            if (poll(&pfd, 1, 3) != 0)
                break; /* answered: the rest would not be read */
        }
    }
    HC_READ(&c, &r, 0);
    status = r.status;
    hr_release(&r);
    cr_assert_eq(hc_wait_eof(&c, ES_TEST_WAIT_S), 0);
    hc_close(&c);
    return status;
}

/* The same bad request gets the same answer whole and byte by byte: the
 * first offending byte decides, however the request was split. */
static void split_same(const es_http_server_opts_t *o, const char *raw,
                       int want)
{
    struct hts t;
    size_t len = strlen(raw);

    hts_init(&t, 1, o);
    hts_route(&t, NULL, "/t", h_text, "ok");
    hts_start(&t);
    int whole = status_when_sent(t.port, raw, len, false);
    int bytes = status_when_sent(t.port, raw, len, true);
    cr_assert_eq(whole, bytes, "%d whole, %d byte by byte", whole, bytes);
    cr_assert_eq(whole, want);
    cr_assert_eq(hts_stats(&t).requests, 0);
    hts_fini(&t);
}

/* A bare LF (refused by the raw-byte scan) before a version llhttp
 * refuses (505): 505 whole, 400 in pieces, before the fix. */
Test(http_strict, split_bare_lf_then_bad_version, .timeout = ES_TEST_TIMEOUT)
{
    split_same(NULL, "\nPOST /t HTTP/2.1\r\nHost: t\r\n\r\n", 400);
}

/* A request line past max_header_bytes, then a CTL in its target (400):
 * the head limit comes first whatever the reads (431). Before the fix:
 * 400 whole, 431 in pieces (the target is checked when llhttp hands it
 * over, at its end or at the end of a read). */
Test(http_strict, split_head_limit_then_bad_byte, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_header_bytes = 256};
    char raw[512] = "GET /t?";

    memset(raw + 7, 'a', 300);
    strcpy(raw + 307, "\x01 HTTP/1.1\r\nHost: t\r\n\r\n");
    split_same(&o, raw, 431);
}

/* A target longer than max_url, then a CTL in it: the target is too long
 * at its 17th byte whatever the reads (414). Before the fix: 400 whole
 * (llhttp refused the CTL before handing the target over), 414 in pieces. */
Test(http_strict, split_url_limit_then_bad_byte, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_url = 16};

    split_same(&o,
               "GET /t?aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x01 HTTP/1.1\r\n"
               "Host: t\r\n\r\n",
               414);
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
