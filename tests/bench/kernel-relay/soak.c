/*
 * soak: drive many randomized connections through kernrelay_run() and check
 * every byte. Not a timed test: run it with ./soak.sh (which gives it a
 * private network namespace), or by hand:
 *
 *     soak CONNECTIONS PARALLEL SEED
 *
 * Each connection: client <-> [A kernrelay B] <-> backend, all on 127.0.0.1,
 * the relay in its own thread with its own maps, as in an mmproxy child.
 * Per connection, drawn from SEED and the connection's number:
 *  - a fake PROXY header of 0..300 bytes sent in the same write as the first
 *    data, and read exactly by the relay side before kernrelay_run() (so the
 *    first skb is often half read when the relay starts);
 *  - bytes each way, log-uniform from 1 byte to 8 MiB (sometimes none), both
 *    directions at once, written in chunks of random size;
 *  - stalls: either side may stop reading (up to 3 s), or writing, for a
 *    while;
 *  - the end: both sides half-close when done (either may finish first), or
 *    one side resets the connection part-way.
 * Every byte received is checked against the sender's stream; a normal end
 * must deliver everything, and the relay's result must say so; a reset end
 * must deliver a correct prefix. A sampler records the largest growth of
 * MemAvailable, Slab and TCP memory, and of any relay socket's receive
 * memory over its buffer size. Prints one RESULT line; exit 0 when clean.
 */
#define _GNU_SOURCE
#include "kernrelay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_PARALLEL = 64, CONNECTION_TIMEOUT_S = 120 };

/* ---- randomness and byte streams -------------------------------------- */

static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

struct rng {
	uint64_t state;
};

static uint64_t rng_next(struct rng *r)
{
	r->state += 0x9e3779b97f4a7c15ull;
	return mix(r->state);
}

static double rng_unit(struct rng *r)
{
	return (double)(rng_next(r) >> 11) / 9007199254740992.0;
}

static uint64_t rng_range(struct rng *r, uint64_t low, uint64_t high)
{
	return low + rng_next(r) % (high - low + 1);
}

/* The bytes of one direction: byte k is a function of (seed, k). */
static void stream_fill(uint64_t seed, uint64_t offset, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t k = offset + i;
		p[i] = (uint8_t)(mix(seed ^ (k >> 3)) >> (8 * (k & 7)));
	}
}

/* ---- one endpoint (client or backend) ---------------------------------- */

struct endpoint {
	int fd;
	const char *name;
	uint64_t send_seed, receive_seed;
	uint64_t send_total;    /* bytes to send */
	uint64_t receive_total; /* bytes the peer sends */
	size_t header_len;      /* client only: a prefix before the stream */
	size_t chunk_max;
	uint64_t read_stall_at, read_stall_ms;   /* ms 0: no stall */
	uint64_t write_stall_at, write_stall_ms;
	bool resets;             /* abort part-way */
	uint64_t reset_after_received;
	uint64_t reset_after_sent;
	/* results */
	uint64_t sent, received;
	bool saw_eof, saw_reset, mismatch, timed_out, did_reset;
	uint64_t mismatch_at;
};

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void abort_connection(int fd)
{
	struct linger linger = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
}

