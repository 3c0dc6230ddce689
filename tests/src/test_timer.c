/* SPDX-License-Identifier: MIT */
/*
 * Tests of timers: a one-shot fires once with its tag and id; timers fire in
 * deadline order, and in start order when due together; a periodic timer
 * repeats until cancelled; es_timer_stop() guarantees no later delivery,
 * even for a sibling due at the same instant or a periodic timer racing a
 * cancel message; timers die with their actor; 100,000 pending timers on
 * one loop all fire exactly once in deadline order. Only order and counts
 * are asserted, never durations.
 */
#include "es_test.h"

#include <string.h>

enum { MSG_CHECK = ES_MSG_USER, MSG_CANCEL };

#define LOG_MAX 64

/*
 * A timer actor configured by the test: at START it starts `n` timers with
 * the given delays and tags; it logs the tags in fire order and checks each
 * message's id against the one es_timer_start() returned.
 */
struct tactor {
    unsigned n;
    uint64_t after[LOG_MAX];
    uint64_t repeat[LOG_MAX];
    es_timer_id_t ids[LOG_MAX];
    /* If `cancel`: on the fire of tag `cancel_on`, stop the timers whose
     * tags are >= cancel_from. */
    bool cancel;
    uint64_t cancel_on;
    unsigned cancel_from;
    /* Cancel a periodic timer (tag 0) on its `cancel_after`-th fire. */
    unsigned cancel_after;
    uint64_t log[LOG_MAX]; /* fired tags, behaviour-written */
    atomic_ullong fired;
    atomic_ullong bad;       /* wrong id, unknown tag, after-cancel fire */
    atomic_ullong cancelled; /* bit per tag that was cancelled */
    atomic_int start_rc;
    atomic_int cancel_rc; /* es_timer_stop() at the planned moment */
    atomic_int again_rc;  /* es_timer_stop() again on MSG_CHECK */
    atomic_ullong checked;
    atomic_ullong freed;
};

static int tactor_cb(es_actor_t *self, es_msg_t *msg)
{
    struct tactor *t = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        for (unsigned i = 0; i < t->n; i++) {
            int rc =
                es_timer_start(self, t->after[i], t->repeat[i], i, &t->ids[i]);

            if (rc != 0)
                atomic_store(&t->start_rc, rc);
        }
        return 0;
    case ES_MSG_TIMER: {
        uint64_t tag = es_msg_timer_tag(msg);
        unsigned long long k = atomic_load(&t->fired);

        if (tag >= t->n || es_msg_timer_id(msg) != t->ids[tag] ||
            (atomic_load(&t->cancelled) & (1ull << tag)))
            atomic_fetch_add(&t->bad, 1);
        if (k < LOG_MAX)
            t->log[k] = tag;
        atomic_store(&t->fired, k + 1);
        if (t->cancel && tag == t->cancel_on) {
            int rc = 0;

            for (unsigned i = t->cancel_from; i < t->n; i++) {
                int r = es_timer_stop(self, t->ids[i]);

                if (r != 0)
                    rc = r;
                atomic_fetch_or(&t->cancelled, 1ull << i);
            }
            atomic_store(&t->cancel_rc, rc);
        }
        if (t->cancel_after != 0 && tag == 0 && k + 1 == t->cancel_after) {
            atomic_store(&t->cancel_rc, es_timer_stop(self, t->ids[0]));
            atomic_fetch_or(&t->cancelled, 1ull);
        }
        return 0;
    }
    case MSG_CHECK:
        atomic_store(&t->again_rc,
                     es_timer_stop(self, t->ids[msg->inl.u64[0]]));
        atomic_fetch_add(&t->checked, 1);
        return 0;
    }
    return 0;
}

static void tactor_free(void *state)
{
    struct tactor *t = state;

    atomic_fetch_add(&t->freed, 1);
}

static es_actor_id_t spawn_tactor(es_runtime_t *rt, struct tactor *t, int loop)
{
    es_spawn_opts_t o = {
        .behaviour = tactor_cb,
        .state = t,
        .state_free = tactor_free,
        .loop = ES_LOOP(loop),
    };
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    return id;
}

