/* SPDX-License-Identifier: MIT */
/*
 * File descriptors as messages: an actor watches an fd and receives
 * ES_MSG_IO on its home thread whenever the fd is ready. Any number of fds
 * may be watched; the table grows with the highest fd.
 */
#ifndef EVENTSERVER_IO_H
#define EVENTSERVER_IO_H

#include <eventserver/actor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Readiness bits, as requested and as reported in ES_MSG_IO. */
enum es_io_events {
    ES_IO_READ = 0x001,   /* readable (or a listening socket has a peer) */
    ES_IO_WRITE = 0x004,  /* writable */
    ES_IO_ERROR = 0x008,  /* error pending; always reported */
    ES_IO_HUP = 0x010,    /* hang-up; always reported */
    ES_IO_RDHUP = 0x2000, /* peer shut down its writing side */
};

/*
 * Starts watching `fd` for `events` (ES_IO_READ and/or ES_IO_WRITE,
 * optionally ES_IO_RDHUP), level-triggered, or changes the events of a
 * watch self already has. The fd stays the caller's: close it only after
 * es_io_unwatch(). Watches end when the actor stops.
 * Returns: 0, -EEXIST if another actor of the same demux thread watches fd,
 * -EBADF, -EPERM (regular files cannot be watched), -ENOMEM. Two actors on
 * different threads watching one fd is not detected: both would be told.
 * An fd belongs to one actor at a time.
 * Thread: owning loop only (inside self's behaviour).
 */
ES_EXTERN int es_io_watch(es_actor_t *self, int fd, uint32_t events);

/*
 * Stops watching fd; no ES_MSG_IO for it is delivered after this returns.
 * Returns: 0, or -ENOENT if self does not watch fd.
 * Thread: owning loop only.
 */
ES_EXTERN int es_io_unwatch(es_actor_t *self, int fd);

/* The fd of an ES_MSG_IO message. */
static inline int es_msg_io_fd(const es_msg_t *msg)
{
    return (int)msg->inl.i64[0];
}

/* The ES_IO_* bits of an ES_MSG_IO message. */
static inline uint32_t es_msg_io_events(const es_msg_t *msg)
{
    return (uint32_t)msg->inl.u64[1];
}

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_IO_H */
