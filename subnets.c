/*
 * subnets: parse and query the list of load balancer networks that may send
 * PROXY headers.
 *
 * The parser is pure: text in, a table or one error (line, escaped text,
 * reason) out. Any error empties the table, so a caller that forgets to
 * check still allows nobody. subnets_load() is the only function here that
 * touches a file.
 *
 * Lookups are a linear scan. Each entry costs a family check, a few whole
 * byte compares and at most one masked byte, which keeps a 10,000-entry list
 * far below a microsecond per entry; allow-lists are rarely that long.
 */
#include "subnets.h"
#include "text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Longest entry we accept: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128"
 * is 49 characters; anything longer cannot be valid, so it is refused whole
 * rather than truncated into something that might parse.
 */
#define ENTRY_MAX 64

#define IPV4_BITS 32u
#define IPV6_BITS 128u

/* An IPv4-mapped IPv6 address ends with the IPv4 one (RFC 4291 2.5.5.2). */
#define V4MAPPED_OFFSET 12

static const uint8_t high_bits_mask[8] = {0x00, 0x80, 0xc0, 0xe0,
					  0xf0, 0xf8, 0xfc, 0xfe};

/* ---- reporting */

static int fail(struct subnets *table, struct subnets_error *error, size_t line,
		const char *text, size_t text_len, const char *reason)
{
	subnets_free(table);
	error->line = line;
	text_escape(error->text, sizeof(error->text), (const uint8_t *)text,
		    text_len);
	snprintf(error->reason, sizeof(error->reason), "%s", reason);
	return -1;
}

/* ---- parsing one entry */

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * A prefix length is plain decimal: no sign, no space, no leading zero
 * (so "/08" is not silently read as 8, or as octal by a later tool).
 * Returns NULL and sets *prefix_len, or the reason it is not one.
 */
static const char *parse_prefix_len(const char *digits, unsigned max_len,
				    unsigned *prefix_len)
{
	unsigned value = 0;

	if (digits[0] == '\0')
		return "empty prefix length";
	for (const char *p = digits; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return "prefix length is not a number";
	}
	if (digits[0] == '0' && digits[1] != '\0')
		return "prefix length has a leading zero";
	for (const char *p = digits; *p != '\0'; p++) {
		value = value * 10 + (unsigned)(*p - '0');
		if (value > max_len)
			return max_len == IPV4_BITS ? "prefix length over 32"
						    : "prefix length over 128";
	}
	*prefix_len = value;
	return NULL;
}

/* Clear the bits past prefix_len; returns whether any were set. */
static int clear_host_bits(uint8_t *addr, size_t addr_len, unsigned prefix_len)
{
	size_t whole = prefix_len / 8;
	int had_host_bits = 0;

	if (whole < addr_len) {
		uint8_t keep = high_bits_mask[prefix_len % 8];

		if (addr[whole] & (uint8_t)~keep)
			had_host_bits = 1;
		addr[whole] &= keep;
		for (size_t i = whole + 1; i < addr_len; i++) {
			if (addr[i] != 0)
				had_host_bits = 1;
			addr[i] = 0;
		}
	}
	return had_host_bits;
}

/*
 * entry is one NUL-terminated token, "ADDRESS" or "ADDRESS/N". Fills *subnet
 * and returns NULL, or returns the reason the entry is wrong. *had_host_bits
 * says whether masking changed the address.
 */
static const char *parse_entry(char *entry, struct subnet *subnet,
			       int *had_host_bits)
{
	char *slash = strchr(entry, '/');
	size_t addr_len;
	unsigned max_len;
	const char *reason;

	memset(subnet, 0, sizeof(*subnet));
	if (slash != NULL)
		*slash = '\0';
	if (strchr(entry, ':') != NULL) {
		subnet->family = AF_INET6;
		addr_len = 16;
		max_len = IPV6_BITS;
	} else {
		subnet->family = AF_INET;
		addr_len = 4;
		max_len = IPV4_BITS;
	}
	if (inet_pton(subnet->family, entry, subnet->addr) != 1)
		return "not an IPv4 or IPv6 address";
	subnet->prefix_len = max_len;
	if (slash != NULL) {
		reason =
		    parse_prefix_len(slash + 1, max_len, &subnet->prefix_len);
		if (reason != NULL)
			return reason;
	}
	*had_host_bits =
	    clear_host_bits(subnet->addr, addr_len, subnet->prefix_len);
	return NULL;
}

static int append(struct subnets *table, const struct subnet *subnet)
{
	if (table->count == table->capacity) {
		size_t capacity = table->capacity ? table->capacity * 2 : 16;
		struct subnet *entries;

		if (capacity > SIZE_MAX / sizeof(*entries))
			return -1;
		entries = realloc(table->entries, capacity * sizeof(*entries));
		if (entries == NULL)
			return -1;
		table->entries = entries;
		table->capacity = capacity;
	}
	table->entries[table->count++] = *subnet;
	return 0;
}

static void warn_host_bits(subnets_warn_fn *warn, void *warn_context,
			   size_t line, const char *text,
			   const struct subnet *subnet)
{
	char addr_text[INET6_ADDRSTRLEN];
	char line_text[sizeof(((struct subnets_error *)0)->text)];
	char reason[128];

	if (inet_ntop(subnet->family, subnet->addr, addr_text,
		      sizeof(addr_text)) == NULL)
		snprintf(addr_text, sizeof(addr_text), "?");
	snprintf(reason, sizeof(reason), "host bits set past /%u; using %s/%u",
		 subnet->prefix_len, addr_text, subnet->prefix_len);
	text_escape(line_text, sizeof(line_text), (const uint8_t *)text,
		    strlen(text));
	warn(warn_context, line, line_text, reason);
}

