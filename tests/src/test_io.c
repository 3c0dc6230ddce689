/* SPDX-License-Identifier: MIT */
/*
 * Tests of fd watches (src/io.c): a watched socket delivers ES_MSG_IO with
 * its fd and readiness bits, level-triggered, on the watcher's home thread;
 * a watch's events can be changed; es_io_unwatch() and the actor's stop end
 * delivery at once; a second watcher of the same fd gets -EEXIST; bad fds,
 * regular files and unknown watches give their error codes; fds above 1024
 * and 2,000 sockets watched at the same time all work, since the watch
 * table has no fixed size. Behaviours only count; the test thread asserts
 * after the runtime is freed, and closes every fd it made.
 */
#include "es_test.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MSG_WATCH = ES_MSG_USER, MSG_UNWATCH, MSG_SYNC };

/* How many ES_MSG_IO a draining watcher leaves unanswered before it reads:
 * level-triggered readiness must repeat that often. */
#define LEVEL_REPEATS 3
/* How long a test gives a loop to deliver an event that must not come. */
#define QUIET_MS 100

/*
 * A watcher: watches `fd` for `events` at START (if fd >= 0) and on
 * MSG_WATCH (inl.i64[0] = fd, inl.u64[1] = events); unwatches on
 * MSG_UNWATCH. On ES_MSG_IO it counts, and then, by mode, unwatches at the
 * first message, or reads the data once LEVEL_REPEATS messages came.
 * MSG_SYNC snapshots the ES_MSG_IO count.
 */
struct watcher {
    int fd;
    uint32_t events;
    bool unwatch_on_io; /* es_io_unwatch at the first ES_MSG_IO */
    bool drain;         /* read what arrives (after LEVEL_REPEATS) */
    atomic_ullong io;
    atomic_ullong io_read, io_write, io_hup, io_rdhup;
    atomic_ullong bad;     /* wrong fd, or a message out of life order */
    atomic_ullong drained; /* bytes read */
    atomic_int watch_rc;   /* last es_io_watch() result */
    atomic_int unwatch_rc; /* last es_io_unwatch() result */
    atomic_ullong watched; /* es_io_watch() calls made */
    atomic_ullong unwatched;
    atomic_ullong synced;
    atomic_ullong io_at_sync;
    atomic_ullong io_after_stop;
    atomic_ullong started, stopped, freed;
};

static void watcher_io(struct watcher *w, es_actor_t *self, es_msg_t *msg)
{
    uint32_t ev = es_msg_io_events(msg);
    unsigned long long n = atomic_fetch_add(&w->io, 1) + 1;

    if (es_msg_io_fd(msg) != w->fd)
        atomic_fetch_add(&w->bad, 1);
    if (atomic_load(&w->stopped))
        atomic_fetch_add(&w->io_after_stop, 1);
    if (ev & ES_IO_READ)
        atomic_fetch_add(&w->io_read, 1);
    if (ev & ES_IO_WRITE)
        atomic_fetch_add(&w->io_write, 1);
    if (ev & ES_IO_HUP)
        atomic_fetch_add(&w->io_hup, 1);
    if (ev & ES_IO_RDHUP)
        atomic_fetch_add(&w->io_rdhup, 1);
    if (w->unwatch_on_io && n == 1) {
        atomic_store(&w->unwatch_rc, es_io_unwatch(self, w->fd));
        atomic_fetch_add(&w->unwatched, 1);
    }
    if (w->drain && n >= LEVEL_REPEATS && (ev & ES_IO_READ)) {
        char buf[256];
        ssize_t r;

        while ((r = read(w->fd, buf, sizeof(buf))) > 0)
            atomic_fetch_add(&w->drained, (unsigned long long)r);
    }
}

static void watcher_watch(struct watcher *w, es_actor_t *self, int fd,
                          uint32_t events)
{
    w->fd = fd;
    atomic_store(&w->watch_rc, es_io_watch(self, fd, events));
    atomic_fetch_add(&w->watched, 1);
}

