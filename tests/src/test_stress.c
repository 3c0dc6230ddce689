/* SPDX-License-Identifier: MIT */
/*
 * Stress tests: nothing is lost or reordered under load. Four foreign
 * threads push a million messages each (ES_TEST_SCALE scales it) at actors
 * on two demux threads, retrying -EAGAIN; actors flood actors on the other
 * loop; threads spawn, feed and stop short-lived actors while another
 * thread sends to their (soon stale) handles. Every count is exact: what
 * was accepted was delivered or dead-lettered, nothing else. No timing is
 * asserted. Wakeups are: every message a foreign thread commits makes one
 * wakeup decision (written or saved), and most are saved (coalesced).
 */
#include "es_test.h"

enum { MSG_SEQ = ES_MSG_USER, MSG_GO };

#define SENDERS 4
#define RECEIVERS 4
#define SENDER_BATCH 256

struct receiver {
    uint64_t next[SENDERS]; /* behaviour-only */
    atomic_ullong got;
    atomic_ullong disorder;
};

static int receiver_cb(es_actor_t *self, es_msg_t *msg)
{
    struct receiver *r = es_actor_state(self);
    uint64_t s = msg->inl.u64[0], seq = msg->inl.u64[1];

    if (msg->type != MSG_SEQ)
        return 0;
    if (s >= SENDERS || r->next[s] != seq)
        atomic_fetch_add(&r->disorder, 1);
    else
        r->next[s] = seq + 1;
    atomic_fetch_add_explicit(&r->got, 1, memory_order_relaxed);
    return 0;
}

struct fsender {
    es_runtime_t *rt;
    es_actor_id_t to[RECEIVERS];
    unsigned index;
    uint64_t count;
    atomic_ullong eagain;
    atomic_ullong failed;
};

/* Message j goes to receiver j % RECEIVERS with per-pair seq j / RECEIVERS. */
static void *fsender_thread(void *arg)
{
    struct fsender *f = arg;
    unsigned long long eagain = 0;

    for (uint64_t j = 0; j < f->count; j++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, f->index);
        double end = 0;
        int rc;

        m.inl.u64[1] = j / RECEIVERS;
        while ((rc = es_send(f->rt, f->to[j % RECEIVERS], &m)) == -EAGAIN) {
            eagain++;
            if (end == 0)
                end = es_test_now() + 60.0;
            else if ((eagain & 1023) == 0 && es_test_now() > end)
                break;
            sched_yield();
        }
        if (rc != 0) {
            atomic_fetch_add(&f->failed, 1);
            break;
        }
    }
    atomic_store(&f->eagain, eagain);
    return NULL;
}

static unsigned long long total_got(struct receiver *r)
{
    unsigned long long n = 0;

    for (int i = 0; i < RECEIVERS; i++)
        n += atomic_load(&r[i].got);
    return n;
}

/* Waits up to `secs` for all receivers to reach `want` in total. */
static bool wait_total(struct receiver *r, unsigned long long want, double secs)
{
    double end = es_test_now() + secs;

    while (total_got(r) < want) {
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(2);
    }
    return true;
}

/*
 * Wakeup coalescing. Every commit by a foreign thread (`commits`: the
 * messages plus the test thread's spawn requests) either writes a wakeup
 * or finds the loop awake or already woken and saves it. A loop that is
 * busy with a flood sleeps rarely, so most commits are saved: observed,
 * one wakeup per 20-60 messages on 2 cores. The bound asserted, one per
 * WAKEUP_RATIO_MIN, holds with a wide margin on a loaded machine: it fails
 * only if senders wake the loop for nearly every message, i.e. if the
 * `sleeping` handshake stopped coalescing. It is about counts, not speed.
 */
#define WAKEUP_RATIO_MIN 4

static void check_coalescing(const es_stats_t *st, unsigned long long commits)
{
    cr_assert_eq(st->wakeups_written + st->wakeups_saved, commits,
                 "wakeups written %llu + saved %llu != %llu commits",
                 (unsigned long long)st->wakeups_written,
                 (unsigned long long)st->wakeups_saved, commits);
    cr_assert_leq(st->wakeups_written * WAKEUP_RATIO_MIN, commits,
                  "%llu wakeups for %llu commits: fewer than %d messages "
                  "per wakeup",
                  (unsigned long long)st->wakeups_written, commits,
                  WAKEUP_RATIO_MIN);
}

