/* SPDX-License-Identifier: MIT */
/*
 * Tests of the actor life cycle: START first, STOP last, state_free exactly
 * once after it; placement (explicit loop, round-robin, least-loaded,
 * current); the three ways an actor stops (es_stop from any thread,
 * es_actor_stop inside the behaviour, a behaviour returning an error); and
 * stale handles, which must answer -ESRCH and never touch freed or reused
 * memory, even while many threads are sending as the actor stops. In debug
 * and sanitizer builds, a call the headers reserve to the owning loop,
 * made from another thread, aborts.
 */
#include "es_test.h"

#include <string.h>

enum { MSG_HELLO = ES_MSG_USER, MSG_FAIL, MSG_STOP_ME, MSG_SPAWN };

/* Records the sequence of message types an actor sees. */
struct recorder {
    uint32_t types[64];
    atomic_ullong n;
    atomic_ullong freed;
    atomic_ullong freed_after_stop;
    atomic_int stop_on;      /* MSG type that makes it call es_actor_stop */
    atomic_int stop_in_stop; /* call es_actor_stop while handling STOP */
    atomic_int fail_on_seq;  /* return -EIO when inl.u64[0] equals this */
};

static int recorder_cb(es_actor_t *self, es_msg_t *msg)
{
    struct recorder *r = es_actor_state(self);
    unsigned long long i = atomic_load(&r->n);

    if (i < 64)
        r->types[i] = msg->type;
    atomic_store(&r->n, i + 1);
    if (msg->type == ES_MSG_STOP && atomic_load(&r->stop_in_stop))
        es_actor_stop(self);
    if ((int)msg->type == atomic_load(&r->stop_on))
        es_actor_stop(self);
    if (msg->type == MSG_HELLO &&
        (int)msg->inl.u64[0] == atomic_load(&r->fail_on_seq))
        return -EIO;
    return 0;
}

static void recorder_free(void *state)
{
    struct recorder *r = state;
    unsigned long long n = atomic_load(&r->n);

    if (n > 0 && n <= 64 && r->types[n - 1] == ES_MSG_STOP)
        atomic_fetch_add(&r->freed_after_stop, 1);
    atomic_fetch_add(&r->freed, 1);
}

static es_actor_id_t spawn_recorder(es_runtime_t *rt, struct recorder *r,
                                    int loop)
{
    es_spawn_opts_t o = {
        .behaviour = recorder_cb,
        .state = r,
        .state_free = recorder_free,
        .loop = ES_LOOP(loop),
    };
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    return id;
}

static void send_hellos(es_runtime_t *rt, es_actor_id_t id, int n)
{
    for (int i = 0; i < n; i++) {
        es_msg_t m = es_msg_u64(MSG_HELLO, (uint64_t)i);

        ES_OK(es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S));
    }
}

Test(actor, start_first_stop_last_free_once, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct recorder r = {.stop_on = -1, .fail_on_seq = -1};
    es_actor_id_t id = spawn_recorder(rt, &r, 1);

    /* Sent right after spawn: queued behind START. */
    send_hellos(rt, id, 3);
    ES_OK(es_stop(rt, id));
    ES_WAIT_GE(r.freed, 1);
    es_test_free(rt);

    cr_assert_eq(atomic_load(&r.n), 5, "saw %llu messages",
                 (unsigned long long)atomic_load(&r.n));
    cr_assert_eq(r.types[0], ES_MSG_START);
    for (int i = 1; i <= 3; i++)
        cr_assert_eq(r.types[i], MSG_HELLO, "message %d has type %u", i,
                     r.types[i]);
    cr_assert_eq(r.types[4], ES_MSG_STOP);
    cr_assert_eq(atomic_load(&r.freed), 1);
    cr_assert_eq(atomic_load(&r.freed_after_stop), 1);
}

Test(actor, stop_after_messages_sent_before, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p[2] = {0};
    es_actor_id_t id[2];

    for (int i = 0; i < 2; i++)
        id[i] = es_test_spawn_probe(rt, &p[i], ES_LOOP(i));
    for (int n = 0; n < 200; n++) {
        for (int i = 0; i < 2; i++) {
            es_msg_t m = es_msg_u64(MSG_HELLO, (uint64_t)n);

            ES_OK(es_test_send_retry(rt, id[i], &m, ES_TEST_WAIT_S));
        }
    }
    for (int i = 0; i < 2; i++)
        ES_OK(es_stop(rt, id[i]));
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(p[i].freed, 1);
    es_test_free(rt);
    for (int i = 0; i < 2; i++) {
        /* The probe counts a message after STOP as an error. */
        cr_assert_eq(atomic_load(&p[i].user), 200, "actor %d got %llu", i,
                     (unsigned long long)atomic_load(&p[i].user));
        cr_assert_eq(atomic_load(&p[i].stopped), 1);
        cr_assert_eq(atomic_load(&p[i].errors), 0);
    }
}

