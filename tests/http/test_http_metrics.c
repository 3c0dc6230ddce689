/* SPDX-License-Identifier: MIT */
/*
 * Tests of es_http_server_metrics() (http/metrics.c) and the counters it
 * shows: a server on 127.0.0.1 answers some requests (200s, 404s, requests
 * refused by a limit), then GET /metrics must be a valid Prometheus text
 * exposition (format 0.0.4) whose values are what happened: checked by a
 * strict parser written here (every line a comment, blank, or
 * `name{labels} value`; HELP and TYPE before their samples; no family
 * split or repeated) and, when Debian's python3-prometheus-client is
 * installed, by prometheus_client.parser in a subprocess. Also: the new
 * counters of es_http_server_stats_t exactly (bytes in and out on the
 * wire, responses by class with a 100 Continue, one hit per limit kind).
 */
#include "http_test.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <sys/wait.h>

#define CT_WANT "text/plain; version=0.0.4; charset=utf-8"

/* --- A strict reader of the text format ----------------------------------- */

static bool is_name(const char *s, size_t n, bool colon)
{
    if (n == 0 || (!isalpha((unsigned char)s[0]) && s[0] != '_' &&
                   !(colon && s[0] == ':')))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' &&
            !(colon && s[i] == ':'))
            return false;
    return true;
}

/* Length of the metric name at s. */
static size_t name_len(const char *s)
{
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_' || s[n] == ':')
        n++;
    return n;
}

/* Reads {a="x",b="y"} at s (escapes \\ \" \n only). Returns its length,
 * or 0 if malformed. */
static size_t labels_len(const char *s)
{
    size_t i = 1;
    if (s[0] != '{')
        return 0;
    while (s[i] != '}') {
        size_t n = name_len(s + i);
        if (!is_name(s + i, n, false) || s[i + n] != '=' || s[i + n + 1] != '"')
            return 0;
        i += n + 2;
        while (s[i] != '"') {
            if (s[i] == '\0' || s[i] == '\n')
                return 0;
            if (s[i] == '\\' && s[i + 1] != '\\' && s[i + 1] != '"' &&
                s[i + 1] != 'n')
                return 0;
            i += s[i] == '\\' ? 2 : 1;
        }
        i++;
        if (s[i] == ',')
            i++;
        else if (s[i] != '}')
            return 0;
    }
    return i + 1;
}

/* A number as the format allows: a Go float, or +Inf, -Inf, NaN. */
static bool is_value(const char *s, size_t n)
{
    char buf[64], *end;
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (!strcmp(buf, "+Inf") || !strcmp(buf, "-Inf") || !strcmp(buf, "NaN"))
        return true;
    errno = 0;
    strtod(buf, &end);
    return *end == '\0' && errno == 0 && !isspace((unsigned char)buf[0]);
}

struct expo {
    char fams[256][96]; /* families TYPEd so far, in order */
    char types[256][16];
    unsigned nfams;
    char series[1024][160]; /* name{labels} seen */
    unsigned nseries;
};

static int fam_find(const struct expo *e, const char *name, size_t n)
{
    for (unsigned i = 0; i < e->nfams; i++)
        if (strlen(e->fams[i]) == n && !memcmp(e->fams[i], name, n))
            return (int)i;
    return -1;
}

/* Checks a "# HELP" or "# TYPE" line (other comments are free text). */
static const char *check_comment(struct expo *e, const char *l, size_t n,
                                 int *cur)
{
    bool type = n > 7 && !memcmp(l, "# TYPE ", 7);
    if (!type && !(n > 7 && !memcmp(l, "# HELP ", 7)))
        return NULL;
    size_t nl = name_len(l + 7);
    if (!is_name(l + 7, nl, true) || (l[7 + nl] != ' ' && 7 + nl != n))
        return "bad name in HELP/TYPE";
    if (!type)
        return NULL;
    const char *t = l + 8 + nl;
    size_t tl = n - 8 - nl;
    if (!(tl == 7 && !memcmp(t, "counter", 7)) &&
        !(tl == 5 && !memcmp(t, "gauge", 5)))
        return "type is neither counter nor gauge";
    if (fam_find(e, l + 7, nl) >= 0)
        return "family TYPEd twice";
    if (e->nfams == 256 || nl >= 96)
        return "too many families";
    if (tl == 7 && (nl < 6 || memcmp(l + 7 + nl - 6, "_total", 6)))
        return "counter name without _total";
    memcpy(e->fams[e->nfams], l + 7, nl);
    e->fams[e->nfams][nl] = '\0';
    memcpy(e->types[e->nfams], t, tl);
    e->types[e->nfams][tl] = '\0';
    *cur = (int)e->nfams++;
    return NULL;
}

