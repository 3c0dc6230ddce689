/* SPDX-License-Identifier: MIT */
/*
 * Tests of the message helpers and the shared definitions: es_msg_make/u64/
 * f64/ptr/bytes build what they promise (a double survives a cross-thread
 * send bit for bit), es_msg_take() and es_msg_release()
 * follow the ownership rules (the runtime frees a pointer payload after the
 * behaviour returns unless it was taken; a failed send leaves it with the
 * caller), es_strerror() describes every code of ES_ERRNO_MAP, and the
 * allocator and log hooks reject misuse and are really used.
 */
#include "es_test.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { MSG_PTR = ES_MSG_USER, MSG_TAKE, MSG_BYTES, MSG_FAIL, MSG_F64 };

static atomic_ullong g_freed; /* free_cb calls */

static void count_free(void *ptr)
{
    atomic_fetch_add(&g_freed, 1);
    free(ptr);
}

Test(msg, make_is_zeroed_but_type, .timeout = ES_TEST_TIMEOUT)
{
    es_msg_t m = es_msg_make(ES_MSG_USER + 7);

    cr_assert_eq(m.type, ES_MSG_USER + 7);
    cr_assert_eq(m.len, 0);
    cr_assert_eq(m.from, ES_ACTOR_NONE);
    cr_assert_eq(m.to, ES_ACTOR_NONE);
    cr_assert_null(m.ptr);
    cr_assert_null(m.free_cb);
    for (size_t i = 0; i < ES_MSG_INLINE; i++)
        cr_assert_eq(m.inl.bytes[i], 0);
}

Test(msg, u64_carries_value, .timeout = ES_TEST_TIMEOUT)
{
    es_msg_t m = es_msg_u64(ES_MSG_USER, UINT64_C(0x0123456789abcdef));

    cr_assert_eq(m.type, ES_MSG_USER);
    cr_assert_eq(m.len, sizeof(uint64_t));
    cr_assert_eq(m.inl.u64[0], UINT64_C(0x0123456789abcdef));
    cr_assert_null(m.ptr);
    cr_assert_null(m.free_cb);
}

Test(msg, f64_carries_value, .timeout = ES_TEST_TIMEOUT)
{
    es_msg_t m = es_msg_f64(ES_MSG_USER + 3, -1.0 / 3.0);

    cr_assert_eq(m.type, ES_MSG_USER + 3);
    cr_assert_eq(m.len, sizeof(double));
    cr_assert_eq(memcmp(&m.inl.f64[0], &(double){-1.0 / 3.0}, sizeof(double)),
                 0);
    cr_assert_eq(m.inl.u64[1], 0);
    cr_assert_eq(m.inl.u64[2], 0);
    cr_assert_null(m.ptr);
    cr_assert_null(m.free_cb);
}

Test(msg, ptr_carries_pointer_and_destructor, .timeout = ES_TEST_TIMEOUT)
{
    char buf[5];
    es_msg_t m = es_msg_ptr(ES_MSG_USER + 1, buf, sizeof(buf), count_free);

    cr_assert_eq(m.type, ES_MSG_USER + 1);
    cr_assert_eq(m.ptr, buf);
    cr_assert_eq(m.len, sizeof(buf));
    cr_assert_eq(m.free_cb, count_free);
}

Test(msg, sizes, .timeout = ES_TEST_TIMEOUT)
{
    /* The header promises one 64-byte cache line. */
    cr_assert_eq(sizeof(es_msg_t), 64);
}

Test(msg, bytes_up_to_inline_size, .timeout = ES_TEST_TIMEOUT)
{
    unsigned char src[ES_MSG_INLINE + 1];

    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (unsigned char)(0xa0 + i);
    for (uint32_t len = 0; len <= ES_MSG_INLINE; len++) {
        es_msg_t m;

        memset(&m, 0xff, sizeof(m));
        cr_assert_eq(es_msg_bytes(&m, ES_MSG_USER + 2, src, len), 0, "len %u",
                     len);
        cr_assert_eq(m.type, ES_MSG_USER + 2);
        cr_assert_eq(m.len, len);
        cr_assert_null(m.ptr, "len %u: ptr must be NULL", len);
        cr_assert_null(m.free_cb, "len %u: free_cb must be NULL", len);
        cr_assert_eq(memcmp(m.inl.bytes, src, len), 0, "len %u", len);
    }
}

