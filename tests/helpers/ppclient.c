/*
 * ppclient: a load balancer stand-in for mmproxy's end-to-end tests.
 *
 * It connects to ADDR:PORT, sends a PROXY header naming a client (built with
 * proxyhdr_build_v1/v2, or raw bytes, or garbage, or nothing), then relays a
 * payload while reading everything that comes back, both at once, and prints
 * one summary line:
 *   sent=N crc_sent=XXXXXXXX received=M crc_received=YYYYYYYY end=REASON ms=T
 * sent/received count payload bytes only (never the header); crc is CRC-32 as
 * zlib computes it, the same as tests/helpers/backend's log line, so the two
 * can be compared. REASON:
 *   eof      the server closed its side (after all our payload went out)
 *   closed   we closed first, as asked (--close, --expect reached, hold over)
 *   aborted  we reset the connection, as asked (--reset)
 *   reset    the server reset the connection (ECONNRESET/EPIPE)
 *   refused  connect() failed (ECONNREFUSED, or another errno, printed)
 *   timeout  -w SECONDS passed
 *   error    a system call failed (stderr says which)
 * Exit status: 0 for eof, closed, aborted; 1 for the others; 2 bad usage.
 *
 * Usage: ppclient [OPTIONS] ADDR:PORT        (IPv6 as [::1]:8443)
 * Header:
 *   -1 | -2            PROXY protocol version (default 1)
 *   -s ADDR:PORT       client named in the header (default 192.0.2.10:40000)
 *   -d ADDR:PORT       address the client reached (default 127.0.0.1:443, or
 *                      [::1]:443 when -s is IPv6)
 *   --local            v2 LOCAL command (health check)
 *   --unknown          v1 "PROXY UNKNOWN"
 *   --crc32c           v2: append a CRC32C TLV
 *   --bad-crc32c       v2: append a CRC32C TLV holding a wrong checksum
 *   --tlv HEX          v2: append these TLV bytes verbatim
 *   --header-hex HEX   send these bytes instead of a built header
 *   --header-file FILE send this file's bytes instead of a built header
 *   --no-header        send no header at all
 *   --garbage N        send N deterministic bytes that are not a header
 *   --split N          write the header N bytes at a time ...
 *   --split-delay MS   ... pausing MS milliseconds in between (default 20)
 *   --with-payload     the header's last bytes and the first payload bytes
 *                      go in one write
 * Payload (one of; default none):
 *   -n BYTES           BYTES of a deterministic stream (seed -S, default 1)
 *   -f FILE            a file's bytes; "-" reads stdin
 *   -t TEXT            this text, as is (use bash $'...\r\n')
 * After the payload is sent, keep the connection (still reading):
 *   --hold-ms MS       for MS milliseconds
 *   --hold-until FILE  until FILE exists
 * Then end the connection one way (default: keep reading until EOF):
 *   --half-close       shutdown(SHUT_WR), read until EOF
 *   --reset-after-ms MS with --half-close: reset the connection (RST) MS
 *                      milliseconds after the shutdown, if it is still open
 *   --close            close at once
 *   --reset            close with RST (SO_LINGER 0)
 *   --expect N         close as soon as N bytes have come back
 * The server's EOF ends the connection as soon as the payload is out.
 * Other:
 *   --read-after-ms MS read nothing from the server for MS milliseconds
 *                      (a slow reader: the server's bytes pile up)
 *   -b ADDR[:PORT]     bind the load balancer's socket to this address first
 *   -o FILE            write the bytes received to FILE
 *   -w SECONDS         give up after SECONDS in all (default 30)
 *   -c COUNT           make COUNT connections (one process each), -P at a
 *                      time; the header's source port is -s's plus the
 *                      connection's index (0..COUNT-1). Each prints its line,
 *                      then "connections=N ok=K failed=F" (exit 1 if F > 0)
 *   -P N               connections at a time with -c (default 1)
 *   -q                 with -c, print only the total line
 *   --udp              UDP: one datagram (v2 DGRAM header unless --no-header
 *                      or a raw header, then the payload), then wait for one
 *                      reply datagram: end=reply or end=timeout
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proxyhdr.h"
#include "toolkit.h"

#define BUFFER_SIZE 65536

enum header_kind {
	HEADER_BUILT,
	HEADER_RAW,
	HEADER_NONE,
	HEADER_GARBAGE,
};

enum payload_kind { PAYLOAD_NONE, PAYLOAD_STREAM, PAYLOAD_FILE, PAYLOAD_TEXT };

enum finish {
	FINISH_READ_TO_EOF,
	FINISH_HALF_CLOSE,
	FINISH_CLOSE,
	FINISH_RESET
};

struct options {
	const char *target_text;
	int version;
	const char *src_text;
	const char *dst_text;
	int local;
	int unknown;
	int crc32c;
	int bad_crc32c;
	uint8_t tlvs[65000]; /* v2 len is 16 bits: room for the address block */
	size_t tlvs_len;
	enum header_kind header_kind;
	uint8_t raw_header[PROXYHDR_MAX_LEN];
	size_t raw_header_len;
	size_t garbage_len;
	size_t split;
	int split_delay_ms;
	int with_payload;
	enum payload_kind payload_kind;
	uint64_t payload_bytes;
	uint64_t seed;
	const char *payload_file;
	const char *payload_text;
	long hold_ms;
	const char *hold_until;
	long read_after_ms;
	long reset_after_ms; /* -1: never */
	enum finish finish;
	uint64_t expect;
	int expect_set;
	const char *bind_text;
	const char *output_path;
	long timeout_s;
	unsigned long count;
	unsigned long parallel;
	int quiet;
	int udp;
};

