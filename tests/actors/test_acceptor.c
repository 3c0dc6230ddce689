/* SPDX-License-Identifier: MIT */
/*
 * Tests of listeners and their acceptor actors (actors/acceptor.c) over
 * real sockets: TCP on 127.0.0.1 and [::1] (skipped without IPv6), Unix
 * sockets, option errors; SO_REUSEPORT with one acceptor per demux thread;
 * round-robin and least-loaded placement spreading connections over the
 * threads; es_listener_free() refusing new connections while accepted ones
 * keep working; EMFILE, where the acceptor must back off without spinning
 * and serve the waiting connections once descriptors are free again; and
 * 5,000 concurrent echo connections (ES_TEST_SCALE) over two threads, with
 * plain non-blocking client sockets driven by poll() in the test thread.
 * Connection actors only count; the test thread asserts after the run.
 */
#include "net_test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* --- Helpers of this file ------------------------------------------------- */

/* Reads a listener's counters; fails the test on error. */
static es_listener_stats_t lstats(const es_listener_t *l)
{
    es_listener_stats_t st;

    ES_OK(es_listener_stats(l, &st));
    return st;
}

/* Polls until the listener's fd_exhausted reaches target or secs pass. */
static bool wait_exhausted(const es_listener_t *l, uint64_t target, double secs)
{
    double end = es_test_now() + secs;

    while (lstats(l).fd_exhausted < target) {
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(1);
    }
    return true;
}

/* Actors living on loop i. */
static uint64_t loop_actors(es_runtime_t *rt, int i)
{
    es_stats_t s;

    ES_OK(es_runtime_stats(rt, i, &s));
    return s.actors;
}

/* Polls until loop i holds `n` actors (exactly) or secs pass. */
static bool wait_actors(es_runtime_t *rt, int i, uint64_t n, double secs)
{
    double end = es_test_now() + secs;

    while (loop_actors(rt, i) != n) {
        if (es_test_now() > end)
            return false;
        es_test_sleep_ms(1);
    }
    return true;
}

/* Closes n clients and waits until the server freed `freed` connections. */
static void close_clients(int *fds, int n, struct net *srv,
                          unsigned long long freed)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    cr_assert(es_test_wait_ge(&srv->freed, freed, 60.0),
              "server freed %llu of %llu connections",
              (unsigned long long)atomic_load(&srv->freed), freed);
}

/* --- Addresses and options ------------------------------------------------ */

Test(acceptor, tcp_loopback_echo_and_stats, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    int port = es_listener_port(l);
    int *fds;
    es_listener_stats_t st;

    cr_assert(port > 0 && port < 65536, "port %d", port);
    fds = open_clients(port, 10);
    st = lstats(l);
    close_clients(fds, 10, &srv, 10);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_eq(st.accepted, 10);
    cr_assert_eq(st.rejected, 0);
    cr_assert_eq(st.fd_exhausted, 0);
    cr_assert_eq(atomic_load(&srv.opened), 10);
    assert_net(&srv, 10, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 10, "server");
}

Test(acceptor, rejects_bad_options, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct net srv = {.echo = true};
    es_listen_opts_t o = {.address = "127.0.0.1:0"};
    es_listener_t *l = NULL;
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int busy, rc[7];
    char addr[64];
    es_listener_stats_t st;

    conn_opts_for(&o.conn, &srv);
    busy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr_lo(&a, 0);
    cr_assert_eq(bind(busy, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(busy, 8), 0);
    getsockname(busy, (struct sockaddr *)&a, &al);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(a.sin_port));

    rc[0] = es_listen(rt, NULL, &l);
    o.address = NULL;
    rc[1] = es_listen(rt, &o, &l);
    o.address = "not an address";
    rc[2] = es_listen(rt, &o, &l);
    o.address = "127.0.0.1:70000";
    rc[3] = es_listen(rt, &o, &l);
    o.address = "127.0.0.1:0";
    o.conn.behaviour = NULL;
    rc[4] = es_listen(rt, &o, &l);
    o.conn.behaviour = conn_cb;
    o.address = addr;
    rc[5] = es_listen(rt, &o, &l);
    rc[6] = es_listener_stats(NULL, &st);
    close(busy);
    es_test_free(rt);

    for (int i = 0; i < 5; i++)
        cr_assert_eq(rc[i], -EINVAL, "case %d: %d (%s)", i, rc[i],
                     es_strerror(rc[i]));
    cr_assert_eq(rc[5], -EADDRINUSE, "port in use: %d", rc[5]);
    cr_assert_eq(rc[6], -EINVAL);
    cr_assert_null(l, "a failed es_listen() set *out");
    cr_assert_eq(atomic_load(&srv.started), 0);
}

