/* SPDX-License-Identifier: MIT */
/*
 * Responses: the exchange object (a request and its response in one
 * allocation), the calls a handler or a deferred holder makes, and how a
 * response goes out on its connection.
 *
 * A response is written by its connection actor only. Inside the
 * connection's behaviour (the handler, on_gone) the calls act at once; from
 * anywhere else (another actor, a worker thread) begin / write / end are
 * sent to the connection as ES__HTTP_MSG_OP messages, each holding a
 * reference to the exchange, so a message that is dropped or dead-lettered
 * releases it through its free callback.
 *
 * Who frees a deferred exchange: the connection holds a reference until the
 * response is complete or the client has gone, the holder one from
 * es_http_response_defer() to es_http_response_end(), each message in
 * flight one; the last to let go frees. The `shared` word decides, with one
 * atomic read-modify-write on each side, whether the client left before the
 * holder ended (then on_gone runs and end() only frees) or after (then
 * on_gone does not run: the holder is already done with the response).
 */
#include "server_private.h"

#include <errno.h>
#include <stddef.h>
#include <sched.h>
#include <string.h>

_Thread_local
    __attribute__((tls_model("initial-exec"))) struct es__http_tl es__http_tl;

/* Responses up to this size (head and body) go out in one copied write. */
#define OUT_SMALL (16u * 1024u)
static _Thread_local char out_buf[OUT_SMALL];

static bool on_conn(const es_http_response_t *x)
{
    return es__http_tl.self && es__http_tl.id == x->conn;
}

static void ref_drop(es_http_response_t *x)
{
    struct es__http_out *o = x->out;
    if (!o)
        return;
    if (o->ref && o->ref_free)
        o->ref_free(o->ref);
    o->ref = NULL;
    o->ref_len = 0;
    o->ref_free = NULL;
}

/* x's out, made if need be with room for `more` bytes of field lines.
 * Returns: it, or NULL (no memory). */
static struct es__http_out *out_get(es_http_response_t *x, size_t more)
{
    struct es__http_out *o = x->out;
    size_t len = o ? o->flen : 0, cap = o ? o->fcap : 0;
    if (o && more <= cap - len)
        return o;
    if (more > UINT32_MAX - len)
        return NULL;
    size_t want = more ? len + more : 0;
    if (want && want < 2 * cap)
        want = 2 * cap;
    if (want && want < 48)
        want = 48;
    if (want > UINT32_MAX)
        want = UINT32_MAX;
    o = es_realloc(o, sizeof(*o) + want);
    if (!o)
        return NULL;
    if (!x->out)
        memset(o, 0, sizeof(*o));
    o->fcap = (uint32_t)want;
    x->out = o;
    return o;
}

void es__http_exchange_unref(es_http_response_t *x)
{
    if (atomic_fetch_sub_explicit(&x->refs, 1, memory_order_acq_rel) != 1)
        return;
    ref_drop(x);
    if (x->out) {
        es__buf_free(&x->out->body);
        es_free(x->out);
    }
    if (x->q) {
        es__buf_free(x->q);
        es_free(x->q);
    }
    es_free(x->req.body);
    es__http_body_free(x); /* after the free: the charge covers the bytes */
    es_free(x);
}

static void msg_unref(void *p)
{
    es__http_exchange_unref(p);
}

/* --- The exchange --------------------------------------------------------- */

/* The path of a target: origin-form up to '?' or '#'; for absolute-form
 * the part after the authority. */
static void split_target(const char *t, size_t n, size_t *p0, size_t *p1,
                         size_t *q0, size_t *q1)
{
    size_t i = 0;
    if (n && t[0] != '/') {
        const char *s = memchr(t, ':', n);
        if (s && (size_t)(s - t) + 2 < n && s[1] == '/' && s[2] == '/') {
            const char *a = memchr(s + 3, '/', n - (size_t)(s + 3 - t));
            i = a ? (size_t)(a - t) : n;
        }
    }
    *p0 = i;
    while (i < n && t[i] != '?' && t[i] != '#')
        i++;
    *p1 = i;
    *q0 = *q1 = i;
    if (i < n && t[i] == '?') {
        *q0 = ++i;
        while (i < n && t[i] != '#')
            i++;
        *q1 = i;
    }
}

