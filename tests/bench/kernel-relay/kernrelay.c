/*
 * kernrelay: the kernel-side relay. It holds the verdict program (as
 * instructions), its maps, and the per-connection supervisor that gives the
 * kernel credit and copies in user space what the kernel passed back. It
 * does not accept, connect, log, or choose between relays: the caller does.
 *
 * How bytes move. Both sockets sit in a two-slot sockmap with an SK_SKB
 * verdict program. For each skb a socket receives, the program either
 * redirects it to the other socket's send side (the kernel path) or passes
 * it to the socket's own receive side, where this process reads it and
 * writes it on (the user path). One direction never uses both paths at
 * once in a way that could reorder bytes:
 *
 *  - The program redirects only while it has credit and while every byte
 *    it ever passed has been read by us (passed == consumed). So a byte
 *    redirected after a pass can never overtake the passed byte.
 *  - We write passed bytes only after every byte redirected before them is
 *    in the target's send queue (the target's write_seq has moved by what
 *    we wrote plus what the program redirected). So a passed byte can never
 *    overtake a redirected one.
 *  - Each counter has one writer: we own {granted, consumed}, the program
 *    owns {used, passed, spent}. They live in an mmap-ed array map, so a
 *    grant is two stores and no element is ever replaced under the program
 *    (a hash-map update would swap the element and lose the program's write).
 *
 * Memory. A byte passed on a socket whose psock queue holds redirected skbs
 * (bytes on their way out of that socket) queues behind them, uncharged,
 * and the socket's window stays open: its peer can send without bound
 * (README, point 4). Two rules keep that from happening: credit is at most
 * what the target's send buffer can take at once, so redirected skbs do not
 * wait; and the program does not redirect to a socket whose own direction is
 * passing (passed != consumed there), so while a socket passes, what goes
 * out through it is written by us with send(), not queued in its psock.
 *
 * A socket joins the sockmap only right after a recv() on it said EAGAIN.
 * The verdict is fed by tcp_read_skb() (net/ipv4/tcp.c), which hands the
 * program whole skbs from the receive queue and ignores copied_seq: an skb
 * that recv() had partly read (the PROXY header and the first bytes after it
 * often share one) would be relayed again from its start. After EAGAIN the
 * queue is empty, and what arrives later comes in new skbs.
 *
 * When credit runs out the program passes and writes a record to a ring
 * buffer, which is what wakes us; an idle connection otherwise never wakes
 * this process. EOF and resets wake us through poll() on the sockets.
 */
#define _GNU_SOURCE
#include "kernrelay.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* glibc's struct tcp_info lacks tcpi_bytes_acked */
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* tcpi_state of an established socket (include/net/tcp_states.h). */
enum { TCP_STATE_ESTABLISHED = 1 };

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* ---- bpf(2) ------------------------------------------------------------ */

static long sys_bpf(int command, union bpf_attr *attr)
{
	long ret;

	do
		ret = syscall(__NR_bpf, command, attr, sizeof *attr);
	while (ret < 0 && errno == EINTR);
	return ret;
}

static int map_create(enum bpf_map_type type, uint32_t key_size,
		      uint32_t value_size, uint32_t max_entries, uint32_t flags)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof attr);
	attr.map_type = type;
	attr.key_size = key_size;
	attr.value_size = value_size;
	attr.max_entries = max_entries;
	attr.map_flags = flags;
	return (int)sys_bpf(BPF_MAP_CREATE, &attr);
}

static int sockmap_insert(int map_fd, uint32_t slot, int socket_fd)
{
	union bpf_attr attr;
	uint32_t value = (uint32_t)socket_fd;

	memset(&attr, 0, sizeof attr);
	attr.map_fd = (uint32_t)map_fd;
	attr.key = (uintptr_t)&slot;
	attr.value = (uintptr_t)&value;
	attr.flags = BPF_NOEXIST;
	return (int)sys_bpf(BPF_MAP_UPDATE_ELEM, &attr);
}

/* ---- the verdict program ----------------------------------------------- */

/*
 * What one direction shares with the program, in the array map's only
 * element: slot 0 is the client's socket (client to backend), slot 1 the
 * backend's. Offsets are spelled out because the program uses them.
 */
struct shared_direction {
	uint64_t cookie;   /* ours, set before the socket joins: its source */
	uint64_t granted;  /* ours: credit, in the program's spent units */
	uint64_t consumed; /* ours: passed bytes we read and wrote on */
	uint64_t used;     /* the program's: bytes redirected */
	uint64_t passed;   /* the program's: bytes passed to us */
	uint64_t spent;    /* the program's: credit spent */
	uint64_t unused[2];
};

