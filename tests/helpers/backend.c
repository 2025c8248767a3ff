/*
 * backend: the real server behind mmproxy in the end-to-end tests.
 *
 * It listens on any number of TCP and UDP addresses (IPv4 and IPv6) and
 * writes down what each peer looked like and exactly which bytes it sent, so
 * a test can check that mmproxy spoofed the right client address and moved
 * every byte intact.
 *
 * Usage:
 *   backend [-t ADDR:PORT]... [-u ADDR:PORT]... -o LOGFILE [-A ACCEPTLOG]
 *           [-m echo|sink|close|hold] [-r TEXT] [-R BYTES] [-S SEED]
 *
 *   -t ADDR:PORT  listen on TCP (IPv6 as [::1]:9000); repeatable
 *   -u ADDR:PORT  answer UDP datagrams; repeatable
 *   -o LOGFILE    one line per TCP connection when it ends, one per datagram
 *   -A ACCEPTLOG  one line per TCP connection as soon as it is accepted
 *                 ("accept peer=... local=..."), to count live connections
 *   -m MODE       what to do with each TCP connection (default echo):
 *                 echo   send every byte back; at the peer's EOF flush, shut
 *                        down writing and close
 *                 sink   read and discard until EOF, then send the reply
 *                        (-r and/or -R), shut down writing and close
 *                 close  close at once, without reading
 *                 hold   read and discard; at EOF log the line but keep the
 *                        socket open until the peer resets (then a second
 *                        line, end=reset, says when) or we are killed
 *   -r TEXT       sink reply text (sent as is)
 *   -R BYTES      sink reply: BYTES bytes of the deterministic stream
 *   -S SEED       seed of that stream (default 2)
 *
 * TCP log line (one write(2) on an O_APPEND file, so lines are whole):
 *   peer=192.0.2.10:40000 local=127.0.0.1:9000 bytes=N crc=XXXXXXXX \
 *   sent=M crc_sent=YYYYYYYY end=eof|reset|closed
 * (one line; split here only to fit).
 * bytes/crc: what the peer sent (CRC-32 as zlib computes it, over all bytes);
 * sent/crc_sent: what we sent back. end=eof: the peer closed its side;
 * reset: ECONNRESET/EPIPE; closed: close mode.
 * UDP log line, and every datagram is echoed back to its source:
 *   udp peer=ADDR:PORT local=ADDR:PORT bytes=N crc=XXXXXXXX
 *
 * The process runs until killed. Non-blocking sockets and one epoll loop, so
 * thousands of connections at once are fine (RLIMIT_NOFILE is raised to its
 * hard limit). Exit status 2: bad usage; 1: a listening socket failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "toolkit.h"

#define MAX_LISTENERS 32
#define BUFFER_SIZE   65536

enum mode { MODE_ECHO, MODE_SINK, MODE_CLOSE, MODE_HOLD };

struct options {
	const char *tcp_addrs[MAX_LISTENERS];
	size_t tcp_count;
	const char *udp_addrs[MAX_LISTENERS];
	size_t udp_count;
	const char *log_path;
	const char *accept_log_path;
	enum mode mode;
	const char *reply_text;
	uint64_t reply_bytes;
	uint64_t seed;
};

/* The kind of thing an epoll event points at. */
enum endpoint_kind { KIND_TCP_LISTENER, KIND_UDP, KIND_CONNECTION };

struct endpoint {
	enum endpoint_kind kind;
	int fd;
};

struct connection {
	struct endpoint endpoint; /* first, so an endpoint pointer is one */
	char peer[64];
	char local[64];
	uint64_t bytes_in;
	uint64_t bytes_out;
	uint32_t crc_in;
	uint32_t crc_out;
	int read_eof;
	int replying;	 /* sink: EOF seen, sending the reply */
	int logged;	 /* hold: the end line is written */
	uint32_t events; /* what epoll currently waits for */
	size_t reply_text_pos;
	uint64_t reply_left;
	uint64_t stream_state;
	size_t out_start, out_end; /* pending output in out[] */
	unsigned char out[BUFFER_SIZE];
};

static struct options options = {.mode = MODE_ECHO, .seed = 2};
static int log_fd = -1;
static int accept_log_fd = -1;
static int epoll_fd = -1;

