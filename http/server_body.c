/* SPDX-License-Identifier: MIT */
/*
 * Request bodies on the server side: the server-wide budget for buffered
 * body bytes (max_body_buffer), the body deadlines, and bodies streamed to
 * a route's on_body instead of buffered.
 *
 * Budget: a Content-Length body reserves its whole size (+1 for the NUL)
 * when its head is read, or is refused with 503 if that much is not free
 * (413 if it could never be); once admitted it never waits, so admitted
 * fixed-size bodies cannot deadlock one another. A chunked body has no
 * announced size: it takes budget as its buffer grows (doubling, capped by
 * its limit), and when none is left its connection stops reading (the
 * kernel's receive window then holds the client back) and joins a FIFO of
 * waiters; every release wakes them all, and each one that still finds
 * nothing joins again. A body buffer's capacity never exceeds its charge,
 * so the counter bounds the memory, not just the bytes. The charge moves
 * with the body into the request and comes back when the request is freed
 * (for a deferred response, at es_http_response_end()), or when the
 * connection drops the request (refused, timed out, client gone). If every
 * byte of the budget is held by chunked bodies that all wait, none can
 * finish: the body deadline (body_timeout_ms) breaks that, answering 503
 * to a body the server held back, which gives its budget to the others.
 *
 * Deadlines: one heap timer per connection reading a body, due at the
 * earlier of the absolute deadline (body_timeout_ms from the end of the
 * head) and the inter-read deadline (body_read_timeout_ms after the last
 * read). A read only stores the time; the timer, when it fires early,
 * is armed again for what is due then. While the server holds a body back
 * for budget, only the absolute deadline runs.
 */
#include "server_private.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- The budget ----------------------------------------------------------- */

int es__http_budget_init(es_http_server_t *s)
{
    struct es__http_budget *b = &s->budget;
    atomic_init(&b->used, 0);
    atomic_init(&b->peak, 0);
    atomic_init(&b->waits, 0);
    atomic_init(&b->nwait, 0);
    b->head = b->tail = NULL;
    return -pthread_mutex_init(&b->lock, NULL);
}

void es__http_budget_fini(es_http_server_t *s)
{
    pthread_mutex_destroy(&s->budget.lock);
}

