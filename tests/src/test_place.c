/* SPDX-License-Identifier: MIT */
/*
 * Automatic co-location (issue 9): an actor that gets most of its messages
 * from one actor on another thread migrates there. Its handle does not
 * change, each sender's messages keep their order across the move, its
 * timers go with it, and stopping it (or the runtime) while it moves loses
 * nothing and frees everything once.
 */
#include "es_test.h"

#include <eventserver/timer.h>

enum { MSG_BALL = ES_MSG_USER, MSG_SEQ, MSG_GO, MSG_STOP_TIMER, MSG_NEW_TIMER };

/* --- a ping-pong pair placed on two threads ----------------------------------
 */

struct player {
    es_actor_id_t peer;
    uint64_t rounds; /* the server stops answering after this many */
    atomic_int loop; /* where it ran last */
    atomic_ullong hits, started, stopped, freed;
};

static int player_cb(es_actor_t *self, es_msg_t *msg)
{
    struct player *p = es_actor_state(self);

    atomic_store(&p->loop, es_actor_loop_index(self));
    if (msg->type == ES_MSG_START)
        atomic_fetch_add(&p->started, 1);
    if (msg->type == ES_MSG_STOP)
        atomic_fetch_add(&p->stopped, 1);
    if (msg->type != MSG_BALL)
        return 0;
    atomic_fetch_add(&p->hits, 1);
    if (msg->inl.u64[0] >= p->rounds)
        return 0;
    es_msg_t ball = es_msg_u64(MSG_BALL, msg->inl.u64[0] + 1);
    int rc = es_send(es_actor_runtime(self), p->peer, &ball);
    return rc == -ESRCH ? 0 : rc; /* the peer was stopped */
}

static void player_free(void *state)
{
    atomic_fetch_add(&((struct player *)state)->freed, 1);
}

/* Streams balls at `to`, 32 per call, with a message to itself between
 * chunks: its own hot sender is itself, so it never moves, and it
 * dominates what `to` receives, so `to` moves to it. */
struct pump {
    es_actor_id_t to;
    uint64_t sent, total;
    /* With a baton: after `phase` balls, hand over to the other pump. */
    es_actor_id_t other;
    uint64_t phase, in_phase;
    atomic_ullong *total_sent;
    atomic_ullong done;
};

static int pump_cb(es_actor_t *self, es_msg_t *msg)
{
    struct pump *p = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);

    if (msg->type != MSG_GO)
        return 0;
    for (int i = 0; i < 32 && p->sent < p->total; i++, p->sent++) {
        es_msg_t ball = es_msg_u64(MSG_BALL, p->sent);
        int rc = es_send(rt, p->to, &ball);
        if (rc)
            return rc;
        if (p->total_sent)
            atomic_fetch_add(p->total_sent, 1);
    }
    if (p->sent == p->total) {
        atomic_store(&p->done, 1);
        return 0;
    }
    es_msg_t go = es_msg_make(MSG_GO);
    if (p->other && (p->in_phase += 32) >= p->phase) {
        p->in_phase = 0;
        return es_send(rt, p->other, &go); /* the other pump's turn */
    }
    return es_send(rt, es_actor_self(self), &go);
}

static void spawn_pair(es_runtime_t *rt, struct player *a, struct player *b,
                       es_actor_id_t *ida, es_actor_id_t *idb)
{
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = player_cb,
                                      .state = a,
                                      .state_free = player_free,
                                      .loop = ES_LOOP(0)},
                   ida));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = player_cb,
                                      .state = b,
                                      .state_free = player_free,
                                      .loop = ES_LOOP(1)},
                   idb));
    a->peer = *idb;
    b->peer = *ida;
}