enum {
	SHARED_COOKIE = offsetof(struct shared_direction, cookie),
	SHARED_GRANTED = offsetof(struct shared_direction, granted),
	SHARED_CONSUMED = offsetof(struct shared_direction, consumed),
	SHARED_USED = offsetof(struct shared_direction, used),
	SHARED_PASSED = offsetof(struct shared_direction, passed),
	SHARED_SPENT = offsetof(struct shared_direction, spent),
	SHARED_SIZE = sizeof(struct shared_direction),
};

/*
 * Credit is charged per skb at its length plus this, so that many tiny skbs
 * cannot fill the target's send buffer by truesize while spending little.
 */
enum { SKB_OVERHEAD = 1024 };

/* The most credit one grant gives, whatever the send buffer's room. */
enum { CREDIT_MAX = 256 * 1024 };

/* The uapi header has the opcodes only; these build instructions. */
static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src,
			    int16_t off, int32_t imm)
{
	struct bpf_insn i = {.code = code, .dst_reg = dst & 0xf,
			     .src_reg = src & 0xf, .off = off, .imm = imm};
	return i;
}

#define MOV_REG(D, S)    insn(BPF_ALU64 | BPF_MOV | BPF_X, D, S, 0, 0)
#define MOV_IMM(D, IMM)  insn(BPF_ALU64 | BPF_MOV | BPF_K, D, 0, 0, IMM)
#define ADD_REG(D, S)    insn(BPF_ALU64 | BPF_ADD | BPF_X, D, S, 0, 0)
#define ADD_IMM(D, IMM)  insn(BPF_ALU64 | BPF_ADD | BPF_K, D, 0, 0, IMM)
#define LOAD32(D, S, O)  insn(BPF_LDX | BPF_MEM | BPF_W, D, S, O, 0)
#define LOAD64(D, S, O)  insn(BPF_LDX | BPF_MEM | BPF_DW, D, S, O, 0)
#define STORE64(D, S, O) insn(BPF_STX | BPF_MEM | BPF_DW, D, S, O, 0)
#define STORE32_IMM(D, O, IMM) insn(BPF_ST | BPF_MEM | BPF_W, D, 0, O, IMM)
#define CALL(F)          insn(BPF_JMP | BPF_CALL, 0, 0, 0, F)
#define EXIT()           insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
/* Jumps are built with offset 0 and patched once the target is known. */
#define JEQ_IMM(D, IMM)  insn(BPF_JMP | BPF_JEQ | BPF_K, D, 0, 0, IMM)
#define JNE_IMM(D, IMM)  insn(BPF_JMP | BPF_JNE | BPF_K, D, 0, 0, IMM)
#define JEQ_REG(D, S)    insn(BPF_JMP | BPF_JEQ | BPF_X, D, S, 0, 0)
#define JNE_REG(D, S)    insn(BPF_JMP | BPF_JNE | BPF_X, D, S, 0, 0)
#define JGT_REG(D, S)    insn(BPF_JMP | BPF_JGT | BPF_X, D, S, 0, 0)

enum { R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 };

enum { PROGRAM_MAX = 96 };

struct program {
	struct bpf_insn insns[PROGRAM_MAX];
	int count;
};

static int emit(struct program *prog, struct bpf_insn i)
{
	/* An overflow is a bug here; the verifier rejects the exit-less rest. */
	if (prog->count < PROGRAM_MAX)
		prog->insns[prog->count] = i;
	return prog->count < PROGRAM_MAX ? prog->count++ : PROGRAM_MAX - 1;
}

/* A map's fd as a 64-bit immediate: two instruction slots. */
static void emit_load_map(struct program *prog, int reg, int map_fd)
{
	emit(prog, insn(BPF_LD | BPF_DW | BPF_IMM, (uint8_t)reg,
			BPF_PSEUDO_MAP_FD, 0, map_fd));
	emit(prog, insn(0, 0, 0, 0, 0));
}

static void patch_jump(struct program *prog, int at, int target)
{
	prog->insns[at].off = (int16_t)(target - at - 1);
}

/*
 * The verdict, per skb:
 *   len == 0 (the bare FIN tcp_read_skb hands over): drop, nothing is lost;
 *   not one of our two sockets: pass;
 *   passed != consumed, or not enough credit, or the target socket's own
 *   direction is passing (passed != consumed there): pass, count it, ring
 *   the bell;
 *   else redirect to the other slot's socket, and count used and spent.
 * r6 skb, r7 len, r8 this direction's shared counters, r9 the target slot,
 * fp-24 the array's value (the target's own direction is at slot r9).
 */
