/* SPDX-License-Identifier: MIT */
/*
 * Requests (issue 10): every es_request() gets exactly one outcome, a
 * reply, -ETIMEDOUT or -ESRCH, and -ESRCH comes at once (well before the
 * deadline) when the target is gone or stops holding the request; late
 * replies are counted, never delivered; reply tokens answer from any
 * thread; es_call() blocks a foreign thread and refuses a demux thread.
 * Each case runs with requester and target on one thread and on two.
 */
#include "es_test.h"

#include <string.h>

enum {
    OP_ASK = ES_MSG_USER, /* to a client: u64[0] target, u64[1] count,
                             i64[2] timeout_ms */
    OP_REQ,               /* a request: u64[0] mode, u64[1] value */
    OP_CALL,              /* to a client: es_call() from a behaviour */
    OP_FEED,              /* to a feeder: send u64[1] OP_NOISE to u64[0] */
    OP_NOISE,             /* to a client: ignored */
};

enum { MODE_REPLY, MODE_KEEP, MODE_IGNORE, MODE_CRASH, MODE_TWICE };

#define MAX_IDS 4096
#define MAX_TOKENS 4096

/* Shared by the servers of one test: what they handled and the tokens
 * they kept (for the test thread to answer). */
struct server {
    atomic_ullong handled, replied, kept, stopped;
    es_reply_token_t tokens[MAX_TOKENS];
    atomic_ullong ntokens;
    atomic_int bad; /* es_reply()/es_reply_token() failed */
};

struct client {
    es_actor_id_t target;
    uint64_t mode;
    atomic_ullong asked, replies, timeouts, esrch, other, dup, bad_payload;
    atomic_ullong stopped;
    atomic_int call_rc;
    atomic_int loop;     /* es_actor_loop_index() at the last message */
    double first_fail_s; /* es_test_now() of the first failure */
    es_ref_t ids[MAX_IDS];
    unsigned char seen[MAX_IDS];
    unsigned nids;
};

static struct server srv;
static struct es_test_dead dead;
static atomic_ullong dead_requests, dead_replies;

static void dead_cb(void *arg, es_actor_id_t to, es_msg_t *msg)
{
    (void)to;
    if (msg->type == OP_REQ)
        atomic_fetch_add(&dead_requests, 1);
    else if (msg->type == ES_MSG_REPLY)
        atomic_fetch_add(&dead_replies, 1);
    es_test_dead_cb(arg, to, msg);
}

static int server_cb(es_actor_t *self, es_msg_t *msg)
{
    struct server *s = es_actor_state(self);
    if (msg->type == ES_MSG_STOP)
        atomic_fetch_add(&s->stopped, 1);
    if (msg->type != OP_REQ)
        return 0;
    atomic_fetch_add(&s->handled, 1);
    es_msg_t r = es_msg_u64(ES_MSG_USER, msg->inl.u64[1] + 1);
    switch (msg->inl.u64[0]) {
    case MODE_TWICE:
        if (es_reply(self, msg, &r) == 0)
            atomic_fetch_add(&s->replied, 1);
        __attribute__((fallthrough)); /* the second answer is late */
    case MODE_REPLY:
        if (es_reply(self, msg, &r) == 0)
            atomic_fetch_add(&s->replied, 1);
        else
            atomic_fetch_add(&s->bad, 1);
        break;
    case MODE_KEEP: {
        unsigned long long i = atomic_load(&s->ntokens);
        es_reply_token_t spare; /* past MAX_TOKENS: kept, never answered */
        if (es_reply_token(self, msg,
                           i < MAX_TOKENS ? &s->tokens[i] : &spare) != 0) {
            atomic_fetch_add(&s->bad, 1);
            break;
        }
        if (i < MAX_TOKENS)
            atomic_store(&s->ntokens, i + 1);
        atomic_fetch_add(&s->kept, 1);
        break;
    }
    case MODE_CRASH:
        return -EIO;
    }
    return 0;
}

