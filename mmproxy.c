/*
 * mmproxy: unwrap the PROXY protocol for applications that cannot speak it.
 *
 * A load balancer connects and sends a PROXY header naming the real client.
 * mmproxy checks that the load balancer is allowed, opens a connection to the
 * local application from the client's own address and port (IP_TRANSPARENT),
 * and relays bytes both ways until both sides are done. Policy routing (see
 * README) brings the application's replies back to this host's loopback.
 *
 * One process per connection: a small accept loop forks, or inetd/systemd
 * hand us the connection on fd 0 or fd 3. UDP is a separate long-lived mode.
 *
 * This file is main() and nothing else: the move to a stack next to the
 * heap (stack_move.h), the standard fds made safe, the options and what
 * the process was handed turned into a mode (options.c decides), the
 * allowed subnets loaded, and the mode's entry point called.
 * The README's "How the code is laid out" lists the other files.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "connection.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "netaddr.h"
#include "options.h"
#include "sandbox.h"
#include "signals.h"
#include "sockets.h"
#include "stack_move.h"
#include "subnets.h"
#include "text.h"
#include "udp.h"

/*
 * Under xinetd, or systemd Accept=yes with StandardOutput/StandardError left
 * on the socket, fds 1 and 2 are the client. Nothing may ever be written
 * there: point them at /dev/null and log to syslog instead. Closed standard
 * fds are opened on /dev/null so sockets never land on 0-2 by accident.
 */
static void protect_standard_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		bool closed = fcntl(fd, F_GETFD) < 0;
		if (!closed && (fd == 0 || !is_network_socket(fd)))
			continue;
		int null_fd = open("/dev/null", O_RDWR);
		if (null_fd < 0)
			_exit(EXIT_SYSTEM);
		if (null_fd != fd) {
			if (dup2(null_fd, fd) < 0)
				_exit(EXIT_SYSTEM);
			close(null_fd);
		}
		if (fd == STDERR_FILENO)
			log_use_syslog();
	}
}

/*
 * systemd passes sockets from fd 3 on, for the process named in LISTEN_PID.
 * The variables are cleared so that nothing we start takes them for its
 * own. Only fd 3 is used: the others are closed at once, so that no
 * connection process holds a listening socket it never serves (and keeps
 * it open after the listener is gone). Returns 3, or -1 when nothing was
 * passed; *count is how many were.
 */
static int socket_activation_fd(unsigned long *count)
{
	unsigned long pid;

	if (!text_parse_number(getenv("LISTEN_PID"), 1, INT32_MAX, &pid) ||
	    pid != (unsigned long)getpid() ||
	    !text_parse_number(getenv("LISTEN_FDS"), 1, INT32_MAX - 3, count))
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0)
		die(EXIT_SYSTEM, "socket activation fd 3: %s", strerror(errno));
	if (*count > 1 && close_range(4, (unsigned)(3 + *count - 1), 0) != 0)
		die(EXIT_SYSTEM, "closing socket activation fds 4-%lu: %s",
		    3 + *count - 1, strerror(errno));
	return 3;
}

/* What the process was handed: the facts options_choose_mode() needs. */
static struct inherited_fds inspect_inherited_fds(int activated_fd)
{
	struct inherited_fds fds = {.activated = activated_fd >= 0};

	if (fds.activated) {
		fds.activated_datagram =
			is_socket_of_type(activated_fd, SOCK_DGRAM);
		fds.activated_listening = is_listening_socket(activated_fd);
	} else {
		fds.fd0_is_connection = is_connected_stream_socket(0) &&
					is_network_socket(0);
	}
	return fds;
}

static enum launch_mode parse_command_line(int argc, char **argv,
					   struct options *opts,
					   int *activated_fd)
{
	struct options_error error;
	enum launch_mode mode;
	unsigned long passed = 0;

	switch (options_parse(argc, argv, opts, &error)) {
	case OPTIONS_HELP:
		fputs(options_help_text(), stdout);
		exit(0);
	case OPTIONS_VERSION:
		printf("mmproxy %s\n", MMPROXY_VERSION);
		exit(0);
	case OPTIONS_ERROR:
		die(EXIT_USAGE, "%s (see mmproxy --help)", error.text);
	case OPTIONS_RUN:
		break;
	}
	/* --check looks at no inherited socket. */
	*activated_fd = opts->check ? -1 : socket_activation_fd(&passed);
	struct inherited_fds fds = inspect_inherited_fds(*activated_fd);
	if (options_choose_mode(opts, &fds, &mode, &error) != 0)
		die(EXIT_USAGE, "%s (see mmproxy --help)", error.text);
	if (passed > 1)
		log_msg(LOG_WARNING,
			"%lu sockets passed; using the first, fd 3, and "
			"closing the others",
			passed);
	return mode;
}

