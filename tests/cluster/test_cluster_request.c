/* SPDX-License-Identifier: MIT */
/*
 * Requests to cluster names (issue 11): across processes an es_request()
 * or es_call() has the local outcomes, exactly one each: the reply the
 * remote actor sent with es_reply() (inline or ptr payload), -ETIMEDOUT at
 * the deadline (never before), or -ESRCH at once, well before the
 * deadline, when no node holds the name (never held, or its holder just
 * died: NATS "no responders"). Requests in flight when this process leaves
 * the cluster, or when the holder's node leaves or dies, end at once too.
 */
#include "cluster_fx.h"

#include <stdlib.h>
#include <sys/wait.h>

#define N_REQ 100
/* Deadline of requests that must end long before it. */
#define LONG_MS 30000

Test(cluster_request, reply_across_processes, .timeout = ES_TEST_TIMEOUT)
{
    static struct requester q;
    struct cfx f;
    es_actor_id_t req, proxy;
    es_msg_t m, r;
    unsigned char *p = malloc(10000), *want = malloc(10000);
    uint64_t served;

    cfx_start(&f, 0, 0);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);

    m = es_msg_u64(CN_PING, 42);
    ES_OK(cfx_call(&f, "svc", &m, &r, 10000));
    cr_assert_eq(r.type, ES_MSG_REPLY);
    cr_assert_eq(r.inl.u64[0], 42);
    cr_assert_eq(r.inl.u64[1], 1, "answered by tag %llu",
                 (unsigned long long)r.inl.u64[1]);
    es_msg_release(&r);

    for (unsigned i = 0; i < 10000; i++)
        want[i] = p[i] = (unsigned char)(i * 7 + 1);
    m = es_msg_ptr(CN_PING, p, 10000, free); /* es_call() owns it now */
    ES_OK(cfx_call(&f, "svc", &m, &r, 10000));
    cr_assert_eq(r.type, ES_MSG_REPLY);
    cr_assert_eq(r.len, 10000);
    cr_assert_not_null(r.ptr, "a ptr reply lost its payload");
    cr_assert_eq(memcmp(r.ptr, want, 10000), 0, "ptr reply differs");
    es_msg_release(&r);
    free(want);

    req = cfx_requester(&f, &q, 0, CN_PING);
    ES_OK(es_cluster_lookup(f.c, "svc", &proxy));
    cfx_ask(&f, req, proxy, N_REQ, 10000);
    ES_WAIT_GE(q.outcomes, N_REQ);
    es_test_sleep_ms(100); /* no second outcome */
    served = cfx_stat(&f, "n1", CN_STAT_SERVED);
    cfx_fini(&f);

    cr_assert_eq(atomic_load(&q.replies), N_REQ,
                 "replies %llu, -ESRCH %llu, -ETIMEDOUT %llu",
                 atomic_load(&q.replies), atomic_load(&q.esrch),
                 atomic_load(&q.timeouts));
    cr_assert_eq(atomic_load(&q.dup), 0);
    cr_assert_eq(atomic_load(&q.other), 0, "a reply carried the wrong id");
    for (unsigned i = 0; i < N_REQ; i++)
        cr_assert_eq(q.tag[i], 1);
    cr_assert_eq(served, N_REQ + 2, "the echo node answered %llu",
                 (unsigned long long)served);
}

Test(cluster_request, no_responders_never_held, .timeout = ES_TEST_TIMEOUT)
{
    static struct requester q;
    struct cfx f;
    es_actor_id_t req, proxy;
    es_msg_t m = es_msg_u64(CN_PING, 1), r;
    double t0, took;
    int rc;

    cfx_start(&f, 0, 0);
    t0 = es_test_now();
    rc = cfx_call(&f, "nobody", &m, &r, 2 * ES_TEST_WAIT_S * 1000);
    took = es_test_now() - t0;
    cr_assert_eq(rc, -ESRCH, "es_call: %s", es_strerror(rc));
    cr_assert_lt(took, ES_TEST_WAIT_S / 2, "-ESRCH took %.2f s", took);

    req = cfx_requester(&f, &q, 1, CN_PING);
    ES_OK(es_cluster_lookup(f.c, "nobody.else", &proxy));
    cfx_ask(&f, req, proxy, 10, LONG_MS);
    ES_WAIT_GE(q.outcomes, 10);
    cfx_fini(&f);

    cr_assert_eq(atomic_load(&q.esrch), 10);
    cr_assert_eq(atomic_load(&q.dup), 0);
    for (unsigned i = 0; i < 10; i++)
        cr_assert_lt(q.done_s[i] - q.sent_s[i], ES_TEST_WAIT_S / 2);
}