Test(msg, bytes_too_long_overflows, .timeout = ES_TEST_TIMEOUT)
{
    unsigned char src[64] = {0};
    es_msg_t m = es_msg_make(ES_MSG_USER);

    cr_assert_eq(es_msg_bytes(&m, ES_MSG_USER, src, ES_MSG_INLINE + 1),
                 -EOVERFLOW);
    cr_assert_eq(es_msg_bytes(&m, ES_MSG_USER, src, 64), -EOVERFLOW);
    cr_assert_eq(es_msg_bytes(&m, ES_MSG_USER, src, UINT32_MAX), -EOVERFLOW);
}

Test(msg, take_returns_pointer, .timeout = ES_TEST_TIMEOUT)
{
    int *p = malloc(sizeof(*p));
    es_msg_t m = es_msg_ptr(ES_MSG_USER, p, sizeof(*p), count_free);

    cr_assert_eq(es_msg_take(&m), p);
    /* Taken: releasing the message must not free it again. */
    es_msg_release(&m);
    cr_assert_eq(atomic_load(&g_freed), 0);
    free(p);

    es_msg_t none = es_msg_make(ES_MSG_USER);
    cr_assert_null(es_msg_take(&none));
}

Test(msg, release_frees_once, .timeout = ES_TEST_TIMEOUT)
{
    es_msg_t m = es_msg_ptr(ES_MSG_USER, malloc(16), 16, count_free);
    es_msg_t plain = es_msg_u64(ES_MSG_USER, 1);
    char stack_buf[4];
    es_msg_t unowned = es_msg_ptr(ES_MSG_USER, stack_buf, 4, NULL);

    es_msg_release(&m);
    cr_assert_eq(atomic_load(&g_freed), 1);
    es_msg_release(&plain);   /* nothing owned: no-op */
    es_msg_release(&unowned); /* free_cb NULL: not owned */
    cr_assert_eq(atomic_load(&g_freed), 1);
}

/* Each code of the table, negated as the API returns it. */
#define ES_TEST_CODE(code, text) {-(code), #code, text},
static const struct {
    int err;
    const char *name;
    const char *text;
} codes[] = {ES_ERRNO_MAP(ES_TEST_CODE)};

Test(msg, strerror_describes_every_code, .timeout = ES_TEST_TIMEOUT)
{
    cr_assert_geq(sizeof(codes) / sizeof(codes[0]), 10);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *s = es_strerror(codes[i].err);

        cr_assert_not_null(s, "es_strerror(-%s) is NULL", codes[i].name);
        cr_assert_neq(s[0], '\0', "es_strerror(-%s) is empty", codes[i].name);
        cr_assert_not_null(strstr(s, codes[i].text),
                           "es_strerror(-%s) = \"%s\", want the table text "
                           "\"%s\"",
                           codes[i].name, s, codes[i].text);
    }
}

Test(msg, strerror_never_null, .timeout = ES_TEST_TIMEOUT)
{
    static const int odd[] = {0, -EIO, -12345, 12345, EAGAIN, INT32_MIN};

    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        cr_assert_not_null(es_strerror(odd[i]), "es_strerror(%d)", odd[i]);
}

Test(msg, set_allocator_rejects_null, .timeout = ES_TEST_TIMEOUT)
{
    cr_assert_eq(es_set_allocator(NULL, realloc, calloc, free), -EINVAL);
    cr_assert_eq(es_set_allocator(malloc, NULL, calloc, free), -EINVAL);
    cr_assert_eq(es_set_allocator(malloc, realloc, NULL, free), -EINVAL);
    cr_assert_eq(es_set_allocator(malloc, realloc, calloc, NULL), -EINVAL);
    cr_assert_eq(es_set_allocator(NULL, NULL, NULL, NULL), -EINVAL);
    cr_assert_eq(es_set_allocator(malloc, realloc, calloc, free), 0);
}