static int take_body(es_http_response_t *x, struct es__http_conn *hc)
{
    struct es__buf *b = &hc->body;
    if (!b->data) {
        es__http_body_take(hc, x); /* gives any charge back */
        return 0;
    }
    if (b->len == b->cap && es__buf_reserve(b, 1))
        return -ENOMEM; /* no room for the NUL */
    if (b->cap > b->len + b->len / 4 + 64) {
        char *p = es_realloc(b->data, b->len + 1);
        if (p) {
            b->data = p;
            b->cap = b->len + 1;
        }
    }
    b->data[b->len] = '\0';
    x->req.body = b->data;
    x->req.body_len = b->len;
    es__http_body_take(hc, x); /* the budget charge follows the body */
    *b = (struct es__buf){0};
    return 0;
}

/* Where the parts of hc's target are (split_target()) and the tail bytes
 * the request takes (fill_request()). */
struct parts {
    size_t p0, p1, q0, q1, tail;
};

static void request_size(const struct es__http_conn *hc, struct parts *t)
{
    const char *u = hc->url.data ? hc->url.data : "";
    size_t n = hc->url.len;
    split_target(u, n, &t->p0, &t->p1, &t->q0, &t->q1);
    t->tail = hc->h.n * sizeof(*hc->h.f) + hc->h.len + n + 1 +
              (t->p1 > t->p0 ? t->p1 - t->p0 : 1) + 1 +
              (t->q1 == n ? 0 : t->q1 - t->q0 + 1);
}

/*
 * Copies the parsed request of hc into x's tail: the fields, their names
 * and values, the target, the path; the query is the end of the target
 * when nothing follows it there (a fragment), else a copy after the path.
 * Returns: 0, -ENOMEM.
 */
static int fill_request(es_http_response_t *x, struct es__http_conn *hc,
                        const struct parts *t, char *tail)
{
    const struct es_http_headers *h = &hc->h;
    struct es_http_request *r = &x->req;
    size_t fbytes = h->n * sizeof(*h->f), n = hc->url.len;
    const char *u = hc->url.data ? hc->url.data : "";
    r->headers = (struct es_http_headers){
        .buf = tail + fbytes,
        .len = h->len,
        .cap = h->len,
        .f = h->n ? (struct es__http_field *)(void *)tail : NULL,
        .n = h->n,
        .fcap = h->n};
    if (fbytes)
        memcpy(tail, h->f, fbytes);
    if (h->len)
        memcpy(tail + fbytes, h->buf, h->len);
    char *target = tail + fbytes + h->len; /* es__http_req_target() */
    if (n)
        memcpy(target, u, n);
    target[n] = '\0';
    char *s = target + n + 1; /* es__http_req_path() */
    if (t->p1 > t->p0) {
        memcpy(s, u + t->p0, t->p1 - t->p0);
        s += t->p1 - t->p0;
    } else {
        *s++ = '/';
    }
    *s++ = '\0';
    r->target_len = (uint32_t)n;
    r->query_off = (uint32_t)t->q0;
    if (t->q1 != n) {
        r->query_off = (uint32_t)(s - target);
        memcpy(s, u + t->q0, t->q1 - t->q0);
        s[t->q1 - t->q0] = '\0';
    }
    x->method = (uint8_t)hc->p.method;
    x->v10 = hc->p.http_minor == 0;
    return take_body(x, hc);
}

