/*
 * log: the logger, die() and the rate limit (see log.h).
 *
 * The one piece of process-wide state in mmproxy lives here: where log
 * lines go and how much is logged, set once at start. Under xinetd, or
 * systemd Accept=yes with StandardError=socket, fd 2 is the client's own
 * socket, and a log line there would corrupt the stream; main() decides,
 * before anything can be logged. What a message says is the caller's.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct {
	bool use_syslog;
	int verbosity;
} logger = {false, LOG_LEVEL_ERRORS};

/*
 * Counted apart from the logger, in thread-local storage: a connection
 * process writes errno there all the time, so the count dirties no page of
 * its own (in .data it would cost every connection process that logs a
 * third private page; tests/310 counts two).
 */
static __thread unsigned long lines_written;

void log_use_syslog(void)
{
	if (!logger.use_syslog)
		openlog("mmproxy", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	logger.use_syslog = true;
}

void log_set_verbosity(int level)
{
	logger.verbosity = level;
}

bool log_wants(int level)
{
	return logger.verbosity >= level;
}

unsigned long log_lines_written(void)
{
	return lines_written;
}

void log_vmsg(int priority, const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	int saved_errno = errno;
	int used = snprintf(line, sizeof line, "%s", prefix);

	if (used < 0 || (size_t)used >= sizeof line)
		used = 0;
	vsnprintf(line + used, sizeof line - (size_t)used, fmt, ap);
	lines_written++;
	if (logger.use_syslog) {
		syslog(priority, "%s", line);
	} else {
		char out[1100];
		int n = snprintf(out, sizeof out, "mmproxy[%ld]: %s\n",
				 (long)getpid(), line);
		if (n > 0) {
			size_t len = (size_t)n < sizeof out ? (size_t)n
							    : sizeof out - 1;
			/* A failed log write has nowhere to be reported. */
			ssize_t ignored = write(STDERR_FILENO, out, len);
			(void)ignored;
		}
	}
	errno = saved_errno;
}

void log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(priority, "", fmt, ap);
	va_end(ap);
}

void log_error(const char *fmt, ...)
{
	va_list ap;

	if (!log_wants(LOG_LEVEL_ERRORS))
		return;
	va_start(ap, fmt);
	log_vmsg(LOG_WARNING, "", fmt, ap);
	va_end(ap);
}

void die(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (logger.use_syslog) {
		log_vmsg(LOG_ERR, "", fmt, ap);
	} else {
		/* On a terminal, the program's name, as usage errors read. */
		fputs("mmproxy: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
	exit(status);
}

bool rate_limit_allows(struct rate_limit *limit, time_t interval_s)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (limit->last != 0 && now.tv_sec - limit->last < interval_s) {
		limit->suppressed++;
		return false;
	}
	limit->last = now.tv_sec;
	limit->held_back = limit->suppressed;
	limit->suppressed = 0;
	return true;
}