/* Asks the actor to es_timer_stop() the timer with `tag` once more. */
static void check_again(es_runtime_t *rt, es_actor_id_t id, struct tactor *t,
                        uint64_t tag)
{
    es_msg_t m = es_msg_u64(MSG_CHECK, tag);
    unsigned long long before = atomic_load(&t->checked);

    ES_OK(es_send(rt, id, &m));
    ES_WAIT_GE(t->checked, before + 1);
}

Test(timer, one_shot_fires_once, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct tactor t = {.n = 1, .after = {10}};
    es_actor_id_t id = spawn_tactor(rt, &t, 1);
    es_stats_t st;

    ES_WAIT_GE(t.fired, 1);
    es_test_sleep_ms(60);
    check_again(rt, id, &t, 0);
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_test_free(rt);
    cr_assert_eq(atomic_load(&t.start_rc), 0);
    cr_assert_neq(t.ids[0], 0, "timer id 0 is reserved");
    cr_assert_eq(atomic_load(&t.fired), 1);
    cr_assert_eq(atomic_load(&t.bad), 0);
    cr_assert_eq(atomic_load(&t.again_rc), -ENOENT,
                 "stopping a fired one-shot: %d", atomic_load(&t.again_rc));
    cr_assert_geq(st.timers_fired, 1);
}

Test(timer, zero_delay_fires, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct tactor t = {.n = 3, .after = {0, 0, 0}};

    spawn_tactor(rt, &t, 0);
    ES_WAIT_GE(t.fired, 3);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&t.fired), 3);
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(t.log[i], i);
}

Test(timer, deadline_order_on_each_loop, .timeout = ES_TEST_TIMEOUT)
{
    static const uint64_t after[] = {50, 10, 40, 20, 30, 5, 45, 15, 35, 25};
    static const uint64_t want[] = {5, 1, 7, 3, 9, 4, 8, 2, 6, 0};
    es_runtime_t *rt = es_test_runtime_start(2);
    struct tactor t[2] = {{.n = 10}, {.n = 10}};

    for (int l = 0; l < 2; l++) {
        memcpy(t[l].after, after, sizeof(after));
        spawn_tactor(rt, &t[l], l);
    }
    for (int l = 0; l < 2; l++)
        ES_WAIT_GE(t[l].fired, 10);
    es_test_free(rt);
    for (int l = 0; l < 2; l++) {
        cr_assert_eq(atomic_load(&t[l].fired), 10);
        for (unsigned i = 0; i < 10; i++)
            cr_assert_eq(t[l].log[i], want[i],
                         "loop %d: fire %u was tag %llu (after %llu ms), "
                         "want tag %llu",
                         l, i, (unsigned long long)t[l].log[i],
                         (unsigned long long)after[t[l].log[i] % 10],
                         (unsigned long long)want[i]);
    }
}

Test(timer, same_deadline_fires_in_start_order, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct tactor t = {.n = 40};

    for (unsigned i = 0; i < 40; i++)
        t.after[i] = 15;
    spawn_tactor(rt, &t, 0);
    ES_WAIT_GE(t.fired, 40);
    es_test_free(rt);
    for (unsigned i = 0; i < 40; i++)
        cr_assert_eq(t.log[i], i, "fire %u was tag %llu", i,
                     (unsigned long long)t.log[i]);
}

Test(timer, periodic_cancelled_after_k, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct tactor t = {.n = 1, .after = {1}, .repeat = {2}, .cancel_after = 5};
    es_actor_id_t id = spawn_tactor(rt, &t, 1);

    ES_WAIT_GE(t.fired, 5);
    es_test_sleep_ms(100);
    check_again(rt, id, &t, 0);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&t.cancel_rc), 0);
    cr_assert_eq(atomic_load(&t.fired), 5, "periodic fired %llu times",
                 (unsigned long long)atomic_load(&t.fired));
    cr_assert_eq(atomic_load(&t.bad), 0);
    cr_assert_eq(atomic_load(&t.again_rc), -ENOENT);
}

