/* SPDX-License-Identifier: MIT */
/*
 * A long-poll push server, the seed's CComet on the HTTP module, that
 * several processes (one port with SO_REUSEPORT, or several hosts) can
 * serve as one through the cluster's topics (--nats):
 *   GET /                   a page that follows a channel and publishes
 *   GET /sub?ch=NAME        waits (a deferred response) until something is
 *                           published on NAME, or --poll-timeout passes
 *                           (then 204); the body is the message
 *   GET /sub?ch=NAME&after=CURSOR
 *                           recovery: answers at once with what NAME got
 *                           after CURSOR (JSON: cursor, lost, messages),
 *                           else waits as above (timeout: 200, no
 *                           messages). An empty CURSOR answers at once with
 *                           a cursor for "from now on".
 *   POST /pub?ch=NAME       body = message. Alone: completes every waiting
 *                           /sub of NAME and answers how many got it; with
 *                           --nats: publishes it to every process and
 *                           answers its id ("node:seq").
 * Each channel keeps its last --history messages. A message's id is
 * (origin node, sequence number at that node); a cursor holds, per origin,
 * the last number the client has, plus the time it first subscribed: why
 * this gives every client each message exactly once whichever process its
 * polls land on is under "Recovery" in the README's comet section.
 * Everything a channel holds belongs to one "hub" actor; handlers on any
 * demux thread hand it their deferred responses with a message.
 * Usage: http_comet [--listen ADDR] [--threads N] [--reuseport]
 *        [--nats URL] [--node NAME] [--history N] [--poll-timeout MS]
 * Try: curl 'localhost:8081/sub?ch=a' & curl -d hi 'localhost:8081/pub?ch=a'
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <eventserver/eventserver.h>
#include <eventserver/http.h>
#ifdef ES_COMET_CLUSTER
#include <eventserver/cluster.h>
#endif

#define MAX_CHANNEL 64  /* name bytes with the NUL: [A-Za-z0-9_-] */
#define NODE_MAX 128    /* node name bytes (ES_CLUSTER_NAME_MAX) */
#define MAX_ORIGINS 32  /* origins a channel (and a cursor) tracks */
#define MAX_TEXT 65536  /* longest message [413] */
#define MAX_CURSOR 6144 /* longest cursor accepted in a query */
#define MAX_CHANNELS 4096
#define CHANNEL_BUCKETS 1024
#define CLUSTER_NAME "comet"

enum { MSG_SUB = ES_MSG_USER, MSG_PUB, MSG_WIRE };

static struct {
    const char *listen;
    unsigned threads;
    int reuseport;
    const char *nats;
    char node[NODE_MAX + 1];
    unsigned history;
    unsigned poll_timeout_ms;
} g_opt = {"127.0.0.1:8081", 2, 0, NULL, "", 64, 30000};

static es_actor_id_t g_hub;
#ifdef ES_COMET_CLUSTER
static es_cluster_t *g_cluster;
#endif

/* --- channels, origins, history ------------------------------------------ */

/* One node that publishes on a channel, as this process has seen it. */
struct origin {
    uint64_t head;     /* highest seq received */
    uint64_t lo;       /* this process holds every seq in [lo, head] */
    int64_t lost_time; /* no seq it lacks below lo was published later */
    unsigned held;     /* entries of it in the history */
    char name[NODE_MAX + 1];
};

struct entry {
    struct origin *origin;
    uint64_t seq;
    int64_t time_us; /* the origin's clock when published */
    uint32_t len;
    char *text;
};

/* A parsed cursor: the time of the first subscription and, per origin,
 * the last seq the client has. An origin it does not name counts from
 * `t`: its messages published after t are new to the client. */
struct cursor {
    int64_t t;
    bool fresh; /* made from an empty text: answered at once */
    unsigned n;
    struct cpos {
        uint64_t seq;
        char name[NODE_MAX + 1];
    } pos[MAX_ORIGINS];
};

struct sub;

struct channel {
    struct channel *next; /* hash bucket */
    struct entry *ring;   /* g_opt.history slots, `count` from `first` */
    unsigned first, count;
    struct origin *origins[MAX_ORIGINS];
    unsigned norigins;
    uint64_t own_seq;   /* last seq this node gave a publish here */
    int64_t own_time;   /* ... and its time (kept increasing) */
    int64_t ready_time; /* our topic subscription was live by then */
    struct sub *subs;   /* parked, doubly linked */
    char name[MAX_CHANNEL];
};