/* ---- parsing a file's text */

int subnets_parse(const char *text, size_t len, struct subnets *table,
		  struct subnets_error *error, subnets_warn_fn *warn,
		  void *warn_context)
{
	size_t count_before = table->count;
	size_t line = 0;
	size_t pos = 0;

	memset(error, 0, sizeof(*error));
	while (pos < len) {
		const char *start = text + pos;
		const char *newline = memchr(start, '\n', len - pos);
		const char *end = newline ? newline : text + len;
		const char *token_end;
		const char *hash;
		char entry[ENTRY_MAX];
		struct subnet subnet;
		int had_host_bits = 0;
		const char *reason;
		size_t entry_len;

		line++;
		pos = (size_t)(end - text) + (newline ? 1 : 0);

		if (memchr(start, '\0', (size_t)(end - start)) != NULL)
			return fail(table, error, line, start,
				    (size_t)(end - start), "NUL byte in line");
		if (end > start && end[-1] == '\r')
			end--;
		hash = memchr(start, '#', (size_t)(end - start));
		if (hash != NULL)
			end = hash;
		while (start < end && is_blank(*start))
			start++;
		while (end > start && is_blank(end[-1]))
			end--;
		if (start == end)
			continue;

		token_end = start;
		while (token_end < end && !is_blank(*token_end))
			token_end++;
		entry_len = (size_t)(token_end - start);
		if (token_end != end)
			return fail(table, error, line, start,
				    (size_t)(end - start),
				    "extra text after the entry");
		if (entry_len >= sizeof(entry))
			return fail(table, error, line, start, entry_len,
				    "line too long for an address");
		memcpy(entry, start, entry_len);
		entry[entry_len] = '\0';

		reason = parse_entry(entry, &subnet, &had_host_bits);
		if (reason != NULL)
			return fail(table, error, line, start, entry_len,
				    reason);
		if (append(table, &subnet) != 0)
			return fail(table, error, line, start, entry_len,
				    strerror(ENOMEM));
		if (had_host_bits && warn != NULL) {
			/* entry was split at '/' by parse_entry; rebuild it. */
			memcpy(entry, start, entry_len);
			warn_host_bits(warn, warn_context, line, entry,
				       &subnet);
		}
	}
	/* An empty list would refuse every connection without saying why. */
	if (table->count == count_before)
		return fail(table, error, 0, "", 0, "no subnets in file");
	return 0;
}

/* ---- loading a file */

/* Read all of fd into a malloc'd buffer; -1 with errno set on failure. */
static int read_all(int fd, char **data, size_t *data_len)
{
	size_t capacity = 4096;
	size_t used = 0;
	char *buffer = malloc(capacity);

	if (buffer == NULL)
		return -1;
	for (;;) {
		ssize_t got;

		if (used == capacity) {
			char *bigger;

			if (capacity > SIZE_MAX / 2) {
				free(buffer);
				errno = EFBIG;
				return -1;
			}
			bigger = realloc(buffer, capacity * 2);
			if (bigger == NULL) {
				free(buffer);
				errno = ENOMEM;
				return -1;
			}
			buffer = bigger;
			capacity *= 2;
		}
		got = read(fd, buffer + used, capacity - used);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int saved_errno = errno;

			free(buffer);
			errno = saved_errno;
			return -1;
		}
		if (got == 0)
			break;
		used += (size_t)got;
	}
	*data = buffer;
	*data_len = used;
	return 0;
}

int subnets_load(const char *path, struct subnets *table,
		 struct subnets_error *error, subnets_warn_fn *warn,
		 void *warn_context)
{
	char *data;
	size_t data_len;
	int fd;
	int result;

	memset(error, 0, sizeof(*error));
	do
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return fail(table, error, 0, "", 0, strerror(errno));
	if (read_all(fd, &data, &data_len) != 0) {
		int saved_errno = errno;

		close(fd);
		return fail(table, error, 0, "", 0, strerror(saved_errno));
	}
	close(fd);
	result =
	    subnets_parse(data, data_len, table, error, warn, warn_context);
	free(data);
	return result;
}

/* ---- lookups */

static int prefix_matches(const uint8_t *network, const uint8_t *addr,
			  unsigned prefix_len)
{
	size_t whole = prefix_len / 8;
	unsigned rest = prefix_len % 8;

	for (size_t i = 0; i < whole; i++) {
		if (network[i] != addr[i])
			return 0;
	}
	return rest == 0 ||
	       ((network[whole] ^ addr[whole]) & high_bits_mask[rest]) == 0;
}

int subnets_contains(const struct subnets *table, const struct sockaddr *addr)
{
	const uint8_t *v4 = NULL;
	const uint8_t *v6 = NULL;

	if (table == NULL || addr == NULL)
		return 0;
	if (addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin =
		    (const struct sockaddr_in *)addr;

		v4 = (const uint8_t *)&sin->sin_addr;
	} else if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)addr;

		v6 = sin6->sin6_addr.s6_addr;
		/* A dual-stack listener sees IPv4 peers this way. */
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			v4 = v6 + V4MAPPED_OFFSET;
	} else {
		return 0;
	}

	for (size_t i = 0; i < table->count; i++) {
		const struct subnet *subnet = &table->entries[i];

		if (subnet->family == AF_INET && v4 != NULL &&
		    prefix_matches(subnet->addr, v4, subnet->prefix_len))
			return 1;
		if (subnet->family == AF_INET6 && v6 != NULL &&
		    prefix_matches(subnet->addr, v6, subnet->prefix_len))
			return 1;
	}
	return 0;
}

void subnets_free(struct subnets *table)
{
	if (table == NULL)
		return;
	free(table->entries);
	table->entries = NULL;
	table->count = 0;
	table->capacity = 0;
}
