/* SPDX-License-Identifier: MIT */
/*
 * Savina chameneos on EventServer: SAVINA_CHAMENEOS creatures ask one mall
 * for meetings; the mall pairs two askers, the first learns the second's
 * colour, both take the complement colour and ask again; after n meetings
 * the mall sends every asker home and sums the meetings they report.
 * check = that sum (2n). --placed: the mall and all creatures on loop 0.
 *
 * --request (issue 10): asking for a meeting is an es_request(). The mall
 * keeps the first asker's reply token (es_reply_token()) until a partner
 * comes, then answers both, the kept one with es_reply_to(), the partner
 * with es_reply(); each answer carries the colour both take (so no CHANGE
 * goes between the two), or says go home. A request that gets no answer
 * fails the run. Same meetings, same check.
 */
#include "es_common.h"

enum { MEET = ES_MSG_USER, MATE, CHANGE, EXIT, COUNT };

/* What a --request answer says in inl.u64[0]; the colour is in [1]. */
enum { ANSWER_MATE, ANSWER_EXIT };

struct mall {
    uint64_t left;
    es_actor_id_t waiting;
    uint64_t waiting_colour;
    es_reply_token_t waiting_tok; /* --request: the waiting asker's */
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

/* --request: a meeting asked for by es_request(). */
static void mall_meet_request(es_actor_t *self, struct mall *m,
                              const es_msg_t *msg)
{
    if (m->left == 0) {
        es_bench_reply(self, msg, ANSWER_EXIT, 0);
    } else if (m->waiting == ES_ACTOR_NONE) {
        int rc = es_reply_token(self, msg, &m->waiting_tok);
        if (rc) {
            es_bench_fail("es_reply_token", rc);
            return;
        }
        m->waiting = msg->from;
        m->waiting_colour = msg->inl.u64[0];
    } else {
        m->left--;
        uint64_t colour = complement(m->waiting_colour, msg->inl.u64[0]);
        es_msg_t mate = es_msg_make(0);
        mate.inl.u64[0] = ANSWER_MATE;
        mate.inl.u64[1] = colour;
        mate.len = ES_MSG_REQUEST_INLINE;
        int rc = es_reply_to(es_bench.rt, &m->waiting_tok, &mate);
        if (rc)
            es_bench_fail("es_reply_to", rc);
        es_bench_reply(self, msg, ANSWER_MATE, colour);
        m->waiting = ES_ACTOR_NONE;
    }
}

static int mall_cb(es_actor_t *self, es_msg_t *msg)
{
    struct mall *m = es_actor_state(self);
    switch (msg->type) {
    case MEET:
        if (es_bench.args.request) {
            mall_meet_request(self, m, msg);
        } else if (m->left == 0) {
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

/* Reports the creature's meetings to the mall and stops it. */
static int go_home(es_actor_t *self, struct creature *c)
{
    es_bench_send3(c->mall, COUNT, c->meetings, 0, 0);
    es_actor_stop(self);
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
    case ES_MSG_REPLY:
        if (msg->inl.u64[0] == ANSWER_EXIT)
            return go_home(self, c);
        c->colour = msg->inl.u64[1];
        c->meetings++;
        break;
    case ES_MSG_REQUEST_FAILED:
        es_bench_request_failed(msg);
        return 0;
    case EXIT:
        return go_home(self, c);
    default:
        return 0;
    }
    if (es_bench.args.request)
        es_bench_request(self, c->mall, MEET, c->colour, 0);
    else
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
