/* SPDX-License-Identifier: MIT */
/*
 * EventServer's cluster module against bare nats.c doing the same work,
 * one case and one implementation per run, in two processes on one host
 * (this one and a fork()ed child) and a NATS server given by --url:
 *
 *   send  one-way sends of --size bytes: the parent sends --n messages to a
 *         name (es: es_cluster_send() to a name an actor in the child
 *         registered; raw: natsConnection_Publish() to a subject the child
 *         subscribed) with at most --window in flight (the child's count is
 *         in shared memory, so neither side can run the other into a slow
 *         consumer's losses); delivered messages/s = received / (time of
 *         the child's last receipt - time of the first send).
 * The raw side connects with nats.c's default options (a publish waits for
 * its flusher thread, which gathers more for about 1 ms; a request is
 * written at once), or, as `--impl raw-asap`, with
 * natsOptions_SetSendAsap() (every publish written at once: what nats.h
 * advises for a responder). Neither is the better one for every case, so
 * the report compares es with the better of the two.
 *
 *   rr    request/reply round trips, one outstanding: es: an actor
 *         es_request()s the es_cluster_lookup() proxy of an echo actor in
 *         the child; raw: natsConnection_Request() to a responder that
 *         publishes the payload back. p50/p99 of --requests after --warm.
 *   fan   topic fan-out to --subs subscribers, half in each process (es:
 *         actors, es_cluster_subscribe(); raw: one subscription per process
 *         whose callback walks that many callbacks/counters); the parent
 *         publishes --rate per second for --secs seconds, each stamped with
 *         CLOCK_MONOTONIC; latency = time the last subscriber of either
 *         process got it - stamp; p50/p99 over the publishes.
 *
 * Prints one line of key=value fields (perf/cluster_bench.sh collects
 * them). Exit status: 0, 1 when the case failed or lost messages (the
 * line says what was measured), 2 on a usage error.
 *
 *   cluster_bench --url nats://127.0.0.1:4222 --impl es|raw|raw-asap
 *                 --case send|rr|fan [--prefix P] [--threads T] [--n N]
 *                 [--window W] [--size B] [--requests N] [--warm N]
 *                 [--subs N] [--rate R] [--secs S]
 */
#include "cluster_bench.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define READY_WAIT_NS (20 * 1000000000ull)
#define FAN_WARM_EXTRA 10 /* warm-up publishes after the first complete one */

static pid_t child_pid;

void cb_sleep_us(unsigned us)
{
    struct timespec ts = {.tv_sec = us / 1000000u,
                          .tv_nsec = (long)(us % 1000000u) * 1000};

    nanosleep(&ts, NULL);
}

void cb_wait_parent_done(struct cb_shm *shm)
{
    while (!atomic_load(&shm->parent_done))
        cb_sleep_us(5000);
}

/* Waits for the child's set-up; -ECHILD if it failed or died first. */
static int wait_child_ready(struct cb_shm *shm)
{
    uint64_t end = cb_now() + READY_WAIT_NS;
    int status;

    for (;;) {
        int r = atomic_load(&shm->child_ready);

        if (r > 0)
            return 0;
        if (r < 0)
            return -ECHILD;
        if (waitpid(child_pid, &status, WNOHANG) == child_pid) {
            child_pid = -1; /* reaped: it exited before it was ready */
            return -ECHILD;
        }
        if (cb_now() > end)
            return -ETIMEDOUT;
        cb_sleep_us(2000);
    }
}

void cb_wait_rx(struct cb_shm *shm, uint64_t want)
{
    uint64_t seen = atomic_load(&shm->rx), since = cb_now();

    while (seen < want && cb_now() - since < CB_STALL_NS) {
        uint64_t now_rx;

        cb_sleep_us(200);
        now_rx = atomic_load(&shm->rx);
        if (now_rx != seen) {
            seen = now_rx;
            since = cb_now();
        }
    }
}

