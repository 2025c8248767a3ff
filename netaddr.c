/*
 * netaddr: socket addresses as values (see netaddr.h).
 *
 * Pure: no sockets, no I/O, no globals; built with -Wconversion. Every part
 * of mmproxy that looks inside a sockaddr does it here, so IPv4-mapped
 * addresses are handled one way everywhere.
 */
#include "netaddr.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "text.h"

socklen_t netaddr_length(const struct sockaddr_storage *addr)
{
	return addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in);
}

const uint8_t *netaddr_bytes(const struct sockaddr_storage *addr, size_t *len)
{
	if (addr->ss_family == AF_INET6) {
		*len = 16;
		return ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
	}
	*len = 4;
	return (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr;
}

uint16_t netaddr_port(const struct sockaddr_storage *addr)
{
	if (addr->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
	if (addr->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)addr)->sin_port);
	return 0;
}

void netaddr_set_port(struct sockaddr_storage *addr, uint16_t port)
{
	if (addr->ss_family == AF_INET6)
		((struct sockaddr_in6 *)addr)->sin6_port = htons(port);
	else if (addr->ss_family == AF_INET)
		((struct sockaddr_in *)addr)->sin_port = htons(port);
}

bool netaddr_same(const struct sockaddr_storage *a,
		  const struct sockaddr_storage *b)
{
	size_t a_len, b_len;

	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family != AF_INET && a->ss_family != AF_INET6)
		return true; /* AF_UNSPEC: no address, e.g. a UDP flow without client */
	const uint8_t *a_bytes = netaddr_bytes(a, &a_len);
	const uint8_t *b_bytes = netaddr_bytes(b, &b_len);
	return netaddr_port(a) == netaddr_port(b) &&
	       memcmp(a_bytes, b_bytes, a_len) == 0;
}

void netaddr_unmap(struct sockaddr_storage *addr)
{
	const struct sockaddr_in6 *in6 = (const void *)addr;

	if (addr->ss_family != AF_INET6 ||
	    !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
		return;
	struct sockaddr_in in = {.sin_family = AF_INET,
				 .sin_port = in6->sin6_port};
	memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
	memset(addr, 0, sizeof *addr);
	memcpy(addr, &in, sizeof in);
}

const char *netaddr_format_host(const struct sockaddr_storage *addr, char *out,
				size_t size)
{
	struct sockaddr_storage shown = *addr;
	size_t len;

	netaddr_unmap(&shown);
	if (shown.ss_family != AF_INET && shown.ss_family != AF_INET6) {
		snprintf(out, size, "-");
		return out;
	}
	const uint8_t *bytes = netaddr_bytes(&shown, &len);
	if (inet_ntop(shown.ss_family, bytes, out, (socklen_t)size) == NULL)
		snprintf(out, size, "-");
	return out;
}

const char *netaddr_format(const struct sockaddr_storage *addr, char *out,
			   size_t size)
{
	struct sockaddr_storage shown = *addr;
	char host[INET6_ADDRSTRLEN];

	netaddr_unmap(&shown);
	if (shown.ss_family != AF_INET && shown.ss_family != AF_INET6) {
		snprintf(out, size, "-");
		return out;
	}
	netaddr_format_host(&shown, host, sizeof host);
	snprintf(out, size, shown.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
		 host, netaddr_port(&shown));
	return out;
}

/* Splits "host:port" or "[host]:port"; host_out gets the host text. */
static const char *split_host_port(const char *text, char *host_out,
				   size_t host_size)
{
	const char *host = text, *after_host;

	if (text[0] == '[') {
		host = text + 1;
		after_host = strchr(text, ']');
		if (after_host == NULL || after_host[1] != ':')
			return NULL;
	} else {
		after_host = strrchr(text, ':');
		if (after_host == NULL)
			return NULL;
	}
	size_t host_len = (size_t)(after_host - host);
	if (host_len >= host_size)
		return NULL;
	memcpy(host_out, host, host_len);
	host_out[host_len] = '\0';
	return text[0] == '[' ? after_host + 2 : after_host + 1;
}

int netaddr_parse(const char *text, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	unsigned long port;
	const char *port_text = split_host_port(text, host, sizeof host);

	memset(out, 0, sizeof *out);
	if (port_text == NULL || !text_parse_number(port_text, 0, 65535, &port))
		return -1;
	struct sockaddr_in *in = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
	if (text[0] != '[' &&
	    (host[0] == '\0' || inet_pton(AF_INET, host, &in->sin_addr) == 1)) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (text[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	memset(out, 0, sizeof *out);
	return -1;
}

int netaddr_parse_host(const char *text, struct sockaddr_storage *out)
{
	struct sockaddr_in *in = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		return 0;
	}
	memset(out, 0, sizeof *out);
	return -1;
}

bool netaddr_is_loopback(const struct sockaddr_storage *addr)
{
	const struct sockaddr_in *in = (const void *)addr;
	const struct sockaddr_in6 *in6 = (const void *)addr;

	if (addr->ss_family == AF_INET)
		return (ntohl(in->sin_addr.s_addr) >> 24) == IN_LOOPBACKNET;
	if (addr->ss_family != AF_INET6)
		return false;
	if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
		return true;
	return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) &&
	       in6->sin6_addr.s6_addr[12] == IN_LOOPBACKNET;
}
