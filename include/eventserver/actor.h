/* SPDX-License-Identifier: MIT */
/*
 * Actors and messages: spawn an actor with a behaviour, send it messages from
 * any thread, stop it. A behaviour runs on the actor's home demux thread, one
 * message at a time, so the actor's state needs no lock.
 */
#ifndef EVENTSERVER_ACTOR_H
#define EVENTSERVER_ACTOR_H

#include <eventserver/runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque actor; valid only inside its own behaviour, on its home thread. */
typedef struct es_actor es_actor_t;

/* Message types below ES_MSG_USER belong to the runtime. */
enum es_msg_type {
    ES_MSG_START = 1, /* first message an actor receives */
    ES_MSG_STOP,      /* last message; the actor is being stopped */
    ES_MSG_TIMER,     /* a timer fired: es_msg_timer_tag(), es_msg_timer_id() */
    ES_MSG_SIGNAL,    /* a subscribed signal arrived: es_msg_signo() */
    ES_MSG_IO,        /* a watched fd is ready: es_msg_io_fd(), _events() */
    /* Connection actors (eventserver/conn.h): */
    ES_MSG_CONN_OPEN,       /* connected or accepted */
    ES_MSG_CONN_DATA,       /* bytes received: ptr, len (valid during call) */
    ES_MSG_CONN_SENT,       /* write queue flushed: len bytes since last */
    ES_MSG_CONN_HIGH_WATER, /* write queue rose above the high watermark */
    ES_MSG_CONN_LOW_WATER,  /* write queue fell below the low watermark */
    ES_MSG_CONN_CLOSED,     /* es_msg_conn_reason(), es_msg_conn_error() */
    /* Monitors, links and requests (below): */
    ES_MSG_DOWN,           /* a monitored actor stopped: from, es_msg_ref(),
                              es_msg_reason() */
    ES_MSG_EXIT,           /* a linked actor stopped abnormally and this one
                              traps exits: from, es_msg_reason() */
    ES_MSG_REPLY,          /* the answer to es_request(): es_msg_ref() is
                              the request id; payload as the replier sent */
    ES_MSG_REQUEST_FAILED, /* es_request() got no answer: es_msg_ref(),
                              es_msg_reason() (-ETIMEDOUT or -ESRCH) */
    ES_MSG_USER = 0x10000,
};

/* Identifies one monitor (es_monitor()) or one request (es_request());
 * never 0, never reused within a runtime. */
typedef uint64_t es_ref_t;

/* Frees the out-of-line payload of a message that is dropped or consumed. */
typedef void (*es_msg_free_cb)(void *ptr);

#define ES_MSG_INLINE 24

/*
 * A message travels by value (one 64-byte cache line): a small inline payload
 * or a pointer with its destructor. Build one with the es_msg_*() helpers.
 */
typedef struct es_msg {
    uint32_t type;          /* ES_MSG_* or >= ES_MSG_USER */
    uint32_t len;           /* payload length in bytes (inline or ptr) */
    es_actor_id_t from;     /* sender, filled in by es_send() */
    es_actor_id_t to;       /* target, filled in by es_send() */
    void *ptr;              /* out-of-line payload, or NULL */
    es_msg_free_cb free_cb; /* frees ptr unless taken; NULL = not owned */
    union {
        unsigned char bytes[ES_MSG_INLINE];
        uint64_t u64[ES_MSG_INLINE / 8];
        int64_t i64[ES_MSG_INLINE / 8];
        double f64[ES_MSG_INLINE / 8];
    } inl;
} es_msg_t;

/* A message of `type` with no payload. */
static inline es_msg_t es_msg_make(uint32_t type)
{
    es_msg_t m = {0};
    m.type = type;
    return m;
}

/* A message of `type` carrying one 64-bit value in inl.u64[0]. */
static inline es_msg_t es_msg_u64(uint32_t type, uint64_t value)
{
    es_msg_t m = es_msg_make(type);
    m.inl.u64[0] = value;
    m.len = sizeof(value);
    return m;
}

