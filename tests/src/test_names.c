/* SPDX-License-Identifier: MIT */
/*
 * Actor names (issue 10, src/names.c): es_register(), es_unregister(),
 * es_whereis(), es_send_named(); their errors; a name released when its
 * actor stops, before any monitor of it sees ES_MSG_DOWN; and registration
 * and lookup from foreign and demux threads while named actors stop.
 */
#include "es_test.h"

#include <stdio.h>
#include <string.h>

enum {
    OP_MONITOR = ES_MSG_USER, /* u64[0]: target to watch */
    OP_PING,                  /* counted */
    OP_CHURN,                 /* a demux worker's next batch */
};

static es_runtime_t *new_rt(unsigned threads)
{
    return es_test_runtime_new(
        &(es_runtime_opts_t){.threads = threads, .colocate = -1});
}

/* The k-th name of actor id: each name says which actor it may point at. */
static void name_of(char *buf, size_t size, es_actor_id_t id, unsigned k)
{
    snprintf(buf, size, "actor-%016llx-%u", (unsigned long long)id, k);
}

/* n scaled by ES_TEST_SCALE (sanitizer builds run fewer rounds), at least
 * `least`. The tests below need many rounds, not many actors, so
 * es_test_scaled()'s floor of 1000 does not suit them. */
static unsigned rounds_scaled(unsigned n, unsigned least)
{
    const char *s = getenv("ES_TEST_SCALE");
    double f = s ? strtod(s, NULL) : 1.0;
    unsigned r = f > 0.0 && f < 1.0 ? (unsigned)(n * f) : n;
    return r < least ? least : r;
}

static uint64_t names_now(es_runtime_t *rt)
{
    es_stats_t st;
    ES_OK(es_runtime_stats(rt, -1, &st));
    return st.names;
}

/* --- basics ----------------------------------------------------------------
 */

Test(names, register_whereis_unregister, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct es_test_probe a, b;
    a = (struct es_test_probe){0};
    b = (struct es_test_probe){0};
    es_actor_id_t ida = es_test_spawn_probe(rt, &a, ES_LOOP(0));
    es_actor_id_t idb = es_test_spawn_probe(rt, &b, ES_LOOP(1));
    es_actor_id_t got = ES_ACTOR_NONE;

    cr_assert_eq(es_whereis(rt, "store", &got), -ENOENT); /* no table yet */
    ES_OK(es_register(rt, "store", ida));
    ES_OK(es_register(rt, "store-alias", ida)); /* several names, one actor */
    ES_OK(es_register(rt, "cache", idb));
    ES_OK(es_runtime_start(rt));
    ES_OK(es_whereis(rt, "store", &got));
    cr_assert_eq(got, ida);
    ES_OK(es_whereis(rt, "store-alias", &got));
    cr_assert_eq(got, ida);
    ES_OK(es_whereis(rt, "cache", &got));
    cr_assert_eq(got, idb);
    cr_assert_eq(es_whereis(rt, "stor", &got), -ENOENT);
    cr_assert_eq(names_now(rt), 3);

    ES_OK(es_unregister(rt, "store"));
    cr_assert_eq(es_whereis(rt, "store", &got), -ENOENT);
    cr_assert_eq(es_unregister(rt, "store"), -ENOENT);
    ES_OK(es_whereis(rt, "store-alias", &got)); /* the other name stays */
    cr_assert_eq(got, ida);
    ES_OK(es_register(rt, "store", idb)); /* a free name can be reused */
    ES_OK(es_whereis(rt, "store", &got));
    cr_assert_eq(got, idb);
    cr_assert_eq(names_now(rt), 3);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&a.errors) + atomic_load(&b.errors), 0);
}

Test(names, send_named_reaches_the_actor, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct es_test_probe p;
    p = (struct es_test_probe){0};
    es_actor_id_t id = es_test_spawn_probe(rt, &p, ES_LOOP(1));
    es_msg_t m = es_msg_u64(OP_PING, 7);

    cr_assert_eq(es_send_named(rt, "pinger", &m), -ENOENT);
    ES_OK(es_register(rt, "pinger", id));
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < 10; i++)
        ES_OK(es_send_named(rt, "pinger", &m));
    ES_WAIT_GE(p.user, 10);
    cr_assert_eq(es_send_named(rt, "nobody", &m), -ENOENT);
    m.type = ES_MSG_START; /* es_send()'s own checks still apply */
    cr_assert_eq(es_send_named(rt, "pinger", &m), -EINVAL);
    es_test_free(rt);
}

