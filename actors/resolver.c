/* SPDX-License-Identifier: MIT */
/*
 * Name resolution off the demux threads: one detached thread per runtime,
 * started on first use, runs getaddrinfo() for queued requests and sends
 * each result to the requesting actor as ES__MSG_RESOLVED. It sends while
 * holding the resolver's lock, and the runtime marks the resolver orphaned
 * under the same lock before it is freed, so a result is never sent into a
 * freed runtime. The thread and the runtime each hold a reference; the last
 * one frees the resolver, so es_runtime_free() never waits for a slow DNS
 * answer.
 */
#include "conn_private.h"

#include <errno.h>
#include <string.h>

struct request {
    struct request *next;
    es_actor_id_t id;
    char port[8];
    char host[];
};

struct resolver {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct request *head, *tail;
    es_runtime_t *rt; /* NULL once the runtime is gone */
    int refs;         /* under lock: the runtime's and the thread's */
};

/* Guards every runtime's resolver slot; taken once per lookup. */
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;

static void resolver_unref_locked(struct resolver *r)
{
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    es__free(r);
}

static void free_addrinfo(void *ai)
{
    freeaddrinfo(ai);
}

static void answer(struct resolver *r, const struct request *q,
                   struct addrinfo *ai, int err)
{
    es_msg_t m = es_msg_ptr(ES__MSG_RESOLVED, ai, 0, free_addrinfo);
    m.inl.i64[0] = err;
    pthread_mutex_lock(&r->lock);
    int rc = r->rt ? es__send(r->rt, q->id, &m, false) : -ESHUTDOWN;
    pthread_mutex_unlock(&r->lock);
    if (rc != 0 && ai)
        freeaddrinfo(ai); /* the actor is gone, or the runtime */
}

static void *resolver_main(void *arg)
{
    struct resolver *r = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (!r->head && r->rt)
            pthread_cond_wait(&r->cond, &r->lock);
        struct request *q = r->head;
        if (!q)
            break; /* orphaned and nothing left */
        r->head = q->next;
        if (!r->head)
            r->tail = NULL;
        pthread_mutex_unlock(&r->lock);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        struct addrinfo *ai = NULL;
        int rc = getaddrinfo(q->host, q->port, &hints, &ai);
        answer(r, q, rc == 0 ? ai : NULL, rc == 0 ? 0 : -EHOSTUNREACH);
        es__free(q);
        pthread_mutex_lock(&r->lock);
    }
    resolver_unref_locked(r);
    return NULL;
}

/* Runs when the runtime is freed: orphans the resolver. */
static void resolver_orphan(void *arg)
{
    struct resolver *r = arg;
    pthread_mutex_lock(&r->lock);
    r->rt = NULL;
    while (r->head) {
        struct request *q = r->head;
        r->head = q->next;
        es__free(q);
    }
    r->tail = NULL;
    pthread_cond_signal(&r->cond);
    resolver_unref_locked(r);
}

static struct resolver *resolver_start(es_runtime_t *rt)
{
    struct resolver *r = es__calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->rt = rt;
    r->refs = 2;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, resolver_main, r);
    pthread_attr_destroy(&attr);
    if (rc == 0 && es__runtime_on_free(rt, resolver_orphan, r) == 0)
        return r;
    if (rc == 0) { /* running, but nobody would orphan it: do it now */
        resolver_orphan(r);
        return NULL;
    }
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    es__free(r);
    return NULL;
}

int es__resolve(es_runtime_t *rt, es_actor_id_t id, const char *host,
                const char *port)
{
    size_t n = strlen(host);
    struct request *q = es__malloc(sizeof(*q) + n + 1);
    if (!q)
        return -ENOMEM;
    q->next = NULL;
    q->id = id;
    memcpy(q->port, port, sizeof(q->port));
    memcpy(q->host, host, n + 1);
    pthread_mutex_lock(&slot_lock);
    if (!rt->resolver)
        rt->resolver = resolver_start(rt);
    struct resolver *r = rt->resolver;
    pthread_mutex_unlock(&slot_lock);
    if (!r) {
        es__free(q);
        return -ENOMEM;
    }
    pthread_mutex_lock(&r->lock);
    if (r->tail)
        r->tail->next = q;
    else
        r->head = q;
    r->tail = q;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return 0;
}