struct result {
	uint64_t sent;
	uint64_t received;
	uint32_t crc_sent;
	uint32_t crc_received;
	const char *end;
};

const char toolkit_program_name[] = "ppclient";
const char toolkit_synopsis[] =
    "usage: ppclient [-1|-2] [-s ADDR:PORT] [-d ADDR:PORT] [--local] "
    "[--unknown]\n"
    "                [--crc32c|--bad-crc32c] [--tlv HEX] "
    "[--header-hex HEX]\n"
    "                [--header-file FILE] [--no-header] [--garbage "
    "N] [--split N]\n"
    "                [--split-delay MS] [--with-payload] [-n "
    "BYTES|-f FILE|-t TEXT]\n"
    "                [-S SEED] [--hold-ms MS] [--hold-until FILE]\n"
    "                [--read-after-ms MS]\n"
    "                [--half-close [--reset-after-ms MS]|--close|--reset]\n"
    "                [--expect N] [-b "
    "ADDR[:PORT]]\n"
    "                [-o FILE] [-w SECONDS] [-c COUNT [-P N] [-q]] "
    "[--udp] ADDR:PORT\n";

static struct options options = {
    .version = 1,
    .src_text = "192.0.2.10:40000",
    .split_delay_ms = 20,
    .seed = 1,
    .timeout_s = 30,
    .count = 1,
    .parallel = 1,
    .reset_after_ms = -1,
};

/* ---- numbers, addresses, hex */

static uint64_t parse_number(const char *option, const char *text, uint64_t max)
{
	uint64_t value;

	if (toolkit_parse_number(text, 0, max, &value) < 0)
		toolkit_die(2, "%s: \"%s\" is not a number 0-%" PRIu64, option,
			    text, max);
	return value;
}

static void need_address(const char *option, const char *text,
			 struct sockaddr_storage *out, socklen_t *out_len,
			 int port_optional)
{
	if (toolkit_parse_address(text, out, out_len, port_optional) < 0)
		toolkit_die(2, "%s: \"%s\": expected ADDR:PORT or [ADDR]:PORT",
			    option, text);
}

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Hex digit pairs; spaces, colons and newlines between pairs are ignored. */
static size_t parse_hex(const char *option, const char *text, uint8_t *out,
			size_t capacity)
{
	size_t len = 0;

	while (*text) {
		if (strchr(" :\t\n", *text)) {
			text++;
			continue;
		}
		int high = hex_value(text[0]);
		int low = high < 0 ? -1 : hex_value(text[1]);
		if (low < 0)
			toolkit_die(2, "%s: not hex near \"%.8s\"", option,
				    text);
		if (len == capacity)
			toolkit_die(2, "%s: longer than %zu bytes", option,
				    capacity);
		out[len++] = (uint8_t)(high << 4 | low);
		text += 2;
	}
	return len;
}

static size_t read_file(const char *option, const char *path, uint8_t *out,
			size_t capacity)
{
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		toolkit_die(2, "%s: %s: %s", option, path, strerror(errno));
	for (;;) {
		ssize_t n = read(fd, out + len, capacity - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			toolkit_die(2, "%s: %s: %s", option, path,
				    strerror(errno));
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == capacity)
			toolkit_die(2, "%s: %s: longer than %zu bytes", option,
				    path, capacity);
	}
	close(fd);
	return len;
}

