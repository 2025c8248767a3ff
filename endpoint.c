/*
 * endpoint: the choice of client and target (see endpoint.h).
 *
 * Pure: no sockets, no I/O, no globals; built with -Wconversion. TCP
 * connections and UDP flows share these rules; what they do with the
 * answer is theirs.
 */
#include "endpoint.h"

#include <string.h>

#include "netaddr.h"

bool endpoint_header_client(const struct proxyhdr *header,
			    struct sockaddr_storage *client)
{
	if (header->family != AF_INET && header->family != AF_INET6) {
		memset(client, 0, sizeof *client);
		client->ss_family = AF_UNSPEC;
		return false;
	}
	*client = header->src;
	netaddr_unmap(client);
	return true;
}

struct sockaddr_storage endpoint_target(const struct options *opts,
					const struct proxyhdr *header,
					const struct sockaddr_storage *client,
					const struct sockaddr_storage *lb)
{
	struct sockaddr_storage family_of = client ? *client : *lb;

	if (client != NULL && opts->dynamic_destination) {
		struct sockaddr_storage target = header->dst;
		netaddr_unmap(&target);
		return target;
	}
	netaddr_unmap(&family_of);
	return family_of.ss_family == AF_INET ? opts->target4 : opts->target6;
}

/*
 * A header naming the very connection it came on carries no client:
 * haproxy's check-send-proxy sends one, and on a shared host that address
 * is taken.
 */
void endpoint_choose(const struct options *opts, const struct proxyhdr *header,
		     const struct sockaddr_storage *lb_addr,
		     struct endpoints *out)
{
	struct sockaddr_storage lb = *lb_addr;

	netaddr_unmap(&lb);
	out->spoofed = endpoint_header_client(header, &out->client) &&
		       !netaddr_same(&out->client, &lb);
	if (!out->spoofed)
		out->client = lb; /* for the log line */
	out->target = endpoint_target(opts, header,
				      out->spoofed ? &out->client : NULL, &lb);
}

struct sockaddr_storage
endpoint_tproxy_target(const struct options *opts,
		       const struct sockaddr_storage *destination)
{
	int family = destination->ss_family;

	if (family == AF_INET && opts->target4_given)
		return opts->target4;
	if (family == AF_INET6 && opts->target6_given)
		return opts->target6;
	return *destination;
}
