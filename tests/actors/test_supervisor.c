/* SPDX-License-Identifier: MIT */
/*
 * Supervisors (issue 10): the three strategies restart what they should and
 * nothing else, in order; the intensity limit makes a supervisor give up
 * and its own supervisor see it; restart types; nested supervisors; names
 * registered again on each restart; ordered shutdown, last child first.
 */
#include "es_test.h"

#include <eventserver/supervisor.h>

#include <stdlib.h>

enum { MSG_CRASH = ES_MSG_USER, MSG_QUIT, MSG_WATCH };

#define MAXC 8

/* What the workers did, in one global order. */
static atomic_ullong seq;
static struct slot {
    atomic_ullong starts, stops;
    atomic_ullong last_start_seq, last_stop_seq;
} slots[MAXC];

struct worker {
    unsigned index;
};

static int worker_init(void *arg, void **state)
{
    struct worker *w = malloc(sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->index = (unsigned)(uintptr_t)arg;
    *state = w;
    return 0;
}

static int worker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct worker *w = es_actor_state(self);
    struct slot *s = &slots[w->index];

    switch (msg->type) {
    case ES_MSG_START:
        atomic_fetch_add(&s->starts, 1);
        atomic_store(&s->last_start_seq, atomic_fetch_add(&seq, 1) + 1);
        return 0;
    case ES_MSG_STOP:
        atomic_fetch_add(&s->stops, 1);
        atomic_store(&s->last_stop_seq, atomic_fetch_add(&seq, 1) + 1);
        return 0;
    case MSG_CRASH:
        return -EIO;
    case MSG_QUIT:
        es_actor_stop(self);
        return 0;
    }
    return 0;
}

static void reset(void)
{
    atomic_store(&seq, 0);
    for (int i = 0; i < MAXC; i++)
        slots[i] = (struct slot){0};
}

static const char *names[MAXC] = {"w0", "w1", "w2", "w3",
                                  "w4", "w5", "w6", "w7"};

static void specs(es_child_spec_t *c, unsigned n, unsigned first,
                  es_restart_t restart)
{
    for (unsigned i = 0; i < n; i++)
        c[i] = (es_child_spec_t){
            .spawn = {.behaviour = worker_cb, .state_free = free},
            .init = worker_init,
            .init_arg = (void *)(uintptr_t)(first + i),
            .name = names[first + i],
            .restart = restart};
}

static es_actor_id_t whereis(es_runtime_t *rt, const char *name)
{
    es_actor_id_t id = ES_ACTOR_NONE;
    (void)es_whereis(rt, name, &id);
    return id;
}

/* Waits until `name` points at an actor other than `old`. */
static es_actor_id_t wait_new(es_runtime_t *rt, const char *name,
                              es_actor_id_t old)
{
    double until = es_test_now() + ES_TEST_WAIT_S;
    es_actor_id_t id;
    while ((id = whereis(rt, name)) == ES_ACTOR_NONE || id == old) {
        cr_assert_lt(es_test_now(), until, "%s was not restarted", name);
        es_test_sleep_ms(1);
    }
    return id;
}

static void crash(es_runtime_t *rt, const char *name)
{
    es_msg_t m = es_msg_make(MSG_CRASH);
    ES_OK(es_send_named(rt, name, &m));
}

/* A watcher: monitors the actor named in MSG_WATCH, records the DOWN. */
struct watcher {
    atomic_ullong downs;
    atomic_int reason;
};

static int watcher_cb(es_actor_t *self, es_msg_t *msg)
{
    struct watcher *w = es_actor_state(self);
    es_ref_t ref;

    if (msg->type == MSG_WATCH)
        return es_monitor(self, msg->inl.u64[0], &ref);
    if (msg->type == ES_MSG_DOWN) {
        atomic_store(&w->reason, es_msg_reason(msg));
        atomic_fetch_add(&w->downs, 1);
    }
    return 0;
}

static es_actor_id_t watch(es_runtime_t *rt, struct watcher *w,
                           es_actor_id_t target)
{
    es_actor_id_t id;
    ES_OK(es_spawn(rt, &(es_spawn_opts_t){.behaviour = watcher_cb, .state = w},
                   &id));
    es_msg_t m = es_msg_u64(MSG_WATCH, target);
    ES_OK(es_send(rt, id, &m));
    return id;
}

/* The children on the supervisor's thread: their STARTs then run in the
 * order they were spawned (on two threads, only the spawns are ordered). */
static es_runtime_t *start_sup(es_strategy_t strategy, unsigned n,
                               es_actor_id_t *sup, es_actor_id_t *ids)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_child_spec_t c[MAXC];

    reset();
    specs(c, n, 0, ES_RESTART_PERMANENT);
    for (unsigned i = 0; i < n; i++)
        c[i].spawn.loop = ES_LOOP(0);
    ES_OK(es_supervisor_spawn(rt,
                              &(es_supervisor_opts_t){.strategy = strategy,
                                                      .children = c,
                                                      .nchildren = n,
                                                      .max_restarts = 100,
                                                      .period_ms = 1000,
                                                      .loop = ES_LOOP(0)},
                              sup));
    for (unsigned i = 0; i < n; i++)
        ids[i] = wait_new(rt, names[i], ES_ACTOR_NONE);
    return rt;
}

