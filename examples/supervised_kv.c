/* SPDX-License-Identifier: MIT */
/*
 * A small TCP key-value service under a supervisor. One store actor, named
 * "store", holds the data; one connection actor per client turns each line
 * into a request to it (es_request() by name, with a deadline) and writes
 * the answer back:
 *   SET key value   ->  OK
 *   GET key         ->  VALUE value | NOTFOUND
 *   anything else   ->  ERR ...
 * The key "poison" crashes the store (its behaviour returns -EFAULT). The
 * supervisor starts a new, empty store under the same name at once; the
 * request that hit the crash fails with -ESRCH straight away (not after its
 * deadline) and the client is told to retry. Every other client goes on.
 *
 * Usage:
 *   supervised_kv [--port P] [--threads N] [--seconds S]   serve
 *   supervised_kv --demo                                   serve on a free
 *       port and run a scripted client against it, printing the exchange
 *       (README, "Supervisors" shows the output)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <eventserver/eventserver.h>

#define REQUEST_TIMEOUT_MS 2000
#define LINE_MAX_BYTES 1024
#define STORE_BUCKETS 256

enum { KV_GET = ES_MSG_USER, KV_SET };
enum { REPLY_OK, REPLY_VALUE, REPLY_NOTFOUND }; /* inline byte 0 of a reply */

/* --- the store ----------------------------------------------------------- */

struct entry {
    struct entry *next;
    char *key, *value;
};

struct store {
    struct entry *bucket[STORE_BUCKETS];
    unsigned long generation; /* which start of the store this is */
};

static atomic_ulong store_starts;

static int store_init(void *arg, void **state)
{
    (void)arg;
    struct store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->generation = atomic_fetch_add(&store_starts, 1) + 1;
    *state = s;
    return 0;
}

static void store_free(void *state)
{
    struct store *s = state;
    for (unsigned i = 0; i < STORE_BUCKETS; i++)
        for (struct entry *e = s->bucket[i], *n; e; e = n) {
            n = e->next;
            free(e->key);
            free(e->value);
            free(e);
        }
    free(s);
}

static struct entry **store_find(struct store *s, const char *key)
{
    unsigned h = 5381;
    for (const char *p = key; *p; p++)
        h = h * 33 + (unsigned char)*p;
    struct entry **e = &s->bucket[h % STORE_BUCKETS];
    while (*e && strcmp((*e)->key, key))
        e = &(*e)->next;
    return e;
}

/* The request's ptr is "key" (GET) or "key\0value" (SET), len bytes. */
static int store_cb(es_actor_t *self, es_msg_t *msg)
{
    struct store *s = es_actor_state(self);
    if (msg->type != KV_GET && msg->type != KV_SET)
        return 0;
    const char *key = msg->ptr;
    if (!strcmp(key, "poison"))
        return -EFAULT; /* the bug this example is about */
    struct entry **e = store_find(s, key);
    es_msg_t r = es_msg_make(ES_MSG_USER);
    r.len = 1;
    if (msg->type == KV_SET) {
        const char *value = key + strlen(key) + 1;
        char *v = strdup(value);
        if (!v)
            return -ENOMEM;
        if (!*e) {
            struct entry *n = calloc(1, sizeof(*n));
            if (!n || !(n->key = strdup(key))) {
                free(n);
                free(v);
                return -ENOMEM;
            }
            *e = n;
        }
        free((*e)->value);
        (*e)->value = v;
        r.inl.bytes[0] = REPLY_OK;
    } else if (*e) {
        char *copy = strdup((*e)->value);
        if (!copy)
            return -ENOMEM;
        r = es_msg_ptr(ES_MSG_USER, copy, (uint32_t)strlen(copy), free);
    } else {
        r.inl.bytes[0] = REPLY_NOTFOUND;
    }
    return es_reply(self, msg, &r);
}

/* --- a connection -----------------------------------------------------------
 */

struct client {
    char line[LINE_MAX_BYTES];
    size_t used;
    es_ref_t waiting; /* the request in flight, or 0 */
};

static void *client_new(void *arg)
{
    (void)arg;
    return calloc(1, sizeof(struct client));
}

