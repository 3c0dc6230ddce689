/* SPDX-License-Identifier: MIT */
/*
 * The HTTP module (library eventserver_http, pkg-config eventserver-http,
 * CMake eventserver::http): an HTTP/1.1 server with routes and deferred
 * responses, and an HTTP/1.1 client, both built on connection actors and
 * llhttp. Parsing is llhttp's; framing is checked strictly (RFC 9112).
 *
 * Server: es_http_server_new(), es_http_server_route() for each handler,
 * es_http_server_listen() for each address, es_http_server_start(). Each
 * accepted connection is a connection actor on one of the demux threads;
 * handlers run there, one request at a time per connection, and responses
 * go out in request order even when requests are pipelined.
 *
 * A handler fills the response it is given and returns; the response is
 * then sent. Or it calls es_http_response_defer() and keeps the response,
 * and finishes it later from any thread (a timer, another actor, a worker
 * thread) with es_http_response_end(). If the client leaves first, the
 * holder's on_gone callback runs and the later end() only frees.
 *
 * Client: es_http_client_new(), then es_http_client_request() with a URL;
 * the response (or an error code) arrives through a callback on a demux
 * thread. Connections are kept alive and reused per host, with a cap.
 */
#ifndef EVENTSERVER_HTTP_H
#define EVENTSERVER_HTTP_H

#include <eventserver/conn.h>

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- Headers (shared by requests, responses and client replies) ---------- */

/* A read-only list of header fields, in the order received. */
typedef struct es_http_headers es_http_headers_t;

/*
 * The value of the first field called `name` (case-insensitive).
 * Returns: a NUL-terminated value, or NULL if there is none.
 * Lifetime: as the request / reply the list belongs to.
 * Thread: any thread that may use the owning object.
 */
ES_EXTERN const char *es_http_headers_get(const es_http_headers_t *h,
                                          const char *name);

/* The number of fields. Thread: as es_http_headers_get(). */
ES_EXTERN size_t es_http_headers_count(const es_http_headers_t *h);

/*
 * The i-th field, in the order received.
 * Returns: 0, or -ERANGE if i >= es_http_headers_count().
 * Thread: as es_http_headers_get().
 */
ES_EXTERN int es_http_headers_at(const es_http_headers_t *h, size_t i,
                                 const char **name, const char **value);

/* The standard reason phrase of a status code ("Not Found"), or "Unknown". */
ES_EXTERN const char *es_http_status_text(int status);

/*
 * Finds `key` in a query string ("a=1&b=two") and copies its value,
 * %-decoded and with '+' as a space, into out (always NUL-terminated).
 * Returns: the value's length; -ENOENT if key is absent; -EOVERFLOW if it
 * does not fit in out_len (out then holds a truncated prefix); -EINVAL.
 * Thread: any.
 */
ES_EXTERN int es_http_query_get(const char *query, const char *key, char *out,
                                size_t out_len);

/* --- Server ------------------------------------------------------------ */

typedef struct es_http_server es_http_server_t;
typedef struct es_http_request es_http_request_t;
typedef struct es_http_response es_http_response_t;

/*
 * Handles one request: read req, fill res, return. The response is sent
 * when the handler returns, unless the handler started streaming it
 * (es_http_response_begin) or deferred it (es_http_response_defer).
 * Thread: the connection's demux thread.
 */
typedef void (*es_http_handler_cb)(es_http_request_t *req,
                                   es_http_response_t *res, void *arg);

/*
 * Fills the response of an error the server produces itself (400, 404,
 * 405, 408, 413, 414, 417, 431, 500, 501, 503, 505): res already carries
 * `status` and a short text body; the hook may replace the body and add
 * headers. req is NULL when the request could not be parsed far enough.
 * The connection closes after the response (with Connection: close) for
 * every one of them except 404 and 405.
 * Thread: the connection's demux thread.
 */
typedef void (*es_http_error_cb)(int status, const es_http_request_t *req,
                                 es_http_response_t *res, void *arg);

