/* SPDX-License-Identifier: MIT */
/*
 * Actors: spawn, send, stop, and delivery on the home thread.
 *
 * A message reaches an actor by one of two paths. From another thread it
 * travels in the sender's ring to the actor's home loop (chan.c), which
 * routes it: straight into the behaviour when nothing is queued before it,
 * else to the back of the actor's local queue. From the home thread itself
 * it goes to the local queue and the actor joins the run queue, so that a
 * behaviour never runs inside another behaviour. Each sender always uses
 * the same path to a given actor, which keeps per-pair FIFO order.
 *
 * The mailbox limit is counted, not stored: `sent` counts reservations
 * (senders, atomic increment), `done` counts messages fully handled (home
 * thread, release store). A send succeeds while sent - done < capacity.
 * Senders read `done` only when their cached `done_seen` says the mailbox
 * may be full, so the cache line the home thread writes for every message
 * is not pulled to the senders' cores on every send. `done_seen` may be
 * stale (smaller than `done`): that only sends a sender to the slow path.
 * The counters wrap; they are compared by signed difference (see
 * mailbox_reserve() for the invariant and the memory orders).
 *
 * A stopped actor leaves the table at once (new sends get -ESRCH), gets
 * ES_MSG_STOP (an actor installed after its loop began to stop gets START
 * and STOP back to back), loses its timers and subscriptions, hands
 * its queued messages to the dead letters and is freed after an epoch grace
 * period, because a sender may still be reading it.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

#define MSGQ_MIN 8u

static ES__TLS es_actor_t *tls_current;

/* An idle actor (an idle connection) costs at least this much (issue 9). */
_Static_assert(sizeof(struct es_actor) <= 256, "an actor fits 256 bytes");

es_actor_t *es__actor_current(void)
{
    return tls_current;
}

/* --- local queue -----------------------------------------------------------
 */

int es__msgq_grow(struct es__msgq *q)
{
    if (q->cap > UINT32_MAX / 2)
        return -EOVERFLOW;
    uint32_t cap = q->cap ? q->cap * 2 : MSGQ_MIN;
    es_msg_t *buf = es__malloc((size_t)cap * sizeof(*buf));
    if (!buf)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->count; i++)
        buf[i] = q->buf[(q->head + i) & (q->cap - 1)];
    es__free(q->buf);
    q->buf = buf;
    q->cap = cap;
    q->head = 0;
    return 0;
}

void es__msgq_reset(struct es__msgq *q)
{
    es__free(q->buf);
    memset(q, 0, sizeof(*q));
}

/* --- run queue and actor list (home thread) ------------------------------- */

static void runq_push(struct es__loop *loop, es_actor_t *a)
{
    if (a->in_runq)
        return;
    a->in_runq = true;
    a->run_next = NULL;
    a->run_prev = loop->runq_tail;
    if (loop->runq_tail)
        loop->runq_tail->run_next = a;
    else
        loop->runq_head = a;
    loop->runq_tail = a;
}

static void runq_remove(struct es__loop *loop, es_actor_t *a)
{
    if (!a->in_runq)
        return;
    if (a->run_prev)
        a->run_prev->run_next = a->run_next;
    else
        loop->runq_head = a->run_next;
    if (a->run_next)
        a->run_next->run_prev = a->run_prev;
    else
        loop->runq_tail = a->run_prev;
    a->in_runq = false;
}

static void list_link(struct es__loop *loop, es_actor_t *a)
{
    a->prev = NULL;
    a->next = loop->actors;
    if (loop->actors)
        loop->actors->prev = a;
    loop->actors = a;
}

static void list_unlink(struct es__loop *loop, es_actor_t *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else if (loop->actors == a)
        loop->actors = a->next;
    if (a->next)
        a->next->prev = a->prev;
    a->prev = a->next = NULL;
}

