/*
 * udp: the long-lived datagram mode.
 *
 * Each datagram from a load balancer starts with a PROXY v2 header; a flow
 * per (load balancer, client) pair has its own socket from the client's
 * address to the target, and carries the replies back. Holds the flows'
 * sockets, batching and the event loop; the table that finds and expires
 * flows is flowtable.h. Holds nothing of TCP.
 */
#ifndef UDP_H
#define UDP_H

#include <sys/types.h>

#include "metrics.h"
#include "options.h"
#include "subnets.h"

/*
 * Serve datagrams on listen_fd (a bound datagram socket) until SIGTERM or
 * SIGINT, counting into metrics. SIGHUP reloads allowed in place
 * (reload.h): new flows follow the new set, open flows live on. SIGUSR1
 * logs the counters. metrics_pid is the --metrics endpoint's process, or
 * 0. Returns the exit status; set-up failures exit.
 */
int udp_run(int listen_fd, const struct options *opts,
	    struct subnets *allowed, struct metrics *metrics,
	    pid_t metrics_pid);

#endif
