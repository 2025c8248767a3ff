/*
 * udpclient: a UDP load balancer stand-in for mmproxy's end-to-end tests.
 *
 * From one socket (the load balancer's address:port, as a real UDP load
 * balancer uses one socket for many clients) it sends datagrams to mmproxy,
 * each a PROXY v2 header (PROXY, DGRAM) naming a client followed by a
 * payload, and reads the replies, which come back as plain payload. Every
 * payload starts with the client's index and the datagram's sequence number,
 * so a reply is matched to what was sent and compared byte for byte.
 *
 * Usage: udpclient [OPTIONS] ADDR:PORT          (IPv6 as [::1]:8443)
 * Clients:
 *   -s ADDR:PORT       the one client named in the header (default
 *                      192.0.2.10:40000)
 *   -d ADDR:PORT       address the client reached (default 127.0.0.1:443, or
 *                      [::1]:443 for an IPv6 client)
 *   --clients N        N clients at once instead of -s's one. Client i
 *                      (counted from --first, default 0) is 198.51.100.(i+1)
 *                      for i < 254, then 10.0.0.0 + (i - 253), i.e. 10.x.y.z;
 *                      with -6 it is 2001:db8::1:0 + (i + 1). The port is
 *                      -s's port (default 40000).
 *   --first I          index of the first client with --clients
 *   -6                 IPv6 clients with --clients
 * Datagrams:
 *   -n COUNT           datagrams per client (default 1); round by round, so
 *                      every client has sent once before any sends twice
 *   --size BYTES       payload bytes per datagram (default 64, at least 28)
 *   --window N         at most N datagrams awaiting their reply (default 32),
 *                      so a burst never overflows a socket buffer on the way
 * Bad datagrams, sent once before the good ones, from the same socket:
 *   --bad garbage      bytes that are no PROXY header at all
 *   --bad truncated    a v2 DGRAM header cut off inside its address block
 *   --bad stream       a complete v2 header with STREAM transport + payload
 *   --bad v1           a v1 text header + payload
 *   --bad-source ADDR:PORT   client named in the bad header (default
 *                      192.0.2.66:40066, so a wrongly relayed one shows)
 * Other:
 *   -b ADDR[:PORT]     bind the load balancer's socket to this address first
 *   --expect N         replies expected (default: every good datagram)
 *   -w SECONDS         give up waiting after SECONDS in all (default 10)
 *   -L FILE            write each client's ADDR:PORT to FILE, one a line
 *   -v                 before the summary, one line per client:
 *                      client=ADDR:PORT sent=N replies=M
 *
 * Output, one summary line on stdout:
 *   sent=N replies=M mismatches=K unexpected=U complete=C/T ms=MS
 * sent: good datagrams sent (bad ones are not counted); replies: replies
 * that matched a datagram sent; mismatches: replies of the right form whose
 * bytes differ, or that name no datagram sent; unexpected: replies to a bad
 * datagram, second replies to one datagram, or bytes of no known form;
 * complete: clients that got a reply to every datagram.
 * Exit status: 0 when replies == the expected count and mismatches and
 * unexpected are 0 (with --expect 0 it stops right after sending); 1
 * otherwise (timeout included); 2 bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxyhdr.h"
#include "toolkit.h"

enum { MAX_DATAGRAM = 65535, MIN_SIZE = 28, TAG_LEN = 28 };

enum bad_kind { BAD_NONE, BAD_GARBAGE, BAD_TRUNCATED, BAD_STREAM, BAD_V1 };

struct options {
	const char *target_text;
	const char *src_text;
	const char *dst_text;
	const char *bind_text;
	const char *bad_source_text;
	const char *list_path;
	unsigned long clients; /* 0: the one -s client */
	unsigned long first;
	int ipv6_clients;
	unsigned long count;
	unsigned long size;
	unsigned long window;
	unsigned long expect;
	int expect_given;
	unsigned long timeout_s;
	enum bad_kind bad;
	int verbose;
};

/* One client: its address and what came back for each of its datagrams. */
struct client {
	struct sockaddr_storage addr;
	uint8_t *replied; /* one flag per sequence number */
	unsigned long replies;
};

struct tally {
	unsigned long sent;
	unsigned long replies;
	unsigned long mismatches;
	unsigned long unexpected;
};

