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
 * Sends between actors never fail for capacity: a send from a behaviour to
 * a full mailbox is accepted over the limit and the sending actor is muted
 * (see "muting" below): it is not run again until the receiver drains.
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

/*
 * Queue storage of the smallest size comes from a per-loop stack of spare
 * buffers: an idle actor gives its queue back after every visit
 * (es__msgq_reset()), and the next message to it takes one again, which
 * made malloc and free a tenth of a message's cost (Savina's big).
 */
int es__msgq_grow(struct es__msgq *q)
{
    if (q->cap > UINT32_MAX / 2)
        return -EOVERFLOW;
    uint32_t cap = q->cap ? q->cap * 2 : MSGQ_MIN;
    struct es__loop *loop = cap == MSGQ_MIN ? es__loop_current() : NULL;
    if (loop && loop->nqcache) {
        q->buf = loop->qcache[--loop->nqcache];
        q->cap = cap;
        q->head = 0;
        return 0;
    }
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
    struct es__loop *loop = q->cap == MSGQ_MIN ? es__loop_current() : NULL;
    if (loop && loop->nqcache < ES__QCACHE_MAX)
        loop->qcache[loop->nqcache++] = q->buf;
    else
        es__free(q->buf);
    memset(q, 0, sizeof(*q));
}

static void place_check(es_actor_t *a);
static void maybe_migrate(struct es__loop *loop, es_actor_t *a);
static struct es__loop *shed_target(struct es__loop *loop);
static bool shed(struct es__loop *loop, es_actor_t *a, struct es__loop *to);
static void park(struct es__loop *loop, const es_msg_t *m);
static void migrate_in(struct es__loop *y, es_msg_t *m);
static void flushed(struct es__loop *y, es_actor_id_t id);

/* --- run queue and actor list (home thread) ------------------------------- */

