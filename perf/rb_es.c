/* SPDX-License-Identifier: MIT */
/*
 * The es_* cases of ring_bench: EventServer's own message path, each in a
 * runtime of its own. es_cross_thread and es_same_thread have one actor
 * feed another on two loops or on one; es_cross_thread_4senders fans in
 * from four foreign threads; es_pingpong times round trips between two
 * loops; es_sparse sends a paced trickle that lets the loop sleep between
 * messages, so it measures the wakeup. Each case also reports the
 * runtime's counter deltas over its interval (wakeups per message among
 * them), and the helpers at the top open, drive and close those runtimes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "rb_common.h"

#include <ck_pr.h>

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- es runtime helpers --------------------------------------------------- */

static int rt_open(unsigned threads, es_runtime_t **out)
{
    /* These cases measure the transport between threads: the actors stay
     * where the case puts them (co-location would move a cross-thread
     * pair onto one thread). */
    es_runtime_opts_t opts = {
        .threads = threads,
        .mailbox_capacity = BENCH_MAILBOX,
        .colocate = -1,
    };
    int rc = es_runtime_new(&opts, out);

    if (rc)
        return rc;
    rc = es_runtime_start(*out);
    if (rc)
        es_runtime_free(*out);
    return rc;
}

static int rt_close(es_runtime_t *rt)
{
    int rc = es_runtime_stop(rt);
    int rc_wait = es_runtime_wait(rt);

    es_runtime_free(rt);
    return rc ? rc : rc_wait;
}

static int rt_spawn(es_runtime_t *rt, es_behaviour_cb fn, void *state, int loop,
                    es_actor_id_t *id)
{
    es_spawn_opts_t opts = {
        .behaviour = fn, .state = state, .loop = ES_LOOP(loop)};

    return es_spawn(rt, &opts, id);
}

/* Counter deltas: what the interval between two snapshots did. */
static void stats_delta(const es_stats_t *a, const es_stats_t *b, es_stats_t *d)
{
    d->msgs_sent = b->msgs_sent - a->msgs_sent;
    d->msgs_received = b->msgs_received - a->msgs_received;
    d->dead_letters = b->dead_letters - a->dead_letters;
    d->mailbox_full = b->mailbox_full - a->mailbox_full;
    d->wakeups_written = b->wakeups_written - a->wakeups_written;
    d->wakeups_saved = b->wakeups_saved - a->wakeups_saved;
    d->timers_fired = b->timers_fired - a->timers_fired;
    d->actors = b->actors;
    d->loop_turns = b->loop_turns - a->loop_turns;
    d->sleeps = b->sleeps - a->sleeps;
}

/*
 * es_send() that waits out a full mailbox or ring: a few pauses, then
 * sched_yield() so that on few CPUs the receiver gets to run.
 * Returns: es_send()'s result, or -ETIMEDOUT after give_up_ns.
 */
static int send_retry(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *m,
                      uint64_t give_up_ns, uint64_t *eagain)
{
    for (unsigned spins = 0;; spins++) {
        int rc = es_send(rt, to, m);

        if (rc != -EAGAIN)
            return rc;
        (*eagain)++;
        if (spins < SPIN_BEFORE_YIELD) {
            ck_pr_stall();
            continue;
        }
        if (now_ns() > give_up_ns)
            return -ETIMEDOUT;
        sched_yield();
    }
}

/* ES_MSG_START: the actor must run on the loop es_spawn() was given. */
static void check_home(es_actor_t *self, int home, struct fault *f)
{
    int loop = es_actor_loop_index(self);

    if (loop != home)
        fault_set(f, -EINVAL, "actor pinned to loop %d runs on loop %d", home,
                  loop);
}

/* Snapshots the counters at the start of an es case's interval. */
static int stats_begin(es_runtime_t *rt, es_stats_t *before)
{
    return es_runtime_stats(rt, -1, before);
}

/* Closes the interval: counter deltas and the wakeups they show. */
static int stats_end(es_runtime_t *rt, const es_stats_t *before,
                     struct run_out *out)
{
    es_stats_t after;
    int rc = es_runtime_stats(rt, -1, &after);

    if (rc)
        return rc;
    stats_delta(before, &after, &out->es);
    out->has_es = true;
    out->wakeups = (int64_t)out->es.wakeups_written;
    return 0;
}

/*
 * Runs an es case whose actors drive themselves: snapshots the counters,
 * arms the deadlines, sends MSG_GO to `starter` and waits for one count on
 * `done`.
 * Returns: 0, -ETIMEDOUT if the run never finished, or an es_ error.
 */