const char toolkit_program_name[] = "backend";
const char toolkit_synopsis[] =
    "usage: backend [-t ADDR:PORT]... [-u ADDR:PORT]... -o LOGFILE "
    "[-A ACCEPTLOG]\n"
    "               [-m echo|sink|close|hold] [-r TEXT] [-R BYTES] "
    "[-S SEED]\n";

/* ---- addresses */

static void format_local(int fd, char *out, size_t capacity)
{
	struct sockaddr_storage address;
	socklen_t len = sizeof(address);

	if (getsockname(fd, (struct sockaddr *)&address, &len) < 0)
		address.ss_family = AF_UNSPEC;
	toolkit_format_address(&address, out, capacity);
}

/* ---- logging: one write per line on an O_APPEND file */

static void write_line(int fd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void write_line(int fd, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int len;

	if (fd < 0)
		return;
	va_start(ap, fmt);
	len = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if ((size_t)len > sizeof(line) - 2)
		len = (int)sizeof(line) - 2;
	line[len++] = '\n';
	while (write(fd, line, (size_t)len) < 0 && errno == EINTR)
		;
}

static int open_log(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		toolkit_die(2, "%s: %s", path, strerror(errno));
	return fd;
}

/* ---- TCP connections */

static void connection_end(struct connection *connection, const char *reason)
{
	if (!connection->logged)
		write_line(log_fd,
			   "peer=%s local=%s bytes=%" PRIu64 " crc=%08" PRIx32
			   " sent=%" PRIu64 " crc_sent=%08" PRIx32 " end=%s",
			   connection->peer, connection->local,
			   connection->bytes_in, connection->crc_in,
			   connection->bytes_out, connection->crc_out, reason);
	close(connection->endpoint.fd);
	free(connection);
}

static void connection_set_events(struct connection *connection,
				  uint32_t events)
{
	if (events == connection->events)
		return;
	toolkit_epoll_ctl(epoll_fd, EPOLL_CTL_MOD, connection->endpoint.fd,
			  events, (epoll_data_t){.ptr = connection});
	connection->events = events;
}

static int is_reset_error(int error)
{
	return error == ECONNRESET || error == EPIPE || error == ETIMEDOUT;
}

/* After a failed recv or send: 0 to poll again, -1 when it was ended. */
static int connection_io_failed(struct connection *connection)
{
	if (errno == EINTR || errno == EAGAIN)
		return 0;
	connection_end(connection, is_reset_error(errno) ? "reset" : "error");
	return -1;
}

/* Fill out[] with more sink reply bytes, if any are left. */
static void reply_refill(struct connection *connection)
{
	size_t room = sizeof(connection->out);

	connection->out_start = connection->out_end = 0;
	if (options.reply_text) {
		size_t left =
		    strlen(options.reply_text) - connection->reply_text_pos;
		size_t n = left < room ? left : room;
		memcpy(connection->out,
		       options.reply_text + connection->reply_text_pos, n);
		connection->reply_text_pos += n;
		connection->out_end = n;
		room -= n;
	}
	if (room && connection->reply_left) {
		size_t n = connection->reply_left < room
			       ? (size_t)connection->reply_left
			       : room;
		toolkit_stream_fill(&connection->stream_state,
				    connection->out + connection->out_end, n);
		connection->reply_left -= n;
		connection->out_end += n;
	}
}

/* Returns 0 when the connection is still open, -1 when it was ended. */
static int connection_read(struct connection *connection)
{
	unsigned char discard[BUFFER_SIZE];
	unsigned char *buffer = discard;
	size_t room = sizeof(discard);
	ssize_t n;

	if (connection->read_eof)
		return 0;
	if (options.mode == MODE_ECHO) {
		if (connection->out_start == connection->out_end)
			connection->out_start = connection->out_end = 0;
		buffer = connection->out + connection->out_end;
		room = sizeof(connection->out) - connection->out_end;
		if (room == 0)
			return 0;
	}
	n = recv(connection->endpoint.fd, buffer, room, 0);
	if (n < 0)
		return connection_io_failed(connection);
	if (n == 0) {
		connection->read_eof = 1;
		if (options.mode == MODE_SINK) {
			connection->replying = 1;
			reply_refill(connection);
		}
		return 0;
	}
	connection->crc_in =
	    toolkit_crc32_update(connection->crc_in, buffer, (size_t)n);
	connection->bytes_in += (uint64_t)n;
	if (options.mode == MODE_ECHO)
		connection->out_end += (size_t)n;
	return 0;
}

static int connection_write(struct connection *connection)
{
	size_t pending = connection->out_end - connection->out_start;
	ssize_t n;

	if (pending == 0)
		return 0;
	n = send(connection->endpoint.fd,
		 connection->out + connection->out_start, pending,
		 MSG_NOSIGNAL);
	if (n < 0)
		return connection_io_failed(connection);
	connection->crc_out = toolkit_crc32_update(
	    connection->crc_out, connection->out + connection->out_start,
	    (size_t)n);
	connection->bytes_out += (uint64_t)n;
	connection->out_start += (size_t)n;
	if (connection->out_start == connection->out_end) {
		connection->out_start = connection->out_end = 0;
		if (connection->replying)
			reply_refill(connection);
	}
	return 0;
}

/* After any I/O: finish the connection or choose what to wait for next. */
static void connection_step(struct connection *connection)
{
	int pending = connection->out_end > connection->out_start;
	uint32_t events = 0;

	if (connection->read_eof && !pending) {
		if (options.mode == MODE_HOLD) {
			if (!connection->logged) {
				write_line(log_fd,
					   "peer=%s local=%s bytes=%" PRIu64
					   " crc=%08" PRIx32
					   " sent=0 crc_sent=00000000 end=eof",
					   connection->peer, connection->local,
					   connection->bytes_in,
					   connection->crc_in);
				connection->logged = 1;
			}
			connection_set_events(connection,
					      0); /* HUP/ERR still come */
			return;
		}
		/* echo and sink: every byte is out; our side closes too. */
		shutdown(connection->endpoint.fd, SHUT_WR);
		connection_end(connection, "eof");
		return;
	}
	if (!connection->read_eof &&
	    (options.mode != MODE_ECHO ||
	     connection->out_end < sizeof(connection->out)))
		events |= EPOLLIN;
	if (pending)
		events |= EPOLLOUT;
	connection_set_events(connection, events);
}

static void connection_event(struct connection *connection, uint32_t events)
{
	if ((events & (EPOLLHUP | EPOLLERR)) && options.mode == MODE_HOLD &&
	    connection->read_eof) {
		connection->logged = 0; /* the second line: the reset */
		connection_end(connection, "reset");
		return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		if (connection_read(connection) < 0)
			return;
	if (events & (EPOLLOUT | EPOLLERR))
		if (connection_write(connection) < 0)
			return;
	connection_step(connection);
}

static void accept_connections(int listen_fd)
{
	for (;;) {
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof(peer);
		int fd = accept4(listen_fd, (struct sockaddr *)&peer, &peer_len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == ECONNABORTED)
				continue;
			toolkit_warn("accept: %s", strerror(errno));
			return;
		}
		struct connection *connection = calloc(1, sizeof(*connection));
		if (!connection)
			toolkit_die(1, "out of memory");
		connection->endpoint.kind = KIND_CONNECTION;
		connection->endpoint.fd = fd;
		connection->reply_left = options.reply_bytes;
		connection->stream_state = options.seed;
		toolkit_format_address(&peer, connection->peer,
				       sizeof(connection->peer));
		format_local(fd, connection->local, sizeof(connection->local));
		write_line(accept_log_fd, "accept peer=%s local=%s",
			   connection->peer, connection->local);
		if (options.mode == MODE_CLOSE) {
			connection_end(connection, "closed");
			continue;
		}
		toolkit_epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, EPOLLIN,
				  (epoll_data_t){.ptr = connection});
		connection->events = EPOLLIN;
	}
}

