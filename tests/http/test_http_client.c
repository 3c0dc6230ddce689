/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP client's requests and replies (http/client_url.c,
 * http/client_conn.c) against the raw server of client_test.h: what goes on
 * the wire (request line, Host, User-Agent, Content-Length, the caller's
 * fields), replies framed by Content-Length, chunked (with trailers, byte by
 * byte) or the close; 1xx interim replies; HEAD, 204 and 304 without a
 * body; 1 MiB bodies both ways; and each failure with its code: malformed
 * (-EPROTO, status codes that are not three digits from 100 to 999 among
 * them), truncated (-ECONNRESET), silent (-ETIMEDOUT), oversized
 * (-EMSGSIZE), refused, connect timeout, unresolvable, and requests
 * refused up front (-EINVAL, no callback).
 */
#include "client_test.h"

/* --- Basic replies -------------------------------------------------------- */

Test(http_client, get_basic, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x = {0};
    char url[128], head[4096], host[64];

    fx_raw_start(&f, &s, h_hello, 2, NULL);
    url_of(url, sizeof(url), &s, "/path/a?x=1&y=2#frag");
    get_wait(&f, url, &x);
    fx_fini(&f);
    raw_last(&s, head, sizeof(head));
    raw_stop(&s);

    assert_replies(&x, 1, 200);
    cr_assert_eq(atomic_load(&x.version), 11);
    cr_assert_eq(x.body_len, 5);
    cr_assert_str_eq(x.body, "hello");
    cr_assert(has_field(&x, "X-Test: yes\n"), "%s", x.fields);
    cr_assert(has_field(&x, "Content-Length: 5\n"));
    cr_assert(strncmp(head, "GET /path/a?x=1&y=2 HTTP/1.1\r\n", 30) == 0, "%s",
              head);
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", s.port);
    cr_assert(strstr(head, host), "%s", head);
    cr_assert(strstr(head, "\r\nUser-Agent: EventServer"), "%s", head);
    cr_assert_null(strcasestr(head, "content-length"), "%s", head);
    res_free(&x, 1);
}

Test(http_client, request_fields_and_bodies, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[3] = {0};
    char url[128], head[3][4096];
    const char *const fields[] = {"X-One",  "1",   "User-Agent", "tester/2",
                                  "Accept", "*/*", NULL};

    fx_raw_start(&f, &s, h_echo, 1, NULL);
    url_of(url, sizeof(url), &s, "");
    ES_OK(req_full(&f, url, "POST", fields, NULL, 0, 0, &x[0]));
    wait_all(&x[0], 1);
    raw_last(&s, head[0], sizeof(head[0]));
    ES_OK(req_full(&f, url, "PUT", NULL, "abc", 3, 0, &x[1]));
    wait_all(&x[1], 1);
    raw_last(&s, head[1], sizeof(head[1]));
    ES_OK(req_full(&f, url, NULL, NULL, "xyz!", 4, 0, &x[2]));
    wait_all(&x[2], 1);
    raw_last(&s, head[2], sizeof(head[2]));
    fx_raw_stop(&f, &s);

    assert_replies(x, 3, 200);
    cr_assert(strncmp(head[0], "POST / HTTP/1.1\r\n", 17) == 0, "%s", head[0]);
    cr_assert(strstr(head[0], "\r\nContent-Length: 0\r\n"), "%s", head[0]);
    cr_assert(strstr(head[0], "\r\nX-One: 1\r\n"), "%s", head[0]);
    cr_assert(strstr(head[0], "\r\nUser-Agent: tester/2\r\n"), "%s", head[0]);
    cr_assert_null(strstr(head[0], "EventServer"), "%s", head[0]);
    cr_assert(strncmp(head[1], "PUT / HTTP/1.1\r\n", 16) == 0, "%s", head[1]);
    cr_assert(strstr(head[1], "\r\nContent-Length: 3\r\n"), "%s", head[1]);
    cr_assert_str_eq(x[1].body, "abc");
    cr_assert(strncmp(head[2], "POST / HTTP/1.1\r\n", 17) == 0, "%s", head[2]);
    cr_assert_str_eq(x[2].body, "xyz!");
    cr_assert_eq(atomic_load(&s.accepted), 1);
    res_free(x, 3);
}

