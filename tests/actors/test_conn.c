/* SPDX-License-Identifier: MIT */
/*
 * Tests of connection actors (actors/conn.c) over real loopback sockets,
 * with plain non-blocking client sockets driven by poll() in the test
 * thread: the message order START, OPEN, DATA/SENT/watermarks/user
 * messages, exactly one CLOSED, STOP, state_free; every close reason a
 * server side can see (peer closed after queued writes are flushed, peer
 * reset, local close and abort, idle timeout, runtime shutdown); copying
 * and zero-copy writes (free_cb exactly once, -EPIPE after close);
 * half-close, pause/resume, TCP_NODELAY; 16 MiB in both directions through
 * partial writes; a reset in the middle of a transfer; and a slow reader,
 * which must make the server stop reading instead of queueing without
 * bound. Behaviours only count; the test thread asserts after the run.
 */
#include "net_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads and drops data until EOF (returns 0), an error (-errno) or secs
 * pass (-ETIMEDOUT). */
static int recv_end(int fd, double secs)
{
    char buf[65536];
    double end = es_test_now() + secs;

    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);

        if (r == 0)
            return 0;
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        if (r < 0) {
            if (es_test_now() > end)
                return -ETIMEDOUT;
            poll_one(fd, POLLIN, 100);
        }
    }
}

/* --- Helpers of this file ------------------------------------------------- */

enum { MSG_RESUME = ES_MSG_USER, MSG_SYNC };

#define MIB (1024u * 1024u)
#define NOT_CALLED 99

/* What a test's hook records; the meaning of each rc[] slot is per test. */
struct rec {
    atomic_int rc[6];
    atomic_ullong calls, synced, data_at_sync, bytes;
};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < 6; i++)
        atomic_store(&r->rc[i], NOT_CALLED);
}

/* free_cb of es_conn_write_ref() buffers: must run exactly once each. */
static atomic_ullong g_ref_freed;

static void ref_free(void *p)
{
    atomic_fetch_add(&g_ref_freed, 1);
    free(p);
}

/* A malloc'd buffer holding the pattern at offsets 0..len-1. */
static uint8_t *pattern_buf(size_t len)
{
    uint8_t *b = malloc(len);

    if (b)
        for (size_t i = 0; i < len; i++)
            b[i] = pat(i);
    return b;
}

/* Queues `len` pattern bytes with es_conn_write_ref(); returns its result. */
static int write_ref_pattern(es_actor_t *self, size_t len)
{
    uint8_t *b = pattern_buf(len);
    int rc;

    if (!b)
        return -ENOMEM;
    rc = es_conn_write_ref(self, b, len, ref_free);
    if (rc != 0)
        free(b); /* ownership moves only on success */
    return rc;
}

static bool data_is(const es_msg_t *msg, const char *s)
{
    return msg->type == ES_MSG_CONN_DATA && msg->len == strlen(s) &&
           memcmp(msg->ptr, s, msg->len) == 0;
}

/* A client with small socket buffers, so that both sides write partially. */
static int tcp_client_small(int port, int bufsize)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
    addr_lo(&a, port);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int err = 0;
        socklen_t el = sizeof(err);

        cr_assert_eq(errno, EINPROGRESS, "connect: %s", strerror(errno));
        cr_assert(poll_one(fd, POLLOUT, (int)(ES_TEST_WAIT_S * 1000)),
                  "connect timed out");
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        cr_assert_eq(err, 0, "connect: %s", strerror(err));
    }
    return fd;
}

/* The test thread's side of a streaming exchange. */
struct pump {
    uint64_t wrote, read;
    int64_t bad_at; /* first offset whose byte differed, or -1 */
    bool eof;
    int err; /* -errno of a failed send or recv */
};

static void pump_send(int fd, uint8_t *buf, size_t cap, uint64_t total,
                      struct pump *p)
{
    size_t n = total - p->wrote < cap ? (size_t)(total - p->wrote) : cap;
    ssize_t w;

    for (size_t i = 0; i < n; i++)
        buf[i] = pat(p->wrote + i);
    w = send(fd, buf, n, MSG_NOSIGNAL);
    if (w > 0)
        p->wrote += (uint64_t)w;
    else if (w < 0 && errno != EAGAIN && errno != EINTR)
        p->err = -errno;
}

