/* SPDX-License-Identifier: MIT */
/*
 * Tests of bounded mailboxes and channels. A message counts against its
 * receiver's mailbox from the send that accepted it until the behaviour
 * handling it returns, so with the receiver held inside message #0 a
 * foreign sender gets exactly `capacity` acceptances, then -EAGAIN (counted
 * in mailbox_full) with the message still its own; after the receiver is
 * released, retries succeed and every message arrives once, in order. An
 * actor sender is never refused: it is muted instead (test_flow.c has the
 * rest of muting). The per-thread channel ring can also answer -EAGAIN to
 * a foreign thread, equally retryable. And
 * a mailbox that is far from full never answers -EAGAIN, however the
 * senders are preempted (issue 8, defect 4).
 */
#include "es_test.h"

#include <semaphore.h>
#include <signal.h>

enum { MSG_SEQ = ES_MSG_USER, MSG_FILL, MSG_PROBE };

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
        .loop = ES_LOOP(loop),
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
 * An actor sender (on the other loop) is never refused: its sends past the
 * limit are accepted and it is muted. While the receiver is held, the
 * filler does not run again (a probe sent to it waits); once the receiver
 * drains, the filler runs the probe. Every message arrives once, in order,
 * and no send was refused.
 */
#define FILL_SENDS 40u

static atomic_ullong g_fill_ok;
static atomic_ullong g_fill_done;
static atomic_int g_fill_rc;
static atomic_ullong g_probe_seen;

static int filler_cb(es_actor_t *self, es_msg_t *msg)
{
    es_actor_id_t to;

    if (msg->type == MSG_PROBE) {
        atomic_fetch_add(&g_probe_seen, 1);
        return 0;
    }
    if (msg->type != MSG_FILL)
        return 0;
    to = msg->inl.u64[0];
    for (uint64_t seq = 1; seq <= FILL_SENDS; seq++) {
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

Test(mailbox, actor_sender_is_muted_not_refused, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2, .mailbox_capacity = 16};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct blocker b = {0};
    es_spawn_opts_t fo = {.behaviour = filler_cb, .loop = ES_LOOP(0)};
    es_actor_id_t id, filler;
    es_msg_t fill, probe = es_msg_make(MSG_PROBE);
    es_stats_t st;

    blocker_init(&b);
    ES_OK(es_runtime_start(rt));
    id = spawn_blocker(rt, &b, 1, 0);
    ES_OK(es_spawn(rt, &fo, &filler));
    hold_receiver(rt, id, &b);
    fill = es_msg_u64(MSG_FILL, id);
    ES_OK(es_send(rt, filler, &fill));
    ES_WAIT_GE(g_fill_done, 1);
    cr_assert_eq(atomic_load(&g_fill_rc), 0, "an actor's send failed: %d",
                 atomic_load(&g_fill_rc));
    cr_assert_eq(atomic_load(&g_fill_ok), FILL_SENDS);
    ES_OK(es_send(rt, filler, &probe));
    es_test_sleep_ms(100);
    cr_assert_eq(atomic_load(&g_probe_seen), 0,
                 "the muted filler ran while its receiver was full");
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.mutes, 1, "mutes = %llu", (unsigned long long)st.mutes);
    cr_assert_eq(st.mailbox_full, 0);
    cr_assert_eq(sem_post(&b.go), 0);
    ES_WAIT_GE(b.got, FILL_SENDS + 1);
    ES_WAIT_GE(g_probe_seen, 1);
    es_test_free(rt);
    check_blocker_after(&b, FILL_SENDS + 1);
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
    es_spawn_opts_t o = {
        .behaviour = tally_cb, .state = &t, .loop = ES_LOOP(1)};
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

/*
 * Regression test for issue 8, defect 4: es_send() answered -EAGAIN while
 * the mailbox was far from full. One receiver acknowledges every message to
 * its sender; each of ACK_SENDERS foreign threads keeps at most ACK_WINDOW
 * messages unacknowledged, so the receiver never holds more than
 * ACK_SENDERS * ACK_WINDOW (+1, the one being handled) of its 1,024 slots
 * and every send must be accepted. A sender preempted between its
 * reservation and its capacity check used to find `done` ahead of its own
 * reservation number, and the unsigned difference wrapped to "full".
 */
#define ACK_SENDERS 8
#define ACK_WINDOW 32
#define ACK_CAP 1024
#define ACK_EACH 200000ul

struct acker {
    atomic_ullong acked[ACK_SENDERS]; /* written by the receiver */
    atomic_ullong bad;                /* a message from no known sender */
};

static int acker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct acker *a = es_actor_state(self);

    if (msg->type != MSG_SEQ)
        return 0;
    if (msg->inl.u64[0] >= ACK_SENDERS)
        atomic_fetch_add(&a->bad, 1);
    else
        atomic_fetch_add(&a->acked[msg->inl.u64[0]], 1);
    return 0;
}

struct ack_sender {
    es_runtime_t *rt;
    es_actor_id_t to;
    struct acker *acker;
    unsigned index;
    unsigned long each;
    atomic_ullong refused; /* -EAGAIN answers: must stay 0 */
    atomic_ullong failed;  /* other errors, or a window that never opened */
    atomic_int finished;
};