static void runq_push(struct es__loop *loop, es_actor_t *a)
{
    if (a->in_runq || a->mute_count)
        return; /* a muted actor joins when es__unmute() resumes it */
    a->in_runq = true;
    loop->runq_len++;
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
    loop->runq_len--;
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

/* Load shedding (see "placement" below): runnable actors that make a loop's
 * work parallel, the time between two actors shed, and how long the shedding
 * loop refuses co-location moves onto itself. */
#define SHED_WIDTH 4u
#define SHED_INTERVAL_NS (200u * 1000u)
#define SHED_HOLD_NS (50u * 1000u * 1000u)

unsigned es__runq_run(struct es__loop *loop)
{
    unsigned handled = 0;
    /* An idle loop to shed one actor to, if this one is saturated with
     * parallel work (see "Load shedding" below). */
    struct es__loop *shed_to =
        loop->runq_len >= SHED_WIDTH ? shed_target(loop) : NULL;
    while (handled < ES__RUNQ_BUDGET && loop->runq_head) {
        es_actor_t *a = loop->runq_head;
        runq_remove(loop, a);
        /* Only what was queued when the visit began: an actor that keeps
         * sending to itself must not starve the others. */
        uint32_t n =
            a->q.count < ES__ACTOR_BUDGET ? a->q.count : ES__ACTOR_BUDGET;
        es_msg_t m;
        for (uint32_t i = 0; i < n && !a->stopped && !a->mute_count; i++) {
            if (!es__msgq_pop(&a->q, &m))
                break;
            es__actor_dispatch(a, &m);
            handled++;
        }
        if (shed_to && !a->stopped && shed(loop, a, shed_to)) {
            shed_to = NULL; /* one per turn */
        } else if (!a->stopped && a->q.count) {
            runq_push(loop, a);
        } else if (!a->stopped) {
            es__msgq_reset(&a->q); /* idle actors keep no queue storage */
            if (a->move_to)
                maybe_migrate(loop, a);
        }
        /* One fence per visit keeps other loops from sleeping on mail. */
        es__tctx_flush_wakes(&loop->tctx);
    }
    return handled;
}

/* --- delivery (home thread) ------------------------------------------------
 */

/* A user message no longer counts against a's mailbox (home thread). The
 * release store pairs with the acquire load in mailbox_reserve(). */
static void unmute_waiters(es_actor_t *a, bool gone);

/* Messages per placement window (see "placement" below). */
#define PLACE_WINDOW 64u
/* The window of an actor with no hot sender yet: a pair split at spawn
 * finds each other after a few cross-thread hops, not 64. */
#define PLACE_FIRST_WINDOW 16u

static inline uint16_t place_window(const es_actor_t *a)
{
    return atomic_load_explicit(&a->hot, memory_order_relaxed)
               ? PLACE_WINDOW
               : PLACE_FIRST_WINDOW;
}

/* One vote for the sender of a handled message: Boyer-Moore's majority
 * vote, so a sender of most of a window ends as the candidate. */
static inline void sample_sender(es_actor_t *a, es_actor_id_t from)
{
    if (from == a->hot_cand)
        a->hot_votes++;
    else if (a->hot_votes)
        a->hot_votes--;
    else {
        a->hot_cand = from;
        a->hot_votes = 1;
    }
    if (++a->win_n >= place_window(a))
        place_check(a);
}

static void mailbox_done(es_actor_t *a)
{
    a->done_local++;
    atomic_store_explicit(&a->done, a->done_local, memory_order_release);
    if (atomic_load_explicit(&a->muters, memory_order_relaxed))
        unmute_waiters(a, false);
}

/* One call in ES_PROF_EVERY, timed: see introspect.c. */
__attribute__((noinline)) static int call_timed(struct es__loop *loop,
                                                es_actor_t *a, es_msg_t *m)
{
    uint64_t t0 = es__now_ns();
    int rc = a->behaviour(a, m);
    es__prof_add(loop, a->id, (es__now_ns() - t0) * ES_PROF_EVERY);
    return rc;
}

static inline int call_behaviour(es_actor_t *a, es_msg_t *m)
{
    es_actor_t *prev = tls_current;
    struct es__loop *loop = a->loop;
    tls_current = a;
    int rc = __builtin_expect(++loop->prof.tick % ES_PROF_EVERY != 0, 1)
                 ? a->behaviour(a, m)
                 : call_timed(loop, a, m);
    tls_current = prev;
    ES__STAT_ADD(loop->received, 1);
    return rc;
}

/* A deadline of the loop's wheel (deadline.c): a module's own timeout,
 * which must not wait in a queue after es__deadline_clear(). */
static bool is_deadline(const es_msg_t *m)
{
    return m->type == ES_MSG_TIMER && m->inl.u64[0] == ES__DEADLINE_TAG &&
           m->inl.u64[1] == 0;
}

void es__actor_drop_timer(es_actor_t *a, uint64_t timer_id)
{
    struct es__msgq *q = &a->q;
    uint32_t mask = q->cap - 1, kept = 0;
    for (uint32_t i = 0; i < q->count; i++) {
        es_msg_t *m = &q->buf[(q->head + i) & mask];
        if (m->type == ES_MSG_TIMER && m->inl.u64[1] == timer_id)
            continue;
        if (kept != i)
            q->buf[(q->head + kept) & mask] = *m;
        kept++;
    }
    q->count = kept;
}

/* es_actor_exit(): the actor of the behaviour being run and its reason,
 * taken by es__actor_dispatch() when the call returns. */
static ES__TLS es_actor_t *exit_actor;
static ES__TLS int exit_reason;

/* The behaviour's answer to m: a negative errno stops a, with that as the
 * reason (*reason). */
__attribute__((noinline, cold)) static void
behaviour_failed(es_actor_t *a, int rc, int *reason)
{
    if (a->stop_requested)
        return;
    es__log(ES_LOG_WARN, "actor %#llx stopped: its behaviour returned %d (%s)",
            (unsigned long long)a->id, rc, es_strerror(rc));
    a->stop_requested = true;
    *reason = rc;
}

static inline void behave(es_actor_t *a, es_msg_t *m, int *reason)
{
    int rc = call_behaviour(a, m);
    if (__builtin_expect(rc < 0, 0))
        behaviour_failed(a, rc, reason);
}

/* A link signal reached a (ES__MSG_LINK_EXIT, see link.c). If the link is
 * still there, a traps it as ES_MSG_EXIT or stops with -ENOLINK. */
static void link_exit(es_actor_t *a, es_msg_t *m, int *reason)
{
    bool trap;
    if (!es__link_exit_take(a, m->from, &trap))
        return; /* unlinked meanwhile */
    if (trap) {
        m->type = ES_MSG_EXIT;
        behave(a, m, reason);
    } else {
        a->stop_requested = true;
        *reason = -ENOLINK;
    }
}

void es__actor_dispatch(es_actor_t *a, es_msg_t *m)
{
    /* A muted actor is not run: what reaches it directly (a timer, a
     * message routed to an empty queue) waits in its queue, and
     * es_timer_stop() takes a cancelled timer's expiries back out of it.
     * Readiness of its fds is the exception: epoll reports it again and
     * again, so it is delivered (a connection actor stops reading itself
     * while muted, see actors/conn.c). So are a module's deadlines. */
    if (a->mute_count && m->type != ES_MSG_IO && !is_deadline(m) &&
        es__msgq_push(&a->q, m, false) == 0)
        return;
    int reason = 0; /* why it stops, if it does (es_msg_reason()) */
    uint32_t type = m->type;
    if (__builtin_expect(type >= ES_MSG_USER && !(type & ES__MSG_REQUEST_BIT),
                         1)) {
        /* The common case first: a plain user message. */
        es_actor_id_t from = m->from;
        behave(a, m, &reason);
        if (m->free_cb)
            es_msg_release(m);
        mailbox_done(a);
        if (!a->is_loop && a->rt->opts.colocate >= 0)
            sample_sender(a, from); /* no vote when nothing moves */
    } else if (type == ES__MSG_STOP_REQ) {
        a->stop_requested = true;
    } else if (m->type == ES_MSG_DOWN && !es__down_take(a, es_msg_ref(m))) {
        return; /* demonitored: see link.c */
    } else if (m->type == ES__MSG_LINK_EXIT) {
        link_exit(a, m, &reason);
    } else if ((m->type == ES__MSG_REQ_REPLY || m->type == ES__MSG_REQ_FAIL) &&
               !es__request_settle(a, m)) {
        return; /* its request had an outcome already: see request.c */
    } else {
        if (m->type == ES_MSG_START)
            a->started = true;
        es_actor_id_t from = m->from;
        if (m->type & ES__MSG_REQUEST_BIT) {
            struct es__cur_req save;
            es__request_begin(a, m, &save);
            behave(a, m, &reason);
            es__request_end(a, &save);
        } else {
            behave(a, m, &reason);
        }
        if (m->free_cb)
            es_msg_release(m);
        if (m->type >= ES_MSG_USER) {
            mailbox_done(a);
            if (!a->is_loop && a->rt->opts.colocate >= 0)
                sample_sender(a, from); /* no vote when nothing moves */
        }
    }
    if (a->stop_requested) {
        if (exit_actor == a) {
            if (reason == 0)
                reason = exit_reason;
            exit_actor = NULL;
        }
        es__actor_finalize(a, reason);
    }
}

/* Sends m on to the loop its target moved to (home thread of `loop`). */
static void forward(struct es__loop *loop, struct es__loop *home, es_msg_t *m)
{
    if (es__loop_current() != loop) {
        /* The settling thread, after the loops exited: no ring to use. */
        es__actor_route(home, m, (int)loop->index);
        return;
    }
    if (es__chan_push(&loop->tctx, home->index, m) != 0) {
        es__log(ES_LOG_ERROR, "no memory to forward a message to %#llx",
                (unsigned long long)m->to);
        es__dead_letter(loop->rt, loop, m);
    }
}

void es__actor_route(struct es__loop *loop, es_msg_t *m, int src)
{
    es_actor_t *a = es__table_lookup(loop->rt->table, m->to);
    if (!a) {
        es__dead_letter(loop->rt, loop, m);
        return;
    }
    struct es__loop *home = es__actor_home(a);
    if (home != loop) {
        forward(loop, home, m); /* it migrated: see "placement" */
        return;
    }
    uint8_t tr = atomic_load_explicit(&a->transit, memory_order_acquire);
    if (tr != ES__TRANSIT_NONE &&
        !(tr == ES__TRANSIT_ARRIVED && src == (int)a->transit_from)) {
        park(loop, m); /* after what its old loop still forwards */
        return;
    }
    if (a->installed && a->q.count == 0 && !a->mute_count) {
        es__actor_dispatch(a, m);
        if (a->move_to)
            maybe_migrate(loop, a);
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

void es__actor_finalize(es_actor_t *a, int reason)
{
    if (a->stopped)
        return;
    struct es__loop *loop = a->loop;
    es_runtime_t *rt = a->rt;
    a->stopped = true;
    es__table_remove(rt->table, a);
    if (atomic_load_explicit(&a->muters, memory_order_relaxed))
        unmute_waiters(a, true); /* they wait for nothing now */
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
    es__names_stop(a);         /* before any DOWN: see names.c */
    es__requests_stop(a);      /* before links: request watches are its own */
    es__links_stop(a, reason); /* after what it sent in its STOP */
    (void)es__prof_take(loop, a->id);
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
        es__actor_finalize(a, -ESHUTDOWN);
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
        es__actor_finalize(a, -ENOMEM);
        return;
    }
    runq_push(loop, a);
}

/* --- placement: sampling and migration (home threads) ---------------------
 *
 * Co-location. Each actor takes a majority vote over the senders of every
 * window of PLACE_WINDOW messages it handles (sample_sender()), or of
 * PLACE_FIRST_WINDOW while it has no hot sender yet. A sender
 * that sent most of the window is the actor's `hot` sender. If that sender
 * lives on another loop, the actor is marked to move there
 * (place_check()). Two actors that are each other's hot sender would swap
 * loops for ever, so of such a pair only the one with the larger handle
 * moves. Only actors that own no fd and are not connections move, and only
 * between behaviours, with an empty queue, unmuted, and not already moving
 * (maybe_migrate()).
 *
 * The move. The old loop X detaches the actor A: it unlinks A from its
 * list and takes A's timers, which keep their ids. It marks A MOVING,
 * stores A's new home Y, and sends ES__MSG_MIGRATE to Y through its own
 * ring to Y. The handle does not change. From then on, senders reach Y:
 * - a sender on X uses its ring to Y, behind the MIGRATE;
 * - a message that went to X anyway (its sender read the old home) is
 *   forwarded by X through the same ring, also behind the MIGRATE;
 * - anything else that reaches Y for A while A is in transit (a ring from
 *   a third thread, or a sender on Y itself) is parked on Y.
 * Y installs A on MIGRATE (ARRIVED) and delivers what comes from X's ring
 * at once. X then makes sure it has forwarded everything that was sent to
 * it for A:
 * - from every other loop L: X sends L an ES__MSG_MARK_REQ, and L answers
 *   with ES__MSG_MARK through its own stream to X. L handles the request
 *   after the switch, so whatever L sent to A's old home is ahead of the
 *   MARK in that stream, its overflow queue included;
 * - from foreign threads, which have no overflow: X waits for an epoch
 *   grace period. After it, no foreign sender can still be inside a send
 *   that read the old home. X notes the producer index of each of their
 *   rings and waits until it has consumed up to there.
 * With every MARK in and every foreign ring consumed to its mark, X sends
 * ES__MSG_FLUSHED to Y, again behind the forwards. Y then moves
 * A's parked messages, in arrival order, behind what A has, and clears
 * the transit flag. So every sender's messages reach A in the order they
 * were sent: those that went to X come before FLUSHED, and those that went
 * to Y directly wait for it.
 */

#define MIGRATE_MAX 64u /* migrations out of one loop in progress */

struct es__migration {
    ck_epoch_entry_t entry;
    struct es__migration *next;
    es_actor_id_t id;
    unsigned to;
    bool graced;    /* the grace period after the move has passed */
    unsigned marks; /* MARKs back from the other loops */
    unsigned nsnap;
    struct es__ring_mark {
        struct es__chan *c;
        unsigned pos; /* producer index when the grace period ended */
    } * snap;
};

/* A loop that has not slept for SATURATED_NS has no time to spare. When
 * the actor's own loop is saturated too, moving it would trade parallelism
 * for locality, so it stays; an actor on a loop that idles moves to a busy
 * one, because its loop adds nothing but hops. */
#define SATURATED_NS (5u * 1000u * 1000u)

static bool saturated(struct es__loop *loop)
{
    if (atomic_load_explicit(&loop->sleeping, memory_order_relaxed))
        return false;
    uint64_t since =
        atomic_load_explicit(&loop->awake_since, memory_order_relaxed);
    return es__now_ns() - since > SATURATED_NS;
}

/* End of a window: publish the hot sender and decide where to live. */
static void place_check(es_actor_t *a)
{
    /* A first hot sender needs a clear majority: Boyer-Moore's count is
     * the candidate's messages minus the others', so win_n / 2 means it
     * sent three quarters of the window. Senders picked at random (Savina's
     * big) reach that by chance about once per million windows, where
     * win_n / 4 moved an actor every few hundred. A sender that is hot
     * already keeps the title with win_n / 4 (five eighths), so a steady
     * partner's rare misses do not flap it. */
    uint16_t need = atomic_load_explicit(&a->hot, memory_order_relaxed)
                        ? a->win_n / 4
                        : a->win_n / 2;
    es_actor_id_t cand = a->hot_votes >= need ? a->hot_cand : ES_ACTOR_NONE;
    a->win_n = 0;
    a->hot_votes = 0;
    a->hot_cand = ES_ACTOR_NONE;
    a->move_to = 0;
    if (atomic_load_explicit(&a->hot, memory_order_relaxed) != cand) {
        a->talks_back = a->shed_away = false; /* about the old hot sender */
        a->hot_age = 0;
    } else if (a->hot_age < UINT8_MAX) {
        a->hot_age++;
    }
    atomic_store_explicit(&a->hot, cand, memory_order_relaxed);
    if (cand == ES_ACTOR_NONE || cand == a->id || a->ext || a->io_head)
        return;
    es_actor_t *p = es__table_lookup(a->rt->table, cand);
    if (!p || p->is_loop)
        return;
    struct es__loop *home = es__actor_home(p);
    if (home == a->loop || (saturated(home) && saturated(a->loop)))
        return; /* both busy: parallel work, not a chain to shorten */
    if (a->shed_away && !a->talks_back)
        return; /* shed from there: see "Load shedding" */
    if (es__now_ns() <
        atomic_load_explicit(&home->shed_until, memory_order_relaxed))
        return; /* it sheds work: do not hand it back */
    if (atomic_load_explicit(&p->hot, memory_order_relaxed) == a->id &&
        a->id < p->id)
        return; /* a pair: the other one moves */
    a->move_to = (uint16_t)(home->index + 1);
}

static void migration_graced(ck_epoch_entry_t *e)
{
    struct es__migration *mg =
        (struct es__migration *)((char *)e -
                                 offsetof(struct es__migration, entry));
    mg->graced = true;
}

/* Moves a from x to loop `move_to` (x's thread, a eligible and not in
 * x's run queue; its queue moves with it). False if out of memory. */
static bool migrate_out(struct es__loop *x, es_actor_t *a)
{
    es_runtime_t *rt = x->rt;
    struct es__loop *y = &rt->loops[a->move_to - 1];
    a->move_to = 0;
    struct es__migration *mg = es__calloc(1, sizeof(*mg));
    int err;
    /* Reserve the MIGRATE's slot first: past the switch below nothing may
     * fail. Nothing else is sent from this thread before the commit. */
    es_msg_t *slot = mg ? es__chan_reserve(&x->tctx, y->index, &err) : NULL;
    if (!slot) {
        es__free(mg);
        return false; /* no memory: it stays */
    }
    mg->id = a->id;
    mg->to = y->index;
    struct es__timer *timers = es__timers_detach(x, a);
    list_unlink(x, a);
    a->installed = false;
    a->transit_from = (uint16_t)x->index;
    atomic_store_explicit(&a->transit, ES__TRANSIT_MOVING,
                          memory_order_relaxed);
    /* Release: a sender that reads the new home sees MOVING. */
    __atomic_store_n(&a->loop, y, __ATOMIC_RELEASE);
    atomic_fetch_add_explicit(&y->nactors, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&x->nactors, 1, memory_order_relaxed);
    *slot = es_msg_make(ES__MSG_MIGRATE);
    slot->to = y->self_id;
    slot->ptr = a;
    slot->inl.u64[0] = (uint64_t)(uintptr_t)timers;
    slot->inl.u64[1] = es__prof_take(x, a->id); /* its time goes along */
    es__chan_commit(&x->tctx, y->index);
    ck_epoch_call(x->tctx.rec, &mg->entry, migration_graced);
    mg->next = x->migrations;
    x->migrations = mg;
    x->nmigrating++;
    ES__STAT_ADD(x->migrated, 1);
    for (unsigned i = 0; i < rt->nloops; i++) {
        if (i == x->index)
            continue;
        es_msg_t req = es_msg_u64(ES__MSG_MARK_REQ, (uint64_t)(uintptr_t)mg);
        req.inl.u64[1] = x->index;
        if (es__send(rt, rt->loops[i].self_id, &req, false) != 0)
            mg->marks++; /* that loop is gone: nothing more comes from it */
    }
    return true;
}

/*
 * Load shedding. Co-location gathers a producer and its consumers on one
 * loop; when they have more work than that loop can do while another loop
 * idles, the busy loop hands consumers over, one per SHED_INTERVAL_NS:
 * - the loop is saturated (awake for SATURATED_NS) and has at least
 *   SHED_WIDTH actors runnable at the start of the turn: parallel work,
 *   not one chain (threadring's token keeps one actor runnable);
 * - another loop is not saturated: it slept in the last SATURATED_NS;
 * - the actor shed is a consumer: its hot sender is another actor on this
 *   loop, has been for a whole window (`hot_age`), and it has never sent
 *   to that sender (`talks_back`). Moving one
 *   side of a conversation (ping-pong, chameneos's creatures and mall)
 *   would put a thread wakeup into every exchange, while a consumer's
 *   producer just goes on sending through a ring.
 * The shedding loop then refuses co-location moves onto itself for
 * SHED_HOLD_NS (shed_until), or the consumers' votes would bring them
 * straight back; it keeps refreshing that while it sheds. A shed actor
 * moves with its queue, which goes ahead of everything sent to it later.
 * Shedding stops by itself once the other loop stops sleeping.
 */

static struct es__loop *shed_target(struct es__loop *loop)
{
    es_runtime_t *rt = loop->rt;
    if (rt->nloops < 2 || rt->opts.colocate < 0 || rt->opts.shed < 0 ||
        loop->stopping || loop->nmigrating >= MIGRATE_MAX)
        return NULL;
    uint64_t now = es__now_ns();
    if (now - loop->shed_last < SHED_INTERVAL_NS || !saturated(loop))
        return NULL;
    /* The next loop after this one that is not saturated, a sleeping one
     * first: with more than two, the load spreads round the ring. */
    struct es__loop *idle = NULL;
    for (unsigned k = 1; k < rt->nloops; k++) {
        struct es__loop *y = &rt->loops[(loop->index + k) % rt->nloops];
        if (atomic_load_explicit(&y->sleeping, memory_order_relaxed))
            return y;
        if (!idle && !saturated(y))
            idle = y;
    }
    return idle;
}

/* Sheds a (just visited on `loop`, not in the run queue) to `to` if it is
 * a consumer that may move (see above). */
static bool shed(struct es__loop *loop, es_actor_t *a, struct es__loop *to)
{
    if (a->is_loop || a->stop_requested || a->mute_count || a->io_head ||
        a->ext || !a->started || a->talks_back || es__requests_pending(a) ||
        atomic_load_explicit(&a->transit, memory_order_relaxed) ||
        atomic_load_explicit(&loop->rt->stopping, memory_order_relaxed))
        return false;
    es_actor_id_t hot = atomic_load_explicit(&a->hot, memory_order_relaxed);
    if (hot == ES_ACTOR_NONE || hot == a->id || a->hot_age == 0)
        return false; /* not a consumer for a whole window yet */
    es_actor_t *p = es__table_lookup(loop->rt->table, hot);
    if (!p || p->is_loop || es__actor_home(p) != loop)
        return false;
    uint64_t now = es__now_ns();
    loop->shed_last = now;
    atomic_store_explicit(&loop->shed_until, now + SHED_HOLD_NS,
                          memory_order_relaxed);
    a->move_to = (uint16_t)(to->index + 1);
    a->shed_away = true;
    if (!migrate_out(loop, a)) {
        runq_push(loop, a); /* no memory: it stays */
        return true;
    }
    ES__STAT_ADD(loop->shed, 1);
    return true;
}

static void maybe_migrate(struct es__loop *loop, es_actor_t *a)
{
    if (a->stopped || a->stop_requested || a->mute_count || a->q.count ||
        a->in_runq || a->io_head || a->ext || !a->started || loop->stopping ||
        es__requests_pending(a) || loop->nmigrating >= MIGRATE_MAX ||
        atomic_load_explicit(&a->transit, memory_order_relaxed) ||
        atomic_load_explicit(&loop->rt->stopping, memory_order_relaxed)) {
        a->move_to = 0;
        return;
    }
    (void)migrate_out(loop, a);
}

/* ES__MSG_MIGRATE on the new loop y: a moves in. */
static void migrate_in(struct es__loop *y, es_msg_t *m)
{
    es_actor_t *a = m->ptr;
    a->installed = true;
    list_link(y, a);
    es__timers_adopt(y, a, (struct es__timer *)(uintptr_t)m->inl.u64[0]);
    if (m->inl.u64[1])
        es__prof_add(y, a->id, m->inl.u64[1]);
    atomic_store_explicit(&a->transit, ES__TRANSIT_ARRIVED,
                          memory_order_relaxed);
    if (y->stopping)
        es__actor_finalize(a, -ESHUTDOWN); /* as every actor here */
    else if (a->q.count)
        runq_push(y, a); /* shed with its queue: see "Load shedding" */
}

/* Holds m for an actor in transit to loop. */
static void park(struct es__loop *loop, const es_msg_t *m)
{
    if (es__msgq_push(&loop->parked, m, false) != 0) {
        es__log(ES_LOG_ERROR, "no memory to hold a message for %#llx",
                (unsigned long long)m->to);
        es_msg_t d = *m;
        es__dead_letter(loop->rt, loop, &d);
    }
}

/* ES__MSG_FLUSHED on y: nothing more for `id` comes through its old loop. */
static void flushed(struct es__loop *y, es_actor_id_t id)
{
    es_actor_t *a = es__table_lookup(y->rt->table, id);
    if (a && a->loop != y)
        a = NULL;
    uint32_t n = y->parked.count;
    es_msg_t m;
    for (uint32_t i = 0; i < n && es__msgq_pop(&y->parked, &m); i++) {
        if (m.to != id) {
            (void)es__msgq_push(&y->parked, &m, false); /* keeps order */
        } else if (!a || a->stopped || es__msgq_push(&a->q, &m, false)) {
            if (a && m.type >= ES_MSG_USER)
                mailbox_done(a);
            es__dead_letter(y->rt, y, &m);
        }
    }
    if (!y->parked.count)
        es__msgq_reset(&y->parked);
    if (!a)
        return;
    atomic_store_explicit(&a->transit, ES__TRANSIT_NONE, memory_order_release);
    if (a->q.count)
        runq_push(y, a);
}

/* Notes the producer index of every ring into loop (grace period over). */
static bool snapshot(struct es__loop *loop, struct es__migration *mg)
{
    unsigned n = 0;
    struct es__chan *c =
        atomic_load_explicit(&loop->inbound, memory_order_acquire);
    for (struct es__chan *i = c; i; i = i->next)
        n++;
    mg->snap = es__calloc(n ? n : 1, sizeof(*mg->snap));
    if (!mg->snap)
        return false;
    for (; c; c = c->next) {
        if (c->producer->loop_index >= 0)
            continue; /* loops answer with a MARK instead */
        mg->snap[mg->nsnap].c = c;
        mg->snap[mg->nsnap].pos = ck_pr_load_uint(&c->ring.p_tail);
        mg->nsnap++;
    }
    return true;
}

static bool consumed(const struct es__migration *mg)
{
    for (unsigned i = 0; i < mg->nsnap; i++)
        if ((int)(mg->snap[i].c->ring.c_head - mg->snap[i].pos) < 0)
            return false;
    return true;
}

void es__migrations_run(struct es__loop *loop)
{
    for (struct es__migration **p = &loop->migrations; *p;) {
        struct es__migration *mg = *p;
        if (!mg->graced || mg->marks < loop->rt->nloops - 1 ||
            (!mg->snap && !snapshot(loop, mg)) || !consumed(mg)) {
            p = &mg->next;
            continue;
        }
        es_msg_t f = es_msg_u64(ES__MSG_FLUSHED, mg->id);
        int rc = es__send(loop->rt, loop->rt->loops[mg->to].self_id, &f, false);
        if (rc == -ENOMEM) {
            p = &mg->next; /* try again next turn */
            continue;
        }
        *p = mg->next;
        loop->nmigrating--;
        es__free(mg->snap);
        es__free(mg);
    }
}

unsigned es__loop_drain_parked(struct es__loop *loop)
{
    unsigned n = 0;
    es_msg_t m;
    while (es__msgq_pop(&loop->parked, &m)) {
        es__dead_letter(loop->rt, loop, &m);
        n++;
    }
    es__msgq_reset(&loop->parked);
    return n;
}

void es__migrations_free(struct es__loop *loop)
{
    while (loop->migrations) {
        struct es__migration *mg = loop->migrations;
        loop->migrations = mg->next;
        es__free(mg->snap);
        es__free(mg);
    }
    loop->nmigrating = 0;
}

void es__dead_letter(es_runtime_t *rt, struct es__loop *loop, es_msg_t *m)
{
    if (m->type == ES__MSG_REQ_REPLY) {
        m->type = ES_MSG_REPLY; /* a reply to a stopped requester */
    } else if (es__msg_is_internal(m->type)) {
        if (m->type == ES__MSG_MIGRATE)
            migrate_in(((es_actor_t *)m->ptr)->loop, m);
        else
            es_msg_release(m);
        return;
    } else if (m->type & ES__MSG_REQUEST_BIT) {
        es__request_undeliverable(rt, m); /* -ESRCH to its requester */
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
    } else if (msg->type == ES__MSG_UNMUTE) {
        es__unmute(self->loop, (es_actor_id_t)msg->inl.u64[0]);
    } else if (msg->type == ES__MSG_MIGRATE) {
        migrate_in(self->loop, msg);
    } else if (msg->type == ES__MSG_FLUSHED) {
        flushed(self->loop, (es_actor_id_t)msg->inl.u64[0]);
    } else if (msg->type == ES__MSG_MARK_REQ) {
        es_runtime_t *rt = self->rt;
        es_msg_t mark = es_msg_u64(ES__MSG_MARK, msg->inl.u64[0]);
        (void)es__send(rt, rt->loops[msg->inl.u64[1]].self_id, &mark, false);
    } else if (msg->type == ES__MSG_MARK) {
        ((struct es__migration *)(uintptr_t)msg->inl.u64[0])->marks++;
    } else if (msg->type == ES_MSG_TIMER && msg->inl.u64[2]) {
        /* A request's deadline (request.c): loop actors own no other. */
        es__request_expire(self->loop,
                           (struct es__deadline *)(uintptr_t)msg->inl.u64[2]);
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

/* --- muting (home threads) -------------------------------------------------
 *
 * A send from a behaviour to a full mailbox is accepted over the limit, and
 * the sending actor S is muted on the receiver R: S's loop records (R, S) in
 * its mute table, S stops being scheduled (runq_push() and dispatch skip
 * it), and the loop's bit is set in R->muters. When R has handled enough to
 * be at or below half its capacity, it takes R->muters and tells each loop
 * named there (ES__MSG_UNMUTE to its loop actor, or a direct call on its own
 * loop); the loop drops R's entries and resumes every sender whose last
 * entry went. A sender muted on several receivers waits for all of them.
 *
 * No cycle of waits, hence no deadlock (Pony's rule): an actor that others
 * wait on (muters != 0) is never muted; it may overfill mailboxes instead.
 * A wait edge S -> R is only added by S while nothing waits on S, so the
 * edge that would close a cycle is never added. Two actors muting each
 * other at the same instant are caught by the seq_cst pair in mute(): each
 * publishes its bit in the other, then reads its own `muters`, so at least
 * one of them sees the other and takes its mute back.
 *
 * R's side checks `muters` with a relaxed load after each message, with no
 * fence, so a mute published just as R handles its last message can go
 * unseen by both (S read R's `done` before R's store landed). mute()
 * re-reads R after publishing, which closes the window but for the last
 * few stores still in R's store buffer; es__mutes_poll() closes the rest:
 * a loop with muted actors looks at their receivers at least every
 * MUTE_POLL_NS and never sleeps longer than that.
 */

#define MUTE_POLL_NS (1000u * 1000u)
#define MUTES_MIN 16u

static uint64_t loop_bit(unsigned index)
{
    return UINT64_C(1) << (index % 63);
}

/* Mailbox at or below its low mark (half its capacity): senders waiting on
 * it may run again. Any thread. */
static bool below_low_mark(es_actor_t *a)
{
    unsigned s = atomic_load_explicit(&a->sent, memory_order_relaxed);
    unsigned done = atomic_load_explicit(&a->done, memory_order_acquire);
    return (int32_t)(s - done) <= (int32_t)(a->capacity / 2);
}

static int mutes_push(struct es__loop *loop, es_actor_id_t recv,
                      es_actor_id_t sender)
{
    if (loop->nmutes == loop->mutes_cap) {
        uint32_t cap = loop->mutes_cap ? loop->mutes_cap * 2 : MUTES_MIN;
        struct es__mute *m = es__realloc(loop->mutes, (size_t)cap * sizeof(*m));
        if (!m)
            return -ENOMEM;
        loop->mutes = m;
        loop->mutes_cap = cap;
    }
    loop->mutes[loop->nmutes++] = (struct es__mute){recv, sender};
    return 0;
}

/* S sent to R over R's limit (S's home thread, inside S's behaviour). */
static void mute(es_actor_t *s, es_actor_t *r)
{
    struct es__loop *loop = s->loop;
    if (s == r || s->is_loop)
        return; /* an actor never waits for itself; loop actors never wait */
    if (atomic_load_explicit(&s->muters, memory_order_relaxed))
        return; /* others wait on S: the no-cycle rule */
    /* The entries S added during this behaviour call are the last ones of
     * the table (S has none while it runs, and nothing else on this loop
     * mutes meanwhile): one per receiver, however many sends go over. */
    for (uint32_t i = loop->nmutes; i-- > 0 && loop->mutes[i].sender == s->id;)
        if (loop->mutes[i].recv == r->id)
            return;
    if (mutes_push(loop, r->id, s->id) != 0)
        return; /* no memory to wait: S stays over the limit, unmuted */
    atomic_fetch_or_explicit(&r->muters, loop_bit(loop->index),
                             memory_order_seq_cst);
    /* After publishing: did something start waiting on S, or did R drain
     * meanwhile? Then S does not wait (its bit in R costs one spurious
     * ES__MSG_UNMUTE at most). */
    if (atomic_load_explicit(&s->muters, memory_order_seq_cst) ||
        below_low_mark(r)) {
        loop->nmutes--;
        return;
    }
    s->mute_count++;
    ES__STAT_ADD(loop->muted, 1);
}

/* Tells every loop with senders muted on a that it drained (or stopped):
 * a's home thread. Foreign threads in es_send_wait() are woken too. */
static void unmute_waiters(es_actor_t *a, bool gone)
{
    if (!gone && !below_low_mark(a))
        return;
    uint64_t mask =
        atomic_exchange_explicit(&a->muters, 0, memory_order_acq_rel);
    es_runtime_t *rt = a->rt;
    if (mask & ES__MUTERS_FOREIGN) {
        atomic_fetch_add_explicit(&rt->room_seq, 1, memory_order_release);
        es__futex_wake(&rt->room_seq);
    }
    for (unsigned i = 0; i < rt->nloops; i++) {
        if (!(mask & loop_bit(i)))
            continue;
        if (i == a->loop->index) {
            es__unmute(a->loop, a->id);
        } else {
            es_msg_t u = es_msg_u64(ES__MSG_UNMUTE, a->id);
            /* A demux sender cannot fail for room; -ESRCH: that loop
             * has stopped, with its actors. */
            (void)es__send(rt, rt->loops[i].self_id, &u, false);
        }
    }
}

/* s may run again. */
static void resume(struct es__loop *loop, es_actor_t *s)
{
    if (s->ext) {
        /* A module actor (a connection) re-arms what muting paused. */
        es_msg_t r = es_msg_make(ES__MSG_RESUMED);
        r.to = s->id;
        if (es__msgq_push(&s->q, &r, true) != 0)
            es__log(ES_LOG_ERROR, "no memory to resume actor %#llx",
                    (unsigned long long)s->id);
    }
    if (s->q.count && s->installed)
        runq_push(loop, s);
}

void es__unmute(struct es__loop *loop, es_actor_id_t rid)
{
    uint32_t i = 0;
    while (i < loop->nmutes) {
        struct es__mute *e = &loop->mutes[i];
        if (e->recv != rid) {
            i++;
            continue;
        }
        es_actor_id_t sid = e->sender;
        *e = loop->mutes[--loop->nmutes];
        es_actor_t *s = es__table_lookup(loop->rt->table, sid);
        if (s && s->loop == loop && s->mute_count && --s->mute_count == 0 &&
            !s->stopped)
            resume(loop, s);
    }
    if (!loop->nmutes && loop->mutes_cap > MUTES_MIN) {
        es__free(loop->mutes);
        loop->mutes = NULL;
        loop->mutes_cap = 0;
    }
}

void es__mutes_poll(struct es__loop *loop)
{
    uint64_t now = es__now_ns();
    if (now - loop->mutes_polled < MUTE_POLL_NS)
        return;
    loop->mutes_polled = now;
    for (uint32_t i = 0; i < loop->nmutes;) {
        es_actor_id_t rid = loop->mutes[i].recv;
        es_actor_t *r = es__table_lookup(loop->rt->table, rid);
        if (!r || below_low_mark(r))
            es__unmute(loop, rid); /* removes entries; look at i again */
        else
            i++;
    }
}

/* --- sending (any thread) --------------------------------------------------
 */

/* Where a message from t to a goes. */
enum send_path {
    PATH_RING,   /* t's ring to a's home loop */
    PATH_LOCAL,  /* a's own queue: t is a's home thread */
    PATH_PARKED, /* t's loop holds it: a is moving in (see "placement") */
};

/* Where the message goes: a slot of a's local queue, of the loop's parked
 * queue, or of t's ring. The message is written straight into it (one
 * copy), then committed. */
static es_msg_t *send_slot(struct es__tctx *t, es_actor_t *a,
                           struct es__loop *home, enum send_path path, int *err)
{
    if (path == PATH_RING)
        return es__chan_reserve(t, home->index, err);
    struct es__msgq *q = path == PATH_LOCAL ? &a->q : &home->parked;
    if (q->count == q->cap && (*err = es__msgq_grow(q)) != 0)
        return NULL;
    return &q->buf[(q->head + q->count) & (q->cap - 1)];
}

static void send_commit(struct es__tctx *t, es_actor_t *a,
                        struct es__loop *home, enum send_path path)
{
    if (path == PATH_RING) {
        es__chan_commit(t, home->index);
    } else if (path == PATH_PARKED) {
        home->parked.count++;
    } else {
        a->q.count++;
        if (a->installed)
            runq_push(home, a);
    }
}

/* How send_ex() treats the mailbox limit. */
enum {
    SEND_CAPPED = 1, /* user message: counts against the limit */
    SEND_WAITER = 2, /* es_send_wait(): on refusal, ask to be woken */
    SEND_AS = 4,     /* msg->from is the sender to name (link.c) */
};

/* The body of send_ex(), inside the sender's epoch section. Returns 0,
 * -ESRCH, -ENOMEM, -EAGAIN (mailbox full: foreign senders only) or
 * -ENOBUFS (the foreign sender's ring is full). */
static int send_in_section(es_runtime_t *rt, struct es__tctx *t,
                           es_actor_id_t to, const es_msg_t *msg, int flags)
{
    es_actor_t *a = es__table_lookup(rt->table, to);
    if (!a)
        return -ESRCH;
    es_actor_t *cur = tls_current;
    bool from_actor = t->loop_index >= 0 && cur && cur->rt == rt;
    bool over = false;
    if ((flags & SEND_CAPPED) && !mailbox_reserve(a)) {
        if (!from_actor) {
            if (flags & SEND_WAITER)
                atomic_fetch_or_explicit(&a->muters, ES__MUTERS_FOREIGN,
                                         memory_order_seq_cst);
            ES__STAT_ADD(t->mailbox_full, 1);
            return -EAGAIN;
        }
        /* From a behaviour: accepted over the limit, the sender muted. */
        atomic_fetch_add_explicit(&a->sent, 1, memory_order_relaxed);
        over = true;
    }
    struct es__loop *home = es__actor_home(a);
    enum send_path path = PATH_RING;
    if ((int)home->index == t->loop_index)
        path = atomic_load_explicit(&a->transit, memory_order_acquire)
                   ? PATH_PARKED
                   : PATH_LOCAL;
    int rc;
    es_msg_t *slot = send_slot(t, a, home, path, &rc);
    if (!slot) {
        if (flags & SEND_CAPPED)
            atomic_fetch_sub_explicit(&a->sent, 1, memory_order_relaxed);
        if (rc == -EAGAIN) {
            ES__STAT_ADD(t->mailbox_full, 1);
            rc = -ENOBUFS;
        }
        return rc;
    }
    *slot = *msg;
    slot->to = to;
    if (!(flags & SEND_AS))
        slot->from = cur && cur->rt == rt ? cur->id : ES_ACTOR_NONE;
    send_commit(t, a, home, path);
    if (t->loop_index < 0)
        t->last_loop = home->index + 1; /* for ES_PLACE_CURRENT */
    ES__STAT_ADD(t->sent, 1);
    if (over)
        mute(cur, a);
    if (from_actor &&
        atomic_load_explicit(&cur->hot, memory_order_relaxed) == to)
        cur->talks_back = true; /* a conversation: see shed() */
    return 0;
}

static int send_ex(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
                   int flags)
{
    struct es__tctx *t = es__tctx_get(rt);
    if (!t)
        return -ENOMEM;
    /* Demux threads are inside a section for their whole loop turn. */
    if (t->loop_index >= 0)
        return send_in_section(rt, t, to, msg, flags);
    ck_epoch_begin(t->rec, NULL);
    int rc = send_in_section(rt, t, to, msg, flags);
    ES__TSAN_RELEASE(&rt->epoch);
    ck_epoch_end(t->rec, NULL);
    return rc;
}

int es__send_from(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
                  es_actor_id_t from)
{
    es_msg_t m = *msg;
    m.from = from;
    int rc = send_ex(rt, to, &m, SEND_AS);
    return rc == -ENOBUFS ? -EAGAIN : rc;
}

int es__send(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
             bool capped)
{
    int rc = send_ex(rt, to, msg, capped ? SEND_CAPPED : 0);
    return rc == -ENOBUFS ? -EAGAIN : rc;
}

static bool user_msg_ok(const es_runtime_t *rt, const es_msg_t *msg)
{
    if (!rt || !msg || msg->type < ES_MSG_USER ||
        (msg->type & ES__MSG_REQUEST_BIT))
        return false;
    /* actor.h: the payload is inline (at most ES_MSG_INLINE bytes) or at
     * ptr; a destructor needs something to free. */
    ES_ASSERT(msg->ptr || msg->len <= ES_MSG_INLINE);
    ES_ASSERT(msg->ptr || !msg->free_cb);
    return true;
}

int es_send(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg)
{
    if (!user_msg_ok(rt, msg))
        return -EINVAL;
    return es__send(rt, to, msg, true);
}

/* Longest single sleep of es_send_wait(): bounds the wait when a wakeup
 * was missed (see muting) or the ring, not the mailbox, was full. */
#define SEND_WAIT_SLICE_NS (10u * 1000u * 1000u)
#define SEND_WAIT_RING_NS (1000u * 1000u)

int es_send_wait(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
                 int timeout_ms)
{
    if (!user_msg_ok(rt, msg))
        return -EINVAL;
    return es__send_wait(rt, to, msg, timeout_ms);
}

int es__send_wait(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
                  int timeout_ms)
{
    struct es__tctx *t = es__tctx_current(rt);
    if (t && t->loop_index >= 0)
        return -EDEADLK; /* a demux thread would wait for itself */
    uint64_t start = 0; /* read only once a send was refused */
    uint64_t limit =
        timeout_ms < 0 ? UINT64_MAX : (uint64_t)timeout_ms * 1000000u;
    uint64_t ring_nap = 20u * 1000u;
    for (;;) {
        unsigned seq =
            atomic_load_explicit(&rt->room_seq, memory_order_acquire);
        int rc = send_ex(rt, to, msg, SEND_CAPPED | SEND_WAITER);
        if (rc != -EAGAIN && rc != -ENOBUFS)
            return rc;
        uint64_t now = es__now_ns();
        if (!start)
            start = now;
        uint64_t waited = now - start;
        if (waited >= limit)
            return -ETIMEDOUT;
        uint64_t nap = limit - waited;
        if (rc == -EAGAIN) {
            /* The receiver bumps room_seq when it drains (we set its
             * ES__MUTERS_FOREIGN bit before the refusal). */
            if (nap > SEND_WAIT_SLICE_NS)
                nap = SEND_WAIT_SLICE_NS;
            es__futex_wait(&rt->room_seq, seq, nap);
        } else {
            /* The ring drains without telling anyone: back off. */
            if (nap > ring_nap)
                nap = ring_nap;
            es__nap_ns(nap);
            if (ring_nap < SEND_WAIT_RING_NS)
                ring_nap *= 2;
        }
    }
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

/* The loop of the live actor `near`, or -ESRCH. Its `loop` changes only
 * when it migrates (es__actor_home() reads it from any thread); the epoch
 * section keeps it from being freed while we read it (demux threads are in
 * one for their whole turn). */
static int loop_of(es_runtime_t *rt, struct es__tctx *t, es_actor_id_t near)
{
    bool enter = t->loop_index < 0;
    if (enter)
        ck_epoch_begin(t->rec, NULL);
    es_actor_t *a = es__table_lookup(rt->table, near);
    int index = a ? (int)es__actor_home(a)->index : -ESRCH;
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

void es_actor_exit(es_actor_t *self, int reason)
{
    ES_ASSERT(es__loop_owned(self->loop));
    self->stop_requested = true;
    exit_actor = self;
    exit_reason = reason > 0 ? -reason : reason;
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
