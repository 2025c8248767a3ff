/*
 * stack_move: the move to a stack next to the heap (see stack_move.h).
 *
 * Why: a static-pie process touches three 2 MiB regions far apart, the brk
 * heap (glibc keeps the thread's TLS block there, so every function
 * touches it), the binary with the vdso, and the stack at the top of the
 * address space; each costs the kernel its own page-table pages, in every
 * connection process. Running on a stack mapped just below the heap, and
 * keeping the original stack out of forked processes (MADV_DONTFORK),
 * leaves them two regions.
 *
 * How, in data-flow order: where the kernel put things (/proc/self/stat,
 * /proc/self/maps); the new region, a PROT_NONE guard below the stack and,
 * at its top, copies of argv and the environment; the kernel told where
 * the command line now is (PR_SET_MM_MAP), so that ps and pgrep -f still
 * read it in a forked process; then the switch, with makecontext(). Each
 * step that is refused undoes what came before it and leaves the process
 * as it started: the move saves memory, and nothing depends on it.
 *
 * Holds no logging: nothing is set up to log to yet, and a refusal is not
 * an error worth a line. Every system call here comes before main() proper,
 * so before the sandbox: no filter has to allow any of them.
 */
#define _GNU_SOURCE
#include "stack_move.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <ucontext.h>
#include <unistd.h>

/*
 * A sanitizer keeps its own books on the stack it started on, and a build
 * made to find bugs gains nothing from saving page tables.
 */
#if defined(__SANITIZE_ADDRESS__)
#define STACK_MOVE_POSSIBLE false
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STACK_MOVE_POSSIBLE false
#endif
#endif
#ifndef STACK_MOVE_POSSIBLE
#define STACK_MOVE_POSSIBLE true
#endif

/*
 * 256 KiB is several times what the deepest path needs (the metrics
 * endpoint's 50 KiB of buffers); the guard turns an overflow into a fault
 * instead of a write into whatever lies below. The page between the stack
 * and the heap keeps the two mappings from merging into one, whose
 * MADV_DONTFORK, /proc/PID/maps line and growth would then be shared.
 */
enum {
	STACK_SIZE = 256 * 1024,
	GUARD_SIZE = 1024 * 1024,
	GAP_BELOW_HEAP = 1,
};

/* What the kernel says about this process's layout (proc(5), stat). */
struct process_layout {
	unsigned long start_code, end_code, start_stack;
	unsigned long start_data, end_data, start_brk;
	unsigned long arg_start, arg_end, env_start, env_end;
};

/* The new region, from its lowest address up. */
struct moved_stack {
	char *region; /* the guard's start: what munmap() takes */
	size_t region_size;
	char *stack_low; /* the stack proper, up to stack_top */
	char *stack_top; /* page-aligned; the copies start here */
	char **argv;	 /* the copies: argv[], environ[], then the text */
	char **envp;
	char *args_text, *env_text, *text_end;
};

/* ---- where the kernel put things */

/* Field `wanted` (1-based, as in proc(5)) of a stat line's fields. */
static bool stat_field(const char *after_name, int wanted, unsigned long *value)
{
	/* after_name starts at field 3, the state letter. */
	const char *p = after_name;
	for (int field = 3; field < wanted; field++) {
		p = strchr(p, ' ');
		if (p == NULL)
			return false;
		p++;
	}
	char *end;
	errno = 0;
	*value = strtoul(p, &end, 10);
	return errno == 0 && end != p && (*end == ' ' || *end == '\n');
}

static bool read_process_layout(struct process_layout *layout)
{
	char line[2048];
	FILE *file = fopen("/proc/self/stat", "re");

	if (file == NULL)
		return false;
	size_t len = fread(line, 1, sizeof line - 1, file);
	fclose(file);
	line[len] = '\0';
	/* The name may hold spaces and parentheses: it ends at the last ')'. */
	const char *name_end = strrchr(line, ')');
	if (name_end == NULL || name_end[1] != ' ')
		return false;
	const char *fields = name_end + 2;
	return stat_field(fields, 26, &layout->start_code) &&
	       stat_field(fields, 27, &layout->end_code) &&
	       stat_field(fields, 28, &layout->start_stack) &&
	       stat_field(fields, 45, &layout->start_data) &&
	       stat_field(fields, 46, &layout->end_data) &&
	       stat_field(fields, 47, &layout->start_brk) &&
	       stat_field(fields, 48, &layout->arg_start) &&
	       stat_field(fields, 49, &layout->arg_end) &&
	       stat_field(fields, 50, &layout->env_start) &&
	       stat_field(fields, 51, &layout->env_end) &&
	       layout->start_brk != 0;
}