unsigned es__runq_run(struct es__loop *loop)
{
    unsigned handled = 0;
    while (handled < ES__RUNQ_BUDGET && loop->runq_head) {
        es_actor_t *a = loop->runq_head;
        runq_remove(loop, a);
        /* Only what was queued when the visit began: an actor that keeps
         * sending to itself must not starve the others. */
        uint32_t n =
            a->q.count < ES__ACTOR_BUDGET ? a->q.count : ES__ACTOR_BUDGET;
        es_msg_t m;
        for (uint32_t i = 0; i < n && !a->stopped; i++) {
            if (!es__msgq_pop(&a->q, &m))
                break;
            es__actor_dispatch(a, &m);
            handled++;
        }
        if (!a->stopped && a->q.count)
            runq_push(loop, a);
        else if (!a->stopped)
            es__msgq_reset(&a->q); /* idle actors keep no queue storage */
        /* One fence per visit keeps other loops from sleeping on mail. */
        es__tctx_flush_wakes(&loop->tctx);
    }
    return handled;
}

/* --- delivery (home thread) ------------------------------------------------
 */

/* A user message no longer counts against a's mailbox (home thread). The
 * release store pairs with the acquire load in mailbox_reserve(). */
static void mailbox_done(es_actor_t *a)
{
    a->done_local++;
    atomic_store_explicit(&a->done, a->done_local, memory_order_release);
}

static int call_behaviour(es_actor_t *a, es_msg_t *m)
{
    es_actor_t *prev = tls_current;
    tls_current = a;
    int rc = a->behaviour(a, m);
    tls_current = prev;
    ES__STAT_ADD(a->loop->received, 1);
    return rc;
}

void es__actor_dispatch(es_actor_t *a, es_msg_t *m)
{
    if (m->type == ES__MSG_STOP_REQ) {
        a->stop_requested = true;
    } else {
        if (m->type == ES_MSG_START)
            a->started = true;
        int rc = call_behaviour(a, m);
        if (rc < 0 && !a->stop_requested) {
            es__log(ES_LOG_WARN,
                    "actor %#llx stopped: its behaviour returned "
                    "%d (%s)",
                    (unsigned long long)a->id, rc, es_strerror(rc));
            a->stop_requested = true;
        }
        if (m->free_cb)
            es_msg_release(m);
        if (m->type >= ES_MSG_USER)
            mailbox_done(a);
    }
    if (a->stop_requested)
        es__actor_finalize(a);
}

void es__actor_route(struct es__loop *loop, es_msg_t *m)
{
    es_actor_t *a = es__table_lookup(loop->rt->table, m->to);
    if (!a) {
        es__dead_letter(loop->rt, loop, m);
        return;
    }
    if (a->installed && a->q.count == 0) {
        es__actor_dispatch(a, m);
        return;
    }
    if (es__msgq_push(&a->q, m, false) != 0) {
        es__log(ES_LOG_ERROR, "no memory to queue a message for %#llx",
                (unsigned long long)a->id);
        if (m->type >= ES_MSG_USER)
            mailbox_done(a); /* or its slot would stay taken for good */
        es__dead_letter(loop->rt, loop, m);
        return;
    }
    if (a->installed)
        runq_push(loop, a);
}

static void actor_reclaim(ck_epoch_entry_t *e)
{
    es_actor_t *a =
        (es_actor_t *)((char *)e - offsetof(es_actor_t, epoch_entry));
    ES__TSAN_ACQUIRE(&a->rt->epoch);
    es__table_release(a->rt->table, a->id);
    es__free(a);
}

void es__actor_finalize(es_actor_t *a)
{
    if (a->stopped)
        return;
    struct es__loop *loop = a->loop;
    es_runtime_t *rt = a->rt;
    a->stopped = true;
    es__table_remove(rt->table, a);
    if (a->started) {
        es_msg_t stop = es_msg_make(ES_MSG_STOP);
        stop.to = a->id;
        (void)call_behaviour(a, &stop);
    }
    es__timers_cancel_actor(loop, a);
    es__io_unwatch_actor(a);
    if (atomic_load_explicit(&rt->sig.active, memory_order_relaxed))
        es__signals_drop_actor(rt, a->id);
    es_msg_t m;
    while (es__msgq_pop(&a->q, &m))
        es__dead_letter(rt, loop, &m);
    es__msgq_reset(&a->q);
    runq_remove(loop, a);
    if (!a->is_loop) {
        list_unlink(loop, a);
        atomic_fetch_sub_explicit(&loop->nactors, 1, memory_order_relaxed);
    }
    if (a->state_free)
        a->state_free(a->state);
    if (a->ext_free)
        a->ext_free(a->ext);
    ck_epoch_call(loop->tctx.rec, &a->epoch_entry, actor_reclaim);
}

