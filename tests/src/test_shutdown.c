/* SPDX-License-Identifier: MIT */
/*
 * Tests of shutdown and dead letters. Stopping the runtime or an actor
 * while messages are in flight must account for every accepted message
 * exactly once: delivered to a behaviour, or handed to the dead-letter hook
 * (and counted in stats.dead_letters), with pointer payloads freed exactly
 * once either way. Freeing a runtime with thousands of live actors, pending
 * timers and queued messages stops every actor once and runs every
 * state_free once; the ASan/LSan run of this file catches the bytes.
 */
#include "es_test.h"

#include <semaphore.h>

enum { MSG_DATA = ES_MSG_USER, MSG_KICK, MSG_NEIGHBOUR };

/* Accounting shared by the behaviours, the hook and the test thread. */
static atomic_ullong g_delivered; /* MSG_DATA handled by a behaviour */
static atomic_ullong g_dead;      /* MSG_DATA dead letters */
static atomic_ullong g_dead_all;  /* dead-letter hook calls */
static atomic_ullong g_dead_bad;  /* hook saw a malformed letter */
static atomic_ullong g_payload_freed;

static void payload_free(void *p)
{
    atomic_fetch_add(&g_payload_freed, 1);
    free(p);
}

/* A payload carries its own sequence number, checked on both paths. */
static es_msg_t data_msg(uint64_t seq, bool with_ptr)
{
    es_msg_t m;

    if (with_ptr) {
        uint64_t *p = malloc(sizeof(*p));

        *p = seq;
        m = es_msg_ptr(MSG_DATA, p, sizeof(*p), payload_free);
    } else {
        m = es_msg_make(MSG_DATA);
    }
    m.inl.u64[0] = seq;
    return m;
}

static bool data_ok(const es_msg_t *m)
{
    if (m->ptr != NULL)
        return m->len == sizeof(uint64_t) &&
               *(const uint64_t *)m->ptr == m->inl.u64[0];
    return m->free_cb == NULL;
}

static void dead_cb(void *arg, es_actor_id_t to, es_msg_t *msg)
{
    (void)arg;
    atomic_fetch_add(&g_dead_all, 1);
    if (msg->type == MSG_DATA)
        atomic_fetch_add(&g_dead, 1);
    if (to == ES_ACTOR_NONE || msg->to != to ||
        (msg->type == MSG_DATA && !data_ok(msg)))
        atomic_fetch_add(&g_dead_bad, 1);
}

static atomic_ullong g_data_bad;

static int data_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type == MSG_DATA) {
        if (!data_ok(msg))
            atomic_fetch_add(&g_data_bad, 1);
        atomic_fetch_add(&g_delivered, 1);
    }
    return 0;
}

static es_runtime_t *new_runtime(unsigned threads, unsigned mailbox)
{
    es_runtime_opts_t opts = {
        .threads = threads,
        .mailbox_capacity = mailbox,
        .dead_letter = dead_cb,
    };

    return es_test_runtime_new(&opts);
}

/* `payloads`: pointer payloads created, sent or refused: all freed once. */
static void check_accounting(unsigned long long sent,
                             unsigned long long payloads, const es_stats_t *st)
{
    unsigned long long d = atomic_load(&g_delivered);
    unsigned long long x = atomic_load(&g_dead);

    cr_assert_eq(d + x, sent, "delivered %llu + dead %llu != sent %llu", d, x,
                 sent);
    cr_assert_eq(atomic_load(&g_payload_freed), payloads,
                 "payloads freed %llu, want %llu",
                 (unsigned long long)atomic_load(&g_payload_freed), payloads);
    cr_assert_eq(atomic_load(&g_dead_bad), 0);
    cr_assert_eq(atomic_load(&g_data_bad), 0);
    if (st != NULL)
        cr_assert_eq(st->dead_letters, atomic_load(&g_dead_all),
                     "stats.dead_letters %llu != hook calls %llu",
                     (unsigned long long)st->dead_letters,
                     (unsigned long long)atomic_load(&g_dead_all));
}

