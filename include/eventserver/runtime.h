/* SPDX-License-Identifier: MIT */
/*
 * The runtime: N demux threads, each an event loop and an actor of its own,
 * plus the global actor table, the epoch reclaimer and signal routing.
 */
#ifndef EVENTSERVER_RUNTIME_H
#define EVENTSERVER_RUNTIME_H

#include <eventserver/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque runtime; created by es_runtime_new(), destroyed by es_runtime_free().
 */
typedef struct es_runtime es_runtime_t;

/* Handle of an actor: index and generation; 0 is never a live actor. */
typedef uint64_t es_actor_id_t;
#define ES_ACTOR_NONE ((es_actor_id_t)0)

struct es_msg;

/*
 * Called for every message that could not be delivered because its target
 * stopped first (or the runtime shut down). The message is freed after the
 * hook returns unless the hook takes its pointer with es_msg_take().
 * Thread: the target's demux thread, or the thread in es_runtime_wait() /
 * es_runtime_free() for messages drained at shutdown.
 */
typedef void (*es_dead_letter_cb)(void *arg, es_actor_id_t to,
                                  struct es_msg *msg);

/* Options for es_runtime_new(); zero means "default" for every field. */
typedef struct es_runtime_opts {
    /* Demux threads; default: online CPUs. */
    unsigned threads;
    /* Default actor mailbox capacity (at most 2^30 - 1); default
     * ES_MAILBOX_DEFAULT. */
    unsigned mailbox_capacity;
    /* Slots in each sender-thread -> demux-thread ring (rounded up to a
     * power of two); default ES_CHANNEL_DEFAULT. */
    unsigned channel_capacity;
    /* Busy-poll this long before sleeping in epoll_wait(); default 0. */
    unsigned spin_us;
    /* Adaptive spinning before sleeping: ES_SPIN_ADAPTIVE_ON (1) makes a
     * loop whose recent idle gaps averaged at most ES_SPIN_ADAPTIVE_BOUND_US
     * poll its rings for a few times that average (at most
     * ES_SPIN_ADAPTIVE_MAX_US) before epoll_wait(); long gaps and spins
     * that found nothing turn it off, so an idle loop spins at most once
     * per idle period. ES_SPIN_ADAPTIVE_OFF (-1) never spins adaptively; 0
     * means ES_SPIN_ADAPTIVE_DEFAULT, or off when spin_us is set. On
     * together with spin_us is -EINVAL. */
    int adaptive_spin;
    /* Automatic co-location: an actor that owns no fd and gets most of its
     * messages from one actor on another thread migrates to that thread
     * (docs/design.md, "Co-location"). 0: the default (on), 1: on, -1: off
     * (actors stay where they were spawned; `shed` then does nothing). */
    int colocate;
    /* Load shedding: a thread saturated with parallel work hands consumers
     * of its busy producers to a thread that idles (docs/design.md, "Load
     * shedding"). 0: the default (ES_SHED_DEFAULT), 1: on, -1: off. */
    int shed;
    /* CPU affinity of the demux threads (docs/design.md, "CPU affinity").
     * With ncpus > 0, thread i runs only on CPU cpus[i % ncpus]; the list
     * is copied, and every CPU in it must be in the process's allowed set
     * (sched_getaffinity()), else es_runtime_new() logs which and returns
     * -EINVAL. With cpus_in_order = 1 instead, thread i runs on the
     * (i mod n)-th of the n allowed CPUs, lowest first: one thread per
     * CPU in order, as nginx's `worker_cpu_affinity auto`; `threads` then
     * defaults to the number of allowed CPUs. Both set, or
     * ncpus > 0 with cpus NULL, is -EINVAL. Default (ncpus 0 and
     * cpus_in_order 0): no pinning, threads keep the creator's mask. */
    const int *cpus;
    unsigned ncpus;
    int cpus_in_order;
    /* The IO backend of every demux thread (docs/design.md, "IO
     * backends"): ES_BACKEND_AUTO (0, the default: epoll, which measured
     * faster than io_uring's readiness polls so far), ES_BACKEND_EPOLL or
     * ES_BACKEND_IO_URING. The environment variable ES_BACKEND ("epoll",
     * "io_uring" or "auto") overrides it, so any program and the test
     * suite run on either; another value there is logged and ignored.
     * When io_uring cannot be set up (a kernel before 5.5 or without it,
     * kernel.io_uring_disabled, a seccomp filter), the runtime logs one
     * line and uses epoll; es_runtime_backend() says which runs. Any other
     * value is -EINVAL. */
    int backend;
    /* Dead-letter hook (optional); dead letters are counted either way. */
    es_dead_letter_cb dead_letter;
    void *dead_letter_arg;
} es_runtime_opts_t;

