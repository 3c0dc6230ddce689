/* SPDX-License-Identifier: MIT */
/*
 * Memory per idle connection (perf/conn_memory.sh). The measuring side
 * (`conn_memory --connections N`) starts a copy of itself in `--server`
 * mode as a child process: an EventServer runtime whose listener on
 * 127.0.0.1 spawns one connection actor per accepted socket and counts the
 * actors that saw ES_MSG_CONN_OPEN. The two talk over the child's stdin and
 * stdout: "stat" answers with the server's count of open connections and
 * its mallinfo2() heap figures. The client reads the server's VmRSS, RssAnon
 * and VmSize from /proc/<pid>/status once the runtime runs (baseline), opens
 * N idle connections, waits until the server reports N open connections,
 * lets them sit for --settle-ms, reads the figures again and prints one
 * key=value line with the deltas divided by N, for the server and for its
 * own process. With --port P --pid PID it measures another server instead
 * (nginx in conn_memory.sh; --http sends one keep-alive request per
 * connection first, and the server's own count is not available). Client
 * and server are separate processes because each is limited to 20,000
 * open files. Usage:
 *   conn_memory --connections N [--threads T] [--settle-ms MS] [--alloc]
 *   conn_memory --connections N --port P --pid PID [--http]
 *   conn_memory --server [--threads T] [--seconds S] [--alloc]
 * --alloc counts the server's live allocations by size (allocator hooks)
 * and prints those that grew with the connections as "#alloc" lines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <eventserver/eventserver.h>

#define MAX_CONNS 100000u
#define PACE 500u           /* connects between looks at the server count */
#define PACE_SLACK 1000u    /* how far accepting may lag behind connecting */
#define WAIT_MS 60000       /* longest wait for the server to catch up */
#define IO_TIMEOUT_S 5      /* connect / request timeout per socket */
#define SERVER_SECONDS 600u /* a --server exits after this at the latest */

struct opts {
    int server, http, alloc;
    unsigned conns, threads, settle_ms, seconds;
    int port;
    long pid;
};

/* VmRSS, RssAnon and VmSize of a process, in kB. */
struct mem {
    long rss_kb, anon_kb, size_kb;
};

/* What the server answers to "stat". */
struct srv_stat {
    long conns;
    long long heap, mmap;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            perror("conn_memory: setrlimit");
    }
}

static int read_mem(long pid, struct mem *m)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    *m = (struct mem){-1, -1, -1};
    while (fgets(line, sizeof(line), f)) {
        sscanf(line, "VmRSS: %ld", &m->rss_kb);
        sscanf(line, "RssAnon: %ld", &m->anon_kb);
        sscanf(line, "VmSize: %ld", &m->size_kb);
    }
    fclose(f);
    return m->rss_kb < 0 || m->size_kb < 0 ? -EIO : 0;
}

/* --- allocation histogram (--alloc) --------------------------------------- */

/*
 * With --alloc the server installs counting allocator hooks
 * (es_set_allocator) that keep the library's live allocations by
 * malloc_usable_size(), in 16-byte buckets (the last one takes everything
 * from 64 KiB up). "mark" remembers the current counts; "hist" prints what
 * changed since, which tells where the bytes of a connection go.
 */
#define HIST_BUCKETS 4097
static atomic_long hist_n[HIST_BUCKETS], hist_bytes[HIST_BUCKETS];
static long mark_n[HIST_BUCKETS], mark_bytes[HIST_BUCKETS];

static size_t hist_bucket(size_t usable)
{
    return usable / 16 < HIST_BUCKETS - 1 ? usable / 16 : HIST_BUCKETS - 1;
}

static void hist_add(size_t usable, long sign)
{
    size_t b = hist_bucket(usable);
    atomic_fetch_add_explicit(&hist_n[b], sign, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_bytes[b], sign * (long)usable,
                              memory_order_relaxed);
}

static void *hist_malloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        hist_add(malloc_usable_size(p), 1);
    return p;
}

static void *hist_calloc(size_t c, size_t n)
{
    void *p = calloc(c, n);
    if (p)
        hist_add(malloc_usable_size(p), 1);
    return p;
}

static void *hist_realloc(void *p, size_t n)
{
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q && p)
        hist_add(old, -1);
    if (q)
        hist_add(malloc_usable_size(q), 1);
    return q;
}

static void hist_free(void *p)
{
    if (p)
        hist_add(malloc_usable_size(p), -1);
    free(p);
}

