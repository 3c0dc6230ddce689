/* SPDX-License-Identifier: MIT */
/*
 * The load tool of perf/comet_capacity.sh: parks N long-poll subscribers
 * (`GET /sub?ch=C HTTP/1.1`, keep-alive) on a comet server's port on
 * 127.0.0.1, then publishes M messages through `POST /pub?ch=C` on one
 * connection and measures, per message, the time from the publish until
 * the last subscriber has its response. Each subscriber re-issues its
 * long-poll as soon as a response arrives; a message is published only
 * once every subscriber has re-issued and the server processes
 * (--server-pids) have gone quiet, so that a plain /sub, which waits for
 * the next publish, is parked again. Message k's body is "m<k>": a
 * subscriber counts a body it already had as a duplicate, and at the end
 * each subscriber that lacks one of the M messages counts it as lost.
 *
 * One process holds at most ~20,000 fds here, so the connections are
 * spread over W = ceil(N / --per-proc) forked workers; worker w binds its
 * sockets to 127.0.0.(src_base + w) before connecting, so that each has
 * its own ephemeral ports. Workers count into a shared mapping (each
 * writes only its own slot); the parent sums, publishes and decides.
 * With --server-pids the parent also reads the servers' memory from /proc
 * before the connections (the baseline), once they are parked, and after
 * the messages, and the kernel's TCP and slab memory (comet_sys.c).
 *
 * Prints "#msg" lines (one per message) and one result line of key=value
 * fields; exits 1 if the run could not complete (not for losses: those
 * are counted). Usage:
 *   comet_load --port P --connections N [--messages M] [--channel C]
 *              [--per-proc 19000] [--server-pids PID,PID,...]
 *              [--settle-ms 200] [--timeout-ms 30000] [--connecting 256]
 *              [--src-base 2]
 * --messages 0 parks the subscribers, reads the memory and stops.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "comet_sys.h"

#define MAX_WORKERS 250 /* source addresses 127.0.0.2 .. 127.0.0.251 */
#define MAX_PIDS 64     /* server processes read from /proc */
#define MAX_MSGS 1000   /* messages per run */
#define RBUF 320        /* one response: ~130 B of head and the body */
#define EVENTS 512      /* events per epoll_wait */
#define TICK_MS 20      /* how often workers and parent look at the others */
#define CONNECT_TRIES 5 /* per subscriber, then it counts as failed */
#define PARK_WAIT_MS 300000 /* all subscribers parked within 5 minutes */
#define QUIET_MAX_MS 30000  /* the servers go quiet within 30 s */

enum cstate { C_IDLE, C_CONNECTING, C_PARKED, C_DEAD };

/* One subscriber (worker-private). */
struct conn {
    int fd;
    uint8_t state, tries;
    uint8_t waiting; /* a long-poll is outstanding */
    uint16_t len;    /* bytes of an incomplete response in buf */
    uint32_t last;   /* highest message index received */
    uint32_t unique;
    char buf[RBUF + 1];
};

/* A worker's counters; written by that worker only, read by the parent
 * (relaxed: the parent only needs each value eventually). */
struct wslot {
    _Atomic uint64_t connected, failed, closed, outstanding, timeouts, bad,
        dups, unique;
    _Atomic uint64_t got[MAX_MSGS + 1];
    _Atomic int64_t first_ns[MAX_MSGS + 1], last_ns[MAX_MSGS + 1];
};

struct shared {
    _Atomic int stop; /* parent: the workers exit */
    struct wslot w[MAX_WORKERS];
};

static struct opts {
    unsigned port, n, m, per_proc, settle_ms, timeout_ms, connecting;
    unsigned src_base, npids;
    const char *channel;
    pid_t pids[MAX_PIDS];
} o = {0, 0, 20, 19000, 200, 30000, 256, 2, 0, "load", {0}};

static struct shared *g_sh;
static char g_req[128];
static size_t g_req_len;

/* --- worker ----------------------------------------------------------- */

struct worker {
    unsigned id, n, connecting, *todo, ntodo;
    int ep;
    struct conn *c;
    struct wslot *s;
    uint64_t outstanding, closed;
};

static void conn_close(struct worker *w, struct conn *c, int counted)
{
    if (c->waiting)
        w->outstanding--;
    c->waiting = 0;
    close(c->fd);
    c->fd = -1;
    c->state = C_DEAD;
    if (counted) {
        w->closed++;
        atomic_store_explicit(&w->s->closed, w->closed, memory_order_relaxed);
    }
}