static int watcher_cb(es_actor_t *self, es_msg_t *msg)
{
    struct watcher *w = es_actor_state(self);

    if (atomic_load(&w->stopped) ||
        (msg->type != ES_MSG_START && atomic_load(&w->started) != 1))
        atomic_fetch_add(&w->bad, 1);
    switch (msg->type) {
    case ES_MSG_START:
        atomic_fetch_add(&w->started, 1);
        if (w->fd >= 0)
            watcher_watch(w, self, w->fd, w->events);
        break;
    case ES_MSG_STOP:
        atomic_fetch_add(&w->stopped, 1);
        break;
    case ES_MSG_IO:
        watcher_io(w, self, msg);
        break;
    case MSG_WATCH:
        watcher_watch(w, self, (int)msg->inl.i64[0], (uint32_t)msg->inl.u64[1]);
        break;
    case MSG_UNWATCH:
        atomic_store(&w->unwatch_rc, es_io_unwatch(self, (int)msg->inl.i64[0]));
        atomic_fetch_add(&w->unwatched, 1);
        break;
    case MSG_SYNC:
        atomic_store(&w->io_at_sync, atomic_load(&w->io));
        atomic_fetch_add(&w->synced, 1);
        break;
    }
    return 0;
}

static void watcher_free(void *state)
{
    struct watcher *w = state;

    if (atomic_load(&w->stopped) != 1)
        atomic_fetch_add(&w->bad, 1);
    atomic_fetch_add(&w->freed, 1);
}

static void watcher_init(struct watcher *w, int fd, uint32_t events)
{
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->events = events;
    atomic_store(&w->watch_rc, 1); /* "not called yet" */
    atomic_store(&w->unwatch_rc, 1);
}

static es_actor_id_t spawn_watcher(es_runtime_t *rt, struct watcher *w,
                                   int loop)
{
    es_spawn_opts_t o = {
        .behaviour = watcher_cb,
        .state = w,
        .state_free = watcher_free,
        .loop = ES_LOOP(loop),
    };
    es_actor_id_t id = ES_ACTOR_NONE;

    ES_OK(es_spawn(rt, &o, &id));
    return id;
}

/* Sends MSG_WATCH / MSG_UNWATCH for fd. */
static void send_watch(es_runtime_t *rt, es_actor_id_t id, uint32_t type,
                       int fd, uint32_t events)
{
    es_msg_t m = es_msg_make(type);

    m.inl.i64[0] = fd;
    m.inl.u64[1] = events;
    m.len = 2 * sizeof(uint64_t);
    ES_OK(es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S));
}

/* Lets the loop run QUIET_MS, then makes the watcher snapshot its count. */
static unsigned long long quiet_then_sync(es_runtime_t *rt, es_actor_id_t id,
                                          struct watcher *w)
{
    unsigned long long before = atomic_load(&w->synced);
    es_msg_t m = es_msg_make(MSG_SYNC);

    es_test_sleep_ms(QUIET_MS);
    ES_OK(es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S));
    ES_WAIT_GE(w->synced, before + 1);
    return atomic_load(&w->io_at_sync);
}

static void make_pair(int sv[2])
{
    cr_assert_eq(
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
        0, "socketpair: %s", strerror(errno));
}

static void close_pair(int sv[2])
{
    close(sv[0]);
    close(sv[1]);
}

static void write_byte(int fd)
{
    cr_assert_eq(write(fd, "x", 1), 1, "write: %s", strerror(errno));
}

/* Life order held: one START, one STOP, one free, nothing out of place. */
static void assert_life(struct watcher *w, const char *who)
{
    cr_assert_eq(atomic_load(&w->started), 1, "%s: started", who);
    cr_assert_eq(atomic_load(&w->stopped), 1, "%s: stopped", who);
    cr_assert_eq(atomic_load(&w->freed), 1, "%s: freed", who);
    cr_assert_eq(atomic_load(&w->bad), 0, "%s: %llu bad messages", who,
                 (unsigned long long)atomic_load(&w->bad));
    cr_assert_eq(atomic_load(&w->io_after_stop), 0, "%s: io after stop", who);
}

