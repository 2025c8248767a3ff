/* Does SO_RCVLOWAT huge keep data readable by recv() on a psock'd socket? */
#define _GNU_SOURCE
#include "bpfrelay.h"
#include <arpa/inet.h>
#include <poll.h>
#include <fcntl.h>
int main(void)
{
	int m = sockhash_create(16);
	struct bpf_insn p[] = { I_MOV64_IMM(BPF_REG_0, SK_PASS), I_EXIT() };
	union bpf_attr a; memset(&a, 0, sizeof a);
	a.prog_type = BPF_PROG_TYPE_SK_SKB; a.insns = (uintptr_t)p; a.insn_cnt = 2; a.license = (uintptr_t)"GPL";
	int pf = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (pf < 0 || prog_attach(pf, m, BPF_SK_SKB_VERDICT) < 0) { perror("bpf"); return 1; }
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	int l = socket(AF_INET, SOCK_STREAM, 0); bind(l, (void *)&sa, sizeof sa); listen(l, 4);
	socklen_t sl = sizeof sa; getsockname(l, (void *)&sa, &sl);
	int c = socket(AF_INET, SOCK_STREAM, 0); connect(c, (void *)&sa, sizeof sa);
	int s = accept(l, NULL, NULL); fcntl(s, F_SETFL, O_NONBLOCK);
	if (map_update(m, sock_cookie(s), s, BPF_NOEXIST) < 0) { perror("insert"); return 1; }
	int big = 1 << 30, one = 1; char buf[4096];
	setsockopt(s, SOL_SOCKET, SO_RCVLOWAT, &big, sizeof big);
	send(c, buf, 1000, 0); usleep(50000);
	struct pollfd pf2 = { s, POLLIN, 0 }; poll(&pf2, 1, 0);
	int inq = -1; ioctl(s, FIONREAD, &inq);
	ssize_t r = recv(s, buf, sizeof buf, 0); int e = errno;
	printf("RCVLOWAT huge, 1000 bytes in the receive queue: poll revents=0x%x FIONREAD=%d recv=%zd (%s)\n", pf2.revents, inq, r, r < 0 ? strerror(e) : "-");
	setsockopt(s, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
	r = recv(s, buf, sizeof buf, 0); e = errno;
	printf("after SO_RCVLOWAT 1 (verdict runs, SK_PASS): recv=%zd (%s)\n", r, r < 0 ? strerror(e) : "-");
	return 0;
}
