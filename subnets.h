/*
 * subnets: the list of load balancer networks allowed to send PROXY headers.
 *
 * subnets_parse() is pure (text in, table or an error with line and reason
 * out); subnets_load() is the thin layer that reads a file. A table that
 * failed to load is empty and its caller must stop: mmproxy never falls back
 * to allowing everyone.
 */
#ifndef SUBNETS_H
#define SUBNETS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct subnet {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network order, host bits cleared; 4 used for AF_INET */
	unsigned prefix_len;
};

struct subnets {
	struct subnet *entries;
	size_t count;
	size_t capacity;
};

/* What went wrong, for "FILE:LINE: "TEXT": REASON" (line 0: no line, e.g. open failed). */
struct subnets_error {
	size_t line;
	char text[96];    /* the offending line, trimmed, escaped and capped */
	char reason[128]; /* e.g. "prefix length over 32", or strerror text */
};

/*
 * Called once per line whose address had bits set past the prefix (the entry
 * is kept, masked). text is the entry without its comment, escaped like
 * subnets_error.text; reason reads "host bits set past /24; using
 * 10.0.0.0/24". May be NULL.
 */
typedef void subnets_warn_fn(void *context, size_t line, const char *text,
			     const char *reason);

/*
 * Parse a whole file's text: one CIDR or bare address per line, blank lines
 * and '#' comments allowed (also after an entry), surrounding white space
 * ignored. Returns 0 and appends to *table, or -1 with *error filled (table
 * then holds nothing: it is freed and zeroed). *table must start zeroed or
 * hold a previous result; error must not be NULL.
 *
 * A bare address is a /32 or /128. A prefix length is plain decimal ("/08",
 * "/+8" are errors). A NUL byte is an error. A text with no entry at all is
 * an error ("no subnets in file", line 0): an empty list would refuse every
 * connection without saying why.
 */
int subnets_parse(const char *text, size_t len, struct subnets *table,
		  struct subnets_error *error, subnets_warn_fn *warn,
		  void *warn_context);

/* Read path and parse it; errors as subnets_parse(), open/read failures with line 0. */
int subnets_load(const char *path, struct subnets *table,
		 struct subnets_error *error, subnets_warn_fn *warn,
		 void *warn_context);

/*
 * Does the table hold addr? An IPv4-mapped IPv6 addr (::ffff:a.b.c.d), as a
 * dual-stack socket reports an IPv4 peer, matches IPv4 entries (and IPv6
 * entries as itself). The reverse does not hold: an AF_INET addr matches only
 * IPv4 entries, never ::ffff:0:0/96, so write IPv4 ranges as IPv4. Other
 * families, and a NULL table or addr, match nothing.
 */
int subnets_contains(const struct subnets *table, const struct sockaddr *addr);

void subnets_free(struct subnets *table);

#endif
