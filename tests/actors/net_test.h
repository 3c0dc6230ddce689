/* SPDX-License-Identifier: MIT */
/*
 * Shared by the network tests (tests/actors/): per-connection bookkeeping
 * that checks the documented message order of a connection actor (START,
 * OPEN, DATA/SENT/HIGH/LOW/user messages, exactly one CLOSED, STOP, then
 * state_free) and counts close reasons, plus plain-socket client helpers
 * with bounded waits (poll with timeouts) for driving a server from the
 * test thread.
 */
#ifndef ES_NET_TEST_H
#define ES_NET_TEST_H

#include "es_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- Connection bookkeeping (every test of this file) --------------------- */

#define LOG_MAX 64
#define MAX_LOOPS 4

struct conn;

/*
 * Counters shared by every connection actor of one side (a listener's
 * connections, or a set of es_connect() actors). The bookkeeping checks the
 * documented order: START, OPEN, DATA/SENT/HIGH/LOW/user messages, exactly
 * one CLOSED, STOP, then state_free. A test adds behaviour with `hook`.
 */
struct net {
    int (*hook)(es_actor_t *self, struct conn *c, es_msg_t *msg);
    bool echo; /* write every DATA back */
    void *ctx; /* for the hook */
    atomic_ullong started, opened, closed, stopped, freed;
    atomic_ullong reasons[ES_CONN_STOPPED + 1];
    atomic_int last_error;   /* es_msg_conn_error() of the last CLOSED */
    atomic_ullong bad_order; /* a message out of the documented order */
    atomic_ullong closed_twice, stop_without_closed, closed_before_open;
    atomic_ullong data_msgs, data_bytes, sent_msgs, sent_bytes;
    atomic_ullong high, low, user, data_while_high;
    atomic_ullong write_fail;
    atomic_int write_err;
    atomic_ullong per_loop[MAX_LOOPS];
    atomic_ullong live, peak_live;
    atomic_ullong max_queued, max_data;
    atomic_ullong last_id;
    /* The message types seen by the first connection to start. */
    atomic_int log_claimed;
    atomic_ullong nlog;
    uint32_t log[LOG_MAX];
};

/* One connection actor's state (state_new's result). */
struct conn {
    struct net *net;
    int phase; /* 0 new, 1 started, 2 open, 3 closed, 4 stopped */
    bool logging;
    bool high; /* between HIGH_WATER and LOW_WATER */
    int loop;
    es_actor_id_t id;
    uint64_t in; /* scratch for hooks: bytes received */
};

static inline void max_store(atomic_ullong *v, unsigned long long x)
{
    unsigned long long cur = atomic_load(v);

    while (x > cur && !atomic_compare_exchange_weak(v, &cur, x))
        ;
}

static inline void track_start(es_actor_t *self, struct conn *c)
{
    struct net *n = c->net;

    if (c->phase != 0)
        atomic_fetch_add(&n->bad_order, 1);
    c->phase = 1;
    c->id = es_actor_self(self);
    c->loop = es_actor_loop_index(self);
    atomic_store(&n->last_id, c->id);
    atomic_fetch_add(&n->started, 1);
}

static inline void track_open(struct conn *c)
{
    struct net *n = c->net;

    if (c->phase != 1)
        atomic_fetch_add(&n->bad_order, 1);
    c->phase = 2;
    if (c->loop >= 0 && c->loop < MAX_LOOPS)
        atomic_fetch_add(&n->per_loop[c->loop], 1);
    max_store(&n->peak_live, atomic_fetch_add(&n->live, 1) + 1);
    atomic_fetch_add(&n->opened, 1);
}

static inline void track_closed(struct conn *c, es_msg_t *msg)
{
    struct net *n = c->net;
    int r = es_msg_conn_reason(msg);

    if (c->phase == 3 || c->phase == 4)
        atomic_fetch_add(&n->closed_twice, 1);
    else if (c->phase == 1)
        atomic_fetch_add(&n->closed_before_open, 1);
    else if (c->phase == 2)
        atomic_fetch_sub(&n->live, 1);
    else
        atomic_fetch_add(&n->bad_order, 1);
    c->phase = 3;
    if (r >= 0 && r <= ES_CONN_STOPPED)
        atomic_fetch_add(&n->reasons[r], 1);
    else
        atomic_fetch_add(&n->bad_order, 1);
    atomic_store(&n->last_error, es_msg_conn_error(msg));
    atomic_fetch_add(&n->closed, 1);
}

