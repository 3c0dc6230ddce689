/* SPDX-License-Identifier: MIT */
/*
 * Supervisors (include/eventserver/supervisor.h): an actor that starts its
 * children in order, monitors each, and restarts them by its strategy.
 *
 * The supervisor is a small state machine on its own thread:
 * - RUNNING: a DOWN from a child that it did not stop is a crash or an
 *   exit. It counts a restart against the intensity, then restarts that
 *   child (one-for-one) or first stops the others it must restart and
 *   waits for their DOWNs (one-for-all, rest-for-one: RESTARTING).
 * - RESTARTING: DOWNs of the children it stopped come in; when the last
 *   has, the children from `restart_from` on start again in order.
 * - STOPPING (es_supervisor_stop(), or giving up): the running children
 *   stop one at a time, last started first; each next one only after the
 *   DOWN of the one before; then the supervisor stops itself, with reason
 *   0 or ES_SUPERVISOR_GAVE_UP.
 * A child that is itself a supervisor is stopped with the ordered
 * shutdown too, so a tree stops from its leaves up. Everything runs on the
 * supervisor's home thread, so its state needs no lock.
 */
#include "internal.h"

#include <eventserver/supervisor.h>

#include <errno.h>
#include <string.h>

enum phase { RUNNING, RESTARTING, STOPPING };

struct child {
    es_child_spec_t spec;
    struct sup_conf *sub; /* a child supervisor's options (owned) */
    es_actor_id_t id;     /* ES_ACTOR_NONE while not running */
    es_ref_t mon;
    bool stopping; /* stopped by the supervisor: its DOWN is expected */
    bool retired;  /* temporary, or transient that ended normally */
};

/* A deep copy of es_supervisor_opts_t: the supervisor owns it. */
struct sup_conf {
    es_strategy_t strategy;
    unsigned n, max_restarts;
    uint64_t period_ns;
    char *name;
    int loop;
    struct child *c;
};

struct sup {
    struct sup_conf *conf; /* owned unless `borrowed` */
    bool borrowed;         /* conf belongs to a parent's child entry */
    enum phase phase;
    unsigned pending;      /* DOWNs awaited while RESTARTING */
    unsigned restart_from; /* RESTARTING: first child to start again */
    int exit_reason;       /* STOPPING: the reason to stop with */
    bool finished;         /* STOPPING: every child is down */
    uint64_t *stamps;      /* times of the last max_restarts + 1 restarts */
    unsigned nstamps, stamp_next;
};

static int sup_behaviour(es_actor_t *self, es_msg_t *msg);

/* --- the copy of the options ---------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = es__malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

static void conf_free(struct sup_conf *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->n; i++) {
        es__free((char *)c->c[i].spec.name);
        conf_free(c->c[i].sub);
    }
    es__free(c->c);
    es__free(c->name);
    es__free(c);
}

static int conf_copy(const es_supervisor_opts_t *o, struct sup_conf **out,
                     unsigned depth)
{
    if (!o || !o->children || !o->nchildren || depth > 64)
        return -EINVAL;
    struct sup_conf *c = es__calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->strategy = o->strategy;
    c->n = o->nchildren;
    c->max_restarts = o->max_restarts || o->period_ms ? o->max_restarts : 3;
    c->period_ns =
        (uint64_t)(o->max_restarts || o->period_ms ? o->period_ms : 5000) *
        1000000u;
    c->loop = o->loop;
    c->c = es__calloc(o->nchildren, sizeof(*c->c));
    int rc = c->c ? 0 : -ENOMEM;
    if (!rc && o->name && !(c->name = dup_str(o->name)))
        rc = -ENOMEM;
    for (unsigned i = 0; !rc && i < o->nchildren; i++) {
        const es_child_spec_t *s = &o->children[i];
        struct child *ch = &c->c[i];
        ch->spec = *s;
        ch->spec.name = NULL;
        if (s->supervisor) {
            rc = conf_copy(s->supervisor, &ch->sub, depth + 1);
            ch->spec.spawn.behaviour = sup_behaviour;
        } else if (!s->spawn.behaviour) {
            rc = -EINVAL;
        }
        if (!rc && s->name && !(ch->spec.name = dup_str(s->name)))
            rc = -ENOMEM;
    }
    if (rc) {
        conf_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static struct sup *sup_new(struct sup_conf *conf, bool borrowed)
{
    struct sup *s = es__calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->conf = conf;
    s->borrowed = borrowed;
    s->nstamps = conf->max_restarts + 1;
    s->stamps = es__calloc(s->nstamps, sizeof(*s->stamps));
    if (!s->stamps) {
        es__free(s);
        return NULL;
    }
    return s;
}

static void sup_free(void *state)
{
    struct sup *s = state;
    if (!s->borrowed)
        conf_free(s->conf);
    es__free(s->stamps);
    es__free(s);
}

/* --- children ------------------------------------------------------------- */

