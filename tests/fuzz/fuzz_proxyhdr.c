/*
 * libFuzzer harness for proxyhdr_parse(). It asserts properties rather than
 * answers, and aborts on the first one broken:
 *  - the status and error agree, and strerror has a sentence for the error;
 *  - COMPLETE never claims more bytes than it was given, nor fewer than the
 *    shortest header, and its TLV area lies inside the header;
 *  - answers grow consistently with the input: along its prefixes the parser
 *    says NEED_MORE, then sticks to one final answer (the same INVALID
 *    reason, or COMPLETE with the same header_len), so every proper prefix
 *    of a valid header answers NEED_MORE;
 *  - the exact header bytes alone parse to the same result;
 *  - an IPv4/IPv6 header rebuilt with proxyhdr_build_v1/_v2 from the parsed
 *    addresses parses back to the same addresses;
 *  - proxyhdr_find_tlv() only points inside the header, and a complete
 *    header holds at most one CRC32C TLV;
 *  - the CRC32C of the input is the same by the CPU's instruction (where
 *    the parser uses it) and by the table.
 * Every parse runs on a heap copy of exactly its bytes, so ASan sees any
 * read past them. tests/fuzz/replay_main.c runs this over the kept corpus
 * in `make test`.
 */
#include "proxyhdr.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "fuzz_proxyhdr:%d: property broken: " \
					"%s\n",                                \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

/* Shortest possible headers: "PROXY UNKNOWN\r\n" and the v2 fixed part. */
#define V1_MIN_LEN 15

static enum proxyhdr_status parse_exact(const uint8_t *data, size_t len,
					struct proxyhdr *out,
					enum proxyhdr_error *error)
{
	uint8_t *copy = malloc(len ? len : 1);
	enum proxyhdr_status status;

	CHECK(copy != NULL);
	if (len)
		memcpy(copy, data, len);
	status = proxyhdr_parse(copy, len, out, error);
	free(copy);
	return status;
}

/* Family, address bytes and ports of an AF_INET/AF_INET6 sockaddr. */
static int same_endpoint(const struct sockaddr_storage *a,
			 const struct sockaddr_storage *b)
{
	struct sockaddr_in a4, b4;
	struct sockaddr_in6 a6, b6;

	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		memcpy(&a4, a, sizeof(a4));
		memcpy(&b4, b, sizeof(b4));
		return a4.sin_port == b4.sin_port &&
		       memcmp(&a4.sin_addr, &b4.sin_addr, 4) == 0;
	}
	memcpy(&a6, a, sizeof(a6));
	memcpy(&b6, b, sizeof(b6));
	return a6.sin6_port == b6.sin6_port &&
	       memcmp(&a6.sin6_addr, &b6.sin6_addr, 16) == 0;
}

static void check_same_header(const struct proxyhdr *a,
			      const struct proxyhdr *b)
{
	CHECK(a->header_len == b->header_len);
	CHECK(a->version == b->version);
	CHECK(a->command == b->command);
	CHECK(a->transport == b->transport);
	CHECK(a->family == b->family);
	CHECK(memcmp(&a->src, &b->src, sizeof(a->src)) == 0);
	CHECK(memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0);
	CHECK(a->tlv_offset == b->tlv_offset);
	CHECK(a->tlv_len == b->tlv_len);
}

static void check_rebuild(const struct proxyhdr *h)
{
	const struct sockaddr *src = (const struct sockaddr *)&h->src;
	const struct sockaddr *dst = (const struct sockaddr *)&h->dst;
	uint8_t buf[128];
	struct proxyhdr again;
	size_t n;

	if (h->family != AF_INET && h->family != AF_INET6)
		return;
	n = proxyhdr_build_v1(buf, sizeof(buf), src, dst);
	CHECK(n >= V1_MIN_LEN && n <= PROXYHDR_V1_MAX_LEN);
	CHECK(parse_exact(buf, n, &again, NULL) == PROXYHDR_COMPLETE);
	CHECK(again.header_len == n && again.version == 1);
	CHECK(again.family == h->family);
	CHECK(same_endpoint(&again.src, &h->src));
	CHECK(same_endpoint(&again.dst, &h->dst));

	n = proxyhdr_build_v2(buf, sizeof(buf), PROXYHDR_CMD_PROXY,
			      h->transport, src, dst, NULL, 0, 1);
	CHECK(n > PROXYHDR_V2_FIXED_LEN);
	CHECK(parse_exact(buf, n, &again, NULL) == PROXYHDR_COMPLETE);
	CHECK(again.header_len == n && again.version == 2);
	CHECK(again.family == h->family && again.transport == h->transport);
	CHECK(same_endpoint(&again.src, &h->src));
	CHECK(same_endpoint(&again.dst, &h->dst));
}

