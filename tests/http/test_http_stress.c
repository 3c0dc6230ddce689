/* SPDX-License-Identifier: MIT */
/*
 * Concurrency tests of the HTTP server: client threads drive many
 * keep-alive connections at once with pipelined mixes of plain, deferred
 * (finished by a pool of worker threads), streamed and body-carrying
 * requests, checking every response against its request; then the same
 * load while es_http_server_free() runs, where each response must be whole
 * and right or the connection must end cleanly between responses. Client
 * threads never cr_assert(): they count
 * errors and keep the first message; the test thread asserts after.
 */
#include "http_test.h"

#include <stdio.h>

/* --- A pool that finishes deferred responses
 * ---------------------------------- */

struct job {
    es_http_response_t *res;
    struct job *next;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, **tail;
    bool quit;
    pthread_t th[2];
    atomic_ullong ended, end_ok, end_reset, end_other;
} g_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void pool_finish(es_http_response_t *res)
{
    const es_http_request_t *req = es_http_response_request(res);
    const char *t = req ? es_http_request_target(req) : "?";
    char b[256];
    int n = snprintf(b, sizeof(b), "D%s", t);
    int rc;

    es_http_response_header(res, "X-Deferred", "1");
    es_http_response_body(res, b, (size_t)n);
    rc = res_end_retry(res, NULL);
    atomic_fetch_add(rc == 0             ? &g_pool.end_ok
                     : rc == -ECONNRESET ? &g_pool.end_reset
                                         : &g_pool.end_other,
                     1);
    atomic_fetch_add(&g_pool.ended, 1);
}

static void *pool_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_pool.mu);
    for (;;) {
        struct job *j = g_pool.head;

        if (!j) {
            if (g_pool.quit)
                break;
            pthread_cond_wait(&g_pool.cv, &g_pool.mu);
            continue;
        }
        g_pool.head = j->next;
        if (!g_pool.head)
            g_pool.tail = &g_pool.head;
        pthread_mutex_unlock(&g_pool.mu);
        if ((uintptr_t)j->res % 3 == 0)
            sched_yield();
        pool_finish(j->res);
        free(j);
        pthread_mutex_lock(&g_pool.mu);
    }
    pthread_mutex_unlock(&g_pool.mu);
    return NULL;
}

static void pool_start(void)
{
    g_pool.tail = &g_pool.head;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&g_pool.th[i], NULL, pool_main, NULL), 0);
}