/*
 * A counting allocator: every block the library takes is counted live until
 * it gives it back, so a runtime's whole life must end at zero.
 */
static atomic_llong g_live;
static atomic_ullong g_calls;

static void *cnt_malloc(size_t n)
{
    void *p = malloc(n);

    atomic_fetch_add(&g_calls, 1);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

static void *cnt_calloc(size_t c, size_t n)
{
    void *p = calloc(c, n);

    atomic_fetch_add(&g_calls, 1);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

static void *cnt_realloc(void *old, size_t n)
{
    void *p;

    atomic_fetch_add(&g_calls, 1);
    if (old && n == 0) {
        /* glibc frees here; do it explicitly so the count stays exact. */
        free(old);
        atomic_fetch_sub(&g_live, 1);
        return NULL;
    }
    p = realloc(old, n);
    if (p && !old)
        atomic_fetch_add(&g_live, 1);
    return p;
}

static void cnt_free(void *p)
{
    if (p)
        atomic_fetch_sub(&g_live, 1);
    free(p);
}

static atomic_ullong g_got;

static int echo_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type >= ES_MSG_USER)
        atomic_fetch_add(&g_got, 1);
    return 0;
}

Test(msg, allocator_is_used_and_balanced, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_opts_t opts = {.threads = 2};
    es_runtime_t *rt;
    es_actor_id_t id[4];

    ES_OK(es_set_allocator(cnt_malloc, cnt_realloc, cnt_calloc, cnt_free));
    rt = es_test_runtime_new(&opts);
    ES_OK(es_runtime_start(rt));
    for (int i = 0; i < 4; i++) {
        es_spawn_opts_t o = {.behaviour = echo_cb, .loop = ES_LOOP(i % 2)};

        ES_OK(es_spawn(rt, &o, &id[i]));
    }
    for (int n = 0; n < 400; n++) {
        es_msg_t m = es_msg_u64(ES_MSG_USER, (uint64_t)n);

        ES_OK(es_test_send_retry(rt, id[n % 4], &m, ES_TEST_WAIT_S));
    }
    ES_WAIT_GE(g_got, 400);
    es_runtime_free(rt);

    cr_assert_gt(atomic_load(&g_calls), 0,
                 "the runtime never called the installed allocator");
    cr_assert_eq(atomic_load(&g_live), 0,
                 "%lld blocks from the allocator were not given back",
                 (long long)atomic_load(&g_live));
    ES_OK(es_set_allocator(malloc, realloc, calloc, free));
}

/* Payload ownership through a real send. */
static atomic_ullong g_seen_before_free; /* handler saw free count */
static atomic_ullong g_handled;
static atomic_ullong g_bytes_ok;

static int payload_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    switch (msg->type) {
    case MSG_PTR:
        /* The runtime frees after we return, never before. */
        atomic_store(&g_seen_before_free, atomic_load(&g_freed));
        break;
    case MSG_TAKE: {
        void *p = es_msg_take(msg);

        free(p); /* ours now; the runtime must not call free_cb */
        break;
    }
    case MSG_BYTES:
        if (msg->len == 24 &&
            memcmp(msg->inl.bytes, "abcdefghijklmnopqrstuvwx", 24) == 0)
            atomic_fetch_add(&g_bytes_ok, 1);
        break;
    default:
        return 0;
    }
    atomic_fetch_add(&g_handled, 1);
    return 0;
}

Test(msg, runtime_frees_payload_after_behaviour, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_spawn_opts_t o = {.behaviour = payload_cb, .loop = ES_LOOP(0)};
    es_actor_id_t id;
    es_msg_t m = es_msg_ptr(MSG_PTR, malloc(32), 32, count_free);

    ES_OK(es_spawn(rt, &o, &id));
    atomic_store(&g_seen_before_free, 99);
    ES_OK(es_send(rt, id, &m));
    ES_WAIT_GE(g_handled, 1);
    ES_WAIT_GE(g_freed, 1);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_seen_before_free), 0,
                 "free_cb ran before the behaviour returned");
    cr_assert_eq(atomic_load(&g_freed), 1, "free_cb calls: %llu",
                 (unsigned long long)atomic_load(&g_freed));
}

