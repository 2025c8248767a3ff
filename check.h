/*
 * check: --check, and the routing warnings a long-lived mode logs at start.
 *
 * Spoofing works only if the application's replies to a client's address
 * come back to loopback; when they do not, connections just hang. Holds the
 * checks, their one-line verdicts and the commands that fix what fails.
 * Holds no rtnetlink (netlink.h) and no socket options (spoof.h).
 */
#ifndef CHECK_H
#define CHECK_H

#include "options.h"

/* mmproxy --check: every line on stdout; returns 0 only when all pass. */
int check_run(const struct options *opts);

/* A long-lived mode's start: log a warning for routing that cannot work. */
void check_warn_about_routing(const struct options *opts);

#endif
