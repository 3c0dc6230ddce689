/* SPDX-License-Identifier: MIT */
/*
 * Tests of signals as messages: a process-directed signal reaches every
 * subscribed actor (on any loop) as ES_MSG_SIGNAL carrying its number,
 * subscriptions can be dropped and die with their actor, uncatchable
 * signals are refused, and es_runtime_stop_on_signal() stops the runtime.
 * Criterion runs each test in a child process that has a helper thread of
 * its own, so a constructor blocks the test signals before any thread
 * exists: every thread inherits the mask and only the runtime's signalfd
 * can consume them.
 */
#include "es_test.h"

#include <signal.h>
#include <unistd.h>

static void block_test_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

__attribute__((constructor)) static void block_before_threads(void)
{
    block_test_signals();
}

struct listener {
    atomic_ullong got;
    atomic_ullong wrong_signo;
    atomic_int last_signo;
    atomic_int loop;
    atomic_ullong started;
    atomic_ullong freed;
};

static int listener_cb(es_actor_t *self, es_msg_t *msg)
{
    struct listener *l = es_actor_state(self);

    if (msg->type == ES_MSG_START) {
        atomic_store(&l->loop, es_actor_loop_index(self));
        atomic_fetch_add(&l->started, 1);
    } else if (msg->type == ES_MSG_SIGNAL) {
        int signo = es_msg_signo(msg);

        atomic_store(&l->last_signo, signo);
        if (signo != SIGUSR1 && signo != SIGHUP)
            atomic_fetch_add(&l->wrong_signo, 1);
        atomic_fetch_add(&l->got, 1);
    }
    return 0;
}

static void listener_free(void *state)
{
    struct listener *l = state;

    atomic_fetch_add(&l->freed, 1);
}

static es_actor_id_t spawn_listener(es_runtime_t *rt, struct listener *l,
                                    int loop)
{
    es_spawn_opts_t o = {
        .behaviour = listener_cb,
        .state = l,
        .state_free = listener_free,
        .loop = ES_LOOP(loop),
    };
    es_actor_id_t id;

    ES_OK(es_spawn(rt, &o, &id));
    ES_WAIT_GE(l->started, 1);
    return id;
}

/* A runtime started after the test thread blocked the test signals. */
static es_runtime_t *start_runtime(void)
{
    block_test_signals();
    return es_test_runtime_start(2);
}

Test(signal, raised_signal_arrives_as_message, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = start_runtime();
    struct listener l = {0};
    es_actor_id_t id = spawn_listener(rt, &l, 1);

    ES_OK(es_signal_subscribe(rt, id, SIGUSR1));
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
    ES_WAIT_GE(l.got, 1);
    /* A second, separate occurrence is a second message. */
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
    ES_WAIT_GE(l.got, 2);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&l.last_signo), SIGUSR1);
    cr_assert_eq(atomic_load(&l.wrong_signo), 0);
    cr_assert_eq(atomic_load(&l.got), 2);
}

Test(signal, every_subscriber_on_every_loop, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = start_runtime();
    struct listener l[4] = {0};
    es_actor_id_t id[4];

    for (int i = 0; i < 4; i++) {
        id[i] = spawn_listener(rt, &l[i], i % 2);
        ES_OK(es_signal_subscribe(rt, id[i], SIGHUP));
    }
    cr_assert_eq(kill(getpid(), SIGHUP), 0);
    for (int i = 0; i < 4; i++)
        ES_WAIT_GE(l[i].got, 1);
    es_test_free(rt);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&l[i].loop), i % 2);
        cr_assert_eq(atomic_load(&l[i].got), 1);
        cr_assert_eq(atomic_load(&l[i].last_signo), SIGHUP);
    }
}

Test(signal, subscribe_errors, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = start_runtime();
    struct listener l = {0};
    es_actor_id_t id = spawn_listener(rt, &l, 0);

    cr_assert_eq(es_signal_subscribe(rt, id, SIGKILL), -EINVAL);
    cr_assert_eq(es_signal_subscribe(rt, id, SIGSTOP), -EINVAL);
    cr_assert_eq(es_signal_subscribe(rt, id, SIGSEGV), -EINVAL);
    cr_assert_eq(es_signal_subscribe(rt, id, 0), -EINVAL);
    cr_assert_eq(es_signal_subscribe(rt, id, -1), -EINVAL);
    cr_assert_eq(es_signal_subscribe(rt, id, 100000), -EINVAL);
    cr_assert_eq(es_runtime_stop_on_signal(rt, SIGKILL), -EINVAL);
    ES_OK(es_signal_subscribe(rt, id, SIGUSR1));
    cr_assert_eq(es_signal_subscribe(rt, id, SIGUSR1), -EALREADY);
    ES_OK(es_signal_unsubscribe(rt, id, SIGUSR1));
    cr_assert_eq(es_signal_unsubscribe(rt, id, SIGUSR1), -ENOENT);
    cr_assert_eq(es_signal_unsubscribe(rt, id, SIGUSR2), -ENOENT);
    es_test_free(rt);
}

Test(signal, unsubscribed_actor_hears_nothing, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = start_runtime();
    struct listener gone = {0}, stays = {0};
    es_actor_id_t a = spawn_listener(rt, &gone, 0);
    es_actor_id_t b = spawn_listener(rt, &stays, 1);

    ES_OK(es_signal_subscribe(rt, a, SIGUSR1));
    ES_OK(es_signal_subscribe(rt, b, SIGUSR1));
    ES_OK(es_signal_unsubscribe(rt, a, SIGUSR1));
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
    ES_WAIT_GE(stays.got, 1);
    es_test_sleep_ms(50);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&gone.got), 0);
    cr_assert_eq(atomic_load(&stays.got), 1);
}

Test(signal, subscription_dies_with_actor, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = start_runtime();
    struct listener old = {0}, fresh = {0};
    es_actor_id_t a = spawn_listener(rt, &old, 0);
    es_actor_id_t b;

    ES_OK(es_signal_subscribe(rt, a, SIGUSR1));
    ES_OK(es_stop(rt, a));
    ES_WAIT_GE(old.freed, 1);
    b = spawn_listener(rt, &fresh, 0);
    ES_OK(es_signal_subscribe(rt, b, SIGUSR1));
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
    ES_WAIT_GE(fresh.got, 1);
    es_test_sleep_ms(20);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&old.got), 0);
    cr_assert_eq(atomic_load(&fresh.got), 1);
}

Test(signal, stop_on_signal_stops_runtime, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = start_runtime();
    struct es_test_probe p[2] = {0};

    for (int i = 0; i < 2; i++)
        es_test_spawn_probe(rt, &p[i], ES_LOOP(i));
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(p[i].started, 1);
    ES_OK(es_runtime_stop_on_signal(rt, SIGUSR2));
    cr_assert_eq(kill(getpid(), SIGUSR2), 0);
    for (int i = 0; i < 2; i++)
        ES_WAIT_GE(p[i].freed, 1);
    ES_OK(es_test_wait(rt));
    cr_assert_eq(es_runtime_stop(rt), -EALREADY,
                 "the signal should have requested the stop already");
    es_test_free(rt);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(atomic_load(&p[i].stopped), 1);
        cr_assert_eq(atomic_load(&p[i].errors), 0);
    }
}
