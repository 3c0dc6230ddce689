/* SPDX-License-Identifier: MIT */
/*
 * The EventServer side of the Savina benchmarks (see es_common.h).
 */
#include "es_common.h"

#include <errno.h>
#include <stdlib.h>
#include <pthread.h>

struct es_bench es_bench;

static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int done;
static uint64_t done_check;
static int done_failed; /* es_bench_fail(): the reason, else 0 */
static const char *done_what;

int es_bench_init(int argc, char **argv, const char *name, uint64_t default_n)
{
    struct es_bench *b = &es_bench;
    b->name = name;
    if (savina_parse(argc, argv, default_n, &b->args) < 0)
        return -1;
    es_runtime_opts_t opts = {0};
    opts.threads = b->args.threads;
    /* run.sh measures the cross-thread round trip with adaptive spinning
     * on and off: SAVINA_ES_SPIN=1 or -1 (es_runtime_opts_t.adaptive_spin). */
    const char *spin = getenv("SAVINA_ES_SPIN");
    if (spin)
        opts.adaptive_spin = atoi(spin);
    /* SAVINA_ES_SHED=1 or -1: load shedding on or off
     * (es_runtime_opts_t.shed), to compare the two. */
    const char *shed = getenv("SAVINA_ES_SHED");
    if (shed)
        opts.shed = atoi(shed);
    /* Hand-placed means pinned: nothing moves by itself. */
    if (b->args.placed)
        opts.colocate = -1;
    int rc = es_runtime_new(&opts, &b->rt);
    if (rc == 0)
        rc = es_runtime_start(b->rt);
    if (rc) {
        fprintf(stderr, "%s: runtime: %s\n", name, es_strerror(rc));
        return -1;
    }
    savina_clock_start(&b->clock);
    return 0;
}

es_actor_id_t es_bench_spawn(es_behaviour_cb behaviour, void *state,
                             es_state_free_cb state_free, int loop)
{
    es_spawn_opts_t opts = {0};
    opts.behaviour = behaviour;
    opts.state = state;
    opts.state_free = state_free;
    opts.loop = loop;
    es_actor_id_t id;
    int rc = es_spawn(es_bench.rt, &opts, &id);
    if (rc) {
        fprintf(stderr, "%s: es_spawn: %s\n", es_bench.name, es_strerror(rc));
        abort();
    }
    return id;
}

void es_bench_send(es_actor_id_t to, const es_msg_t *msg)
{
    /* A behaviour's send never fails for capacity; main() waits for room. */
    int rc = es_runtime_current_loop(es_bench.rt) >= 0
                 ? es_send(es_bench.rt, to, msg)
                 : es_send_wait(es_bench.rt, to, msg, -1);
    if (rc) {
        fprintf(stderr, "%s: es_send: %s\n", es_bench.name, es_strerror(rc));
        abort();
    }
}

void es_bench_send3(es_actor_id_t to, uint32_t type, uint64_t a, uint64_t b,
                    uint64_t c)
{
    es_msg_t m = es_msg_make(type);
    m.inl.u64[0] = a;
    m.inl.u64[1] = b;
    m.inl.u64[2] = c;
    m.len = sizeof(m.inl.u64);
    es_bench_send(to, &m);
}

void es_bench_request(es_actor_t *self, es_actor_id_t to, uint32_t type,
                      uint64_t a, uint64_t b)
{
    es_msg_t m = es_msg_make(type);
    m.inl.u64[0] = a;
    m.inl.u64[1] = b;
    m.len = ES_MSG_REQUEST_INLINE;
    int rc = es_request(self, to, &m, -1, NULL);
    if (rc) {
        fprintf(stderr, "%s: es_request: %s\n", es_bench.name, es_strerror(rc));
        abort();
    }
}

void es_bench_reply(es_actor_t *self, const es_msg_t *request, uint64_t a,
                    uint64_t b)
{
    es_msg_t m = es_msg_make(0);
    m.inl.u64[0] = a;
    m.inl.u64[1] = b;
    m.len = ES_MSG_REQUEST_INLINE;
    int rc = es_reply(self, request, &m);
    if (rc) {
        fprintf(stderr, "%s: es_reply: %s\n", es_bench.name, es_strerror(rc));
        abort();
    }
}

void es_bench_finish(uint64_t check)
{
    pthread_mutex_lock(&done_mu);
    if (!done) { /* after es_bench_fail() the run has failed already */
        savina_clock_stop(&es_bench.clock);
        done = 1;
        done_check = check;
        pthread_cond_signal(&done_cv);
    }
    pthread_mutex_unlock(&done_mu);
}

void es_bench_fail(const char *what, int reason)
{
    pthread_mutex_lock(&done_mu);
    if (!done) {
        done = 1;
        done_failed = reason ? reason : -EPROTO;
        done_what = what;
        pthread_cond_signal(&done_cv);
    }
    pthread_mutex_unlock(&done_mu);
}

int es_bench_end(uint64_t expected)
{
    pthread_mutex_lock(&done_mu);
    while (!done)
        pthread_cond_wait(&done_cv, &done_mu);
    uint64_t check = done_check;
    int failed = done_failed;
    pthread_mutex_unlock(&done_mu);
    if (getenv("SAVINA_ES_STATS")) {
        /* What the runtime did, on stderr (run.sh reads only stdout). */
        es_stats_t st;
        if (es_runtime_stats(es_bench.rt, -1, &st) == 0)
            fprintf(stderr,
                    "%s: migrations=%llu shed=%llu mutes=%llu "
                    "overflowed=%llu sleeps=%llu wakeups_written=%llu\n",
                    es_bench.name, (unsigned long long)st.migrations,
                    (unsigned long long)st.shed, (unsigned long long)st.mutes,
                    (unsigned long long)st.overflowed,
                    (unsigned long long)st.sleeps,
                    (unsigned long long)st.wakeups_written);
    }
    es_runtime_free(es_bench.rt);
    if (failed) {
        fprintf(stderr, "%s: %s: %s\n", es_bench.name, done_what,
                es_strerror(failed));
        return 1;
    }
    return savina_report(es_bench.name, "es", &es_bench.args, &es_bench.clock,
                         check, expected);
}
