/*
 * Unit tests for relay.c, driven over real TCP connection pairs on
 * 127.0.0.1: a "client" socket talks to relay_run()'s side a, a "backend"
 * socket to its side b, and the relay runs in a child process that reports
 * its struct relay_result through a pipe. A table of scenarios, each with
 * the end and the byte counts the relay must report.
 *
 * usage: relay_test [CASE]
 *   With no argument every case runs. Prints "ok NAME" or "FAIL NAME: why"
 *   per case and exits 1 if any case failed.
 */
#define _GNU_SOURCE
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "verdict.h"

/* ---- the sockets */

/* A connected TCP pair on 127.0.0.1: *near is ours, *far the relay's. */
static int tcp_pair(int *near, int *far)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof addr;
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, len) ||
	    listen(listener, 1) ||
	    getsockname(listener, (struct sockaddr *)&addr, &len))
		return -1;
	*near = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*near < 0 || connect(*near, (struct sockaddr *)&addr, len) != 0)
		return -1;
	*far = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	close(listener);
	return *far < 0 ? -1 : 0;
}

static int send_all(int fd, const char *text)
{
	size_t len = strlen(text);

	return send(fd, text, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* Read exactly strlen(want) bytes within 5 s and compare. */
static bool receives(int fd, const char *want)
{
	char got[256];
	size_t len = strlen(want), have = 0;

	while (have < len) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 5000) <= 0)
			return false;
		ssize_t n = recv(fd, got + have, len - have, 0);
		if (n <= 0)
			return false;
		have += (size_t)n;
	}
	return memcmp(got, want, len) == 0;
}

/* The next read says EOF (0) or an error (-errno), within 5 s. */
static int reads_end(int fd)
{
	char byte;
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	if (poll(&pfd, 1, 5000) <= 0)
		return 1;
	ssize_t n = recv(fd, &byte, 1, 0);
	return n == 0 ? 0 : n < 0 ? -errno : 1;
}

static void reset(int fd)
{
	struct linger linger = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
	close(fd);
}

/* No fd can be made: pipe2() in the relay fails with EMFILE; exit 3 if not. */
static void use_up_descriptors(void)
{
	int highest = 0;

	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			highest = fd;
	struct rlimit limit = {.rlim_cur = (rlim_t)highest + 1,
			       .rlim_max = (rlim_t)highest + 1};
	if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
		_exit(3);
	/* Fill the slots below the limit that closed fds left free. */
	while (dup(STDIN_FILENO) >= 0)
		;
	int probe[2];
	if (errno != EMFILE || pipe2(probe, O_CLOEXEC) == 0)
		_exit(3); /* the case would not test what it says */
}

/* ---- the relay in a child process */

/* Our two ends: the client talks to the relay's a, the backend to its b. */
struct ends {
	int client;
	int backend;
};

struct relay_child {
	pid_t pid;
	int result_fd;
};

/* The child holds a and b only: the ends' fds stay the parent's alone. */
static int start_relay(const struct ends *e, int a_fd, int b_fd,
		       bool without_pipes, size_t a_skip,
		       struct relay_child *child)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) != 0)
		return -1;
	child->pid = fork();
	if (child->pid < 0)
		return -1;
	if (child->pid == 0) {
		struct relay_result result;
		close(fds[0]);
		close(e->client);
		close(e->backend);
		if (without_pipes)
			use_up_descriptors();
		relay_run(a_fd, b_fd, 0, a_skip, &result);
		_exit(write(fds[1], &result, sizeof result) == sizeof result
			      ? 0
			      : 2);
	}
	close(fds[1]);
	close(a_fd);
	close(b_fd);
	child->result_fd = fds[0];
	return 0;
}