Test(names, errors, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct es_test_probe a, b;
    a = (struct es_test_probe){0};
    b = (struct es_test_probe){0};
    es_actor_id_t ida = es_test_spawn_probe(rt, &a, ES_LOOP(0));
    es_actor_id_t idb = es_test_spawn_probe(rt, &b, ES_LOOP(1));
    char longest[ES_NAME_MAX + 2];
    es_actor_id_t got;

    ES_OK(es_runtime_start(rt));
    ES_OK(es_register(rt, "x", ida));
    cr_assert_eq(es_register(rt, "x", idb), -EEXIST);
    cr_assert_eq(es_register(rt, "x", ida), -EEXIST);
    ES_OK(es_whereis(rt, "x", &got));
    cr_assert_eq(got, ida, "a refused registration changed the name");

    cr_assert_eq(es_register(rt, NULL, ida), -EINVAL);
    cr_assert_eq(es_register(rt, "", ida), -EINVAL);
    cr_assert_eq(es_register(NULL, "y", ida), -EINVAL);
    cr_assert_eq(es_register(rt, "y", ES_ACTOR_NONE), -EINVAL);
    cr_assert_eq(es_register(rt, "y", es_runtime_loop_actor(rt, 0)), -EINVAL);
    memset(longest, 'n', sizeof(longest));
    longest[ES_NAME_MAX + 1] = '\0'; /* ES_NAME_MAX + 1 bytes */
    cr_assert_eq(es_register(rt, longest, ida), -EINVAL);
    cr_assert_eq(es_whereis(rt, longest, &got), -EINVAL);
    longest[ES_NAME_MAX] = '\0'; /* exactly ES_NAME_MAX bytes */
    ES_OK(es_register(rt, longest, ida));
    ES_OK(es_whereis(rt, longest, &got));
    cr_assert_eq(got, ida);

    cr_assert_eq(es_register(rt, "ghost", (es_actor_id_t)0x7777000000001234ull),
                 -ESRCH);
    ES_OK(es_stop(rt, idb));
    ES_WAIT_GE(b.freed, 1);
    cr_assert_eq(es_register(rt, "late", idb), -ESRCH);
    cr_assert_eq(es_whereis(rt, "late", &got), -ENOENT);

    cr_assert_eq(es_unregister(rt, "never"), -ENOENT);
    cr_assert_eq(es_unregister(rt, ""), -EINVAL);
    cr_assert_eq(es_whereis(rt, NULL, &got), -EINVAL);
    cr_assert_eq(es_whereis(rt, "x", NULL), -EINVAL);
    cr_assert_eq(names_now(rt), 2);
    es_test_free(rt);
}

/* --- release on stop -------------------------------------------------------
 */

Test(names, released_when_the_actor_stops, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct es_test_probe a, b;
    a = (struct es_test_probe){0};
    b = (struct es_test_probe){0};
    es_actor_id_t ida = es_test_spawn_probe(rt, &a, ES_LOOP(1));
    es_actor_id_t idb = es_test_spawn_probe(rt, &b, ES_LOOP(0));
    es_actor_id_t got;

    ES_OK(es_runtime_start(rt));
    ES_OK(es_register(rt, "svc", ida));
    ES_OK(es_register(rt, "svc-2", ida));
    ES_OK(es_register(rt, "other", idb));
    ES_OK(es_stop(rt, ida));
    ES_WAIT_GE(a.freed, 1);
    cr_assert_eq(es_whereis(rt, "svc", &got), -ENOENT);
    cr_assert_eq(es_whereis(rt, "svc-2", &got), -ENOENT);
    cr_assert_eq(es_unregister(rt, "svc"), -ENOENT);
    ES_OK(es_whereis(rt, "other", &got)); /* others keep theirs */
    cr_assert_eq(got, idb);
    cr_assert_eq(names_now(rt), 1);

    /* The name is free again: a restarted service takes it back. */
    ES_OK(es_register(rt, "svc", idb));
    ES_OK(es_whereis(rt, "svc", &got));
    cr_assert_eq(got, idb);
    es_test_free(rt); /* named actors stopped by the runtime: no leak */
}