static int start_child(es_actor_t *self, struct sup *s, unsigned i)
{
    es_runtime_t *rt = es_actor_runtime(self);
    struct child *ch = &s->conf->c[i];
    es_spawn_opts_t o = ch->spec.spawn;
    int rc = 0;

    if (ch->sub) {
        struct sup *child = sup_new(ch->sub, true);
        if (!child)
            return -ENOMEM;
        o.state = child;
        o.state_free = sup_free;
        if (!o.loop)
            o.loop = ch->sub->loop;
    } else if (ch->spec.init) {
        void *state = NULL;
        if ((rc = ch->spec.init(ch->spec.init_arg, &state)) < 0)
            return rc;
        o.state = state;
    }
    es_actor_id_t id;
    if ((rc = es_spawn(rt, &o, &id)) != 0) {
        if (o.state_free && (ch->sub || ch->spec.init))
            o.state_free(o.state);
        return rc;
    }
    /* The name first: the child is reachable by it before the supervisor
     * handles anything else. */
    if (ch->spec.name && (rc = es_register(rt, ch->spec.name, id)) != 0) {
        (void)es_stop(rt, id);
        return rc;
    }
    if ((rc = es_monitor(self, id, &ch->mon)) != 0) {
        (void)es_stop(rt, id);
        return rc;
    }
    ch->id = id;
    ch->stopping = false;
    return 0;
}

/* Asks child i to stop: a supervisor in order, anything else at once. */
static void stop_child(es_actor_t *self, struct child *ch)
{
    es_runtime_t *rt = es_actor_runtime(self);
    ch->stopping = true;
    int rc = ch->sub ? es_supervisor_stop(rt, ch->id) : es_stop(rt, ch->id);
    if (rc == -ESRCH)
        return; /* gone already: its DOWN is on its way */
    if (rc)
        es__log(ES_LOG_ERROR, "supervisor %#llx: cannot stop child %#llx: %s",
                (unsigned long long)es_actor_self(self),
                (unsigned long long)ch->id, es_strerror(rc));
}

/* Starts children from..n-1 that are due; a failure starts the ordered
 * stop with its error. */
static void start_from(es_actor_t *self, struct sup *s, unsigned from);

static void stop_next(es_actor_t *self, struct sup *s)
{
    for (unsigned i = s->conf->n; i-- > 0;) {
        struct child *ch = &s->conf->c[i];
        if (ch->id == ES_ACTOR_NONE)
            continue;
        if (!ch->stopping)
            stop_child(self, ch);
        return; /* one at a time: wait for its DOWN */
    }
    s->finished = true; /* none left: the supervisor's turn */
}

static void begin_stopping(es_actor_t *self, struct sup *s, int reason)
{
    s->phase = STOPPING;
    s->exit_reason = reason;
    stop_next(self, s);
}

static void start_from(es_actor_t *self, struct sup *s, unsigned from)
{
    s->phase = RUNNING;
    for (unsigned i = from; i < s->conf->n; i++) {
        struct child *ch = &s->conf->c[i];
        if (ch->id != ES_ACTOR_NONE || ch->retired)
            continue;
        int rc = start_child(self, s, i);
        if (rc) {
            es__log(
                ES_LOG_ERROR, "supervisor %#llx: child %u did not start: %s",
                (unsigned long long)es_actor_self(self), i, es_strerror(rc));
            begin_stopping(self, s, rc);
            return;
        }
    }
}

/* Counts a restart; false if that is one too many for the intensity. */
static bool restart_allowed(struct sup *s)
{
    uint64_t now = es__now_ns();
    s->stamps[s->stamp_next] = now;
    s->stamp_next = (s->stamp_next + 1) % s->nstamps;
    /* The oldest of the last max_restarts + 1 restarts: if it is within
     * the period, there were too many. */
    uint64_t oldest = s->stamps[s->stamp_next];
    return oldest == 0 || now - oldest > s->conf->period_ns;
}

static bool wants_restart(const struct child *ch, int reason)
{
    switch (ch->spec.restart) {
    case ES_RESTART_PERMANENT:
        return true;
    case ES_RESTART_TRANSIENT:
        return reason != 0 && reason != -ESHUTDOWN;
    default:
        return false;
    }
}

