/*
 * toolkit: the code the test and benchmark tools share (see toolkit.h).
 */
#define _GNU_SOURCE
#include "toolkit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- messages and exits */

static void vwarn(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", toolkit_program_name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void toolkit_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarn(fmt, ap);
	va_end(ap);
}

void toolkit_die(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarn(fmt, ap);
	va_end(ap);
	exit(status);
}

void toolkit_usage(void)
{
	fputs(toolkit_synopsis, stderr);
	exit(2);
}

void toolkit_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarn(fmt, ap);
	va_end(ap);
	toolkit_usage();
}

/* ---- numbers and addresses */

int toolkit_parse_number(const char *text, uint64_t min, uint64_t max,
			 uint64_t *value)
{
	unsigned long long parsed;
	char *end;

	/* strtoull would take a sign or leading spaces; a number has neither.
	 */
	if (text[0] < '0' || text[0] > '9')
		return -1;
	errno = 0;
	parsed = strtoull(text, &end, 10);
	if (errno != 0 || *end != '\0' || parsed < min || parsed > max)
		return -1;
	*value = parsed;
	return 0;
}

int toolkit_parse_address(const char *text, struct sockaddr_storage *out,
			  socklen_t *out_len, int port_optional)
{
	char host[128];
	const char *host_start = text;
	const char *port_text = NULL;
	size_t host_len;
	uint64_t port = 0;

	memset(out, 0, sizeof(*out));
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close)
			return -1;
		host_start = text + 1;
		host_len = (size_t)(close - host_start);
		if (close[1] == ':')
			port_text = close + 2;
		else if (close[1] != '\0')
			return -1;
	} else {
		const char *colon = strchr(text, ':');
		/* Two colons or more: an IPv6 address without brackets or port.
		 */
		if (colon && !strchr(colon + 1, ':')) {
			host_len = (size_t)(colon - text);
			port_text = colon + 1;
		} else {
			host_len = strlen(text);
		}
	}
	if (host_len >= sizeof(host))
		return -1;
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	if (port_text ? toolkit_parse_number(port_text, 0, 65535, &port) < 0
		      : !port_optional)
		return -1;

	struct sockaddr_in *sin = (struct sockaddr_in *)out;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*out_len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*out_len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

void toolkit_format_address(const struct sockaddr_storage *address, char *out,
			    size_t capacity)
{
	char host[INET6_ADDRSTRLEN];

	if (address->ss_family == AF_INET) {
		const struct sockaddr_in *sin =
		    (const struct sockaddr_in *)address;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(out, capacity, "%s:%u", host, ntohs(sin->sin_port));
	} else if (address->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)address;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(out, capacity, "[%s]:%u", host,
			 ntohs(sin6->sin6_port));
	} else {
		snprintf(out, capacity, "unknown");
	}
}

socklen_t toolkit_address_length(const struct sockaddr_storage *address)
{
	return address->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					      : sizeof(struct sockaddr_in);
}

uint16_t toolkit_address_port(const struct sockaddr_storage *address)
{
	if (address->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)address)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)address)->sin6_port);
}

void toolkit_address_set_port(struct sockaddr_storage *address, uint16_t port)
{
	if (address->ss_family == AF_INET)
		((struct sockaddr_in *)address)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)address)->sin6_port = htons(port);
}

/* ---- checksum and the deterministic stream */

uint32_t toolkit_crc32_update(uint32_t crc, const unsigned char *data,
			      size_t len)
{
	static uint32_t table[256];

	if (table[1] == 0) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
	}
	crc = ~crc;
	for (size_t i = 0; i < len; i++)
		crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

void toolkit_stream_fill(uint64_t *state, unsigned char *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		*state = *state * 6364136223846793005u + 1442695040888963407u;
		out[i] = (unsigned char)(*state >> 56);
	}
}

/* ---- time, limits, sockets, epoll */

long long toolkit_now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

void toolkit_raise_fd_limit(void)
{
	struct rlimit limit;

	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
	    limit.rlim_cur < limit.rlim_max) {
		limit.rlim_cur = limit.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &limit);
	}
}

int toolkit_listen_socket(const char *text, const struct sockaddr *address,
			  socklen_t address_len, int type)
{
	int one = 1;
	int fd =
	    socket(address->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		toolkit_die(1, "socket %s: %s", text, strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		toolkit_die(1, "setsockopt SO_REUSEADDR: %s", strerror(errno));
	if (address->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		toolkit_die(1, "setsockopt IPV6_V6ONLY: %s", strerror(errno));
	if (bind(fd, address, address_len) < 0)
		toolkit_die(1, "bind %s: %s", text, strerror(errno));
	if (type == SOCK_STREAM && listen(fd, 4096) < 0)
		toolkit_die(1, "listen %s: %s", text, strerror(errno));
	return fd;
}

int toolkit_epoll_create(void)
{
	int epoll_fd = epoll_create1(EPOLL_CLOEXEC);

	if (epoll_fd < 0)
		toolkit_die(1, "epoll_create1: %s", strerror(errno));
	return epoll_fd;
}

void toolkit_epoll_ctl(int epoll_fd, int op, int fd, uint32_t events,
		       epoll_data_t data)
{
	struct epoll_event event = {.events = events, .data = data};

	if (epoll_ctl(epoll_fd, op, fd, &event) < 0)
		toolkit_die(1, "epoll_ctl: %s", strerror(errno));
}

int toolkit_epoll_wait(int epoll_fd, struct epoll_event *events, int max_events,
		       int timeout_ms)
{
	for (;;) {
		int n = epoll_wait(epoll_fd, events, max_events, timeout_ms);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			toolkit_die(1, "epoll_wait: %s", strerror(errno));
	}
}
