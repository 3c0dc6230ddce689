/* SPDX-License-Identifier: MIT */
/*
 * The runtime: creates the demux threads and everything they share (actor
 * table, epoch, signal routing), and takes it all down again. Shutdown
 * order: es_runtime_stop() raises `stopping` and wakes every loop; each
 * loop stops its actors (ES_MSG_STOP), keeps turning until the actors on
 * their way to it have arrived and stopped too, then exits. The thread in
 * es_runtime_wait() joins them, hands what is left in the rings to the dead
 * letters and runs the last epoch grace period, after which every actor is
 * freed.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 1024u

static atomic_uint_fast64_t next_serial = 1;

static unsigned round_up_pow2(unsigned v)
{
    unsigned p = 2;
    while (p < v && p < (1u << 30))
        p <<= 1;
    return p;
}

/* opts.backend, overridden by ES_BACKEND, AUTO resolved: EPOLL or
 * IO_URING. AUTO is epoll: io_uring's readiness polls measured slower
 * (docs/design.md, "IO backends"). */
static int check_backend(es_runtime_opts_t *o)
{
    if (o->backend < ES_BACKEND_AUTO || o->backend > ES_BACKEND_IO_URING)
        return -EINVAL;
    const char *env = getenv("ES_BACKEND");
    if (env && *env) {
        if (strcmp(env, "epoll") == 0)
            o->backend = ES_BACKEND_EPOLL;
        else if (strcmp(env, "io_uring") == 0)
            o->backend = ES_BACKEND_IO_URING;
        else if (strcmp(env, "auto") == 0)
            o->backend = ES_BACKEND_AUTO;
        else
            es__log(ES_LOG_WARN,
                    "ES_BACKEND=%s is not epoll, io_uring or auto: ignored",
                    env);
    }
    if (o->backend == ES_BACKEND_AUTO)
        o->backend = ES_BACKEND_EPOLL;
    return 0;
}

static int check_opts(const es_runtime_opts_t *in, es_runtime_opts_t *out)
{
    *out = in ? *in : (es_runtime_opts_t){0};
    cpu_set_t allowed;
    if (!out->threads && out->cpus_in_order == 1 &&
        sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
        out->threads = (unsigned)CPU_COUNT(&allowed); /* one per CPU */
    } else if (!out->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        out->threads = n > 0 ? (unsigned)n : 1;
    }
    if (out->threads > MAX_THREADS)
        return -EINVAL;
    if (!out->mailbox_capacity)
        out->mailbox_capacity = ES_MAILBOX_DEFAULT;
    if (out->mailbox_capacity > ES__MAILBOX_MAX)
        return -EINVAL;
    if (out->colocate < -1 || out->colocate > 1 || out->shed < -1 ||
        out->shed > 1)
        return -EINVAL;
    if (!out->shed) /* resolved here: loops read only 1 or -1 */
        out->shed = ES_SHED_DEFAULT ? 1 : -1;
    if (!out->channel_capacity)
        out->channel_capacity = ES_CHANNEL_DEFAULT;
    if (out->channel_capacity > (1u << 24))
        return -EINVAL;
    out->channel_capacity = round_up_pow2(out->channel_capacity);
    switch (out->adaptive_spin) {
    case 0: /* resolved here, so loops read only ON or OFF */
        out->adaptive_spin =
            out->spin_us ? ES_SPIN_ADAPTIVE_OFF : ES_SPIN_ADAPTIVE_DEFAULT;
        break;
    case ES_SPIN_ADAPTIVE_ON:
        if (out->spin_us) /* a fixed spin and an adaptive one contradict */
            return -EINVAL;
        break;
    case ES_SPIN_ADAPTIVE_OFF:
        break;
    default:
        return -EINVAL;
    }
    if (out->cpus_in_order < 0 || out->cpus_in_order > 1 ||
        (out->cpus_in_order && out->ncpus) || (out->ncpus && !out->cpus))
        return -EINVAL;
    return check_backend(out);
}

/* The n-th (from 0) CPU of set, which holds more than n. */
static int nth_cpu(const cpu_set_t *set, int n)
{
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, set) && n-- == 0)
            return c;
    return -1;
}

/*
 * Resolves opts.cpus / opts.cpus_in_order into each loop's `cpu` (-1: not
 * pinned), which the loop applies at thread start (loop.c). Every CPU must
 * be in the process's allowed set now: a CPU outside it would fail only
 * later, on the loop's thread, where no caller sees the error. The
 * caller's list is not kept.
 */
