/* SPDX-License-Identifier: MIT */
/*
 * What the HTTP server and client share: header-field lists built from
 * llhttp's pieces, the public header accessors, status reason phrases, query
 * lookup, the cached Date value, a growable buffer and character-class
 * checks for field names and values.
 */
#include "http_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* --- Growable buffer -------------------------------------------------------
 */

int es__buf_reserve(struct es__buf *b, size_t more)
{
    if (more > SIZE_MAX / 2 - b->len)
        return -EOVERFLOW;
    size_t need = b->len + more;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = es_realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int es__buf_add(struct es__buf *b, const void *data, size_t len)
{
    int rc = es__buf_reserve(b, len);
    if (rc)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int es__buf_adds(struct es__buf *b, const char *s)
{
    return es__buf_add(b, s, strlen(s));
}

int es__buf_addf(struct es__buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(small))
        return es__buf_add(b, small, (size_t)n);
    int rc = es__buf_reserve(b, (size_t)n + 1);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void es__buf_free(struct es__buf *b)
{
    es_free(b->data);
    *b = (struct es__buf){0};
}

/* --- Header lists --------------------------------------------------------
 */

void es__http_headers_init(struct es_http_headers *h)
{
    *h = (struct es_http_headers){0};
}

void es__http_headers_clear(struct es_http_headers *h)
{
    h->len = 0;
    h->n = 0;
    h->part = ES__HDR_NONE;
}

void es__http_headers_free(struct es_http_headers *h)
{
    es_free(h->buf);
    es_free(h->f);
    es__http_headers_init(h);
}

static int put_bytes(struct es_http_headers *h, const char *at, size_t len)
{
    if (len > UINT32_MAX - 1 - h->len)
        return -EOVERFLOW;
    uint32_t need = h->len + (uint32_t)len + 1; /* room for a NUL */
    if (need > h->cap) {
        uint64_t cap = h->cap ? h->cap : 256;
        while (cap < need)
            cap *= 2;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        char *p = es_realloc(h->buf, (size_t)cap);
        if (!p)
            return -ENOMEM;
        h->buf = p;
        h->cap = (uint32_t)cap;
    }
    if (len)
        memcpy(h->buf + h->len, at, len);
    h->len += (uint32_t)len;
    return 0;
}

static int open_field(struct es_http_headers *h)
{
    if (h->n == h->fcap) {
        uint32_t fcap = h->fcap ? h->fcap * 2 : 8;
        struct es__http_field *f = es_realloc(h->f, fcap * sizeof(*f));
        if (!f)
            return -ENOMEM;
        h->f = f;
        h->fcap = fcap;
    }
    h->f[h->n] = (struct es__http_field){.name = h->len};
    h->part = ES__HDR_NAME;
    return 0;
}

int es__http_headers_name(struct es_http_headers *h, const char *at, size_t len)
{
    if (h->part != ES__HDR_NAME) {
        int rc = open_field(h);
        if (rc)
            return rc;
    }
    return put_bytes(h, at, len);
}

int es__http_headers_name_done(struct es_http_headers *h)
{
    if (h->part != ES__HDR_NAME) {
        int rc = open_field(h);
        if (rc)
            return rc;
    }
    struct es__http_field *f = &h->f[h->n];
    f->name_len = h->len - f->name;
    int rc = put_bytes(h, "", 0);
    if (rc)
        return rc;
    h->buf[h->len++] = '\0';
    f->value = h->len;
    h->part = ES__HDR_VALUE;
    return 0;
}

int es__http_headers_value(struct es_http_headers *h, const char *at,
                           size_t len)
{
    if (h->part != ES__HDR_VALUE) {
        int rc = es__http_headers_name_done(h);
        if (rc)
            return rc;
    }
    return put_bytes(h, at, len);
}

int es__http_headers_value_done(struct es_http_headers *h)
{
    if (h->part != ES__HDR_VALUE) {
        int rc = es__http_headers_name_done(h);
        if (rc)
            return rc;
    }
    struct es__http_field *f = &h->f[h->n];
    while (h->len > f->value &&
           (h->buf[h->len - 1] == ' ' || h->buf[h->len - 1] == '\t'))
        h->len--;
    f->value_len = h->len - f->value;
    int rc = put_bytes(h, "", 0);
    if (rc)
        return rc;
    h->buf[h->len++] = '\0';
    h->n++;
    h->part = ES__HDR_NONE;
    return 0;
}

int es__http_headers_add(struct es_http_headers *h, const char *name,
                         const char *value)
{
    int rc = es__http_headers_name(h, name, strlen(name));
    if (!rc)
        rc = es__http_headers_name_done(h);
    if (!rc)
        rc = es__http_headers_value(h, value, strlen(value));
    if (!rc)
        rc = es__http_headers_value_done(h);
    return rc;
}

bool es__http_name_eq(const char *a, size_t a_len, const char *b)
{
    for (size_t i = 0; i < a_len; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (!y)
            return false;
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y + 32);
        if (x != y)
            return false;
    }
    return b[a_len] == '\0';
}

const char *es_http_headers_get(const es_http_headers_t *h, const char *name)
{
    if (!h || !name)
        return NULL;
    for (uint32_t i = 0; i < h->n; i++)
        if (es__http_name_eq(h->buf + h->f[i].name, h->f[i].name_len, name))
            return h->buf + h->f[i].value;
    return NULL;
}

size_t es_http_headers_count(const es_http_headers_t *h)
{
    return h ? h->n : 0;
}

int es_http_headers_at(const es_http_headers_t *h, size_t i, const char **name,
                       const char **value)
{
    if (!h || i >= h->n)
        return -ERANGE;
    if (name)
        *name = es__http_field_name(h, (uint32_t)i);
    if (value)
        *value = es__http_field_value(h, (uint32_t)i);
    return 0;
}

/* --- Character classes (RFC 9110 §5.6.2, §5.5) ---------------------------
 */

/* tchar (RFC 9110 §5.6.2): digits, letters and !#$%&'*+-.^_`|~ */
static const bool tchar[256] = {
    ['0' ... '9'] = true, ['a' ... 'z'] = true, ['A' ... 'Z'] = true,
    ['!'] = true,         ['#'] = true,         ['$'] = true,
    ['%'] = true,         ['&'] = true,         ['\''] = true,
    ['*'] = true,         ['+'] = true,         ['-'] = true,
    ['.'] = true,         ['^'] = true,         ['_'] = true,
    ['`'] = true,         ['|'] = true,         ['~'] = true,
};

bool es__http_is_token(const char *s, size_t len)
{
    if (!len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!tchar[(unsigned char)s[i]])
            return false;
    return true;
}

bool es__http_is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* --- Host (RFC 9112 §3.2, RFC 3986 §3.2.2) ------------------------------- */

/* reg-name characters: unreserved and sub-delims, but not ',' (below). */
static const bool regchar[256] = {
    ['0' ... '9'] = true, ['a' ... 'z'] = true, ['A' ... 'Z'] = true,
    ['-'] = true,         ['.'] = true,         ['_'] = true,
    ['~'] = true,         ['!'] = true,         ['$'] = true,
    ['&'] = true,         ['\''] = true,        ['('] = true,
    [')'] = true,         ['*'] = true,         ['+'] = true,
    [';'] = true,         ['='] = true,
};

static bool is_hexdig(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* reg-name = *( unreserved / pct-encoded / sub-delims ); an IPv4address is
 * one too. */
static bool is_reg_name(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (len - i < 3 || !is_hexdig(s[i + 1]) || !is_hexdig(s[i + 2]))
                return false;
            i += 2;
        } else if (!regchar[(unsigned char)s[i]]) {
            return false;
        }
    }
    return true;
}

