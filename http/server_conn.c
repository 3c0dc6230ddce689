/* SPDX-License-Identifier: MIT */
/*
 * The HTTP server's connection actors: their behaviour, the llhttp
 * callbacks and the loop that feeds llhttp, the deadlines, and the moves
 * between the three states a connection can be in (see server_private.h):
 * idle (state = the server), busy (an es__http_conn) and parked (the
 * exchange of a deferred response).
 *
 * One request at a time: llhttp pauses at the end of each message (and at
 * the end of each head, so the head is checked before its body is read);
 * the request is handed to its handler and nothing more is parsed until
 * its response is complete. Bytes that arrive meanwhile wait, copied, in
 * the connection's input buffer (DATA's buffer lives only during the
 * call), and the connection keeps reading, so it notices the client
 * leaving. Past a bound (ES__HTTP_IN_MAX, 64 KiB) reading pauses until the
 * buffer drains to half: a client that pipelines that much behind a
 * deferred response and then leaves is only noticed once reading resumes
 * (when the response ends).
 *
 * Deadlines: the header timer runs from the first byte of a request that
 * is not complete when its bytes have been handled, up to the end of its
 * head; the body timer from there to the end of the message. A request
 * that arrives whole never starts a timer. Between requests the
 * connection's idle timeout (es_conn_set_idle_timeout) is the keep-alive
 * timeout; it is off while a request is read, handled or parked.
 */
#include "server_private.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* --- Helpers -------------------------------------------------------------- */

static struct es__http_loop *loop_of(const struct es__http_conn *hc)
{
    return &hc->srv->loops[hc->loop];
}

/* Closing statuses (http.h) and 417, whose body we never read. */
static bool closes(int status)
{
    return status == 400 || status == 408 || status == 413 || status == 414 ||
           status == 417 || status == 431 || status == 500 || status == 503 ||
           status == 505;
}

/* --- Connection states ---------------------------------------------------- */

static void message_reset(struct es__http_conn *hc)
{
    hc->url.len = 0;
    es__http_headers_clear(&hc->h);
    hc->body.len = 0;
    hc->phase = ES__PH_HEAD;
    hc->scan = (struct es__http_scan){0};
    hc->head_bytes = 0;
    hc->field_bytes = 0;
    hc->nfields = 0;
    hc->nhost = hc->nte = hc->ncl = hc->expect = 0;
    hc->want_line = hc->want_crlf = false;
}

static struct es__http_conn *hc_new(es_http_server_t *srv, unsigned loop)
{
    struct es__http_loop *l = &srv->loops[loop];
    struct es__http_conn *hc = l->cache;
    if (hc) {
        l->cache = hc->next_free;
        l->ncache--;
    } else if (!(hc = es_calloc(1, sizeof(*hc)))) {
        return NULL;
    }
    struct es__buf in = hc->in, url = hc->url, body = hc->body;
    struct es_http_headers h = hc->h;
    memset(hc, 0, sizeof(*hc));
    hc->in = in;
    hc->url = url;
    hc->body = body;
    hc->h = h;
    hc->in.len = 0;
    hc->kind = ES__HTTP_KIND_CONN;
    hc->srv = srv;
    hc->loop = (uint16_t)loop;
    message_reset(hc);
    llhttp_init(&hc->p, HTTP_REQUEST, &es__http_settings);
    hc->p.data = hc;
    return hc;
}

static void hc_destroy(struct es__http_conn *hc)
{
    es__http_body_reset(hc);
    es__buf_free(&hc->in);
    es__buf_free(&hc->url);
    es__buf_free(&hc->body);
    es__http_headers_free(&hc->h);
    es_free(hc);
}

static void timer_stop(es_actor_t *self, struct es__http_conn *hc)
{
    if (hc->timer_kind)
        (void)es_timer_stop(self, hc->timer);
    hc->timer_kind = ES__TM_NONE;
}

static void timer_arm(es_actor_t *self, struct es__http_conn *hc, int kind)
{
    if (hc->timer_kind == kind)
        return;
    timer_stop(self, hc);
    unsigned ms = kind == ES__TM_HEADER ? hc->srv->o.header_timeout_ms
                                        : es__http_body_due_ms(hc);
    uint64_t tag =
        kind == ES__TM_HEADER ? ES__HTTP_TAG_HEADER : ES__HTTP_TAG_BODY;
    if (es_timer_start(self, ms, 0, tag, &hc->timer) == 0)
        hc->timer_kind = (uint8_t)kind;
}

