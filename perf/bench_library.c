/* SPDX-License-Identifier: MIT */
/*
 * bench_library runs libevent's classic test/bench.c workload on EventServer
 * and, side by side, on libevent, libev and libuv, all forced onto epoll.
 * num_pipes non-blocking AF_UNIX socketpairs each have a read watcher;
 * num_active of them, evenly spaced, get one byte to start; every read
 * callback reads its byte and, while the global budget of num_writes lasts,
 * writes one byte into the next pipe (index + 1, wrapping). An iteration
 * (re)installs every watcher, writes the starting bytes and runs until every
 * byte written has been read. It prints, per iteration, the total time
 * (from before the watchers are reinstalled) and the loop time (from just
 * before the starting bytes are written; bench.c starts that clock just
 * after them, but EventServer's demux threads begin reading as soon as the
 * first byte lands, so every library starts it earlier here), both ending
 * when the callback that reads the last expected byte takes its timestamp.
 * Every library runs the same read callback and the same checks, and the
 * program fails if any iteration did other work than expected. With
 * --threads N, EventServer splits the pipes into N contiguous shares, one
 * actor per demux thread watching its share with es_io_watch(). It stays
 * one file, like ring_bench, because the build compiles one source per
 * benchmark; the sections follow the libraries.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <eventserver/eventserver.h>

#include <event2/event.h>
#include <uv.h>
/* <ev.h> comes later: see the libev section. */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* --- configuration -------------------------------------------------------- */

enum {
    DEFAULT_PIPES = 100, /* bench.c's defaults: -n 100 -a 1 -w 100 */
    DEFAULT_ACTIVE = 1,
    DEFAULT_WRITES = 100,
    DEFAULT_ITERATIONS = 2,
    MAX_THREADS = 64, /* demux threads --threads accepts */
    FD_SLACK = 16,    /* fds beyond the pipes: epoll, wakeups, stdio */
    WATCHDOG_S = 900, /* SIGALRM ends a run that hangs on a lost byte */
    CACHE_LINE = 64,
    MSG_REARM = ES_MSG_USER, /* main thread -> share actor */
};

#define NS_PER_US 1000.0

/* The command line; read-only once the run starts. */
struct options {
    const char *lib;
    int threads;
    int pipes, active, writes, iterations;
};

/* --- the workload, shared by every library -------------------------------- */

/*
 * One process runs one workload. The pipe table and fd index are written
 * before any loop runs and only read afterwards. `reads` is the only field
 * the read callbacks share when EventServer runs several demux threads: the
 * k-th read (k from 0, in the order the counter hands out) writes the next
 * byte exactly when k < writes, which is bench.c's "while writes last"
 * budget in one atomic step, and the read that makes reads == expected is
 * the last one of the iteration (every byte written has then been read, so
 * every write has happened). Relaxed order suffices for the counter: no
 * other data is published through it. t_end and fault are published by the
 * release store to `done` (or by the latch's mutex for EventServer). The
 * counter has a cache line of its own so that the threads bouncing it do
 * not also evict the read-only fields every callback needs.
 */
struct bench {
    int num_pipes, num_active, num_writes;
    int *pipes;             /* [2i] read end of pipe i, [2i + 1] write end */
    int *fd_index;          /* read-end fd -> pipe index; -1 elsewhere */
    int fd_limit;           /* entries in fd_index */
    unsigned long expected; /* reads per iteration: active + writes */
    void (*on_done)(struct bench *b); /* EventServer wakes the main thread */
    void *impl;                       /* the library's loop and watchers */
    alignas(CACHE_LINE) atomic_ulong reads;
    alignas(CACHE_LINE) atomic_bool done;
    atomic_int fault; /* first -errno a callback met, or 0 */
    uint64_t t_end;   /* ns; set by the callback that completes the work */
};