static void hist_mark(void)
{
    for (int i = 0; i < HIST_BUCKETS; i++) {
        mark_n[i] = atomic_load(&hist_n[i]);
        mark_bytes[i] = atomic_load(&hist_bytes[i]);
    }
    printf("ok\n");
    fflush(stdout);
}

static void hist_print(void)
{
    for (int i = 0; i < HIST_BUCKETS; i++) {
        long n = atomic_load(&hist_n[i]) - mark_n[i];
        long b = atomic_load(&hist_bytes[i]) - mark_bytes[i];
        if (n || b)
            printf("hist %d %ld %ld\n", i * 16, n, b);
    }
    printf("end\n");
    fflush(stdout);
}

/* --- server mode ---------------------------------------------------------- */

static atomic_long open_conns;

/* Counts connections; echoes anything that arrives (they stay idle). */
static int idle_conn(es_actor_t *self, es_msg_t *msg)
{
    switch (msg->type) {
    case ES_MSG_CONN_OPEN:
        atomic_fetch_add(&open_conns, 1);
        return 0;
    case ES_MSG_CONN_CLOSED:
        atomic_fetch_sub(&open_conns, 1);
        return 0;
    case ES_MSG_CONN_DATA: {
        int rc = es_conn_write(self, msg->ptr, msg->len);
        return rc == -EPIPE ? 0 : rc;
    }
    }
    return 0;
}

static void answer_stat(void)
{
    struct mallinfo2 mi = mallinfo2();
    printf("conns=%ld heap=%zu mmap=%zu\n", atomic_load(&open_conns),
           mi.uordblks, mi.hblkhd);
    fflush(stdout);
}

/* Answers "stat" lines on stdin until "quit", EOF or the deadline. */
static int serve_commands(unsigned seconds)
{
    char line[64];
    double end = now_ms() + seconds * 1000.0;
    for (double t = now_ms(); t < end; t = now_ms()) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int n = poll(&p, 1, (int)(end - t) + 1);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n <= 0)
            continue;
        if (!fgets(line, sizeof(line), stdin) || !strncmp(line, "quit", 4))
            return 0;
        if (!strncmp(line, "stat", 4))
            answer_stat();
        else if (!strncmp(line, "mark", 4))
            hist_mark();
        else if (!strncmp(line, "hist", 4))
            hist_print();
    }
    return 0;
}

static int server_main(const struct opts *o)
{
    es_runtime_opts_t ro = {.threads = o->threads ? o->threads : 1};
    es_listen_opts_t lo = {
        .address = "127.0.0.1:0", .conn.behaviour = idle_conn, .backlog = 4096};
    es_runtime_t *rt;
    es_listener_t *l = NULL;
    int rc = o->alloc ? es_set_allocator(hist_malloc, hist_realloc, hist_calloc,
                                         hist_free)
                      : 0;
    if (!rc)
        rc = es_runtime_new(&ro, &rt);
    if (rc)
        return rc;
    rc = es_listen(rt, &lo, &l);
    if (!rc)
        rc = es_runtime_start(rt);
    if (!rc) {
        printf("port %d\n", es_listener_port(l));
        fflush(stdout);
        rc = serve_commands(o->seconds ? o->seconds : SERVER_SECONDS);
    }
    if (rc)
        fprintf(stderr, "conn_memory --server: %s\n", es_strerror(rc));
    es_runtime_stop(rt);
    int wrc = es_runtime_wait(rt);
    if (l)
        es_listener_free(l);
    es_runtime_free(rt);
    return rc ? rc : (wrc == -EINVAL ? 0 : wrc);
}

/* --- the server child ----------------------------------------------------- */

struct child {
    pid_t pid;
    FILE *in, *out; /* its stdin (we write) and stdout (we read) */
};

