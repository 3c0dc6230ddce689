/* SPDX-License-Identifier: MIT */
/*
 * Line-based chat room over TCP, to show messages between actors on
 * different demux threads. One "room" actor keeps the member list; every
 * accepted connection is an actor of its own, placed round-robin over the
 * threads. A connection joins the room when it opens (MSG_JOIN), sends each
 * complete line it reads to the room as a malloc'd copy (MSG_SAY, freed by
 * the runtime after the room handled it), and leaves when it closes
 * (MSG_LEAVE). The room formats the line once into a reference-counted
 * buffer and sends every other member a MSG_LINE holding one reference;
 * the member hands that buffer to es_conn_write_ref(), so a broadcast costs
 * one allocation, not one per member. Backpressure policy: nothing blocks
 * and nothing grows without bound. If a member's mailbox is full (es_send
 * returns -EAGAIN) the line is dropped for that member; if a member's
 * socket write queue is above its high watermark (a slow reader) lines are
 * dropped for it until it falls below the low watermark; if the room's own
 * mailbox is full a member's line is dropped. Every drop is counted and the
 * counts are printed when the server stops. A LEAVE that is lost is
 * harmless: the room drops a member as soon as a send to it fails with
 * -ESRCH. Usage:
 *   chat_server [--port P] [--threads N] [--seconds S]
 * Defaults: port 7001 on 127.0.0.1, one thread per CPU, run until SIGINT /
 * SIGTERM (--seconds S stops after S seconds). Try two `nc 127.0.0.1 7001`.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eventserver/eventserver.h>

enum {
    MSG_JOIN = ES_MSG_USER, /* conn -> room: u64[0] actor, u64[1] user no */
    MSG_LEAVE,              /* conn -> room: same payload */
    MSG_SAY,                /* conn -> room: ptr = "userN: text\n" */
    MSG_LINE,               /* room -> conn: ptr = struct line (one ref) */
};

#define LINE_MAX_LEN 512 /* longer lines are cut into pieces of this size */

/* Counters printed at exit; written from any demux thread. */
struct chat_stats {
    atomic_ulong joined, lines_in, lines_out;
    atomic_ulong drop_member_full; /* member mailbox full (-EAGAIN) */
    atomic_ulong drop_slow;        /* member write queue above high mark */
    atomic_ulong drop_room_full;   /* room mailbox full */
};

struct chat {
    es_actor_id_t room;
    atomic_uint next_user;
    struct chat_stats st;
};

/* A broadcast line shared by every member it is sent to. */
struct line {
    atomic_uint refs;
    uint32_t len;
    char text[];
};

struct member {
    es_actor_id_t id;
    unsigned user;
};

struct room {
    struct chat *chat;
    struct member *m;
    size_t n, cap;
};

struct conn {
    struct chat *chat;
    unsigned user;
    int joined, slow;
    size_t fill;
    char buf[LINE_MAX_LEN];
};

/* --- reference-counted lines ---------------------------------------------- */

static struct line *line_new(const char *text, size_t len)
{
    struct line *l = malloc(sizeof(*l) + len);
    if (!l)
        return NULL;
    atomic_init(&l->refs, 1);
    l->len = (uint32_t)len;
    memcpy(l->text, text, len);
    return l;
}

static void line_unref(void *p)
{
    struct line *l = p;
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        free(l);
}

/* es_conn_write_ref() frees by the data pointer: find the line around it. */
static void line_text_unref(void *text)
{
    line_unref((char *)text - offsetof(struct line, text));
}

/* --- the room ------------------------------------------------------------- */

static int room_add(struct room *r, es_actor_id_t id, unsigned user)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        struct member *m = realloc(r->m, cap * sizeof(*m));
        if (!m)
            return -ENOMEM;
        r->m = m;
        r->cap = cap;
    }
    r->m[r->n++] = (struct member){id, user};
    return 0;
}

static void room_remove_at(struct room *r, size_t i)
{
    r->m[i] = r->m[--r->n];
}

static void room_remove(struct room *r, es_actor_id_t id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->m[i].id == id) {
            room_remove_at(r, i);
            return;
        }
}

/* Sends l to every member but `skip`; each send carries its own ref. */
static void room_broadcast(es_actor_t *self, struct room *r, struct line *l,
                           es_actor_id_t skip)
{
    es_runtime_t *rt = es_actor_runtime(self);
    for (size_t i = 0; i < r->n;) {
        if (r->m[i].id == skip) {
            i++;
            continue;
        }
        atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
        es_msg_t msg = es_msg_ptr(MSG_LINE, l, l->len, line_unref);
        int rc = es_send(rt, r->m[i].id, &msg);
        if (rc == 0) {
            atomic_fetch_add(&r->chat->st.lines_out, 1);
            i++;
            continue;
        }
        line_unref(l); /* the send failed: the ref is still ours */
        if (rc == -EAGAIN)
            atomic_fetch_add(&r->chat->st.drop_member_full, 1);
        if (rc == -ESRCH)
            room_remove_at(r, i); /* it left; do not advance */
        else
            i++;
    }
}

