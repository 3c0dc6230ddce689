/* SPDX-License-Identifier: MIT */
/*
 * The raw-socket HTTP client of the HTTP server tests (included by
 * http_test.h): sends exact bytes and reads whole responses with poll()
 * deadlines (status line, header fields, bodies framed by Content-Length,
 * chunked encoding or the end of the connection). It parses strictly
 * enough to catch framing mistakes of the server (every line must end in
 * CRLF, chunk sizes must be hex, a body must not run past its length) and
 * no further. The HC_* and HR_* macros cr_assert() and belong to the test
 * thread; the functions may run on other threads (they assert only when
 * memory runs out).
 */
#ifndef ES_HTTP_CLIENT_SOCK_H
#define ES_HTTP_CLIENT_SOCK_H

#include "net_test.h"

#include <ctype.h>
#include <strings.h>

/* --- Raw client ----------------------------------------------------------- */

/* A client socket and the bytes received but not consumed yet. */
struct hc {
    int fd;
    char *buf;
    size_t off, len, cap; /* unconsumed bytes are buf[off..len) */
    bool eof;             /* end of stream (or a reset) seen */
    int err;              /* -errno of the recv() that failed, or 0 */
};

static inline void hc_open(struct hc *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = tcp_client(port);
}

static inline void hc_close(struct hc *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->off = c->len = c->cap = 0;
}

/* Closes with a TCP reset instead of a FIN. */
static inline void hc_reset(struct hc *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    hc_close(c);
}

/* Sends len bytes; false if they could not all be sent in time. */
static inline bool hc_send(struct hc *c, const void *p, size_t len)
{
    return send_all(c->fd, p, len, ES_TEST_WAIT_S);
}

static inline bool hc_sends(struct hc *c, const char *s)
{
    return hc_send(c, s, strlen(s));
}

/* Sends s, failing the test if it cannot. */
#define HC_SEND(c, s)                                                          \
    cr_assert(hc_sends((c), (s)), "send failed: %s", strerror(errno))

/* Bytes waiting to be consumed. */
static inline size_t hc_avail(const struct hc *c)
{
    return c->len - c->off;
}

static inline const char *hc_data(const struct hc *c)
{
    return c->buf + c->off;
}

static inline void hc_consume(struct hc *c, size_t n)
{
    c->off += n;
    if (c->off == c->len)
        c->off = c->len = 0;
}

/* Makes room for at least `want` more bytes. */
static inline void hc_reserve(struct hc *c, size_t want)
{
    if (c->off > 0 && c->off >= c->len / 2) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->cap - c->len < want) {
        size_t cap = c->cap ? c->cap : 65536;

        while (cap - c->len < want)
            cap *= 2;
        c->buf = realloc(c->buf, cap + 1);
        cr_assert_not_null(c->buf);
        c->cap = cap;
    }
}

/*
 * Receives what is there (waiting up to `deadline` on the monotonic clock).
 * Returns: bytes received (> 0); 0 at the end of the stream (a reset counts
 * as an end, c->err tells); -ETIMEDOUT.
 */
static inline int hc_fill_until(struct hc *c, double deadline)
{
    if (c->eof)
        return 0;
    hc_reserve(c, 65536);
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);

        if (r > 0) {
            c->len += (size_t)r;
            return (int)r;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->err = r == 0 ? 0 : -errno;
            c->eof = true;
            return 0;
        }
        if (es_test_now() > deadline)
            return -ETIMEDOUT;
        poll_one(c->fd, POLLIN, 50);
    }
}

static inline int hc_fill(struct hc *c, double secs)
{
    return hc_fill_until(c, es_test_now() + secs);
}

/*
 * Waits for the end of the stream, consuming what arrives before it.
 * Returns: the count of bytes that came before the end (0 when the server
 * sent nothing more), or -ETIMEDOUT if the connection stayed open.
 */
