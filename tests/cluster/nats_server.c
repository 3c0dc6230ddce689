/* SPDX-License-Identifier: MIT */
/*
 * The processes a cluster test starts: its own nats-server on loopback and
 * cluster_node programs. Children are made with fork() + exec: between the
 * two the child only calls async-signal-safe functions (the test process
 * has runtime and nats.c threads), asks the kernel for SIGKILL when its
 * parent dies (so a failed or timed-out test leaves nothing running),
 * closes every fd it inherited beyond stdin/stdout/stderr (sockets and
 * epoll sets of the test's runtime must not outlive it in a child), and
 * execs. Every wait here is bounded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nats_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/*
 * Servers started and not yet finished, by directory: a test that fails
 * an assertion never reaches test_nats_fini(), so its process cleans up
 * at exit (the server itself already died with it, PR_SET_PDEATHSIG; its
 * directory would stay).
 */
#define LIVE_MAX 8
static struct live {
    pid_t pid;
    char dir[64];
} live[LIVE_MAX];
static int live_hooked;

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);

    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            unlinkat(dirfd(d), e->d_name, 0);
    if (d)
        closedir(d);
    rmdir(dir);
}

static void live_cleanup(void)
{
    for (int i = 0; i < LIVE_MAX; i++) {
        if (!live[i].dir[0])
            continue;
        if (live[i].pid > 0) {
            kill(live[i].pid, SIGKILL);
            waitpid(live[i].pid, NULL, 0);
        }
        remove_dir(live[i].dir);
        live[i].dir[0] = '\0';
    }
}

/* Notes s's pid and directory (pid 0: stopped; dir empty: finished). */
static void live_note(const struct test_nats *s, const char *dir)
{
    int free_slot = -1;

    if (!live_hooked && atexit(live_cleanup) == 0)
        live_hooked = 1;
    for (int i = 0; i < LIVE_MAX; i++) {
        if (live[i].dir[0] && strcmp(live[i].dir, dir) == 0) {
            live[i].pid = s->pid;
            if (!s->dir[0])
                live[i].dir[0] = '\0';
            return;
        }
        if (!live[i].dir[0] && free_slot < 0)
            free_slot = i;
    }
    if (free_slot >= 0 && s->dir[0]) {
        live[free_slot].pid = s->pid;
        snprintf(live[free_slot].dir, sizeof(live[free_slot].dir), "%s", dir);
    }
}

bool test_nats_find(char *exe, size_t size)
{
    const char *path = getenv("PATH");
    char dirs[4096];

    snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/usr/bin:/usr/local/bin",
             path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d;
         d = strtok_r(NULL, ":", &save)) {
        int n = snprintf(exe, size, "%s/nats-server", d);

        if (*d && n > 0 && (size_t)n < size && access(exe, X_OK) == 0)
            return true;
    }
    return false;
}

/*
 * fork() + exec of argv with stdout and stderr on out_fd and err_fd (-1:
 * inherited). Only async-signal-safe calls in the child. Returns the pid,
 * or -errno.
 */
static pid_t spawn(char *const argv[], int out_fd, int err_fd)
{
    pid_t parent = getpid();
    pid_t pid = fork();

    if (pid < 0)
        return -errno;
    if (pid > 0)
        return pid;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    if (out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0)
        _exit(127);
    if (err_fd >= 0 && dup2(err_fd, STDERR_FILENO) < 0)
        _exit(127);
    close_range(3, ~0u, 0);
    execv(argv[0], argv);
    _exit(127);
}

/* Waits for pid at most secs; SIGKILLs it then. Returns its status. */
static int reap(pid_t pid, double secs)
{
    double end = now_s() + secs;
    int status = 0;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid || (r < 0 && errno != EINTR))
            return status;
        if (now_s() > end) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            return status;
        }
        sleep_ms(5);
    }
}