static void *endpoint_run(void *arg)
{
	struct endpoint *e = arg;
	static __thread uint8_t out[65536 + 512], in[65536], expect[65536];
	size_t out_start = 0, out_len = 0, out_header = 0;
	bool write_shut = false, header_queued = e->header_len == 0;
	int64_t deadline = now_ms() + CONNECTION_TIMEOUT_S * 1000;
	int64_t read_resume = 0, write_resume = 0;
	bool read_stalled = false, write_stalled = false;

	for (;;) {
		int64_t now = now_ms();
		if (now > deadline) {
			e->timed_out = true;
			break;
		}
		/* After the header: a reset inside it is not the relay's. */
		if (e->resets && header_queued && out_header == 0 &&
		    e->received >= e->reset_after_received &&
		    e->sent >= e->reset_after_sent) {
			abort_connection(e->fd);
			close(e->fd);
			e->fd = -1;
			e->did_reset = true;
			break;
		}
		if ((e->saw_eof && write_shut) || e->saw_reset)
			break;
		/* Stalls start once their offset is reached. */
		if (e->read_stall_ms && !read_stalled &&
		    e->received >= e->read_stall_at) {
			read_stalled = true;
			read_resume = now + (int64_t)e->read_stall_ms;
		}
		if (e->write_stall_ms && !write_stalled &&
		    e->sent >= e->write_stall_at) {
			write_stalled = true;
			write_resume = now + (int64_t)e->write_stall_ms;
		}
		bool reading = !e->saw_eof && now >= read_resume;
		bool writing = !write_shut && now >= write_resume;
		if (writing && out_len == 0 &&
		    (e->sent < e->send_total || !header_queued)) {
			size_t n = 0;
			if (!header_queued) {
				memset(out, 'H', e->header_len);
				out_header = e->header_len;
				header_queued = true;
			}
			if (e->sent < e->send_total) {
				n = e->chunk_max;
				if (n > e->send_total - e->sent)
					n = (size_t)(e->send_total - e->sent);
				n = 1 + (size_t)(mix(e->sent ^ e->send_seed) % n);
				stream_fill(e->send_seed, e->sent,
					    out + out_header, n);
			}
			out_start = 0;
			out_len = out_header + n;
		}
		if (writing && out_len == 0 && e->sent == e->send_total &&
		    !e->resets) {
			shutdown(e->fd, SHUT_WR);
			write_shut = true;
			continue;
		}
		struct pollfd p = {.fd = e->fd, .events = 0};
		if (reading)
			p.events |= POLLIN;
		if (writing && out_len > 0)
			p.events |= POLLOUT;
		if (p.events == 0)
			p.fd = -1; /* stalled: just wait */
		if (poll(&p, 1, 20) < 0 && errno != EINTR)
			break;
		if (reading && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t n = recv(e->fd, in, sizeof in, MSG_DONTWAIT);
			if (n > 0) {
				stream_fill(e->receive_seed, e->received,
					    expect, (size_t)n);
				if (memcmp(in, expect, (size_t)n) != 0 &&
				    !e->mismatch) {
					size_t k = 0;
					while (in[k] == expect[k])
						k++;
					e->mismatch = true;
					e->mismatch_at = e->received + k;
				}
				e->received += (uint64_t)n;
			} else if (n == 0) {
				e->saw_eof = true;
			} else if (errno != EAGAIN) {
				e->saw_reset = true;
			}
		}
		if ((p.revents & POLLOUT) && out_len > 0) {
			ssize_t n = send(e->fd, out + out_start, out_len,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				/* The header is not part of the stream. */
				size_t header = out_header < (size_t)n
							? out_header
							: (size_t)n;
				out_header -= header;
				e->sent += (uint64_t)n - header;
				out_start += (size_t)n;
				out_len -= (size_t)n;
			} else if (n < 0 && errno != EAGAIN) {
				e->saw_reset = true;
			}
		}
	}
	return NULL;
}

/* ---- one connection ---------------------------------------------------- */

struct relay_job {
	int client_side_fd, backend_side_fd;
	int worker;
	size_t header_len;
	struct relay_result result;
	struct kernrelay_counts kernel;
	enum kernrelay_outcome outcome;
	const char *reason;
	bool header_failed;
};

static atomic_int relay_fds[MAX_PARALLEL][2];

/* As mmproxy does: a reset on one side becomes a reset of both. */
static void close_relay_sockets(struct relay_job *job)
{
	bool reset = job->outcome == KERNRELAY_RELAYED &&
		     (job->result.end == RELAY_A_RESET ||
		      job->result.end == RELAY_B_RESET ||
		      job->result.end == RELAY_ERROR);

	atomic_store(&relay_fds[job->worker][0], -1);
	atomic_store(&relay_fds[job->worker][1], -1);
	if (reset) {
		abort_connection(job->client_side_fd);
		abort_connection(job->backend_side_fd);
	}
	close(job->client_side_fd);
	close(job->backend_side_fd);
}

