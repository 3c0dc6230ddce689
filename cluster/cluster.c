/* SPDX-License-Identifier: MIT */
/*
 * The cluster's connection, names, topics and heartbeats (see
 * cluster_private.h for the subjects and docs/cluster.md for the design).
 *
 * Threads: nats.c delivers every subscription on its global delivery pool;
 * those threads hand messages in as foreign senders (es_send_wait(), with
 * a bound). A heartbeat thread publishes this node's heartbeat and declares
 * silent nodes lost. Nothing here waits on the network on a demux thread:
 * join and leave refuse to run there.
 */
#include "cluster_private.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int clusters_open; /* joined and not yet freed, process-wide */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* --- names and subjects -------------------------------------------------- */

bool es__cluster_name_ok(const char *name, bool dots)
{
    if (!name)
        return false;
    size_t n = strnlen(name, ES_CLUSTER_NAME_MAX + 1);
    if (n == 0 || n > ES_CLUSTER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || ch == '_' || ch == '-')
            continue;
        if (ch == '.' && dots && i > 0 && i + 1 < n && name[i + 1] != '.')
            continue;
        return false;
    }
    return true;
}

int es__cluster_subject(const es_cluster_t *c, char *buf, size_t size,
                        const char *kind, const char *name)
{
    /* Built by hand: a send builds one, and snprintf was a third of its
     * cost (perf/cluster_bench). */
    size_t np = strlen(c->prefix), nn = strlen(name);
    if (np + nn + 4 > size)
        return -EOVERFLOW;
    memcpy(buf, c->prefix, np);
    buf[np] = '.';
    buf[np + 1] = kind[0];
    buf[np + 2] = '.';
    memcpy(buf + np + 3, name, nn + 1);
    return 0;
}

/* --- the wire ------------------------------------------------------------ */

int es__wire_encode(int kind, const es_msg_t *msg, int reason, uint64_t reg,
                    struct wire_buf *out)
{
    struct wire w = {.magic = WIRE_MAGIC,
                     .kind = (uint8_t)kind,
                     .reason = reason,
                     .reg = reg};
    const void *body = NULL;
    if (msg) {
        if (msg->len > WIRE_MAX_PAYLOAD)
            return -EINVAL;
        w.type = msg->type;
        w.len = msg->len;
        if (msg->ptr) {
            w.flags = WIRE_PTR;
            body = msg->ptr;
        } else {
            if (msg->len > ES_MSG_INLINE)
                return -EINVAL;
            body = msg->inl.bytes;
        }
    }
    size_t n = WIRE_HEAD + w.len;
    out->data = n <= sizeof(out->small) ? out->small : malloc(n);
    if (!out->data)
        return -ENOMEM;
    memcpy(out->data, &w, WIRE_HEAD);
    if (w.len)
        memcpy(out->data + WIRE_HEAD, body, w.len);
    out->len = (int)n;
    return 0;
}

void es__wire_done(struct wire_buf *b)
{
    if (b->data != b->small)
        free(b->data);
    b->data = NULL;
}

int es__wire_decode(const char *data, int len, struct wire *head, es_msg_t *msg)
{
    if (!data || len < WIRE_HEAD)
        return -EBADMSG;
    memcpy(head, data, WIRE_HEAD);
    if (head->magic != WIRE_MAGIC || head->kind < WIRE_SEND ||
        head->kind > WIRE_DOWN || head->len != (uint32_t)len - WIRE_HEAD ||
        head->len > WIRE_MAX_PAYLOAD)
        return -EBADMSG;
    if (!(head->flags & WIRE_PTR) && head->len > ES_MSG_INLINE)
        return -EBADMSG;
    *msg = es_msg_make(head->type);
    msg->len = head->len;
    if (head->flags & WIRE_PTR) {
        /* One byte more, always a NUL: names travel this way. */
        char *copy = es_malloc(head->len + 1);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, data + WIRE_HEAD, head->len);
        copy[head->len] = '\0';
        msg->ptr = copy;
        msg->free_cb = es_free;
    } else if (head->len) {
        memcpy(msg->inl.bytes, data + WIRE_HEAD, head->len);
    }
    return 0;
}

/* --- references ---------------------------------------------------------- */

static void cluster_free(es_cluster_t *c)
{
    natsConnection_Destroy(c->nc);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->hb_lock);
    pthread_cond_destroy(&c->hb_cond);
    pthread_mutex_destroy(&c->fl_lock);
    pthread_cond_destroy(&c->fl_cond);
    free(c);
    atomic_fetch_sub(&clusters_open, 1);
}

