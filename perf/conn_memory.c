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
#include <eventserver/eventserver.h>

#include "mem_probe.h"

#define MAX_CONNS 100000u
#define PACE 500u           /* connects between looks at the server count */
#define PACE_SLACK 1000u    /* how far accepting may lag behind connecting */
#define SERVER_SECONDS 600u /* a --server exits after this at the latest */
#define EXIT_GRACE_MS 5000  /* how long the server may take to quit */

struct opts {
    int server, http, alloc;
    unsigned conns, threads, settle_ms, seconds;
    int port;
    long pid;
};

/* What the server answers to "stat". */
struct srv_stat {
    long conns;
    long long heap, mmap;
};

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

/* Answers "stat": the count of open connections and mallinfo2(). */
static void answer_stat(void *arg)
{
    struct mallinfo2 mi = mallinfo2();
    printf("conns=%ld heap=%zu mmap=%zu\n", atomic_load(&open_conns),
           mi.uordblks, mi.hblkhd);
    fflush(stdout);
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
        rc = serve_commands(o->seconds ? o->seconds : SERVER_SECONDS,
                            answer_stat, NULL);
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

/* Asks the server for its open connections and heap figures. */
static int child_stat(struct child *c, struct srv_stat *s)
{
    char line[128];
    int rc = child_cmd(c, "stat\n", line, sizeof(line));
    if (rc)
        return rc;
    return sscanf(line, "conns=%ld heap=%lld mmap=%lld", &s->conns, &s->heap,
                  &s->mmap) == 3
               ? 0
               : -EPROTO;
}

/* --- client side ---------------------------------------------------------- */

/* Connects; with http, sends one request and reads (part of) the answer. */
static int dial(int port, int http)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    char buf[512];
    int fd = dial_loopback(port);
    if (fd < 0 || !http)
        return fd;
    errno = 0;
    if (write(fd, req, sizeof(req) - 1) != sizeof(req) - 1 ||
        read(fd, buf, sizeof(buf)) <= 0) {
        int err = errno ? -errno : -EIO;
        close(fd);
        return err;
    }
    return fd;
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
    char t[16];
    snprintf(t, sizeof(t), "%u", o->threads ? o->threads : 1);
    char *argv[] = {
        "conn_memory", "--server", "--threads", t, o->alloc ? "--alloc" : NULL,
        NULL,
    };
    int port = 0;
    int rc = child_start(&c, argv, &port);
    if (!rc)
        rc = measure(o, c.pid, port, &c);
    child_end(&c, EXIT_GRACE_MS);
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
    raise_nofile("conn_memory");
    int rc = o.server ? server_main(&o) : client_main(&o);
    if (rc && !o.server)
        fprintf(stderr, "conn_memory: %s\n", strerror(-rc));
    return rc ? 1 : 0;
}