Test(stress, no_loss_4_foreign_threads, .timeout = ES_TEST_TIMEOUT_LONG)
{
    const uint64_t each = es_test_scaled(1000000);
    const unsigned long long total = SENDERS * each;
    es_runtime_t *rt = es_test_runtime_start(2);
    static struct receiver r[RECEIVERS];
    static struct fsender f[SENDERS];
    pthread_t t[SENDERS];
    es_actor_id_t rid[RECEIVERS];
    unsigned long long eagain = 0;
    es_stats_t st;

    for (int i = 0; i < RECEIVERS; i++) {
        es_spawn_opts_t o = {
            .behaviour = receiver_cb, .state = &r[i], .loop = ES_LOOP(i % 2)};

        ES_OK(es_spawn(rt, &o, &rid[i]));
    }
    for (unsigned i = 0; i < SENDERS; i++) {
        f[i].rt = rt;
        f[i].index = i;
        f[i].count = each;
        for (int k = 0; k < RECEIVERS; k++)
            f[i].to[k] = rid[k];
        cr_assert_eq(pthread_create(&t[i], NULL, fsender_thread, &f[i]), 0);
    }
    for (unsigned i = 0; i < SENDERS; i++)
        cr_assert(es_test_join(t[i], NULL, 240.0), "sender %u stuck", i);
    cr_assert(wait_total(r, total, 60.0), "delivered %llu of %llu",
              total_got(r), total);
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_test_free(rt);

    for (unsigned i = 0; i < SENDERS; i++) {
        cr_assert_eq(atomic_load(&f[i].failed), 0, "sender %u failed", i);
        eagain += atomic_load(&f[i].eagain);
    }
    for (int i = 0; i < RECEIVERS; i++) {
        cr_assert_eq(atomic_load(&r[i].got), total / RECEIVERS,
                     "receiver %d got %llu of %llu", i,
                     (unsigned long long)atomic_load(&r[i].got),
                     total / RECEIVERS);
        cr_assert_eq(atomic_load(&r[i].disorder), 0);
    }
    cr_assert_geq(st.msgs_received, total);
    cr_assert_geq(st.msgs_sent, total);
    cr_assert_eq(st.dead_letters, 0);
    cr_assert_eq(st.mailbox_full, eagain,
                 "mailbox_full %llu != refusals seen %llu",
                 (unsigned long long)st.mailbox_full, eagain);
    cr_log_info("stress: %llu messages, %llu EAGAIN retries, wakeups "
                "written %llu saved %llu, sleeps %llu",
                total, eagain, (unsigned long long)st.wakeups_written,
                (unsigned long long)st.wakeups_saved,
                (unsigned long long)st.sleeps);
    check_coalescing(&st, total + RECEIVERS);
}

/* Actor senders flooding the other loop, continuing via self-sends. */
struct sender {
    es_actor_id_t to[2];
    unsigned index;
    uint64_t count;
    uint64_t j; /* behaviour-only */
    atomic_ullong odd;
    atomic_ullong done;
};

static int sender_cb(es_actor_t *self, es_msg_t *msg)
{
    struct sender *s = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);
    es_msg_t again = es_msg_make(MSG_GO);

    if (msg->type != MSG_GO && msg->type != ES_MSG_TIMER)
        return 0;
    for (int n = 0; n < SENDER_BATCH && s->j < s->count; n++) {
        es_msg_t m = es_msg_u64(MSG_SEQ, s->index);
        int rc;

        m.inl.u64[1] = s->j / 2;
        rc = es_send(rt, s->to[s->j % 2], &m);
        if (rc == -EAGAIN)
            break;
        if (rc != 0) {
            atomic_fetch_add(&s->odd, 1);
            atomic_store(&s->done, 1);
            return 0;
        }
        s->j++;
    }
    if (s->j == s->count) {
        atomic_store(&s->done, 1);
        return 0;
    }
    if (es_send(rt, es_actor_self(self), &again) != 0 &&
        es_timer_start(self, 1, 0, 0, NULL) != 0)
        atomic_fetch_add(&s->odd, 1);
    return 0;
}