void es__cluster_ref(es_cluster_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void es__cluster_unref(es_cluster_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        cluster_free(c);
}

/* A subscription is done: nats.c will not call its handler again. The
 * reference goes before the count: es_cluster_leave() holds its own until
 * the count is 0, so the last reference (and natsConnection_Destroy()) is
 * never dropped here, on one of nats.c's threads. */
static void sub_done(es_cluster_t *c)
{
    es__cluster_unref(c);
    atomic_fetch_sub(&c->subs, 1);
}

/* Subscribes with a completion callback that releases the cluster's
 * reference (and the closure's, through `done`). */
static int subscribe(es_cluster_t *c, natsSubscription **sub, const char *subj,
                     const char *queue, natsMsgHandler cb, void *closure,
                     natsOnCompleteCB done)
{
    natsStatus s =
        queue ? natsConnection_QueueSubscribe(sub, c->nc, subj, queue, cb,
                                              closure)
              : natsConnection_Subscribe(sub, c->nc, subj, cb, closure);
    if (s != NATS_OK) {
        es_log(ES_LOG_ERROR, "cluster: subscribe %s: %s", subj,
               natsStatus_GetText(s));
        *sub = NULL;
        return s == NATS_NO_MEMORY ? -ENOMEM : -EIO;
    }
    es__cluster_ref(c);
    atomic_fetch_add(&c->subs, 1);
    natsSubscription_SetOnCompleteCB(*sub, done, closure);
    return 0;
}

/* Closes a subscription; its completion callback runs once the handler
 * can no longer be called. */
static void unsubscribe(es_cluster_t *c, natsSubscription *sub)
{
    if (!sub)
        return;
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(sub, &dropped) == NATS_OK && dropped > 0)
        atomic_fetch_add(&c->dropped_gone, (uint64_t)dropped);
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
}

/* --- sending ------------------------------------------------------------- */

int es__cluster_publish(es_cluster_t *c, const char *subj, const char *reply,
                        const char *data, int len, bool urgent)
{
    natsStatus s =
        reply ? natsConnection_PublishRequest(c->nc, subj, reply, data, len)
              : natsConnection_Publish(c->nc, subj, data, len);
    if (s == NATS_OK) {
        count(&c->st.sent);
        /* Only the first of a burst wakes the flusher. */
        if (urgent && !atomic_exchange(&c->fl_wanted, true)) {
            pthread_mutex_lock(&c->fl_lock);
            pthread_cond_signal(&c->fl_cond);
            pthread_mutex_unlock(&c->fl_lock);
        }
        return 0;
    }
    count(&c->st.lost_publish);
    return s == NATS_NO_MEMORY ? -ENOMEM : -EIO;
}

int es__cluster_deliver(es_cluster_t *c, es_actor_id_t to, es_msg_t *msg)
{
    int rc = c->deliver_wait_ms < 0
                 ? es_send(c->rt, to, msg)
                 : es_send_wait(c->rt, to, msg, c->deliver_wait_ms);
    if (rc == 0) {
        count(&c->st.received);
        return 0;
    }
    if (rc == -ESRCH)
        count(&c->st.lost_no_actor);
    else
        count(&c->st.lost_mailbox);
    es_msg_release(msg);
    return rc;
}

static int send_to(es_cluster_t *c, const char *kind, const char *name,
                   const es_msg_t *msg)
{
    if (!c || !msg || !es__cluster_name_ok(name, true) ||
        msg->type < ES_MSG_USER || (msg->type & 0x80000000u))
        return -EINVAL;
    char subj[3 * ES_CLUSTER_NAME_MAX + 8];
    int rc = es__cluster_subject(c, subj, sizeof(subj), kind, name);
    struct wire_buf b;
    if (rc == 0)
        rc = es__wire_encode(WIRE_SEND, msg, 0, 0, &b);
    if (rc)
        return rc;
    rc = es__cluster_publish(c, subj, NULL, b.data, b.len, true);
    es__wire_done(&b);
    return rc;
}

int es_cluster_send(es_cluster_t *c, const char *name, const es_msg_t *msg)
{
    return send_to(c, "n", name, msg);
}

int es_cluster_publish(es_cluster_t *c, const char *topic, const es_msg_t *msg)
{
    return send_to(c, "t", topic, msg);
}

/* --- registrations ------------------------------------------------------- */

static void reg_free(struct reg *r)
{
    es_cluster_t *c = r->c;
    free(r);
    es__cluster_unref(c);
}

void es__reg_unref(struct reg *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        reg_free(r);
}

static void reg_sub_done(void *closure)
{
    struct reg *r = closure;
    es_cluster_t *c = r->c;
    es__reg_unref(r);
    sub_done(c);
}

/* Publishes WIRE_UP / WIRE_DOWN for r on subject `subj` (its node name as
 * the payload). */
static void reg_tell(es_cluster_t *c, const struct reg *r, const char *subj,
                     int kind, int reason)
{
    es_msg_t m =
        es_msg_ptr(ES_MSG_USER, c->node, (uint32_t)strlen(c->node), NULL);
    struct wire_buf b;
    if (es__wire_encode(kind, &m, reason, r->regid, &b) == 0) {
        (void)es__cluster_publish(c, subj, NULL, b.data, b.len, true);
        es__wire_done(&b);
    }
}

static void reg_event(es_cluster_t *c, const struct reg *r, int kind,
                      int reason)
{
    char subj[3 * ES_CLUSTER_NAME_MAX + 8];
    if (es__cluster_subject(c, subj, sizeof(subj), "e", r->name) == 0)
        reg_tell(c, r, subj, kind, reason);
}

/* P.n.<name>: a send or a request for the registered actor. */
static void on_named(natsConnection *nc, natsSubscription *sub, natsMsg *nm,
                     void *closure)
{
    (void)nc;
    (void)sub;
    struct reg *r = closure;
    es_cluster_t *c = r->c;
    struct wire w;
    es_msg_t m;
    int rc =
        es__wire_decode(natsMsg_GetData(nm), natsMsg_GetDataLength(nm), &w, &m);
    if (rc || (w.kind != WIRE_SEND && w.kind != WIRE_REQ) ||
        m.type < ES_MSG_USER) {
        if (rc == 0)
            es_msg_release(&m);
        count(&c->st.bad_messages);
    } else if (w.kind == WIRE_REQ && natsMsg_GetReply(nm)) {
        es__gateway_request(c, r, natsMsg_GetReply(nm), &m);
    } else {
        (void)es__cluster_deliver(c, r->id, &m);
    }
    natsMsg_Destroy(nm);
}