/* Runs the pair until each side was hit `want` times. */
static void run_pair(int colocate, unsigned long want, bool *together,
                     uint64_t *migrations)
{
    es_runtime_t *rt = es_test_runtime_new(
        &(es_runtime_opts_t){.threads = 2, .colocate = colocate});
    struct player a = {.rounds = 20000}, b = {.rounds = 20000};
    es_actor_id_t ida, idb;
    es_msg_t ball = es_msg_u64(MSG_BALL, 0);
    es_stats_t st;

    spawn_pair(rt, &a, &b, &ida, &idb);
    ES_OK(es_runtime_start(rt));
    ES_OK(es_send(rt, ida, &ball));
    ES_WAIT_GE(a.hits, want);
    ES_WAIT_GE(b.hits, want);
    ES_OK(es_runtime_stats(rt, -1, &st));
    *together = atomic_load(&a.loop) == atomic_load(&b.loop);
    *migrations = st.migrations;
    es_test_free(rt);
    cr_assert_eq(atomic_load(&a.freed) + atomic_load(&b.freed), 2);
}

Test(place, pair_moves_together, .timeout = ES_TEST_TIMEOUT)
{
    bool together;
    uint64_t migrations;

    run_pair(0, 10000, &together, &migrations);
    cr_assert(together, "the pair still lives on two threads");
    cr_assert_geq(migrations, 1);
    cr_assert_leq(migrations, 4, "%llu moves for one pair: it thrashes",
                  (unsigned long long)migrations);
}

Test(place, colocate_off_keeps_them_apart, .timeout = ES_TEST_TIMEOUT)
{
    bool together;
    uint64_t migrations;

    /* Apart, every hop wakes the other loop: a round trip costs two
     * wakeups, about 1 ms under TSan on io_uring, so the count scales
     * (ES_TEST_SCALE) to stay well inside the wait. Staying apart needs
     * no particular count. */
    run_pair(-1, es_test_scaled(10000), &together, &migrations);
    cr_assert_not(together);
    cr_assert_eq(migrations, 0);
}

/* --- order across a move under load ------------------------------------------
 */

#define STREAMS 4 /* 3 foreign threads and a relay, each its own sequence */
#define STREAM_LEN 20000u

struct checker {
    es_actor_id_t partner; /* the hot sender: on the other loop */
    uint64_t next[STREAMS];
    atomic_ullong got, disorder, balls;
    atomic_int loop;
};

static int checker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct checker *c = es_actor_state(self);

    atomic_store(&c->loop, es_actor_loop_index(self));
    if (msg->type == MSG_BALL) {
        atomic_fetch_add(&c->balls, 1);
        return 0;
    }
    if (msg->type != MSG_SEQ)
        return 0;
    uint64_t s = msg->inl.u64[0], seq = msg->inl.u64[1];
    if (s >= STREAMS || c->next[s] != seq)
        atomic_fetch_add(&c->disorder, 1);
    else
        c->next[s] = seq + 1;
    atomic_fetch_add(&c->got, 1);
    return 0;
}

struct stream {
    es_runtime_t *rt;
    es_actor_id_t to;
    uint64_t index;
    atomic_int rc;
};

static void *stream_main(void *arg)
{
    struct stream *s = arg;

    for (uint64_t i = 0; i < STREAM_LEN; i++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, s->index);
        m.inl.u64[1] = i;
        int rc = es_send_wait(s->rt, s->to, &m, 10000);
        if (rc) {
            atomic_store(&s->rc, rc);
            break;
        }
        if (i % 256 == 255)
            es_test_sleep_ms(1); /* slower than the pump */
    }
    return NULL;
}

/* A relay on the same loop as the streams' target also sends it numbered
 * messages: a sender on the old home, whose sends switch from the local
 * queue to the ring mid-stream. */
struct relay {
    es_actor_id_t to;
    uint64_t seq;
};

static int relay_cb(es_actor_t *self, es_msg_t *msg)
{
    struct relay *r = es_actor_state(self);

    if (msg->type != MSG_GO || r->seq == STREAM_LEN)
        return 0;
    for (int i = 0; i < 16 && r->seq < STREAM_LEN; i++, r->seq++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, STREAMS - 1);
        m.inl.u64[1] = r->seq;
        int rc = es_send(es_actor_runtime(self), r->to, &m);
        if (rc)
            return rc;
    }
    es_msg_t go = es_msg_make(MSG_GO);
    return es_send(es_actor_runtime(self), es_actor_self(self), &go);
}