/* Callbacks of libevent, libev and libuv find the workload here. */
static struct bench the_bench;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Ends the iteration: the work is complete, or a callback failed. */
static void bench_finish(struct bench *b)
{
    b->t_end = now_ns();
    atomic_store_explicit(&b->done, true, memory_order_release);
    if (b->on_done)
        b->on_done(b);
}

static void bench_fault(struct bench *b, int rc)
{
    int none = 0;

    if (atomic_compare_exchange_strong(&b->fault, &none, rc))
        bench_finish(b);
}

/*
 * bench.c's read_cb, the same for every library. Never inlined, so that
 * callgrind attributes it (with the recv and send it makes) alike in every
 * library's profile and bench_library.sh can tell it from the loop's cost.
 */
__attribute__((noinline)) static void pipe_ready(struct bench *b, int idx)
{
    char ch;
    ssize_t n = recv(b->pipes[2 * idx], &ch, 1, 0);

    if (n != 1) {
        if (n < 0 && errno != EAGAIN)
            bench_fault(b, -errno);
        return; /* a spurious wakeup reads nothing and counts nothing */
    }
    unsigned long k =
        atomic_fetch_add_explicit(&b->reads, 1, memory_order_relaxed);
    if (k < (unsigned long)b->num_writes) {
        int next = idx + 1 < b->num_pipes ? idx + 1 : 0;
        if (send(b->pipes[2 * next + 1], "e", 1, 0) != 1)
            bench_fault(b, errno ? -errno : -EIO);
    }
    if (k + 1 == b->expected)
        bench_finish(b);
}

/* The soft fd limit goes up to the hard one; the pipes must fit under it. */
static int raise_fd_limit(int pipes)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)pipes * 2 + FD_SLACK > rl.rlim_cur) {
        fprintf(stderr,
                "bench_library: %d pipes need %d fds; the hard limit is "
                "%llu\n",
                pipes, pipes * 2 + FD_SLACK, (unsigned long long)rl.rlim_cur);
        return -EMFILE;
    }
    return 0;
}

static int bench_open_pipes(struct bench *b)
{
    int max_fd = -1;

    b->pipes = malloc(2 * (size_t)b->num_pipes * sizeof(*b->pipes));
    if (!b->pipes)
        return -ENOMEM;
    for (int i = 0; i < b->num_pipes; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                       &b->pipes[2 * i]) < 0) {
            int rc = -errno;
            while (i-- > 0) {
                close(b->pipes[2 * i]);
                close(b->pipes[2 * i + 1]);
            }
            free(b->pipes);
            b->pipes = NULL;
            return rc;
        }
        if (b->pipes[2 * i] > max_fd)
            max_fd = b->pipes[2 * i];
    }
    b->fd_limit = max_fd + 1;
    b->fd_index = malloc((size_t)b->fd_limit * sizeof(*b->fd_index));
    if (!b->fd_index)
        return -ENOMEM;
    memset(b->fd_index, 0xff, (size_t)b->fd_limit * sizeof(*b->fd_index));
    for (int i = 0; i < b->num_pipes; i++)
        b->fd_index[b->pipes[2 * i]] = i;
    return 0;
}

static void bench_close_pipes(struct bench *b)
{
    for (int i = 0; b->pipes && i < 2 * b->num_pipes; i++)
        close(b->pipes[i]);
    free(b->pipes);
    free(b->fd_index);
    b->pipes = b->fd_index = NULL;
}

static void bench_reset(struct bench *b)
{
    atomic_store(&b->reads, 0);
    atomic_store(&b->done, false);
    b->t_end = 0;
}

/* bench.c's starting bytes: num_active pipes, num_pipes / num_active apart. */
static int bench_kick(struct bench *b)
{
    int space = b->num_pipes / b->num_active;

    for (int i = 0; i < b->num_active; i++)
        if (send(b->pipes[2 * i * space + 1], "e", 1, 0) != 1)
            return errno ? -errno : -EIO;
    return 0;
}