/* P.q.<name>: someone asks who holds the name; r does. */
static void on_query(natsConnection *nc, natsSubscription *sub, natsMsg *nm,
                     void *closure)
{
    (void)nc;
    (void)sub;
    struct reg *r = closure;
    if (natsMsg_GetReply(nm))
        reg_tell(r->c, r, natsMsg_GetReply(nm), WIRE_UP, 0);
    natsMsg_Destroy(nm);
}

bool es__reg_end(es_cluster_t *c, struct reg *r, int reason)
{
    pthread_mutex_lock(&c->lock);
    struct reg **pp = &c->regs;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    bool found = *pp == r;
    if (found) {
        *pp = r->next;
        atomic_store(&r->ended, true);
    }
    pthread_mutex_unlock(&c->lock);
    if (!found)
        return false;
    /* The subscriptions hold r until their completion callbacks. */
    unsubscribe(c, r->sub);
    unsubscribe(c, r->query);
    reg_event(c, r, WIRE_DOWN, reason);
    return true;
}

int es_cluster_register(es_cluster_t *c, const char *name, es_actor_id_t id)
{
    if (!c || id == ES_ACTOR_NONE || !es__cluster_name_ok(name, true))
        return -EINVAL;
    if (atomic_load(&c->leaving))
        return -EIO;
    size_t n = strlen(name);
    char subj[3 * ES_CLUSTER_NAME_MAX + 8], qsubj[3 * ES_CLUSTER_NAME_MAX + 8];
    if (es__cluster_subject(c, subj, sizeof(subj), "n", name) ||
        es__cluster_subject(c, qsubj, sizeof(qsubj), "q", name))
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    for (struct reg *o = c->regs; o; o = o->next) {
        if (o->id == id && strcmp(o->name, name) == 0) {
            pthread_mutex_unlock(&c->lock);
            return -EEXIST;
        }
    }
    uint64_t regid = ++c->next_reg;
    pthread_mutex_unlock(&c->lock);

    struct reg *r = calloc(1, sizeof(*r) + n + 1);
    if (!r)
        return -ENOMEM;
    memcpy(r->name, name, n + 1);
    r->c = c;
    r->id = id;
    r->regid = regid;
    /* Ours (passed to the gateway below) + one per subscription. */
    atomic_init(&r->refs, 3);
    es__cluster_ref(c);
    /* The name (queue group = the subject: one member of the pool gets
     * each message) and the holder query. */
    int rc = subscribe(c, &r->sub, subj, subj, on_named, r, reg_sub_done);
    if (rc == 0)
        rc = subscribe(c, &r->query, qsubj, NULL, on_query, r, reg_sub_done);
    if (rc) {
        if (r->sub)
            unsubscribe(c, r->sub); /* its completion drops its share */
        else
            atomic_fetch_sub(&r->refs, 1);
        atomic_fetch_sub(&r->refs, 1); /* the query's, never made */
        es__reg_unref(r);
        return rc;
    }
    pthread_mutex_lock(&c->lock);
    r->next = c->regs;
    c->regs = r;
    pthread_mutex_unlock(&c->lock);
    reg_event(c, r, WIRE_UP, 0);
    /* The gateway watches the actor and ends the registration when it
     * stops; our reference passes to it. */
    if (es__gateway_watch(c, r) != 0) {
        (void)es__reg_end(c, r, -ESRCH);
        es__reg_unref(r);
    }
    return 0;
}

int es_cluster_unregister(es_cluster_t *c, const char *name, es_actor_id_t id)
{
    if (!c || !es__cluster_name_ok(name, true))
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    struct reg *r = c->regs;
    while (r && !(r->id == id && strcmp(r->name, name) == 0))
        r = r->next;
    if (r)
        atomic_fetch_add(&r->refs, 1); /* ours, across the calls below */
    pthread_mutex_unlock(&c->lock);
    if (!r)
        return -ENOENT;
    bool ended = es__reg_end(c, r, 0);
    if (ended)
        es__gateway_forget(c, r);
    es__reg_unref(r);
    return ended ? 0 : -ENOENT;
}

/* --- topics -------------------------------------------------------------- */

struct topic {
    struct topic *next;
    es_cluster_t *c;
    natsSubscription *sub;
    pthread_mutex_t lock; /* ids */
    es_actor_id_t *ids;
    size_t n, cap;
    es_actor_id_t *snap; /* the delivery thread's copy of ids */
    size_t snap_cap;
    char name[];
};

static void topic_done(void *closure)
{
    struct topic *t = closure;
    es_cluster_t *c = t->c;
    pthread_mutex_destroy(&t->lock);
    free(t->ids);
    free(t->snap);
    free(t);
    sub_done(c);
}

