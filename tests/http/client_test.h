/* SPDX-License-Identifier: MIT */
/*
 * Shared by the HTTP client tests (test_http_client*.c): a struct res per
 * request that the reply and failure callbacks fill (counted in atomics,
 * asserted by the test thread after the run), a client fixture with
 * tear-down bounded by timeouts, and a raw-socket server (a thread per
 * connection, canned replies chosen per request by a handler) that can
 * misbehave on purpose, with the handlers the tests use.
 */
#ifndef ES_HTTP_CLIENT_TEST_H
#define ES_HTTP_CLIENT_TEST_H

#include "net_test.h"

#include <eventserver/http.h>

#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* --- What each request got ------------------------------------------------ */

struct res {
    atomic_ullong calls, replies, fails;
    atomic_int err, status, version;
    atomic_int nul_ok; /* the body was NUL-terminated */
    char *body;        /* copy of the reply body */
    size_t body_len;
    char *fields; /* "name: value\n" for each field, in order */
};

static inline void on_reply(const es_http_reply_t *r, void *arg)
{
    struct res *x = arg;
    size_t len = 0, flen = 0;
    const char *b = es_http_reply_body(r, &len);
    const es_http_headers_t *h = es_http_reply_headers(r);
    const char *n, *v;

    free(x->body);
    x->body = malloc(len + 1);
    memcpy(x->body, b, len + 1);
    x->body_len = len;
    free(x->fields);
    for (size_t i = 0; es_http_headers_at(h, i, &n, &v) == 0; i++)
        flen += strlen(n) + strlen(v) + 3;
    x->fields = calloc(1, flen + 1);
    for (size_t i = 0; es_http_headers_at(h, i, &n, &v) == 0; i++)
        sprintf(x->fields + strlen(x->fields), "%s: %s\n", n, v);
    atomic_store(&x->nul_ok, b[len] == '\0');
    atomic_store(&x->status, es_http_reply_status(r));
    atomic_store(&x->version, es_http_reply_version(r));
    atomic_fetch_add(&x->replies, 1);
    atomic_fetch_add(&x->calls, 1);
}

static inline void on_fail(int err, void *arg)
{
    struct res *x = arg;

    atomic_store(&x->err, err);
    atomic_fetch_add(&x->fails, 1);
    atomic_fetch_add(&x->calls, 1);
}

static inline void res_free(struct res *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(x[i].body);
        free(x[i].fields);
    }
}

/* Waits until each of n results got a callback. */
static inline void wait_all(struct res *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ES_WAIT_GE(x[i].calls, 1);
}

/* Exactly one callback each, all of them replies with `status`. */
static inline void assert_replies(struct res *x, size_t n, int status)
{
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(atomic_load(&x[i].calls), 1, "request %zu: %llu calls", i,
                     (unsigned long long)atomic_load(&x[i].calls));
        cr_assert_eq(atomic_load(&x[i].replies), 1,
                     "request %zu failed: %d (%s)", i, atomic_load(&x[i].err),
                     strerror(-atomic_load(&x[i].err)));
        cr_assert_eq(atomic_load(&x[i].status), status, "request %zu: %d", i,
                     atomic_load(&x[i].status));
        cr_assert(atomic_load(&x[i].nul_ok));
    }
}

/* Exactly one callback, a failure with err. */
static inline void assert_failed(struct res *x, int err)
{
    cr_assert_eq(atomic_load(&x->calls), 1, "%llu calls",
                 (unsigned long long)atomic_load(&x->calls));
    cr_assert_eq(atomic_load(&x->fails), 1, "no failure: got status %d",
                 atomic_load(&x->status));
    cr_assert_eq(atomic_load(&x->err), err, "error %d (%s), want %d (%s)",
                 atomic_load(&x->err), strerror(-atomic_load(&x->err)), err,
                 strerror(-err));
}

static inline bool has_field(const struct res *x, const char *line)
{
    return x->fields && strstr(x->fields, line) != NULL;
}

/* --- A client fixture ----------------------------------------------------- */

struct fx {
    es_runtime_t *rt;
    es_http_client_t *c;
};

static inline void fx_init(struct fx *f, unsigned threads,
                           const es_http_client_opts_t *o)
{
    f->rt = es_test_runtime_start(threads);
    ES_OK(es_http_client_new(f->rt, o, &f->c));
}

static inline void *client_free_thread(void *c)
{
    es_http_client_free(c);
    return NULL;
}

/* es_http_client_free() bounded by ES_TEST_JOIN_S. */
static inline void fx_free_client(struct fx *f)
{
    pthread_t t;

    if (!f->c)
        return;
    cr_assert_eq(pthread_create(&t, NULL, client_free_thread, f->c), 0);
    cr_assert(es_test_join(t, NULL, ES_TEST_JOIN_S),
              "es_http_client_free() did not return");
    f->c = NULL;
}