/* Every byte written was read: counted exactly, none left in a pipe. */
static int bench_verify(struct bench *b)
{
    char ch;
    unsigned long reads = atomic_load(&b->reads);

    if (reads != b->expected) {
        fprintf(stderr, "bench_library: %lu reads, expected %lu\n", reads,
                b->expected);
        return -EPROTO;
    }
    for (int i = 0; i < b->num_pipes; i++) {
        if (recv(b->pipes[2 * i], &ch, 1, MSG_DONTWAIT) >= 0 ||
            errno != EAGAIN) {
            fprintf(stderr, "bench_library: pipe %d not drained\n", i);
            return -EPROTO;
        }
    }
    return 0;
}

/* --- a one-shot latch for EventServer's main thread ----------------------- */

/* The main thread waits until `pending` arrivals; actors arrive. */
struct latch {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned pending;
};

static int latch_init(struct latch *l)
{
    int rc = pthread_mutex_init(&l->lock, NULL);

    if (rc)
        return -rc;
    rc = pthread_cond_init(&l->cond, NULL);
    if (rc)
        pthread_mutex_destroy(&l->lock);
    l->pending = 0;
    return -rc;
}

static void latch_close(struct latch *l)
{
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
}

static void latch_set(struct latch *l, unsigned pending)
{
    pthread_mutex_lock(&l->lock);
    l->pending = pending;
    pthread_mutex_unlock(&l->lock);
}

static void latch_arrive(struct latch *l)
{
    pthread_mutex_lock(&l->lock);
    if (l->pending && --l->pending == 0)
        pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

static void latch_wait(struct latch *l)
{
    pthread_mutex_lock(&l->lock);
    while (l->pending)
        pthread_cond_wait(&l->cond, &l->lock);
    pthread_mutex_unlock(&l->lock);
}

/* --- the libraries -------------------------------------------------------- */

/* What the driver needs from a library. */
struct backend {
    const char *name;
    int (*open)(struct bench *b, int threads); /* loop and watchers */
    int (*arm)(struct bench *b);               /* (re)install every watcher */
    int (*run)(struct bench *b);               /* returns once b->done is set */
    void (*close)(struct bench *b);
};

/* --- EventServer ---------------------------------------------------------- */

/* One actor per demux thread; it watches pipes [first, last). */
struct es_share {
    struct bench *b;
    struct latch *rearmed;
    int first, last;
    bool armed;
};

struct es_impl {
    es_runtime_t *rt;
    unsigned threads;
    es_actor_id_t actors[MAX_THREADS];
    struct latch rearmed;  /* one arrival per share actor */
    struct latch finished; /* the completing read arrives */
};

/*
 * es_io_unwatch() + es_io_watch() for the share: bench.c's event_del/add.
 * Kept out of line so the ES_MSG_IO path stays a leaf-sized function.
 */
__attribute__((noinline)) static void es_share_rearm(es_actor_t *self,
                                                     struct es_share *s)
{
    struct bench *b = s->b;
    int rc = 0;

    for (int i = s->first; rc == 0 && i < s->last; i++) {
        if (s->armed)
            rc = es_io_unwatch(self, b->pipes[2 * i]);
        if (rc == 0)
            rc = es_io_watch(self, b->pipes[2 * i], ES_IO_READ);
    }
    s->armed = true;
    if (rc)
        bench_fault(b, rc);
    latch_arrive(s->rearmed);
}

static int es_share_behaviour(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES_MSG_IO) {
        struct es_share *s = es_actor_state(self);
        unsigned fd = (unsigned)es_msg_io_fd(msg);
        if (fd < (unsigned)s->b->fd_limit && s->b->fd_index[fd] >= 0)
            pipe_ready(s->b, s->b->fd_index[fd]);
    } else if (msg->type == MSG_REARM) {
        es_share_rearm(self, es_actor_state(self));
    }
    return 0;
}

static void es_on_done(struct bench *b)
{
    struct es_impl *es = b->impl;

    latch_arrive(&es->finished);
}