static int es_measure(es_runtime_t *rt, es_actor_id_t starter,
                      struct gate *done, uint64_t *deadline_ns,
                      uint64_t *give_up_ns, const struct bench_cfg *cfg,
                      struct run_out *out)
{
    es_msg_t go = es_msg_make(MSG_GO);
    es_stats_t before;
    int rc = stats_begin(rt, &before);

    if (rc)
        return rc;
    /* Written before MSG_GO is sent, so the actors see them. */
    *deadline_ns = now_ns() + cfg->mode->budget_ns;
    *give_up_ns = *deadline_ns + GRACE_NS;
    rc = send_retry(rt, starter, &go, *give_up_ns, &out->eagain);
    if (rc)
        return rc;
    if (!gate_await(done, 1, *give_up_ns + GRACE_NS))
        return -ETIMEDOUT;
    return stats_end(rt, &before, out);
}

/* --- es_cross_thread, es_same_thread: one actor feeds another ------------- */

/* Counts MSG_DATA until MSG_END. Home thread only, until the runtime ends. */
struct flow_recv {
    uint64_t count, end_ns;
    struct seq_check seq;
    int home;
    struct gate *done;
    struct fault fault;
};

/*
 * Sends `target` MSG_DATA in batches of SEND_BATCH, then MSG_END. After each
 * batch, or at the first -EAGAIN, it sends itself MSG_KICK instead of
 * spinning inside the behaviour: when it runs again is up to the loop's
 * scheduler, like any actor that drives itself.
 */
struct flow_send {
    es_runtime_t *rt;
    es_actor_id_t to;
    uint64_t target, sent, start_ns, eagain;
    uint64_t deadline_ns, give_up_ns; /* set by main before MSG_GO */
    int home;
    bool capped;
    struct gate *done;
    struct fault fault;
};

static int flow_receiver(es_actor_t *self, es_msg_t *msg)
{
    struct flow_recv *r = es_actor_state(self);

    switch (msg->type) {
    case MSG_DATA:
        seq_check(&r->seq, msg->inl.u64[0]);
        r->count++;
        break;
    case MSG_END:
        r->end_ns = now_ns();
        gate_count(r->done);
        break;
    case ES_MSG_START:
        check_home(self, r->home, &r->fault);
        break;
    }
    return 0;
}

static void flow_send_data(struct flow_send *s)
{
    for (unsigned i = 0; i < SEND_BATCH && s->sent < s->target; i++) {
        es_msg_t m = es_msg_u64(MSG_DATA, s->sent);
        int rc = es_send(s->rt, s->to, &m);

        if (rc == -EAGAIN) {
            s->eagain++;
            return;
        }
        if (rc) {
            fault_set(&s->fault, rc, "es_send from the sender actor");
            return;
        }
        s->sent++;
    }
}

/* Returns: true once MSG_END is on its way. */
static bool flow_send_end(struct flow_send *s)
{
    es_msg_t m = es_msg_make(MSG_END);
    int rc = es_send(s->rt, s->to, &m);

    if (rc == -EAGAIN)
        s->eagain++;
    else if (rc)
        fault_set(&s->fault, rc, "es_send(MSG_END)");
    return rc == 0;
}

static void flow_send_batch(es_actor_t *self, struct flow_send *s)
{
    uint64_t now = now_ns();
    es_msg_t kick = es_msg_make(MSG_KICK);

    if (!s->capped && s->sent < s->target && now > s->deadline_ns) {
        s->capped = true;
        s->target = s->sent;
    }
    flow_send_data(s);
    if (!s->fault.rc && s->sent == s->target && flow_send_end(s))
        return;
    if (!s->fault.rc && now > s->give_up_ns)
        fault_set(&s->fault, -ETIMEDOUT, "receiver stayed full");
    if (!s->fault.rc) {
        int rc = es_send(s->rt, es_actor_self(self), &kick);
        if (rc)
            fault_set(&s->fault, rc, "es_send(MSG_KICK) to self");
    }
    if (s->fault.rc)
        gate_count(s->done);
}

static int flow_sender(es_actor_t *self, es_msg_t *msg)
{
    struct flow_send *s = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        check_home(self, s->home, &s->fault);
        break;
    case MSG_GO:
        s->start_ns = now_ns();
        flow_send_batch(self, s);
        break;
    case MSG_KICK:
        flow_send_batch(self, s);
        break;
    }
    return 0;
}

static int flow_result(const struct flow_send *s, const struct flow_recv *r,
                       struct run_out *out)
{
    out->msgs = r->count;
    out->elapsed_ns = r->end_ns - s->start_ns;
    out->capped = s->capped;
    out->eagain += s->eagain;
    if (fault_merge(out, &s->fault) || fault_merge(out, &r->fault))
        return out->fault.rc;
    if (r->count != s->sent)
        fault_set(&out->fault, -EPROTO,
                  "receiver counted %" PRIu64 " of %" PRIu64 " sent", r->count,
                  s->sent);
    return seq_report(&r->seq, out);
}

