/*
 * check: --check and the start-up routing warnings (see check.h).
 *
 * The file follows a check's order: reporting a verdict and a fix; the
 * rule, the route and the kernel's verdict for a reply; the plain and the
 * spoofed probe connection; then the whole run. The kernel is asked
 * through netlink.c; the probe opens its socket through spoof.c like a
 * real connection.
 */
#include "check.h"

#include <errno.h>
#include <linux/rtnetlink.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "netaddr.h"
#include "netlink.h"
#include "sandbox.h"
#include "spoof.h"

/*
 * Spoofing works only if the application's replies to a client's address
 * come back to loopback; when they do not, connections just hang. --check
 * asks the kernel, through rtnetlink, what it would do with such a reply,
 * looks for the rule and the route the README sets up, and makes one plain
 * and one spoofed connection to each target, so that a user reads the fix
 * instead of debugging a timeout. A long-lived mode runs the routing part
 * at start-up and warns; it makes no connection then, because the
 * application may start after us and would log a probe from a
 * documentation address at every restart.
 */

struct check_tally {
	bool as_warnings; /* start-up: only failures, as log warnings */
	unsigned passed;
	unsigned failed;
};

/* A verdict: on stdout for --check; a failure as a warning at start-up. */
__attribute__((format(printf, 3, 4))) static void
check_report(struct check_tally *run, bool ok, const char *fmt, ...)
{
	va_list ap;

	if (ok)
		run->passed++;
	else
		run->failed++;
	va_start(ap, fmt);
	if (!run->as_warnings) {
		printf("%s ", ok ? "[ok]  " : "[fail]");
		vprintf(fmt, ap);
		putchar('\n');
	} else if (!ok) {
		log_vmsg(LOG_WARNING, "spoofing will not work: ", fmt, ap);
	}
	va_end(ap);
}

/*
 * A command that repairs the failure reported just before; label is "fix",
 * or "or"/"and" for an alternative.
 */
__attribute__((format(printf, 3, 4))) static void
check_fix(const struct check_tally *run, const char *label, const char *fmt, ...)
{
	char prefix[32];
	va_list ap;

	va_start(ap, fmt);
	if (run->as_warnings) {
		snprintf(prefix, sizeof prefix, "  %s: ", label);
		log_vmsg(LOG_WARNING, prefix, fmt, ap);
	} else {
		printf("%10s: ", label);
		vprintf(fmt, ap);
		putchar('\n');
	}
	va_end(ap);
}

static bool is_delivered_to_loopback(const struct route_answer *answer)
{
	/* From the local table it would mean the address is our own. */
	return answer->answered && answer->type == RTN_LOCAL &&
	       answer->table != RT_TABLE_LOCAL;
}

/* ---- the checks, one line each */

/* How a rule's source prefix is written in the README: all of 127/8. */
static void reply_rule_source(const struct sockaddr_storage *target, char *out,
			      size_t size)
{
	char host[INET6_ADDRSTRLEN];
	size_t len;
	const uint8_t *bytes = netaddr_bytes(target, &len);

	if (len == 4 && bytes[0] == 127)
		snprintf(out, size, "127.0.0.1/8");
	else
		snprintf(out, size, "%s/%zu",
			 netaddr_format_host(target, host, sizeof host), len * 8);
}

static const char *route_type_name(uint8_t type)
{
	switch (type) {
	case RTN_UNICAST:
		return "unicast";
	case RTN_LOCAL:
		return "local";
	case RTN_BLACKHOLE:
		return "blackhole";
	case RTN_UNREACHABLE:
		return "unreachable";
	case RTN_PROHIBIT:
		return "prohibit";
	default:
		return "other";
	}
}

static void check_reply_rule(struct check_tally *run, const struct options *opts,
			     const struct sockaddr_storage *target,
			     const char *shown)
{
	const uint32_t *mark = opts->mark_given ? &opts->mark : NULL;
	bool found = false;
	char source[INET6_ADDRSTRLEN + 5];
	const char *ip = target->ss_family == AF_INET6 ? "ip -6" : "ip";

	int error = netlink_find_reply_rule(target, mark, opts->table, &found);
	if (error != 0) {
		check_report(run, false, "%s: cannot list the rules: %s",
			     shown, strerror(error));
		return;
	}
	if (found) {
		check_report(run, true, "%s: a rule sends its replies to "
					"table %u",
			     shown, opts->table);
		return;
	}
	check_report(run, false, "%s: no rule sends its replies to table %u",
		     shown, opts->table);
	reply_rule_source(target, source, sizeof source);
	if (opts->mark_given)
		check_fix(run, "fix", "%s rule add fwmark %u table %u", ip,
			  opts->mark, opts->table);
	else
		check_fix(run, "fix", "%s rule add from %s iif lo table %u", ip,
			  source, opts->table);
}

