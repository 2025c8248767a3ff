/*
 * signals: the long-lived modes' signals through a signalfd (see
 * signals.h). main() sets SIGPIPE, SIGHUP and SIGUSR1 to be ignored, so a
 * process that does not block them (a connection's) is never ended by one;
 * a blocked signal is still queued for the signalfd, even when ignored.
 */
#include "signals.h"

#include "pool.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	sigaddset(set, POOL_STOP_SIGNAL);
}

int signals_block(void)
{
	sigset_t signals;

	signal_set(&signals);
	return sigprocmask(SIG_BLOCK, &signals, NULL);
}

int signals_open_fd(void)
{
	sigset_t signals;

	signal_set(&signals);
	return signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
}

struct signals_seen signals_read(int fd)
{
	struct signalfd_siginfo info;
	struct signals_seen seen = {false, false, false, false};

	while (read(fd, &info, sizeof info) == sizeof info) {
		if (info.ssi_signo == SIGCHLD)
			seen.child_exited = true;
		else if (info.ssi_signo == SIGHUP)
			seen.reload = true;
		else if (info.ssi_signo == SIGUSR1)
			seen.report = true;
		else if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT)
			seen.stop = true;
		/* The stop signal asks nothing of a listener. */
	}
	return seen;
}