int cb_window_wait(const struct cb_opts *o, struct cb_shm *shm, uint64_t i)
{
    uint64_t since = 0;

    while (i - atomic_load_explicit(&shm->rx, memory_order_relaxed) >=
           (uint64_t)o->window) {
        if (!since)
            since = cb_now();
        else if (cb_now() - since > CB_STALL_NS)
            return -ETIMEDOUT;
        cb_sleep_us(20);
    }
    return 0;
}

void cb_send_result(struct cb_shm *shm, uint64_t t0, uint64_t sent,
                    struct cb_result *res)
{
    uint64_t last = atomic_load(&shm->rx_last);

    res->sent = sent;
    res->received = atomic_load(&shm->rx);
    res->secs = last > t0 ? (double)(last - t0) / 1e9 : 0;
    res->rate = res->secs > 0 ? (double)res->received / res->secs : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted s[0..n). */
static double rank_us(const uint64_t *s, uint64_t n, double q)
{
    uint64_t k = (uint64_t)(q * (double)n + 0.999999);

    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)s[k - 1] / 1e3;
}

void cb_percentiles(uint64_t *samples, uint64_t n, struct cb_result *res)
{
    res->samples = n;
    if (!n)
        return;
    qsort(samples, n, sizeof(*samples), cmp_u64);
    res->p50_us = rank_us(samples, n, 0.50);
    res->p99_us = rank_us(samples, n, 0.99);
    res->max_us = (double)samples[n - 1] / 1e3;
}

long cb_fan_local(const struct cb_opts *o, int side)
{
    return side == 0 ? o->subs - o->subs / 2 : o->subs / 2;
}

void cb_fan_done(struct cb_shm *shm, int side, uint64_t seq, uint64_t stamp)
{
    uint64_t lat = cb_now() - stamp;

    atomic_store(&shm->fan_lat[side][seq], lat ? lat : 1);
}

void cb_fan_hit(struct cb_shm *shm, int side, long nlocal, uint64_t seq,
                uint64_t stamp)
{
    if (seq >= CB_MAX_SEQ)
        return;
    if (atomic_fetch_add_explicit(&shm->fan_count[side][seq], 1,
                                  memory_order_relaxed) +
            1 ==
        (uint32_t)nlocal)
        cb_fan_done(shm, side, seq, stamp);
}

static int fan_complete(struct cb_shm *shm, uint64_t seq)
{
    return atomic_load(&shm->fan_lat[0][seq]) &&
           atomic_load(&shm->fan_lat[1][seq]);
}

/* Publishes every 10 ms until one publish reached every subscriber of both
 * processes (so both broker subscriptions are live), then a few more.
 * Returns the next sequence number, or a negative errno. */
static long fan_warm_up(struct cb_shm *shm, cb_publish_fn publish, void *ctx)
{
    uint64_t seq = 0, end = cb_now() + READY_WAIT_NS;
    long extra = -1;

    while (extra < FAN_WARM_EXTRA) {
        int rc;

        if (cb_now() > end || seq >= CB_MAX_SEQ / 2)
            return -ETIMEDOUT;
        if ((rc = publish(ctx, seq, cb_now())) < 0)
            return rc;
        seq++;
        cb_sleep_us(10000);
        if (extra >= 0)
            extra++;
        for (uint64_t s = 0; extra < 0 && s < seq; s++)
            if (fan_complete(shm, s))
                extra = 0;
    }
    return (long)seq;
}

/* Publishes o->rate per second for o->secs seconds on an absolute
 * schedule; returns how many went out, or a negative errno. */
static long fan_publish(const struct cb_opts *o, uint64_t first, uint64_t count,
                        cb_publish_fn publish, void *ctx)
{
    uint64_t period = 1000000000ull / o->rate, next = cb_now();

    for (uint64_t k = 0; k < count; k++) {
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                              .tv_nsec = (long)(next % 1000000000u)};
        int rc;

        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
               EINTR)
            ;
        if ((rc = publish(ctx, first + k, cb_now())) < 0)
            return rc;
        next += period;
    }
    return (long)count;
}

