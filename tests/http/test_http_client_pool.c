/* SPDX-License-Identifier: MIT */
/*
 * Tests of the HTTP client's connection pool (http/client.c): keep-alive
 * reuse, replies that forbid it, the keep-alive race (a reused connection
 * closed before the reply: a GET is retried once on a fresh connection;
 * test_http_client_retry.c covers the other methods), the cap
 * per host with its wait queue, the idle timeout, requests from several
 * threads, es_http_client_free() and a runtime stop with requests in flight
 * (-ECANCELED exactly once each); then the client against our own
 * es_http_server and against nginx (skipped when /usr/sbin/nginx is
 * missing).
 */
#include "client_test.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* --- The pool ------------------------------------------------------------- */

#define SEQ 20

Test(http_client, keepalive_reuse, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[SEQ] = {0};
    char url[128];

    fx_raw_start(&f, &s, h_hello, 2, NULL);
    url_of(url, sizeof(url), &s, "/");
    for (int i = 0; i < SEQ; i++) {
        get_wait(&f, url, &x[i]);
    }
    fx_raw_stop(&f, &s);
    assert_replies(x, SEQ, 200);
    cr_assert_eq(atomic_load(&s.accepted), 1, "%llu connections",
                 (unsigned long long)atomic_load(&s.accepted));
    cr_assert_eq(atomic_load(&s.requests), SEQ);
    res_free(x, SEQ);
}

/* Replies that forbid reuse: Connection: close, HTTP/1.0, extra bytes. */
Test(http_client, not_reused, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s[2];
    struct fx f;
    struct res x[6] = {0};
    char url[3][128];

    raw_start(&s[0], h_not_kept);
    raw_start(&s[1], h_bad);
    fx_init(&f, 2, NULL);
    url_of(url[0], sizeof(url[0]), &s[0], "/");
    url_of(url[1], sizeof(url[1]), &s[0], "/10");
    url_of(url[2], sizeof(url[2]), &s[1], "/extra");
    for (int i = 0; i < 6; i++) {
        get_wait(&f, url[i / 2], &x[i]);
    }
    fx_fini(&f);
    raw_stop(&s[0]);
    raw_stop(&s[1]);
    assert_replies(x, 6, 200);
    cr_assert_eq(atomic_load(&s[0].accepted), 4);
    cr_assert_eq(atomic_load(&s[1].accepted), 2);
    cr_assert_str_eq(x[4].body, "hello");
    res_free(x, 6);
}

/* Two GETs of "/", one after the other, from a client of a raw server
 * with fn; both stopped after. */
static void get_twice(struct raw *s, raw_fn fn, struct res x[2])
{
    struct fx f;
    char url[128];

    fx_raw_start(&f, s, fn, 2, NULL);
    url_of(url, sizeof(url), s, "/");
    get_wait(&f, url, &x[0]);
    get_wait(&f, url, &x[1]);
    fx_raw_stop(&f, s);
}

Test(http_client, keepalive_race_retried, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct res x[2] = {0};

    /* Connection 0 drops the second request: retried on connection 1. */
    get_twice(&s, h_race, x);
    assert_replies(x, 2, 200);
    cr_assert_eq(atomic_load(&s.accepted), 2);
    cr_assert_eq(atomic_load(&s.requests), 3);
    res_free(x, 2);
}

Test(http_client, keepalive_race_retried_once, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct res x[2] = {0};

    get_twice(&s, h_race_always, x);
    assert_replies(&x[0], 1, 200);
    assert_failed(&x[1], -ECONNRESET);
    cr_assert_eq(atomic_load(&s.accepted), 2, "retried more than once");
    res_free(x, 2);
}

#define CONCURRENT 10

Test(http_client, cap_per_host, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[CONCURRENT] = {0};
    char url[128];
    es_http_client_opts_t o = {.max_per_host = 2};

    fx_raw_start(&f, &s, h_slow_hello, 2, &o);
    url_of(url, sizeof(url), &s, "/");
    for (int i = 0; i < CONCURRENT; i++)
        get(&f, url, &x[i]);
    wait_all(x, CONCURRENT);
    fx_raw_stop(&f, &s);
    assert_replies(x, CONCURRENT, 200);
    cr_assert_leq(atomic_load(&s.accepted), 2, "%llu connections",
                  (unsigned long long)atomic_load(&s.accepted));
    cr_assert_eq(atomic_load(&s.peak), 2);
    res_free(x, CONCURRENT);
}

