/*
 * connection: one TCP connection's life (see connection.h).
 *
 * The file follows the data: how a connection can end; reading the PROXY
 * header; the endpoints (from the header, or --tproxy's own ends); the
 * spoofed connect; the relay's result; the summary line and the close; and
 * connection_run(), which strings them together. Holds no accept loop, no
 * relay loop (relay.c) and no socket options (spoof.c).
 */
#define _GNU_SOURCE
#include "connection.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "endpoint.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "proxyhdr.h"
#include "relay.h"
#include "sandbox.h"
#include "sockets.h"
#include "spoof.h"
#include "stack_layout.h"
#include "text.h"

/*
 * With --tproxy there is no load balancer: lb_fd and lb_addr are the
 * client's own connection, and destination_addr is where it was going.
 */
struct connection {
	int lb_fd;
	int backend_fd;
	struct sockaddr_storage lb_addr;     /* the load balancer's end */
	struct sockaddr_storage client_addr; /* the client, from the header */
	struct sockaddr_storage destination_addr; /* --tproxy: our own end */
	struct sockaddr_storage target_addr;
	bool tproxy;
	bool spoofed; /* false for LOCAL/UNKNOWN: connect from our own address */
	uint64_t bytes_up;   /* client to backend */
	uint64_t bytes_down; /* backend to client */
	int64_t start_ms;
	enum metrics_end end;
	/* For the counters: what was wrong with a bad header, and the errno
	 * of a failed bind or connect to the target (0: the families differ). */
	enum proxyhdr_error header_error;
	int connect_error;
	/* Header bytes peeked and left in lb_fd's socket for the relay. */
	size_t header_unread;
};

static void log_header_problem(const struct connection *conn,
			       enum proxyhdr_error error, const uint8_t *bytes,
			       size_t len)
{
	char lb[NETADDR_TEXT_SIZE], shown[80];

	netaddr_format(&conn->lb_addr, lb, sizeof lb);
	text_escape(shown, sizeof shown, bytes, len < 16 ? len : 16);
	if (error == PROXYHDR_ENOT_PROXY)
		log_error("lb=%s: no PROXY header: is send-proxy enabled on "
			  "the load balancer? (first bytes \"%s\")",
			  lb, shown);
	else
		log_error("lb=%s: invalid PROXY header: %s (first bytes \"%s\")",
			  lb, proxyhdr_strerror(error), shown);
}

/*
 * Wait for the header bytes to grow, up to the deadline. Returns 1 when
 * there is something new to peek at, 0 on timeout, -1 on error; *peer_closed
 * tells that no more bytes will come.
 */
