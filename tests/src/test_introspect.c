/* SPDX-License-Identifier: MIT */
/*
 * es_runtime_actors() (issue 10, introspection): every live actor once,
 * with its name, thread, mailbox depth, messages handled and the sampled
 * time in its behaviour; stopped actors and loop actors never.
 */
#include "es_test.h"

#include <stdio.h>
#include <string.h>

enum { MSG_WORK = ES_MSG_USER, MSG_HOLD, MSG_NOP };

struct worker {
    atomic_ullong done, holding, release;
};

static int worker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct worker *w = es_actor_state(self);

    if (msg->type == MSG_WORK) {
        double until = es_test_now() + 100e-6; /* 100 us of work */
        while (es_test_now() < until)
            ;
    } else if (msg->type == MSG_HOLD) {
        atomic_store(&w->holding, 1);
        while (!atomic_load(&w->release))
            es_test_sleep_ms(1);
    }
    if (msg->type >= ES_MSG_USER)
        atomic_fetch_add(&w->done, 1);
    return 0;
}

#define MAX_SEEN 64

struct seen {
    unsigned n;
    es_actor_info_t info[MAX_SEEN];
    char names[MAX_SEEN][32];
    unsigned stop_after; /* 0: never */
};

static int collect(void *arg, const es_actor_info_t *info)
{
    struct seen *s = arg;
    if (s->n < MAX_SEEN) {
        s->info[s->n] = *info;
        s->names[s->n][0] = '\0';
        if (info->name)
            snprintf(s->names[s->n], sizeof(s->names[0]), "%s", info->name);
        s->info[s->n].name = NULL;
    }
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static const es_actor_info_t *find(const struct seen *s, es_actor_id_t id,
                                   unsigned *index)
{
    for (unsigned i = 0; i < s->n && i < MAX_SEEN; i++)
        if (s->info[i].id == id) {
            if (index)
                *index = i;
            return &s->info[i];
        }
    return NULL;
}

static es_actor_id_t spawn_on(es_runtime_t *rt, struct worker *w, int loop)
{
    es_actor_id_t id;
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = worker_cb,
                                      .state = w,
                                      .loop = ES_LOOP(loop)},
                   &id));
    return id;
}

Test(introspect, every_live_actor_with_its_figures, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt =
        es_test_runtime_new(&(es_runtime_opts_t){.threads = 2, .colocate = -1});
    static struct worker busy, held, idle, gone;
    busy = held = idle = gone = (struct worker){0};
    es_actor_id_t bid = spawn_on(rt, &busy, 1), hid = spawn_on(rt, &held, 0),
                  iid = spawn_on(rt, &idle, 0), gid = spawn_on(rt, &gone, 1);
    es_msg_t work = es_msg_make(MSG_WORK), nop = es_msg_make(MSG_NOP),
             hold = es_msg_make(MSG_HOLD);

    ES_OK(es_runtime_start(rt));
    ES_OK(es_register(rt, "busy", bid));
    ES_OK(es_stop(rt, gid));
    /* 320 calls of 100 us alone on loop 1: 5 of them timed. */
    for (int i = 0; i < 320; i++)
        ES_OK(es_test_send_retry(rt, bid, &work, ES_TEST_WAIT_S));
    ES_WAIT_GE(busy.done, 320);
    ES_OK(es_send(rt, hid, &hold));
    ES_WAIT_GE(held.holding, 1);
    for (int i = 0; i < 5; i++)
        ES_OK(es_send(rt, hid, &nop));

    struct seen s = {0};
    int n = es_runtime_actors(rt, collect, &s);
    atomic_store(&held.release, 1);
    cr_assert_eq(n, 3,
                 "%d actors reported, want 3 (loop actors and the "
                 "stopped one left out)",
                 n);
    unsigned bi = 0;
    const es_actor_info_t *b = find(&s, bid, &bi), *h = find(&s, hid, NULL),
                          *i = find(&s, iid, NULL);
    cr_assert(b && h && i, "a live actor is missing");
    cr_assert_null(find(&s, gid, NULL), "the stopped actor is listed");
    cr_assert_str_eq(s.names[bi], "busy");
    cr_assert_eq(b->loop, 1);
    cr_assert_eq(h->loop, 0);
    cr_assert_eq(b->handled, 320);
    cr_assert_eq(b->mailbox, 0);
    cr_assert_geq(h->mailbox, 5, "mailbox %u with 5 queued", h->mailbox);
    /* About 32 ms of work; a loaded machine only makes it longer. */
    cr_assert_geq(b->busy_ns, 16000000, "busy %llu ns for ~32 ms of work",
                  (unsigned long long)b->busy_ns);
    cr_assert_lt(b->busy_ns, 2000000000ull);
    cr_assert_eq(i->handled, 0);
    cr_assert_eq(i->busy_ns, 0);

    struct seen first = {.stop_after = 1};
    cr_assert_eq(es_runtime_actors(rt, collect, &first), 1,
                 "a nonzero return must stop the walk");
    cr_assert_eq(es_runtime_actors(NULL, collect, &s), -EINVAL);
    cr_assert_eq(es_runtime_actors(rt, NULL, &s), -EINVAL);
    es_test_free(rt);
}

/* From inside a behaviour too (a demux thread), and time follows an actor
 * that migrates. */
struct lister {
    es_runtime_t *rt;
    atomic_int n;
};

static int lister_cb(es_actor_t *self, es_msg_t *msg)
{
    struct lister *l = es_actor_state(self);
    if (msg->type == MSG_NOP) {
        struct seen s = {0};
        atomic_store(&l->n,
                     es_runtime_actors(es_actor_runtime(self), collect, &s));
    }
    return 0;
}

Test(introspect, from_a_behaviour, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    static struct lister l;
    static struct worker w;
    es_actor_id_t lid, wid;
    es_msg_t nop = es_msg_make(MSG_NOP);

    l = (struct lister){0};
    atomic_store(&l.n, -1);
    w = (struct worker){0};
    ES_OK(es_spawn(rt, &(es_spawn_opts_t){.behaviour = lister_cb, .state = &l},
                   &lid));
    wid = spawn_on(rt, &w, 1);
    (void)wid;
    ES_OK(es_send(rt, lid, &nop));
    double until = es_test_now() + ES_TEST_WAIT_S;
    while (atomic_load(&l.n) < 0 && es_test_now() < until)
        es_test_sleep_ms(1);
    cr_assert_eq(atomic_load(&l.n), 2);
    es_test_free(rt);
}