Test(http_client, chunked_with_trailers, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[2] = {0};
    char url[2][128];

    fx_raw_start(&f, &s, h_chunked, 2, NULL);
    url_of(url[0], sizeof(url[0]), &s, "/");
    url_of(url[1], sizeof(url[1]), &s, "/bytewise");
    get_wait(&f, url[0], &x[0]);
    get_wait(&f, url[1], &x[1]);
    fx_raw_stop(&f, &s);

    assert_replies(x, 2, 200);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(x[i].body_len, 12);
        cr_assert_str_eq(x[i].body, "hello, world");
        cr_assert(has_field(&x[i], "Transfer-Encoding: chunked\n"));
        cr_assert(has_field(&x[i], "X-Sum: 12\n"), "%s", x[i].fields);
    }
    cr_assert_eq(atomic_load(&s.accepted), 1, "kept alive after chunked");
    res_free(x, 2);
}

Test(http_client, close_delimited, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[2] = {0};
    char url[2][128];

    fx_raw_start(&f, &s, h_close_delim, 2, NULL);
    url_of(url[0], sizeof(url[0]), &s, "/");
    url_of(url[1], sizeof(url[1]), &s, "/10");
    get(&f, url[0], &x[0]);
    get(&f, url[1], &x[1]);
    wait_all(x, 2);
    fx_raw_stop(&f, &s);

    assert_replies(x, 2, 200);
    cr_assert_str_eq(x[0].body, "until the end");
    cr_assert_str_eq(x[1].body, "old stylethe end");
    cr_assert_eq(atomic_load(&x[1].version), 10);
    res_free(x, 2);
}

Test(http_client, interim_replies_skipped, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x = {0};
    char url[128];

    fx_raw_start(&f, &s, h_interim, 1, NULL);
    url_of(url, sizeof(url), &s, "/");
    get_wait(&f, url, &x);
    fx_raw_stop(&f, &s);

    assert_replies(&x, 1, 200);
    cr_assert_str_eq(x.body, "ok");
    cr_assert(!has_field(&x, "Link"), "fields of the 103 kept: %s", x.fields);
    cr_assert(has_field(&x, "X-Empty: \n"), "%s", x.fields);
    cr_assert_eq(es_http_headers_count(es_http_reply_headers(NULL)), 0);
    res_free(&x, 1);
}

Test(http_client, replies_without_body, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[4] = {0};
    char url[3][128];

    fx_raw_start(&f, &s, h_nobody, 1, NULL);
    url_of(url[0], sizeof(url[0]), &s, "/");
    url_of(url[1], sizeof(url[1]), &s, "/204");
    url_of(url[2], sizeof(url[2]), &s, "/304");
    ES_OK(req_full(&f, url[0], "HEAD", NULL, NULL, 0, 0, &x[0]));
    wait_all(&x[0], 1);
    get_wait(&f, url[1], &x[1]);
    get_wait(&f, url[2], &x[2]);
    get(&f, url[0], &x[3]); /* framing intact on the same connection */
    wait_all(&x[3], 1);
    fx_raw_stop(&f, &s);

    assert_replies(&x[0], 1, 200);
    assert_replies(&x[1], 1, 204);
    assert_replies(&x[2], 1, 304);
    assert_replies(&x[3], 1, 200);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(x[i].body_len, 0, "reply %d has a body", i);
    cr_assert(has_field(&x[0], "Content-Length: 1000\n"));
    cr_assert_str_eq(x[3].body, "hello");
    cr_assert_eq(atomic_load(&s.accepted), 1);
    res_free(x, 4);
}

/* --- Failures ------------------------------------------------------------- */

static void expect_fail(raw_fn fn, const es_http_client_opts_t *o,
                        const char *target, unsigned timeout_ms, int err)
{
    struct raw s;
    struct fx f;
    struct res x = {0};
    char url[128];

    fx_raw_start(&f, &s, fn, 2, o);
    url_of(url, sizeof(url), &s, target);
    ES_OK(req_full(&f, url, NULL, NULL, NULL, 0, timeout_ms, &x));
    wait_all(&x, 1);
    fx_raw_stop(&f, &s);
    assert_failed(&x, err);
    res_free(&x, 1);
}