static int finish_relay(struct relay_child *child, struct relay_result *result)
{
	struct pollfd pfd = {.fd = child->result_fd, .events = POLLIN};
	int status = -1;

	if (poll(&pfd, 1, 10000) <= 0 ||
	    read(child->result_fd, result, sizeof *result) != sizeof *result) {
		kill(child->pid, SIGKILL);
		waitpid(child->pid, NULL, 0);
		close(child->result_fd);
		return -1;
	}
	close(child->result_fd);
	waitpid(child->pid, &status, 0);
	return status == 0 ? 0 : -1;
}

/* ---- scenarios: what the two ends do, and what they must see */

static bool client_half_closes_first(const struct ends *e)
{
	/* Half-close passes on, and the other way keeps flowing. */
	return send_all(e->client, "hello") == 0 &&
	       receives(e->backend, "hello") &&
	       shutdown(e->client, SHUT_WR) == 0 && reads_end(e->backend) == 0 &&
	       send_all(e->backend, "late reply") == 0 &&
	       receives(e->client, "late reply") &&
	       shutdown(e->backend, SHUT_WR) == 0 && reads_end(e->client) == 0;
}

static bool backend_half_closes_first(const struct ends *e)
{
	return send_all(e->backend, "banner") == 0 &&
	       receives(e->client, "banner") &&
	       shutdown(e->backend, SHUT_WR) == 0 && reads_end(e->client) == 0 &&
	       send_all(e->client, "bye") == 0 && receives(e->backend, "bye") &&
	       shutdown(e->client, SHUT_WR) == 0 && reads_end(e->backend) == 0;
}

static bool client_resets(const struct ends *e)
{
	bool ok = send_all(e->client, "abc") == 0 &&
		  receives(e->backend, "abc");
	reset(e->client);
	return ok;
}

static bool backend_resets(const struct ends *e)
{
	bool ok = send_all(e->backend, "xyz") == 0 &&
		  receives(e->client, "xyz");
	reset(e->backend);
	return ok;
}

/*
 * 1 MiB from the client, answered with 1 MiB from the backend after the
 * client's EOF: reads that fill the relay's buffer switch it to splice()
 * through a pipe, or keep the buffer when no pipe can be made.
 */
enum { BULK = 1 << 20 };

/* The byte at position i of a bulk transfer. */
static char pattern(size_t i)
{
	return (char)(i * 7 + i / 4099);
}

/* total bytes from one end to the other, checked byte by byte. */
static bool pump(int from, int to, size_t total)
{
	static char out[65536], in[65536];
	size_t sent = 0, received = 0;

	while (received < total) {
		struct pollfd fds[2] = {
			{.fd = sent < total ? from : -1, .events = POLLOUT},
			{.fd = to, .events = POLLIN},
		};
		if (poll(fds, 2, 5000) <= 0)
			return false;
		if (fds[0].revents & POLLOUT) {
			size_t chunk = total - sent < sizeof out ? total - sent
								 : sizeof out;
			for (size_t i = 0; i < chunk; i++)
				out[i] = pattern(sent + i);
			ssize_t n = send(from, out, chunk,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno != EAGAIN)
				return false;
			if (n > 0)
				sent += (size_t)n;
		}
		if (fds[1].revents & POLLIN) {
			ssize_t n = recv(to, in, sizeof in, MSG_DONTWAIT);
			if (n <= 0)
				return false;
			for (size_t i = 0; i < (size_t)n; i++)
				if (in[i] != pattern(received + i))
					return false;
			received += (size_t)n;
		}
	}
	return true;
}

/* After a skipped header that came with the first bytes, or alone. */
static bool echo_after_header(const struct ends *e)
{
	return receives(e->backend, "hello") && send_all(e->backend, "hi") == 0 &&
	       receives(e->client, "hi") && shutdown(e->client, SHUT_WR) == 0 &&
	       reads_end(e->backend) == 0 &&
	       shutdown(e->backend, SHUT_WR) == 0 && reads_end(e->client) == 0;
}

static bool bulk_both_ways(const struct ends *e)
{
	return pump(e->client, e->backend, BULK) &&
	       shutdown(e->client, SHUT_WR) == 0 && reads_end(e->backend) == 0 &&
	       pump(e->backend, e->client, BULK) &&
	       shutdown(e->backend, SHUT_WR) == 0 && reads_end(e->client) == 0;
}

