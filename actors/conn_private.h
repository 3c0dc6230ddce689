/* SPDX-License-Identifier: MIT */
/*
 * What the connection, acceptor and connector actors share: the state of a
 * connection actor (its extension, see es__spawn()) and the calls between
 * the three files. Not installed.
 */
#ifndef EVENTSERVER_CONN_PRIVATE_H
#define EVENTSERVER_CONN_PRIVATE_H

#include "../src/internal.h"

#include <netdb.h>

/* Tags our own timers so they are told apart from the user's. */
#define ES__CONN_TIMER_TAG 0x45530000434f4e4eull /* "ES\0\0CONN" */

enum es__conn_timer { ES__TIMER_NONE, ES__TIMER_CONNECT };

struct es__wseg; /* a queued write, see conn.c */

/* Where an outbound connection is going (connector.c). */
struct es__connect {
    char *host;
    char port[8];
    char *unix_path;
    unsigned timeout_ms;
    struct addrinfo *ai_list, *ai_next; /* addresses left to try */
    int last_err;
    enum es__conn_timer timer_kind;
    es_timer_id_t timer; /* the connect timeout */
};

/* The settings of es_conn_opts_t a connection keeps, compactly (an idle
 * connection's size counts). */
/* What es_conn_opts_t says, resolved, shared by every connection of one
 * listener (reference counted: connections may outlive their listener and
 * live on any thread). Kept out of each connection: 40 bytes of an idle
 * connection's 400 (perf/conn_memory). */
struct es__conn_cfg {
    atomic_uint refs;
    uint32_t write_high, write_low, idle_timeout_ms, mailbox_capacity;
    bool no_delay;
    es_behaviour_cb user;
    void *(*state_new)(void *arg);
    es_state_free_cb state_free;
    void *arg;
};

/* A configuration with one reference, or NULL (no behaviour, no memory). */
struct es__conn_cfg *es__conn_cfg_new(const es_conn_opts_t *opts);
void es__conn_cfg_unref(struct es__conn_cfg *cfg);

/* A connection actor's state. Ordered to pack: its size is most of what an
 * idle connection costs (perf/conn_memory). */
struct es__conn {
    int fd;
    uint32_t watched;         /* ES_IO_* bits registered now */
    struct es__connect *cx;   /* outbound only, until connected */
    struct es__conn_cfg *cfg; /* one reference */
    uint32_t idle_timeout_ms; /* cfg's, until es_conn_set_idle_timeout() */

    struct es__wseg *head, *tail; /* write queue */
    size_t queued, sent_since;
    struct es__deadline idle; /* the idle timeout, on the loop's wheel */

    /* es_conn_reason_t values (small): one byte each, so that the state
     * fits a 112-byte malloc chunk. */
    uint8_t
        close_reason;    /* close once flushed (ES_CONN_LOCAL / _PEER_CLOSED) */
    uint8_t fail_reason; /* close now, with fail_err */
    /* One bit each: an idle connection's size is what counts. */
    bool is_tcp : 1, no_delay : 1; /* no_delay: wanted, not set yet */
    bool connecting : 1, closed : 1, peer_eof : 1, above_high : 1;
    bool high_notify : 1, sent_notify : 1;
    bool paused_user : 1, paused_mailbox : 1, shut_pending : 1;
    bool shut_done : 1, abort_pending : 1, sent_once : 1;
    int fail_err;
};

_Static_assert(ES_CONN_STOPPED <= UINT8_MAX, "close reasons fit a byte");
_Static_assert(sizeof(struct es__conn) <= 104,
               "an idle connection's state fits a 112-byte malloc chunk");

/* A connection actor's state for cfg (it takes a reference of its own);
 * fd is -1 for an outbound one. */
struct es__conn *es__conn_new(struct es__conn_cfg *cfg, int fd, bool is_tcp);
/* Frees c (closing its fd if still open); the actors' ext_free. */
void es__conn_free(void *c);
/* Spawns the connection actor that owns c; loop is as es_spawn_opts_t.loop
 * (ES_LOOP_ANY or ES_LOOP(i)). On failure c is still the caller's. */
int es__conn_spawn(es_runtime_t *rt, struct es__conn *c, int loop,
                   es_placement_t placement, es_actor_id_t *out);
/* Marks c to close now with reason (done when the behaviour returns). */
void es__conn_fail(struct es__conn *c, int reason, int err);
/* The connector got its socket connected: start being a connection. */
void es__conn_opened(es_actor_t *self, struct es__conn *c);
/* Starts or stops c's heap timer (the connect timeout). */
int es__conn_timer(es_actor_t *self, struct es__conn *c,
                   enum es__conn_timer kind, unsigned ms);

/* connector.c */
void es__connector_start(es_actor_t *self, struct es__conn *c);
void es__connector_on_io(es_actor_t *self, struct es__conn *c, uint32_t events);
void es__connector_on_resolved(es_actor_t *self, struct es__conn *c,
                               es_msg_t *msg);
void es__connect_free(struct es__connect *cx);

/* resolver.c: resolves host:port off the demux threads and sends the
 * result to `id` as ES__MSG_RESOLVED (ptr: addrinfo list, or NULL and
 * inl.i64[0] = the EAI_* error). Returns 0 or -ENOMEM / -ESHUTDOWN. */
int es__resolve(es_runtime_t *rt, es_actor_id_t id, const char *host,
                const char *port);

#endif /* EVENTSERVER_CONN_PRIVATE_H */
