/* SPDX-License-Identifier: MIT */
/*
 * Timers of one demux thread: a binary min-heap ordered by (deadline, start
 * sequence), so equal deadlines fire in start order, with O(log n) start,
 * cancel and expiry. A timer's id is its generation, the loop that made it
 * and its slab index there, so a stale id never cancels a newer timer and
 * ids stay unique in the runtime. An actor that migrates (actor.c) takes
 * its timers along: they keep their ids and get slots on the new loop,
 * where es_timer_stop() finds them on the actor's own list. Everything here
 * runs on the owning loop's thread only; an expiry is delivered straight into
 * the owner's behaviour (a muted owner's waits in its queue, and
 * es_timer_stop() takes it back out), so once es_timer_stop() returns
 * nothing of that timer can still be on its way.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>

#define NS_PER_MS 1000000ull
#define FREE_END UINT32_MAX

struct es__timer {
    uint64_t due; /* CLOCK_MONOTONIC, ns */
    uint64_t seq;
    uint64_t repeat; /* ns, 0 for one-shot */
    uint64_t tag;
    es_timer_id_t id; /* what the user holds; kept across a migration */
    es_actor_t *owner;
    struct es__timer *owner_prev, *owner_next;
    uint32_t heap_idx;
    uint32_t slot; /* slab index on the current loop */
};

/* id = generation << 32 | loop << SLOT_BITS | slot. */
#define SLOT_BITS 22u
#define SLOT_MAX (1u << SLOT_BITS)

void es__timers_init(struct es__timers *ts)
{
    *ts = (struct es__timers){.free_head = FREE_END};
}

void es__timers_destroy(struct es__timers *ts)
{
    for (uint32_t i = 0; i < ts->slab_len; i++)
        es__free(ts->slab[i]);
    es__free(ts->heap);
    es__free(ts->slab);
    es__free(ts->gen);
    es__free(ts->free_next);
    es__timers_init(ts);
}

static bool earlier(const struct es__timer *a, const struct es__timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(struct es__timers *ts, uint32_t i, struct es__timer *t)
{
    ts->heap[i] = t;
    t->heap_idx = i;
}

static void sift_up(struct es__timers *ts, uint32_t i)
{
    struct es__timer *t = ts->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!earlier(t, ts->heap[parent]))
            break;
        heap_set(ts, i, ts->heap[parent]);
        i = parent;
    }
    heap_set(ts, i, t);
}

static void sift_down(struct es__timers *ts, uint32_t i)
{
    struct es__timer *t = ts->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= ts->heap_len)
            break;
        if (child + 1 < ts->heap_len &&
            earlier(ts->heap[child + 1], ts->heap[child]))
            child++;
        if (!earlier(ts->heap[child], t))
            break;
        heap_set(ts, i, ts->heap[child]);
        i = child;
    }
    heap_set(ts, i, t);
}

static int heap_insert(struct es__timers *ts, struct es__timer *t)
{
    if (ts->heap_len == ts->heap_cap) {
        uint32_t cap = ts->heap_cap ? ts->heap_cap * 2 : 16;
        struct es__timer **heap = es__realloc(ts->heap, cap * sizeof(*heap));
        if (!heap)
            return -ENOMEM;
        ts->heap = heap;
        ts->heap_cap = cap;
    }
    heap_set(ts, ts->heap_len++, t);
    sift_up(ts, t->heap_idx);
    return 0;
}

static void heap_remove(struct es__timers *ts, struct es__timer *t)
{
    uint32_t i = t->heap_idx;
    struct es__timer *last = ts->heap[--ts->heap_len];
    if (last == t)
        return;
    heap_set(ts, i, last);
    if (i > 0 && earlier(last, ts->heap[(i - 1) / 2]))
        sift_up(ts, i);
    else
        sift_down(ts, i);
}

