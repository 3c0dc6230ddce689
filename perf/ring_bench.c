/* SPDX-License-Identifier: MIT */
/*
 * ring_bench measures EventServer's message path next to what it is built
 * from and what it replaces, in one process and one run: a bare ck_ring
 * (SPSC, and MPSC with one and four producers: the ceiling), es_send()
 * across demux threads, from foreign threads, within one thread, as a
 * ping-pong and as a sparse trickle that lets the loops sleep, and three
 * naive queues (a socketpair write per message, a mutex + condvar queue,
 * libuv's uv_async_send). Every throughput case moves the same N messages
 * of 64 bytes (es_msg_t, one cache line) per run, or as many as its time
 * budget allows, runs several times and reports the median. It prints a
 * table, or with --json one JSON object, and then the ratios the design
 * targets, judged within the same run. This file holds the command line,
 * the case table, the runs of each case and the report; the cases live in
 * rb_raw.c, rb_es.c and rb_naive.c, the tools they share in rb_common.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif

#include "rb_common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* --- modes ---------------------------------------------------------------- */

static const struct bench_mode default_mode = {
    "default", 10000000, 5, 3 * NS_PER_SEC, 100000, 100000,
};
static const struct bench_mode quick_mode = {
    "quick", 2000000, 3, 2 * NS_PER_SEC / 5, 20000, 20000,
};

/* --- the cases ------------------------------------------------------------ */

typedef int (*case_fn)(const struct bench_cfg *cfg, struct run_out *out);

enum {
    CASE_PACED = 1, /* throughput is set by a pacer: not reported */
};

struct bench_case {
    const char *name;
    case_fn run;
    unsigned flags;
};

static const struct bench_case cases[] = {
    {"raw_spsc", case_raw_spsc, 0},
    {"raw_mpsc_1p", case_raw_mpsc_1p, 0},
    {"raw_mpsc_4p", case_raw_mpsc_4p, 0},
    {"es_cross_thread", case_es_cross_thread, 0},
    {"es_cross_thread_4senders", case_es_cross_thread_4senders, 0},
    {"es_same_thread", case_es_same_thread, 0},
    {"es_request_cross_thread", case_es_request_cross_thread, 0},
    {"es_request_same_thread", case_es_request_same_thread, 0},
    {"es_monitor_down", case_es_monitor_down, 0},
    {"es_link_chain", case_es_link_chain, 0},
    {"es_link_chain_same_thread", case_es_link_chain_same_thread, 0},
    {"es_pingpong", case_es_pingpong, 0},
    {"es_sparse", case_es_sparse, CASE_PACED},
    {"socketpair_per_msg", case_socketpair, 0},
    {"mutex_condvar", case_mutex_condvar, 0},
    {"uv_async", case_uv_async, 0},
};

enum { NCASES = sizeof(cases) / sizeof(cases[0]) };

/* The figures of one case over all its runs; NAN where they do not apply. */
struct case_result {
    const struct bench_case *c;
    bool ran;
    double rate, wakeups, p50, p99;
    double msgs; /* median messages measured per run */
    unsigned capped_runs;
    char err[ERR_LEN + 32];
};

static void print_run(const struct bench_cfg *cfg, const struct bench_case *c,
                      unsigned k, const struct run_out *out)
{
    const es_stats_t *s = &out->es;

    if (!cfg->verbose)
        return;
    fprintf(stderr, "  %s run %u: %" PRIu64 " msgs in %.3f ms%s", c->name,
            k + 1, out->msgs, (double)out->elapsed_ns / 1e6,
            out->capped ? " (capped)" : "");
    if (out->has_es)
        fprintf(stderr,
                "; sent %" PRIu64 " recv %" PRIu64 " full %" PRIu64
                " eagain %" PRIu64 " wake %" PRIu64 " saved %" PRIu64
                " turns %" PRIu64 " sleeps %" PRIu64,
                s->msgs_sent, s->msgs_received, s->mailbox_full, out->eagain,
                s->wakeups_written, s->wakeups_saved, s->loop_turns, s->sleeps);
    fputc('\n', stderr);
}