Test(place, order_kept_across_a_move, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct checker c = {0};
    atomic_ullong balls = 0;
    struct pump pump = {.total = 100000, .phase = 2048, .total_sent = &balls};
    struct pump pump2 = {.total = 100000, .phase = 2048, .total_sent = &balls};
    es_actor_id_t pid2;
    struct relay relay = {0};
    struct stream s[STREAMS - 1];
    pthread_t th[STREAMS - 1];
    es_actor_id_t id, rid;
    es_msg_t go = es_msg_make(MSG_GO);
    es_stats_t st;

    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = checker_cb,
                                      .state = &c,
                                      .loop = ES_LOOP(0)},
                   &id));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &pump,
                                      .loop = ES_LOOP(1)},
                   &c.partner));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &pump2,
                                      .loop = ES_LOOP(0)},
                   &pid2));
    pump.to = pump2.to = id;
    pump.other = pid2;
    pump2.other = c.partner;
    relay.to = id;
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = relay_cb,
                                      .state = &relay,
                                      .loop = ES_LOOP(0)},
                   &rid));
    ES_OK(es_runtime_start(rt));
    for (unsigned i = 0; i < STREAMS - 1; i++) {
        s[i] = (struct stream){.rt = rt, .to = id, .index = i};
        cr_assert_eq(pthread_create(&th[i], NULL, stream_main, &s[i]), 0);
    }
    ES_OK(es_send(rt, rid, &go));
    ES_OK(es_send(rt, c.partner, &go)); /* the pump dominates: it moves */
    for (unsigned i = 0; i < STREAMS - 1; i++) {
        cr_assert(es_test_join(th[i], NULL, ES_TEST_JOIN_S));
        cr_assert_eq(atomic_load(&s[i].rc), 0);
    }
    ES_WAIT_GE(c.got, STREAMS * STREAM_LEN);
    ES_WAIT_GE(pump.done, 1);
    ES_WAIT_GE(c.balls, atomic_load(&balls));
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(atomic_load(&c.disorder), 0, "%llu messages out of order",
                 (unsigned long long)atomic_load(&c.disorder));
    cr_assert_geq(st.migrations, 4, "%llu moves: no test",
                  (unsigned long long)st.migrations);
    cr_log_info("place: order kept over %llu moves",
                (unsigned long long)st.migrations);
    es_test_free(rt);
}

/* --- timers move with their actor
 * --------------------------------------------- */

struct ticker {
    es_actor_id_t peer;
    es_timer_id_t periodic, oneshot, extra;
    atomic_ullong ticks_on[2];
    atomic_ullong oneshot_fired, stop_rc_set;
    atomic_int stop_rc, loop;
    atomic_ullong balls;
};

static int ticker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct ticker *t = es_actor_state(self);
    int loop = es_actor_loop_index(self);

    atomic_store(&t->loop, loop);
    switch (msg->type) {
    case ES_MSG_START:
        if (es_timer_start(self, 1, 1, 7, &t->periodic) ||
            es_timer_start(self, 60000, 0, 8, &t->oneshot))
            return -ENOMEM;
        return 0;
    case ES_MSG_TIMER:
        if (es_msg_timer_tag(msg) == 7 && es_msg_timer_id(msg) == t->periodic)
            atomic_fetch_add(&t->ticks_on[loop], 1);
        if (es_msg_timer_tag(msg) == 8)
            atomic_fetch_add(&t->oneshot_fired, 1);
        return 0;
    case MSG_STOP_TIMER:
        atomic_store(&t->stop_rc, es_timer_stop(self, t->periodic));
        if (!atomic_load(&t->stop_rc))
            atomic_store(&t->stop_rc, es_timer_stop(self, t->oneshot));
        atomic_store(&t->stop_rc_set, 1);
        return 0;
    case MSG_BALL:
        atomic_fetch_add(&t->balls, 1);
        return 0;
    case MSG_NEW_TIMER:
        return es_timer_start(self, 60000, 0, 9, &t->extra);
    }
    return 0;
}

