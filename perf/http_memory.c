/* SPDX-License-Identifier: MIT */
/*
 * Memory per HTTP connection (perf/http_memory.sh), measured the way
 * perf/conn_memory.c measures bare connections. The measuring side
 * (`http_memory --connections N --mode idle|hold`) starts a copy of itself
 * in `--server` mode as a child process: an EventServer runtime with an
 * es_http_server serving the benchmark application (http_app.c) on
 * 127.0.0.1, with allocator hooks (es_set_allocator) that keep its live
 * allocations by size. The two talk over the child's stdin and stdout:
 * "stat" answers with the server's open connections, its parked /hold
 * responses, mallinfo2() and the hooks' live bytes; "mark" and "hist" give
 * the allocations that changed in between, by size.
 *
 * The client takes a baseline once the server runs, opens N connections
 * and on each one sends
 *   idle: GET /plaintext and reads the whole response (the connection then
 *         sits idle, kept alive), or
 *   hold: GET /hold?ms=600000 and reads nothing (the response stays
 *         deferred: a parked long-poll),
 * waits until the server counts N open connections (idle) or N parked
 * responses (hold), lets them sit for --settle-ms, reads the figures again
 * and prints one key=value line with the deltas divided by N, then the
 * allocations that grew as "#alloc" lines. With --port P --pid PID it
 * measures another server's RSS instead (nginx in http_memory.sh; idle
 * mode only; its own counts are not available). Client and server are
 * separate processes because each may hold only 20,000 open files. Usage:
 *   http_memory --connections N [--mode idle|hold] [--threads T]
 *               [--settle-ms MS]
 *   http_memory --connections N --port P --pid PID
 *   http_memory --server [--threads T] [--max-connections N] [--seconds S]
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

#include "http_app.h"

#define MAX_CONNS 100000u
#define PACE 500u           /* connects between looks at the server count */
#define PACE_SLACK 1000u    /* how far the server may lag behind the client */
#define WAIT_MS 60000       /* longest wait for the server to catch up */
#define IO_TIMEOUT_S 5      /* connect / request timeout per socket */
#define SERVER_SECONDS 900u /* a --server exits after this at the latest */
#define HOLD_MS "600000"    /* a parked long-poll outlives the measurement */

struct opts {
    int server, hold;
    unsigned conns, threads, settle_ms, seconds, max_conns;
    int port;
    long pid;
};

/* VmRSS and RssAnon of a process, in kB. */
struct mem {
    long rss_kb, anon_kb;
};

/* What the server answers to "stat". */
struct srv_stat {
    long conns, parked;
    long long heap, hooked;
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
            perror("http_memory: setrlimit");
    }
}

static int read_mem(long pid, struct mem *m)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    *m = (struct mem){-1, -1};
    while (fgets(line, sizeof(line), f)) {
        sscanf(line, "VmRSS: %ld", &m->rss_kb);
        sscanf(line, "RssAnon: %ld", &m->anon_kb);
    }
    fclose(f);
    return m->rss_kb < 0 ? -EIO : 0;
}

/* --- allocation accounting (server side) ---------------------------------- */

/*
 * The server's allocator hooks keep the library's live allocations (and
 * the application's, which also go through es_malloc) by
 * malloc_usable_size(), in 16-byte buckets (the last takes everything from
 * 64 KiB up). "mark" remembers the counts; "hist" prints what changed.
 */
#define HIST_BUCKETS 4097
static atomic_long hist_n[HIST_BUCKETS], hist_bytes[HIST_BUCKETS];
static atomic_long live_bytes;
static long mark_n[HIST_BUCKETS], mark_bytes[HIST_BUCKETS];

static void hist_add(size_t usable, long sign)
{
    size_t b = usable / 16 < HIST_BUCKETS - 1 ? usable / 16 : HIST_BUCKETS - 1;
    atomic_fetch_add_explicit(&hist_n[b], sign, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_bytes[b], sign * (long)usable,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&live_bytes, sign * (long)usable,
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

static void answer_stat(const es_http_server_t *s, const hb_app_t *app)
{
    struct mallinfo2 mi = mallinfo2();
    es_http_server_stats_t st = {0};
    es_http_server_stats(s, &st);
    printf("conns=%llu parked=%ld heap=%zu hooked=%ld\n",
           (unsigned long long)st.connections, hb_app_parked(app),
           mi.uordblks + mi.hblkhd, atomic_load(&live_bytes));
    fflush(stdout);
}

/* Answers stdin's commands until "quit", EOF or the deadline. */
static int serve_commands(const es_http_server_t *s, const hb_app_t *app,
                          unsigned seconds)
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
            answer_stat(s, app);
        else if (!strncmp(line, "mark", 4))
            hist_mark();
        else if (!strncmp(line, "hist", 4))
            hist_print();
    }
    return 0;
}

