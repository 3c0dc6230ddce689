/* SPDX-License-Identifier: MIT */
/*
 * Connection actors: an actor that owns one connected socket. Its behaviour
 * never sees readiness, only what happened: ES_MSG_CONN_OPEN, _DATA, _SENT,
 * _HIGH_WATER / _LOW_WATER and finally _CLOSED (with a reason), followed by
 * ES_MSG_STOP. Writes are queued and flushed with writev(); the write queue
 * has watermarks, and reading pauses while the queue (or the actor's
 * mailbox) is above its high mark, so a slow peer cannot make the process
 * grow without bound. An idle connection holds no read buffer.
 *
 * Connections come from es_listen() (an acceptor actor spawns one per
 * accepted socket) or es_connect() (outbound, with a timeout; host names
 * are resolved off the demux threads).
 */
#ifndef EVENTSERVER_CONN_H
#define EVENTSERVER_CONN_H

#include <eventserver/actor.h>

#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why a connection closed: es_msg_conn_reason() of ES_MSG_CONN_CLOSED. */
typedef enum es_conn_reason {
    ES_CONN_PEER_CLOSED = 1, /* orderly end of stream from the peer */
    ES_CONN_RESET,           /* the peer reset the connection */
    ES_CONN_ERROR,           /* another socket error: es_msg_conn_error() */
    ES_CONN_LOCAL,           /* es_conn_close() / es_conn_abort() */
    ES_CONN_TIMEOUT,         /* idle timeout */
    ES_CONN_REFUSED,         /* connect: nobody listens there */
    ES_CONN_UNREACHABLE,     /* connect: no route to the host or network */
    ES_CONN_CONNECT_TIMEOUT, /* connect: no answer in time */
    ES_CONN_RESOLVE_FAILED,  /* connect: the host name did not resolve */
    ES_CONN_STOPPED,         /* the actor or the runtime stopped first */
} es_conn_reason_t;

/* Returns a static name for a close reason ("peer closed", ...). */
ES_EXTERN const char *es_conn_reason_str(int reason);

/* Per-connection settings shared by es_listen() and es_connect(). */
typedef struct es_conn_opts {
    es_behaviour_cb behaviour; /* required: the connection's behaviour */
    /* Makes the state of a new connection (NULL: state is `arg`). Called on
     * the connection's home thread before ES_MSG_START. */
    void *(*state_new)(void *arg);
    es_state_free_cb state_free; /* frees that state after ES_MSG_STOP */
    void *arg;
    size_t write_high;         /* pause reading above this; default 1 MiB */
    size_t write_low;          /* resume below this; default write_high / 4 */
    unsigned idle_timeout_ms;  /* 0: none */
    unsigned mailbox_capacity; /* 0: the runtime's default */
    /* TCP_NODELAY: 1 (default) or -1 to leave off. It is set before the
     * connection's second send (the first one leaves at once anyway). */
    int no_delay;
} es_conn_opts_t;

#define ES_CONN_WRITE_HIGH_DEFAULT (1u << 20)

/*
 * Queues a copy of data for sending (tries to send at once when nothing is
 * queued). ES_MSG_CONN_SENT follows when a queue that could not be sent at
 * once has been flushed.
 * Returns: 0; -EPIPE if the connection is closing or closed; -ENOMEM;
 * -EINVAL if self is not a connection actor.
 * Thread: owning loop only (inside self's behaviour).
 */
ES_EXTERN int es_conn_write(es_actor_t *self, const void *data, size_t len);

/*
 * Queues data without copying it; free_cb(data) runs once it is sent or
 * dropped (may be NULL for static data).
 * Returns: as es_conn_write(). Ownership: data moves to the connection on
 * success; on failure the caller keeps it.
 * Thread: owning loop only.
 */
ES_EXTERN int es_conn_write_ref(es_actor_t *self, void *data, size_t len,
                                es_msg_free_cb free_cb);