/* Waits (bounded) until fewer than ACK_WINDOW of this sender's are unacked. */
static bool ack_window_open(struct ack_sender *s, unsigned long sent)
{
    double end = 0;

    while (sent - atomic_load(&s->acker->acked[s->index]) >= ACK_WINDOW) {
        if (end == 0)
            end = es_test_now() + ES_TEST_WAIT_S;
        else if (es_test_now() > end)
            return false;
        sched_yield();
    }
    return true;
}

static void ack_send_all(struct ack_sender *s)
{
    es_msg_t m = es_msg_make(MSG_SEQ);

    m.inl.u64[0] = s->index;
    for (unsigned long i = 0; i < s->each; i++) {
        if (!ack_window_open(s, i)) {
            atomic_fetch_add(&s->failed, 1);
            return;
        }
        m.inl.u64[1] = i;
        int rc = es_send(s->rt, s->to, &m);
        while (rc == -EAGAIN) {
            atomic_fetch_add(&s->refused, 1);
            sched_yield();
            rc = es_send(s->rt, s->to, &m);
        }
        if (rc) {
            atomic_fetch_add(&s->failed, 1);
            return;
        }
    }
}

static void *ack_sender_thread(void *arg)
{
    struct ack_sender *s = arg;

    ack_send_all(s);
    atomic_store(&s->finished, 1);
    return NULL;
}

/*
 * Preemption, injected: a thread that interrupts the senders with a signal
 * whose handler sleeps, so that a sender is taken off its CPU at arbitrary
 * instructions (the scheduler alone does it too, but rarely inside a window
 * of two instructions). The handler touches nothing but the clock.
 */
struct preempter {
    pthread_t *victims;
    unsigned n;
    atomic_int stop;
    atomic_ullong sent; /* signals sent, for the failure message */
};

static void preempt_handler(int signo)
{
    struct timespec ts = {0, 50 * 1000};

    (void)signo;
    nanosleep(&ts, NULL);
}

static void *preempter_thread(void *arg)
{
    struct preempter *p = arg;
    struct timespec ts = {0, 20 * 1000};

    for (unsigned i = 0; !atomic_load(&p->stop); i = (i + 1) % p->n) {
        if (pthread_kill(p->victims[i], SIGUSR1) == 0)
            atomic_fetch_add(&p->sent, 1);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Waits (bounded) until every sender has finished or failed. */
static void senders_wait(struct ack_sender *s, double secs)
{
    double end = es_test_now() + secs;
    unsigned done = 0;

    while (done < ACK_SENDERS && es_test_now() < end) {
        done = 0;
        for (unsigned i = 0; i < ACK_SENDERS; i++)
            done += atomic_load(&s[i].finished) != 0;
        es_test_sleep_ms(1);
    }
}

Test(mailbox, never_full_below_capacity, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_opts_t opts = {.threads = 1, .mailbox_capacity = ACK_CAP};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    static struct acker a;
    static struct ack_sender s[ACK_SENDERS];
    es_spawn_opts_t o = {.behaviour = acker_cb, .state = &a};
    pthread_t th[ACK_SENDERS], pt;
    struct preempter p = {.victims = th, .n = ACK_SENDERS};
    struct sigaction sa = {.sa_handler = preempt_handler,
                           .sa_flags = SA_RESTART};
    unsigned long each = es_test_scaled(ACK_EACH);
    unsigned long long refused = 0;
    es_actor_id_t to;

    cr_assert_gt(ACK_CAP, ACK_SENDERS * ACK_WINDOW + 1);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    ES_OK(es_runtime_start(rt));
    ES_OK(es_spawn(rt, &o, &to));
    for (unsigned i = 0; i < ACK_SENDERS; i++) {
        s[i] = (struct ack_sender){
            .rt = rt, .to = to, .acker = &a, .index = i, .each = each};
        cr_assert_eq(pthread_create(&th[i], NULL, ack_sender_thread, &s[i]), 0);
    }
    cr_assert_eq(pthread_create(&pt, NULL, preempter_thread, &p), 0);
    /* Signals go only to threads not yet joined: stop them first. */
    senders_wait(s, ES_TEST_TIMEOUT_LONG);
    atomic_store(&p.stop, 1);
    cr_assert(es_test_join(pt, NULL, ES_TEST_JOIN_S));
    for (unsigned i = 0; i < ACK_SENDERS; i++)
        cr_assert(es_test_join(th[i], NULL, ES_TEST_TIMEOUT_LONG));
    for (unsigned i = 0; i < ACK_SENDERS; i++)
        ES_WAIT_GE(a.acked[i], each);
    es_test_free(rt);
    for (unsigned i = 0; i < ACK_SENDERS; i++) {
        cr_assert_eq(atomic_load(&s[i].failed), 0, "sender %u failed", i);
        refused += atomic_load(&s[i].refused);
    }
    cr_assert_eq(atomic_load(&a.bad), 0);
    cr_assert_eq(refused, 0,
                 "%llu sends refused with at most %u of %u slots in use "
                 "(%llu preemptions injected)",
                 refused, ACK_SENDERS * ACK_WINDOW + 1, ACK_CAP,
                 (unsigned long long)atomic_load(&p.sent));
}
