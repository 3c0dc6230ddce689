/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend (backend.h): one epoll set per loop, level-triggered,
 * and a socketpair for cross-loop wakeups, whose read end sits in the set
 * under a tag no registration can have. A wakeup is one byte written by the
 * sender that won the sleep handshake (chan.c); wait() drains it and does
 * not report it. This is the only file that includes <sys/epoll.h>.
 */
#include "backend.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* io.h promises ES_IO_* bits that are epoll's: they pass through unchanged
 * both ways. */
_Static_assert((int)ES_IO_READ == (int)EPOLLIN &&
                   (int)ES_IO_WRITE == (int)EPOLLOUT &&
                   (int)ES_IO_ERROR == (int)EPOLLERR &&
                   (int)ES_IO_HUP == (int)EPOLLHUP &&
                   (int)ES_IO_RDHUP == (int)EPOLLRDHUP,
               "ES_IO_* bits are epoll's");

/* The wakeup socket's tag: io.c's tags are odd, es__watch pointers are
 * non-NULL (loop.c), so 0 is nobody's data. */
#define WAKE_TAG 0u

struct epoll_poller {
    int epfd;
    int wake_rd, wake_wr; /* read end in the set; any thread writes */
    struct epoll_event ev[ES__WAIT_EVENTS];
};

static int ep_init(struct es__loop *loop)
{
    struct epoll_poller *p = es__malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->epfd = p->wake_rd = p->wake_wr = -1;
    loop->poller = p;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0)
        return -errno;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) <
        0)
        return -errno;
    p->wake_rd = sv[0];
    p->wake_wr = sv[1];
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_TAG};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake_rd, &ev) < 0)
        return -errno;
    return 0;
}

static void ep_fini(struct es__loop *loop)
{
    struct epoll_poller *p = loop->poller;
    if (!p)
        return;
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->wake_rd >= 0)
        close(p->wake_rd);
    if (p->wake_wr >= 0)
        close(p->wake_wr);
    es__free(p);
    loop->poller = NULL;
}

static int ep_ctl(struct es__loop *loop, int op, int fd, uint32_t events,
                  uint64_t data)
{
    static const int ops[] = {EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL};
    struct epoll_poller *p = loop->poller;
    struct epoll_event ev = {.events = events, .data.u64 = data};
    ES_ASSERT(data != WAKE_TAG || op == ES__CTL_DEL);
    return epoll_ctl(p->epfd, ops[op], fd, &ev) < 0 ? -errno : 0;
}

static void wake_drain(struct epoll_poller *p)
{
    char buf[256];
    while (recv(p->wake_rd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        ;
}

static int ep_wait(struct es__loop *loop, struct es__event *out, int max,
                   int timeout_ms)
{
    struct epoll_poller *p = loop->poller;
    if (max > ES__WAIT_EVENTS)
        max = ES__WAIT_EVENTS;
    int n = epoll_wait(p->epfd, p->ev, max, timeout_ms);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (p->ev[i].data.u64 == WAKE_TAG) {
            wake_drain(p);
            continue;
        }
        out[k].data = p->ev[i].data.u64;
        out[k].events = p->ev[i].events;
        k++;
    }
    return k;
}

static void ep_wake(struct es__loop *loop)
{
    struct epoll_poller *p = loop->poller;
    /* EAGAIN: the socket already holds unread bytes, enough to wake. */
    (void)send(p->wake_wr, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

const struct es__backend es__backend_epoll = {
    .name = "epoll",
    .kind = ES_BACKEND_EPOLL,
    .init = ep_init,
    .fini = ep_fini,
    .ctl = ep_ctl,
    .wait = ep_wait,
    .wake = ep_wake,
};