/* Gives hc back to its thread's cache (large buffers are freed). */
static void hc_release(es_actor_t *self, struct es__http_conn *hc)
{
    timer_stop(self, hc);
    es__http_body_reset(hc); /* frees the body buffer and its budget */
    struct es__http_loop *l = loop_of(hc);
    if (l->ncache >= ES__HTTP_CONN_CACHE) {
        hc_destroy(hc);
        return;
    }
    if (hc->in.cap > 16384)
        es__buf_free(&hc->in);
    if (hc->url.cap > 4096)
        es__buf_free(&hc->url);
    if (hc->h.cap > 8192 || hc->h.fcap > 64)
        es__http_headers_free(&hc->h);
    hc->kind = 0;
    hc->next_free = l->cache;
    l->cache = hc;
    l->ncache++;
}

/* The busy state of self, made from whatever the state is now. */
static struct es__http_conn *conn_get(es_actor_t *self)
{
    void *st = es_actor_state(self);
    uint32_t kind = es__http_kind(st);
    if (kind == ES__HTTP_KIND_CONN)
        return st;
    if (kind == ES__HTTP_KIND_REJECT)
        return NULL;
    es_http_response_t *x = kind == ES__HTTP_KIND_EXCH ? st : NULL;
    es_http_server_t *srv = x ? x->srv : st;
    struct es__http_conn *hc = hc_new(srv, (unsigned)es_actor_loop_index(self));
    if (!hc)
        return NULL;
    hc->x = x;
    hc->idle_off = x != NULL; /* parked: the idle timeout is off */
    es_actor_set_state(self, hc);
    return hc;
}

/* --- Errors the server answers itself ------------------------------------- */

/* Answers status on self: in x (a parsed request) or in a new exchange. */
static void send_error(es_actor_t *self, es_http_server_t *srv, unsigned loop,
                       int status, es_http_response_t *x, const char *allow)
{
    es_http_response_t *own =
        x ? NULL : es__http_exchange_new(srv, loop, NULL, self);
    if (!x && !(x = own)) {
        (void)es_conn_abort(self);
        return;
    }
    es__http_add(&srv->loops[loop].rejected, 1);
    x->is_error = true;
    x->status = (uint16_t)status;
    x->keep_alive = own ? false : x->keep_alive && !closes(status);
    char text[128];
    int n = snprintf(text, sizeof(text), "%s\n", es_http_status_text(status));
    (void)es_http_response_body(x, text, (size_t)n);
    if (allow && *allow)
        (void)es_http_response_header(x, "Allow", allow);
    if (srv->on_error)
        srv->on_error(status, x->has_req ? &x->req : NULL, x, srv->error_arg);
    x->ended = true;
    es__http_send_whole(self, x);
    if (own)
        es__http_exchange_unref(own);
}

/* Refuses the request being parsed and closes: nothing after it runs. */
static void reject(es_actor_t *self, struct es__http_conn *hc, int status)
{
    es_log(ES_LOG_DEBUG, "http: refusing a request with %d (llhttp: %s)",
           status,
           llhttp_get_error_reason(&hc->p) ? llhttp_get_error_reason(&hc->p)
                                           : "-");
    hc->closing = true;
    timer_stop(self, hc);
    if (hc->limit)
        es__http_add(&loop_of(hc)->limit_hits[hc->limit - 1], 1);
    hc->limit = 0;
    send_error(self, hc->srv, hc->loop, status, NULL, NULL);
    (void)es_conn_close(self);
}

/* --- Requests ------------------------------------------------------------- */

