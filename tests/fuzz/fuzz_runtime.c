/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the runtime API (src/). Each input is a program of
 * two-byte operations run by two foreign threads at once against a fresh
 * runtime with two demux threads: spawn, send (inline or out-of-line),
 * stop, and commands that make an actor start or cancel timers, stop
 * itself or forward a message to another actor. (Monitors do not exist in
 * the runtime yet; when they do, a monitor operation belongs here.) The
 * run is checked against a simple model:
 *   - every message es_send() accepted is delivered or dead-lettered
 *     exactly once; a refused one (-EAGAIN, -ESRCH) never is, and stays
 *     the sender's (out-of-line payloads are freed by whoever owns them,
 *     so LeakSanitizer sees a lost or doubly-freed one);
 *   - messages from one sender to one receiver arrive in the order sent;
 *   - every spawned actor gets START first, STOP last, then state_free,
 *     each exactly once;
 *   - a cancelled timer never fires afterwards, a one-shot fires once.
 */
#include "fuzz_util.h"

#include <eventserver/timer.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ACTORS 8
#define MAX_MSGS 1024
#define MAX_OPS 400
#define NTHREADS 2
#define NSENDERS (NTHREADS + MAX_ACTORS) /* threads, then actors */
#define NTIMERS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    M_DATA = ES_MSG_USER, /* inl: id, sender, seq */
    M_DATA_PTR,           /* ptr: struct payload */
    M_TIMER_START,        /* inl: id, after_ms, repeat_ms */
    M_TIMER_STOP,         /* inl: id */
    M_SELF_STOP,          /* inl: id */
    M_FORWARD,            /* inl: id, target index */
    M_LAST = M_FORWARD,
};

enum { T_NONE, T_ONESHOT, T_REPEAT, T_CANCELLED, T_FIRED, T_PENDING };

struct payload {
    uint64_t id, sender, seq;
};

struct ctx;

struct actor {
    struct ctx *cx;
    int idx;
    bool started, stopped;
    atomic_int freed;
    uint64_t last_seq[NSENDERS];  /* receiver's thread only */
    uint64_t fwd_seq[MAX_ACTORS]; /* this actor's thread only */
    es_timer_id_t timer[NTIMERS];
    uint8_t tstate[NTIMERS];
};

struct ctx {
    es_runtime_t *rt;
    _Atomic es_actor_id_t ids[MAX_ACTORS];
    atomic_bool taken[MAX_ACTORS];
    struct actor a[MAX_ACTORS];
    atomic_uchar accepted[MAX_MSGS];
    atomic_uchar outcome[MAX_MSGS]; /* deliveries + dead letters */
    atomic_uint next_id;
    const uint8_t *ops;
    size_t nops;
};

/* --- Accounting ------------------------------------------------------------
 */

static bool ours(const es_msg_t *m)
{
    return m->type >= M_DATA && m->type <= M_LAST;
}

static uint64_t msg_id(const es_msg_t *m)
{
    if (m->type == M_DATA_PTR)
        return ((const struct payload *)m->ptr)->id;
    return m->inl.u64[0];
}

static void account(struct ctx *cx, const es_msg_t *m)
{
    uint64_t id = msg_id(m);
    if (id >= MAX_MSGS)
        fz_fail("a message with an id never sent: %llu",
                (unsigned long long)id);
    if (atomic_fetch_add(&cx->outcome[id], 1) != 0)
        fz_fail("message %llu delivered or dead-lettered twice",
                (unsigned long long)id);
}

static void on_dead_letter(void *arg, es_actor_id_t to, es_msg_t *m)
{
    if (ours(m))
        account(arg, m);
}

/* Sends m (its inl.u64[0] or payload id already set); records the verdict. */
static void send_counted(struct ctx *cx, es_actor_id_t to, es_msg_t *m,
                         uint64_t id)
{
    int rc = es_send(cx->rt, to, m);
    if (rc == 0) {
        atomic_store(&cx->accepted[id], 1);
        return;
    }
    if (rc != -EAGAIN && rc != -ESRCH)
        fz_fail("es_send: %d", rc);
    es_msg_release(m); /* refused: still ours */
}

static bool new_id(struct ctx *cx, uint64_t *id)
{
    *id = atomic_fetch_add(&cx->next_id, 1);
    return *id < MAX_MSGS;
}

/* A data message from sender `s` to actor index `k` with sequence *seq. */
static void send_data(struct ctx *cx, int k, unsigned s, uint64_t *seq,
                      bool ptr)
{
    uint64_t id;
    es_actor_id_t to = atomic_load(&cx->ids[k]);
    if (!to || !new_id(cx, &id))
        return;
    es_msg_t m;
    if (ptr) {
        struct payload *p = malloc(sizeof(*p));
        if (!p)
            fz_fail("out of memory");
        *p = (struct payload){id, s, ++*seq};
        m = es_msg_ptr(M_DATA_PTR, p, sizeof(*p), free);
    } else {
        m = es_msg_make(M_DATA);
        m.inl.u64[0] = id;
        m.inl.u64[1] = s;
        m.inl.u64[2] = ++*seq;
        m.len = 24;
    }
    send_counted(cx, to, &m, id);
}

