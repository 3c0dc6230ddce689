/* SPDX-License-Identifier: MIT */
/*
 * The naive queues of ring_bench, what EventServer replaces:
 * socketpair_per_msg makes one write() and one read() system call per
 * message; mutex_condvar passes messages through a bounded queue under a
 * mutex, the consumer waiting on a condition variable; uv_async passes them
 * through the same queue but wakes a libuv loop with uv_async_send() after
 * every push, and counts the callbacks as its wakeups. Each moves the same
 * 64-byte es_msg_t between two threads as the other cases.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "rb_common.h"

#include <uv.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- socketpair_per_msg: one write() and one read() per message ----------- */

struct sock_bench {
    int fd[2]; /* the producer writes fd[0], the consumer reads fd[1] */
    uint64_t target, budget_ns;
    struct gate start;
    atomic_bool stop; /* consumer has what it measures */
    /* Results, read after the join. */
    uint64_t consumed, elapsed_ns;
    bool capped;
    struct seq_check seq;
    struct fault fault;
};

/* Returns: 1 when all of buf moved, 0 on end of file, or -errno. */
static int io_full(int fd, void *buf, size_t len, bool writing)
{
    for (size_t done = 0; done < len;) {
        char *p = (char *)buf + done;
        ssize_t n =
            writing ? write(fd, p, len - done) : read(fd, p, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return 0;
        done += (size_t)n;
    }
    return 1;
}

static void *sock_producer(void *arg)
{
    struct sock_bench *b = arg;
    es_msg_t m = es_msg_make(MSG_DATA);

    if (!gate_pass(&b->start))
        return NULL;
    for (uint64_t i = 0; i < b->target; i++) {
        if (atomic_load_explicit(&b->stop, memory_order_relaxed))
            break;
        m.inl.u64[0] = i;
        if (io_full(b->fd[0], &m, sizeof(m), true) != 1)
            break; /* the consumer reports the shortfall */
    }
    shutdown(b->fd[0], SHUT_WR);
    return NULL;
}

static void *sock_consumer(void *arg)
{
    struct sock_bench *b = arg;
    uint64_t n = 0, t0, deadline;
    es_msg_t m;
    int rc = 1;

    if (!gate_pass(&b->start))
        return NULL;
    t0 = now_ns();
    deadline = t0 + b->budget_ns;
    while (n < b->target &&
           (rc = io_full(b->fd[1], &m, sizeof(m), false)) == 1) {
        seq_check(&b->seq, m.inl.u64[0]);
        if (++n % CLOCK_EVERY == 0 && now_ns() > deadline) {
            b->capped = true;
            break;
        }
    }
    b->elapsed_ns = now_ns() - t0;
    b->consumed = n;
    if (rc != 1)
        fault_set(&b->fault, rc ? rc : -EPIPE, "read() from the socketpair");
    atomic_store_explicit(&b->stop, true, memory_order_relaxed);
    /* Drain until the producer shuts down, so it never blocks in write(). */
    while (io_full(b->fd[1], &m, sizeof(m), false) == 1)
        ;
    return NULL;
}

int case_socketpair(const struct bench_cfg *cfg, struct run_out *out)
{
    struct sock_bench b = {.target = cfg->mode->msgs,
                           .budget_ns = cfg->mode->budget_ns};
    struct team team = {.start = &b.start};
    int rc;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, b.fd))
        return -errno;
    if ((rc = gate_init(&b.start)))
        goto close_fds;
    rc = team_spawn(&team, sock_consumer, &b);
    if (!rc)
        rc = team_spawn(&team, sock_producer, &b);
    rc = team_start(&team, rc);
    team_join(&team);
    gate_close(&b.start);
    if (rc)
        fault_set(&out->fault, rc, "starting threads");
    out->msgs = b.consumed;
    out->elapsed_ns = b.elapsed_ns;
    out->capped = b.capped;
    if (!fault_merge(out, &b.fault))
        seq_report(&b.seq, out);
close_fds:
    close(b.fd[0]);
    close(b.fd[1]);
    return rc ? rc : out->fault.rc;
}

