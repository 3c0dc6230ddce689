/* SPDX-License-Identifier: MIT */
/*
 * The ceiling of ring_bench: raw_spsc, raw_mpsc_1p and raw_mpsc_4p move the
 * 64-byte es_msg_t by value through a bare ck_ring, the structure
 * EventServer's channels are built from, with nothing around it: no
 * mailbox, no actor, no wakeup. The consumer spins on an empty ring and
 * the producers on a full one, so these figures bound what es_send() can
 * reach on this machine.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "rb_common.h"

#include <ck_pr.h>
#include <ck_ring.h>

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* --- raw_spsc, raw_mpsc_*: bare ck_ring ----------------------------------- */

/* The ring carries es_msg_t by value: ck_ring_*_msg() copy 64 bytes. */
CK_RING_PROTOTYPE(msg, es_msg)

/*
 * A bare ck_ring between producers and one consumer. With one producer the
 * two threads are pinned to two CPUs; with more producers than spare CPUs
 * they are left to the scheduler, which is where MPSC collapses: a producer
 * preempted between reserving its slot and committing it stalls every
 * producer behind it. ck_ring keeps its producer and consumer counters on
 * separate cache lines; `stop` is written once, by the consumer, when it is
 * done, so the producers' loads of it stay cache hits until then.
 */
struct raw_ring {
    alignas(64) struct ck_ring ring;
    es_msg_t *slots;
    bool mpsc, pin;
    uint64_t target, budget_ns;
    const struct bench_cfg *cfg;
    struct gate start;
    /* Read by the producers before every push: a line of its own. */
    alignas(64) atomic_bool stop;
    /* Consumer's results, written once at the end, read after the join. */
    alignas(64) uint64_t consumed, elapsed_ns;
    bool capped;
    struct seq_check seq[MAX_PRODUCERS];
};

struct raw_producer {
    struct raw_ring *r;
    uint64_t index, quota;
};

static bool raw_push(struct raw_ring *r, es_msg_t *m)
{
    if (r->mpsc)
        return ck_ring_enqueue_mpsc_msg(&r->ring, r->slots, m);
    return ck_ring_enqueue_spsc_msg(&r->ring, r->slots, m);
}

static bool raw_pop(struct raw_ring *r, es_msg_t *m)
{
    if (r->mpsc)
        return ck_ring_dequeue_mpsc_msg(&r->ring, r->slots, m);
    return ck_ring_dequeue_spsc_msg(&r->ring, r->slots, m);
}

static void *raw_producer_main(void *arg)
{
    struct raw_producer *p = arg;
    struct raw_ring *r = p->r;
    es_msg_t m = es_msg_make(MSG_DATA);

    if (r->pin)
        pin_self(r->cfg, 0);
    if (!gate_pass(&r->start))
        return NULL;
    m.inl.u64[1] = p->index;
    for (uint64_t i = 0; i < p->quota; i++) {
        m.inl.u64[0] = i;
        /*
         * Checked before every push, not only when the ring is full: once
         * the consumer stops, a stalled MPSC ring would take seconds to
         * fill (each push waits for the producer before it to be scheduled).
         */
        if (atomic_load_explicit(&r->stop, memory_order_relaxed))
            return NULL;
        while (!raw_push(r, &m)) {
            if (atomic_load_explicit(&r->stop, memory_order_relaxed))
                return NULL;
            ck_pr_stall();
        }
    }
    return NULL;
}

static void *raw_consumer_main(void *arg)
{
    struct raw_ring *r = arg;
    struct seq_check seq[MAX_PRODUCERS] = {0};
    uint64_t n = 0, iter = 0, t0, deadline;
    es_msg_t m;

    if (r->pin)
        pin_self(r->cfg, 1);
    if (!gate_pass(&r->start))
        return NULL;
    t0 = now_ns();
    deadline = t0 + r->budget_ns;
    while (n < r->target) {
        if (raw_pop(r, &m)) {
            seq_check(&seq[m.inl.u64[1] % MAX_PRODUCERS], m.inl.u64[0]);
            n++;
        } else {
            ck_pr_stall();
        }
        if ((++iter & (CLOCK_EVERY - 1)) == 0 && now_ns() > deadline) {
            r->capped = true;
            break;
        }
    }
    r->elapsed_ns = now_ns() - t0;
    r->consumed = n;
    memcpy(r->seq, seq, sizeof(seq));
    atomic_store_explicit(&r->stop, true, memory_order_relaxed);
    return NULL;
}

static int raw_start(struct raw_ring *r, struct raw_producer *prod,
                     unsigned producers)
{
    struct team team = {.start = &r->start};
    int rc = team_spawn(&team, raw_consumer_main, r);

    for (unsigned i = 0; i < producers && !rc; i++) {
        prod[i] = (struct raw_producer){
            .r = r,
            .index = i,
            .quota =
                r->target / producers + (i == 0 ? r->target % producers : 0),
        };
        rc = team_spawn(&team, raw_producer_main, &prod[i]);
    }
    rc = team_start(&team, rc);
    team_join(&team);
    return rc;
}

static int run_raw_ring(const struct bench_cfg *cfg, struct run_out *out,
                        unsigned producers, bool mpsc)
{
    struct raw_producer prod[MAX_PRODUCERS];
    struct raw_ring *r;
    int rc;

    r = aligned_alloc(64, sizeof(*r));
    if (!r)
        return -ENOMEM;
    *r = (struct raw_ring){.mpsc = mpsc,
                           .pin = producers == 1,
                           .target = cfg->mode->msgs,
                           .budget_ns = cfg->mode->budget_ns,
                           .cfg = cfg};
    r->slots = aligned_alloc(64, RING_SLOTS * sizeof(es_msg_t));
    rc = r->slots ? gate_init(&r->start) : -ENOMEM;
    if (rc) {
        fault_set(&out->fault, rc, "raw ring setup");
        goto free_ring;
    }
    ck_ring_init(&r->ring, RING_SLOTS);
    rc = raw_start(r, prod, producers);
    if (rc)
        fault_set(&out->fault, rc, "starting threads");
    for (unsigned i = 0; i < producers && !rc; i++)
        rc = seq_report(&r->seq[i], out);
    out->msgs = r->consumed;
    out->elapsed_ns = r->elapsed_ns;
    out->capped = r->capped;
    gate_close(&r->start);
free_ring:
    free(r->slots);
    free(r);
    return rc;
}

int case_raw_spsc(const struct bench_cfg *cfg, struct run_out *out)
{
    return run_raw_ring(cfg, out, 1, false);
}

int case_raw_mpsc_1p(const struct bench_cfg *cfg, struct run_out *out)
{
    return run_raw_ring(cfg, out, 1, true);
}

int case_raw_mpsc_4p(const struct bench_cfg *cfg, struct run_out *out)
{
    return run_raw_ring(cfg, out, MAX_PRODUCERS, true);
}