void es__actor_install(struct es__loop *loop, es_actor_t *a)
{
    es_msg_t start = es_msg_make(ES_MSG_START);
    start.to = a->id;
    a->installed = true;
    list_link(loop, a);
    if (loop->stopping) {
        /* Every successful spawn sees START and STOP, even this late. */
        es__actor_dispatch(a, &start);
        es__actor_finalize(a);
        return;
    }
    if (!tls_current && a->q.count == 0) {
        /* Top level (a spawn request from a ring): no behaviour is running
         * on this thread, so START can be delivered now, without queue
         * storage. */
        es__actor_dispatch(a, &start);
        return;
    }
    if (es__msgq_push(&a->q, &start, true) != 0) {
        es__log(ES_LOG_ERROR, "no memory to start actor %#llx",
                (unsigned long long)a->id);
        es__actor_finalize(a);
        return;
    }
    runq_push(loop, a);
}

void es__dead_letter(es_runtime_t *rt, struct es__loop *loop, es_msg_t *m)
{
    if (es__msg_is_internal(m->type)) {
        es_msg_release(m);
        return;
    }
    ES__STAT_ADD(loop->dead_letters, 1);
    if (rt->opts.dead_letter)
        rt->opts.dead_letter(rt->opts.dead_letter_arg, m->to, m);
    es_msg_release(m);
}

static int loop_behaviour(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES__MSG_CALL) {
        struct es__call *call = msg->ptr;
        call->fn(self->loop, call);
    }
    return 0;
}

int es__actor_new_loop_actor(struct es__loop *loop)
{
    es_actor_t *a = es__calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->rt = loop->rt;
    a->loop = loop;
    a->capacity = ES__MAILBOX_MAX;
    a->is_loop = true;
    a->behaviour = loop_behaviour;
    a->installed = true;
    a->started = true;
    int rc = es__table_add(loop->rt->table, a);
    if (rc) {
        es__free(a);
        return rc;
    }
    loop->self = a;
    loop->self_id = a->id;
    return 0;
}

/* --- sending (any thread) --------------------------------------------------
 */

/*
 * Mailbox admission, lock-free, any number of senders.
 *
 * Invariant: a message counts against a's mailbox from the reservation that
 * admits it until its behaviour returns, and a reservation is admitted only
 * if fewer than `capacity` reservations precede it that are not yet done.
 * `sent`, `done` and `done_seen` are free-running 32-bit counters; only
 * their differences mean anything, and a difference is read as a signed
 * number (serial-number arithmetic, RFC 1982). That is exact as long as the
 * true difference lies within +-2^31, which holds because capacity is at
 * most ES__MAILBOX_MAX (2^30): s - done never exceeds capacity plus the
 * senders in flight, and goes negative only by the messages handled while
 * this sender sat between its fetch_add and its loads.
 *
 * Negative is the case that used to be misread: a sender preempted after
 * its fetch_add can find `done` (or `done_seen`, refreshed by another
 * sender) already past its own position s, because messages reserved after
 * s were handled meanwhile. The unsigned difference then wrapped to ~2^32,
 * "full", and es_send() returned -EAGAIN with the mailbox nearly empty
 * (issue 8; tests/src/test_mailbox.c never_full_below_capacity). Signed, it
 * is below capacity: admitted, correctly. The one misreading left needs a
 * sender to stay preempted inside this function while 2^31 messages to the
 * same actor are handled; it would return a spurious -EAGAIN, which the
 * caller may retry.
 *
 * Memory orders:
 * - fetch_add / fetch_sub on `sent` are relaxed: only their atomicity
 *   matters (each reservation gets its own position; a refused one gives
 *   its position back). No data is published through `sent`; the message
 *   itself travels in a ring ordered by ck_ring's fences.
 * - `done_seen` is relaxed: a hint. Every value it holds was once a value
 *   of `done`, so it is never ahead of `done`; a stale (smaller) value only
 *   sends a sender to the slow path, where `done` is read.
 * - `done` is loaded with acquire, pairing with the release store in
 *   es__actor_dispatch() after each handled message: a sender admitted
 *   because message n was done happens after the handling of message n.
 *   The count alone would be right with relaxed; the edge keeps the
 *   happens-before story simple (and visible to TSan) at no cost on x86.
 */