const char toolkit_program_name[] = "udpclient";
const char toolkit_synopsis[] =
    "usage: udpclient [-s ADDR:PORT | --clients N [--first I] [-6]]\n"
    "                 [-d ADDR:PORT] [-n COUNT] [--size BYTES]\n"
    "                 [--window N] [--bad garbage|truncated|stream|v1]\n"
    "                 [--bad-source ADDR:PORT] [-b ADDR[:PORT]]\n"
    "                 [--expect N] [-w SECONDS] [-L FILE] [-v] "
    "ADDR:PORT\n";

static struct options options = {
	.src_text = "192.0.2.10:40000",
	.bad_source_text = "192.0.2.66:40066",
	.count = 1,
	.size = 64,
	.window = 32,
	.timeout_s = 10,
};

/* ---- options */

static unsigned long parse_number(const char *option, const char *text,
				  unsigned long min, unsigned long max)
{
	uint64_t value;

	if (toolkit_parse_number(text, min, max, &value) != 0)
		toolkit_die(2, "%s: \"%s\": not a number %lu-%lu", option, text,
			    min, max);
	return value;
}

static void parse_address_option(const char *option, const char *text,
				 struct sockaddr_storage *out,
				 int port_optional)
{
	socklen_t len;

	if (toolkit_parse_address(text, out, &len, port_optional) != 0)
		toolkit_die(2, "%s: \"%s\": not %s with a numeric address",
			    option, text,
			    port_optional ? "ADDR[:PORT] or [IPV6][:PORT]"
					  : "ADDR:PORT or [IPV6]:PORT");
}

static enum bad_kind parse_bad_kind(const char *text)
{
	static const struct {
		const char *name;
		enum bad_kind kind;
	} kinds[] = {
		{"garbage", BAD_GARBAGE},
		{"truncated", BAD_TRUNCATED},
		{"stream", BAD_STREAM},
		{"v1", BAD_V1},
	};

	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (strcmp(text, kinds[i].name) == 0)
			return kinds[i].kind;
	toolkit_die(2, "--bad: \"%s\": not garbage, truncated, stream or v1",
		    text);
}

static void parse_options(int argc, char **argv)
{
	enum {
		OPT_CLIENTS = 256,
		OPT_FIRST,
		OPT_SIZE,
		OPT_WINDOW,
		OPT_BAD,
		OPT_BAD_SOURCE,
		OPT_EXPECT,
	};
	static const struct option long_options[] = {
		{"clients", required_argument, NULL, OPT_CLIENTS},
		{"first", required_argument, NULL, OPT_FIRST},
		{"size", required_argument, NULL, OPT_SIZE},
		{"window", required_argument, NULL, OPT_WINDOW},
		{"bad", required_argument, NULL, OPT_BAD},
		{"bad-source", required_argument, NULL, OPT_BAD_SOURCE},
		{"expect", required_argument, NULL, OPT_EXPECT},
		{NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "s:d:6n:b:w:L:v", long_options,
				NULL)) != -1) {
		switch (c) {
		case 's':
			options.src_text = optarg;
			break;
		case 'd':
			options.dst_text = optarg;
			break;
		case '6':
			options.ipv6_clients = 1;
			break;
		case 'n':
			options.count = parse_number("-n", optarg, 0, 1000000);
			break;
		case 'b':
			options.bind_text = optarg;
			break;
		case 'w':
			options.timeout_s = parse_number("-w", optarg, 1, 3600);
			break;
		case 'L':
			options.list_path = optarg;
			break;
		case 'v':
			options.verbose = 1;
			break;
		case OPT_CLIENTS:
			options.clients =
				parse_number("--clients", optarg, 1, 1000000);
			break;
		case OPT_FIRST:
			options.first =
				parse_number("--first", optarg, 0, 1000000);
			break;
		case OPT_SIZE:
			options.size = parse_number("--size", optarg, MIN_SIZE,
						    MAX_DATAGRAM - 600);
			break;
		case OPT_WINDOW:
			options.window =
				parse_number("--window", optarg, 1, 1000000);
			break;
		case OPT_BAD:
			options.bad = parse_bad_kind(optarg);
			break;
		case OPT_BAD_SOURCE:
			options.bad_source_text = optarg;
			break;
		case OPT_EXPECT:
			options.expect = parse_number("--expect", optarg, 0,
						      ULONG_MAX);
			options.expect_given = 1;
			break;
		default:
			toolkit_usage();
		}
	}
	if (optind + 1 != argc)
		toolkit_usage();
	options.target_text = argv[optind];
}

