/* SPDX-License-Identifier: MIT */
/*
 * Load client for the TCP echo benchmark (perf/echo_bench.sh): opens C
 * connections to an echo server on a loopback address, keeps D messages of
 * S bytes in flight on each (a new one goes out whenever one has come back),
 * warms up for W seconds, then counts echoed messages for T seconds. The
 * byte stream is a fixed pattern, so every echoed byte is checked for
 * content and order. With --server-pid it also reads the server's CPU time
 * (utime + stime from /proc/<pid>/stat) at the start and end of the measured
 * window. Prints one line of key=value results; exits non-zero on a failed
 * connect, a closed connection or a mismatch. Usage:
 *   echo_load --port P [--host 127.0.0.1] [--connections C] [--depth D]
 *             [--size S] [--seconds T] [--warmup W] [--server-pid PID]
 * Single-threaded (epoll); it does not use the library, so it measures every
 * server the same way.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PERIOD 251u /* pattern period: prime, so it never aligns with S */
#define IOBUF (64u * 1024u)
#define MAX_CONNS 10000u
#define MAX_SIZE (1u << 20)
#define MAX_DEPTH 4096u
#define CONNECT_TIMEOUT_MS 5000

struct opts {
    const char *host;
    int port;
    unsigned conns, depth, size;
    double seconds, warmup;
    long server_pid;
};

struct conn {
    int fd;
    int want_out;     /* EPOLLOUT is armed */
    uint64_t tx, rx;  /* stream bytes sent / received */
    uint64_t tx_goal; /* (messages back + depth) * size */
};

struct load {
    struct opts o;
    struct conn *c;
    int ep;
    unsigned char *pat; /* PERIOD + IOBUF bytes of the repeating pattern */
    unsigned char *buf; /* read buffer */
    uint64_t errors;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_load --port P [--host 127.0.0.1] "
                    "[--connections C] [--depth D] [--size S] [--seconds T] "
                    "[--warmup W] [--server-pid PID]\n");
}

/* Parses an unsigned number in [lo, hi]; returns 0 or -EINVAL. */
static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_opt(struct opts *o, const char *k, const char *v)
{
    double d;
    if (!strcmp(k, "--host")) {
        o->host = v;
        return 0;
    }
    struct {
        const char *name;
        double lo, hi;
    } t[] = {{"--port", 1, 65535},        {"--connections", 1, MAX_CONNS},
             {"--depth", 1, MAX_DEPTH},   {"--size", 1, MAX_SIZE},
             {"--seconds", 0.1, 3600},    {"--warmup", 0, 600},
             {"--server-pid", 1, 1 << 30}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(k, t[i].name))
            continue;
        if (parse_num(v, t[i].lo, t[i].hi, &d))
            return -EINVAL;
        switch (i) {
        case 0:
            o->port = (int)d;
            break;
        case 1:
            o->conns = (unsigned)d;
            break;
        case 2:
            o->depth = (unsigned)d;
            break;
        case 3:
            o->size = (unsigned)d;
            break;
        case 4:
            o->seconds = d;
            break;
        case 5:
            o->warmup = d;
            break;
        default:
            o->server_pid = (long)d;
            break;
        }
        return 0;
    }
    return -EINVAL;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.host = "127.0.0.1",
                       .conns = 50,
                       .depth = 1,
                       .size = 64,
                       .seconds = 5,
                       .warmup = 1};
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc || parse_opt(o, argv[i], argv[i + 1])) {
            usage();
            return -EINVAL;
        }
    }
    if (!o->port) {
        usage();
        return -EINVAL;
    }
    return 0;
}

/* Loopback only: 127.0.0.0/8. */
static int make_addr(const char *host, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1 ||
        (ntohl(sa->sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "echo_load: %s is not a loopback address\n", host);
        return -EINVAL;
    }
    return 0;
}

/* Blocking connect with a send timeout (which bounds connect), then
 * non-blocking with TCP_NODELAY. Returns the fd or -errno. */
static int dial(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_MS / 1000};
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
        connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
        fcntl(fd, F_SETFL, O_NONBLOCK)) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int arm(struct load *l, unsigned i, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.u32 = i};
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, l->c[i].fd, &ev))
        return -errno;
    l->c[i].want_out = want_out;
    return 0;
}

/* Sends until tx reaches tx_goal or the socket is full. */
static int pump(struct load *l, unsigned i)
{
    struct conn *c = &l->c[i];
    while (c->tx < c->tx_goal) {
        uint64_t n = c->tx_goal - c->tx;
        if (n > IOBUF)
            n = IOBUF;
        ssize_t w = write(c->fd, l->pat + c->tx % PERIOD, (size_t)n);
        if (w < 0 && errno == EAGAIN)
            return c->want_out ? 0 : arm(l, i, 1);
        if (w < 0)
            return -errno;
        c->tx += (uint64_t)w;
    }
    return c->want_out ? arm(l, i, 0) : 0;
}

