/* SPDX-License-Identifier: MIT */
/*
 * Backpressure reaches TCP (issue 9): a connection actor that forwards what
 * it reads to a full actor is muted, and a muted connection stops reading
 * its socket, so the peer's writes stall instead of the server buffering
 * without limit. Once the receiver drains, reading resumes and every byte
 * arrives once, in order.
 */
#include "net_test.h"

#include <semaphore.h>

enum { MSG_CHUNK = ES_MSG_USER };

#define STALL_LIMIT (64u << 20) /* the server never stopped reading */
#define CHUNK (64u << 10)

struct sink {
    sem_t go;
    atomic_ullong held;    /* 1 once the sink waits inside its first chunk */
    atomic_ullong bytes;   /* received, checked against the pattern */
    atomic_ullong corrupt; /* bytes out of order or wrong */
};

static struct sink g_sink;
static atomic_ullong g_forward_fail;
static atomic_ullong g_sink_id;

static int sink_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    if (msg->type != MSG_CHUNK)
        return 0;
    if (!atomic_exchange(&g_sink.held, 1)) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 20;
        while (sem_timedwait(&g_sink.go, &ts) == -1 && errno == EINTR)
            ;
    }
    const uint8_t *p = msg->ptr;
    uint64_t at = atomic_load(&g_sink.bytes);
    for (uint32_t i = 0; i < msg->len; i++)
        if (p[i] != pat(at + i))
            atomic_fetch_add(&g_sink.corrupt, 1);
    atomic_fetch_add(&g_sink.bytes, msg->len);
    return 0;
}

/* The connection forwards each read to the sink, on the other loop. */
static int forward_hook(es_actor_t *self, struct conn *c, es_msg_t *msg)
{
    es_runtime_t *rt = es_actor_runtime(self);

    (void)c;
    if (msg->type == ES_MSG_CONN_OPEN) {
        es_spawn_opts_t o = {
            .behaviour = sink_cb,
            .loop = ES_LOOP(1 - es_actor_loop_index(self)),
            .mailbox_capacity = 4,
        };
        es_actor_id_t id;

        if (es_spawn(rt, &o, &id) != 0)
            atomic_fetch_add(&g_forward_fail, 1);
        atomic_store(&g_sink_id, id);
    } else if (msg->type == ES_MSG_CONN_DATA) {
        void *copy = malloc(msg->len);
        es_msg_t m = es_msg_ptr(MSG_CHUNK, copy, msg->len, free);

        if (!copy) {
            atomic_fetch_add(&g_forward_fail, 1);
            return 0;
        }
        memcpy(copy, msg->ptr, msg->len);
        if (es_send(rt, (es_actor_id_t)atomic_load(&g_sink_id), &m) != 0) {
            atomic_fetch_add(&g_forward_fail, 1);
            es_msg_release(&m);
        }
    }
    return 0;
}

Test(flow_conn, muted_connection_stops_reading, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(2);
    struct net srv = {.hook = forward_hook};
    es_listener_t *l = listen_net(rt, "127.0.0.1:0", &srv, NULL);
    int fd = tcp_client(es_listener_port(l));
    static uint8_t buf[CHUNK];
    uint64_t written = 0;
    es_stats_t st;

    cr_assert_eq(sem_init(&g_sink.go, 0, 0), 0);
    /* Write until the writes stall for half a second: the server stopped
     * reading and the socket buffers are full. */
    while (written < STALL_LIMIT) {
        for (uint32_t i = 0; i < CHUNK; i++)
            buf[i] = pat(written + i);
        size_t off = 0;
        while (off < CHUNK) {
            ssize_t w = send(fd, buf + off, CHUNK - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
            } else {
                cr_assert(w < 0 && (errno == EAGAIN || errno == EINTR),
                          "send: %s", strerror(errno));
                if (!poll_one(fd, POLLOUT, 500))
                    break;
            }
        }
        written += off;
        if (off < CHUNK)
            break;
    }
    cr_assert_lt(written, STALL_LIMIT,
                 "the server read %llu bytes into a full receiver",
                 (unsigned long long)written);
    cr_assert_eq(atomic_load(&g_sink.held), 1);
    ES_OK(es_runtime_stats(rt, -1, &st));
    cr_assert_geq(st.mutes, 1, "the connection was never muted");
    cr_log_info("flow_conn: stalled after %llu bytes",
                (unsigned long long)written);
    /* Release the sink: reading resumes, everything arrives in order. */
    cr_assert_eq(sem_post(&g_sink.go), 0);
    shutdown(fd, SHUT_WR);
    ES_WAIT_GE(g_sink.bytes, written);
    cr_assert_eq(atomic_load(&g_sink.bytes), written);
    cr_assert_eq(atomic_load(&g_sink.corrupt), 0);
    cr_assert_eq(atomic_load(&g_forward_fail), 0);
    close(fd);
    es_listener_free(l);
    es_test_free(rt);
    sem_destroy(&g_sink.go);
}