Test(actor, spawn_on_each_loop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(3);
    struct es_test_probe p[3] = {0};

    for (int i = 0; i < 3; i++)
        es_test_spawn_probe(rt, &p[i], ES_LOOP(i));
    for (int i = 0; i < 3; i++)
        ES_WAIT_GE(p[i].started, 1);
    es_test_free(rt);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(atomic_load(&p[i].loop), i);
}

Test(actor, round_robin_spreads, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p[8] = {0};
    int per_loop[2] = {0};

    for (int i = 0; i < 8; i++) {
        es_spawn_opts_t o = {
            .behaviour = es_test_probe_cb,
            .state = &p[i],
            .state_free = es_test_probe_free,
            .loop = ES_LOOP_ANY,
            .placement = ES_PLACE_ROUND_ROBIN,
        };
        es_actor_id_t id;

        ES_OK(es_spawn(rt, &o, &id));
    }
    for (int i = 0; i < 8; i++)
        ES_WAIT_GE(p[i].started, 1);
    es_test_free(rt);
    for (int i = 0; i < 8; i++) {
        int l = atomic_load(&p[i].loop);

        cr_assert(l == 0 || l == 1, "actor %d on loop %d", i, l);
        per_loop[l]++;
    }
    cr_assert_eq(per_loop[0], 4, "loop 0 got %d of 8", per_loop[0]);
    cr_assert_eq(per_loop[1], 4, "loop 1 got %d of 8", per_loop[1]);
}

Test(actor, least_loaded_picks_emptier_loop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe base[3] = {0};
    struct es_test_probe p[2] = {0};

    for (int i = 0; i < 3; i++)
        es_test_spawn_probe(rt, &base[i], ES_LOOP(0));
    for (int i = 0; i < 3; i++)
        ES_WAIT_GE(base[i].started, 1);
    /* Loads are 3 and 0, then 3 and 1: both go to loop 1. */
    for (int i = 0; i < 2; i++) {
        es_spawn_opts_t o = {
            .behaviour = es_test_probe_cb,
            .state = &p[i],
            .state_free = es_test_probe_free,
            .loop = ES_LOOP_ANY,
            .placement = ES_PLACE_LEAST_LOADED,
        };
        es_actor_id_t id;

        ES_OK(es_spawn(rt, &o, &id));
        ES_WAIT_GE(p[i].started, 1);
    }
    es_test_free(rt);
    cr_assert_eq(atomic_load(&p[0].loop), 1);
    cr_assert_eq(atomic_load(&p[1].loop), 1);
}

/* A parent that spawns a child on its own loop with ES_PLACE_CURRENT. */
static struct es_test_probe g_child[2];
static atomic_int g_child_rc[2];
static atomic_ullong g_children;

static int parent_cb(es_actor_t *self, es_msg_t *msg)
{
    int me = es_actor_loop_index(self);
    es_spawn_opts_t o = {
        .behaviour = es_test_probe_cb,
        .state = &g_child[me],
        .state_free = es_test_probe_free,
        .loop = ES_LOOP_ANY,
        .placement = ES_PLACE_CURRENT,
    };
    es_actor_id_t id;

    if (msg->type != MSG_SPAWN)
        return 0;
    atomic_store(&g_child_rc[me], es_spawn(es_actor_runtime(self), &o, &id));
    atomic_fetch_add(&g_children, 1);
    return 0;
}

