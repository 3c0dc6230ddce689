/* SPDX-License-Identifier: MIT */
/*
 * The comet hub: the one actor that owns every channel of this process,
 * its history (the last --history messages, ids (origin node, seq)), the
 * origins it has heard from and the parked /sub responses; it answers
 * cursors, and with --nats publishes to and receives from the channel's
 * cluster topic. Why the cursors give each client every message once:
 * the README's comet section. A parked plain /sub costs it 16 bytes in
 * its channel's queue (no allocation, no timer of its own), and a publish
 * reaches them in batches paced by what their connections have written
 * (the fan-out credit), so that neither parking nor a fan-out leaves
 * per-subscriber memory behind.
 */
#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comet.h"

#define MAX_CHANNELS 4096
#define CHANNEL_BUCKETS 1024

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
    char *text; /* the bytes of a struct text */
};

/* A message's bytes, shared by its history entry and the plain /sub
 * responses that send it (es_http_response_body_ref(), on any demux
 * thread): one copy per message instead of one per subscriber. */
struct text {
    atomic_uint refs;
    char bytes[];
};

static char *text_new(const char *p, uint32_t len)
{
    struct text *t = malloc(sizeof(*t) + (len ? len : 1));
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    memcpy(t->bytes, p, len);
    return t->bytes;
}

static char *text_ref(char *bytes)
{
    struct text *t = (void *)(bytes - offsetof(struct text, bytes));
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return bytes;
}

/* es_msg_free_cb of a response's body, and the history's release. */
static void text_unref(void *bytes)
{
    struct text *t = (void *)((char *)bytes - offsetof(struct text, bytes));
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        free(t);
}

/*
 * Fan-out credit. A plain /sub's response ended by the hub goes out when
 * its connection's thread handles the message end() sent it; until then
 * it holds its fields and a slot of that thread's inbound ring (or of the
 * overflow queue the runtime grows and keeps past the ring's 4,096). So
 * the hub has at most FANOUT_CREDIT of them in flight: `inflight` counts
 * them, sent() (the body's free_cb, on the connection's thread once it is
 * written, or inside end() if the client had left) gives credit back, and
 * the hub, out of credit, waits for a MSG_FANOUT from the sent() that
 * brings `inflight` down to half. Lost wakeups are excluded as in the
 * HTTP module's body budget: the hub stores `waiting`, then reads
 * `inflight`; sent() decrements `inflight`, then reads `waiting` (all
 * seq_cst, so one of the two sees the other), and whoever swaps `waiting`
 * back to false goes on. A wakeup that cannot be sent is covered by the
 * hub's safety timer (FANOUT_WAIT_MS).
 */
#define FANOUT_CREDIT 512
#define FANOUT_WAIT_MS 20
#define TAG_CREDIT                                                             \
    2 /* timer tag: not a sub (a pointer), not a channel (odd)                 \
       */

static struct {
    atomic_uint inflight;
    atomic_bool waiting;
    es_runtime_t *rt;
} g_credit;

static void credit_wake(void)
{
    if (atomic_exchange(&g_credit.waiting, false)) {
        es_msg_t m = es_msg_make(MSG_FANOUT);
        if (es_send(g_credit.rt, g_hub, &m) != 0)
            atomic_store(&g_credit.waiting, true); /* the timer goes on */
    }
}

/* free_cb of a plain /sub's body: the text's reference and the credit. */
static void sent(void *bytes)
{
    text_unref(bytes);
    if (atomic_fetch_sub(&g_credit.inflight, 1) - 1 <= FANOUT_CREDIT / 2 &&
        atomic_load(&g_credit.waiting))
        credit_wake();
}

/* Out of credit? Then the hub waits (true) for a MSG_FANOUT. */
static bool credit_wait(void)
{
    if (atomic_load(&g_credit.inflight) < FANOUT_CREDIT)
        return false;
    atomic_store(&g_credit.waiting, true);
    if (atomic_load(&g_credit.inflight) > FANOUT_CREDIT / 2)
        return true;
    /* Credit came back meanwhile: go on, unless a sent() saw `waiting`
     * first and its MSG_FANOUT is on the way. */
    return !atomic_exchange(&g_credit.waiting, false);
}

/* A parked plain /sub: its response and when it times out. */
struct waiter {
    es_http_response_t *res;
    uint64_t due_ms; /* monotonic */
};

/* Waiters per block of a channel's queue: a block is 4 KiB with its link
 * and malloc's header. */
#define WBLOCK 255

struct wblock {
    struct wblock *next;
    struct waiter w[WBLOCK];
};