int cb_fan_drive(const struct cb_opts *o, struct cb_shm *shm,
                 cb_publish_fn publish, void *ctx, struct cb_result *res)
{
    uint64_t count = (uint64_t)((double)o->rate * o->secs), *samples;
    uint64_t n = 0, first, since;
    long rc;

    if ((rc = wait_child_ready(shm)) < 0)
        return (int)rc;
    if ((rc = fan_warm_up(shm, publish, ctx)) < 0)
        return (int)rc;
    first = (uint64_t)rc;
    if (first + count > CB_MAX_SEQ)
        return -E2BIG;
    if ((rc = fan_publish(o, first, count, publish, ctx)) < 0)
        return (int)rc;
    since = cb_now();
    while (!fan_complete(shm, first + count - 1) &&
           cb_now() - since < CB_STALL_NS / 3)
        cb_sleep_us(1000);
    if (!(samples = calloc(count, sizeof(*samples))))
        return -ENOMEM;
    for (uint64_t s = first; s < first + count; s++) {
        uint64_t a = atomic_load(&shm->fan_lat[0][s]);
        uint64_t b = atomic_load(&shm->fan_lat[1][s]);

        if (a && b)
            samples[n++] = a > b ? a : b;
        else
            res->failed++;
    }
    cb_percentiles(samples, n, res);
    free(samples);
    return 0;
}

/* Waits for the child to exit (it tears down once parent_done is set);
 * kills it if it does not within READY_WAIT_NS. Returns 0 if it exited
 * with status 0. */
static int reap_child(void)
{
    uint64_t end = cb_now() + READY_WAIT_NS;
    int status = 0;
    pid_t r;

    if (child_pid <= 0)
        return child_pid == 0 ? 0 : -ECHILD;
    while ((r = waitpid(child_pid, &status, WNOHANG)) == 0) {
        if (cb_now() > end) {
            fprintf(stderr, "cluster_bench: child hangs; killing it\n");
            kill(child_pid, SIGKILL);
            waitpid(child_pid, &status, 0);
            return -ETIMEDOUT;
        }
        cb_sleep_us(5000);
    }
    if (r != child_pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -ECHILD;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: cluster_bench --url URL --impl es|raw|raw-asap\n"
                    "       --case send|rr|fan [--prefix P]\n"
                    "       [--threads T] [--n N] [--window W] [--size B]"
                    " [--requests N] [--warm N]\n"
                    "       [--subs N] [--rate R] [--secs S]\n");
    exit(2);
}

static long num(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        usage();
    return v;
}

static const struct cb_impl *parse(int argc, char **argv, struct cb_opts *o)
{
    const struct cb_impl *impl = NULL;
    static char prefix[64];
    const char *c = NULL;

    *o = (struct cb_opts){.n = 200000,
                          .window = 8192,
                          .size = 64,
                          .requests = 2000,
                          .warm = 200,
                          .subs = 10000,
                          .rate = 100,
                          .secs = 3};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!v)
            usage();
        i++;
        if (!strcmp(k, "--url"))
            o->url = v;
        else if (!strcmp(k, "--impl"))
            impl = !strcmp(v, "es")         ? &cb_es_impl
                   : !strcmp(v, "raw")      ? &cb_raw_impl
                   : !strcmp(v, "raw-asap") ? (o->raw_asap = 1, &cb_raw_impl)
                                            : NULL;
        else if (!strcmp(k, "--case"))
            c = v;
        else if (!strcmp(k, "--prefix"))
            o->prefix = v;
        else if (!strcmp(k, "--threads"))
            o->threads = (unsigned)num(v, 0, 64);
        else if (!strcmp(k, "--n"))
            o->n = num(v, 1, 100000000);
        else if (!strcmp(k, "--window"))
            o->window = num(v, 1, 1000000);
        else if (!strcmp(k, "--size"))
            o->size = (unsigned)num(v, 16, CB_PAYLOAD_MAX);
        else if (!strcmp(k, "--requests"))
            o->requests = num(v, 1, 10000000);
        else if (!strcmp(k, "--warm"))
            o->warm = num(v, 0, 10000000);
        else if (!strcmp(k, "--subs"))
            o->subs = num(v, 2, 1000000);
        else if (!strcmp(k, "--rate"))
            o->rate = (unsigned)num(v, 1, 100000);
        else if (!strcmp(k, "--secs"))
            o->secs = (double)num(v, 1, 600);
        else
            usage();
    }
    if (!o->url || !impl || !c)
        usage();
    if (!strcmp(c, "send"))
        o->bcase = CB_SEND;
    else if (!strcmp(c, "rr"))
        o->bcase = CB_RR;
    else if (!strcmp(c, "fan"))
        o->bcase = CB_FAN;
    else
        usage();
    if (!o->prefix) {
        snprintf(prefix, sizeof(prefix), "cb%ld", (long)getpid());
        o->prefix = prefix;
    }
    return impl;
}

