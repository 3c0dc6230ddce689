/* SPDX-License-Identifier: MIT */
/*
 * Tests of where es_spawn() puts an actor and how it gets there (the
 * spawning section of src/actor.c): a zeroed es_spawn_opts_t lets the
 * placement decide and ES_LOOP(i) pins; `near` places next to another actor
 * and takes precedence over the placement, `loop` over `near`;
 * ES_PLACE_CURRENT on a foreign thread follows that thread's last send. And
 * the spawn stack: any number of actors spawned from main() before
 * es_runtime_start(), from a behaviour onto a busy loop, or into a runtime
 * that stops or never starts, each get START first (ahead of messages sent
 * to them before it) and STOP last, and are installed in spawn order.
 */
#include "es_test.h"

enum { MSG_PING = ES_MSG_USER, MSG_BURST, MSG_NEAR };

static es_spawn_opts_t probe_opts(struct es_test_probe *p)
{
    es_spawn_opts_t o = {
        .behaviour = es_test_probe_cb,
        .state = p,
        .state_free = es_test_probe_free,
    };
    return o;
}

static void assert_lifecycle(struct es_test_probe *p, unsigned long n,
                             unsigned long long user_each)
{
    for (unsigned long i = 0; i < n; i++) {
        cr_assert_eq(atomic_load(&p[i].started), 1, "actor %lu: %llu STARTs", i,
                     atomic_load(&p[i].started));
        cr_assert_eq(atomic_load(&p[i].stopped), 1, "actor %lu: %llu STOPs", i,
                     atomic_load(&p[i].stopped));
        cr_assert_eq(atomic_load(&p[i].freed), 1, "actor %lu: %llu frees", i,
                     atomic_load(&p[i].freed));
        cr_assert_eq(atomic_load(&p[i].errors), 0, "actor %lu: out of order",
                     i);
        if (user_each != ~0ull)
            cr_assert_eq(atomic_load(&p[i].user), user_each,
                         "actor %lu: %llu messages", i,
                         atomic_load(&p[i].user));
    }
}

/* --- placement ----------------------------------------------------------- */

Test(spawn, zeroed_opts_honour_least_loaded, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe base[3] = {0}, p = {0};
    es_actor_id_t id;

    for (int i = 0; i < 3; i++) {
        es_spawn_opts_t o = probe_opts(&base[i]);
        o.loop = ES_LOOP(0);
        ES_OK(es_spawn(rt, &o, &id));
    }
    for (int i = 0; i < 3; i++)
        ES_WAIT_GE(base[i].started, 1);
    /* Only .placement set: loop 0 holds 3 actors, loop 1 none. */
    es_spawn_opts_t o = probe_opts(&p);
    o.placement = ES_PLACE_LEAST_LOADED;
    ES_OK(es_spawn(rt, &o, &id));
    ES_WAIT_GE(p.started, 1);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&p.loop), 1, "placed on loop %d",
                 atomic_load(&p.loop));
}

Test(spawn, zeroed_opts_round_robin, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p[8] = {0};
    int per_loop[2] = {0};
    es_actor_id_t id;

    for (int i = 0; i < 8; i++) {
        es_spawn_opts_t o = probe_opts(&p[i]);
        ES_OK(es_spawn(rt, &o, &id));
    }
    for (int i = 0; i < 8; i++)
        ES_WAIT_GE(p[i].started, 1);
    es_test_free(rt);
    for (int i = 0; i < 8; i++)
        per_loop[atomic_load(&p[i].loop)]++;
    cr_assert_eq(per_loop[0], 4, "loop 0 got %d of 8", per_loop[0]);
    cr_assert_eq(per_loop[1], 4, "loop 1 got %d of 8", per_loop[1]);
}

Test(spawn, loop_macro_pins_and_range_is_checked, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p[4] = {0}, refused = {0};
    es_actor_id_t id;

    for (int i = 0; i < 4; i++) {
        es_spawn_opts_t o = probe_opts(&p[i]);
        o.loop = ES_LOOP(i < 3 ? 1 : 0);
        o.placement = ES_PLACE_LEAST_LOADED; /* loop wins */
        ES_OK(es_spawn(rt, &o, &id));
    }
    es_spawn_opts_t o = probe_opts(&refused);
    o.loop = ES_LOOP(2);
    cr_assert_eq(es_spawn(rt, &o, &id), -EINVAL);
    o.loop = -1;
    cr_assert_eq(es_spawn(rt, &o, &id), -EINVAL);
    o.loop = 1000;
    cr_assert_eq(es_spawn(rt, &o, &id), -EINVAL);
    for (int i = 0; i < 4; i++)
        ES_WAIT_GE(p[i].started, 1);
    es_test_free(rt);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(atomic_load(&p[i].loop), 1);
    cr_assert_eq(atomic_load(&p[3].loop), 0);
    cr_assert_eq(atomic_load(&refused.freed), 0);
}