/* A foreign thread that floods until the runtime or the actor refuses. */
struct flood {
    es_runtime_t *rt;
    es_actor_id_t to[4];
    unsigned nto;
    atomic_ullong sent;
    atomic_ullong ptr_sent;
    atomic_ullong ptr_kept; /* refused, released by the sender itself */
    atomic_ullong odd;
    atomic_int last;
};

static void *flood_thread(void *arg)
{
    struct flood *f = arg;

    for (uint64_t seq = 0; seq < 2000000; seq++) {
        es_msg_t m = data_msg(seq, (seq & 1) != 0);
        int rc = es_test_send_retry(f->rt, f->to[seq % f->nto], &m, 5.0);

        if (rc != 0) {
            if (m.ptr != NULL)
                atomic_fetch_add(&f->ptr_kept, 1);
            es_msg_release(&m); /* still ours */
            atomic_store(&f->last, rc);
            if (rc != -ESRCH && rc != -ESHUTDOWN && rc != -EAGAIN)
                atomic_fetch_add(&f->odd, 1);
            break;
        }
        atomic_fetch_add(&f->sent, 1);
        if (m.ptr != NULL)
            atomic_fetch_add(&f->ptr_sent, 1);
    }
    return NULL;
}

Test(shutdown, stop_runtime_with_messages_in_flight,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { THREADS = 3 };
    es_runtime_t *rt = new_runtime(2, 4096);
    static struct flood f[THREADS];
    pthread_t t[THREADS];
    es_actor_id_t rid[4];
    unsigned long long sent = 0, ptr_sent = 0, ptr_kept = 0;
    es_stats_t st;

    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < 4; i++) {
        es_spawn_opts_t o = {.behaviour = data_cb, .loop = ES_LOOP(i % 2)};

        ES_OK(es_spawn(rt, &o, &rid[i]));
    }
    for (int i = 0; i < THREADS; i++) {
        f[i].rt = rt;
        f[i].nto = 4;
        for (int k = 0; k < 4; k++)
            f[i].to[k] = rid[k];
        cr_assert_eq(pthread_create(&t[i], NULL, flood_thread, &f[i]), 0);
    }
    ES_WAIT_GE(g_delivered, 20000);
    ES_OK(es_runtime_stop(rt));
    for (int i = 0; i < THREADS; i++)
        cr_assert(es_test_join(t[i], NULL, ES_TEST_JOIN_S));
    ES_OK(es_test_wait(rt));
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_test_free(rt);

    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(atomic_load(&f[i].odd), 0, "sender %d ended on %d", i,
                     atomic_load(&f[i].last));
        sent += atomic_load(&f[i].sent);
        ptr_sent += atomic_load(&f[i].ptr_sent);
        ptr_kept += atomic_load(&f[i].ptr_kept);
    }
    check_accounting(sent, ptr_sent + ptr_kept, &st);
    cr_log_info("in flight at stop: sent %llu, delivered %llu, dead %llu", sent,
                (unsigned long long)atomic_load(&g_delivered),
                (unsigned long long)atomic_load(&g_dead));
}

Test(shutdown, stop_actor_with_messages_in_flight,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { THREADS = 3, ROUNDS = 5 };
    es_runtime_t *rt = new_runtime(2, 256);
    unsigned long long sent = 0, ptr_sent = 0, ptr_kept = 0;
    es_stats_t st;

    ES_OK(es_runtime_start(rt));
    for (int round = 0; round < ROUNDS; round++) {
        es_spawn_opts_t o = {.behaviour = data_cb, .loop = ES_LOOP(round % 2)};
        struct flood f[THREADS] = {0};
        pthread_t t[THREADS];
        es_actor_id_t id;
        unsigned long long before = atomic_load(&g_delivered);

        ES_OK(es_spawn(rt, &o, &id));
        for (int i = 0; i < THREADS; i++) {
            f[i].rt = rt;
            f[i].nto = 1;
            f[i].to[0] = id;
            cr_assert_eq(pthread_create(&t[i], NULL, flood_thread, &f[i]), 0);
        }
        ES_WAIT_GE(g_delivered, before + 2000);
        ES_OK(es_stop(rt, id));
        for (int i = 0; i < THREADS; i++)
            cr_assert(es_test_join(t[i], NULL, ES_TEST_JOIN_S));
        for (int i = 0; i < THREADS; i++) {
            cr_assert_eq(atomic_load(&f[i].odd), 0, "sender %d ended on %d", i,
                         atomic_load(&f[i].last));
            cr_assert_eq(atomic_load(&f[i].last), -ESRCH,
                         "a sender to a stopped actor ended on %d",
                         atomic_load(&f[i].last));
            sent += atomic_load(&f[i].sent);
            ptr_sent += atomic_load(&f[i].ptr_sent);
            ptr_kept += atomic_load(&f[i].ptr_kept);
        }
    }
    ES_OK(es_runtime_stop(rt));
    ES_OK(es_test_wait(rt));
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_test_free(rt);
    check_accounting(sent, ptr_sent + ptr_kept, &st);
}

