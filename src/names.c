/* SPDX-License-Identifier: MIT */
/*
 * Actor names: es_register(), es_unregister(), es_whereis(),
 * es_send_named(), and the release of an actor's names when it stops.
 *
 * Names live in an open-addressing hash table (linear probing) of pointers
 * to immutable entries. Lookups take no lock: any number of threads read
 * while one writer at a time (under `lock`) adds and removes. Removed
 * entries and replaced tables are freed through the runtime's ck_epoch,
 * after every reader that might still see them has left its section.
 *
 * Invariants:
 * - An entry (hash, id, name) is written in full before the release store
 *   that puts it in a slot; readers load slots with acquire, so they see
 *   the whole entry. It never changes afterwards.
 * - A slot goes NULL -> entry -> TOMB -> entry -> TOMB ... and never back to
 *   NULL, so a probe that meets NULL has seen every slot the name could
 *   occupy. Tables are kept at most 3/4 full (entries + tombstones), so
 *   every probe ends. A table that fills up is rebuilt into a new one
 *   (tombstones dropped), published with a release store; the old one is
 *   never written again and is freed after a grace period.
 * - Reclamation: the writer stores TOMB (or the new table), issues a
 *   seq_cst fence, then ck_epoch_call() reads the global epoch G. A reader
 *   that loaded the old pointer did so after its ck_epoch_begin(), whose
 *   fence orders its published epoch before that load, so it observed an
 *   epoch <= G and keeps the global epoch below G + 2 until it leaves;
 *   the callback for bucket G runs only then. The writer's deferrals go on
 *   a record of this module (`rec`), used only under `lock`, never inside
 *   a section: ck_epoch_call() takes the bucket from the global epoch, so
 *   a record that is never active defers correctly.
 * - Release on stop: es_register() sets ES__X_NAMED on the actor with an
 *   atomic OR while holding `lock`, and inserts only if the OR showed no
 *   ES__X_DEAD. es__names_stop() ORs ES__X_DEAD (before es__links_stop()
 *   sends any DOWN) and, if NAMED was set, takes `lock` (so after any
 *   insert in progress) and removes every name of the actor. The ORs on
 *   one byte are totally ordered, so either the registration sees DEAD and
 *   fails with -ESRCH, or the stop sees NAMED and removes what it added.
 *   The removal is a release store before the DOWN is sent, and a DOWN
 *   travels by release/acquire, so a watcher that got the DOWN and then
 *   looks the name up sees TOMB (or a newer registration), never the dead
 *   actor.
 * - Writers also keep an index by actor id (chained, under `lock` only) so
 *   a stopping actor's names are found without scanning the table.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

#define TAB_MIN 16u     /* slots of the first table */
#define BYID_MIN 16u    /* buckets of the first id index */
#define TAB_MAX_LOAD 3u /* entries + tombstones <= cap * 3/4 */

struct name_ent {
    uint64_t hash;
    es_actor_id_t id;
    struct name_ent *id_next; /* writer only: id index chain */
    ck_epoch_entry_t epoch_entry;
    uint32_t len;
    char name[]; /* len bytes and a NUL */
};

struct name_tab {
    uint32_t mask;
    ck_epoch_entry_t epoch_entry;
    _Atomic(struct name_ent *) slots[];
};

struct es__names {
    es_runtime_t *rt;
    /* Any thread reads (acquire); the writer stores (release). */
    _Atomic(struct name_tab *) tab;
    _Atomic uint64_t count; /* names registered now, for es_runtime_stats */
    /* Under lock. */
    pthread_mutex_t lock;
    ck_epoch_record_t *rec;   /* deferred frees of this module */
    uint32_t used;            /* entries + tombstones in tab */
    struct name_ent **byid;   /* id index: chains through id_next */
    uint32_t nbyid, nentries; /* buckets, entries in the index */
};

/* The tombstone: a removed entry's slot. Never dereferenced by readers
 * beyond the pointer compare. */
static struct name_ent tomb;
#define TOMB (&tomb)

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    return x;
}

/* FNV-1a over the bytes, finished with a mixer for the low bits. */
static uint64_t name_hash(const char *s, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return mix(h);
}

