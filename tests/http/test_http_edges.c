/* SPDX-License-Identifier: MIT */
/*
 * Edge cases of the HTTP server that sit between the other files: request
 * target forms (absolute-form must be accepted and routed by its path,
 * RFC 9112 3.2.2; asterisk- and authority-form must not crash anything),
 * an empty query, error responses to HEAD (no body) and to requests that
 * expected 100-continue, a client that half-closes after its request,
 * the listening variants (two addresses, a Unix socket, SO_REUSEPORT),
 * server names the server must refuse, the counters, an Upgrade request
 * (ignored), 204 and 304 without a body, a second defer(), and clients
 * that leave in the middle of a large streamed response.
 */
#include "http_test.h"

#include <stdio.h>
#include <sys/un.h>

/* Answers "<path>|<query>|<target>". */
static void h_parts(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    char b[512];
    int n = snprintf(b, sizeof(b), "%s|%s|%s", es_http_request_path(req),
                     es_http_request_query(req), es_http_request_target(req));

    (void)arg;
    es_http_response_body(res, b, (size_t)n);
}

static void edges_fixture(struct hts *t, atomic_ullong *count,
                          const es_http_server_opts_t *o)
{
    hts_init(t, 2, o);
    hts_route(t, NULL, "/p/*", h_parts, NULL);
    hts_route(t, NULL, "/count", h_count, count);
    hts_route(t, NULL, "/echo", h_echo_body, NULL);
    hts_start(t);
}

/* --- Request target forms ----------------------------------------------------
 */

Test(http_edges, absolute_form_is_routed_by_path, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    atomic_ullong n = 0;

    edges_fixture(&t, &n, NULL);
    HTTP_ONCE(t.port,
              "GET http://example.test/p/abs?q=1 HTTP/1.1\r\n"
              "Host: example.test\r\n\r\n",
              &r, 0);
    cr_assert_eq(r.status, 200, "absolute-form: %d", r.status);
    HR_BODY_IS(&r, "/p/abs|q=1|http://example.test/p/abs?q=1");
    hr_release(&r);
    hts_fini(&t);
}

Test(http_edges, empty_query_and_odd_paths, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    atomic_ullong n = 0;

    edges_fixture(&t, &n, NULL);
    http_get(t.port, "/p/x?", &r);
    HR_BODY_IS(&r, "/p/x||/p/x?");
    hr_release(&r);
    http_get(t.port, "/p/a%2Fb?x=%20&&y", &r);
    HR_BODY_IS(&r, "/p/a%2Fb|x=%20&&y|/p/a%2Fb?x=%20&&y");
    hr_release(&r);
    http_get(t.port, "/p/?a?b", &r);
    HR_BODY_IS(&r, "/p/|a?b|/p/?a?b");
    hr_release(&r);
    hts_fini(&t);
}

/* The query is kept as the end of the target unless a fragment follows
 * it there; then it is a copy of its own (http/response.c fill_request). */
Test(http_edges, query_before_fragment, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const cases[][2] = {
        {"/p/plain", "/p/plain||/p/plain"},
        {"/p/f#frag", "/p/f||/p/f#frag"},
        {"/p/g?q=1#frag", "/p/g|q=1|/p/g?q=1#frag"},
        {"/p/h?#", "/p/h||/p/h?#"},
        {"/p/i?a=b", "/p/i|a=b|/p/i?a=b"},
    };
    struct hts t;
    atomic_ullong n = 0;

    edges_fixture(&t, &n, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hr r;

        http_get(t.port, cases[i][0], &r);
        cr_assert_eq(r.status, 200, "%s: %d", cases[i][0], r.status);
        HR_BODY_IS(&r, cases[i][1]);
        hr_release(&r);
    }
    hts_fini(&t);
}

/* Forms that match no route: any refusal will do, and the server lives. */
Test(http_edges, asterisk_and_authority_forms, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const raw[] = {
        "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
        "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    };
    struct hts t;
    atomic_ullong n = 0;

    edges_fixture(&t, &n, NULL);
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        struct hr r;
        int rc = http_once(t.port, raw[i], &r, 0);

        cr_assert_eq(rc, 0, "%s: %d", raw[i], rc);
        cr_assert(r.status >= 400 && r.status < 600, "%s: %d", raw[i],
                  r.status);
        hr_release(&r);
    }
    http_expect(t.port, "/count", 200);
    hts_fini(&t);
}

/* --- Error responses ---------------------------------------------------------
 */