static int run_flow(const struct bench_cfg *cfg, struct run_out *out,
                    unsigned threads, int send_loop, int recv_loop)
{
    struct gate done;
    struct flow_recv r = {.home = recv_loop, .done = &done};
    struct flow_send s = {
        .target = cfg->mode->msgs, .home = send_loop, .done = &done};
    es_actor_id_t sender;
    es_runtime_t *rt;
    int rc = gate_init(&done);

    if (rc)
        return rc;
    rc = rt_open(threads, &rt);
    if (rc) {
        fault_set(&out->fault, rc, "es_runtime_new/start");
        goto close_gate;
    }
    s.rt = rt;
    rc = rt_spawn(rt, flow_receiver, &r, recv_loop, &s.to);
    if (!rc)
        rc = rt_spawn(rt, flow_sender, &s, send_loop, &sender);
    if (rc)
        fault_set(&out->fault, rc, "es_spawn");
    else if ((rc = es_measure(rt, sender, &done, &s.deadline_ns, &s.give_up_ns,
                              cfg, out)))
        fault_set(&out->fault, rc, "waiting for the receiver");
    if ((rc = rt_close(rt)))
        fault_set(&out->fault, rc, "es_runtime_stop/wait");
    rc = flow_result(&s, &r, out);
close_gate:
    gate_close(&done);
    return rc ? rc : out->fault.rc;
}

int case_es_cross_thread(const struct bench_cfg *cfg, struct run_out *out)
{
    return run_flow(cfg, out, 2, 0, 1);
}

int case_es_same_thread(const struct bench_cfg *cfg, struct run_out *out)
{
    return run_flow(cfg, out, 1, 0, 0);
}

/* --- es_request_cross_thread, es_request_same_thread: request/reply ------- */

/* Requests a client keeps outstanding: enough that the cost per completed
 * request, not the round-trip latency, is what is measured. */
#define REQ_WINDOW 1024u
/* Completions between two looks at the clock. */
#define REQ_CLOCK_EVERY 1024u
/* Deadline of each request: armed and cleared on every one, never due. */
#define REQ_TIMEOUT_MS 60000

/* Keeps REQ_WINDOW es_request()s to `server` outstanding until `target`
 * have completed. */
struct req_client {
    es_actor_id_t server;
    uint64_t target, issued, completed, start_ns, end_ns;
    uint64_t deadline_ns, give_up_ns; /* set by main before MSG_GO */
    int home;
    bool capped;
    struct gate *done;
    struct fault fault;
};

struct req_server {
    int home;
    struct fault fault;
};

static void req_issue(es_actor_t *self, struct req_client *c)
{
    es_msg_t m = es_msg_u64(MSG_DATA, c->issued);
    int rc = es_request(self, c->server, &m, REQ_TIMEOUT_MS, NULL);

    if (rc)
        fault_set(&c->fault, rc, "es_request");
    else
        c->issued++;
}

static void req_finish(struct req_client *c)
{
    c->end_ns = now_ns();
    gate_count(c->done);
}

static void req_completed(es_actor_t *self, struct req_client *c)
{
    c->completed++;
    if (c->completed % REQ_CLOCK_EVERY == 0 && !c->capped &&
        now_ns() > c->deadline_ns) {
        c->capped = true; /* over budget: finish what is outstanding */
        c->target = c->issued;
    }
    if (c->issued < c->target && !c->fault.rc)
        req_issue(self, c);
    if (c->completed == c->target)
        req_finish(c);
}

static int req_client_cb(es_actor_t *self, es_msg_t *msg)
{
    struct req_client *c = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        check_home(self, c->home, &c->fault);
        break;
    case MSG_GO:
        c->start_ns = now_ns();
        for (unsigned i = 0; i < REQ_WINDOW && c->issued < c->target; i++)
            req_issue(self, c);
        if (c->fault.rc)
            gate_count(c->done);
        break;
    case ES_MSG_REPLY:
        req_completed(self, c);
        break;
    case ES_MSG_REQUEST_FAILED:
        fault_set(&c->fault, es_msg_reason(msg), "request failed");
        c->completed++;
        if (c->completed == c->target)
            req_finish(c);
        break;
    }
    return 0;
}

static int req_server_cb(es_actor_t *self, es_msg_t *msg)
{
    struct req_server *s = es_actor_state(self);

    if (msg->type == MSG_DATA) {
        es_msg_t r = es_msg_u64(MSG_DATA, msg->inl.u64[0]);
        int rc = es_reply(self, msg, &r);

        if (rc)
            fault_set(&s->fault, rc, "es_reply");
    } else if (msg->type == ES_MSG_START) {
        check_home(self, s->home, &s->fault);
    }
    return 0;
}

