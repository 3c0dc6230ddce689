/* SPDX-License-Identifier: MIT */
/*
 * What the two sides of perf/cluster_bench share: the options, the memory
 * both processes of one case map (made before fork(), so it is the same
 * pages in both), the result line, and the two implementations of every
 * case (cluster_bench_es.c on EventServer's cluster module,
 * cluster_bench_raw.c on bare nats.c) behind one table.
 */
#ifndef CLUSTER_BENCH_H
#define CLUSTER_BENCH_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* Publish sequence numbers of the fan-out case: 100/s for --secs seconds
 * plus the warm-up stay far below this. */
#define CB_MAX_SEQ 16384
/* A side that waits on the other gives up after this long without
 * progress, so a lost message or a dead peer ends the run, not hangs it. */
#define CB_STALL_NS (3 * 1000000000ull)
#define CB_PAYLOAD_MAX 4096

enum cb_case { CB_SEND, CB_RR, CB_FAN };

struct cb_opts {
    const char *url;    /* nats://127.0.0.1:PORT */
    const char *prefix; /* cluster name / subject prefix of this run */
    enum cb_case bcase;
    unsigned threads; /* es demux threads per process (0: online CPUs) */
    long n;           /* send: messages */
    long window;      /* send: most messages sent but not yet received */
    unsigned size;    /* send, rr: payload bytes */
    long requests;    /* rr: measured round trips */
    long warm;        /* rr: unmeasured round trips before them */
    long subs;        /* fan: subscribers over both processes */
    unsigned rate;    /* fan: publishes per second */
    double secs;      /* fan: seconds of publishing */
    /* raw: natsOptions_SetSendAsap (each publish written at once) instead
     * of nats.c's default batching */
    int raw_asap;
};

/*
 * Mapped shared before fork(). Writers: the child (index 1 / rx_*) or the
 * parent (index 0 / the rest); every field has one writing process.
 * Flags are seq_cst atomics; plain fields written before a flag is set
 * are read only after it is seen.
 */
struct cb_shm {
    _Atomic int child_ready;     /* child: 1 set up, -1 failed */
    _Atomic int parent_done;     /* parent: the child may tear down */
    _Atomic uint64_t rx;         /* send: messages the receiver counted */
    _Atomic uint64_t rx_last;    /* send: CLOCK_MONOTONIC ns of the last one */
    _Atomic uint64_t child_lost; /* losses the child's side counted */
    /* fan: per process, how many local subscribers got publish `seq`,
     * and the latency from the publish stamp to the last of them. */
    _Atomic uint32_t fan_count[2][CB_MAX_SEQ];
    _Atomic uint64_t fan_lat[2][CB_MAX_SEQ];
};

struct cb_result {
    /* send */
    uint64_t sent, received;
    double secs, rate;
    /* rr and fan */
    uint64_t samples, failed;
    double p50_us, p99_us, max_us;
    uint64_t lost; /* losses both sides' counters reported */
};

/* One implementation of the three cases. rx_* run in the child and return
 * once parent_done is set; tx_* run in the parent after child_ready and
 * fill *res. fan runs in both (side 0: parent, which also publishes). All
 * return 0 or a negative errno. */
struct cb_impl {
    const char *name;
    int (*rx_send)(const struct cb_opts *o, struct cb_shm *shm);
    int (*tx_send)(const struct cb_opts *o, struct cb_shm *shm,
                   struct cb_result *res);
    int (*rx_rr)(const struct cb_opts *o, struct cb_shm *shm);
    int (*tx_rr)(const struct cb_opts *o, struct cb_shm *shm,
                 struct cb_result *res);
    int (*fan)(const struct cb_opts *o, struct cb_shm *shm, int side,
               struct cb_result *res);
};

extern const struct cb_impl cb_es_impl;
extern const struct cb_impl cb_raw_impl;

/* CLOCK_MONOTONIC in ns: the clock both processes share. */
static inline uint64_t cb_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleeps about us microseconds. */
void cb_sleep_us(unsigned us);

/* Blocks until shm->parent_done (the child's side, after its set-up). */
void cb_wait_parent_done(struct cb_shm *shm);

/* Waits until shm->rx reaches want or stops moving for CB_STALL_NS. */
void cb_wait_rx(struct cb_shm *shm, uint64_t want);

/* Fills the send figures of *res from the shared counters. */
void cb_send_result(struct cb_shm *shm, uint64_t t0, uint64_t sent,
                    struct cb_result *res);

/* Blocks before publish `i` until fewer than o->window messages are in
 * flight; returns -ETIMEDOUT when the receiver stalled. */
int cb_window_wait(const struct cb_opts *o, struct cb_shm *shm, uint64_t i);

/* p50/p99/max of samples[0..n) in ns into *res (sorts samples). */
void cb_percentiles(uint64_t *samples, uint64_t n, struct cb_result *res);

/* Fan-out, either implementation: the subscribers per process (side 0
 * gets the odd one), the publish schedule of side 0 and the latencies. */
long cb_fan_local(const struct cb_opts *o, int side);
typedef int (*cb_publish_fn)(void *ctx, uint64_t seq, uint64_t stamp_ns);
int cb_fan_drive(const struct cb_opts *o, struct cb_shm *shm,
                 cb_publish_fn publish, void *ctx, struct cb_result *res);
/* One local subscriber on `side` got publish `seq` stamped `stamp`; the
 * nlocal-th records the latency. Thread: any. */
void cb_fan_hit(struct cb_shm *shm, int side, long nlocal, uint64_t seq,
                uint64_t stamp);
/* Records the latency of `seq` on `side` (all local subscribers have it). */
void cb_fan_done(struct cb_shm *shm, int side, uint64_t seq, uint64_t stamp);

#endif /* CLUSTER_BENCH_H */