Test(io, read_is_level_triggered, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    int sv[2];
    struct watcher w;
    es_actor_id_t id;

    make_pair(sv);
    watcher_init(&w, sv[0], ES_IO_READ);
    w.drain = true;
    id = spawn_watcher(rt, &w, 1);
    ES_WAIT_GE(w.watched, 1);
    /* Nothing to read yet: no message. */
    cr_assert_eq(quiet_then_sync(rt, id, &w), 0);
    write_byte(sv[1]);
    /* Unread data is reported again and again until the watcher reads. */
    ES_WAIT_GE(w.drained, 1);
    cr_assert_eq(quiet_then_sync(rt, id, &w), LEVEL_REPEATS,
                 "io messages for one byte: %llu",
                 (unsigned long long)atomic_load(&w.io_at_sync));
    /* Drained: quiet until more data comes. */
    write_byte(sv[1]);
    ES_WAIT_GE(w.drained, 2);
    cr_assert_eq(quiet_then_sync(rt, id, &w), LEVEL_REPEATS + 1);
    es_test_free(rt);
    close_pair(sv);

    cr_assert_eq(atomic_load(&w.watch_rc), 0, "watch: %d",
                 atomic_load(&w.watch_rc));
    cr_assert_eq(atomic_load(&w.io_read), LEVEL_REPEATS + 1);
    cr_assert_eq(atomic_load(&w.io_write), 0);
    assert_life(&w, "watcher");
}

Test(io, write_readiness, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    int sv[2];
    struct watcher w;
    es_actor_id_t id;

    make_pair(sv);
    watcher_init(&w, sv[0], ES_IO_WRITE);
    w.unwatch_on_io = true; /* a writable socket stays writable */
    id = spawn_watcher(rt, &w, 0);
    ES_WAIT_GE(w.unwatched, 1);
    cr_assert_eq(quiet_then_sync(rt, id, &w), 1);
    es_test_free(rt);
    close_pair(sv);

    cr_assert_eq(atomic_load(&w.watch_rc), 0);
    cr_assert_eq(atomic_load(&w.unwatch_rc), 0);
    cr_assert_eq(atomic_load(&w.io_write), 1);
    cr_assert_eq(atomic_load(&w.io_read), 0);
    assert_life(&w, "watcher");
}

Test(io, watch_again_changes_events, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    int sv[2];
    struct watcher w;
    es_actor_id_t id;

    make_pair(sv);
    watcher_init(&w, sv[0], ES_IO_READ);
    w.unwatch_on_io = true;
    id = spawn_watcher(rt, &w, 0);
    ES_WAIT_GE(w.watched, 1);
    cr_assert_eq(quiet_then_sync(rt, id, &w), 0, "read watch on empty socket");
    /* Same actor, same fd: the watch is modified, not refused. */
    send_watch(rt, id, MSG_WATCH, sv[0], ES_IO_WRITE);
    ES_WAIT_GE(w.unwatched, 1);
    es_test_free(rt);
    close_pair(sv);

    cr_assert_eq(atomic_load(&w.watch_rc), 0, "second watch: %d",
                 atomic_load(&w.watch_rc));
    cr_assert_eq(atomic_load(&w.io), 1);
    cr_assert_eq(atomic_load(&w.io_write), 1);
    cr_assert_eq(atomic_load(&w.unwatch_rc), 0);
    assert_life(&w, "watcher");
}

