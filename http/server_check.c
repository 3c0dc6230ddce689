/* SPDX-License-Identifier: MIT */
/*
 * Strict request framing (RFC 9112) where llhttp 8.1 is lenient; the table
 * in docs/http.md says which check refuses what and which test proves it.
 * llhttp itself refuses: Content-Length with Transfer-Encoding, invalid or
 * repeated Content-Length (even two equal ones), a request coding list not
 * ending in chunked, CTLs in names and values, a bare CR in a value, a bare
 * LF after a field value, and versions other than 0.9, 1.0, 1.1 and 2.0.
 * Measured against llhttp 8.1.0, it lets through, and this file refuses:
 *   - whitespace in or before the colon of a field name, an empty name;
 *   - a bare LF ending the request line or as the empty line, CR followed
 *     by anything but LF (llhttp takes CR + any byte as the empty line),
 *     and obs-fold: the raw bytes of the head are scanned;
 *   - a missing Host in HTTP/1.1, more than one Host, a Host that is not
 *     uri-host [":" port];
 *   - HTTP/0.9 (505 at the end of the request line) and HTTP/2.0 (505);
 *   - a TAB in the request-target;
 *   - an empty Transfer-Encoding, Transfer-Encoding in HTTP/1.0, and a
 *     coding before chunked (501: the body could not be decoded);
 *   - chunk data not followed by CRLF (llhttp skips those two bytes);
 *   - chunk extensions off the grammar of RFC 9112 7.1.1 (llhttp 8.1
 *     refuses some valid ones and takes any non-CTL bytes after ";").
 * Chunk-size lines and the trailer section are read here, not by llhttp:
 * llhttp gets "<size>\r\n" for each size line and one CRLF for the whole
 * trailer section, so trailer fields never touch its framing or keep-alive
 * flags. Trailer fields that would change framing or routing
 * (Content-Length, Transfer-Encoding, Host, Connection, Expect, Upgrade)
 * are dropped, the others appended to the request's fields.
 * The llhttp callbacks are here too: they store the pieces of a request
 * in the connection's state and enforce the size limits as they come
 * (414, 431, 413); the head, each trailer section start, the end of each
 * chunk's data, each chunk end and each message end pause llhttp, so that
 * the driver (server_conn.c) checks the head before the body is read and
 * takes one request at a time.
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
    /* llhttp 8.1 lets a TAB through in the target (RFC 9112 3.2: 400). */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)at[i] <= ' ' || at[i] == 0x7f)
            return fail(hc, 400);
    /* max_url (414) and max_header_bytes (431) are enforced on the raw
     * bytes before llhttp reads them (es__http_scan_head()): llhttp never
     * gets a target byte past max_url, so the buffer stays bounded. */
    return es__buf_add(&hc->url, at, n) ? fail(hc, 500) : 0;
}

/* llhttp marks a request line without a version as HTTP/0.9 here and then
 * waits for fields; answer now (as nginx does), not at the header
 * deadline. */
static int cb_url_done(llhttp_t *p)
{
    return p->http_major == 0 && p->http_minor == 9 ? fail(p->data, 505) : 0;
}

static int cb_field(llhttp_t *p, const char *at, size_t n)
{
    struct es__http_conn *hc = p->data;
    if (over_head(hc, n))
        return fail(hc,
                    es__http_limit_hit(hc, ES_HTTP_LIMIT_HEADER_BYTES, 431));
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
        return fail(hc,
                    es__http_limit_hit(hc, ES_HTTP_LIMIT_HEADER_BYTES, 431));
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
    if (status)
        return fail(hc, status);
    /* The end of a chunk's data: llhttp 8.1 skips the next two bytes
     * whatever they are, so the driver checks them for CRLF first. */
    if ((p->flags & F_CHUNKED) && p->content_length == 0) {
        hc->pause = ES__PAUSE_DATA_END;
        return HPE_PAUSED;
    }
    return 0;
}

