/* SPDX-License-Identifier: MIT */
/*
 * What the HTTP server's files share (server.c: the server object, routes
 * and request accessors; server_conn.c: the connection behaviour and the
 * parser; server_check.c: the strict framing checks; server_body.c: the
 * body budget, the body deadlines and streamed bodies; response.c: the
 * response calls and how a response is written). Not installed.
 *
 * A connection actor's state is one of three objects, told apart by the
 * kind tag they all start with:
 *   - the server itself, while the connection is idle (no byte of a request
 *     buffered, nothing in flight): an idle connection costs nothing here;
 *   - a struct es__http_conn while a request is being read or answered, or
 *     while bytes wait behind a deferred response;
 *   - the exchange (struct es_http_response) of a deferred response while
 *     nothing else is buffered: a parked long-poll keeps only its request
 *     and response.
 */
#ifndef EVENTSERVER_HTTP_SERVER_PRIVATE_H
#define EVENTSERVER_HTTP_SERVER_PRIVATE_H

#include "http_private.h"

#include <eventserver/timer.h>

#include <llhttp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>

enum es__http_kind {
    ES__HTTP_KIND_SERVER = 0x48535256, /* "HSRV" */
    ES__HTTP_KIND_CONN = 0x48434f4e,   /* "HCON" */
    ES__HTTP_KIND_EXCH = 0x48455843,   /* "HEXC" */
    ES__HTTP_KIND_REJECT = 0x48524a54, /* "HRJT": over max_connections */
};

/* The state of a connection over max_connections: answered 503, closed. */
struct es__http_reject {
    uint32_t kind;
    es_http_server_t *srv;
};

/* Message a holder on another thread sends the connection actor: ptr is
 * the response; inl.u64[0] what to do (begin, flush the pieces written,
 * end). */
#define ES__HTTP_MSG_OP (ES_MSG_USER + 0x48540u)
/* es_http_server_free() to an open connection: close once idle. */
#define ES__HTTP_MSG_SHUTDOWN (ES_MSG_USER + 0x48541u)
/* To a connection waiting for body budget: some was given back. */
#define ES__HTTP_MSG_BODY_WAKE (ES_MSG_USER + 0x48542u)
enum es__http_op_kind { ES__OP_BEGIN = 1, ES__OP_FLUSH, ES__OP_END };

/* Our timers on a connection actor (conn.c filters out its own). */
#define ES__HTTP_TAG_HEADER 0x4854545048454144ull /* "HTTPHEAD" */
#define ES__HTTP_TAG_BODY 0x48545450424f4459ull   /* "HTTPBODY" */

/* Bound on bytes buffered behind a request in flight: past it reading
 * pauses and the kernel's receive window pushes back on the client. Not
 * tied to write_high, so a pipelining client behind a deferred response
 * costs at most this plus one read (tests/http/test_http_body.c,
 * pipelined_input_bounded). */
#define ES__HTTP_IN_MAX (64u * 1024u)
/* Longest chunk-size line (with extensions) the server waits for, and the
 * room for the "<size>\r\n" line llhttp is given instead. */
#define ES__HTTP_CHUNK_LINE_MAX 4096u
#define ES__HTTP_CHUNK_OUT_MAX 20u
/* Idle connection states kept per demux thread for reuse. */
#define ES__HTTP_CONN_CACHE 32u

struct es__http_route {
    char *method; /* NULL: any */
    char *path;   /* without the trailing '*' of a prefix */
    size_t len;
    bool prefix;
    es_http_handler_cb cb;
    es_http_body_cb on_body; /* NULL: the body is buffered */
    void *arg;
};

struct es__http_conn;

/*
 * The server-wide budget for buffered request bodies (server_body.c).
 * `used` is charged by the connections' threads and given back by
 * whichever thread frees a request (a deferred holder's too); it never
 * exceeds `max` because every charge is a CAS that checks it. Connections
 * whose chunked body waits for budget are linked in a FIFO under `lock`;
 * `nwait` counts them. Lost wakeups are excluded by the store-buffering
 * pattern on two seq_cst variables: a waiter increments nwait, then tries
 * `used` again; a releaser decrements `used`, then reads nwait. In the
 * single total order of seq_cst operations one of the two sees the other:
 * either the waiter's retry finds the budget, or the releaser finds the
 * waiter and wakes it.
 */
struct es__http_budget {
    _Atomic size_t used, peak;
    _Atomic uint64_t waits;
    atomic_uint nwait;
    pthread_mutex_t lock;
    struct es__http_conn *head, *tail; /* [lock] the waiting connections */
};

