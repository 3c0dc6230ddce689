/* SPDX-License-Identifier: MIT */
/*
 * Tests of outbound connections (actors/connector.c): es_connect() actors
 * talking to an es_listen() echo server over TCP (by address and by the
 * name "localhost") and over a Unix socket, spread over the threads; and
 * the failures, which must come as START, CLOSED with the right reason,
 * STOP and nothing else: a closed port (refused), a listener whose backlog
 * is full so that Linux drops the SYN (connect timeout), and a name that
 * does not resolve. A getaddrinfo() wrapper defined here slows that name
 * down so the test can see that the resolver leaves the demux thread free:
 * a ticker on the same thread must keep getting its timer messages.
 */
#include "net_test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* --- Helpers of this file ------------------------------------------------- */

/* A client that says "ping" at OPEN and closes once the echo is back. */
static int ping_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    if (msg->type == ES_MSG_CONN_OPEN) {
        int rc = es_conn_write(self, "ping", 4);

        if (rc != 0) {
            atomic_fetch_add(&c->net->write_fail, 1);
            atomic_store(&c->net->write_err, rc);
        }
    } else if (msg->type == ES_MSG_CONN_DATA) {
        c->in += msg->len;
        if (c->in >= 4 && es_conn_close(self) != 0)
            atomic_fetch_add(&c->net->write_fail, 1);
    }
    return 0;
}

/* Starts one es_connect() actor of net n. */
static void connect_net(es_runtime_t *rt, es_connect_opts_t *o, struct net *n)
{
    es_actor_id_t id = ES_ACTOR_NONE;

    conn_opts_for(&o->conn, n);
    ES_OK(es_connect(rt, o, &id));
    cr_assert_neq(id, ES_ACTOR_NONE);
}

/* The first connection of n saw exactly START, CLOSED, STOP. */
static void assert_failed_connect(struct net *n, int reason)
{
    assert_net(n, 1, "connector");
    assert_reason(n, reason, 1, "connector");
    cr_assert_eq(atomic_load(&n->opened), 0, "a failed connect was OPEN");
    cr_assert_eq(atomic_load(&n->closed_before_open), 1);
    cr_assert_eq(atomic_load(&n->nlog), 3, "%llu messages",
                 (unsigned long long)atomic_load(&n->nlog));
    cr_assert_eq(n->log[0], ES_MSG_START);
    cr_assert_eq(n->log[1], ES_MSG_CONN_CLOSED);
    cr_assert_eq(n->log[2], ES_MSG_STOP);
}