Test(http_edges, head_error_has_no_body, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    htc_open(&x, edges_fixture, NULL);
    HC_SEND(&x.c, "HEAD /missing HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /count HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&x.c, &r, HR_HEAD);
    cr_assert_eq(r.status, 404);
    hr_release(&r);
    /* A body after the HEAD's 404 would be misread here. */
    HC_EXPECT(&x.c, 200, "ok");
    htc_close(&x);
}

/*
 * A final status instead of 100 Continue: the server must then either close
 * (saying so) or go on reading the body, never take the body for the next
 * request (RFC 9110 10.1.1).
 */
Test(http_edges, expect_answered_with_error, .timeout = ES_TEST_TIMEOUT)
{
    static const char body[] = "GET /count HTTP/1.1\r\nHost: t\r\n\r\n";
    struct htc x;
    struct hr r;
    char head[256];
    bool sent_body = false;

    htc_open(&x, edges_fixture, NULL);
    snprintf(head, sizeof(head),
             "POST /missing HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
             "Expect: 100-continue\r\n\r\n",
             strlen(body));
    HC_SEND(&x.c, head);
    HC_READ(&x.c, &r, 0);
    if (r.status == 100) {
        hr_release(&r);
        HC_SEND(&x.c, body);
        sent_body = true;
        HC_READ(&x.c, &r, 0);
    }
    cr_assert_eq(r.status, 404);
    if (hr_has_token(&r, "Connection", "close")) {
        hr_release(&r);
        hc_sends(&x.c, body);
        cr_assert_eq(hc_wait_eof(&x.c, ES_TEST_WAIT_S), 0);
    } else {
        hr_release(&r);
        /* The body (which looks like a request) if not sent yet, and then a
         * real request: only the real one may be answered. */
        if (!sent_body)
            HC_SEND(&x.c, body);
        HC_SEND(&x.c, "GET /p/real HTTP/1.1\r\nHost: t\r\n\r\n");
        HC_EXPECT(&x.c, 200, "/p/real||/p/real");
    }
    hc_close(&x.c);
    cr_assert_eq(atomic_load(&x.n), 0, "the body ran as a request");
    htc_close(&x);
}

/* An expectation other than 100-continue: 417 (RFC 9110 10.1.1 allows it)
 * and the unread body never runs as a request; or the request is served. */
Test(http_edges, unknown_expectation, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;
    struct hr r;

    htc_open(&x, edges_fixture, NULL);
    HC_SEND(&x.c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 32\r\n"
                  "Expect: something-else\r\n\r\n"
                  "GET /count HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&x.c, &r, 0);
    if (r.status == 417) {
        hr_release(&r);
        cr_assert_eq(hc_wait_eof(&x.c, ES_TEST_WAIT_S), 0);
    } else {
        cr_assert_eq(r.status, 200, "status %d", r.status);
        HR_BODY_IS(&r, "GET /count HTTP/1.1\r\nHost: t\r\n\r\n");
        hr_release(&r);
    }
    hc_close(&x.c);
    cr_assert_eq(atomic_load(&x.n), 0, "the body ran as a request");
    htc_close(&x);
}

/* Defers twice, then ends at once, inside the handler. */
static void h_defer_twice(es_http_request_t *req, es_http_response_t *res,
                          void *arg)
{
    char b[64];
    int r1 = es_http_response_defer(res, NULL, NULL);
    int r2 = es_http_response_defer(res, NULL, NULL);
    int n = snprintf(b, sizeof(b), "%d,%d", r1, r2);

    (void)req;
    (void)arg;
    es_http_response_body(res, b, (size_t)n);
    es_http_response_end(res);
}

Test(http_edges, defer_twice_then_end_inside, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    char want[64];

    hts_serve1(&t, "GET", "/twice", h_defer_twice, NULL);
    http_get(t.port, "/twice", &r);
    snprintf(want, sizeof(want), "0,%d", -EALREADY);
    HR_BODY_IS(&r, want);
    hr_release(&r);
    http_expect(t.port, "/twice", 200);
    hts_fini(&t);
}

/* --- Half-close
 * ---------------------------------------------------------------- */

/* A client that sends its request and shuts down its sending side still
 * gets the response (as `nc -N` or `curl` with a half-close would). */
Test(http_edges, request_then_half_close, .timeout = ES_TEST_TIMEOUT)
{
    struct htc x;

    htc_open(&x, edges_fixture, NULL);
    HC_SEND(&x.c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n"
                  "half");
    shutdown(x.c.fd, SHUT_WR);
    HC_EXPECT(&x.c, 200, "half");
    cr_assert_eq(hc_wait_eof(&x.c, ES_TEST_WAIT_S), 0);
    hc_close(&x.c);
    HTS_WAIT_CONNS(&x.t, 0);
    htc_close(&x);
}

/* --- Listening
 * ------------------------------------------------------------------ */

Test(http_edges, two_addresses, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    atomic_ullong n = 0;
    int p0, p1;

    hts_init(&t, 2, NULL);
    hts_route(&t, NULL, "/count", h_count, &n);
    ES_OK(es_http_server_listen(t.srv, "127.0.0.1:0"));
    ES_OK(es_http_server_listen(t.srv, "127.0.0.1:0"));
    ES_OK(es_http_server_start(t.srv));
    p0 = es_http_server_port(t.srv, 0);
    p1 = es_http_server_port(t.srv, 1);
    cr_assert(p0 > 0 && p1 > 0 && p0 != p1, "ports %d %d", p0, p1);
    cr_assert_eq(es_http_server_port(t.srv, 2), -ENOENT);
    http_expect(p0, "/count", 200);
    http_expect(p1, "/count", 200);
    cr_assert_eq(atomic_load(&n), 2);
    hts_fini(&t);
}

Test(http_edges, unix_socket, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct sockaddr_un a;
    char addr[sizeof(a.sun_path) + 8];
    atomic_ullong n = 0;

    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof(a.sun_path), "/tmp/es_http_test_%d.sock",
             (int)getpid());
    unlink(a.sun_path);
    snprintf(addr, sizeof(addr), "unix:%s", a.sun_path);
    hts_init(&t, 1, NULL);
    hts_route(&t, NULL, "/count", h_count, &n);
    ES_OK(es_http_server_listen(t.srv, addr));
    ES_OK(es_http_server_start(t.srv));
    cr_assert_eq(es_http_server_port(t.srv, 0), 0);
    memset(&c, 0, sizeof(c));
    c.fd = client_connect((struct sockaddr *)&a, sizeof(a));
    cr_assert_geq(c.fd, 0, "connect %s: %s", a.sun_path, strerror(-c.fd));
    HC_SEND(&c, "GET /count HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /count HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_EXPECT_STATUS(&c, 200);
    HC_EXPECT_STATUS(&c, 200);
    hc_close(&c);
    cr_assert_eq(atomic_load(&n), 2);
    hts_fini(&t);
    unlink(a.sun_path);
}

Test(http_edges, reuseport_acceptors, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.reuseport = 1};
    struct hts t;
    atomic_ullong n = 0;

    hts_init(&t, 2, &o);
    hts_route(&t, NULL, "/count", h_count, &n);
    hts_start(&t);
    for (int i = 0; i < 20; i++)
        http_expect(t.port, "/count", 200);
    cr_assert_eq(atomic_load(&n), 20);
    cr_assert_eq(hts_stats(&t).accepted, 20);
    hts_fini(&t);
}

/* "Creates a server on rt (which may or may not be running yet)". */
Test(http_edges, server_before_runtime_start, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t ro = {.threads = 2};
    struct hts t;
    atomic_ullong n = 0;

    memset(&t, 0, sizeof(t));
    t.rt = es_test_runtime_new(&ro);
    ES_OK(es_http_server_new(t.rt, NULL, &t.srv));
    cr_assert_lt(es_http_server_port(t.srv, 0), 0, "a port before start");
    hts_route(&t, "GET", "/count", h_count, &n);
    ES_OK(es_http_server_listen(t.srv, "127.0.0.1:0"));
    ES_OK(es_http_server_start(t.srv));
    t.port = es_http_server_port(t.srv, 0);
    cr_assert_gt(t.port, 0);
    ES_OK(es_runtime_start(t.rt));
    http_expect(t.port, "/count", 200);
    cr_assert_eq(atomic_load(&n), 1);
    hts_fini(&t);
}

Test(http_edges, refused_server_names, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    static const char *const bad[] = {"a\r\nX-Injected: 1", "a\nb", "a\rb"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        es_http_server_opts_t o = {.server_name = bad[i]};
        es_http_server_t *s = NULL;

        cr_assert_eq(es_http_server_new(rt, &o, &s), -EINVAL,
                     "server name %zu accepted", i);
    }
    es_test_free(rt);
}

/* --- Counters ------------------------------------------------------------- */

Test(http_edges, stats_counters, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;
    es_http_server_stats_t st;
    atomic_ullong n = 0;

    hts_init(&t, 2, NULL);
    hts_route(&t, "GET", "/c", h_count, &n);
    hts_start(&t);
    st = hts_stats(&t);
    cr_assert_eq(st.accepted, 0);
    cr_assert_eq(st.connections, 0);

    hc_open(&c, t.port);
    HC_SEND(&c, "GET /c HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /c HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        HC_READ(&c, &r, 0);
        hr_release(&r);
    }
    st = hts_stats(&t);
    cr_assert_eq(st.connections, 1);
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.requests, 2);
    cr_assert_eq(st.rejected, 1);
    hc_close(&c);
    http_expect(t.port, "/c", 200);
    HTS_WAIT_CONNS(&t, 0);
    st = hts_stats(&t);
    cr_assert_eq(st.accepted, 2);
    cr_assert_eq(st.requests, 3);
    cr_assert_eq(st.rejected, 1);
    cr_assert_eq(st.deferred_gone, 0);
    cr_assert_eq(atomic_load(&n), 3);
    hts_fini(&t);
}

