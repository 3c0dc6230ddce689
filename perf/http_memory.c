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
 *   upload: POST /echo announcing Content-Length: 8 MiB, then
 *         --upload-kib of body (default 4096) as fast as the server takes
 *         it, then nothing (a stalled upload: the server's body budget
 *         either holds it or refuses it with 503),
 * waits until the server counts N open connections (idle) or N parked
 * responses (hold), or (upload) until no byte has gone out for a second,
 * lets them sit for --settle-ms, reads the figures again
 * and prints one key=value line with the deltas divided by N, then the
 * allocations that grew as "#alloc" lines. With --port P --pid PID it
 * measures another server's RSS instead (nginx in http_memory.sh; idle
 * mode only; its own counts are not available). Client and server are
 * separate processes because each may hold only 20,000 open files. Usage:
 *   http_memory --connections N [--mode idle|hold|upload] [--threads T]
 *               [--settle-ms MS] [--upload-kib K]
 *   http_memory --connections N --port P --pid PID
 *   http_memory --server [--threads T] [--max-connections N] [--seconds S]
 */
#include "http_app.h"
#include "mem_probe.h"

#define MAX_CONNS 100000u
#define PACE 500u            /* connects between looks at the server count */
#define PACE_SLACK 1000u     /* how far the server may lag behind the client */
#define SERVER_SECONDS 900u  /* a --server exits after this at the latest */
#define HOLD_MS "600000"     /* a parked long-poll outlives the measurement */
#define EXIT_GRACE_MS 10000  /* how long the server may take to quit */
#define UPLOAD_CL (8u << 20) /* what a stalled upload announces */
#define UPLOAD_IDLE_MS 1000  /* no byte out for this long: stalled */

struct opts {
    int server, hold, upload;
    unsigned conns, threads, settle_ms, seconds, max_conns, upload_kib;
    int port;
    long pid;
};

/* What the server answers to "stat". */
struct srv_stat {
    long conns, parked;
    long long heap, hooked, body, rejected;
};

/* --- server mode ---------------------------------------------------------- */

/* What answer_stat() reports on. */
struct stat_src {
    const es_http_server_t *s;
    const hb_app_t *app;
};

/* Answers "stat": open connections, parked responses, heap, hooked bytes. */
static void answer_stat(void *arg)
{
    const struct stat_src *src = arg;
    struct mallinfo2 mi = mallinfo2();
    es_http_server_stats_t st = {0};
    es_http_server_stats(src->s, &st);
    printf("conns=%llu parked=%ld heap=%zu hooked=%ld body=%llu "
           "rejected=%llu\n",
           (unsigned long long)st.connections, hb_app_parked(src->app),
           mi.uordblks + mi.hblkhd, atomic_load(&live_bytes),
           (unsigned long long)st.body_bytes, (unsigned long long)st.rejected);
    fflush(stdout);
}

