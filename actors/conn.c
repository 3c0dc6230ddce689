/* SPDX-License-Identifier: MIT */
/*
 * The connection actor: owns one connected socket and turns its readiness
 * into ES_MSG_CONN_* messages for the user's behaviour, which it wraps.
 *
 * The user's calls (es_conn_write, es_conn_close, ...) only queue data or
 * set flags; what they imply (closing, telling the user about a watermark,
 * changing the epoll interest) happens in settle(), after the user's
 * behaviour has returned. So the user's behaviour is never re-entered and
 * ES_MSG_CONN_CLOSED is delivered exactly once, from one place.
 *
 * Memory: an idle connection holds its actor, this state and an fd-table
 * entry; reads go into the loop's shared scratch buffer and are handed to
 * the behaviour in place. Writes that cannot go out at once are queued
 * (small ones coalesced); reading stops while the queue is above
 * write_high, or the actor's mailbox is over half full, and resumes below
 * write_low / a quarter. It also stops while the actor is muted (it sent
 * to a full mailbox, see src/actor.c) and resumes when it is unmuted.
 */
#include "conn_private.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUDGET 4   /* reads per readiness event, for fairness */
#define IOV_BATCH 64    /* segments per sendmsg() */
#define SEG_MIN 4096u   /* smallest copied segment, for coalescing */
#define SETTLE_ROUNDS 4 /* watermark calls that may chain in settle() */

/* A queued write: a copy (data[] follows) or a caller's buffer. */
struct es__wseg {
    struct es__wseg *next;
    char *ptr;
    size_t len, off, cap; /* cap: room in data[] for copies, 0 for refs */
    es_msg_free_cb free_cb;
    char data[];
};

const char *es_conn_reason_str(int reason)
{
    static const char *const names[] = {
        [ES_CONN_PEER_CLOSED] = "peer closed",
        [ES_CONN_RESET] = "connection reset",
        [ES_CONN_ERROR] = "socket error",
        [ES_CONN_LOCAL] = "closed locally",
        [ES_CONN_TIMEOUT] = "idle timeout",
        [ES_CONN_REFUSED] = "connection refused",
        [ES_CONN_UNREACHABLE] = "unreachable",
        [ES_CONN_CONNECT_TIMEOUT] = "connect timeout",
        [ES_CONN_RESOLVE_FAILED] = "name not resolved",
        [ES_CONN_STOPPED] = "actor stopped",
    };
    if (reason <= 0 || reason > ES_CONN_STOPPED)
        return "unknown reason";
    return names[reason];
}

/* conn.h's "Thread: owning loop only", checked in debug builds. */
#define OWNING_LOOP_ONLY(self)                                                 \
    ES_ASSERT(!(self) || es__loop_owned((self)->loop))

static struct es__conn *conn_of(const es_actor_t *self)
{
    if (!self || self->ext_free != es__conn_free)
        return NULL;
    return self->ext;
}