static void dispatch(es_actor_t *self, struct es__http_conn *hc)
{
    es_http_server_t *srv = hc->srv;
    es_http_response_t *x = es__http_exchange_new(srv, hc->loop, hc, self);
    if (!x) {
        reject(self, hc, 500);
        return;
    }
    es__http_body_dispatch(hc, x);
    x->head_only = hc->p.method == HTTP_HEAD;
    /* After CONNECT the client expects a tunnel, which we never open. */
    x->keep_alive = llhttp_should_keep_alive(&hc->p) &&
                    hc->p.method != HTTP_CONNECT &&
                    !atomic_load_explicit(&srv->freeing, memory_order_relaxed);
    message_reset(hc);
    hc->x = x;
    const struct es__http_route *r = NULL;
    char allow[128];
    int rc = es__http_route_find(srv, es__http_req_method(&x->req),
                                 es__http_req_path(&x->req), &r, allow,
                                 sizeof(allow));
    if (rc) {
        send_error(self, srv, hc->loop, rc, x, allow);
        return;
    }
    es__http_add(&loop_of(hc)->requests, 1);
    r->cb(&x->req, x, r->arg);
    if (!x->deferred && !x->c_done)
        es__http_send_whole(self, x);
}

/* The head is complete: check it, answer Expect, prepare for the body. */
static void on_head(es_actor_t *self, struct es__http_conn *hc, size_t rest)
{
    int status = es__http_check_head(hc);
    if (status) {
        reject(self, hc, status);
        return;
    }
    if (hc->timer_kind == ES__TM_HEADER)
        timer_stop(self, hc);
    hc->phase = ES__PH_BODY;
    const llhttp_t *p = &hc->p;
    hc->want_line = (p->flags & F_CHUNKED) != 0;
    bool body = (p->flags & F_CHUNKED) || p->content_length > 0;
    /* Budget, streaming route, body clocks (server_body.c). */
    if ((status = es__http_body_begin(self, hc)) != 0) {
        reject(self, hc, status);
        return;
    }
    if (hc->expect == ES__EXPECT_CONTINUE && p->http_minor == 1 && body &&
        rest == 0)
        es__http_send_continue(self, hc->srv, hc->loop);
}

static void on_pause(es_actor_t *self, struct es__http_conn *hc, size_t rest)
{
    uint8_t why = hc->pause;
    hc->pause = ES__PAUSE_NONE;
    switch (why) {
    case ES__PAUSE_HEADERS:
        on_head(self, hc, rest);
        break;
    case ES__PAUSE_TRAILER:
        hc->phase = ES__PH_TRAILER;
        hc->scan = (struct es__http_scan){.prev = '\n', .line = ES__LINE_REST};
        break;
    case ES__PAUSE_CHUNK:
        hc->want_line = true;
        break;
    case ES__PAUSE_DATA_END:
        hc->want_crlf = true;
        break;
    case ES__PAUSE_MESSAGE:
        timer_stop(self, hc);
        dispatch(self, hc);
        break;
    }
}

/*
 * How many of the head bytes p[0..n) llhttp may read now: none past the
 * first byte the raw scan refuses (es__http_scan_head()) or past
 * max_header_bytes. These checks run on every head byte before llhttp
 * sees it, so the first offending byte decides the answer however the
 * request was split into reads (a check made after llhttp, or in an llhttp
 * span callback, loses to a later llhttp error in the same read and wins
 * when the read ends between the two).
 * Returns: the count; *s the scan state after it; *status the answer if
 * llhttp reads them all and wants more (0: the count is where the head
 * ends, or n).
 */
static size_t head_guard(const struct es__http_conn *hc, const char *p,
                         size_t n, struct es__http_scan *s, int *status)
{
    size_t room = n, max = hc->srv->o.max_header_bytes;
    if (hc->phase == ES__PH_HEAD && max - hc->head_bytes < n)
        room = max - hc->head_bytes;
    *s = hc->scan;
    size_t lim = es__http_scan_head(s, hc->srv->o.max_url, p, room, status);
    if (lim == room && room < n && !*status)
        *status = 431;
    return lim;
}

/*
 * Runs llhttp over p[0..n) (rest: bytes that follow in this buffer).
 * Returns: bytes consumed, or -1 once the request is refused; *done is
 * set when llhttp took everything without pausing.
 */
