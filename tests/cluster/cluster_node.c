/* SPDX-License-Identifier: MIT */
/*
 * cluster_node: the other process of a cross-process cluster test. It
 * joins a cluster, plays one role (an echo or pool member, topic
 * subscribers, a slow consumer; see cluster_node.h for the command line and
 * the messages), answers statistics requests on "ctl.<NODE>", prints
 * "ready" once the broker knows its names and subscriptions, and runs until
 * SIGTERM, when it leaves the cluster and exits 0. The test kills it with
 * SIGKILL to simulate a lost node. Behaviours count in atomics; the test
 * reads the counts through CN_STAT requests.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cluster_node.h"

#include <eventserver/cluster.h>
#include <eventserver/eventserver.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long "ready" may take: the broker, our own names, the probes. */
#define READY_S 20.0

static struct node {
    es_runtime_t *rt;
    es_cluster_t *c;
    const char *node;
    const char *name;   /* echo/slow: the registered name */
    const char *report; /* echo: where CN_GOT goes, or NULL */
    const char *topic;  /* sub */
    unsigned nsubs;     /* sub: how many subscribers */
    unsigned tag;
    unsigned slow_ms; /* slow: sleep per message */
    atomic_ullong sends, served, delivered, dups, complete, probed;
} g;

struct sub {
    unsigned char seen[CN_MAX_PUBS];
    unsigned distinct;
    int probed;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "cluster_node %s: %s: %s\n", g.node ? g.node : "?", what,
            es_strerror(rc));
    exit(2);
}

/* Tells REPORT what a CN_PING send carried. */
static void report_got(const es_msg_t *msg, const unsigned char *data)
{
    es_msg_t got = es_msg_make(CN_GOT);
    uint64_t first = 0;

    if (!g.report)
        return;
    memcpy(&first, data, msg->len < 8 ? msg->len : 8);
    got.len = 24;
    got.inl.u64[0] = first;
    got.inl.u64[1] = cn_checksum(data, msg->len);
    got.inl.u64[2] =
        cn_got_flags(g.tag, msg->ptr != NULL, msg->free_cb != NULL, msg->len);
    if (es_cluster_send(g.c, g.report, &got) != 0)
        fprintf(stderr, "cluster_node %s: CN_GOT not sent\n", g.node);
}

/* CN_PING: answers a request, counts and reports a send. */
static void ping(es_actor_t *self, es_msg_t *msg)
{
    const unsigned char *data = msg->ptr ? msg->ptr : msg->inl.bytes;
    es_msg_t r = es_msg_make(ES_MSG_USER);
    int rc;

    if (msg->ptr) {
        void *copy = malloc(msg->len ? msg->len : 1);

        if (!copy)
            return;
        memcpy(copy, msg->ptr, msg->len);
        r = es_msg_ptr(ES_MSG_USER, copy, msg->len, free);
    } else {
        r.len = 16;
        r.inl.u64[0] = msg->inl.u64[0];
        r.inl.u64[1] = g.tag;
    }
    rc = es_reply(self, msg, &r);
    if (rc == 0) {
        atomic_fetch_add(&g.served, 1);
        return;
    }
    es_msg_release(&r);
    if (rc != -EINVAL)
        return;
    atomic_fetch_add(&g.sends, 1); /* not a request: a send */
    report_got(msg, data);
}

static int echo_cb(es_actor_t *self, es_msg_t *msg)
{
    switch (msg->type) {
    case CN_PING:
        ping(self, msg);
        if (g.slow_ms)
            sleep_ms(g.slow_ms); /* a deliberately slow consumer */
        return 0;
    case CN_CRASH:
        return CN_CRASH_REASON;
    case CN_UNREG: {
        es_msg_t r = es_msg_u64(ES_MSG_USER, 0);

        r.inl.u64[0] =
            (uint64_t)es_cluster_unregister(g.c, g.name, es_actor_self(self));
        es_reply(self, msg, &r); /* -EINVAL if it was a send */
        return 0;
    }
    default: /* CN_IGNORE and the rest: no answer */
        return 0;
    }
}

static int sub_cb(es_actor_t *self, es_msg_t *msg)
{
    struct sub *s = es_actor_state(self);
    uint64_t seq = msg->inl.u64[0];

    if (msg->type == CN_PROBE && !s->probed) {
        s->probed = 1;
        atomic_fetch_add(&g.probed, 1);
    }
    if (msg->type != CN_PUB || seq >= CN_MAX_PUBS)
        return 0;
    if (s->seen[seq]++) {
        atomic_fetch_add(&g.dups, 1);
        return 0;
    }
    atomic_fetch_add(&g.delivered, 1);
    if (++s->distinct == msg->inl.u64[1])
        atomic_fetch_add(&g.complete, 1);
    return 0;
}

static uint64_t stat_value(uint64_t which)
{
    es_cluster_stats_t st;

    es_cluster_stats(g.c, &st);
    switch (which) {
    case CN_STAT_SENDS:
        return atomic_load(&g.sends);
    case CN_STAT_SERVED:
        return atomic_load(&g.served);
    case CN_STAT_DELIVERED:
        return atomic_load(&g.delivered);
    case CN_STAT_DUPS:
        return atomic_load(&g.dups);
    case CN_STAT_COMPLETE:
        return atomic_load(&g.complete);
    case CN_STAT_RECEIVED:
        return st.received;
    case CN_STAT_LOST_MAILBOX:
        return st.lost_mailbox;
    case CN_STAT_LOST_SLOW:
        return st.lost_slow;
    case CN_STAT_RECONNECTS:
        return st.reconnects;
    case CN_STAT_TOPICS:
        return st.topics;
    }
    return UINT64_MAX;
}

