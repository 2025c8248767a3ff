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

/*
 * crc32c_table[b] is the reflected Castagnoli polynomial (0x82F63B78)
 * applied to the byte b over 8 bit steps, so the checksum moves one byte
 * per table look-up instead of one bit per step: a 64 KB header is one
 * pass of 64 Ki look-ups.
 */
static const uint32_t crc32c_table[256] = {
	0x00000000u, 0xF26B8303u, 0xE13B70F7u, 0x1350F3F4u, 0xC79A971Fu,
	0x35F1141Cu, 0x26A1E7E8u, 0xD4CA64EBu, 0x8AD958CFu, 0x78B2DBCCu,
	0x6BE22838u, 0x9989AB3Bu, 0x4D43CFD0u, 0xBF284CD3u, 0xAC78BF27u,
	0x5E133C24u, 0x105EC76Fu, 0xE235446Cu, 0xF165B798u, 0x030E349Bu,
	0xD7C45070u, 0x25AFD373u, 0x36FF2087u, 0xC494A384u, 0x9A879FA0u,
	0x68EC1CA3u, 0x7BBCEF57u, 0x89D76C54u, 0x5D1D08BFu, 0xAF768BBCu,
	0xBC267848u, 0x4E4DFB4Bu, 0x20BD8EDEu, 0xD2D60DDDu, 0xC186FE29u,
	0x33ED7D2Au, 0xE72719C1u, 0x154C9AC2u, 0x061C6936u, 0xF477EA35u,
	0xAA64D611u, 0x580F5512u, 0x4B5FA6E6u, 0xB93425E5u, 0x6DFE410Eu,
	0x9F95C20Du, 0x8CC531F9u, 0x7EAEB2FAu, 0x30E349B1u, 0xC288CAB2u,
	0xD1D83946u, 0x23B3BA45u, 0xF779DEAEu, 0x05125DADu, 0x1642AE59u,
	0xE4292D5Au, 0xBA3A117Eu, 0x4851927Du, 0x5B016189u, 0xA96AE28Au,
	0x7DA08661u, 0x8FCB0562u, 0x9C9BF696u, 0x6EF07595u, 0x417B1DBCu,
	0xB3109EBFu, 0xA0406D4Bu, 0x522BEE48u, 0x86E18AA3u, 0x748A09A0u,
	0x67DAFA54u, 0x95B17957u, 0xCBA24573u, 0x39C9C670u, 0x2A993584u,
	0xD8F2B687u, 0x0C38D26Cu, 0xFE53516Fu, 0xED03A29Bu, 0x1F682198u,
	0x5125DAD3u, 0xA34E59D0u, 0xB01EAA24u, 0x42752927u, 0x96BF4DCCu,
	0x64D4CECFu, 0x77843D3Bu, 0x85EFBE38u, 0xDBFC821Cu, 0x2997011Fu,
	0x3AC7F2EBu, 0xC8AC71E8u, 0x1C661503u, 0xEE0D9600u, 0xFD5D65F4u,
	0x0F36E6F7u, 0x61C69362u, 0x93AD1061u, 0x80FDE395u, 0x72966096u,
	0xA65C047Du, 0x5437877Eu, 0x4767748Au, 0xB50CF789u, 0xEB1FCBADu,
	0x197448AEu, 0x0A24BB5Au, 0xF84F3859u, 0x2C855CB2u, 0xDEEEDFB1u,
	0xCDBE2C45u, 0x3FD5AF46u, 0x7198540Du, 0x83F3D70Eu, 0x90A324FAu,
	0x62C8A7F9u, 0xB602C312u, 0x44694011u, 0x5739B3E5u, 0xA55230E6u,
	0xFB410CC2u, 0x092A8FC1u, 0x1A7A7C35u, 0xE811FF36u, 0x3CDB9BDDu,
	0xCEB018DEu, 0xDDE0EB2Au, 0x2F8B6829u, 0x82F63B78u, 0x709DB87Bu,
	0x63CD4B8Fu, 0x91A6C88Cu, 0x456CAC67u, 0xB7072F64u, 0xA457DC90u,
	0x563C5F93u, 0x082F63B7u, 0xFA44E0B4u, 0xE9141340u, 0x1B7F9043u,
	0xCFB5F4A8u, 0x3DDE77ABu, 0x2E8E845Fu, 0xDCE5075Cu, 0x92A8FC17u,
	0x60C37F14u, 0x73938CE0u, 0x81F80FE3u, 0x55326B08u, 0xA759E80Bu,
	0xB4091BFFu, 0x466298FCu, 0x1871A4D8u, 0xEA1A27DBu, 0xF94AD42Fu,
	0x0B21572Cu, 0xDFEB33C7u, 0x2D80B0C4u, 0x3ED04330u, 0xCCBBC033u,
	0xA24BB5A6u, 0x502036A5u, 0x4370C551u, 0xB11B4652u, 0x65D122B9u,
	0x97BAA1BAu, 0x84EA524Eu, 0x7681D14Du, 0x2892ED69u, 0xDAF96E6Au,
	0xC9A99D9Eu, 0x3BC21E9Du, 0xEF087A76u, 0x1D63F975u, 0x0E330A81u,
	0xFC588982u, 0xB21572C9u, 0x407EF1CAu, 0x532E023Eu, 0xA145813Du,
	0x758FE5D6u, 0x87E466D5u, 0x94B49521u, 0x66DF1622u, 0x38CC2A06u,
	0xCAA7A905u, 0xD9F75AF1u, 0x2B9CD9F2u, 0xFF56BD19u, 0x0D3D3E1Au,
	0x1E6DCDEEu, 0xEC064EEDu, 0xC38D26C4u, 0x31E6A5C7u, 0x22B65633u,
	0xD0DDD530u, 0x0417B1DBu, 0xF67C32D8u, 0xE52CC12Cu, 0x1747422Fu,
	0x49547E0Bu, 0xBB3FFD08u, 0xA86F0EFCu, 0x5A048DFFu, 0x8ECEE914u,
	0x7CA56A17u, 0x6FF599E3u, 0x9D9E1AE0u, 0xD3D3E1ABu, 0x21B862A8u,
	0x32E8915Cu, 0xC083125Fu, 0x144976B4u, 0xE622F5B7u, 0xF5720643u,
	0x07198540u, 0x590AB964u, 0xAB613A67u, 0xB831C993u, 0x4A5A4A90u,
	0x9E902E7Bu, 0x6CFBAD78u, 0x7FAB5E8Cu, 0x8DC0DD8Fu, 0xE330A81Au,
	0x115B2B19u, 0x020BD8EDu, 0xF0605BEEu, 0x24AA3F05u, 0xD6C1BC06u,
	0xC5914FF2u, 0x37FACCF1u, 0x69E9F0D5u, 0x9B8273D6u, 0x88D28022u,
	0x7AB90321u, 0xAE7367CAu, 0x5C18E4C9u, 0x4F48173Du, 0xBD23943Eu,
	0xF36E6F75u, 0x0105EC76u, 0x12551F82u, 0xE03E9C81u, 0x34F4F86Au,
	0xC69F7B69u, 0xD5CF889Du, 0x27A40B9Eu, 0x79B737BAu, 0x8BDCB4B9u,
	0x988C474Du, 0x6AE7C44Eu, 0xBE2DA0A5u, 0x4C4623A6u, 0x5F16D052u,
	0xAD7D5351u,
};

