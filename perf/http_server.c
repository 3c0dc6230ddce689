/* SPDX-License-Identifier: MIT */
/*
 * The EventServer side of the HTTP benchmarks (perf/http_bench.sh): an
 * es_http_server serving the benchmark application of http_app.c
 * (GET /plaintext, POST /echo, GET /hold?ms=N; anything else gets 404).
 * SIGINT or SIGTERM stops it cleanly, as does --seconds S. Usage:
 *   http_server [--port P] [--threads N] [--bind ADDR]
 *               [--max-connections N] [--keepalive-ms MS] [--reuseport]
 *               [--seconds S]
 * P defaults to 8080 (0 picks a free port), N to one demux thread per CPU,
 * ADDR to 127.0.0.1; the other limits default to es_http_server_opts_t's.
 * Once it accepts it prints "http_server: listening on ADDR:PORT (N demux
 * threads)" on stdout; on exit, the server's counters.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_app.h"

struct opts {
    int port;
    unsigned threads, seconds;
    const char *bind;
    es_http_server_opts_t http;
};

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
    if (errno || end == s || *end || *s == '-' || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Handles one "--name value" pair. Returns: 0 or -EINVAL. */
static int parse_pair(struct opts *o, const char *k, const char *v)
{
    unsigned long n;
    if (!strcmp(k, "--bind")) {
        o->bind = v;
        return 0;
    }
    if (parse_uint(v, 4000000000ul, &n))
        return -EINVAL;
    if (!strcmp(k, "--port") && n <= 65535)
        o->port = (int)n;
    else if (!strcmp(k, "--threads") && n <= 1024)
        o->threads = (unsigned)n;
    else if (!strcmp(k, "--seconds") && n <= 86400)
        o->seconds = (unsigned)n;
    else if (!strcmp(k, "--max-connections"))
        o->http.max_connections = (unsigned)n;
    else if (!strcmp(k, "--keepalive-ms"))
        o->http.keepalive_timeout_ms = (unsigned)n;
    else
        return -EINVAL;
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.port = 8080, .bind = "127.0.0.1"};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reuseport"))
            o->http.reuseport = 1;
        else if (i + 1 >= argc || parse_pair(o, argv[i], argv[i + 1]))
            return -EINVAL;
        else
            i++;
    }
    return 0;
}

/* Reports a failed call; returns rc unchanged. */
static int check(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "http_server: %s: %s\n", what, es_strerror(rc));
    return rc;
}

static int start_stopper(es_runtime_t *rt, unsigned seconds)
{
    es_spawn_opts_t so = {.behaviour = stopper,
                          .state = (void *)(uintptr_t)seconds,
                          .loop = ES_LOOP_ANY};
    es_actor_id_t id;
    return seconds ? check(es_spawn(rt, &so, &id), "es_spawn") : 0;
}

/* Creates the server and its routes (the server is not started). */
static int setup(es_runtime_t *rt, const struct opts *o, es_http_server_t **s,
                 hb_app_t **app)
{
    char address[300];
    int n =
        snprintf(address, sizeof(address),
                 strchr(o->bind, ':') ? "[%s]:%d" : "%s:%d", o->bind, o->port);
    if (n < 0 || (size_t)n >= sizeof(address))
        return check(-EINVAL, "--bind");
    int rc = check(es_runtime_stop_on_signal(rt, SIGINT), "SIGINT");
    if (!rc)
        rc = check(es_runtime_stop_on_signal(rt, SIGTERM), "SIGTERM");
    if (!rc)
        rc = check(es_http_server_new(rt, &o->http, s), "es_http_server_new");
    if (!rc)
        rc = check(hb_app_new(rt, *s, app), "routes");
    if (!rc)
        rc = check(es_http_server_listen(*s, address), address);
    if (!rc)
        rc = start_stopper(rt, o->seconds);
    return rc;
}

static void print_stats(const es_http_server_t *s)
{
    es_http_server_stats_t st;
    if (es_http_server_stats(s, &st) == 0)
        printf("http_server: stopped; %llu connections accepted, %llu "
               "requests, %llu rejected, %llu deferred responses whose "
               "client left\n",
               (unsigned long long)st.accepted, (unsigned long long)st.requests,
               (unsigned long long)st.rejected,
               (unsigned long long)st.deferred_gone);
}

static int serve(es_runtime_t *rt, const struct opts *o)
{
    es_http_server_t *s = NULL;
    hb_app_t *app = NULL;
    int rc = setup(rt, o, &s, &app);
    if (!rc)
        rc = check(es_runtime_start(rt), "es_runtime_start");
    if (!rc)
        rc = check(es_http_server_start(s), "es_http_server_start");
    if (!rc) {
        printf("http_server: listening on %s:%d (%u demux threads)\n", o->bind,
               es_http_server_port(s, 0), es_runtime_threads(rt));
        fflush(stdout);
    }
    if (!rc) /* blocks until a signal or --seconds stops the runtime */
        rc = check(es_runtime_wait(rt), "es_runtime_wait");
    else if (es_runtime_stop(rt) == 0)
        (void)es_runtime_wait(rt); /* -EINVAL if it never started */
    if (s) {
        print_stats(s);
        es_http_server_free(s);
    }
    es_runtime_free(rt);
    hb_app_free(app);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    es_runtime_t *rt;
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr,
                "usage: http_server [--port P] [--threads N] [--bind ADDR]\n"
                "                   [--max-connections N] [--keepalive-ms "
                "MS] [--reuseport]\n"
                "                   [--seconds S]\n");
        return 2;
    }
    es_runtime_opts_t ro = {.threads = o.threads};
    if (check(es_runtime_new(&ro, &rt), "es_runtime_new") < 0)
        return 1;
    return serve(rt, &o) == 0 ? 0 : 1;
}
