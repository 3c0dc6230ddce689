/* SPDX-License-Identifier: MIT */
/*
 * criterion_lite: a small stand-in for libcriterion's runtime, linked into
 * the test binaries of ThreadSanitizer builds only. Criterion 2.4 cannot run
 * under GCC 12's TSan: its BoxFort sandbox maps an "inheritable arena" at a
 * random address in 0x2000'0000'0000-0x6000'0000'0000, which TSan reserves
 * for itself, so the binary aborts ("Could not initialize inheritable arena")
 * or crashes (Snaipe/Criterion#274). Test files keep including
 * <criterion/criterion.h> unchanged; this file implements what those macros
 * call (Test, TestSuite, ParameterizedTest, cr_assert*, cr_expect*, cr_log*,
 * cr_malloc & co., .init/.fini/.timeout/.signal/.exit_code/.disabled) plus a
 * main() that runs each test in a forked child, one at a time. The parent
 * never starts a thread, so fork() is TSan-safe. Not supported (link error):
 * theories, cr_redirect_*, the <criterion/new/assert.h> API, report hooks'
 * effects (hooks are ignored).
 * Options: --filter=PATTERN (fnmatch on "suite/name"), --timeout=SECONDS,
 * -l/--list; Criterion's other options are accepted and ignored.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/internal/test.h>
#include <criterion/alloc.h>
#include <criterion/logging.h>
#include <criterion/parameterized.h>

#include <fnmatch.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The linker defines these bounds for the sections Test()/TestSuite() fill. */
extern struct criterion_test *__start_cr_tst[] __attribute__((weak));
extern struct criterion_test *__stop_cr_tst[] __attribute__((weak));
extern struct criterion_suite *__start_cr_sts[] __attribute__((weak));
extern struct criterion_suite *__stop_cr_sts[] __attribute__((weak));

/* Declared const in <criterion/criterion.h>, which this file does not see. */
const struct criterion_test *criterion_current_test;
const struct criterion_suite *criterion_current_suite;
struct criterion_options criterion_options;

/* What a child reports to the parent, in memory shared across fork(). */
struct outcome {
    int failed;
    int skipped;
};

static struct outcome *outcome;
static struct criterion_suite no_suite;
static void *current_param;
static jmp_buf test_jmp;
static pthread_t test_thread;
static int in_test;
static int aborted;
static size_t passed_asserts;

int cr_vasprintf(char **strp, const char *fmt, va_list ap)
{
    return vasprintf(strp, fmt, ap);
}

int cr_asprintf(char **strp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(strp, fmt, ap);
    va_end(ap);
    return rc;
}

void cr_asprintf_free(char *buf)
{
    free(buf);
}

void *cr_malloc(size_t size)
{
    return malloc(size);
}

void *cr_calloc(size_t nmemb, size_t size)
{
    return calloc(nmemb, size);
}

void *cr_realloc(void *ptr, size_t size)
{
    return realloc(ptr, size);
}

void cr_free(void *ptr)
{
    free(ptr);
}