static uint32_t clamp32(size_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

struct es__conn_cfg *es__conn_cfg_new(const es_conn_opts_t *opts)
{
    if (!opts || !opts->behaviour)
        return NULL;
    struct es__conn_cfg *cfg = es__calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    atomic_init(&cfg->refs, 1);
    cfg->user = opts->behaviour;
    cfg->state_new = opts->state_new;
    cfg->state_free = opts->state_free;
    cfg->arg = opts->arg;
    cfg->write_high = clamp32(opts->write_high ? opts->write_high
                                               : ES_CONN_WRITE_HIGH_DEFAULT);
    cfg->write_low = clamp32(opts->write_low);
    if (!cfg->write_low || cfg->write_low > cfg->write_high)
        cfg->write_low = cfg->write_high / 4;
    cfg->idle_timeout_ms = opts->idle_timeout_ms;
    cfg->mailbox_capacity = opts->mailbox_capacity;
    cfg->no_delay = opts->no_delay >= 0;
    return cfg;
}

void es__conn_cfg_unref(struct es__conn_cfg *cfg)
{
    if (cfg &&
        atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        es__free(cfg);
}

struct es__conn *es__conn_new(struct es__conn_cfg *cfg, int fd, bool is_tcp)
{
    if (!cfg)
        return NULL;
    struct es__conn *c = es__calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    c->cfg = cfg;
    c->fd = fd;
    c->is_tcp = is_tcp;
    c->idle_timeout_ms = cfg->idle_timeout_ms;
    c->no_delay = cfg->no_delay;
    return c;
}

static void queue_drop(struct es__conn *c)
{
    while (c->head) {
        struct es__wseg *s = c->head;
        c->head = s->next;
        if (s->free_cb)
            s->free_cb(s->ptr);
        es__free(s);
    }
    c->tail = NULL;
    c->queued = 0;
}

void es__conn_free(void *arg)
{
    struct es__conn *c = arg;
    es__deadline_clear(&c->idle);
    queue_drop(c);
    if (c->fd >= 0)
        close(c->fd);
    if (c->cx)
        es__connect_free(c->cx);
    es__conn_cfg_unref(c->cfg);
    es__free(c);
}

void es__conn_fail(struct es__conn *c, int reason, int err)
{
    if (!c->fail_reason) {
        c->fail_reason = reason;
        c->fail_err = err;
    }
}

static int reason_of(int err)
{
    return err == ECONNRESET || err == EPIPE ? ES_CONN_RESET : ES_CONN_ERROR;
}

int es__conn_timer(es_actor_t *self, struct es__conn *c,
                   enum es__conn_timer kind, unsigned ms)
{
    struct es__connect *cx = c->cx;
    if (!cx)
        return kind == ES__TIMER_NONE ? 0 : -EINVAL;
    if (cx->timer_kind != ES__TIMER_NONE)
        (void)es_timer_stop(self, cx->timer);
    cx->timer_kind = ES__TIMER_NONE;
    if (kind == ES__TIMER_NONE)
        return 0;
    int rc = es_timer_start(self, ms, 0, ES__CONN_TIMER_TAG, &cx->timer);
    if (rc == 0)
        cx->timer_kind = kind;
    return rc;
}

static int deliver(es_actor_t *self, struct es__conn *c, es_msg_t *m)
{
    m->to = self->id;
    return c->cfg->user(self, m);
}

static void deliver_simple(es_actor_t *self, struct es__conn *c, uint32_t type,
                           size_t len)
{
    es_msg_t m = es_msg_make(type);
    m.len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    (void)deliver(self, c, &m);
}

/* Closes the socket and tells the user; the actor stops afterwards. */
static void close_now(es_actor_t *self, struct es__conn *c, int reason, int err)
{
    if (c->closed)
        return;
    c->closed = true;
    if (c->fd >= 0) {
        if (c->watched)
            es__io_close(self, c->fd);
        else
            close(c->fd);
        c->fd = -1;
    }
    c->watched = 0;
    queue_drop(c);
    es__conn_timer(self, c, ES__TIMER_NONE, 0);
    if (c->cx) {
        es__connect_free(c->cx);
        c->cx = NULL;
    }
    es_msg_t m = es_msg_make(ES_MSG_CONN_CLOSED);
    m.inl.i64[0] = reason;
    m.inl.i64[1] = err;
    m.len = 2 * sizeof(int64_t);
    (void)deliver(self, c, &m);
    es_actor_stop(self);
}

/* Reading stops while the queue is above write_high, the mailbox is half
 * full, the user paused, or the actor is muted (a receiver of what it
 * forwards is full: backpressure reaches TCP). */
static bool can_read(const es_actor_t *self, const struct es__conn *c)
{
    return !es__actor_muted(self) && !c->closed && !c->connecting &&
           !c->peer_eof && !c->above_high && !c->paused_user &&
           !c->paused_mailbox && !c->close_reason && !c->fail_reason &&
           !c->abort_pending;
}

static void update_watch(es_actor_t *self, struct es__conn *c)
{
    if (c->closed || c->fd < 0)
        return;
    uint32_t want = c->connecting ? ES_IO_WRITE : 0;
    if (can_read(self, c))
        want |= ES_IO_READ;
    if (c->queued && !c->connecting)
        want |= ES_IO_WRITE;
    if (want == c->watched)
        return;
    int rc = want ? es_io_watch(self, c->fd, want) : es_io_unwatch(self, c->fd);
    if (rc)
        es__conn_fail(c, ES_CONN_ERROR, rc);
    else
        c->watched = want;
}

/* Mailbox backpressure: stop reading while the mailbox is half full. */
static void check_mailbox(es_actor_t *self, struct es__conn *c)
{
    uint32_t backlog = es__actor_backlog(self);
    if (!c->paused_mailbox && backlog > self->capacity / 2)
        c->paused_mailbox = true;
    else if (c->paused_mailbox && backlog <= self->capacity / 4)
        c->paused_mailbox = false;
}

/* Carries out what the user's calls asked for; see the file comment. */
static void settle(es_actor_t *self, struct es__conn *c)
{
    for (int round = 0; round < SETTLE_ROUNDS && !c->closed; round++) {
        if (c->fail_reason) {
            close_now(self, c, c->fail_reason, c->fail_err);
        } else if (c->abort_pending) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close_now(self, c, ES_CONN_LOCAL, 0);
        } else if (c->close_reason && !c->queued && !c->connecting) {
            close_now(self, c, c->close_reason, 0);
        } else if (c->high_notify) {
            c->high_notify = false;
            deliver_simple(self, c, ES_MSG_CONN_HIGH_WATER, c->queued);
            continue; /* the user may have closed or written more */
        }
        break;
    }
    if (c->closed)
        return;
    if (c->shut_pending && !c->queued && !c->shut_done && !c->connecting) {
        c->shut_done = true;
        if (shutdown(c->fd, SHUT_WR) < 0)
            es__conn_fail(c, reason_of(errno), -errno);
    }
    check_mailbox(self, c);
    update_watch(self, c);
    if (c->fail_reason)
        close_now(self, c, c->fail_reason, c->fail_err);
}

/* Activity: the idle timeout starts again from now. */
static void touch(es_actor_t *self, struct es__conn *c)
{
    if (c->idle_timeout_ms &&
        es__deadline_set(self, &c->idle, c->idle_timeout_ms))
        es__conn_fail(c, ES_CONN_ERROR, -ENOMEM);
}

void es__conn_opened(es_actor_t *self, struct es__conn *c)
{
    c->connecting = false;
    c->no_delay = c->no_delay && c->is_tcp; /* set before the second send */
    es__conn_timer(self, c, ES__TIMER_NONE, 0);
    touch(self, c);
    deliver_simple(self, c, ES_MSG_CONN_OPEN, 0);
}

/* Reads what is there, up to a budget; returns the user's error if any. */
static int do_read(es_actor_t *self, struct es__conn *c)
{
    unsigned char *buf = es__loop_scratch(self->loop);
    if (!buf) {
        es__conn_fail(c, ES_CONN_ERROR, -ENOMEM);
        return 0;
    }
    for (int i = 0; i < READ_BUDGET && can_read(self, c); i++) {
        ssize_t n = recv(c->fd, buf, ES__SCRATCH, 0);
        if (n > 0) {
            touch(self, c);
            es_msg_t m = es_msg_make(ES_MSG_CONN_DATA);
            m.ptr = buf;
            m.len = (uint32_t)n;
            int rc = deliver(self, c, &m);
            if (rc < 0)
                return rc;
            if ((size_t)n < ES__SCRATCH)
                break; /* drained, most likely: let epoll say otherwise */
        } else if (n == 0) {
            c->peer_eof = true;
            if (!c->close_reason)
                c->close_reason = ES_CONN_PEER_CLOSED;
        } else if (errno != EAGAIN && errno != EINTR) {
            es__conn_fail(c, reason_of(errno), -errno);
        } else {
            break;
        }
    }
    return 0;
}

/* Frees the first `n` sent bytes of the queue. */
static void consume(struct es__conn *c, size_t n)
{
    c->queued -= n;
    c->sent_since += n;
    while (n) {
        struct es__wseg *s = c->head;
        size_t left = s->len - s->off;
        if (n < left) {
            s->off += n;
            return;
        }
        n -= left;
        c->head = s->next;
        if (!c->head)
            c->tail = NULL;
        if (s->free_cb)
            s->free_cb(s->ptr);
        es__free(s);
    }
}

/*
 * TCP_NODELAY is set just before the second send, not at open: the first
 * segment on a quiet connection leaves at once with Nagle on anyway, so a
 * connection that sends once and closes (an HTTP/1.0 reply) saves the
 * setsockopt.
 */
static void before_send(struct es__conn *c)
{
    if (!c->no_delay)
        return;
    if (c->sent_once) {
        int one = 1;
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->no_delay = false;
    }
    c->sent_once = true;
}

static void flush(es_actor_t *self, struct es__conn *c)
{
    struct iovec iov[IOV_BATCH];
    int n = 0;
    for (struct es__wseg *s = c->head; s && n < IOV_BATCH; s = s->next)
        iov[n++] = (struct iovec){s->ptr + s->off, s->len - s->off};
    if (!n)
        return;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    before_send(c);
    ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR)
            es__conn_fail(c, reason_of(errno), -errno);
        return;
    }
    touch(self, c);
    consume(c, (size_t)w);
    if (!c->queued && c->sent_notify) {
        c->sent_notify = false;
        size_t sent = c->sent_since;
        c->sent_since = 0;
        deliver_simple(self, c, ES_MSG_CONN_SENT, sent);
    }
    if (c->above_high && c->queued <= c->cfg->write_low) {
        c->above_high = false;
        /* A HIGH_WATER not delivered yet (settle() delivers it after the
         * IO of this turn) is taken back instead: a LOW_WATER before its
         * HIGH_WATER would leave the user believing the queue is high. */
        if (c->high_notify)
            c->high_notify = false;
        else
            deliver_simple(self, c, ES_MSG_CONN_LOW_WATER, c->queued);
    }
}