static void pump_recv(int fd, uint8_t *buf, size_t cap, struct pump *p)
{
    ssize_t r = recv(fd, buf, cap, 0);

    if (r == 0) {
        p->eof = true;
    } else if (r < 0) {
        if (errno != EAGAIN && errno != EINTR)
            p->err = -errno;
    } else {
        for (ssize_t i = 0; i < r && p->bad_at < 0; i++)
            if (buf[i] != pat(p->read + (uint64_t)i))
                p->bad_at = (int64_t)(p->read + (uint64_t)i);
        p->read += (uint64_t)r;
    }
}

/*
 * Sends the pattern up to offset `total` (then shuts down the sending side
 * if shut_wr) while reading and checking what comes back, until `expect`
 * bytes were read, EOF, an error, or secs pass. Continues from *p.
 */
static void pump(int fd, uint64_t total, uint64_t expect, bool shut_wr,
                 double secs, struct pump *p)
{
    enum { CAP = 65536 };
    uint8_t *buf = malloc(CAP);
    double end = es_test_now() + secs;
    bool shut = false;

    cr_assert_not_null(buf);
    while (p->read < expect && !p->eof && p->err == 0 && es_test_now() <= end) {
        short want = POLLIN | (p->wrote < total ? POLLOUT : 0);
        short rev = poll_one(fd, want, 100);

        if ((rev & POLLOUT) && p->wrote < total)
            pump_send(fd, buf, CAP, total, p);
        if (shut_wr && !shut && p->wrote == total) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        if (rev & (POLLIN | POLLHUP | POLLERR))
            pump_recv(fd, buf, CAP, p);
    }
    free(buf);
}

/* --- Order and close reasons ---------------------------------------------- */

Test(conn, order_open_data_closed_stop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    int fd = tcp_client(es_listener_port(l));
    es_listener_stats_t st;
    unsigned long long n;

    echo_check(fd, "hello");
    echo_check(fd, "world");
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    ES_OK(es_listener_stats(l, &st));
    es_listener_free(l);
    es_test_free(rt);

    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
    cr_assert_eq(atomic_load(&srv.opened), 1);
    cr_assert_eq(atomic_load(&srv.data_bytes), 10);
    cr_assert_eq(atomic_load(&srv.write_fail), 0);
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.rejected, 0);
    cr_assert_eq(st.fd_exhausted, 0);
    n = atomic_load(&srv.nlog);
    cr_assert(n >= 5 && n <= LOG_MAX, "%llu messages", n);
    cr_assert_eq(srv.log[0], ES_MSG_START);
    cr_assert_eq(srv.log[1], ES_MSG_CONN_OPEN);
    for (unsigned long long i = 2; i < n - 2; i++)
        cr_assert(srv.log[i] == ES_MSG_CONN_DATA ||
                      srv.log[i] == ES_MSG_CONN_SENT,
                  "message %llu is %u", i, srv.log[i]);
    cr_assert_eq(srv.log[n - 2], ES_MSG_CONN_CLOSED);
    cr_assert_eq(srv.log[n - 1], ES_MSG_STOP);
}

Test(conn, peer_close_flushes_queue_then_closes, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_conn_opts_t co = {.write_high = 256 * 1024};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, &co);
    int fd = tcp_client_small(es_listener_port(l), 16384);
    struct pump p = {.bad_at = -1};

    /* Everything sent, then EOF; the echo must arrive whole, then EOF. */
    pump(fd, 4 * MIB, 4 * MIB + 1, true, 60.0, &p);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(p.err, 0, "client: %s", strerror(-p.err));
    cr_assert_eq(p.wrote, 4 * MIB);
    cr_assert_eq(p.read, 4 * MIB, "echo: %llu bytes before EOF",
                 (unsigned long long)p.read);
    cr_assert(p.eof, "no EOF after the echo");
    cr_assert_eq(p.bad_at, -1, "echo differs at %lld", (long long)p.bad_at);
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

Test(conn, peer_reset_is_reset, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    int fd = tcp_client(es_listener_port(l));

    echo_check(fd, "before reset");
    rst_close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_RESET, 1, "server");
}

/* On "close": queue "bye" by reference, close, then misuse the closed
 * connection. rc: 0 write_ref, 1 close, 2 close again, 3 write, 4
 * write_ref after close. */
