/* SPDX-License-Identifier: MIT */
/*
 * Transport between threads: one single-producer single-consumer ck_ring
 * per (sending thread, receiving demux thread) pair, and the wakeup
 * handshake that lets a sleeping demux thread be woken once per sleep.
 *
 * Why SPSC rings and not one MPSC mailbox: ck_ring's MPSC mode makes every
 * producer wait for a producer that was preempted between reserving and
 * committing its slot; on a 2-vCPU machine that collapses throughput by four
 * orders of magnitude. With one ring per producer no thread's preemption can
 * stall another thread's send.
 *
 * Invariants and memory orders:
 * - Each ring has exactly one producer at a time: the thread owning the
 *   es__tctx. A foreign thread's context is handed to a later thread only
 *   after the first exited; the handover is a release store of in_use = 0
 *   by the old owner and an acquire CAS 0 -> 1 by the new one, so the new
 *   producer sees the ring's producer index as the old one left it.
 * - ck_ring orders the slot copy before the producer index store
 *   (ck_pr_fence_store) and the consumer's index load before the slot read
 *   (ck_pr_fence_load): a message is fully visible once dequeued.
 * - A loop's inbound list is a push-only stack: a channel is fully built
 *   before the release CAS that publishes it, the loop reads the head with
 *   acquire, and `next` never changes after publication. Channels are freed
 *   only with the runtime.
 * - Wakeups (Dekker's handshake): the loop stores sleeping = 1, issues a
 *   seq_cst fence, then checks every inbound ring; a sender stores the
 *   message (ring index), issues a seq_cst fence, then loads sleeping. The
 *   two fences guarantee that at least one side sees the other's store: the
 *   loop sees the message and does not sleep, or the sender sees the flag.
 *   The sender then claims the flag with a CAS 1 -> 0, so exactly one sender
 *   writes the wakeup byte per sleep. Demux threads defer this check to the
 *   end of their loop turn (one fence per turn instead of one per message);
 *   the message is already in the ring, so at worst the wakeup is one turn
 *   later.
 * - Overflow: a demux sender never fails for a full ring. A message that
 *   finds the ring full waits in the sender's own queue for that loop, and
 *   every later message to that loop queues behind it until the queue is
 *   empty again, so the stream from one thread to one loop stays FIFO (and
 *   with it every per-pair order). The queue moves on at each flush of the
 *   sender's wakeups; its size is bounded by the mailbox limits of the
 *   messages in it, which muting enforces (actor.c). Foreign threads have
 *   no loop to wait in: they get -EAGAIN (es_send_wait() waits for them).
 */
#include "backend.h"

#include <errno.h>
#include <stdlib.h>

CK_RING_PROTOTYPE(es_msg, es_msg)

ES__TLS struct es__tls_ctx es__tls_ctx;

static struct es__chan *chan_new(struct es__tctx *t, unsigned capacity)
{
    struct es__chan *c = es__aalloc(sizeof(*c));
    if (!c)
        return NULL;
    c->slots = es__aalloc((size_t)capacity * sizeof(es_msg_t));
    if (!c->slots) {
        es__afree(c);
        return NULL;
    }
    ck_ring_init(&c->ring, capacity);
    c->producer = t;
    return c;
}

static void chan_publish(struct es__loop *loop, struct es__chan *c)
{
    struct es__chan *head =
        atomic_load_explicit(&loop->inbound, memory_order_relaxed);
    do {
        c->next = head;
    } while (!atomic_compare_exchange_weak_explicit(
        &loop->inbound, &head, c, memory_order_release, memory_order_relaxed));
}

int es__tctx_init(es_runtime_t *rt, struct es__tctx *t, int loop_index)
{
    t->rt = rt;
    t->loop_index = loop_index;
    t->rec = es__aalloc(sizeof(*t->rec));
    t->chan = es__calloc(rt->nloops, sizeof(*t->chan));
    t->wake_pending = es__calloc(rt->nloops, 1);
    if (!t->rec || !t->chan || !t->wake_pending) {
        es__tctx_destroy(t);
        return -ENOMEM;
    }
    ck_epoch_register(&rt->epoch, t->rec, NULL);
    return 0;
}