Test(actor, place_current_from_behaviour, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe foreign = {0};
    es_spawn_opts_t fo = {
        .behaviour = es_test_probe_cb,
        .state = &foreign,
        .state_free = es_test_probe_free,
        .loop = ES_LOOP_ANY,
        .placement = ES_PLACE_CURRENT,
    };
    es_actor_id_t fid;

    for (int i = 0; i < 2; i++) {
        es_spawn_opts_t o = {.behaviour = parent_cb, .loop = ES_LOOP(i)};
        es_actor_id_t id;
        es_msg_t m = es_msg_make(MSG_SPAWN);

        ES_OK(es_spawn(rt, &o, &id));
        ES_OK(es_send(rt, id, &m));
    }
    /* From a foreign thread CURRENT is the loop this thread last sent to. */
    ES_OK(es_spawn(rt, &fo, &fid));
    ES_WAIT_GE(g_children, 2);
    ES_WAIT_GE(foreign.started, 1);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(atomic_load(&g_child_rc[i]), 0, "spawn in loop %d: %d", i,
                     atomic_load(&g_child_rc[i]));
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(g_child[i].started, 1);
    es_test_free(rt);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(atomic_load(&g_child[i].loop), i);
        cr_assert_eq(atomic_load(&g_child[i].freed), 1);
    }
    cr_assert_eq(atomic_load(&foreign.loop), 1);
}

Test(actor, spawn_rejects_bad_options, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p = {0};
    es_spawn_opts_t o = {
        .behaviour = NULL,
        .state = &p,
        .state_free = es_test_probe_free,
        .loop = ES_LOOP(0),
    };
    es_actor_id_t id = ES_ACTOR_NONE;

    cr_assert_eq(es_spawn(rt, &o, &id), -EINVAL);
    o.behaviour = es_test_probe_cb;
    o.loop = ES_LOOP(2); /* 2 threads: loops 0 and 1 */
    cr_assert_eq(es_spawn(rt, &o, &id), -EINVAL);
    o.loop = -7;
    cr_assert_eq(es_spawn(rt, &o, &id), -EINVAL);
    /* Above 2^30 - 1 the mailbox counters could not be compared. */
    o.loop = ES_LOOP(0);
    o.mailbox_capacity = (1u << 30);
    cr_assert_eq(es_spawn(rt, &o, &id), -EINVAL);
    es_test_free(rt);
    /* On failure the caller keeps the state: state_free never ran. */
    cr_assert_eq(atomic_load(&p.freed), 0);
}

Test(actor, spawn_after_stop_is_eshutdown, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p = {0};
    es_spawn_opts_t o = {
        .behaviour = es_test_probe_cb,
        .state = &p,
        .state_free = es_test_probe_free,
        .loop = ES_LOOP_ANY,
    };
    es_actor_id_t id;

    ES_OK(es_runtime_stop(rt));
    cr_assert_eq(es_spawn(rt, &o, &id), -ESHUTDOWN);
    ES_OK(es_test_wait(rt));
    cr_assert_eq(es_spawn(rt, &o, &id), -ESHUTDOWN);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&p.freed), 0);
    cr_assert_eq(atomic_load(&p.started), 0);
}

/* What an actor sees of itself. */
static atomic_ullong g_self;
static atomic_uintptr_t g_state;
static atomic_uintptr_t g_rt;
static atomic_ullong g_identified;

static int identify_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES_MSG_START) {
        atomic_store(&g_self, es_actor_self(self));
        atomic_store(&g_state, (uintptr_t)es_actor_state(self));
        atomic_store(&g_rt, (uintptr_t)es_actor_runtime(self));
        atomic_fetch_add(&g_identified, 1);
    }
    return 0;
}

Test(actor, self_state_runtime, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    int token;
    es_spawn_opts_t o = {
        .behaviour = identify_cb, .state = &token, .loop = ES_LOOP(0)};
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    ES_WAIT_GE(g_identified, 1);
    cr_assert_eq(atomic_load(&g_self), id);
    cr_assert_eq(atomic_load(&g_state), (uintptr_t)&token);
    cr_assert_eq(atomic_load(&g_rt), (uintptr_t)rt);
    es_test_free(rt);
}

/* set_state: START swaps in a second state; the next message and
 * state_free see the new one. */
static int g_state_a, g_state_b;
static atomic_uintptr_t g_state_seen, g_state_freed;
static atomic_ullong g_state_frees;

static int swap_state_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES_MSG_START)
        es_actor_set_state(self, &g_state_b);
    else if (msg->type == ES_MSG_USER)
        atomic_store(&g_state_seen, (uintptr_t)es_actor_state(self));
    return 0;
}

static void swap_state_free(void *state)
{
    atomic_store(&g_state_freed, (uintptr_t)state);
    atomic_fetch_add(&g_state_frees, 1);
}