static int run_request(const struct bench_cfg *cfg, struct run_out *out,
                       unsigned threads, int client_loop, int server_loop)
{
    struct gate done;
    struct req_server s = {.home = server_loop};
    /* A request is two messages: as many messages as the flow cases. */
    struct req_client c = {
        .target = cfg->mode->msgs / 2, .home = client_loop, .done = &done};
    es_actor_id_t client;
    es_runtime_t *rt;
    int rc = gate_init(&done);

    if (rc)
        return rc;
    rc = rt_open(threads, &rt);
    if (rc) {
        fault_set(&out->fault, rc, "es_runtime_new/start");
        goto close_gate;
    }
    rc = rt_spawn(rt, req_server_cb, &s, server_loop, &c.server);
    if (!rc)
        rc = rt_spawn(rt, req_client_cb, &c, client_loop, &client);
    if (rc)
        fault_set(&out->fault, rc, "es_spawn");
    else if ((rc = es_measure(rt, client, &done, &c.deadline_ns, &c.give_up_ns,
                              cfg, out)))
        fault_set(&out->fault, rc, "waiting for the replies");
    if ((rc = rt_close(rt)))
        fault_set(&out->fault, rc, "es_runtime_stop/wait");
    out->msgs = c.completed;
    out->elapsed_ns = c.end_ns - c.start_ns;
    out->capped = c.capped;
    if (!fault_merge(out, &c.fault))
        (void)fault_merge(out, &s.fault);
close_gate:
    gate_close(&done);
    return rc ? rc : out->fault.rc;
}

int case_es_request_cross_thread(const struct bench_cfg *cfg,
                                 struct run_out *out)
{
    return run_request(cfg, out, 2, 0, 1);
}

int case_es_request_same_thread(const struct bench_cfg *cfg,
                                struct run_out *out)
{
    return run_request(cfg, out, 1, 0, 0);
}

/* --- es_cross_thread_4senders: foreign threads fan in --------------------- */

/* A foreign thread sending its quota to its own receiver. */
struct fanin_sender {
    es_runtime_t *rt;
    es_actor_id_t to;
    uint64_t quota, sent, start_ns, eagain;
    uint64_t deadline_ns, give_up_ns;
    bool capped;
    struct gate *start, *done;
    struct fault fault;
};

static int fanin_send_all(struct fanin_sender *f)
{
    int rc = 0;

    for (uint64_t i = 0; i < f->quota && !rc; i++) {
        es_msg_t m = es_msg_u64(MSG_DATA, i);

        if (i % SEND_BATCH == 0 && now_ns() > f->deadline_ns) {
            f->capped = true;
            break;
        }
        rc = send_retry(f->rt, f->to, &m, f->give_up_ns, &f->eagain);
        f->sent += rc == 0;
    }
    return rc;
}

static void *fanin_sender_main(void *arg)
{
    struct fanin_sender *f = arg;
    es_msg_t end = es_msg_make(MSG_END);
    int rc;

    if (!gate_pass(f->start))
        return NULL;
    f->start_ns = now_ns();
    rc = fanin_send_all(f);
    if (!rc)
        rc = send_retry(f->rt, f->to, &end, f->give_up_ns, &f->eagain);
    if (rc) {
        fault_set(&f->fault, rc, "es_send from a foreign thread");
        gate_count(f->done);
    }
    return NULL;
}

static int fanin_result(const struct fanin_sender *f, const struct flow_recv *r,
                        struct run_out *out)
{
    uint64_t start = UINT64_MAX, end = 0;

    for (unsigned i = 0; i < FANIN_SENDERS; i++) {
        start = f[i].start_ns < start ? f[i].start_ns : start;
        end = r[i].end_ns > end ? r[i].end_ns : end;
        out->msgs += r[i].count;
        out->capped |= f[i].capped;
        out->eagain += f[i].eagain;
        if (fault_merge(out, &f[i].fault) || fault_merge(out, &r[i].fault) ||
            seq_report(&r[i].seq, out))
            return out->fault.rc;
        if (r[i].count != f[i].sent)
            fault_set(&out->fault, -EPROTO,
                      "receiver %u counted %" PRIu64 " of %" PRIu64, i,
                      r[i].count, f[i].sent);
    }
    out->elapsed_ns = end > start ? end - start : 0;
    return out->fault.rc;
}

/* Spawns the receivers and the foreign sender threads. */
static int fanin_spawn(es_runtime_t *rt, struct flow_recv *r,
                       struct fanin_sender *f, struct team *team, uint64_t msgs)
{
    int rc = 0;

