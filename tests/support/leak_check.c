/* SPDX-License-Identifier: MIT */
/*
 * Every test ends as it began: with no file descriptor, thread or runtime
 * (and so no actor) left behind, as libuv's tests end. This file is linked
 * into every test binary, and tests/CMakeLists.txt passes the linker
 * --wrap for the calls it intercepts, so no test file has to opt in:
 * - criterion_internal_test_main, which every Test() calls with its body
 *   (in the forked process that runs the test, with real Criterion and
 *   with criterion_lite alike): the fds in /proc/self/fd and the threads in
 *   /proc/self/task are noted before the body and compared at its end;
 * - criterion_send_assert, to know whether the test already failed (then
 *   what it left behind is no news, and nothing more is checked);
 * - es_runtime_new / es_runtime_free, to name a runtime that was never
 *   freed and count the actors still alive in it.
 * The check runs after the test body and before its .fini, so what .init
 * makes and .fini frees is not counted. Threads and fds a test closes on
 * its way out may take a moment to disappear from /proc (a joined thread
 * is reaped just after pthread_join() returns), so the check polls for up
 * to LEAK_SETTLE_S before it fails the test.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <eventserver/eventserver.h>

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEAK_SETTLE_S 2.0
#define LEAK_MAX_FDS 65536   /* fds above this are counted, not named */
#define LEAK_MAX_RUNTIMES 64 /* runtimes alive at once that can be named */

void __real_criterion_internal_test_main(void (*fn)(void));
void __real_criterion_send_assert(struct criterion_assert_stats *stats);
int __real_es_runtime_new(const es_runtime_opts_t *opts, es_runtime_t **out);
void __real_es_runtime_free(es_runtime_t *rt);

void __wrap_criterion_internal_test_main(void (*fn)(void));
void __wrap_criterion_send_assert(struct criterion_assert_stats *stats);
int __wrap_es_runtime_new(const es_runtime_opts_t *opts, es_runtime_t **out);
void __wrap_es_runtime_free(es_runtime_t *rt);

static volatile int test_failed; /* an assertion of the test failed */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static es_runtime_t *live[LEAK_MAX_RUNTIMES];
static unsigned live_untracked; /* made while `live` was full */

/* What the process holds: which fds (below LEAK_MAX_FDS), how many in all,
 * and how many threads. */
struct holdings {
    unsigned char fd_open[LEAK_MAX_FDS / 8];
    unsigned nfds;
    unsigned nthreads;
};

static struct holdings before, after;

void __wrap_criterion_send_assert(struct criterion_assert_stats *stats)
{
    if (!stats->passed)
        test_failed = 1;
    __real_criterion_send_assert(stats);
}

int __wrap_es_runtime_new(const es_runtime_opts_t *opts, es_runtime_t **out)
{
    int rc = __real_es_runtime_new(opts, out);
    if (rc != 0 || !out)
        return rc;
    pthread_mutex_lock(&live_lock);
    unsigned i = 0;
    while (i < LEAK_MAX_RUNTIMES && live[i])
        i++;
    if (i < LEAK_MAX_RUNTIMES)
        live[i] = *out;
    else
        live_untracked++;
    pthread_mutex_unlock(&live_lock);
    return rc;
}

void __wrap_es_runtime_free(es_runtime_t *rt)
{
    __real_es_runtime_free(rt);
    if (!rt)
        return;
    pthread_mutex_lock(&live_lock);
    unsigned i = 0;
    while (i < LEAK_MAX_RUNTIMES && live[i] != rt)
        i++;
    if (i < LEAK_MAX_RUNTIMES)
        live[i] = NULL;
    else if (live_untracked)
        live_untracked--;
    pthread_mutex_unlock(&live_lock);
}

/* Counts the numeric entries of a /proc directory; for /proc/self/fd also
 * notes them in h (leaving out the fd the listing itself uses). */
static unsigned count_dir(const char *path, struct holdings *h, bool fds)
{
    DIR *d = opendir(path);
    unsigned n = 0;
    if (!d)
        return 0;
    int self = dirfd(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        long v = strtol(e->d_name, NULL, 10);
        if (fds && v == self)
            continue;
        if (fds && v >= 0 && v < LEAK_MAX_FDS)
            h->fd_open[v / 8] |= (unsigned char)(1u << (v % 8));
        n++;
    }
    closedir(d);
    return n;
}

static void take_stock(struct holdings *h)
{
    memset(h, 0, sizeof(*h));
    h->nfds = count_dir("/proc/self/fd", h, true);
    h->nthreads = count_dir("/proc/self/task", h, false);
}

static void *nothing(void *arg)
{
    return arg;
}

/* Sanitizer runtimes start a helper thread with the process's first
 * pthread_create(): make it exist before the first count. */
static void warm_up(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0)
        pthread_join(t, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool settled(void)
{
    take_stock(&after);
    return after.nfds <= before.nfds && after.nthreads <= before.nthreads;
}

/* Names the fds open now that were not open before the test. */
static void report_fds(void)
{
    unsigned named = 0;
    for (int fd = 0; fd < LEAK_MAX_FDS && named < 8; fd++) {
        unsigned char bit = (unsigned char)(1u << (fd % 8));
        if (!(after.fd_open[fd / 8] & bit) || (before.fd_open[fd / 8] & bit))
            continue;
        char link[64], target[256];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        target[n > 0 ? n : 0] = '\0';
        cr_log_error("leak check: fd %d left open (%s)", fd, target);
        named++;
    }
}

static void report_runtimes(void)
{
    pthread_mutex_lock(&live_lock);
    for (unsigned i = 0; i < LEAK_MAX_RUNTIMES; i++) {
        es_stats_t st = {0};
        if (!live[i])
            continue;
        (void)es_runtime_stats(live[i], -1, &st);
        cr_expect(false, "leak check: runtime %p never freed (%llu actors)",
                  (void *)live[i], (unsigned long long)st.actors);
    }
    cr_expect_eq(live_untracked, 0, "leak check: %u more runtimes never freed",
                 live_untracked);
    pthread_mutex_unlock(&live_lock);
}

static void check_holdings(void)
{
    report_runtimes();
    double end = now_s() + LEAK_SETTLE_S;
    while (!settled() && now_s() < end) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (after.nfds > before.nfds)
        report_fds();
    cr_expect(after.nfds <= before.nfds,
              "leak check: %u fds open after the test, %u before", after.nfds,
              before.nfds);
    cr_expect(after.nthreads <= before.nthreads,
              "leak check: %u threads alive after the test, %u before",
              after.nthreads, before.nthreads);
}

/* The test body, run by Criterion's criterion_internal_test_main(): the
 * check runs inside it, so that a leak fails the test (an assertion after
 * the body would only be logged by libcriterion). */
static void (*test_body)(void);

static void after_body(void)
{
    if (!test_failed)
        check_holdings();
}

/* Criterion calls the body as fn() or, for a parameterized test, as
 * fn(param) through a cast; this forwards either way, as Criterion's own
 * trampoline does (the x86-64 and AArch64 ABIs make an unused argument
 * harmless). */
static void body(void *param)
{
    ((void (*)(void *))test_body)(param);
    after_body();
}

void __wrap_criterion_internal_test_main(void (*fn)(void))
{
    warm_up();
    take_stock(&before);
    test_body = fn;
    __real_criterion_internal_test_main((void (*)(void))body);
}