static int run_once(const struct bench_cfg *cfg, const struct bench_case *c,
                    unsigned k, struct samples *lat, double *rate, double *wake,
                    double *msgs, struct case_result *res)
{
    struct run_out out = {.wakeups = -1, .lat = lat};
    int rc = c->run(cfg, &out);

    if (!rc && (out.msgs == 0 || out.elapsed_ns == 0)) {
        rc = -EPROTO;
        fault_set(&out.fault, rc, "no messages measured");
    }
    if (rc) {
        snprintf(res->err, sizeof(res->err), "run %u: %s (%s)", k + 1,
                 out.fault.rc ? out.fault.what : "failed",
                 es_strerror(out.fault.rc ? out.fault.rc : rc));
        return rc;
    }
    print_run(cfg, c, k, &out);
    *rate = (double)out.msgs * 1e9 / (double)out.elapsed_ns;
    *wake = out.wakeups < 0 ? NAN : (double)out.wakeups / (double)out.msgs;
    *msgs = (double)out.msgs;
    res->capped_runs += out.capped;
    return 0;
}

static void run_case(const struct bench_cfg *cfg, const struct bench_case *c,
                     struct case_result *res)
{
    double rate[MAX_REPEATS], wake[MAX_REPEATS], msgs[MAX_REPEATS];
    unsigned reps = cfg->mode->repeats;
    struct samples lat = {0};

    *res = (struct case_result){.c = c,
                                .ran = true,
                                .rate = NAN,
                                .wakeups = NAN,
                                .p50 = NAN,
                                .p99 = NAN,
                                .msgs = NAN};
    for (unsigned k = 0; k < reps; k++) {
        if (cfg->progress)
            fprintf(stderr, "\r%-26s run %u/%u ", c->name, k + 1, reps);
        if (run_once(cfg, c, k, &lat, &rate[k], &wake[k], &msgs[k], res))
            goto out;
    }
    if (!(c->flags & CASE_PACED))
        res->rate = median(rate, reps);
    res->wakeups = isnan(wake[0]) ? NAN : median(wake, reps);
    res->msgs = median(msgs, reps);
    if (lat.n) {
        samples_sort(&lat);
        res->p50 = percentile(&lat, 0.50);
        res->p99 = percentile(&lat, 0.99);
    }
out:
    if (cfg->progress)
        fputs("\r\033[K", stderr);
    free(lat.v);
}

/* --- ratios against the design targets ------------------------------------ */

enum ratio_field { FIELD_RATE, FIELD_WAKEUPS };

/* num / den, or num alone when den is NULL; compared with target. */
struct ratio_def {
    const char *label;
    const char *num, *den;
    enum ratio_field field;
    double target;
    bool at_most; /* the target is an upper bound */
    double scale; /* for display */
    const char *unit;
};

static const struct ratio_def ratio_defs[] = {
    {"es_cross_thread / raw_spsc", "es_cross_thread", "raw_spsc", FIELD_RATE,
     0.4, false, 1, ""},
    {"es_cross_thread / socketpair_per_msg", "es_cross_thread",
     "socketpair_per_msg", FIELD_RATE, 30, false, 1, ""},
    {"es_cross_thread / uv_async", "es_cross_thread", "uv_async", FIELD_RATE, 2,
     false, 1, ""},
    {"es_cross_thread_4senders msgs/s", "es_cross_thread_4senders", NULL,
     FIELD_RATE, 10e6, false, 1e-6, " M/s"},
    {"es_same_thread msgs/s", "es_same_thread", NULL, FIELD_RATE, 50e6, false,
     1e-6, " M/s"},
    /* ns per completed request/reply over ns per one-way send, halved:
     * a request/reply against two one-way sends (issue 10: <= 2.5). */
    {"es_request_cross_thread ns / 2 sends", "es_cross_thread",
     "es_request_cross_thread", FIELD_RATE, 5.0, true, 0.5, ""},
    {"es_request_same_thread ns / 2 sends", "es_same_thread",
     "es_request_same_thread", FIELD_RATE, 5.0, true, 0.5, ""},
    {"steady-load wakeups/msg (es_cross_thread)", "es_cross_thread", NULL,
     FIELD_WAKEUPS, 0.001, true, 1, ""},
};

