struct gen { uint64_t s; };
static void gen_init(struct gen *g, uint64_t seed) { g->s = seed * 0x9E3779B97F4A7C15ull + 1; }
static void gen_fill(struct gen *g, unsigned char *p, size_t n)
{ for (size_t i = 0; i < n; i++) { g->s ^= g->s << 13; g->s ^= g->s >> 7; g->s ^= g->s << 17; p[i] = (unsigned char)g->s; } }
static int lst(struct sockaddr_in *sa)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	sa->sin_family = AF_INET; sa->sin_addr.s_addr = htonl(0x7f000001); sa->sin_port = 0;
	if (bind(s, (void *)sa, sizeof *sa) < 0 || listen(s, 64) < 0) { perror("listen"); exit(2); }
	socklen_t l = sizeof *sa; getsockname(s, (void *)sa, &l); return s;
}
static int conn_to(struct sockaddr_in *sa) { int s = socket(AF_INET, SOCK_STREAM, 0); if (connect(s, (void *)sa, sizeof *sa) < 0) { perror("connect"); exit(2);} return s; }
struct side { int fd; uint64_t seed; size_t total; double pause_at_mb, pause_s; const char *prefix; atomic_size_t progress; int fail; };
static void *writer(void *v)
{
	struct side *x = v; struct gen g; gen_init(&g, x->seed);
	static __thread unsigned char buf[65536 + 16];
	size_t done = 0; int first = 1;
	while (done < x->total) {
		size_t off = 0, n = x->total - done; if (n > 65536) n = 65536;
		if (first && x->prefix) { off = strlen(x->prefix); memcpy(buf, x->prefix, off); }
		gen_fill(&g, buf + off, n);
		size_t len = off + n, w = 0;
		while (w < len) { ssize_t r = send(x->fd, buf + w, len - w, MSG_NOSIGNAL); if (r < 0) { x->fail = 1; return NULL; } w += r; }
		done += n; atomic_store(&x->progress, done); first = 0;
	}
	shutdown(x->fd, SHUT_WR);
	return NULL;
}
static void *reader(void *v)
{
	struct side *x = v; struct gen g; gen_init(&g, x->seed);
	static __thread unsigned char buf[65536], exp[65536];
	size_t got = 0; int paused = 0;
	for (;;) {
		if (!paused && x->pause_s > 0 && got >= (size_t)(x->pause_at_mb * 1048576)) { usleep((useconds_t)(x->pause_s * 1e6)); paused = 1; }
		ssize_t r = recv(x->fd, buf, sizeof buf, 0);
		if (r == 0) break;
		if (r < 0) { x->fail = 1; perror("reader recv"); return NULL; }
		gen_fill(&g, exp, r);
		if (memcmp(buf, exp, r)) { ssize_t k = 0; while (buf[k] == exp[k]) k++; fprintf(stderr, "first bad byte at %zu+%zd; searching got in stream...\n", got, k); { struct gen g2; gen_init(&g2, x->seed); static unsigned char big[1<<26]; size_t lim = got + 8*1048576 < sizeof big ? got + 8*1048576 : sizeof big; gen_fill(&g2, big, lim); for (size_t o = 0; o + 32 < lim; o++) if (!memcmp(big + o, buf + k, 32)) { fprintf(stderr, "bytes at bad point match stream offset %zu (delta %+ld)\n", o, (long)o - (long)(got + k)); break; } } fprintf(stderr, "MISMATCH seed %lu at %zu len %zd got %02x%02x%02x%02x exp %02x%02x%02x%02x\n", (unsigned long)x->seed, got, r, buf[0],buf[1],buf[2],buf[3],exp[0],exp[1],exp[2],exp[3]); x->fail = 1; return NULL; }
		got += r; atomic_store(&x->progress, got);
	}
	if (got != x->total) { fprintf(stderr, "reader got %zu of %zu\n", got, x->total); x->fail = 1; }
	return NULL;
}
static long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r"); char line[256]; long v = -1; size_t kl = strlen(key);
	while (fgets(line, sizeof line, f)) if (!strncmp(line, key, kl)) { v = atol(line + kl + 1); break; }
	fclose(f); return v;
}
static long tcp_mem(void)
{
	FILE *f = fopen("/proc/net/sockstat", "r"); char line[256]; long v = -1;
	while (fgets(line, sizeof line, f)) if (sscanf(line, "TCP: inuse %*d orphan %*d tw %*d alloc %*d mem %ld", &v) == 1) break;
	fclose(f); return v;
}
static struct kdir kd[2];
static void *relay_thread(void *v) { (void)v; krelay(kd); return NULL; }
static int scenario(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	double up_mb = atof(getenv("UP") ?: "16"), down_mb = atof(getenv("DOWN") ?: "16");
	double bpause = atof(getenv("BPAUSE") ?: "0"), cpause = atof(getenv("CPAUSE") ?: "0");
	if (getenv("CREDIT")) CREDIT = atol(getenv("CREDIT")) * 1024;
	(void)argc; (void)argv;
	struct sockaddr_in rsa, bsa; int rl = lst(&rsa), bl = lst(&bsa);
	int C = conn_to(&rsa), A = accept(rl, NULL, NULL);
	struct side cw = { C, 11, (size_t)(up_mb * 1048576), 0, 0, "HDR\n" }, cr = { C, 22, (size_t)(down_mb * 1048576), 0.5, cpause };
	pthread_t t[5];
	pthread_create(&t[0], NULL, writer, &cw);
	char h[4]; recv(A, h, 4, MSG_WAITALL);
	int B = conn_to(&bsa), S = accept(bl, NULL, NULL);
	fcntl(A, F_SETFL, O_NONBLOCK); fcntl(B, F_SETFL, O_NONBLOCK);
	/* leftovers */
	for (;;) { unsigned char b[65536]; ssize_t r = recv(A, b, sizeof b, 0); if (r <= 0) break; size_t w = 0; while (w < (size_t)r) { ssize_t x = send(B, b + w, r - w, MSG_NOSIGNAL); if (x > 0) w += x; else { struct pollfd p = { B, POLLOUT, 0 }; poll(&p, 1, 100); } } kd[0].written += r; }
	kd[0].from = A; kd[0].to = B; kd[1].from = B; kd[1].to = A; kd[0].credit = kd[1].credit = CREDIT;
	uint64_t leftover = kd[0].written; kd[0].written = 0;
	struct side bw = { S, 22, (size_t)(down_mb * 1048576), 0, 0, NULL }, br = { S, 11, (size_t)(up_mb * 1048576), 2, bpause };
	long mem0 = meminfo("MemAvailable:"), tcp0 = tcp_mem(), slab0 = meminfo("Slab:");
	double t0 = now_s();
	pthread_create(&t[1], NULL, relay_thread, NULL);
	pthread_create(&t[2], NULL, reader, &cr);
	pthread_create(&t[3], NULL, writer, &bw);
	pthread_create(&t[4], NULL, reader, &br);
	long maxdrop = 0, maxtcp = 0, maxslab = 0;
	while (atomic_load(&br.progress) < br.total || atomic_load(&cr.progress) < cr.total) {
		usleep(getenv("V") ? 250000 : 50000);
		long d = mem0 - meminfo("MemAvailable:"), tm = tcp_mem() - tcp0, sl = meminfo("Slab:") - slab0;
		if (tm > 20000 && !getenv("DUMPED")) { setenv("DUMPED","1",1); fflush(stdout); system("ss -tmn | grep -v LISTEN"); for (int i = 0; i < 2; i++) { struct kstat2 st = {0}; map_lookup(state_map, kd[i].cookie, &st); printf("dir %d state %d consumed %lu passed %lu used %lu\n", i, kd[i].state, (unsigned long)kd[i].consumed, (unsigned long)st.passed, (unsigned long)st.used);} }
		if (d > maxdrop) maxdrop = d; if (tm > maxtcp) maxtcp = tm; if (sl > maxslab) maxslab = sl;
		if (getenv("V")) printf("t=%.2f up sent %.1f rcvd %.1f | down sent %.1f rcvd %.1f MiB | MemAvail -%ld kB tcpmem +%ld pages slab +%ld kB\n", now_s() - t0,
			atomic_load(&cw.progress) / 1048576.0, atomic_load(&br.progress) / 1048576.0, atomic_load(&bw.progress) / 1048576.0, atomic_load(&cr.progress) / 1048576.0, d, tm, sl);
		if (cr.fail || br.fail || now_s() - t0 > (getenv("TMO") ? atof(getenv("TMO")) : 120)) {
			for (int i = 0; i < 2; i++) { struct kstat2 st = {0}; uint64_t g[2] = {0}; map_lookup(state_map, kd[i].cookie, &st); map_lookup(grant_map, kd[i].cookie, g);
				int inq = 0; ioctl(kd[i].from, FIONREAD, &inq);
				printf("dir %d: state %d pending %zu consumed %lu written %lu used(snap) %lu | map used %lu passed %lu granted %lu consumed %lu | out(to)-base %lu | FIONREAD(from) %d\n", i, kd[i].state, kd[i].pending,
				(unsigned long)kd[i].consumed, (unsigned long)kd[i].written, (unsigned long)kd[i].used, (unsigned long)st.used, (unsigned long)st.passed, (unsigned long)g[0], (unsigned long)g[1], (unsigned long)(bytes_out(kd[i].to) - kd[i].base), inq); }
			fflush(stdout); system("ss -tmin | grep -v LISTEN"); exit(3); }
	}
	for (int i = 0; i < 5; i++) pthread_join(t[i], NULL);
	double el = now_s() - t0;
	printf("RESULT up=%.0fMiB down=%.0fMiB bpause=%.1f cpause=%.1f credit=%luK: %s in %.2fs; leftover %lu; max MemAvailable drop %ld kB, TCP mem +%ld pages, Slab +%ld kB; wakes %ld/%ld drainwaits %ld/%ld rounds %ld/%ld\n",
		up_mb, down_mb, bpause, cpause, (unsigned long)(CREDIT / 1024), (cw.fail || cr.fail || bw.fail || br.fail) ? "FAIL" : "byte-exact", el,
		(unsigned long)leftover, maxdrop, maxtcp, maxslab, kd[0].wakes, kd[1].wakes, kd[0].drain_waits, kd[1].drain_waits, kd[0].rounds, kd[1].rounds);
	return 0;
}