static int on_io(es_actor_t *self, struct es__conn *c, uint32_t events)
{
    if (c->connecting) {
        es__connector_on_io(self, c, events);
        return 0;
    }
    /* Read before anything can fail the connection: what the peer sent
     * before a reset (a reply, then RST) is still in the socket buffer and
     * must be handed over first. */
    if ((events & (ES_IO_READ | ES_IO_HUP | ES_IO_ERROR)) &&
        can_read(self, c)) {
        int rc = do_read(self, c);
        if (rc < 0)
            return rc;
    } else if ((events & ES_IO_HUP) && !(events & ES_IO_ERROR) &&
               !can_read(self, c)) {
        /* both ways closed and we were not reading */
        es__conn_fail(c, ES_CONN_PEER_CLOSED, 0);
    }
    if ((events & ES_IO_ERROR) && !c->fail_reason) {
        int err = 0;
        socklen_t len = sizeof(err);
        (void)getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || !c->peer_eof)
            es__conn_fail(c, reason_of(err), -err);
        return 0;
    }
    if ((events & ES_IO_WRITE) && !c->fail_reason)
        flush(self, c);
    return 0;
}

static bool is_our_timer(const struct es__conn *c, const es_msg_t *m)
{
    return c->cx && c->cx->timer_kind != ES__TIMER_NONE &&
           es_msg_timer_tag(m) == ES__CONN_TIMER_TAG &&
           es_msg_timer_id(m) == c->cx->timer;
}

