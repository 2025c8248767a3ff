/* Raw bpf(2) helpers from the earlier SOCKHASH prototype (/tmp/sockmap-proto), kept so the experiments build alone. libc only, no libbpf. */
#ifndef BPFRELAY_H
#define BPFRELAY_H
#include <linux/bpf.h>
#include <linux/tcp.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <unistd.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>
#include <errno.h>
#include <time.h>
#include <stddef.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* ---- instruction macros (the uapi header only has the opcodes) ---- */
#define I_MOV64_REG(D, S) \
	((struct bpf_insn){ .code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = D, .src_reg = S })
#define I_MOV64_IMM(D, IMM) \
	((struct bpf_insn){ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = D, .imm = IMM })
#define I_ADD64_IMM(D, IMM) \
	((struct bpf_insn){ .code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = D, .imm = IMM })
#define I_STX_DW(D, S, OFF) \
	((struct bpf_insn){ .code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = D, .src_reg = S, .off = OFF })
#define I_CALL(FN) \
	((struct bpf_insn){ .code = BPF_JMP | BPF_CALL, .imm = FN })
#define I_JNE_IMM(D, IMM, OFF) \
	((struct bpf_insn){ .code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = D, .imm = IMM, .off = OFF })
#define I_LDX_W(D, S, OFF) \
	((struct bpf_insn){ .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = D, .src_reg = S, .off = OFF })
#define I_EXIT() ((struct bpf_insn){ .code = BPF_JMP | BPF_EXIT })
/* two-slot 64-bit immediate load of a map fd */
#define I_LD_MAP_FD(D, FD) \
	((struct bpf_insn){ .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = D, .src_reg = BPF_PSEUDO_MAP_FD, .imm = FD }), \
	((struct bpf_insn){ .code = 0, .imm = 0 })

static inline long sys_bpf(int cmd, union bpf_attr *a)
{
	return syscall(__NR_bpf, cmd, a, sizeof(*a));
}

static inline int sockhash_create(unsigned max_entries)
{
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.map_type = BPF_MAP_TYPE_SOCKHASH;
	a.key_size = 8;
	a.value_size = 4;
	a.max_entries = max_entries;
	return (int)sys_bpf(BPF_MAP_CREATE, &a);
}

static char bpf_log[65536];

/* miss_pass: on lookup miss return SK_PASS (data stays readable by userspace
 * on the receiving socket) instead of the helper's SK_DROP.
 * zlen: what to do with a zero-length skb (the pure-FIN skb that tcp_read_skb
 * hands to the verdict): 0 = redirect it like any other (breaks the peer with
 * EPIPE, see report), 1 = SK_DROP, 2 = SK_PASS. */
static inline int verdict_build(struct bpf_insn *p, int mapfd, int miss_pass, int zlen)
{
	int n = 0;
	p[n++] = I_MOV64_REG(BPF_REG_6, BPF_REG_1);                /* r6 = skb */
	if (zlen) {
		p[n++] = I_LDX_W(BPF_REG_2, BPF_REG_6, offsetof(struct __sk_buff, len));
		p[n++] = I_JNE_IMM(BPF_REG_2, 0, 2);                /* len != 0 -> go on */
		p[n++] = I_MOV64_IMM(BPF_REG_0, zlen == 1 ? SK_DROP : SK_PASS);
		p[n++] = I_EXIT();
	}
	p[n++] = I_CALL(BPF_FUNC_get_socket_cookie);               /* r0 = cookie(skb->sk) */
	p[n++] = I_STX_DW(BPF_REG_10, BPF_REG_0, -8);              /* *(u64 *)(fp - 8) = r0 */
	p[n++] = I_MOV64_REG(BPF_REG_1, BPF_REG_6);                /* r1 = skb */
	struct bpf_insn ld[2] = { I_LD_MAP_FD(BPF_REG_2, mapfd) }; /* r2 = map */
	p[n++] = ld[0];
	p[n++] = ld[1];
	p[n++] = I_MOV64_REG(BPF_REG_3, BPF_REG_10);
	p[n++] = I_ADD64_IMM(BPF_REG_3, -8);                       /* r3 = fp - 8 (key) */
	p[n++] = I_MOV64_IMM(BPF_REG_4, 0);                        /* r4 = 0: egress of the target */
	p[n++] = I_CALL(BPF_FUNC_sk_redirect_hash);                /* r0 = SK_PASS (found) / SK_DROP */
	if (miss_pass) {
		p[n++] = I_JNE_IMM(BPF_REG_0, SK_DROP, 1);
		p[n++] = I_MOV64_IMM(BPF_REG_0, SK_PASS);
	}
	p[n++] = I_EXIT();
	return n;
}