static int cb_chunk_header(llhttp_t *p)
{
    struct es__http_conn *hc = p->data;
    if (p->content_length == 0) {
        hc->pause = ES__PAUSE_TRAILER;
        return HPE_PAUSED;
    }
    if (p->content_length > hc->bs.limit - hc->bs.seen)
        return fail(hc, es__http_body_too_big(hc));
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
    .on_url_complete = cb_url_done,
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

/* One byte of the head after `prev`: true if it makes the head bad (a bare
 * LF, CR followed by other than LF, obs-fold). */
static bool head_byte_bad(char prev, char c)
{
    if (prev == '\r')
        return c != '\n'; /* llhttp 8.1 takes CR + any byte as the end */
    return c == '\n' || (prev == '\n' && (c == ' ' || c == '\t'));
}

/* Follows the request line as llhttp 8.1 splits it: CRLFs before it, the
 * method, one or more SP, the target up to SP, CR or LF. Returns: true if
 * c takes the target past max_url. */
static bool target_byte(struct es__http_scan *s, char c, size_t max_url)
{
    switch (s->line) {
    case ES__LINE_START:
        if (c != '\r' && c != '\n')
            s->line = ES__LINE_METHOD;
        return false;
    case ES__LINE_METHOD:
        if (c == ' ')
            s->line = ES__LINE_SPACES;
        return false;
    case ES__LINE_SPACES:
        if (c == ' ')
            return false;
        s->line = ES__LINE_TARGET;
        /* fall through */
    case ES__LINE_TARGET:
        if (c == ' ' || c == '\r' || c == '\n') {
            s->line = ES__LINE_REST;
            return false;
        }
        return ++s->target > max_url;
    }
    return false;
}

size_t es__http_scan_head(struct es__http_scan *s, size_t max_url,
                          const char *p, size_t n, int *status)
{
    *status = 0;
    for (size_t i = 0; i < n; s->prev = p[i++]) {
        if (head_byte_bad(s->prev, p[i])) {
            *status = 400;
            return i;
        }
        if (s->line != ES__LINE_REST && target_byte(s, p[i], max_url)) {
            *status = 414;
            return i;
        }
        /* The empty line ends the head: the scan need not look further. */
        if (p[i] == '\r' && s->prev == '\n' && i + 1 < n && p[i + 1] == '\n') {
            s->prev = '\n';
            return i + 2;
        }
    }
    return n;
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
        return es__http_limit_hit(hc, ES_HTTP_LIMIT_HEADERS, 431);
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
        if (es__http_name_eq(name, 4, "host")) {
            hc->nhost = bump(hc->nhost);
            if (!es__http_is_host(value, f->value_len))
                return 400;
        }
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

/* One coding of a Transfer-Encoding list: 0 (chunked), 1 (another). */
static int coding_of(const char *v, size_t len)
{
    const char *semi = memchr(v, ';', len);
    size_t n = semi ? (size_t)(semi - v) : len;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return es__http_name_eq(v, n, "chunked") ? 0 : 1;
}

/*
 * llhttp checks that the last coding is chunked; the ones before it are
 * codings we cannot undo (501, RFC 9112 6.1), or chunked again (400).
 * Returns: 0, 400 or 501.
 */
static int check_codings(const struct es_http_headers *h)
{
    int status = 0, last = -1;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!es__http_name_eq(h->buf + h->f[i].name, h->f[i].name_len,
                              "transfer-encoding"))
            continue;
        const char *v = h->buf + h->f[i].value, *end = v + h->f[i].value_len;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *e = comma ? comma : end;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            if (v < e) { /* empty list elements are allowed */
                if (last == 0)
                    status = 400;
                else if (last == 1 && !status)
                    status = 501;
                last = coding_of(v, (size_t)(e - v));
            }
            v = comma ? comma + 1 : end;
        }
    }
    return status;
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
    int codings = hc->nte ? check_codings(&hc->h) : 0;
    if (codings)
        return codings;
    if ((p->flags & F_CONTENT_LENGTH) &&
        p->content_length > hc->srv->o.max_body)
        return es__http_limit_hit(hc, ES_HTTP_LIMIT_BODY, 413);
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

/* --- Chunk-size lines and trailer fields ---------------------------------- */

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static const char *skip_bws(const char *q, const char *end)
{
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    return q;
}

static const char *skip_token(const char *q, const char *end)
{
    while (q < end && es__http_is_token(q, 1))
        q++;
    return q;
}

/* quoted-string (RFC 9110 5.6.4) at q (a DQUOTE): qdtext and quoted-pair
 * take obs-text (%x80-FF), as the RFC allows; no CTL but HTAB, no DEL.
 * Returns: the byte after its closing DQUOTE, or NULL. */
