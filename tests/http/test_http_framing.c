/* SPDX-License-Identifier: MIT */
/*
 * Tests of strict message framing (RFC 9112) in the HTTP server: every
 * malformed request gets one error response (400, or 505 for a version the
 * server does not speak), then the connection closes, and nothing that came
 * after the bad request on that connection is processed. Each case sends the
 * bad request followed by a valid pipelined request in one write, both aimed
 * at a route whose handler counts its calls; the count must stay 0, exactly
 * one response must be read before the end of the stream, and the server
 * must go on serving other connections. llhttp catches most cases; some it
 * lets through (whitespace before a colon, spaces inside field names, a
 * missing or doubled Host, HTTP/2.0 and HTTP/0.9 request lines, an empty
 * Transfer-Encoding) and the server has to.
 */
#include "http_test.h"

#include <stdio.h>

/* The valid request that follows every bad one. */
#define NEXT "GET /count HTTP/1.1\r\nHost: t\r\n\r\n"

struct fx {
    struct hts t;
    atomic_ullong count;
};

static void fx_start(struct fx *f)
{
    atomic_store(&f->count, 0);
    hts_init(&f->t, 2, NULL);
    hts_route(&f->t, NULL, "/count", h_count, &f->count);
    hts_route(&f->t, "GET", "/ok", h_text, "ok");
    hts_start(&f->t);
}

/*
 * Sends bad (len bytes) and then NEXT in one write; expects one response
 * with status want or want2, then the end of the stream, and no handler
 * call at all.
 */
static void expect_rejected(const char *bad, size_t len, int want, int want2)
{
    struct fx f;
    struct hc c;
    struct hr r;
    size_t nl = strlen(NEXT);
    char *all = malloc(len + nl);
    long extra;
    int rc;

    cr_assert_not_null(all);
    memcpy(all, bad, len);
    memcpy(all + len, NEXT, nl);
    fx_start(&f);
    hc_open(&c, f.t.port);
    cr_assert(hc_send(&c, all, len + nl));
    free(all);
    rc = hc_read_response(&c, &r, 0, ES_TEST_WAIT_S);
    cr_assert_eq(rc, 0, "no whole response to the bad request: %d (%s)", rc,
                 strerror(-rc));
    cr_assert(r.status == want || r.status == want2, "status %d, want %d (%s)",
              r.status, want, r.body ? r.body : "");
    hr_release(&r);
    extra = hc_wait_eof(&c, ES_TEST_WAIT_S);
    cr_assert_eq(extra, 0, "after the rejection: %ld (%s)", extra,
                 extra == -ETIMEDOUT ? "connection left open"
                                     : "more bytes before the end");
    hc_close(&c);
    cr_assert_eq(atomic_load(&f.count), 0,
                 "%llu requests processed on a rejected connection",
                 (unsigned long long)atomic_load(&f.count));
    cr_assert_eq(hts_stats(&f.t).requests, 0);
    cr_assert_geq(hts_stats(&f.t).rejected, 1);
    /* Other connections are unaffected. */
    http_expect(f.t.port, "/ok", 200);
    HTS_WAIT_CONNS(&f.t, 0);
    hts_fini(&f.t);
}

#define REJECT(name, raw, status)                                              \
    Test(http_framing, name, .timeout = ES_TEST_TIMEOUT)                       \
    {                                                                          \
        expect_rejected(raw, sizeof(raw) - 1, status, status);                 \
    }

#define REJECT2(name, raw, status, status2)                                    \
    Test(http_framing, name, .timeout = ES_TEST_TIMEOUT)                       \
    {                                                                          \
        expect_rejected(raw, sizeof(raw) - 1, status, status2);                \
    }

#define POST "POST /count HTTP/1.1\r\nHost: t\r\n"
#define CHUNKED POST "Transfer-Encoding: chunked\r\n\r\n"

/* The harness itself: a valid pair gets two answers and two calls. */
Test(http_framing, control_valid_pipeline, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct hc c;

    fx_start(&f);
    hc_open(&c, f.t.port);
    HC_SEND(&c, POST "Content-Length: 2\r\n\r\nab" NEXT);
    HC_EXPECT_STATUS(&c, 200);
    HC_EXPECT_STATUS(&c, 200);
    hc_close(&c);
    cr_assert_eq(atomic_load(&f.count), 2);
    hts_fini(&f.t);
}

/* --- Content-Length and Transfer-Encoding (RFC 9112 6.1-6.3) -------------- */

REJECT(cl_and_te,
       POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\n",
       400)
REJECT(te_and_cl,
       POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            "0\r\n\r\n",
       400)