static inline void fx_fini(struct fx *f)
{
    fx_free_client(f);
    es_test_free(f->rt);
}

/* A request with the given method (NULL: GET), body and timeout. */
static inline int req_full(struct fx *f, const char *url, const char *method,
                           const char *const *headers, const void *body,
                           size_t len, unsigned timeout_ms, struct res *x)
{
    es_http_client_req_t r = {
        .url = url,
        .method = method,
        .headers = headers,
        .body = body,
        .body_len = len,
        .timeout_ms = timeout_ms,
    };

    return es_http_client_request(f->c, &r, on_reply, on_fail, x);
}

static inline void get(struct fx *f, const char *url, struct res *x)
{
    ES_OK(req_full(f, url, NULL, NULL, NULL, 0, 0, x));
}

/* A GET of url; returns once its callback has run. */
static inline void get_wait(struct fx *f, const char *url, struct res *x)
{
    get(f, url, x);
    wait_all(x, 1);
}

/* --- Raw server ----------------------------------------------------------- */

#define RAW_MAX 512
#define MIB (1u << 20)

enum { RAW_KEEP, RAW_CLOSE, RAW_HANG };

struct raw_req {
    const char *head; /* request line and fields, NUL-terminated */
    const char *body;
    size_t body_len;
    int conn, nreq; /* connection index, request index on it */
};

struct raw;
typedef int (*raw_fn)(struct raw *s, int fd, const struct raw_req *rq);

struct raw {
    int lfd, port;
    raw_fn fn;
    int idle_close_ms; /* close a kept-alive connection quiet this long */
    pthread_t acc;
    atomic_int stop;
    atomic_ullong accepted, requests, closed, live, peak;
    pthread_mutex_t mu;
    int fds[RAW_MAX];
    pthread_t thr[RAW_MAX];
    int n;
    char last[4096]; /* the last request head (under mu) */
};

struct raw_conn {
    struct raw *s;
    int idx;
};

static inline bool raw_write(int fd, const void *p, size_t len)
{
    return send_all(fd, p, len, ES_TEST_WAIT_S);
}

static inline bool raw_writes(int fd, const char *s)
{
    return raw_write(fd, s, strlen(s));
}

/* Reads into *buf until pred is met; false at EOF, error or stop. */
static inline bool raw_fill(struct raw *s, int fd, char **buf, size_t *len,
                            size_t *cap, size_t want)
{
    while (*len < want) {
        if (atomic_load(&s->stop))
            return false;
        if (*cap < want + 1) {
            *cap = want + 4096;
            *buf = realloc(*buf, *cap);
        }
        if (!poll_one(fd, POLLIN, 50))
            continue;
        ssize_t r = recv(fd, *buf + *len, *cap - *len - 1, 0);
        if (r <= 0)
            return false;
        *len += (size_t)r;
        (*buf)[*len] = '\0';
    }
    return true;
}

static inline size_t content_length(const char *head)
{
    const char *p = strcasestr(head, "\ncontent-length:");

    return p ? strtoul(p + 16, NULL, 10) : 0;
}

/* Reads one request; returns its total size or 0. */
static inline size_t raw_read_req(struct raw *s, int fd, char **buf,
                                  size_t *len, size_t *cap, struct raw_req *rq)
{
    char *end;

    if (s->idle_close_ms && rq->nreq > 0 && *len == 0 &&
        !poll_one(fd, POLLIN, s->idle_close_ms))
        return 0;
    while (!(*buf && (end = strstr(*buf, "\r\n\r\n")) != NULL))
        if (!raw_fill(s, fd, buf, len, cap, *len + 1))
            return 0;
    size_t hl = (size_t)(end - *buf) + 4;
    (*buf)[hl - 2] = '\0';
    size_t bl = content_length(*buf);
    if (!raw_fill(s, fd, buf, len, cap, hl + bl))
        return 0;
    rq->head = *buf;
    rq->body = *buf + hl;
    rq->body_len = bl;
    return hl + bl;
}

static inline void *raw_conn_main(void *arg)
{
    struct raw_conn *rc = arg;
    struct raw *s = rc->s;
    int fd = s->fds[rc->idx];
    char *buf = NULL;
    size_t len = 0, cap = 0, used;
    struct raw_req rq = {.conn = rc->idx};
    int act = RAW_KEEP;

    while (act == RAW_KEEP &&
           (used = raw_read_req(s, fd, &buf, &len, &cap, &rq)) != 0) {
        pthread_mutex_lock(&s->mu);
        snprintf(s->last, sizeof(s->last), "%s", rq.head);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->requests, 1);
        act = s->fn(s, fd, &rq);
        rq.nreq++;
        memmove(buf, buf + used, len - used);
        len -= used;
        buf[len] = '\0';
    }
    while (act == RAW_HANG && !atomic_load(&s->stop))
        es_test_sleep_ms(5);
    pthread_mutex_lock(&s->mu);
    close(fd);
    s->fds[rc->idx] = -1;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_sub(&s->live, 1);
    atomic_fetch_add(&s->closed, 1);
    free(buf);
    free(rc);
    return NULL;
}

