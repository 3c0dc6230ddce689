/* SPDX-License-Identifier: MIT */
/*
 * Fd watches: which actor watches which fd on a loop, and the conversion of
 * epoll readiness into ES_MSG_IO. The table is indexed by fd and grows with
 * the highest fd watched, so there is no fixed maximum. Each epoll
 * registration carries the entry's generation; an event for an fd that was
 * unwatched (and perhaps watched again) earlier in the same epoll batch is
 * recognised as stale and dropped. Everything here runs on the owning loop.
 */
#include "backend.h"

#include <unistd.h>

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

static uint32_t owner_key(const es_actor_t *a)
{
    return (uint32_t)a->id + 1;
}

static void owner_link(struct es__loop *loop, es_actor_t *a, int fd)
{
    struct es__fdent *e = &loop->fds[fd];
    e->owner = owner_key(a);
    e->prev_fd = 0;
    e->next_fd = a->io_head;
    if (a->io_head)
        loop->fds[a->io_head - 1].prev_fd = fd + 1;
    a->io_head = fd + 1;
}

/* Unlinks fd from the list of a, its owner. */
static void owner_unlink(struct es__loop *loop, es_actor_t *a, int fd)
{
    struct es__fdent *e = &loop->fds[fd];
    if (e->prev_fd)
        loop->fds[e->prev_fd - 1].next_fd = e->next_fd;
    else
        a->io_head = e->next_fd;
    if (e->next_fd)
        loop->fds[e->next_fd - 1].prev_fd = e->prev_fd;
    e->owner = 0;
    e->next_fd = e->prev_fd = 0;
}

/* The actor an entry belongs to (alive: stopping actors unwatch first). */
static es_actor_t *owner_of(struct es__loop *loop, const struct es__fdent *e)
{
    return es__table_slot(loop->rt->table, e->owner - 1);
}

int es_io_watch(es_actor_t *self, int fd, uint32_t events)
{
    if (!self || fd < 0)
        return self ? -EBADF : -EINVAL;
    ES_ASSERT(es__loop_owned(self->loop)); /* Thread: owning loop only */
    struct es__loop *loop = self->loop;
    events &= ES_IO_READ | ES_IO_WRITE | ES_IO_RDHUP;
    int rc = fds_reserve(loop, fd);
    if (rc)
        return rc;
    struct es__fdent *e = &loop->fds[fd];
    if (e->owner == owner_key(self)) {
        return es__loop_ctl(loop, ES__CTL_MOD, fd, events, tag(fd, e->gen));
    }
    /* An entry owned by someone else is stale if the kernel lets us add the
     * fd: its owner closed it without unwatching. */
    uint32_t gen = e->gen + 1;
    rc = es__loop_ctl(loop, ES__CTL_ADD, fd, events, tag(fd, gen));
    if (rc)
        return rc == -EEXIST && e->owner ? -EEXIST : rc;
    if (e->owner) {
        owner_unlink(loop, owner_of(loop, e), fd);
        loop->io_watches--; /* the stale registration died with its fd */
    }
    e->gen = gen;
    owner_link(loop, self, fd);
    return 0;
}

static void unwatch(struct es__loop *loop, es_actor_t *a, int fd)
{
    /* EBADF/ENOENT: the fd was closed first; the kernel dropped it. */
    if (es__loop_ctl(loop, ES__CTL_DEL, fd, 0, 0) != 0)
        loop->io_watches--;
    loop->fds[fd].gen++;
    owner_unlink(loop, a, fd);
}

int es_io_unwatch(es_actor_t *self, int fd)
{
    if (!self)
        return -EINVAL;
    ES_ASSERT(es__loop_owned(self->loop)); /* Thread: owning loop only */
    struct es__loop *loop = self->loop;
    if (fd < 0 || fd >= loop->fds_cap || loop->fds[fd].owner != owner_key(self))
        return -ENOENT;
    unwatch(loop, self, fd);
    return 0;
}

void es__io_close(es_actor_t *self, int fd)
{
    struct es__loop *loop = self->loop;
    if (fd >= 0 && fd < loop->fds_cap &&
        loop->fds[fd].owner == owner_key(self)) {
        /* close() takes the fd out of the epoll set (the file is not
         * shared: a connection owns its socket), so no EPOLL_CTL_DEL; a
         * backend whose pending polls hold the file cancels them first. */
        if (loop->backend->closing)
            loop->backend->closing(loop, fd);
        loop->io_watches--;
        loop->fds[fd].gen++;
        owner_unlink(loop, self, fd);
    }
    close(fd);
}

void es__io_unwatch_actor(es_actor_t *a)
{
    while (a->io_head)
        unwatch(a->loop, a, a->io_head - 1);
}

void es__io_ready(struct es__loop *loop, int fd, uint32_t gen, uint32_t events)
{
    if (fd >= loop->fds_cap)
        return;
    struct es__fdent *e = &loop->fds[fd];
    if (!e->owner || e->gen != gen)
        return;
    es_actor_t *a = owner_of(loop, e);
    if (!a || a->stopped)
        return;
    es_msg_t m = es_msg_make(ES_MSG_IO);
    m.to = a->id;
    m.inl.i64[0] = fd;
    m.inl.u64[1] = events;
    m.len = 2 * sizeof(uint64_t);
    es__actor_dispatch(a, &m);
}

void es__io_destroy(struct es__loop *loop)
{
    es__free(loop->fds);
    loop->fds = NULL;
    loop->fds_cap = 0;
}
