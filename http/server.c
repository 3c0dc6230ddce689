/* SPDX-License-Identifier: MIT */
/*
 * The HTTP server object: settings, routes (exact paths in a hash table,
 * prefixes longest first, frozen at start), listening addresses, counters,
 * the reference count that lets es_http_server_free() run while
 * connections are still open, and the request accessors. The connections
 * themselves are in server_conn.c.
 */
#include "server_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char default_name[] = "EventServer";

/* --- Creation and settings ------------------------------------------------ */

static void fill_defaults(es_http_server_opts_t *o)
{
    if (!o->max_url)
        o->max_url = ES_HTTP_DEFAULT_MAX_URL;
    if (!o->max_header_bytes)
        o->max_header_bytes = ES_HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (!o->max_headers)
        o->max_headers = ES_HTTP_DEFAULT_MAX_HEADERS;
    if (!o->max_body)
        o->max_body = ES_HTTP_DEFAULT_MAX_BODY;
    if (!o->header_timeout_ms)
        o->header_timeout_ms = ES_HTTP_DEFAULT_HEADER_TIMEOUT_MS;
    if (!o->body_timeout_ms)
        o->body_timeout_ms = ES_HTTP_DEFAULT_BODY_TIMEOUT_MS;
    if (!o->body_read_timeout_ms)
        o->body_read_timeout_ms = ES_HTTP_DEFAULT_BODY_READ_TIMEOUT_MS;
    if (!o->max_body_buffer)
        o->max_body_buffer = ES_HTTP_DEFAULT_MAX_BODY_BUFFER;
    if (!o->keepalive_timeout_ms)
        o->keepalive_timeout_ms = ES_HTTP_DEFAULT_KEEPALIVE_TIMEOUT_MS;
    if (!o->max_connections)
        o->max_connections = ES_HTTP_DEFAULT_MAX_CONNECTIONS;
    if (!o->write_high)
        o->write_high = ES_CONN_WRITE_HIGH_DEFAULT;
}

/* "Server: name\r\n", or "" when the name is empty. */
static int make_server_line(es_http_server_t *s, const char *name)
{
    size_t n = strlen(name);
    if (!es__http_is_field_value(name, n))
        return -EINVAL;
    s->server_line = es_malloc(n + 11);
    if (!s->server_line)
        return -ENOMEM;
    if (n) {
        memcpy(s->server_line, "Server: ", 8);
        memcpy(s->server_line + 8, name, n);
        memcpy(s->server_line + 8 + n, "\r\n", 3);
        s->server_line_len = n + 10;
    } else {
        s->server_line[0] = '\0';
    }
    s->o.server_name = NULL; /* the caller's string is not kept */
    return 0;
}

