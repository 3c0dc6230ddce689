/* SPDX-License-Identifier: MIT */
/*
 * Tests of bounded mailboxes and channels. A message counts against its
 * receiver's mailbox from the send that accepted it until the behaviour
 * handling it returns, so with the receiver held inside message #0 a sender
 * gets exactly `capacity` acceptances, then -EAGAIN (counted in
 * mailbox_full) with the message still its own; after the receiver is
 * released, retries succeed and every message arrives once, in order. The
 * per-thread channel ring can also answer -EAGAIN, equally retryable.
 */
#include "es_test.h"

#include <semaphore.h>

enum { MSG_SEQ = ES_MSG_USER, MSG_FILL };

/* A receiver that blocks inside message #0 until the test posts `go`. */
struct blocker {
    sem_t go;
    atomic_ullong inside; /* 1 while held in message #0 */
    atomic_ullong got;    /* MSG_SEQ handled */
    atomic_ullong next;   /* next expected sequence number */
    atomic_ullong disorder;
    atomic_ullong timeouts;      /* sem_timedwait gave up: test bug or hang */
    atomic_ullong stopped_after; /* `got` when ES_MSG_STOP arrived */
    atomic_ullong freed;
};

static void blocker_init(struct blocker *b)
{
    cr_assert_eq(sem_init(&b->go, 0, 0), 0);
}

static int blocker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct blocker *b = es_actor_state(self);

    if (msg->type == ES_MSG_STOP) {
        atomic_store(&b->stopped_after, atomic_load(&b->got));
        return 0;
    }
    if (msg->type != MSG_SEQ)
        return 0;
    if (msg->inl.u64[0] != atomic_load(&b->next))
        atomic_fetch_add(&b->disorder, 1);
    atomic_store(&b->next, msg->inl.u64[0] + 1);
    atomic_fetch_add(&b->got, 1);
    if (msg->inl.u64[0] == 0) {
        struct timespec ts;

        atomic_store(&b->inside, 1);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 20;
        while (sem_timedwait(&b->go, &ts) == -1) {
            if (errno != EINTR) {
                atomic_fetch_add(&b->timeouts, 1);
                break;
            }
        }
        atomic_store(&b->inside, 0);
    }
    return 0;
}

static void blocker_free(void *state)
{
    struct blocker *b = state;

    atomic_fetch_add(&b->freed, 1);
}

static es_actor_id_t spawn_blocker(es_runtime_t *rt, struct blocker *b,
                                   int loop, unsigned capacity)
{
    es_spawn_opts_t o = {
        .behaviour = blocker_cb,
        .state = b,
        .state_free = blocker_free,
        .loop = loop,
        .mailbox_capacity = capacity,
    };
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    return id;
}

/* Sends #0 and waits until the receiver is held inside it. */
static void hold_receiver(es_runtime_t *rt, es_actor_id_t id, struct blocker *b)
{
    es_msg_t m = es_msg_u64(MSG_SEQ, 0);

    ES_OK(es_send(rt, id, &m));
    ES_WAIT_GE(b->inside, 1);
}

/*
 * The core check: with the receiver held, exactly `cap` sends succeed in
 * total (including #0), the next `refusals` are -EAGAIN; after release, all
 * `total` messages arrive once and in order.
 */
static void check_capacity(es_runtime_t *rt, es_actor_id_t id,
                           struct blocker *b, unsigned cap, unsigned total)
{
    es_stats_t st;

    hold_receiver(rt, id, b);
    for (unsigned i = 1; i < cap; i++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, i);
        int rc = es_send(rt, id, &m);

        cr_assert_eq(rc, 0, "send #%u of capacity %u: %d (%s)", i, cap, rc,
                     es_strerror(rc));
    }
    for (int k = 0; k < 3; k++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, cap);

        cr_assert_eq(es_send(rt, id, &m), -EAGAIN,
                     "send #%u went past capacity %u", cap, cap);
    }
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.mailbox_full, 3, "mailbox_full = %llu after 3 refusals",
                 (unsigned long long)st.mailbox_full);
    cr_assert_eq(sem_post(&b->go), 0);
    for (unsigned i = cap; i < total; i++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, i);

        ES_OK(es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S));
    }
    ES_WAIT_GE(b->got, total);
}

static void check_blocker_after(struct blocker *b, unsigned total)
{
    cr_assert_eq(atomic_load(&b->got), total, "got %llu of %u",
                 (unsigned long long)atomic_load(&b->got), total);
    cr_assert_eq(atomic_load(&b->disorder), 0);
    cr_assert_eq(atomic_load(&b->timeouts), 0);
    cr_assert_eq(atomic_load(&b->freed), 1);
}

Test(mailbox, runtime_capacity_is_exact, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2, .mailbox_capacity = 8};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct blocker b = {0};
    es_actor_id_t id;

    blocker_init(&b);
    ES_OK(es_runtime_start(rt));
    id = spawn_blocker(rt, &b, 1, 0);
    check_capacity(rt, id, &b, 8, 40);
    es_test_free(rt);
    check_blocker_after(&b, 40);
}

