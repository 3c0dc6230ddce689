/* SPDX-License-Identifier: MIT */
/*
 * Monitors and links (issue 10): a watcher gets exactly one ES_MSG_DOWN per
 * monitor with the target's reason, none after es_demonitor(), -ESRCH at
 * once for a target that is gone; an abnormal stop travels along links
 * unless the peer traps exits; a watcher that stops first leaves nothing
 * behind. Each test runs with watcher and target on one thread and on two.
 */
#include "es_test.h"

enum {
    OP_MONITOR = ES_MSG_USER, /* u64[0]: target; ref -> probe.ref */
    OP_DEMONITOR,             /* u64[0]: ref; result -> probe.rc */
    OP_LINK,                  /* u64[0]: other; result -> probe.rc */
    OP_UNLINK,                /* u64[0]: other; result -> probe.rc */
    OP_TRAP,                  /* u64[0]: on */
    OP_FAIL,                  /* the behaviour returns i64[0] */
    OP_HOLD,                  /* busy until probe.release */
    OP_NOP,                   /* just counted */
    OP_PUMP,                  /* pump: the next chunk */
    OP_EXIT,                  /* es_actor_exit(self, inl.i64[0]) */
};

#define MAX_EVENTS 64

struct probe {
    atomic_ullong downs, exits, stopped, freed, done, release, holding;
    atomic_ullong ref; /* of the last OP_MONITOR */
    atomic_int loop;   /* where it ran last */
    atomic_int rc;     /* of the last OP_DEMONITOR / OP_LINK / OP_UNLINK */
    struct event {
        es_actor_id_t from;
        es_ref_t ref;
        int reason;
    } ev[MAX_EVENTS];
};

static int probe_cb(es_actor_t *self, es_msg_t *msg)
{
    struct probe *p = es_actor_state(self);
    es_ref_t ref;

    atomic_store(&p->loop, es_actor_loop_index(self));
    switch (msg->type) {
    case ES_MSG_DOWN:
    case ES_MSG_EXIT: {
        atomic_ullong *n = msg->type == ES_MSG_DOWN ? &p->downs : &p->exits;
        unsigned long long i = atomic_load(&p->downs) + atomic_load(&p->exits);
        if (i < MAX_EVENTS)
            p->ev[i] = (struct event){.from = msg->from,
                                      .ref = es_msg_ref(msg),
                                      .reason = es_msg_reason(msg)};
        atomic_fetch_add(n, 1);
        break;
    }
    case ES_MSG_STOP:
        atomic_fetch_add(&p->stopped, 1);
        break;
    case OP_MONITOR:
        if (es_monitor(self, msg->inl.u64[0], &ref) == 0)
            atomic_store(&p->ref, ref);
        break;
    case OP_DEMONITOR:
        atomic_store(&p->rc, es_demonitor(self, msg->inl.u64[0]));
        break;
    case OP_LINK:
        atomic_store(&p->rc, es_link(self, msg->inl.u64[0]));
        break;
    case OP_UNLINK:
        atomic_store(&p->rc, es_unlink(self, msg->inl.u64[0]));
        break;
    case OP_TRAP:
        es_actor_trap_exits(self, (int)msg->inl.u64[0]);
        break;
    case OP_FAIL:
        return (int)msg->inl.i64[0];
    case OP_EXIT:
        es_actor_exit(self, (int)msg->inl.i64[0]);
        break;
    case OP_HOLD:
        atomic_store(&p->holding, 1);
        while (!atomic_load(&p->release))
            es_test_sleep_ms(1);
        break;
    }
    if (msg->type >= ES_MSG_USER)
        atomic_fetch_add(&p->done, 1);
    return 0;
}

static void probe_free(void *state)
{
    atomic_fetch_add(&((struct probe *)state)->freed, 1);
}

static es_actor_id_t spawn_probe(es_runtime_t *rt, struct probe *p, int loop)
{
    es_actor_id_t id;
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = probe_cb,
                                      .state = p,
                                      .state_free = probe_free,
                                      .loop = ES_LOOP(loop)},
                   &id));
    return id;
}

/* Sends op to the probe and waits until it has handled it. */
static void op(es_runtime_t *rt, es_actor_id_t id, struct probe *p,
               uint32_t type, uint64_t arg)
{
    unsigned long long before = atomic_load(&p->done);
    es_msg_t m = es_msg_u64(type, arg);
    ES_OK(es_send(rt, id, &m));
    ES_WAIT_GE(p->done, before + 1);
}