/*
 * A channel's parked plain /sub, in arrival order, which is also the order
 * of their deadlines (one --poll-timeout for all): a FIFO of blocks (so a
 * waiter costs its 16 bytes and no copy as the queue grows; a block is
 * freed once emptied), and one timer for the channel, armed for the first
 * deadline. A publish answers the first `fan_left` of them (all that were
 * parked when it came) FANOUT_BATCH per turn; later /sub queue behind and
 * wait for the next message. Nothing else touches the channel while a
 * fan-out is under way: what would (a publish, the timer, the stop) first
 * completes it.
 */
struct plainq {
    struct wblock *head, *tail;
    unsigned hpos, tpos; /* next to pop in head, to fill in tail */
    unsigned count;
    unsigned fan_left;           /* waiters still to get `fan` */
    const struct entry *fan;     /* the message being fanned out */
    es_http_response_t *fan_pub; /* the /pub answered at the end */
    int fan_got;                 /* subscribers that got it so far */
    bool fanning;                /* in the hub's list of fan-outs */
    bool timer_on;
    es_timer_id_t timer;
};

struct channel {
    struct channel *next; /* hash bucket */
    struct entry *ring;   /* g_opt.history slots, `count` from `first` */
    unsigned first, count;
    struct origin *origins[MAX_ORIGINS];
    unsigned norigins;
    uint64_t own_seq;   /* last seq this node gave a publish here */
    int64_t own_time;   /* ... and its time (kept increasing) */
    int64_t ready_time; /* our topic subscription was live by then */
    struct sub *subs;   /* parked cursor subs, doubly linked */
    struct plainq plain;
    struct channel *fan_next; /* the hub's list of fan-outs under way */
    char name[MAX_CHANNEL];
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
    struct channel *fanning; /* channels with a fan-out under way */
    bool fan_queued;         /* a MSG_FANOUT to ourselves is on its way */
    bool fan_timer;          /* the credit's safety timer runs */
    bool retry_timer;        /* g_retry's timer runs */
    unsigned nchannels;
    uint64_t bad_wire, duplicates;
};

/* Responses whose end() answered -EAGAIN (the connection's mailbox was
 * full; the response is kept, not released): ended again on a timer, so
 * a full mailbox delays an answer and never loses it or its connection.
 * The hub's thread only. */
static struct {
    es_http_response_t **v;
    size_t n, cap;
} g_retry;

#define TAG_RETRY 4 /* timer tag: even, not a pointer */
#define RETRY_MS 2

/* es_http_response_end(), keeping the response for later on -EAGAIN.
 * Returns end()'s code, 0 for a response kept to retry. */
static int end_or_keep(es_http_response_t *res)
{
    int rc = es_http_response_end(res);
    if (rc != -EAGAIN)
        return rc;
    if (g_retry.n == g_retry.cap) {
        size_t cap = g_retry.cap ? g_retry.cap * 2 : 64;
        es_http_response_t **v = realloc(g_retry.v, cap * sizeof(*v));
        if (!v) {
            /* No memory to keep it: wait for room here instead. */
            while ((rc = es_http_response_end(res)) == -EAGAIN)
                sched_yield();
            return rc;
        }
        g_retry.v = v;
        g_retry.cap = cap;
    }
    g_retry.v[g_retry.n++] = res;
    return 0;
}

/* Ends the kept responses again; those still refused stay. */
static void retry_ends(void)
{
    size_t kept = 0;
    for (size_t i = 0; i < g_retry.n; i++)
        if (es_http_response_end(g_retry.v[i]) == -EAGAIN)
            g_retry.v[kept++] = g_retry.v[i];
    g_retry.n = kept;
}

