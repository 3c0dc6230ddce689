/* SPDX-License-Identifier: MIT */
/*
 * Tests of the IO backends (src/backend.h, backend_epoll.c,
 * backend_uring.c) and their selection (es_runtime_opts_t.backend, the
 * ES_BACKEND environment variable): what es_runtime_backend() reports for
 * each option and override; the fallback to epoll, with one log line,
 * when a seccomp filter refuses io_uring_setup() the way a kernel without
 * io_uring (ENOSYS) or with kernel.io_uring_disabled (EPERM) does; an fd
 * closed without DEL whose number is then watched again (a different
 * file) by another actor gets no stale event, and the old file is really
 * released; wakeups of sleeping loops from a foreign thread and from
 * another loop. The tests that do not choose a backend run on the one
 * ES_BACKEND names, so ctest runs them on both (tests/CMakeLists.txt).
 */
#include "es_test.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { MSG_CLOSE = ES_MSG_USER, MSG_WATCH, MSG_UNWATCH, MSG_PING };

/* How long a test gives a loop to deliver an event that must not come. */
#define QUIET_MS 100

/* The backend a runtime made with `backend` and no ES_BACKEND runs. */
static int backend_of(int backend, unsigned threads)
{
    es_runtime_opts_t o = {.threads = threads, .backend = backend};
    es_runtime_t *rt = es_test_runtime_new(&o);
    int b = es_runtime_backend(rt);

    es_test_free(rt);
    return b;
}

Test(backend, option_selects)
{
    unsetenv("ES_BACKEND");
    cr_assert_eq(backend_of(ES_BACKEND_AUTO, 1), ES_BACKEND_EPOLL,
                 "AUTO is epoll (docs/design.md, IO backends)");
    cr_assert_eq(backend_of(ES_BACKEND_EPOLL, 2), ES_BACKEND_EPOLL);
    cr_assert_eq(backend_of(ES_BACKEND_IO_URING, 2), ES_BACKEND_IO_URING);
    cr_assert_eq(es_runtime_backend(NULL), -EINVAL);

    es_runtime_t *rt = NULL;
    es_runtime_opts_t bad = {.threads = 1, .backend = 3};
    cr_assert_eq(es_runtime_new(&bad, &rt), -EINVAL);
    bad.backend = -1;
    cr_assert_eq(es_runtime_new(&bad, &rt), -EINVAL);
    cr_assert_null(rt);
}

/* Log lines seen, and how many of them name io_uring. */
static atomic_int log_lines, log_uring;

static void count_log(void *arg, es_log_level_t level, const char *line)
{
    (void)arg;
    (void)level;
    atomic_fetch_add(&log_lines, 1);
    if (strstr(line, "io_uring"))
        atomic_fetch_add(&log_uring, 1);
}

Test(backend, env_overrides)
{
    es_set_log(count_log, NULL, ES_LOG_WARN);
    setenv("ES_BACKEND", "io_uring", 1);
    cr_assert_eq(backend_of(ES_BACKEND_EPOLL, 1), ES_BACKEND_IO_URING);
    setenv("ES_BACKEND", "epoll", 1);
    cr_assert_eq(backend_of(ES_BACKEND_IO_URING, 1), ES_BACKEND_EPOLL);
    setenv("ES_BACKEND", "auto", 1);
    cr_assert_eq(backend_of(ES_BACKEND_IO_URING, 1), ES_BACKEND_EPOLL);
    cr_assert_eq(atomic_load(&log_lines), 0);
    /* Anything else is logged and ignored: the option stands. */
    setenv("ES_BACKEND", "kqueue", 1);
    cr_assert_eq(backend_of(ES_BACKEND_IO_URING, 1), ES_BACKEND_IO_URING);
    cr_assert_eq(atomic_load(&log_lines), 1);
    unsetenv("ES_BACKEND");
}

/* --- Fallback: io_uring_setup() refused ------------------------------------
 */

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#endif

/* Makes io_uring_setup() fail with `err` in this process (each Criterion
 * test runs in a process of its own), as a container's seccomp profile
 * (EPERM), kernel.io_uring_disabled = 2 (EPERM) or a kernel built without
 * io_uring (ENOSYS) do. Returns false where the filter cannot be set. */
static bool deny_io_uring(int err)
{
#ifdef NATIVE_ARCH
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K,
                 SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};

    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
#else
    (void)err;
    return false;
#endif
}

/* An actor that answers MSG_PING by counting it. */
static atomic_ullong pings;

static int pinged_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type == MSG_PING)
        atomic_fetch_add(&pings, 1);
    return 0;
}

