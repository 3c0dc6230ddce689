/* SPDX-License-Identifier: MIT */
/*
 * es_cluster_join() and es_cluster_leave() (issue 11): malformed names
 * and URLs are -EINVAL, a port where no broker listens is -ECONNREFUSED
 * (and leaves no thread or fd behind: the per-test leak check), and both
 * calls refuse a demux thread with -EDEADLK, since they wait on the
 * network.
 */
#include "cluster_fx.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static int join(es_runtime_t *rt, const char *url, const char *cluster,
                const char *node, es_cluster_t **c)
{
    es_cluster_opts_t o = {
        .servers = &url, .servers_count = 1, .cluster = cluster, .node = node};

    return es_cluster_join(rt, &o, c);
}

Test(cluster_join, bad_arguments_and_no_broker, .timeout = ES_TEST_TIMEOUT)
{
    struct test_nats s = {0};
    es_runtime_t *rt;
    es_cluster_t *c = NULL;
    es_cluster_opts_t none = {.cluster = "es", .node = "a"};
    int rc;

    TEST_NATS_REQUIRE();
    /* A port that was a broker's a moment ago: nobody listens now. */
    ES_OK(test_nats_start(&s, CFX_START_S));
    test_nats_stop(&s, true, ES_TEST_JOIN_S);
    rt = es_test_runtime_start(2);

    cr_assert_eq(join(rt, s.url, "e..s", "a", &c), -EINVAL);
    cr_assert_eq(join(rt, s.url, "es", "", &c), -EINVAL);
    cr_assert_eq(join(rt, s.url, "es", "a b", &c), -EINVAL);
    cr_assert_eq(join(rt, s.url, NULL, "a", &c), -EINVAL);
    cr_assert_eq(es_cluster_join(rt, &none, &c), -EINVAL, "no server URL");
    rc = join(rt, s.url, "es", "a", &c);
    cr_assert_eq(rc, -ECONNREFUSED, "join with no broker: %d (%s)", rc,
                 es_strerror(rc));
    cr_assert_null(c);
    es_test_free(rt);
    test_nats_fini(&s);
}

/* A process that joins first and asks for SIGTERM to stop its runtime
 * afterwards stops cleanly on SIGTERM: no thread the cluster started may
 * take the signal (its default action would kill the process). */
Test(cluster_join, signals_never_reach_cluster_threads,
     .timeout = ES_TEST_TIMEOUT)
{
    struct test_nats s = {0};
    TEST_NATS_REQUIRE();
    ES_OK(test_nats_start(&s, CFX_START_S));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        es_runtime_t *rt;
        es_cluster_t *c;
        if (es_runtime_new(&(es_runtime_opts_t){.threads = 2}, &rt) ||
            es_runtime_start(rt) || join(rt, s.url, "sig", "a", &c))
            _exit(3);
        if (es_runtime_stop_on_signal(rt, SIGTERM))
            _exit(4);
        /* Every thread but the runtime's and this one now lets SIGTERM
         * through if it does not block it. */
        for (int i = 0; i < 20; i++)
            kill(getpid(), SIGTERM);
        es_runtime_wait(rt);
        es_cluster_leave(c);
        es_runtime_free(rt);
        _exit(0);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the node died: %s %d",
              WIFSIGNALED(st) ? "signal" : "exit",
              WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    test_nats_fini(&s);
}

enum { J_JOIN = ES_MSG_USER + 0x400, J_LEAVE };

struct joiner {
    const char *url;
    es_cluster_t *c;
    atomic_int join_rc, leave_rc;
    atomic_ullong done;
};

static int joiner_cb(es_actor_t *self, es_msg_t *msg)
{
    struct joiner *j = es_actor_state(self);
    es_cluster_t *c = NULL;

    if (msg->type == J_JOIN) {
        atomic_store(&j->join_rc,
                     join(es_actor_runtime(self), j->url, "es", "x", &c));
        atomic_fetch_add(&j->done, 1);
    } else if (msg->type == J_LEAVE) {
        atomic_store(&j->leave_rc, es_cluster_leave(j->c));
        atomic_fetch_add(&j->done, 1);
    }
    return 0;
}

Test(cluster_join, refused_on_a_demux_thread, .timeout = ES_TEST_TIMEOUT)
{
    static struct joiner j;
    struct cfx f;
    es_spawn_opts_t o = {.behaviour = joiner_cb, .state = &j};
    es_actor_id_t id;
    es_msg_t m = es_msg_make(J_JOIN);

    cfx_start(&f, 0, 0);
    memset(&j, 0, sizeof(j));
    j.url = f.srv.url;
    j.c = f.c;
    ES_OK(es_spawn(f.rt, &o, &id));
    ES_OK(es_send(f.rt, id, &m));
    ES_WAIT_GE(j.done, 1);
    m = es_msg_make(J_LEAVE);
    ES_OK(es_send(f.rt, id, &m));
    ES_WAIT_GE(j.done, 2);
    cfx_fini(&f); /* c is still joined: es_cluster_leave() did nothing */

    cr_assert_eq(atomic_load(&j.join_rc), -EDEADLK);
    cr_assert_eq(atomic_load(&j.leave_rc), -EDEADLK);
}