/* A message of `type` carrying one double in inl.f64[0]. */
static inline es_msg_t es_msg_f64(uint32_t type, double value)
{
    es_msg_t m = es_msg_make(type);
    m.inl.f64[0] = value;
    m.len = sizeof(value);
    return m;
}

/*
 * A message carrying `ptr` (len bytes). If free_cb is not NULL the message
 * owns ptr once es_send() succeeds: the runtime calls free_cb after the
 * behaviour returns (or after the dead-letter hook) unless it was taken.
 */
static inline es_msg_t es_msg_ptr(uint32_t type, void *ptr, uint32_t len,
                                  es_msg_free_cb free_cb)
{
    es_msg_t m = es_msg_make(type);
    m.ptr = ptr;
    m.len = len;
    m.free_cb = free_cb;
    return m;
}

/* Where monitors, links and requests keep their fields in a message: the
 * last inline word is the ref (or request id), the one before it the
 * reason. A request or a reply therefore carries at most
 * ES_MSG_REQUEST_INLINE inline bytes (or a ptr payload of any size). */
#define ES_MSG_REQUEST_INLINE 16

/* The monitor ref of ES_MSG_DOWN, the request id of ES_MSG_REPLY and
 * ES_MSG_REQUEST_FAILED. */
static inline es_ref_t es_msg_ref(const es_msg_t *msg)
{
    return msg->inl.u64[2];
}

/* The reason of ES_MSG_DOWN, ES_MSG_EXIT and ES_MSG_REQUEST_FAILED: 0 for a
 * normal stop, the negative errno the actor's behaviour returned,
 * -ESHUTDOWN (the runtime stopped), -ENOLINK (stopped by a link), -ESRCH
 * (it did not exist), -ETIMEDOUT (a request's deadline passed). */
static inline int es_msg_reason(const es_msg_t *msg)
{
    return (int)msg->inl.i64[1];
}

/*
 * Builds a message carrying a copy of `len` bytes inline.
 * Returns: 0, or -EOVERFLOW if len > ES_MSG_INLINE. Thread: any.
 */
ES_EXTERN int es_msg_bytes(es_msg_t *msg, uint32_t type, const void *data,
                           uint32_t len);

/*
 * Takes the out-of-line payload so the runtime will not free it.
 * Returns: msg->ptr (may be NULL). Ownership: the caller now owns the
 * pointer and must free it. Thread: the thread handling msg.
 */
ES_EXTERN void *es_msg_take(es_msg_t *msg);

/*
 * Releases what a message owns (calls free_cb on ptr, if any). For a message
 * the caller built but could not send.
 * Returns: nothing. Thread: any.
 */
ES_EXTERN void es_msg_release(es_msg_t *msg);

/*
 * An actor's behaviour: handles one message. Returning a negative errno
 * stops the actor (it then receives ES_MSG_STOP) and logs the code.
 */
typedef int (*es_behaviour_cb)(es_actor_t *self, es_msg_t *msg);

/* Frees an actor's state after its last message. */
typedef void (*es_state_free_cb)(void *state);

/*
 * Where es_spawn() places an actor when neither a loop nor a `near` actor is
 * given.
 */
typedef enum es_placement {
    ES_PLACE_ROUND_ROBIN = 0, /* rotate over the demux threads */
    ES_PLACE_LEAST_LOADED,    /* the thread with the fewest actors */
    /* On a demux thread: that thread. On any other thread: the thread of
     * the actor this thread last sent a message to (es_send, es_stop), or
     * round-robin if it has sent nothing yet. */
    ES_PLACE_CURRENT,
} es_placement_t;

/* es_spawn_opts_t.loop (and es_connect_opts_t.loop): a zeroed field lets
 * the placement decide; ES_LOOP(i) names demux thread i (0-based). */
#define ES_LOOP_ANY 0
#define ES_LOOP(i) ((i) + 1)

/*
 * What to spawn. Zeroed fields take defaults: a zeroed struct with only a
 * behaviour spawns on a round-robin thread. The home thread is chosen by the
 * first of these that is set: `loop`, then `near`, then `placement`.
 */
