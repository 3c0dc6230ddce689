/* SPDX-License-Identifier: MIT */
/*
 * The metrics page (es_http_server_metrics()): the counters of the runtime
 * (es_runtime_stats(), for the whole runtime and per demux thread) and of
 * the HTTP server (es_http_server_stats()) in the Prometheus text
 * exposition format 0.0.4, built when a request asks for it, on the
 * connection's demux thread (both stats calls are safe from any thread and
 * never block).
 *
 * Each counter is one row of a table (name, help, type, where its value
 * is), so a new field of es_stats_t or es_http_server_stats_t is one more
 * row; a _Static_assert below refuses to build while a field has none.
 * Counters get the suffix _total; a family's HELP and TYPE come before its
 * samples; label values and help texts are escaped as the format says
 * (backslash, double quote in label values, newline).
 *
 * The runtime's whole-runtime totals (eventserver_<field>) and its
 * per-thread values (eventserver_loop_<field>{loop="i"}) are separate
 * families: the totals also count senders that are not demux threads, so
 * they are not the sum of the threads, and a sum over a family must mean
 * something (Prometheus naming guidelines).
 */
#include "server_private.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum { COUNTER, GAUGE };

/* --- The tables ----------------------------------------------------------- */

/* One field of es_stats_t. */
struct rt_row {
    const char *name; /* the field's name: eventserver_<name>[_total] */
    const char *help;
    uint8_t type;
    bool whole; /* kept for the whole runtime only (no per-thread family) */
    size_t off; /* offsetof(es_stats_t, field) */
};

#define RT(field, type, whole, help)                                           \
    {                                                                          \
#field, help, type, whole, offsetof(es_stats_t, field)                 \
    }

static const struct rt_row rt_rows[] = {
    RT(msgs_sent, COUNTER, false, "Messages accepted by es_send()."),
    RT(msgs_received, COUNTER, false, "Messages delivered to a behaviour."),
    RT(dead_letters, COUNTER, false, "Messages whose target had stopped."),
    RT(mailbox_full, COUNTER, false, "Foreign sends refused with -EAGAIN."),
    RT(wakeups_written, COUNTER, false,
       "Bytes written to a sleeping demux thread to wake it."),
    RT(wakeups_saved, COUNTER, false,
       "Cross-thread sends that needed no wakeup."),
    RT(timers_fired, COUNTER, false, "ES_MSG_TIMER messages delivered."),
    RT(actors, GAUGE, false, "Actors living now."),
    RT(loop_turns, COUNTER, false, "Iterations of the demux loop."),
    RT(sleeps, COUNTER, false, "Times a demux loop blocked in epoll_wait()."),
    RT(mutes, COUNTER, false, "Actors paused because a receiver was full."),
    RT(overflowed, COUNTER, false,
       "Messages that waited in the sender's thread for room in a full ring "
       "to another thread."),
    RT(migrations, COUNTER, false, "Actors that moved to another thread."),
    RT(shed, COUNTER, false,
       "Actors moved off a saturated thread to an idle one (load shedding)."),
    RT(monitors, GAUGE, true, "Monitors set now (es_monitor())."),
    RT(links, GAUGE, true, "Links between two live actors now."),
    RT(downs, COUNTER, true, "ES_MSG_DOWN messages sent."),
    RT(names, GAUGE, true, "Names registered now (es_register())."),
    RT(late_replies, COUNTER, true,
       "Replies dropped: their request had an outcome already."),
    RT(requests_timed_out, COUNTER, true, "Requests failed with -ETIMEDOUT."),
};

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

_Static_assert(NROWS(rt_rows) == sizeof(es_stats_t) / sizeof(uint64_t),
               "every field of es_stats_t needs its row in rt_rows "
               "(http/metrics.c)");

/* One field of es_http_server_stats_t, or an array of them with a label. */
struct http_row {
    const char *name; /* eventserver_http_<name>[_total] */
    const char *help;
    uint8_t type;
    size_t off;                       /* of the field or its first element */
    const char *label;                /* NULL: a single value */
    unsigned n;                       /* elements (1 without a label) */
    const char *(*value)(unsigned i); /* label value of element i */
};