/* P.t.<topic>: one copy to every local subscriber. */
static void on_topic(natsConnection *nc, natsSubscription *sub, natsMsg *nm,
                     void *closure)
{
    (void)nc;
    (void)sub;
    struct topic *t = closure;
    es_cluster_t *c = t->c;
    struct wire w;
    es_msg_t m;
    int rc =
        es__wire_decode(natsMsg_GetData(nm), natsMsg_GetDataLength(nm), &w, &m);
    if (rc || w.kind != WIRE_SEND || m.type < ES_MSG_USER) {
        if (rc == 0)
            es_msg_release(&m);
        count(&c->st.bad_messages);
        natsMsg_Destroy(nm);
        return;
    }
    /* Deliver from a copy of the list: a delivery may wait for room in a
     * mailbox, and a behaviour subscribing meanwhile must not wait for
     * this thread. */
    pthread_mutex_lock(&t->lock);
    size_t n = t->n;
    if (n > t->snap_cap) {
        es_actor_id_t *snap = realloc(t->snap, n * sizeof(*snap));
        if (snap) {
            t->snap = snap;
            t->snap_cap = n;
        } else {
            n = t->snap_cap;
        }
    }
    if (n)
        memcpy(t->snap, t->ids, n * sizeof(*t->snap));
    atomic_fetch_add(&c->st.lost_mailbox, t->n - n); /* no memory to copy */
    pthread_mutex_unlock(&t->lock);
    size_t gone = 0;
    for (size_t i = 0; i < n; i++) {
        es_msg_t copy = m;
        if (m.ptr) {
            copy.ptr = es_malloc(m.len + 1);
            if (!copy.ptr) {
                count(&c->st.lost_mailbox);
                continue;
            }
            memcpy(copy.ptr, m.ptr, m.len);
        }
        if (es__cluster_deliver(c, t->snap[i], &copy) == -ESRCH)
            t->snap[gone++] = t->snap[i]; /* it stopped: unsubscribe it */
    }
    if (gone) {
        pthread_mutex_lock(&t->lock);
        for (size_t g = 0; g < gone; g++) {
            for (size_t i = 0; i < t->n; i++) {
                if (t->ids[i] == t->snap[g]) {
                    t->ids[i] = t->ids[--t->n];
                    break;
                }
            }
        }
        pthread_mutex_unlock(&t->lock);
    }
    es_msg_release(&m);
    natsMsg_Destroy(nm);
}

int es_cluster_subscribe(es_cluster_t *c, const char *topic, es_actor_id_t id)
{
    if (!c || id == ES_ACTOR_NONE || !es__cluster_name_ok(topic, true))
        return -EINVAL;
    if (atomic_load(&c->leaving))
        return -EIO;
    char subj[3 * ES_CLUSTER_NAME_MAX + 8];
    if (es__cluster_subject(c, subj, sizeof(subj), "t", topic))
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    struct topic *t = c->topics;
    while (t && strcmp(t->name, topic) != 0)
        t = t->next;
    int rc = 0;
    if (!t) {
        size_t n = strlen(topic);
        t = calloc(1, sizeof(*t) + n + 1);
        if (!t) {
            pthread_mutex_unlock(&c->lock);
            return -ENOMEM;
        }
        memcpy(t->name, topic, n + 1);
        t->c = c;
        pthread_mutex_init(&t->lock, NULL);
        rc = subscribe(c, &t->sub, subj, NULL, on_topic, t, topic_done);
        if (rc) {
            pthread_mutex_unlock(&c->lock);
            pthread_mutex_destroy(&t->lock);
            free(t);
            return rc;
        }
        t->next = c->topics;
        c->topics = t;
    }
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n; i++)
        if (t->ids[i] == id)
            rc = -EEXIST;
    if (rc == 0 && t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        es_actor_id_t *ids = realloc(t->ids, cap * sizeof(*ids));
        if (ids) {
            t->ids = ids;
            t->cap = cap;
        } else {
            rc = -ENOMEM;
        }
    }
    if (rc == 0)
        t->ids[t->n++] = id;
    pthread_mutex_unlock(&t->lock);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int es_cluster_unsubscribe(es_cluster_t *c, const char *topic, es_actor_id_t id)
{
    if (!c || !es__cluster_name_ok(topic, true))
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    struct topic **pp = &c->topics;
    while (*pp && strcmp((*pp)->name, topic) != 0)
        pp = &(*pp)->next;
    struct topic *t = *pp;
    int rc = -ENOENT;
    bool last = false;
    if (t) {
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->n; i++) {
            if (t->ids[i] == id) {
                t->ids[i] = t->ids[--t->n];
                rc = 0;
                break;
            }
        }
        last = t->n == 0;
        pthread_mutex_unlock(&t->lock);
        if (last)
            *pp = t->next;
    }
    pthread_mutex_unlock(&c->lock);
    if (last)
        unsubscribe(c, t->sub); /* topic_done() frees it */
    return rc;
}

/* --- nodes and heartbeats ------------------------------------------------ */

struct peer {
    struct peer *next;
    uint64_t last_ns;
    char name[];
};

