/* SPDX-License-Identifier: MIT */
/*
 * Requests: es_request(), es_reply(), reply tokens and es_call(). A request
 * is a user send that yields exactly one outcome for its requester: the
 * reply, or a failure (-ETIMEDOUT, -ESRCH). See docs/design.md, "Requests".
 *
 * In transit a request is an ordinary message of the user's type with
 * ES__MSG_REQUEST_BIT set in `type` and its id in inl.u64[2]. The target's
 * dispatch clears the bit and records the request as the thread's current
 * one (cur), which is how es_reply() and es_reply_token() recognise it.
 *
 * Who decides the outcome:
 * - an actor's request: its pending entry, on the requester's home loop
 *   (struct pend, in that loop's table). Whatever settles it first (a reply
 *   or failure reaching the requester, or the deadline on the wheel) takes
 *   the entry out; whatever comes later finds no entry and is dropped (a
 *   reply is counted as late). Actors with pending requests do not migrate,
 *   so the entry is always on the loop that receives the outcome.
 * - an es_call(): a call slot, settled by one CAS (see "calls" below).
 *
 * How a failure is noticed at once (the request watches its target):
 * - target gone at send time, or gone before the request is handled (still
 *   in a ring, in its queue, parked): the request is dead-lettered, and the
 *   dead-letter path fails it with -ESRCH (es__request_undeliverable());
 * - handled but not answered during the behaviour (a reply token kept, or
 *   ignored): the target holds a watch on itself for the request (link.c,
 *   request watches); when it stops, es__requests_stop() fails each with
 *   -ESRCH; a reply through the token or the requester's deadline removes
 *   it. A behaviour that stops while handling the request fails it at once.
 * So the common path (answered in the behaviour) takes no lock and
 * allocates nothing beyond the two messages.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

#define REF_REQUEST (UINT64_C(1) << 62) /* an actor's request id */
#define REF_CALL (UINT64_C(1) << 63)    /* an es_call() slot */
/* An actor's request id: REF_REQUEST | generation << 32 | index of its
 * pending entry << LOOP_BITS | loop. The index finds the entry without a
 * lookup; the generation (the loop's request count, 30 bits) tells a
 * reused entry from the one a late reply was for. */
#define LOOP_BITS 10u
#define INDEX_BITS 22u
#define GEN_SHIFT 32u
#define GEN_MASK ((UINT64_C(1) << 30) - 1)
#define PEND_CHUNK 64u
#define CALL_CHUNK 64u
#define CALL_CHUNKS 1024u /* 65536 es_call()s waiting at once */

/* --- tables -------------------------------------------------------------- */

/* A pending request of an actor; lives in chunks that never move (the
 * wheel links `dl`), reused through the loop's free list. */
struct pend {
    es_ref_t id;
    uint32_t index;    /* in its loop's chunks: chunk * PEND_CHUNK + i */
    es_actor_t *owner; /* the requester */
    es_actor_id_t target;
    struct es__deadline dl; /* owned by the loop actor */
    struct pend *next_free;
};

/* One loop's pending requests: its thread only. */
struct reqloop {
    /* requester id -> its pending requests past the 255 that
     * es_actor.req_pending counts */
    struct es__map owners;
    struct pend **chunks;
    uint32_t nchunks;
    struct pend *free;
    uint64_t seq;
};

/* es_call() slot. state = generation << 2 | phase; see "calls". */
enum { PH_PENDING = 0, PH_BUSY = 1, PH_DONE = 2 };

struct call {
    atomic_uint state;
    int rc;
    es_msg_t reply;
    uint32_t next_free;
};

struct es__requests {
    struct reqloop *loops; /* [nloops] */
    pthread_mutex_t lock;  /* call slot free list and growth */
    uint32_t ncalls, call_free;
    _Atomic(struct call *) calls[CALL_CHUNKS];
    _Atomic uint64_t late, timed_out;
};

static struct es__requests *reqs_get(es_runtime_t *rt)
{
    struct es__requests *r =
        atomic_load_explicit(&rt->requests, memory_order_acquire);
    if (r)
        return r;
    r = es__calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loops = es__calloc(rt->nloops, sizeof(*r->loops));
    if (!r->loops) {
        es__free(r);
        return NULL;
    }
    r->call_free = UINT32_MAX;
    pthread_mutex_init(&r->lock, NULL);
    struct es__requests *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&rt->requests, &none, r,
                                                 memory_order_acq_rel,
                                                 memory_order_acquire)) {
        pthread_mutex_destroy(&r->lock);
        es__free(r->loops);
        es__free(r);
        return none;
    }
    return r;
}

