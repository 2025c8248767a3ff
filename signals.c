/*
 * signals: the long-lived modes' signals through a signalfd (see
 * signals.h). SIGPIPE and SIGHUP are ignored by main(), not here.
 */
#include "signals.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
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

bool signals_read(int fd, bool *child_exited)
{
	struct signalfd_siginfo info;
	bool stop = false;

	while (read(fd, &info, sizeof info) == sizeof info) {
		if (info.ssi_signo == SIGCHLD)
			*child_exited = true;
		else
			stop = true;
	}
	return stop;
}