static int close_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct rec *r = c->net->ctx;
    char *bye, *late;
    int rc;

    if (!data_is(msg, "close"))
        return 0;
    bye = malloc(3);
    memcpy(bye, "bye", 3);
    rc = es_conn_write_ref(self, bye, 3, ref_free);
    if (rc != 0)
        free(bye);
    atomic_store(&r->rc[0], rc);
    atomic_store(&r->rc[1], es_conn_close(self));
    atomic_store(&r->rc[2], es_conn_close(self));
    atomic_store(&r->rc[3], es_conn_write(self, "x", 1));
    late = malloc(1);
    rc = es_conn_write_ref(self, late, 1, ref_free);
    if (rc != 0)
        free(late); /* refused: still ours */
    atomic_store(&r->rc[4], rc);
    atomic_fetch_add(&r->calls, 1);
    return 0;
}

Test(conn, local_close_flushes_then_eof, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.hook = close_hook, .ctx = &r};
    es_listener_t *l;
    int fd, end;
    char buf[8];

    rec_init(&r);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fd = tcp_client(es_listener_port(l));
    cr_assert(send_all(fd, "close", 5, ES_TEST_WAIT_S));
    cr_assert_eq(recv_upto(fd, buf, 3, ES_TEST_WAIT_S), 3);
    cr_assert_eq(memcmp(buf, "bye", 3), 0);
    end = recv_end(fd, ES_TEST_WAIT_S);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(end, 0, "client: %s instead of EOF", strerror(-end));
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert_eq(atomic_load(&r.rc[0]), 0, "write_ref: %d",
                 atomic_load(&r.rc[0]));
    cr_assert_eq(atomic_load(&r.rc[1]), 0, "close: %d", atomic_load(&r.rc[1]));
    cr_assert_eq(atomic_load(&r.rc[2]), -EALREADY, "close again: %d",
                 atomic_load(&r.rc[2]));
    cr_assert_eq(atomic_load(&r.rc[3]), -EPIPE, "write after close: %d",
                 atomic_load(&r.rc[3]));
    cr_assert_eq(atomic_load(&r.rc[4]), -EPIPE, "write_ref after close: %d",
                 atomic_load(&r.rc[4]));
    cr_assert_eq(atomic_load(&g_ref_freed), 1, "free_cb ran %llu times",
                 (unsigned long long)atomic_load(&g_ref_freed));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_LOCAL, 1, "server");
}

/* On "abort": queue 8 MiB by reference, abort. rc: 0 write_ref, 1 abort,
 * 2 abort again, 3 write after. */
static int abort_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct rec *r = c->net->ctx;

    if (!data_is(msg, "abort"))
        return 0;
    atomic_store(&r->rc[0], write_ref_pattern(self, 8 * MIB));
    atomic_store(&r->rc[1], es_conn_abort(self));
    atomic_store(&r->rc[2], es_conn_abort(self));
    atomic_store(&r->rc[3], es_conn_write(self, "x", 1));
    atomic_fetch_add(&r->calls, 1);
    return 0;
}

Test(conn, abort_resets_peer_and_drops_queue, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.hook = abort_hook, .ctx = &r};
    es_listener_t *l;
    int fd, end;

    rec_init(&r);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fd = tcp_client_small(es_listener_port(l), 16384);
    cr_assert(send_all(fd, "abort", 5, ES_TEST_WAIT_S));
    ES_WAIT_GE(r.calls, 1);
    end = recv_end(fd, ES_TEST_WAIT_S);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(end, -ECONNRESET, "client saw %d (%s), not a reset", end,
                 strerror(-end));
    cr_assert_eq(atomic_load(&r.rc[0]), 0, "write_ref: %d",
                 atomic_load(&r.rc[0]));
    cr_assert_eq(atomic_load(&r.rc[1]), 0, "abort: %d", atomic_load(&r.rc[1]));
    cr_assert_eq(atomic_load(&r.rc[2]), -EALREADY, "abort again: %d",
                 atomic_load(&r.rc[2]));
    cr_assert_eq(atomic_load(&r.rc[3]), -EPIPE, "write after abort: %d",
                 atomic_load(&r.rc[3]));
    cr_assert_eq(atomic_load(&g_ref_freed), 1,
                 "free_cb of the dropped buffer ran %llu times",
                 (unsigned long long)atomic_load(&g_ref_freed));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_LOCAL, 1, "server");
}

Test(conn, idle_timeout_closes, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_conn_opts_t co = {.idle_timeout_ms = 100};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, &co);
    int fd = tcp_client(es_listener_port(l));
    int end;

    echo_check(fd, "then silence");
    end = recv_end(fd, ES_TEST_WAIT_S);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(end, 0, "client: %d (%s) instead of EOF", end, strerror(-end));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_TIMEOUT, 1, "server");
}

