/*
 * listener: the accept processes and the connection processes they start
 * (see listener.h).
 *
 * The file reads as the listener's life: its state, signals and children;
 * reloading the allowed subnets; the pool (the default): starting spare
 * processes, a connection process's life, the loop that keeps the pool;
 * one process per connection (--connections-per-process 1): the fork and
 * the child's side, accepting a batch, its loop; the loops' frame placed
 * for memory's sake (stack_layout.h); and the two ways it starts: on our
 * own sockets (--listeners N) or on systemd's. Holds nothing of a
 * connection's life beyond handing it to connection_run(), and nothing of
 * the scoreboard's workings (pool.h).
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
#include "pool.h"
#include "reload.h"
#include "sandbox.h"
#include "signals.h"
#include "sockets.h"
#include "stack_layout.h"

struct listener {
	int listen_fd;
	int signal_fd;
	pid_t pid;
	struct metrics *metrics; /* shared with every child: counts are exact */
	pid_t metrics_pid; /* the --metrics endpoint's process, or 0 */
	bool is_sibling;   /* started by the first accept process (--listeners) */
	unsigned live_children; /* --connections-per-process 1 */
	unsigned max_children;	/* 0: no cap */
	int64_t paused_until_ms;
	int64_t trim_at_ms;
	struct rate_limit accept_error_log;
	struct rate_limit limit_log;
	pid_t *sibling_pids; /* other accept processes, for --listeners */
	unsigned sibling_count;
	struct pool *pool; /* NULL: one process per connection */
	struct pool_settings pool_settings;
	struct subnets *allowed; /* replaced in place by a reload */
};

/*
 * After EMFILE and friends, stop accepting (or forking) this long, then try
 * again. Spares above the maximum are asked to go once a second at most, so
 * a pool that shrinks and grows with a bursty load does not fork on every
 * burst.
 */
enum { ACCEPT_BACKOFF_MS = 100, ACCEPT_BATCH = 32, TRIM_INTERVAL_MS = 1000 };

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
		if (was_sibling)
			continue;
		if (l->pool != NULL)
			pool_reaped(l->pool, pid);
		else if (l->live_children > 0)
			l->live_children--;
	}
}

