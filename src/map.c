/* SPDX-License-Identifier: MIT */
/*
 * A small open-addressing map, u64 -> u64, for one thread (or under its
 * owner's lock): linear probing, at most half full, backward-shift
 * deletion, key 0 meaning empty (actor handles and request ids are never
 * 0). Used by request.c (pending requests per requester) and
 * introspect.c (behaviour time per actor).
 */
#include "internal.h"

#include <errno.h>

#define MAP_MIN 16u

static inline uint32_t hash(uint64_t x)
{
    x ^= x >> 31;
    x *= UINT64_C(0x9e3779b97f4a7c15);
    return (uint32_t)(x >> 32);
}

uint64_t *es__map_find(const struct es__map *m, uint64_t key)
{
    if (!m->n)
        return NULL;
    for (uint32_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key)
            return &m->vals[i];
        if (!m->keys[i])
            return NULL;
    }
}

static void put_new(struct es__map *m, uint64_t key, uint64_t val)
{
    uint32_t i = hash(key) & (m->cap - 1);
    while (m->keys[i])
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->vals[i] = val;
    m->n++;
}

static int grow(struct es__map *m)
{
    struct es__map g = {.cap = m->cap ? m->cap * 2 : MAP_MIN};
    g.keys = es__calloc(g.cap, sizeof(*g.keys));
    g.vals = es__malloc((size_t)g.cap * sizeof(*g.vals));
    if (!g.keys || !g.vals) {
        es__free(g.keys);
        es__free(g.vals);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->keys[i])
            put_new(&g, m->keys[i], m->vals[i]);
    es__free(m->keys);
    es__free(m->vals);
    *m = g;
    return 0;
}

/* The value slot of key, made (0) if absent; NULL when out of memory. */
uint64_t *es__map_get(struct es__map *m, uint64_t key)
{
    uint64_t *v = es__map_find(m, key);
    if (v)
        return v;
    if ((m->n + 1) * 2 > m->cap && grow(m) != 0)
        return NULL;
    put_new(m, key, 0);
    return es__map_find(m, key);
}

/* Removes key (present), shifting back the run after it. */
void es__map_del(struct es__map *m, uint64_t key)
{
    uint32_t mask = m->cap - 1, i = hash(key) & mask;
    while (m->keys[i] != key)
        i = (i + 1) & mask;
    for (uint32_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
        uint32_t home = hash(m->keys[j]) & mask;
        /* j's key may fill the hole at i if i lies on its probe path. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    m->n--;
}

void es__map_free(struct es__map *m)
{
    es__free(m->keys);
    es__free(m->vals);
    *m = (struct es__map){0};
}