/* --- near ------------------------------------------------------------------
 */

static struct es_test_probe g_near_child;
static atomic_int g_near_rc = 1;

/* On MSG_NEAR (inl.u64[0] = a handle) spawns a probe next to that actor. */
static int near_spawner_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != MSG_NEAR)
        return 0;
    es_spawn_opts_t o = probe_opts(&g_near_child);
    es_actor_id_t id;
    o.near = msg->inl.u64[0];
    atomic_store(&g_near_rc, es_spawn(es_actor_runtime(self), &o, &id));
    return 0;
}

Test(spawn, near_places_on_that_actors_loop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct es_test_probe target = {0}, gone = {0}, beside = {0}, pinned = {0},
                         refused = {0};
    es_actor_id_t tid, gid, id, sid;

    /* Before start: the target is not even installed yet. */
    es_spawn_opts_t o = probe_opts(&target);
    o.loop = ES_LOOP(1);
    ES_OK(es_spawn(rt, &o, &tid));
    o = probe_opts(&beside);
    o.near = tid;
    o.placement = ES_PLACE_LEAST_LOADED; /* near wins: loop 1 has more */
    ES_OK(es_spawn(rt, &o, &id));
    o = probe_opts(&pinned);
    o.near = tid;
    o.loop = ES_LOOP(0); /* loop wins over near */
    ES_OK(es_spawn(rt, &o, &id));
    o = probe_opts(&gone);
    o.loop = ES_LOOP(0);
    ES_OK(es_spawn(rt, &o, &gid));
    es_spawn_opts_t so = {.behaviour = near_spawner_cb, .loop = ES_LOOP(0)};
    ES_OK(es_spawn(rt, &so, &sid));
    ES_OK(es_runtime_start(rt));

    ES_OK(es_stop(rt, gid));
    ES_WAIT_GE(gone.freed, 1);
    o = probe_opts(&refused);
    o.near = gid;
    cr_assert_eq(es_spawn(rt, &o, &id), -ESRCH);
    o.near = ES_ACTOR_NONE + 12345; /* never existed */
    cr_assert_eq(es_spawn(rt, &o, &id), -ESRCH);
    /* From a behaviour on loop 0, next to the target on loop 1. */
    es_msg_t m = es_msg_u64(MSG_NEAR, tid);
    ES_OK(es_send(rt, sid, &m));
    ES_WAIT_GE(g_near_child.started, 1);
    ES_WAIT_GE(beside.started, 1);
    ES_WAIT_GE(pinned.started, 1);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_near_rc), 0);
    cr_assert_eq(atomic_load(&g_near_child.loop), 1);
    cr_assert_eq(atomic_load(&beside.loop), 1);
    cr_assert_eq(atomic_load(&pinned.loop), 0);
    cr_assert_eq(atomic_load(&refused.freed), 0);
}

/* --- ES_PLACE_CURRENT from foreign threads -------------------------------- */

struct current_run {
    es_runtime_t *rt;
    struct es_test_probe p[2];
    int rc[2];
};

/* A thread that never sent: CURRENT is round-robin (two loops, two spawns). */
static void *never_sent_thread(void *arg)
{
    struct current_run *c = arg;
    es_actor_id_t id;

    for (int i = 0; i < 2; i++) {
        es_spawn_opts_t o = probe_opts(&c->p[i]);
        o.placement = ES_PLACE_CURRENT;
        c->rc[i] = es_spawn(c->rt, &o, &id);
    }
    return NULL;
}

