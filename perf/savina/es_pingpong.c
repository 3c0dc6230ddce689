/* SPDX-License-Identifier: MIT */
/*
 * Savina pingpong on EventServer: ping sends a ping, pong answers each with
 * a pong, n round trips one after another. check = the pongs ping got.
 * --placed: both actors on loop 0; --placed --split: ping on loop 0, pong
 * on loop 1 (the cross-thread round trip).
 */
#include "es_common.h"

enum { PING = ES_MSG_USER, PONG };

struct ping {
    es_actor_id_t pong;
    uint64_t got;
};

static int ping_cb(es_actor_t *self, es_msg_t *msg)
{
    struct ping *p = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        es_bench_send3(p->pong, PING, 0, 0, 0);
        break;
    case PONG:
        if (++p->got == es_bench.args.n)
            es_bench_finish(p->got);
        else
            es_bench_send3(p->pong, PING, 0, 0, 0);
        break;
    }
    return 0;
}

static int pong_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type == PING)
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