    for (unsigned i = 0; i < FANIN_SENDERS && !rc; i++) {
        f[i].rt = rt;
        f[i].quota = msgs / FANIN_SENDERS;
        rc = rt_spawn(rt, flow_receiver, &r[i], r[i].home, &f[i].to);
    }
    for (unsigned i = 0; i < FANIN_SENDERS && !rc; i++)
        rc = team_spawn(team, fanin_sender_main, &f[i]);
    return rc;
}

/* Opens the start gate for the senders and waits for every MSG_END. */
static int fanin_go(es_runtime_t *rt, struct team *team, struct fanin_sender *f,
                    struct gate *done, const struct bench_cfg *cfg,
                    struct run_out *out)
{
    uint64_t deadline = now_ns() + cfg->mode->budget_ns;
    es_stats_t before;
    int rc = stats_begin(rt, &before);

    for (unsigned i = 0; i < FANIN_SENDERS; i++) {
        f[i].deadline_ns = deadline;
        f[i].give_up_ns = deadline + GRACE_NS;
    }
    rc = team_start(team, rc);
    if (rc)
        return rc;
    if (!gate_await(done, FANIN_SENDERS, deadline + 2 * GRACE_NS))
        return -ETIMEDOUT;
    return stats_end(rt, &before, out);
}

static int run_fanin(const struct bench_cfg *cfg, struct run_out *out)
{
    struct gate start, done;
    struct team team = {.start = &start};
    struct flow_recv r[FANIN_SENDERS];
    struct fanin_sender f[FANIN_SENDERS];
    es_runtime_t *rt;
    int rc;

    for (unsigned i = 0; i < FANIN_SENDERS; i++) {
        r[i] =
            (struct flow_recv){.home = (int)(i % FANIN_LOOPS), .done = &done};
        f[i] = (struct fanin_sender){.start = &start, .done = &done};
    }
    if ((rc = gate_init(&start)))
        return rc;
    if ((rc = gate_init(&done)))
        goto close_start;
    if ((rc = rt_open(FANIN_LOOPS, &rt))) {
        fault_set(&out->fault, rc, "es_runtime_new/start");
        goto close_done;
    }
    rc = fanin_spawn(rt, r, f, &team, cfg->mode->msgs);
    if (rc)
        team_start(&team, rc);
    else
        rc = fanin_go(rt, &team, f, &done, cfg, out);
    if (rc)
        fault_set(&out->fault, rc, "running the senders");
    team_join(&team);
    if ((rc = rt_close(rt)))
        fault_set(&out->fault, rc, "es_runtime_stop/wait");
    rc = fanin_result(f, r, out);
close_done:
    gate_close(&done);
close_start:
    gate_close(&start);
    return rc ? rc : out->fault.rc;
}

int case_es_cross_thread_4senders(const struct bench_cfg *cfg,
                                  struct run_out *out)
{
    return run_fanin(cfg, out);
}

/* --- es_pingpong: round trips between two loops --------------------------- */

/* Pings, times each round trip, pings again. Home thread only. */
struct ping_state {
    es_runtime_t *rt;
    es_actor_id_t peer;
    uint64_t rounds, done_rounds, sent_ns, start_ns, end_ns, eagain;
    uint64_t deadline_ns, give_up_ns; /* set by main before MSG_GO */
    struct samples *lat;              /* reserved for `rounds` samples */
    struct gate *done;
    int home;
    bool capped;
    struct fault fault;
};

/* Answers every ping to its sender (msg->from). */
struct pong_state {
    es_runtime_t *rt;
    uint64_t give_up_ns, eagain; /* set by main before MSG_GO */
    struct gate *done;
    int home;
    struct fault fault;
};

static void ping_send(struct ping_state *p)
{
    es_msg_t m = es_msg_make(MSG_PING);
    int rc;

    p->sent_ns = now_ns();
    rc = send_retry(p->rt, p->peer, &m, p->give_up_ns, &p->eagain);
    if (rc) {
        fault_set(&p->fault, rc, "es_send(MSG_PING)");
        gate_count(p->done);
    }
}

static void ping_on_pong(struct ping_state *p)
{
    uint64_t now = now_ns();

    samples_push(p->lat, now - p->sent_ns);
    p->done_rounds++;
    if (p->done_rounds < p->rounds && now <= p->deadline_ns) {
        ping_send(p);
        return;
    }
    p->capped = p->done_rounds < p->rounds;
    p->end_ns = now;
    gate_count(p->done);
}

static int ping_actor(es_actor_t *self, es_msg_t *msg)
{
    struct ping_state *p = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        check_home(self, p->home, &p->fault);
        break;
    case MSG_GO:
        p->start_ns = now_ns();
        ping_send(p);
        break;
    case MSG_PONG:
        ping_on_pong(p);
        break;
    }
    return 0;
}

