/* SPDX-License-Identifier: MIT */
/*
 * What the files of ring_bench share: the sizes and budgets every case
 * uses, the run mode and the command line's choices, the message types,
 * the result of one run (struct run_out), the tools the cases are built
 * from (clock, first-fault record, latency samples, sequence checks, the
 * start/finish gate, the thread team, CPU pinning; rb_common.c) and the
 * entry point of every case, one file per family: rb_raw.c, rb_es.c and
 * rb_naive.c. ring_bench.c holds the case table and the report. The tools
 * on a case's hot path are static inline here, so that splitting the
 * program into files costs no call per message.
 */
#ifndef ES_PERF_RB_COMMON_H
#define ES_PERF_RB_COMMON_H

#include <eventserver/eventserver.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* --- sizes, budgets and modes --------------------------------------------- */

enum {
    MSG_SIZE = 64,      /* bytes per message in every case: one es_msg_t */
    RING_SLOTS = 4096,  /* raw ck_ring slots: a power of two, as ES_CHANNEL */
    QUEUE_SLOTS = 4096, /* mutex_condvar and uv_async queue slots */
    SEND_BATCH = 256,   /* es_send()s per behaviour call; then the loop turns */
    BENCH_MAILBOX = 65536,  /* deep enough that the mailbox is not the limit */
    CLOCK_EVERY = 4096,     /* consumer iterations per deadline check (2^k) */
    SPIN_BEFORE_YIELD = 64, /* pauses on -EAGAIN before sched_yield() */
    MAX_PRODUCERS = 4,      /* raw_mpsc_4p */
    FANIN_SENDERS = 4,      /* es_cross_thread_4senders: foreign threads */
    FANIN_LOOPS = 2,        /* ... to one receiver each, spread over 2 loops */
    MAX_THREADS = 8,        /* threads one case starts */
    MAX_REPEATS = 9,
    ERR_LEN = 160,
};

_Static_assert(sizeof(es_msg_t) == MSG_SIZE, "es_msg_t is one cache line");
_Static_assert((CLOCK_EVERY & (CLOCK_EVERY - 1)) == 0, "CLOCK_EVERY is 2^k");

#define NS_PER_SEC 1000000000ull
#define SPARSE_INTERVAL_NS 10000ull /* es_sparse: one message every 10 us */
/* How long past its budget a run may take before it is declared hung. */
#define GRACE_NS (10 * NS_PER_SEC)

/* How much one run does; --quick picks the small one (`make run`). */
struct bench_mode {
    const char *name;
    uint64_t msgs;      /* N: messages per run of every throughput case */
    unsigned repeats;   /* runs per case; the median is reported */
    uint64_t budget_ns; /* wall-time cap of one run */
    uint64_t rounds;    /* es_pingpong round trips per run */
    uint64_t sparse;    /* es_sparse messages per run */
};

/* Message types of every case; the raw cases reuse MSG_DATA. */
enum bench_msg_type {
    MSG_DATA = ES_MSG_USER, /* counted; inl.u64[0] = sequence number */
    MSG_END,                /* follows a sender's last MSG_DATA */
    MSG_GO,                 /* from the main thread: start measuring */
    MSG_KICK,               /* to self: send the next batch */
    MSG_PING,
    MSG_PONG,
    MSG_STAMP, /* es_sparse; inl.u64[0] = send time */
};

/* What the command line chose; read-only once the cases run. */
struct bench_cfg {
    const struct bench_mode *mode;
    bool json, verbose, progress;
    bool pin;   /* two CPUs are available to pin the raw cases to */
    int cpu[2]; /* producer side, consumer side */
    unsigned ncpus;
};

/* --- small tools (rb_common.c) -------------------------------------------- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* The first error of a case, with where it happened. */
struct fault {
    int rc;
    char what[ERR_LEN];
};

/* Records rc and the formatted message unless f already holds a fault. */
__attribute__((format(printf, 3, 4))) void fault_set(struct fault *f, int rc,
                                                     const char *fmt, ...);

/* Latency samples of one case, in nanoseconds. */
struct samples {
    uint64_t *v;
    size_t n, cap;
};

/* Makes room for `more` samples. Returns: 0, -ENOMEM or -EOVERFLOW. */
int samples_reserve(struct samples *s, size_t more);

/* Never grows: callers reserve first, so an actor never allocates. */
static inline void samples_push(struct samples *s, uint64_t ns)
{
    if (s->n < s->cap)
        s->v[s->n++] = ns;
}

/* Sorts the samples in place, for percentile(). */
void samples_sort(struct samples *s);

/* Nearest-rank percentile of sorted samples. */
double percentile(const struct samples *s, double p);