/* One /sub, parked in its channel until something new or its timer. */
struct sub {
    struct sub *next, *prev;
    struct channel *ch;
    es_http_response_t *res;
    es_timer_id_t timer;
    struct cursor *cur; /* NULL: plain /sub (first message as text) */
    char name[MAX_CHANNEL];
};

/* A /pub on its way to the hub. */
struct pub {
    es_http_response_t *res; /* deferred too: answered by the hub */
    char name[MAX_CHANNEL];
    uint32_t len;
    char text[];
};

/* On the topic: a publish (seq >= 1), or the probe (seq 0) a node sends
 * itself when it subscribes. Followed by channel, node and text bytes. */
struct wire {
    uint64_t seq;
    int64_t time_us;
    uint32_t text_len;
    uint8_t channel_len, node_len;
};

struct hub {
    struct channel *buckets[CHANNEL_BUCKETS];
    unsigned nchannels;
    uint64_t bad_wire, duplicates;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool channel_name_ok(const char *s, size_t n)
{
    if (n == 0 || n >= MAX_CHANNEL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static unsigned bucket_of(const char *name)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 16777619u;
    return h % CHANNEL_BUCKETS;
}

static struct channel *channel_find(struct hub *h, const char *name)
{
    struct channel *c = h->buckets[bucket_of(name)];
    while (c && strcmp(c->name, name) != 0)
        c = c->next;
    return c;
}

/* Makes channel `name`; with the cluster, subscribes the hub to its topic
 * and sends the probe that tells when that subscription is live. */
static struct channel *channel_make(es_actor_t *self, struct hub *h,
                                    const char *name)
{
    if (h->nchannels >= MAX_CHANNELS)
        return NULL;
    struct channel *c = calloc(1, sizeof(*c));
    if (!c || !(c->ring = calloc(g_opt.history, sizeof(*c->ring)))) {
        free(c);
        return NULL;
    }
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->ready_time = now_us();
#ifdef ES_COMET_CLUSTER
    if (g_cluster) {
        int rc = es_cluster_subscribe(g_cluster, name, es_actor_self(self));
        if (rc != 0 && rc != -EEXIST) {
            free(c->ring);
            free(c);
            return NULL;
        }
        c->ready_time = INT64_MAX; /* until the probe comes back */
        size_t cl = strlen(name), nl = strlen(g_opt.node);
        size_t len = sizeof(struct wire) + cl + nl;
        struct wire *w = calloc(1, len);
        if (w) {
            w->channel_len = (uint8_t)cl;
            w->node_len = (uint8_t)nl;
            memcpy(w + 1, name, cl);
            memcpy((char *)(w + 1) + cl, g_opt.node, nl);
            es_msg_t m = es_msg_ptr(MSG_WIRE, w, (uint32_t)len, NULL);
            es_cluster_publish(g_cluster, name, &m);
            free(w);
        }
    }
#else
    (void)self;
#endif
    unsigned b = bucket_of(name);
    c->next = h->buckets[b];
    h->buckets[b] = c;
    h->nchannels++;
    return c;
}

static struct origin *origin_find(struct channel *c, const char *name)
{
    for (unsigned i = 0; i < c->norigins; i++)
        if (strcmp(c->origins[i]->name, name) == 0)
            return c->origins[i];
    return NULL;
}

/* Drops the oldest entry; its origin now lacks everything up to it. */
static void evict_oldest(struct channel *c)
{
    struct entry *e = &c->ring[c->first];
    struct origin *o = e->origin;
    o->held--;
    if (o->lo <= e->seq)
        o->lo = e->seq + 1;
    if (o->lost_time < e->time_us)
        o->lost_time = e->time_us;
    free(e->text);
    c->first = (c->first + 1) % g_opt.history;
    c->count--;
}

/* A record for a node first heard at `seq`: what it published before was
 * published before our subscription was live (ready_time), or, while that
 * is not known yet, before now. */
static struct origin *origin_make(struct channel *c, const char *name,
                                  uint64_t seq)
{
    while (c->norigins == MAX_ORIGINS) {
        unsigned i = 0;
        while (i < c->norigins && c->origins[i]->held > 0)
            i++;
        if (i == c->norigins) { /* every origin has history: shorten it */
            evict_oldest(c);
            continue;
        }
        free(c->origins[i]);
        c->origins[i] = c->origins[--c->norigins];
    }
    struct origin *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    snprintf(o->name, sizeof(o->name), "%s", name);
    o->head = seq - 1;
    o->lo = seq;
    if (seq > 1) {
        int64_t now = now_us();
        o->lost_time = c->ready_time < now ? c->ready_time : now;
    }
    c->origins[c->norigins++] = o;
    return o;
}

/* --- cursors -------------------------------------------------------------- */

static const struct cpos *cursor_pos(const struct cursor *cur, const char *name)
{
    for (unsigned i = 0; i < cur->n; i++)
        if (strcmp(cur->pos[i].name, name) == 0)
            return &cur->pos[i];
    return NULL;
}

/* Is e something the holder of cur has not had? */
static bool entry_is_new(const struct cursor *cur, const struct entry *e)
{
    const struct cpos *p = cursor_pos(cur, e->origin->name);
    return p ? e->seq > p->seq : e->time_us > cur->t;
}

/* Did the holder of cur miss messages of o that this process no longer
 * (or never) held? */
static bool origin_lost(const struct cursor *cur, const struct origin *o)
{
    const struct cpos *p = cursor_pos(cur, o->name);
    return p ? p->seq + 1 < o->lo : o->lost_time > cur->t;
}

static int cursor_set(struct cursor *cur, const char *name, size_t n,
                      uint64_t seq)
{
    if (n == 0 || n > NODE_MAX)
        return -EINVAL;
    for (unsigned i = 0; i < cur->n; i++) {
        if (strlen(cur->pos[i].name) == n &&
            memcmp(cur->pos[i].name, name, n) == 0) {
            if (cur->pos[i].seq < seq)
                cur->pos[i].seq = seq;
            return 0;
        }
    }
    if (cur->n == MAX_ORIGINS)
        return -E2BIG;
    memcpy(cur->pos[cur->n].name, name, n);
    cur->pos[cur->n].name[n] = '\0';
    cur->pos[cur->n++].seq = seq;
    return 0;
}

/* Parses "t<us>,<node>:<seq>,..." (a bare "<seq>" names this node; an
 * empty text is "from now on"). Returns: 0; -EINVAL; -E2BIG. */
static int cursor_parse(const char *s, struct cursor *cur)
{
    memset(cur, 0, offsetof(struct cursor, pos));
    if (!*s) {
        cur->t = now_us();
        cur->fresh = true;
        return 0;
    }
    while (*s) {
        size_t n = strcspn(s, ",");
        const char *colon = memchr(s, ':', n);
        char *end;
        int rc = 0;
        if (s[0] == 't' && !colon) {
            if (!isdigit((unsigned char)s[1]))
                return -EINVAL;
            cur->t = strtoll(s + 1, &end, 10);
        } else {
            const char *num = colon ? colon + 1 : s;
            uint64_t seq = strtoull(num, &end, 10);
            if (end == num || !isdigit((unsigned char)*num))
                return -EINVAL;
            rc = colon ? cursor_set(cur, s, (size_t)(colon - s), seq)
                       : cursor_set(cur, g_opt.node, strlen(g_opt.node), seq);
        }
        if (rc)
            return rc;
        if (end != s + n)
            return -EINVAL;
        s += n + (s[n] == ',');
    }
    return 0;
}

/* --- JSON answers ------------------------------------------------------ */

struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_fmt(struct buf *b, const char *fmt, uint64_t a)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), fmt, a);
    buf_add(b, tmp, (size_t)n);
}

