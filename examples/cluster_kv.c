/* SPDX-License-Identifier: MIT */
/*
 * The key-value service of supervised_kv.c split into processes that talk
 * through a NATS server (include/eventserver/cluster.h):
 *
 *   cluster_kv front --nats URL --port P    TCP front: one connection actor
 *       per client turns each line into a request to the cluster name
 *       "kv.store" (es_cluster_lookup() + es_request(), 2 s deadline):
 *         PUT key value  ->  OK
 *         GET key        ->  VALUE value | NOTFOUND
 *   cluster_kv store --nats URL --node N    a store actor registered as
 *       "kv.store"; two or more store processes are a pool, and each
 *       request reaches one of them (a NATS queue group).
 *   cluster_kv client --port P              reads commands on stdin, sends
 *       each to the front and prints "> command" and "< answer" (a line
 *       starting with '#' is printed as it is, not sent).
 *
 * Consistency: a store that receives a PUT does not write it at once; it
 * publishes it on the topic "kv.puts", which every store subscribes to,
 * and every store (itself included) writes it when the topic delivers it.
 * The store answers OK when its own copy comes back, so by then the broker
 * has handed the PUT to every other store's connection too: every store
 * holds every key (a GET racing the OK to another store can still miss it
 * while that store's nats.c thread hands it in: a short window, not
 * closed). This is replication by broadcast, no more: core NATS is
 * at most once (a store that misses a publish misses that key), PUTs from
 * two stores to one key may reach the two stores in different orders, and
 * a store that starts late starts empty (there is no state transfer).
 *
 * Failover: the front retries once. When a request fails (-ESRCH at once
 * when no store holds the name, -ETIMEDOUT when the store that had it
 * died before answering), the front looks the name up again and sends it
 * once more; if that fails too, the client gets "ERR no store holds
 * kv.store" or "ERR no store answered (reason)". A killed store leaves the
 * queue group as soon as the broker sees its connection close, so the
 * requests sent after that all reach the stores that are left; only one
 * the dead store had already received waits for its deadline (2 s).
 *
 * All processes stop cleanly on SIGINT or SIGTERM. tests/example_cluster_kv.sh
 * runs the whole scenario (README, "Cluster key-value example").
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <eventserver/cluster.h>
#include <eventserver/eventserver.h>

#define STORE_NAME "kv.store"
#define PUT_TOPIC "kv.puts"
#define REQUEST_TIMEOUT_MS 2000
#define CLIENT_WAIT_S 10 /* the client gives up on an answer after this */
#define LINE_MAX_BYTES 1024
#define STORE_BUCKETS 256

/* Message types: the same numbers in every process. */
enum { KV_GET = ES_MSG_USER, KV_PUT, KV_REPLICATE, KV_HELLO };
enum { REPLY_OK, REPLY_NOTFOUND, REPLY_BAD }; /* inline byte 0 of a reply */

/* Splits a payload of n NUL-terminated strings ("a\0b\0") into f[0..n-1].
 * Returns 0, or -EINVAL if it is not exactly that. */
static int split(const es_msg_t *msg, const char **f, int n)
{
    const char *p = msg->ptr, *end = p + msg->len;
    if (!p || msg->len == 0 || end[-1] != '\0')
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        if (p >= end)
            return -EINVAL;
        f[i] = p;
        p += strlen(p) + 1;
    }
    return p == end ? 0 : -EINVAL;
}

/* --- the store ----------------------------------------------------------- */

struct entry {
    struct entry *next;
    char *key, *value;
};

/* A PUT this store published and answers when its own copy comes back. */
struct pending {
    struct pending *next;
    uint64_t seq;
    es_reply_token_t tok;
};