/* Counts msg and checks it comes in the documented order. */
static inline void track(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct net *n = c->net;
    bool open = c->phase == 2;
    int zero = 0;

    if (msg->type == ES_MSG_START && c->phase == 0)
        c->logging = atomic_compare_exchange_strong(&n->log_claimed, &zero, 1);
    if (c->logging) {
        unsigned long long i = atomic_load(&n->nlog);

        if (i < LOG_MAX)
            n->log[i] = msg->type;
        atomic_store(&n->nlog, i + 1);
    }
    switch (msg->type) {
    case ES_MSG_START:
        track_start(self, c);
        return;
    case ES_MSG_CONN_OPEN:
        track_open(c);
        return;
    case ES_MSG_CONN_DATA:
        atomic_fetch_add(&n->data_msgs, 1);
        atomic_fetch_add(&n->data_bytes, msg->len);
        max_store(&n->max_data, msg->len);
        if (c->high)
            atomic_fetch_add(&n->data_while_high, 1);
        break;
    case ES_MSG_CONN_SENT:
        atomic_fetch_add(&n->sent_msgs, 1);
        atomic_fetch_add(&n->sent_bytes, msg->len);
        break;
    case ES_MSG_CONN_HIGH_WATER:
        c->high = true;
        atomic_fetch_add(&n->high, 1);
        break;
    case ES_MSG_CONN_LOW_WATER:
        c->high = false;
        atomic_fetch_add(&n->low, 1);
        break;
    case ES_MSG_CONN_CLOSED:
        track_closed(c, msg);
        return;
    case ES_MSG_STOP:
        if (c->phase != 3)
            atomic_fetch_add(&n->stop_without_closed, 1);
        c->phase = 4;
        atomic_fetch_add(&n->stopped, 1);
        return;
    default:
        if (msg->type < ES_MSG_USER)
            atomic_fetch_add(&n->bad_order, 1); /* IO, TIMER, ... */
        else
            atomic_fetch_add(&n->user, 1);
        open = c->phase >= 1 && c->phase <= 3;
        break;
    }
    if (!open)
        atomic_fetch_add(&n->bad_order, 1);
}

static inline int conn_cb(es_actor_t *self, es_msg_t *msg)
{
    struct conn *c = es_conn_state(self);
    struct net *n = c->net;

    track(self, c, msg);
    if (n->echo && msg->type == ES_MSG_CONN_DATA) {
        int rc = es_conn_write(self, msg->ptr, msg->len);

        if (rc != 0) {
            atomic_fetch_add(&n->write_fail, 1);
            atomic_store(&n->write_err, rc);
        }
        max_store(&n->max_queued, es_conn_queued(self));
    }
    return n->hook ? n->hook(self, c, msg) : 0;
}

static inline void *conn_new(void *arg)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c)
        c->net = arg;
    return c;
}

static inline void conn_free(void *state)
{
    struct conn *c = state;

    if (c->phase != 4)
        atomic_fetch_add(&c->net->bad_order, 1);
    atomic_fetch_add(&c->net->freed, 1);
    free(c);
}

/* Fills in the callbacks of opts->conn for net n. */
static inline void conn_opts_for(es_conn_opts_t *o, struct net *n)
{
    o->behaviour = conn_cb;
    o->state_new = conn_new;
    o->state_free = conn_free;
    o->arg = n;
}

/* Every connection of n lived once, in order, and closed exactly once. */
static inline void assert_net(struct net *n, unsigned long long conns,
                              const char *side)
{
    cr_assert_eq(atomic_load(&n->started), conns, "%s: started %llu of %llu",
                 side, (unsigned long long)atomic_load(&n->started), conns);
    cr_assert_eq(atomic_load(&n->closed), conns, "%s: closed %llu of %llu",
                 side, (unsigned long long)atomic_load(&n->closed), conns);
    cr_assert_eq(atomic_load(&n->stopped), conns, "%s: stopped %llu", side,
                 (unsigned long long)atomic_load(&n->stopped));
    cr_assert_eq(atomic_load(&n->freed), conns, "%s: freed %llu", side,
                 (unsigned long long)atomic_load(&n->freed));
    cr_assert_eq(atomic_load(&n->closed_twice), 0, "%s: CLOSED twice", side);
    cr_assert_eq(atomic_load(&n->stop_without_closed), 0,
                 "%s: STOP without CLOSED", side);
    cr_assert_eq(atomic_load(&n->bad_order), 0, "%s: %llu out of order", side,
                 (unsigned long long)atomic_load(&n->bad_order));
}

/* All conns closed for `reason`. */
static inline void assert_reason(struct net *n, int reason,
                                 unsigned long long conns, const char *side)
{
    cr_assert_eq(atomic_load(&n->reasons[reason]), conns,
                 "%s: %llu of %llu closed with %s (last reason error %d)", side,
                 (unsigned long long)atomic_load(&n->reasons[reason]), conns,
                 es_conn_reason_str(reason), atomic_load(&n->last_error));
}

