/* SPDX-License-Identifier: MIT */
/*
 * The tools every case of ring_bench is built from (declared in
 * rb_common.h): the first-fault record, latency samples and the medians
 * and percentiles reported over them, best-effort CPU pinning, the gate
 * that lines threads up at the start and counts them over the finish, the
 * team that starts and joins one case's threads, and the checks that turn
 * out-of-order messages and actors' faults into a run's fault.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setaffinity_np, CPU_SET */
#endif

#include "rb_common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* --- faults, samples and statistics --------------------------------------- */

void fault_set(struct fault *f, int rc, const char *fmt, ...)
{
    va_list ap;

    if (f->rc)
        return;
    f->rc = rc;
    va_start(ap, fmt);
    vsnprintf(f->what, sizeof(f->what), fmt, ap);
    va_end(ap);
}

int samples_reserve(struct samples *s, size_t more)
{
    uint64_t *v;

    if (s->cap - s->n >= more)
        return 0;
    if (more > SIZE_MAX / sizeof(*v) - s->n)
        return -EOVERFLOW;
    v = realloc(s->v, (s->n + more) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    s->v = v;
    s->cap = s->n + more;
    return 0;
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

void samples_sort(struct samples *s)
{
    qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
}

double percentile(const struct samples *s, double p)
{
    size_t rank = (size_t)ceil(p * (double)s->n);

    return (double)s->v[rank ? rank - 1 : 0];
}

double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Pinning is best effort: a refused mask only makes the figures noisier. */
void pin_self(const struct bench_cfg *cfg, int side)
{
    cpu_set_t set;

    if (!cfg->pin)
        return;
    CPU_ZERO(&set);
    CPU_SET((size_t)cfg->cpu[side], &set);
    (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* --- gate: start line and finish line ------------------------------------- */

int gate_init(struct gate *g)
{
    pthread_condattr_t attr;
    int rc;

    g->count = 0;
    g->state = GATE_WAIT;
    rc = pthread_condattr_init(&attr);
    if (!rc)
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(&g->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (!rc && (rc = pthread_mutex_init(&g->lock, NULL)))
        pthread_cond_destroy(&g->cond);
    return -rc;
}

void gate_close(struct gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

void gate_count(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->count++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* Counts the caller in and waits for the start. Returns: true on GATE_GO. */
bool gate_pass(struct gate *g)
{
    bool go;

    pthread_mutex_lock(&g->lock);
    g->count++;
    pthread_cond_broadcast(&g->cond);
    while (g->state == GATE_WAIT)
        pthread_cond_wait(&g->cond, &g->lock);
    go = g->state == GATE_GO;
    pthread_mutex_unlock(&g->lock);
    return go;
}

void gate_set(struct gate *g, int state)
{
    pthread_mutex_lock(&g->lock);
    g->state = state;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* Returns: true once count reached n, false if deadline_ns passed first. */
bool gate_await(struct gate *g, unsigned n, uint64_t deadline_ns)
{
    struct timespec ts = {
        .tv_sec = (time_t)(deadline_ns / NS_PER_SEC),
        .tv_nsec = (long)(deadline_ns % NS_PER_SEC),
    };
    int rc = 0;
    bool reached;

    pthread_mutex_lock(&g->lock);
    while (g->count < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cond, &g->lock, &ts);
    reached = g->count >= n;
    pthread_mutex_unlock(&g->lock);
    return reached;
}

/* --- team: the threads of one case ---------------------------------------- */

int team_spawn(struct team *t, void *(*fn)(void *), void *arg)
{
    int rc;

    if (t->n == MAX_THREADS)
        return -EOVERFLOW;
    rc = pthread_create(&t->tid[t->n], NULL, fn, arg);
    if (rc)
        return -rc;
    t->n++;
    return 0;
}

/* Opens the start gate once every thread waits there, or aborts if rc. */
int team_start(struct team *t, int rc)
{
    if (!rc && !gate_await(t->start, t->n, now_ns() + GRACE_NS))
        rc = -ETIMEDOUT;
    gate_set(t->start, rc ? GATE_ABORT : GATE_GO);
    return rc;
}

void team_join(struct team *t)
{
    for (unsigned i = 0; i < t->n; i++)
        pthread_join(t->tid[i], NULL);
    t->n = 0;
}

/* --- a run's fault -------------------------------------------------------- */

int seq_report(const struct seq_check *c, struct run_out *out)
{
    if (c->errors)
        fault_set(&out->fault, -EPROTO,
                  "%" PRIu64 " messages arrived out of order", c->errors);
    return out->fault.rc;
}

/* Copies the first fault among an actor's and the run's own. */
int fault_merge(struct run_out *out, const struct fault *f)
{
    if (f->rc)
        fault_set(&out->fault, f->rc, "%s", f->what);
    return out->fault.rc;
}