static void check_local_route(struct check_tally *run, const struct options *opts,
			      const struct sockaddr_storage *target)
{
	bool found = false;
	bool ipv6 = target->ss_family == AF_INET6;

	int error = netlink_find_local_default_route(target->ss_family,
						     opts->table, &found);
	if (error != 0) {
		check_report(run, false, "cannot list the routes: %s",
			     strerror(error));
		return;
	}
	if (found) {
		check_report(run, true, "table %u delivers every %s address "
					"to lo",
			     opts->table, ipv6 ? "IPv6" : "IPv4");
		return;
	}
	check_report(run, false, "table %u has no \"local %s dev lo\" route",
		     opts->table, ipv6 ? "::/0" : "0.0.0.0/0");
	check_fix(run, "fix", "%s route add local %s dev lo table %u",
		  ipv6 ? "ip -6" : "ip", ipv6 ? "::/0" : "0.0.0.0/0",
		  opts->table);
}

enum reply_routing { REPLIES_LOST, REPLIES_BACK, REPLIES_BACK_IF_MARKED };

/*
 * The rule, the route, then the verdict that counts: what the kernel
 * answers for a reply from the target to the spoofed address. When that
 * verdict is good the rule and the route are there by definition, in
 * whatever table the user chose, so only a bad one sends us looking for
 * the README's rule and route in --table.
 */
static enum reply_routing check_reply_routing(struct check_tally *run,
					      const struct options *opts,
					      const struct sockaddr_storage *target,
					      const struct sockaddr_storage *spoof)
{
	char shown[NETADDR_TEXT_SIZE], from[INET6_ADDRSTRLEN];
	char to[INET6_ADDRSTRLEN];
	const uint32_t *mark = opts->mark_given ? &opts->mark : NULL;
	struct route_answer answer, unmarked;

	netaddr_format(target, shown, sizeof shown);
	netaddr_format_host(target, from, sizeof from);
	netaddr_format_host(spoof, to, sizeof to);
	int error = netlink_route_get(target, spoof, mark, &answer);
	if (error == 0 && is_delivered_to_loopback(&answer)) {
		check_report(run, true, "%s: a rule sends its replies to "
					"table %u",
			     shown, answer.table);
		check_report(run, true, "table %u delivers %s to lo",
			     answer.table, to);
		check_report(run, true, "%s: replies from %s to %s come back "
					"to loopback",
			     shown, from, to);
		if (mark == NULL || (netlink_route_get(target, spoof, NULL,
							&unmarked) == 0 &&
				     is_delivered_to_loopback(&unmarked)))
			return REPLIES_BACK;
		return REPLIES_BACK_IF_MARKED;
	}
	if (error == 0 && answer.answered && answer.type == RTN_LOCAL) {
		check_report(run, false, "%s is an address of this host: name "
					 "another with --check-from",
			     to);
		return REPLIES_LOST;
	}
	check_reply_rule(run, opts, target, shown);
	check_local_route(run, opts, target);
	if (error != 0)
		check_report(run, false, "%s: replies from %s to %s do not "
					 "come back to loopback: %s",
			     shown, from, to, strerror(error));
	else
		check_report(run, false, "%s: replies from %s to %s do not "
					 "come back to loopback: table %u "
					 "routes them (%s)",
			     shown, from, to, answer.table,
			     route_type_name(answer.type));
	return REPLIES_LOST;
}

/*
 * Returns 0 or an errno value. A spoofed probe is made like a real
 * connection, from an ephemeral port of the spoofed address.
 */
static int probe_connection(const struct options *opts,
			    const struct sockaddr_storage *target,
			    const struct sockaddr_storage *spoof)
{
	struct spoof_options spoofing = {
		.mark = opts->mark_given ? &opts->mark : NULL,
		.port = SPOOF_PORT_ANY,
		.connect_timeout_ms = opts->connect_timeout_ms,
	};
	struct spoof_failure failure;
	int fd = spoof_open(SOCK_STREAM, spoof, target, &spoofing, &failure);

	if (fd < 0)
		return failure.error;
	close(fd);
	return 0;
}

static bool check_plain_connection(struct check_tally *run,
				   const struct options *opts,
				   const struct sockaddr_storage *target)
{
	char shown[NETADDR_TEXT_SIZE];
	int error = probe_connection(opts, target, NULL);

	netaddr_format(target, shown, sizeof shown);
	if (error == 0)
		check_report(run, true, "%s accepts connections", shown);
	else
		check_report(run, false, "%s does not accept connections: %s "
					 "(is the application running, and "
					 "are -4/-6 right?)",
			     shown, strerror(error));
	return error == 0;
}