static int child_spawn(struct child *c, unsigned threads, int alloc)
{
    int to[2], from[2];
    char t[16];
    snprintf(t, sizeof(t), "%u", threads ? threads : 1);
    if (pipe2(to, O_CLOEXEC) || pipe2(from, O_CLOEXEC))
        return -errno;
    c->pid = fork();
    if (c->pid < 0)
        return -errno;
    if (c->pid == 0) {
        if (dup2(to[0], 0) < 0 || dup2(from[1], 1) < 0)
            _exit(127);
        execl("/proc/self/exe", "conn_memory", "--server", "--threads", t,
              alloc ? "--alloc" : (char *)NULL, (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    c->in = fdopen(to[1], "w");
    c->out = fdopen(from[0], "r");
    if (!c->in || !c->out)
        return -ENOMEM;
    /* Unbuffered, so poll() on the fd sees every line not yet read. */
    return setvbuf(c->out, NULL, _IONBF, 0) ? -ENOMEM : 0;
}

/* Reads one line from the child, waiting at most WAIT_MS. */
static int child_line(struct child *c, char *buf, size_t len)
{
    struct pollfd p = {.fd = fileno(c->out), .events = POLLIN};
    if (poll(&p, 1, WAIT_MS) <= 0 || !fgets(buf, (int)len, c->out))
        return -ETIMEDOUT;
    return 0;
}

static int child_stat(struct child *c, struct srv_stat *s)
{
    char line[128];
    if (fputs("stat\n", c->in) == EOF || fflush(c->in))
        return -EPIPE;
    int rc = child_line(c, line, sizeof(line));
    if (rc)
        return rc;
    return sscanf(line, "conns=%ld heap=%lld mmap=%lld", &s->conns, &s->heap,
                  &s->mmap) == 3
               ? 0
               : -EPROTO;
}

static void child_end(struct child *c)
{
    if (c->in) {
        fputs("quit\n", c->in);
        fclose(c->in);
    }
    if (c->out)
        fclose(c->out);
    for (int i = 0; c->pid > 0 && i < 100; i++) {
        if (waitpid(c->pid, NULL, WNOHANG) == c->pid)
            return;
        usleep(50000);
    }
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    }
}

/* --- client side ---------------------------------------------------------- */

static int dial(int port, int http)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    char buf[512];
    errno = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        (http && (write(fd, req, sizeof(req) - 1) != sizeof(req) - 1 ||
                  read(fd, buf, sizeof(buf)) <= 0))) {
        int err = errno ? -errno : -EIO;
        close(fd);
        return err;
    }
    return fd;
}

static int child_cmd(struct child *c, const char *cmd, char *line, size_t len)
{
    if (fputs(cmd, c->in) == EOF || fflush(c->in))
        return -EPIPE;
    return child_line(c, line, len);
}

/* Prints the server's live allocations that changed by at least 1 per 20
 * connections since "mark", per connection, as "#alloc" lines. */
static int print_hist(struct child *c, unsigned conns)
{
    char line[128];
    int rc = child_cmd(c, "hist\n", line, sizeof(line));
    for (int i = 0; !rc && strncmp(line, "end", 3) && i < 5000; i++) {
        long size, n, bytes;
        if (sscanf(line, "hist %ld %ld %ld", &size, &n, &bytes) != 3)
            return -EPROTO;
        if (labs(n) * 20 >= (long)conns || labs(bytes) >= 4L * (long)conns) {
            if (size >= (HIST_BUCKETS - 1) * 16)
                printf("#alloc usable=%ld+", size);
            else
                printf("#alloc usable=%ld..%ld", size, size + 15);
            printf(" live_per_conn=%.3f bytes_per_conn=%.1f\n",
                   (double)n / conns, (double)bytes / conns);
        }
        rc = child_line(c, line, sizeof(line));
    }
    return rc;
}

/* Waits until the server counts at least `want` open connections. */
static int wait_conns(struct child *c, long want, struct srv_stat *s)
{
    double end = now_ms() + WAIT_MS;
    for (;;) {
        int rc = child_stat(c, s);
        if (rc || s->conns >= want)
            return rc;
        if (now_ms() > end)
            return -ETIMEDOUT;
        usleep(2000);
    }
}

static int open_conns_to(const struct opts *o, int port, struct child *c,
                         int *fds)
{
    struct srv_stat s;
    for (unsigned i = 0; i < o->conns; i++) {
        fds[i] = dial(port, o->http);
        if (fds[i] < 0) {
            fprintf(stderr, "conn_memory: connection %u: %s\n", i,
                    strerror(-fds[i]));
            return fds[i];
        }
        if (c && i % PACE == PACE - 1 && i >= PACE_SLACK) {
            int rc = wait_conns(c, (long)(i - PACE_SLACK), &s);
            if (rc)
                return rc;
        }
    }
    return 0;
}

struct result {
    struct mem s0, s1, c0, c1;
    struct srv_stat h0, h1;
};

