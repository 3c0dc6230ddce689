/* SPDX-License-Identifier: MIT */
/*
 * Remote monitors (issue 11): es_cluster_monitor() delivers exactly one
 * ES_MSG_DOWN when a name has no holder left, with the reason why: 0 when
 * it was unregistered, the reason its actor stopped with, -ESHUTDOWN when
 * its node left, ES_CLUSTER_NODE_LOST when its node was SIGKILLed (within
 * the documented bound heartbeat_ms * (heartbeat_misses + 1), checked with
 * generous slack), -ESRCH when nobody held it. A pool is down only when
 * its last member goes.
 */
#include "cluster_fx.h"

#include <sys/wait.h>

/* Slack over a documented detection bound: scheduling, sanitizers. */
#define SLACK_S 3.0

enum { W_WATCH = ES_MSG_USER + 0x300 };

struct watcher {
    es_cluster_t *c;
    const char *name;
    es_ref_t ref;
    atomic_int rc, reason;
    atomic_ullong watching, downs, bad;
    double down_s;
};

static int watcher_cb(es_actor_t *self, es_msg_t *msg)
{
    struct watcher *w = es_actor_state(self);

    if (msg->type == W_WATCH) {
        atomic_store(&w->rc, es_cluster_monitor(w->c, self, w->name, &w->ref));
        atomic_fetch_add(&w->watching, 1);
    } else if (msg->type == ES_MSG_DOWN) {
        if (es_msg_ref(msg) != w->ref)
            atomic_fetch_add(&w->bad, 1);
        w->down_s = es_test_now();
        atomic_store(&w->reason, es_msg_reason(msg));
        atomic_fetch_add(&w->downs, 1); /* after the fields it publishes */
    }
    return 0;
}

/* Spawns a watcher of `name` and waits until its monitor is set. */
static void watch(struct cfx *f, struct watcher *w, const char *name)
{
    es_spawn_opts_t o = {.behaviour = watcher_cb, .state = w};
    es_actor_id_t id;
    es_msg_t go = es_msg_make(W_WATCH);

    memset(w, 0, sizeof(*w));
    w->c = f->c;
    w->name = name;
    ES_OK(es_spawn(f->rt, &o, &id));
    ES_OK(es_send(f->rt, id, &go));
    ES_WAIT_GE(w->watching, 1);
    ES_OK(atomic_load(&w->rc));
}

/* Waits for the DOWN; fails unless it is the only one with `reason`. */
static void expect_down(struct watcher *w, int reason, double secs)
{
    cr_assert(es_test_wait_ge(&w->downs, 1, secs), "no DOWN in %.1f s", secs);
    es_test_sleep_ms(100); /* no second DOWN */
    cr_assert_eq(atomic_load(&w->downs), 1);
    cr_assert_eq(atomic_load(&w->bad), 0, "DOWN with another ref");
    cr_assert_eq(atomic_load(&w->reason), reason, "reason %d (%s), want %d",
                 atomic_load(&w->reason), es_strerror(atomic_load(&w->reason)),
                 reason);
}

Test(cluster_down, node_killed, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;
    const int hb = 100, misses = 4;
    double bound = hb * (misses + 1) / 1000.0, t_kill, took;
    es_cluster_stats_t st;

    cfx_start(&f, hb, misses);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    watch(&f, &w, "svc");
    es_test_sleep_ms((unsigned)(2 * bound * 1000)); /* heartbeats keep it */
    cr_assert_eq(atomic_load(&w.downs), 0, "DOWN of a live node: %d",
                 atomic_load(&w.reason));

    t_kill = es_test_now();
    test_node_stop(&f.nodes[0], true, ES_TEST_JOIN_S);
    expect_down(&w, ES_CLUSTER_NODE_LOST, bound + SLACK_S + 5.0);
    took = w.down_s - t_kill;
    es_cluster_stats(f.c, &st);
    cfx_fini(&f);

    cr_assert_leq(took, bound + SLACK_S,
                  "DOWN %.2f s after SIGKILL; bound %.2f s (+%.1f s slack)",
                  took, bound, SLACK_S);
    cr_assert_geq(st.nodes_lost, 1);
}

Test(cluster_down, unregistered, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;
    es_msg_t m = es_msg_make(CN_UNREG);

    cfx_start(&f, 0, 0);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    watch(&f, &w, "svc");
    es_test_sleep_ms(300); /* the proxy has heard that n1 holds svc */
    /* A send, not a request: the proxy may see the DOWN before a reply. */
    ES_OK(es_cluster_send(f.c, "svc", &m));
    expect_down(&w, 0, ES_TEST_WAIT_S);
    cfx_fini(&f);
}

Test(cluster_down, actor_stopped, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;
    es_msg_t m = es_msg_make(CN_CRASH);

    cfx_start(&f, 0, 0);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    watch(&f, &w, "svc");
    es_test_sleep_ms(300); /* the proxy has heard that n1 holds svc */
    ES_OK(es_cluster_send(f.c, "svc", &m));
    expect_down(&w, CN_CRASH_REASON, ES_TEST_WAIT_S);
    cfx_fini(&f);
}

