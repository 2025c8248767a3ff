/*
 * loadgen: the benchmark's load generator (see tests/bench/README.md).
 *
 * One process, one epoll loop, level-triggered, no allocation once a
 * scenario runs. Every connection or UDP flow sent through a proxy starts
 * with a PROXY header naming a distinct client 10.x.y.z:port drawn from a
 * counter (--src-start sets its first value), so the spoofed 4-tuples the
 * proxy opens towards the backend never clash, within a run or across the
 * runs of one benchmark.
 *
 * A measurement has phases: SETUP (connections opened, each made "ready":
 * one exchange done), WARMUP (load running, not counted), MEASURE (counted
 * for --seconds), then the result as one line on stdout:
 *   RESULT <value> <unit>
 * Details go to stderr. Exit 0 on success, 1 when the load could not be
 * run (a connection failed, setup timed out), 2 for usage errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "proxyhdr.h"
#include "toolkit.h"

#define CHUNK_LEN      65536
#define MAX_CONNECTING 128 /* connects in flight while opening many */
#define MAX_EVENTS     256
#define UDP_BATCH      32
#define UDP_RETRY_S    0.2 /* resend a UDP request unanswered this long */
#define STAT_REPLY_MAX 128

enum scenario {
	SCENARIO_PINGPONG,
	SCENARIO_BULK_ECHO,
	SCENARIO_BULK_ONEWAY,
	SCENARIO_CONNRATE,
	SCENARIO_IDLE,
	SCENARIO_UDP_ONEWAY,
	SCENARIO_UDP_RR,
};

static const struct {
	const char *name;
	enum scenario scenario;
	const char *unit;
	unsigned default_conns;
	size_t default_size;
} scenarios[] = {
    {"pingpong", SCENARIO_PINGPONG, "msg/s", 50, 6},
    {"bulk-echo", SCENARIO_BULK_ECHO, "MB/s", 4, CHUNK_LEN},
    {"bulk-oneway", SCENARIO_BULK_ONEWAY, "MB/s", 1, CHUNK_LEN},
    {"connrate", SCENARIO_CONNRATE, "conn/s", 8, 5},
    {"idle", SCENARIO_IDLE, "conns", 1000, 5},
    {"udp-oneway", SCENARIO_UDP_ONEWAY, "dgram/s", 4, 64},
    {"udp-rr", SCENARIO_UDP_RR, "rt/s", 8, 64},
};

struct options {
	size_t scenario_index;
	enum scenario scenario;
	struct sockaddr_in target_addr;
	unsigned conns;
	size_t size;
	double seconds;
	double setup_timeout_s;
	int proxy_version; /* 0: no header (direct), 1 or 2 */
	uint64_t src_start;
};

enum phase { PHASE_SETUP, PHASE_WARMUP, PHASE_MEASURE, PHASE_DONE };

enum conn_state {
	CONN_CLOSED,
	CONN_CONNECTING,
	CONN_SENDING,	/* a message (or the bulk stream) is going out */
	CONN_RECEIVING, /* waiting for the whole echo of a message */
	CONN_PARKED, /* exchange done, waiting for the measurement to start */
};

struct conn {
	int fd;
	uint32_t generation; /* tells a stale epoll event from a reopened fd */
	enum conn_state state;
	uint32_t events;
	int is_ready;
	uint8_t header[PROXYHDR_V1_MAX_LEN + 1];
	size_t header_len;
	size_t header_sent;
	size_t message_sent;
	size_t message_received;
};

struct run {
	const struct options *options;
	int epoll_fd;
	struct conn *conns;
	uint8_t *message;     /* what is sent: size bytes */
	uint8_t *receive_buf; /* CHUNK_LEN bytes, contents ignored */
	uint64_t next_src;
	enum phase phase;
	double phase_started_at;
	double measure_started_at;
	double warmup_s;
	unsigned ready_count;
	unsigned open_count;
	unsigned connecting_count;
	uint64_t count; /* messages, connections or round trips */
	uint64_t bytes;
	uint64_t errors;
	uint64_t retries;
};

/* ---- helpers */

