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
 * Everything a channel holds belongs to one "hub" actor (hub.c); the
 * handlers here, on any demux thread, hand it their deferred responses.
 * Usage: http_comet [--listen ADDR] [--threads N] [--reuseport]
 *        [--nats URL] [--node NAME] [--history N] [--poll-timeout MS]
 * Try: curl 'localhost:8081/sub?ch=a' & curl -d hi 'localhost:8081/pub?ch=a'
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "comet.h"

#define CLUSTER_NAME "comet"

struct comet_opts g_opt = {"127.0.0.1:8081", 2, 0, NULL, "", 64, 30000};
es_actor_id_t g_hub;
#ifdef ES_COMET_CLUSTER
es_cluster_t *g_cluster;
#endif

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
    return n > 0 && comet_channel_name_ok(name, (size_t)n) ? 0 : -EINVAL;
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
    if (comet_cursor_parse(text, cur) != 0) {
        free(cur);
        return -EINVAL;
    }
    *out = cur;
    return 0;
}

/* free_cb of a MSG_PLAIN the hub never took: ends the parked response. */
static void plain_dropped(void *p)
{
    es_http_response_end(p);
}

/* A plain /sub costs the hub no memory of its own: the message carries only
 * the response, and the hub reads the channel from its request. */
static void sub_plain(es_http_request_t *req, es_http_response_t *res)
{
    es_http_response_defer(res, NULL, NULL); /* the hub's end() frees it */
    es_msg_t m = es_msg_ptr(MSG_PLAIN, res, 0, plain_dropped);
    if (es_send(es_http_request_runtime(req), g_hub, &m) != 0) {
        es_http_response_status(res, 503); /* the hub is gone or busy */
        es_http_response_end(res);
    }
}

static void on_sub(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    char name[MAX_CHANNEL];
    struct cursor *cur;
    (void)arg;
    if (channel_of(req, name) != 0 || cursor_of(req, &cur) != 0) {
        refuse(res, 400, "need ?ch=NAME ([A-Za-z0-9_-]) and a valid after=\n");
        return;
    }
    if (!cur) {
        sub_plain(req, res);
        return;
    }
    struct sub *s = calloc(1, sizeof(*s));
    if (!s) {
        free(cur);
        refuse(res, 503, "out of memory\n");
        return;
    }
    memcpy(s->name, name, sizeof(name));
    s->cur = cur;
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
                 (int)getpid(), (uint64_t)comet_now_us() & 0xffffff);
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

/* As many connections as this process has descriptors for: the HTTP
 * module's default (10,000) would answer the rest with 503, though a
 * process may hold ~20,000 parked polls. The reserve covers listeners,
 * the runtime's and the cluster's own descriptors. */
static unsigned max_connections(void)
{
    enum { FD_RESERVE = 64 };
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur < ES_HTTP_DEFAULT_MAX_CONNECTIONS + FD_RESERVE)
        return ES_HTTP_DEFAULT_MAX_CONNECTIONS;
    return (unsigned)(rl.rlim_cur - FD_RESERVE);
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
        (rc = comet_hub_spawn(rt, &g_hub)) != 0 ||
        (rc = es_runtime_stop_on_signal(rt, SIGINT)) != 0 ||
        (rc = es_runtime_stop_on_signal(rt, SIGTERM)) != 0 ||
        (rc = join_cluster(rt)) != 0) /* its threads inherit the mask */
        goto fail;
    es_http_server_opts_t so = {.reuseport = g_opt.reuseport,
                                .max_body = MAX_TEXT + 1,
                                .max_connections = max_connections()};
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
