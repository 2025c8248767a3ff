/*
 * proxyhdr: PROXY protocol header parser and builder (see proxyhdr.h).
 *
 * The parser is called with every byte received so far and must answer
 * INVALID as soon as the bytes seen cannot start a valid header, NEED_MORE
 * while they still can, and COMPLETE once a whole header is in. Each field
 * is therefore checked twice over: as a prefix ("could more bytes make this
 * valid?") while it is still open, and in full once its delimiter arrives.
 *
 * Section numbers refer to haproxy's doc/proxy-protocol.txt.
 */
#include "proxyhdr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* ---- helpers ---- */

static uint16_t load_be16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void store_be16(uint8_t *p, uint16_t value)
{
	p[0] = (uint8_t)(value >> 8);
	p[1] = (uint8_t)value;
}

static void store_be32(uint8_t *p, uint32_t value)
{
	p[0] = (uint8_t)(value >> 24);
	p[1] = (uint8_t)(value >> 16);
	p[2] = (uint8_t)(value >> 8);
	p[3] = (uint8_t)value;
}

static void set_inet(struct sockaddr_storage *storage, const uint8_t addr[4],
		     uint16_t port)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	memcpy(&sin.sin_addr, addr, 4);
	memcpy(storage, &sin, sizeof(sin));
}

static void set_inet6(struct sockaddr_storage *storage, const uint8_t addr[16],
		      uint16_t port)
{
	struct sockaddr_in6 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(port);
	memcpy(&sin6.sin6_addr, addr, 16);
	memcpy(storage, &sin6, sizeof(sin6));
}

/* ---- CRC32C (section 2.2.3, RFC 4960 appendix B) ---- */

/* Reflected Castagnoli polynomial, bit by bit: headers are short. */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *data, size_t len)
{
	size_t i;
	int bit;

	for (i = 0; i < len; i++) {
		crc ^= data[i];
		for (bit = 0; bit < 8; bit++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
	}
	return crc;
}

uint32_t proxyhdr_crc32c(const uint8_t *data, size_t len)
{
	return ~crc32c_update(0xFFFFFFFFu, data, len);
}

/* ---- v1 fields (section 2.1) ---- */

/*
 * A field validator is given the field's bytes and whether its delimiter has
 * been seen. An open field answers FIELD_PARTIAL while more bytes could still
 * make it valid; a closed one answers FIELD_OK or FIELD_BAD.
 */
enum field_result {
	FIELD_OK,
	FIELD_PARTIAL,
	FIELD_BAD,
};

static int is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static int hex_value(uint8_t c)
{
	if (is_digit(c))
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decimal 0..max without leading zeros: the rule for octets and ports. */
static enum field_result parse_decimal(const uint8_t *s, size_t n, int closed,
				       uint32_t max, uint32_t *value)
{
	uint32_t v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!is_digit(s[i]) || (i == 1 && v == 0))
			return FIELD_BAD;
		v = v * 10 + (uint32_t)(s[i] - '0');
		if (v > max)
			return FIELD_BAD;
	}
	if (!closed)
		return FIELD_PARTIAL;
	if (n == 0)
		return FIELD_BAD;
	*value = v;
	return FIELD_OK;
}

static enum field_result parse_port(const uint8_t *s, size_t n, int closed,
				    uint16_t *port)
{
	uint32_t v = 0;
	enum field_result result = parse_decimal(s, n, closed, 65535, &v);

	*port = (uint16_t)v;
	return result;
}

/* Four decimal octets, one dot between each. */
static enum field_result parse_ipv4(const uint8_t *s, size_t n, int closed,
				    uint8_t addr[4])
{
	size_t octet, start = 0, i;
	uint32_t v = 0;

	for (octet = 0; octet < 4; octet++) {
		for (i = start; i < n && s[i] != '.'; i++)
			;
		if (i == n) /* the last octet so far */
			break;
		if (octet == 3 || parse_decimal(s + start, i - start, 1, 255,
						&v) != FIELD_OK)
			return FIELD_BAD;
		addr[octet] = (uint8_t)v;
		start = i + 1;
	}
	switch (parse_decimal(s + start, n - start, closed, 255, &v)) {
	case FIELD_BAD:
		return FIELD_BAD;
	case FIELD_PARTIAL:
		return FIELD_PARTIAL;
	case FIELD_OK:
		break;
	}
	if (octet != 3)
		return FIELD_BAD;
	addr[3] = (uint8_t)v;
	return FIELD_OK;
}

