/*
 * sandbox: capabilities, the user switch and the system call filters of
 * mmproxy's processes, with libc and the kernel's headers only (no libcap,
 * no libseccomp).
 *
 * Holds: the capability sets (capget/capset through syscall(), prctl for
 * the bounding and ambient sets, keepcaps and no_new_privs), the --user
 * lookup and switch, and one table of the system calls each kind of
 * process may make, from which a classic BPF program per kind is built.
 * Does not hold: when a process narrows (the caller knows whether it will
 * take another connection), option parsing, or any message: failures come
 * back as errno and the name of the step.
 *
 * What a refused call gets. Anything not in the table fails with EPERM:
 * glibc sometimes makes a call we did not write (it opens the time zone
 * file on the first syslog line, sizes stdout's buffer with fstat, forks
 * with clone), and a surprise of that kind must cost one failed step that
 * the code already handles, never a killed listener (cloudflare mmproxy's
 * filter killed its processes under a newer glibc, so its users turned it
 * off). A short list of calls that no code of ours or of glibc's makes here
 * and that an attacker running code in the process would want first (exec,
 * ptrace, bpf, namespaces, modules, io_uring, which bypasses seccomp) kills
 * the process instead: it ends the attack at once, and the kernel logs it.
 * A call from another architecture's table (i386 or x32 on x86_64) kills
 * too: its numbers mean other calls.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef CAP_BPF
#define CAP_BPF 39
#endif

/* ---- capabilities -------------------------------------------------------- */

typedef uint64_t capability_mask;

static capability_mask capability_bit(unsigned capability)
{
	return (capability_mask)1 << capability;
}

static capability_mask mask_of(unsigned keep)
{
	capability_mask mask = 0;

	if (keep & SANDBOX_CAP_NET_ADMIN)
		mask |= capability_bit(CAP_NET_ADMIN);
	if (keep & SANDBOX_CAP_NET_BIND_SERVICE)
		mask |= capability_bit(CAP_NET_BIND_SERVICE);
	if (keep & SANDBOX_CAP_BPF)
		mask |= capability_bit(CAP_BPF);
	return mask;
}

struct capability_sets {
	capability_mask effective;
	capability_mask permitted;
	capability_mask inheritable;
};

/* Version 3 of the interface: two 32-bit words per set. */
static int capability_get(struct capability_sets *sets)
{
	struct __user_cap_header_struct header = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &header, data) != 0)
		return -1;
	sets->effective = data[0].effective |
			  (capability_mask)data[1].effective << 32;
	sets->permitted = data[0].permitted |
			  (capability_mask)data[1].permitted << 32;
	sets->inheritable = data[0].inheritable |
			    (capability_mask)data[1].inheritable << 32;
	return 0;
}

static int capability_set(const struct capability_sets *sets)
{
	struct __user_cap_header_struct header = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	for (unsigned word = 0; word < _LINUX_CAPABILITY_U32S_3; word++) {
		unsigned shift = 32 * word;
		data[word].effective = (uint32_t)(sets->effective >> shift);
		data[word].permitted = (uint32_t)(sets->permitted >> shift);
		data[word].inheritable =
			(uint32_t)(sets->inheritable >> shift);
	}
	return (int)syscall(SYS_capset, &header, data);
}

/*
 * Dropping from the bounding set needs CAP_SETPCAP. Without it (an
 * unprivileged start, a unit that already set CapabilityBoundingSet=) the
 * set stays as given: it only limits what an execve() could gain, and
 * no_new_privs and the filters' refusal of execve() already rule that out.
 */
static int narrow_bounding_set(capability_mask keep)
{
	struct capability_sets now;

	if (capability_get(&now) != 0)
		return -1;
	if (!(now.effective & capability_bit(CAP_SETPCAP)))
		return 0;
	for (unsigned cap = 0; cap < 64; cap++) {
		int present = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0);
		if (present < 0 && errno == EINVAL)
			return 0; /* past the kernel's last capability */
		if (present < 0)
			return -1;
		if (present == 0 || (keep & capability_bit(cap)))
			continue;
		if (prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) != 0)
			return -1;
	}
	return 0;
}

/* Kernels before 4.3 have no ambient set, hence nothing to clear. */
static int clear_ambient_set(void)
{
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 &&
	    errno != EINVAL)
		return -1;
	return 0;
}