/* A JSON string of s[0..n) (bytes >= 0x80 pass as they are: UTF-8). */
static void buf_json(struct buf *b, const char *s, size_t n)
{
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            buf_add(b, esc, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            buf_add(b, esc, 6);
        } else {
            buf_add(b, s + i, 1);
        }
    }
    buf_add(b, "\"", 1);
}

/*
 * What a client holding cur gets from c now: {"cursor": the cursor after
 * these messages, "lost": whether it missed some this process cannot
 * give, "messages": [{"id", "text"}] in this process's arrival order}.
 * Returns: how many messages plus 1 if lost (0: nothing to answer yet);
 * -ENOMEM.
 */
static int answer(const struct channel *c, struct cursor *cur, struct buf *b)
{
    int n = 0;
    bool lost = false;
    buf_str(b, "{\"messages\":[");
    for (unsigned i = 0; i < c->count; i++) {
        const struct entry *e = &c->ring[(c->first + i) % g_opt.history];
        if (!entry_is_new(cur, e))
            continue;
        buf_str(b, n++ ? ",{\"id\":\"" : "{\"id\":\"");
        buf_str(b, e->origin->name);
        buf_fmt(b, ":%" PRIu64 "\",\"text\":", e->seq);
        buf_json(b, e->text, e->len);
        buf_add(b, "}", 1);
    }
    for (unsigned i = 0; i < c->norigins; i++)
        lost |= origin_lost(cur, c->origins[i]);
    /* The client now has (or was told it lost) all this process has. */
    for (unsigned i = 0; i < c->norigins; i++) {
        const struct origin *o = c->origins[i];
        if (o->head > 0)
            cursor_set(cur, o->name, strlen(o->name), o->head);
    }
    buf_str(b, lost ? "],\"lost\":true" : "],\"lost\":false");
    buf_fmt(b, ",\"cursor\":\"t%" PRIu64, (uint64_t)cur->t);
    for (unsigned i = 0; i < cur->n; i++) {
        buf_str(b, ",");
        buf_str(b, cur->pos[i].name);
        buf_fmt(b, ":%" PRIu64, cur->pos[i].seq);
    }
    buf_str(b, "\"}\n");
    return b->failed ? -ENOMEM : n + lost;
}

