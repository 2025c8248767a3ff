/*
 * signals: the signals a long-lived mode reads (SIGCHLD, SIGTERM, SIGINT),
 * blocked and read through a signalfd, never handled asynchronously.
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

/*
 * Read every pending signal from fd. Returns true when one of them asks us
 * to stop (SIGTERM, SIGINT); *child_exited is set on SIGCHLD.
 */
bool signals_read(int fd, bool *child_exited);

#endif