Test(timer, periodic_keeps_firing, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct tactor t = {.n = 1, .after = {5}, .repeat = {1}};

    spawn_tactor(rt, &t, 0);
    ES_WAIT_GE(t.fired, 20);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&t.bad), 0);
    for (unsigned i = 0; i < LOG_MAX && i < atomic_load(&t.fired); i++)
        cr_assert_eq(t.log[i], 0);
}

Test(timer, cancel_sibling_due_at_same_time, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    /* Tag 0 fires first (start order) and cancels all its siblings. */
    struct tactor many = {.n = 32, .cancel = true, .cancel_from = 1};
    struct tactor two = {
        .n = 2, .after = {20, 20}, .cancel = true, .cancel_from = 1};

    for (unsigned i = 0; i < 32; i++)
        many.after[i] = 20;
    spawn_tactor(rt, &two, 1);
    spawn_tactor(rt, &many, 0);
    ES_WAIT_GE(many.fired, 1);
    ES_WAIT_GE(two.fired, 1);
    es_test_sleep_ms(100);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&two.fired), 1,
                 "the cancelled sibling fired anyway");
    cr_assert_eq(atomic_load(&many.fired), 1,
                 "%llu cancelled siblings fired anyway",
                 (unsigned long long)atomic_load(&many.fired) - 1);
    cr_assert_eq(two.log[0], 0);
    cr_assert_eq(many.log[0], 0);
    cr_assert_eq(atomic_load(&many.cancel_rc), 0);
    cr_assert_eq(atomic_load(&two.cancel_rc), 0);
    cr_assert_eq(atomic_load(&many.bad) + atomic_load(&two.bad), 0);
}

Test(timer, cancel_before_fire_and_bad_ids, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct tactor t = {.n = 3, .after = {300, 200, 10}};
    es_actor_id_t id = spawn_tactor(rt, &t, 0);

    /* MSG_CHECK stops tag 0 before it is due, then again. */
    check_again(rt, id, &t, 0);
    cr_assert_eq(atomic_load(&t.again_rc), 0);
    check_again(rt, id, &t, 0);
    cr_assert_eq(atomic_load(&t.again_rc), -ENOENT);
    ES_WAIT_GE(t.fired, 2);
    es_test_sleep_ms(150); /* past tag 0's deadline */
    es_test_free(rt);
    cr_assert_eq(atomic_load(&t.fired), 2);
    cr_assert_eq(t.log[0], 2);
    cr_assert_eq(t.log[1], 1);
}

/* es_timer_stop() of ids that were never timers. */
static atomic_int g_bad_rc[3];
static atomic_int g_overflow_rc;
static atomic_ullong g_bad_done;

static int bad_id_cb(es_actor_t *self, es_msg_t *msg)
{
    es_timer_id_t id = 0;

    if (msg->type != ES_MSG_START)
        return 0;
    atomic_store(&g_bad_rc[0], es_timer_stop(self, 0));
    atomic_store(&g_bad_rc[1], es_timer_stop(self, UINT64_C(0xdeadbeef0042)));
    atomic_store(&g_bad_rc[2], es_timer_stop(self, UINT64_MAX));
    atomic_store(&g_overflow_rc, es_timer_start(self, UINT64_MAX, 0, 0, &id));
    atomic_fetch_add(&g_bad_done, 1);
    return 0;
}

Test(timer, unknown_ids_and_overflow, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_spawn_opts_t o = {.behaviour = bad_id_cb, .loop = ES_LOOP(0)};
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    ES_WAIT_GE(g_bad_done, 1);
    es_test_free(rt);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(atomic_load(&g_bad_rc[i]), -ENOENT, "case %d: %d", i,
                     atomic_load(&g_bad_rc[i]));
    cr_assert_eq(atomic_load(&g_overflow_rc), -EOVERFLOW,
                 "es_timer_start(UINT64_MAX ms): %d",
                 atomic_load(&g_overflow_rc));
}