#define NO_GAP 8

/*
 * Check the group count (all 8, or fewer and a "::" for the rest) and lay
 * the groups out in 16 bytes, the gap filled with zeros.
 */
static enum field_result finish_ipv6(const uint16_t groups[8], size_t count,
				     size_t gap, uint8_t addr[16])
{
	size_t head = gap == NO_GAP ? count : gap;
	size_t tail = count - head;
	size_t i;

	if (gap == NO_GAP ? count != 8 : count > 7)
		return FIELD_BAD;
	memset(addr, 0, 16);
	for (i = 0; i < head; i++)
		store_be16(addr + 2 * i, groups[i]);
	for (i = 0; i < tail; i++)
		store_be16(addr + 2 * (8 - tail + i), groups[head + i]);
	return FIELD_OK;
}

/*
 * Hex groups of 1 to 4 digits separated by one colon, at most one "::"
 * standing for one or more zero groups, 128 bits in all. The last 32 bits
 * may be a dotted quad ("::ffff:192.0.2.1"): senders that print with
 * inet_ntop() write IPv4-mapped addresses that way.
 */
static enum field_result parse_ipv6(const uint8_t *s, size_t n, int closed,
				    uint8_t addr[16])
{
	uint16_t groups[8];
	size_t count = 0;       /* groups completed */
	size_t gap = NO_GAP;    /* where "::" stands among the groups */
	size_t digits = 0;      /* in the group being read */
	size_t colons = 0;      /* colons just before this byte */
	size_t group_start = 0; /* first byte of the group being read */
	unsigned value = 0;
	uint8_t quad[4];
	size_t i;

	for (i = 0; i < n; i++) {
		int hex = hex_value(s[i]);

		if (hex >= 0) {
			/* A leading colon only ever starts "::". */
			if (digits == 4 || (colons == 1 && count == 0 &&
					    gap == NO_GAP))
				return FIELD_BAD;
			if (digits == 0)
				group_start = i;
			value = value << 4 | (unsigned)hex;
			digits++;
			colons = 0;
		} else if (s[i] == ':') {
			if (digits > 0) {
				groups[count++] = (uint16_t)value;
				value = 0;
				digits = 0;
				colons = 1;
			} else if (colons == 1) {
				if (gap != NO_GAP)
					return FIELD_BAD;
				gap = count;
				colons = 2;
			} else if (colons == 0) { /* first byte */
				colons = 1;
			} else {
				return FIELD_BAD;
			}
		} else if (s[i] == '.' && digits > 0) {
			/* The dotted quad is the last two groups. */
			enum field_result result;

			if (gap == NO_GAP ? count != 6 : count + 1 + 2 > 8)
				return FIELD_BAD;
			result = parse_ipv4(s + group_start, n - group_start,
					    closed, quad);
			if (result != FIELD_OK)
				return result;
			groups[count++] = load_be16(quad);
			groups[count++] = load_be16(quad + 2);
			return finish_ipv6(groups, count, gap, addr);
		} else {
			return FIELD_BAD;
		}
		/* Groups seen, plus one for the gap and one a colon owes. */
		if (count + (gap != NO_GAP) + (digits > 0) + (colons == 1) > 8)
			return FIELD_BAD;
	}
	if (!closed)
		return FIELD_PARTIAL;
	if (digits > 0)
		groups[count++] = (uint16_t)value;
	else if (colons != 2)
		return FIELD_BAD; /* empty, or a single trailing colon */
	return finish_ipv6(groups, count, gap, addr);
}

/* ---- v1 line (section 2.1) ---- */

static enum proxyhdr_status fail(enum proxyhdr_error *why,
				 enum proxyhdr_error error)
{
	*why = error;
	return PROXYHDR_INVALID;
}