Test(place, timers_follow_a_move, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct ticker t = {0};
    struct pump pump = {.total = 4000};
    es_actor_id_t id;
    es_msg_t go = es_msg_make(MSG_GO), stop = es_msg_make(MSG_STOP_TIMER);

    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){
                       .behaviour = ticker_cb, .state = &t, .loop = ES_LOOP(0)},
                   &id));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &pump,
                                      .loop = ES_LOOP(1)},
                   &t.peer));
    pump.to = id;
    ES_OK(es_runtime_start(rt));
    ES_WAIT_GE(t.ticks_on[0], 3); /* ticking at home first */
    ES_OK(es_send(rt, t.peer, &go));
    ES_WAIT_GE(t.balls, pump.total);
    cr_assert_eq(atomic_load(&t.loop), 1, "the ticker did not move");
    ES_WAIT_GE(t.ticks_on[1], 3); /* the same timer, on its new loop */
    ES_OK(es_send(rt, id, &stop));
    ES_WAIT_GE(t.stop_rc_set, 1);
    cr_assert_eq(atomic_load(&t.stop_rc), 0,
                 "es_timer_stop() after the move: %d", atomic_load(&t.stop_rc));
    unsigned long long ticks = atomic_load(&t.ticks_on[1]);
    es_test_sleep_ms(50);
    cr_assert_eq(atomic_load(&t.ticks_on[1]), ticks, "stopped timer fired");
    cr_assert_eq(atomic_load(&t.oneshot_fired), 0);
    es_test_free(rt);
}

/* A timer's id names the loop and slot it was made in. Back on that loop
 * after a round trip, the actor's timers get new slots, so the id's slot
 * may hold another timer: found by fuzz_runtime
 * (regress-timer-lost-after-round-trip), es_timer_stop() said -ENOENT. */
Test(place, timers_survive_a_round_trip, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct ticker t = {0};
    struct pump there = {.total = 4000}, back = {.total = 4000};
    es_actor_id_t id, back_id;
    es_msg_t go = es_msg_make(MSG_GO), stop = es_msg_make(MSG_STOP_TIMER);
    es_msg_t extra = es_msg_make(MSG_NEW_TIMER);

    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){
                       .behaviour = ticker_cb, .state = &t, .loop = ES_LOOP(0)},
                   &id));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &there,
                                      .loop = ES_LOOP(1)},
                   &t.peer));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &back,
                                      .loop = ES_LOOP(0)},
                   &back_id));
    there.to = back.to = id;
    ES_OK(es_runtime_start(rt));
    ES_WAIT_GE(t.ticks_on[0], 3);
    ES_OK(es_send(rt, t.peer, &go));
    ES_WAIT_GE(t.balls, there.total);
    cr_assert_eq(atomic_load(&t.loop), 1, "the ticker did not move");
    ES_OK(es_send(rt, id, &extra)); /* a timer made on loop 1 */
    ES_WAIT_GE(t.ticks_on[1], 3);
    ES_OK(es_send(rt, back_id, &go));
    ES_WAIT_GE(t.balls, there.total + back.total);
    cr_assert_eq(atomic_load(&t.loop), 0, "the ticker did not come back");
    ES_OK(es_send(rt, id, &stop));
    ES_WAIT_GE(t.stop_rc_set, 1);
    cr_assert_eq(atomic_load(&t.stop_rc), 0,
                 "es_timer_stop() after the round trip: %d",
                 atomic_load(&t.stop_rc));
    es_test_free(rt);
}

/* --- stopping while moving
 * ----------------------------------------------------- */

#define PAIRS 64

Test(place, stop_during_moves_loses_nothing, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    static struct player a[PAIRS], b[PAIRS];
    es_actor_id_t ida[PAIRS], idb[PAIRS];
    es_stats_t st;

    for (unsigned i = 0; i < PAIRS; i++) {
        a[i] = (struct player){.rounds = UINT64_MAX};
        b[i] = (struct player){.rounds = UINT64_MAX};
        spawn_pair(rt, &a[i], &b[i], &ida[i], &idb[i]);
    }
    ES_OK(es_runtime_start(rt));
    for (unsigned i = 0; i < PAIRS; i++) {
        es_msg_t ball = es_msg_u64(MSG_BALL, 0);
        ES_OK(es_send(rt, ida[i], &ball));
    }
    /* Stop half the pairs (one side each) while they move, then free the
     * runtime under the rest. */
    for (unsigned i = 0; i < PAIRS; i += 2) {
        while (atomic_load(&a[i].hits) < 64 + i * 8)
            es_test_sleep_ms(1);
        int rc = es_stop(rt, i % 4 ? ida[i] : idb[i]);
        cr_assert(rc == 0 || rc == -ESRCH, "es_stop: %d", rc);
    }
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_log_info("place: %llu moves before the free",
                (unsigned long long)st.migrations);
    es_test_free(rt);
    for (unsigned i = 0; i < PAIRS; i++) {
        cr_assert_eq(atomic_load(&a[i].started), 1);
        cr_assert_eq(atomic_load(&b[i].started), 1);
        cr_assert_eq(atomic_load(&a[i].stopped), 1);
        cr_assert_eq(atomic_load(&b[i].stopped), 1);
        cr_assert_eq(atomic_load(&a[i].freed), 1);
        cr_assert_eq(atomic_load(&b[i].freed), 1);
    }
}