static void build_program(struct program *prog, int shared_fd, int sockmap_fd,
			  int ringbuf_fd)
{
	int to_drop, to_unknown[2], to_found, to_pass[4], to_other;

	prog->count = 0;
	emit(prog, MOV_REG(R6, R1));
	emit(prog, LOAD32(R7, R6, offsetof(struct __sk_buff, len)));
	to_drop = emit(prog, JEQ_IMM(R7, 0));
	emit(prog, MOV_REG(R1, R6));
	emit(prog, CALL(BPF_FUNC_get_socket_cookie));
	emit(prog, STORE64(R10, R0, -16));
	emit(prog, STORE32_IMM(R10, -4, 0));
	emit_load_map(prog, R1, shared_fd);
	emit(prog, MOV_REG(R2, R10));
	emit(prog, ADD_IMM(R2, -4));
	emit(prog, CALL(BPF_FUNC_map_lookup_elem));
	to_unknown[0] = emit(prog, JEQ_IMM(R0, 0));
	emit(prog, STORE64(R10, R0, -24));
	emit(prog, MOV_REG(R8, R0));
	emit(prog, MOV_IMM(R9, 1));
	emit(prog, LOAD64(R1, R10, -16));
	emit(prog, LOAD64(R2, R8, SHARED_COOKIE));
	to_found = emit(prog, JEQ_REG(R1, R2));
	emit(prog, ADD_IMM(R8, SHARED_SIZE));
	emit(prog, MOV_IMM(R9, 0));
	emit(prog, LOAD64(R2, R8, SHARED_COOKIE));
	to_unknown[1] = emit(prog, JNE_REG(R1, R2));
	patch_jump(prog, to_found, prog->count);
	emit(prog, LOAD64(R1, R8, SHARED_PASSED));
	emit(prog, LOAD64(R2, R8, SHARED_CONSUMED));
	to_pass[0] = emit(prog, JNE_REG(R1, R2));
	emit(prog, LOAD64(R1, R8, SHARED_SPENT));
	emit(prog, ADD_REG(R1, R7));
	emit(prog, ADD_IMM(R1, SKB_OVERHEAD));
	emit(prog, LOAD64(R2, R8, SHARED_GRANTED));
	to_pass[1] = emit(prog, JGT_REG(R1, R2));
	/* Is the target passing to us? Then its own bytes must not wait. */
	emit(prog, LOAD64(R1, R10, -24));
	to_other = emit(prog, JEQ_IMM(R9, 0));
	emit(prog, ADD_IMM(R1, SHARED_SIZE));
	patch_jump(prog, to_other, prog->count);
	emit(prog, LOAD64(R2, R1, SHARED_PASSED));
	emit(prog, LOAD64(R3, R1, SHARED_CONSUMED));
	to_pass[2] = emit(prog, JNE_REG(R2, R3));
	emit(prog, MOV_REG(R1, R6));
	emit_load_map(prog, R2, sockmap_fd);
	emit(prog, MOV_REG(R3, R9));
	emit(prog, MOV_IMM(R4, 0));
	emit(prog, CALL(BPF_FUNC_sk_redirect_map));
	to_pass[3] = emit(prog, JNE_IMM(R0, SK_PASS));
	/* Counted before the kernel queues the skb: a drain never ends early. */
	emit(prog, LOAD64(R1, R8, SHARED_SPENT));
	emit(prog, ADD_REG(R1, R7));
	emit(prog, ADD_IMM(R1, SKB_OVERHEAD));
	emit(prog, STORE64(R8, R1, SHARED_SPENT));
	emit(prog, LOAD64(R1, R8, SHARED_USED));
	emit(prog, ADD_REG(R1, R7));
	emit(prog, STORE64(R8, R1, SHARED_USED));
	emit(prog, MOV_IMM(R0, SK_PASS));
	emit(prog, EXIT());
	for (int i = 0; i < 4; i++)
		patch_jump(prog, to_pass[i], prog->count);
	emit(prog, LOAD64(R1, R8, SHARED_PASSED));
	emit(prog, ADD_REG(R1, R7));
	emit(prog, STORE64(R8, R1, SHARED_PASSED));
	emit_load_map(prog, R1, ringbuf_fd);
	emit(prog, MOV_REG(R2, R8));
	emit(prog, MOV_IMM(R3, 8));
	emit(prog, MOV_IMM(R4, BPF_RB_FORCE_WAKEUP));
	emit(prog, CALL(BPF_FUNC_ringbuf_output));
	for (int i = 0; i < 2; i++)
		patch_jump(prog, to_unknown[i], prog->count);
	emit(prog, MOV_IMM(R0, SK_PASS));
	emit(prog, EXIT());
	patch_jump(prog, to_drop, prog->count);
	emit(prog, MOV_IMM(R0, SK_DROP));
	emit(prog, EXIT());
}

static int load_program(const struct program *prog)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof attr);
	attr.prog_type = BPF_PROG_TYPE_SK_SKB;
	attr.insns = (uintptr_t)prog->insns;
	attr.insn_cnt = (uint32_t)prog->count;
	/* sk_redirect_map and ringbuf_output are GPL-only helpers. */
	attr.license = (uintptr_t) "GPL";
	attr.expected_attach_type = BPF_SK_SKB_VERDICT;
	return (int)sys_bpf(BPF_PROG_LOAD, &attr);
}

