/* SPDX-License-Identifier: MIT */
/*
 * Signals as messages: an actor subscribes to a signal number and receives
 * ES_MSG_SIGNAL whenever it arrives. Signals are read through one signalfd;
 * the runtime's threads block every signal, and SIGPIPE never kills the
 * process because of a write made by the runtime.
 */
#ifndef EVENTSERVER_SIGNAL_H
#define EVENTSERVER_SIGNAL_H

#include <eventserver/actor.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Subscribes actor `id` to `signo`. The signal is blocked in the calling
 * thread; threads the application created earlier must block it themselves
 * (or be created after this call), or the kernel may deliver it to them.
 * Returns: 0, -EINVAL for a signal that cannot be caught (SIGKILL, SIGSTOP,
 * synchronous faults), -EALREADY if already subscribed, -ENOMEM.
 * Thread: any. Lifetime: dropped when the actor stops.
 */
ES_EXTERN int es_signal_subscribe(es_runtime_t *rt, es_actor_id_t id,
                                  int signo);

/*
 * Removes a subscription.
 * Returns: 0, or -ENOENT if there was none. Thread: any.
 */
ES_EXTERN int es_signal_unsubscribe(es_runtime_t *rt, es_actor_id_t id,
                                    int signo);

/*
 * Makes the runtime stop itself (as es_runtime_stop()) when `signo` arrives.
 * Returns: as es_signal_subscribe(). Thread: any.
 */
ES_EXTERN int es_runtime_stop_on_signal(es_runtime_t *rt, int signo);

/* The signal number of an ES_MSG_SIGNAL message. */
static inline int es_msg_signo(const es_msg_t *msg)
{
    return (int)msg->inl.i64[0];
}

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_SIGNAL_H */