static void on_beat(natsConnection *nc, natsSubscription *sub, natsMsg *nm,
                    void *closure)
{
    (void)nc;
    (void)sub;
    es_cluster_t *c = closure;
    const char *node = natsMsg_GetSubject(nm) + strlen(c->prefix) + 3;
    bool bye = natsMsg_GetDataLength(nm) == 3 &&
               memcmp(natsMsg_GetData(nm), "bye", 3) == 0;
    if (bye && strcmp(node, c->node) != 0 && es__cluster_name_ok(node, false)) {
        /* A node that leaves says so: its names go now, not after the
         * heartbeat bound. */
        pthread_mutex_lock(&c->lock);
        for (struct peer **pp = &c->peers; *pp; pp = &(*pp)->next) {
            if (strcmp((*pp)->name, node) == 0) {
                struct peer *p = *pp;
                *pp = p->next;
                free(p);
                break;
            }
        }
        pthread_mutex_unlock(&c->lock);
        es__proxies_node_gone(c, node, -ESHUTDOWN);
    } else if (strcmp(node, c->node) != 0 && es__cluster_name_ok(node, false)) {
        pthread_mutex_lock(&c->lock);
        struct peer *p = c->peers;
        while (p && strcmp(p->name, node) != 0)
            p = p->next;
        if (!p) {
            size_t n = strlen(node);
            p = calloc(1, sizeof(*p) + n + 1);
            if (p) {
                memcpy(p->name, node, n + 1);
                p->next = c->peers;
                c->peers = p;
            }
        }
        if (p)
            p->last_ns = now_ns();
        pthread_mutex_unlock(&c->lock);
    }
    natsMsg_Destroy(nm);
}

/* Declares lost every peer silent for hb_ms * hb_misses, but only while
 * this node's own connection has been up that long (a broker outage
 * silences everyone). */
static void check_peers(es_cluster_t *c)
{
    uint64_t now = now_ns();
    uint64_t limit = (uint64_t)c->hb_ms * (uint64_t)c->hb_misses * 1000000u;
    if (natsConnection_Status(c->nc) != NATS_CONN_STATUS_CONNECTED)
        return;
    pthread_mutex_lock(&c->lock);
    bool settled = now - c->connected_since_ns >= limit;
    struct peer *lost = NULL;
    for (struct peer **pp = &c->peers; *pp && settled;) {
        struct peer *p = *pp;
        if (now - p->last_ns >= limit) {
            *pp = p->next;
            p->next = lost;
            lost = p;
        } else {
            pp = &p->next;
        }
    }
    pthread_mutex_unlock(&c->lock);
    while (lost) {
        struct peer *p = lost;
        lost = p->next;
        count(&c->st.nodes_lost);
        es_log(ES_LOG_WARN, "cluster %s: node %s lost (no heartbeat)",
               c->prefix, p->name);
        es__proxies_node_gone(c, p->name, ES_CLUSTER_NODE_LOST);
        free(p);
    }
}