Test(cluster_request, no_responders_after_holder_killed,
     .timeout = ES_TEST_TIMEOUT)
{
    struct cfx f;
    es_actor_id_t proxy;
    es_msg_t m = es_msg_u64(CN_PING, 1), r;
    es_cluster_stats_t before, after;
    double t0, took;
    int rc;

    /* Node loss takes 1 s * (4 + 1) to detect: the -ESRCH below must come
     * from the broker (no responders), not from a DOWN of the proxy. */
    cfx_start(&f, 1000, 4);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    ES_OK(es_cluster_lookup(f.c, "svc", &proxy));
    ES_OK(es_call(f.rt, proxy, &m, &r, 10000));
    es_msg_release(&r);

    test_node_stop(&f.nodes[0], true, ES_TEST_JOIN_S);
    es_test_sleep_ms(200); /* the broker has seen the socket close */
    es_cluster_stats(f.c, &before);
    t0 = es_test_now();
    rc = es_call(f.rt, proxy, &m, &r, LONG_MS);
    took = es_test_now() - t0;
    /* The counter may be bumped just after the outcome is handed over. */
    for (double end = es_test_now() + ES_TEST_WAIT_S;
         es_cluster_stats(f.c, &after),
                after.no_responders == before.no_responders &&
                    es_test_now() < end;)
        es_test_sleep_ms(5);
    cfx_fini(&f);

    cr_assert_eq(rc, -ESRCH, "es_call: %s", es_strerror(rc));
    cr_assert_lt(took, 2.0, "-ESRCH took %.2f s", took);
    cr_assert_gt(after.no_responders, before.no_responders,
                 "the request did not fail through NATS no-responders");
}

Test(cluster_request, timeout, .timeout = ES_TEST_TIMEOUT)
{
    static struct requester q;
    struct cfx f;
    es_actor_id_t req, proxy;
    es_msg_t m = es_msg_u64(CN_IGNORE, 1), r;
    double t0, took;
    int rc;

    cfx_start(&f, 0, 0);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    t0 = es_test_now();
    rc = cfx_call(&f, "svc", &m, &r, 300);
    took = es_test_now() - t0;
    cr_assert_eq(rc, -ETIMEDOUT, "es_call: %s", es_strerror(rc));
    cr_assert_geq(took, 0.295, "-ETIMEDOUT after %.3f s, deadline 0.3", took);

    req = cfx_requester(&f, &q, 0, CN_IGNORE);
    ES_OK(es_cluster_lookup(f.c, "svc", &proxy));
    cfx_ask(&f, req, proxy, 20, 500);
    ES_WAIT_GE(q.outcomes, 20);
    es_test_sleep_ms(100);
    cfx_fini(&f);

    cr_assert_eq(atomic_load(&q.timeouts), 20,
                 "timeouts %llu, replies %llu, -ESRCH %llu",
                 atomic_load(&q.timeouts), atomic_load(&q.replies),
                 atomic_load(&q.esrch));
    cr_assert_eq(atomic_load(&q.dup), 0);
    for (unsigned i = 0; i < 20; i++)
        cr_assert_geq(q.done_s[i] - q.sent_s[i], 0.495, "early: %.3f s",
                      q.done_s[i] - q.sent_s[i]);
}

/* Asserts that every request of q had one outcome, none a timeout, and
 * that the unanswered ones (CN_IGNORE) all failed. */