/* IP-literal without its brackets: IPv6address / IPvFuture. */
static bool is_ip_literal(const char *s, size_t len)
{
    char buf[64];
    struct in6_addr a;
    if (len > 0 && (s[0] | 0x20) == 'v') {
        size_t i = 1;
        while (i < len && is_hexdig(s[i]))
            i++;
        if (i == 1 || i + 1 >= len || s[i] != '.')
            return false;
        for (i++; i < len; i++)
            if (!regchar[(unsigned char)s[i]] && s[i] != ':')
                return false;
        return true;
    }
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

bool es__http_is_host(const char *s, size_t len)
{
    const char *end = s + len, *host_end;
    if (len && s[0] == '[') {
        host_end = memchr(s, ']', len);
        if (!host_end || !is_ip_literal(s + 1, (size_t)(host_end - s - 1)))
            return false;
        host_end++;
    } else {
        host_end = memchr(s, ':', len);
        if (!host_end)
            host_end = end;
        if (!is_reg_name(s, (size_t)(host_end - s)))
            return false;
    }
    if (host_end == end)
        return true;
    if (*host_end != ':')
        return false;
    /* port = *DIGIT (RFC 3986 §3.2.3), its value at most 65535. */
    unsigned long port = 0;
    for (const char *p = host_end + 1; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (unsigned long)(*p - '0');
        if (port > 65535)
            return false;
    }
    return true;
}

/* --- Status phrases, query strings, Date ---------------------------------
 */

const char *es_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..len) (%XX, '+' as space) into out; returns the decoded
 * length, writing at most out_len - 1 bytes and a NUL. Malformed %-escapes
 * are kept as they are. */
