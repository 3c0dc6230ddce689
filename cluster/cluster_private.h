/* SPDX-License-Identifier: MIT */
/*
 * Inside the cluster module (docs/cluster.md has the picture). Subjects,
 * with P the cluster name and N this node:
 *   P.n.<name>        sends and requests to a name (queue group per name)
 *   P.q.<name>        "who holds <name>?" (every holder answers)
 *   P.e.<name>        a holder came or went (every node listens: P.e.>)
 *   P.t.<topic>       topic publishes (one subscription per process)
 *   P.h.<node>        heartbeats (every node listens: P.h.*)
 *   P.r.N.t.<token>   replies to requests made on N (the reply token)
 *   P.r.N.w.<proxy>   answers to N's "who holds" queries
 */
#ifndef ES_CLUSTER_PRIVATE_H
#define ES_CLUSTER_PRIVATE_H

#include <eventserver/cluster.h>

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* --- the wire ------------------------------------------------------------ */

enum wire_kind {
    WIRE_SEND = 1, /* a message to a name or a topic */
    WIRE_REQ,      /* a request: the reply subject carries the token */
    WIRE_REPLY,    /* its answer */
    WIRE_FAIL,     /* its failure: reason */
    WIRE_UP,       /* a registration began (P.e.<name>, P.q answers) */
    WIRE_DOWN,     /* a registration ended: reason */
};

#define WIRE_MAGIC 0xE5
#define WIRE_PTR 1u /* flags: the payload was a ptr, not inline bytes */
#define WIRE_HEAD 24
#define WIRE_MAX_PAYLOAD (1u << 20)

/* 24 bytes, little-endian as the host (every node runs the same ABI). */
struct wire {
    uint8_t magic, kind, flags, pad;
    uint32_t type;
    int32_t reason;
    uint32_t len;
    uint64_t reg; /* WIRE_UP / WIRE_DOWN: the registration's id */
};

/* An encoded message: in `small` when it fits, else malloc'ed. */
struct wire_buf {
    char *data;
    int len;
    char small[512];
};

/* Encodes kind + *msg (may be NULL) into *out; es__wire_done() after. */
int es__wire_encode(int kind, const es_msg_t *msg, int reason, uint64_t reg,
                    struct wire_buf *out);
void es__wire_done(struct wire_buf *b);
/* Decodes data into *head and *msg (ptr payloads are es_malloc'ed copies
 * owned by *msg, freed by es_free). -EBADMSG if malformed. */
int es__wire_decode(const char *data, int len, struct wire *head,
                    es_msg_t *msg);

/* --- the cluster --------------------------------------------------------- */

struct reg;
struct topic;
struct peer;
struct proxy_ent;

struct es_cluster {
    es_runtime_t *rt;
    natsConnection *nc;
    char prefix[ES_CLUSTER_NAME_MAX + 1];
    char node[ES_CLUSTER_NAME_MAX + 1];
    int hb_ms, hb_misses, deliver_wait_ms, ttl_ms;
    es_actor_id_t gateway;

    /* Held by: the user (until leave), every live subscription (until its
     * completion callback), every cluster actor (until its state_free). */
    atomic_int refs;
    atomic_int subs; /* subscriptions whose completion has not come */
    atomic_int actors;
    atomic_bool leaving;
    atomic_bool conn_closed; /* nats.c's closed callback has run */

    pthread_mutex_t lock; /* regs, proxies, topics, peers */
    struct reg *regs;
    struct proxy_ent *proxies;
    struct topic *topics;
    struct peer *peers;
    uint64_t next_reg;

    pthread_t hb_thread;
    bool hb_thread_started;

    /* The express flusher (see es__cluster_publish()). */
    pthread_t fl_thread;
    bool fl_thread_started, fl_stop;
    pthread_mutex_t fl_lock;
    pthread_cond_t fl_cond;
    atomic_bool fl_wanted;
    pthread_mutex_t hb_lock;
    pthread_cond_t hb_cond;
    bool hb_stop;
    uint64_t connected_since_ns;

    natsSubscription *inbox, *events, *beats;