static void print_result(const struct opts *o, const struct result *r)
{
    double n = o->conns;
    printf("n=%u srv_rss_base_kb=%ld srv_rss_kb=%ld "
           "srv_rss_per_conn=%.0f srv_anon_per_conn=%.0f "
           "srv_vmsize_per_conn=%.0f srv_heap_per_conn=%.0f "
           "srv_conns=%ld cli_rss_per_conn=%.0f\n",
           o->conns, r->s0.rss_kb, r->s1.rss_kb,
           (double)(r->s1.rss_kb - r->s0.rss_kb) * 1024 / n,
           (double)(r->s1.anon_kb - r->s0.anon_kb) * 1024 / n,
           (double)(r->s1.size_kb - r->s0.size_kb) * 1024 / n,
           r->h1.conns < 0
               ? -1.0
               : (double)(r->h1.heap + r->h1.mmap - r->h0.heap - r->h0.mmap) /
                     n,
           r->h1.conns, (double)(r->c1.rss_kb - r->c0.rss_kb) * 1024 / n);
}

/* Baseline, N connections, settle, measure. c is NULL for --pid. */
static int measure(const struct opts *o, long pid, int port, struct child *c)
{
    struct result r = {.h0.conns = -1, .h1.conns = -1};
    char ok[16];
    int rc = c ? child_stat(c, &r.h0) : 0;
    if (!rc && c && o->alloc)
        rc = child_cmd(c, "mark\n", ok, sizeof(ok));
    if (!rc)
        rc = read_mem(pid, &r.s0);
    if (!rc)
        rc = read_mem(getpid(), &r.c0);
    int *fds = rc ? NULL : malloc(o->conns * sizeof(*fds));
    if (!rc && !fds)
        rc = -ENOMEM;
    for (unsigned i = 0; fds && i < o->conns; i++)
        fds[i] = -1;
    if (!rc)
        rc = open_conns_to(o, port, c, fds);
    if (!rc && c)
        rc = wait_conns(c, (long)o->conns, &r.h1);
    if (!rc)
        usleep((useconds_t)o->settle_ms * 1000);
    if (!rc && c)
        rc = child_stat(c, &r.h1);
    if (!rc)
        rc = read_mem(pid, &r.s1);
    if (!rc)
        rc = read_mem(getpid(), &r.c1);
    if (!rc)
        print_result(o, &r);
    if (!rc && c && o->alloc)
        rc = print_hist(c, o->conns);
    for (unsigned i = 0; fds && i < o->conns; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    return rc;
}

static int client_main(const struct opts *o)
{
    if (o->pid)
        return measure(o, o->pid, o->port, NULL);
    struct child c = {0};
    char line[64];
    int port = 0;
    int rc = child_spawn(&c, o->threads, o->alloc);
    if (!rc)
        rc = child_line(&c, line, sizeof(line));
    if (!rc && sscanf(line, "port %d", &port) != 1)
        rc = -EPROTO;
    if (!rc)
        rc = measure(o, c.pid, port, &c);
    child_end(&c);
    return rc;
}

/* --- main ----------------------------------------------------------------- */

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.settle_ms = 1000};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        char *end;
        long n = strtol(v, &end, 10);
        int num = *v && !*end && n >= 0;
        if (!strcmp(k, "--server"))
            o->server = 1;
        else if (!strcmp(k, "--alloc"))
            o->alloc = 1;
        else if (!strcmp(k, "--http"))
            o->http = 1;
        else if (!strcmp(k, "--connections") && num && n > 0 &&
                 n <= MAX_CONNS && ++i)
            o->conns = (unsigned)n;
        else if (!strcmp(k, "--threads") && num && n <= 64 && ++i)
            o->threads = (unsigned)n;
        else if (!strcmp(k, "--settle-ms") && num && n <= 60000 && ++i)
            o->settle_ms = (unsigned)n;
        else if (!strcmp(k, "--seconds") && num && n <= 86400 && ++i)
            o->seconds = (unsigned)n;
        else if (!strcmp(k, "--port") && num && n > 0 && n < 65536 && ++i)
            o->port = (int)n;
        else if (!strcmp(k, "--pid") && num && n > 0 && ++i)
            o->pid = n;
        else
            return -EINVAL;
    }
    if (!o->server && (!o->conns || !o->pid != !o->port))
        return -EINVAL;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr,
                "usage: conn_memory --connections N [--threads T] "
                "[--settle-ms MS] [--alloc]\n"
                "       conn_memory --connections N --port P --pid PID "
                "[--http]\n"
                "       conn_memory --server [--threads T] [--seconds S] "
                "[--alloc]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    int rc = o.server ? server_main(&o) : client_main(&o);
    if (rc && !o.server)
        fprintf(stderr, "conn_memory: %s\n", strerror(-rc));
    return rc ? 1 : 0;
}