static int slab_grow(struct es__timers *ts)
{
    if (ts->slab_cap >= SLOT_MAX)
        return -ENOMEM;
    uint32_t cap = ts->slab_cap ? ts->slab_cap * 2 : 16;
    struct es__timer **slab = es__realloc(ts->slab, cap * sizeof(*slab));
    if (!slab)
        return -ENOMEM;
    ts->slab = slab;
    uint32_t *gen = es__realloc(ts->gen, cap * sizeof(*gen));
    if (!gen)
        return -ENOMEM;
    ts->gen = gen;
    uint32_t *next = es__realloc(ts->free_next, cap * sizeof(*next));
    if (!next)
        return -ENOMEM;
    ts->free_next = next;
    ts->slab_cap = cap;
    return 0;
}

/* Gives t a slab index and, if it has none, an id made on `loop`. */
static int slab_add(struct es__timers *ts, struct es__timer *t, unsigned loop)
{
    uint32_t idx;
    if (ts->free_head != FREE_END) {
        idx = ts->free_head;
        ts->free_head = ts->free_next[idx];
    } else {
        if (ts->slab_len == ts->slab_cap && slab_grow(ts) != 0)
            return -ENOMEM;
        idx = ts->slab_len++;
        ts->gen[idx] = 1;
    }
    ts->slab[idx] = t;
    t->slot = idx;
    if (!t->id)
        t->id = ((uint64_t)ts->gen[idx] << 32) | ((uint64_t)loop << SLOT_BITS) |
                idx;
    return 0;
}

/* Gives t's slab index back (the slot's generation moves on). */
static void slab_remove(struct es__timers *ts, struct es__timer *t)
{
    uint32_t idx = t->slot;
    ts->slab[idx] = NULL;
    ts->gen[idx] = ts->gen[idx] == UINT32_MAX ? 1 : ts->gen[idx] + 1;
    ts->free_next[idx] = ts->free_head;
    ts->free_head = idx;
}

static void owner_unlink(struct es__timer *t)
{
    es_actor_t *owner = t->owner;
    if (t->owner_prev)
        t->owner_prev->owner_next = t->owner_next;
    else
        owner->timers = t->owner_next;
    if (t->owner_next)
        t->owner_next->owner_prev = t->owner_prev;
    t->owner_prev = t->owner_next = NULL;
}

static void owner_link(es_actor_t *self, struct es__timer *t)
{
    t->owner = self;
    t->owner_prev = NULL;
    t->owner_next = self->timers;
    if (self->timers)
        self->timers->owner_prev = t;
    self->timers = t;
}

static void timer_free(struct es__timers *ts, struct es__timer *t)
{
    owner_unlink(t);
    slab_remove(ts, t);
    es__free(t);
}

static int ms_to_ns(uint64_t ms, uint64_t *ns)
{
    if (ms > UINT64_MAX / NS_PER_MS / 2)
        return -EOVERFLOW;
    *ns = ms * NS_PER_MS;
    return 0;
}

int es_timer_start(es_actor_t *self, uint64_t after_ms, uint64_t repeat_ms,
                   uint64_t tag, es_timer_id_t *out)
{
    uint64_t after, repeat;
    if (!self || ms_to_ns(after_ms, &after) || ms_to_ns(repeat_ms, &repeat))
        return self ? -EOVERFLOW : -EINVAL;
    ES_ASSERT(es__loop_owned(self->loop)); /* Thread: owning loop only */
    struct es__timers *ts = &self->loop->timers;
    struct es__timer *t = es__calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->due = es__now_ns() + after;
    t->seq = ts->seq++;
    t->repeat = repeat;
    t->tag = tag;
    if (slab_add(ts, t, self->loop->index) != 0) {
        es__free(t);
        return -ENOMEM;
    }
    owner_link(self, t);
    if (heap_insert(ts, t) != 0) {
        timer_free(ts, t);
        return -ENOMEM;
    }
    if (out)
        *out = t->id;
    return 0;
}

/* self's timer with that id: in the slab when it was made on this loop,
 * else (it came with a migration) on self's own list. */