static void *relay_thread(void *arg)
{
	struct relay_job *job = arg;
	uint8_t header[512];

	/* Like mmproxy: take exactly the header's bytes, then relay. */
	if (job->header_len > 0 &&
	    recv(job->client_side_fd, header, job->header_len, MSG_WAITALL) !=
		    (ssize_t)job->header_len) {
		job->header_failed = true;
		close_relay_sockets(job);
		return NULL;
	}
	fcntl(job->client_side_fd, F_SETFL, O_NONBLOCK);
	fcntl(job->backend_side_fd, F_SETFL, O_NONBLOCK);
	job->outcome = kernrelay_run(job->client_side_fd, job->backend_side_fd,
				     &job->result, &job->kernel, &job->reason);
	close_relay_sockets(job);
	return NULL;
}

struct totals {
	atomic_ulong connections, failures, fallbacks, resets_planned;
	atomic_ullong bytes, kernel_bytes;
	atomic_ulong ends[5];
	atomic_ulong relay_socket_slots_in_use;
};

static struct totals totals;
static atomic_ulong next_connection;
static unsigned long connection_count;
static uint64_t base_seed;

static int listen_loopback(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	socklen_t len = sizeof *addr;

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	*addr = (struct sockaddr_in){.sin_family = AF_INET,
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0 ||
	    listen(fd, 16) != 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) != 0) {
		perror("soak: listen");
		exit(2);
	}
	return fd;
}

static int connect_loopback(const struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
		perror("soak: connect");
		exit(2);
	}
	return fd;
}

static uint64_t draw_size(struct rng *r)
{
	if (rng_unit(r) < 0.05)
		return 0;
	return (uint64_t)exp(rng_unit(r) * log(8.0 * 1048576));
}

static void draw_stalls(struct rng *r, uint64_t receive_total,
			uint64_t send_total, struct endpoint *e)
{
	if (rng_unit(r) < 0.3 && receive_total > 0) {
		e->read_stall_at = rng_range(r, 0, receive_total - 1);
		/* Some long: memory must stay bounded however long. */
		e->read_stall_ms = rng_unit(r) < 0.2 ? rng_range(r, 1000, 3000)
						     : rng_range(r, 20, 400);
	}
	if (rng_unit(r) < 0.2 && send_total > 0) {
		e->write_stall_at = rng_range(r, 0, send_total - 1);
		e->write_stall_ms = rng_range(r, 10, 200);
	}
}

static const char *end_names[] = {"done", "backend-closed", "client-reset",
				  "backend-reset", "error"};

static bool check_connection(unsigned long number, const struct endpoint *c,
			     const struct endpoint *b,
			     const struct relay_job *job, bool reset_planned)
{
	bool ok = true;

	if (job->header_failed || job->outcome != KERNRELAY_RELAYED) {
		printf("conn %lu: relay did not run: %s\n", number,
		       job->header_failed ? "header read failed" : job->reason);
		return false;
	}
	if (c->mismatch || b->mismatch) {
		printf("conn %lu: MISMATCH %s at byte %llu\n", number,
		       c->mismatch ? "downstream (client saw)"
				   : "upstream (backend saw)",
		       (unsigned long long)(c->mismatch ? c->mismatch_at
							: b->mismatch_at));
		ok = false;
	}
	if (c->timed_out || b->timed_out) {
		printf("conn %lu: HANG (client got %llu/%llu, backend got "
		       "%llu/%llu)\n",
		       number, (unsigned long long)c->received,
		       (unsigned long long)c->receive_total,
		       (unsigned long long)b->received,
		       (unsigned long long)b->receive_total);
		ok = false;
	}
	if (!reset_planned) {
		enum relay_end end = job->result.end;
		if (c->received != c->receive_total ||
		    b->received != b->receive_total || !c->saw_eof ||
		    !b->saw_eof) {
			printf("conn %lu: SHORT client %llu/%llu eof %d, "
			       "backend %llu/%llu eof %d\n",
			       number, (unsigned long long)c->received,
			       (unsigned long long)c->receive_total, c->saw_eof,
			       (unsigned long long)b->received,
			       (unsigned long long)b->receive_total, b->saw_eof);
			ok = false;
		}
		if (end != RELAY_DONE && end != RELAY_B_CLOSED_FIRST) {
			printf("conn %lu: end %s without a reset\n", number,
			       end_names[end]);
			ok = false;
		}
		if (job->result.bytes_a_to_b != b->receive_total ||
		    job->result.bytes_b_to_a != c->receive_total) {
			printf("conn %lu: result counts up %llu down %llu, "
			       "expected %llu %llu\n",
			       number,
			       (unsigned long long)job->result.bytes_a_to_b,
			       (unsigned long long)job->result.bytes_b_to_a,
			       (unsigned long long)b->receive_total,
			       (unsigned long long)c->receive_total);
			ok = false;
		}
	} else if (job->result.end == RELAY_ERROR) {
		printf("conn %lu: end error after a reset\n", number);
		ok = false;
	}
	return ok;
}