static void client_outcome(struct client *c, es_msg_t *msg)
{
    es_ref_t ref = es_msg_ref(msg);
    unsigned i;
    for (i = 0; i < c->nids && c->ids[i] != ref; i++)
        ;
    if (i == c->nids || c->seen[i]++) {
        atomic_fetch_add(&c->dup, 1);
        return;
    }
    if (msg->from != c->target)
        atomic_fetch_add(&c->other, 1);
    if (msg->type == ES_MSG_REPLY) {
        if (msg->inl.u64[0] != (uint64_t)i + 1)
            atomic_fetch_add(&c->bad_payload, 1);
        atomic_fetch_add(&c->replies, 1);
        return;
    }
    if (!c->first_fail_s)
        c->first_fail_s = es_test_now();
    if (es_msg_reason(msg) == -ETIMEDOUT)
        atomic_fetch_add(&c->timeouts, 1);
    else if (es_msg_reason(msg) == -ESRCH)
        atomic_fetch_add(&c->esrch, 1);
    else
        atomic_fetch_add(&c->other, 1);
}

static int client_cb(es_actor_t *self, es_msg_t *msg)
{
    struct client *c = es_actor_state(self);
    atomic_store(&c->loop, es_actor_loop_index(self));
    switch (msg->type) {
    case OP_ASK:
        c->target = msg->inl.u64[0];
        for (uint64_t n = 0; n < msg->inl.u64[1] && c->nids < MAX_IDS; n++) {
            es_msg_t q = es_msg_u64(OP_REQ, c->mode);
            q.inl.u64[1] = c->nids;
            q.len = 16;
            es_ref_t id = 0;
            int rc = es_request(self, c->target, &q, (int)msg->inl.i64[2], &id);
            if (rc != 0 || id == 0) {
                atomic_fetch_add(&c->other, 1);
                continue;
            }
            c->ids[c->nids++] = id;
            atomic_fetch_add(&c->asked, 1);
        }
        break;
    case OP_CALL: {
        es_msg_t q = es_msg_u64(OP_REQ, MODE_REPLY), r;
        atomic_store(&c->call_rc, es_call(es_actor_runtime(self),
                                          msg->inl.u64[0], &q, &r, 10));
        break;
    }
    case ES_MSG_REPLY:
    case ES_MSG_REQUEST_FAILED:
        client_outcome(c, msg);
        break;
    case ES_MSG_STOP:
        atomic_fetch_add(&c->stopped, 1);
        break;
    }
    return 0;
}

static es_runtime_t *new_rt(unsigned threads)
{
    memset(&dead, 0, sizeof(dead));
    atomic_store(&dead_requests, 0);
    atomic_store(&dead_replies, 0);
    return es_test_runtime_new(&(es_runtime_opts_t){.threads = threads,
                                                    .colocate = -1,
                                                    .dead_letter = dead_cb,
                                                    .dead_letter_arg = &dead});
}

static es_actor_id_t spawn(es_runtime_t *rt, es_behaviour_cb cb, void *state,
                           int loop)
{
    es_actor_id_t id;
    ES_OK(es_spawn(rt,
                   &(es_spawn_opts_t){
                       .behaviour = cb, .state = state, .loop = ES_LOOP(loop)},
                   &id));
    return id;
}

static void ask(es_runtime_t *rt, es_actor_id_t client, es_actor_id_t target,
                uint64_t count, int timeout_ms)
{
    es_msg_t m = es_msg_u64(OP_ASK, target);
    m.inl.u64[1] = count;
    m.inl.i64[2] = timeout_ms;
    m.len = 24;
    ES_OK(es_send(rt, client, &m));
}

static unsigned long long outcomes(struct client *c)
{
    return atomic_load(&c->replies) + atomic_load(&c->timeouts) +
           atomic_load(&c->esrch);
}

static es_stats_t stats(es_runtime_t *rt)
{
    es_stats_t s;
    ES_OK(es_runtime_stats(rt, -1, &s));
    return s;
}

/* Nothing more arrives, and each request had one outcome. */
static void assert_exactly_once(struct client *c, unsigned long long want)
{
    es_test_sleep_ms(60); /* a second outcome would be here by now */
    cr_assert_eq(atomic_load(&c->asked), want);
    cr_assert_eq(outcomes(c), want, "outcomes %llu of %llu", outcomes(c), want);
    cr_assert_eq(atomic_load(&c->dup), 0, "an outcome came twice");
    cr_assert_eq(atomic_load(&c->other), 0);
    cr_assert_eq(atomic_load(&c->bad_payload), 0);
}

