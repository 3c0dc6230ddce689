/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP server's API and the objects handlers see (http.h):
 * route matching (exact, prefix, longest prefix, exact before prefix,
 * per-method, HEAD through a GET route, 404, 405 with Allow), the set-up
 * calls' errors, the error hook, the request accessors and header lookup,
 * es_http_query_get(), response status / fields / bodies (copied and by
 * reference, with free_cb exactly once), the fields the server refuses
 * (its own, and CR/LF injection), and the Date and Server fields. Driven
 * by raw sockets on 127.0.0.1 (http_test.h); handlers answer with what
 * they saw, so the test thread asserts on the response.
 */
#include "http_test.h"

#include <stdio.h>
#include <time.h>

/* --- Handlers of this file ------------------------------------------------ */

/* Answers "<arg>:<path>", to tell routes apart. */
static void h_tag(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    char b[512];
    int n = snprintf(b, sizeof(b), "%s:%s", (const char *)arg,
                     es_http_request_path(req));

    es_http_response_body(res, b, (size_t)n);
}

/* Answers with everything the request accessors return, one per line. */
static void h_inspect(es_http_request_t *req, es_http_response_t *res,
                      void *arg)
{
    const es_http_headers_t *h = es_http_request_headers(req);
    const char *host = es_http_request_header(req, "hOsT");
    const char *name, *value;
    size_t blen = 0, n = es_http_headers_count(h);
    const char *body = es_http_request_body(req, &blen);
    struct body_buf bb;
    FILE *f = body_open(&bb);

    (void)arg;
    if (!f)
        return;
    fprintf(f, "method=%s\ntarget=%s\npath=%s\nquery=%s\nversion=%d\n",
            es_http_request_method(req), es_http_request_target(req),
            es_http_request_path(req), es_http_request_query(req),
            es_http_request_version(req));
    fprintf(f, "host=%s\nmissing=%s\nrt=%d\nn=%zu\n", host ? host : "(null)",
            es_http_request_header(req, "X-Not-There") ? "set" : "null",
            es_http_request_runtime(req) != NULL, n);
    for (size_t i = 0; i < n; i++) {
        if (es_http_headers_at(h, i, &name, &value) == 0)
            fprintf(f, "h%zu=%s: %s\n", i, name, value);
    }
    fprintf(f, "at_n=%d\n", es_http_headers_at(h, n, &name, &value));
    fprintf(f, "body_nul=%d\nbody=", body ? body[blen] == '\0' : -1);
    if (body)
        fwrite(body, 1, blen, f);
    body_send(&bb, res);
}

/* The line "key=..." of an h_inspect body, copied into out. */
static const char *line_of(const struct hr *r, const char *key, char *out,
                           size_t len)
{
    size_t kl = strlen(key);
    const char *p = r->body;

    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t ll = e ? (size_t)(e - p) : strlen(p);

        if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(out, len, "%.*s", (int)(ll - kl - 1), p + kl + 1);
            return out;
        }
        p = e ? e + 1 : NULL;
    }
    snprintf(out, len, "(absent)");
    return out;
}

#define LINE_IS(r, key, want)                                                  \
    do {                                                                       \
        char lb_[512];                                                         \
        cr_assert_str_eq(line_of((r), (key), lb_, sizeof(lb_)), (want), "%s",  \
                         key);                                                 \
    } while (0)

/* --- Routing -------------------------------------------------------------- */

static void routes_fixture(struct hts *t)
{
    hts_init(t, 2, NULL);
    hts_route(t, "GET", "/plain", h_tag, "plain");
    hts_route(t, NULL, "/static/*", h_tag, "static");
    hts_route(t, NULL, "/static/deep/*", h_tag, "deep");
    hts_route(t, NULL, "/static/exact", h_tag, "exact");
    hts_route(t, "GET", "/m", h_tag, "get");
    hts_route(t, "POST", "/m", h_tag, "post");
    hts_route(t, "DELETE", "/only-delete", h_tag, "del");
    hts_start(t);
}

