/* SPDX-License-Identifier: MIT */
/*
 * es_cluster_send() (issue 11): inline bytes and a ptr payload reach a
 * named actor within one process and in another process, the receiver
 * gets an ordinary message whose ptr is a copy it owns (the sender keeps
 * its own), and a name registered on two nodes is a pool: every send and
 * every request reaches exactly one member, and both members get some.
 */
#include "cluster_fx.h"

#include <stdlib.h>
#include <unistd.h>

#include <stdlib.h>

#define PTR_LEN 100000

/* What the local receiver saw. */
struct box_rec {
    uint32_t type, len;
    int is_ptr, owned, from_none;
    uint64_t sum;
    uintptr_t ptr;
};

struct box {
    struct box_rec rec[8];
    atomic_ullong n;
};

static int box_cb(es_actor_t *self, es_msg_t *msg)
{
    struct box *b = es_actor_state(self);
    unsigned long long i = atomic_load(&b->n);
    es_msg_free_cb free_cb = msg->free_cb;
    const void *data = msg->ptr ? msg->ptr : msg->inl.bytes;

    if (msg->type == CN_STAT) { /* readiness */
        es_msg_t r = es_msg_u64(ES_MSG_USER, 0);

        es_reply(self, msg, &r);
        return 0;
    }
    if (msg->type != CN_PING || i >= 8)
        return 0;
    b->rec[i] = (struct box_rec){.type = msg->type,
                                 .len = msg->len,
                                 .is_ptr = msg->ptr != NULL,
                                 .owned = msg->free_cb != NULL,
                                 .from_none = msg->from == ES_ACTOR_NONE,
                                 .sum = cn_checksum(data, msg->len),
                                 .ptr = (uintptr_t)msg->ptr};
    if (msg->ptr && free_cb) {
        void *mine = es_msg_take(msg); /* ours now: free it ourselves */

        free_cb(mine);
    }
    atomic_store(&b->n, i + 1);
    return 0;
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 31 + seed);
}

Test(cluster_send, within_one_process, .timeout = ES_TEST_TIMEOUT)
{
    static struct box b;
    struct cfx f;
    es_spawn_opts_t o = {.behaviour = box_cb, .state = &b};
    es_actor_id_t id;
    unsigned char bytes[ES_MSG_INLINE];
    es_msg_t m, q = es_msg_make(CN_STAT), r;
    unsigned char *buf = malloc(PTR_LEN);
    unsigned char *big = calloc(1, (1u << 20) + 1);
    uint64_t ptr_sum;

    cfx_start(&f, 0, 0);
    memset(&b, 0, sizeof(b));
    ES_OK(es_spawn(f.rt, &o, &id));
    ES_OK(es_cluster_register(f.c, "box", id));
    cr_assert_eq(es_cluster_register(f.c, "box", id), -EEXIST);
    cfx_call_retry(&f, "box", &q, &r);
    es_msg_release(&r);

    fill(bytes, sizeof(bytes), 7);
    ES_OK(es_msg_bytes(&m, CN_PING, bytes, sizeof(bytes)));
    ES_OK(es_cluster_send(f.c, "box", &m));
    /* The caller keeps a ptr payload, free_cb or not: it is copied. */
    fill(buf, PTR_LEN, 3);
    ptr_sum = cn_checksum(buf, PTR_LEN);
    m = es_msg_ptr(CN_PING, buf, PTR_LEN, free);
    ES_OK(es_cluster_send(f.c, "box", &m));
    memset(buf, 0, PTR_LEN);

    /* Refused at the call, with nothing sent. */
    m = es_msg_ptr(CN_PING, big, (1u << 20) + 1, NULL);
    cr_assert_eq(es_cluster_send(f.c, "box", &m), -EINVAL);
    m = es_msg_make(ES_MSG_DOWN);
    cr_assert_eq(es_cluster_send(f.c, "box", &m), -EINVAL);
    m = es_msg_make(CN_PING);
    cr_assert_eq(es_cluster_send(f.c, "a..b", &m), -EINVAL);
    cr_assert_eq(es_cluster_send(f.c, ".box", &m), -EINVAL);
    cr_assert_eq(es_cluster_send(f.c, "bo x", &m), -EINVAL);

    ES_WAIT_GE(b.n, 2);
    es_test_sleep_ms(100); /* nothing else arrives */
    cfx_fini(&f);

    cr_assert_eq(atomic_load(&b.n), 2);
    cr_assert_eq(b.rec[0].len, ES_MSG_INLINE);
    cr_assert_eq(b.rec[0].is_ptr, 0);
    cr_assert_eq(b.rec[0].sum, cn_checksum(bytes, sizeof(bytes)));
    cr_assert(b.rec[0].from_none, "from is not ES_ACTOR_NONE");
    cr_assert_eq(b.rec[1].len, PTR_LEN);
    cr_assert(b.rec[1].is_ptr && b.rec[1].owned,
              "a ptr payload must arrive as a copy the receiver owns");
    cr_assert_neq(b.rec[1].ptr, (uintptr_t)buf);
    cr_assert_eq(b.rec[1].sum, ptr_sum, "the copy was not made at the call");
    cr_assert(b.rec[1].from_none);
    free(buf);
    free(big);
}

