/*
 * text: the one number parser and the one log-line escaper (see text.h).
 *
 * Pure: no I/O, no allocation, no globals; built with -Wconversion. What the
 * numbers mean (an option's range, a port) is the caller's business.
 */
#include "text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool text_parse_number(const char *text, unsigned long min, unsigned long max,
		       unsigned long *value)
{
	char *end;
	unsigned long parsed;

	/* strtoul would take a sign or leading spaces: refuse them first. */
	if (text == NULL || text[0] < '0' || text[0] > '9')
		return false;
	errno = 0;
	parsed = strtoul(text, &end, 10);
	if (errno != 0 || *end != '\0' || parsed < min || parsed > max)
		return false;
	*value = parsed;
	return true;
}

/* Shown as is inside quotes; everything else is escaped. */
static bool is_printable(uint8_t c)
{
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

const char *text_escape(char *out, size_t out_size, const uint8_t *bytes,
			size_t len)
{
	static const char hex_digits[] = "0123456789abcdef";
	size_t escaped_len = 0;
	size_t limit;
	size_t used = 0;
	size_t i;

	for (i = 0; i < len; i++)
		escaped_len += is_printable(bytes[i]) ? 1 : 4;
	/* Room for the NUL, and for "..." when the text is cut. */
	limit = escaped_len < out_size ? escaped_len : out_size - 4;
	for (i = 0; i < len; i++) {
		uint8_t c = bytes[i];

		if (is_printable(c)) {
			if (used + 1 > limit)
				break;
			out[used++] = (char)c;
		} else {
			if (used + 4 > limit)
				break;
			out[used++] = '\\';
			out[used++] = 'x';
			out[used++] = hex_digits[c >> 4];
			out[used++] = hex_digits[c & 0x0f];
		}
	}
	if (i < len) {
		memcpy(out + used, "...", 3);
		used += 3;
	}
	out[used] = '\0';
	return out;
}