static uint32_t crc32c_update_table(uint32_t crc, const uint8_t *data,
				    size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		crc = (crc >> 8) ^ crc32c_table[(crc ^ data[i]) & 0xFFu];
	return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_CRC32C_INSTRUCTION 1

/*
 * SSE4.2's crc32 instruction computes this very CRC (Castagnoli, reflected,
 * register in and out as here), 8 bytes at a time: several times the
 * table's speed. Compiled for SSE4.2 whatever the build's flags, and only
 * called once the CPU says it has it.
 */
__attribute__((target("sse4.2"))) static uint32_t
crc32c_update_instruction(uint32_t crc, const uint8_t *data, size_t len)
{
	uint64_t crc64 = crc, word;

	for (; len >= 8; data += 8, len -= 8) {
		memcpy(&word, data, sizeof(word)); /* x86 is little-endian */
		crc64 = _mm_crc32_u64(crc64, word);
	}
	crc = (uint32_t)crc64;
	for (; len > 0; data++, len--)
		crc = _mm_crc32_u8(crc, *data);
	return crc;
}
#endif

static uint32_t crc32c_update(uint32_t crc, const uint8_t *data, size_t len)
{
#ifdef HAVE_CRC32C_INSTRUCTION
	if (__builtin_cpu_supports("sse4.2"))
		return crc32c_update_instruction(crc, data, len);
#endif
	return crc32c_update_table(crc, data, len);
}

uint32_t proxyhdr_crc32c(const uint8_t *data, size_t len)
{
	return ~crc32c_update(0xFFFFFFFFu, data, len);
}

uint32_t proxyhdr_crc32c_table(const uint8_t *data, size_t len)
{
	return ~crc32c_update_table(0xFFFFFFFFu, data, len);
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

/*
 * Walk the TLVs once, then check the checksum once. The spec (2.2.3) takes
 * the checksum with "the" CRC32C value zeroed: a header carries at most
 * one, and a second is refused rather than checked, since checking each
 * would cost a pass over the whole header per TLV (64 KB holds thousands).
 */
static enum proxyhdr_error check_tlvs(const uint8_t *buf, size_t offset,
				      size_t header_len)
{
	struct tlv tlv, crc_tlv = {0, 0, 0};
	int found, crc_seen = 0;

	while ((found = next_tlv(buf, &offset, header_len, &tlv)) > 0) {
		if (tlv.type == PP2_TYPE_CRC32C) {
			if (crc_seen)
				return PROXYHDR_EV2_CRC32C_TWICE;
			crc_seen = 1;
			crc_tlv = tlv;
		}
		if (tlv.type == PP2_TYPE_UNIQUE_ID &&
		    tlv.value_len > PP2_UNIQUE_ID_MAX)
			return PROXYHDR_EV2_UNIQUE_ID;
	}
	if (found < 0)
		return PROXYHDR_EV2_TLV;
	if (crc_seen && !crc32c_matches(buf, header_len, &crc_tlv))
		return PROXYHDR_EV2_CRC32C;
	return PROXYHDR_OK;
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
	case PROXYHDR_EV2_CRC32C_TWICE:
		return "v2 header has more than one CRC32C TLV";
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
