/* SPDX-License-Identifier: MIT */
/*
 * The shared part of the fuzz targets (see fuzz_util.h): the HTTP server
 * that fuzz_http_server and fuzz_chunk drive, started once per process on
 * a Unix socket. A Unix socket is used because its send queue (SIOCOUTQ)
 * counts the bytes the peer has not read yet, so the client can tell when
 * the server has read one piece and only then send the next: each piece
 * then reaches the server as a read of its own, which TCP's coalescing
 * would not guarantee.
 */
#include "fuzz_util.h"

#include <errno.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static es_runtime_t *g_rt;
static es_http_server_t *g_srv;
static char g_path[108];

void fz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

uint64_t fz_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void fz_buf_add(struct fz_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            fz_fail("out of memory");
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void fz_buf_free(struct fz_buf *b)
{
    free(b->p);
    *b = (struct fz_buf){0};
}

/* --- The server ---------------------------------------------------------- */

static void on_hello(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)es_http_response_body(res, "hello\n", 6);
}

/* "<method> <target>\n", "<name>: <value>\n" per field, "\n", the body. */
static void on_echo(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    struct fz_buf b = {0};
    const char *m = es_http_request_method(req);
    const char *t = es_http_request_target(req);
    fz_buf_add(&b, m, strlen(m));
    fz_buf_add(&b, " ", 1);
    fz_buf_add(&b, t, strlen(t));
    fz_buf_add(&b, "\n", 1);
    const es_http_headers_t *h = es_http_request_headers(req);
    for (size_t i = 0; i < es_http_headers_count(h); i++) {
        const char *name, *value;
        if (es_http_headers_at(h, i, &name, &value))
            fz_fail("es_http_headers_at(%zu) failed", i);
        fz_buf_add(&b, name, strlen(name));
        fz_buf_add(&b, ": ", 2);
        fz_buf_add(&b, value, strlen(value));
        fz_buf_add(&b, "\n", 1);
    }
    fz_buf_add(&b, "\n", 1);
    size_t len;
    const void *body = es_http_request_body(req, &len);
    fz_buf_add(&b, body, len);
    if (es_http_response_body(res, b.p, b.len))
        fz_fail("es_http_response_body failed");
    fz_buf_free(&b);
}

static void on_static(es_http_request_t *req, es_http_response_t *res,
                      void *arg)
{
    const char *p = es_http_request_path(req);
    (void)es_http_response_body(res, p, strlen(p));
}

static void unlink_path(void)
{
    unlink(g_path);
}

void fz_server_init(void)
{
    es_runtime_opts_t ro = {.threads = 2};
    if (es_runtime_new(&ro, &g_rt) || es_runtime_start(g_rt))
        fz_fail("runtime start failed");
    snprintf(g_path, sizeof(g_path), "/tmp/es-fuzz-%d.sock", (int)getpid());
    unlink(g_path);
    char addr[128];
    snprintf(addr, sizeof(addr), "unix:%s", g_path);
    if (es_http_server_new(g_rt, NULL, &g_srv) ||
        es_http_server_route(g_srv, "GET", "/", on_hello, NULL) ||
        es_http_server_route(g_srv, NULL, "/echo", on_echo, NULL) ||
        es_http_server_route(g_srv, "GET", "/static/*", on_static, NULL) ||
        es_http_server_listen(g_srv, addr) || es_http_server_start(g_srv))
        fz_fail("server start failed");
    atexit(unlink_path);
}

/* --- One exchange -------------------------------------------------------- */

static int connect_server(void)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memcpy(un.sun_path, g_path, strlen(g_path) + 1);
    uint64_t end = fz_now_ms() + FZ_WAIT_MS;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            fz_fail("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0)
            return fd;
        int err = errno;
        close(fd);
        if (err != EAGAIN || fz_now_ms() > end)
            fz_fail("connect: %s", strerror(err));
        usleep(100); /* the backlog is full: the acceptor is behind */
    }
}

/* Reads what is there; returns false once the server has closed. */
static bool drain(int fd, struct fz_buf *out)
{
    char buf[16384];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            fz_buf_add(out, buf, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            return false; /* EOF, or ECONNRESET after its last byte */
        return true;
    }
}

/* Sends p[0..n); returns false if the server closed meanwhile. */
static bool send_piece(int fd, const uint8_t *p, size_t n, struct fz_buf *out)
{
    uint64_t end = fz_now_ms() + FZ_WAIT_MS;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (errno != EAGAIN && errno != EINTR)
            return false; /* EPIPE / ECONNRESET: the server closed */
        if (!drain(fd, out))
            return false;
        if (fz_now_ms() > end)
            fz_fail("hang: the server stopped reading a request");
        struct pollfd pf = {.fd = fd, .events = POLLOUT | POLLIN};
        (void)poll(&pf, 1, 1);
    }
    return true;
}

/* Waits until the server has read everything sent so far. */
static bool wait_read(int fd, struct fz_buf *out)
{
    uint64_t end = fz_now_ms() + FZ_WAIT_MS;
    for (;;) {
        int q = 0;
        if (ioctl(fd, SIOCOUTQ, &q) < 0)
            fz_fail("SIOCOUTQ: %s", strerror(errno));
        if (q == 0)
            return true;
        if (!drain(fd, out))
            return false;
        if (fz_now_ms() > end)
            fz_fail("hang: %d bytes sent are never read by the server", q);
        usleep(20);
    }
}

void fz_server_exchange(const uint8_t *data, size_t n, const size_t *cuts,
                        size_t ncuts, struct fz_buf *out)
{
    int fd = connect_server();
    size_t at = 0;
    bool open = true;
    for (size_t i = 0; i < ncuts && open; i++) {
        size_t to = cuts[i] < n ? cuts[i] : n;
        if (to < at)
            fz_fail("cuts out of order");
        open = send_piece(fd, data + at, to - at, out) && wait_read(fd, out);
        at = to;
    }
    if (open && at < n)
        open = send_piece(fd, data + at, n - at, out);
    (void)shutdown(fd, SHUT_WR);
    uint64_t end = fz_now_ms() + FZ_WAIT_MS;
    while (drain(fd, out)) {
        if (fz_now_ms() > end)
            fz_fail("hang: the server never closed after the client did");
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        (void)poll(&pf, 1, 10);
    }
    close(fd);
}

/* --- Normalising ---------------------------------------------------------- */

void fz_normalise(struct fz_buf *b)
{
    static const char date[] = "\r\nDate: ";
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    const size_t dl = sizeof(date) - 1, vl = 29, cl = sizeof(cont) - 1;
    size_t w = 0;
    for (size_t r = 0; r < b->len;) {
        if (b->len - r >= cl && memcmp(b->p + r, cont, cl) == 0) {
            r += cl;
            continue;
        }
        if (b->len - r >= dl + vl && memcmp(b->p + r, date, dl) == 0) {
            memmove(b->p + w, b->p + r, dl);
            memset(b->p + w + dl, 'D', vl);
            w += dl + vl;
            r += dl + vl;
            continue;
        }
        b->p[w++] = b->p[r++];
    }
    b->len = w;
}
