/* SPDX-License-Identifier: MIT */
/*
 * The HTTP client's connection pool and public calls. A request, once
 * serialized on the caller's thread (client_url.c), is dispatched: to an idle
 * kept-alive connection of its host:port (as a message to that connection
 * actor), to a new connection (es_connect(), with the request already in the
 * new actor's state) while the host is under its cap, or to the host's FIFO
 * wait queue, which connections drain as they finish replies or close.
 * client_conn.c is the connection actor.
 *
 * The client is freed by whoever drops the last of three kinds of
 * reference, under the pool mutex: the owner (until es_http_client_free),
 * each accepted request (until its callback returned) and each connection
 * state (until its actor's state_free). So a connection or a dead-lettered
 * request that outlives es_http_client_free() still finds the client.
 * See client_private.h for who owns a request when.
 */
#include "client_private.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_PER_HOST 8u
#define DEFAULT_CONNECT_TIMEOUT_MS 10000u
#define DEFAULT_RESPONSE_TIMEOUT_MS 30000u
#define DEFAULT_IDLE_TIMEOUT_MS 30000u
#define DEFAULT_MAX_REPLY_BODY (64u << 20)
#define DEFAULT_MAX_REPLY_HEADER_BYTES (64u << 10)
/* Dead-letterings a request survives: each one means the connection it was
 * sent to closed first, which a handful of times in a row only happens
 * while the runtime shuts down. */
#define MAX_HOPS 8u
/* es_stop() retries while a ring to a demux thread is full (-EAGAIN): the
 * thread drains it within microseconds unless it is gone. */
#define RING_RETRIES 100000u
/* How long es_http_client_free() waits for the connections to go. Only a
 * runtime that was stopped but not yet waited for keeps them longer; the
 * references keep the client alive for them. */
#define FREE_WAIT_MS 10000u
/* A connection's write queue mark above which it would stop reading. */
#define WRITE_HIGH (1u << 30)

/* --- Client life ---------------------------------------------------------- */

static void fill_defaults(es_http_client_opts_t *o)
{
    if (!o->max_per_host)
        o->max_per_host = DEFAULT_MAX_PER_HOST;
    if (!o->connect_timeout_ms)
        o->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (!o->response_timeout_ms)
        o->response_timeout_ms = DEFAULT_RESPONSE_TIMEOUT_MS;
    if (!o->idle_timeout_ms)
        o->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    if (!o->max_reply_body)
        o->max_reply_body = DEFAULT_MAX_REPLY_BODY;
    if (!o->max_reply_header_bytes)
        o->max_reply_header_bytes = DEFAULT_MAX_REPLY_HEADER_BYTES;
}