/* --- no move while both loops are saturated ---------------------------------
 */

struct spinner {
    atomic_ullong stop, calls;
};

/* Keeps its loop busy: a message to itself per call, never idle. */
static int spinner_cb(es_actor_t *self, es_msg_t *msg)
{
    struct spinner *s = es_actor_state(self);

    if (msg->type != MSG_GO || atomic_load(&s->stop))
        return 0;
    atomic_fetch_add(&s->calls, 1);
    es_msg_t go = es_msg_make(MSG_GO);
    return es_send(es_actor_runtime(self), es_actor_self(self), &go);
}

/* design.md, "Co-location": when both loops have been busy without sleeping
 * for 5 ms the work is parallel, and an actor whose hot sender is on the
 * other loop stays where it is. */
Test(place, no_move_while_both_loops_saturated, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct spinner sp = {0};
    struct checker c = {0};
    struct pump pump = {.total = 20000};
    es_actor_id_t spin[2], id;
    es_msg_t go = es_msg_make(MSG_GO);
    es_stats_t st;

    for (int i = 0; i < 2; i++)
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = spinner_cb,
                                          .state = &sp,
                                          .loop = ES_LOOP(i)},
                       &spin[i]));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = checker_cb,
                                      .state = &c,
                                      .loop = ES_LOOP(0)},
                   &id));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &pump,
                                      .loop = ES_LOOP(1)},
                   &c.partner));
    pump.to = id;
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < 2; i++)
        ES_OK(es_send(rt, spin[i], &go));
    es_test_sleep_ms(20); /* both loops busy for longer than 5 ms */
    ES_OK(es_send(rt, c.partner, &go));
    ES_WAIT_GE(pump.done, 1);
    ES_WAIT_GE(c.balls, pump.total);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.migrations, 0, "%llu moves between saturated loops",
                 (unsigned long long)st.migrations);
    cr_assert_eq(atomic_load(&c.loop), 0);
    atomic_store(&sp.stop, 1);
    es_test_free(rt);
}

/* --- senders picked at random do not make an actor move ----------------------
 */

#define CROWD 32
#define CROWD_PINGS 3000u

struct crowd {
    es_actor_id_t ids[CROWD];
    atomic_ullong finished;
};

struct member {
    struct crowd *crowd;
    unsigned index;
    uint64_t rng, left;
};

enum { MSG_PING = MSG_STOP_TIMER + 1, MSG_PONG };

static void ping_random(es_actor_t *self, struct member *m)
{
    m->rng = m->rng * 6364136223846793005u + 1442695040888963407u;
    unsigned to = (unsigned)(m->rng >> 33) % (CROWD - 1);
    to += to >= m->index;
    es_msg_t ping = es_msg_make(MSG_PING);
    cr_assert_eq(es_send(es_actor_runtime(self), m->crowd->ids[to], &ping), 0);
}

/* Savina's big in small: each member pings a member picked at random and
 * pings the next when the answer comes. */
static int member_cb(es_actor_t *self, es_msg_t *msg)
{
    struct member *m = es_actor_state(self);

    if (msg->type == MSG_GO) {
        ping_random(self, m);
    } else if (msg->type == MSG_PING) {
        es_msg_t pong = es_msg_make(MSG_PONG);
        return es_send(es_actor_runtime(self), msg->from, &pong);
    } else if (msg->type == MSG_PONG) {
        if (--m->left == 0)
            atomic_fetch_add(&m->crowd->finished, 1);
        else
            ping_random(self, m);
    }
    return 0;
}

