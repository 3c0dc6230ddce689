/* SPDX-License-Identifier: MIT */
/*
 * The load side of the soak test (perf/soak.sh): keeps C connections open
 * to perf/http_server on 127.0.0.1 for T seconds, with churn, and checks
 * every response. Most connections are "churn" connections: connect (from
 * one of S source addresses 127.0.0.1..127.0.0.S, bound before connect so
 * churn spreads over S address pairs' ephemeral ports and TIME_WAIT), send
 * 1..R keep-alive requests one at a time with a random think time between
 * them (GET /plaintext, or now and then a POST /echo), then close, and
 * reconnect at once; half of the connections end with a request carrying
 * "Connection: close", so the server closes first, the others are closed
 * by the client. P of the C connections are "pipeline" connections: every
 * B ms they write D requests back to back (GET /plaintext, POST /echo
 * with a Content-Length body, POST /echo with a chunked body of 1..4
 * chunks), the write cut at a random byte with the rest sent one tick
 * later, and reconnect after a few batches. Every response must be 200
 * with a Content-Length body equal to the expected one ("Hello, World!"
 * or the echoed bytes, which differ per request), in request order, within
 * the timeout; a connect failure, a reset or early close, a bad response
 * and a timeout each count as an error of their kind. Prints a status line
 * of key=value fields every second and a final one, and exits 1 if any
 * error was counted. Usage:
 *   soak_load --port P [--connections C] [--pipelined P] [--sources S]
 *             [--seconds T] [--think-ms M] [--requests R] [--depth D]
 *             [--batch-ms B] [--timeout-ms O] [--connecting N]
 * Single-threaded, epoll, non-blocking; it does not use the library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 19500u /* under the 20,000 fds one process may hold */
#define MAX_DEPTH 64u
#define MAX_HEAD 8192u  /* a longer response head is an error */
#define MAX_ECHO 2048u  /* echo bodies are 1..MAX_ECHO bytes */
#define RBUF (1u << 18) /* one read: leftover + new bytes */
#define TICK_MS 50      /* timer resolution: think, split writes, timeouts */
#define MAX_LOGGED 20   /* errors described on stderr, then only counted */
#define EVENTS 512      /* events per epoll_wait */

enum state { CLOSED, CONNECTING, THINK, WAIT, DRAIN };
enum kind { PLAIN, ECHO_LEN, ECHO_CHUNKED };
enum err { E_CONNECT, E_RESET, E_BAD, E_TIMEOUT, E_COUNT };
static const char *const err_name[E_COUNT] = {"connect", "reset", "bad",
                                              "timeout"};
static const char hello[] = "Hello, World!";

struct opts {
    unsigned port, conns, pipes, sources, requests, depth, connecting;
    double seconds, think_ms, batch_ms, timeout_ms;
};

/* One response a connection waits for. */
struct expect {
    uint32_t seed, len;
    uint8_t kind, close;
};

struct conn {
    int fd;
    uint8_t state, pipe, want_out, last_close;
    uint16_t left;          /* requests (churn) or batches (pipe) to go */
    uint16_t qhead, queued; /* responses awaited: q[qhead..] */
    double due;             /* ms: connect/response deadline or think end */
    struct expect *q;       /* ring of opts.depth (pipe) or 1 (churn) */
    char *in;               /* an incomplete response, kept between reads */
    uint32_t inlen;
    char *out; /* bytes to send: out[outoff..split) now, the rest later */
    uint32_t outlen, outoff, split;
};