static void run_connection(unsigned long number, int worker)
{
	struct rng r = {.state = base_seed * 1000003u + number};
	struct sockaddr_in relay_addr, backend_addr;
	int relay_listen = listen_loopback(&relay_addr);
	int backend_listen = listen_loopback(&backend_addr);
	int client_fd = connect_loopback(&relay_addr);
	int a_fd = accept(relay_listen, NULL, NULL);
	int b_fd = connect_loopback(&backend_addr);
	int backend_fd = accept(backend_listen, NULL, NULL);
	struct endpoint c = {.fd = client_fd, .name = "client"};
	struct endpoint b = {.fd = backend_fd, .name = "backend"};
	struct relay_job job = {.client_side_fd = a_fd,
				.backend_side_fd = b_fd, .worker = worker};
	pthread_t threads[3];
	bool reset_planned;

	close(relay_listen);
	close(backend_listen);
	c.send_seed = mix(r.state ^ 1);
	b.send_seed = mix(r.state ^ 2);
	c.receive_seed = b.send_seed;
	b.receive_seed = c.send_seed;
	c.send_total = b.receive_total = draw_size(&r);
	b.send_total = c.receive_total = draw_size(&r);
	c.header_len = job.header_len = (size_t)rng_range(&r, 0, 300);
	c.chunk_max = (size_t)rng_range(&r, 1, 65536);
	b.chunk_max = (size_t)rng_range(&r, 1, 65536);
	draw_stalls(&r, c.receive_total, c.send_total, &c);
	draw_stalls(&r, b.receive_total, b.send_total, &b);
	reset_planned = rng_unit(&r) < 0.15;
	/* SOAK_FIXED="UP_MIB DOWN_MIB CLIENT_STALL_MS BACKEND_STALL_MS": the
	 * README's reverse-stall case instead of a random one. */
	if (getenv("SOAK_FIXED") != NULL) {
		double up, down, client_stall, backend_stall;
		if (sscanf(getenv("SOAK_FIXED"), "%lf %lf %lf %lf", &up, &down,
			   &client_stall, &backend_stall) == 4) {
			c.send_total = b.receive_total = (uint64_t)(up * 1048576);
			b.send_total = c.receive_total =
				(uint64_t)(down * 1048576);
			c.read_stall_at = 512 * 1024;
			c.read_stall_ms = (uint64_t)client_stall;
			b.read_stall_at = 2 * 1048576;
			b.read_stall_ms = (uint64_t)backend_stall;
			c.write_stall_ms = b.write_stall_ms = 0;
			c.chunk_max = b.chunk_max = 65536;
			reset_planned = false;
		}
	}
	if (reset_planned) {
		struct endpoint *e = rng_unit(&r) < 0.5 ? &c : &b;
		e->resets = true;
		e->reset_after_received =
			rng_range(&r, 0, e->receive_total);
		e->reset_after_sent = rng_range(&r, 0, e->send_total);
		atomic_fetch_add(&totals.resets_planned, 1);
	}
	atomic_store(&relay_fds[worker][0], a_fd);
	atomic_store(&relay_fds[worker][1], b_fd);
	pthread_create(&threads[0], NULL, relay_thread, &job);
	pthread_create(&threads[1], NULL, endpoint_run, &c);
	pthread_create(&threads[2], NULL, endpoint_run, &b);
	pthread_join(threads[1], NULL);
	pthread_join(threads[2], NULL);
	/* The endpoints are done: close them so a relay waiting on them ends. */
	if (c.fd >= 0)
		close(c.fd);
	if (b.fd >= 0)
		close(b.fd);
	pthread_join(threads[0], NULL);

	if (!check_connection(number, &c, &b, &job, reset_planned))
		atomic_fetch_add(&totals.failures, 1);
	if (job.outcome == KERNRELAY_FALLBACK)
		atomic_fetch_add(&totals.fallbacks, 1);
	else if (!job.header_failed)
		atomic_fetch_add(&totals.ends[job.result.end], 1);
	atomic_fetch_add(&totals.bytes, c.received + b.received);
	atomic_fetch_add(&totals.kernel_bytes,
			 job.kernel.a_to_b + job.kernel.b_to_a);
	atomic_fetch_add(&totals.connections, 1);
}