es_http_response_t *es__http_exchange_new(es_http_server_t *srv, unsigned loop,
                                          struct es__http_conn *hc,
                                          es_actor_t *self)
{
    struct parts t = {0};
    bool with_req = hc != NULL;
    if (with_req)
        request_size(hc, &t);
    size_t tail = t.tail;
    es_http_response_t *x = es_malloc(sizeof(*x) + tail);
    if (!x)
        return NULL;
    memset(x, 0, sizeof(*x));
    x->kind = ES__HTTP_KIND_EXCH;
    atomic_init(&x->refs, 1);
    atomic_init(&x->shared, 0);
    atomic_init(&x->congested, false);
    atomic_flag_clear(&x->qlock);
    x->srv = srv;
    x->conn = es_actor_self(self);
    x->status = 200;
    x->loop = (uint16_t)loop;
    x->has_req = with_req;
    if (with_req && fill_request(x, hc, &t, (char *)(x + 1))) {
        es_free(x);
        return NULL;
    }
    return x;
}

void es__http_exchange_gone(es_http_response_t *x)
{
    unsigned old =
        atomic_fetch_or_explicit(&x->shared, ES__X_GONE, memory_order_acq_rel);
    if (old & ES__X_ENDED)
        return;
    struct es__http_loop *l = &x->srv->loops[x->loop];
    atomic_store_explicit(
        &l->deferred_gone,
        atomic_load_explicit(&l->deferred_gone, memory_order_relaxed) + 1,
        memory_order_relaxed);
    if (x->on_gone)
        x->on_gone(x, x->gone_arg);
}

/* --- Writing -------------------------------------------------------------- */

/* es_conn_write() and es_conn_write_ref() that count the bytes sent. */
static int out_copy(es_actor_t *self, const es_http_response_t *x,
                    const void *p, size_t n)
{
    int rc = es_conn_write(self, p, n);
    if (rc == 0)
        es__http_add(&x->srv->loops[x->loop].bytes_out, n);
    return rc;
}

static int out_ref(es_actor_t *self, const es_http_response_t *x, void *p,
                   size_t n, es_msg_free_cb free_cb)
{
    int rc = es_conn_write_ref(self, p, n, free_cb);
    if (rc == 0)
        es__http_add(&x->srv->loops[x->loop].bytes_out, n);
    return rc;
}

void es__http_send_continue(es_actor_t *self, es_http_server_t *srv,
                            unsigned loop)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (es_conn_write(self, cont, sizeof(cont) - 1) == 0) {
        es__http_add(&srv->loops[loop].bytes_out, sizeof(cont) - 1);
        es__http_add(&srv->loops[loop].responses[0], 1);
    }
}