struct load {
    struct opts o;
    struct conn *c;
    int ep;
    uint64_t rng;
    double t0, now, end, stop_deadline;
    int stopping;
    char *rbuf, *wbuf; /* one read; one request being built */
    unsigned open, connecting;
    uint64_t connects, closes, requests, responses, pipelined, chunked;
    uint64_t errors[E_COUNT];
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint32_t rnd(struct load *l, uint32_t n) /* uniform in [0, n) */
{
    l->rng ^= l->rng << 13;
    l->rng ^= l->rng >> 7;
    l->rng ^= l->rng << 17;
    return n ? (uint32_t)((l->rng >> 11) % n) : 0;
}

/* Byte i of the echo body of the request with this seed. */
static char body_byte(uint32_t seed, uint32_t i)
{
    uint32_t h = (seed + i) * 2654435761u;
    return (char)('a' + (h >> 24) % 26);
}

/* --- options -------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: soak_load --port P [--connections C] [--pipelined P] "
            "[--sources S]\n"
            "                 [--seconds T] [--think-ms M] [--requests R] "
            "[--depth D]\n"
            "                 [--batch-ms B] [--timeout-ms O] "
            "[--connecting N]\n");
}

static int parse_opt(struct opts *o, const char *k, const char *v)
{
    static const struct {
        const char *name;
        double lo, hi;
        size_t off;
        int is_double;
    } t[] = {
        {"--port", 1, 65535, offsetof(struct opts, port), 0},
        {"--connections", 1, MAX_CONNS, offsetof(struct opts, conns), 0},
        {"--pipelined", 0, MAX_CONNS, offsetof(struct opts, pipes), 0},
        {"--sources", 1, 254, offsetof(struct opts, sources), 0},
        {"--requests", 1, 1000, offsetof(struct opts, requests), 0},
        {"--depth", 1, MAX_DEPTH, offsetof(struct opts, depth), 0},
        {"--connecting", 1, 4096, offsetof(struct opts, connecting), 0},
        {"--seconds", 1, 86400, offsetof(struct opts, seconds), 1},
        {"--think-ms", 0, 600000, offsetof(struct opts, think_ms), 1},
        {"--batch-ms", 0, 600000, offsetof(struct opts, batch_ms), 1},
        {"--timeout-ms", 100, 600000, offsetof(struct opts, timeout_ms), 1},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(k, t[i].name))
            continue;
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (errno || end == v || *end || d < t[i].lo || d > t[i].hi)
            return -EINVAL;
        char *p = (char *)o + t[i].off;
        if (t[i].is_double)
            *(double *)p = d;
        else
            *(unsigned *)p = (unsigned)d;
        return 0;
    }
    return -EINVAL;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.conns = 19000,
                       .pipes = 32,
                       .sources = 16,
                       .requests = 5,
                       .depth = 16,
                       .connecting = 256,
                       .seconds = 600,
                       .think_ms = 5000,
                       .batch_ms = 500,
                       .timeout_ms = 10000};
    for (int i = 1; i < argc; i += 2)
        if (i + 1 >= argc || parse_opt(o, argv[i], argv[i + 1]))
            return -EINVAL;
    return o->port && o->pipes <= o->conns ? 0 : -EINVAL;
}

/* --- errors and closing --------------------------------------------------- */

static void conn_reset_io(struct conn *c)
{
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->inlen = c->outlen = c->outoff = c->split = 0;
    c->qhead = c->queued = 0;
    c->want_out = 0;
}

/* Closes c (if open) and schedules its reconnection. */
static void conn_close(struct load *l, struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        if (c->state == CONNECTING)
            l->connecting--;
        else
            l->open--;
        l->closes++;
    }
    c->fd = -1;
    c->state = CLOSED;
    c->due = l->now;
    conn_reset_io(c);
}

static void fail(struct load *l, struct conn *c, enum err e, const char *why)
{
    l->errors[e]++;
    uint64_t total = 0;
    for (int i = 0; i < E_COUNT; i++)
        total += l->errors[i];
    if (total <= MAX_LOGGED)
        fprintf(stderr, "soak_load: t=%.1f s connection %ld (%s): %s: %s\n",
                (l->now - l->t0) / 1e3, (long)(c - l->c),
                c->pipe ? "pipelined" : "churn", err_name[e], why);
    conn_close(l, c);
}

/* --- sending -------------------------------------------------------------- */

static int arm(struct load *l, struct conn *c, int want_out)
{
    if (c->want_out == want_out)
        return 0;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - l->c)};
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev))
        return -errno;
    c->want_out = (uint8_t)want_out;
    return 0;
}