static void check_spoofed_connection(struct check_tally *run,
				     const struct options *opts,
				     const struct sockaddr_storage *target,
				     const struct sockaddr_storage *spoof,
				     enum reply_routing routing)
{
	char shown[NETADDR_TEXT_SIZE], from[INET6_ADDRSTRLEN];

	netaddr_format(target, shown, sizeof shown);
	netaddr_format_host(spoof, from, sizeof from);
	if (routing == REPLIES_LOST) {
		check_report(run, false, "%s: a connection from %s was not "
					 "tried: fix what fails above first",
			     shown, from);
		return;
	}
	int error = probe_connection(opts, target, spoof);
	if (error == 0) {
		check_report(run, true, "%s accepts a connection from %s "
					"(spoofed)",
			     shown, from);
		return;
	}
	check_report(run, false, "%s: a connection from %s (spoofed) "
				 "failed: %s%s",
		     shown, from, strerror(error),
		     error == ETIMEDOUT ? ": the replies did not come back"
					: spoof_capability_hint(error));
	if (error != ETIMEDOUT || routing != REPLIES_BACK_IF_MARKED)
		return;
	/*
	 * The routing needs the mark, and the application's replies do not
	 * carry it: TCP copies a SYN's mark to the connection when asked, or
	 * conntrack can save and restore it.
	 */
	const char *tables = spoof->ss_family == AF_INET6 ? "ip6tables"
							   : "iptables";
	check_fix(run, "fix", "sysctl -w net.ipv4.tcp_fwmark_accept=1");
	check_fix(run, "or", "%s -t mangle -I PREROUTING -m mark --mark %u "
		       "-j CONNMARK --save-mark",
		  tables, opts->mark);
	check_fix(run, "and", "%s -t mangle -I OUTPUT -m connmark --mark %u "
		       "-j CONNMARK --restore-mark",
		  tables, opts->mark);
}

static void check_target(struct check_tally *run, const struct options *opts,
			 const struct sockaddr_storage *target,
			 const struct sockaddr_storage *spoof, bool probes)
{
	bool reachable = probes && check_plain_connection(run, opts, target);
	enum reply_routing routing =
		check_reply_routing(run, opts, target, spoof);
	if (reachable)
		check_spoofed_connection(run, opts, target, spoof, routing);
}

/*
 * The targets given, or both defaults when none was. Probes are TCP
 * connections: a UDP target has nothing to answer a probe with.
 */
static void run_checks(struct check_tally *run, const struct options *opts,
		       bool probes)
{
	bool both = !opts->target4_given && !opts->target6_given;
	/* A sandbox without AF_NETLINK: one line, not one per check. */
	int error = netlink_available();

	if (error != 0) {
		check_report(run, false, "cannot ask the kernel about routing: "
					 "socket(AF_NETLINK): %s",
			     strerror(error));
		return;
	}
	probes = probes && opts->protocol == PROTOCOL_TCP;
	if (opts->target4_given || both)
		check_target(run, opts, &opts->target4, &opts->check_from4,
			     probes);
	if (opts->target6_given || both)
		check_target(run, opts, &opts->target6, &opts->check_from6,
			     probes);
}

/* mmproxy --check: every line on stdout, exit 0 only when all pass. */
int check_run(const struct options *opts)
{
	struct check_tally run = {.as_warnings = false};

	if (sandbox_install_filter(&opts->sandbox, SANDBOX_CHECK) != 0)
		die(EXIT_SYSTEM, "system call filter: %s", strerror(errno));
	run_checks(&run, opts, true);
	/* The probes were the last spoofed connections. */
	if (sandbox_drop_all_capabilities(&opts->sandbox) != 0)
		die(EXIT_SYSTEM, "dropping capabilities: %s", strerror(errno));
	if (run.failed == 0)
		printf("all %u checks passed\n", run.passed);
	else
		printf("%u of %u checks failed\n", run.failed,
		       run.failed + run.passed);
	if (fflush(stdout) != 0)
		return EXIT_SYSTEM;
	return run.failed == 0 ? 0 : EXIT_SYSTEM;
}

/* A long-lived mode's start: warn about routing that cannot work. */
void check_warn_about_routing(const struct options *opts)
{
	struct check_tally run = {.as_warnings = true};

	if (opts->verbosity == LOG_LEVEL_QUIET || opts->tproxy)
		return;
	run_checks(&run, opts, false);
}

