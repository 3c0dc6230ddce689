/* SPDX-License-Identifier: MIT */
/*
 * The cluster: actors in different processes and hosts reach one another by
 * name, through a NATS server (libeventserver_cluster, linked with nats.c).
 *
 * - A process joins with es_cluster_join() under a cluster name (the
 *   subject prefix every node of that cluster shares) and a node name
 *   (unique in the cluster).
 * - es_cluster_register() exports a local actor under a cluster-wide name.
 *   The same name registered by several actors (on one node or many) is a
 *   pool: each message reaches exactly one member (a NATS queue group).
 * - es_cluster_send() sends to a name from any thread. es_cluster_lookup()
 *   gives a local actor id that stands for a cluster name (a proxy):
 *   es_send(), es_request() and es_monitor() on it work as on any actor.
 *   A request through it has the local outcomes: the reply, -ETIMEDOUT, or
 *   -ESRCH at once when no node holds the name.
 * - Topics: es_cluster_subscribe() / es_cluster_publish(); one broker
 *   subscription per process and topic, fanned out locally.
 *
 * Delivery is at most once (core NATS): what can be lost, when, and the
 * counter that counts it are in docs/cluster.md and es_cluster_stats_t.
 * No call here waits on the network from a demux thread: the ones that do
 * (join, leave) refuse to run there with -EDEADLK.
 */
#ifndef EVENTSERVER_CLUSTER_H
#define EVENTSERVER_CLUSTER_H

#include <eventserver/actor.h>
#include <eventserver/runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_cluster es_cluster_t;

/* Longest cluster, node, actor or topic name, in bytes (without the NUL).
 * Names are 1.. bytes of [A-Za-z0-9_-] and '.', not starting or ending
 * with '.' and without "..": a name is part of a NATS subject. */
#define ES_CLUSTER_NAME_MAX 128

/* The reason of ES_MSG_DOWN when the node that held a name was lost: it
 * sent no heartbeat for the detection bound. (Requests still waiting on
 * the proxy then fail with -ESRCH, as for any actor that stops.) */
#define ES_CLUSTER_NODE_LOST (-EHOSTDOWN)

typedef struct es_cluster_opts {
    /* NATS server URLs ("nats://127.0.0.1:4222"); at least one. */
    const char *const *servers;
    int servers_count;
    const char *cluster; /* subject prefix shared by all nodes */
    const char *node;    /* this node's name, unique in the cluster */
    /* Heartbeat period (0: 250 ms). A node that sent none for
     * heartbeat_ms * heartbeat_misses is lost (0: 4 misses); remote
     * monitors of its names then receive DOWN within
     * heartbeat_ms * (heartbeat_misses + 1). */
    int heartbeat_ms;
    int heartbeat_misses;
    /* How long a delivery thread waits for room in a full local mailbox
     * before the message is dropped and counted as lost_mailbox
     * (0: 50 ms; < 0: never wait). */
    int deliver_wait_ms;
    /* Longest time an inbound remote request may stay unanswered by the
     * local actor before the remote requester is told -ETIMEDOUT
     * (0: 60,000 ms). Its own deadline usually comes first. */
    int request_ttl_ms;
    /* Reconnect wait between attempts (0: 100 ms); attempts never stop
     * until es_cluster_leave(). */
    int reconnect_wait_ms;
} es_cluster_opts_t;

/*
 * Connects to the NATS server(s) and joins `opts->cluster` as
 * `opts->node`. Connection loss, reconnection and resubscription are
 * handled inside from then on; messages published while disconnected are
 * buffered (up to nats.c's reconnect buffer, 8 MiB) and sent on reconnect.
 * The threads it starts (nats.c's and its own) block every signal, so
 * es_signal_subscribe() and es_runtime_stop_on_signal() keep working
 * whether they are called before or after.
 * Returns: 0 and *out; -EINVAL (a missing or malformed name or URL);
 * -ECONNREFUSED (no server answered); -EDEADLK on a demux thread of rt;
 * -ENOMEM; -EIO (another nats.c failure, logged).
 * Ownership: *out belongs to the caller until es_cluster_leave(); it must
 * be left before rt is freed. Strings in opts are copied.
 * Thread: any thread that is not one of rt's.
 */