Test(http_client, idle_timeout_closes, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[2] = {0};
    char url[128];
    es_http_client_opts_t o = {.idle_timeout_ms = 100};

    fx_raw_start(&f, &s, h_hello, 1, &o);
    url_of(url, sizeof(url), &s, "/");
    get_wait(&f, url, &x[0]);
    ES_WAIT_GE(s.closed, 1); /* the client closed the idle connection */
    get_wait(&f, url, &x[1]);
    fx_raw_stop(&f, &s);
    assert_replies(x, 2, 200);
    cr_assert_eq(atomic_load(&s.accepted), 2);
    res_free(x, 2);
}

Test(http_client, ipv6_literal, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x = {0};
    char url[128], head[4096], host[64];

    if (!raw_start_af(&s, h_hello, true))
        cr_skip_test("no IPv6 loopback");
    fx_init(&f, 1, NULL);
    snprintf(url, sizeof(url), "http://[::1]:%d/v6", s.port);
    get_wait(&f, url, &x);
    fx_fini(&f);
    raw_last(&s, head, sizeof(head));
    raw_stop(&s);
    assert_replies(&x, 1, 200);
    snprintf(host, sizeof(host), "\r\nHost: [::1]:%d\r\n", s.port);
    cr_assert(strstr(head, host), "%s", head);
    res_free(&x, 1);
}

/* Each reply starts the next request from inside on_reply: the connection
 * is back in the pool before the callback runs, so one connection does. */
struct chain {
    es_http_client_t *c;
    const char *url;
    atomic_ullong done, failed;
};

static void chain_next(struct chain *ch);

static void chain_reply(const es_http_reply_t *r, void *arg)
{
    struct chain *ch = arg;

    if (es_http_reply_status(r) != 200)
        atomic_fetch_add(&ch->failed, 1);
    if (atomic_fetch_add(&ch->done, 1) + 1 < SEQ)
        chain_next(ch);
}

static void chain_fail(int err, void *arg)
{
    struct chain *ch = arg;

    (void)err;
    atomic_fetch_add(&ch->failed, 1);
    atomic_fetch_add(&ch->done, 1);
}

static void chain_next(struct chain *ch)
{
    es_http_client_req_t r = {.url = ch->url};

    if (es_http_client_request(ch->c, &r, chain_reply, chain_fail, ch) != 0)
        atomic_fetch_add(&ch->failed, 1);
}

Test(http_client, request_from_callback, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    char url[128];
    struct chain ch = {0};

    fx_raw_start(&f, &s, h_hello, 2, NULL);
    url_of(url, sizeof(url), &s, "/");
    ch.c = f.c;
    ch.url = url;
    chain_next(&ch);
    ES_WAIT_GE(ch.done, SEQ);
    fx_raw_stop(&f, &s);
    cr_assert_eq(atomic_load(&ch.done), SEQ);
    cr_assert_eq(atomic_load(&ch.failed), 0);
    cr_assert_eq(atomic_load(&s.accepted), 1);
}

#define RACY 150

/* Both sides drop idle connections after 3 ms while requests come every 0
 * to 4 ms: requests race the server's close (retried) and the client's
 * idle close (a request sent to a connection that just closed is
 * dispatched again). Every request must succeed. */
Test(http_client, idle_close_races, .timeout = ES_TEST_TIMEOUT_LONG)
{
    struct raw s;
    struct fx f;
    static struct res x[RACY];
    char url[128];
    es_http_client_opts_t o = {.idle_timeout_ms = 3};

    memset(x, 0, sizeof(x));
    raw_start(&s, h_hello);
    s.idle_close_ms = 3;
    fx_init(&f, 2, &o);
    url_of(url, sizeof(url), &s, "/");
    for (int i = 0; i < RACY; i++) {
        get_wait(&f, url, &x[i]);
        es_test_sleep_ms((unsigned)(i % 5));
    }
    fx_raw_stop(&f, &s);
    assert_replies(x, RACY, 200);
    res_free(x, RACY);
}

/* --- Threads and shutdown ------------------------------------------------- */

#define SENDERS 4
#define PER_SENDER 25

struct sender {
    struct fx *f;
    const char *url;
    struct res *x;
    atomic_int refused;
};