static es_runtime_t *new_rt(unsigned threads)
{
    return es_test_runtime_new(
        &(es_runtime_opts_t){.threads = threads, .colocate = -1});
}

/* --- monitors ----------------------------------------------------------- */

static void down_with_reason(int tloop, bool fail, int want)
{
    es_runtime_t *rt = new_rt(2);
    static struct probe w, t;
    w = (struct probe){0};
    t = (struct probe){0};
    es_actor_id_t wid = spawn_probe(rt, &w, 0),
                  tid = spawn_probe(rt, &t, tloop);

    ES_OK(es_runtime_start(rt));
    op(rt, wid, &w, OP_MONITOR, tid);
    es_ref_t ref = atomic_load(&w.ref);
    cr_assert_neq(ref, 0);
    if (fail) {
        es_msg_t m = es_msg_make(OP_FAIL);
        m.inl.i64[0] = want;
        ES_OK(es_send(rt, tid, &m));
    } else {
        ES_OK(es_stop(rt, tid));
    }
    ES_WAIT_GE(w.downs, 1);
    ES_WAIT_GE(t.freed, 1);
    es_test_sleep_ms(20); /* a second DOWN would be here by now */
    cr_assert_eq(atomic_load(&w.downs), 1);
    cr_assert_eq(w.ev[0].from, tid);
    cr_assert_eq(w.ev[0].ref, ref);
    cr_assert_eq(w.ev[0].reason, want, "reason %d, want %d", w.ev[0].reason,
                 want);
    es_test_free(rt);
}

Test(monitor, down_on_stop_same_thread, .timeout = ES_TEST_TIMEOUT)
{
    down_with_reason(0, false, 0);
}

Test(monitor, down_on_stop_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    down_with_reason(1, false, 0);
}

Test(monitor, down_carries_the_behaviours_error, .timeout = ES_TEST_TIMEOUT)
{
    down_with_reason(0, true, -EIO);
    down_with_reason(1, true, -EPROTO);
}

/* es_actor_exit(): the reason reaches the monitor, and nothing is logged
 * (returning the errno logs a warning). */
static atomic_int warnings;
static void count_warnings(void *arg, es_log_level_t level, const char *line)
{
    (void)arg;
    (void)line;
    if (level >= ES_LOG_WARN)
        atomic_fetch_add(&warnings, 1);
}

static void exit_with(int want, uint32_t how)
{
    es_runtime_t *rt = new_rt(2);
    static struct probe w, t;
    w = (struct probe){0};
    t = (struct probe){0};
    es_actor_id_t wid = spawn_probe(rt, &w, 0), tid = spawn_probe(rt, &t, 1);
    ES_OK(es_runtime_start(rt));
    op(rt, wid, &w, OP_MONITOR, tid);
    atomic_store(&warnings, 0);
    es_set_log(count_warnings, NULL, ES_LOG_DEBUG);
    es_msg_t m = es_msg_make(how);
    m.inl.i64[0] = want;
    ES_OK(es_send(rt, tid, &m));
    ES_WAIT_GE(w.downs, 1);
    ES_WAIT_GE(t.freed, 1);
    es_set_log(NULL, NULL, ES_LOG_ERROR);
    cr_assert_eq(w.ev[0].reason, want, "reason %d, want %d", w.ev[0].reason,
                 want);
    cr_assert_eq(atomic_load(&warnings), how == OP_FAIL ? 1 : 0);
    es_test_free(rt);
}

Test(monitor, exit_gives_its_reason_quietly, .timeout = ES_TEST_TIMEOUT)
{
    exit_with(-EHOSTDOWN, OP_EXIT);
    exit_with(0, OP_EXIT);
    exit_with(-EPIPE, OP_FAIL); /* the control: a failing behaviour warns */
}

Test(monitor, dead_target_gives_esrch_at_once, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct probe w, t;
    w = (struct probe){0};
    t = (struct probe){0};
    es_actor_id_t wid = spawn_probe(rt, &w, 0), tid = spawn_probe(rt, &t, 1);

    ES_OK(es_runtime_start(rt));
    ES_OK(es_stop(rt, tid));
    ES_WAIT_GE(t.freed, 1);
    op(rt, wid, &w, OP_MONITOR, tid);
    ES_WAIT_GE(w.downs, 1);
    cr_assert_eq(w.ev[0].reason, -ESRCH);
    cr_assert_eq(w.ev[0].from, tid);
    cr_assert_eq(w.ev[0].ref, atomic_load(&w.ref));
    op(rt, wid, &w, OP_MONITOR, (es_actor_id_t)0x7777000000001234ull);
    ES_WAIT_GE(w.downs, 2);
    cr_assert_eq(w.ev[1].reason, -ESRCH);
    es_test_free(rt);
}

