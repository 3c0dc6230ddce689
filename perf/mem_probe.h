/* SPDX-License-Identifier: MIT */
/*
 * What perf/conn_memory.c and perf/http_memory.c share: both measure the
 * memory a server spends per connection by running that server as a child
 * process of the client, talking to it over its stdin and stdout, and
 * reading both processes' figures from /proc/<pid>/status. Here are the
 * clock, the /proc reader, the server side's counting allocator hooks
 * (the "mark"/"hist" histogram), its command loop, the client side's
 * handle on the child, the "#alloc" lines that report the histogram, and
 * the loopback dial both clients start from. What differs (the server
 * itself, its "stat" line, the requests sent, the result line) stays in
 * each program. The functions are static so that each program stays one
 * translation unit; both programs use every one of them.
 */
#ifndef ES_PERF_MEM_PROBE_H
#define ES_PERF_MEM_PROBE_H

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

#define WAIT_MS 60000  /* longest wait for the server to catch up */
#define IO_TIMEOUT_S 5 /* connect / request timeout per socket */

/* VmRSS, RssAnon and VmSize of a process, in kB. */
struct mem {
    long rss_kb, anon_kb, size_kb;
};

/* Milliseconds on the monotonic clock. */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Raises the soft RLIMIT_NOFILE to the hard one; prog names the complaint. */
static void raise_nofile(const char *prog)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            fprintf(stderr, "%s: setrlimit: %s\n", prog, strerror(errno));
    }
}

/* Reads pid's struct mem from /proc. Returns: 0, -errno or -EIO. */
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

/* --- allocation histogram (server side) ----------------------------------- */

/*
 * The server's allocator hooks (es_set_allocator) keep the library's live
 * allocations (and an application's, which also go through es_malloc) by
 * malloc_usable_size(), in 16-byte buckets (the last takes everything from
 * 64 KiB up), and their total. "mark" remembers the counts; "hist" prints
 * what changed since, which tells where the bytes of a connection go.
 */
#define HIST_BUCKETS 4097
static atomic_long hist_n[HIST_BUCKETS], hist_bytes[HIST_BUCKETS];
static atomic_long live_bytes;
static long mark_n[HIST_BUCKETS], mark_bytes[HIST_BUCKETS];

/* Counts one allocation of `usable` bytes in (sign 1) or out (sign -1). */
static void hist_add(size_t usable, long sign)
{
    size_t b = usable / 16 < HIST_BUCKETS - 1 ? usable / 16 : HIST_BUCKETS - 1;
    atomic_fetch_add_explicit(&hist_n[b], sign, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_bytes[b], sign * (long)usable,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&live_bytes, sign * (long)usable,
                              memory_order_relaxed);
}

/* malloc() that counts what it returns (an es_set_allocator hook). */
static void *hist_malloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        hist_add(malloc_usable_size(p), 1);
    return p;
}

/* calloc() that counts what it returns (an es_set_allocator hook). */
static void *hist_calloc(size_t c, size_t n)
{
    void *p = calloc(c, n);
    if (p)
        hist_add(malloc_usable_size(p), 1);
    return p;
}

/* realloc() that moves the count from the old block to the new one. */
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

/* free() that uncounts the block (an es_set_allocator hook). */
static void hist_free(void *p)
{
    if (p)
        hist_add(malloc_usable_size(p), -1);
    free(p);
}

/* "mark": remembers the current counts and answers "ok". */
static void hist_mark(void)
{
    for (int i = 0; i < HIST_BUCKETS; i++) {
        mark_n[i] = atomic_load(&hist_n[i]);
        mark_bytes[i] = atomic_load(&hist_bytes[i]);
    }
    printf("ok\n");
    fflush(stdout);
}

/* "hist": prints "hist SIZE COUNT BYTES" per changed bucket, then "end". */
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

/* Answers stdin's commands ("stat" by calling answer_stat(arg), "mark",
 * "hist") until "quit", EOF or `seconds`. Returns: 0 or -errno. */
static int serve_commands(unsigned seconds, void (*answer_stat)(void *),
                          void *arg)
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
            answer_stat(arg);
        else if (!strncmp(line, "mark", 4))
            hist_mark();
        else if (!strncmp(line, "hist", 4))
            hist_print();
    }
    return 0;
}

/* --- the server child (client side) --------------------------------------- */

struct child {
    pid_t pid;
    FILE *in, *out; /* its stdin (we write) and stdout (we read) */
};

/* Reads one line from the child, waiting at most WAIT_MS. */
static int child_line(struct child *c, char *buf, size_t len)
{
    struct pollfd p = {.fd = fileno(c->out), .events = POLLIN};
    if (poll(&p, 1, WAIT_MS) <= 0 || !fgets(buf, (int)len, c->out))
        return -ETIMEDOUT;
    return 0;
}

/* Starts this program again with argv, reads its "port P" line into *port.
 * Returns: 0 or -errno; child_end() cleans up either way. */
static int child_start(struct child *c, char *const argv[], int *port)
{
    int to[2], from[2];
    char line[64];
    if (pipe2(to, O_CLOEXEC) || pipe2(from, O_CLOEXEC))
        return -errno;
    c->pid = fork();
    if (c->pid < 0)
        return -errno;
    if (c->pid == 0) {
        if (dup2(to[0], 0) < 0 || dup2(from[1], 1) < 0)
            _exit(127);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    c->in = fdopen(to[1], "w");
    c->out = fdopen(from[0], "r");
    if (!c->in || !c->out)
        return -ENOMEM;
    /* Unbuffered, so poll() on the fd sees every line not yet read. */
    if (setvbuf(c->out, NULL, _IONBF, 0))
        return -ENOMEM;
    int rc = child_line(c, line, sizeof(line));
    if (!rc && sscanf(line, "port %d", port) != 1)
        rc = -EPROTO;
    return rc;
}

/* Sends one command line and reads the first line of the answer. */
static int child_cmd(struct child *c, const char *cmd, char *line, size_t len)
{
    if (fputs(cmd, c->in) == EOF || fflush(c->in))
        return -EPIPE;
    return child_line(c, line, len);
}

/* Says "quit", waits up to grace_ms for the child to exit, then kills it. */
static void child_end(struct child *c, int grace_ms)
{
    if (c->in) {
        fputs("quit\n", c->in);
        fclose(c->in);
    }
    if (c->out)
        fclose(c->out);
    for (int i = 0; c->pid > 0 && i < grace_ms / 50; i++) {
        if (waitpid(c->pid, NULL, WNOHANG) == c->pid)
            return;
        usleep(50000);
    }
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    }
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

/* --- client side ---------------------------------------------------------- */

/* Connects to 127.0.0.1:port with IO_TIMEOUT_S send and receive timeouts.
 * Returns: the socket, or -errno. */
static int dial_loopback(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    errno = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        int err = errno ? -errno : -EIO;
        close(fd);
        return err;
    }
    return fd;
}

#endif /* ES_PERF_MEM_PROBE_H */
