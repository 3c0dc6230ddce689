/* SPDX-License-Identifier: MIT */
/*
 * The HTTP client's connection actor: one es_connect() connection that
 * carries one request at a time. It writes the request, starts the
 * response timer, and parses the reply with llhttp (1xx interim replies
 * skipped; HEAD, 204 and 304 replies without a body; chunked bodies
 * joined and trailers appended to the fields; close-delimited bodies
 * finished at the peer's orderly close). A complete reply goes to
 * on_reply; then the connection is offered back to the pool (client.c):
 * it idles, takes the host's next waiting request, or closes.
 *
 * Failures: a malformed reply (-EPROTO; a status code is three digits,
 * 100 to 999), limits (-EMSGSIZE) and the response timer (-ETIMEDOUT) fail
 * the request and abort the connection; a close before a whole reply fails
 * it with the close's reason. Except: an idempotent request (RFC 9110
 * §9.2.2, or marked so by the caller) written on a reused connection that
 * closed before the first reply byte (the server dropped it as idle just as
 * we wrote) is retried once on a fresh connection. Any other request may
 * have been acted on, so it is never sent twice: it fails with -ECONNRESET.
 */
#include "client_private.h"

#include <errno.h>
#include <string.h>

/* Body bytes reserved ahead on the strength of a Content-Length: a larger
 * body grows as it arrives, so a bare claim costs little memory. */
#define RESERVE_MAX (1u << 20)

/* hc->code when not counting status code digits: outside a status line,
 * or at the space before the code. */
#define CODE_OFF (-1)
#define CODE_SP (-2)

/* --- The reply being parsed ----------------------------------------------- */

static void reply_free(struct es_http_reply *r)
{
    es__http_headers_free(&r->headers);
    es__buf_free(&r->body);
}

static int stop_parser(struct es__hconn *hc, int err)
{
    if (!hc->err)
        hc->err = err;
    return -1;
}

/* Counts header (and trailer) bytes against the client's limit. */
static int count(struct es__hconn *hc, size_t len)
{
    hc->header_bytes += len;
    if (hc->header_bytes > hc->c->o.max_reply_header_bytes)
        return stop_parser(hc, -EMSGSIZE);
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct es__hconn *hc = p->data;
    es__http_headers_clear(&hc->reply.headers);
    hc->reply.body.len = 0;
    hc->header_bytes = 0;
    hc->interim = false;
    return 0;
}

/* Refuses a status line whose version is not HTTP/1.0 or HTTP/1.1 (llhttp
 * 8 also passes 0.9 and 2.0, and refuses other 1.x itself), then pauses the
 * parser: parse() counts the status code's digits (llhttp 8 takes any run
 * of digits worth at most 999: "0200", "2", none). */
