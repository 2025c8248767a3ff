/*
 * sockets: the small socket and clock helpers every mode shares.
 *
 * Holds setting options (IP_TRANSPARENT chosen by family here and nowhere
 * else), questions about an inherited fd, waiting on one fd with a
 * deadline, closing with a reset, asking the kernel whether an address is
 * ours, and opening the listening socket. Holds no policy: which socket to
 * open from which address is spoof.h, what to do with a connection is
 * connection.h.
 */
#ifndef SOCKETS_H
#define SOCKETS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Milliseconds on CLOCK_MONOTONIC: for deadlines, never for dates. */
int64_t monotonic_ms(void);

int set_nonblocking(int fd);
int set_int_option(int fd, int level, int name, int value);

/*
 * TCP keepalive: the first probe after idle_s seconds without traffic, then
 * one every interval_s; the connection fails (ETIMEDOUT) after probes
 * unanswered ones.
 */
int set_keepalive(int fd, int idle_s, int interval_s, int probes);
/* IP_TRANSPARENT or IPV6_TRANSPARENT, as family calls for. */
int set_transparent(int fd, int family);
/* Its name for a log line: "IP_TRANSPARENT" or "IPV6_TRANSPARENT". */
const char *transparent_option_name(int family);

bool is_socket_of_type(int fd, int type);
bool is_listening_socket(int fd);
bool is_connected_stream_socket(int fd);
/* An IPv4 or IPv6 socket: writing a log line there would reach a client. */
bool is_network_socket(int fd);

/*
 * Poll fd for events until deadline_ms (monotonic_ms() time), EINTR
 * retried. Returns 1 with *revents set, 0 at the deadline, -1 on error.
 */
int wait_for_fd(int fd, short events, int64_t deadline_ms, short *revents);

/* Close with a RST rather than a FIN, so the other side sees an abort. */
void close_with_reset(int fd);

/*
 * Is addr one of this host's own addresses (loopback included)? Returns 1,
 * 0, or -1 with errno set.
 */
int is_local_address(const struct sockaddr_storage *addr);

/*
 * A bound, non-blocking listening socket (SOCK_STREAM) or bound datagram
 * socket (SOCK_DGRAM) on addr, for start-up: any failure is one line and
 * exit 1. [::] takes IPv4 too.
 */
int open_listening_socket(const struct sockaddr_storage *addr, int type,
			  bool reuse_port, bool transparent);

#endif
