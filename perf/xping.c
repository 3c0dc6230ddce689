/* SPDX-License-Identifier: MIT */
/*
 * Cross-loop ping-pong under the three ways a loop can wait for work
 * (es_runtime_opts_t): no spin, adaptive spinning, a fixed spin_us. Two
 * actors on different demux threads (loops 0 and 1) bounce a message
 * --rounds times; with --interval-ms the pinger waits that long (a timer)
 * between round trips, a mostly idle runtime. Each run prints the median
 * and 99th percentile round trip, the process CPU time per round trip
 * (CLOCK_PROCESS_CPUTIME_ID over the rounds; the main thread blocks
 * meanwhile) and the wakeups written per round trip; the last line gives
 * the median of each over --runs runs, each with a fresh runtime. Usage:
 *   xping [--spin off|adaptive|US] [--rounds N] [--interval-ms MS]
 *         [--runs R]
 */
#include <eventserver/eventserver.h>

#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Explicit loop index of es_spawn_opts_t.loop. */

#define MAX_RUNS 25
#define WAIT_S 120 /* a run that takes longer is reported as failed */

enum { MSG_GO = ES_MSG_USER, MSG_PING, MSG_PONG };

struct cfg {
    int adaptive;     /* es_runtime_opts_t.adaptive_spin */
    unsigned spin_us; /* es_runtime_opts_t.spin_us */
    unsigned rounds, interval_ms, runs;
    const char *spin_name;
};

/* The pinger's state; its home thread only, main reads it after `done`. */
struct pinger {
    es_actor_id_t peer;
    unsigned rounds, interval_ms, done_rounds;
    uint64_t sent_ns;
    uint64_t *rtt_ns; /* rounds samples */
    int err;          /* first failure, or 0 */
    sem_t done;
};

struct result {
    double median_us, p99_us, cpu_us_per_rt, wakeups_per_rt;
};

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void finish(struct pinger *p, int err)
{
    p->err = err;
    sem_post(&p->done);
}

static void ping(es_actor_t *self, struct pinger *p)
{
    es_msg_t m = es_msg_make(MSG_PING);
    int rc;

    p->sent_ns = clock_ns(CLOCK_MONOTONIC);
    rc = es_send(es_actor_runtime(self), p->peer, &m);
    if (rc)
        finish(p, rc);
}

static void on_pong(es_actor_t *self, struct pinger *p)
{
    int rc;

    p->rtt_ns[p->done_rounds++] = clock_ns(CLOCK_MONOTONIC) - p->sent_ns;
    if (p->done_rounds == p->rounds) {
        finish(p, 0);
    } else if (p->interval_ms == 0) {
        ping(self, p);
    } else if ((rc = es_timer_start(self, p->interval_ms, 0, 0, NULL))) {
        finish(p, rc);
    }
}

static int pinger_cb(es_actor_t *self, es_msg_t *msg)
{
    struct pinger *p = es_actor_state(self);

    switch (msg->type) {
    case MSG_GO:
    case ES_MSG_TIMER:
        ping(self, p);
        break;
    case MSG_PONG:
        on_pong(self, p);
        break;
    }
    return 0;
}

static int ponger_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != MSG_PING)
        return 0;
    es_msg_t m = es_msg_make(MSG_PONG);
    return es_send(es_actor_runtime(self), msg->from, &m);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Spawns both actors, runs the rounds and waits for the pinger. */
static int play(es_runtime_t *rt, struct pinger *p, uint64_t *cpu_ns)
{
    es_spawn_opts_t po = {.behaviour = ponger_cb, .loop = ES_LOOP(1)};
    es_spawn_opts_t io = {
        .behaviour = pinger_cb, .loop = ES_LOOP(0), .state = p};
    es_actor_id_t pinger;
    es_msg_t go = es_msg_make(MSG_GO);
    struct timespec until;
    int rc;

    if ((rc = es_spawn(rt, &po, &p->peer)) ||
        (rc = es_spawn(rt, &io, &pinger)) || (rc = es_runtime_start(rt)))
        return rc;
    uint64_t cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    if ((rc = es_send(rt, pinger, &go)))
        return rc;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_S;
    while (sem_timedwait(&p->done, &until) != 0)
        if (errno != EINTR)
            return -errno;
    *cpu_ns = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    return p->err;
}