static int es_spawn_shares(struct bench *b, struct es_impl *es)
{
    for (unsigned k = 0; k < es->threads; k++) {
        struct es_share *s = calloc(1, sizeof(*s));
        if (!s)
            return -ENOMEM;
        s->b = b;
        s->rearmed = &es->rearmed;
        s->first = (int)((long)b->num_pipes * k / es->threads);
        s->last = (int)((long)b->num_pipes * (k + 1) / es->threads);
        es_spawn_opts_t opts = {.behaviour = es_share_behaviour,
                                .state = s,
                                .state_free = free,
                                .loop = ES_LOOP((int)k)};
        int rc = es_spawn(es->rt, &opts, &es->actors[k]);
        if (rc) {
            free(s);
            return rc;
        }
    }
    return 0;
}

static void es_bench_close(struct bench *b)
{
    struct es_impl *es = b->impl;

    if (!es)
        return;
    es_runtime_free(es->rt);
    latch_close(&es->rearmed);
    latch_close(&es->finished);
    free(es);
    b->impl = NULL;
    b->on_done = NULL;
}

static int es_bench_open(struct bench *b, int threads)
{
    struct es_impl *es = calloc(1, sizeof(*es));
    es_runtime_opts_t opts = {.threads = (unsigned)threads};
    int rc;

    if (!es)
        return -ENOMEM;
    if ((rc = latch_init(&es->rearmed))) {
        free(es);
        return rc;
    }
    if ((rc = latch_init(&es->finished))) {
        latch_close(&es->rearmed);
        free(es);
        return rc;
    }
    es->threads = (unsigned)threads;
    b->impl = es;
    b->on_done = es_on_done;
    rc = es_runtime_new(&opts, &es->rt);
    if (rc == 0)
        rc = es_runtime_start(es->rt);
    if (rc == 0)
        rc = es_spawn_shares(b, es);
    if (rc)
        es_bench_close(b);
    return rc;
}

/* The share actors reinstall their watches; the main thread waits. */
static int es_bench_arm(struct bench *b)
{
    struct es_impl *es = b->impl;
    es_msg_t msg = es_msg_make(MSG_REARM);

    latch_set(&es->rearmed, es->threads);
    for (unsigned k = 0; k < es->threads; k++) {
        int rc = es_send(es->rt, es->actors[k], &msg);
        if (rc)
            return rc;
    }
    latch_wait(&es->rearmed);
    latch_set(&es->finished, 1);
    return atomic_load(&b->fault);
}

static int es_bench_run(struct bench *b)
{
    struct es_impl *es = b->impl;

    latch_wait(&es->finished);
    return 0;
}

/* --- libevent ------------------------------------------------------------- */

struct libevent_impl {
    struct event_base *base;
    struct event **events;
};

static void libevent_read_cb(evutil_socket_t fd, short what, void *arg)
{
    pipe_ready(&the_bench, (int)(intptr_t)arg);
}

static void libevent_close(struct bench *b)
{
    struct libevent_impl *le = b->impl;

    if (!le)
        return;
    for (int i = 0; le->events && i < b->num_pipes; i++)
        if (le->events[i])
            event_free(le->events[i]);
    free(le->events);
    if (le->base)
        event_base_free(le->base);
    free(le);
    b->impl = NULL;
}

/* An epoll base, or -ENOTSUP: select and poll are ruled out and checked. */
static int libevent_new_base(struct event_base **out)
{
    struct event_config *cfg = event_config_new();

    if (!cfg)
        return -ENOMEM;
    if (event_config_avoid_method(cfg, "select") < 0 ||
        event_config_avoid_method(cfg, "poll") < 0) {
        event_config_free(cfg);
        return -ENOMEM;
    }
    *out = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!*out)
        return -ENOTSUP;
    if (strcmp(event_base_get_method(*out), "epoll") != 0) {
        fprintf(stderr, "bench_library: libevent uses %s, not epoll\n",
                event_base_get_method(*out));
        return -ENOTSUP;
    }
    return 0;
}