static struct es__timer *timer_find(es_actor_t *self, es_timer_id_t id)
{
    struct es__timers *ts = &self->loop->timers;
    uint32_t idx = (uint32_t)id & (SLOT_MAX - 1);
    if (((uint32_t)id >> SLOT_BITS) == self->loop->index) {
        struct es__timer *t = idx < ts->slab_len ? ts->slab[idx] : NULL;
        if (t && t->id == id && t->owner == self)
            return t;
    }
    /* Made on another loop, or here before a round trip through another
     * (adoption gave it a new slot, the id kept the old one): the actor's
     * own list has it. */
    for (struct es__timer *t = self->timers; t; t = t->owner_next)
        if (t->id == id)
            return t;
    return NULL;
}

int es_timer_stop(es_actor_t *self, es_timer_id_t id)
{
    if (!self)
        return -EINVAL;
    ES_ASSERT(es__loop_owned(self->loop)); /* Thread: owning loop only */
    struct es__timers *ts = &self->loop->timers;
    struct es__timer *t = timer_find(self, id);
    if (!t)
        return -ENOENT;
    heap_remove(ts, t);
    timer_free(ts, t);
    if (self->q.count)
        es__actor_drop_timer(self, id); /* expiries queued while muted */
    return 0;
}

struct es__timer *es__timers_detach(struct es__loop *loop, es_actor_t *a)
{
    struct es__timer *list = a->timers;
    for (struct es__timer *t = list; t; t = t->owner_next) {
        heap_remove(&loop->timers, t);
        slab_remove(&loop->timers, t);
    }
    a->timers = NULL;
    return list;
}

void es__timers_adopt(struct es__loop *loop, es_actor_t *a,
                      struct es__timer *list)
{
    struct es__timers *ts = &loop->timers;
    while (list) {
        struct es__timer *t = list;
        list = t->owner_next;
        t->seq = ts->seq++;
        int rc = slab_add(ts, t, loop->index);
        if (rc == 0 && (rc = heap_insert(ts, t)) != 0)
            slab_remove(ts, t);
        if (rc != 0) {
            es__log(ES_LOG_ERROR,
                    "no memory to move timer %#llx of actor %#llx: "
                    "cancelled",
                    (unsigned long long)t->id, (unsigned long long)a->id);
            es__free(t);
            continue;
        }
        owner_link(a, t);
    }
}

void es__timers_cancel_actor(struct es__loop *loop, es_actor_t *a)
{
    while (a->timers) {
        heap_remove(&loop->timers, a->timers);
        timer_free(&loop->timers, a->timers);
    }
}

/* Fires the earliest timer, which is due. */
static void fire(struct es__loop *loop, struct es__timer *t, uint64_t now)
{
    struct es__timers *ts = &loop->timers;
    es_actor_t *owner = t->owner;
    es_msg_t m = es_msg_make(ES_MSG_TIMER);
    m.to = owner->id;
    m.inl.u64[0] = t->tag;
    m.inl.u64[1] = t->id;
    m.len = 2 * sizeof(uint64_t);
    if (t->repeat) {
        /* Keep the period's phase; skip periods the loop slept through. */
        t->due += t->repeat;
        if (t->due <= now)
            t->due = now + t->repeat;
        t->seq = ts->seq++;
        sift_down(ts, 0);
    } else {
        heap_remove(ts, t);
        timer_free(ts, t);
    }
    ES__STAT_ADD(loop->timers_fired, 1);
    es__actor_dispatch(owner, &m);
}

unsigned es__timers_run(struct es__loop *loop)
{
    struct es__timers *ts = &loop->timers;
    if (!ts->heap_len)
        return 0;
    uint64_t now = es__now_ns();
    unsigned fired = 0;
    while (fired < ES__TIMER_BUDGET && ts->heap_len &&
           ts->heap[0]->due <= now) {
        fire(loop, ts->heap[0], now);
        fired++;
    }
    return fired;
}

int es__timers_timeout_ms(struct es__loop *loop)
{
    struct es__timers *ts = &loop->timers;
    if (!ts->heap_len)
        return -1;
    uint64_t now = es__now_ns(), due = ts->heap[0]->due;
    if (due <= now)
        return 0;
    uint64_t ms = (due - now + NS_PER_MS - 1) / NS_PER_MS;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}
