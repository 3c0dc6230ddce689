/* SPDX-License-Identifier: MIT */
/*
 * Savina fork-join throughput on EventServer: a driver sends n messages to
 * each of SAVINA_FJ_ACTORS workers, round by round; each message costs one
 * savina_work(); a worker reports to the driver after its n-th. check = the
 * messages the workers handled. --placed: workers spread over the loops
 * (worker i on loop i mod threads), the driver on loop 0.
 *
 * The driver sends one round per call, with a message to itself between
 * rounds (the streaming idiom of actor.h), so muting keeps it within the
 * workers' mailbox limits instead of one call queueing all n rounds.
 */
#include "es_common.h"

#include <math.h>

enum { WORK = ES_MSG_USER, DONE, NEXT };

/* One cache line each: neighbours may live on different threads, and
 * state that shares a line would bounce between them on every message (a
 * runtime allocates each actor's state apart; so do CAF and the others). */
struct worker {
    _Alignas(64) uint64_t count;
    double acc;
};

struct driver {
    uint64_t round;
    uint64_t handled;
    unsigned finished;
    double acc;
};

static struct worker workers[SAVINA_FJ_ACTORS];
static es_actor_id_t worker_ids[SAVINA_FJ_ACTORS];

static int worker_cb(es_actor_t *self, es_msg_t *msg)
{
    struct worker *w = es_actor_state(self);
    if (msg->type != WORK)
        return 0;
    w->acc += savina_work(msg->inl.u64[0]);
    if (++w->count == es_bench.args.n) {
        es_msg_t done = es_msg_u64(DONE, w->count);
        memcpy(&done.inl.u64[1], &w->acc, sizeof(w->acc));
        es_bench_send(msg->from, &done);
    }
    return 0;
}

static int driver_cb(es_actor_t *self, es_msg_t *msg)
{
    struct driver *d = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
    case NEXT:
        for (unsigned k = 0; k < SAVINA_FJ_ACTORS; k++)
            es_bench_send3(worker_ids[k], WORK, d->round, 0, 0);
        if (++d->round < es_bench.args.n)
            es_bench_send3(es_actor_self(self), NEXT, 0, 0, 0);
        break;
    case DONE: {
        double acc;
        memcpy(&acc, &msg->inl.u64[1], sizeof(acc));
        d->handled += msg->inl.u64[0];
        d->acc += acc;
        if (++d->finished == SAVINA_FJ_ACTORS)
            es_bench_finish(isfinite(d->acc) ? d->handled : 0);
        break;
    }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "fjthroughput", 20000) < 0)
        return 2;
    int placed = es_bench.args.placed;
    for (unsigned k = 0; k < SAVINA_FJ_ACTORS; k++)
        worker_ids[k] = es_bench_spawn(worker_cb, &workers[k], NULL,
                                       placed ? es_bench_spread(k) : 0);
    static struct driver driver;
    es_bench_spawn(driver_cb, &driver, NULL, placed ? ES_LOOP(0) : 0);
    return es_bench_end(es_bench.args.n * SAVINA_FJ_ACTORS);
}