/* The bytes ran out: wait for more, unless 107 went by without a CRLF. */
static enum proxyhdr_status ran_out(size_t end, enum proxyhdr_error *why)
{
	if (end >= PROXYHDR_V1_MAX_LEN)
		return fail(why, PROXYHDR_EV1_TOO_LONG);
	return PROXYHDR_NEED_MORE;
}

/*
 * Move *pos to the byte ending the field that starts there (SP, CR or LF)
 * and return that byte, or -1 when the bytes end first.
 */
static int field_end(const uint8_t *buf, size_t *pos, size_t end)
{
	for (; *pos < end; (*pos)++) {
		uint8_t c = buf[*pos];

		if (c == ' ' || c == '\r' || c == '\n')
			return c;
	}
	return -1;
}

/* pos is at the CR that should end the line. */
static enum proxyhdr_status expect_crlf(const uint8_t *buf, size_t pos,
					size_t end, size_t *header_len,
					enum proxyhdr_error *why)
{
	if (buf[pos] != '\r')
		return fail(why, PROXYHDR_EV1_SYNTAX);
	if (pos + 1 == end)
		return ran_out(end, why);
	if (buf[pos + 1] != '\n')
		return fail(why, PROXYHDR_EV1_SYNTAX);
	*header_len = pos + 2;
	return PROXYHDR_COMPLETE;
}

enum v1_protocol {
	V1_TCP4,
	V1_TCP6,
	V1_UNKNOWN,
	V1_PROTOCOLS,
};

static const char *const v1_protocol_names[V1_PROTOCOLS] = {
	[V1_TCP4] = "TCP4",
	[V1_TCP6] = "TCP6",
	[V1_UNKNOWN] = "UNKNOWN",
};

/*
 * Which protocol the n bytes name: its index when they name one exactly,
 * V1_PROTOCOLS when they only start one, -1 when they start none.
 */
static int match_protocol(const uint8_t *s, size_t n)
{
	int found = -1;
	int i;

	for (i = 0; i < V1_PROTOCOLS; i++) {
		size_t name_len = strlen(v1_protocol_names[i]);

		if (n > name_len || memcmp(s, v1_protocol_names[i], n) != 0)
			continue;
		if (n == name_len)
			return i;
		found = V1_PROTOCOLS;
	}
	return found;
}

/* "UNKNOWN": the rest of the line, up to CRLF, is ignored. */
static enum proxyhdr_status parse_v1_unknown(const uint8_t *buf, size_t pos,
					     size_t end, struct proxyhdr *hdr,
					     enum proxyhdr_error *why)
{
	while (pos < end && buf[pos] != '\r' && buf[pos] != '\n')
		pos++;
	if (pos == end)
		return ran_out(end, why);
	hdr->family = AF_UNSPEC;
	hdr->transport = PROXYHDR_TRANSPORT_UNSPEC;
	return expect_crlf(buf, pos, end, &hdr->header_len, why);
}

/* "TCP4"/"TCP6": src SP dst SP sport SP dport CRLF, pos after "TCPx SP". */
static enum proxyhdr_status parse_v1_tcp(const uint8_t *buf, size_t pos,
					 size_t end, int family,
					 struct proxyhdr *hdr,
					 enum proxyhdr_error *why)
{
	uint8_t addr[2][16];
	uint16_t port[2] = {0, 0};
	int field;

	for (field = 0; field < 4; field++) {
		size_t start = pos;
		int delimiter = field_end(buf, &pos, end);
		int closed = delimiter >= 0;
		enum field_result result;

		if (closed && pos == start)
			return fail(why, PROXYHDR_EV1_SYNTAX);
		if (field >= 2)
			result = parse_port(buf + start, pos - start, closed,
					    &port[field - 2]);
		else if (family == AF_INET)
			result = parse_ipv4(buf + start, pos - start, closed,
					    addr[field]);
		else
			result = parse_ipv6(buf + start, pos - start, closed,
					    addr[field]);
		if (result == FIELD_BAD)
			return fail(why, field >= 2 ? PROXYHDR_EV1_PORT
						    : PROXYHDR_EV1_ADDRESS);
		if (!closed)
			return ran_out(end, why);
		if (delimiter != (field < 3 ? ' ' : '\r'))
			return fail(why, PROXYHDR_EV1_SYNTAX);
		if (field < 3)
			pos++;
	}
	hdr->family = family;
	hdr->transport = PROXYHDR_TRANSPORT_STREAM;
	if (family == AF_INET) {
		set_inet(&hdr->src, addr[0], port[0]);
		set_inet(&hdr->dst, addr[1], port[1]);
	} else {
		set_inet6(&hdr->src, addr[0], port[0]);
		set_inet6(&hdr->dst, addr[1], port[1]);
	}
	return expect_crlf(buf, pos, end, &hdr->header_len, why);
}