Test(io, unwatch_stops_delivery, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    int sv[2];
    struct watcher w;
    es_actor_id_t id;

    make_pair(sv);
    watcher_init(&w, sv[0], ES_IO_READ);
    w.unwatch_on_io = true; /* and never reads: the fd stays readable */
    id = spawn_watcher(rt, &w, 1);
    ES_WAIT_GE(w.watched, 1);
    write_byte(sv[1]);
    ES_WAIT_GE(w.unwatched, 1);
    cr_assert_eq(quiet_then_sync(rt, id, &w), 1);
    write_byte(sv[1]);
    cr_assert_eq(quiet_then_sync(rt, id, &w), 1);
    /* Unwatching again: nothing to unwatch. */
    send_watch(rt, id, MSG_UNWATCH, sv[0], 0);
    ES_WAIT_GE(w.unwatched, 2);
    es_test_free(rt);
    close_pair(sv);

    cr_assert_eq(atomic_load(&w.io), 1);
    cr_assert_eq(atomic_load(&w.unwatch_rc), -ENOENT, "second unwatch: %d",
                 atomic_load(&w.unwatch_rc));
    assert_life(&w, "watcher");
}

/* Two actors, on loops `la` and `lb`, both try to watch one fd. */
static void second_watcher_refused(unsigned threads, int la, int lb)
{
    es_runtime_t *rt = es_test_runtime_start(threads);
    int sv[2];
    struct watcher a, b;
    es_actor_id_t idb;

    make_pair(sv);
    watcher_init(&a, sv[0], ES_IO_READ);
    watcher_init(&b, -1, 0);
    spawn_watcher(rt, &a, la);
    idb = spawn_watcher(rt, &b, lb);
    ES_WAIT_GE(a.watched, 1);
    send_watch(rt, idb, MSG_WATCH, sv[0], ES_IO_READ);
    ES_WAIT_GE(b.watched, 1);
    /* The first watcher keeps its watch. */
    write_byte(sv[1]);
    ES_WAIT_GE(a.io, 1);
    quiet_then_sync(rt, idb, &b);
    es_test_free(rt);
    close_pair(sv);

    cr_assert_eq(atomic_load(&a.watch_rc), 0);
    cr_assert_eq(atomic_load(&b.watch_rc), -EEXIST,
                 "second watcher (loops %d, %d) got %d", la, lb,
                 atomic_load(&b.watch_rc));
    cr_assert_eq(atomic_load(&b.io), 0);
    assert_life(&a, "first");
    assert_life(&b, "second");
}

Test(io, second_watcher_same_loop_eexist, .timeout = ES_TEST_TIMEOUT)
{
    second_watcher_refused(1, 0, 0);
}

Test(io, watch_ends_when_actor_stops, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    int sv[2];
    struct watcher a, b;
    es_actor_id_t ida, idb;

    make_pair(sv);
    write_byte(sv[1]); /* readable from the start, never read */
    watcher_init(&a, sv[0], ES_IO_READ);
    ida = spawn_watcher(rt, &a, 0);
    ES_WAIT_GE(a.io, LEVEL_REPEATS);
    ES_OK(es_stop(rt, ida));
    ES_WAIT_GE(a.freed, 1);
    /* The fd is free again: another actor on that loop may watch it. */
    watcher_init(&b, -1, 0);
    b.unwatch_on_io = true;
    idb = spawn_watcher(rt, &b, 0);
    send_watch(rt, idb, MSG_WATCH, sv[0], ES_IO_READ);
    ES_WAIT_GE(b.unwatched, 1);
    es_test_free(rt);
    close_pair(sv);

    cr_assert_eq(atomic_load(&b.watch_rc), 0, "watch after stop: %d",
                 atomic_load(&b.watch_rc));
    cr_assert_eq(atomic_load(&b.io), 1);
    assert_life(&a, "stopped watcher");
    assert_life(&b, "next watcher");
}

