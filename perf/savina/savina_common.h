/* SPDX-License-Identifier: MIT */
/*
 * What the EventServer (C11) and CAF (C++17) versions of the Savina
 * benchmarks share, so that both do exactly the same work and report it the
 * same way: the command line, the clock (wall and process CPU time from the
 * first spawn to the end of the benchmark), the result line, the small
 * computation the fork-join benchmarks do per message and the PRNG of big.
 * Header-only and valid as C11 and as C++17.
 */
#ifndef SAVINA_COMMON_H
#define SAVINA_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* The command line: [--threads N] [--n N] [--placed] [--split]
 * [--request]. */
struct savina_args {
    unsigned threads; /* demux threads / CAF scheduler max-threads */
    uint64_t n;       /* the benchmark's main size parameter */
    int placed;       /* es only: hand-placed actors */
    int split;        /* es pingpong only: the two actors on two loops */
    int request;      /* es only: who waits for an answer es_request()s it */
};

/* Parses argv into *a (n defaults to default_n, threads to 2).
 * Returns: 0, or -1 after printing the usage to stderr. */
static inline int savina_parse(int argc, char **argv, uint64_t default_n,
                               struct savina_args *a)
{
    a->threads = 2;
    a->n = default_n;
    a->placed = 0;
    a->split = 0;
    a->request = 0;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--placed") == 0) {
            a->placed = 1;
        } else if (strcmp(argv[i], "--split") == 0) {
            a->split = 1;
        } else if (strcmp(argv[i], "--request") == 0) {
            a->request = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v == 0 || v > 1024)
                goto usage;
            a->threads = (unsigned)v;
        } else if (i + 1 < argc && strcmp(argv[i], "--n") == 0) {
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (*end || v == 0)
                goto usage;
            a->n = (uint64_t)v;
        } else {
            goto usage;
        }
    }
    return 0;
usage:
    fprintf(stderr,
            "usage: %s [--threads N] [--n N] [--placed] [--split] "
            "[--request]\n",
            argv[0]);
    return -1;
}

/* Wall (CLOCK_MONOTONIC) and process CPU (user + sys) time. */
struct savina_clock {
    struct timespec t0;
    double cpu0_ms;
    double wall_ms; /* set by savina_clock_stop() */
    double cpu_ms;
};

static inline double savina_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static inline void savina_clock_start(struct savina_clock *c)
{
    c->cpu0_ms = savina_cpu_ms();
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
}

/* Thread: any (the benchmark's last handler calls it). */
static inline void savina_clock_stop(struct savina_clock *c)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    c->wall_ms = (double)(t1.tv_sec - c->t0.tv_sec) * 1e3 +
                 (double)(t1.tv_nsec - c->t0.tv_nsec) / 1e6;
    c->cpu_ms = savina_cpu_ms() - c->cpu0_ms;
}

/* Prints the one result line and returns the exit status: 0 only if
 * check == expected (else the mismatch also goes to stderr). */
static inline int savina_report(const char *bench, const char *impl,
                                const struct savina_args *a,
                                const struct savina_clock *c, uint64_t check,
                                uint64_t expected)
{
    printf("bench=%s impl=%s threads=%u placed=%d n=%llu wall_ms=%.3f "
           "cpu_ms=%.3f check=%llu\n",
           bench, impl, a->threads, a->placed, (unsigned long long)a->n,
           c->wall_ms, c->cpu_ms, (unsigned long long)check);
    fflush(stdout);
    if (check != expected) {
        fprintf(stderr, "%s/%s: check %llu, expected %llu\n", bench, impl,
                (unsigned long long)check, (unsigned long long)expected);
        return 1;
    }
    return 0;
}

/* The computation fjthroughput and fjcreation do for every message: the
 * sum of sin(v + i) for i < SAVINA_WORK_TERMS. */
#define SAVINA_WORK_TERMS 10

static inline double savina_work(uint64_t v)
{
    double s = 0.0;
    for (int i = 0; i < SAVINA_WORK_TERMS; i++)
        s += sin((double)(v + (uint64_t)i));
    return s;
}

/* big's PRNG (splitmix64): actor i seeds it with i, so every actor draws
 * the same neighbours in both implementations whatever the scheduling. */
static inline uint64_t savina_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* big: the next neighbour of actor `self` among `count` (never itself). */
static inline uint64_t savina_big_pick(uint64_t *state, uint64_t self,
                                       uint64_t count)
{
    uint64_t r = savina_rand(state) % (count - 1);
    return r >= self ? r + 1 : r;
}

/* big's check: the sum of every neighbour index each actor pings, which
 * the benchmark reaches only if every ping was answered. */
static inline uint64_t savina_big_expected(uint64_t actors, uint64_t pings)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < actors; i++) {
        uint64_t s = i;
        for (uint64_t k = 0; k < pings; k++)
            sum += savina_big_pick(&s, i, actors);
    }
    return sum;
}

/* Fixed sizes of the benchmarks whose --n counts something else. */
#define SAVINA_RING_ACTORS 100 /* threadring */
#define SAVINA_FJ_ACTORS 60    /* fjthroughput */
#define SAVINA_BIG_ACTORS 120  /* big */
#define SAVINA_CHAMENEOS 100   /* chameneos: creatures */

#endif /* SAVINA_COMMON_H */