typedef struct es_spawn_opts {
    es_behaviour_cb behaviour; /* required */
    void *state;               /* handed to the behaviour via es_actor_state */
    es_state_free_cb state_free; /* called once after ES_MSG_STOP, or NULL */
    int loop; /* ES_LOOP_ANY (0): placement decides; ES_LOOP(i): thread i */
    es_placement_t placement;  /* used when loop == ES_LOOP_ANY and no near */
    unsigned mailbox_capacity; /* 0: the runtime's default; <= 2^30 - 1 */
    es_actor_id_t near;        /* not ES_ACTOR_NONE: the thread of this actor */
} es_spawn_opts_t;

/*
 * Spawns an actor. Once this returns 0 the actor is guaranteed to receive
 * ES_MSG_START first and ES_MSG_STOP last (even if the runtime stops before
 * it ever ran), then state_free; messages sent to the returned handle before
 * START are queued behind it. There is no limit on how many actors may be
 * spawned, from any thread, before or after es_runtime_start(): an actor for
 * another thread waits on that thread's list of new actors, which is not
 * bounded by a channel.
 * Returns: 0 and *out; -EINVAL (no behaviour, loop outside ES_LOOP_ANY ..
 * ES_LOOP(threads - 1), mailbox_capacity too large); -ESRCH if `near` names
 * an actor that has stopped or never existed; -ENOMEM; -ESHUTDOWN once the
 * runtime stops.
 * Ownership: on success the runtime owns state and calls state_free exactly
 * once; on failure the caller keeps state.
 * Thread: any.
 */
ES_EXTERN int es_spawn(es_runtime_t *rt, const es_spawn_opts_t *opts,
                       es_actor_id_t *out);

/*
 * Sends a copy of *msg to actor `to`. Messages from one sending actor (or
 * one foreign thread) to one receiver arrive in the order sent.
 *
 * From a behaviour (an actor sending on its demux thread) a send never
 * fails for capacity. If the receiver's mailbox is full the message is
 * accepted over the limit and the sending actor is muted: once its
 * behaviour returns it is not run again (its messages and timers wait in
 * its queue; a connection actor stops reading its socket) until every
 * receiver it is muted on has drained to half its capacity. An actor that
 * other actors wait on is never muted, so mutes cannot deadlock in a cycle
 * (docs/design.md, "Flow control"). One behaviour call can still overfill a
 * mailbox by what it sends in that call: send big batches in chunks (a
 * message to self between chunks) to stay within the limit. A full ring to
 * another thread never fails a send either: the message waits in the
 * sender's loop.
 *
 * From any other thread (a "foreign" thread: main(), a worker pool) a full
 * mailbox or a full ring answers -EAGAIN; es_send_wait() blocks instead.
 *
 * Returns: 0; -EAGAIN (foreign threads only, see above); -ESRCH if the actor
 * stopped or never existed; -EINVAL for a system type or a type with bit 31
 * set (it marks requests in transit: user types end at 0x7fffffff); -ENOMEM.
 * Ownership: on success the message (and what it owns) belongs to the
 * runtime; on failure the caller keeps it.
 * Thread: any, including threads the runtime has never seen.
 */
ES_EXTERN int es_send(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg);

/*
 * es_send() for foreign threads that would rather wait than see -EAGAIN:
 * blocks until the mailbox (and the ring to its thread) has room, at most
 * timeout_ms milliseconds (< 0: no limit). The receiver wakes the waiter
 * when it drains to half its capacity.
 * Returns: as es_send(), plus -ETIMEDOUT when the time ran out, and
 * -EDEADLK on a demux thread of rt (a behaviour must not block; its sends
 * never fail for capacity anyway).
 * Ownership: as es_send(). Thread: any thread that is not one of rt's.
 */
ES_EXTERN int es_send_wait(es_runtime_t *rt, es_actor_id_t to,
                           const es_msg_t *msg, int timeout_ms);