static void expect_route(int port, const char *method, const char *target,
                         int status, const char *body)
{
    char raw[512];
    struct hr r;
    int rc;

    snprintf(raw, sizeof(raw),
             "%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", method,
             target);
    rc = http_once(port, raw, &r, strcmp(method, "HEAD") == 0 ? HR_HEAD : 0);
    cr_assert_eq(rc, 0, "%s %s: %d", method, target, rc);
    cr_assert_eq(r.status, status, "%s %s: status %d, want %d", method, target,
                 r.status, status);
    if (body)
        HR_BODY_IS(&r, body);
    hr_release(&r);
}

Test(http_server, routes_exact_prefix_longest, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;

    routes_fixture(&t);
    expect_route(t.port, "GET", "/plain", 200, "plain:/plain");
    expect_route(t.port, "GET", "/plain?x=1", 200, "plain:/plain");
    expect_route(t.port, "GET", "/plainer", 404, NULL);
    expect_route(t.port, "GET", "/plain/", 404, NULL);
    expect_route(t.port, "GET", "/static/", 200, "static:/static/");
    expect_route(t.port, "GET", "/static", 404, NULL);
    expect_route(t.port, "GET", "/static/a/b.css", 200,
                 "static:/static/a/b.css");
    expect_route(t.port, "POST", "/static/x", 200, "static:/static/x");
    expect_route(t.port, "GET", "/static/deep/x", 200, "deep:/static/deep/x");
    expect_route(t.port, "GET", "/static/deep/", 200, "deep:/static/deep/");
    expect_route(t.port, "GET", "/static/deeper", 200, "static:/static/deeper");
    expect_route(t.port, "GET", "/static/exact", 200, "exact:/static/exact");
    expect_route(t.port, "GET", "/static/exactly", 200,
                 "static:/static/exactly");
    expect_route(t.port, "GET", "/", 404, NULL);
    expect_route(t.port, "GET", "/nope", 404, NULL);
    hts_fini(&t);
}

Test(http_server, routes_per_method_and_405, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    const char *allow;

    routes_fixture(&t);
    expect_route(t.port, "GET", "/m", 200, "get:/m");
    expect_route(t.port, "POST", "/m", 200, "post:/m");
    HTTP_ONCE(t.port, "PUT /m HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
              &r, 0);
    cr_assert_eq(r.status, 405);
    allow = hr_header(&r, "Allow");
    cr_assert_not_null(allow, "405 without Allow");
    cr_assert(hr_has_token(&r, "Allow", "GET"), "Allow: %s", allow);
    cr_assert(hr_has_token(&r, "Allow", "POST"), "Allow: %s", allow);
    cr_assert(!hr_has_token(&r, "Allow", "PUT"), "Allow: %s", allow);
    hr_release(&r);

    HTTP_ONCE(t.port, "GET /only-delete HTTP/1.1\r\nHost: t\r\n\r\n", &r, 0);
    cr_assert_eq(r.status, 405);
    cr_assert(hr_has_token(&r, "Allow", "DELETE"), "Allow: %s",
              hr_header(&r, "Allow") ? hr_header(&r, "Allow") : "(none)");
    hr_release(&r);
    /* A 405 does not close the connection; the server keeps serving. */
    http_expect(t.port, "/plain", 200);
    hts_fini(&t);
}

