/* SPDX-License-Identifier: MIT */
/*
 * The cases of perf/cluster_bench on bare nats.c, with its default options
 * or with SendAsap (--impl raw-asap): a publisher and a
 * subscriber, natsConnection_Request() and a responder that publishes the
 * payload back, and one subscription per process whose callback walks
 * every local subscriber's callback and counter. Subjects sit under the
 * run's prefix, one token deeper than the names and topics the cluster
 * module uses, so both pay for subjects of about the same length.
 */
#include "cluster_bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

struct raw_node {
    natsConnection *nc;
    natsSubscription *sub;
    char subject[192];
};

static int fail(const char *what, natsStatus s)
{
    fprintf(stderr, "cluster_bench raw: %s: %s\n", what, natsStatus_GetText(s));
    return s == NATS_NO_SERVER ? -ECONNREFUSED
           : s == NATS_TIMEOUT ? -ETIMEDOUT
                               : -EIO;
}

/* Connects and, if cb is given, subscribes to <prefix>.raw.<leaf> and
 * flushes, so the server has the subscription when this returns. */
static int node_up(const struct cb_opts *o, const char *leaf, natsMsgHandler cb,
                   void *arg, struct raw_node *n)
{
    natsOptions *no = NULL;
    natsStatus s;

    memset(n, 0, sizeof(*n));
    snprintf(n->subject, sizeof(n->subject), "%s.raw.%s", o->prefix, leaf);
    s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, o->url);
    if (s == NATS_OK && o->raw_asap)
        s = natsOptions_SetSendAsap(no, true);
    if (s == NATS_OK)
        s = natsConnection_Connect(&n->nc, no);
    natsOptions_Destroy(no);
    if (s != NATS_OK)
        return fail("connect", s);
    if (!cb)
        return 0;
    if ((s = natsConnection_Subscribe(&n->sub, n->nc, n->subject, cb, arg)) !=
        NATS_OK)
        return fail("subscribe", s);
    if ((s = natsConnection_Flush(n->nc)) != NATS_OK)
        return fail("flush", s);
    return 0;
}

/* Messages nats.c dropped for a slow consumer on n's subscription. */
static uint64_t node_dropped(struct raw_node *n)
{
    int64_t dropped = 0;

    if (n->sub && natsSubscription_GetDropped(n->sub, &dropped) != NATS_OK)
        return 0;
    return dropped > 0 ? (uint64_t)dropped : 0;
}

static void node_down(struct raw_node *n)
{
    natsSubscription_Destroy(n->sub);
    natsConnection_Destroy(n->nc);
    nats_Close();
}

/* --- send ---------------------------------------------------------------- */

struct sink {
    struct cb_shm *shm;
    uint64_t n; /* the subscription's delivery thread only */
};

static void on_sink(natsConnection *nc, natsSubscription *sub, natsMsg *m,
                    void *arg)
{
    struct sink *s = arg;

    atomic_store_explicit(&s->shm->rx_last, cb_now(), memory_order_relaxed);
    /* Pairs with the sender's load of rx: rx_last is stored first. */
    atomic_store_explicit(&s->shm->rx, ++s->n, memory_order_release);
    natsMsg_Destroy(m);
}

static int rx_send(const struct cb_opts *o, struct cb_shm *shm)
{
    struct sink s = {.shm = shm};
    struct raw_node n;
    int rc = node_up(o, "sink", on_sink, &s, &n);

    if (rc == 0) {
        atomic_store(&shm->child_ready, 1);
        cb_wait_parent_done(shm);
        atomic_store(&shm->child_lost, node_dropped(&n));
    }
    node_down(&n);
    return rc;
}

static int tx_send(const struct cb_opts *o, struct cb_shm *shm,
                   struct cb_result *res)
{
    char buf[CB_PAYLOAD_MAX] = {0}, subject[192];
    struct raw_node n;
    uint64_t t0, i;
    int rc = node_up(o, "tx", NULL, NULL, &n);

    snprintf(subject, sizeof(subject), "%s.raw.sink", o->prefix);
    t0 = cb_now();
    for (i = 0; rc == 0 && i < (uint64_t)o->n; i++) {
        natsStatus s;

        if ((rc = cb_window_wait(o, shm, i)) < 0)
            break;
        memcpy(buf, &i, sizeof(i));
        if ((s = natsConnection_Publish(n.nc, subject, buf, (int)o->size)) !=
            NATS_OK)
            rc = fail("publish", s);
    }
    if (i > 0)
        cb_wait_rx(shm, i);
    cb_send_result(shm, t0, i, res);
    node_down(&n);
    return rc;
}

/* --- request/reply ---------------------------------------------------------
 */