void es__requests_free(es_runtime_t *rt)
{
    struct es__requests *r =
        atomic_load_explicit(&rt->requests, memory_order_relaxed);
    if (!r)
        return;
    for (unsigned i = 0; i < rt->nloops; i++) {
        struct reqloop *l = &r->loops[i];
        for (uint32_t c = 0; c < l->nchunks; c++)
            es__free(l->chunks[c]);
        es__free(l->chunks);
        es__map_free(&l->owners);
    }
    for (unsigned i = 0; i < CALL_CHUNKS; i++)
        es__free(atomic_load_explicit(&r->calls[i], memory_order_relaxed));
    pthread_mutex_destroy(&r->lock);
    es__free(r->loops);
    es__free(r);
    atomic_store_explicit(&rt->requests, NULL, memory_order_relaxed);
}

void es__requests_stats(const es_runtime_t *rt, es_stats_t *out)
{
    struct es__requests *r = atomic_load_explicit(
        &((es_runtime_t *)rt)->requests, memory_order_acquire);
    if (!r)
        return;
    out->late_replies = atomic_load_explicit(&r->late, memory_order_relaxed);
    out->requests_timed_out =
        atomic_load_explicit(&r->timed_out, memory_order_relaxed);
}

static void count_late(es_runtime_t *rt, es_msg_t *reply)
{
    struct es__requests *r =
        atomic_load_explicit(&rt->requests, memory_order_acquire);
    atomic_fetch_add_explicit(&r->late, 1, memory_order_relaxed);
    if (reply)
        es_msg_release(reply);
}

static struct pend *pend_alloc(struct reqloop *l)
{
    if (!l->free) {
        if (l->nchunks >= (1u << INDEX_BITS) / PEND_CHUNK)
            return NULL; /* 4 M requests pending on one loop */
        struct pend **v =
            es__realloc(l->chunks, (l->nchunks + 1) * sizeof(*l->chunks));
        if (!v)
            return NULL;
        l->chunks = v;
        struct pend *c = es__calloc(PEND_CHUNK, sizeof(*c));
        if (!c)
            return NULL;
        for (uint32_t i = PEND_CHUNK; i-- > 0;) {
            c[i].index = l->nchunks * PEND_CHUNK + i;
            c[i].next_free = l->free;
            l->free = &c[i];
        }
        l->chunks[l->nchunks++] = c;
    }
    struct pend *p = l->free;
    l->free = p->next_free;
    return p;
}

/* The pending entry request `id` was made with, if it still waits. */
static struct pend *pend_find(const struct reqloop *l, es_ref_t id)
{
    uint32_t idx = (uint32_t)(id >> LOOP_BITS) & ((1u << INDEX_BITS) - 1);
    if (idx / PEND_CHUNK >= l->nchunks)
        return NULL;
    struct pend *p = &l->chunks[idx / PEND_CHUNK][idx % PEND_CHUNK];
    return p->owner && p->id == id ? p : NULL;
}

/* Takes p out of its loop's tables (the requester's home thread). */
static void pend_remove(struct reqloop *l, struct pend *p)
{
    es__deadline_clear(&p->dl);
    es_actor_t *a = p->owner;
    uint64_t *n = a->req_pending == UINT8_MAX && l->owners.n
                      ? es__map_find(&l->owners, a->id)
                      : NULL;
    if (n) {
        if (--*n == 0)
            es__map_del(&l->owners, a->id);
    } else {
        a->req_pending--;
    }
    p->owner = NULL;
    p->next_free = l->free;
    l->free = p;
}

static struct reqloop *reqloop_of(const es_actor_t *a)
{
    struct es__requests *r =
        atomic_load_explicit(&a->rt->requests, memory_order_acquire);
    return r ? &r->loops[a->loop->index] : NULL;
}

bool es__requests_pending(const es_actor_t *a)
{
    return a->req_pending != 0;
}

/* --- messages ------------------------------------------------------------ */