Test(http_server, head_through_get_route, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;
    struct hr r;

    routes_fixture(&t);
    hc_open(&c, t.port);
    /* HEAD, then GET on the same connection: the HEAD response must carry
     * the GET's Content-Length and no body, or the GET's would be misread. */
    HC_SEND(&c, "HEAD /plain HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&c, &r, HR_HEAD);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(hr_header(&r, "Content-Length") ?: "(none)", "12");
    cr_assert_eq(r.body_len, 0);
    hr_release(&r);
    HC_EXPECT(&c, 200, "plain:/plain");
    hc_close(&c);
    /* HEAD of a POST-only route is not allowed. */
    expect_route(t.port, "HEAD", "/only-delete", 405, NULL);
    hts_fini(&t);
}

/* A prefix route for one method and an exact one for another: each method
 * finds its own; a third gets 405 listing both. */
Test(http_server, routes_method_across_specificity, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;

    hts_init(&t, 1, NULL);
    hts_route(&t, "POST", "/api/items", h_tag, "post-exact");
    hts_route(&t, "GET", "/api/*", h_tag, "get-prefix");
    hts_start(&t);
    expect_route(t.port, "POST", "/api/items", 200, "post-exact:/api/items");
    expect_route(t.port, "GET", "/api/items", 200, "get-prefix:/api/items");
    expect_route(t.port, "GET", "/api", 404, NULL);
    HTTP_ONCE(t.port, "DELETE /api/items HTTP/1.1\r\nHost: t\r\n\r\n", &r, 0);
    cr_assert_eq(r.status, 405);
    cr_assert(hr_has_token(&r, "Allow", "POST") &&
                  hr_has_token(&r, "Allow", "GET"),
              "Allow: %s", hr_header(&r, "Allow") ?: "(none)");
    hr_release(&r);
    hts_fini(&t);
}

/* --- Set-up calls and their errors ---------------------------------------- */

Test(http_server, setup_errors, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    es_http_server_t *s2 = NULL;
    es_http_server_stats_t st;
    atomic_ullong n = 0;

    hts_init(&t, 1, NULL);
    cr_assert_eq(es_http_server_new(t.rt, NULL, NULL), -EINVAL);
    cr_assert_eq(es_http_server_new(NULL, NULL, &s2), -EINVAL);
    cr_assert_eq(es_http_server_route(t.srv, "GET", "nope", h_count, &n),
                 -EINVAL);
    cr_assert_eq(es_http_server_route(t.srv, "GET", "/a", NULL, &n), -EINVAL);
    cr_assert_eq(es_http_server_add(t.srv, "", h_count, &n), -EINVAL);
    ES_OK(es_http_server_route(t.srv, "GET", "/a", h_count, &n));
    cr_assert_eq(es_http_server_route(t.srv, "GET", "/a", h_count, &n),
                 -EEXIST);
    ES_OK(es_http_server_route(t.srv, "POST", "/a", h_count, &n));
    ES_OK(es_http_server_add(t.srv, "/any", h_count, &n));
    cr_assert_eq(es_http_server_add(t.srv, "/any", h_count, &n), -EEXIST);
    ES_OK(es_http_server_add(t.srv, "/p/*", h_count, &n));
    cr_assert_eq(es_http_server_listen(t.srv, "not an address"), -EINVAL);
    cr_assert_eq(es_http_server_start(t.srv), -EINVAL); /* nothing to bind */
    hts_start(&t);
    cr_assert_eq(es_http_server_start(t.srv), -EALREADY);
    cr_assert_eq(es_http_server_route(t.srv, "GET", "/b", h_count, &n), -EBUSY);
    cr_assert_eq(es_http_server_add(t.srv, "/c", h_count, &n), -EBUSY);
    cr_assert_eq(es_http_server_on_error(t.srv, NULL, NULL), -EBUSY);
    cr_assert_eq(es_http_server_listen(t.srv, "127.0.0.1:0"), -EBUSY);
    cr_assert_eq(es_http_server_port(t.srv, 1), -ENOENT);
    cr_assert_eq(es_http_server_stats(t.srv, NULL), -EINVAL);
    cr_assert_eq(es_http_server_stats(NULL, &st), -EINVAL);
    expect_route(t.port, "GET", "/a", 200, "ok");
    expect_route(t.port, "PATCH", "/any", 200, "ok");
    expect_route(t.port, "GET", "/p/q", 200, "ok");
    expect_route(t.port, "GET", "/b", 404, NULL);
    cr_assert_eq(atomic_load(&n), 3);
    hts_fini(&t);
}

Test(http_server, start_fails_on_port_in_use, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    es_http_server_t *s2 = NULL;
    char addr[64];
    int rc;

    hts_serve1(&t, "GET", "/", h_text, "x");
    ES_OK(es_http_server_new(t.rt, NULL, &s2));
    ES_OK(es_http_server_add(s2, "/", h_text, "y"));
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", t.port);
    ES_OK(es_http_server_listen(s2, addr));
    rc = es_http_server_start(s2);
    cr_assert_eq(rc, -EADDRINUSE, "start on a used port: %d", rc);
    es_http_server_free(s2);
    expect_route(t.port, "GET", "/", 200, "x");
    hts_fini(&t);
}

/*
 * es_http_server_free() closes its own idle keep-alive connections, not
 * those of another server of the same runtime (they share the connection
 * behaviour the shutdown is broadcast to).
 */
Test(http_server, free_spares_other_servers_connections,
     .timeout = ES_TEST_TIMEOUT)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    struct hts t;
    struct hc c;
    struct hr r;
    es_http_server_t *s2 = NULL;

    hts_serve1(&t, "GET", "/", h_text, "x");
    hc_open(&c, t.port);
    HC_SEND(&c, req);
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 200);
    hr_release(&r);
    ES_OK(es_http_server_new(t.rt, NULL, &s2));
    es_http_server_free(s2);
    cr_assert(hc_quiet_for(&c, 200), "s1's idle connection was closed");
    HC_SEND(&c, req);
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, 200);
    hr_release(&r);
    hc_close(&c);
    hts_fini(&t);
}