/* Whether 127.0.0.1:port accepts a TCP connection now. */
static bool accepts(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* The client port in the server's ports file, or 0 if not written yet. */
static int read_ports_file(const struct test_nats *s)
{
    char path[128], buf[512];
    const char *key = "nats://127.0.0.1:";
    ssize_t n;
    int fd;
    char *p;

    snprintf(path, sizeof(path), "%s/nats-server_%d.ports", s->dir,
             (int)s->pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strstr(buf, key);
    return p ? atoi(p + strlen(key)) : 0;
}

int test_nats_start(struct test_nats *s, double secs)
{
    char port[16], log[128];
    char *argv[] = {s->exe, "-a",        "127.0.0.1",
                    "-p",   port,        "--ports_file_dir",
                    s->dir, (char *)NULL};
    double end = now_s() + secs;
    int fd;

    if (s->pid)
        return -EBUSY;
    if (!s->dir[0]) {
        if (!test_nats_find(s->exe, sizeof(s->exe)))
            return -ENOENT;
        snprintf(s->dir, sizeof(s->dir), "/tmp/es_nats_XXXXXX");
        if (!mkdtemp(s->dir)) {
            s->dir[0] = '\0';
            return -errno;
        }
    }
    snprintf(port, sizeof(port), "%d", s->port ? s->port : -1);
    snprintf(log, sizeof(log), "%s/log", s->dir);
    fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    s->pid = spawn(argv, fd, fd);
    close(fd);
    if (s->pid < 0) {
        int rc = s->pid;

        s->pid = 0;
        return rc;
    }
    live_note(s, s->dir);
    while (!s->port || !accepts(s->port)) {
        if (!s->port)
            s->port = read_ports_file(s);
        if (now_s() > end || waitpid(s->pid, NULL, WNOHANG) != 0) {
            test_nats_stop(s, true, 0);
            return -ETIMEDOUT;
        }
        sleep_ms(5);
    }
    snprintf(s->url, sizeof(s->url), "nats://127.0.0.1:%d", s->port);
    return 0;
}

void test_nats_stop(struct test_nats *s, bool hard, double secs)
{
    if (!s->pid)
        return;
    kill(s->pid, hard ? SIGKILL : SIGTERM);
    reap(s->pid, secs);
    s->pid = 0;
    live_note(s, s->dir);
}

void test_nats_fini(struct test_nats *s)
{
    char dir[sizeof(s->dir)];

    test_nats_stop(s, false, 10.0);
    if (!s->dir[0])
        return;
    /* The log and the ports files of every start (one per pid: a server
     * removes its own on a clean exit, not after SIGKILL). */
    remove_dir(s->dir);
    snprintf(dir, sizeof(dir), "%s", s->dir);
    s->dir[0] = '\0';
    live_note(s, dir);
}

/* Reads lines from n->out_fd until "ready", EOF or the deadline. */
static int wait_ready(struct test_node *n, double end)
{
    char buf[256];
    size_t used = 0;

    for (;;) {
        struct pollfd p = {.fd = n->out_fd, .events = POLLIN};
        int left = (int)((end - now_s()) * 1000);
        ssize_t r;

        if (left <= 0)
            return -ETIMEDOUT;
        if (poll(&p, 1, left) <= 0)
            continue;
        r = read(n->out_fd, buf + used, sizeof(buf) - 1 - used);
        if (r == 0)
            return -EPIPE;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        used += (size_t)r;
        buf[used] = '\0';
        if (strstr(buf, "ready\n"))
            return 0;
        if (used == sizeof(buf) - 1)
            used = 0; /* chatter without "ready": keep looking */
    }
}

int test_node_start(struct test_node *n, char *const argv[], double secs)
{
    int fds[2];
    int rc;

    n->pid = 0;
    n->out_fd = -1;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -errno;
    n->pid = spawn(argv, fds[1], -1);
    close(fds[1]);
    if (n->pid < 0) {
        rc = n->pid;
        n->pid = 0;
        close(fds[0]);
        return rc;
    }
    n->out_fd = fds[0];
    rc = wait_ready(n, now_s() + secs);
    if (rc != 0)
        test_node_stop(n, true, secs);
    return rc;
}

int test_node_stop(struct test_node *n, bool hard, double secs)
{
    int status = -1;

    if (n->pid > 0) {
        kill(n->pid, hard ? SIGKILL : SIGTERM);
        status = reap(n->pid, secs);
        n->pid = 0;
    }
    if (n->out_fd >= 0) {
        close(n->out_fd);
        n->out_fd = -1;
    }
    return status;
}