static inline bool mailbox_room(unsigned s, unsigned done, uint32_t capacity)
{
    return (int32_t)(s - done) < (int32_t)capacity;
}

static bool mailbox_reserve(es_actor_t *a)
{
    unsigned s = atomic_fetch_add_explicit(&a->sent, 1, memory_order_relaxed);
    unsigned seen = atomic_load_explicit(&a->done_seen, memory_order_relaxed);
    if (mailbox_room(s, seen, a->capacity))
        return true;
    unsigned done = atomic_load_explicit(&a->done, memory_order_acquire);
    atomic_store_explicit(&a->done_seen, done, memory_order_relaxed);
    if (mailbox_room(s, done, a->capacity))
        return true;
    atomic_fetch_sub_explicit(&a->sent, 1, memory_order_relaxed);
    return false;
}

/* Where the message goes: a slot of a's local queue or of t's ring. The
 * message is written straight into it (one copy), then committed. */
static es_msg_t *send_slot(struct es__tctx *t, es_actor_t *a, bool local,
                           int *err)
{
    if (!local)
        return es__chan_reserve(t, a->loop->index, err);
    struct es__msgq *q = &a->q;
    if (q->count == q->cap && (*err = es__msgq_grow(q)) != 0)
        return NULL;
    return &q->buf[(q->head + q->count) & (q->cap - 1)];
}

static void send_commit(struct es__tctx *t, es_actor_t *a, bool local)
{
    if (!local) {
        es__chan_commit(t, a->loop->index);
        return;
    }
    a->q.count++;
    if (a->installed)
        runq_push(a->loop, a);
}

/* The body of es__send, inside the sender's epoch section. */
static int send_in_section(es_runtime_t *rt, struct es__tctx *t,
                           es_actor_id_t to, const es_msg_t *msg, bool capped)
{
    es_actor_t *a = es__table_lookup(rt->table, to);
    if (!a)
        return -ESRCH;
    if (capped && !mailbox_reserve(a)) {
        ES__STAT_ADD(t->mailbox_full, 1);
        return -EAGAIN;
    }
    bool local = (int)a->loop->index == t->loop_index;
    int rc;
    es_msg_t *slot = send_slot(t, a, local, &rc);
    if (!slot) {
        if (capped)
            atomic_fetch_sub_explicit(&a->sent, 1, memory_order_relaxed);
        if (rc == -EAGAIN)
            ES__STAT_ADD(t->mailbox_full, 1);
        return rc;
    }
    es_actor_t *cur = tls_current;
    *slot = *msg;
    slot->to = to;
    slot->from = cur && cur->rt == rt ? cur->id : ES_ACTOR_NONE;
    send_commit(t, a, local);
    if (t->loop_index < 0)
        t->last_loop = a->loop->index + 1; /* for ES_PLACE_CURRENT */
    ES__STAT_ADD(t->sent, 1);
    return 0;
}

int es__send(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
             bool capped)
{
    struct es__tctx *t = es__tctx_get(rt);
    if (!t)
        return -ENOMEM;
    /* Demux threads are inside a section for their whole loop turn. */
    if (t->loop_index >= 0)
        return send_in_section(rt, t, to, msg, capped);
    ck_epoch_begin(t->rec, NULL);
    int rc = send_in_section(rt, t, to, msg, capped);
    ES__TSAN_RELEASE(&rt->epoch);
    ck_epoch_end(t->rec, NULL);
    return rc;
}

int es_send(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg)
{
    if (!rt || !msg || msg->type < ES_MSG_USER)
        return -EINVAL;
    /* actor.h: the payload is inline (at most ES_MSG_INLINE bytes) or at
     * ptr; a destructor needs something to free. */
    ES_ASSERT(msg->ptr || msg->len <= ES_MSG_INLINE);
    ES_ASSERT(msg->ptr || !msg->free_cb);
    return es__send(rt, to, msg, true);
}

int es_stop(es_runtime_t *rt, es_actor_id_t id)
{
    if (!rt)
        return -EINVAL;
    es_msg_t m = es_msg_make(ES__MSG_STOP_REQ);
    return es__send(rt, id, &m, false);
}

/* --- spawning ---------------------------------------------------------------
 */