/* Many names, stops and re-registrations: the table grows, fills with
 * tombstones and is rebuilt, and still answers right. */
Test(names, churn_through_rebuilds, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(1);
    enum { N = 600 };
    static struct es_test_probe p[N];
    static es_actor_id_t id[N];
    char name[64];
    es_actor_id_t got;

    memset(p, 0, sizeof(p));
    ES_OK(es_runtime_start(rt));
    int rounds = (int)rounds_scaled(3, 1);
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < N; i++) {
            p[i] = (struct es_test_probe){0};
            id[i] = es_test_spawn_probe(rt, &p[i], ES_LOOP(0));
            snprintf(name, sizeof(name), "w%d", i);
            ES_OK(es_register(rt, name, id[i]));
        }
        for (int i = 0; i < N; i++) {
            snprintf(name, sizeof(name), "w%d", i);
            ES_OK(es_whereis(rt, name, &got));
            cr_assert_eq(got, id[i]);
        }
        cr_assert_eq(names_now(rt), N);
        for (int i = 0; i < N; i++) {
            if (i % 2)
                ES_OK(es_stop(rt, id[i]));
            else {
                snprintf(name, sizeof(name), "w%d", i);
                ES_OK(es_unregister(rt, name));
            }
        }
        for (int i = 1; i < N; i += 2)
            ES_WAIT_GE(p[i].freed, 1);
        for (int i = 0; i < N; i += 2)
            ES_OK(es_stop(rt, id[i]));
        for (int i = 0; i < N; i += 2)
            ES_WAIT_GE(p[i].freed, 1);
        for (int i = 0; i < N; i++) {
            snprintf(name, sizeof(name), "w%d", i);
            cr_assert_eq(es_whereis(rt, name, &got), -ENOENT);
        }
        cr_assert_eq(names_now(rt), 0);
    }
    es_test_free(rt);
}

/* --- the ordering guarantee: released before DOWN ------------------------- */

/*
 * A watcher that gets DOWN for a named actor and then looks up its names
 * must not find them. The target has many names, released one by one: its
 * first name is the last to go, which leaves a wide window if a DOWN could
 * overtake the release. A spinner keeps the watcher's loop awake so the
 * DOWN is picked up as soon as it is sent.
 */
#define ORDER_NAMES 2000

struct watcher {
    atomic_ullong downs, found, lookups, errors, done;
};

static int watcher_cb(es_actor_t *self, es_msg_t *msg)
{
    struct watcher *w = es_actor_state(self);
    es_ref_t ref;
    char name[64];

    if (msg->type == OP_MONITOR) {
        if (es_monitor(self, msg->inl.u64[0], &ref) != 0)
            atomic_fetch_add(&w->errors, 1);
        atomic_fetch_add(&w->done, 1);
    } else if (msg->type == ES_MSG_DOWN) {
        for (unsigned k = 0; k < ORDER_NAMES; k++) {
            es_actor_id_t got;
            name_of(name, sizeof(name), msg->from, k);
            int rc = es_whereis(es_actor_runtime(self), name, &got);
            if (rc == 0 && got == msg->from)
                atomic_fetch_add(&w->found, 1);
            else if (rc != -ENOENT)
                atomic_fetch_add(&w->errors, 1);
            atomic_fetch_add(&w->lookups, 1);
        }
        atomic_fetch_add(&w->downs, 1);
    }
    return 0;
}

struct spinner {
    atomic_int stop;
    atomic_ullong spins;
};

static int spinner_cb(es_actor_t *self, es_msg_t *msg)
{
    struct spinner *s = es_actor_state(self);
    if (msg->type == ES_MSG_START || msg->type == OP_PING) {
        atomic_fetch_add(&s->spins, 1);
        if (!atomic_load(&s->stop)) {
            es_msg_t m = es_msg_make(OP_PING);
            (void)es_send(es_actor_runtime(self), es_actor_self(self), &m);
        }
    }
    return 0;
}