static bool have_ipv6_loopback(void)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                             .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

Test(acceptor, ipv6_loopback_echo, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt;
    struct net srv = {.echo = true};
    es_listener_t *l;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                             .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd;

    if (!have_ipv6_loopback())
        cr_skip_test("::1 is not configured");
    rt = es_test_runtime_start(2);
    l = listen_net(rt, "[::1]:0", &srv, NULL);
    cr_assert_gt(es_listener_port(l), 0);
    a.sin6_port = htons((uint16_t)es_listener_port(l));
    fd = client_connect((struct sockaddr *)&a, sizeof(a));
    cr_assert_geq(fd, 0, "connect [::1]: %s", strerror(-fd));
    echo_check(fd, "over IPv6");
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_listener_free(l);
    es_test_free(rt);

    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

Test(acceptor, unix_socket_echo, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    char address[sizeof(a.sun_path) + 8];
    es_listener_t *l;
    int fd[3];

    snprintf(a.sun_path, sizeof(a.sun_path), "/tmp/es-test-%d.sock",
             (int)getpid());
    unlink(a.sun_path);
    snprintf(address, sizeof(address), "unix:%s", a.sun_path);
    l = listen_net(rt, address, &srv, NULL);
    cr_assert_eq(es_listener_port(l), 0);
    for (int i = 0; i < 3; i++) {
        fd[i] = client_connect((struct sockaddr *)&a, sizeof(a));
        cr_assert_geq(fd[i], 0, "connect %s: %s", a.sun_path, strerror(-fd[i]));
        echo_check(fd[i], "over a Unix socket");
    }
    for (int i = 0; i < 3; i++)
        close(fd[i]);
    ES_WAIT_GE(srv.freed, 3);
    es_listener_free(l);
    es_test_free(rt);
    unlink(a.sun_path);

    assert_net(&srv, 3, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 3, "server");
}

/* --- Threads and placement ------------------------------------------------ */

Test(acceptor, reuseport_one_acceptor_per_thread, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listen_opts_t o = {.address = "127.0.0.1:0", .reuseport = 1};
    es_listener_t *l = NULL;
    uint64_t base[2], with[2];
    int *fds;

    for (int i = 0; i < 2; i++)
        base[i] = loop_actors(rt, i);
    conn_opts_for(&o.conn, &srv);
    ES_OK(es_listen(rt, &o, &l));
    for (int i = 0; i < 2; i++) {
        cr_assert(wait_actors(rt, i, base[i] + 1, ES_TEST_WAIT_S),
                  "loop %d: %llu actors, had %llu before es_listen", i,
                  (unsigned long long)loop_actors(rt, i),
                  (unsigned long long)base[i]);
        with[i] = loop_actors(rt, i);
    }
    fds = open_clients(es_listener_port(l), 50);
    close_clients(fds, 50, &srv, 50);
    es_listener_free(l);
    for (int i = 0; i < 2; i++)
        cr_assert(wait_actors(rt, i, base[i], ES_TEST_WAIT_S),
                  "loop %d: %llu actors after es_listener_free", i,
                  (unsigned long long)loop_actors(rt, i));
    es_test_free(rt);

    cr_assert_eq(with[0], base[0] + 1);
    cr_assert_eq(with[1], base[1] + 1);
    assert_net(&srv, 50, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 50, "server");
}

#define SPREAD_CONNS 100

/* SPREAD_CONNS connections held open at once on two threads. */
static void spread(es_placement_t placement)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listen_opts_t o = {.address = "127.0.0.1:0", .placement = placement};
    es_listener_t *l = NULL;
    int *fds;
    unsigned long long a, b;

    conn_opts_for(&o.conn, &srv);
    ES_OK(es_listen(rt, &o, &l));
    fds = open_clients(es_listener_port(l), SPREAD_CONNS);
    close_clients(fds, SPREAD_CONNS, &srv, SPREAD_CONNS);
    es_listener_free(l);
    es_test_free(rt);

    a = atomic_load(&srv.per_loop[0]);
    b = atomic_load(&srv.per_loop[1]);
    cr_assert_eq(a + b, SPREAD_CONNS);
    cr_assert(a >= 30 && b >= 30, "loop 0 got %llu, loop 1 got %llu", a, b);
    assert_net(&srv, SPREAD_CONNS, "server");
}