Test(http_server, status_text, .timeout = ES_TEST_TIMEOUT)
{
    cr_assert_str_eq(es_http_status_text(200), "OK");
    cr_assert_str_eq(es_http_status_text(404), "Not Found");
    /* RFC 9110 renamed 413 from "Payload Too Large". */
    cr_assert(strcmp(es_http_status_text(413), "Content Too Large") == 0 ||
                  strcmp(es_http_status_text(413), "Payload Too Large") == 0,
              "413: %s", es_http_status_text(413));
    cr_assert_str_eq(es_http_status_text(505), "HTTP Version Not Supported");
    cr_assert_str_eq(es_http_status_text(799), "Unknown");
    cr_assert_str_eq(es_http_status_text(-1), "Unknown");
}

/* --- Error hook ----------------------------------------------------------- */

struct hook_rec {
    atomic_ullong calls, null_req, on_loop;
    atomic_int last_status;
    es_runtime_t *rt;
};

static void error_hook(int status, const es_http_request_t *req,
                       es_http_response_t *res, void *arg)
{
    struct hook_rec *h = arg;
    char b[256];
    int n;

    atomic_fetch_add(&h->calls, 1);
    atomic_store(&h->last_status, status);
    if (es_runtime_current_loop(h->rt) >= 0)
        atomic_fetch_add(&h->on_loop, 1);
    if (!req) {
        atomic_fetch_add(&h->null_req, 1);
        n = snprintf(b, sizeof(b), "custom %d", status);
    } else {
        n = snprintf(b, sizeof(b), "custom %d for %s", status,
                     es_http_request_path(req));
    }
    es_http_response_header(res, "X-Hook", "1");
    es_http_response_body(res, b, (size_t)n);
}

Test(http_server, error_hook_replaces_body, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hook_rec h;
    struct hr r;

    memset(&h, 0, sizeof(h));
    hts_init(&t, 2, NULL);
    h.rt = t.rt;
    hts_route(&t, "GET", "/ok", h_text, "fine");
    ES_OK(es_http_server_on_error(t.srv, error_hook, &h));
    hts_start(&t);

    http_get(t.port, "/missing", &r);
    cr_assert_eq(r.status, 404);
    HR_BODY_IS(&r, "custom 404 for /missing");
    cr_assert_str_eq(hr_header(&r, "X-Hook") ?: "", "1");
    cr_assert_str_eq(hr_header(&r, "Content-Length") ?: "", "23");
    hr_release(&r);

    HTTP_ONCE(t.port, "DELETE /ok HTTP/1.1\r\nHost: t\r\n\r\n", &r, 0);
    cr_assert_eq(r.status, 405);
    HR_BODY_IS(&r, "custom 405 for /ok");
    cr_assert_not_null(hr_header(&r, "Allow"), "the hook dropped Allow");
    hr_release(&r);

    HTTP_ONCE(t.port, "\x01\x02garbage\r\n\r\n", &r, 0);
    cr_assert_eq(r.status, 400);
    HR_BODY_IS(&r, "custom 400");
    hr_release(&r);

    http_expect(t.port, "/ok", 200);
    cr_assert_eq(atomic_load(&h.calls), 3);
    cr_assert_eq(atomic_load(&h.null_req), 1);
    cr_assert_eq(atomic_load(&h.on_loop), 3, "hook ran off the demux threads");
    hts_fini(&t);
}

