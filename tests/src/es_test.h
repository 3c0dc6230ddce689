/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the Criterion suite: monotonic time, timed waits on
 * atomic counters (so that no test can hang), sends that retry -EAGAIN with
 * a deadline, the ES_TEST_SCALE knob for stress sizes, runtime set-up and
 * tear-down bounded by timeouts, and a "probe" actor that counts its own
 * lifecycle. Behaviours run on demux threads and never call cr_assert():
 * they count what happened in C11 atomics and the test thread asserts after
 * the run, libuv style.
 */
#ifndef ES_TEST_H
#define ES_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_timedjoin_np() */
#endif

#include <criterion/criterion.h>
#include <eventserver/eventserver.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/*
 * Whether the library's ES_ASSERTs are compiled in: the condition of
 * src/internal.h (debug or sanitizer build), which the tests, built with the
 * same flags, can evaluate too. ES_TEST_ASSERT_SIGNAL is the signal a test
 * of a broken contract expects: SIGABRT, or 0 where it is skipped.
 */
#if !defined(NDEBUG) || defined(__SANITIZE_ADDRESS__) ||                       \
    defined(__SANITIZE_THREAD__) || defined(ES_TSAN)
#define ES_TEST_ASSERTS 1
#define ES_TEST_ASSERT_SIGNAL SIGABRT
#else
#define ES_TEST_ASSERTS 0
#define ES_TEST_ASSERT_SIGNAL 0
#endif

/* Criterion kills a test that runs longer than this many seconds. */
#define ES_TEST_TIMEOUT 60
/* Stress tests get longer: they may run under sanitizers. */
#define ES_TEST_TIMEOUT_LONG 300
/* How long a timed wait gives the runtime before the test fails. */
#define ES_TEST_WAIT_S 10.0
/* How long tear-down (es_runtime_free, es_runtime_wait) may take. */
#define ES_TEST_JOIN_S 30.0

/* Seconds on the monotonic clock. */
static inline double es_test_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps `ms` milliseconds, resuming after signal interruptions. */
static inline void es_test_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Polls until *v >= target or `secs` pass. Returns true if reached. */
static inline bool es_test_wait_ge(atomic_ullong *v, unsigned long long target,
                                   double secs)
{
    double end = es_test_now() + secs;
    unsigned spins = 0;

    while (atomic_load(v) < target) {
        if (es_test_now() > end)
            return false;
        if (++spins < 64)
            sched_yield();
        else
            es_test_sleep_ms(1);
    }
    return true;
}

/* Fails the test unless counter `var` reaches `target` in ES_TEST_WAIT_S. */
#define ES_WAIT_GE(var, target)                                                \
    do {                                                                       \
        unsigned long long es_t_ = (target);                                   \
        cr_assert(es_test_wait_ge(&(var), es_t_, ES_TEST_WAIT_S),              \
                  "timed out: %s is %llu, want >= %llu", #var,                 \
                  (unsigned long long)atomic_load(&(var)), es_t_);             \
    } while (0)

/* Fails the test unless `rc` is 0, naming the call and the error. */
#define ES_OK(call)                                                            \
    do {                                                                       \
        int es_rc_ = (call);                                                   \
        cr_assert_eq(es_rc_, 0, "%s = %d (%s)", #call, es_rc_,                 \
                     es_strerror(es_rc_));                                     \
    } while (0)

/*
 * Sends *msg, retrying while the runtime answers -EAGAIN, for at most `secs`
 * of continuous refusals. Returns the last result of es_send().
 */
static inline int es_test_send_retry(es_runtime_t *rt, es_actor_id_t to,
                                     const es_msg_t *msg, double secs)
{
    double end = 0;

    for (;;) {
        int rc = es_send(rt, to, msg);

        if (rc != -EAGAIN)
            return rc;
        if (end == 0)
            end = es_test_now() + secs;
        else if (es_test_now() > end)
            return rc;
        sched_yield();
    }
}

/*
 * Scales a stress size by the ES_TEST_SCALE environment variable (e.g. 0.1
 * under sanitizers), never below min(n, 1000).
 */
static inline unsigned long es_test_scaled(unsigned long n)
{
    const char *s = getenv("ES_TEST_SCALE");
    double f = s ? strtod(s, NULL) : 1.0;
    unsigned long floor = n < 1000 ? n : 1000;
    unsigned long r;

    if (!(f > 0.0))
        f = 1.0;
    r = (unsigned long)((double)n * f);
    return r < floor ? floor : r;
}

/* Creates a runtime from opts (not started); fails the test on error. */
static inline es_runtime_t *es_test_runtime_new(const es_runtime_opts_t *opts)
{
    es_runtime_t *rt = NULL;

    ES_OK(es_runtime_new(opts, &rt));
    cr_assert_not_null(rt);
    return rt;
}