static long run(es_actor_t *self, struct es__http_conn *hc, const char *p,
                size_t n, size_t rest, bool *done)
{
    uint8_t phase = hc->phase;
    int guard = 0;
    struct es__http_scan scan;
    size_t lim = phase == ES__PH_BODY ? n : head_guard(hc, p, n, &scan, &guard);
    llhttp_errno_t err =
        lim || !guard ? llhttp_execute(&hc->p, p, lim) : HPE_OK;
    if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
        /* Our callbacks set hc->reject; llhttp reports it as HPE_USER or
         * as the HPE_CB_* error of the callback. */
        reject(self, hc,
               hc->reject ? hc->reject : es__http_error_status(&hc->p, err));
        return -1;
    }
    if (err == HPE_OK && guard) {
        if (guard != 400)
            es__http_limit_hit(hc,
                               guard == 414 ? ES_HTTP_LIMIT_URL
                                            : ES_HTTP_LIMIT_HEADER_BYTES,
                               guard);
        reject(self, hc, guard);
        return -1;
    }
    size_t used =
        err == HPE_OK ? lim : (size_t)(llhttp_get_error_pos(&hc->p) - p);
    /* llhttp read all that was scanned, or paused at the end of the head
     * (after which the scan state is reset before it is used again). */
    if (phase != ES__PH_BODY)
        hc->scan = scan;
    if (phase == ES__PH_HEAD)
        hc->head_bytes += used;
    *done = err == HPE_OK && lim == n;
    if (err == HPE_PAUSED) {
        llhttp_resume(&hc->p);
        on_pause(self, hc, n - used + rest);
    } else if (err == HPE_PAUSED_UPGRADE) {
        llhttp_resume_after_upgrade(&hc->p); /* an upgrade we do not do */
    }
    return (long)used;
}

/*
 * A chunk-size line (es__http_chunk_line()): llhttp gets it without its
 * leading zeros and extensions (llhttp 8.1 refuses a valid "5;a=b;c").
 * Returns: bytes consumed; -2 if the line is not all here; -1 refused.
 */
static long chunk_line(es_actor_t *self, struct es__http_conn *hc,
                       const char *p, size_t n)
{
    char line[ES__HTTP_CHUNK_OUT_MAX];
    size_t line_len;
    long len = es__http_chunk_line(p, n, line, &line_len);
    if (len == 0)
        return -2;
    if (len < 0) {
        reject(self, hc, 400);
        return -1;
    }
    hc->want_line = false;
    bool done;
    long used = run(self, hc, line, line_len, n - (size_t)len, &done);
    return used < 0 ? -1 : len;
}

/* The two bytes after a chunk's data, which llhttp 8.1 skips unread: CRLF
 * or 400. Returns: 0 (llhttp reads on); -2 (not all here); -1 refused. */
static long chunk_crlf(es_actor_t *self, struct es__http_conn *hc,
                       const char *p, size_t n)
{
    if ((n > 0 && p[0] != '\r') || (n > 1 && p[1] != '\n')) {
        reject(self, hc, 400);
        return -1;
    }
    if (n < 2)
        return -2;
    hc->want_crlf = false;
    return 0;
}

/* A line of the trailer section (es__http_trailer_line()); the empty one
 * ends the message. Returns: bytes consumed; -2 not all here; -1 refused. */
static long trailer_line(es_actor_t *self, struct es__http_conn *hc,
                         const char *p, size_t n)
{
    size_t used;
    int status = es__http_trailer_line(hc, p, n, &used);
    if (status) {
        reject(self, hc, status);
        return -1;
    }
    if (!used)
        return -2;
    bool done;
    if (used == 2 && run(self, hc, "\r\n", 2, n - 2, &done) < 0)
        return -1;
    return (long)used;
}

/* The parts of a chunked body the module reads itself. Returns: bytes
 * consumed; 0 if llhttp reads next; -2 wait for more; -1 refused. */
static long framing_step(es_actor_t *self, struct es__http_conn *hc,
                         const char *p, size_t n)
{
    if (hc->want_crlf)
        return chunk_crlf(self, hc, p, n);
    if (hc->want_line)
        return chunk_line(self, hc, p, n);
    if (hc->phase == ES__PH_TRAILER)
        return trailer_line(self, hc, p, n);
    return 0;
}

/*
 * Feeds llhttp until a request is in flight, the bytes run out or the
 * connection is refused. Returns: the bytes consumed.
 */