static void conn_start(struct worker *w, unsigned i)
{
    struct conn *c = &w->c[i];
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = src;
    int one = 1;
    src.sin_addr.s_addr = htonl(0x7f000000u | (o.src_base + w->id));
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dst.sin_port = htons((uint16_t)o.port);
    c->tries++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        goto fail;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
        (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 &&
         errno != EINPROGRESS))
        goto fail;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = i};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        goto fail;
    c->state = C_CONNECTING;
    w->connecting++;
    return;
fail:
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->tries < CONNECT_TRIES) {
        w->todo[w->ntodo++] = i; /* again, after the others */
        return;
    }
    c->state = C_DEAD;
    atomic_fetch_add_explicit(&w->s->failed, 1, memory_order_relaxed);
}

/* Sends the long-poll. Returns: 0, or -EIO (the connection is closed). */
static int conn_request(struct worker *w, struct conn *c)
{
    if (write(c->fd, g_req, g_req_len) != (ssize_t)g_req_len) {
        conn_close(w, c, 1);
        return -EIO;
    }
    c->waiting = 1;
    w->outstanding++;
    return 0;
}

static void conn_connected(struct worker *w, unsigned i)
{
    struct conn *c = &w->c[i];
    int err = 0;
    socklen_t len = sizeof(err);
    w->connecting--;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    if (err || epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->state = C_IDLE;
        if (c->tries < CONNECT_TRIES) {
            w->todo[w->ntodo++] = i;
        } else {
            c->state = C_DEAD;
            atomic_fetch_add_explicit(&w->s->failed, 1, memory_order_relaxed);
        }
        return;
    }
    c->state = C_PARKED;
    atomic_fetch_add_explicit(&w->s->connected, 1, memory_order_relaxed);
    conn_request(w, c);
}

/* Content-Length of the head h[0..n), or -1. */
static long content_length(const char *h, size_t n)
{
    static const char key[] = "\r\ncontent-length:";
    for (size_t i = 0; i + sizeof(key) - 1 < n; i++)
        if (strncasecmp(h + i, key, sizeof(key) - 1) == 0)
            return strtol(h + i + sizeof(key) - 1, NULL, 10);
    return -1;
}

/* One complete response: status and body. Returns: 0, or -EPROTO. */
static int on_response(struct worker *w, struct conn *c, int status,
                       const char *body, size_t len)
{
    struct wslot *s = w->s;
    if (status == 204) { /* the server's poll timeout: poll again */
        atomic_fetch_add_explicit(&s->timeouts, 1, memory_order_relaxed);
        return 0;
    }
    char num[16];
    if (status != 200 || len < 2 || len >= sizeof(num) || body[0] != 'm')
        return -EPROTO;
    memcpy(num, body + 1, len - 1);
    num[len - 1] = '\0';
    unsigned long k = strtoul(num, NULL, 10);
    if (k < 1 || k > o.m)
        return -EPROTO;
    if (k <= c->last) {
        atomic_fetch_add_explicit(&s->dups, 1, memory_order_relaxed);
        return 0;
    }
    int64_t t = comet_now_ns();
    c->last = (uint32_t)k;
    c->unique++;
    atomic_fetch_add_explicit(&s->unique, 1, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&s->got[k], 1, memory_order_relaxed) == 0)
        atomic_store_explicit(&s->first_ns[k], t, memory_order_relaxed);
    atomic_store_explicit(&s->last_ns[k], t, memory_order_relaxed);
    return 0;
}

/* Parses the complete responses in c->buf, re-issuing the long-poll after
 * each. Returns: 0, or -EPROTO / -EIO (the connection is closed). */
static int conn_parse(struct worker *w, struct conn *c)
{
    for (;;) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end)
            return c->len == RBUF ? -EPROTO : 0;
        size_t head = (size_t)(end - c->buf) + 4;
        long body = content_length(c->buf, head);
        if (strncmp(c->buf, "HTTP/1.1 ", 9) != 0 || body < 0 ||
            head + (size_t)body > RBUF)
            return -EPROTO;
        if (c->len < head + (size_t)body)
            return 0;
        c->waiting = 0;
        w->outstanding--;
        if (on_response(w, c, atoi(c->buf + 9), c->buf + head, (size_t)body) !=
            0)
            return -EPROTO;
        c->len -= (uint16_t)(head + (size_t)body);
        memmove(c->buf, c->buf + head + body, c->len);
        if (conn_request(w, c) != 0)
            return -EIO;
    }
}

