/*
 * metrics_http: the endpoint process behind --metrics.
 *
 * One poll loop over the listening socket and a few scraper slots. Each
 * scraper has a deadline from the moment it is accepted: it must send its
 * request (METRICS_HTTP_REQUEST_MAX bytes at most) within
 * REQUEST_TIMEOUT_MS, and take the answer within RESPONSE_TIMEOUT_MS; past
 * that it is reset. With every slot taken, the listening socket leaves the
 * poll set and new scrapers wait in the backlog. The answer is HTTP/1.1
 * with "Connection: close": one request per connection, as Prometheus
 * expects from an exporter that says so.
 *
 * The request judge (metrics_http_judge) is pure and comes first; the
 * process follows, in the order of a scrape: accept, read, judge, answer.
 */
#define _GNU_SOURCE
#include "metrics_http.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

/* ---- the request judge (pure) --------------------------------------------- */

/* RFC 9110 5.6.2: the characters of a token, such as a method. */
static bool is_token_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

/* Where the header block ends (just past its empty line), or NULL. */
static const char *header_end(const char *request, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (request[i] != '\n')
			continue;
		if (request[i + 1] == '\n')
			return request + i + 2;
		if (request[i + 1] == '\r' && i + 2 < len &&
		    request[i + 2] == '\n')
			return request + i + 3;
	}
	return NULL;
}

/* Can these bytes still begin "METHOD SP"? */
static bool could_be_method(const char *request, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (request[i] == ' ')
			return i > 0;
		if (!is_token_char(request[i]))
			return false;
	}
	return true;
}

static bool has_prefix(const char *text, size_t len, const char *prefix)
{
	size_t prefix_len = strlen(prefix);

	return len >= prefix_len && memcmp(text, prefix, prefix_len) == 0;
}

/*
 * RFC 9112 3: request-line = method SP request-target SP HTTP-version,
 * line holding it without its CRLF or LF.
 */
static enum metrics_http_verdict judge_request_line(const char *line,
						    size_t len)
{
	const char *first_space = memchr(line, ' ', len);
	if (first_space == NULL)
		return METRICS_HTTP_BAD_REQUEST;
	const char *target = first_space + 1;
	size_t rest = len - (size_t)(target - line);
	const char *second_space = memchr(target, ' ', rest);
	if (second_space == NULL || second_space == target)
		return METRICS_HTTP_BAD_REQUEST;
	size_t target_len = (size_t)(second_space - target);
	const char *version = second_space + 1;
	size_t version_len = rest - target_len - 1;
	if (version_len != 8 || !has_prefix(version, version_len, "HTTP/1.") ||
	    version[7] < '0' || version[7] > '9')
		return METRICS_HTTP_BAD_REQUEST;
	for (size_t i = 0; i < target_len; i++)
		if (target[i] <= ' ' || target[i] == 0x7f)
			return METRICS_HTTP_BAD_REQUEST;
	size_t method_len = (size_t)(first_space - line);
	if (method_len != 3 || memcmp(line, "GET", 3) != 0)
		return METRICS_HTTP_BAD_METHOD;
	const char *query = memchr(target, '?', target_len);
	size_t path_len = query ? (size_t)(query - target) : target_len;
	if (path_len != strlen("/metrics") ||
	    memcmp(target, "/metrics", path_len) != 0)
		return METRICS_HTTP_NOT_FOUND;
	return METRICS_HTTP_OK;
}

enum metrics_http_verdict metrics_http_judge(const char *request, size_t len)
{
	if (!could_be_method(request, len))
		return METRICS_HTTP_BAD_REQUEST;
	if (header_end(request, len) == NULL)
		return len >= METRICS_HTTP_REQUEST_MAX ? METRICS_HTTP_TOO_LARGE
						       : METRICS_HTTP_NEED_MORE;
	const char *newline = memchr(request, '\n', len);
	size_t line_len = (size_t)(newline - request);
	if (line_len > 0 && request[line_len - 1] == '\r')
		line_len--;
	return judge_request_line(request, line_len);
}

/* ---- the listening socket ------------------------------------------------- */

int metrics_http_listen(const struct sockaddr *addr, socklen_t addr_len)
{
	int fd = socket(addr->sa_family,
			SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int on = 1;

	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
	    bind(fd, addr, addr_len) != 0 || listen(fd, 16) != 0) {
		int saved_errno = errno;
		close(fd);
		errno = saved_errno;
		return -1;
	}
	return fd;
}

/* ---- the endpoint process ------------------------------------------------- */