int es_http_client_new(es_runtime_t *rt, const es_http_client_opts_t *opts,
                       es_http_client_t **out)
{
    if (!rt || !out)
        return -EINVAL;
    es_http_client_t *c = es_calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->rt = rt;
    if (opts)
        c->o = *opts;
    fill_defaults(&c->o);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) {
        es_free(c);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&c->mu, NULL)) {
        pthread_cond_destroy(&c->cv);
        es_free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

static void client_destroy(es_http_client_t *c)
{
    while (c->hosts) {
        struct es__host *h = c->hosts;
        c->hosts = h->next;
        es_free(h->name);
        es_free(h);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    es_free(c);
}

/* Under the mutex: wakes the freeing thread; true if the caller must now
 * destroy the client (after unlocking). */
static bool client_settle(es_http_client_t *c)
{
    if (c->nreqs == 0 && c->nconns == 0) {
        pthread_cond_broadcast(&c->cv);
        return c->released;
    }
    return false;
}

bool es__client_closing(es_http_client_t *c)
{
    return atomic_load_explicit(&c->closing, memory_order_acquire);
}

/* --- Requests: completion ------------------------------------------------- */

static void req_done(es_http_client_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->nreqs--;
    bool last = client_settle(c);
    pthread_mutex_unlock(&c->mu);
    if (last)
        client_destroy(c);
}

void es__creq_fail(struct es__creq *req, int err)
{
    es_http_client_t *c = req->c;
    req->on_fail(err, req->arg);
    es__creq_free(req);
    req_done(c);
}

void es__creq_reply(struct es__creq *req, const struct es_http_reply *r)
{
    es_http_client_t *c = req->c;
    req->on_reply(r, req->arg);
    es__creq_free(req);
    req_done(c);
}

/* The error a request fails with when dispatching it failed. */
static int dispatch_err(int rc)
{
    return rc == -ENOMEM ? -ENOMEM : -ECANCELED;
}

void es__creq_dead(void *arg)
{
    struct es__creq *req = arg;
    if (++req->hops > MAX_HOPS) {
        es__creq_fail(req, -ECANCELED);
        return;
    }
    int rc = es__client_dispatch(req->c, req, false);
    if (rc)
        es__creq_fail(req, dispatch_err(rc));
}

/* --- The pool (all under the mutex) --------------------------------------- */

static struct es__host *host_get(es_http_client_t *c, const char *name,
                                 uint16_t port)
{
    for (struct es__host *h = c->hosts; h; h = h->next)
        if (h->port == port && strcmp(h->name, name) == 0)
            return h;
    struct es__host *h = es_calloc(1, sizeof(*h));
    size_t n = strlen(name) + 1;
    char *copy = es_malloc(n);
    if (!h || !copy) {
        es_free(h);
        es_free(copy);
        return NULL;
    }
    memcpy(copy, name, n);
    h->name = copy;
    h->port = port;
    h->next = c->hosts;
    c->hosts = h;
    return h;
}

/* Forgets h once nothing refers to it. */
static void host_prune(es_http_client_t *c, struct es__host *h)
{
    if (h->nconn || h->qhead || h->idle)
        return;
    for (struct es__host **pp = &c->hosts; *pp; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            es_free(h->name);
            es_free(h);
            return;
        }
    }
}

static void idle_push(struct es__host *h, struct es__hconn *hc)
{
    hc->idle = true;
    hc->idle_prev = NULL;
    hc->idle_next = h->idle;
    if (h->idle)
        h->idle->idle_prev = hc;
    h->idle = hc;
}

static void idle_remove(struct es__host *h, struct es__hconn *hc)
{
    if (hc->idle_prev)
        hc->idle_prev->idle_next = hc->idle_next;
    else
        h->idle = hc->idle_next;
    if (hc->idle_next)
        hc->idle_next->idle_prev = hc->idle_prev;
    hc->idle_prev = hc->idle_next = NULL;
    hc->idle = false;
}

static void queue_push(struct es__host *h, struct es__creq *req, bool front)
{
    if (front) {
        req->next = h->qhead;
        h->qhead = req;
        if (!h->qtail)
            h->qtail = req;
        return;
    }
    req->next = NULL;
    if (h->qtail)
        h->qtail->next = req;
    else
        h->qhead = req;
    h->qtail = req;
}

static struct es__creq *queue_pop(struct es__host *h)
{
    struct es__creq *req = h->qhead;
    if (req) {
        h->qhead = req->next;
        if (!h->qhead)
            h->qtail = NULL;
        req->next = NULL;
    }
    return req;
}

/* A connection state for h, counted against its cap. */
static struct es__hconn *hconn_new(es_http_client_t *c, struct es__host *h)
{
    struct es__hconn *hc = es_calloc(1, sizeof(*hc));
    if (!hc)
        return NULL;
    hc->c = c;
    hc->host = h;
    h->nconn++;
    c->nconns++;
    hc->next = c->conns;
    if (c->conns)
        c->conns->prev = hc;
    c->conns = hc;
    return hc;
}

/* If h has a waiting request and room, a new connection state holding it. */
static struct es__hconn *kick(es_http_client_t *c, struct es__host *h)
{
    if (!h->qhead || c->closing || h->nconn >= c->o.max_per_host)
        return NULL;
    struct es__hconn *hc = hconn_new(c, h);
    if (hc)
        hc->req = queue_pop(h);
    return hc;
}

/* Removes hc from its host; returns a connection to launch for a waiting
 * request, if any. */
static struct es__hconn *detach(struct es__hconn *hc)
{
    es_http_client_t *c = hc->c;
    pthread_mutex_lock(&c->mu);
    struct es__host *h = hc->host;
    struct es__hconn *next = NULL;
    if (h) {
        if (hc->idle)
            idle_remove(h, hc);
        hc->host = NULL;
        h->nconn--;
        next = kick(c, h);
        if (!next)
            host_prune(c, h);
    }
    pthread_mutex_unlock(&c->mu);
    return next;
}

/* --- Connections ---------------------------------------------------------- */

/* Spawns hc's actor. Returns: 0 (hc belongs to the actor) or es_connect()'s
 * error (hc is still the caller's). */
static int spawn(es_http_client_t *c, struct es__hconn *hc)
{
    es_connect_opts_t o = {
        .host = hc->req->host,
        .port = hc->req->port,
        .timeout_ms = c->o.connect_timeout_ms,
        .loop = ES_LOOP_ANY,
        .placement = ES_PLACE_ROUND_ROBIN,
        .conn =
            {
                .behaviour = es__hconn_behaviour,
                .state_new = es__hconn_state_new,
                .state_free = es__hconn_state_free,
                .arg = hc,
                /* The request is in memory already: reading must go on
                 * while it is sent, or an early reply (413) is missed. */
                .write_high = WRITE_HIGH,
            },
    };
    es_actor_id_t id;
    return es_connect(c->rt, &o, &id); /* never -EAGAIN: see es_spawn() */
}

/* Spawns hc and, on failure, fails its request and tries the next waiting
 * one of the host, until one spawns or none is left. */
static void launch(es_http_client_t *c, struct es__hconn *hc)
{
    while (hc) {
        int rc = spawn(c, hc);
        if (rc == 0)
            return;
        struct es__creq *req = hc->req;
        hc->req = NULL;
        struct es__hconn *next = detach(hc);
        es__creq_fail(req, dispatch_err(rc));
        es__client_conn_gone(hc); /* last: next (if any) keeps c alive */
        hc = next;
    }
}

void es__client_conn_detach(struct es__hconn *hc)
{
    es_http_client_t *c = hc->c;
    launch(c, detach(hc));
}

bool es__client_conn_started(struct es__hconn *hc, es_actor_id_t id)
{
    es_http_client_t *c = hc->c;
    pthread_mutex_lock(&c->mu);
    hc->id = id;
    bool closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    return closing;
}

bool es__client_conn_release(struct es__hconn *hc, struct es__creq **next)
{
    es_http_client_t *c = hc->c;
    bool kept = false;
    *next = NULL;
    pthread_mutex_lock(&c->mu);
    struct es__host *h = hc->host;
    if (h && !c->closing) {
        kept = true;
        *next = queue_pop(h);
        if (!*next)
            idle_push(h, hc);
    }
    pthread_mutex_unlock(&c->mu);
    return kept;
}

void es__client_conn_gone(struct es__hconn *hc)
{
    es_http_client_t *c = hc->c;
    pthread_mutex_lock(&c->mu);
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        c->conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    c->nconns--;
    bool last = client_settle(c);
    pthread_mutex_unlock(&c->mu);
    es_free(hc);
    if (last)
        client_destroy(c);
}

/* Where place() put a request. */
enum { TO_IDLE = 1, TO_NEW, QUEUED };

/* Under the mutex: chooses where req goes. Returns: TO_IDLE (send it to
 * *id), TO_NEW (spawn *hc, which holds it), QUEUED; -ECANCELED, -ENOMEM. */
static int place(es_http_client_t *c, struct es__creq *req, bool fresh,
                 es_actor_id_t *id, struct es__hconn **hc)
{
    if (c->closing)
        return -ECANCELED;
    struct es__host *h = host_get(c, req->host, req->port);
    if (!h)
        return -ENOMEM;
    if (!fresh && h->idle) {
        struct es__hconn *idle = h->idle;
        idle_remove(h, idle);
        *id = idle->id; /* idle may be freed once the mutex is released */
        return TO_IDLE;
    }
    if (h->nconn < c->o.max_per_host) {
        *hc = hconn_new(c, h);
        if (!*hc) {
            host_prune(c, h);
            return -ENOMEM;
        }
        (*hc)->req = req;
        return TO_NEW;
    }
    queue_push(h, req, fresh);
    return QUEUED;
}

int es__client_dispatch(es_http_client_t *c, struct es__creq *req, bool fresh)
{
    for (;;) {
        es_actor_id_t id = ES_ACTOR_NONE;
        struct es__hconn *hc = NULL;
        pthread_mutex_lock(&c->mu);
        int where = place(c, req, fresh, &id, &hc);
        pthread_mutex_unlock(&c->mu);
        if (where == TO_IDLE) {
            es_msg_t m = es_msg_ptr(ES__HTTP_MSG_REQ, req, 0, es__creq_dead);
            if (es_send(c->rt, id, &m) == 0)
                return 0;
            /* It closed meanwhile (its CLOSED detaches it), or its mailbox
             * is full (unlisted, it idles out): try again. */
            continue;
        }
        if (where != TO_NEW)
            return where == QUEUED ? 0 : where;
        int rc = spawn(c, hc);
        if (rc) {
            hc->req = NULL;
            launch(c, detach(hc));
            es__client_conn_gone(hc);
        }
        return rc;
    }
}

/* --- The public calls ----------------------------------------------------- */

int es_http_client_request(es_http_client_t *c, const es_http_client_req_t *req,
                           es_http_reply_cb on_reply, es_http_fail_cb on_fail,
                           void *arg)
{
    if (!c || !req || !on_reply || !on_fail)
        return -EINVAL;
    struct es__creq *r = NULL;
    int rc = es__creq_new(c, req, on_reply, on_fail, arg, &r);
    if (rc)
        return rc;
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        es__creq_free(r);
        return -ESHUTDOWN;
    }
    c->nreqs++;
    pthread_mutex_unlock(&c->mu);
    rc = es__client_dispatch(c, r, false);
    if (rc == 0)
        return 0;
    es__creq_free(r);
    req_done(c);
    return rc == -ECANCELED ? -ESHUTDOWN : rc;
}