/* --- mutex_condvar, uv_async: a bounded queue under a mutex --------------- */

/*
 * QUEUE_SLOTS messages under one mutex. The producer waits on not_full; the
 * consumer of mutex_condvar waits on not_empty, uv_async's is woken by
 * uv_async_send() instead. `stop` is set by the consumer under the lock.
 */
struct lqueue {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    es_msg_t *slots;
    uint64_t pushed, popped;
    bool stop;
};

static int lqueue_init(struct lqueue *q)
{
    int rc;

    *q = (struct lqueue){0};
    q->slots = malloc(QUEUE_SLOTS * sizeof(es_msg_t));
    if (!q->slots)
        return -ENOMEM;
    rc = pthread_mutex_init(&q->lock, NULL);
    if (!rc && (rc = pthread_cond_init(&q->not_full, NULL)))
        pthread_mutex_destroy(&q->lock);
    if (!rc && (rc = pthread_cond_init(&q->not_empty, NULL))) {
        pthread_cond_destroy(&q->not_full);
        pthread_mutex_destroy(&q->lock);
    }
    if (rc)
        free(q->slots);
    return -rc;
}

static void lqueue_close(struct lqueue *q)
{
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_mutex_destroy(&q->lock);
    free(q->slots);
}

/* Returns: false once the consumer stopped (m not queued). */
static bool lqueue_push(struct lqueue *q, const es_msg_t *m)
{
    bool ok;

    pthread_mutex_lock(&q->lock);
    while (q->pushed - q->popped == QUEUE_SLOTS && !q->stop)
        pthread_cond_wait(&q->not_full, &q->lock);
    ok = !q->stop;
    if (ok) {
        q->slots[q->pushed++ % QUEUE_SLOTS] = *m;
        pthread_cond_signal(&q->not_empty);
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

static void lqueue_pop_wait(struct lqueue *q, es_msg_t *m)
{
    pthread_mutex_lock(&q->lock);
    while (q->pushed == q->popped)
        pthread_cond_wait(&q->not_empty, &q->lock);
    *m = q->slots[q->popped++ % QUEUE_SLOTS];
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->lock);
}

static void lqueue_stop(struct lqueue *q)
{
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->lock);
}

/* One producer, one consumer and what the consumer measured. */
struct lq_bench {
    struct lqueue q;
    uint64_t target, budget_ns, t0, deadline_ns;
    struct gate start;
    uint64_t consumed, elapsed_ns, callbacks;
    bool capped;
    struct seq_check seq;
    uv_loop_t loop;   /* uv_async only */
    uv_async_t async; /* uv_async only */
    struct fault fault;
};

static void *lq_consumer(void *arg)
{
    struct lq_bench *b = arg;
    uint64_t n = 0, t0, deadline;
    es_msg_t m;

    if (!gate_pass(&b->start))
        return NULL;
    t0 = now_ns();
    deadline = t0 + b->budget_ns;
    while (n < b->target) {
        lqueue_pop_wait(&b->q, &m);
        seq_check(&b->seq, m.inl.u64[0]);
        if (++n % CLOCK_EVERY == 0 && now_ns() > deadline) {
            b->capped = true;
            break;
        }
    }
    b->elapsed_ns = now_ns() - t0;
    b->consumed = n;
    lqueue_stop(&b->q);
    return NULL;
}

/* The producer of both cases; with `uv`, every push is an async send. */
static void lq_produce(struct lq_bench *b, bool uv)
{
    es_msg_t m = es_msg_make(MSG_DATA);

    for (uint64_t i = 0; i < b->target; i++) {
        m.inl.u64[0] = i;
        if (!lqueue_push(&b->q, &m))
            break;
        if (uv && uv_async_send(&b->async) != 0) {
            fault_set(&b->fault, -EIO, "uv_async_send");
            break;
        }
    }
}

static void *lq_producer_mutex(void *arg)
{
    struct lq_bench *b = arg;

    if (gate_pass(&b->start))
        lq_produce(b, false);
    return NULL;
}

