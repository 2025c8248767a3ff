/* Experiments for the credit-based SK_SKB relay (kernel assumptions). */
#define _GNU_SOURCE
#include "bpfrelay.h"
#include <arpa/inet.h>
#include <pthread.h>
#include <poll.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/time.h>

#define I_LD_MAP(D, FD) I_LD_MAP_FD(D, FD)
#define I_LDX_DW(D, S, OFF) ((struct bpf_insn){ .code = BPF_LDX | BPF_MEM | BPF_DW, .dst_reg = D, .src_reg = S, .off = OFF })
#define I_JEQ_IMM(D, IMM, OFF) ((struct bpf_insn){ .code = BPF_JMP | BPF_JEQ | BPF_K, .dst_reg = D, .imm = IMM, .off = OFF })
#define I_JNE_REG(D, S, OFF) ((struct bpf_insn){ .code = BPF_JMP | BPF_JNE | BPF_X, .dst_reg = D, .src_reg = S, .off = OFF })
#define I_JGT_REG(D, S, OFF) ((struct bpf_insn){ .code = BPF_JMP | BPF_JGT | BPF_X, .dst_reg = D, .src_reg = S, .off = OFF })
#define I_ADD64_REG(D, S) ((struct bpf_insn){ .code = BPF_ALU64 | BPF_ADD | BPF_X, .dst_reg = D, .src_reg = S })
#define I_SUB64_REG(D, S) ((struct bpf_insn){ .code = BPF_ALU64 | BPF_SUB | BPF_X, .dst_reg = D, .src_reg = S })
#define I_JA(OFF) ((struct bpf_insn){ .code = BPF_JMP | BPF_JA, .off = OFF })

static int hash_create(unsigned vs)
{
	union bpf_attr a; memset(&a, 0, sizeof a);
	a.map_type = BPF_MAP_TYPE_HASH; a.key_size = 8; a.value_size = vs; a.max_entries = 65536;
	a.map_flags = BPF_F_NO_PREALLOC;
	return (int)sys_bpf(BPF_MAP_CREATE, &a);
}
static int sk_storage_create(void)
{
	union bpf_attr a; memset(&a, 0, sizeof a);
	a.map_type = BPF_MAP_TYPE_SK_STORAGE; a.key_size = 4; a.value_size = 8; a.max_entries = 0;
	a.map_flags = BPF_F_NO_PREALLOC;
	return (int)sys_bpf(BPF_MAP_CREATE, &a);
}
static int load(struct bpf_insn *p, int n)
{
	union bpf_attr a; memset(&a, 0, sizeof a);
	a.prog_type = BPF_PROG_TYPE_SK_SKB; a.insns = (uintptr_t)p; a.insn_cnt = n;
	a.license = (uintptr_t)"GPL"; a.log_buf = (uintptr_t)bpf_log; a.log_size = sizeof bpf_log; a.log_level = 1;
	bpf_log[0] = 0;
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0) fprintf(stderr, "prog load: %s\n%s\n", strerror(errno), bpf_log);
	return fd;
}

#define OVH 1024
static int sockhash, grant_map, state_map, prog;