Test(http_server, default_error_bodies, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;

    hts_serve1(&t, "GET", "/ok", h_text, "fine");
    http_get(t.port, "/missing", &r);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(r.reason, "Not Found");
    cr_assert_gt(r.body_len, 0, "the default error has a short text body");
    hr_release(&r);
    hts_fini(&t);
}

/* --- Requests ------------------------------------------------------------- */

Test(http_server, request_accessors, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    char erange[16];

    hts_init(&t, 2, NULL);
    hts_route(&t, NULL, "/in/*", h_inspect, NULL);
    hts_start(&t);
    HTTP_ONCE(t.port,
              "POST /in/a%20b/c?x=1&y=%41 HTTP/1.1\r\n"
              "Host: example.test\r\n"
              "X-First: one\r\n"
              "x-dup: 1\r\n"
              "X-DUP: 2\r\n"
              "X-Spaces:   padded value \t \r\n"
              "Content-Length: 5\r\n"
              "\r\nhello",
              &r, 0);
    cr_assert_eq(r.status, 200);
    LINE_IS(&r, "method", "POST");
    LINE_IS(&r, "target", "/in/a%20b/c?x=1&y=%41");
    LINE_IS(&r, "path", "/in/a%20b/c");
    LINE_IS(&r, "query", "x=1&y=%41");
    LINE_IS(&r, "version", "11");
    LINE_IS(&r, "host", "example.test");
    LINE_IS(&r, "missing", "null");
    LINE_IS(&r, "rt", "1");
    LINE_IS(&r, "n", "6");
    LINE_IS(&r, "h0", "Host: example.test");
    LINE_IS(&r, "h1", "X-First: one");
    LINE_IS(&r, "h2", "x-dup: 1");
    LINE_IS(&r, "h3", "X-DUP: 2");
    LINE_IS(&r, "h4", "X-Spaces: padded value");
    LINE_IS(&r, "h5", "Content-Length: 5");
    snprintf(erange, sizeof(erange), "%d", -ERANGE);
    LINE_IS(&r, "at_n", erange);
    LINE_IS(&r, "body_nul", "1");
    LINE_IS(&r, "body", "hello");
    hr_release(&r);

    /* No query, HTTP/1.0, no body. */
    HTTP_ONCE(t.port, "GET /in/ HTTP/1.0\r\n\r\n", &r, 0);
    LINE_IS(&r, "method", "GET");
    LINE_IS(&r, "path", "/in/");
    LINE_IS(&r, "query", "");
    LINE_IS(&r, "version", "10");
    LINE_IS(&r, "n", "0");
    LINE_IS(&r, "body", "");
    hr_release(&r);
    hts_fini(&t);
}

Test(http_server, query_get, .timeout = ES_TEST_TIMEOUT)
{
    char out[16];

    cr_assert_eq(es_http_query_get("a=1&b=two", "b", out, sizeof(out)), 3);
    cr_assert_str_eq(out, "two");
    cr_assert_eq(es_http_query_get("a=1&b=two", "a", out, sizeof(out)), 1);
    cr_assert_str_eq(out, "1");
    cr_assert_eq(es_http_query_get("x=%41%42+c%2b", "x", out, sizeof(out)), 5);
    cr_assert_str_eq(out, "AB c+");
    cr_assert_eq(es_http_query_get("ab=1&a=2", "a", out, sizeof(out)), 1);
    cr_assert_str_eq(out, "2");
    cr_assert_eq(es_http_query_get("a=1&a=2", "a", out, sizeof(out)), 1);
    cr_assert_str_eq(out, "1");
    cr_assert_eq(es_http_query_get("a=&b=1", "a", out, sizeof(out)), 0);
    cr_assert_str_eq(out, "");
    cr_assert_eq(es_http_query_get("a=1&b=2", "c", out, sizeof(out)), -ENOENT);
    cr_assert_eq(es_http_query_get("", "c", out, sizeof(out)), -ENOENT);
    cr_assert_eq(es_http_query_get("ba=1", "a", out, sizeof(out)), -ENOENT);
    /* Exactly fitting, then one byte too long. */
    cr_assert_eq(es_http_query_get("k=abc", "k", out, 4), 3);
    cr_assert_str_eq(out, "abc");
    memset(out, 'z', sizeof(out));
    cr_assert_eq(es_http_query_get("k=hello", "k", out, 4), -EOVERFLOW);
    cr_assert_str_eq(out, "hel");
    /* Decoding happens before the size check: "%41%42" is 2 bytes. */
    cr_assert_eq(es_http_query_get("k=%41%42", "k", out, 3), 2);
    cr_assert_str_eq(out, "AB");
    cr_assert_eq(es_http_query_get(NULL, "k", out, sizeof(out)), -EINVAL);
    cr_assert_eq(es_http_query_get("k=1", NULL, out, sizeof(out)), -EINVAL);
    cr_assert_eq(es_http_query_get("k=1", "k", NULL, 4), -EINVAL);
    cr_assert_lt(es_http_query_get("k=1", "k", out, 0), 0);
    /* Malformed escapes: no crash, and a terminated result if accepted. */
    memset(out, 'z', sizeof(out));
    if (es_http_query_get("k=%zz%4", "k", out, sizeof(out)) >= 0)
        cr_assert_lt(strlen(out), sizeof(out));
}

