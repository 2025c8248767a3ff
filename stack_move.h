/*
 * stack_move: runs mmproxy on a stack of its own, mapped just below the
 * heap, so that the processes it forks touch one far-apart region of
 * address space fewer, and the kernel keeps fewer page-table pages for each
 * (tests/bench/README.md: "What an idle connection process costs the
 * kernel"). Holds nothing else: no logging, no option, no mode.
 *
 * After a move, a forked process has no original stack at all: it is
 * marked MADV_DONTFORK, and with it go the auxiliary vector and the
 * strings the kernel put there. argv, environ and program_invocation_name
 * point at copies, and /proc/PID/cmdline and environ read those copies
 * where the kernel lets the process say so. What a forked process must
 * never do is call getauxval() or read anything else glibc left on the
 * original stack (mmproxy.8, CAVEATS).
 */
#ifndef STACK_MOVE_H
#define STACK_MOVE_H

typedef int stack_move_main_fn(int argc, char **argv);

/*
 * Runs main_fn on the new stack with copies of argv and the environment,
 * and ends the process with exit() and its status: it never returns.
 * Anything refused on the way (no /proc, an address taken, a sanitizer
 * build) runs main_fn where it was called instead, as if nothing had been
 * tried, and returns its status.
 */
int stack_move_run(int argc, char **argv, stack_move_main_fn *main_fn);

#endif