/* ---- clients and payloads */

/* Client index i of --clients: see the usage comment for the plan. */
static void numbered_client(unsigned long i, uint16_t port,
			    struct sockaddr_storage *out)
{
	memset(out, 0, sizeof *out);
	if (options.ipv6_clients) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
		uint64_t n = (uint64_t)i + 1 + 0x10000;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		in6->sin6_addr.s6_addr[0] = 0x20;
		in6->sin6_addr.s6_addr[1] = 0x01;
		in6->sin6_addr.s6_addr[2] = 0x0d;
		in6->sin6_addr.s6_addr[3] = 0xb8;
		for (int k = 15; k >= 8; k--, n >>= 8)
			in6->sin6_addr.s6_addr[k] = (uint8_t)(n & 0xff);
		return;
	}
	struct sockaddr_in *in = (struct sockaddr_in *)out;
	in->sin_family = AF_INET;
	in->sin_port = htons(port);
	if (i < 254)
		in->sin_addr.s_addr = htonl(0xc6336400u + (uint32_t)i + 1);
	else
		in->sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)(i - 253));
}

/*
 * The payload of datagram seq of client index: a tag naming both, then
 * bytes that depend on both, so a reply that went to the wrong place or
 * came back altered never compares equal.
 */
static void make_payload(unsigned long index, unsigned long seq, uint8_t *out,
			 size_t size)
{
	char tag[TAG_LEN + 1];
	uint64_t state = ((uint64_t)index << 32) ^ seq ^ 0x9e3779b97f4a7c15u;

	snprintf(tag, sizeof tag, "udpclient %08lx %08lx ", index & 0xffffffffu,
		 seq & 0xffffffffu);
	memcpy(out, tag, TAG_LEN);
	toolkit_stream_fill(&state, out + TAG_LEN, size - TAG_LEN);
}

/* Reads the tag of a reply; -1 when it is not one of ours. */
static int parse_tag(const uint8_t *data, size_t len, unsigned long *index,
		     unsigned long *seq)
{
	char text[9];

	if (len < TAG_LEN || memcmp(data, "udpclient ", 10) != 0 ||
	    data[18] != ' ' || data[27] != ' ')
		return -1;
	for (int field = 0; field < 2; field++) {
		char *end;
		memcpy(text, data + 10 + 9 * field, 8);
		text[8] = '\0';
		unsigned long value = strtoul(text, &end, 16);
		if (*end != '\0')
			return -1;
		*(field == 0 ? index : seq) = value;
	}
	return 0;
}

static size_t build_header(uint8_t *out, size_t capacity,
			   enum proxyhdr_transport transport,
			   const struct sockaddr_storage *src,
			   const struct sockaddr_storage *dst)
{
	size_t len = proxyhdr_build_v2(out, capacity, PROXYHDR_CMD_PROXY,
				       transport, (const struct sockaddr *)src,
				       (const struct sockaddr *)dst, NULL, 0, 0);
	if (len == 0)
		toolkit_die(2,
			    "cannot build a v2 header (client and -d families "
			    "differ?)");
	return len;
}

static void default_destination(const struct sockaddr_storage *client,
				struct sockaddr_storage *dst)
{
	const char *fallback =
	    client->ss_family == AF_INET6 ? "[::1]:443" : "127.0.0.1:443";

	parse_address_option(
	    "-d", options.dst_text ? options.dst_text : fallback, dst, 0);
}

/* ---- sending and receiving */

static void send_datagram(int fd, const uint8_t *data, size_t len)
{
	for (;;) {
		ssize_t n = send(fd, data, len, 0);
		if (n >= 0)
			return;
		if (errno == EINTR)
			continue;
		/* An ICMP error from an earlier datagram: not this one's. */
		if (errno == ECONNREFUSED)
			continue;
		if (errno == EAGAIN || errno == ENOBUFS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			poll(&p, 1, 100);
			continue;
		}
		toolkit_die(1, "send: %s", strerror(errno));
	}
}