/* Writes out[outoff..split); frees out once all of it is sent. */
static void flush(struct load *l, struct conn *c)
{
    while (c->outoff < c->split) {
        ssize_t w =
            send(c->fd, c->out + c->outoff, c->split - c->outoff, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            if (arm(l, c, 1))
                fail(l, c, E_RESET, strerror(errno));
            return;
        }
        if (w < 0) {
            fail(l, c, E_RESET, strerror(errno));
            return;
        }
        c->outoff += (uint32_t)w;
    }
    if (c->outoff == c->outlen) {
        free(c->out);
        c->out = NULL;
        c->outlen = c->outoff = c->split = 0;
    }
    if (arm(l, c, 0))
        fail(l, c, E_RESET, strerror(errno));
}

/* Entries of c's response ring. */
static unsigned ring(const struct load *l, const struct conn *c)
{
    return c->pipe ? l->o.depth : 1;
}

/* Appends one request to wbuf at *n and its expectation to c's ring. */
static void build(struct load *l, struct conn *c, enum kind k, int close_it,
                  size_t *n)
{
    struct expect *e = &c->q[(c->qhead + c->queued++) % ring(l, c)];
    *e = (struct expect){.seed = rnd(l, UINT32_MAX),
                         .len = k == PLAIN ? sizeof(hello) - 1
                                           : 1 + rnd(l, MAX_ECHO),
                         .kind = (uint8_t)k,
                         .close = (uint8_t)close_it};
    char *p = l->wbuf + *n;
    const char *conn = close_it ? "Connection: close\r\n" : "";
    if (k == PLAIN) {
        p +=
            sprintf(p, "GET /plaintext HTTP/1.1\r\nHost: soak\r\n%s\r\n", conn);
    } else if (k == ECHO_LEN) {
        p += sprintf(p,
                     "POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Type: "
                     "text/plain\r\nContent-Length: %u\r\n%s\r\n",
                     e->len, conn);
        for (uint32_t i = 0; i < e->len; i++)
            *p++ = body_byte(e->seed, i);
    } else {
        p += sprintf(p,
                     "POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding:"
                     " chunked\r\n%s\r\n",
                     conn);
        uint32_t pieces = 1 + rnd(l, 4), i = 0;
        for (uint32_t k2 = 0; k2 < pieces && i < e->len; k2++) {
            uint32_t len =
                k2 + 1 == pieces ? e->len - i : 1 + rnd(l, e->len - i);
            p += sprintf(p, "%x\r\n", len);
            for (uint32_t j = 0; j < len; j++)
                *p++ = body_byte(e->seed, i + j);
            p += sprintf(p, "\r\n");
            i += len;
        }
        p += sprintf(p, "0\r\n\r\n");
    }
    *n = (size_t)(p - l->wbuf);
}

/* Queues wbuf[0..n) on c, the part after split for the next tick. */
static void queue(struct load *l, struct conn *c, size_t n, size_t split)
{
    char *out = realloc(c->out, c->outlen + n);
    if (!out) {
        fail(l, c, E_BAD, "out of memory");
        return;
    }
    memcpy(out + c->outlen, l->wbuf, n);
    c->out = out;
    c->outlen += (uint32_t)n;
    c->split = c->outlen - (uint32_t)(n - split);
    l->requests += c->queued;
    c->state = WAIT;
    c->due = l->now + l->o.timeout_ms;
    flush(l, c);
}

/* The next request of a churn connection. */
static void send_churn(struct load *l, struct conn *c)
{
    size_t n = 0;
    int last = --c->left == 0;
    int close_it = last && c->last_close;
    build(l, c, rnd(l, 8) ? PLAIN : ECHO_LEN, close_it, &n);
    queue(l, c, n, n);
}

/* The next batch of a pipeline connection, cut at a random byte. */
static void send_batch(struct load *l, struct conn *c)
{
    size_t n = 0;
    int last = --c->left == 0;
    for (unsigned i = 0; i < l->o.depth; i++) {
        uint32_t r = rnd(l, 4);
        enum kind k = r < 2 ? PLAIN : r == 2 ? ECHO_LEN : ECHO_CHUNKED;
        build(l, c, k, last && c->last_close && i + 1 == l->o.depth, &n);
    }
    queue(l, c, n, rnd(l, 2) ? n : 1 + rnd(l, (uint32_t)n - 1));
}

