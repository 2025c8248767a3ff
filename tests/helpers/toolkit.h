/*
 * toolkit: what the test tools (backend, ppclient, udpclient) and the
 * benchmark tools (echo, loadgen) all need, written once: messages and
 * exits, numbers and addresses from the command line, the checksum and the
 * deterministic byte stream that backend and ppclient compare, clocks, and
 * the epoll and listening-socket set-up of the servers.
 *
 * Each tool defines toolkit_program_name (the "NAME: " of every message)
 * and toolkit_synopsis (its usage text, ending in a newline).
 */
#ifndef TOOLKIT_H
#define TOOLKIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>

extern const char toolkit_program_name[];
extern const char toolkit_synopsis[];

/* ---- messages and exits */

/* "NAME: message" on stderr. */
void toolkit_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "NAME: message" on stderr, then exit(status). */
void toolkit_die(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
/* The synopsis on stderr, then exit(2). */
void toolkit_usage(void) __attribute__((noreturn));
/* "NAME: message", then the synopsis, then exit(2). */
void toolkit_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* ---- numbers and addresses */

/* Decimal digits only (no sign, no space), min..max. 0, or -1. */
int toolkit_parse_number(const char *text, uint64_t min, uint64_t max,
			 uint64_t *value);
/*
 * "1.2.3.4:5" or "[::1]:5"; with port_optional also "1.2.3.4", "[::1]" and
 * "::1". Numeric addresses only. 0, or -1.
 */
int toolkit_parse_address(const char *text, struct sockaddr_storage *out,
			  socklen_t *out_len, int port_optional);
/* "1.2.3.4:5", "[::1]:5", or "unknown" for another family. */
void toolkit_format_address(const struct sockaddr_storage *address, char *out,
			    size_t capacity);
socklen_t toolkit_address_length(const struct sockaddr_storage *address);
uint16_t toolkit_address_port(const struct sockaddr_storage *address);
void toolkit_address_set_port(struct sockaddr_storage *address, uint16_t port);

/* ---- checksum and the deterministic stream */

/* CRC-32 as zlib computes it; start with 0, feed every chunk in order. */
uint32_t toolkit_crc32_update(uint32_t crc, const unsigned char *data,
			      size_t len);
/* The next len bytes of the stream whose state is *state (a 64-bit LCG). */
void toolkit_stream_fill(uint64_t *state, unsigned char *out, size_t len);

/* ---- time, limits, sockets, epoll (each dies with status 1 on failure) */

long long toolkit_now_ms(void);
/* RLIMIT_NOFILE up to its hard limit, best effort. */
void toolkit_raise_fd_limit(void);
/* A non-blocking socket bound to address (SO_REUSEADDR, IPv6 only on an
 * IPv6 address), listening when type is SOCK_STREAM. text names it. */
int toolkit_listen_socket(const char *text, const struct sockaddr *address,
			  socklen_t address_len, int type);
int toolkit_epoll_create(void);
void toolkit_epoll_ctl(int epoll_fd, int op, int fd, uint32_t events,
		       epoll_data_t data);
/* epoll_wait, retried on EINTR. */
int toolkit_epoll_wait(int epoll_fd, struct epoll_event *events, int max_events,
		       int timeout_ms);

#endif
