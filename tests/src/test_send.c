/* SPDX-License-Identifier: MIT */
/*
 * Tests of es_send(): system types are refused, msg.from/msg.to are filled
 * in, messages from one sender (actor or foreign thread) to one receiver
 * arrive in the order sent while other senders interleave, foreign threads
 * that the runtime has never seen (including ones that exit while new ones
 * appear) can send, and actors on different demux threads talk to each
 * other. Receivers check sequence numbers per sender and count; the test
 * thread asserts after the run.
 */
#include "es_test.h"

enum { MSG_SEQ = ES_MSG_USER, MSG_GO, MSG_PING, MSG_FROM };

#define MAX_SENDERS 32
/* Sends an actor makes per turn before yielding its loop to others. */
#define SENDER_BATCH 256

/* Expected msg.from per sender index (ES_ACTOR_NONE for foreign threads). */
static atomic_ullong g_from[MAX_SENDERS];

/* Receives MSG_SEQ {sender, seq} and checks per-sender order. */
struct receiver {
    uint64_t next[MAX_SENDERS]; /* behaviour-only */
    atomic_ullong got;
    atomic_ullong disorder;
    atomic_ullong bad_from;
};

static int receiver_cb(es_actor_t *self, es_msg_t *msg)
{
    struct receiver *r = es_actor_state(self);
    uint64_t s = msg->inl.u64[0], seq = msg->inl.u64[1];

    if (msg->type != MSG_SEQ)
        return 0;
    if (s >= MAX_SENDERS || r->next[s] != seq)
        atomic_fetch_add(&r->disorder, 1);
    else
        r->next[s] = seq + 1;
    if (s < MAX_SENDERS && msg->from != atomic_load(&g_from[s]))
        atomic_fetch_add(&r->bad_from, 1);
    if (msg->to != es_actor_self(self))
        atomic_fetch_add(&r->bad_from, 1);
    atomic_fetch_add(&r->got, 1);
    return 0;
}

static es_actor_id_t spawn_receiver(es_runtime_t *rt, struct receiver *r,
                                    int loop)
{
    es_spawn_opts_t o = {
        .behaviour = receiver_cb, .state = r, .loop = ES_LOOP(loop)};
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    return id;
}

static void check_receiver(struct receiver *r, unsigned long long want)
{
    cr_assert_eq(atomic_load(&r->got), want, "got %llu, want %llu",
                 (unsigned long long)atomic_load(&r->got), want);
    cr_assert_eq(atomic_load(&r->disorder), 0, "%llu out of order",
                 (unsigned long long)atomic_load(&r->disorder));
    cr_assert_eq(atomic_load(&r->bad_from), 0, "%llu with wrong from/to",
                 (unsigned long long)atomic_load(&r->bad_from));
}

/*
 * An actor that sends `count` sequence numbers to each of its targets in
 * turn. It never spins inside its behaviour: on -EAGAIN, or after a batch,
 * it sends itself MSG_GO (or sets a 1 ms timer) and continues later.
 */
struct sender {
    es_actor_id_t targets[8];
    unsigned ntargets;
    unsigned index;
    uint64_t count;
    uint64_t seq;  /* behaviour-only */
    unsigned tpos; /* behaviour-only */
    atomic_ullong eagain;
    atomic_ullong odd;
    atomic_ullong done;
};

static void sender_continue(es_actor_t *self)
{
    es_msg_t go = es_msg_make(MSG_GO);

    if (es_send(es_actor_runtime(self), es_actor_self(self), &go) != 0)
        (void)es_timer_start(self, 1, 0, 0, NULL);
}

static int sender_cb(es_actor_t *self, es_msg_t *msg)
{
    struct sender *s = es_actor_state(self);

    if ((msg->type != MSG_GO && msg->type != ES_MSG_TIMER) ||
        atomic_load(&s->done))
        return 0;
    for (int n = 0; n < SENDER_BATCH; n++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, s->index);
        int rc;

        if (s->seq == s->count) {
            atomic_store(&s->done, 1);
            return 0;
        }
        m.inl.u64[1] = s->seq;
        rc = es_send(es_actor_runtime(self), s->targets[s->tpos], &m);
        if (rc == -EAGAIN) {
            atomic_fetch_add(&s->eagain, 1);
            break;
        }
        if (rc != 0) {
            atomic_fetch_add(&s->odd, 1);
            atomic_store(&s->done, 1);
            return 0;
        }
        if (++s->tpos == s->ntargets) {
            s->tpos = 0;
            s->seq++;
        }
    }
    sender_continue(self);
    return 0;
}