static size_t parse(es_actor_t *self, struct es__http_conn *hc,
                    const char *data, size_t len)
{
    size_t off = 0;
    int spins = 0;
    while (!hc->closing && !hc->x && spins < 8) {
        long used;
        bool done = false;
        used = framing_step(self, hc, data + off, len - off);
        if (used == -2 || used == -1)
            break;
        if (used > 0) {
            off += (size_t)used;
            spins = 0;
            continue;
        }
        long n = (long)(len - off);
        if (hc->phase == ES__PH_BODY && n > 0 &&
            (n = es__http_body_gate(self, hc, len - off)) <= 0) {
            if (n < 0)
                reject(self, hc, (int)-n);
            break; /* refused, or waiting for body budget */
        }
        bool all = (size_t)n == len - off; /* else the gate held some back */
        used = run(self, hc, data + off, (size_t)n, 0, &done);
        if (used < 0)
            break;
        off += (size_t)used;
        if (done && all)
            break;
        spins = used ? 0 : spins + 1;
    }
    return off;
}

/* Keeps bytes that cannot be parsed now; pauses reading past the bound. */
static void in_add(es_actor_t *self, struct es__http_conn *hc, const char *data,
                   size_t len)
{
    struct es__buf *in = &hc->in;
    if (hc->in_off && hc->in_off >= in->len / 2) {
        memmove(in->data, in->data + hc->in_off, in->len - hc->in_off);
        in->len -= hc->in_off;
        hc->in_off = 0;
    }
    if (es__buf_add(in, data, len)) {
        (void)es_conn_abort(self);
        hc->closing = true;
        return;
    }
    if (!hc->paused_in && in->len - hc->in_off > ES__HTTP_IN_MAX) {
        hc->paused_in = true;
        (void)es_conn_pause(self, 1);
    }
}

/* Parses what the input buffer holds. */
static void pump(es_actor_t *self, struct es__http_conn *hc)
{
    struct es__buf *in = &hc->in;
    if (hc->x || hc->closing || hc->in_off >= in->len)
        return;
    hc->in_off += parse(self, hc, in->data + hc->in_off, in->len - hc->in_off);
    if (hc->in_off >= in->len)
        in->len = hc->in_off = 0;
    if (hc->paused_in && in->len - hc->in_off <= ES__HTTP_IN_MAX / 2) {
        hc->paused_in = false;
        if (!hc->bs.wait) /* still held back for body budget */
            (void)es_conn_pause(self, 0);
    }
}

static void on_data(es_actor_t *self, const char *data, size_t len)
{
    if (es__http_kind(es_actor_state(self)) == ES__HTTP_KIND_REJECT)
        return; /* answered 503 and closing */
    struct es__http_conn *hc = conn_get(self);
    if (!hc) {
        (void)es_conn_abort(self);
        return;
    }
    if (hc->closing)
        return;
    if (hc->phase != ES__PH_HEAD)
        es__http_body_read(hc); /* the inter-read deadline restarts */
    if (hc->x || hc->in_off < hc->in.len) {
        in_add(self, hc, data, len);
        pump(self, hc);
        return;
    }
    size_t used = parse(self, hc, data, len);
    if (used < len && !hc->closing)
        in_add(self, hc, data + used, len - used);
}

/* --- After each message --------------------------------------------------- */

/* Releases completed exchanges and goes on with buffered requests. */
static void finish(es_actor_t *self, struct es__http_conn *hc)
{
    while (hc->x && hc->x->c_done && !hc->closing) {
        es_http_response_t *x = hc->x;
        bool keep =
            x->keep_alive &&
            !atomic_load_explicit(&hc->srv->freeing, memory_order_relaxed);
        hc->x = NULL;
        es__http_exchange_unref(x);
        if (!keep) {
            hc->closing = true;
            (void)es_conn_close(self);
            break;
        }
        pump(self, hc);
    }
}

