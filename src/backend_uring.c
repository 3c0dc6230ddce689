/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend (backend.h): one ring per loop, readiness through
 * IORING_OP_POLL_ADD, IORING_OP_MSG_RING or an eventfd for wakeups, and
 * the submission and the wait of a turn in one io_uring_enter(). This is
 * the only file that includes <liburing.h>.
 *
 * Level-triggered interest. The seam promises that an fd stays reported in
 * every wait() while it is ready. A multishot poll does not: it posts a
 * completion per wakeup of the fd's wait queue, i.e. per readiness change,
 * and says nothing while an fd that was not drained stays ready. Each
 * registration therefore keeps one one-shot poll armed: its completion is
 * reported, and the fd is armed again by the next wait(), in the same
 * io_uring_enter() that waits. The kernel checks readiness when it arms a
 * poll, so an fd still ready completes again at once: the same events
 * epoll's level-triggered set reports, and no system call of its own.
 *
 * Stale completions. A poll's user_data is (generation << 32 | fd). Every
 * registration of an fd number and every change of its interest takes a
 * new generation, and a completion is reported only if its generation is
 * the registration's current one: a poll cancelled by MOD or DEL, or one
 * that completed before the change, is dropped when it is reaped.
 *
 * The close contract. A pending poll holds a reference to its file: closing
 * the fd alone would neither drop the interest nor close the file (a peer
 * would wait for a FIN that does not come). closing() and DEL therefore
 * cancel the armed poll and submit the cancellation at once, so the file
 * is released by the time the caller's close() returns. ADD of an fd
 * number whose registration is still in the table (its fd closed without
 * either, which io.h forbids) compares the file's identity (st_dev,
 * st_ino): a different file replaces the stale registration and cancels
 * its poll; the same file is -EEXIST, as epoll says. (eventfds, signalfds
 * and timerfds share one anonymous inode and cannot be told apart.)
 *
 * Wakeups (any thread; chan.c's handshake calls wake() at most once per
 * sleep). Another loop on io_uring posts a completion into the sleeper's
 * ring with IORING_OP_MSG_RING (ur_wake()). Any other thread writes 1 to
 * the sleeper's eventfd, which has a read kept armed in the ring. The
 * read's completion ends the wait; the next wait() arms it again, and a
 * wake() in between leaves the counter non-zero, so that read completes
 * at once: no wakeup is lost.
 *
 * Every function but wake() runs on the loop's thread (or the settling
 * thread once the loop thread is gone); no flag ties the ring to one
 * submitting thread (IORING_SETUP_SINGLE_ISSUER would), since the settling
 * thread may still DEL while it stops the actors of a joined loop.
 */
#include "backend.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

/* io.h's ES_IO_* bits are poll(2)'s too, which IORING_OP_POLL_ADD takes
 * and returns: they pass through unchanged both ways. */
_Static_assert((int)ES_IO_READ == (int)POLLIN &&
                   (int)ES_IO_WRITE == (int)POLLOUT &&
                   (int)ES_IO_ERROR == (int)POLLERR &&
                   (int)ES_IO_HUP == (int)POLLHUP &&
                   (int)ES_IO_RDHUP == (int)POLLRDHUP,
               "ES_IO_* bits are poll's");

/* Sizes of the rings: a submission holds the re-arms of one wait() (at
 * most ES__WAIT_EVENTS reported fds, plus new and changed ones; more are
 * submitted in several batches); the completion ring, larger, holds a
 * burst of readiness across many fds before the kernel has to keep the
 * excess on its overflow list. */
#define SQ_ENTRIES 256u
#define CQ_ENTRIES 2048u
#define REGS_MIN 64
#define ARMQ_MIN 64u

/* user_data of what is not a registration's poll: their low word has bit
 * 31 set, which no fd in the table has (regs_reserve()). */
#define UD_INTERNAL 0x80000000u
/* the eventfd's read; a cancellation; another loop's MSG_RING */
#define UD_WAKE (~(uint64_t)0)
#define UD_IGNORE (~(uint64_t)0 - (1ull << 32))
#define UD_WAKE_MSG (~(uint64_t)0 - (2ull << 32))
/* A MSG_RING that failed, sent to loop `index`: its own completion. */
#define UD_MSG_FAIL(index) ((uint64_t)(UD_INTERNAL | (uint32_t)(index)))

/* One fd's registration; the table is indexed by fd. */
struct reg {
    uint64_t data; /* ctl()'s data, reported with each event */
    dev_t dev;     /* the file's identity when it was added */
    ino_t ino;
    uint32_t gen;    /* of the current poll; bumped on every change */
    uint32_t events; /* ES_IO_* interest */
    bool active;     /* in the set */
    bool armed;      /* a poll of generation `gen` is in the kernel */
    bool queued;     /* in armq */
};