static inline int verdict_load_z(int mapfd, int miss_pass, int zlen, int expected_attach)
{
	struct bpf_insn prog[32];
	int n = verdict_build(prog, mapfd, miss_pass, zlen);
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.prog_type = BPF_PROG_TYPE_SK_SKB;
	a.insns = (uintptr_t)prog;
	a.insn_cnt = n;
	a.license = (uintptr_t)"GPL";
	a.log_buf = (uintptr_t)bpf_log;
	a.log_size = sizeof bpf_log;
	a.log_level = 1;
	a.expected_attach_type = expected_attach;
	bpf_log[0] = 0;
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0)
		fprintf(stderr, "prog load: %s\n%s\n", strerror(errno), bpf_log);
	return fd;
}
#define verdict_load(m, mp, ea) verdict_load_z(m, mp, 0, ea)

static inline int prog_attach(int progfd, int mapfd, int type)
{
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.target_fd = mapfd;
	a.attach_bpf_fd = progfd;
	a.attach_type = type;
	return (int)sys_bpf(BPF_PROG_ATTACH, &a);
}

static inline int map_update(int mapfd, uint64_t key, int sockfd, uint64_t flags)
{
	union bpf_attr a;
	uint32_t v = (uint32_t)sockfd;
	memset(&a, 0, sizeof a);
	a.map_fd = mapfd;
	a.key = (uintptr_t)&key;
	a.value = (uintptr_t)&v;
	a.flags = flags;
	return (int)sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
}

static inline int map_delete(int mapfd, uint64_t key)
{
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.map_fd = mapfd;
	a.key = (uintptr_t)&key;
	return (int)sys_bpf(BPF_MAP_DELETE_ELEM, &a);
}

static inline int map_count(int mapfd)
{
	union bpf_attr a;
	uint64_t k, nk;
	int n = 0, first = 1;
	for (;;) {
		memset(&a, 0, sizeof a);
		a.map_fd = mapfd;
		a.key = first ? 0 : (uintptr_t)&k;
		a.next_key = (uintptr_t)&nk;
		if (sys_bpf(BPF_MAP_GET_NEXT_KEY, &a) < 0)
			return n;
		n++;
		k = nk;
		first = 0;
	}
}

static inline uint64_t sock_cookie(int fd)
{
	uint64_t c = 0;
	socklen_t l = sizeof c;
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &l) < 0)
		return 0;
	return c;
}

/* Per-pair insert. gate: hold sk_data_ready off with a big SO_RCVLOWAT
 * on both sockets while the two entries are inserted, then drop it to 1,
 * which (tcp_set_rcvlowat -> tcp_data_ready -> psock data_ready) also runs
 * the verdict over bytes already queued (leftover). */
static inline int pair_insert(int mapfd, int a, int b, int gate, int flush)
{
	uint64_t ca = sock_cookie(a), cb = sock_cookie(b);
	int big = 1 << 30, one = 1;
	if (!ca || !cb)
		return -1;
	if (gate) {
		setsockopt(a, SOL_SOCKET, SO_RCVLOWAT, &big, sizeof big);
		setsockopt(b, SOL_SOCKET, SO_RCVLOWAT, &big, sizeof big);
	}
	if (map_update(mapfd, ca, b, BPF_NOEXIST) < 0)
		return -1;
	if (map_update(mapfd, cb, a, BPF_NOEXIST) < 0) {
		int e = errno;
		map_delete(mapfd, ca);
		errno = e;
		return -1;
	}
	if (gate || flush) {
		setsockopt(a, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
		setsockopt(b, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
	}
	return 0;
}

static inline int tcpinfo(int fd, struct tcp_info *ti)
{
	socklen_t l = sizeof *ti;
	memset(ti, 0, sizeof *ti);
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &l);
}

/* Bytes queued into 'to' so far (= write_seq - ISN, i.e. acked + still in the
 * send queue; includes the SYN for a connect()ed socket, so only use it as
 * a difference against a baseline taken the same way). tcpi_bytes_acked and
 * SIOCOUTQ come from two syscalls: an ACK landing between them makes the sum
 * too small, so re-read until bytes_acked did not move across the ioctl. */
static inline uint64_t bytes_out(int to)
{
	struct tcp_info t1, t2;
	int outq = 0;
	for (int i = 0; i < 100; i++) {
		tcpinfo(to, &t1);
		ioctl(to, SIOCOUTQ, &outq);
		tcpinfo(to, &t2);
		if (t1.tcpi_bytes_acked == t2.tcpi_bytes_acked)
			break;
	}
	return t2.tcpi_bytes_acked + (uint64_t)outq;
}

static inline double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
