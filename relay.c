/*
 * relay: the relay state machine (see relay.h).
 *
 * Holds one direction's state and the poll loop over both. Holds no
 * logging, no closing and no connection bookkeeping: connection.c turns the
 * result into its end reason and summary line.
 */
#define _GNU_SOURCE
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockets.h"
#include "stack_layout.h"

/*
 * One direction of the relay. Small messages go through a small buffer
 * with read()/send(): for them that is cheaper than splice(), and a
 * connection that never carries bulk never creates a pipe. Once a read
 * fills the buffer, the direction switches to splice() through a pipe, so
 * bulk bytes are never copied to user space. Both directions' buffers fit
 * in one page: an idle connection's memory is mostly its stack pages.
 *
 * We read only when the buffer or pipe is empty: a pipe counts its room in
 * slots, not bytes, so "not full" cannot be known in advance, and a splice
 * that fails for want of room would look like an empty socket.
 */
struct relay_direction {
	int from_fd;
	int to_fd;
	int pipe_fds[2]; /* -1 until the direction carries bulk */
	size_t buffer_start;
	size_t pending;     /* bytes read and not yet written */
	size_t skip;        /* bytes still to read and drop (relay_run's a_skip) */
	bool wants_pipe;    /* the last read filled the buffer */
	bool read_closed;   /* from_fd sent EOF */
	bool write_shut;    /* shutdown(to_fd, SHUT_WR) done */
	bool reset;         /* one side failed: reset both */
	bool reset_by_from; /* the failure was on from_fd's side */
	bool moved;         /* bytes came in or went out: not idle */
	uint64_t bytes;
	uint8_t buffer[1024];
};

enum { SPLICE_CHUNK = 65536 };

static void relay_direction_init(struct relay_direction *dir, int from_fd,
				 int to_fd, size_t skip)
{
	dir->from_fd = from_fd;
	dir->to_fd = to_fd;
	dir->pipe_fds[0] = dir->pipe_fds[1] = -1;
	dir->buffer_start = dir->pending = 0;
	dir->skip = skip;
	dir->wants_pipe = dir->read_closed = dir->write_shut = false;
	dir->reset = dir->reset_by_from = dir->moved = false;
	dir->bytes = 0;
}

/*
 * Closes the pipe and clears the buffer: a pool's connection process goes
 * on to other connections, and none of them may find this one's bytes.
 */
static void relay_direction_release(struct relay_direction *dir)
{
	if (dir->pipe_fds[0] >= 0) {
		close(dir->pipe_fds[0]);
		close(dir->pipe_fds[1]);
		dir->pipe_fds[0] = dir->pipe_fds[1] = -1;
	}
	explicit_bzero(dir->buffer, sizeof dir->buffer);
}

static bool uses_pipe(const struct relay_direction *dir)
{
	return dir->pipe_fds[0] >= 0;
}

/*
 * Returns bytes read, 0 at EOF, -1 with errno (EAGAIN: nothing there now).
 * Bytes to skip go through the buffer, never a pipe, and are dropped.
 */