Test(msg, taken_payload_not_freed, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_spawn_opts_t o = {.behaviour = payload_cb, .loop = ES_LOOP(0)};
    es_actor_id_t id;
    es_msg_t m = es_msg_ptr(MSG_TAKE, malloc(32), 32, count_free);

    ES_OK(es_spawn(rt, &o, &id));
    ES_OK(es_send(rt, id, &m));
    ES_WAIT_GE(g_handled, 1);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_freed), 0,
                 "free_cb ran for a payload the behaviour took");
}

Test(msg, inline_bytes_are_copied, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_spawn_opts_t o = {.behaviour = payload_cb, .loop = ES_LOOP(1)};
    es_actor_id_t id;
    char buf[25] = "abcdefghijklmnopqrstuvwx";
    es_msg_t m;

    ES_OK(es_spawn(rt, &o, &id));
    for (int i = 0; i < 10; i++) {
        ES_OK(es_msg_bytes(&m, MSG_BYTES, buf, 24));
        ES_OK(es_send(rt, id, &m));
        /* The runtime sent a copy: scribbling now must not show. */
        memset(&m, 0x5a, sizeof(m));
    }
    ES_WAIT_GE(g_handled, 10);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_bytes_ok), 10);
}

/*
 * Doubles through two cross-thread sends: the test thread sends each to a
 * relay on loop 0, which rebuilds it with es_msg_f64() and sends it to a
 * sink on loop 1; the sink records the bits and the length it received.
 */
static const double f64_values[] = {
    -1.0 / 3.0, -0.0,      DBL_MIN / 4 /* subnormal */,
    DBL_MAX,    -INFINITY, 6.02214076e23};
#define F64_N (sizeof(f64_values) / sizeof(f64_values[0]))
static uint64_t g_f64_bits[F64_N]; /* written by the sink, read after wait */
static atomic_ullong g_f64_got;
static atomic_ullong g_f64_badlen;

static int f64_sink_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type != MSG_F64)
        return 0;
    unsigned long long i = atomic_load(&g_f64_got);
    if (msg->len != sizeof(double))
        atomic_fetch_add(&g_f64_badlen, 1);
    if (i < F64_N)
        memcpy(&g_f64_bits[i], &msg->inl.f64[0], sizeof(double));
    atomic_fetch_add(&g_f64_got, 1); /* publishes g_f64_bits[i] */
    return 0;
}

static int f64_relay_cb(es_actor_t *self, es_msg_t *msg)
{
    if (msg->type != MSG_F64)
        return 0;
    es_actor_id_t *sink = es_actor_state(self);
    es_msg_t out = es_msg_f64(MSG_F64, msg->inl.f64[0]);
    return es_send(es_actor_runtime(self), *sink, &out);
}

Test(msg, f64_round_trips_cross_thread, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    es_actor_id_t sink, relay;
    es_spawn_opts_t so = {.behaviour = f64_sink_cb, .loop = ES_LOOP(1)};
    es_spawn_opts_t ro = {
        .behaviour = f64_relay_cb, .loop = ES_LOOP(0), .state = &sink};

    ES_OK(es_spawn(rt, &so, &sink));
    ES_OK(es_spawn(rt, &ro, &relay));
    for (size_t i = 0; i < F64_N; i++) {
        es_msg_t m = es_msg_f64(MSG_F64, f64_values[i]);

        ES_OK(es_test_send_retry(rt, relay, &m, ES_TEST_WAIT_S));
    }
    ES_WAIT_GE(g_f64_got, F64_N);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_f64_got), F64_N);
    cr_assert_eq(atomic_load(&g_f64_badlen), 0, "len was not sizeof(double)");
    for (size_t i = 0; i < F64_N; i++) {
        uint64_t want;

        memcpy(&want, &f64_values[i], sizeof(want));
        cr_assert_eq(g_f64_bits[i], want, "value %zu: got %#llx, want %#llx", i,
                     (unsigned long long)g_f64_bits[i],
                     (unsigned long long)want);
    }
}

