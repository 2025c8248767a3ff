/*
 * listener: the forking accept loop (see listener.h).
 *
 * The file reads as the listener's life: its state, signals and children,
 * the fork and the child's side, accepting a batch, the loop, the loop's
 * frame placed for memory's sake (stack_layout.h), and the two ways it
 * starts: on our own sockets (--listeners N) or on systemd's. Holds nothing
 * of a connection's life beyond handing it to connection_run().
 */
#define _GNU_SOURCE
#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "connection.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "sandbox.h"
#include "signals.h"
#include "sockets.h"
#include "stack_layout.h"

struct listener {
	int listen_fd;
	int signal_fd;
	struct metrics *metrics;
	pid_t metrics_pid; /* the --metrics endpoint's process, or 0 */
	bool is_sibling;   /* started by the first accept process (--listeners) */
	unsigned live_children;
	unsigned max_children; /* 0: no cap */
	int64_t paused_until_ms;
	struct rate_limit accept_error_log;
	struct rate_limit limit_log;
	pid_t *sibling_pids; /* other accept processes, for --listeners */
	unsigned sibling_count;
};

/* After EMFILE and friends, stop accepting this long, then try again. */
enum { ACCEPT_BACKOFF_MS = 100, ACCEPT_BATCH = 32 };

static void reap_children(struct listener *l)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		bool was_sibling = false;
		if (pid == l->metrics_pid) {
			log_msg(LOG_ERR, "metrics process %ld exited", (long)pid);
			l->metrics_pid = 0;
			continue;
		}
		for (unsigned i = 0; i < l->sibling_count; i++) {
			if (l->sibling_pids[i] == pid) {
				l->sibling_pids[i] = 0;
				was_sibling = true;
				log_msg(LOG_ERR, "accept process %ld exited",
					(long)pid);
			}
		}
		if (!was_sibling && l->live_children > 0)
			l->live_children--;
	}
}

/*
 * SIGHUP: processes forked from now on start with the new set; those
 * already running keep theirs. The first accept process passes the signal
 * on to the others (--listeners), and it alone counts the reload.
 */
static void reload_allowed(struct listener *l, const struct options *opts,
			   struct subnets *allowed)
{
	for (unsigned i = 0; i < l->sibling_count; i++)
		if (l->sibling_pids[i] > 0)
			kill(l->sibling_pids[i], SIGHUP);
	reload_and_log(opts->subnets_path, allowed,
		       l->is_sibling ? NULL : l->metrics);
}

/* Returns true when the listener must stop. */
static bool handle_signals(struct listener *l, const struct options *opts,
			   struct subnets *allowed)
{
	struct signals_seen seen = signals_read(l->signal_fd);

	if (seen.child_exited)
		reap_children(l);
	if (seen.reload && !seen.stop)
		reload_allowed(l, opts, allowed);
	if (seen.report)
		metrics_log(l->metrics, METRICS_SHOW_TCP);
	return seen.stop;
}

static void stop_siblings(const struct listener *l)
{
	for (unsigned i = 0; i < l->sibling_count; i++)
		if (l->sibling_pids[i] > 0)
			kill(l->sibling_pids[i], SIGTERM);
}

static void pause_accepting(struct listener *l, const char *why, int error)
{
	l->paused_until_ms = monotonic_ms() + ACCEPT_BACKOFF_MS;
	if (rate_limit_allows(&l->accept_error_log, LOG_INTERVAL_S)) {
		log_msg(LOG_WARNING,
			"%s: %s; pausing accept for %d ms (%u similar "
			"messages held back since the last one)",
			why, strerror(error), ACCEPT_BACKOFF_MS,
			l->accept_error_log.held_back);
	}
}

/* The child side of a fork: it owns the connection and nothing else. */
__attribute__((noreturn)) static void
run_connection_child(struct listener *l, int client_fd,
		     const struct sockaddr_storage *peer,
		     const struct options *opts, const struct subnets *allowed)
{
	sigset_t only_interrupt;

	close(l->listen_fd);
	close(l->signal_fd);
	/*
	 * SIGTERM ends a connection as usual; a terminal's ^C is for the
	 * listener, so it stays blocked: connections run to their end.
	 */
	sigemptyset(&only_interrupt);
	sigaddset(&only_interrupt, SIGINT);
	if (sigprocmask(SIG_SETMASK, &only_interrupt, NULL) != 0)
		_exit(EXIT_SYSTEM);
	_exit(connection_run_last(client_fd, peer, opts, allowed, l->metrics));
}