/* An outcome that still has to be decided by the requester's entry. */
static int send_fail(es_runtime_t *rt, es_actor_id_t requester,
                     es_actor_id_t target, es_ref_t ref, int reason)
{
    es_msg_t f = es_msg_make(ES__MSG_REQ_FAIL);
    f.inl.i64[1] = reason;
    f.inl.u64[2] = ref;
    f.len = ES_MSG_INLINE;
    return es__send_from(rt, requester, &f, target);
}

/* --- calls -----------------------------------------------------------------
 *
 * A call slot is found from its ref (index + generation) by any thread, in
 * chunks that never move. Its state word holds the generation and a phase:
 * the caller makes it PENDING with a new generation; whoever first CASes
 * (generation, PENDING) -> (generation, BUSY) settles it: a replier or a
 * failure writes rc and the reply and then stores DONE (release; the
 * caller's acquire load of DONE sees rc and reply), a caller that timed out
 * keeps it. Every later CAS fails (wrong phase, or a newer generation once
 * the slot is reused), which is what makes a late reply late. The
 * generation has 30 bits: a replier would have to stall across 2^30 reuses
 * of one slot to settle the wrong call.
 */

static struct call *call_at(struct es__requests *r, uint32_t idx)
{
    if (idx >= CALL_CHUNKS * CALL_CHUNK)
        return NULL;
    struct call *c =
        atomic_load_explicit(&r->calls[idx / CALL_CHUNK], memory_order_acquire);
    return c ? &c[idx % CALL_CHUNK] : NULL;
}

static int call_get(struct es__requests *r, es_ref_t *ref)
{
    pthread_mutex_lock(&r->lock);
    uint32_t idx = r->call_free;
    if (idx == UINT32_MAX) {
        if (r->ncalls == CALL_CHUNKS * CALL_CHUNK) {
            pthread_mutex_unlock(&r->lock);
            return -ENOMEM;
        }
        if (r->ncalls % CALL_CHUNK == 0) {
            struct call *c = es__calloc(CALL_CHUNK, sizeof(*c));
            if (!c) {
                pthread_mutex_unlock(&r->lock);
                return -ENOMEM;
            }
            atomic_store_explicit(&r->calls[r->ncalls / CALL_CHUNK], c,
                                  memory_order_release);
        }
        idx = r->ncalls++;
    } else {
        r->call_free = call_at(r, idx)->next_free;
    }
    pthread_mutex_unlock(&r->lock);
    struct call *c = call_at(r, idx);
    unsigned gen =
        (atomic_load_explicit(&c->state, memory_order_relaxed) >> 2) + 1;
    atomic_store_explicit(&c->state, gen << 2 | PH_PENDING,
                          memory_order_relaxed);
    *ref = REF_CALL | (uint64_t)(gen & 0x3fffffffu) << 32 | idx;
    return 0;
}

static void call_put(struct es__requests *r, es_ref_t ref)
{
    uint32_t idx = (uint32_t)ref;
    pthread_mutex_lock(&r->lock);
    call_at(r, idx)->next_free = r->call_free;
    r->call_free = idx;
    pthread_mutex_unlock(&r->lock);
}

/* Settles call `ref` with rc (and *reply when rc is 0). False if it was
 * settled already: the caller then still owns reply. Any thread. */
static bool call_settle(es_runtime_t *rt, es_ref_t ref, int rc,
                        const es_msg_t *reply, es_actor_id_t from)
{
    struct es__requests *r =
        atomic_load_explicit(&rt->requests, memory_order_acquire);
    struct call *c = r ? call_at(r, (uint32_t)ref) : NULL;
    if (!c)
        return false;
    unsigned gen = (unsigned)(ref >> 32) & 0x3fffffffu;
    unsigned want = gen << 2 | PH_PENDING;
    if (!atomic_compare_exchange_strong_explicit(
            &c->state, &want, gen << 2 | PH_BUSY, memory_order_acquire,
            memory_order_relaxed))
        return false;
    c->rc = rc;
    if (reply) {
        c->reply = *reply;
        c->reply.type = ES_MSG_REPLY;
        c->reply.from = from;
        c->reply.inl.u64[2] = ref;
    }
    /* Pairs with the caller's acquire load in es_call(). */
    atomic_store_explicit(&c->state, gen << 2 | PH_DONE, memory_order_release);
    es__futex_wake(&c->state);
    return true;
}

/* --- the runtime's hooks ------------------------------------------------- */