const char toolkit_program_name[] = "loadgen";
const char toolkit_synopsis[] =
    "usage: loadgen SCENARIO -t ADDR:PORT [-c CONNS] [-s SIZE] "
    "[-d SECONDS] [-p none|v1|v2] [--src-start N] "
    "[--setup-timeout SECONDS]\n"
    "scenarios: pingpong bulk-echo bulk-oneway connrate idle "
    "udp-oneway udp-rr\n";

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long parse_number(const char *option, const char *text,
				       unsigned long long min,
				       unsigned long long max)
{
	uint64_t value;

	if (toolkit_parse_number(text, min, max, &value) < 0)
		toolkit_usage_error("%s \"%s\": not a number %llu-%llu", option,
				    text, min, max);
	return value;
}

static double parse_seconds(const char *option, const char *text)
{
	char *end;
	double value;

	errno = 0;
	value = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(value > 0) ||
	    value > 86400)
		toolkit_usage_error("%s \"%s\": not a duration in seconds",
				    option, text);
	return value;
}

static void parse_ipv4_port(const char *text, struct sockaddr_in *out)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(text, ':');
	size_t host_len;

	if (colon == NULL)
		toolkit_usage_error("-t \"%s\": expected ADDR:PORT", text);
	host_len = (size_t)(colon - text);
	if (host_len >= sizeof(host))
		toolkit_usage_error("-t \"%s\": address too long", text);
	memcpy(host, text, host_len);
	host[host_len] = '\0';
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
		toolkit_usage_error("-t \"%s\": not an IPv4 address", text);
	out->sin_port =
	    htons((uint16_t)parse_number("-t port", colon + 1, 1, 65535));
}

/*
 * Client number n -> 10.a.b.c:port. The low 24 bits pick the address and
 * the next 14 the port, so 2^38 clients are distinct.
 */
static void src_for_index(uint64_t n, struct sockaddr_in *out)
{
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	out->sin_addr.s_addr = htonl(0x0a000000u | (uint32_t)(n & 0xffffffu));
	out->sin_port = htons((uint16_t)(10000u + ((n >> 24) & 0x3fffu)));
}

static size_t build_header(struct run *run, uint8_t *out, size_t capacity,
			   enum proxyhdr_transport transport)
{
	struct sockaddr_in src_addr;
	size_t len = 0;

	if (run->options->proxy_version == 0)
		return 0;
	src_for_index(run->next_src++, &src_addr);
	if (run->options->proxy_version == 1)
		len = proxyhdr_build_v1(
		    out, capacity, (const struct sockaddr *)&src_addr,
		    (const struct sockaddr *)&run->options->target_addr);
	else
		len = proxyhdr_build_v2(
		    out, capacity, PROXYHDR_CMD_PROXY, transport,
		    (const struct sockaddr *)&src_addr,
		    (const struct sockaddr *)&run->options->target_addr, NULL,
		    0, 0);
	if (len == 0)
		toolkit_die(1, "cannot build a PROXY v%d header",
			    run->options->proxy_version);
	return len;
}

static uint64_t epoll_data_for(const struct run *run, const struct conn *conn)
{
	return ((uint64_t)(conn - run->conns) << 32) | conn->generation;
}

static void set_events(struct run *run, struct conn *conn, uint32_t events)
{
	if (conn->events == events)
		return;
	toolkit_epoll_ctl(run->epoll_fd, EPOLL_CTL_MOD, conn->fd, events,
			  (epoll_data_t){.u64 = epoll_data_for(run, conn)});
	conn->events = events;
}

/* ---- phases */

static void start_measurement(struct run *run, double now);

/* Called each time a connection becomes ready, and once after opening. */
static void maybe_end_setup(struct run *run, double now)
{
	if (run->phase != PHASE_SETUP || run->ready_count < run->options->conns)
		return;
	run->phase = PHASE_WARMUP;
	run->phase_started_at = now;
	start_measurement(run, now);
}