static void *lq_producer_uv(void *arg)
{
    struct lq_bench *b = arg;

    if (gate_pass(&b->start))
        lq_produce(b, true);
    return NULL;
}

static void lq_result(const struct lq_bench *b, struct run_out *out)
{
    out->msgs = b->consumed;
    out->elapsed_ns = b->elapsed_ns;
    out->capped = b->capped;
    if (!fault_merge(out, &b->fault))
        seq_report(&b->seq, out);
}

static int lq_open(struct lq_bench *b, const struct bench_cfg *cfg)
{
    int rc;

    *b = (struct lq_bench){.target = cfg->mode->msgs,
                           .budget_ns = cfg->mode->budget_ns};
    rc = lqueue_init(&b->q);
    if (!rc && (rc = gate_init(&b->start)))
        lqueue_close(&b->q);
    return rc;
}

static void lq_close(struct lq_bench *b)
{
    gate_close(&b->start);
    lqueue_close(&b->q);
}

int case_mutex_condvar(const struct bench_cfg *cfg, struct run_out *out)
{
    struct lq_bench b;
    struct team team = {.start = &b.start};
    int rc = lq_open(&b, cfg);

    if (rc)
        return rc;
    rc = team_spawn(&team, lq_consumer, &b);
    if (!rc)
        rc = team_spawn(&team, lq_producer_mutex, &b);
    rc = team_start(&team, rc);
    team_join(&team);
    if (rc)
        fault_set(&out->fault, rc, "starting threads");
    lq_result(&b, out);
    lq_close(&b);
    return out->fault.rc;
}

/* Drains the whole queue; one call is one wakeup of the consumer. */
static void uv_drain_cb(uv_async_t *handle)
{
    struct lq_bench *b = handle->data;
    struct lqueue *q = &b->q;
    es_msg_t m;

    b->callbacks++;
    pthread_mutex_lock(&q->lock);
    while (q->popped != q->pushed && b->consumed < b->target) {
        m = q->slots[q->popped++ % QUEUE_SLOTS];
        seq_check(&b->seq, m.inl.u64[0]);
        b->consumed++;
    }
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->lock);
    if (b->consumed < b->target && now_ns() <= b->deadline_ns)
        return;
    b->elapsed_ns = now_ns() - b->t0;
    b->capped = b->consumed < b->target;
    lqueue_stop(q);
    uv_stop(&b->loop);
}

/* The consumer is this thread, running the uv loop. */
static int uv_consume(struct lq_bench *b, struct team *team)
{
    int rc = team_spawn(team, lq_producer_uv, b);

    rc = team_start(team, rc);
    if (rc)
        return rc;
    b->t0 = now_ns();
    b->deadline_ns = b->t0 + b->budget_ns;
    uv_run(&b->loop, UV_RUN_DEFAULT);
    return 0;
}

int case_uv_async(const struct bench_cfg *cfg, struct run_out *out)
{
    struct lq_bench b;
    struct team team = {.start = &b.start};
    int rc = lq_open(&b, cfg);

    if (rc)
        return rc;
    /* libuv returns negative errno values on Unix. */
    if ((rc = uv_loop_init(&b.loop))) {
        fault_set(&out->fault, rc, "uv_loop_init");
        goto close_queue;
    }
    if ((rc = uv_async_init(&b.loop, &b.async, uv_drain_cb))) {
        fault_set(&out->fault, rc, "uv_async_init");
        goto close_loop;
    }
    b.async.data = &b;
    if ((rc = uv_consume(&b, &team)))
        fault_set(&out->fault, rc, "starting threads");
    lqueue_stop(&b.q);
    team_join(&team);
    /* The producer is gone: no uv_async_send() can race the close now. */
    uv_close((uv_handle_t *)&b.async, NULL);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    out->wakeups = (int64_t)b.callbacks;
    lq_result(&b, out);
close_loop:
    uv_loop_close(&b.loop);
close_queue:
    lq_close(&b);
    return out->fault.rc;
}
