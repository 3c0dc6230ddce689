/* SPDX-License-Identifier: MIT */
/*
 * Fd watches: which actor watches which fd on a loop, and the conversion of
 * epoll readiness into ES_MSG_IO. The table is indexed by fd and grows with
 * the highest fd watched, so there is no fixed maximum. Each epoll
 * registration carries the entry's generation; an event for an fd that was
 * unwatched (and perhaps watched again) earlier in the same epoll batch is
 * recognised as stale and dropped. Everything here runs on the owning loop.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

#define FDS_MIN 64

static uint64_t tag(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)(uint32_t)fd << 1) | 1;
}

static int fds_reserve(struct es__loop *loop, int fd)
{
    if (fd < loop->fds_cap)
        return 0;
    if (fd >= INT32_MAX / 2)
        return -EBADF;
    int cap = loop->fds_cap ? loop->fds_cap : FDS_MIN;
    while (cap <= fd)
        cap *= 2;
    struct es__fdent *fds = es__realloc(loop->fds, (size_t)cap * sizeof(*fds));
    if (!fds)
        return -ENOMEM;
    memset(fds + loop->fds_cap, 0,
           (size_t)(cap - loop->fds_cap) * sizeof(*fds));
    loop->fds = fds;
    loop->fds_cap = cap;
    return 0;
}

static void owner_link(struct es__loop *loop, es_actor_t *a, int fd)
{
    struct es__fdent *e = &loop->fds[fd];
    e->owner = a;
    e->next_fd = a->io_head;
    a->io_head = fd + 1;
}

/* Unlinks fd from its owner's list: a walk, as an actor watches few fds. */
static void owner_unlink(struct es__loop *loop, int fd)
{
    struct es__fdent *e = &loop->fds[fd];
    int *link = &e->owner->io_head;
    while (*link && *link != fd + 1)
        link = &loop->fds[*link - 1].next_fd;
    if (*link)
        *link = e->next_fd;
    e->owner = NULL;
    e->next_fd = 0;
}

int es_io_watch(es_actor_t *self, int fd, uint32_t events)
{
    if (!self || fd < 0)
        return self ? -EBADF : -EINVAL;
    struct es__loop *loop = self->loop;
    events &= ES_IO_READ | ES_IO_WRITE | ES_IO_RDHUP;
    int rc = fds_reserve(loop, fd);
    if (rc)
        return rc;
    struct es__fdent *e = &loop->fds[fd];
    if (e->owner == self) {
        return es__loop_ctl(loop, ES__CTL_MOD, fd, events, tag(fd, e->gen));
    }
    /* An entry owned by someone else is stale if the kernel lets us add the
     * fd: its owner closed it without unwatching. */
    uint32_t gen = e->gen + 1;
    rc = es__loop_ctl(loop, ES__CTL_ADD, fd, events, tag(fd, gen));
    if (rc)
        return rc == -EEXIST && e->owner ? -EEXIST : rc;
    if (e->owner) {
        owner_unlink(loop, fd);
        loop->io_watches--; /* the stale registration died with its fd */
    }
    e->gen = gen;
    owner_link(loop, self, fd);
    return 0;
}

static void unwatch(struct es__loop *loop, int fd)
{
    /* EBADF/ENOENT: the fd was closed first; the kernel dropped it. */
    if (es__loop_ctl(loop, ES__CTL_DEL, fd, 0, 0) != 0)
        loop->io_watches--;
    loop->fds[fd].gen++;
    owner_unlink(loop, fd);
}

int es_io_unwatch(es_actor_t *self, int fd)
{
    if (!self)
        return -EINVAL;
    struct es__loop *loop = self->loop;
    if (fd < 0 || fd >= loop->fds_cap || loop->fds[fd].owner != self)
        return -ENOENT;
    unwatch(loop, fd);
    return 0;
}

void es__io_unwatch_actor(es_actor_t *a)
{
    while (a->io_head)
        unwatch(a->loop, a->io_head - 1);
}

void es__io_ready(struct es__loop *loop, int fd, uint32_t gen, uint32_t events)
{
    if (fd >= loop->fds_cap)
        return;
    struct es__fdent *e = &loop->fds[fd];
    if (!e->owner || e->gen != gen || e->owner->stopped)
        return;
    es_msg_t m = es_msg_make(ES_MSG_IO);
    m.to = e->owner->id;
    m.inl.i64[0] = fd;
    m.inl.u64[1] = events;
    m.len = 2 * sizeof(uint64_t);
    es__actor_dispatch(e->owner, &m);
}

void es__io_destroy(struct es__loop *loop)
{
    es__free(loop->fds);
    loop->fds = NULL;
    loop->fds_cap = 0;
}