Test(http_client, malformed_reply_eproto, .timeout = ES_TEST_TIMEOUT)
{
    expect_fail(h_bad, NULL, "/malformed", 0, -EPROTO);
    expect_fail(h_bad, NULL, "/badlen", 0, -EPROTO);
}

/* Status lines by target; "a|b" sends a, pauses, then b (two reads). */
static int h_status(struct raw *s, int fd, const struct raw_req *rq)
{
    static const char *const lines[][2] = {
        {"/000", "HTTP/1.1 000 OK\r\n"},
        {"/099", "HTTP/1.1 099 OK\r\n"},
        {"/none", "HTTP/1.1 \r\n"},
        {"/20", "HTTP/1.1 20 OK\r\n"},
        {"/0200", "HTTP/1.1 0200 OK\r\n"},
        {"/1000", "HTTP/1.1 1000 OK\r\n"},
        {"/sign", "HTTP/1.1 +200 OK\r\n"},
        {"/split0200", "HTTP/1.1 02|00 OK\r\n"},
        {"/100-0200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 0200 OK\r\n"},
        {"/999", "HTTP/1.1 999 Private\r\n"},
        {"/split200", "HTTP/1.1 2|00 OK\r\n"},
        {"/100-200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"},
        {"/v09", "HTTP/0.9 200 OK\r\n"},
        {"/v20", "HTTP/2.0 200 OK\r\n"},
        {"/v12", "HTTP/1.2 200 OK\r\n"},
        {"/v30", "HTTP/3.0 200 OK\r\n"},
        {"/splitv20", "HTTP/2.|0 200 OK\r\n"},
        {"/100-v20", "HTTP/1.1 100 Continue\r\n\r\nHTTP/2.0 200 OK\r\n"},
        {"/v10", "HTTP/1.0 200 OK\r\n"},
        {"/splitv11", "HTTP/1.|1 200 OK\r\n"},
    };
    const char *line = "HTTP/1.1 200 OK\r\n";

    (void)s;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        if (is_target(rq, lines[i][0]))
            line = lines[i][1];
    const char *bar = strchr(line, '|');
    if (bar) {
        raw_write(fd, line, (size_t)(bar - line));
        es_test_sleep_ms(20);
        line = bar + 1;
    }
    raw_writes(fd, line);
    raw_writes(fd, "Content-Length: 2\r\n\r\nok");
    return RAW_KEEP;
}