/* A DOWN queued behind a busy watcher is dropped by es_demonitor(). */
static void demonitor_drops_queued(int tloop)
{
    es_runtime_t *rt = new_rt(2);
    static struct probe w, t;
    w = (struct probe){0};
    t = (struct probe){0};
    es_actor_id_t wid = spawn_probe(rt, &w, 0),
                  tid = spawn_probe(rt, &t, tloop);
    es_msg_t hold = es_msg_make(OP_HOLD);

    ES_OK(es_runtime_start(rt));
    op(rt, wid, &w, OP_MONITOR, tid);
    es_ref_t ref = atomic_load(&w.ref);
    if (tloop == 1) {
        /* The watcher is busy while the target stops on the other thread:
         * the DOWN waits in its queue. */
        ES_OK(es_send(rt, wid, &hold));
        ES_WAIT_GE(w.holding, 1);
        ES_OK(es_stop(rt, tid));
        ES_WAIT_GE(t.freed, 1);
        es_test_sleep_ms(10);
        es_msg_t dm = es_msg_u64(OP_DEMONITOR, ref);
        ES_OK(es_send(rt, wid, &dm));
        atomic_store(&w.release, 1);
        ES_WAIT_GE(w.done, 3); /* monitor, hold, demonitor */
        es_test_sleep_ms(20);
        cr_assert_eq(atomic_load(&w.rc), 0);
        cr_assert_eq(atomic_load(&w.downs), 0, "a demonitored DOWN came");
    } else {
        /* The DOWN came first: the monitor is gone with it. */
        ES_OK(es_stop(rt, tid));
        ES_WAIT_GE(w.downs, 1);
    }
    /* Demonitoring again: it is gone. */
    op(rt, wid, &w, OP_DEMONITOR, ref);
    cr_assert_eq(atomic_load(&w.rc), -ENOENT);
    es_test_free(rt);
}

Test(monitor, demonitor_drops_a_queued_down, .timeout = ES_TEST_TIMEOUT)
{
    demonitor_drops_queued(1);
}

Test(monitor, demonitor_after_down_is_enoent, .timeout = ES_TEST_TIMEOUT)
{
    demonitor_drops_queued(0);
}

static atomic_ullong down_dead_letters;

static void count_down_letters(void *arg, es_actor_id_t to, es_msg_t *msg)
{
    (void)arg;
    (void)to;
    if (msg->type == ES_MSG_DOWN)
        atomic_fetch_add(&down_dead_letters, 1);
}

/* Many watchers on one target, one watcher on many targets; a watcher that
 * stops first is removed from its targets (no DOWN is even sent to it). */
Test(monitor, many_to_one_and_one_to_many, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){
        .threads = 2, .colocate = -1, .dead_letter = count_down_letters});
    enum { N = 16 };
    static struct probe ws[N], ts[N], gone;
    es_actor_id_t wid[N], tid[N], gid;

    atomic_store(&down_dead_letters, 0);
    gone = (struct probe){0};
    for (int i = 0; i < N; i++) {
        ws[i] = ts[i] = (struct probe){0};
        wid[i] = spawn_probe(rt, &ws[i], i % 2);
        tid[i] = spawn_probe(rt, &ts[i], (i / 2) % 2);
    }
    gid = spawn_probe(rt, &gone, 1);
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < N; i++) {
        op(rt, wid[i], &ws[i], OP_MONITOR, tid[0]); /* all on target 0 */
        op(rt, wid[0], &ws[0], OP_MONITOR, tid[i]); /* watcher 0 on all */
    }
    for (int i = 0; i < N; i++)
        op(rt, gid, &gone, OP_MONITOR, tid[i]);
    es_stats_t st;
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.monitors, 3 * N);
    ES_OK(es_stop(rt, gid));
    ES_WAIT_GE(gone.freed, 1);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.monitors, 2 * N,
                 "the stopped watcher's monitors stayed on their targets");
    for (int i = 0; i < N; i++)
        ES_OK(es_stop(rt, tid[i]));
    ES_WAIT_GE(ws[0].downs, N + 1); /* target 0 twice: two monitors */
    for (int i = 1; i < N; i++)
        ES_WAIT_GE(ws[i].downs, 1);
    es_test_sleep_ms(20);
    cr_assert_eq(atomic_load(&ws[0].downs), N + 1);
    for (int i = 1; i < N; i++)
        cr_assert_eq(atomic_load(&ws[i].downs), 1);
    cr_assert_eq(atomic_load(&down_dead_letters), 0,
                 "DOWNs went to a watcher that had stopped");
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.monitors, 0);
    cr_assert_eq(st.downs, 2 * N);
    es_test_free(rt);
}

