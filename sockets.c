/*
 * sockets: socket and clock helpers (see sockets.h).
 *
 * Each function does one system-level job and reports failure to its
 * caller, except open_listening_socket(), which is start-up only and stops
 * mmproxy with one line. Nothing here logs per connection or knows the
 * options.
 */
#define _GNU_SOURCE
#include "sockets.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "netaddr.h"

int64_t monotonic_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

int set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int set_int_option(int fd, int level, int name, int value)
{
	return setsockopt(fd, level, name, &value, sizeof value);
}

int set_keepalive(int fd, int idle_s, int interval_s, int probes)
{
	if (set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, 1) != 0 ||
	    set_int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s) != 0 ||
	    set_int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL, interval_s) != 0)
		return -1;
	return set_int_option(fd, IPPROTO_TCP, TCP_KEEPCNT, probes);
}

int set_transparent(int fd, int family)
{
	if (family == AF_INET6)
		return set_int_option(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 1);
	return set_int_option(fd, IPPROTO_IP, IP_TRANSPARENT, 1);
}

const char *transparent_option_name(int family)
{
	return family == AF_INET6 ? "IPV6_TRANSPARENT" : "IP_TRANSPARENT";
}

bool is_socket_of_type(int fd, int type)
{
	int actual;
	socklen_t len = sizeof actual;

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &actual, &len) == 0 &&
	       actual == type;
}

bool is_listening_socket(int fd)
{
	int listening;
	socklen_t len = sizeof listening;

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) ==
		       0 &&
	       listening;
}

bool is_connected_stream_socket(int fd)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof peer;

	return is_socket_of_type(fd, SOCK_STREAM) && !is_listening_socket(fd) &&
	       getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
}

bool is_network_socket(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof local;

	if (getsockname(fd, (struct sockaddr *)&local, &len) != 0)
		return false;
	return local.ss_family == AF_INET || local.ss_family == AF_INET6;
}

int wait_for_fd(int fd, short events, int64_t deadline_ms, short *revents)
{
	for (;;) {
		int64_t remaining = deadline_ms - monotonic_ms();
		if (remaining <= 0)
			return 0;
		struct pollfd pfd = {.fd = fd, .events = events};
		int ready = poll(&pfd, 1, (int)remaining);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready > 0)
			*revents = pfd.revents;
		return ready;
	}
}

void close_with_reset(int fd)
{
	struct linger linger = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
	close(fd);
}

/*
 * Ask the routing table, as a connect() of a UDP socket does (no packet is
 * sent): the route to a local address picks that very address as the
 * source. Loopback addresses are all local, whatever source their route
 * picks. A bind() probe would be fooled by net.ipv4.ip_nonlocal_bind.
 */
int is_local_address(const struct sockaddr_storage *addr)
{
	struct sockaddr_storage source;
	socklen_t len = sizeof source;

	if (netaddr_is_loopback(addr))
		return 1;
	int fd = socket(addr->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)addr, netaddr_length(addr)) !=
		    0 ||
	    getsockname(fd, (struct sockaddr *)&source, &len) != 0) {
		int saved_errno = errno;
		close(fd);
		errno = saved_errno;
		/* No route to it at all: certainly not one of ours. */
		return errno == ENETUNREACH || errno == EHOSTUNREACH ? 0 : -1;
	}
	close(fd);
	size_t addr_len, source_len;
	const uint8_t *bytes = netaddr_bytes(addr, &addr_len);
	const uint8_t *source_bytes = netaddr_bytes(&source, &source_len);
	return addr_len == source_len &&
	       memcmp(bytes, source_bytes, addr_len) == 0;
}

int open_listening_socket(const struct sockaddr_storage *addr, int type,
			  bool reuse_port, bool transparent)
{
	char text[NETADDR_TEXT_SIZE];
	int fd = socket(addr->ss_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	netaddr_format(addr, text, sizeof text);
	if (fd < 0)
		die(EXIT_SYSTEM, "socket for %s: %s", text, strerror(errno));
	if (set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0 ||
	    (reuse_port &&
	     set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1) != 0))
		die(EXIT_SYSTEM, "setsockopt on %s: %s", text, strerror(errno));
	/* [::] takes IPv4 too, whatever net.ipv6.bindv6only says. */
	if (addr->ss_family == AF_INET6 &&
	    set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0) != 0)
		die(EXIT_SYSTEM, "IPV6_V6ONLY off on %s: %s", text,
		    strerror(errno));
	if (transparent && set_transparent(fd, addr->ss_family) != 0)
		die(EXIT_SYSTEM,
		    "--listen-transparent on %s: %s (IP_TRANSPARENT "
		    "needs CAP_NET_ADMIN)",
		    text, strerror(errno));
	if (bind(fd, (const struct sockaddr *)addr, netaddr_length(addr)) != 0)
		die(EXIT_SYSTEM, "bind %s: %s", text, strerror(errno));
	if (type == SOCK_STREAM && listen(fd, SOMAXCONN) != 0)
		die(EXIT_SYSTEM, "listen %s: %s", text, strerror(errno));
	return fd;
}
