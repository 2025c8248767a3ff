/*
 * echo: the benchmark's backend (see tests/bench/README.md).
 *
 *   echo [--echo ADDR:PORT] [--sink ADDR:PORT] [--udp ADDR:PORT]
 *
 * One process, one level-triggered epoll loop serving any of:
 *   --echo  TCP: every byte read is written back; EOF after the echo of
 *           everything read closes the connection.
 *   --sink  TCP: bytes read are discarded.
 *   --udp   UDP: the first payload byte says what to do (loadgen.c):
 *           'e' echo the datagram, 's' count it, '!' a control request:
 *           "!reset" zeroes the counters ("!ok"), "!stat" answers
 *           "!stat COUNT BYTES", "!ping" answers "!ping".
 * Buffers are allocated per connection at accept (echo only), never per
 * message. Runs until killed; errors go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "toolkit.h"

#define ECHO_BUF_LEN	  65536
#define SINK_BUF_LEN	  (256 * 1024)
#define UDP_BATCH	  64
#define UDP_BUF_LEN	  65536
#define MAX_EVENTS	  256
#define ACCEPTS_PER_EVENT 64

enum endpoint_kind {
	KIND_ECHO_LISTENER,
	KIND_SINK_LISTENER,
	KIND_UDP,
	KIND_CONN
};

/* Every epoll registration points at one of these. */
struct endpoint {
	enum endpoint_kind kind;
	int fd;
};

struct conn {
	struct endpoint endpoint; /* first: events point here */
	int is_sink;
	uint8_t *buf; /* echo only: what is read, until written back */
	size_t pending_off;
	size_t pending_len;
};

struct udp_state {
	struct endpoint endpoint;
	unsigned long long count;
	unsigned long long bytes;
	struct mmsghdr in[UDP_BATCH];
	struct mmsghdr out[UDP_BATCH];
	struct iovec in_iov[UDP_BATCH];
	struct iovec out_iov[UDP_BATCH];
	struct sockaddr_in from[UDP_BATCH];
	uint8_t bufs[UDP_BATCH][UDP_BUF_LEN];
	char replies[UDP_BATCH][64];
};

static int epoll_fd;
static uint8_t sink_buf[SINK_BUF_LEN];

const char toolkit_program_name[] = "echo";
const char toolkit_synopsis[] =
    "usage: echo [--echo ADDR:PORT] [--sink ADDR:PORT] [--udp ADDR:PORT]\n";

static void parse_ipv4_port(const char *option, const char *text,
			    struct sockaddr_in *out)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(text, ':');
	uint64_t port;
	size_t host_len;

	if (colon == NULL || (size_t)(colon - text) >= sizeof(host))
		toolkit_usage_error("%s \"%s\": expected IPV4ADDR:PORT", option,
				    text);
	host_len = (size_t)(colon - text);
	memcpy(host, text, host_len);
	host[host_len] = '\0';
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
		toolkit_usage_error("%s \"%s\": not an IPv4 address", option,
				    text);
	if (toolkit_parse_number(colon + 1, 1, 65535, &port) < 0)
		toolkit_usage_error("%s \"%s\": port not 1-65535", option,
				    text);
	out->sin_port = htons((uint16_t)port);
}

static void watch(struct endpoint *endpoint, uint32_t events, int op)
{
	toolkit_epoll_ctl(epoll_fd, op, endpoint->fd, events,
			  (epoll_data_t){.ptr = endpoint});
}

static int open_socket(const char *option, const char *text, int type)
{
	struct sockaddr_in addr;

	parse_ipv4_port(option, text, &addr);
	return toolkit_listen_socket(text, (struct sockaddr *)&addr,
				     sizeof(addr), type);
}

/* ---- TCP */

static void conn_close(struct conn *conn)
{
	close(conn->endpoint.fd);
	free(conn->buf);
	free(conn);
}