static int on_start(es_actor_t *self, struct es__conn *c, es_msg_t *msg)
{
    if (c->cfg->state_new) {
        self->state = c->cfg->state_new(c->cfg->arg);
        self->state_free = c->cfg->state_free;
    } else {
        self->state = c->cfg->arg;
    }
    int rc = deliver(self, c, msg);
    if (rc < 0 || c->closed)
        return rc;
    if (c->cx)
        es__connector_start(self, c);
    else
        es__conn_opened(self, c);
    return 0;
}

static int conn_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct es__conn *c = self->ext;
    int rc = 0;
    switch (msg->type) {
    case ES_MSG_START:
        rc = on_start(self, c, msg);
        break;
    case ES_MSG_IO:
        rc = on_io(self, c, es_msg_io_events(msg));
        break;
    case ES__MSG_RESOLVED:
        es__connector_on_resolved(self, c, msg);
        break;
    case ES__MSG_RESUMED:
        break; /* unmuted: settle() below reads again */
    case ES_MSG_TIMER:
        if (es_msg_timer_tag(msg) == ES__DEADLINE_TAG &&
            !es_msg_timer_id(msg)) {
            if (c->idle_timeout_ms && !c->closed)
                es__conn_fail(c, ES_CONN_TIMEOUT, 0);
        } else if (!is_our_timer(c, msg)) {
            rc = deliver(self, c, msg);
        } else {
            es__conn_fail(c, ES_CONN_CONNECT_TIMEOUT, -ETIMEDOUT);
        }
        break;
    case ES_MSG_STOP:
        close_now(self, c, c->fail_reason ? c->fail_reason : ES_CONN_STOPPED,
                  c->fail_err);
        return deliver(self, c, msg);
    default:
        rc = deliver(self, c, msg);
        break;
    }
    settle(self, c);
    return rc;
}

