/* SPDX-License-Identifier: MIT */
/*
 * What every module shares: the replaceable allocator, the log hook, the
 * error table behind es_strerror(), the message helpers and the clock.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static struct {
    es_malloc_cb malloc_fn;
    es_realloc_cb realloc_fn;
    es_calloc_cb calloc_fn;
    es_free_cb free_fn;
} allocator = {malloc, realloc, calloc, free};

int es_set_allocator(es_malloc_cb malloc_fn, es_realloc_cb realloc_fn,
                     es_calloc_cb calloc_fn, es_free_cb free_fn)
{
    if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn)
        return -EINVAL;
    allocator.malloc_fn = malloc_fn;
    allocator.realloc_fn = realloc_fn;
    allocator.calloc_fn = calloc_fn;
    allocator.free_fn = free_fn;
    return 0;
}

void *es__malloc(size_t size)
{
    return allocator.malloc_fn(size);
}

void *es__calloc(size_t count, size_t size)
{
    return allocator.calloc_fn(count, size);
}

void *es__realloc(void *ptr, size_t size)
{
    return allocator.realloc_fn(ptr, size);
}

void es__free(void *ptr)
{
    allocator.free_fn(ptr);
}

void *es_malloc(size_t size)
{
    return es__malloc(size);
}

void *es_calloc(size_t count, size_t size)
{
    return es__calloc(count, size);
}

void *es_realloc(void *ptr, size_t size)
{
    return es__realloc(ptr, size);
}

void es_free(void *ptr)
{
    es__free(ptr);
}

#define ES__CACHELINE 64

/* The hooks promise only malloc's alignment: over-allocate and remember. */
void *es__aalloc(size_t size)
{
    if (size > SIZE_MAX - 2 * ES__CACHELINE)
        return NULL;
    char *raw = es__calloc(1, size + 2 * ES__CACHELINE);
    if (!raw)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + 2 * ES__CACHELINE - 1) &
                  ~(uintptr_t)(ES__CACHELINE - 1);
    ((void **)p)[-1] = raw;
    return (void *)p;
}

void es__afree(void *ptr)
{
    if (ptr)
        es__free(((void **)ptr)[-1]);
}

static void log_stderr(void *arg, es_log_level_t level, const char *line)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    (void)arg;
    fprintf(stderr, "eventserver %s: %s\n", names[level], line);
}

static struct {
    _Atomic(es_log_cb) cb;
    void *_Atomic arg;
    _Atomic es_log_level_t min;
} logger = {log_stderr, NULL, ES_LOG_WARN};

void es_set_log(es_log_cb cb, void *arg, es_log_level_t min_level)
{
    atomic_store(&logger.arg, arg);
    atomic_store(&logger.min, min_level);
    atomic_store(&logger.cb, cb);
}

static void log_va(es_log_level_t level, const char *fmt, va_list ap)
{
    es_log_cb cb = atomic_load(&logger.cb);
    if (!cb || level < atomic_load(&logger.min))
        return;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    cb(atomic_load(&logger.arg), level, line);
}

void es__log(es_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_va(level, fmt, ap);
    va_end(ap);
}

void es_log(es_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_va(level, fmt, ap);
    va_end(ap);
}

const char *es_strerror(int err)
{
    if (err == INT_MIN)
        return "unknown error";
    switch (-err) {
#define ES__ERRSTR(code, text)                                                 \
    case code:                                                                 \
        return text;
        ES_ERRNO_MAP(ES__ERRSTR)
#undef ES__ERRSTR
    case 0:
        return "success";
    default:
        break;
    }
    const char *desc = strerrordesc_np(-err);
    return desc ? desc : "unknown error";
}

int es_msg_bytes(es_msg_t *msg, uint32_t type, const void *data, uint32_t len)
{
    if (len > ES_MSG_INLINE)
        return -EOVERFLOW;
    *msg = es_msg_make(type);
    if (len)
        memcpy(msg->inl.bytes, data, len);
    msg->len = len;
    return 0;
}

void *es_msg_take(es_msg_t *msg)
{
    msg->free_cb = NULL;
    return msg->ptr;
}

void es_msg_release(es_msg_t *msg)
{
    if (msg->free_cb && msg->ptr)
        msg->free_cb(msg->ptr);
    msg->free_cb = NULL;
    msg->ptr = NULL;
}

uint64_t es__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec to_timespec(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000u),
                             .tv_nsec = (long)(ns % 1000000000u)};
}

void es__nap_ns(uint64_t ns)
{
    struct timespec ts = to_timespec(ns);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void es__futex_wait(atomic_uint *word, unsigned expected, uint64_t ns)
{
    struct timespec ts = to_timespec(ns);
    /* EAGAIN: the word moved already; EINTR, ETIMEDOUT: the caller looks
     * again in any case. */
    (void)syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, expected,
                  &ts, NULL, 0);
}

void es__futex_wake(atomic_uint *word)
{
    (void)syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, INT_MAX,
                  NULL, NULL, 0);
}

#if ES_ASSERTS
void es__assert_fail(const char *expr, const char *file, int line,
                     const char *func)
{
    es__log(ES_LOG_ERROR, "assertion failed: %s (%s:%d, %s)", expr, file, line,
            func);
    abort();
}
#endif