static ssize_t relay_read(struct relay_direction *dir)
{
	ssize_t n;

	/* Without a pipe (EMFILE...), the buffer still does the job. */
	if (dir->wants_pipe && dir->skip == 0 && !uses_pipe(dir) &&
	    pipe2(dir->pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0)
		dir->pipe_fds[0] = dir->pipe_fds[1] = -1;
	dir->wants_pipe = false;
	do {
		if (uses_pipe(dir))
			n = splice(dir->from_fd, NULL, dir->pipe_fds[1], NULL,
				   SPLICE_CHUNK,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		else
			n = read(dir->from_fd, dir->buffer, sizeof dir->buffer);
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		size_t dropped = dir->skip < (size_t)n ? dir->skip : (size_t)n;
		dir->skip -= dropped;
		dir->pending = (size_t)n - dropped;
		dir->buffer_start = dropped;
		dir->wants_pipe = (size_t)n == sizeof dir->buffer;
	}
	return n;
}

static ssize_t relay_write(struct relay_direction *dir)
{
	ssize_t n;

	do {
		if (uses_pipe(dir))
			n = splice(dir->pipe_fds[0], NULL, dir->to_fd, NULL,
				   dir->pending,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		else
			n = send(dir->to_fd, dir->buffer + dir->buffer_start,
				 dir->pending, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		dir->pending -= (size_t)n;
		dir->buffer_start += (size_t)n;
		dir->bytes += (uint64_t)n;
	}
	return n;
}

/*
 * Move what can be moved now without blocking. readable/writable come from
 * poll(); after a read we write at once, since the other socket is almost
 * always ready, which saves a poll() round per message. other_done: the
 * other direction is over, so this one's end is the relay's, and its
 * shutdown() is left to the caller's close(), which sends the same FIN.
 */
static void relay_shovel(struct relay_direction *dir, bool readable,
			 bool writable, bool other_done)
{
	bool just_read = false;

	if (readable && !dir->read_closed && dir->pending == 0) {
		ssize_t n = relay_read(dir);
		if (n == 0) {
			dir->read_closed = true;
		} else if (n > 0) {
			just_read = dir->moved = true;
		} else if (errno != EAGAIN) {
			dir->reset = true;
			dir->reset_by_from = true;
			return;
		}
	}
	if (dir->pending > 0 && (writable || just_read)) {
		ssize_t n = relay_write(dir);
		if (n < 0 && errno != EAGAIN) {
			dir->reset = true; /* to_fd's side failed */
			return;
		}
		if (n > 0)
			dir->moved = true;
	}
	if (dir->read_closed && dir->pending == 0 && !dir->write_shut) {
		/* Half-close: the other direction keeps flowing. */
		if (!other_done && shutdown(dir->to_fd, SHUT_WR) != 0 &&
		    errno != ENOTCONN) {
			dir->reset = true;
			return;
		}
		dir->write_shut = true;
	}
}

static short relay_events_for(const struct relay_direction *reading,
			      const struct relay_direction *writing)
{
	short events = 0;

	if (!reading->read_closed && reading->pending == 0)
		events |= POLLIN;
	if (writing->pending > 0)
		events |= POLLOUT;
	return events;
}

/* A pending socket error (a RST) on fd, as poll's POLLERR reports it. */
static bool has_socket_error(int fd)
{
	int error = 0;
	socklen_t len = sizeof error;

	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0 ||
	       error != 0;
}

/*
 * The fd poll() watches for one side. A side we want nothing from (after
 * its FIN, or while the other side is not reading) stays in with no
 * events: poll() still reports POLLERR and POLLHUP, so a reset is seen at
 * once in every state. Only after a POLLHUP that came while nothing was
 * wanted (the side is shut both ways) does it stay out until something is
 * wanted again: poll() would report that POLLHUP at once, forever, and
 * the loop would spin while the other side drains slowly.
 */
static int polled_fd(int fd, short wanted, bool hung_up)
{
	return wanted == 0 && hung_up ? -1 : fd;
}

/* Milliseconds poll() may sleep: until the idle limit, or for ever. */
static int idle_wait_ms(int idle_timeout_ms, int64_t last_moved_ms)
{
	if (idle_timeout_ms <= 0)
		return -1;
	int64_t left = last_moved_ms + idle_timeout_ms - monotonic_ms();
	return left <= 0 ? 0 : (int)left;
}

/*
 * Relay until both directions are done: each side's EOF becomes a
 * shutdown(SHUT_WR) of the other side; a reset on either side resets both.
 * Bytes to skip are known to be in a's socket, so a is read at once,
 * before any poll(). Out of line: a phase of a connection (see
 * stack_layout.h).
 */
CONNECTION_PHASE void relay_run(int a_fd, int b_fd, int idle_timeout_ms,
				size_t a_skip, struct relay_result *result)
{
	struct relay_direction up, down; /* up: a to b */
	bool b_closed_first = false, a_hung_up = false, b_hung_up = false;
	int64_t last_moved_ms = monotonic_ms();

	relay_direction_init(&up, a_fd, b_fd, a_skip);
	relay_direction_init(&down, b_fd, a_fd, 0);
	result->end = RELAY_DONE;
	if (a_skip > 0)
		relay_shovel(&up, true, false, false);
	while (!(up.write_shut && down.write_shut)) {
		if (up.reset || down.reset)
			break;
		short a_wanted = relay_events_for(&up, &down);
		short b_wanted = relay_events_for(&down, &up);
		struct pollfd fds[2] = {
			{.fd = polled_fd(a_fd, a_wanted, a_hung_up),
			 .events = a_wanted},
			{.fd = polled_fd(b_fd, b_wanted, b_hung_up),
			 .events = b_wanted},
		};
		int ready = poll(fds, 2,
				 idle_wait_ms(idle_timeout_ms, last_moved_ms));
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			result->end = RELAY_ERROR;
			break;
		}
		if (ready == 0 && idle_wait_ms(idle_timeout_ms,
					       last_moved_ms) == 0) {
			result->end = RELAY_IDLE;
			break;
		}
		short a_events = fds[0].revents, b_events = fds[1].revents;
		if ((a_events & POLLERR) && has_socket_error(a_fd)) {
			result->end = RELAY_A_RESET;
			break;
		}
		if ((b_events & POLLERR) && has_socket_error(b_fd)) {
			result->end = RELAY_B_RESET;
			break;
		}
		a_hung_up |= a_wanted == 0 && (a_events & POLLHUP);
		b_hung_up |= b_wanted == 0 && (b_events & POLLHUP);
		bool was_down_open = !down.read_closed;
		relay_shovel(&up, a_events & (POLLIN | POLLHUP | POLLRDHUP),
			     b_events & POLLOUT, down.write_shut);
		relay_shovel(&down, b_events & (POLLIN | POLLHUP | POLLRDHUP),
			     a_events & POLLOUT, up.write_shut);
		if (up.reset || down.reset)
			break;
		if (up.moved || down.moved) {
			last_moved_ms = monotonic_ms();
			up.moved = down.moved = false;
		}
		if (was_down_open && down.read_closed && !up.read_closed)
			b_closed_first = true;
		if ((a_events | b_events) & POLLNVAL) {
			result->end = RELAY_ERROR;
			break;
		}
	}
	if (up.reset || down.reset) {
		bool a_failed = up.reset ? up.reset_by_from : !down.reset_by_from;
		result->end = a_failed ? RELAY_A_RESET : RELAY_B_RESET;
	}
	if (result->end == RELAY_DONE && b_closed_first)
		result->end = RELAY_B_CLOSED_FIRST;
	result->bytes_a_to_b = up.bytes;
	result->bytes_b_to_a = down.bytes;
	relay_direction_release(&up);
	relay_direction_release(&down);
}