static void assert_ended(struct requester *q, const char *who)
{
    unsigned long long asked = atomic_load(&q->asked);

    cr_assert_eq(atomic_load(&q->outcomes), asked, "%s: %llu of %llu", who,
                 atomic_load(&q->outcomes), asked);
    cr_assert_eq(atomic_load(&q->dup), 0, "%s: a second outcome", who);
    cr_assert_eq(atomic_load(&q->timeouts), 0, "%s: waited for the deadline",
                 who);
    for (unsigned i = 0; i < q->nids; i++) {
        cr_assert(q->seen[i] == 1, "%s: request %u: %u outcomes", who, i,
                  q->seen[i]);
        if (q->types[i] == CN_IGNORE)
            cr_assert_neq(q->reason[i], 0, "%s: an ignored request replied",
                          who);
    }
}

Test(cluster_request, leave_with_requests_in_flight, .timeout = ES_TEST_TIMEOUT)
{
    static struct requester q[2];
    struct cfx f;
    es_actor_id_t req[2], proxy;

    cfx_start(&f, 0, 0);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    ES_OK(es_cluster_lookup(f.c, "svc", &proxy));
    for (int i = 0; i < 2; i++) {
        req[i] = cfx_requester(&f, &q[i], i, CN_PING);
        q[i].alternate = 1; /* CN_PING, CN_IGNORE, CN_PING, ... */
        cfx_ask(&f, req[i], proxy, 200, LONG_MS);
    }
    ES_WAIT_GE(q[0].asked, 200);
    ES_WAIT_GE(q[1].asked, 200);
    cfx_leave(&f); /* with up to 400 requests in flight */
    ES_WAIT_GE(q[0].outcomes, 200);
    ES_WAIT_GE(q[1].outcomes, 200);
    es_test_sleep_ms(100); /* no second outcome */
    cfx_fini(&f);

    assert_ended(&q[0], "requester 0");
    assert_ended(&q[1], "requester 1");
    for (int k = 0; k < 2; k++)
        cr_assert_eq(atomic_load(&q[k].esrch) + atomic_load(&q[k].replies), 200,
                     "requester %d: other reasons %llu", k,
                     atomic_load(&q[k].other));
}

Test(cluster_request, holder_leaves_with_requests_in_flight,
     .timeout = ES_TEST_TIMEOUT)
{
    static struct requester q;
    struct cfx f;
    es_actor_id_t req, proxy;
    int status;

    cfx_start(&f, 0, 0);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    ES_OK(es_cluster_lookup(f.c, "svc", &proxy));
    req = cfx_requester(&f, &q, 0, CN_IGNORE);
    cfx_ask(&f, req, proxy, N_REQ, LONG_MS);
    ES_WAIT_GE(q.asked, N_REQ);
    es_test_sleep_ms(100); /* they reached n1, which keeps them */
    status = test_node_stop(&f.nodes[0], false, ES_TEST_JOIN_S);
    ES_WAIT_GE(q.outcomes, N_REQ);
    es_test_sleep_ms(100);
    cfx_fini(&f);

    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "n1 did not leave cleanly: status %#x", status);
    assert_ended(&q, "requester");
    cr_assert_eq(atomic_load(&q.replies), 0);
}

Test(cluster_request, holder_killed_with_requests_in_flight,
     .timeout = ES_TEST_TIMEOUT)
{
    static struct requester q;
    struct cfx f;
    es_actor_id_t req, proxy;
    unsigned esrch = 0, lost = 0;

    cfx_start(&f, 100, 4);
    cfx_node(&f, 0, "n1", 1, "echo", "svc", NULL);
    ES_OK(es_cluster_lookup(f.c, "svc", &proxy));
    req = cfx_requester(&f, &q, 0, CN_IGNORE);
    cfx_ask(&f, req, proxy, N_REQ, LONG_MS);
    ES_WAIT_GE(q.asked, N_REQ);
    es_test_sleep_ms(100);
    test_node_stop(&f.nodes[0], true, ES_TEST_JOIN_S);
    ES_WAIT_GE(q.outcomes, N_REQ);
    es_test_sleep_ms(100);
    cfx_fini(&f);

    assert_ended(&q, "requester");
    for (unsigned i = 0; i < q.nids; i++) {
        esrch += q.reason[i] == -ESRCH;
        lost += q.reason[i] == ES_CLUSTER_NODE_LOST;
    }
    cr_assert_eq(esrch + lost, N_REQ,
                 "reasons: -ESRCH %u, ES_CLUSTER_NODE_LOST %u, first %d", esrch,
                 lost, q.reason[0]);
}