/* keep, of what the process holds, in the permitted and effective sets. */
static int keep_only(capability_mask keep)
{
	struct capability_sets sets;

	if (capability_get(&sets) != 0)
		return -1;
	sets.permitted &= keep;
	sets.effective = sets.permitted;
	sets.inheritable = 0; /* which also empties the ambient set */
	return capability_set(&sets);
}

/* ---- the user ------------------------------------------------------------ */

static bool parse_id(const char *text, unsigned long *id)
{
	char *end;

	if (text[0] < '0' || text[0] > '9')
		return false;
	errno = 0;
	*id = strtoul(text, &end, 10);
	/* (uid_t)-1 means "unchanged" to setresuid(): never a user. */
	return errno == 0 && *end == '\0' && *id < (uid_t)-1;
}

/* The passwd entry whose name is name (or, name NULL, whose uid is uid). */
static int find_passwd_entry(const char *name, uid_t uid,
			     struct sandbox_user *user)
{
	FILE *file = fopen("/etc/passwd", "re");
	struct passwd entry, *found = NULL;
	char text[1024];

	if (file == NULL)
		return -1;
	while (fgetpwent_r(file, &entry, text, sizeof text, &found) == 0) {
		if (name != NULL ? strcmp(entry.pw_name, name) == 0
				 : entry.pw_uid == uid) {
			user->uid = entry.pw_uid;
			user->gid = entry.pw_gid;
			fclose(file);
			return 0;
		}
	}
	fclose(file);
	errno = ENOENT;
	return -1;
}

int sandbox_find_user(const char *text, struct sandbox_user *user)
{
	unsigned long id;

	user->name = text;
	if (parse_id(text, &id)) {
		if (find_passwd_entry(NULL, (uid_t)id, user) == 0)
			return 0;
		user->uid = (uid_t)id;
		user->gid = (gid_t)id;
		return 0;
	}
	if (text[0] == '\0' || (text[0] >= '0' && text[0] <= '9')) {
		errno = EINVAL;
		return -1;
	}
	return find_passwd_entry(text, 0, user);
}

static bool is_already(const struct sandbox_user *user)
{
	return getuid() == user->uid && geteuid() == user->uid &&
	       getgid() == user->gid && getegid() == user->gid;
}

/*
 * Groups first, then the group, then the user: each later step takes away
 * the right to do the earlier ones. KEEPCAPS keeps the permitted set
 * across the change of user (the effective set empties; keep_only raises
 * the kept ones again).
 */
static int switch_user(const struct sandbox_user *user, const char **failed)
{
	if (is_already(user))
		return 0;
	*failed = "prctl(PR_SET_KEEPCAPS)";
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
		return -1;
	*failed = "setgroups";
	if (setgroups(0, NULL) != 0)
		return -1;
	*failed = "setresgid";
	if (setresgid(user->gid, user->gid, user->gid) != 0)
		return -1;
	*failed = "setresuid";
	if (setresuid(user->uid, user->uid, user->uid) != 0)
		return -1;
	*failed = "prctl(PR_SET_KEEPCAPS)";
	return prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
}

/* After the switch and the narrowing, root must be out of reach. */
static int check_root_is_gone(const struct sandbox_user *user)
{
	if (user->uid == 0 || setuid(0) != 0)
		return 0;
	errno = EPERM;
	return -1;
}

/*
 * With --do-not-sandbox and --user, the user still changes and keeps only
 * the listed capabilities: a user that could take back every capability,
 * CAP_SETUID included, would be root by another name.
 */