/*
 * Closes after everything queued is sent: no more ES_MSG_CONN_DATA, then
 * ES_MSG_CONN_CLOSED (ES_CONN_LOCAL) and ES_MSG_STOP.
 * Returns: 0, -EALREADY if already closing, -EINVAL.
 * Thread: owning loop only.
 */
ES_EXTERN int es_conn_close(es_actor_t *self);

/*
 * Closes at once, dropping queued data, with a TCP reset (SO_LINGER 0).
 * Returns: 0, -EALREADY, -EINVAL. Thread: owning loop only.
 */
ES_EXTERN int es_conn_abort(es_actor_t *self);

/*
 * Half-close: shuts down the sending side once the queue is flushed; data
 * keeps arriving until the peer closes.
 * Returns: 0, -EALREADY, -EINVAL. Thread: owning loop only.
 */
ES_EXTERN int es_conn_shutdown(es_actor_t *self);

/*
 * Stops or resumes reading from the socket (application backpressure).
 * Returns: 0, -EINVAL. Thread: owning loop only.
 */
ES_EXTERN int es_conn_pause(es_actor_t *self, int paused);

/*
 * Changes the idle timeout (es_conn_opts_t.idle_timeout_ms) of this
 * connection; 0 turns it off. The connection counts as active now, so the
 * new timeout runs from this call. Cheap when lengthening or turning off
 * (the armed timer lapses or re-arms itself when it fires).
 * Returns: 0, -EINVAL, -ENOMEM. Thread: owning loop only.
 */
ES_EXTERN int es_conn_set_idle_timeout(es_actor_t *self, unsigned ms);

/*
 * Sends a copy of *msg to every open connection actor of rt whose behaviour
 * (es_conn_opts_t.behaviour) is `behaviour`: how a service tells all of its
 * connections something (a server shutting down closes its idle ones) with
 * no list of them. Each demux thread delivers to its own connections in a
 * later turn; a connection whose mailbox is full is skipped, and one that
 * opens after that turn does not get it.
 * Returns: 0; -EINVAL (a system type, or a payload with a free_cb: the
 * message is copied, so it may not own memory); -ENOMEM; -ESHUTDOWN; or the
 * error of the first demux thread that could not be reached (the others
 * still deliver).
 * Thread: any.
 */
ES_EXTERN int es_conn_broadcast(es_runtime_t *rt, es_behaviour_cb behaviour,
                                const es_msg_t *msg);

/*
 * Bytes queued and not yet sent.
 * Returns: the count, or 0 if self is not a connection actor.
 * Thread: owning loop only.
 */
ES_EXTERN size_t es_conn_queued(const es_actor_t *self);

/*
 * The connection's socket (for getsockopt and the like; do not read, write
 * or close it). Returns: the fd, or -EINVAL / -EBADF once closed.
 * Thread: owning loop only.
 */
ES_EXTERN int es_conn_fd(const es_actor_t *self);

/* The connection's own state (state_new's result, or arg). */
ES_EXTERN void *es_conn_state(const es_actor_t *self);

/*
 * Parses an address in the one grammar every listen address of the library
 * uses (es_listen(), es_http_server_listen()):
 *   "<IPv4>:<port>"   a dotted quad, each part 0-255 without leading zeros
 *   "[<IPv6>]:<port>" an IPv6 address (inet_pton form) in brackets
 *   "unix:<path>"     a Unix socket path of 1 to 107 bytes
 * where <port> is 1 to 5 decimal digits worth 0 to 65535. Nothing else:
 * no host names (they need a resolver), no IPv6 without brackets, no
 * missing port, no sign, space or trailing bytes.
 * Returns: 0, with *ss and *len filled when they are not NULL; -EINVAL
 * (NULL or malformed address); -ENAMETOOLONG (Unix path too long).
 * Ownership: nothing is kept. Thread: any.
 */
ES_EXTERN int es_addr_parse(const char *address, struct sockaddr_storage *ss,
                            socklen_t *len);