/* The bounds of the mapping that holds `address`, from /proc/self/maps. */
static bool find_mapping(uintptr_t address, uintptr_t *low, uintptr_t *high)
{
	FILE *file = fopen("/proc/self/maps", "re");
	char *line = NULL;
	size_t size = 0;
	bool found = false;

	if (file == NULL)
		return false;
	while (!found && getline(&line, &size, file) > 0) {
		unsigned long start, end;
		if (sscanf(line, "%lx-%lx", &start, &end) == 2 &&
		    start <= address && address < end) {
			*low = start;
			*high = end;
			found = true;
		}
	}
	free(line);
	fclose(file);
	return found;
}

/* ---- the new region */

/* How many strings, and their bytes with each one's NUL. */
static size_t strings_size(char *const *list, size_t *count)
{
	size_t bytes = 0;

	*count = 0;
	for (; list != NULL && list[*count] != NULL; (*count)++)
		bytes += strlen(list[*count]) + 1;
	return bytes;
}

/* Copies the strings one after another from text; returns their end. */
static char *copy_strings(char *const *from, char **to, char *text)
{
	for (; from != NULL && *from != NULL; from++, to++) {
		size_t len = strlen(*from) + 1;
		*to = memcpy(text, *from, len);
		text += len;
	}
	*to = NULL;
	return text;
}

/*
 * Reserves the region whole as PROT_NONE, ending GAP_BELOW_HEAP pages
 * below the heap, then opens all but the guard. MAP_FIXED_NOREPLACE: an
 * address already in use is a refusal, never a mapping replaced; a kernel
 * before 4.17 takes the flag for a hint and maps elsewhere, also a refusal.
 * Only the opened part is charged against the commit limit.
 */
static bool map_region(const struct process_layout *layout, size_t copies_size,
		       struct moved_stack *moved)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t heap = layout->start_brk & ~(page - 1);
	size_t open_size =
		STACK_SIZE + ((copies_size + page - 1) & ~(page - 1));
	size_t region_size = GUARD_SIZE + open_size;

	if (heap < region_size + GAP_BELOW_HEAP * page)
		return false;
	char *wanted = (char *)(heap - GAP_BELOW_HEAP * page - region_size);
	char *region =
		mmap(wanted, region_size, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (region == MAP_FAILED)
		return false;
	if (region != wanted || mprotect(region + GUARD_SIZE, open_size,
					 PROT_READ | PROT_WRITE) != 0) {
		munmap(region, region_size);
		return false;
	}
	moved->region = region;
	moved->region_size = region_size;
	moved->stack_low = region + GUARD_SIZE;
	moved->stack_top = moved->stack_low + STACK_SIZE;
	return true;
}

/*
 * argv[] and environ[] at the stack's top, then the text: all the
 * arguments, then all the environment, each NUL-terminated and back to
 * back, the layout /proc/PID/cmdline and environ read.
 */
static void copy_command_line(int argc, char **argv, size_t env_count,
			      struct moved_stack *moved)
{
	moved->argv = (char **)moved->stack_top;
	moved->envp = moved->argv + argc + 1;
	moved->args_text = (char *)(moved->envp + env_count + 1);
	moved->env_text = copy_strings(argv, moved->argv, moved->args_text);
	moved->text_end = copy_strings(environ, moved->envp, moved->env_text);
}

/* ---- the kernel told */

