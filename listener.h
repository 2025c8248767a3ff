/*
 * listener: the forking accept loop, one process per connection.
 *
 * Holds accepting (never dying of an accept error, pausing at the
 * connection limit), forking a child per connection, --listeners N accept
 * processes on SO_REUSEPORT sockets, SIGCHLD/SIGTERM handling, and taking
 * systemd's listening socket (Accept=no). Holds nothing of what a child
 * does with its connection (connection.h) and no UDP (udp.h).
 */
#ifndef LISTENER_H
#define LISTENER_H

#include "options.h"
#include "subnets.h"

/*
 * Accept on activated_fd (a listening socket from systemd), or, when it is
 * -1, on opts->listeners sockets of our own bound to -l. Returns the exit
 * status once SIGTERM or SIGINT stops it; start-up failures exit.
 */
int listener_run(int activated_fd, const struct options *opts,
		 const struct subnets *allowed);

#endif