/* Creates and starts a runtime with `threads` demux threads. */
static inline es_runtime_t *es_test_runtime_start(unsigned threads)
{
    es_runtime_opts_t opts = {.threads = threads};
    es_runtime_t *rt = es_test_runtime_new(&opts);

    ES_OK(es_runtime_start(rt));
    return rt;
}

/* Joins `t` within `secs`. Returns true if it was joined. */
static inline bool es_test_join(pthread_t t, void **ret, double secs)
{
    struct timespec ts;
    double whole;

    clock_gettime(CLOCK_REALTIME, &ts);
    whole = (double)ts.tv_nsec / 1e9 + secs;
    ts.tv_sec += (time_t)whole;
    ts.tv_nsec = (long)((whole - (double)(time_t)whole) * 1e9);
    return pthread_timedjoin_np(t, ret, &ts) == 0;
}

static inline void *es_test_free_thread(void *rt)
{
    es_runtime_free(rt);
    return NULL;
}

static inline void *es_test_wait_thread(void *rt)
{
    return (void *)(intptr_t)es_runtime_wait(rt);
}

/*
 * es_runtime_free() on a helper thread, failing the test instead of hanging
 * if it does not return within ES_TEST_JOIN_S.
 */
static inline void es_test_free(es_runtime_t *rt)
{
    pthread_t t;

    cr_assert_eq(pthread_create(&t, NULL, es_test_free_thread, rt), 0);
    cr_assert(es_test_join(t, NULL, ES_TEST_JOIN_S),
              "es_runtime_free() did not return in %.0f s", ES_TEST_JOIN_S);
}

/* es_runtime_wait() bounded the same way. Returns its result. */
static inline int es_test_wait(es_runtime_t *rt)
{
    pthread_t t;
    void *ret = NULL;

    cr_assert_eq(pthread_create(&t, NULL, es_test_wait_thread, rt), 0);
    cr_assert(es_test_join(t, &ret, ES_TEST_JOIN_S),
              "es_runtime_wait() did not return in %.0f s", ES_TEST_JOIN_S);
    return (int)(intptr_t)ret;
}

/*
 * A probe actor: counts its lifecycle so the test can check that START came
 * first, STOP last and state_free exactly once after it. `errors` counts
 * any message seen out of that order. The probe lives in test storage that
 * outlives the runtime; state_free only counts.
 */
struct es_test_probe {
    atomic_ullong started; /* ES_MSG_START handled */
    atomic_ullong user;    /* messages >= ES_MSG_USER handled */
    atomic_ullong stopped; /* ES_MSG_STOP handled */
    atomic_ullong freed;   /* state_free calls */
    atomic_ullong errors;  /* lifecycle order violations */
    atomic_int loop;       /* es_actor_loop_index() seen at START */
    atomic_ullong self;    /* es_actor_self() seen at START */
};

static inline int es_test_probe_cb(es_actor_t *self, es_msg_t *msg)
{
    struct es_test_probe *p = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        if (atomic_fetch_add(&p->started, 1) != 0)
            atomic_fetch_add(&p->errors, 1);
        atomic_store(&p->loop, es_actor_loop_index(self));
        atomic_store(&p->self, es_actor_self(self));
        break;
    case ES_MSG_STOP:
        if (atomic_fetch_add(&p->stopped, 1) != 0)
            atomic_fetch_add(&p->errors, 1);
        break;
    default:
        if (atomic_load(&p->started) != 1 || atomic_load(&p->stopped) != 0)
            atomic_fetch_add(&p->errors, 1);
        if (msg->type >= ES_MSG_USER)
            atomic_fetch_add(&p->user, 1);
        break;
    }
    return 0;
}

static inline void es_test_probe_free(void *state)
{
    struct es_test_probe *p = state;

    if (atomic_load(&p->freed) != 0)
        atomic_fetch_add(&p->errors, 1);
    atomic_fetch_add(&p->freed, 1);
}

/* Spawns a probe with es_spawn_opts_t.loop = `loop` (ES_LOOP(i) or
 * ES_LOOP_ANY); fails the test on error. */
static inline es_actor_id_t
es_test_spawn_probe(es_runtime_t *rt, struct es_test_probe *p, int loop)
{
    es_spawn_opts_t o = {
        .behaviour = es_test_probe_cb,
        .state = p,
        .state_free = es_test_probe_free,
        .loop = loop,
    };
    es_actor_id_t id = ES_ACTOR_NONE;

    ES_OK(es_spawn(rt, &o, &id));
    cr_assert_neq(id, ES_ACTOR_NONE);
    return id;
}

/* Counts dead letters; pass as es_runtime_opts_t.dead_letter. */
struct es_test_dead {
    atomic_ullong count;
};

static inline void es_test_dead_cb(void *arg, es_actor_id_t to, es_msg_t *msg)
{
    struct es_test_dead *d = arg;

    (void)to;
    (void)msg;
    atomic_fetch_add(&d->count, 1);
}

#endif /* ES_TEST_H */
