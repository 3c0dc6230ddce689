/* SPDX-License-Identifier: MIT */
/*
 * The fan-out anchor of perf/comet_capacity.sh: the least a server must
 * do to park long-polls and answer them all on a publish, so that the
 * comet server's fan-out can be judged against this machine's. K forked
 * processes, each single-threaded with its own SO_REUSEPORT listener on
 * 127.0.0.1:PORT (one process holds at most ~20,000 fds here), speak just
 * enough HTTP/1.1 for perf/comet_load:
 *   GET /sub?...  parks the connection (no timer, nothing allocated);
 *   POST /pub?... (a body of at most MAX_BODY bytes) hands the body to
 *                 every process through its pipe and answers 200 "ok";
 * and a process that reads a body from its pipe writes one canned
 * response carrying it ("HTTP/1.1 200 OK", Content-Type, Content-Length,
 * the body) with one write() to every connection it has parked, in fd
 * order. Keep-alive throughout; anything else gets 404. The parent prints
 * "comet_epoll_min: port P pids A,B,..." and, on SIGTERM or SIGINT, stops
 * the children by PID. Usage:
 *   comet_epoll_min --port P [--procs K]
 * It does not use the library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS 64
#define MAX_BODY 64  /* a published body; one pipe write (<= PIPE_BUF) */
#define RBUF 512     /* a request head (and a /pub body) */
#define EVENTS 512   /* events per epoll_wait */
#define BACKLOG 4096 /* the listener's accept queue (somaxconn caps it) */
#define ACCEPTS 256  /* accepts per readiness of the listener */

/* One connection, indexed by its fd. */
struct conn {
    uint16_t len; /* bytes of an incomplete request in buf */
    uint8_t open, parked;
    char buf[RBUF + 1];
};

static struct conn *g_conns;
static int g_maxfd, g_ep, g_pipes[MAX_PROCS][2];
static unsigned g_procs;

static void conn_close(int fd)
{
    g_conns[fd].open = g_conns[fd].parked = 0;
    g_conns[fd].len = 0;
    close(fd);
}

/* Writes the response to every parked connection. */
static void fan_out(const char *body, size_t len)
{
    char res[256];
    int n = snprintf(res, sizeof(res),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n%.*s",
                     len, (int)len, body);
    for (int fd = 0; fd <= g_maxfd; fd++) {
        if (!g_conns[fd].parked)
            continue;
        g_conns[fd].parked = 0;
        if (write(fd, res, (size_t)n) != n)
            conn_close(fd);
    }
}

/* Reads the bodies published through this process's pipe: each is one
 * length byte and the body, written at once. */
static void on_pipe(int rfd)
{
    static unsigned char in[8192];
    static size_t have;
    ssize_t r;
    while ((r = read(rfd, in + have, sizeof(in) - have)) > 0) {
        have += (size_t)r;
        size_t at = 0;
        while (at < have && at + 1 + in[at] <= have) {
            fan_out((const char *)in + at + 1, in[at]);
            at += 1 + (size_t)in[at];
        }
        memmove(in, in + at, have - at);
        have -= at;
    }
}

static void reply(int fd, const char *res)
{
    size_t n = strlen(res);
    if (write(fd, res, n) != (ssize_t)n)
        conn_close(fd);
}

/* A /pub with body b[0..n): to every process, this one included. */
static void publish(int fd, const char *b, size_t n)
{
    unsigned char msg[1 + MAX_BODY];
    msg[0] = (unsigned char)n;
    memcpy(msg + 1, b, n);
    for (unsigned i = 0; i < g_procs; i++)
        if (write(g_pipes[i][1], msg, n + 1) != (ssize_t)(n + 1))
            fprintf(stderr, "comet_epoll_min: pipe %u: %s\n", i,
                    strerror(errno));
    reply(fd, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
}

/* Handles the complete requests in fd's buffer. */
static void on_requests(int fd)
{
    struct conn *c = &g_conns[fd];
    while (c->open && !c->parked) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end) {
            if (c->len == RBUF)
                conn_close(fd);
            return;
        }
        size_t head = (size_t)(end - c->buf) + 4, body = 0;
        char *cl = strcasestr(c->buf, "\r\nContent-Length:");
        if (cl && cl < end)
            body = strtoul(cl + 17, NULL, 10);
        if (body > MAX_BODY) {
            conn_close(fd);
            return;
        }
        if (c->len < head + body)
            return;
        if (strncmp(c->buf, "GET /sub?", 9) == 0)
            c->parked = 1;
        else if (strncmp(c->buf, "POST /pub?", 10) == 0)
            publish(fd, c->buf + head, body);
        else
            reply(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        c->len -= (uint16_t)(head + body);
        memmove(c->buf, c->buf + head + body, c->len);
    }
}

