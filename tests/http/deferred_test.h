/* SPDX-License-Identifier: MIT */
/*
 * Shared by the deferred-response tests (test_http_deferred.c,
 * test_http_gone.c): responses parked by a handler in numbered slots for
 * the test thread to finish, with on_gone counted per slot; a worker
 * thread that finishes, streams, or streams until the client leaves; an
 * actor that finishes at once or from a timer; and the server fixture with
 * their routes. Each test runs in its own process, so the globals here
 * start at zero in every test.
 */
#ifndef ES_DEFERRED_TEST_H
#define ES_DEFERRED_TEST_H

#include "http_test.h"

#include <stdio.h>

#define MAX_PARK 1100

/* --- Parked responses ----------------------------------------------------- */

/*
 * Responses parked by h_park, in slot i of the "?i=" query. The handler
 * stores the pointer with release order after deferring; the holder (test
 * thread or worker) loads it with acquire order, and from then on is the
 * one thread that uses it.
 */
struct park {
    es_runtime_t *rt;
    atomic_ullong parked, defer_fail;
    _Atomic(es_http_response_t *) res[MAX_PARK];
    atomic_int gone[MAX_PARK];
    atomic_ullong gone_total, gone_off_loop;
    int id[MAX_PARK];
};

static struct park g_park;

static inline void park_init(es_runtime_t *rt)
{
    g_park.rt = rt;
    for (int i = 0; i < MAX_PARK; i++)
        g_park.id[i] = i;
}

static inline void on_gone(es_http_response_t *res, void *arg)
{
    int i = *(int *)arg;

    (void)res;
    atomic_fetch_add(&g_park.gone[i], 1);
    atomic_fetch_add(&g_park.gone_total, 1);
    if (es_runtime_current_loop(g_park.rt) < 0)
        atomic_fetch_add(&g_park.gone_off_loop, 1);
}

/* The "i" of the query, or -1. */
static inline int query_index(const es_http_request_t *req)
{
    char v[16];
    int i;

    if (es_http_query_get(es_http_request_query(req), "i", v, sizeof(v)) < 0)
        return -1;
    i = atoi(v);
    return i >= 0 && i < MAX_PARK ? i : -1;
}

/* Defers and parks the response in slot i; arg != NULL: no on_gone. */
static inline void h_park(es_http_request_t *req, es_http_response_t *res,
                          void *arg)
{
    int i = query_index(req);

    if (i < 0 ||
        es_http_response_defer(res, arg ? NULL : on_gone, &g_park.id[i]) != 0) {
        atomic_fetch_add(&g_park.defer_fail, 1);
        return;
    }
    atomic_store_explicit(&g_park.res[i], res, memory_order_release);
    atomic_fetch_add(&g_park.parked, 1);
}

static inline es_http_response_t *parked(int i)
{
    return atomic_load_explicit(&g_park.res[i], memory_order_acquire);
}

/* Finishes a deferred response with "<who>:<target>" and status 202. */
static inline int finish(es_http_response_t *res, const char *who)
{
    const es_http_request_t *req = es_http_response_request(res);
    char b[256];
    int n = snprintf(b, sizeof(b), "%s:%s", who, es_http_request_target(req));

    es_http_response_status(res, 202);
    es_http_response_header(res, "X-Finisher", who);
    es_http_response_body(res, b, (size_t)n);
    return res_end_retry(res, NULL);
}

/* A GET of /park?i=<i> on c. */
static inline void send_park(struct hc *c, int i)
{
    char raw[128];

    snprintf(raw, sizeof(raw), "GET /park?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    HC_SEND(c, raw);
}

/* --- A worker thread that finishes responses ------------------------------ */

enum job_kind { JOB_FINISH, JOB_STREAM, JOB_STREAM_UNTIL_GONE };

struct job {
    es_http_response_t *res;
    enum job_kind kind;
    unsigned delay_ms;
    struct job *next;
};

struct worker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, **tail;
    bool quit;
    pthread_t th;
    atomic_ullong ended, end_ok, end_reset, end_other;
    atomic_ullong end_called; /* set just before end() */
    atomic_int write_rc;      /* last failed write of JOB_STREAM_UNTIL_GONE */
    atomic_ullong streamed;   /* bytes accepted by es_http_response_write */
};