static void stop_siblings(const struct listener *l, int signal_number)
{
	for (unsigned i = 0; i < l->sibling_count; i++)
		if (l->sibling_pids[i] > 0)
			kill(l->sibling_pids[i], signal_number);
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

static void log_connection_limit(struct listener *l, unsigned limit)
{
	if (rate_limit_allows(&l->limit_log, LOG_INTERVAL_S))
		log_msg(LOG_WARNING,
			"connection limit %u reached: new connections wait in "
			"the backlog",
			limit);
}

/* ---- reloading the allowed subnets (SIGHUP) */

/*
 * All or nothing (reload.h). The first accept process passes the signal on
 * to the others (--listeners), each reloads its own copy of the set, and the
 * first alone counts the reload in the metrics. Returns true when the set
 * was replaced.
 */
static bool reload_allowed(struct listener *l, const struct options *opts)
{
	stop_siblings(l, SIGHUP);
	return reload_and_log(opts->subnets_path, l->allowed,
			      l->is_sibling ? NULL : l->metrics) == 0;
}

/* ---- the pool: connection processes that serve one connection after another */

/*
 * A connection process: takes connections one at a time until it reaches
 * --connections-per-process, or is asked to stop, or the listener is gone
 * (pool_child_takes_no_other() says which it is, for whoever needs to
 * know), then exits. Nothing of a connection outlives connection_run():
 * it closes both sockets and any pipe, and clears its buffers.
 */
__attribute__((noreturn)) static void
run_pool_child(struct listener *l, int slot, const struct options *opts)
{
	struct pool_child child;
	struct rate_limit accept_error_log = {0, 0, 0};
	int status = 0;

	/* The listener's filter, narrowed to a connection's calls. */
	if (pool_child_begin(&child, l->pool, slot, l->pid, l->signal_fd) != 0 ||
	    sandbox_install_filter(&opts->sandbox, SANDBOX_CONNECTION) != 0)
		_exit(EXIT_SYSTEM);
	for (;;) {
		struct sockaddr_storage peer;
		int fd = pool_child_accept(&child, &peer);
		if (fd == POOL_NO_OTHER)
			break;
		if (fd == POOL_ACCEPT_FAILED) {
			if (rate_limit_allows(&accept_error_log, LOG_INTERVAL_S))
				log_msg(LOG_WARNING,
					"accept: %s; pausing accept for %d ms",
					strerror(errno),
					POOL_ACCEPT_BACKOFF_MS);
			continue;
		}
		/*
		 * Counted as accepted and, at its end, as ended, inside
		 * connection_run(): the shared block's live gauge is exact
		 * whichever process of the pool serves it.
		 *
		 * Its last connection: once connected, the relay runs with no
		 * capability and the relay's filter. (A stop request that
		 * comes later finds it with its connection's filter.)
		 */
		unsigned long lines_before = log_lines_written();
		if (pool_child_is_last_connection(&child))
			status = connection_run_last(fd, &peer, opts,
						     l->allowed, l->metrics);
		else
			status = connection_run(fd, &peer, opts, l->allowed,
						l->metrics);
		pool_child_served(&child, log_lines_written() != lines_before);
		/* After a system error, a fresh process takes over. */
		if (status != 0)
			break;
	}
	pool_child_leave(&child);
	_exit(status);
}

/*
 * Forks the spares the pool wants, or exactly `count` after a reload (the
 * old generation's spares are leaving but still counted). Out of line: only
 * the loop's frame above the children's (see run_listener).
 */
__attribute__((noinline)) static void
start_spares(struct listener *l, unsigned count, const struct options *opts)
{
	for (unsigned i = 0; i < count; i++) {
		int slot = pool_claim_slot(l->pool);
		if (slot < 0)
			return;
		/* _Fork(): see accept_connections. */
		pid_t pid = _Fork();
		if (pid == 0)
			run_pool_child(l, slot, opts);
		if (pid < 0) {
			pool_release(l->pool, slot);
			pause_accepting(l, "fork", errno);
			return;
		}
		pool_started(l->pool, slot, pid);
	}
}

/* A connection process took the last spares: more now, or the limit says. */
static void answer_wake(struct listener *l, const struct options *opts)
{
	pool_wakes_clear(l->pool);
	if (pool_is_full(l->pool))
		log_connection_limit(l, pool_live(l->pool));
	else if (l->paused_until_ms <= monotonic_ms())
		start_spares(l, pool_spares_wanted(l->pool), opts);
}

/* Returns true when the listener must stop. */
static bool handle_pool_signals(struct listener *l, const struct options *opts)
{
	struct signals_seen seen = signals_read(l->signal_fd);

	if (seen.child_exited)
		reap_children(l);
	if (seen.stop) {
		/* Spares go at once, busy processes after their connection. */
		pool_retire_all(l->pool);
		return true;
	}
	if (seen.report)
		metrics_log(l->metrics, METRICS_SHOW_TCP);
	if (seen.reload) {
		if (reload_allowed(l, opts)) {
			/* The new set reaches only processes forked from now. */
			pool_retire_all(l->pool);
			start_spares(l, l->pool_settings.min_spare, opts);
		}
	}
	return false;
}

static int pool_wait_ms(const struct listener *l, int64_t now)
{
	int64_t until = -1;

	if (l->paused_until_ms > now)
		until = l->paused_until_ms;
	if (pool_live(l->pool) > l->pool_settings.max_spare &&
	    (until < 0 || l->trim_at_ms < until))
		until = l->trim_at_ms;
	if (until < 0)
		return -1;
	return until > now ? (int)(until - now) : 0;
}

/*
 * The pool's keeper. It never accepts: spares do, in accept() on the shared
 * socket, where the kernel wakes one of them per connection. It forks when
 * a connection process says the spares run short, asks spares above the
 * maximum to go, reaps, reloads, and on SIGTERM or SIGINT asks every
 * process to take no other connection and returns. Out of line, and with
 * its state in a copy in its own frame, as accept_loop.
 */
__attribute__((noinline)) static int pool_loop(const struct listener *set_up,
					       const struct options *opts)
{
	struct listener copy = *set_up;
	struct listener *l = &copy;

	start_spares(l, pool_spares_wanted(l->pool), opts);
	for (;;) {
		int64_t now = monotonic_ms();
		struct pollfd fds[2] = {
			{.fd = l->signal_fd, .events = POLLIN},
			{.fd = pool_wake_fd(l->pool), .events = POLLIN},
		};
		if (poll(fds, 2, pool_wait_ms(l, now)) < 0) {
			if (errno == EINTR)
				continue;
			die(EXIT_SYSTEM, "poll: %s", strerror(errno));
		}
		if ((fds[0].revents & POLLIN) && handle_pool_signals(l, opts)) {
			stop_siblings(l, SIGTERM);
			return 0;
		}
		if (fds[1].revents & POLLIN)
			answer_wake(l, opts);
		now = monotonic_ms();
		if (now >= l->trim_at_ms) {
			pool_trim(l->pool);
			l->trim_at_ms = now + TRIM_INTERVAL_MS;
		}
		/* A process that reached its count, or a failed fork, left a gap. */
		if (l->paused_until_ms <= now)
			start_spares(l, pool_spares_wanted(l->pool), opts);
	}
}

/* ---- one process per connection (--connections-per-process 1) */

/* The child side of a fork: it owns the connection and nothing else. */
__attribute__((noreturn)) static void
run_connection_child(struct listener *l, int client_fd,
		     const struct sockaddr_storage *peer,
		     const struct options *opts)
{
	sigset_t only_interrupt;

	close(l->listen_fd);
	close(l->signal_fd);
	/*
	 * SIGTERM ends a connection as usual; a terminal's ^C is for the
	 * listener, so it stays blocked: connections run to their end, and
	 * a terminal's hangup is ignored for the same reason. The pool's
	 * stop signal asks for nothing this process would do anyway: it
	 * takes no other connection.
	 */
	sigemptyset(&only_interrupt);
	sigaddset(&only_interrupt, SIGINT);
	if (signal(SIGHUP, SIG_IGN) == SIG_ERR ||
	    signal(POOL_STOP_SIGNAL, SIG_IGN) == SIG_ERR ||
	    sigprocmask(SIG_SETMASK, &only_interrupt, NULL) != 0)
		_exit(EXIT_SYSTEM);
	_exit(connection_run_last(client_fd, peer, opts, l->allowed,
				  l->metrics));
}

static bool is_at_limit(const struct listener *l)
{
	return l->max_children != 0 && l->live_children >= l->max_children;
}

/*
 * A load balancer outside the allowed subnets costs no fork: the listener
 * refuses it itself, with the same log lines a child would write.
 */
static bool refused_here(struct listener *l, int client_fd,
			 const struct sockaddr_storage *peer,
			 const struct options *opts)
{
	if (l->allowed == NULL ||
	    subnets_contains(l->allowed, (const struct sockaddr *)peer))
		return false;
	/* Counted as accepted and refused there, as a child would. */
	connection_run(client_fd, peer, opts, l->allowed, l->metrics);
	return true;
}

/* Out of line: only the loop's frame above the child's (see run_listener). */
__attribute__((noinline)) static void
accept_connections(struct listener *l, const struct options *opts)
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
		if (refused_here(l, client_fd, &peer, opts))
			continue;
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
			run_connection_child(l, client_fd, &peer, opts);
		if (pid < 0) {
			close_with_reset(client_fd);
			pause_accepting(l, "fork", errno);
			return;
		}
		close(client_fd);
		l->live_children++;
	}
	if (is_at_limit(l))
		log_connection_limit(l, l->max_children);
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
accept_loop(const struct listener *set_up, const struct options *opts)
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
		if (fds[0].revents & POLLIN) {
			struct signals_seen seen = signals_read(l->signal_fd);
			if (seen.child_exited)
				reap_children(l);
			if (seen.stop) {
				stop_siblings(l, SIGTERM);
				return 0;
			}
			if (seen.report)
				metrics_log(l->metrics, METRICS_SHOW_TCP);
			if (seen.reload)
				reload_allowed(l, opts);
		}
		if (fds[1].revents & POLLIN)
			accept_connections(l, opts);
	}
}

