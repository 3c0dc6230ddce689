/* SPDX-License-Identifier: MIT */
/*
 * Memory and spawn time of idle EventServer actors: main spawns n actors
 * (default 1,000,000, default placement) that never get a message after
 * START, waits until the runtime counts them all as installed, and reports
 * the resident-set growth per actor (RSS from /proc/self/statm, before the
 * first spawn and after the last install) and the time that took.
 * Output: one line, bench=idle_actors impl=es threads=N n=N spawn_ms=...
 * rss_delta_kb=... bytes_per_actor=... check=<actors installed>.
 */
#include "es_common.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>

static int idle_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    (void)msg;
    return 0;
}

static long rss_bytes(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static int spawn_idle(const es_spawn_opts_t *opts)
{
    es_actor_id_t id;
    int rc = es_spawn(es_bench.rt, opts, &id);
    return rc;
}

/* Actors installed on all loops now. */
static uint64_t installed(void)
{
    es_stats_t st;
    return es_runtime_stats(es_bench.rt, -1, &st) < 0 ? 0 : st.actors;
}

int main(int argc, char **argv)
{
    if (es_bench_init(argc, argv, "idle_actors", 1000000) < 0)
        return 2;
    const struct savina_args *a = &es_bench.args;
    uint64_t base = installed();
    long rss0 = rss_bytes();
    savina_clock_start(&es_bench.clock);
    es_spawn_opts_t opts = {0};
    opts.behaviour = idle_cb;
    for (uint64_t i = 0; i < a->n; i++) {
        int rc = spawn_idle(&opts);
        if (rc) {
            fprintf(stderr, "idle_actors: es_spawn #%llu: %s\n",
                    (unsigned long long)i, es_strerror(rc));
            return 1;
        }
    }
    /* Bounded: every spawned actor is installed by its loop within a few
     * turns; 60 s covers a badly overloaded machine. */
    uint64_t got = 0;
    for (int waited_ms = 0; waited_ms < 60000; waited_ms++) {
        got = installed() - base;
        if (got >= a->n)
            break;
        usleep(1000);
    }
    savina_clock_stop(&es_bench.clock);
    long rss1 = rss_bytes();
    double per_actor = (double)(rss1 - rss0) / (double)a->n;
    printf("bench=idle_actors impl=es threads=%u n=%llu spawn_ms=%.3f "
           "cpu_ms=%.3f rss_delta_kb=%ld bytes_per_actor=%.1f check=%llu\n",
           a->threads, (unsigned long long)a->n, es_bench.clock.wall_ms,
           es_bench.clock.cpu_ms, (rss1 - rss0) / 1024, per_actor,
           (unsigned long long)got);
    fflush(stdout);
    es_runtime_free(es_bench.rt);
    return got == a->n ? 0 : 1;
}