static void on_readable(int fd)
{
    struct conn *c = &g_conns[fd];
    ssize_t r = read(fd, c->buf + c->len, RBUF - c->len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        conn_close(fd);
        return;
    }
    c->len += (uint16_t)r;
    on_requests(fd);
}

static void on_accept(int lfd, int nfds)
{
    for (int i = 0; i < ACCEPTS; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (fd >= nfds || epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            continue;
        }
        g_conns[fd] = (struct conn){.open = 1};
        g_maxfd = fd > g_maxfd ? fd : g_maxfd;
    }
}

static int listener(unsigned port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(fd, BACKLOG) != 0) {
        perror("comet_epoll_min: listen");
        return -1;
    }
    return fd;
}

static int child_main(unsigned id, int lfd)
{
    struct rlimit rl;
    struct epoll_event ev[EVENTS];
    int rfd = g_pipes[id][0];
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    getrlimit(RLIMIT_NOFILE, &rl);
    int nfds = (int)rl.rlim_cur;
    g_conns = calloc((size_t)nfds, sizeof(*g_conns));
    g_ep = epoll_create1(0);
    if (!g_conns || g_ep < 0)
        return 1;
    struct epoll_event le = {.events = EPOLLIN, .data.fd = lfd};
    struct epoll_event pe = {.events = EPOLLIN, .data.fd = rfd};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &le) != 0 ||
        epoll_ctl(g_ep, EPOLL_CTL_ADD, rfd, &pe) != 0)
        return 1;
    for (;;) {
        int n = epoll_wait(g_ep, ev, EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == lfd)
                on_accept(lfd, nfds);
            else if (fd == rfd)
                on_pipe(rfd);
            else if (g_conns[fd].open)
                on_readable(fd);
        }
    }
}

static int parse_args(int argc, char **argv, unsigned *port)
{
    g_procs = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            *port = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--procs") == 0)
            g_procs = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else
            return -EINVAL;
    }
    return argc % 2 == 1 && *port && *port < 65536 && g_procs &&
                   g_procs <= MAX_PROCS
               ? 0
               : -EINVAL;
}

int main(int argc, char **argv)
{
    static pid_t kids[MAX_PROCS];
    struct rlimit rl;
    unsigned port = 0;
    int sig;
    sigset_t set;
    if (parse_args(argc, argv, &port) != 0) {
        fprintf(stderr, "usage: comet_epoll_min --port P [--procs K]\n");
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    for (unsigned i = 0; i < g_procs; i++)
        if (pipe2(g_pipes[i], O_NONBLOCK | O_CLOEXEC) != 0) {
            perror("comet_epoll_min: pipe");
            return 1;
        }
    for (unsigned i = 0; i < g_procs; i++) {
        int lfd = listener(port); /* bound before the next child: all bind */
        if (lfd < 0 || (kids[i] = fork()) < 0)
            goto stop;
        if (kids[i] == 0)
            _exit(child_main(i, lfd));
        close(lfd);
    }
    sigprocmask(SIG_BLOCK, &set, NULL);
    printf("comet_epoll_min: port %u pids ", port);
    for (unsigned i = 0; i < g_procs; i++)
        printf("%s%d", i ? "," : "", (int)kids[i]);
    printf("\n");
    fflush(stdout);
    sigwait(&set, &sig);
stop:
    for (unsigned i = 0; i < g_procs; i++) {
        if (kids[i] > 0) {
            kill(kids[i], SIGTERM);
            waitpid(kids[i], NULL, 0);
        }
    }
    return 0;
}