/* --- the hub ------------------------------------------------------------- */

static void sub_unlink(struct sub *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        s->ch->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

static void sub_finish(struct sub *s)
{
    es_http_response_end(s->res);
    free(s->cur);
    free(s);
}

/* Answers a cursor sub if it has something to get. Returns: whether it
 * was answered (and freed). */
static bool sub_try(struct sub *s, struct channel *c, bool force)
{
    struct buf b = {0};
    int n = answer(c, s->cur, &b);
    if (n == 0 && !force) {
        free(b.p);
        return false;
    }
    if (n < 0) {
        es_http_response_status(s->res, 503);
    } else {
        es_http_response_header(s->res, "Content-Type",
                                "application/json; charset=utf-8");
        es_http_response_header(s->res, "Cache-Control", "no-store");
        es_http_response_body(s->res, b.p, b.len);
    }
    free(b.p);
    sub_finish(s);
    return true;
}

/* Wakes the parked subs of c for which entry e is new. Returns: how many
 * got something. */
static int wake(es_actor_t *self, struct channel *c, const struct entry *e)
{
    int delivered = 0;
    for (struct sub *s = c->subs, *next; s; s = next) {
        next = s->next;
        if (s->cur && (s->cur->fresh || !entry_is_new(s->cur, e)))
            continue; /* fresh: waits for the probe (channel_ready) */
        sub_unlink(s);
        es_timer_stop(self, s->timer);
        if (s->cur) {
            delivered += sub_try(s, c, true);
            continue;
        }
        es_http_response_header(s->res, "Content-Type", "text/plain");
        es_http_response_body(s->res, e->text, e->len);
        delivered += es_http_response_end(s->res) == 0;
        free(s);
    }
    return delivered;
}

/* Appends one message of node `origin` to c's history, in arrival order.
 * Returns: how many parked subs got it; -EALREADY (a duplicate); -ENOMEM. */
static int append(es_actor_t *self, struct hub *h, struct channel *c,
                  const char *origin, uint64_t seq, int64_t time_us,
                  const char *text, uint32_t len)
{
    struct origin *o = origin_find(c, origin);
    if (!o && !(o = origin_make(c, origin, seq)))
        return -ENOMEM;
    if (seq <= o->head) {
        h->duplicates++;
        return -EALREADY;
    }
    struct entry e = {o, seq, time_us, len, malloc(len ? len : 1)};
    if (!e.text)
        return -ENOMEM;
    memcpy(e.text, text, len);
    if (seq > o->head + 1) { /* a gap: the cluster lost some of o's */
        int64_t now = now_us();
        o->lo = seq;
        if (o->lost_time < now)
            o->lost_time = now;
    }
    if (c->count == g_opt.history)
        evict_oldest(c);
    c->ring[(c->first + c->count++) % g_opt.history] = e;
    o->held++;
    o->head = seq;
    return wake(self, c, &e);
}

static void hub_sub(es_actor_t *self, struct hub *h, struct sub *s)
{
    struct channel *c = channel_find(h, s->name);
    if (!c && !(c = channel_make(self, h, s->name))) {
        es_http_response_status(s->res, 503);
        sub_finish(s);
        return;
    }
    s->ch = c;
    /* A fresh cursor answers at once, from here on its place in the
     * channel; but not before our topic subscription is live (the probe
     * came back), or it could miss what others publish until then. */
    if (s->cur && !(s->cur->fresh && c->ready_time == INT64_MAX) &&
        sub_try(s, c, s->cur->fresh))
        return;
    if (es_timer_start(self, g_opt.poll_timeout_ms, 0, (uintptr_t)s,
                       &s->timer) != 0) {
        es_http_response_status(s->res, 503);
        sub_finish(s);
        return;
    }
    s->prev = NULL;
    s->next = c->subs;
    if (c->subs)
        c->subs->prev = s;
    c->subs = s;
}

static void hub_pub(es_actor_t *self, struct hub *h, struct pub *pb)
{
    char answer_text[NODE_MAX + 32];
    struct channel *c = channel_find(h, pb->name);
    if (!c && !(c = channel_make(self, h, pb->name))) {
        es_http_response_status(pb->res, 503);
        return;
    }
    uint64_t seq = ++c->own_seq;
    int64_t t = now_us();
    c->own_time = t > c->own_time ? t : c->own_time + 1;
#ifdef ES_COMET_CLUSTER
    if (g_cluster) {
        size_t cl = strlen(c->name), nl = strlen(g_opt.node);
        size_t len = sizeof(struct wire) + cl + nl + pb->len;
        struct wire *w = calloc(1, len);
        int rc = -ENOMEM;
        if (w) {
            *w = (struct wire){seq, c->own_time, pb->len, (uint8_t)cl,
                               (uint8_t)nl};
            memcpy(w + 1, c->name, cl);
            memcpy((char *)(w + 1) + cl, g_opt.node, nl);
            memcpy((char *)(w + 1) + cl + nl, pb->text, pb->len);
            es_msg_t m = es_msg_ptr(MSG_WIRE, w, (uint32_t)len, NULL);
            rc = es_cluster_publish(g_cluster, c->name, &m);
            free(w);
        }
        if (rc != 0) {
            c->own_seq--; /* nobody got it: the number is free again */
            es_http_response_status(pb->res, 503);
            return;
        }
        snprintf(answer_text, sizeof(answer_text), "%s:%" PRIu64 "\n",
                 g_opt.node, seq);
        es_http_response_body(pb->res, answer_text, strlen(answer_text));
        return;
    }
#endif
    int n = append(self, h, c, g_opt.node, seq, c->own_time, pb->text, pb->len);
    if (n < 0) {
        es_http_response_status(pb->res, 503);
        return;
    }
    snprintf(answer_text, sizeof(answer_text), "%d\n", n);
    es_http_response_body(pb->res, answer_text, strlen(answer_text));
}

/* Our subscription to c's topic is live: every later publish reaches us.
 * The fresh cursors that waited for it start from now. */
static void channel_ready(es_actor_t *self, struct channel *c)
{
    c->ready_time = now_us();
    for (struct sub *s = c->subs, *next; s; s = next) {
        next = s->next;
        if (!s->cur || !s->cur->fresh)
            continue;
        sub_unlink(s);
        es_timer_stop(self, s->timer);
        s->cur->t = c->ready_time;
        sub_try(s, c, true);
    }
}

/* A message from the topic (any node, this one included). */
static void hub_wire(es_actor_t *self, struct hub *h, const es_msg_t *msg)
{
    const struct wire *w = msg->ptr;
    char name[MAX_CHANNEL], node[NODE_MAX + 1];
    if (!w || msg->len < sizeof(*w) ||
        msg->len != sizeof(*w) + w->channel_len + w->node_len + w->text_len ||
        !channel_name_ok((const char *)(w + 1), w->channel_len) ||
        w->node_len == 0 || w->node_len > NODE_MAX) {
        h->bad_wire++;
        return;
    }
    const char *p = (const char *)(w + 1);
    memcpy(name, p, w->channel_len);
    name[w->channel_len] = '\0';
    memcpy(node, p + w->channel_len, w->node_len);
    node[w->node_len] = '\0';
    struct channel *c = channel_find(h, name);
    if (!c)
        return;        /* not ours: a channel is made before its subscription */
    if (w->seq == 0) { /* a probe: ours says our subscription is live */
        if (strcmp(node, g_opt.node) == 0 && c->ready_time == INT64_MAX)
            channel_ready(self, c);
        return;
    }
    append(self, h, c, node, w->seq, w->time_us,
           p + w->channel_len + w->node_len, w->text_len);
}

static void hub_timer(struct hub *h, es_msg_t *msg)
{
    struct sub *s = (struct sub *)(uintptr_t)es_msg_timer_tag(msg);
    (void)h;
    sub_unlink(s);
    if (s->cur) {
        sub_try(s, s->ch, true); /* the cursor, no messages */
        return;
    }
    es_http_response_status(s->res, 204);
    sub_finish(s);
}

static void hub_free_all(struct hub *h)
{
    for (unsigned b = 0; b < CHANNEL_BUCKETS; b++) {
        while (h->buckets[b]) {
            struct channel *c = h->buckets[b];
            h->buckets[b] = c->next;
            while (c->subs) {
                struct sub *s = c->subs;
                sub_unlink(s);
                sub_finish(s);
            }
            while (c->count)
                evict_oldest(c);
            for (unsigned i = 0; i < c->norigins; i++)
                free(c->origins[i]);
            free(c->ring);
            free(c);
        }
    }
}

static int hub_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct hub *h = es_actor_state(self);
    switch (msg->type) {
    case MSG_SUB:
        hub_sub(self, h, es_msg_take(msg));
        break;
    case MSG_PUB: {
        struct pub *pb = es_msg_take(msg);
        hub_pub(self, h, pb);
        es_http_response_end(pb->res);
        free(pb);
        break;
    }
    case MSG_WIRE:
        hub_wire(self, h, msg);
        break;
    case ES_MSG_TIMER: /* a subscriber waited long enough */
        hub_timer(h, msg);
        break;
    case ES_MSG_STOP: /* the runtime stops: release what is parked */
        hub_free_all(h);
        break;
    }
    return 0;
}