/* At OPEN, sets the idle timeout to r->bytes ms. rc: 0 set. */
static int set_idle_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct rec *r = c->net->ctx;

    if (msg->type == ES_MSG_CONN_OPEN) {
        atomic_store(&r->rc[0], es_conn_set_idle_timeout(
                                    self, (unsigned)atomic_load(&r->bytes)));
        atomic_fetch_add(&r->calls, 1);
    }
    return 0;
}

Test(conn, set_idle_timeout_turns_it_on, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.echo = true, .hook = set_idle_hook, .ctx = &r};
    es_listener_t *l;
    int fd, end;

    rec_init(&r);
    atomic_store(&r.bytes, 100);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fd = tcp_client(es_listener_port(l));
    echo_check(fd, "then silence");
    end = recv_end(fd, ES_TEST_WAIT_S);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(atomic_load(&r.rc[0]), 0, "set: %d", atomic_load(&r.rc[0]));
    cr_assert_eq(end, 0, "client: %d (%s) instead of EOF", end, strerror(-end));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_TIMEOUT, 1, "server");
}

Test(conn, set_idle_timeout_zero_turns_it_off, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.echo = true, .hook = set_idle_hook, .ctx = &r};
    es_conn_opts_t co = {.idle_timeout_ms = 100};
    es_listener_t *l;
    int fd;

    rec_init(&r);
    atomic_store(&r.bytes, 0);
    l = listen_net(rt, "127.0.0.1:0", &srv, &co);
    fd = tcp_client(es_listener_port(l));
    ES_WAIT_GE(r.calls, 1);
    es_test_sleep_ms(400); /* four idle timeouts' worth */
    echo_check(fd, "still here");
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(atomic_load(&r.rc[0]), 0, "set: %d", atomic_load(&r.rc[0]));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

Test(conn, set_idle_timeout_moves_it_earlier, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.echo = true, .hook = set_idle_hook, .ctx = &r};
    es_conn_opts_t co = {.idle_timeout_ms = 600000};
    es_listener_t *l;
    int fd, end;

    rec_init(&r);
    atomic_store(&r.bytes, 100);
    l = listen_net(rt, "127.0.0.1:0", &srv, &co);
    fd = tcp_client(es_listener_port(l));
    end = recv_end(fd, ES_TEST_WAIT_S);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(end, 0, "client: %d (%s) instead of EOF", end, strerror(-end));
    assert_reason(&srv, ES_CONN_TIMEOUT, 1, "server");
}

Test(conn, activity_defers_idle_timeout, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct net srv = {.echo = true};
    es_conn_opts_t co = {.idle_timeout_ms = 200};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, &co);
    int fd = tcp_client(es_listener_port(l));
    double start = es_test_now(), quiet_from;
    int end;

    /* Three timeouts' worth of traffic, never quiet for half of one. */
    do {
        echo_check(fd, "busy");
        quiet_from = es_test_now();
        es_test_sleep_ms(50);
    } while (es_test_now() - start < 0.6);
    end = recv_end(fd, ES_TEST_WAIT_S);
    cr_assert_geq(es_test_now() - quiet_from, 0.2,
                  "closed %.3f s after the last activity, before its timeout",
                  es_test_now() - quiet_from);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(end, 0, "client: %d (%s) instead of EOF", end, strerror(-end));
    assert_reason(&srv, ES_CONN_TIMEOUT, 1, "server");
}

/* Many idle connections share one wheel: every one of them times out. */
Test(conn, idle_timeouts_many_all_fire, .timeout = ES_TEST_TIMEOUT_LONG)
{
    enum { N = 300 };
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_conn_opts_t co = {.idle_timeout_ms = 150};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, &co);
    double start = es_test_now();
    int *fds = open_clients(es_listener_port(l), N);
    double opened = es_test_now();

    ES_WAIT_GE(srv.freed, N);
    /* The last connection was quiet from `opened` on at the latest. */
    cr_assert_geq(es_test_now() - start, 0.15, "timed out after %.3f s",
                  es_test_now() - start);
    cr_assert_lt(es_test_now() - opened, (double)ES_TEST_WAIT_S);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    free(fds);
    es_listener_free(l);
    es_test_free(rt);
    assert_reason(&srv, ES_CONN_TIMEOUT, N, "server");
}

/* --- Writes ------------------------------------------------------------- */

/* At OPEN, queues `bytes` pattern bytes by reference. rc: 0 write_ref. */
static int send_ref_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct rec *r = c->net->ctx;

    if (msg->type == ES_MSG_CONN_OPEN) {
        atomic_store(&r->rc[0], write_ref_pattern(self, r->bytes));
        atomic_fetch_add(&r->calls, 1);
    }
    return 0;
}

