/* SPDX-License-Identifier: MIT */
/*
 * The cases of perf/cluster_bench on EventServer's cluster module
 * (include/eventserver/cluster.h): one runtime and one es_cluster_join()
 * per process. send: the parent's main thread es_cluster_send()s to
 * "sink", an actor the child registered; rr: an actor in the parent
 * es_request()s the es_cluster_lookup() proxy of "echo", an actor in the
 * child that es_reply()s the payload back; fan: actors in both processes
 * es_cluster_subscribe() to "fan" and the parent's main thread
 * es_cluster_publish()es to it.
 */
#include "cluster_bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eventserver/cluster.h>
#include <eventserver/eventserver.h>

#define PROBE_TIMEOUT_MS 1000
#define REQUEST_TIMEOUT_MS 1000

enum { MSG_DATA = ES_MSG_USER, MSG_PING, MSG_ECHO, MSG_FAN };

struct es_node {
    es_runtime_t *rt;
    es_cluster_t *c;
};

static int fail(const char *what, int rc)
{
    fprintf(stderr, "cluster_bench es: %s: %s\n", what, strerror(-rc));
    return rc;
}

static int node_up(const struct cb_opts *o, const char *node, struct es_node *n)
{
    const char *servers[1] = {o->url};
    es_runtime_opts_t ro = {.threads = o->threads};
    es_cluster_opts_t co = {.servers = servers,
                            .servers_count = 1,
                            .cluster = o->prefix,
                            .node = node};
    int rc;

    n->rt = NULL;
    n->c = NULL;
    if ((rc = es_runtime_new(&ro, &n->rt)) < 0)
        return fail("es_runtime_new", rc);
    if ((rc = es_runtime_start(n->rt)) < 0)
        return fail("es_runtime_start", rc);
    if ((rc = es_cluster_join(n->rt, &co, &n->c)) < 0)
        return fail("es_cluster_join", rc);
    return 0;
}

/* What the node's counters say was lost (mailbox, stopped actor, slow
 * consumer, refused publish, malformed). */
static uint64_t node_lost(const struct es_node *n)
{
    es_cluster_stats_t st;

    if (!n->c)
        return 0;
    es_cluster_stats(n->c, &st);
    return st.lost_mailbox + st.lost_no_actor + st.lost_slow + st.bad_messages;
}

static void node_down(struct es_node *n)
{
    if (n->c)
        es_cluster_leave(n->c);
    es_runtime_free(n->rt);
}

/* Waits until `name` answers a request through its proxy: then the
 * receiver's broker subscription is live and the timed part may begin. */
static int probe(struct es_node *n, const char *name)
{
    uint64_t end = cb_now() + 20 * 1000000000ull;
    int rc;

    for (;;) {
        es_actor_id_t proxy;
        es_msg_t ping = es_msg_make(MSG_PING), reply;

        rc = es_cluster_lookup(n->c, name, &proxy);
        if (rc == 0)
            rc = es_call(n->rt, proxy, &ping, &reply, PROBE_TIMEOUT_MS);
        if (rc == 0) {
            es_msg_release(&reply);
            return 0;
        }
        if (cb_now() > end)
            return fail("probe", rc);
        cb_sleep_us(10000);
    }
}

/* Answers MSG_PING and MSG_ECHO requests with their payload. */
static int answer(es_actor_t *self, es_msg_t *msg)
{
    es_msg_t r = es_msg_make(0);
    es_msg_free_cb free_cb = msg->free_cb;
    int rc;

    if (msg->ptr && free_cb) { /* hand the received copy back */
        uint32_t len = msg->len;
        void *p = es_msg_take(msg);

        r = es_msg_ptr(0, p, len, free_cb);
        if ((rc = es_reply(self, msg, &r)) < 0)
            free_cb(p);
        return 0;
    }
    if (msg->ptr) {
        void *p = malloc(msg->len);

        if (!p)
            return 0;
        memcpy(p, msg->ptr, msg->len);
        r = es_msg_ptr(0, p, msg->len, free);
    } else if (msg->len) {
        es_msg_bytes(&r, 0, msg->inl.bytes,
                     msg->len < ES_MSG_REQUEST_INLINE ? msg->len
                                                      : ES_MSG_REQUEST_INLINE);
    }
    if (es_reply(self, msg, &r) < 0)
        es_msg_release(&r);
    return 0;
}

/* --- send ---------------------------------------------------------------- */

struct sink {
    struct cb_shm *shm;
    uint64_t n; /* its home thread only */
};

