/*
 * log: where mmproxy's messages go, and the start-up failure exit.
 *
 * Holds the one logger (syslog or stderr, chosen once at start), the
 * verbosity, die() for start-up failures, and a rate limit for messages a
 * flood could repeat. Holds no escaping (text.h) and no address formatting
 * (netaddr.h).
 */
#ifndef LOG_H
#define LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>
#include <time.h>

/* Exit codes: 0 done (a refused connection is a job done), 1 system failure, 2 usage or config. */
enum { EXIT_SYSTEM = 1, EXIT_USAGE = 2 };

/* -v: what is logged beyond start-up failures. */
enum { LOG_LEVEL_QUIET = 0, LOG_LEVEL_ERRORS = 1, LOG_LEVEL_CONNECTIONS = 2 };

/*
 * Send every line to syslog from now on: fd 2 is no place for them (under
 * xinetd, or systemd Accept=yes, it is the client's socket).
 */
void log_use_syslog(void);
void log_set_verbosity(int level);

/* Would a message of this level be logged? Saves formatting one that would not. */
bool log_wants(int level);

/*
 * Lines formatted so far by this process. A line takes a few KiB of stack
 * (two line buffers, vsnprintf, syslog): a pool's connection process gives
 * those pages back only after a connection that logged.
 */
unsigned long log_lines_written(void);

/* One line, whatever the verbosity; errno is kept. */
__attribute__((format(printf, 2, 3))) void log_msg(int priority,
						   const char *fmt, ...);

/* The same, with prefix before the formatted text. */
void log_vmsg(int priority, const char *prefix, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* A per-connection problem: logged from -v 1 (LOG_LEVEL_ERRORS). */
__attribute__((format(printf, 1, 2))) void log_error(const char *fmt, ...);

/* A start-up failure: one line whatever the verbosity, then exit(status). */
__attribute__((format(printf, 2, 3), noreturn)) void die(int status,
							 const char *fmt, ...);

/*
 * Allows one message per interval. When it allows one, held_back says how
 * many it refused since the last one it allowed, for that message to say.
 * Starts zeroed.
 */
struct rate_limit {
	time_t last;
	unsigned suppressed;
	unsigned held_back;
};

bool rate_limit_allows(struct rate_limit *limit, time_t interval_s);

/* The interval for messages a flood could repeat (accept errors, UDP drops). */
enum { LOG_INTERVAL_S = 10 };

#endif