/* --- Responses ------------------------------------------------------------ */

static atomic_ullong g_ref_freed;

static void ref_free(void *p)
{
    atomic_fetch_add(&g_ref_freed, 1);
    free(p);
}

/* Tries the calls the server must refuse; reports each result in a field. */
static void h_refused(es_http_request_t *req, es_http_response_t *res,
                      void *arg)
{
    static const char *const own[] = {
        "Content-Length",    "content-length", "Date",      "Server",
        "Transfer-Encoding", "Connection",     "CONNECTION"};
    char b[256];
    int n = 0;

    (void)req;
    (void)arg;
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        n += snprintf(b + n, sizeof(b) - (size_t)n, "%d,",
                      es_http_response_header(res, own[i], "1"));
    n += snprintf(b + n, sizeof(b) - (size_t)n, "%d,%d,%d,%d,%d,%d,%d,%d,%d",
                  es_http_response_header(res, "X-A", "v\r\nX-Injected: 1"),
                  es_http_response_header(res, "X-B", "v\nX-Injected: 1"),
                  es_http_response_header(res, "X-C", "v\rX-Injected: 1"),
                  es_http_response_header(res, "X-D\r\nX-Injected", "1"),
                  es_http_response_header(res, "X E", "1"),
                  es_http_response_header(res, "X:F", "1"),
                  es_http_response_header(res, "", "1"),
                  es_http_response_status(res, 99),
                  es_http_response_status(res, 1000));
    n += snprintf(b + n, sizeof(b) - (size_t)n, ",%d,%d,%d",
                  es_http_response_status(res, 101),
                  es_http_response_write(res, "x", 1),
                  es_http_response_header(res, "X-Ok", "fine; q=\"a b\""));
    es_http_response_status(res, 203);
    es_http_response_body(res, b, (size_t)n);
}

Test(http_server, refused_fields_and_statuses, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    char want[128];

    hts_serve1(&t, "GET", "/refused", h_refused, NULL);
    http_get(t.port, "/refused", &r);
    cr_assert_eq(r.status, 203);
    /* 18 refusals (7 server fields, 3 values with CR/LF, 4 bad names,
     * statuses 99, 1000 and 101, a write before begin), then one success. */
    want[0] = '\0';
    for (int i = 0; i < 18; i++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%d,",
                 -EINVAL);
    strcat(want, "0");
    HR_BODY_IS(&r, want);
    cr_assert_null(hr_header(&r, "X-Injected"), "header injection");
    cr_assert_null(hr_header(&r, "X-A"));
    cr_assert_eq(hr_count(&r, "Content-Length"), 1);
    cr_assert_eq(hr_count(&r, "Date"), 1);
    cr_assert_eq(hr_count(&r, "Server"), 1);
    cr_assert_eq(hr_count(&r, "Connection"), hr_header(&r, "Connection") != 0);
    cr_assert_str_eq(hr_header(&r, "X-Ok") ?: "", "fine; q=\"a b\"");
    hr_release(&r);
    hts_fini(&t);
}