/* The length of a valid name (1 .. ES_NAME_MAX bytes), or 0. */
static size_t name_len(const char *name)
{
    if (!name)
        return 0;
    size_t len = strnlen(name, ES_NAME_MAX + 1);
    return len > ES_NAME_MAX ? 0 : len;
}

static bool ent_is(const struct name_ent *e, uint64_t h, const char *name,
                   size_t len)
{
    return e != TOMB && e->hash == h && e->len == len &&
           memcmp(e->name, name, len) == 0;
}

static struct name_tab *tab_new(uint32_t cap)
{
    struct name_tab *t =
        es__calloc(1, sizeof(*t) + (size_t)cap * sizeof(t->slots[0]));
    if (!t)
        return NULL;
    t->mask = cap - 1;
    for (uint32_t i = 0; i < cap; i++)
        atomic_init(&t->slots[i], NULL);
    return t;
}

static void ent_reclaim(ck_epoch_entry_t *e)
{
    struct name_ent *n =
        (struct name_ent *)((char *)e - offsetof(struct name_ent, epoch_entry));
    es__free(n);
}

static void tab_reclaim(ck_epoch_entry_t *e)
{
    struct name_tab *t =
        (struct name_tab *)((char *)e - offsetof(struct name_tab, epoch_entry));
    es__free(t);
}

/* Frees e's object once no reader can see it (lock held). The fence
 * orders the store that unpublished it before ck_epoch_call()'s load of
 * the global epoch (see the invariants above). */
static void defer(struct es__names *n, ck_epoch_entry_t *e, ck_epoch_cb_t *cb)
{
    atomic_thread_fence(memory_order_seq_cst);
    ck_epoch_call(n->rec, e, cb);
}

/* --- the table, made on first use ----------------------------------------- */

static struct es__names *names_get(es_runtime_t *rt)
{
    struct es__names *n =
        atomic_load_explicit(&rt->names, memory_order_acquire);
    if (n)
        return n;
    n = es__calloc(1, sizeof(*n));
    struct name_tab *t = tab_new(TAB_MIN);
    ck_epoch_record_t *rec = es__aalloc(sizeof(*rec));
    if (!n || !t || !rec) {
        es__free(n);
        es__free(t);
        es__afree(rec);
        return NULL;
    }
    n->rt = rt;
    n->rec = rec;
    atomic_init(&n->tab, t);
    atomic_init(&n->count, 0);
    pthread_mutex_init(&n->lock, NULL);
    /* Published locked: the record is registered only once the table is
     * ours (a record stays on the epoch's list for the runtime's life),
     * and no writer may defer on it before that. */
    pthread_mutex_lock(&n->lock);
    struct es__names *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(
            &rt->names, &none, n, memory_order_acq_rel, memory_order_acquire)) {
        pthread_mutex_unlock(&n->lock);
        pthread_mutex_destroy(&n->lock);
        es__free(t);
        es__afree(rec);
        es__free(n);
        return none;
    }
    ck_epoch_register(&rt->epoch, rec, NULL);
    pthread_mutex_unlock(&n->lock);
    return n;
}

void es__names_free(es_runtime_t *rt)
{
    struct es__names *n =
        atomic_load_explicit(&rt->names, memory_order_relaxed);
    if (!n)
        return;
    /* No reader is left: run what waits for a grace period, then free
     * the rest (the actors have all stopped, so the table is empty unless
     * a registration raced with the runtime's end). */
    ES__TSAN_ACQUIRE(&rt->epoch);
    ck_epoch_reclaim(n->rec);
    struct name_tab *t = atomic_load_explicit(&n->tab, memory_order_relaxed);
    for (uint32_t i = 0; i <= t->mask; i++) {
        struct name_ent *e =
            atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (e && e != TOMB)
            es__free(e);
    }
    es__free(t);
    es__free(n->byid);
    pthread_mutex_destroy(&n->lock);
    es__afree(n->rec);
    es__free(n);
    atomic_store_explicit(&rt->names, NULL, memory_order_relaxed);
}

/* --- writer side (lock held) ---------------------------------------------- */

static uint32_t byid_bucket(const struct es__names *n, es_actor_id_t id)
{
    return (uint32_t)mix(id) & (n->nbyid - 1);
}