static bool is_at_limit(const struct listener *l)
{
	return l->max_children != 0 && l->live_children >= l->max_children;
}

/* Out of line: only the loop's frame above the child's (see run_listener). */
__attribute__((noinline)) static void
accept_connections(struct listener *l, const struct options *opts,
		   const struct subnets *allowed)
{
	for (int i = 0; i < ACCEPT_BATCH && !is_at_limit(l); i++) {
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof peer;
		int client_fd = accept4(l->listen_fd, (struct sockaddr *)&peer,
					&peer_len, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (client_fd < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == ECONNABORTED || errno == EPROTO ||
			    errno == EPERM)
				continue;
			pause_accepting(l, "accept", errno);
			return;
		}
		/*
		 * _Fork(), not fork(): it skips the atfork handlers and the
		 * resets of glibc's internal locks and thread stacks, whose
		 * writes to libc pages after every fork would turn each
		 * child's copy of those pages private (16 KiB more per
		 * connection). Safe only while this process never has a
		 * second thread: no lock can be held at the fork.
		 */
		pid_t pid = _Fork();
		if (pid == 0)
			run_connection_child(l, client_fd, &peer, opts,
					     allowed);
		if (pid < 0) {
			close_with_reset(client_fd);
			pause_accepting(l, "fork", errno);
			return;
		}
		close(client_fd);
		l->live_children++;
	}
	if (is_at_limit(l) && rate_limit_allows(&l->limit_log, LOG_INTERVAL_S))
		log_msg(LOG_WARNING,
			"connection limit %u reached: new connections wait in "
			"the backlog",
			l->max_children);
}

/*
 * The accept loop never dies of an accept error: EMFILE, ENFILE, ENOBUFS
 * and the like pause it briefly, and at the connection limit it simply
 * leaves the listening socket out of poll() so the backlog holds new
 * connections. SIGTERM or SIGINT stops it at once; connections live on in
 * their own processes.
 *
 * Out of line, so that run_listener can choose where its frame starts (see
 * there); it counts children in a copy of the listener in that frame,
 * since a page the loop writes after a fork is the child's.
 */
__attribute__((noinline)) static int
accept_loop(const struct listener *set_up, const struct options *opts,
	    struct subnets *allowed)
{
	struct listener copy = *set_up;
	struct listener *l = &copy;

	for (;;) {
		int64_t now = monotonic_ms();
		bool paused = l->paused_until_ms > now;
		bool accepting = !paused && !is_at_limit(l);
		struct pollfd fds[2] = {
			{.fd = l->signal_fd, .events = POLLIN},
			{.fd = accepting ? l->listen_fd : -1, .events = POLLIN},
		};
		int timeout_ms = paused ? (int)(l->paused_until_ms - now) : -1;
		if (poll(fds, 2, timeout_ms) < 0) {
			if (errno == EINTR)
				continue;
			die(EXIT_SYSTEM, "poll: %s", strerror(errno));
		}
		if ((fds[0].revents & POLLIN) &&
		    handle_signals(l, opts, allowed)) {
			stop_siblings(l);
			return 0;
		}
		if (fds[1].revents & POLLIN)
			accept_connections(l, opts, allowed);
	}
}

/*
 * Sets the signals up, then runs the loop with its frame near the top of a
 * page: the second trick of stack_layout.h.
 */
static int run_listener(struct listener *l, const struct options *opts,
			struct subnets *allowed)
{
	STACK_ALIGN_FOR_ACCEPT_LOOP();
	l->signal_fd = signals_open_fd();
	/* Accepted sockets inherit TCP_NODELAY: small messages go at once. */
	if (l->signal_fd < 0 || set_nonblocking(l->listen_fd) != 0 ||
	    set_int_option(l->listen_fd, IPPROTO_TCP, TCP_NODELAY, 1) != 0)
		die(EXIT_SYSTEM, "accept loop set-up: %s", strerror(errno));
	if (sandbox_install_filter(&opts->sandbox, SANDBOX_LISTENER) != 0)
		die(EXIT_SYSTEM, "system call filter: %s", strerror(errno));
	return accept_loop(l, opts, allowed);
}