static int say(es_actor_t *self, const char *text)
{
    int rc = es_conn_write(self, text, strlen(text));
    return rc == -EPIPE ? 0 : rc;
}

/* Sends one line's command to the store; 0, or an error to tell. */
static const char *ask_store(es_actor_t *self, struct client *c, char *line)
{
    char *save = NULL;
    char *cmd = strtok_r(line, " ", &save), *key = strtok_r(NULL, " ", &save);
    char *value = strtok_r(NULL, "", &save);
    bool set = cmd && !strcmp(cmd, "SET");
    if (!cmd || !key || (set ? !value : strcmp(cmd, "GET") || value))
        return "ERR usage: SET key value | GET key\n";
    size_t klen = strlen(key) + 1, vlen = set ? strlen(value) + 1 : 0;
    char *p = malloc(klen + vlen);
    if (!p)
        return "ERR out of memory\n";
    memcpy(p, key, klen);
    if (set)
        memcpy(p + klen, value, vlen);
    es_actor_id_t store;
    if (es_whereis(es_actor_runtime(self), "store", &store) != 0) {
        free(p);
        return "ERR store restarting, try again\n";
    }
    es_msg_t m =
        es_msg_ptr(set ? KV_SET : KV_GET, p, (uint32_t)(klen + vlen), free);
    if (es_request(self, store, &m, REQUEST_TIMEOUT_MS, &c->waiting) != 0) {
        free(p);
        return "ERR out of memory\n";
    }
    return NULL;
}

/* Handles complete lines while no request is in flight. */
static int next_lines(es_actor_t *self, struct client *c)
{
    char *nl;
    while (!c->waiting && (nl = memchr(c->line, '\n', c->used))) {
        *nl = '\0';
        if (nl > c->line && nl[-1] == '\r')
            nl[-1] = '\0';
        size_t n = (size_t)(nl - c->line) + 1;
        char cmd[LINE_MAX_BYTES];
        memcpy(cmd, c->line, n);
        memmove(c->line, c->line + n, c->used - n);
        c->used -= n;
        const char *err = ask_store(self, c, cmd);
        if (err && say(self, err) != 0)
            return -ENOMEM;
    }
    return 0;
}

static int client_cb(es_actor_t *self, es_msg_t *msg)
{
    struct client *c = es_actor_state(self);
    char out[LINE_MAX_BYTES + 16];

    switch (msg->type) {
    case ES_MSG_CONN_DATA:
        if (c->used + msg->len > sizeof(c->line)) {
            (void)say(self, "ERR line too long\n");
            return es_conn_close(self);
        }
        memcpy(c->line + c->used, msg->ptr, msg->len);
        c->used += msg->len;
        return next_lines(self, c);
    case ES_MSG_REPLY:
        c->waiting = 0;
        if (msg->ptr)
            snprintf(out, sizeof(out), "VALUE %.*s\n", (int)msg->len,
                     (const char *)msg->ptr);
        else
            snprintf(out, sizeof(out), "%s\n",
                     msg->inl.bytes[0] == REPLY_OK ? "OK" : "NOTFOUND");
        if (say(self, out) != 0)
            return -ENOMEM;
        return next_lines(self, c);
    case ES_MSG_REQUEST_FAILED:
        c->waiting = 0;
        if (say(self, es_msg_reason(msg) == -ESRCH
                          ? "ERR store crashed and restarted, try again\n"
                          : "ERR store did not answer in time\n") != 0)
            return -ENOMEM;
        return next_lines(self, c);
    }
    return 0;
}

/* --- the demo client (a plain blocking socket on its own thread) --------- */

static int demo_port;

/* Sends one command and prints the answer. While the store is between
 * two lives (its name not registered again yet) the client waits a
 * millisecond and asks again, as a real client would; the retries are
 * counted, not printed, so the transcript does not depend on timing. */
static unsigned demo_retries;

static void demo_line(FILE *in, int fd, const char *cmd)
{
    static const char restarting[] = "ERR store restarting";
    char buf[LINE_MAX_BYTES];
    printf("> %s\n", cmd);
    for (int tries = 0; tries < 1000; tries++) {
        snprintf(buf, sizeof(buf), "%s\n", cmd);
        if (write(fd, buf, strlen(buf)) < 0 || !fgets(buf, sizeof(buf), in)) {
            printf("! connection lost\n");
            return;
        }
        if (strncmp(buf, restarting, sizeof(restarting) - 1) != 0)
            break;
        demo_retries++;
        usleep(1000);
    }
    printf("< %s", buf);
}