static const char *check_sample(struct expo *e, const char *l, size_t n,
                                int cur)
{
    size_t nl = name_len(l), ll = 0;
    if (!is_name(l, nl, true))
        return "bad metric name";
    if (cur < 0 || strlen(e->fams[cur]) != nl || memcmp(e->fams[cur], l, nl))
        return "sample outside its family (no TYPE just before)";
    if (l[nl] == '{' && !(ll = labels_len(l + nl)))
        return "bad labels";
    if (l[nl + ll] != ' ' || nl + ll + 1 >= n)
        return "no single space before the value";
    const char *v = l + nl + ll + 1;
    const char *sp = memchr(v, ' ', n - nl - ll - 1);
    if (!is_value(v, sp ? (size_t)(sp - v) : n - nl - ll - 1))
        return "value is not a number";
    if (nl + ll >= 160 || e->nseries == 1024)
        return "series too long";
    for (unsigned i = 0; i < e->nseries; i++)
        if (strlen(e->series[i]) == nl + ll &&
            !memcmp(e->series[i], l, nl + ll))
            return "series repeated";
    memcpy(e->series[e->nseries], l, nl + ll);
    e->series[e->nseries++][nl + ll] = '\0';
    return NULL;
}

/* Checks the whole page. Returns NULL, or why not (*line: which line). */
static const char *expo_check(struct expo *e, const char *body, size_t len,
                              unsigned *line)
{
    int cur = -1;
    memset(e, 0, sizeof(*e));
    *line = 0;
    if (len == 0 || body[len - 1] != '\n')
        return "page does not end in a newline";
    if (memchr(body, '\0', len) || memchr(body, '\r', len))
        return "NUL or CR in the page";
    for (const char *l = body; l < body + len;) {
        const char *nl = memchr(l, '\n', (size_t)(body + len - l));
        size_t n = (size_t)(nl - l);
        const char *why = NULL;
        ++*line;
        if (n > 0 && l[0] == '#')
            why = check_comment(e, l, n, &cur);
        else if (n > 0)
            why = check_sample(e, l, n, cur);
        if (why)
            return why;
        l = nl + 1;
    }
    return e->nseries ? NULL : "no samples";
}

/* The value of series ("name" or "name{k=\"v\"}") on the page, or NAN. */
static double page_value(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = body; *l;) {
        if (!strncmp(l, series, n) && l[n] == ' ')
            return strtod(l + n + 1, NULL);
        const char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return NAN;
}

#define PAGE_IS(body, series, want)                                            \
    do {                                                                       \
        double pv_ = page_value((body), (series));                             \
        cr_assert(pv_ == (double)(want), "%s = %g, want %g", (series), pv_,    \
                  (double)(want));                                             \
    } while (0)

/* --- The scenario --------------------------------------------------------- */

#define MAX_URL 64
#define MAX_HEADERS 4
#define OK_N 3
#define MISSING_N 2

/* A source of more families (es_http_server_metrics_add()): a counter
 * with a label, written past the first buffer size it is offered so that
 * the page must grow it. */
static int extra_metrics(void *arg, char *buf, size_t size)
{
    (void)arg;
    size_t pad = 5000; /* > the first 4 KiB offered */
    if (size < pad + 200)
        return -EOVERFLOW;
    int n = snprintf(buf, size,
                     "# HELP extra_things_total Things counted elsewhere.\n"
                     "# TYPE extra_things_total counter\n"
                     "extra_things_total{node=\"n1\"} 7\n");
    memset(buf + n, '#', 1); /* a comment line that fills the page */
    memset(buf + n + 1, ' ', pad - 2);
    buf[n + pad - 1] = '\n';
    return n + (int)pad;
}

