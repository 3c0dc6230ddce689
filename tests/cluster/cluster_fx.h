/* SPDX-License-Identifier: MIT */
/*
 * The set-up every cross-process cluster test shares: a private broker,
 * a runtime in the test process joined to cluster "es" as node "t0", up
 * to CFX_NODES cluster_node processes, and the actors the test process
 * uses to see what the nodes did: a "sink" registered in the cluster that
 * records every CN_GOT report, and requesters that count the outcome of
 * each es_request() they made. Behaviours only count (C11 atomics); the
 * test thread asserts after the run. Everything stops at cfx_fini(), and
 * every wait is bounded.
 */
#ifndef ES_TEST_CLUSTER_FX_H
#define ES_TEST_CLUSTER_FX_H

#include "es_test.h"

#include "cluster_node.h"
#include "nats_server.h"

#include <eventserver/cluster.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef ES_CLUSTER_NODE_PATH
#error "ES_CLUSTER_NODE_PATH (the cluster_node executable) is not defined"
#endif

#define CFX_CLUSTER "es"
#define CFX_NODES 4
/* How long a node may take to print "ready", the broker to come up. */
#define CFX_START_S 30.0
/* How long a statistics request may be retried. */
#define CFX_CALL_S 15.0

struct cfx {
    struct test_nats srv;
    es_runtime_t *rt;
    es_cluster_t *c; /* NULL once left */
    struct test_node nodes[CFX_NODES];
    int hb_ms, misses;
    int deliver_wait_ms; /* cfx_node(): -w, when not 0 */
};

/* Joins the cluster as "t0" with the fixture's heartbeat settings. */
static inline void cfx_join(struct cfx *f)
{
    const char *url = f->srv.url;
    es_cluster_opts_t o = {.servers = &url,
                           .servers_count = 1,
                           .cluster = CFX_CLUSTER,
                           .node = "t0",
                           .heartbeat_ms = f->hb_ms,
                           .heartbeat_misses = f->misses};

    ES_OK(es_cluster_join(f->rt, &o, &f->c));
    cr_assert_not_null(f->c);
}

/*
 * Starts the broker and a 2-thread runtime (no migration: actors stay
 * where the test put them) and joins. hb_ms/misses: as
 * es_cluster_opts_t (0: defaults), for the test process and its nodes.
 * Skips the test, loudly, without nats-server.
 */
static inline void cfx_start(struct cfx *f, int hb_ms, int misses)
{
    es_runtime_opts_t ro = {.threads = 2, .colocate = -1, .shed = -1};
    int rc;

    TEST_NATS_REQUIRE();
    memset(f, 0, sizeof(*f));
    for (int i = 0; i < CFX_NODES; i++)
        f->nodes[i].out_fd = -1;
    f->hb_ms = hb_ms;
    f->misses = misses;
    rc = test_nats_start(&f->srv, CFX_START_S);
    cr_assert_eq(rc, 0, "nats-server did not start: %s (log in %s)",
                 es_strerror(rc), f->srv.dir);
    f->rt = es_test_runtime_new(&ro);
    ES_OK(es_runtime_start(f->rt));
    cfx_join(f);
}

/*
 * Starts node process `i` as `node` with `tag` and a role and its args
 * (NULL-terminated), and waits for its "ready".
 */