/* --- HTTP handlers -------------------------------------------------------- */

/* free_cb of a MSG_SUB / MSG_PUB the hub never took (it had stopped): the
 * parked response must still be ended, or it would never be freed. */
static void sub_dropped(void *p)
{
    struct sub *s = p;
    es_http_response_end(s->res);
    free(s->cur);
    free(s);
}

static void pub_dropped(void *p)
{
    struct pub *pb = p;
    es_http_response_end(pb->res);
    free(pb);
}

static void refuse(es_http_response_t *res, int status, const char *why)
{
    es_http_response_status(res, status);
    es_http_response_header(res, "Content-Type", "text/plain");
    es_http_response_body(res, why, strlen(why));
}

/* Copies ?ch= into name. Returns: 0, or -EINVAL (missing or not a name). */
static int channel_of(const es_http_request_t *req, char name[MAX_CHANNEL])
{
    int n =
        es_http_query_get(es_http_request_query(req), "ch", name, MAX_CHANNEL);
    return n > 0 && channel_name_ok(name, (size_t)n) ? 0 : -EINVAL;
}

/* Parses ?after= into *out (NULL when absent). Returns: 0; -EINVAL;
 * -ENOMEM. */
static int cursor_of(const es_http_request_t *req, struct cursor **out)
{
    char text[MAX_CURSOR];
    int n = es_http_query_get(es_http_request_query(req), "after", text,
                              sizeof(text));
    *out = NULL;
    if (n == -ENOENT)
        return 0;
    if (n < 0)
        return -EINVAL;
    struct cursor *cur = malloc(sizeof(*cur));
    if (!cur)
        return -ENOMEM;
    if (cursor_parse(text, cur) != 0) {
        free(cur);
        return -EINVAL;
    }
    *out = cur;
    return 0;
}

