/* SPDX-License-Identifier: MIT */
/*
 * The README's first actor: main() spawns a greeter, sends it a few messages
 * from its own (foreign) thread, and the greeter stops the runtime after the
 * last one. Ctrl-C stops it early through a signal subscription.
 */
#include <signal.h>
#include <stdio.h>

#include <eventserver/eventserver.h>

enum { MSG_HELLO = ES_MSG_USER };

#define HELLOS 3

static int greeter(es_actor_t *self, es_msg_t *msg)
{
    switch (msg->type) {
    case MSG_HELLO:
        printf("hello %llu from thread %d\n",
               (unsigned long long)msg->inl.u64[0], es_actor_loop_index(self));
        if (msg->inl.u64[0] == HELLOS)
            es_runtime_stop(es_actor_runtime(self));
        return 0;
    case ES_MSG_SIGNAL:
        es_runtime_stop(es_actor_runtime(self));
        return 0;
    }
    return 0;
}

/* Reports a failed call; returns rc unchanged. */
static int check(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "hello: %s: %s\n", what, es_strerror(rc));
    return rc;
}

int main(void)
{
    es_runtime_opts_t opts = {.threads = 2};
    es_spawn_opts_t spawn = {.behaviour = greeter, .loop = ES_LOOP_ANY};
    es_runtime_t *rt;
    es_actor_id_t greeter_id;
    int rc;

    if (check(es_runtime_new(&opts, &rt), "es_runtime_new") < 0)
        return 1;
    rc = check(es_spawn(rt, &spawn, &greeter_id), "es_spawn");
    if (rc == 0)
        rc = check(es_signal_subscribe(rt, greeter_id, SIGINT), "subscribe");
    if (rc == 0)
        rc = check(es_runtime_start(rt), "es_runtime_start");
    for (uint64_t i = 1; rc == 0 && i <= HELLOS; i++) {
        es_msg_t msg = es_msg_u64(MSG_HELLO, i);
        rc = check(es_send(rt, greeter_id, &msg), "es_send");
    }
    if (rc == 0)
        rc = check(es_runtime_wait(rt), "es_runtime_wait");
    es_runtime_free(rt); /* on error this also stops the runtime */
    return rc == 0 ? 0 : 1;
}
