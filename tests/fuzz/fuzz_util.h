/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the libFuzzer targets of tests/fuzz: failing loudly
 * (abort, so libFuzzer saves the input), a monotonic clock, and a real
 * HTTP server started once per process on a Unix socket, with an exchange
 * function that sends an input over a fresh connection in several writes
 * (each one read by the server on its own before the next is sent) and
 * collects every byte of the responses until the server closes.
 */
#ifndef ES_FUZZ_UTIL_H
#define ES_FUZZ_UTIL_H

#include <eventserver/http.h>

#include <stddef.h>
#include <stdint.h>

/* How long any single wait of a target may last before it is a hang. */
#define FZ_WAIT_MS 5000

/* Prints "fuzz: <what>" and aborts (libFuzzer then saves the input). */
_Noreturn void fz_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Monotonic milliseconds. */
uint64_t fz_now_ms(void);

/* Growable byte buffer for responses. */
struct fz_buf {
    char *p;
    size_t len, cap;
};

void fz_buf_add(struct fz_buf *b, const void *p, size_t n);
void fz_buf_free(struct fz_buf *b);

/*
 * Starts the shared runtime and HTTP server once (routes: GET "/" says
 * hello, any method on "/echo" echoes method, target, fields and body,
 * GET "/static/" prefix echoes the path). Aborts if it cannot.
 */
void fz_server_init(void);

/*
 * Sends data over a new connection as the pieces [cuts[i-1], cuts[i]), the
 * server reading each on its own; then half-closes and collects the
 * responses into out until the server closes. Aborts on a hang.
 */
void fz_server_exchange(const uint8_t *data, size_t n, const size_t *cuts,
                        size_t ncuts, struct fz_buf *out);

/* Replaces each Date value and drops each "100 Continue" interim response
 * (RFC 9110 §10.1.1: optional once some content has arrived). */
void fz_normalise(struct fz_buf *b);

#endif /* ES_FUZZ_UTIL_H */