static void released_before_down(int tloop, unsigned rounds)
{
    es_runtime_t *rt = new_rt(2);
    static struct watcher w;
    static struct spinner s;
    static struct es_test_probe t;
    w = (struct watcher){0};
    s = (struct spinner){0};
    es_actor_id_t wid, sid;
    char name[64];

    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = watcher_cb,
                                      .state = &w,
                                      .loop = ES_LOOP(0)},
                   &wid));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = spinner_cb,
                                      .state = &s,
                                      .loop = ES_LOOP(0)},
                   &sid));
    ES_OK(es_runtime_start(rt));
    for (unsigned r = 0; r < rounds; r++) {
        t = (struct es_test_probe){0};
        es_actor_id_t tid = es_test_spawn_probe(rt, &t, ES_LOOP(tloop));
        for (unsigned k = 0; k < ORDER_NAMES; k++) {
            name_of(name, sizeof(name), tid, k);
            ES_OK(es_register(rt, name, tid));
        }
        unsigned long long before = atomic_load(&w.done);
        es_msg_t m = es_msg_u64(OP_MONITOR, tid);
        cr_assert_eq(es_test_send_retry(rt, wid, &m, ES_TEST_WAIT_S), 0);
        ES_WAIT_GE(w.done, before + 1);
        ES_OK(es_stop(rt, tid));
        ES_WAIT_GE(w.downs, r + 1);
        ES_WAIT_GE(t.freed, 1);
    }
    atomic_store(&s.stop, 1);
    cr_assert_eq(atomic_load(&w.errors), 0);
    cr_assert_eq(atomic_load(&w.lookups),
                 (unsigned long long)rounds * ORDER_NAMES);
    cr_assert_eq(atomic_load(&w.found), 0,
                 "%llu lookups after DOWN found the dead actor",
                 (unsigned long long)atomic_load(&w.found));
    cr_assert_eq(names_now(rt), 0);
    es_test_free(rt);
}

Test(names, released_before_down_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    released_before_down(1, rounds_scaled(200, 20));
}

Test(names, released_before_down_same_thread, .timeout = ES_TEST_TIMEOUT)
{
    released_before_down(0, rounds_scaled(20, 5));
}

/* --- concurrency ---------------------------------------------------------- */

/*
 * Foreign threads and an actor on each demux thread register, look up,
 * unregister and send by name, at random, on the names of a pool of
 * actors that the test thread keeps stopping and replacing. Every name
 * says which actor it may point at, so every answer can be checked; after
 * an actor's state is freed none of its names may be found or registered.
 */
#define POOL 32
#define NAMES_PER 4
#define FOREIGN 3

struct pool {
    _Atomic es_actor_id_t id[POOL];
    atomic_ullong freed[POOL];
    atomic_int stop;
    atomic_ullong ops, hits, errors;
};

static struct pool pool;

static void pool_free(void *state)
{
    atomic_fetch_add((atomic_ullong *)state, 1);
}

static int pool_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    (void)msg;
    return 0;
}

static es_actor_id_t pool_spawn(es_runtime_t *rt, unsigned slot)
{
    es_actor_id_t id;
    atomic_store(&pool.freed[slot], 0);
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pool_cb,
                                      .state = &pool.freed[slot],
                                      .state_free = pool_free,
                                      .loop = ES_LOOP(slot % 2)},
                   &id));
    return id;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One random operation; counts an error for any answer the contract
 * does not allow. */
static void random_op(es_runtime_t *rt, uint64_t *seed)
{
    uint64_t r = xorshift(seed);
    unsigned slot = (unsigned)(r % POOL), k = (unsigned)(r >> 8) % NAMES_PER;
    es_actor_id_t id = atomic_load(&pool.id[slot]), got = ES_ACTOR_NONE;
    bool shared = (r >> 16) % 8 == 0;
    char name[64];
    bool ok;
    int rc;

    if (shared)
        snprintf(name, sizeof(name), "shared-%u", k);
    else
        name_of(name, sizeof(name), id, k);
    es_msg_t m = es_msg_make(OP_PING);
    switch ((r >> 24) % 4) {
    case 0:
        rc = es_register(rt, name, id);
        ok = rc == 0 || rc == -EEXIST || rc == -ESRCH;
        break;
    case 1:
        rc = es_whereis(rt, name, &got);
        ok = rc == -ENOENT ||
             (rc == 0 && (shared ? got != ES_ACTOR_NONE : got == id));
        if (rc == 0)
            atomic_fetch_add(&pool.hits, 1);
        break;
    case 2:
        rc = es_unregister(rt, name);
        ok = rc == 0 || rc == -ENOENT;
        break;
    default:
        rc = es_send_named(rt, name, &m);
        ok = rc == 0 || rc == -ENOENT || rc == -ESRCH || rc == -EAGAIN;
        break;
    }
    if (!ok)
        atomic_fetch_add(&pool.errors, 1);
    atomic_fetch_add(&pool.ops, 1);
}