static int resolve_cpus(es_runtime_t *rt)
{
    es_runtime_opts_t *o = &rt->opts;
    for (unsigned i = 0; i < rt->nloops; i++)
        rt->loops[i].cpu = -1;
    if (!o->ncpus && !o->cpus_in_order)
        return 0;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return -errno;
    int n = CPU_COUNT(&allowed);
    for (unsigned j = 0; j < o->ncpus; j++) {
        int c = o->cpus[j];
        if (c < 0 || c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed)) {
            es__log(ES_LOG_ERROR,
                    "es_runtime_new: cpus[%u] = %d is not among the %d CPUs "
                    "this process may run on (sched_getaffinity)",
                    j, c, n);
            return -EINVAL;
        }
    }
    for (unsigned i = 0; i < rt->nloops; i++)
        rt->loops[i].cpu = o->ncpus ? o->cpus[i % o->ncpus]
                                    : nth_cpu(&allowed, (int)(i % (unsigned)n));
    o->cpus = NULL;
    return 0;
}

int es_runtime_new(const es_runtime_opts_t *opts, es_runtime_t **out)
{
    if (!out)
        return -EINVAL;
    es_runtime_t *rt = es__calloc(1, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    int rc = check_opts(opts, &rt->opts);
    if (rc) {
        es__free(rt);
        return rc;
    }
    rt->serial = atomic_fetch_add(&next_serial, 1);
    rt->nloops = rt->opts.threads;
    rt->sig.watch.fd = -1;
    pthread_mutex_init(&rt->tctx_lock, NULL);
    pthread_mutex_init(&rt->cleanup_lock, NULL);
    ck_epoch_init(&rt->epoch);
    rt->loops = es__calloc(rt->nloops, sizeof(*rt->loops));
    rc = rt->loops ? es__table_new(&rt->table) : -ENOMEM;
    if (rc == 0)
        rc = resolve_cpus(rt);
    for (unsigned i = 0; rc == 0 && i < rt->nloops; i++)
        rc = es__loop_init(rt, &rt->loops[i], i);
    if (rc == 0)
        rc = es__signals_init(rt);
    es__registry_add(rt);
    if (rc) {
        rt->nloops = rt->loops ? rt->nloops : 0;
        es_runtime_free(rt);
        return rc == -ENFILE ? -EMFILE : rc;
    }
    *out = rt;
    return 0;
}

int es_runtime_start(es_runtime_t *rt)
{
    if (!rt)
        return -EINVAL;
    if (rt->started)
        return -EALREADY;
    rt->started = true;
    for (unsigned i = 0; i < rt->nloops; i++) {
        struct es__loop *loop = &rt->loops[i];
        int rc = pthread_create(&loop->thread, NULL, es__loop_main, loop);
        if (rc) {
            es_runtime_stop(rt);
            es_runtime_wait(rt);
            return -rc;
        }
        loop->thread_started = true;
    }
    return 0;
}

int es_runtime_stop(es_runtime_t *rt)
{
    if (!rt)
        return -EINVAL;
    if (atomic_exchange_explicit(&rt->stopping, 1, memory_order_acq_rel))
        return -EALREADY;
    struct es__tctx *t = es__tctx_current(rt);
    struct es__tctx dummy = {0};
    /* Dekker, stopper side: orders the store of `stopping` above before
     * the loads of `sleeping` in es__loop_wake(). Pairs with the loop's
     * fence in sleep_until_work(), which then reads `stopping`. */
    atomic_thread_fence(memory_order_seq_cst);
    for (unsigned i = 0; i < rt->nloops; i++)
        es__loop_wake(&rt->loops[i], t ? t : &dummy);
    return 0;
}

/*
 * After the loops exited: hands every message still in a ring to the dead
 * letters, and runs the last grace period so every stopped actor is freed.
 * Repeats while behaviours run here (late spawns get START and STOP on this
 * thread) send more.
 */
static void settle(es_runtime_t *rt)
{
    bool more = true;
    while (more) {
        more = false;
        for (unsigned i = 0; i < rt->nloops; i++) {
            more |= es__loop_drain(&rt->loops[i]) > 0;
            more |= es__tctx_drain_overflow(&rt->loops[i].tctx) > 0;
            more |= es__loop_drain_parked(&rt->loops[i]) > 0;
        }
    }
    for (unsigned i = 0; i < rt->nloops; i++)
        if (rt->loops[i].tctx.rec)
            ck_epoch_barrier(rt->loops[i].tctx.rec);
}

int es_runtime_wait(es_runtime_t *rt)
{
    if (!rt || !rt->started)
        return -EINVAL;
    struct es__tctx *t = es__tctx_current(rt);
    if (t && t->loop_index >= 0)
        return -EPERM;
    if (rt->waited)
        return 0;
    for (unsigned i = 0; i < rt->nloops; i++) {
        if (rt->loops[i].thread_started)
            pthread_join(rt->loops[i].thread, NULL);
        rt->loops[i].thread_started = false;
    }
    rt->waited = true;
    settle(rt);
    return 0;
}

int es_runtime_run(es_runtime_t *rt)
{
    int rc = es_runtime_start(rt);
    return rc ? rc : es_runtime_wait(rt);
}

/* For a runtime whose threads never ran: settle what was queued for it. */
static void settle_unstarted(es_runtime_t *rt)
{
    for (unsigned i = 0; i < rt->nloops; i++)
        rt->loops[i].stopping = true;
    settle(rt);
    for (unsigned i = 0; i < rt->nloops; i++)
        if (rt->loops[i].self) {
            es__actor_finalize(rt->loops[i].self, -ESHUTDOWN);
            rt->loops[i].self = NULL;
        }
    settle(rt);
}

static void free_contexts(es_runtime_t *rt)
{
    for (unsigned i = 0; i < rt->nloops; i++) {
        es__tctx_destroy(&rt->loops[i].tctx);
        es__loop_destroy(&rt->loops[i]);
    }
    while (rt->foreign) {
        struct es__tctx *t = rt->foreign;
        rt->foreign = t->next;
        es__tctx_destroy(t);
        es__free(t);
    }
}

void es_runtime_free(es_runtime_t *rt)
{
    if (!rt)
        return;
    if (rt->started && !rt->waited) {
        es_runtime_stop(rt);
        es_runtime_wait(rt);
    }
    /* Module cleanups (a resolver thread, say) stop their senders first. */
    while (rt->cleanups) {
        struct es__cleanup *c = rt->cleanups;
        rt->cleanups = c->next;
        c->fn(c->arg);
        es__free(c);
    }
    if (rt->started)
        settle(rt); /* sends that raced with the end of es_runtime_wait */
    else if (rt->table)
        settle_unstarted(rt);
    es__registry_remove(rt);
    if (rt->loops && rt->sig.watch.fd >= 0)
        es__signals_destroy(rt);
    if (rt->loops)
        free_contexts(rt);
    es__free(rt->loops);
    es__table_free(rt->table);
    es__links_free(rt);
    es__names_free(rt);
    es__requests_free(rt);
    pthread_mutex_destroy(&rt->tctx_lock);
    pthread_mutex_destroy(&rt->cleanup_lock);
    es__free(rt);
}

int es__runtime_on_free(es_runtime_t *rt, void (*fn)(void *), void *arg)
{
    struct es__cleanup *c = es__malloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&rt->cleanup_lock);
    c->next = rt->cleanups;
    rt->cleanups = c;
    pthread_mutex_unlock(&rt->cleanup_lock);
    return 0;
}