REJECT(cl_two_differing,
       POST "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400)
REJECT(cl_two_equal, POST "Content-Length: 2\r\nContent-Length: 2\r\n\r\nab",
       400)
REJECT(cl_list, POST "Content-Length: 1,2\r\n\r\nab", 400)
REJECT(cl_not_numeric, POST "Content-Length: abc\r\n\r\n", 400)
REJECT(cl_negative, POST "Content-Length: -1\r\n\r\n", 400)
REJECT(cl_plus_sign, POST "Content-Length: +1\r\n\r\na", 400)
REJECT(cl_overflow, POST "Content-Length: 99999999999999999999999\r\n\r\n", 400)
REJECT(cl_empty, POST "Content-Length: \r\n\r\n", 400)
REJECT(te_gzip_only, POST "Transfer-Encoding: gzip\r\n\r\nabc", 400)
REJECT(te_chunked_then_gzip,
       POST "Transfer-Encoding: chunked, gzip\r\n\r\n"
            "0\r\n\r\n",
       400)
REJECT(te_chunked_twice,
       POST "Transfer-Encoding: chunked\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       400)
REJECT(te_empty, POST "Transfer-Encoding: \r\n\r\n", 400)
REJECT(te_identity, POST "Transfer-Encoding: identity\r\n\r\n", 400)
/* A coding the server does not know before chunked: it could not decode
 * the body (RFC 9112 6.1: 501). */
REJECT(te_gzip_then_chunked,
       POST "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501)
REJECT(te_identity_then_chunked,
       POST "Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501)
REJECT(te_gzip_line_then_chunked_line,
       POST "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\n",
       501)

/* --- Chunked bodies ------------------------------------------------------- */

REJECT(chunk_size_garbage, CHUNKED "zz\r\nab\r\n0\r\n\r\n", 400)
REJECT(chunk_size_overflow, CHUNKED "fffffffffffffffff\r\nab\r\n0\r\n\r\n", 400)
REJECT(chunk_size_negative, CHUNKED "-1\r\nab\r\n0\r\n\r\n", 400)
REJECT(chunk_data_without_crlf, CHUNKED "3\r\nabcX\r\n0\r\n\r\n", 400)
REJECT(chunk_size_bare_lf, CHUNKED "3\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_size_space, CHUNKED "3 \r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_ctl, CHUNKED "3;a=\x01\r\nabc\r\n0\r\n\r\n", 400)
/* chunk-ext = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
 * (RFC 9112 7.1.1); obs-text only inside a quoted-string. */
REJECT(chunk_ext_obs_text_name,
       CHUNKED "3;a=b;\x9d\xc2\xdd\x9b e\"\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_paren, CHUNKED "3;a=b(c=\"d e\"\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_no_name, CHUNKED "3;\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_empty_name, CHUNKED "3;=b\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_no_value, CHUNKED "3;a=\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_two_values, CHUNKED "3;a=b c\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_trailing_space, CHUNKED "3;a=b \r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_obs_text_token, CHUNKED "3;a=\xe9\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_unclosed_quote, CHUNKED "3;a=\"b\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_after_quote, CHUNKED "3;a=\"b\"c\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_ext_quoted_ctl, CHUNKED "3;a=\"\x7f\"\r\nabc\r\n0\r\n\r\n", 400)
/* llhttp 8.1 takes CR + any byte as the end of a chunk-size line. */
REJECT(chunk_size_cr_bad, CHUNKED "3\rX\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_last_cr_bad, CHUNKED "3\r\nabc\r\n0\rJ\r\n\r\n", 400)
REJECT(chunk_size_hex_prefix, CHUNKED "0x3\r\nabc\r\n0\r\n\r\n", 400)
REJECT(chunk_size_overflow_after_zeros,
       CHUNKED "0000fffffffffffffffff\r\nab\r\n0\r\n\r\n", 400)
REJECT(chunk_size_overflow_with_ext,
       CHUNKED "fffffffffffffffff;a=b\r\nab\r\n0\r\n\r\n", 400)
/* The two bytes after chunk data must be CRLF (RFC 9112 7.1): llhttp 8.1
 * skips whatever they are, so in each case below it would read the rest as
 * a valid body and the pipelined request would run. */
REJECT(chunk_data_two_bad_bytes, CHUNKED "5\r\nhelloXX0\r\n\r\n", 400)
REJECT(chunk_data_cr_then_bad, CHUNKED "5\r\nhello\rX0\r\n\r\n", 400)
REJECT(chunk_data_bad_then_lf, CHUNKED "5\r\nhelloX\n0\r\n\r\n", 400)
REJECT(chunk_data_two_lf, CHUNKED "5\r\nhello\n\n0\r\n\r\n", 400)
REJECT(chunk_data_smuggled, CHUNKED "1\r\nAXX4\r\nGET \r\n0\r\n\r\n", 400)
REJECT(trailer_bad_name, CHUNKED "3\r\nabc\r\n0\r\nBad Name: 1\r\n\r\n", 400)

REJECT(trailer_bare_lf, CHUNKED "3\r\nabc\r\n0\r\nX-T: 1\n\r\n", 400)
REJECT(trailer_obs_fold, CHUNKED "3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n", 400)
/* llhttp 8.1 takes CR + any byte as the empty line ending the trailers. */
REJECT(trailer_end_cr_bad, CHUNKED "3\r\nabc\r\n0\r\n\rX", 400)
REJECT(trailer_line_cr_bad, CHUNKED "3\r\nabc\r\n0\r\nX-T: 1\rX\r\n\r\n", 400)
REJECT(trailer_no_colon, CHUNKED "3\r\nabc\r\n0\r\nX-T 1\r\n\r\n", 400)
REJECT(trailer_ctl, CHUNKED "3\r\nabc\r\n0\r\nX-T: a\x01\r\n\r\n", 400)

/* --- Field syntax (RFC 9112 5, RFC 9110 5.5) ------------------------------ */

REJECT(space_before_colon, "GET /count HTTP/1.1\r\nHost : t\r\n\r\n", 400)
REJECT(space_before_colon_other,
       "GET /count HTTP/1.1\r\nHost: t\r\n"
       "X-Foo : bar\r\n\r\n",
       400)
REJECT(name_ctl, "GET /count HTTP/1.1\r\nHost: t\r\nFo\x01o: x\r\n\r\n", 400)
REJECT(name_space, "GET /count HTTP/1.1\r\nHost: t\r\nFo o: x\r\n\r\n", 400)
REJECT(name_empty, "GET /count HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n", 400)
REJECT(value_nul, "GET /count HTTP/1.1\r\nHost: t\r\nFoo: a\0b\r\n\r\n", 400)
REJECT(value_del, "GET /count HTTP/1.1\r\nHost: t\r\nFoo: a\x7f b\r\n\r\n", 400)
REJECT(value_ctl, "GET /count HTTP/1.1\r\nHost: t\r\nFoo: a\x01 b\r\n\r\n", 400)
REJECT(value_bare_cr, "GET /count HTTP/1.1\r\nHost: t\r\nFoo: a\rb\r\n\r\n",
       400)
/* Bare LFs llhttp 8.1 lets through: ending the request line, or as the
 * empty line; and obs-fold in the head. */
REJECT(bare_lf_after_request_line, "GET /count HTTP/1.1\nHost: t\r\n\r\n", 400)
REJECT(bare_lf_empty_line, "GET /count HTTP/1.1\r\nHost: t\r\n\n", 400)
REJECT(obs_fold_in_head,
       "GET /count HTTP/1.1\r\nHost: t\r\nX-Foo: a\r\n b\r\n\r\n", 400)
REJECT(bare_lf_line_endings, "GET /count HTTP/1.1\nHost: t\n\n", 400)
REJECT(bare_lf_in_fields, "GET /count HTTP/1.1\r\nHost: t\nFoo: b\r\n\r\n", 400)
/* llhttp 8.1 takes CR + any byte as the empty line ending the head. */
REJECT(head_end_cr_bad, "GET /count HTTP/1.1\r\nHost: t\r\n\rX", 400)
REJECT(whitespace_before_first_field, "GET /count HTTP/1.1\r\n Host: t\r\n\r\n",
       400)

/* --- Host (RFC 9112 3.2) -------------------------------------------------- */

REJECT(missing_host_11, "GET /count HTTP/1.1\r\nX-Other: 1\r\n\r\n", 400)
REJECT(two_hosts, "GET /count HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)
REJECT(two_hosts_same, "GET /count HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400)

/* Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2). */
#define HOST(h) "GET /count HTTP/1.1\r\nHost: " h "\r\n\r\n"
REJECT(host_space_slash, HOST("a b/c"), 400)
REJECT(host_angle, HOST("<x>"), 400)
/* A comma is what two Host lines combined look like (RFC 9110 5.3). */
REJECT(host_comma, HOST("a,b"), 400)
REJECT(host_port_too_big, HOST("a:99999"), 400)
REJECT(host_port_letter, HOST("a:8o"), 400)
REJECT(host_two_ports, HOST("a:1:2"), 400)
REJECT(host_userinfo, HOST("u@h"), 400)
REJECT(host_slash, HOST("a/b"), 400)
REJECT(host_bad_pct, HOST("a%zz"), 400)
REJECT(host_v6_unbracketed, HOST("::1"), 400)
REJECT(host_v6_unclosed, HOST("[::1"), 400)
REJECT(host_v6_bad, HOST("[zz::1]"), 400)
REJECT(host_v6_trailing, HOST("[::1]x"), 400)

Test(http_framing, http10_without_host_is_fine, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct hr r;

    fx_start(&f);
    HTTP_ONCE(f.t.port, "GET /count HTTP/1.0\r\n\r\n", &r, 0);
    cr_assert_eq(r.status, 200);
    hr_release(&r);
    cr_assert_eq(atomic_load(&f.count), 1);
    hts_fini(&f.t);
}

/* --- Request line --------------------------------------------------------- */

REJECT(version_20, "GET /count HTTP/2.0\r\nHost: t\r\n\r\n", 505)
REJECT(version_30, "GET /count HTTP/3.0\r\nHost: t\r\n\r\n", 505)
/* A higher minor version could be served as 1.1 (RFC 9110 2.5), but llhttp
 * rejects it; either refusal is acceptable, processing it half is not. */
REJECT2(version_12, "GET /count HTTP/1.2\r\nHost: t\r\n\r\n", 505, 400)
REJECT2(version_09_with_fields, "GET /count HTTP/0.9\r\nHost: t\r\n\r\n", 505,
        400)
REJECT(no_version, "GET /count\r\nHost: t\r\n\r\n", 505)
/* The HTTP/2 connection preface is not HTTP/1.1. */
REJECT2(h2_preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, 400)
REJECT(garbage_request_line, "\x01\x02garbage\r\n\r\n", 400)
REJECT(lowercase_http, "GET /count http/1.1\r\nHost: t\r\n\r\n", 400)
REJECT(space_in_target, "GET /count x HTTP/1.1\r\nHost: t\r\n\r\n", 400)
REJECT(tab_in_target, "GET /co\tunt HTTP/1.1\r\nHost: t\r\n\r\n", 400)
REJECT(tab_ending_target, "GET /count\t HTTP/1.1\r\nHost: t\r\n\r\n", 400)
/* HTTP/0.9 (no version): 505 at the end of the request line. */
REJECT(version_09_line, "GET /count\r\n", 505)
REJECT(ctl_in_target, "GET /count\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400)
REJECT(trailing_space_after_version, "GET /count HTTP/1.1 \r\nHost: t\r\n\r\n",
       400)
REJECT(method_only, "GET\r\n\r\n", 400)

/* An HTTP/1.0 request with Transfer-Encoding has faulty framing: the server
 * may answer it (or refuse it), but must close after, whatever the request
 * asked (RFC 9112 6.1). */
Test(http_framing, http10_transfer_encoding_closes, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct hc c;
    struct hr r;
    long extra;

    fx_start(&f);
    hc_open(&c, f.t.port);
    HC_SEND(&c, "POST /count HTTP/1.0\r\nConnection: keep-alive\r\n"
                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" NEXT);
    HC_READ(&c, &r, 0);
    cr_assert(r.status == 200 || r.status == 400, "status %d", r.status);
    hr_release(&r);
    extra = hc_wait_eof(&c, ES_TEST_WAIT_S);
    cr_assert_eq(extra, 0, "after the response: %ld", extra);
    hc_close(&c);
    cr_assert_leq(atomic_load(&f.count), 1, "the pipelined request ran");
    hts_fini(&f.t);
}

/* An empty line before the request line may be ignored (RFC 9112 2.2); if
 * the server does, both requests are served. */
Test(http_framing, empty_line_before_request, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct hc c;
    struct hr r;

    fx_start(&f);
    hc_open(&c, f.t.port);
    HC_SEND(&c, "\r\n" NEXT NEXT);
    HC_READ(&c, &r, 0);
    if (r.status == 400) {
        hr_release(&r);
        cr_assert_eq(hc_wait_eof(&c, ES_TEST_WAIT_S), 0);
        cr_assert_eq(atomic_load(&f.count), 0);
    } else {
        cr_assert_eq(r.status, 200);
        hr_release(&r);
        HC_EXPECT_STATUS(&c, 200);
        cr_assert_eq(atomic_load(&f.count), 2);
    }
    hc_close(&c);
    hts_fini(&f.t);
}

/* Folded fields (obs-fold) are either refused or joined with a space
 * (RFC 9112 5.2); never taken as a field of their own. */
static void h_foo(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    const char *v = es_http_request_header(req, "X-Foo");
    const char *b = es_http_request_header(req, "b");

    (void)arg;
    es_http_response_body(res, v ? v : "(none)", strlen(v ? v : "(none)"));
    if (b)
        es_http_response_status(res, 500);
}

Test(http_framing, obs_fold_refused_or_joined, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;

    hts_serve1(&t, "GET", "/foo", h_foo, NULL);
    HTTP_ONCE(t.port,
              "GET /foo HTTP/1.1\r\nHost: t\r\nX-Foo: a\r\n b: c\r\n\r\n", &r,
              0);
    cr_assert(r.status == 400 || r.status == 200, "status %d", r.status);
    if (r.status == 200)
        cr_assert(strcmp(r.body, "a b: c") == 0, "folded value: %s", r.body);
    hr_release(&r);
    hts_fini(&t);
}