static void on_sub(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    struct sub *s = calloc(1, sizeof(*s));
    (void)arg;
    if (!s) {
        refuse(res, 503, "out of memory\n");
        return;
    }
    if (channel_of(req, s->name) != 0 || cursor_of(req, &s->cur) != 0) {
        free(s);
        refuse(res, 400, "need ?ch=NAME ([A-Za-z0-9_-]) and a valid after=\n");
        return;
    }
    s->res = res;
    es_http_response_defer(res, NULL, NULL); /* the hub's end() frees it */
    es_msg_t m = es_msg_ptr(MSG_SUB, s, sizeof(*s), sub_dropped);
    if (es_send(es_http_request_runtime(req), g_hub, &m) != 0) {
        free(s->cur); /* the hub is gone or busy: answer now */
        free(s);
        es_http_response_status(res, 503);
        es_http_response_end(res);
    }
}

static void on_pub(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    size_t len;
    const char *text = es_http_request_body(req, &len);
    char name[MAX_CHANNEL];
    (void)arg;
    if (channel_of(req, name) != 0) {
        refuse(res, 400, "need ?ch=NAME ([A-Za-z0-9_-])\n");
        return;
    }
    if (len > MAX_TEXT) {
        refuse(res, 413, "a message is at most 64 KiB\n");
        return;
    }
    struct pub *pb = malloc(sizeof(*pb) + len);
    if (!pb) {
        refuse(res, 503, "out of memory\n");
        return;
    }
    memcpy(pb->name, name, sizeof(name));
    pb->res = res;
    pb->len = (uint32_t)len;
    memcpy(pb->text, text, len);
    es_http_response_defer(res, NULL, NULL);
    es_msg_t m = es_msg_ptr(MSG_PUB, pb, 0, pub_dropped);
    if (es_send(es_http_request_runtime(req), g_hub, &m) != 0) {
        free(pb);
        es_http_response_status(res, 503);
        es_http_response_end(res);
    }
}

