/* SPDX-License-Identifier: MIT */
/*
 * The HTTP client's request building: parses the URL
 * ("http://host[:port][/path][?query]", host a name, an IPv4 address or a
 * bracketed IPv6 literal), checks the method and the caller's fields (no CR
 * or LF can reach the wire) and serializes the request once, with Host,
 * User-Agent and Content-Length, into the request object that then travels
 * between threads unchanged.
 */
#include "client_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#define MAX_HOST_LEN 253 /* the longest DNS name */
#define DEFAULT_PORT 80
#define USER_AGENT "EventServer/0.1"

/* The parts of a URL that the request needs. */
struct url {
    char host[MAX_HOST_LEN + 1]; /* lower case, without brackets */
    bool v6;
    uint16_t port;
    const char *target; /* path and query, without the fragment */
    size_t target_len;
};

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
}

static bool host_char(char ch, bool v6)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))
        return true;
    if (v6)
        return ch == ':' || ch == '.';
    return (ch >= 'g' && ch <= 'z') || ch == '-' || ch == '.' || ch == '_';
}

/* Copies the host s[0..len) into u (lower case) and checks it. */
static int parse_host(const char *s, size_t len, struct url *u)
{
    if (!len || len > MAX_HOST_LEN)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        u->host[i] = lower(s[i]);
        if (!host_char(u->host[i], u->v6))
            return -EINVAL;
    }
    u->host[len] = '\0';
    struct in6_addr a6;
    if (u->v6 && inet_pton(AF_INET6, u->host, &a6) != 1)
        return -EINVAL;
    return 0;
}

/* Parses the port s[0..len); empty means the default. */
static int parse_port(const char *s, size_t len, struct url *u)
{
    unsigned long port = 0;
    if (!len) {
        u->port = DEFAULT_PORT;
        return 0;
    }
    if (len > 5)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        port = port * 10 + (unsigned long)(s[i] - '0');
    }
    if (port == 0 || port > 65535)
        return -EINVAL;
    u->port = (uint16_t)port;
    return 0;
}

/* Splits the authority a[0..len) into host and port. */
static int parse_authority(const char *a, size_t len, struct url *u)
{
    const char *end = a + len;
    const char *host = a, *host_end, *port = NULL;
    if (memchr(a, '@', len))
        return -EINVAL; /* no user info: it would go nowhere */
    if (len && a[0] == '[') {
        const char *rb = memchr(a, ']', len);
        if (!rb)
            return -EINVAL;
        u->v6 = true;
        host = a + 1;
        host_end = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':')
                return -EINVAL;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(a, ':', len);
        host_end = colon ? colon : end;
        if (colon)
            port = colon + 1;
    }
    int rc = parse_host(host, (size_t)(host_end - host), u);
    if (rc)
        return rc;
    return parse_port(port ? port : end, port ? (size_t)(end - port) : 0, u);
}