/* The bad datagram asked for with --bad; its payload is tagged as no client. */
static void send_bad(int fd)
{
	static uint8_t datagram[MAX_DATAGRAM];
	struct sockaddr_storage src, dst;
	size_t len = 0;
	static const char marker[] = "udpclient-bad datagram: must not arrive";

	parse_address_option("--bad-source", options.bad_source_text, &src, 0);
	default_destination(&src, &dst);
	switch (options.bad) {
	case BAD_NONE:
		return;
	case BAD_GARBAGE:
		for (len = 0; len < 64; len++)
			datagram[len] = (uint8_t)("GARBAGE!"[len % 8] ^ len);
		break;
	case BAD_TRUNCATED:
		/* Fixed part and 4 of the address block's 12 (or 36) bytes. */
		len = build_header(datagram, sizeof datagram,
				   PROXYHDR_TRANSPORT_DGRAM, &src, &dst);
		len = PROXYHDR_V2_FIXED_LEN + 4;
		break;
	case BAD_STREAM:
		len = build_header(datagram, sizeof datagram,
				   PROXYHDR_TRANSPORT_STREAM, &src, &dst);
		break;
	case BAD_V1:
		len = proxyhdr_build_v1(datagram, sizeof datagram,
					(const struct sockaddr *)&src,
					(const struct sockaddr *)&dst);
		if (len == 0)
			toolkit_die(2, "cannot build a v1 header");
		break;
	}
	if (options.bad == BAD_STREAM || options.bad == BAD_V1) {
		memcpy(datagram + len, marker, sizeof marker - 1);
		len += sizeof marker - 1;
	}
	send_datagram(fd, datagram, len);
}

/* One reply: match it to the datagram it answers and compare every byte. */
static void take_reply(const uint8_t *data, size_t len, struct client *clients,
		       unsigned long client_count, struct tally *tally)
{
	static uint8_t expected[MAX_DATAGRAM];
	unsigned long index, seq;

	if (parse_tag(data, len, &index, &seq) != 0) {
		tally->unexpected++;
		return;
	}
	if (index < options.first || index - options.first >= client_count ||
	    seq >= options.count) {
		tally->mismatches++;
		return;
	}
	struct client *client = &clients[index - options.first];
	make_payload(index, seq, expected, options.size);
	if (len != options.size || memcmp(data, expected, len) != 0) {
		tally->mismatches++;
		return;
	}
	if (client->replied[seq]) {
		tally->unexpected++;
		return;
	}
	client->replied[seq] = 1;
	client->replies++;
	tally->replies++;
}

/* Reads what is there, waiting at most wait_ms for the first datagram. */
static void receive_replies(int fd, int wait_ms, struct client *clients,
			    unsigned long client_count, struct tally *tally)
{
	static uint8_t buffer[MAX_DATAGRAM + 1];
	struct pollfd p = {.fd = fd, .events = POLLIN};

	if (poll(&p, 1, wait_ms) < 0) {
		if (errno == EINTR)
			return;
		toolkit_die(1, "poll: %s", strerror(errno));
	}
	for (;;) {
		ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR ||
			    errno == ECONNREFUSED)
				return;
			toolkit_die(1, "recv: %s", strerror(errno));
		}
		take_reply(buffer, (size_t)n, clients, client_count, tally);
	}
}

static int open_socket(void)
{
	struct sockaddr_storage target, local;
	int one = 1, buffer_size = 4 << 20;

	parse_address_option("target", options.target_text, &target, 0);
	int fd = socket(target.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		toolkit_die(1, "socket: %s", strerror(errno));
	/* Best effort: the kernel caps it at net.core.rmem_max. */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_size, sizeof buffer_size);
	if (options.bind_text != NULL) {
		parse_address_option("-b", options.bind_text, &local, 1);
		if (local.ss_family != target.ss_family)
			toolkit_die(2, "-b %s: not the family of %s",
				    options.bind_text, options.target_text);
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) <
			0 ||
		    bind(fd, (struct sockaddr *)&local,
			 toolkit_address_length(&local)) < 0)
			toolkit_die(1, "bind %s: %s", options.bind_text,
				    strerror(errno));
	}
	if (connect(fd, (struct sockaddr *)&target,
		    toolkit_address_length(&target)) < 0)
		toolkit_die(1, "connect %s: %s", options.target_text,
			    strerror(errno));
	return fd;
}