static void *worker_run(void *arg)
{
	int worker = (int)(intptr_t)arg;

	for (;;) {
		unsigned long number = atomic_fetch_add(&next_connection, 1);
		if (number >= connection_count)
			return NULL;
		run_connection(number, worker);
	}
}

/* ---- memory sampling --------------------------------------------------- */

static long meminfo_kib(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long value = -1;
	size_t key_len = strlen(key);

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, key_len) == 0) {
			value = atol(line + key_len);
			break;
		}
	fclose(f);
	return value;
}

static long tcp_mem_pages(void)
{
	FILE *f = fopen("/proc/net/sockstat", "r");
	char line[256];
	long value = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "TCP: inuse %*d orphan %*d tw %*d alloc %*d "
				 "mem %ld",
			   &value) == 1)
			break;
	fclose(f);
	return value;
}

struct memory_growth {
	long mem_available_kib, slab_kib, tcp_pages;
	long socket_over_rcvbuf; /* largest rmem_alloc - rcvbuf, bytes */
	long socket_rmem;        /* largest rmem_alloc, bytes */
};

static atomic_bool sampling = true;
static struct memory_growth growth;
static unsigned parallel;

static void *sampler_run(void *arg)
{
	long available0 = meminfo_kib("MemAvailable:");
	long slab0 = meminfo_kib("Slab:");
	long tcp0 = tcp_mem_pages();

	(void)arg;
	growth.socket_over_rcvbuf = LONG_MIN;
	while (atomic_load(&sampling)) {
		long d = available0 - meminfo_kib("MemAvailable:");
		long s = meminfo_kib("Slab:") - slab0;
		long t = tcp_mem_pages() - tcp0;
		if (d > growth.mem_available_kib)
			growth.mem_available_kib = d;
		if (s > growth.slab_kib)
			growth.slab_kib = s;
		if (t > growth.tcp_pages)
			growth.tcp_pages = t;
		for (unsigned w = 0; w < parallel; w++)
			for (int i = 0; i < 2; i++) {
				int fd = atomic_load(&relay_fds[w][i]);
				uint32_t m[SK_MEMINFO_VARS];
				socklen_t len = sizeof m;
				if (fd < 0 || getsockopt(fd, SOL_SOCKET,
							 SO_MEMINFO, m,
							 &len) != 0)
					continue;
				long over = (long)m[SK_MEMINFO_RMEM_ALLOC] -
					    (long)m[SK_MEMINFO_RCVBUF];
				if (over > growth.socket_over_rcvbuf)
					growth.socket_over_rcvbuf = over;
				if (over > 1048576 && getenv("SOAK_VERBOSE")) {
					int inq = -1;
					ioctl(fd, FIONREAD, &inq);
					printf("over: worker %u %s rmem %u rcvbuf %u "
					       "wq %u sndbuf %u backlog %u "
					       "FIONREAD %d\n",
					       w, i ? "backend side" : "client side",
					       m[SK_MEMINFO_RMEM_ALLOC],
					       m[SK_MEMINFO_RCVBUF],
					       m[SK_MEMINFO_WMEM_QUEUED],
					       m[SK_MEMINFO_SNDBUF],
					       m[SK_MEMINFO_BACKLOG], inq);
				}
				if ((long)m[SK_MEMINFO_RMEM_ALLOC] >
				    growth.socket_rmem)
					growth.socket_rmem =
						(long)m[SK_MEMINFO_RMEM_ALLOC];
			}
		usleep(20000);
	}
	return NULL;
}