/* --- replies ------------------------------------------------------------- */

static void replies(int server_loop)
{
    es_runtime_t *rt = new_rt(2);
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    c.mode = MODE_REPLY;
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, server_loop);
    ES_OK(es_runtime_start(rt));
    ask(rt, cid, sid, 1000, 10000);
    ES_WAIT_GE(c.replies, 1000);
    assert_exactly_once(&c, 1000);
    es_stats_t s = stats(rt);
    cr_assert_eq(s.late_replies, 0);
    cr_assert_eq(s.requests_timed_out, 0);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&srv.handled), 1000);
}

Test(request, replies_same_thread, .timeout = ES_TEST_TIMEOUT)
{
    replies(0);
}

Test(request, replies_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    replies(1);
}

/* --- timeouts and late replies ------------------------------------------ */

static void timeout_then_late(int server_loop)
{
    es_runtime_t *rt = new_rt(2);
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    c.mode = MODE_KEEP;
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, server_loop);
    ES_OK(es_runtime_start(rt));
    double t0 = es_test_now();
    ask(rt, cid, sid, 4, 50);
    ES_WAIT_GE(c.timeouts, 4);
    cr_assert_geq(es_test_now() - t0, 0.045, "a deadline fired early");
    ES_WAIT_GE(srv.ntokens, 4);
    /* The outcome is out: these answers are late. */
    es_msg_t r = es_msg_u64(ES_MSG_USER, 1);
    for (int i = 0; i < 4; i++)
        ES_OK(es_reply_to(rt, &srv.tokens[i], &r));
    for (double end = es_test_now() + ES_TEST_WAIT_S;
         stats(rt).late_replies < 4 && es_test_now() < end;)
        es_test_sleep_ms(1);
    es_stats_t s = stats(rt);
    cr_assert_eq(s.late_replies, 4);
    cr_assert_eq(s.requests_timed_out, 4);
    assert_exactly_once(&c, 4);
    cr_assert_eq(atomic_load(&c.replies), 0, "a late reply was delivered");
    es_test_free(rt);
}

Test(request, timeout_then_late_same_thread, .timeout = ES_TEST_TIMEOUT)
{
    timeout_then_late(0);
}

Test(request, timeout_then_late_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    timeout_then_late(1);
}

/* A second es_reply() to one request is late: counted, not delivered. */
Test(request, second_reply_is_late, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    c.mode = MODE_TWICE;
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, 1);
    ES_OK(es_runtime_start(rt));
    ask(rt, cid, sid, 10, 10000);
    ES_WAIT_GE(c.replies, 10);
    for (double end = es_test_now() + ES_TEST_WAIT_S;
         stats(rt).late_replies < 10 && es_test_now() < end;)
        es_test_sleep_ms(1);
    cr_assert_eq(stats(rt).late_replies, 10);
    assert_exactly_once(&c, 10);
    es_test_free(rt);
}

/* --- -ESRCH at once ------------------------------------------------------ */

/* The target is gone at the call, stops holding the requests (tokens or
 * unanswered), or crashes on them: -ESRCH long before the 10 s deadline. */
static void esrch(int server_loop, uint64_t mode, bool stop_first)
{
    es_runtime_t *rt = new_rt(2);
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    c.mode = mode;
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, server_loop);
    ES_OK(es_runtime_start(rt));
    if (stop_first) {
        ES_OK(es_stop(rt, sid));
        ES_WAIT_GE(srv.stopped, 1); /* gone before the requests */
    }
    ask(rt, cid, sid, 8, 10000);
    if (!stop_first && mode != MODE_CRASH) {
        ES_WAIT_GE(srv.handled, 8);
        es_test_sleep_ms(20);
        cr_assert_eq(outcomes(&c), 0, "an outcome before the stop");
        ES_OK(es_stop(rt, sid));
    }
    double t0 = es_test_now();
    ES_WAIT_GE(c.esrch, 8);
    cr_assert_lt(es_test_now() - t0, 5.0, "-ESRCH waited for the deadline");
    assert_exactly_once(&c, 8);
    cr_assert_eq(atomic_load(&c.esrch), 8);
    es_test_free(rt);
    if (stop_first)
        cr_assert_eq(atomic_load(&dead_requests), 8);
}