enum {
	SCRAPERS_MAX = 8,
	REQUEST_TIMEOUT_MS = 2000,
	RESPONSE_TIMEOUT_MS = 5000,
	ACCEPT_BACKOFF_MS = 100,
	BODY_MAX = 24576,
	HEAD_MAX = 256,
};

struct scraper {
	int fd; /* -1: the slot is free */
	int64_t deadline_ms;
	bool answering;
	size_t request_len;
	size_t response_len;
	size_t sent;
	char request[METRICS_HTTP_REQUEST_MAX];
	char response[HEAD_MAX + BODY_MAX];
};

struct endpoint {
	int listen_fd;
	const struct metrics *metrics;
	unsigned show;
	int64_t paused_until_ms;
	struct scraper *scrapers; /* SCRAPERS_MAX of them */
	char body[BODY_MAX];
};

static int64_t now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void release(struct scraper *s, bool reset)
{
	if (reset) {
		struct linger linger = {.l_onoff = 1, .l_linger = 0};
		setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &linger,
			   sizeof linger);
	}
	close(s->fd);
	s->fd = -1;
}

static const char *status_line(enum metrics_http_verdict verdict)
{
	switch (verdict) {
	case METRICS_HTTP_OK:
		return "200 OK";
	case METRICS_HTTP_NOT_FOUND:
		return "404 Not Found";
	case METRICS_HTTP_BAD_METHOD:
		return "405 Method Not Allowed";
	case METRICS_HTTP_TOO_LARGE:
		return "431 Request Header Fields Too Large";
	case METRICS_HTTP_NEED_MORE:
	case METRICS_HTTP_BAD_REQUEST:
		break;
	}
	return "400 Bad Request";
}

/* The body: the counters for 200, the status itself for the rest. */
static size_t write_body(struct endpoint *e, enum metrics_http_verdict verdict)
{
	if (verdict != METRICS_HTTP_OK)
		return (size_t)snprintf(e->body, sizeof e->body, "%s\n",
					status_line(verdict));
	struct metrics_counters counters;
	metrics_snapshot(e->metrics, &counters);
	size_t len = metrics_render_prometheus(&counters, e->show, e->body,
					       sizeof e->body);
	return len < sizeof e->body ? len : 0;
}

static void prepare_answer(struct endpoint *e, struct scraper *s,
			   enum metrics_http_verdict verdict)
{
	size_t body_len = write_body(e, verdict);
	const char *status = body_len > 0 ? status_line(verdict)
					  : "500 Internal Server Error";
	int head_len = snprintf(
		s->response, HEAD_MAX,
		"HTTP/1.1 %s\r\n"
		"Content-Type: %s\r\n"
		"Content-Length: %zu\r\n"
		"%s"
		"Connection: close\r\n\r\n",
		status,
		verdict == METRICS_HTTP_OK && body_len > 0
			? "text/plain; version=0.0.4; charset=utf-8"
			: "text/plain; charset=utf-8",
		body_len,
		verdict == METRICS_HTTP_BAD_METHOD ? "Allow: GET\r\n" : "");
	memcpy(s->response + head_len, e->body, body_len);
	s->response_len = (size_t)head_len + body_len;
	s->sent = 0;
	s->answering = true;
	s->deadline_ms = now_ms() + RESPONSE_TIMEOUT_MS;
}

static void read_request(struct endpoint *e, struct scraper *s)
{
	for (;;) {
		ssize_t n = recv(s->fd, s->request + s->request_len,
				 sizeof s->request - s->request_len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			/* Gone before a whole request: nobody to answer. */
			release(s, n < 0);
			return;
		}
		s->request_len += (size_t)n;
		enum metrics_http_verdict verdict =
			metrics_http_judge(s->request, s->request_len);
		if (verdict != METRICS_HTTP_NEED_MORE) {
			prepare_answer(e, s, verdict);
			return;
		}
	}
}

static void send_answer(struct scraper *s)
{
	while (s->sent < s->response_len) {
		ssize_t n = send(s->fd, s->response + s->sent,
				 s->response_len - s->sent, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			release(s, true);
			return;
		}
		s->sent += (size_t)n;
	}
	release(s, false);
}

static struct scraper *free_slot(struct endpoint *e)
{
	for (int i = 0; i < SCRAPERS_MAX; i++)
		if (e->scrapers[i].fd < 0)
			return &e->scrapers[i];
	return NULL;
}