/* ---- starting */

/*
 * Sets the signals up, then runs the loop with its frame near the top of a
 * page: the second trick of stack_layout.h.
 */
static int run_listener(struct listener *l, const struct options *opts)
{
	STACK_ALIGN_FOR_ACCEPT_LOOP();
	l->pid = getpid();
	l->signal_fd = signals_open_fd();
	if (l->signal_fd < 0 ||
	    connection_prepare_listener(l->listen_fd, opts) != 0)
		die(EXIT_SYSTEM, "accept loop set-up: %s", strerror(errno));
	if (opts->connections_per_process == 1) {
		if (set_nonblocking(l->listen_fd) != 0)
			die(EXIT_SYSTEM, "accept loop set-up: %s",
			    strerror(errno));
	} else {
		l->pool = pool_create(&l->pool_settings, l->listen_fd);
		if (l->pool == NULL)
			die(EXIT_SYSTEM, "process pool set-up: %s",
			    strerror(errno));
	}
	if (sandbox_install_filter(&opts->sandbox, SANDBOX_LISTENER) != 0)
		die(EXIT_SYSTEM, "system call filter: %s", strerror(errno));
	return l->pool != NULL ? pool_loop(l, opts) : accept_loop(l, opts);
}

/* Divides a per-mmproxy figure among accept processes, rounding up. */
static unsigned share_of(unsigned total, unsigned count)
{
	return (total + count - 1) / count;
}