/* ---- time */

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
			      .tv_nsec = (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- the header */

/* v2 address block length by family byte (spec section 2.1). */
static size_t v2_address_len(uint8_t family_byte)
{
	switch (family_byte >> 4) {
	case 1:
		return 12;
	case 2:
		return 36;
	case 3:
		return 216;
	default:
		return 0;
	}
}

/* Make the CRC32C TLV's value wrong, wherever the builder put it. */
static void corrupt_crc32c(uint8_t *header, size_t header_len)
{
	size_t offset = PROXYHDR_V2_FIXED_LEN + v2_address_len(header[13]);

	while (offset + 3 <= header_len) {
		size_t value_len =
		    (size_t)header[offset + 1] << 8 | header[offset + 2];
		if (header[offset] == PP2_TYPE_CRC32C && value_len == 4 &&
		    offset + 7 <= header_len) {
			header[offset + 6] ^= 0x5a;
			return;
		}
		offset += 3 + value_len;
	}
	toolkit_die(1, "--bad-crc32c: the built header has no CRC32C TLV");
}

static size_t build_header(uint8_t *out, size_t capacity,
			   uint16_t src_port_offset)
{
	struct sockaddr_storage src, dst;
	socklen_t len;
	size_t header_len;

	switch (options.header_kind) {
	case HEADER_NONE:
		return 0;
	case HEADER_RAW:
		memcpy(out, options.raw_header, options.raw_header_len);
		return options.raw_header_len;
	case HEADER_GARBAGE: {
		uint64_t state = 7;
		size_t n = options.garbage_len < capacity ? options.garbage_len
							  : capacity;
		toolkit_stream_fill(&state, out, n);
		if (n > 0 && (out[0] == 'P' || out[0] == '\r'))
			out[0] = 'X';
		return n;
	}
	case HEADER_BUILT:
		break;
	}
	need_address("-s", options.src_text, &src, &len, 0);
	toolkit_address_set_port(
	    &src, (uint16_t)(toolkit_address_port(&src) + src_port_offset));
	if (options.dst_text) {
		need_address("-d", options.dst_text, &dst, &len, 0);
	} else {
		const char *fallback =
		    src.ss_family == AF_INET6 ? "[::1]:443" : "127.0.0.1:443";
		need_address("-d", fallback, &dst, &len, 0);
	}
	if (options.version == 1) {
		header_len = proxyhdr_build_v1(
		    out, capacity,
		    options.unknown ? NULL : (struct sockaddr *)&src,
		    options.unknown ? NULL : (struct sockaddr *)&dst);
	} else {
		header_len = proxyhdr_build_v2(
		    out, capacity,
		    options.local ? PROXYHDR_CMD_LOCAL : PROXYHDR_CMD_PROXY,
		    options.udp ? PROXYHDR_TRANSPORT_DGRAM
				: PROXYHDR_TRANSPORT_STREAM,
		    (struct sockaddr *)&src, (struct sockaddr *)&dst,
		    options.tlvs_len ? options.tlvs : NULL, options.tlvs_len,
		    options.crc32c || options.bad_crc32c);
		if (header_len && options.bad_crc32c)
			corrupt_crc32c(out, header_len);
	}
	if (header_len == 0)
		toolkit_die(1, "the header builder refused these arguments");
	return header_len;
}

/* ---- the payload */

struct payload {
	int fd; /* PAYLOAD_FILE */
	uint64_t left;
	uint64_t state;
	size_t text_pos;
	int done;
	size_t start, end;
	unsigned char buffer[BUFFER_SIZE];
};

static void payload_open(struct payload *payload)
{
	memset(payload, 0, sizeof(*payload));
	payload->fd = -1;
	payload->left = options.payload_bytes;
	payload->state = options.seed;
	switch (options.payload_kind) {
	case PAYLOAD_NONE:
		payload->done = 1;
		break;
	case PAYLOAD_FILE:
		if (strcmp(options.payload_file, "-") == 0) {
			payload->fd = 0;
		} else {
			payload->fd =
			    open(options.payload_file, O_RDONLY | O_CLOEXEC);
			if (payload->fd < 0)
				toolkit_die(2, "-f: %s: %s",
					    options.payload_file,
					    strerror(errno));
			/*
			 * A FIFO fed bit by bit must never block read(): the
			 * relay would stop reading the server meanwhile.
			 * Nothing to read is EAGAIN, which polls again.
			 */
			int flags = fcntl(payload->fd, F_GETFL);
			if (flags < 0 ||
			    fcntl(payload->fd, F_SETFL, flags | O_NONBLOCK) < 0)
				toolkit_die(2, "-f: %s: fcntl: %s",
					    options.payload_file,
					    strerror(errno));
		}
		break;
	case PAYLOAD_STREAM:
	case PAYLOAD_TEXT:
		break;
	}
}

/* Does refilling the buffer need the file to be readable first? */
static int payload_wants_fd(const struct payload *payload)
{
	return options.payload_kind == PAYLOAD_FILE && !payload->done &&
	       payload->start == payload->end;
}

/* Refill an empty buffer. Returns -1 on a read error. */
static int payload_refill(struct payload *payload)
{
	if (payload->done || payload->start != payload->end)
		return 0;
	payload->start = payload->end = 0;
	switch (options.payload_kind) {
	case PAYLOAD_NONE:
		payload->done = 1;
		break;
	case PAYLOAD_STREAM: {
		size_t n = payload->left < BUFFER_SIZE ? (size_t)payload->left
						       : BUFFER_SIZE;
		toolkit_stream_fill(&payload->state, payload->buffer, n);
		payload->left -= n;
		payload->end = n;
		if (n == 0)
			payload->done = 1;
		break;
	}
	case PAYLOAD_TEXT: {
		size_t left = strlen(options.payload_text) - payload->text_pos;
		size_t n = left < BUFFER_SIZE ? left : BUFFER_SIZE;
		memcpy(payload->buffer,
		       options.payload_text + payload->text_pos, n);
		payload->text_pos += n;
		payload->end = n;
		if (n == 0)
			payload->done = 1;
		break;
	}
	case PAYLOAD_FILE: {
		ssize_t n = read(payload->fd, payload->buffer, BUFFER_SIZE);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				return 0;
			toolkit_warn("read %s: %s", options.payload_file,
				     strerror(errno));
			return -1;
		}
		payload->end = (size_t)n;
		if (n == 0)
			payload->done = 1;
		break;
	}
	}
	return 0;
}

