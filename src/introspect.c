/* SPDX-License-Identifier: MIT */
/*
 * es_runtime_actors(): a snapshot of the live actors, from any thread, and
 * the sampled time each spends in its behaviour.
 *
 * Time. Reading the clock around every behaviour call would cost more than
 * the call itself on the hot path (two reads of about 20 ns against a
 * message of 60 ns). So a loop times one call in ES_PROF_EVERY and adds
 * ES_PROF_EVERY times what it measured to the actor's account: an
 * unbiased estimate whose error shrinks with the number of calls. The
 * accounts live in a per-loop map keyed by handle (map.c), not
 * in the actor, so an idle actor (one that never ran a timed call) costs
 * nothing. The loop thread is the only writer; it takes the table's mutex
 * only on a timed call, when an actor with an account stops, and when one
 * moves away; es_runtime_actors() takes it to read.
 *
 * Snapshot. Inside an epoch section (actors cannot be freed meanwhile) it
 * walks the actor table, reads each actor's immutable fields, its home
 * loop and its atomic mailbox counters, collects the lot into an array,
 * leaves the section, adds the names and accounts, and only then calls the
 * callback, so the callback may call into the runtime freely.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

/* Adds ns to id's account (the loop thread). */
void es__prof_add(struct es__loop *loop, es_actor_id_t id, uint64_t ns)
{
    pthread_mutex_lock(&loop->prof.lock);
    uint64_t *v = es__map_get(&loop->prof.busy, id);
    if (v) /* no memory: this sample is lost, nothing else */
        *v += ns;
    pthread_mutex_unlock(&loop->prof.lock);
}

uint64_t es__prof_take(struct es__loop *loop, es_actor_id_t id)
{
    struct es__prof *p = &loop->prof;
    if (!p->busy.n) /* the loop thread is the only writer */
        return 0;
    pthread_mutex_lock(&p->lock);
    uint64_t *v = es__map_find(&p->busy, id), ns = v ? *v : 0;
    if (v)
        es__map_del(&p->busy, id);
    pthread_mutex_unlock(&p->lock);
    return ns;
}

static uint64_t prof_read(struct es__loop *loop, es_actor_id_t id)
{
    struct es__prof *p = &loop->prof;
    pthread_mutex_lock(&p->lock);
    uint64_t *v = es__map_find(&p->busy, id), ns = v ? *v : 0;
    pthread_mutex_unlock(&p->lock);
    return ns;
}

void es__prof_init(struct es__prof *p)
{
    *p = (struct es__prof){0};
    pthread_mutex_init(&p->lock, NULL);
}

void es__prof_destroy(struct es__prof *p)
{
    es__map_free(&p->busy);
    pthread_mutex_destroy(&p->lock);
    *p = (struct es__prof){0};
}

/* --- the snapshot ------------------------------------------------------------
 */

struct snap {
    es_actor_info_t *v;
    size_t n, cap;
};

static int snap_take(es_runtime_t *rt, struct snap *s)
{
    struct es__table *t = rt->table;
    pthread_mutex_lock(&t->lock);
    uint32_t used = t->used;
    pthread_mutex_unlock(&t->lock);
    for (uint32_t idx = 0; idx < used; idx++) {
        es_actor_t *a = es__table_slot(t, idx);
        if (!a || a->is_loop ||
            (atomic_load_explicit(&a->xflags, memory_order_relaxed) &
             ES__X_DEAD))
            continue;
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 256;
            es_actor_info_t *v = es__realloc(s->v, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            s->v = v;
            s->cap = cap;
        }
        uint32_t sent = atomic_load_explicit(&a->sent, memory_order_relaxed);
        uint32_t done = atomic_load_explicit(&a->done, memory_order_relaxed);
        s->v[s->n++] = (es_actor_info_t){
            .id = a->id,
            .loop = (int)es__actor_home(a)->index,
            .mailbox = (int32_t)(sent - done) > 0 ? sent - done : 0,
            .handled = done,
        };
    }
    return 0;
}

int es_runtime_actors(es_runtime_t *rt, es_actor_info_cb cb, void *arg)
{
    if (!rt || !cb)
        return -EINVAL;
    struct es__tctx *tc = es__tctx_get(rt);
    if (!tc)
        return -ENOMEM;
    struct snap s = {0};
    bool foreign = tc->loop_index < 0;
    if (foreign)
        ck_epoch_begin(tc->rec, NULL);
    int rc = snap_take(rt, &s);
    if (foreign) {
        ES__TSAN_RELEASE(&rt->epoch);
        ck_epoch_end(tc->rec, NULL);
    }
    char name[ES_NAME_MAX + 1];
    size_t i = 0;
    for (; rc == 0 && i < s.n; i++) {
        es_actor_info_t *info = &s.v[i];
        for (unsigned k = 0; k < rt->nloops; k++)
            info->busy_ns += prof_read(&rt->loops[k], info->id);
        info->name =
            es__names_of(rt, info->id, name, sizeof(name)) ? name : NULL;
        if (cb(arg, info) != 0)
            break;
    }
    es__free(s.v);
    return rc ? rc : (int)(i < s.n ? i + 1 : s.n);
}
