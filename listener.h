/*
 * listener: the forking accept loop, one process per connection.
 *
 * Holds accepting (never dying of an accept error, pausing at the
 * connection limit), forking a child per connection, --listeners N accept
 * processes on SO_REUSEPORT sockets, the signals (SIGCHLD, SIGTERM, and
 * SIGHUP and SIGUSR1 handed to reload.h and metrics.h), and taking
 * systemd's listening socket (Accept=no). Holds nothing of what a child
 * does with its connection (connection.h) and no UDP (udp.h).
 */
#ifndef LISTENER_H
#define LISTENER_H

#include <sys/types.h>

#include "metrics.h"
#include "options.h"
#include "subnets.h"

/*
 * Accept on activated_fd (a listening socket from systemd), or, when it is
 * -1, on opts->listeners sockets of our own bound to -l. Connections count
 * into metrics; SIGHUP reloads allowed in place (reload.h), SIGUSR1 logs
 * the counters. metrics_pid is the --metrics endpoint's process (0: none),
 * a child that is not a connection's. Returns the exit status once SIGTERM
 * or SIGINT stops it; start-up failures exit.
 */
int listener_run(int activated_fd, const struct options *opts,
		 struct subnets *allowed, struct metrics *metrics,
		 pid_t metrics_pid);

#endif