static int pong_actor(es_actor_t *self, es_msg_t *msg)
{
    struct pong_state *q = es_actor_state(self);
    es_msg_t m = es_msg_make(MSG_PONG);
    int rc;

    switch (msg->type) {
    case ES_MSG_START:
        check_home(self, q->home, &q->fault);
        break;
    case MSG_PING:
        rc = send_retry(q->rt, msg->from, &m, q->give_up_ns, &q->eagain);
        if (rc) {
            fault_set(&q->fault, rc, "es_send(MSG_PONG) to msg->from");
            gate_count(q->done);
        }
        break;
    }
    return 0;
}

static int pingpong_result(const struct ping_state *p,
                           const struct pong_state *q, struct run_out *out)
{
    out->msgs = 2 * p->done_rounds;
    out->elapsed_ns = p->end_ns - p->start_ns;
    out->capped = p->capped;
    out->eagain += p->eagain + q->eagain;
    if (fault_merge(out, &p->fault))
        return out->fault.rc;
    return fault_merge(out, &q->fault);
}

static int run_pingpong(const struct bench_cfg *cfg, struct run_out *out)
{
    struct gate done;
    struct ping_state p = {
        .rounds = cfg->mode->rounds, .lat = out->lat, .done = &done, .home = 0};
    struct pong_state q = {.done = &done, .home = 1};
    es_actor_id_t ping;
    es_runtime_t *rt;
    int rc = samples_reserve(out->lat, cfg->mode->rounds);

    if (rc || (rc = gate_init(&done)))
        return rc;
    if ((rc = rt_open(2, &rt))) {
        fault_set(&out->fault, rc, "es_runtime_new/start");
        goto close_gate;
    }
    p.rt = q.rt = rt;
    rc = rt_spawn(rt, pong_actor, &q, q.home, &p.peer);
    if (!rc)
        rc = rt_spawn(rt, ping_actor, &p, p.home, &ping);
    /* Both states are written before MSG_GO is sent, so both see them. */
    q.give_up_ns = now_ns() + cfg->mode->budget_ns + GRACE_NS;
    if (rc)
        fault_set(&out->fault, rc, "es_spawn");
    else if ((rc = es_measure(rt, ping, &done, &p.deadline_ns, &p.give_up_ns,
                              cfg, out)))
        fault_set(&out->fault, rc, "waiting for the round trips");
    if ((rc = rt_close(rt)))
        fault_set(&out->fault, rc, "es_runtime_stop/wait");
    rc = pingpong_result(&p, &q, out);
close_gate:
    gate_close(&done);
    return rc ? rc : out->fault.rc;
}

int case_es_pingpong(const struct bench_cfg *cfg, struct run_out *out)
{
    return run_pingpong(cfg, out);
}

/* --- es_sparse: a paced trickle from a foreign thread --------------------- */

/* Records send-to-receive latency of each MSG_STAMP. Home thread only. */
struct sparse_recv {
    struct samples *lat; /* reserved for every message of the run */
    uint64_t count, end_ns;
    struct gate *done;
    struct fault fault;
};

static int sparse_receiver(es_actor_t *self, es_msg_t *msg)
{
    struct sparse_recv *r = es_actor_state(self);
    uint64_t now = now_ns();

    switch (msg->type) {
    case MSG_STAMP:
        samples_push(r->lat, now - msg->inl.u64[0]);
        r->count++;
        break;
    case MSG_END:
        r->end_ns = now;
        gate_count(r->done);
        break;
    case ES_MSG_START:
        check_home(self, 0, &r->fault);
        break;
    }
    return 0;
}

/*
 * Sends n stamped messages, one per SPARSE_INTERVAL_NS. It waits by polling
 * the clock (a sleep would overshoot 10 us by far) with sched_yield(), not a
 * pause loop: when the scheduler puts the demux thread on this CPU, a pause
 * loop would keep it off for a whole time slice and the case would measure
 * that instead of the wakeup. After a stall the cadence restarts rather
 * than sending the missed messages in a burst.
 */
static int sparse_send(es_runtime_t *rt, es_actor_id_t to, uint64_t n,
                       uint64_t give_up_ns, uint64_t *eagain)
{
    uint64_t next = now_ns(), now = next;
    es_msg_t m;
    int rc = 0;

    for (uint64_t i = 0; i < n && !rc; i++) {
        while ((now = now_ns()) < next)
            sched_yield();
        m = es_msg_u64(MSG_STAMP, now);
        rc = send_retry(rt, to, &m, give_up_ns, eagain);
        next += SPARSE_INTERVAL_NS;
        if (next <= now)
            next = now + SPARSE_INTERVAL_NS;
    }
    m = es_msg_make(MSG_END);
    return rc ? rc : send_retry(rt, to, &m, give_up_ns, eagain);
}