/* Under the mutex: the id of a started connection not yet told to stop. */
static es_actor_id_t next_to_stop(es_http_client_t *c)
{
    for (struct es__hconn *hc = c->conns; hc; hc = hc->next) {
        if (hc->id != ES_ACTOR_NONE && !hc->stop_sent) {
            hc->stop_sent = true;
            return hc->id;
        }
    }
    return ES_ACTOR_NONE;
}

/* Stops every started connection; those not started yet stop themselves
 * at ES_MSG_START (es__client_conn_started). Their requests fail there. */
static void stop_all(es_http_client_t *c)
{
    for (;;) {
        pthread_mutex_lock(&c->mu);
        es_actor_id_t id = next_to_stop(c);
        pthread_mutex_unlock(&c->mu);
        if (id == ES_ACTOR_NONE)
            return;
        unsigned tries = 0;
        while (es_stop(c->rt, id) == -EAGAIN && ++tries < RING_RETRIES)
            sched_yield();
    }
}

/* Takes every waiting request out of the queues. */
static struct es__creq *take_waiting(es_http_client_t *c)
{
    struct es__creq *all = NULL;
    for (struct es__host *h = c->hosts; h; h = h->next) {
        struct es__creq *req;
        while ((req = queue_pop(h)) != NULL) {
            req->next = all;
            all = req;
        }
    }
    return all;
}