bool es__runtime_running(const es_runtime_t *rt)
{
    return rt->started && !rt->waited;
}

unsigned es_runtime_threads(const es_runtime_t *rt)
{
    return rt->nloops;
}

int es_runtime_backend(const es_runtime_t *rt)
{
    return rt ? rt->opts.backend : -EINVAL;
}

es_actor_id_t es_runtime_loop_actor(const es_runtime_t *rt, unsigned index)
{
    /* The loop actor is freed when the runtime stops: its handle stays
     * readable (and stale: sends to it then get -ESRCH). */
    if (index >= rt->nloops)
        return ES_ACTOR_NONE;
    return rt->loops[index].self_id;
}

int es_runtime_current_loop(const es_runtime_t *rt)
{
    struct es__tctx *t = es__tctx_current(rt);
    return t && t->loop_index >= 0 ? t->loop_index : -EPERM;
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void add_sender(es_stats_t *s, struct es__tctx *t)
{
    s->msgs_sent += LOAD(t->sent);
    s->mailbox_full += LOAD(t->mailbox_full);
    s->wakeups_written += LOAD(t->wakeups_written);
    s->wakeups_saved += LOAD(t->wakeups_saved);
    s->overflowed += LOAD(t->overflowed);
}

static void add_loop(es_stats_t *s, struct es__loop *l)
{
    add_sender(s, &l->tctx);
    s->msgs_received += LOAD(l->received);
    s->dead_letters += LOAD(l->dead_letters);
    s->timers_fired += LOAD(l->timers_fired);
    s->actors += LOAD(l->nactors);
    s->loop_turns += LOAD(l->turns);
    s->sleeps += LOAD(l->sleeps);
    s->mutes += LOAD(l->muted);
    s->migrations += LOAD(l->migrated);
    s->shed += LOAD(l->shed);
}

int es_runtime_stats(const es_runtime_t *rt, int index, es_stats_t *out)
{
    if (!rt || !out || index < -1 ||
        (index >= 0 && (unsigned)index >= rt->nloops))
        return -EINVAL;
    es_runtime_t *mrt = (es_runtime_t *)rt; /* the lock, not the data */
    *out = (es_stats_t){0};
    if (index >= 0) {
        add_loop(out, &mrt->loops[index]);
        return 0;
    }
    for (unsigned i = 0; i < rt->nloops; i++)
        add_loop(out, &mrt->loops[i]);
    pthread_mutex_lock(&mrt->tctx_lock);
    for (struct es__tctx *t = mrt->foreign; t; t = t->next)
        add_sender(out, t);
    pthread_mutex_unlock(&mrt->tctx_lock);
    es__links_stats(rt, out);
    es__names_stats(rt, out);
    es__requests_stats(rt, out);
    return 0;
}