static enum proxyhdr_status parse_v1(const uint8_t *buf, size_t len,
				     struct proxyhdr *hdr,
				     enum proxyhdr_error *why)
{
	static const char prefix[] = "PROXY ";
	size_t end = len < PROXYHDR_V1_MAX_LEN ? len : PROXYHDR_V1_MAX_LEN;
	size_t pos, start;
	int delimiter, protocol;

	for (pos = 0; pos < sizeof(prefix) - 1; pos++) {
		if (pos == end)
			return ran_out(end, why);
		if (buf[pos] != (uint8_t)prefix[pos])
			return fail(why, pos < 5 ? PROXYHDR_ENOT_PROXY
						 : PROXYHDR_EV1_SYNTAX);
	}
	hdr->version = 1;
	hdr->command = PROXYHDR_CMD_PROXY;

	start = pos;
	delimiter = field_end(buf, &pos, end);
	if (delimiter >= 0 && pos == start)
		return fail(why, PROXYHDR_EV1_SYNTAX);
	protocol = match_protocol(buf + start, pos - start);
	if (protocol < 0 || (delimiter >= 0 && protocol == V1_PROTOCOLS))
		return fail(why, PROXYHDR_EV1_PROTOCOL);
	if (delimiter < 0)
		return ran_out(end, why);
	if (protocol == V1_UNKNOWN)
		return parse_v1_unknown(buf, pos, end, hdr, why);
	if (delimiter != ' ')
		return fail(why, PROXYHDR_EV1_SYNTAX);
	return parse_v1_tcp(buf, pos + 1, end,
			    protocol == V1_TCP4 ? AF_INET : AF_INET6, hdr, why);
}

/* ---- v2 (section 2.2) ---- */

