/*
 * metrics_http: the --metrics endpoint. A process of its own serves
 * "GET /metrics" from the shared counters and nothing else.
 *
 * Why a process: the accept loop and the UDP loop then never read a byte
 * of a scraper's, never wait on one, and never share a poll set, a file
 * descriptor limit or a stack with one. A scraper that sends nothing,
 * sends garbage or never reads its answer holds one of a few slots of this
 * process for a short deadline at most; proxying cannot notice. The
 * process only reads the counters (all atomic), so it needs no lock and no
 * message from the proxying processes.
 *
 * Not here: the counters and their text (metrics.c).
 */
#ifndef METRICS_HTTP_H
#define METRICS_HTTP_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "metrics.h"
#include "sandbox.h"

/* Request bytes read at most, request line and headers together. */
#define METRICS_HTTP_REQUEST_MAX 4096

/* What to answer to the request bytes received so far. */
enum metrics_http_verdict {
	METRICS_HTTP_NEED_MORE,	  /* no verdict yet: read more */
	METRICS_HTTP_OK,	  /* 200: GET /metrics */
	METRICS_HTTP_BAD_REQUEST, /* 400: not an HTTP request line */
	METRICS_HTTP_NOT_FOUND,	  /* 404: another path */
	METRICS_HTTP_BAD_METHOD,  /* 405: another method */
	METRICS_HTTP_TOO_LARGE,	  /* 431: no end of headers within the cap */
};

/*
 * Pure: judge the len bytes of a request received so far. A verdict other
 * than NEED_MORE is final. Bytes that cannot start a request line are
 * judged at once, without waiting for the rest.
 */
enum metrics_http_verdict metrics_http_judge(const char *request, size_t len);

/* A listening TCP socket on addr; -1 with errno set. */
int metrics_http_listen(const struct sockaddr *addr, socklen_t addr_len);

/*
 * Fork the endpoint's process, serving on listen_fd the families that show
 * selects (METRICS_SHOW_*). It closes every other inherited descriptor and
 * ends when its parent does. Call before the parent forks anything else
 * and before it blocks signals it reads from a signalfd, or not: the child
 * sets its own mask. The child drops every capability and installs the
 * SANDBOX_METRICS filter of sandbox before it accepts anyone. Returns the
 * child's PID (the caller closes listen_fd), or -1 with errno set.
 */
pid_t metrics_http_start(int listen_fd, const struct metrics *metrics,
			 unsigned show, const struct sandbox_policy *sandbox);

#endif
