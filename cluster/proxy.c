/* SPDX-License-Identifier: MIT */
/*
 * The cluster's two kinds of actor.
 *
 * The gateway (one per node) serves remote requests: it makes each one an
 * es_request() to the local actor, so that actor answers with es_reply()
 * as for a local requester, and publishes the outcome to the reply
 * subject. It also monitors every registered actor and ends the
 * registration when the actor stops.
 *
 * A proxy (one per process and remote name) stands for a cluster name: what
 * is sent to it is published to the name; a request to it keeps its reply
 * token and publishes with the token in the reply subject, so the answer
 * (or NATS "no responders") settles it from the delivery thread with no
 * table. It tracks who holds the name (answers to its query, then
 * registration events and lost nodes) and stops when nobody does, which
 * is the DOWN its monitors see.
 */
#include "cluster_private.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eventserver/timer.h>

/* --- a small map: nonzero u64 -> pointer (one actor's thread) ----------- */

struct map {
    uint64_t *keys;
    void **vals;
    size_t cap, n; /* cap: a power of two, or 0 */
};

static size_t map_slot(const struct map *m, uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k & (m->cap - 1);
}

static int map_put(struct map *m, uint64_t k, void *v)
{
    if ((m->n + 1) * 4 > m->cap * 3) {
        struct map g = {0};
        g.cap = m->cap ? m->cap * 2 : 64;
        g.keys = calloc(g.cap, sizeof(*g.keys));
        g.vals = calloc(g.cap, sizeof(*g.vals));
        if (!g.keys || !g.vals) {
            free(g.keys);
            free(g.vals);
            return -ENOMEM;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i])
                (void)map_put(&g, m->keys[i], m->vals[i]);
        free(m->keys);
        free(m->vals);
        *m = g;
    }
    size_t i = map_slot(m, k);
    while (m->keys[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = k;
    m->vals[i] = v;
    return 0;
}

/* Removes k and returns its value (NULL if absent). */
static void *map_take(struct map *m, uint64_t k)
{
    if (!m->cap)
        return NULL;
    size_t i = map_slot(m, k);
    while (m->keys[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        return NULL;
    void *v = m->vals[i];
    m->keys[i] = 0;
    m->n--;
    /* Backward shift: later entries of the run move into the hole. */
    for (size_t j = (i + 1) & (m->cap - 1); m->keys[j];
         j = (j + 1) & (m->cap - 1)) {
        size_t home = map_slot(m, m->keys[j]);
        bool movable =
            i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->keys[j] = 0;
            i = j;
        }
    }
    return v;
}

static void map_free(struct map *m)
{
    free(m->keys);
    free(m->vals);
    *m = (struct map){0};
}

/* --- control messages ----------------------------------------------------
 *
 * What delivery threads tell the gateway and the proxies travels as a ptr
 * message whose free_cb is ctl_free: a proxy tells it from a user message
 * of the same type by that function. */

#define CTL_TYPE (ES_MSG_USER + 0x7ffe0000u)

enum ctl_kind {
    CTL_REQ = 1, /* gateway: a remote request (target, reply, payload) */
    CTL_WATCH,   /* gateway: monitor registration reg */
    CTL_FORGET,  /* gateway: drop the monitor of reg */
    CTL_UP,      /* proxy: holder (node, regid) */
    CTL_DOWN,    /* proxy: holder (node, regid) gone with reason */
    CTL_NONE,    /* proxy: nobody answered the query */
    CTL_NODE,    /* proxy: every holder on node is gone, reason */
};

struct ctl {
    int kind;
    int reason;
    uint64_t regid;
    struct reg *reg;      /* CTL_WATCH, CTL_FORGET (a reference) */
    es_actor_id_t target; /* CTL_REQ */
    es_msg_t payload;     /* CTL_REQ, until taken */
    char text[];          /* CTL_REQ: the reply subject; else the node */
};

static void ctl_free(void *p)
{
    struct ctl *k = p;
    es_msg_release(&k->payload);
    if (k->reg)
        es__reg_unref(k->reg);
    free(k);
}

static struct ctl *ctl_new(int kind, const char *text)
{
    size_t n = text ? strlen(text) : 0;
    struct ctl *k = calloc(1, sizeof(*k) + n + 1);
    if (k) {
        k->kind = kind;
        if (n)
            memcpy(k->text, text, n);
    }
    return k;
}

/* Sends k to `to` from a delivery (or any foreign) thread; frees k if the
 * actor is gone or stays full. */
static int ctl_send(es_cluster_t *c, es_actor_id_t to, struct ctl *k)
{
    es_msg_t m = es_msg_ptr(CTL_TYPE, k, sizeof(*k), ctl_free);
    int rc =
        es_runtime_current_loop(c->rt) >= 0
            ? es_send(c->rt, to, &m)
            : es_send_wait(c->rt, to, &m,
                           c->deliver_wait_ms > 0 ? c->deliver_wait_ms : 50);
    if (rc)
        ctl_free(k);
    return rc;
}

static struct ctl *ctl_of(const es_msg_t *msg)
{
    return msg->type == CTL_TYPE && msg->free_cb == ctl_free ? msg->ptr : NULL;
}

/* --- the gateway --------------------------------------------------------- */

struct gateway {
    es_cluster_t *c;
    struct map pending;  /* request id -> reply subject (malloc'ed) */
    struct map monitors; /* monitor ref -> struct reg (a reference) */
};

/* Publishes a WIRE_REPLY (msg) or WIRE_FAIL (reason) to a reply subject. */
static void answer(es_cluster_t *c, const char *reply, const es_msg_t *msg,
                   int reason)
{
    struct wire_buf b;
    int rc = es__wire_encode(msg ? WIRE_REPLY : WIRE_FAIL, msg, reason, 0, &b);
    /* A reply we cannot carry (too big): the requester learns why. */
    if (rc && es__wire_encode(WIRE_FAIL, NULL, rc, 0, &b) != 0)
        return;
    (void)es__cluster_publish(c, reply, NULL, b.data, b.len, true);
    es__wire_done(&b);
}

static void gw_request(es_actor_t *self, struct gateway *g, struct ctl *k)
{
    es_cluster_t *c = g->c;
    es_ref_t rid = 0;
    int rc = es_request(self, k->target, &k->payload, c->ttl_ms, &rid);
    if (rc == 0) {
        k->payload = es_msg_make(ES_MSG_USER); /* the runtime owns it */
        char *reply = strdup(k->text);
        if (reply && map_put(&g->pending, rid, reply) == 0)
            return;
        free(reply);
        /* Its outcome will find no entry: the requester times out. */
        rc = -ENOMEM;
    }
    atomic_fetch_add(&c->st.failed, 1);
    answer(c, k->text, NULL, rc);
}

static void gw_outcome(struct gateway *g, es_msg_t *msg)
{
    char *reply = map_take(&g->pending, es_msg_ref(msg));
    if (!reply)
        return;
    if (msg->type == ES_MSG_REPLY) {
        atomic_fetch_add(&g->c->st.served, 1);
        answer(g->c, reply, msg, 0);
    } else {
        atomic_fetch_add(&g->c->st.failed, 1);
        answer(g->c, reply, NULL, es_msg_reason(msg));
    }
    free(reply);
}

static void gw_watch(es_actor_t *self, struct gateway *g, struct ctl *k)
{
    struct reg *r = k->reg;
    k->reg = NULL; /* the reference is the map's now, or dropped below */
    es_ref_t ref;
    if (atomic_load(&r->ended)) {
        es__reg_unref(r);
    } else if (es_monitor(self, r->id, &ref) != 0) {
        (void)es__reg_end(g->c, r, -ENOMEM);
        es__reg_unref(r);
    } else if (map_put(&g->monitors, ref, r) != 0) {
        (void)es_demonitor(self, ref);
        (void)es__reg_end(g->c, r, -ENOMEM);
        es__reg_unref(r);
    } else {
        r->mon = ref;
    }
}

static void gw_forget(es_actor_t *self, struct gateway *g, struct ctl *k)
{
    struct reg *r = k->reg;
    if (r->mon && map_take(&g->monitors, r->mon) == r) {
        (void)es_demonitor(self, r->mon);
        r->mon = 0;
        es__reg_unref(r); /* the map's reference */
    }
}

static int gateway_cb(es_actor_t *self, es_msg_t *msg)
{
    struct gateway *g = es_actor_state(self);
    struct ctl *k = ctl_of(msg);
    if (k) {
        if (k->kind == CTL_REQ)
            gw_request(self, g, k);
        else if (k->kind == CTL_WATCH)
            gw_watch(self, g, k);
        else if (k->kind == CTL_FORGET)
            gw_forget(self, g, k);
        return 0;
    }
    switch (msg->type) {
    case ES_MSG_REPLY:
    case ES_MSG_REQUEST_FAILED:
        gw_outcome(g, msg);
        break;
    case ES_MSG_DOWN: {
        struct reg *r = map_take(&g->monitors, es_msg_ref(msg));
        if (r) {
            r->mon = 0;
            (void)es__reg_end(g->c, r, es_msg_reason(msg));
            es__reg_unref(r);
        }
        break;
    }
    case ES_MSG_STOP:
        /* Requests still being served here fail now, not at the
         * requester's deadline. */
        for (size_t i = 0; i < g->pending.cap; i++) {
            if (g->pending.keys[i]) {
                atomic_fetch_add(&g->c->st.failed, 1);
                answer(g->c, g->pending.vals[i], NULL, -ESHUTDOWN);
            }
        }
        break;
    }
    return 0;
}

static void gateway_free(void *state)
{
    struct gateway *g = state;
    es_cluster_t *c = g->c;
    for (size_t i = 0; i < g->pending.cap; i++)
        if (g->pending.keys[i])
            free(g->pending.vals[i]);
    for (size_t i = 0; i < g->monitors.cap; i++)
        if (g->monitors.keys[i])
            es__reg_unref(g->monitors.vals[i]);
    map_free(&g->pending);
    map_free(&g->monitors);
    free(g);
    atomic_fetch_sub(&c->actors, 1);
    es__cluster_unref(c);
}

int es__gateway_spawn(es_cluster_t *c)
{
    struct gateway *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->c = c;
    es_spawn_opts_t o = {
        .behaviour = gateway_cb, .state = g, .state_free = gateway_free};
    es__cluster_ref(c);
    atomic_fetch_add(&c->actors, 1);
    int rc = es_spawn(c->rt, &o, &c->gateway);
    if (rc) {
        atomic_fetch_sub(&c->actors, 1);
        es__cluster_unref(c);
        free(g);
    }
    return rc;
}

void es__gateway_request(es_cluster_t *c, struct reg *r, const char *reply,
                         es_msg_t *payload)
{
    struct ctl *k = ctl_new(CTL_REQ, reply);
    if (!k) {
        es_msg_release(payload);
        answer(c, reply, NULL, -ENOMEM);
        return;
    }
    k->target = r->id;
    k->payload = *payload;
    int rc = ctl_send(c, c->gateway, k);
    if (rc) {
        atomic_fetch_add(&c->st.lost_mailbox, 1);
        answer(c, reply, NULL, rc == -ESRCH ? -ESHUTDOWN : rc);
    }
}

int es__gateway_watch(es_cluster_t *c, struct reg *r)
{
    struct ctl *k = ctl_new(CTL_WATCH, NULL);
    if (!k)
        return -ENOMEM;
    k->reg = r;
    atomic_fetch_add(&r->refs, 1); /* k's; the caller keeps its own */
    int rc = ctl_send(c, c->gateway, k);
    if (rc == 0)
        es__reg_unref(r); /* the caller's passes to the gateway */
    return rc;
}

void es__gateway_forget(es_cluster_t *c, struct reg *r)
{
    struct ctl *k = ctl_new(CTL_FORGET, NULL);
    if (!k)
        return; /* the monitor stays until the actor stops: harmless */
    k->reg = r;
    atomic_fetch_add(&r->refs, 1);
    (void)ctl_send(c, c->gateway, k);
}

/* --- proxies ------------------------------------------------------------- */

struct proxy_ent {
    struct proxy_ent *next;
    es_actor_id_t id;
    char name[];
};

struct holder {
    uint64_t regid; /* 0 in a tombstone: every registration of node */
    char node[ES_CLUSTER_NAME_MAX + 1];
};

#define TOMBS 8

struct proxy {
    es_cluster_t *c;
    struct holder *holders;
    size_t n, cap;
    /* Registrations that went before their holder's answer to our query
     * came in (or arrived at all): an answer from one of them is stale. */
    struct holder tombs[TOMBS];
    unsigned ntombs;
    int last_reason; /* of the last such going (the DOWN's reason) */
    bool have_reason;
    uint64_t query_gen; /* the tag of the current query's timer */
    char subj[3 * ES_CLUSTER_NAME_MAX + 8]; /* P.n.<name> */
    char name[ES_CLUSTER_NAME_MAX + 1];
};

/* Takes the proxy out of the table (if it is still there under its name). */
static void proxy_unlist(es_cluster_t *c, const char *name, es_actor_id_t id)
{
    pthread_mutex_lock(&c->lock);
    for (struct proxy_ent **pp = &c->proxies; *pp; pp = &(*pp)->next) {
        struct proxy_ent *e = *pp;
        if (e->id == id && strcmp(e->name, name) == 0) {
            *pp = e->next;
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

/* Nobody holds the name any more: stop with `reason` (its monitors' DOWN;
 * requests it still keeps fail with -ESRCH). */
static void proxy_gone(es_actor_t *self, struct proxy *p, int reason)
{
    proxy_unlist(p->c, p->name, es_actor_self(self));
    es_actor_exit(self, reason);
}

static bool tombstoned(const struct proxy *p, const char *node, uint64_t regid)
{
    unsigned n = p->ntombs < TOMBS ? p->ntombs : TOMBS;
    for (unsigned i = 0; i < n; i++)
        if ((!p->tombs[i].regid || p->tombs[i].regid == regid) &&
            !strcmp(p->tombs[i].node, node))
            return true;
    return false;
}

static void tomb_add(struct proxy *p, const char *node, uint64_t regid,
                     int reason)
{
    struct holder *t = &p->tombs[p->ntombs++ % TOMBS];
    t->regid = regid;
    snprintf(t->node, sizeof(t->node), "%s", node);
    p->last_reason = reason;
    p->have_reason = true;
}

static void holder_add(struct proxy *p, const char *node, uint64_t regid)
{
    if (tombstoned(p, node, regid))
        return;
    for (size_t i = 0; i < p->n; i++)
        if (p->holders[i].regid == regid && !strcmp(p->holders[i].node, node))
            return;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        struct holder *h = realloc(p->holders, cap * sizeof(*h));
        if (!h)
            return; /* not tracked: DOWN may come late, never early */
        p->holders = h;
        p->cap = cap;
    }
    p->holders[p->n].regid = regid;
    snprintf(p->holders[p->n].node, sizeof(p->holders[p->n].node), "%s", node);
    p->n++;
}

/* Removes holders (regid 0: every holder on node). Returns how many. */
static size_t holder_remove(struct proxy *p, const char *node, uint64_t regid)
{
    size_t before = p->n;
    for (size_t i = 0; i < p->n;) {
        if ((!regid || p->holders[i].regid == regid) &&
            !strcmp(p->holders[i].node, node))
            p->holders[i] = p->holders[--p->n];
        else
            i++;
    }
    return before - p->n;
}

/* Asks who holds the name: every holder answers, nobody is "no
 * responders". A holder that goes (or a node that is lost) before it
 * answers sends no answer at all, so a timer asks again while the set is
 * empty: the next query then meets no responders, or the holders left. */
static void proxy_query(es_actor_t *self, struct proxy *p)
{
    es_cluster_t *c = p->c;
    char subj[3 * ES_CLUSTER_NAME_MAX + 8], reply[3 * ES_CLUSTER_NAME_MAX + 32];
    if (es__cluster_subject(c, subj, sizeof(subj), "q", p->name))
        return;
    snprintf(reply, sizeof(reply), "%s.r.%s.w.%016" PRIx64, c->prefix, c->node,
             (uint64_t)es_actor_self(self));
    (void)es__cluster_publish(c, subj, reply, NULL, 0, true);
    (void)es_timer_start(self, (uint64_t)c->hb_ms * 2, 0, ++p->query_gen, NULL);
}

/* A holder went, or all of a node's: stop if it was the last; if the set
 * was empty (our query's answers still on their way), remember it and ask
 * again. */
static void holder_gone(es_actor_t *self, struct proxy *p, const char *node,
                        uint64_t regid, int reason)
{
    bool had = p->n > 0;
    size_t removed = holder_remove(p, node, regid);
    if (removed && p->n == 0) {
        proxy_gone(self, p, reason);
    } else if (!had) {
        tomb_add(p, node, regid, reason);
        proxy_query(self, p);
    }
}

/* A user message: published to the name; a request keeps its token in the
 * reply subject. */
static void proxy_forward(es_actor_t *self, struct proxy *p, es_msg_t *msg)
{
    es_cluster_t *c = p->c;
    es_reply_token_t tok;
    bool request = es_reply_token(self, msg, &tok) == 0;
    struct wire_buf b;
    int rc = es__wire_encode(request ? WIRE_REQ : WIRE_SEND, msg, 0, 0, &b);
    if (rc == 0) {
        if (request) {
            char reply[3 * ES_CLUSTER_NAME_MAX + 72];
            snprintf(reply, sizeof(reply),
                     "%s.r.%s.t.%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
                     c->prefix, c->node, tok._private[0], tok._private[1],
                     tok._private[2]);
            atomic_fetch_add(&c->st.requests, 1);
            rc = es__cluster_publish(c, p->subj, reply, b.data, b.len, true);
        } else {
            rc = es__cluster_publish(c, p->subj, NULL, b.data, b.len, true);
        }
        es__wire_done(&b);
    }
    if (rc && request)
        (void)es_reply_error(c->rt, &tok, rc);
}

static int proxy_cb(es_actor_t *self, es_msg_t *msg)
{
    struct proxy *p = es_actor_state(self);
    struct ctl *k = ctl_of(msg);
    if (!k) {
        if (msg->type == ES_MSG_START)
            proxy_query(self, p);
        else if (msg->type == ES_MSG_TIMER) {
            if (es_msg_timer_tag(msg) == p->query_gen && p->n == 0)
                proxy_query(self, p);
        } else if (msg->type >= ES_MSG_USER)
            proxy_forward(self, p, msg);
        return 0;
    }
    switch (k->kind) {
    case CTL_UP:
        holder_add(p, k->text, k->regid);
        break;
    case CTL_DOWN:
        holder_gone(self, p, k->text, k->regid, k->reason);
        break;
    case CTL_NODE:
        holder_gone(self, p, k->text, 0, k->reason);
        break;
    case CTL_NONE:
        if (p->n == 0)
            proxy_gone(self, p, p->have_reason ? p->last_reason : -ESRCH);
        break;
    }
    return 0;
}

static void proxy_free(void *state)
{
    struct proxy *p = state;
    es_cluster_t *c = p->c;
    free(p->holders);
    free(p);
    atomic_fetch_sub(&c->actors, 1);
    es__cluster_unref(c);
}

int es__proxy_get(es_cluster_t *c, const char *name, es_actor_id_t *out)
{
    pthread_mutex_lock(&c->lock);
    for (struct proxy_ent *e = c->proxies; e; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            *out = e->id;
            pthread_mutex_unlock(&c->lock);
            return 0;
        }
    }
    size_t n = strlen(name);
    struct proxy_ent *e = calloc(1, sizeof(*e) + n + 1);
    struct proxy *p = calloc(1, sizeof(*p));
    int rc = e && p
                 ? es__cluster_subject(c, p->subj, sizeof(p->subj), "n", name)
                 : -ENOMEM;
    if (rc == 0) {
        memcpy(e->name, name, n + 1);
        memcpy(p->name, name, n + 1);
        p->c = c;
        es_spawn_opts_t o = {
            .behaviour = proxy_cb, .state = p, .state_free = proxy_free};
        es__cluster_ref(c);
        atomic_fetch_add(&c->actors, 1);
        rc = es_spawn(c->rt, &o, &e->id);
        if (rc) {
            atomic_fetch_sub(&c->actors, 1);
            es__cluster_unref(c);
        }
    }
    if (rc) {
        pthread_mutex_unlock(&c->lock);
        free(e);
        free(p);
        return rc;
    }
    e->next = c->proxies;
    c->proxies = e;
    *out = e->id;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* The proxy of `name`, or ES_ACTOR_NONE. */
static es_actor_id_t proxy_find(es_cluster_t *c, const char *name)
{
    es_actor_id_t id = ES_ACTOR_NONE;
    pthread_mutex_lock(&c->lock);
    for (struct proxy_ent *e = c->proxies; e; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            id = e->id;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return id;
}

void es__proxy_event(es_cluster_t *c, const char *name, const char *node,
                     const struct wire *w)
{
    es_actor_id_t id = proxy_find(c, name);
    if (id == ES_ACTOR_NONE)
        return;
    struct ctl *k = ctl_new(w->kind == WIRE_UP ? CTL_UP : CTL_DOWN, node);
    if (k) {
        k->regid = w->reg;
        k->reason = w->reason;
        (void)ctl_send(c, id, k);
    }
}

void es__proxy_answer(es_cluster_t *c, es_actor_id_t id, const char *node,
                      const struct wire *w)
{
    struct ctl *k = ctl_new(node ? CTL_UP : CTL_NONE, node);
    if (k) {
        k->regid = w ? w->reg : 0;
        (void)ctl_send(c, id, k);
    }
}

void es__proxies_node_gone(es_cluster_t *c, const char *node, int reason)
{
    /* Sent outside the lock: es_send_wait() may wait for room. */
    size_t n = 0, cap = 0;
    es_actor_id_t *ids = NULL;
    pthread_mutex_lock(&c->lock);
    for (struct proxy_ent *e = c->proxies; e; e = e->next) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            es_actor_id_t *more = realloc(ids, ncap * sizeof(*ids));
            if (!more)
                break;
            ids = more;
            cap = ncap;
        }
        ids[n++] = e->id;
    }
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        struct ctl *k = ctl_new(CTL_NODE, node);
        if (k) {
            k->reason = reason;
            (void)ctl_send(c, ids[i], k);
        }
    }
    free(ids);
}

void es__proxies_stop(es_cluster_t *c)
{
    for (;;) {
        pthread_mutex_lock(&c->lock);
        struct proxy_ent *e = c->proxies;
        if (e)
            c->proxies = e->next;
        pthread_mutex_unlock(&c->lock);
        if (!e)
            break;
        (void)es_stop(c->rt, e->id);
        free(e);
    }
}

uint64_t es__proxies_count(es_cluster_t *c)
{
    uint64_t n = 0;
    pthread_mutex_lock(&c->lock);
    for (struct proxy_ent *e = c->proxies; e; e = e->next)
        n++;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* --- the public calls on proxies ----------------------------------------- */

int es_cluster_lookup(es_cluster_t *c, const char *name, es_actor_id_t *out)
{
    if (!c || !out || !es__cluster_name_ok(name, true))
        return -EINVAL;
    if (atomic_load(&c->leaving))
        return -ESHUTDOWN;
    return es__proxy_get(c, name, out);
}

int es_cluster_monitor(es_cluster_t *c, es_actor_t *self, const char *name,
                       es_ref_t *ref)
{
    es_actor_id_t id;
    int rc = es_cluster_lookup(c, name, &id);
    return rc ? rc : es_monitor(self, id, ref);
}