static int sparse_go(es_runtime_t *rt, es_actor_id_t to, struct gate *done,
                     const struct bench_cfg *cfg, struct run_out *out)
{
    uint64_t start = now_ns();
    uint64_t give_up =
        start + cfg->mode->sparse * SPARSE_INTERVAL_NS + GRACE_NS;
    es_stats_t before;
    int rc = stats_begin(rt, &before);

    if (!rc)
        rc = sparse_send(rt, to, cfg->mode->sparse, give_up, &out->eagain);
    if (!rc && !gate_await(done, 1, give_up + GRACE_NS))
        rc = -ETIMEDOUT;
    if (!rc)
        rc = stats_end(rt, &before, out);
    out->elapsed_ns = now_ns() - start;
    return rc;
}

static int run_sparse(const struct bench_cfg *cfg, struct run_out *out)
{
    struct gate done;
    struct sparse_recv r = {.lat = out->lat, .done = &done};
    es_actor_id_t to;
    es_runtime_t *rt;
    int rc = samples_reserve(out->lat, cfg->mode->sparse);

    if (rc || (rc = gate_init(&done)))
        return rc;
    if ((rc = rt_open(1, &rt))) {
        fault_set(&out->fault, rc, "es_runtime_new/start");
        goto close_gate;
    }
    if ((rc = rt_spawn(rt, sparse_receiver, &r, 0, &to)))
        fault_set(&out->fault, rc, "es_spawn");
    else if ((rc = sparse_go(rt, to, &done, cfg, out)))
        fault_set(&out->fault, rc, "sending from the main thread");
    if ((rc = rt_close(rt)))
        fault_set(&out->fault, rc, "es_runtime_stop/wait");
    out->msgs = r.count;
    if (!fault_merge(out, &r.fault) && r.count != cfg->mode->sparse)
        fault_set(&out->fault, -EPROTO,
                  "receiver counted %" PRIu64 " of %" PRIu64, r.count,
                  cfg->mode->sparse);
close_gate:
    gate_close(&done);
    return out->fault.rc;
}

int case_es_sparse(const struct bench_cfg *cfg, struct run_out *out)
{
    return run_sparse(cfg, out);
}

/* --- es_monitor_down: monitor set + stop + DOWN, across threads ----------- */

/* Targets a watcher monitors and stops per run: spawned before the clock
 * starts, idle until stopped. */
#define MON_TARGETS 20000u

struct mon_watcher {
    es_actor_id_t *targets;
    uint64_t n, downs, start_ns, end_ns;
    int home;
    struct gate *done;
    struct fault fault;
};

static int mon_watcher_cb(es_actor_t *self, es_msg_t *msg)
{
    struct mon_watcher *w = es_actor_state(self);
    es_runtime_t *rt = es_actor_runtime(self);

    if (msg->type == ES_MSG_START) {
        check_home(self, w->home, &w->fault);
    } else if (msg->type == MSG_GO) {
        w->start_ns = now_ns();
        for (uint64_t i = 0; i < w->n; i++) {
            es_ref_t ref;
            int rc = es_monitor(self, w->targets[i], &ref);
            if (!rc)
                rc = es_stop(rt, w->targets[i]);
            if (rc) {
                fault_set(&w->fault, rc, "es_monitor/es_stop");
                gate_count(w->done);
                return 0;
            }
        }
    } else if (msg->type == ES_MSG_DOWN) {
        if (es_msg_reason(msg) != 0)
            fault_set(&w->fault, es_msg_reason(msg), "DOWN reason");
        if (++w->downs == w->n) {
            w->end_ns = now_ns();
            gate_count(w->done);
        }
    }
    return 0;
}

static int idle_cb(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    (void)msg;
    return 0;
}

