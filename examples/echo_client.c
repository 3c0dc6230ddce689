/* SPDX-License-Identifier: MIT */
/*
 * TCP echo client: es_connect() opens C connections to an echo server (for
 * example examples/echo_server); each connection actor sends M messages of
 * S bytes one at a time (send, wait for the whole echo, check it byte for
 * byte, send the next) and closes when done. A watchdog actor's timer ends
 * the run after --timeout seconds whatever happens. The last connection to
 * finish stops the runtime; main() then prints a summary (round trips,
 * round trips per second, failures) and exits with 1 if any connection
 * failed to connect, closed early, timed out or received a wrong byte.
 * Usage:
 *   echo_client [--host H] [--port P] [--connections C] [--messages M]
 *               [--size S] [--timeout T]
 * Defaults: 127.0.0.1, 7000, 10 connections, 1000 messages of 64 bytes,
 * 30 s. H must be a loopback address or "localhost".
 */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <eventserver/eventserver.h>

#define MAX_SIZE (1u << 20)
#define SPAWN_RETRIES 1000 /* es_connect -EAGAIN retries, 1 ms apart */

struct opts {
    const char *host;
    unsigned port, conns, messages, size, timeout_s;
};

/* Shared by every connection actor; counters are atomic. */
struct run {
    struct opts o;
    es_runtime_t *rt;
    atomic_uint next_index; /* numbers the connections */
    atomic_uint finished;   /* connections that reached CLOSED */
    atomic_ulong round_trips;
    atomic_uint failed_connect, closed_early, mismatches;
    atomic_int timed_out;
};

/* One connection's state. */
struct client {
    struct run *run;
    unsigned index;
    unsigned sent;      /* messages sent */
    unsigned done;      /* messages fully echoed */
    size_t got;         /* bytes of the current echo received */
    int bad;            /* a mismatch was seen */
    unsigned char *buf; /* the message being sent */
};

/* Byte j of message k of connection i: differs between all three. */
static unsigned char pattern(unsigned i, unsigned k, size_t j)
{
    return (unsigned char)(i * 31u + k * 7u + (unsigned)j);
}

static void *client_new(void *arg)
{
    struct run *run = arg;
    struct client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->buf = malloc(run->o.size);
    if (!c->buf) {
        free(c);
        return NULL;
    }
    c->run = run;
    c->index = atomic_fetch_add(&run->next_index, 1);
    return c;
}

static void client_free(void *state)
{
    struct client *c = state;
    if (c)
        free(c->buf);
    free(c);
}

static int send_next(es_actor_t *self, struct client *c)
{
    for (size_t j = 0; j < c->run->o.size; j++)
        c->buf[j] = pattern(c->index, c->sent, j);
    c->sent++;
    c->got = 0;
    return es_conn_write(self, c->buf, c->run->o.size);
}

/* Checks received bytes against the message in flight. */
static int on_data(es_actor_t *self, struct client *c, const unsigned char *p,
                   size_t len)
{
    size_t size = c->run->o.size;
    for (size_t j = 0; j < len; j++) {
        if (c->got == size || p[j] != pattern(c->index, c->done, c->got)) {
            c->bad = 1;
            atomic_fetch_add(&c->run->mismatches, 1);
            return es_conn_abort(self);
        }
        if (++c->got < size)
            continue;
        c->done++;
        atomic_fetch_add(&c->run->round_trips, 1);
        if (c->done == c->run->o.messages)
            return es_conn_close(self);
        int rc = send_next(self, c);
        if (rc)
            return rc;
    }
    return 0;
}

static void on_closed(struct client *c, const es_msg_t *msg)
{
    struct run *run = c->run;
    int reason = es_msg_conn_reason(msg);
    if (c->sent == 0 && reason != ES_CONN_LOCAL && reason != ES_CONN_STOPPED) {
        atomic_fetch_add(&run->failed_connect, 1);
        fprintf(stderr, "echo_client: connection %u: %s\n", c->index,
                es_conn_reason_str(reason));
    } else if (c->done < run->o.messages && !c->bad) {
        atomic_fetch_add(&run->closed_early, 1);
    }
    if (atomic_fetch_add(&run->finished, 1) + 1 == run->o.conns)
        es_runtime_stop(run->rt);
}

static int client(es_actor_t *self, es_msg_t *msg)
{
    struct client *c = es_conn_state(self);
    if (!c)
        return -ENOMEM; /* client_new failed */
    switch (msg->type) {
    case ES_MSG_CONN_OPEN:
        return send_next(self, c);
    case ES_MSG_CONN_DATA:
        return on_data(self, c, msg->ptr, msg->len);
    case ES_MSG_CONN_CLOSED:
        on_closed(c, msg);
        return 0;
    }
    return 0;
}

