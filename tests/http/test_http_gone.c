/* SPDX-License-Identifier: MIT */
/*
 * Tests of deferred responses whose client leaves first: on_gone exactly
 * once, on the connection's thread, with end() then returning -ECONNRESET
 * and freeing (a body set by reference included); a holder racing the
 * clients' departure; the runtime stopping while a response is parked;
 * clients that leave in the middle of a deferred stream or of a request;
 * and es_http_server_free() with open connections and a response still
 * held. Nothing may leak (the ASan build checks).
 */
#include "deferred_test.h"

/* --- The client leaves first ---------------------------------------------- */

static void client_leaves(const char *path, bool reset)
{
    struct hts t;
    struct hc c;
    es_http_response_t *res;
    char raw[128];
    bool with_cb = strcmp(path, "/park") == 0;

    defer_fixture(&t, NULL);
    hc_open(&c, t.port);
    snprintf(raw, sizeof(raw), "GET %s?i=7 HTTP/1.1\r\nHost: t\r\n\r\n", path);
    HC_SEND(&c, raw);
    ES_WAIT_GE(g_park.parked, 1);
    cr_assert(hc_quiet_for(&c, 20), "a deferred response was sent");
    if (reset)
        hc_reset(&c);
    else
        hc_close(&c);
    HTS_WAIT_CONNS(&t, 0);
    if (with_cb) {
        ES_WAIT_GE(g_park.gone_total, 1);
        cr_assert_eq(atomic_load(&g_park.gone[7]), 1);
    }
    res = parked(7);
    cr_assert_not_null(res);
    cr_assert_eq(es_http_response_begin(res), -ECONNRESET);
    cr_assert_eq(es_http_response_end(res), -ECONNRESET);
    es_test_sleep_ms(50);
    cr_assert_eq(atomic_load(&g_park.gone_total), with_cb ? 1 : 0,
                 "on_gone called %llu times",
                 (unsigned long long)atomic_load(&g_park.gone_total));
    cr_assert_eq(hts_stats(&t).deferred_gone, 1);
    http_expect(t.port, "/now", 200);
    defer_fini(&t);
}

Test(http_gone, client_leaves_on_gone_once, .timeout = ES_TEST_TIMEOUT)
{
    client_leaves("/park", false);
}

Test(http_gone, client_resets_on_gone_once, .timeout = ES_TEST_TIMEOUT)
{
    client_leaves("/park", true);
}

Test(http_gone, client_leaves_without_on_gone, .timeout = ES_TEST_TIMEOUT)
{
    client_leaves("/park-no-gone", false);
}

/* A body by reference set by an off-thread holder: freed once, on a demux
 * thread once sent, or inside es_http_response_end() when the client had
 * already left. */
static atomic_ullong g_ref_freed, g_ref_freed_off_loop;

static void ref_free(void *p)
{
    if (es_runtime_current_loop(g_park.rt) < 0)
        atomic_fetch_add(&g_ref_freed_off_loop, 1);
    atomic_fetch_add(&g_ref_freed, 1);
    free(p);
}

static int end_with_ref(es_http_response_t *res)
{
    char *b = strdup("by reference, late");

    cr_assert_not_null(b);
    if (es_http_response_body_ref(res, b, strlen(b), ref_free) != 0)
        free(b);
    return res_end_retry(res, NULL);
}

Test(http_gone, body_ref_from_holder_freed_once, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c, gone_c;

    defer_fixture(&t, NULL);
    hc_open(&c, t.port);
    hc_open(&gone_c, t.port);
    send_park(&c, 1);
    send_park(&gone_c, 2);
    ES_WAIT_GE(g_park.parked, 2);
    cr_assert_eq(end_with_ref(parked(1)), 0);
    HC_EXPECT_BODY(&c, "by reference, late");
    ES_WAIT_GE(g_ref_freed, 1);
    cr_assert_eq(atomic_load(&g_ref_freed_off_loop), 0,
                 "free_cb of a sent body ran off the demux threads");
    hc_close(&gone_c);
    ES_WAIT_GE(g_park.gone_total, 1);
    cr_assert_eq(end_with_ref(parked(2)), -ECONNRESET);
    cr_assert_eq(atomic_load(&g_ref_freed), 2,
                 "the dropped body was not freed inside end()");
    hc_close(&c);
    HTS_WAIT_CONNS(&t, 0);
    es_test_sleep_ms(20);
    cr_assert_eq(atomic_load(&g_ref_freed), 2);
    defer_fini(&t);
}

