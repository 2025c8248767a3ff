/*
 * kernrelay: relay an established connection's bytes inside the kernel.
 *
 * What follows the PROXY header (and any bytes a caller already read and
 * wrote on) can be moved by an SK_SKB verdict program between two sockets
 * in a sockmap, so small messages no longer wake the connection's process.
 * The kernel moves bytes only while user space has granted it credit; the
 * rest goes through user space, in order. See kernrelay.c for the design
 * and tests/bench/kernel-relay/README.md for the evidence behind it.
 *
 * Needs CAP_BPF (CAP_SYS_ADMIN before Linux 5.8) for bpf(2), and a kernel
 * with BPF_SK_SKB_VERDICT, mmap-able array maps and ring buffers (5.13+).
 */
#ifndef KERNRELAY_H
#define KERNRELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "relay.h"

/* The bytes of a relay_result that the kernel moved without this process. */
struct kernrelay_counts {
	uint64_t a_to_b;
	uint64_t b_to_a;
};

enum kernrelay_outcome {
	KERNRELAY_RELAYED,  /* the connection is done: see the result */
	KERNRELAY_FALLBACK, /* nothing was read or written: relay in user space */
};

/*
 * Can this process relay in the kernel? Builds and drops one set of maps and
 * the program. On false, *reason says why in a few words ("bpf: Operation
 * not permitted (needs CAP_BPF)").
 */
bool kernrelay_probe(const char **reason);

/*
 * Relay a_fd <-> b_fd (both non-blocking) until both sides are done,
 * half-close, resets and the result as relay_run() has them; kernel, when
 * not NULL, says how many of the bytes the kernel moved. Returns KERNRELAY_FALLBACK, with
 * *reason set, when the kernel relay could not be set up for this connection
 * before any byte moved; the caller then runs the user-space relay. Once it
 * has started it finishes the connection itself, through user space if a
 * socket cannot join the kernel path (for instance one whose peer already
 * sent FIN). The fds are left open; the caller closes them.
 */
enum kernrelay_outcome kernrelay_run(int a_fd, int b_fd,
				     struct relay_result *result,
				     struct kernrelay_counts *kernel,
				     const char **reason);

#endif