/* A TCP port on 127.0.0.1 that nobody listens on (just released). */
static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    addr_lo(&a, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Threads of this process now. */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/*
 * Frees rt, then gives the threads the library started (the detached
 * resolver) up to 2 s to end, so that what they do on their way out
 * happens inside this test, where ASan reports it as a crash of the test
 * rather than after the test was reported passed. A thread still waiting
 * for a slow DNS answer may outlive the runtime by design: not asserted.
 */
static void free_and_settle(es_runtime_t *rt, int threads_before)
{
    double end;

    es_test_free(rt);
    end = es_test_now() + 2.0;
    while (thread_count() > threads_before && es_test_now() < end)
        es_test_sleep_ms(5);
}

/* --- Connecting ----------------------------------------------------------- */

#define PINGERS 100

Test(connector, connect_echo_local_close, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    struct net cli = {.hook = ping_hook};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    es_connect_opts_t o = {
        .host = "127.0.0.1",
        .port = (uint16_t)es_listener_port(l),
        .loop = ES_LOOP_ANY,
        .placement = ES_PLACE_ROUND_ROBIN,
    };
    unsigned long long a, b;

    for (int i = 0; i < PINGERS; i++)
        connect_net(rt, &o, &cli);
    ES_WAIT_GE(cli.freed, PINGERS);
    ES_WAIT_GE(srv.freed, PINGERS);
    es_listener_free(l);
    es_test_free(rt);

    assert_net(&cli, PINGERS, "connector");
    cr_assert_eq(atomic_load(&cli.opened), PINGERS);
    cr_assert_eq(atomic_load(&cli.write_fail), 0);
    cr_assert_eq(atomic_load(&cli.data_bytes), 4 * PINGERS);
    assert_reason(&cli, ES_CONN_LOCAL, PINGERS, "connector");
    assert_net(&srv, PINGERS, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, PINGERS, "server");
    a = atomic_load(&cli.per_loop[0]);
    b = atomic_load(&cli.per_loop[1]);
    cr_assert(a >= 30 && b >= 30, "loop 0 got %llu, loop 1 got %llu", a, b);
}

Test(connector, connect_localhost, .timeout = ES_TEST_TIMEOUT)
{
    int threads = thread_count();
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    struct net cli = {.hook = ping_hook};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    es_connect_opts_t o = {
        .host = "localhost",
        .port = (uint16_t)es_listener_port(l),
        .loop = ES_LOOP_ANY,
    };

    connect_net(rt, &o, &cli);
    ES_WAIT_GE(cli.freed, 1);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    free_and_settle(rt, threads);

    assert_net(&cli, 1, "connector");
    assert_reason(&cli, ES_CONN_LOCAL, 1, "connector");
    cr_assert_eq(atomic_load(&cli.data_bytes), 4);
    assert_net(&srv, 1, "server");
}

Test(connector, connect_unix_path, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    struct net cli = {.hook = ping_hook};
    char path[108], address[120];
    es_listener_t *l;
    es_connect_opts_t o = {.unix_path = path, .loop = ES_LOOP_ANY};

    snprintf(path, sizeof(path), "/tmp/es-test-cx-%d.sock", (int)getpid());
    unlink(path);
    snprintf(address, sizeof(address), "unix:%s", path);
    l = listen_net(rt, address, &srv, NULL);
    connect_net(rt, &o, &cli);
    ES_WAIT_GE(cli.freed, 1);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);
    unlink(path);

    assert_net(&cli, 1, "connector");
    assert_reason(&cli, ES_CONN_LOCAL, 1, "connector");
    cr_assert_eq(atomic_load(&cli.data_bytes), 4);
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

Test(connector, rejects_bad_options, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct net cli = {0};
    es_connect_opts_t o = {.host = "127.0.0.1", .port = 9};
    es_actor_id_t id = ES_ACTOR_NONE;
    int rc[4];

    rc[0] = es_connect(rt, NULL, &id);
    rc[1] = es_connect(rt, &o, &id); /* no behaviour */
    conn_opts_for(&o.conn, &cli);
    o.host = NULL;
    rc[2] = es_connect(rt, &o, &id); /* neither host nor unix_path */
    o.host = "127.0.0.1";
    ES_OK(es_runtime_stop(rt));
    rc[3] = es_connect(rt, &o, &id);
    ES_OK(es_test_wait(rt));
    es_test_free(rt);

    for (int i = 0; i < 3; i++)
        cr_assert_eq(rc[i], -EINVAL, "case %d: %d (%s)", i, rc[i],
                     es_strerror(rc[i]));
    cr_assert_eq(rc[3], -ESHUTDOWN, "after stop: %d", rc[3]);
    cr_assert_eq(id, ES_ACTOR_NONE);
    cr_assert_eq(atomic_load(&cli.started), 0);
}

/* --- Failures ------------------------------------------------------------- */

Test(connector, refused, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net cli = {0};
    es_connect_opts_t o = {
        .host = "127.0.0.1",
        .port = (uint16_t)closed_port(),
        .loop = ES_LOOP_ANY,
    };
    int err;

    connect_net(rt, &o, &cli);
    ES_WAIT_GE(cli.freed, 1);
    es_test_free(rt);

    assert_failed_connect(&cli, ES_CONN_REFUSED);
    err = atomic_load(&cli.last_error);
    cr_assert(err == -ECONNREFUSED || err == 0, "error %d", err);
}

/*
 * A listener with backlog 0 and one connection waiting in its accept queue:
 * its queue is full, so Linux drops further SYNs (SYN cookies or not) and a
 * connect stays in SYN_SENT until it gives up.
 */
struct full_backlog {
    int listener, queued, probe, port;
};

static void full_backlog_open(struct full_backlog *f)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);

    f->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr_lo(&a, 0);
    cr_assert_eq(bind(f->listener, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(f->listener, 0), 0);
    getsockname(f->listener, (struct sockaddr *)&a, &al);
    f->port = ntohs(a.sin_port);
    f->queued = client_connect((struct sockaddr *)&a, sizeof(a));
    cr_assert_geq(f->queued, 0, "first connect: %s", strerror(-f->queued));
    /* Premise: the next handshake does not complete. */
    f->probe = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    connect(f->probe, (struct sockaddr *)&a, sizeof(a));
    cr_assert_eq(poll_one(f->probe, POLLOUT, 300), 0,
                 "a connect to a full backlog completed: this kernel does "
                 "not drop SYNs when the accept queue is full");
}

static void full_backlog_close(struct full_backlog *f)
{
    close(f->probe);
    close(f->queued);
    close(f->listener);
}