static void on_echo(natsConnection *nc, natsSubscription *sub, natsMsg *m,
                    void *arg)
{
    const char *reply = natsMsg_GetReply(m);

    if (reply)
        natsConnection_Publish(nc, reply, natsMsg_GetData(m),
                               natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
}

static int rx_rr(const struct cb_opts *o, struct cb_shm *shm)
{
    struct raw_node n;
    int rc = node_up(o, "echo", on_echo, NULL, &n);

    if (rc == 0) {
        atomic_store(&shm->child_ready, 1);
        cb_wait_parent_done(shm);
        atomic_store(&shm->child_lost, node_dropped(&n));
    }
    node_down(&n);
    return rc;
}

static int tx_rr(const struct cb_opts *o, struct cb_shm *shm,
                 struct cb_result *res)
{
    char buf[CB_PAYLOAD_MAX] = {0}, subject[192];
    uint64_t total = (uint64_t)(o->warm + o->requests), n_ok = 0;
    uint64_t *samples = calloc((size_t)o->requests, sizeof(*samples));
    struct raw_node n;
    int rc = samples ? node_up(o, "rq", NULL, NULL, &n) : -ENOMEM;

    if (!samples)
        return rc;
    snprintf(subject, sizeof(subject), "%s.raw.echo", o->prefix);
    for (uint64_t i = 0; rc == 0 && i < total; i++) {
        natsMsg *reply = NULL;
        uint64_t t = cb_now();
        natsStatus s;

        memcpy(buf, &i, sizeof(i));
        s = natsConnection_Request(&reply, n.nc, subject, buf, (int)o->size,
                                   1000);
        if (s == NATS_OK && i >= (uint64_t)o->warm)
            samples[n_ok++] = cb_now() - t;
        else if (s != NATS_OK)
            res->failed++;
        natsMsg_Destroy(reply);
    }
    cb_percentiles(samples, n_ok, res);
    free(samples);
    node_down(&n);
    return rc;
}

/* --- fan-out ---------------------------------------------------------------
 */

typedef void (*subscriber_fn)(uint64_t *counter, uint64_t seq);

/* One subscriber's work: count the publish. Not inlined, as 10,000
 * different callbacks would not be. */
static __attribute__((noinline)) void subscriber(uint64_t *counter,
                                                 uint64_t seq)
{
    (void)seq;
    (*counter)++;
}

struct fan {
    struct cb_shm *shm;
    int side;
    long nlocal;
    subscriber_fn *fns;
    uint64_t *counters;
};

static void on_fan(natsConnection *nc, natsSubscription *sub, natsMsg *m,
                   void *arg)
{
    struct fan *f = arg;
    uint64_t word[2];

    if (natsMsg_GetDataLength(m) == (int)sizeof(word)) {
        memcpy(word, natsMsg_GetData(m), sizeof(word));
        if (word[0] < CB_MAX_SEQ) {
            for (long i = 0; i < f->nlocal; i++)
                f->fns[i](&f->counters[i], word[0]);
            atomic_store(&f->shm->fan_count[f->side][word[0]],
                         (uint32_t)f->nlocal);
            cb_fan_done(f->shm, f->side, word[0], word[1]);
        }
    }
    natsMsg_Destroy(m);
}

static int publish(void *ctx, uint64_t seq, uint64_t stamp)
{
    struct raw_node *n = ctx;
    uint64_t word[2] = {seq, stamp};
    natsStatus s =
        natsConnection_Publish(n->nc, n->subject, word, (int)sizeof(word));

    return s == NATS_OK ? 0 : fail("publish", s);
}

static int fan(const struct cb_opts *o, struct cb_shm *shm, int side,
               struct cb_result *res)
{
    struct fan f = {.shm = shm, .side = side, .nlocal = cb_fan_local(o, side)};
    struct raw_node n = {0};
    int rc = -ENOMEM;

    f.fns = calloc((size_t)f.nlocal, sizeof(*f.fns));
    f.counters = calloc((size_t)f.nlocal, sizeof(*f.counters));
    if (f.fns && f.counters) {
        for (long i = 0; i < f.nlocal; i++)
            f.fns[i] = subscriber;
        rc = node_up(o, "fan", on_fan, &f, &n);
    }
    if (rc == 0 && side == 1) {
        atomic_store(&shm->child_ready, 1);
        cb_wait_parent_done(shm);
        atomic_store(&shm->child_lost, node_dropped(&n));
    } else if (rc == 0) {
        rc = cb_fan_drive(o, shm, publish, &n, res);
        res->lost = node_dropped(&n);
    }
    if (n.nc)
        node_down(&n);
    free(f.fns);
    free(f.counters);
    return rc;
}

const struct cb_impl cb_raw_impl = {
    .name = "raw",
    .rx_send = rx_send,
    .tx_send = tx_send,
    .rx_rr = rx_rr,
    .tx_rr = tx_rr,
    .fan = fan,
};
