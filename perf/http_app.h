/* SPDX-License-Identifier: MIT */
/*
 * The application the HTTP benchmarks serve (perf/http_server and the
 * server side of perf/http_memory): GET /plaintext answers "Hello, World!",
 * POST /echo answers the request body, GET /hold?ms=N answers "held" N ms
 * later through a deferred response that a per-loop hold actor finishes
 * from a timer. Every other path gets the server's own 404.
 */
#ifndef ES_PERF_HTTP_APP_H
#define ES_PERF_HTTP_APP_H

#include <eventserver/eventserver.h>
#include <eventserver/http.h>

/* The routes' shared state and one hold actor per demux thread. */
typedef struct hb_app hb_app_t;

/*
 * Spawns one hold actor on each demux thread of rt and adds the routes to
 * s (before es_http_server_start()).
 * Returns: 0 and *out; -ENOMEM; errors of es_spawn / es_http_server_route.
 * Ownership: *out is the caller's; free it with hb_app_free() once the
 * runtime has stopped. Thread: any, before the server starts.
 */
int hb_app_new(es_runtime_t *rt, es_http_server_t *s, hb_app_t **out);

/* Deferred /hold responses whose timer is running now. Thread: any. */
long hb_app_parked(const hb_app_t *app);

/* Frees the app. Thread: any, after es_runtime_wait(). NULL is ignored. */
void hb_app_free(hb_app_t *app);

#endif /* ES_PERF_HTTP_APP_H */
