/*
 * signals: the signals a long-lived mode reads (SIGCHLD, SIGTERM, SIGINT,
 * SIGHUP, SIGUSR1), blocked and read through a signalfd, never handled
 * asynchronously. The pool's stop signal (pool.h) is blocked too, so that a
 * connection process just forked holds it until it can handle it.
 *
 * Holds the set, blocking it, the signalfd and reading it. Holds nothing of
 * what a mode does on a signal.
 */
#ifndef SIGNALS_H
#define SIGNALS_H

#include <stdbool.h>

/* Block the set in this process (and the children it forks). Returns 0 or -1. */
int signals_block(void);

/* A non-blocking, close-on-exec signalfd for the set; -1 with errno on error. */
int signals_open_fd(void);

/* What the signals pending on a signalfd ask for. */
struct signals_seen {
	bool stop;         /* SIGTERM, SIGINT */
	bool child_exited; /* SIGCHLD */
	bool reload;       /* SIGHUP: read the allowed subnets file again */
	bool report;       /* SIGUSR1: log the counters */
};

/* Read every pending signal from fd. */
struct signals_seen signals_read(int fd);

#endif