/* Moves hc to the idle or parked state when it can, else arms timers. */
static void settle(es_actor_t *self, struct es__http_conn *hc)
{
    es_http_server_t *srv = hc->srv;
    if (hc->closing) {
        timer_stop(self, hc);
        return;
    }
    bool partial = hc->phase != ES__PH_HEAD || hc->head_bytes > 0;
    bool buffered = hc->in_off < hc->in.len;
    if (!partial && !buffered && (!hc->x || hc->x->deferred)) {
        es_http_response_t *x = hc->x;
        if (!x && hc->idle_off)
            (void)es_conn_set_idle_timeout(self, srv->o.keepalive_timeout_ms);
        else if (x && !hc->idle_off)
            (void)es_conn_set_idle_timeout(self, 0);
        es_actor_set_state(self, x ? (void *)x : (void *)srv);
        hc->x = NULL;
        hc_release(self, hc);
        return;
    }
    if (!hc->idle_off) {
        (void)es_conn_set_idle_timeout(self, 0);
        hc->idle_off = true;
    }
    if (hc->x)
        timer_stop(self, hc);
    else
        timer_arm(self, hc,
                  hc->phase == ES__PH_HEAD ? ES__TM_HEADER : ES__TM_BODY);
}

/* A parked exchange finished: idle again, or close. */
static void parked_after(es_actor_t *self, es_http_response_t *x)
{
    if (!x->c_done)
        return;
    es_http_server_t *srv = x->srv;
    bool keep = x->keep_alive &&
                !atomic_load_explicit(&srv->freeing, memory_order_relaxed);
    es_actor_set_state(self, srv);
    es__http_exchange_unref(x);
    if (keep)
        (void)es_conn_set_idle_timeout(self, srv->o.keepalive_timeout_ms);
    else
        (void)es_conn_close(self);
}

static void after(es_actor_t *self)
{
    void *st = es_actor_state(self);
    switch (es__http_kind(st)) {
    case ES__HTTP_KIND_CONN:
        finish(self, st);
        pump(self, st);
        settle(self, st);
        break;
    case ES__HTTP_KIND_EXCH:
        parked_after(self, st);
        break;
    }
}

/* --- Other events --------------------------------------------------------- */

static void on_open(es_actor_t *self)
{
    struct es__http_reject *r = es_actor_state(self);
    if (es__http_kind(r) != ES__HTTP_KIND_REJECT) {
        es_http_server_t *srv = (es_http_server_t *)r;
        /* es_http_server_free() sets `freeing` before its broadcast: a
         * connection the broadcast missed sees it here. */
        if (atomic_load(&srv->freeing))
            (void)es_conn_close(self);
        return;
    }
    unsigned loop = (unsigned)es_actor_loop_index(self);
    es__http_add(&r->srv->loops[loop].limit_hits[ES_HTTP_LIMIT_CONNECTIONS], 1);
    send_error(self, r->srv, loop, 503, NULL, NULL);
    (void)es_conn_close(self);
}

static void exchange_drop(es_http_response_t *x)
{
    if (x->deferred && !x->c_done)
        es__http_exchange_gone(x);
    es__http_exchange_unref(x);
}

static void on_closed(es_actor_t *self)
{
    void *st = es_actor_state(self);
    uint32_t kind = es__http_kind(st);
    if (kind == ES__HTTP_KIND_CONN) {
        struct es__http_conn *hc = st;
        es_actor_set_state(self, hc->srv);
        if (hc->x)
            exchange_drop(hc->x);
        hc->x = NULL;
        hc_release(self, hc);
    } else if (kind == ES__HTTP_KIND_EXCH) {
        es_http_response_t *x = st;
        es_actor_set_state(self, x->srv);
        exchange_drop(x);
    }
}

static void on_timer(es_actor_t *self, const es_msg_t *msg)
{
    void *st = es_actor_state(self);
    struct es__http_conn *hc = st;
    uint64_t tag = es_msg_timer_tag(msg);
    if (es__http_kind(st) != ES__HTTP_KIND_CONN || !hc->timer_kind ||
        es_msg_timer_id(msg) != hc->timer ||
        (tag != ES__HTTP_TAG_HEADER && tag != ES__HTTP_TAG_BODY))
        return;
    hc->timer_kind = ES__TM_NONE; /* a one-shot that fired */
    if (hc->x || hc->closing)
        return;
    /* The body timer fires at the earlier of its two deadlines; when
     * neither is due yet, settle() arms it again. */
    int status =
        tag == ES__HTTP_TAG_BODY
            ? es__http_body_expired(hc)
            : es__http_limit_hit(hc, ES_HTTP_LIMIT_HEADER_TIMEOUT, 408);
    if (status)
        reject(self, hc, status);
}