static void conn_readable(struct worker *w, struct conn *c)
{
    ssize_t r = read(c->fd, c->buf + c->len, RBUF - c->len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        conn_close(w, c, 1);
        return;
    }
    c->len += (uint16_t)r;
    int rc = conn_parse(w, c);
    if (rc == -EPROTO) {
        atomic_fetch_add_explicit(&w->s->bad, 1, memory_order_relaxed);
        conn_close(w, c, 1);
    }
}

static void worker_loop(struct worker *w)
{
    struct epoll_event ev[EVENTS];
    while (!atomic_load_explicit(&g_sh->stop, memory_order_relaxed)) {
        while (w->ntodo && w->connecting < o.connecting) {
            unsigned i = w->todo[--w->ntodo];
            conn_start(w, i);
        }
        int n = epoll_wait(w->ep, ev, EVENTS, TICK_MS);
        for (int i = 0; i < n; i++) {
            struct conn *c = &w->c[ev[i].data.u32];
            if (c->state == C_CONNECTING)
                conn_connected(w, ev[i].data.u32);
            else if (c->state == C_PARKED)
                conn_readable(w, c);
        }
        atomic_store_explicit(&w->s->outstanding, w->outstanding,
                              memory_order_relaxed);
    }
}

static int worker_main(unsigned id, unsigned n)
{
    struct worker w = {.id = id, .n = n, .s = &g_sh->w[id]};
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent */
    w.c = calloc(n, sizeof(*w.c));
    w.todo = malloc(n * sizeof(*w.todo));
    w.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!w.c || !w.todo || w.ep < 0) {
        fprintf(stderr, "comet_load: worker %u: out of memory\n", id);
        return 1;
    }
    for (unsigned i = 0; i < n; i++) /* popped from the end: 0 first */
        w.todo[w.ntodo++] = n - 1 - i;
    worker_loop(&w);
    return 0; /* exit closes every socket */
}

/* --- parent: sums, publishing ----------------------------------------- */

static unsigned nworkers;

/* The sum over the workers of the counter at offset off of a slot. */
static uint64_t sum(size_t off)
{
    uint64_t s = 0;
    for (unsigned i = 0; i < nworkers; i++)
        s += atomic_load_explicit(
            (_Atomic uint64_t *)((char *)&g_sh->w[i] + off),
            memory_order_relaxed);
    return s;
}
#define SUM(f) sum(offsetof(struct wslot, f))

static uint64_t live(void)
{
    return SUM(connected) - SUM(closed);
}

/* Waits until every subscriber has connected (or failed) and has a
 * long-poll outstanding. Returns: 0, -ETIMEDOUT. */
static int wait_parked(unsigned max_ms)
{
    double t0 = comet_now_ms();
    for (;;) {
        uint64_t done = SUM(connected) + SUM(failed);
        if (done == o.n && SUM(outstanding) == live())
            return 0;
        if (comet_now_ms() - t0 > max_ms)
            return -ETIMEDOUT;
        comet_sleep_ms(TICK_MS);
    }
}