Test(cluster_down, node_left, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;
    int status;

    es_cluster_stats_t st;

    /* Heartbeats every 2 s: losing n1 by silence would take 8 s, so a
     * peer that forgets it within 1.5 s heard its "bye". */
    cfx_start(&f, 2000, 4);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    watch(&f, &w, "svc");
    es_test_sleep_ms(300); /* the proxy has heard that n1 holds svc */
    for (int i = 0; i < 5000; i++) {
        es_cluster_stats(f.c, &st);
        if (st.nodes == 1)
            break;
        es_test_sleep_ms(1);
    }
    cr_assert_eq(st.nodes, 1, "n1's heartbeat never came");
    status = test_node_stop(&f.nodes[0], false, ES_TEST_JOIN_S);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "n1 did not leave cleanly: status %#x", status);
    expect_down(&w, -ESHUTDOWN, ES_TEST_WAIT_S);
    for (int i = 0; i < 1500; i++) {
        es_cluster_stats(f.c, &st);
        if (st.nodes == 0)
            break;
        es_test_sleep_ms(1);
    }
    cr_assert_eq(st.nodes, 0, "n1 is still a peer after it said bye");
    cr_assert_eq(st.nodes_lost, 0, "n1 left, it was not lost");
    cfx_fini(&f);
}

/* The holder's node leaves while the new proxy is still asking who holds
 * the name: whatever it learns first, exactly one DOWN comes (-ESHUTDOWN,
 * or -ESRCH if nobody held it by the time it asked), within the bound. */
Test(cluster_down, node_leaves_while_proxy_asks, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;
    const int hb = 100, misses = 4;
    double bound = hb * (misses + 1) / 1000.0;
    int reason;

    cfx_start(&f, hb, misses);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    watch(&f, &w, "svc");
    es_cluster_stats_t st;

    test_node_stop(&f.nodes[0], false, ES_TEST_JOIN_S);
    if (!es_test_wait_ge(&w.downs, 1, bound + SLACK_S + 5.0)) {
        es_cluster_stats(f.c, &st);
        cr_assert_fail("no DOWN at all: proxies %llu, nodes %llu, "
                       "nodes_lost %llu, bad_messages %llu",
                       (unsigned long long)st.proxies,
                       (unsigned long long)st.nodes,
                       (unsigned long long)st.nodes_lost,
                       (unsigned long long)st.bad_messages);
    }
    es_test_sleep_ms(100);
    reason = atomic_load(&w.reason);
    cfx_fini(&f);
    cr_assert_eq(atomic_load(&w.downs), 1);
    cr_assert(reason == -ESHUTDOWN || reason == -ESRCH ||
                  reason == ES_CLUSTER_NODE_LOST,
              "reason %d (%s)", reason, es_strerror(reason));
}

Test(cluster_down, never_held, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;

    cfx_start(&f, 0, 0);
    watch(&f, &w, "ghost");
    expect_down(&w, -ESRCH, ES_TEST_WAIT_S);
    cfx_fini(&f);
}

/* A local holder: answers CN_STAT, stops with -ENOTCONN on CN_CRASH. */
static int holder_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == CN_CRASH)
        return -ENOTCONN;
    if (msg->type == CN_STAT) {
        es_msg_t r = es_msg_u64(ES_MSG_USER, 0);

        es_reply(self, msg, &r);
    }
    return 0;
}

Test(cluster_down, local_holder_stops, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;
    es_spawn_opts_t o = {.behaviour = holder_cb};
    es_actor_id_t id;
    es_msg_t m = es_msg_make(CN_STAT), r;

    cfx_start(&f, 0, 0);
    ES_OK(es_spawn(f.rt, &o, &id));
    ES_OK(es_cluster_register(f.c, "loc", id));
    cfx_call_retry(&f, "loc", &m, &r);
    es_msg_release(&r);
    watch(&f, &w, "loc");
    m = es_msg_make(CN_CRASH);
    ES_OK(es_send(f.rt, id, &m));
    expect_down(&w, -ENOTCONN, ES_TEST_WAIT_S);
    cr_assert_eq(es_cluster_unregister(f.c, "loc", id), -ENOENT,
                 "a stopped actor still holds its name");
    cfx_fini(&f);
}

Test(cluster_down, pool_down_with_last_member, .timeout = ES_TEST_TIMEOUT)
{
    static struct watcher w;
    struct cfx f;
    const int hb = 100, misses = 4;
    double bound = hb * (misses + 1) / 1000.0;
    es_msg_t m = es_msg_u64(CN_PING, 5), r;

    cfx_start(&f, hb, misses);
    cfx_node(&f, 0, "n1", 1, "echo", "pool", NULL);
    cfx_node(&f, 1, "n2", 2, "echo", "pool", NULL);
    watch(&f, &w, "pool");
    test_node_stop(&f.nodes[0], true, ES_TEST_JOIN_S);
    /* n1 is lost for sure after the bound: n2 still holds the name. */
    es_test_sleep_ms((unsigned)((bound + 1.0) * 1000));
    cr_assert_eq(atomic_load(&w.downs), 0,
                 "DOWN (%d) while n2 still holds the name",
                 atomic_load(&w.reason));
    for (int i = 0; i < 5; i++) {
        ES_OK(cfx_call(&f, "pool", &m, &r, 10000));
        cr_assert_eq(r.inl.u64[1], 2, "answered by tag %llu",
                     (unsigned long long)r.inl.u64[1]);
    }
    test_node_stop(&f.nodes[1], false, ES_TEST_JOIN_S);
    expect_down(&w, -ESHUTDOWN, ES_TEST_WAIT_S);
    cfx_fini(&f);
}