struct store {
    struct entry *bucket[STORE_BUCKETS];
    es_cluster_t *cluster;
    const char *node;
    uint64_t next_seq;
    struct pending *pending, **pending_tail; /* oldest first */
    unsigned long gets, puts, applied, from_peers, bad;
};

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
    /* Unanswered PUTs: their requesters get -ESRCH as the actor stops. */
    for (struct pending *p = s->pending, *n; p; p = n) {
        n = p->next;
        free(p);
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

static int store_set(struct store *s, const char *key, const char *value)
{
    struct entry **e = store_find(s, key);
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
    return 0;
}

static int reply_code(es_actor_t *self, const es_msg_t *req, int code)
{
    es_msg_t r = es_msg_make(ES_MSG_USER);
    r.len = 1;
    r.inl.bytes[0] = (unsigned char)code;
    int rc = es_reply(self, req, &r);
    return rc == -ESRCH ? 0 : rc; /* a requester that left is no error */
}

static int store_get(es_actor_t *self, struct store *s, const es_msg_t *req,
                     const char *key)
{
    struct entry **e = store_find(s, key);
    s->gets++;
    if (!*e)
        return reply_code(self, req, REPLY_NOTFOUND);
    char *copy = strdup((*e)->value);
    if (!copy)
        return -ENOMEM;
    es_msg_t r = es_msg_ptr(ES_MSG_USER, copy, (uint32_t)strlen(copy), free);
    int rc = es_reply(self, req, &r);
    if (rc)
        free(copy);
    return rc == -ESRCH ? 0 : rc; /* a requester that left is no error */
}

/* Publishes "node\0seq\0key\0value\0" on the topic; the answer waits for
 * this store's own copy (store_apply()). */
static int store_put(es_actor_t *self, struct store *s, const es_msg_t *req,
                     const char *key, const char *value)
{
    es_runtime_t *rt = es_actor_runtime(self);
    es_reply_token_t tok;
    int rc = es_reply_token(self, req, &tok);
    if (rc)
        return rc;
    s->puts++;
    struct pending *p = malloc(sizeof(*p));
    char seq[24];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)(s->next_seq + 1));
    size_t parts[4] = {strlen(s->node) + 1, strlen(seq) + 1, strlen(key) + 1,
                       strlen(value) + 1};
    size_t len = parts[0] + parts[1] + parts[2] + parts[3];
    char *buf = malloc(len);
    if (!p || !buf) {
        free(p);
        free(buf);
        (void)es_reply_error(rt, &tok, -ENOMEM); /* -ESRCH: it left */
        return 0;
    }
    const char *src[4] = {s->node, seq, key, value};
    for (size_t i = 0, at = 0; i < 4; at += parts[i], i++)
        memcpy(buf + at, src[i], parts[i]);
    es_msg_t m = es_msg_ptr(KV_REPLICATE, buf, (uint32_t)len, NULL);
    rc = es_cluster_publish(s->cluster, PUT_TOPIC, &m);
    free(buf); /* the cluster copied it */
    if (rc) {
        free(p);
        (void)es_reply_error(rt, &tok, rc);
        return 0;
    }
    p->seq = ++s->next_seq;
    p->tok = tok;
    p->next = NULL;
    *s->pending_tail = p;
    s->pending_tail = &p->next;
    return 0;
}

/* Writes a replicated PUT. If this store published it, answers its
 * request; publishes from one node arrive in order, so a pending PUT older
 * than this one was lost by the broker and fails with -EIO. */
static int store_apply(es_actor_t *self, struct store *s, const char **f)
{
    int rc = store_set(s, f[2], f[3]);
    if (rc)
        return rc;
    s->applied++;
    if (strcmp(f[0], s->node) != 0) {
        s->from_peers++;
        return 0;
    }
    uint64_t seq = strtoull(f[1], NULL, 10);
    es_runtime_t *rt = es_actor_runtime(self);
    while (s->pending && s->pending->seq <= seq) {
        struct pending *p = s->pending;
        if (p->seq == seq) {
            es_msg_t r = es_msg_make(ES_MSG_USER);
            r.len = 1;
            r.inl.bytes[0] = REPLY_OK;
            (void)es_reply_to(rt, &p->tok, &r); /* -ESRCH: requester left */
        } else {
            (void)es_reply_error(rt, &p->tok, -EIO);
        }
        s->pending = p->next;
        free(p);
    }
    if (!s->pending)
        s->pending_tail = &s->pending;
    return 0;
}