Test(io, error_codes, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    char path[] = "/tmp/es-test-io-XXXXXX";
    int file = mkstemp(path);
    int sv[2], closed;
    struct watcher w;
    es_actor_id_t id;
    int rc[4];

    cr_assert_geq(file, 0, "mkstemp: %s", strerror(errno));
    unlink(path);
    make_pair(sv);
    closed = dup(sv[0]);
    cr_assert_geq(closed, 0);
    close(closed);
    watcher_init(&w, -1, 0);
    id = spawn_watcher(rt, &w, 0);
    send_watch(rt, id, MSG_WATCH, -1, ES_IO_READ);
    ES_WAIT_GE(w.watched, 1);
    rc[0] = atomic_load(&w.watch_rc);
    send_watch(rt, id, MSG_WATCH, closed, ES_IO_READ);
    ES_WAIT_GE(w.watched, 2);
    rc[1] = atomic_load(&w.watch_rc);
    send_watch(rt, id, MSG_WATCH, file, ES_IO_READ);
    ES_WAIT_GE(w.watched, 3);
    rc[2] = atomic_load(&w.watch_rc);
    send_watch(rt, id, MSG_UNWATCH, sv[0], 0);
    ES_WAIT_GE(w.unwatched, 1);
    rc[3] = atomic_load(&w.unwatch_rc);
    es_test_free(rt);
    close_pair(sv);
    close(file);

    cr_assert_eq(rc[0], -EBADF, "watch(-1): %d", rc[0]);
    cr_assert_eq(rc[1], -EBADF, "watch(closed fd): %d", rc[1]);
    cr_assert_eq(rc[2], -EPERM, "watch(regular file): %d", rc[2]);
    cr_assert_eq(rc[3], -ENOENT, "unwatch(not watched): %d", rc[3]);
    cr_assert_eq(atomic_load(&w.io), 0);
    assert_life(&w, "watcher");
}

Test(io, hangup_is_reported, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    int sv[2];
    struct watcher w;

    make_pair(sv);
    watcher_init(&w, sv[0], ES_IO_READ | ES_IO_RDHUP);
    w.unwatch_on_io = true;
    spawn_watcher(rt, &w, 0);
    ES_WAIT_GE(w.watched, 1);
    close(sv[1]);
    ES_WAIT_GE(w.unwatched, 1);
    es_test_free(rt);
    close(sv[0]);

    cr_assert_eq(atomic_load(&w.io), 1);
    cr_assert_eq(atomic_load(&w.io_rdhup), 1, "RDHUP not reported");
    cr_assert_eq(atomic_load(&w.io_read), 1, "EOF reads as readable");
    assert_life(&w, "watcher");
}

/* Raises the soft fd limit to the hard one; returns the new soft limit. */
static rlim_t raise_nofile(void)
{
    struct rlimit rl;

    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    return rl.rlim_cur;
}

Test(io, fd_above_1024, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt;
    int sv[2], high;
    struct watcher w;

    cr_assert_gt(raise_nofile(), 1600, "fd limit too low for this test");
    make_pair(sv);
    high = fcntl(sv[0], F_DUPFD_CLOEXEC, 1500);
    cr_assert_geq(high, 1500, "F_DUPFD: %s", strerror(errno));
    rt = es_test_runtime_start(2);
    watcher_init(&w, high, ES_IO_READ);
    w.drain = true;
    spawn_watcher(rt, &w, 1);
    ES_WAIT_GE(w.watched, 1);
    write_byte(sv[1]);
    ES_WAIT_GE(w.drained, 1);
    es_test_free(rt);
    close_pair(sv);
    close(high);

    cr_assert_eq(atomic_load(&w.watch_rc), 0, "watch(%d): %d", high,
                 atomic_load(&w.watch_rc));
    cr_assert_geq(atomic_load(&w.io_read), LEVEL_REPEATS);
    assert_life(&w, "watcher");
}

/*
 * One actor watches the read ends of NPAIRS socketpairs; each fd is
 * unwatched (and its byte read) at its first event, and must be seen once.
 */
#define NPAIRS 2000

