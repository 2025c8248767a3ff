/*
 * spoof: open a socket from a client's address to a target (see spoof.h).
 *
 * Holds the socket options and the bind/connect order spoofing needs, and
 * the one rule for when a client's port may give way to an ephemeral one.
 * Holds no logging and no addresses of its own choosing.
 */
#define _GNU_SOURCE
#include "spoof.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <unistd.h>

#include "netaddr.h"
#include "sockets.h"

/*
 * IP_TRANSPARENT and SO_MARK fail with EPERM without CAP_NET_ADMIN; a bind
 * to a port below 1024 (a client's source port) fails with EACCES without
 * CAP_NET_BIND_SERVICE, which IP_TRANSPARENT does not stand in for.
 */
const char *spoof_capability_hint(int error)
{
	if (error == EPERM)
		return " (mmproxy needs CAP_NET_ADMIN for this)";
	if (error == EACCES)
		return " (a port below 1024 needs CAP_NET_BIND_SERVICE)";
	return "";
}

static int fail_at(enum spoof_step step, int error,
		   struct spoof_failure *failure)
{
	failure->step = step;
	failure->error = error;
	return -1;
}

/* Options that must be on the socket before bind(); returns 0 or -1. */
static int prepare_socket(int fd, int type, const struct sockaddr_storage *from,
			  int family, const struct spoof_options *opts,
			  struct spoof_failure *failure)
{
	if (from != NULL) {
		if (set_transparent(fd, family) != 0)
			return fail_at(SPOOF_TRANSPARENT, errno, failure);
		/* A previous connection's TIME_WAIT must not block this one.
		 * Not for UDP: two flows must never share an address. */
		if (type == SOCK_STREAM &&
		    set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0)
			return fail_at(SPOOF_SOCKET, errno, failure);
	}
	if (opts->mark != NULL &&
	    set_int_option(fd, SOL_SOCKET, SO_MARK, (int)*opts->mark) != 0)
		return fail_at(SPOOF_MARK, errno, failure);
	/* Only a latency hint: a failure changes nothing that matters. */
	if (type == SOCK_STREAM)
		(void)set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	return 0;
}

/* Wait for a non-blocking connect() to finish; returns 0 or an errno value. */
static int finish_connect(int fd, int timeout_ms)
{
	short revents = 0;
	int ready = wait_for_fd(fd, POLLOUT, monotonic_ms() + timeout_ms,
				&revents);

	if (ready < 0)
		return errno;
	if (ready == 0)
		return ETIMEDOUT;
	int error = 0;
	socklen_t len = sizeof error;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
		return errno;
	return error;
}

/*
 * Connect without blocking; returns 0 or an errno value. To a backend on
 * this host the handshake is over before connect() returns EINPROGRESS
 * (loopback delivers the SYN-ACK at once), and a second connect() says so
 * with 0, one call where poll() and SO_ERROR are two. EALREADY: still
 * going, so wait; any other error is the connection's own.
 */
static int connect_now(int fd, const struct sockaddr_storage *to,
		       int timeout_ms)
{
	const struct sockaddr *addr = (const struct sockaddr *)to;

	if (connect(fd, addr, netaddr_length(to)) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return errno;
	if (connect(fd, addr, netaddr_length(to)) == 0 || errno == EISCONN)
		return 0;
	if (errno != EALREADY && errno != EINPROGRESS)
		return errno;
	return finish_connect(fd, timeout_ms);
}

/* One attempt, from from's port or, when any_port, one the kernel picks. */
static int try_open(int type, const struct sockaddr_storage *from,
		    const struct sockaddr_storage *to, bool any_port,
		    const struct spoof_options *opts,
		    struct spoof_failure *failure)
{
	int fd = socket(to->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return fail_at(SPOOF_SOCKET, errno, failure);
	if (prepare_socket(fd, type, from, to->ss_family, opts, failure) != 0)
		goto fail;
	if (from != NULL) {
		struct sockaddr_storage source = *from;
		if (any_port)
			netaddr_set_port(&source, 0);
		if (bind(fd, (const struct sockaddr *)&source,
			 netaddr_length(&source)) != 0) {
			fail_at(SPOOF_BIND, errno, failure);
			goto fail;
		}
	}
	int error = connect_now(fd, to, opts->connect_timeout_ms);
	if (error == 0)
		return fd;
	fail_at(SPOOF_CONNECT, error, failure);
fail:
	close(fd);
	return -1;
}

/*
 * A client port that is taken here may give way to an ephemeral one: taken
 * by a listening socket or another flow, bind() says EADDRINUSE; taken by a
 * live connection to the same target (the same 4-tuple), connect() says
 * EADDRNOTAVAIL; below 1024 without CAP_NET_BIND_SERVICE, bind() says
 * EACCES.
 */
static bool is_port_taken(const struct spoof_failure *failure)
{
	return (failure->step == SPOOF_BIND ||
		failure->step == SPOOF_CONNECT) &&
	       (failure->error == EADDRINUSE ||
		failure->error == EADDRNOTAVAIL || failure->error == EACCES);
}

int spoof_open(int type, const struct sockaddr_storage *from,
	       const struct sockaddr_storage *to,
	       const struct spoof_options *opts, struct spoof_failure *failure)
{
	bool any_port = opts->port == SPOOF_PORT_ANY;

	if (from != NULL && from->ss_family != to->ss_family)
		return fail_at(SPOOF_FAMILY, EAFNOSUPPORT, failure);
	int fd = try_open(type, from, to, any_port, opts, failure);
	if (fd < 0 && from != NULL && opts->port == SPOOF_PORT_FALLBACK &&
	    is_port_taken(failure))
		fd = try_open(type, from, to, true, opts, failure);
	return fd;
}
