/* SPDX-License-Identifier: MIT */
/*
 * The reference echo servers of the TCP echo benchmark (perf/echo_bench.sh),
 * both in one program: `--lib libevent` is a bufferevent server (the input
 * buffer is moved to the output buffer, no copy in user space), `--lib libuv`
 * a uv_tcp server (try_write first, uv_write for what is left, one reusable
 * read buffer per connection). Both listen on 127.0.0.1 with TCP_NODELAY on
 * every connection, like the EventServer echo server, print the bound port,
 * and stop on SIGINT / SIGTERM or after --seconds (default 600). Usage:
 *   echo_peers --lib libevent|libuv [--port P] [--seconds S]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <uv.h>

#define BACKLOG 511
#define READ_BUF (64u * 1024u)

struct opts {
    const char *lib;
    int port;
    long seconds;
};

static void set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
        perror("echo_peers: TCP_NODELAY");
}

static void announce(const char *lib, int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        printf("echo_peers: %s listening on 127.0.0.1:%d\n", lib,
               ntohs(sa.sin_port));
    fflush(stdout);
}

/* --- libevent ------------------------------------------------------------- */

static void ev_read(struct bufferevent *bev, void *arg)
{
    if (evbuffer_add_buffer(bufferevent_get_output(bev),
                            bufferevent_get_input(bev)))
        bufferevent_free(bev);
}

static void ev_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void ev_accept(struct evconnlistener *lst, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    struct event_base *base = arg;
    struct bufferevent *bev =
        bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    set_nodelay(fd);
    bufferevent_setcb(bev, ev_read, NULL, ev_event, NULL);
    if (bufferevent_enable(bev, EV_READ | EV_WRITE))
        bufferevent_free(bev);
}

static void ev_stop(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static int ev_add_stop(struct event_base *base, struct event **evs, long secs)
{
    struct timeval tv = {.tv_sec = secs};
    evs[0] = evsignal_new(base, SIGINT, ev_stop, base);
    evs[1] = evsignal_new(base, SIGTERM, ev_stop, base);
    evs[2] = evtimer_new(base, ev_stop, base);
    if (!evs[0] || !evs[1] || !evs[2] || event_add(evs[0], NULL) ||
        event_add(evs[1], NULL) || event_add(evs[2], &tv))
        return -1;
    return 0;
}

static int run_libevent(const struct opts *o)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)o->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct event *evs[3] = {0};
    struct evconnlistener *lst = NULL;
    struct event_base *base = event_base_new();
    int rc = 1;
    if (!base)
        return 1;
    lst = evconnlistener_new_bind(base, ev_accept, base,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                  BACKLOG, (struct sockaddr *)&sa, sizeof(sa));
    if (!lst)
        perror("echo_peers: bind");
    else if (ev_add_stop(base, evs, o->seconds))
        fprintf(stderr, "echo_peers: cannot add libevent events\n");
    else {
        announce("libevent", evconnlistener_get_fd(lst));
        rc = event_base_dispatch(base) < 0;
    }
    for (int i = 0; i < 3; i++)
        if (evs[i])
            event_free(evs[i]);
    if (lst)
        evconnlistener_free(lst);
    event_base_free(base);
    return rc;
}

/* --- libuv ---------------------------------------------------------------- */

struct uv_conn {
    uv_tcp_t tcp;
    char *buf;   /* reusable read buffer; NULL while a write owns it */
    int pending; /* writes in flight */
    int closing;
};

struct uv_wreq {
    uv_write_t req;
    char *buf; /* the read buffer this write came from */
};

static void uv_conn_closed(uv_handle_t *h)
{
    struct uv_conn *c = h->data;
    free(c->buf);
    free(c);
}

static void uv_conn_close(struct uv_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, uv_conn_closed);
}

static void uv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct uv_conn *c = h->data;
    if (!c->buf)
        c->buf = malloc(READ_BUF);
    *out = uv_buf_init(c->buf, c->buf ? READ_BUF : 0);
}

static void uv_written(uv_write_t *req, int status)
{
    struct uv_wreq *w = (struct uv_wreq *)req;
    struct uv_conn *c = req->handle->data;
    c->pending--;
    if (!c->buf)
        c->buf = w->buf; /* give the buffer back for the next read */
    else
        free(w->buf);
    free(w);
    if (status < 0)
        uv_conn_close(c);
}