static int byid_add(struct es__names *n, struct name_ent *e)
{
    if (n->nentries >= n->nbyid) {
        uint32_t cap = n->nbyid ? n->nbyid * 2 : BYID_MIN;
        struct name_ent **b = es__calloc(cap, sizeof(*b));
        if (!b)
            return -ENOMEM;
        struct name_ent **old = n->byid;
        uint32_t nold = n->nbyid;
        n->byid = b;
        n->nbyid = cap;
        for (uint32_t i = 0; i < nold; i++) {
            while (old[i]) {
                struct name_ent *x = old[i];
                old[i] = x->id_next;
                uint32_t h = byid_bucket(n, x->id);
                x->id_next = b[h];
                b[h] = x;
            }
        }
        es__free(old);
    }
    uint32_t h = byid_bucket(n, e->id);
    e->id_next = n->byid[h];
    n->byid[h] = e;
    n->nentries++;
    return 0;
}

static void byid_remove(struct es__names *n, struct name_ent *e)
{
    for (struct name_ent **p = &n->byid[byid_bucket(n, e->id)]; *p;
         p = &(*p)->id_next) {
        if (*p == e) {
            *p = e->id_next;
            n->nentries--;
            return;
        }
    }
}

/* The slot holding `name`, or NULL. */
static _Atomic(struct name_ent *) *slot_find(struct name_tab *t, uint64_t h,
                                             const char *name, size_t len)
{
    for (uint32_t i = (uint32_t)h & t->mask;; i = (i + 1) & t->mask) {
        struct name_ent *e =
            atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (!e)
            return NULL;
        if (ent_is(e, h, name, len))
            return &t->slots[i];
    }
}

/* Puts e in the first free or dead slot of its chain (e is not there). */
static void slot_put(struct name_tab *t, struct name_ent *e, uint32_t *used)
{
    for (uint32_t i = (uint32_t)e->hash & t->mask;; i = (i + 1) & t->mask) {
        struct name_ent *x =
            atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (!x || x == TOMB) {
            if (!x)
                (*used)++;
            /* Pairs with the readers' acquire load of the slot. */
            atomic_store_explicit(&t->slots[i], e, memory_order_release);
            return;
        }
    }
}

/* Makes room for one more entry: rebuilds the table when entries plus
 * tombstones would pass 3/4 of it. */
static int tab_reserve(struct es__names *n)
{
    struct name_tab *t = atomic_load_explicit(&n->tab, memory_order_relaxed);
    uint32_t cap = t->mask + 1;
    if ((uint64_t)(n->used + 1) * 4 <= (uint64_t)cap * TAB_MAX_LOAD)
        return 0;
    uint32_t live = n->nentries + 1, ncap = TAB_MIN;
    while ((uint64_t)live * 2 > ncap) /* at most half full after a rebuild */
        ncap *= 2;
    struct name_tab *nt = tab_new(ncap);
    if (!nt)
        return -ENOMEM;
    uint32_t used = 0;
    for (uint32_t i = 0; i < cap; i++) {
        struct name_ent *e =
            atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (e && e != TOMB)
            slot_put(nt, e, &used);
    }
    /* Pairs with the readers' acquire load of `tab`. */
    atomic_store_explicit(&n->tab, nt, memory_order_release);
    n->used = used;
    defer(n, &t->epoch_entry, tab_reclaim);
    return 0;
}

/* Takes entry e out of the table and frees it after a grace period; the
 * caller has taken it out of the id index. */
static void ent_remove(struct es__names *n, struct name_ent *e)
{
    struct name_tab *t = atomic_load_explicit(&n->tab, memory_order_relaxed);
    uint32_t i = (uint32_t)e->hash & t->mask;
    while (atomic_load_explicit(&t->slots[i], memory_order_relaxed) != e)
        i = (i + 1) & t->mask;
    /* Readers that load TOMB no longer find the name; the release orders
     * nothing they need (TOMB is never dereferenced) but keeps the store
     * ordered before the DOWN a stop sends next (see the invariants). */
    atomic_store_explicit(&t->slots[i], TOMB, memory_order_release);
    atomic_fetch_sub_explicit(&n->count, 1, memory_order_relaxed);
    defer(n, &e->epoch_entry, ent_reclaim);
}