static long sysctl_third(const char *path)
{
	FILE *f = fopen(path, "r");
	long a = 0, b = 0, c = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld %ld", &a, &b, &c) != 3)
		c = 0;
	fclose(f);
	return c;
}

int main(int argc, char **argv)
{
	const char *reason = NULL;
	pthread_t workers[MAX_PARALLEL], sampler;
	int64_t started = now_ms();

	if (argc != 4) {
		fprintf(stderr, "usage: soak CONNECTIONS PARALLEL SEED\n");
		return 2;
	}
	connection_count = strtoul(argv[1], NULL, 10);
	parallel = (unsigned)strtoul(argv[2], NULL, 10);
	base_seed = strtoull(argv[3], NULL, 10);
	if (parallel < 1 || parallel > MAX_PARALLEL) {
		fprintf(stderr, "soak: PARALLEL 1..%d\n", MAX_PARALLEL);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!kernrelay_probe(&reason)) {
		fprintf(stderr, "soak: kernel relay unavailable: %s\n", reason);
		return 2;
	}
	for (int w = 0; w < MAX_PARALLEL; w++)
		relay_fds[w][0] = relay_fds[w][1] = -1;
	pthread_create(&sampler, NULL, sampler_run, NULL);
	for (unsigned w = 0; w < parallel; w++)
		pthread_create(&workers[w], NULL, worker_run,
			       (void *)(intptr_t)w);
	for (unsigned w = 0; w < parallel; w++)
		pthread_join(workers[w], NULL);
	atomic_store(&sampling, false);
	pthread_join(sampler, NULL);

	/*
	 * The bounds. Globally: every socket of every live connection
	 * (client, A, B, backend) at its largest buffers, tcp_rmem[2] +
	 * tcp_wmem[2] each; point 4 of the README broke that with one
	 * connection. Per relay socket: no more receive memory than an
	 * ordinary TCP socket may ever hold, tcp_rmem[2]. (A relay socket
	 * may go over its current rcvbuf: see the README.)
	 */
	long rmem_max = sysctl_third("/proc/sys/net/ipv4/tcp_rmem");
	long per_socket = rmem_max + sysctl_third("/proc/sys/net/ipv4/tcp_wmem");
	long bound_pages = (long)parallel * 4 * per_socket / 4096;
	bool bound_held = growth.tcp_pages <= bound_pages &&
			  growth.socket_rmem <= rmem_max;
	unsigned long failures = atomic_load(&totals.failures);
	printf("RESULT seed=%llu connections=%lu parallel=%u bytes=%llu "
	       "kernel_bytes=%llu resets_planned=%lu fallbacks=%lu "
	       "failures=%lu ends: done=%lu backend-closed=%lu "
	       "client-reset=%lu backend-reset=%lu error=%lu; "
	       "largest growth: MemAvailable -%ld KiB, Slab +%ld KiB, "
	       "TCP mem +%ld pages (bound %ld pages), relay socket rmem max "
	       "%ld bytes (bound %ld), at most %ld bytes over its rcvbuf: "
	       "bounds %s; %.1f s\n",
	       (unsigned long long)base_seed, atomic_load(&totals.connections),
	       parallel, (unsigned long long)atomic_load(&totals.bytes),
	       (unsigned long long)atomic_load(&totals.kernel_bytes),
	       atomic_load(&totals.resets_planned),
	       atomic_load(&totals.fallbacks), failures,
	       atomic_load(&totals.ends[0]), atomic_load(&totals.ends[1]),
	       atomic_load(&totals.ends[2]), atomic_load(&totals.ends[3]),
	       atomic_load(&totals.ends[4]), growth.mem_available_kib,
	       growth.slab_kib, growth.tcp_pages, bound_pages,
	       growth.socket_rmem, rmem_max, growth.socket_over_rcvbuf,
	       bound_held ? "held" : "BROKEN",
	       (double)(now_ms() - started) / 1000.0);
	return failures == 0 && bound_held ? 0 : 1;
}