static const char *class_label(unsigned i)
{
    static const char *const names[ES_HTTP_STATUS_CLASSES] = {
        "1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    return names[i];
}

static const char *limit_label(unsigned i)
{
    return es_http_limit_name((int)i);
}

#define HS(field) offsetof(es_http_server_stats_t, field)
#define HTTP1(name, field, type, help)                                         \
    {                                                                          \
        name, help, type, HS(field), NULL, 1, NULL                             \
    }

static const struct http_row http_rows[] = {
    HTTP1("connections", connections, GAUGE, "Connections open now."),
    HTTP1("connections_accepted", accepted, COUNTER, "Connections accepted."),
    HTTP1("requests", requests, COUNTER,
          "Complete requests handed to a handler."),
    HTTP1("rejected", rejected, COUNTER,
          "Error responses (4xx, 5xx) the server made itself."),
    HTTP1("deferred_gone", deferred_gone, COUNTER,
          "Deferred responses whose client left first."),
    HTTP1("body_buffer_bytes", body_bytes, GAUGE,
          "Request-body bytes reserved now (max_body_buffer)."),
    HTTP1("body_buffer_peak_bytes", body_bytes_peak, GAUGE,
          "Most request-body bytes ever reserved at once."),
    HTTP1("body_waits", body_waits, COUNTER,
          "Times a request body paused for max_body_buffer."),
    HTTP1("received_bytes", bytes_in, COUNTER,
          "Bytes read from the connections' sockets."),
    HTTP1("sent_bytes", bytes_out, COUNTER,
          "Response bytes handed to the connections for sending."),
    {"responses", "Responses by status class (other: 600 to 999).", COUNTER,
     HS(responses), "class", ES_HTTP_STATUS_CLASSES, class_label},
    {"limit_hits",
     "Requests or connections refused by a limit (the es_http_server_opts_t "
     "field).",
     COUNTER, HS(limit_hits), "limit", ES_HTTP_LIMITS, limit_label},
};

/* The rows with a label are the last two; each of the others is one
 * uint64_t field. */
_Static_assert(NROWS(http_rows) - 2 + ES_HTTP_STATUS_CLASSES + ES_HTTP_LIMITS ==
                   sizeof(es_http_server_stats_t) / sizeof(uint64_t),
               "every field of es_http_server_stats_t needs its row in "
               "http_rows (http/metrics.c)");

/* --- Writing the page ----------------------------------------------------- */

/* The page being built; err sticks at the first failure. */
struct page {
    struct es__buf b;
    int err;
};

static void add(struct page *pg, const char *s, size_t n)
{
    if (!pg->err)
        pg->err = es__buf_add(&pg->b, s, n);
}

static void adds(struct page *pg, const char *s)
{
    add(pg, s, strlen(s));
}

static void add_u64(struct page *pg, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    add(pg, tmp, (size_t)n);
}

/* Appends s escaped: backslash and newline, and in a label value the
 * double quote too (the format's two escaping rules). */
static void add_escaped(struct page *pg, const char *s, bool label)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            add(pg, "\\\\", 2);
        else if (*p == '\n')
            add(pg, "\\n", 2);
        else if (*p == '"' && label)
            add(pg, "\\\"", 2);
        else
            add(pg, p, 1);
    }
}

/* "prefix" "name" ["_total"] into out. */
static void full_name(char *out, size_t cap, const char *prefix,
                      const char *name, uint8_t type)
{
    snprintf(out, cap, "%s%s%s", prefix, name, type == COUNTER ? "_total" : "");
}

/* The # HELP and # TYPE lines of a family. */
static void family(struct page *pg, const char *name, uint8_t type,
                   const char *help, const char *help_more)
{
    adds(pg, "# HELP ");
    adds(pg, name);
    add(pg, " ", 1);
    add_escaped(pg, help, false);
    add_escaped(pg, help_more, false);
    adds(pg, "\n# TYPE ");
    adds(pg, name);
    adds(pg, type == COUNTER ? " counter\n" : " gauge\n");
}

/* One sample: name{label="value"} v, or name v when label is NULL. */
static void sample(struct page *pg, const char *name, const char *label,
                   const char *value, uint64_t v)
{
    adds(pg, name);
    if (label) {
        add(pg, "{", 1);
        adds(pg, label);
        add(pg, "=\"", 2);
        add_escaped(pg, value, true);
        add(pg, "\"}", 2);
    }
    add(pg, " ", 1);
    add_u64(pg, v);
    add(pg, "\n", 1);
}

static uint64_t field_at(const void *stats, size_t off)
{
    uint64_t v;
    memcpy(&v, (const char *)stats + off, sizeof(v));
    return v;
}

static void runtime_totals(struct page *pg, const es_stats_t *all)
{
    char name[96];
    for (size_t r = 0; r < NROWS(rt_rows); r++) {
        const struct rt_row *row = &rt_rows[r];
        full_name(name, sizeof(name), "eventserver_", row->name, row->type);
        family(pg, name, row->type, row->help,
               row->whole ? "" : " Whole runtime.");
        sample(pg, name, NULL, NULL, field_at(all, row->off));
    }
}

