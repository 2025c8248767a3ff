/*
 * sandbox: least privilege for mmproxy's processes, with libc only.
 *
 * Capabilities: a process keeps only the few it needs (CAP_NET_ADMIN for
 * IP_TRANSPARENT and SO_MARK, CAP_NET_BIND_SERVICE for a client's port
 * below 1024, CAP_BPF for the kernel relay), its bounding and ambient sets
 * follow, and no_new_privs is set. Started as root with a user to run as,
 * it becomes that user and keeps just those capabilities.
 *
 * System calls: each kind of process installs a seccomp filter that allows
 * the calls its job makes (see sandbox.c for the list and the reasons).
 * Filters only ever narrow: a forked process keeps its parent's and may add
 * its own, so the caller decides when a process has no further use for a
 * wider one (a connection process that will take no other connection).
 *
 * This module knows nothing of options, sockets or logging: the caller says
 * what to keep and reports what went wrong.
 */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stdbool.h>
#include <sys/types.h>

struct sandbox_filters;

/* Capabilities a process may keep, as a set of these bits. */
enum sandbox_capability {
	SANDBOX_CAP_NET_ADMIN = 1u << 0,
	SANDBOX_CAP_NET_BIND_SERVICE = 1u << 1,
	SANDBOX_CAP_BPF = 1u << 2,
};

/* The user to become (--user); name is for messages only. */
struct sandbox_user {
	const char *name;
	uid_t uid;
	gid_t gid;
};

/*
 * What the caller decided once, at start-up, and passes to every call.
 * With enabled false (--do-not-sandbox) every call but the user switch does
 * nothing and succeeds.
 */
struct sandbox_policy {
	bool enabled;
	bool switch_user;	  /* become user (--user was given) */
	struct sandbox_user user;
	unsigned keep_capabilities; /* enum sandbox_capability bits */
	bool allow_bpf;		    /* the kernel relay is in use: bpf() */
	struct sandbox_filters *filters; /* by sandbox_prepare_filters() */
};

/* The kinds of process, each with its own list of system calls. */
enum sandbox_kind {
	SANDBOX_LISTENER,   /* accepts and forks connection processes */
	SANDBOX_CONNECTION, /* reads a header, connects, relays; maybe again */
	SANDBOX_RELAY,	    /* relays one connection, then exits */
	SANDBOX_UDP,	    /* the long-lived datagram process */
	SANDBOX_CHECK,	    /* --check */
	SANDBOX_METRICS,    /* the --metrics endpoint: answers scrapers */
};

/*
 * NAME, looked up in /etc/passwd (mmproxy is static: no NSS modules), or a
 * decimal UID, whose group is its passwd entry's or, with none, the same
 * number. 0, or -1 with errno (ENOENT: no such user; EINVAL: bad text).
 */
int sandbox_find_user(const char *text, struct sandbox_user *user);

/*
 * The start-up step: clears the bounding set (when allowed to) and the
 * ambient set of all but keep_capabilities, switches user when asked
 * (supplementary groups cleared, then group, then user), keeps just those
 * capabilities in the permitted and effective sets, and sets no_new_privs.
 * 0, or -1 with errno and *failed naming the step that failed.
 */
int sandbox_drop_privileges(const struct sandbox_policy *policy,
			    const char **failed);

/*
 * For a process that will make no further spoofed connection: no
 * capability left (but CAP_BPF, when the kernel relay is in use).
 * 0, or -1 with errno.
 */
int sandbox_drop_all_capabilities(const struct sandbox_policy *policy);

/*
 * Builds every kind's filter once, on the heap, before any fork: a forked
 * process then installs its own without writing a page of memory (an idle
 * connection's process owns a page or two). 0, or -1 with errno.
 */
int sandbox_prepare_filters(struct sandbox_policy *policy);

/*
 * Installs kind's system call filter on top of any already installed.
 * Does nothing in a build without filters (see sandbox_has_filters()).
 * 0, or -1 with errno (EINVAL: sandbox_prepare_filters() was not called).
 */
int sandbox_install_filter(const struct sandbox_policy *policy,
			   enum sandbox_kind kind);

/*
 * True when this build has filters: not on an architecture other than
 * x86_64 and aarch64, nor in a sanitizer build.
 */
bool sandbox_has_filters(void);

#endif
