/* SPDX-License-Identifier: MIT */
/*
 * The EventServer side of the Savina benchmarks: one runtime per process,
 * spawn and send helpers that treat any failure as fatal (a behaviour's
 * send never fails for capacity in the programming model these benchmarks
 * are written to, so they contain no retry path), and the hand-off that
 * lets the benchmark's last behaviour stop the clock and wake main.
 */
#ifndef SAVINA_ES_COMMON_H
#define SAVINA_ES_COMMON_H

#include "savina_common.h"

#include <eventserver/eventserver.h>

/* The benchmark's runtime and result, one per process. */
struct es_bench {
    es_runtime_t *rt;
    struct savina_args args;
    struct savina_clock clock;
    const char *name;
};

extern struct es_bench es_bench;

/* Parses the command line, creates and starts the runtime with
 * args.threads demux threads, then starts the clock.
 * Returns: 0, or -1 after printing why. */
int es_bench_init(int argc, char **argv, const char *name, uint64_t default_n);

/* Spawns an actor at `loop` (0: default placement, else ES_LOOP(i)) and
 * returns its handle; aborts on failure. Thread: any. */
es_actor_id_t es_bench_spawn(es_behaviour_cb behaviour, void *state,
                             es_state_free_cb state_free, int loop);

/* Sends msg (from main(): waiting for room); aborts on failure.
 * Thread: any. */
void es_bench_send(es_actor_id_t to, const es_msg_t *msg);

/* Sends a message of `type` carrying up to three values. */
void es_bench_send3(es_actor_id_t to, uint32_t type, uint64_t a, uint64_t b,
                    uint64_t c);

/* es_request() with no deadline of a message of `type` carrying two values
 * (a request has room for ES_MSG_REQUEST_INLINE inline bytes); aborts on
 * failure, as es_bench_send(). Thread: self's behaviour. */
void es_bench_request(es_actor_t *self, es_actor_id_t to, uint32_t type,
                      uint64_t a, uint64_t b);

/* es_reply() to `request`, the message self is handling, carrying two
 * values; aborts on failure. Thread: self's behaviour. */
void es_bench_reply(es_actor_t *self, const es_msg_t *request, uint64_t a,
                    uint64_t b);

/* Stops the clock with the result and wakes main. Thread: any, once (a
 * call after es_bench_fail() is ignored). */
void es_bench_finish(uint64_t check);

/* Ends the run as failed (`what` went wrong with `reason`, a negative
 * errno): es_bench_end() then prints why and returns 1. The --request
 * modes call it on ES_MSG_REQUEST_FAILED, so a request left unanswered
 * fails the run at once instead of leaving it waiting. Thread: any; only
 * the first of es_bench_finish() and es_bench_fail() counts. */
void es_bench_fail(const char *what, int reason);

/* es_bench_fail() for an ES_MSG_REQUEST_FAILED message. */
static inline void es_bench_request_failed(const es_msg_t *msg)
{
    es_bench_fail("request failed", es_msg_reason(msg));
}

/* Waits for es_bench_finish(), frees the runtime, prints the result line.
 * Returns: the exit status (0 only if the check equals expected). */
int es_bench_end(uint64_t expected);

/* The loop a placed actor numbered i of a group spread over all loops
 * takes. */
static inline int es_bench_spread(uint64_t i)
{
    return ES_LOOP((int)(i % es_bench.args.threads));
}

#endif /* SAVINA_ES_COMMON_H */