static void next_request(struct load *l, struct conn *c)
{
    if (l->stopping) {
        conn_close(l, c);
        return;
    }
    if (c->pipe)
        send_batch(l, c);
    else
        send_churn(l, c);
}

/* --- connecting ----------------------------------------------------------- */

static void conn_open(struct load *l, struct conn *c)
{
    unsigned i = (unsigned)(c - l->c);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = src;
    src.sin_addr.s_addr = htonl(0x7f000001u + i % l->o.sources);
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    dst.sin_port = htons((uint16_t)l->o.port);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail(l, c, E_CONNECT, strerror(errno));
        return;
    }
    c->fd = fd;
    c->state = CONNECTING;
    l->connecting++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = i};
    /* No port at bind: connect() picks it per 4-tuple, so each source
     * address has the whole ephemeral range towards the server. */
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                   sizeof(one)) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&src, sizeof(src)) ||
        (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) &&
         errno != EINPROGRESS) ||
        epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev)) {
        fail(l, c, E_CONNECT, strerror(errno));
        return;
    }
    l->connects++;
    c->due = l->now + l->o.timeout_ms;
}

/* The connect finished (or failed): start the first request. */
static void conn_established(struct load *l, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
        fail(l, c, E_CONNECT, strerror(err ? err : errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN,
                             .data.u32 = (uint32_t)(c - l->c)};
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev)) {
        fail(l, c, E_CONNECT, strerror(errno));
        return;
    }
    l->connecting--;
    l->open++;
    c->want_out = 0;
    c->left = (uint16_t)(c->pipe ? 1 + rnd(l, 8) : 1 + rnd(l, l->o.requests));
    c->last_close = (uint8_t)rnd(l, 2);
    next_request(l, c);
}

/* --- receiving ------------------------------------------------------------ */

/* Finds a header field's value in head[0..n) (which ends in CRLFCRLF). */
static const char *field(const char *head, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = memchr(head, '\n', n); p && p + 1 < head + n;
         p = memchr(p + 1, '\n', (size_t)(head + n - p - 1)))
        if (!strncasecmp(p + 1, name, len) && p[1 + len] == ':')
            return p + 2 + len;
    return NULL;
}

/* Checks one whole response against e. Returns NULL or what is wrong. */
static const char *check(const struct expect *e, const char *head, size_t hlen,
                         const char *body, size_t blen)
{
    if (hlen < 12 || memcmp(head, "HTTP/1.1 200 ", 13))
        return "status is not 200";
    if (blen != e->len)
        return "wrong body length (or out of order)";
    if (e->kind == PLAIN && memcmp(body, hello, blen))
        return "wrong /plaintext body";
    for (uint32_t i = 0; e->kind != PLAIN && i < e->len; i++)
        if (body[i] != body_byte(e->seed, i))
            return "wrong /echo body (or out of order)";
    const char *conn = field(head, hlen, "Connection");
    if (e->close && (!conn || strncasecmp(conn, " close", 6)))
        return "no Connection: close on the last response";
    return NULL;
}

/* Parses one response at p[0..n). Returns its length, 0 if incomplete,
 * or -1 after failing c. */
static long take_response(struct load *l, struct conn *c, const char *p,
                          size_t n)
{
    const char *end = memmem(p, n < MAX_HEAD ? n : MAX_HEAD, "\r\n\r\n", 4);
    if (!end) {
        if (n < MAX_HEAD)
            return 0;
        fail(l, c, E_BAD, "response head too long");
        return -1;
    }
    size_t hlen = (size_t)(end - p) + 4;
    const char *cl = field(p, hlen, "Content-Length");
    char *stop;
    unsigned long blen = cl ? strtoul(cl, &stop, 10) : 0;
    if (!cl || blen > MAX_ECHO || field(p, hlen, "Transfer-Encoding")) {
        fail(l, c, E_BAD, "no usable Content-Length");
        return -1;
    }
    if (n < hlen + blen)
        return 0;
    const struct expect *e = &c->q[c->qhead];
    const char *why = check(e, p, hlen, p + hlen, blen);
    if (why) {
        fail(l, c, E_BAD, why);
        return -1;
    }
    l->responses++;
    l->pipelined += c->pipe;
    l->chunked += e->kind == ECHO_CHUNKED;
    c->qhead = (uint16_t)((c->qhead + 1) % ring(l, c));
    c->queued--;
    return (long)(hlen + blen);
}