/* ---- UDP */

static void udp_event(int fd)
{
	unsigned char datagram[65536];
	char peer_text[64], local_text[64];

	for (;;) {
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof(peer);
		ssize_t n = recvfrom(fd, datagram, sizeof(datagram), 0,
				     (struct sockaddr *)&peer, &peer_len);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				toolkit_warn("recvfrom: %s", strerror(errno));
			return;
		}
		toolkit_format_address(&peer, peer_text, sizeof(peer_text));
		format_local(fd, local_text, sizeof(local_text));
		write_line(log_fd,
			   "udp peer=%s local=%s bytes=%zd crc=%08" PRIx32,
			   peer_text, local_text, n,
			   toolkit_crc32_update(0, datagram, (size_t)n));
		if (sendto(fd, datagram, (size_t)n, 0, (struct sockaddr *)&peer,
			   peer_len) < 0)
			toolkit_warn("sendto %s: %s", peer_text,
				     strerror(errno));
	}
}

/* ---- start-up */

static void add_socket(const char *text, int type)
{
	struct sockaddr_storage address;
	socklen_t address_len;

	if (toolkit_parse_address(text, &address, &address_len, 0) < 0)
		toolkit_die(2, "%s: expected ADDR:PORT or [ADDR]:PORT", text);
	int fd = toolkit_listen_socket(text, (struct sockaddr *)&address,
				       address_len, type);
	struct endpoint *endpoint = malloc(sizeof(*endpoint));
	if (!endpoint)
		toolkit_die(1, "out of memory");
	endpoint->kind = type == SOCK_STREAM ? KIND_TCP_LISTENER : KIND_UDP;
	endpoint->fd = fd;
	toolkit_epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, EPOLLIN,
			  (epoll_data_t){.ptr = endpoint});
}

