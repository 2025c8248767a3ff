/*
 * sandboxed: run mmproxy's sandbox code (sandbox.c, the very file mmproxy
 * links) for one kind of process, then try what that process must not do,
 * and say what happened. For tests/050-sandbox.bats.
 *
 * Usage: sandboxed [--do-not-sandbox] [--user USER] [--bpf] [--try-bpf] KIND
 * KIND: listener, connection, relay, udp, check or metrics.
 *
 * A child process drops its privileges as mmproxy does at start-up
 * (keeping CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, switching to USER when
 * given), installs KIND's filter, prints its /proc/self/status lines (read
 * through a descriptor opened before the filter), then tries to open a
 * file, to make an IPv4 socket and to run /bin/true (with --try-bpf, to
 * make a BPF map instead: the kernel relay's call). One line each:
 *   status: Uid=... CapEff=... CapPrm=... CapBnd=... NoNewPrivs=... Seccomp=...
 *   open: allowed | open: refused (REASON)   (to read, then "open to write")
 *   socket: allowed | socket: refused (REASON)
 *   execve: allowed | execve: refused (REASON)     (or bpf: ...)
 * With --do-not-sandbox the policy is mmproxy's under that option.
 * Exit status: 0 when every line was printed; 1 when a step failed; 2 bad
 * usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"
#include "toolkit.h"

const char toolkit_program_name[] = "sandboxed";
const char toolkit_synopsis[] =
	"usage: sandboxed [--do-not-sandbox] [--user USER] [--bpf] [--try-bpf]\n"
	"                 listener|connection|relay|udp|check|metrics\n";

static const char *const kind_names[] = {
	[SANDBOX_LISTENER] = "listener", [SANDBOX_CONNECTION] = "connection",
	[SANDBOX_RELAY] = "relay",	 [SANDBOX_UDP] = "udp",
	[SANDBOX_CHECK] = "check",	 [SANDBOX_METRICS] = "metrics",
};

/* stdio would size its buffer with fstat(), which most filters refuse. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line ||
	    write(STDOUT_FILENO, line, (size_t)n) != n)
		_exit(1);
}

static void say_outcome(const char *what, int result)
{
	if (result >= 0)
		say("%s: allowed\n", what);
	else
		say("%s: refused (%s)\n", what, strerror(errno));
}

/* "Name:\tvalue" lines of status, on one line as Name=value. */
static void say_status(int status_fd)
{
	static const char *const wanted[] = {"Uid", "CapEff", "CapPrm",
					     "CapBnd", "NoNewPrivs", "Seccomp"};
	char text[4096], out[512] = "status:";
	/* One read() from the start: pread() and lseek() are not allowed. */
	ssize_t n = read(status_fd, text, sizeof text - 1);

	if (n < 0)
		toolkit_die(1, "/proc/self/status: %s", strerror(errno));
	text[n] = '\0';
	for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
		size_t name_len = strlen(wanted[i]);
		for (char *line = text; line != NULL && *line != '\0';) {
			char *end = strchr(line, '\n');
			if (strncmp(line, wanted[i], name_len) == 0 &&
			    line[name_len] == ':') {
				char *value = line + name_len + 1;
				value += strspn(value, "\t ");
				size_t len = end ? (size_t)(end - value)
						 : strlen(value);
				/* Uid: real, effective, saved, fs: the first. */
				len = strcspn(value, "\t\n") < len
					      ? strcspn(value, "\t\n")
					      : len;
				size_t used = strlen(out);
				snprintf(out + used, sizeof out - used,
					 " %s=%.*s", wanted[i], (int)len,
					 value);
			}
			line = end ? end + 1 : NULL;
		}
	}
	say("%s\n", out);
}

/* The kernel relay's first call: a small array map. */
static int try_bpf(void)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof attr);
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 4;
	attr.max_entries = 1;
	return (int)syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
}

__attribute__((noreturn)) static void
run_sandboxed(struct sandbox_policy *p, enum sandbox_kind kind, bool bpf)
{
	const char *failed;
	int status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

	if (status_fd < 0)
		toolkit_die(1, "/proc/self/status: %s", strerror(errno));
	if (sandbox_drop_privileges(p, &failed) != 0)
		toolkit_die(1, "drop privileges: %s: %s", failed,
			    strerror(errno));
	if (sandbox_prepare_filters(p) != 0 ||
	    sandbox_install_filter(p, kind) != 0)
		toolkit_die(1, "%s filter: %s", kind_names[kind],
			    strerror(errno));
	say_status(status_fd);
	int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
	say_outcome("open", fd);
	/* Anyone may write to /dev/null: only the filter can refuse it. */
	int write_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	say_outcome("open to write", write_fd);
	int socket_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	say_outcome("socket", socket_fd);
	if (bpf) {
		say_outcome("bpf", try_bpf());
		_exit(3);
	}
	char *const argv[] = {"true", NULL};
	char *const envp[] = {NULL};
	execve("/bin/true", argv, envp);
	say_outcome("execve", -1);
	_exit(3);
}

/* The child's end tells how execve() went, when the child could not. */
static int report_end(pid_t child, const char *last_try)
{
	int status;

	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			toolkit_die(1, "waitpid: %s", strerror(errno));
	if (WIFSIGNALED(status)) {
		const char *name = sigabbrev_np(WTERMSIG(status));
		say("%s: refused (killed by SIG%s)\n", last_try,
		    name ? name : "?");
		return 0;
	}
	if (WEXITSTATUS(status) == 0) {
		say("%s: allowed\n", last_try);
		return 0;
	}
	return WEXITSTATUS(status) == 3 ? 0 : 1;
}

static enum sandbox_kind parse_kind(const char *text)
{
	for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
		if (strcmp(text, kind_names[i]) == 0)
			return (enum sandbox_kind)i;
	toolkit_usage_error("unknown kind: %s", text);
}

int main(int argc, char **argv)
{
	struct sandbox_policy policy = {
		.enabled = true,
		.keep_capabilities =
			SANDBOX_CAP_NET_ADMIN | SANDBOX_CAP_NET_BIND_SERVICE,
	};
	bool bpf = false;
	int i;

	for (i = 1; i < argc - 1; i++) {
		if (strcmp(argv[i], "--do-not-sandbox") == 0) {
			policy.enabled = false;
		} else if (strcmp(argv[i], "--bpf") == 0) {
			policy.allow_bpf = true;
			policy.keep_capabilities |= SANDBOX_CAP_BPF;
		} else if (strcmp(argv[i], "--try-bpf") == 0) {
			bpf = true;
		} else if (strcmp(argv[i], "--user") == 0 && i + 2 < argc) {
			if (sandbox_find_user(argv[++i], &policy.user) != 0)
				toolkit_usage_error("--user %s: %s", argv[i],
						    errno == ENOENT
							    ? "no such user"
							    : strerror(errno));
			policy.switch_user = true;
		} else {
			toolkit_usage_error("unknown option: %s", argv[i]);
		}
	}
	if (i != argc - 1)
		toolkit_usage();
	enum sandbox_kind kind = parse_kind(argv[i]);
	pid_t child = fork();
	if (child < 0)
		toolkit_die(1, "fork: %s", strerror(errno));
	if (child == 0)
		run_sandboxed(&policy, kind, bpf);
	return report_end(child, bpf ? "bpf" : "execve");
}