struct relay_case {
	const char *name;
	bool (*scenario)(const struct ends *e);
	bool without_pipes;
	/* Sent by the client before the relay starts, of which a_skip bytes
	 * are the relay's to drop, as connection.c does with a header. */
	const char *prelude;
	size_t a_skip;
	enum relay_end end;
	uint64_t bytes_a_to_b; /* UINT64_MAX: not checked (a reset) */
	uint64_t bytes_b_to_a;
};

static const struct relay_case cases[] = {
	{"the client's half-close reaches the backend, whose reply still flows",
	 client_half_closes_first, false, "", 0, RELAY_DONE, 5, 10},
	{"the backend's half-close reaches the client, whose bytes still flow",
	 backend_half_closes_first, false, "", 0, RELAY_B_CLOSED_FIRST, 3, 6},
	{"a reset from the client ends the relay as the client's",
	 client_resets, false, "", 0, RELAY_A_RESET, 3, 0},
	{"a reset from the backend ends the relay as the backend's",
	 backend_resets, false, "", 0, RELAY_B_RESET, 0, 3},
	{"1 MiB each way arrives intact through splice()", bulk_both_ways,
	 false, "", 0, RELAY_DONE, BULK, BULK},
	{"1 MiB each way arrives intact when no pipe can be made",
	 bulk_both_ways, true, "", 0, RELAY_DONE, BULK, BULK},
	{"skipped bytes are dropped and what came with them is relayed",
	 echo_after_header, false, "PROXY-HEADERhello", 12, RELAY_DONE, 5, 2},
	{"skipped bytes that came alone are dropped, and later bytes flow",
	 client_half_closes_first, false, "PROXY-HEADER", 12, RELAY_DONE, 5,
	 10},
	{"after skipped bytes, 1 MiB each way arrives intact through splice()",
	 bulk_both_ways, false, "PROXY-HEADER", 12, RELAY_DONE, BULK, BULK},
	{"after skipped bytes, 1 MiB each way arrives intact without a pipe",
	 bulk_both_ways, true, "PROXY-HEADER", 12, RELAY_DONE, BULK, BULK},
};

static void run_case(const struct relay_case *c)
{
	struct ends e;
	int a_fd, b_fd;
	struct relay_child child;
	struct relay_result result;

	if (tcp_pair(&e.client, &a_fd) != 0 ||
	    tcp_pair(&e.backend, &b_fd) != 0 ||
	    send_all(e.client, c->prelude) != 0 ||
	    start_relay(&e, a_fd, b_fd, c->without_pipes, c->a_skip,
			&child) != 0) {
		fail(c->name, "set-up: %s", strerror(errno));
		return;
	}
	bool seen = c->scenario(&e);
	int finished = finish_relay(&child, &result);
	if (c->scenario != client_resets)
		close(e.client);
	if (c->scenario != backend_resets)
		close(e.backend);
	if (!seen)
		fail(c->name, "the ends did not see what they should");
	else if (finished != 0)
		fail(c->name, "the relay did not end, or failed");
	else if (result.end != c->end)
		fail(c->name, "end %d, want %d", result.end, c->end);
	else if (result.bytes_a_to_b != c->bytes_a_to_b ||
		 result.bytes_b_to_a != c->bytes_b_to_a)
		fail(c->name, "bytes %llu/%llu, want %llu/%llu",
		     (unsigned long long)result.bytes_a_to_b,
		     (unsigned long long)result.bytes_b_to_a,
		     (unsigned long long)c->bytes_a_to_b,
		     (unsigned long long)c->bytes_b_to_a);
	else
		pass(c->name);
}

int main(int argc, char **argv)
{
	const char *selection = argc > 1 ? argv[1] : NULL;

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (selection == NULL || strcmp(selection, cases[i].name) == 0)
			run_case(&cases[i]);
	return failures == 0 ? 0 : 1;
}