/* With io_uring refused with err: the runtime falls back on every loop,
 * says so once, reports epoll, and works. */
static void check_fallback(int err)
{
    unsetenv("ES_BACKEND");
    if (!deny_io_uring(err))
        cr_skip("cannot install a seccomp filter here");
    es_set_log(count_log, NULL, ES_LOG_WARN);
    es_runtime_opts_t o = {.threads = 3, .backend = ES_BACKEND_IO_URING};
    es_runtime_t *rt = es_test_runtime_new(&o);

    cr_assert_eq(es_runtime_backend(rt), ES_BACKEND_EPOLL);
    cr_assert_eq(atomic_load(&log_uring), 1, "one line says why");
    cr_assert_eq(atomic_load(&log_lines), 1);
    es_actor_id_t id[3];
    for (unsigned i = 0; i < 3; i++) {
        es_spawn_opts_t so = {.behaviour = pinged_cb, .loop = ES_LOOP(i)};
        ES_OK(es_spawn(rt, &so, &id[i]));
    }
    ES_OK(es_runtime_start(rt));
    for (unsigned i = 0; i < 3; i++) {
        es_msg_t m = es_msg_make(MSG_PING);
        ES_OK(es_test_send_retry(rt, id[i], &m, ES_TEST_WAIT_S));
    }
    ES_WAIT_GE(pings, 3);
    es_test_free(rt);
}

Test(backend, fallback_when_refused_eperm)
{
    check_fallback(EPERM);
}

Test(backend, fallback_when_missing_enosys)
{
    check_fallback(ENOSYS);
}

/* --- An fd closed without DEL, its number watched again ------------------ */

/*
 * Two actors of one loop: `old` watches fd X, is told the byte that made
 * it readable, then closes X without es_io_unwatch() (what io.h forbids,
 * and what the close contract must survive). The test thread puts another
 * socket at number X, and `neu` watches it. Nothing may reach `neu` until
 * its own peer writes, and then only X with the new socket's data.
 */
struct sock_watcher {
    int fd;
    atomic_int watch_rc;
    atomic_ullong io, bad, closed, watched, bytes;
    atomic_int first; /* first byte read */
};

static int sock_watcher_cb(es_actor_t *self, es_msg_t *msg)
{
    struct sock_watcher *w = es_actor_state(self);
    char c;

    switch (msg->type) {
    case MSG_WATCH:
        atomic_store(&w->watch_rc, es_io_watch(self, w->fd, ES_IO_READ));
        atomic_fetch_add(&w->watched, 1);
        break;
    case MSG_CLOSE:
        close(w->fd); /* no es_io_unwatch() */
        atomic_fetch_add(&w->closed, 1);
        break;
    case MSG_UNWATCH:
        (void)es_io_unwatch(self, w->fd);
        break;
    case ES_MSG_IO:
        atomic_fetch_add(&w->io, 1);
        if (es_msg_io_fd(msg) != w->fd || atomic_load(&w->closed))
            atomic_fetch_add(&w->bad, 1);
        while (recv(w->fd, &c, 1, MSG_DONTWAIT) == 1) {
            if (atomic_fetch_add(&w->bytes, 1) == 0)
                atomic_store(&w->first, c);
        }
        break;
    }
    return 0;
}

static void send_to(es_runtime_t *rt, es_actor_id_t to, uint32_t type)
{
    es_msg_t m = es_msg_make(type);

    ES_OK(es_test_send_retry(rt, to, &m, ES_TEST_WAIT_S));
}

