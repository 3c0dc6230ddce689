/* SPDX-License-Identifier: MIT */
/*
 * Flow control between actors (issue 9): sends from behaviours never fail
 * for capacity. A sender over a receiver's limit is muted until the
 * receiver drains; mutes never deadlock in cycles; a full ring to another
 * thread makes the message wait in the sender's loop; foreign threads keep
 * -EAGAIN and can block in es_send_wait().
 */
#include "es_test.h"

#include <eventserver/timer.h>

#include <pthread.h>
#include <semaphore.h>

enum { MSG_DATA = ES_MSG_USER, MSG_NEXT, MSG_KICK, MSG_HOLD };

/* Sends refused on the runtime's own threads (foreign threads, main() here,
 * may see -EAGAIN; behaviours never should). */
static unsigned long long demux_refusals(es_runtime_t *rt)
{
    unsigned long long n = 0;

    for (int i = 0; i < (int)es_runtime_threads(rt); i++) {
        es_stats_t st;

        ES_OK(es_runtime_stats(rt, i, &st));
        n += st.mailbox_full;
    }
    return n;
}

/* --- a fast producer and a slow consumer on two threads --------------------
 */

#define PC_CAPACITY 256u
#define PC_CHUNK 64u

struct consumer {
    atomic_ullong got, next, disorder;
};

struct producer {
    es_actor_id_t to;
    struct consumer *cons;
    uint64_t total, sent;
    atomic_ullong max_ahead; /* sent - consumed, at most, seen by sends */
    atomic_int rc;           /* first failed send */
    atomic_ullong done;
};

static int consumer_cb(es_actor_t *self, es_msg_t *msg)
{
    struct consumer *c = es_actor_state(self);

    if (msg->type != MSG_DATA)
        return 0;
    if (msg->inl.u64[0] != atomic_load(&c->next))
        atomic_fetch_add(&c->disorder, 1);
    atomic_store(&c->next, msg->inl.u64[0] + 1);
    /* Slow: a little work per message, so the producer runs ahead. */
    for (volatile unsigned spin = 0; spin < 300; spin++)
        ;
    atomic_fetch_add(&c->got, 1);
    return 0;
}

/* Sends a chunk per call and asks itself for more: the way to stream into
 * a mailbox (actor.h: one call can overfill by what it sends). */
static int producer_cb(es_actor_t *self, es_msg_t *msg)
{
    struct producer *p = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);

    if (msg->type != MSG_NEXT)
        return 0;
    for (unsigned i = 0; i < PC_CHUNK && p->sent < p->total; i++) {
        es_msg_t m = es_msg_u64(MSG_DATA, p->sent);
        int rc = es_send(rt, p->to, &m);
        unsigned long long ahead;

        if (rc != 0) {
            atomic_store(&p->rc, rc);
            atomic_store(&p->done, 1);
            return 0;
        }
        p->sent++;
        ahead = p->sent - atomic_load(&p->cons->got);
        if (ahead > atomic_load(&p->max_ahead))
            atomic_store(&p->max_ahead, ahead);
    }
    if (p->sent == p->total) {
        atomic_store(&p->done, 1);
        return 0;
    }
    es_msg_t more = es_msg_make(MSG_NEXT);
    int rc = es_send(rt, es_actor_self(self), &more);
    if (rc != 0) {
        atomic_store(&p->rc, rc);
        atomic_store(&p->done, 1);
    }
    return 0;
}