/*
 * Server settings. Zeroed fields take the defaults below; each limit, when
 * hit, produces the status in brackets and closes that connection only.
 */
typedef struct es_http_server_opts {
    /* Server header value; NULL: "EventServer"; "": no Server header. */
    const char *server_name;
    size_t max_url;             /* request target bytes [414]; 8 KiB */
    size_t max_header_bytes;    /* request line + all fields [431]; 16 KiB */
    unsigned max_headers;       /* number of fields [431]; 100 */
    size_t max_body;            /* decoded body bytes [413]; 8 MiB */
    unsigned header_timeout_ms; /* whole header must arrive in [408]; 10 s */
    unsigned body_timeout_ms;   /* whole body must arrive in [408]; 60 s */
    /* Longest wait between two reads of a body [408]; 15 s. Not counted
     * while the server itself holds reading back (max_body_buffer). */
    unsigned body_read_timeout_ms;
    /* Request-body bytes all connections together may buffer; 32 MiB.
     * A Content-Length body reserves its size when its head is read
     * [503 if it does not fit now; 413 if it never can]; a chunked body
     * takes budget as it grows, and its reading pauses while none is left
     * (resuming when a request frees some). Bodies read through on_body
     * (es_http_server_route_body) take none. */
    size_t max_body_buffer;
    unsigned keepalive_timeout_ms; /* idle between requests; 60 s */
    unsigned max_connections;      /* open at once; extra ones get 503; 10000 */
    size_t write_high; /* per-connection send queue high mark; 1 MiB */
    int reuseport;     /* one acceptor per demux thread (SO_REUSEPORT) */
} es_http_server_opts_t;

#define ES_HTTP_DEFAULT_MAX_URL (8u << 10)
#define ES_HTTP_DEFAULT_MAX_HEADER_BYTES (16u << 10)
#define ES_HTTP_DEFAULT_MAX_HEADERS 100u
#define ES_HTTP_DEFAULT_MAX_BODY (8u << 20)
#define ES_HTTP_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define ES_HTTP_DEFAULT_BODY_TIMEOUT_MS 60000u
#define ES_HTTP_DEFAULT_BODY_READ_TIMEOUT_MS 15000u
#define ES_HTTP_DEFAULT_MAX_BODY_BUFFER (32u << 20)
#define ES_HTTP_DEFAULT_KEEPALIVE_TIMEOUT_MS 60000u
#define ES_HTTP_DEFAULT_MAX_CONNECTIONS 10000u

/*
 * Creates a server on rt (which may or may not be running yet).
 * Returns: 0 and *out; -EINVAL; -ENOMEM.
 * Ownership: *out belongs to the caller until es_http_server_free().
 * Thread: any.
 */
ES_EXTERN int es_http_server_new(es_runtime_t *rt,
                                 const es_http_server_opts_t *opts,
                                 es_http_server_t **out);

/*
 * Adds a route. path is exact ("/plaintext") or, ending in '*', a prefix:
 * "/static/" followed by '*' matches "/static/" and everything under it,
 * and nothing else (not "/static"). method is
 * "GET", "POST", ... or NULL for any method; a GET route also answers
 * HEAD. The most specific route wins: exact before prefix, longer prefix
 * before shorter. A path that matches only under other methods gets 405
 * with an Allow header; no match gets 404.
 * Returns: 0; -EINVAL (path not starting with '/', NULL cb); -EEXIST (same
 * method and path); -EBUSY after es_http_server_start(); -ENOMEM.
 * Thread: any, before es_http_server_start().
 */
ES_EXTERN int es_http_server_route(es_http_server_t *s, const char *method,
                                   const char *path, es_http_handler_cb cb,
                                   void *arg);

/* The seed's add(path, handler, arg): es_http_server_route(s, NULL, ...). */
ES_EXTERN int es_http_server_add(es_http_server_t *s, const char *path,
                                 es_http_handler_cb cb, void *arg);