/* The outcome of request `ref` is a failure with `reason`, decided by the
 * requester (an actor) or at once (a call). Any thread. */
static void fail(es_runtime_t *rt, es_ref_t ref, es_actor_id_t requester,
                 es_actor_id_t target, int reason)
{
    if (ref & REF_CALL)
        (void)call_settle(rt, ref, reason, NULL, target);
    else if (requester != ES_ACTOR_NONE)
        (void)send_fail(rt, requester, target, ref, reason);
}

void es__request_undeliverable(es_runtime_t *rt, es_msg_t *m)
{
    m->type &= ~ES__MSG_REQUEST_BIT;
    fail(rt, es_msg_ref(m), m->from, m->to, -ESRCH);
}

static void watch_gone(es_runtime_t *rt, es_ref_t ref, es_actor_id_t requester,
                       es_actor_id_t target)
{
    fail(rt, ref, requester, target, -ESRCH);
}

void es__requests_stop(es_actor_t *a)
{
    /* Requests it kept: their requesters learn at once. */
    es__request_watches_take(a, watch_gone);
    /* Requests it made: nobody is left to receive their outcome. */
    struct reqloop *l = reqloop_of(a);
    if (!l || !a->req_pending)
        return;
    for (uint32_t c = 0; c < l->nchunks; c++) {
        for (uint32_t i = 0; i < PEND_CHUNK; i++) {
            struct pend *p = &l->chunks[c][i];
            if (p->owner != a)
                continue;
            (void)es__request_unwatch(a->rt, p->target, p->id);
            pend_remove(l, p);
        }
    }
}

bool es__request_settle(es_actor_t *a, es_msg_t *m)
{
    struct reqloop *l = reqloop_of(a);
    struct pend *p = l ? pend_find(l, es_msg_ref(m)) : NULL;
    if (!p || p->owner != a) {
        if (m->type == ES__MSG_REQ_REPLY)
            count_late(a->rt, m);
        return false; /* settled before: by a deadline or a failure */
    }
    pend_remove(l, p);
    m->type =
        m->type == ES__MSG_REQ_REPLY ? ES_MSG_REPLY : ES_MSG_REQUEST_FAILED;
    return true;
}

void es__request_expire(struct es__loop *loop, struct es__deadline *d)
{
    struct pend *p = (struct pend *)((char *)d - offsetof(struct pend, dl));
    es_runtime_t *rt = loop->rt;
    struct reqloop *l =
        &atomic_load_explicit(&rt->requests, memory_order_acquire)
             ->loops[loop->index];
    if (!p->owner)
        return;
    es_actor_id_t requester = p->owner->id, target = p->target;
    es_ref_t ref = p->id;
    (void)es__request_unwatch(rt, target, ref);
    pend_remove(l, p);
    struct es__requests *r =
        atomic_load_explicit(&rt->requests, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->timed_out, 1, memory_order_relaxed);
    es_msg_t f = es_msg_make(ES_MSG_REQUEST_FAILED);
    f.inl.i64[1] = -ETIMEDOUT;
    f.inl.u64[2] = ref;
    f.len = ES_MSG_INLINE;
    (void)es__send_from(rt, requester, &f, target);
}

/* The request the calling thread's behaviour is handling. */
static ES__TLS struct cur {
    es_actor_t *self;
    es_ref_t ref;
    es_actor_id_t requester;
    bool answered, kept;
} cur;

void es__request_begin(es_actor_t *a, es_msg_t *m, struct es__cur_req *save)
{
    _Static_assert(sizeof(save->opaque) >= sizeof(struct cur), "cur fits");
    memcpy(save->opaque, &cur, sizeof(cur));
    m->type &= ~ES__MSG_REQUEST_BIT;
    cur = (struct cur){.self = a, .ref = es_msg_ref(m), .requester = m->from};
}

void es__request_end(es_actor_t *a, const struct es__cur_req *save)
{
    if (!cur.answered && !cur.kept) {
        if (a->stop_requested) {
            fail(a->rt, cur.ref, cur.requester, a->id, -ESRCH);
        } else if (es__request_watch(a, cur.ref, cur.requester) != 0) {
            es__log(ES_LOG_WARN,
                    "no memory to watch request %#llx: it can only time out",
                    (unsigned long long)cur.ref);
        }
    }
    memcpy(&cur, save->opaque, sizeof(cur));
}

/* --- public calls -------------------------------------------------------- */