static void warn_masked_subnet(void *context, size_t line, const char *text,
			       const char *reason)
{
	const char *path = context;
	log_msg(LOG_WARNING, "%s:%zu: \"%s\": %s", path, line, text, reason);
}

/* Fail closed: a file that cannot be used stops mmproxy; it never allows all. */
static void load_allowed_subnets(const char *path, struct subnets *table)
{
	struct subnets_error error;

	memset(table, 0, sizeof *table);
	if (subnets_load(path, table, &error, warn_masked_subnet,
			 (void *)path) != 0) {
		if (error.line == 0)
			die(EXIT_USAGE, "%s: %s", path, error.reason);
		die(EXIT_USAGE, "%s:%zu: \"%s\": %s", path, error.line,
		    error.text, error.reason);
	}
}

/*
 * A long-lived mode's counters, in memory its children will share, and with
 * --metrics the endpoint's process, forked before anything else so that it
 * holds nothing of the proxying. Returns the endpoint's PID, or 0.
 */
static pid_t start_metrics(enum launch_mode mode, const struct options *opts,
			   const struct subnets *allowed,
			   struct metrics **metrics)
{
	char text[NETADDR_TEXT_SIZE];

	*metrics = metrics_open();
	if (*metrics == NULL)
		die(EXIT_SYSTEM, "metrics: mmap: %s", strerror(errno));
	if (allowed != NULL)
		metrics_note_subnets_loaded(*metrics, allowed->count,
					    time(NULL));
	if (!opts->metrics_given)
		return 0;
	netaddr_format(&opts->metrics_addr, text, sizeof text);
	int fd = metrics_http_listen((const struct sockaddr *)&opts->metrics_addr,
				     netaddr_length(&opts->metrics_addr));
	if (fd < 0)
		die(EXIT_SYSTEM, "--metrics %s: %s", text, strerror(errno));
	pid_t pid = metrics_http_start(fd, *metrics,
				       mode == MODE_UDP ? METRICS_SHOW_UDP
							: METRICS_SHOW_TCP,
				       &opts->sandbox);
	if (pid < 0)
		die(EXIT_SYSTEM, "--metrics %s: fork: %s", text,
		    strerror(errno));
	close(fd);
	return pid;
}

/*
 * Least privilege from the start (SECURITY in mmproxy.8): the capabilities
 * mmproxy uses and no other, the --user switch, no_new_privs, and every
 * process kind's system call filter built now, before any fork. Where a
 * process installs its filter is its mode's business.
 */
static void start_sandbox(struct options *opts, enum launch_mode mode)
{
	struct sandbox_policy *policy = &opts->sandbox;
	const char *failed;

	policy->enabled = !opts->do_not_sandbox;
	policy->keep_capabilities =
		SANDBOX_CAP_NET_ADMIN | SANDBOX_CAP_NET_BIND_SERVICE;
	if (opts->user != NULL) {
		if (sandbox_find_user(opts->user, &policy->user) != 0)
			die(EXIT_USAGE, "--user %s: %s", opts->user,
			    errno == ENOENT ? "no such user in /etc/passwd"
					    : strerror(errno));
		policy->switch_user = true;
	}
	if (sandbox_drop_privileges(policy, &failed) != 0)
		die(EXIT_SYSTEM, "dropping privileges: %s: %s%s", failed,
		    strerror(errno),
		    opts->user != NULL && errno == EPERM
			    ? " (--user needs mmproxy started as root)"
			    : "");
	if (sandbox_prepare_filters(policy) != 0)
		die(EXIT_SYSTEM, "system call filters: %s", strerror(errno));
	/*
	 * Said once by a long-lived process, unless -q. A process per
	 * connection says what it was told at -v 2 only, and never that it
	 * runs as root: the line would come with every connection.
	 */
	bool long_lived = mode != MODE_CHECK && mode != MODE_ONE_CONNECTION;
	int wanted_level = long_lived ? LOG_LEVEL_ERRORS : LOG_LEVEL_CONNECTIONS;
	if (mode == MODE_CHECK || opts->verbosity < wanted_level)
		return;
	if (opts->do_not_sandbox)
		log_msg(LOG_WARNING, "--do-not-sandbox: every capability kept "
				     "and no system call filter");
	else if (!sandbox_has_filters())
		log_msg(LOG_WARNING, "no system call filter in this build (an "
				     "architecture without one, or a sanitizer "
				     "build): capabilities narrowed only");
	if (long_lived && opts->user == NULL && geteuid() == 0)
		log_msg(LOG_WARNING, "running as root%s: --user NAME runs as NAME",
			opts->do_not_sandbox
				? ""
				: " (with only CAP_NET_ADMIN and "
				  "CAP_NET_BIND_SERVICE left)");
}