/* Options for es_listen(). */
typedef struct es_listen_opts {
    /* "127.0.0.1:8080", "[::1]:0", "0.0.0.0:80" or "unix:/path/to.sock"
     * (the grammar of es_addr_parse()) */
    const char *address;
    es_conn_opts_t conn;
    es_placement_t placement; /* round-robin (default) or least-loaded */
    int reuseport;            /* one acceptor per demux thread (SO_REUSEPORT) */
    int backlog;              /* listen() backlog; default 511 */
} es_listen_opts_t;

/* A listening socket and its acceptor actor(s). */
typedef struct es_listener es_listener_t;

/*
 * Binds, listens and spawns the acceptor(s). Accepted connections become
 * connection actors on the demux threads chosen by opts->placement.
 * EMFILE/ENFILE while accepting makes the acceptor back off and retry (see
 * es_listener_stats()).
 * Returns: 0 and *out; -EINVAL (bad address or options); -ENAMETOOLONG
 * (Unix path too long: es_addr_parse()); -EADDRINUSE and
 * other bind/listen errors; -ENOMEM; -ESHUTDOWN.
 * Ownership: *out belongs to the caller until es_listener_free().
 * Thread: any.
 */
ES_EXTERN int es_listen(es_runtime_t *rt, const es_listen_opts_t *opts,
                        es_listener_t **out);

/* The bound TCP port (useful after binding port 0), or 0 for Unix sockets. */
ES_EXTERN int es_listener_port(const es_listener_t *l);

/* Counters of a listener. */
typedef struct es_listener_stats {
    uint64_t accepted;     /* connections handed to connection actors */
    uint64_t fd_exhausted; /* EMFILE / ENFILE back-offs */
    uint64_t rejected;     /* accepted sockets closed: no actor could run */
} es_listener_stats_t;

/* Reads a listener's counters. Returns: 0 or -EINVAL. Thread: any. */
ES_EXTERN int es_listener_stats(const es_listener_t *l,
                                es_listener_stats_t *out);

/*
 * Stops accepting and closes the listening socket (existing connections
 * live on), then frees l. Safe after the runtime stopped.
 * Returns: nothing. Thread: any thread that is not a demux thread of l's
 * runtime, or after the runtime has stopped.
 */
ES_EXTERN void es_listener_free(es_listener_t *l);

/* Options for es_connect(). */
typedef struct es_connect_opts {
    const char *host; /* name or numeric address */
    uint16_t port;
    const char *unix_path; /* instead of host/port */
    unsigned timeout_ms;   /* resolve + connect; default 10000 */
    int loop; /* ES_LOOP_ANY (0): placement decides; ES_LOOP(i): thread i */
    es_placement_t placement;
    es_conn_opts_t conn;
} es_connect_opts_t;

/*
 * Spawns an outbound connection actor. Its behaviour gets ES_MSG_START,
 * then ES_MSG_CONN_OPEN once connected, or ES_MSG_CONN_CLOSED with
 * ES_CONN_REFUSED / _UNREACHABLE / _CONNECT_TIMEOUT / _RESOLVE_FAILED.
 * Placement: `loop`, else `placement` (as es_spawn_opts_t).
 * Returns: 0 and *out, -EINVAL (loop outside ES_LOOP_ANY ..
 * ES_LOOP(threads - 1), among others), -ENOMEM, -ESHUTDOWN.
 * Thread: any.
 */
ES_EXTERN int es_connect(es_runtime_t *rt, const es_connect_opts_t *opts,
                         es_actor_id_t *out);

/* The reason of an ES_MSG_CONN_CLOSED message (es_conn_reason_t). */
static inline int es_msg_conn_reason(const es_msg_t *msg)
{
    return (int)msg->inl.i64[0];
}

/* The negative errno behind an ES_MSG_CONN_CLOSED message, or 0. */
static inline int es_msg_conn_error(const es_msg_t *msg)
{
    return (int)msg->inl.i64[1];
}

#ifdef __cplusplus
}
#endif

#endif /* EVENTSERVER_CONN_H */
