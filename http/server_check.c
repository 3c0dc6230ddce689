/* SPDX-License-Identifier: MIT */
/*
 * Strict request framing (RFC 9112) where llhttp 8.1 is lenient. llhttp
 * itself refuses: Content-Length with Transfer-Encoding, invalid or
 * repeated Content-Length (even two equal ones), a request coding list not
 * ending in chunked, bad chunk sizes and chunk-data not followed by CRLF,
 * CTLs in field values, a bare CR, most bare LFs, bad names (apart from the
 * cases below) and versions other than 0.9, 1.0, 1.1 and 2.0. Measured
 * against llhttp 8.1.0, it lets through, and this file refuses:
 *   - whitespace between a field name and its colon, and an empty name
 *     (the name is checked to be a token);
 *   - a bare LF ending the request line or the empty line after the fields
 *     or trailers, and obs-fold (a line starting with SP/HTAB): the raw
 *     bytes of the head and of the trailer section are scanned;
 *   - a missing Host in HTTP/1.1, and more than one Host;
 *   - HTTP/0.9 and HTTP/2.0 request lines (505);
 *   - an empty Transfer-Encoding, and Transfer-Encoding in HTTP/1.0 (a
 *     faulty framing: refused, so the connection closes).
 * The llhttp callbacks are here too: they store the pieces of a request
 * in the connection's state and enforce the size limits as they come
 * (414, 431, 413); the head, each trailer section start, each chunk end and
 * each message end pause llhttp, so that the driver (server_conn.c) checks
 * the head before the body is read and takes one request at a time.
 * Trailer fields that would change framing or routing (Content-Length,
 * Transfer-Encoding, Host, Connection, Expect, Upgrade) are dropped, not
 * appended to the request's fields.
 */
#include "server_private.h"

#include <string.h>

/* --- llhttp callbacks: limits as the pieces come -------------------------- */

static int fail(struct es__http_conn *hc, int status)
{
    hc->reject = status;
    return HPE_USER;
}

/* Counts more bytes of names and values; true past the limit. */
static bool over_head(struct es__http_conn *hc, size_t more)
{
    hc->field_bytes += more;
    return hc->url.len + hc->field_bytes > hc->srv->o.max_header_bytes;
}

static int cb_url(llhttp_t *p, const char *at, size_t n)
{
    struct es__http_conn *hc = p->data;
    if (hc->url.len + n > hc->srv->o.max_url)
        return fail(hc, 414);
    if (hc->url.len + n + hc->field_bytes > hc->srv->o.max_header_bytes)
        return fail(hc, 431);
    return es__buf_add(&hc->url, at, n) ? fail(hc, 500) : 0;
}

static int cb_field(llhttp_t *p, const char *at, size_t n)
{
    struct es__http_conn *hc = p->data;
    if (over_head(hc, n))
        return fail(hc, 431);
    return es__http_headers_name(&hc->h, at, n) ? fail(hc, 500) : 0;
}

static int cb_field_done(llhttp_t *p)
{
    struct es__http_conn *hc = p->data;
    return es__http_headers_name_done(&hc->h) ? fail(hc, 500) : 0;
}

static int cb_value(llhttp_t *p, const char *at, size_t n)
{
    struct es__http_conn *hc = p->data;
    if (over_head(hc, n))
        return fail(hc, 431);
    return es__http_headers_value(&hc->h, at, n) ? fail(hc, 500) : 0;
}

static int cb_value_done(llhttp_t *p)
{
    struct es__http_conn *hc = p->data;
    if (es__http_headers_value_done(&hc->h))
        return fail(hc, 500);
    int status = es__http_check_field(hc, hc->phase == ES__PH_TRAILER);
    return status ? fail(hc, status) : 0;
}

static int cb_headers_done(llhttp_t *p)
{
    struct es__http_conn *hc = p->data;
    hc->pause = ES__PAUSE_HEADERS;
    return HPE_PAUSED;
}

static int cb_body(llhttp_t *p, const char *at, size_t n)
{
    struct es__http_conn *hc = p->data;
    int status = es__http_body_data(hc, at, n); /* server_body.c */
    return status ? fail(hc, status) : 0;
}

static int cb_chunk_header(llhttp_t *p)
{
    struct es__http_conn *hc = p->data;
    if (p->content_length == 0) {
        hc->pause = ES__PAUSE_TRAILER;
        return HPE_PAUSED;
    }
    if (p->content_length > hc->bs.limit - hc->bs.seen)
        return fail(hc, 413);
    return 0;
}