/* Streams OP_NOPs at `to` from its own loop, 32 per call: `to` moves here
 * (co-location). */
struct pump {
    es_actor_id_t to;
    unsigned left;
};

static int pump_cb(es_actor_t *self, es_msg_t *msg)
{
    struct pump *p = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);

    if (msg->type != OP_PUMP)
        return 0;
    for (int i = 0; i < 32 && p->left; i++, p->left--) {
        es_msg_t nop = es_msg_make(OP_NOP);
        int rc = es_send(rt, p->to, &nop);
        if (rc)
            return rc;
    }
    if (!p->left)
        return 0;
    es_msg_t next = es_msg_make(OP_PUMP);
    return es_send(rt, es_actor_self(self), &next);
}

/* Dragged to the other thread with a monitor on it and holding one: the
 * target's DOWN still reaches the watcher, and the watcher's still
 * reaches it after both moved (the nodes are keyed by handle). */
Test(monitor, monitors_follow_migrations, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    static struct probe w, t, t2;
    w = t = t2 = (struct probe){0};
    struct pump to_t = {.left = 4000}, to_w = {.left = 4000};
    es_actor_id_t wid = spawn_probe(rt, &w, 0), tid = spawn_probe(rt, &t, 1),
                  t2id = spawn_probe(rt, &t2, 0), pt, pw;
    es_msg_t go = es_msg_make(OP_PUMP);

    to_t.to = tid;
    to_w.to = wid;
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &to_t,
                                      .loop = ES_LOOP(0)},
                   &pt));
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){.behaviour = pump_cb,
                                      .state = &to_w,
                                      .loop = ES_LOOP(1)},
                   &pw));
    ES_OK(es_runtime_start(rt));
    op(rt, wid, &w, OP_MONITOR, tid);
    es_ref_t ref_t = atomic_load(&w.ref);
    op(rt, tid, &t, OP_MONITOR, t2id); /* the target watches too */
    es_ref_t ref_t2 = atomic_load(&t.ref);
    ES_OK(es_send(rt, pt, &go)); /* t: loop 1 -> 0 */
    ES_WAIT_GE(t.done, 4000 + 1);
    cr_assert_eq(atomic_load(&t.loop), 0, "the target did not move");
    ES_OK(es_send(rt, pw, &go)); /* w: loop 0 -> 1 */
    ES_WAIT_GE(w.done, 4000 + 1);
    cr_assert_eq(atomic_load(&w.loop), 1, "the watcher did not move");
    es_stats_t st;
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_geq(st.migrations, 2);
    ES_OK(es_stop(rt, t2id));
    ES_WAIT_GE(t.downs, 1);
    cr_assert_eq(t.ev[0].ref, ref_t2);
    ES_OK(es_stop(rt, tid));
    ES_WAIT_GE(w.downs, 1);
    cr_assert_eq(w.ev[0].ref, ref_t);
    cr_assert_eq(w.ev[0].from, tid);
    es_test_sleep_ms(20);
    cr_assert_eq(atomic_load(&w.downs), 1);
    es_test_free(rt);
}

/* --- links --------------------------------------------------------------- */

#define CHAIN 1000

/* CHAIN actors linked in a line over two threads; actor `fail` stops with
 * `reason` (0: es_stop()). trap: the index that traps exits, or -1. Waits
 * until `expect` have stopped (or the wait times out), then a little
 * longer for any more. Returns how many stopped. */
