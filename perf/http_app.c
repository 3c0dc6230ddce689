/* SPDX-License-Identifier: MIT */
/*
 * The benchmark application (see http_app.h). /plaintext and /echo answer
 * inside the handler. /hold defers its response and hands it, as a
 * struct holder, to the hold actor of the calling demux thread (one per
 * thread, spawned at start), which starts a timer and ends the response
 * when it fires. Everything about one holder happens on that one thread:
 * the handler, the hold actor and the holder's on_gone callback all run on
 * the connection's demux thread, so the holder's fields need no lock.
 *
 * Each holder's response is ended exactly once, and the holder freed
 * exactly once, whichever way it goes:
 *   - the timer fires: end (200 "held"), free;
 *   - the client leaves first: on_gone sends the hold actor a cancel, which
 *     stops the timer, ends (nothing is sent) and frees. If on_gone could
 *     not send, the timer does it later;
 *   - the hold actor stops (runtime shutdown): it ends (503) and frees every
 *     holder it still has; a hold message it never received is dropped, and
 *     the message's free callback ends and frees the holder instead.
 * A holder that is ended while a cancel is still on its way stays listed
 * until the cancel arrives, so the cancel never reads freed memory.
 */
#include "http_app.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum {
    MSG_HOLD = ES_MSG_USER + 1, /* ptr: a struct holder to park */
    MSG_CANCEL,                 /* u64: the holder whose client left */
    /* Parked holds a hold actor may be sent at once: its mailbox is a
     * counter, not storage, so a high limit costs nothing until used. */
    HOLD_MAILBOX = 1u << 20,
    MAX_HOLD_MS = 86400000, /* one day */
};

static const char hello[] = "Hello, World!";
static const char held[] = "held";
static const char stopping[] = "stopping\n";

struct hb_app {
    es_runtime_t *rt;
    atomic_long parked;
    unsigned nloops;
    es_actor_id_t holders[]; /* hold actor of each demux thread */
};

/* One deferred /hold response. */
struct holder {
    es_http_response_t *res;
    hb_app_t *app;
    struct holder *prev, *next; /* in the hold actor's list */
    es_timer_id_t timer;        /* 0 until the timer runs */
    uint32_t ms;
    uint16_t loop;
    uint8_t ended;          /* es_http_response_end() was called */
    uint8_t cancel_pending; /* a MSG_CANCEL for it is on its way */
};

/* The state of a hold actor: the holders it owns. */
struct hold_list {
    struct holder *first;
};

/* --- holders -------------------------------------------------------------- */

static void holder_end(struct holder *h, int status)
{
    if (h->ended)
        return;
    h->ended = 1;
    if (h->timer)
        atomic_fetch_sub_explicit(&h->app->parked, 1, memory_order_relaxed);
    if (status == 200) {
        es_http_response_header(h->res, "Content-Type", "text/plain");
        es_http_response_body_ref(h->res, (void *)held, sizeof(held) - 1, NULL);
    } else {
        es_http_response_status(h->res, status);
        es_http_response_body_ref(h->res, (void *)stopping,
                                  sizeof(stopping) - 1, NULL);
    }
    /* -ECONNRESET (the client left) still releases the response. */
    (void)es_http_response_end(h->res);
}

static void list_add(struct hold_list *l, struct holder *h)
{
    h->prev = NULL;
    h->next = l->first;
    if (l->first)
        l->first->prev = h;
    l->first = h;
}

/* Frees h once ended, unless a cancel still has to find it. */
static void holder_release(struct hold_list *l, struct holder *h)
{
    if (h->cancel_pending)
        return;
    if (h->prev)
        h->prev->next = h->next;
    else
        l->first = h->next;
    if (h->next)
        h->next->prev = h->prev;
    es_free(h);
}

/* Free callback of a MSG_HOLD that was never delivered. */
static void holder_drop(void *ptr)
{
    struct holder *h = ptr;
    holder_end(h, 503);
    es_free(h);
}

/* The client of a parked response left: ask the hold actor to finish. */
static void holder_gone(es_http_response_t *res, void *arg)
{
    struct holder *h = arg;
    es_msg_t m = es_msg_u64(MSG_CANCEL, (uint64_t)(uintptr_t)h);
    if (es_send(h->app->rt, h->app->holders[h->loop], &m) == 0)
        h->cancel_pending = 1;
}

/* --- the hold actor ------------------------------------------------------- */

static void hold_park(es_actor_t *self, struct hold_list *l, es_msg_t *msg)
{
    struct holder *h = es_msg_take(msg);
    list_add(l, h);
    if (h->ended) { /* the handler could not defer it */
        holder_release(l, h);
        return;
    }
    if (es_timer_start(self, h->ms, 0, (uint64_t)(uintptr_t)h, &h->timer)) {
        h->timer = 0;
        holder_end(h, 503);
        holder_release(l, h);
        return;
    }
    atomic_fetch_add_explicit(&h->app->parked, 1, memory_order_relaxed);
}

static void hold_cancel(es_actor_t *self, struct hold_list *l, es_msg_t *msg)
{
    struct holder *h = (struct holder *)(uintptr_t)msg->inl.u64[0];
    h->cancel_pending = 0;
    if (!h->ended && h->timer)
        (void)es_timer_stop(self, h->timer);
    holder_end(h, 200); /* nothing is sent: the client has left */
    holder_release(l, h);
}