static void advance_phase(struct run *run, double now)
{
	const struct options *options = run->options;

	if (run->phase == PHASE_SETUP &&
	    now - run->phase_started_at > options->setup_timeout_s)
		toolkit_die(
		    1,
		    "setup timed out after %.1f s: %u of %u connections ready "
		    "(%llu errors)",
		    options->setup_timeout_s, run->ready_count, options->conns,
		    (unsigned long long)run->errors);
	if (run->phase == PHASE_WARMUP &&
	    now - run->phase_started_at >= run->warmup_s) {
		run->phase = PHASE_MEASURE;
		run->measure_started_at = now;
		run->count = 0;
		run->bytes = 0;
	}
	if (run->phase == PHASE_MEASURE &&
	    now - run->measure_started_at >= options->seconds)
		run->phase = PHASE_DONE;
}

/* ---- TCP connections */

static void conn_failed(struct run *run, struct conn *conn, const char *what,
			int error);

static void conn_open(struct run *run, struct conn *conn)
{
	int one = 1;
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		toolkit_die(1, "socket: %s", strerror(errno));
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		toolkit_die(1, "setsockopt TCP_NODELAY: %s", strerror(errno));
	conn->fd = fd;
	conn->generation++;
	conn->state = CONN_CONNECTING;
	conn->events = EPOLLOUT;
	conn->header_len = build_header(run, conn->header, sizeof(conn->header),
					PROXYHDR_TRANSPORT_STREAM);
	conn->header_sent = 0;
	conn->message_sent = 0;
	conn->message_received = 0;
	run->open_count++;
	run->connecting_count++;
	toolkit_epoll_ctl(run->epoll_fd, EPOLL_CTL_ADD, fd, EPOLLOUT,
			  (epoll_data_t){.u64 = epoll_data_for(run, conn)});
	if (connect(fd, (const struct sockaddr *)&run->options->target_addr,
		    sizeof(run->options->target_addr)) < 0 &&
	    errno != EINPROGRESS)
		conn_failed(run, conn, "connect", errno);
}

static void conn_close(struct run *run, struct conn *conn)
{
	if (conn->state == CONN_CONNECTING)
		run->connecting_count--;
	close(conn->fd);
	conn->fd = -1;
	conn->state = CONN_CLOSED;
	conn->events = 0;
	run->open_count--;
}

/*
 * In connrate a failed connection is counted and replaced: failing under
 * load is part of what is measured. Elsewhere the load is not what was asked
 * for, so the measurement stops.
 */
static void conn_failed(struct run *run, struct conn *conn, const char *what,
			int error)
{
	unsigned index = (unsigned)(conn - run->conns);

	run->errors++;
	if (run->options->scenario != SCENARIO_CONNRATE)
		toolkit_die(1, "connection %u: %s: %s", index, what,
			    error ? strerror(error) : "closed by peer");
	if (run->errors <= 5)
		toolkit_warn("connection %u: %s: %s", index, what,
			     error ? strerror(error) : "closed by peer");
	conn_close(run, conn); /* open_more() replaces it */
}

static int is_bulk(const struct run *run)
{
	return run->options->scenario == SCENARIO_BULK_ECHO ||
	       run->options->scenario == SCENARIO_BULK_ONEWAY;
}

static void mark_ready(struct run *run, struct conn *conn, double now)
{
	if (conn->is_ready)
		return;
	conn->is_ready = 1;
	run->ready_count++;
	maybe_end_setup(run, now);
}

static void start_message(struct run *run, struct conn *conn)
{
	conn->state = CONN_SENDING;
	conn->message_sent = 0;
	conn->message_received = 0;
	switch (run->options->scenario) {
	case SCENARIO_BULK_ECHO:
		set_events(run, conn, EPOLLIN | EPOLLOUT);
		break;
	default:
		set_events(run, conn, EPOLLOUT);
		break;
	}
}