Test(mailbox, spawn_capacity_overrides_default, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2, .mailbox_capacity = 64};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct blocker b = {0};
    es_actor_id_t id;

    blocker_init(&b);
    ES_OK(es_runtime_start(rt));
    id = spawn_blocker(rt, &b, 0, 4);
    check_capacity(rt, id, &b, 4, 20);
    es_test_free(rt);
    check_blocker_after(&b, 20);
}

Test(mailbox, default_capacity, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct blocker b = {0};
    es_actor_id_t id;

    blocker_init(&b);
    id = spawn_blocker(rt, &b, 1, 0);
    check_capacity(rt, id, &b, ES_MAILBOX_DEFAULT, 3 * ES_MAILBOX_DEFAULT);
    es_test_free(rt);
    check_blocker_after(&b, 3 * ES_MAILBOX_DEFAULT);
}

static atomic_ullong g_freed_payloads;

static void count_free(void *p)
{
    atomic_fetch_add(&g_freed_payloads, 1);
    free(p);
}

Test(mailbox, refused_payload_stays_with_caller, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 1, .mailbox_capacity = 2};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct blocker b = {0};
    es_actor_id_t id;
    es_msg_t m1 = es_msg_u64(MSG_SEQ, 1);
    es_msg_t big = es_msg_ptr(MSG_SEQ, malloc(100), 100, count_free);

    blocker_init(&b);
    ES_OK(es_runtime_start(rt));
    id = spawn_blocker(rt, &b, 0, 0);
    hold_receiver(rt, id, &b);
    ES_OK(es_send(rt, id, &m1));
    big.inl.u64[0] = 2;
    cr_assert_eq(es_send(rt, id, &big), -EAGAIN);
    cr_assert_eq(atomic_load(&g_freed_payloads), 0,
                 "a refused message's payload was freed");
    cr_assert_eq(sem_post(&b.go), 0);
    ES_OK(es_test_send_retry(rt, id, &big, ES_TEST_WAIT_S));
    ES_WAIT_GE(b.got, 3);
    ES_WAIT_GE(g_freed_payloads, 1);
    es_test_free(rt);
    check_blocker_after(&b, 3);
    cr_assert_eq(atomic_load(&g_freed_payloads), 1);
}

/*
 * An actor sender (on the other loop) sees the same limit: it manages
 * exactly capacity-1 sends behind the held message #0.
 */
static atomic_ullong g_fill_ok;
static atomic_ullong g_fill_done;
static atomic_int g_fill_rc;

static int filler_cb(es_actor_t *self, es_msg_t *msg)
{
    es_actor_id_t to;

    if (msg->type != MSG_FILL)
        return 0;
    to = msg->inl.u64[0];
    for (uint64_t seq = 1; seq < 10000; seq++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, seq);
        int rc = es_send(es_actor_runtime(self), to, &m);

        if (rc != 0) {
            atomic_store(&g_fill_rc, rc);
            break;
        }
        atomic_fetch_add(&g_fill_ok, 1);
    }
    atomic_fetch_add(&g_fill_done, 1);
    return 0;
}

Test(mailbox, actor_sender_sees_eagain, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2, .mailbox_capacity = 16};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct blocker b = {0};
    es_spawn_opts_t fo = {.behaviour = filler_cb, .loop = 0};
    es_actor_id_t id, filler;
    es_msg_t fill;
    es_stats_t st;

    blocker_init(&b);
    ES_OK(es_runtime_start(rt));
    id = spawn_blocker(rt, &b, 1, 0);
    ES_OK(es_spawn(rt, &fo, &filler));
    hold_receiver(rt, id, &b);
    fill = es_msg_u64(MSG_FILL, id);
    ES_OK(es_send(rt, filler, &fill));
    ES_WAIT_GE(g_fill_done, 1);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(atomic_load(&g_fill_rc), -EAGAIN);
    cr_assert_eq(atomic_load(&g_fill_ok), 15, "filler got %llu sends in",
                 (unsigned long long)atomic_load(&g_fill_ok));
    cr_assert_eq(st.mailbox_full, 1);
    cr_assert_eq(sem_post(&b.go), 0);
    ES_WAIT_GE(b.got, 16);
    es_test_free(rt);
    check_blocker_after(&b, 16);
}

Test(mailbox, stop_ignores_full_mailbox, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2, .mailbox_capacity = 4};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct blocker b = {0};
    es_actor_id_t id;
    es_msg_t m;

    blocker_init(&b);
    ES_OK(es_runtime_start(rt));
    id = spawn_blocker(rt, &b, 1, 0);
    hold_receiver(rt, id, &b);
    for (unsigned i = 1; i < 4; i++) {
        m = es_msg_u64(MSG_SEQ, i);
        ES_OK(es_send(rt, id, &m));
    }
    cr_assert_eq(es_send(rt, id, &m), -EAGAIN);
    ES_OK(es_stop(rt, id));
    cr_assert_eq(sem_post(&b.go), 0);
    ES_WAIT_GE(b.freed, 1);
    es_test_free(rt);
    check_blocker_after(&b, 4);
    cr_assert_eq(atomic_load(&b.stopped_after), 4,
                 "STOP overtook messages sent before it");
}