Test(acceptor, round_robin_spreads, .timeout = ES_TEST_TIMEOUT)
{
    spread(ES_PLACE_ROUND_ROBIN);
}

Test(acceptor, least_loaded_spreads, .timeout = ES_TEST_TIMEOUT)
{
    spread(ES_PLACE_LEAST_LOADED);
}

/* --- Lifetime and limits -------------------------------------------------- */

Test(acceptor, free_refuses_new_keeps_accepted, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.echo = true};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    int port = es_listener_port(l);
    int fd = tcp_client(port), late;
    struct sockaddr_in a;

    echo_check(fd, "before");
    es_listener_free(l);
    addr_lo(&a, port);
    late = client_connect((struct sockaddr *)&a, sizeof(a));
    if (late >= 0)
        close(late);
    echo_check(fd, "after es_listener_free");
    close(fd);
    ES_WAIT_GE(srv.freed, 1);
    es_test_free(rt);

    cr_assert_eq(late, -ECONNREFUSED, "connect after free: %d (%s)", late,
                 strerror(-late));
    assert_net(&srv, 1, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, 1, "server");
}

#define EMFILE_CLIENTS 8

/* Highest open fd of this process. */
static int max_open_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int max = -1;

    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);

        if (fd > max && fd != dirfd(d))
            max = fd;
    }
    closedir(d);
    return max;
}

/*
 * Fills every free fd number up to the highest open one, then lowers the
 * soft limit so that the next fd cannot be allocated. Returns the fillers
 * (terminated by -1).
 */
static int *exhaust_fds(void)
{
    int max = max_open_fd();
    int *fill = calloc((size_t)max + 3, sizeof(int));
    int n = 0;
    struct rlimit rl;

    cr_assert_not_null(fill);
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        cr_assert_geq(fd, 0, "open: %s", strerror(errno));
        fill[n++] = fd;
        if (fd > max)
            break;
    }
    fill[n] = -1;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = (rlim_t)fill[n - 1] + 1;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    return fill;
}

static void restore_fds(int *fill)
{
    for (int i = 0; fill[i] >= 0; i++)
        close(fill[i]);
    free(fill);
    raise_nofile();
}