/* Walk the TLV area (the parser checked it lies inside the header). */
static size_t count_tlvs(const uint8_t *data, const struct proxyhdr *h,
			 uint8_t type)
{
	size_t pos = h->tlv_offset, end = h->tlv_offset + h->tlv_len;
	size_t count = 0;

	while (pos < end) {
		CHECK(end - pos >= 3);
		count += data[pos] == type;
		pos += 3 + ((size_t)data[pos + 1] << 8 | data[pos + 2]);
		CHECK(pos <= end);
	}
	return count;
}

static void check_tlvs(const uint8_t *data, const struct proxyhdr *h)
{
	static const uint8_t types[] = {PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY,
					PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID,
					PP2_TYPE_SSL};
	const uint8_t *value;
	size_t value_len, i;

	for (i = 0; i < sizeof(types); i++) {
		if (!proxyhdr_find_tlv(data, h, types[i], &value, &value_len))
			continue;
		CHECK(value >= data + h->tlv_offset);
		CHECK(value + value_len <= data + h->tlv_offset + h->tlv_len);
		if (types[i] == PP2_TYPE_CRC32C)
			CHECK(value_len == 4);
		if (types[i] == PP2_TYPE_UNIQUE_ID)
			CHECK(value_len <= 128);
	}
	CHECK(count_tlvs(data, h, PP2_TYPE_CRC32C) <= 1);
}

/*
 * The prefix lengths to try, in increasing order: all of them for short
 * inputs, otherwise the start, an even sample, and the last bytes.
 */
static size_t next_split(size_t k, size_t size)
{
	size_t step = size / 64;

	if (size <= 256 || k < 32 || k + 32 >= size || step == 0)
		return k + 1;
	if (k + step + 32 >= size)
		return size - 32;
	return k + step;
}

/* Along growing prefixes: NEED_MORE, then the final answer for good. */
static void check_prefixes(const uint8_t *data, size_t size,
			   enum proxyhdr_status final,
			   enum proxyhdr_error final_error,
			   const struct proxyhdr *final_header)
{
	int settled = 0;
	size_t k;

	for (k = 0; k < size; k = next_split(k, size)) {
		struct proxyhdr h;
		enum proxyhdr_error error = PROXYHDR_OK;
		enum proxyhdr_status status = parse_exact(data, k, &h, &error);

		if (status == PROXYHDR_NEED_MORE) {
			CHECK(!settled);
			continue;
		}
		settled = 1;
		CHECK(status == final);
		if (status == PROXYHDR_INVALID) {
			CHECK(error == final_error);
		} else {
			/* A proper prefix of the header never completes. */
			CHECK(k >= final_header->header_len);
			check_same_header(&h, final_header);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyhdr h, exact;
	enum proxyhdr_error error = PROXYHDR_EV2_UNIQUE_ID;
	enum proxyhdr_status status;

	memset(&h, 0, sizeof(h));
	status = proxyhdr_parse(data, size, &h, &error);
	CHECK(status == PROXYHDR_NEED_MORE || status == PROXYHDR_INVALID ||
	      status == PROXYHDR_COMPLETE);
	CHECK((status == PROXYHDR_INVALID) == (error != PROXYHDR_OK));
	CHECK(proxyhdr_strerror(error) != NULL);
	CHECK(proxyhdr_crc32c(data, size) == proxyhdr_crc32c_table(data, size));
	check_prefixes(data, size, status, error, &h);
	if (status != PROXYHDR_COMPLETE)
		return 0;

	CHECK(h.header_len <= size);
	CHECK(h.header_len >= V1_MIN_LEN);
	CHECK(h.version == 1 || h.version == 2);
	if (h.version == 1)
		CHECK(h.header_len <= PROXYHDR_V1_MAX_LEN && h.tlv_len == 0);
	else
		CHECK(h.header_len >= PROXYHDR_V2_FIXED_LEN);
	CHECK(h.tlv_offset + h.tlv_len <= h.header_len);

	CHECK(parse_exact(data, h.header_len, &exact, NULL) ==
	      PROXYHDR_COMPLETE);
	check_same_header(&exact, &h);
	check_tlvs(data, &h);
	check_rebuild(&h);
	return 0;
}