int case_es_monitor_down(const struct bench_cfg *cfg, struct run_out *out)
{
    struct gate done;
    uint64_t n = cfg->mode->msgs / 100 < MON_TARGETS ? cfg->mode->msgs / 100
                                                     : MON_TARGETS;
    es_actor_id_t *targets = calloc(n, sizeof(*targets));
    struct mon_watcher w = {
        .targets = targets, .n = n, .home = 0, .done = &done};
    es_actor_id_t wid;
    es_runtime_t *rt;
    uint64_t deadline, give_up;
    int rc = targets ? gate_init(&done) : -ENOMEM;

    if (rc) {
        free(targets);
        return rc;
    }
    rc = rt_open(2, &rt);
    if (rc) {
        fault_set(&out->fault, rc, "es_runtime_new/start");
        goto close_gate;
    }
    for (uint64_t i = 0; i < n && !rc; i++)
        rc = rt_spawn(rt, idle_cb, NULL, 1, &targets[i]);
    if (!rc)
        rc = rt_spawn(rt, mon_watcher_cb, &w, 0, &wid);
    if (rc)
        fault_set(&out->fault, rc, "es_spawn");
    else if ((rc = es_measure(rt, wid, &done, &deadline, &give_up, cfg, out)))
        fault_set(&out->fault, rc, "waiting for the DOWNs");
    if ((rc = rt_close(rt)))
        fault_set(&out->fault, rc, "es_runtime_stop/wait");
    out->msgs = w.downs;
    out->elapsed_ns = w.end_ns - w.start_ns;
    (void)fault_merge(out, &w.fault);
close_gate:
    gate_close(&done);
    free(targets);
    return rc ? rc : out->fault.rc;
}

/* --- es_link_chain: one failure stops 1,000 linked actors ----------------- */

#define CHAIN_LEN 1000u

struct chain {
    es_actor_id_t ids[CHAIN_LEN];
    atomic_uint linked, stopped;
    uint64_t start_ns;
    _Atomic uint64_t end_ns;
    struct gate *done;
};

struct chain_link {
    struct chain *chain;
    unsigned index;
};

enum { MSG_CHAIN_LINK = ES_MSG_USER + 1000, MSG_CHAIN_FAIL };

static int chain_cb(es_actor_t *self, es_msg_t *msg)
{
    struct chain_link *l = es_actor_state(self);
    struct chain *c = l->chain;

    if (msg->type == MSG_CHAIN_LINK) {
        int rc = es_link(self, c->ids[l->index + 1]);
        if (rc)
            return rc;
        atomic_fetch_add(&c->linked, 1);
    } else if (msg->type == MSG_CHAIN_FAIL) {
        c->start_ns = now_ns();
        return -EIO; /* the failure the links carry down the chain */
    } else if (msg->type == ES_MSG_STOP) {
        if (atomic_fetch_add(&c->stopped, 1) + 1 == CHAIN_LEN) {
            atomic_store(&c->end_ns, now_ns());
            gate_count(c->done);
        }
    }
    return 0;
}

/* The chain alternates between `threads` loops (1 or 2). */
static int run_chain(struct run_out *out, unsigned threads)
{
    static struct chain c;
    static struct chain_link links[CHAIN_LEN];
    struct gate done;
    es_runtime_t *rt;
    int rc = gate_init(&done);

    if (rc)
        return rc;
    memset(&c, 0, sizeof(c));
    c.done = &done;
    rc = rt_open(threads, &rt);
    if (rc) {
        fault_set(&out->fault, rc, "es_runtime_new/start");
        goto close_gate;
    }
    for (unsigned i = 0; i < CHAIN_LEN && !rc; i++) {
        links[i] = (struct chain_link){.chain = &c, .index = i};
        rc = rt_spawn(rt, chain_cb, &links[i], (int)(i % threads), &c.ids[i]);
    }
    es_msg_t link = es_msg_make(MSG_CHAIN_LINK);
    for (unsigned i = 0; i + 1 < CHAIN_LEN && !rc; i++)
        rc = es_send(rt, c.ids[i], &link);
    uint64_t give_up = now_ns() + 10 * NS_PER_SEC;
    while (!rc && atomic_load(&c.linked) < CHAIN_LEN - 1 && now_ns() < give_up)
        sched_yield();
    if (!rc && atomic_load(&c.linked) < CHAIN_LEN - 1)
        rc = -ETIMEDOUT;
    es_msg_t fail = es_msg_make(MSG_CHAIN_FAIL);
    if (!rc)
        rc = es_send(rt, c.ids[0], &fail);
    if (!rc && !gate_await(&done, 1, now_ns() + 10 * NS_PER_SEC))
        rc = -ETIMEDOUT;
    if (rc)
        fault_set(&out->fault, rc, "the chain");
    int rc_close = rt_close(rt);
    if (rc_close)
        fault_set(&out->fault, rc_close, "es_runtime_stop/wait");
    out->msgs = atomic_load(&c.stopped);
    out->elapsed_ns = atomic_load(&c.end_ns) - c.start_ns;
close_gate:
    gate_close(&done);
    return rc ? rc : out->fault.rc;
}

int case_es_link_chain(const struct bench_cfg *cfg, struct run_out *out)
{
    (void)cfg;
    return run_chain(out, 2);
}

int case_es_link_chain_same_thread(const struct bench_cfg *cfg,
                                   struct run_out *out)
{
    (void)cfg;
    return run_chain(out, 1);
}