/* The pool's settings for one of `count` accept processes. */
static struct pool_settings pool_settings_for(const struct options *opts,
					      unsigned count)
{
	struct pool_settings settings = {
		.min_spare = share_of(opts->min_spare, count),
		.max_spare = share_of(opts->max_spare, count),
		.max_processes = share_of(opts->max_connections, count),
		.connections_per_process = opts->connections_per_process,
	};
	if (settings.max_spare < settings.min_spare)
		settings.max_spare = settings.min_spare;
	return settings;
}

/*
 * --listeners N: N accept processes, each on its own SO_REUSEPORT socket so
 * the kernel spreads connections among them, each with its own pool. All
 * sockets are bound before any process starts, so a bad address stops
 * everything at once.
 */
static int run_own_listeners(const struct options *opts,
			     struct subnets *allowed, struct metrics *metrics,
			     pid_t metrics_pid)
{
	unsigned count = opts->listeners;
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
			struct listener sibling = {
				.listen_fd = fds[i],
				.metrics = metrics,
				.is_sibling = true,
				.max_children =
					share_of(opts->max_connections, count),
				.pool_settings = pool_settings_for(opts, count),
				.allowed = allowed};
			status = run_listener(&sibling, opts);
			free(fds);
			free(pids);
			return status;
		}
	}
	for (unsigned i = 1; i < count; i++)
		close(fds[i]);
	struct listener first = {
		.listen_fd = fds[0],
		.metrics = metrics,
		.metrics_pid = metrics_pid,
		.max_children = share_of(opts->max_connections, count),
		.sibling_pids = pids,
		.sibling_count = count - 1,
		.pool_settings = pool_settings_for(opts, count),
		.allowed = allowed};
	status = run_listener(&first, opts);
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
	/*
	 * SIGHUP reloads the allowed subnets: blocked and read through the
	 * signalfd, where main() ignored it. Connection processes ignore it
	 * again, so a terminal's hangup never cuts a connection.
	 */
	if (signal(SIGHUP, SIG_DFL) == SIG_ERR)
		die(EXIT_SYSTEM, "signal: %s", strerror(errno));
	if (activated_fd < 0)
		return run_own_listeners(opts, allowed, metrics, metrics_pid);
	if (opts->tproxy)
		make_transparent(activated_fd);
	struct listener l = {.listen_fd = activated_fd,
			     .metrics = metrics,
			     .metrics_pid = metrics_pid,
			     .max_children = opts->max_connections,
			     .pool_settings = pool_settings_for(opts, 1),
			     .allowed = allowed};
	return run_listener(&l, opts);
}
