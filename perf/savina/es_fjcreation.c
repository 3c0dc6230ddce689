/* SPDX-License-Identifier: MIT */
/*
 * Savina fork-join creation on EventServer: a driver spawns n workers and
 * sends each one message; a worker does one savina_work(), answers and
 * stops. check = the answers the driver got. --placed: workers spread over
 * the loops (worker i on loop i mod threads), the driver on loop 0.
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
            es_bench_send3(w, WORK, i, 0, 0);
        }
        break;
    case DONE: {
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