struct uring_poller {
    struct io_uring ring;
    bool ring_ok;  /* io_uring_queue_init() succeeded */
    bool msg_ring; /* IORING_OP_MSG_RING and IOSQE_CQE_SKIP_SUCCESS work */
    int wake_fd;   /* eventfd; -1 until made */
    bool wake_armed;
    uint64_t wake_buf; /* the armed read's buffer */
    struct reg *regs;
    int regs_cap;
    int *armq; /* fds to arm at the next wait() */
    unsigned narmq, armq_cap;
};

static uint64_t ud_poll(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | (uint32_t)fd;
}

/* A free submission slot; submits what is queued when the ring is full. */
static struct io_uring_sqe *get_sqe(struct uring_poller *p)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
    while (!sqe) {
        int rc = io_uring_submit(&p->ring);
        if (rc < 0 && rc != -EINTR) /* -EBUSY: completions must be reaped */
            return NULL;
        sqe = io_uring_get_sqe(&p->ring);
    }
    return sqe;
}

static int ur_init(struct es__loop *loop)
{
    struct uring_poller *p = es__calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->wake_fd = -1;
    loop->poller = p;
    struct io_uring_params params = {
        .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL,
        .cq_entries = CQ_ENTRIES,
    };
    int rc = io_uring_queue_init_params(SQ_ENTRIES, &p->ring, &params);
    if (rc == -EINVAL) { /* before 5.18: no IORING_SETUP_SUBMIT_ALL */
        params = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE,
                                          .cq_entries = CQ_ENTRIES};
        rc = io_uring_queue_init_params(SQ_ENTRIES, &p->ring, &params);
    }
    if (rc < 0)
        return rc;
    p->ring_ok = true;
    /* 5.18 (SUBMIT_ALL) has MSG_RING; CQE_SKIP is a feature bit. */
    p->msg_ring = (params.flags & IORING_SETUP_SUBMIT_ALL) &&
                  (params.features & IORING_FEAT_CQE_SKIP);
    /* Blocking: the ring's read waits in the kernel, not with -EAGAIN. */
    p->wake_fd = eventfd(0, EFD_CLOEXEC);
    return p->wake_fd < 0 ? -errno : 0;
}

static void ur_fini(struct es__loop *loop)
{
    struct uring_poller *p = loop->poller;
    if (!p)
        return;
    /* Cancels every pending poll and read, and drops their files. */
    if (p->ring_ok)
        io_uring_queue_exit(&p->ring);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    es__free(p->regs);
    es__free(p->armq);
    es__free(p);
    loop->poller = NULL;
}

static int regs_reserve(struct uring_poller *p, int fd)
{
    if (fd < p->regs_cap)
        return 0;
    if (fd >= INT32_MAX / 2)
        return -EBADF;
    int cap = p->regs_cap ? p->regs_cap : REGS_MIN;
    while (cap <= fd)
        cap *= 2;
    struct reg *r = es__realloc(p->regs, (size_t)cap * sizeof(*r));
    if (!r)
        return -ENOMEM;
    memset(r + p->regs_cap, 0, (size_t)(cap - p->regs_cap) * sizeof(*r));
    p->regs = r;
    p->regs_cap = cap;
    return 0;
}

/* Queues fd to be armed by the next wait(). */
static int queue_arm(struct uring_poller *p, int fd)
{
    struct reg *r = &p->regs[fd];
    if (r->queued)
        return 0;
    if (p->narmq == p->armq_cap) {
        unsigned cap = p->armq_cap ? 2 * p->armq_cap : ARMQ_MIN;
        int *q = es__realloc(p->armq, (size_t)cap * sizeof(*q));
        if (!q)
            return -ENOMEM;
        p->armq = q;
        p->armq_cap = cap;
    }
    p->armq[p->narmq++] = fd;
    r->queued = true;
    return 0;
}

/* Cancels r's armed poll (queued, not submitted) and retires its
 * generation: whatever it still posts is stale. */
static int disarm(struct uring_poller *p, struct reg *r, int fd)
{
    if (r->armed) {
        struct io_uring_sqe *sqe = get_sqe(p);
        if (!sqe)
            return -ENOMEM;
        io_uring_prep_poll_remove(sqe, ud_poll(fd, r->gen));
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        r->armed = false;
    }
    r->gen++;
    return 0;
}

/* Takes fd out of the set. With `now`, a cancelled poll is submitted at
 * once, so its reference to the file is gone when this returns. */
static void forget(struct uring_poller *p, int fd, bool now)
{
    struct reg *r = &p->regs[fd];
    bool was_armed = r->armed;
    if (disarm(p, r, fd) != 0) {
        /* No room to cancel: the poll's completion is stale by its
         * generation; the file waits for it or for fini(). */
        r->armed = false;
        r->gen++;
    }
    r->active = false;
    if (now && was_armed)
        (void)io_uring_submit(&p->ring);
}