Test(stress, actors_flood_other_loop, .timeout = ES_TEST_TIMEOUT_LONG)
{
    const uint64_t each = es_test_scaled(200000);
    es_runtime_t *rt = es_test_runtime_start(2);
    static struct receiver r[RECEIVERS];
    static struct sender s[SENDERS];
    es_actor_id_t rid[RECEIVERS], sid[SENDERS];

    for (int i = 0; i < RECEIVERS; i++) {
        es_spawn_opts_t o = {
            .behaviour = receiver_cb, .state = &r[i], .loop = ES_LOOP(i % 2)};

        ES_OK(es_spawn(rt, &o, &rid[i]));
    }
    /* Sender i lives on loop i % 2 and feeds the two receivers across. */
    for (unsigned i = 0; i < SENDERS; i++) {
        int loop = (int)(i % 2);
        es_spawn_opts_t o = {
            .behaviour = sender_cb, .state = &s[i], .loop = ES_LOOP(loop)};

        s[i].index = i;
        s[i].count = each;
        s[i].to[0] = rid[1 - loop];
        s[i].to[1] = rid[3 - loop];
        ES_OK(es_spawn(rt, &o, &sid[i]));
    }
    for (unsigned i = 0; i < SENDERS; i++) {
        es_msg_t m = es_msg_make(MSG_GO);

        ES_OK(es_send(rt, sid[i], &m));
    }
    cr_assert(wait_total(r, SENDERS * each, 200.0), "delivered %llu of %llu",
              total_got(r), (unsigned long long)(SENDERS * each));
    es_test_free(rt);
    for (unsigned i = 0; i < SENDERS; i++) {
        cr_assert_eq(atomic_load(&s[i].odd), 0);
        cr_assert_eq(atomic_load(&s[i].done), 1);
    }
    for (int i = 0; i < RECEIVERS; i++) {
        cr_assert_eq(atomic_load(&r[i].got), SENDERS * each / RECEIVERS);
        cr_assert_eq(atomic_load(&r[i].disorder), 0);
    }
}

/*
 * Churn: threads spawn an actor, feed it, stop it, again and again, while a
 * sniper thread sends to recently used (mostly stale) handles. Accepted
 * messages = delivered + dead-lettered, exactly; state_free = spawns.
 */
#define CHURN_THREADS 2
#define CHURN_RING 64

static atomic_ullong g_spawned, g_freed, g_delivered, g_accepted, g_dead;
static atomic_ullong g_odd;
static atomic_int g_odd_rc; /* the last unexpected result, for the report */
static atomic_ullong g_recent[CHURN_RING];
static atomic_int g_churn_done;

static int churn_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type == MSG_SEQ)
        atomic_fetch_add(&g_delivered, 1);
    return 0;
}

static void churn_free(void *state)
{
    (void)state;
    atomic_fetch_add(&g_freed, 1);
}

static void churn_dead(void *arg, es_actor_id_t to, es_msg_t *msg)
{
    (void)arg;
    (void)to;
    if (msg->type == MSG_SEQ)
        atomic_fetch_add(&g_dead, 1);
}

struct churner {
    es_runtime_t *rt;
    unsigned long rounds;
    unsigned index;
};

static void *churn_thread(void *arg)
{
    struct churner *c = arg;

    for (unsigned long k = 0; k < c->rounds; k++) {
        es_spawn_opts_t o = {.behaviour = churn_cb,
                             .state_free = churn_free,
                             .loop = ES_LOOP_ANY};
        es_actor_id_t id;
        int rc;

        /* Spawn and stop may also meet a full channel: retry those. */
        while ((rc = es_spawn(c->rt, &o, &id)) == -EAGAIN)
            sched_yield();

        if (rc != 0) {
            atomic_store(&g_odd_rc, rc);
            atomic_fetch_add(&g_odd, 1);
            continue;
        }
        atomic_fetch_add(&g_spawned, 1);
        atomic_store(&g_recent[(k * CHURN_THREADS + c->index) % CHURN_RING],
                     id);
        for (int i = 0; i < 5; i++) {
            es_msg_t m = es_msg_u64(MSG_SEQ, (uint64_t)i);

            rc = es_test_send_retry(c->rt, id, &m, 30.0);
            if (rc == 0) {
                atomic_fetch_add(&g_accepted, 1);
            } else {
                atomic_store(&g_odd_rc, rc);
                atomic_fetch_add(&g_odd, 1);
            }
        }
        while ((rc = es_stop(c->rt, id)) == -EAGAIN)
            sched_yield();
        if (rc != 0) {
            atomic_store(&g_odd_rc, rc);
            atomic_fetch_add(&g_odd, 1);
        }
    }
    return NULL;
}