#define ES_MAILBOX_DEFAULT 1024u
#define ES_CHANNEL_DEFAULT 4096u
#define ES_SPIN_ADAPTIVE_ON 1
#define ES_SPIN_ADAPTIVE_OFF (-1)
#define ES_SPIN_ADAPTIVE_DEFAULT ES_SPIN_ADAPTIVE_ON
#define ES_SPIN_ADAPTIVE_BOUND_US 50u
#define ES_SPIN_ADAPTIVE_MAX_US 100u
#define ES_SHED_DEFAULT 1
#define ES_BACKEND_AUTO 0
#define ES_BACKEND_EPOLL 1
#define ES_BACKEND_IO_URING 2

/*
 * Creates a runtime; its threads start with es_runtime_start().
 * Returns: 0 and *out, or -EINVAL (bad option), -ENOMEM, -EMFILE.
 * Ownership: the caller owns *out and frees it with es_runtime_free().
 * Thread: any.
 */
ES_EXTERN int es_runtime_new(const es_runtime_opts_t *opts, es_runtime_t **out);

/*
 * Starts the demux threads and returns at once.
 * Returns: 0, -EALREADY if started before, or -errno from pthread_create.
 * Thread: any, once.
 */
ES_EXTERN int es_runtime_start(es_runtime_t *rt);

/*
 * Asks the runtime to stop: every actor receives ES_MSG_STOP, then the
 * demux threads exit. Returns at once; es_runtime_wait() blocks until done.
 * Returns: 0, or -EALREADY if a stop was already requested.
 * Thread: any, including demux threads and behaviours. Not signal-safe (use
 * es_runtime_stop_on_signal()).
 */
ES_EXTERN int es_runtime_stop(es_runtime_t *rt);

/*
 * Blocks until the runtime has stopped and its threads are joined, then
 * dead-letters any message still in flight.
 * Returns: 0, -EPERM from a demux thread, -EINVAL if never started.
 * Thread: any thread that is not one of the runtime's.
 */
ES_EXTERN int es_runtime_wait(es_runtime_t *rt);

/*
 * es_runtime_start() and es_runtime_wait() in one call.
 * Returns: as those two. Thread: as es_runtime_wait().
 */
ES_EXTERN int es_runtime_run(es_runtime_t *rt);

/*
 * Stops (if running), waits, and frees every byte the runtime owns,
 * dead-lettering undelivered messages. No other thread may use rt during or
 * after this call.
 * Returns: nothing. Thread: as es_runtime_wait(); NULL is ignored.
 */
ES_EXTERN void es_runtime_free(es_runtime_t *rt);

/*
 * Number of demux threads.
 * Returns: the count. Thread: any.
 */
ES_EXTERN unsigned es_runtime_threads(const es_runtime_t *rt);

/*
 * The IO backend the demux threads run: the one es_runtime_opts_t.backend
 * or ES_BACKEND chose, or epoll where io_uring could not be set up.
 * Returns: ES_BACKEND_EPOLL or ES_BACKEND_IO_URING; -EINVAL if rt is NULL.
 * Thread: any.
 */
ES_EXTERN int es_runtime_backend(const es_runtime_t *rt);

