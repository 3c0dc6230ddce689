/* SPDX-License-Identifier: MIT */
/*
 * What the two files of the comet example share: limits, options, the
 * messages the HTTP handlers (main.c) send the hub (hub.c), cursors.
 */
#ifndef COMET_H
#define COMET_H

#include <stdbool.h>
#include <stdint.h>

#include <eventserver/eventserver.h>
#include <eventserver/http.h>
#ifdef ES_COMET_CLUSTER
#include <eventserver/cluster.h>
#endif

#define MAX_CHANNEL 64  /* name bytes with the NUL: [A-Za-z0-9_-] */
#define NODE_MAX 128    /* node name bytes (ES_CLUSTER_NAME_MAX) */
#define MAX_ORIGINS 32  /* origins a channel (and a cursor) tracks */
#define MAX_TEXT 65536  /* longest message [413] */
#define MAX_CURSOR 6144 /* longest cursor accepted in a query */

enum { MSG_SUB = ES_MSG_USER, MSG_PUB, MSG_WIRE, MSG_PLAIN, MSG_FANOUT };

/* How many parked plain /sub one turn of the hub answers before it lets
 * the other actors of its thread run (MSG_FANOUT goes on): the responses
 * being written, and their connections' mailboxes, stay at one batch
 * instead of one per parked connection, which the allocator would keep
 * as holes once freed. */
#define FANOUT_BATCH 32

/* The command line (main.c), read-only once the runtime runs. */
struct comet_opts {
    const char *listen;
    unsigned threads;
    int reuseport;
    const char *nats;
    char node[NODE_MAX + 1];
    unsigned history;
    unsigned poll_timeout_ms;
};
extern struct comet_opts g_opt;
extern es_actor_id_t g_hub;
#ifdef ES_COMET_CLUSTER
extern es_cluster_t *g_cluster; /* NULL without --nats */
#endif

/* A parsed cursor: the time of the first subscription and, per origin,
 * the last seq the client has. An origin it does not name counts from
 * `t`: its messages published after t are new to the client. */
struct cursor {
    int64_t t;
    bool fresh; /* made from an empty text: answered at once */
    unsigned n;
    struct cpos {
        uint64_t seq;
        char name[NODE_MAX + 1];
    } pos[MAX_ORIGINS];
};

struct channel;

/* A /sub with a cursor, parked in its channel until something new or its
 * timer. A plain /sub (no cursor) is only its response in the channel's
 * queue (hub.c). */
struct sub {
    struct sub *next, *prev;
    struct channel *ch;
    es_http_response_t *res;
    es_timer_id_t timer;
    struct cursor *cur;
    char name[MAX_CHANNEL];
};

/* A /pub on its way to the hub. */
struct pub {
    es_http_response_t *res; /* deferred too: answered by the hub */
    char name[MAX_CHANNEL];
    uint32_t len;
    char text[];
};

/* The realtime clock in microseconds. */
int64_t comet_now_us(void);

/* Is s[0..n) a channel name (1..63 bytes of [A-Za-z0-9_-])? */
bool comet_channel_name_ok(const char *s, size_t n);

/* Parses "t<us>,<node>:<seq>,..." into *cur (a bare "<seq>" names this
 * node; an empty text is a fresh cursor). Returns: 0; -EINVAL; -E2BIG. */
int comet_cursor_parse(const char *s, struct cursor *cur);

/* Spawns the hub, the actor that owns every channel. Returns: es_spawn's. */
int comet_hub_spawn(es_runtime_t *rt, es_actor_id_t *out);

#endif /* COMET_H */