/* grant: {granted, consumed} written by user; state: {used, passed} written by prog */
static int build(struct bpf_insn *p)
{
	int n = 0;
	p[n++] = I_MOV64_REG(6, 1);
	p[n++] = I_LDX_W(7, 6, offsetof(struct __sk_buff, len));
	p[n++] = I_JNE_IMM(7, 0, 2);
	p[n++] = I_MOV64_IMM(0, SK_DROP);
	p[n++] = I_EXIT();
	p[n++] = I_CALL(BPF_FUNC_get_socket_cookie);
	p[n++] = I_STX_DW(10, 0, -8);
	{ struct bpf_insn l[2] = { I_LD_MAP(1, grant_map) }; p[n++] = l[0]; p[n++] = l[1]; }
	p[n++] = I_MOV64_REG(2, 10); p[n++] = I_ADD64_IMM(2, -8);
	p[n++] = I_CALL(BPF_FUNC_map_lookup_elem);
	int j1 = n; p[n++] = I_JEQ_IMM(0, 0, 0); /* -> pass_nocount */
	p[n++] = I_MOV64_REG(8, 0);
	{ struct bpf_insn l[2] = { I_LD_MAP(1, state_map) }; p[n++] = l[0]; p[n++] = l[1]; }
	p[n++] = I_MOV64_REG(2, 10); p[n++] = I_ADD64_IMM(2, -8);
	p[n++] = I_CALL(BPF_FUNC_map_lookup_elem);
	int j2 = n; p[n++] = I_JEQ_IMM(0, 0, 0); /* -> pass_nocount */
	p[n++] = I_MOV64_REG(9, 0);
	p[n++] = I_LDX_DW(1, 9, 8);  /* passed */
	p[n++] = I_LDX_DW(2, 8, 8);  /* consumed */
	int j3 = n; p[n++] = I_JNE_REG(1, 2, 0); /* -> pass */
	p[n++] = I_LDX_DW(1, 9, 16);  /* spent */
	p[n++] = I_ADD64_REG(1, 7);
	p[n++] = I_ADD64_IMM(1, OVH);
	p[n++] = I_LDX_DW(2, 8, 0);  /* granted */
	int j4 = n; p[n++] = I_JGT_REG(1, 2, 0); /* -> pass */
	p[n++] = I_STX_DW(9, 1, 16);  /* spent += len + OVH */
	p[n++] = I_LDX_DW(1, 9, 0); p[n++] = I_ADD64_REG(1, 7); p[n++] = I_STX_DW(9, 1, 0); /* used += len */
	p[n++] = I_MOV64_REG(1, 6);
	{ struct bpf_insn l[2] = { I_LD_MAP(2, sockhash) }; p[n++] = l[0]; p[n++] = l[1]; }
	p[n++] = I_MOV64_REG(3, 10); p[n++] = I_ADD64_IMM(3, -8);
	p[n++] = I_MOV64_IMM(4, 0);
	p[n++] = I_CALL(BPF_FUNC_sk_redirect_hash);
	p[n++] = I_JNE_IMM(0, SK_PASS, 1);
	p[n++] = I_EXIT();
	/* redirect failed: undo used, pass */
	p[n++] = I_LDX_DW(1, 9, 0); p[n++] = I_SUB64_REG(1, 7); p[n++] = I_STX_DW(9, 1, 0);
	p[n++] = I_LDX_DW(1, 9, 16); p[n++] = I_SUB64_REG(1, 7); p[n++] = I_ADD64_IMM(1, -OVH); p[n++] = I_STX_DW(9, 1, 16);
	int pass = n;
	p[n++] = I_LDX_DW(1, 9, 8); p[n++] = I_ADD64_REG(1, 7); p[n++] = I_STX_DW(9, 1, 8);
	int nocount = n;
	p[n++] = I_MOV64_IMM(0, SK_PASS);
	p[n++] = I_EXIT();
	p[j1].off = nocount - j1 - 1; p[j2].off = nocount - j2 - 1;
	p[j3].off = pass - j3 - 1; p[j4].off = pass - j4 - 1;
	return n;
}

static void try_sk_storage(void)
{
	int m = sk_storage_create();
	printf("E1: SK_STORAGE map create: %s\n", m >= 0 ? "ok" : strerror(errno));
	if (m < 0) return;
	struct bpf_insn p[16]; int n = 0;
	p[n++] = I_LDX_DW(2, 1, offsetof(struct __sk_buff, sk)); /* r2 = skb->sk */
	p[n++] = I_JNE_IMM(2, 0, 2);
	p[n++] = I_MOV64_IMM(0, SK_PASS); p[n++] = I_EXIT();
	{ struct bpf_insn l[2] = { I_LD_MAP(1, m) }; p[n++] = l[0]; p[n++] = l[1]; }
	p[n++] = I_MOV64_IMM(3, 0); p[n++] = I_MOV64_IMM(4, 1);
	p[n++] = I_CALL(BPF_FUNC_sk_storage_get);
	p[n++] = I_MOV64_IMM(0, SK_PASS); p[n++] = I_EXIT();
	int fd = load(p, n);
	printf("E1: SK_SKB program calling sk_storage_get on skb->sk: %s\n", fd >= 0 ? "LOADS" : "rejected (log above)");
}

#include "relay_part.c"
#include "scen.c"
int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "e1")) { try_sk_storage(); return 0; }
	sockhash = sockhash_create(65536);
	grant_map = hash_create(16); state_map = hash_create(24);
	struct bpf_insn p[64]; int n = build(p);
	prog = load(p, n);
	if (prog < 0) return 1;
	if (prog_attach(prog, sockhash, BPF_SK_SKB_VERDICT) < 0) { perror("attach"); return 1; }
	printf("program loaded (%d insns) and attached\n", n);
	return scenario(argc, argv);
}