static int pub_open(void)
{
    struct sockaddr_in dst = {.sin_family = AF_INET};
    struct timeval tv = {10, 0};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dst.sin_port = htons((uint16_t)o.port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Publishes "m<k>" on fd; *t0 is when its first byte was written.
 * Returns: 0 (answered 200), -EPROTO, -EIO (nothing came back). */
static int pub_send(int fd, unsigned k, int64_t *t0)
{
    char req[256], res[1024], body[16];
    int bl = snprintf(body, sizeof(body), "m%u", k);
    int rl = snprintf(req, sizeof(req),
                      "POST /pub?ch=%s HTTP/1.1\r\nHost: load\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      o.channel, bl, body);
    *t0 = comet_now_ns();
    if (write(fd, req, (size_t)rl) != rl)
        return -EIO;
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, res + len, sizeof(res) - 1 - len);
        if (r <= 0)
            return len ? -EPROTO : -EIO;
        len += (size_t)r;
        res[len] = '\0';
        char *end = strstr(res, "\r\n\r\n");
        long cl = end ? content_length(res, (size_t)(end - res) + 4) : -1;
        if (end && cl >= 0 && len >= (size_t)(end - res) + 4 + (size_t)cl) {
            if (strncmp(res, "HTTP/1.1 200", 12) == 0)
                return 0;
            fprintf(stderr, "comet_load: publish %u answered %.*s\n", k,
                    (int)strcspn(res, "\r"), res);
            return -EPROTO;
        }
        if (len == sizeof(res) - 1)
            return -EPROTO;
    }
}

/* Waits until message k reached every live subscriber and each has
 * re-issued its poll, or timeout_ms. Returns: 0, -ETIMEDOUT. */
static int wait_delivered(unsigned k)
{
    double t0 = comet_now_ms();
    for (;;) {
        uint64_t l = live();
        if (SUM(got[k]) >= l && SUM(outstanding) == l)
            return 0;
        if (comet_now_ms() - t0 > o.timeout_ms)
            return -ETIMEDOUT;
        comet_sleep_ms(1);
    }
}

/* First and last delivery of message k over the workers. */
static void msg_span(unsigned k, int64_t *first, int64_t *last)
{
    *first = INT64_MAX;
    *last = 0;
    for (unsigned i = 0; i < nworkers; i++) {
        struct wslot *s = &g_sh->w[i];
        if (!atomic_load_explicit(&s->got[k], memory_order_relaxed))
            continue;
        int64_t f = atomic_load_explicit(&s->first_ns[k], memory_order_relaxed);
        int64_t l = atomic_load_explicit(&s->last_ns[k], memory_order_relaxed);
        *first = f < *first ? f : *first;
        *last = l > *last ? l : *last;
    }
}

/* --- parent: memory ---------------------------------------------------- */

/* The servers' memory summed (and the largest process), and the kernel's. */
struct snap {
    long rss_kb, anon_kb, virt_kb, rss_max_kb, virt_max_kb;
    long fds[MAX_PIDS];
    struct comet_kmem k;
};

static void snap_take(struct snap *s)
{
    *s = (struct snap){0};
    for (unsigned i = 0; i < o.npids; i++) {
        struct comet_pmem m;
        if (comet_pmem_read(o.pids[i], &m) != 0) {
            s->fds[i] = -1;
            continue;
        }
        s->rss_kb += m.rss_kb;
        s->anon_kb += m.anon_kb;
        s->virt_kb += m.virt_kb;
        s->rss_max_kb = m.rss_kb > s->rss_max_kb ? m.rss_kb : s->rss_max_kb;
        s->virt_max_kb =
            m.virt_kb > s->virt_max_kb ? m.virt_kb : s->virt_max_kb;
        s->fds[i] = m.fds;
    }
    comet_kmem_read(&s->k);
}

/* Bytes per connection of a growth from a to b (in units of unit bytes). */
static long per(long long a, long long b, long unit, uint64_t n)
{
    if (a < 0 || b < 0 || n == 0)
        return -1;
    return (long)((b - a) * unit / (long long)n);
}

static void print_mem(const char *tag, const struct snap *b,
                      const struct snap *s, uint64_t n)
{
    printf(" %s_rss_kb=%ld %s_rss_per_conn=%ld %s_anon_per_conn=%ld"
           " %s_virt_per_conn=%ld %s_rss_proc_max_kb=%ld"
           " %s_virt_proc_max_kb=%ld",
           tag, s->rss_kb, tag, per(b->rss_kb, s->rss_kb, 1024, n), tag,
           per(b->anon_kb, s->anon_kb, 1024, n), tag,
           per(b->virt_kb, s->virt_kb, 1024, n), tag, s->rss_max_kb, tag,
           s->virt_max_kb);
}

static void print_kmem(const struct snap *b, const struct snap *s, uint64_t n)
{
    const struct comet_kmem *x = &b->k, *y = &s->k;
    printf(" k_tcp_inuse=%ld k_sockmem_per_conn=%ld k_slab_per_conn=%ld"
           " k_tcp_per_conn=%ld k_inode_per_conn=%ld k_filp_per_conn=%ld"
           " k_epi_per_conn=%ld k_dentry_per_conn=%ld",
           y->tcp_inuse - x->tcp_inuse,
           per(x->tcp_mem_pages, y->tcp_mem_pages, 4096, n),
           per(x->slab_kb, y->slab_kb, 1024, n), per(x->tcp_b, y->tcp_b, 1, n),
           per(x->sock_inode_b, y->sock_inode_b, 1, n),
           per(x->filp_b, y->filp_b, 1, n), per(x->epi_b, y->epi_b, 1, n),
           per(x->dentry_b, y->dentry_b, 1, n));
}

/* --- parent: the run ----------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank q-quantile of the sorted v[0..n). */
static int64_t quantile(const int64_t *v, unsigned n, double q)
{
    unsigned r = (unsigned)(q * n + 0.999999);
    return v[r ? r - 1 : 0];
}

/* Settles after the subscribers re-issued: quiet servers, then settle_ms. */
static void settle(void)
{
    if (o.npids)
        comet_wait_quiet(o.pids, o.npids, QUIET_MAX_MS);
    comet_sleep_ms(o.settle_ms);
}

/* Publishes the M messages. Returns: messages that reached every live
 * subscriber in time; lat[k-1] is message k's latency to the last one. */
static unsigned publish_all(int64_t *lat, unsigned *reopened)
{
    unsigned complete = 0;
    int fd = pub_open();
    for (unsigned k = 1; k <= o.m; k++) {
        int64_t t0 = 0, first, last;
        int rc = fd >= 0 ? pub_send(fd, k, &t0) : -EIO;
        if (rc == -EIO) { /* the server closed the idle connection */
            if (fd >= 0)
                close(fd);
            (*reopened)++;
            fd = pub_open();
            rc = fd >= 0 ? pub_send(fd, k, &t0) : fd;
        }
        if (rc != 0)
            fprintf(stderr, "comet_load: publish %u: %s\n", k, strerror(-rc));
        else
            complete += wait_delivered(k) == 0;
        msg_span(k, &first, &last);
        lat[k - 1] = last > t0 ? last - t0 : 0;
        printf("#msg k=%u got=%llu live=%llu first_ms=%.3f last_ms=%.3f\n", k,
               (unsigned long long)SUM(got[k]), (unsigned long long)live(),
               first > t0 && first != INT64_MAX ? (first - t0) / 1e6 : -1.0,
               lat[k - 1] / 1e6);
        fflush(stdout);
        settle();
    }
    if (fd >= 0)
        close(fd);
    return complete;
}

static void print_latency(int64_t *lat, uint64_t n)
{
    if (o.m == 0)
        return;
    qsort(lat, o.m, sizeof(*lat), cmp_i64);
    int64_t p50 = quantile(lat, o.m, 0.5);
    printf(" p50_ms=%.3f p99_ms=%.3f max_ms=%.3f deliveries_per_s=%.0f",
           p50 / 1e6, quantile(lat, o.m, 0.99) / 1e6, lat[o.m - 1] / 1e6,
           p50 > 0 ? (double)n * 1e9 / (double)p50 : 0.0);
}

static struct snap g_base; /* before the workers start */

static int run(void)
{
    struct snap parked, after, *base = &g_base;
    static int64_t lat[MAX_MSGS];
    unsigned reopened = 0, complete = 0;
    double t0 = comet_now_ms();
    if (wait_parked(PARK_WAIT_MS) != 0) {
        fprintf(stderr,
                "comet_load: not parked after %d s: %llu connected, "
                "%llu failed, %llu outstanding\n",
                PARK_WAIT_MS / 1000, (unsigned long long)SUM(connected),
                (unsigned long long)SUM(failed),
                (unsigned long long)SUM(outstanding));
        return 1;
    }
    double park_s = (comet_now_ms() - t0) / 1e3;
    settle();
    snap_take(&parked);
    uint64_t n = live();
    if (o.m) {
        complete = publish_all(lat, &reopened);
        comet_sleep_ms(o.settle_ms); /* late duplicates still count */
    }
    snap_take(&after);
    uint64_t connected = SUM(connected), unique = SUM(unique);
    printf("comet_load n=%u workers=%u connected=%llu failed=%llu "
           "closed=%llu park_s=%.2f msgs=%u complete=%u lost=%llu dups=%llu "
           "bad=%llu timeouts=%llu pub_reopened=%u",
           o.n, nworkers, (unsigned long long)connected,
           (unsigned long long)SUM(failed), (unsigned long long)SUM(closed),
           park_s, o.m, complete,
           (unsigned long long)(connected * o.m - unique),
           (unsigned long long)SUM(dups), (unsigned long long)SUM(bad),
           (unsigned long long)SUM(timeouts), reopened);
    print_latency(lat, n);
    if (o.npids) {
        printf(" srv_procs=%u srv_fds=", o.npids);
        for (unsigned i = 0; i < o.npids; i++)
            printf("%s%ld", i ? "/" : "", parked.fds[i]);
        printf(" srv_rss_base_kb=%ld srv_virt_base_kb=%ld", base->rss_kb,
               base->virt_kb);
        print_mem("parked", base, &parked, n);
        if (o.m)
            print_mem("after", base, &after, n);
        print_kmem(base, &parked, n);
    }
    printf("\n");
    return 0;
}

/* --- main ---------------------------------------------------------------- */

static int parse_pids(char *s)
{
    for (char *save, *t = strtok_r(s, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (o.npids == MAX_PIDS || atoi(t) <= 0)
            return -EINVAL;
        o.pids[o.npids++] = (pid_t)atoi(t);
    }
    return 0;
}

static int parse_args(int argc, char **argv)
{
    static const struct option lo[] = {
        {"port", required_argument, NULL, 'p'},
        {"connections", required_argument, NULL, 'n'},
        {"messages", required_argument, NULL, 'm'},
        {"channel", required_argument, NULL, 'c'},
        {"per-proc", required_argument, NULL, 'P'},
        {"server-pids", required_argument, NULL, 's'},
        {"settle-ms", required_argument, NULL, 'S'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"connecting", required_argument, NULL, 'C'},
        {"src-base", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        unsigned v = optarg ? (unsigned)strtoul(optarg, NULL, 10) : 0;
        switch (c) {
        case 'p':
            o.port = v;
            break;
        case 'n':
            o.n = v;
            break;
        case 'm':
            o.m = v;
            break;
        case 'c':
            o.channel = optarg;
            break;
        case 'P':
            o.per_proc = v;
            break;
        case 's':
            if (parse_pids(optarg) != 0)
                return -EINVAL;
            break;
        case 'S':
            o.settle_ms = v;
            break;
        case 't':
            o.timeout_ms = v;
            break;
        case 'C':
            o.connecting = v;
            break;
        case 'b':
            o.src_base = v;
            break;
        default:
            return -EINVAL;
        }
    }
    if (!o.port || o.port > 65535 || !o.n || o.m > MAX_MSGS || !o.per_proc ||
        !o.connecting || !o.src_base)
        return -EINVAL;
    nworkers = (o.n + o.per_proc - 1) / o.per_proc;
    return nworkers + o.src_base - 1 <= 254 && nworkers <= MAX_WORKERS
               ? 0
               : -EINVAL;
}

/* Raises the soft RLIMIT_NOFILE to the hard one. Returns: 0, -EMFILE if
 * a worker's share does not fit. */
static int raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -errno;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    return (o.n + nworkers - 1) / nworkers + 64 <= rl.rlim_cur ? 0 : -EMFILE;
}

int main(int argc, char **argv)
{
    static pid_t kids[MAX_WORKERS];
    int rc;
    if (parse_args(argc, argv) != 0) {
        fprintf(stderr, "usage: comet_load --port P --connections N "
                        "[--messages M] [--channel C] [--per-proc 19000] "
                        "[--server-pids PID,...] [--settle-ms MS] "
                        "[--timeout-ms MS] [--connecting B] [--src-base B]\n");
        return 2;
    }
    if ((rc = raise_nofile()) != 0) {
        fprintf(stderr, "comet_load: %s: lower --per-proc\n", strerror(-rc));
        return 2;
    }
    g_req_len = (size_t)snprintf(
        g_req, sizeof(g_req), "GET /sub?ch=%s HTTP/1.1\r\nHost: load\r\n\r\n",
        o.channel);
    g_sh = mmap(NULL, sizeof(*g_sh), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sh == MAP_FAILED) {
        perror("comet_load: mmap");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    snap_take(&g_base);
    fflush(stdout);
    for (unsigned i = 0; i < nworkers; i++) {
        unsigned n = o.n / nworkers + (i < o.n % nworkers);
        if ((kids[i] = fork()) == 0)
            _exit(worker_main(i, n));
        if (kids[i] < 0) {
            perror("comet_load: fork");
            nworkers = i;
            atomic_store(&g_sh->stop, 1);
            rc = 1;
            goto reap;
        }
    }
    rc = run();
    atomic_store(&g_sh->stop, 1);
reap:
    for (unsigned i = 0; i < nworkers; i++)
        waitpid(kids[i], NULL, 0);
    return rc;
}