/* A receiver held inside its first message while more queue up. */
static sem_t g_go;
static atomic_ullong g_inside;
static atomic_ullong g_stops;

static int held_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES_MSG_STOP)
        atomic_fetch_add(&g_stops, 1);
    if (msg->type == MSG_DATA && msg->inl.u64[0] == 0) {
        struct timespec ts;

        if (msg->len == 1) /* marker: stop myself */
            es_actor_stop(self);
        atomic_store(&g_inside, 1);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 20;
        while (sem_timedwait(&g_go, &ts) == -1 && errno == EINTR)
            ;
    }
    return data_cb(self, msg);
}

static void held_scenario(bool self_stop)
{
    es_runtime_t *rt = new_runtime(2, 0);
    es_spawn_opts_t o = {.behaviour = held_cb, .loop = ES_LOOP(1)};
    es_actor_id_t id;
    es_msg_t first = data_msg(0, false);
    unsigned long long sent = 1, ptr_sent = 0;
    es_stats_t st;

    cr_assert_eq(sem_init(&g_go, 0, 0), 0);
    ES_OK(es_runtime_start(rt));
    ES_OK(es_spawn(rt, &o, &id));
    first.len = self_stop ? 1 : 0;
    ES_OK(es_send(rt, id, &first));
    ES_WAIT_GE(g_inside, 1);
    for (uint64_t seq = 1; seq <= 100; seq++) {
        es_msg_t m = data_msg(seq, (seq & 1) != 0);

        ES_OK(es_send(rt, id, &m));
        sent++;
        ptr_sent += m.ptr != NULL;
    }
    if (!self_stop)
        ES_OK(es_runtime_stop(rt));
    cr_assert_eq(sem_post(&g_go), 0);
    if (self_stop) {
        ES_WAIT_GE(g_stops, 1);
        ES_OK(es_runtime_stop(rt));
    }
    ES_OK(es_test_wait(rt));
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_stops), 1);
    check_accounting(sent, ptr_sent, &st);
}

Test(shutdown, queued_behind_runtime_stop, .timeout = ES_TEST_TIMEOUT)
{
    held_scenario(false);
}

Test(shutdown, queued_behind_actor_stop, .timeout = ES_TEST_TIMEOUT)
{
    held_scenario(true);
}

Test(shutdown, free_never_started_dead_letters_all, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_runtime(2, 0);
    struct es_test_probe p[3] = {0};
    es_actor_id_t id[3];

    for (int i = 0; i < 3; i++)
        id[i] = es_test_spawn_probe(rt, &p[i], ES_LOOP(i % 2));
    for (uint64_t seq = 0; seq < 15; seq++) {
        es_msg_t m = data_msg(seq, true);

        ES_OK(es_send(rt, id[seq % 3], &m));
    }
    es_test_free(rt);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&p[i].freed), 1, "actor %d freed %llu", i,
                     (unsigned long long)atomic_load(&p[i].freed));
        cr_assert_eq(atomic_load(&p[i].user), 0);
    }
    check_accounting(15, 15, NULL);
    cr_assert_eq(atomic_load(&g_dead), 15);
}