/* Sends `n_inline` inline CN_PINGs (seq 0..) and `n_ptr` ptr ones (seq
 * 1000..) to `name`; remembers each payload's checksum in sums. */
static void send_pings(struct cfx *f, const char *name, unsigned n_inline,
                       unsigned n_ptr, uint64_t *sums)
{
    for (unsigned i = 0; i < n_inline; i++) {
        es_msg_t m = es_msg_u64(CN_PING, i);

        m.inl.u64[1] = 0x5555aaaa0000ull + i;
        m.inl.u64[2] = ~(uint64_t)i;
        m.len = ES_MSG_INLINE;
        sums[i] = cn_checksum(m.inl.bytes, m.len);
        ES_OK(es_cluster_send(f->c, name, &m));
    }
    for (unsigned i = 0; i < n_ptr; i++) {
        uint32_t len = 8 + 6553 * (i + 1);
        unsigned char *p = malloc(len);
        uint64_t seq = 1000 + i;
        es_msg_t m;

        fill(p, len, i);
        memcpy(p, &seq, 8);
        sums[n_inline + i] = cn_checksum(p, len);
        m = es_msg_ptr(CN_PING, p, len, NULL);
        ES_OK(es_cluster_send(f->c, name, &m));
        free(p);
    }
}

Test(cluster_send, two_processes, .timeout = ES_TEST_TIMEOUT)
{
    static struct sink s;
    struct cfx f;
    uint64_t sums[60];
    unsigned long long n;

    cfx_start(&f, 0, 0);
    cfx_sink(&f, &s, "sink");
    cfx_node(&f, 0, "n1", 1, "echo", "svc", "sink", NULL);
    send_pings(&f, "svc", 50, 10, sums);
    ES_WAIT_GE(s.n, 60);
    es_test_sleep_ms(200); /* nothing more arrives */
    n = atomic_load(&s.n);
    cfx_fini(&f);

    cr_assert_eq(n, 60, "%llu reports for 60 sends", n);
    for (unsigned i = 0; i < 60; i++) {
        uint64_t seq = i < 50 ? i : 1000 + (i - 50);
        unsigned k;

        for (k = 0; k < n && s.rec[k].seq != seq; k++)
            ;
        cr_assert_lt(k, n, "send %llu never arrived", (unsigned long long)seq);
        cr_assert_eq(sink_count(&s, seq), 1);
        cr_assert_eq(s.rec[k].sum, sums[i], "payload of %u differs", i);
        cr_assert_eq(CN_GOT_TAG(s.rec[k].flags), 1);
        if (i < 50) {
            cr_assert_eq(CN_GOT_LEN(s.rec[k].flags), ES_MSG_INLINE);
            cr_assert_eq(CN_GOT_PTR(s.rec[k].flags), 0);
        } else {
            cr_assert_eq(CN_GOT_LEN(s.rec[k].flags), 8 + 6553 * (i - 49));
            cr_assert(CN_GOT_PTR(s.rec[k].flags) &&
                          CN_GOT_OWNED(s.rec[k].flags),
                      "ptr %u did not arrive as an owned copy", i);
        }
    }
    cr_assert_eq(atomic_load(&s.other), 0);
}

#define POOL_SENDS 200
#define POOL_REQUESTS 100