int64_t comet_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool comet_channel_name_ok(const char *s, size_t n)
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
    c->ready_time = comet_now_us();
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
    text_unref(e->text);
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
        int64_t now = comet_now_us();
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
int comet_cursor_parse(const char *s, struct cursor *cur)
{
    memset(cur, 0, offsetof(struct cursor, pos));
    if (!*s) {
        cur->t = comet_now_us();
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
    (void)end_or_keep(s->res);
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

/* --- plain /sub: the channel's queue ----------------------------------------
 */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Queues a plain /sub. Returns: 0; -ENOMEM. */
static int plain_push(struct plainq *q, es_http_response_t *res)
{
    if (!q->tail || q->tpos == WBLOCK) {
        struct wblock *b = malloc(sizeof(*b));
        if (!b)
            return -ENOMEM;
        b->next = NULL;
        if (q->tail)
            q->tail->next = b;
        else
            q->head = b;
        q->tail = b;
        q->tpos = 0;
    }
    q->tail->w[q->tpos++] =
        (struct waiter){res, now_ms() + g_opt.poll_timeout_ms};
    q->count++;
    return 0;
}

/* Forgets the waiter just queued. */
static void plain_unpush(struct plainq *q)
{
    q->tpos--;
    q->count--;
}

static const struct waiter *plain_first(const struct plainq *q)
{
    return &q->head->w[q->hpos];
}

static es_http_response_t *plain_pop(struct plainq *q)
{
    es_http_response_t *res = q->head->w[q->hpos++].res;
    if (--q->count == 0) {
        /* Empty: the head block is reused (a block after it can only be
         * one that plain_unpush() left empty). */
        while (q->head->next) {
            struct wblock *b = q->head->next;
            q->head->next = b->next;
            free(b);
        }
        q->tail = q->head;
        q->hpos = q->tpos = 0;
    } else if (q->hpos == WBLOCK) {
        struct wblock *b = q->head;
        q->head = b->next;
        q->hpos = 0;
        free(b);
    }
    return res;
}

/* Arms c's timer for its first deadline unless it is armed (a timer that
 * fires early finds nothing due and arms again). Returns: whether armed. */
static bool plain_arm(es_actor_t *self, struct channel *c)
{
    struct plainq *q = &c->plain;
    if (q->timer_on || q->count == 0)
        return true;
    uint64_t now = now_ms(), due = plain_first(q)->due_ms;
    if (es_timer_start(self, due > now ? due - now : 0, 0, (uintptr_t)c | 1,
                       &q->timer) == 0)
        q->timer_on = true;
    return q->timer_on;
}

/* Answers a /pub with how many subscribers got its message. */
static void pub_answer(es_http_response_t *res, int got)
{
    char text[16];
    snprintf(text, sizeof(text), "%d\n", got);
    es_http_response_body(res, text, strlen(text));
    (void)end_or_keep(res);
}

/* Answers up to `budget` of the waiters the fan-out under way still owes
 * its message; the last one ends it (and answers its /pub). */
static void fan_step(struct channel *c, unsigned budget)
{
    struct plainq *q = &c->plain;
    for (; q->fan_left && budget; budget--) {
        es_http_response_t *res = plain_pop(q);
        q->fan_left--;
        es_http_response_header(res, "Content-Type", "text/plain");
        char *text = text_ref(q->fan->text);
        atomic_fetch_add(&g_credit.inflight, 1);
        if (es_http_response_body_ref(res, text, q->fan->len, sent))
            sent(text);
        q->fan_got += end_or_keep(res) == 0;
    }
    if (q->fan_left || !q->fan)
        return;
    if (q->fan_pub)
        pub_answer(q->fan_pub, q->fan_got);
    q->fan_pub = NULL;
    q->fan = NULL;
}

static void fan_unlist(struct hub *h, struct channel *c)
{
    struct channel **pp = &h->fanning;
    while (*pp != c)
        pp = &(*pp)->fan_next;
    *pp = c->fan_next;
    c->plain.fanning = false;
}

/* Completes the fan-out under way in c, if any, before what would change
 * what it owes (a new message, a timeout, the stop): credit or not. */
static void fan_finish(struct hub *h, struct channel *c)
{
    fan_step(c, UINT_MAX);
    if (c->plain.fanning)
        fan_unlist(h, c);
}

/*
 * Goes on with the fan-outs under way, a batch at a time while there is
 * credit; then comes back after the other actors' turn (MSG_FANOUT to
 * ourselves), or when credit comes back.
 */
static void fan_drive(es_actor_t *self, struct hub *h, bool force)
{
    while (h->fanning) {
        if (!force && credit_wait()) {
            if (!h->fan_timer) {
                es_timer_id_t id;
                h->fan_timer = es_timer_start(self, FANOUT_WAIT_MS, 0,
                                              TAG_CREDIT, &id) == 0;
            }
            return;
        }
        struct channel *c = h->fanning;
        force = false;
        fan_step(c, FANOUT_BATCH);
        if (c->plain.fan_left) {
            h->fanning = c->fan_next; /* round robin over the channels */
            c->fan_next = NULL;
            struct channel **pp = &h->fanning;
            while (*pp)
                pp = &(*pp)->fan_next;
            *pp = c;
        } else {
            fan_unlist(h, c);
            plain_arm(self, c);
        }
        if (!h->fanning || h->fan_queued)
            return;
        es_msg_t m = es_msg_make(MSG_FANOUT);
        if (es_send(es_actor_runtime(self), es_actor_self(self), &m) == 0) {
            h->fan_queued = true;
            return;
        }
        /* No way back: on with it now (the credit still paces it). */
    }
}

/* Starts c's fan-out (fan_* set). */
static void fan_start(es_actor_t *self, struct hub *h, struct channel *c)
{
    if (!c->plain.fan_left) {
        fan_step(c, 0); /* nobody waits: answers the /pub */
        return;
    }
    c->plain.fanning = true;
    c->fan_next = h->fanning;
    h->fanning = c;
    fan_drive(self, h, false);
}

/* c's timer: answers 204 to the plain /sub whose time is up. */
static void plain_timer(es_actor_t *self, struct hub *h, struct channel *c,
                        es_timer_id_t id)
{
    struct plainq *q = &c->plain;
    if (!q->timer_on || id != q->timer)
        return;
    q->timer_on = false;
    fan_finish(h, c);
    uint64_t now = now_ms();
    while (q->count && plain_first(q)->due_ms <= now) {
        es_http_response_t *res = plain_pop(q);
        es_http_response_status(res, 204);
        (void)end_or_keep(res);
    }
    plain_arm(self, c);
}

/* Wakes the parked subs of c for which entry e (in c's history) is new: the
 * cursor subs now, the plain ones in batches; `pub` (or NULL) is answered
 * how many got it once all have. */
static void wake(es_actor_t *self, struct hub *h, struct channel *c,
                 const struct entry *e, es_http_response_t *pub)
{
    int delivered = 0;
    for (struct sub *s = c->subs, *next; s; s = next) {
        next = s->next;
        if (s->cur->fresh || !entry_is_new(s->cur, e))
            continue; /* fresh: waits for the probe (channel_ready) */
        sub_unlink(s);
        es_timer_stop(self, s->timer);
        delivered += sub_try(s, c, true);
    }
    struct plainq *q = &c->plain;
    q->fan = e;
    q->fan_left = q->count;
    q->fan_got = delivered;
    q->fan_pub = pub;
    fan_start(self, h, c);
}

/* Appends one message of node `origin` to c's history, in arrival order,
 * and wakes the subs it is new to; `pub` (or NULL) is answered how many
 * got it. Returns: 0 (pub taken); -EALREADY (a duplicate); -ENOMEM. */
static int append(es_actor_t *self, struct hub *h, struct channel *c,
                  const char *origin, uint64_t seq, int64_t time_us,
                  const char *text, uint32_t len, es_http_response_t *pub)
{
    fan_finish(h, c); /* the last message's fan-out, before any eviction */
    struct origin *o = origin_find(c, origin);
    if (!o && !(o = origin_make(c, origin, seq)))
        return -ENOMEM;
    if (seq <= o->head) {
        h->duplicates++;
        return -EALREADY;
    }
    struct entry e = {o, seq, time_us, len, text_new(text, len)};
    if (!e.text)
        return -ENOMEM;
    if (seq > o->head + 1) { /* a gap: the cluster lost some of o's */
        int64_t now = comet_now_us();
        o->lo = seq;
        if (o->lost_time < now)
            o->lost_time = now;
    }
    if (c->count == g_opt.history)
        evict_oldest(c);
    struct entry *slot = &c->ring[(c->first + c->count++) % g_opt.history];
    *slot = e;
    o->held++;
    o->head = seq;
    wake(self, h, c, slot, pub);
    return 0;
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
    if (!(s->cur->fresh && c->ready_time == INT64_MAX) &&
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

/* A plain /sub: queued in its channel (named by its request's ?ch=). */
static void hub_plain(es_actor_t *self, struct hub *h, es_http_response_t *res)
{
    char name[MAX_CHANNEL];
    const es_http_request_t *req = es_http_response_request(res);
    int n =
        es_http_query_get(es_http_request_query(req), "ch", name, sizeof(name));
    struct channel *c = NULL;
    if (n > 0 && comet_channel_name_ok(name, (size_t)n) &&
        ((c = channel_find(h, name)) || (c = channel_make(self, h, name))) &&
        plain_push(&c->plain, res) == 0) {
        if (plain_arm(self, c))
            return;
        plain_unpush(&c->plain); /* no timer: it would never time out */
    }
    es_http_response_status(res, 503);
    (void)end_or_keep(res);
}

/* Ends a /pub's response with status (or 200 and text). */
static void pub_done(es_http_response_t *res, int status, const char *text)
{
    es_http_response_status(res, status);
    if (text)
        es_http_response_body(res, text, strlen(text));
    (void)end_or_keep(res);
}

/* A /pub: answered here, or by the fan-out of its message (append()). */
static void hub_pub(es_actor_t *self, struct hub *h, struct pub *pb)
{
    struct channel *c = channel_find(h, pb->name);
    if (!c && !(c = channel_make(self, h, pb->name))) {
        pub_done(pb->res, 503, NULL);
        return;
    }
    uint64_t seq = ++c->own_seq;
    int64_t t = comet_now_us();
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
            pub_done(pb->res, 503, NULL);
            return;
        }
        char id[NODE_MAX + 32];
        snprintf(id, sizeof(id), "%s:%" PRIu64 "\n", g_opt.node, seq);
        pub_done(pb->res, 200, id);
        return;
    }
#endif
    if (append(self, h, c, g_opt.node, seq, c->own_time, pb->text, pb->len,
               pb->res) < 0)
        pub_done(pb->res, 503, NULL);
}

/* Our subscription to c's topic is live: every later publish reaches us.
 * The fresh cursors that waited for it start from now. */
static void channel_ready(es_actor_t *self, struct channel *c)
{
    c->ready_time = comet_now_us();
    for (struct sub *s = c->subs, *next; s; s = next) {
        next = s->next;
        if (!s->cur->fresh)
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
        !comet_channel_name_ok((const char *)(w + 1), w->channel_len) ||
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
           p + w->channel_len + w->node_len, w->text_len, NULL);
}

/* A timer: a channel's (tag: the channel | 1), or a cursor sub's (tag:
 * the sub). */
static void hub_timer(es_actor_t *self, struct hub *h, es_msg_t *msg)
{
    uintptr_t tag = (uintptr_t)es_msg_timer_tag(msg);
    if (tag == TAG_CREDIT) {
        /* Still waiting: a wakeup could not be sent, or credit was lost
         * (an end() that failed with -EAGAIN keeps its response): one
         * batch whatever the credit, so a fan-out always ends. */
        h->fan_timer = false;
        if (atomic_exchange(&g_credit.waiting, false))
            fan_drive(self, h, true);
        return;
    }
    if (tag & 1) {
        plain_timer(self, h, (struct channel *)(tag & ~(uintptr_t)1),
                    es_msg_timer_id(msg));
        return;
    }
    struct sub *s = (struct sub *)tag;
    sub_unlink(s);
    sub_try(s, s->ch, true); /* the cursor, no messages */
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
            fan_finish(h, c);
            while (c->plain.count)
                (void)end_or_keep(plain_pop(&c->plain));
            free(c->plain.head);
            while (c->count)
                evict_oldest(c);
            for (unsigned i = 0; i < c->norigins; i++)
                free(c->origins[i]);
            free(c->ring);
            free(c);
        }
    }
}