/* Runs the callbacks whose grace period has passed (lock held), on this
 * thread: the acquire tells TSan about the readers' ck_epoch_end() (each
 * releases rt->epoch before it). */
static void collect(struct es__names *n)
{
    if (!n->rec->n_pending)
        return;
    /* Take what is past its grace period first and free it after the
     * acquire: every reader that could have seen it left its section,
     * and released rt->epoch when it did (TSan does not see ck_epoch's
     * fences). Acquiring before ck_epoch_poll() missed a reader that left
     * between the acquire and the poll. */
    ck_stack_t ready = CK_STACK_INITIALIZER;
    (void)ck_epoch_poll_deferred(n->rec, &ready);
    ES__TSAN_ACQUIRE(&n->rt->epoch);
    ck_stack_entry_t *next;
    for (ck_stack_entry_t *c = ck_stack_batch_pop_npsc(&ready); c; c = next) {
        next = CK_STACK_NEXT(c);
        ck_epoch_entry_t *e =
            (ck_epoch_entry_t *)((char *)c -
                                 offsetof(ck_epoch_entry_t, stack_entry));
        e->function(e);
    }
}

/* Registers e for actor a (lock held, a read in an epoch section). */
static int insert(struct es__names *n, struct name_ent *e, es_actor_t *a)
{
    if (!a)
        return -ESRCH;
    if (a->is_loop)
        return -EINVAL;
    struct name_tab *t = atomic_load_explicit(&n->tab, memory_order_relaxed);
    if (slot_find(t, e->hash, e->name, e->len))
        return -EEXIST;
    int rc = tab_reserve(n);
    if (rc)
        return rc;
    /* The OR that es__names_stop() orders against (see the invariants). */
    uint8_t old =
        atomic_fetch_or_explicit(&a->xflags, ES__X_NAMED, memory_order_acq_rel);
    if (old & ES__X_DEAD) {
        if (!(old & ES__X_NAMED))
            atomic_fetch_and_explicit(&a->xflags, (uint8_t)~ES__X_NAMED,
                                      memory_order_relaxed);
        return -ESRCH;
    }
    /* A failure here leaves NAMED set on a with no name: its stop then
     * finds nothing to remove, which is harmless. */
    rc = byid_add(n, e);
    if (rc)
        return rc;
    slot_put(atomic_load_explicit(&n->tab, memory_order_relaxed), e, &n->used);
    atomic_fetch_add_explicit(&n->count, 1, memory_order_relaxed);
    return 0;
}

static struct name_ent *ent_new(const char *name, size_t len, es_actor_id_t id)
{
    struct name_ent *e = es__malloc(sizeof(*e) + len + 1);
    if (!e)
        return NULL;
    e->hash = name_hash(name, len);
    e->id = id;
    e->id_next = NULL;
    e->len = (uint32_t)len;
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    return e;
}

/* --- public calls ----------------------------------------------------------
 */

int es_register(es_runtime_t *rt, const char *name, es_actor_id_t id)
{
    size_t len = name_len(name);
    if (!rt || !len || id == ES_ACTOR_NONE)
        return -EINVAL;
    struct es__tctx *t = es__tctx_get(rt);
    struct es__names *n = t ? names_get(rt) : NULL;
    struct name_ent *e = n ? ent_new(name, len, id) : NULL;
    if (!e)
        return -ENOMEM;
    /* The section keeps the actor from being freed while we look at it
     * (demux threads are in one for their whole turn). */
    bool enter = t->loop_index < 0;
    if (enter)
        ck_epoch_begin(t->rec, NULL);
    pthread_mutex_lock(&n->lock);
    int rc = insert(n, e, es__table_lookup(rt->table, id));
    collect(n);
    pthread_mutex_unlock(&n->lock);
    if (enter) {
        ES__TSAN_RELEASE(&rt->epoch);
        ck_epoch_end(t->rec, NULL);
    }
    if (rc)
        es__free(e);
    return rc;
}