static int run_once(const struct cfg *c, struct result *r)
{
    /* The pair must stay on two threads: no co-location. */
    es_runtime_opts_t ro = {.threads = 2,
                            .spin_us = c->spin_us,
                            .adaptive_spin = c->adaptive,
                            .colocate = -1};
    struct pinger p = {.rounds = c->rounds, .interval_ms = c->interval_ms};
    es_runtime_t *rt;
    es_stats_t st;
    uint64_t cpu_ns = 0;
    int rc;

    p.rtt_ns = calloc(c->rounds, sizeof(*p.rtt_ns));
    if (!p.rtt_ns || sem_init(&p.done, 0, 0) != 0) {
        free(p.rtt_ns);
        return -ENOMEM;
    }
    if ((rc = es_runtime_new(&ro, &rt)) == 0) {
        rc = play(rt, &p, &cpu_ns);
        if (rc == 0)
            rc = es_runtime_stats(rt, -1, &st);
        es_runtime_free(rt);
    }
    if (rc == 0) {
        qsort(p.rtt_ns, c->rounds, sizeof(*p.rtt_ns), cmp_u64);
        r->median_us = (double)p.rtt_ns[c->rounds / 2] / 1e3;
        r->p99_us = (double)p.rtt_ns[(uint64_t)c->rounds * 99 / 100] / 1e3;
        r->cpu_us_per_rt = (double)cpu_ns / 1e3 / c->rounds;
        r->wakeups_per_rt = (double)st.wakeups_written / c->rounds;
    }
    sem_destroy(&p.done);
    free(p.rtt_ns);
    return rc;
}

static int parse(int argc, char **argv, struct cfg *c)
{
    *c = (struct cfg){.adaptive = ES_SPIN_ADAPTIVE_OFF,
                      .rounds = 20000,
                      .runs = 5,
                      .spin_name = "off"};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        unsigned n = (unsigned)strtoul(v, NULL, 10);

        if (strcmp(k, "--spin") == 0) {
            c->spin_name = v;
            if (strcmp(v, "adaptive") == 0)
                c->adaptive = ES_SPIN_ADAPTIVE_ON;
            else if (strcmp(v, "off") != 0)
                c->spin_us = n;
        } else if (strcmp(k, "--rounds") == 0) {
            c->rounds = n;
        } else if (strcmp(k, "--interval-ms") == 0) {
            c->interval_ms = n;
        } else if (strcmp(k, "--runs") == 0) {
            c->runs = n;
        } else {
            return -1;
        }
    }
    if (argc % 2 == 0 || c->rounds == 0 || c->runs == 0 || c->runs > MAX_RUNS ||
        (c->spin_us == 0 && c->adaptive != ES_SPIN_ADAPTIVE_ON &&
         strcmp(c->spin_name, "off") != 0))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    struct cfg c;
    double med[MAX_RUNS], p99[MAX_RUNS], cpu[MAX_RUNS], wk[MAX_RUNS];

    if (parse(argc, argv, &c) != 0) {
        fprintf(stderr,
                "usage: xping [--spin off|adaptive|US] [--rounds N] "
                "[--interval-ms MS] [--runs R<=%d]\n",
                MAX_RUNS);
        return 2;
    }
    for (unsigned i = 0; i < c.runs; i++) {
        struct result r;
        int rc = run_once(&c, &r);

        if (rc) {
            fprintf(stderr, "xping: run %u: %s\n", i + 1, es_strerror(rc));
            return 1;
        }
        printf("spin=%s interval_ms=%u rounds=%u run=%u median_us=%.1f "
               "p99_us=%.1f cpu_us_per_rt=%.2f wakeups_per_rt=%.3f\n",
               c.spin_name, c.interval_ms, c.rounds, i + 1, r.median_us,
               r.p99_us, r.cpu_us_per_rt, r.wakeups_per_rt);
        med[i] = r.median_us;
        p99[i] = r.p99_us;
        cpu[i] = r.cpu_us_per_rt;
        wk[i] = r.wakeups_per_rt;
    }
    printf("spin=%s interval_ms=%u rounds=%u runs=%u median_of_runs: "
           "median_us=%.1f p99_us=%.1f cpu_us_per_rt=%.2f "
           "wakeups_per_rt=%.3f\n",
           c.spin_name, c.interval_ms, c.rounds, c.runs, median(med, c.runs),
           median(p99, c.runs), median(cpu, c.runs), median(wk, c.runs));
    return 0;
}
