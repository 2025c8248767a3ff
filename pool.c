/*
 * pool: the prefork pool's scoreboard, the listener's bookkeeping and a
 * connection process's rules (see pool.h).
 *
 * The file follows a process's life: the shared scoreboard and its states;
 * creating the pool; the listener starting, counting, trimming and retiring
 * processes; a connection process beginning, waiting in accept(), serving
 * and leaving. Holds no fork, no logging and no connection handling.
 *
 * Counting without locks: each slot's state changes by an atomic exchange,
 * by the child while it lives (waiting, busy, leaving) and by the listener
 * before the fork and after the reap, never by both at once; whoever
 * changes a state adjusts the counters of the old and the new one. A
 * process that dies in any state is put right by the listener's reap.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

enum slot_state {
	SLOT_FREE,     /* no process */
	SLOT_STARTING, /* forked, not yet in accept() */
	SLOT_WAITING,  /* in accept(): a spare */
	SLOT_BUSY,     /* serving a connection */
	SLOT_LEAVING,  /* takes no other connection; exits after the current one */
};

/*
 * In one MAP_SHARED mapping with the slots' states after it: the listener
 * writes here after forks without handing the children private copies, and
 * the children's counts reach the listener. The children trust it as much
 * as they trust each other: they are one program with one set of rights.
 */
struct pool {
	struct pool_settings settings;
	int listen_fd;
	int wake_read_fd;  /* the listener's end */
	int wake_write_fd; /* the children's end, non-blocking */
	unsigned slot_count;
	/* The listener's alone. */
	unsigned live;
	unsigned slots_used; /* slots at or above this were never claimed */
	unsigned generation; /* bumped by pool_retire_all */
	pid_t *pids;         /* per slot, in a MADV_DONTFORK mapping */
	unsigned *generations;
	/* Shared with the children. */
	_Atomic unsigned waiting;
	_Atomic unsigned starting;
	atomic_bool wake_pending;
	_Atomic unsigned char states[];
};

/* ---- creating the pool */

static size_t page_round(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (size + page - 1) / page * page;
}

static int set_blocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	return fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

struct pool *pool_create(const struct pool_settings *settings, int listen_fd)
{
	unsigned slots = settings->max_processes != 0 &&
					 settings->max_processes < POOL_MAX_SLOTS
				 ? settings->max_processes
				 : POOL_MAX_SLOTS;
	size_t shared_size = page_round(sizeof(struct pool) + slots);
	size_t private_size =
		page_round((size_t)slots * (sizeof(pid_t) + sizeof(unsigned)));
	int wake[2];