enum { NRATIOS = sizeof(ratio_defs) / sizeof(ratio_defs[0]) };

static double case_field(const struct case_result *res, const char *name,
                         enum ratio_field field)
{
    for (unsigned i = 0; i < NCASES; i++) {
        if (!res[i].ran || strcmp(res[i].c->name, name) != 0)
            continue;
        return field == FIELD_RATE ? res[i].rate : res[i].wakeups;
    }
    return NAN;
}

static double ratio_value(const struct ratio_def *d,
                          const struct case_result *res)
{
    double num = case_field(res, d->num, d->field);

    return d->den ? num / case_field(res, d->den, d->field) : num;
}

/* Returns: 1 met, 0 missed, -1 not measured. */
static int ratio_met(const struct ratio_def *d, double v)
{
    if (!isfinite(v))
        return -1;
    return d->at_most ? v <= d->target : v >= d->target;
}

/* --- output --------------------------------------------------------------- */

struct machine {
    char date[32];
    char desc[256];
};

static void cpu_model(char *buf, size_t len)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];

    snprintf(buf, len, "unknown CPU");
    while (f && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');

        if (strncmp(line, "model name", 10) != 0 || !colon)
            continue;
        colon += strspn(colon + 1, " \t") + 1;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(buf, len, "%s", colon);
        break;
    }
    if (f)
        fclose(f);
}