static const char *skip_quoted(const char *q, const char *end)
{
    for (q++; q < end; q++) {
        if (*q == '"')
            return q + 1;
        if (*q == '\\' && ++q == end)
            return NULL;
        unsigned char c = (unsigned char)*q;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return NULL;
    }
    return NULL;
}

/* chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 * with name = token, val = token / quoted-string (RFC 9112 7.1.1): the
 * model of tests/fuzz/fuzz_chunk.c. obs-text only inside a quoted-string.
 * Returns: true if [q, end) is one. */
static bool chunk_ext_ok(const char *q, const char *end)
{
    while (q < end) {
        q = skip_bws(q, end);
        if (q == end || *q != ';')
            return false;
        const char *name = skip_bws(q + 1, end);
        if ((q = skip_token(name, end)) == name)
            return false;
        const char *eq = skip_bws(q, end);
        if (eq == end || *eq != '=')
            continue; /* a name alone; BWS must lead to another ";" */
        const char *val = skip_bws(eq + 1, end);
        if (val < end && *val == '"') {
            if (!(q = skip_quoted(val, end)))
                return false;
        } else if ((q = skip_token(val, end)) == val) {
            return false;
        }
    }
    return true;
}

long es__http_chunk_line(const char *p, size_t n,
                         char out[ES__HTTP_CHUNK_OUT_MAX], size_t *out_len)
{
    size_t max = n < ES__HTTP_CHUNK_LINE_MAX ? n : ES__HTTP_CHUNK_LINE_MAX;
    const char *nl = memchr(p, '\n', max);
    if (!nl)
        return n < ES__HTTP_CHUNK_LINE_MAX ? 0 : -1;
    size_t len = (size_t)(nl - p) + 1, zeros = 0, hex;
    if (len < 3 || nl[-1] != '\r')
        return -1; /* no size, or a bare LF */
    const char *cr = nl - 1;
    while (p + zeros < cr && p[zeros] == '0')
        zeros++;
    for (hex = zeros; p + hex < cr && is_hex(p[hex]);)
        hex++;
    /* 1*HEXDIG; leading zeros are no overflow, 16 digits fit 64 bits. */
    if (hex == 0 || hex - zeros > 16)
        return -1;
    const char *q = p + hex;
    if (q < cr && !chunk_ext_ok(q, cr))
        return -1; /* extensions are checked, then ignored */
    size_t digits = hex - zeros ? hex - zeros : 1;
    memcpy(out, p + hex - digits, digits);
    memcpy(out + digits, "\r\n", 2);
    *out_len = digits + 2;
    return (long)len;
}

/* Appends one trailer field to hc->h and checks it like a head field. */
static int trailer_add(struct es__http_conn *hc, const char *name,
                       size_t name_len, const char *value, size_t value_len)
{
    while (value_len && (*value == ' ' || *value == '\t')) {
        value++;
        value_len--;
    }
    hc->field_bytes += name_len + value_len;
    if (hc->url.len + hc->field_bytes > hc->srv->o.max_header_bytes)
        return es__http_limit_hit(hc, ES_HTTP_LIMIT_HEADER_BYTES, 431);
    struct es_http_headers *h = &hc->h;
    if (es__http_headers_name(h, name, name_len) ||
        es__http_headers_name_done(h) ||
        es__http_headers_value(h, value, value_len) ||
        es__http_headers_value_done(h))
        return 500;
    return es__http_check_field(hc, true);
}

int es__http_trailer_line(struct es__http_conn *hc, const char *p, size_t n,
                          size_t *used)
{
    size_t max = hc->srv->o.max_header_bytes;
    const char *nl = memchr(p, '\n', n < max ? n : max);
    *used = 0;
    if (!nl)
        return n < max
                   ? 0
                   : es__http_limit_hit(hc, ES_HTTP_LIMIT_HEADER_BYTES, 431);
    size_t len = (size_t)(nl - p) + 1;
    if (len < 2 || nl[-1] != '\r')
        return 400; /* bare LF */
    if (p[0] == ' ' || p[0] == '\t')
        return 400; /* obs-fold, or whitespace before the first field */
    *used = len;
    if (len == 2)
        return 0; /* the empty line: the end of the trailer section */
    const char *colon = memchr(p, ':', len - 2);
    if (!colon)
        return 400;
    return trailer_add(hc, p, (size_t)(colon - p), colon + 1,
                       (size_t)(nl - 1 - colon - 1));
}
