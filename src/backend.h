/* SPDX-License-Identifier: MIT */
/*
 * The poller interface between the demux loop (loop.c) and an IO backend,
 * in the manner of Redis's ae_epoll.c / ae_kqueue.c: a backend keeps a set
 * of fds with the readiness each is watched for, waits until one is ready,
 * a timeout passes or another thread wakes it, and reports ready fds in
 * a backend-neutral form. backend_epoll.c (the only file that includes
 * <sys/epoll.h>) and backend_uring.c (the only one that includes
 * <liburing.h>) are the two; es_runtime_opts_t.backend and the ES_BACKEND
 * environment variable choose one per runtime (runtime.c, loop.c).
 *
 * Each loop holds a pointer to its backend's table of functions, chosen
 * once in es__loop_init(), and the backend's private state (`poller`). The
 * indirect calls cost nothing next to the system call behind each one.
 */
#ifndef EVENTSERVER_BACKEND_H
#define EVENTSERVER_BACKEND_H

#include "internal.h"

/* A ready fd, as wait() reports it: the `data` its interest was registered
 * with, and what is ready (ES_IO_* bits: READ, WRITE, ERROR, HUP, RDHUP). */
struct es__event {
    uint64_t data;
    uint32_t events;
};

/*
 * A backend. The interest in an fd is level-triggered: an fd stays ready
 * in every wait() until it was read or written enough, or its interest
 * changed. Every function but wake() runs on the loop's thread (or the
 * settling thread once the loop thread is gone).
 */
struct es__backend {
    const char *name;
    int kind; /* ES_BACKEND_EPOLL or ES_BACKEND_IO_URING */
    /* Makes loop->poller, the wakeup included. Returns 0 or -errno; on
     * failure fini() still runs and frees what was made. */
    int (*init)(struct es__loop *loop);
    /* Frees loop->poller and closes its fds; NULL poller: nothing. */
    void (*fini)(struct es__loop *loop);
    /*
     * Adds (ES__CTL_ADD), changes (ES__CTL_MOD) or drops (ES__CTL_DEL) the
     * interest in fd: `events` are ES_IO_READ / ES_IO_WRITE / ES_IO_RDHUP
     * (ERROR and HUP are always reported), `data` comes back with each of
     * its events. Returns 0, -EEXIST (ADD of an fd already in the set),
     * -EPERM (ADD of a regular file or a directory), -ENOENT or -EBADF
     * (MOD or DEL of an fd not in it, or closed), or another -errno. Closing an
     * fd that no other process shares or was dup()ed, after closing() below,
     * drops its interest without DEL (io.c's es__io_close() relies on it).
     */
    int (*ctl)(struct es__loop *loop, int op, int fd, uint32_t events,
               uint64_t data);
    /*
     * fd, whose interest is in the set, is closed right after this returns,
     * without DEL (es__io_close()). NULL for a backend where closing the fd
     * drops the interest (epoll); one whose pending operations hold the
     * file (io_uring) cancels them here, so the file is released with the
     * close and nothing reports the fd (or its number, reused) afterwards.
     */
    void (*closing)(struct es__loop *loop, int fd);
    /*
     * Blocks until an fd is ready, wake() is called, or timeout_ms passes
     * (-1: no timeout, 0: only looks); stores at most `max` ready fds in
     * `out`. Consumes wakeups itself: they are not reported.
     * Returns how many it stored (0 on timeout, wakeup or interruption).
     */
    int (*wait)(struct es__loop *loop, struct es__event *out, int max,
                int timeout_ms);
    /* Makes the loop's current or next wait() return. Thread: any; the
     * handshake in chan.c calls it at most once per sleep. */
    void (*wake)(struct es__loop *loop);
};

extern const struct es__backend es__backend_epoll;
extern const struct es__backend es__backend_uring;

#endif /* EVENTSERVER_BACKEND_H */