/* A request asking for an upgrade the server does not do gets an ordinary
 * response (RFC 9110 7.8: a server may ignore Upgrade) and the connection
 * stays HTTP/1.1. */
Test(http_edges, upgrade_request_is_ignored, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    atomic_ullong n = 0;

    hts_serve1(&t, "GET", "/c", h_count, &n);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /c HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\n\r\n"
                "GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_EXPECT_STATUS(&c, 200);
    HC_EXPECT_STATUS(&c, 200);
    hc_close(&c);
    cr_assert_eq(atomic_load(&n), 2);
    hts_fini(&t);
}

/* --- Responses without a body ------------------------------------------------
 */

/* Answers with the status in the path ("/nobody/204") and a body that must
 * not be sent. */
static void h_nobody(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    const char *p = strrchr(es_http_request_path(req), '/');

    (void)arg;
    es_http_response_status(res, atoi(p + 1));
    es_http_response_body(res, "must not be sent", 16);
}

Test(http_edges, no_body_for_204_and_304, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;

    hts_init(&t, 1, NULL);
    hts_route(&t, "GET", "/nobody/*", h_nobody, NULL);
    hts_route(&t, NULL, "/t/*", h_target, NULL);
    hts_start(&t);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /nobody/204 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /nobody/304 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /t/after HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 204);
    /* RFC 9110 8.6: no Content-Length in a 204. */
    cr_assert_null(hr_header(&r, "Content-Length"));
    cr_assert_null(hr_header(&r, "Transfer-Encoding"));
    hr_release(&r);
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 304);
    cr_assert_null(hr_header(&r, "Transfer-Encoding"));
    hr_release(&r);
    /* Had a body been sent, it would be read here as a status line. */
    HC_EXPECT(&c, 200, "/t/after");
    hc_close(&c);
    hts_fini(&t);
}