static void room_announce(es_actor_t *self, struct room *r, unsigned user,
                          const char *what)
{
    char text[96];
    int len = snprintf(text, sizeof(text), "* user%u %s (%zu online)\n", user,
                       what, r->n);
    struct line *l = len > 0 ? line_new(text, (size_t)len) : NULL;
    if (!l)
        return;
    room_broadcast(self, r, l, ES_ACTOR_NONE);
    line_unref(l);
}

static int room_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct room *r = es_actor_state(self);
    es_actor_id_t who = (es_actor_id_t)msg->inl.u64[0];
    unsigned user = (unsigned)msg->inl.u64[1];
    switch (msg->type) {
    case MSG_JOIN:
        if (room_add(r, who, user))
            return 0; /* out of memory: this member just hears nothing */
        atomic_fetch_add(&r->chat->st.joined, 1);
        room_announce(self, r, user, "joined");
        return 0;
    case MSG_LEAVE:
        room_remove(r, who);
        room_announce(self, r, user, "left");
        return 0;
    case MSG_SAY: {
        struct line *l = line_new(msg->ptr, msg->len);
        if (!l)
            return 0;
        atomic_fetch_add(&r->chat->st.lines_in, 1);
        room_broadcast(self, r, l, msg->from);
        line_unref(l);
        return 0;
    }
    }
    return 0;
}

static void room_free(void *state)
{
    struct room *r = state;
    free(r->m);
    free(r);
}

/* --- connections ---------------------------------------------------------- */

static void *conn_new(void *arg)
{
    struct chat *chat = arg;
    struct conn *c = calloc(1, sizeof(*c));
    if (c) {
        c->chat = chat;
        c->user = atomic_fetch_add(&chat->next_user, 1) + 1;
    }
    return c;
}

static int conn_tell_room(es_actor_t *self, struct conn *c, uint32_t type)
{
    es_msg_t msg = es_msg_make(type);
    msg.inl.u64[0] = es_actor_self(self);
    msg.inl.u64[1] = c->user;
    msg.len = 2 * sizeof(uint64_t);
    return es_send(es_actor_runtime(self), c->chat->room, &msg);
}

/* Sends "userN: <line>\n" to the room as a malloc'd copy. */
static void conn_say(es_actor_t *self, struct conn *c)
{
    size_t cap = c->fill + 32;
    char *text = malloc(cap);
    if (!text)
        return;
    int len =
        snprintf(text, cap, "user%u: %.*s\n", c->user, (int)c->fill, c->buf);
    if (len <= 0) {
        free(text);
        return;
    }
    es_msg_t msg = es_msg_ptr(MSG_SAY, text, (uint32_t)len, free);
    int rc = es_send(es_actor_runtime(self), c->chat->room, &msg);
    if (rc) {
        es_msg_release(&msg); /* not sent: still ours to free */
        if (rc == -EAGAIN)
            atomic_fetch_add(&c->chat->st.drop_room_full, 1);
    }
}

/* Splits received bytes into lines; \r is dropped, long lines are cut. */
static void conn_data(es_actor_t *self, struct conn *c, const char *p,
                      size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\r')
            continue;
        if (p[i] != '\n')
            c->buf[c->fill++] = p[i];
        if (p[i] == '\n' || c->fill == sizeof(c->buf)) {
            if (c->fill)
                conn_say(self, c);
            c->fill = 0;
        }
    }
}

/* A broadcast line: write it (zero copy) unless this member is slow. */
static int conn_line(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    if (c->slow) {
        atomic_fetch_add(&c->chat->st.drop_slow, 1);
        return 0; /* the runtime drops our ref after we return */
    }
    struct line *l = es_msg_take(msg);
    int rc = es_conn_write_ref(self, l->text, l->len, line_text_unref);
    if (rc)
        line_unref(l); /* -EPIPE (closing) or -ENOMEM: still ours */
    return 0;
}