static unsigned least_loaded(const es_runtime_t *rt)
{
    unsigned best = 0, best_n = UINT32_MAX;
    for (unsigned i = 0; i < rt->nloops; i++) {
        unsigned n =
            atomic_load_explicit(&rt->loops[i].nactors, memory_order_relaxed);
        if (n < best_n) {
            best = i;
            best_n = n;
        }
    }
    return best;
}

/* The loop of the live actor `near`, or -ESRCH. Its `loop` is set before
 * publication and never changes; the epoch section keeps it from being
 * freed while we read it (demux threads are in one for their whole turn). */
static int loop_of(es_runtime_t *rt, struct es__tctx *t, es_actor_id_t near)
{
    bool enter = t->loop_index < 0;
    if (enter)
        ck_epoch_begin(t->rec, NULL);
    es_actor_t *a = es__table_lookup(rt->table, near);
    int index = a ? (int)a->loop->index : -ESRCH;
    if (enter) {
        ES__TSAN_RELEASE(&rt->epoch);
        ck_epoch_end(t->rec, NULL);
    }
    return index;
}

/* The home loop's index, or a negative errno. Precedence (actor.h): loop,
 * then near, then placement. */
static int choose_loop(es_runtime_t *rt, struct es__tctx *t,
                       const es_spawn_opts_t *opts)
{
    if (opts->loop != ES_LOOP_ANY)
        return opts->loop - 1;
    if (opts->near != ES_ACTOR_NONE)
        return loop_of(rt, t, opts->near);
    if (opts->placement == ES_PLACE_LEAST_LOADED)
        return (int)least_loaded(rt);
    if (opts->placement == ES_PLACE_CURRENT && t->loop_index >= 0)
        return t->loop_index;
    if (opts->placement == ES_PLACE_CURRENT && t->last_loop)
        return (int)t->last_loop - 1;
    return (
        int)(atomic_fetch_add_explicit(&rt->rr_next, 1, memory_order_relaxed) %
             rt->nloops);
}

/*
 * The spawn stack: how an actor spawned by one thread reaches another
 * thread's loop (any foreign thread, main() before es_runtime_start(), or
 * a behaviour spawning on another loop). It is a channel without a bound,
 * so spawning never fails for capacity.
 *
 * Invariants and memory orders:
 * - loop->spawned is a Treiber stack linked through run_next, which an
 *   actor uses only once installed (it is then in no run queue yet). The
 *   spawner fills the whole actor, publishes it in the table, sets
 *   run_next to the head it read and pushes with a release CAS; the loop
 *   takes the whole stack with an acquire exchange, so it sees every field
 *   the spawner wrote. Nothing is ever popped singly, so ABA cannot bite:
 *   a push whose CAS succeeds links to the very pointer that is the head.
 * - The loop reverses what it took onto spawn_next (its own, FIFO: one
 *   spawner's actors start in spawn order) and installs at most
 *   ES__SPAWN_BUDGET per turn; a non-empty spawn_next counts as work, so
 *   the loop does not sleep on it.
 * - Wakeups (Dekker, as for the rings in chan.c): the spawner pushes,
 *   issues a seq_cst fence (foreign spawners at once; demux spawners with
 *   their batch, es__tctx_flush_wakes()) and loads `sleeping`; the loop
 *   stores sleeping = 1, issues its seq_cst fence and then checks the
 *   rings and es__spawns_pending(). One of the two sees the other.
 * - Ordering: a message to a handle that is not installed yet is queued on
 *   the actor (es__actor_route, send_commit), and es__actor_install puts
 *   START in front of it. Shutdown: actors count in nactors from the spawn,
 *   so a loop does not exit while any wait; those that arrive after it
 *   stopped get START and STOP at once, on the loop or, once it has
 *   exited, in es__loop_drain() on the settling thread.
 */
static void spawn_push(struct es__tctx *t, struct es__loop *loop, es_actor_t *a)
{
    es_actor_t *head =
        atomic_load_explicit(&loop->spawned, memory_order_relaxed);
    do {
        a->run_next = head;
    } while (!atomic_compare_exchange_weak_explicit(
        &loop->spawned, &head, a, memory_order_release, memory_order_relaxed));
    if (t->loop_index >= 0) {
        /* Woken with this turn's sends, one fence for all of them. */
        if (!t->wake_pending[loop->index]) {
            t->wake_pending[loop->index] = 1;
            t->wake_count++;
        }
        return;
    }
    /* Dekker, spawner side: orders the push above before the load of
     * `sleeping`. Pairs with the loop's fence in sleep_until_work(). */
    atomic_thread_fence(memory_order_seq_cst);
    es__loop_wake(loop, t);
}