/* The header goes out with the first message, as a load balancer does. */
static void conn_write(struct run *run, struct conn *conn, double now)
{
	struct iovec iov[2];
	int iov_count = 0;
	ssize_t n;
	size_t written, header_part;

	if (conn->header_sent < conn->header_len) {
		iov[iov_count].iov_base = conn->header + conn->header_sent;
		iov[iov_count].iov_len = conn->header_len - conn->header_sent;
		iov_count++;
	}
	iov[iov_count].iov_base = run->message + conn->message_sent;
	iov[iov_count].iov_len = run->options->size - conn->message_sent;
	iov_count++;
	n = writev(conn->fd, iov, iov_count);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		conn_failed(run, conn, "write", errno);
		return;
	}
	written = (size_t)n;
	header_part = conn->header_len - conn->header_sent;
	if (header_part > written)
		header_part = written;
	conn->header_sent += header_part;
	conn->message_sent += written - header_part;
	if (run->options->scenario == SCENARIO_BULK_ONEWAY) {
		if (run->phase == PHASE_MEASURE)
			run->bytes += written - header_part;
		if (conn->header_sent == conn->header_len)
			mark_ready(run, conn, now);
	}
	if (conn->message_sent < run->options->size)
		return;
	if (is_bulk(run)) {
		conn->message_sent = 0; /* the stream goes on */
		return;
	}
	conn->state = CONN_RECEIVING;
	conn->message_received = 0;
	set_events(run, conn, EPOLLIN);
}

static void message_echoed(struct run *run, struct conn *conn, double now)
{
	switch (run->options->scenario) {
	case SCENARIO_CONNRATE:
		/* The client closes first: TIME_WAIT stays on this side,
		 * where tcp_tw_reuse recycles it. */
		if (run->phase == PHASE_MEASURE)
			run->count++;
		conn_close(run, conn);
		if (run->phase != PHASE_DONE)
			conn_open(run, conn);
		return;
	case SCENARIO_PINGPONG:
		if (run->phase == PHASE_MEASURE)
			run->count++;
		if (run->phase != PHASE_SETUP) {
			start_message(run, conn);
			conn_write(run, conn, now);
			return;
		}
		break;
	default:
		break;
	}
	conn->state = CONN_PARKED;
	set_events(run, conn, EPOLLIN); /* to notice a close */
	mark_ready(run, conn, now);
}

static void conn_read(struct run *run, struct conn *conn, double now)
{
	ssize_t n = read(conn->fd, run->receive_buf, CHUNK_LEN);

	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		conn_failed(run, conn, "read", errno);
		return;
	}
	if (n == 0) {
		conn_failed(run, conn, "read", 0);
		return;
	}
	if (run->options->scenario == SCENARIO_BULK_ECHO) {
		if (run->phase == PHASE_MEASURE)
			run->bytes += (size_t)n;
		mark_ready(run, conn, now);
		return;
	}
	if (conn->state != CONN_RECEIVING) {
		conn_failed(run, conn, "read", EPROTO);
		return;
	}
	conn->message_received += (size_t)n;
	if (conn->message_received > run->options->size) {
		conn_failed(run, conn, "echo longer than the message", EPROTO);
		return;
	}
	if (conn->message_received == run->options->size)
		message_echoed(run, conn, now);
}

static void conn_connected(struct run *run, struct conn *conn, double now)
{
	int error = 0;
	socklen_t error_len = sizeof(error);

	if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &error, &error_len) < 0)
		error = errno;
	if (error != 0) {
		conn_failed(run, conn, "connect", error);
		return;
	}
	run->connecting_count--;
	start_message(run, conn);
	conn_write(run, conn, now);
}

static void conn_event(struct run *run, struct conn *conn, uint32_t events,
		       double now)
{
	if (conn->state == CONN_CONNECTING) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			conn_connected(run, conn, now);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		conn_read(run, conn, now);
		if (conn->state == CONN_CLOSED || conn->fd < 0)
			return;
	}
	if ((events & EPOLLOUT) && conn->state == CONN_SENDING)
		conn_write(run, conn, now);
}

/*
 * Opens connections up to --conns, at most MAX_CONNECTING in flight. In
 * connrate it also replaces connections that failed; elsewhere a failure
 * has already ended the run.
 */