/*
 * Receives a request body piece by piece, as it is read (chunked bodies
 * decoded, no framing), in order, before the handler runs; req has its
 * method, target and head fields (trailers not yet), and an empty body.
 * data points into the read buffer and is valid during the call only.
 * When the body is complete the route's handler runs once, with its own
 * req (an empty body, the trailers appended) carrying the same user
 * pointer (es_http_request_set_user / _user). If the request
 * is abandoned instead (the client left, a limit or deadline, a framing
 * error) on_body is called once more with data NULL and len 0, and the
 * handler does not run: exactly one of the two ends every request the
 * route received. A body-less request goes straight to the handler.
 * Returns: 0 to go on; an HTTP status (400..599; anything else counts
 * as 500) to refuse the request with that status and close the
 * connection (the abandon call with data NULL still follows).
 * Ownership: data and req stay the server's (the user pointer is the
 * caller's). Lifetime: data during the call; req until the handler is
 * called or the abandon call returns.
 * Thread: the connection's demux thread; it must not block (the
 * connection reads no more until it returns).
 */
typedef int (*es_http_body_cb)(es_http_request_t *req, const void *data,
                               size_t len, void *arg);

/*
 * Adds a route whose request bodies are streamed to on_body instead of
 * buffered (see es_http_body_cb); otherwise as es_http_server_route().
 * Streamed bytes take nothing from max_body_buffer; max_body still
 * applies [413].
 * Returns: as es_http_server_route(); -EINVAL also for a NULL on_body.
 * Thread: any, before es_http_server_start().
 */
ES_EXTERN int es_http_server_route_body(es_http_server_t *s, const char *method,
                                        const char *path,
                                        es_http_body_cb on_body,
                                        es_http_handler_cb cb, void *arg);

/*
 * Replaces the hook that fills server-generated error responses.
 * Returns: 0, -EBUSY after start. Thread: any, before start.
 */
ES_EXTERN int es_http_server_on_error(es_http_server_t *s, es_http_error_cb cb,
                                      void *arg);

/*
 * Adds an address to listen on: "127.0.0.1:8080", "[::1]:0",
 * "0.0.0.0:80", "unix:/path": the grammar of es_addr_parse() (conn.h),
 * checked here, so that a host name or a bad port fails now and not at
 * start. Binding happens in es_http_server_start().
 * Returns: 0; -EINVAL (malformed address); -ENAMETOOLONG (Unix path too
 * long); -EBUSY after start; -ENOMEM.
 * Thread: any, before start.
 */
ES_EXTERN int es_http_server_listen(es_http_server_t *s, const char *address);

/*
 * Binds every address, freezes the routes and starts accepting.
 * Returns: 0; -EINVAL if no address was added; -EALREADY; bind and listen
 * errors (-EADDRINUSE, -EACCES, ...) with nothing left listening.
 * Thread: any.
 */
ES_EXTERN int es_http_server_start(es_http_server_t *s);

/*
 * The TCP port of the index-th listen address (after start; useful with
 * port 0). Returns: the port, 0 for a Unix socket, -ENOENT, -EINVAL.
 */
ES_EXTERN int es_http_server_port(const es_http_server_t *s, unsigned index);

/*
 * The limits of es_http_server_opts_t that refuse a request or a
 * connection, as counted in es_http_server_stats_t.limit_hits (the status
 * each one answers with in brackets).
 */
typedef enum es_http_limit {
    ES_HTTP_LIMIT_URL,            /* max_url [414] */
    ES_HTTP_LIMIT_HEADER_BYTES,   /* max_header_bytes [431] */
    ES_HTTP_LIMIT_HEADERS,        /* max_headers [431] */
    ES_HTTP_LIMIT_BODY,           /* max_body [413] */
    ES_HTTP_LIMIT_HEADER_TIMEOUT, /* header_timeout_ms [408] */
    /* body_timeout_ms [408; 503 when the server held the body back] */
    ES_HTTP_LIMIT_BODY_TIMEOUT,
    ES_HTTP_LIMIT_BODY_READ_TIMEOUT, /* body_read_timeout_ms [408] */
    /* max_body_buffer [503 if the body does not fit now; 413 if a body
     * that large never can, because max_body_buffer < max_body] */
    ES_HTTP_LIMIT_BODY_BUFFER,
    ES_HTTP_LIMIT_CONNECTIONS, /* max_connections [503] */
    ES_HTTP_LIMITS             /* the number of kinds */
} es_http_limit_t;