/*
 * Per demux thread: counters (written by that thread only, read by any:
 * relaxed atomics, no contention) and a cache of connection states.
 * Padded to a cache line of its own.
 */
struct es__http_loop {
    _Atomic uint64_t requests, rejected, deferred_gone;
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic uint64_t responses[ES_HTTP_STATUS_CLASSES];
    _Atomic uint64_t limit_hits[ES_HTTP_LIMITS];
    struct es__http_conn *cache;
    unsigned ncache;
    char pad[64]; /* keeps the next thread's counters off this line */
};

struct es_http_server {
    uint32_t kind;
    atomic_uint refs; /* creator + one per connection */
    uint64_t serial;  /* unique per process: names it in broadcasts */
    atomic_bool started, freeing;
    _Atomic uint64_t open, accepted;
    es_runtime_t *rt;
    es_http_server_opts_t o; /* defaults filled in */
    char *server_line;       /* "Server: x\r\n" or "" */
    size_t server_line_len;
    es_http_error_cb on_error;
    void *error_arg;

    struct es__http_route *routes; /* sorted at start: exact, then prefix */
    size_t nroutes, route_cap, nexact;
    uint32_t *hash; /* exact paths: index + 1 of the first route, 0 empty */
    size_t hash_mask;

    char **addrs;
    size_t naddrs;
    es_listener_t **listeners;
    unsigned nloops;
    struct es__http_loop *loops;
    size_t nstream; /* routes with on_body */
    struct es__http_budget budget;
    struct {
        es_http_metrics_cb cb;
        void *arg;
    } metrics_src[ES_HTTP_METRICS_SOURCES]; /* es_http_server_metrics_add() */
    unsigned nmetrics_src;
};

/*
 * The request, immutable once the handler is called. It lives in an
 * exchange (es__http_req_exchange()), which holds its method and version,
 * and its strings in the exchange's tail: the fields, then their names
 * and values, then the target and the path, NUL-terminated, and the query
 * (the end of the target, or a copy after the path when a fragment
 * follows it there). The accessors below find them: pointers to them
 * would cost a parked request 32 bytes.
 */
struct es_http_request {
    struct es_http_headers headers; /* storage in the exchange's tail */
    char *body;                     /* es_malloc'd, or NULL (then "") */
    size_t body_len;
    size_t body_charge; /* budget bytes the body holds (server_body.c) */
    void *user;         /* es_http_request_set_user() */
    uint32_t target_len;
    uint32_t query_off; /* from the target */
};

/*
 * What the holder sets before a response goes out: its header fields and
 * its body (a copy, or by reference). Allocated by the first call that
 * sets one, with the field lines inline after it, so that a parked
 * response whose holder has set nothing yet carries only the pointer. It
 * belongs to the holder ([h]) and may move when a field is added (only
 * before the response is begun or ended: then it never changes again).
 */
struct es__http_out {
    struct es__buf body; /* copied body */
    void *ref;           /* body by reference */
    size_t ref_len;
    es_msg_free_cb ref_free;
    uint32_t flen, fcap; /* "Name: value\r\n" lines in fields[], room */
    char fields[];
};

/* States of es_http_response.shared: who let go first. */
enum { ES__X_ENDED = 1, ES__X_GONE = 2 };

/*
 * One request and its response (the "exchange"): one allocation, the
 * request's strings and fields in its tail. Refcounted: the connection
 * holds a reference while the exchange is its current one, a deferring
 * holder one until es_http_response_end(), each message in flight one.
 *
 * Fields marked [h] belong to whoever holds the response (the handler,
 * later the holder on any thread) and are read by the connection only
 * after a message from the holder (es_send orders them). Fields marked [c]
 * belong to the connection's thread; [q] are under qlock (response.c).
 * The connection reads the holder's status, fields and body only when a
 * message from the holder (begin, flush, end) arrives, or inside the
 * handler.
 */