static int cb_chunk_done(llhttp_t *p)
{
    struct es__http_conn *hc = p->data;
    if (hc->phase != ES__PH_BODY)
        return 0;
    hc->pause = ES__PAUSE_CHUNK;
    return HPE_PAUSED;
}

static int cb_message_done(llhttp_t *p)
{
    struct es__http_conn *hc = p->data;
    hc->pause = ES__PAUSE_MESSAGE;
    return HPE_PAUSED;
}

const llhttp_settings_t es__http_settings = {
    .on_url = cb_url,
    .on_header_field = cb_field,
    .on_header_field_complete = cb_field_done,
    .on_header_value = cb_value,
    .on_header_value_complete = cb_value_done,
    .on_headers_complete = cb_headers_done,
    .on_body = cb_body,
    .on_chunk_header = cb_chunk_header,
    .on_chunk_complete = cb_chunk_done,
    .on_message_complete = cb_message_done,
};

bool es__http_scan_head(struct es__http_conn *hc, const char *p, size_t n)
{
    if (!n)
        return true;
    if (hc->scan_prev == '\n' && (p[0] == ' ' || p[0] == '\t'))
        return false;
    const char *end = p + n, *q = p;
    while ((q = memchr(q, '\n', (size_t)(end - q)))) {
        char before = q > p ? q[-1] : hc->scan_prev;
        if (before != '\r')
            return false; /* bare LF */
        if (q + 1 < end && (q[1] == ' ' || q[1] == '\t'))
            return false; /* obs-fold */
        q++;
    }
    hc->scan_prev = end[-1];
    return true;
}

/* Fields of a trailer section that are not appended to the request. */
static bool trailer_dropped(const char *name, size_t len)
{
    static const char *const names[] = {"content-length", "transfer-encoding",
                                        "host",           "connection",
                                        "expect",         "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (es__http_name_eq(name, len, names[i]))
            return true;
    return false;
}

static uint8_t bump(uint8_t v)
{
    return v < 2 ? (uint8_t)(v + 1) : v;
}

static bool is_100_continue(const char *v, size_t len)
{
    return es__http_name_eq(v, len, "100-continue");
}

int es__http_check_field(struct es__http_conn *hc, bool trailer)
{
    struct es_http_headers *h = &hc->h;
    const struct es__http_field *f = &h->f[h->n - 1];
    const char *name = h->buf + f->name, *value = h->buf + f->value;
    if (!es__http_is_token(name, f->name_len) ||
        !es__http_is_field_value(value, f->value_len))
        return 400;
    if (++hc->nfields > hc->srv->o.max_headers)
        return 431;
    if (trailer) {
        if (trailer_dropped(name, f->name_len)) {
            h->len = f->name;
            h->n--;
        }
        return 0;
    }
    /* The fields framing depends on, told apart by length first. */
    switch (f->name_len) {
    case 4:
        if (es__http_name_eq(name, 4, "host"))
            hc->nhost = bump(hc->nhost);
        break;
    case 6:
        if (es__http_name_eq(name, 6, "expect"))
            hc->expect = is_100_continue(value, f->value_len) &&
                                 hc->expect != ES__EXPECT_OTHER
                             ? ES__EXPECT_CONTINUE
                             : ES__EXPECT_OTHER;
        break;
    case 14:
        if (es__http_name_eq(name, 14, "content-length"))
            hc->ncl = bump(hc->ncl);
        break;
    case 17:
        if (es__http_name_eq(name, 17, "transfer-encoding"))
            hc->nte = bump(hc->nte);
        break;
    }
    return 0;
}

int es__http_check_head(struct es__http_conn *hc)
{
    const llhttp_t *p = &hc->p;
    if (p->http_major != 1 || p->http_minor > 1)
        return 505;
    if (hc->nhost > 1 || (p->http_minor == 1 && hc->nhost == 0))
        return 400;
    if (hc->nte && (p->http_minor == 0 || !(p->flags & F_CHUNKED)))
        return 400;
    if ((p->flags & F_CONTENT_LENGTH) &&
        p->content_length > hc->srv->o.max_body)
        return 413;
    if (hc->expect == ES__EXPECT_OTHER && p->http_minor == 1)
        return 417;
    return 0;
}

int es__http_error_status(const llhttp_t *p, llhttp_errno_t err)
{
    if (err == HPE_PAUSED_H2_UPGRADE)
        return 505;
    if (err == HPE_INVALID_VERSION) {
        /* llhttp 8.1 says "Invalid HTTP version" for a version it does
         * not know, and other things for a malformed version field. */
        const char *why = llhttp_get_error_reason(p);
        if (why && strcmp(why, "Invalid HTTP version") == 0)
            return 505;
    }
    return 400;
}