/* The holder ends while the clients leave: each end() either sends or
 * reports -ECONNRESET, on_gone runs at most once and never for a response
 * that was sent. */
Test(http_gone, end_races_client_leaving, .timeout = ES_TEST_TIMEOUT)
{
    enum { N = 200 };
    struct hts t;
    static struct hc c[N];
    int ok = 0, reset = 0, rcs[N];

    defer_fixture(&t, NULL);
    raise_nofile();
    for (int i = 0; i < N; i++) {
        hc_open(&c[i], t.port);
        send_park(&c[i], i);
    }
    ES_WAIT_GE(g_park.parked, N);
    /* Close the odd ones while ending all of them. */
    for (int i = 0; i < N; i++) {
        if (i % 2)
            hc_close(&c[i]);
        rcs[i] = finish(parked(i), "test");
        if (rcs[i] == 0)
            ok++;
        else if (rcs[i] == -ECONNRESET)
            reset++;
    }
    cr_assert_eq(ok + reset, N, "end() returned something else");
    for (int i = 0; i < N; i += 2) {
        cr_assert_eq(rcs[i], 0, "end of a response whose client stayed: %d",
                     rcs[i]);
        HC_EXPECT_STATUS(&c[i], 202);
        hc_close(&c[i]);
    }
    HTS_WAIT_CONNS(&t, 0);
    es_test_sleep_ms(50);
    for (int i = 0; i < N; i++) {
        int g = atomic_load(&g_park.gone[i]);

        cr_assert_leq(g, 1, "on_gone ran %d times for %d", g, i);
        cr_assert(!(g == 1 && rcs[i] == 0), "on_gone for a sent response");
    }
    cr_assert_leq(atomic_load(&g_park.gone_total), (unsigned long long)reset);
    defer_fini(&t);
}

/* Opens c and completes one request on it: a kept-alive, idle
 * connection. */