static inline void *raw_accept_main(void *arg)
{
    struct raw *s = arg;

    while (!atomic_load(&s->stop)) {
        if (!poll_one(s->lfd, POLLIN, 50))
            continue;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_mutex_lock(&s->mu);
        if (s->n == RAW_MAX) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            continue;
        }
        struct raw_conn *rc = malloc(sizeof(*rc));
        rc->s = s;
        rc->idx = s->n;
        s->fds[s->n] = fd;
        atomic_fetch_add(&s->accepted, 1);
        max_store(&s->peak, atomic_fetch_add(&s->live, 1) + 1);
        pthread_create(&s->thr[s->n], NULL, raw_conn_main, rc);
        s->n++;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* Starts a raw server on 127.0.0.1 (or ::1 if v6); false if v6 is
 * unavailable. */
static inline bool raw_start_af(struct raw *s, raw_fn fn, bool v6)
{
    struct sockaddr_storage ss;
    socklen_t sl;

    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->fn = fn;
    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof(*a);
    } else {
        addr_lo((struct sockaddr_in *)&ss, 0);
        sl = sizeof(struct sockaddr_in);
    }
    s->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&ss, sl) != 0) {
        cr_assert(v6, "bind: %s", strerror(errno));
        close(s->lfd);
        return false;
    }
    cr_assert_eq(listen(s->lfd, 128), 0);
    cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&ss, &sl), 0);
    s->port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                       : ((struct sockaddr_in *)&ss)->sin_port);
    cr_assert_eq(pthread_create(&s->acc, NULL, raw_accept_main, s), 0);
    return true;
}

static inline void raw_start(struct raw *s, raw_fn fn)
{
    raw_start_af(s, fn, false);
}

static inline void raw_stop(struct raw *s)
{
    atomic_store(&s->stop, 1);
    cr_assert(es_test_join(s->acc, NULL, ES_TEST_JOIN_S));
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n; i++)
        if (s->fds[i] >= 0)
            shutdown(s->fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n; i++)
        cr_assert(es_test_join(s->thr[i], NULL, ES_TEST_JOIN_S));
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
}

/* Starts the raw server s with fn, then a client of `threads` demux
 * threads (opts o, may be NULL). */
static inline void fx_raw_start(struct fx *f, struct raw *s, raw_fn fn,
                                unsigned threads,
                                const es_http_client_opts_t *o)
{
    raw_start(s, fn);
    fx_init(f, threads, o);
}

/* Frees the client, then stops the raw server. */
static inline void fx_raw_stop(struct fx *f, struct raw *s)
{
    fx_fini(f);
    raw_stop(s);
}

/* The last request head the server read. */
static inline void raw_last(struct raw *s, char *out, size_t len)
{
    pthread_mutex_lock(&s->mu);
    snprintf(out, len, "%s", s->last);
    pthread_mutex_unlock(&s->mu);
}

static inline void url_of(char *out, size_t len, const struct raw *s,
                          const char *target)
{
    snprintf(out, len, "http://127.0.0.1:%d%s", s->port, target);
}

static inline bool is_method(const struct raw_req *rq, const char *m)
{
    size_t n = strlen(m);

    return strncmp(rq->head, m, n) == 0 && rq->head[n] == ' ';
}

static inline bool is_target(const struct raw_req *rq, const char *t)
{
    const char *sp = strchr(rq->head, ' ');
    size_t n = strlen(t);

    return sp && strncmp(sp + 1, t, n) == 0 && sp[1 + n] == ' ';
}

#define HELLO "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello"

/* --- Handlers ------------------------------------------------------------- */

static inline int h_hello(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    (void)rq;
    raw_writes(fd, HELLO);
    return RAW_KEEP;
}

static inline int h_slow_hello(struct raw *s, int fd, const struct raw_req *rq)
{
    es_test_sleep_ms(30);
    return h_hello(s, fd, rq);
}