static size_t query_decode(const char *s, size_t len, char *out, size_t out_len,
                           bool *overflow)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int hi, lo;
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < len &&
                   (hi = hex_digit((unsigned char)s[i + 1])) >= 0 &&
                   (lo = hex_digit((unsigned char)s[i + 2])) >= 0) {
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (out && n + 1 < out_len)
            out[n] = c;
        else if (out)
            *overflow = true;
        n++;
    }
    if (out && out_len)
        out[n < out_len ? n : out_len - 1] = '\0';
    return n;
}

static bool key_matches(const char *s, size_t len, const char *key)
{
    char buf[256];
    bool overflow = false;
    size_t n = query_decode(s, len, buf, sizeof(buf), &overflow);
    return !overflow && n == strlen(key) && memcmp(buf, key, n) == 0;
}

int es_http_query_get(const char *query, const char *key, char *out,
                      size_t out_len)
{
    if (!query || !key || !out || !out_len)
        return -EINVAL;
    const char *p = query;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq ? (size_t)(eq - p) : plen;
        if (key_matches(p, klen, key)) {
            const char *v = eq ? eq + 1 : p + plen;
            size_t vlen = (size_t)(p + plen - v);
            bool overflow = false;
            size_t n = query_decode(v, vlen, out, out_len, &overflow);
            if (overflow)
                return -EOVERFLOW;
            return n > INT32_MAX ? -EOVERFLOW : (int)n;
        }
        if (!end)
            break;
        p = end + 1;
    }
    out[0] = '\0';
    return -ENOENT;
}

/* Each thread formats the date at most once a second. */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
    time_t at;
    char text[ES__HTTP_DATE_LEN + 1];
} date_cache;

size_t es__http_date(char out[ES__HTTP_DATE_LEN + 1])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
                                       "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME_COARSE, &now);
    if (now.tv_sec != date_cache.at || !date_cache.text[0]) {
        struct tm tm;
        char text[64];
        gmtime_r(&now.tv_sec, &tm);
        snprintf(text, sizeof(text), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        memcpy(date_cache.text, text, ES__HTTP_DATE_LEN);
        date_cache.text[ES__HTTP_DATE_LEN] = '\0';
        date_cache.at = now.tv_sec;
    }
    memcpy(out, date_cache.text, ES__HTTP_DATE_LEN + 1);
    return ES__HTTP_DATE_LEN;
}