/* --- Actors ----------------------------------------------------------------
 */

static void check_order(struct actor *a, const es_msg_t *m)
{
    struct payload p;
    if (m->type == M_DATA_PTR)
        p = *(const struct payload *)m->ptr;
    else
        p = (struct payload){m->inl.u64[0], m->inl.u64[1], m->inl.u64[2]};
    if (p.sender >= NSENDERS)
        fz_fail("a message from an unknown sender");
    if (p.seq <= a->last_seq[p.sender])
        fz_fail("actor %d: from sender %llu, seq %llu after %llu", a->idx,
                (unsigned long long)p.sender, (unsigned long long)p.seq,
                (unsigned long long)a->last_seq[p.sender]);
    a->last_seq[p.sender] = p.seq;
}

static void timer_start(es_actor_t *self, struct actor *a, const es_msg_t *m)
{
    for (int i = 0; i < NTIMERS; i++) {
        if (a->tstate[i] != T_NONE && a->tstate[i] != T_CANCELLED &&
            a->tstate[i] != T_FIRED)
            continue;
        uint64_t repeat = m->inl.u64[2];
        int rc = es_timer_start(self, m->inl.u64[1], repeat, (uint64_t)i,
                                &a->timer[i]);
        if (rc)
            fz_fail("es_timer_start: %d", rc);
        a->tstate[i] = repeat ? T_REPEAT : T_ONESHOT;
        return;
    }
}

static void timer_stop(es_actor_t *self, struct actor *a)
{
    for (int i = 0; i < NTIMERS; i++) {
        uint8_t st = a->tstate[i];
        if (st != T_ONESHOT && st != T_REPEAT)
            continue;
        int rc = es_timer_stop(self, a->timer[i]);
        if (rc == 0)
            a->tstate[i] = T_CANCELLED;
        else if (rc == -ENOENT && st == T_ONESHOT)
            a->tstate[i] = T_PENDING; /* fired; its message is on its way */
        else
            fz_fail("es_timer_stop of a live timer: %d", rc);
        return;
    }
}

static void timer_fired(struct actor *a, const es_msg_t *m)
{
    uint64_t i = es_msg_timer_tag(m);
    if (i >= NTIMERS || es_msg_timer_id(m) != a->timer[i])
        fz_fail("a timer message for no timer of this actor");
    uint8_t st = a->tstate[i];
    if (st != T_ONESHOT && st != T_REPEAT && st != T_PENDING)
        fz_fail("timer %llu fired in state %d (cancelled or fired before)",
                (unsigned long long)i, st);
    if (st != T_REPEAT)
        a->tstate[i] = T_FIRED;
}

static void on_user(es_actor_t *self, struct actor *a, es_msg_t *m)
{
    account(a->cx, m);
    switch (m->type) {
    case M_DATA:
    case M_DATA_PTR:
        check_order(a, m);
        break;
    case M_TIMER_START:
        timer_start(self, a, m);
        break;
    case M_TIMER_STOP:
        timer_stop(self, a);
        break;
    case M_SELF_STOP:
        es_actor_stop(self);
        break;
    case M_FORWARD: {
        int k = (int)(m->inl.u64[1] % MAX_ACTORS);
        send_data(a->cx, k, NTHREADS + (unsigned)a->idx, &a->fwd_seq[k], false);
        break;
    }
    }
}

static int behaviour(es_actor_t *self, es_msg_t *m)
{
    struct actor *a = es_actor_state(self);
    if (a->stopped)
        fz_fail("actor %d: a message after STOP", a->idx);
    if (m->type == ES_MSG_START) {
        if (a->started)
            fz_fail("actor %d: START twice", a->idx);
        a->started = true;
        return 0;
    }
    if (!a->started)
        fz_fail("actor %d: message %u before START", a->idx, m->type);
    if (m->type == ES_MSG_STOP)
        a->stopped = true;
    else if (m->type == ES_MSG_TIMER)
        timer_fired(a, m);
    else if (ours(m))
        on_user(self, a, m);
    else
        fz_fail("actor %d: unexpected message type %u", a->idx, m->type);
    return 0;
}

static void state_free(void *state)
{
    struct actor *a = state;
    if (!a->stopped)
        fz_fail("actor %d: state freed before STOP", a->idx);
    if (atomic_fetch_add(&a->freed, 1) != 0)
        fz_fail("actor %d: state freed twice", a->idx);
}

/* --- The program -----------------------------------------------------------
 */