static void *sniper_thread(void *arg)
{
    es_runtime_t *rt = arg;
    unsigned k = 0;

    while (!atomic_load(&g_churn_done)) {
        es_actor_id_t id = atomic_load(&g_recent[k++ % CHURN_RING]);
        es_msg_t m = es_msg_u64(MSG_SEQ, 0);
        int rc;

        if (id == ES_ACTOR_NONE)
            continue;
        rc = es_send(rt, id, &m);
        if (rc == 0)
            atomic_fetch_add(&g_accepted, 1);
        else if (rc != -ESRCH && rc != -EAGAIN) {
            atomic_store(&g_odd_rc, rc);
            atomic_fetch_add(&g_odd, 1);
        }
        if ((k & 63) == 0)
            sched_yield();
    }
    return NULL;
}

Test(stress, spawn_stop_churn_with_stale_sends, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_opts_t opts = {.threads = 2, .dead_letter = churn_dead};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    struct churner c[CHURN_THREADS];
    pthread_t t[CHURN_THREADS], sniper;
    es_stats_t st;

    ES_OK(es_runtime_start(rt));
    cr_assert_eq(pthread_create(&sniper, NULL, sniper_thread, rt), 0);
    for (unsigned i = 0; i < CHURN_THREADS; i++) {
        c[i] = (struct churner){
            .rt = rt, .rounds = es_test_scaled(5000), .index = i};
        cr_assert_eq(pthread_create(&t[i], NULL, churn_thread, &c[i]), 0);
    }
    for (unsigned i = 0; i < CHURN_THREADS; i++)
        cr_assert(es_test_join(t[i], NULL, 200.0), "churner %u stuck", i);
    atomic_store(&g_churn_done, 1);
    cr_assert(es_test_join(sniper, NULL, ES_TEST_JOIN_S));
    cr_assert(es_test_wait_ge(&g_freed, atomic_load(&g_spawned), 60.0),
              "freed %llu of %llu (unexpected results %llu, last %d)",
              (unsigned long long)atomic_load(&g_freed),
              (unsigned long long)atomic_load(&g_spawned),
              (unsigned long long)atomic_load(&g_odd), atomic_load(&g_odd_rc));
    ES_OK(es_runtime_stop(rt));
    ES_OK(es_test_wait(rt));
    ES_OK(es_runtime_stats(rt, -1, &st));
    es_runtime_free(rt);

    cr_assert_eq(atomic_load(&g_odd), 0, "%llu unexpected results, last %d",
                 (unsigned long long)atomic_load(&g_odd),
                 atomic_load(&g_odd_rc));
    cr_assert_eq(atomic_load(&g_freed), atomic_load(&g_spawned));
    cr_assert_eq(atomic_load(&g_delivered) + atomic_load(&g_dead),
                 atomic_load(&g_accepted),
                 "delivered %llu + dead %llu != accepted %llu",
                 (unsigned long long)atomic_load(&g_delivered),
                 (unsigned long long)atomic_load(&g_dead),
                 (unsigned long long)atomic_load(&g_accepted));
    cr_log_info("churn: %llu actors, %llu accepted, %llu delivered, "
                "%llu dead letters",
                (unsigned long long)atomic_load(&g_spawned),
                (unsigned long long)atomic_load(&g_accepted),
                (unsigned long long)atomic_load(&g_delivered),
                (unsigned long long)atomic_load(&g_dead));
    cr_assert_eq(st.dead_letters, atomic_load(&g_dead),
                 "stats.dead_letters %llu != hook calls %llu",
                 (unsigned long long)st.dead_letters,
                 (unsigned long long)atomic_load(&g_dead));
}
