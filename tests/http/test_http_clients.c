/* SPDX-License-Identifier: MIT */
/*
 * The HTTP server driven by real clients: curl (keep-alive reuse of one
 * connection for two URLs, chunked and large uploads with Expect:
 * 100-continue, HTTP/1.0, HEAD, a chunked download) and Python's
 * http.client (several requests on one kept-alive connection, a POST body,
 * a chunked upload with encode_chunked=True, a streamed reply). The clients
 * run as child processes with the port on their command line, under
 * `timeout`; a test is skipped when its client is not installed.
 */
#include "http_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>

/* --- Handlers ------------------------------------------------------------- */

/* FNV-1a of p, to check uploads without sending them back. */
static uint32_t fnv(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

/* Answers "len=<n> fnv=<hash> te=<Transfer-Encoding or ->". */
static void h_sum(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    size_t len = 0;
    const void *b = es_http_request_body(req, &len);
    const char *te = es_http_request_header(req, "Transfer-Encoding");
    char out[128];
    int n = snprintf(out, sizeof(out), "len=%zu fnv=%08x te=%s", len,
                     fnv(b, len), te ? te : "-");

    (void)arg;
    es_http_response_body(res, out, (size_t)n);
}

/* Streams "s0 s1 ... s9 ". */
static void h_stream(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    char p[8];

    (void)req;
    (void)arg;
    if (es_http_response_begin(res) != 0)
        return;
    for (int i = 0; i < 10; i++) {
        int n = snprintf(p, sizeof(p), "s%d ", i);

        es_http_response_write(res, p, (size_t)n);
    }
    es_http_response_end(res);
}

static void clients_fixture(struct hts *t)
{
    hts_init(t, 2, NULL);
    hts_route(t, NULL, "/t/*", h_target, NULL);
    hts_route(t, NULL, "/sum", h_sum, NULL);
    hts_route(t, "GET", "/stream", h_stream, NULL);
    hts_start(t);
}

/* --- Running a client ----------------------------------------------------- */

static bool have(const char *prog)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Runs cmd (with stderr merged), returns its output; *status gets the exit
 * code. Bounded by `timeout 30` around the command. */
static char *run(const char *cmd, int *status)
{
    char *full = NULL, *out = NULL;
    size_t len = 0;
    char buf[4096];
    size_t n;
    FILE *p, *o;
    int st;

    cr_assert_gt(asprintf(&full, "timeout 30 %s 2>&1", cmd), 0);
    p = popen(full, "r");
    cr_assert_not_null(p, "popen %s", full);
    o = open_memstream(&out, &len);
    cr_assert_not_null(o);
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
        fwrite(buf, 1, n, o);
    fclose(o);
    st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    free(full);
    return out;
}

/* Runs the command printf(fmt, ...) makes, fails the test unless it
 * exits 0, and returns its output (the caller frees it). */
static char *run_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *run_ok(const char *fmt, ...)
{
    char cmd[512], *out;
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    out = run(cmd, &st);
    cr_assert_eq(st, 0, "%s exited %d:\n%s", cmd, st, out);
    return out;
}

/* A temporary file holding n pattern bytes; returns its path. */
static char *pattern_file(size_t n, uint32_t *hash)
{
    char *path = strdup("/tmp/es_http_upload_XXXXXX");
    char *b = pattern_alloc(n);
    int fd;

    cr_assert_not_null(path);
    fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b, n), (ssize_t)n);
    close(fd);
    *hash = fnv(b, n);
    free(b);
    return path;
}

/* --- curl ----------------------------------------------------------------- */

#define SKIP_WITHOUT(prog)                                                     \
    do {                                                                       \
        if (!have(prog))                                                       \
            cr_skip_test(prog " is not installed");                            \
    } while (0)

Test(http_clients, curl_reuses_connection, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    char *out;

    SKIP_WITHOUT("curl");
    clients_fixture(&t);
    out = run_ok("curl -sS -v --max-time 10 http://127.0.0.1:%d/t/first "
                 "http://127.0.0.1:%d/t/second",
                 t.port, t.port);
    cr_assert(strstr(out, "/t/first"), "%s", out);
    cr_assert(strstr(out, "/t/second"), "%s", out);
    cr_assert(strstr(out, "Re-using existing connection") ||
                  strstr(out, "Reusing existing connection"),
              "curl did not reuse the connection:\n%s", out);
    free(out);
    cr_assert_eq(hts_stats(&t).accepted, 1);
    cr_assert_eq(hts_stats(&t).requests, 2);
    hts_fini(&t);
}

/*
 * Uploads n pattern bytes to /sum with curl (opts before the file, `after`
 * after the URL) and expects "len=<n> fnv=<hash> te=<te_tail>".
 */