/*
 * The name of a limit: its field in es_http_server_opts_t ("max_url",
 * "header_timeout_ms", ...).
 * Returns: a static string, or NULL outside 0..ES_HTTP_LIMITS-1.
 * Thread: any.
 */
ES_EXTERN const char *es_http_limit_name(int limit);

/* Classes of responses counted in es_http_server_stats_t.responses:
 * 1xx (100 Continue), 2xx, 3xx, 4xx, 5xx, and 600..999. */
#define ES_HTTP_STATUS_CLASSES 6

/* Server counters (monotonic, except connections, body_bytes and
 * body_bytes_peak). */
typedef struct es_http_server_stats {
    uint64_t connections;     /* open now */
    uint64_t accepted;        /* ever */
    uint64_t requests;        /* complete requests handed to a handler */
    uint64_t rejected;        /* errors sent by the server (4xx/5xx) */
    uint64_t deferred_gone;   /* deferred responses whose client left */
    uint64_t body_bytes;      /* request-body bytes reserved now */
    uint64_t body_bytes_peak; /* most ever reserved at once */
    uint64_t body_waits;      /* times a body paused for max_body_buffer */
    /* Bytes read from the connections' sockets (every byte a client sent,
     * refused requests included). */
    uint64_t bytes_in;
    /* Bytes of responses (status lines, fields, bodies, chunk framing)
     * handed to the connections for sending: what a client that reads
     * everything receives. */
    uint64_t bytes_out;
    /* Response heads written, by status class: [0] 1xx ... [4] 5xx,
     * [5] 600..999. A response the server makes itself counts too. */
    uint64_t responses[ES_HTTP_STATUS_CLASSES];
    /* Requests or connections refused by each limit (es_http_limit_t). */
    uint64_t limit_hits[ES_HTTP_LIMITS];
} es_http_server_stats_t;

/* Reads the counters. Returns: 0, -EINVAL. Thread: any. */
ES_EXTERN int es_http_server_stats(const es_http_server_t *s,
                                   es_http_server_stats_t *out);

/*
 * Adds a GET (and HEAD) route at path that serves the counters of the
 * server and of its runtime in the Prometheus text exposition format
 * 0.0.4 (Content-Type "text/plain; version=0.0.4; charset=utf-8"):
 * es_runtime_stats() for the whole runtime (eventserver_<field>) and per
 * demux thread (eventserver_loop_<field>{loop="i"}), and
 * es_http_server_stats() (eventserver_http_*). docs/http.md lists the
 * names. The page is built on the connection's demux thread when asked
 * for; nothing is kept between requests.
 * Returns: as es_http_server_route() (-EEXIST if path already has a GET
 * route, -EBUSY after start).
 * Thread: any, before es_http_server_start().
 */
ES_EXTERN int es_http_server_metrics(es_http_server_t *s, const char *path);

/*
 * More families for the metrics page, from another module (the cluster's
 * es_cluster_metrics_text()) or the application: each time the page is
 * built, cb(arg, buf, size) appends its families in the text format 0.0.4
 * to buf and returns the length written, or -EOVERFLOW when size is too
 * small (it is called again with a larger buf, up to 1 MiB), or another
 * negative errno (the page then answers 500). cb runs on a demux thread:
 * it must not block. At most ES_HTTP_METRICS_SOURCES sources.
 * Returns: 0; -EINVAL; -EBUSY after es_http_server_start(); -ENOSPC.
 * Ownership: arg stays the caller's; it must outlive the server.
 * Thread: any, before es_http_server_start().
 */