/* A server that sends `bytes` by reference at OPEN; the client reads
 * `read` of them, then closes (with a reset if `reset`). */
static void ref_transfer(uint64_t bytes, uint64_t read, bool reset, int reason)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.hook = send_ref_hook, .ctx = &r};
    es_listener_t *l;
    struct pump p = {.bad_at = -1};
    int fd;

    rec_init(&r);
    atomic_store(&r.bytes, bytes);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fd = tcp_client_small(es_listener_port(l), 65536);
    pump(fd, 0, read, false, 120.0, &p);
    if (reset)
        rst_close(fd);
    else
        close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(atomic_load(&r.rc[0]), 0, "write_ref: %d",
                 atomic_load(&r.rc[0]));
    cr_assert_eq(p.err, 0, "client: %s", strerror(-p.err));
    cr_assert_geq(p.read, read, "client read %llu of %llu",
                  (unsigned long long)p.read, (unsigned long long)read);
    cr_assert_eq(p.bad_at, -1, "data differs at %lld", (long long)p.bad_at);
    cr_assert_eq(atomic_load(&g_ref_freed), 1, "free_cb ran %llu times",
                 (unsigned long long)atomic_load(&g_ref_freed));
    cr_assert_leq(atomic_load(&srv.sent_bytes), bytes);
    assert_net(&srv, 1, "server");
    assert_reason(&srv, reason, 1, "server");
}

Test(conn, write_ref_sent_frees_once, .timeout = ES_TEST_TIMEOUT)
{
    ref_transfer(1 * MIB, 1 * MIB, false, ES_CONN_PEER_CLOSED);
}

Test(conn, write_ref_16mib_partial_writes, .timeout = ES_TEST_TIMEOUT_LONG)
{
    ref_transfer(16 * MIB, 16 * MIB, false, ES_CONN_PEER_CLOSED);
}

Test(conn, peer_reset_mid_transfer, .timeout = ES_TEST_TIMEOUT)
{
    /* 256 KiB of 16 MiB read, then a reset: the rest is dropped, freed. */
    ref_transfer(16 * MIB, 256 * 1024, true, ES_CONN_RESET);
}