ES_EXTERN int es_cluster_join(es_runtime_t *rt, const es_cluster_opts_t *opts,
                              es_cluster_t **out);

/*
 * Leaves the cluster: this node's names are announced gone (remote
 * monitors see DOWN with -ESHUTDOWN), pending publishes are flushed (at
 * most 1 s), proxies stop (requests waiting on them fail with -ESRCH at
 * once), the connection closes and c is freed.
 * Returns: 0; -EDEADLK on a demux thread (nothing is done).
 * Thread: any thread that is not one of the runtime's.
 */
ES_EXTERN int es_cluster_leave(es_cluster_t *c);

/*
 * Exports local actor `id` as `name` in the cluster. Several actors under
 * one name (on any nodes) form a pool: each message or request reaches one
 * of them. The registration ends when the actor stops or on
 * es_cluster_unregister(); remote monitors of the name see DOWN when the
 * last holder goes.
 * An id that has already stopped is registered and removed at once (its
 * monitor answers -ESRCH), so a dead actor never stays exported.
 * Returns: 0; -EINVAL (bad name, ES_ACTOR_NONE); -EEXIST (id already holds
 * name); -ENOMEM; -EIO (the connection is closed).
 * Ownership: the name is copied. Thread: any.
 */
ES_EXTERN int es_cluster_register(es_cluster_t *c, const char *name,
                                  es_actor_id_t id);

/*
 * Ends the registration of `id` under `name`.
 * Returns: 0; -ENOENT (id does not hold name); -EINVAL. Thread: any.
 */
ES_EXTERN int es_cluster_unregister(es_cluster_t *c, const char *name,
                                    es_actor_id_t id);

/*
 * Sends *msg to the actor (or one member of the pool) registered as `name`
 * on any node, this one included. The receiver gets an ordinary message
 * of msg->type: inline bytes as sent, a ptr payload as a copy it owns
 * (freed by the runtime unless taken), from = ES_ACTOR_NONE. At most
 * once: a name nobody holds drops the message (NATS has no one to give it
 * to), which this call cannot see; use es_request() through
 * es_cluster_lookup() for an answer.
 * Returns: 0; -EINVAL (bad name, system type, payload over 1 MiB);
 * -ENOMEM; -EIO (the connection is closed).
 * Ownership: the caller keeps msg and its payload (it is copied).
 * Thread: any (publishing only buffers; it never waits on the network).
 */
ES_EXTERN int es_cluster_send(es_cluster_t *c, const char *name,
                              const es_msg_t *msg);

/*
 * A local actor that stands for cluster name `name` (one per process and
 * name, made on first use). es_send() to it is es_cluster_send();
 * es_request() to it reaches a holder, whose es_reply() comes back as
 * ES_MSG_REPLY, or fails with -ESRCH at once if no node holds the name.
 * es_monitor() of it delivers DOWN when the name has no holder left: the
 * reason is 0 (unregistered), the reason its last actor stopped with,
 * -ESHUTDOWN (its node left), ES_CLUSTER_NODE_LOST, or -ESRCH (nobody held
 * the name when the proxy was made). The proxy stops then, and requests
 * still waiting on it fail with -ESRCH at once, even one whose holder
 * would still have answered (a holder that unregisters, then replies); a
 * later lookup makes a new proxy.
 * Returns: 0 and *out; -EINVAL; -ENOMEM; -ESHUTDOWN.
 * Thread: any.
 */
ES_EXTERN int es_cluster_lookup(es_cluster_t *c, const char *name,
                                es_actor_id_t *out);

