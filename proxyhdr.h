/*
 * proxyhdr: parse and build PROXY protocol headers (v1 text, v2 binary).
 *
 * Pure code: no I/O, no allocation, no global state, never writes into the
 * caller's input. The parser is fed the bytes received so far and answers
 * NEED_MORE, INVALID (with a reason) or COMPLETE, so a header split across
 * any number of TCP segments is read by calling it again with more bytes.
 *
 * The rules are haproxy's doc/proxy-protocol.txt; section numbers in
 * proxyhdr.c refer to it.
 */
#ifndef PROXYHDR_H
#define PROXYHDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest possible header: the v2 fixed part plus a 16-bit length. */
#define PROXYHDR_V1_MAX_LEN 107
#define PROXYHDR_V2_FIXED_LEN 16
#define PROXYHDR_MAX_LEN (PROXYHDR_V2_FIXED_LEN + 65535)

/* v2 TLV types (spec section 2.2). */
enum {
	PP2_TYPE_ALPN = 0x01,
	PP2_TYPE_AUTHORITY = 0x02,
	PP2_TYPE_CRC32C = 0x03,
	PP2_TYPE_NOOP = 0x04,
	PP2_TYPE_UNIQUE_ID = 0x05,
	PP2_TYPE_SSL = 0x20,
	PP2_TYPE_NETNS = 0x30,
};

enum proxyhdr_status {
	PROXYHDR_NEED_MORE,
	PROXYHDR_INVALID,
	PROXYHDR_COMPLETE,
};

/* Why a header is invalid; proxyhdr_strerror() gives a sentence for each. */
enum proxyhdr_error {
	PROXYHDR_OK = 0,
	PROXYHDR_ENOT_PROXY,      /* neither "PROXY" nor the v2 signature */
	PROXYHDR_EV1_TOO_LONG,    /* no CRLF within 107 bytes */
	PROXYHDR_EV1_SYNTAX,      /* spaces, CR/LF, or field layout wrong */
	PROXYHDR_EV1_PROTOCOL,    /* not TCP4, TCP6 or UNKNOWN */
	PROXYHDR_EV1_ADDRESS,     /* address not valid for the family named */
	PROXYHDR_EV1_PORT,        /* port not 0..65535 without leading zeros */
	PROXYHDR_EV2_VERSION,     /* version nibble not 2 */
	PROXYHDR_EV2_COMMAND,     /* command not LOCAL or PROXY */
	PROXYHDR_EV2_FAMILY,      /* family or transport nibble out of range */
	PROXYHDR_EV2_ADDR_LEN,    /* len shorter than the family's address block */
	PROXYHDR_EV2_TLV,         /* a TLV runs past the header's end */
	PROXYHDR_EV2_CRC32C,      /* CRC32C TLV malformed or not matching */
	PROXYHDR_EV2_UNIQUE_ID,   /* UNIQUE_ID TLV longer than 128 bytes */
	PROXYHDR_EV2_CRC32C_TWICE, /* a second CRC32C TLV */
};

enum proxyhdr_command {
	PROXYHDR_CMD_LOCAL,  /* v2 LOCAL: health check, use the real endpoints */
	PROXYHDR_CMD_PROXY,  /* v1 (any protocol, UNKNOWN included) or v2 PROXY */
};

enum proxyhdr_transport {
	PROXYHDR_TRANSPORT_UNSPEC,
	PROXYHDR_TRANSPORT_STREAM,
	PROXYHDR_TRANSPORT_DGRAM,
};

/*
 * A parsed header. family is AF_INET or AF_INET6 when src/dst hold the
 * client and the address it connected to; it is AF_UNSPEC for v2 LOCAL, v1
 * UNKNOWN and v2 UNSPEC, and AF_UNIX for v2 UNIX (src/dst left zeroed):
 * in every case but AF_INET/AF_INET6 the caller uses the real endpoints.
 * tlv_offset/tlv_len locate the v2 TLV area inside the caller's buffer
 * (both 0 for v1); pass them to proxyhdr_find_tlv().
 */
struct proxyhdr {
	size_t header_len;
	int version; /* 1 or 2 */
	enum proxyhdr_command command;
	enum proxyhdr_transport transport;
	int family;
	struct sockaddr_storage src;
	struct sockaddr_storage dst;
	size_t tlv_offset;
	size_t tlv_len;
};

/*
 * Parse the len bytes at buf (the bytes received so far). On COMPLETE *out
 * is filled and out->header_len (<= len) bytes are the header. On INVALID,
 * *error says why. On NEED_MORE, call again with more bytes; no byte seen so
 * far contradicted the protocol. error may be NULL.
 */
enum proxyhdr_status proxyhdr_parse(const uint8_t *buf, size_t len,
				    struct proxyhdr *out,
				    enum proxyhdr_error *error);

/* A short sentence for a log line, e.g. "v1 port is not a number 0-65535". */
const char *proxyhdr_strerror(enum proxyhdr_error error);

/*
 * Find the first TLV of the given type in a header parse()d from buf.
 * Returns 1 and sets *value and *value_len when found, 0 when absent.
 */
int proxyhdr_find_tlv(const uint8_t *buf, const struct proxyhdr *header,
		      uint8_t type, const uint8_t **value, size_t *value_len);

/*
 * Builders, for tests, the benchmark's load generator and UDP. They return
 * the header's length, or 0 when it does not fit in capacity or an argument
 * is unusable (families of src and dst differ, unknown family).
 *
 * v1: src/dst NULL gives "PROXY UNKNOWN\r\n".
 * v2: command LOCAL ignores src/dst and writes family UNSPEC. tlvs/tlvs_len
 * are appended verbatim (already TLV-encoded, may be NULL/0); with_crc32c
 * appends a CRC32C TLV holding the checksum of the whole header.
 */
size_t proxyhdr_build_v1(uint8_t *out, size_t capacity,
			 const struct sockaddr *src, const struct sockaddr *dst);
size_t proxyhdr_build_v2(uint8_t *out, size_t capacity,
			 enum proxyhdr_command command,
			 enum proxyhdr_transport transport,
			 const struct sockaddr *src, const struct sockaddr *dst,
			 const uint8_t *tlvs, size_t tlvs_len, int with_crc32c);

/*
 * CRC32C (Castagnoli), as the CRC32C TLV uses; exposed for tests. The
 * parser and proxyhdr_crc32c() use the CPU's crc32 instruction where there
 * is one (x86-64 with SSE4.2, checked at run time) and a table otherwise;
 * proxyhdr_crc32c_table() always uses the table, so tests can check both.
 */
uint32_t proxyhdr_crc32c(const uint8_t *data, size_t len);
uint32_t proxyhdr_crc32c_table(const uint8_t *data, size_t len);

#endif