Test(flow, producer_is_paused_not_refused, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct consumer c = {0};
    struct producer p = {.cons = &c, .total = es_test_scaled(200000)};
    es_actor_id_t prod;
    es_msg_t more = es_msg_make(MSG_NEXT);
    es_stats_t st;

    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = consumer_cb,
                                      .state = &c,
                                      .loop = ES_LOOP(1),
                                      .mailbox_capacity = PC_CAPACITY},
                   &p.to));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = producer_cb,
                                      .state = &p,
                                      .loop = ES_LOOP(0)},
                   &prod));
    ES_OK(es_runtime_start(rt));
    ES_OK(es_send(rt, prod, &more));
    ES_WAIT_GE(p.done, 1);
    cr_assert_eq(atomic_load(&p.rc), 0, "a send from the producer failed: %d",
                 atomic_load(&p.rc));
    ES_WAIT_GE(c.got, p.total);
    cr_assert_eq(atomic_load(&c.disorder), 0);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(demux_refusals(rt), 0, "a behaviour's send was refused");
    cr_assert_gt(st.mutes, 0, "the consumer never filled up: no test");
    /* Bounded: the mailbox limit plus what one call sends over it. */
    cr_assert_leq(atomic_load(&p.max_ahead), PC_CAPACITY + PC_CHUNK,
                  "producer ran %llu ahead of the consumer",
                  (unsigned long long)atomic_load(&p.max_ahead));
    cr_log_info("flow: %llu messages, %llu mutes, max %llu ahead",
                (unsigned long long)p.total, (unsigned long long)st.mutes,
                (unsigned long long)atomic_load(&p.max_ahead));
    es_test_free(rt);
}

/* --- cycles of actors that overload each other ------------------------------
 */

#define CYCLE_ACTORS 3u
#define CYCLE_BURST 50u

struct cycler {
    es_actor_id_t next;
    atomic_ullong *delivered;
    unsigned long long hops; /* a message travels this many hops */
    atomic_int *rc;
};

static int cycler_cb(es_actor_t *self, es_msg_t *msg)
{
    struct cycler *c = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);

    if (msg->type == MSG_KICK) {
        /* A burst well over every mailbox: each actor fills the next. */
        for (unsigned i = 0; i < CYCLE_BURST; i++) {
            es_msg_t m = es_msg_u64(MSG_DATA, c->hops);
            int rc = es_send(rt, c->next, &m);
            if (rc)
                atomic_store(c->rc, rc);
        }
    } else if (msg->type == MSG_DATA) {
        atomic_fetch_add(c->delivered, 1);
        if (msg->inl.u64[0] > 1) {
            es_msg_t m = es_msg_u64(MSG_DATA, msg->inl.u64[0] - 1);
            int rc = es_send(rt, c->next, &m);
            if (rc)
                atomic_store(c->rc, rc);
        }
    }
    return 0;
}

/* Every actor in a ring sends to the next one, whose mailbox (8) is far
 * smaller than what flows: each is full and each sends to a full one. A
 * rule that let them all wait on each other would hang here. */
static void run_cycle(unsigned threads, unsigned n)
{
    es_runtime_t *rt =
        es_test_runtime_new(&(es_runtime_opts_t){.threads = threads});
    struct cycler c[CYCLE_ACTORS];
    es_actor_id_t id[CYCLE_ACTORS];
    atomic_ullong delivered = 0;
    atomic_int rc = 0;
    unsigned long long hops = 200;
    es_stats_t st;

    for (unsigned i = 0; i < n; i++) {
        c[i] =
            (struct cycler){.delivered = &delivered, .hops = hops, .rc = &rc};
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = cycler_cb,
                                          .state = &c[i],
                                          .loop = ES_LOOP(i % threads),
                                          .mailbox_capacity = 8},
                       &id[i]));
    }
    for (unsigned i = 0; i < n; i++)
        c[i].next = id[(i + 1) % n];
    ES_OK(es_runtime_start(rt));
    for (unsigned i = 0; i < n; i++) {
        es_msg_t kick = es_msg_make(MSG_KICK);
        /* From main: the mailbox may be full already (foreign threads get
         * -EAGAIN, so wait for room). */
        ES_OK(es_send_wait(rt, id[i], &kick, 10000));
    }
    ES_WAIT_GE(delivered, n * CYCLE_BURST * hops);
    cr_assert_eq(atomic_load(&rc), 0, "a send in the cycle failed: %d",
                 atomic_load(&rc));
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(demux_refusals(rt), 0, "a behaviour's send was refused");
    cr_log_info("cycle of %u on %u threads: %llu mutes", n, threads,
                (unsigned long long)st.mutes);
    es_test_free(rt);
}