/* A status code is three digits, 100 to 999 (RFC 9112 §4, RFC 9110 §15). */
Test(http_client, bad_status_eproto, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const bad[] = {"/000",  "/099",       "/none",
                                      "/20",   "/0200",      "/1000",
                                      "/sign", "/split0200", "/100-0200"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_fail(h_status, NULL, bad[i], 0, -EPROTO);
}

Test(http_client, good_status_kept, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const good[] = {"/999", "/split200", "/100-200"};
    static const int want[] = {999, 200, 200};
    struct raw s;
    struct fx f;
    struct res x[3] = {0};
    char url[128];

    fx_raw_start(&f, &s, h_status, 2, NULL);
    for (size_t i = 0; i < 3; i++) {
        url_of(url, sizeof(url), &s, good[i]);
        get_wait(&f, url, &x[i]);
    }
    fx_raw_stop(&f, &s);
    for (size_t i = 0; i < 3; i++) {
        assert_replies(&x[i], 1, want[i]);
        cr_assert_str_eq(x[i].body, "ok");
    }
    res_free(x, 3);
}

/* Only HTTP/1.0 and HTTP/1.1 status lines (RFC 9112 §2.3): HTTP/0.9 and
 * 2.0 pass llhttp 8, and es_http_reply_version() promises 10 or 11. */
Test(http_client, bad_version_eproto, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const bad[] = {"/v09", "/v20",      "/v12",
                                      "/v30", "/splitv20", "/100-v20"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_fail(h_status, NULL, bad[i], 0, -EPROTO);
}

Test(http_client, good_version_kept, .timeout = ES_TEST_TIMEOUT)
{
    static const char *const good[] = {"/v10", "/splitv11"};
    static const int want[] = {10, 11};
    struct raw s;
    struct fx f;
    struct res x[2] = {0};
    char url[128];

    fx_raw_start(&f, &s, h_status, 2, NULL);
    for (size_t i = 0; i < 2; i++) {
        url_of(url, sizeof(url), &s, good[i]);
        get_wait(&f, url, &x[i]);
    }
    fx_raw_stop(&f, &s);
    for (size_t i = 0; i < 2; i++) {
        assert_replies(&x[i], 1, 200);
        cr_assert_eq(atomic_load(&x[i].version), want[i]);
        cr_assert_str_eq(x[i].body, "ok");
    }
    res_free(x, 2);
}

Test(http_client, closed_mid_reply_econnreset, .timeout = ES_TEST_TIMEOUT)
{
    expect_fail(h_bad, NULL, "/cut", 0, -ECONNRESET);
    expect_fail(h_bad, NULL, "/cutchunk", 0, -ECONNRESET);
    /* A fresh connection closed without a reply is not retried. */
    expect_fail(h_bad, NULL, "/nothing", 0, -ECONNRESET);
}

Test(http_client, response_timeout, .timeout = ES_TEST_TIMEOUT)
{
    es_http_client_opts_t o = {.response_timeout_ms = 150};
    double t0 = es_test_now();

    expect_fail(h_bad, NULL, "/hang", 100, -ETIMEDOUT); /* per request */
    expect_fail(h_bad, &o, "/hang", 0, -ETIMEDOUT);     /* client default */
    cr_assert_lt(es_test_now() - t0, 5.0);
}

Test(http_client, oversized_reply_emsgsize, .timeout = ES_TEST_TIMEOUT)
{
    es_http_client_opts_t o = {.max_reply_body = 1000,
                               .max_reply_header_bytes = 512};

    expect_fail(h_big, &o, "/bighead", 0, -EMSGSIZE);
    expect_fail(h_big, &o, "/bigbody", 0, -EMSGSIZE);
    expect_fail(h_big, &o, "/bigchunks", 0, -EMSGSIZE);
}

Test(http_client, refused, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct res x[3] = {0};
    char url[128];
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    es_http_client_opts_t o = {.max_per_host = 1};

    addr_lo(&a, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    fx_init(&f, 2, &o);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    for (int i = 0; i < 3; i++) /* the two waiting ones fail in turn */
        get(&f, url, &x[i]);
    wait_all(x, 3);
    fx_fini(&f);
    for (int i = 0; i < 3; i++)
        assert_failed(&x[i], -ECONNREFUSED);
}

/* A listener with backlog 0 and one connection already queued: Linux drops
 * further SYNs, so a connect hangs until its timeout. */
struct full {
    int lfd, queued, port;
};

static void full_open(struct full *fl)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);

    fl->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr_lo(&a, 0);
    cr_assert_eq(bind(fl->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fl->lfd, 0), 0);
    cr_assert_eq(getsockname(fl->lfd, (struct sockaddr *)&a, &al), 0);
    fl->port = ntohs(a.sin_port);
    fl->queued = client_connect((struct sockaddr *)&a, sizeof(a));
    cr_assert_geq(fl->queued, 0);
}

static void full_close(struct full *fl)
{
    close(fl->queued);
    close(fl->lfd);
}

Test(http_client, connect_timeout, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct res x[2] = {0};
    struct full fl;
    char url[128];
    es_http_client_opts_t o = {.connect_timeout_ms = 200};

    full_open(&fl);
    fx_init(&f, 2, &o);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", fl.port);
    get_wait(&f, url, &x[0]);
    get(&f, url, &x[1]); /* still connecting when the client is freed */
    es_test_sleep_ms(20);
    fx_fini(&f);
    full_close(&fl);
    assert_failed(&x[0], -ETIMEDOUT);
    assert_failed(&x[1], -ECANCELED);
}

Test(http_client, unresolvable_host, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct res x = {0};

    fx_init(&f, 2, NULL);
    get_wait(&f, "http://no-such-host.invalid:8080/", &x);
    fx_fini(&f);
    assert_failed(&x, -EHOSTDOWN);
}

Test(http_client, bad_requests_einval, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct res x = {0};
    const char *const bad_urls[] = {"https://127.0.0.1/", "ftp://h/",
                                    "127.0.0.1:80/",      "http://",
                                    "http:///x",          "http://h:0/",
                                    "http://h:65536/",    "http://h:8x/",
                                    "http://[::1/",       "http://[zz::1]/",
                                    "http://u@h/",        "http://h/a b",
                                    "http://h/\r\nX: y",  "http://h^/"};
    const char *const crlf_value[] = {"X-A", "1\r\nX-Injected: 1", NULL};
    const char *const lf_value[] = {"X-A", "a\nb", NULL};
    const char *const bad_name[] = {"X A", "1", NULL};
    const char *const colon_name[] = {"X:A", "1", NULL};
    const char *const own_cl[] = {"Content-Length", "5", NULL};
    const char *const own_te[] = {"Transfer-Encoding", "chunked", NULL};
    const char *const no_value[] = {"X-A", NULL};
    const char *const *bad_fields[] = {
        crlf_value, lf_value, bad_name, colon_name, own_cl, own_te, no_value};
    es_http_client_req_t r = {.url = "http://127.0.0.1:1/"};

    fx_init(&f, 1, NULL);
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++)
        cr_assert_eq(req_full(&f, bad_urls[i], NULL, NULL, NULL, 0, 0, &x),
                     -EINVAL, "%s", bad_urls[i]);
    for (size_t i = 0; i < sizeof(bad_fields) / sizeof(bad_fields[0]); i++)
        cr_assert_eq(req_full(&f, "http://127.0.0.1:1/", NULL, bad_fields[i],
                              NULL, 0, 0, &x),
                     -EINVAL, "fields %zu", i);
    cr_assert_eq(
        req_full(&f, "http://127.0.0.1:1/", "GE T", NULL, NULL, 0, 0, &x),
        -EINVAL);
    cr_assert_eq(
        req_full(&f, "http://127.0.0.1:1/", "GET", NULL, NULL, 3, 0, &x),
        -EINVAL, "body_len without body");
    cr_assert_eq(es_http_client_request(f.c, &r, NULL, on_fail, &x), -EINVAL);
    cr_assert_eq(es_http_client_request(f.c, &r, on_reply, NULL, &x), -EINVAL);
    cr_assert_eq(es_http_client_request(f.c, NULL, on_reply, on_fail, &x),
                 -EINVAL);
    {
        es_http_client_t *none = NULL;

        cr_assert_eq(es_http_client_new(NULL, NULL, &none), -EINVAL);
        cr_assert_null(none);
    }
    es_test_sleep_ms(50);
    fx_fini(&f);
    cr_assert_eq(atomic_load(&x.calls), 0, "a refused request got a callback");
}