static es_actor_id_t spawn_sender(es_runtime_t *rt, struct sender *s, int loop)
{
    es_spawn_opts_t o = {
        .behaviour = sender_cb, .state = s, .loop = ES_LOOP(loop)};
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    atomic_store(&g_from[s->index], id);
    return id;
}

static void go(es_runtime_t *rt, es_actor_id_t id)
{
    es_msg_t m = es_msg_make(MSG_GO);

    ES_OK(es_send(rt, id, &m));
}

/* A foreign pthread doing what struct sender does, blocking on retries. */
struct fsender {
    es_runtime_t *rt;
    es_actor_id_t targets[8];
    unsigned ntargets;
    unsigned index;
    uint64_t count;
    atomic_ullong failed;
};

static void *fsender_thread(void *arg)
{
    struct fsender *f = arg;

    for (uint64_t seq = 0; seq < f->count; seq++) {
        for (unsigned t = 0; t < f->ntargets; t++) {
            es_msg_t m = es_msg_u64(MSG_SEQ, f->index);

            m.inl.u64[1] = seq;
            if (es_test_send_retry(f->rt, f->targets[t], &m, 30.0) != 0) {
                atomic_fetch_add(&f->failed, 1);
                return NULL;
            }
        }
    }
    return NULL;
}

Test(send, rejects_system_types, .timeout = ES_TEST_TIMEOUT)
{
    static const uint32_t bad[] = {
        0, ES_MSG_START,   ES_MSG_STOP, ES_MSG_TIMER, ES_MSG_SIGNAL,
        5, ES_MSG_USER - 1};
    es_runtime_t *rt = es_test_runtime_start(1);
    struct es_test_probe p = {0};
    es_actor_id_t id = es_test_spawn_probe(rt, &p, ES_LOOP(0));

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        es_msg_t m = es_msg_make(bad[i]);

        cr_assert_eq(es_send(rt, id, &m), -EINVAL, "type %u accepted", bad[i]);
    }
    es_msg_t ok = es_msg_make(ES_MSG_USER);
    ES_OK(es_send(rt, id, &ok));
    ES_WAIT_GE(p.user, 1);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&p.user), 1);
    cr_assert_eq(atomic_load(&p.stopped), 1);
    cr_assert_eq(atomic_load(&p.errors), 0);
}

Test(send, foreign_from_is_none, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct receiver r = {0};
    es_actor_id_t id = spawn_receiver(rt, &r, 1);

    atomic_store(&g_from[0], ES_ACTOR_NONE);
    for (uint64_t i = 0; i < 10; i++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, 0);

        m.inl.u64[1] = i;
        m.from = UINT64_C(0xbad); /* es_send() must overwrite it */
        ES_OK(es_send(rt, id, &m));
    }
    ES_WAIT_GE(r.got, 10);
    es_test_free(rt);
    check_receiver(&r, 10);
}

Test(send, actor_from_is_sender, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct receiver r[2] = {0};
    struct sender s[2] = {0};
    es_actor_id_t rid[2], sid[2];

    for (int i = 0; i < 2; i++)
        rid[i] = spawn_receiver(rt, &r[i], i);
    /* Sender 0 on loop 0, sender 1 on loop 1; each to both receivers. */
    for (unsigned i = 0; i < 2; i++) {
        s[i] = (struct sender){.ntargets = 2, .index = i, .count = 50};
        s[i].targets[0] = rid[0];
        s[i].targets[1] = rid[1];
        sid[i] = spawn_sender(rt, &s[i], (int)i);
    }
    for (int i = 0; i < 2; i++)
        go(rt, sid[i]);
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(r[i].got, 100);
    es_test_free(rt);
    for (int i = 0; i < 2; i++) {
        check_receiver(&r[i], 100);
        cr_assert_eq(atomic_load(&s[i].odd), 0);
    }
}