Test(actor, set_state_is_what_state_free_gets, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_spawn_opts_t o = {.behaviour = swap_state_cb,
                         .state = &g_state_a,
                         .state_free = swap_state_free};
    es_actor_id_t id;
    es_msg_t m = es_msg_make(ES_MSG_USER);

    ES_OK(es_spawn(rt, &o, &id));
    ES_OK(es_send(rt, id, &m));
    ES_OK(es_stop(rt, id));
    ES_WAIT_GE(g_state_frees, 1);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_state_seen), (uintptr_t)&g_state_b);
    cr_assert_eq(atomic_load(&g_state_freed), (uintptr_t)&g_state_b);
    cr_assert_eq(atomic_load(&g_state_frees), 1);
}

Test(actor, actor_stop_inside_behaviour, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct recorder r = {.stop_on = MSG_STOP_ME, .fail_on_seq = -1};
    es_actor_id_t id = spawn_recorder(rt, &r, 0);
    es_msg_t m = es_msg_make(MSG_STOP_ME);

    ES_OK(es_send(rt, id, &m));
    ES_WAIT_GE(r.freed, 1);
    cr_assert_eq(es_send(rt, id, &m), -ESRCH);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&r.n), 3);
    cr_assert_eq(r.types[0], ES_MSG_START);
    cr_assert_eq(r.types[1], MSG_STOP_ME);
    cr_assert_eq(r.types[2], ES_MSG_STOP);
    cr_assert_eq(atomic_load(&r.freed), 1);
}

Test(actor, actor_stop_while_handling_stop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct recorder r = {.stop_on = -1, .stop_in_stop = 1, .fail_on_seq = -1};
    es_actor_id_t id = spawn_recorder(rt, &r, 0);

    ES_OK(es_stop(rt, id));
    ES_WAIT_GE(r.freed, 1);
    es_test_sleep_ms(20);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&r.n), 2, "no second STOP expected");
    cr_assert_eq(r.types[1], ES_MSG_STOP);
    cr_assert_eq(atomic_load(&r.freed), 1);
}

Test(actor, error_return_stops_actor, .timeout = ES_TEST_TIMEOUT)
{
    struct es_test_dead dead = {0};
    es_runtime_opts_t opts = {
        .threads = 2,
        .dead_letter = es_test_dead_cb,
        .dead_letter_arg = &dead,
    };
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct recorder r = {.stop_on = -1, .fail_on_seq = 1};
    es_actor_id_t id;
    unsigned long long hellos = 0, sent = 0;

    es_set_log(NULL, NULL, ES_LOG_ERROR); /* the -EIO is expected */
    ES_OK(es_runtime_start(rt));
    id = spawn_recorder(rt, &r, 1);
    /* The one with seq 1 fails; the actor may be gone before the later
     * sends are made, which then see -ESRCH. */
    for (int i = 0; i < 5; i++) {
        es_msg_t m = es_msg_u64(MSG_HELLO, (uint64_t)i);
        int rc = es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S);

        cr_assert(rc == 0 || (i > 1 && rc == -ESRCH), "send %d: %d", i, rc);
        sent += rc == 0;
    }
    ES_WAIT_GE(r.freed, 1);
    cr_assert_eq(es_send(rt, id, &(es_msg_t){.type = MSG_HELLO}), -ESRCH);
    cr_assert_eq(es_stop(rt, id), -ESRCH);
    es_test_free(rt);

    for (unsigned long long i = 0; i < atomic_load(&r.n) && i < 64; i++)
        hellos += r.types[i] == MSG_HELLO;
    cr_assert_eq(r.types[0], ES_MSG_START);
    cr_assert_eq(r.types[atomic_load(&r.n) - 1], ES_MSG_STOP,
                 "the failing actor must still get STOP");
    cr_assert_geq(hellos, 2, "the failing message was delivered");
    cr_assert_eq(hellos + atomic_load(&dead.count), sent,
                 "delivered %llu + dead %llu != sent %llu", hellos,
                 (unsigned long long)atomic_load(&dead.count), sent);
    cr_assert_eq(atomic_load(&r.freed), 1);
}

Test(actor, stop_twice, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p = {0};
    es_actor_id_t id = es_test_spawn_probe(rt, &p, ES_LOOP(1));
    int rc;

    ES_OK(es_stop(rt, id));
    rc = es_stop(rt, id); /* racing the first: either answer is fine */
    cr_assert(rc == 0 || rc == -ESRCH, "second es_stop: %d", rc);
    ES_WAIT_GE(p.freed, 1);
    cr_assert_eq(es_stop(rt, id), -ESRCH);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&p.stopped), 1);
    cr_assert_eq(atomic_load(&p.errors), 0);
}