Test(request, esrch_gone_same_thread, .timeout = ES_TEST_TIMEOUT)
{
    esrch(0, MODE_REPLY, true);
}

Test(request, esrch_gone_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    esrch(1, MODE_REPLY, true);
}

Test(request, esrch_kept_same_thread, .timeout = ES_TEST_TIMEOUT)
{
    esrch(0, MODE_KEEP, false);
}

Test(request, esrch_kept_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    esrch(1, MODE_KEEP, false);
}

Test(request, esrch_ignored_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    esrch(1, MODE_IGNORE, false);
}

Test(request, esrch_crash_same_thread, .timeout = ES_TEST_TIMEOUT)
{
    esrch(0, MODE_CRASH, false);
}

Test(request, esrch_crash_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    esrch(1, MODE_CRASH, false);
}

/* --- deferred replies from a foreign thread ------------------------------ */

Test(request, token_reply_from_foreign_thread, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    c.mode = MODE_KEEP;
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, 1);
    ES_OK(es_runtime_start(rt));
    ask(rt, cid, sid, 100, 10000);
    ES_WAIT_GE(srv.ntokens, 100);
    for (unsigned i = 0; i < 100; i++) {
        es_msg_t r = es_msg_u64(ES_MSG_USER, i + 1);
        ES_OK(es_reply_to(rt, &srv.tokens[i], &r));
    }
    ES_WAIT_GE(c.replies, 100);
    assert_exactly_once(&c, 100);
    /* Answered: stopping the server now fails nothing. */
    ES_OK(es_stop(rt, sid));
    es_test_sleep_ms(30);
    cr_assert_eq(atomic_load(&c.esrch), 0);
    es_test_free(rt);
}

/* A kept request failed on purpose (a proxy that knows its target is
 * gone): the requester gets that reason, once; a second answer is late. */
Test(request, token_error_from_foreign_thread, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    c.mode = MODE_KEEP;
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, 1);
    ES_OK(es_runtime_start(rt));
    ask(rt, cid, sid, 10, 10000);
    ES_WAIT_GE(srv.ntokens, 10);
    cr_assert_eq(es_reply_error(rt, &srv.tokens[0], 0), -EINVAL);
    cr_assert_eq(es_reply_error(rt, &srv.tokens[0], 5), -EINVAL);
    for (unsigned i = 0; i < 10; i++)
        ES_OK(es_reply_error(rt, &srv.tokens[i], i < 5 ? -ESRCH : -EPIPE));
    ES_WAIT_GE(c.esrch, 5);
    ES_WAIT_GE(c.other, 5);
    cr_assert_eq(atomic_load(&c.replies), 0);
    cr_assert_eq(atomic_load(&c.dup), 0);
    es_msg_t r = es_msg_u64(ES_MSG_USER, 1);
    ES_OK(es_reply_to(rt, &srv.tokens[0], &r));
    for (int i = 0; i < 5000 && stats(rt).late_replies < 1; i++)
        es_test_sleep_ms(1);
    cr_assert_eq(stats(rt).late_replies, 1);
    cr_assert_eq(atomic_load(&c.replies), 0);
    /* Answered with errors: stopping the server fails nothing more. */
    ES_OK(es_stop(rt, sid));
    es_test_sleep_ms(30);
    cr_assert_eq(atomic_load(&c.esrch), 5);
    es_test_free(rt);
}

/* es_reply_error() settles an es_call() too. */
static void *error_answerer(void *arg)
{
    es_runtime_t *rt = arg;
    while (atomic_load(&srv.ntokens) < 1)
        es_test_sleep_ms(1);
    (void)es_reply_error(rt, &srv.tokens[0], -ECONNRESET);
    return NULL;
}

Test(request, call_settled_by_error, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(1);
    memset(&srv, 0, sizeof(srv));
    es_actor_id_t sid = spawn(rt, server_cb, &srv, 0);
    ES_OK(es_runtime_start(rt));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, error_answerer, rt), 0);
    es_msg_t q = es_msg_u64(OP_REQ, MODE_KEEP), r;
    cr_assert_eq(es_call(rt, sid, &q, &r, 10000), -ECONNRESET);
    pthread_join(t, NULL);
    es_test_free(rt);
}

/* --- es_call ------------------------------------------------------------- */