/* All responses of a request (or batch) are in: think, close or drain. */
static void round_done(struct load *l, struct conn *c, int closed_by_server)
{
    if (closed_by_server) {
        c->state = DRAIN; /* wait for the server's FIN */
        c->due = l->now + l->o.timeout_ms;
    } else if (c->left == 0 || l->stopping) {
        conn_close(l, c);
    } else { /* churn: uniform in [0, 2 * think_ms], mean think_ms */
        c->state = THINK;
        c->due = l->now + (c->pipe ? l->o.batch_ms
                                   : rnd(l, (uint32_t)(2 * l->o.think_ms) + 1));
    }
}

/* Consumes whole responses from p[0..n); keeps the rest in c->in. */
static void consume(struct load *l, struct conn *c, const char *p, size_t n)
{
    while (n) {
        if (c->state != WAIT || !c->queued) {
            fail(l, c, E_BAD, "bytes nobody asked for");
            return;
        }
        int was_close = c->q[c->qhead].close;
        long used = take_response(l, c, p, n);
        if (used <= 0) {
            if (used == 0 && !(c->in = malloc(n)))
                fail(l, c, E_BAD, "out of memory");
            else if (used == 0)
                memcpy(c->in, p, c->inlen = (uint32_t)n);
            return;
        }
        p += used;
        n -= (size_t)used;
        if (!c->queued && c->outoff == c->outlen)
            round_done(l, c, was_close);
    }
}

static void on_readable(struct load *l, struct conn *c)
{
    size_t have = c->inlen;
    if (have)
        memcpy(l->rbuf, c->in, have);
    free(c->in);
    c->in = NULL;
    c->inlen = 0;
    ssize_t r = recv(c->fd, l->rbuf + have, RBUF - have, 0);
    if (r < 0 && errno == EAGAIN) {
        consume(l, c, l->rbuf, have);
        return;
    }
    if (r < 0) {
        fail(l, c, E_RESET, strerror(errno));
        return;
    }
    if (r == 0) {
        if (c->state == DRAIN && !have)
            conn_close(l, c);
        else
            fail(l, c, E_RESET, "closed by the server before a response");
        return;
    }
    consume(l, c, l->rbuf, have + (size_t)r);
}

/* --- the loop ------------------------------------------------------------- */