Test(send, per_pair_order_foreign_threads, .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { SENDERS = 4 };
    const uint64_t each = es_test_scaled(20000);
    es_runtime_t *rt = es_test_runtime_start(2);
    struct receiver r = {0};
    es_actor_id_t rid = spawn_receiver(rt, &r, 0);
    static struct fsender f[SENDERS];
    pthread_t t[SENDERS];

    for (unsigned i = 0; i < SENDERS; i++) {
        f[i] = (struct fsender){
            .rt = rt, .ntargets = 1, .index = i, .count = each};
        f[i].targets[0] = rid;
        atomic_store(&g_from[i], ES_ACTOR_NONE);
        cr_assert_eq(pthread_create(&t[i], NULL, fsender_thread, &f[i]), 0);
    }
    for (unsigned i = 0; i < SENDERS; i++)
        cr_assert(es_test_join(t[i], NULL, 120.0));
    ES_WAIT_GE(r.got, SENDERS * each);
    es_test_free(rt);
    for (unsigned i = 0; i < SENDERS; i++)
        cr_assert_eq(atomic_load(&f[i].failed), 0);
    check_receiver(&r, SENDERS * each);
}

Test(send, per_pair_order_mixed_senders, .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { ACTORS = 4, FOREIGN = 2 };
    const uint64_t each = es_test_scaled(20000);
    es_runtime_t *rt = es_test_runtime_start(2);
    struct receiver r = {0};
    es_actor_id_t rid = spawn_receiver(rt, &r, 0);
    static struct sender s[ACTORS];
    static struct fsender f[FOREIGN];
    es_actor_id_t sid[ACTORS];
    pthread_t t[FOREIGN];

    /* Two actor senders share the receiver's loop, two are across. */
    for (unsigned i = 0; i < ACTORS; i++) {
        s[i] = (struct sender){.ntargets = 1, .index = i, .count = each};
        s[i].targets[0] = rid;
        sid[i] = spawn_sender(rt, &s[i], (int)(i % 2));
    }
    for (unsigned i = 0; i < ACTORS; i++)
        go(rt, sid[i]);
    for (unsigned i = 0; i < FOREIGN; i++) {
        f[i] = (struct fsender){
            .rt = rt, .ntargets = 1, .index = ACTORS + i, .count = each};
        f[i].targets[0] = rid;
        atomic_store(&g_from[ACTORS + i], ES_ACTOR_NONE);
        cr_assert_eq(pthread_create(&t[i], NULL, fsender_thread, &f[i]), 0);
    }
    for (unsigned i = 0; i < FOREIGN; i++)
        cr_assert(es_test_join(t[i], NULL, 120.0));
    cr_assert(es_test_wait_ge(&r.got, (ACTORS + FOREIGN) * each, 120.0),
              "receiver got %llu of %llu",
              (unsigned long long)atomic_load(&r.got),
              (unsigned long long)((ACTORS + FOREIGN) * each));
    es_test_free(rt);
    for (unsigned i = 0; i < ACTORS; i++) {
        cr_assert_eq(atomic_load(&s[i].odd), 0);
        cr_assert_eq(atomic_load(&s[i].done), 1);
    }
    for (unsigned i = 0; i < FOREIGN; i++)
        cr_assert_eq(atomic_load(&f[i].failed), 0);
    check_receiver(&r, (ACTORS + FOREIGN) * each);
}

Test(send, cross_loop_all_pairs, .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { SENDERS = 4, RECEIVERS = 4 };
    const uint64_t each = es_test_scaled(5000);
    es_runtime_t *rt = es_test_runtime_start(2);
    static struct receiver r[RECEIVERS];
    static struct sender s[SENDERS];
    es_actor_id_t rid[RECEIVERS], sid[SENDERS];

    for (int i = 0; i < RECEIVERS; i++)
        rid[i] = spawn_receiver(rt, &r[i], i % 2);
    for (unsigned i = 0; i < SENDERS; i++) {
        s[i] =
            (struct sender){.ntargets = RECEIVERS, .index = i, .count = each};
        for (int k = 0; k < RECEIVERS; k++)
            s[i].targets[k] = rid[k];
        sid[i] = spawn_sender(rt, &s[i], (int)((i / 2) % 2));
    }
    for (unsigned i = 0; i < SENDERS; i++)
        go(rt, sid[i]);
    for (int i = 0; i < RECEIVERS; i++)
        cr_assert(es_test_wait_ge(&r[i].got, SENDERS * each, 120.0),
                  "receiver %d got %llu of %llu", i,
                  (unsigned long long)atomic_load(&r[i].got),
                  (unsigned long long)(SENDERS * each));
    es_test_free(rt);
    for (unsigned i = 0; i < SENDERS; i++)
        cr_assert_eq(atomic_load(&s[i].odd), 0);
    for (int i = 0; i < RECEIVERS; i++)
        check_receiver(&r[i], SENDERS * each);
}