int sandbox_drop_privileges(const struct sandbox_policy *policy,
			    const char **failed)
{
	capability_mask keep = mask_of(policy->keep_capabilities);

	*failed = "bounding set";
	if (policy->enabled && narrow_bounding_set(keep) != 0)
		return -1;
	*failed = "ambient set";
	if (policy->enabled && clear_ambient_set() != 0)
		return -1;
	if (policy->switch_user && switch_user(&policy->user, failed) != 0)
		return -1;
	*failed = "capset";
	if ((policy->enabled || policy->switch_user) && keep_only(keep) != 0)
		return -1;
	*failed = "setuid(0) still works";
	if (policy->switch_user && check_root_is_gone(&policy->user) != 0)
		return -1;
	*failed = "prctl(PR_SET_NO_NEW_PRIVS)";
	if (policy->enabled && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return 0;
}

/* The kernel relay's sockmap still needs CAP_BPF once connected. */
int sandbox_drop_all_capabilities(const struct sandbox_policy *policy)
{
	if (!policy->enabled)
		return 0;
	return keep_only(policy->allow_bpf ? mask_of(SANDBOX_CAP_BPF) : 0);
}

/* ---- system call filters ------------------------------------------------- */

/*
 * A sanitizer's runtime makes calls of its own (LeakSanitizer traces the
 * process at exit with ptrace), so sanitizer builds, which are for tests,
 * have no filter, as an unknown architecture has none.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZED 1
#endif

#if defined(SANDBOX_SANITIZED)
/* no filters */
#elif defined(__x86_64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_X86_64
/* x32 calls share the architecture number and set this bit. */
#define SANDBOX_FOREIGN_NR_BIT 0x40000000u
#elif defined(__aarch64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

bool sandbox_has_filters(void)
{
#ifdef SANDBOX_AUDIT_ARCH
	return true;
#else
	return false;
#endif
}

#ifdef SANDBOX_AUDIT_ARCH

#define KIND(kind) (1u << (kind))
/*
 * Filters stack: a forked process keeps its parent's filter, and a process
 * that narrows keeps its wider one. So a call a relay makes must also pass
 * the connection process's filter, and a connection process's call must
 * pass the filter of the listener that forked it.
 */
#define IN_LISTENER KIND(SANDBOX_LISTENER)
#define IN_CONNECTION (KIND(SANDBOX_CONNECTION) | IN_LISTENER)
#define IN_RELAY (KIND(SANDBOX_RELAY) | IN_CONNECTION)
#define IN_UDP KIND(SANDBOX_UDP)
#define IN_CHECK KIND(SANDBOX_CHECK)
#define IN_METRICS KIND(SANDBOX_METRICS)
#define EVERYWHERE (IN_RELAY | IN_UDP | IN_CHECK | IN_METRICS)

enum rule_test {
	ANY_ARGUMENTS,
	ARGUMENT_IS,	/* the argument's low 32 bits equal value */
	ARGUMENT_LACKS, /* none of value's bits in the argument's low 32 bits */
};

struct syscall_rule {
	int nr;
	unsigned kinds;
	enum rule_test test;
	unsigned argument;
	uint32_t value;
	uint32_t action;
	bool needs_bpf; /* only when the kernel relay is in use */
};

#define ALLOW(name, kinds)                                                     \
	{__NR_##name, kinds, ANY_ARGUMENTS, 0, 0, SECCOMP_RET_ALLOW, false}
#define ALLOW_IF_ARGUMENT_IS(name, kinds, argument, value)                     \
	{__NR_##name, kinds, ARGUMENT_IS, argument, value, SECCOMP_RET_ALLOW,  \
	 false}
#define ALLOW_IF_ARGUMENT_LACKS(name, kinds, argument, bits)                   \
	{__NR_##name, kinds, ARGUMENT_LACKS, argument, bits,                   \
	 SECCOMP_RET_ALLOW, false}
#define FAIL_WITH(name, error)                                                 \
	{__NR_##name, EVERYWHERE, ANY_ARGUMENTS, 0, 0,                        \
	 SECCOMP_RET_ERRNO | (error), false}
#define KILL(name)                                                             \
	{__NR_##name, EVERYWHERE, ANY_ARGUMENTS, 0, 0,                        \
	 SECCOMP_RET_KILL_PROCESS, false}

/* clone() may make a process, never a thread or a namespace. */
#define CLONE_REFUSED                                                          \
	(CLONE_VM | CLONE_THREAD | CLONE_NEWNS | CLONE_NEWCGROUP |            \
	 CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |          \
	 CLONE_NEWNET)

/*
 * Every call a kind of process may make, and why. The filter tests them in
 * this order, the relay's busiest first. Where x86_64 and aarch64 differ
 * (aarch64 has only the newer call: ppoll, epoll_pwait, openat), both are
 * listed under #ifdef. Calls whose arguments are tested cost a filter run
 * each time; the others the kernel learns to allow without running it.
 */
static const struct syscall_rule syscall_rules[] = {
	/* The relay: poll, then read/send or splice through a pipe. */
#ifdef __NR_poll
	ALLOW(poll, IN_RELAY | IN_CHECK | IN_METRICS),
#endif
	/* glibc's poll() where no poll */
	ALLOW(ppoll, IN_RELAY | IN_CHECK | IN_METRICS),
	ALLOW(read, EVERYWHERE),	   /* sockets and signalfds */
	ALLOW(sendto, EVERYWHERE),	   /* send(), syslog(), netlink */
	ALLOW(splice, IN_RELAY),	   /* bulk bytes, socket to pipe */
	ALLOW(pipe2, IN_RELAY),		   /* the pipe for splice */
	ALLOW(shutdown, IN_RELAY),	   /* passing on a half-close */
	/* Passing on a reset: SO_LINGER 0, then close(). Only that option. */
	ALLOW_IF_ARGUMENT_IS(setsockopt, IN_RELAY | IN_METRICS, 2, SO_LINGER),
	ALLOW(getsockopt, EVERYWHERE),	   /* SO_ERROR after POLLERR */
	ALLOW(close, EVERYWHERE),
	ALLOW(write, EVERYWHERE), /* log lines on stderr, --check's stdout */
	ALLOW(getpid, EVERYWHERE),	 /* the log line's [pid] */
	ALLOW(clock_gettime, EVERYWHERE), /* when the vDSO cannot answer */
	ALLOW(gettimeofday, EVERYWHERE),
	ALLOW(exit_group, EVERYWHERE),
	ALLOW(exit, EVERYWHERE),
	ALLOW(rt_sigreturn, EVERYWHERE),
	ALLOW(restart_syscall, EVERYWHERE), /* a poll() resumed after SIGSTOP */
	/* malloc: syslog() builds its line in a memory stream, stdio a buffer. */
	ALLOW(brk, EVERYWHERE),
	ALLOW_IF_ARGUMENT_LACKS(mmap, EVERYWHERE, 2, PROT_EXEC),
	ALLOW(munmap, EVERYWHERE),
	/* The kernel relay's sockmap (only when it is in use). */
	{__NR_bpf, IN_RELAY, ANY_ARGUMENTS, 0, 0, SECCOMP_RET_ALLOW, true},

	/* A connection: the header, then the spoofed connection. */
	ALLOW(recvfrom, IN_CONNECTION | IN_UDP | IN_CHECK), /* MSG_PEEK */
	ALLOW_IF_ARGUMENT_IS(socket, IN_CONNECTION | IN_UDP | IN_CHECK, 0,
			     AF_INET),
	ALLOW_IF_ARGUMENT_IS(socket, IN_CONNECTION | IN_UDP | IN_CHECK, 0,
			     AF_INET6),
	ALLOW(setsockopt, IN_CONNECTION | IN_UDP | IN_CHECK), /* IP_TRANSPARENT */
	ALLOW(bind, IN_CONNECTION | IN_UDP | IN_CHECK), /* the client's address */
	ALLOW(connect, IN_CONNECTION | IN_UDP | IN_CHECK),
	ALLOW(getsockname, IN_CONNECTION | IN_UDP | IN_CHECK),
	ALLOW(getpeername, IN_CONNECTION | IN_UDP | IN_CHECK),
	ALLOW(fcntl, IN_CONNECTION | IN_UDP | IN_CHECK), /* O_NONBLOCK */
	ALLOW(rt_sigprocmask, IN_CONNECTION | IN_UDP),
	/* A pooled process: accepts, waits, may be told to stop. */
	ALLOW(accept4, IN_CONNECTION),
	ALLOW(rt_sigaction, IN_CONNECTION), /* the stop signal's handler */
	ALLOW_IF_ARGUMENT_IS(prctl, IN_CONNECTION, 0, PR_SET_PDEATHSIG),
	ALLOW(getppid, IN_CONNECTION),	  /* is the listener still there? */
	ALLOW(nanosleep, IN_CONNECTION),	  /* a pause after EMFILE */
	ALLOW(clock_nanosleep, IN_CONNECTION),
	ALLOW(madvise, IN_CONNECTION),	  /* stack pages given back */
	/* The stop signal's handler puts a pipe in the listening socket's place. */
#ifdef __NR_dup2
	ALLOW(dup2, IN_CONNECTION),
#endif
	ALLOW(dup3, IN_CONNECTION), /* glibc's dup2() where no dup2 */
	/* Narrowing further: a filter on top, capabilities dropped. */
	ALLOW_IF_ARGUMENT_IS(prctl, IN_CONNECTION, 0, PR_SET_SECCOMP),
	ALLOW_IF_ARGUMENT_IS(prctl, IN_CONNECTION, 0, PR_SET_NO_NEW_PRIVS),
	ALLOW(capget, IN_CONNECTION | IN_CHECK),
	ALLOW(capset, IN_CONNECTION | IN_CHECK),

	/* The listener: fork, reap, stop the other accept processes. */
	ALLOW_IF_ARGUMENT_LACKS(clone, IN_LISTENER, 0, CLONE_REFUSED),
	ALLOW(set_robust_list, IN_LISTENER), /* glibc's fork, in the child */
	ALLOW(wait4, IN_LISTENER),
	ALLOW(kill, IN_LISTENER),
	/*
	 * SIGHUP's reload reads the allowed-subnets file again (reload.c,
	 * subnets_load: open, read, close), in the listener and in the UDP
	 * process. Read-only: no flag that writes, creates, truncates or
	 * appends. A pool's connection processes narrow to a filter without
	 * it: they never reload.
	 */
	ALLOW_IF_ARGUMENT_LACKS(openat, IN_LISTENER | IN_UDP, 2,
				O_WRONLY | O_RDWR | O_CREAT | O_TRUNC |
					O_APPEND),
#ifdef __NR_open
	ALLOW_IF_ARGUMENT_LACKS(open, IN_LISTENER | IN_UDP, 1,
				O_WRONLY | O_RDWR | O_CREAT | O_TRUNC |
					O_APPEND),
#endif
	/* syslog() reconnecting after the log daemon restarted. */
	ALLOW_IF_ARGUMENT_IS(socket, IN_LISTENER, 0, AF_UNIX),

	/* UDP: epoll and batches of datagrams. */
#ifdef __NR_epoll_wait
	ALLOW(epoll_wait, IN_UDP),
#endif
	ALLOW(epoll_pwait, IN_UDP), /* glibc's epoll_wait() where none */
	ALLOW(epoll_ctl, IN_UDP),   /* a flow's socket in, and out */
	ALLOW(recvmmsg, IN_UDP),
	ALLOW(sendmmsg, IN_UDP),
	ALLOW(recvmsg, IN_UDP),
	ALLOW(sendmsg, IN_UDP),

	/*
	 * The --metrics endpoint: accepts scrapers, reads a request, sends
	 * the counters (recv and send are recvfrom and sendto), resets a
	 * scraper past its deadline (SO_LINGER above). No socket of its
	 * own, no bind, no connect: it can spoof nothing.
	 */
	ALLOW(accept4, IN_METRICS),
	ALLOW(recvfrom, IN_METRICS),

	/* --check: rtnetlink questions, and stdout's buffer. */
	ALLOW_IF_ARGUMENT_IS(socket, IN_CHECK, 0, AF_NETLINK),
#ifdef __NR_newfstatat
	ALLOW(newfstatat, IN_CHECK),
#endif
	ALLOW(fstat, IN_CHECK),

	/* glibc falls back to clone() only when clone3() is unknown. */
	FAIL_WITH(clone3, ENOSYS),

	/* Nothing here makes these; code an attacker runs would. */
	KILL(execve),
	KILL(execveat),
	KILL(ptrace),
	KILL(process_vm_readv),
	KILL(process_vm_writev),
	KILL(bpf),
	KILL(perf_event_open),
	KILL(userfaultfd),
	KILL(unshare),
	KILL(setns),
	KILL(mount),
	KILL(umount2),
	KILL(pivot_root),
	KILL(chroot),
	KILL(init_module),
	KILL(finit_module),
	KILL(delete_module),
	KILL(kexec_load),
	KILL(keyctl),
	KILL(add_key),
	KILL(request_key),
	KILL(io_uring_setup),
	KILL(open_by_handle_at),
};

#define RULE_COUNT (sizeof syscall_rules / sizeof syscall_rules[0])
/* The architecture test, one block of at most 5 per rule, the default. */
#define FILTER_ROOM (8 + 5 * RULE_COUNT + 1)
#define KIND_COUNT (SANDBOX_METRICS + 1)

struct sandbox_filters {
	struct sock_filter program[KIND_COUNT][FILTER_ROOM];
	unsigned short length[KIND_COUNT];
};

/* ---- building a filter: classic BPF over struct seccomp_data ------------- */

/* Compound literals, so that each instruction can be passed to emit(). */
#define LOAD_FIELD(offset)                                                     \
	((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (offset)))
#define JUMP_IF_EQUAL(value, if_true, if_false)                                \
	((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (value),      \
				      (if_true), (if_false)))
#define JUMP_IF_ANY_BIT(bits, if_true, if_false)                               \
	((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (bits),      \
				      (if_true), (if_false)))
#define RETURN(action) ((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (action)))

#define NR_OFFSET offsetof(struct seccomp_data, nr)
#define ARCH_OFFSET offsetof(struct seccomp_data, arch)
/*
 * The low 32 bits of an argument, on these little-endian machines. The
 * arguments tested are ints (families, prctl options), whose high bits the
 * kernel ignores, and flag words whose tested bits are all low.
 */
#define ARGUMENT_LOW_OFFSET(n)                                                 \
	((uint32_t)(offsetof(struct seccomp_data, args) +                     \
		    sizeof(uint64_t) * (n)))

struct filter_builder {
	struct sock_filter *program;
	unsigned short length;
};

static void emit(struct filter_builder *b, struct sock_filter instruction)
{
	b->program[b->length++] = instruction;
}

/* The accumulator holds the call's number before and after each block. */
static void emit_rule(struct filter_builder *b, const struct syscall_rule *r)
{
	uint32_t nr = (uint32_t)r->nr;

	if (r->test == ANY_ARGUMENTS) {
		emit(b, JUMP_IF_EQUAL(nr, 0, 1));
		emit(b, RETURN(r->action));
		return;
	}
	/* Not this call: past the block. The test fails: reload the number. */
	emit(b, JUMP_IF_EQUAL(nr, 0, 4));
	emit(b, LOAD_FIELD(ARGUMENT_LOW_OFFSET(r->argument)));
	if (r->test == ARGUMENT_IS)
		emit(b, JUMP_IF_EQUAL(r->value, 0, 1));
	else
		emit(b, JUMP_IF_ANY_BIT(r->value, 1, 0));
	emit(b, RETURN(r->action));
	emit(b, LOAD_FIELD(NR_OFFSET));
}

static void build_filter(struct filter_builder *b, enum sandbox_kind kind,
			 bool allow_bpf)
{
	b->length = 0;
	emit(b, LOAD_FIELD(ARCH_OFFSET));
	emit(b, JUMP_IF_EQUAL(SANDBOX_AUDIT_ARCH, 1, 0));
	emit(b, RETURN(SECCOMP_RET_KILL_PROCESS));
	emit(b, LOAD_FIELD(NR_OFFSET));
#ifdef SANDBOX_FOREIGN_NR_BIT
	emit(b, JUMP_IF_ANY_BIT(SANDBOX_FOREIGN_NR_BIT, 0, 1));
	emit(b, RETURN(SECCOMP_RET_KILL_PROCESS));
#endif
	for (size_t i = 0; i < RULE_COUNT; i++) {
		const struct syscall_rule *r = &syscall_rules[i];
		if ((r->kinds & KIND(kind)) && (!r->needs_bpf || allow_bpf))
			emit_rule(b, r);
	}
	emit(b, RETURN(SECCOMP_RET_ERRNO | EPERM));
}

static struct sandbox_filters *build_filters(bool allow_bpf)
{
	struct sandbox_filters *filters = calloc(1, sizeof *filters);

	if (filters == NULL)
		return NULL;
	for (unsigned kind = 0; kind < KIND_COUNT; kind++) {
		struct filter_builder b = {.program = filters->program[kind]};
		build_filter(&b, (enum sandbox_kind)kind, allow_bpf);
		filters->length[kind] = b.length;
	}
	return filters;
}

/*
 * prctl(), not seccomp(): systemd's @system-service set, which the shipped
 * units allow, has prctl and lacks seccomp.
 */
static int install(struct sandbox_filters *filters, enum sandbox_kind kind)
{
	struct sock_fprog program = {
		.len = filters->length[kind],
		.filter = filters->program[kind],
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0);
}

#else /* no filters in this build */

struct sandbox_filters {
	char none;
};

static struct sandbox_filters *build_filters(bool allow_bpf)
{
	(void)allow_bpf;
	errno = ENOSYS;
	return NULL;
}

static int install(struct sandbox_filters *filters, enum sandbox_kind kind)
{
	(void)filters;
	(void)kind;
	errno = ENOSYS;
	return -1;
}

#endif

/*
 * The time zone is read here, before any filter: the first syslog() line
 * would open /etc/localtime, and a later tzset() under a filter would find
 * it refused and fall back to UTC.
 */
int sandbox_prepare_filters(struct sandbox_policy *policy)
{
	tzset();
	policy->filters = NULL;
	if (!policy->enabled || !sandbox_has_filters())
		return 0;
	policy->filters = build_filters(policy->allow_bpf);
	return policy->filters != NULL ? 0 : -1;
}

int sandbox_install_filter(const struct sandbox_policy *policy,
			   enum sandbox_kind kind)
{
	if (!policy->enabled || !sandbox_has_filters())
		return 0;
	if (policy->filters == NULL) {
		errno = EINVAL;
		return -1;
	}
	return install(policy->filters, kind);
}