/*
 * Cancel race: a 1 ms periodic timer per actor, cancelled by a message
 * that arrives at an arbitrary moment. Once es_timer_stop() returned 0, no
 * ES_MSG_TIMER of that timer may arrive, even one already expired.
 */
#define RACERS 24

struct racer {
    es_timer_id_t id;
    atomic_int cancelled;
    atomic_int cancel_rc;
    atomic_ullong fired;
    atomic_ullong after_cancel;
    atomic_ullong done;
};

static int racer_cb(es_actor_t *self, es_msg_t *msg)
{
    struct racer *r = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        if (es_timer_start(self, 1, 1, 7, &r->id) != 0)
            atomic_store(&r->cancel_rc, -999);
        break;
    case ES_MSG_TIMER:
        if (atomic_load(&r->cancelled))
            atomic_fetch_add(&r->after_cancel, 1);
        atomic_fetch_add(&r->fired, 1);
        break;
    case MSG_CANCEL:
        atomic_store(&r->cancel_rc, es_timer_stop(self, r->id));
        atomic_store(&r->cancelled, 1);
        atomic_fetch_add(&r->done, 1);
        break;
    }
    return 0;
}

Test(timer, cancel_races_periodic_expiry, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    static struct racer r[RACERS];
    es_actor_id_t id[RACERS];

    for (int i = 0; i < RACERS; i++) {
        es_spawn_opts_t o = {
            .behaviour = racer_cb, .state = &r[i], .loop = ES_LOOP(i % 2)};

        ES_OK(es_spawn(rt, &o, &id[i]));
    }
    for (int i = 0; i < RACERS; i++) {
        es_msg_t m = es_msg_make(MSG_CANCEL);

        es_test_sleep_ms((unsigned)(i % 5));
        ES_OK(es_send(rt, id[i], &m));
    }
    for (int i = 0; i < RACERS; i++)
        ES_WAIT_GE(r[i].done, 1);
    es_test_sleep_ms(50);
    es_test_free(rt);
    for (int i = 0; i < RACERS; i++) {
        cr_assert_eq(atomic_load(&r[i].cancel_rc), 0, "racer %d: %d", i,
                     atomic_load(&r[i].cancel_rc));
        cr_assert_eq(atomic_load(&r[i].after_cancel), 0,
                     "racer %d: %llu fires after a successful cancel", i,
                     (unsigned long long)atomic_load(&r[i].after_cancel));
    }
}

/* Timers die with their actor: no delivery after STOP, no crash. */
struct dying {
    atomic_ullong fired;
    atomic_ullong after_stop;
    atomic_int stopped;
    atomic_ullong freed;
    int self_stop;
};

static int dying_cb(es_actor_t *self, es_msg_t *msg)
{
    struct dying *d = es_actor_state(self);

    if (atomic_load(&d->stopped))
        atomic_fetch_add(&d->after_stop, 1);
    switch (msg->type) {
    case ES_MSG_START:
        for (uint64_t i = 0; i < 50; i++)
            (void)es_timer_start(self, 1 + i % 5, i % 2 ? 1 : 0, i, NULL);
        (void)es_timer_start(self, 60000, 0, 99, NULL);
        break;
    case ES_MSG_TIMER:
        if (atomic_fetch_add(&d->fired, 1) + 1 == 3 && d->self_stop)
            es_actor_stop(self);
        break;
    case ES_MSG_STOP:
        atomic_store(&d->stopped, 1);
        break;
    }
    return 0;
}

static void dying_free(void *state)
{
    struct dying *d = state;

    atomic_fetch_add(&d->freed, 1);
}