/* Ends the run when --timeout passes. */
static int watchdog(es_actor_t *self, es_msg_t *msg)
{
    struct run *run = es_actor_state(self);
    if (msg->type == ES_MSG_START)
        return es_timer_start(self, (uint64_t)run->o.timeout_s * 1000, 0, 0,
                              NULL);
    if (msg->type == ES_MSG_TIMER) {
        atomic_store(&run->timed_out, 1);
        es_runtime_stop(run->rt);
    }
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){"127.0.0.1", 7000, 10, 1000, 64, 30};
    static const struct {
        const char *name;
        unsigned long lo, hi;
        size_t off;
    } t[] = {
        {"--port", 1, 65535, offsetof(struct opts, port)},
        {"--connections", 1, 10000, offsetof(struct opts, conns)},
        {"--messages", 1, 100000000, offsetof(struct opts, messages)},
        {"--size", 1, MAX_SIZE, offsetof(struct opts, size)},
        {"--timeout", 1, 3600, offsetof(struct opts, timeout_s)},
    };
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc)
            return -EINVAL;
        if (!strcmp(argv[i], "--host")) {
            o->host = argv[i + 1];
            continue;
        }
        size_t k = 0;
        while (k < sizeof(t) / sizeof(t[0]) && strcmp(argv[i], t[k].name))
            k++;
        char *end;
        unsigned long v = strtoul(argv[i + 1], &end, 10);
        if (k == sizeof(t) / sizeof(t[0]) || *end || end == argv[i + 1] ||
            v < t[k].lo || v > t[k].hi)
            return -EINVAL;
        *(unsigned *)((char *)o + t[k].off) = (unsigned)v;
    }
    return 0;
}

static int loopback(const char *h)
{
    return !strcmp(h, "localhost") || !strncmp(h, "127.", 4) ||
           !strcmp(h, "::1");
}

/* Reports a failed call; returns rc unchanged. */
static int check(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "echo_client: %s: %s\n", what, es_strerror(rc));
    return rc;
}

/* es_connect, retrying while the channel to the target thread is full. */
static int connect_one(struct run *run)
{
    es_connect_opts_t co = {.host = run->o.host,
                            .port = (uint16_t)run->o.port,
                            .timeout_ms = 5000,
                            .loop = ES_LOOP_ANY,
                            .conn = {.behaviour = client,
                                     .state_new = client_new,
                                     .state_free = client_free,
                                     .arg = run}};
    es_actor_id_t id;
    int rc = -EAGAIN;
    for (int i = 0; rc == -EAGAIN && i < SPAWN_RETRIES; i++) {
        rc = es_connect(run->rt, &co, &id);
        if (rc == -EAGAIN)
            usleep(1000);
    }
    return check(rc, "es_connect");
}

static int start(struct run *run)
{
    es_spawn_opts_t wo = {
        .behaviour = watchdog, .state = run, .loop = ES_LOOP_ANY};
    es_actor_id_t id;
    int rc = check(es_spawn(run->rt, &wo, &id), "es_spawn");
    if (!rc)
        rc = check(es_runtime_start(run->rt), "es_runtime_start");
    for (unsigned i = 0; !rc && i < run->o.conns; i++)
        rc = connect_one(run);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int report(struct run *run, double secs)
{
    unsigned long rt = atomic_load(&run->round_trips);
    unsigned fc = atomic_load(&run->failed_connect);
    unsigned ce = atomic_load(&run->closed_early);
    unsigned mm = atomic_load(&run->mismatches);
    int to = atomic_load(&run->timed_out);
    unsigned long want = (unsigned long)run->o.conns * run->o.messages;
    printf("echo_client: %u connections x %u messages of %u bytes: %lu of "
           "%lu round trips in %.3f s (%.0f round trips/s)\n",
           run->o.conns, run->o.messages, run->o.size, rt, want, secs,
           secs > 0 ? (double)rt / secs : 0.0);
    printf("echo_client: failures: %u connect, %u closed early, %u "
           "mismatched%s\n",
           fc, ce, mm, to ? ", timed out" : "");
    return (fc || ce || mm || to || rt != want) ? -EIO : 0;
}

int main(int argc, char **argv)
{
    struct run run = {0};
    if (parse_args(&run.o, argc, argv) || !loopback(run.o.host)) {
        fprintf(stderr, "usage: echo_client [--host 127.0.0.1] [--port P] "
                        "[--connections C] [--messages M] [--size S] "
                        "[--timeout T]\n");
        return 2;
    }
    if (check(es_runtime_new(NULL, &run.rt), "es_runtime_new") < 0)
        return 1;
    double t0 = now_s();
    int rc = start(&run);
    if (rc)
        es_runtime_stop(run.rt);
    if (check(es_runtime_wait(run.rt), "es_runtime_wait") && !rc)
        rc = -EINVAL;
    double secs = now_s() - t0;
    es_runtime_free(run.rt);
    if (report(&run, secs))
        rc = -EIO;
    return rc == 0 ? 0 : 1;
}