Test(mailbox, small_channel_is_retryable, .timeout = ES_TEST_TIMEOUT)
{
    enum { TOTAL = 2000 };
    es_runtime_opts_t opts = {
        .threads = 2,
        .channel_capacity = 4,
        .mailbox_capacity = 4096,
    };
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct blocker b = {0};
    es_actor_id_t id;
    unsigned first_refusal = 0;

    blocker_init(&b);
    ES_OK(es_runtime_start(rt));
    id = spawn_blocker(rt, &b, 1, 0);
    hold_receiver(rt, id, &b);
    /*
     * The held loop cannot drain its ring, so a 4-slot channel must refuse
     * long before the 4096-slot mailbox would (some slack for batching).
     */
    for (unsigned i = 1; i < 200; i++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, i);
        int rc = es_send(rt, id, &m);

        if (rc == -EAGAIN) {
            first_refusal = i;
            break;
        }
        ES_OK(rc);
    }
    cr_assert_gt(first_refusal, 0, "a 4-slot channel never filled");
    cr_assert_leq(first_refusal, 64, "first refusal at send #%u",
                  first_refusal);
    cr_assert_eq(sem_post(&b.go), 0);
    for (unsigned i = first_refusal; i < TOTAL; i++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, i);

        ES_OK(es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S));
    }
    ES_WAIT_GE(b.got, TOTAL);
    es_test_free(rt);
    check_blocker_after(&b, TOTAL);
}

/* Many senders against a tiny mailbox: retries lose nothing. */
struct flood {
    es_runtime_t *rt;
    es_actor_id_t to;
    unsigned sender;
    atomic_ullong eagain;
    atomic_ullong failed;
};

#define FLOOD_SENDERS 4
#define FLOOD_EACH 5000

struct tally {
    uint64_t next[FLOOD_SENDERS];
    atomic_ullong got;
    atomic_ullong disorder;
};

static int tally_cb(es_actor_t *self, es_msg_t *msg)
{
    struct tally *t = es_actor_state(self);
    uint64_t s = msg->inl.u64[0], seq = msg->inl.u64[1];

    if (msg->type != MSG_SEQ)
        return 0;
    if (s >= FLOOD_SENDERS || t->next[s] != seq)
        atomic_fetch_add(&t->disorder, 1);
    else
        t->next[s] = seq + 1;
    atomic_fetch_add(&t->got, 1);
    return 0;
}

static void *flood_thread(void *arg)
{
    struct flood *f = arg;

    for (uint64_t seq = 0; seq < FLOOD_EACH; seq++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, f->sender);

        m.inl.u64[1] = seq;
        for (;;) {
            int rc = es_send(f->rt, f->to, &m);

            if (rc == 0)
                break;
            if (rc != -EAGAIN) {
                atomic_fetch_add(&f->failed, 1);
                return NULL;
            }
            atomic_fetch_add(&f->eagain, 1);
            sched_yield();
        }
    }
    return NULL;
}

Test(mailbox, tiny_mailbox_many_senders, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2, .mailbox_capacity = 2};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct tally t = {0};
    es_spawn_opts_t o = {.behaviour = tally_cb, .state = &t, .loop = 1};
    struct flood f[FLOOD_SENDERS] = {0};
    pthread_t th[FLOOD_SENDERS];
    unsigned long long eagain = 0;
    es_stats_t st;

    ES_OK(es_runtime_start(rt));
    ES_OK(es_spawn(rt, &o, &f[0].to));
    for (unsigned i = 0; i < FLOOD_SENDERS; i++) {
        f[i].rt = rt;
        f[i].to = f[0].to;
        f[i].sender = i;
        cr_assert_eq(pthread_create(&th[i], NULL, flood_thread, &f[i]), 0);
    }
    for (unsigned i = 0; i < FLOOD_SENDERS; i++)
        cr_assert(es_test_join(th[i], NULL, ES_TEST_JOIN_S));
    ES_WAIT_GE(t.got, FLOOD_SENDERS * FLOOD_EACH);
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_test_free(rt);
    for (unsigned i = 0; i < FLOOD_SENDERS; i++) {
        cr_assert_eq(atomic_load(&f[i].failed), 0);
        eagain += atomic_load(&f[i].eagain);
    }
    cr_assert_eq(atomic_load(&t.got), FLOOD_SENDERS * FLOOD_EACH);
    cr_assert_eq(atomic_load(&t.disorder), 0);
    cr_assert_eq(st.mailbox_full, eagain,
                 "mailbox_full %llu != refusals seen %llu",
                 (unsigned long long)st.mailbox_full, eagain);
}
