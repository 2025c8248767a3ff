/*
 * Unit tests for proxyhdr: a table of headers with the answer each must get,
 * then the properties every valid header must have (each proper prefix
 * answers NEED_MORE; trailing payload is not counted), build/parse round
 * trips, TLV lookup and the CRC32C check values.
 *
 * Usage: proxyhdr_test [GROUP]. Prints "ok NAME" or "FAIL NAME: why" per
 * case and exits 1 if any failed, 2 on an unknown group. Every parse runs
 * on a heap copy of exactly the bytes given, so ASan catches a read past
 * them.
 */
#include "proxyhdr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- table notation ---- */

#define SIG                                                                    \
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
#define BYTES(...)                                                             \
	(const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})
#define TEXT(s) (const uint8_t *)(s), sizeof(s) - 1
#define R4(x) x, x, x, x
#define R8(x) R4(x), R4(x)
#define R16(x) R8(x), R8(x)
#define R32(x) R16(x), R16(x)
#define R64(x) R32(x), R32(x)
#define R128(x) R64(x), R64(x)

/* Address blocks used by many v2 cases. */
#define INET_BLOCK                                                             \
	192, 0, 2, 1,     /* src 192.0.2.1 */                                  \
	198, 51, 100, 1,  /* dst 198.51.100.1 */                               \
	0xDC, 0x04,       /* sport 56324 */                                    \
	0x01, 0xBB        /* dport 443 */
#define FFFF8 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

struct want {
	int version;
	enum proxyhdr_command command;
	enum proxyhdr_transport transport;
	int family;
	const char *src; /* NULL: the address must be left zeroed */
	const char *dst;
	unsigned src_port;
	unsigned dst_port;
	size_t header_len;
};

struct parse_case {
	const char *group;
	const char *name;
	const uint8_t *bytes;
	size_t len;
	enum proxyhdr_status status;
	enum proxyhdr_error error;
	struct want want;
};

#define CMD_PROXY PROXYHDR_CMD_PROXY
#define CMD_LOCAL PROXYHDR_CMD_LOCAL
#define STREAM PROXYHDR_TRANSPORT_STREAM
#define DGRAM PROXYHDR_TRANSPORT_DGRAM
#define UNSPEC PROXYHDR_TRANSPORT_UNSPEC
#define ACCEPT(...) PROXYHDR_COMPLETE, PROXYHDR_OK, {__VA_ARGS__}
#define REJECT(e) PROXYHDR_INVALID, PROXYHDR_##e, {0}
#define WAIT PROXYHDR_NEED_MORE, PROXYHDR_OK, {0}

