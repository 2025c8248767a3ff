/*
 * endpoint: from which address and to which target a connection or a flow
 * goes, decided from a parsed PROXY header (or, with --tproxy, from the
 * connection's own ends) and the options. Pure.
 *
 * Holds the rules (LOCAL and UNKNOWN carry no client; a header naming the
 * very connection it came on carries none either; the target follows the
 * client's family; --dynamic-destination; IPv4-mapped addresses count as
 * IPv4). Holds no sockets: opening one is spoof.h.
 */
#ifndef ENDPOINT_H
#define ENDPOINT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "options.h"
#include "proxyhdr.h"

/*
 * The client a header names, unmapped, as *client; false when it names
 * none (LOCAL, UNKNOWN, UNSPEC and UNIX families): *client is AF_UNSPEC.
 */
bool endpoint_header_client(const struct proxyhdr *header,
			    struct sockaddr_storage *client);

/*
 * The target: of the client's family, not the family the load balancer used
 * to reach us; with --dynamic-destination, the header's destination. With
 * no client (client NULL), the target of the load balancer's family, so
 * health checks reach the application.
 */
struct sockaddr_storage endpoint_target(const struct options *opts,
					const struct proxyhdr *header,
					const struct sockaddr_storage *client,
					const struct sockaddr_storage *lb);

struct endpoints {
	struct sockaddr_storage client; /* the load balancer when not spoofed */
	struct sockaddr_storage target;
	bool spoofed; /* false: connect from our own address */
};

/* For a TCP connection from the load balancer at lb with this header. */
void endpoint_choose(const struct options *opts, const struct proxyhdr *header,
		     const struct sockaddr_storage *lb, struct endpoints *out);

/* --tproxy: the original destination, unless -4/-6 name one for its family. */
struct sockaddr_storage
endpoint_tproxy_target(const struct options *opts,
		       const struct sockaddr_storage *destination);

#endif