Test(acceptor, emfile_backs_off_then_serves, .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt;
    struct net srv = {.echo = true};
    es_listener_t *l;
    struct sockaddr_in a;
    int fds[EMFILE_CLIENTS], *fill;
    es_stats_t s0, s1;
    es_listener_stats_t during, after;
    bool exhausted;
    unsigned long long opened_during;

    raise_nofile();
    rt = es_test_runtime_start(1);
    l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    addr_lo(&a, es_listener_port(l));
    for (int i = 0; i < EMFILE_CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        cr_assert_geq(fds[i], 0);
    }
    fill = exhaust_fds();
    /* No assertion may fail before restore_fds(): Criterion needs fds. */
    for (int i = 0; i < EMFILE_CLIENTS; i++)
        connect(fds[i], (struct sockaddr *)&a, sizeof(a));
    exhausted = wait_exhausted(l, 1, ES_TEST_WAIT_S);
    es_runtime_stats(rt, -1, &s0);
    es_test_sleep_ms(1000);
    es_runtime_stats(rt, -1, &s1);
    es_listener_stats(l, &during);
    opened_during = atomic_load(&srv.opened);
    restore_fds(fill);

    cr_assert(exhausted, "fd_exhausted never counted");
    /* Waiting connections are accepted once fds are free again. */
    ES_WAIT_GE(srv.opened, EMFILE_CLIENTS);
    for (int i = 0; i < EMFILE_CLIENTS; i++) {
        cr_assert(poll_one(fds[i], POLLOUT, 1000) & POLLOUT);
        echo_check(fds[i], "served after EMFILE");
    }
    after = lstats(l);
    for (int i = 0; i < EMFILE_CLIENTS; i++)
        close(fds[i]);
    ES_WAIT_GE(srv.freed, EMFILE_CLIENTS);
    es_listener_free(l);
    es_test_free(rt);

    cr_assert_lt(s1.loop_turns - s0.loop_turns, 10000,
                 "loop spun: %llu turns in 1 s of EMFILE",
                 (unsigned long long)(s1.loop_turns - s0.loop_turns));
    cr_assert_eq(during.accepted, 0);
    cr_assert_eq(opened_during, 0);
    cr_assert_geq(during.fd_exhausted, 1);
    cr_assert_eq(after.accepted, EMFILE_CLIENTS);
    cr_assert_eq(after.rejected, 0);
    assert_net(&srv, EMFILE_CLIENTS, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, EMFILE_CLIENTS, "server");
}

/* --- Many concurrent connections ------------------------------------------ */

#define MANY_CONNS 5000
#define MANY_MSG 32
#define MANY_IN_FLIGHT 500

enum { C_IDLE, C_CONNECTING, C_SENT, C_DONE, C_FAILED };

struct many {
    int n, started, done, failed, mismatched;
    int *fd, *state, *got;
    char (*in)[MANY_MSG];
    struct pollfd *pfd;
    int first_err;
};

static void many_msg(int i, char out[MANY_MSG + 1])
{
    unsigned v = (unsigned)i % 100000000u; /* 8 digits: fits MANY_MSG */

    snprintf(out, MANY_MSG + 1, "conn %08u-%018u", v, v);
}

static void many_fail(struct many *m, int i, int err)
{
    m->state[i] = C_FAILED;
    m->pfd[i].fd = -1;
    m->failed++;
    if (m->first_err == 0)
        m->first_err = err;
}

static void many_start(struct many *m, struct sockaddr_in *a)
{
    int i = m->started++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    m->fd[i] = fd;
    if (fd < 0) {
        many_fail(m, i, errno);
        return;
    }
    if (connect(fd, (struct sockaddr *)a, sizeof(*a)) != 0 &&
        errno != EINPROGRESS) {
        many_fail(m, i, errno);
        return;
    }
    m->state[i] = C_CONNECTING;
    m->pfd[i].fd = fd;
    m->pfd[i].events = POLLOUT;
}

static void many_event(struct many *m, int i)
{
    short rev = m->pfd[i].revents;
    char msg[MANY_MSG + 1];

    if (m->state[i] == C_CONNECTING && (rev & (POLLOUT | POLLERR))) {
        int err = 0;
        socklen_t el = sizeof(err);

        getsockopt(m->fd[i], SOL_SOCKET, SO_ERROR, &err, &el);
        many_msg(i, msg);
        if (err != 0 ||
            send(m->fd[i], msg, MANY_MSG, MSG_NOSIGNAL) != MANY_MSG) {
            many_fail(m, i, err ? err : errno);
            return;
        }
        m->state[i] = C_SENT;
        m->pfd[i].events = POLLIN;
    } else if (m->state[i] == C_SENT && rev) {
        ssize_t r = recv(m->fd[i], m->in[i] + m->got[i],
                         (size_t)(MANY_MSG - m->got[i]), 0);

        if (r <= 0) {
            if (r == 0 || (errno != EAGAIN && errno != EINTR))
                many_fail(m, i, r == 0 ? EPIPE : errno);
            return;
        }
        m->got[i] += (int)r;
        if (m->got[i] == MANY_MSG) {
            many_msg(i, msg);
            if (memcmp(m->in[i], msg, MANY_MSG) != 0)
                m->mismatched++;
            m->state[i] = C_DONE;
            m->pfd[i].fd = -1; /* stays open: connections are concurrent */
            m->done++;
        }
    }
}