Test(spawn, place_current_foreign_follows_last_send, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe target[2] = {0}, follow[6] = {0};
    struct current_run fresh = {.rt = rt};
    es_actor_id_t tid[2], id;
    pthread_t th;

    for (int i = 0; i < 2; i++) {
        es_spawn_opts_t o = probe_opts(&target[i]);
        o.loop = ES_LOOP(i);
        ES_OK(es_spawn(rt, &o, &tid[i]));
    }
    /* Last sent to loop 1: four spawns all land there. */
    es_msg_t m = es_msg_make(MSG_PING);
    ES_OK(es_send(rt, tid[0], &m));
    ES_OK(es_send(rt, tid[1], &m));
    for (int i = 0; i < 4; i++) {
        es_spawn_opts_t o = probe_opts(&follow[i]);
        o.placement = ES_PLACE_CURRENT;
        ES_OK(es_spawn(rt, &o, &id));
    }
    /* es_stop is a send too: now loop 0. */
    ES_OK(es_stop(rt, tid[0]));
    for (int i = 4; i < 6; i++) {
        es_spawn_opts_t o = probe_opts(&follow[i]);
        o.placement = ES_PLACE_CURRENT;
        ES_OK(es_spawn(rt, &o, &id));
    }
    cr_assert_eq(pthread_create(&th, NULL, never_sent_thread, &fresh), 0);
    cr_assert(es_test_join(th, NULL, ES_TEST_JOIN_S));
    for (int i = 0; i < 6; i++)
        ES_WAIT_GE(follow[i].started, 1);
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(fresh.p[i].started, 1);
    es_test_free(rt);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(atomic_load(&follow[i].loop), 1, "spawn %d on loop %d", i,
                     atomic_load(&follow[i].loop));
    for (int i = 4; i < 6; i++)
        cr_assert_eq(atomic_load(&follow[i].loop), 0, "spawn %d on loop %d", i,
                     atomic_load(&follow[i].loop));
    cr_assert_eq(fresh.rc[0], 0);
    cr_assert_eq(fresh.rc[1], 0);
    cr_assert_neq(atomic_load(&fresh.p[0].loop), atomic_load(&fresh.p[1].loop),
                  "a thread that never sent is placed round-robin");
}

/* --- the spawn stack --------------------------------------------------------
 */

#define BULK 100000ul
#define BULK_EVERY 100ul /* actors that get a message before start */

Test(spawn, bulk_from_main_before_start, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct es_test_probe *p = calloc(BULK, sizeof(*p));
    es_actor_id_t id;

    cr_assert_not_null(p);
    for (unsigned long i = 0; i < BULK; i++) {
        es_spawn_opts_t o = probe_opts(&p[i]);
        int rc = es_spawn(rt, &o, &id);
        cr_assert_eq(rc, 0, "spawn %lu: %s", i, es_strerror(rc));
        if (i % BULK_EVERY == 0) {
            es_msg_t m = es_msg_make(MSG_PING);
            ES_OK(es_send(rt, id, &m)); /* queued behind START */
        }
    }
    ES_OK(es_runtime_start(rt));
    for (unsigned long i = 0; i < BULK; i++)
        ES_WAIT_GE(p[i].started, 1);
    for (unsigned long i = 0; i < BULK; i += BULK_EVERY)
        ES_WAIT_GE(p[i].user, 1);
    es_test_free(rt);
    assert_lifecycle(p, BULK, ~0ull);
    for (unsigned long i = 0; i < BULK; i++)
        cr_assert_eq(atomic_load(&p[i].user), i % BULK_EVERY == 0,
                     "actor %lu: %llu messages", i, atomic_load(&p[i].user));
    free(p);
}

/* Loop 1 is held in a behaviour while loop 0 spawns onto it, so nothing is
 * taken off the way until the burst is over. */
#define BURST 10000u

static atomic_int g_hold, g_burst_rc = 1;
static atomic_ullong g_held;
static atomic_uint g_start_seq;
static struct es_test_probe g_burst[BURST];
static unsigned g_burst_order[BURST];

static int holder_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type != MSG_PING)
        return 0;
    atomic_store(&g_held, 1);
    double end = es_test_now() + ES_TEST_WAIT_S;
    while (atomic_load(&g_hold) && es_test_now() < end)
        sched_yield();
    return 0;
}

/* A probe that also records the order in which the burst started. */
static int ordered_cb(es_actor_t *self, es_msg_t *msg)
{
    struct es_test_probe *p = es_actor_state(self);
    if (msg->type == ES_MSG_START)
        g_burst_order[atomic_fetch_add(&g_start_seq, 1) % BURST] =
            (unsigned)(p - g_burst);
    return es_test_probe_cb(self, msg);
}

static int burster_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != MSG_BURST)
        return 0;
    int rc = 0;
    for (unsigned i = 0; i < BURST && rc == 0; i++) {
        es_spawn_opts_t o = probe_opts(&g_burst[i]);
        es_actor_id_t id;
        o.behaviour = ordered_cb;
        o.loop = ES_LOOP(1);
        rc = es_spawn(es_actor_runtime(self), &o, &id);
    }
    atomic_store(&g_hold, 0);
    atomic_store(&g_burst_rc, rc);
    return 0;
}

