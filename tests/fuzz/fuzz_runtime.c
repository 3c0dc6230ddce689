/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the runtime API (src/). Each input is a program of
 * two-byte operations run by two foreign threads at once against a fresh
 * runtime with two demux threads (co-location on, its default): spawn
 * (placed, or pinned to a loop), send (inline or out-of-line), send with
 * es_send_wait() and a short timeout, es_stop(), es_runtime_stop() in the
 * middle of the program, and commands that make an actor start or cancel
 * timers, stop itself, forward one message or a burst of them to another
 * actor, or call es_send_wait() from its behaviour. A burst from an actor
 * on one loop to an actor on the other makes the sender the receiver's hot
 * sender, so the receiver migrates while the other thread sends to it,
 * stops it or has it start and stop timers. (Monitors do not exist in the
 * runtime yet; when they do, a monitor operation belongs here.) The run is
 * checked against a simple model:
 *   - every message es_send() or es_send_wait() accepted is delivered or
 *     dead-lettered exactly once; a refused one (-EAGAIN, -ETIMEDOUT,
 *     -ESRCH) never is, and stays the sender's (out-of-line payloads are
 *     freed by whoever owns them, so LeakSanitizer sees a lost or doubly
 *     freed one);
 *   - a send to an actor known to have had its STOP is -ESRCH; a send from
 *     a behaviour never fails for capacity; es_send_wait() answers 0,
 *     -ETIMEDOUT or -ESRCH to a foreign thread and -EDEADLK to a behaviour;
 *   - messages from one sender to one receiver arrive in the order sent,
 *     across migrations too;
 *   - every spawned actor gets START first, STOP last, then state_free,
 *     each exactly once; its behaviour never runs twice at once and always
 *     runs on the loop es_actor_loop_index() names;
 *   - a cancelled timer never fires afterwards, a one-shot fires once;
 *   - the moves the actors saw are at most es_runtime_stats().migrations.
 * FZ_RUNTIME_STATS=1 in the environment prints per input the migrations,
 * the moves seen and the es_send_wait() outcomes (to check a seed).
 */
#include "fuzz_util.h"

#include <eventserver/timer.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ACTORS 8
#define MAX_MSGS 4096
#define MAX_OPS 400
#define NTHREADS 2
#define NSENDERS (NTHREADS + MAX_ACTORS) /* threads, then actors */
#define NTIMERS 4
/* es_send() rather than es_send_wait() (send_counted()'s wait_ms). */
#define NO_WAIT INT_MIN
/* Milliseconds of es_send_wait() timeouts one worker may ask for in one
 * input; past it, its waits get 0 (one try), so an input stays short. */
#define WAIT_BUDGET_MS 40

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    M_DATA = ES_MSG_USER, /* inl: id, sender, seq */
    M_DATA_PTR,           /* ptr: struct payload */
    M_TIMER_START,        /* inl: id, after_ms, repeat_ms */
    M_TIMER_STOP,         /* inl: id */
    M_SELF_STOP,          /* inl: id */
    M_FORWARD,            /* inl: id, target index */
    M_BURST,              /* inl: id, target index, count */
    M_WAIT_INSIDE,        /* inl: id, target index */
    M_LAST = M_WAIT_INSIDE,
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
    atomic_bool gone; /* had its STOP: out of the table */
    atomic_bool busy; /* inside its behaviour */
    int loop_seen;    /* the loop of its last behaviour call, or -1 */
    unsigned moves;   /* times loop_seen changed */
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
    atomic_bool rt_stopped; /* the program called es_runtime_stop() */
    atomic_uint waits[3];   /* es_send_wait(): 0, -ETIMEDOUT, -ESRCH */
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

/* Whether es_send_wait()'s answer rc is one its contract allows here, and
 * a count of it. */