static void op_spawn(struct ctx *cx, int k, uint8_t arg)
{
    if (atomic_exchange(&cx->taken[k], true))
        return;
    struct actor *a = &cx->a[k];
    a->cx = cx;
    a->idx = k;
    es_spawn_opts_t so = {.behaviour = behaviour,
                          .state = a,
                          .state_free = state_free,
                          .loop = ES_LOOP_ANY,
                          .placement = (es_placement_t)(arg % 3),
                          .mailbox_capacity = 2u << (arg >> 6)};
    es_actor_id_t id;
    int rc = es_spawn(cx->rt, &so, &id);
    if (rc == -EAGAIN) {
        atomic_store(&cx->taken[k], false);
        return;
    }
    if (rc)
        fz_fail("es_spawn: %d", rc);
    atomic_store(&cx->ids[k], id);
}

/* A command message (timer start / stop, self stop, forward) to k. */
static void op_command(struct ctx *cx, int k, uint32_t type, uint8_t arg)
{
    uint64_t id;
    es_actor_id_t to = atomic_load(&cx->ids[k]);
    if (!to || !new_id(cx, &id))
        return;
    es_msg_t m = es_msg_make(type);
    m.inl.u64[0] = id;
    m.inl.u64[1] =
        type == M_FORWARD ? (uint64_t)(arg >> 3) : (uint64_t)((arg >> 3) & 3);
    m.inl.u64[2] = (arg & 0x40) ? 1 + (arg >> 7) : 0;
    m.len = 24;
    send_counted(cx, to, &m, id);
}

static void op_stop(struct ctx *cx, int k)
{
    es_actor_id_t to = atomic_load(&cx->ids[k]);
    if (!to)
        return;
    int rc = es_stop(cx->rt, to);
    if (rc && rc != -ESRCH && rc != -EAGAIN)
        fz_fail("es_stop: %d", rc);
}

static void op_send_nobody(struct ctx *cx)
{
    es_msg_t m = es_msg_make(M_DATA);
    int rc = es_send(cx->rt, ES_ACTOR_NONE, &m);
    if (rc != -ESRCH)
        fz_fail("es_send to ES_ACTOR_NONE: %d", rc);
}

struct worker {
    struct ctx *cx;
    unsigned self;
    uint64_t seq[MAX_ACTORS];
};

static void run_op(struct worker *w, uint8_t op, uint8_t arg)
{
    struct ctx *cx = w->cx;
    int k = arg & (MAX_ACTORS - 1);
    switch (op & 0x0f) {
    case 0:
        op_spawn(cx, k, arg);
        break;
    case 1:
    case 2:
        send_data(cx, k, w->self, &w->seq[k], (op & 0x0f) == 2);
        break;
    case 3:
        op_stop(cx, k);
        break;
    case 4:
        op_command(cx, k, M_TIMER_START, arg);
        break;
    case 5:
        op_command(cx, k, M_TIMER_STOP, arg);
        break;
    case 6:
        op_command(cx, k, M_SELF_STOP, arg);
        break;
    case 7:
        op_command(cx, k, M_FORWARD, arg);
        break;
    case 8:
        op_send_nobody(cx);
        break;
    default:
        sched_yield();
        break;
    }
}

/* Runs the operations whose top bit names this thread. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (size_t i = 0; i + 1 < w->cx->nops; i += 2) {
        uint8_t op = w->cx->ops[i];
        if ((unsigned)(op >> 7) == w->self)
            run_op(w, op, w->cx->ops[i + 1]);
    }
    return NULL;
}

static void check_end(struct ctx *cx)
{
    unsigned n = atomic_load(&cx->next_id);
    for (unsigned id = 0; id < n && id < MAX_MSGS; id++) {
        unsigned acc = atomic_load(&cx->accepted[id]);
        unsigned out = atomic_load(&cx->outcome[id]);
        if (acc != out)
            fz_fail("message %u: accepted %u, delivered/dead-lettered %u", id,
                    acc, out);
    }
    for (int k = 0; k < MAX_ACTORS; k++) {
        struct actor *a = &cx->a[k];
        if (!atomic_load(&cx->ids[k]))
            continue;
        if (!a->started || !a->stopped || atomic_load(&a->freed) != 1)
            fz_fail("actor %d: start %d stop %d freed %d", k, a->started,
                    a->stopped, atomic_load(&a->freed));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ctx cx;
    memset(&cx, 0, sizeof(cx));
    cx.ops = data;
    cx.nops = size < 2 * MAX_OPS ? size : 2 * MAX_OPS;
    es_runtime_opts_t ro = {.threads = 2,
                            .channel_capacity = 64,
                            .dead_letter = on_dead_letter,
                            .dead_letter_arg = &cx};
    if (es_runtime_new(&ro, &cx.rt) || es_runtime_start(cx.rt))
        fz_fail("runtime start failed");
    pthread_t t[NTHREADS];
    struct worker w[NTHREADS];
    for (unsigned i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){.cx = &cx, .self = i};
        if (pthread_create(&t[i], NULL, worker_main, &w[i]))
            fz_fail("pthread_create");
    }
    for (unsigned i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    if (es_runtime_stop(cx.rt) || es_runtime_wait(cx.rt))
        fz_fail("runtime stop failed");
    es_runtime_free(cx.rt);
    check_end(&cx);
    return 0;
}