/* design.md, "Co-location": a hot sender needs a clear majority of a
 * window. Every member here hears from all the others about equally, so
 * none has one, and none should move (with a quarter of the window as the
 * bar, members moved hundreds of times in this test). */
Test(place, random_senders_do_not_move_anyone, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    static struct crowd crowd;
    static struct member members[CROWD];
    es_msg_t go = es_msg_make(MSG_GO);
    es_stats_t st;

    atomic_store(&crowd.finished, 0);
    for (unsigned i = 0; i < CROWD; i++) {
        members[i] = (struct member){
            .crowd = &crowd, .index = i, .rng = i + 1, .left = CROWD_PINGS};
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = member_cb,
                                          .state = &members[i],
                                          .loop = ES_LOOP(i % 2)},
                       &crowd.ids[i]));
    }
    ES_OK(es_runtime_start(rt));
    for (unsigned i = 0; i < CROWD; i++)
        ES_OK(es_send(rt, crowd.ids[i], &go));
    ES_WAIT_GE(crowd.finished, CROWD);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_leq(st.migrations, 2, "%llu moves with no hot sender anywhere",
                  (unsigned long long)st.migrations);
    es_test_free(rt);
}

/* --- load shedding -----------------------------------------------------------
 */

#define CONSUMERS 8
#define SHED_ROUNDS 4000u

struct consumer {
    uint64_t next; /* the sequence number it expects */
    atomic_ullong got, disorder;
    atomic_int loop;
};

struct producer {
    es_actor_id_t to[CONSUMERS];
    uint64_t round;
};

static void busy_us(unsigned us)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) <
           (long)us * 1000L);
}

/* fjthroughput's shape: one numbered message to every consumer per call,
 * then a message to itself for the next round. */
static int producer_cb(es_actor_t *self, es_msg_t *msg)
{
    struct producer *p = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);

    if (msg->type != MSG_GO || p->round == SHED_ROUNDS)
        return 0;
    for (int i = 0; i < CONSUMERS; i++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, p->round);
        int rc = es_send(rt, p->to[i], &m);
        if (rc)
            return rc;
    }
    p->round++;
    es_msg_t go = es_msg_make(MSG_GO);
    return es_send(rt, es_actor_self(self), &go);
}

static int consumer_cb(es_actor_t *self, es_msg_t *msg)
{
    struct consumer *c = es_actor_state(self);

    if (msg->type != MSG_SEQ)
        return 0;
    atomic_store(&c->loop, es_actor_loop_index(self));
    if (msg->inl.u64[0] != c->next)
        atomic_fetch_add(&c->disorder, 1);
    c->next = msg->inl.u64[0] + 1;
    busy_us(5); /* real work per message: worth a thread */
    atomic_fetch_add(&c->got, 1);
    return 0;
}

/* A producer and its consumers all on loop 0, loop 1 idle. Returns the
 * actors shed; *moved: consumers that ended on loop 1. */
static uint64_t run_consumers(int shed, unsigned *moved)
{
    es_runtime_t *rt =
        es_test_runtime_new(&(es_runtime_opts_t){.threads = 2, .shed = shed});
    static struct consumer cs[CONSUMERS];
    struct producer p = {0};
    es_actor_id_t pid;
    es_msg_t go = es_msg_make(MSG_GO);
    es_stats_t st;

    for (int i = 0; i < CONSUMERS; i++) {
        cs[i] = (struct consumer){0};
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = consumer_cb,
                                          .state = &cs[i],
                                          .loop = ES_LOOP(0)},
                       &p.to[i]));
    }
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = producer_cb,
                                      .state = &p,
                                      .loop = ES_LOOP(0)},
                   &pid));
    ES_OK(es_runtime_start(rt));
    ES_OK(es_send(rt, pid, &go));
    *moved = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        ES_WAIT_GE(cs[i].got, SHED_ROUNDS);
        cr_assert_eq(atomic_load(&cs[i].got), SHED_ROUNDS);
        cr_assert_eq(atomic_load(&cs[i].disorder), 0,
                     "consumer %d got its messages out of order", i);
        *moved += atomic_load(&cs[i].loop) == 1;
    }
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_test_free(rt);
    return st.shed;
}