static void open_more(struct run *run)
{
	int is_connrate = run->options->scenario == SCENARIO_CONNRATE;
	unsigned i;

	if (run->phase == PHASE_DONE ||
	    (!is_connrate && run->phase != PHASE_SETUP))
		return;
	for (i = 0;
	     i < run->options->conns && run->connecting_count < MAX_CONNECTING;
	     i++) {
		struct conn *conn = &run->conns[i];

		if (conn->state == CONN_CLOSED &&
		    (is_connrate || !conn->is_ready))
			conn_open(run, conn);
	}
}

static void start_measurement(struct run *run, double now)
{
	unsigned i;

	if (run->options->scenario != SCENARIO_PINGPONG)
		return;
	for (i = 0; i < run->options->conns; i++) {
		start_message(run, &run->conns[i]);
		conn_write(run, &run->conns[i], now);
	}
}

static volatile sig_atomic_t got_signal;

static void on_signal(int signal_number)
{
	got_signal = signal_number;
}

/* idle: hold every connection open until SIGTERM or SIGINT. */
static void hold_connections(struct run *run)
{
	struct sigaction action;
	sigset_t block, old;

	memset(&action, 0, sizeof(action));
	action.sa_handler = on_signal;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &old);
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);
	printf("READY %u\n", run->ready_count);
	fflush(stdout);
	while (!got_signal)
		sigsuspend(&old);
}

static void run_tcp(struct run *run)
{
	struct epoll_event events[MAX_EVENTS];
	const struct options *options = run->options;
	double now = now_s();
	int i, n;

	run->conns = calloc(options->conns, sizeof(*run->conns));
	if (run->conns == NULL)
		toolkit_die(1, "out of memory");
	for (i = 0; i < (int)options->conns; i++)
		run->conns[i].fd = -1;
	run->phase = PHASE_SETUP;
	run->phase_started_at = now;
	if (options->scenario == SCENARIO_CONNRATE)
		run->ready_count = options->conns; /* nothing to wait for */
	open_more(run);
	maybe_end_setup(run, now);

	while (run->phase != PHASE_DONE) {
		n = toolkit_epoll_wait(run->epoll_fd, events, MAX_EVENTS, 10);
		now = now_s();
		for (i = 0; i < n; i++) {
			uint32_t index = (uint32_t)(events[i].data.u64 >> 32);
			struct conn *conn = &run->conns[index];

			if (conn->state == CONN_CLOSED ||
			    conn->generation != (uint32_t)events[i].data.u64)
				continue;
			conn_event(run, conn, events[i].events, now);
		}
		open_more(run);
		advance_phase(run, now);
		if (options->scenario == SCENARIO_IDLE &&
		    run->phase != PHASE_SETUP)
			break;
	}
	if (options->scenario == SCENARIO_IDLE) {
		hold_connections(run);
		return;
	}
	now = now_s();
	if (run->errors)
		toolkit_warn("%llu connection errors",
			     (unsigned long long)run->errors);
	if (is_bulk(run))
		printf("RESULT %.1f MB/s\n",
		       (double)run->bytes / 1e6 /
			   (now - run->measure_started_at));
	else
		printf("RESULT %.0f %s\n",
		       (double)run->count / (now - run->measure_started_at),
		       scenarios[options->scenario_index].unit);
}

/* ---- UDP flows */

/*
 * A datagram's payload starts with a type byte the backend acts on:
 * 'e' echo it, 's' count it ("sink"), '!' a control request answered with
 * a reply: "!reset" -> "!ok", "!stat" -> "!stat COUNT BYTES", "!ping" ->
 * "!ping". In udp-rr bytes 1-4 carry the flow's sequence number, so a late
 * echo of a resent request is not counted twice.
 */

#define UDP_TAG_LEN 5

struct udp_flow {
	int fd;
	uint8_t header[PROXYHDR_V1_MAX_LEN + 1];
	size_t header_len;
	uint8_t tag[UDP_TAG_LEN];
	uint32_t sequence;
	double sent_at;
};