Test(timer, cancelled_when_actor_stops, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    static struct dying d[8];
    es_actor_id_t id[8];

    for (int i = 0; i < 8; i++) {
        es_spawn_opts_t o = {.behaviour = dying_cb,
                             .state = &d[i],
                             .state_free = dying_free,
                             .loop = ES_LOOP(i % 2)};

        d[i].self_stop = i < 4; /* half stop themselves, half by es_stop */
        ES_OK(es_spawn(rt, &o, &id[i]));
    }
    for (int i = 4; i < 8; i++) {
        ES_WAIT_GE(d[i].fired, 3);
        ES_OK(es_stop(rt, id[i]));
    }
    for (int i = 0; i < 8; i++)
        ES_WAIT_GE(d[i].freed, 1);
    es_test_sleep_ms(50); /* let any stray expiry try to fire */
    es_test_free(rt);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(atomic_load(&d[i].after_stop), 0,
                     "actor %d got %llu messages after STOP", i,
                     (unsigned long long)atomic_load(&d[i].after_stop));
        cr_assert_eq(atomic_load(&d[i].freed), 1);
    }
}

/*
 * 100,000 timers on one loop, started in a scrambled order of delays. Each
 * must fire once, in deadline order; deadlines are "start time + delay", so
 * the order is checked with a tolerance of the time the starts took.
 */
#define MASS 100000
#define MASS_SPREAD_MS 800

static unsigned char g_mass_seen[MASS];
static atomic_ullong g_mass_fired;
static atomic_ullong g_mass_dup;
static atomic_ullong g_mass_disorder;
static atomic_ullong g_mass_start_err;
static atomic_ullong g_mass_start_ms; /* how long the 100k starts took */
static uint64_t g_mass_max_after;     /* behaviour-only */

static uint64_t mass_after(uint64_t i)
{
    return (i * 7919) % MASS_SPREAD_MS;
}

static int mass_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES_MSG_START) {
        double t0 = es_test_now();

        for (uint64_t i = 0; i < MASS; i++)
            if (es_timer_start(self, mass_after(i), 0, i, NULL) != 0)
                atomic_fetch_add(&g_mass_start_err, 1);
        atomic_store(&g_mass_start_ms,
                     (unsigned long long)((es_test_now() - t0) * 1000) + 2);
        return 0;
    }
    if (msg->type == ES_MSG_TIMER) {
        uint64_t i = es_msg_timer_tag(msg);
        uint64_t after;

        if (i >= MASS || g_mass_seen[i]++) {
            atomic_fetch_add(&g_mass_dup, 1);
            return 0;
        }
        after = mass_after(i);
        if (after + atomic_load(&g_mass_start_ms) < g_mass_max_after)
            atomic_fetch_add(&g_mass_disorder, 1);
        if (after > g_mass_max_after)
            g_mass_max_after = after;
        atomic_fetch_add(&g_mass_fired, 1);
    }
    return 0;
}

Test(timer, hundred_thousand_fire_once_in_order,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_spawn_opts_t o = {.behaviour = mass_cb, .loop = ES_LOOP(0)};
    es_actor_id_t id;
    es_stats_t st;

    ES_OK(es_spawn(rt, &o, &id));
    cr_assert(es_test_wait_ge(&g_mass_fired, MASS, 120.0),
              "%llu of %d timers fired",
              (unsigned long long)atomic_load(&g_mass_fired), MASS);
    es_test_sleep_ms(50);
    ES_OK(es_runtime_stats(rt, 0, &st));
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_mass_start_err), 0);
    cr_assert_eq(atomic_load(&g_mass_fired), MASS);
    cr_assert_eq(atomic_load(&g_mass_dup), 0);
    cr_assert_eq(atomic_load(&g_mass_disorder), 0,
                 "%llu timers fired before an earlier deadline (starts took "
                 "%llu ms)",
                 (unsigned long long)atomic_load(&g_mass_disorder),
                 (unsigned long long)atomic_load(&g_mass_start_ms));
    cr_assert_geq(st.timers_fired, MASS);
    for (unsigned i = 0; i < MASS; i++)
        cr_assert_eq(g_mass_seen[i], 1, "timer %u fired %u times", i,
                     g_mass_seen[i]);
}
