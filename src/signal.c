/* SPDX-License-Identifier: MIT */
/*
 * Signals as messages. One signalfd per runtime, watched by demux thread 0,
 * reads every subscribed signal; each arrival becomes an ES_MSG_SIGNAL sent
 * to every subscriber (or stops the runtime). Subscriptions are few and
 * change rarely, so a mutex guards them; the signalfd's mask is updated in
 * place when they change.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define ROUTE_INLINE 16 /* subscribers routed without allocating */

static bool catchable(int signo)
{
    switch (signo) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
        return false;
    default:
        return signo > 0 && signo < NSIG;
    }
}

/* Sends one arrival of signo to its subscribers; runs on loop 0. */
static void route(es_runtime_t *rt, int signo)
{
    es_actor_id_t local[ROUTE_INLINE], *ids = local;
    size_t n = 0;
    bool stop = false;
    pthread_mutex_lock(&rt->sig.lock);
    if (rt->sig.n > ROUTE_INLINE)
        ids = es__malloc(rt->sig.n * sizeof(*ids));
    for (size_t i = 0; ids && i < rt->sig.n; i++) {
        if (rt->sig.subs[i].signo != signo)
            continue;
        if (rt->sig.subs[i].id == ES_ACTOR_NONE)
            stop = true;
        else
            ids[n++] = rt->sig.subs[i].id;
    }
    pthread_mutex_unlock(&rt->sig.lock);
    if (!ids) {
        es__log(ES_LOG_ERROR, "no memory to route signal %d", signo);
        return;
    }
    es_msg_t m = es_msg_make(ES_MSG_SIGNAL);
    m.inl.i64[0] = signo;
    m.len = sizeof(int64_t);
    for (size_t i = 0; i < n; i++) {
        int rc = es__send(rt, ids[i], &m, false);
        if (rc == -ESRCH)
            es_signal_unsubscribe(rt, ids[i], signo);
        else if (rc)
            es__log(ES_LOG_ERROR, "signal %d not delivered to %#llx: %s", signo,
                    (unsigned long long)ids[i], es_strerror(rc));
    }
    if (ids != local)
        es__free(ids);
    if (stop)
        es_runtime_stop(rt);
}

static void on_readable(struct es__loop *loop, struct es__watch *w,
                        uint32_t events)
{
    struct signalfd_siginfo si[8];
    ssize_t n;
    (void)events;
    for (;;) {
        /* Under the lock that update_mask() changes the fd's mask with. */
        pthread_mutex_lock(&loop->rt->sig.lock);
        n = read(w->fd, si, sizeof(si));
        pthread_mutex_unlock(&loop->rt->sig.lock);
        if (n <= 0)
            break;
        for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++)
            route(loop->rt, (int)si[i].ssi_signo);
    }
}

int es__signals_init(es_runtime_t *rt)
{
    struct es__signals *sig = &rt->sig;
    pthread_mutex_init(&sig->lock, NULL);
    sigemptyset(&sig->mask);
    sig->watch.fd = signalfd(-1, &sig->mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig->watch.fd < 0)
        return -errno;
    sig->watch.cb = on_readable;
    int rc = es__loop_watch_add(&rt->loops[0], &sig->watch, ES__WATCH_READ);
    /* Loop 0 polls it between turns only while subscriptions exist. */
    if (rc == 0)
        rt->loops[0].io_watches--;
    return rc;
}

void es__signals_destroy(es_runtime_t *rt)
{
    struct es__signals *sig = &rt->sig;
    if (sig->watch.fd >= 0)
        close(sig->watch.fd);
    sig->watch.fd = -1;
    es__free(sig->subs);
    sig->subs = NULL;
    sig->n = sig->cap = 0;
    pthread_mutex_destroy(&sig->lock);
}

/* Rebuilds the mask from the subscriptions; the lock is held. */
static int update_mask(es_runtime_t *rt)
{
    struct es__signals *sig = &rt->sig;
    sigemptyset(&sig->mask);
    for (size_t i = 0; i < sig->n; i++)
        sigaddset(&sig->mask, sig->subs[i].signo);
    if (signalfd(sig->watch.fd, &sig->mask, 0) < 0)
        return -errno;
    atomic_store_explicit(&sig->active, sig->n > 0, memory_order_relaxed);
    return 0;
}

static int subscribe(es_runtime_t *rt, es_actor_id_t id, int signo)
{
    struct es__signals *sig = &rt->sig;
    int rc = 0;
    pthread_mutex_lock(&sig->lock);
    for (size_t i = 0; i < sig->n; i++) {
        if (sig->subs[i].signo == signo && sig->subs[i].id == id) {
            rc = -EALREADY;
            goto out;
        }
    }
    if (sig->n == sig->cap) {
        size_t cap = sig->cap ? sig->cap * 2 : 8;
        void *subs = es__realloc(sig->subs, cap * sizeof(*sig->subs));
        if (!subs) {
            rc = -ENOMEM;
            goto out;
        }
        sig->subs = subs;
        sig->cap = cap;
    }
    sig->subs[sig->n++] = (struct es__sigsub){.signo = signo, .id = id};
    /* Block before the signalfd takes it, so it cannot kill us meanwhile. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    pthread_sigmask(SIG_BLOCK, &one, NULL);
    rc = update_mask(rt);
out:
    pthread_mutex_unlock(&sig->lock);
    return rc;
}

int es_signal_subscribe(es_runtime_t *rt, es_actor_id_t id, int signo)
{
    if (!rt || !catchable(signo) || id == ES_ACTOR_NONE)
        return -EINVAL;
    return subscribe(rt, id, signo);
}

int es_runtime_stop_on_signal(es_runtime_t *rt, int signo)
{
    if (!rt || !catchable(signo))
        return -EINVAL;
    return subscribe(rt, ES_ACTOR_NONE, signo);
}

/* Removes matching subscriptions (signo 0: all of id's); lock held. */
static size_t remove_subs(struct es__signals *sig, es_actor_id_t id, int signo)
{
    size_t kept = 0, removed = 0;
    for (size_t i = 0; i < sig->n; i++) {
        struct es__sigsub s = sig->subs[i];
        if (s.id == id && (signo == 0 || s.signo == signo))
            removed++;
        else
            sig->subs[kept++] = s;
    }
    sig->n = kept;
    return removed;
}

int es_signal_unsubscribe(es_runtime_t *rt, es_actor_id_t id, int signo)
{
    if (!rt || !catchable(signo))
        return -EINVAL;
    pthread_mutex_lock(&rt->sig.lock);
    int rc = remove_subs(&rt->sig, id, signo) ? update_mask(rt) : -ENOENT;
    pthread_mutex_unlock(&rt->sig.lock);
    return rc;
}

void es__signals_drop_actor(es_runtime_t *rt, es_actor_id_t id)
{
    pthread_mutex_lock(&rt->sig.lock);
    if (remove_subs(&rt->sig, id, 0))
        (void)update_mask(rt);
    pthread_mutex_unlock(&rt->sig.lock);
}
