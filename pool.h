/*
 * pool: the prefork pool of connection processes, in the style of Apache's
 * prefork MPM: a scoreboard in shared memory says which processes wait in
 * accept() and which serve a connection; the listener keeps the number
 * waiting between a minimum and a maximum; each process serves one
 * connection at a time, for that connection's whole life, up to
 * --connections-per-process of them, then exits.
 *
 * Holds the scoreboard, the listener's bookkeeping of its processes (which
 * slot, which pid, which generation), and the rules a connection process
 * lives by: how it waits for its next connection, asks for more spares when
 * it takes the last ones, and learns that it must take no other. Holds no
 * fork (the listener forks, where its stack frames are arranged; see
 * stack_layout.h), no signal reading for the listener, no logging and
 * nothing of what a connection does (connection.h).
 *
 * Memory, the reason for the split between shared and private: a page the
 * listener writes after a fork stays, in its old copy, with every child
 * forked before, so the listener writes only the scoreboard (MAP_SHARED:
 * no copy) and its bookkeeping (MADV_DONTFORK: never in a child).
 */
#ifndef POOL_H
#define POOL_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

/* The signal that asks a connection process to take no other connection. */
#define POOL_STOP_SIGNAL SIGUSR2

struct pool_settings {
	unsigned min_spare;   /* fork more when fewer wait than this */
	unsigned max_spare;   /* ask the ones above this to go */
	unsigned max_processes; /* busy and waiting together; 0: POOL_MAX_SLOTS */
	unsigned connections_per_process; /* then the process exits; >= 2 */
};

/* The most processes one pool tracks, with no --max-connections. */
enum { POOL_MAX_SLOTS = 65536 };

struct pool;

/*
 * A pool for connections accepted on listen_fd (which it makes blocking).
 * Returns NULL with errno on failure.
 */
struct pool *pool_create(const struct pool_settings *settings, int listen_fd);

/* ---- the listener's side */

/* Readable when a connection process asks for more spares. */
int pool_wake_fd(const struct pool *pool);

/* Empties the wake pipe, so the next request wakes the listener again. */
void pool_wakes_clear(struct pool *pool);

/* How many processes to start now: short of min_spare, within max_processes. */
unsigned pool_spares_wanted(const struct pool *pool);

/* Are max_processes busy or starting, none waiting? (The connection limit.) */
bool pool_is_full(const struct pool *pool);

/*
 * Before a fork: a slot for the new process, or -1 when max_processes are
 * live. After it: pool_started() in the listener with the child's pid, or
 * pool_release() when the fork failed.
 */
int pool_claim_slot(struct pool *pool);
void pool_started(struct pool *pool, int slot, pid_t pid);
void pool_release(struct pool *pool, int slot);

/* A reaped child: true when it was one of the pool's (its slot is free again). */
bool pool_reaped(struct pool *pool, pid_t pid);

/* Asks the waiting processes above max_spare to exit; returns how many. */
unsigned pool_trim(struct pool *pool);

/*
 * Asks every process started so far to take no other connection: those
 * waiting exit at once, busy ones after their connection. Processes started
 * later (a reload's new generation) are not asked.
 */
void pool_retire_all(struct pool *pool);

/* Processes live in the pool, busy or not. */
unsigned pool_live(const struct pool *pool);

/* ---- a connection process's side, from its fork to its exit */

/*
 * One connection process's view of the pool, on its own stack. struct pool
 * lives in the shared mapping and is mapped in the child too; its
 * bookkeeping of pids is not, and the child never looks at it.
 */
struct pool_child {
	struct pool *pool;
	int slot;
	unsigned served;
};

/* What pool_child_accept() returns when it has no connection. */
enum { POOL_NO_OTHER = -1, POOL_ACCEPT_FAILED = -2 };

/*
 * In the child, first: the stop signal's handler, the parent-death signal,
 * the listener's own fds closed (close_fd, -1 for none: its signalfd).
 * Returns 0, or -1 with errno (the child should exit).
 */
int pool_child_begin(struct pool_child *child, struct pool *pool, int slot,
		     pid_t listener_pid, int close_fd);

/* Before the child exits: its slot says it is going. */
void pool_child_leave(struct pool_child *child);

/*
 * Waits in accept() for the next connection. Returns its fd (non-blocking,
 * close-on-exec) with *peer filled; POOL_NO_OTHER when this process must
 * take no other connection; POOL_ACCEPT_FAILED with errno when accept()
 * ran out of something (EMFILE, ENFILE, ENOBUFS, ENOMEM), after a pause of
 * POOL_ACCEPT_BACKOFF_MS, for the caller to log and call again. Taking the
 * last spares wakes the listener to start more.
 */
enum { POOL_ACCEPT_BACKOFF_MS = 100 };
int pool_child_accept(struct pool_child *child, struct sockaddr_storage *peer);

/*
 * After each connection, whatever its end. logged: the connection wrote a
 * log line, which went deeper into the stack than a relay does.
 */
void pool_child_served(struct pool_child *child, bool logged);

/*
 * Will this process take no other connection? True once its connection
 * count reached --connections-per-process, or the listener asked it to stop
 * (a shutdown, a reload, fewer spares), or the listener is gone. Once true
 * it stays true. This is the point where a connection process may shed
 * what only accepting needs (a sandbox can drop accept()); the serving
 * loop asks it before and after each connection.
 */
bool pool_child_takes_no_other(const struct pool_child *child);

/*
 * Is the connection this process just took its last? True when it is the
 * --connections-per-process'th, or once a stop request or the listener's
 * death came (which can happen during the connection: the answer can turn
 * true while it is served, never back to false). From then on the process
 * has no use for accept(), the listening socket or the wake pipe.
 */
bool pool_child_is_last_connection(const struct pool_child *child);

#endif