/* --- the page ------------------------------------------------------------- */

/* Follows ?ch= (default "demo") from an empty cursor: the first answer
 * fixes its place, each later poll passes the cursor of the one before, so
 * whichever process a poll reaches, nothing is shown twice or skipped. */
static const char page_head[] =
    "<!doctype html>\n<html><head><meta charset=\"utf-8\">\n"
    "<title>EventServer comet</title>\n<style>\n"
    "body{font:16px system-ui,sans-serif;margin:2em auto;max-width:40em}\n"
    "#status{color:#666}#status.ok{color:#080}\n"
    "li{padding:.2em 0}li.lost{color:#b00;font-style:italic}\n"
    "input{font:inherit;width:70%}button{font:inherit}\n"
    "</style></head><body>\n<h1>EventServer comet</h1>\n"
    "<p>Channel <b id=\"channel\"></b> on node <b id=\"node\">";
static const char page_tail[] =
    "</b>: <span id=\"status\">connecting</span></p>\n"
    "<form id=\"pub\"><input id=\"text\" autocomplete=\"off\" "
    "placeholder=\"a message\"> <button>Publish</button></form>\n"
    "<ul id=\"messages\"></ul>\n<script>\n"
    "const ch = new URLSearchParams(location.search).get('ch') || 'demo';\n"
    "const list = document.getElementById('messages');\n"
    "const status = document.getElementById('status');\n"
    "document.getElementById('channel').textContent = ch;\n"
    "let cursor = '';\n"
    "function add(text, cls) {\n"
    "  const li = document.createElement('li');\n"
    "  li.textContent = text;\n"
    "  if (cls) li.className = cls;\n"
    "  list.appendChild(li);\n"
    "}\n"
    "async function poll() {\n"
    "  for (;;) {\n"
    "    try {\n"
    "      const r = await fetch('/sub?ch=' + encodeURIComponent(ch) +\n"
    "        '&after=' + encodeURIComponent(cursor), {cache: 'no-store'});\n"
    "      if (!r.ok) throw new Error('HTTP ' + r.status);\n"
    "      const j = await r.json();\n"
    "      if (j.lost) add('(missed some messages: fell behind the "
    "history)', 'lost');\n"
    "      for (const m of j.messages) add(m.text);\n"
    "      cursor = j.cursor;\n"
    "      status.textContent = 'connected';\n"
    "      status.className = 'ok';\n"
    "    } catch (e) {\n"
    "      status.textContent = 'reconnecting (' + e.message + ')';\n"
    "      status.className = '';\n"
    "      await new Promise(done => setTimeout(done, 1000));\n"
    "    }\n"
    "  }\n"
    "}\n"
    "document.getElementById('pub').addEventListener('submit', async ev => {\n"
    "  ev.preventDefault();\n"
    "  const text = document.getElementById('text');\n"
    "  await fetch('/pub?ch=' + encodeURIComponent(ch),\n"
    "              {method: 'POST', body: text.value});\n"
    "  text.value = '';\n"
    "});\n"
    "poll();\n"
    "</script></body></html>\n";

static char *g_page; /* page_head, node name, page_tail */

static void on_page(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    (void)arg;
    es_http_response_header(res, "Content-Type", "text/html; charset=utf-8");
    es_http_response_body(res, g_page, strlen(g_page));
}