Test(conn, echo_16mib_both_ways, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    int fd = tcp_client_small(es_listener_port(l), 16384);
    struct pump p = {.bad_at = -1};

    pump(fd, 16 * MIB, 16 * MIB, false, 120.0, &p);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(p.err, 0, "client: %s", strerror(-p.err));
    cr_assert_eq(p.read, 16 * MIB, "echo: %llu bytes",
                 (unsigned long long)p.read);
    cr_assert_eq(p.bad_at, -1, "echo differs at %lld", (long long)p.bad_at);
    cr_assert_eq(atomic_load(&srv.data_bytes), 16 * MIB);
    cr_assert_eq(atomic_load(&srv.write_fail), 0, "write: %d",
                 atomic_load(&srv.write_err));
    /* The client's small buffers usually force partial writes; whatever
     * was queued was flushed and reported. (A server whose socket send
     * buffer grew fast enough queues nothing, and then owes no
     * ES_MSG_CONN_SENT: seen in 1 of 6 runs.) */
    if (atomic_load(&srv.max_queued) > 0)
        cr_assert_geq(atomic_load(&srv.sent_msgs), 1, "no ES_MSG_CONN_SENT");
    cr_assert_leq(atomic_load(&srv.sent_bytes), 16 * MIB);
    cr_assert_leq(atomic_load(&srv.max_queued),
                  ES_CONN_WRITE_HIGH_DEFAULT + atomic_load(&srv.max_data),
                  "queue reached %llu",
                  (unsigned long long)atomic_load(&srv.max_queued));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

/* --- Backpressure --------------------------------------------------------- */

#define SLOW_HIGH (256u * 1024u)
#define SLOW_LOW (64u * 1024u)
#define SLOW_CAP (64u * MIB)

/*
 * Writes without reading until the server stopped reading (our sends block
 * for 300 ms after it reported HIGH_WATER) or SLOW_CAP bytes.
 */
static uint64_t write_until_blocked(int fd, struct net *srv)
{
    uint8_t *buf = malloc(65536);
    struct pump p = {.bad_at = -1};
    double end = es_test_now() + 60.0;
    double progress = es_test_now();

    cr_assert_not_null(buf);
    while (p.wrote < SLOW_CAP && p.err == 0 && es_test_now() <= end) {
        uint64_t before = p.wrote;

        if (poll_one(fd, POLLOUT, 50) & POLLOUT)
            pump_send(fd, buf, 65536, SLOW_CAP, &p);
        if (p.wrote != before)
            progress = es_test_now();
        else if (atomic_load(&srv->high) >= 1 && es_test_now() - progress > 0.3)
            break;
    }
    free(buf);
    cr_assert_eq(p.err, 0, "client send: %s", strerror(-p.err));
    return p.wrote;
}

Test(conn, slow_reader_bounds_server_queue, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_conn_opts_t co = {.write_high = SLOW_HIGH, .write_low = SLOW_LOW};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, &co);
    int fd = tcp_client(es_listener_port(l));
    struct pump p = {.bad_at = -1};
    unsigned long long in_before, in_after;

    p.wrote = write_until_blocked(fd, &srv);
    in_before = atomic_load(&srv.data_bytes);
    es_test_sleep_ms(200);
    in_after = atomic_load(&srv.data_bytes);
    /* Drain: the server resumes and everything comes back in order. */
    pump(fd, p.wrote + MIB, p.wrote + MIB, false, 120.0, &p);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_lt(p.wrote, SLOW_CAP + MIB,
                 "client was never blocked: the server kept reading");
    cr_assert_eq(in_before, in_after, "server read while paused");
    cr_assert_geq(atomic_load(&srv.high), 1, "no HIGH_WATER");
    cr_assert_geq(atomic_load(&srv.low), 1, "no LOW_WATER");
    cr_assert_eq(atomic_load(&srv.data_while_high), 0,
                 "%llu DATA between HIGH_WATER and LOW_WATER",
                 (unsigned long long)atomic_load(&srv.data_while_high));
    cr_assert_leq(atomic_load(&srv.max_queued),
                  SLOW_HIGH + atomic_load(&srv.max_data),
                  "queue reached %llu (high %u, largest read %llu)",
                  (unsigned long long)atomic_load(&srv.max_queued), SLOW_HIGH,
                  (unsigned long long)atomic_load(&srv.max_data));
    cr_assert_eq(p.err, 0, "client: %s", strerror(-p.err));
    cr_assert_eq(p.read, p.wrote, "echo: %llu of %llu",
                 (unsigned long long)p.read, (unsigned long long)p.wrote);
    cr_assert_eq(p.bad_at, -1, "echo differs at %lld", (long long)p.bad_at);
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

/* Pauses at OPEN; MSG_RESUME resumes; MSG_SYNC snapshots the DATA count.
 * rc: 0 pause, 1 resume. */
static int pause_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct rec *r = c->net->ctx;

    switch (msg->type) {
    case ES_MSG_CONN_OPEN:
        atomic_store(&r->rc[0], es_conn_pause(self, 1));
        atomic_fetch_add(&r->calls, 1);
        break;
    case MSG_RESUME:
        atomic_store(&r->rc[1], es_conn_pause(self, 0));
        break;
    case MSG_SYNC:
        atomic_store(&r->data_at_sync, atomic_load(&c->net->data_msgs));
        atomic_fetch_add(&r->synced, 1);
        break;
    }
    return 0;
}

Test(conn, pause_stops_data_until_resumed, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.echo = true, .hook = pause_hook, .ctx = &r};
    es_listener_t *l;
    es_actor_id_t id;
    es_msg_t sync = es_msg_make(MSG_SYNC), resume = es_msg_make(MSG_RESUME);
    int fd;

    rec_init(&r);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fd = tcp_client(es_listener_port(l));
    ES_WAIT_GE(r.calls, 1);
    id = atomic_load(&srv.last_id);
    cr_assert(send_all(fd, "abc", 3, ES_TEST_WAIT_S));
    es_test_sleep_ms(100);
    ES_OK(es_test_send_retry(rt, id, &sync, ES_TEST_WAIT_S));
    ES_WAIT_GE(r.synced, 1);
    ES_OK(es_test_send_retry(rt, id, &resume, ES_TEST_WAIT_S));
    {
        char buf[3];

        cr_assert_eq(recv_upto(fd, buf, 3, ES_TEST_WAIT_S), 3,
                     "no echo after resume");
        cr_assert_eq(memcmp(buf, "abc", 3), 0);
    }
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(atomic_load(&r.rc[0]), 0, "pause: %d", atomic_load(&r.rc[0]));
    cr_assert_eq(atomic_load(&r.rc[1]), 0, "resume: %d", atomic_load(&r.rc[1]));
    cr_assert_eq(atomic_load(&r.data_at_sync), 0, "DATA while paused");
    cr_assert_eq(atomic_load(&srv.user), 2);
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

