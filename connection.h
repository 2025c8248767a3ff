/*
 * connection: the life of one TCP connection from a load balancer (with
 * --tproxy, from a client): allow, read the PROXY header within its
 * deadline, choose the endpoints, connect from the client's address, relay,
 * log one summary line, close.
 *
 * Holds no accept loop and no process handling (listener.h), no relay loop
 * (relay.h), no socket opening rules (spoof.h).
 */
#ifndef CONNECTION_H
#define CONNECTION_H

#include <sys/socket.h>

#include "metrics.h"
#include "options.h"
#include "subnets.h"

/*
 * Handle the connection on lb_fd to its end, and close it. accepted_peer is
 * the peer our accept loop saw, with lb_fd already non-blocking; NULL for a
 * socket from inetd or systemd. allowed NULL allows every peer. The
 * connection is counted in metrics, the long-lived mode's shared counters
 * (NULL: none, as in inetd mode). Returns the process exit status: 0 when
 * the job was done (a refusal is a job done), 1 on a system error.
 */
int connection_run(int lb_fd, const struct sockaddr_storage *accepted_peer,
		   const struct options *opts, const struct subnets *allowed,
		   struct metrics *metrics);

/*
 * The same, for a process that will take no other connection: once its
 * spoofed connection is made it drops every capability and narrows its
 * system call filter to the relay's (SANDBOX_RELAY). A process that may
 * serve another connection calls connection_run().
 */
int connection_run_last(int lb_fd,
			const struct sockaddr_storage *accepted_peer,
			const struct options *opts,
			const struct subnets *allowed, struct metrics *metrics);

/*
 * Set on the accept loop's listening socket what the connections it
 * accepts inherit and connection_run() then counts on (TCP_NODELAY,
 * keepalive), and, for PROXY mode, that the kernel hands a connection over
 * only once its first bytes are in. Returns 0, or -1 with errno.
 */
int connection_prepare_listener(int listen_fd, const struct options *opts);

#endif