/*
 * Handle of demux thread `index`'s own actor (the loop actor), which accepts
 * ES_MSG_USER messages like any actor and ignores them. After the runtime
 * stopped the handle is stale (sends get -ESRCH).
 * Returns: the handle, or ES_ACTOR_NONE if index is out of range.
 * Thread: any.
 */
ES_EXTERN es_actor_id_t es_runtime_loop_actor(const es_runtime_t *rt,
                                              unsigned index);

/*
 * Index of the calling demux thread of rt.
 * Returns: 0..threads-1, or -EPERM when called from any other thread.
 * Thread: any.
 */
ES_EXTERN int es_runtime_current_loop(const es_runtime_t *rt);

/* Counters of one demux thread (or of all threads, see es_runtime_stats()). */
typedef struct es_stats {
    uint64_t msgs_sent;     /* messages accepted by es_send() on this thread */
    uint64_t msgs_received; /* messages delivered to a behaviour here */
    uint64_t dead_letters;  /* messages whose target had stopped */
    uint64_t mailbox_full;  /* foreign sends refused with -EAGAIN */
    uint64_t
        wakeups_written;    /* bytes written to a sleeping loop's socketpair */
    uint64_t wakeups_saved; /* cross-thread sends that needed no wakeup */
    uint64_t timers_fired;  /* ES_MSG_TIMER messages delivered */
    uint64_t actors;        /* actors living on this thread now */
    uint64_t loop_turns;    /* iterations of the demux loop */
    uint64_t sleeps;        /* times the loop blocked in epoll_wait() */
    uint64_t mutes;         /* actors paused because a receiver was full */
    uint64_t overflowed;    /* messages that waited in the sender's loop for
                               room in a full ring to another loop */
    uint64_t migrations;    /* actors that moved to another thread */
    uint64_t shed;          /* of those, moved off a saturated thread to an
                               idle one (load shedding) */
    /* Whole runtime only (index -1; 0 for one thread): */
    uint64_t monitors;           /* monitors set now (es_monitor()) */
    uint64_t links;              /* links between two live actors now */
    uint64_t downs;              /* ES_MSG_DOWN messages sent */
    uint64_t names;              /* names registered now (es_register()) */
    uint64_t late_replies;       /* replies dropped: their request had an
                                    outcome already (es_reply()) */
    uint64_t requests_timed_out; /* requests failed with -ETIMEDOUT */
} es_stats_t;

/* One live actor in es_runtime_actors()'s snapshot. */
typedef struct es_actor_info {
    es_actor_id_t id;
    const char *name; /* one of its names (valid during the callback), or
                         NULL */
    int loop;         /* its home demux thread */
    uint32_t mailbox; /* user messages queued for it, not yet handled */
    uint64_t handled; /* user messages handled (a 32-bit counter: modulo
                         2^32) */
    /* Time in its behaviour, estimated: a loop times one behaviour call in
     * ES_PROF_EVERY and counts it ES_PROF_EVERY times. */
    uint64_t busy_ns;
} es_actor_info_t;

#define ES_PROF_EVERY 64u

/* Called once per actor; return nonzero to stop the walk. */
typedef int (*es_actor_info_cb)(void *arg, const es_actor_info_t *info);

/*
 * A snapshot of the live actors (loop actors excluded): cb runs for each,
 * after the snapshot was taken, on the calling thread, and may call into
 * the runtime. The figures of one actor are read at slightly different
 * moments while it keeps running.
 * Returns: how many times cb ran; -EINVAL (rt or cb NULL); -ENOMEM.
 * Thread: any.
 */
ES_EXTERN int es_runtime_actors(es_runtime_t *rt, es_actor_info_cb cb,
                                void *arg);

/*
 * Reads the counters of demux thread `index`, or with index -1 the sum of all
 * threads plus the senders that are not demux threads.
 * Returns: 0, or -EINVAL if index is out of range. Counters are read
 * without stopping the threads, so a running total is a close snapshot.
 * Thread: any.
 */
ES_EXTERN int es_runtime_stats(const es_runtime_t *rt, int index,
                               es_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_RUNTIME_H */