Test(actor, stale_handle_is_esrch, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe p = {0};
    es_actor_id_t id = es_test_spawn_probe(rt, &p, ES_LOOP(0));
    es_msg_t m = es_msg_u64(MSG_HELLO, 1);
    int rc;

    ES_OK(es_send(rt, id, &m));
    ES_OK(es_stop(rt, id));
    ES_WAIT_GE(p.freed, 1);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(es_send(rt, id, &m), -ESRCH);
        cr_assert_eq(es_stop(rt, id), -ESRCH);
    }
    /* Handles that never existed. */
    cr_assert_eq(es_send(rt, UINT64_C(0xfeedface12345678), &m), -ESRCH);
    cr_assert_eq(es_stop(rt, UINT64_C(0xfeedface12345678)), -ESRCH);
    rc = es_send(rt, ES_ACTOR_NONE, &m);
    cr_assert(rc == -ESRCH || rc == -EINVAL, "send to ES_ACTOR_NONE: %d", rc);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&p.user), 1);
    cr_assert_eq(atomic_load(&p.freed), 1);
}

Test(actor, stale_handle_after_slot_reuse, .timeout = ES_TEST_TIMEOUT)
{
    enum { N = 300 };
    es_runtime_t *rt = es_test_runtime_start(2);
    struct es_test_probe old = {0};
    static struct es_test_probe fresh[N];
    es_actor_id_t old_id = es_test_spawn_probe(rt, &old, ES_LOOP(0));
    es_msg_t m = es_msg_u64(MSG_HELLO, 1);

    ES_OK(es_stop(rt, old_id));
    ES_WAIT_GE(old.freed, 1);
    /* Churn the actor table so the old slot is reused. */
    for (int round = 0; round < 3; round++) {
        es_actor_id_t ids[N];

        memset(fresh, 0, sizeof(fresh));
        for (int i = 0; i < N; i++) {
            ids[i] = es_test_spawn_probe(rt, &fresh[i], ES_LOOP(i % 2));
            cr_assert_neq(ids[i], old_id,
                          "a live actor reuses a stale "
                          "handle");
        }
        for (int i = 0; i < N; i++)
            ES_WAIT_GE(fresh[i].started, 1);
        for (int i = 0; i < 50; i++)
            cr_assert_eq(es_send(rt, old_id, &m), -ESRCH);
        for (int i = 0; i < N; i++)
            ES_OK(es_stop(rt, ids[i]));
        for (int i = 0; i < N; i++)
            ES_WAIT_GE(fresh[i].freed, 1);
        for (int i = 0; i < N; i++) {
            cr_assert_eq(atomic_load(&fresh[i].user), 0,
                         "a message to the stale handle reached actor %d", i);
            cr_assert_eq(atomic_load(&fresh[i].errors), 0);
        }
    }
    es_test_free(rt);
}

/*
 * The stop race: several foreign threads flood an actor that stops itself
 * after LIMIT messages. Every thread must end on -ESRCH, no other error may
 * appear, and every accepted message is delivered or dead-lettered.
 */
#define RACE_SENDERS 4
#define RACE_ROUNDS 8
#define RACE_LIMIT 300

struct race {
    es_runtime_t *rt;
    es_actor_id_t id;
    atomic_ullong delivered;
    atomic_ullong sent;
    atomic_ullong esrch; /* threads that ended on -ESRCH */
    atomic_ullong odd;   /* any other error */
    atomic_ullong freed;
};

static int race_cb(es_actor_t *self, es_msg_t *msg)
{
    struct race *r = es_actor_state(self);

    if (msg->type == MSG_HELLO &&
        atomic_fetch_add(&r->delivered, 1) + 1 == RACE_LIMIT)
        es_actor_stop(self);
    return 0;
}

static void race_free(void *state)
{
    struct race *r = state;

    atomic_fetch_add(&r->freed, 1);
}

static void *race_sender(void *arg)
{
    struct race *r = arg;
    double end = es_test_now() + ES_TEST_WAIT_S;

    while (es_test_now() < end) {
        es_msg_t m = es_msg_u64(MSG_HELLO, 0);
        int rc = es_send(r->rt, r->id, &m);

        if (rc == 0) {
            atomic_fetch_add(&r->sent, 1);
        } else if (rc == -ESRCH) {
            atomic_fetch_add(&r->esrch, 1);
            break;
        } else if (rc == -EAGAIN) {
            sched_yield();
        } else {
            atomic_fetch_add(&r->odd, 1);
            break;
        }
    }
    return NULL;
}