/* Ping-pong between two loops: each side answers msg.from. */
struct pinger {
    uint64_t rounds;
    atomic_ullong seen;
    atomic_ullong wrong_loop;
    atomic_ullong odd;
};

static int pinger_cb(es_actor_t *self, es_msg_t *msg)
{
    struct pinger *p = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);
    es_msg_t reply;

    if (msg->type != MSG_PING)
        return 0;
    if (es_runtime_current_loop(rt) != es_actor_loop_index(self))
        atomic_fetch_add(&p->wrong_loop, 1);
    atomic_fetch_add(&p->seen, 1);
    if (msg->inl.u64[0] >= p->rounds)
        return 0;
    reply = es_msg_u64(MSG_PING, msg->inl.u64[0] + 1);
    /* Each side has at most one message in flight: no -EAGAIN. */
    if (es_send(rt, msg->from, &reply) != 0)
        atomic_fetch_add(&p->odd, 1);
    return 0;
}

static es_actor_id_t g_ping_b;
static atomic_ullong g_kicked;

static int kicker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct pinger *p = es_actor_state(self);

    if (msg->type == MSG_GO) {
        es_msg_t m = es_msg_u64(MSG_PING, 1);

        if (es_send(es_actor_runtime(self), g_ping_b, &m) != 0)
            atomic_fetch_add(&p->odd, 1);
        atomic_fetch_add(&g_kicked, 1);
        return 0;
    }
    return pinger_cb(self, msg);
}

Test(send, cross_loop_ping_pong, .timeout = ES_TEST_TIMEOUT_LONG)
{
    const uint64_t rounds = es_test_scaled(10000);
    es_runtime_t *rt = es_test_runtime_start(2);
    struct pinger a = {.rounds = rounds}, b = {.rounds = rounds};
    es_spawn_opts_t oa = {
        .behaviour = kicker_cb, .state = &a, .loop = ES_LOOP(0)};
    es_spawn_opts_t ob = {
        .behaviour = pinger_cb, .state = &b, .loop = ES_LOOP(1)};
    es_actor_id_t ida;

    ES_OK(es_spawn(rt, &ob, &g_ping_b));
    ES_OK(es_spawn(rt, &oa, &ida));
    go(rt, ida);
    cr_assert(es_test_wait_ge(&a.seen, rounds / 2, 120.0) &&
                  es_test_wait_ge(&b.seen, (rounds + 1) / 2, 120.0),
              "ping-pong stalled at a=%llu b=%llu",
              (unsigned long long)atomic_load(&a.seen),
              (unsigned long long)atomic_load(&b.seen));
    es_test_free(rt);
    /* b sees the odd numbers 1..rounds, a the even ones 2..rounds. */
    cr_assert_eq(atomic_load(&a.seen) + atomic_load(&b.seen), rounds);
    cr_assert_eq(atomic_load(&a.odd) + atomic_load(&b.odd), 0);
    cr_assert_eq(atomic_load(&a.wrong_loop) + atomic_load(&b.wrong_loop), 0);
}

