/* SPDX-License-Identifier: MIT */
/*
 * Definitions every EventServer module shares: the export macro, the error
 * table behind es_strerror(), the replaceable allocator and the log hook.
 */
#ifndef EVENTSERVER_COMMON_H
#define EVENTSERVER_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define ES_EXTERN __attribute__((visibility("default")))
#else
#define ES_EXTERN
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every fallible call returns 0 (or a count) on success and a negative errno
 * value on failure. These are the codes the runtime itself produces and what
 * each one means here; es_strerror() is generated from this table.
 */
#define ES_ERRNO_MAP(X)                                                        \
    X(EAGAIN, "mailbox or channel full: retry later, message not taken")       \
    X(ESRCH, "no such actor: it stopped or never existed")                     \
    X(EINVAL, "invalid argument")                                              \
    X(ENOMEM, "out of memory")                                                 \
    X(ESHUTDOWN, "runtime is stopping or stopped")                             \
    X(EALREADY, "already started or already stopped")                          \
    X(EPERM, "call made from a thread that may not make it")                   \
    X(ENOENT, "no such timer or subscription")                                 \
    X(EMFILE, "out of file descriptors")                                       \
    X(EOVERFLOW, "size or count out of range")

/*
 * Describes an error code returned by any es_ call.
 * Returns: a static string; never NULL (unknown codes get the libc text).
 * Thread: any.
 */
ES_EXTERN const char *es_strerror(int err);

/* malloc-compatible hooks; see es_set_allocator(). */
typedef void *(*es_malloc_cb)(size_t size);
typedef void *(*es_realloc_cb)(void *ptr, size_t size);
typedef void *(*es_calloc_cb)(size_t count, size_t size);
typedef void (*es_free_cb)(void *ptr);

/*
 * Replaces the allocator every EventServer module uses.
 * Returns: 0, or -EINVAL if any hook is NULL.
 * Thread: any, but only while no runtime exists (memory must be freed by the
 * allocator that gave it).
 */
ES_EXTERN int es_set_allocator(es_malloc_cb malloc_fn, es_realloc_cb realloc_fn,
                               es_calloc_cb calloc_fn, es_free_cb free_fn);

/*
 * Allocate and free through the hooks of es_set_allocator(), for modules
 * built on the public API (the HTTP module) and for users whose memory the
 * runtime frees. Same contracts as malloc, calloc (overflow-checked),
 * realloc and free. Thread: any.
 */
ES_EXTERN void *es_malloc(size_t size);
ES_EXTERN void *es_calloc(size_t count, size_t size);
ES_EXTERN void *es_realloc(void *ptr, size_t size);
ES_EXTERN void es_free(void *ptr);

/* Severity of a log record. */
typedef enum es_log_level {
    ES_LOG_DEBUG = 0,
    ES_LOG_INFO,
    ES_LOG_WARN,
    ES_LOG_ERROR,
} es_log_level_t;

/* Receives a formatted diagnostic line (no trailing newline). */
typedef void (*es_log_cb)(void *arg, es_log_level_t level, const char *line);

/*
 * Replaces the process-wide log hook; the default writes WARN and above to
 * stderr. Pass NULL to silence the library.
 * Returns: nothing.
 * Thread: any; the hook itself is called from any runtime thread, so it must
 * be thread-safe.
 */
ES_EXTERN void es_set_log(es_log_cb cb, void *arg, es_log_level_t min_level);

/*
 * Formats a line and hands it to the log hook (es_set_log), if level is at
 * or above the hook's minimum. Returns: nothing. Thread: any.
 */
ES_EXTERN void es_log(es_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_COMMON_H */
