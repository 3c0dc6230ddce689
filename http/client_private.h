/* SPDX-License-Identifier: MIT */
/*
 * What the HTTP client's three files share: URL parsing and request
 * serialization (client_url.c), the client and its per-host pool
 * (client.c), and the connection actor that writes a request and parses
 * its reply (client_conn.c). Built only on the public headers and
 * http_private.h.
 *
 * Ownership of a request (struct es__creq): at any moment exactly one
 * place holds it, and that place alone may complete it (call on_reply or
 * on_fail, then free it): the thread inside dispatch, a host's wait queue
 * (under the pool mutex), a message in flight to a connection actor (the
 * runtime; the message's free_cb takes over if it is dead-lettered), or a
 * connection actor's `req` slot (its demux thread). So each accepted
 * request is completed exactly once.
 *
 * The pool mutex guards the host list, every host's fields, the client's
 * connection list and counters, and the fields of struct es__hconn marked
 * (pool). It is never held while calling a user callback, es_send(),
 * es_stop() or es_connect(): a demux thread may run behaviours inside those
 * calls, and behaviours take the mutex.
 */
#ifndef EVENTSERVER_HTTP_CLIENT_PRIVATE_H
#define EVENTSERVER_HTTP_CLIENT_PRIVATE_H

#include "http_private.h"

#include <eventserver/timer.h>

#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>

/* The message that hands a request to an idle connection (ptr: creq). */
#define ES__HTTP_MSG_REQ (ES_MSG_USER + 0x48540001u)

/* Tag of a connection's response timer ("HTTPCLNT"). */
#define ES__HTTP_TIMER_TAG 0x48545450434c4e54ull

/* A reply as handed to on_reply (es_http_reply_t). */
struct es_http_reply {
    int status;
    int version; /* 10 or 11 */
    struct es_http_headers headers;
    struct es__buf body;
};

/* One request, from es_http_client_request() to its callback. */
struct es__creq {
    struct es__creq *next; /* in a host's wait queue */
    es_http_client_t *c;
    const char *host; /* pool key: host (lower case, no brackets; stored
                         after the struct) ... */
    uint16_t port;    /* ... and port */
    bool head;        /* HEAD: the reply has no body */
    bool idempotent;  /* may be sent again (RFC 9110 §9.2.2, or the caller
                         said so) */
    bool retried;     /* already retried after a keep-alive race */
    unsigned hops;    /* times its message was dead-lettered */
    unsigned timeout_ms;
    es_http_reply_cb on_reply;
    es_http_fail_cb on_fail;
    void *arg;
    size_t len; /* bytes of the serialized request in data */
    char *data; /* request line, header fields, body (es_malloc) */
};

struct es__host;

/* A connection actor's state. */
struct es__hconn {
    /* (pool) */
    es_http_client_t *c;
    struct es__host *host;         /* NULL once detached */
    struct es__hconn *prev, *next; /* the client's list of connections */
    struct es__hconn *idle_prev, *idle_next; /* the host's idle list */
    es_actor_id_t id;                        /* known from ES_MSG_START on */
    bool idle, stop_sent;

    /* (the connection's demux thread) */
    struct es__creq *req; /* in flight, or NULL */
    bool open;            /* ES_MSG_CONN_OPEN seen */
    bool served;          /* a request was completed on it before */
    bool closing;         /* closing: take no further request */
    bool got_bytes;       /* a byte of the current reply arrived */
    bool done, keep_alive, interim;
    bool at_version; /* the parser paused after a status line's version */
    int code;        /* status code digits seen, or CODE_* (client_conn.c) */
    int err;         /* why a parser callback stopped the parser */
    size_t header_bytes;
    es_timer_id_t timer;
    llhttp_t parser;
    struct es_http_reply reply;
};

/* A host:port of the pool. */
struct es__host {
    struct es__host *next;
    char *name;
    uint16_t port;
    unsigned nconn;                 /* connections counted against the cap */
    struct es__hconn *idle;         /* idle connections, most recent first */
    struct es__creq *qhead, *qtail; /* requests waiting for a connection */
};

struct es_http_client {
    es_runtime_t *rt;
    es_http_client_opts_t o; /* with the defaults filled in */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* broadcast when nreqs or nconns reach 0 */
    struct es__host *hosts;  /* (pool) */
    struct es__hconn *conns; /* (pool) every live connection */
    unsigned long nreqs;     /* (pool) accepted, not yet completed */
    unsigned long nconns;    /* (pool) connection states not yet freed */
    atomic_bool closing;     /* es_http_client_free() began (set under mu) */
    bool released;           /* (pool) the owner is gone: last one frees */
};

/* client.c */

/*
 * Hands req to an idle connection of its host, a new connection, or the
 * host's wait queue (at the front if `fresh`, which also skips idle
 * connections: a retry after a keep-alive race).
 * Returns: 0 (req is taken); -ECANCELED if the client is closing; errors
 * of es_connect() (req is still the caller's).
 */
int es__client_dispatch(es_http_client_t *c, struct es__creq *req, bool fresh);
/* Calls on_fail(err) and frees req. Thread: no pool mutex held. */
void es__creq_fail(struct es__creq *req, int err);
/* Calls on_reply(r) and frees req. Thread: no pool mutex held. */
void es__creq_reply(struct es__creq *req, const struct es_http_reply *r);
/* The free_cb of a request message: re-dispatches a dead-lettered request
 * (it was never written) or fails it. */
void es__creq_dead(void *req);
/*
 * A connection finished a reply and may be reused: it takes the host's
 * next waiting request (*next) or becomes idle.
 * Returns: true if so; false if the client is closing or hc was detached
 * (the caller closes it).
 */
bool es__client_conn_release(struct es__hconn *hc, struct es__creq **next);
/* A connection closed (or never opened): leaves the pool; a waiting
 * request of its host may get a new connection. Idempotent. */
void es__client_conn_detach(struct es__hconn *hc);
/* A connection's actor started as `id`. Returns: true if the client is
 * closing (the connection must stop). */
bool es__client_conn_started(struct es__hconn *hc, es_actor_id_t id);
/* Frees a connection state (its actor's state_free, or a state whose actor
 * never existed): the last reference may free the client. */
void es__client_conn_gone(struct es__hconn *hc);
/* True once es_http_client_free() began. Thread: any. */
bool es__client_closing(es_http_client_t *c);

/* client_url.c */

/*
 * Parses req->url, checks the method and fields and serializes the
 * request into a new creq for client c.
 * Returns: 0 and *out; -EINVAL (bad URL, unsupported scheme, bad method,
 * a field name or value that is not valid, a field the client writes
 * itself); -ENOMEM.
 */
int es__creq_new(es_http_client_t *c, const es_http_client_req_t *req,
                 es_http_reply_cb on_reply, es_http_fail_cb on_fail, void *arg,
                 struct es__creq **out);
/* Frees a request that is no longer anybody's. */
void es__creq_free(struct es__creq *req);

/* client_conn.c */

/* The connection actor's behaviour. */
int es__hconn_behaviour(es_actor_t *self, es_msg_t *msg);
/* es_conn_opts_t.state_new / state_free of a connection. */
void *es__hconn_state_new(void *hc);
void es__hconn_state_free(void *hc);

#endif /* EVENTSERVER_HTTP_CLIENT_PRIVATE_H */