/* Status, a custom field, a body set twice (the second wins). */
static void h_custom(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    es_http_response_status(res, 201);
    es_http_response_header(res, "X-Custom", "yes");
    es_http_response_header(res, "Set-Cookie", "a=1");
    es_http_response_header(res, "Set-Cookie", "b=2");
    es_http_response_header(res, "Content-Type", "text/x-test");
    es_http_response_body(res, "first", 5);
    es_http_response_body(res, "second!", 7);
}

/* A body by reference, replaced by a copy: the reference is freed too. */
static void h_ref(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    const char *which = arg;
    char *p = strdup("by reference");
    char *q;

    (void)req;
    if (es_http_response_body_ref(res, p, strlen(p), ref_free) != 0)
        free(p);
    if (strcmp(which, "replace") == 0) {
        q = strdup("ref2");
        if (es_http_response_body_ref(res, q, 4, ref_free) != 0)
            free(q);
        es_http_response_body(res, "copied", 6);
    }
}

/* Ends the response inside the handler, then tries again. */
static atomic_int g_end_again = 99;

static void h_end_inside(es_http_request_t *req, es_http_response_t *res,
                         void *arg)
{
    (void)req;
    (void)arg;
    es_http_response_body(res, "ended", 5);
    if (es_http_response_end(res) == 0)
        atomic_store(&g_end_again, es_http_response_end(res));
}

Test(http_server, response_status_fields_bodies, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    static const char *stat = "static body";

    hts_init(&t, 2, NULL);
    hts_route(&t, "GET", "/custom", h_custom, NULL);
    hts_route(&t, "GET", "/ref", h_ref, "ref");
    hts_route(&t, "GET", "/replace", h_ref, "replace");
    hts_route(&t, "GET", "/end", h_end_inside, NULL);
    hts_route(&t, "GET", "/static", h_text, (void *)stat);
    hts_start(&t);

    http_get(t.port, "/custom", &r);
    cr_assert_eq(r.status, 201);
    cr_assert_str_eq(r.reason, "Created");
    HR_BODY_IS(&r, "second!");
    cr_assert_str_eq(hr_header(&r, "X-Custom") ?: "", "yes");
    cr_assert_eq(hr_count(&r, "Set-Cookie"), 2);
    cr_assert_str_eq(hr_header(&r, "Content-Type") ?: "", "text/x-test");
    cr_assert_str_eq(hr_header(&r, "Content-Length") ?: "", "7");
    hr_release(&r);

    http_get(t.port, "/ref", &r);
    HR_BODY_IS(&r, "by reference");
    hr_release(&r);
    http_get(t.port, "/replace", &r);
    HR_BODY_IS(&r, "copied");
    hr_release(&r);
    /* HEAD drops the body without sending it: still freed once. */
    HTTP_ONCE(t.port, "HEAD /ref HTTP/1.1\r\nHost: t\r\n\r\n", &r, HR_HEAD);
    cr_assert_str_eq(hr_header(&r, "Content-Length") ?: "", "12");
    hr_release(&r);
    ES_WAIT_GE(g_ref_freed, 4);
    es_test_sleep_ms(50);
    cr_assert_eq(atomic_load(&g_ref_freed), 4, "free_cb ran %llu times",
                 (unsigned long long)atomic_load(&g_ref_freed));

    http_get(t.port, "/end", &r);
    HR_BODY_IS(&r, "ended");
    hr_release(&r);
    /* The handler stores the second end()'s result after the first one
     * sent the response: wait for it. */
    for (int i = 0; i < 1000 && atomic_load(&g_end_again) == 99; i++)
        es_test_sleep_ms(5);
    cr_assert_eq(atomic_load(&g_end_again), -EALREADY, "second end(): %d",
                 atomic_load(&g_end_again));
    http_get(t.port, "/static", &r);
    HR_BODY_IS(&r, "static body");
    hr_release(&r);
    hts_fini(&t);
}

/* A body by reference set first, then 30 fields, each a little longer than
 * the one before: the fields and the reference travel together as the
 * fields' room grows (http/response.c out_get()). */