struct es_http_response {
    uint32_t kind;
    atomic_uint refs;
    atomic_uint shared;    /* ES__X_ENDED | ES__X_GONE */
    atomic_bool congested; /* [c] send queue above its high mark */
    atomic_flag qlock;     /* guards q and kick (a spin lock) */
    bool kick;             /* [q] a flush message is on its way */
    uint8_t method;        /* the request's (llhttp_method_t); read-only */
    /* [q] pieces written off the thread; allocated by the first such
     * write, so that a response that never streams off its thread (a
     * parked long-poll answered whole) does not carry it */
    struct es__buf *q;
    es_http_server_t *srv; /* srv->rt: the runtime */
    es_actor_id_t conn;
    struct es__http_out *out; /* [h] fields and body, or NULL: none */
    es_http_gone_cb on_gone;  /* [h] set by defer */
    void *gone_arg;
    uint16_t status;   /* [h] */
    bool begun, ended; /* [h] */
    /* Bit-fields, to keep a parked exchange in a smaller malloc chunk.
     * Bits that share a unit are one memory location (C11 3.14), so each
     * unit holds the bits of one owner only: the zero-width field starts
     * the connection's own unit. */
    bool deferred : 1; /* set in the handler, then read-only */
    bool has_req : 1, head_only : 1, is_error : 1; /* read-only */
    bool v10 : 1; /* read-only: the request is HTTP/1.0 (else 1.1) */
    uint8_t : 0;
    bool keep_alive : 1;  /* [c] (a streamed 1.0 response clears it) */
    bool c_head_sent : 1; /* [c] head written */
    bool c_done : 1;      /* [c] response complete */
    uint16_t loop;
    es_http_request_t req;
};

/* The exchange a request lives in, and where its parts are. */
static inline es_http_response_t *
es__http_req_exchange(const struct es_http_request *r)
{
    return (es_http_response_t *)(void *)((char *)(uintptr_t)r -
                                          offsetof(es_http_response_t, req));
}
static inline const char *es__http_req_target(const struct es_http_request *r)
{
    return r->headers.buf + r->headers.len;
}
static inline const char *es__http_req_path(const struct es_http_request *r)
{
    return es__http_req_target(r) + r->target_len + 1;
}
static inline const char *es__http_req_query(const struct es_http_request *r)
{
    return es__http_req_target(r) + r->query_off;
}
static inline const char *es__http_req_method(const struct es_http_request *r)
{
    return llhttp_method_name(
        (llhttp_method_t)es__http_req_exchange(r)->method);
}

/*
 * What a connection keeps about the body being read (server_body.c); all
 * of it belongs to the connection's thread, except the links, which are
 * under the budget's lock.
 */
struct es__http_bodyst {
    size_t charge;      /* budget bytes held: body.cap <= charge */
    size_t limit;       /* most body bytes this request may have */
    size_t seen;        /* decoded body bytes so far */
    bool buffered;      /* a body is announced and kept in `body` */
    bool wait;          /* paused until the budget frees */
    bool linked;        /* [lock] in the budget's FIFO */
    uint64_t start_ms;  /* end of the head (the body deadline's start) */
    uint64_t read_ms;   /* last read (the inter-read deadline's start) */
    es_actor_id_t self; /* who to wake */
    struct es__http_conn *wnext, *wprev; /* [lock] */
    es_http_response_t *sx;              /* streamed: the request so far */
    const struct es__http_route *sroute; /* streamed: its route */
};

/* Where the raw-byte scan of a head is (es__http_scan_head()). */
enum {
    ES__LINE_START,
    ES__LINE_METHOD,
    ES__LINE_SPACES,
    ES__LINE_TARGET,
    ES__LINE_REST
};
struct es__http_scan {
    char prev;     /* the last byte scanned (bare LF, CR, obs-fold) */
    uint8_t line;  /* ES__LINE_*: where in the request line */
    size_t target; /* bytes of the request target so far */
};

/* A connection's state while a request is read or answered. */
struct es__http_conn {
    uint32_t kind;
    uint8_t phase;      /* ES__PH_*: what the bytes being parsed are */
    uint8_t pause;      /* ES__PAUSE_*: why llhttp paused */
    uint8_t timer_kind; /* 0, ES__TM_HEADER or ES__TM_BODY */
    bool closing, paused_in, idle_off, want_line;
    bool want_crlf;                  /* the CRLF after a chunk's data is next */
    uint8_t nhost, nte, ncl, expect; /* fields seen (capped) */
    int reject; /* status to answer a rejected request with */
    /* The limit behind the refusal being made, es_http_limit_t + 1 (0:
     * none); counted, and cleared, when the refusal is sent. */
    uint8_t limit;
    uint16_t loop;
    es_http_server_t *srv;
    es_http_response_t *x; /* the exchange in flight, or NULL */
    struct es__http_conn *next_free;
    struct es__http_scan scan; /* raw head bytes llhttp has read */
    size_t head_bytes;         /* raw bytes of the head so far */
    size_t field_bytes;        /* names and values received, dropped ones too */
    unsigned nfields;          /* fields received, dropped trailers too */
    es_timer_id_t timer;
    struct es__buf in; /* unparsed bytes, from in_off */
    size_t in_off;
    struct es__buf url;       /* the target being received */
    struct es_http_headers h; /* fields (and trailers) being received */
    struct es__buf body;      /* the body being received */
    struct es__http_bodyst bs;
    llhttp_t p;
};