static void hold_stop(struct hold_list *l)
{
    while (l->first) {
        struct holder *h = l->first;
        holder_end(h, 503);
        h->cancel_pending = 0; /* a cancel after STOP is never delivered */
        holder_release(l, h);
    }
}

static int hold_actor(es_actor_t *self, es_msg_t *msg)
{
    struct hold_list *l = es_actor_state(self);
    struct holder *h;
    switch (msg->type) {
    case MSG_HOLD:
        hold_park(self, l, msg);
        break;
    case MSG_CANCEL:
        hold_cancel(self, l, msg);
        break;
    case ES_MSG_TIMER:
        h = (struct holder *)(uintptr_t)es_msg_timer_tag(msg);
        holder_end(h, 200);
        holder_release(l, h);
        break;
    case ES_MSG_STOP:
        hold_stop(l);
        break;
    }
    return 0;
}

/* --- handlers ------------------------------------------------------------- */

static void on_plaintext(es_http_request_t *req, es_http_response_t *res,
                         void *arg)
{
    es_http_response_header(res, "Content-Type", "text/plain");
    es_http_response_body_ref(res, (void *)hello, sizeof(hello) - 1, NULL);
}

static void on_echo(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    size_t len;
    const void *body = es_http_request_body(req, &len);
    const char *type = es_http_request_header(req, "Content-Type");
    if (es_http_response_header(res, "Content-Type",
                                type ? type : "application/octet-stream") ||
        es_http_response_body(res, body, len))
        es_http_response_status(res, 500);
}

static void answer(es_http_response_t *res, int status, const char *text)
{
    es_http_response_status(res, status);
    es_http_response_header(res, "Content-Type", "text/plain");
    es_http_response_body(res, text, strlen(text));
}

/* Reads ?ms=N. Returns: N, or -EINVAL. */
static long hold_ms(const es_http_request_t *req)
{
    char v[16], *end;
    if (es_http_query_get(es_http_request_query(req), "ms", v, sizeof(v)) <= 0)
        return -EINVAL;
    errno = 0;
    unsigned long ms = strtoul(v, &end, 10);
    return errno || *end || v[0] == '-' || ms > MAX_HOLD_MS ? -EINVAL
                                                            : (long)ms;
}

static void on_hold(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    hb_app_t *app = arg;
    long ms = hold_ms(req);
    int loop = es_runtime_current_loop(app->rt);
    if (ms < 0 || loop < 0) {
        answer(res, 400, "usage: /hold?ms=N\n");
        return;
    }
    struct holder *h = es_calloc(1, sizeof(*h));
    if (!h) {
        answer(res, 503, "out of memory\n");
        return;
    }
    *h = (struct holder){
        .res = res, .app = app, .ms = (uint32_t)ms, .loop = (uint16_t)loop};
    /* The hold actor runs on this thread, so it cannot see h before this
     * handler returns, and defer() comes after a send that cannot fail. */
    es_msg_t m = es_msg_ptr(MSG_HOLD, h, sizeof(*h), holder_drop);
    if (es_send(app->rt, app->holders[loop], &m)) {
        es_free(h);
        answer(res, 503, "busy\n");
        return;
    }
    if (es_http_response_defer(res, holder_gone, h)) {
        h->ended = 1; /* the hold actor just frees it */
        answer(res, 500, "defer failed\n");
    }
}

/* --- setup ---------------------------------------------------------------- */

static int spawn_holders(hb_app_t *app)
{
    for (unsigned i = 0; i < app->nloops; i++) {
        struct hold_list *l = es_calloc(1, sizeof(*l));
        if (!l)
            return -ENOMEM;
        es_spawn_opts_t so = {.behaviour = hold_actor,
                              .state = l,
                              .state_free = es_free,
                              .loop = ES_LOOP((int)i),
                              .mailbox_capacity = HOLD_MAILBOX};
        int rc = es_spawn(app->rt, &so, &app->holders[i]);
        if (rc) {
            es_free(l);
            return rc;
        }
    }
    return 0;
}

static int add_routes(hb_app_t *app, es_http_server_t *s)
{
    int rc = es_http_server_route(s, "GET", "/plaintext", on_plaintext, app);
    if (!rc)
        rc = es_http_server_route(s, "POST", "/echo", on_echo, app);
    if (!rc)
        rc = es_http_server_route(s, "GET", "/hold", on_hold, app);
    return rc;
}

int hb_app_new(es_runtime_t *rt, es_http_server_t *s, hb_app_t **out)
{
    unsigned n = es_runtime_threads(rt);
    hb_app_t *app = es_calloc(1, sizeof(*app) + n * sizeof(app->holders[0]));
    if (!app)
        return -ENOMEM;
    app->rt = rt;
    app->nloops = n;
    atomic_init(&app->parked, 0);
    /* Hold actors already spawned stop with the runtime. */
    int rc = spawn_holders(app);
    if (!rc)
        rc = add_routes(app, s);
    if (rc) {
        es_free(app);
        return rc;
    }
    *out = app;
    return 0;
}

long hb_app_parked(const hb_app_t *app)
{
    return atomic_load_explicit(&app->parked, memory_order_relaxed);
}

void hb_app_free(hb_app_t *app)
{
    es_free(app);
}
