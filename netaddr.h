/*
 * netaddr: IPv4 and IPv6 socket addresses as values, pure.
 *
 * Holds their length, bytes, port, comparison, the one IPv4-mapped
 * unmapping, the one text format for log lines and the one parser for
 * ADDR:PORT. Holds no sockets and no I/O: asking the kernel about an address
 * (is it ours?) is in sockets.h.
 */
#ifndef NETADDR_H
#define NETADDR_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Room for "[v6-address]:port" and its NUL. */
#define NETADDR_TEXT_SIZE (INET6_ADDRSTRLEN + 10)

/* The length to pass with addr to bind(), connect() and the like. */
socklen_t netaddr_length(const struct sockaddr_storage *addr);

/* The address itself, network order: 16 bytes for AF_INET6, else 4. */
const uint8_t *netaddr_bytes(const struct sockaddr_storage *addr, size_t *len);

/* The port, host order; 0 for a family without one. */
uint16_t netaddr_port(const struct sockaddr_storage *addr);
void netaddr_set_port(struct sockaddr_storage *addr, uint16_t port);

/* Same family, address and port; two AF_UNSPEC addresses are the same. */
bool netaddr_same(const struct sockaddr_storage *a,
		  const struct sockaddr_storage *b);

/* ::ffff:a.b.c.d becomes the AF_INET address it stands for; else unchanged. */
void netaddr_unmap(struct sockaddr_storage *addr);

/* An address of the loopback network: 127.0.0.0/8, ::1, ::ffff:127.x.y.z. */
bool netaddr_is_loopback(const struct sockaddr_storage *addr);

/* "1.2.3.4:80", "[::1]:80", IPv4-mapped shown as IPv4; "-" for no address. */
const char *netaddr_format(const struct sockaddr_storage *addr, char *out,
			   size_t size);

/* The address alone, without the port; "-" for no address. */
const char *netaddr_format_host(const struct sockaddr_storage *addr, char *out,
				size_t size);

/*
 * "1.2.3.4:80", "[2001:db8::1]:80" or ":80" (any IPv4 address) into *out.
 * Numeric only: a name lookup at start would make mmproxy depend on DNS.
 * Returns 0, or -1 when text is none of these.
 */
int netaddr_parse(const char *text, struct sockaddr_storage *out);

/* A bare numeric IPv4 or IPv6 address, port 0. Returns 0 or -1. */
int netaddr_parse_host(const char *text, struct sockaddr_storage *out);

#endif