static void scenario_start(struct hts *t)
{
    es_http_server_opts_t o = {.max_url = MAX_URL, .max_headers = MAX_HEADERS};
    hts_init(t, 2, &o);
    hts_route(t, "GET", "/ok", h_text, "ok");
    ES_OK(es_http_server_metrics(t->srv, "/metrics"));
    ES_OK(es_http_server_metrics_add(t->srv, extra_metrics, NULL));
    hts_start(t);
}

static int status_of(int port, const char *raw)
{
    struct hr r;
    int st;
    HTTP_ONCE(port, raw, &r, 0);
    st = r.status;
    hr_release(&r);
    return st;
}

/* 3 x 200, 2 x 404, one 414 (max_url), one 431 (max_headers): 7
 * connections, then GET /metrics on an 8th. Returns the page. */
static struct hr scenario_run(const struct hts *t)
{
    char raw[512], url[MAX_URL + 2];
    struct hr r;

    for (int i = 0; i < OK_N; i++)
        http_expect(t->port, "/ok", 200);
    for (int i = 0; i < MISSING_N; i++)
        http_expect(t->port, "/missing", 404);
    memset(url, 'a', sizeof(url) - 1);
    url[0] = '/';
    url[sizeof(url) - 1] = '\0';
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", url);
    cr_assert_eq(status_of(t->port, raw), 414);
    cr_assert_eq(status_of(t->port, "GET /ok HTTP/1.1\r\nHost: t\r\n"
                                    "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"),
                 431);
    http_get(t->port, "/metrics", &r);
    cr_assert_eq(r.status, 200, "GET /metrics: %d", r.status);
    cr_assert_not_null(hr_header(&r, "Content-Type"));
    cr_assert_str_eq(hr_header(&r, "Content-Type"), CT_WANT);
    cr_assert_not_null(r.body);
    return r;
}

/* What the scenario must show, as (series, value) pairs. */
static const struct {
    const char *series;
    double value;
} scenario_want[] = {
    /* every request handed to a handler: the 200s and /metrics itself */
    {"eventserver_http_requests_total", OK_N + 1},
    {"eventserver_http_responses_total{class=\"1xx\"}", 0},
    {"eventserver_http_responses_total{class=\"2xx\"}", OK_N},
    {"eventserver_http_responses_total{class=\"3xx\"}", 0},
    {"eventserver_http_responses_total{class=\"4xx\"}", MISSING_N + 2},
    {"eventserver_http_responses_total{class=\"5xx\"}", 0},
    {"eventserver_http_rejected_total", MISSING_N + 2},
    {"eventserver_http_connections_accepted_total", OK_N + MISSING_N + 3},
    {"eventserver_http_limit_hits_total{limit=\"max_url\"}", 1},
    {"eventserver_http_limit_hits_total{limit=\"max_headers\"}", 1},
    {"eventserver_http_limit_hits_total{limit=\"max_header_bytes\"}", 0},
    {"eventserver_http_limit_hits_total{limit=\"max_body\"}", 0},
    {"eventserver_http_limit_hits_total{limit=\"header_timeout_ms\"}", 0},
    {"eventserver_http_limit_hits_total{limit=\"max_connections\"}", 0},
    {"eventserver_http_body_buffer_bytes", 0},
};

/* Fields of es_stats_t as the page must name them. */
static const char *const rt_counters[] = {
    "msgs_sent",    "msgs_received",   "dead_letters",
    "mailbox_full", "wakeups_written", "wakeups_saved",
    "timers_fired", "loop_turns",      "sleeps",
    "mutes",        "overflowed",      "migrations",
    "shed"};

/* --- Tests ---------------------------------------------------------------- */