/* Waits (bounded) until every request completed and every connection
 * state is gone. Returns with the mutex held. */
static void wait_quiet(es_http_client_t *c)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += FREE_WAIT_MS / 1000;
    pthread_mutex_lock(&c->mu);
    if (!c->nreqs && !c->nconns)
        return;
    if (es_runtime_current_loop(c->rt) >= 0) {
        es_log(ES_LOG_WARN, "es_http_client_free() called on a demux thread: "
                            "not waiting for its connections");
        return;
    }
    while (c->nreqs || c->nconns) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &end) == ETIMEDOUT) {
            es_log(ES_LOG_WARN,
                   "es_http_client_free(): %lu requests and %lu connections "
                   "still pending (runtime stopped?); freed when they end",
                   c->nreqs, c->nconns);
            return;
        }
    }
}

void es_http_client_free(es_http_client_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    atomic_store_explicit(&c->closing, true, memory_order_release);
    struct es__creq *waiting = take_waiting(c);
    pthread_mutex_unlock(&c->mu);
    while (waiting) {
        struct es__creq *req = waiting;
        waiting = req->next;
        es__creq_fail(req, -ECANCELED);
    }
    stop_all(c);
    wait_quiet(c);
    c->released = true;
    bool last = c->nreqs == 0 && c->nconns == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        client_destroy(c);
}