static int server_run(es_runtime_t *rt, const struct opts *o)
{
    es_http_server_opts_t ho = {.max_connections =
                                    o->max_conns ? o->max_conns : MAX_CONNS,
                                .keepalive_timeout_ms = 900000,
                                .header_timeout_ms = 900000};
    es_http_server_t *s = NULL;
    hb_app_t *app = NULL;
    int rc = es_http_server_new(rt, &ho, &s);
    if (!rc)
        rc = hb_app_new(rt, s, &app);
    if (!rc)
        rc = es_http_server_listen(s, "127.0.0.1:0");
    if (!rc)
        rc = es_runtime_start(rt);
    if (!rc)
        rc = es_http_server_start(s);
    if (!rc) {
        printf("port %d\n", es_http_server_port(s, 0));
        fflush(stdout);
        rc = serve_commands(s, app, o->seconds ? o->seconds : SERVER_SECONDS);
    }
    es_runtime_stop(rt);
    (void)es_runtime_wait(rt);
    if (s)
        es_http_server_free(s);
    es_runtime_free(rt);
    hb_app_free(app);
    return rc;
}

static int server_main(const struct opts *o)
{
    es_runtime_opts_t ro = {.threads = o->threads ? o->threads : 1};
    es_runtime_t *rt;
    int rc =
        es_set_allocator(hist_malloc, hist_realloc, hist_calloc, hist_free);
    if (!rc)
        rc = es_runtime_new(&ro, &rt);
    if (!rc)
        rc = server_run(rt, o);
    if (rc)
        fprintf(stderr, "http_memory --server: %s\n", es_strerror(rc));
    return rc;
}

/* --- the server child ----------------------------------------------------- */

struct child {
    pid_t pid;
    FILE *in, *out; /* its stdin (we write) and stdout (we read) */
};