Test(flow, cycle_of_three_on_two_threads_finishes, .timeout = ES_TEST_TIMEOUT)
{
    run_cycle(2, 3);
}

Test(flow, cycle_of_two_on_two_threads_finishes, .timeout = ES_TEST_TIMEOUT)
{
    run_cycle(2, 2);
}

Test(flow, cycle_on_one_thread_finishes, .timeout = ES_TEST_TIMEOUT)
{
    run_cycle(1, 3);
}

/* --- a full ring between threads --------------------------------------------
 */

#define RING_SENDS 20000u

struct ring_state {
    es_actor_id_t to;
    atomic_int rc;
    atomic_ullong done;
};

static int ring_sender_cb(es_actor_t *self, es_msg_t *msg)
{
    struct ring_state *r = es_actor_state(self);

    if (msg->type != MSG_KICK)
        return 0;
    /* Far more than the 64-slot ring holds, in one call. */
    for (uint64_t i = 0; i < RING_SENDS; i++) {
        es_msg_t m = es_msg_u64(MSG_DATA, i);
        int rc = es_send(es_actor_runtime(self), r->to, &m);
        if (rc) {
            atomic_store(&r->rc, rc);
            break;
        }
    }
    atomic_store(&r->done, 1);
    return 0;
}

Test(flow, full_ring_never_fails_an_actor_send, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){
        .threads = 2, .channel_capacity = 64, .mailbox_capacity = 1u << 20});
    struct consumer c = {0};
    struct ring_state r = {0};
    es_actor_id_t sender;
    es_msg_t kick = es_msg_make(MSG_KICK);
    es_stats_t st;

    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = consumer_cb,
                                      .state = &c,
                                      .loop = ES_LOOP(1)},
                   &r.to));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = ring_sender_cb,
                                      .state = &r,
                                      .loop = ES_LOOP(0)},
                   &sender));
    ES_OK(es_runtime_start(rt));
    ES_OK(es_send(rt, sender, &kick));
    ES_WAIT_GE(r.done, 1);
    cr_assert_eq(atomic_load(&r.rc), 0, "send from an actor failed: %d",
                 atomic_load(&r.rc));
    ES_WAIT_GE(c.got, RING_SENDS);
    cr_assert_eq(atomic_load(&c.disorder), 0);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_gt(st.overflowed, 0, "the ring never filled: no test");
    cr_assert_eq(demux_refusals(rt), 0, "a behaviour's send was refused");
    es_test_free(rt);
}

/* A runtime freed while messages still wait in a sender's overflow hands
 * them to the dead letters: nothing leaks, every payload is freed. */
static atomic_ullong g_overflow_freed;

static void count_free(void *p)
{
    free(p);
    atomic_fetch_add(&g_overflow_freed, 1);
}

struct hold {
    sem_t go;
    atomic_ullong inside;
};

static int hold_cb(es_actor_t *self, es_msg_t *msg)
{
    struct hold *h = es_actor_state(self);

    if (msg->type == MSG_HOLD) {
        atomic_store(&h->inside, 1);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 20;
        while (sem_timedwait(&h->go, &ts) == -1 && errno == EINTR)
            ;
    }
    return 0;
}

static int ptr_sender_cb(es_actor_t *self, es_msg_t *msg)
{
    struct ring_state *r = es_actor_state(self);

    if (msg->type != MSG_KICK)
        return 0;
    for (unsigned i = 0; i < 1000; i++) {
        es_msg_t m = es_msg_ptr(MSG_DATA, malloc(16), 16, count_free);
        int rc = es_send(es_actor_runtime(self), r->to, &m);
        if (rc) {
            atomic_store(&r->rc, rc);
            es_msg_release(&m);
        }
    }
    atomic_store(&r->done, 1);
    return 0;
}