/* --- Clients vanishing mid-response ----------------------------------------
 */

/* Streams 4 MiB from inside the handler: queued at once. */
static void h_inline_flood(es_http_request_t *req, es_http_response_t *res,
                           void *arg)
{
    char *chunk = malloc(65536);

    (void)req;
    (void)arg;
    if (!chunk)
        return;
    memset(chunk, 'f', 65536);
    if (es_http_response_begin(res) == 0) {
        for (int i = 0; i < 64; i++)
            if (es_http_response_write(res, chunk, 65536) != 0)
                break;
        es_http_response_end(res);
    }
    free(chunk);
}

Test(http_edges, clients_vanish_mid_response, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;

    hts_init(&t, 2, NULL);
    hts_route(&t, "GET", "/inline-flood", h_inline_flood, NULL);
    hts_route(&t, "GET", "/now", h_target, NULL);
    hts_start(&t);
    for (int round = 0; round < 6; round++) {
        hc_open(&c, t.port);
        HC_SEND(&c, "GET /inline-flood HTTP/1.1\r\nHost: t\r\n\r\n"
                    "GET /now HTTP/1.1\r\nHost: t\r\n\r\n");
        cr_assert_gt(hc_fill(&c, ES_TEST_WAIT_S), 0);
        if (round % 2)
            hc_reset(&c);
        else
            hc_close(&c);
    }
    HTS_WAIT_CONNS(&t, 0);
    cr_assert_eq(hts_stats(&t).accepted, 6);
    http_expect(t.port, "/now", 200);
    hts_fini(&t);
}