#define ES_HTTP_METRICS_SOURCES 8
typedef int (*es_http_metrics_cb)(void *arg, char *buf, size_t size);
ES_EXTERN int es_http_server_metrics_add(es_http_server_t *s,
                                         es_http_metrics_cb cb, void *arg);

/*
 * Stops accepting and frees the server once its last connection has
 * closed; open connections finish the request in progress and close.
 * Returns: nothing. Thread: any thread that is not one of rt's demux
 * threads, or after the runtime stopped.
 */
ES_EXTERN void es_http_server_free(es_http_server_t *s);

/* --- Requests (server side) ----------------------------------------------
 * Lifetime: until the response is sent (or, for a deferred response, until
 * es_http_response_end()). A request never changes after the handler is
 * called, so a deferred holder may read it from any thread.
 */

/* The method ("GET"). */
ES_EXTERN const char *es_http_request_method(const es_http_request_t *req);
/* The request target as received ("/a/b?x=1"). */
ES_EXTERN const char *es_http_request_target(const es_http_request_t *req);
/* The target's path ("/a/b"), not %-decoded. */
ES_EXTERN const char *es_http_request_path(const es_http_request_t *req);
/* The target's query without '?' ("x=1"), or "" if none. */
ES_EXTERN const char *es_http_request_query(const es_http_request_t *req);
/* 10 for HTTP/1.0, 11 for HTTP/1.1. */
ES_EXTERN int es_http_request_version(const es_http_request_t *req);
/* The header fields (trailers of a chunked body are appended). */
ES_EXTERN const es_http_headers_t *
es_http_request_headers(const es_http_request_t *req);
/* Shortcut: es_http_headers_get(es_http_request_headers(req), name). */
ES_EXTERN const char *es_http_request_header(const es_http_request_t *req,
                                             const char *name);
/* The decoded body (chunked bodies are joined); *len gets its size. The
 * body is NUL-terminated for convenience (not counted in *len). */
ES_EXTERN const void *es_http_request_body(const es_http_request_t *req,
                                           size_t *len);
/* The runtime the server runs on. */
ES_EXTERN es_runtime_t *es_http_request_runtime(const es_http_request_t *req);
/*
 * Attaches a pointer of the caller's to the request, for a streamed body
 * (es_http_body_cb) to carry its state to the handler; NULL at first.
 * The server never dereferences or frees it.
 * Thread: the connection's demux thread (inside on_body or the handler).
 */
ES_EXTERN void es_http_request_set_user(es_http_request_t *req, void *user);
/* The pointer set by es_http_request_set_user(), or NULL. */
ES_EXTERN void *es_http_request_user(const es_http_request_t *req);

/* --- Responses -----------------------------------------------------------
 * Thread: the connection's demux thread inside the handler; for a deferred
 * response, whichever single thread holds it (calls on one response must
 * not race each other).
 */

/*
 * Sets the status (default 200).
 * Returns: 0, -EINVAL (outside 100..999 or a 1xx), -EALREADY once begun.
 */
ES_EXTERN int es_http_response_status(es_http_response_t *res, int status);

/*
 * Adds a header field. Date, Server, Content-Length, Transfer-Encoding and
 * Connection are the server's to write and are refused.
 * Returns: 0; -EINVAL (invalid name, CR/LF/NUL in value, or one of the
 * server's fields); -EALREADY once begun; -ENOMEM.
 */
ES_EXTERN int es_http_response_header(es_http_response_t *res, const char *name,
                                      const char *value);

/*
 * Sets the body to a copy of data (replacing any previous body).
 * Returns: 0, -EALREADY once begun, -ENOMEM.
 */
ES_EXTERN int es_http_response_body(es_http_response_t *res, const void *data,
                                    size_t len);

/*
 * Sets the body without copying: free_cb(data) runs once it is sent or
 * dropped (NULL for static data): on a demux thread, or inside
 * es_http_response_end() when the client of a deferred response had
 * already left.
 * Returns: 0, -EALREADY, -EINVAL, -ENOMEM. Ownership: data moves on
 * success only.
 */