int es__conn_spawn(es_runtime_t *rt, struct es__conn *c, int loop,
                   es_placement_t placement, es_actor_id_t *out)
{
    es_spawn_opts_t so = {
        .behaviour = conn_behaviour,
        .loop = loop,
        .placement = placement,
        .mailbox_capacity = c->cfg->mailbox_capacity,
    };
    return es__spawn(rt, &so, c, es__conn_free, out);
}

/* Appends len bytes of data as a copy, filling the tail segment first. */
static int queue_copy(struct es__conn *c, const char *data, size_t len)
{
    struct es__wseg *t = c->tail;
    if (t && t->cap && t->len < t->cap) {
        size_t room = t->cap - t->len;
        size_t n = len < room ? len : room;
        memcpy(t->data + t->len, data, n);
        t->len += n;
        data += n;
        len -= n;
        c->queued += n;
    }
    if (!len)
        return 0;
    size_t cap = len > SEG_MIN ? len : SEG_MIN;
    struct es__wseg *s = es__malloc(sizeof(*s) + cap);
    if (!s)
        return -ENOMEM;
    *s = (struct es__wseg){.ptr = s->data, .len = len, .cap = cap};
    memcpy(s->data, data, len);
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->queued += len;
    return 0;
}

static int queue_ref(struct es__conn *c, char *data, size_t len,
                     es_msg_free_cb free_cb)
{
    struct es__wseg *s = es__malloc(sizeof(*s));
    if (!s)
        return -ENOMEM;
    *s = (struct es__wseg){.ptr = data, .len = len, .free_cb = free_cb};
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->queued += len;
    return 0;
}

/* Sends what it can at once when nothing is queued; returns bytes sent. */
static size_t try_send(struct es__conn *c, const void *data, size_t len)
{
    if (c->queued || c->connecting || c->fd < 0)
        return 0;
    before_send(c);
    ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0)
        return (size_t)w;
    if (errno != EAGAIN && errno != EINTR)
        es__conn_fail(c, reason_of(errno), -errno);
    return 0;
}

static bool writable(const struct es__conn *c)
{
    return !c->closed && !c->close_reason && !c->fail_reason &&
           !c->abort_pending && !c->shut_pending;
}

static void after_queue(struct es__conn *c)
{
    c->sent_notify = true;
    if (!c->above_high && c->queued > c->cfg->write_high) {
        c->above_high = true;
        c->high_notify = true;
    }
}

int es_conn_write(es_actor_t *self, const void *data, size_t len)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c || (!data && len))
        return -EINVAL;
    if (!writable(c))
        return -EPIPE;
    size_t sent = try_send(c, data, len);
    if (c->fail_reason)
        return -EPIPE;
    if (sent == len)
        return 0;
    int rc = queue_copy(c, (const char *)data + sent, len - sent);
    if (rc == 0)
        after_queue(c);
    return rc;
}