static int ctl_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == CN_STAT) {
        es_msg_t r = es_msg_u64(ES_MSG_USER, stat_value(msg->inl.u64[0]));

        es_reply(self, msg, &r);
    }
    return 0;
}

static es_actor_id_t spawn_on(int loop, es_behaviour_cb cb, void *state,
                              es_state_free_cb state_free, unsigned mailbox)
{
    es_spawn_opts_t o = {.behaviour = cb,
                         .state = state,
                         .state_free = state_free,
                         .loop = loop,
                         .mailbox_capacity = mailbox};
    es_actor_id_t id = ES_ACTOR_NONE;
    int rc = es_spawn(g.rt, &o, &id);

    if (rc != 0)
        die("es_spawn", rc);
    return id;
}

static void setup_role(const char *role, int argc, char **argv)
{
    int rc;

    if (!strcmp(role, "echo") && argc >= 1) {
        g.name = argv[0];
        g.report = argc >= 2 ? argv[1] : NULL;
        rc = es_cluster_register(g.c, g.name,
                                 spawn_on(ES_LOOP(0), echo_cb, NULL, NULL, 0));
    } else if (!strcmp(role, "slow") && argc >= 2) {
        g.name = argv[0];
        g.slow_ms = (unsigned)atoi(argv[1]);
        rc = es_cluster_register(
            g.c, g.name,
            spawn_on(ES_LOOP(0), echo_cb, NULL, NULL, CN_SLOW_MAILBOX));
    } else if (!strcmp(role, "sub") && argc >= 2) {
        g.topic = argv[0];
        g.nsubs = (unsigned)atoi(argv[1]);
        rc = 0;
        for (unsigned i = 0; i < g.nsubs && rc == 0; i++) {
            struct sub *s = calloc(1, sizeof(*s));

            if (!s)
                die("calloc", -ENOMEM);
            rc = es_cluster_subscribe(
                g.c, g.topic,
                spawn_on(ES_LOOP((int)(i % 2)), sub_cb, s, free, 0));
        }
    } else {
        fprintf(stderr, "cluster_node: unknown role or missing args: %s\n",
                role);
        exit(2);
    }
    if (rc != 0)
        die(role, rc);
}

/* Waits until a request to our own control actor makes the round trip
 * through the broker: every name registered before it is known there. */
static void wait_own_names(const char *ctl, double end)
{
    for (;;) {
        es_actor_id_t proxy;
        es_msg_t q = es_msg_u64(CN_STAT, CN_STAT_SENDS), r;
        int rc = es_cluster_lookup(g.c, ctl, &proxy);

        if (rc == 0)
            rc = es_call(g.rt, proxy, &q, &r, 1000);
        if (rc == 0) {
            es_msg_release(&r);
            return;
        }
        if (now_s() > end)
            die("no answer from our own ctl actor", rc);
        sleep_ms(20);
    }
}

/* Publishes probes until each of our subscribers has seen one: the
 * broker has our topic subscription. */
static void wait_own_topic(double end)
{
    while (atomic_load(&g.probed) < g.nsubs) {
        es_msg_t p = es_msg_make(CN_PROBE);
        int rc = es_cluster_publish(g.c, g.topic, &p);

        if (now_s() > end)
            die("our subscribers never saw a probe", rc ? rc : -ETIMEDOUT);
        sleep_ms(50);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: cluster_node [-b HB_MS] [-m MISSES] [-w WAIT_MS] "
                    "[-t TAG] URL CLUSTER NODE ROLE ARGS...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    es_cluster_opts_t co = {.servers_count = 1};
    es_runtime_opts_t ro = {.threads = 2, .colocate = -1, .shed = -1};
    const char *url;
    char ctl[ES_CLUSTER_NAME_MAX + 1];
    sigset_t set;
    int opt, sig, rc;

    while ((opt = getopt(argc, argv, "+b:m:w:t:")) != -1) {
        switch (opt) {
        case 'b':
            co.heartbeat_ms = atoi(optarg);
            break;
        case 'm':
            co.heartbeat_misses = atoi(optarg);
            break;
        case 'w':
            co.deliver_wait_ms = atoi(optarg);
            break;
        case 't':
            g.tag = (unsigned)atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (argc - optind < 4)
        usage();
    url = argv[optind];
    co.servers = &url;
    co.cluster = argv[optind + 1];
    co.node = g.node = argv[optind + 2];
    snprintf(ctl, sizeof(ctl), "ctl.%s", g.node);

    /* SIGTERM is taken by sigwait() below: block it before any thread
     * (ours or nats.c's) exists, so that they all inherit the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((rc = es_runtime_new(&ro, &g.rt)) != 0)
        die("es_runtime_new", rc);
    if ((rc = es_runtime_start(g.rt)) != 0)
        die("es_runtime_start", rc);
    if ((rc = es_cluster_join(g.rt, &co, &g.c)) != 0)
        die("es_cluster_join", rc);
    setup_role(argv[optind + 3], argc - optind - 4, argv + optind + 4);
    rc = es_cluster_register(g.c, ctl,
                             spawn_on(ES_LOOP(1), ctl_cb, NULL, NULL, 0));
    if (rc != 0)
        die("register ctl", rc);
    wait_own_names(ctl, now_s() + READY_S);
    if (g.topic)
        wait_own_topic(now_s() + READY_S);
    printf("ready\n");
    fflush(stdout);

    while (sigwait(&set, &sig) != 0)
        ;
    if ((rc = es_cluster_leave(g.c)) != 0)
        die("es_cluster_leave", rc);
    es_runtime_free(g.rt);
    return 0;
}
