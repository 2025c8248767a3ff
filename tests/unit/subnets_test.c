/*
 * Unit tests for subnets.c: tables of allow-list texts and of peers to match,
 * plus a real-world list (Cloudflare's ranges) and a generated 10,000-line
 * file with timed lookups.
 *
 * usage: subnets_test [GROUP-OR-CASE [PATH]]
 *   With no argument every group runs. PATH is the Cloudflare list for
 *   "cloudflare" and the file to generate for "big" (default: a mkstemp file
 *   in $TMPDIR). Prints "ok NAME" or "FAIL NAME: why" per case and exits 1
 *   if any case failed.
 */
#include "subnets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "verdict.h"

/* ---- helpers */

struct warnings {
	int count;
	size_t last_line;
	char last_reason[128];
};

static void count_warning(void *context, size_t line, const char *text,
			  const char *reason)
{
	struct warnings *warnings = context;

	(void)text;
	warnings->count++;
	warnings->last_line = line;
	snprintf(warnings->last_reason, sizeof(warnings->last_reason), "%s",
		 reason);
}

static void format_subnet(const struct subnet *subnet, char *out,
			  size_t out_size)
{
	char addr_text[INET6_ADDRSTRLEN];

	if (inet_ntop(subnet->family, subnet->addr, addr_text,
		      sizeof(addr_text)) == NULL)
		snprintf(addr_text, sizeof(addr_text), "?");
	snprintf(out, out_size, "%s/%u", addr_text, subnet->prefix_len);
}

/* "a.b.c.d" becomes a sockaddr_in, anything with ':' a sockaddr_in6. */
static int make_peer(const char *text, struct sockaddr_storage *peer)
{
	memset(peer, 0, sizeof(*peer));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)peer;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(40000);
		return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1 ? 0
									: -1;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)peer;

	sin->sin_family = AF_INET;
	sin->sin_port = htons(40000);
	return inet_pton(AF_INET, text, &sin->sin_addr) == 1 ? 0 : -1;
}

/* subnets_parse() on a NUL-terminated text. */
static int parse(const char *text, struct subnets *table,
		 struct subnets_error *error)
{
	return subnets_parse(text, strlen(text), table, error, NULL, NULL);
}