int es_unregister(es_runtime_t *rt, const char *name)
{
    size_t len = name_len(name);
    if (!rt || !len)
        return -EINVAL;
    struct es__names *n =
        atomic_load_explicit(&rt->names, memory_order_acquire);
    if (!n)
        return -ENOENT;
    uint64_t h = name_hash(name, len);
    pthread_mutex_lock(&n->lock);
    struct name_tab *t = atomic_load_explicit(&n->tab, memory_order_relaxed);
    _Atomic(struct name_ent *) *s = slot_find(t, h, name, len);
    if (s) {
        struct name_ent *e = atomic_load_explicit(s, memory_order_relaxed);
        byid_remove(n, e);
        ent_remove(n, e);
    }
    collect(n);
    pthread_mutex_unlock(&n->lock);
    return s ? 0 : -ENOENT;
}

/* The id `name` points at, or ES_ACTOR_NONE (caller in an epoch section). */
static es_actor_id_t lookup(struct es__names *n, uint64_t h, const char *name,
                            size_t len)
{
    /* Pairs with the release stores of tab_reserve() and slot_put(). */
    struct name_tab *t = atomic_load_explicit(&n->tab, memory_order_acquire);
    for (uint32_t i = (uint32_t)h & t->mask;; i = (i + 1) & t->mask) {
        struct name_ent *e =
            atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (!e)
            return ES_ACTOR_NONE;
        if (ent_is(e, h, name, len))
            return e->id;
    }
}

int es_whereis(const es_runtime_t *crt, const char *name, es_actor_id_t *out)
{
    es_runtime_t *rt = (es_runtime_t *)crt; /* the epoch record, not data */
    size_t len = name_len(name);
    if (!rt || !len || !out)
        return -EINVAL;
    struct es__names *n =
        atomic_load_explicit(&rt->names, memory_order_acquire);
    if (!n)
        return -ENOENT;
    struct es__tctx *t = es__tctx_get(rt);
    if (!t)
        return -ENOMEM;
    uint64_t h = name_hash(name, len);
    bool enter = t->loop_index < 0;
    if (enter)
        ck_epoch_begin(t->rec, NULL);
    es_actor_id_t id = lookup(n, h, name, len);
    if (enter) {
        ES__TSAN_RELEASE(&rt->epoch);
        ck_epoch_end(t->rec, NULL);
    }
    if (id == ES_ACTOR_NONE)
        return -ENOENT;
    *out = id;
    return 0;
}

int es_send_named(es_runtime_t *rt, const char *name, const es_msg_t *msg)
{
    es_actor_id_t id;
    int rc = es_whereis(rt, name, &id);
    return rc ? rc : es_send(rt, id, msg);
}

/* --- runtime hooks ----------------------------------------------------------
 */

void es__names_stop(es_actor_t *a)
{
    uint8_t old =
        atomic_fetch_or_explicit(&a->xflags, ES__X_DEAD, memory_order_acq_rel);
    if (!(old & ES__X_NAMED))
        return;
    struct es__names *n =
        atomic_load_explicit(&a->rt->names, memory_order_acquire);
    ES_ASSERT(n != NULL); /* NAMED is set only once the table exists */
    pthread_mutex_lock(&n->lock);
    if (n->nbyid) {
        for (struct name_ent **p = &n->byid[byid_bucket(n, a->id)]; *p;) {
            struct name_ent *e = *p;
            if (e->id != a->id) {
                p = &e->id_next;
                continue;
            }
            *p = e->id_next;
            n->nentries--;
            ent_remove(n, e);
        }
    }
    collect(n);
    pthread_mutex_unlock(&n->lock);
}

bool es__names_of(es_runtime_t *rt, es_actor_id_t id, char *buf, size_t size)
{
    struct es__names *n =
        atomic_load_explicit(&rt->names, memory_order_acquire);
    bool found = false;
    if (!n)
        return false;
    pthread_mutex_lock(&n->lock);
    for (struct name_ent *e = n->nbyid ? n->byid[byid_bucket(n, id)] : NULL; e;
         e = e->id_next) {
        if (e->id == id && e->len < size) {
            memcpy(buf, e->name, e->len + 1);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&n->lock);
    return found;
}

void es__names_stats(const es_runtime_t *rt, es_stats_t *out)
{
    struct es__names *n = atomic_load_explicit(&((es_runtime_t *)rt)->names,
                                               memory_order_acquire);
    out->names = n ? atomic_load_explicit(&n->count, memory_order_relaxed) : 0;
}