static bool payload_ok(const es_msg_t *msg)
{
    return msg && (msg->ptr || msg->len <= ES_MSG_REQUEST_INLINE) &&
           (msg->ptr || !msg->free_cb);
}

int es_request(es_actor_t *self, es_actor_id_t to, const es_msg_t *msg,
               int timeout_ms, es_ref_t *req_id)
{
    if (!self || !payload_ok(msg) || msg->type < ES_MSG_USER ||
        (msg->type & ES__MSG_REQUEST_BIT))
        return -EINVAL;
    ES_ASSERT(es__loop_owned(self->loop));
    struct es__loop *loop = self->loop;
    if (loop->stopping || !loop->self)
        return -ESHUTDOWN;
    struct es__requests *r = reqs_get(self->rt);
    if (!r)
        return -ENOMEM;
    struct reqloop *l = &r->loops[loop->index];
    struct pend *p = pend_alloc(l);
    if (!p)
        return -ENOMEM;
    es_ref_t id = REF_REQUEST | (++l->seq & GEN_MASK) << GEN_SHIFT |
                  (uint64_t)p->index << LOOP_BITS | loop->index;
    if (self->req_pending == UINT8_MAX) {
        uint64_t *n = es__map_get(&l->owners, self->id);
        if (!n)
            goto nomem;
        ++*n;
    } else {
        self->req_pending++;
    }
    *p =
        (struct pend){.id = id, .index = p->index, .owner = self, .target = to};
    if (timeout_ms >= 0 &&
        es__deadline_set(loop->self, &p->dl, (uint64_t)timeout_ms) != 0) {
        pend_remove(l, p);
        return -ENOMEM;
    }
    es_msg_t m = *msg;
    m.type |= ES__MSG_REQUEST_BIT;
    m.inl.u64[2] = id;
    int rc = es__send(self->rt, to, &m, true);
    if (rc == -ESRCH) {
        /* Gone already: dead-lettered like a request that arrives late,
         * which fails it at once. */
        m.to = to;
        m.from = self->id;
        es__dead_letter(self->rt, loop, &m);
    } else if (rc != 0) {
        pend_remove(l, p);
        return rc;
    }
    if (req_id)
        *req_id = id;
    return 0;
nomem:
    p->next_free = l->free;
    l->free = p;
    return -ENOMEM;
}

/* Sends the answer to request `ref` (see es_reply()). from_self: the
 * replier is the actor whose behaviour runs on this thread, which es__send()
 * names as the sender by itself: es__send_from() would copy the message
 * once more (a 64-byte copy whose loads wait for the stores just made to
 * it, a measurable part of a round trip: docs/perf/savina.md). */
static int answer(es_runtime_t *rt, es_ref_t ref, es_actor_id_t requester,
                  es_actor_id_t replier, const es_msg_t *reply, bool from_self)
{
    if (!payload_ok(reply))
        return -EINVAL;
    if (ref & REF_CALL) {
        if (!call_settle(rt, ref, 0, reply, replier)) {
            es_msg_t late = *reply;
            count_late(rt, &late);
        }
        return 0;
    }
    es_msg_t m = *reply;
    m.type = ES__MSG_REQ_REPLY;
    m.inl.u64[2] = ref;
    if (from_self)
        return es__send(rt, requester, &m, false);
    return es__send_from(rt, requester, &m, replier);
}

static bool is_current(const es_actor_t *self, const es_msg_t *request)
{
    return self && request && cur.self == self && cur.ref &&
           es_msg_ref(request) == cur.ref;
}

int es_reply(es_actor_t *self, const es_msg_t *request, const es_msg_t *reply)
{
    if (!is_current(self, request))
        return -EINVAL;
    ES_ASSERT(es__loop_owned(self->loop));
    int rc = answer(self->rt, cur.ref, cur.requester, self->id, reply, true);
    if (rc == 0) {
        cur.answered = true;
        if (cur.kept)
            (void)es__request_unwatch(self->rt, self->id, cur.ref);
    }
    return rc;
}

int es_reply_token(es_actor_t *self, const es_msg_t *request,
                   es_reply_token_t *tok)
{
    if (!is_current(self, request) || !tok)
        return -EINVAL;
    ES_ASSERT(es__loop_owned(self->loop));
    if (!cur.kept && !cur.answered) {
        int rc = es__request_watch(self, cur.ref, cur.requester);
        if (rc)
            return rc;
        cur.kept = true;
    }
    tok->_private[0] = cur.ref;
    tok->_private[1] = cur.requester;
    tok->_private[2] = self->id;
    return 0;
}