static int table_is_empty(const struct subnets *table)
{
	return table->entries == NULL && table->count == 0 &&
	       table->capacity == 0;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	       (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static int write_file(const char *path, const char *data, size_t len)
{
	FILE *file = fopen(path, "wb");

	if (file == NULL)
		return -1;
	if (fwrite(data, 1, len, file) != len) {
		fclose(file);
		return -1;
	}
	return fclose(file);
}

/* A fresh temporary file name; the file exists (empty) until unlinked. */
static int make_temp_path(char *path, size_t path_size)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	if (dir == NULL || *dir == '\0')
		dir = "/tmp";
	snprintf(path, path_size, "%s/subnets_test.XXXXXX", dir);
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/* ---- parse cases */

struct parse_case {
	const char *group;
	const char *name;
	const char *text;
	int expect_ok;
	size_t count;		 /* entries on success */
	int warnings;		 /* warn callbacks on success */
	const char *first_entry; /* first entry as "ADDRESS/N", or NULL */
	size_t line;		 /* error line (0: not about one line) */
	const char *reason;	 /* substring of the error or last warning */
	const char *error_text;	 /* exact escaped error text, or NULL */
};

/* One case per line, so adding a case is adding a line. */
// clang-format off
#define OK(group, name, text, count, warnings, first_entry, warn_reason) \
	{ group, name, text, 1, count, warnings, first_entry, 0, warn_reason, NULL }
#define ERR(group, name, text, line, reason, error_text) \
	{ group, name, text, 0, 0, 0, NULL, line, reason, error_text }

static const struct parse_case parse_cases[] = {
	/* Entries */
	OK("cidr", "an IPv4 CIDR parses", "10.0.0.0/8\n", 1, 0, "10.0.0.0/8", NULL),
	OK("cidr", "an IPv6 CIDR parses", "2001:db8::/32\n", 1, 0, "2001:db8::/32", NULL),
	OK("cidr", "the last line needs no newline", "192.168.0.0/16", 1, 0, "192.168.0.0/16", NULL),
	OK("cidr", "both families in one file", "10.0.0.0/8\n2001:db8::/32\n", 2, 0, "10.0.0.0/8", NULL),
	OK("cidr", "/0 in both families", "0.0.0.0/0\n::/0\n", 2, 0, "0.0.0.0/0", NULL),
	OK("cidr", "IPv6 with a dotted tail", "::ffff:10.0.0.0/104\n", 1, 0, "::ffff:10.0.0.0/104", NULL),
	OK("cidr", "upper-case IPv6", "2001:DB8:ABCD::/48\n", 1, 0, "2001:db8:abcd::/48", NULL),
	OK("bare", "a bare IPv4 address is /32", "192.0.2.7\n", 1, 0, "192.0.2.7/32", NULL),
	OK("bare", "a bare IPv6 address is /128", "2001:db8::7\n", 1, 0, "2001:db8::7/128", NULL),
	/* Layout */
	OK("layout", "blank lines are skipped", "\n\n10.0.0.0/8\n\n\n", 1, 0, "10.0.0.0/8", NULL),
	OK("layout", "lines of blanks are skipped", " \t \n10.0.0.0/8\n\t\n", 1, 0, "10.0.0.0/8", NULL),
	OK("layout", "comment lines are skipped", "# load balancers\n#10.0.0.0/8\n10.1.0.0/16\n", 1, 0, "10.1.0.0/16", NULL),
	OK("layout", "a comment may follow an entry", "10.0.0.0/8 # east\n10.1.0.0/16#west\n", 2, 0, "10.0.0.0/8", NULL),
	OK("layout", "surrounding spaces and tabs are ignored", " \t10.0.0.0/8\t \n\t 2001:db8::/32   \n", 2, 0, "10.0.0.0/8", NULL),
	OK("layout", "CRLF line endings are accepted", "10.0.0.0/8\r\n2001:db8::/32\r\n\r\n# c\r\n", 2, 0, "10.0.0.0/8", NULL),
	OK("layout", "CRLF after a trailing comment", "10.0.0.0/8 # east\r\n", 1, 0, "10.0.0.0/8", NULL),
	/* Host bits: kept, masked, one warning per line */
	OK("hostbits", "IPv4 host bits are cleared with a warning", "10.0.0.1/24\n", 1, 1, "10.0.0.0/24", "host bits set past /24; using 10.0.0.0/24"),
	OK("hostbits", "IPv6 host bits are cleared with a warning", "2001:db8::1/64\n", 1, 1, "2001:db8::/64", "host bits set past /64; using 2001:db8::/64"),
	OK("hostbits", "a prefix inside a byte masks that byte", "10.0.255.255/17\n", 1, 1, "10.0.128.0/17", "using 10.0.128.0/17"),
	OK("hostbits", "an address with /0 becomes 0.0.0.0/0", "10.0.0.1/0\n", 1, 1, "0.0.0.0/0", "using 0.0.0.0/0"),
	OK("hostbits", "one warning per line with host bits", "10.0.0.1/24\n10.0.0.0/24\n192.168.1.1/16\n", 3, 2, "10.0.0.0/24", "past /16; using 192.168.0.0/16"),
	/* Prefix lengths */
	ERR("prefix", "a prefix over 32 is an error", "10.0.0.0/33\n", 1, "prefix length over 32", "10.0.0.0/33"),
	ERR("prefix", "a prefix over 128 is an error", "2001:db8::/129\n", 1, "prefix length over 128", "2001:db8::/129"),
	ERR("prefix", "an IPv4 prefix of 64 is an error", "10.0.0.0/64\n", 1, "prefix length over 32", NULL),
	ERR("prefix", "a huge prefix does not wrap around", "10.0.0.0/4294967304\n", 1, "prefix length over 32", NULL),
	ERR("prefix", "an empty prefix is an error", "10.0.0.0/\n", 1, "empty prefix length", "10.0.0.0/"),
	ERR("prefix", "a leading zero is an error", "10.0.0.0/08\n", 1, "leading zero", "10.0.0.0/08"),
	ERR("prefix", "/00 is an error", "0.0.0.0/00\n", 1, "leading zero", NULL),
	ERR("prefix", "a negative prefix is an error", "10.0.0.0/-1\n", 1, "prefix length is not a number", NULL),
	ERR("prefix", "a signed prefix is an error", "10.0.0.0/+8\n", 1, "prefix length is not a number", NULL),
	ERR("prefix", "letters are not a prefix", "10.0.0.0/abc\n", 1, "prefix length is not a number", NULL),
	ERR("prefix", "two slashes are an error", "10.0.0.0/8/9\n", 1, "prefix length is not a number", NULL),
	ERR("prefix", "a blank before the prefix is an error", "10.0.0.0 /8\n", 1, "extra text after the entry", NULL),
	/* Addresses */
	ERR("address", "three IPv4 parts are not an address", "10.0.0/8\n", 1, "not an IPv4 or IPv6 address", "10.0.0/8"),
	ERR("address", "an octet over 255 is not an address", "300.1.1.1\n", 1, "not an IPv4 or IPv6 address", "300.1.1.1"),
	ERR("address", "two addresses on a line are an error", "1.2.3.4 5.6.7.8\n", 1, "extra text after the entry", "1.2.3.4 5.6.7.8"),
	ERR("address", "garbage is not an address", "hello\n", 1, "not an IPv4 or IPv6 address", "hello"),
	ERR("address", "a host name is not an address", "lb.example.com/32\n", 1, "not an IPv4 or IPv6 address", NULL),
	ERR("address", "a bad IPv6 address is an error", "2001:db8:::1/64\n", 1, "not an IPv4 or IPv6 address", NULL),
	ERR("address", "a zone index is not accepted", "fe80::1%eth0/64\n", 1, "not an IPv4 or IPv6 address", NULL),
	ERR("address", "a prefix without an address is an error", "/8\n", 1, "not an IPv4 or IPv6 address", NULL),
	ERR("address", "an over-long entry is refused, not truncated", "10.0.0.0/" "8000000000000000000000000000000000000000000000000000000000000000000\n", 1, "line too long", NULL),
	/* What an error reports */
	ERR("report", "an error names line 7", "# lbs\n10.0.0.0/8\n\n# " "west\n10.1.0.0/16\n2001:db8::/32\n10.2.0.0/33\n10.3.0.0/16\n", 7, "prefix length over 32", "10.2.0.0/33"),
	ERR("report", "line numbers count CRLF lines once", "10.0.0.0/8\r\n\r\nbad\r\n", 3, "not an IPv4 or IPv6 address", "bad"),
	ERR("report", "control bytes in the text are escaped", "10.0.0.0/8\n\x01\x1b[31mred\x7f\n", 2, "not an IPv4 or IPv6 address", "\\x01\\x1b[31mred\\x7f"),
	ERR("report", "quotes and backslashes are escaped", "\"10.0.0.0/8\\\"\n", 1, "not an IPv4 or IPv6 address", "\\x2210.0.0.0/8\\x5c\\x22"),
	ERR("report", "non-ASCII bytes are escaped", "10.0.0.0/8\xc3\xa9\n", 1, "not a number", "10.0.0.0/8\\xc3\\xa9"),
	ERR("report", "the comment is not part of the error text", "10.0.0.0/33 # east\n", 1, "prefix length over 32", "10.0.0.0/33"),
	/* An empty allow-list would refuse everyone silently */
	ERR("empty", "an empty file is an error", "", 0, "no subnets in file", ""),
	ERR("empty", "a lone newline is an error", "\n", 0, "no subnets in file", ""),
	ERR("empty", "only comments and blanks is an error", "# nothing yet\n\n   \n\t# still nothing\r\n", 0, "no subnets in file", ""),
};
// clang-format on

static void run_parse_case(const struct parse_case *c)
{
	struct subnets table = {0};
	struct subnets_error error;
	struct warnings warnings = {0};
	char first[80];
	int result;

	result = subnets_parse(c->text, strlen(c->text), &table, &error,
			       count_warning, &warnings);
	if (c->expect_ok) {
		if (result != 0) {
			fail(c->name,
			     "expected success, got line %zu \"%s\": %s",
			     error.line, error.text, error.reason);
			goto out;
		}
		if (table.count != c->count) {
			fail(c->name, "%zu entries, expected %zu", table.count,
			     c->count);
			goto out;
		}
		if (warnings.count != c->warnings) {
			fail(c->name, "%d warnings, expected %d",
			     warnings.count, c->warnings);
			goto out;
		}
		if (c->reason != NULL &&
		    strstr(warnings.last_reason, c->reason) == NULL) {
			fail(c->name, "warning \"%s\", expected \"%s\"",
			     warnings.last_reason, c->reason);
			goto out;
		}
		format_subnet(&table.entries[0], first, sizeof(first));
		if (c->first_entry != NULL && strcmp(first, c->first_entry)) {
			fail(c->name, "first entry %s, expected %s", first,
			     c->first_entry);
			goto out;
		}
	} else {
		if (result == 0) {
			fail(c->name, "expected an error, got %zu entries",
			     table.count);
			goto out;
		}
		if (!table_is_empty(&table)) {
			fail(c->name, "table not emptied after an error");
			goto out;
		}
		if (error.line != c->line) {
			fail(c->name, "error on line %zu, expected %zu (%s)",
			     error.line, c->line, error.reason);
			goto out;
		}
		if (strstr(error.reason, c->reason) == NULL) {
			fail(c->name, "reason \"%s\", expected \"%s\"",
			     error.reason, c->reason);
			goto out;
		}
		if (c->error_text != NULL &&
		    strcmp(error.text, c->error_text)) {
			fail(c->name, "text \"%s\", expected \"%s\"",
			     error.text, c->error_text);
			goto out;
		}
	}
	pass(c->name);
out:
	subnets_free(&table);
}

/* ---- match cases */

struct match_case {
	const char *group;
	const char *name;
	const char *subnets;
	const char *peer;
	int expect_match;
};

/* One case per line, so adding a case is adding a line. */
// clang-format off
static const struct match_case match_cases[] = {
	{"match", "the first address of a range matches", "10.0.0.0/24", "10.0.0.0", 1},
	{"match", "the last address of a range matches", "10.0.0.0/24", "10.0.0.255", 1},
	{"match", "one past the last address does not match", "10.0.0.0/24", "10.0.1.0", 0},
	{"match", "one before the first address does not match", "10.0.0.0/24", "9.255.255.255", 0},
	{"match", "the last address of a /17 matches", "10.0.128.0/17", "10.0.255.255", 1},
	{"match", "one before a /17 does not match", "10.0.128.0/17", "10.0.127.255", 0},
	{"match", "a /32 matches its address", "192.0.2.7", "192.0.2.7", 1},
	{"match", "a /32 does not match its neighbour", "192.0.2.7", "192.0.2.8", 0},
	{"match", "the first IPv6 address of a range matches", "2001:db8::/32", "2001:db8::", 1},
	{"match", "the last IPv6 address of a range matches", "2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1},
	{"match", "one past an IPv6 range does not match", "2001:db8::/32", "2001:db9::", 0},
	{"match", "a /127 holds its second address", "2001:db8::/127", "2001:db8::1", 1},
	{"match", "a /127 does not hold a third", "2001:db8::/127", "2001:db8::2", 0},
	{"match", "a /128 matches its address", "2001:db8::7", "2001:db8::7", 1},
	{"match", "a later entry matches", "10.0.0.0/8\n2001:db8::/32\n192.168.0.0/16", "192.168.1.1", 1},
	{"match", "no entry matches", "10.0.0.0/8\n192.168.0.0/16", "172.16.0.1", 0},
	{"match", "0.0.0.0/0 matches any IPv4 peer", "0.0.0.0/0", "203.0.113.9", 1},
	{"match", "0.0.0.0/0 matches 255.255.255.255", "0.0.0.0/0", "255.255.255.255", 1},
	{"match", "::/0 matches any IPv6 peer", "::/0", "2001:db8::1", 1},
	{"match", "0.0.0.0/0 does not match an IPv6 peer", "0.0.0.0/0", "2001:db8::1", 0},
	{"match", "::/0 does not match an IPv4 peer", "::/0", "10.0.0.1", 0},
	/* A v4-mapped peer is an IPv4 peer seen through a dual-stack socket. */
	{"mapped", "a v4-mapped peer matches an IPv4 entry", "10.0.0.0/8", "::ffff:10.1.2.3", 1},
	{"mapped", "a v4-mapped peer outside the entry does not match", "10.0.0.0/8", "::ffff:11.1.2.3", 0},
	{"mapped", "a v4-mapped peer matches 0.0.0.0/0", "0.0.0.0/0", "::ffff:1.2.3.4", 1},
	{"mapped", "a v4-mapped peer still matches IPv6 entries", "::ffff:0:0/96", "::ffff:10.0.0.1", 1},
	{"mapped", "an IPv6 peer does not match IPv4 entries", "10.0.0.0/8", "2001:db8::a00:1", 0},
	{"mapped", "an IPv6 peer does not match 0.0.0.0/0", "0.0.0.0/0", "2001:db8::1", 0},
	{"mapped", "a v4-compatible peer is not v4-mapped", "10.0.0.0/8", "::10.1.2.3", 0},
	{"mapped", "an IPv4 peer does not match ::ffff:0:0/96", "::ffff:0:0/96", "10.0.0.1", 0},
};
// clang-format on

static void run_match_case(const struct match_case *c)
{
	struct subnets table = {0};
	struct subnets_error error;
	struct sockaddr_storage peer;
	int matched;

	if (parse(c->subnets, &table, &error) != 0) {
		fail(c->name, "subnets line %zu: %s", error.line, error.reason);
		return;
	}
	if (make_peer(c->peer, &peer) != 0) {
		fail(c->name, "bad peer address %s in the test", c->peer);
	} else {
		matched = subnets_contains(&table, (struct sockaddr *)&peer);
		if (matched != c->expect_match)
			fail(c->name, "%s %s %s", c->peer,
			     matched ? "matched" : "did not match", c->subnets);
		else
			pass(c->name);
	}
	subnets_free(&table);
}

/* ---- cases that need more than a table row */

static void test_nul_byte_in_text(void)
{
	const char *name = "a NUL byte in the text is an error naming its line";
	static const char text[] =
	    "10.0.0.0/8\n10.1.0.0/16\0junk\n10.2.0.0/16\n";
	struct subnets table = {0};
	struct subnets_error error;

	if (subnets_parse(text, sizeof(text) - 1, &table, &error, NULL, NULL) ==
	    0)
		fail(name, "accepted");
	else if (error.line != 2 || strstr(error.reason, "NUL byte") == NULL)
		fail(name, "line %zu: %s", error.line, error.reason);
	else if (strcmp(error.text, "10.1.0.0/16\\x00junk") != 0)
		fail(name, "text \"%s\"", error.text);
	else
		pass(name);
	subnets_free(&table);
}

static void test_long_text_is_capped(void)
{
	const char *name = "a long error text is capped with ...";
	char text[400];
	struct subnets table = {0};
	struct subnets_error error;
	size_t text_len;

	snprintf(text, sizeof(text), "1.2.3.4 %0300d\n", 0);
	if (parse(text, &table, &error) == 0) {
		fail(name, "accepted");
	} else {
		text_len = strlen(error.text);
		if (text_len >= sizeof(error.text) || text_len < 20 ||
		    strcmp(error.text + text_len - 3, "...") != 0 ||
		    strncmp(error.text, "1.2.3.4 000", 11) != 0)
			fail(name, "text \"%s\"", error.text);
		else
			pass(name);
	}
	subnets_free(&table);
}

static void test_parse_appends(void)
{
	const char *name = "a second parse appends to the table";
	struct subnets table = {0};
	struct subnets_error error;

	if (parse("10.0.0.0/8\n", &table, &error) ||
	    parse("2001:db8::/32\n192.168.0.0/16\n", &table, &error))
		fail(name, "line %zu: %s", error.line, error.reason);
	else if (table.count != 3)
		fail(name, "%zu entries, expected 3", table.count);
	else
		pass(name);
	subnets_free(&table);
}

static void test_error_empties_table(void)
{
	const char *name = "an error empties a table that held entries";
	struct subnets table = {0};
	struct subnets_error error;
	struct sockaddr_storage peer;

	make_peer("10.1.2.3", &peer);
	if (parse("10.0.0.0/8\n", &table, &error)) {
		fail(name, "first parse failed: %s", error.reason);
	} else if (parse("bad\n", &table, &error) == 0) {
		fail(name, "second parse accepted");
	} else if (!table_is_empty(&table) ||
		   subnets_contains(&table, (struct sockaddr *)&peer)) {
		fail(name, "table still holds entries");
	} else {
		pass(name);
	}
	subnets_free(&table);
}

static void test_other_families(void)
{
	const char *name = "a peer of another family matches nothing";
	struct subnets table = {0};
	struct subnets_error error;
	struct sockaddr_un unix_peer = {.sun_family = AF_UNIX};
	struct sockaddr_storage peer;

	make_peer("10.0.0.1", &peer);
	if (parse("0.0.0.0/0\n::/0\n", &table, &error))
		fail(name, "parse failed: %s", error.reason);
	else if (subnets_contains(&table, (struct sockaddr *)&unix_peer))
		fail(name, "AF_UNIX peer matched");
	else if (subnets_contains(&table, NULL))
		fail(name, "NULL peer matched");
	else if (subnets_contains(NULL, (struct sockaddr *)&peer))
		fail(name, "NULL table matched");
	else
		pass(name);
	subnets_free(&table);
}

/* ---- files */

static void test_missing_file(void)
{
	const char *name = "a missing file is an error on line 0";
	struct subnets table = {0};
	struct subnets_error error;

	if (subnets_load("/nonexistent/mmproxy/allowed.txt", &table, &error,
			 NULL, NULL) == 0)
		fail(name, "loaded");
	else if (error.line != 0 ||
		 strstr(error.reason, "No such file or directory") == NULL)
		fail(name, "line %zu: %s", error.line, error.reason);
	else if (!table_is_empty(&table))
		fail(name, "table not empty");
	else
		pass(name);
	subnets_free(&table);
}

static void test_directory(void)
{
	const char *name = "a directory is an error on line 0";
	struct subnets table = {0};
	struct subnets_error error;

	if (subnets_load("/", &table, &error, NULL, NULL) == 0)
		fail(name, "loaded");
	else if (error.line != 0 ||
		 strstr(error.reason, "Is a directory") == NULL)
		fail(name, "line %zu: %s", error.line, error.reason);
	else
		pass(name);
	subnets_free(&table);
}

static void test_nul_byte_in_file(void)
{
	const char *name = "a NUL byte in the file is an error naming its line";
	static const char data[] = "# lbs\n10.0.0.0/8\n\n10.1.\0.0/16\n";
	struct subnets table = {0};
	struct subnets_error error;
	char path[4096];

	if (make_temp_path(path, sizeof(path)) != 0 ||
	    write_file(path, data, sizeof(data) - 1) != 0) {
		fail(name, "cannot write a temporary file: %s",
		     strerror(errno));
		return;
	}
	if (subnets_load(path, &table, &error, NULL, NULL) == 0)
		fail(name, "loaded");
	else if (error.line != 4 || strcmp(error.reason, "NUL byte in line"))
		fail(name, "line %zu: %s", error.line, error.reason);
	else
		pass(name);
	subnets_free(&table);
	unlink(path);
}

static void test_empty_file(void)
{
	const char *name = "an empty file on disk is an error";
	struct subnets table = {0};
	struct subnets_error error;
	char path[4096];

	if (make_temp_path(path, sizeof(path)) != 0) {
		fail(name, "mkstemp: %s", strerror(errno));
		return;
	}
	if (subnets_load(path, &table, &error, NULL, NULL) == 0)
		fail(name, "loaded");
	else if (error.line != 0 || strstr(error.reason, "no subnets") == NULL)
		fail(name, "line %zu: %s", error.line, error.reason);
	else
		pass(name);
	subnets_free(&table);
	unlink(path);
}

struct expected_peer {
	const char *peer;
	int expect_match;
};

static void test_cloudflare(const char *path)
{
	static const struct expected_peer peers[] = {
	    {"173.245.48.1", 1},
	    {"173.245.63.255", 1}, /* last of 173.245.48.0/20 */
	    {"173.245.64.0", 0},   /* one past it */
	    {"104.16.0.0", 1},
	    {"104.23.255.255", 1}, /* last of 104.16.0.0/13 */
	    {"104.27.255.255", 1}, /* last of 104.24.0.0/14 */
	    {"104.28.0.0", 0},
	    {"162.159.255.255", 1}, /* last of 162.158.0.0/15 */
	    {"131.0.72.9", 1},
	    {"8.8.8.8", 0},
	    {"1.1.1.1", 0}, /* Cloudflare's resolver, not an edge range */
	    {"2606:4700::6810:85e5", 1},
	    {"2400:cb00:2048:1::1", 1},
	    {"2a06:98c7:ffff::1", 1}, /* inside 2a06:98c0::/29 */
	    {"2a06:98c8::1", 0},      /* one /29 later */
	    {"2001:4860:4860::8888", 0},
	    {"::ffff:104.16.0.1", 1},
	    {"::ffff:8.8.8.8", 0},
	};
	const char *name = "Cloudflare's published ranges load and match";
	struct subnets table = {0};
	struct subnets_error error;
	struct sockaddr_storage peer;

	if (subnets_load(path, &table, &error, NULL, NULL) != 0) {
		fail(name, "%s:%zu: \"%s\": %s", path, error.line, error.text,
		     error.reason);
		return;
	}
	if (table.count != 22) {
		fail(name, "%zu entries, expected 15 IPv4 + 7 IPv6",
		     table.count);
		goto out;
	}
	for (size_t i = 0; i < sizeof(peers) / sizeof(peers[0]); i++) {
		make_peer(peers[i].peer, &peer);
		if (subnets_contains(&table, (struct sockaddr *)&peer) !=
		    peers[i].expect_match) {
			fail(name, "%s should %s", peers[i].peer,
			     peers[i].expect_match ? "match" : "not match");
			goto out;
		}
	}
	pass(name);
out:
	subnets_free(&table);
}

#define BIG_LINES   10000
#define BIG_LOOKUPS 10000

/*
 * Line i (0-based) of the generated file: 5,000 IPv4 /24s in 10.0.0.0/8,
 * then 5,000 IPv6 /48s in 2001:db8::/32, with a comment every 1,000 lines.
 */
static int write_big_file(const char *path)
{
	FILE *file = fopen(path, "w");

	if (file == NULL)
		return -1;
	for (unsigned i = 0; i < BIG_LINES; i++) {
		if (i % 1000 == 0)
			fprintf(file, "# block %u\n", i / 1000);
		if (i < BIG_LINES / 2)
			fprintf(file, "10.%u.%u.0/24\n", i / 256, i % 256);
		else
			fprintf(file, "2001:db8:%x::/48 # lb %u\n", i, i);
	}
	return fclose(file);
}

/*
 * Lookup k: even k is a host inside entry k (so peers walk the whole table,
 * half IPv4, half IPv6); odd k is outside every entry, the costliest case.
 */
static void big_peer(unsigned k, char *out, size_t out_size, int *inside)
{
	unsigned i = k % BIG_LINES;

	*inside = k % 2 == 0;
	if (i < BIG_LINES / 2)
		snprintf(out, out_size, *inside ? "10.%u.%u.77" : "11.%u.%u.77",
			 i / 256, i % 256);
	else
		snprintf(out, out_size,
			 *inside ? "2001:db8:%x:1::77" : "2001:db9:%x:1::77",
			 i);
}

static void test_big_file(const char *given_path)
{
	const char *name = "a 10,000-line file loads and matches";
	struct sockaddr_storage *peers = NULL;
	int *inside = NULL;
	struct subnets table = {0};
	struct subnets_error error;
	struct timespec start;
	char path[4096];
	char peer_text[64];
	double load_seconds, lookup_seconds;
	unsigned wrong = 0;

	if (given_path != NULL)
		snprintf(path, sizeof(path), "%s", given_path);
	else if (make_temp_path(path, sizeof(path)) != 0) {
		fail(name, "mkstemp: %s", strerror(errno));
		return;
	}
	if (write_big_file(path) != 0) {
		fail(name, "cannot write %s: %s", path, strerror(errno));
		goto out;
	}

	clock_gettime(CLOCK_MONOTONIC, &start);
	if (subnets_load(path, &table, &error, NULL, NULL) != 0) {
		fail(name, "%s:%zu: \"%s\": %s", path, error.line, error.text,
		     error.reason);
		goto out;
	}
	load_seconds = seconds_since(&start);
	if (table.count != BIG_LINES) {
		fail(name, "%zu entries, expected %d", table.count, BIG_LINES);
		goto out;
	}

	/* Build the peers first so only subnets_contains() is timed. */
	peers = calloc(BIG_LOOKUPS, sizeof(*peers));
	inside = calloc(BIG_LOOKUPS, sizeof(*inside));
	if (peers == NULL || inside == NULL) {
		fail(name, "out of memory");
		goto out;
	}
	for (unsigned k = 0; k < BIG_LOOKUPS; k++) {
		big_peer(k * 7919 % BIG_LOOKUPS, peer_text, sizeof(peer_text),
			 &inside[k]);
		make_peer(peer_text, &peers[k]);
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (unsigned k = 0; k < BIG_LOOKUPS; k++) {
		if (subnets_contains(&table, (struct sockaddr *)&peers[k]) !=
		    inside[k])
			wrong++;
	}
	lookup_seconds = seconds_since(&start);

	printf("# %d entries: load %.1f ms; %d lookups %.1f ms, %.2f us each\n",
	       BIG_LINES, load_seconds * 1e3, BIG_LOOKUPS, lookup_seconds * 1e3,
	       lookup_seconds * 1e6 / BIG_LOOKUPS);
	if (wrong != 0)
		fail(name, "%u of %d lookups wrong", wrong, BIG_LOOKUPS);
	else if (lookup_seconds >= 2.0) /* generous: sanitizers are on */
		fail(name, "lookups took %.2f s", lookup_seconds);
	else
		pass(name);
out:
	free(peers);
	free(inside);
	subnets_free(&table);
	if (given_path == NULL)
		unlink(path);
}

/* ---- main */

static int selected(const char *selection, const char *group, const char *name)
{
	return selection == NULL || strcmp(selection, group) == 0 ||
	       strcmp(selection, name) == 0;
}

int main(int argc, char **argv)
{
	const char *selection = argc > 1 ? argv[1] : NULL;
	const char *path = argc > 2 ? argv[2] : NULL;
	int ran = 0;

	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]);
	     i++) {
		const struct parse_case *c = &parse_cases[i];

		if (selected(selection, c->group, c->name)) {
			run_parse_case(c);
			ran++;
		}
	}
	for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]);
	     i++) {
		const struct match_case *c = &match_cases[i];

		if (selected(selection, c->group, c->name)) {
			run_match_case(c);
			ran++;
		}
	}

	static const struct {
		const char *group;
		void (*run)(void);
	} extra_cases[] = {
	    {"report", test_nul_byte_in_text},
	    {"report", test_long_text_is_capped},
	    {"table", test_parse_appends},
	    {"table", test_error_empties_table},
	    {"mapped", test_other_families},
	    {"load", test_missing_file},
	    {"load", test_directory},
	    {"load", test_nul_byte_in_file},
	    {"load", test_empty_file},
	};
	for (size_t i = 0; i < sizeof(extra_cases) / sizeof(extra_cases[0]);
	     i++) {
		if (selected(selection, extra_cases[i].group, "")) {
			extra_cases[i].run();
			ran++;
		}
	}
	if (selected(selection, "cloudflare", "")) {
		test_cloudflare(path != NULL && selection != NULL
				    ? path
				    : "tests/unit/data/cloudflare-ranges.txt");
		ran++;
	}
	if (selected(selection, "big", "")) {
		test_big_file(selection != NULL ? path : NULL);
		ran++;
	}

	if (ran == 0) {
		fprintf(stderr, "subnets_test: no group or case named \"%s\"\n",
			selection);
		return 2;
	}
	printf("# %d cases, %d failed\n", ran, failures);
	return failures == 0 ? 0 : 1;
}