int es_conn_write_ref(es_actor_t *self, void *data, size_t len,
                      es_msg_free_cb free_cb)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c || (!data && len))
        return -EINVAL;
    if (!writable(c))
        return -EPIPE;
    size_t sent = try_send(c, data, len);
    if (c->fail_reason)
        return -EPIPE;
    if (sent == len) {
        if (free_cb)
            free_cb(data);
        return 0;
    }
    int rc = queue_ref(c, data, len, free_cb);
    if (rc == 0) {
        c->tail->off = sent;
        c->queued -= sent;
        after_queue(c);
    }
    return rc;
}

int es_conn_close(es_actor_t *self)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c)
        return -EINVAL;
    if (c->closed || c->close_reason == ES_CONN_LOCAL || c->abort_pending)
        return -EALREADY;
    c->close_reason = ES_CONN_LOCAL;
    return 0;
}

int es_conn_abort(es_actor_t *self)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c)
        return -EINVAL;
    if (c->closed || c->abort_pending)
        return -EALREADY;
    c->abort_pending = true;
    return 0;
}

int es_conn_shutdown(es_actor_t *self)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c)
        return -EINVAL;
    if (c->closed || c->shut_pending)
        return -EALREADY;
    c->shut_pending = true;
    return 0;
}

int es_conn_pause(es_actor_t *self, int paused)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c)
        return -EINVAL;
    c->paused_user = paused != 0;
    return 0;
}

int es_conn_set_idle_timeout(es_actor_t *self, unsigned ms)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c)
        return -EINVAL;
    c->idle_timeout_ms = ms;
    if (!ms) {
        es__deadline_clear(&c->idle);
        return 0;
    }
    if (c->connecting || c->closed)
        return 0; /* armed when the connection opens, or never */
    return es__deadline_set(self, &c->idle, ms);
}

/* --- Broadcast -------------------------------------------------------------
 * One es__call per es_conn_broadcast(), shared by the loops: each loop's
 * actor walks its own actor list and queues a copy of the message to every
 * live connection with the behaviour; the last loop frees the call. */

struct bcast {
    struct es__call call; /* first: the loop actor gets a pointer to it */
    atomic_uint refs;     /* loops that still hold it */
    es_behaviour_cb behaviour;
    es_msg_t msg;
};

static void bcast_release(void *p)
{
    struct bcast *b = p;
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        es__free(b);
}

static void bcast_run(struct es__loop *loop, struct es__call *call)
{
    struct bcast *b = (struct bcast *)call;
    for (es_actor_t *a = loop->actors; a; a = a->next) {
        struct es__conn *c = a->ext_free == es__conn_free ? a->ext : NULL;
        if (c && c->cfg->user == b->behaviour && !c->closed && !a->stopped)
            (void)es_send(loop->rt, a->id, &b->msg); /* full: skipped */
    }
}

int es_conn_broadcast(es_runtime_t *rt, es_behaviour_cb behaviour,
                      const es_msg_t *msg)
{
    if (!rt || !behaviour || !msg || msg->type < ES_MSG_USER || msg->free_cb)
        return -EINVAL;
    unsigned n = es_runtime_threads(rt);
    struct bcast *b = es__calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->call.fn = bcast_run;
    b->behaviour = behaviour;
    b->msg = *msg;
    atomic_init(&b->refs, n);
    int first_err = 0;
    for (unsigned i = 0; i < n; i++) {
        es_msg_t m = es_msg_ptr(ES__MSG_CALL, b, 0, bcast_release);
        int rc = es__send(rt, es_runtime_loop_actor(rt, i), &m, false);
        if (rc == -ESRCH)
            rc = -ESHUTDOWN; /* loop actors end only with the runtime */
        if (rc) {
            bcast_release(b); /* that loop's reference */
            if (!first_err)
                first_err = rc;
        }
    }
    return first_err;
}

size_t es_conn_queued(const es_actor_t *self)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    return c ? c->queued : 0;
}

int es_conn_fd(const es_actor_t *self)
{
    OWNING_LOOP_ONLY(self);
    struct es__conn *c = conn_of(self);
    if (!c)
        return -EINVAL;
    return c->fd >= 0 ? c->fd : -EBADF;
}

void *es_conn_state(const es_actor_t *self)
{
    return self ? self->state : NULL;
}
