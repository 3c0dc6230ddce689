/* SPDX-License-Identifier: MIT */
/*
 * The broker and the losses it causes (issue 11): the broker killed and
 * restarted on the same port mid-run is reconnected to by every node,
 * their names and topic subscriptions come back, and sends work again
 * (stats.reconnects grew); a slow consumer loses messages, each one
 * counted (lost_mailbox or lost_slow), while nothing hangs: the sender
 * never blocks and the node keeps answering.
 */
#include "cluster_fx.h"

static atomic_ullong topic_got;

static int counter_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type == CN_PUB)
        atomic_fetch_add(&topic_got, 1);
    return 0;
}

static void send_seq(struct cfx *f, const char *name, uint64_t from, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        es_msg_t m = es_msg_u64(CN_PING, from + i);

        ES_OK(es_cluster_send(f->c, name, &m));
    }
}

/* Waits until the sink has a report of every seq in [from, from + n). */
static bool sink_has(struct sink *s, uint64_t from, unsigned n, double secs)
{
    double end = es_test_now() + secs;

    for (;;) {
        unsigned missing = 0;

        for (unsigned i = 0; i < n; i++)
            missing += sink_count(s, from + i) == 0;
        if (!missing)
            return true;
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(10);
    }
}

Test(cluster_broker, restart_resubscribes, .timeout = ES_TEST_TIMEOUT)
{
    static struct sink s;
    struct cfx f;
    es_spawn_opts_t o = {.behaviour = counter_cb};
    es_actor_id_t sub;
    es_cluster_stats_t before, st;
    es_msg_t m;
    uint64_t node_reconnects;
    double end;

    /* 200 ms * 20 misses: the outage is a disconnection, not a node
     * loss. */
    cfx_start(&f, 200, 20);
    cfx_sink(&f, &s, "sink");
    cfx_node(&f, 0, "n1", 1, "echo", "svc", "sink", NULL);
    ES_OK(es_spawn(f.rt, &o, &sub));
    ES_OK(es_cluster_subscribe(f.c, "t", sub));
    send_seq(&f, "svc", 0, 10);
    cr_assert(sink_has(&s, 0, 10, ES_TEST_WAIT_S), "sends before the restart");
    es_cluster_stats(f.c, &before);

    test_nats_stop(&f.srv, true, ES_TEST_JOIN_S);
    es_test_sleep_ms(300);
    send_seq(&f, "svc", 50, 10); /* buffered: at most once */
    ES_OK(test_nats_start(&f.srv, CFX_START_S));

    end = es_test_now() + 2 * ES_TEST_WAIT_S;
    do {
        es_test_sleep_ms(20);
        es_cluster_stats(f.c, &st);
    } while (st.reconnects <= before.reconnects && es_test_now() < end);
    cr_assert_gt(st.reconnects, before.reconnects, "no reconnect");
    cr_assert_gt(st.disconnects, before.disconnects);
    /* Answered through the broker: n1 is back with its names. */
    node_reconnects =
        cfx_stat_wait(&f, "n1", CN_STAT_RECONNECTS, 1, 2 * ES_TEST_WAIT_S);
    cr_assert_geq(node_reconnects, 1);

    send_seq(&f, "svc", 100, 10);
    cr_assert(sink_has(&s, 100, 10, ES_TEST_WAIT_S),
              "sends after the restart did not all arrive");
    m = es_msg_u64(CN_PUB, 0);
    ES_OK(es_cluster_publish(f.c, "t", &m));
    ES_WAIT_GE(topic_got, 1);
    es_test_sleep_ms(100);
    cfx_fini(&f);

    for (unsigned i = 0; i < 10; i++) {
        cr_assert_eq(sink_count(&s, i), 1);
        cr_assert_leq(sink_count(&s, 50 + i), 1, "a buffered send twice");
        cr_assert_eq(sink_count(&s, 100 + i), 1);
    }
    cr_assert_eq(atomic_load(&topic_got), 1);
}

#define FLOOD 2000

Test(cluster_broker, slow_consumer_counted, .timeout = ES_TEST_TIMEOUT_LONG)
{
    struct cfx f;
    uint64_t handled = 0, lost = 0, mailbox = 0, slow = 0;
    double t0, end;

    cfx_start(&f, 0, 0);
    f.deliver_wait_ms = 1;
    /* 20 ms a message, a mailbox of CN_SLOW_MAILBOX. */
    cfx_node(&f, 0, "n1", 1, "slow", "slow", "20", NULL);
    t0 = es_test_now();
    send_seq(&f, "slow", 0, FLOOD); /* never blocks */
    cr_assert_lt(es_test_now() - t0, ES_TEST_WAIT_S, "sends blocked");

    /* Every message is handled or counted as lost, nothing hangs. */
    end = es_test_now() + 6 * ES_TEST_WAIT_S;
    while (es_test_now() < end) {
        handled = cfx_stat(&f, "n1", CN_STAT_SENDS);
        mailbox = cfx_stat(&f, "n1", CN_STAT_LOST_MAILBOX);
        slow = cfx_stat(&f, "n1", CN_STAT_LOST_SLOW);
        lost = mailbox + slow;
        if (handled + lost >= FLOOD)
            break;
        es_test_sleep_ms(100);
    }
    es_test_sleep_ms(300);
    cr_assert_eq(cfx_stat(&f, "n1", CN_STAT_SENDS), handled,
                 "handled more after all were accounted for");
    cfx_fini(&f);

    cr_assert_gt(lost, 0, "a slow consumer lost nothing: handled %llu",
                 (unsigned long long)handled);
    cr_assert_geq(handled, CN_SLOW_MAILBOX);
    cr_assert_eq(handled + lost, FLOOD,
                 "handled %llu + lost_mailbox %llu + lost_slow %llu != %d",
                 (unsigned long long)handled, (unsigned long long)mailbox,
                 (unsigned long long)slow, FLOOD);
}