/*
 * es_cluster_lookup() + es_monitor(): self receives exactly one
 * ES_MSG_DOWN (from = the proxy, es_msg_ref() = *ref) when `name` has no
 * holder left in the cluster, as described above.
 * Returns: as es_cluster_lookup() and es_monitor().
 * Thread: owning loop only, inside self's behaviour.
 */
ES_EXTERN int es_cluster_monitor(es_cluster_t *c, es_actor_t *self,
                                 const char *name, es_ref_t *ref);

/*
 * Subscribes local actor `id` to `topic`: it receives every message
 * published to the topic from then on, on any node (from = ES_ACTOR_NONE,
 * a ptr payload is a copy it owns). The first subscriber in this process
 * makes the one broker subscription; the rest share it. A subscriber that
 * stops is removed.
 * Returns: 0; -EEXIST (already subscribed); -EINVAL; -ENOMEM; -EIO.
 * Thread: any.
 */
ES_EXTERN int es_cluster_subscribe(es_cluster_t *c, const char *topic,
                                   es_actor_id_t id);

/* Ends a subscription. Returns: 0; -ENOENT; -EINVAL. Thread: any. */
ES_EXTERN int es_cluster_unsubscribe(es_cluster_t *c, const char *topic,
                                     es_actor_id_t id);

/*
 * Publishes *msg to every subscriber of `topic` on every node.
 * Returns and ownership as es_cluster_send(). Thread: any.
 */
ES_EXTERN int es_cluster_publish(es_cluster_t *c, const char *topic,
                                 const es_msg_t *msg);

/* What the cluster did and lost; every loss has its counter. */
typedef struct es_cluster_stats {
    uint64_t sent;          /* messages published (sends, requests, topics) */
    uint64_t received;      /* messages from NATS handed to local actors */
    uint64_t requests;      /* requests sent through proxies */
    uint64_t replies;       /* replies handed back to local requesters */
    uint64_t no_responders; /* requests failed -ESRCH: nobody held the name */
    uint64_t served;        /* remote requests answered by local actors */
    uint64_t failed;        /* remote requests failed here (reason sent) */
    uint64_t lost_mailbox;  /* dropped: a local mailbox stayed full */
    uint64_t lost_no_actor; /* dropped: the local actor had stopped */
    uint64_t lost_slow;     /* dropped by nats.c: a slow consumer */
    uint64_t lost_publish;  /* publishes refused: connection closed, or
                               its reconnect buffer full */
    uint64_t bad_messages;  /* malformed payloads from the wire, dropped */
    uint64_t disconnects;   /* times the broker connection was lost */
    uint64_t reconnects;    /* times it came back */
    uint64_t nodes_lost;    /* nodes declared lost (no heartbeat) */
    uint64_t nodes;         /* other nodes seen alive now */
    uint64_t registrations; /* names held by local actors now */
    uint64_t proxies;       /* proxies alive now */
    uint64_t topics;        /* broker subscriptions for topics now */
} es_cluster_stats_t;

/* Fills *out. Thread: any. */
ES_EXTERN void es_cluster_stats(const es_cluster_t *c, es_cluster_stats_t *out);

/*
 * Appends the counters of es_cluster_stats() in the Prometheus text format
 * 0.0.4 (es_cluster_* families, with node="...") to buf (size bytes).
 * Returns: the length written (without the NUL), or -EOVERFLOW if buf is
 * too small (nothing useful is written). Thread: any.
 */
ES_EXTERN int es_cluster_metrics_text(const es_cluster_t *c, char *buf,
                                      size_t size);

/* es_cluster_metrics_text() as an es_http_server_metrics_add() source:
 * es_http_server_metrics_add(srv, es_cluster_metrics_cb, c) puts the
 * cluster's counters on the server's /metrics page. */
static inline int es_cluster_metrics_cb(void *c, char *buf, size_t size)
{
    return es_cluster_metrics_text((const es_cluster_t *)c, buf, size);
}

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_CLUSTER_H */