static void pool_stop(void)
{
    pthread_mutex_lock(&g_pool.mu);
    g_pool.quit = true;
    pthread_cond_broadcast(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
    for (int i = 0; i < 2; i++)
        cr_assert(es_test_join(g_pool.th[i], NULL, ES_TEST_JOIN_S));
}

static atomic_ullong g_deferred, g_gone;

static void gone(es_http_response_t *res, void *arg)
{
    (void)res;
    (void)arg;
    atomic_fetch_add(&g_gone, 1);
}

static void h_deferred(es_http_request_t *req, es_http_response_t *res,
                       void *arg)
{
    struct job *j = malloc(sizeof(*j));

    (void)req;
    (void)arg;
    if (!j)
        return;
    if (es_http_response_defer(res, gone, NULL) != 0) {
        free(j);
        return;
    }
    atomic_fetch_add(&g_deferred, 1);
    j->res = res;
    j->next = NULL;
    pthread_mutex_lock(&g_pool.mu);
    *g_pool.tail = j;
    g_pool.tail = &j->next;
    pthread_cond_signal(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
}

/* "S" + target, in three streamed pieces. */
static void h_streamed(es_http_request_t *req, es_http_response_t *res,
                       void *arg)
{
    const char *t = es_http_request_target(req);

    (void)arg;
    if (es_http_response_begin(res) != 0)
        return;
    es_http_response_write(res, "S", 1);
    es_http_response_write(res, t, strlen(t) / 2);
    es_http_response_write(res, t + strlen(t) / 2, strlen(t) - strlen(t) / 2);
    es_http_response_end(res);
}

/* "P" + target + "|" + body. */
static void h_plain(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    size_t len = 0;
    const char *b = es_http_request_body(req, &len);
    const char *t = es_http_request_target(req);
    char out[512];
    int n = snprintf(out, sizeof(out), "P%s|%.*s", t, (int)len, b);

    (void)arg;
    es_http_response_body(res, out, (size_t)n);
}

static void stress_fixture(struct hts *t)
{
    hts_init(t, 2, NULL);
    hts_route(t, NULL, "/p/*", h_plain, NULL);
    hts_route(t, "GET", "/d/*", h_deferred, NULL);
    hts_route(t, "GET", "/s/*", h_streamed, NULL);
    hts_start(t);
    pool_start();
}

/* --- Client threads
 * --------------------------------------------------------------- */

struct load {
    int port;
    unsigned rounds;     /* batches per connection */
    unsigned conns;      /* connections opened one after another */
    bool tolerate_close; /* the server may go away (free under load) */
    atomic_ullong *stop; /* set: finish the current batch and leave */
    atomic_ullong ok, errors, clean_ends, refused;
    pthread_mutex_t mu;
    char first_error[256];
};

static void load_error(struct load *l, const char *fmt, int a, int b)
{
    pthread_mutex_lock(&l->mu);
    if (!l->first_error[0])
        snprintf(l->first_error, sizeof(l->first_error), fmt, a, b);
    pthread_mutex_unlock(&l->mu);
    atomic_fetch_add(&l->errors, 1);
}

/* Request k of a batch, and the body its response must have. */
static void make_request(unsigned id, unsigned k, char *req, size_t rlen,
                         char *want, size_t wlen)
{
    switch (k % 4) {
    case 0:
        snprintf(req, rlen, "GET /p/%u HTTP/1.1\r\nHost: t\r\n\r\n", id);
        snprintf(want, wlen, "P/p/%u|", id);
        break;
    case 1:
        snprintf(req, rlen, "GET /d/%u HTTP/1.1\r\nHost: t\r\n\r\n", id);
        snprintf(want, wlen, "D/d/%u", id);
        break;
    case 2:
        snprintf(req, rlen, "GET /s/%u HTTP/1.1\r\nHost: t\r\n\r\n", id);
        snprintf(want, wlen, "S/s/%u", id);
        break;
    default:
        snprintf(req, rlen,
                 "POST /p/%u HTTP/1.1\r\nHost: t\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n%x\r\n%u\r\n0\r\n\r\n",
                 id, (unsigned)snprintf(NULL, 0, "%u", id), id);
        snprintf(want, wlen, "P/p/%u|abc%u", id, id);
        break;
    }
}

/* One connection: `rounds` batches of 1..4 pipelined requests. Returns
 * false if the connection could not be used (refused or ended). */
static bool load_conn(struct load *l, unsigned tid, unsigned *seq)
{
    struct sockaddr_in a;
    struct hc c;

    memset(&c, 0, sizeof(c));
    addr_lo(&a, l->port);
    c.fd = client_connect((struct sockaddr *)&a, sizeof(a));
    if (c.fd < 0) {
        if (!l->tolerate_close)
            load_error(l, "connect: %d (%d)", c.fd, 0);
        atomic_fetch_add(&l->refused, 1);
        return false;
    }
    for (unsigned r = 0; r < l->rounds; r++) {
        unsigned depth = 1 + (tid + r) % 4, base = *seq;
        char all[2048], req[256], want[4][128];
        size_t len = 0;

        if (l->stop && atomic_load(l->stop))
            break;
        for (unsigned k = 0; k < depth; k++) {
            make_request(tid * 1000000u + base + k, base + k, req, sizeof(req),
                         want[k], sizeof(want[k]));
            len += (size_t)snprintf(all + len, sizeof(all) - len, "%s", req);
        }
        *seq += depth;
        if (!hc_send(&c, all, len)) {
            if (!l->tolerate_close)
                load_error(l, "send failed in round %d (%d)", (int)r, 0);
            break;
        }
        for (unsigned k = 0; k < depth; k++) {
            struct hr resp;
            int rc = hc_read_response(&c, &resp, 0, ES_TEST_WAIT_S);

            if (rc == -ENODATA && l->tolerate_close) {
                atomic_fetch_add(&l->clean_ends, 1);
                hr_release(&resp);
                hc_close(&c);
                return false;
            }
            if (rc != 0 || resp.status != 200 ||
                resp.body_len != strlen(want[k]) ||
                memcmp(resp.body, want[k], resp.body_len) != 0) {
                load_error(l, "bad response: rc %d status %d", rc, resp.status);
                hr_release(&resp);
                hc_close(&c);
                return false;
            }
            hr_release(&resp);
            atomic_fetch_add(&l->ok, 1);
        }
    }
    hc_close(&c);
    return true;
}

struct load_thread {
    struct load *l;
    unsigned tid;
    pthread_t th;
};

static void *load_main(void *arg)
{
    struct load_thread *lt = arg;
    unsigned seq = 0;

    for (unsigned i = 0; i < lt->l->conns; i++) {
        if (!load_conn(lt->l, lt->tid, &seq) && lt->l->tolerate_close)
            break;
        if (lt->l->stop && atomic_load(lt->l->stop))
            break;
    }
    return NULL;
}

/* Starts the server and aims l (zeroed) at it: rounds batches on each of
 * conns connections per client thread. */
static void load_start(struct load *l, struct hts *t, unsigned rounds,
                       unsigned conns)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    stress_fixture(t);
    l->port = t->port;
    l->rounds = rounds;
    l->conns = conns;
}

/* Fails the test if a client thread saw an error. */
static void load_assert_clean(struct load *l)
{
    cr_assert_eq(atomic_load(&l->errors), 0, "%llu errors, first: %s",
                 (unsigned long long)atomic_load(&l->errors), l->first_error);
}

static void load_run(struct load *l, unsigned nthreads,
                     void (*meanwhile)(void *), void *arg)
{
    struct load_thread *th = calloc(nthreads, sizeof(*th));

    cr_assert_not_null(th);
    for (unsigned i = 0; i < nthreads; i++) {
        th[i].l = l;
        th[i].tid = i;
        cr_assert_eq(pthread_create(&th[i].th, NULL, load_main, &th[i]), 0);
    }
    if (meanwhile)
        meanwhile(arg);
    for (unsigned i = 0; i < nthreads; i++)
        cr_assert(es_test_join(th[i].th, NULL, 60.0), "client %u hangs", i);
    free(th);
}

/* --- Tests
 * ------------------------------------------------------------------------- */

Test(http_stress, mixed_load_many_clients, .timeout = ES_TEST_TIMEOUT_LONG)
{
    struct hts t;
    struct load l;

    load_start(&l, &t, 40, 5);
    load_run(&l, 8, NULL, NULL);
    load_assert_clean(&l);
    /* 8 threads x 5 connections x 40 batches of 1..4 requests. */
    cr_assert_geq(atomic_load(&l.ok), 8 * 5 * 40 * 2);
    HTS_WAIT_CONNS(&t, 0);
    ES_WAIT_GE(g_pool.ended, atomic_load(&g_deferred));
    cr_assert_eq(atomic_load(&g_pool.end_ok), atomic_load(&g_deferred));
    cr_assert_eq(atomic_load(&g_gone), 0);
    cr_assert_eq(hts_stats(&t).accepted, 8 * 5);
    cr_assert_eq(hts_stats(&t).requests, atomic_load(&l.ok));
    pool_stop();
    hts_fini(&t);
}

static void free_after_a_while(void *arg)
{
    struct hts *t = arg;

    es_test_sleep_ms(150);
    hts_free_server(t);
}

Test(http_stress, free_under_load, .timeout = ES_TEST_TIMEOUT_LONG)
{
    struct hts t;
    struct load l;

    load_start(&l, &t, 1000000, 1000000);
    l.tolerate_close = true;
    load_run(&l, 6, free_after_a_while, &t);
    load_assert_clean(&l);
    cr_assert_gt(atomic_load(&l.ok), 0);
    cr_log_info("free under load: %llu responses, %llu clean ends, %llu "
                "refused connects",
                (unsigned long long)atomic_load(&l.ok),
                (unsigned long long)atomic_load(&l.clean_ends),
                (unsigned long long)atomic_load(&l.refused));
    /* Every deferred response was ended by the pool, whatever happened. */
    ES_WAIT_GE(g_pool.ended, atomic_load(&g_deferred));
    cr_assert_eq(atomic_load(&g_pool.end_other), 0);
    pool_stop();
    hts_fini(&t);
}