enum { ES__PH_HEAD = 0, ES__PH_BODY, ES__PH_TRAILER };
enum {
    ES__PAUSE_NONE = 0,
    ES__PAUSE_HEADERS,
    ES__PAUSE_TRAILER,
    ES__PAUSE_CHUNK,
    ES__PAUSE_MESSAGE,
    ES__PAUSE_DATA_END /* the last byte of a chunk's data */
};
enum { ES__TM_NONE = 0, ES__TM_HEADER, ES__TM_BODY };
enum { ES__EXPECT_NONE = 0, ES__EXPECT_CONTINUE, ES__EXPECT_OTHER };

static inline uint32_t es__http_kind(const void *state)
{
    return *(const uint32_t *)state;
}

/* Adds n to a per-thread counter of struct es__http_loop: only that
 * thread writes it, so a relaxed load and store suffice (no RMW). */
static inline void es__http_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Notes that `limit` makes hc refuse the request with status (counted
 * when the refusal is sent). Returns: status. */
static inline int es__http_limit_hit(struct es__http_conn *hc,
                                     es_http_limit_t limit, int status)
{
    hc->limit = (uint8_t)(limit + 1);
    return status;
}

/* --- server.c ----------------------------------------------------------- */

/* Drops one reference to the server; the last one frees it. */
void es__http_server_unref(es_http_server_t *s);
/* Finds the handler of a request. Returns: 0 and *route; 404; 405 (then
 * allow[] gets the Allow value). */
int es__http_route_find(const es_http_server_t *s, const char *method,
                        const char *path, const struct es__http_route **route,
                        char *allow, size_t allow_len);
/* Counts len bytes read by self, a connection in any of its states. */
void es__http_count_in(es_actor_t *self, size_t len);
/* The connection actors' behaviour and state hooks (server_conn.c). */
int es__http_conn_behaviour(es_actor_t *self, es_msg_t *msg);
void *es__http_conn_state_new(void *srv);
void es__http_conn_state_free(void *state);

/* --- server_check.c ----------------------------------------------------- */

/* The llhttp callbacks of the server's connections (parser->data: hc). */
extern const llhttp_settings_t es__http_settings;

/*
 * Scans raw head bytes p[0..n) before llhttp reads them, from state *s
 * (advanced over the bytes scanned): a bare LF, CR followed by other than
 * LF, obs-fold (400); a request target longer than max_url (414).
 * Returns: the index of the first bad byte (*status set), else the index
 * just past the empty line that ends the head, else n (*status 0).
 */
size_t es__http_scan_head(struct es__http_scan *s, size_t max_url,
                          const char *p, size_t n, int *status);
/* Checks a completed field (name index i of hc->h) and notes the ones that
 * matter for framing. Returns: 0, or the status to reject with. */
int es__http_check_field(struct es__http_conn *hc, bool trailer);
/*
 * Reads a chunk-size line at p[0..n): chunk-size (1*HEXDIG, leading zeros
 * allowed, at most 16 significant digits), extensions (checked against
 * RFC 9112 7.1.1, obs-text only in a quoted-string, then ignored), CRLF. out
 * gets "<size>\r\n" without the leading zeros and the extensions, *out_len its
 * length: what llhttp is given instead. Returns: the line's length; 0 if it is
 * not all here yet; -1 if it is malformed or longer than
 * ES__HTTP_CHUNK_LINE_MAX.
 */
long es__http_chunk_line(const char *p, size_t n,
                         char out[ES__HTTP_CHUNK_OUT_MAX], size_t *out_len);
/*
 * Reads one line of a trailer section at p[0..n) (llhttp never sees the
 * trailer fields, so they cannot change framing or keep-alive). A field is
 * appended to hc->h and checked as es__http_check_field(hc, true) does.
 * Returns: 0 with *used the line's length (2: the empty line ending the
 * section), or 0 with *used 0 if the line is not all here yet; else the
 * status to reject with (400, 431, 500).
 */
int es__http_trailer_line(struct es__http_conn *hc, const char *p, size_t n,
                          size_t *used);