static inline int h_echo(struct raw *s, int fd, const struct raw_req *rq)
{
    char head[128];
    size_t n = rq->body_len;
    char *big = NULL;
    const char *p = rq->body;

    (void)s;
    if (is_target(rq, "/big")) {
        n = 1u << 20;
        big = malloc(n);
        for (size_t i = 0; i < n; i++)
            big[i] = (char)pat(i);
        p = big;
    }
    snprintf(head, sizeof(head),
             "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
    raw_writes(fd, head);
    raw_write(fd, p, n);
    free(big);
    return RAW_KEEP;
}

static inline int h_chunked(struct raw *s, int fd, const struct raw_req *rq)
{
    static const char CHUNKED[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
        "Trailer: X-Sum\r\n\r\n5\r\nhello\r\n"
        "7;ext=1\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n";

    (void)s;
    if (is_target(rq, "/bytewise")) {
        for (size_t i = 0; i < sizeof(CHUNKED) - 1; i++) {
            raw_write(fd, CHUNKED + i, 1);
            if (i % 8 == 0)
                es_test_sleep_ms(1);
        }
    } else {
        raw_writes(fd, CHUNKED);
    }
    return RAW_KEEP;
}

static inline int h_close_delim(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    if (is_target(rq, "/10"))
        raw_writes(fd, "HTTP/1.0 200 OK\r\n\r\nold style");
    else
        raw_writes(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ");
    es_test_sleep_ms(20);
    raw_writes(fd, "the end");
    return RAW_CLOSE;
}

static inline int h_interim(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    (void)rq;
    raw_writes(fd, "HTTP/1.1 100 Continue\r\n\r\n");
    es_test_sleep_ms(5);
    raw_writes(fd,
               "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
               "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 2\r\n\r\nok");
    return RAW_KEEP;
}

static inline int h_nobody(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    if (is_method(rq, "HEAD"))
        raw_writes(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    else if (is_target(rq, "/204"))
        raw_writes(fd, "HTTP/1.1 204 No Content\r\n\r\n");
    else if (is_target(rq, "/304"))
        raw_writes(fd,
                   "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
    else
        raw_writes(fd, HELLO);
    return RAW_KEEP;
}

static inline int h_bad(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    if (is_target(rq, "/malformed")) {
        raw_writes(fd, "HTTP/1.1 2x0 OK\r\n\r\n");
    } else if (is_target(rq, "/badlen")) {
        raw_writes(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                       "Content-Length: 6\r\n\r\nhello!");
    } else if (is_target(rq, "/cut")) {
        raw_writes(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n01234");
        return RAW_CLOSE;
    } else if (is_target(rq, "/cutchunk")) {
        raw_writes(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhel");
        return RAW_CLOSE;
    } else if (is_target(rq, "/nothing")) {
        return RAW_CLOSE;
    } else if (is_target(rq, "/hang")) {
        return RAW_HANG;
    } else if (is_target(rq, "/extra")) {
        raw_writes(fd, HELLO "XYZ");
    } else {
        raw_writes(fd, HELLO);
    }
    return RAW_KEEP;
}

static inline int h_big(struct raw *s, int fd, const struct raw_req *rq)
{
    char line[2048];

    (void)s;
    if (is_target(rq, "/bighead")) {
        memset(line, 'a', sizeof(line));
        raw_writes(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: ");
        raw_write(fd, line, sizeof(line));
        raw_writes(fd, "\r\n\r\n");
    } else if (is_target(rq, "/bigbody")) {
        raw_writes(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
        memset(line, 'b', sizeof(line));
        raw_write(fd, line, sizeof(line));
    } else if (is_target(rq, "/bigchunks")) {
        raw_writes(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        memset(line, 'c', 600);
        for (int i = 0; i < 3; i++) {
            raw_writes(fd, "258\r\n");
            raw_write(fd, line, 600);
            raw_writes(fd, "\r\n");
        }
        raw_writes(fd, "0\r\n\r\n");
    } else {
        raw_writes(fd, HELLO);
    }
    return RAW_KEEP;
}

/* Connection 0 answers its first request, then closes on the second
 * without a word (a server dropping an idle keep-alive connection just as
 * the request arrives); later connections answer. */
static inline int h_race(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    if (rq->conn == 0 && rq->nreq == 1)
        return RAW_CLOSE;
    raw_writes(fd, HELLO);
    return RAW_KEEP;
}

/* Only the very first request of connection 0 gets an answer. */
static inline int h_race_always(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    if (rq->conn != 0 || rq->nreq != 0)
        return RAW_CLOSE;
    raw_writes(fd, HELLO);
    return RAW_KEEP;
}

static inline int h_not_kept(struct raw *s, int fd, const struct raw_req *rq)
{
    (void)s;
    if (is_target(rq, "/10"))
        raw_writes(fd, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    else
        raw_writes(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n"
                       "Content-Length: 2\r\n\r\nok");
    return RAW_KEEP; /* the client must close */
}

#endif /* ES_HTTP_CLIENT_TEST_H */