static struct worker g_w;

static inline void run_job(struct job *j)
{
    char piece[32];
    int rc = 0;

    es_test_sleep_ms(j->delay_ms);
    if (j->kind == JOB_FINISH) {
        atomic_fetch_add(&g_w.end_called, 1);
        rc = finish(j->res, "thread");
    } else if (j->kind == JOB_STREAM) {
        es_http_response_header(j->res, "X-Finisher", "stream");
        rc = res_begin_retry(j->res, NULL);
        for (int i = 0; rc == 0 && i < 10; i++) {
            int n = snprintf(piece, sizeof(piece), "piece%d;", i);

            rc = res_write_retry(j->res, piece, (size_t)n, NULL);
            es_test_sleep_ms(2);
        }
        atomic_fetch_add(&g_w.end_called, 1);
        rc = res_end_retry(j->res, NULL);
    } else {
        static char chunk[65536]; /* the worker is the only user */
        uint64_t total = 0;

        memset(chunk, 's', sizeof(chunk));
        rc = res_begin_retry(j->res, NULL);
        while (rc == 0 && total < (48u << 20)) {
            rc = res_write_retry(j->res, chunk, sizeof(chunk), NULL);
            if (rc == 0) {
                total += sizeof(chunk);
                atomic_fetch_add(&g_w.streamed, sizeof(chunk));
            }
            es_test_sleep_ms(1);
        }
        atomic_store(&g_w.write_rc, rc);
        rc = res_end_retry(j->res, NULL);
    }
    if (rc == 0)
        atomic_fetch_add(&g_w.end_ok, 1);
    else if (rc == -ECONNRESET)
        atomic_fetch_add(&g_w.end_reset, 1);
    else
        atomic_fetch_add(&g_w.end_other, 1);
    atomic_fetch_add(&g_w.ended, 1);
}

static inline void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_w.mu);
    for (;;) {
        struct job *j = g_w.head;

        if (!j) {
            if (g_w.quit)
                break;
            pthread_cond_wait(&g_w.cv, &g_w.mu);
            continue;
        }
        g_w.head = j->next;
        if (!g_w.head)
            g_w.tail = &g_w.head;
        pthread_mutex_unlock(&g_w.mu);
        run_job(j);
        free(j);
        pthread_mutex_lock(&g_w.mu);
    }
    pthread_mutex_unlock(&g_w.mu);
    return NULL;
}

static inline void worker_start(void)
{
    pthread_mutex_init(&g_w.mu, NULL);
    pthread_cond_init(&g_w.cv, NULL);
    g_w.tail = &g_w.head;
    atomic_store(&g_w.write_rc, 99);
    cr_assert_eq(pthread_create(&g_w.th, NULL, worker_main, NULL), 0);
}

static inline void worker_push(es_http_response_t *res, enum job_kind kind,
                               unsigned delay_ms)
{
    struct job *j = calloc(1, sizeof(*j));

    if (!j) {
        es_http_response_end(res);
        return;
    }
    j->res = res;
    j->kind = kind;
    j->delay_ms = delay_ms;
    pthread_mutex_lock(&g_w.mu);
    *g_w.tail = j;
    g_w.tail = &j->next;
    pthread_cond_signal(&g_w.cv);
    pthread_mutex_unlock(&g_w.mu);
}

static inline void worker_stop(void)
{
    pthread_mutex_lock(&g_w.mu);
    g_w.quit = true;
    pthread_cond_signal(&g_w.cv);
    pthread_mutex_unlock(&g_w.mu);
    cr_assert(es_test_join(g_w.th, NULL, ES_TEST_JOIN_S), "worker hangs");
}

/* Defers, and hands the response to the worker: arg is the job kind. */
static inline void h_to_worker(es_http_request_t *req, es_http_response_t *res,
                               void *arg)
{
    int i = query_index(req);

    if (es_http_response_defer(res, on_gone, &g_park.id[i < 0 ? 0 : i]) != 0) {
        atomic_fetch_add(&g_park.defer_fail, 1);
        return;
    }
    atomic_fetch_add(&g_park.parked, 1);
    worker_push(res, (enum job_kind)(uintptr_t)arg, 50);
}

