/* SPDX-License-Identifier: MIT */
/*
 * What the cluster tests and their cluster_node processes say to each
 * other. A node is started as
 *
 *   cluster_node [-b HEARTBEAT_MS] [-m MISSES] [-w DELIVER_WAIT_MS]
 *                [-t TAG] URL CLUSTER NODE ROLE ARGS...
 *
 * with one of the roles
 *
 *   echo NAME [REPORT]  an actor registered as NAME (run two: a pool);
 *   sub TOPIC N         N actors subscribed to TOPIC;
 *   slow NAME MS        an actor registered as NAME with a mailbox of
 *                       CN_SLOW_MAILBOX that sleeps MS ms per message;
 *
 * and always a control actor registered as "ctl.<NODE>" that answers
 * CN_STAT requests. It prints "ready" once the broker knows its names (a
 * request to its own control actor made the round trip) and runs until
 * SIGTERM (es_cluster_leave(), exit 0) or SIGKILL.
 */
#ifndef ES_TEST_CLUSTER_NODE_H
#define ES_TEST_CLUSTER_NODE_H

#include <eventserver/actor.h>

#include <errno.h>
#include <stdint.h>

enum {
    /* To an echo (or slow) actor. As a send: counted, and a CN_GOT goes to
     * REPORT. As a request: answered; an inline request (u64[0] = v) with
     * inline u64[0] = v, u64[1] = TAG, a ptr request with a copy of its
     * bytes. */
    CN_PING = ES_MSG_USER + 0x100,
    CN_IGNORE, /* a request the echo actor never answers */
    CN_CRASH,  /* the echo actor stops with reason CN_CRASH_REASON */
    CN_UNREG,  /* the echo actor unregisters NAME (and answers a request) */
    /* Node -> REPORT, one per CN_PING send: u64[0] the first 8 payload
     * bytes, u64[1] cn_checksum() of the payload, u64[2] cn_got_flags(). */
    CN_GOT,
    /* Request to ctl.<NODE>: u64[0] = enum cn_stat; answered with
     * u64[0] = the value. */
    CN_STAT,
    /* A topic message: u64[0] = sequence number (< CN_MAX_PUBS), u64[1] =
     * how many the test publishes in all. */
    CN_PUB,
    /* A topic message that only proves the subscription reached the
     * broker; not counted. */
    CN_PROBE,
};

/* The reason a CN_CRASH stops the echo actor with. */
#define CN_CRASH_REASON (-EPROTO)

/* Most CN_PUB sequence numbers a subscriber keeps track of. */
#define CN_MAX_PUBS 1024

/* Mailbox capacity of the slow actor. */
#define CN_SLOW_MAILBOX 8

enum cn_stat {
    CN_STAT_SENDS,        /* CN_PING sends the echo/slow actor handled */
    CN_STAT_SERVED,       /* CN_PING requests it answered */
    CN_STAT_DELIVERED,    /* CN_PUB deliveries to the node's subscribers */
    CN_STAT_DUPS,         /* CN_PUBs a subscriber saw twice */
    CN_STAT_COMPLETE,     /* subscribers that saw every CN_PUB */
    CN_STAT_RECEIVED,     /* es_cluster_stats_t.received */
    CN_STAT_LOST_MAILBOX, /* es_cluster_stats_t.lost_mailbox */
    CN_STAT_LOST_SLOW,    /* es_cluster_stats_t.lost_slow */
    CN_STAT_RECONNECTS,   /* es_cluster_stats_t.reconnects */
    CN_STAT_TOPICS,       /* es_cluster_stats_t.topics */
};

/* FNV-1a over len bytes: what CN_GOT says the payload was. */
static inline uint64_t cn_checksum(const void *p, uint32_t len)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint32_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* CN_GOT u64[2]: the node's TAG, whether the payload was a ptr and
 * whether that ptr came with a free_cb (a copy the receiver owns), and
 * its length. */
static inline uint64_t cn_got_flags(unsigned tag, int is_ptr, int owned,
                                    uint32_t len)
{
    return (uint64_t)(tag & 0xff) | (uint64_t)(is_ptr != 0) << 8 |
           (uint64_t)(owned != 0) << 9 | (uint64_t)len << 32;
}

#define CN_GOT_TAG(f) ((unsigned)((f)&0xff))
#define CN_GOT_PTR(f) ((int)(((f) >> 8) & 1))
#define CN_GOT_OWNED(f) ((int)(((f) >> 9) & 1))
#define CN_GOT_LEN(f) ((uint32_t)((f) >> 32))

#endif /* ES_TEST_CLUSTER_NODE_H */