static const uint8_t v2_signature[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

enum {
	PP2_VERSION = 0x20,
	PP2_CMD_LOCAL = 0x00,
	PP2_CMD_PROXY = 0x01,
	PP2_FAM_UNSPEC = 0x00,
	PP2_FAM_INET = 0x10,
	PP2_FAM_INET6 = 0x20,
	PP2_FAM_UNIX = 0x30,
	PP2_ADDR_LEN_INET = 12,
	PP2_ADDR_LEN_INET6 = 36,
	PP2_ADDR_LEN_UNIX = 216,
	PP2_CRC32C_LEN = 4,
	PP2_UNIQUE_ID_MAX = 128,
	PP2_TLV_HEADER_LEN = 3,
};

/* Address block length by family nibble. */
static const size_t v2_addr_len[4] = {
	0, PP2_ADDR_LEN_INET, PP2_ADDR_LEN_INET6, PP2_ADDR_LEN_UNIX,
};

struct tlv {
	uint8_t type;
	size_t value_offset;
	size_t value_len;
};

/*
 * Step over the TLV at *offset, which must end by end: 1 when *tlv holds
 * it, 0 at end, -1 when it runs past end.
 */
static int next_tlv(const uint8_t *buf, size_t *offset, size_t end,
		    struct tlv *tlv)
{
	if (*offset >= end)
		return 0;
	if (end - *offset < PP2_TLV_HEADER_LEN)
		return -1;
	tlv->type = buf[*offset];
	tlv->value_len = load_be16(buf + *offset + 1);
	tlv->value_offset = *offset + PP2_TLV_HEADER_LEN;
	if (end - tlv->value_offset < tlv->value_len)
		return -1;
	*offset = tlv->value_offset + tlv->value_len;
	return 1;
}

/* The checksum of the whole header with the TLV's 4 value bytes as zeros. */
static int crc32c_matches(const uint8_t *buf, size_t header_len,
			  const struct tlv *tlv)
{
	static const uint8_t zeros[PP2_CRC32C_LEN];
	size_t after = tlv->value_offset + PP2_CRC32C_LEN;
	uint32_t crc = 0xFFFFFFFFu;

	if (tlv->value_len != PP2_CRC32C_LEN)
		return 0;
	crc = crc32c_update(crc, buf, tlv->value_offset);
	crc = crc32c_update(crc, zeros, sizeof(zeros));
	crc = crc32c_update(crc, buf + after, header_len - after);
	return ~crc == load_be32(buf + tlv->value_offset);
}

static enum proxyhdr_error check_tlvs(const uint8_t *buf, size_t offset,
				      size_t header_len)
{
	struct tlv tlv;
	int found;

	while ((found = next_tlv(buf, &offset, header_len, &tlv)) > 0) {
		if (tlv.type == PP2_TYPE_CRC32C &&
		    !crc32c_matches(buf, header_len, &tlv))
			return PROXYHDR_EV2_CRC32C;
		if (tlv.type == PP2_TYPE_UNIQUE_ID &&
		    tlv.value_len > PP2_UNIQUE_ID_MAX)
			return PROXYHDR_EV2_UNIQUE_ID;
	}
	return found < 0 ? PROXYHDR_EV2_TLV : PROXYHDR_OK;
}

static void set_v2_addresses(const uint8_t *block, int family,
			     struct proxyhdr *hdr)
{
	if (family == AF_INET) {
		set_inet(&hdr->src, block, load_be16(block + 8));
		set_inet(&hdr->dst, block + 4, load_be16(block + 10));
	} else if (family == AF_INET6) {
		set_inet6(&hdr->src, block, load_be16(block + 32));
		set_inet6(&hdr->dst, block + 16, load_be16(block + 34));
	}
}

static enum proxyhdr_status parse_v2(const uint8_t *buf, size_t len,
				     struct proxyhdr *hdr,
				     enum proxyhdr_error *why)
{
	static const int families[4] = {AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX};
	size_t i, addr_len, block_len;
	unsigned command, family, transport;
	enum proxyhdr_error error;

	for (i = 0; i < sizeof(v2_signature); i++) {
		if (i == len)
			return PROXYHDR_NEED_MORE;
		if (buf[i] != v2_signature[i])
			return fail(why, PROXYHDR_ENOT_PROXY);
	}
	if (len < 13)
		return PROXYHDR_NEED_MORE;
	if ((buf[12] & 0xF0) != PP2_VERSION)
		return fail(why, PROXYHDR_EV2_VERSION);
	command = buf[12] & 0x0Fu;
	if (command != PP2_CMD_LOCAL && command != PP2_CMD_PROXY)
		return fail(why, PROXYHDR_EV2_COMMAND);
	if (len < 14)
		return PROXYHDR_NEED_MORE;
	family = (unsigned)buf[13] >> 4;
	transport = buf[13] & 0x0Fu;
	if (family > 3 || transport > PROXYHDR_TRANSPORT_DGRAM)
		return fail(why, PROXYHDR_EV2_FAMILY);
	if (len < PROXYHDR_V2_FIXED_LEN)
		return PROXYHDR_NEED_MORE;
	addr_len = load_be16(buf + 14);
	block_len = v2_addr_len[family];
	/* LOCAL ignores the address block, so any length will do. */
	if (command == PP2_CMD_PROXY && addr_len < block_len)
		return fail(why, PROXYHDR_EV2_ADDR_LEN);
	if (len - PROXYHDR_V2_FIXED_LEN < addr_len)
		return PROXYHDR_NEED_MORE;

	hdr->header_len = PROXYHDR_V2_FIXED_LEN + addr_len;
	hdr->version = 2;
	hdr->transport = (enum proxyhdr_transport)transport;
	if (command == PP2_CMD_LOCAL || family == 0) {
		/* Skip len bytes unread: there is nothing to trust in them. */
		hdr->command = command == PP2_CMD_LOCAL ? PROXYHDR_CMD_LOCAL
							: PROXYHDR_CMD_PROXY;
		hdr->family = AF_UNSPEC;
		return PROXYHDR_COMPLETE;
	}
	hdr->command = PROXYHDR_CMD_PROXY;
	hdr->family = families[family];
	hdr->tlv_offset = PROXYHDR_V2_FIXED_LEN + block_len;
	hdr->tlv_len = addr_len - block_len;
	error = check_tlvs(buf, hdr->tlv_offset, hdr->header_len);
	if (error != PROXYHDR_OK)
		return fail(why, error);
	set_v2_addresses(buf + PROXYHDR_V2_FIXED_LEN, hdr->family, hdr);
	return PROXYHDR_COMPLETE;
}

/* ---- public parser ---- */

enum proxyhdr_status proxyhdr_parse(const uint8_t *buf, size_t len,
				    struct proxyhdr *out,
				    enum proxyhdr_error *error)
{
	struct proxyhdr hdr;
	enum proxyhdr_error why = PROXYHDR_OK;
	enum proxyhdr_status status;

	memset(&hdr, 0, sizeof(hdr));
	if (len == 0)
		status = PROXYHDR_NEED_MORE;
	else if (buf[0] == v2_signature[0])
		status = parse_v2(buf, len, &hdr, &why);
	else
		status = parse_v1(buf, len, &hdr, &why);
	if (status == PROXYHDR_COMPLETE)
		*out = hdr;
	if (error)
		*error = why;
	return status;
}

const char *proxyhdr_strerror(enum proxyhdr_error error)
{
	switch (error) {
	case PROXYHDR_OK:
		return "no error";
	case PROXYHDR_ENOT_PROXY:
		return "not a PROXY protocol header";
	case PROXYHDR_EV1_TOO_LONG:
		return "v1 line has no CRLF within 107 bytes";
	case PROXYHDR_EV1_SYNTAX:
		return "v1 line has misplaced spaces, CR or LF, or wrong fields";
	case PROXYHDR_EV1_PROTOCOL:
		return "v1 protocol is not TCP4, TCP6 or UNKNOWN";
	case PROXYHDR_EV1_ADDRESS:
		return "v1 address is not valid for the protocol named";
	case PROXYHDR_EV1_PORT:
		return "v1 port is not a number 0-65535";
	case PROXYHDR_EV2_VERSION:
		return "v2 version is not 2";
	case PROXYHDR_EV2_COMMAND:
		return "v2 command is neither LOCAL nor PROXY";
	case PROXYHDR_EV2_FAMILY:
		return "v2 address family or transport is unknown";
	case PROXYHDR_EV2_ADDR_LEN:
		return "v2 length is shorter than the address block";
	case PROXYHDR_EV2_TLV:
		return "v2 TLV runs past the end of the header";
	case PROXYHDR_EV2_CRC32C:
		return "v2 CRC32C checksum is malformed or does not match";
	case PROXYHDR_EV2_UNIQUE_ID:
		return "v2 unique ID is longer than 128 bytes";
	}
	return "unknown error";
}

int proxyhdr_find_tlv(const uint8_t *buf, const struct proxyhdr *header,
		      uint8_t type, const uint8_t **value, size_t *value_len)
{
	size_t offset = header->tlv_offset;
	size_t end = header->tlv_offset + header->tlv_len;
	struct tlv tlv;

	while (next_tlv(buf, &offset, end, &tlv) > 0) {
		if (tlv.type == type) {
			*value = buf + tlv.value_offset;
			*value_len = tlv.value_len;
			return 1;
		}
	}
	return 0;
}

/* ---- builders ---- */

/* The address bytes and port (host order) of an AF_INET/AF_INET6 address. */
static size_t address_bytes(const struct sockaddr *sa, uint8_t addr[16],
			    uint16_t *port)
{
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;

		memcpy(&sin, sa, sizeof(sin));
		memcpy(addr, &sin.sin_addr, 4);
		*port = ntohs(sin.sin_port);
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, sa, sizeof(sin6));
		memcpy(addr, &sin6.sin6_addr, 16);
		*port = ntohs(sin6.sin6_port);
		return 16;
	}
	return 0;
}

