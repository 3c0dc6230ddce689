/* SPDX-License-Identifier: MIT */
/*
 * Coarse deadlines of one demux thread: a hashed timing wheel for timeouts
 * that move far more often than they fire, such as a connection's idle
 * timeout, which moves on every read and write. A deadline is embedded in
 * its owner's state, so arming one allocates nothing; that is what keeps an
 * idle connection with a timeout as small as one without (heap timers cost
 * about 100 bytes each, see perf/conn_memory).
 *
 * Invariant: an armed deadline sits in a slot whose next visit comes no
 * later than its due tick. Moving a deadline later therefore only rewrites
 * `due` (one store); the node is carried forward when its slot comes round.
 * Moving it earlier re-links it. A deadline fires at most one tick after its
 * time, never before, as ES_MSG_TIMER with tag ES__DEADLINE_TAG delivered
 * straight into its owner's behaviour. Everything here runs on the owning
 * loop's thread only.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>

#define NS_PER_TICK ((uint64_t)ES__WHEEL_TICK_MS * 1000000u)

/* Slots scanned ahead when computing how long the loop may sleep: bounds
 * the cost of every sleep; past it the loop wakes once and looks again. */
#define SCAN_AHEAD 64u

static uint32_t tick_of(uint64_t ns)
{
    return (uint32_t)(ns / NS_PER_TICK);
}

/* a is at or before b, on a wrapping 32-bit tick counter. */
static bool tick_le(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) <= 0;
}

static void link_node(struct es__wheel *w, struct es__deadline *d)
{
    /* The slot of `due`, or the next one to be visited if due has passed:
     * either is visited no later than due. */
    uint32_t at = tick_le(d->due, w->now) ? w->now + 1 : d->due;
    struct es__deadline **slot = &w->slots[at % ES__WHEEL_SLOTS];
    d->next = *slot;
    if (d->next)
        d->next->pprev = &d->next;
    d->pprev = slot;
    *slot = d;
}

static void unlink_node(struct es__deadline *d)
{
    *d->pprev = d->next;
    if (d->next)
        d->next->pprev = d->pprev;
    d->next = NULL;
    d->pprev = NULL;
}

int es__deadline_set(es_actor_t *owner, struct es__deadline *d,
                     uint64_t after_ms)
{
    ES_ASSERT(es__loop_owned(owner->loop));
    struct es__wheel *w = &owner->loop->wheel;
    if (!w->slots) {
        w->slots = es__calloc(ES__WHEEL_SLOTS, sizeof(*w->slots));
        if (!w->slots)
            return -ENOMEM;
    }
    uint64_t now_ns = es__now_ns();
    if (!w->armed)
        w->now = tick_of(now_ns); /* nothing to catch up on */
    if (after_ms > UINT32_MAX)
        after_ms = UINT32_MAX;
    /* The first tick that starts at or after the deadline. */
    uint32_t due = tick_of(now_ns + after_ms * 1000000u) + 1;
    if (d->pprev) {
        bool later = tick_le(d->due, due);
        d->due = due;
        if (later)
            return 0;
        unlink_node(d);
        w->armed--;
    }
    d->owner = owner;
    d->due = due;
    link_node(w, d);
    w->armed++;
    return 0;
}

void es__deadline_clear(struct es__deadline *d)
{
    if (!d->pprev)
        return;
    ES_ASSERT(es__loop_owned(d->owner->loop));
    unlink_node(d);
    d->owner->loop->wheel.armed--;
}

static void fire(struct es__loop *loop, struct es__deadline *d)
{
    es_actor_t *owner = d->owner;
    es_msg_t m = es_msg_make(ES_MSG_TIMER);
    m.to = owner->id;
    m.inl.u64[0] = ES__DEADLINE_TAG;
    m.inl.u64[2] = (uint64_t)(uintptr_t)d; /* which one (request.c) */
    m.len = 2 * sizeof(uint64_t);
    ES__STAT_ADD(loop->timers_fired, 1);
    es__actor_dispatch(owner, &m);
}

/* Visits the slot of tick w->now: fires what is due, carries the rest. */
static unsigned visit(struct es__loop *loop)
{
    struct es__wheel *w = &loop->wheel;
    struct es__deadline **slot = &w->slots[w->now % ES__WHEEL_SLOTS];
    struct es__deadline *pending = *slot;
    unsigned fired = 0;
    /* Detach the slot first: firing may clear or move any deadline,
     * including ones still on this list, and carried nodes may land back
     * in this very slot (a later revolution). */
    *slot = NULL;
    if (pending)
        pending->pprev = &pending;
    while (pending) {
        struct es__deadline *d = pending;
        unlink_node(d);
        if (tick_le(d->due, w->now)) {
            w->armed--;
            fire(loop, d);
            fired++;
        } else {
            link_node(w, d);
        }
    }
    return fired;
}

unsigned es__wheel_run(struct es__loop *loop)
{
    struct es__wheel *w = &loop->wheel;
    if (!w->armed)
        return 0;
    uint32_t cur = tick_of(es__now_ns());
    /* After a long sleep, one revolution visits every slot once. */
    if ((uint32_t)(cur - w->now) > ES__WHEEL_SLOTS)
        w->now = cur - ES__WHEEL_SLOTS;
    unsigned fired = 0;
    while (w->armed && !tick_le(cur, w->now)) {
        w->now++;
        fired += visit(loop);
    }
    if (!w->armed)
        w->now = cur;
    return fired;
}

int es__wheel_timeout_ms(struct es__loop *loop)
{
    struct es__wheel *w = &loop->wheel;
    if (!w->armed)
        return -1;
    uint32_t t = w->now + 1;
    for (unsigned i = 0; i < SCAN_AHEAD && !w->slots[t % ES__WHEEL_SLOTS]; i++)
        t++;
    uint64_t now = es__now_ns();
    uint32_t cur = tick_of(now);
    if (tick_le(t, cur))
        return 0;
    uint64_t ns =
        (uint64_t)(uint32_t)(t - cur) * NS_PER_TICK - now % NS_PER_TICK;
    uint64_t ms = (ns + 999999u) / 1000000u;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

void es__wheel_destroy(struct es__loop *loop)
{
    struct es__wheel *w = &loop->wheel;
    if (w->slots) {
        /* Owners that outlive the loop find their deadline disarmed. */
        for (uint32_t i = 0; i < ES__WHEEL_SLOTS; i++)
            while (w->slots[i])
                unlink_node(w->slots[i]);
    }
    es__free(w->slots);
    *w = (struct es__wheel){0};
}