Test(msg, failed_send_keeps_payload, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    struct es_test_probe p = {0};
    es_actor_id_t id = es_test_spawn_probe(rt, &p, ES_LOOP(0));
    es_msg_t sys = es_msg_ptr(ES_MSG_START, malloc(8), 8, count_free);
    es_msg_t stale = es_msg_ptr(MSG_PTR, malloc(8), 8, count_free);

    /* Refused for a system type: still the caller's. */
    cr_assert_eq(es_send(rt, id, &sys), -EINVAL);
    ES_OK(es_stop(rt, id));
    ES_WAIT_GE(p.freed, 1);
    /* Refused for a stopped target: still the caller's. */
    cr_assert_eq(es_send(rt, id, &stale), -ESRCH);
    cr_assert_eq(atomic_load(&g_freed), 0,
                 "a failed send freed the caller's payload");
    es_msg_release(&sys);
    es_msg_release(&stale);
    cr_assert_eq(atomic_load(&g_freed), 2);
    es_test_free(rt);
    cr_assert_eq(atomic_load(&g_freed), 2);
}

/* The log hook receives the error a behaviour returns. */
static atomic_ullong g_log_lines;
static atomic_ullong g_log_warn;

static void log_cb(void *arg, es_log_level_t level, const char *line)
{
    (void)arg;
    if (line != NULL)
        atomic_fetch_add(&g_log_lines, 1);
    if (level >= ES_LOG_WARN)
        atomic_fetch_add(&g_log_warn, 1);
}

static int failing_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    return msg->type == MSG_FAIL ? -EIO : 0;
}

Test(msg, log_hook_sees_behaviour_error, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt;
    es_spawn_opts_t o = {.behaviour = failing_cb, .loop = ES_LOOP(0)};
    es_actor_id_t id;
    es_msg_t m = es_msg_make(MSG_FAIL);

    es_set_log(log_cb, NULL, ES_LOG_DEBUG);
    rt = es_test_runtime_start(1);
    ES_OK(es_spawn(rt, &o, &id));
    ES_OK(es_send(rt, id, &m));
    ES_WAIT_GE(g_log_lines, 1);
    es_test_free(rt);
    es_set_log(NULL, NULL, ES_LOG_ERROR);
    cr_assert_geq(atomic_load(&g_log_lines), 1);
}

/* es_malloc & co. (for modules on the public API) use the same hooks. */
Test(msg, public_alloc_uses_hooks, .timeout = ES_TEST_TIMEOUT)
{
    void *a, *b, *c;

    atomic_store(&g_live, 0);
    ES_OK(es_set_allocator(cnt_malloc, cnt_realloc, cnt_calloc, cnt_free));
    a = es_malloc(16);
    b = es_calloc(4, 8);
    c = es_realloc(NULL, 32);
    cr_assert(a && b && c);
    cr_assert_eq(atomic_load(&g_live), 3);
    c = es_realloc(c, 64);
    cr_assert_not_null(c);
    es_free(a);
    es_free(b);
    es_free(c);
    es_free(NULL);
    cr_assert_eq(atomic_load(&g_live), 0);
    ES_OK(es_set_allocator(malloc, realloc, calloc, free));
}

/* es_log formats and honours the hook's minimum level. */
static char g_log_text[64];

static void text_cb(void *arg, es_log_level_t level, const char *line)
{
    (void)arg;
    (void)level;
    snprintf(g_log_text, sizeof(g_log_text), "%s", line);
}

Test(msg, public_log_formats_and_filters, .timeout = ES_TEST_TIMEOUT)
{
    es_set_log(text_cb, NULL, ES_LOG_WARN);
    es_log(ES_LOG_INFO, "below %d", 1);
    cr_assert_str_empty(g_log_text);
    es_log(ES_LOG_ERROR, "above %d %s", 2, "x");
    cr_assert_str_eq(g_log_text, "above 2 x");
    es_set_log(NULL, NULL, ES_LOG_ERROR);
}