Test(flow, overflow_left_at_shutdown_is_dead_lettered,
     .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){
        .threads = 2, .channel_capacity = 16, .mailbox_capacity = 4096});
    struct hold h = {0};
    struct ring_state r = {0};
    es_actor_id_t sender;
    es_msg_t kick = es_msg_make(MSG_KICK), hold = es_msg_make(MSG_HOLD);
    es_stats_t st;

    cr_assert_eq(sem_init(&h.go, 0, 0), 0);
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){
                       .behaviour = hold_cb, .state = &h, .loop = ES_LOOP(1)},
                   &r.to));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = ptr_sender_cb,
                                      .state = &r,
                                      .loop = ES_LOOP(0)},
                   &sender));
    ES_OK(es_runtime_start(rt));
    ES_OK(es_send(rt, r.to, &hold));
    ES_WAIT_GE(h.inside, 1); /* loop 1 is busy: its ring fills */
    ES_OK(es_send(rt, sender, &kick));
    ES_WAIT_GE(r.done, 1);
    cr_assert_eq(atomic_load(&r.rc), 0);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_gt(st.overflowed, 0);
    ES_OK(es_runtime_stop(rt));
    cr_assert_eq(sem_post(&h.go), 0);
    es_test_free(rt);
    /* Handled or dead-lettered: either way freed exactly once. */
    cr_assert_eq(atomic_load(&g_overflow_freed), 1000);
    sem_destroy(&h.go);
}

/* --- foreign threads: -EAGAIN, or es_send_wait() ---------------------------
 */

static atomic_ullong g_posted;

static void *post_later(void *arg)
{
    es_test_sleep_ms(150);
    atomic_store(&g_posted, 1);
    sem_post(arg);
    return NULL;
}

Test(flow, send_wait_blocks_until_room, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct hold h = {0};
    es_actor_id_t id;
    es_msg_t hold = es_msg_make(MSG_HOLD), m = es_msg_make(MSG_DATA);

    cr_assert_eq(sem_init(&h.go, 0, 0), 0);
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = hold_cb,
                                      .state = &h,
                                      .mailbox_capacity = 4},
                   &id));
    ES_OK(es_runtime_start(rt));
    ES_OK(es_send(rt, id, &hold));
    ES_WAIT_GE(h.inside, 1);
    for (int i = 0; i < 3; i++)
        ES_OK(es_send(rt, id, &m));
    cr_assert_eq(es_send(rt, id, &m), -EAGAIN);
    double t0 = es_test_now();
    cr_assert_eq(es_send_wait(rt, id, &m, 100), -ETIMEDOUT);
    cr_assert_geq(es_test_now() - t0, 0.09, "gave up before its timeout");
    /* Release the receiver from another thread while this one waits. */
    pthread_t poster;
    cr_assert_eq(pthread_create(&poster, NULL, post_later, &h.go), 0);
    ES_OK(es_send_wait(rt, id, &m, 10000));
    cr_assert_eq(atomic_load(&g_posted), 1, "returned while still full");
    cr_assert(es_test_join(poster, NULL, ES_TEST_JOIN_S));
    es_test_free(rt);
    sem_destroy(&h.go);
}

static atomic_int g_wait_rc = 1;

static int waiter_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == MSG_KICK) {
        es_msg_t m = es_msg_make(MSG_DATA);
        atomic_store(&g_wait_rc, es_send_wait(es_actor_runtime(self),
                                              es_actor_self(self), &m, 10));
    }
    return 0;
}

Test(flow, send_wait_refused_on_a_demux_thread, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_actor_id_t id;
    es_msg_t kick = es_msg_make(MSG_KICK);

    ES_OK(es_spawn(rt, &(es_spawn_opts_t){.behaviour = waiter_cb}, &id));
    ES_OK(es_send(rt, id, &kick));
    for (double t0 = es_test_now();
         atomic_load(&g_wait_rc) == 1 && es_test_now() - t0 < ES_TEST_WAIT_S;)
        es_test_sleep_ms(1);
    cr_assert_eq(atomic_load(&g_wait_rc), -EDEADLK);
    cr_assert_eq(es_send_wait(rt, id, &(es_msg_t){.type = 1}, 0), -EINVAL);
    es_test_free(rt);
}