static const struct parse_case cases[] = {
	/* ---- v1 accepted (section 2.1) ---- */
	{"v1-accept", "v1 TCP4",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 45)},
	{"v1-accept", "v1 TCP4 with the largest values",
	 TEXT("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET, "255.255.255.255",
		"255.255.255.255", 65535, 65535, 56)},
	{"v1-accept", "v1 TCP4 with zeros everywhere",
	 TEXT("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET, "0.0.0.0", "0.0.0.0", 0, 0,
		32)},
	{"v1-accept", "v1 TCP4 followed by payload that is not counted",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 45)},
	{"v1-accept", "v1 TCP6 compressed",
	 TEXT("PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET6, "2001:db8::1", "2001:db8::2",
		56324, 443, 46)},
	{"v1-accept", "v1 TCP6 all eight groups, upper case",
	 TEXT("PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:0db8:0000:0000:0000:0000:0000:0002 1 2\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET6, "2001:db8::1", "2001:db8::2",
		1, 2, 77)},
	{"v1-accept", "v1 TCP6 at the longest (104 bytes)",
	 TEXT("PROXY TCP6 " FFFF8 " " FFFF8 " 65535 65535\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET6, FFFF8, FFFF8, 65535, 65535,
		104)},
	{"v1-accept", "v1 TCP6 all zeros and loopback",
	 TEXT("PROXY TCP6 :: ::1 0 65535\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET6, "::", "::1", 0, 65535, 27)},
	{"v1-accept", "v1 TCP6 with the gap at the end or standing for one group",
	 TEXT("PROXY TCP6 2001:db8:: 1:2:3:4:5:6:7:: 80 8080\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET6, "2001:db8::",
		"1:2:3:4:5:6:7:0", 80, 8080, 47)},
	{"v1-accept", "v1 TCP6 IPv4-mapped in dotted form",
	 TEXT("PROXY TCP6 ::ffff:192.0.2.1 0:0:0:0:0:ffff:198.51.100.1 1 2\r\n"),
	 ACCEPT(1, CMD_PROXY, STREAM, AF_INET6, "::ffff:192.0.2.1",
		"::ffff:198.51.100.1", 1, 2, 61)},
	{"v1-accept", "v1 UNKNOWN short form",
	 TEXT("PROXY UNKNOWN\r\n"),
	 ACCEPT(1, CMD_PROXY, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 15)},
	{"v1-accept", "v1 UNKNOWN with addresses ignored",
	 TEXT("PROXY UNKNOWN 192.0.2.1 198.51.100.1 56324 443\r\n"),
	 ACCEPT(1, CMD_PROXY, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 48)},
	{"v1-accept", "v1 UNKNOWN with nonsense ignored",
	 TEXT("PROXY UNKNOWN  whatever,  01.999 :::\r\nX"),
	 ACCEPT(1, CMD_PROXY, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 38)},
	{"v1-accept", "v1 UNKNOWN at the 107-byte limit",
	 TEXT("PROXY UNKNOWN " FFFF8 " " FFFF8 " 65535 65535\r\n"),
	 ACCEPT(1, CMD_PROXY, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 107)},

	/* ---- v1 invalid ---- */
	{"v1-invalid", "v1 HTTP request", TEXT("GET / HTTP/1.1\r\n"),
	 REJECT(ENOT_PROXY)},
	{"v1-invalid", "v1 lowercase proxy",
	 TEXT("proxy TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"),
	 REJECT(ENOT_PROXY)},
	{"v1-invalid", "v1 no space after PROXY", TEXT("PROXYTCP4"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 two spaces after PROXY",
	 TEXT("PROXY  TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 two spaces between addresses",
	 TEXT("PROXY TCP4 192.0.2.1  198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 space before CRLF",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443 \r\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 tab instead of space",
	 TEXT("PROXY TCP4\t192.0.2.1 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_PROTOCOL)},
	{"v1-invalid", "v1 lowercase protocol",
	 TEXT("PROXY tcp4 192.0.2.1 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_PROTOCOL)},
	{"v1-invalid", "v1 UDP4", TEXT("PROXY UDP4 192.0.2.1 198.51.100.1 1 2\r\n"),
	 REJECT(EV1_PROTOCOL)},
	{"v1-invalid", "v1 protocol cut short", TEXT("PROXY TCP 192.0.2.1\r\n"),
	 REJECT(EV1_PROTOCOL)},
	{"v1-invalid", "v1 UNKNOWN with a suffix", TEXT("PROXY UNKNOWNX\r\n"),
	 REJECT(EV1_PROTOCOL)},
	{"v1-invalid", "v1 no protocol", TEXT("PROXY \r\n"), REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 ends with a bare LF",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 UNKNOWN ends with a bare LF", TEXT("PROXY UNKNOWN\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 CR not followed by LF",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\rX"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 UNKNOWN with a lone CR", TEXT("PROXY UNKNOWN a\rb\r\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 TCP4 with nothing after it", TEXT("PROXY TCP4\r\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 missing destination port",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 missing destination address",
	 TEXT("PROXY TCP4 192.0.2.1\r\n"), REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 extra field",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443 80\r\n"),
	 REJECT(EV1_SYNTAX)},
	{"v1-invalid", "v1 108 bytes with CRLF at the end",
	 TEXT("PROXY UNKNOWN " FFFF8 " " FFFF8 " 65535 655350\r\n"),
	 REJECT(EV1_TOO_LONG)},
	{"v1-invalid", "v1 UNKNOWN without CRLF in 107 bytes",
	 TEXT("PROXY UNKNOWN " FFFF8 FFFF8 "fffffffffffffff"),
	 REJECT(EV1_TOO_LONG)},
	{"v1-invalid", "v1 octet 256",
	 TEXT("PROXY TCP4 256.1.1.1 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 octet with a leading zero",
	 TEXT("PROXY TCP4 01.2.3.4 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 three octets",
	 TEXT("PROXY TCP4 192.0.2 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 five octets",
	 TEXT("PROXY TCP4 192.0.2.1.5 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 empty octet",
	 TEXT("PROXY TCP4 192..2.1 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 trailing dot",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100. 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 port 65536",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 65536 443\r\n"),
	 REJECT(EV1_PORT)},
	{"v1-invalid", "v1 port with a leading zero",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 56324 080\r\n"),
	 REJECT(EV1_PORT)},
	{"v1-invalid", "v1 negative port",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 -1 443\r\n"), REJECT(EV1_PORT)},
	{"v1-invalid", "v1 port 99999999999 does not wrap",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 99999999999 443\r\n"),
	 REJECT(EV1_PORT)},
	{"v1-invalid", "v1 TCP6 with IPv4 addresses",
	 TEXT("PROXY TCP6 192.0.2.1 198.51.100.1 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 TCP4 with IPv6 addresses",
	 TEXT("PROXY TCP4 2001:db8::1 2001:db8::2 56324 443\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with three colons",
	 TEXT("PROXY TCP6 1:::2 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with nine groups",
	 TEXT("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with seven groups and no gap",
	 TEXT("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with a gap and eight groups",
	 TEXT("PROXY TCP6 1::2:3:4:5:6:7:8 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with two gaps",
	 TEXT("PROXY TCP6 1::2::3 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with a non-hex digit", TEXT("PROXY TCP6 ::g ::1 1 2\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 group of five digits",
	 TEXT("PROXY TCP6 12345:: ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with a single leading colon",
	 TEXT("PROXY TCP6 :1::2 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 with a single trailing colon",
	 TEXT("PROXY TCP6 1::2: ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 a lone colon", TEXT("PROXY TCP6 : ::1 1 2\r\n"),
	 REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 dotted part with a leading zero",
	 TEXT("PROXY TCP6 ::ffff:192.0.2.01 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 dotted part not last",
	 TEXT("PROXY TCP6 ::1.2.3.4:5 ::1 1 2\r\n"), REJECT(EV1_ADDRESS)},
	{"v1-invalid", "v1 IPv6 dotted part with too many groups",
	 TEXT("PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n"),
	 REJECT(EV1_ADDRESS)},

	/* ---- answers on partial input: invalid early, or wait ---- */
	{"early", "empty input waits", (const uint8_t *)"", 0, WAIT},
	{"early", "first byte of GET is invalid", TEXT("G"), REJECT(ENOT_PROXY)},
	{"early", "P waits", TEXT("P"), WAIT},
	{"early", "PROXY TCP5 is invalid before CRLF", TEXT("PROXY TCP5"),
	 REJECT(EV1_PROTOCOL)},
	{"early", "PROXY and two spaces is invalid before CRLF", TEXT("PROXY  "),
	 REJECT(EV1_SYNTAX)},
	{"early", "an octet over 255 is invalid before its space",
	 TEXT("PROXY TCP4 256"), REJECT(EV1_ADDRESS)},
	{"early", "a port with a leading zero is invalid before CRLF",
	 TEXT("PROXY TCP4 192.0.2.1 198.51.100.1 01"), REJECT(EV1_PORT)},
	{"early", "a colon in a TCP4 address is invalid at once",
	 TEXT("PROXY TCP4 1:"), REJECT(EV1_ADDRESS)},
	{"early", "an open TCP4 line waits", TEXT("PROXY TCP4 192.0.2.1 198.51"),
	 WAIT},
	{"early", "an open dotted IPv6 waits", TEXT("PROXY TCP6 ::ffff:192.0"),
	 WAIT},
	{"early", "106 bytes of UNKNOWN wait",
	 TEXT("PROXY UNKNOWN " FFFF8 " " FFFF8 " 65535 65535\r"), WAIT},
	{"early", "v2 signature mismatch at byte 4 is invalid at once",
	 BYTES(0x0D, 0x0A, 0x0D, 0x0B), REJECT(ENOT_PROXY)},
	{"early", "v2 signature alone waits", BYTES(SIG), WAIT},
	{"early", "v2 version 1 is invalid before the length arrives",
	 BYTES(SIG, 0x11), REJECT(EV2_VERSION)},
	{"early", "v2 short INET length is invalid before the block arrives",
	 BYTES(SIG, 0x21, 0x11, 0x00, 0x0B), REJECT(EV2_ADDR_LEN)},
	{"early", "v2 fixed part with a long length waits",
	 BYTES(SIG, 0x21, 0x11, 0xFF, 0xFF), WAIT},

	/* ---- v2 accepted (section 2.2) ---- */
	{"v2-accept", "v2 PROXY TCP over IPv4",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 ACCEPT(2, CMD_PROXY, STREAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 28)},
	{"v2-accept", "v2 PROXY UDP over IPv4",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x12,             /* INET, DGRAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 ACCEPT(2, CMD_PROXY, DGRAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 28)},
	{"v2-accept", "v2 PROXY unspecified transport over IPv4",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x10,             /* INET, UNSPEC */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 ACCEPT(2, CMD_PROXY, UNSPEC, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 28)},
	{"v2-accept", "v2 PROXY TCP over IPv6",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x21,             /* INET6, STREAM */
	       0x00, 0x24,       /* len 36 */
	       0x20, 0x01, 0x0D, 0xB8, R8(0), 0, 0, 0, 1, /* src 2001:db8::1 */
	       0x20, 0x01, 0x0D, 0xB8, R8(0), 0, 0, 0, 2, /* dst 2001:db8::2 */
	       0xDC, 0x04,       /* sport 56324 */
	       0x01, 0xBB),      /* dport 443 */
	 ACCEPT(2, CMD_PROXY, STREAM, AF_INET6, "2001:db8::1", "2001:db8::2",
		56324, 443, 52)},
	{"v2-accept", "v2 PROXY over IPv4 followed by payload not counted",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK,
	       'G', 'E', 'T', ' '), /* payload */
	 ACCEPT(2, CMD_PROXY, STREAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 28)},
	{"v2-accept", "v2 LOCAL with no address",
	 BYTES(SIG,
	       0x20,             /* version 2, LOCAL */
	       0x00,             /* UNSPEC, UNSPEC */
	       0x00, 0x00),      /* len 0 */
	 ACCEPT(2, CMD_LOCAL, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 16)},
	{"v2-accept", "v2 LOCAL with a non-zero length skips it unread",
	 BYTES(SIG,
	       0x20,             /* version 2, LOCAL */
	       0x00,             /* UNSPEC, UNSPEC */
	       0x00, 0x05,       /* len 5 */
	       0xFF, 0xFF, 0xFF, 0xFF, 0xFF), /* not TLVs, ignored */
	 ACCEPT(2, CMD_LOCAL, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 21)},
	{"v2-accept", "v2 LOCAL naming INET with a short block",
	 BYTES(SIG,
	       0x20,             /* version 2, LOCAL */
	       0x11,             /* INET, STREAM */
	       0x00, 0x03,       /* len 3: less than an INET block */
	       1, 2, 3),         /* ignored */
	 ACCEPT(2, CMD_LOCAL, STREAM, AF_UNSPEC, NULL, NULL, 0, 0, 19)},
	{"v2-accept", "v2 PROXY with UNSPEC family skips the block",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x00,             /* UNSPEC, UNSPEC */
	       0x00, 0x04,       /* len 4 */
	       0x03, 0x00, 0x09, 0x00), /* ignored, not walked as TLVs */
	 ACCEPT(2, CMD_PROXY, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 20)},
	{"v2-accept", "v2 PROXY UNIX stream",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x31,             /* UNIX, STREAM */
	       0x00, 0xD8,       /* len 216 */
	       '/', 'a', R64(0), R32(0), R8(0), 0, 0, /* src path, 108 */
	       '/', 'b', R64(0), R32(0), R8(0), 0, 0), /* dst path, 108 */
	 ACCEPT(2, CMD_PROXY, STREAM, AF_UNIX, NULL, NULL, 0, 0, 232)},
	{"v2-accept", "v2 TLVs after the block: AUTHORITY, NOOP, custom",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x21,       /* len 12 + 14 + 3 + 4 = 33 */
	       INET_BLOCK,
	       0x02, 0x00, 0x0B, /* AUTHORITY, length 11 */
	       'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm',
	       0x04, 0x00, 0x00, /* NOOP, length 0 */
	       0xE0, 0x00, 0x01, /* custom type, length 1 */
	       0x7F),
	 ACCEPT(2, CMD_PROXY, STREAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 49)},
	{"v2-accept", "v2 CRC32C that matches",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x13,       /* len 12 + 7 = 19 */
	       INET_BLOCK,
	       0x03, 0x00, 0x04, /* CRC32C, length 4 */
	       0x73, 0x7E, 0xE9, 0x19), /* checksum, computed independently */
	 ACCEPT(2, CMD_PROXY, STREAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 35)},
	{"v2-accept", "v2 UNIQUE_ID of 128 bytes",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x8F,       /* len 12 + 3 + 128 = 143 */
	       INET_BLOCK,
	       0x05, 0x00, 0x80, /* UNIQUE_ID, length 128 */
	       R128('u')),
	 ACCEPT(2, CMD_PROXY, STREAM, AF_INET, "192.0.2.1", "198.51.100.1",
		56324, 443, 159)},

	/* ---- v2 invalid ---- */
	{"v2-invalid", "v2 last signature byte wrong",
	 BYTES(0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
	       0x54, 0x0B,       /* signature, last byte wrong */
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 REJECT(ENOT_PROXY)},
	{"v2-invalid", "v2 version 1",
	 BYTES(SIG,
	       0x11,             /* version 1, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 REJECT(EV2_VERSION)},
	{"v2-invalid", "v2 version 3",
	 BYTES(SIG,
	       0x31,             /* version 3, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 REJECT(EV2_VERSION)},
	{"v2-invalid", "v2 command 3",
	 BYTES(SIG,
	       0x23,             /* version 2, command 3 */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 REJECT(EV2_COMMAND)},
	{"v2-invalid", "v2 family 4",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x41,             /* family 4, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 REJECT(EV2_FAMILY)},
	{"v2-invalid", "v2 transport 3",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x13,             /* INET, transport 3 */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 REJECT(EV2_FAMILY)},
	{"v2-invalid", "v2 INET with len shorter than its block",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0B,       /* len 11 */
	       192, 0, 2, 1,     /* src */
	       198, 51, 100, 1,  /* dst */
	       0xDC, 0x04, 0x01), /* ports cut short */
	 REJECT(EV2_ADDR_LEN)},
	{"v2-invalid", "v2 INET6 with an INET-sized block",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x21,             /* INET6, STREAM */
	       0x00, 0x0C,       /* len 12 */
	       INET_BLOCK),
	 REJECT(EV2_ADDR_LEN)},
	{"v2-invalid", "v2 UNIX with len shorter than its block",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x31,             /* UNIX, STREAM */
	       0x00, 0xD7),      /* len 215 */
	 REJECT(EV2_ADDR_LEN)},
	{"v2-invalid", "v2 TLV value past the end",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x11,       /* len 12 + 5 = 17 */
	       INET_BLOCK,
	       0x02, 0x00, 0x05, /* AUTHORITY, length 5 */
	       'a', 'b'),        /* only 2 bytes inside len */
	 REJECT(EV2_TLV)},
	{"v2-invalid", "v2 TLV header cut by the end",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x0E,       /* len 12 + 2 = 14 */
	       INET_BLOCK,
	       0x04, 0x00),      /* NOOP, length byte missing */
	 REJECT(EV2_TLV)},
	{"v2-invalid", "v2 CRC32C that does not match",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x13,       /* len 12 + 7 = 19 */
	       INET_BLOCK,
	       0x03, 0x00, 0x04, /* CRC32C, length 4 */
	       0x73, 0x7E, 0xE9, 0x18), /* checksum, last bit flipped */
	 REJECT(EV2_CRC32C)},
	{"v2-invalid", "v2 CRC32C of length 3",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x12,       /* len 12 + 6 = 18 */
	       INET_BLOCK,
	       0x03, 0x00, 0x03, /* CRC32C, length 3 */
	       0x73, 0x7E, 0xE9),
	 REJECT(EV2_CRC32C)},
	{"v2-invalid", "v2 UNIQUE_ID of 129 bytes",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x90,       /* len 12 + 3 + 129 = 144 */
	       INET_BLOCK,
	       0x05, 0x00, 0x81, /* UNIQUE_ID, length 129 */
	       R128('u'), 'u'),
	 REJECT(EV2_UNIQUE_ID)},
	{"v2-invalid", "v2 with two CRC32C TLVs, each of which alone would match",
	 BYTES(SIG,
	       0x21,             /* version 2, PROXY */
	       0x11,             /* INET, STREAM */
	       0x00, 0x21,       /* len 12 + 7 + 7 + 7 = 33 */
	       INET_BLOCK,
	       0x03, 0x00, 0x04, /* CRC32C, length 4 */
	       0x00, 0x00, 0x00, 0x00,
	       0x03, 0x00, 0x04, /* CRC32C again, length 4 */
	       0x00, 0x00, 0x00, 0x00,
	       0x04, 0x00, 0x04, /* NOOP, length 4 */
	       0x68, 0xA1, 0xBF, 0x41), /* makes the header's checksum 0 */
	 REJECT(EV2_CRC32C_TWICE)},
};

#define N_CASES (sizeof(cases) / sizeof(cases[0]))

/* ---- reporting ---- */

static const char *only_group;
static int failures;
static int passes;

static int selected(const char *group)
{
	return !only_group || strcmp(only_group, group) == 0;
}

/* Print the outcome: why is NULL on success. */
static void report(const char *name, const char *why)
{
	if (why) {
		printf("FAIL %s: %s\n", name, why);
		failures++;
	} else {
		printf("ok %s\n", name);
		passes++;
	}
}

static char why_buf[512];

__attribute__((format(printf, 1, 2))) static const char *
why(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why_buf, sizeof(why_buf), fmt, ap);
	va_end(ap);
	return why_buf;
}

static const char *status_name(enum proxyhdr_status status)
{
	static const char *const names[] = {"NEED_MORE", "INVALID", "COMPLETE"};

	return (unsigned)status < 3 ? names[status] : "?";
}

/* ---- parsing helpers ---- */

/*
 * Parse a heap copy holding exactly len bytes of bytes followed by
 * extra_len bytes of extra, so that ASan sees any read past the end.
 */
static enum proxyhdr_status parse_exact(const uint8_t *bytes, size_t len,
					const uint8_t *extra, size_t extra_len,
					struct proxyhdr *out,
					enum proxyhdr_error *error)
{
	uint8_t *copy = malloc(len + extra_len + 1);
	enum proxyhdr_status status;

	if (!copy) {
		perror("malloc");
		exit(1);
	}
	if (len)
		memcpy(copy, bytes, len);
	if (extra_len)
		memcpy(copy + len, extra, extra_len);
	status = proxyhdr_parse(copy, len + extra_len, out, error);
	free(copy);
	return status;
}

static void address_text(const struct sockaddr_storage *ss, char *text,
			 size_t size, unsigned *port)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	text[0] = '\0';
	*port = 0;
	if (ss->ss_family == AF_INET) {
		memcpy(&sin, ss, sizeof(sin));
		inet_ntop(AF_INET, &sin.sin_addr, text, (socklen_t)size);
		*port = ntohs(sin.sin_port);
	} else if (ss->ss_family == AF_INET6) {
		memcpy(&sin6, ss, sizeof(sin6));
		inet_ntop(AF_INET6, &sin6.sin6_addr, text, (socklen_t)size);
		*port = ntohs(sin6.sin6_port);
	}
}

static int is_zeroed(const struct sockaddr_storage *ss)
{
	static const struct sockaddr_storage zero;

	return memcmp(ss, &zero, sizeof(zero)) == 0;
}

static const char *check_address(const char *which,
				 const struct sockaddr_storage *ss,
				 const char *want_text, unsigned want_port)
{
	char text[INET6_ADDRSTRLEN];
	unsigned port;

	if (!want_text)
		return is_zeroed(ss) ? NULL
				     : why("%s address should be zeroed", which);
	address_text(ss, text, sizeof(text), &port);
	if (strcmp(text, want_text) != 0)
		return why("%s address %s, want %s", which, text, want_text);
	if (port != want_port)
		return why("%s port %u, want %u", which, port, want_port);
	return NULL;
}

static const char *check_fields(const struct proxyhdr *h, const struct want *w)
{
	const char *fail;

	if (h->header_len != w->header_len)
		return why("header_len %zu, want %zu", h->header_len,
			   w->header_len);
	if (h->version != w->version)
		return why("version %d, want %d", h->version, w->version);
	if (h->command != w->command)
		return why("command %d, want %d", h->command, w->command);
	if (h->transport != w->transport)
		return why("transport %d, want %d", h->transport, w->transport);
	if (h->family != w->family)
		return why("family %d, want %d", h->family, w->family);
	if ((fail = check_address("src", &h->src, w->src, w->src_port)) ||
	    (fail = check_address("dst", &h->dst, w->dst, w->dst_port)))
		return fail;
	if (h->version == 1 && (h->tlv_offset || h->tlv_len))
		return why("v1 header with a TLV area");
	if (h->tlv_offset + h->tlv_len > h->header_len)
		return why("TLV area past the header");
	return NULL;
}

static const char *run_case(const struct parse_case *c)
{
	struct proxyhdr h;
	enum proxyhdr_error error = PROXYHDR_OK;
	enum proxyhdr_status status;

	status = parse_exact(c->bytes, c->len, NULL, 0, &h, &error);
	if (status != c->status)
		return why("status %s (%s), want %s", status_name(status),
			   proxyhdr_strerror(error), status_name(c->status));
	if (status == PROXYHDR_INVALID && error != c->error)
		return why("error \"%s\", want \"%s\"",
			   proxyhdr_strerror(error),
			   proxyhdr_strerror(c->error));
	if (status != PROXYHDR_INVALID && error != PROXYHDR_OK)
		return why("error set to \"%s\" without INVALID",
			   proxyhdr_strerror(error));
	if (status == PROXYHDR_COMPLETE)
		return check_fields(&h, &c->want);
	return NULL;
}

/*
 * Every proper prefix of a valid header answers NEED_MORE, and the header
 * followed by payload answers with the same length: a header split at any
 * point, or sharing its last segment with data, parses the same.
 */
static const char *check_split(const struct parse_case *c)
{
	static const uint8_t payload[] = "\x16\x03\x01\x00\x05hello\r\n";
	size_t header_len = c->want.header_len;
	enum proxyhdr_error error;
	struct proxyhdr h;
	enum proxyhdr_status status;
	size_t k;

	for (k = 0; k < header_len; k++) {
		status = parse_exact(c->bytes, k, NULL, 0, &h, &error);
		if (status != PROXYHDR_NEED_MORE)
			return why("prefix of %zu bytes: %s (%s)", k,
				   status_name(status),
				   proxyhdr_strerror(error));
	}
	status = parse_exact(c->bytes, header_len, payload, sizeof(payload) - 1,
			     &h, &error);
	if (status != PROXYHDR_COMPLETE)
		return why("with payload: %s", status_name(status));
	return check_fields(&h, &c->want);
}

/* ---- builders, TLVs, CRC ---- */

static struct sockaddr_storage inet_address(const char *text, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	memset(&ss, 0, sizeof(ss));
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET, text, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)port);
		memcpy(&ss, &sin, sizeof(sin));
	} else if (inet_pton(AF_INET6, text, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)port);
		memcpy(&ss, &sin6, sizeof(sin6));
	} else {
		fprintf(stderr, "bad test address %s\n", text);
		exit(1);
	}
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* Build from the given endpoints, parse back and compare. */
static const char *round_trip(int version, enum proxyhdr_transport transport,
			      const char *src, unsigned src_port,
			      const char *dst, unsigned dst_port,
			      const char *want_line)
{
	struct sockaddr_storage s = inet_address(src, src_port);
	struct sockaddr_storage d = inet_address(dst, dst_port);
	struct want w = {version, CMD_PROXY, transport, s.ss_family, src, dst,
			 src_port, dst_port, 0};
	uint8_t buf[PROXYHDR_V1_MAX_LEN + 64];
	enum proxyhdr_error error;
	struct proxyhdr h;
	size_t n;

	if (version == 1)
		n = proxyhdr_build_v1(buf, sizeof(buf), SA(s), SA(d));
	else
		n = proxyhdr_build_v2(buf, sizeof(buf), CMD_PROXY, transport,
				      SA(s), SA(d), NULL, 0, 0);
	if (n == 0)
		return why("builder refused");
	if (want_line && (n != strlen(want_line) || memcmp(buf, want_line, n)))
		return why("built \"%.*s\", want \"%s\"", (int)n, buf,
			   want_line);
	w.header_len = n;
	if (parse_exact(buf, n, NULL, 0, &h, &error) != PROXYHDR_COMPLETE)
		return why("parse: %s", proxyhdr_strerror(error));
	return check_fields(&h, &w);
}

static const char *test_v1_ipv4(void)
{
	return round_trip(1, STREAM, "192.0.2.1", 56324, "198.51.100.1", 443,
			  "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n");
}

static const char *test_v1_ipv6(void)
{
	return round_trip(1, STREAM, "2001:db8::1", 0, "2001:db8::2", 65535,
			  "PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n");
}

static const char *test_v1_mapped(void)
{
	return round_trip(1, STREAM, "::ffff:192.0.2.1", 1, "::1", 2, NULL);
}

static const char *test_v1_unknown(void)
{
	uint8_t buf[64];
	struct proxyhdr h;
	size_t n = proxyhdr_build_v1(buf, sizeof(buf), NULL, NULL);
	struct want w = {1, CMD_PROXY, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 15};

	if (n != 15 || memcmp(buf, "PROXY UNKNOWN\r\n", 15) != 0)
		return why("built %zu bytes", n);
	if (parse_exact(buf, n, NULL, 0, &h, NULL) != PROXYHDR_COMPLETE)
		return why("parse failed");
	return check_fields(&h, &w);
}

static const char *test_v2_ipv4(void)
{
	return round_trip(2, STREAM, "192.0.2.1", 56324, "198.51.100.1", 443,
			  NULL);
}

static const char *test_v2_ipv6_dgram(void)
{
	return round_trip(2, DGRAM, "2001:db8::1", 5353, "2001:db8::2", 53,
			  NULL);
}

static const uint8_t authority_tlv[] = {
	0x02, 0x00, 0x0B, /* AUTHORITY, length 11 */
	'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm',
};

/* v2 with a caller TLV and a CRC32C: both found again, and the CRC bites. */
static const char *test_v2_tlv_crc(void)
{
	struct sockaddr_storage s = inet_address("2001:db8::1", 1000);
	struct sockaddr_storage d = inet_address("2001:db8::2", 2000);
	uint8_t buf[256];
	struct proxyhdr h;
	enum proxyhdr_error error;
	const uint8_t *value;
	size_t n, value_len, i;

	n = proxyhdr_build_v2(buf, sizeof(buf), CMD_PROXY, STREAM, SA(s), SA(d),
			      authority_tlv, sizeof(authority_tlv), 1);
	if (n != 16 + 36 + sizeof(authority_tlv) + 7)
		return why("built %zu bytes", n);
	if (parse_exact(buf, n, NULL, 0, &h, &error) != PROXYHDR_COMPLETE)
		return why("parse: %s", proxyhdr_strerror(error));
	if (h.tlv_offset != 52 || h.tlv_len != sizeof(authority_tlv) + 7)
		return why("TLV area %zu+%zu", h.tlv_offset, h.tlv_len);
	if (!proxyhdr_find_tlv(buf, &h, PP2_TYPE_AUTHORITY, &value,
			       &value_len) ||
	    value_len != 11 || memcmp(value, "example.com", 11) != 0)
		return why("AUTHORITY not found again");
	if (!proxyhdr_find_tlv(buf, &h, PP2_TYPE_CRC32C, &value, &value_len) ||
	    value_len != 4 || value != buf + n - 4)
		return why("CRC32C TLV not where expected");
	/* Any changed byte after the fixed part is refused (a TLV length
	 * changed may be refused as a TLV overrun rather than a checksum). */
	for (i = 16; i < n - 7; i++) {
		buf[i] ^= 0x01;
		if (parse_exact(buf, n, NULL, 0, &h, &error) !=
			    PROXYHDR_INVALID ||
		    (i < 52 && error != PROXYHDR_EV2_CRC32C))
			return why("byte %zu changed: %s", i,
				   proxyhdr_strerror(error));
		buf[i] ^= 0x01;
	}
	return NULL;
}

static const char *test_v2_local(void)
{
	struct sockaddr_storage s = inet_address("192.0.2.1", 1);
	uint8_t buf[64];
	struct proxyhdr h;
	size_t n = proxyhdr_build_v2(buf, sizeof(buf), CMD_LOCAL, UNSPEC, SA(s),
				     SA(s), NULL, 0, 0);
	struct want w = {2, CMD_LOCAL, UNSPEC, AF_UNSPEC, NULL, NULL, 0, 0, 16};

	if (n != 16 || buf[12] != 0x20 || buf[13] != 0x00)
		return why("built %zu bytes", n);
	if (parse_exact(buf, n, NULL, 0, &h, NULL) != PROXYHDR_COMPLETE)
		return why("parse failed");
	return check_fields(&h, &w);
}

static const char *test_builders_refuse(void)
{
	struct sockaddr_storage v4 = inet_address("192.0.2.1", 1);
	struct sockaddr_storage v6 = inet_address("2001:db8::1", 1);
	struct sockaddr_storage unix_address;
	static uint8_t big[70000], tlvs[65536];
	uint8_t buf[128];

	memset(&unix_address, 0, sizeof(unix_address));
	unix_address.ss_family = AF_UNIX;
	/* "PROXY TCP4 192.0.2.1 192.0.2.1 1 1\r\n" is 36 bytes. */
	if (proxyhdr_build_v1(buf, 35, SA(v4), SA(v4)) != 0 ||
	    proxyhdr_build_v1(buf, 36, SA(v4), SA(v4)) != 36)
		return why("v1 capacity not respected");
	if (proxyhdr_build_v1(buf, 14, NULL, NULL) != 0)
		return why("v1 UNKNOWN in 14 bytes");
	if (proxyhdr_build_v2(buf, 27, CMD_PROXY, STREAM, SA(v4), SA(v4), NULL,
			      0, 0) != 0 ||
	    proxyhdr_build_v2(buf, 28, CMD_PROXY, STREAM, SA(v4), SA(v4), NULL,
			      0, 0) != 28)
		return why("v2 capacity not respected");
	if (proxyhdr_build_v1(buf, sizeof(buf), SA(v4), SA(v6)) != 0 ||
	    proxyhdr_build_v2(buf, sizeof(buf), CMD_PROXY, STREAM, SA(v4),
			      SA(v6), NULL, 0, 0) != 0)
		return why("mixed families accepted");
	if (proxyhdr_build_v1(buf, sizeof(buf), SA(v4), NULL) != 0 ||
	    proxyhdr_build_v2(buf, sizeof(buf), CMD_PROXY, STREAM, NULL,
			      SA(v4), NULL, 0, 0) != 0)
		return why("one address missing accepted");
	if (proxyhdr_build_v1(buf, sizeof(buf), SA(unix_address),
			      SA(unix_address)) != 0 ||
	    proxyhdr_build_v2(buf, sizeof(buf), CMD_PROXY, STREAM,
			      SA(unix_address), SA(unix_address), NULL, 0,
			      0) != 0)
		return why("AF_UNIX accepted");
	if (proxyhdr_build_v2(buf, sizeof(buf), CMD_PROXY, 3, SA(v4), SA(v4),
			      NULL, 0, 0) != 0)
		return why("transport 3 accepted");
	if (proxyhdr_build_v2(big, sizeof(big), CMD_PROXY, STREAM, SA(v4),
			      SA(v4), tlvs, 65535 - 12 + 1, 0) != 0 ||
	    proxyhdr_build_v2(big, sizeof(big), CMD_PROXY, STREAM, SA(v4),
			      SA(v4), tlvs, 65535 - 12 - 7, 1) !=
		    PROXYHDR_MAX_LEN)
		return why("len over 65535 not refused, or 65535 refused");
	return NULL;
}

/* find_tlv on the table's TLV case: first match, absence, v1 header. */
static const char *test_find_tlv(void)
{
	static const uint8_t v2[] = {
		SIG,
		0x21,             /* version 2, PROXY */
		0x11,             /* INET, STREAM */
		0x00, 0x23,       /* len 12 + 5 + 6 + 12 = 35 */
		INET_BLOCK,
		0x04, 0x00, 0x02, /* NOOP, length 2 */
		0x02, 0x00,       /* looks like AUTHORITY, is NOOP's value */
		0x02, 0x00, 0x03, /* AUTHORITY, length 3 */
		'o', 'n', 'e',
		0x02, 0x00, 0x09, /* AUTHORITY again, length 9 */
		's', 'e', 'c', 'o', 'n', 'd', '.', 'i', 'o',
	};
	static const uint8_t v1[] = "PROXY TCP4 192.0.2.1 198.51.100.1 1 2\r\n";
	const uint8_t *value = NULL;
	size_t value_len = 0;
	struct proxyhdr h;

	if (proxyhdr_parse(v2, sizeof(v2), &h, NULL) != PROXYHDR_COMPLETE)
		return why("TLV header did not parse");
	if (!proxyhdr_find_tlv(v2, &h, PP2_TYPE_AUTHORITY, &value,
			       &value_len) ||
	    value_len != 3 || memcmp(value, "one", 3) != 0)
		return why("first AUTHORITY not found");
	if (proxyhdr_find_tlv(v2, &h, PP2_TYPE_ALPN, &value, &value_len))
		return why("absent ALPN found");
	if (proxyhdr_parse(v1, sizeof(v1) - 1, &h, NULL) != PROXYHDR_COMPLETE)
		return why("v1 did not parse");
	if (proxyhdr_find_tlv(v1, &h, PP2_TYPE_AUTHORITY, &value, &value_len))
		return why("TLV found in a v1 header");
	return NULL;
}

/* Check values from RFC 3720 appendix B.4 and the usual "123456789". */
static const char *check_values(uint32_t (*crc32c)(const uint8_t *, size_t))
{
	uint8_t data[32];
	size_t i;

	if (crc32c((const uint8_t *)"123456789", 9) != 0xE3069283u)
		return why("\"123456789\" gave %08x",
			   crc32c((const uint8_t *)"123456789", 9));
	if (crc32c(data, 0) != 0)
		return why("empty input not 0");
	memset(data, 0, sizeof(data));
	if (crc32c(data, sizeof(data)) != 0x8A9136AAu)
		return why("32 zero bytes");
	memset(data, 0xFF, sizeof(data));
	if (crc32c(data, sizeof(data)) != 0x62A8AB43u)
		return why("32 0xFF bytes");
	for (i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)i;
	if (crc32c(data, sizeof(data)) != 0x46DD794Eu)
		return why("bytes 0..31");
	return NULL;
}

static const char *test_crc32c(void)
{
	return check_values(proxyhdr_crc32c);
}

static const char *test_crc32c_table(void)
{
	return check_values(proxyhdr_crc32c_table);
}

/*
 * An independent CRC32C, bit by bit as RFC 3720 describes it, to check the
 * module's faster one against: register in, register out (no inversions).
 */
#define CASTAGNOLI_REFLECTED 0x82F63B78u

static uint32_t reference_crc_update(uint32_t reg, const uint8_t *data,
				     size_t len)
{
	size_t i;
	int bit;

	for (i = 0; i < len; i++) {
		reg ^= data[i];
		for (bit = 0; bit < 8; bit++)
			reg = (reg >> 1) ^ (reg & 1u ? CASTAGNOLI_REFLECTED : 0);
	}
	return reg;
}

static uint32_t reference_crc32c(const uint8_t *data, size_t len)
{
	return ~reference_crc_update(0xFFFFFFFFu, data, len);
}

/* Pseudo-random bytes, the same on every run. */
static void fill_pseudo_random(uint8_t *data, size_t len, uint32_t seed)
{
	size_t i;

	for (i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		data[i] = (uint8_t)(seed >> 16);
	}
}

/*
 * Every length up to 1,100 at every alignment, and one 64 KB run, through
 * both ways the module computes it: whichever the CPU allows, and the table.
 */
static const char *test_crc32c_reference(void)
{
	static uint8_t data[PROXYHDR_MAX_LEN];
	size_t start, len;
	uint32_t want;

	fill_pseudo_random(data, sizeof(data), 13);
	for (start = 0; start < 8; start++) {
		for (len = 0; len <= 1100; len++) {
			want = reference_crc32c(data + start, len);
			if (proxyhdr_crc32c(data + start, len) != want)
				return why("%zu bytes from offset %zu differ",
					   len, start);
			if (proxyhdr_crc32c_table(data + start, len) != want)
				return why("table: %zu bytes from offset %zu "
					   "differ", len, start);
		}
	}
	want = reference_crc32c(data, sizeof(data));
	if (proxyhdr_crc32c(data, sizeof(data)) != want ||
	    proxyhdr_crc32c_table(data, sizeof(data)) != want)
		return why("%zu bytes differ", sizeof(data));
	return NULL;
}

/*
 * Set the last 4 bytes of buf so that the CRC32C of all len bytes is 0.
 * Feeding 4 bytes to the register is the same as xoring them into it and
 * then shifting 32 zero bits through; that shift is undone bit by bit
 * (a set top bit after a step means the bit shifted out was 1).
 */
static void force_crc32c_zero(uint8_t *buf, size_t len)
{
	uint32_t before = reference_crc_update(0xFFFFFFFFu, buf, len - 4);
	uint32_t wanted = 0xFFFFFFFFu; /* the register that gives a CRC of 0 */
	uint32_t x;
	int bit;

	for (bit = 0; bit < 32; bit++)
		wanted = wanted & 0x80000000u
				 ? (wanted ^ CASTAGNOLI_REFLECTED) << 1 | 1u
				 : wanted << 1;
	x = before ^ wanted;
	buf[len - 4] = (uint8_t)x;
	buf[len - 3] = (uint8_t)(x >> 8);
	buf[len - 2] = (uint8_t)(x >> 16);
	buf[len - 1] = (uint8_t)(x >> 24);
}

/* Header length with the most CRC32C TLVs of value 0 and a 4-byte NOOP. */
#define MANY_CRC_TLVS 9350
#define MANY_CRC_LEN (16 + 12 + 7 * MANY_CRC_TLVS + 7)

/*
 * The issue-13 header: thousands of CRC32C TLVs holding 0 and a NOOP whose
 * value makes the whole header's checksum 0, so each TLV on its own
 * matches. Checking each cost a pass over 64 KB per TLV; it is refused.
 */
static const char *test_many_crc_tlvs(void)
{
	static const uint8_t fixed[] = {
		SIG,
		0x21,                  /* version 2, PROXY */
		0x11,                  /* INET, STREAM */
		(MANY_CRC_LEN - 16) >> 8, (MANY_CRC_LEN - 16) & 0xFF,
		INET_BLOCK,
	};
	static uint8_t buf[MANY_CRC_LEN];
	enum proxyhdr_error error;
	struct proxyhdr h;
	size_t pos = sizeof(fixed), i;

	memcpy(buf, fixed, sizeof(fixed));
	for (i = 0; i < MANY_CRC_TLVS; i++, pos += 7)
		memcpy(buf + pos, (const uint8_t[]){0x03, 0x00, 0x04, 0, 0, 0, 0},
		       7);
	memcpy(buf + pos, (const uint8_t[]){0x04, 0x00, 0x04}, 3);
	force_crc32c_zero(buf, sizeof(buf));
	if (pos + 7 != sizeof(buf) || reference_crc32c(buf, sizeof(buf)) != 0)
		return why("test header not built as intended");
	if (parse_exact(buf, sizeof(buf), NULL, 0, &h, &error) !=
	    PROXYHDR_INVALID)
		return why("accepted");
	if (error != PROXYHDR_EV2_CRC32C_TWICE)
		return why("refused as \"%s\"", proxyhdr_strerror(error));
	return NULL;
}

/*
 * The largest valid header (65,551 bytes): TLVs of every size filling the
 * 16-bit length, one CRC32C last. Accepted, and a change anywhere after
 * the fixed part is caught by the checksum.
 */
static const char *test_largest_header(void)
{
	struct sockaddr_storage s = inet_address("2001:db8::1", 1000);
	struct sockaddr_storage d = inet_address("2001:db8::2", 2000);
	static uint8_t tlvs[65535 - 36 - 7], buf[PROXYHDR_MAX_LEN];
	static const size_t changed[] = {16, 51, 52, 1000, 32768, 65000,
					 PROXYHDR_MAX_LEN - 8};
	enum proxyhdr_error error;
	struct proxyhdr h;
	size_t pos = 0, value_len = 0, n, i;

	/* Custom TLVs (type 0xE0) of lengths 0, 1, 2, ... then one NOOP. */
	fill_pseudo_random(tlvs, sizeof(tlvs), 7);
	while (sizeof(tlvs) - pos >= 2 * 3 + value_len) {
		tlvs[pos] = 0xE0;
		tlvs[pos + 1] = (uint8_t)(value_len >> 8);
		tlvs[pos + 2] = (uint8_t)value_len;
		pos += 3 + value_len++;
	}
	value_len = sizeof(tlvs) - pos - 3;
	tlvs[pos] = PP2_TYPE_NOOP;
	tlvs[pos + 1] = (uint8_t)(value_len >> 8);
	tlvs[pos + 2] = (uint8_t)value_len;

	n = proxyhdr_build_v2(buf, sizeof(buf), CMD_PROXY, STREAM, SA(s), SA(d),
			      tlvs, sizeof(tlvs), 1);
	if (n != PROXYHDR_MAX_LEN)
		return why("built %zu bytes", n);
	if (parse_exact(buf, n, NULL, 0, &h, &error) != PROXYHDR_COMPLETE)
		return why("refused: %s", proxyhdr_strerror(error));
	if (h.header_len != PROXYHDR_MAX_LEN || h.tlv_len != 65535 - 36)
		return why("header %zu bytes, TLVs %zu", h.header_len,
			   h.tlv_len);
	for (i = 0; i < sizeof(changed) / sizeof(changed[0]); i++) {
		buf[changed[i]] ^= 0x20;
		if (parse_exact(buf, n, NULL, 0, &h, &error) !=
			    PROXYHDR_INVALID ||
		    error != PROXYHDR_EV2_CRC32C)
			return why("byte %zu changed: not refused by checksum",
				   changed[i]);
		buf[changed[i]] ^= 0x20;
	}
	return NULL;
}

static const char *test_strerror(void)
{
	int e, f;

	for (e = PROXYHDR_OK; e <= PROXYHDR_EV2_CRC32C_TWICE; e++) {
		const char *text = proxyhdr_strerror((enum proxyhdr_error)e);

		if (!text || !*text)
			return why("code %d has no text", e);
		for (f = PROXYHDR_OK; f < e; f++)
			if (strcmp(text, proxyhdr_strerror(
						 (enum proxyhdr_error)f)) == 0)
				return why("codes %d and %d share text", f, e);
	}
	if (!proxyhdr_strerror((enum proxyhdr_error)99))
		return why("out-of-range code gives NULL");
	return NULL;
}

struct function_case {
	const char *group;
	const char *name;
	const char *(*run)(void);
};

static const struct function_case functions[] = {
	{"roundtrip", "v1 IPv4 build then parse", test_v1_ipv4},
	{"roundtrip", "v1 IPv6 build then parse", test_v1_ipv6},
	{"roundtrip", "v1 IPv4-mapped IPv6 build then parse", test_v1_mapped},
	{"roundtrip", "v1 UNKNOWN build then parse", test_v1_unknown},
	{"roundtrip", "v2 IPv4 build then parse", test_v2_ipv4},
	{"roundtrip", "v2 IPv6 datagram build then parse", test_v2_ipv6_dgram},
	{"roundtrip", "v2 with AUTHORITY and CRC32C build then parse",
	 test_v2_tlv_crc},
	{"roundtrip", "v2 LOCAL build then parse", test_v2_local},
	{"roundtrip", "builders refuse what does not fit or makes no sense",
	 test_builders_refuse},
	{"tlv", "find_tlv finds the first AUTHORITY and nothing else",
	 test_find_tlv},
	{"crc", "crc32c check values", test_crc32c},
	{"crc", "crc32c check values by the table", test_crc32c_table},
	{"crc", "crc32c agrees with a bit-by-bit reference at every length",
	 test_crc32c_reference},
	{"crc-tlv", "a 64 KB header of 9,350 CRC32C TLVs is refused",
	 test_many_crc_tlvs},
	{"crc-tlv", "the largest valid header is accepted and its checksum bites",
	 test_largest_header},
	{"strerror", "every error code has its own sentence", test_strerror},
};

#define N_FUNCTIONS (sizeof(functions) / sizeof(functions[0]))

static int is_known_group(const char *group)
{
	size_t i;

	if (strcmp(group, "split") == 0)
		return 1;
	for (i = 0; i < N_CASES; i++)
		if (strcmp(group, cases[i].group) == 0)
			return 1;
	for (i = 0; i < N_FUNCTIONS; i++)
		if (strcmp(group, functions[i].group) == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	char name[256];
	size_t i;

	if (argc > 2) {
		fprintf(stderr, "usage: proxyhdr_test [GROUP]\n");
		return 2;
	}
	if (argc == 2) {
		only_group = argv[1];
		if (!is_known_group(only_group)) {
			fprintf(stderr, "proxyhdr_test: no group \"%s\"\n",
				only_group);
			return 2;
		}
	}
	for (i = 0; i < N_CASES; i++)
		if (selected(cases[i].group))
			report(cases[i].name, run_case(&cases[i]));
	if (selected("split")) {
		for (i = 0; i < N_CASES; i++) {
			if (cases[i].status != PROXYHDR_COMPLETE)
				continue;
			snprintf(name, sizeof(name), "split: %s",
				 cases[i].name);
			report(name, check_split(&cases[i]));
		}
	}
	for (i = 0; i < N_FUNCTIONS; i++)
		if (selected(functions[i].group))
			report(functions[i].name, functions[i].run());
	printf("%d passed, %d failed\n", passes, failures);
	return failures ? 1 : 0;
}
