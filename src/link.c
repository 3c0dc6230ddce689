/* SPDX-License-Identifier: MIT */
/*
 * Monitors and links: how one actor learns that another stopped.
 *
 * Actors that use neither pay one atomic OR when they stop and nothing
 * else: the bookkeeping lives outside the actor, in a table of "link
 * nodes" keyed by actor handle, split into shards that each have a mutex.
 * A node holds, for one actor: the monitors watching it (ref, watcher),
 * the monitors it holds (ref, target), its links, and whether it traps
 * exits. The table is made on first use.
 *
 * Invariants:
 * - es_actor.xflags: ES__X_USED is set (under the shard lock of the actor's
 *   node) before an entry naming the actor as a target or a link peer is
 *   added; ES__X_DEAD is set by es__links_stop() when the actor stops.
 *   Both are atomic ORs on one byte, so they are totally ordered: either
 *   the stop sees USED and takes the node (under the same lock, so after
 *   the entry is in), or the adder sees DEAD and treats the target as gone.
 *   Every entry therefore ends in exactly one DOWN or one removal.
 * - A DOWN is delivered only if the watcher still holds the monitor: the
 *   watcher's home thread removes the entry when the DOWN arrives
 *   (es__down_take()) or when es_demonitor() runs, whichever is first, so
 *   a demonitored DOWN that was already queued is dropped.
 * - An abnormal stop sends ES__MSG_LINK_EXIT to each peer and leaves the
 *   peer's half of the link in place; the peer takes it when the message
 *   arrives (es__link_exit_take()), so an es_unlink() in between drops the
 *   signal. A normal stop removes the peer's half at once.
 * - Locks: at most two shard locks at a time, taken in shard order.
 */
#include "internal.h"

#include <errno.h>

#define SHARDS 64u
#define BUCKETS_MIN 16u

struct es__mon {
    es_ref_t ref;
    es_actor_id_t peer; /* the watcher (in monitors) or target (watching) */
    struct es__mon *next, **pprev; /* its list: monitors or watching */
    struct es__mon *hnext;         /* the node's index by ref */
    bool held;                     /* in watching (else in monitors) */
};

struct es__xnode {
    es_actor_id_t id;
    struct es__xnode *next;   /* hash chain */
    struct es__mon *monitors; /* watching this actor */
    struct es__mon *watching; /* held by this actor */
    /* Every entry of both lists by ref, so that a DOWN, a demonitor or a
     * reply finds its entry at once however many the actor has. */
    struct es__mon **idx;
    uint32_t idx_cap, nmon;
    es_actor_id_t *links;
    uint32_t nlinks, links_cap;
    bool trap_exits;
};

struct es__links {
    _Atomic es_ref_t next_ref;
    /* For es_runtime_stats(): monitor entries on targets, link halves,
     * DOWNs sent. Relaxed counters. */
    _Atomic uint64_t monitors, link_halves, downs;
    struct es__shard {
        pthread_mutex_t lock;
        struct es__xnode **buckets;
        uint32_t nbuckets, count;
        /* Emptied nodes (with their index) and request watch entries kept
         * for reuse: a server that keeps one reply token at a time would
         * otherwise allocate and free three blocks per request. */
        struct es__xnode *spare_nodes;
        struct es__mon *spare_watches;
        uint32_t nspare_nodes, nspare_watches;
    } shards[SHARDS];
};

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    return x;
}

static struct es__shard *shard_of(struct es__links *l, es_actor_id_t id)
{
    return &l->shards[mix(id) % SHARDS];
}

