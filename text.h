/*
 * text: the two small text jobs every part of mmproxy shares, pure.
 *
 * Holds the one number parser (every option, port and environment number
 * goes through it; never atoi) and the one escaper for bytes that reach a
 * log line (peer bytes, a subnets file's lines). Holds no I/O, no
 * allocation and no state; addresses are in netaddr.h.
 */
#ifndef TEXT_H
#define TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Plain decimal, no sign, no space, within [min, max]: true and *value, or
 * false. Leading zeros are allowed ("08" is 8).
 */
bool text_parse_number(const char *text, unsigned long min, unsigned long max,
		       unsigned long *value);

/*
 * bytes as the body of a quoted string for a log line: printable ASCII as
 * is, anything else (and '"' and '\') as \xNN. Capped with "..." when it
 * does not fit in out_size (at least 4). Returns out.
 */
const char *text_escape(char *out, size_t out_size, const uint8_t *bytes,
			size_t len);

#endif