static int ur_add(struct uring_poller *p, int fd, uint32_t events,
                  uint64_t data)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
        return -EPERM; /* as epoll: files are always ready */
    int rc = regs_reserve(p, fd);
    if (rc)
        return rc;
    struct reg *r = &p->regs[fd];
    if (r->active) {
        if (r->dev == st.st_dev && r->ino == st.st_ino)
            return -EEXIST;
        forget(p, fd, true); /* closed without DEL; its number reused */
    }
    rc = queue_arm(p, fd);
    if (rc)
        return rc;
    r->gen++;
    r->data = data;
    r->events = events;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->active = true;
    return 0;
}

static int ur_ctl(struct es__loop *loop, int op, int fd, uint32_t events,
                  uint64_t data)
{
    struct uring_poller *p = loop->poller;
    if (fd < 0)
        return -EBADF;
    if (op == ES__CTL_ADD)
        return ur_add(p, fd, events, data);
    if (fd >= p->regs_cap || !p->regs[fd].active)
        return -ENOENT;
    struct reg *r = &p->regs[fd];
    if (op == ES__CTL_DEL) {
        forget(p, fd, true); /* the caller may close fd next */
        return 0;
    }
    if (r->armed && r->events == events && r->data == data)
        return 0; /* the armed poll already watches for these */
    int rc = queue_arm(p, fd);
    if (rc == 0)
        rc = disarm(p, r, fd);
    if (rc)
        return rc;
    r->events = events;
    r->data = data;
    return 0;
}

static void ur_closing(struct es__loop *loop, int fd)
{
    struct uring_poller *p = loop->poller;
    if (fd >= 0 && fd < p->regs_cap && p->regs[fd].active)
        forget(p, fd, true);
}

/* Queues the polls of armq and the wakeup read. Returns 0 or -ENOMEM. */
static int arm_all(struct uring_poller *p)
{
    if (!p->wake_armed) {
        struct io_uring_sqe *sqe = get_sqe(p);
        if (!sqe)
            return -ENOMEM;
        io_uring_prep_read(sqe, p->wake_fd, &p->wake_buf, sizeof(p->wake_buf),
                           0);
        io_uring_sqe_set_data64(sqe, UD_WAKE);
        p->wake_armed = true;
    }
    unsigned i = 0;
    for (; i < p->narmq; i++) {
        int fd = p->armq[i];
        struct reg *r = &p->regs[fd];
        if (r->active && !r->armed) {
            struct io_uring_sqe *sqe = get_sqe(p);
            if (!sqe)
                break;
            io_uring_prep_poll_add(sqe, fd, r->events);
            io_uring_sqe_set_data64(sqe, ud_poll(fd, r->gen));
            r->armed = true;
        }
        r->queued = false;
    }
    /* Out of submission slots: keep the rest for the next wait(). */
    if (i < p->narmq)
        memmove(p->armq, p->armq + i, (p->narmq - i) * sizeof(*p->armq));
    p->narmq -= i;
    return p->narmq ? -ENOMEM : 0;
}

/* Handles one completion; returns true if it stored an event in *ev. */
static void wake_by_eventfd(struct uring_poller *p);

/* A completion of the backend's own: the wakeup read, a cancellation, a
 * wakeup from another loop's ring, or such a wakeup that failed. */
static void reap_internal(struct es__loop *loop, struct uring_poller *p,
                          uint64_t ud)
{
    if (ud == UD_WAKE) {
        p->wake_armed = false; /* the counter was read: drained */
    } else if (ud != UD_IGNORE && ud != UD_WAKE_MSG) {
        /* A MSG_RING this loop sent failed (the target's completion ring
         * was full, say): wake that loop through its eventfd. */
        unsigned index = (uint32_t)ud & ~UD_INTERNAL;
        if (index < loop->rt->nloops)
            wake_by_eventfd(loop->rt->loops[index].poller);
    }
}

static bool reap_one(struct es__loop *loop, struct uring_poller *p,
                     const struct io_uring_cqe *cqe, struct es__event *ev)
{
    uint64_t ud = cqe->user_data;
    if ((uint32_t)ud & UD_INTERNAL) {
        reap_internal(loop, p, ud);
        return false;
    }
    int fd = (int)(uint32_t)ud;
    if (fd >= p->regs_cap)
        return false;
    struct reg *r = &p->regs[fd];
    if (!r->active || !r->armed || r->gen != (uint32_t)(ud >> 32))
        return false; /* stale: cancelled, changed or closed since */
    r->armed = false;
    if (cqe->res == -EBADF) { /* closed without DEL or closing() */
        r->active = false;
        r->gen++;
        return false;
    }
    /* Level-triggered: armed again by the next wait(). queue_arm() can
     * fail only without memory; the fd then stays reported as ready. */
    if (queue_arm(p, fd) != 0)
        r->queued = false;
    uint32_t mask = cqe->res < 0 ? ES_IO_ERROR : (uint32_t)cqe->res;
    ev->data = r->data;
    ev->events = mask & (r->events | ES_IO_ERROR | ES_IO_HUP);
    return true;
}