static void accept_scrapers(struct endpoint *e)
{
	struct scraper *s;

	while ((s = free_slot(e)) != NULL) {
		int fd = accept4(e->listen_fd, NULL, NULL,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == ECONNABORTED || errno == EPROTO ||
			    errno == EPERM)
				continue;
			/* EMFILE and the like: try again a little later. */
			e->paused_until_ms = now_ms() + ACCEPT_BACKOFF_MS;
			return;
		}
		s->fd = fd;
		s->answering = false;
		s->request_len = 0;
		s->deadline_ms = now_ms() + REQUEST_TIMEOUT_MS;
	}
}

/* Resets the scrapers past their deadline; returns ms to the next one, or -1. */
static int expire_scrapers(struct endpoint *e, int64_t now)
{
	int64_t next = -1;

	for (int i = 0; i < SCRAPERS_MAX; i++) {
		struct scraper *s = &e->scrapers[i];
		if (s->fd < 0)
			continue;
		if (s->deadline_ms <= now) {
			release(s, true);
			continue;
		}
		if (next < 0 || s->deadline_ms - now < next)
			next = s->deadline_ms - now;
	}
	if (e->paused_until_ms > now &&
	    (next < 0 || e->paused_until_ms - now < next))
		next = e->paused_until_ms - now;
	return (int)next;
}

__attribute__((noreturn)) static void serve(struct endpoint *e)
{
	struct pollfd fds[1 + SCRAPERS_MAX];

	for (;;) {
		int64_t now = now_ms();
		int timeout_ms = expire_scrapers(e, now);
		bool accepting = e->paused_until_ms <= now && free_slot(e);
		fds[0].fd = accepting ? e->listen_fd : -1;
		fds[0].events = POLLIN;
		for (int i = 0; i < SCRAPERS_MAX; i++) {
			struct scraper *s = &e->scrapers[i];
			fds[1 + i].fd = s->fd;
			fds[1 + i].events = s->answering ? POLLOUT : POLLIN;
		}
		if (poll(fds, 1 + SCRAPERS_MAX, timeout_ms) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (int i = 0; i < SCRAPERS_MAX; i++) {
			struct scraper *s = &e->scrapers[i];
			if (s->fd < 0 || fds[1 + i].revents == 0)
				continue;
			if (s->answering)
				send_answer(s);
			else
				read_request(e, s);
		}
		if (fds[0].revents & POLLIN)
			accept_scrapers(e);
	}
}

/* The child keeps its socket and standard fds; it must die with its parent. */
static int become_endpoint(int listen_fd, pid_t parent)
{
	sigset_t none;

	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
		return -1;
	/* The parent may have gone before prctl() took effect. */
	if (getppid() != parent)
		_exit(0);
	sigemptyset(&none);
	if (signal(SIGTERM, SIG_DFL) == SIG_ERR ||
	    signal(SIGINT, SIG_DFL) == SIG_ERR ||
	    sigprocmask(SIG_SETMASK, &none, NULL) != 0)
		return -1;
	if (listen_fd > 3 && close_range(3, (unsigned)listen_fd - 1, 0) != 0)
		return -1;
	if (close_range((unsigned)listen_fd + 1, ~0U, 0) != 0)
		return -1;
	/* Shown by ps and top, so nobody takes it for a connection. */
	prctl(PR_SET_NAME, "mmproxy-metrics");
	return 0;
}

/*
 * Before the first scraper's byte: no capability at all (the endpoint
 * spoofs nothing, and CAP_BPF is for a relay), and a filter that allows
 * serving scrapers and little else.
 */
static int narrow_endpoint(const struct sandbox_policy *sandbox)
{
	struct sandbox_policy none = *sandbox;

	none.allow_bpf = false;
	if (sandbox_drop_all_capabilities(&none) != 0)
		return -1;
	return sandbox_install_filter(sandbox, SANDBOX_METRICS);
}

pid_t metrics_http_start(int listen_fd, const struct metrics *metrics,
			 unsigned show, const struct sandbox_policy *sandbox)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	struct endpoint *e = calloc(1, sizeof *e);
	struct scraper *scrapers = calloc(SCRAPERS_MAX, sizeof *scrapers);
	if (e == NULL || scrapers == NULL ||
	    become_endpoint(listen_fd, parent) != 0 ||
	    narrow_endpoint(sandbox) != 0)
		_exit(1);
	for (int i = 0; i < SCRAPERS_MAX; i++)
		scrapers[i].fd = -1;
	e->listen_fd = listen_fd;
	e->metrics = metrics;
	e->show = show;
	e->scrapers = scrapers;
	serve(e);
}