static int child_spawn(struct child *c, const struct opts *o)
{
    int to[2], from[2];
    char t[16], m[16];
    snprintf(t, sizeof(t), "%u", o->threads ? o->threads : 1);
    snprintf(m, sizeof(m), "%u", o->conns + 100);
    if (pipe2(to, O_CLOEXEC) || pipe2(from, O_CLOEXEC))
        return -errno;
    c->pid = fork();
    if (c->pid < 0)
        return -errno;
    if (c->pid == 0) {
        if (dup2(to[0], 0) < 0 || dup2(from[1], 1) < 0)
            _exit(127);
        execl("/proc/self/exe", "http_memory", "--server", "--threads", t,
              "--max-connections", m, (char *)NULL);
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

static int child_cmd(struct child *c, const char *cmd, char *line, size_t len)
{
    if (fputs(cmd, c->in) == EOF || fflush(c->in))
        return -EPIPE;
    return child_line(c, line, len);
}

static int child_stat(struct child *c, struct srv_stat *s)
{
    char line[160];
    int rc = child_cmd(c, "stat\n", line, sizeof(line));
    if (rc)
        return rc;
    return sscanf(line, "conns=%ld parked=%ld heap=%lld hooked=%lld", &s->conns,
                  &s->parked, &s->heap, &s->hooked) == 4
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
    for (int i = 0; c->pid > 0 && i < 200; i++) {
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

/* Reads one whole response (headers, then Content-Length bytes). */
static int read_response(int fd)
{
    char buf[2048];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n <= 0)
            return n == 0 ? -ECONNRESET : -errno;
        got += (size_t)n;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        char *cl = strcasestr(buf, "\r\nContent-Length:");
        if (end && cl && cl < end &&
            got >= (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10))
            return strncmp(buf, "HTTP/1.1 200", 12) ? -EPROTO : 0;
        if (got == sizeof(buf) - 1)
            return -EMSGSIZE;
    }
}

static int dial(int port, int hold)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    static const char plain[] =
        "GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const char park[] =
        "GET /hold?ms=" HOLD_MS " HTTP/1.1\r\nHost: localhost\r\n\r\n";
    const char *req = hold ? park : plain;
    size_t len = hold ? sizeof(park) - 1 : sizeof(plain) - 1;
    errno = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        write(fd, req, len) != (ssize_t)len)
        rc = errno ? -errno : -EIO;
    if (!rc && !hold)
        rc = read_response(fd);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
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

/* Waits until the server counts `want` open connections, or in hold mode
 * `want` parked responses. */
static int wait_server(struct child *c, int hold, long want, struct srv_stat *s)
{
    double end = now_ms() + WAIT_MS;
    for (;;) {
        int rc = child_stat(c, s);
        if (rc || (hold ? s->parked : s->conns) >= want)
            return rc;
        if (now_ms() > end)
            return -ETIMEDOUT;
        usleep(2000);
    }
}

static int open_all(const struct opts *o, int port, struct child *c, int *fds)
{
    struct srv_stat s;
    for (unsigned i = 0; i < o->conns; i++) {
        fds[i] = dial(port, o->hold);
        if (fds[i] < 0) {
            fprintf(stderr, "http_memory: connection %u: %s\n", i,
                    strerror(-fds[i]));
            return fds[i];
        }
        if (c && i % PACE == PACE - 1 && i >= PACE_SLACK) {
            int rc = wait_server(c, o->hold, (long)(i - PACE_SLACK), &s);
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
    printf("n=%u mode=%s srv_rss_base_kb=%ld srv_rss_per_conn=%.0f "
           "srv_anon_per_conn=%.0f srv_heap_per_conn=%.0f "
           "srv_hooked_per_conn=%.0f srv_conns=%ld srv_parked=%ld "
           "cli_rss_per_conn=%.0f\n",
           o->conns, o->hold ? "hold" : "idle", r->s0.rss_kb,
           (double)(r->s1.rss_kb - r->s0.rss_kb) * 1024 / n,
           (double)(r->s1.anon_kb - r->s0.anon_kb) * 1024 / n,
           r->h1.conns < 0 ? -1.0 : (double)(r->h1.heap - r->h0.heap) / n,
           r->h1.conns < 0 ? -1.0 : (double)(r->h1.hooked - r->h0.hooked) / n,
           r->h1.conns, r->h1.parked,
           (double)(r->c1.rss_kb - r->c0.rss_kb) * 1024 / n);
}

/* Baseline, N connections, settle, measure. c is NULL for --pid. */
static int measure(const struct opts *o, long pid, int port, struct child *c)
{
    struct result r = {.h0.conns = -1, .h1.conns = -1, .h1.parked = -1};
    char ok[16];
    int rc = c ? child_stat(c, &r.h0) : 0;
    if (!rc && c)
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
        rc = open_all(o, port, c, fds);
    if (!rc && c)
        rc = wait_server(c, o->hold, (long)o->conns, &r.h1);
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
    if (!rc && c)
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
    int rc = child_spawn(&c, o);
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

/* Handles one "--name value" pair. Returns: 0 or -EINVAL. */
static int parse_pair(struct opts *o, const char *k, const char *v)
{
    char *end;
    long n = strtol(v, &end, 10);
    int num = *v && !*end && n >= 0;
    if (!strcmp(k, "--mode") && (!strcmp(v, "idle") || !strcmp(v, "hold")))
        o->hold = !strcmp(v, "hold");
    else if (!strcmp(k, "--connections") && num && n > 0 && n <= MAX_CONNS)
        o->conns = (unsigned)n;
    else if (!strcmp(k, "--max-connections") && num && n > 0)
        o->max_conns = (unsigned)n;
    else if (!strcmp(k, "--threads") && num && n <= 64)
        o->threads = (unsigned)n;
    else if (!strcmp(k, "--settle-ms") && num && n <= 60000)
        o->settle_ms = (unsigned)n;
    else if (!strcmp(k, "--seconds") && num && n <= 86400)
        o->seconds = (unsigned)n;
    else if (!strcmp(k, "--port") && num && n > 0 && n < 65536)
        o->port = (int)n;
    else if (!strcmp(k, "--pid") && num && n > 0)
        o->pid = n;
    else
        return -EINVAL;
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.settle_ms = 1000};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--server"))
            o->server = 1;
        else if (i + 1 >= argc || parse_pair(o, argv[i], argv[i + 1]))
            return -EINVAL;
        else
            i++;
    }
    if (!o->server && (!o->conns || !o->pid != !o->port))
        return -EINVAL;
    return o->pid && o->hold ? -EINVAL : 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr,
                "usage: http_memory --connections N [--mode idle|hold] "
                "[--threads T] [--settle-ms MS]\n"
                "       http_memory --connections N --port P --pid PID\n"
                "       http_memory --server [--threads T] "
                "[--max-connections N] [--seconds S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    int rc = o.server ? server_main(&o) : client_main(&o);
    if (rc && !o.server)
        fprintf(stderr, "http_memory: %s\n", strerror(-rc));
    return rc ? 1 : 0;
}