Test(http_metrics, page_is_strict_text_format, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct expo *e = calloc(1, sizeof(*e));
    unsigned line;
    char series[160];

    cr_assert_not_null(e);
    scenario_start(&t);
    struct hr r = scenario_run(&t);
    const char *why = expo_check(e, r.body, r.body_len, &line);
    cr_assert_null(why, "line %u: %s\n%s", line, why ? why : "", r.body);
    for (size_t i = 0; i < sizeof(scenario_want) / sizeof(scenario_want[0]);
         i++)
        PAGE_IS(r.body, scenario_want[i].series, scenario_want[i].value);
    /* Every field of es_stats_t, whole runtime and per thread. */
    for (size_t i = 0; i < sizeof(rt_counters) / sizeof(rt_counters[0]); i++) {
        snprintf(series, sizeof(series), "eventserver_%s_total",
                 rt_counters[i]);
        cr_assert(!isnan(page_value(r.body, series)), "no %s", series);
        for (int loop = 0; loop < 2; loop++) {
            snprintf(series, sizeof(series),
                     "eventserver_loop_%s_total{loop=\"%d\"}", rt_counters[i],
                     loop);
            cr_assert(!isnan(page_value(r.body, series)), "no %s", series);
        }
    }
    cr_assert_gt(page_value(r.body, "eventserver_actors"), 0);
    cr_assert(
        !isnan(page_value(r.body, "eventserver_loop_actors{loop=\"1\"}")));
    cr_assert(!isnan(page_value(r.body, "eventserver_monitors")));
    cr_assert(!isnan(page_value(r.body, "eventserver_links")));
    cr_assert(!isnan(page_value(r.body, "eventserver_downs_total")));
    cr_assert(strstr(r.body, "# TYPE eventserver_actors gauge\n"));
    cr_assert(strstr(r.body, "# TYPE eventserver_msgs_sent_total counter\n"));
    cr_assert_gt(page_value(r.body, "eventserver_msgs_received_total"), 0);
    cr_assert_gt(page_value(r.body, "eventserver_http_received_bytes_total"),
                 0);
    cr_assert_gt(page_value(r.body, "eventserver_http_sent_bytes_total"), 0);
    /* The source's family, after a second, larger buffer. */
    PAGE_IS(r.body, "extra_things_total{node=\"n1\"}", 7);
    /* /metrics is counted once its response is written */
    cr_assert_eq(hts_stats(&t).responses[1], OK_N + 1);
    hr_release(&r);
    free(e);
    hts_fini(&t);
}

/* Debian's prometheus_client is installed for /usr/bin/python3; a python3
 * earlier on PATH (pyenv, a venv) may not have it. */
static const char *python_with_client(void)
{
    static const char *const cands[] = {"/usr/bin/python3", "python3"};
    char cmd[256];

    for (size_t i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd),
                 "%s -c 'import prometheus_client.parser' >/dev/null 2>&1",
                 cands[i]);
        if (system(cmd) == 0)
            return cands[i];
    }
    return NULL;
}

/* Parses stdin with prometheus_client and prints one line per sample:
 * "name{k=v,...} value"; exits non-zero on any parse error or on a type
 * other than counter or gauge. */
static const char py_script[] =
    "import sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "n = 0\n"
    "for fam in text_string_to_metric_families(sys.stdin.read()):\n"
    "    if fam.type not in ('counter', 'gauge'):\n"
    "        sys.exit('%s: type %s' % (fam.name, fam.type))\n"
    "    for s in fam.samples:\n"
    "        lab = ','.join('%s=%s' % kv for kv in sorted(s.labels.items()))\n"
    "        print('%s{%s} %r' % (s.name, lab, s.value))\n"
    "        n += 1\n"
    "sys.exit(0 if n else 'no samples')\n";

/* Runs the script on body. Returns its output; *status its exit code. */
static char *python_parse(const char *py, const char *body, size_t len,
                          int *status)
{
    char in_path[] = "/tmp/es_metrics_in_XXXXXX";
    char py_path[] = "/tmp/es_metrics_py_XXXXXX";
    char *cmd = NULL, *out = NULL, buf[4096];
    size_t out_len = 0, n;
    int fd;
    FILE *p, *o;

    fd = mkstemp(in_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, body, len), (ssize_t)len);
    close(fd);
    fd = mkstemp(py_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, py_script, sizeof(py_script) - 1),
                 (ssize_t)sizeof(py_script) - 1);
    close(fd);
    cr_assert_gt(
        asprintf(&cmd, "timeout 30 %s %s < %s 2>&1", py, py_path, in_path), 0);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    o = open_memstream(&out, &out_len);
    cr_assert_not_null(o);
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
        fwrite(buf, 1, n, o);
    fclose(o);
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    unlink(in_path);
    unlink(py_path);
    free(cmd);
    return out;
}