static int attach_verdict(int prog_fd, int sockmap_fd)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof attr);
	attr.target_fd = (uint32_t)sockmap_fd;
	attr.attach_bpf_fd = (uint32_t)prog_fd;
	attr.attach_type = BPF_SK_SKB_VERDICT;
	return (int)sys_bpf(BPF_PROG_ATTACH, &attr);
}

/* ---- one connection's maps --------------------------------------------- */

enum { RINGBUF_SIZE = 4096 };

/*
 * Each connection has its own maps and program: nothing is shared between
 * connections or processes, nothing leaks when a process dies, and closing
 * the fds takes both sockets out of the kernel path.
 */
struct kernel_path {
	int shared_fd;
	int sockmap_fd;
	int ringbuf_fd;
	struct shared_direction *shared; /* [0] up, [1] down */
	uint64_t *ring_consumer;         /* ours to advance */
	const uint64_t *ring_producer;
	size_t page_size;
};

static void kernel_path_close(struct kernel_path *path)
{
	if (path->shared != NULL)
		munmap(path->shared, path->page_size);
	if (path->ring_consumer != NULL)
		munmap(path->ring_consumer, path->page_size);
	if (path->ring_producer != NULL)
		munmap((void *)path->ring_producer, path->page_size);
	if (path->shared_fd >= 0)
		close(path->shared_fd);
	if (path->sockmap_fd >= 0)
		close(path->sockmap_fd);
	if (path->ringbuf_fd >= 0)
		close(path->ringbuf_fd);
}

static const char *errno_reason(const char *what)
{
	switch (errno) {
	case EPERM:
	case EACCES:
		return what[0] == 'm' ? "bpf map: not permitted (needs CAP_BPF)"
				      : "bpf program: not permitted (needs "
					"CAP_BPF)";
	case ENOSYS:
		return "the kernel has no bpf(2)";
	case EINVAL:
		return "the kernel lacks sockmap verdicts, mmap-able arrays or "
		       "ring buffers (Linux 5.13 or later)";
	case ENOMEM:
		return "bpf: out of memory (RLIMIT_MEMLOCK or memory cgroup)";
	default:
		return what;
	}
}

static void *map_pages(int fd, size_t length, int prot, off_t offset)
{
	void *p = mmap(NULL, length, prot, MAP_SHARED, fd, offset);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * The instructions are built in a mapping of their own, unmapped once
 * loaded: on the stack they would cost an idle connection a stack page
 * (stack_layout.h).
 */
static int load_verdict(const struct kernel_path *path)
{
	struct program *prog = mmap(NULL, sizeof *prog, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int prog_fd, saved_errno;

	if (prog == MAP_FAILED)
		return -1;
	build_program(prog, path->shared_fd, path->sockmap_fd,
		      path->ringbuf_fd);
	prog_fd = load_program(prog);
	saved_errno = errno;
	munmap(prog, sizeof *prog);
	errno = saved_errno;
	return prog_fd;
}

/* Returns 0, or -1 with *reason set and nothing left open. */
static int kernel_path_open(struct kernel_path *path, const char **reason)
{
	int prog_fd;

	*path = (struct kernel_path){.shared_fd = -1, .sockmap_fd = -1,
				     .ringbuf_fd = -1};
	path->page_size = (size_t)sysconf(_SC_PAGESIZE);
	path->shared_fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 2 * SHARED_SIZE, 1,
				     BPF_F_MMAPABLE);
	if (path->shared_fd >= 0)
		path->sockmap_fd = map_create(BPF_MAP_TYPE_SOCKMAP, 4, 4, 2, 0);
	if (path->sockmap_fd >= 0)
		path->ringbuf_fd =
			map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, RINGBUF_SIZE, 0);
	if (path->ringbuf_fd < 0) {
		*reason = errno_reason("map");
		kernel_path_close(path);
		return -1;
	}
	path->shared = map_pages(path->shared_fd, path->page_size,
				 PROT_READ | PROT_WRITE, 0);
	path->ring_consumer = map_pages(path->ringbuf_fd, path->page_size,
					PROT_READ | PROT_WRITE, 0);
	path->ring_producer = map_pages(path->ringbuf_fd, path->page_size,
					PROT_READ, (off_t)path->page_size);
	if (path->shared == NULL || path->ring_consumer == NULL ||
	    path->ring_producer == NULL) {
		*reason = "mmap of a bpf map failed";
		kernel_path_close(path);
		return -1;
	}
	prog_fd = load_verdict(path);
	if (prog_fd < 0) {
		*reason = errno_reason("program");
		kernel_path_close(path);
		return -1;
	}
	/* The sockmap holds the program from here on. */
	if (attach_verdict(prog_fd, path->sockmap_fd) != 0) {
		*reason = errno_reason("attach");
		close(prog_fd);
		kernel_path_close(path);
		return -1;
	}
	close(prog_fd);
	return 0;
}

