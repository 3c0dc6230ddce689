/* SPDX-License-Identifier: MIT */
/*
 * The demux loop: one per runtime thread. A turn fires due timers, drains
 * the inbound rings (delivering each message), runs the actors with queued
 * mail, then writes the wakeups its own sends need. With nothing left to
 * do it announces that it sleeps and blocks in its IO backend's wait()
 * (backend.h; epoll in backend_epoll.c) until a timer is due, a sender
 * wakes it, or a watched fd is ready.
 *
 * The loop is inside its epoch section for the whole of a turn and outside
 * it while asleep, so grace periods advance at least once per turn. Events
 * returned by wait() are handled at the start of the next turn, so a
 * wake-up costs one epoch section, not two.
 */
#include "backend.h"

#include <errno.h>
#include <sched.h>

_Static_assert(ES__WATCH_READ == (unsigned)ES_IO_READ &&
                   ES__WATCH_WRITE == (unsigned)ES_IO_WRITE,
               "watch bits are ES_IO_* bits");
/* actor.h: a message travels by value in one 64-byte cache line. */
_Static_assert(sizeof(es_msg_t) == 64, "es_msg_t is one cache line");

static ES__TLS struct es__loop *tls_loop;

struct es__loop *es__loop_current(void)
{
    return tls_loop;
}

bool es__loop_owned(const struct es__loop *loop)
{
    /* thread_started is read by another thread only when the first test
     * failed, i.e. by a wrong-thread call or by the settling thread, which
     * joined the loop thread (or never started it). */
    return tls_loop == loop || !loop->thread_started;
}

/*
 * Sets up the backend rt->opts.backend names (EPOLL or IO_URING, see
 * runtime.c). When io_uring cannot be set up, every loop falls back to
 * epoll, those made before this one included (nothing is registered in
 * them yet), so a runtime runs one backend, and one line is logged.
 */
static int backend_init(es_runtime_t *rt, struct es__loop *loop)
{
    bool uring = rt->opts.backend == ES_BACKEND_IO_URING;
    loop->backend = uring ? &es__backend_uring : &es__backend_epoll;
    int rc = loop->backend->init(loop);
    if (rc == 0 || !uring)
        return rc;
    loop->backend->fini(loop);
    es__log(ES_LOG_WARN, "io_uring cannot be set up (%s): using epoll",
            es_strerror(rc));
    rt->opts.backend = ES_BACKEND_EPOLL;
    for (unsigned i = 0; i <= loop->index; i++) {
        struct es__loop *l = &rt->loops[i];
        l->backend->fini(l);
        l->backend = &es__backend_epoll;
        rc = l->backend->init(l);
        if (rc)
            return rc;
    }
    return 0;
}

int es__loop_init(es_runtime_t *rt, struct es__loop *loop, unsigned index)
{
    loop->rt = rt;
    loop->index = index;
    es__timers_init(&loop->timers);
    es__prof_init(&loop->prof);
    loop->events = es__calloc(ES__WAIT_EVENTS, sizeof(*loop->events));
    if (!loop->events)
        return -ENOMEM;
    int rc = backend_init(rt, loop);
    if (rc)
        return rc;
    rc = es__tctx_init(rt, &loop->tctx, (int)index);
    if (rc)
        return rc;
    return es__actor_new_loop_actor(loop);
}

unsigned char *es__loop_scratch(struct es__loop *loop)
{
    if (!loop->scratch)
        loop->scratch = es__malloc(ES__SCRATCH);
    return loop->scratch;
}

void es__loop_destroy(struct es__loop *loop)
{
    es__free(loop->scratch);
    loop->scratch = NULL;
    es__free(loop->mutes);
    loop->mutes = NULL;
    loop->nmutes = loop->mutes_cap = 0;
    es__migrations_free(loop);
    es__msgq_reset(&loop->parked);
    es__prof_destroy(&loop->prof);
    while (loop->nqcache)
        es__free(loop->qcache[--loop->nqcache]);
    es__free(loop->events);
    loop->events = NULL;
    es__wheel_destroy(loop);
    es__timers_destroy(&loop->timers);
    es__io_destroy(loop);
    if (loop->backend)
        loop->backend->fini(loop);
}