/* --- main ----------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: http_comet [--listen ADDR] [--threads N] "
               "[--reuseport] [--nats URL] [--node NAME] [--history N] "
               "[--poll-timeout MS] [PORT]\n");
}

static int parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"reuseport", no_argument, NULL, 'r'},
        {"nats", required_argument, NULL, 'n'},
        {"node", required_argument, NULL, 'N'},
        {"history", required_argument, NULL, 'H'},
        {"poll-timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static char port_address[32];
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            g_opt.listen = optarg;
            break;
        case 't':
            g_opt.threads = (unsigned)atoi(optarg);
            break;
        case 'r':
            g_opt.reuseport = 1;
            break;
        case 'n':
            g_opt.nats = optarg;
            break;
        case 'N':
            snprintf(g_opt.node, sizeof(g_opt.node), "%s", optarg);
            break;
        case 'H':
            g_opt.history = (unsigned)atoi(optarg);
            break;
        case 'T':
            g_opt.poll_timeout_ms = (unsigned)atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -EINVAL;
        }
    }
    if (optind < argc) { /* the old form: http_comet PORT */
        snprintf(port_address, sizeof(port_address), "127.0.0.1:%s",
                 argv[optind]);
        g_opt.listen = port_address;
    }
    if (!g_opt.node[0]) /* unique per process start: seqs restart at 1 */
        snprintf(g_opt.node, sizeof(g_opt.node), "comet-%d-%" PRIx64,
                 (int)getpid(), (uint64_t)now_us() & 0xffffff);
    for (const char *p = g_opt.node; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return -EINVAL;
    if (g_opt.threads == 0 || g_opt.history == 0 || g_opt.history > 1000000 ||
        g_opt.poll_timeout_ms == 0)
        return -EINVAL;
    return 0;
}

static int join_cluster(es_runtime_t *rt)
{
    if (!g_opt.nats)
        return 0;
#ifdef ES_COMET_CLUSTER
    const char *servers[] = {g_opt.nats};
    es_cluster_opts_t o = {.servers = servers,
                           .servers_count = 1,
                           .cluster = CLUSTER_NAME,
                           .node = g_opt.node};
    return es_cluster_join(rt, &o, &g_cluster);
#else
    (void)rt;
    fprintf(stderr, "http_comet: built without the cluster module\n");
    return -ENOTSUP;
#endif
}

static int make_page(void)
{
    size_t n = sizeof(page_head) + strlen(g_opt.node) + sizeof(page_tail);
    if (!(g_page = malloc(n)))
        return -ENOMEM;
    snprintf(g_page, n, "%s%s%s", page_head, g_opt.node, page_tail);
    return 0;
}

int main(int argc, char **argv)
{
    static struct hub hub;
    es_runtime_t *rt = NULL;
    es_http_server_t *srv = NULL;
    bool started = false;
    int rc;

    if (parse_args(argc, argv) != 0) {
        usage(stderr);
        return 2;
    }
    if ((rc = make_page()) != 0 ||
        (rc = es_runtime_new(&(es_runtime_opts_t){.threads = g_opt.threads},
                             &rt)) != 0 ||
        (rc = es_spawn(
             rt, &(es_spawn_opts_t){.behaviour = hub_behaviour, .state = &hub},
             &g_hub)) != 0 ||
        (rc = es_runtime_stop_on_signal(rt, SIGINT)) != 0 ||
        (rc = es_runtime_stop_on_signal(rt, SIGTERM)) != 0 ||
        (rc = join_cluster(rt)) != 0) /* its threads inherit the mask */
        goto fail;
    es_http_server_opts_t so = {.reuseport = g_opt.reuseport,
                                .max_body = MAX_TEXT + 1};
    if ((rc = es_http_server_new(rt, &so, &srv)) != 0)
        goto fail;
    es_http_server_route(srv, "GET", "/", on_page, NULL);
    es_http_server_route(srv, "GET", "/sub", on_sub, NULL);
    es_http_server_route(srv, "POST", "/pub", on_pub, NULL);
    if ((rc = es_http_server_listen(srv, g_opt.listen)) != 0 ||
        (rc = es_runtime_start(rt)) != 0)
        goto fail;
    started = true;
    if ((rc = es_http_server_start(srv)) != 0)
        goto fail;
    printf("http_comet: listening on %s as node %s (port %d)%s\n", g_opt.listen,
           g_opt.node, es_http_server_port(srv, 0),
           g_opt.nats ? ", cluster on" : "");
    fflush(stdout);
    es_runtime_wait(rt);
#ifdef ES_COMET_CLUSTER
    if (g_cluster)
        es_cluster_leave(g_cluster);
#endif
    es_http_server_free(srv);
    es_runtime_free(rt);
    free(g_page);
    return 0;
fail:
    fprintf(stderr, "http_comet: %s\n", es_strerror(rc));
#ifdef ES_COMET_CLUSTER
    if (g_cluster)
        es_cluster_leave(g_cluster);
#endif
    if (started) {
        es_runtime_stop(rt);
        es_runtime_wait(rt);
    }
    es_http_server_free(srv);
    es_runtime_free(rt);
    free(g_page);
    return 1;
}
