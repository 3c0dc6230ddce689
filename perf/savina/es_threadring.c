/* SPDX-License-Identifier: MIT */
/*
 * Savina threadring on EventServer: SAVINA_RING_ACTORS actors in a ring
 * pass one token n times; the actor that gets it with no hop left ends the
 * benchmark. check = the hops the token counted (0 if it ended at the wrong
 * actor). --placed: the whole ring on loop 0 (one token, no parallelism).
 */
#include "es_common.h"

enum { TOKEN = ES_MSG_USER };

/* Written by main before the first token is sent; the sends order it
 * before every read. */
static es_actor_id_t ring[SAVINA_RING_ACTORS];
static uint64_t index_of[SAVINA_RING_ACTORS];

static int member_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != TOKEN)
        return 0;
    uint64_t i = *(uint64_t *)es_actor_state(self);
    uint64_t left = msg->inl.u64[0], hops = msg->inl.u64[1];
    if (left == 0) {
        int here = i == es_bench.args.n % SAVINA_RING_ACTORS;
        es_bench_finish(here ? hops : 0);
        return 0;
    }
    es_bench_send3(ring[(i + 1) % SAVINA_RING_ACTORS], TOKEN, left - 1,
                   hops + 1, 0);
    return 0;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "threadring", 2000000) < 0)
        return 2;
    int loop = es_bench.args.placed ? ES_LOOP(0) : 0;
    for (uint64_t i = 0; i < SAVINA_RING_ACTORS; i++) {
        index_of[i] = i;
        ring[i] = es_bench_spawn(member_cb, &index_of[i], NULL, loop);
    }
    es_bench_send3(ring[0], TOKEN, es_bench.args.n, 0, 0);
    return es_bench_end(es_bench.args.n);
}