/*
 * --listeners N: N accept processes, each on its own SO_REUSEPORT socket so
 * the kernel spreads connections among them. All sockets are bound before
 * any process starts, so a bad address stops everything at once.
 */
static int run_own_listeners(const struct options *opts,
			     struct subnets *allowed, struct metrics *metrics,
			     pid_t metrics_pid)
{
	unsigned count = opts->listeners;
	unsigned per_listener_cap =
		(opts->max_connections + count - 1) / count;
	/*
	 * On the heap, not the stack: every stack page the accept loop
	 * writes after a fork becomes a private copy in that child.
	 */
	int *fds = calloc(count, sizeof *fds);
	pid_t *pids = calloc(count, sizeof *pids);
	int status;

	if (fds == NULL || pids == NULL)
		die(EXIT_SYSTEM, "calloc: %s", strerror(errno));
	for (unsigned i = 0; i < count; i++)
		fds[i] = open_listening_socket(&opts->listen_addr, SOCK_STREAM,
					       count > 1,
					       opts->listen_transparent);
	pid_t first_pid = getpid();
	for (unsigned i = 1; i < count; i++) {
		pids[i - 1] = fork();
		if (pids[i - 1] < 0)
			die(EXIT_SYSTEM, "fork: %s", strerror(errno));
		if (pids[i - 1] == 0) {
			/* An accept process goes when the first one goes. */
			if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
				die(EXIT_SYSTEM, "prctl: %s", strerror(errno));
			/* The first may have gone before prctl() took effect. */
			if (getppid() != first_pid)
				_exit(0);
			for (unsigned j = 0; j < count; j++)
				if (j != i)
					close(fds[j]);
			struct listener sibling = {.listen_fd = fds[i],
						   .metrics = metrics,
						   .is_sibling = true,
						   .max_children =
							   per_listener_cap};
			status = run_listener(&sibling, opts, allowed);
			free(fds);
			free(pids);
			return status;
		}
	}
	for (unsigned i = 1; i < count; i++)
		close(fds[i]);
	struct listener first = {.listen_fd = fds[0],
				 .metrics = metrics,
				 .metrics_pid = metrics_pid,
				 .max_children = per_listener_cap,
				 .sibling_pids = pids,
				 .sibling_count = count - 1};
	status = run_listener(&first, opts, allowed);
	free(fds);
	free(pids);
	return status;
}

/*
 * --tproxy on a listening socket systemd made: without IP_TRANSPARENT the
 * TPROXY rule finds no socket to divert to and drops the packets. The
 * unit's Transparent=yes does this before the first connection; doing it
 * here too keeps a unit that lacks it from failing silently once we run.
 */
static void make_transparent(int listen_fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof local;

	if (getsockname(listen_fd, (struct sockaddr *)&local, &len) != 0)
		die(EXIT_SYSTEM, "socket activation fd %d: %s", listen_fd,
		    strerror(errno));
	if (set_transparent(listen_fd, local.ss_family) != 0)
		die(EXIT_SYSTEM,
		    "--tproxy on socket activation fd %d: %s (IP_TRANSPARENT "
		    "needs CAP_NET_ADMIN)",
		    listen_fd, strerror(errno));
}

int listener_run(int activated_fd, const struct options *opts,
		 struct subnets *allowed, struct metrics *metrics,
		 pid_t metrics_pid)
{
	if (activated_fd < 0)
		return run_own_listeners(opts, allowed, metrics, metrics_pid);
	if (opts->tproxy)
		make_transparent(activated_fd);
	struct listener l = {.listen_fd = activated_fd,
			     .metrics = metrics,
			     .metrics_pid = metrics_pid,
			     .max_children = opts->max_connections};
	return run_listener(&l, opts, allowed);
}
