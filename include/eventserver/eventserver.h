/* SPDX-License-Identifier: MIT */
/*
 * Umbrella header: everything an EventServer application needs.
 */
#ifndef EVENTSERVER_EVENTSERVER_H
#define EVENTSERVER_EVENTSERVER_H

#include <eventserver/common.h>
#include <eventserver/runtime.h>
#include <eventserver/actor.h>
#include <eventserver/timer.h>
#include <eventserver/signal.h>
#include <eventserver/io.h>
#include <eventserver/conn.h>
#include <eventserver/supervisor.h>

#define ES_VERSION_MAJOR 0
#define ES_VERSION_MINOR 1
#define ES_VERSION_PATCH 0

#endif /* EVENTSERVER_EVENTSERVER_H */