static int sink_cb(es_actor_t *self, es_msg_t *msg)
{
    struct sink *s = es_actor_state(self);

    if (msg->type == MSG_DATA) {
        atomic_store_explicit(&s->shm->rx_last, cb_now(), memory_order_relaxed);
        /* Pairs with the sender's load of rx: rx_last is stored first. */
        atomic_store_explicit(&s->shm->rx, ++s->n, memory_order_release);
    } else if (msg->type == MSG_PING) {
        return answer(self, msg);
    }
    return 0;
}

static int rx_send(const struct cb_opts *o, struct cb_shm *shm)
{
    struct sink s = {.shm = shm};
    /* Room for the whole window: the sender never has more in flight. */
    es_spawn_opts_t so = {.behaviour = sink_cb,
                          .state = &s,
                          .mailbox_capacity = (unsigned)o->window};
    struct es_node n;
    es_actor_id_t id;
    int rc = node_up(o, "rx", &n);

    if (rc == 0 && (rc = es_spawn(n.rt, &so, &id)) < 0)
        fail("es_spawn", rc);
    if (rc == 0 && (rc = es_cluster_register(n.c, "sink", id)) < 0)
        fail("es_cluster_register", rc);
    if (rc == 0) {
        atomic_store(&shm->child_ready, 1);
        cb_wait_parent_done(shm);
        atomic_store(&shm->child_lost, node_lost(&n));
    }
    node_down(&n);
    return rc;
}

static int tx_send(const struct cb_opts *o, struct cb_shm *shm,
                   struct cb_result *res)
{
    char buf[CB_PAYLOAD_MAX] = {0};
    es_msg_t msg = es_msg_ptr(MSG_DATA, buf, o->size, NULL);
    struct es_node n;
    uint64_t t0, i = 0;
    int rc = node_up(o, "tx", &n);

    if (rc == 0)
        rc = probe(&n, "sink");
    t0 = cb_now();
    for (i = 0; rc == 0 && i < (uint64_t)o->n; i++) {
        if ((rc = cb_window_wait(o, shm, i)) < 0)
            break;
        memcpy(buf, &i, sizeof(i));
        if ((rc = es_cluster_send(n.c, "sink", &msg)) < 0)
            fail("es_cluster_send", rc);
    }
    if (i > 0)
        cb_wait_rx(shm, i);
    cb_send_result(shm, t0, i, res);
    res->lost = node_lost(&n);
    node_down(&n);
    return rc;
}

/* --- request/reply ---------------------------------------------------------
 */

static int echo_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == MSG_PING || msg->type == MSG_ECHO)
        return answer(self, msg);
    return 0;
}

static int rx_rr(const struct cb_opts *o, struct cb_shm *shm)
{
    es_spawn_opts_t so = {.behaviour = echo_cb};
    struct es_node n;
    es_actor_id_t id;
    int rc = node_up(o, "rx", &n);

    if (rc == 0 && (rc = es_spawn(n.rt, &so, &id)) < 0)
        fail("es_spawn", rc);
    if (rc == 0 && (rc = es_cluster_register(n.c, "echo", id)) < 0)
        fail("es_cluster_register", rc);
    if (rc == 0) {
        atomic_store(&shm->child_ready, 1);
        cb_wait_parent_done(shm);
        atomic_store(&shm->child_lost, node_lost(&n));
    }
    node_down(&n);
    return rc;
}

/* The requester: one request outstanding; main reads the fields after
 * `done` (or after the runtime stopped, when it gave up waiting). */
struct requester {
    es_actor_id_t proxy;
    char buf[CB_PAYLOAD_MAX];
    unsigned size;
    uint64_t warm, total, i, n_ok, failed, sent_ns;
    uint64_t *samples;
    _Atomic uint64_t progress; /* i, for main's stall check */
    _Atomic int done;          /* 1 finished, or a negative errno */
};

static int fire(es_actor_t *self, struct requester *q)
{
    es_msg_t m = es_msg_ptr(MSG_ECHO, q->buf, q->size, NULL);
    int rc;

    if (q->i == q->total) {
        atomic_store(&q->done, 1);
        return 0;
    }
    memcpy(q->buf, &q->i, sizeof(q->i));
    q->sent_ns = cb_now();
    if ((rc = es_request(self, q->proxy, &m, REQUEST_TIMEOUT_MS, NULL)) < 0)
        atomic_store(&q->done, rc);
    return 0;
}

static int requester_cb(es_actor_t *self, es_msg_t *msg)
{
    struct requester *q = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        return fire(self, q);
    case ES_MSG_REPLY:
        if (q->i >= q->warm)
            q->samples[q->n_ok++] = cb_now() - q->sent_ns;
        break;
    case ES_MSG_REQUEST_FAILED:
        q->failed++;
        break;
    default:
        return 0;
    }
    q->i++;
    atomic_store_explicit(&q->progress, q->i, memory_order_relaxed);
    return fire(self, q);
}