/* On "half": reply, then shut down the sending side. Other data is
 * counted. rc: 0 shutdown, 1 shutdown again. */
static int half_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct rec *r = c->net->ctx;

    if (msg->type != ES_MSG_CONN_DATA)
        return 0;
    if (data_is(msg, "half")) {
        es_conn_write(self, "reply", 5);
        atomic_store(&r->rc[0], es_conn_shutdown(self));
        atomic_store(&r->rc[1], es_conn_shutdown(self));
    } else {
        atomic_fetch_add(&r->bytes, msg->len);
    }
    return 0;
}

Test(conn, shutdown_half_closes, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r;
    struct net srv = {.hook = half_hook, .ctx = &r};
    es_listener_t *l;
    int fd, end;
    char buf[5];

    rec_init(&r);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fd = tcp_client(es_listener_port(l));
    cr_assert(send_all(fd, "half", 4, ES_TEST_WAIT_S));
    cr_assert_eq(recv_upto(fd, buf, 5, ES_TEST_WAIT_S), 5);
    cr_assert_eq(memcmp(buf, "reply", 5), 0);
    end = recv_end(fd, ES_TEST_WAIT_S);
    /* Our direction is still open. */
    cr_assert(send_all(fd, "more", 4, ES_TEST_WAIT_S));
    ES_WAIT_GE(r.bytes, 4);
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(end, 0, "client: %d instead of EOF", end);
    cr_assert_eq(atomic_load(&r.rc[0]), 0, "shutdown: %d",
                 atomic_load(&r.rc[0]));
    cr_assert_eq(atomic_load(&r.rc[1]), -EALREADY, "shutdown again: %d",
                 atomic_load(&r.rc[1]));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

/* Reads TCP_NODELAY of fd: 1 on, 0 off, -1 error. */
static int nodelay_of(int fd)
{
    int v = -1;
    socklen_t len = sizeof(v);

    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) != 0)
        return -1;
    return v != 0;
}

/* At OPEN, reads TCP_NODELAY, sends once, reads it, sends again, reads it.
 * rc: 0 the option after the second send, 1 es_conn_fd() >= 0, 2 before
 * any send, 3 after the first send. */
static int nodelay_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    struct rec *r = c->net->ctx;
    int fd;

    if (msg->type != ES_MSG_CONN_OPEN)
        return 0;
    fd = es_conn_fd(self);
    atomic_store(&r->rc[1], fd >= 0);
    atomic_store(&r->rc[2], nodelay_of(fd));
    es_conn_write(self, "a", 1);
    atomic_store(&r->rc[3], nodelay_of(fd));
    es_conn_write(self, "b", 1);
    atomic_store(&r->rc[0], nodelay_of(fd));
    atomic_fetch_add(&r->calls, 1);
    return 0;
}

Test(conn, tcp_nodelay_on_from_second_send, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct rec r[2];
    struct net srv[2] = {{.hook = nodelay_hook, .ctx = &r[0]},
                         {.hook = nodelay_hook, .ctx = &r[1]}};
    es_conn_opts_t off = {.no_delay = -1};
    es_listener_t *l[2];
    int fd[2];

    rec_init(&r[0]);
    rec_init(&r[1]);
    l[0] = listen_net(rt, "127.0.0.1:0", &srv[0], NULL);
    l[1] = listen_net(rt, "127.0.0.1:0", &srv[1], &off);
    for (int i = 0; i < 2; i++)
        fd[i] = tcp_client(es_listener_port(l[i]));
    for (int i = 0; i < 2; i++) {
        ES_WAIT_GE(r[i].calls, 1);
        close(fd[i]);
        ES_WAIT_GE(srv[i].freed, 1);
        es_listener_free(l[i]);
    }
    es_test_free(rt);

    cr_assert_eq(atomic_load(&r[0].rc[1]), 1, "es_conn_fd failed");
    cr_assert_eq(atomic_load(&r[0].rc[2]), 0, "TCP_NODELAY set before a send");
    cr_assert_eq(atomic_load(&r[0].rc[3]), 0, "TCP_NODELAY set by one send");
    cr_assert_eq(atomic_load(&r[0].rc[0]), 1,
                 "TCP_NODELAY off after the second send");
    cr_assert_eq(atomic_load(&r[1].rc[0]), 0, "no_delay = -1 turned it on");
    for (int i = 0; i < 2; i++)
        assert_net(&srv[i], 1, "server");
}