static bool wait_answer_ok(struct ctx *cx, int rc)
{
    int i = rc == 0 ? 0 : rc == -ETIMEDOUT ? 1 : rc == -ESRCH ? 2 : -1;
    if (i < 0)
        return false;
    atomic_fetch_add(&cx->waits[i], 1);
    return true;
}

/* Sends m (its inl.u64[0] or payload id already set) to actor index k with
 * es_send(), or with es_send_wait() and wait_ms unless that is NO_WAIT;
 * records the verdict and checks it against the contract. */
static void send_counted(struct ctx *cx, int k, es_msg_t *m, uint64_t id,
                         int wait_ms)
{
    es_runtime_t *rt = cx->rt;
    es_actor_id_t to = atomic_load(&cx->ids[k]);
    /* Its STOP ran after it left the table: no send may reach it now. */
    bool gone = atomic_load_explicit(&cx->a[k].gone, memory_order_acquire);
    bool in_loop = es_runtime_current_loop(rt) >= 0;
    int rc = wait_ms == NO_WAIT ? es_send(rt, to, m)
                                : es_send_wait(rt, to, m, wait_ms);
    if (gone && rc != -ESRCH)
        fz_fail("send to actor %d after its STOP: %d, not -ESRCH", k, rc);
    if (wait_ms != NO_WAIT) {
        if (!wait_answer_ok(cx, rc))
            fz_fail("es_send_wait(%d ms) from a foreign thread: %d", wait_ms,
                    rc);
    } else if (rc == -EAGAIN && in_loop) {
        fz_fail("es_send from a behaviour refused for capacity");
    } else if (rc && rc != -EAGAIN && rc != -ESRCH) {
        fz_fail("es_send: %d", rc);
    }
    if (rc == 0)
        atomic_store(&cx->accepted[id], 1);
    else
        es_msg_release(m); /* refused: still ours */
}

static bool new_id(struct ctx *cx, uint64_t *id)
{
    *id = atomic_fetch_add(&cx->next_id, 1);
    return *id < MAX_MSGS;
}

/* A data message from sender `s` to actor index `k` with sequence *seq,
 * sent as send_counted() says for wait_ms. */
static void send_data(struct ctx *cx, int k, unsigned s, uint64_t *seq,
                      bool ptr, int wait_ms)
{
    uint64_t id;
    if (!atomic_load(&cx->ids[k]) || !new_id(cx, &id))
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
    send_counted(cx, k, &m, id, wait_ms);
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

/* es_send_wait() from a behaviour: -EDEADLK, and the message (an owned
 * payload) stays the behaviour's. */
static void wait_inside(struct actor *a, int k)
{
    es_actor_id_t to = atomic_load(&a->cx->ids[k]);
    struct payload *p = malloc(sizeof(*p));
    if (!p)
        fz_fail("out of memory");
    *p = (struct payload){MAX_MSGS, 0, 0}; /* never delivered */
    es_msg_t m = es_msg_ptr(M_DATA_PTR, p, sizeof(*p), free);
    int rc = es_send_wait(a->cx->rt, to, &m, 1);
    if (rc != -EDEADLK)
        fz_fail("es_send_wait from a behaviour: %d, not -EDEADLK", rc);
    es_msg_release(&m);
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
            fz_fail("es_timer_stop of a live timer %#llx: %d (actor %d on "
                    "loop %d, %u moves seen)",
                    (unsigned long long)a->timer[i], rc, a->idx,
                    es_actor_loop_index(self), a->moves);
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
    case M_FORWARD:
    case M_BURST: {
        int k = (int)(m->inl.u64[1] % MAX_ACTORS);
        uint64_t n = m->type == M_BURST ? m->inl.u64[2] : 1;
        for (uint64_t i = 0; i < n; i++)
            send_data(a->cx, k, NTHREADS + (unsigned)a->idx, &a->fwd_seq[k],
                      (i & 3) == 3, NO_WAIT);
        break;
    }
    case M_WAIT_INSIDE:
        wait_inside(a, (int)(m->inl.u64[1] % MAX_ACTORS));
        break;
    }
}