/* design.md, "Load shedding": a saturated loop hands consumers of its
 * producer to an idle loop, and each keeps its messages' order (it moves
 * with its queue). */
Test(place, saturated_loop_sheds_consumers, .timeout = ES_TEST_TIMEOUT)
{
    unsigned moved;
    uint64_t shed = run_consumers(1, &moved);

    cr_assert_geq(shed, 1, "nothing shed from a saturated loop");
    cr_assert_geq(moved, 1, "no consumer ended on the idle loop (%llu shed)",
                  (unsigned long long)shed);
    cr_assert_lt(moved, CONSUMERS, "every consumer left the producer");
}

Test(place, shed_off_keeps_consumers, .timeout = ES_TEST_TIMEOUT)
{
    unsigned moved;

    cr_assert_eq(run_consumers(-1, &moved), 0);
    cr_assert_eq(moved, 0);
}

/* Pairs that answer each other are conversations, not consumers: moving
 * one side would put a wakeup into every exchange (talks_back). */
Test(place, conversations_are_not_shed, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt =
        es_test_runtime_new(&(es_runtime_opts_t){.threads = 2, .shed = 1});
    static struct player pl[2 * CONSUMERS];
    es_actor_id_t ids[2 * CONSUMERS];
    es_stats_t st;

    for (int i = 0; i < 2 * CONSUMERS; i++) {
        pl[i] = (struct player){.rounds = 40000};
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = player_cb,
                                          .state = &pl[i],
                                          .loop = ES_LOOP(0)},
                       &ids[i]));
    }
    for (int i = 0; i < 2 * CONSUMERS; i++)
        pl[i].peer = ids[i ^ 1];
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < 2 * CONSUMERS; i += 2) {
        es_msg_t ball = es_msg_u64(MSG_BALL, 0);
        ES_OK(es_send(rt, ids[i], &ball));
    }
    for (int i = 0; i < 2 * CONSUMERS; i++)
        ES_WAIT_GE(pl[i].hits, 20000);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.shed, 0, "%llu of the pairs' actors shed",
                 (unsigned long long)st.shed);
    es_test_free(rt);
}

#define RING 16
#define RING_HOPS 200000u

struct ring_member {
    es_actor_id_t next;
    atomic_ullong *hops;
};

static int ring_cb(es_actor_t *self, es_msg_t *msg)
{
    struct ring_member *r = es_actor_state(self);

    if (msg->type != MSG_BALL)
        return 0;
    atomic_fetch_add(r->hops, 1);
    if (msg->inl.u64[0] == 0)
        return 0;
    es_msg_t ball = es_msg_u64(MSG_BALL, msg->inl.u64[0] - 1);
    return es_send(es_actor_runtime(self), r->next, &ball);
}

/* A token ring keeps one actor runnable at a time: a chain, no parallel
 * work to give away, however busy its loop is (SHED_WIDTH). */
Test(place, a_chain_is_not_shed, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt =
        es_test_runtime_new(&(es_runtime_opts_t){.threads = 2, .shed = 1});
    static struct ring_member ring[RING];
    es_actor_id_t ids[RING];
    atomic_ullong hops = 0;
    es_stats_t st;

    for (int i = 0; i < RING; i++) {
        ring[i] = (struct ring_member){.hops = &hops};
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = ring_cb,
                                          .state = &ring[i],
                                          .loop = ES_LOOP(0)},
                       &ids[i]));
    }
    for (int i = 0; i < RING; i++)
        ring[i].next = ids[(i + 1) % RING];
    ES_OK(es_runtime_start(rt));
    es_msg_t ball = es_msg_u64(MSG_BALL, RING_HOPS - 1);
    ES_OK(es_send(rt, ids[0], &ball));
    ES_WAIT_GE(hops, RING_HOPS);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.shed, 0, "%llu ring members shed",
                 (unsigned long long)st.shed);
    es_test_free(rt);
}