/* Counts a response head by its status class (es_http_server_stats_t). */
static void count_status(const es_http_response_t *x)
{
    unsigned c = x->status / 100u - 1u;
    if (c >= ES_HTTP_STATUS_CLASSES - 1)
        c = ES_HTTP_STATUS_CLASSES - 1; /* 600..999 */
    es__http_add(&x->srv->loops[x->loop].responses[c], 1);
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static bool has_body(int status)
{
    return status != 204 && status != 304;
}

/* Bytes the head of x takes at most. */
static size_t head_max(const es_http_response_t *x)
{
    return 64 + strlen(es_http_status_text(x->status)) +
           x->srv->server_line_len + ES__HTTP_DATE_LEN + 8 +
           (x->out ? x->out->flen : 0) + 40 + 32 + 28;
}

/* Writes the head into p; body_len < 0: streamed. Returns the end. */
static char *put_head(es_http_response_t *x, char *p, int64_t body_len)
{
    count_status(x); /* each response's head is made once */
    const char *reason = es_http_status_text(x->status);
    p = put(p, "HTTP/1.1 ", 9);
    p = put_u64(p, x->status);
    *p++ = ' ';
    p = put(p, reason, strlen(reason));
    p = put(p, "\r\n", 2);
    p = put(p, x->srv->server_line, x->srv->server_line_len);
    p = put(p, "Date: ", 6);
    p += es__http_date(p);
    p = put(p, "\r\n", 2);
    if (x->out && x->out->flen)
        p = put(p, x->out->fields, x->out->flen);
    if (body_len >= 0 && has_body(x->status)) {
        p = put(p, "Content-Length: ", 16);
        p = put_u64(p, (uint64_t)body_len);
        p = put(p, "\r\n", 2);
    } else if (body_len < 0 && !x->v10) {
        p = put(p, "Transfer-Encoding: chunked\r\n", 28);
    }
    /* A server being freed closes after this response: say so (§9.6). */
    if (!x->keep_alive ||
        atomic_load_explicit(&x->srv->freeing, memory_order_relaxed))
        p = put(p, "Connection: close\r\n", 19);
    else if (x->v10)
        p = put(p, "Connection: keep-alive\r\n", 24);
    return put(p, "\r\n", 2);
}

/* Writes the head (in buf, n bytes) and, unless small, the body apart. */
static void write_head(es_actor_t *self, const es_http_response_t *x,
                       const char *buf, size_t n)
{
    if (out_copy(self, x, buf, n))
        (void)es_conn_close(self);
}

static void write_body_apart(es_actor_t *self, es_http_response_t *x)
{
    struct es__http_out *o = x->out; /* not NULL: there is a body */
    int rc = 0;
    if (o->ref) {
        rc = out_ref(self, x, o->ref, o->ref_len, o->ref_free);
        if (rc == 0)
            o->ref = NULL; /* the connection owns it now */
        ref_drop(x);
    } else if (o->body.len) {
        rc = out_ref(self, x, o->body.data, o->body.len, es_free);
        if (rc == 0)
            o->body = (struct es__buf){0};
    }
    if (rc)
        (void)es_conn_close(self);
}

/* Sends a response that was not streamed: head and body. */
static void send_plain(es_actor_t *self, es_http_response_t *x)
{
    const struct es__http_out *o = x->out;
    const char *body = !o ? NULL : o->ref ? o->ref : o->body.data;
    size_t blen = !o ? 0 : o->ref ? o->ref_len : o->body.len;
    bool send_body = !x->head_only && has_body(x->status) && blen;
    size_t hmax = head_max(x);
    if (hmax + (send_body ? blen : 0) <= OUT_SMALL) {
        char *e = put_head(x, out_buf, (int64_t)blen);
        if (send_body)
            e = put(e, body, blen);
        write_head(self, x, out_buf, (size_t)(e - out_buf));
        ref_drop(x);
        return;
    }
    char *h = hmax <= OUT_SMALL ? out_buf : es_malloc(hmax);
    if (!h) {
        (void)es_conn_abort(self);
        return;
    }
    write_head(self, x, h, (size_t)(put_head(x, h, (int64_t)blen) - h));
    if (h != out_buf)
        es_free(h);
    if (send_body)
        write_body_apart(self, x);
    else
        ref_drop(x);
}

void es__http_send_head_streamed(es_actor_t *self, es_http_response_t *x)
{
    if (x->c_head_sent || x->c_done)
        return;
    x->c_head_sent = true;
    if (x->v10)
        x->keep_alive = false; /* the end of the stream ends the body */
    size_t hmax = head_max(x);
    char *h = hmax <= OUT_SMALL ? out_buf : es_malloc(hmax);
    if (!h) {
        (void)es_conn_abort(self);
        return;
    }
    write_head(self, x, h, (size_t)(put_head(x, h, -1) - h));
    if (h != out_buf)
        es_free(h);
}

void es__http_send_whole(es_actor_t *self, es_http_response_t *x)
{
    if (x->c_done)
        return;
    if (!x->c_head_sent)
        send_plain(self, x);
    else if (!x->v10 && !x->head_only)
        write_head(self, x, "0\r\n\r\n", 5);
    x->c_done = true;
    if (!x->keep_alive)
        (void)es_conn_close(self);
}

/* Frames one piece of a streamed body into out (room: len + 20). */
static size_t frame(const es_http_response_t *x, char *out, const void *data,
                    size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    if (!x->v10) {
        char tmp[16];
        size_t n = 0;
        for (size_t v = len; v; v >>= 4)
            tmp[n++] = hex[v & 15];
        while (n)
            *p++ = tmp[--n];
        p = put(p, "\r\n", 2);
    }
    p = put(p, data, len);
    if (!x->v10)
        p = put(p, "\r\n", 2);
    return (size_t)(p - out);
}

/*
 * The queue of pieces written off the connection's thread: the holder
 * appends raw bytes to x->q and sends one flush message when none is on
 * its way; the connection takes the whole queue when the message arrives
 * and sends it as one chunk. So a fast writer costs one message and one
 * chunk per batch, never fills the mailbox, and the bytes keep the order
 * of the calls. The spin lock is held for an append or a swap only.
 *
 * Layout of q: Q_HEAD bytes of room for a fixed-width chunk-size line
 * ("%08x\r\n", leading zeros are valid), the data, and room for the
 * closing CRLF.
 */
#define Q_HEAD 10u
#define Q_MAX_CHUNK 0xffffffffu

static void q_lock(es_http_response_t *x)
{
    while (atomic_flag_test_and_set_explicit(&x->qlock, memory_order_acquire))
        sched_yield();
}

static void q_unlock(es_http_response_t *x)
{
    atomic_flag_clear_explicit(&x->qlock, memory_order_release);
}

static void q_data_free(void *data)
{
    es_free((char *)data - Q_HEAD);
}

/* Writes what holders queued, as one piece (connection thread). */
static void q_flush(es_actor_t *self, es_http_response_t *x)
{
    q_lock(x);
    struct es__buf b = {0};
    if (x->q) {
        b = *x->q;
        *x->q = (struct es__buf){0};
    }
    x->kick = false;
    q_unlock(x);
    if (b.len <= Q_HEAD || x->c_done) {
        es__buf_free(&b);
        return;
    }
    es__http_send_head_streamed(self, x);
    size_t n = b.len - Q_HEAD;
    int rc;
    if (x->v10) {
        rc = out_ref(self, x, b.data + Q_HEAD, n, q_data_free);
    } else {
        static const char hex[] = "0123456789abcdef";
        for (int i = 7; i >= 0; i--)
            b.data[7 - i] = hex[(n >> (4 * i)) & 15];
        memcpy(b.data + 8, "\r\n", 2);
        memcpy(b.data + b.len, "\r\n", 2); /* room reserved by q_add */
        rc = out_ref(self, x, b.data, b.len + 2, es_free);
    }
    if (rc) {
        es__buf_free(&b);
        (void)es_conn_close(self);
    }
}

/* Appends len bytes to x->q (lock held). Returns: 0, -EAGAIN, -ENOMEM. */
static int q_add(es_http_response_t *x, const void *data, size_t len)
{
    if (!x->q && !(x->q = es_calloc(1, sizeof(*x->q))))
        return -ENOMEM;
    struct es__buf *q = x->q;
    size_t old = q->len > Q_HEAD ? q->len - Q_HEAD : 0;
    if (old && old + len > x->srv->o.write_high)
        return -EAGAIN;
    if (old + len > Q_MAX_CHUNK)
        return old ? -EAGAIN : -ENOMEM;
    if (es__buf_reserve(q, (q->len ? 0 : Q_HEAD) + len + 2))
        return -ENOMEM;
    if (!q->len)
        q->len = Q_HEAD;
    memcpy(q->data + q->len, data, len);
    q->len += len;
    return 0;
}

static int write_direct(es_actor_t *self, es_http_response_t *x,
                        const void *data, size_t len)
{
    q_flush(self, x); /* pieces an earlier holder thread queued go first */
    if (len + 20 <= OUT_SMALL)
        return out_copy(self, x, out_buf, frame(x, out_buf, data, len))
                   ? -ECONNRESET
                   : 0;
    char *b = es_malloc(len + 20);
    if (!b)
        return -ENOMEM;
    int rc = out_ref(self, x, b, frame(x, b, data, len), es_free);
    if (rc)
        es_free(b);
    return rc == -ENOMEM ? rc : rc ? -ECONNRESET : 0;
}

/* What a holder off the connection gets when es_send() fails. */
static int send_error(int rc)
{
    return rc == -EAGAIN || rc == -ENOMEM ? rc : -ECONNRESET;
}

/* Sends begin or end (kind) to the connection; the message holds a ref. */
static int send_op(es_http_response_t *x, int kind, bool take_ref)
{
    if (take_ref)
        atomic_fetch_add_explicit(&x->refs, 1, memory_order_relaxed);
    es_msg_t m = es_msg_ptr(ES__HTTP_MSG_OP, x, 0, msg_unref);
    m.inl.u64[0] = (uint64_t)kind;
    int rc = es_send(x->srv->rt, x->conn, &m);
    if (rc && take_ref)
        atomic_fetch_sub_explicit(&x->refs, 1, memory_order_relaxed);
    return rc;
}

static int write_marshal(es_http_response_t *x, const void *data, size_t len)
{
    if (atomic_load_explicit(&x->congested, memory_order_acquire))
        return -EAGAIN;
    q_lock(x);
    size_t old = x->q ? x->q->len : 0;
    int rc = q_add(x, data, len);
    bool kick = !rc && !x->kick;
    if (kick)
        x->kick = true;
    q_unlock(x);
    if (rc || !kick)
        return rc; /* if queued, the flush on its way takes it too */
    rc = send_op(x, ES__OP_FLUSH, true);
    if (rc) {
        /* No flush was on its way, so nobody took the queue since. */
        q_lock(x);
        x->q->len = old;
        x->kick = false;
        q_unlock(x);
    }
    return rc ? send_error(rc) : 0;
}

void es__http_on_op(es_actor_t *self, es_msg_t *msg, es_http_response_t *cur)
{
    es_http_response_t *x = msg->ptr;
    if (x != cur)
        return; /* the message's free callback releases it */
    switch (msg->inl.u64[0]) {
    case ES__OP_BEGIN:
        es__http_send_head_streamed(self, x);
        break;
    case ES__OP_FLUSH:
        q_flush(self, x);
        break;
    case ES__OP_END:
        q_flush(self, x);
        es__http_send_whole(self, x);
        break;
    }
}

/* --- The calls ------------------------------------------------------------ */

int es_http_response_status(es_http_response_t *res, int status)
{
    if (!res || status < 200 || status > 999)
        return -EINVAL;
    if (res->begun)
        return -EALREADY;
    res->status = (uint16_t)status;
    return 0;
}

/* Date, Server, Content-Length, Transfer-Encoding, Connection: told apart
 * by length first, so most names cost one switch. */
static bool server_field(const char *name, size_t n)
{
    switch (n) {
    case 4:
        return es__http_name_eq(name, n, "date");
    case 6:
        return es__http_name_eq(name, n, "server");
    case 10:
        return es__http_name_eq(name, n, "connection");
    case 14:
        return es__http_name_eq(name, n, "content-length");
    case 17:
        return es__http_name_eq(name, n, "transfer-encoding");
    default:
        return false;
    }
}

int es_http_response_header(es_http_response_t *res, const char *name,
                            const char *value)
{
    if (!res || !name || !value)
        return -EINVAL;
    size_t nl = strlen(name), vl = strlen(value);
    if (!es__http_is_token(name, nl) || !es__http_is_field_value(value, vl) ||
        server_field(name, nl))
        return -EINVAL;
    if (res->begun)
        return -EALREADY;
    struct es__http_out *o = out_get(res, nl + vl + 4);
    if (!o)
        return -ENOMEM;
    char *p = o->fields + o->flen;
    p = put(p, name, nl);
    p = put(p, ": ", 2);
    p = put(p, value, vl);
    put(p, "\r\n", 2);
    o->flen += (uint32_t)(nl + vl + 4);
    return 0;
}

int es_http_response_body(es_http_response_t *res, const void *data, size_t len)
{
    if (!res || (!data && len))
        return -EINVAL;
    if (res->begun)
        return -EALREADY;
    if (!len && !res->out)
        return 0; /* empty, as it was */
    struct es__http_out *o = out_get(res, 0);
    if (!o)
        return -ENOMEM;
    ref_drop(res);
    o->body.len = 0;
    return es__buf_add(&o->body, data, len);
}

int es_http_response_body_ref(es_http_response_t *res, void *data, size_t len,
                              es_msg_free_cb free_cb)
{
    if (!res || (!data && len))
        return -EINVAL;
    if (res->begun)
        return -EALREADY;
    struct es__http_out *o = out_get(res, 0);
    if (!o)
        return -ENOMEM;
    ref_drop(res);
    o->body.len = 0;
    o->ref = data;
    o->ref_len = len;
    o->ref_free = free_cb;
    return 0;
}

int es_http_response_begin(es_http_response_t *res)
{
    if (!res || res->is_error)
        return -EINVAL;
    if (res->begun || res->ended)
        return -EALREADY;
    if (atomic_load_explicit(&res->shared, memory_order_acquire) & ES__X_GONE)
        return -ECONNRESET;
    res->begun = true;
    if (on_conn(res)) {
        es__http_send_head_streamed(es__http_tl.self, res);
        return 0;
    }
    int rc = send_op(res, ES__OP_BEGIN, true);
    if (rc)
        res->begun = false;
    return rc ? send_error(rc) : 0;
}

int es_http_response_write(es_http_response_t *res, const void *data,
                           size_t len)
{
    if (!res || (!data && len) || !res->begun || res->ended)
        return -EINVAL;
    if (atomic_load_explicit(&res->shared, memory_order_acquire) & ES__X_GONE)
        return -ECONNRESET;
    if (!len || res->head_only)
        return 0;
    if (on_conn(res))
        return write_direct(es__http_tl.self, res, data, len);
    return write_marshal(res, data, len);
}

/* end() of a deferred response. */
static int end_deferred(es_http_response_t *res)
{
    unsigned old = atomic_fetch_or_explicit(&res->shared, ES__X_ENDED,
                                            memory_order_acq_rel);
    if (old & ES__X_ENDED)
        return -EALREADY;
    res->ended = true;
    if (old & ES__X_GONE) {
        es__http_exchange_unref(res);
        return -ECONNRESET;
    }
    if (on_conn(res)) {
        q_flush(es__http_tl.self, res);
        es__http_send_whole(es__http_tl.self, res);
        es__http_exchange_unref(res);
        return 0;
    }
    int rc = send_op(res, ES__OP_END, false); /* our reference moves */
    if (rc == 0)
        return 0;
    if (rc == -EAGAIN || rc == -ENOMEM) {
        res->ended = false;
        old = atomic_fetch_and_explicit(&res->shared, ~(unsigned)ES__X_ENDED,
                                        memory_order_acq_rel);
        if (!(old & ES__X_GONE))
            return rc; /* still ours: the holder retries */
    }
    es__http_exchange_unref(res);
    return -ECONNRESET;
}

int es_http_response_end(es_http_response_t *res)
{
    if (!res)
        return -EINVAL;
    if (res->deferred)
        return end_deferred(res);
    if (res->ended)
        return -EALREADY;
    res->ended = true;
    if (on_conn(res))
        es__http_send_whole(es__http_tl.self, res);
    return 0;
}

int es_http_response_defer(es_http_response_t *res, es_http_gone_cb on_gone,
                           void *arg)
{
    if (!res)
        return -EINVAL;
    if (res->deferred || res->ended)
        return -EALREADY;
    if (res->is_error || !on_conn(res) || res->c_done)
        return -EINVAL;
    res->on_gone = on_gone;
    res->gone_arg = arg;
    atomic_fetch_add_explicit(&res->refs, 1, memory_order_relaxed);
    res->deferred = true;
    return 0;
}

const es_http_request_t *es_http_response_request(const es_http_response_t *res)
{
    return res && res->has_req ? &res->req : NULL;
}