int es__loop_watch_add(struct es__loop *loop, struct es__watch *w,
                       uint32_t events)
{
    /* Even and non-zero: tells it from io.c's tags and the wakeup. */
    uint64_t data = (uint64_t)(uintptr_t)w;
    ES_ASSERT(w && (data & 1) == 0);
    int rc = loop->backend->ctl(loop, ES__CTL_ADD, w->fd, events, data);
    if (rc)
        return rc;
    loop->io_watches++;
    return 0;
}

int es__loop_ctl(struct es__loop *loop, int op, int fd, uint32_t events,
                 uint64_t data)
{
    ES_ASSERT(op >= ES__CTL_ADD && op <= ES__CTL_DEL);
    ES_ASSERT(es__loop_owned(loop));
    ES_ASSERT(op == ES__CTL_DEL || (data & 1));
    int rc = loop->backend->ctl(loop, op, fd, events, data);
    if (rc)
        return rc;
    if (op == ES__CTL_ADD)
        loop->io_watches++;
    else if (op == ES__CTL_DEL)
        loop->io_watches--;
    return 0;
}

/* Takes up to a budget of messages from every inbound ring. */
static unsigned drain_rings(struct es__loop *loop)
{
    unsigned n = 0;
    struct es__chan *c =
        atomic_load_explicit(&loop->inbound, memory_order_acquire);
    for (; c; c = c->next) {
        es_msg_t m;
        for (unsigned i = 0; i < ES__CHAN_BUDGET && es__chan_pop(c, &m); i++) {
            es__actor_route(loop, &m, c->producer->loop_index);
            n++;
        }
        es__tctx_flush_wakes(&loop->tctx);
    }
    return n;
}

/* True if a ring holds a message or a new actor waits (actor.c). */
static bool rings_nonempty(struct es__loop *loop)
{
    if (es__spawns_pending(loop))
        return true;
    struct es__chan *c =
        atomic_load_explicit(&loop->inbound, memory_order_acquire);
    for (; c; c = c->next)
        if (es__chan_nonempty(c))
            return true;
    return false;
}

static bool stop_requested(const struct es__loop *loop)
{
    return atomic_load_explicit(&loop->rt->stopping, memory_order_acquire);
}

/* Waits for events; they are handled at the start of the next turn, inside
 * its epoch section (handlers run behaviours, which send). */
static void poll_events(struct es__loop *loop, int timeout_ms)
{
    loop->nevents =
        loop->backend->wait(loop, loop->events, ES__WAIT_EVENTS, timeout_ms);
}

static void dispatch_events(struct es__loop *loop)
{
    struct es__event *ev = loop->events;
    int n = loop->nevents;
    loop->nevents = 0;
    for (int i = 0; i < n; i++) {
        uint64_t data = ev[i].data;
        if (data & 1) { /* an actor's watch: see io.c */
            es__io_ready(loop, (int)((uint32_t)data >> 1),
                         (uint32_t)(data >> 32), ev[i].events);
        } else { /* the runtime's own (es__loop_watch_add()) */
            struct es__watch *w = (struct es__watch *)(uintptr_t)data;
            w->cb(loop, w, ev[i].events);
        }
    }
}