/* The table, made on first use. NULL only when out of memory. */
static struct es__links *links_get(es_runtime_t *rt)
{
    struct es__links *l =
        atomic_load_explicit(&rt->links, memory_order_acquire);
    if (l)
        return l;
    l = es__calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    atomic_init(&l->next_ref, 1);
    for (unsigned i = 0; i < SHARDS; i++)
        pthread_mutex_init(&l->shards[i].lock, NULL);
    struct es__links *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(
            &rt->links, &none, l, memory_order_acq_rel, memory_order_acquire)) {
        for (unsigned i = 0; i < SHARDS; i++)
            pthread_mutex_destroy(&l->shards[i].lock);
        es__free(l);
        return none;
    }
    return l;
}

static void node_free(struct es__xnode *n);

void es__links_free(es_runtime_t *rt)
{
    struct es__links *l =
        atomic_load_explicit(&rt->links, memory_order_relaxed);
    if (!l)
        return;
    for (unsigned i = 0; i < SHARDS; i++) {
        struct es__shard *s = &l->shards[i];
        for (uint32_t b = 0; b < s->nbuckets; b++) {
            while (s->buckets[b]) {
                struct es__xnode *n = s->buckets[b];
                s->buckets[b] = n->next;
                for (struct es__mon *m; (m = n->monitors);) {
                    n->monitors = m->next;
                    es__free(m);
                }
                for (struct es__mon *m; (m = n->watching);) {
                    n->watching = m->next;
                    es__free(m);
                }
                node_free(n);
            }
        }
        while (s->spare_nodes) {
            struct es__xnode *n = s->spare_nodes;
            s->spare_nodes = n->next;
            node_free(n);
        }
        while (s->spare_watches) {
            struct es__mon *m = s->spare_watches;
            s->spare_watches = m->next;
            es__free(m);
        }
        es__free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    es__free(l);
    atomic_store_explicit(&rt->links, NULL, memory_order_relaxed);
}

/* --- nodes (shard lock held) ---------------------------------------------- */

static struct es__xnode **node_slot(struct es__shard *s, es_actor_id_t id)
{
    if (!s->nbuckets)
        return NULL;
    struct es__xnode **p = &s->buckets[(mix(id) / SHARDS) & (s->nbuckets - 1)];
    while (*p && (*p)->id != id)
        p = &(*p)->next;
    return p;
}

static struct es__xnode *node_find(struct es__shard *s, es_actor_id_t id)
{
    struct es__xnode **p = node_slot(s, id);
    return p ? *p : NULL;
}

static int shard_grow(struct es__shard *s)
{
    uint32_t n = s->nbuckets ? s->nbuckets * 2 : BUCKETS_MIN;
    struct es__xnode **b = es__calloc(n, sizeof(*b));
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->nbuckets; i++) {
        while (s->buckets[i]) {
            struct es__xnode *x = s->buckets[i];
            s->buckets[i] = x->next;
            struct es__xnode **h = &b[(mix(x->id) / SHARDS) & (n - 1)];
            x->next = *h;
            *h = x;
        }
    }
    es__free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
    return 0;
}

static struct es__xnode *node_get(struct es__shard *s, es_actor_id_t id)
{
    struct es__xnode *n = node_find(s, id);
    if (n)
        return n;
    if (s->count >= s->nbuckets && shard_grow(s) != 0)
        return NULL;
    if (s->spare_nodes) {
        /* Emptied by node_trim(): no entries, no links, an empty index. */
        n = s->spare_nodes;
        s->spare_nodes = n->next;
        s->nspare_nodes--;
    } else {
        n = es__calloc(1, sizeof(*n));
        if (!n)
            return NULL;
    }
    n->id = id;
    struct es__xnode **h = &s->buckets[(mix(id) / SHARDS) & (s->nbuckets - 1)];
    n->next = *h;
    *h = n;
    s->count++;
    return n;
}

/* Unhooks id's node from the shard; the caller frees it. */
static struct es__xnode *node_take(struct es__shard *s, es_actor_id_t id)
{
    struct es__xnode **p = node_slot(s, id);
    if (!p || !*p)
        return NULL;
    struct es__xnode *n = *p;
    *p = n->next;
    s->count--;
    return n;
}