static struct client *make_clients(unsigned long *count)
{
	struct sockaddr_storage one;

	parse_address_option("-s", options.src_text, &one, 0);
	*count = options.clients ? options.clients : 1;
	struct client *clients = calloc(*count, sizeof *clients);
	if (clients == NULL)
		toolkit_die(1, "out of memory");
	for (unsigned long i = 0; i < *count; i++) {
		if (options.clients)
			numbered_client(options.first + i,
					toolkit_address_port(&one),
					&clients[i].addr);
		else
			clients[i].addr = one;
		clients[i].replied = calloc(options.count ? options.count : 1,
					    1);
		if (clients[i].replied == NULL)
			toolkit_die(1, "out of memory");
	}
	return clients;
}

static void write_client_list(const struct client *clients,
			      unsigned long count)
{
	char text[INET6_ADDRSTRLEN + 10];
	FILE *file = fopen(options.list_path, "w");

	if (file == NULL)
		toolkit_die(1, "%s: %s", options.list_path, strerror(errno));
	for (unsigned long i = 0; i < count; i++) {
		toolkit_format_address(&clients[i].addr, text, sizeof text);
		fprintf(file, "%s\n", text);
	}
	if (fclose(file) != 0)
		toolkit_die(1, "%s: %s", options.list_path, strerror(errno));
}

int main(int argc, char **argv)
{
	static uint8_t datagram[MAX_DATAGRAM];
	struct tally tally = {0, 0, 0, 0};
	unsigned long client_count;

	parse_options(argc, argv);
	struct client *clients = make_clients(&client_count);
	if (options.list_path != NULL)
		write_client_list(clients, client_count);
	unsigned long total = client_count * options.count;
	unsigned long expect = options.expect_given ? options.expect : total;
	int fd = open_socket();
	int64_t start_ms = toolkit_now_ms();
	int64_t deadline_ms = start_ms + (int64_t)options.timeout_s * 1000;

	send_bad(fd);
	/* Round by round: every client opens its flow before any sends again. */
	while (tally.sent < total || tally.replies < expect) {
		int64_t left_ms = deadline_ms - toolkit_now_ms();
		if (left_ms <= 0)
			break;
		if (tally.sent < total &&
		    tally.sent - tally.replies < options.window) {
			unsigned long i = tally.sent % client_count;
			unsigned long seq = tally.sent / client_count;
			struct client *client = &clients[i];
			struct sockaddr_storage dst;
			default_destination(&client->addr, &dst);
			size_t len = build_header(datagram, sizeof datagram,
						  PROXYHDR_TRANSPORT_DGRAM,
						  &client->addr, &dst);
			make_payload(options.first + i, seq, datagram + len,
				     options.size);
			send_datagram(fd, datagram, len + options.size);
			tally.sent++;
			receive_replies(fd, 0, clients, client_count, &tally);
			continue;
		}
		if (tally.sent >= total && tally.replies >= expect)
			break;
		receive_replies(fd, left_ms > 100 ? 100 : (int)left_ms, clients,
				client_count, &tally);
	}

	unsigned long complete = 0;
	for (unsigned long i = 0; i < client_count; i++) {
		if (clients[i].replies == options.count)
			complete++;
		if (options.verbose) {
			char text[INET6_ADDRSTRLEN + 10];
			toolkit_format_address(&clients[i].addr, text,
					       sizeof text);
			printf("client=%s sent=%lu replies=%lu\n", text,
			       options.count, clients[i].replies);
		}
	}
	printf("sent=%lu replies=%lu mismatches=%lu unexpected=%lu "
	       "complete=%lu/%lu ms=%lld\n",
	       tally.sent, tally.replies, tally.mismatches, tally.unexpected,
	       complete, client_count,
	       (long long)(toolkit_now_ms() - start_ms));
	return tally.replies == expect && tally.mismatches == 0 &&
			       tally.unexpected == 0
		       ? 0
		       : 1;
}
