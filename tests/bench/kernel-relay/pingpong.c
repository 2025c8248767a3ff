/*
 * pingpong: small-message round trips through kernrelay, a plain user-space
 * relay, or no relay, one process per relayed connection as in mmproxy.
 * Not a timed test; compare the three in one run of this program each, back
 * to back (build: cc -O2 -I. -I../../.. -o pingpong pingpong.c kernrelay.c).
 *
 *     pingpong direct|user|kernel CONNECTIONS SECONDS
 *
 * A backend process echoes; this process drives CONNECTIONS connections,
 * each sending 6 bytes and waiting for them to come back, for SECONDS.
 * Prints round trips per second, p50 and p99 latency, and for "kernel" the
 * kernel memory an idle relayed connection costs (from /proc/meminfo, less
 * the same connections relayed by "user" processes is for the reader).
 */
#define _GNU_SOURCE
#include "kernrelay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MAX_CONNECTIONS = 1000, MAX_SAMPLES = 4000000 };

static int64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int listen_on(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	socklen_t len = sizeof *addr;

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	*addr = (struct sockaddr_in){.sin_family = AF_INET,
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0 ||
	    listen(fd, 1024) != 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) != 0) {
		perror("pingpong: listen");
		exit(2);
	}
	return fd;
}

static int connect_to(const struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
		perror("pingpong: connect");
		exit(2);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

/* The backend: echo everything on every accepted connection. */
static void echo_server(int listen_fd)
{
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = listen_fd};
	char buf[4096];

	epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
	for (;;) {
		struct epoll_event events[64];
		int n = epoll_wait(ep, events, 64, -1);
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			if (fd == listen_fd) {
				int c = accept(listen_fd, NULL, NULL), one = 1;
				setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one,
					   sizeof one);
				ev = (struct epoll_event){.events = EPOLLIN,
							  .data.fd = c};
				epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				continue;
			}
			ssize_t r = read(fd, buf, sizeof buf);
			if (r <= 0) {
				close(fd);
				continue;
			}
			if (write(fd, buf, (size_t)r) != r)
				close(fd);
		}
	}
}

/* A user-space relay as small as mmproxy's for small messages. */
static void user_relay(int a, int b)
{
	char buf[1024];

	for (;;) {
		struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
		if (poll(p, 2, -1) < 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = read(p[i].fd, buf, sizeof buf);
			if (r <= 0)
				return;
			if (send(p[1 - i].fd, buf, (size_t)r, MSG_NOSIGNAL) != r)
				return;
		}
	}
}

static void relay_child(const char *mode, int a, int b)
{
	struct relay_result result;
	const char *reason = "";

	if (strcmp(mode, "user") == 0) {
		user_relay(a, b);
		_exit(0);
	}
	fcntl(a, F_SETFL, O_NONBLOCK);
	fcntl(b, F_SETFL, O_NONBLOCK);
	if (kernrelay_run(a, b, &result, NULL, &reason) != KERNRELAY_RELAYED) {
		fprintf(stderr, "pingpong: kernel relay fell back: %s\n",
			reason);
		_exit(1);
	}
	_exit(0);
}

static long meminfo_kib(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long value = -1;
	size_t key_len = strlen(key);

	while (f != NULL && fgets(line, sizeof line, f))
		if (strncmp(line, key, key_len) == 0) {
			value = atol(line + key_len);
			break;
		}
	if (f != NULL)
		fclose(f);
	return value;
}

/* Kernel-side memory that a process and its sockets cost. */
static long kernel_kib(void)
{
	return meminfo_kib("AnonPages:") + meminfo_kib("KernelStack:") +
	       meminfo_kib("PageTables:") + meminfo_kib("SUnreclaim:");
}

static int compare_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;

	return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
	static int client_fds[MAX_CONNECTIONS];
	static int64_t sent_at[MAX_CONNECTIONS];
	static int64_t samples[MAX_SAMPLES];
	static pid_t relays[MAX_CONNECTIONS];
	struct sockaddr_in backend_addr, relay_addr;
	size_t sample_count = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: pingpong direct|user|kernel "
				"CONNECTIONS SECONDS\n");
		return 2;
	}
	const char *mode = argv[1];
	int connections = atoi(argv[2]);
	double seconds = atof(argv[3]);
	bool direct = strcmp(mode, "direct") == 0;
	if (connections < 1 || connections > MAX_CONNECTIONS)
		return 2;
	signal(SIGPIPE, SIG_IGN);

	int backend_listen = listen_on(&backend_addr);
	pid_t echo = fork();
	if (echo == 0)
		echo_server(backend_listen);
	int relay_listen = listen_on(&relay_addr);
	long kib_before = kernel_kib();
	for (int i = 0; i < connections; i++) {
		if (direct) {
			client_fds[i] = connect_to(&backend_addr);
			continue;
		}
		client_fds[i] = connect_to(&relay_addr);
		int a = accept(relay_listen, NULL, NULL), one = 1;
		int b = connect_to(&backend_addr);
		setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		relays[i] = fork();
		if (relays[i] == 0)
			relay_child(mode, a, b);
		close(a);
		close(b);
	}
	usleep(300000); /* let the relays settle before counting memory */
	long idle_kib = kernel_kib() - kib_before;

	int ep = epoll_create1(0);
	for (int i = 0; i < connections; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, client_fds[i], &ev);
		sent_at[i] = now_ns();
		if (write(client_fds[i], "ping!\n", 6) != 6)
			return 1;
	}
	int64_t end = now_ns() + (int64_t)(seconds * 1e9);
	uint64_t trips = 0;
	while (now_ns() < end) {
		struct epoll_event events[64];
		int n = epoll_wait(ep, events, 64, 100);
		for (int k = 0; k < n; k++) {
			int i = (int)events[k].data.u32;
			char buf[64];
			ssize_t r = read(client_fds[i], buf, sizeof buf);
			if (r <= 0) {
				fprintf(stderr, "pingpong: connection %d ended\n", i);
				return 1;
			}
			int64_t t = now_ns();
			if (sample_count < MAX_SAMPLES)
				samples[sample_count++] = t - sent_at[i];
			trips++;
			sent_at[i] = t;
			if (write(client_fds[i], "ping!\n", 6) != 6)
				return 1;
		}
	}
	qsort(samples, sample_count, sizeof samples[0], compare_i64);
	printf("%-6s connections=%d round_trips_per_s=%.0f p50_us=%.1f "
	       "p99_us=%.1f idle_kernel_kib_per_conn=%.1f\n",
	       mode, connections, (double)trips / seconds,
	       sample_count ? (double)samples[sample_count / 2] / 1000 : 0,
	       sample_count ? (double)samples[sample_count * 99 / 100] / 1000
			    : 0,
	       direct ? 0.0 : (double)idle_kib / connections);
	for (int i = 0; i < connections; i++)
		close(client_fds[i]);
	for (int i = 0; !direct && i < connections; i++) {
		kill(relays[i], SIGKILL);
		waitpid(relays[i], NULL, 0);
	}
	kill(echo, SIGKILL);
	waitpid(echo, NULL, 0);
	return 0;
}
