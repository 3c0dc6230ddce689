/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the chunk-size, chunk-data and trailer checks of the
 * HTTP server, through the real path (llhttp, http/server_check.c and
 * http/server_conn.c on a running server, fuzz_util.c). The input is the
 * body of "POST /echo" with Transfer-Encoding: chunked, followed by
 * "GET /". A strict decoder of the chunked grammar (RFC 9112 §7.1), written
 * here as the model, decides what the server may accept:
 *   - if the server answers the POST with 200, the model must accept the
 *     body, and the echoed body and trailer fields must be the model's
 *     (trailers that would change framing or routing are dropped);
 *   - if the model's chunked body ends exactly where the input ends, the
 *     GET that follows must be answered too: trailers never close the
 *     connection (RFC 9110 §6.5.1).
 */
#include "fuzz_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char head[] = "POST /echo HTTP/1.1\r\nHost: a\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n";
static const char tail[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_server_init();
    return 0;
}

/* --- The model: RFC 9112 §7.1 ----------------------------------------- */

struct model {
    const uint8_t *p;
    size_t n, at;
    struct fz_buf body;
    struct fz_buf trailers; /* "name: value\n" per kept field */
};

static bool tchar(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool hexval(uint8_t c, unsigned *v)
{
    if (c >= '0' && c <= '9')
        *v = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        *v = (unsigned)((c | 0x20) - 'a' + 10);
    else
        return false;
    return true;
}

static bool eat(struct model *m, const char *s)
{
    size_t l = strlen(s);
    if (m->n - m->at < l || memcmp(m->p + m->at, s, l) != 0)
        return false;
    m->at += l;
    return true;
}

/* CRLF, and nothing else, ends a framing line. */
static bool crlf(struct model *m)
{
    return eat(m, "\r\n");
}

static void bws(struct model *m)
{
    while (m->at < m->n && (m->p[m->at] == ' ' || m->p[m->at] == '\t'))
        m->at++;
}

static size_t token(struct model *m)
{
    size_t s = m->at;
    while (m->at < m->n && tchar(m->p[m->at]))
        m->at++;
    return m->at - s;
}

static bool quoted(struct model *m)
{
    if (!eat(m, "\""))
        return false;
    while (m->at < m->n) {
        uint8_t c = m->p[m->at++];
        if (c == '"')
            return true;
        if (c == '\\') {
            if (m->at == m->n)
                return false;
            c = m->p[m->at++];
            if (c != '\t' && (c < 0x20 || c == 0x7f))
                return false;
        } else if (c != '\t' && (c < 0x20 || c == 0x7f)) {
            return false;
        }
    }
    return false;
}

/* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) */
static bool chunk_ext(struct model *m)
{
    for (;;) {
        size_t save = m->at;
        bws(m);
        if (!eat(m, ";")) {
            m->at = save;
            return true;
        }
        bws(m);
        if (!token(m))
            return false;
        size_t before = m->at;
        bws(m);
        if (!eat(m, "=")) {
            m->at = before;
            continue;
        }
        bws(m);
        if (m->at < m->n && m->p[m->at] == '"' ? !quoted(m) : !token(m))
            return false;
    }
}

/* chunk-size [chunk-ext] CRLF; *size gets the size (capped). */
static bool chunk_line(struct model *m, uint64_t *size)
{
    unsigned v;
    size_t digits = 0;
    *size = 0;
    while (m->at < m->n && hexval(m->p[m->at], &v)) {
        if (*size >> 56)
            return false; /* beyond any body limit: refused either way */
        *size = *size * 16 + v;
        m->at++;
        digits++;
    }
    if (!digits)
        return false;
    return chunk_ext(m) && crlf(m);
}

static bool trailer_kept(const uint8_t *name, size_t len)
{
    static const char *const dropped[] = {"content-length", "transfer-encoding",
                                          "host",           "connection",
                                          "expect",         "upgrade"};
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        if (strlen(dropped[i]) == len &&
            strncasecmp((const char *)name, dropped[i], len) == 0)
            return false;
    return true;
}

/* field-line = field-name ":" OWS field-value OWS, then CRLF */
static bool trailer_line(struct model *m)
{
    const uint8_t *name = m->p + m->at;
    size_t nlen = token(m);
    if (!nlen || !eat(m, ":"))
        return false;
    bws(m);
    size_t vs = m->at, ve = m->at;
    while (m->at < m->n) {
        uint8_t c = m->p[m->at];
        if (c == '\r' || (c < 0x20 && c != '\t') || c == 0x7f)
            break;
        m->at++;
        if (c != ' ' && c != '\t')
            ve = m->at;
    }
    if (!crlf(m))
        return false;
    if (trailer_kept(name, nlen)) {
        fz_buf_add(&m->trailers, name, nlen);
        fz_buf_add(&m->trailers, ": ", 2);
        fz_buf_add(&m->trailers, m->p + vs, ve - vs);
        fz_buf_add(&m->trailers, "\n", 1);
    }
    return true;
}

/* Decodes a whole chunked body and trailer section; m->at ends after it. */
static bool model_decode(struct model *m)
{
    for (;;) {
        uint64_t size;
        if (!chunk_line(m, &size))
            return false;
        if (size == 0)
            break;
        if (size > m->n - m->at)
            return false;
        fz_buf_add(&m->body, m->p + m->at, (size_t)size);
        m->at += (size_t)size;
        if (!eat(m, "\r\n"))
            return false;
    }
    while (m->at == m->n || m->p[m->at] != '\r')
        if (!trailer_line(m))
            return false;
    return crlf(m);
}

/* --- The server's answers --------------------------------------------- */

struct reply {
    int status;
    const char *body;
    size_t body_len;
};

/* Splits the next response off r[*at..len); false if there is none. */
static bool next_reply(const struct fz_buf *r, size_t *at, struct reply *out)
{
    if (r->len - *at < 12)
        return false;
    const char *p = r->p + *at;
    size_t left = r->len - *at;
    if (memcmp(p, "HTTP/1.1 ", 9) != 0)
        return false;
    const char *end = memmem(p, left, "\r\n\r\n", 4);
    if (!end)
        fz_fail("a response without the end of its head");
    const char *cl =
        memmem(p, (size_t)(end - p) + 2, "\r\nContent-Length: ", 18);
    if (!cl)
        fz_fail("a response without Content-Length");
    size_t len = strtoul(cl + 18, NULL, 10), hl = (size_t)(end + 4 - p);
    if (len > left - hl)
        fz_fail("a response shorter than its Content-Length");
    out->status = atoi(p + 9);
    out->body = end + 4;
    out->body_len = len;
    *at += hl + len;
    return true;
}

/* The echo of the POST: its fields after the request's own two, body. */
static void check_echo(const struct reply *r, const struct model *m)
{
    static const char fields[] = "POST /echo\nHost: a\n"
                                 "Transfer-Encoding: chunked\n";
    size_t fl = sizeof(fields) - 1;
    const char *sep = memmem(r->body, r->body_len, "\n\n", 2);
    if (!sep || r->body_len < fl || memcmp(r->body, fields, fl) != 0)
        fz_fail("the echo does not start with the request's fields");
    size_t tl = (size_t)(sep + 1 - (r->body + fl));
    if (tl != m->trailers.len ||
        (tl && memcmp(r->body + fl, m->trailers.p, tl) != 0))
        fz_fail("trailer fields differ from the model: %.*s", (int)tl,
                r->body + fl);
    size_t bl = r->body_len - (size_t)(sep + 2 - r->body);
    if (bl != m->body.len || (bl && memcmp(sep + 2, m->body.p, bl) != 0))
        fz_fail("decoded body differs from the model (%zu vs %zu bytes)", bl,
                m->body.len);
}

static void check(const struct fz_buf *resp, struct model *m, bool ok,
                  size_t input_len)
{
    size_t at = 0;
    struct reply post, get;
    if (!next_reply(resp, &at, &post) || post.status != 200)
        return; /* refused: the model does not say what must be accepted */
    if (!ok)
        fz_fail("200 for a chunked body the grammar refuses (byte %zu)", m->at);
    check_echo(&post, m);
    if (m->at != input_len)
        return; /* the GET is not where the next request starts */
    if (!next_reply(resp, &at, &get) || get.status != 200)
        fz_fail("the request after a chunked body was not answered");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t hl = sizeof(head) - 1, tl = sizeof(tail) - 1;
    uint8_t *req = malloc(hl + size + tl);
    if (!req)
        fz_fail("out of memory");
    memcpy(req, head, hl);
    memcpy(req + hl, data, size);
    memcpy(req + hl + size, tail, tl);
    /* The model reads what the server reads: the input, then the GET. */
    struct model m = {.p = req + hl, .n = size + tl};
    bool ok = model_decode(&m);
    struct fz_buf resp = {0};
    fz_server_exchange(req, hl + size + tl, NULL, 0, &resp);
    check(&resp, &m, ok, size);
    fz_buf_free(&resp);
    fz_buf_free(&m.body);
    fz_buf_free(&m.trailers);
    free(req);
    return 0;
}
