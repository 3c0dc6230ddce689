/* SPDX-License-Identifier: MIT */
/*
 * CPU affinity of the demux threads (es_runtime_opts_t.cpus, issue 13): an
 * actor placed on each loop reads sched_getaffinity() from inside it, so
 * the tests see the mask each demux thread really runs with: exactly the
 * CPU asked for (a list, wrapping; or one per allowed CPU in order), or the
 * inherited mask when nothing is asked. CPUs outside the process's allowed
 * set and contradicting options are refused with -EINVAL up front.
 */
#include "es_test.h"

#include <stdio.h>
#include <string.h>

#define MAX_LOOPS 16

/* What each loop saw: its affinity mask, read on its own thread. */
struct masks {
    cpu_set_t mask[MAX_LOOPS];
    atomic_int rc[MAX_LOOPS];
    atomic_ullong seen;
};

struct reader {
    struct masks *m;
    unsigned loop;
};

static int reader_cb(es_actor_t *self, es_msg_t *msg)
{
    struct reader *r = es_actor_state(self);

    if (msg->type != ES_MSG_START)
        return 0;
    /* pid 0: the calling thread, i.e. this actor's demux thread. */
    int rc = sched_getaffinity(0, sizeof(r->m->mask[0]), &r->m->mask[r->loop]);
    atomic_store(&r->m->rc[r->loop], rc == 0 ? es_actor_loop_index(self) : -1);
    atomic_fetch_add(&r->m->seen, 1);
    return 0;
}

/* Runs rt with a reader on each of its loops; fills m. Frees rt. */
static void read_masks(es_runtime_t *rt, struct masks *m)
{
    unsigned n = es_runtime_threads(rt);
    struct reader r[MAX_LOOPS];

    cr_assert_leq(n, MAX_LOOPS);
    for (unsigned i = 0; i < n; i++) {
        r[i] = (struct reader){.m = m, .loop = i};
        atomic_store(&m->rc[i], -2);
        es_spawn_opts_t o = {
            .behaviour = reader_cb, .state = &r[i], .loop = ES_LOOP(i)};
        es_actor_id_t id;
        ES_OK(es_spawn(rt, &o, &id));
    }
    ES_OK(es_runtime_start(rt));
    ES_WAIT_GE(m->seen, n);
    es_test_free(rt);
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&m->rc[i]), (int)i,
                     "loop %u: sched_getaffinity failed or wrong loop", i);
}

/* The CPUs this process may run on, lowest first; returns how many. */
static int allowed_cpus(int *cpus, int max)
{
    cpu_set_t set;
    int n = 0;

    cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set))
            cpus[n++] = c;
    cr_assert_gt(n, 0);
    return n;
}

static void assert_pinned(const struct masks *m, unsigned loop, int cpu)
{
    cr_assert_eq(CPU_COUNT(&m->mask[loop]), 1,
                 "loop %u runs on %d CPUs, want only CPU %d", loop,
                 CPU_COUNT(&m->mask[loop]), cpu);
    cr_assert(CPU_ISSET(cpu, &m->mask[loop]), "loop %u is not on CPU %d", loop,
              cpu);
}

/* A list pins thread i to cpus[i % ncpus]; the list is the caller's to
 * change once es_runtime_new() returned. */
Test(affinity, list_pins_each_loop, .timeout = ES_TEST_TIMEOUT)
{
    int allowed[MAX_LOOPS];
    int n = allowed_cpus(allowed, MAX_LOOPS - 1);
    int cpus[MAX_LOOPS];
    static struct masks m;

    /* Reversed, so loop i is not simply on CPU i; one loop more than
     * CPUs, so the list wraps. */
    for (int i = 0; i < n; i++)
        cpus[i] = allowed[n - 1 - i];
    es_runtime_opts_t opts = {
        .threads = (unsigned)n + 1, .cpus = cpus, .ncpus = (unsigned)n};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    int want[MAX_LOOPS];
    for (int i = 0; i <= n; i++)
        want[i] = cpus[i % n];
    memset(cpus, 0xff, sizeof(cpus)); /* -1s: the runtime kept a copy */
    read_masks(rt, &m);
    for (int i = 0; i <= n; i++)
        assert_pinned(&m, (unsigned)i, want[i]);
}

/* cpus_in_order: thread i on the (i mod n)-th allowed CPU. */
Test(affinity, in_order_one_per_cpu, .timeout = ES_TEST_TIMEOUT)
{
    int allowed[MAX_LOOPS];
    int n = allowed_cpus(allowed, MAX_LOOPS - 1);
    static struct masks m;

    es_runtime_opts_t opts = {.threads = (unsigned)n + 1, .cpus_in_order = 1};
    read_masks(es_test_runtime_new(&opts), &m);
    for (int i = 0; i <= n; i++)
        assert_pinned(&m, (unsigned)i, allowed[i % n]);
}

/* cpus_in_order without a thread count: one thread per allowed CPU (the
 * mask narrowed to one CPU first, so the count differs from the online
 * CPUs on a machine with more than one). */
