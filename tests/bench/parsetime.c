/*
 * parsetime: how long proxyhdr_parse() takes on the headers that matter
 * for its cost, in one process, no sockets (see tests/bench/README.md).
 *
 *   parsetime [MILLISECONDS]
 *
 * For each header it parses the same bytes over and over for MILLISECONDS
 * (default 300) and prints "RESULT NAME BYTES US_PER_PARSE PARSES". The
 * largest valid header (65,551 bytes, its CRC32C checked over all of them)
 * bounds what one header can cost a connection process or the UDP loop;
 * a small header is the everyday case. It exits 1 if a header does not get
 * the answer it should.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proxyhdr.h"
#include "toolkit.h"

const char toolkit_program_name[] = "parsetime";
const char toolkit_synopsis[] = "usage: parsetime [MILLISECONDS]\n";

/* Parses between clock readings: small enough for a 28-byte header not to
 * overshoot the budget by much, large enough for the clock not to count. */
#define PARSES_PER_BATCH 64

struct header {
	const char *name;
	uint8_t bytes[PROXYHDR_MAX_LEN];
	size_t len;
	enum proxyhdr_status want;
};

static struct header headers[3];

static void inet_pair(struct sockaddr_in *src, struct sockaddr_in *dst)
{
	memset(src, 0, sizeof(*src));
	memset(dst, 0, sizeof(*dst));
	src->sin_family = dst->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &src->sin_addr);
	inet_pton(AF_INET, "198.51.100.1", &dst->sin_addr);
	src->sin_port = htons(56324);
	dst->sin_port = htons(443);
}

/*
 * A TLV area of len (>= 258) bytes: NOOP TLVs with 255-byte values, the
 * last one taking what is left over, so the walk is part of the cost.
 */
static void fill_noops(uint8_t *tlvs, size_t len)
{
	size_t count = len / 258, i, value_len;

	for (i = 0; i < count; i++) {
		value_len = i + 1 < count ? 255 : len - 258 * i - 3;
		tlvs[258 * i] = PP2_TYPE_NOOP;
		tlvs[258 * i + 1] = (uint8_t)(value_len >> 8);
		tlvs[258 * i + 2] = (uint8_t)value_len;
		memset(tlvs + 258 * i + 3, 0, value_len);
	}
}

static void build(struct header *h, const char *name, enum proxyhdr_status want,
		  const uint8_t *tlvs, size_t tlvs_len, int with_crc32c)
{
	struct sockaddr_in src, dst;

	inet_pair(&src, &dst);
	h->name = name;
	h->want = want;
	h->len = proxyhdr_build_v2(
		h->bytes, sizeof(h->bytes), PROXYHDR_CMD_PROXY,
		PROXYHDR_TRANSPORT_STREAM, (struct sockaddr *)&src,
		(struct sockaddr *)&dst, tlvs, tlvs_len, with_crc32c);
}

static void build_headers(void)
{
	static uint8_t tlvs[65535];
	const size_t largest_tlvs_len = 65535 - 12 - 7;
	const size_t many_crc_len = 9350 * 7;
	size_t pos;

	build(&headers[0], "v2-inet", PROXYHDR_COMPLETE, NULL, 0, 0);

	/* The 16-bit length filled: address block, NOOPs, one CRC32C. */
	fill_noops(tlvs, largest_tlvs_len);
	build(&headers[1], "v2-largest-valid", PROXYHDR_COMPLETE, tlvs,
	      largest_tlvs_len, 1);

	/* Issue 13's header: 64 KB of CRC32C TLVs; refused at the second. */
	for (pos = 0; pos < many_crc_len; pos += 7)
		memcpy(tlvs + pos,
		       (const uint8_t[]){PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0}, 7);
	build(&headers[2], "v2-9350-crc32c", PROXYHDR_INVALID, tlvs,
	      many_crc_len, 0);
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Parse h for budget seconds; the mean time per parse, in microseconds. */
static double time_parses(const struct header *h, double budget,
			  unsigned long *parses)
{
	struct proxyhdr parsed;
	double start = now_seconds(), elapsed;
	int i;

	*parses = 0;
	do {
		for (i = 0; i < PARSES_PER_BATCH; i++)
			if (proxyhdr_parse(h->bytes, h->len, &parsed, NULL) !=
			    h->want)
				toolkit_die(1, "%s: not the answer wanted",
					    h->name);
		*parses += PARSES_PER_BATCH;
		elapsed = now_seconds() - start;
	} while (elapsed < budget);
	return elapsed * 1e6 / (double)*parses;
}

int main(int argc, char **argv)
{
	uint64_t milliseconds = 300;
	unsigned long parses;
	size_t i;
	double us;

	if (argc > 2 || (argc == 2 && toolkit_parse_number(argv[1], 1, 60000,
							   &milliseconds) != 0))
		toolkit_usage();
	build_headers();
	for (i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		if (headers[i].len == 0)
			toolkit_die(1, "%s: not built", headers[i].name);
		us = time_parses(&headers[i], (double)milliseconds / 1000,
				 &parses);
		printf("RESULT %s %zu %.3f %lu\n", headers[i].name,
		       headers[i].len, us, parses);
	}
	return 0;
}
