/* SPDX-License-Identifier: MIT */
/*
 * Timers: one-shot and periodic, per demux thread, delivered to the actor
 * that set them as ES_MSG_TIMER. Start and cancel cost O(log n).
 */
#ifndef EVENTSERVER_TIMER_H
#define EVENTSERVER_TIMER_H

#include <eventserver/actor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Handle of a timer; 0 is never a live timer. */
typedef uint64_t es_timer_id_t;

/*
 * Starts a timer that fires after `after_ms`, then every `repeat_ms` if that
 * is non-zero. Each expiry delivers ES_MSG_TIMER with inl.u64[0] = tag and
 * inl.u64[1] = the timer's id. Timers due at the same time fire in start
 * order. A one-shot timer is gone once it has fired.
 * Returns: 0 and *out (may be NULL), -ENOMEM, -EOVERFLOW.
 * Thread: owning loop only (inside self's behaviour).
 * Lifetime: cancelled automatically when the actor stops.
 */
ES_EXTERN int es_timer_start(es_actor_t *self, uint64_t after_ms,
                             uint64_t repeat_ms, uint64_t tag,
                             es_timer_id_t *out);

/*
 * Cancels a timer: once this returns no ES_MSG_TIMER from it is delivered.
 * Returns: 0, or -ENOENT if it already fired (one-shot) or was cancelled.
 * Thread: owning loop only (inside self's behaviour).
 */
ES_EXTERN int es_timer_stop(es_actor_t *self, es_timer_id_t id);

/* The tag of an ES_MSG_TIMER message. */
static inline uint64_t es_msg_timer_tag(const es_msg_t *msg)
{
    return msg->inl.u64[0];
}

/* The id of the timer that produced an ES_MSG_TIMER message. */
static inline es_timer_id_t es_msg_timer_id(const es_msg_t *msg)
{
    return msg->inl.u64[1];
}

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_TIMER_H */
