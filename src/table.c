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

#define CHUNK_SHIFT ES__TABLE_CHUNK_SHIFT
#define CHUNK_SLOTS ES__TABLE_CHUNK_SLOTS
#define MAX_CHUNKS ES__TABLE_MAX_CHUNKS
#define FREE_END UINT32_MAX

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

static struct es__slot *slot_at(struct es__table *t, uint32_t idx)
{
    struct es__slot *chunk = atomic_load_explicit(
        &t->chunks[idx >> CHUNK_SHIFT], memory_order_acquire);
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
        struct es__slot *chunk = es__calloc(CHUNK_SLOTS, sizeof(*chunk));
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
        struct es__slot *s = slot_at(t, idx);
        a->id = ((uint64_t)s->gen << 32) | idx;
        atomic_store_explicit(&s->actor, a, memory_order_release);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void es__table_remove(struct es__table *t, es_actor_t *a)
{
    struct es__slot *s = slot_at(t, (uint32_t)a->id);
    atomic_store_explicit(&s->actor, NULL, memory_order_release);
}

void es__table_release(struct es__table *t, es_actor_id_t id)
{
    uint32_t idx = (uint32_t)id;
    pthread_mutex_lock(&t->lock);
    struct es__slot *s = slot_at(t, idx);
    s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
    s->next_free = t->free_head;
    t->free_head = idx;
    pthread_mutex_unlock(&t->lock);
}
