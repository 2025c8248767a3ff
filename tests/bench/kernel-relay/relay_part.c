/* user-space supervisor of the credit relay (experiment) */
enum kstate { K_IDLE, K_DRAINING, K_COPYING, K_DONE };
struct kdir {
	int from, to; uint64_t cookie;
	uint64_t consumed, written, used, base, credit;
	enum kstate state; int eof; int backoff_ms; double next_check;
	size_t pending, start; unsigned char buf[65536];
	long wakes, drain_waits, rounds;
};
struct kstat2 { uint64_t used, passed, spent; };
#include <linux/sock_diag.h>
static int map_lookup(int m, uint64_t key, void *val)
{
	union bpf_attr a; memset(&a, 0, sizeof a);
	a.map_fd = m; a.key = (uintptr_t)&key; a.value = (uintptr_t)val;
	return (int)sys_bpf(BPF_MAP_LOOKUP_ELEM, &a);
}
static int map_put(int m, uint64_t key, const void *val, uint64_t flags)
{
	union bpf_attr a; memset(&a, 0, sizeof a);
	a.map_fd = m; a.key = (uintptr_t)&key; a.value = (uintptr_t)val; a.flags = flags;
	return (int)sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
}
static uint64_t CREDIT = 256 * 1024;
static void grant(struct kdir *d)
{
	struct kstat2 st; map_lookup(state_map, d->cookie, &st);
	uint32_t mi[SK_MEMINFO_VARS]; socklen_t ml = sizeof mi; long room = 0;
	if (getsockopt(d->to, SOL_SOCKET, SO_MEMINFO, mi, &ml) == 0) room = ((long)mi[SK_MEMINFO_SNDBUF] - (long)mi[SK_MEMINFO_WMEM_QUEUED]) / 2;
	if (getenv("NOROOM")) room = d->credit;
	if (room < 0) room = 0; if ((uint64_t)room > d->credit) room = d->credit;
	uint64_t g[2] = { st.spent + room, d->consumed };
	if (map_put(grant_map, d->cookie, g, BPF_EXIST) < 0) perror("grant");
	int one = 1;
	setsockopt(d->from, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one); /* kick */
}
static int drained(struct kdir *d)
{
	return bytes_out(d->to) - d->base == d->written + d->used;
}
static void step(struct kdir *d, short rev)
{
	struct kstat2 s;
	for (;;) switch (d->state) {
	case K_IDLE:
		if (!(rev & (POLLIN | POLLHUP | POLLERR))) return;
		d->wakes++;
		map_lookup(state_map, d->cookie, &s); d->used = s.used;
		d->state = K_DRAINING; d->backoff_ms = 1;
		break;
	case K_DRAINING:
		map_lookup(state_map, d->cookie, &s); d->used = s.used;
		if (!drained(d)) {
			d->drain_waits++;
			d->next_check = now_s() + d->backoff_ms / 1000.0;
			if (d->backoff_ms < 50) d->backoff_ms *= 2;
			return;
		}
		d->state = K_COPYING;
		break;
	case K_COPYING:
		if (d->pending) {
			ssize_t w = send(d->to, d->buf + d->start, d->pending, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0) { if (errno == EAGAIN) return; perror("send"); d->state = K_DONE; return; }
			d->start += w; d->pending -= w; d->written += w;
			continue;
		}
		{
			ssize_t r = recv(d->from, d->buf, sizeof d->buf, MSG_DONTWAIT);
			if (r > 0) {
				d->consumed += r; d->pending = r; d->start = 0;
				map_lookup(state_map, d->cookie, &s);
				if (s.used != d->used) { d->used = s.used; d->state = K_DRAINING; d->backoff_ms = 1; }
				continue;
			}
			if (r < 0 && errno != EAGAIN) { perror("recv"); d->state = K_DONE; return; }
			map_lookup(state_map, d->cookie, &s);
			if (r == 0) {
				if (s.passed != d->consumed) { /* passed bytes still on their way to ingress_msg */
					d->next_check = now_s() + 0.001; return;
				}
				if (s.used != d->used) { d->used = s.used; d->state = K_DRAINING; d->backoff_ms = 1; continue; }
				shutdown(d->to, SHUT_WR); d->eof = 1; d->state = K_DONE; return;
			}
			d->rounds++;
			grant(d);
			d->state = K_IDLE;
			return;
		}
	case K_DONE:
		return;
	}
}
static int kinsert(struct kdir *d)
{
	uint64_t zero[2] = { 0, 0 };
	d->cookie = sock_cookie(d->from);
	d->base = bytes_out(d->to);
	if (map_put(grant_map, d->cookie, zero, BPF_NOEXIST) < 0 || map_put(state_map, d->cookie, zero, BPF_NOEXIST) < 0) return -1;
	return 0;
}
/* both dirs: kd[0] A->B, kd[1] B->A. leftovers are assumed read already */
static void krelay(struct kdir *kd)
{
	int A = kd[0].from, B = kd[1].from;
	if (kinsert(&kd[0]) || kinsert(&kd[1])) { perror("insert"); exit(2); }
	if (map_update(sockhash, kd[0].cookie, B, BPF_NOEXIST) || map_update(sockhash, kd[1].cookie, A, BPF_NOEXIST)) { perror("sockhash"); exit(2); }
	/* bytes that arrived meanwhile went to ingress (granted 0): the first round relays them */
	kd[0].state = kd[1].state = K_IDLE;
	kd[0].used = kd[1].used = 0;
	grant(&kd[0]); grant(&kd[1]);
	while (kd[0].state != K_DONE || kd[1].state != K_DONE) {
		struct pollfd p[4]; int np = 0; int idx[4]; double now = now_s(), next = now + 10;
		for (int i = 0; i < 2; i++) {
			struct kdir *d = &kd[i];
			if (d->state == K_IDLE) { p[np].fd = d->from; p[np].events = POLLIN; idx[np++] = i; }
			if (d->state == K_COPYING && d->pending) { p[np].fd = d->to; p[np].events = POLLOUT; idx[np++] = i; }
			if (d->state == K_DRAINING || (d->state == K_COPYING && !d->pending)) if (d->next_check < next) next = d->next_check;
		}
		int to = (int)((next - now) * 1000); if (to < 0) to = 0;
		for (int k = 0; k < np; k++) p[k].revents = 0;
		poll(p, np, to);
		short rev[2] = { 0, 0 };
		for (int k = 0; k < np; k++) rev[idx[k]] |= p[k].revents;
		for (int i = 0; i < 2; i++) {
			if (rev[i] & POLLERR) { int e = 0; socklen_t l = sizeof e; getsockopt(kd[i].from, SOL_SOCKET, SO_ERROR, &e, &l); if (e) { fprintf(stderr, "reset on %d\n", i); goto out; } }
			if (kd[i].state == K_IDLE && !rev[i]) continue;
			if (kd[i].state == K_DRAINING && now_s() < kd[i].next_check) continue;
			step(&kd[i], rev[i] | (kd[i].state == K_COPYING ? POLLOUT : 0));
		}
	}
out:
	map_delete(grant_map, kd[0].cookie); map_delete(grant_map, kd[1].cookie);
	map_delete(state_map, kd[0].cookie); map_delete(state_map, kd[1].cookie);
}