Test(connector, connect_timeout, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net cli = {0};
    struct full_backlog f;
    es_connect_opts_t o = {
        .host = "127.0.0.1", .timeout_ms = 200, .loop = ES_LOOP_ANY};

    full_backlog_open(&f);
    o.port = (uint16_t)f.port;
    connect_net(rt, &o, &cli);
    ES_WAIT_GE(cli.freed, 1);
    es_test_free(rt);
    full_backlog_close(&f);

    assert_failed_connect(&cli, ES_CONN_CONNECT_TIMEOUT);
}

/*
 * getaddrinfo() as the library sees it: the test executable's definition
 * comes first in symbol lookup, so the library's calls land here. For
 * SLOW_HOST it sleeps SLOW_MS and counts the ticks a ticker on the
 * connector's demux thread got meanwhile; other names go straight on.
 */
#define SLOW_HOST "no-such-host.invalid"
#define SLOW_MS 300
#define TICK_MS 5

static atomic_ullong g_ticks, g_slow_calls, g_ticks_while_slow;

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
                      struct addrinfo **);

__attribute__((visibility("default"))) int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
    gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");

    if (node && strcmp(node, SLOW_HOST) == 0) {
        unsigned long long t0 = atomic_load(&g_ticks);

        atomic_fetch_add(&g_slow_calls, 1);
        es_test_sleep_ms(SLOW_MS);
        atomic_fetch_add(&g_ticks_while_slow, atomic_load(&g_ticks) - t0);
    }
    return real ? real(node, service, hints, res) : EAI_SYSTEM;
}

static int ticker_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == ES_MSG_START)
        es_timer_start(self, TICK_MS, TICK_MS, 0, NULL);
    else if (msg->type == ES_MSG_TIMER)
        atomic_fetch_add(&g_ticks, 1);
    return 0;
}

Test(connector, resolve_failed_off_loop, .timeout = ES_TEST_TIMEOUT)
{
    int threads = thread_count();
    es_runtime_t *rt = es_test_runtime_start(1);
    struct net cli = {0};
    es_spawn_opts_t t = {.behaviour = ticker_cb, .loop = ES_LOOP(0)};
    es_connect_opts_t o = {.host = SLOW_HOST, .port = 80, .loop = ES_LOOP(0)};
    es_actor_id_t tid;

    ES_OK(es_spawn(rt, &t, &tid));
    ES_WAIT_GE(g_ticks, 2);
    connect_net(rt, &o, &cli);
    ES_WAIT_GE(cli.freed, 1);
    free_and_settle(rt, threads);

    assert_failed_connect(&cli, ES_CONN_RESOLVE_FAILED);
    if (atomic_load(&g_slow_calls) == 0)
        cr_log_warn("the resolver did not call getaddrinfo() through the "
                    "PLT; whether it blocks the loop was not observed");
    else
        cr_assert_geq(atomic_load(&g_ticks_while_slow), 2,
                      "the demux thread stood still while resolving: "
                      "%llu ticks in %d ms",
                      (unsigned long long)atomic_load(&g_ticks_while_slow),
                      SLOW_MS);
}

/* --- A reply followed by a reset ------------------------------------------ */

enum { MSG_BLOCK = ES_MSG_USER };

/* MSG_BLOCK keeps the client's loop busy for 200 ms, so that the peer's
 * data and its reset are both pending when the loop next polls. */
static int block_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    (void)self;
    if (msg->type == MSG_BLOCK)
        es_test_sleep_ms(200);
    else if (msg->type == ES_MSG_CONN_DATA)
        c->in += msg->len;
    return 0;
}

Test(connector, reply_then_reset_delivers_reply, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct net cli = {.hook = block_hook};
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd;
    es_msg_t block = es_msg_make(MSG_BLOCK);

    addr_lo(&a, 0);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(lfd, 1), 0);
    getsockname(lfd, (struct sockaddr *)&a, &al);
    es_connect_opts_t o = {
        .host = "127.0.0.1", .port = ntohs(a.sin_port), .loop = ES_LOOP_ANY};
    connect_net(rt, &o, &cli);
    fd = accept(lfd, NULL, NULL);
    cr_assert_geq(fd, 0);
    ES_WAIT_GE(cli.opened, 1);
    ES_OK(es_test_send_retry(rt, atomic_load(&cli.last_id), &block,
                             ES_TEST_WAIT_S));
    es_test_sleep_ms(50); /* the client's loop is inside MSG_BLOCK now */
    cr_assert_eq(write(fd, "reply", 5), 5);
    rst_close(fd);
    ES_WAIT_GE(cli.freed, 1);
    close(lfd);
    es_test_free(rt);

    cr_assert_eq(atomic_load(&cli.data_bytes), 5,
                 "%llu bytes of the reply reached the actor before the reset",
                 (unsigned long long)atomic_load(&cli.data_bytes));
    assert_reason(&cli, ES_CONN_RESET, 1, "client");
}