/* Median of v[0..n), which it sorts. */
double median(double *v, unsigned n);

/* Pins the calling thread to cfg->cpu[side] when cfg->pin; best effort. */
void pin_self(const struct bench_cfg *cfg, int side);

/* --- gate: start line and finish line ------------------------------------- */

/*
 * A counter and a state under one lock. Threads count their arrival and wait
 * for the state to leave GATE_WAIT; actors count when they finish; the main
 * thread waits for a count, with a deadline on the monotonic clock.
 */
enum { GATE_WAIT, GATE_GO, GATE_ABORT };

struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned count;
    int state;
};

/* Returns: 0 or -errno. */
int gate_init(struct gate *g);
void gate_close(struct gate *g);
/* Counts one arrival or one finish. */
void gate_count(struct gate *g);
/* Counts the caller in and waits for the start. Returns: true on GATE_GO. */
bool gate_pass(struct gate *g);
void gate_set(struct gate *g, int state);
/* Returns: true once count reached n, false if deadline_ns passed first. */
bool gate_await(struct gate *g, unsigned n, uint64_t deadline_ns);

/* --- team: the threads of one case ---------------------------------------- */

struct team {
    pthread_t tid[MAX_THREADS];
    unsigned n;
    struct gate *start;
};

/* Starts fn(arg) as one more thread of the team. Returns: 0 or -errno. */
int team_spawn(struct team *t, void *(*fn)(void *), void *arg);
/* Opens the start gate once every thread waits there, or aborts if rc. */
int team_start(struct team *t, int rc);
void team_join(struct team *t);

/* --- one run of one case -------------------------------------------------- */

/* What one run measured. */
struct run_out {
    uint64_t msgs;       /* messages the receiving side took */
    uint64_t elapsed_ns; /* first send (or the start gate) to last receive */
    int64_t wakeups;     /* wakeup events in the interval; -1: n/a */
    bool capped;         /* the time budget ran out before N */
    bool has_es;
    es_stats_t es;       /* es cases: counter deltas over the interval */
    uint64_t eagain;     /* es cases: -EAGAIN seen by the senders */
    struct samples *lat; /* latency cases append here */
    struct fault fault;
};

/* Checks the sequence numbers of one sender. */
struct seq_check {
    uint64_t next, errors;
};

static inline void seq_check(struct seq_check *c, uint64_t seq)
{
    if (seq != c->next)
        c->errors++;
    c->next = seq + 1;
}

/* Returns: out's first fault, after recording c's errors as one. */
int seq_report(const struct seq_check *c, struct run_out *out);

/* Copies the first fault among an actor's and the run's own. */
int fault_merge(struct run_out *out, const struct fault *f);

/* --- the cases ------------------------------------------------------------ */

/* One run each. Returns: 0 or -errno; out->fault says where it failed. */

/* rb_raw.c: a bare ck_ring, the ceiling. */
int case_raw_spsc(const struct bench_cfg *cfg, struct run_out *out);
int case_raw_mpsc_1p(const struct bench_cfg *cfg, struct run_out *out);
int case_raw_mpsc_4p(const struct bench_cfg *cfg, struct run_out *out);

/* rb_es.c: es_send() between actors and from foreign threads. */
int case_es_cross_thread(const struct bench_cfg *cfg, struct run_out *out);
int case_es_cross_thread_4senders(const struct bench_cfg *cfg,
                                  struct run_out *out);
int case_es_same_thread(const struct bench_cfg *cfg, struct run_out *out);
int case_es_request_cross_thread(const struct bench_cfg *cfg,
                                 struct run_out *out);
int case_es_request_same_thread(const struct bench_cfg *cfg,
                                struct run_out *out);
/* Monitor set + es_stop + DOWN, watcher and targets on two threads (ns per
 * monitor), and one failure stopping a chain of 1,000 linked actors over
 * two threads (ns per actor stopped): issue 10's monitor and link costs. */
int case_es_monitor_down(const struct bench_cfg *cfg, struct run_out *out);
int case_es_link_chain(const struct bench_cfg *cfg, struct run_out *out);
int case_es_link_chain_same_thread(const struct bench_cfg *cfg,
                                   struct run_out *out);
int case_es_pingpong(const struct bench_cfg *cfg, struct run_out *out);
int case_es_sparse(const struct bench_cfg *cfg, struct run_out *out);

/* rb_naive.c: the queues EventServer replaces. */
int case_socketpair(const struct bench_cfg *cfg, struct run_out *out);
int case_mutex_condvar(const struct bench_cfg *cfg, struct run_out *out);
int case_uv_async(const struct bench_cfg *cfg, struct run_out *out);

#endif /* ES_PERF_RB_COMMON_H */