Test(affinity, in_order_defaults_to_allowed_cpus, .timeout = ES_TEST_TIMEOUT)
{
    int allowed[MAX_LOOPS];
    int n = allowed_cpus(allowed, MAX_LOOPS);
    cpu_set_t before, narrow;
    static struct masks m;

    cr_assert_eq(sched_getaffinity(0, sizeof(before), &before), 0);
    CPU_ZERO(&narrow);
    CPU_SET(allowed[n - 1], &narrow);
    cr_assert_eq(sched_setaffinity(0, sizeof(narrow), &narrow), 0);
    es_runtime_opts_t opts = {.cpus_in_order = 1};
    es_runtime_t *rt = es_test_runtime_new(&opts);
    cr_assert_eq(es_runtime_threads(rt), 1);
    read_masks(rt, &m);
    cr_assert_eq(sched_setaffinity(0, sizeof(before), &before), 0);
    assert_pinned(&m, 0, allowed[n - 1]);
}

/* With no pinning asked, each loop keeps the mask of the thread that
 * started it; narrowed first (with two CPUs or more), so the test tells
 * "inherited" from "every CPU". */
Test(affinity, default_keeps_inherited_mask, .timeout = ES_TEST_TIMEOUT)
{
    int allowed[MAX_LOOPS];
    int n = allowed_cpus(allowed, MAX_LOOPS);
    cpu_set_t before, narrow;
    static struct masks m;

    cr_assert_eq(sched_getaffinity(0, sizeof(before), &before), 0);
    CPU_ZERO(&narrow);
    CPU_SET(allowed[n - 1], &narrow);
    cr_assert_eq(sched_setaffinity(0, sizeof(narrow), &narrow), 0);
    es_runtime_opts_t opts = {.threads = 2};
    read_masks(es_test_runtime_new(&opts), &m);
    cr_assert_eq(sched_setaffinity(0, sizeof(before), &before), 0);
    for (unsigned i = 0; i < 2; i++)
        cr_assert(CPU_EQUAL(&m.mask[i], &narrow),
                  "loop %u does not have the creator's mask", i);
}

static atomic_ullong g_errors;
static char g_line[256];

static void log_cb(void *arg, es_log_level_t level, const char *line)
{
    (void)arg;
    if (level >= ES_LOG_ERROR && atomic_fetch_add(&g_errors, 1) == 0)
        snprintf(g_line, sizeof(g_line), "%s", line);
}

/* Expects es_runtime_new(opts) to fail with -EINVAL and leave *out. */
static void assert_einval(const es_runtime_opts_t *opts)
{
    es_runtime_t *rt = NULL;

    cr_assert_eq(es_runtime_new(opts, &rt), -EINVAL);
    cr_assert_null(rt);
}

/* A CPU outside the allowed set (here: outside a mask narrowed to one
 * CPU, and numbers no CPU has) is -EINVAL, with a log line naming it. */
Test(affinity, cpu_outside_allowed_set_is_einval, .timeout = ES_TEST_TIMEOUT)
{
    int allowed[MAX_LOOPS];
    int n = allowed_cpus(allowed, MAX_LOOPS);
    cpu_set_t before, narrow;
    int outside = -1;

    cr_assert_eq(sched_getaffinity(0, sizeof(before), &before), 0);
    if (n >= 2) { /* the last allowed CPU becomes a disallowed one */
        CPU_ZERO(&narrow);
        CPU_SET(allowed[0], &narrow);
        cr_assert_eq(sched_setaffinity(0, sizeof(narrow), &narrow), 0);
        outside = allowed[n - 1];
    } else {
        outside = allowed[0] + 1; /* no such CPU on a one-CPU machine */
    }
    es_set_log(log_cb, NULL, ES_LOG_DEBUG);
    int cpus[] = {allowed[0], outside};
    es_runtime_opts_t opts = {.threads = 2, .cpus = cpus, .ncpus = 2};
    assert_einval(&opts);
    cr_assert_eq(atomic_load(&g_errors), 1);
    char want[64];
    snprintf(want, sizeof(want), "cpus[1] = %d", outside);
    cr_assert(strstr(g_line, want), "log line \"%s\" does not name %s", g_line,
              want);
    int bad[] = {-1, CPU_SETSIZE};
    for (unsigned i = 0; i < 2; i++) {
        opts.cpus = &bad[i];
        opts.ncpus = 1;
        assert_einval(&opts);
    }
    es_set_log(NULL, NULL, ES_LOG_ERROR);
    cr_assert_eq(sched_setaffinity(0, sizeof(before), &before), 0);
    cr_assert_eq(atomic_load(&g_errors), 3);
}

/* Contradicting or incomplete options are -EINVAL. */
Test(affinity, bad_options_are_einval, .timeout = ES_TEST_TIMEOUT)
{
    int allowed[MAX_LOOPS];
    allowed_cpus(allowed, MAX_LOOPS);
    int cpus[] = {allowed[0]};

    es_runtime_opts_t both = {.cpus = cpus, .ncpus = 1, .cpus_in_order = 1};
    assert_einval(&both);
    es_runtime_opts_t no_list = {.ncpus = 1};
    assert_einval(&no_list);
    es_runtime_opts_t flag = {.cpus_in_order = 2};
    assert_einval(&flag);
    es_runtime_opts_t neg = {.cpus_in_order = -1};
    assert_einval(&neg);
}