/* --- Shutdown with live connections --------------------------------------- */

#define LIVE_CONNS 100

/* Every client sees EOF or a reset once the runtime is gone. */
static void assert_clients_ended(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        int end = recv_end(fds[i], ES_TEST_WAIT_S);

        cr_assert(end == 0 || end == -ECONNRESET, "client %d: %d (%s)", i, end,
                  strerror(-end));
        close(fds[i]);
    }
    free(fds);
}

Test(conn, runtime_stop_closes_live_connections,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt;
    struct net srv = {.echo = true};
    es_listener_t *l;
    int *fds;

    raise_nofile();
    rt = es_test_runtime_start(2);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fds = open_clients(es_listener_port(l), LIVE_CONNS);
    ES_WAIT_GE(srv.opened, LIVE_CONNS);
    ES_OK(es_runtime_stop(rt));
    ES_OK(es_test_wait(rt));
    es_listener_free(l); /* safe after the runtime stopped */
    es_test_free(rt);
    assert_clients_ended(fds, LIVE_CONNS);

    assert_net(&srv, LIVE_CONNS, "server");
    assert_reason(&srv, ES_CONN_STOPPED, LIVE_CONNS, "server");
}

Test(conn, runtime_free_closes_live_connections,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt;
    struct net srv = {.echo = true};
    es_listener_t *l;
    int *fds;

    raise_nofile();
    rt = es_test_runtime_start(2);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    fds = open_clients(es_listener_port(l), LIVE_CONNS);
    ES_WAIT_GE(srv.opened, LIVE_CONNS);
    es_listener_free(l); /* existing connections live on */
    echo_check(fds[0], "still here");
    echo_check(fds[LIVE_CONNS - 1], "me too");
    es_test_free(rt);
    assert_clients_ended(fds, LIVE_CONNS);

    assert_net(&srv, LIVE_CONNS, "server");
    assert_reason(&srv, ES_CONN_STOPPED, LIVE_CONNS, "server");
}

/* --- Broadcast ------------------------------------------------------------ */

enum { MSG_HELLO = ES_MSG_USER + 100 };

static atomic_ullong g_other_user;

/* A connection behaviour other than net_test.h's: counts user messages. */
static int other_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type >= ES_MSG_USER)
        atomic_fetch_add(&g_other_user, 1);
    return 0;
}

Test(conn, broadcast_reaches_each_connection_of_a_behaviour,
     .timeout = ES_TEST_TIMEOUT)
{
    enum { N = 12 };
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL), *lo;
    es_listen_opts_t oo = {.address = "127.0.0.1:0",
                           .conn = {.behaviour = other_cb}};
    int *fds = open_clients(es_listener_port(l), N), ofd;
    es_msg_t hello = es_msg_u64(MSG_HELLO, 7);
    es_msg_t owned = es_msg_ptr(MSG_HELLO, &hello, 1, free);
    es_msg_t sys = es_msg_make(ES_MSG_TIMER);

    ES_OK(es_listen(rt, &oo, &lo));
    ofd = tcp_client(es_listener_port(lo));
    cr_assert_eq(es_conn_broadcast(rt, conn_cb, &owned), -EINVAL);
    cr_assert_eq(es_conn_broadcast(rt, conn_cb, &sys), -EINVAL);
    cr_assert_eq(es_conn_broadcast(rt, NULL, &hello), -EINVAL);
    ES_OK(es_conn_broadcast(rt, conn_cb, &hello));
    ES_WAIT_GE(srv.user, N);
    es_test_sleep_ms(50);
    cr_assert_eq(atomic_load(&srv.user), N, "%llu deliveries for %d conns",
                 (unsigned long long)atomic_load(&srv.user), N);
    cr_assert_eq(atomic_load(&g_other_user), 0,
                 "a connection of another behaviour got it");
    for (int i = 0; i < N; i++)
        close(fds[i]);
    free(fds);
    close(ofd);
    ES_WAIT_GE(srv.freed, N);
    es_listener_free(l);
    es_listener_free(lo);
    ES_OK(es_runtime_stop(rt));
    ES_OK(es_test_wait(rt));
    cr_assert_eq(es_conn_broadcast(rt, conn_cb, &hello), -ESHUTDOWN);
    es_test_free(rt);
    assert_net(&srv, N, "server");
}
