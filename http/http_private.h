/* SPDX-License-Identifier: MIT */
/*
 * Shared by the HTTP server and client (http/): the header-field list that
 * llhttp's callbacks fill piece by piece, the cached Date value and a small
 * growable byte buffer. Built only on the public headers.
 */
#ifndef EVENTSERVER_HTTP_PRIVATE_H
#define EVENTSERVER_HTTP_PRIVATE_H

#include <eventserver/http.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One field: offsets into the owning list's buffer (both NUL-terminated). */
struct es__http_field {
    uint32_t name, value;
    uint32_t name_len, value_len;
};

/*
 * A header list. llhttp hands a name or value over in pieces when it spans
 * two reads, so fields are built by appending: name pieces, name_done,
 * value pieces, value_done. Names and values live in one buffer; all
 * memory is released by es__http_headers_free() (or kept for reuse by
 * es__http_headers_clear()).
 */
struct es_http_headers {
    char *buf;
    uint32_t len, cap;
    struct es__http_field *f;
    uint32_t n, fcap;
    uint8_t part; /* ES__HDR_NONE / _NAME / _VALUE: what is being built */
};

enum { ES__HDR_NONE, ES__HDR_NAME, ES__HDR_VALUE };

/* An empty list that owns no memory. */
void es__http_headers_init(struct es_http_headers *h);
/* Forgets every field but keeps the memory. */
void es__http_headers_clear(struct es_http_headers *h);
/* Releases the memory; h is empty afterwards. */
void es__http_headers_free(struct es_http_headers *h);

/* Appends a piece of the current field's name (opening a field if none is
 * open). Returns: 0, -ENOMEM, -EOVERFLOW past 4 GiB. */
int es__http_headers_name(struct es_http_headers *h, const char *at,
                          size_t len);
/* Ends the current name. Returns: 0, -ENOMEM. */
int es__http_headers_name_done(struct es_http_headers *h);
/* Appends a piece of the current value. Returns: 0, -ENOMEM, -EOVERFLOW. */
int es__http_headers_value(struct es_http_headers *h, const char *at,
                           size_t len);
/* Ends the current value (trailing blanks trimmed) and commits the field.
 * Returns: 0, -ENOMEM. */
int es__http_headers_value_done(struct es_http_headers *h);
/* Adds a whole field. Returns: 0, -ENOMEM, -EOVERFLOW. */
int es__http_headers_add(struct es_http_headers *h, const char *name,
                         const char *value);
/* Bytes of names and values stored (for limits). */
static inline size_t es__http_headers_bytes(const struct es_http_headers *h)
{
    return h->len;
}

/* The i-th field's name / value (i < h->n). */
static inline const char *es__http_field_name(const struct es_http_headers *h,
                                              uint32_t i)
{
    return h->buf + h->f[i].name;
}
static inline const char *es__http_field_value(const struct es_http_headers *h,
                                               uint32_t i)
{
    return h->buf + h->f[i].value;
}

/* ASCII case-insensitive equality of a and b (b NUL-terminated), len of a. */
bool es__http_name_eq(const char *a, size_t a_len, const char *b);

/*
 * Writes the current time as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37
 * GMT", 29 characters and a NUL) into out. The string is formatted once per
 * second per thread. Returns: 29. Thread: any.
 */
#define ES__HTTP_DATE_LEN 29
size_t es__http_date(char out[ES__HTTP_DATE_LEN + 1]);

/* A growable byte buffer (es_malloc'd). */
struct es__buf {
    char *data;
    size_t len, cap;
};

/* Makes room for `more` bytes. Returns: 0, -ENOMEM, -EOVERFLOW. */
int es__buf_reserve(struct es__buf *b, size_t more);
/* Appends len bytes. Returns: 0, -ENOMEM, -EOVERFLOW. */
int es__buf_add(struct es__buf *b, const void *data, size_t len);
/* Appends a NUL-terminated string. Returns: as es__buf_add(). */
int es__buf_adds(struct es__buf *b, const char *s);
/* Appends a formatted string. Returns: 0, -ENOMEM, -EINVAL. */
int es__buf_addf(struct es__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Releases the memory. */
void es__buf_free(struct es__buf *b);

/*
 * True if s[0..len) is a token (RFC 9110 §5.6.2: a header name or method).
 */
bool es__http_is_token(const char *s, size_t len);
/*
 * True if a field value is free of CR, LF, NUL and other control characters
 * except HTAB (RFC 9110 §5.5).
 */
bool es__http_is_field_value(const char *s, size_t len);
/*
 * True if s[0..len) is a valid Host value (RFC 9112 §3.2): uri-host
 * [ ":" port ], uri-host an IP-literal in brackets or a reg-name (RFC 3986
 * §3.2.2, which covers IPv4 and may be empty), port *DIGIT up to 65535.
 * A ',' is refused although RFC 3986 allows it in a reg-name: it is what
 * two Host lines combined into one look like (RFC 9110 §5.3).
 */
bool es__http_is_host(const char *s, size_t len);

#endif /* EVENTSERVER_HTTP_PRIVATE_H */