static void curl_upload(size_t n, const char *opts, const char *after,
                        const char *te_tail)
{
    struct hts t;
    char want[128], *out, *path;
    uint32_t h;

    clients_fixture(&t);
    path = pattern_file(n, &h);
    out = run_ok("curl -sS --max-time 10 %s --data-binary @%s "
                 "http://127.0.0.1:%d/sum%s",
                 opts, path, t.port, after);
    snprintf(want, sizeof(want), "len=%zu fnv=%08x te=%s", n, h, te_tail);
    cr_assert_str_eq(out, want);
    free(out);
    unlink(path);
    free(path);
    hts_fini(&t);
}

Test(http_clients, curl_chunked_upload, .timeout = ES_TEST_TIMEOUT)
{
    SKIP_WITHOUT("curl");
    curl_upload(300000, "-H 'Transfer-Encoding: chunked'", "", "chunked");
}

Test(http_clients, curl_large_upload_expect, .timeout = ES_TEST_TIMEOUT)
{
    SKIP_WITHOUT("curl");
    /* Ask for 100-continue explicitly (curl does for large bodies too). */
    curl_upload(3u << 20, "--expect100-timeout 5 -H 'Expect: 100-continue'",
                " -w ' %{http_code}'", "- 200");
}

Test(http_clients, curl_http10_head_and_stream, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    char *out;

    SKIP_WITHOUT("curl");
    clients_fixture(&t);
    out = run_ok("curl -sS -0 --max-time 10 http://127.0.0.1:%d/t/ten", t.port);
    cr_assert_str_eq(out, "/t/ten");
    free(out);
    out =
        run_ok("curl -sS -I --max-time 10 http://127.0.0.1:%d/t/head", t.port);
    cr_assert(strncmp(out, "HTTP/1.1 200", 12) == 0, "%s", out);
    cr_assert(strcasestr(out, "Content-Length: 7"), "%s", out);
    free(out);
    out = run_ok("curl -sS --max-time 10 http://127.0.0.1:%d/stream "
                 "http://127.0.0.1:%d/t/after",
                 t.port, t.port);
    cr_assert_str_eq(out, "s0 s1 s2 s3 s4 s5 s6 s7 s8 s9 /t/after");
    free(out);
    out =
        run_ok("curl -sS -0 --max-time 10 http://127.0.0.1:%d/stream", t.port);
    cr_assert_str_eq(out, "s0 s1 s2 s3 s4 s5 s6 s7 s8 s9 ");
    free(out);
    hts_fini(&t);
}

/* --- Python http.client --------------------------------------------------- */

static const char py_script[] =
    "import http.client, sys\n"
    "port = int(sys.argv[1])\n"
    "c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)\n"
    "out = []\n"
    "def get(method, path, **kw):\n"
    "    c.request(method, path, **kw)\n"
    "    r = c.getresponse()\n"
    "    out.append('%d %s' % (r.status, r.read().decode()))\n"
    "for i in range(3):\n"
    "    get('GET', '/t/py?i=%d' % i)\n"
    "get('POST', '/sum', body=b'x' * 100000)\n"
    "def gen():\n"
    "    for i in range(10):\n"
    "        yield b'y' * 1000\n"
    "get('POST', '/sum', body=gen(), encode_chunked=True,\n"
    "    headers={'Transfer-Encoding': 'chunked'})\n"
    "get('GET', '/stream')\n"
    "get('GET', '/missing')\n"
    "c.request('HEAD', '/t/head')\n"
    "r = c.getresponse()\n"
    "out.append('%d %s %r' % (r.status, r.getheader('Content-Length'),\n"
    "                         r.read()))\n"
    "get('GET', '/t/last')\n"
    "print('\\n'.join(out))\n";

Test(http_clients, python_http_client, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    char path[] = "/tmp/es_http_py_XXXXXX", want[1024], *out;
    int fd;

    SKIP_WITHOUT("python3");
    clients_fixture(&t);
    fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, py_script, sizeof(py_script) - 1),
                 (ssize_t)sizeof(py_script) - 1);
    close(fd);
    out = run_ok("python3 %s %d", path, t.port);
    unlink(path);
    {
        char *x = malloc(100000), *y = malloc(10000);

        cr_assert(x && y);
        memset(x, 'x', 100000);
        memset(y, 'y', 10000);
        snprintf(want, sizeof(want),
                 "200 /t/py?i=0\n200 /t/py?i=1\n200 /t/py?i=2\n"
                 "200 len=100000 fnv=%08x te=-\n"
                 "200 len=10000 fnv=%08x te=chunked\n"
                 "200 s0 s1 s2 s3 s4 s5 s6 s7 s8 s9 \n",
                 fnv(x, 100000), fnv(y, 10000));
        free(x);
        free(y);
    }
    cr_assert(strncmp(out, want, strlen(want)) == 0, "got:\n%s\nwant:\n%s", out,
              want);
    cr_assert(strstr(out, "\n404 "), "%s", out);
    cr_assert(strstr(out, "\n200 7 b''\n200 /t/last\n"), "%s", out);
    free(out);
    cr_assert_eq(hts_stats(&t).accepted, 1,
                 "python reconnected: %llu connections",
                 (unsigned long long)hts_stats(&t).accepted);
    hts_fini(&t);
}