/*
 * Adaptive spinning (es_runtime_opts_t.adaptive_spin). Two measures decide
 * whether a loop spins before it sleeps:
 * - how soon work comes back: an EWMA of the idle gaps, from entering
 *   sleep_until_work() to finding work (in the spin, at the check before
 *   sleeping, or woken from the backend's wait()). Only while it is at most
 *   ES_SPIN_ADAPTIVE_BOUND_US does the loop spin, for a few times the
 *   average (SPIN_MIN_NS to ES_SPIN_ADAPTIVE_MAX_US). A gap counts as at
 *   most SPIN_SAMPLE_CAP_NS, and one such long gap (an idle runtime, a
 *   timer tick) lifts the average above the bound at once: an idle loop
 *   spins at most once, for at most the cap, per idle period;
 * - whether spinning pays: a spin that runs out without finding work makes
 *   the loop skip the next `backoff` chances to spin, a number that doubles
 *   with each such spin in a row (SPIN_BACKOFF_MIN to SPIN_BACKOFF_MAX) and
 *   resets when a spin catches work. Spins run out when the sender cannot
 *   run meanwhile, e.g. when both loops share the one CPU that other
 *   processes leave free and the spin does not yield: then spinning only
 *   delays the work it waits for, and the backoff keeps its cost to one
 *   spin per SPIN_BACKOFF_MAX gaps.
 * The adaptive spin yields the CPU at each poll (spin_until()).
 * Thread: the loop thread only (the state is thread-local, one per loop).
 */
#define SPIN_BOUND_NS (ES_SPIN_ADAPTIVE_BOUND_US * 1000u)
#define SPIN_MAX_NS (ES_SPIN_ADAPTIVE_MAX_US * 1000u)
#define SPIN_SAMPLE_CAP_NS 1000000u /* 1/8 of it is far above the bound */
#define SPIN_EWMA_SHIFT 3           /* each gap weighs 1/8 */
/* A spin lasts SPIN_GAP_FACTOR times the average gap, at least SPIN_MIN_NS,
 * room for jitter: a gap of a few microseconds is often twice its
 * neighbours, and a spin that runs out costs more than one that is long. */
#define SPIN_GAP_FACTOR 4u
#define SPIN_MIN_NS 10000u
#define SPIN_BACKOFF_MIN 8u
#define SPIN_BACKOFF_MAX 1024u

static ES__TLS struct {
    uint64_t gap_avg_ns; /* EWMA of the idle gaps */
    unsigned backoff;    /* chances to skip after a run-out spin; 0 if none */
    unsigned skip;       /* chances still to skip */
} tls_spin = {SPIN_SAMPLE_CAP_NS, 0, 0};

/* Accounts one idle gap that began at `since` and ended with work found;
 * `ran_out` tells whether a spin ran out first. */
static void spin_learn(uint64_t since, uint64_t end, bool spun, bool ran_out)
{
    uint64_t gap = end - since;
    if (gap > SPIN_SAMPLE_CAP_NS)
        gap = SPIN_SAMPLE_CAP_NS;
    int64_t delta = (int64_t)gap - (int64_t)tls_spin.gap_avg_ns;
    tls_spin.gap_avg_ns = (uint64_t)((int64_t)tls_spin.gap_avg_ns +
                                     delta / (1 << SPIN_EWMA_SHIFT));
    if (ran_out) {
        unsigned b = 2 * tls_spin.backoff;
        b = b < SPIN_BACKOFF_MIN ? SPIN_BACKOFF_MIN : b;
        tls_spin.backoff = b < SPIN_BACKOFF_MAX ? b : SPIN_BACKOFF_MAX;
        tls_spin.skip = tls_spin.backoff;
    } else if (spun) {
        tls_spin.backoff = 0;
    }
}

/* How long to poll before sleeping: fixed (spin_us), adaptive, or 0. */
static uint64_t spin_budget_ns(const struct es__loop *loop)
{
    if (loop->rt->opts.adaptive_spin != ES_SPIN_ADAPTIVE_ON)
        return (uint64_t)loop->rt->opts.spin_us * 1000u;
    if (tls_spin.gap_avg_ns > SPIN_BOUND_NS)
        return 0;
    if (tls_spin.skip) {
        tls_spin.skip--;
        return 0;
    }
    uint64_t budget = SPIN_GAP_FACTOR * tls_spin.gap_avg_ns;
    if (budget < SPIN_MIN_NS)
        budget = SPIN_MIN_NS;
    return budget < SPIN_MAX_NS ? budget : SPIN_MAX_NS;
}

