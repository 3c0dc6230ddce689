/* SPDX-License-Identifier: MIT */
/*
 * Listeners: es_listen() binds and listens, then spawns one acceptor actor
 * (or, with SO_REUSEPORT, one per demux thread, each with its own socket).
 * An acceptor accepts in batches when its socket is readable and spawns a
 * connection actor per socket on the thread the placement policy picks. On
 * EMFILE / ENFILE it stops watching the socket for a back-off period
 * instead of spinning on a readiness it cannot act on; the pending
 * connections wait in the kernel's backlog and are accepted afterwards.
 *
 * The listener is shared by its acceptors and its user: it is freed when
 * the last of them lets go (a reference count).
 */
#include "conn_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/un.h>
#include <unistd.h>

#define ACCEPT_BUDGET 64    /* connections accepted per readiness event */
#define BACKOFF_MS 100      /* pause after EMFILE / ENFILE */
#define BACKLOG_DEFAULT 511 /* as nginx */
#define BACKOFF_TAG 0x45534143434550ull /* "ESACCEP" */

struct es_listener {
    es_runtime_t *rt;
    struct es__conn_cfg *conn; /* shared by its connections */
    es_placement_t placement;
    bool reuseport, is_tcp;
    int port;
    char *unix_path; /* unlinked when the listener goes, if we bound it */
    bool unix_bound;
    unsigned nacc;
    es_actor_id_t *acc;
    _Atomic uint64_t accepted, fd_exhausted, rejected;
    atomic_int refs;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned open_fds; /* listening sockets not yet closed, under lock */
};

struct acceptor {
    es_listener_t *l;
    int fd;
};

static void listener_unref(es_listener_t *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (l->unix_bound)
        unlink(l->unix_path);
    es__free(l->unix_path);
    es__conn_cfg_unref(l->conn);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->cond);
    es__free(l->acc);
    es__free(l);
}

static void acceptor_free(void *arg)
{
    struct acceptor *a = arg;
    es_listener_t *l = a->l;
    close(a->fd);
    pthread_mutex_lock(&l->lock);
    l->open_fds--;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    es__free(a);
    listener_unref(l);
}

/* Gives one accepted socket its connection actor. */
static void hand_off(es_actor_t *self, es_listener_t *l, int fd)
{
    struct es__conn *c = es__conn_new(l->conn, fd, l->is_tcp);
    int loop = l->reuseport ? ES_LOOP(es_actor_loop_index(self)) : ES_LOOP_ANY;
    es_actor_id_t id;
    int rc = c ? es__conn_spawn(l->rt, c, loop, l->placement, &id) : -ENOMEM;
    if (rc == 0) {
        ES__STAT_ADD(l->accepted, 1);
        return;
    }
    if (c)
        es__conn_free(c); /* closes fd */
    else
        close(fd);
    ES__STAT_ADD(l->rejected, 1);
    es__log(ES_LOG_WARN, "connection dropped: cannot spawn its actor: %s",
            es_strerror(rc));
}

static void back_off(es_actor_t *self, struct acceptor *a)
{
    ES__STAT_ADD(a->l->fd_exhausted, 1);
    (void)es_io_unwatch(self, a->fd);
    if (es_timer_start(self, BACKOFF_MS, 0, BACKOFF_TAG, NULL) != 0)
        (void)es_io_watch(self, a->fd, ES_IO_READ); /* keep listening */
}

static void accept_some(es_actor_t *self, struct acceptor *a)
{
    for (int i = 0; i < ACCEPT_BUDGET; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            hand_off(self, a->l, fd);
            continue;
        }
        switch (errno) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            back_off(self, a);
            return;
        case EAGAIN:
            return;
        default:
            es__log(ES_LOG_ERROR, "accept: %s", es_strerror(-errno));
            return;
        }
    }
}

static int acceptor_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct acceptor *a = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        return es_io_watch(self, a->fd, ES_IO_READ);
    case ES_MSG_IO:
        accept_some(self, a);
        return 0;
    case ES_MSG_TIMER:
        if (es_msg_timer_tag(msg) == BACKOFF_TAG)
            return es_io_watch(self, a->fd, ES_IO_READ);
        return 0;
    default:
        return 0;
    }
}

static int set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    return 0;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* A listening socket on ss; returns the fd or -errno. */
static int open_socket(struct sockaddr_storage *ss, socklen_t len,
                       bool reuseport, int backlog)
{
    int fd =
        socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (ss->ss_family != AF_UNIX &&
        (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
         (reuseport &&
          setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)))
        goto fail;
    if (ss->ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)ss, len) < 0 || listen(fd, backlog) < 0)
        goto fail;
    return fd;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