static int parse_url(const char *url, struct url *u)
{
    static const char scheme[] = "http://";
    if (strncasecmp(url, scheme, sizeof(scheme) - 1) != 0) {
        if (strncasecmp(url, "https://", 8) == 0)
            es_log(ES_LOG_DEBUG, "http client: https is not supported");
        return -EINVAL;
    }
    const char *a = url + sizeof(scheme) - 1;
    size_t alen = strcspn(a, "/?#");
    int rc = parse_authority(a, alen, u);
    if (rc)
        return rc;
    u->target = a + alen;
    u->target_len = strcspn(u->target, "#");
    for (size_t i = 0; i < u->target_len; i++) {
        unsigned char ch = (unsigned char)u->target[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return -EINVAL; /* must be %-encoded */
    }
    return 0;
}

/* --- Fields --------------------------------------------------------------- */

static bool name_is(const char *name, const char *what)
{
    return strcasecmp(name, what) == 0;
}

/* Checks the caller's fields; notes whether Host / User-Agent are there. */
static int check_fields(const char *const *f, bool *has_host, bool *has_ua)
{
    for (size_t i = 0; f && f[i]; i += 2) {
        const char *name = f[i], *value = f[i + 1];
        if (!value || !es__http_is_token(name, strlen(name)) ||
            !es__http_is_field_value(value, strlen(value)))
            return -EINVAL;
        if (name_is(name, "Content-Length") ||
            name_is(name, "Transfer-Encoding") || name_is(name, "Connection"))
            return -EINVAL; /* the client's to write */
        if (name_is(name, "Host"))
            *has_host = true;
        if (name_is(name, "User-Agent"))
            *has_ua = true;
    }
    return 0;
}

/* Methods whose request has a meaningful body, so an empty one is sent as
 * Content-Length: 0 (RFC 9110 §8.6). */
static bool wants_length(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

static int put_host(struct es__buf *b, const struct url *u)
{
    int rc = es__buf_addf(b, u->v6 ? "Host: [%s]" : "Host: %s", u->host);
    if (!rc && u->port != DEFAULT_PORT)
        rc = es__buf_addf(b, ":%u", (unsigned)u->port);
    if (!rc)
        rc = es__buf_adds(b, "\r\n");
    return rc;
}

/* Methods that may be sent twice with the effect of once (RFC 9110
 * §9.2.2): they alone are retried after a keep-alive race. */
static bool is_idempotent(const char *method)
{
    static const char *const m[] = {"GET",    "HEAD",    "PUT",
                                    "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (strcmp(method, m[i]) == 0)
            return true;
    return false;
}

static int put_head(struct es__buf *b, const char *method, const struct url *u,
                    const es_http_client_req_t *req, bool has_host, bool has_ua)
{
    int rc = es__buf_addf(b, "%s ", method);
    if (!rc && (!u->target_len || u->target[0] != '/'))
        rc = es__buf_adds(b, "/");
    if (!rc)
        rc = es__buf_add(b, u->target, u->target_len);
    if (!rc)
        rc = es__buf_adds(b, " HTTP/1.1\r\n");
    if (!rc && !has_host)
        rc = put_host(b, u);
    if (!rc && !has_ua)
        rc = es__buf_adds(b, "User-Agent: " USER_AGENT "\r\n");
    for (size_t i = 0; !rc && req->headers && req->headers[i]; i += 2)
        rc =
            es__buf_addf(b, "%s: %s\r\n", req->headers[i], req->headers[i + 1]);
    if (!rc && (req->body_len || wants_length(method)))
        rc = es__buf_addf(b, "Content-Length: %zu\r\n", req->body_len);
    if (!rc)
        rc = es__buf_adds(b, "\r\n");
    return rc;
}

static int serialize(const es_http_client_req_t *req, const char *method,
                     const struct url *u, struct es__buf *b)
{
    bool has_host = false, has_ua = false;
    int rc = check_fields(req->headers, &has_host, &has_ua);
    if (rc)
        return rc;
    rc = es__buf_reserve(b, 256 + req->body_len);
    if (!rc)
        rc = put_head(b, method, u, req, has_host, has_ua);
    if (!rc)
        rc = es__buf_add(b, req->body, req->body_len);
    if (rc)
        es__buf_free(b);
    return rc == -EOVERFLOW ? -ENOMEM : rc;
}

/* --- Requests ------------------------------------------------------------- */

void es__creq_free(struct es__creq *req)
{
    es_free(req->data);
    es_free(req);
}

int es__creq_new(es_http_client_t *c, const es_http_client_req_t *req,
                 es_http_reply_cb on_reply, es_http_fail_cb on_fail, void *arg,
                 struct es__creq **out)
{
    struct url u = {0};
    if (!req->url || (req->body_len && !req->body) || parse_url(req->url, &u))
        return -EINVAL;
    const char *method =
        req->method ? req->method : (req->body ? "POST" : "GET");
    if (!es__http_is_token(method, strlen(method)) ||
        strcmp(method, "CONNECT") == 0)
        return -EINVAL;
    struct es__buf b = {0};
    int rc = serialize(req, method, &u, &b);
    if (rc)
        return rc;
    size_t hlen = strlen(u.host) + 1;
    struct es__creq *r = es_calloc(1, sizeof(*r) + hlen);
    if (!r) {
        es__buf_free(&b);
        return -ENOMEM;
    }
    memcpy((char *)(r + 1), u.host, hlen);
    r->host = (const char *)(r + 1);
    r->port = u.port;
    r->c = c;
    r->head = strcmp(method, "HEAD") == 0;
    r->idempotent = req->idempotent || is_idempotent(method);
    r->timeout_ms = req->timeout_ms;
    r->on_reply = on_reply;
    r->on_fail = on_fail;
    r->arg = arg;
    r->data = b.data;
    r->len = b.len;
    *out = r;
    return 0;
}