/* Checks that the behaviour runs on its home loop and counts its moves. */
static void note_loop(es_actor_t *self, struct actor *a)
{
    int cur = es_runtime_current_loop(a->cx->rt);
    if (cur < 0)
        return; /* START and STOP on the thread of es_runtime_wait() */
    int home = es_actor_loop_index(self);
    if (home != cur)
        fz_fail("actor %d runs on loop %d, its home is %d", a->idx, cur, home);
    if (a->loop_seen >= 0 && a->loop_seen != cur)
        a->moves++;
    a->loop_seen = cur;
}

static int behave(es_actor_t *self, struct actor *a, es_msg_t *m)
{
    note_loop(self, a);
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
    if (m->type == ES_MSG_STOP) {
        a->stopped = true;
        atomic_store_explicit(&a->gone, true, memory_order_release);
    } else if (m->type == ES_MSG_TIMER)
        timer_fired(a, m);
    else if (ours(m))
        on_user(self, a, m);
    else
        fz_fail("actor %d: unexpected message type %u", a->idx, m->type);
    return 0;
}

static int behaviour(es_actor_t *self, es_msg_t *m)
{
    struct actor *a = es_actor_state(self);
    if (atomic_exchange(&a->busy, true))
        fz_fail("actor %d: two behaviour calls at once", a->idx);
    int rc = behave(self, a, m);
    atomic_store(&a->busy, false);
    return rc;
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

/* Spawns actor k by placement, or pinned to loop (arg >> 3) & 1. */
static void op_spawn(struct ctx *cx, int k, uint8_t arg, bool pinned)
{
    if (atomic_exchange(&cx->taken[k], true))
        return;
    struct actor *a = &cx->a[k];
    a->cx = cx;
    a->idx = k;
    a->loop_seen = -1;
    es_spawn_opts_t so = {.behaviour = behaviour,
                          .state = a,
                          .state_free = state_free,
                          .loop =
                              pinned ? ES_LOOP((arg >> 3) & 1) : ES_LOOP_ANY,
                          .placement = (es_placement_t)(arg % 3),
                          .mailbox_capacity = 2u << (arg >> 6)};
    es_actor_id_t id;
    int rc = es_spawn(cx->rt, &so, &id);
    /* -ESHUTDOWN: the program stopped the runtime before. */
    if (rc == -EAGAIN || (rc == -ESHUTDOWN && atomic_load(&cx->rt_stopped))) {
        atomic_store(&cx->taken[k], false);
        return;
    }
    if (rc)
        fz_fail("es_spawn: %d", rc);
    atomic_store(&cx->ids[k], id);
}

/* A command message (timer start / stop, self stop, forward, burst, wait
 * inside) to k. A burst sends 8, 16, 24 or 32 messages to (arg >> 3) & 7:
 * from an actor on the other loop, enough for the target to migrate. */
static void op_command(struct ctx *cx, int k, uint32_t type, uint8_t arg)
{
    uint64_t id;
    if (!atomic_load(&cx->ids[k]) || !new_id(cx, &id))
        return;
    es_msg_t m = es_msg_make(type);
    m.inl.u64[0] = id;
    if (type == M_FORWARD || type == M_BURST || type == M_WAIT_INSIDE)
        m.inl.u64[1] = (uint64_t)(arg >> 3);
    else
        m.inl.u64[1] = (uint64_t)((arg >> 3) & 3);
    if (type == M_BURST)
        m.inl.u64[2] = 8u * (1u + (arg >> 6));
    else
        m.inl.u64[2] = (arg & 0x40) ? 1 + (arg >> 7) : 0;
    m.len = 24;
    send_counted(cx, k, &m, id, NO_WAIT);
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
    rc = es_send_wait(cx->rt, ES_ACTOR_NONE, &m, 1);
    if (rc != -ESRCH)
        fz_fail("es_send_wait to ES_ACTOR_NONE: %d", rc);
}

/* es_runtime_stop() in the middle of the program, for arg >= 0xf0 only
 * (otherwise nearly every mutated input would stop the runtime early). */
static void op_runtime_stop(struct ctx *cx, uint8_t arg)
{
    if (arg < 0xf0)
        return;
    /* Set before the call: a spawn refused with -ESHUTDOWN, or a second
     * stop refused with -EALREADY, may follow it at once. */
    atomic_store(&cx->rt_stopped, true);
    int rc = es_runtime_stop(cx->rt);
    if (rc && rc != -EALREADY)
        fz_fail("es_runtime_stop: %d", rc);
}

struct worker {
    struct ctx *cx;
    unsigned self;
    int wait_budget; /* ms of es_send_wait() timeouts left */
    uint64_t seq[MAX_ACTORS];
};

/* es_send_wait() of a data message to k, timeout 0, 1, 2 or 5 ms. */
static void op_send_wait(struct worker *w, int k, uint8_t arg)
{
    static const int timeout_ms[4] = {0, 1, 2, 5};
    int t = timeout_ms[(arg >> 3) & 3];
    if (t > w->wait_budget)
        t = 0;
    w->wait_budget -= t;
    send_data(w->cx, k, w->self, &w->seq[k], arg & 0x20, t);
}

static void run_op(struct worker *w, uint8_t op, uint8_t arg)
{
    struct ctx *cx = w->cx;
    int k = arg & (MAX_ACTORS - 1);
    switch (op & 0x0f) {
    case 0:
    case 10:
        op_spawn(cx, k, arg, (op & 0x0f) == 10);
        break;
    case 1:
    case 2:
        send_data(cx, k, w->self, &w->seq[k], (op & 0x0f) == 2, NO_WAIT);
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
    case 11:
        op_send_wait(w, k, arg);
        break;
    case 12:
        op_command(cx, k, M_BURST, arg);
        break;
    case 13:
        op_runtime_stop(cx, arg);
        break;
    case 14:
        op_command(cx, k, M_WAIT_INSIDE, arg);
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

/* After es_runtime_wait(): every actor's moves were migrations. */
static void check_stats(struct ctx *cx)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("FZ_RUNTIME_STATS") != NULL;
    es_stats_t st;
    if (es_runtime_stats(cx->rt, -1, &st))
        fz_fail("es_runtime_stats");
    unsigned moves = 0;
    for (int k = 0; k < MAX_ACTORS; k++)
        moves += cx->a[k].moves;
    if (moves > st.migrations)
        fz_fail("actors saw %u moves, the runtime counts %llu migrations",
                moves, (unsigned long long)st.migrations);
    if (verbose)
        fprintf(stderr,
                "fuzz_runtime: migrations %llu, moves seen %u, mutes %llu, "
                "es_send_wait 0 %u, -ETIMEDOUT %u, -ESRCH %u\n",
                (unsigned long long)st.migrations, moves,
                (unsigned long long)st.mutes, atomic_load(&cx->waits[0]),
                atomic_load(&cx->waits[1]), atomic_load(&cx->waits[2]));
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
        w[i] = (struct worker){
            .cx = &cx, .self = i, .wait_budget = WAIT_BUDGET_MS};
        if (pthread_create(&t[i], NULL, worker_main, &w[i]))
            fz_fail("pthread_create");
    }
    for (unsigned i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    int rc = es_runtime_stop(cx.rt);
    if (rc && !(rc == -EALREADY && atomic_load(&cx.rt_stopped)))
        fz_fail("es_runtime_stop: %d", rc);
    if (es_runtime_wait(cx.rt))
        fz_fail("es_runtime_wait failed");
    check_stats(&cx);
    es_runtime_free(cx.rt);
    check_end(&cx);
    return 0;
}