static void accept_connections(struct endpoint *listener)
{
	int i, fd, one = 1;

	for (i = 0; i < ACCEPTS_PER_EVENT; i++) {
		struct conn *conn;

		fd = accept4(listener->fd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				toolkit_warn("accept: %s", strerror(errno));
			return;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				 sizeof(one));
		conn = calloc(1, sizeof(*conn));
		if (conn == NULL)
			toolkit_die(1, "out of memory");
		conn->endpoint.kind = KIND_CONN;
		conn->endpoint.fd = fd;
		conn->is_sink = listener->kind == KIND_SINK_LISTENER;
		if (!conn->is_sink) {
			conn->buf = malloc(ECHO_BUF_LEN);
			if (conn->buf == NULL)
				toolkit_die(1, "out of memory");
		}
		watch(&conn->endpoint, EPOLLIN, EPOLL_CTL_ADD);
	}
}

/* Returns 0 when the connection was closed. */
static int flush_pending(struct conn *conn)
{
	ssize_t n = write(conn->endpoint.fd, conn->buf + conn->pending_off,
			  conn->pending_len);

	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 1;
		conn_close(conn);
		return 0;
	}
	conn->pending_off += (size_t)n;
	conn->pending_len -= (size_t)n;
	return 1;
}

/*
 * Level-triggered: one read per event keeps connections fair. While an
 * echo is pending, reading stops (backpressure) and only EPOLLOUT is
 * watched.
 */
static void conn_event(struct conn *conn, uint32_t events)
{
	ssize_t n;

	if (conn->pending_len > 0) {
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ||
		    !flush_pending(conn))
			return;
		if (conn->pending_len == 0)
			watch(&conn->endpoint, EPOLLIN, EPOLL_CTL_MOD);
		return;
	}
	if (conn->is_sink)
		n = read(conn->endpoint.fd, sink_buf, SINK_BUF_LEN);
	else
		n = read(conn->endpoint.fd, conn->buf, ECHO_BUF_LEN);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* EOF with nothing pending: the echo is complete. */
		conn_close(conn);
		return;
	}
	if (conn->is_sink)
		return;
	conn->pending_off = 0;
	conn->pending_len = (size_t)n;
	if (!flush_pending(conn))
		return;
	if (conn->pending_len > 0)
		watch(&conn->endpoint, EPOLLOUT, EPOLL_CTL_MOD);
}

/* ---- UDP */

static size_t control_reply(struct udp_state *udp, const uint8_t *request,
			    size_t len, char *reply, size_t capacity)
{
	int n;

	if (len == 6 && memcmp(request, "!reset", 6) == 0) {
		udp->count = 0;
		udp->bytes = 0;
		n = snprintf(reply, capacity, "!ok");
	} else if (len == 5 && memcmp(request, "!stat", 5) == 0) {
		n = snprintf(reply, capacity, "!stat %llu %llu", udp->count,
			     udp->bytes);
	} else if (len == 5 && memcmp(request, "!ping", 5) == 0) {
		n = snprintf(reply, capacity, "!ping");
	} else {
		return 0;
	}
	return n > 0 && (size_t)n < capacity ? (size_t)n : 0;
}