static void *sender_main(void *arg)
{
    struct sender *sd = arg;

    for (int i = 0; i < PER_SENDER; i++)
        if (req_full(sd->f, sd->url, NULL, NULL, NULL, 0, 0, &sd->x[i]) != 0)
            atomic_fetch_add(&sd->refused, 1);
    return NULL;
}

Test(http_client, many_threads, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    static struct res x[SENDERS * PER_SENDER];
    struct sender sd[SENDERS];
    pthread_t t[SENDERS];
    char url[128];
    es_http_client_opts_t o = {.max_per_host = 4};

    memset(x, 0, sizeof(x));
    fx_raw_start(&f, &s, h_hello, 2, &o);
    url_of(url, sizeof(url), &s, "/");
    for (int i = 0; i < SENDERS; i++) {
        sd[i] = (struct sender){.f = &f, .url = url, .x = &x[i * PER_SENDER]};
        cr_assert_eq(pthread_create(&t[i], NULL, sender_main, &sd[i]), 0);
    }
    for (int i = 0; i < SENDERS; i++)
        cr_assert(es_test_join(t[i], NULL, ES_TEST_JOIN_S));
    for (int i = 0; i < SENDERS; i++)
        cr_assert_eq(atomic_load(&sd[i].refused), 0);
    wait_all(x, SENDERS * PER_SENDER);
    fx_raw_stop(&f, &s);
    assert_replies(x, SENDERS * PER_SENDER, 200);
    cr_assert_leq(atomic_load(&s.peak), 4);
    res_free(x, SENDERS * PER_SENDER);
}

Test(http_client, free_cancels_in_flight, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[CONCURRENT + 1] = {0};
    char url[2][128];
    es_http_client_opts_t o = {.max_per_host = 2};

    fx_raw_start(&f, &s, h_bad, 2, &o);
    url_of(url[0], sizeof(url[0]), &s, "/hang");
    /* One idle connection on another host:port key ("localhost")... */
    snprintf(url[1], sizeof(url[1]), "http://localhost:%d/", s.port);
    get_wait(&f, url[1], &x[CONCURRENT]);
    /* ...two requests in flight and eight waiting. */
    for (int i = 0; i < CONCURRENT; i++)
        get(&f, url[0], &x[i]);
    ES_WAIT_GE(s.requests, 3);
    fx_free_client(&f);
    for (int i = 0; i < CONCURRENT; i++)
        assert_failed(&x[i], -ECANCELED);
    es_test_sleep_ms(20);
    es_test_free(f.rt);
    raw_stop(&s);
    for (int i = 0; i < CONCURRENT; i++)
        cr_assert_eq(atomic_load(&x[i].calls), 1);
    assert_replies(&x[CONCURRENT], 1, 200);
    res_free(x, CONCURRENT + 1);
}

Test(http_client, runtime_stop_cancels, .timeout = ES_TEST_TIMEOUT)
{
    struct raw s;
    struct fx f;
    struct res x[3] = {0};
    char url[128];
    es_http_client_opts_t o = {.max_per_host = 1};

    fx_raw_start(&f, &s, h_bad, 2, &o);
    url_of(url, sizeof(url), &s, "/hang");
    for (int i = 0; i < 3; i++)
        get(&f, url, &x[i]);
    ES_WAIT_GE(s.requests, 1);
    ES_OK(es_runtime_stop(f.rt));
    cr_assert_eq(es_test_wait(f.rt), 0);
    fx_free_client(&f); /* the two waiting ones fail here */
    es_test_free(f.rt);
    raw_stop(&s);
    for (int i = 0; i < 3; i++)
        assert_failed(&x[i], -ECANCELED);
}

/* --- Against our own server ----------------------------------------------- */

#ifndef ES_TEST_NO_HTTP_SERVER

static void sv_hello(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    es_http_response_header(res, "Content-Type", "text/plain");
    es_http_response_body(res, "Hello, World!", 13);
}

static void sv_echo(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    size_t n = 0;
    const void *b = es_http_request_body(req, &n);

    (void)arg;
    es_http_response_body(res, b, n);
}

struct sv {
    es_http_server_t *srv;
    int port;
};

static void sv_start(struct sv *v, es_runtime_t *rt)
{
    ES_OK(es_http_server_new(rt, NULL, &v->srv));
    ES_OK(es_http_server_route(v->srv, "GET", "/hello", sv_hello, NULL));
    ES_OK(es_http_server_route(v->srv, "POST", "/echo", sv_echo, NULL));
    ES_OK(es_http_server_listen(v->srv, "127.0.0.1:0"));
    ES_OK(es_http_server_start(v->srv));
    v->port = es_http_server_port(v->srv, 0);
    cr_assert_gt(v->port, 0);
}