	/*
	 * Shared first: the mapping lands next to the binary and the vdso,
	 * in the page-table pages the children have anyway.
	 */
	struct pool *pool = mmap(NULL, shared_size, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pool == MAP_FAILED)
		return NULL;
	void *private = mmap(NULL, private_size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (private == MAP_FAILED ||
	    madvise(private, private_size, MADV_DONTFORK) != 0 ||
	    pipe2(wake, O_CLOEXEC) != 0 ||
	    fcntl(wake[1], F_SETFL, O_NONBLOCK) != 0 ||
	    fcntl(wake[0], F_SETFL, O_NONBLOCK) != 0 ||
	    set_blocking(listen_fd) != 0)
		return NULL;
	/*
	 * Zeroed by the kernel, and touched page by page as slots are used:
	 * the listener writes a slot's state before its child exists, so no
	 * page of it is ever a child's alone (which would count as its own).
	 */
	pool->settings = *settings;
	pool->listen_fd = listen_fd;
	pool->wake_read_fd = wake[0];
	pool->wake_write_fd = wake[1];
	pool->slot_count = slots;
	pool->pids = private;
	pool->generations = (unsigned *)((pid_t *)private + slots);
	return pool;
}

/* ---- the listener's side */

int pool_wake_fd(const struct pool *pool)
{
	return pool->wake_read_fd;
}

/*
 * Drain first, then clear: a process that set the flag after the drain
 * has its byte still in the pipe, or wrote none because the flag was still
 * set, and then the listener's count, taken after this, includes it. The
 * other order loses a request whose byte the drain swallowed after the
 * flag was cleared, and no process would ever write again.
 */
void pool_wakes_clear(struct pool *pool)
{
	char bytes[64];

	while (read(pool->wake_read_fd, bytes, sizeof bytes) > 0)
		;
	atomic_store(&pool->wake_pending, false);
}

unsigned pool_live(const struct pool *pool)
{
	return pool->live;
}

static unsigned spares_now(const struct pool *pool)
{
	return atomic_load(&pool->waiting) + atomic_load(&pool->starting);
}

unsigned pool_spares_wanted(const struct pool *pool)
{
	unsigned spares = spares_now(pool);
	unsigned room = pool->slot_count - pool->live;

	if (spares >= pool->settings.min_spare)
		return 0;
	unsigned wanted = pool->settings.min_spare - spares;
	return wanted < room ? wanted : room;
}

bool pool_is_full(const struct pool *pool)
{
	return pool->live >= pool->slot_count && spares_now(pool) == 0;
}

int pool_claim_slot(struct pool *pool)
{
	unsigned slot;

	if (pool->live >= pool->slot_count)
		return -1;
	for (slot = 0; slot < pool->slots_used; slot++)
		if (pool->pids[slot] == 0)
			break;
	if (slot == pool->slots_used)
		pool->slots_used++;
	/* Not yet a pid: claimed, so no second claim takes it. */
	pool->pids[slot] = -1;
	pool->generations[slot] = pool->generation;
	atomic_store(&pool->states[slot], SLOT_STARTING);
	atomic_fetch_add(&pool->starting, 1);
	pool->live++;
	return (int)slot;
}

void pool_started(struct pool *pool, int slot, pid_t pid)
{
	pool->pids[slot] = pid;
}

/* The slot's process is gone (or never came): its state no longer counts. */
static void free_slot(struct pool *pool, unsigned slot)
{
	unsigned char old = atomic_exchange(&pool->states[slot], SLOT_FREE);

	if (old == SLOT_WAITING)
		atomic_fetch_sub(&pool->waiting, 1);
	else if (old == SLOT_STARTING)
		atomic_fetch_sub(&pool->starting, 1);
	pool->pids[slot] = 0;
	pool->live--;
}

void pool_release(struct pool *pool, int slot)
{
	free_slot(pool, (unsigned)slot);
}

bool pool_reaped(struct pool *pool, pid_t pid)
{
	for (unsigned slot = 0; slot < pool->slots_used; slot++) {
		if (pool->pids[slot] == pid) {
			free_slot(pool, slot);
			return true;
		}
	}
	return false;
}

/*
 * The stop signal goes to waiting processes in slot order from the top, so
 * the low slots, and their scoreboard pages, stay in use.
 */
unsigned pool_trim(struct pool *pool)
{
	unsigned waiting = atomic_load(&pool->waiting);
	unsigned asked = 0;

	if (waiting <= pool->settings.max_spare)
		return 0;
	for (unsigned slot = pool->slots_used;
	     slot-- > 0 && waiting - asked > pool->settings.max_spare;) {
		if (pool->pids[slot] > 0 &&
		    atomic_load(&pool->states[slot]) == SLOT_WAITING &&
		    kill(pool->pids[slot], POOL_STOP_SIGNAL) == 0)
			asked++;
	}
	return asked;
}

void pool_retire_all(struct pool *pool)
{
	for (unsigned slot = 0; slot < pool->slots_used; slot++)
		if (pool->pids[slot] > 0 &&
		    pool->generations[slot] == pool->generation)
			kill(pool->pids[slot], POOL_STOP_SIGNAL);
	pool->generation++;
}

/* ---- a connection process's side */

/*
 * The stop request, the one piece of process-wide state here: a signal
 * handler can reach nothing else. The handler puts the wake pipe's write
 * end in the listening socket's place, so accept() fails from then on:
 * whether the signal lands before the call, during it or after a
 * connection came, no connection is taken after it and none is dropped.
 *
 * Thread-local, in a single-threaded program, for memory's sake: glibc's
 * static start-up puts the TLS block in the page that holds errno, which
 * every connection process writes anyway, where a plain static would make
 * the binary's data page one more private page in each of them.
 */
static __thread struct {
	int listen_fd;
	int replacement_fd;
	volatile sig_atomic_t stop;
} stop_request = {-1, -1, 0};

static void on_stop_request(int signal_number)
{
	int saved_errno = errno;

	(void)signal_number;
	stop_request.stop = 1;
	dup2(stop_request.replacement_fd, stop_request.listen_fd);
	errno = saved_errno;
}

int pool_child_begin(struct pool_child *child, struct pool *pool, int slot,
		     pid_t listener_pid, int close_fd)
{
	struct sigaction action;
	sigset_t only_interrupt;

	child->pool = pool;
	child->slot = slot;
	child->served = 0;
	close(pool->wake_read_fd);
	if (close_fd >= 0)
		close(close_fd);
	stop_request.listen_fd = pool->listen_fd;
	stop_request.replacement_fd = pool->wake_write_fd;
	stop_request.stop = 0;
	/* No SA_RESTART: a blocked accept() returns EINTR at once. */
	memset(&action, 0, sizeof action);
	action.sa_handler = on_stop_request;
	sigfillset(&action.sa_mask);
	if (sigaction(POOL_STOP_SIGNAL, &action, NULL) != 0 ||
	    signal(SIGHUP, SIG_IGN) == SIG_ERR ||
	    prctl(PR_SET_PDEATHSIG, POOL_STOP_SIGNAL) != 0)
		return -1;
	/*
	 * SIGTERM ends a connection as it always did (systemd stopping the
	 * whole unit); a terminal's ^C is for the listener, so it stays
	 * blocked. The stop signal, blocked since the fork, is delivered
	 * here if the listener already sent it.
	 */
	sigemptyset(&only_interrupt);
	sigaddset(&only_interrupt, SIGINT);
	if (sigprocmask(SIG_SETMASK, &only_interrupt, NULL) != 0)
		return -1;
	/* The listener may have gone before prctl() took effect. */
	if (getppid() != listener_pid)
		on_stop_request(POOL_STOP_SIGNAL);
	return 0;
}

bool pool_child_takes_no_other(const struct pool_child *child)
{
	return stop_request.stop ||
	       child->served >= child->pool->settings.connections_per_process;
}

bool pool_child_is_last_connection(const struct pool_child *child)
{
	return stop_request.stop ||
	       child->served + 1 >=
		       child->pool->settings.connections_per_process;
}

static void set_state(struct pool_child *child, enum slot_state state)
{
	struct pool *pool = child->pool;
	unsigned char old = atomic_exchange(&pool->states[child->slot], state);

	if (old == SLOT_STARTING)
		atomic_fetch_sub(&pool->starting, 1);
	else if (old == SLOT_WAITING)
		atomic_fetch_sub(&pool->waiting, 1);
	if (state == SLOT_WAITING)
		atomic_fetch_add(&pool->waiting, 1);
}

/*
 * Just took a spare: when fewer than min_spare are left, one byte on the
 * wake pipe (only one until the listener has read it) starts more at once.
 */
static void ask_for_spares(struct pool_child *child)
{
	struct pool *pool = child->pool;

	if (spares_now(pool) >= pool->settings.min_spare ||
	    atomic_exchange(&pool->wake_pending, true))
		return;
	/* A full pipe already says it; nothing else can fail here. */
	ssize_t ignored = write(pool->wake_write_fd, "+", 1);
	(void)ignored;
}

static void pause_ms(long ms)
{
	struct timespec delay = {ms / 1000, (ms % 1000) * 1000000L};

	/* A stop signal cuts it short, which is what we want. */
	nanosleep(&delay, NULL);
}

/* Errors of accept() that say "not now", and one that says "not again". */
static bool is_transient_accept_error(int error)
{
	return error == EINTR || error == ECONNABORTED || error == EPROTO ||
	       error == EPERM;
}

static bool is_resource_accept_error(int error)
{
	return error == EMFILE || error == ENFILE || error == ENOBUFS ||
	       error == ENOMEM;
}

int pool_child_accept(struct pool_child *child, struct sockaddr_storage *peer)
{
	for (;;) {
		if (pool_child_takes_no_other(child))
			return POOL_NO_OTHER;
		set_state(child, SLOT_WAITING);
		socklen_t peer_len = sizeof *peer;
		int fd = accept4(child->pool->listen_fd,
				 (struct sockaddr *)peer, &peer_len,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0) {
			set_state(child, SLOT_BUSY);
			ask_for_spares(child);
			return fd;
		}
		int error = errno;
		if (is_transient_accept_error(error))
			continue;
		if (error == EAGAIN || error == EWOULDBLOCK) {
			/* Someone made the socket non-blocking: wait here. */
			struct pollfd wait = {child->pool->listen_fd, POLLIN, 0};
			poll(&wait, 1, -1);
			continue;
		}
		if (is_resource_accept_error(error)) {
			pause_ms(POOL_ACCEPT_BACKOFF_MS);
			errno = error;
			return POOL_ACCEPT_FAILED;
		}
		/* ENOTSOCK, EINVAL: the stop handler replaced the socket. */
		stop_request.stop = 1;
		return POOL_NO_OTHER;
	}
}

/*
 * The stack pages below the serving loop's: a connection that logged went
 * deeper than its relay does, and those pages would stay dirty, and the
 * process's own, while it holds its next connection idle (tests/300 counts
 * two pages). The bytes a connection carried are not left there either
 * way: the relay and the header reader clear their own buffers. The page
 * holding this frame, and a margin below for the call itself, is kept;
 * everything under it is dead once a connection is done.
 */
enum { STACK_MARGIN = 512, STACK_PAGES_DROPPED = 8 };

__attribute__((noinline)) static void drop_stack_below_here(void)
{
	char here;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t kept = ((uintptr_t)&here - STACK_MARGIN) & ~(page - 1);

	__asm__ volatile("" : : "r"(&here) : "memory");
	/* Advice: a failure leaves the pages where they were, no worse. */
	madvise((void *)(kept - STACK_PAGES_DROPPED * page),
		STACK_PAGES_DROPPED * page, MADV_DONTNEED);
}

void pool_child_served(struct pool_child *child, bool logged)
{
	child->served++;
	/*
	 * A connection that logged nothing reached no deeper than the next
	 * will: its pages are the ones that one dirties again, and leaving
	 * them saves a system call and a page-table walk per connection. The
	 * first connection also clears what starting the process left.
	 */
	if (logged || child->served == 1)
		drop_stack_below_here();
}

void pool_child_leave(struct pool_child *child)
{
	set_state(child, SLOT_LEAVING);
}