/*
 * Polls the rings until `until`. Returns false if it ran out first. With
 * `yield` each poll gives the CPU to any other thread ready to run on it:
 * that is often the very sender the spin waits for (a woken thread tends to
 * be queued on the CPU of its waker), which a busy spin would hold off
 * until the spin ends.
 */
static bool spin_until(struct es__loop *loop, uint64_t until, bool yield)
{
    while (!rings_nonempty(loop) && !stop_requested(loop)) {
        if (es__now_ns() >= until)
            return false;
        if (yield)
            sched_yield();
        else
            ck_pr_stall();
    }
    return true;
}

/* Blocks until there is something to do (see chan.c for the handshake). */
#define OVERFLOW_YIELD_NS (200u * 1000u)

static void sleep_until_work(struct es__loop *loop)
{
    bool adaptive = loop->rt->opts.adaptive_spin == ES_SPIN_ADAPTIVE_ON;
    uint64_t since = adaptive ? es__now_ns() : 0;
    uint64_t spin_ns = spin_budget_ns(loop);
    bool ran_out = false; /* a spin ended without finding work */
    if (spin_ns)
        ran_out = !spin_until(loop, (since ? since : es__now_ns()) + spin_ns,
                              adaptive);
    int timeout = es__timers_timeout_ms(loop);
    int wheel = es__wheel_timeout_ms(loop);
    if (wheel >= 0 && (timeout < 0 || wheel < timeout))
        timeout = wheel;
    if (loop->tctx.overflow_count) {
        /* Messages wait for room in a ring of a loop that is busy (its
         * ring is full); nothing will wake us when it drains. Yield while
         * they moved recently, then look at least once per millisecond. */
        if (es__now_ns() - loop->tctx.overflow_since < OVERFLOW_YIELD_NS) {
            sched_yield();
            return;
        }
    }
    /* Polled at least once per millisecond: overflow, muting, placement. */
    if (loop->tctx.overflow_count || loop->nmutes || loop->nmigrating)
        timeout = timeout < 0 || timeout > 1 ? 1 : timeout;
    if (timeout == 0)
        return; /* a timer is due: no gap that a spin could have caught */
    atomic_store_explicit(&loop->wake_sent_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&loop->sleeping, 1, memory_order_relaxed);
    /* Dekker, loop side: orders the store of `sleeping` before the loads
     * of the ring indices and `stopping`. Pairs with the sender's fence in
     * es__chan_commit() / es__tctx_flush_wakes() and with the one in
     * es_runtime_stop(). */
    atomic_thread_fence(memory_order_seq_cst);
    if (rings_nonempty(loop) || stop_requested(loop)) {
        atomic_store_explicit(&loop->sleeping, 0, memory_order_relaxed);
        if (adaptive)
            spin_learn(since, es__now_ns(), spin_ns != 0, ran_out);
        return;
    }
    ES__STAT_ADD(loop->sleeps, 1);
    poll_events(loop, timeout);
    atomic_store_explicit(&loop->sleeping, 0, memory_order_relaxed);
    uint64_t now = es__now_ns();
    atomic_store_explicit(&loop->awake_since, now, memory_order_relaxed);
    if (adaptive) {
        /* Work came when the sender wrote the wakeup, not when this thread
         * got to run: the wakeup's own latency (tens of microseconds on a
         * VM) is no gap a spin would have waited through. Counting it made
         * a loop that slept once stop spinning for good, and sleep at every
         * gap after (Savina's big, bimodal). */
        uint64_t sent =
            atomic_load_explicit(&loop->wake_sent_ns, memory_order_relaxed);
        uint64_t end = sent > since && sent < now ? sent : now;
        spin_learn(since, end, spin_ns != 0, ran_out);
    }
}