/* inetd, systemd Accept=yes: the process's one and last connection. */
static int run_one_connection(int fd, const struct options *opts,
			      const struct subnets *allowed)
{
	if (sandbox_install_filter(&opts->sandbox, SANDBOX_CONNECTION) != 0)
		die(EXIT_SYSTEM, "system call filter: %s", strerror(errno));
	return connection_run_last(fd, NULL, opts, allowed, NULL);
}

/* The long-lived modes read their signals from a signalfd, never async. */
static int run_long_lived(enum launch_mode mode, int activated_fd,
			  const struct options *opts, struct subnets *allowed)
{
	struct metrics *metrics;

	check_warn_about_routing(opts);
	pid_t metrics_pid = start_metrics(mode, opts, allowed, &metrics);
	if (signals_block() != 0)
		die(EXIT_SYSTEM, "sigprocmask: %s", strerror(errno));
	if (mode != MODE_UDP)
		return listener_run(activated_fd, opts, allowed, metrics,
				    metrics_pid);
	if (activated_fd < 0)
		activated_fd = open_listening_socket(&opts->listen_addr,
						     SOCK_DGRAM, false,
						     opts->listen_transparent);
	return udp_run(activated_fd, opts, allowed, metrics, metrics_pid);
}

/* main() proper, run on the stack stack_move.h sets up where it can. */
static int run_mmproxy(int argc, char **argv)
{
	struct options opts;
	struct subnets table;
	struct subnets *allowed = NULL;
	int activated_fd;

	protect_standard_fds();
	enum launch_mode mode = parse_command_line(argc, argv, &opts,
						   &activated_fd);
	log_set_verbosity(opts.verbosity);
	if (mode == MODE_CHECK) {
		start_sandbox(&opts, mode);
		return check_run(&opts);
	}
	/*
	 * SIGPIPE: a write to a reset socket is an error we handle. SIGHUP
	 * and SIGUSR1: neither a closed terminal nor a signal sent to every
	 * process of the service may cut established connections; the
	 * long-lived loops block both and read them (signals.h), and the
	 * listener takes SIGHUP back to reload the allowed subnets.
	 */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR ||
	    signal(SIGHUP, SIG_IGN) == SIG_ERR ||
	    signal(SIGUSR1, SIG_IGN) == SIG_ERR)
		die(EXIT_SYSTEM, "signal: %s", strerror(errno));

	if (opts.subnets_path != NULL) {
		load_allowed_subnets(opts.subnets_path, &table);
		allowed = &table;
	} else if (!opts.tproxy && log_wants(LOG_LEVEL_ERRORS)) {
		/*
		 * Said once per process, whatever the mode (through syslog
		 * under inetd), and silenced only by -q. --tproxy reads no
		 * header: a client can only be itself.
		 */
		log_msg(LOG_WARNING, "no --allowed-subnets: any peer may send "
				     "PROXY headers and choose a source address");
	}

	/* After the subnets file: it may be readable by root only. */
	start_sandbox(&opts, mode);
	int status = mode == MODE_ONE_CONNECTION
			     ? run_one_connection(activated_fd >= 0
							  ? activated_fd
							  : 0,
						  &opts, allowed)
			     : run_long_lived(mode, activated_fd, &opts,
					      allowed);
	if (allowed != NULL)
		subnets_free(&table);
	return status;
}

int main(int argc, char **argv)
{
	return stack_move_run(argc, argv, run_mmproxy);
}