bool es__spawns_pending(struct es__loop *loop)
{
    return atomic_load_explicit(&loop->spawned, memory_order_relaxed) != NULL;
}

unsigned es__spawns_install(struct es__loop *loop, unsigned budget)
{
    if (!loop->spawn_next &&
        atomic_load_explicit(&loop->spawned, memory_order_relaxed)) {
        es_actor_t *a = atomic_exchange_explicit(&loop->spawned, NULL,
                                                 memory_order_acquire);
        es_actor_t *fifo = NULL;
        while (a) { /* the stack is newest first */
            es_actor_t *next = a->run_next;
            a->run_next = fifo;
            fifo = a;
            a = next;
        }
        loop->spawn_next = fifo;
    }
    unsigned n = 0;
    while (n < budget && loop->spawn_next) {
        es_actor_t *a = loop->spawn_next;
        loop->spawn_next = a->run_next;
        a->run_next = NULL;
        es__actor_install(loop, a);
        n++;
    }
    return n;
}

int es__spawn(es_runtime_t *rt, const es_spawn_opts_t *opts, void *ext,
              es_state_free_cb ext_free, es_actor_id_t *out)
{
    if (!rt || !opts || !opts->behaviour || !out)
        return -EINVAL;
    if (opts->loop < ES_LOOP_ANY || opts->loop > (int)rt->nloops)
        return -EINVAL;
    if (opts->mailbox_capacity > ES__MAILBOX_MAX)
        return -EINVAL; /* mailbox_reserve() relies on it */
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire))
        return -ESHUTDOWN;
    struct es__tctx *t = es__tctx_get(rt);
    if (!t)
        return -ENOMEM;
    int index = choose_loop(rt, t, opts);
    if (index < 0)
        return index;
    es_actor_t *a = es__calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    struct es__loop *loop = &rt->loops[index];
    a->rt = rt;
    a->loop = loop;
    a->capacity = opts->mailbox_capacity ? opts->mailbox_capacity
                                         : rt->opts.mailbox_capacity;
    a->behaviour = opts->behaviour;
    a->state = opts->state;
    a->state_free = opts->state_free;
    a->ext = ext;
    a->ext_free = ext_free;
    int rc = es__table_add(rt->table, a);
    if (rc) {
        es__free(a);
        return rc;
    }
    atomic_fetch_add_explicit(&loop->nactors, 1, memory_order_relaxed);
    /* Read before the install or push: after it, a may run, stop and be
     * freed. */
    *out = a->id;
    if (index == t->loop_index)
        es__actor_install(loop, a);
    else
        spawn_push(t, loop, a);
    return 0;
}

int es_spawn(es_runtime_t *rt, const es_spawn_opts_t *opts, es_actor_id_t *out)
{
    return es__spawn(rt, opts, NULL, NULL, out);
}

uint32_t es__actor_backlog(const es_actor_t *a)
{
    return atomic_load_explicit(&a->sent, memory_order_relaxed) - a->done_local;
}

/* --- accessors
 * ---------------------------------------------------------------- */

void es_actor_stop(es_actor_t *self)
{
    ES_ASSERT(es__loop_owned(self->loop));
    self->stop_requested = true;
}

es_actor_id_t es_actor_self(const es_actor_t *self)
{
    ES_ASSERT(es__loop_owned(self->loop));
    return self->id;
}

void *es_actor_state(const es_actor_t *self)
{
    ES_ASSERT(es__loop_owned(self->loop));
    return self->state;
}

void es_actor_set_state(es_actor_t *self, void *state)
{
    ES_ASSERT(es__loop_owned(self->loop));
    self->state = state;
}

es_runtime_t *es_actor_runtime(const es_actor_t *self)
{
    ES_ASSERT(es__loop_owned(self->loop));
    return self->rt;
}

int es_actor_loop_index(const es_actor_t *self)
{
    ES_ASSERT(es__loop_owned(self->loop));
    return (int)self->loop->index;
}