/* Stops every actor here; later arrivals are stopped as they install. */
static void begin_shutdown(struct es__loop *loop)
{
    loop->stopping = true;
    while (loop->actors)
        es__actor_finalize(loop->actors, -ESHUTDOWN);
}

static unsigned turn(struct es__loop *loop)
{
    struct es__tctx *t = &loop->tctx;
    unsigned work;
    ck_epoch_begin(t->rec, NULL);
    if (!loop->stopping && stop_requested(loop))
        begin_shutdown(loop);
    /* IO is not counted as work: after it the loop goes back to
     * the backend's wait() through the sleep handshake, which returns at once
     * when more is ready, instead of polling once more for nothing. */
    dispatch_events(loop);
    work = es__timers_run(loop);
    work += es__wheel_run(loop);
    work += es__spawns_install(loop, ES__SPAWN_BUDGET);
    work += loop->spawn_next != NULL; /* more than the budget: no sleep */
    work += drain_rings(loop);
    work += es__runq_run(loop);
    if (loop->nmutes)
        es__mutes_poll(loop);
    if (loop->migrations)
        es__migrations_run(loop);
    es__tctx_flush_wakes(t);
    ES__TSAN_RELEASE(&loop->rt->epoch);
    ck_epoch_end(t->rec, NULL);
    if (t->rec->n_pending)
        ck_epoch_poll(t->rec);
    ES__STAT_ADD(loop->turns, 1);
    return work;
}

/* Pins the thread to loop->cpu (es_runtime_opts_t.cpus), if one was
 * chosen. es_runtime_new() checked the CPU against the allowed set; a
 * failure here means that set shrank since: the loop then runs unpinned. */
static void pin_thread(struct es__loop *loop)
{
    if (loop->cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(loop->cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (rc)
        es__log(ES_LOG_ERROR,
                "loop %u: cannot pin to CPU %d (%s); it runs "
                "unpinned",
                loop->index, loop->cpu, es_strerror(-rc));
}

void *es__loop_main(void *arg)
{
    struct es__loop *loop = arg;
    es_runtime_t *rt = loop->rt;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pin_thread(loop);
    tls_loop = loop;
    /* A loop that is busy from its first turn counts as saturated at once
     * (placement, actor.c): the clock starts as if it had been awake for
     * long already. */
    atomic_store_explicit(&loop->awake_since, es__now_ns() - (1ull << 40),
                          memory_order_relaxed);
    if (es__thread_bind(rt, &loop->tctx) != 0)
        es__log(ES_LOG_ERROR,
                "loop %u: no memory for its thread record; "
                "sends from this thread will fail",
                loop->index);
    for (;;) {
        unsigned work = turn(loop);
        if (loop->stopping &&
            atomic_load_explicit(&loop->nactors, memory_order_acquire) == 0)
            break;
        if (work == 0)
            sleep_until_work(loop);
        else if (loop->io_watches ||
                 (loop->index == 0 &&
                  atomic_load_explicit(&rt->sig.active, memory_order_relaxed)))
            poll_events(loop, 0);
    }
    ck_epoch_begin(loop->tctx.rec, NULL);
    es__actor_finalize(loop->self, -ESHUTDOWN);
    loop->self = NULL; /* reclaimed after the grace period */
    es__tctx_flush_wakes(&loop->tctx);
    ck_epoch_end(loop->tctx.rec, NULL);
    tls_loop = NULL;
    return NULL;
}

unsigned es__loop_drain(struct es__loop *loop)
{
    /* Actors spawned for it late get START and STOP: the loop is gone, even
     * one whose thread never started (es_runtime_start() failed). */
    loop->stopping = true;
    unsigned n = es__spawns_install(loop, UINT32_MAX);
    struct es__chan *c =
        atomic_load_explicit(&loop->inbound, memory_order_acquire);
    for (; c; c = c->next) {
        es_msg_t m;
        while (es__chan_pop(c, &m)) {
            es__actor_route(loop, &m, c->producer->loop_index);
            n++;
        }
    }
    return n;
}