static int conn_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct conn *c = es_conn_state(self);
    if (!c)
        return -ENOMEM; /* conn_new failed */
    switch (msg->type) {
    case ES_MSG_CONN_OPEN:
        c->joined = conn_tell_room(self, c, MSG_JOIN) == 0;
        return c->joined ? 0 : es_conn_close(self);
    case ES_MSG_CONN_DATA:
        conn_data(self, c, msg->ptr, msg->len);
        return 0;
    case MSG_LINE:
        return conn_line(self, c, msg);
    case ES_MSG_CONN_HIGH_WATER:
        c->slow = 1;
        return 0;
    case ES_MSG_CONN_LOW_WATER:
        c->slow = 0;
        return 0;
    case ES_MSG_CONN_CLOSED:
        if (c->joined)
            (void)conn_tell_room(self, c, MSG_LEAVE); /* see top comment */
        c->joined = 0;
        return 0;
    }
    return 0;
}

/* --- main ----------------------------------------------------------------- */

struct opts {
    unsigned long port, threads, seconds;
};

static int parse_args(struct opts *o, int argc, char **argv)
{
    *o = (struct opts){.port = 7001};
    for (int i = 1; i < argc; i += 2) {
        char *end;
        unsigned long v = i + 1 < argc ? strtoul(argv[i + 1], &end, 10) : 0;
        if (i + 1 >= argc || *end || end == argv[i + 1])
            return -EINVAL;
        if (!strcmp(argv[i], "--port") && v <= 65535)
            o->port = v;
        else if (!strcmp(argv[i], "--threads") && v <= 1024)
            o->threads = v;
        else if (!strcmp(argv[i], "--seconds") && v <= 86400)
            o->seconds = v;
        else
            return -EINVAL;
    }
    return 0;
}

/* Reports a failed call; returns rc unchanged. */
static int check(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "chat_server: %s: %s\n", what, es_strerror(rc));
    return rc;
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

static int spawn_helpers(es_runtime_t *rt, struct chat *chat,
                         unsigned long seconds)
{
    struct room *r = calloc(1, sizeof(*r));
    if (!r)
        return check(-ENOMEM, "room");
    r->chat = chat;
    es_spawn_opts_t so = {.behaviour = room_behaviour,
                          .state = r,
                          .state_free = room_free,
                          .loop = ES_LOOP_ANY};
    int rc = check(es_spawn(rt, &so, &chat->room), "es_spawn room");
    if (rc) {
        room_free(r);
        return rc;
    }
    es_spawn_opts_t to = {.behaviour = stopper,
                          .state = (void *)(uintptr_t)seconds,
                          .loop = ES_LOOP_ANY};
    es_actor_id_t id;
    return seconds ? check(es_spawn(rt, &to, &id), "es_spawn stopper") : 0;
}

static int serve(es_runtime_t *rt, struct chat *chat, const struct opts *o)
{
    char address[32];
    snprintf(address, sizeof(address), "127.0.0.1:%lu", o->port);
    es_listen_opts_t lo = {.address = address,
                           .conn = {.behaviour = conn_behaviour,
                                    .state_new = conn_new,
                                    .state_free = free,
                                    .arg = chat}};
    es_listener_t *l = NULL;
    int rc = spawn_helpers(rt, chat, o->seconds);
    if (!rc)
        rc = check(es_runtime_stop_on_signal(rt, SIGINT), "SIGINT");
    if (!rc)
        rc = check(es_runtime_stop_on_signal(rt, SIGTERM), "SIGTERM");
    if (!rc)
        rc = check(es_listen(rt, &lo, &l), "es_listen");
    if (!rc)
        rc = check(es_runtime_start(rt), "es_runtime_start");
    if (!rc) {
        printf("chat_server: listening on 127.0.0.1:%d (%u demux threads)\n",
               es_listener_port(l), es_runtime_threads(rt));
        fflush(stdout);
        rc = check(es_runtime_wait(rt), "es_runtime_wait");
    }
    if (l)
        es_listener_free(l);
    return rc;
}

static void print_stats(const struct chat_stats *st)
{
    printf(
        "chat_server: %lu joined, %lu lines in, %lu sent to members; dropped: "
        "%lu member mailbox full, %lu slow member, %lu room mailbox "
        "full\n",
        atomic_load(&st->joined), atomic_load(&st->lines_in),
        atomic_load(&st->lines_out), atomic_load(&st->drop_member_full),
        atomic_load(&st->drop_slow), atomic_load(&st->drop_room_full));
}

int main(int argc, char **argv)
{
    static struct chat chat;
    struct opts o;
    es_runtime_t *rt;
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr, "usage: chat_server [--port P] [--threads N] "
                        "[--seconds S]\n");
        return 2;
    }
    es_runtime_opts_t ro = {.threads = (unsigned)o.threads};
    if (check(es_runtime_new(&ro, &rt), "es_runtime_new") < 0)
        return 1;
    int rc = serve(rt, &chat, &o);
    es_runtime_free(rt);
    print_stats(&chat.st);
    return rc == 0 ? 0 : 1;
}