size_t proxyhdr_build_v1(uint8_t *out, size_t capacity,
			 const struct sockaddr *src, const struct sockaddr *dst)
{
	char line[PROXYHDR_V1_MAX_LEN + 1];
	char src_text[INET6_ADDRSTRLEN], dst_text[INET6_ADDRSTRLEN];
	uint8_t src_addr[16], dst_addr[16];
	uint16_t src_port, dst_port;
	size_t addr_len;
	int family, n;

	if (!src && !dst) {
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	} else {
		if (!src || !dst || src->sa_family != dst->sa_family)
			return 0;
		addr_len = address_bytes(src, src_addr, &src_port);
		if (addr_len == 0)
			return 0;
		address_bytes(dst, dst_addr, &dst_port);
		family = src->sa_family;
		if (!inet_ntop(family, src_addr, src_text, sizeof(src_text)) ||
		    !inet_ntop(family, dst_addr, dst_text, sizeof(dst_text)))
			return 0;
		n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
			     family == AF_INET ? "TCP4" : "TCP6", src_text,
			     dst_text, (unsigned)src_port, (unsigned)dst_port);
	}
	if (n < 0 || (size_t)n >= sizeof(line) || (size_t)n > capacity)
		return 0;
	memcpy(out, line, (size_t)n);
	return (size_t)n;
}

