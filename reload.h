/*
 * reload: what SIGHUP does in the long-lived modes (listener, socket-
 * activated listening socket, UDP): read the allowed-subnets file again and
 * put it in force only if all of it is good.
 *
 * Not here: catching the signal (the modes' loops read it from their
 * signalfd, signals.h), and how a mode hands the new set to connections
 * accepted later (processes forked after the reload inherit it).
 */
#ifndef RELOAD_H
#define RELOAD_H

#include <stddef.h>

#include "metrics.h"
#include "subnets.h"

/*
 * Read path into a new table. On success the new table replaces *in_force
 * (the old one is freed), the metrics note the load, and message says
 * "PATH: reloaded, N entries in force"; returns 0. On any failure *in_force
 * is untouched and message names the file, the line (when there is one)
 * and the reason, and says that the current set stays; returns -1. Either
 * way the reload is counted (metrics may be NULL). warn is called for lines
 * whose host bits were cleared, as subnets_load() does.
 */
int reload_allowed_subnets(const char *path, struct subnets *in_force,
			   struct metrics *metrics, subnets_warn_fn *warn,
			   void *warn_context, char *message, size_t size);

/*
 * SIGHUP's whole work for a long-lived mode: the reload above with its
 * line logged (a failure as an error), and masked entries warned about.
 * path NULL (no --allowed-subnets, allowed then NULL) logs that there is
 * nothing to read and changes nothing. Returns 0 when the new set is in
 * force (the pool then replaces its processes), -1 otherwise.
 */
int reload_and_log(const char *path, struct subnets *allowed,
		   struct metrics *metrics);

#endif