static unsigned run_chain(int fail, int trap, int reason, unsigned expect)
{
    es_runtime_t *rt = new_rt(2);
    static struct probe p[CHAIN];
    static es_actor_id_t id[CHAIN];

    for (int i = 0; i < CHAIN; i++) {
        p[i] = (struct probe){0};
        id[i] = spawn_probe(rt, &p[i], i % 2);
    }
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i + 1 < CHAIN; i++) {
        op(rt, id[i], &p[i], OP_LINK, id[i + 1]);
        cr_assert_eq(atomic_load(&p[i].rc), 0);
    }
    es_stats_t st;
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_eq(st.links, CHAIN - 1);
    if (trap >= 0)
        op(rt, id[trap], &p[trap], OP_TRAP, 1);
    es_msg_t m = es_msg_make(OP_FAIL);
    m.inl.i64[0] = reason;
    if (reason)
        ES_OK(es_send(rt, id[fail], &m));
    else
        ES_OK(es_stop(rt, id[fail]));
    ES_WAIT_GE(p[fail].freed, 1);
    double until = es_test_now() + ES_TEST_WAIT_S;
    unsigned stopped;
    do {
        stopped = 0;
        for (int i = 0; i < CHAIN; i++)
            stopped += atomic_load(&p[i].freed) != 0;
    } while (stopped < expect && es_test_now() < until &&
             (es_test_sleep_ms(1), true));
    es_test_sleep_ms(50); /* room for one too many */
    stopped = 0;
    for (int i = 0; i < CHAIN; i++)
        stopped += atomic_load(&p[i].freed) != 0;
    if (trap >= 0) {
        cr_assert_eq(atomic_load(&p[trap].exits), 1);
        struct event e = p[trap].ev[0];
        cr_assert(e.from == id[trap - 1] || e.from == id[trap + 1]);
        cr_assert(e.reason == reason || e.reason == -ENOLINK);
    }
    es_test_free(rt);
    return stopped;
}

Test(link, abnormal_stop_stops_the_whole_chain, .timeout = ES_TEST_TIMEOUT)
{
    unsigned stopped = run_chain(CHAIN / 2, -1, -EIO, CHAIN);
    cr_assert_eq(stopped, CHAIN, "%u of %d stopped", stopped, CHAIN);
}

Test(link, normal_stop_stops_nothing_else, .timeout = ES_TEST_TIMEOUT)
{
    cr_assert_eq(run_chain(CHAIN / 2, -1, 0, 1), 1);
}

/* The trapper stops the spread on its side: actors 0 .. 9 stop (9 fails,
 * the chain carries it down to 0), 10 traps and survives, as does
 * everything past it. */
Test(link, a_trapping_actor_stops_the_spread, .timeout = ES_TEST_TIMEOUT)
{
    cr_assert_eq(run_chain(9, 10, -EIO, 10), 10);
}

Test(link, unlink_and_errors, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct probe a, b, c;
    a = b = c = (struct probe){0};
    es_actor_id_t ida = spawn_probe(rt, &a, 0), idb = spawn_probe(rt, &b, 1),
                  idc = spawn_probe(rt, &c, 1);

    ES_OK(es_runtime_start(rt));
    op(rt, ida, &a, OP_LINK, idb);
    cr_assert_eq(atomic_load(&a.rc), 0);
    op(rt, ida, &a, OP_LINK, idb); /* twice is one link */
    cr_assert_eq(atomic_load(&a.rc), 0);
    op(rt, idb, &b, OP_UNLINK, ida); /* from the other side */
    cr_assert_eq(atomic_load(&b.rc), 0);
    op(rt, ida, &a, OP_UNLINK, idb);
    cr_assert_eq(atomic_load(&a.rc), -ENOENT);
    op(rt, ida, &a, OP_LINK, ida);
    cr_assert_eq(atomic_load(&a.rc), -EINVAL);
    ES_OK(es_stop(rt, idc));
    ES_WAIT_GE(c.freed, 1);
    op(rt, ida, &a, OP_LINK, idc);
    cr_assert_eq(atomic_load(&a.rc), -ESRCH);
    es_msg_t m = es_msg_make(OP_FAIL);
    m.inl.i64[0] = -EIO;
    ES_OK(es_send(rt, idb, &m));
    ES_WAIT_GE(b.freed, 1);
    es_test_sleep_ms(50);
    cr_assert_eq(atomic_load(&a.freed), 0, "unlinked, yet stopped by b");
    es_test_free(rt);
}

/* --- a stop storm ----------------------------------------------------------
 */

#define STORM_TARGETS 10000 /* at most; es_test_scaled() under sanitizers */
#define STORM_WATCHERS 8

struct storm_watcher {
    es_actor_id_t *targets;
    unsigned ntargets, seed;
    /* per target: monitors set, demonitored, DOWNs delivered */
    uint32_t set[STORM_TARGETS], demon[STORM_TARGETS], downs[STORM_TARGETS];
    es_ref_t refs[STORM_TARGETS];
    atomic_ullong done, bad, downs_total, owed;
};

