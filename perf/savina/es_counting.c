/* SPDX-License-Identifier: MIT */
/*
 * Savina counting on EventServer: a producer sends n increments to a
 * counter, then asks for the count and checks it. check = the count.
 * --placed: both on loop 0. --request: the question for the count is an
 * es_request() and the count its es_reply() (issue 10); a request that gets
 * no answer fails the run.
 *
 * The producer streams in chunks of CHUNK with a message to itself between
 * them, as actor.h tells a streaming behaviour to: its sends never fail,
 * and muting then holds it within the counter's mailbox limit instead of
 * one call queueing all n increments.
 */
#include "es_common.h"

enum { INC = ES_MSG_USER, GET, COUNT, NEXT };

#define CHUNK 256u

struct producer {
    es_actor_id_t counter;
    uint64_t sent;
};

static int producer_cb(es_actor_t *self, es_msg_t *msg)
{
    struct producer *p = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
    case NEXT:
        for (unsigned i = 0; i < CHUNK && p->sent < es_bench.args.n;
             i++, p->sent++)
            es_bench_send3(p->counter, INC, 0, 0, 0);
        if (p->sent < es_bench.args.n)
            es_bench_send3(es_actor_self(self), NEXT, 0, 0, 0);
        else if (es_bench.args.request)
            es_bench_request(self, p->counter, GET, 0, 0);
        else
            es_bench_send3(p->counter, GET, 0, 0, 0);
        break;
    case COUNT:
    case ES_MSG_REPLY:
        es_bench_finish(msg->inl.u64[0]);
        break;
    case ES_MSG_REQUEST_FAILED:
        es_bench_request_failed(msg);
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
        if (es_bench.args.request)
            es_bench_reply(self, msg, *count, 0);
        else
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
    /* Apart, as in es_big.c: the two may run on different threads. */
    static _Alignas(64) uint64_t count;
    static _Alignas(64) struct producer producer;
    producer.counter = es_bench_spawn(counter_cb, &count, NULL, loop);
    es_bench_spawn(producer_cb, &producer, NULL, loop);
    return es_bench_end(es_bench.args.n);
}