Test(supervisor, one_for_one_restarts_only_the_crashed,
     .timeout = ES_TEST_TIMEOUT)
{
    es_actor_id_t sup, id[3];
    es_runtime_t *rt = start_sup(ES_ONE_FOR_ONE, 3, &sup, id);

    crash(rt, "w1");
    es_actor_id_t n1 = wait_new(rt, "w1", id[1]);
    cr_assert_neq(n1, id[1]);
    es_test_sleep_ms(20);
    cr_assert_eq(whereis(rt, "w0"), id[0]);
    cr_assert_eq(whereis(rt, "w2"), id[2]);
    cr_assert_eq(atomic_load(&slots[1].starts), 2);
    cr_assert_eq(atomic_load(&slots[0].starts), 1);
    cr_assert_eq(atomic_load(&slots[2].starts), 1);
    es_test_free(rt);
}

Test(supervisor, one_for_all_restarts_all_in_order, .timeout = ES_TEST_TIMEOUT)
{
    es_actor_id_t sup, id[3];
    es_runtime_t *rt = start_sup(ES_ONE_FOR_ALL, 3, &sup, id);

    crash(rt, "w1");
    es_actor_id_t n[3];
    for (int i = 0; i < 3; i++) {
        n[i] = wait_new(rt, names[i], id[i]);
        cr_assert_neq(n[i], id[i]);
    }
    for (int i = 0; i < 3; i++)
        ES_WAIT_GE(slots[i].starts, 2);
    /* The others stopped last-first, then all started first-first. */
    cr_assert_lt(atomic_load(&slots[2].last_stop_seq),
                 atomic_load(&slots[0].last_stop_seq));
    cr_assert_lt(atomic_load(&slots[0].last_start_seq),
                 atomic_load(&slots[1].last_start_seq));
    cr_assert_lt(atomic_load(&slots[1].last_start_seq),
                 atomic_load(&slots[2].last_start_seq));
    cr_assert_gt(atomic_load(&slots[0].last_start_seq),
                 atomic_load(&slots[0].last_stop_seq));
    es_test_free(rt);
}

Test(supervisor, rest_for_one_restarts_the_later_ones,
     .timeout = ES_TEST_TIMEOUT)
{
    es_actor_id_t sup, id[4];
    es_runtime_t *rt = start_sup(ES_REST_FOR_ONE, 4, &sup, id);

    crash(rt, "w1");
    for (int i = 1; i < 4; i++)
        cr_assert_neq(wait_new(rt, names[i], id[i]), id[i]);
    es_test_sleep_ms(20);
    cr_assert_eq(whereis(rt, "w0"), id[0]);
    cr_assert_eq(atomic_load(&slots[0].starts), 1);
    for (int i = 1; i < 4; i++)
        cr_assert_eq(atomic_load(&slots[i].starts), 2);
    es_test_free(rt);
}

Test(supervisor, too_many_restarts_give_up, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_child_spec_t c[2];
    es_actor_id_t sup;
    struct watcher w = {0};

    reset();
    specs(c, 2, 0, ES_RESTART_PERMANENT);
    ES_OK(es_supervisor_spawn(rt,
                              &(es_supervisor_opts_t){.children = c,
                                                      .nchildren = 2,
                                                      .max_restarts = 2,
                                                      .period_ms = 60000},
                              &sup));
    (void)watch(rt, &w, sup);
    es_actor_id_t id = wait_new(rt, "w0", ES_ACTOR_NONE);
    for (int i = 0; i < 2; i++) {
        crash(rt, "w0");
        id = wait_new(rt, "w0", id);
    }
    cr_assert_eq(atomic_load(&w.downs), 0, "gave up within the limit");
    crash(rt, "w0"); /* the third restart in the period: one too many */
    ES_WAIT_GE(w.downs, 1);
    cr_assert_eq(atomic_load(&w.reason), ES_SUPERVISOR_GAVE_UP);
    cr_assert_eq(whereis(rt, "w0"), ES_ACTOR_NONE);
    cr_assert_eq(whereis(rt, "w1"), ES_ACTOR_NONE);
    cr_assert_eq(atomic_load(&slots[1].stops), 1); /* stopped, not left */
    es_test_free(rt);
}

