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
 */
#define _GNU_SOURCE
#include <errno.h>
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

int main(int argc, char **argv)
{
	long forks_per_batch = DEFAULT_FORKS_PER_BATCH;
	double batch_us[BATCHES];

	if (argc > 2 || (argc == 2 && (forks_per_batch = strtol(argv[1], NULL,
								 10)) < 1)) {
		fprintf(stderr, "usage: forkcost [FORKS_PER_BATCH]\n");
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