static void on_event(struct load *l, struct conn *c, uint32_t ev)
{
    if (c->state == CONNECTING) {
        conn_established(l, c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(l, c);
    if (c->fd >= 0 && (ev & EPOLLOUT) && c->state != CLOSED)
        flush(l, c);
}

/* Runs timers: deadlines, think ends, held halves of writes, reconnects. */
static void tick(struct load *l)
{
    for (unsigned i = 0; i < l->o.conns; i++) {
        struct conn *c = &l->c[i];
        if (c->out && c->split < c->outlen && !c->want_out) {
            c->split = c->outlen;
            flush(l, c);
        }
        if (c->due > l->now)
            continue;
        if (c->state == CONNECTING)
            fail(l, c, E_TIMEOUT, "connect timed out");
        else if (c->state == WAIT || c->state == DRAIN)
            fail(l, c, E_TIMEOUT,
                 c->state == WAIT ? "no response in time"
                                  : "server did not close");
        else if (c->state == THINK)
            next_request(l, c);
        else if (c->state == CLOSED && !l->stopping &&
                 l->connecting < l->o.connecting)
            conn_open(l, c);
    }
}

static void report(struct load *l, const char *what)
{
    printf("soak_load: %s t=%.1f open=%u connecting=%u connects=%llu "
           "closes=%llu requests=%llu responses=%llu pipelined=%llu "
           "chunked=%llu err_connect=%llu err_reset=%llu err_bad=%llu "
           "err_timeout=%llu\n",
           what, (l->now - l->t0) / 1e3, l->open, l->connecting,
           (unsigned long long)l->connects, (unsigned long long)l->closes,
           (unsigned long long)l->requests, (unsigned long long)l->responses,
           (unsigned long long)l->pipelined, (unsigned long long)l->chunked,
           (unsigned long long)l->errors[E_CONNECT],
           (unsigned long long)l->errors[E_RESET],
           (unsigned long long)l->errors[E_BAD],
           (unsigned long long)l->errors[E_TIMEOUT]);
    fflush(stdout);
}

/* Stops new work at the end; done once every connection is closed. */
static int finished(struct load *l)
{
    if (!l->stopping && (l->now >= l->end || interrupted)) {
        l->stopping = 1;
        l->stop_deadline = l->now + l->o.timeout_ms + 1000;
    }
    if (!l->stopping)
        return 0;
    for (unsigned i = 0; i < l->o.conns; i++) {
        struct conn *c = &l->c[i];
        if (c->state == THINK || c->state == CONNECTING)
            conn_close(l, c); /* nothing awaited: no error */
        else if (l->now >= l->stop_deadline && c->state != CLOSED)
            fail(l, c, E_TIMEOUT, "still busy at the end");
    }
    return l->open == 0 && l->connecting == 0;
}

static int run(struct load *l)
{
    struct epoll_event evs[EVENTS];
    double next_tick = l->now, next_report = l->now + 1000;
    while (!finished(l)) {
        int n = epoll_wait(l->ep, evs, EVENTS, TICK_MS);
        if (n < 0 && errno != EINTR)
            return -errno;
        l->now = mono_ms();
        for (int k = 0; k < n; k++)
            on_event(l, &l->c[evs[k].data.u32], evs[k].events);
        if (l->now >= next_tick) {
            tick(l);
            next_tick = l->now + TICK_MS;
        }
        if (l->now >= next_report) {
            report(l, "status");
            next_report += 1000;
        }
    }
    return 0;
}

static int setup(struct load *l)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    l->c = calloc(l->o.conns, sizeof(*l->c));
    l->rbuf = malloc(RBUF);
    l->wbuf = malloc(MAX_DEPTH * (MAX_ECHO * 2 + 512));
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!l->c || !l->rbuf || !l->wbuf || l->ep < 0)
        return -ENOMEM;
    /* Pipeline connections: every stride-th, spread over the sources. */
    unsigned stride = l->o.pipes ? l->o.conns / l->o.pipes : 0;
    for (unsigned i = 0; i < l->o.conns; i++) {
        struct conn *c = &l->c[i];
        c->fd = -1;
        c->pipe =
            (uint8_t)(stride && i % stride == 0 && i / stride < l->o.pipes);
        c->q = calloc(ring(l, c), sizeof(*c->q));
        if (!c->q)
            return -ENOMEM;
    }
    l->t0 = l->now = mono_ms();
    l->end = l->t0 + l->o.seconds * 1e3;
    l->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    return 0;
}

static void teardown(struct load *l)
{
    for (unsigned i = 0; l->c && i < l->o.conns; i++) {
        if (l->c[i].fd >= 0)
            close(l->c[i].fd);
        conn_reset_io(&l->c[i]);
        free(l->c[i].q);
    }
    if (l->ep >= 0)
        close(l->ep);
    free(l->c);
    free(l->rbuf);
    free(l->wbuf);
}

int main(int argc, char **argv)
{
    struct load l = {.ep = -1};
    if (parse_args(&l.o, argc, argv)) {
        usage();
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int rc = setup(&l);
    if (!rc)
        rc = run(&l);
    if (rc)
        fprintf(stderr, "soak_load: %s\n", strerror(-rc));
    l.now = mono_ms();
    report(&l, "final");
    uint64_t errors = 0;
    for (int i = 0; i < E_COUNT; i++)
        errors += l.errors[i];
    teardown(&l);
    return rc || errors ? 1 : 0;
}