/*
 * Asks actor `id` to stop: it receives ES_MSG_STOP after the messages the
 * calling thread sent it before. Stop requests ignore the mailbox limit.
 * Returns: 0, -ESRCH if it already stopped, -EAGAIN (foreign threads only)
 * if the ring to its thread is full, -ENOMEM.
 * Thread: any.
 */
ES_EXTERN int es_stop(es_runtime_t *rt, es_actor_id_t id);

/*
 * Stops the calling actor once its behaviour returns (it still receives
 * ES_MSG_STOP unless it is handling it now).
 * Returns: nothing. Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN void es_actor_stop(es_actor_t *self);

/* The actor's handle. Thread: owning loop only. */
ES_EXTERN es_actor_id_t es_actor_self(const es_actor_t *self);

/* The state pointer given to es_spawn(). Thread: owning loop only. */
ES_EXTERN void *es_actor_state(const es_actor_t *self);

/*
 * Replaces the actor's state: what es_actor_state() returns from now on and
 * what its state_free receives at the end (a module can keep an idle actor
 * small and attach a larger state only while it is busy).
 * Returns: nothing. Ownership: the old state stays the caller's.
 * Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN void es_actor_set_state(es_actor_t *self, void *state);
/*
 * Stops self once the current behaviour call returns, as es_actor_stop(),
 * with `reason` as the reason its monitors and links see (0: a normal
 * stop; else a negative errno). Returning the errno from the behaviour
 * does the same but logs a warning: use this where the stop and its reason
 * are part of the actor's protocol (a cluster proxy whose name is gone).
 * Returns: nothing. Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN void es_actor_exit(es_actor_t *self, int reason);

/* The runtime the actor lives in. Thread: owning loop only. */
ES_EXTERN es_runtime_t *es_actor_runtime(const es_actor_t *self);

/* Index of the actor's home demux thread. Thread: owning loop only. */
ES_EXTERN int es_actor_loop_index(const es_actor_t *self);

/* --- monitors and links (docs/design.md, "Monitors and links") --------- */

/*
 * Watches actor `target`: `self` receives exactly one ES_MSG_DOWN when it
 * stops, with from = target, es_msg_ref() = *ref and es_msg_reason() the
 * reason it stopped (see es_msg_reason()). If target has already stopped or
 * never existed the DOWN (reason -ESRCH) is sent at once. Watcher and target
 * may live on different threads; one actor may watch many, and many may
 * watch one (each monitor gets its own DOWN). When `self` stops first its
 * monitors are removed.
 * Returns: 0 and *ref; -EINVAL (target is self or a loop actor); -ENOMEM.
 * Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN int es_monitor(es_actor_t *self, es_actor_id_t target, es_ref_t *ref);

/*
 * Removes a monitor. No ES_MSG_DOWN for it is delivered after this returns,
 * even one already queued.
 * Returns: 0; -ENOENT if ref is not an active monitor of self (its DOWN
 * was delivered already, or it never existed).
 * Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN int es_demonitor(es_actor_t *self, es_ref_t ref);

/*
 * Links self and `other`, both ways. When either stops abnormally (reason
 * not 0) the other is stopped with reason -ENOLINK, or, if it traps exits,
 * receives ES_MSG_EXIT (from, reason) instead. Normal stops only remove the
 * link. Linking twice is one link.
 * Returns: 0; -ESRCH if other has stopped or never existed (no link is
 * made); -EINVAL (other is self or a loop actor); -ENOMEM.
 * Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN int es_link(es_actor_t *self, es_actor_id_t other);

/*
 * Removes the link between self and `other`, both ways. No ES_MSG_EXIT for
 * it and no stop through it happens to self after this returns.
 * Returns: 0; -ENOENT if they were not linked.
 * Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN int es_unlink(es_actor_t *self, es_actor_id_t other);

/*
 * on = 1: abnormal stops of linked actors arrive as ES_MSG_EXIT instead of
 * stopping self; on = 0 (the default): they stop it.
 * Returns: nothing. Thread: owning loop only, inside the behaviour.
 */