/* Body budget was given back: parse again what waits in the buffer. */
static void on_body_wake(es_actor_t *self)
{
    struct es__http_conn *hc = es_actor_state(self);
    if (es__http_kind(hc) != ES__HTTP_KIND_CONN || !es__http_body_woken(hc))
        return;
    if (!hc->paused_in)
        (void)es_conn_pause(self, 0);
    timer_stop(self, hc); /* the inter-read deadline runs again */
    pump(self, hc);
}

static es_http_response_t *current(es_actor_t *self)
{
    void *st = es_actor_state(self);
    switch (es__http_kind(st)) {
    case ES__HTTP_KIND_CONN:
        return ((struct es__http_conn *)st)->x;
    case ES__HTTP_KIND_EXCH:
        return st;
    }
    return NULL;
}

static void on_water(es_actor_t *self, bool high)
{
    es_http_response_t *x = current(self);
    if (x)
        atomic_store_explicit(&x->congested, high, memory_order_release);
}

int es__http_conn_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct es__http_tl saved = es__http_tl;
    es__http_tl.self = self;
    es__http_tl.id = es_actor_self(self);
    switch (msg->type) {
    case ES_MSG_CONN_OPEN:
        on_open(self);
        break;
    case ES_MSG_CONN_DATA:
        es__http_count_in(self, msg->len);
        on_data(self, msg->ptr, msg->len);
        break;
    case ES_MSG_CONN_HIGH_WATER:
    case ES_MSG_CONN_LOW_WATER:
        on_water(self, msg->type == ES_MSG_CONN_HIGH_WATER);
        break;
    case ES_MSG_CONN_CLOSED:
        on_closed(self);
        break;
    case ES_MSG_TIMER:
        on_timer(self, msg);
        break;
    case ES__HTTP_MSG_OP:
        es__http_on_op(self, msg, current(self));
        break;
    case ES__HTTP_MSG_BODY_WAKE:
        on_body_wake(self);
        break;
    case ES__HTTP_MSG_SHUTDOWN:
        /* Idle (the state is our server): close now if the server
         * freed is ours. Busy or parked: the response in progress closes
         * the connection when it is done (`freeing`). */
        if (es__http_kind(es_actor_state(self)) == ES__HTTP_KIND_SERVER &&
            ((es_http_server_t *)es_actor_state(self))->serial ==
                msg->inl.u64[0])
            (void)es_conn_close(self);
        break;
    }
    if (msg->type != ES_MSG_CONN_CLOSED && msg->type != ES_MSG_STOP)
        after(self);
    es__http_tl = saved;
    return 0;
}

/* --- State hooks ---------------------------------------------------------- */

void *es__http_conn_state_new(void *arg)
{
    es_http_server_t *srv = arg;
    atomic_fetch_add_explicit(&srv->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->accepted, 1, memory_order_relaxed);
    uint64_t n =
        atomic_fetch_add_explicit(&srv->open, 1, memory_order_relaxed) + 1;
    if (n <= srv->o.max_connections)
        return srv;
    struct es__http_reject *r = es_malloc(sizeof(*r));
    if (!r)
        return srv; /* served after all */
    *r = (struct es__http_reject){.kind = ES__HTTP_KIND_REJECT, .srv = srv};
    return r;
}

void es__http_conn_state_free(void *state)
{
    es_http_server_t *srv = state;
    switch (es__http_kind(state)) {
    case ES__HTTP_KIND_REJECT:
        srv = ((struct es__http_reject *)state)->srv;
        es_free(state);
        break;
    case ES__HTTP_KIND_CONN: {
        struct es__http_conn *hc = state;
        srv = hc->srv;
        if (hc->x)
            es__http_exchange_unref(hc->x);
        hc_destroy(hc);
        break;
    }
    case ES__HTTP_KIND_EXCH:
        srv = ((es_http_response_t *)state)->srv;
        es__http_exchange_unref(state);
        break;
    }
    atomic_fetch_sub_explicit(&srv->open, 1, memory_order_relaxed);
    es__http_server_unref(srv);
}