static void machine_describe(const struct bench_cfg *cfg, struct machine *m)
{
    time_t t = time(NULL);
    struct utsname u;
    struct tm tm;
    char model[160];

    gmtime_r(&t, &tm);
    strftime(m->date, sizeof(m->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (uname(&u))
        snprintf(u.machine, sizeof(u.machine), "unknown");
    cpu_model(model, sizeof(model));
    snprintf(m->desc, sizeof(m->desc), "%s, %s, %u CPUs", u.machine, model,
             cfg->ncpus);
}

static void print_num(double v, const char *fmt, int width)
{
    if (isnan(v))
        printf(" %*s", width, "-");
    else
        printf(fmt, width, v);
}

static void print_row(const struct case_result *r)
{
    printf("%-26s", r->c->name);
    if (r->err[0]) {
        printf(" FAILED: %s\n", r->err);
        return;
    }
    print_num(r->rate / 1e6, " %*.2f", 10);
    print_num(1e9 / r->rate, " %*.1f", 8);
    print_num(r->wakeups, " %*.5f", 12);
    print_num(r->p50, " %*.0f", 9);
    print_num(r->p99, " %*.0f", 9);
    print_num(r->msgs, " %*.0f", 10);
    printf("%s\n", r->capped_runs ? " *" : "");
}

static void print_notes(const struct bench_cfg *cfg)
{
    const struct bench_mode *m = cfg->mode;

    printf("\nmedian of %u runs; p50/p99 over all samples of all runs.\n"
           "raw_*: ck_ring of %d slots carrying the 64-byte es_msg_t by value "
           "(CK_RING_PROTOTYPE); ",
           m->repeats, RING_SLOTS);
    if (cfg->pin)
        printf("with one producer, producer pinned to CPU %d and consumer to "
               "CPU %d;\n  raw_mpsc_4p not pinned (more threads than CPUs: "
               "a preempted producer stalls the others).\n",
               cfg->cpu[0], cfg->cpu[1]);
    else
        printf("threads not pinned (one CPU).\n");
    printf("es_*: mailbox_capacity %d, channel_capacity and spin_us default; "
           "actor senders send %d per turn, then kick themselves.\n"
           "es_pingpong: msgs/s = 2 x round trips/s, p50/p99 = round trip.\n"
           "es_sparse: one message per %llu us from a foreign thread to a "
           "1-thread runtime; latency = es_send() to behaviour.\n"
           "* = a run hit its %.1f s budget before N = %" PRIu64
           "; msgs/run is what was measured.\n",
           BENCH_MAILBOX, SEND_BATCH, SPARSE_INTERVAL_NS / 1000,
           (double)m->budget_ns / 1e9, m->msgs);
}

static void print_ratios(const struct case_result *res)
{
    static const char *const verdict[] = {"n/a", "missed", "met"};

    printf("\nratios (this run)\n");
    for (unsigned i = 0; i < NRATIOS; i++) {
        const struct ratio_def *d = &ratio_defs[i];
        double v = ratio_value(d, res);
        char val[32] = "n/a", target[32];

        if (isfinite(v))
            snprintf(val, sizeof(val), "%.4g%s", v * d->scale, d->unit);
        snprintf(target, sizeof(target), "%s %g%s",
                 d->at_most ? "<=" : ">=", d->target * d->scale, d->unit);
        printf("  %-42s %12s   target %-12s %s\n", d->label, val, target,
               verdict[ratio_met(d, v) + 1]);
    }
}

static void print_table(const struct bench_cfg *cfg, const struct machine *m,
                        const struct case_result *res)
{
    printf("ring_bench  %s  %s  (mode %s, N = %" PRIu64 ")\n\n", m->date,
           m->desc, cfg->mode->name, cfg->mode->msgs);
    printf("%-26s %10s %8s %12s %9s %9s %10s\n", "case", "M msgs/s", "ns/msg",
           "wakeups/msg", "p50 ns", "p99 ns", "msgs/run");
    for (unsigned i = 0; i < NCASES; i++)
        if (res[i].ran)
            print_row(&res[i]);
    print_notes(cfg);
    print_ratios(res);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void json_num(double v)
{
    if (isfinite(v))
        printf("%.6g", v);
    else
        fputs("null", stdout);
}

static void json_case(const struct case_result *r)
{
    printf("{\"name\":");
    json_str(r->c->name);
    printf(",\"msgs_per_sec\":");
    json_num(r->rate);
    printf(",\"ns_per_msg\":");
    json_num(1e9 / r->rate);
    printf(",\"wakeups_per_msg\":");
    json_num(r->wakeups);
    printf(",\"p50_ns\":");
    json_num(r->p50);
    printf(",\"p99_ns\":");
    json_num(r->p99);
    printf(",\"msgs_per_run\":");
    json_num(r->msgs);
    printf(",\"capped_runs\":%u,\"error\":", r->capped_runs);
    if (r->err[0])
        json_str(r->err);
    else
        fputs("null", stdout);
    putchar('}');
}

static void json_ratio(const struct ratio_def *d, const struct case_result *r)
{
    double v = ratio_value(d, r);
    int met = ratio_met(d, v);

    printf("{\"name\":");
    json_str(d->label);
    printf(",\"num\":");
    json_str(d->num);
    printf(",\"den\":");
    if (d->den)
        json_str(d->den);
    else
        fputs("null", stdout);
    printf(",\"field\":\"%s\",\"value\":",
           d->field == FIELD_RATE ? "msgs_per_sec" : "wakeups_per_msg");
    json_num(v);
    printf(",\"target\":%g,\"op\":\"%s\",\"met\":%s}", d->target,
           d->at_most ? "<=" : ">=",
           met < 0 ? "null"
           : met   ? "true"
                   : "false");
}

static void print_json(const struct bench_cfg *cfg, const struct machine *m,
                       const struct case_result *res)
{
    const char *sep = "";

    printf("{\"date\":");
    json_str(m->date);
    printf(",\"machine\":");
    json_str(m->desc);
    printf(",\"mode\":\"%s\",\"msgs\":%" PRIu64 ",\"repeats\":%u,\"cases\":[",
           cfg->mode->name, cfg->mode->msgs, cfg->mode->repeats);
    for (unsigned i = 0; i < NCASES; i++) {
        if (!res[i].ran)
            continue;
        fputs(sep, stdout);
        json_case(&res[i]);
        sep = ",";
    }
    printf("],\"ratios\":[");
    for (unsigned i = 0; i < NRATIOS; i++) {
        fputs(i ? "," : "", stdout);
        json_ratio(&ratio_defs[i], res);
    }
    printf("]}\n");
}

/* --- command line --------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ring_bench [--quick] [--json] [--verbose] "
            "[--case NAME]... [--list]\n"
            "  --quick    N = %" PRIu64 ", %u runs per case (<= 20 s)\n"
            "  --json     one JSON object on stdout instead of the table\n"
            "  --verbose  per-run figures and runtime counters on stderr\n"
            "  --case     run only this case (repeatable)\n"
            "  --list     print the case names\n",
            quick_mode.msgs, quick_mode.repeats);
}

static int find_case(const char *name)
{
    for (unsigned i = 0; i < NCASES; i++)
        if (strcmp(cases[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* --case NAME. Returns: 0, or 2 if there is no such case. */
static int select_case(const char *name, bool *selected)
{
    int idx = find_case(name);

    if (idx < 0) {
        fprintf(stderr, "ring_bench: no case '%s' (see --list)\n", name);
        return 2;
    }
    selected[idx] = true;
    return 0;
}

/* Returns: 0 to run, 1 to exit successfully, 2 on a usage error. */
static int parse_args(int argc, char **argv, struct bench_cfg *cfg,
                      bool *selected)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--quick") == 0) {
            cfg->mode = &quick_mode;
        } else if (strcmp(a, "--json") == 0) {
            cfg->json = true;
        } else if (strcmp(a, "--verbose") == 0) {
            cfg->verbose = true;
        } else if (strcmp(a, "--list") == 0) {
            for (unsigned k = 0; k < NCASES; k++)
                puts(cases[k].name);
            return 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--case") == 0) {
            if (select_case(i + 1 < argc ? argv[++i] : "", selected))
                return 2;
        } else {
            fprintf(stderr, "ring_bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* The first two CPUs this process may run on, for the raw cases. */
static void find_cpus(struct bench_cfg *cfg)
{
    cpu_set_t set;
    unsigned found = 0;

    cfg->ncpus = 1;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return;
    cfg->ncpus = (unsigned)CPU_COUNT(&set);
    for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
        if (CPU_ISSET((size_t)c, &set))
            cfg->cpu[found++] = c;
    cfg->pin = found == 2;
}

int main(int argc, char **argv)
{
    struct bench_cfg cfg = {.mode = &default_mode};
    struct case_result res[NCASES] = {0};
    bool selected[NCASES] = {false}, any = false, failed = false;
    struct machine m;
    int rc = parse_args(argc, argv, &cfg, selected);

    if (rc)
        return rc == 1 ? 0 : 2;
    find_cpus(&cfg);
    machine_describe(&cfg, &m);
    cfg.progress = isatty(STDERR_FILENO) && !cfg.verbose;
    for (unsigned i = 0; i < NCASES; i++)
        any |= selected[i];
    for (unsigned i = 0; i < NCASES; i++) {
        if (any && !selected[i])
            continue;
        run_case(&cfg, &cases[i], &res[i]);
        failed |= res[i].err[0] != '\0';
    }
    if (cfg.json)
        print_json(&cfg, &m, res);
    else
        print_table(&cfg, &m, res);
    return failed ? 1 : 0;
}