/* --- Large bodies --------------------------------------------------------- */

Test(http_client, large_bodies, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[2] = {0};
    char url[2][128];
    char *body = malloc(MIB);

    for (size_t i = 0; i < MIB; i++)
        body[i] = (char)pat(i * 7);
    fx_raw_start(&f, &s, h_echo, 2, NULL);
    url_of(url[0], sizeof(url[0]), &s, "/echo");
    url_of(url[1], sizeof(url[1]), &s, "/big");
    ES_OK(req_full(&f, url[0], "POST", NULL, body, MIB, 0, &x[0]));
    get(&f, url[1], &x[1]);
    wait_all(x, 2);
    fx_raw_stop(&f, &s);
    assert_replies(x, 2, 200);
    cr_assert_eq(x[0].body_len, MIB);
    cr_assert_eq(memcmp(x[0].body, body, MIB), 0, "echo differs");
    cr_assert_eq(x[1].body_len, MIB);
    for (size_t i = 0; i < MIB; i++)
        cr_assert_eq((uint8_t)x[1].body[i], pat(i), "byte %zu", i);
    free(body);
    res_free(x, 2);
}

/* A peer that accepts (in the kernel) but never reads: the request body
 * stays queued when the response timer fails the request, which must drop
 * the connection's queue together with the request. */
Test(http_client, timeout_while_sending, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct res x = {0};
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    size_t n = 16 * MIB;
    char *body = calloc(1, n);
    char url[128];

    addr_lo(&a, 0);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(lfd, 16), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    fx_init(&f, 2, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/up", ntohs(a.sin_port));
    ES_OK(req_full(&f, url, "PUT", NULL, body, n, 200, &x));
    free(body); /* copied by the request */
    wait_all(&x, 1);
    fx_fini(&f);
    close(lfd);
    assert_failed(&x, -ETIMEDOUT);
}