/* Frees a context and its channels; the rings must have been drained. */
void es__tctx_destroy(struct es__tctx *t)
{
    if (t->chan) {
        for (unsigned i = 0; i < t->rt->nloops; i++) {
            if (t->chan[i]) {
                es__afree(t->chan[i]->slots);
                es__afree(t->chan[i]);
            }
        }
    }
    if (t->overflow)
        for (unsigned i = 0; i < t->rt->nloops; i++)
            es__msgq_reset(&t->overflow[i]);
    es__free(t->overflow);
    t->overflow = NULL;
    es__free(t->chan);
    es__free(t->wake_pending);
    es__afree(t->rec);
    t->chan = NULL;
    t->wake_pending = NULL;
    t->rec = NULL;
}

/*
 * Which context a thread uses for which runtime. A thread keeps a small
 * list of (runtime serial, context) pairs under one process-wide pthread
 * key, with a one-entry thread-local cache in front. Serials are never
 * reused, so an entry left from a freed runtime can never match a live one.
 * When a thread exits, the key's destructor gives its foreign contexts back
 * to their runtimes' pools, but only for runtimes still registered: the
 * registry lock keeps es_runtime_free() from freeing a runtime meanwhile.
 * These lists outlive runtimes (they go with the thread), so they use libc's
 * allocator, not the hooks, which may be replaced between runtimes.
 */
struct thread_entry {
    uint64_t serial;
    es_runtime_t *rt;
    struct es__tctx *t;
};

struct thread_ctxs {
    unsigned n, cap;
    struct thread_entry *ent;
};

static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static int thread_key_err;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static es_runtime_t *registry;

/* True if rt is a live runtime with that serial; registry_lock is held. */
static bool registered(const es_runtime_t *rt, uint64_t serial)
{
    for (es_runtime_t *r = registry; r; r = r->reg_next)
        if (r == rt && r->serial == serial)
            return true;
    return false;
}

static void thread_exit(void *arg)
{
    struct thread_ctxs *tc = arg;
    pthread_mutex_lock(&registry_lock);
    for (unsigned i = 0; i < tc->n; i++) {
        struct thread_entry *e = &tc->ent[i];
        /* e->t is freed with its runtime: test the runtime first. */
        if (registered(e->rt, e->serial) && e->t->loop_index < 0)
            atomic_store_explicit(&e->t->in_use, 0, memory_order_release);
    }
    pthread_mutex_unlock(&registry_lock);
    free(tc->ent);
    free(tc);
}

static void thread_key_make(void)
{
    thread_key_err = pthread_key_create(&thread_key, thread_exit);
}

void es__registry_add(es_runtime_t *rt)
{
    pthread_mutex_lock(&registry_lock);
    rt->reg_next = registry;
    registry = rt;
    pthread_mutex_unlock(&registry_lock);
}