static int libevent_open(struct bench *b, int threads)
{
    struct libevent_impl *le = calloc(1, sizeof(*le));

    if (!le)
        return -ENOMEM;
    b->impl = le;
    int rc = libevent_new_base(&le->base);
    if (rc == 0 &&
        !(le->events = calloc((size_t)b->num_pipes, sizeof(*le->events))))
        rc = -ENOMEM;
    for (int i = 0; rc == 0 && i < b->num_pipes; i++) {
        le->events[i] =
            event_new(le->base, b->pipes[2 * i], EV_READ | EV_PERSIST,
                      libevent_read_cb, (void *)(intptr_t)i);
        if (!le->events[i])
            rc = -ENOMEM;
    }
    if (rc)
        libevent_close(b);
    return rc;
}

/* bench.c's event_del/event_set/event_add, then one non-blocking pass. */
static int libevent_arm(struct bench *b)
{
    struct libevent_impl *le = b->impl;

    for (int i = 0; i < b->num_pipes; i++) {
        if (event_del(le->events[i]) < 0 ||
            event_assign(le->events[i], le->base, b->pipes[2 * i],
                         EV_READ | EV_PERSIST, libevent_read_cb,
                         (void *)(intptr_t)i) < 0 ||
            event_add(le->events[i], NULL) < 0)
            return -EIO;
    }
    if (event_base_loop(le->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0)
        return -EIO;
    return 0;
}

static int libevent_run(struct bench *b)
{
    struct libevent_impl *le = b->impl;

    while (!atomic_load_explicit(&b->done, memory_order_acquire))
        if (event_base_loop(le->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0)
            return -EIO;
    return 0;
}

/* --- libuv ---------------------------------------------------------------- */

struct libuv_impl {
    uv_loop_t loop;
    bool loop_open;
    uv_poll_t *polls;
    int npolls; /* handles initialised, closed again in libuv_close */
};

static void libuv_read_cb(uv_poll_t *handle, int status, int events)
{
    if (status < 0)
        bench_fault(&the_bench, status);
    else
        pipe_ready(&the_bench, (int)(intptr_t)handle->data);
}

static void libuv_close(struct bench *b)
{
    struct libuv_impl *lu = b->impl;

    if (!lu)
        return;
    for (int i = 0; i < lu->npolls; i++)
        uv_close((uv_handle_t *)&lu->polls[i], NULL);
    if (lu->loop_open) {
        if (uv_run(&lu->loop, UV_RUN_DEFAULT) < 0 ||
            uv_loop_close(&lu->loop) < 0)
            fprintf(stderr, "bench_library: libuv loop did not close\n");
    }
    free(lu->polls);
    free(lu);
    b->impl = NULL;
}

static int libuv_open(struct bench *b, int threads)
{
    struct libuv_impl *lu = calloc(1, sizeof(*lu));
    int rc;

    if (!lu)
        return -ENOMEM;
    b->impl = lu;
    lu->polls = calloc((size_t)b->num_pipes, sizeof(*lu->polls));
    rc = lu->polls ? uv_loop_init(&lu->loop) : -ENOMEM;
    lu->loop_open = rc == 0;
    for (int i = 0; rc == 0 && i < b->num_pipes; i++) {
        rc = uv_poll_init(&lu->loop, &lu->polls[i], b->pipes[2 * i]);
        if (rc == 0) {
            lu->polls[i].data = (void *)(intptr_t)i;
            lu->npolls++;
        }
    }
    if (rc)
        libuv_close(b);
    return rc;
}

static int libuv_arm(struct bench *b)
{
    struct libuv_impl *lu = b->impl;

    for (int i = 0; i < b->num_pipes; i++) {
        int rc = uv_poll_stop(&lu->polls[i]);
        if (rc == 0)
            rc = uv_poll_start(&lu->polls[i], UV_READABLE, libuv_read_cb);
        if (rc)
            return rc;
    }
    (void)uv_run(&lu->loop, UV_RUN_NOWAIT); /* returns "still alive" */
    return 0;
}

static int libuv_run(struct bench *b)
{
    struct libuv_impl *lu = b->impl;

    while (!atomic_load_explicit(&b->done, memory_order_acquire))
        (void)uv_run(&lu->loop, UV_RUN_NOWAIT);
    return 0;
}

/* --- libev ---------------------------------------------------------------- */

/*
 * libevent's <event2/event.h> defines EV_READ, EV_WRITE, ... as macros and
 * libev's <ev.h> declares the same names as enumerators, so one file can
 * only hold both if libevent's macros are gone before <ev.h> is read. No
 * code below this point uses libevent.
 */
#undef EV_TIMEOUT
#undef EV_READ
#undef EV_WRITE
#undef EV_SIGNAL
#undef EV_PERSIST
#undef EV_ET
#undef EV_FINALIZE
#undef EV_CLOSED
#include <ev.h>

struct libev_impl {
    struct ev_loop *loop;
    ev_io *watchers;
};

static void libev_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    pipe_ready(&the_bench, (int)(intptr_t)w->data);
}

static void libev_close(struct bench *b)
{
    struct libev_impl *lv = b->impl;

    if (!lv)
        return;
    for (int i = 0; lv->watchers && i < b->num_pipes; i++)
        ev_io_stop(lv->loop, &lv->watchers[i]);
    free(lv->watchers);
    if (lv->loop)
        ev_loop_destroy(lv->loop);
    free(lv);
    b->impl = NULL;
}

static int libev_open(struct bench *b, int threads)
{
    struct libev_impl *lv = calloc(1, sizeof(*lv));

    if (!lv)
        return -ENOMEM;
    b->impl = lv;
    lv->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    lv->watchers = calloc((size_t)b->num_pipes, sizeof(*lv->watchers));
    if (!lv->loop || !lv->watchers || ev_backend(lv->loop) != EVBACKEND_EPOLL) {
        int rc = lv->loop && lv->watchers ? -ENOTSUP : -ENOMEM;
        libev_close(b);
        return rc;
    }
    for (int i = 0; i < b->num_pipes; i++) {
        ev_io_init(&lv->watchers[i], libev_read_cb, b->pipes[2 * i], EV_READ);
        lv->watchers[i].data = (void *)(intptr_t)i;
    }
    return 0;
}

static int libev_arm(struct bench *b)
{
    struct libev_impl *lv = b->impl;

    for (int i = 0; i < b->num_pipes; i++) {
        ev_io_stop(lv->loop, &lv->watchers[i]);
        ev_io_set(&lv->watchers[i], b->pipes[2 * i], EV_READ);
        ev_io_start(lv->loop, &lv->watchers[i]);
    }
    ev_run(lv->loop, EVRUN_NOWAIT);
    return 0;
}

static int libev_run(struct bench *b)
{
    struct libev_impl *lv = b->impl;

    while (!atomic_load_explicit(&b->done, memory_order_acquire))
        ev_run(lv->loop, EVRUN_NOWAIT);
    return 0;
}

static const struct backend backends[] = {
    {"es", es_bench_open, es_bench_arm, es_bench_run, es_bench_close},
    {"libevent", libevent_open, libevent_arm, libevent_run, libevent_close},
    {"libev", libev_open, libev_arm, libev_run, libev_close},
    {"libuv", libuv_open, libuv_arm, libuv_run, libuv_close},
};

/* --- driver --------------------------------------------------------------- */

/* bench.c's run_once: reinstall, start the tokens, run until all are read. */
static int run_iteration(struct bench *b, const struct backend *be)
{
    uint64_t t_total = now_ns();
    int rc = be->arm(b);

    if (rc)
        return rc;
    bench_reset(b);
    uint64_t t_loop = now_ns();
    if ((rc = bench_kick(b)) || (rc = be->run(b)))
        return rc;
    if ((rc = atomic_load(&b->fault)) || (rc = bench_verify(b)))
        return rc;
    printf("total_us=%.1f loop_us=%.1f\n",
           (double)(b->t_end - t_total) / NS_PER_US,
           (double)(b->t_end - t_loop) / NS_PER_US);
    return 0;
}

static int run_bench(const struct options *o, const struct backend *be)
{
    struct bench *b = &the_bench;
    unsigned long events = 0;
    int rc;

    b->num_pipes = o->pipes;
    b->num_active = o->active;
    b->num_writes = o->writes;
    b->expected = (unsigned long)o->active + (unsigned long)o->writes;
    if ((rc = raise_fd_limit(o->pipes)) || (rc = bench_open_pipes(b)))
        goto close_pipes;
    if ((rc = be->open(b, o->threads)))
        goto close_pipes;
    for (int i = 0; i < o->iterations; i++) {
        if ((rc = run_iteration(b, be)))
            break;
        events += atomic_load(&b->reads);
    }
    be->close(b);
    if (rc == 0)
        printf("events=%lu\n", events);
close_pipes:
    bench_close_pipes(b);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_library [--lib es|libevent|libev|libuv] "
            "[--threads N]\n"
            "                     [-n pipes] [-a active] [-w writes] "
            "[-i iterations]\n"
            "Defaults: --lib es --threads 1 -n %d -a %d -w %d -i %d. "
            "--threads is for es only.\n",
            DEFAULT_PIPES, DEFAULT_ACTIVE, DEFAULT_WRITES, DEFAULT_ITERATIONS);
}