Test(request, call_from_main, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    memset(&srv, 0, sizeof(srv));
    es_actor_id_t sid = spawn(rt, server_cb, &srv, 1);
    ES_OK(es_runtime_start(rt));
    for (uint64_t i = 0; i < 200; i++) {
        es_msg_t q = es_msg_u64(OP_REQ, MODE_REPLY), r;
        q.inl.u64[1] = i;
        q.len = 16;
        ES_OK(es_call(rt, sid, &q, &r, 10000));
        cr_assert_eq(r.type, ES_MSG_REPLY);
        cr_assert_eq(r.from, sid);
        cr_assert_eq(r.inl.u64[0], i + 1);
    }
    /* Kept and never answered: the deadline. */
    es_msg_t q = es_msg_u64(OP_REQ, MODE_KEEP), r;
    double t0 = es_test_now();
    cr_assert_eq(es_call(rt, sid, &q, &r, 50), -ETIMEDOUT);
    cr_assert_geq(es_test_now() - t0, 0.045);
    cr_assert_eq(stats(rt).requests_timed_out, 1);
    /* ... and its late answer is counted. */
    ES_WAIT_GE(srv.ntokens, 1);
    es_msg_t late = es_msg_u64(ES_MSG_USER, 1);
    ES_OK(es_reply_to(rt, &srv.tokens[0], &late));
    cr_assert_eq(stats(rt).late_replies, 1);
    /* Kept, then the server stops: -ESRCH at once. */
    q = es_msg_u64(OP_REQ, MODE_CRASH);
    t0 = es_test_now();
    cr_assert_eq(es_call(rt, sid, &q, &r, 10000), -ESRCH);
    cr_assert_lt(es_test_now() - t0, 5.0);
    /* Gone: -ESRCH. */
    cr_assert_eq(es_call(rt, sid, &q, &r, 10000), -ESRCH);
    es_test_free(rt);
}

Test(request, call_from_behaviour_is_edeadlk, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(1);
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, 0);
    ES_OK(es_runtime_start(rt));
    atomic_store(&c.call_rc, 1);
    es_msg_t m = es_msg_u64(OP_CALL, sid);
    ES_OK(es_send(rt, cid, &m));
    for (double end = es_test_now() + ES_TEST_WAIT_S;
         atomic_load(&c.call_rc) == 1 && es_test_now() < end;)
        es_test_sleep_ms(1);
    cr_assert_eq(atomic_load(&c.call_rc), -EDEADLK);
    cr_assert_eq(atomic_load(&srv.handled), 0);
    es_test_free(rt);
}

/* es_reply() only answers the request being handled. */
static atomic_int misuse_rc;
static int misuse_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == OP_ASK) {
        es_msg_t r = es_msg_u64(ES_MSG_USER, 1);
        es_reply_token_t tok;
        int a = es_reply(self, msg, &r);
        int b = es_reply_token(self, msg, &tok);
        atomic_store(&misuse_rc, a == -EINVAL && b == -EINVAL ? 1 : -1);
    }
    return 0;
}

Test(request, reply_to_plain_message_is_einval, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(1);
    atomic_store(&misuse_rc, 0);
    es_actor_id_t id = spawn(rt, misuse_cb, NULL, 0);
    ES_OK(es_runtime_start(rt));
    es_msg_t m = es_msg_make(OP_ASK);
    ES_OK(es_send(rt, id, &m));
    for (double end = es_test_now() + ES_TEST_WAIT_S;
         atomic_load(&misuse_rc) == 0 && es_test_now() < end;)
        es_test_sleep_ms(1);
    cr_assert_eq(atomic_load(&misuse_rc), 1);
    m.type |= 0x80000000u; /* the in-transit marker is not for users */
    cr_assert_eq(es_send(rt, id, &m), -EINVAL);
    es_test_free(rt);
}

/* --- load: targets dying mid-request, the send/delivery property --------- */

#define CLIENTS 16
#define SERVERS 8