static inline void cfx_node(struct cfx *f, int i, const char *node,
                            unsigned tag, const char *role, ...)
{
    char hb[16], misses[16], tg[16], wait[16];
    char *argv[24] = {
        ES_CLUSTER_NODE_PATH, "-b", hb, "-m", misses, "-t", tg, "-w", wait};
    int n = 9, rc;
    va_list ap;

    if (!f->deliver_wait_ms)
        n = 7;
    argv[n++] = f->srv.url;
    argv[n++] = CFX_CLUSTER;
    argv[n++] = (char *)node;
    argv[n++] = (char *)role;
    snprintf(wait, sizeof(wait), "%d", f->deliver_wait_ms);
    snprintf(hb, sizeof(hb), "%d", f->hb_ms);
    snprintf(misses, sizeof(misses), "%d", f->misses);
    snprintf(tg, sizeof(tg), "%u", tag);
    va_start(ap, role);
    for (char *a; (a = va_arg(ap, char *)) != NULL && n < 23;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    cr_assert(i >= 0 && i < CFX_NODES);
    rc = test_node_start(&f->nodes[i], argv, CFX_START_S);
    cr_assert_eq(rc, 0, "node %s (%s) did not get ready: %s", node, role,
                 es_strerror(rc));
}

/* Leaves the cluster (if joined), bounded by the test's timeout. */
static inline void cfx_leave(struct cfx *f)
{
    if (f->c)
        ES_OK(es_cluster_leave(f->c));
    f->c = NULL;
}

/* Leaves, stops every node (SIGTERM), frees the runtime, stops the
 * broker. */
static inline void cfx_fini(struct cfx *f)
{
    cfx_leave(f);
    for (int i = 0; i < CFX_NODES; i++)
        test_node_stop(&f->nodes[i], false, ES_TEST_JOIN_S);
    es_test_free(f->rt);
    f->rt = NULL;
    test_nats_fini(&f->srv);
}

/* es_cluster_lookup() + es_call() from the test thread. */
static inline int cfx_call(struct cfx *f, const char *name, const es_msg_t *q,
                           es_msg_t *r, int timeout_ms)
{
    es_actor_id_t proxy;
    int rc = es_cluster_lookup(f->c, name, &proxy);

    return rc ? rc : es_call(f->rt, proxy, q, r, timeout_ms);
}

/*
 * es_call() to `name`, retried (a fresh lookup each time) while it fails,
 * for at most CFX_CALL_S: for statistics and readiness, not for the
 * behaviour under test. Fails the test if no reply came.
 */
static inline void cfx_call_retry(struct cfx *f, const char *name,
                                  const es_msg_t *q, es_msg_t *r)
{
    double end = es_test_now() + CFX_CALL_S;
    int rc;

    while ((rc = cfx_call(f, name, q, r, 2000)) != 0) {
        cr_assert(es_test_now() < end, "no answer from %s: %s", name,
                  es_strerror(rc));
        es_test_sleep_ms(20);
    }
}

/* Counter `which` (enum cn_stat) of node `node`, through ctl.<node>. */
static inline uint64_t cfx_stat(struct cfx *f, const char *node,
                                enum cn_stat which)
{
    char ctl[ES_CLUSTER_NAME_MAX + 1];
    es_msg_t q = es_msg_u64(CN_STAT, which), r;

    snprintf(ctl, sizeof(ctl), "ctl.%s", node);
    uint64_t v;

    cfx_call_retry(f, ctl, &q, &r);
    v = r.inl.u64[0];
    es_msg_release(&r);
    return v;
}

/* Polls cfx_stat() until it is >= want, at most `secs`. Returns it. */
static inline uint64_t cfx_stat_wait(struct cfx *f, const char *node,
                                     enum cn_stat which, uint64_t want,
                                     double secs)
{
    double end = es_test_now() + secs;
    uint64_t v;

    while ((v = cfx_stat(f, node, which)) < want && es_test_now() < end)
        es_test_sleep_ms(20);
    return v;
}

/* --- the sink: records CN_GOT reports, answers requests ------------------ */

#define SINK_MAX 4096

struct sink_rec {
    uint64_t seq, sum, flags;
};

struct sink {
    struct sink_rec rec[SINK_MAX];
    atomic_ullong n;     /* records written (release after the record) */
    atomic_ullong other; /* messages that were not CN_GOT or requests */
};

static inline int sink_cb(es_actor_t *self, es_msg_t *msg)
{
    struct sink *s = es_actor_state(self);

    if (msg->type == CN_GOT) {
        unsigned long long i = atomic_load(&s->n);

        if (i < SINK_MAX) {
            s->rec[i].seq = msg->inl.u64[0];
            s->rec[i].sum = msg->inl.u64[1];
            s->rec[i].flags = msg->inl.u64[2];
        }
        atomic_store(&s->n, i + 1); /* pairs with the test's load */
        return 0;
    }
    if (msg->type >= ES_MSG_USER) {
        es_msg_t r = es_msg_u64(ES_MSG_USER, 0);

        if (es_reply(self, msg, &r) != 0)
            atomic_fetch_add(&s->other, 1);
    }
    return 0;
}

/* Spawns the sink, registers it as `name` and waits until the broker
 * knows the name (a request to it makes the round trip). */
static inline es_actor_id_t cfx_sink(struct cfx *f, struct sink *s,
                                     const char *name)
{
    es_spawn_opts_t o = {.behaviour = sink_cb, .state = s, .loop = ES_LOOP(1)};
    es_actor_id_t id;
    es_msg_t q = es_msg_make(ES_MSG_USER), r;

    memset(s, 0, sizeof(*s));
    ES_OK(es_spawn(f->rt, &o, &id));
    ES_OK(es_cluster_register(f->c, name, id));
    cfx_call_retry(f, name, &q, &r);
    es_msg_release(&r);
    return id;
}

/* How many records of the sink have seq `seq`. */
static inline unsigned sink_count(struct sink *s, uint64_t seq)
{
    unsigned long long n = atomic_load(&s->n);
    unsigned c = 0;

    for (unsigned long long i = 0; i < n && i < SINK_MAX; i++)
        c += s->rec[i].seq == seq;
    return c;
}

/* --- requesters: es_request() from a behaviour, one outcome each --------- */

#define REQ_MAX 1024

enum {
    REQ_GO = ES_MSG_USER + 0x200, /* u64[0] target proxy, u64[1] count,
                                     i64[2] timeout_ms */
};

struct requester {
    uint32_t type; /* request type; CN_PING and CN_IGNORE alternate
                      when alternate is set */
    int alternate;
    es_ref_t ids[REQ_MAX];
    uint32_t types[REQ_MAX];
    unsigned char seen[REQ_MAX];
    double sent_s[REQ_MAX], done_s[REQ_MAX];
    int reason[REQ_MAX]; /* 0: replied */
    uint64_t tag[REQ_MAX];
    unsigned nids;
    atomic_ullong asked, outcomes, replies, esrch, timeouts, other, dup;
    atomic_ullong refused; /* es_request() returned an error */
};

static inline void req_outcome(struct requester *q, es_msg_t *msg)
{
    es_ref_t ref = es_msg_ref(msg);
    unsigned i;

    for (i = 0; i < q->nids && q->ids[i] != ref; i++)
        ;
    if (i == q->nids || q->seen[i]++) {
        atomic_fetch_add(&q->dup, 1);
        return;
    }
    q->done_s[i] = es_test_now();
    if (msg->type == ES_MSG_REPLY) {
        q->reason[i] = 0;
        q->tag[i] = msg->inl.u64[1];
        if (msg->inl.u64[0] != i)
            atomic_fetch_add(&q->other, 1);
        atomic_fetch_add(&q->replies, 1);
    } else {
        q->reason[i] = es_msg_reason(msg);
        if (q->reason[i] == -ESRCH)
            atomic_fetch_add(&q->esrch, 1);
        else if (q->reason[i] == -ETIMEDOUT)
            atomic_fetch_add(&q->timeouts, 1);
        else
            atomic_fetch_add(&q->other, 1);
    }
    atomic_fetch_add(&q->outcomes, 1);
}

static inline int requester_cb(es_actor_t *self, es_msg_t *msg)
{
    struct requester *q = es_actor_state(self);

    if (msg->type == ES_MSG_REPLY || msg->type == ES_MSG_REQUEST_FAILED) {
        req_outcome(q, msg);
        return 0;
    }
    if (msg->type != REQ_GO)
        return 0;
    for (uint64_t n = 0; n < msg->inl.u64[1] && q->nids < REQ_MAX; n++) {
        unsigned i = q->nids;
        uint32_t type = q->alternate && (i & 1) ? CN_IGNORE : q->type;
        es_msg_t r = es_msg_u64(type, i);

        q->types[i] = type;
        q->sent_s[i] = es_test_now();
        if (es_request(self, msg->inl.u64[0], &r, (int)msg->inl.i64[2],
                       &q->ids[i]) != 0) {
            atomic_fetch_add(&q->refused, 1);
            continue;
        }
        q->nids++;
        atomic_fetch_add(&q->asked, 1);
    }
    return 0;
}

/* Spawns a requester on loop `loop` sending requests of `type`. */
static inline es_actor_id_t cfx_requester(struct cfx *f, struct requester *q,
                                          int loop, uint32_t type)
{
    es_spawn_opts_t o = {
        .behaviour = requester_cb, .state = q, .loop = ES_LOOP(loop)};
    es_actor_id_t id;

    memset(q, 0, sizeof(*q));
    q->type = type;
    ES_OK(es_spawn(f->rt, &o, &id));
    return id;
}

/* Makes requester `id` send `count` requests to `target`. */
static inline void cfx_ask(struct cfx *f, es_actor_id_t id,
                           es_actor_id_t target, unsigned count, int timeout_ms)
{
    es_msg_t go = es_msg_u64(REQ_GO, target);

    go.inl.u64[1] = count;
    go.inl.i64[2] = timeout_ms;
    go.len = 24;
    ES_OK(es_test_send_retry(f->rt, id, &go, ES_TEST_WAIT_S));
}

#endif /* ES_TEST_CLUSTER_FX_H */