static void *heartbeat_main(void *arg)
{
    es_cluster_t *c = arg;
    char subj[2 * ES_CLUSTER_NAME_MAX + 8];
    snprintf(subj, sizeof(subj), "%s.h.%s", c->prefix, c->node);
    pthread_mutex_lock(&c->hb_lock);
    while (!c->hb_stop) {
        pthread_mutex_unlock(&c->hb_lock);
        (void)natsConnection_Publish(c->nc, subj, NULL, 0);
        check_peers(c);
        pthread_mutex_lock(&c->hb_lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)c->hb_ms % 1000 * 1000000L;
        until.tv_sec += c->hb_ms / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!c->hb_stop &&
               pthread_cond_timedwait(&c->hb_cond, &c->hb_lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&c->hb_lock);
    return NULL;
}

/* The express flusher: nats.c's own flusher waits 1 ms to batch before it
 * writes, which would add that to every hop of a request. A flush here
 * (natsConnection_FlushTimeout() writes the buffer in place, then waits
 * for the server's PONG) writes what is pending at once; publishes made
 * while it waits are written by the next round. One connection carries
 * everything, so NATS keeps each sender's order; plain sends keep nats.c's
 * batching. */
static void *flusher_main(void *arg)
{
    es_cluster_t *c = arg;
    pthread_mutex_lock(&c->fl_lock);
    for (;;) {
        while (!c->fl_stop && !atomic_load(&c->fl_wanted))
            pthread_cond_wait(&c->fl_cond, &c->fl_lock);
        if (c->fl_stop)
            break;
        pthread_mutex_unlock(&c->fl_lock);
        atomic_store(&c->fl_wanted, false);
        (void)natsConnection_FlushTimeout(c->nc, 1000);
        pthread_mutex_lock(&c->fl_lock);
    }
    pthread_mutex_unlock(&c->fl_lock);
    return NULL;
}

/* --- inbound replies, answers and events --------------------------------- */

static bool parse_hex(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                         : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

/* Hands a reply or a failure to a requester, retrying a full ring for at
 * most deliver_wait_ms. */
static void settle(es_cluster_t *c, const es_reply_token_t *tok, es_msg_t *m,
                   int reason)
{
    uint64_t end =
        now_ns() +
        (uint64_t)(c->deliver_wait_ms > 0 ? c->deliver_wait_ms : 0) * 1000000u;
    int rc;
    for (;;) {
        rc =
            m ? es_reply_to(c->rt, tok, m) : es_reply_error(c->rt, tok, reason);
        if (rc != -EAGAIN || now_ns() >= end)
            break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    if (rc == 0) {
        count(reason == -ESRCH && !m ? &c->st.no_responders : &c->st.replies);
        return;
    }
    count(rc == -EAGAIN ? &c->st.lost_mailbox : &c->st.lost_no_actor);
    if (m)
        es_msg_release(m);
}

/* P.r.<node>.t.<token> and P.r.<node>.w.<proxy>. */
static void on_inbox(natsConnection *nc, natsSubscription *sub, natsMsg *nm,
                     void *closure)
{
    (void)nc;
    (void)sub;
    es_cluster_t *c = closure;
    const char *rest =
        natsMsg_GetSubject(nm) + strlen(c->prefix) + strlen(c->node) + 4;
    bool none = natsMsg_IsNoResponders(nm);
    struct wire w = {0};
    es_msg_t m;
    bool have =
        !none && es__wire_decode(natsMsg_GetData(nm), natsMsg_GetDataLength(nm),
                                 &w, &m) == 0;
    uint64_t v[3];
    if (rest[0] == 't' && rest[1] == '.' && strlen(rest + 2) == 48 &&
        parse_hex(rest + 2, 16, &v[0]) && parse_hex(rest + 18, 16, &v[1]) &&
        parse_hex(rest + 34, 16, &v[2]) &&
        (none || (have && (w.kind == WIRE_REPLY || w.kind == WIRE_FAIL)))) {
        es_reply_token_t tok;
        memcpy(tok._private, v, sizeof(v));
        if (none)
            settle(c, &tok, NULL, -ESRCH);
        else if (w.kind == WIRE_REPLY)
            settle(c, &tok, &m, 0);
        else {
            es_msg_release(&m);
            settle(c, &tok, NULL, w.reason < 0 ? w.reason : -EIO);
        }
    } else if (rest[0] == 'w' && rest[1] == '.' && strlen(rest + 2) == 16 &&
               parse_hex(rest + 2, 16, &v[0]) &&
               (none || (have && w.kind == WIRE_UP && m.ptr))) {
        es__proxy_answer(c, v[0], none ? NULL : m.ptr, none ? NULL : &w);
        if (have)
            es_msg_release(&m);
    } else {
        if (have)
            es_msg_release(&m);
        count(&c->st.bad_messages);
    }
    natsMsg_Destroy(nm);
}

/* P.e.<name>: a registration came or went somewhere. */
static void on_event(natsConnection *nc, natsSubscription *sub, natsMsg *nm,
                     void *closure)
{
    (void)nc;
    (void)sub;
    es_cluster_t *c = closure;
    const char *name = natsMsg_GetSubject(nm) + strlen(c->prefix) + 3;
    struct wire w;
    es_msg_t m;
    if (es__wire_decode(natsMsg_GetData(nm), natsMsg_GetDataLength(nm), &w,
                        &m) == 0) {
        if ((w.kind == WIRE_UP || w.kind == WIRE_DOWN) && m.ptr)
            es__proxy_event(c, name, m.ptr, &w);
        else
            count(&c->st.bad_messages);
        es_msg_release(&m);
    } else {
        count(&c->st.bad_messages);
    }
    natsMsg_Destroy(nm);
}

static void cluster_sub_done(void *closure)
{
    sub_done(closure);
}

/* --- connection events --------------------------------------------------- */

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    es_cluster_t *c = closure;
    if (!atomic_load(&c->leaving))
        count(&c->st.disconnects);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    es_cluster_t *c = closure;
    count(&c->st.reconnects);
    /* Give every peer a fresh window: they were silent because we were. */
    pthread_mutex_lock(&c->lock);
    uint64_t now = now_ns();
    c->connected_since_ns = now;
    for (struct peer *p = c->peers; p; p = p->next)
        p->last_ns = now;
    pthread_mutex_unlock(&c->lock);
}

/* The last callback nats.c makes for a connection (after disconnected):
 * es_cluster_leave() waits for it before it lets c go. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    es_cluster_t *c = closure;
    atomic_store(&c->conn_closed, true); /* c is not touched after this */
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
                     void *closure)
{
    (void)nc;
    (void)sub;
    es_cluster_t *c = closure;
    if (err != NATS_SLOW_CONSUMER)
        es_log(ES_LOG_WARN, "cluster %s: %s", c->prefix,
               natsStatus_GetText(err));
}

/* --- join and leave ------------------------------------------------------ */

static int join_opts(const es_cluster_opts_t *o, es_cluster_t *c,
                     natsOptions **out)
{
    natsOptions *no = NULL;
    if (natsOptions_Create(&no) != NATS_OK)
        return -ENOMEM;
    natsStatus s =
        natsOptions_SetServers(no, (const char **)o->servers, o->servers_count);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, o->node);
    if (s == NATS_OK)
        s = natsOptions_UseGlobalMessageDelivery(no, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(
            no, o->reconnect_wait_ms > 0 ? o->reconnect_wait_ms : 100);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, c);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_reconnected, c);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(no, on_error, c);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_closed, c);
    if (s != NATS_OK) {
        natsOptions_Destroy(no);
        return -EINVAL;
    }
    *out = no;
    return 0;
}

static int join(es_runtime_t *rt, const es_cluster_opts_t *o,
                es_cluster_t **out);

/* Every thread the cluster starts (nats.c's, on connect and later from
 * them; the heartbeat and flusher threads) is created with every signal
 * blocked, as the runtime's own threads are: a signal the application
 * takes through es_signal_subscribe() must never land on one of them. */