/* Checks the request once its head is complete. Returns: 0 or a status. */
int es__http_check_head(struct es__http_conn *hc);
/* The status for an llhttp error. */
int es__http_error_status(const llhttp_t *p, llhttp_errno_t err);

/* --- server_body.c ------------------------------------------------------- */

/* Sets up the budget of a new server. Returns: 0 or -errno. */
int es__http_budget_init(es_http_server_t *s);
/* Tears it down (no connection left). */
void es__http_budget_fini(es_http_server_t *s);
/* Gives n bytes back to the budget and wakes the waiting connections. */
void es__http_budget_release(es_http_server_t *s, size_t n);
/* The head is complete and checked: admits the body (reserving a
 * Content-Length body's size), finds a streaming route, starts the body
 * clocks. Returns: 0, or the status to refuse the request with. */
int es__http_body_begin(es_actor_t *self, struct es__http_conn *hc);
/* How many of the next n input bytes (body phase) may be parsed, growing
 * the body buffer within the budget. Returns: a count; 0 when the
 * connection now waits for budget (reading paused); -status on error. */
long es__http_body_gate(es_actor_t *self, struct es__http_conn *hc, size_t n);
/* A piece of decoded body from llhttp. Returns: 0 or a status. */
int es__http_body_data(struct es__http_conn *hc, const char *at, size_t n);
/* The request is complete and x was made from it: moves the budget
 * charge and the streamed request's user pointer to x. */
void es__http_body_dispatch(struct es__http_conn *hc, es_http_response_t *x);
/* The request being read is dropped (connection closed or refused):
 * abandons a streamed body, gives its budget back, leaves the FIFO. */
void es__http_body_reset(struct es__http_conn *hc);
/* A connection is reading: notes the time for the inter-read deadline. */
void es__http_body_read(struct es__http_conn *hc);
/* Milliseconds until the next body deadline check is due. */
unsigned es__http_body_due_ms(const struct es__http_conn *hc);
/* The body timer fired. Returns: 0 (not due yet: re-arm), 408, or 503
 * when the deadline passed while the server held the body back (the
 * deadline that passed is noted as the limit hit). */
int es__http_body_expired(struct es__http_conn *hc);
/* n more body bytes than this request may have: notes which limit
 * (max_body or max_body_buffer) bounds it. Returns: 413. */
int es__http_body_too_big(struct es__http_conn *hc);
/* The wake message: true if hc was waiting and may parse again. */
bool es__http_body_woken(struct es__http_conn *hc);
/* Moves the charge of hc->body (being taken into x) to x. */
void es__http_body_take(struct es__http_conn *hc, es_http_response_t *x);
/* x is freed: gives its body's charge back. */
void es__http_body_free(es_http_response_t *x);

/* --- response.c --------------------------------------------------------- */

/* A new exchange for the connection self on demux thread `loop`, with the
 * request parsed in hc (NULL: an error response with no request).
 * Returns: the exchange (one reference, the connection's) or NULL. */
es_http_response_t *es__http_exchange_new(es_http_server_t *srv, unsigned loop,
                                          struct es__http_conn *hc,
                                          es_actor_t *self);
/* Drops a reference; the last one frees the exchange. */
void es__http_exchange_unref(es_http_response_t *x);
/* Writes the whole response (or what is left of a streamed one). */
void es__http_send_whole(es_actor_t *self, es_http_response_t *x);
/* Writes the head of a streamed response. */
void es__http_send_head_streamed(es_actor_t *self, es_http_response_t *x);
/* Writes "100 Continue" on self, a connection of srv on thread loop. */
void es__http_send_continue(es_actor_t *self, es_http_server_t *srv,
                            unsigned loop);
/* Handles ES__HTTP_MSG_OP on the connection whose current exchange is cur
 * (NULL if none); ops for any other exchange are dropped. */
void es__http_on_op(es_actor_t *self, es_msg_t *msg, es_http_response_t *cur);
/* The client of x left: runs on_gone once if the holder has not ended. */
void es__http_exchange_gone(es_http_response_t *x);

/* Thread-local: the connection actor whose behaviour runs now. */
struct es__http_tl {
    es_actor_t *self;
    es_actor_id_t id;
};
/* initial-exec: no __tls_get_addr call per access (as the core's ES__TLS) */
extern _Thread_local
    __attribute__((tls_model("initial-exec"))) struct es__http_tl es__http_tl;

#endif /* EVENTSERVER_HTTP_SERVER_PRIVATE_H */