enum { STORM_GO = ES_MSG_USER + 100 };

static int storm_cb(es_actor_t *self, es_msg_t *msg)
{
    struct storm_watcher *w = es_actor_state(self);

    if (msg->type == ES_MSG_DOWN) {
        /* The targets were spawned one after another before the start,
         * into consecutive table slots: the slot gives the index. */
        unsigned k = (uint32_t)msg->from - (uint32_t)w->targets[0];
        if (k >= w->ntargets || w->targets[k] != msg->from ||
            w->refs[k] != es_msg_ref(msg) || w->demon[k]) {
            atomic_fetch_add(&w->bad, 1); /* no monitor we hold */
            return 0;
        }
        w->downs[k]++;
        w->refs[k] = 0;
        atomic_fetch_add(&w->downs_total, 1);
        return 0;
    }
    if (msg->type != STORM_GO)
        return 0;
    /* Set every monitor, then drop about a third of them. */
    for (unsigned k = 0; k < w->ntargets; k++) {
        es_ref_t r;
        if (es_monitor(self, w->targets[k], &r) != 0)
            return -ENOMEM;
        w->refs[k] = r;
        w->set[k] = 1;
    }
    for (unsigned k = 0; k < w->ntargets; k++) {
        w->seed = w->seed * 1103515245u + 12345u;
        if ((w->seed >> 16) % 3 == 0 && w->refs[k]) {
            if (es_demonitor(self, w->refs[k]) == 0) {
                w->demon[k] = 1;
                w->refs[k] = 0;
            }
        }
    }
    unsigned long long owed = 0;
    for (unsigned k = 0; k < w->ntargets; k++)
        owed += !w->demon[k];
    atomic_store(&w->owed, owed);
    atomic_store(&w->done, 1);
    return 0;
}

static int idle_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    (void)msg;
    return 0;
}

/* Watchers on 4 threads set and drop monitors while a foreign thread stops
 * the targets: each monitor not dropped gets exactly one DOWN, each dropped
 * one none. */
Test(monitor, stop_storm_exactly_once, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 4});
    static es_actor_id_t targets[STORM_TARGETS];
    static struct storm_watcher ws[STORM_WATCHERS];
    unsigned n = (unsigned)es_test_scaled(STORM_TARGETS);
    es_actor_id_t wid[STORM_WATCHERS];

    for (unsigned i = 0; i < n; i++)
        ES_OK(es_spawn(rt, &(es_spawn_opts_t){.behaviour = idle_cb},
                       &targets[i]));
    for (unsigned i = 0; i < STORM_WATCHERS; i++) {
        ws[i] = (struct storm_watcher){
            .targets = targets, .ntargets = n, .seed = i + 1};
        ES_OK(es_spawn(rt,
                       &(es_spawn_opts_t){.behaviour = storm_cb,
                                          .state = &ws[i],
                                          .loop = ES_LOOP(i % 4)},
                       &wid[i]));
    }
    ES_OK(es_runtime_start(rt));
    es_msg_t go = es_msg_make(STORM_GO);
    for (unsigned i = 0; i < STORM_WATCHERS; i++)
        ES_OK(es_send(rt, wid[i], &go));
    /* Stop targets in a scrambled order while the watchers work. */
    for (unsigned i = 0; i < n; i++) {
        unsigned k = (unsigned)(((uint64_t)i * 7919u) % n);
        int rc;
        while ((rc = es_stop(rt, targets[k])) == -EAGAIN)
            es_test_sleep_ms(1);
        cr_assert_eq(rc, 0);
    }
    for (unsigned i = 0; i < STORM_WATCHERS; i++)
        ES_WAIT_GE(ws[i].done, 1);
    /* Every DOWN owed is on its way: wait until each has come. */
    for (unsigned i = 0; i < STORM_WATCHERS; i++)
        ES_WAIT_GE(ws[i].downs_total, atomic_load(&ws[i].owed));
    es_test_sleep_ms(50); /* room for a DOWN too many */
    es_test_free(rt);     /* joins the threads: their writes are visible */
    for (unsigned i = 0; i < STORM_WATCHERS; i++) {
        cr_assert_eq(atomic_load(&ws[i].bad), 0);
        for (unsigned k = 0; k < n; k++)
            cr_assert_eq(ws[i].downs[k], ws[i].demon[k] ? 0u : 1u,
                         "watcher %u target %u: %u DOWNs, demonitored %u", i, k,
                         ws[i].downs[k], ws[i].demon[k]);
    }
}