static void *sv_free_thread(void *srv)
{
    es_http_server_free(srv);
    return NULL;
}

static void sv_free(struct sv *v)
{
    pthread_t t;

    cr_assert_eq(pthread_create(&t, NULL, sv_free_thread, v->srv), 0);
    cr_assert(es_test_join(t, NULL, ES_TEST_JOIN_S));
}

Test(http_client, our_server, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct sv v;
    struct res x[SEQ + 3] = {0};
    char url[4][128];
    char *body = malloc(MIB);
    es_http_server_stats_t st;

    for (size_t i = 0; i < MIB; i++)
        body[i] = (char)pat(i * 3);
    fx_init(&f, 2, NULL);
    sv_start(&v, f.rt);
    snprintf(url[0], sizeof(url[0]), "http://127.0.0.1:%d/hello", v.port);
    snprintf(url[1], sizeof(url[1]), "http://127.0.0.1:%d/echo", v.port);
    snprintf(url[2], sizeof(url[2]), "http://127.0.0.1:%d/nope", v.port);
    for (int i = 0; i < SEQ; i++) {
        get_wait(&f, url[0], &x[i]);
    }
    ES_OK(req_full(&f, url[0], "HEAD", NULL, NULL, 0, 0, &x[SEQ]));
    wait_all(&x[SEQ], 1);
    ES_OK(req_full(&f, url[1], NULL, NULL, body, MIB, 0, &x[SEQ + 1]));
    wait_all(&x[SEQ + 1], 1);
    get_wait(&f, url[2], &x[SEQ + 2]);
    ES_OK(es_http_server_stats(v.srv, &st));
    fx_free_client(&f);
    sv_free(&v);
    es_test_free(f.rt);

    assert_replies(x, SEQ + 1, 200);
    for (int i = 0; i < SEQ; i++)
        cr_assert_str_eq(x[i].body, "Hello, World!");
    cr_assert(has_field(&x[0], "Content-Type: text/plain\n"), "%s",
              x[0].fields);
    cr_assert_eq(x[SEQ].body_len, 0, "HEAD reply with a body");
    assert_replies(&x[SEQ + 1], 1, 200);
    cr_assert_eq(x[SEQ + 1].body_len, MIB);
    cr_assert_eq(memcmp(x[SEQ + 1].body, body, MIB), 0);
    assert_replies(&x[SEQ + 2], 1, 404);
    cr_assert_eq(st.accepted, 1, "%llu connections for sequential requests",
                 (unsigned long long)st.accepted);
    free(body);
    res_free(x, SEQ + 3);
}

Test(http_client, our_server_concurrent, .timeout = ES_TEST_TIMEOUT)
{
    struct fx f;
    struct sv v;
    static struct res x[100];
    char url[128];
    es_http_client_opts_t o = {.max_per_host = 3};
    es_http_server_stats_t st;

    memset(x, 0, sizeof(x));
    fx_init(&f, 2, &o);
    sv_start(&v, f.rt);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hello", v.port);
    for (int i = 0; i < 100; i++)
        get(&f, url, &x[i]);
    wait_all(x, 100);
    ES_OK(es_http_server_stats(v.srv, &st));
    fx_free_client(&f);
    sv_free(&v);
    es_test_free(f.rt);
    assert_replies(x, 100, 200);
    cr_assert_leq(st.accepted, 3);
    res_free(x, 100);
}

#endif /* ES_TEST_NO_HTTP_SERVER */

/* --- Against nginx -------------------------------------------------------- */

#define NGINX "/usr/sbin/nginx"