/* Waits for q->done, or until q->progress stops moving. */
static int wait_requester(struct requester *q)
{
    uint64_t seen = 0, since = cb_now();
    int done;

    while (!(done = atomic_load(&q->done))) {
        uint64_t p = atomic_load_explicit(&q->progress, memory_order_relaxed);

        if (p != seen) {
            seen = p;
            since = cb_now();
        } else if (cb_now() - since > CB_STALL_NS) {
            return -ETIMEDOUT;
        }
        cb_sleep_us(2000);
    }
    return done < 0 ? done : 0;
}

static int tx_rr(const struct cb_opts *o, struct cb_shm *shm,
                 struct cb_result *res)
{
    struct requester *q = calloc(1, sizeof(*q));
    es_spawn_opts_t so = {.behaviour = requester_cb, .state = q};
    struct es_node n;
    es_actor_id_t id;
    int rc;

    if (!q)
        return -ENOMEM;
    q->size = o->size;
    q->warm = (uint64_t)o->warm;
    q->total = (uint64_t)(o->warm + o->requests);
    if (!(q->samples = calloc((size_t)o->requests, sizeof(*q->samples)))) {
        free(q);
        return -ENOMEM;
    }
    rc = node_up(o, "tx", &n);
    if (rc == 0)
        rc = probe(&n, "echo");
    if (rc == 0 && (rc = es_cluster_lookup(n.c, "echo", &q->proxy)) < 0)
        fail("es_cluster_lookup", rc);
    if (rc == 0 && (rc = es_spawn(n.rt, &so, &id)) < 0)
        fail("es_spawn", rc);
    if (rc == 0 && (rc = wait_requester(q)) < 0)
        fail("requests", rc);
    res->lost = node_lost(&n);
    node_down(&n); /* the requester stops here: q is main's again */
    res->failed = q->failed;
    cb_percentiles(q->samples, q->n_ok, res);
    free(q->samples);
    free(q);
    return rc;
}

/* --- fan-out ---------------------------------------------------------------
 */

struct fan {
    struct cb_shm *shm;
    int side;
    long nlocal;
    struct es_node *node;
};

static int subscriber_cb(es_actor_t *self, es_msg_t *msg)
{
    struct fan *f = es_actor_state(self);

    if (msg->type == MSG_FAN && msg->len == 2 * sizeof(uint64_t))
        cb_fan_hit(f->shm, f->side, f->nlocal, msg->inl.u64[0],
                   msg->inl.u64[1]);
    return 0;
}

static int publish(void *ctx, uint64_t seq, uint64_t stamp)
{
    struct fan *f = ctx;
    es_msg_t m = es_msg_make(MSG_FAN);
    int rc;

    m.inl.u64[0] = seq;
    m.inl.u64[1] = stamp;
    m.len = 2 * sizeof(uint64_t);
    if ((rc = es_cluster_publish(f->node->c, "fan", &m)) < 0)
        return fail("es_cluster_publish", rc);
    return 0;
}

/* Spawns f->nlocal subscribers (state: f, shared, never freed by them) and
 * subscribes each to "fan". */
static int subscribe_all(struct fan *f)
{
    es_spawn_opts_t so = {.behaviour = subscriber_cb, .state = f};
    es_actor_id_t id;
    int rc;

    for (long i = 0; i < f->nlocal; i++) {
        if ((rc = es_spawn(f->node->rt, &so, &id)) < 0)
            return fail("es_spawn", rc);
        if ((rc = es_cluster_subscribe(f->node->c, "fan", id)) < 0)
            return fail("es_cluster_subscribe", rc);
    }
    return 0;
}

static int fan(const struct cb_opts *o, struct cb_shm *shm, int side,
               struct cb_result *res)
{
    struct es_node n;
    struct fan f = {
        .shm = shm, .side = side, .nlocal = cb_fan_local(o, side), .node = &n};
    int rc = node_up(o, side ? "rx" : "tx", &n);

    if (rc == 0)
        rc = subscribe_all(&f);
    if (rc == 0 && side == 1) {
        atomic_store(&shm->child_ready, 1);
        cb_wait_parent_done(shm);
        atomic_store(&shm->child_lost, node_lost(&n));
    } else if (rc == 0) {
        rc = cb_fan_drive(o, shm, publish, &f, res);
        res->lost = node_lost(&n);
    }
    node_down(&n);
    return rc;
}

const struct cb_impl cb_es_impl = {
    .name = "es",
    .rx_send = rx_send,
    .tx_send = tx_send,
    .rx_rr = rx_rr,
    .tx_rr = tx_rr,
    .fan = fan,
};