ES_EXTERN int es_http_response_body_ref(es_http_response_t *res, void *data,
                                        size_t len, es_msg_free_cb free_cb);

/*
 * Starts a streamed response: sends the status line and headers now, with
 * Transfer-Encoding: chunked (HTTP/1.1) or close-delimited (HTTP/1.0).
 * Returns: 0, -EALREADY, -ECONNRESET if the client left, -ENOMEM, -EAGAIN
 * (called off the connection's thread and its mailbox is full: nothing
 * was done, call again later).
 */
ES_EXTERN int es_http_response_begin(es_http_response_t *res);

/*
 * Sends one piece of a streamed response as a chunk (empty pieces are
 * skipped; pieces written off the connection's thread in quick succession
 * may be joined into one chunk). Returns: 0; -EINVAL if not begun; -ECONNRESET
 * if the client left; -ENOMEM; -EAGAIN (called off the connection's thread, and
 * its mailbox is full or its send queue is above write_high): nothing was
 * consumed, call again later.
 */
ES_EXTERN int es_http_response_write(es_http_response_t *res, const void *data,
                                     size_t len);

/*
 * Finishes the response: sends it whole (or the last chunk of a streamed
 * one). For a deferred response this also releases it: res must not be
 * used afterwards, except after -EAGAIN.
 * Returns: 0; -ECONNRESET if the client left (nothing is sent; the
 * response is still released); -EALREADY if already ended; -EAGAIN
 * (deferred, called off the connection's thread and its mailbox is full):
 * nothing was done and the response is NOT released, call end() again.
 */
ES_EXTERN int es_http_response_end(es_http_response_t *res);

/* Called once, on the connection's demux thread, if the client of a
 * deferred response leaves before es_http_response_end(). */
typedef void (*es_http_gone_cb)(es_http_response_t *res, void *arg);

/*
 * Keeps the response after the handler returns. The connection reads no
 * further request until es_http_response_end() is called (pipelined
 * requests wait, in order), but still notices the client leaving: then
 * on_gone(res, arg) runs (may be NULL) and later calls return
 * -ECONNRESET. The holder must call es_http_response_end() exactly once,
 * even after on_gone; that is what frees the response.
 * Returns: 0; -EALREADY if already deferred or ended; -EINVAL.
 * Thread: the connection's demux thread, inside the handler.
 */
ES_EXTERN int es_http_response_defer(es_http_response_t *res,
                                     es_http_gone_cb on_gone, void *arg);

/* The request this response answers (valid until end). */
ES_EXTERN const es_http_request_t *
es_http_response_request(const es_http_response_t *res);

/* --- Client ------------------------------------------------------------ */

typedef struct es_http_client es_http_client_t;
typedef struct es_http_reply es_http_reply_t;

/* Client settings; zeroed fields take the defaults. */
typedef struct es_http_client_opts {
    unsigned max_per_host;        /* connections per host:port; 8 */
    unsigned connect_timeout_ms;  /* resolve + connect; 10 s */
    unsigned response_timeout_ms; /* request sent to whole reply; 30 s */
    unsigned idle_timeout_ms;     /* a kept-alive connection lives; 30 s */
    size_t max_reply_body; /* larger replies fail with -EMSGSIZE; 64 MiB */
    size_t max_reply_header_bytes; /* -EMSGSIZE above; 64 KiB */
} es_http_client_opts_t;

/*
 * Creates a client on rt.
 * Returns: 0 and *out, -EINVAL, -ENOMEM.
 * Ownership: *out belongs to the caller until es_http_client_free().
 * Thread: any.
 */
ES_EXTERN int es_http_client_new(es_runtime_t *rt,
                                 const es_http_client_opts_t *opts,
                                 es_http_client_t **out);

/*
 * Receives the reply of a request. reply is valid during the call only.
 * Thread: a demux thread of the client's runtime.
 */
typedef void (*es_http_reply_cb)(const es_http_reply_t *reply, void *arg);

