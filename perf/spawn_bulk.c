/* SPDX-License-Identifier: MIT */
/*
 * Bulk spawn from main(): how long N es_spawn() calls take before
 * es_runtime_start(), how long the loops then take to install and START
 * them all, and what an idle actor costs in memory (the growth of VmRSS and
 * of the malloc heap, per actor). The actors have no state and do nothing
 * but count their START. One run per invocation; the script around it (or
 * the reader) repeats it.
 *
 * Usage: spawn_bulk [actors (1000000)] [threads (2)]
 * Prints: one line of key=value pairs.
 */
#include <eventserver/eventserver.h>

#include <malloc.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_S 120.0 /* longest wait for the loops to START every actor */

static atomic_ulong started;

static int idle_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type == ES_MSG_START)
        atomic_fetch_add_explicit(&started, 1, memory_order_relaxed);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* VmRSS of this process in kB, or -1. */
static long rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000ul;
    unsigned threads = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 2u;
    es_runtime_opts_t opts = {.threads = threads};
    es_spawn_opts_t so = {.behaviour = idle_cb};
    es_runtime_t *rt;
    es_actor_id_t id;
    int rc;

    if (n == 0 || (rc = es_runtime_new(&opts, &rt)) != 0) {
        fprintf(stderr, "spawn_bulk: bad arguments or es_runtime_new\n");
        return 1;
    }
    long rss0 = rss_kb();
    size_t heap0 = heap_bytes();
    double t0 = now_s();
    for (unsigned long i = 0; i < n; i++) {
        if ((rc = es_spawn(rt, &so, &id)) != 0) {
            fprintf(stderr, "spawn_bulk: spawn %lu: %s\n", i, es_strerror(rc));
            es_runtime_free(rt);
            return 1;
        }
    }
    double t1 = now_s();
    long rss1 = rss_kb();
    size_t heap1 = heap_bytes();
    if ((rc = es_runtime_start(rt)) != 0) {
        fprintf(stderr, "spawn_bulk: start: %s\n", es_strerror(rc));
        es_runtime_free(rt);
        return 1;
    }
    double t2 = now_s();
    while (atomic_load(&started) < n && now_s() - t2 < WAIT_S)
        sched_yield();
    double t3 = now_s();
    long rss2 = rss_kb();
    size_t heap2 = heap_bytes();
    unsigned long got = atomic_load(&started);
    es_runtime_stop(rt);
    es_runtime_wait(rt);
    double t4 = now_s();
    es_runtime_free(rt);
    printf("actors=%lu threads=%u spawn_s=%.3f spawn_ns_each=%.0f "
           "start_all_s=%.3f started=%lu stop_s=%.3f "
           "rss_per_actor_before_start=%.0f heap_per_actor_before_start=%.0f "
           "rss_per_actor_started=%.0f heap_per_actor_started=%.0f\n",
           n, threads, t1 - t0, (t1 - t0) * 1e9 / (double)n, t3 - t2, got,
           t4 - t3, (double)(rss1 - rss0) * 1024.0 / (double)n,
           (double)(heap1 - heap0) / (double)n,
           (double)(rss2 - rss0) * 1024.0 / (double)n,
           (double)(heap2 - heap0) / (double)n);
    return got == n ? 0 : 1;
}