void es__registry_remove(es_runtime_t *rt)
{
    pthread_mutex_lock(&registry_lock);
    for (es_runtime_t **p = &registry; *p; p = &(*p)->reg_next) {
        if (*p == rt) {
            *p = rt->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

static struct thread_ctxs *thread_ctxs(bool create)
{
    pthread_once(&thread_key_once, thread_key_make);
    if (thread_key_err)
        return NULL;
    struct thread_ctxs *tc = pthread_getspecific(thread_key);
    if (!tc && create) {
        tc = calloc(1, sizeof(*tc));
        if (tc && pthread_setspecific(thread_key, tc) != 0) {
            free(tc);
            tc = NULL;
        }
    }
    return tc;
}

/* Drops entries of runtimes that are gone, to make room. */
static void thread_prune(struct thread_ctxs *tc)
{
    unsigned kept = 0;
    pthread_mutex_lock(&registry_lock);
    for (unsigned i = 0; i < tc->n; i++)
        if (registered(tc->ent[i].rt, tc->ent[i].serial))
            tc->ent[kept++] = tc->ent[i];
    pthread_mutex_unlock(&registry_lock);
    tc->n = kept;
}

int es__thread_bind(es_runtime_t *rt, struct es__tctx *t)
{
    struct thread_ctxs *tc = thread_ctxs(true);
    if (!tc)
        return -ENOMEM;
    if (tc->n == tc->cap)
        thread_prune(tc);
    if (tc->n == tc->cap) {
        unsigned cap = tc->cap ? tc->cap * 2 : 4;
        void *ent = realloc(tc->ent, cap * sizeof(*tc->ent));
        if (!ent)
            return -ENOMEM;
        tc->ent = ent;
        tc->cap = cap;
    }
    tc->ent[tc->n++] = (struct thread_entry){rt->serial, rt, t};
    es__tls_ctx.serial = rt->serial;
    es__tls_ctx.ctx = t;
    return 0;
}

static struct es__tctx *foreign_acquire(es_runtime_t *rt)
{
    struct es__tctx *t;
    pthread_mutex_lock(&rt->tctx_lock);
    for (t = rt->foreign; t; t = t->next) {
        int idle = 0;
        if (atomic_compare_exchange_strong_explicit(&t->in_use, &idle, 1,
                                                    memory_order_acquire,
                                                    memory_order_relaxed))
            break;
    }
    if (t)
        t->last_loop = 0; /* ES_PLACE_CURRENT: this thread sent nothing yet */
    if (!t) {
        t = es__calloc(1, sizeof(*t));
        if (t && es__tctx_init(rt, t, -1) == 0) {
            atomic_store_explicit(&t->in_use, 1, memory_order_relaxed);
            t->next = rt->foreign;
            rt->foreign = t;
        } else {
            es__free(t);
            t = NULL;
        }
    }
    pthread_mutex_unlock(&rt->tctx_lock);
    return t;
}

struct es__tctx *es__tctx_lookup(const es_runtime_t *rt)
{
    struct thread_ctxs *tc = thread_ctxs(false);
    for (unsigned i = 0; tc && i < tc->n; i++) {
        if (tc->ent[i].serial == rt->serial) {
            es__tls_ctx.serial = rt->serial;
            es__tls_ctx.ctx = tc->ent[i].t;
            return tc->ent[i].t;
        }
    }
    return NULL;
}

struct es__tctx *es__tctx_get(es_runtime_t *rt)
{
    struct es__tctx *t = es__tctx_current(rt);
    if (t)
        return t;
    t = foreign_acquire(rt);
    if (t && es__thread_bind(rt, t) != 0) {
        atomic_store_explicit(&t->in_use, 0, memory_order_release);
        t = NULL;
    }
    return t;
}

void es__loop_wake(struct es__loop *loop, struct es__tctx *t)
{
    int expected = 1;
    /* The caller issued the sender-side seq_cst fence. The CAS only picks
     * one writer per sleep, so it can be relaxed: the byte it sends is what
     * wakes the loop, and the loop re-reads the rings after its wait(). */
    if (atomic_load_explicit(&loop->sleeping, memory_order_relaxed) &&
        atomic_compare_exchange_strong_explicit(&loop->sleeping, &expected, 0,
                                                memory_order_relaxed,
                                                memory_order_relaxed)) {
        /* When work came, for the woken loop's adaptive spin (loop.c). */
        atomic_store_explicit(&loop->wake_sent_ns, es__now_ns(),
                              memory_order_relaxed);
        loop->backend->wake(loop);
        ES__STAT_ADD(t->wakeups_written, 1);
    } else {
        ES__STAT_ADD(t->wakeups_saved, 1);
    }
}

static void mark_wake(struct es__tctx *t, unsigned index)
{
    if (!t->wake_pending[index]) {
        t->wake_pending[index] = 1;
        t->wake_count++;
    }
}

/* The next free slot of c, or NULL if c is full (its producer only). */
static es_msg_t *ring_reserve(struct es__chan *c)
{
    es_msg_t *slot = ck_ring_enqueue_reserve_spsc_es_msg(&c->ring, c->slots);
    ES__TSAN_ACQUIRE(&c->ring.c_head); /* the consumer is done with slot */
    return slot;
}

/* Publishes the slot ring_reserve() gave. */
static void ring_commit(struct es__chan *c)
{
    ES__TSAN_RELEASE(c);
    ck_ring_enqueue_commit_spsc(&c->ring);
}

/* Moves queued overflow into the rings while they have room. */
static void overflow_move(struct es__tctx *t)
{
    uint32_t before = t->overflow_count;
    for (unsigned i = 0; i < t->rt->nloops && t->overflow_count; i++) {
        struct es__msgq *q = &t->overflow[i];
        if (!q->count)
            continue;
        struct es__chan *c = t->chan[i];
        es_msg_t *slot;
        while (q->count && (slot = ring_reserve(c))) {
            (void)es__msgq_pop(q, slot);
            ring_commit(c);
            t->overflow_count--;
        }
        mark_wake(t, i); /* the ring is full or has new messages */
        if (!q->count)
            es__msgq_reset(q);
    }
    if (t->overflow_count != before)
        t->overflow_since = es__now_ns();
}

void es__tctx_flush_wakes(struct es__tctx *t)
{
    if (t->overflow_count)
        overflow_move(t);
    if (!t->wake_count)
        return;
    /* Dekker, sender side (demux senders, once for a batch): orders the
     * ring commits of this turn before the loads of `sleeping` in
     * es__loop_wake(). Pairs with the loop's fence in sleep_until_work(). */
    atomic_thread_fence(memory_order_seq_cst);
    for (unsigned i = 0; i < t->rt->nloops; i++) {
        if (t->wake_pending[i]) {
            t->wake_pending[i] = 0;
            es__loop_wake(&t->rt->loops[i], t);
        }
    }
    t->wake_count = 0;
}

/* A slot at the back of t's overflow queue to loop `index`. */
static es_msg_t *overflow_slot(struct es__tctx *t, unsigned index, int *err)
{
    if (!t->overflow &&
        !(t->overflow = es__calloc(t->rt->nloops, sizeof(*t->overflow)))) {
        *err = -ENOMEM;
        return NULL;
    }
    struct es__msgq *q = &t->overflow[index];
    if (q->count == q->cap && (*err = es__msgq_grow(q)) != 0)
        return NULL;
    t->reserved_overflow = true;
    return &q->buf[(q->head + q->count) & (q->cap - 1)];
}

es_msg_t *es__chan_reserve(struct es__tctx *t, unsigned index, int *err)
{
    struct es__chan *c = t->chan[index];
    t->reserved_overflow = false;
    if (!c) {
        c = chan_new(t, t->rt->opts.channel_capacity);
        if (!c) {
            *err = -ENOMEM;
            return NULL;
        }
        t->chan[index] = c;
        chan_publish(&t->rt->loops[index], c);
    }
    bool demux = t->loop_index >= 0;
    if (demux && t->overflow && t->overflow[index].count)
        return overflow_slot(t, index, err); /* behind what waits already */
    es_msg_t *slot = ring_reserve(c);
    if (!slot && demux)
        return overflow_slot(t, index, err);
    if (!slot) {
        *err = -EAGAIN;
        /* A full ring whose consumer may be asleep: wake it now, not at the
         * end of this turn, or the sender only ever sees -EAGAIN. */
        es__tctx_flush_wakes(t);
    }
    return slot;
}

void es__chan_commit(struct es__tctx *t, unsigned index)
{
    if (t->reserved_overflow) {
        t->reserved_overflow = false;
        t->overflow[index].count++;
        if (t->overflow_count++ == 0)
            t->overflow_since = es__now_ns();
        ES__STAT_ADD(t->overflowed, 1);
        mark_wake(t, index); /* its ring is full: its loop must not sleep */
        return;
    }
    ring_commit(t->chan[index]);
    if (t->loop_index >= 0) {
        mark_wake(t, index);
    } else {
        /* Dekker, sender side (foreign senders, per message): orders the
         * producer-index store of the commit above before the load of
         * `sleeping`. Pairs with the loop's fence in sleep_until_work(). */
        atomic_thread_fence(memory_order_seq_cst);
        es__loop_wake(&t->rt->loops[index], t);
    }
}

int es__chan_push(struct es__tctx *t, unsigned index, const es_msg_t *m)
{
    int err;
    es_msg_t *slot = es__chan_reserve(t, index, &err);
    if (!slot)
        return err;
    *slot = *m;
    es__chan_commit(t, index);
    return 0;
}

unsigned es__tctx_drain_overflow(struct es__tctx *t)
{
    unsigned n = 0;
    for (unsigned i = 0; t->overflow && i < t->rt->nloops; i++) {
        es_msg_t m;
        while (es__msgq_pop(&t->overflow[i], &m)) {
            t->overflow_count--;
            es__actor_route(&t->rt->loops[i], &m, t->loop_index);
            n++;
        }
        es__msgq_reset(&t->overflow[i]);
    }
    return n;
}

bool es__chan_pop(struct es__chan *c, es_msg_t *out)
{
    if (!ck_ring_dequeue_spsc_es_msg(&c->ring, c->slots, out))
        return false;
    ES__TSAN_ACQUIRE(c);
    ES__TSAN_RELEASE(&c->ring.c_head);
    return true;
}

bool es__chan_nonempty(const struct es__chan *c)
{
    return ck_ring_size(&c->ring) != 0;
}