/* Forget the bells rung so far: we are about to look at the counters. */
static void ring_clear(struct kernel_path *path)
{
	uint64_t producer =
		__atomic_load_n(path->ring_producer, __ATOMIC_ACQUIRE);

	__atomic_store_n(path->ring_consumer, producer, __ATOMIC_RELEASE);
}

/* ---- socket facts ------------------------------------------------------ */

static uint64_t socket_cookie(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof cookie;

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0)
		return 0;
	return cookie;
}

static bool is_established(int fd)
{
	struct tcp_info info;
	socklen_t len = sizeof info;

	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
	       info.tcpi_state == TCP_STATE_ESTABLISHED;
}

static bool has_socket_error(int fd)
{
	int error = 0;
	socklen_t len = sizeof error;

	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0 ||
	       error != 0;
}

/*
 * Bytes ever queued on fd's send side (write_seq, less a constant): bytes
 * acknowledged plus bytes still in the send queue. The two come from two
 * calls, so an ACK in between would make the sum short: read again until
 * the acknowledged count did not move across the ioctl.
 */
/*
 * TCP_INFO copies no more than asked: the fields up to tcpi_bytes_acked
 * are enough, and a small frame keeps an idle connection's stack in one
 * page.
 */
enum { TCP_INFO_WANTED = offsetof(struct tcp_info, tcpi_bytes_acked) +
			 sizeof(uint64_t) };

static int bytes_acked(int fd, uint64_t *acked)
{
	uint8_t info[TCP_INFO_WANTED];
	socklen_t len = sizeof info;

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len) != 0)
		return -1;
	if (len < sizeof info) {
		errno = EOPNOTSUPP; /* a kernel before tcpi_bytes_acked (4.1) */
		return -1;
	}
	memcpy(acked, info + offsetof(struct tcp_info, tcpi_bytes_acked),
	       sizeof *acked);
	return 0;
}

static int bytes_queued(int fd, uint64_t *total)
{
	uint64_t before, after;
	int outq;

	for (int tries = 0; tries < 1000; tries++) {
		if (bytes_acked(fd, &before) != 0 ||
		    ioctl(fd, SIOCOUTQ, &outq) != 0 ||
		    bytes_acked(fd, &after) != 0)
			return -1;
		if (before == after) {
			*total = after + (uint64_t)outq;
			return 0;
		}
	}
	errno = EAGAIN;
	return -1;
}

/* Half of the send buffer's free room: what the kernel may redirect now. */
static uint64_t send_room(int fd)
{
	uint32_t meminfo[SK_MEMINFO_VARS];
	socklen_t len = sizeof meminfo;
	int64_t room;

	if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, meminfo, &len) != 0)
		return 0;
	room = ((int64_t)meminfo[SK_MEMINFO_SNDBUF] -
		(int64_t)meminfo[SK_MEMINFO_WMEM_QUEUED]) /
	       2;
	if (room <= 0)
		return 0;
	return room > CREDIT_MAX ? CREDIT_MAX : (uint64_t)room;
}

/* ---- one direction ----------------------------------------------------- */

enum direction_state {
	DIRECTION_COPY,  /* we read from_fd and write to_fd */
	DIRECTION_IDLE,  /* the kernel has credit; we wait for a bell or EOF */
	DIRECTION_DRAIN, /* waiting for redirected bytes to reach to_fd */
	DIRECTION_SHUT,  /* EOF passed on: shutdown(to_fd, SHUT_WR) done */
};

/*
 * Bytes we copy go through a small buffer on the stack; a read that fills
 * it maps a large one for the rest of the connection. So an idle connection
 * the kernel relays touches no buffer page, and bulk passed back to us
 * moves in large reads.
 */
enum { SMALL_BUFFER_SIZE = 256, LARGE_BUFFER_SIZE = 65536 };

struct direction {
	int from_fd;
	int to_fd;
	uint32_t slot; /* from_fd's slot in the sockmap and the shared array */
	struct shared_direction *shared;
	enum direction_state state;
	bool joined;       /* from_fd is in the sockmap */
	bool cannot_join;  /* it never will: copy in user space to the end */
	bool read_closed;  /* EOF seen on from_fd */
	bool eof_waiting;  /* EOF seen, but passed or redirected bytes lag */
	bool failed;       /* a reset or error ended it */
	bool failed_by_from;
	uint64_t consumed; /* passed bytes read since joining */
	uint64_t written;  /* bytes we wrote to to_fd */
	uint64_t drained_used; /* the used count the last drain waited for */
	uint64_t queued_base;  /* bytes_queued(to_fd) before the relay */
	uint64_t sent;         /* bytes that reached to_fd, for the result */
	int backoff_us;
	int64_t next_check_us;
	size_t start;
	size_t pending;
	uint8_t *buffer; /* small, or large once mapped */
	size_t buffer_size;
	uint8_t *large;  /* NULL until a read fills the small buffer */
	uint8_t small[SMALL_BUFFER_SIZE];
};