/*
 * Receives the failure of a request: -ECONNREFUSED, -EHOSTUNREACH,
 * -EHOSTDOWN (name did not resolve), -ETIMEDOUT (connect or response
 * timeout), -ECONNRESET (closed before a whole reply: the server may have
 * acted on the request), -EPROTO (malformed reply, or a status code that is
 * not three digits from 100 to 999), -EMSGSIZE (reply too large),
 * -ECANCELED (client freed or runtime stopped), -ENOMEM. (A bad URL is
 * refused by es_http_client_request() itself, with no callback.)
 * Retries: a request is never sent twice, except that an idempotent one
 * (GET, HEAD, PUT, DELETE, OPTIONS, TRACE, or es_http_client_req_t's
 * idempotent set) written on a reused kept-alive connection that closed
 * before any byte of its reply is sent once more on a new connection; any
 * other request that meets such a close fails with -ECONNRESET, and
 * whether to send it again is the caller's choice.
 * Thread: a demux thread; the calling thread of es_http_client_free() for
 * requests still waiting for a connection; the thread in es_runtime_wait()
 * or es_runtime_free() for requests the stopping runtime handed back.
 */
typedef void (*es_http_fail_cb)(int err, void *arg);

/* One request. method NULL means "GET" ("POST" if body is set). */
typedef struct es_http_client_req {
    const char *url; /* "http://host[:port][/path][?query]" */
    const char *method;
    /* Extra fields as name, value, name, value, ..., NULL. The client
     * writes Host, User-Agent (both replaced by the caller's, if given) and
     * Content-Length; Content-Length, Transfer-Encoding and Connection
     * fields are refused (-EINVAL). */
    const char *const *headers;
    const void *body; /* copied before es_http_client_request() returns */
    size_t body_len;
    unsigned timeout_ms; /* response timeout; 0: the client's default */
    /* The caller vouches that sending the request twice has the effect of
     * sending it once (say, a POST with an idempotency key the server
     * honours): it is then retried like a GET (see es_http_fail_cb).
     * GET, HEAD, PUT, DELETE, OPTIONS and TRACE are idempotent anyway. */
    bool idempotent;
} es_http_client_req_t;

/*
 * Sends a request. Exactly one of on_reply / on_fail is called later,
 * never from inside this call.
 * Returns: 0; -EINVAL (NULL callbacks, malformed URL, unsupported scheme,
 * invalid method or field); -ENOMEM; -ESHUTDOWN (client being freed or
 * runtime stopped); -EAGAIN (the runtime's rings stayed full). On failure
 * no callback is called.
 * Thread: any, including inside on_reply / on_fail and behaviours.
 */
ES_EXTERN int es_http_client_request(es_http_client_t *c,
                                     const es_http_client_req_t *req,
                                     es_http_reply_cb on_reply,
                                     es_http_fail_cb on_fail, void *arg);

/*
 * Closes every connection; requests still waiting or in flight fail with
 * -ECANCELED, and their callbacks have returned when this call returns
 * (it waits at most 10 s for the demux threads; the client's memory lives
 * on until its last connection is gone). Then frees c.
 * Returns: nothing. Thread: any thread that is not a demux thread of the
 * client's runtime, or after the runtime stopped (es_runtime_wait()).
 */
ES_EXTERN void es_http_client_free(es_http_client_t *c);

/* The reply's status code. */
ES_EXTERN int es_http_reply_status(const es_http_reply_t *r);
/* The reply's HTTP version: 10 or 11. A status line with any other version
 * (HTTP/0.9, 1.2, 2.0, ...) fails the request with -EPROTO instead. */
ES_EXTERN int es_http_reply_version(const es_http_reply_t *r);
/* The reply's header fields (trailers appended). */
ES_EXTERN const es_http_headers_t *
es_http_reply_headers(const es_http_reply_t *r);
/* The decoded body and its size (NUL-terminated, not counted). */
ES_EXTERN const void *es_http_reply_body(const es_http_reply_t *r, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_HTTP_H */