Test(supervisor, restart_types, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_child_spec_t c[3];
    es_actor_id_t sup;

    reset();
    specs(c, 1, 0, ES_RESTART_TRANSIENT);
    specs(c + 1, 1, 1, ES_RESTART_TRANSIENT);
    specs(c + 2, 1, 2, ES_RESTART_TEMPORARY);
    ES_OK(es_supervisor_spawn(
        rt, &(es_supervisor_opts_t){.children = c, .nchildren = 3}, &sup));
    es_actor_id_t t0 = wait_new(rt, "w0", ES_ACTOR_NONE);
    (void)wait_new(rt, "w1", ES_ACTOR_NONE);
    (void)wait_new(rt, "w2", ES_ACTOR_NONE);
    crash(rt, "w0"); /* transient, abnormal: restarted */
    cr_assert_neq(wait_new(rt, "w0", t0), t0);
    es_msg_t quit = es_msg_make(MSG_QUIT);
    ES_OK(es_send_named(rt, "w1", &quit)); /* transient, normal: not */
    crash(rt, "w2");                       /* temporary: never */
    ES_WAIT_GE(slots[1].stops, 1);
    ES_WAIT_GE(slots[2].stops, 1);
    es_test_sleep_ms(50);
    cr_assert_eq(atomic_load(&slots[1].starts), 1);
    cr_assert_eq(atomic_load(&slots[2].starts), 1);
    cr_assert_eq(whereis(rt, "w1"), ES_ACTOR_NONE);
    cr_assert_eq(whereis(rt, "w2"), ES_ACTOR_NONE);
    es_test_free(rt);
}

/* A child supervisor that gives up is restarted by its parent, with its
 * children and their names; the sibling is untouched. */
Test(supervisor, nested_escalation, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_child_spec_t inner_c[2], outer_c[2];
    es_actor_id_t top;

    reset();
    specs(inner_c, 2, 0, ES_RESTART_PERMANENT);
    es_supervisor_opts_t inner = {.children = inner_c,
                                  .nchildren = 2,
                                  .max_restarts = 1,
                                  .period_ms = 60000,
                                  .name = "inner"};
    es_supervisor_child(&outer_c[0], &inner);
    outer_c[0].name = "inner";
    specs(&outer_c[1], 1, 2, ES_RESTART_PERMANENT);
    ES_OK(es_supervisor_spawn(rt,
                              &(es_supervisor_opts_t){.children = outer_c,
                                                      .nchildren = 2,
                                                      .max_restarts = 10,
                                                      .period_ms = 60000},
                              &top));
    es_actor_id_t in = wait_new(rt, "inner", ES_ACTOR_NONE);
    es_actor_id_t w0 = wait_new(rt, "w0", ES_ACTOR_NONE);
    es_actor_id_t w2 = wait_new(rt, "w2", ES_ACTOR_NONE);
    crash(rt, "w0");
    w0 = wait_new(rt, "w0", w0); /* the inner one's one restart */
    crash(rt, "w0");             /* one too many: inner gives up */
    es_actor_id_t in2 = wait_new(rt, "inner", in);
    cr_assert_neq(in2, in);
    (void)wait_new(rt, "w0", w0);
    ES_WAIT_GE(slots[1].starts, 2); /* w1 came back with its supervisor */
    cr_assert_eq(whereis(rt, "w2"), w2, "the sibling was restarted");
    es_test_free(rt);
}

/* es_supervisor_stop(): children stop last first, a child supervisor's
 * children before it. */
Test(supervisor, ordered_shutdown, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_child_spec_t inner_c[2], outer_c[3];
    es_actor_id_t top;
    struct watcher w = {0};

    reset();
    specs(inner_c, 2, 1, ES_RESTART_PERMANENT); /* w1, w2 */
    es_supervisor_opts_t inner = {.children = inner_c, .nchildren = 2};
    specs(&outer_c[0], 1, 0, ES_RESTART_PERMANENT); /* w0 */
    es_supervisor_child(&outer_c[1], &inner);
    specs(&outer_c[2], 1, 3, ES_RESTART_PERMANENT); /* w3 */
    ES_OK(es_supervisor_spawn(
        rt, &(es_supervisor_opts_t){.children = outer_c, .nchildren = 3},
        &top));
    for (int i = 0; i < 4; i++)
        (void)wait_new(rt, names[i], ES_ACTOR_NONE);
    (void)watch(rt, &w, top);
    es_test_sleep_ms(10); /* the monitor is set */
    ES_OK(es_supervisor_stop(rt, top));
    ES_WAIT_GE(w.downs, 1);
    cr_assert_eq(atomic_load(&w.reason), 0);
    unsigned long long s[4];
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&slots[i].stops), 1);
        cr_assert_eq(atomic_load(&slots[i].starts), 1, "restarted on stop");
        s[i] = atomic_load(&slots[i].last_stop_seq);
    }
    cr_assert(s[3] < s[2] && s[2] < s[1] && s[1] < s[0],
              "stop order %llu %llu %llu %llu, want w3 w2 w1 w0", s[0], s[1],
              s[2], s[3]);
    es_test_free(rt);
}

Test(supervisor, bad_options, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_child_spec_t c = {0};
    es_actor_id_t id;

    cr_assert_eq(
        es_supervisor_spawn(rt, &(es_supervisor_opts_t){.nchildren = 0}, &id),
        -EINVAL);
    cr_assert_eq(
        es_supervisor_spawn(
            rt, &(es_supervisor_opts_t){.children = &c, .nchildren = 1}, &id),
        -EINVAL, "a child without a behaviour");
    es_test_free(rt);
}