ES_EXTERN void es_actor_trap_exits(es_actor_t *self, int on);

/* --- names (docs/design.md, "Names") ----------------------------------- */

/* Longest name es_register() accepts, in bytes (without the NUL). */
#define ES_NAME_MAX 255

/*
 * Gives actor `id` the name `name` (a NUL-terminated string of 1 ..
 * ES_NAME_MAX bytes, compared byte for byte). An actor may have several
 * names; a name names one actor. The runtime releases an actor's names
 * when it stops, before any monitor of it receives ES_MSG_DOWN, so after a
 * DOWN es_whereis() no longer finds the dead actor under them.
 * Returns: 0; -EEXIST if the name is taken; -EINVAL (name NULL, empty or
 * longer than ES_NAME_MAX, id is ES_ACTOR_NONE or a loop actor); -ESRCH if
 * id has stopped (or is stopping) or never existed; -ENOMEM.
 * Ownership: the runtime copies the name; the caller keeps its string.
 * Thread: any.
 */
ES_EXTERN int es_register(es_runtime_t *rt, const char *name, es_actor_id_t id);

/*
 * Removes a name (whichever actor it points at).
 * Returns: 0; -ENOENT if no actor has that name; -EINVAL (name NULL,
 * empty or longer than ES_NAME_MAX).
 * Ownership: nothing changes hands. Thread: any.
 */
ES_EXTERN int es_unregister(es_runtime_t *rt, const char *name);

/*
 * Looks a name up without taking a lock.
 * Returns: 0 and *out, the actor the name points at (it may stop at any
 * moment: a send to it then answers -ESRCH); -ENOENT if no actor has that
 * name; -EINVAL (rt or out NULL, name NULL, empty or longer than
 * ES_NAME_MAX); -ENOMEM if this is the calling thread's first call into rt
 * and its sender context could not be made.
 * Ownership: nothing changes hands. Thread: any.
 */
ES_EXTERN int es_whereis(const es_runtime_t *rt, const char *name,
                         es_actor_id_t *out);

/*
 * es_send() to the actor `name` points at.
 * Returns: -ENOENT if no actor has that name (or -EINVAL, -ENOMEM as
 * es_whereis()); otherwise what es_send() returns (-ESRCH if the actor
 * stopped between the lookup and the send).
 * Ownership: as es_send(). Thread: any.
 */
ES_EXTERN int es_send_named(es_runtime_t *rt, const char *name,
                            const es_msg_t *msg);

/* --- requests (docs/design.md, "Requests") ------------------------------ */

/* The right to answer a request later, from any thread (es_reply_token()).
 * Plain data: copy it freely; it holds no memory. */
typedef struct es_reply_token {
    uint64_t _private[3];
} es_reply_token_t;

/*
 * Sends *msg to `to` as a request. The receiver sees an ordinary message of
 * msg->type (es_msg_ref() of it is the request id) and answers it with
 * es_reply() or, later, es_reply_token() + es_reply_to(). `self` then
 * receives exactly one of:
 * - ES_MSG_REPLY: from = the replier, es_msg_ref() = *req_id, the payload
 *   the replier sent (inline bytes 0..15, or ptr/len/free_cb);
 * - ES_MSG_REQUEST_FAILED: es_msg_ref() = *req_id, es_msg_reason()
 *   -ETIMEDOUT once timeout_ms passed (< 0: no deadline; deadlines run on
 *   a 16 ms wheel and fire up to one tick late, never early), or -ESRCH at
 *   once when `to` is gone before it answered: already gone at the call
 *   (the request is then dead-lettered), gone before it handled the
 *   request, or stopped while keeping it unanswered.
 * A reply that comes after the outcome is dropped and counted
 * (es_stats_t.late_replies). Like es_send() from a behaviour, a request
 * counts against the receiver's mailbox, mutes self when it is full and is
 * never refused for capacity. While it has requests pending, self does not
 * migrate to another thread (co-location, load shedding).
 * Returns: 0 and *req_id (may be NULL); -EINVAL (a system type or one with
 * bit 31 set, an inline payload over ES_MSG_REQUEST_INLINE bytes: inline
 * bytes 16..23 carry the id); -ESHUTDOWN (the runtime is stopping);
 * -ENOMEM. Ownership: as es_send(): on 0 the runtime owns the message.
 * Thread: owning loop only, inside self's behaviour.
 */