static void udp_send(struct udp_flow *flow, const void *payload, size_t len)
{
	struct iovec iov[2] = {
	    {.iov_base = flow->header, .iov_len = flow->header_len},
	    {.iov_base = (void *)payload, .iov_len = len},
	};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};

	if (sendmsg(flow->fd, &msg, 0) < 0 && errno != EAGAIN &&
	    errno != ENOBUFS && errno != ECONNREFUSED && errno != EINTR)
		toolkit_die(1, "send: %s", strerror(errno));
}

static void set_receive_timeout(int fd, long usec)
{
	struct timeval tv = {.tv_sec = usec / 1000000,
			     .tv_usec = usec % 1000000};

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		toolkit_die(1, "setsockopt SO_RCVTIMEO: %s", strerror(errno));
}

/* Sends request on flow until a reply starting with expect arrives. */
static void udp_request(struct udp_flow *flow, const char *request,
			const char *expect, char *reply, size_t reply_capacity,
			double timeout_s)
{
	double deadline = now_s() + timeout_s;

	set_receive_timeout(flow->fd, (long)(UDP_RETRY_S * 1e6));
	while (now_s() < deadline) {
		ssize_t n;

		udp_send(flow, request, strlen(request));
		for (;;) {
			n = recv(flow->fd, reply, reply_capacity - 1, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				break;
			reply[n] = '\0';
			if (strncmp(reply, expect, strlen(expect)) == 0) {
				set_receive_timeout(flow->fd, 0);
				return;
			}
		}
		/* Nobody listening yet (ICMP refused): wait, do not spin. */
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			usleep((useconds_t)(UDP_RETRY_S * 1e6));
	}
	toolkit_die(1, "no reply to \"%s\" within %.1f s", request, timeout_s);
}

static void udp_open_flows(struct run *run, struct udp_flow *flows)
{
	char reply[STAT_REPLY_MAX];
	unsigned i;

	for (i = 0; i < run->options->conns; i++) {
		struct udp_flow *flow = &flows[i];

		flow->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (flow->fd < 0)
			toolkit_die(1, "socket: %s", strerror(errno));
		if (connect(flow->fd,
			    (const struct sockaddr *)&run->options->target_addr,
			    sizeof(run->options->target_addr)) < 0)
			toolkit_die(1, "connect: %s", strerror(errno));
		flow->header_len =
		    build_header(run, flow->header, sizeof(flow->header),
				 PROXYHDR_TRANSPORT_DGRAM);
		/* One exchange first, so a proxy has set the flow up. */
		udp_request(flow, "!ping", "!ping", reply, sizeof(reply),
			    run->options->setup_timeout_s);
	}
}

static void run_udp_oneway(struct run *run, struct udp_flow *flows)
{
	const struct options *options = run->options;
	struct mmsghdr batch[UDP_BATCH];
	struct iovec iov[UDP_BATCH][2];
	char reply[STAT_REPLY_MAX];
	unsigned long long count = 0, bytes = 0;
	uint64_t sent = 0;
	double started_at, elapsed;
	unsigned i, j;
	int n;

	run->message[0] = 's';
	udp_request(&flows[0], "!reset", "!ok", reply, sizeof(reply),
		    options->setup_timeout_s);
	started_at = now_s();
	do {
		for (i = 0; i < options->conns; i++) {
			memset(batch, 0, sizeof(batch));
			for (j = 0; j < UDP_BATCH; j++) {
				iov[j][0].iov_base = flows[i].header;
				iov[j][0].iov_len = flows[i].header_len;
				iov[j][1].iov_base = run->message;
				iov[j][1].iov_len = options->size;
				batch[j].msg_hdr.msg_iov = iov[j];
				batch[j].msg_hdr.msg_iovlen = 2;
			}
			n = sendmmsg(flows[i].fd, batch, UDP_BATCH, 0);
			if (n > 0)
				sent += (uint64_t)n;
			else if (errno != EAGAIN && errno != ENOBUFS &&
				 errno != ECONNREFUSED && errno != EINTR)
				toolkit_die(1, "sendmmsg: %s", strerror(errno));
		}
		elapsed = now_s() - started_at;
	} while (elapsed < options->seconds);
	/* Let the datagrams still queued drain before asking. */
	usleep(50000);
	udp_request(&flows[0], "!stat", "!stat ", reply, sizeof(reply), 5);
	if (sscanf(reply, "!stat %llu %llu", &count, &bytes) != 2)
		toolkit_die(1, "bad stat reply \"%s\"", reply);
	toolkit_warn("sent %llu datagrams, %llu arrived (%.1f%%)",
		     (unsigned long long)sent, count,
		     sent ? 100.0 * (double)count / (double)sent : 0.0);
	printf("RESULT %.0f dgram/s\n", (double)count / elapsed);
}

static void udp_rr_send(struct run *run, struct udp_flow *flow, double now)
{
	struct iovec iov[3] = {
	    {.iov_base = flow->header, .iov_len = flow->header_len},
	    {.iov_base = flow->tag, .iov_len = UDP_TAG_LEN},
	    {.iov_base = run->message + UDP_TAG_LEN,
	     .iov_len = run->options->size - UDP_TAG_LEN},
	};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};

	flow->tag[0] = 'e';
	memcpy(flow->tag + 1, &flow->sequence, sizeof(flow->sequence));
	if (sendmsg(flow->fd, &msg, 0) < 0 && errno != EAGAIN &&
	    errno != ENOBUFS && errno != ECONNREFUSED && errno != EINTR)
		toolkit_die(1, "send: %s", strerror(errno));
	flow->sent_at = now;
}

