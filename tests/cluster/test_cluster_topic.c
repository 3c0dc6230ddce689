/* SPDX-License-Identifier: MIT */
/*
 * Topics (issue 11): every message published to a topic reaches every
 * subscribed actor once, here in three processes (two cluster_node
 * processes and the test's own), with one broker subscription per
 * process and topic however many actors subscribe there; unsubscribed and
 * stopped actors get nothing more.
 */
#include "cluster_fx.h"

#include <stdlib.h>

#define NODE_SUBS 50
#define LOCAL_SUBS 20
#define PUBS 30

struct lsub {
    unsigned char seen[CN_MAX_PUBS];
    unsigned distinct;
    int probed;
};

static atomic_ullong delivered, dups, complete, probed;

static int lsub_cb(es_actor_t *self, es_msg_t *msg)
{
    struct lsub *s = es_actor_state(self);
    uint64_t seq = msg->inl.u64[0];

    if (msg->type == CN_PROBE && !s->probed) {
        s->probed = 1;
        atomic_fetch_add(&probed, 1);
    }
    if (msg->type != CN_PUB || seq >= CN_MAX_PUBS)
        return 0;
    if (s->seen[seq]++) {
        atomic_fetch_add(&dups, 1);
        return 0;
    }
    atomic_fetch_add(&delivered, 1);
    if (++s->distinct == msg->inl.u64[1])
        atomic_fetch_add(&complete, 1);
    return 0;
}

/* Spawns n local subscribers of topic on both loops; returns their ids. */
static void local_subs(struct cfx *f, const char *topic, es_actor_id_t *ids,
                       unsigned n)
{
    atomic_store(&delivered, 0);
    atomic_store(&dups, 0);
    atomic_store(&complete, 0);
    atomic_store(&probed, 0);
    for (unsigned i = 0; i < n; i++) {
        es_spawn_opts_t o = {.behaviour = lsub_cb,
                             .state = calloc(1, sizeof(struct lsub)),
                             .state_free = free,
                             .loop = ES_LOOP((int)(i % 2))};

        ES_OK(es_spawn(f->rt, &o, &ids[i]));
        ES_OK(es_cluster_subscribe(f->c, topic, ids[i]));
    }
    cr_assert_eq(es_cluster_subscribe(f->c, topic, ids[0]), -EEXIST);
}

/* Publishes probes until `want` local subscribers saw one: the broker has
 * this process's subscription. */
static void probe_until(struct cfx *f, const char *topic, unsigned want)
{
    double end = es_test_now() + ES_TEST_WAIT_S;

    while (atomic_load(&probed) < want) {
        es_msg_t p = es_msg_make(CN_PROBE);

        ES_OK(es_cluster_publish(f->c, topic, &p));
        cr_assert(es_test_now() < end, "local subscribers saw no probe");
        es_test_sleep_ms(50);
    }
}

static void publish(struct cfx *f, const char *topic, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        es_msg_t m = es_msg_u64(CN_PUB, i);

        m.inl.u64[1] = n;
        m.len = 16;
        ES_OK(es_cluster_publish(f->c, topic, &m));
    }
}

Test(cluster_topic, fanout_three_processes, .timeout = ES_TEST_TIMEOUT)
{
    static es_actor_id_t ids[LOCAL_SUBS];
    struct cfx f;
    es_cluster_stats_t st;
    const char *nodes[2] = {"n1", "n2"};
    uint64_t got[2][4];
    char nsubs[16];

    snprintf(nsubs, sizeof(nsubs), "%d", NODE_SUBS);
    cfx_start(&f, 0, 0);
    cfx_node(&f, 0, "n1", 1, "sub", "news", nsubs, NULL);
    cfx_node(&f, 1, "n2", 2, "sub", "news", nsubs, NULL);
    local_subs(&f, "news", ids, LOCAL_SUBS);
    probe_until(&f, "news", LOCAL_SUBS);
    publish(&f, "news", PUBS);

    ES_WAIT_GE(complete, LOCAL_SUBS);
    for (int k = 0; k < 2; k++)
        cfx_stat_wait(&f, nodes[k], CN_STAT_COMPLETE, NODE_SUBS,
                      ES_TEST_WAIT_S);
    es_test_sleep_ms(200); /* no duplicates arrive late */
    for (int k = 0; k < 2; k++) {
        got[k][0] = cfx_stat(&f, nodes[k], CN_STAT_COMPLETE);
        got[k][1] = cfx_stat(&f, nodes[k], CN_STAT_DELIVERED);
        got[k][2] = cfx_stat(&f, nodes[k], CN_STAT_DUPS);
        got[k][3] = cfx_stat(&f, nodes[k], CN_STAT_TOPICS);
    }
    es_cluster_stats(f.c, &st);
    cfx_fini(&f);

    cr_assert_eq(atomic_load(&complete), LOCAL_SUBS);
    cr_assert_eq(atomic_load(&delivered), LOCAL_SUBS * PUBS);
    cr_assert_eq(atomic_load(&dups), 0);
    cr_assert_eq(st.topics, 1, "%llu broker subscriptions for one topic",
                 (unsigned long long)st.topics);
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(got[k][0], NODE_SUBS, "%s: %llu complete subscribers",
                     nodes[k], (unsigned long long)got[k][0]);
        cr_assert_eq(got[k][1], NODE_SUBS * PUBS, "%s: %llu deliveries",
                     nodes[k], (unsigned long long)got[k][1]);
        cr_assert_eq(got[k][2], 0, "%s: duplicates", nodes[k]);
        cr_assert_eq(got[k][3], 1, "%s: %llu broker subscriptions", nodes[k],
                     (unsigned long long)got[k][3]);
    }
}

Test(cluster_topic, unsubscribed_and_stopped_get_nothing,
     .timeout = ES_TEST_TIMEOUT)
{
    static es_actor_id_t ids[4];
    struct cfx f;
    es_cluster_stats_t st;

    cfx_start(&f, 0, 0);
    local_subs(&f, "t", ids, 4);
    probe_until(&f, "t", 4);
    ES_OK(es_cluster_unsubscribe(f.c, "t", ids[0]));
    cr_assert_eq(es_cluster_unsubscribe(f.c, "t", ids[0]), -ENOENT);
    ES_OK(es_stop(f.rt, ids[1]));
    es_test_sleep_ms(100); /* the stop is seen */
    publish(&f, "t", 5);
    ES_WAIT_GE(complete, 2);
    es_test_sleep_ms(200);
    cr_assert_eq(atomic_load(&complete), 2);
    cr_assert_eq(atomic_load(&delivered), 2 * 5);

    /* The last local subscriber gone: no broker subscription is left. */
    ES_OK(es_cluster_unsubscribe(f.c, "t", ids[2]));
    ES_OK(es_cluster_unsubscribe(f.c, "t", ids[3]));
    for (double end = es_test_now() + ES_TEST_WAIT_S;
         es_cluster_stats(f.c, &st), st.topics != 0 && es_test_now() < end;)
        es_test_sleep_ms(10);
    cfx_fini(&f);
    cr_assert_eq(st.topics, 0, "%llu broker subscriptions left",
                 (unsigned long long)st.topics);
}