static int wait_for_more_header(int fd, int64_t deadline_ms, bool *peer_closed)
{
	short revents = 0;
	int ready = wait_for_fd(fd, POLLIN | POLLRDHUP, deadline_ms, &revents);

	if (ready > 0)
		*peer_closed = (revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
	return ready;
}

/* Take exactly the header's bytes out of the socket; what follows stays for the relay. */
static int consume_header(int fd, uint8_t *buffer, size_t header_len)
{
	while (header_len > 0) {
		ssize_t n = recv(fd, buffer, header_len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		header_len -= (size_t)n;
	}
	return 0;
}

/* Where reading the header stands after one look at the socket. */
enum header_step {
	HEADER_DONE,   /* complete and consumed */
	HEADER_FAILED, /* conn->end says why */
	HEADER_WAIT,   /* a piece is missing: wait for more bytes */
	HEADER_AGAIN,  /* look again at once (EINTR, a bigger buffer) */
};

struct header_reader {
	uint8_t *buffer;
	size_t capacity;
	bool heap_buffer;
	bool seen_bytes;   /* the load balancer sent something */
	bool peer_closed;  /* and will send nothing more */
	bool lowat_raised; /* SO_RCVLOWAT must go back to 1 */
};

/* Judge the len bytes peeked so far. */
static enum header_step judge_header_bytes(struct connection *conn,
					   struct header_reader *reader,
					   size_t len, struct proxyhdr *header)
{
	enum proxyhdr_error error = PROXYHDR_OK;

	switch (proxyhdr_parse(reader->buffer, len, header, &error)) {
	case PROXYHDR_COMPLETE:
		/* Until the relay says otherwise, a failure is ours. */
		conn->end = METRICS_END_ERROR;
		if (!reader->heap_buffer) {
			/*
			 * Left in the socket: the relay's first read takes
			 * it with the first data and drops it, one read
			 * where taking it here would make two.
			 */
			conn->header_unread = header->header_len;
			return HEADER_DONE;
		}
		return consume_header(conn->lb_fd, reader->buffer,
				      header->header_len) == 0
			       ? HEADER_DONE
			       : HEADER_FAILED;
	case PROXYHDR_INVALID:
		log_header_problem(conn, error, reader->buffer, len);
		conn->header_error = error;
		conn->end = error == PROXYHDR_ENOT_PROXY ? METRICS_END_NO_HEADER
							 : METRICS_END_BAD_HEADER;
		return HEADER_FAILED;
	case PROXYHDR_NEED_MORE:
		break;
	}
	if (len == reader->capacity && !reader->heap_buffer) {
		/*
		 * Only a v2 header with large TLVs gets here. Look again with
		 * room for any header before deciding anything, even when the
		 * peer has closed: the rest may well be in the socket.
		 */
		reader->buffer = malloc(PROXYHDR_MAX_LEN);
		if (reader->buffer == NULL) {
			conn->end = METRICS_END_ERROR;
			return HEADER_FAILED;
		}
		reader->heap_buffer = true;
		reader->capacity = PROXYHDR_MAX_LEN;
		return HEADER_AGAIN;
	}
	if (reader->peer_closed) {
		conn->end = METRICS_END_HEADER_TRUNCATED;
		return HEADER_FAILED;
	}
	if (set_int_option(conn->lb_fd, SOL_SOCKET, SO_RCVLOWAT,
			   (int)len + 1) != 0) {
		conn->end = METRICS_END_ERROR;
		return HEADER_FAILED;
	}
	reader->lowat_raised = true;
	return HEADER_WAIT;
}

/* Peek at what has arrived and judge it. */
static enum header_step examine_header(struct connection *conn,
				       struct header_reader *reader,
				       struct proxyhdr *header)
{
	ssize_t n = recv(conn->lb_fd, reader->buffer, reader->capacity,
			 MSG_PEEK);

	if (n < 0 && errno == EINTR)
		return HEADER_AGAIN;
	if (n < 0 && errno == EAGAIN)
		return HEADER_WAIT;
	if (n == 0 || (n < 0 && errno == ECONNRESET && !reader->seen_bytes)) {
		/* Connect and close, or reset, with nothing sent: a check. */
		conn->end = METRICS_END_HEALTH;
		return HEADER_FAILED;
	}
	if (n < 0) {
		conn->end = errno == ECONNRESET ? METRICS_END_CLIENT_RESET : METRICS_END_ERROR;
		return HEADER_FAILED;
	}
	reader->seen_bytes = true;
	return judge_header_bytes(conn, reader, (size_t)n, header);
}

static void log_header_wait_end(const struct connection *conn,
				const struct options *opts)
{
	char lb[NETADDR_TEXT_SIZE];

	/* Every connection passes here: format only for a line to log. */
	if (conn->end == METRICS_END_HEADER_TIMEOUT)
		log_error("lb=%s: no complete PROXY header after %d s",
			  netaddr_format(&conn->lb_addr, lb, sizeof lb),
			  opts->header_timeout_ms / 1000);
	else if (conn->end == METRICS_END_HEADER_TRUNCATED)
		log_error("lb=%s: closed in the middle of the PROXY header",
			  netaddr_format(&conn->lb_addr, lb, sizeof lb));
}

/*
 * Read the PROXY header, however it is split, within the header timeout.
 * We peek, so nothing is taken from the socket until the parser has the
 * whole header; then exactly the header is consumed, by the relay when it
 * fits the first buffer (header_unread), else here. While a piece is
 * missing, SO_RCVLOWAT is raised past what was peeked, so poll() sleeps
 * until a new byte arrives instead of reporting the unread bytes again.
 * Out of line: a phase of a connection (see stack_layout.h).
 */
CONNECTION_PHASE static int read_proxy_header(struct connection *conn,
					      const struct options *opts,
					      struct proxyhdr *header)
{
	/*
	 * Room for any v1 header and for v2 with a few TLVs: a child's
	 * memory is mostly the stack pages it touches, so bigger headers
	 * get a heap buffer instead.
	 */
	uint8_t first_buffer[640];
	struct header_reader reader = {.buffer = first_buffer,
				       .capacity = sizeof first_buffer};
	int64_t deadline_ms = conn->start_ms + opts->header_timeout_ms;
	enum header_step step;

	while ((step = examine_header(conn, &reader, header)) != HEADER_DONE &&
	       step != HEADER_FAILED) {
		if (step == HEADER_AGAIN)
			continue;
		int ready = wait_for_more_header(conn->lb_fd, deadline_ms,
						 &reader.peer_closed);
		if (ready <= 0) {
			conn->end = ready == 0 ? METRICS_END_HEADER_TIMEOUT : METRICS_END_ERROR;
			step = HEADER_FAILED;
			break;
		}
	}
	if (reader.lowat_raised &&
	    set_int_option(conn->lb_fd, SOL_SOCKET, SO_RCVLOWAT, 1) != 0)
		step = HEADER_FAILED;
	/* The next connection of a pool's process must not find this header. */
	explicit_bzero(reader.buffer, reader.capacity);
	if (reader.heap_buffer)
		free(reader.buffer);
	log_header_wait_end(conn, opts);
	return step == HEADER_DONE ? 0 : -1;
}

/*
 * --tproxy: the kernel handed us the client's own connection, so the peer
 * is the client and our end of it is the address the client meant to reach.
 * Filled in before the allow check, so every log line can name both.
 */
static int identify_tproxy_ends(struct connection *conn)
{
	socklen_t len = sizeof conn->destination_addr;

	conn->client_addr = conn->lb_addr;
	netaddr_unmap(&conn->client_addr);
	if (getsockname(conn->lb_fd, (struct sockaddr *)&conn->destination_addr,
			&len) != 0)
		return -1;
	netaddr_unmap(&conn->destination_addr);
	return 0;
}

/*
 * The step that stands in for the header in --tproxy mode. A connection
 * addressed to this host itself was not diverted (a client reached the
 * listening port directly): its "original destination" is our own
 * listener, and connecting there would start the same connection again,
 * without end. So it is refused, with or without -4/-6: the listener is
 * only for diverted traffic.
 */
static int take_tproxy_endpoints(struct connection *conn,
				 const struct options *opts)
{
	char client[NETADDR_TEXT_SIZE], destination[NETADDR_TEXT_SIZE];
	int local = is_local_address(&conn->destination_addr);

	if (local < 0) {
		int error = errno;
		log_error("route lookup for %s: %s",
			  netaddr_format(&conn->destination_addr, destination,
					 sizeof destination),
			  strerror(error));
		conn->end = METRICS_END_ERROR;
		return -1;
	}
	if (local > 0) {
		log_error("refused client=%s: destination %s is this host's "
			  "own address, so the connection was not diverted "
			  "by TPROXY",
			  netaddr_format(&conn->client_addr, client,
					 sizeof client),
			  netaddr_format(&conn->destination_addr, destination,
					 sizeof destination));
		conn->end = METRICS_END_NOT_DIVERTED;
		return -1;
	}
	conn->spoofed = true;
	conn->target_addr =
		endpoint_tproxy_target(opts, &conn->destination_addr);
	/* Until the relay says otherwise, a failure is ours. */
	conn->end = METRICS_END_ERROR;
	return 0;
}

/*
 * A client with an address must have come over a stream: a v2 PROXY
 * header whose transport is DGRAM or UNSPEC names a client that cannot
 * have made this TCP connection (spec 2.2), and connecting from its
 * address would spoof one. Refused, rather than served from our own
 * address as haproxy does: a load balancer sending it is misconfigured,
 * and the log line says so. LOCAL, UNKNOWN and the UNSPEC and UNIX
 * families name no client and are served as ever.
 */
static int check_header_transport(struct connection *conn,
				  const struct proxyhdr *header)
{
	char lb[NETADDR_TEXT_SIZE];

	if (header->command != PROXYHDR_CMD_PROXY ||
	    (header->family != AF_INET && header->family != AF_INET6) ||
	    header->transport == PROXYHDR_TRANSPORT_STREAM)
		return 0;
	log_error("lb=%s: refused PROXY header: transport is not STREAM "
		  "(%s) on a TCP connection",
		  netaddr_format(&conn->lb_addr, lb, sizeof lb),
		  header->transport == PROXYHDR_TRANSPORT_DGRAM ? "DGRAM"
								: "UNSPEC");
	conn->end = METRICS_END_BAD_HEADER;
	return -1;
}

/* The unspecified address (0.0.0.0, ::) reaches this host when connected to. */
static bool is_unspecified_address(const struct sockaddr_storage *addr)
{
	const struct sockaddr_in *in = (const void *)addr;
	const struct sockaddr_in6 *in6 = (const void *)addr;

	if (addr->ss_family == AF_INET)
		return in->sin_addr.s_addr == htonl(INADDR_ANY);
	return addr->ss_family == AF_INET6 &&
	       IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
}

/*
 * --dynamic-destination lets the header choose the target. One of this
 * host's addresses on the port the load balancer reached us on is
 * mmproxy itself: connecting there would start the same connection
 * again, and again. Refused, as --tproxy refuses what was not diverted.
 */
static int check_not_looping(struct connection *conn)
{
	struct sockaddr_storage ours;
	socklen_t len = sizeof ours;
	char client[NETADDR_TEXT_SIZE], target[NETADDR_TEXT_SIZE];

	if (getsockname(conn->lb_fd, (struct sockaddr *)&ours, &len) != 0) {
		log_error("getsockname: %s", strerror(errno));
		conn->end = METRICS_END_ERROR;
		return -1;
	}
	if (netaddr_port(&ours) != netaddr_port(&conn->target_addr))
		return 0;
	int local = is_unspecified_address(&conn->target_addr)
			    ? 1
			    : is_local_address(&conn->target_addr);
	if (local < 0) {
		log_error("route lookup for %s: %s",
			  netaddr_format(&conn->target_addr, target,
					 sizeof target),
			  strerror(errno));
		conn->end = METRICS_END_ERROR;
		return -1;
	}
	if (local == 0)
		return 0;
	log_error("refused client=%s: destination %s is mmproxy's own "
		  "(this host's address on its listening port)",
		  netaddr_format(&conn->client_addr, client, sizeof client),
		  netaddr_format(&conn->target_addr, target, sizeof target));
	conn->end = METRICS_END_LOOP;
	return -1;
}

/*
 * Fill in the client and the target: from the PROXY header, or, with
 * --tproxy, from the connection itself.
 */
CONNECTION_PHASE static int take_endpoints(struct connection *conn,
					   const struct options *opts)
{
	struct proxyhdr header;
	struct endpoints chosen;

	if (opts->tproxy)
		return take_tproxy_endpoints(conn, opts);
	if (read_proxy_header(conn, opts, &header) != 0 ||
	    check_header_transport(conn, &header) != 0)
		return -1;
	endpoint_choose(opts, &header, &conn->lb_addr, &chosen);
	conn->client_addr = chosen.client;
	conn->target_addr = chosen.target;
	conn->spoofed = chosen.spoofed;
	if (opts->dynamic_destination && conn->spoofed)
		return check_not_looping(conn);
	return 0;
}

/* The log line for a socket to the target that could not be opened. */
static void log_connect_failure(const struct connection *conn,
				const struct options *opts,
				const struct spoof_failure *failure)
{
	/* Formatted only for a log line: snprintf costs time and stack. */
	char target[NETADDR_TEXT_SIZE], client[NETADDR_TEXT_SIZE];
	int error = failure->error;
	int family = conn->target_addr.ss_family;

	switch (failure->step) {
	case SPOOF_FAMILY:
		log_error("client %s and target %s differ in address family",
			  netaddr_format(&conn->client_addr, client,
					 sizeof client),
			  netaddr_format(&conn->target_addr, target,
					 sizeof target));
		break;
	case SPOOF_SOCKET:
		log_error("socket: %s", strerror(error));
		break;
	case SPOOF_TRANSPARENT:
		log_error("setsockopt %s: %s%s", transparent_option_name(family),
			  strerror(error), spoof_capability_hint(error));
		break;
	case SPOOF_MARK:
		log_error("setsockopt SO_MARK %u: %s%s", opts->mark,
			  strerror(error), spoof_capability_hint(error));
		break;
	case SPOOF_BIND:
		log_error("bind %s: %s%s",
			  netaddr_format(&conn->client_addr, client,
					 sizeof client),
			  strerror(error), spoof_capability_hint(error));
		break;
	case SPOOF_CONNECT:
		log_error("connect %s from %s: %s",
			  netaddr_format(&conn->target_addr, target,
					 sizeof target),
			  conn->spoofed ? netaddr_format(&conn->client_addr,
							 client, sizeof client)
					: "mmproxy's own address",
			  strerror(error));
		break;
	}
}

/* What a failed connect to the target means for the summary line. */
static enum metrics_end connect_failure_end(const struct spoof_failure *failure)
{
	switch (failure->step) {
	case SPOOF_FAMILY:
	case SPOOF_BIND:
		return METRICS_END_BIND_FAILED;
	case SPOOF_CONNECT:
		return failure->error == ETIMEDOUT ? METRICS_END_CONNECT_TIMEOUT
						   : METRICS_END_BACKEND_REFUSED;
	default:
		/* A socket we cannot set up is not the client's doing:
		 * end=error, exit 1, so it shows. */
		return METRICS_END_ERROR;
	}
}

/* With --port-fallback, a client port that is taken here gives way (spoof.h). */
CONNECTION_PHASE static int connect_backend(struct connection *conn,
					    const struct options *opts)
{
	struct spoof_options spoof = {
		.mark = opts->mark_given ? &opts->mark : NULL,
		.port = opts->port_fallback ? SPOOF_PORT_FALLBACK
					    : SPOOF_PORT_EXACT,
		.connect_timeout_ms = opts->connect_timeout_ms,
	};
	struct spoof_failure failure;

	conn->backend_fd =
		spoof_open(SOCK_STREAM, conn->spoofed ? &conn->client_addr : NULL,
			   &conn->target_addr, &spoof, &failure);
	if (conn->backend_fd >= 0)
		return 0;
	log_connect_failure(conn, opts, &failure);
	conn->end = connect_failure_end(&failure);
	conn->connect_error = failure.step == SPOOF_FAMILY ? 0 : failure.error;
	return -1;
}

/* The relay's result in the connection's terms: a is the load balancer. */
static void take_relay_result(struct connection *conn,
			      const struct relay_result *result)
{
	static const enum metrics_end ends[] = {
		[RELAY_DONE] = METRICS_END_DONE,
		[RELAY_B_CLOSED_FIRST] = METRICS_END_BACKEND_CLOSED,
		[RELAY_A_RESET] = METRICS_END_CLIENT_RESET,
		[RELAY_B_RESET] = METRICS_END_BACKEND_RESET,
		[RELAY_IDLE] = METRICS_END_IDLE_TIMEOUT,
		[RELAY_ERROR] = METRICS_END_ERROR,
	};

	conn->end = ends[result->end];
	conn->bytes_up = result->bytes_a_to_b;
	conn->bytes_down = result->bytes_b_to_a;
}

/* ---- the life of one connection */

/*
 * TCP keepalive, so a load balancer or backend that vanished without a FIN
 * or RST (powered off, a firewall forgot the connection) ends the
 * connection and frees its process: after 60 s without traffic a probe,
 * then one every 10 s, and the 6th unanswered one fails the socket, about
 * two minutes in all; the kernel's defaults (2 hours, then 9 probes 75 s
 * apart) would hold the process for over two hours. 60 s is below the idle
 * timeouts of load balancers and NAT tables (typically 350 s and more), so
 * the probes also keep those from dropping a quiet connection, and one
 * probe a minute costs an idle connection nearly nothing.
 *
 * A backend on loopback gets none: it cannot vanish without the kernel
 * telling us (its process's sockets are closed or reset when it dies), and
 * four system calls per connection are a tenth of a connection's calls.
 */
enum { KEEPALIVE_IDLE_S = 60, KEEPALIVE_INTERVAL_S = 10, KEEPALIVE_PROBES = 6 };

static int keep_alive(int fd)
{
	return set_keepalive(fd, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S,
			     KEEPALIVE_PROBES);
}

/* A failure here is not worth ending the connection for. */
static void keep_backend_alive(const struct connection *conn)
{
	if (!netaddr_is_loopback(&conn->target_addr) &&
	    keep_alive(conn->backend_fd) != 0)
		log_error("TCP keepalive: %s", strerror(errno));
}

/*
 * Our own accept loop's listening socket: what every accepted socket
 * needs is set once here, since accepted sockets inherit it (keepalive,
 * TCP_NODELAY so small messages go at once). TCP_DEFER_ACCEPT lets the
 * kernel hand a load balancer's connection over only once its first bytes
 * (the PROXY header) are in, which saves the connection process a wake-up
 * and a poll(); a connection still silent after about a second is handed
 * over then, and its header timeout starts. Not with --tproxy: a client
 * of a protocol where the server speaks first would wait.
 */
int connection_prepare_listener(int listen_fd, const struct options *opts)
{
	enum { DEFER_ACCEPT_S = 1 };

	if (keep_alive(listen_fd) != 0 ||
	    set_int_option(listen_fd, IPPROTO_TCP, TCP_NODELAY, 1) != 0)
		return -1;
	if (!opts->tproxy &&
	    set_int_option(listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT,
			   DEFER_ACCEPT_S) != 0)
		return -1;
	return 0;
}

static void log_connection_summary(const struct connection *conn)
{
	char client[NETADDR_TEXT_SIZE], lb[NETADDR_TEXT_SIZE],
		target[NETADDR_TEXT_SIZE];
	/* --tproxy has no load balancer: lb= shows where the client was going. */
	const struct sockaddr_storage *lb_shown =
		conn->tproxy ? &conn->destination_addr : &conn->lb_addr;

	if (!log_wants(LOG_LEVEL_CONNECTIONS))
		return;
	log_msg(LOG_INFO,
		"conn client=%s lb=%s target=%s up=%llu down=%llu ms=%lld "
		"end=%s",
		conn->client_addr.ss_family ? netaddr_format(&conn->client_addr,
							     client,
							     sizeof client)
					    : "-",
		netaddr_format(lb_shown, lb, sizeof lb),
		conn->target_addr.ss_family ? netaddr_format(&conn->target_addr,
							     target,
							     sizeof target)
					    : "-",
		(unsigned long long)conn->bytes_up,
		(unsigned long long)conn->bytes_down,
		(long long)(monotonic_ms() - conn->start_ms),
		metrics_end_name(conn->end));
}

/* The connection's end into the shared counters, once, before it closes. */
static void count_end(struct metrics *metrics, const struct connection *conn)
{
	metrics_count_end(metrics, conn->end);
	metrics_add_bytes(metrics, conn->bytes_up, conn->bytes_down);
	if (conn->end == METRICS_END_BAD_HEADER)
		metrics_count_bad_header(metrics, conn->header_error);
	if (conn->end == METRICS_END_BIND_FAILED || conn->end == METRICS_END_BACKEND_REFUSED ||
	    conn->end == METRICS_END_CONNECT_TIMEOUT)
		metrics_count_connect_failure(metrics, conn->connect_error);
}

static bool is_normal_end(enum metrics_end end)
{
	return end == METRICS_END_DONE || end == METRICS_END_BACKEND_CLOSED ||
	       end == METRICS_END_HEALTH;
}

/*
 * Ends the connection the way its end calls for: a RST where something
 * failed. A header still in the socket is taken out first on a clean close
 * (a refused loop), since closing over unread bytes sends a RST.
 */
static void close_connection(struct connection *conn)
{
	bool abort = !is_normal_end(conn->end) &&
		     conn->end != METRICS_END_NOT_ALLOWED &&
		     conn->end != METRICS_END_NOT_DIVERTED && conn->end != METRICS_END_LOOP;

	if (!abort && conn->header_unread > 0)
		(void)recv(conn->lb_fd, NULL, conn->header_unread,
			   MSG_TRUNC | MSG_DONTWAIT);

	if (conn->backend_fd >= 0) {
		if (abort)
			close_with_reset(conn->backend_fd);
		else
			close(conn->backend_fd);
	}
	if (abort)
		close_with_reset(conn->lb_fd);
	else
		close(conn->lb_fd);
}

/*
 * Who is the load balancer? Our accept loop already knows, and made the
 * socket non-blocking and set its options (connection_prepare_listener());
 * with a socket from inetd or systemd, ask, and set them here. Returns 0,
 * 1 when the peer is already gone (a check that connected and reset at
 * once, as haproxy's do), or -1 on a system error.
 */
static int identify_load_balancer(struct connection *conn,
				  const struct sockaddr_storage *accepted_peer)
{
	socklen_t len = sizeof conn->lb_addr;

	if (accepted_peer != NULL) {
		conn->lb_addr = *accepted_peer;
		return 0;
	}
	if (getpeername(conn->lb_fd, (struct sockaddr *)&conn->lb_addr, &len) !=
	    0)
		return errno == ENOTCONN ? 1 : -1;
	if (set_nonblocking(conn->lb_fd) != 0 ||
	    set_int_option(conn->lb_fd, IPPROTO_TCP, TCP_NODELAY, 1) != 0)
		return errno == ECONNRESET ? 1 : -1;
	/* Not worth ending the connection for (see keep_alive()). */
	if (keep_alive(conn->lb_fd) != 0)
		log_error("TCP keepalive: %s", strerror(errno));
	return 0;
}

/* A check without a client that carried nothing, whoever closed it and how. */
static bool is_health_check(const struct connection *conn)
{
	return (is_normal_end(conn->end) || conn->end == METRICS_END_CLIENT_RESET) &&
	       !conn->spoofed && conn->bytes_up == 0 && conn->bytes_down == 0;
}

/* With --tproxy the peer is the client itself, and the check applies to it. */
static bool is_allowed_peer(const struct connection *conn,
			    const struct subnets *allowed)
{
	char peer[NETADDR_TEXT_SIZE];

	if (allowed == NULL ||
	    subnets_contains(allowed, (const struct sockaddr *)&conn->lb_addr))
		return true;
	log_error("refused %s=%s: not in allowed subnets",
		  conn->tproxy ? "client" : "lb",
		  netaddr_format(&conn->lb_addr, peer, sizeof peer));
	return false;
}

/*
 * The process's last spoofed connection is made: what is left to do is
 * relay, which needs no capability and few system calls. A failure ends
 * the connection, as any other system error would.
 */
CONNECTION_PHASE static int narrow_to_relay(struct connection *conn,
					    const struct options *opts)
{
	if (sandbox_drop_all_capabilities(&opts->sandbox) == 0 &&
	    sandbox_install_filter(&opts->sandbox, SANDBOX_RELAY) == 0)
		return 0;
	log_error("narrowing the sandbox for the relay: %s", strerror(errno));
	conn->end = METRICS_END_ERROR;
	return -1;
}

static void relay_connection(struct connection *conn,
			     const struct options *opts)
{
	struct relay_result result;

	relay_run(conn->lb_fd, conn->backend_fd, opts->idle_timeout_ms,
		  conn->header_unread, &result);
	conn->header_unread = 0;
	take_relay_result(conn, &result);
	if (is_health_check(conn))
		conn->end = METRICS_END_HEALTH;
}

/*
 * Handle one connection from a load balancer (with --tproxy, from a client),
 * from the allow check to the end of the relay. Returns the process exit
 * status: 0 when the job was done (a refusal is a job done), 1 on a system
 * error.
 */
static int serve(int lb_fd, const struct sockaddr_storage *accepted_peer,
		 const struct options *opts, const struct subnets *allowed,
		 struct metrics *metrics, bool last)
{
	struct connection conn = {.lb_fd = lb_fd, .backend_fd = -1,
				  .tproxy = opts->tproxy, .end = METRICS_END_ERROR};

	conn.start_ms = monotonic_ms();
	metrics_count_accepted(metrics);
	int identified = identify_load_balancer(&conn, accepted_peer);
	if (identified == 0 && conn.tproxy)
		identified = identify_tproxy_ends(&conn);
	if (identified < 0) {
		log_error("connection on fd %d: %s", lb_fd, strerror(errno));
		count_end(metrics, &conn);
		close(lb_fd);
		return EXIT_SYSTEM;
	}
	if (identified > 0) {
		conn.end = METRICS_END_HEALTH;
	} else if (!is_allowed_peer(&conn, allowed)) {
		conn.end = METRICS_END_NOT_ALLOWED;
	} else if (take_endpoints(&conn, opts) == 0 &&
		   connect_backend(&conn, opts) == 0) {
		keep_backend_alive(&conn);
		/* Both sockets set up: the relay needs nothing more. */
		if (!last || narrow_to_relay(&conn, opts) == 0)
			relay_connection(&conn, opts);
	}
	log_connection_summary(&conn);
	/* Counted first: once a peer sees the close, a scrape shows it. */
	count_end(metrics, &conn);
	close_connection(&conn);
	return conn.end == METRICS_END_ERROR ? EXIT_SYSTEM : 0;
}

int connection_run(int lb_fd, const struct sockaddr_storage *accepted_peer,
		   const struct options *opts, const struct subnets *allowed,
		   struct metrics *metrics)
{
	return serve(lb_fd, accepted_peer, opts, allowed, metrics, false);
}

int connection_run_last(int lb_fd,
			const struct sockaddr_storage *accepted_peer,
			const struct options *opts,
			const struct subnets *allowed, struct metrics *metrics)
{
	return serve(lb_fd, accepted_peer, opts, allowed, metrics, true);
}
