/*
 * forkcost: what one fork + exit + wait of a tiny static process costs on
 * this machine, the figure every benchmark table is printed with.
 *
 * Where page tables go through a hypervisor (PVM, pti=on) a fork is several
 * times dearer than on bare metal, and a proxy that forks per connection
 * follows that cost; a table without it cannot be compared with another.
 *
 * The program is its own child: a static binary with nothing mapped beyond
 * its text, data, stack and vdso, so the figure is the kernel's floor for a
 * process, not the price of a large address space. It forks, the child
 * exits at once, the parent waits; batches of such rounds are timed and the
 * median batch is reported, since other work on a shared machine only ever
 * adds time. It holds no test or protocol code and prints one line:
 * "RESULT <microseconds per fork> us".
 *
 * "forkcost --hold N" measures the other floor, memory: it forks N children
 * that wait without doing anything and prints what the host gave them, from
 * /proc/meminfo read before, while they wait and after they are gone (the
 * mean of both differences, so a steady drift elsewhere cancels), per
 * child, with one child's own count of its page tables (VmPTE, which leaves
 * out the top-level table):
 * "HOLD <total KiB> anon <KiB> stack <KiB> tables <KiB> slab <KiB> vmpte <KiB>".
 * A process per connection cannot cost less than that.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { BATCHES = 9, DEFAULT_FORKS_PER_BATCH = 100 };

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* One fork, the child's exit and the parent's wait; -1 on a failure. */
static int fork_exit_wait(void)
{
	int status;
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	if (pid < 0)
		return -1;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return 0;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The /proc/meminfo fields a process costs, in KiB, in this order. */
static const char *const meminfo_fields[] = {"AnonPages:", "KernelStack:",
					     "PageTables:", "SUnreclaim:"};
enum { FIELDS = sizeof meminfo_fields / sizeof meminfo_fields[0] };

static int read_meminfo(double kib[FIELDS])
{
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		for (int i = 0; i < FIELDS; i++)
			if (strncmp(line, meminfo_fields[i],
				    strlen(meminfo_fields[i])) == 0)
				kib[i] = strtod(line + strlen(meminfo_fields[i]),
						NULL);
	fclose(f);
	return 0;
}

static long child_vmpte_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "VmPTE:", 6) == 0)
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

static void end_children(pid_t *pids, long count)
{
	for (long i = 0; i < count; i++)
		kill(pids[i], SIGKILL);
	for (long i = 0; i < count; i++)
		while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
			;
}

/* --hold N: what N idle children cost the host, per child. */
static int hold_children(long count)
{
	double before[FIELDS] = {0}, held[FIELDS] = {0}, after[FIELDS] = {0};
	pid_t *pids = calloc((size_t)count, sizeof *pids);
	long vmpte;
	double total = 0, per_child[FIELDS];

	if (pids == NULL || read_meminfo(before) != 0)
		return 1;
	for (long i = 0; i < count; i++) {
		/*
		 * _Fork() and a pid on the stack: the child writes nothing but
		 * its stack, where fork()'s atfork work would dirty libc's data
		 * and pids[i] a heap page, which are not the kernel's floor.
		 */
		pid_t pid = _Fork();
		if (pid == 0) {
			pause();
			_exit(0);
		}
		pids[i] = pid;
		if (pid < 0) {
			fprintf(stderr, "forkcost: fork: %s\n", strerror(errno));
			end_children(pids, i);
			return 1;
		}
	}
	/* Each child's pause() has faulted in what it touches. */
	usleep(300000);
	vmpte = child_vmpte_kib(pids[0]);
	if (read_meminfo(held) != 0)
		return 1;
	end_children(pids, count);
	usleep(300000);
	if (read_meminfo(after) != 0)
		return 1;
	for (int i = 0; i < FIELDS; i++) {
		per_child[i] = (held[i] - (before[i] + after[i]) / 2) /
			       (double)count;
		total += per_child[i];
	}
	printf("HOLD %.1f anon %.1f stack %.1f tables %.1f slab %.1f vmpte "
	       "%ld\n",
	       total, per_child[0], per_child[1], per_child[2], per_child[3],
	       vmpte);
	free(pids);
	return 0;
}

int main(int argc, char **argv)
{
	long forks_per_batch = DEFAULT_FORKS_PER_BATCH;
	double batch_us[BATCHES];

	if (argc == 3 && strcmp(argv[1], "--hold") == 0) {
		long count = strtol(argv[2], NULL, 10);
		if (count < 1 || count > 100000) {
			fprintf(stderr, "forkcost: --hold: 1 to 100000\n");
			return 2;
		}
		return hold_children(count);
	}
	if (argc > 2 || (argc == 2 && (forks_per_batch = strtol(argv[1], NULL,
								 10)) < 1)) {
		fprintf(stderr,
			"usage: forkcost [FORKS_PER_BATCH] | --hold COUNT\n");
		return 2;
	}
	for (int b = 0; b < BATCHES; b++) {
		double start = now_us();
		for (long i = 0; i < forks_per_batch; i++) {
			if (fork_exit_wait() != 0) {
				fprintf(stderr, "forkcost: %s\n",
					strerror(errno));
				return 1;
			}
		}
		batch_us[b] = (now_us() - start) / (double)forks_per_batch;
	}
	qsort(batch_us, BATCHES, sizeof batch_us[0], compare_doubles);
	printf("RESULT %.0f us\n", batch_us[BATCHES / 2]);
	return 0;
}