static inline long hc_wait_eof(struct hc *c, double secs)
{
    double end = es_test_now() + secs;
    long extra = 0;

    for (;;) {
        int r;

        extra += (long)hc_avail(c);
        hc_consume(c, hc_avail(c));
        r = hc_fill_until(c, end);
        if (r == 0)
            return extra;
        if (r < 0)
            return r;
    }
}

/* True if nothing arrives (and the stream does not end) for `ms`. */
static inline bool hc_quiet_for(struct hc *c, unsigned ms)
{
    if (hc_avail(c) > 0 || c->eof)
        return false;
    return hc_fill(c, ms / 1000.0) == -ETIMEDOUT;
}

/* --- Responses ------------------------------------------------------------ */

#define HR_MAX_FIELDS 128

/* One parsed response. Header fields (and trailers, appended after them)
 * point into `head`; body is NUL-terminated. */
struct hr {
    int version; /* 10 or 11 */
    int status;
    char reason[64];
    size_t nfields, ntrailers;
    char *name[HR_MAX_FIELDS];
    char *value[HR_MAX_FIELDS];
    char *head; /* the status line and fields, as received */
    size_t head_len;
    char **tr;           /* the trailer lines (fields point in) */
    bool chunked;        /* the body came in chunks */
    bool until_close;    /* the body ran to the end of the stream */
    long content_length; /* -1 when absent */
    unsigned chunks;     /* chunks in a chunked body (last one excluded) */
    char *body;
    size_t body_len, body_cap;
};

/* Flags of hc_read_response(). */
enum {
    HR_HEAD = 1, /* the request was HEAD: no body whatever the fields say */
};

