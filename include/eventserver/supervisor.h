/* SPDX-License-Identifier: MIT */
/*
 * Supervisors: an actor that starts an ordered list of children, watches
 * them (es_monitor()), and restarts what stops, in the manner of Erlang/OTP.
 *
 * - Each child has a restart type: permanent (always restarted), transient
 *   (restarted only after an abnormal stop, a reason other than 0 and
 *   -ESHUTDOWN) or temporary (never restarted).
 * - Strategies: one-for-one restarts the child that stopped; one-for-all
 *   stops the others (in reverse order) and restarts them all in order;
 *   rest-for-one stops and restarts the children started after it.
 * - Intensity: more than max_restarts restarts within period_ms and the
 *   supervisor gives up: it stops its children in reverse order and then
 *   stops itself with reason ES_SUPERVISOR_GAVE_UP, which its own
 *   supervisor, a monitor or a link sees.
 * - A child spec may name the child: the name is registered (es_register())
 *   each time the child starts, before the supervisor handles anything
 *   else, so the new child is reachable by name before any later message is
 *   handled; the runtime releases it when the child stops.
 * - Supervisors nest: es_supervisor_child() makes a spec that starts a
 *   supervisor as a child.
 * docs/design.md ("Supervisors") has the details.
 */
#ifndef EVENTSERVER_SUPERVISOR_H
#define EVENTSERVER_SUPERVISOR_H

#include <eventserver/actor.h>

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The reason a supervisor stops with when restarts exceed its intensity. */
#define ES_SUPERVISOR_GAVE_UP (-ELOOP)

typedef enum es_restart {
    ES_RESTART_PERMANENT = 0,
    ES_RESTART_TRANSIENT,
    ES_RESTART_TEMPORARY,
} es_restart_t;

typedef enum es_strategy {
    ES_ONE_FOR_ONE = 0,
    ES_ONE_FOR_ALL,
    ES_REST_FOR_ONE,
} es_strategy_t;

/*
 * Makes the state of a child for one start (each restart gets a new one).
 * Returns: 0 and *state, or a negative errno (the start fails).
 * Thread: the supervisor's demux thread.
 */
typedef int (*es_child_init_cb)(void *arg, void **state);

struct es_supervisor_opts;

/* One child. spawn.state is ignored: init makes the state (NULL init: the
 * state is spawn.state's value, shared by every start). */
typedef struct es_child_spec {
    es_spawn_opts_t spawn; /* behaviour, state_free, placement, mailbox */
    es_child_init_cb init; /* or NULL */
    void *init_arg;        /* handed to init */
    const char *name;      /* registered at each start, or NULL */
    es_restart_t restart;
    /* Set by es_supervisor_child(): this child is a supervisor. */
    const struct es_supervisor_opts *supervisor;
} es_child_spec_t;

typedef struct es_supervisor_opts {
    es_strategy_t strategy;
    const es_child_spec_t *children; /* started in this order */
    unsigned nchildren;
    /* Intensity: at most max_restarts restarts within period_ms; 0 and 0
     * mean 3 within 5000 ms. */
    unsigned max_restarts;
    unsigned period_ms;
    const char *name; /* the supervisor's own name, or NULL */
    int loop;         /* its thread: ES_LOOP_ANY or ES_LOOP(i) */
} es_supervisor_opts_t;

/*
 * Spawns a supervisor, which starts its children in order as soon as it
 * runs. If a child cannot be started (init or es_spawn fails, or its name
 * is taken) the supervisor stops the children it started, in reverse
 * order, and stops with that error.
 * Returns: 0 and *out; -EINVAL (no children, a child without a behaviour);
 * -ENOMEM; -EEXIST (its own name is taken); as es_spawn() otherwise.
 * Ownership: opts and everything it points to (names, nested supervisor
 * options) are copied; init_arg and spawn.state pointers are kept as they
 * are.
 * Thread: any.
 */
ES_EXTERN int es_supervisor_spawn(es_runtime_t *rt,
                                  const es_supervisor_opts_t *opts,
                                  es_actor_id_t *out);

/*
 * Fills *spec so that the child is a supervisor with options *opts (copied
 * when the parent is spawned). restart defaults to permanent; the caller
 * may change it and the name.
 * Returns: nothing. Thread: any.
 */
ES_EXTERN void es_supervisor_child(es_child_spec_t *spec,
                                   const es_supervisor_opts_t *opts);

/*
 * Shuts supervisor `sup` down in order: its children stop one by one in
 * reverse start order (a child supervisor shuts its own children down
 * first), then the supervisor stops with reason 0. (es_stop() on a
 * supervisor, or es_runtime_stop(), stops its children at once, in no
 * particular order.)
 * Returns: as es_stop(). Thread: any.
 */
ES_EXTERN int es_supervisor_stop(es_runtime_t *rt, es_actor_id_t sup);

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_SUPERVISOR_H */