static void udp_rr_receive(struct run *run, struct udp_flow *flow, double now)
{
	ssize_t n;

	while ((n = recv(flow->fd, run->receive_buf, CHUNK_LEN,
			 MSG_DONTWAIT)) >= 0) {
		if ((size_t)n != run->options->size ||
		    memcmp(run->receive_buf, flow->tag, UDP_TAG_LEN) != 0)
			continue; /* the late echo of a resent request */
		if (run->phase == PHASE_MEASURE)
			run->count++;
		flow->sequence++;
		udp_rr_send(run, flow, now);
	}
}

static void run_udp_rr(struct run *run, struct udp_flow *flows)
{
	const struct options *options = run->options;
	struct epoll_event events[MAX_EVENTS];
	double now = now_s();
	unsigned i;
	int n, k;

	if (options->size < UDP_TAG_LEN)
		toolkit_usage_error("-s: udp-rr needs at least %d bytes",
				    UDP_TAG_LEN);
	for (i = 0; i < options->conns; i++) {
		toolkit_epoll_ctl(run->epoll_fd, EPOLL_CTL_ADD, flows[i].fd,
				  EPOLLIN, (epoll_data_t){.u32 = i});
		udp_rr_send(run, &flows[i], now);
	}
	run->phase = PHASE_WARMUP;
	run->phase_started_at = now;
	while (run->phase != PHASE_DONE) {
		n = toolkit_epoll_wait(run->epoll_fd, events, MAX_EVENTS, 10);
		now = now_s();
		for (k = 0; k < n; k++)
			udp_rr_receive(run, &flows[events[k].data.u32], now);
		for (i = 0; i < options->conns; i++)
			if (now - flows[i].sent_at > UDP_RETRY_S) {
				run->retries++;
				udp_rr_send(run, &flows[i], now);
			}
		advance_phase(run, now);
	}
	if (run->retries)
		toolkit_warn("%llu requests resent after a loss",
			     (unsigned long long)run->retries);
	printf("RESULT %.0f rt/s\n",
	       (double)run->count / (now - run->measure_started_at));
}

static void run_udp(struct run *run)
{
	struct udp_flow *flows;

	if (run->options->size > 65000)
		toolkit_usage_error("-s: a UDP payload is at most 65000 bytes");
	flows = calloc(run->options->conns, sizeof(*flows));
	if (flows == NULL)
		toolkit_die(1, "out of memory");
	udp_open_flows(run, flows);
	if (run->options->scenario == SCENARIO_UDP_ONEWAY)
		run_udp_oneway(run, flows);
	else
		run_udp_rr(run, flows);
	free(flows);
}

/* ---- main */