/* ---- one TCP connection */

struct session {
	int fd;
	int output_fd;
	long long deadline_ms;
	struct payload payload;
	struct result result;
	int server_eof;
};

static int is_reset_error(int error)
{
	return error == ECONNRESET || error == EPIPE;
}

/* A send or recv failed for good: the server reset us, or an error (said). */
static int session_failed(struct session *session, const char *call)
{
	if (is_reset_error(errno)) {
		session->result.end = "reset";
	} else {
		session->result.end = "error";
		toolkit_warn("%s: %s", call, strerror(errno));
	}
	return -1;
}

/* Wait for events on the socket until the overall deadline. 0: timeout. */
static int wait_socket(struct session *session, short events,
		       long long until_ms)
{
	for (;;) {
		long long wait = until_ms - toolkit_now_ms();
		if (wait < 0)
			wait = 0;
		struct pollfd pfd = {.fd = session->fd, .events = events};
		int n = poll(&pfd, 1, (int)wait);
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -1 : n;
	}
}

static int connect_target(struct session *session,
			  const struct sockaddr_storage *target,
			  socklen_t target_len)
{
	int one = 1;

	session->fd = socket(target->ss_family,
			     SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (session->fd < 0) {
		toolkit_warn("socket: %s", strerror(errno));
		session->result.end = "error";
		return -1;
	}
	if (options.bind_text) {
		struct sockaddr_storage local;
		socklen_t local_len;
		need_address("-b", options.bind_text, &local, &local_len, 1);
		setsockopt(session->fd, SOL_SOCKET, SO_REUSEADDR, &one,
			   sizeof(one));
		if (bind(session->fd, (struct sockaddr *)&local, local_len) <
		    0) {
			toolkit_warn("bind %s: %s", options.bind_text,
				     strerror(errno));
			session->result.end = "error";
			return -1;
		}
	}
	if (connect(session->fd, (const struct sockaddr *)target, target_len) <
		0 &&
	    errno != EINPROGRESS) {
		toolkit_warn("connect %s: %s", options.target_text,
			     strerror(errno));
		session->result.end = "refused";
		return -1;
	}
	int ready = wait_socket(session, POLLOUT, session->deadline_ms);
	if (ready == 0) {
		session->result.end = "timeout";
		return -1;
	}
	int error = 0;
	socklen_t error_len = sizeof(error);
	if (ready < 0 || getsockopt(session->fd, SOL_SOCKET, SO_ERROR, &error,
				    &error_len) < 0)
		error = errno;
	if (error) {
		toolkit_warn("connect %s: %s", options.target_text,
			     strerror(error));
		session->result.end = "refused";
		return -1;
	}
	return 0;
}

/* Send all len bytes (a blocking write, bounded by the deadline). */
static int send_all(struct session *session, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(session->fd, data, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			int ready =
			    wait_socket(session, POLLOUT, session->deadline_ms);
			if (ready == 0) {
				session->result.end = "timeout";
				return -1;
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return session_failed(session, "send");
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

static void account_sent(struct session *session, const unsigned char *data,
			 size_t len)
{
	session->result.crc_sent =
	    toolkit_crc32_update(session->result.crc_sent, data, len);
	session->result.sent += len;
}

/* The header, in --split pieces; with --with-payload its tail shares a write
 * with the first payload bytes. */
static int send_header(struct session *session, const uint8_t *header,
		       size_t header_len)
{
	static uint8_t combined[PROXYHDR_MAX_LEN + BUFFER_SIZE];
	size_t piece = options.split ? options.split : header_len;
	size_t offset = 0;

	while (offset < header_len || (options.with_payload && offset == 0)) {
		size_t n =
		    header_len - offset < piece ? header_len - offset : piece;
		int last = offset + n == header_len;
		if (last && options.with_payload) {
			struct payload *payload = &session->payload;
			if (payload_refill(payload) < 0) {
				session->result.end = "error";
				return -1;
			}
			size_t extra = payload->end - payload->start;
			memcpy(combined, header + offset, n);
			memcpy(combined + n, payload->buffer + payload->start,
			       extra);
			if (send_all(session, combined, n + extra) < 0)
				return -1;
			account_sent(session, payload->buffer + payload->start,
				     extra);
			payload->start = payload->end;
			return 0;
		}
		if (send_all(session, header + offset, n) < 0)
			return -1;
		offset += n;
		if (offset < header_len && options.split_delay_ms)
			sleep_ms(options.split_delay_ms);
	}
	return 0;
}

/* Read what is there. Returns -1 when the connection ended (result.end set). */
static int receive(struct session *session)
{
	unsigned char buffer[BUFFER_SIZE];
	ssize_t n = recv(session->fd, buffer, sizeof(buffer), 0);

	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 0;
		return session_failed(session, "recv");
	}
	if (n == 0) {
		session->server_eof = 1;
		return 0;
	}
	session->result.crc_received = toolkit_crc32_update(
	    session->result.crc_received, buffer, (size_t)n);
	session->result.received += (uint64_t)n;
	if (session->output_fd >= 0 &&
	    write(session->output_fd, buffer, (size_t)n) != n)
		toolkit_warn("-o: short write");
	return 0;
}

static int transmit(struct session *session)
{
	struct payload *payload = &session->payload;
	size_t pending = payload->end - payload->start;
	ssize_t n;

	if (pending == 0)
		return 0;
	n = send(session->fd, payload->buffer + payload->start, pending,
		 MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 0;
		return session_failed(session, "send");
	}
	account_sent(session, payload->buffer + payload->start, (size_t)n);
	payload->start += (size_t)n;
	return 0;
}

static int hold_is_over(long long hold_end_ms)
{
	if (options.hold_until && access(options.hold_until, F_OK) != 0)
		return 0;
	return toolkit_now_ms() >= hold_end_ms;
}

static void abort_connection(int fd)
{
	struct linger linger = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
}

/* The relay: send the payload and read at the same time, hold, finish. */
static void relay(struct session *session)
{
	struct payload *payload = &session->payload;
	enum { SENDING, HOLDING, DRAINING } phase = SENDING;
	long long hold_end_ms = 0;
	long long reset_at_ms = -1;
	long long read_from_ms = toolkit_now_ms() + options.read_after_ms;

	for (;;) {
		if (payload_refill(payload) < 0) {
			session->result.end = "error";
			return;
		}
		int sending_done =
		    payload->done && payload->start == payload->end;
		if (phase == SENDING && sending_done) {
			phase = HOLDING;
			hold_end_ms = toolkit_now_ms() + options.hold_ms;
		}
		/* The server closed and we have nothing more to say. */
		if (session->server_eof && phase != SENDING) {
			session->result.end = "eof";
			return;
		}
		if (options.expect_set &&
		    session->result.received >= options.expect &&
		    phase != SENDING) {
			session->result.end = "closed";
			return;
		}
		if (phase == HOLDING && hold_is_over(hold_end_ms)) {
			switch (options.finish) {
			case FINISH_CLOSE:
				session->result.end = "closed";
				return;
			case FINISH_RESET:
				abort_connection(session->fd);
				session->result.end = "aborted";
				return;
			case FINISH_HALF_CLOSE:
				shutdown(session->fd, SHUT_WR);
				if (options.reset_after_ms >= 0)
					reset_at_ms = toolkit_now_ms() +
						      options.reset_after_ms;
				break;
			case FINISH_READ_TO_EOF:
				break;
			}
			phase = DRAINING;
		}
		if (reset_at_ms >= 0 && toolkit_now_ms() >= reset_at_ms) {
			abort_connection(session->fd);
			session->result.end = "aborted";
			return;
		}

		struct pollfd pfds[2] = {{.fd = session->fd}, {.fd = -1}};
		long long now = toolkit_now_ms();
		int reading = now >= read_from_ms;
		if (!session->server_eof && reading)
			pfds[0].events |= POLLIN;
		if (payload->end > payload->start)
			pfds[0].events |= POLLOUT;
		if (payload_wants_fd(payload)) {
			pfds[1].fd = payload->fd;
			pfds[1].events = POLLIN;
		}
		long long wait = session->deadline_ms - now;
		if (wait <= 0) {
			session->result.end = "timeout";
			return;
		}
		if (!reading && read_from_ms - now < wait)
			wait = read_from_ms - now;
		if (phase == HOLDING) {
			long long hold_wait =
			    options.hold_until ? 20 : hold_end_ms - now;
			if (hold_wait < wait)
				wait = hold_wait < 0 ? 0 : hold_wait;
		}
		if (reset_at_ms >= 0 && reset_at_ms - now < wait)
			wait = reset_at_ms - now < 0 ? 0 : reset_at_ms - now;
		int n = poll(pfds, 2, (int)wait);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			session->result.end = "error";
			return;
		}
		if (reading && (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)))
			if (receive(session) < 0)
				return;
		if (pfds[0].revents & (POLLOUT | POLLERR))
			if (transmit(session) < 0)
				return;
	}
}

static void run_tcp(const struct sockaddr_storage *target, socklen_t target_len,
		    uint16_t index, struct result *result)
{
	static uint8_t header[PROXYHDR_MAX_LEN];
	struct session session = {.fd = -1, .output_fd = -1};
	size_t header_len = build_header(header, sizeof(header), index);

	session.result.end = "error";
	session.deadline_ms = toolkit_now_ms() + options.timeout_s * 1000;
	payload_open(&session.payload);
	if (options.output_path) {
		session.output_fd =
		    open(options.output_path,
			 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (session.output_fd < 0)
			toolkit_die(2, "-o: %s: %s", options.output_path,
				    strerror(errno));
	}
	if (connect_target(&session, target, target_len) == 0 &&
	    send_header(&session, header, header_len) == 0)
		relay(&session);
	if (session.fd >= 0)
		close(session.fd);
	if (session.output_fd >= 0)
		close(session.output_fd);
	*result = session.result;
}

/* ---- UDP: one datagram out, one back */

static void run_udp(const struct sockaddr_storage *target, socklen_t target_len,
		    uint16_t index, struct result *result)
{
	static uint8_t datagram[PROXYHDR_MAX_LEN + BUFFER_SIZE];
	struct payload payload;
	size_t len = build_header(datagram, PROXYHDR_MAX_LEN, index);
	size_t payload_len = 0;

	result->end = "error";
	payload_open(&payload);
	while (!payload.done && len + payload_len < 65507) {
		if (payload_refill(&payload) < 0)
			return;
		size_t n = payload.end - payload.start;
		if (n > 65507 - len - payload_len)
			n = 65507 - len - payload_len;
		memcpy(datagram + len + payload_len,
		       payload.buffer + payload.start, n);
		payload.start += n;
		payload_len += n;
	}
	int fd = socket(target->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    connect(fd, (const struct sockaddr *)target, target_len) < 0) {
		toolkit_warn("udp %s: %s", options.target_text,
			     strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	if (send(fd, datagram, len + payload_len, 0) < 0) {
		toolkit_warn("send: %s", strerror(errno));
		close(fd);
		return;
	}
	result->sent = payload_len;
	result->crc_sent = toolkit_crc32_update(0, datagram + len, payload_len);
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int ready = poll(&pfd, 1, (int)(options.timeout_s * 1000));
	if (ready <= 0) {
		result->end = "timeout";
		close(fd);
		return;
	}
	ssize_t n = recv(fd, datagram, sizeof(datagram), 0);
	if (n < 0) {
		result->end = errno == ECONNREFUSED ? "refused" : "error";
	} else {
		result->received = (uint64_t)n;
		result->crc_received =
		    toolkit_crc32_update(0, datagram, (size_t)n);
		result->end = "reply";
	}
	close(fd);
}

/* ---- one connection, or many */

static int run_one(const struct sockaddr_storage *target, socklen_t target_len,
		   uint16_t index, int print)
{
	struct result result = {.end = "error"};
	long long start_ms = toolkit_now_ms();

	if (options.udp)
		run_udp(target, target_len, index, &result);
	else
		run_tcp(target, target_len, index, &result);
	if (print) {
		char line[256];
		int len = snprintf(
		    line, sizeof(line),
		    "sent=%" PRIu64 " crc_sent=%08" PRIx32 " received=%" PRIu64
		    " crc_received=%08" PRIx32 " end=%s ms=%lld\n",
		    result.sent, result.crc_sent, result.received,
		    result.crc_received, result.end,
		    toolkit_now_ms() - start_ms);
		/* One write, so lines from many processes stay whole. */
		if (len > 0 && write(1, line, (size_t)len) < 0)
			return 1;
	}
	return strcmp(result.end, "eof") == 0 ||
		       strcmp(result.end, "closed") == 0 ||
		       strcmp(result.end, "aborted") == 0 ||
		       strcmp(result.end, "reply") == 0
		   ? 0
		   : 1;
}

static int run_many(const struct sockaddr_storage *target, socklen_t target_len)
{
	unsigned long started = 0, running = 0, ok = 0, failed = 0;

	while (started < options.count || running > 0) {
		if (started < options.count && running < options.parallel) {
			fflush(stdout);
			pid_t pid = fork();
			if (pid < 0)
				toolkit_die(1, "fork: %s", strerror(errno));
			if (pid == 0)
				_exit(run_one(target, target_len,
					      (uint16_t)started,
					      !options.quiet));
			started++;
			running++;
			continue;
		}
		int status;
		pid_t pid = wait(&status);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			toolkit_die(1, "wait: %s", strerror(errno));
		}
		running--;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			ok++;
		else
			failed++;
	}
	printf("connections=%lu ok=%lu failed=%lu\n", options.count, ok,
	       failed);
	return failed ? 1 : 0;
}

/* ---- options */

enum {
	OPT_LOCAL = 256,
	OPT_UNKNOWN,
	OPT_CRC32C,
	OPT_BAD_CRC32C,
	OPT_TLV,
	OPT_HEADER_HEX,
	OPT_HEADER_FILE,
	OPT_NO_HEADER,
	OPT_GARBAGE,
	OPT_SPLIT,
	OPT_SPLIT_DELAY,
	OPT_WITH_PAYLOAD,
	OPT_HOLD_MS,
	OPT_READ_AFTER_MS,
	OPT_HOLD_UNTIL,
	OPT_HALF_CLOSE,
	OPT_RESET_AFTER_MS,
	OPT_CLOSE,
	OPT_RESET,
	OPT_EXPECT,
	OPT_UDP,
};

static const struct option long_options[] = {
    {"local", no_argument, NULL, OPT_LOCAL},
    {"unknown", no_argument, NULL, OPT_UNKNOWN},
    {"crc32c", no_argument, NULL, OPT_CRC32C},
    {"bad-crc32c", no_argument, NULL, OPT_BAD_CRC32C},
    {"tlv", required_argument, NULL, OPT_TLV},
    {"header-hex", required_argument, NULL, OPT_HEADER_HEX},
    {"header-file", required_argument, NULL, OPT_HEADER_FILE},
    {"no-header", no_argument, NULL, OPT_NO_HEADER},
    {"garbage", required_argument, NULL, OPT_GARBAGE},
    {"split", required_argument, NULL, OPT_SPLIT},
    {"split-delay", required_argument, NULL, OPT_SPLIT_DELAY},
    {"with-payload", no_argument, NULL, OPT_WITH_PAYLOAD},
    {"hold-ms", required_argument, NULL, OPT_HOLD_MS},
    {"read-after-ms", required_argument, NULL, OPT_READ_AFTER_MS},
    {"hold-until", required_argument, NULL, OPT_HOLD_UNTIL},
    {"half-close", no_argument, NULL, OPT_HALF_CLOSE},
    {"reset-after-ms", required_argument, NULL, OPT_RESET_AFTER_MS},
    {"close", no_argument, NULL, OPT_CLOSE},
    {"reset", no_argument, NULL, OPT_RESET},
    {"expect", required_argument, NULL, OPT_EXPECT},
    {"udp", no_argument, NULL, OPT_UDP},
    {NULL, 0, NULL, 0},
};

/* --header-hex and --header-file: these bytes instead of a built header. */
static void set_raw_header(size_t (*read_bytes)(const char *, const char *,
						uint8_t *, size_t),
			   const char *option, const char *text)
{
	options.header_kind = HEADER_RAW;
	options.raw_header_len = read_bytes(option, text, options.raw_header,
					    sizeof(options.raw_header));
}

static void parse_options(int argc, char **argv)
{
	int c;

	while ((c = getopt_long(argc, argv, "12s:d:n:f:t:S:b:o:w:c:P:qh",
				long_options, NULL)) != -1) {
		switch (c) {
		case '1':
		case '2':
			options.version = c - '0';
			break;
		case 's':
			options.src_text = optarg;
			break;
		case 'd':
			options.dst_text = optarg;
			break;
		case 'n':
			options.payload_kind = PAYLOAD_STREAM;
			options.payload_bytes =
			    parse_number("-n", optarg, UINT64_MAX);
			break;
		case 'f':
			options.payload_kind = PAYLOAD_FILE;
			options.payload_file = optarg;
			break;
		case 't':
			options.payload_kind = PAYLOAD_TEXT;
			options.payload_text = optarg;
			break;
		case 'S':
			options.seed = parse_number("-S", optarg, UINT64_MAX);
			break;
		case 'b':
			options.bind_text = optarg;
			break;
		case 'o':
			options.output_path = optarg;
			break;
		case 'w':
			options.timeout_s =
			    (long)parse_number("-w", optarg, 86400);
			break;
		case 'c':
			options.count =
			    (unsigned long)parse_number("-c", optarg, 65536);
			break;
		case 'P':
			options.parallel =
			    (unsigned long)parse_number("-P", optarg, 4096);
			if (options.parallel == 0)
				toolkit_die(2, "-P: must be at least 1");
			break;
		case 'q':
			options.quiet = 1;
			break;
		case OPT_LOCAL:
			options.local = 1;
			options.version = 2;
			break;
		case OPT_UNKNOWN:
			options.unknown = 1;
			options.version = 1;
			break;
		case OPT_CRC32C:
			options.crc32c = 1;
			break;
		case OPT_BAD_CRC32C:
			options.bad_crc32c = 1;
			break;
		case OPT_TLV:
			options.tlvs_len =
			    parse_hex("--tlv", optarg, options.tlvs,
				      sizeof(options.tlvs));
			break;
		case OPT_HEADER_HEX:
			set_raw_header(parse_hex, "--header-hex", optarg);
			break;
		case OPT_HEADER_FILE:
			set_raw_header(read_file, "--header-file", optarg);
			break;
		case OPT_NO_HEADER:
			options.header_kind = HEADER_NONE;
			break;
		case OPT_GARBAGE:
			options.header_kind = HEADER_GARBAGE;
			options.garbage_len = (size_t)parse_number(
			    "--garbage", optarg, PROXYHDR_MAX_LEN);
			break;
		case OPT_SPLIT:
			options.split = (size_t)parse_number("--split", optarg,
							     PROXYHDR_MAX_LEN);
			break;
		case OPT_SPLIT_DELAY:
			options.split_delay_ms =
			    (int)parse_number("--split-delay", optarg, 60000);
			break;
		case OPT_WITH_PAYLOAD:
			options.with_payload = 1;
			break;
		case OPT_HOLD_MS:
			options.hold_ms =
			    (long)parse_number("--hold-ms", optarg, 86400000);
			break;
		case OPT_READ_AFTER_MS:
			options.read_after_ms = (long)parse_number(
			    "--read-after-ms", optarg, 86400000);
			break;
		case OPT_HOLD_UNTIL:
			options.hold_until = optarg;
			break;
		case OPT_HALF_CLOSE:
			options.finish = FINISH_HALF_CLOSE;
			break;
		case OPT_RESET_AFTER_MS:
			options.reset_after_ms = (long)parse_number(
			    "--reset-after-ms", optarg, 86400000);
			break;
		case OPT_CLOSE:
			options.finish = FINISH_CLOSE;
			break;
		case OPT_RESET:
			options.finish = FINISH_RESET;
			break;
		case OPT_EXPECT:
			options.expect =
			    parse_number("--expect", optarg, UINT64_MAX);
			options.expect_set = 1;
			break;
		case OPT_UDP:
			options.udp = 1;
			options.version = 2; /* v1 has no datagram form */
			break;
		default:
			toolkit_usage();
		}
	}
	if (optind + 1 != argc)
		toolkit_usage();
	options.target_text = argv[optind];
}

int main(int argc, char **argv)
{
	struct sockaddr_storage target;
	socklen_t target_len;

	parse_options(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	need_address("ADDR:PORT", options.target_text, &target, &target_len, 0);
	if (options.count > 1)
		return run_many(&target, target_len);
	return run_one(&target, target_len, 0, 1);
}
