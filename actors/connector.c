/* SPDX-License-Identifier: MIT */
/*
 * Outbound connections: es_connect() spawns a connection actor that starts
 * in the connecting state. Numeric addresses and Unix paths connect at
 * once; host names go to the resolver thread (resolver.c) so no demux
 * thread blocks in getaddrinfo(). Each resolved address is tried in turn
 * with a non-blocking connect(); one timer bounds resolution and connection
 * together. On success the actor becomes an ordinary connection
 * (ES_MSG_CONN_OPEN); on failure it closes with the reason.
 */
#include "conn_private.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_DEFAULT_MS 10000u

void es__connect_free(struct es__connect *cx)
{
    if (cx->ai_list)
        freeaddrinfo(cx->ai_list);
    es__free(cx->host);
    es__free(cx->unix_path);
    es__free(cx);
}

static int reason_of(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return ES_CONN_REFUSED;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
        return ES_CONN_UNREACHABLE;
    case ETIMEDOUT:
        return ES_CONN_CONNECT_TIMEOUT;
    default:
        return ES_CONN_ERROR;
    }
}

/* Starts a connect to sa; 1 if connected, 0 if in progress, else -errno. */
static int connect_one(struct es__conn *c, const struct sockaddr *sa,
                       socklen_t len)
{
    int fd =
        socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, sa, len) == 0) {
        c->fd = fd;
        return 1;
    }
    if (errno == EINPROGRESS) {
        c->fd = fd;
        return 0;
    }
    int err = -errno;
    close(fd);
    return err;
}

static void connected(es_actor_t *self, struct es__conn *c)
{
    es__conn_timer(self, c, ES__TIMER_NONE, 0);
    es__connect_free(c->cx);
    c->cx = NULL;
    es__conn_opened(self, c);
}

/* Tries the remaining addresses until one connects or is in progress. */
static void try_next(es_actor_t *self, struct es__conn *c)
{
    struct es__connect *cx = c->cx;
    while (cx->ai_next) {
        struct addrinfo *ai = cx->ai_next;
        cx->ai_next = ai->ai_next;
        c->is_tcp = true;
        int rc = connect_one(c, ai->ai_addr, ai->ai_addrlen);
        if (rc == 1) {
            connected(self, c);
            return;
        }
        if (rc == 0) {
            int w = es_io_watch(self, c->fd, ES_IO_WRITE);
            if (w == 0) {
                c->watched = ES_IO_WRITE;
                return;
            }
            rc = w;
            close(c->fd);
            c->fd = -1;
        }
        cx->last_err = -rc;
    }
    es__conn_fail(c, reason_of(cx->last_err), -cx->last_err);
}

static void start_unix(es_actor_t *self, struct es__conn *c)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(c->cx->unix_path);
    if (n >= sizeof(un.sun_path)) {
        es__conn_fail(c, ES_CONN_ERROR, -ENAMETOOLONG);
        return;
    }
    memcpy(un.sun_path, c->cx->unix_path, n + 1);
    c->is_tcp = false;
    int rc = connect_one(c, (struct sockaddr *)&un, sizeof(un));
    if (rc == 1)
        connected(self, c);
    else if (rc == 0 && es_io_watch(self, c->fd, ES_IO_WRITE) == 0)
        c->watched = ES_IO_WRITE;
    else
        es__conn_fail(c, reason_of(rc < 0 ? -rc : EIO), rc < 0 ? rc : -EIO);
}

void es__connector_start(es_actor_t *self, struct es__conn *c)
{
    struct es__connect *cx = c->cx;
    c->connecting = true;
    if (es__conn_timer(self, c, ES__TIMER_CONNECT, cx->timeout_ms) != 0) {
        es__conn_fail(c, ES_CONN_ERROR, -ENOMEM);
        return;
    }
    if (cx->unix_path) {
        start_unix(self, c);
        return;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    if (getaddrinfo(cx->host, cx->port, &hints, &cx->ai_list) == 0) {
        cx->ai_next = cx->ai_list; /* numeric: no lookup needed */
        try_next(self, c);
        return;
    }
    cx->ai_list = NULL;
    int rc = es__resolve(self->rt, self->id, cx->host, cx->port);
    if (rc)
        es__conn_fail(c, ES_CONN_RESOLVE_FAILED, rc);
}

void es__connector_on_resolved(es_actor_t *self, struct es__conn *c,
                               es_msg_t *msg)
{
    if (!c->connecting || !c->cx || c->cx->ai_list)
        return; /* late: timed out or closed meanwhile; the runtime frees */
    if (!msg->ptr) {
        es__conn_fail(c, ES_CONN_RESOLVE_FAILED, (int)msg->inl.i64[0]);
        return;
    }
    c->cx->ai_list = es_msg_take(msg);
    c->cx->ai_next = c->cx->ai_list;
    try_next(self, c);
}

void es__connector_on_io(es_actor_t *self, struct es__conn *c, uint32_t events)
{
    int err = 0;
    socklen_t len = sizeof(err);
    (void)events;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err == 0) {
        connected(self, c); /* settle() moves the watch to reading */
        return;
    }
    (void)es_io_unwatch(self, c->fd);
    c->watched = 0;
    close(c->fd);
    c->fd = -1;
    c->cx->last_err = err;
    if (c->cx->unix_path)
        es__conn_fail(c, reason_of(err), -err);
    else
        try_next(self, c);
}

static struct es__connect *connect_new(const es_connect_opts_t *opts)
{
    struct es__connect *cx = es__calloc(1, sizeof(*cx));
    if (!cx)
        return NULL;
    const char *src = opts->unix_path ? opts->unix_path : opts->host;
    char *copy = es__malloc(strlen(src) + 1);
    if (!copy) {
        es__free(cx);
        return NULL;
    }
    strcpy(copy, src);
    if (opts->unix_path)
        cx->unix_path = copy;
    else
        cx->host = copy;
    snprintf(cx->port, sizeof(cx->port), "%u", (unsigned)opts->port);
    cx->timeout_ms =
        opts->timeout_ms ? opts->timeout_ms : CONNECT_TIMEOUT_DEFAULT_MS;
    return cx;
}

int es_connect(es_runtime_t *rt, const es_connect_opts_t *opts,
               es_actor_id_t *out)
{
    if (!rt || !opts || !out || !opts->conn.behaviour ||
        (!opts->host == !opts->unix_path) || (opts->host && !opts->port))
        return -EINVAL;
    struct es__conn_cfg *cfg = es__conn_cfg_new(&opts->conn);
    struct es__conn *c = es__conn_new(cfg, -1, opts->host != NULL);
    es__conn_cfg_unref(cfg); /* c has its own reference */
    if (!c)
        return -ENOMEM;
    c->cx = connect_new(opts);
    if (!c->cx) {
        es__conn_free(c);
        return -ENOMEM;
    }
    int rc = es__conn_spawn(rt, c, opts->loop, opts->placement, out);
    if (rc)
        es__conn_free(c);
    return rc;
}