/* Records whether the worker had started ending when this ran. */
static atomic_ullong g_seq_calls, g_seq_after_end;

static inline void h_seq(es_http_request_t *req, es_http_response_t *res,
                         void *arg)
{
    atomic_fetch_add(&g_seq_calls, 1);
    if (atomic_load(&g_w.end_called) > 0)
        atomic_fetch_add(&g_seq_after_end, 1);
    h_target(req, res, arg);
}

/* --- Actors that finish responses ----------------------------------------- */

enum { MSG_FINISH = ES_MSG_USER, MSG_FINISH_LATER };

static atomic_ullong g_actor_ended, g_actor_end_fail;

static inline int finisher(es_actor_t *self, es_msg_t *msg)
{
    es_http_response_t *res;
    int rc;

    switch (msg->type) {
    case MSG_FINISH:
        rc = finish(msg->ptr, "actor");
        break;
    case MSG_FINISH_LATER:
        return es_timer_start(self, 30, 0, (uint64_t)(uintptr_t)msg->ptr, NULL);
    case ES_MSG_TIMER:
        res = (es_http_response_t *)(uintptr_t)es_msg_timer_tag(msg);
        rc = finish(res, "timer");
        break;
    default:
        return 0;
    }
    atomic_fetch_add(rc == 0 ? &g_actor_ended : &g_actor_end_fail, 1);
    return 0;
}

static atomic_ullong g_finisher;

/* Defers and sends the response to the finisher actor; arg: message type. */
static inline void h_to_actor(es_http_request_t *req, es_http_response_t *res,
                              void *arg)
{
    es_msg_t m = es_msg_ptr((uint32_t)(uintptr_t)arg, res, 0, NULL);

    if (es_http_response_defer(res, NULL, NULL) != 0) {
        atomic_fetch_add(&g_park.defer_fail, 1);
        return;
    }
    if (es_send(es_http_request_runtime(req), atomic_load(&g_finisher), &m) !=
        0)
        es_http_response_end(res); /* counted as a wrong answer below */
}

/* --- Fixture -------------------------------------------------------------- */

static inline void defer_fixture(struct hts *t, const es_http_server_opts_t *o)
{
    es_spawn_opts_t so = {.behaviour = finisher, .loop = ES_LOOP_ANY};
    es_actor_id_t id;

    hts_init(t, 2, o);
    park_init(t->rt);
    worker_start();
    ES_OK(es_spawn(t->rt, &so, &id));
    atomic_store(&g_finisher, id);
    hts_route(t, "GET", "/park", h_park, NULL);
    hts_route(t, "GET", "/park-no-gone", h_park, "no on_gone");
    hts_route(t, "GET", "/thread", h_to_worker, (void *)JOB_FINISH);
    hts_route(t, "GET", "/stream", h_to_worker, (void *)JOB_STREAM);
    hts_route(t, "GET", "/flood", h_to_worker, (void *)JOB_STREAM_UNTIL_GONE);
    hts_route(t, "GET", "/actor", h_to_actor, (void *)MSG_FINISH);
    hts_route(t, "GET", "/timer", h_to_actor, (void *)MSG_FINISH_LATER);
    hts_route(t, NULL, "/seq", h_seq, NULL);
    hts_route(t, NULL, "/now", h_target, NULL);
    hts_start(t);
}

static inline void defer_fini(struct hts *t)
{
    worker_stop();
    hts_fini(t);
    cr_assert_eq(atomic_load(&g_park.defer_fail), 0);
    cr_assert_eq(atomic_load(&g_park.gone_off_loop), 0,
                 "on_gone ran off the demux threads");
}

/* GET target on a fresh connection; the body must be `want`. */
static inline void expect_finished(int port, const char *target,
                                   const char *want, const char *who)
{
    struct hr r;

    http_get(port, target, &r);
    cr_assert_eq(r.status, 202, "%s: status %d", target, r.status);
    HR_BODY_IS(&r, want);
    cr_assert_str_eq(hr_header(&r, "X-Finisher") ?: "", who);
    hr_release(&r);
}

#endif /* ES_DEFERRED_TEST_H */