    struct {
        _Atomic uint64_t sent, received, requests, replies, no_responders,
            served, failed, lost_mailbox, lost_no_actor, lost_slow,
            lost_publish, bad_messages, disconnects, reconnects, nodes_lost;
    } st;
    _Atomic uint64_t
        dropped_gone; /* nats drops on subscriptions since closed */
};

/* A local actor exported under a name: two subscriptions (its queue
 * subscription on P.n.<name>, its answer to P.q.<name>). */
struct reg {
    struct reg *next;
    es_cluster_t *c;
    es_actor_id_t id;
    uint64_t regid;
    atomic_int refs; /* the two subscriptions + the gateway's monitor */
    atomic_bool ended;
    es_ref_t mon; /* the gateway's monitor of id (gateway's thread only) */
    natsSubscription *sub, *query;
    char name[];
};

/* References. */
void es__cluster_ref(es_cluster_t *c);
void es__cluster_unref(es_cluster_t *c);

/* Publishing: 0 or a negative errno, counted in st.sent / st.lost_publish.
 * nats.c writes a publish within about 1 ms (its flusher waits that long
 * to batch); `urgent` ones (requests, replies, answers, events) are
 * written at once by the express flusher instead. */
int es__cluster_publish(es_cluster_t *c, const char *subj, const char *reply,
                        const char *data, int len, bool urgent);
/* subject = prefix + "." + kind + "." + name; -EOVERFLOW if too long.
 * kind is one letter. */
int es__cluster_subject(const es_cluster_t *c, char *buf, size_t size,
                        const char *kind, const char *name);

/* Names, topics, nodes: 1 .. ES_CLUSTER_NAME_MAX bytes of [A-Za-z0-9_-] and
 * (if dots) inner single '.'. */
bool es__cluster_name_ok(const char *name, bool dots);

/* Hands a decoded message to local actor `to` from a delivery thread,
 * waiting for room at most deliver_wait_ms; counts what is lost.
 * Returns the es_send() code. */
int es__cluster_deliver(es_cluster_t *c, es_actor_id_t to, es_msg_t *msg);

/* A registration ended (unregister, its actor stopped, leave): takes it out
 * of the list if it is still there, closes its subscriptions and tells the
 * cluster. True if this call removed it. Any thread. */
bool es__reg_end(es_cluster_t *c, struct reg *r, int reason);
void es__reg_unref(struct reg *r);

/* --- actors (proxy.c) ---------------------------------------------------- */

/* Spawns the gateway: serves remote requests (WIRE_REQ) for local actors,
 * watches registered actors. */
int es__gateway_spawn(es_cluster_t *c);
/* A remote request for registration r: to the gateway. Delivery thread. */
void es__gateway_request(es_cluster_t *c, struct reg *r, const char *reply,
                         es_msg_t *payload);
/* Registration r begins: the gateway monitors its actor (and takes one
 * reference of r). Nonzero: the gateway is gone, the reference is ours. */
int es__gateway_watch(es_cluster_t *c, struct reg *r);
/* Registration r ended by es_cluster_unregister(): the gateway drops its
 * monitor (and its reference). */
void es__gateway_forget(es_cluster_t *c, struct reg *r);

/* The proxy of `name` (made on first use). Any thread. */
int es__proxy_get(es_cluster_t *c, const char *name, es_actor_id_t *out);
/* A registration event or query answer (WIRE_UP/WIRE_DOWN) for `name` from
 * `node`. Delivery thread. */
void es__proxy_event(es_cluster_t *c, const char *name, const char *node,
                     const struct wire *w);
/* The answer to proxy `id`'s query: from `node`, or no responders (node
 * NULL). Delivery thread. */
void es__proxy_answer(es_cluster_t *c, es_actor_id_t id, const char *node,
                      const struct wire *w);
/* Node `node` was lost (no heartbeats) or left. */
void es__proxies_node_gone(es_cluster_t *c, const char *node, int reason);
/* Stops every proxy (leave). */
void es__proxies_stop(es_cluster_t *c);
uint64_t es__proxies_count(es_cluster_t *c);

#endif /* ES_CLUSTER_PRIVATE_H */
