/* SPDX-License-Identifier: MIT */
/*
 * Private declarations shared by the runtime's source files: the structures
 * behind the opaque public types, the budgets of one loop turn, and the
 * es__ functions one file offers another. Nothing here is installed.
 */
#ifndef EVENTSERVER_INTERNAL_H
#define EVENTSERVER_INTERNAL_H

#include <eventserver/eventserver.h>

#include <ck_epoch.h>
#include <ck_ring.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

/*
 * Budgets of one loop turn. They bound how long one source can keep the
 * loop from the others (fairness) and how stale the epoch can get: a loop
 * leaves its epoch section once per turn.
 */
#define ES__CHAN_BUDGET 256u /* messages taken from one inbound ring */
#define ES__ACTOR_BUDGET 64u /* queued messages one actor handles per visit */
#define ES__RUNQ_BUDGET                                                        \
    4096u                      /* queued messages handled per turn, all actors \
                                */
#define ES__TIMER_BUDGET 1024u /* timers fired per turn */
#define ES__SPAWN_BUDGET 1024u /* actors installed (STARTed) per turn */
#define ES__WAIT_EVENTS 64     /* ready fds taken per backend wait() */

/* Internal message types; never shown to a behaviour or dead-letter hook. */
enum {
    ES__MSG_INTERNAL = 0xF000,
    ES__MSG_STOP_REQ,  /* to any actor: es_stop() */
    ES__MSG_RESOLVED,  /* to a connector: ptr is its addrinfo list */
    ES__MSG_CALL,      /* to a loop actor: ptr is a struct es__call */
    ES__MSG_UNMUTE,    /* to a loop actor: inl.u64[0] drained below its mark */
    ES__MSG_RESUMED,   /* to a module actor (one with ext): it is unmuted */
    ES__MSG_MIGRATE,   /* to a loop actor: ptr is an actor moving in */
    ES__MSG_FLUSHED,   /* to a loop actor: inl.u64[0]'s old loop is done */
    ES__MSG_MARK_REQ,  /* to a loop actor: send a MARK back to loop u64[1] */
    ES__MSG_MARK,      /* to a loop actor: its MARK_REQ u64[0] came back */
    ES__MSG_LINK_EXIT, /* to a linked actor: `from` stopped, reason i64[1] */
    ES__MSG_SUP_SHUTDOWN, /* to a supervisor: es_supervisor_stop() */
    ES__MSG_REQ_REPLY,    /* to a requester: a reply, id u64[2] (request.c) */
    ES__MSG_REQ_FAIL,     /* to a requester: failed, id u64[2], reason i64[1] */
};

/* Set in `type` while a request travels (request.c): dispatch clears it
 * before the behaviour sees the message, es__dead_letter() before the
 * hook. es_send() refuses user types with it set. */
#define ES__MSG_REQUEST_BIT 0x80000000u

/* Work run by a loop actor on its thread: fn(loop, call). The message's
 * free_cb releases the call, delivered or dead-lettered. */
struct es__loop;
struct es__call {
    void (*fn)(struct es__loop *loop, struct es__call *call);
};

static inline bool es__msg_is_internal(uint32_t type)
{
    return type >= ES__MSG_INTERNAL && type < ES_MSG_USER;
}

/*
 * Thread-locals on the send and dispatch paths. The initial-exec model
 * makes each access one instruction instead of a __tls_get_addr() call; it
 * suits a library linked at program start (a dlopen()ed copy still works
 * while glibc's static TLS surplus lasts, as for most system libraries).
 */
#define ES__TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* --- allocation, logging (alloc.c) --------------------------------------- */

