/* SPDX-License-Identifier: MIT */
/*
 * Tests of deferred responses (es_http_response_defer): finished from a
 * timer, from another actor, from a foreign thread and from the test
 * thread; pipelined requests waiting behind a deferred one; a parked
 * response outliving every deadline; deferred streaming (chunked, HEAD,
 * close-delimited); a thousand responses parked at once. The clients that
 * leave first are in test_http_gone.c. Nothing may leak (the ASan build
 * checks).
 */
#include "deferred_test.h"

/* --- Finishing from elsewhere --------------------------------------------- */

Test(http_deferred, finish_from_timer, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;

    defer_fixture(&t, NULL);
    expect_finished(t.port, "/timer?a=1", "timer:/timer?a=1", "timer");
    expect_finished(t.port, "/timer?a=2", "timer:/timer?a=2", "timer");
    ES_WAIT_GE(g_actor_ended, 2);
    cr_assert_eq(atomic_load(&g_actor_ended), 2);
    cr_assert_eq(atomic_load(&g_actor_end_fail), 0);
    defer_fini(&t);
}

Test(http_deferred, finish_from_actor, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;

    defer_fixture(&t, NULL);
    expect_finished(t.port, "/actor", "actor:/actor", "actor");
    /* Keep-alive continues after a deferred response. */
    hc_open(&c, t.port);
    for (int i = 0; i < 5; i++) {
        HC_SEND(&c, "GET /actor?k=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        HC_EXPECT_BODY(&c, "actor:/actor?k=1");
    }
    hc_close(&c);
    ES_WAIT_GE(g_actor_ended, 6);
    cr_assert_eq(atomic_load(&g_actor_ended), 6);
    cr_assert_eq(hts_stats(&t).requests, 6);
    defer_fini(&t);
}

Test(http_deferred, finish_from_thread, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;

    defer_fixture(&t, NULL);
    expect_finished(t.port, "/thread?i=1", "thread:/thread?i=1", "thread");
    expect_finished(t.port, "/thread?i=2", "thread:/thread?i=2", "thread");
    /* The worker counts after end() returns, maybe after the client read. */
    ES_WAIT_GE(g_w.ended, 2);
    cr_assert_eq(atomic_load(&g_w.end_ok), 2);
    defer_fini(&t);
}

/* A parked request keeps its parts in the exchange's tail without
 * pointers: read from the test thread (not the connection's) after the
 * handler returned, each accessor still gives what was received. */
Test(http_deferred, request_read_while_parked, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    const es_http_request_t *req;
    const char *q;

    defer_fixture(&t, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET http://h.test/park?i=3&x=%20y#frag HTTP/1.0\r\n"
                "Host: h.test\r\nX-Long: 0123456789abcdef\r\n\r\n");
    ES_WAIT_GE(g_park.parked, 1);
    req = es_http_response_request(parked(3));
    cr_assert_not_null(req);
    cr_assert_str_eq(es_http_request_method(req), "GET");
    cr_assert_str_eq(es_http_request_target(req),
                     "http://h.test/park?i=3&x=%20y#frag");
    cr_assert_str_eq(es_http_request_path(req), "/park");
    q = es_http_request_query(req);
    cr_assert_str_eq(q, "i=3&x=%20y");
    cr_assert_eq(es_http_request_version(req), 10);
    cr_assert_str_eq(es_http_request_header(req, "x-long"), "0123456789abcdef");
    cr_assert_str_eq(es_http_request_header(req, "Host"), "h.test");
    cr_assert_eq(es_http_request_runtime(req), t.rt);
    cr_assert_eq(finish(parked(3), "test"), 0);
    HC_EXPECT_BODY(&c, "test:http://h.test/park?i=3&x=%20y#frag");
    hc_close(&c);
    defer_fini(&t);
}

Test(http_deferred, pipelined_waits_behind_deferred, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;

    defer_fixture(&t, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /thread?i=0 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /seq?i=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /seq?i=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_EXPECT_BODY(&c, "thread:/thread?i=0");
    HC_EXPECT_BODY(&c, "/seq?i=1");
    HC_EXPECT_BODY(&c, "/seq?i=2");
    hc_close(&c);
    cr_assert_eq(atomic_load(&g_seq_calls), 2);
    cr_assert_eq(atomic_load(&g_seq_after_end), 2,
                 "a pipelined request ran while the deferred one was held");
    defer_fini(&t);
}

/* A parked response outlives every deadline: none of them applies while
 * the server, not the client, is the one keeping the connection busy. */
Test(http_deferred, parked_outlives_timeouts, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.keepalive_timeout_ms = 100,
                               .header_timeout_ms = 100,
                               .body_timeout_ms = 100};
    struct hts t;
    struct hc c;
    struct hr r;

    defer_fixture(&t, &o);
    hc_open(&c, t.port);
    send_park(&c, 2);
    HC_SEND(&c, "HEAD /park?i=3 HTTP/1.1\r\nHost: t\r\n\r\n");
    ES_WAIT_GE(g_park.parked, 1);
    cr_assert(hc_quiet_for(&c, 400), "closed or answered while parked");
    cr_assert_eq(finish(parked(2), "test"), 0);
    HC_EXPECT_BODY(&c, "test:/park?i=2");
    /* The pipelined HEAD, deferred in its turn: no body on the wire. */
    ES_WAIT_GE(g_park.parked, 2);
    cr_assert_eq(finish(parked(3), "test"), 0);
    HC_SEND(&c, "GET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&c, &r, HR_HEAD);
    cr_assert_eq(r.status, 202);
    cr_assert_str_eq(hr_header(&r, "Content-Length") ?: "", "14");
    hr_release(&r);
    HC_EXPECT_BODY(&c, "/now");
    hc_close(&c);
    cr_assert_eq(atomic_load(&g_park.gone_total), 0);
    defer_fini(&t);
}

/* --- Deferred streaming --------------------------------------------------- */

Test(http_deferred, streaming_from_thread, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;
    const char *want = "piece0;piece1;piece2;piece3;piece4;piece5;piece6;"
                       "piece7;piece8;piece9;";

    defer_fixture(&t, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /stream?i=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /now?after=stream HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.chunked);
    /* Pieces that wait together may travel as one chunk. */
    cr_assert(r.chunks >= 1 && r.chunks <= 10, "%u chunks", r.chunks);
    HR_BODY_IS(&r, want);
    hr_release(&r);
    HC_EXPECT_BODY(&c, "/now?after=stream");
    /* HEAD: the head of a chunked response and nothing else. */
    HC_SEND(&c, "HEAD /stream?i=3 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /now?after=head HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&c, &r, HR_HEAD);
    cr_assert_eq(r.status, 200);
    hr_release(&r);
    HC_EXPECT_BODY(&c, "/now?after=head");
    hc_close(&c);
    /* HTTP/1.0: close-delimited. */
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /stream?i=2 HTTP/1.0\r\n\r\n");
    HC_READ(&c, &r, 0);
    cr_assert(r.until_close);
    HR_BODY_IS(&r, want);
    hr_release(&r);
    hc_close(&c);
    ES_WAIT_GE(g_w.ended, 3);
    cr_assert_eq(atomic_load(&g_w.end_ok), 3);
    defer_fini(&t);
}

/* --- Many at once --------------------------------------------------------- */

Test(http_deferred, thousand_parked_completed_together,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    struct hts t;
    static struct hc c[1000];
    rlim_t lim = raise_nofile();
    int n = 1000;

    if (lim < 2200)
        n = (int)(lim - 200) / 2;
    defer_fixture(&t, NULL);
    for (int i = 0; i < n; i++) {
        hc_open(&c[i], t.port);
        send_park(&c[i], i);
    }
    ES_WAIT_GE(g_park.parked, (unsigned long long)n);
    cr_assert_eq(hts_stats(&t).connections, (uint64_t)n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(finish(parked(i), "test"), 0);
    for (int i = 0; i < n; i++) {
        char want[64];

        snprintf(want, sizeof(want), "test:/park?i=%d", i);
        HC_EXPECT_BODY(&c[i], want);
        hc_close(&c[i]);
    }
    HTS_WAIT_CONNS(&t, 0);
    cr_assert_eq(atomic_load(&g_park.gone_total), 0);
    cr_assert_eq(hts_stats(&t).requests, (uint64_t)n);
    defer_fini(&t);
}