/* Releases what hc_read_response() stored in r. */
static inline void hr_release(struct hr *r)
{
    for (size_t i = 0; i < r->ntrailers; i++)
        free(r->tr[i]);
    free(r->tr);
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* The first field called name (case-insensitive), or NULL. */
static inline const char *hr_header(const struct hr *r, const char *name)
{
    for (size_t i = 0; i < r->nfields; i++)
        if (strcasecmp(r->name[i], name) == 0)
            return r->value[i];
    return NULL;
}

/* How many fields are called name. */
static inline unsigned hr_count(const struct hr *r, const char *name)
{
    unsigned n = 0;

    for (size_t i = 0; i < r->nfields; i++)
        n += strcasecmp(r->name[i], name) == 0;
    return n;
}

/* True if the comma-separated field `name` lists token (case-insensitive). */
static inline bool hr_has_token(const struct hr *r, const char *name,
                                const char *token)
{
    size_t tl = strlen(token);

    for (size_t i = 0; i < r->nfields; i++) {
        const char *v = r->value[i];

        if (strcasecmp(r->name[i], name) != 0)
            continue;
        while (*v) {
            while (*v == ' ' || *v == '\t' || *v == ',')
                v++;
            if (strncasecmp(v, token, tl) == 0 &&
                (v[tl] == '\0' || v[tl] == ',' || v[tl] == ' ' ||
                 v[tl] == '\t'))
                return true;
            while (*v && *v != ',')
                v++;
        }
    }
    return false;
}

static inline int hr_add_field(struct hr *r, char *line)
{
    char *colon = strchr(line, ':');
    char *v, *e;

    if (!colon || colon == line || r->nfields >= HR_MAX_FIELDS)
        return -EPROTO;
    for (char *p = line; p < colon; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return -EPROTO; /* field names are tokens */
    *colon = '\0';
    v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    e = v + strlen(v);
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    for (char *p = v; *p; p++)
        if ((unsigned char)*p < ' ' && *p != '\t')
            return -EPROTO;
    r->name[r->nfields] = line;
    r->value[r->nfields] = v;
    r->nfields++;
    return 0;
}

/* Parses the head in r->head (NUL-terminated, without the final CRLF). */
static inline int hr_parse_head(struct hr *r)
{
    char *line = r->head, *next;
    int maj, min, n = 0;

    next = strstr(line, "\r\n");
    if (next)
        *next = '\0';
    if (strchr(line, '\n') || strchr(line, '\r'))
        return -EPROTO;
    if (sscanf(line, "HTTP/%1d.%1d %3d%n", &maj, &min, &r->status, &n) != 3 ||
        n != 12 || (line[12] != ' ' && line[12] != '\0'))
        return -EPROTO;
    r->version = maj * 10 + min;
    snprintf(r->reason, sizeof(r->reason), "%s",
             line[12] == ' ' ? line + 13 : "");
    while (next) {
        line = next + 2;
        next = strstr(line, "\r\n");
        if (next)
            *next = '\0';
        if (strchr(line, '\n') || strchr(line, '\r'))
            return -EPROTO; /* a bare LF or CR inside the head */
        if (hr_add_field(r, line) != 0)
            return -EPROTO;
    }
    return 0;
}

/* Appends n bytes to the body. */
static inline void hr_body_add(struct hr *r, const char *p, size_t n)
{
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 256;

        while (cap < r->body_len + n + 1)
            cap *= 2;
        r->body = realloc(r->body, cap);
        cr_assert_not_null(r->body);
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

/* Waits until at least n bytes are available. 0, -ECONNRESET, -ETIMEDOUT. */
static inline int hc_need(struct hc *c, size_t n, double deadline)
{
    while (hc_avail(c) < n) {
        int rc = hc_fill_until(c, deadline);

        if (rc == 0)
            return -ECONNRESET;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Waits for a CRLF-terminated line; returns its length (without CRLF). */
static inline long hc_line(struct hc *c, double deadline)
{
    size_t scanned = 0;

    for (;;) {
        const char *d = hc_data(c);

        for (size_t i = scanned; i + 1 < hc_avail(c); i++)
            if (d[i] == '\r' && d[i + 1] == '\n')
                return (long)i;
        scanned = hc_avail(c) ? hc_avail(c) - 1 : 0;
        if (hc_need(c, hc_avail(c) + 1, deadline) != 0)
            return c->eof ? -ECONNRESET : -ETIMEDOUT;
    }
}

static inline int hc_read_head(struct hc *c, struct hr *r, double deadline)
{
    size_t scanned = 0;

    for (;;) {
        const char *d = hc_data(c);
        size_t n = hc_avail(c);

        for (size_t i = scanned; i + 3 < n; i++) {
            if (memcmp(d + i, "\r\n\r\n", 4) != 0)
                continue;
            r->head = malloc(i + 1);
            cr_assert_not_null(r->head);
            memcpy(r->head, d, i);
            r->head[i] = '\0';
            r->head_len = i;
            hc_consume(c, i + 4);
            return hr_parse_head(r);
        }
        scanned = n > 3 ? n - 3 : 0;
        if (hc_need(c, n + 1, deadline) != 0)
            return c->eof ? (n == 0 ? -ENODATA : -ECONNRESET) : -ETIMEDOUT;
    }
}

/* Reads the trailer section (after the last chunk) into r's fields. */
static inline int hc_read_trailers(struct hc *c, struct hr *r, double deadline)
{
    for (;;) {
        long n = hc_line(c, deadline);
        char *copy;

        if (n < 0)
            return (int)n;
        if (n == 0) {
            hc_consume(c, 2);
            return 0;
        }
        copy = malloc((size_t)n + 1);
        cr_assert_not_null(copy);
        memcpy(copy, hc_data(c), (size_t)n);
        copy[n] = '\0';
        hc_consume(c, (size_t)n + 2);
        r->tr = realloc(r->tr, (r->ntrailers + 1) * sizeof(*r->tr));
        cr_assert_not_null(r->tr);
        r->tr[r->ntrailers++] = copy;
        if (hr_add_field(r, copy) != 0)
            return -EPROTO;
    }
}

/* Decodes a chunked body. */
static inline int hc_read_chunked(struct hc *c, struct hr *r, double deadline)
{
    for (;;) {
        long n = hc_line(c, deadline);
        unsigned long long size = 0;
        const char *d = hc_data(c);
        long i = 0;
        int rc;

        if (n < 0)
            return (int)n;
        for (; i < n && isxdigit((unsigned char)d[i]); i++) {
            if (size >> 60)
                return -EPROTO;
            size = size * 16 + (unsigned)(isdigit((unsigned char)d[i])
                                              ? d[i] - '0'
                                              : (d[i] | 0x20) - 'a' + 10);
        }
        if (i == 0 || (i < n && d[i] != ';'))
            return -EPROTO;
        hc_consume(c, (size_t)n + 2);
        if (size == 0)
            return hc_read_trailers(c, r, deadline);
        rc = hc_need(c, (size_t)size + 2, deadline);
        if (rc != 0)
            return rc;
        d = hc_data(c);
        if (d[size] != '\r' || d[size + 1] != '\n')
            return -EPROTO;
        hr_body_add(r, d, (size_t)size);
        hc_consume(c, (size_t)size + 2);
        r->chunks++;
    }
}

/* Parses a Content-Length value strictly (digits only). */
static inline long hr_parse_cl(const char *v)
{
    long n = 0;

    if (!*v)
        return -1;
    for (; *v; v++) {
        if (!isdigit((unsigned char)*v) || n > (1L << 40))
            return -1;
        n = n * 10 + (*v - '0');
    }
    return n;
}

/*
 * Reads one whole response (a 1xx is returned like any other).
 * Returns: 0; -ENODATA if the stream ended before any byte of it;
 * -ECONNRESET if it ended in the middle; -ETIMEDOUT; -EPROTO if the
 * response is malformed. r must be released with hr_release().
 */
static inline int hc_read_response(struct hc *c, struct hr *r, int flags,
                                   double secs)
{
    double deadline = es_test_now() + secs;
    const char *te, *cl;
    int rc;

    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    rc = hc_read_head(c, r, deadline);
    if (rc != 0)
        return rc;
    te = hr_header(r, "Transfer-Encoding");
    cl = hr_header(r, "Content-Length");
    if (cl) {
        r->content_length = hr_parse_cl(cl);
        if (r->content_length < 0 || hr_count(r, "Content-Length") != 1)
            return -EPROTO;
    }
    if (te && cl)
        return -EPROTO; /* RFC 9112 6.2: a sender MUST NOT send both */
    if ((flags & HR_HEAD) || r->status < 200 || r->status == 204 ||
        r->status == 304)
        return 0;
    if (te) {
        if (strcasecmp(te, "chunked") != 0)
            return -EPROTO;
        r->chunked = true;
        return hc_read_chunked(c, r, deadline);
    }
    if (cl) {
        rc = hc_need(c, (size_t)r->content_length, deadline);
        if (rc != 0)
            return rc;
        hr_body_add(r, hc_data(c), (size_t)r->content_length);
        hc_consume(c, (size_t)r->content_length);
        return 0;
    }
    r->until_close = true;
    hr_body_add(r, "", 0);
    for (;;) {
        hr_body_add(r, hc_data(c), hc_avail(c));
        hc_consume(c, hc_avail(c));
        rc = hc_fill_until(c, deadline);
        if (rc == 0)
            return 0;
        if (rc < 0)
            return rc;
    }
}

/* Reads one response, failing the test unless it arrives whole. */
#define HC_READ(c, r, flags)                                                   \
    do {                                                                       \
        int hc_rc_ = hc_read_response((c), (r), (flags), ES_TEST_WAIT_S);      \
        cr_assert_eq(hc_rc_, 0, "reading a response: %d (%s)", hc_rc_,         \
                     strerror(-hc_rc_));                                       \
    } while (0)

/* Reads a response, skipping interim (1xx) ones; counts them in *interim. */
static inline int hc_read_final(struct hc *c, struct hr *r, int flags,
                                unsigned *interim)
{
    for (;;) {
        int rc = hc_read_response(c, r, flags, ES_TEST_WAIT_S);

        if (rc != 0 || r->status >= 200)
            return rc;
        if (interim)
            (*interim)++;
        hr_release(r);
    }
}

/*
 * One exchange on a fresh connection: sends `raw`, reads one response into
 * r, closes. Returns what hc_read_response() returned.
 */
static inline int http_once(int port, const char *raw, struct hr *r, int flags)
{
    struct hc c;
    int rc;

    hc_open(&c, port);
    if (!hc_sends(&c, raw)) {
        hc_close(&c);
        return -EPIPE;
    }
    rc = hc_read_response(&c, r, flags, ES_TEST_WAIT_S);
    hc_close(&c);
    return rc;
}

/* http_once(), failing the test unless a whole response comes back. */
#define HTTP_ONCE(port, raw, r, flags)                                         \
    do {                                                                       \
        int ho_rc_ = http_once((port), (raw), (r), (flags));                   \
        cr_assert_eq(ho_rc_, 0, "%s: %d (%s)", (raw), ho_rc_,                  \
                     strerror(-ho_rc_));                                       \
    } while (0)

/* GETs target on a fresh connection; fails the test unless a response
 * comes back. */
static inline void http_get(int port, const char *target, struct hr *r)
{
    char raw[1024];
    int rc;

    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    rc = http_once(port, raw, r, 0);
    cr_assert_eq(rc, 0, "GET %s: %d (%s)", target, rc, strerror(-rc));
}

/* Asserts the server still answers: GET target gives `status`. */
static inline void http_expect(int port, const char *target, int status)
{
    struct hr r;

    http_get(port, target, &r);
    cr_assert_eq(r.status, status, "GET %s: status %d, want %d", target,
                 r.status, status);
    hr_release(&r);
}

/* The response's body equals s. */
#define HR_BODY_IS(r, s)                                                       \
    cr_assert((r)->body_len == strlen(s) &&                                    \
                  memcmp((r)->body ? (r)->body : "", (s), strlen(s)) == 0,     \
              "body is \"%.*s\" (%zu bytes), want \"%s\"",                     \
              (int)((r)->body_len > 200 ? 200 : (r)->body_len),                \
              (r)->body ? (r)->body : "", (r)->body_len, (s))

/* Reads one response on c; fails the test unless its status is st. */
#define HC_EXPECT_STATUS(c, st)                                                \
    do {                                                                       \
        struct hr hx_r_;                                                       \
        HC_READ((c), &hx_r_, 0);                                               \
        cr_assert_eq(hx_r_.status, (st), "status %d, want %d", hx_r_.status,   \
                     (st));                                                    \
        hr_release(&hx_r_);                                                    \
    } while (0)

/* Reads one response on c; fails the test unless its body is `want`. */
#define HC_EXPECT_BODY(c, want)                                                \
    do {                                                                       \
        struct hr hx_r_;                                                       \
        HC_READ((c), &hx_r_, 0);                                               \
        HR_BODY_IS(&hx_r_, (want));                                            \
        hr_release(&hx_r_);                                                    \
    } while (0)

/* Reads one response on c; fails the test unless it has status st and the
 * body `want`. */
#define HC_EXPECT(c, st, want)                                                 \
    do {                                                                       \
        struct hr hx_r_;                                                       \
        HC_READ((c), &hx_r_, 0);                                               \
        cr_assert_eq(hx_r_.status, (st), "status %d, want %d", hx_r_.status,   \
                     (st));                                                    \
        HR_BODY_IS(&hx_r_, (want));                                            \
        hr_release(&hx_r_);                                                    \
    } while (0)

#endif /* ES_HTTP_CLIENT_SOCK_H */