static uint64_t parse_number(const char *option, const char *text)
{
	uint64_t value;

	if (toolkit_parse_number(text, 0, UINT64_MAX, &value) < 0)
		toolkit_die(2, "%s: \"%s\" is not a number", option, text);
	return value;
}

static void parse_options(int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "t:u:o:A:m:r:R:S:h")) != -1) {
		switch (c) {
		case 't':
			if (options.tcp_count == MAX_LISTENERS)
				toolkit_die(2, "too many -t");
			options.tcp_addrs[options.tcp_count++] = optarg;
			break;
		case 'u':
			if (options.udp_count == MAX_LISTENERS)
				toolkit_die(2, "too many -u");
			options.udp_addrs[options.udp_count++] = optarg;
			break;
		case 'o':
			options.log_path = optarg;
			break;
		case 'A':
			options.accept_log_path = optarg;
			break;
		case 'm':
			if (strcmp(optarg, "echo") == 0)
				options.mode = MODE_ECHO;
			else if (strcmp(optarg, "sink") == 0)
				options.mode = MODE_SINK;
			else if (strcmp(optarg, "close") == 0)
				options.mode = MODE_CLOSE;
			else if (strcmp(optarg, "hold") == 0)
				options.mode = MODE_HOLD;
			else
				toolkit_die(
				    2,
				    "-m: \"%s\": expected echo, sink, close or "
				    "hold",
				    optarg);
			break;
		case 'r':
			options.reply_text = optarg;
			break;
		case 'R':
			options.reply_bytes = parse_number("-R", optarg);
			break;
		case 'S':
			options.seed = parse_number("-S", optarg);
			break;
		default:
			toolkit_usage();
		}
	}
	if (optind != argc || !options.log_path ||
	    options.tcp_count + options.udp_count == 0)
		toolkit_usage();
}

int main(int argc, char **argv)
{
	parse_options(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	toolkit_raise_fd_limit();
	log_fd = open_log(options.log_path);
	if (options.accept_log_path)
		accept_log_fd = open_log(options.accept_log_path);
	epoll_fd = toolkit_epoll_create();
	for (size_t i = 0; i < options.tcp_count; i++)
		add_socket(options.tcp_addrs[i], SOCK_STREAM);
	for (size_t i = 0; i < options.udp_count; i++)
		add_socket(options.udp_addrs[i], SOCK_DGRAM);

	for (;;) {
		struct epoll_event events[256];
		int n = toolkit_epoll_wait(epoll_fd, events, 256, -1);
		for (int i = 0; i < n; i++) {
			struct endpoint *endpoint = events[i].data.ptr;
			switch (endpoint->kind) {
			case KIND_TCP_LISTENER:
				accept_connections(endpoint->fd);
				break;
			case KIND_UDP:
				udp_event(endpoint->fd);
				break;
			case KIND_CONNECTION:
				connection_event((struct connection *)endpoint,
						 events[i].events);
				break;
			}
		}
	}
}
