/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP client's keep-alive race (http/client_conn.c): a reused
 * connection that the server closes after reading a request, before any
 * byte of the reply. Only idempotent methods (RFC 9110 §9.2.2), or a
 * request the caller marked idempotent, are sent again on a fresh
 * connection; a POST, a PATCH or an unknown method fails with -ECONNRESET,
 * once, and the server has seen it once. A close after part of a reply is never
 * retried, not even for a GET. The raw server of client_test.h counts how many
 * times the request under test reached it.
 */
#include "client_test.h"

/* How connection 0 treats its second request. */
enum { CUT_FIN, CUT_RST, CUT_PARTIAL };

/* Requests for /x that the raw server read (each test is its own
 * process). */
static atomic_ullong seen;

/* Connection 0 answers its first request, then reads the second one whole
 * (body included) and closes without answering: with a FIN, with a reset,
 * or after the first bytes of a status line. Later connections answer. */
static int race(int fd, const struct raw_req *rq, int how)
{
    if (is_target(rq, "/x"))
        atomic_fetch_add(&seen, 1);
    if (rq->conn == 0 && rq->nreq == 1) {
        if (how == CUT_RST) {
            struct linger l = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        } else if (how == CUT_PARTIAL) {
            raw_writes(fd, "HTTP/1.1 2");
        }
        return RAW_CLOSE;
    }
    if (is_method(rq, "HEAD"))
        raw_writes(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    else
        raw_writes(fd, HELLO);
    return RAW_KEEP;
}

static int h_cut_fin(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    return race(fd, rq, CUT_FIN);
}

static int h_cut_rst(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    return race(fd, rq, CUT_RST);
}

static int h_cut_partial(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    return race(fd, rq, CUT_PARTIAL);
}

/* A GET of "/", then `method` /x (with a body; marked idempotent if
 * `idem`) on the same kept-alive connection, which the server cuts; x gets
 * the second request's result. Returns once the client is freed and the
 * server stopped. */
static void race_run(struct raw *s, raw_fn fn, const char *method, bool idem,
                     struct res *x)
{
    struct fx f;
    struct res first = {0};
    char url[128];

    atomic_store(&seen, 0);
    fx_raw_start(&f, s, fn, 2, NULL);
    url_of(url, sizeof(url), s, "/");
    get_wait(&f, url, &first);
    url_of(url, sizeof(url), s, "/x");
    bool body = strcmp(method, "GET") && strcmp(method, "HEAD");
    es_http_client_req_t r = {
        .url = url,
        .method = method,
        .body = body ? "data" : NULL,
        .body_len = body ? 4 : 0,
        .idempotent = idem,
    };
    ES_OK(es_http_client_request(f.c, &r, on_reply, on_fail, x));
    wait_all(x, 1);
    fx_raw_stop(&f, s);
    assert_replies(&first, 1, 200);
    res_free(&first, 1);
}

/* The server performed the request once; the caller got -ECONNRESET once
 * and no new connection was opened for it. */
static void assert_not_resent(struct raw *s, const char *method, raw_fn fn)
{
    struct res x = {0};

    race_run(s, fn, method, false, &x);
    cr_assert_eq(atomic_load(&seen), 1, "%s sent %llu times", method,
                 (unsigned long long)atomic_load(&seen));
    assert_failed(&x, -ECONNRESET);
    cr_assert_eq(atomic_load(&s->accepted), 1, "%s: %llu connections", method,
                 (unsigned long long)atomic_load(&s->accepted));
    res_free(&x, 1);
}

/* The request went out again on a second connection and got its reply. */
static void assert_resent(struct raw *s, const char *method, bool idem,
                          raw_fn fn)
{
    struct res x = {0};

    race_run(s, fn, method, idem, &x);
    assert_replies(&x, 1, 200);
    cr_assert_eq(atomic_load(&seen), 2, "%s sent %llu times", method,
                 (unsigned long long)atomic_load(&seen));
    cr_assert_eq(atomic_load(&s->accepted), 2, "%s: %llu connections", method,
                 (unsigned long long)atomic_load(&s->accepted));
    res_free(&x, 1);
}

Test(http_client, post_not_resent_after_keepalive_race,
     .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;

    assert_not_resent(&s, "POST", h_cut_fin);
    assert_not_resent(&s, "POST", h_cut_rst);
    assert_not_resent(&s, "PATCH", h_cut_fin);
    assert_not_resent(&s, "LOCK", h_cut_fin); /* unknown: not idempotent */
}

Test(http_client, idempotent_resent_after_keepalive_race,
     .timeout = ES_TEST_TIMEOUT)
{
    static const char *const methods[] = {"GET",    "HEAD",  "PUT",
                                          "DELETE", "TRACE", "OPTIONS"};
    struct raw s;

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        assert_resent(&s, methods[i], false, h_cut_fin);
    assert_resent(&s, "GET", false, h_cut_rst);
}

/* The caller vouches for a POST (say, it carries an idempotency key). */
Test(http_client, post_marked_idempotent_resent, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;

    assert_resent(&s, "POST", true, h_cut_fin);
    assert_resent(&s, "PATCH", true, h_cut_rst);
}

Test(http_client, partial_reply_not_resent, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;

    /* A byte of a reply arrived: the server acted on the request. */
    assert_not_resent(&s, "GET", h_cut_partial);
}

Test(http_client, partial_reply_not_resent_even_if_marked,
     .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct res x = {0};

    race_run(&s, h_cut_partial, "POST", true, &x);
    cr_assert_eq(atomic_load(&seen), 1);
    assert_failed(&x, -ECONNRESET);
    cr_assert_eq(atomic_load(&s.accepted), 1);
    res_free(&x, 1);
}