static void parse_options(int argc, char **argv, struct options *options)
{
	static const struct option long_options[] = {
	    {"target", required_argument, NULL, 't'},
	    {"conns", required_argument, NULL, 'c'},
	    {"size", required_argument, NULL, 's'},
	    {"seconds", required_argument, NULL, 'd'},
	    {"proxy", required_argument, NULL, 'p'},
	    {"src-start", required_argument, NULL, 'S'},
	    {"setup-timeout", required_argument, NULL, 'T'},
	    {NULL, 0, NULL, 0},
	};
	int have_target = 0, have_conns = 0, have_size = 0;
	size_t i;
	int c;

	memset(options, 0, sizeof(*options));
	options->seconds = 5;
	options->setup_timeout_s = 30;
	options->proxy_version = 2;
	while ((c = getopt_long(argc, argv, "t:c:s:d:p:", long_options,
				NULL)) != -1) {
		switch (c) {
		case 't':
			parse_ipv4_port(optarg, &options->target_addr);
			have_target = 1;
			break;
		case 'c':
			options->conns =
			    (unsigned)parse_number("-c", optarg, 1, 100000);
			have_conns = 1;
			break;
		case 's':
			options->size =
			    (size_t)parse_number("-s", optarg, 1, CHUNK_LEN);
			have_size = 1;
			break;
		case 'd':
			options->seconds = parse_seconds("-d", optarg);
			break;
		case 'p':
			if (strcmp(optarg, "none") == 0)
				options->proxy_version = 0;
			else if (strcmp(optarg, "v1") == 0)
				options->proxy_version = 1;
			else if (strcmp(optarg, "v2") == 0)
				options->proxy_version = 2;
			else
				toolkit_usage_error(
				    "-p \"%s\": expected none, v1 or v2",
				    optarg);
			break;
		case 'S':
			options->src_start =
			    parse_number("--src-start", optarg, 0, 1ULL << 38);
			break;
		case 'T':
			options->setup_timeout_s =
			    parse_seconds("--setup-timeout", optarg);
			break;
		default:
			toolkit_usage_error("unknown option");
		}
	}
	if (optind != argc - 1)
		toolkit_usage_error("expected one SCENARIO");
	for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (strcmp(argv[optind], scenarios[i].name) == 0)
			break;
	if (i == sizeof(scenarios) / sizeof(scenarios[0]))
		toolkit_usage_error("unknown scenario \"%s\"", argv[optind]);
	options->scenario_index = i;
	options->scenario = scenarios[i].scenario;
	if (!have_target)
		toolkit_usage_error("-t ADDR:PORT is required");
	if (!have_conns)
		options->conns = scenarios[i].default_conns;
	if (!have_size)
		options->size = scenarios[i].default_size;
	if (options->proxy_version == 1 &&
	    (options->scenario == SCENARIO_UDP_ONEWAY ||
	     options->scenario == SCENARIO_UDP_RR))
		toolkit_usage_error("-p v1: UDP needs a v2 header");
}

int main(int argc, char **argv)
{
	struct options options;
	struct run run;

	parse_options(argc, argv, &options);
	signal(SIGPIPE, SIG_IGN);
	toolkit_raise_fd_limit();
	memset(&run, 0, sizeof(run));
	run.options = &options;
	run.next_src = options.src_start;
	/* A tenth of the measurement, between 50 ms and 1 s. */
	run.warmup_s = options.seconds / 10;
	if (run.warmup_s < 0.05)
		run.warmup_s = 0.05;
	if (run.warmup_s > 1)
		run.warmup_s = 1;
	run.message = malloc(CHUNK_LEN);
	run.receive_buf = malloc(CHUNK_LEN);
	if (run.message == NULL || run.receive_buf == NULL)
		toolkit_die(1, "out of memory");
	memset(run.message, 'x', CHUNK_LEN);
	run.epoll_fd = toolkit_epoll_create();
	if (options.scenario == SCENARIO_UDP_ONEWAY ||
	    options.scenario == SCENARIO_UDP_RR)
		run_udp(&run);
	else
		run_tcp(&run);
	fflush(stdout);
	free(run.conns);
	free(run.message);
	free(run.receive_buf);
	return 0;
}
