/* SPDX-License-Identifier: MIT */
/*
 * Tests of the loop's spinning before it sleeps (src/loop.c,
 * sleep_until_work; es_runtime_opts_t.adaptive_spin): the options are
 * validated, and adaptive spinning stops once traffic does. After a burst
 * of cross-loop round trips (short idle gaps, so the loops learn to spin)
 * the runtime is left idle: both loops must fall asleep in epoll_wait() (a
 * send from a foreign thread then has to write a wakeup to each, and each
 * sleeps again afterwards) and the idle time must cost almost no CPU. Then
 * a 1 ms periodic timer on each loop (long gaps, each ended by a timer):
 * the CPU per expiry must be that of a runtime that never spins, not one
 * more spin per expiry. A spin that never stopped would keep the loops
 * awake (no wakeup written) and burn the idle time; one that ignored the
 * gaps would add a capped spin to every timer expiry.
 */
#include "es_test.h"

enum { MSG_GO = ES_MSG_USER, MSG_PING, MSG_PONG, MSG_POKE, MSG_TICK };

#define ROUNDS 5000u
#define IDLE_MS 200u
#define TICKS 200u

Test(runtime_spin, options_are_validated, .timeout = ES_TEST_TIMEOUT)
{
    static const struct {
        int adaptive;
        unsigned spin_us;
        int rc;
    } cases[] = {
        {0, 0, 0},
        {ES_SPIN_ADAPTIVE_ON, 0, 0},
        {ES_SPIN_ADAPTIVE_OFF, 0, 0},
        {0, 20, 0}, /* the default gives way to a fixed spin */
        {ES_SPIN_ADAPTIVE_OFF, 20, 0},
        {ES_SPIN_ADAPTIVE_ON, 20, -EINVAL}, /* fixed and adaptive */
        {2, 0, -EINVAL},
        {-2, 0, -EINVAL},
        {INT32_MIN, 0, -EINVAL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        es_runtime_opts_t o = {.threads = 1,
                               .adaptive_spin = cases[i].adaptive,
                               .spin_us = cases[i].spin_us};
        es_runtime_t *rt = NULL;
        int rc = es_runtime_new(&o, &rt);

        cr_assert_eq(rc, cases[i].rc, "adaptive_spin %d spin_us %u: %d",
                     cases[i].adaptive, cases[i].spin_us, rc);
        es_runtime_free(rt);
    }
}

static atomic_ullong g_rounds;
static atomic_ullong g_ticks[2];

/* Both ends of the ping-pong (answers a ping, pings back on a pong; MSG_GO
 * starts it towards the peer in the state), then a ticker: MSG_TICK starts
 * a 1 ms periodic timer, stopped after TICKS expiries. */
struct bouncer {
    es_actor_id_t peer;
    es_timer_id_t timer;
    int loop;
};

static int ticker(es_actor_t *self, struct bouncer *s, es_msg_t *msg)
{
    if (msg->type == MSG_TICK)
        return es_timer_start(self, 1, 1, 0, &s->timer);
    if (atomic_fetch_add(&g_ticks[s->loop], 1) + 1 == TICKS)
        return es_timer_stop(self, s->timer);
    return 0;
}

static int bounce_cb(es_actor_t *self, es_msg_t *msg)
{
    struct bouncer *s = es_actor_state(self);
    es_actor_id_t to = msg->from;
    es_msg_t m;

    switch (msg->type) {
    case MSG_GO:
        to = s->peer;
        m = es_msg_make(MSG_PING);
        break;
    case MSG_PING:
        m = es_msg_make(MSG_PONG);
        break;
    case MSG_PONG:
        if (atomic_fetch_add(&g_rounds, 1) + 1 >= ROUNDS)
            return 0;
        m = es_msg_make(MSG_PING);
        break;
    case MSG_TICK:
    case ES_MSG_TIMER:
        return ticker(self, s, msg);
    default:
        return 0;
    }
    /* A refused send shows as rounds that never reach ROUNDS. */
    (void)es_send(es_actor_runtime(self), to, &m);
    return 0;
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Times loop `index` blocked in epoll_wait(). */
static uint64_t loop_sleeps(es_runtime_t *rt, int index)
{
    es_stats_t st;

    ES_OK(es_runtime_stats(rt, index, &st));
    return st.sleeps;
}

/* What one runtime did in the phases of the test. */
struct phases {
    uint64_t idle_cpu_ns;      /* process CPU during IDLE_MS of no traffic */
    uint64_t pokes_woke;       /* wakeups the two pokes after it wrote */
    uint64_t pokes_saved;      /* ... and the ones they found no need for */
    uint64_t tick_cpu_ns;      /* process CPU per timer expiry */
    unsigned long long errors; /* probe lifecycle errors */
};

/* Round trips between loops 0 and 1 until ROUNDS. */
static void phase_busy(es_runtime_t *rt, es_actor_id_t a)
{
    es_msg_t go = es_msg_make(MSG_GO);

    atomic_store(&g_rounds, 0);
    ES_OK(es_send(rt, a, &go));
    ES_WAIT_GE(g_rounds, ROUNDS);
}

/* IDLE_MS without traffic, then a poke to a probe on each loop; each loop
 * must sleep again after its poke. */
static void phase_idle(es_runtime_t *rt, const es_actor_id_t probe_id[2],
                       struct es_test_probe probe[2], struct phases *out)
{
    es_stats_t before, after;
    uint64_t sleeps[2];
    uint64_t cpu0 = cpu_ns();

    es_test_sleep_ms(IDLE_MS);
    out->idle_cpu_ns = cpu_ns() - cpu0;
    ES_OK(es_runtime_stats(rt, -1, &before));
    for (int i = 0; i < 2; i++) {
        es_msg_t poke = es_msg_make(MSG_POKE);

        sleeps[i] = loop_sleeps(rt, i);
        ES_OK(es_send(rt, probe_id[i], &poke));
    }
    ES_WAIT_GE(probe[0].user, 1);
    ES_WAIT_GE(probe[1].user, 1);
    ES_OK(es_runtime_stats(rt, -1, &after));
    out->pokes_woke = after.wakeups_written - before.wakeups_written;
    out->pokes_saved = after.wakeups_saved - before.wakeups_saved;
    for (int i = 0; i < 2; i++) {
        double end = es_test_now() + ES_TEST_WAIT_S;

        while (loop_sleeps(rt, i) == sleeps[i] && es_test_now() < end)
            es_test_sleep_ms(1);
        cr_assert_gt(loop_sleeps(rt, i), sleeps[i],
                     "loop %d never slept again after the poke", i);
    }
}

/* A 1 ms periodic timer on each loop, TICKS expiries each. */
static void phase_ticks(es_runtime_t *rt, const es_actor_id_t id[2],
                        struct phases *out)
{
    uint64_t cpu0 = cpu_ns();

    for (int i = 0; i < 2; i++) {
        es_msg_t tick = es_msg_make(MSG_TICK);

        atomic_store(&g_ticks[i], 0);
        ES_OK(es_send(rt, id[i], &tick));
    }
    ES_WAIT_GE(g_ticks[0], TICKS);
    ES_WAIT_GE(g_ticks[1], TICKS);
    out->tick_cpu_ns = (cpu_ns() - cpu0) / (2 * TICKS);
}

static void run_phases(int adaptive, struct phases *out)
{
    /* The two bouncers must stay on their threads: no co-location. */
    es_runtime_opts_t opts = {
        .threads = 2, .adaptive_spin = adaptive, .colocate = -1};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct bouncer s[2] = {{.loop = 0}, {.loop = 1}};
    struct es_test_probe probe[2] = {0};
    es_actor_id_t id[2], probe_id[2];

    for (int i = 1; i >= 0; i--) {
        es_spawn_opts_t o = {
            .behaviour = bounce_cb, .loop = ES_LOOP(i), .state = &s[i]};

        ES_OK(es_spawn(rt, &o, &id[i]));
        probe_id[i] = es_test_spawn_probe(rt, &probe[i], ES_LOOP(i));
    }
    s[0].peer = id[1]; /* before the start, which publishes it */
    ES_OK(es_runtime_start(rt));
    phase_busy(rt, id[0]);
    phase_idle(rt, probe_id, probe, out);
    phase_busy(rt, id[0]); /* learn short gaps again before the timers */
    phase_ticks(rt, id, out);
    es_test_free(rt);
    out->errors = probe[0].errors + probe[1].errors;
}

Test(runtime_spin, adaptive_spin_stops_when_idle, .timeout = ES_TEST_TIMEOUT)
{
    struct phases off = {0}, on = {0};

    run_phases(ES_SPIN_ADAPTIVE_OFF, &off);
    run_phases(ES_SPIN_ADAPTIVE_ON, &on);
    cr_log_info("CPU: idle %llu us (off %llu); per timer expiry %llu ns "
                "(off %llu)",
                (unsigned long long)(on.idle_cpu_ns / 1000),
                (unsigned long long)(off.idle_cpu_ns / 1000),
                (unsigned long long)on.tick_cpu_ns,
                (unsigned long long)off.tick_cpu_ns);
    cr_assert_eq(on.pokes_woke, 2,
                 "after %u ms idle, pokes wrote %llu wakeups (saved %llu): "
                 "a loop was still spinning",
                 IDLE_MS, (unsigned long long)on.pokes_woke,
                 (unsigned long long)on.pokes_saved);
    /* A loop spinning through the idle time burns it; idle loops, at most
     * one capped spin each. A quarter of the idle time is far from both. */
    cr_assert_lt(on.idle_cpu_ns, (uint64_t)IDLE_MS * 1000000u / 4,
                 "%llu us of CPU in %u ms idle",
                 (unsigned long long)(on.idle_cpu_ns / 1000), IDLE_MS);
    /* Gaps of 1 ms stop the spinning: a capped spin per expiry would add
     * about ES_SPIN_ADAPTIVE_MAX_US of CPU to each; allow half of it. */
    cr_assert_lt(on.tick_cpu_ns,
                 off.tick_cpu_ns + ES_SPIN_ADAPTIVE_MAX_US * 1000u / 2,
                 "CPU per timer expiry %llu ns, without spinning %llu ns",
                 (unsigned long long)on.tick_cpu_ns,
                 (unsigned long long)off.tick_cpu_ns);
    cr_assert_eq(off.errors + on.errors, 0);
}