static void node_free(struct es__xnode *n)
{
    es__free(n->idx);
    es__free(n->links);
    es__free(n);
}

#define SPARE_NODES 4
#define SPARE_WATCHES 64

/* Frees id's node if nothing is left in it (or keeps it for reuse). */
static void node_trim(struct es__shard *s, es_actor_id_t id)
{
    struct es__xnode *n = node_find(s, id);
    if (!n || n->monitors || n->watching || n->nlinks || n->trap_exits)
        return;
    (void)node_take(s, id);
    if (s->nspare_nodes < SPARE_NODES) {
        n->next = s->spare_nodes;
        s->spare_nodes = n;
        s->nspare_nodes++;
    } else {
        node_free(n);
    }
}

/* --- monitor entries of a node (its shard locked) ------------------------- */

static uint32_t ref_bucket(es_ref_t ref, uint32_t cap)
{
    return (uint32_t)mix(ref) & (cap - 1);
}

/* Room in n's index for one more entry. */
static int mon_reserve(struct es__xnode *n)
{
    if (n->nmon < n->idx_cap)
        return 0;
    uint32_t cap = n->idx_cap ? n->idx_cap * 2 : 4;
    struct es__mon **idx = es__calloc(cap, sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    for (uint32_t i = 0; i < n->idx_cap; i++) {
        while (n->idx[i]) {
            struct es__mon *m = n->idx[i];
            n->idx[i] = m->hnext;
            struct es__mon **h = &idx[ref_bucket(m->ref, cap)];
            m->hnext = *h;
            *h = m;
        }
    }
    es__free(n->idx);
    n->idx = idx;
    n->idx_cap = cap;
    return 0;
}

/* Adds m to `list` of n and to n's index (after mon_reserve()). */
static void mon_add(struct es__xnode *n, struct es__mon **list,
                    struct es__mon *m)
{
    m->held = list == &n->watching;
    m->next = *list;
    if (*list)
        (*list)->pprev = &m->next;
    *list = m;
    m->pprev = list;
    struct es__mon **h = &n->idx[ref_bucket(m->ref, n->idx_cap)];
    m->hnext = *h;
    *h = m;
    n->nmon++;
}

static void mon_del(struct es__xnode *n, struct es__mon *m)
{
    *m->pprev = m->next;
    if (m->next)
        m->next->pprev = m->pprev;
    struct es__mon **p = &n->idx[ref_bucket(m->ref, n->idx_cap)];
    while (*p != m)
        p = &(*p)->hnext;
    *p = m->hnext;
    n->nmon--;
}

/* Takes the entry `ref` of n's watching list (held) or monitors list. */
static struct es__mon *mon_take(struct es__xnode *n, es_ref_t ref, bool held)
{
    if (!n || !n->idx_cap)
        return NULL;
    for (struct es__mon *m = n->idx[ref_bucket(ref, n->idx_cap)]; m;
         m = m->hnext) {
        if (m->ref == ref && m->held == held) {
            mon_del(n, m);
            return m;
        }
    }
    return NULL;
}

/* Removes monitor `ref` from target's node, if there (takes its lock). */
static void target_drop(struct es__links *l, es_actor_id_t target, es_ref_t ref)
{
    struct es__shard *ts = shard_of(l, target);
    pthread_mutex_lock(&ts->lock);
    struct es__xnode *tn = node_find(ts, target);
    struct es__mon *m = mon_take(tn, ref, false);
    if (m) {
        atomic_fetch_sub_explicit(&l->monitors, 1, memory_order_relaxed);
        es__free(m);
    }
    node_trim(ts, target);
    pthread_mutex_unlock(&ts->lock);
}

/* Takes monitor `ref` out of what a holds (a's home thread); NULL if a
 * does not hold it (any more). */
static struct es__mon *held_take(struct es__links *l, es_actor_t *a,
                                 es_ref_t ref)
{
    struct es__shard *s = shard_of(l, a->id);
    pthread_mutex_lock(&s->lock);
    struct es__mon *held = mon_take(node_find(s, a->id), ref, true);
    node_trim(s, a->id);
    pthread_mutex_unlock(&s->lock);
    return held;
}

static bool link_has(const struct es__xnode *n, es_actor_id_t peer)
{
    for (uint32_t i = 0; n && i < n->nlinks; i++)
        if (n->links[i] == peer)
            return true;
    return false;
}

static bool link_drop(struct es__links *l, struct es__xnode *n,
                      es_actor_id_t peer)
{
    for (uint32_t i = 0; n && i < n->nlinks; i++) {
        if (n->links[i] == peer) {
            n->links[i] = n->links[--n->nlinks];
            atomic_fetch_sub_explicit(&l->link_halves, 1, memory_order_relaxed);
            return true;
        }
    }
    return false;
}

static int link_add(struct es__links *l, struct es__xnode *n,
                    es_actor_id_t peer)
{
    if (link_has(n, peer))
        return 0;
    if (n->nlinks == n->links_cap) {
        uint32_t cap = n->links_cap ? n->links_cap * 2 : 2;
        es_actor_id_t *v = es__realloc(n->links, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        n->links = v;
        n->links_cap = cap;
    }
    n->links[n->nlinks++] = peer;
    atomic_fetch_add_explicit(&l->link_halves, 1, memory_order_relaxed);
    return 0;
}

/* Locks the shards of two handles in order (one lock if they share). */
static void lock2(struct es__shard *a, struct es__shard *b)
{
    if (a == b) {
        pthread_mutex_lock(&a->lock);
    } else if (a < b) {
        pthread_mutex_lock(&a->lock);
        pthread_mutex_lock(&b->lock);
    } else {
        pthread_mutex_lock(&b->lock);
        pthread_mutex_lock(&a->lock);
    }
}

static void unlock2(struct es__shard *a, struct es__shard *b)
{
    pthread_mutex_unlock(&a->lock);
    if (a != b)
        pthread_mutex_unlock(&b->lock);
}

/* Marks t as having link entries; false if it has stopped already. */
static bool mark_used(es_actor_t *t)
{
    uint8_t old =
        atomic_fetch_or_explicit(&t->xflags, ES__X_USED, memory_order_acq_rel);
    return !(old & ES__X_DEAD);
}

/* --- messages ------------------------------------------------------------- */

static void send_down(es_runtime_t *rt, es_actor_id_t watcher,
                      es_actor_id_t target, es_ref_t ref, int reason)
{
    struct es__links *l =
        atomic_load_explicit(&rt->links, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->downs, 1, memory_order_relaxed);
    es_msg_t m = es_msg_make(ES_MSG_DOWN);
    m.inl.i64[1] = reason;
    m.inl.u64[2] = ref;
    m.len = ES_MSG_INLINE;
    (void)es__send_from(rt, watcher, &m, target);
}

static void send_exit(es_runtime_t *rt, es_actor_id_t peer, es_actor_id_t from,
                      int reason)
{
    es_msg_t m = es_msg_make(ES__MSG_LINK_EXIT);
    m.inl.i64[1] = reason;
    m.len = ES_MSG_INLINE;
    (void)es__send_from(rt, peer, &m, from);
}

/* --- public calls ----------------------------------------------------------
 */

int es_monitor(es_actor_t *self, es_actor_id_t target, es_ref_t *ref)
{
    ES_ASSERT(es__loop_owned(self->loop));
    es_runtime_t *rt = self->rt;
    if (target == self->id)
        return -EINVAL;
    struct es__links *l = links_get(rt);
    if (!l)
        return -ENOMEM;
    es_actor_t *t = es__table_lookup(rt->table, target);
    if (t && t->is_loop)
        return -EINVAL;
    es_ref_t r =
        atomic_fetch_add_explicit(&l->next_ref, 1, memory_order_relaxed);
    struct es__shard *ts = shard_of(l, target), *ws = shard_of(l, self->id);
    int rc = -ENOMEM;
    lock2(ts, ws);
    struct es__xnode *wn = node_get(ws, self->id);
    struct es__mon *held = es__malloc(sizeof(*held));
    struct es__mon *watch = es__malloc(sizeof(*watch));
    if (!wn || !held || !watch || mon_reserve(wn))
        goto fail;
    bool alive = t && mark_used(t);
    if (alive) {
        struct es__xnode *tn = node_get(ts, target);
        if (!tn || mon_reserve(tn))
            goto fail;
        *watch = (struct es__mon){.ref = r, .peer = self->id};
        mon_add(tn, &tn->monitors, watch);
        atomic_fetch_add_explicit(&l->monitors, 1, memory_order_relaxed);
    } else {
        es__free(watch);
    }
    *held = (struct es__mon){.ref = r, .peer = target};
    mon_add(wn, &wn->watching, held);
    (void)mark_used(self);
    unlock2(ts, ws);
    if (!alive)
        send_down(rt, self->id, target, r, -ESRCH);
    *ref = r;
    return 0;
fail:
    es__free(held);
    es__free(watch);
    node_trim(ws, self->id);
    node_trim(ts, target);
    unlock2(ts, ws);
    return rc;
}

int es_demonitor(es_actor_t *self, es_ref_t ref)
{
    ES_ASSERT(es__loop_owned(self->loop));
    struct es__links *l =
        atomic_load_explicit(&self->rt->links, memory_order_acquire);
    if (!l)
        return -ENOENT;
    struct es__mon *held = held_take(l, self, ref);
    if (!held)
        return -ENOENT;
    target_drop(l, held->peer, ref);
    es__free(held);
    return 0;
}

int es_link(es_actor_t *self, es_actor_id_t other)
{
    ES_ASSERT(es__loop_owned(self->loop));
    es_runtime_t *rt = self->rt;
    if (other == self->id)
        return -EINVAL;
    es_actor_t *o = es__table_lookup(rt->table, other);
    if (o && o->is_loop)
        return -EINVAL;
    struct es__links *l = links_get(rt);
    if (!l)
        return -ENOMEM;
    struct es__shard *os = shard_of(l, other), *ss = shard_of(l, self->id);
    lock2(os, ss);
    int rc = -ESRCH;
    if (o && mark_used(o)) {
        struct es__xnode *sn = node_get(ss, self->id);
        struct es__xnode *on = sn ? node_get(os, other) : NULL;
        rc = -ENOMEM;
        if (on && link_add(l, sn, other) == 0) {
            if (link_add(l, on, self->id) == 0)
                rc = 0;
            else
                (void)link_drop(l, sn, other);
        }
        if (rc == 0)
            (void)mark_used(self);
        node_trim(ss, self->id);
        node_trim(os, other);
    }
    unlock2(os, ss);
    return rc;
}

int es_unlink(es_actor_t *self, es_actor_id_t other)
{
    ES_ASSERT(es__loop_owned(self->loop));
    struct es__links *l =
        atomic_load_explicit(&self->rt->links, memory_order_acquire);
    if (!l)
        return -ENOENT;
    struct es__shard *os = shard_of(l, other), *ss = shard_of(l, self->id);
    lock2(os, ss);
    bool had = link_drop(l, node_find(ss, self->id), other);
    (void)link_drop(l, node_find(os, other), self->id);
    node_trim(ss, self->id);
    node_trim(os, other);
    unlock2(os, ss);
    return had ? 0 : -ENOENT;
}

void es_actor_trap_exits(es_actor_t *self, int on)
{
    ES_ASSERT(es__loop_owned(self->loop));
    struct es__links *l = links_get(self->rt);
    if (!l) {
        es__log(ES_LOG_ERROR, "no memory to trap exits for %#llx",
                (unsigned long long)self->id);
        return;
    }
    struct es__shard *s = shard_of(l, self->id);
    pthread_mutex_lock(&s->lock);
    struct es__xnode *n = on ? node_get(s, self->id) : node_find(s, self->id);
    if (n) {
        n->trap_exits = on != 0;
        (void)mark_used(self);
    } else if (on) {
        es__log(ES_LOG_ERROR, "no memory to trap exits for %#llx",
                (unsigned long long)self->id);
    }
    node_trim(s, self->id);
    pthread_mutex_unlock(&s->lock);
}

/* --- runtime hooks (home threads) ------------------------------------------
 */

bool es__down_take(es_actor_t *a, es_ref_t ref)
{
    struct es__links *l =
        atomic_load_explicit(&a->rt->links, memory_order_acquire);
    if (!l)
        return false;
    struct es__mon *held = held_take(l, a, ref);
    es__free(held);
    return held != NULL;
}

bool es__link_exit_take(es_actor_t *a, es_actor_id_t from, bool *trap)
{
    struct es__links *l =
        atomic_load_explicit(&a->rt->links, memory_order_acquire);
    *trap = false;
    if (!l)
        return false;
    struct es__shard *s = shard_of(l, a->id);
    pthread_mutex_lock(&s->lock);
    struct es__xnode *n = node_find(s, a->id);
    bool had = link_drop(l, n, from);
    *trap = n && n->trap_exits;
    node_trim(s, a->id);
    pthread_mutex_unlock(&s->lock);
    return had;
}

void es__links_stop(es_actor_t *a, int reason)
{
    es_runtime_t *rt = a->rt;
    uint8_t old =
        atomic_fetch_or_explicit(&a->xflags, ES__X_DEAD, memory_order_acq_rel);
    if (!(old & ES__X_USED))
        return;
    struct es__links *l =
        atomic_load_explicit(&rt->links, memory_order_acquire);
    struct es__shard *s = shard_of(l, a->id);
    pthread_mutex_lock(&s->lock);
    struct es__xnode *n = node_take(s, a->id);
    pthread_mutex_unlock(&s->lock);
    if (!n)
        return;
    /* Those watching it: one DOWN each. */
    for (struct es__mon *m; (m = n->monitors);) {
        n->monitors = m->next;
        atomic_fetch_sub_explicit(&l->monitors, 1, memory_order_relaxed);
        send_down(rt, m->peer, a->id, m->ref, reason);
        es__free(m);
    }
    /* What it watched: nothing may stay behind on the targets. */
    for (struct es__mon *m; (m = n->watching);) {
        n->watching = m->next;
        target_drop(l, m->peer, m->ref);
        es__free(m);
    }
    /* Links: an abnormal stop signals each peer, which takes its half of
     * the link when the signal arrives; a normal one just removes it. */
    for (uint32_t i = 0; i < n->nlinks; i++) {
        atomic_fetch_sub_explicit(&l->link_halves, 1, memory_order_relaxed);
        if (reason != 0) {
            send_exit(rt, n->links[i], a->id, reason);
            continue;
        }
        struct es__shard *ps = shard_of(l, n->links[i]);
        pthread_mutex_lock(&ps->lock);
        (void)link_drop(l, node_find(ps, n->links[i]), a->id);
        node_trim(ps, n->links[i]);
        pthread_mutex_unlock(&ps->lock);
    }
    node_free(n);
}

void es__links_stats(const es_runtime_t *rt, es_stats_t *out)
{
    struct es__links *l = atomic_load_explicit(&((es_runtime_t *)rt)->links,
                                               memory_order_acquire);
    if (!l)
        return;
    out->monitors = atomic_load_explicit(&l->monitors, memory_order_relaxed);
    out->links =
        atomic_load_explicit(&l->link_halves, memory_order_relaxed) / 2;
    out->downs = atomic_load_explicit(&l->downs, memory_order_relaxed);
}

/* --- request watches (internal, for request.c) -----------------------------
 *
 * A request its target keeps unanswered after its behaviour returned (a
 * reply token, or simply not answered) is a watch: an entry in the
 * target's `monitors` list whose ref is the request id (request ids and
 * call refs have bit 62 or 63 set; monitor refs are counters from 1) and
 * whose peer is the requester (ES_ACTOR_NONE for es_call()). They are not
 * monitors: not counted in `monitors`, never a DOWN. Only the target's home
 * thread adds them (es__request_watch()) and takes them when it stops
 * (es__request_watches_take(), which finalize runs before es__links_stop(),
 * so that function never meets one); any thread may remove one
 * (es__request_unwatch(): a reply through a token, a deadline). Whoever
 * removes an entry under the shard lock owns its outcome; the requester's
 * side drops the other (request.c).
 */

#define REQUEST_REFS (UINT64_C(3) << 62)

int es__request_watch(es_actor_t *a, es_ref_t ref, es_actor_id_t requester)
{
    struct es__links *l = links_get(a->rt);
    if (!l)
        return -ENOMEM;
    struct es__shard *s = shard_of(l, a->id);
    pthread_mutex_lock(&s->lock);
    struct es__mon *w = s->spare_watches;
    if (w) {
        s->spare_watches = w->next;
        s->nspare_watches--;
    } else {
        w = es__malloc(sizeof(*w));
    }
    struct es__xnode *n = w ? node_get(s, a->id) : NULL;
    if (n && mon_reserve(n) != 0) {
        node_trim(s, a->id);
        n = NULL;
    }
    if (n) {
        *w = (struct es__mon){.ref = ref, .peer = requester};
        mon_add(n, &n->monitors, w);
        (void)mark_used(a);
    }
    pthread_mutex_unlock(&s->lock);
    if (!n) {
        es__free(w);
        return -ENOMEM;
    }
    return 0;
}

bool es__request_unwatch(es_runtime_t *rt, es_actor_id_t target, es_ref_t ref)
{
    struct es__links *l =
        atomic_load_explicit(&rt->links, memory_order_acquire);
    if (!l)
        return false;
    struct es__shard *s = shard_of(l, target);
    pthread_mutex_lock(&s->lock);
    struct es__xnode *n = node_find(s, target);
    struct es__mon *w = mon_take(n, ref, false);
    node_trim(s, target);
    bool found = w != NULL;
    if (w && s->nspare_watches < SPARE_WATCHES) {
        w->next = s->spare_watches;
        s->spare_watches = w;
        s->nspare_watches++;
        w = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    es__free(w);
    return found;
}

void es__request_watches_take(es_actor_t *a,
                              void (*fn)(es_runtime_t *rt, es_ref_t ref,
                                         es_actor_id_t requester,
                                         es_actor_id_t target))
{
    if (!(atomic_load_explicit(&a->xflags, memory_order_acquire) & ES__X_USED))
        return;
    struct es__links *l =
        atomic_load_explicit(&a->rt->links, memory_order_acquire);
    struct es__shard *s = shard_of(l, a->id);
    struct es__mon *taken = NULL;
    pthread_mutex_lock(&s->lock);
    struct es__xnode *n = node_find(s, a->id);
    for (struct es__mon *m = n ? n->monitors : NULL, *next; m; m = next) {
        next = m->next;
        if (!(m->ref & REQUEST_REFS))
            continue;
        mon_del(n, m);
        m->next = taken;
        taken = m;
    }
    node_trim(s, a->id);
    pthread_mutex_unlock(&s->lock);
    while (taken) {
        struct es__mon *m = taken;
        taken = m->next;
        fn(a->rt, m->ref, m->peer, a->id);
        es__free(m);
    }
}
