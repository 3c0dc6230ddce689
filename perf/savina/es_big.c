/* SPDX-License-Identifier: MIT */
/*
 * Savina big on EventServer: SAVINA_BIG_ACTORS actors each send n pings,
 * one at a time, to neighbours drawn by savina_big_pick(); every ping is
 * answered by a pong, which triggers the next ping. An actor reports the sum
 * of the neighbours it drew after its n-th pong. check = the sum over all
 * actors (savina_big_expected()). --placed: actor i on loop i mod threads,
 * the driver on loop 0. --request: a ping is an es_request() and its pong
 * the es_reply() (issue 10: the waiting programs on request/reply, at no
 * loss); a request that gets no answer fails the run.
 */
#include "es_common.h"

enum { GO = ES_MSG_USER, PING, PONG, DONE };

/* One cache line each: neighbours may live on different threads, and
 * state that shares a line would bounce between them on every message (a
 * runtime allocates each actor's state apart; so do CAF and the others). */
struct member {
    _Alignas(64) uint64_t index;
    uint64_t rng;
    uint64_t left;
    uint64_t sum;
    es_actor_id_t driver;
};

struct driver {
    unsigned finished;
    uint64_t sum;
};

static struct member members[SAVINA_BIG_ACTORS];
/* Written by main before the driver is spawned; the driver's GO orders it
 * before every read. */
static es_actor_id_t member_ids[SAVINA_BIG_ACTORS];

static void ping_next(es_actor_t *self, struct member *m)
{
    uint64_t to = savina_big_pick(&m->rng, m->index, SAVINA_BIG_ACTORS);
    m->sum += to;
    if (es_bench.args.request)
        es_bench_request(self, member_ids[to], PING, 0, 0);
    else
        es_bench_send3(member_ids[to], PING, 0, 0, 0);
}

static void pong(es_actor_t *self, struct member *m)
{
    if (--m->left == 0)
        es_bench_send3(m->driver, DONE, m->sum, 0, 0);
    else
        ping_next(self, m);
}

static int member_cb(es_actor_t *self, es_msg_t *msg)
{
    struct member *m = es_actor_state(self);
    switch (msg->type) {
    case GO:
        m->driver = msg->from;
        ping_next(self, m);
        break;
    case PING:
        if (es_bench.args.request)
            es_bench_reply(self, msg, 0, 0);
        else
            es_bench_send3(msg->from, PONG, 0, 0, 0);
        break;
    case PONG:
    case ES_MSG_REPLY:
        pong(self, m);
        break;
    case ES_MSG_REQUEST_FAILED:
        es_bench_request_failed(msg);
        break;
    }
    return 0;
}

static int driver_cb(es_actor_t *self, es_msg_t *msg)
{
    struct driver *d = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        for (unsigned i = 0; i < SAVINA_BIG_ACTORS; i++)
            es_bench_send3(member_ids[i], GO, 0, 0, 0);
        break;
    case DONE:
        d->sum += msg->inl.u64[0];
        if (++d->finished == SAVINA_BIG_ACTORS)
            es_bench_finish(d->sum);
        break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "big", 20000) < 0)
        return 2;
    uint64_t n = es_bench.args.n;
    int placed = es_bench.args.placed;
    for (unsigned i = 0; i < SAVINA_BIG_ACTORS; i++) {
        members[i] = (struct member){.index = i, .rng = i, .left = n};
        member_ids[i] = es_bench_spawn(member_cb, &members[i], NULL,
                                       placed ? es_bench_spread(i) : 0);
    }
    static struct driver driver;
    es_bench_spawn(driver_cb, &driver, NULL, placed ? ES_LOOP(0) : 0);
    int rc = es_bench_end(savina_big_expected(SAVINA_BIG_ACTORS, n));
    return rc;
}