/* --- one wait per receiver, however many sends go over ----------------------
 */

#define FAN_RECEIVERS 3
#define FAN_SENDS 200u

struct fan {
    es_actor_id_t to[FAN_RECEIVERS];
    atomic_int rc;
    atomic_ullong done;
};

static int fan_cb(es_actor_t *self, es_msg_t *msg)
{
    struct fan *f = es_actor_state(self);

    if (msg->type != MSG_KICK)
        return 0;
    /* Round-robin over the receivers, far over each one's limit. */
    for (unsigned i = 0; i < FAN_SENDS; i++) {
        es_msg_t m = es_msg_u64(MSG_DATA, i / FAN_RECEIVERS);
        int rc = es_send(es_actor_runtime(self), f->to[i % FAN_RECEIVERS], &m);
        if (rc)
            atomic_store(&f->rc, rc);
    }
    atomic_store(&f->done, 1);
    return 0;
}

/* A behaviour that floods several full receivers in turn waits once on
 * each: its loop's mute table holds one entry per receiver, not one per
 * send (one per send made unmuting quadratic: a driver flooding 60
 * workers kept 1.2 M entries). */
Test(flow, one_wait_per_receiver, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(
        &(es_runtime_opts_t){.threads = 2, .mailbox_capacity = 8});
    struct hold h = {0};
    struct consumer c[FAN_RECEIVERS] = {0};
    struct fan f = {0};
    es_actor_id_t fan;
    es_msg_t kick = es_msg_make(MSG_KICK), hold = es_msg_make(MSG_HOLD);
    es_actor_id_t holder;
    es_stats_t st;

    cr_assert_eq(sem_init(&h.go, 0, 0), 0);
    /* The receivers live on a loop held busy, so they stay full. */
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){
                       .behaviour = hold_cb, .state = &h, .loop = ES_LOOP(1)},
                   &holder));
    for (unsigned i = 0; i < FAN_RECEIVERS; i++)
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = consumer_cb,
                                          .state = &c[i],
                                          .loop = ES_LOOP(1)},
                       &f.to[i]));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){
                       .behaviour = fan_cb, .state = &f, .loop = ES_LOOP(0)},
                   &fan));
    ES_OK(es_runtime_start(rt));
    ES_OK(es_send(rt, holder, &hold));
    ES_WAIT_GE(h.inside, 1);
    ES_OK(es_send(rt, fan, &kick));
    ES_WAIT_GE(f.done, 1);
    cr_assert_eq(atomic_load(&f.rc), 0);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.mutes, FAN_RECEIVERS, "%llu waits for %d receivers",
                 (unsigned long long)st.mutes, FAN_RECEIVERS);
    cr_assert_eq(sem_post(&h.go), 0);
    for (unsigned i = 0; i < FAN_RECEIVERS; i++) {
        ES_WAIT_GE(c[i].got,
                   (FAN_SENDS + FAN_RECEIVERS - 1 - i) / FAN_RECEIVERS);
        cr_assert_eq(atomic_load(&c[i].disorder), 0);
    }
    es_test_free(rt);
    sem_destroy(&h.go);
}

/* --- a muted actor's timers wait with it ------------------------------------
 */

struct ticking {
    es_actor_id_t to;
    es_timer_id_t timer;
    atomic_ullong ticks, filled;
    atomic_int stop_rc;
    atomic_ullong stopped, late; /* ticks after es_timer_stop() returned 0 */
};