struct many {
    int (*sv)[2];
    int n;
    unsigned char *seen; /* indexed by fd */
    int seen_cap;
    atomic_int first_watch_err;
    atomic_ullong watched, events, distinct, dupes, unknown, unwatch_err;
    atomic_ullong stopped, freed;
};

static int many_cb(es_actor_t *self, es_msg_t *msg)
{
    struct many *m = es_actor_state(self);

    if (msg->type == ES_MSG_START) {
        for (int i = 0; i < m->n; i++) {
            int rc = es_io_watch(self, m->sv[i][0], ES_IO_READ);

            if (rc != 0 && atomic_load(&m->first_watch_err) == 0)
                atomic_store(&m->first_watch_err, rc);
            if (rc == 0)
                atomic_fetch_add(&m->watched, 1);
        }
    } else if (msg->type == ES_MSG_IO) {
        int fd = es_msg_io_fd(msg);
        char c;

        atomic_fetch_add(&m->events, 1);
        if (fd < 0 || fd >= m->seen_cap) {
            atomic_fetch_add(&m->unknown, 1);
            return 0;
        }
        if (m->seen[fd]++)
            atomic_fetch_add(&m->dupes, 1);
        else
            atomic_fetch_add(&m->distinct, 1);
        if (es_io_unwatch(self, fd) != 0)
            atomic_fetch_add(&m->unwatch_err, 1);
        while (read(fd, &c, 1) == 1)
            ;
    } else if (msg->type == ES_MSG_STOP) {
        atomic_fetch_add(&m->stopped, 1);
    }
    return 0;
}

static void many_free(void *state)
{
    struct many *m = state;

    atomic_fetch_add(&m->freed, 1);
}

Test(io, two_thousand_sockets, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt;
    struct many m;
    int max_fd = 0;

    cr_assert_gt(raise_nofile(), 2 * NPAIRS + 64,
                 "fd limit too low for this test");
    memset(&m, 0, sizeof(m));
    m.n = NPAIRS;
    m.sv = calloc(NPAIRS, sizeof(*m.sv));
    cr_assert_not_null(m.sv);
    for (int i = 0; i < NPAIRS; i++) {
        make_pair(m.sv[i]);
        if (m.sv[i][1] > max_fd)
            max_fd = m.sv[i][1];
    }
    m.seen_cap = max_fd + 1;
    m.seen = calloc((size_t)m.seen_cap, 1);
    cr_assert_not_null(m.seen);
    rt = es_test_runtime_start(2);
    {
        es_spawn_opts_t o = {
            .behaviour = many_cb,
            .state = &m,
            .state_free = many_free,
            .loop = ES_LOOP(1),
        };
        es_actor_id_t id;

        ES_OK(es_spawn(rt, &o, &id));
    }
    ES_WAIT_GE(m.watched, NPAIRS);
    for (int i = 0; i < NPAIRS; i++)
        write_byte(m.sv[i][1]);
    ES_WAIT_GE(m.distinct, NPAIRS);
    es_test_sleep_ms(QUIET_MS);
    es_test_free(rt);
    for (int i = 0; i < NPAIRS; i++)
        close_pair(m.sv[i]);
    free(m.sv);
    free(m.seen);

    cr_assert_eq(atomic_load(&m.first_watch_err), 0, "watch failed: %d",
                 atomic_load(&m.first_watch_err));
    cr_assert_eq(atomic_load(&m.distinct), NPAIRS);
    cr_assert_eq(atomic_load(&m.events), NPAIRS, "events %llu",
                 (unsigned long long)atomic_load(&m.events));
    cr_assert_eq(atomic_load(&m.dupes), 0);
    cr_assert_eq(atomic_load(&m.unknown), 0);
    cr_assert_eq(atomic_load(&m.unwatch_err), 0);
    cr_assert_eq(atomic_load(&m.stopped), 1);
    cr_assert_eq(atomic_load(&m.freed), 1);
}