struct ngx {
    char dir[64];
    pid_t pid;
    int port;
};

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port;

    addr_lo(&a, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void write_file(const char *path, const void *p, size_t len)
{
    FILE *fp = fopen(path, "wb");

    cr_assert_not_null(fp, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(p, 1, len, fp), len);
    fclose(fp);
}

static void ngx_start(struct ngx *n, const void *file, size_t file_len)
{
    char path[256], conf[2048], *fmt;

    snprintf(n->dir, sizeof(n->dir), "/tmp/es-ngx-XXXXXX");
    cr_assert_not_null(mkdtemp(n->dir));
    snprintf(path, sizeof(path), "%s/www", n->dir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/www/static", n->dir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/www/static/big.bin", n->dir);
    write_file(path, file, file_len);
    n->port = free_port();
    fmt = "daemon off; master_process off; worker_processes 1;\n"
          "error_log %1$s/error.log; pid %1$s/nginx.pid;\n"
          "events { worker_connections 64; }\n"
          "http { access_log off;\n"
          " client_body_temp_path %1$s/body; proxy_temp_path %1$s/proxy;\n"
          " fastcgi_temp_path %1$s/fcgi; uwsgi_temp_path %1$s/uwsgi;\n"
          " scgi_temp_path %1$s/scgi;\n"
          " server { listen 127.0.0.1:%2$d;\n"
          "  location = /hello { default_type text/plain;\n"
          "   return 200 \"Hello, World!\"; }\n"
          "  location /static/ { root %1$s/www; } } }\n";
    snprintf(conf, sizeof(conf), fmt, n->dir, n->port);
    snprintf(path, sizeof(path), "%s/nginx.conf", n->dir);
    write_file(path, conf, strlen(conf));
    n->pid = fork();
    cr_assert_geq(n->pid, 0);
    if (n->pid == 0) {
        char err[128];

        snprintf(err, sizeof(err), "%s/error.log", n->dir);
        execl(NGINX, NGINX, "-p", n->dir, "-e", err, "-c", path, (char *)NULL);
        _exit(127);
    }
    for (double end = es_test_now() + ES_TEST_WAIT_S;;) {
        struct sockaddr_in a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        addr_lo(&a, n->port);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            close(fd);
            return;
        }
        close(fd);
        cr_assert(es_test_now() < end && waitpid(n->pid, NULL, WNOHANG) == 0,
                  "nginx did not start (see %s/error.log)", n->dir);
        es_test_sleep_ms(10);
    }
}

static void ngx_stop(struct ngx *n)
{
    char cmd[128];
    double end = es_test_now() + ES_TEST_JOIN_S;

    kill(n->pid, SIGTERM);
    while (waitpid(n->pid, NULL, WNOHANG) == 0) {
        if (es_test_now() > end) {
            kill(n->pid, SIGKILL);
            waitpid(n->pid, NULL, 0);
            break;
        }
        es_test_sleep_ms(5);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n->dir);
    cr_assert_eq(system(cmd), 0);
}

Test(http_client, nginx, .timeout = ES_TEST_TIMEOUT)
{
    struct ngx n;
    struct fx f;
    struct res x[8] = {0};
    char url[3][128];
    size_t big = 3 * MIB + 123;
    char *file;

    if (access(NGINX, X_OK) != 0)
        cr_skip_test("nginx is not installed");
    file = malloc(big);
    for (size_t i = 0; i < big; i++)
        file[i] = (char)pat(i);
    ngx_start(&n, file, big);
    fx_init(&f, 2, NULL);
    snprintf(url[0], sizeof(url[0]), "http://127.0.0.1:%d/hello", n.port);
    snprintf(url[1], sizeof(url[1]), "http://127.0.0.1:%d/static/big.bin",
             n.port);
    snprintf(url[2], sizeof(url[2]), "http://localhost:%d/missing", n.port);
    for (int i = 0; i < 4; i++)
        get(&f, url[0], &x[i]);
    get(&f, url[1], &x[4]);
    ES_OK(req_full(&f, url[1], "HEAD", NULL, NULL, 0, 0, &x[5]));
    get(&f, url[2], &x[6]);
    ES_OK(req_full(&f, url[0], "POST", NULL, "data", 4, 0, &x[7]));
    wait_all(x, 8);
    fx_fini(&f);
    ngx_stop(&n);

    assert_replies(x, 6, 200);
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(x[i].body, "Hello, World!");
        cr_assert(has_field(&x[i], "Server: nginx"), "%s", x[i].fields);
    }
    cr_assert_eq(x[4].body_len, big);
    cr_assert_eq(memcmp(x[4].body, file, big), 0, "static file differs");
    cr_assert_eq(x[5].body_len, 0);
    assert_replies(&x[6], 1, 404);
    cr_assert_eq(atomic_load(&x[7].calls), 1);
    cr_assert_eq(atomic_load(&x[7].replies), 1, "POST: %d",
                 atomic_load(&x[7].err));
    free(file);
    res_free(x, 8);
}