Test(request, stress_targets_dying, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(4);
    static struct client c[CLIENTS];
    memset(c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    es_actor_id_t cid[CLIENTS], sid[SERVERS];
    for (int i = 0; i < SERVERS; i++)
        sid[i] = spawn(rt, server_cb, &srv, i % 4);
    for (int i = 0; i < CLIENTS; i++) {
        c[i].mode = (uint64_t[]){MODE_REPLY, MODE_REPLY, MODE_KEEP, MODE_IGNORE,
                                 MODE_TWICE}[i % 5];
        cid[i] = spawn(rt, client_cb, &c[i], (i + 1) % 4);
    }
    ES_OK(es_runtime_start(rt));
    unsigned per =
        (unsigned)(es_test_scaled(2000) < MAX_IDS ? es_test_scaled(2000)
                                                  : MAX_IDS) /
        2;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < CLIENTS; i++)
            ask(rt, cid[i], sid[i % SERVERS], per, 30000);
    /* Stop the servers while requests are in flight and kept. */
    for (int i = 0; i < SERVERS; i++) {
        es_test_sleep_ms(2);
        ES_OK(es_stop(rt, sid[i]));
    }
    double t0 = es_test_now();
    for (int i = 0; i < CLIENTS; i++)
        for (double end = es_test_now() + ES_TEST_WAIT_S;
             outcomes(&c[i]) < 2ull * per && es_test_now() < end;)
            es_test_sleep_ms(1);
    cr_assert_lt(es_test_now() - t0, 15.0);
    unsigned long long asked = 0, replies = 0, esrch = 0;
    for (int i = 0; i < CLIENTS; i++) {
        assert_exactly_once(&c[i], 2ull * per);
        asked += atomic_load(&c[i].asked);
        replies += atomic_load(&c[i].replies);
        esrch += atomic_load(&c[i].esrch);
    }
    es_stats_t s = stats(rt);
    cr_assert_eq(s.requests_timed_out, 0, "a request waited for its deadline");
    cr_assert_gt(esrch, 0);
    es_test_free(rt);
    /* Every request sent was handled or dead-lettered; every reply sent
     * was delivered, late or dead-lettered. */
    cr_assert_eq(asked, atomic_load(&srv.handled) + atomic_load(&dead_requests),
                 "requests: sent %llu, handled %llu, dead %llu", asked,
                 (unsigned long long)atomic_load(&srv.handled),
                 (unsigned long long)atomic_load(&dead_requests));
    cr_assert_eq(atomic_load(&srv.replied),
                 replies + s.late_replies + atomic_load(&dead_replies),
                 "replies: sent %llu, delivered %llu, late %llu, dead %llu",
                 (unsigned long long)atomic_load(&srv.replied), replies,
                 (unsigned long long)s.late_replies,
                 (unsigned long long)atomic_load(&dead_replies));
    cr_assert_eq(atomic_load(&srv.bad), 0);
}

/* --- migration ----------------------------------------------------------- */

static int feeder_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type == OP_FEED)
        for (uint64_t i = 0; i < msg->inl.u64[1]; i++) {
            es_msg_t n = es_msg_make(OP_NOISE);
            (void)es_send(es_actor_runtime(self), msg->inl.u64[0], &n);
        }
    return 0;
}

static void feed(es_runtime_t *rt, es_actor_id_t feeder, es_actor_id_t to)
{
    for (int i = 0; i < 20; i++) {
        es_msg_t m = es_msg_u64(OP_FEED, to);
        m.inl.u64[1] = 100;
        m.len = 16;
        ES_OK(es_send(rt, feeder, &m));
        es_test_sleep_ms(2);
    }
}

/* An actor waiting for replies stays on its thread although co-location
 * would move it next to its hot sender; once they are in, it moves. */