int es_http_server_new(es_runtime_t *rt, const es_http_server_opts_t *opts,
                       es_http_server_t **out)
{
    if (!rt || !out)
        return -EINVAL;
    es_http_server_t *s = es_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    static atomic_uint_fast64_t serials;
    s->kind = ES__HTTP_KIND_SERVER;
    s->serial = atomic_fetch_add_explicit(&serials, 1, memory_order_relaxed);
    atomic_init(&s->refs, 1);
    s->rt = rt;
    if (opts)
        s->o = *opts;
    fill_defaults(&s->o);
    s->nloops = es_runtime_threads(rt);
    s->loops = es_calloc(s->nloops ? s->nloops : 1, sizeof(*s->loops));
    int rc = s->loops ? make_server_line(s, opts && opts->server_name
                                                ? opts->server_name
                                                : default_name)
                      : -ENOMEM;
    if (!rc)
        rc = es__http_budget_init(s);
    if (rc) {
        es_free(s->loops);
        es_free(s->server_line);
        es_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int es_http_server_on_error(es_http_server_t *s, es_http_error_cb cb, void *arg)
{
    if (!s)
        return -EINVAL;
    if (atomic_load(&s->started))
        return -EBUSY;
    s->on_error = cb;
    s->error_arg = arg;
    return 0;
}

/* --- Routes --------------------------------------------------------------- */

static bool same_method(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static int route_check(const es_http_server_t *s, const char *method,
                       const char *path, es_http_handler_cb cb)
{
    if (!s || !path || path[0] != '/' || !cb)
        return -EINVAL;
    if (method && !es__http_is_token(method, strlen(method)))
        return -EINVAL;
    if (atomic_load(&s->started))
        return -EBUSY;
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct es__http_route *r = &s->routes[i];
        size_t len = strlen(path);
        bool prefix = path[len - 1] == '*';
        if (r->prefix == prefix && r->len == len - prefix &&
            memcmp(r->path, path, r->len) == 0 &&
            same_method(r->method, method))
            return -EEXIST;
    }
    return 0;
}

static int route_grow(es_http_server_t *s)
{
    if (s->nroutes < s->route_cap)
        return 0;
    size_t cap = s->route_cap ? 2 * s->route_cap : 8;
    struct es__http_route *r = es_realloc(s->routes, cap * sizeof(*r));
    if (!r)
        return -ENOMEM;
    s->routes = r;
    s->route_cap = cap;
    return 0;
}

static char *dup_str(const char *p, size_t n)
{
    char *d = es_malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static int route_add(es_http_server_t *s, const char *method, const char *path,
                     es_http_body_cb on_body, es_http_handler_cb cb, void *arg)
{
    int rc = route_check(s, method, path, cb);
    if (rc || (rc = route_grow(s)))
        return rc;
    size_t len = strlen(path);
    bool prefix = path[len - 1] == '*';
    struct es__http_route r = {.len = len - prefix,
                               .prefix = prefix,
                               .cb = cb,
                               .on_body = on_body,
                               .arg = arg};
    r.path = dup_str(path, r.len);
    r.method = method ? dup_str(method, strlen(method)) : NULL;
    if (!r.path || (method && !r.method)) {
        es_free(r.path);
        es_free(r.method);
        return -ENOMEM;
    }
    s->routes[s->nroutes++] = r;
    s->nstream += on_body != NULL;
    return 0;
}

int es_http_server_route(es_http_server_t *s, const char *method,
                         const char *path, es_http_handler_cb cb, void *arg)
{
    return route_add(s, method, path, NULL, cb, arg);
}

int es_http_server_route_body(es_http_server_t *s, const char *method,
                              const char *path, es_http_body_cb on_body,
                              es_http_handler_cb cb, void *arg)
{
    if (!on_body)
        return -EINVAL;
    return route_add(s, method, path, on_body, cb, arg);
}

int es_http_server_add(es_http_server_t *s, const char *path,
                       es_http_handler_cb cb, void *arg)
{
    return es_http_server_route(s, NULL, path, cb, arg);
}

/* Exact routes first, grouped by path; then prefixes, longest first. */
static int route_cmp(const void *a, const void *b)
{
    const struct es__http_route *x = a, *y = b;
    if (x->prefix != y->prefix)
        return x->prefix ? 1 : -1;
    if (x->prefix && x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return strcmp(x->path, y->path);
}

static uint32_t path_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* Sorts the routes and indexes the exact ones. */
static int routes_freeze(es_http_server_t *s)
{
    if (s->nroutes)
        qsort(s->routes, s->nroutes, sizeof(*s->routes), route_cmp);
    s->nexact = 0;
    while (s->nexact < s->nroutes && !s->routes[s->nexact].prefix)
        s->nexact++;
    size_t size = 8;
    while (size < 2 * s->nexact)
        size *= 2;
    es_free(s->hash);
    s->hash = es_calloc(size, sizeof(*s->hash));
    if (!s->hash)
        return -ENOMEM;
    s->hash_mask = size - 1;
    for (size_t i = 0; i < s->nexact; i++) {
        const struct es__http_route *r = &s->routes[i];
        if (i && strcmp(s->routes[i - 1].path, r->path) == 0)
            continue; /* the group is found through its first route */
        size_t slot = path_hash(r->path, r->len) & s->hash_mask;
        while (s->hash[slot])
            slot = (slot + 1) & s->hash_mask;
        s->hash[slot] = (uint32_t)i + 1;
    }
    return 0;
}

/* How well a route's method fits: 3 exact, 2 any, 1 GET for HEAD, 0 no. */
static int method_fit(const struct es__http_route *r, const char *method)
{
    if (!r->method)
        return 2;
    if (strcmp(r->method, method) == 0)
        return 3;
    return strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0;
}

static void allow_add(char *allow, size_t cap, const char *m)
{
    size_t n = strlen(allow), ml = strlen(m);
    for (const char *p = allow; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == ml && memcmp(p, m, l) == 0)
            return;
        p = e ? e + 2 : p + l;
    }
    if (n + ml + 3 > cap)
        return;
    if (n) {
        memcpy(allow + n, ", ", 2);
        n += 2;
    }
    memcpy(allow + n, m, ml + 1);
}

/* Routes [i, j) share one path; picks the best method fit. */
static const struct es__http_route *group_pick(const es_http_server_t *s,
                                               size_t i, size_t j,
                                               const char *method, char *allow,
                                               size_t allow_len)
{
    const struct es__http_route *best = NULL;
    int best_fit = 0;
    for (; i < j; i++) {
        const struct es__http_route *r = &s->routes[i];
        int fit = method_fit(r, method);
        if (fit > best_fit) {
            best = r;
            best_fit = fit;
        }
        if (allow && r->method) {
            allow_add(allow, allow_len, r->method);
            if (strcmp(r->method, "GET") == 0)
                allow_add(allow, allow_len, "HEAD");
        }
    }
    return best;
}

static size_t exact_group(const es_http_server_t *s, const char *path,
                          size_t len, size_t *end)
{
    size_t slot = path_hash(path, len) & s->hash_mask;
    for (; s->hash[slot]; slot = (slot + 1) & s->hash_mask) {
        size_t i = s->hash[slot] - 1;
        const struct es__http_route *r = &s->routes[i];
        if (r->len != len || memcmp(r->path, path, len) != 0)
            continue;
        size_t j = i + 1;
        while (j < s->nexact && strcmp(s->routes[j].path, r->path) == 0)
            j++;
        *end = j;
        return i;
    }
    *end = 0;
    return 0;
}

/* Visits the path groups matching path, most specific first, until one
 * has a route for method. Returns: 0 and *route; 404; 405 (allow: NULL to
 * skip building the Allow value). */
static int route_walk(const es_http_server_t *s, const char *method,
                      const char *path, const struct es__http_route **route,
                      char *allow, size_t allow_len)
{
    size_t len = strlen(path), j;
    bool matched = false;
    size_t i = exact_group(s, path, len, &j);
    if (j) {
        matched = true;
        if ((*route = group_pick(s, i, j, method, allow, allow_len)))
            return 0;
    }
    for (i = s->nexact; i < s->nroutes; i = j) {
        const struct es__http_route *r = &s->routes[i];
        for (j = i + 1; j < s->nroutes && s->routes[j].len == r->len &&
                        strcmp(s->routes[j].path, r->path) == 0;
             j++)
            ;
        if (r->len > len || memcmp(r->path, path, r->len) != 0)
            continue;
        matched = true;
        if ((*route = group_pick(s, i, j, method, allow, allow_len)))
            return 0;
    }
    return matched ? 405 : 404;
}

int es__http_route_find(const es_http_server_t *s, const char *method,
                        const char *path, const struct es__http_route **route,
                        char *allow, size_t allow_len)
{
    allow[0] = '\0';
    int rc = route_walk(s, method, path, route, NULL, 0);
    if (rc == 405) /* again, to list the methods the path has */
        rc = route_walk(s, method, path, route, allow, allow_len);
    return rc;
}

/* --- Listening ------------------------------------------------------------ */

int es_http_server_listen(es_http_server_t *s, const char *address)
{
    if (!s || !address)
        return -EINVAL;
    /* es_listen()'s own grammar, so that start cannot refuse it later. */
    int rc = es_addr_parse(address, NULL, NULL);
    if (rc)
        return rc;
    if (atomic_load(&s->started))
        return -EBUSY;
    char **a = es_realloc(s->addrs, (s->naddrs + 1) * sizeof(*a));
    if (!a)
        return -ENOMEM;
    s->addrs = a;
    a[s->naddrs] = dup_str(address, strlen(address));
    if (!a[s->naddrs])
        return -ENOMEM;
    s->naddrs++;
    return 0;
}

static void listeners_free(es_http_server_t *s)
{
    for (size_t i = 0; s->listeners && i < s->naddrs; i++) {
        if (s->listeners[i])
            es_listener_free(s->listeners[i]);
        s->listeners[i] = NULL;
    }
}

static int listen_all(es_http_server_t *s)
{
    s->listeners = es_calloc(s->naddrs, sizeof(*s->listeners));
    if (!s->listeners)
        return -ENOMEM;
    for (size_t i = 0; i < s->naddrs; i++) {
        es_listen_opts_t lo = {
            .address = s->addrs[i],
            .conn = {.behaviour = es__http_conn_behaviour,
                     .state_new = es__http_conn_state_new,
                     .state_free = es__http_conn_state_free,
                     .arg = s,
                     .write_high = s->o.write_high,
                     .idle_timeout_ms = s->o.keepalive_timeout_ms},
            .placement = ES_PLACE_ROUND_ROBIN,
            .reuseport = s->o.reuseport,
        };
        int rc = es_listen(s->rt, &lo, &s->listeners[i]);
        if (rc) {
            listeners_free(s);
            return rc;
        }
    }
    return 0;
}

int es_http_server_start(es_http_server_t *s)
{
    if (!s)
        return -EINVAL;
    if (atomic_load(&s->started))
        return -EALREADY;
    if (!s->naddrs)
        return -EINVAL;
    int rc = routes_freeze(s);
    if (rc)
        return rc;
    atomic_store(&s->started, true);
    rc = listen_all(s);
    if (rc) {
        es_free(s->listeners);
        s->listeners = NULL;
        atomic_store(&s->started, false);
    }
    return rc;
}

int es_http_server_port(const es_http_server_t *s, unsigned index)
{
    if (!s)
        return -EINVAL;
    if (!atomic_load(&s->started) || index >= s->naddrs || !s->listeners)
        return -ENOENT;
    return es_listener_port(s->listeners[index]);
}

int es_http_server_stats(const es_http_server_t *s, es_http_server_stats_t *out)
{
    if (!s || !out)
        return -EINVAL;
    *out = (es_http_server_stats_t){
        .connections = atomic_load_explicit(&s->open, memory_order_relaxed),
        .accepted = atomic_load_explicit(&s->accepted, memory_order_relaxed),
        .body_bytes =
            atomic_load_explicit(&s->budget.used, memory_order_relaxed),
        .body_bytes_peak =
            atomic_load_explicit(&s->budget.peak, memory_order_relaxed),
        .body_waits =
            atomic_load_explicit(&s->budget.waits, memory_order_relaxed),
    };
    for (unsigned i = 0; i < s->nloops; i++) {
        const struct es__http_loop *l = &s->loops[i];
        out->requests +=
            atomic_load_explicit(&l->requests, memory_order_relaxed);
        out->rejected +=
            atomic_load_explicit(&l->rejected, memory_order_relaxed);
        out->deferred_gone +=
            atomic_load_explicit(&l->deferred_gone, memory_order_relaxed);
        out->bytes_in +=
            atomic_load_explicit(&l->bytes_in, memory_order_relaxed);
        out->bytes_out +=
            atomic_load_explicit(&l->bytes_out, memory_order_relaxed);
        for (unsigned c = 0; c < ES_HTTP_STATUS_CLASSES; c++)
            out->responses[c] +=
                atomic_load_explicit(&l->responses[c], memory_order_relaxed);
        for (unsigned k = 0; k < ES_HTTP_LIMITS; k++)
            out->limit_hits[k] +=
                atomic_load_explicit(&l->limit_hits[k], memory_order_relaxed);
    }
    return 0;
}

const char *es_http_limit_name(int limit)
{
    static const char *const names[ES_HTTP_LIMITS] = {
        [ES_HTTP_LIMIT_URL] = "max_url",
        [ES_HTTP_LIMIT_HEADER_BYTES] = "max_header_bytes",
        [ES_HTTP_LIMIT_HEADERS] = "max_headers",
        [ES_HTTP_LIMIT_BODY] = "max_body",
        [ES_HTTP_LIMIT_HEADER_TIMEOUT] = "header_timeout_ms",
        [ES_HTTP_LIMIT_BODY_TIMEOUT] = "body_timeout_ms",
        [ES_HTTP_LIMIT_BODY_READ_TIMEOUT] = "body_read_timeout_ms",
        [ES_HTTP_LIMIT_BODY_BUFFER] = "max_body_buffer",
        [ES_HTTP_LIMIT_CONNECTIONS] = "max_connections",
    };
    return limit >= 0 && limit < ES_HTTP_LIMITS ? names[limit] : NULL;
}

void es__http_count_in(es_actor_t *self, size_t len)
{
    void *st = es_actor_state(self);
    es_http_server_t *srv = st;
    switch (es__http_kind(st)) {
    case ES__HTTP_KIND_CONN:
        srv = ((struct es__http_conn *)st)->srv;
        break;
    case ES__HTTP_KIND_EXCH:
        srv = ((es_http_response_t *)st)->srv;
        break;
    case ES__HTTP_KIND_REJECT:
        srv = ((struct es__http_reject *)st)->srv;
        break;
    }
    unsigned loop = (unsigned)es_actor_loop_index(self);
    es__http_add(&srv->loops[loop].bytes_in, len);
}

/* --- Freeing -------------------------------------------------------------- */

static void conn_cache_free(struct es__http_loop *l)
{
    while (l->cache) {
        struct es__http_conn *hc = l->cache;
        l->cache = hc->next_free;
        es__buf_free(&hc->in);
        es__buf_free(&hc->url);
        es__buf_free(&hc->body);
        es__http_headers_free(&hc->h);
        es_free(hc);
    }
}

void es__http_server_unref(es_http_server_t *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < s->nroutes; i++) {
        es_free(s->routes[i].method);
        es_free(s->routes[i].path);
    }
    for (size_t i = 0; i < s->naddrs; i++)
        es_free(s->addrs[i]);
    for (unsigned i = 0; i < s->nloops; i++)
        conn_cache_free(&s->loops[i]);
    es_free(s->routes);
    es_free(s->hash);
    es_free(s->addrs);
    es_free(s->listeners);
    es_free(s->loops);
    es_free(s->server_line);
    es__http_budget_fini(s);
    es_free(s);
}

/* Asks every open connection of s to close once idle (es_conn_broadcast
 * reaches the connections of every server: the message names s by its
 * serial, which a later server at the same address does not share). A
 * connection that opens later sees `freeing` (set before) at its OPEN; one
 * whose mailbox is full is busy, and its response in progress closes it
 * (`freeing` again). */
static void conns_shutdown(es_http_server_t *s)
{
    es_msg_t m = es_msg_u64(ES__HTTP_MSG_SHUTDOWN, s->serial);
    int rc = es_conn_broadcast(s->rt, es__http_conn_behaviour, &m);
    if (rc && rc != -ESHUTDOWN)
        es_log(ES_LOG_WARN,
               "http server: telling idle connections to close: %s; they "
               "close at their keep-alive timeout",
               es_strerror(rc));
}

void es_http_server_free(es_http_server_t *s)
{
    if (!s)
        return;
    atomic_store(&s->freeing, true);
    listeners_free(s);
    conns_shutdown(s);
    es__http_server_unref(s);
}

/* --- Request accessors ---------------------------------------------------- */

const char *es_http_request_method(const es_http_request_t *req)
{
    return req ? es__http_req_method(req) : NULL;
}

const char *es_http_request_target(const es_http_request_t *req)
{
    return req ? es__http_req_target(req) : NULL;
}

const char *es_http_request_path(const es_http_request_t *req)
{
    return req ? es__http_req_path(req) : NULL;
}

const char *es_http_request_query(const es_http_request_t *req)
{
    return req ? es__http_req_query(req) : NULL;
}

int es_http_request_version(const es_http_request_t *req)
{
    return req ? (es__http_req_exchange(req)->v10 ? 10 : 11) : -EINVAL;
}

const es_http_headers_t *es_http_request_headers(const es_http_request_t *req)
{
    return req ? &req->headers : NULL;
}

const char *es_http_request_header(const es_http_request_t *req,
                                   const char *name)
{
    return req ? es_http_headers_get(&req->headers, name) : NULL;
}

const void *es_http_request_body(const es_http_request_t *req, size_t *len)
{
    if (len)
        *len = req ? req->body_len : 0;
    if (!req)
        return NULL;
    return req->body ? req->body : "";
}

es_runtime_t *es_http_request_runtime(const es_http_request_t *req)
{
    if (!req)
        return NULL;
    return es__http_req_exchange(req)->srv->rt;
}

void es_http_request_set_user(es_http_request_t *req, void *user)
{
    if (req)
        req->user = user;
}

void *es_http_request_user(const es_http_request_t *req)
{
    return req ? req->user : NULL;
}