static int server_run(es_runtime_t *rt, const struct opts *o)
{
    es_http_server_opts_t ho = {.max_connections =
                                    o->max_conns ? o->max_conns : MAX_CONNS,
                                .keepalive_timeout_ms = 900000,
                                .header_timeout_ms = 900000,
                                .body_timeout_ms = 900000,
                                .body_read_timeout_ms = 900000};
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
        struct stat_src src = {s, app};
        rc = serve_commands(o->seconds ? o->seconds : SERVER_SECONDS,
                            answer_stat, &src);
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

/* Asks the server for its counts, heap and hooked bytes. */
static int child_stat(struct child *c, struct srv_stat *s)
{
    char line[160];
    int rc = child_cmd(c, "stat\n", line, sizeof(line));
    if (rc)
        return rc;
    return sscanf(line,
                  "conns=%ld parked=%ld heap=%lld hooked=%lld body=%lld "
                  "rejected=%lld",
                  &s->conns, &s->parked, &s->heap, &s->hooked, &s->body,
                  &s->rejected) == 6
               ? 0
               : -EPROTO;
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

/* Connects and sends GET /plaintext (and reads the response), or with
 * hold GET /hold, or with upload the head of an 8 MiB POST /echo (and
 * reads nothing). */
static int dial(int port, const struct opts *o)
{
    static const char plain[] =
        "GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const char park[] =
        "GET /hold?ms=" HOLD_MS " HTTP/1.1\r\nHost: localhost\r\n\r\n";
    char up[128];
    snprintf(up, sizeof(up),
             "POST /echo HTTP/1.1\r\nHost: localhost\r\n"
             "Content-Length: %u\r\n\r\n",
             UPLOAD_CL);
    int hold = o->hold || o->upload;
    const char *req = o->upload ? up : o->hold ? park : plain;
    size_t len = strlen(req);
    int fd = dial_loopback(port);
    if (fd < 0)
        return fd;
    errno = 0;
    int rc = write(fd, req, len) != (ssize_t)len ? (errno ? -errno : -EIO) : 0;
    if (!rc && !hold)
        rc = read_response(fd);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
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
        fds[i] = dial(port, o);
        if (fds[i] < 0) {
            fprintf(stderr, "http_memory: connection %u: %s\n", i,
                    strerror(-fds[i]));
            return fds[i];
        }
        if (c && !o->upload && i % PACE == PACE - 1 && i >= PACE_SLACK) {
            int rc = wait_server(c, o->hold, (long)(i - PACE_SLACK), &s);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/*
 * Sends each upload's body (--upload-kib) without blocking, round robin,
 * until every byte is out or none has gone out for UPLOAD_IDLE_MS (the
 * server stopped reading, or refused and closed). Returns: KiB sent.
 */
static long upload_pump(const struct opts *o, const int *fds)
{
    static char chunk[64 << 10];
    size_t want = (size_t)o->upload_kib << 10, total = 0;
    size_t *sent = calloc(o->conns, sizeof(*sent));
    if (!sent)
        return -ENOMEM;
    memset(chunk, 'u', sizeof(chunk));
    for (double idle = now_ms(); now_ms() - idle < UPLOAD_IDLE_MS;) {
        int moved = 0;
        for (unsigned i = 0; i < o->conns; i++) {
            size_t n =
                want - sent[i] < sizeof(chunk) ? want - sent[i] : sizeof(chunk);
            ssize_t w =
                n ? send(fds[i], chunk, n, MSG_DONTWAIT | MSG_NOSIGNAL) : 0;
            if (w > 0) {
                sent[i] += (size_t)w;
                total += (size_t)w;
                moved = 1;
            }
        }
        if (moved)
            idle = now_ms();
        else
            usleep(5000);
    }
    free(sent);
    return (long)(total >> 10);
}

struct result {
    struct mem s0, s1, c0, c1;
    struct srv_stat h0, h1;
    long sent_kib;
};

static void print_result(const struct opts *o, const struct result *r)
{
    double n = o->conns;
    printf("n=%u mode=%s srv_rss_base_kb=%ld srv_rss_per_conn=%.0f "
           "srv_anon_per_conn=%.0f srv_heap_per_conn=%.0f "
           "srv_hooked_per_conn=%.0f srv_conns=%ld srv_parked=%ld "
           "cli_rss_per_conn=%.0f\n",
           o->conns,
           o->upload ? "upload"
           : o->hold ? "hold"
                     : "idle",
           r->s0.rss_kb, (double)(r->s1.rss_kb - r->s0.rss_kb) * 1024 / n,
           (double)(r->s1.anon_kb - r->s0.anon_kb) * 1024 / n,
           r->h1.conns < 0 ? -1.0 : (double)(r->h1.heap - r->h0.heap) / n,
           r->h1.conns < 0 ? -1.0 : (double)(r->h1.hooked - r->h0.hooked) / n,
           r->h1.conns, r->h1.parked,
           (double)(r->c1.rss_kb - r->c0.rss_kb) * 1024 / n);
    if (o->upload)
        printf("upload n=%u sent_kib=%ld srv_rss_before_kb=%ld "
               "srv_rss_after_kb=%ld srv_body_bytes=%lld srv_rejected=%lld\n",
               o->conns, r->sent_kib, r->s0.rss_kb, r->s1.rss_kb, r->h1.body,
               r->h1.rejected - r->h0.rejected);
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
    if (!rc && o->upload)
        r.sent_kib = upload_pump(o, fds);
    else if (!rc && c)
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
    char t[16], m[16];
    snprintf(t, sizeof(t), "%u", o->threads ? o->threads : 1);
    snprintf(m, sizeof(m), "%u", o->conns + 100);
    char *argv[] = {
        "http_memory", "--server", "--threads", t, "--max-connections", m, NULL,
    };
    int port = 0;
    int rc = child_start(&c, argv, &port);
    if (!rc)
        rc = measure(o, c.pid, port, &c);
    child_end(&c, EXIT_GRACE_MS);
    return rc;
}

/* --- main ----------------------------------------------------------------- */

/* Handles one "--name value" pair. Returns: 0 or -EINVAL. */
static int parse_pair(struct opts *o, const char *k, const char *v)
{
    char *end;
    long n = strtol(v, &end, 10);
    int num = *v && !*end && n >= 0;
    if (!strcmp(k, "--mode") &&
        (!strcmp(v, "idle") || !strcmp(v, "hold") || !strcmp(v, "upload"))) {
        o->hold = !strcmp(v, "hold");
        o->upload = !strcmp(v, "upload");
    } else if (!strcmp(k, "--upload-kib") && num && n > 0 && n <= 8192)
        o->upload_kib = (unsigned)n;
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
    *o = (struct opts){.settle_ms = 1000, .upload_kib = 4096};
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
    return o->pid && (o->hold || o->upload) ? -EINVAL : 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr,
                "usage: http_memory --connections N "
                "[--mode idle|hold|upload] [--threads T] [--settle-ms MS] "
                "[--upload-kib K]\n"
                "       http_memory --connections N --port P --pid PID\n"
                "       http_memory --server [--threads T] "
                "[--max-connections N] [--seconds S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile("http_memory");
    int rc = o.server ? server_main(&o) : client_main(&o);
    if (rc && !o.server)
        fprintf(stderr, "http_memory: %s\n", strerror(-rc));
    return rc ? 1 : 0;
}