static int ticking_cb(es_actor_t *self, es_msg_t *msg)
{
    struct ticking *t = es_actor_state(self);

    if (msg->type == ES_MSG_START)
        return es_timer_start(self, 1, 1, 0, &t->timer);
    if (msg->type == ES_MSG_TIMER) {
        atomic_fetch_add(&t->ticks, 1);
        if (atomic_load(&t->stopped))
            atomic_fetch_add(&t->late, 1);
    }
    if (msg->type == MSG_NEXT) {
        int rc = es_timer_stop(self, t->timer);
        atomic_store(&t->stop_rc, rc);
        atomic_store(&t->stopped, rc == 0 ? 1 : 2);
    }
    if (msg->type == MSG_KICK) {
        for (unsigned i = 0; i < 20; i++) {
            es_msg_t m = es_msg_u64(MSG_DATA, i);
            int rc = es_send(es_actor_runtime(self), t->to, &m);
            if (rc)
                return rc;
        }
        atomic_store(&t->filled, 1);
    }
    return 0;
}

/* Starts a ticking actor on loop 0 and mutes it: its receiver, on loop 1
 * with a mailbox of 4, is held busy while the ticker sends it 20. */
static es_actor_id_t mute_ticker(es_runtime_t *rt, struct hold *h,
                                 struct ticking *t)
{
    es_actor_id_t id;
    es_msg_t hold = es_msg_make(MSG_HOLD), kick = es_msg_make(MSG_KICK);

    cr_assert_eq(sem_init(&h->go, 0, 0), 0);
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = hold_cb,
                                      .state = h,
                                      .loop = ES_LOOP(1),
                                      .mailbox_capacity = 4},
                   &t->to));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){
                       .behaviour = ticking_cb, .state = t, .loop = ES_LOOP(0)},
                   &id));
    ES_OK(es_runtime_start(rt));
    ES_WAIT_GE(t->ticks, 3);
    ES_OK(es_send(rt, t->to, &hold));
    ES_WAIT_GE(h->inside, 1);
    ES_OK(es_send(rt, id, &kick));
    ES_WAIT_GE(t->filled, 1);
    return id;
}

/* design.md, "Flow control": what reaches a muted actor directly, a timer
 * included, waits in its queue until it is unmuted. */
Test(flow, muted_actor_timers_wait, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct hold h = {0};
    struct ticking t = {0};

    (void)mute_ticker(rt, &h, &t);
    es_test_sleep_ms(20); /* a tick already on its way may still land */
    unsigned long long ticks = atomic_load(&t.ticks);
    es_test_sleep_ms(100);
    cr_assert_eq(atomic_load(&t.ticks), ticks,
                 "a muted actor's timer ran %llu times",
                 atomic_load(&t.ticks) - ticks);
    cr_assert_eq(sem_post(&h.go), 0);
    ES_WAIT_GE(t.ticks, ticks + 3); /* unmuted: the timer runs again */
    es_test_free(rt);
    sem_destroy(&h.go);
}

/* es_timer_stop() promises that no expiry of the timer is delivered after
 * it returns 0, also when expiries waited in the queue of a muted actor
 * (found by fuzz_runtime: "timer fired in state 3"). */
Test(flow, timer_stopped_after_mute_never_fires, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    struct hold h = {0};
    struct ticking t = {0};
    es_msg_t stop = es_msg_make(MSG_NEXT);
    es_actor_id_t id = mute_ticker(rt, &h, &t);

    es_test_sleep_ms(20); /* expiries queue up in the muted actor */
    ES_OK(es_send(rt, id, &stop));
    es_test_sleep_ms(20); /* and more behind the stop request */
    cr_assert_eq(sem_post(&h.go), 0);
    ES_WAIT_GE(t.stopped, 1);
    cr_assert_eq(atomic_load(&t.stop_rc), 0);
    es_test_sleep_ms(50);
    cr_assert_eq(atomic_load(&t.late), 0,
                 "%llu expiries after es_timer_stop() returned 0",
                 (unsigned long long)atomic_load(&t.late));
    es_test_free(rt);
    sem_destroy(&h.go);
}