static int store_cb(es_actor_t *self, es_msg_t *msg)
{
    struct store *s = es_actor_state(self);
    const char *f[4];

    switch (msg->type) {
    case KV_GET:
        if (split(msg, f, 1) != 0)
            return reply_code(self, msg, REPLY_BAD);
        return store_get(self, s, msg, f[0]);
    case KV_PUT:
        if (split(msg, f, 2) != 0)
            return reply_code(self, msg, REPLY_BAD);
        return store_put(self, s, msg, f[0], f[1]);
    case KV_REPLICATE:
        if (split(msg, f, 4) != 0) {
            s->bad++;
            return 0;
        }
        return store_apply(self, s, f);
    case KV_HELLO:
        /* Our own hello came back through the topic: the broker has our
         * subscriptions (sent before it on the same connection). */
        if (split(msg, f, 1) == 0 && !strcmp(f[0], s->node)) {
            printf("store %s: serving \"%s\"\n", s->node, STORE_NAME);
            fflush(stdout);
        }
        return 0;
    case ES_MSG_STOP:
        printf("store %s: %lu GET, %lu PUT served; %lu PUT written, %lu of "
               "them from other stores; %lu malformed\n",
               s->node, s->gets, s->puts, s->applied, s->from_peers, s->bad);
        fflush(stdout);
        return 0;
    }
    return 0;
}

/* --- the front: one connection actor per client ----------------------------
 */

/* Requests that failed once and were sent again (printed at exit). */
static atomic_ulong front_retries;

struct client {
    es_cluster_t *cluster;
    char line[LINE_MAX_BYTES];
    size_t used;
    es_ref_t waiting; /* the request in flight, or 0 */
    uint32_t type;    /* KV_GET or KV_PUT of the command being served */
    char *payload;    /* its payload, kept to send it again */
    uint32_t len;     /* payload bytes */
    bool retried;     /* it was sent a second time already */
    char what[LINE_MAX_BYTES]; /* the command, for the log */
    char err[160];             /* an answer made here, not by a store */
};

static void *client_new(void *arg)
{
    struct client *c = calloc(1, sizeof(*c));
    if (c)
        c->cluster = arg;
    return c;
}

static void client_free(void *state)
{
    struct client *c = state;
    free(c->payload);
    free(c);
}

static int say(es_actor_t *self, const char *text)
{
    int rc = es_conn_write(self, text, strlen(text));
    return rc == -EPIPE ? 0 : rc;
}

/* Sends the current command to whichever store holds the name now.
 * Returns 0, or an error to tell the client. */
static int send_current(es_actor_t *self, struct client *c)
{
    es_actor_id_t store;
    int rc = es_cluster_lookup(c->cluster, STORE_NAME, &store);
    if (rc)
        return rc;
    char *p = malloc(c->len);
    if (!p)
        return -ENOMEM;
    memcpy(p, c->payload, c->len);
    es_msg_t m = es_msg_ptr(c->type, p, c->len, free);
    rc = es_request(self, store, &m, REQUEST_TIMEOUT_MS, &c->waiting);
    if (rc)
        free(p);
    return rc;
}

/* Parses one line into c->type and c->payload and sends it; returns NULL,
 * or a line to answer at once. */
static const char *ask_store(es_actor_t *self, struct client *c, char *line)
{
    snprintf(c->what, sizeof(c->what), "%s", line);
    char *save; /* strtok_r: connection actors run on several threads */
    char *cmd = strtok_r(line, " ", &save), *key = strtok_r(NULL, " ", &save);
    char *value = strtok_r(NULL, "", &save);
    bool put = cmd && !strcmp(cmd, "PUT");
    if (!cmd || !key || (put ? !value : strcmp(cmd, "GET") || value))
        return "ERR usage: PUT key value | GET key\n";
    size_t klen = strlen(key) + 1, vlen = put ? strlen(value) + 1 : 0;
    free(c->payload);
    c->payload = malloc(klen + vlen);
    if (!c->payload)
        return "ERR out of memory\n";
    memcpy(c->payload, key, klen);
    if (put)
        memcpy(c->payload + klen, value, vlen);
    c->len = (uint32_t)(klen + vlen);
    c->type = put ? KV_PUT : KV_GET;
    c->retried = false;
    int rc = send_current(self, c);
    if (rc == 0)
        return NULL;
    snprintf(c->err, sizeof(c->err), "ERR %s\n", es_strerror(rc));
    return c->err;
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

static int on_reply(es_actor_t *self, struct client *c, const es_msg_t *msg)
{
    static const char *const codes[] = {"OK", "NOTFOUND", "ERR bad request"};
    char out[LINE_MAX_BYTES + 16];
    c->waiting = 0;
    if (msg->ptr)
        snprintf(out, sizeof(out), "VALUE %.*s\n", (int)msg->len,
                 (const char *)msg->ptr);
    else if (msg->len == 1 && msg->inl.bytes[0] <= REPLY_BAD)
        snprintf(out, sizeof(out), "%s\n", codes[msg->inl.bytes[0]]);
    else
        snprintf(out, sizeof(out), "ERR malformed reply\n");
    if (say(self, out) != 0)
        return -ENOMEM;
    return next_lines(self, c);
}

/* The first failure of a command sends it again (lookup included); the
 * second one is told to the client. */
static int on_failed(es_actor_t *self, struct client *c, const es_msg_t *msg)
{
    int reason = es_msg_reason(msg);
    char out[256];
    c->waiting = 0;
    if (!c->retried) {
        c->retried = true;
        atomic_fetch_add(&front_retries, 1);
        fprintf(stderr, "front: \"%s\" failed (%s), sending it once more\n",
                c->what, es_strerror(reason));
        int rc = send_current(self, c);
        if (rc == 0)
            return 0;
        reason = rc;
    }
    if (reason == -ESRCH) /* no responders: nobody holds the name */
        snprintf(out, sizeof(out), "ERR no store holds %s\n", STORE_NAME);
    else
        snprintf(out, sizeof(out), "ERR no store answered (%s)\n",
                 es_strerror(reason));
    if (say(self, out) != 0)
        return -ENOMEM;
    return next_lines(self, c);
}

static int client_cb(es_actor_t *self, es_msg_t *msg)
{
    struct client *c = es_actor_state(self);

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
        return es_msg_ref(msg) == c->waiting ? on_reply(self, c, msg) : 0;
    case ES_MSG_REQUEST_FAILED:
        return es_msg_ref(msg) == c->waiting ? on_failed(self, c, msg) : 0;
    }
    return 0;
}

