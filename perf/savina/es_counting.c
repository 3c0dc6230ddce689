/* SPDX-License-Identifier: MIT */
/*
 * Savina counting on EventServer: a producer sends n increments to a
 * counter, then asks for the count and checks it. check = the count.
 * --placed: both on loop 0.
 */
#include "es_common.h"

enum { INC = ES_MSG_USER, GET, COUNT };

static int producer_cb(es_actor_t *self, es_msg_t *msg)
{
    es_actor_id_t counter = *(es_actor_id_t *)es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        for (uint64_t i = 0; i < es_bench.args.n; i++)
            es_bench_send3(counter, INC, 0, 0, 0);
        es_bench_send3(counter, GET, 0, 0, 0);
        break;
    case COUNT:
        es_bench_finish(msg->inl.u64[0]);
        break;
    }
    return 0;
}

static int counter_cb(es_actor_t *self, es_msg_t *msg)
{
    uint64_t *count = es_actor_state(self);
    switch (msg->type) {
    case INC:
        (*count)++;
        break;
    case GET:
        es_bench_send3(msg->from, COUNT, *count, 0, 0);
        break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "counting", 2000000) < 0)
        return 2;
    int loop = es_bench.args.placed ? ES_LOOP(0) : 0;
    static uint64_t count;
    static es_actor_id_t counter;
    counter = es_bench_spawn(counter_cb, &count, NULL, loop);
    es_bench_spawn(producer_cb, &counter, NULL, loop);
    return es_bench_end(es_bench.args.n);
}
