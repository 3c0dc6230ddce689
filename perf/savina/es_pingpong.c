/* SPDX-License-Identifier: MIT */
/*
 * Savina pingpong on EventServer: ping sends a ping, pong answers each with
 * a pong, n round trips one after another. check = the pongs ping got.
 * --placed: both actors on loop 0; --placed --split: ping on loop 0, pong
 * on loop 1 (the cross-thread round trip). --request: a ping is an
 * es_request() and its pong the es_reply() (issue 10); a request that gets
 * no answer fails the run.
 */
#include "es_common.h"

enum { PING = ES_MSG_USER, PONG };

struct ping {
    es_actor_id_t pong;
    uint64_t got;
};

static void ping_send(es_actor_t *self, struct ping *p)
{
    if (es_bench.args.request)
        es_bench_request(self, p->pong, PING, 0, 0);
    else
        es_bench_send3(p->pong, PING, 0, 0, 0);
}

static int ping_cb(es_actor_t *self, es_msg_t *msg)
{
    struct ping *p = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        ping_send(self, p);
        break;
    case PONG:
    case ES_MSG_REPLY:
        if (++p->got == es_bench.args.n)
            es_bench_finish(p->got);
        else
            ping_send(self, p);
        break;
    case ES_MSG_REQUEST_FAILED:
        es_bench_request_failed(msg);
        break;
    }
    return 0;
}

static int pong_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != PING)
        return 0;
    if (es_bench.args.request)
        es_bench_reply(self, msg, 0, 0);
    else
        es_bench_send3(msg->from, PONG, 0, 0, 0);
    return 0;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "pingpong", 500000) < 0)
        return 2;
    const struct savina_args *a = &es_bench.args;
    int ping_loop = a->placed || a->split ? ES_LOOP(0) : 0;
    int pong_loop = a->split ? ES_LOOP(1 % (int)a->threads) : ping_loop;
    static struct ping ping;
    ping.pong = es_bench_spawn(pong_cb, NULL, NULL, pong_loop);
    es_bench_spawn(ping_cb, &ping, NULL, ping_loop);
    return es_bench_end(a->n);
}
