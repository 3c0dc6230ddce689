/* SPDX-License-Identifier: MIT */
/*
 * Savina fork-join creation on EventServer: a driver spawns n workers and
 * sends each one message; a worker does one savina_work(), answers and
 * stops. check = the answers the driver got. --placed: workers spread over
 * the loops (worker i on loop i mod threads), the driver on loop 0.
 * --request (issue 10): the driver's message is an es_request() and the
 * worker's answer its es_reply(); a request that gets no answer fails the
 * run.
 */
#include "es_common.h"

#include <math.h>

enum { WORK = ES_MSG_USER, DONE };

struct driver {
    uint64_t answers;
    double acc;
};

static int worker_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != WORK)
        return 0;
    double r = savina_work(msg->inl.u64[0]);
    es_msg_t done = es_msg_make(DONE);
    memcpy(&done.inl.u64[0], &r, sizeof(r));
    if (es_bench.args.request)
        es_bench_reply(self, msg, done.inl.u64[0], 0);
    else
        es_bench_send(msg->from, &done);
    es_actor_stop(self);
    return 0;
}

static int driver_cb(es_actor_t *self, es_msg_t *msg)
{
    struct driver *d = es_actor_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        for (uint64_t i = 0; i < es_bench.args.n; i++) {
            int loop = es_bench.args.placed ? es_bench_spread(i) : 0;
            es_actor_id_t w = es_bench_spawn(worker_cb, NULL, NULL, loop);
            if (es_bench.args.request)
                es_bench_request(self, w, WORK, i, 0);
            else
                es_bench_send3(w, WORK, i, 0, 0);
        }
        break;
    case ES_MSG_REQUEST_FAILED:
        es_bench_request_failed(msg);
        break;
    case DONE:
    case ES_MSG_REPLY: {
        double r;
        memcpy(&r, &msg->inl.u64[0], sizeof(r));
        d->acc += r;
        if (++d->answers == es_bench.args.n)
            es_bench_finish(isfinite(d->acc) ? d->answers : 0);
        break;
    }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "fjcreation", 200000) < 0)
        return 2;
    static struct driver driver;
    es_bench_spawn(driver_cb, &driver, NULL,
                   es_bench.args.placed ? ES_LOOP(0) : 0);
    return es_bench_end(es_bench.args.n);
}