static void open_idle(struct hc *c, int port)
{
    struct hr r;

    hc_open(c, port);
    HC_SEND(c, "GET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(c, &r, 0);
    hr_release(&r);
}

/* The runtime stops while a response is parked: the client is gone for
 * the holder (on_gone once), end() still frees, and es_http_server_free()
 * after the stop frees the rest. */
Test(http_gone, runtime_stops_while_parked, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c, idle;

    defer_fixture(&t, NULL);
    open_idle(&idle, t.port);
    hc_open(&c, t.port);
    send_park(&c, 4);
    ES_WAIT_GE(g_park.parked, 1);
    ES_OK(es_runtime_stop(t.rt));
    ES_OK(es_test_wait(t.rt));
    cr_assert_eq(atomic_load(&g_park.gone[4]), 1, "on_gone: %d",
                 atomic_load(&g_park.gone[4]));
    cr_assert_eq(es_http_response_end(parked(4)), -ECONNRESET);
    cr_assert_geq(hc_wait_eof(&c, ES_TEST_WAIT_S), 0);
    cr_assert_geq(hc_wait_eof(&idle, ES_TEST_WAIT_S), 0);
    hc_close(&c);
    hc_close(&idle);
    defer_fini(&t); /* es_http_server_free() after the stop, then free */
}

/* --- Leaving a deferred stream ----------------------------------------- */

Test(http_gone, client_leaves_mid_stream, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    long got = 0;

    defer_fixture(&t, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /flood?i=3 HTTP/1.1\r\nHost: t\r\n\r\n");
    while (got < 256 * 1024) {
        int n = hc_fill(&c, ES_TEST_WAIT_S);

        cr_assert_gt(n, 0, "stream ended early");
        got += n;
        hc_consume(&c, hc_avail(&c));
    }
    hc_reset(&c);
    ES_WAIT_GE(g_w.ended, 1);
    cr_assert_eq(atomic_load(&g_w.write_rc), -ECONNRESET,
                 "write after the client left: %d (streamed %llu bytes)",
                 atomic_load(&g_w.write_rc),
                 (unsigned long long)atomic_load(&g_w.streamed));
    cr_assert_eq(atomic_load(&g_w.end_reset), 1);
    cr_assert_eq(atomic_load(&g_park.gone[3]), 1);
    HTS_WAIT_CONNS(&t, 0);
    http_expect(t.port, "/now", 200);
    defer_fini(&t);
}

/* --- Clients vanishing ---------------------------------------------------- */

Test(http_gone, clients_vanish_mid_request, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const halves[] = {
        "GET /now HTTP/1.1\r\nHo",
        "POST /now HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc",
        "POST /now HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "10\r\nabc",
        "GET /park?i=%d HTTP/1.1\r\nHost: t\r\n\r\nGET /now HTTP/1.1\r\n",
    };
    struct hts t;
    struct hc c;
    es_http_server_stats_t st;
    char raw[256];

    defer_fixture(&t, NULL);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 4; i++) {
            snprintf(raw, sizeof(raw), halves[i], 100 + round);
            hc_open(&c, t.port);
            HC_SEND(&c, raw);
            if (i == 3)
                ES_WAIT_GE(g_park.parked, (unsigned long long)round + 1);
            else
                es_test_sleep_ms(2);
            if (round % 2)
                hc_reset(&c);
            else
                hc_close(&c);
        }
    }
    /* The acceptor may lag behind the clients: count them in first. */
    cr_assert(hts_wait_accepted(&t, 20, ES_TEST_WAIT_S), "accepted %llu",
              (unsigned long long)hts_stats(&t).accepted);
    HTS_WAIT_CONNS(&t, 0);
    st = hts_stats(&t);
    cr_assert_eq(st.accepted, 20);
    cr_assert_eq(st.requests, 5, "only the parked requests were complete");
    ES_WAIT_GE(g_park.gone_total, 5);
    cr_assert_eq(st.deferred_gone, 5);
    for (int round = 0; round < 5; round++) {
        cr_assert_eq(atomic_load(&g_park.gone[100 + round]), 1);
        cr_assert_eq(es_http_response_end(parked(100 + round)), -ECONNRESET);
    }
    http_expect(t.port, "/now", 200);
    defer_fini(&t);
}

/* --- Freeing the server --------------------------------------------------- */

Test(http_gone, server_free_with_open_and_held, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc idle, held;
    pthread_t th;
    long extra;

    defer_fixture(&t, NULL);
    open_idle(&idle, t.port);
    hc_open(&held, t.port);
    send_park(&held, 5);
    ES_WAIT_GE(g_park.parked, 1);

    /* es_http_server_free() may wait for the held response: run it aside. */
    cr_assert_eq(pthread_create(&th, NULL, hts_free_thread, t.srv), 0);
    es_test_sleep_ms(20);
    /* The held one finishes its response, then closes. */
    cr_assert_eq(finish(parked(5), "test"), 0);
    HC_EXPECT_BODY(&held, "test:/park?i=5");
    cr_assert_eq(hc_wait_eof(&held, ES_TEST_WAIT_S), 0);
    hc_close(&held);
    /* The idle one has no request in progress: it is closed, with nothing
     * sent on it. */
    extra = hc_wait_eof(&idle, ES_TEST_WAIT_S);
    cr_assert_eq(extra, 0, "idle connection after es_http_server_free: %ld",
                 extra);
    hc_close(&idle);
    cr_assert(es_test_join(th, NULL, ES_TEST_JOIN_S),
              "es_http_server_free() did not return");
    t.srv = NULL;
    cr_assert_eq(atomic_load(&g_park.gone_total), 0);
    /* Nothing listens any more. */
    {
        struct sockaddr_in a;
        double end = es_test_now() + ES_TEST_WAIT_S;
        int fd;

        addr_lo(&a, t.port);
        while ((fd = client_connect((struct sockaddr *)&a, sizeof(a))) >= 0 &&
               es_test_now() < end) {
            close(fd);
            es_test_sleep_ms(10);
        }
        cr_assert_eq(fd, -ECONNREFUSED, "still accepting after free: %d", fd);
    }
    defer_fini(&t);
}