/* --- the client (blocking socket, for scripts) --------------------------- */

static int run_client(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval wait = {.tv_sec = CLIENT_WAIT_S};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)) != 0) {
        perror("cluster_kv client: connect");
        if (fd >= 0)
            close(fd);
        return 1;
    }
    FILE *in = fdopen(fd, "r");
    char line[LINE_MAX_BYTES], answer[LINE_MAX_BYTES + 16];
    int rc = 0;
    while (in && fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            printf("%s\n", line);
        } else {
            printf("> %s\n", line);
            strcat(line, "\n");
            if (write(fd, line, strlen(line)) < 0 ||
                !fgets(answer, sizeof(answer), in)) {
                printf("! no answer from the front\n");
                rc = 1;
                break;
            }
            printf("< %s", answer);
        }
        fflush(stdout);
    }
    if (in)
        fclose(in);
    else
        close(fd);
    return rc;
}

/* --- processes ------------------------------------------------------------
 */

struct args {
    const char *mode, *nats, *cluster, *node;
    int port;
    unsigned threads;
};

/* Blocks SIGINT and SIGTERM in every thread made from now on (the
 * runtime's and nats.c's), so that main() alone takes them with sigwait. */
static void block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

/* Starts a runtime and joins the cluster; prints why not. */
static int start(const struct args *a, es_runtime_t **rt, es_cluster_t **c)
{
    const char *servers[] = {a->nats};
    es_cluster_opts_t co = {.servers = servers,
                            .servers_count = 1,
                            .cluster = a->cluster,
                            .node = a->node};
    int rc = es_runtime_new(&(es_runtime_opts_t){.threads = a->threads}, rt);
    if (rc == 0 && (rc = es_runtime_start(*rt)) == 0 &&
        (rc = es_cluster_join(*rt, &co, c)) == 0)
        return 0;
    fprintf(stderr, "cluster_kv %s: %s\n", a->mode, es_strerror(rc));
    es_runtime_free(*rt);
    *rt = NULL;
    return rc;
}

static void stop(es_runtime_t *rt, es_cluster_t *c, const char *node)
{
    es_cluster_stats_t st;
    es_cluster_stats(c, &st);
    fprintf(stderr,
            "%s: cluster sent %llu, received %llu, requests %llu, replies "
            "%llu, no responders %llu, served %llu, lost %llu\n",
            node, (unsigned long long)st.sent, (unsigned long long)st.received,
            (unsigned long long)st.requests, (unsigned long long)st.replies,
            (unsigned long long)st.no_responders, (unsigned long long)st.served,
            (unsigned long long)(st.lost_mailbox + st.lost_no_actor +
                                 st.lost_slow));
    es_cluster_leave(c);
    es_runtime_stop(rt);
    es_runtime_wait(rt);
}