static void *foreign_main(void *arg)
{
    es_runtime_t *rt = arg;
    uint64_t seed = (uint64_t)(uintptr_t)&seed | 1;
    while (!atomic_load(&pool.stop))
        random_op(rt, &seed);
    return NULL;
}

struct churner {
    uint64_t seed;
    atomic_ullong freed;
};

static int churner_cb(es_actor_t *self, es_msg_t *msg)
{
    struct churner *c = es_actor_state(self);
    if (msg->type != ES_MSG_START && msg->type != OP_CHURN)
        return 0;
    for (int i = 0; i < 16; i++)
        random_op(es_actor_runtime(self), &c->seed);
    if (!atomic_load(&pool.stop)) {
        es_msg_t m = es_msg_make(OP_CHURN);
        (void)es_send(es_actor_runtime(self), es_actor_self(self), &m);
    }
    return 0;
}

static void churner_free(void *state)
{
    atomic_fetch_add(&((struct churner *)state)->freed, 1);
}

/* After slot's actor `old` was freed: none of its names is left, and none
 * can be added. */
static void check_gone(es_runtime_t *rt, es_actor_id_t old)
{
    char name[64];
    es_actor_id_t got;
    for (unsigned k = 0; k < NAMES_PER; k++) {
        name_of(name, sizeof(name), old, k);
        cr_assert_eq(es_whereis(rt, name, &got), -ENOENT,
                     "a name of a stopped actor is still there");
    }
    name_of(name, sizeof(name), old, 0);
    cr_assert_eq(es_register(rt, name, old), -ESRCH);
    for (unsigned k = 0; k < NAMES_PER; k++) {
        snprintf(name, sizeof(name), "shared-%u", k);
        if (es_whereis(rt, name, &got) == 0)
            cr_assert_neq(got, old, "a shared name points at a dead actor");
    }
}

Test(names, concurrent_register_lookup_while_actors_stop,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt = new_rt(2);
    static struct churner ch[2];
    pthread_t th[FOREIGN];
    unsigned rounds = rounds_scaled(400, 40);

    memset(&pool, 0, sizeof(pool));
    for (unsigned i = 0; i < POOL; i++)
        atomic_store(&pool.id[i], pool_spawn(rt, i));
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < 2; i++) {
        es_actor_id_t id;
        ch[i] = (struct churner){.seed = 0x9e3779b97f4a7c15ull * (i + 1)};
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = churner_cb,
                                          .state = &ch[i],
                                          .state_free = churner_free,
                                          .loop = ES_LOOP(i)},
                       &id));
    }
    for (int i = 0; i < FOREIGN; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, foreign_main, rt), 0);

    uint64_t seed = 12345;
    for (unsigned r = 0; r < rounds; r++) {
        unsigned slot = (unsigned)(xorshift(&seed) % POOL);
        es_actor_id_t old = atomic_load(&pool.id[slot]);
        ES_OK(es_stop(rt, old));
        ES_WAIT_GE(pool.freed[slot], 1);
        check_gone(rt, old);
        atomic_store(&pool.id[slot], pool_spawn(rt, slot));
    }
    atomic_store(&pool.stop, 1);
    for (int i = 0; i < FOREIGN; i++)
        cr_assert(es_test_join(th[i], NULL, ES_TEST_JOIN_S));
    cr_assert_eq(atomic_load(&pool.errors), 0, "%llu wrong answers",
                 (unsigned long long)atomic_load(&pool.errors));
    cr_assert_gt(atomic_load(&pool.hits), 0, "no lookup ever found a name");

    /* Everything stops: every name goes with its actor. */
    for (unsigned i = 0; i < POOL; i++)
        ES_OK(es_stop(rt, atomic_load(&pool.id[i])));
    for (unsigned i = 0; i < POOL; i++)
        ES_WAIT_GE(pool.freed[i], 1);
    es_runtime_stop(rt);
    cr_assert_eq(es_test_wait(rt), 0);
    cr_assert_eq(names_now(rt), 0);
    es_test_free(rt);
}
