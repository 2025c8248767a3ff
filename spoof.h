/*
 * spoof: the one way to open a socket from a client's own address.
 *
 * TCP connections, UDP flows and --check's probes all open their socket to
 * the target here: IP_TRANSPARENT, SO_MARK, the bind to the client's address
 * and port, the fallback to an ephemeral port, and the connect with its
 * deadline. Holds no logging and no choice of addresses: the caller says
 * from where to where (endpoint.h) and reports a failure its own way.
 */
#ifndef SPOOF_H
#define SPOOF_H

#include <stdint.h>
#include <sys/socket.h>

enum spoof_port {
	SPOOF_PORT_EXACT,    /* the client's own port, or fail */
	SPOOF_PORT_FALLBACK, /* the client's port; an ephemeral one if taken */
	SPOOF_PORT_ANY,	     /* an ephemeral port from the start */
};

struct spoof_options {
	const uint32_t *mark; /* SO_MARK for the socket, or NULL */
	enum spoof_port port;
	int connect_timeout_ms; /* for a TCP connect; UDP connects at once */
};

/* Which step failed, for the caller's log line and its end reason. */
enum spoof_step {
	SPOOF_FAMILY,	   /* from and to differ in address family */
	SPOOF_SOCKET,	   /* socket() or an option every socket gets */
	SPOOF_TRANSPARENT, /* IP_TRANSPARENT (needs CAP_NET_ADMIN) */
	SPOOF_MARK,	   /* SO_MARK (needs CAP_NET_ADMIN) */
	SPOOF_BIND,	   /* the client's address and port */
	SPOOF_CONNECT,	   /* ETIMEDOUT when the target did not answer */
};

struct spoof_failure {
	enum spoof_step step;
	int error; /* an errno value */
};

/*
 * A non-blocking socket of type (SOCK_STREAM or SOCK_DGRAM) connected to
 * to, from from's address and port when from is not NULL, else from our
 * own address. Returns the fd, or -1 with *failure filled.
 */
int spoof_open(int type, const struct sockaddr_storage *from,
	       const struct sockaddr_storage *to,
	       const struct spoof_options *opts, struct spoof_failure *failure);

/* What a failure's errno says about missing capabilities, or "". */
const char *spoof_capability_hint(int error);

#endif