/* A decimal int in [min, max], or -EINVAL. */
static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static int parse_opt(int c, const char *arg, struct options *o)
{
    switch (c) {
    case 'l':
        o->lib = arg;
        return 0;
    case 't':
        return parse_int(arg, 1, MAX_THREADS, &o->threads);
    case 'n':
        return parse_int(arg, 1, INT_MAX / 2, &o->pipes);
    case 'a':
        return parse_int(arg, 1, INT_MAX / 2, &o->active);
    case 'w':
        return parse_int(arg, 0, INT_MAX / 2, &o->writes);
    case 'i':
        return parse_int(arg, 1, INT_MAX, &o->iterations);
    default:
        return -EINVAL;
    }
}

static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"lib", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    *o = (struct options){.lib = "es",
                          .threads = 1,
                          .pipes = DEFAULT_PIPES,
                          .active = DEFAULT_ACTIVE,
                          .writes = DEFAULT_WRITES,
                          .iterations = DEFAULT_ITERATIONS};
    while ((c = getopt_long(argc, argv, "n:a:w:i:h", longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (parse_opt(c, optarg, o)) {
            fprintf(stderr, "bench_library: bad value for -%c\n", c);
            return -EINVAL;
        }
    }
    if (optind != argc || o->active > o->pipes) {
        fprintf(stderr, "bench_library: stray argument or -a > -n\n");
        return -EINVAL;
    }
    if (o->threads != 1 && strcmp(o->lib, "es") != 0) {
        fprintf(stderr, "bench_library: --threads is for es only\n");
        return -EINVAL;
    }
    return 0;
}

static const struct backend *find_backend(const char *name)
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i].name, name) == 0)
            return &backends[i];
    return NULL;
}

int main(int argc, char **argv)
{
    struct options o;
    const struct backend *be;
    int rc;

    if (parse_args(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    if (!(be = find_backend(o.lib))) {
        fprintf(stderr, "bench_library: unknown --lib %s\n", o.lib);
        return 2;
    }
    alarm(WATCHDOG_S);
    rc = run_bench(&o, be);
    if (rc) {
        fprintf(stderr, "bench_library: %s: %s\n", be->name, strerror(-rc));
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
