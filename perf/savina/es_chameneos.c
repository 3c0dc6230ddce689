/* SPDX-License-Identifier: MIT */
/*
 * Savina chameneos on EventServer: SAVINA_CHAMENEOS creatures ask one mall
 * for meetings; the mall pairs two askers, the first learns the second's
 * colour, both take the complement colour and ask again; after n meetings
 * the mall sends every asker home and sums the meetings they report.
 * check = that sum (2n). --placed: the mall and all creatures on loop 0.
 */
#include "es_common.h"

enum { MEET = ES_MSG_USER, MATE, CHANGE, EXIT, COUNT };

struct mall {
    uint64_t left;
    es_actor_id_t waiting;
    uint64_t waiting_colour;
    unsigned exited;
    uint64_t meetings;
};

/* One cache line each, as in es_big.c. */
struct creature {
    _Alignas(64) es_actor_id_t mall;
    uint64_t colour; /* 0, 1 or 2 */
    uint64_t meetings;
};

static uint64_t complement(uint64_t a, uint64_t b)
{
    return a == b ? a : 3 - a - b;
}

static int mall_cb(es_actor_t *self, es_msg_t *msg)
{
    struct mall *m = es_actor_state(self);
    switch (msg->type) {
    case MEET:
        if (m->left == 0) {
            es_bench_send3(msg->from, EXIT, 0, 0, 0);
        } else if (m->waiting == ES_ACTOR_NONE) {
            m->waiting = msg->from;
            m->waiting_colour = msg->inl.u64[0];
        } else {
            m->left--;
            es_bench_send3(m->waiting, MATE, msg->inl.u64[0], msg->from, 0);
            m->waiting = ES_ACTOR_NONE;
        }
        break;
    case COUNT:
        m->meetings += msg->inl.u64[0];
        if (++m->exited == SAVINA_CHAMENEOS)
            es_bench_finish(m->meetings);
        break;
    }
    return 0;
}

static int creature_cb(es_actor_t *self, es_msg_t *msg)
{
    struct creature *c = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        break;
    case MATE:
        c->colour = complement(c->colour, msg->inl.u64[0]);
        c->meetings++;
        es_bench_send3(msg->inl.u64[1], CHANGE, c->colour, 0, 0);
        break;
    case CHANGE:
        c->colour = msg->inl.u64[0];
        c->meetings++;
        break;
    case EXIT:
        es_bench_send3(c->mall, COUNT, c->meetings, 0, 0);
        es_actor_stop(self);
        return 0;
    default:
        return 0;
    }
    es_bench_send3(c->mall, MEET, c->colour, 0, 0);
    return 0;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "chameneos", 200000) < 0)
        return 2;
    int loop = es_bench.args.placed ? ES_LOOP(0) : 0;
    static struct mall mall;
    static struct creature creatures[SAVINA_CHAMENEOS];
    mall.left = es_bench.args.n;
    es_actor_id_t mall_id = es_bench_spawn(mall_cb, &mall, NULL, loop);
    for (unsigned i = 0; i < SAVINA_CHAMENEOS; i++) {
        creatures[i] = (struct creature){.mall = mall_id, .colour = i % 3};
        es_bench_spawn(creature_cb, &creatures[i], NULL, loop);
    }
    return es_bench_end(2 * es_bench.args.n);
}