Test(actor, stale_handle_race_with_senders, .timeout = ES_TEST_TIMEOUT)
{
    struct es_test_dead dead = {0};
    es_runtime_opts_t opts = {
        .threads = 2,
        .dead_letter = es_test_dead_cb,
        .dead_letter_arg = &dead,
    };
    es_runtime_t *rt = es_test_runtime_new(&opts);
    static struct race r[RACE_ROUNDS];
    unsigned long long sent = 0, delivered = 0;

    ES_OK(es_runtime_start(rt));
    for (int k = 0; k < RACE_ROUNDS; k++) {
        es_spawn_opts_t o = {
            .behaviour = race_cb,
            .state = &r[k],
            .state_free = race_free,
            .loop = ES_LOOP(k % 2),
        };
        pthread_t t[RACE_SENDERS];

        r[k].rt = rt;
        ES_OK(es_spawn(rt, &o, &r[k].id));
        for (int i = 0; i < RACE_SENDERS; i++)
            cr_assert_eq(pthread_create(&t[i], NULL, race_sender, &r[k]), 0);
        for (int i = 0; i < RACE_SENDERS; i++)
            cr_assert(es_test_join(t[i], NULL, ES_TEST_JOIN_S));
        cr_assert_eq(atomic_load(&r[k].odd), 0, "round %d: unexpected error",
                     k);
        cr_assert_eq(atomic_load(&r[k].esrch), RACE_SENDERS,
                     "round %d: only %llu of %d senders saw -ESRCH", k,
                     (unsigned long long)atomic_load(&r[k].esrch),
                     RACE_SENDERS);
        ES_WAIT_GE(r[k].freed, 1);
    }
    es_test_free(rt);
    for (int k = 0; k < RACE_ROUNDS; k++) {
        cr_assert_eq(atomic_load(&r[k].freed), 1);
        cr_assert_geq(atomic_load(&r[k].delivered), RACE_LIMIT);
        sent += atomic_load(&r[k].sent);
        delivered += atomic_load(&r[k].delivered);
    }
    cr_assert_eq(delivered + atomic_load(&dead.count), sent,
                 "delivered %llu + dead %llu != sent %llu", delivered,
                 (unsigned long long)atomic_load(&dead.count), sent);
}

/*
 * "Thread: owning loop only" is checked (ES_ASSERT) in debug and sanitizer
 * builds: an actor pointer that escapes its behaviour and is used from the
 * test thread must abort the process there, at the call.
 */
static _Atomic(es_actor_t *) g_escaped;

static int escape_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES_MSG_START)
        atomic_store(&g_escaped, self);
    return 0;
}

/* Starts a runtime with an actor whose pointer escapes; returns it. */
static es_actor_t *escaped_actor(void)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_spawn_opts_t o = {.behaviour = escape_cb};
    es_actor_id_t id;
    double end = es_test_now() + ES_TEST_WAIT_S;

    ES_OK(es_spawn(rt, &o, &id));
    while (!atomic_load(&g_escaped) && es_test_now() < end)
        es_test_sleep_ms(1);
    cr_assert_not_null(atomic_load(&g_escaped));
    return atomic_load(&g_escaped);
}

Test(actor, wrong_thread_accessor_aborts, .timeout = ES_TEST_TIMEOUT,
     .signal = ES_TEST_ASSERT_SIGNAL)
{
    if (!ES_TEST_ASSERTS)
        cr_skip_test("ES_ASSERT is compiled out of Release builds");
    es_actor_t *a = escaped_actor();

    (void)es_actor_self(a); /* aborts: not the actor's demux thread */
    cr_assert_fail("es_actor_self() from a foreign thread returned");
}

Test(actor, wrong_thread_timer_start_aborts, .timeout = ES_TEST_TIMEOUT,
     .signal = ES_TEST_ASSERT_SIGNAL)
{
    if (!ES_TEST_ASSERTS)
        cr_skip_test("ES_ASSERT is compiled out of Release builds");
    es_actor_t *a = escaped_actor();

    (void)es_timer_start(a, 1000, 0, 0, NULL); /* aborts, as above */
    cr_assert_fail("es_timer_start() from a foreign thread returned");
}