Test(spawn, burst_from_behaviour_to_busy_loop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_spawn_opts_t ho = {.behaviour = holder_cb, .loop = ES_LOOP(1)};
    es_spawn_opts_t bo = {.behaviour = burster_cb, .loop = ES_LOOP(0)};
    es_actor_id_t hid, bid;
    es_msg_t ping = es_msg_make(MSG_PING), burst = es_msg_make(MSG_BURST);

    atomic_store(&g_hold, 1);
    ES_OK(es_spawn(rt, &ho, &hid));
    ES_OK(es_spawn(rt, &bo, &bid));
    ES_OK(es_send(rt, hid, &ping));
    ES_WAIT_GE(g_held, 1);
    ES_OK(es_send(rt, bid, &burst));
    for (unsigned i = 0; i < BURST; i++)
        ES_WAIT_GE(g_burst[i].started, 1);
    cr_assert_eq(atomic_load(&g_burst_rc), 0, "burst: %s",
                 es_strerror(atomic_load(&g_burst_rc)));
    es_test_free(rt);
    assert_lifecycle(g_burst, BURST, 0);
    for (unsigned i = 0; i < BURST; i++) {
        cr_assert_eq(atomic_load(&g_burst[i].loop), 1);
        cr_assert_eq(g_burst_order[i], i, "START %u went to actor %u", i,
                     g_burst_order[i]);
    }
}

#define AT_ONCE_PLAIN 8000u /* spawned before start, no message */
#define AT_ONCE 2000u       /* spawned, sent to and stopped at once */

Test(spawn, stopped_at_once_gets_start_then_stop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    unsigned n = AT_ONCE_PLAIN + 2 * AT_ONCE;
    struct es_test_probe *p = calloc(n, sizeof(*p));
    es_actor_id_t id;
    es_msg_t m = es_msg_make(MSG_PING);

    cr_assert_not_null(p);
    /* Before start: more spawns than a channel holds, then actors that get
     * a message and a stop request (those do travel in the channels). */
    for (unsigned i = 0; i < AT_ONCE_PLAIN + AT_ONCE; i++) {
        es_spawn_opts_t o = probe_opts(&p[i]);
        o.loop = ES_LOOP(i % 2);
        ES_OK(es_spawn(rt, &o, &id));
        if (i < AT_ONCE_PLAIN)
            continue;
        ES_OK(es_send(rt, id, &m));
        ES_OK(es_stop(rt, id));
    }
    ES_OK(es_runtime_start(rt));
    /* While the loops run. */
    for (unsigned i = AT_ONCE_PLAIN + AT_ONCE; i < n; i++) {
        es_spawn_opts_t o = probe_opts(&p[i]);
        ES_OK(es_spawn(rt, &o, &id));
        ES_OK(es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S));
        ES_OK(es_stop(rt, id));
    }
    for (unsigned i = AT_ONCE_PLAIN; i < n; i++)
        ES_WAIT_GE(p[i].freed, 1);
    for (unsigned i = 0; i < AT_ONCE_PLAIN; i++)
        cr_assert_eq(atomic_load(&p[i].freed), 0, "actor %u stopped early", i);
    es_test_free(rt);
    assert_lifecycle(p, AT_ONCE_PLAIN, 0);
    assert_lifecycle(p + AT_ONCE_PLAIN, 2 * AT_ONCE, 1);
    free(p);
}

Test(spawn, never_started_runtime_starts_and_stops_all,
     .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct es_test_probe *p = calloc(BURST, sizeof(*p));
    es_actor_id_t id;

    cr_assert_not_null(p);
    for (unsigned i = 0; i < BURST; i++) {
        es_spawn_opts_t o = probe_opts(&p[i]);
        ES_OK(es_spawn(rt, &o, &id));
    }
    es_test_free(rt);
    assert_lifecycle(p, BURST, 0);
    free(p);
}

Test(spawn, stop_with_spawns_waiting_on_busy_loop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_spawn_opts_t ho = {.behaviour = holder_cb, .loop = ES_LOOP(1)};
    struct es_test_probe *p = calloc(BURST, sizeof(*p));
    es_actor_id_t hid, id;
    es_msg_t ping = es_msg_make(MSG_PING);

    cr_assert_not_null(p);
    atomic_store(&g_hold, 1);
    ES_OK(es_spawn(rt, &ho, &hid));
    ES_OK(es_send(rt, hid, &ping));
    ES_WAIT_GE(g_held, 1);
    for (unsigned i = 0; i < BURST; i++) {
        es_spawn_opts_t o = probe_opts(&p[i]);
        o.loop = ES_LOOP(1);
        ES_OK(es_spawn(rt, &o, &id));
    }
    ES_OK(es_runtime_stop(rt));
    atomic_store(&g_hold, 0);
    es_test_free(rt);
    assert_lifecycle(p, BURST, 0);
    free(p);
}