/*
 * An actor whose spawn succeeded but whose START is still queued when the
 * runtime stops: it must get START, then STOP, then state_free (the
 * contract of es_spawn() and es_runtime_stop()). Loop 0 is held inside a
 * behaviour so that the spawn cannot be handled before the stop.
 */
static int hold_loop_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type == MSG_KICK) {
        struct timespec ts;

        atomic_store(&g_inside, 1);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 20;
        while (sem_timedwait(&g_go, &ts) == -1 && errno == EINTR)
            ;
    }
    return 0;
}

Test(shutdown, stop_before_start_handled, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_runtime(2, 0);
    es_spawn_opts_t o = {.behaviour = hold_loop_cb, .loop = ES_LOOP(0)};
    es_actor_id_t holder;
    struct es_test_probe p = {0};
    es_msg_t kick = es_msg_make(MSG_KICK);

    cr_assert_eq(sem_init(&g_go, 0, 0), 0);
    ES_OK(es_runtime_start(rt));
    ES_OK(es_spawn(rt, &o, &holder));
    ES_OK(es_send(rt, holder, &kick));
    ES_WAIT_GE(g_inside, 1);
    es_test_spawn_probe(rt, &p, ES_LOOP(0)); /* succeeds; loop 0 is busy */
    ES_OK(es_runtime_stop(rt));
    cr_assert_eq(sem_post(&g_go), 0);
    ES_OK(es_test_wait(rt));
    es_test_free(rt);
    cr_assert_eq(atomic_load(&p.freed), 1);
    cr_assert(atomic_load(&p.started) == 1 && atomic_load(&p.stopped) == 1,
              "spawned actor stopped early: START seen %llu, STOP seen %llu",
              (unsigned long long)atomic_load(&p.started),
              (unsigned long long)atomic_load(&p.stopped));
    cr_assert_eq(atomic_load(&p.errors), 0);
}

/* The hook may take a pointer payload; then the runtime must not free it. */
static atomic_ullong g_taken;

static void taking_dead_cb(void *arg, es_actor_id_t to, es_msg_t *msg)
{
    void *p;

    dead_cb(arg, to, msg);
    p = es_msg_take(msg);
    if (p != NULL) {
        atomic_fetch_add(&g_taken, 1);
        free(p);
    }
}

Test(shutdown, dead_letter_hook_can_take_payload, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 1, .dead_letter = taking_dead_cb};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct es_test_probe p = {0};
    es_actor_id_t id = es_test_spawn_probe(rt, &p, ES_LOOP(0));

    for (uint64_t seq = 0; seq < 10; seq++) {
        es_msg_t m = data_msg(seq, true);

        ES_OK(es_send(rt, id, &m));
    }
    es_test_free(rt); /* never started: all ten are dead letters */
    cr_assert_eq(atomic_load(&g_dead), 10);
    cr_assert_eq(atomic_load(&g_taken), 10);
    cr_assert_eq(atomic_load(&g_payload_freed), 0,
                 "free_cb ran on payloads the hook took");
    cr_assert_eq(atomic_load(&g_dead_bad), 0);
}

/*
 * Thousands of actors at shutdown: each has two pending timers, messages
 * queued from the test, a message in flight to its neighbour, and sends one
 * more to its neighbour (and tries to spawn) while handling STOP.
 */
#define MANY 5000

struct many {
    atomic_ullong started, stopped, freed, after_stop, timer_fired;
    atomic_int spawn_in_stop;
};

static struct many g_many[MANY];
static atomic_ullong g_many_ids[MANY];
static atomic_ullong g_accepted; /* MSG_DATA/NEIGHBOUR sends that took */
static atomic_ullong g_timer_err;

static void many_send(es_actor_t *self, size_t i)
{
    es_actor_id_t to = atomic_load(&g_many_ids[(i + 1) % MANY]);
    es_msg_t m = es_msg_u64(MSG_DATA, i);

    if (to != ES_ACTOR_NONE && es_send(es_actor_runtime(self), to, &m) == 0)
        atomic_fetch_add(&g_accepted, 1);
}