/* Drives all clients: at most MANY_IN_FLIGHT unanswered at a time. */
static void many_run(struct many *m, int port, double secs)
{
    struct sockaddr_in a;
    double end = es_test_now() + secs;

    addr_lo(&a, port);
    while (m->done + m->failed < m->n && es_test_now() <= end) {
        while (m->started < m->n &&
               m->started - m->done - m->failed < MANY_IN_FLIGHT)
            many_start(m, &a);
        if (poll(m->pfd, (nfds_t)m->started, 100) <= 0)
            continue;
        for (int i = 0; i < m->started; i++)
            if (m->pfd[i].fd >= 0 && m->pfd[i].revents)
                many_event(m, i);
    }
}

Test(acceptor, many_concurrent_connections_echo,
     .timeout = ES_TEST_TIMEOUT_LONG)
{
    es_runtime_t *rt;
    struct net srv = {.echo = true};
    es_listen_opts_t o = {.address = "127.0.0.1:0", .backlog = 4096};
    es_listener_t *l = NULL;
    struct many m = {0};
    rlim_t lim = raise_nofile();
    unsigned long long a, b;

    m.n = (int)es_test_scaled(MANY_CONNS);
    cr_assert_gt(lim, (rlim_t)(2 * m.n + 200), "fd limit %llu too low",
                 (unsigned long long)lim);
    m.fd = calloc((size_t)m.n, sizeof(int));
    m.state = calloc((size_t)m.n, sizeof(int));
    m.got = calloc((size_t)m.n, sizeof(int));
    m.in = calloc((size_t)m.n, sizeof(*m.in));
    m.pfd = calloc((size_t)m.n, sizeof(*m.pfd));
    cr_assert(m.fd && m.state && m.got && m.in && m.pfd);
    for (int i = 0; i < m.n; i++)
        m.pfd[i].fd = -1;
    rt = es_test_runtime_start(2);
    conn_opts_for(&o.conn, &srv);
    ES_OK(es_listen(rt, &o, &l));
    many_run(&m, es_listener_port(l), 120.0);
    for (int i = 0; i < m.started; i++)
        if (m.fd[i] >= 0)
            close(m.fd[i]);
    cr_assert(es_test_wait_ge(&srv.freed, (unsigned long long)m.done, 60.0),
              "server freed %llu of %d", (unsigned long long)srv.freed, m.done);
    es_listener_free(l);
    es_test_free(rt);
    free(m.fd);
    free(m.state);
    free(m.got);
    free(m.in);
    free(m.pfd);

    cr_assert_eq(m.failed, 0, "%d clients failed (first: %s)", m.failed,
                 strerror(m.first_err));
    cr_assert_eq(m.done, m.n, "%d of %d echoed", m.done, m.n);
    cr_assert_eq(m.mismatched, 0);
    cr_assert_eq(atomic_load(&srv.peak_live), (unsigned long long)m.n,
                 "only %llu open at once",
                 (unsigned long long)atomic_load(&srv.peak_live));
    a = atomic_load(&srv.per_loop[0]);
    b = atomic_load(&srv.per_loop[1]);
    cr_assert(a * 10 >= (unsigned long long)m.n * 3 &&
                  b * 10 >= (unsigned long long)m.n * 3,
              "loop 0 got %llu, loop 1 got %llu", a, b);
    assert_net(&srv, (unsigned long long)m.n, "server");
    assert_reason(&srv, ES_CONN_PEER_CLOSED, (unsigned long long)m.n, "server");
}