static void runtime_loops(struct page *pg, const es_stats_t *loops, unsigned n)
{
    char name[96], idx[16];
    for (size_t r = 0; r < NROWS(rt_rows); r++) {
        const struct rt_row *row = &rt_rows[r];
        if (row->whole)
            continue;
        full_name(name, sizeof(name), "eventserver_loop_", row->name,
                  row->type);
        family(pg, name, row->type, row->help, " Per demux thread.");
        for (unsigned i = 0; i < n; i++) {
            snprintf(idx, sizeof(idx), "%u", i);
            sample(pg, name, "loop", idx, field_at(&loops[i], row->off));
        }
    }
}

static void http_all(struct page *pg, const es_http_server_stats_t *st)
{
    char name[96];
    for (size_t r = 0; r < NROWS(http_rows); r++) {
        const struct http_row *row = &http_rows[r];
        full_name(name, sizeof(name), "eventserver_http_", row->name,
                  row->type);
        family(pg, name, row->type, row->help, "");
        for (unsigned i = 0; i < row->n; i++)
            sample(pg, name, row->label, row->label ? row->value(i) : NULL,
                   field_at(st, row->off + i * sizeof(uint64_t)));
    }
}

/* Appends what an es_http_server_metrics_add() source writes, growing its
 * buffer from 4 KiB to at most 1 MiB while it answers -EOVERFLOW. */
static int more(struct page *pg, es_http_metrics_cb cb, void *arg)
{
    for (size_t size = 4096; size <= (1u << 20); size *= 2) {
        char *buf = es_malloc(size);
        if (!buf)
            return -ENOMEM;
        int n = cb(arg, buf, size);
        if (n >= 0 && (size_t)n < size)
            add(pg, buf, (size_t)n);
        es_free(buf);
        if (n != -EOVERFLOW)
            return n < 0 ? n : pg->err;
    }
    return -EOVERFLOW;
}

/* Builds the whole page. Returns: 0 or -errno (pg->b then holds a part). */
static int build(struct page *pg, es_http_server_t *srv)
{
    es_stats_t all;
    es_http_server_stats_t hs;
    unsigned n = es_runtime_threads(srv->rt);
    es_stats_t *loops = es_calloc(n ? n : 1, sizeof(*loops));
    if (!loops)
        return -ENOMEM;
    int rc = es_runtime_stats(srv->rt, -1, &all);
    for (unsigned i = 0; !rc && i < n; i++)
        rc = es_runtime_stats(srv->rt, (int)i, &loops[i]);
    if (!rc)
        rc = es_http_server_stats(srv, &hs);
    if (!rc) {
        runtime_totals(pg, &all);
        runtime_loops(pg, loops, n);
        http_all(pg, &hs);
        rc = pg->err;
    }
    for (unsigned i = 0; !rc && i < srv->nmetrics_src; i++)
        rc = more(pg, srv->metrics_src[i].cb, srv->metrics_src[i].arg);
    es_free(loops);
    return rc;
}

static void serve(es_http_request_t *req, es_http_response_t *res, void *arg)
{
    (void)req;
    struct page pg = {0};
    int rc = build(&pg, arg);
    if (!rc)
        rc = es_http_response_header(res, "Content-Type", CONTENT_TYPE);
    if (!rc)
        rc = es_http_response_body_ref(res, pg.b.data, pg.b.len, es_free);
    if (rc) {
        es__buf_free(&pg.b);
        es_log(ES_LOG_WARN, "http: building the metrics page: %s",
               es_strerror(rc));
        (void)es_http_response_status(res, 500);
        (void)es_http_response_body(res, "metrics unavailable\n", 20);
    }
}

int es_http_server_metrics(es_http_server_t *s, const char *path)
{
    return es_http_server_route(s, "GET", path, serve, s);
}

int es_http_server_metrics_add(es_http_server_t *s, es_http_metrics_cb cb,
                               void *arg)
{
    if (!s || !cb)
        return -EINVAL;
    if (atomic_load(&s->started))
        return -EBUSY;
    if (s->nmetrics_src == ES_HTTP_METRICS_SOURCES)
        return -ENOSPC;
    s->metrics_src[s->nmetrics_src].cb = cb;
    s->metrics_src[s->nmetrics_src].arg = arg;
    s->nmetrics_src++;
    return 0;
}
