/* SPDX-License-Identifier: MIT */
/*
 * TCP echo server: es_listen() on 127.0.0.1:P spawns one connection actor
 * per accepted socket, and its behaviour writes every ES_MSG_CONN_DATA back
 * with es_conn_write(). Flow control comes from the library: a peer that
 * does not read makes the write queue pass its high mark, which pauses
 * reading on that connection. Ctrl-C (SIGINT) or SIGTERM stops the runtime
 * cleanly, as does --seconds S (0, the default, means run until a signal).
 * Usage:
 *   echo_server [--port P] [--threads N] [--seconds S]
 * P defaults to 7000 (0 picks a free port); N to one demux thread per CPU.
 * The bound port is printed on stdout, e.g. "echo_server: listening on
 * 127.0.0.1:7000 (2 threads)"; try it with `nc 127.0.0.1 7000` or
 * examples/echo_client. perf/echo_bench.sh uses it as the EventServer side
 * of the echo benchmark.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eventserver/eventserver.h>

struct opts {
    int port;
    unsigned threads;
    unsigned seconds;
};

/* The connection behaviour: everything that arrives goes straight back. */
static int echo(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != ES_MSG_CONN_DATA)
        return 0;
    int rc = es_conn_write(self, msg->ptr, msg->len);
    /* -EPIPE: the connection is already closing; nothing left to do. */
    return rc == -EPIPE ? 0 : rc;
}

/* Stops the runtime when its one-shot timer fires (--seconds). */
static int stopper(es_actor_t *self, es_msg_t *msg)
{
    uintptr_t secs = (uintptr_t)es_actor_state(self);
    if (msg->type == ES_MSG_START)
        return es_timer_start(self, (uint64_t)secs * 1000, 0, 0, NULL);
    if (msg->type == ES_MSG_TIMER)
        es_runtime_stop(es_actor_runtime(self));
    return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.port = 7000};
    for (int i = 1; i < argc; i += 2) {
        unsigned long v;
        if (i + 1 >= argc)
            return -EINVAL;
        if (!strcmp(argv[i], "--port") && !parse_uint(argv[i + 1], 65535, &v))
            o->port = (int)v;
        else if (!strcmp(argv[i], "--threads") &&
                 !parse_uint(argv[i + 1], 1024, &v))
            o->threads = (unsigned)v;
        else if (!strcmp(argv[i], "--seconds") &&
                 !parse_uint(argv[i + 1], 86400, &v))
            o->seconds = (unsigned)v;
        else
            return -EINVAL;
    }
    return 0;
}

/* Reports a failed call; returns rc unchanged. */
static int check(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "echo_server: %s: %s\n", what, es_strerror(rc));
    return rc;
}

static int start_listener(es_runtime_t *rt, int port, es_listener_t **out)
{
    char address[32];
    snprintf(address, sizeof(address), "127.0.0.1:%d", port);
    es_listen_opts_t lo = {.address = address, .conn.behaviour = echo};
    return check(es_listen(rt, &lo, out), "es_listen");
}

static int start_stopper(es_runtime_t *rt, unsigned seconds)
{
    es_spawn_opts_t so = {.behaviour = stopper,
                          .state = (void *)(uintptr_t)seconds,
                          .loop = ES_LOOP_ANY};
    es_actor_id_t id;
    return seconds ? check(es_spawn(rt, &so, &id), "es_spawn") : 0;
}

static int serve(es_runtime_t *rt, const struct opts *o)
{
    es_listener_t *l = NULL;
    int rc = check(es_runtime_stop_on_signal(rt, SIGINT), "SIGINT");
    if (!rc)
        rc = check(es_runtime_stop_on_signal(rt, SIGTERM), "SIGTERM");
    if (!rc)
        rc = start_listener(rt, o->port, &l);
    if (!rc)
        rc = start_stopper(rt, o->seconds);
    if (!rc)
        rc = check(es_runtime_start(rt), "es_runtime_start");
    if (!rc) {
        printf("echo_server: listening on 127.0.0.1:%d (%u demux threads)\n",
               es_listener_port(l), es_runtime_threads(rt));
        fflush(stdout);
        rc = check(es_runtime_wait(rt), "es_runtime_wait");
    }
    es_listener_stats_t st;
    if (l && es_listener_stats(l, &st) == 0)
        printf("echo_server: stopped; %llu connections accepted\n",
               (unsigned long long)st.accepted);
    if (l)
        es_listener_free(l);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    es_runtime_t *rt;
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr, "usage: echo_server [--port P] [--threads N] "
                        "[--seconds S]\n");
        return 2;
    }
    es_runtime_opts_t ro = {.threads = o.threads};
    if (check(es_runtime_new(&ro, &rt), "es_runtime_new") < 0)
        return 1;
    int rc = serve(rt, &o);
    es_runtime_free(rt); /* on error this also stops the runtime */
    return rc == 0 ? 0 : 1;
}