int es_reply_to(es_runtime_t *rt, const es_reply_token_t *tok,
                const es_msg_t *reply)
{
    if (!rt || !tok || !(tok->_private[0] & (REF_REQUEST | REF_CALL)))
        return -EINVAL;
    es_ref_t ref = tok->_private[0];
    es_actor_id_t target = tok->_private[2];
    /* Send first, then take the watch: if the target stops in between,
     * its -ESRCH and this reply race, and the requester takes whichever
     * comes first (the other is dropped). Either way: one outcome. */
    int rc = answer(rt, ref, tok->_private[1], target, reply, false);
    if (rc == 0)
        (void)es__request_unwatch(rt, target, ref);
    return rc;
}

int es_reply_error(es_runtime_t *rt, const es_reply_token_t *tok, int reason)
{
    if (!rt || !tok || reason >= 0 ||
        !(tok->_private[0] & (REF_REQUEST | REF_CALL)))
        return -EINVAL;
    es_ref_t ref = tok->_private[0];
    es_actor_id_t target = tok->_private[2];
    int rc = 0;
    if (ref & REF_CALL) {
        if (!call_settle(rt, ref, reason, NULL, target)) {
            es_msg_t late = es_msg_make(ES_MSG_REQUEST_FAILED);
            count_late(rt, &late);
        }
    } else {
        rc = send_fail(rt, tok->_private[1], target, ref, reason);
    }
    if (rc == 0)
        (void)es__request_unwatch(rt, target, ref);
    return rc;
}

/* Waits for call c (generation gen) to be settled, at most until `end`
 * (es__now_ns(); UINT64_MAX: no limit). True if settled. */
static bool call_wait(struct call *c, unsigned gen, uint64_t end)
{
    for (;;) {
        unsigned s = atomic_load_explicit(&c->state, memory_order_acquire);
        if (s == (gen << 2 | PH_DONE))
            return true;
        uint64_t now = es__now_ns();
        if (now >= end)
            return false;
        es__futex_wait(&c->state, s, end - now);
    }
}

int es_call(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
            es_msg_t *reply, int timeout_ms)
{
    if (!rt || !payload_ok(msg) || !reply || msg->type < ES_MSG_USER ||
        (msg->type & ES__MSG_REQUEST_BIT))
        return -EINVAL;
    struct es__tctx *t = es__tctx_current(rt);
    if (t && t->loop_index >= 0)
        return -EDEADLK; /* the loop would wait for itself */
    struct es__requests *r = reqs_get(rt);
    if (!r)
        return -ENOMEM;
    uint64_t end = timeout_ms < 0
                       ? UINT64_MAX
                       : es__now_ns() + (uint64_t)timeout_ms * 1000000u;
    es_ref_t ref;
    int rc = call_get(r, &ref);
    if (rc)
        return rc;
    struct call *c = call_at(r, (uint32_t)ref);
    unsigned gen = (unsigned)(ref >> 32) & 0x3fffffffu;
    es_msg_t m = *msg;
    m.type |= ES__MSG_REQUEST_BIT;
    m.inl.u64[2] = ref;
    rc = es__send_wait(rt, to, &m, timeout_ms);
    if (rc) {
        call_put(r, ref); /* nobody else knows ref */
        if (rc == -ESRCH || rc == -ETIMEDOUT)
            es_msg_release(&m); /* actor.h: ours on these */
        return rc;
    }
    if (!call_wait(c, gen, end)) {
        unsigned want = gen << 2 | PH_PENDING;
        if (atomic_compare_exchange_strong_explicit(
                &c->state, &want, gen << 2 | PH_BUSY, memory_order_acquire,
                memory_order_relaxed)) {
            atomic_fetch_add_explicit(&r->timed_out, 1, memory_order_relaxed);
            (void)es__request_unwatch(rt, to, ref);
            call_put(r, ref);
            return -ETIMEDOUT;
        }
        (void)call_wait(c, gen, UINT64_MAX); /* a settler is writing */
    }
    rc = c->rc;
    if (rc == 0)
        *reply = c->reply;
    call_put(r, ref);
    return rc;
}