/* --- Client sockets, driven by poll() in the test thread ------------------ */

/* A byte of the test pattern at stream offset i. */
static inline uint8_t pat(uint64_t i)
{
    return (uint8_t)((i * 131u) ^ (i >> 11) ^ (i >> 19));
}

static inline void addr_lo(struct sockaddr_in *a, int port)
{
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* Waits for `events` on fd for at most `ms`. Returns revents or 0. */
static inline short poll_one(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r;

    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    return r > 0 ? p.revents : 0;
}

/* Connects a non-blocking socket to sa. Returns the fd or -errno. */
static inline int client_connect(const struct sockaddr *sa, socklen_t len)
{
    int fd =
        socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = 0;
    socklen_t el = sizeof(err);

    if (fd < 0)
        return -errno;
    if (connect(fd, sa, len) != 0) {
        if (errno != EINPROGRESS) {
            err = -errno;
            close(fd);
            return err;
        }
        if (!poll_one(fd, POLLOUT, (int)(ES_TEST_WAIT_S * 1000))) {
            close(fd);
            return -ETIMEDOUT;
        }
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            close(fd);
            return -err;
        }
    }
    return fd;
}

/* Connects to 127.0.0.1:port; fails the test on error. */
static inline int tcp_client(int port)
{
    struct sockaddr_in a;
    int fd;

    addr_lo(&a, port);
    fd = client_connect((struct sockaddr *)&a, sizeof(a));
    cr_assert_geq(fd, 0, "connect 127.0.0.1:%d: %s", port, strerror(-fd));
    return fd;
}

/* Sends all of p within secs. Returns true if all was sent. */
static inline bool send_all(int fd, const void *p, size_t len, double secs)
{
    const char *s = p;
    double end = es_test_now() + secs;

    while (len > 0) {
        ssize_t w = send(fd, s, len, MSG_NOSIGNAL);

        if (w > 0) {
            s += w;
            len -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
        } else if (es_test_now() > end) {
            return false;
        } else {
            poll_one(fd, POLLOUT, 100);
        }
    }
    return true;
}

/* Receives up to len bytes within secs, stopping at EOF or an error.
 * Returns the byte count. */
static inline size_t recv_upto(int fd, void *p, size_t len, double secs)
{
    char *d = p;
    size_t got = 0;
    double end = es_test_now() + secs;

    while (got < len && es_test_now() <= end) {
        ssize_t r = recv(fd, d + got, len - got, 0);

        if (r > 0)
            got += (size_t)r;
        else if (r == 0 || (errno != EAGAIN && errno != EINTR))
            break;
        else
            poll_one(fd, POLLIN, 100);
    }
    return got;
}

/* Raises the soft fd limit to the hard one; returns it. */
static inline rlim_t raise_nofile(void)
{
    struct rlimit rl;

    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    return rl.rlim_cur;
}

/* Listens on address with n's callbacks and `conn` settings. */
static inline es_listener_t *listen_net(es_runtime_t *rt, const char *address,
                                        struct net *n,
                                        const es_conn_opts_t *conn)
{
    es_listen_opts_t o = {.address = address};
    es_listener_t *l = NULL;

    if (conn)
        o.conn = *conn;
    conn_opts_for(&o.conn, n);
    ES_OK(es_listen(rt, &o, &l));
    cr_assert_not_null(l);
    return l;
}

/* Sends s and expects it back. */
static inline void echo_check(int fd, const char *s)
{
    size_t len = strlen(s);
    char buf[256];

    cr_assert_lt(len, sizeof(buf));
    cr_assert(send_all(fd, s, len, ES_TEST_WAIT_S), "send: %s",
              strerror(errno));
    cr_assert_eq(recv_upto(fd, buf, len, ES_TEST_WAIT_S), len,
                 "echo of \"%s\" incomplete", s);
    cr_assert_eq(memcmp(buf, s, len), 0, "echo differs");
}

/* Opens n TCP clients to port, one echo each; they stay open. */
/* Closes fd with a reset (SO_LINGER 0) instead of a FIN. */
static inline void rst_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static inline int *open_clients(int port, int n)
{
    int *fds = calloc((size_t)n, sizeof(int));

    cr_assert_not_null(fds);
    for (int i = 0; i < n; i++) {
        char s[32];

        fds[i] = tcp_client(port);
        snprintf(s, sizeof(s), "client %d", i);
        echo_check(fds[i], s);
    }
    return fds;
}

#endif /* ES_NET_TEST_H */