/*
 * /proc/PID/cmdline and environ are read from the addresses the kernel
 * keeps, which in a forked process would point at nothing. PR_SET_MM_MAP
 * takes all of the layout at once, unchanged but for the strings, the
 * current brk and the stack (so /proc/PID/maps names the new one
 * [stack]). It needs CONFIG_CHECKPOINT_RESTORE; refused, ps shows a forked
 * process as [mmproxy], and that is all.
 */
static void tell_kernel(const struct process_layout *layout,
			const struct moved_stack *moved)
{
	struct prctl_mm_map map = {
		.start_code = layout->start_code,
		.end_code = layout->end_code,
		.start_data = layout->start_data,
		.end_data = layout->end_data,
		.start_brk = layout->start_brk,
		.brk = (uintptr_t)sbrk(0),
		.start_stack = (uintptr_t)moved->stack_top,
		.arg_start = (uintptr_t)moved->args_text,
		.arg_end = (uintptr_t)moved->env_text,
		.env_start = (uintptr_t)moved->env_text,
		.env_end = (uintptr_t)moved->text_end,
		.auxv = NULL,
		.auxv_size = 0,
		.exe_fd = (uint32_t)-1,
	};

	/* Best effort, see above: the move stands either way. */
	int ignored = prctl(PR_SET_MM, PR_SET_MM_MAP, (unsigned long)&map,
			    sizeof map, 0);
	(void)ignored;
}

/* Everything in glibc that pointed at the original strings. */
static void repoint_globals(const struct moved_stack *moved)
{
	const char *slash = strrchr(moved->argv[0], '/');

	environ = moved->envp;
	program_invocation_name = moved->argv[0];
	program_invocation_short_name =
		slash != NULL ? (char *)slash + 1 : moved->argv[0];
}

/*
 * All steps but the switch. The original stack is marked last of the
 * steps that can fail, so that a refusal before it leaves nothing changed
 * once the region is unmapped.
 */
static bool prepare(int argc, char **argv, struct moved_stack *moved)
{
	struct process_layout layout;
	uintptr_t old_low, old_high;
	size_t arg_count, env_count;
	char here;

	if (!STACK_MOVE_POSSIBLE || argc < 1 || !read_process_layout(&layout) ||
	    !find_mapping((uintptr_t)&here, &old_low, &old_high))
		return false;
	size_t text_size = strings_size(argv, &arg_count) +
			   strings_size(environ, &env_count);
	size_t copies_size =
		(arg_count + 1 + env_count + 1) * sizeof(char *) + text_size;
	if (arg_count != (size_t)argc ||
	    !map_region(&layout, copies_size, moved))
		return false;
	copy_command_line(argc, argv, env_count, moved);
	if (madvise((void *)old_low, old_high - old_low, MADV_DONTFORK) != 0) {
		munmap(moved->region, moved->region_size);
		return false;
	}
	repoint_globals(moved);
	tell_kernel(&layout, moved);
	return true;
}

/* ---- the switch */

/*
 * makecontext() passes int arguments only: the call waits here, written
 * once before the switch and read once after it.
 */
static struct {
	stack_move_main_fn *main_fn;
	int argc;
	char **argv;
} pending;

/* The first frame on the new stack. There is no stack to return to. */
__attribute__((noreturn)) static void run_pending(void)
{
	exit(pending.main_fn(pending.argc, pending.argv));
}

int stack_move_run(int argc, char **argv, stack_move_main_fn *main_fn)
{
	struct moved_stack moved;
	ucontext_t context;

	if (!prepare(argc, argv, &moved))
		return main_fn(argc, argv);
	pending.main_fn = main_fn;
	pending.argc = argc;
	pending.argv = moved.argv;
	/*
	 * Past the madvise() there is no way back: a forked process would
	 * lack the original stack. A failure here ends the process as a
	 * failed start would, before anything has been done.
	 */
	if (getcontext(&context) != 0)
		_exit(EXIT_FAILURE);
	context.uc_stack.ss_sp = moved.stack_low;
	context.uc_stack.ss_size = STACK_SIZE;
	context.uc_link = NULL;
	makecontext(&context, run_pending, 0);
	setcontext(&context);
	_exit(EXIT_FAILURE);
}