static void udp_event(struct udp_state *udp)
{
	int received, i, replies = 0;

	for (i = 0; i < UDP_BATCH; i++) {
		udp->in_iov[i].iov_base = udp->bufs[i];
		udp->in_iov[i].iov_len = UDP_BUF_LEN;
		memset(&udp->in[i].msg_hdr, 0, sizeof(udp->in[i].msg_hdr));
		udp->in[i].msg_hdr.msg_iov = &udp->in_iov[i];
		udp->in[i].msg_hdr.msg_iovlen = 1;
		udp->in[i].msg_hdr.msg_name = &udp->from[i];
		udp->in[i].msg_hdr.msg_namelen = sizeof(udp->from[i]);
	}
	received =
	    recvmmsg(udp->endpoint.fd, udp->in, UDP_BATCH, MSG_DONTWAIT, NULL);
	if (received < 0)
		return;
	for (i = 0; i < received; i++) {
		size_t len = udp->in[i].msg_len;
		struct msghdr *out = &udp->out[replies].msg_hdr;
		struct iovec *out_iov = &udp->out_iov[replies];

		if (len == 0)
			continue;
		switch (udp->bufs[i][0]) {
		case 's':
			udp->count++;
			udp->bytes += len;
			continue;
		case 'e':
			out_iov->iov_base = udp->bufs[i];
			out_iov->iov_len = len;
			break;
		case '!':
			out_iov->iov_base = udp->replies[replies];
			out_iov->iov_len = control_reply(
			    udp, udp->bufs[i], len, udp->replies[replies],
			    sizeof(udp->replies[replies]));
			if (out_iov->iov_len == 0)
				continue;
			break;
		default:
			continue;
		}
		memset(out, 0, sizeof(*out));
		out->msg_iov = out_iov;
		out->msg_iovlen = 1;
		out->msg_name = &udp->from[i];
		out->msg_namelen = udp->in[i].msg_hdr.msg_namelen;
		replies++;
	}
	/* A reply that does not fit in the socket buffer is dropped, as
	 * UDP may; the load generator resends. */
	if (replies > 0)
		(void)sendmmsg(udp->endpoint.fd, udp->out, (unsigned)replies,
			       MSG_DONTWAIT);
}

/* ---- main */

static void add_listener(const char *option, const char *text,
			 enum endpoint_kind kind)
{
	struct endpoint *endpoint;

	if (kind == KIND_UDP) {
		struct udp_state *udp = calloc(1, sizeof(*udp));
		int size = 4 << 20;

		if (udp == NULL)
			toolkit_die(1, "out of memory");
		endpoint = &udp->endpoint;
		endpoint->fd = open_socket(option, text, SOCK_DGRAM);
		/* A big receive buffer, so the backend drops as little as
		 * it can; best effort (needs CAP_NET_ADMIN). */
		(void)setsockopt(endpoint->fd, SOL_SOCKET, SO_RCVBUFFORCE,
				 &size, sizeof(size));
	} else {
		endpoint = calloc(1, sizeof(*endpoint));
		if (endpoint == NULL)
			toolkit_die(1, "out of memory");
		endpoint->fd = open_socket(option, text, SOCK_STREAM);
	}
	endpoint->kind = kind;
	watch(endpoint, EPOLLIN, EPOLL_CTL_ADD);
}

int main(int argc, char **argv)
{
	struct epoll_event events[MAX_EVENTS];
	int i, n, have_any = 0;

	signal(SIGPIPE, SIG_IGN);
	toolkit_raise_fd_limit();
	epoll_fd = toolkit_epoll_create();
	for (i = 1; i < argc; i++) {
		enum endpoint_kind kind;

		if (strcmp(argv[i], "--echo") == 0)
			kind = KIND_ECHO_LISTENER;
		else if (strcmp(argv[i], "--sink") == 0)
			kind = KIND_SINK_LISTENER;
		else if (strcmp(argv[i], "--udp") == 0)
			kind = KIND_UDP;
		else
			toolkit_usage_error("unknown argument \"%s\"", argv[i]);
		if (i + 1 >= argc)
			toolkit_usage_error("%s needs ADDR:PORT", argv[i]);
		add_listener(argv[i], argv[i + 1], kind);
		have_any = 1;
		i++;
	}
	if (!have_any)
		toolkit_usage_error("nothing to serve");
	for (;;) {
		n = toolkit_epoll_wait(epoll_fd, events, MAX_EVENTS, -1);
		for (i = 0; i < n; i++) {
			struct endpoint *endpoint = events[i].data.ptr;

			switch (endpoint->kind) {
			case KIND_ECHO_LISTENER:
			case KIND_SINK_LISTENER:
				accept_connections(endpoint);
				break;
			case KIND_UDP:
				udp_event((struct udp_state *)endpoint);
				break;
			case KIND_CONN:
				conn_event((struct conn *)endpoint,
					   events[i].events);
				break;
			}
		}
	}
}