size_t proxyhdr_build_v2(uint8_t *out, size_t capacity,
			 enum proxyhdr_command command,
			 enum proxyhdr_transport transport,
			 const struct sockaddr *src, const struct sockaddr *dst,
			 const uint8_t *tlvs, size_t tlvs_len, int with_crc32c)
{
	uint8_t src_addr[16], dst_addr[16];
	uint16_t src_port = 0, dst_port = 0;
	size_t addr_len = 0, block_len = 0, body_len, total, pos;
	uint8_t family = PP2_FAM_UNSPEC;

	if (transport > PROXYHDR_TRANSPORT_DGRAM ||
	    (command != PROXYHDR_CMD_LOCAL && command != PROXYHDR_CMD_PROXY))
		return 0;
	if (command == PROXYHDR_CMD_PROXY && (src || dst)) {
		if (!src || !dst || src->sa_family != dst->sa_family)
			return 0;
		addr_len = address_bytes(src, src_addr, &src_port);
		if (addr_len == 0)
			return 0;
		address_bytes(dst, dst_addr, &dst_port);
		family = addr_len == 4 ? PP2_FAM_INET : PP2_FAM_INET6;
		block_len = 2 * addr_len + 4;
	}
	if (tlvs_len > 0 && !tlvs)
		return 0;
	body_len = block_len + tlvs_len +
		   (with_crc32c ? PP2_TLV_HEADER_LEN + PP2_CRC32C_LEN : 0);
	if (body_len > 0xFFFF)
		return 0;
	total = PROXYHDR_V2_FIXED_LEN + body_len;
	if (total > capacity)
		return 0;

	memcpy(out, v2_signature, sizeof(v2_signature));
	out[12] = (uint8_t)(PP2_VERSION | (command == PROXYHDR_CMD_PROXY
						   ? PP2_CMD_PROXY
						   : PP2_CMD_LOCAL));
	out[13] = (uint8_t)(family | transport);
	store_be16(out + 14, (uint16_t)body_len);
	pos = PROXYHDR_V2_FIXED_LEN;
	if (block_len > 0) {
		memcpy(out + pos, src_addr, addr_len);
		memcpy(out + pos + addr_len, dst_addr, addr_len);
		store_be16(out + pos + 2 * addr_len, src_port);
		store_be16(out + pos + 2 * addr_len + 2, dst_port);
		pos += block_len;
	}
	if (tlvs_len > 0)
		memcpy(out + pos, tlvs, tlvs_len);
	pos += tlvs_len;
	if (with_crc32c) {
		out[pos] = PP2_TYPE_CRC32C;
		store_be16(out + pos + 1, PP2_CRC32C_LEN);
		memset(out + pos + PP2_TLV_HEADER_LEN, 0, PP2_CRC32C_LEN);
		store_be32(out + pos + PP2_TLV_HEADER_LEN,
			   proxyhdr_crc32c(out, total));
	}
	return total;
}