static int many_cb(es_actor_t *self, es_msg_t *msg)
{
    struct many *s = es_actor_state(self);
    size_t i = (size_t)(s - g_many);
    es_spawn_opts_t o = {.behaviour = data_cb, .loop = ES_LOOP_ANY};
    es_actor_id_t child;

    if (atomic_load(&s->stopped))
        atomic_fetch_add(&s->after_stop, 1);
    switch (msg->type) {
    case ES_MSG_START:
        atomic_fetch_add(&s->started, 1);
        if (es_timer_start(self, 3600 * 1000, 0, 1, NULL) != 0 ||
            es_timer_start(self, 10 * 1000, 10 * 1000, 2, NULL) != 0)
            atomic_fetch_add(&g_timer_err, 1);
        break;
    case ES_MSG_TIMER:
        atomic_fetch_add(&s->timer_fired, 1);
        break;
    case MSG_KICK:
        many_send(self, i);
        break;
    case ES_MSG_STOP:
        atomic_fetch_add(&s->stopped, 1);
        many_send(self, i);
        atomic_store(&s->spawn_in_stop,
                     es_spawn(es_actor_runtime(self), &o, &child));
        break;
    default:
        return data_cb(self, msg);
    }
    return 0;
}

static void many_free(void *state)
{
    struct many *s = state;

    atomic_fetch_add(&s->freed, 1);
}

Test(shutdown, free_with_thousands_of_actors, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt = new_runtime(2, 0);
    unsigned long long started = 0;
    es_stats_t st;

    ES_OK(es_runtime_start(rt));
    for (size_t i = 0; i < MANY; i++) {
        es_spawn_opts_t o = {
            .behaviour = many_cb,
            .state = &g_many[i],
            .state_free = many_free,
            .loop = ES_LOOP_ANY,
            .placement = ES_PLACE_ROUND_ROBIN,
        };
        es_actor_id_t id;
        int rc;

        while ((rc = es_spawn(rt, &o, &id)) == -EAGAIN)
            sched_yield();
        ES_OK(rc);
        atomic_store(&g_many_ids[i], id);
    }
    for (size_t i = 0; i < MANY; i++)
        ES_WAIT_GE(g_many[i].started, 1);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_geq(st.actors, MANY);
    /* Queue work everywhere, then free at once while it is in flight. */
    for (size_t i = 0; i < MANY; i++) {
        es_actor_id_t id = atomic_load(&g_many_ids[i]);
        es_msg_t kick = es_msg_make(MSG_KICK);

        for (uint64_t k = 0; k < 2; k++) {
            es_msg_t m = data_msg(k, k == 1);

            ES_OK(es_test_send_retry(rt, id, &m, ES_TEST_WAIT_S));
            atomic_fetch_add(&g_accepted, 1);
        }
        ES_OK(es_test_send_retry(rt, id, &kick, ES_TEST_WAIT_S));
    }
    es_test_free(rt);

    for (size_t i = 0; i < MANY; i++) {
        struct many *s = &g_many[i];

        started += atomic_load(&s->started);
        cr_assert_eq(atomic_load(&s->stopped), 1, "actor %zu stopped %llu", i,
                     (unsigned long long)atomic_load(&s->stopped));
        cr_assert_eq(atomic_load(&s->freed), 1, "actor %zu freed %llu", i,
                     (unsigned long long)atomic_load(&s->freed));
        cr_assert_eq(atomic_load(&s->after_stop), 0,
                     "actor %zu got a message after STOP", i);
        cr_assert_eq(atomic_load(&s->timer_fired), 0);
        cr_assert_eq(atomic_load(&s->spawn_in_stop), -ESHUTDOWN,
                     "es_spawn while stopping: %d",
                     atomic_load(&s->spawn_in_stop));
    }
    cr_assert_eq(started, MANY);
    cr_assert_eq(atomic_load(&g_timer_err), 0);
    /* MSG_DATA from the test and from neighbours; no stats after free. */
    check_accounting(atomic_load(&g_accepted), MANY, NULL);
}