/* Opens the sockets and spawns the acceptors; l->nacc counts them. */
static int start_acceptors(es_listener_t *l, const es_listen_opts_t *opts,
                           struct sockaddr_storage *ss, socklen_t len)
{
    int backlog = opts->backlog > 0 ? opts->backlog : BACKLOG_DEFAULT;
    unsigned want = l->reuseport ? es_runtime_threads(l->rt) : 1;
    for (unsigned i = 0; i < want; i++) {
        int fd = open_socket(ss, len, l->reuseport, backlog);
        if (fd < 0)
            return fd;
        l->unix_bound = !l->is_tcp;
        if (i == 0 && l->is_tcp) {
            l->port = bound_port(fd);
            set_port(ss, l->port); /* the others share an ephemeral port */
        }
        struct acceptor *a = es__calloc(1, sizeof(*a));
        if (!a) {
            close(fd);
            return -ENOMEM;
        }
        /* Complete before the spawn: the acceptor may run at once. */
        *a = (struct acceptor){.l = l, .fd = fd};
        atomic_fetch_add(&l->refs, 1);
        pthread_mutex_lock(&l->lock);
        l->open_fds++;
        pthread_mutex_unlock(&l->lock);
        es_spawn_opts_t so = {.behaviour = acceptor_behaviour,
                              .state = a,
                              .state_free = acceptor_free,
                              .loop =
                                  l->reuseport ? ES_LOOP((int)i) : ES_LOOP_ANY};
        int rc = es_spawn(l->rt, &so, &l->acc[i]);
        if (rc) {
            acceptor_free(a); /* not spawned: still ours */
            return rc;
        }
        l->nacc++;
    }
    return 0;
}

/* Stops the acceptors; waits for their sockets to close when it can. */
static void stop_acceptors(es_listener_t *l)
{
    for (unsigned i = 0; i < l->nacc; i++) {
        int rc;
        while ((rc = es_stop(l->rt, l->acc[i])) == -EAGAIN)
            sched_yield();
    }
    /* From a demux thread, or once the threads are gone, waiting could
     * deadlock or is not needed: the sockets close as the actors stop. */
    if (!es__runtime_running(l->rt) || es_runtime_current_loop(l->rt) >= 0)
        return;
    pthread_mutex_lock(&l->lock);
    while (l->open_fds)
        pthread_cond_wait(&l->cond, &l->lock);
    pthread_mutex_unlock(&l->lock);
}

static int listener_new(es_runtime_t *rt, const es_listen_opts_t *opts,
                        const struct sockaddr_storage *ss, es_listener_t **out)
{
    es_listener_t *l = es__calloc(1, sizeof(*l));
    unsigned n = opts->reuseport ? es_runtime_threads(rt) : 1;
    if (l)
        l->acc = es__calloc(n, sizeof(*l->acc));
    if (l)
        l->conn = es__conn_cfg_new(&opts->conn);
    if (!l || !l->acc || !l->conn) {
        if (l) {
            es__free(l->acc);
            es__conn_cfg_unref(l->conn);
        }
        es__free(l);
        return -ENOMEM;
    }
    l->rt = rt;
    l->placement = opts->placement;
    l->reuseport = opts->reuseport != 0;
    l->is_tcp = ss->ss_family != AF_UNIX;
    atomic_init(&l->refs, 1);
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    if (!l->is_tcp) {
        const char *path = ((const struct sockaddr_un *)ss)->sun_path;
        l->unix_path = es__malloc(strlen(path) + 1);
        if (!l->unix_path) {
            listener_unref(l);
            return -ENOMEM;
        }
        strcpy(l->unix_path, path);
    }
    *out = l;
    return 0;
}

int es_listen(es_runtime_t *rt, const es_listen_opts_t *opts,
              es_listener_t **out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!rt || !opts || !opts->conn.behaviour || !out)
        return -EINVAL;
    int rc = es_addr_parse(opts->address, &ss, &len); /* addr.c */
    if (rc)
        return rc;
    if (opts->reuseport && ss.ss_family == AF_UNIX)
        return -EINVAL;
    es_listener_t *l;
    rc = listener_new(rt, opts, &ss, &l);
    if (rc)
        return rc;
    rc = start_acceptors(l, opts, &ss, len);
    if (rc) {
        stop_acceptors(l);
        listener_unref(l);
        return rc;
    }
    *out = l;
    return 0;
}

int es_listener_port(const es_listener_t *l)
{
    return l ? l->port : 0;
}

int es_listener_stats(const es_listener_t *l, es_listener_stats_t *out)
{
    if (!l || !out)
        return -EINVAL;
    out->accepted = atomic_load_explicit(&l->accepted, memory_order_relaxed);
    out->fd_exhausted =
        atomic_load_explicit(&l->fd_exhausted, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&l->rejected, memory_order_relaxed);
    return 0;
}

void es_listener_free(es_listener_t *l)
{
    if (!l)
        return;
    stop_acceptors(l);
    listener_unref(l);
}