int es_cluster_join(es_runtime_t *rt, const es_cluster_opts_t *o,
                    es_cluster_t **out)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = join(rt, o, out);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static int join(es_runtime_t *rt, const es_cluster_opts_t *o,
                es_cluster_t **out)
{
    if (!rt || !o || !out || !o->servers || o->servers_count < 1 ||
        !es__cluster_name_ok(o->cluster, true) ||
        !es__cluster_name_ok(o->node, false))
        return -EINVAL;
    for (int i = 0; i < o->servers_count; i++)
        if (!o->servers[i])
            return -EINVAL;
    if (es_runtime_current_loop(rt) >= 0)
        return -EDEADLK;
    es_cluster_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    atomic_fetch_add(&clusters_open, 1);
    c->rt = rt;
    snprintf(c->prefix, sizeof(c->prefix), "%s", o->cluster);
    snprintf(c->node, sizeof(c->node), "%s", o->node);
    c->hb_ms = o->heartbeat_ms > 0 ? o->heartbeat_ms : 250;
    c->hb_misses = o->heartbeat_misses > 0 ? o->heartbeat_misses : 4;
    c->deliver_wait_ms = o->deliver_wait_ms ? o->deliver_wait_ms : 50;
    c->ttl_ms = o->request_ttl_ms > 0 ? o->request_ttl_ms : 60000;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->hb_lock, NULL);
    pthread_mutex_init(&c->fl_lock, NULL);
    pthread_cond_init(&c->fl_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->hb_cond, &ca);
    pthread_condattr_destroy(&ca);

    natsOptions *no = NULL;
    int rc = join_opts(o, c, &no);
    if (rc == 0) {
        natsStatus s = natsConnection_Connect(&c->nc, no);
        natsOptions_Destroy(no);
        if (s != NATS_OK) {
            es_log(ES_LOG_ERROR, "cluster %s: connect: %s", c->prefix,
                   natsStatus_GetText(s));
            rc = s == NATS_NO_SERVER     ? -ECONNREFUSED
                 : s == NATS_NO_MEMORY   ? -ENOMEM
                 : s == NATS_INVALID_ARG ? -EINVAL
                                         : -EIO;
            c->nc = NULL;
        }
    }
    if (rc) {
        cluster_free(c);
        /* nats.c started its library threads for the attempt. */
        if (atomic_load(&clusters_open) == 0)
            (void)nats_CloseAndWait(1000);
        return rc;
    }
    c->connected_since_ns = now_ns();

    char subj[3 * ES_CLUSTER_NAME_MAX + 16];
    snprintf(subj, sizeof(subj), "%s.r.%s.>", c->prefix, c->node);
    rc = subscribe(c, &c->inbox, subj, NULL, on_inbox, c, cluster_sub_done);
    if (rc == 0) {
        snprintf(subj, sizeof(subj), "%s.e.>", c->prefix);
        rc =
            subscribe(c, &c->events, subj, NULL, on_event, c, cluster_sub_done);
    }
    if (rc == 0) {
        snprintf(subj, sizeof(subj), "%s.h.*", c->prefix);
        rc = subscribe(c, &c->beats, subj, NULL, on_beat, c, cluster_sub_done);
    }
    if (rc == 0)
        rc = es__gateway_spawn(c);
    if (rc == 0) {
        if (pthread_create(&c->fl_thread, NULL, flusher_main, c))
            rc = -ENOMEM;
        else
            c->fl_thread_started = true;
    }
    if (rc == 0) {
        if (pthread_create(&c->hb_thread, NULL, heartbeat_main, c))
            rc = -ENOMEM;
        else
            c->hb_thread_started = true;
    }
    /* Our subscriptions must be known to the server before we answer. */
    if (rc == 0 && natsConnection_FlushTimeout(c->nc, 5000) != NATS_OK)
        rc = -EIO;
    if (rc) {
        (void)es_cluster_leave(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void wait_zero(atomic_int *v, int ms)
{
    for (int i = 0; i < ms && atomic_load(v) > 0; i++) {
        struct timespec t = {0, 1000000};
        nanosleep(&t, NULL);
    }
}

int es_cluster_leave(es_cluster_t *c)
{
    if (!c)
        return -EINVAL;
    if (es_runtime_current_loop(c->rt) >= 0)
        return -EDEADLK;
    atomic_store(&c->leaving, true);
    if (c->hb_thread_started) {
        pthread_mutex_lock(&c->hb_lock);
        c->hb_stop = true;
        pthread_cond_broadcast(&c->hb_cond);
        pthread_mutex_unlock(&c->hb_lock);
        pthread_join(c->hb_thread, NULL);
    }
    /* Our names go first, so that remote monitors hear it from us. */
    for (;;) {
        pthread_mutex_lock(&c->lock);
        struct reg *r = c->regs;
        pthread_mutex_unlock(&c->lock);
        if (!r)
            break;
        (void)es__reg_end(c, r, -ESHUTDOWN);
    }
    if (c->nc) {
        char subj[2 * ES_CLUSTER_NAME_MAX + 8];
        snprintf(subj, sizeof(subj), "%s.h.%s", c->prefix, c->node);
        (void)es__cluster_publish(c, subj, NULL, "bye", 3, true);
    }
    es__proxies_stop(c);
    if (c->gateway != ES_ACTOR_NONE)
        (void)es_stop(c->rt, c->gateway);
    /* The actors publish until they stop (at most 2 s while the runtime
     * runs; a stopped runtime stops them when it is freed). */
    wait_zero(&c->actors, 2000);
    if (c->fl_thread_started) {
        pthread_mutex_lock(&c->fl_lock);
        c->fl_stop = true;
        pthread_cond_signal(&c->fl_cond);
        pthread_mutex_unlock(&c->fl_lock);
        pthread_join(c->fl_thread, NULL);
    }
    if (c->nc) {
        (void)natsConnection_FlushTimeout(c->nc, 1000);
        pthread_mutex_lock(&c->lock);
        struct topic *topics = c->topics;
        c->topics = NULL;
        pthread_mutex_unlock(&c->lock);
        while (topics) {
            struct topic *t = topics;
            topics = t->next;
            unsubscribe(c, t->sub);
        }
        unsubscribe(c, c->inbox);
        unsubscribe(c, c->events);
        unsubscribe(c, c->beats);
        natsConnection_Close(c->nc);
        for (int i = 0; i < 2000 && !atomic_load(&c->conn_closed); i++) {
            struct timespec t = {0, 1000000};
            nanosleep(&t, NULL);
        }
    }
    wait_zero(&c->subs, 2000);
    pthread_mutex_lock(&c->lock);
    while (c->peers) {
        struct peer *p = c->peers;
        c->peers = p->next;
        free(p);
    }
    pthread_mutex_unlock(&c->lock);
    bool last = atomic_load(&c->actors) == 0 && atomic_load(&c->subs) == 0 &&
                (!c->nc || atomic_load(&c->conn_closed));
    es__cluster_unref(c);
    /* The last cluster of the process also stops nats.c's own threads, so
     * that a program (or a test) that left leaves no thread behind. */
    if (last && atomic_load(&clusters_open) == 0)
        (void)nats_CloseAndWait(1000);
    return 0;
}

/* --- counters ------------------------------------------------------------ */

static uint64_t sub_dropped(natsSubscription *sub)
{
    int64_t d = 0;
    return sub && natsSubscription_GetDropped(sub, &d) == NATS_OK && d > 0
               ? (uint64_t)d
               : 0;
}

void es_cluster_stats(const es_cluster_t *cc, es_cluster_stats_t *out)
{
    es_cluster_t *c = (es_cluster_t *)cc;
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
#define LOAD(f) out->f = atomic_load_explicit(&c->st.f, memory_order_relaxed)
    LOAD(sent);
    LOAD(received);
    LOAD(requests);
    LOAD(replies);
    LOAD(no_responders);
    LOAD(served);
    LOAD(failed);
    LOAD(lost_mailbox);
    LOAD(lost_no_actor);
    LOAD(lost_publish);
    LOAD(bad_messages);
    LOAD(disconnects);
    LOAD(reconnects);
    LOAD(nodes_lost);
#undef LOAD
    uint64_t slow = atomic_load(&c->dropped_gone);
    pthread_mutex_lock(&c->lock);
    for (struct reg *r = c->regs; r; r = r->next) {
        out->registrations++;
        slow += sub_dropped(r->sub) + sub_dropped(r->query);
    }
    for (struct topic *t = c->topics; t; t = t->next) {
        out->topics++;
        slow += sub_dropped(t->sub);
    }
    for (struct peer *p = c->peers; p; p = p->next)
        out->nodes++;
    if (!atomic_load(&c->leaving))
        slow += sub_dropped(c->inbox) + sub_dropped(c->events) +
                sub_dropped(c->beats);
    pthread_mutex_unlock(&c->lock);
    out->lost_slow = slow;
    out->proxies = es__proxies_count(c);
}

int es_cluster_metrics_text(const es_cluster_t *c, char *buf, size_t size)
{
    if (!c || !buf)
        return -EINVAL;
    es_cluster_stats_t s;
    es_cluster_stats(c, &s);
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } rows[] = {
#define ROW(f, t, h) {#f, t, h, offsetof(es_cluster_stats_t, f)}
        ROW(sent, "counter", "Messages published to NATS."),
        ROW(received, "counter", "Messages from NATS handed to local actors."),
        ROW(requests, "counter", "Requests sent through proxies."),
        ROW(replies, "counter", "Replies handed to local requesters."),
        ROW(no_responders, "counter",
            "Requests failed at once: nobody held the name."),
        ROW(served, "counter", "Remote requests answered by local actors."),
        ROW(failed, "counter", "Remote requests failed here."),
        ROW(lost_mailbox, "counter",
            "Messages dropped: a mailbox stayed full."),
        ROW(lost_no_actor, "counter",
            "Messages dropped: the local actor had stopped."),
        ROW(lost_slow, "counter", "Messages dropped by nats.c: slow consumer."),
        ROW(lost_publish, "counter", "Publishes refused by the connection."),
        ROW(bad_messages, "counter", "Malformed messages dropped."),
        ROW(disconnects, "counter", "Broker connection losses."),
        ROW(reconnects, "counter", "Broker reconnections."),
        ROW(nodes_lost, "counter", "Nodes declared lost (no heartbeat)."),
        ROW(nodes, "gauge", "Other nodes alive now."),
        ROW(registrations, "gauge", "Names held by local actors now."),
        ROW(proxies, "gauge", "Proxies alive now."),
        ROW(topics, "gauge", "Topic subscriptions now."),
#undef ROW
    };
    size_t at = 0;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint64_t v;
        memcpy(&v, (const char *)&s + rows[i].off, sizeof(v));
        bool counter = rows[i].type[0] == 'c';
        int n = snprintf(buf + at, size - at,
                         "# HELP es_cluster_%s%s %s\n# TYPE es_cluster_%s%s "
                         "%s\nes_cluster_%s%s{node=\"%s\"} %llu\n",
                         rows[i].name, counter ? "_total" : "", rows[i].help,
                         rows[i].name, counter ? "_total" : "", rows[i].type,
                         rows[i].name, counter ? "_total" : "", c->node,
                         (unsigned long long)v);
        if (n < 0 || (size_t)n >= size - at)
            return -EOVERFLOW;
        at += (size_t)n;
    }
    return (int)at;
}
