/* SPDX-License-Identifier: MIT */
/*
 * A long-poll push server, the seed's CComet on the HTTP module:
 *   GET /sub?ch=NAME        waits (a deferred response) until something is
 *                           published on NAME, or 30 s pass (then 204)
 *   POST /pub?ch=NAME       body = message: completes every waiting /sub
 *                           of NAME with it; answers how many got it
 * The waiting responses belong to one "hub" actor; handlers on any demux
 * thread hand it theirs with a message, and it finishes them (publish,
 * timeout) with es_http_response_end(). A subscriber that leaves is told to
 * the hub by on_gone; the hub still ends that response, which then only
 * frees it. Usage: http_comet [PORT] (default 8081), Ctrl-C to stop.
 * Try: curl 'localhost:8081/sub?ch=a' & curl -d hi 'localhost:8081/pub?ch=a'
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eventserver/eventserver.h>
#include <eventserver/http.h>

#define SUB_TIMEOUT_MS 30000
#define MAX_CHANNEL 64

enum { MSG_SUB = ES_MSG_USER, MSG_PUB };

/* One parked /sub. */
struct sub {
    struct sub *next;
    es_http_response_t *res;
    char ch[MAX_CHANNEL];
    es_timer_id_t timer;
};

/* A /pub on its way to the hub. */
struct pub {
    es_http_response_t *res; /* deferred too: answered by the hub */
    char ch[MAX_CHANNEL];
    size_t len;
    char text[]; /* the message */
};

struct hub {
    struct sub *subs; /* every waiting subscriber, newest first */
};

static es_actor_id_t g_hub;

/* free_cb of a MSG_SUB / MSG_PUB the hub never took (it had stopped): the
 * parked response must still be ended, or it would never be freed. */
static void sub_dropped(void *p)
{
    struct sub *s = p;
    es_http_response_end(s->res);
    free(s);
}

static void pub_dropped(void *p)
{
    struct pub *pb = p;
    es_http_response_end(pb->res);
    free(pb);
}

/* Removes and returns the sub whose timer is `id` (or NULL). */
static struct sub *take_by_timer(struct hub *h, es_timer_id_t id)
{
    for (struct sub **p = &h->subs; *p; p = &(*p)->next) {
        if ((*p)->timer == id) {
            struct sub *s = *p;
            *p = s->next;
            return s;
        }
    }
    return NULL;
}

/* Completes every subscriber of pb->ch with pb's text. Returns: how many
 * were still there to receive it. */
static int publish(es_actor_t *self, struct hub *h, const struct pub *pb)
{
    int delivered = 0;
    for (struct sub **p = &h->subs; *p;) {
        struct sub *s = *p;
        if (strcmp(s->ch, pb->ch) != 0) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        es_timer_stop(self, s->timer);
        es_http_response_header(s->res, "Content-Type", "text/plain");
        es_http_response_body(s->res, pb->text, pb->len);
        delivered += es_http_response_end(s->res) == 0;
        free(s);
    }
    return delivered;
}

static int hub_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct hub *h = es_actor_state(self);
    switch (msg->type) {
    case MSG_SUB: {
        struct sub *s = es_msg_take(msg);
        if (es_timer_start(self, SUB_TIMEOUT_MS, 0, 0, &s->timer) != 0) {
            es_http_response_status(s->res, 503);
            es_http_response_end(s->res);
            free(s);
            break;
        }
        s->next = h->subs;
        h->subs = s;
        break;
    }
    case MSG_PUB: {
        struct pub *pb = es_msg_take(msg);
        char answer[32];
        int n = publish(self, h, pb);
        snprintf(answer, sizeof(answer), "%d\n", n);
        es_http_response_body(pb->res, answer, strlen(answer));
        es_http_response_end(pb->res);
        free(pb);
        break;
    }
    case ES_MSG_TIMER: { /* a subscriber waited long enough */
        struct sub *s = take_by_timer(h, es_msg_timer_id(msg));
        if (s) {
            es_http_response_status(s->res, 204);
            es_http_response_end(s->res);
            free(s);
        }
        break;
    }
    case ES_MSG_STOP: /* the runtime stops: release what is parked */
        while (h->subs) {
            struct sub *s = h->subs;
            h->subs = s->next;
            es_http_response_end(s->res);
            free(s);
        }
        break;
    }
    return 0;
}

/* A subscriber left: nothing to do here, the hub's end() will only free
 * its response. A server with many idle channels would tell the hub. */
static void sub_gone(es_http_response_t *res, void *arg)
{
    (void)res;
    (void)arg;
}

static int channel_of(const es_http_request_t *req, char ch[MAX_CHANNEL])
{
    return es_http_query_get(es_http_request_query(req), "ch", ch, MAX_CHANNEL);
}

static void on_sub(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    struct sub *s = calloc(1, sizeof(*s));
    (void)arg;
    if (!s || channel_of(req, s->ch) <= 0) {
        free(s);
        es_http_response_status(res, 400);
        es_http_response_body(res, "need ?ch=NAME\n", 14);
        return;
    }
    s->res = res;
    es_http_response_defer(res, sub_gone, NULL);
    es_msg_t m = es_msg_ptr(MSG_SUB, s, sizeof(*s), sub_dropped);
    if (es_send(es_http_request_runtime(req), g_hub, &m) != 0) {
        free(s); /* the hub is gone or busy: answer now */
        es_http_response_status(res, 503);
        es_http_response_end(res);
    }
}

static void on_pub(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    size_t len;
    const char *text = es_http_request_body(req, &len);
    struct pub *pb = malloc(sizeof(*pb) + len);
    (void)arg;
    if (!pb || channel_of(req, pb->ch) <= 0) {
        free(pb);
        es_http_response_status(res, 400);
        es_http_response_body(res, "need ?ch=NAME\n", 14);
        return;
    }
    pb->res = res;
    pb->len = len;
    memcpy(pb->text, text, len);
    es_http_response_defer(res, NULL, NULL);
    es_msg_t m = es_msg_ptr(MSG_PUB, pb, 0, pub_dropped);
    if (es_send(es_http_request_runtime(req), g_hub, &m) != 0) {
        free(pb);
        es_http_response_status(res, 503);
        es_http_response_end(res);
    }
}

int main(int argc, char **argv)
{
    char address[32];
    static struct hub hub;
    es_runtime_t *rt;
    es_http_server_t *srv;
    int rc;

    snprintf(address, sizeof(address), "127.0.0.1:%s",
             argc > 1 ? argv[1] : "8081");
    if ((rc = es_runtime_new(&(es_runtime_opts_t){.threads = 2}, &rt)) != 0)
        goto fail;
    es_spawn(rt, &(es_spawn_opts_t){.behaviour = hub_behaviour, .state = &hub},
             &g_hub);
    es_runtime_stop_on_signal(rt, SIGINT);
    es_runtime_stop_on_signal(rt, SIGTERM);
    if ((rc = es_http_server_new(rt, NULL, &srv)) != 0)
        goto fail;
    es_http_server_route(srv, "GET", "/sub", on_sub, NULL);
    es_http_server_route(srv, "POST", "/pub", on_pub, NULL);
    es_http_server_listen(srv, address);
    if ((rc = es_runtime_start(rt)) != 0 ||
        (rc = es_http_server_start(srv)) != 0)
        goto fail;
    printf("http_comet: listening on %s\n", address);
    fflush(stdout);
    es_runtime_wait(rt);
    es_http_server_free(srv);
    es_runtime_free(rt);
    return 0;
fail:
    fprintf(stderr, "http_comet: %s\n", es_strerror(rc));
    return 1;
}
