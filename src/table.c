/* SPDX-License-Identifier: MIT */
/*
 * The actor table: maps a handle (slot index + generation) to a live actor
 * so that a stale handle can never reach freed or reused memory.
 *
 * Invariants:
 * - Slots live in fixed-size chunks that are allocated once and never moved
 *   or freed before the table, so a lookup needs no lock and no epoch for
 *   the slot itself. The chunk directory is fixed-size too.
 * - slot->actor is published with a release store after the actor is fully
 *   built, and read with an acquire load, so a reader that finds the pointer
 *   sees the actor's immutable fields (id, rt, loop, capacity).
 * - A lookup compares the actor's own id with the handle: a slot reused by a
 *   newer actor has a newer generation, so the old handle fails.
 * - The actor's memory is protected by the epoch: readers look up inside an
 *   epoch section and the home thread frees an actor only after a grace
 *   period (actor.c). The slot's index goes back on the free list only then
 *   (es__table_release), so handles are not recycled while a reader might
 *   still hold the old actor pointer.
 * Allocation and release of slots take a mutex: spawn and reclaim are not
 * the hot path; lookups, which are, take none.
 */
#include "internal.h"

#include <errno.h>

#define CHUNK_SHIFT 12
#define CHUNK_SLOTS (1u << CHUNK_SHIFT)
#define MAX_CHUNKS 4096u /* 16 M actors at once */
#define FREE_END UINT32_MAX

struct slot {
    _Atomic(es_actor_t *) actor;
    uint32_t gen;       /* generation of the next (or current) occupant */
    uint32_t next_free; /* free list link, under the lock */
};

struct es__table {
    pthread_mutex_t lock;
    _Atomic(struct slot *) chunks[MAX_CHUNKS];
    uint32_t free_head; /* index of the first free slot, or FREE_END */
    uint32_t used;      /* slots ever handed out (high-water mark) */
};

int es__table_new(struct es__table **out)
{
    struct es__table *t = es__calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    t->free_head = FREE_END;
    *out = t;
    return 0;
}

void es__table_free(struct es__table *t)
{
    if (!t)
        return;
    for (unsigned i = 0; i < MAX_CHUNKS; i++)
        es__free(atomic_load_explicit(&t->chunks[i], memory_order_relaxed));
    pthread_mutex_destroy(&t->lock);
    es__free(t);
}

static struct slot *slot_at(struct es__table *t, uint32_t idx)
{
    struct slot *chunk = atomic_load_explicit(&t->chunks[idx >> CHUNK_SHIFT],
                                              memory_order_acquire);
    return chunk ? &chunk[idx & (CHUNK_SLOTS - 1)] : NULL;
}

/* Takes a free slot index; the lock is held. */
static int slot_alloc(struct es__table *t, uint32_t *idx)
{
    if (t->free_head != FREE_END) {
        *idx = t->free_head;
        t->free_head = slot_at(t, *idx)->next_free;
        return 0;
    }
    if (t->used == MAX_CHUNKS * CHUNK_SLOTS)
        return -ENOMEM;
    uint32_t c = t->used >> CHUNK_SHIFT;
    if (!atomic_load_explicit(&t->chunks[c], memory_order_relaxed)) {
        struct slot *chunk = es__calloc(CHUNK_SLOTS, sizeof(*chunk));
        if (!chunk)
            return -ENOMEM;
        for (unsigned i = 0; i < CHUNK_SLOTS; i++)
            chunk[i].gen = 1;
        atomic_store_explicit(&t->chunks[c], chunk, memory_order_release);
    }
    *idx = t->used++;
    return 0;
}

int es__table_add(struct es__table *t, es_actor_t *a)
{
    uint32_t idx;
    pthread_mutex_lock(&t->lock);
    int rc = slot_alloc(t, &idx);
    if (rc == 0) {
        struct slot *s = slot_at(t, idx);
        a->id = ((uint64_t)s->gen << 32) | idx;
        atomic_store_explicit(&s->actor, a, memory_order_release);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void es__table_remove(struct es__table *t, es_actor_t *a)
{
    struct slot *s = slot_at(t, (uint32_t)a->id);
    atomic_store_explicit(&s->actor, NULL, memory_order_release);
}

void es__table_release(struct es__table *t, es_actor_id_t id)
{
    uint32_t idx = (uint32_t)id;
    pthread_mutex_lock(&t->lock);
    struct slot *s = slot_at(t, idx);
    s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
    s->next_free = t->free_head;
    t->free_head = idx;
    pthread_mutex_unlock(&t->lock);
}

es_actor_t *es__table_lookup(struct es__table *t, es_actor_id_t id)
{
    uint32_t idx = (uint32_t)id;
    if (id == ES_ACTOR_NONE || (idx >> CHUNK_SHIFT) >= MAX_CHUNKS)
        return NULL;
    struct slot *s = slot_at(t, idx);
    if (!s)
        return NULL;
    es_actor_t *a = atomic_load_explicit(&s->actor, memory_order_acquire);
    return a && a->id == id ? a : NULL;
}