static void peak_note(struct es__http_budget *b, size_t used)
{
    size_t p = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (p < used &&
           !atomic_compare_exchange_weak_explicit(
               &b->peak, &p, used, memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Takes up to `want` bytes of budget, and none unless `least` are free.
 * Returns: the bytes taken. The CAS is seq_cst: see es__http_budget. */
static size_t budget_take(es_http_server_t *s, size_t least, size_t want)
{
    struct es__http_budget *b = &s->budget;
    size_t max = s->o.max_body_buffer;
    size_t cur = atomic_load(&b->used);
    for (;;) {
        size_t avail = cur < max ? max - cur : 0;
        if (!avail || avail < least)
            return 0;
        size_t take = want < avail ? want : avail;
        if (atomic_compare_exchange_weak(&b->used, &cur, cur + take)) {
            peak_note(b, cur + take);
            return take;
        }
    }
}

static void unlink_locked(struct es__http_budget *b, struct es__http_conn *hc)
{
    struct es__http_bodyst *bs = &hc->bs;
    *(bs->wprev ? &bs->wprev->bs.wnext : &b->head) = bs->wnext;
    *(bs->wnext ? &bs->wnext->bs.wprev : &b->tail) = bs->wprev;
    bs->wnext = bs->wprev = NULL;
    bs->linked = false;
    atomic_fetch_sub(&b->nwait, 1);
}

/* Leaves the FIFO if a waker has not already taken hc out of it. */
static void unlink_waiter(es_http_server_t *s, struct es__http_conn *hc)
{
    struct es__http_budget *b = &s->budget;
    pthread_mutex_lock(&b->lock);
    if (hc->bs.linked)
        unlink_locked(b, hc);
    pthread_mutex_unlock(&b->lock);
}

static void link_waiter(es_http_server_t *s, struct es__http_conn *hc)
{
    struct es__http_budget *b = &s->budget;
    pthread_mutex_lock(&b->lock);
    hc->bs.wprev = b->tail;
    hc->bs.wnext = NULL;
    *(b->tail ? &b->tail->bs.wnext : &b->head) = hc;
    b->tail = hc;
    hc->bs.linked = true;
    atomic_fetch_add(&b->nwait, 1); /* seq_cst: before the retry's CAS */
    pthread_mutex_unlock(&b->lock);
}

/* Wakes every waiting connection. One whose mailbox is full stays in the
 * FIFO for the next release (its body deadline bounds the wait). es_send
 * only enqueues, so holding the lock across it cannot recurse. */
static void wake_all(es_http_server_t *s)
{
    struct es__http_budget *b = &s->budget;
    pthread_mutex_lock(&b->lock);
    for (struct es__http_conn *hc = b->head, *next; hc; hc = next) {
        next = hc->bs.wnext;
        es_msg_t m = es_msg_make(ES__HTTP_MSG_BODY_WAKE);
        if (es_send(s->rt, hc->bs.self, &m) == 0)
            unlink_locked(b, hc);
    }
    pthread_mutex_unlock(&b->lock);
}

void es__http_budget_release(es_http_server_t *s, size_t n)
{
    if (!n)
        return;
    atomic_fetch_sub(&s->budget.used, n); /* seq_cst: before nwait's load */
    if (atomic_load(&s->budget.nwait))
        wake_all(s);
}

/* Joins the FIFO, then tries once more (see es__http_budget). Returns:
 * the bytes taken (then hc does not wait), or 0 (reading paused). */
static size_t wait_for(es_actor_t *self, struct es__http_conn *hc, size_t least,
                       size_t want)
{
    es_http_server_t *s = hc->srv;
    link_waiter(s, hc);
    size_t got = budget_take(s, least, want);
    if (got) {
        unlink_waiter(s, hc);
        return got;
    }
    hc->bs.wait = true;
    atomic_fetch_add_explicit(&s->budget.waits, 1, memory_order_relaxed);
    (void)es_conn_pause(self, 1);
    return 0;
}

bool es__http_body_woken(struct es__http_conn *hc)
{
    if (!hc->bs.wait)
        return false;
    unlink_waiter(hc->srv, hc); /* a stray earlier wake: still linked */
    hc->bs.wait = false;
    hc->bs.read_ms = now_ms();
    return true;
}

/* --- Admission ------------------------------------------------------------ */

/* Looks the route up now if it may stream; keeps the request so far. */
static int stream_find(es_actor_t *self, struct es__http_conn *hc)
{
    es_http_server_t *s = hc->srv;
    es_http_response_t *x = es__http_exchange_new(s, hc->loop, hc, self);
    if (!x)
        return 500;
    const struct es__http_route *r = NULL;
    char allow[128];
    if (es__http_route_find(s, es__http_req_method(&x->req),
                            es__http_req_path(&x->req), &r, allow,
                            sizeof(allow)) == 0 &&
        r->on_body) {
        hc->bs.sx = x;
        hc->bs.sroute = r;
        return 0;
    }
    es__http_exchange_unref(x);
    return 0;
}

/* Reserves a Content-Length body's size and its first buffer. */
static int reserve_fixed(struct es__http_conn *hc, size_t len)
{
    es_http_server_t *s = hc->srv;
    if (len > hc->bs.limit)
        return es__http_body_too_big(hc);
    if (!budget_take(s, len + 1, len + 1))
        return es__http_limit_hit(hc, ES_HTTP_LIMIT_BODY_BUFFER, 503);
    hc->bs.charge = len + 1;
    size_t first = len + 1 < ES__HTTP_IN_MAX ? len + 1 : ES__HTTP_IN_MAX;
    char *p = es_malloc(first);
    if (!p)
        return 500; /* the charge goes back with the request */
    hc->body = (struct es__buf){.data = p, .cap = first};
    return 0;
}

int es__http_body_begin(es_actor_t *self, struct es__http_conn *hc)
{
    es_http_server_t *s = hc->srv;
    struct es__http_bodyst *bs = &hc->bs;
    const llhttp_t *p = &hc->p;
    size_t room = s->o.max_body_buffer ? s->o.max_body_buffer - 1 : 0;
    bs->limit = s->o.max_body < room ? s->o.max_body : room;
    bs->seen = 0;
    bs->buffered = false;
    if (!bs->charge)
        es__buf_free(&hc->body); /* never hold unbudgeted capacity */
    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool sized = (p->flags & F_CONTENT_LENGTH) && p->content_length > 0;
    if (!chunked && !sized)
        return 0;
    bs->self = es_actor_self(self);
    bs->start_ms = bs->read_ms = now_ms();
    if (s->nstream) {
        int rc = stream_find(self, hc);
        if (rc)
            return rc;
        if (bs->sroute) {
            bs->limit = s->o.max_body;
            return 0;
        }
    }
    bs->buffered = true;
    return sized ? reserve_fixed(hc, (size_t)p->content_length) : 0;
}

/* --- Reading -------------------------------------------------------------- */

/* Grows the body buffer to cap bytes (cap <= charge). Returns: 0, -500. */
static long grow(struct es__http_conn *hc, size_t cap)
{
    if (cap <= hc->body.cap)
        return 0;
    char *p = es_realloc(hc->body.data, cap);
    if (!p)
        return -500;
    hc->body.data = p;
    hc->body.cap = cap;
    return 0;
}

long es__http_body_gate(es_actor_t *self, struct es__http_conn *hc, size_t n)
{
    struct es__http_bodyst *bs = &hc->bs;
    if (!bs->buffered || !n)
        return (long)n; /* no body, or streamed: nothing is buffered */
    if (bs->wait)
        return 0;
    size_t len = hc->body.len, left = bs->limit - bs->seen;
    size_t need = n < left ? n : left; /* body bytes n input bytes can give */
    if (len + need + 1 <= hc->body.cap)
        return (long)n;
    size_t hard = len + left + 1, cap = hc->body.cap ? hc->body.cap : 2048;
    size_t want = len + need + 1;
    size_t target = want > 2 * cap ? want : 2 * cap;
    target = target < hard ? target : hard;
    if (target > bs->charge) {
        size_t least = len + 2 > bs->charge ? len + 2 - bs->charge : 0;
        size_t got = budget_take(hc->srv, least, target - bs->charge);
        if (!got && least)
            got = wait_for(self, hc, least, target - bs->charge);
        if (!got && least)
            return 0;
        bs->charge += got;
    }
    long rc = grow(hc, target < bs->charge ? target : bs->charge);
    if (rc)
        return rc;
    size_t room = hc->body.cap - 1 - len;
    return (long)(n < room ? n : room);
}

int es__http_body_data(struct es__http_conn *hc, const char *at, size_t n)
{
    struct es__http_bodyst *bs = &hc->bs;
    if (n > bs->limit - bs->seen)
        return es__http_body_too_big(hc);
    bs->seen += n;
    if (bs->sroute) {
        int st = bs->sroute->on_body(&bs->sx->req, at, n, bs->sroute->arg);
        return st >= 400 && st <= 599 ? st : st ? 500 : 0;
    }
    if (hc->body.len + n + 1 > hc->body.cap)
        return 500; /* the gate makes room first: never reached */
    memcpy(hc->body.data + hc->body.len, at, n);
    hc->body.len += n;
    return 0;
}

void es__http_body_read(struct es__http_conn *hc)
{
    hc->bs.read_ms = now_ms();
}

/* --- Handing over and letting go ------------------------------------------ */

void es__http_body_take(struct es__http_conn *hc, es_http_response_t *x)
{
    es_http_server_t *s = hc->srv;
    size_t keep = x->req.body ? hc->body.cap : 0;
    keep = keep < hc->bs.charge ? keep : hc->bs.charge;
    es__http_budget_release(s, hc->bs.charge - keep);
    hc->bs.charge = 0;
    x->req.body_charge = keep;
    if (keep) /* a deferred request may outlive every connection */
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void es__http_body_free(es_http_response_t *x)
{
    if (!x->req.body_charge)
        return;
    es__http_budget_release(x->srv, x->req.body_charge);
    x->req.body_charge = 0;
    es__http_server_unref(x->srv);
}

void es__http_body_dispatch(struct es__http_conn *hc, es_http_response_t *x)
{
    struct es__http_bodyst *bs = &hc->bs;
    if (bs->sx) {
        x->req.user = bs->sx->req.user;
        es__http_exchange_unref(bs->sx);
    }
    bs->sx = NULL;
    bs->sroute = NULL;
    bs->seen = 0;
    bs->buffered = false;
}

void es__http_body_reset(struct es__http_conn *hc)
{
    struct es__http_bodyst *bs = &hc->bs;
    if (bs->sx) {
        bs->sroute->on_body(&bs->sx->req, NULL, 0, bs->sroute->arg);
        es__http_exchange_unref(bs->sx);
    }
    bs->sx = NULL;
    bs->sroute = NULL;
    if (bs->wait) /* linked, unless a waker took it out already */
        unlink_waiter(hc->srv, hc);
    bs->wait = false;
    es__buf_free(&hc->body); /* before the release, as in response.c */
    es__http_budget_release(hc->srv, bs->charge);
    bs->charge = 0;
}

/* --- Deadlines ------------------------------------------------------------ */

unsigned es__http_body_due_ms(const struct es__http_conn *hc)
{
    const es_http_server_opts_t *o = &hc->srv->o;
    uint64_t due = hc->bs.start_ms + o->body_timeout_ms;
    uint64_t read_due = hc->bs.read_ms + o->body_read_timeout_ms;
    if (!hc->bs.wait && read_due < due)
        due = read_due;
    uint64_t now = now_ms();
    return due > now ? (unsigned)(due - now) : 1;
}

int es__http_body_expired(struct es__http_conn *hc)
{
    const es_http_server_opts_t *o = &hc->srv->o;
    uint64_t now = now_ms();
    if (now >= hc->bs.start_ms + o->body_timeout_ms)
        return es__http_limit_hit(hc, ES_HTTP_LIMIT_BODY_TIMEOUT,
                                  hc->bs.wait ? 503 : 408);
    if (!hc->bs.wait && now >= hc->bs.read_ms + o->body_read_timeout_ms)
        return es__http_limit_hit(hc, ES_HTTP_LIMIT_BODY_READ_TIMEOUT, 408);
    return 0;
}

int es__http_body_too_big(struct es__http_conn *hc)
{
    /* bs.limit is the smaller of max_body and max_body_buffer - 1 for a
     * buffered body (es__http_body_begin()), max_body for a streamed one. */
    bool body = hc->bs.limit == hc->srv->o.max_body;
    return es__http_limit_hit(
        hc, body ? ES_HTTP_LIMIT_BODY : ES_HTTP_LIMIT_BODY_BUFFER, 413);
}