Test(send, foreign_threads_come_and_go, .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { WAVES = 6, PER_WAVE = 4 };
    const uint64_t each = 1000;
    es_runtime_t *rt = es_test_runtime_start(2);
    struct receiver r[2] = {0};
    es_actor_id_t rid[2];
    static struct fsender f[WAVES * PER_WAVE];

    for (int i = 0; i < 2; i++)
        rid[i] = spawn_receiver(rt, &r[i], i);
    /*
     * Each wave's threads are new to the runtime; the previous wave's have
     * exited. Waves overlap by one: wave w starts before w-1 is joined.
     */
    pthread_t prev[PER_WAVE];
    for (unsigned w = 0; w < WAVES; w++) {
        pthread_t cur[PER_WAVE];

        for (unsigned i = 0; i < PER_WAVE; i++) {
            unsigned k = w * PER_WAVE + i;

            f[k] = (struct fsender){
                .rt = rt, .ntargets = 2, .index = k, .count = each};
            f[k].targets[0] = rid[0];
            f[k].targets[1] = rid[1];
            atomic_store(&g_from[k], ES_ACTOR_NONE);
            cr_assert_eq(pthread_create(&cur[i], NULL, fsender_thread, &f[k]),
                         0);
        }
        if (w > 0)
            for (unsigned i = 0; i < PER_WAVE; i++)
                cr_assert(es_test_join(prev[i], NULL, 60.0));
        for (unsigned i = 0; i < PER_WAVE; i++)
            prev[i] = cur[i];
    }
    for (unsigned i = 0; i < PER_WAVE; i++)
        cr_assert(es_test_join(prev[i], NULL, 60.0));
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(r[i].got, WAVES * PER_WAVE * each);
    es_test_free(rt);
    for (unsigned k = 0; k < WAVES * PER_WAVE; k++)
        cr_assert_eq(atomic_load(&f[k].failed), 0, "thread %u failed", k);
    for (int i = 0; i < 2; i++)
        check_receiver(&r[i], WAVES * PER_WAVE * each);
}

static void *spawn_and_send_thread(void *arg)
{
    struct fsender *f = arg;
    struct es_test_probe *p = calloc(1, sizeof(*p));
    es_spawn_opts_t o = {
        .behaviour = es_test_probe_cb,
        .state = p,
        .state_free = free,
        .loop = ES_LOOP_ANY,
    };
    es_actor_id_t id;

    /* A never-seen thread spawns, sends, stops, and exits. */
    if (es_spawn(f->rt, &o, &id) != 0) {
        free(p);
        atomic_fetch_add(&f->failed, 1);
        return NULL;
    }
    for (int i = 0; i < 100; i++) {
        es_msg_t m = es_msg_u64(MSG_FROM, (uint64_t)i);

        if (es_test_send_retry(f->rt, id, &m, 30.0) != 0)
            atomic_fetch_add(&f->failed, 1);
    }
    if (es_stop(f->rt, id) != 0)
        atomic_fetch_add(&f->failed, 1);
    return fsender_thread(f);
}

Test(send, short_lived_threads_spawn_and_send, .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { THREADS = 24 };
    es_runtime_t *rt = es_test_runtime_start(2);
    struct receiver r = {0};
    es_actor_id_t rid = spawn_receiver(rt, &r, 1);
    static struct fsender f[THREADS];

    /* One at a time, and each detached from the others: pure churn. */
    for (unsigned k = 0; k < THREADS; k++) {
        pthread_t t;

        f[k] =
            (struct fsender){.rt = rt, .ntargets = 1, .index = k, .count = 200};
        f[k].targets[0] = rid;
        atomic_store(&g_from[k], ES_ACTOR_NONE);
        cr_assert_eq(pthread_create(&t, NULL, spawn_and_send_thread, &f[k]), 0);
        cr_assert(es_test_join(t, NULL, 60.0));
    }
    ES_WAIT_GE(r.got, THREADS * 200);
    es_test_free(rt);
    for (unsigned k = 0; k < THREADS; k++)
        cr_assert_eq(atomic_load(&f[k].failed), 0, "thread %u failed", k);
    check_receiver(&r, THREADS * 200);
}

Test(send, queued_before_start, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct es_test_probe p[2] = {0};
    es_actor_id_t id[2];

    for (int i = 0; i < 2; i++)
        id[i] = es_test_spawn_probe(rt, &p[i], ES_LOOP(i));
    for (int n = 0; n < 50; n++) {
        for (int i = 0; i < 2; i++) {
            es_msg_t m = es_msg_u64(MSG_SEQ, (uint64_t)n);

            ES_OK(es_send(rt, id[i], &m));
        }
    }
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(p[i].user, 50);
    es_test_free(rt);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(atomic_load(&p[i].user), 50);
        cr_assert_eq(atomic_load(&p[i].errors), 0,
                     "a message overtook START or followed STOP");
        cr_assert_eq(atomic_load(&p[i].freed), 1);
    }
}