static void *demo_main(void *arg)
{
    es_runtime_t *rt = arg;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)demo_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int a = socket(AF_INET, SOCK_STREAM, 0),
        b = socket(AF_INET, SOCK_STREAM, 0);
    if (a < 0 || b < 0 || connect(a, (struct sockaddr *)&sa, sizeof(sa)) ||
        connect(b, (struct sockaddr *)&sa, sizeof(sa))) {
        perror("supervised_kv: demo connect");
        es_runtime_stop(rt);
        return NULL;
    }
    FILE *ina = fdopen(a, "r"), *inb = fdopen(b, "r");
    printf("client A:\n");
    demo_line(ina, a, "SET colour blue");
    demo_line(ina, a, "GET colour");
    printf("client B:\n");
    demo_line(inb, b, "GET poison");
    printf("client A (same connection):\n");
    demo_line(ina, a, "GET colour");
    demo_line(ina, a, "SET colour green");
    demo_line(ina, a, "GET colour");
    printf("client B (same connection):\n");
    demo_line(inb, b, "GET colour");
    printf("store started %lu times\n", atomic_load(&store_starts));
    fprintf(stderr, "supervised_kv: %u retries while the store restarted\n",
            demo_retries);
    fclose(ina);
    fclose(inb);
    es_runtime_stop(rt);
    return NULL;
}

/* --- main ------------------------------------------------------------------
 */

int main(int argc, char **argv)
{
    int port = 7001;
    unsigned threads = 0, seconds = 0;
    bool demo = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--demo"))
            demo = true;
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: supervised_kv [--port P] [--threads N] "
                            "[--seconds S] | --demo\n");
            return 2;
        }
    }
    if (demo)
        port = 0;
    es_runtime_t *rt;
    int rc = es_runtime_new(&(es_runtime_opts_t){.threads = threads}, &rt);
    if (rc) {
        fprintf(stderr, "supervised_kv: %s\n", es_strerror(rc));
        return 1;
    }
    es_child_spec_t store = {
        .spawn = {.behaviour = store_cb, .state_free = store_free},
        .init = store_init,
        .name = "store",
        .restart = ES_RESTART_PERMANENT};
    es_actor_id_t sup;
    char address[32];
    snprintf(address, sizeof(address), "127.0.0.1:%d", port);
    es_listen_opts_t lo = {.address = address,
                           .conn = {.behaviour = client_cb,
                                    .state_new = client_new,
                                    .state_free = free}};
    es_listener_t *l = NULL;
    rc = es_supervisor_spawn(rt,
                             &(es_supervisor_opts_t){.strategy = ES_ONE_FOR_ONE,
                                                     .children = &store,
                                                     .nchildren = 1,
                                                     .max_restarts = 10,
                                                     .period_ms = 1000},
                             &sup);
    if (!rc)
        rc = es_runtime_stop_on_signal(rt, SIGINT);
    if (!rc)
        rc = es_runtime_stop_on_signal(rt, SIGTERM);
    if (!rc)
        rc = es_listen(rt, &lo, &l);
    if (!rc)
        rc = es_runtime_start(rt);
    pthread_t client;
    bool client_started = false;
    if (!rc) {
        demo_port = es_listener_port(l);
        printf("supervised_kv: listening on 127.0.0.1:%d\n", demo_port);
        fflush(stdout);
        if (demo)
            client_started = pthread_create(&client, NULL, demo_main, rt) == 0;
        else if (seconds) {
            sleep(seconds);
            es_runtime_stop(rt);
        }
        rc = es_runtime_wait(rt);
    }
    if (client_started)
        pthread_join(client, NULL);
    if (rc)
        fprintf(stderr, "supervised_kv: %s\n", es_strerror(rc));
    if (l)
        es_listener_free(l);
    es_runtime_free(rt);
    return rc ? 1 : 0;
}