Test(cluster_send, pool_balancing, .timeout = ES_TEST_TIMEOUT)
{
    static struct sink s;
    static struct requester q;
    static uint64_t sums[POOL_SENDS];
    struct cfx f;
    es_actor_id_t req, proxy;
    unsigned by_tag[3] = {0}, reply_tag[3] = {0};
    unsigned long long n;

    cfx_start(&f, 0, 0);
    cfx_sink(&f, &s, "sink");
    cfx_node(&f, 0, "n1", 1, "echo", "pool", "sink", NULL);
    cfx_node(&f, 1, "n2", 2, "echo", "pool", "sink", NULL);
    send_pings(&f, "pool", POOL_SENDS, 0, sums);
    req = cfx_requester(&f, &q, 0, CN_PING);
    ES_OK(es_cluster_lookup(f.c, "pool", &proxy));
    cfx_ask(&f, req, proxy, POOL_REQUESTS, 10000);
    ES_WAIT_GE(s.n, POOL_SENDS);
    ES_WAIT_GE(q.outcomes, POOL_REQUESTS);
    es_test_sleep_ms(200); /* nothing more arrives */
    n = atomic_load(&s.n);
    cfx_fini(&f);

    cr_assert_eq(n, POOL_SENDS, "%llu reports for %d sends", n, POOL_SENDS);
    for (unsigned i = 0; i < POOL_SENDS; i++) {
        cr_assert_eq(sink_count(&s, i), 1, "send %u reached %u members", i,
                     sink_count(&s, i));
    }
    for (unsigned k = 0; k < n; k++) {
        unsigned tag = CN_GOT_TAG(s.rec[k].flags);

        cr_assert(tag == 1 || tag == 2, "tag %u", tag);
        by_tag[tag]++;
    }
    cr_assert(by_tag[1] > 0 && by_tag[2] > 0,
              "sends not spread over the pool: n1 %u, n2 %u", by_tag[1],
              by_tag[2]);

    cr_assert_eq(atomic_load(&q.asked), POOL_REQUESTS);
    cr_assert_eq(atomic_load(&q.replies), POOL_REQUESTS,
                 "replies %llu, -ESRCH %llu, -ETIMEDOUT %llu, other %llu",
                 atomic_load(&q.replies), atomic_load(&q.esrch),
                 atomic_load(&q.timeouts), atomic_load(&q.other));
    cr_assert_eq(atomic_load(&q.dup), 0);
    cr_assert_eq(atomic_load(&q.other), 0);
    for (unsigned i = 0; i < POOL_REQUESTS; i++) {
        cr_assert(q.tag[i] == 1 || q.tag[i] == 2, "reply tag %llu",
                  (unsigned long long)q.tag[i]);
        reply_tag[q.tag[i]]++;
    }
    cr_assert(reply_tag[1] > 0 && reply_tag[2] > 0,
              "requests not spread over the pool: n1 %u, n2 %u", reply_tag[1],
              reply_tag[2]);
}

/* The counters of es_cluster_stats() in the Prometheus text format, with
 * this node's name; a buffer too small is -EOVERFLOW. */
Test(cluster_send, metrics_text, .timeout = ES_TEST_TIMEOUT)
{
    static struct box b;
    static char buf[16384];
    struct cfx f;
    es_spawn_opts_t o = {.behaviour = box_cb, .state = &b};
    es_actor_id_t id;
    es_msg_t q = es_msg_make(CN_STAT), r;
    char small[16];
    int len, small_rc;

    cfx_start(&f, 0, 0);
    memset(&b, 0, sizeof(b));
    ES_OK(es_spawn(f.rt, &o, &id));
    ES_OK(es_cluster_register(f.c, "box", id));
    cfx_call_retry(&f, "box", &q, &r);
    es_msg_release(&r);
    len = es_cluster_metrics_text(f.c, buf, sizeof(buf));
    small_rc = es_cluster_metrics_text(f.c, small, sizeof(small));
    cfx_fini(&f);

    cr_assert_gt(len, 0, "es_cluster_metrics_text: %d", len);
    cr_assert_eq((size_t)len, strlen(buf));
    cr_assert_eq(small_rc, -EOVERFLOW);
    cr_assert_not_null(strstr(buf, "# TYPE es_cluster_registrations gauge\n"),
                       "%s", buf);
    cr_assert_not_null(
        strstr(buf, "\nes_cluster_registrations{node=\"t0\"} 1\n"), "%s", buf);
    cr_assert_not_null(strstr(buf, "\nes_cluster_lost_mailbox"), "%s", buf);
    cr_assert_not_null(strstr(buf, "\nes_cluster_lost_slow"), "%s", buf);
    cr_assert_not_null(strstr(buf, "\nes_cluster_replies"), "%s", buf);

    /* A real parser reads it (Debian's python3-prometheus-client, which
     * .ci/deps.sh installs): every family, and the value we know. */
    /* Debian's package is for /usr/bin/python3 (a python3 first on PATH
     * may be another one). */
    const char *py = "/usr/bin/python3";
    char probe[128];
    snprintf(probe, sizeof(probe),
             "%s -c 'import prometheus_client.parser' 2>/dev/null", py);
    if (system(probe) != 0) {
        py = "python3";
        snprintf(probe, sizeof(probe),
                 "%s -c 'import prometheus_client.parser' 2>/dev/null", py);
    }
    if (system(probe) != 0) {
        fprintf(stderr, "\n*** SKIPPED the prometheus_client check of "
                        "cluster_send::metrics_text: apt-get install "
                        "python3-prometheus-client ***\n\n");
        return;
    }
    char path[] = "/tmp/es_cluster_metrics_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, buf, (size_t)len), len);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "%s -c 'import sys\n"
             "from prometheus_client.parser import "
             "text_string_to_metric_families as p\n"
             "fams = list(p(open(sys.argv[1]).read()))\n"
             "reg = [s.value for f in fams for s in f.samples "
             "if s.name == \"es_cluster_registrations\" and "
             "s.labels == {\"node\": \"t0\"}]\n"
             "sys.exit(0 if len(fams) == 19 and reg == [1.0] else 1)' %s",
             py, path);
    int st = system(cmd);
    unlink(path);
    cr_assert_eq(st, 0, "prometheus_client refused the cluster's metrics:\n%s",
                 buf);
}