static int run_store(const struct args *a)
{
    sigset_t stop_set;
    int sig;
    block_stop_signals(&stop_set);
    es_runtime_t *rt;
    es_cluster_t *c;
    if (start(a, &rt, &c) != 0)
        return 1;
    struct store *s = calloc(1, sizeof(*s));
    es_actor_id_t id;
    int rc = -ENOMEM;
    if (s) {
        s->cluster = c;
        s->node = a->node;
        s->pending_tail = &s->pending;
        rc = es_spawn(rt,
                      &(es_spawn_opts_t){.behaviour = store_cb,
                                         .state = s,
                                         .state_free = store_free},
                      &id);
        if (rc)
            free(s);
    }
    /* The topic first: a store that serves PUTs must also receive them. */
    if (rc == 0)
        rc = es_cluster_subscribe(c, PUT_TOPIC, id);
    if (rc == 0)
        rc = es_cluster_register(c, STORE_NAME, id);
    /* Says hello on the topic; the store prints "serving" when it comes
     * back, which is when a client may count on this store. */
    es_msg_t hello = es_msg_ptr(KV_HELLO, (void *)a->node,
                                (uint32_t)strlen(a->node) + 1, NULL);
    if (rc == 0) {
        printf("store %s: joined cluster \"%s\" at %s\n", a->node, a->cluster,
               a->nats);
        fflush(stdout);
        rc = es_cluster_publish(c, PUT_TOPIC, &hello);
    }
    if (rc == 0)
        sigwait(&stop_set, &sig);
    else
        fprintf(stderr, "cluster_kv store: %s\n", es_strerror(rc));
    stop(rt, c, a->node);
    es_runtime_free(rt);
    return rc ? 1 : 0;
}

static int run_front(const struct args *a)
{
    sigset_t stop_set;
    int sig;
    block_stop_signals(&stop_set);
    es_runtime_t *rt;
    es_cluster_t *c;
    if (start(a, &rt, &c) != 0)
        return 1;
    char address[32];
    snprintf(address, sizeof(address), "127.0.0.1:%d", a->port);
    es_listen_opts_t lo = {.address = address,
                           .conn = {.behaviour = client_cb,
                                    .state_new = client_new,
                                    .state_free = client_free,
                                    .arg = c}};
    es_listener_t *l = NULL;
    int rc = es_listen(rt, &lo, &l);
    if (rc == 0) {
        printf("front: listening on 127.0.0.1:%d, cluster \"%s\" at %s\n",
               es_listener_port(l), a->cluster, a->nats);
        fflush(stdout);
        sigwait(&stop_set, &sig);
        fprintf(stderr, "front: requests sent a second time: %lu\n",
                atomic_load(&front_retries));
    } else {
        fprintf(stderr, "cluster_kv front: %s\n", es_strerror(rc));
    }
    stop(rt, c, a->node);
    if (l)
        es_listener_free(l);
    es_runtime_free(rt);
    return rc ? 1 : 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: cluster_kv store --node NAME [--nats URL] [--cluster C]\n"
            "       cluster_kv front [--port P] [--node NAME] [--nats URL] "
            "[--cluster C] [--threads N]\n"
            "       cluster_kv client --port P   (commands on stdin)\n"
            "defaults: --nats nats://127.0.0.1:4222 --cluster kvdemo "
            "--port 7002 --node front\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct args a = {
        .nats = "nats://127.0.0.1:4222", .cluster = "kvdemo", .port = 7002};
    if (argc < 2)
        return usage();
    a.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            return usage();
        if (!strcmp(opt, "--nats"))
            a.nats = val;
        else if (!strcmp(opt, "--cluster"))
            a.cluster = val;
        else if (!strcmp(opt, "--node"))
            a.node = val;
        else if (!strcmp(opt, "--port"))
            a.port = atoi(val);
        else if (!strcmp(opt, "--threads"))
            a.threads = (unsigned)atoi(val);
        else
            return usage();
        i++;
    }
    if (!strcmp(a.mode, "client"))
        return run_client(a.port);
    if (!strcmp(a.mode, "store"))
        return a.node ? run_store(&a) : usage();
    if (!strcmp(a.mode, "front")) {
        if (!a.node)
            a.node = "front";
        return run_front(&a);
    }
    return usage();
}