static int64_t monotonic_us(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

static uint64_t shared_load(const uint64_t *field)
{
	return __atomic_load_n(field, __ATOMIC_ACQUIRE);
}

static void shared_store(uint64_t *field, uint64_t value)
{
	__atomic_store_n(field, value, __ATOMIC_RELEASE);
}

static void direction_fail(struct direction *dir, bool by_from)
{
	dir->failed = true;
	dir->failed_by_from = by_from;
}

/* Everything passed to us has been read: nothing is on its way. */
static bool has_read_all_passed(const struct direction *dir)
{
	return !dir->joined ||
	       shared_load(&dir->shared->passed) == dir->consumed;
}

static bool has_new_redirects(const struct direction *dir)
{
	return dir->joined &&
	       shared_load(&dir->shared->used) != dir->drained_used;
}

static void start_drain(struct direction *dir)
{
	dir->state = DIRECTION_DRAIN;
	dir->backoff_us = 50;
	dir->next_check_us = 0;
}

/*
 * Are all redirected bytes in to_fd's send queue? Returns 1 yes, 0 not yet,
 * -1 on error.
 */
static int is_drained(struct direction *dir)
{
	uint64_t used = shared_load(&dir->shared->used), queued;

	if (bytes_queued(dir->to_fd, &queued) != 0)
		return -1;
	if (queued - dir->queued_base != dir->written + used)
		return 0;
	dir->drained_used = used;
	return 1;
}

static void drain_step(struct direction *dir)
{
	int drained;

	if (monotonic_us() < dir->next_check_us)
		return;
	drained = is_drained(dir);
	if (drained < 0) {
		direction_fail(dir, false);
		return;
	}
	if (drained) {
		dir->state = DIRECTION_COPY;
		return;
	}
	dir->next_check_us = monotonic_us() + dir->backoff_us;
	if (dir->backoff_us < 20000)
		dir->backoff_us *= 2;
}

/* The kernel may move the next bytes: as much as to_fd's send room takes. */
static void grant(struct direction *dir)
{
	uint64_t spent = shared_load(&dir->shared->spent);

	shared_store(&dir->shared->consumed, dir->consumed);
	shared_store(&dir->shared->granted, spent + send_room(dir->to_fd));
	dir->state = DIRECTION_IDLE;
}

static void finish_direction(struct direction *dir)
{
	uint64_t queued;

	/* All passed bytes are read: the other direction may redirect. */
	shared_store(&dir->shared->consumed, dir->consumed);
	if (bytes_queued(dir->to_fd, &queued) == 0)
		dir->sent = queued - dir->queued_base;
	if (shutdown(dir->to_fd, SHUT_WR) != 0 && errno != ENOTCONN) {
		direction_fail(dir, false);
		return;
	}
	dir->state = DIRECTION_SHUT;
}

static int join(struct direction *dir, int sockmap_fd)
{
	if (!is_established(dir->from_fd) ||
	    sockmap_insert(sockmap_fd, dir->slot, dir->from_fd) != 0) {
		dir->cannot_join = true;
		return -1;
	}
	dir->joined = true;
	return 0;
}

/* The next read goes to the large buffer, once what is pending is written. */
static void map_large_buffer(struct direction *dir)
{
	void *p;

	if (dir->large != NULL)
		return;
	p = mmap(NULL, LARGE_BUFFER_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED)
		dir->large = p; /* without it, the small buffer does the job */
}

static void use_large_buffer_when_free(struct direction *dir)
{
	if (dir->large != NULL && dir->pending == 0 &&
	    dir->buffer != dir->large) {
		dir->buffer = dir->large;
		dir->buffer_size = LARGE_BUFFER_SIZE;
	}
}

/* Write what is pending. Returns 0 when all is written, -1 otherwise. */
static int write_pending(struct direction *dir)
{
	while (dir->pending > 0) {
		ssize_t n = send(dir->to_fd, dir->buffer + dir->start,
				 dir->pending, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				direction_fail(dir, false);
			return -1;
		}
		dir->start += (size_t)n;
		dir->pending -= (size_t)n;
		dir->written += (uint64_t)n;
	}
	return 0;
}

/*
 * Copy in user space until there is nothing to read. Then, if both sockets
 * are in the kernel path, hand the direction to the kernel.
 */
static void copy_step(struct direction *dir, bool kernel_ready, int sockmap_fd)
{
	for (;;) {
		ssize_t n;

		if (write_pending(dir) != 0)
			return;
		use_large_buffer_when_free(dir);
		if (dir->read_closed) {
			finish_direction(dir);
			return;
		}
		do
			n = recv(dir->from_fd, dir->buffer, dir->buffer_size,
				 MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n > 0 && (size_t)n == dir->buffer_size)
			map_large_buffer(dir);
		if (n > 0) {
			if (dir->joined)
				dir->consumed += (uint64_t)n;
			dir->start = 0;
			dir->pending = (size_t)n;
			/* Bytes redirected before these must go first. */
			if (has_new_redirects(dir)) {
				start_drain(dir);
				return;
			}
			continue;
		}
		if (n < 0 && errno != EAGAIN) {
			direction_fail(dir, true);
			return;
		}
		/*
		 * recv() says EOF once the FIN is in, even when passed bytes
		 * are still queued in the psock behind the other direction's
		 * redirected skbs: EOF counts only when all passed bytes are
		 * read. poll() would report POLLIN at once and forever then,
		 * so that wait is on a timer.
		 */
		if (n == 0 && !has_read_all_passed(dir)) {
			dir->eof_waiting = true;
			dir->next_check_us = monotonic_us() + 1000;
			return;
		}
		if (!has_read_all_passed(dir))
			return; /* on its way through the psock's queue */
		if (has_new_redirects(dir)) {
			start_drain(dir);
			return;
		}
		if (n == 0) {
			dir->read_closed = true;
			finish_direction(dir);
			return;
		}
		/* EAGAIN: the receive queue is empty, no skb is half read. */
		if (!dir->joined && !dir->cannot_join &&
		    join(dir, sockmap_fd) == 0)
			continue;
		if (dir->joined && kernel_ready)
			grant(dir);
		return;
	}
}

/* ---- the relay --------------------------------------------------------- */

static void direction_init(struct direction *dir, int from_fd, int to_fd,
			   uint32_t slot, struct shared_direction *shared)
{
	dir->from_fd = from_fd;
	dir->to_fd = to_fd;
	dir->slot = slot;
	dir->shared = shared;
	dir->state = DIRECTION_COPY;
	dir->joined = dir->cannot_join = dir->read_closed = false;
	dir->eof_waiting = false;
	dir->failed = dir->failed_by_from = false;
	dir->consumed = dir->written = dir->drained_used = dir->sent = 0;
	dir->start = dir->pending = 0;
	dir->buffer = dir->small;
	dir->buffer_size = sizeof dir->small;
	dir->large = NULL;
	dir->backoff_us = 0;
	dir->next_check_us = 0;
}

static short events_for(const struct direction *reading,
			const struct direction *writing)
{
	short events = 0;

	if (reading->state == DIRECTION_COPY && reading->pending == 0 &&
	    !reading->read_closed && !reading->eof_waiting)
		events |= POLLIN;
	if (reading->state == DIRECTION_IDLE)
		events |= POLLRDHUP;
	if (writing->state == DIRECTION_COPY && writing->pending > 0)
		events |= POLLOUT;
	return events;
}

/*
 * Watch fd for errors alone while the kernel may be writing to it: a reset
 * there would otherwise go unseen. Not once its peer's FIN is in and our
 * side is shut too, when poll() would report POLLHUP forever.
 */
static bool wants_errors(const struct direction *reading,
			 const struct direction *writing)
{
	return writing->state != DIRECTION_SHUT || !reading->read_closed;
}

static int poll_timeout_ms(const struct direction *dirs)
{
	int64_t now = monotonic_us(), wait_us = -1;

	for (int i = 0; i < 2; i++) {
		int64_t until = dirs[i].next_check_us - now;
		if (dirs[i].state != DIRECTION_DRAIN &&
		    !(dirs[i].state == DIRECTION_COPY && dirs[i].eof_waiting))
			continue;
		if (until < 0)
			until = 0;
		if (wait_us < 0 || until < wait_us)
			wait_us = until;
	}
	return wait_us < 0 ? -1 : (int)((wait_us + 999) / 1000);
}

static void on_bell(struct kernel_path *path, struct direction *dirs)
{
	ring_clear(path);
	for (int i = 0; i < 2; i++)
		if (dirs[i].state == DIRECTION_IDLE &&
		    !has_read_all_passed(&dirs[i]))
			start_drain(&dirs[i]);
}

static void step(struct direction *dir, const struct direction *other,
		 short from_events, int sockmap_fd)
{
	bool kernel_ready = dir->joined && other->joined;

	if (dir->state == DIRECTION_IDLE &&
	    (from_events & (POLLIN | POLLHUP | POLLRDHUP)))
		start_drain(dir);
	if (dir->state == DIRECTION_DRAIN)
		drain_step(dir);
	if (dir->state == DIRECTION_COPY && dir->eof_waiting) {
		if (monotonic_us() < dir->next_check_us)
			return;
		dir->eof_waiting = false;
	}
	if (dir->state == DIRECTION_COPY && !dir->failed)
		copy_step(dir, kernel_ready, sockmap_fd);
}

static enum relay_end end_of(const struct direction *up,
			     const struct direction *down, bool backend_first)
{
	if (up->failed)
		return up->failed_by_from ? RELAY_A_RESET
					  : RELAY_B_RESET;
	if (down->failed)
		return down->failed_by_from ? RELAY_B_RESET
					    : RELAY_A_RESET;
	return backend_first ? RELAY_B_CLOSED_FIRST : RELAY_DONE;
}

/* Bytes that reached to_fd, for a direction that did not finish cleanly. */
static void note_sent(struct direction *dir)
{
	uint64_t queued;

	if (dir->state == DIRECTION_SHUT)
		return;
	dir->sent = dir->written;
	if (bytes_queued(dir->to_fd, &queued) == 0 &&
	    queued - dir->queued_base > dir->written)
		dir->sent = queued - dir->queued_base;
}

static enum relay_end relay_loop(struct kernel_path *path,
				 struct direction *dirs)
{
	struct direction *up = &dirs[0], *down = &dirs[1];
	int client_fd = up->from_fd, backend_fd = down->from_fd;
	bool backend_first = false;

	/*
	 * Both sockets join at their first EAGAIN; a second round hands the
	 * first direction to the kernel once the second has joined too.
	 */
	for (int round = 0; round < 2; round++) {
		step(up, down, 0, path->sockmap_fd);
		step(down, up, 0, path->sockmap_fd);
	}
	while (!(up->state == DIRECTION_SHUT && down->state == DIRECTION_SHUT)) {
		short client_wanted = events_for(up, down);
		short backend_wanted = events_for(down, up);
		bool bell_wanted = up->state == DIRECTION_IDLE ||
				   down->state == DIRECTION_IDLE;
		struct pollfd fds[3] = {
			{.fd = client_wanted || wants_errors(up, down)
				       ? client_fd : -1,
			 .events = client_wanted},
			{.fd = backend_wanted || wants_errors(down, up)
				       ? backend_fd : -1,
			 .events = backend_wanted},
			{.fd = bell_wanted ? path->ringbuf_fd : -1,
			 .events = POLLIN},
		};
		if (poll(fds, 3, poll_timeout_ms(dirs)) < 0) {
			if (errno == EINTR)
				continue;
			return RELAY_ERROR;
		}
		if ((fds[0].revents & POLLERR) && has_socket_error(client_fd))
			return RELAY_A_RESET;
		if ((fds[1].revents & POLLERR) && has_socket_error(backend_fd))
			return RELAY_B_RESET;
		if ((fds[0].revents | fds[1].revents | fds[2].revents) &
		    POLLNVAL)
			return RELAY_ERROR;
		if (fds[2].revents & POLLIN)
			on_bell(path, dirs);
		bool was_down_open = !down->read_closed;
		step(up, down, fds[0].revents, path->sockmap_fd);
		step(down, up, fds[1].revents, path->sockmap_fd);
		if (up->failed || down->failed)
			return end_of(up, down, false);
		if (was_down_open && down->read_closed && !up->read_closed)
			backend_first = true;
	}
	return end_of(up, down, backend_first);
}

bool kernrelay_probe(const char **reason)
{
	struct kernel_path path;

	if (kernel_path_open(&path, reason) != 0)
		return false;
	kernel_path_close(&path);
	return true;
}

enum kernrelay_outcome kernrelay_run(int client_fd, int backend_fd,
				     struct relay_result *result,
				     struct kernrelay_counts *kernel,
				     const char **reason)
{
	struct kernel_path path;
	struct direction dirs[2];
	uint64_t client_queued, backend_queued;

	if (bytes_queued(backend_fd, &backend_queued) != 0 ||
	    bytes_queued(client_fd, &client_queued) != 0) {
		*reason = "TCP_INFO failed";
		return KERNRELAY_FALLBACK;
	}
	if (kernel_path_open(&path, reason) != 0)
		return KERNRELAY_FALLBACK;
	direction_init(&dirs[0], client_fd, backend_fd, 0, &path.shared[0]);
	direction_init(&dirs[1], backend_fd, client_fd, 1, &path.shared[1]);
	dirs[0].queued_base = backend_queued;
	dirs[1].queued_base = client_queued;
	path.shared[0].cookie = socket_cookie(client_fd);
	path.shared[1].cookie = socket_cookie(backend_fd);
	for (int i = 0; i < 2; i++)
		if (path.shared[i].cookie == 0)
			dirs[i].cannot_join = true;

	result->end = relay_loop(&path, dirs);
	for (int i = 0; i < 2; i++)
		note_sent(&dirs[i]);
	result->bytes_a_to_b = dirs[0].sent;
	result->bytes_b_to_a = dirs[1].sent;
	if (kernel != NULL) {
		kernel->a_to_b = shared_load(&path.shared[0].used);
		kernel->b_to_a = shared_load(&path.shared[1].used);
	}
	kernel_path_close(&path);
	for (int i = 0; i < 2; i++)
		if (dirs[i].large != NULL)
			munmap(dirs[i].large, LARGE_BUFFER_SIZE);
	return KERNRELAY_RELAYED;
}