static int on_version_complete(llhttp_t *p)
{
    struct es__hconn *hc = p->data;
    if (p->http_major != 1 || p->http_minor > 1)
        return stop_parser(hc, -EPROTO);
    hc->at_version = true;
    return HPE_PAUSED;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    return count(p->data, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct es__hconn *hc = p->data;
    if (count(hc, len))
        return -1;
    int rc = es__http_headers_name(&hc->reply.headers, at, len);
    return rc ? stop_parser(hc, -ENOMEM) : 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct es__hconn *hc = p->data;
    int rc = es__http_headers_name_done(&hc->reply.headers);
    return rc ? stop_parser(hc, -ENOMEM) : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct es__hconn *hc = p->data;
    if (count(hc, len))
        return -1;
    int rc = es__http_headers_value(&hc->reply.headers, at, len);
    return rc ? stop_parser(hc, -ENOMEM) : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct es__hconn *hc = p->data;
    int rc = es__http_headers_value_done(&hc->reply.headers);
    return rc ? stop_parser(hc, -ENOMEM) : 0;
}

/* Returns 1 for replies without a body (llhttp then skips it). */
static int on_headers_complete(llhttp_t *p)
{
    struct es__hconn *hc = p->data;
    int status = p->status_code;
    hc->reply.status = status;
    hc->reply.version = p->http_major * 10 + p->http_minor;
    if (status < 100)
        return stop_parser(hc, -EPROTO); /* "000" to "099" */
    if (status == 101)
        return stop_parser(hc, -EPROTO); /* we never ask to upgrade */
    if (status / 100 == 1) {
        hc->interim = true;
        return 1;
    }
    if (hc->req->head || status == 204 || status == 304)
        return 1;
    if (p->flags & F_CONTENT_LENGTH) {
        if (p->content_length > hc->c->o.max_reply_body)
            return stop_parser(hc, -EMSGSIZE);
        size_t want = p->content_length < RESERVE_MAX
                          ? (size_t)p->content_length + 1
                          : RESERVE_MAX;
        if (es__buf_reserve(&hc->reply.body, want))
            return stop_parser(hc, -ENOMEM);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct es__hconn *hc = p->data;
    struct es__buf *b = &hc->reply.body;
    if (len > hc->c->o.max_reply_body - b->len)
        return stop_parser(hc, -EMSGSIZE);
    return es__buf_add(b, at, len) ? stop_parser(hc, -ENOMEM) : 0;
}

/* Pauses the parser after the final reply: any byte after it is a
 * protocol error (we never pipeline), seen by the caller. */
static int on_message_complete(llhttp_t *p)
{
    struct es__hconn *hc = p->data;
    if (hc->interim) {
        hc->interim = false;
        return 0; /* the real reply follows */
    }
    hc->keep_alive = llhttp_should_keep_alive(p);
    hc->done = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_version_complete = on_version_complete,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* --- Requests on this connection ------------------------------------------ */

static void timer_stop(es_actor_t *self, struct es__hconn *hc)
{
    if (hc->timer) {
        (void)es_timer_stop(self, hc->timer);
        hc->timer = 0;
    }
}

/* Fails the request in flight (if any) and drops the connection. */
static void fail_conn(es_actor_t *self, struct es__hconn *hc, int err)
{
    struct es__creq *req = hc->req;
    hc->req = NULL;
    hc->closing = true;
    timer_stop(self, hc);
    (void)es_conn_abort(self);
    es__client_conn_detach(hc);
    if (req)
        es__creq_fail(req, err);
}

/* Writes hc->req and starts its response timer. */
static void start_req(es_actor_t *self, struct es__hconn *hc)
{
    struct es__creq *req = hc->req;
    llhttp_init(&hc->parser, HTTP_RESPONSE, &settings);
    hc->parser.data = hc;
    hc->got_bytes = hc->done = hc->keep_alive = hc->interim = false;
    hc->at_version = false;
    hc->code = CODE_OFF;
    hc->err = 0;
    hc->header_bytes = 0;
    (void)es_conn_set_idle_timeout(self, 0);
    /* Not copied: every path that frees req while the connection is open
     * aborts it in the same behaviour call, and an abort drops the queue
     * unread (fail_conn, finish_reply with bytes still queued). */
    int rc = es_conn_write_ref(self, req->data, req->len, NULL);
    if (rc == -EPIPE)
        return; /* closing: ES_MSG_CONN_CLOSED decides (maybe a retry) */
    unsigned ms =
        req->timeout_ms ? req->timeout_ms : hc->c->o.response_timeout_ms;
    if (rc == 0)
        rc = es_timer_start(self, ms, 0, ES__HTTP_TIMER_TAG, &hc->timer);
    if (rc)
        fail_conn(self, hc, rc == -ENOMEM ? -ENOMEM : -ECONNRESET);
}

/* The reply is complete: hand it over and offer the connection back. */
static void finish_reply(es_actor_t *self, struct es__hconn *hc, bool clean)
{
    struct es__creq *req = hc->req;
    timer_stop(self, hc);
    if (es__buf_reserve(&hc->reply.body, 1)) {
        fail_conn(self, hc, -ENOMEM);
        return;
    }
    hc->reply.body.data[hc->reply.body.len] = '\0';
    hc->req = NULL;
    hc->served = true;
    struct es_http_reply r = hc->reply;
    hc->reply = (struct es_http_reply){0};
    bool reusable =
        clean && hc->keep_alive && !hc->closing && es_conn_queued(self) == 0;
    struct es__creq *next = NULL;
    if (!reusable || !es__client_conn_release(hc, &next)) {
        hc->closing = true;
        /* An early reply (the request still queued): stop sending it. */
        if (es_conn_queued(self))
            (void)es_conn_abort(self);
        else
            (void)es_conn_close(self);
        es__client_conn_detach(hc);
    } else if (!next) {
        (void)es_conn_set_idle_timeout(self, hc->c->o.idle_timeout_ms);
    }
    if (next) {
        hc->req = next;
        start_req(self, hc);
    }
    es__creq_reply(req, &r);
    reply_free(&r);
}

/* Counts the digits of a status code as they arrive, over any number of
 * reads. Returns: false unless exactly three (RFC 9112 §4); llhttp checks
 * the other bytes. */
static bool code_ok(struct es__hconn *hc, const char *p, const char *end)
{
    for (; p < end && hc->code != CODE_OFF; p++) {
        if (hc->code == CODE_SP) {
            hc->code = 0;
        } else if (*p >= '0' && *p <= '9') {
            if (++hc->code > 3)
                return false;
        } else if (hc->code != 3) {
            return false;
        } else {
            hc->code = CODE_OFF;
        }
    }
    return true;
}

/* Runs the parser over [p, end), checking each status code on the way. */
static llhttp_errno_t parse(struct es__hconn *hc, const char *p,
                            const char *end)
{
    for (;;) {
        if (!code_ok(hc, p, end)) {
            stop_parser(hc, -EPROTO);
            return HPE_USER;
        }
        llhttp_errno_t e = llhttp_execute(&hc->parser, p, (size_t)(end - p));
        if (e != HPE_PAUSED || !hc->at_version)
            return e;
        hc->at_version = false;
        hc->code = CODE_SP;
        p = llhttp_get_error_pos(&hc->parser);
        llhttp_resume(&hc->parser);
        if (p == end)
            return HPE_OK;
    }
}

static void on_data(es_actor_t *self, struct es__hconn *hc, const char *data,
                    size_t len)
{
    if (!hc->req) { /* bytes nobody asked for: drop the connection */
        fail_conn(self, hc, 0);
        return;
    }
    hc->got_bytes = true;
    llhttp_errno_t e = parse(hc, data, data + len);
    if (hc->done) {
        bool extra =
            e == HPE_PAUSED && llhttp_get_error_pos(&hc->parser) != data + len;
        finish_reply(self, hc, !extra);
    } else if (e != HPE_OK) {
        fail_conn(self, hc, hc->err ? hc->err : -EPROTO);
    }
}

/* The error a closed connection's in-flight request fails with. */
static int closed_err(const struct es__hconn *hc, const es_msg_t *msg)
{
    int err = es_msg_conn_error(msg);
    if (es__client_closing(hc->c))
        return -ECANCELED;
    switch (es_msg_conn_reason(msg)) {
    case ES_CONN_REFUSED:
        return -ECONNREFUSED;
    case ES_CONN_UNREACHABLE:
        return -EHOSTUNREACH;
    case ES_CONN_CONNECT_TIMEOUT:
        return -ETIMEDOUT;
    case ES_CONN_RESOLVE_FAILED:
        return -EHOSTDOWN;
    case ES_CONN_STOPPED:
        return -ECANCELED;
    case ES_CONN_ERROR:
        return !hc->open && err < 0 ? err : -ECONNRESET;
    default:
        return -ECONNRESET;
    }
}

static void on_closed(es_actor_t *self, struct es__hconn *hc, es_msg_t *msg)
{
    int reason = es_msg_conn_reason(msg);
    hc->closing = true;
    timer_stop(self, hc);
    if (hc->req && reason == ES_CONN_PEER_CLOSED && hc->got_bytes) {
        (void)llhttp_finish(&hc->parser); /* a close-delimited body ends */
        if (hc->done) {
            finish_reply(self, hc, false);
            return;
        }
    }
    struct es__creq *req = hc->req;
    hc->req = NULL;
    /* Only a request that may run twice: the server read it, and may have
     * acted on it before it closed. */
    bool retry = req && req->idempotent && hc->served && !hc->got_bytes &&
                 !req->retried &&
                 (reason == ES_CONN_PEER_CLOSED || reason == ES_CONN_RESET);
    es__client_conn_detach(hc);
    if (!req)
        return;
    if (retry) {
        req->retried = true;
        int rc = es__client_dispatch(hc->c, req, true);
        if (rc)
            es__creq_fail(req, rc == -ENOMEM ? -ENOMEM : -ECANCELED);
        return;
    }
    es__creq_fail(req, closed_err(hc, msg));
}

/* A request handed over by the pool (this connection was idle). */
static void on_req(es_actor_t *self, struct es__hconn *hc, struct es__creq *req)
{
    if (hc->req || hc->closing || !hc->open) {
        int rc = es__client_dispatch(hc->c, req, false);
        if (rc)
            es__creq_fail(req, rc == -ENOMEM ? -ENOMEM : -ECANCELED);
        return;
    }
    hc->req = req;
    start_req(self, hc);
}

static void on_timer(es_actor_t *self, struct es__hconn *hc, es_msg_t *msg)
{
    if (es_msg_timer_tag(msg) != ES__HTTP_TIMER_TAG ||
        es_msg_timer_id(msg) != hc->timer || !hc->req)
        return;
    hc->timer = 0; /* a one-shot that fired */
    fail_conn(self, hc, -ETIMEDOUT);
}

int es__hconn_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct es__hconn *hc = es_conn_state(self);
    switch (msg->type) {
    case ES_MSG_START:
        if (es__client_conn_started(hc, es_actor_self(self)))
            es_actor_stop(self); /* the client is being freed */
        break;
    case ES_MSG_CONN_OPEN:
        hc->open = true;
        if (hc->req)
            start_req(self, hc);
        break;
    case ES_MSG_CONN_DATA:
        on_data(self, hc, msg->ptr, msg->len);
        break;
    case ES_MSG_CONN_CLOSED:
        on_closed(self, hc, msg);
        break;
    case ES_MSG_TIMER:
        on_timer(self, hc, msg);
        break;
    case ES__HTTP_MSG_REQ:
        on_req(self, hc, es_msg_take(msg));
        break;
    default:
        break;
    }
    return 0;
}

void *es__hconn_state_new(void *hc)
{
    return hc;
}

void es__hconn_state_free(void *arg)
{
    struct es__hconn *hc = arg;
    if (hc->req) /* not expected: ES_MSG_CONN_CLOSED always comes first */
        es__creq_fail(hc->req, -ECANCELED);
    hc->req = NULL;
    es__client_conn_detach(hc);
    reply_free(&hc->reply);
    es__client_conn_gone(hc);
}

/* --- Replies -------------------------------------------------------------- */

int es_http_reply_status(const es_http_reply_t *r)
{
    return r ? r->status : 0;
}

int es_http_reply_version(const es_http_reply_t *r)
{
    return r ? r->version : 0;
}

const es_http_headers_t *es_http_reply_headers(const es_http_reply_t *r)
{
    return r ? &r->headers : NULL;
}

const void *es_http_reply_body(const es_http_reply_t *r, size_t *len)
{
    if (len)
        *len = r ? r->body.len : 0;
    return r && r->body.data ? r->body.data : "";
}