static void child_down(es_actor_t *self, struct sup *s, unsigned i, int reason)
{
    struct child *ch = &s->conf->c[i];
    bool expected = ch->stopping;
    ch->id = ES_ACTOR_NONE;
    ch->stopping = false;
    if (s->phase == STOPPING) {
        stop_next(self, s);
        return;
    }
    if (s->phase == RESTARTING) {
        if (expected && --s->pending == 0)
            start_from(self, s, s->restart_from);
        if (expected)
            return;
    }
    if (!wants_restart(ch, reason)) {
        ch->retired = true;
        return;
    }
    if (!restart_allowed(s)) {
        es__log(ES_LOG_ERROR,
                "supervisor %#llx: more than %u restarts in %llu ms: "
                "giving up",
                (unsigned long long)es_actor_self(self), s->conf->max_restarts,
                (unsigned long long)(s->conf->period_ns / 1000000u));
        begin_stopping(self, s, ES_SUPERVISOR_GAVE_UP);
        return;
    }
    unsigned from = s->conf->strategy == ES_ONE_FOR_ALL ? 0 : i;
    if (s->conf->strategy != ES_ONE_FOR_ONE) {
        /* Stop the others of the group, last started first, and restart
         * the group once they are all down. */
        for (unsigned k = s->conf->n; k-- > from;) {
            struct child *o = &s->conf->c[k];
            if (o->id == ES_ACTOR_NONE || o->stopping)
                continue;
            stop_child(self, o);
            s->pending++;
        }
        for (unsigned k = from; k < s->conf->n; k++)
            if (s->conf->c[k].spec.restart == ES_RESTART_TEMPORARY && k != i)
                s->conf->c[k].retired = true; /* never restarted */
    }
    if (s->pending) {
        /* A crash while restarting widens the group if it must. */
        if (s->phase != RESTARTING || from < s->restart_from)
            s->restart_from = from;
        s->phase = RESTARTING;
        return;
    }
    start_from(self, s, from);
}

static int sup_cb(es_actor_t *self, es_msg_t *msg)
{
    struct sup *s = es_actor_state(self);

    switch (msg->type) {
    case ES_MSG_START:
        start_from(self, s, 0);
        return 0;
    case ES_MSG_DOWN:
        for (unsigned i = 0; i < s->conf->n; i++)
            if (s->conf->c[i].id == msg->from &&
                s->conf->c[i].mon == es_msg_ref(msg)) {
                child_down(self, s, i, es_msg_reason(msg));
                break;
            }
        return 0;
    case ES__MSG_SUP_SHUTDOWN:
        if (s->phase != STOPPING)
            begin_stopping(self, s, 0);
        return 0;
    case ES_MSG_STOP:
        /* Stopped from outside (es_stop(), the runtime): the children go
         * too, at once. */
        for (unsigned i = s->conf->n; i-- > 0;)
            if (s->conf->c[i].id != ES_ACTOR_NONE)
                (void)es_stop(es_actor_runtime(self), s->conf->c[i].id);
        return 0;
    }
    return 0;
}

/* Once every child is down after an ordered stop, the supervisor stops:
 * with reason 0 (es_actor_stop()), or by returning its error, which the
 * runtime hands to monitors and links as the reason. */
static int sup_behaviour(es_actor_t *self, es_msg_t *msg)
{
    struct sup *s = es_actor_state(self);
    int rc = sup_cb(self, msg);
    if (rc == 0 && s->finished && msg->type != ES_MSG_STOP) {
        if (s->exit_reason < 0)
            return s->exit_reason;
        es_actor_stop(self);
    }
    return rc;
}

/* --- public calls ------------------------------------------------------------
 */

int es_supervisor_spawn(es_runtime_t *rt, const es_supervisor_opts_t *opts,
                        es_actor_id_t *out)
{
    if (!rt || !out)
        return -EINVAL;
    struct sup_conf *conf;
    int rc = conf_copy(opts, &conf, 0);
    if (rc)
        return rc;
    struct sup *s = sup_new(conf, false);
    if (!s) {
        conf_free(conf);
        return -ENOMEM;
    }
    es_spawn_opts_t o = {.behaviour = sup_behaviour,
                         .state = s,
                         .state_free = sup_free,
                         .loop = opts->loop};
    es_actor_id_t id;
    if ((rc = es_spawn(rt, &o, &id)) != 0) {
        sup_free(s);
        return rc;
    }
    if (conf->name && (rc = es_register(rt, conf->name, id)) != 0) {
        (void)es_stop(rt, id);
        return rc;
    }
    *out = id;
    return 0;
}

void es_supervisor_child(es_child_spec_t *spec,
                         const es_supervisor_opts_t *opts)
{
    *spec = (es_child_spec_t){0};
    spec->spawn.behaviour = sup_behaviour;
    spec->spawn.loop = opts->loop;
    spec->supervisor = opts;
}

int es_supervisor_stop(es_runtime_t *rt, es_actor_id_t sup)
{
    es_msg_t m = es_msg_make(ES__MSG_SUP_SHUTDOWN);
    return es__send(rt, sup, &m, false);
}