static int child_main(const struct cb_impl *impl, const struct cb_opts *o,
                      struct cb_shm *shm)
{
    struct cb_result unused = {0};
    int rc;

    switch (o->bcase) {
    case CB_SEND:
        rc = impl->rx_send(o, shm);
        break;
    case CB_RR:
        rc = impl->rx_rr(o, shm);
        break;
    default:
        rc = impl->fan(o, shm, 1, &unused);
        break;
    }
    if (rc < 0) {
        int zero = 0;

        atomic_compare_exchange_strong(&shm->child_ready, &zero, -1);
        fprintf(stderr, "cluster_bench: %s child: %s\n", impl->name,
                strerror(-rc));
    }
    return rc < 0 ? 1 : 0;
}

static int parent_main(const struct cb_impl *impl, const struct cb_opts *o,
                       struct cb_shm *shm, struct cb_result *res)
{
    int rc;

    if (o->bcase == CB_FAN)
        return impl->fan(o, shm, 0, res);
    if ((rc = wait_child_ready(shm)) < 0)
        return rc;
    return o->bcase == CB_SEND ? impl->tx_send(o, shm, res)
                               : impl->tx_rr(o, shm, res);
}

static void print(const struct cb_impl *impl, const struct cb_opts *o,
                  const struct cb_result *r, int rc)
{
    static const char *const names[] = {"send", "rr", "fan"};

    printf("case=%s impl=%s%s", names[o->bcase], impl->name,
           o->raw_asap ? "-asap" : "");
    if (o->bcase == CB_SEND)
        printf(" size=%u window=%ld sent=%llu received=%llu secs=%.4f"
               " rate=%.0f",
               o->size, o->window, (unsigned long long)r->sent,
               (unsigned long long)r->received, r->secs, r->rate);
    else
        printf(" %s=%ld samples=%llu failed=%llu p50_us=%.1f p99_us=%.1f"
               " max_us=%.1f",
               o->bcase == CB_RR ? "size" : "subs",
               o->bcase == CB_RR ? (long)o->size : o->subs,
               (unsigned long long)r->samples, (unsigned long long)r->failed,
               r->p50_us, r->p99_us, r->max_us);
    printf(" lost=%llu status=%s\n", (unsigned long long)r->lost,
           rc < 0 ? strerror(-rc) : "ok");
}

int main(int argc, char **argv)
{
    struct cb_opts o;
    const struct cb_impl *impl = parse(argc, argv, &o);
    struct cb_result res = {0};
    struct cb_shm *shm;
    int rc, status;

    shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        perror("cluster_bench: mmap");
        return 1;
    }
    fflush(stdout);
    /* Before any thread exists: nats.c and the runtime start theirs later,
     * in each process on its own. */
    child_pid = fork();
    if (child_pid < 0) {
        perror("cluster_bench: fork");
        return 1;
    }
    if (child_pid == 0)
        _exit(child_main(impl, &o, shm));
    rc = parent_main(impl, &o, shm, &res);
    atomic_store(&shm->parent_done, 1);
    status = reap_child();
    rc = rc < 0 ? rc : status;
    res.lost += atomic_load(&shm->child_lost);
    print(impl, &o, &res, rc);
    munmap(shm, sizeof(*shm));
    if (rc < 0 || res.lost || res.failed ||
        (o.bcase == CB_SEND && res.received != res.sent))
        return 1;
    return 0;
}