Test(backend, closed_without_del_number_reused)
{
    int a[2], b[2];
    struct sock_watcher old = {.fd = -1}, neu = {.fd = -1};
    es_actor_id_t old_id, neu_id;
    es_runtime_t *rt = es_test_runtime_start(1);

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    old.fd = a[0];
    es_spawn_opts_t so = {.behaviour = sock_watcher_cb, .state = &old};
    ES_OK(es_spawn(rt, &so, &old_id));
    so.state = &neu;
    ES_OK(es_spawn(rt, &so, &neu_id));

    send_to(rt, old_id, MSG_WATCH);
    ES_WAIT_GE(old.watched, 1);
    cr_assert_eq(atomic_load(&old.watch_rc), 0);
    cr_assert_eq(send(a[1], "o", 1, MSG_NOSIGNAL), 1);
    ES_WAIT_GE(old.bytes, 1);
    /* The poll that follows the report is armed again: close X now. */
    es_test_sleep_ms(QUIET_MS);
    send_to(rt, old_id, MSG_CLOSE);
    ES_WAIT_GE(old.closed, 1);

    /* Another socket at number X. */
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    if (b[0] != old.fd) { /* usually it has the lowest free number, X */
        cr_assert_eq(dup3(b[0], old.fd, O_CLOEXEC), old.fd);
        close(b[0]);
    }
    neu.fd = old.fd;
    send_to(rt, neu_id, MSG_WATCH);
    ES_WAIT_GE(neu.watched, 1);
    cr_assert_eq(atomic_load(&neu.watch_rc), 0, "watch of reused fd: %d",
                 atomic_load(&neu.watch_rc));

    /* The old socket is gone: nothing keeps its file open any more. */
    ssize_t r = send(a[1], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    cr_assert(r < 0 && (errno == EPIPE || errno == ECONNRESET),
              "old peer still connected: send gave %zd", r);
    es_test_sleep_ms(QUIET_MS);
    cr_assert_eq(atomic_load(&neu.io), 0, "stale event reached the new watch");

    cr_assert_eq(send(b[1], "n", 1, MSG_NOSIGNAL), 1);
    ES_WAIT_GE(neu.bytes, 1);
    send_to(rt, neu_id, MSG_UNWATCH);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&neu.first), 'n');
    cr_assert_eq(atomic_load(&neu.bytes), 1);
    cr_assert_eq(atomic_load(&neu.bad), 0);
    cr_assert_eq(atomic_load(&old.io), 1);
    cr_assert_eq(atomic_load(&old.bad), 0);
    close(neu.fd);
    close(a[1]);
    close(b[1]);
}

/* --- Wakeups ----------------------------------------------------------------
 */

/* A foreign thread sends one message at a time and waits until it was
 * handled, so the loop is asleep in its backend's wait() for each. */
Test(backend, wakeups_from_foreign_thread)
{
    const unsigned n = (unsigned)es_test_scaled(200);
    es_runtime_opts_t o = {.threads = 1, .adaptive_spin = ES_SPIN_ADAPTIVE_OFF};
    es_runtime_t *rt = es_test_runtime_new(&o);
    es_actor_id_t id;

    atomic_store(&pings, 0);
    es_spawn_opts_t so = {.behaviour = pinged_cb};
    ES_OK(es_spawn(rt, &so, &id));
    ES_OK(es_runtime_start(rt));
    for (unsigned i = 1; i <= n; i++) {
        send_to(rt, id, MSG_PING);
        ES_WAIT_GE(pings, i);
    }
    es_stats_t s;
    ES_OK(es_runtime_stats(rt, -1, &s));
    es_test_free(rt);
    cr_assert_geq(s.wakeups_written, 1);
    cr_assert_leq(s.wakeups_written, n, "at most one wakeup per message");
    cr_assert_geq(s.sleeps, 1);
}

/* Two actors on two loops pass a token back and forth: every hop finds
 * the other loop asleep (no spinning), and a lost wakeup would stall. */
struct player {
    es_actor_id_t peer;
    unsigned rounds;
    atomic_ullong hops;
};

static int player_cb(es_actor_t *self, es_msg_t *msg)
{
    struct player *p = es_actor_state(self);

    if (msg->type != MSG_PING)
        return 0;
    if (atomic_fetch_add(&p->hops, 1) + 1 >= p->rounds)
        return 0;
    es_msg_t m = es_msg_make(MSG_PING);
    return es_send(es_actor_runtime(self), p->peer, &m);
}

Test(backend, wakeups_between_loops)
{
    const unsigned rounds = (unsigned)es_test_scaled(2000);
    es_runtime_opts_t o = {.threads = 2, .adaptive_spin = ES_SPIN_ADAPTIVE_OFF};
    es_runtime_t *rt = es_test_runtime_new(&o);
    struct player p[2] = {{.rounds = rounds}, {.rounds = rounds}};
    es_actor_id_t id[2];

    for (unsigned i = 0; i < 2; i++) {
        es_spawn_opts_t so = {
            .behaviour = player_cb, .state = &p[i], .loop = ES_LOOP(i)};
        ES_OK(es_spawn(rt, &so, &id[i]));
    }
    p[0].peer = id[1];
    p[1].peer = id[0];
    ES_OK(es_runtime_start(rt));
    send_to(rt, id[0], MSG_PING);
    ES_WAIT_GE(p[1].hops, rounds - 1);
    es_stats_t s;
    ES_OK(es_runtime_stats(rt, -1, &s));
    es_test_free(rt);
    cr_assert_geq(atomic_load(&p[0].hops), rounds - 1);
    cr_assert_geq(s.wakeups_written, 1);
    cr_assert_leq(s.wakeups_written, 2ull * rounds + 2);
}