/* Sends what try_write could not; the write takes the read buffer. */
static int uv_write_rest(struct uv_conn *c, char *base, size_t len)
{
    struct uv_wreq *w = malloc(sizeof(*w));
    if (!w)
        return UV_ENOMEM;
    uv_buf_t b = uv_buf_init(base, (unsigned)len);
    w->buf = c->buf;
    c->buf = NULL;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, uv_written);
    if (rc) {
        c->buf = w->buf;
        free(w);
        return rc;
    }
    c->pending++;
    return 0;
}

static void uv_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct uv_conn *c = s->data;
    if (n < 0) {
        uv_conn_close(c);
        return;
    }
    if (n == 0)
        return;
    uv_buf_t data = uv_buf_init(buf->base, (unsigned)n);
    int w = c->pending ? UV_EAGAIN : uv_try_write(s, &data, 1);
    if (w == n)
        return;
    if (w < 0 && w != UV_EAGAIN) {
        uv_conn_close(c);
        return;
    }
    size_t done = w > 0 ? (size_t)w : 0;
    if (uv_write_rest(c, buf->base + done, (size_t)n - done))
        uv_conn_close(c);
}

static void uv_on_conn(uv_stream_t *server, int status)
{
    struct uv_conn *c = calloc(1, sizeof(*c));
    if (status < 0 || !c || uv_tcp_init(server->loop, &c->tcp)) {
        free(c);
        return;
    }
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) ||
        uv_tcp_nodelay(&c->tcp, 1) ||
        uv_read_start((uv_stream_t *)&c->tcp, uv_alloc, uv_on_read))
        uv_conn_close(c);
}

static void uv_on_signal(uv_signal_t *h, int signo)
{
    uv_stop(h->loop);
}

static void uv_on_timeout(uv_timer_t *h)
{
    uv_stop(h->loop);
}

static int uv_add_stop(uv_loop_t *loop, uv_signal_t *sig, uv_timer_t *t,
                       long secs)
{
    if (uv_signal_init(loop, &sig[0]) || uv_signal_init(loop, &sig[1]) ||
        uv_signal_start(&sig[0], uv_on_signal, SIGINT) ||
        uv_signal_start(&sig[1], uv_on_signal, SIGTERM) ||
        uv_timer_init(loop, t) ||
        uv_timer_start(t, uv_on_timeout, (uint64_t)secs * 1000, 0))
        return -1;
    uv_unref((uv_handle_t *)&sig[0]);
    uv_unref((uv_handle_t *)&sig[1]);
    return 0;
}

static void uv_close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_TCP && h->data ? uv_conn_closed : NULL);
}

static int run_libuv(const struct opts *o)
{
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    uv_signal_t sig[2];
    uv_timer_t timer;
    struct sockaddr_in sa;
    uv_os_fd_t fd;
    int rc;

    if ((rc = uv_ip4_addr("127.0.0.1", o->port, &sa)) ||
        (rc = uv_tcp_init(loop, &server)) ||
        (rc = uv_tcp_bind(&server, (const struct sockaddr *)&sa, 0)) ||
        (rc = uv_listen((uv_stream_t *)&server, BACKLOG, uv_on_conn)) ||
        (rc = uv_fileno((uv_handle_t *)&server, &fd))) {
        fprintf(stderr, "echo_peers: libuv: %s\n", uv_strerror(rc));
        return 1;
    }
    server.data = NULL;
    if (uv_add_stop(loop, sig, &timer, o->seconds)) {
        fprintf(stderr, "echo_peers: cannot add libuv handles\n");
        return 1;
    }
    announce("libuv", fd);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_walk(loop, uv_close_any, NULL);
    uv_run(loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    return uv_loop_close(loop) ? 1 : 0;
}

/* --- main ----------------------------------------------------------------- */

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.lib = NULL, .port = 0, .seconds = 600};
    for (int i = 1; i + 1 < argc; i += 2) {
        char *end;
        long v = strtol(argv[i + 1], &end, 10);
        if (!strcmp(argv[i], "--lib"))
            o->lib = argv[i + 1];
        else if (!strcmp(argv[i], "--port") && !*end && v >= 0 && v < 65536)
            o->port = (int)v;
        else if (!strcmp(argv[i], "--seconds") && !*end && v > 0 && v <= 86400)
            o->seconds = v;
        else
            return -EINVAL;
    }
    if (argc % 2 == 0 || !o->lib ||
        (strcmp(o->lib, "libevent") && strcmp(o->lib, "libuv")))
        return -EINVAL;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr, "usage: echo_peers --lib libevent|libuv [--port P] "
                        "[--seconds S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    return strcmp(o.lib, "libuv") ? run_libevent(&o) : run_libuv(&o);
}