void *es__malloc(size_t size);
void *es__calloc(size_t count, size_t size);
void *es__realloc(void *ptr, size_t size);
void es__free(void *ptr);
/* Cache-line aligned allocation through the hooks; free with es__afree. */
void *es__aalloc(size_t size);
void es__afree(void *ptr);
void es__log(es_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Monotonic clock in nanoseconds. */
uint64_t es__now_ns(void);
/* Sleeps ns nanoseconds. */
void es__nap_ns(uint64_t ns);
/* Blocks while *word == expected, at most ns nanoseconds (or until woken). */
void es__futex_wait(atomic_uint *word, unsigned expected, uint64_t ns);
/* Wakes every thread in es__futex_wait() on word. */
void es__futex_wake(atomic_uint *word);

/* --- assertions (common.c) ------------------------------------------------
 *
 * ES_ASSERT checks a contract the public headers state ("Thread: owning
 * loop only", an argument's range) or an invariant of our own. It is active
 * in debug builds (no NDEBUG) and in sanitizer builds, and compiled out in
 * Release, where its argument is not evaluated. A failed assertion is
 * logged through the log hook and aborts the process: the one place the
 * library calls abort(), and only in the builds where a wrong call should
 * stop the program at the call. Define ES_ASSERTS to 0 or 1 to override.
 */
#ifndef ES_ASSERTS
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ES__SANITIZED 1
#endif
#endif
#if !defined(NDEBUG) || defined(__SANITIZE_ADDRESS__) ||                       \
    defined(__SANITIZE_THREAD__) || defined(ES__SANITIZED) || defined(ES_TSAN)
#define ES_ASSERTS 1
#else
#define ES_ASSERTS 0
#endif
#endif

#if ES_ASSERTS
__attribute__((noreturn, cold)) void
es__assert_fail(const char *expr, const char *file, int line, const char *func);
#define ES_ASSERT(cond)                                                        \
    ((cond) ? (void)0 : es__assert_fail(#cond, __FILE__, __LINE__, __func__))
#else
#define ES_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

/* --- ThreadSanitizer annotations ------------------------------------------ */

/*
 * ck_ring and ck_epoch synchronise with inline assembly and volatile
 * accesses, which TSan cannot see. These annotations state the same
 * happens-before edges in terms TSan understands; they compile to nothing
 * in other builds.
 */
#ifdef ES_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define ES__TSAN_ACQUIRE(a) __tsan_acquire((void *)(a))
#define ES__TSAN_RELEASE(a) __tsan_release((void *)(a))
#else
#define ES__TSAN_ACQUIRE(a) ((void)0)
#define ES__TSAN_RELEASE(a) ((void)0)
#endif

/* Counters written by one thread and read by any: relaxed, no RMW. */
#define ES__STAT_ADD(field, n)                                                 \
    atomic_store_explicit(                                                     \
        &(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),  \
        memory_order_relaxed)

struct es__loop;

/* --- channels and sender contexts (chan.c) -------------------------------- */

/*
 * A channel is a single-producer single-consumer ck_ring from one sending
 * thread to one demux thread, carrying es_msg_t by value. See chan.c.
 */
struct es__chan {
    ck_ring_t ring;
    es_msg_t *slots;
    struct es__chan *next; /* loop's inbound list; immutable once published */
    struct es__tctx *producer;
};

/*
 * What a thread needs to send into one runtime: its channels (one per demux
 * thread, made on first use), its epoch record and its counters. Demux
 * threads own one each; other threads take one on their first call and give
 * it back when they exit, for the next new thread to reuse.
 */
struct es__tctx {
    /* Set at creation, before the context is used; read-only after. */
    es_runtime_t *rt;
    ck_epoch_record_t *rec;
    int loop_index; /* -1 for a foreign thread */

    /* The owning thread only (the one thread sending with it; a foreign
     * context changes hands through `in_use`, see chan.c). */
    struct es__chan **chan;      /* [threads]: slots set by the owner */
    unsigned char *wake_pending; /* [threads]: demux senders batch wakeups */
    unsigned wake_count;
    /* Foreign threads: index + 1 of the loop of the actor last sent to, 0
     * before the first send (ES_PLACE_CURRENT; written by send_in_section). */
    unsigned last_loop;
    /* Demux senders only: messages waiting for room in a full ring, per
     * target loop (made on first use), moved on by es__tctx_flush_wakes().
     * While a target's queue is not empty every send to it queues too, so
     * the stream to each loop stays FIFO. See chan.c. */
    struct es__msgq *overflow; /* [threads] */
    uint32_t overflow_count;   /* messages in all of them */
    bool reserved_overflow;    /* the last reservation is in overflow */
    uint64_t overflow_since;   /* when the loop last saw them move (ns) */

    /* Any thread: 1 while a foreign thread owns this context (release
     * store 0 by the old owner, acquire CAS 0 -> 1 by the next). */
    atomic_int in_use;
    /* Under rt->tctx_lock (written once when the context is listed). */
    struct es__tctx *next; /* runtime's list of foreign contexts */

    /* Written by the owner, read by es_runtime_stats() from any thread. */
    _Atomic uint64_t sent, mailbox_full, wakeups_written, wakeups_saved,
        overflowed;
};

struct es__tctx *es__tctx_get(es_runtime_t *rt);
/* The calling thread's context for rt, or NULL (chan.c: the slow path). */
struct es__tctx *es__tctx_lookup(const es_runtime_t *rt);
extern ES__TLS struct es__tls_ctx {
    uint64_t serial;
    struct es__tctx *ctx;
} es__tls_ctx;

int es__tctx_init(es_runtime_t *rt, struct es__tctx *t, int loop_index);
void es__tctx_destroy(struct es__tctx *t);
/* Records that the calling thread sends into rt with t. */
int es__thread_bind(es_runtime_t *rt, struct es__tctx *t);
/* Live runtimes, for threads that exit (see chan.c). */
void es__registry_add(es_runtime_t *rt);
void es__registry_remove(es_runtime_t *rt);
/* Enqueues m for loop `index`. Returns 0, -EAGAIN (ring full), -ENOMEM. */
int es__chan_push(struct es__tctx *t, unsigned index, const es_msg_t *m);
/* Reserves the next slot of t's ring to loop `index`: NULL if it is full
 * (*err = -EAGAIN) or cannot be made (*err = -ENOMEM). Nothing is sent until
 * es__chan_commit(); an uncommitted reservation is simply reused. */
es_msg_t *es__chan_reserve(struct es__tctx *t, unsigned index, int *err);
void es__chan_commit(struct es__tctx *t, unsigned index);
/* Moves what it can of a demux sender's overflow into its rings, then
 * writes its pending wakeups (one fence for all of them). */
void es__tctx_flush_wakes(struct es__tctx *t);
/* After the loops exited: routes what is left in t's overflow queues. */
unsigned es__tctx_drain_overflow(struct es__tctx *t);
/* Takes one message from c (its consumer only). */
bool es__chan_pop(struct es__chan *c, es_msg_t *out);
/* True if c holds a message (the loop's check before it sleeps). */
bool es__chan_nonempty(const struct es__chan *c);
/* Wakes `loop` if it sleeps, whatever the sender. */
void es__loop_wake(struct es__loop *loop, struct es__tctx *t);

/* --- actors (actor.c, table.c) -------------------------------------------- */

/* Largest mailbox capacity: keeps every difference of the mailbox counters
 * within +-2^31, where mailbox_reserve() reads them as signed. */
#define ES__MAILBOX_MAX (UINT32_MAX / 4)

/* A growable FIFO of messages, owned by one thread. */
struct es__msgq {
    es_msg_t *buf;
    uint32_t head, count, cap;
};

/* Doubles q's storage. Returns 0, -ENOMEM, -EOVERFLOW. */
int es__msgq_grow(struct es__msgq *q);
void es__msgq_reset(struct es__msgq *q);

static inline int es__msgq_push(struct es__msgq *q, const es_msg_t *m,
                                bool front)
{
    if (q->count == q->cap) {
        int rc = es__msgq_grow(q);
        if (rc)
            return rc;
    }
    uint32_t mask = q->cap - 1;
    if (front) {
        q->head = (q->head + mask) & mask;
        q->buf[q->head] = *m;
    } else {
        q->buf[(q->head + q->count) & mask] = *m;
    }
    q->count++;
    return 0;
}

static inline bool es__msgq_pop(struct es__msgq *q, es_msg_t *out)
{
    if (!q->count)
        return false;
    *out = q->buf[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    return true;
}

struct es__timer;
struct es__loop;

/*
 * An actor. Fields are grouped by who touches them on every message, in
 * three 64-byte blocks, so that the senders' atomic increment of `sent` does
 * not take away the line the home thread reads on every message, and the
 * home thread's writes do not take away the line senders read:
 * - bytes 0-63: what senders write (`sent`, `done_seen`), then fields
 *   nobody touches per message (teardown, the actor list, timers);
 * - bytes 64-127: set before publication or written rarely (install,
 *   START, stop, muting, placement), read per message by both sides;
 * - bytes 128-215: what the home thread writes per message, with the
 *   coldest fields last.
 * There is no padding: an idle actor's size counts (perf/conn_memory,
 * perf/savina/idle_actors), so the actor keeps malloc's 16-byte alignment
 * and is not 64-byte aligned (that would cost up to 48 bytes each). The
 * line holding `sent` then starts 0, 16, 32 or 48 bytes before the actor,
 * so it never reaches byte 64, and what it takes from the previous block
 * (often another actor's last bytes) is malloc's header and that actor's
 * coldest fields.
 */
struct es_actor {
    /* Bytes 0-63. Senders write these two: */
    atomic_uint sent;      /* reservations against the mailbox capacity */
    atomic_uint done_seen; /* a sender's last look at `done` */
    /* Home thread, rarely: */
    es_state_free_cb state_free;
    es_state_free_cb ext_free; /* frees ext after state_free */
    ck_epoch_entry_t epoch_entry;
    es_actor_t *prev, *next;  /* loop's actor list */
    struct es__timer *timers; /* timers this actor owns */

    /* Bytes 64-127. Set before the actor is published; read by any thread
     * after. */
    es_actor_id_t id;
    es_runtime_t *rt;
    /* Home loop. A migration (actor.c) changes it, on the old home thread,
     * so other threads read it with es__actor_home(). */
    struct es__loop *loop;
    es_behaviour_cb behaviour;
    void *state;
    void *ext; /* actors/ modules: connection state */
    uint32_t capacity;
    /* Home thread only, written rarely: */
    uint32_t mute_count; /* entries naming it in its loop's mute table */
    bool is_loop;        /* the loop actor of `loop` */
    /* Migration state, read by senders: ES__TRANSIT_* (actor.c). */
    _Atomic uint8_t transit;
    bool installed, started, stop_requested, stopped;
    uint16_t move_to; /* loop index + 1 to migrate to, 0 for none */

    /* Bytes 128-215. Home thread, per message. */
    uint32_t done_local;
    /* Home thread writes, senders read (only when `done_seen` says the
     * mailbox may be full): messages fully handled. */
    atomic_uint done;
    /* Placement sampling (actor.c): a majority vote over the senders of
     * the last window of messages. */
    uint16_t hot_votes, win_n;
    bool in_runq;
    /* It sent to its hot sender: a conversation, which load shedding must
     * not split. It was shed away from its hot sender: co-location leaves
     * it there unless they start to talk. Both reset when `hot` changes. */
    bool talks_back, shed_away;
    uint8_t hot_age; /* windows `hot` has stayed the same (saturating) */
    struct es__msgq q;
    /* Loop's run queue. Before installation run_next links the actor on
     * its loop's spawn stack instead (written by the spawner before the
     * push, read by the loop after taking the stack; see actor.c). */
    es_actor_t *run_prev, *run_next;
    es_actor_id_t hot_cand;
    /* Senders set bits (rarely: when they are muted on this actor), the
     * home thread reads it after each message and clears it: which loops
     * hold senders muted on it (bit index % 63), and ES__MUTERS_FOREIGN. */
    _Atomic uint64_t muters;
    int io_head;           /* first watched fd + 1, 0 if none */
    uint16_t transit_from; /* the loop it is migrating from */
    /* ES__X_* (link.c, names.c): monitors or links name it; it has
     * stopped; it has been given a name. Any thread, atomic ORs, rarely. */
    _Atomic uint8_t xflags;
    /* Requests it made that wait for an outcome (request.c; home thread):
     * up to 255 here, the rest in its loop's overflow map. */
    uint8_t req_pending;
    /* The sender that dominated the last window, or 0; home thread
     * writes, other loops read (relaxed: a hint). */
    _Atomic es_actor_id_t hot;
};

/* Bits of es_actor.xflags. */
enum { ES__X_USED = 1, ES__X_DEAD = 2, ES__X_NAMED = 4 };

_Static_assert(offsetof(struct es_actor, id) == 64 &&
                   offsetof(struct es_actor, done_local) == 128,
               "es_actor: the 64-byte blocks moved");
_Static_assert(sizeof(struct es_actor) == 216,
               "es_actor: mind the idle-actor memory");

/* Values of es_actor.transit. */
enum {
    ES__TRANSIT_NONE = 0,
    ES__TRANSIT_MOVING,  /* handed to the new loop, not yet there */
    ES__TRANSIT_ARRIVED, /* on the new loop, old one not yet flushed */
};

/* The home loop of a, from any thread. */
static inline struct es__loop *es__actor_home(const es_actor_t *a)
{
    return __atomic_load_n(&a->loop, __ATOMIC_ACQUIRE);
}

/* The bit of `muters` for foreign threads blocked in es_send_wait(). */
#define ES__MUTERS_FOREIGN (UINT64_C(1) << 63)

/* A muted sender and the receiver it waits for (see actor.c, muting). */
struct es__mute {
    es_actor_id_t recv, sender;
};

/* Actor table (table.c): handle -> actor, safe against stale handles. */
#define ES__TABLE_CHUNK_SHIFT 12
#define ES__TABLE_CHUNK_SLOTS (1u << ES__TABLE_CHUNK_SHIFT)
#define ES__TABLE_MAX_CHUNKS 4096u /* 16 M actors at once */

struct es__slot {
    _Atomic(es_actor_t *) actor;
    uint32_t gen;       /* generation of the next (or current) occupant */
    uint32_t next_free; /* free list link, under the lock */
};

struct es__table {
    pthread_mutex_t lock;
    _Atomic(struct es__slot *) chunks[ES__TABLE_MAX_CHUNKS];
    uint32_t free_head; /* index of the first free slot, or UINT32_MAX */
    uint32_t used;      /* slots ever handed out (high-water mark) */
};
int es__table_new(struct es__table **out);
void es__table_free(struct es__table *t);
/* Publishes a; fills a->id. Returns 0 or -ENOMEM. */
int es__table_add(struct es__table *t, es_actor_t *a);
/* Unpublishes a: lookups of its handle fail from now on. */
void es__table_remove(struct es__table *t, es_actor_t *a);
/* Makes a's slot reusable; only after an epoch grace period. */
void es__table_release(struct es__table *t, es_actor_id_t id);
/* The actor in table slot idx, or NULL; for callers that know it is live. */
static inline es_actor_t *es__table_slot(struct es__table *t, uint32_t idx)
{
    struct es__slot *chunk = atomic_load_explicit(
        &t->chunks[idx >> ES__TABLE_CHUNK_SHIFT], memory_order_acquire);
    return atomic_load_explicit(&chunk[idx & (ES__TABLE_CHUNK_SLOTS - 1)].actor,
                                memory_order_acquire);
}

/* The live actor with this handle, or NULL. Caller is in an epoch section.
 * (See table.c for why the loads' orders suffice.) */
static inline es_actor_t *es__table_lookup(struct es__table *t,
                                           es_actor_id_t id)
{
    uint32_t idx = (uint32_t)id;
    if (id == ES_ACTOR_NONE ||
        (idx >> ES__TABLE_CHUNK_SHIFT) >= ES__TABLE_MAX_CHUNKS)
        return NULL;
    struct es__slot *chunk = atomic_load_explicit(
        &t->chunks[idx >> ES__TABLE_CHUNK_SHIFT], memory_order_acquire);
    if (!chunk)
        return NULL;
    es_actor_t *a = atomic_load_explicit(
        &chunk[idx & (ES__TABLE_CHUNK_SLOTS - 1)].actor, memory_order_acquire);
    return a && a->id == id ? a : NULL;
}

es_actor_t *es__actor_current(void);
/* es_spawn() with an extension for actors/ modules (freed by ext_free). */
int es__spawn(es_runtime_t *rt, const es_spawn_opts_t *opts, void *ext,
              es_state_free_cb ext_free, es_actor_id_t *out);
/* Messages counted against a's mailbox and not yet handled (home thread). */
uint32_t es__actor_backlog(const es_actor_t *a);
/* Runs fn(arg) when rt is freed, after its threads are gone. */
int es__runtime_on_free(es_runtime_t *rt, void (*fn)(void *), void *arg);
/* Sends with or without the mailbox limit (internal and system messages). */
int es__send(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
             bool capped);
/* es__send() without the limit, naming `from` as the sender. */
int es__send_from(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
                  es_actor_id_t from);

/* Monitors and links (link.c). es__links_stop(): a stops with `reason`
 * (home thread, once): DOWN to its watchers, its own monitors removed, its
 * links signalled. es__down_take(): a DOWN with `ref` reached a; true if
 * a still holds that monitor (now removed), false to drop it.
 * es__link_exit_take(): a link signal from `from` reached a; true if the
 * link was still there (now removed), *trap: a traps exits. */
void es__links_stop(es_actor_t *a, int reason);
bool es__down_take(es_actor_t *a, es_ref_t ref);
bool es__link_exit_take(es_actor_t *a, es_actor_id_t from, bool *trap);
void es__links_free(es_runtime_t *rt);
/* Request watches (link.c, for request.c): target `a` keeps request `ref`
 * of `requester` (ES_ACTOR_NONE for es_call()). watch: a's home thread;
 * unwatch: any thread, true if it was there; take: a stops (its home
 * thread, before es__links_stop()), fn is called for each. */
int es__request_watch(es_actor_t *a, es_ref_t ref, es_actor_id_t requester);
bool es__request_unwatch(es_runtime_t *rt, es_actor_id_t target, es_ref_t ref);
void es__request_watches_take(es_actor_t *a,
                              void (*fn)(es_runtime_t *rt, es_ref_t ref,
                                         es_actor_id_t requester,
                                         es_actor_id_t target));
/* Fills the monitor and link counters of es_stats_t (index -1). */
void es__links_stats(const es_runtime_t *rt, es_stats_t *out);
/* Names (names.c). es__names_stop(): a stops (home thread, once, before
 * es__links_stop()): sets ES__X_DEAD and releases a's names, so no DOWN
 * for a is sent while a name still points at it. */
void es__names_stop(es_actor_t *a);
void es__names_free(es_runtime_t *rt);
/* Copies one of id's names into buf (NUL-terminated); false if it has
 * none (or size is too small for it). */
bool es__names_of(es_runtime_t *rt, es_actor_id_t id, char *buf, size_t size);
/* Fills es_stats_t.names (index -1). */
void es__names_stats(const es_runtime_t *rt, es_stats_t *out);
/* Requests (request.c). es__request_begin/_end: around the behaviour call
 * of a request (type has ES__MSG_REQUEST_BIT), which begin clears; *save
 * keeps the thread's previous current request. es__request_settle(): an
 * ES__MSG_REQ_REPLY / _FAIL reached a; true to deliver it (its type is
 * now ES_MSG_REPLY / ES_MSG_REQUEST_FAILED), false if it was dropped.
 * es__request_undeliverable(): a request is dead-lettered (bit cleared,
 * the requester told -ESRCH). es__requests_stop(): a stops (finalize).
 * es__requests_pending(): a has requests waiting for an outcome (it must
 * not migrate). es__request_expire(): the deadline d of the loop actor's
 * wheel fired. */
struct es__cur_req {
    uint64_t opaque[4];
};
void es__request_begin(es_actor_t *a, es_msg_t *m, struct es__cur_req *save);
void es__request_end(es_actor_t *a, const struct es__cur_req *save);
bool es__request_settle(es_actor_t *a, es_msg_t *m);
void es__request_undeliverable(es_runtime_t *rt, es_msg_t *m);
void es__requests_stop(es_actor_t *a);
bool es__requests_pending(const es_actor_t *a);
struct es__deadline;
void es__request_expire(struct es__loop *loop, struct es__deadline *d);
void es__requests_free(es_runtime_t *rt);
void es__requests_stats(const es_runtime_t *rt, es_stats_t *out);
/* es_send_wait() without the check of the message type. */
int es__send_wait(es_runtime_t *rt, es_actor_id_t to, const es_msg_t *msg,
                  int timeout_ms);
/* Routes a message taken from an inbound ring on its target's loop; src is
 * the loop index of the ring's producer, -1 for a foreign thread. */
void es__actor_route(struct es__loop *loop, es_msg_t *m, int src);
/* Migration bookkeeping of a loop turn (actor.c). */
void es__migrations_run(struct es__loop *loop);
/* After the loops exited: dead-letters what loop holds for actors that
 * were moving. */
unsigned es__loop_drain_parked(struct es__loop *loop);
void es__migrations_free(struct es__loop *loop);
/* Delivers m to a now (home thread, top level, a installed and live); a
 * muted actor gets it queued instead (ES_MSG_IO excepted). */
void es__actor_dispatch(es_actor_t *a, es_msg_t *m);
/* Drops the expiries of timer_id that wait in a's queue (a was muted when
 * they fired): es_timer_stop() promises none is delivered after it. */
void es__actor_drop_timer(es_actor_t *a, uint64_t timer_id);
/* Senders of `loop` muted on receiver rid may run again (home thread). */
void es__unmute(struct es__loop *loop, es_actor_id_t rid);
/* Unmutes entries whose receiver has room or is gone (the safety net for
 * a notification that crossed the mute; see actor.c). */
void es__mutes_poll(struct es__loop *loop);
/* True while a is muted (home thread). */
static inline bool es__actor_muted(const es_actor_t *a)
{
    return a->mute_count != 0;
}
/* Runs the run queue; returns the number of messages handled. */
unsigned es__runq_run(struct es__loop *loop);
void es__actor_install(struct es__loop *loop, es_actor_t *a);
/* Installs, in spawn order, up to `budget` actors spawned for this loop by
 * other threads (loop thread, or the settling thread once the loop is gone).
 * Returns how many it installed. */
unsigned es__spawns_install(struct es__loop *loop, unsigned budget);
/* True if actors wait to be installed on loop (the check before sleeping,
 * after the loop's seq_cst fence). */
bool es__spawns_pending(struct es__loop *loop);
void es__actor_finalize(es_actor_t *a, int reason);
/* Disposes of a message whose target is gone (internal ones included). */
void es__dead_letter(es_runtime_t *rt, struct es__loop *loop, es_msg_t *m);
int es__actor_new_loop_actor(struct es__loop *loop);

/* --- fd watches (io.c) -----------------------------------------------------
 */

/* One watched fd of a loop; the table is indexed by fd. 16 bytes, as the
 * table is sized by the highest fd and so costs this much per connection:
 * the owner is named by its actor-table slot, not a pointer. */
struct es__fdent {
    uint32_t owner;       /* owner's table slot + 1; 0 when not watched */
    uint32_t gen;         /* tells a stale epoll event from a live one */
    int next_fd, prev_fd; /* owner's list of watched fds (+1, 0 = end) */
};

/* Delivers an epoll event tagged for fd and generation gen. */
void es__io_ready(struct es__loop *loop, int fd, uint32_t gen, uint32_t events);
void es__io_unwatch_actor(es_actor_t *a);
/* Drops self's watch of fd without epoll_ctl and closes fd (one syscall
 * less per connection); fd must not be shared with another process or
 * dup()ed, or epoll would keep reporting it. */
void es__io_close(es_actor_t *self, int fd);
void es__io_destroy(struct es__loop *loop);

/* --- timers (timer.c) ----------------------------------------------------- */

/* --- coarse deadlines (deadline.c) ------------------------------------------
 * A timing wheel per loop for timeouts that move on every event (a
 * connection's idle timeout): arming one allocates nothing. */

#define ES__WHEEL_TICK_MS 16u
#define ES__WHEEL_SLOTS 1024u /* one revolution: about 16 s, 8 KiB */
/* The tag of the ES_MSG_TIMER a deadline delivers (its timer id is 0). */
#define ES__DEADLINE_TAG 0x4553000044454144ull /* "ES\0\0DEAD" */

/* Embedded in the owner's state; zeroed means not armed. */
struct es__deadline {
    struct es__deadline *next, **pprev; /* pprev NULL: not armed */
    es_actor_t *owner;
    uint32_t due; /* wheel tick */
};

struct es__wheel {
    struct es__deadline **slots; /* ES__WHEEL_SLOTS lists, made on first use */
    uint32_t now;                /* the last tick visited */
    uint32_t armed;              /* deadlines linked */
};

/* Arms (or moves) d to fire after_ms from now at owner, on owner's loop.
 * Returns: 0, -ENOMEM. Thread: owner's loop. */
int es__deadline_set(es_actor_t *owner, struct es__deadline *d,
                     uint64_t after_ms);
/* Disarms d (no-op if not armed). Thread: owner's loop. */
void es__deadline_clear(struct es__deadline *d);
/* Fires due deadlines; returns how many fired. */
unsigned es__wheel_run(struct es__loop *loop);
/* Milliseconds until the loop must look at the wheel again, or -1. */
int es__wheel_timeout_ms(struct es__loop *loop);
void es__wheel_destroy(struct es__loop *loop);

struct es__timers {
    struct es__timer **heap; /* binary min-heap by (due, seq) */
    uint32_t heap_len, heap_cap;
    struct es__timer **slab; /* id index -> timer, NULL when free */
    uint32_t *gen;           /* generation of each slab index */
    uint32_t *free_next;     /* free list of slab indices */
    uint32_t slab_len, slab_cap, free_head;
    uint64_t seq; /* start order, to break ties between equal deadlines */
};

void es__timers_init(struct es__timers *ts);
void es__timers_destroy(struct es__timers *ts);
/* Fires due timers; returns how many fired. */
unsigned es__timers_run(struct es__loop *loop);
/* Milliseconds until the next timer (rounded up), or -1 if none. */
int es__timers_timeout_ms(struct es__loop *loop);
void es__timers_cancel_actor(struct es__loop *loop, es_actor_t *a);
/* Takes a's timers out of loop (a migrates); they stay linked through
 * their owner links and keep their ids. */
struct es__timer *es__timers_detach(struct es__loop *loop, es_actor_t *a);
/* Starts a detached list on loop for a, with the same deadlines. */
void es__timers_adopt(struct es__loop *loop, es_actor_t *a,
                      struct es__timer *list);

/* --- demux loop (loop.c) -------------------------------------------------- */

/* Readiness bits of es__loop_watch_add(); equal to ES_IO_READ / _WRITE. */
#define ES__WATCH_READ 0x001u
#define ES__WATCH_WRITE 0x004u

/* Something of the runtime's own (the signalfd) in a loop's poller. */
struct es__watch {
    int fd;
    void (*cb)(struct es__loop *loop, struct es__watch *w, uint32_t events);
};

struct es__event;   /* backend.h */
struct es__backend; /* backend.h */

#define ES__QCACHE_MAX 32u

/* A small u64 -> u64 map (map.c); key 0 is never a key. */
struct es__map {
    uint64_t *keys, *vals; /* key 0: empty */
    uint32_t cap, n;
};
/* The value of key, or NULL. */
uint64_t *es__map_find(const struct es__map *m, uint64_t key);
/* The value of key, made (0) if absent; NULL when out of memory. */
uint64_t *es__map_get(struct es__map *m, uint64_t key);
/* Removes key, which must be present. */
void es__map_del(struct es__map *m, uint64_t key);
void es__map_free(struct es__map *m);

/* Sampled behaviour time per actor, one table per loop (introspect.c). */
struct es__prof {
    pthread_mutex_t lock; /* the loop writes under it; readers take it */
    struct es__map busy;  /* actor id -> ns */
    uint32_t tick;        /* the loop thread: behaviour calls, for sampling */
};
void es__prof_init(struct es__prof *p);
void es__prof_destroy(struct es__prof *p);
/* The loop thread: adds ns to id's account; takes (removes and returns)
 * id's account. */
void es__prof_add(struct es__loop *loop, es_actor_id_t id, uint64_t ns);
uint64_t es__prof_take(struct es__loop *loop, es_actor_id_t id);

struct es__loop {
    /* Set by es__loop_init() before any thread starts; read-only after. */
    es_runtime_t *rt;
    unsigned index;
    int cpu; /* pinned to this CPU at thread start; -1: not pinned */
    /* The IO backend and its state (backend.h); wake() is called from any
     * thread, everything else from the loop thread. */
    const struct es__backend *backend;
    void *poller;
    es_actor_id_t self_id; /* the loop actor's handle, kept after it is freed */
    struct es__event *events; /* [ES__WAIT_EVENTS], made by loop.c */

    /* The thread calling es_runtime_start() / es_runtime_wait() (the one
     * settling the runtime): the loop thread's pthread and whether it runs.
     * Read by es__loop_owned() on other threads, and then only after the
     * join that ends the loop thread. */
    pthread_t thread;
    bool thread_started;

    /* Any thread: the wakeup handshake (chan.c) and the inbound list. */
    atomic_int sleeping; /* 1 while asleep or about to be */
    /* es__now_ns() when it last woke from epoll_wait() (placement reads it
     * to see a loop that has been busy for long: relaxed, a hint). */
    _Atomic uint64_t awake_since;
    /* es__now_ns() when a sender last wrote its wakeup byte (chan.c), for
     * the adaptive spin's gaps (relaxed: a hint). */
    _Atomic uint64_t wake_sent_ns;
    _Atomic(struct es__chan *) inbound; /* push-only: senders CAS, loop reads */
    atomic_uint
        nactors; /* actors assigned here: spawners add, loop subtracts */
    /* Actors spawned for this loop by other threads, not yet installed: a
     * Treiber stack (spawners push with a release CAS, the loop takes it
     * all with an acquire exchange). See actor.c. */
    _Atomic(es_actor_t *) spawned;

    /* The loop thread only (the settling thread once it has been joined). */
    struct es__tctx tctx;              /* its sender context */
    es_actor_t *self;                  /* the loop actor */
    es_actor_t *runq_head, *runq_tail; /* actors with queued mail */
    es_actor_t *actors;                /* actors installed here */
    es_actor_t *spawn_next; /* taken from `spawned`, FIFO, not installed */
    struct es__timers timers;
    struct es__wheel wheel;
    unsigned io_watches;    /* fds in the poller (not its wakeup) */
    struct es__fdent *fds;  /* actors' fd watches, indexed by fd */
    unsigned char *scratch; /* read buffer shared by this loop's actors */
    int nevents;            /* returned by the last backend wait() */
    int fds_cap;
    bool stopping;
    struct es__mute *mutes; /* muted senders of this loop */
    uint32_t nmutes, mutes_cap;
    uint64_t mutes_polled; /* es__now_ns() of the last es__mutes_poll() */
    /* Migration: messages for actors moving in, held until their old loop
     * is flushed; migrations out of this loop still in progress. */
    struct es__msgq parked;
    struct es__migration *migrations;
    unsigned nmigrating;
    struct es__prof prof; /* sampled behaviour time (introspect.c) */
    /* Spare queue buffers of the smallest size (actor.c, msgq). */
    es_msg_t *qcache[ES__QCACHE_MAX];
    unsigned nqcache;
    /* Load shedding (actor.c): actors in the run queue, and es__now_ns()
     * of the last actor shed. */
    uint32_t runq_len;
    uint64_t shed_last;
    /* Any thread reads (relaxed, a hint): until this es__now_ns(), the loop
     * is shedding and co-location moves nothing onto it. */
    _Atomic uint64_t shed_until;

    /* Written by the loop thread, read by es_runtime_stats() anywhere. */
    _Atomic uint64_t received, dead_letters, timers_fired, turns, sleeps, muted,
        migrated, shed;
};

/* True if the calling thread may act for `loop`: its demux thread, or the
 * thread settling the runtime once the loop thread is gone (never started,
 * or joined). What "Thread: owning loop only" means; for ES_ASSERT. */
bool es__loop_owned(const struct es__loop *loop);

int es__loop_init(es_runtime_t *rt, struct es__loop *loop, unsigned index);
void es__loop_destroy(struct es__loop *loop);
void *es__loop_main(void *arg);
int es__loop_watch_add(struct es__loop *loop, struct es__watch *w,
                       uint32_t events);
/* The backend's ctl() for an actor's fd watch: op is ES__CTL_*; data (odd,
 * see io.c) tags the event. */
enum { ES__CTL_ADD, ES__CTL_MOD, ES__CTL_DEL };
int es__loop_ctl(struct es__loop *loop, int op, int fd, uint32_t events,
                 uint64_t data);
/* After the loop exited: installs (so starts and stops) the actors still on
 * its spawn stack and routes (so dead-letters) every message left in its
 * inbound rings. Returns how many of both there were. */
unsigned es__loop_drain(struct es__loop *loop);
struct es__loop *es__loop_current(void);
/* The loop's scratch buffer of ES__SCRATCH bytes (made on first use): what
 * a connection reads into, so an idle connection holds no buffer. */
#define ES__SCRATCH (64u * 1024u)
unsigned char *es__loop_scratch(struct es__loop *loop);
/* True between es_runtime_start() and the end of es_runtime_wait(). */
bool es__runtime_running(const es_runtime_t *rt);

/* --- signals (signal.c) --------------------------------------------------- */

struct es__signals {
    pthread_mutex_t lock;
    struct es__sigsub {
        int signo;
        es_actor_id_t id; /* ES_ACTOR_NONE: stop the runtime */
    } * subs;
    size_t n, cap;
    sigset_t mask;
    struct es__watch watch; /* the signalfd, on loop 0 */
    atomic_int active;      /* subscriptions exist */
};

int es__signals_init(es_runtime_t *rt);
void es__signals_destroy(es_runtime_t *rt);
void es__signals_drop_actor(es_runtime_t *rt, es_actor_id_t id);

/* --- runtime (runtime.c) -------------------------------------------------- */

struct es_runtime {
    /* Set by es_runtime_new(); read-only after. */
    uint64_t serial; /* distinguishes runtimes in thread-local caches */
    es_runtime_opts_t opts;
    unsigned nloops;
    struct es__loop *loops;
    struct es__table *table; /* internally locked / lock-free (table.c) */
    ck_epoch_t epoch;        /* ck_epoch's own synchronisation */

    /* Under the registry lock (chan.c). */
    es_runtime_t *reg_next; /* registry of live runtimes */

    /* Under cleanup_lock; run by es_runtime_free(). */
    struct es__cleanup {
        void (*fn)(void *);
        void *arg;
        struct es__cleanup *next;
    } * cleanups;
    pthread_mutex_t cleanup_lock;
    void *resolver; /* actors/resolver.c, under its slot_lock */

    /* Under tctx_lock. */
    pthread_mutex_t tctx_lock;
    struct es__tctx *foreign; /* contexts of non-demux threads */

    struct es__signals sig; /* its own lock; `active` is atomic */

    /* Any thread. */
    atomic_int stopping; /* acq_rel exchange in es_runtime_stop() */
    atomic_uint rr_next; /* round-robin placement, relaxed */
    /* Futex word of es_send_wait(): bumped when a receiver a foreign
     * thread waits on drains (see actor.c). */
    atomic_uint room_seq;
    _Atomic uint64_t drained_dead_letters; /* dead letters outside loops */
    /* Monitors and links (link.c), made on first use. */
    _Atomic(struct es__links *) links;
    /* Names (names.c), made on first use. */
    _Atomic(struct es__names *) names;
    /* Requests (request.c), made on first use. */
    _Atomic(struct es__requests *) requests;

    /* The thread that starts, waits for and frees the runtime (the
     * caller serialises those calls, as runtime.h says). */
    bool started, waited;
};

/* The calling thread's context for rt, or NULL: one compare when cached. */
static inline struct es__tctx *es__tctx_current(const es_runtime_t *rt)
{
    if (es__tls_ctx.serial == rt->serial)
        return es__tls_ctx.ctx;
    return es__tctx_lookup(rt);
}

#endif /* EVENTSERVER_INTERNAL_H */