static void h_ref_then_fields(es_http_request_t *req, es_http_response_t *res,
                              void *arg)
{
    char *p = strdup("ref before fields");
    char name[32], value[64];

    (void)req;
    (void)arg;
    if (es_http_response_body_ref(res, p, strlen(p), ref_free) != 0)
        free(p);
    for (int i = 0; i < 30; i++) {
        snprintf(name, sizeof(name), "X-F%02d", i);
        snprintf(value, sizeof(value), "%.*s", i + 1,
                 "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
        es_http_response_header(res, name, value);
    }
}

Test(http_server, fields_after_body_ref, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    char name[32];

    hts_serve1(&t, "GET", "/f", h_ref_then_fields, NULL);
    http_get(t.port, "/f", &r);
    cr_assert_eq(r.status, 200);
    HR_BODY_IS(&r, "ref before fields");
    for (int i = 0; i < 30; i++) {
        snprintf(name, sizeof(name), "X-F%02d", i);
        const char *v = hr_header(&r, name);
        cr_assert_not_null(v, "%s missing", name);
        cr_assert_eq(strlen(v), (size_t)i + 1, "%s: %s", name, v);
    }
    hr_release(&r);
    ES_WAIT_GE(g_ref_freed, 1);
    hts_fini(&t);
    cr_assert_eq(atomic_load(&g_ref_freed), 1);
}

/* A response freed because its connection went away: body_ref freed once. */
static void h_ref_big(es_http_request_t *req, es_http_response_t *res,
                      void *arg)
{
    size_t n = 8u << 20;
    char *p = malloc(n);

    (void)req;
    (void)arg;
    if (!p)
        return;
    memset(p, 'r', n);
    if (es_http_response_body_ref(res, p, n, ref_free) != 0)
        free(p);
}

Test(http_server, body_ref_freed_when_client_leaves, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hc c;

    hts_serve1(&t, "GET", "/big", h_ref_big, NULL);
    hc_open(&c, t.port);
    HC_SEND(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_gt(hc_fill(&c, ES_TEST_WAIT_S), 0);
    hc_reset(&c);
    ES_WAIT_GE(g_ref_freed, 1);
    HTS_WAIT_CONNS(&t, 0);
    http_expect(t.port, "/big", 200);
    ES_WAIT_GE(g_ref_freed, 2);
    hts_fini(&t);
    cr_assert_eq(atomic_load(&g_ref_freed), 2);
}

/* --- Date and Server ------------------------------------------------------ */

Test(http_server, date_field_rfc7231, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;
    struct tm tm;
    const char *d, *end;
    time_t when;

    hts_serve1(&t, "GET", "/", h_text, "x");
    http_get(t.port, "/", &r);
    cr_assert_eq(hr_count(&r, "Date"), 1);
    d = hr_header(&r, "Date");
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT", always 29 bytes. */
    cr_assert_eq(strlen(d), 29, "Date: %s", d);
    memset(&tm, 0, sizeof(tm));
    end = strptime(d, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cr_assert(end && *end == '\0', "Date: %s", d);
    cr_assert(d[3] == ',' && d[4] == ' ' && d[7] == ' ' && d[11] == ' ',
              "Date: %s", d);
    when = timegm(&tm);
    cr_assert_lt(labs((long)(when - time(NULL))), 3600L, "Date: %s", d);
    hr_release(&r);
    hts_fini(&t);
}

static void server_name_case(const char *name, const char *want)
{
    es_http_server_opts_t o = {.server_name = name};
    struct hts t;
    struct hr r;

    hts_init(&t, 1, &o);
    hts_route(&t, "GET", "/", h_text, "x");
    hts_start(&t);
    http_get(t.port, "/", &r);
    if (want) {
        cr_assert_eq(hr_count(&r, "Server"), 1);
        cr_assert_str_eq(hr_header(&r, "Server"), want);
    } else {
        cr_assert_eq(hr_count(&r, "Server"), 0, "Server: %s",
                     hr_header(&r, "Server"));
    }
    hr_release(&r);
    /* Server-generated errors carry it the same way. */
    http_get(t.port, "/missing", &r);
    cr_assert_eq(r.status, 404);
    cr_assert_eq(hr_count(&r, "Server"), want ? 1 : 0);
    hr_release(&r);
    hts_fini(&t);
}

Test(http_server, server_field, .timeout = ES_TEST_TIMEOUT)
{
    server_name_case(NULL, "EventServer");
    server_name_case("Custom/1.0", "Custom/1.0");
    server_name_case("", NULL);
}
