/*
 * relay: move bytes both ways between two connected stream sockets until
 * both directions are done, and say how it ended.
 *
 * Each side's EOF becomes a shutdown(SHUT_WR) of the other (half-close is
 * passed on), but for the last, which the caller's close() passes on; a
 * reset or error on either side ends both. Holds no logging,
 * no closing of the sockets and no knowledge of PROXY headers: the caller
 * owns the fds and tells the story.
 */
#ifndef RELAY_H
#define RELAY_H

#include <stddef.h>
#include <stdint.h>

enum relay_end {
	RELAY_DONE,	     /* both sides closed, a first (or together) */
	RELAY_B_CLOSED_FIRST, /* both sides closed, b first */
	RELAY_A_RESET,	     /* a's side reset or failed: reset both */
	RELAY_B_RESET,	     /* b's side reset or failed: reset both */
	RELAY_IDLE,	     /* no byte moved either way for the idle limit */
	RELAY_ERROR,	     /* a system call of our own failed */
};

struct relay_result {
	enum relay_end end;
	uint64_t bytes_a_to_b;
	uint64_t bytes_b_to_a;
};

/*
 * Relay between a and b, both non-blocking, until both directions are
 * shut, one side fails, or (idle_timeout_ms > 0) no byte has moved either
 * way for idle_timeout_ms. The first a_skip bytes a sends are dropped, not
 * relayed: bytes the caller has seen (with MSG_PEEK) and left in a's
 * socket, so they are taken with the first data in one read. The last
 * direction to end is not shut down: the caller's close() sends that FIN.
 * Without a pipe for splice() (EMFILE...), the small buffer still does the
 * job.
 */
void relay_run(int a_fd, int b_fd, int idle_timeout_ms, size_t a_skip,
	       struct relay_result *result);

#endif