char *cr_translate_assert_msg(int msg_index, ...)
{
    static const char *const messages[] = {
        [CRITERION_ASSERT_MSG_FAIL] =
            "The conditions for this assertion were not met.",
        [CRITERION_ASSERT_MSG_EXPR_FALSE] = "The expression %s is false.",
        [CRITERION_ASSERT_MSG_EXPR_AS_STRINGS_FALSE] =
            "The expression (as strings) %s is false: actual=`%s` "
            "expected=`%s`.",
        [CRITERION_ASSERT_MSG_IS_NULL] = "%s is null.",
        [CRITERION_ASSERT_MSG_IS_NOT_NULL] = "%s is not null.",
        [CRITERION_ASSERT_MSG_IS_EMPTY] = "%s is empty.",
        [CRITERION_ASSERT_MSG_IS_NOT_EMPTY] = "%s (`%s`) is not empty.",
        [CRITERION_ASSERT_MSG_FILE_STR_MATCH] =
            "The file contents of %s does not match the string \"%s\".",
        [CRITERION_ASSERT_MSG_FILE_MATCH] =
            "The file contents of %s does not match the contents of %s.",
        [CRITERION_ASSERT_MSG_THROW] =
            "The statement `%s` did throw an instance of the `%s` exception.",
        [CRITERION_ASSERT_MSG_NO_THROW] = "The statement `%s` did not throw "
                                          "an instance of the `%s` exception.",
        [CRITERION_ASSERT_MSG_ANY_THROW] =
            "The statement `%s` did not throw any exception.",
        [CRITERION_ASSERT_MSG_NONE_THROW] =
            "The statement `%s` threw some exception.",
    };
    const char *fmt = "Assertion failed.";
    char *out = NULL;
    va_list ap;

    if (msg_index >= 0 &&
        (size_t)msg_index < sizeof(messages) / sizeof(*messages) &&
        messages[msg_index])
        fmt = messages[msg_index];
    va_start(ap, msg_index);
    if (vasprintf(&out, fmt, ap) < 0)
        out = NULL;
    va_end(ap);
    return out;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void cri_asserts_passed_incr(void)
{
    __atomic_add_fetch(&passed_asserts, 1, __ATOMIC_RELAXED);
}

void criterion_send_assert(struct criterion_assert_stats *stats)
{
    if (stats->passed)
        return;
    __atomic_store_n(&outcome->failed, 1, __ATOMIC_RELAXED);
    flockfile(stderr);
    fprintf(stderr, "[----] %s:%u: Assertion Failed\n", base_name(stats->file),
            stats->line);
    const char *line = stats->message ? stats->message : "";
    do {
        const char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        fprintf(stderr, "[----]   %.*s\n", len, line);
        line = nl ? nl + 1 : NULL;
    } while (line && *line);
    funlockfile(stderr);
}

void criterion_abort_test(void)
{
    /* longjmp only within the thread that runs the test body. */
    if (in_test && pthread_equal(pthread_self(), test_thread)) {
        aborted = 1;
        longjmp(test_jmp, 1);
    }
    fflush(NULL);
    _exit(1);
}

void criterion_continue_test(void)
{
}

void criterion_skip_test(const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    fprintf(stderr, "[SKIP] %s::%s: ", criterion_current_suite->name,
            criterion_current_test->name);
    vfprintf(stderr, format, ap);
    fputc('\n', stderr);
    va_end(ap);
    outcome->skipped = 1;
    exit(0);
}

void criterion_test_die(const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    fprintf(stderr, "[----] ");
    vfprintf(stderr, msg, ap);
    fputc('\n', stderr);
    va_end(ap);
    outcome->failed = 1;
    exit(0);
}

void cr_log(enum criterion_severity severity, const char *msg, ...)
{
    static const char *const tags[] = {"----", "WARN", "ERR "};
    va_list ap;
    va_start(ap, msg);
    flockfile(stderr);
    fprintf(stderr, "[%s] ", tags[severity <= CR_LOG_ERROR ? severity : 0]);
    vfprintf(stderr, msg, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}

static void nothing(void)
{
}

void criterion_internal_test_setup(void)
{
    const struct criterion_suite *suite = criterion_current_suite;
    const struct criterion_test *test = criterion_current_test;

    in_test = 1;
    test_thread = pthread_self();
    if (setjmp(test_jmp))
        return;
    if (suite->data && suite->data->init)
        suite->data->init();
    (test->data->init ? test->data->init : nothing)();
}

void criterion_internal_test_main(void (*fn)(void))
{
    if (aborted)
        return; /* a fatal assertion failed in setup */
    if (setjmp(test_jmp))
        return;
    if (criterion_current_test->data->param_)
        ((void (*)(void *))fn)(current_param);
    else
        fn();
}

void criterion_internal_test_teardown(void)
{
    const struct criterion_suite *suite = criterion_current_suite;
    const struct criterion_test *test = criterion_current_test;

    if (setjmp(test_jmp) == 0) {
        (test->data->fini ? test->data->fini : nothing)();
        if (suite->data && suite->data->fini)
            suite->data->fini();
    }
    in_test = 0;
}

/* --- the runner ----------------------------------------------------------- */

static const char *filter;
static double global_timeout;
static int list_only;
static unsigned n_tested, n_passed, n_failed, n_crashed, n_skipped;

static const struct criterion_suite *suite_of(const struct criterion_test *t)
{
    if (__start_cr_sts) {
        for (struct criterion_suite **s = __start_cr_sts; s < __stop_cr_sts;
             s++) {
            if (*s && strcmp((*s)->name, t->category) == 0)
                return *s;
        }
    }
    no_suite.name = t->category;
    return &no_suite;
}

static int by_name(const void *a, const void *b)
{
    const struct criterion_test *x = *(struct criterion_test *const *)a;
    const struct criterion_test *y = *(struct criterion_test *const *)b;
    int c = strcmp(x->category, y->category);
    return c ? c : strcmp(x->name, y->name);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs one test (one parameter) in a child; prints and counts the result. */
static void run_one(const struct criterion_test *t,
                    const struct criterion_suite *s, void *param)
{
    const struct criterion_test_extra_data *d = t->data;
    double timeout = d->timeout > 0 ? d->timeout : 0;
    if (timeout <= 0 && s->data && s->data->timeout > 0)
        timeout = s->data->timeout;
    if (timeout <= 0)
        timeout = global_timeout;

    memset(outcome, 0, sizeof(*outcome));
    fflush(NULL);
    double start = now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("criterion_lite: fork");
        exit(2);
    }
    if (pid == 0) {
        criterion_current_test = t;
        criterion_current_suite = s;
        current_param = param;
        if (timeout > 0)
            alarm((unsigned)(timeout + 0.999));
        t->test();
        exit(0);
    }

    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    double elapsed = now() - start;
    int expected_signal =
        d->signal ? d->signal : (s->data ? s->data->signal : 0);
    int expected_code =
        d->exit_code ? d->exit_code : (s->data ? s->data->exit_code : 0);
    const char *verdict = "PASS";

    n_tested++;
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == expected_signal && !outcome->failed) {
            verdict = "PASS";
        } else if (sig == SIGALRM && timeout > 0) {
            fprintf(stderr, "[----] %s::%s: Timed out. (%.2fs)\n", t->category,
                    t->name, timeout);
            verdict = "FAIL";
        } else {
            fprintf(stderr,
                    "[----] %s:%u: Unexpected signal caught below this "
                    "line! (%s)\n",
                    base_name(d->file_), d->line_, strsignal(sig));
            verdict = "CRASH";
        }
    } else if (outcome->skipped) {
        verdict = "SKIP";
    } else {
        int code = WEXITSTATUS(status);
        if (outcome->failed || expected_signal || code != expected_code) {
            if (!outcome->failed)
                fprintf(stderr, "[----] %s::%s: exited with status %d%s\n",
                        t->category, t->name, code,
                        expected_signal ? " instead of being signalled" : "");
            verdict = "FAIL";
        }
    }

    if (strcmp(verdict, "PASS") == 0) {
        n_passed++;
        return;
    }
    if (strcmp(verdict, "SKIP") == 0) {
        n_skipped++;
        return;
    }
    if (strcmp(verdict, "CRASH") == 0)
        n_crashed++;
    else
        n_failed++;
    fprintf(stderr, "[%s] %s::%s: (%.2fs)\n", verdict, t->category, t->name,
            elapsed);
}