/* Reaps up to max events into out; *woke tells whether the wakeup read
 * completed. Returns how many events it stored. */
static int reap(struct es__loop *loop, struct uring_poller *p,
                struct es__event *out, int max, bool *woke)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int k = 0;
    io_uring_for_each_cqe(&p->ring, head, cqe)
    {
        if (k == max)
            break;
        seen++;
        *woke |= cqe->user_data == UD_WAKE || cqe->user_data == UD_WAKE_MSG;
        if (reap_one(loop, p, cqe, &out[k]))
            k++;
    }
    io_uring_cq_advance(&p->ring, seen);
    return k;
}

/* Submits what is queued and waits up to timeout_ms (-1: no limit, 0: does
 * not wait) for a completion. Returns 0, -ETIME or -EINTR. */
static int submit_and_wait(struct uring_poller *p, int timeout_ms)
{
    struct io_uring_cqe *cqe;
    if (timeout_ms == 0) {
        int rc = io_uring_submit(&p->ring);
        return rc < 0 ? rc : 0;
    }
    if (timeout_ms < 0)
        return io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, NULL, NULL);
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) *
                                              1000000};
    return io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, &ts, NULL);
}

/*
 * One io_uring_enter() arms what the last turn reported or changed and
 * waits. Completions that report nothing (cancellations, stale polls) do
 * not end the sleep: it goes on until an event, the wakeup, the timeout or
 * an interruption.
 */
static int ur_wait(struct es__loop *loop, struct es__event *out, int max,
                   int timeout_ms)
{
    struct uring_poller *p = loop->poller;
    uint64_t deadline =
        timeout_ms > 0 ? es__now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    for (;;) {
        if (arm_all(p) != 0)
            timeout_ms = 0; /* polls left unarmed: look again soon */
        int rc = submit_and_wait(p, timeout_ms);
        bool woke = false;
        int k = reap(loop, p, out, max, &woke);
        if (k || woke || timeout_ms == 0 || rc < 0) /* -ETIME, -EINTR */
            return k;
        if (timeout_ms > 0) {
            uint64_t now = es__now_ns();
            if (now >= deadline)
                return 0;
            timeout_ms = (int)((deadline - now + 999999u) / 1000000u);
        }
    }
}

static void wake_by_eventfd(struct uring_poller *p)
{
    uint64_t one = 1;
    /* Cannot block or fail: the counter stays far below its maximum, as
     * the loop reads it after every wakeup. */
    ssize_t n = write(p->wake_fd, &one, sizeof(one));
    ES_ASSERT(n == (ssize_t)sizeof(one));
    (void)n;
}

/*
 * From another loop on io_uring, an IORING_OP_MSG_RING submitted on the
 * waker's own ring posts the completion straight into the sleeper's ring
 * and wakes it: no eventfd, no poll, no task work on the sleeper, one
 * system call for the waker as with the eventfd. Its own completion is
 * skipped on success; a failure comes back tagged with the target, which
 * reap_internal() then wakes through its eventfd. Foreign threads, and
 * loops whose ring has no room, write the eventfd.
 */
static void ur_wake(struct es__loop *loop)
{
    struct uring_poller *p = loop->poller;
    struct es__loop *self = es__loop_current();
    if (self && self != loop && self->rt == loop->rt &&
        self->backend == &es__backend_uring) {
        struct uring_poller *sp = self->poller;
        struct io_uring_sqe *sqe =
            sp->msg_ring ? io_uring_get_sqe(&sp->ring) : NULL;
        if (sqe) {
            io_uring_prep_msg_ring(sqe, p->ring.ring_fd, 0, UD_WAKE_MSG, 0);
            io_uring_sqe_set_data64(sqe, UD_MSG_FAIL(loop->index));
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            if (io_uring_submit(&sp->ring) > 0)
                return;
        }
    }
    wake_by_eventfd(p);
}

const struct es__backend es__backend_uring = {
    .name = "io_uring",
    .kind = ES_BACKEND_IO_URING,
    .init = ur_init,
    .fini = ur_fini,
    .ctl = ur_ctl,
    .closing = ur_closing,
    .wait = ur_wait,
    .wake = ur_wake,
};