static void hub_handle(es_actor_t *self, struct hub *h, es_msg_t *msg)
{
    switch (msg->type) {
    case MSG_SUB:
        hub_sub(self, h, es_msg_take(msg));
        break;
    case MSG_PLAIN:
        hub_plain(self, h, es_msg_take(msg));
        break;
    case MSG_PUB: {
        struct pub *pb = es_msg_take(msg);
        hub_pub(self, h, pb);
        free(pb);
        break;
    }
    case MSG_FANOUT: /* our own, or credit came back */
        h->fan_queued = false;
        fan_drive(self, h, false);
        break;
    case MSG_WIRE:
        hub_wire(self, h, msg);
        break;
    case ES_MSG_TIMER: /* a subscriber waited long enough */
        hub_timer(self, h, msg);
        break;
    case ES_MSG_STOP: /* the runtime stops: release what is parked */
        hub_free_all(h);
        break;
    }
}

static int hub_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct hub *h = es_actor_state(self);
    if (g_retry.n)
        retry_ends();
    if (msg->type == ES_MSG_TIMER && es_msg_timer_tag(msg) == TAG_RETRY)
        h->retry_timer = false;
    else
        hub_handle(self, h, msg);
    if (msg->type == ES_MSG_STOP) {
        retry_ends(); /* a last try; what is still refused goes with the runtime
                       */
        free(g_retry.v);
        g_retry.v = NULL;
        g_retry.n = g_retry.cap = 0;
    } else if (g_retry.n && !h->retry_timer &&
               es_timer_start(self, RETRY_MS, 0, TAG_RETRY, NULL) == 0) {
        h->retry_timer = true;
    }
    return 0;
}

int comet_hub_spawn(es_runtime_t *rt, es_actor_id_t *out)
{
    static struct hub hub;
    g_credit.rt = rt;
    return es_spawn(
        rt, &(es_spawn_opts_t){.behaviour = hub_behaviour, .state = &hub}, out);
}