/* The value the parser printed for "name{k=v}", or NAN. */
static double parsed_value(const char *out, const char *key)
{
    size_t n = strlen(key);
    for (const char *l = out; *l;) {
        if (!strncmp(l, key, n) && l[n] == ' ')
            return strtod(l + n + 1, NULL);
        const char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return NAN;
}

/* "name{k=\"v\"}" (the page) -> "name{k=v}" (the script's output). */
static void parsed_key(const char *series, char *out, size_t cap)
{
    size_t j = 0;
    for (const char *s = series; *s && j + 3 < cap; s++)
        if (*s != '"')
            out[j++] = *s;
    if (!strchr(series, '{')) {
        out[j++] = '{';
        out[j++] = '}';
    }
    out[j] = '\0';
}

Test(http_metrics, prometheus_client_parses_page, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    const char *py = python_with_client();
    char key[192];
    int st;

    if (!py) {
        fprintf(stderr,
                "\n*** SKIPPED http_metrics::prometheus_client_parses_page: "
                "python3-prometheus-client is not installed (apt-get install "
                "python3-prometheus-client, or run .ci/deps.sh as root); only "
                "the C check of the page ran ***\n\n");
        cr_skip_test("python3-prometheus-client is not installed");
    }
    scenario_start(&t);
    struct hr r = scenario_run(&t);
    char *out = python_parse(py, r.body, r.body_len, &st);
    cr_assert_eq(st, 0,
                 "prometheus_client refused the page (exit %d):\n%s\n"
                 "--- page:\n%s",
                 st, out, r.body);
    for (size_t i = 0; i < sizeof(scenario_want) / sizeof(scenario_want[0]);
         i++) {
        parsed_key(scenario_want[i].series, key, sizeof(key));
        double v = parsed_value(out, key);
        cr_assert(v == scenario_want[i].value, "%s = %g, want %g\n%s", key, v,
                  scenario_want[i].value, out);
    }
    /* The parser's value of every sample equals the page's. */
    unsigned n = 0;
    for (const char *l = out; *l; n++) {
        const char *sp = strchr(l, ' '), *nl = strchr(l, '\n');
        cr_assert(sp && nl && sp < nl, "odd output line: %s", l);
        cr_assert(strchr(l, '{') && strchr(l, '{') < sp);
        l = nl + 1;
    }
    cr_assert_gt(n, 40, "only %u samples:\n%s", n, out);
    parsed_key("eventserver_loop_msgs_received_total{loop=\"0\"}", key,
               sizeof(key));
    cr_assert_eq(
        parsed_value(out, key),
        page_value(r.body, "eventserver_loop_msgs_received_total{loop=\"0\"}"));
    cr_assert_gt(parsed_value(out, "eventserver_http_sent_bytes_total{}"), 0);
    parsed_key("extra_things_total{node=\"n1\"}", key, sizeof(key));
    cr_assert_eq(parsed_value(out, key), 7);
    free(out);
    hr_release(&r);
    hts_fini(&t);
}

/* Receives into c until at least n bytes in all (or the end). */
static size_t recv_at_least(struct hc *c, size_t n)
{
    while (c->len < n && hc_fill(c, ES_TEST_WAIT_S) > 0)
        ;
    return c->len;
}

Test(http_metrics, bytes_and_classes_exact, .timeout = ES_TEST_TIMEOUT)
{
    static const char head[] = "POST /echo HTTP/1.1\r\nHost: t\r\n"
                               "Content-Length: 5\r\n"
                               "Expect: 100-continue\r\n\r\n";
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    static const char rest[] = "hello"
                               "GET /ok HTTP/1.1\r\nHost: t\r\n"
                               "Connection: close\r\n\r\n";
    struct hts t;
    struct hc c;

    hts_init(&t, 1, NULL);
    hts_route(&t, "POST", "/echo", h_echo_body, NULL);
    hts_route(&t, "GET", "/ok", h_text, "ok");
    hts_start(&t);
    /* Every byte the client receives stays in c.buf (nothing consumed). */
    hc_open(&c, t.port);
    HC_SEND(&c, head);
    cr_assert_eq(recv_at_least(&c, sizeof(cont) - 1), sizeof(cont) - 1);
    cr_assert(!memcmp(c.buf, cont, sizeof(cont) - 1));
    HC_SEND(&c, rest);
    while (hc_fill(&c, ES_TEST_WAIT_S) > 0)
        ;
    cr_assert(c.eof, "the server did not close");
    c.buf[c.len] = '\0';
    cr_assert(strstr(c.buf, "\r\n\r\nhello") && strstr(c.buf, "\r\n\r\nok"),
              "%s", c.buf);
    size_t got = c.len;
    hc_close(&c);

    es_http_server_stats_t st = hts_stats(&t);
    size_t sent = sizeof(head) - 1 + sizeof(rest) - 1;
    cr_assert_eq(st.bytes_in, sent, "bytes_in %llu, want %zu",
                 (unsigned long long)st.bytes_in, sent);
    cr_assert_eq(st.bytes_out, got, "bytes_out %llu, want %zu",
                 (unsigned long long)st.bytes_out, got);
    cr_assert_eq(st.responses[0], 1); /* the 100 Continue */
    cr_assert_eq(st.responses[1], 2);
    cr_assert_eq(st.responses[2] + st.responses[3] + st.responses[4] +
                     st.responses[5],
                 0);
    cr_assert_eq(st.requests, 2);
    hts_fini(&t);
}

/* Sends raw on a new connection; expects status and the close. */
static void refused(const struct hts *t, const char *raw, int status)
{
    struct hc c;
    struct hr r;

    hc_open(&c, t->port);
    HC_SEND(&c, raw);
    HC_READ(&c, &r, 0);
    cr_assert_eq(r.status, status, "%s: %d, want %d", raw, r.status, status);
    hr_release(&r);
    cr_assert_geq(hc_wait_eof(&c, ES_TEST_WAIT_S), 0);
    hc_close(&c);
}

Test(http_metrics, one_hit_per_limit_kind, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {.max_url = 32,
                               .max_header_bytes = 200,
                               .max_headers = 3,
                               .max_body = 16,
                               .header_timeout_ms = 100,
                               .max_connections = 2};
    struct hts t;
    struct hc keep1, keep2;
    struct hr r;
    char big[400];

    hts_init(&t, 1, &o);
    hts_route(&t, NULL, "/ok", h_text, "ok");
    ES_OK(es_http_server_metrics(t.srv, "/metrics"));
    hts_start(&t);
    refused(&t, "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
            414);
    snprintf(big, sizeof(big),
             "GET /ok HTTP/1.1\r\nHost: t\r\nX: %0250d\r\n\r\n", 0);
    refused(&t, big, 431);
    refused(&t, "GET /ok HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            431);
    refused(&t, "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n",
            413);
    refused(&t, "GET /ok HTTP/1.1\r\nHost: t\r\n", 408);
    HTS_WAIT_CONNS(&t, 0); /* the refused ones are gone */
    /* max_connections: two held open (each served once), a third refused */
    hc_open(&keep1, t.port);
    HC_SEND(&keep1, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&keep1, &r, 0);
    hr_release(&r);
    hc_open(&keep2, t.port);
    HC_SEND(&keep2, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&keep2, &r, 0);
    hr_release(&r);
    {
        struct hc c;
        hc_open(&c, t.port);
        HC_READ(&c, &r, 0);
        cr_assert_eq(r.status, 503);
        hr_release(&r);
        hc_close(&c);
    }
    HTS_WAIT_CONNS(&t, 2);
    es_http_server_stats_t st = hts_stats(&t);
    static const int want[ES_HTTP_LIMITS] = {[ES_HTTP_LIMIT_URL] = 1,
                                             [ES_HTTP_LIMIT_HEADER_BYTES] = 1,
                                             [ES_HTTP_LIMIT_HEADERS] = 1,
                                             [ES_HTTP_LIMIT_BODY] = 1,
                                             [ES_HTTP_LIMIT_HEADER_TIMEOUT] = 1,
                                             [ES_HTTP_LIMIT_CONNECTIONS] = 1};
    for (int k = 0; k < ES_HTTP_LIMITS; k++)
        cr_assert_eq(st.limit_hits[k], (uint64_t)want[k], "%s: %llu, want %d",
                     es_http_limit_name(k),
                     (unsigned long long)st.limit_hits[k], want[k]);
    cr_assert_eq(st.responses[3], 5);
    cr_assert_eq(st.responses[4], 1);
    /* The page shows the same, one series per limit. */
    HC_SEND(&keep1, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    HC_READ(&keep1, &r, 0);
    cr_assert_eq(r.status, 200);
    for (int k = 0; k < ES_HTTP_LIMITS; k++) {
        char series[128];
        snprintf(series, sizeof(series),
                 "eventserver_http_limit_hits_total{limit=\"%s\"}",
                 es_http_limit_name(k));
        PAGE_IS(r.body, series, want[k]);
    }
    PAGE_IS(r.body, "eventserver_http_connections", 2);
    hr_release(&r);
    hc_close(&keep1);
    hc_close(&keep2);
    hts_fini(&t);
}

Test(http_metrics, route_errors_and_head, .timeout = ES_TEST_TIMEOUT)
{
    struct hts t;
    struct hr r;

    cr_assert_null(es_http_limit_name(-1));
    cr_assert_null(es_http_limit_name(ES_HTTP_LIMITS));
    cr_assert_str_eq(es_http_limit_name(ES_HTTP_LIMIT_BODY_BUFFER),
                     "max_body_buffer");
    hts_init(&t, 1, NULL);
    cr_assert_eq(es_http_server_metrics(NULL, "/metrics"), -EINVAL);
    cr_assert_eq(es_http_server_metrics(t.srv, "metrics"), -EINVAL);
    cr_assert_eq(es_http_server_metrics(t.srv, NULL), -EINVAL);
    ES_OK(es_http_server_metrics(t.srv, "/m"));
    cr_assert_eq(es_http_server_metrics(t.srv, "/m"), -EEXIST);
    hts_start(&t);
    cr_assert_eq(es_http_server_metrics(t.srv, "/other"), -EBUSY);
    HTTP_ONCE(t.port, "HEAD /m HTTP/1.1\r\nHost: t\r\n\r\n", &r, HR_HEAD);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(hr_header(&r, "Content-Type"), CT_WANT);
    cr_assert_eq(r.body_len, 0);
    hr_release(&r);
    HTTP_ONCE(t.port,
              "POST /m HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r,
              0);
    cr_assert_eq(r.status, 405);
    hr_release(&r);
    hts_fini(&t);
}

Test(http_metrics, body_limits_told_apart, .timeout = ES_TEST_TIMEOUT)
{
    es_http_server_opts_t o = {
        .max_body = 1000, .max_body_buffer = 64, .body_read_timeout_ms = 100};
    struct hts t;

    hts_init(&t, 1, &o);
    hts_route(&t, NULL, "/echo", h_echo_body, NULL);
    hts_start(&t);
    /* over max_body: refused at the head */
    refused(&t,
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
            413);
    /* under max_body but past what max_body_buffer could ever hold */
    refused(&t, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
            413);
    /* a body that stalls */
    refused(&t,
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
            408);
    es_http_server_stats_t st = hts_stats(&t);
    cr_assert_eq(st.limit_hits[ES_HTTP_LIMIT_BODY], 1);
    cr_assert_eq(st.limit_hits[ES_HTTP_LIMIT_BODY_BUFFER], 1);
    cr_assert_eq(st.limit_hits[ES_HTTP_LIMIT_BODY_READ_TIMEOUT], 1);
    cr_assert_eq(st.limit_hits[ES_HTTP_LIMIT_BODY_TIMEOUT], 0);
    cr_assert_eq(st.responses[3], 3);
    hts_fini(&t);
}