ES_EXTERN int es_request(es_actor_t *self, es_actor_id_t to,
                         const es_msg_t *msg, int timeout_ms, es_ref_t *req_id);

/*
 * Answers `request`, the message self's behaviour is handling now: the
 * requester receives ES_MSG_REPLY with reply's payload (reply->type is
 * ignored; inline payload at most ES_MSG_REQUEST_INLINE bytes, or ptr).
 * Answering twice (or after the requester's deadline) is allowed: the
 * later reply is dropped at the requester and counted as late.
 * Returns: 0; -EINVAL if request is not a request self is handling now (or
 * reply is malformed); -ESRCH if the requesting actor has stopped;
 * -ENOMEM. Ownership: on 0 the runtime owns reply's payload.
 * Thread: owning loop only, inside self's behaviour.
 */
ES_EXTERN int es_reply(es_actor_t *self, const es_msg_t *request,
                       const es_msg_t *reply);

/*
 * Keeps the right to answer `request` (the message self's behaviour is
 * handling now) after the behaviour returns, with es_reply_to(). Until it
 * is answered, the requester gets -ESRCH at once if self stops.
 * Returns: 0 and *tok; -EINVAL as es_reply(); -ENOMEM.
 * Thread: owning loop only, inside self's behaviour.
 */
ES_EXTERN int es_reply_token(es_actor_t *self, const es_msg_t *request,
                             es_reply_token_t *tok);

/*
 * Answers the request of *tok, as es_reply() (a second answer is late).
 * Returns: 0; -EINVAL; -ESRCH if the requesting actor has stopped;
 * -EAGAIN (foreign threads: the ring to the requester's thread is full,
 * retry); -ENOMEM. Ownership: on 0 the runtime owns reply's payload.
 * Thread: any.
 */
ES_EXTERN int es_reply_to(es_runtime_t *rt, const es_reply_token_t *tok,
                          const es_msg_t *reply);

/*
 * Answers the request of *tok with a failure instead of a reply: the
 * requester receives ES_MSG_REQUEST_FAILED with es_msg_reason() = reason
 * (a negative errno; a proxy that knows its target is gone uses -ESRCH).
 * Like a reply, a failure after the outcome is dropped and counted late.
 * Returns: 0; -EINVAL (reason >= 0, a malformed token); -ESRCH if the
 * requesting actor has stopped; -EAGAIN (foreign threads, as
 * es_reply_to()); -ENOMEM. Thread: any.
 */
ES_EXTERN int es_reply_error(es_runtime_t *rt, const es_reply_token_t *tok,
                             int reason);

/*
 * es_request() for a thread that is not one of rt's: sends *msg to `to`
 * as a request and blocks until the answer, at most timeout_ms
 * milliseconds (< 0: no limit; waiting for mailbox room counts too). The
 * receiver answers with es_reply() as for an actor.
 * Returns: 0 and *reply (type ES_MSG_REPLY, from = the replier, the
 * payload as sent); -ETIMEDOUT; -ESRCH (to is gone, or stopped before it
 * answered); -EINVAL (as es_request()); -EDEADLK on a demux thread of rt
 * (a behaviour must not block: use es_request()); -ENOMEM.
 * Ownership: the runtime owns msg's payload once this returns 0,
 * -ETIMEDOUT or -ESRCH (the caller keeps it on -EINVAL, -EDEADLK,
 * -ENOMEM); on 0 the caller owns reply's (es_msg_release() it).
 * Thread: any thread that is not one of rt's.
 */
ES_EXTERN int es_call(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
                      es_msg_t *reply, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_ACTOR_H */