/* Reads what arrived, checks it against the pattern, refills the pipe. */
static int drain(struct load *l, unsigned i)
{
    struct conn *c = &l->c[i];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t r = read(c->fd, l->buf, IOBUF);
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0)
            return r == 0 ? -ECONNRESET : -errno;
        if (c->rx + (uint64_t)r > c->tx ||
            memcmp(l->buf, l->pat + c->rx % PERIOD, (size_t)r))
            return -EPROTO;
        c->rx += (uint64_t)r;
        if (r < (ssize_t)IOBUF)
            break;
    }
    c->tx_goal = (c->rx / l->o.size + l->o.depth) * l->o.size;
    return pump(l, i);
}

static int open_all(struct load *l)
{
    struct sockaddr_in sa;
    int rc = make_addr(l->o.host, l->o.port, &sa);
    if (rc)
        return rc;
    for (unsigned i = 0; i < l->o.conns; i++) {
        int fd = dial(&sa);
        if (fd < 0) {
            fprintf(stderr, "echo_load: connect %u: %s\n", i, strerror(-fd));
            return fd;
        }
        l->c[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev))
            return -errno;
    }
    return 0;
}

static uint64_t messages(const struct load *l)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < l->o.conns; i++)
        n += l->c[i].rx / l->o.size;
    return n;
}

/* utime + stime of a process in seconds, or -1. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                     "%lu %lu",
                     &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return -1;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Runs the event loop until `until` (monotonic seconds). */
static int run_until(struct load *l, double until)
{
    struct epoll_event evs[256];
    for (double t = now_s(); t < until; t = now_s()) {
        int ms = (int)((until - t) * 1000) + 1;
        int n = epoll_wait(l->ep, evs, 256, ms);
        if (n < 0 && errno != EINTR)
            return -errno;
        for (int k = 0; k < n; k++) {
            unsigned i = evs[k].data.u32;
            int rc = (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                         ? drain(l, i)
                         : pump(l, i);
            if (rc) {
                fprintf(stderr, "echo_load: connection %u: %s\n", i,
                        rc == -EPROTO ? "echo mismatch" : strerror(-rc));
                return rc;
            }
        }
    }
    return 0;
}

static int start_traffic(struct load *l)
{
    for (unsigned i = 0; i < l->o.conns; i++) {
        l->c[i].tx_goal = (uint64_t)l->o.depth * l->o.size;
        int rc = pump(l, i);
        if (rc)
            return rc;
    }
    return 0;
}

static int measure(struct load *l)
{
    int rc = start_traffic(l);
    if (!rc)
        rc = run_until(l, now_s() + l->o.warmup);
    if (rc)
        return rc;
    uint64_t m0 = messages(l);
    double srv0 = l->o.server_pid ? proc_cpu_s(l->o.server_pid) : 0;
    double cli0 = self_cpu_s(), t0 = now_s();
    rc = run_until(l, t0 + l->o.seconds);
    if (rc)
        return rc;
    double dt = now_s() - t0, cli = self_cpu_s() - cli0;
    double srv = l->o.server_pid ? proc_cpu_s(l->o.server_pid) - srv0 : 0;
    uint64_t m = messages(l) - m0;
    printf("messages=%llu seconds=%.3f msgs_per_s=%.0f client_cpu_s=%.3f "
           "server_cpu_s=%.3f server_ns_per_msg=%.1f conns=%u depth=%u "
           "size=%u\n",
           (unsigned long long)m, dt, (double)m / dt, cli, srv,
           m ? srv * 1e9 / (double)m : 0.0, l->o.conns, l->o.depth, l->o.size);
    return m ? 0 : -EIO;
}

static int setup(struct load *l)
{
    l->c = calloc(l->o.conns, sizeof(*l->c));
    l->pat = malloc(PERIOD + IOBUF);
    l->buf = malloc(IOBUF);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!l->c || !l->pat || !l->buf || l->ep < 0)
        return -ENOMEM;
    for (unsigned i = 0; i < PERIOD + IOBUF; i++)
        l->pat[i] = (unsigned char)((i % PERIOD) * 7 + 3);
    for (unsigned i = 0; i < l->o.conns; i++)
        l->c[i].fd = -1;
    return 0;
}

static void teardown(struct load *l)
{
    for (unsigned i = 0; l->c && i < l->o.conns; i++)
        if (l->c[i].fd >= 0)
            close(l->c[i].fd);
    if (l->ep >= 0)
        close(l->ep);
    free(l->c);
    free(l->pat);
    free(l->buf);
}

int main(int argc, char **argv)
{
    struct load l = {.ep = -1};
    if (parse_args(&l.o, argc, argv))
        return 2;
    int rc = setup(&l);
    if (!rc)
        rc = open_all(&l);
    if (!rc)
        rc = measure(&l);
    if (rc && rc != -EPROTO && rc != -EIO)
        fprintf(stderr, "echo_load: %s\n", strerror(-rc));
    teardown(&l);
    return rc ? 1 : 0;
}
