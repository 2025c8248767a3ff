/*
 * transparent: set IP_TRANSPARENT on the listening sockets of a running
 * process, for the --tproxy end-to-end tests.
 *
 * A TPROXY rule only diverts to a transparent listening socket. systemd
 * makes one with Transparent=yes, but systemd-socket-activate, which the
 * tests use to launch mmproxy the way systemd would, has no such option.
 * This takes a copy of each of the launcher's listening sockets with
 * pidfd_getfd() and sets the option on it: the socket is the same one, so
 * the launcher's listener becomes transparent, as with Transparent=yes.
 *
 * Usage: transparent PID
 * Exit status: 0 when at least one listening socket was made transparent;
 * 1 when none was found or a system call failed; 2 bad usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "toolkit.h"

const char toolkit_program_name[] = "transparent";
const char toolkit_synopsis[] = "usage: transparent PID\n";

static int is_listening(int fd)
{
	int listening = 0;
	socklen_t len = sizeof(listening);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) ==
		   0 &&
	       listening;
}

/* 1 when fd was a listening IPv4/IPv6 socket and now is transparent. */
static int make_transparent(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	int on = 1;

	if (!is_listening(fd) ||
	    getsockname(fd, (struct sockaddr *)&local, &len) != 0)
		return 0;
	if (local.ss_family == AF_INET6) {
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &on,
			       sizeof(on)) != 0)
			toolkit_die(1, "IPV6_TRANSPARENT: %s", strerror(errno));
	} else if (local.ss_family == AF_INET) {
		if (setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &on,
			       sizeof(on)) != 0)
			toolkit_die(1, "IP_TRANSPARENT: %s", strerror(errno));
	} else {
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	uint64_t pid;
	char fd_dir[64];
	struct dirent *entry;
	int done = 0;

	if (argc != 2 || toolkit_parse_number(argv[1], 1, INT32_MAX, &pid) != 0)
		toolkit_usage();
	int pidfd = pidfd_open((pid_t)pid, 0);
	if (pidfd < 0)
		toolkit_die(1, "pidfd_open %s: %s", argv[1], strerror(errno));
	snprintf(fd_dir, sizeof(fd_dir), "/proc/%s/fd", argv[1]);
	DIR *dir = opendir(fd_dir);
	if (dir == NULL)
		toolkit_die(1, "%s: %s", fd_dir, strerror(errno));
	while ((entry = readdir(dir)) != NULL) {
		uint64_t target_fd;
		if (toolkit_parse_number(entry->d_name, 0, INT32_MAX,
					 &target_fd) != 0)
			continue; /* "." and ".." */
		int fd = pidfd_getfd(pidfd, (int)target_fd, 0);
		if (fd < 0)
			continue; /* closed since readdir() saw it */
		done += make_transparent(fd);
		close(fd);
	}
	closedir(dir);
	close(pidfd);
	if (done == 0)
		toolkit_die(1, "process %s has no listening socket", argv[1]);
	return 0;
}