static void run_test(const struct criterion_test *t)
{
    const struct criterion_suite *s = suite_of(t);
    char id[512];

    snprintf(id, sizeof(id), "%s/%s", t->category, t->name);
    if (filter && fnmatch(filter, id, 0) != 0)
        return;
    if (list_only) {
        printf("%s\n", id);
        return;
    }
    if (t->data->disabled || (s->data && s->data->disabled)) {
        n_skipped++;
        return;
    }
    if (!t->data->param_) {
        run_one(t, s, NULL);
        return;
    }
    struct criterion_test_params p = t->data->param_();
    for (size_t i = 0; i < p.length; i++)
        run_one(t, s, (char *)p.params + i * p.size);
    if (p.cleanup)
        p.cleanup(&p);
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--filter=", 9) == 0)
            filter = a + 9;
        else if (strcmp(a, "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(a, "--timeout=", 10) == 0)
            global_timeout = atof(a + 10);
        else if (strcmp(a, "--timeout") == 0 && i + 1 < argc)
            global_timeout = atof(argv[++i]);
        else if (strcmp(a, "-l") == 0 || strcmp(a, "--list") == 0)
            list_only = 1;
        else if (strcmp(a, "--jobs") == 0 && i + 1 < argc)
            i++; /* tests run one at a time here */
    }
}

int main(int argc, char **argv)
{
    size_t n = __start_cr_tst ? (size_t)(__stop_cr_tst - __start_cr_tst) : 0;
    struct criterion_test **tests = calloc(n + 1, sizeof(*tests));
    size_t count = 0;

    parse_args(argc, argv);
    outcome = mmap(NULL, sizeof(*outcome), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!tests || outcome == MAP_FAILED) {
        fprintf(stderr, "criterion_lite: out of memory\n");
        return 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (__start_cr_tst[i])
            tests[count++] = __start_cr_tst[i];
    }
    qsort(tests, count, sizeof(*tests), by_name);
    for (size_t i = 0; i < count; i++)
        run_test(tests[i]);
    free(tests);
    if (list_only)
        return 0;
    fprintf(stderr,
            "[====] Synthesis: Tested: %u | Passing: %u | Failing: %u | "
            "Crashing: %u (criterion_lite, %u skipped)\n",
            n_tested, n_passed, n_failed, n_crashed, n_skipped);
    return n_failed || n_crashed ? 1 : 0;
}