Test(request, pending_requests_pin_the_requester, .timeout = ES_TEST_TIMEOUT)
{
    memset(&dead, 0, sizeof(dead));
    es_runtime_t *rt = es_test_runtime_new(&(es_runtime_opts_t){.threads = 2});
    static struct client c;
    memset(&c, 0, sizeof(c));
    memset(&srv, 0, sizeof(srv));
    c.mode = MODE_KEEP;
    es_actor_id_t cid = spawn(rt, client_cb, &c, 0);
    es_actor_id_t sid = spawn(rt, server_cb, &srv, 1);
    es_actor_id_t fid = spawn(rt, feeder_cb, NULL, 1);
    ES_OK(es_runtime_start(rt));
    ask(rt, cid, sid, 4, 10000);
    ES_WAIT_GE(srv.ntokens, 4);
    /* Longer than the control below needs to move it. */
    for (double end = es_test_now() + 1.0;
         atomic_load(&c.loop) == 0 && es_test_now() < end;)
        feed(rt, fid, cid);
    cr_assert_eq(atomic_load(&c.loop), 0, "it moved with requests pending");
    cr_assert_eq(stats(rt).migrations, 0);
    for (unsigned i = 0; i < 4; i++) {
        es_msg_t r = es_msg_u64(ES_MSG_USER, i + 1);
        ES_OK(es_reply_to(rt, &srv.tokens[i], &r));
    }
    ES_WAIT_GE(c.replies, 4);
    assert_exactly_once(&c, 4);
    /* Nothing pending now: co-location may move it. */
    double t0 = es_test_now();
    for (double end = t0 + ES_TEST_WAIT_S;
         atomic_load(&c.loop) != 1 && es_test_now() < end;)
        feed(rt, fid, cid);
    cr_assert_eq(atomic_load(&c.loop), 1, "it never moved (control)");
    es_test_free(rt);
}

/* --- es_call() from several threads at once -------------------------------
 */

#define CALLERS 4
#define CALLS 2000u

struct caller {
    es_runtime_t *rt;
    es_actor_id_t servers[2];
    unsigned index;
    atomic_ullong ok, esrch, other, wrong;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;

    for (uint64_t i = 0; i < CALLS; i++) {
        es_actor_id_t to = c->servers[(i + c->index) % 2];
        es_msg_t q = es_msg_u64(OP_REQ, MODE_REPLY), r;
        q.inl.u64[1] = i * CALLERS + c->index;
        q.len = 16;
        int rc = es_call(c->rt, to, &q, &r, 30000);
        if (rc == 0) {
            if (r.type != ES_MSG_REPLY || r.from != to ||
                r.inl.u64[0] != i * CALLERS + c->index + 1)
                atomic_fetch_add(&c->wrong, 1);
            es_msg_release(&r);
            atomic_fetch_add(&c->ok, 1);
        } else if (rc == -ESRCH) {
            atomic_fetch_add(&c->esrch, 1);
        } else {
            atomic_fetch_add(&c->other, 1);
        }
    }
    return NULL;
}

/* Four threads call two servers on two loops at once; one server stops
 * half way. Every call returns exactly its own answer, or -ESRCH once its
 * server is gone; none waits for its deadline. */
Test(request, calls_from_many_threads, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = new_rt(2);
    static struct server a, b;
    static struct caller c[CALLERS];
    pthread_t t[CALLERS];

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    es_actor_id_t sa = spawn(rt, server_cb, &a, 0);
    es_actor_id_t sb = spawn(rt, server_cb, &b, 1);
    ES_OK(es_runtime_start(rt));
    for (unsigned i = 0; i < CALLERS; i++) {
        c[i] = (struct caller){.rt = rt, .servers = {sa, sb}, .index = i};
        cr_assert_eq(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
    }
    ES_WAIT_GE(b.handled, CALLS); /* about half way for b */
    ES_OK(es_stop(rt, sb));
    unsigned long long ok = 0, esrch = 0;
    for (unsigned i = 0; i < CALLERS; i++) {
        cr_assert(es_test_join(t[i], NULL, ES_TEST_JOIN_S));
        cr_assert_eq(atomic_load(&c[i].wrong), 0,
                     "a call got another's answer");
        cr_assert_eq(atomic_load(&c[i].other), 0,
                     "a call neither answered nor "
                     "refused with -ESRCH");
        ok += atomic_load(&c[i].ok);
        esrch += atomic_load(&c[i].esrch);
    }
    cr_assert_eq(ok + esrch, (unsigned long long)CALLERS * CALLS);
    cr_assert_geq(ok, (unsigned long long)CALLERS * CALLS / 2,
                  "every call to the server that stayed is answered");
    cr_assert_gt(esrch, 0);
    cr_assert_eq(stats(rt).requests_timed_out, 0);
    /* The call slots came back: more calls still work. */
    es_msg_t q = es_msg_u64(OP_REQ, MODE_REPLY), r;
    q.inl.u64[1] = 7;
    q.len = 16;
    ES_OK(es_call(rt, sa, &q, &r, 10000));
    cr_assert_eq(r.inl.u64[0], 8);
    es_test_free(rt);
}
