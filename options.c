/*
 * options: the command line into a struct options and a launch mode (see
 * options.h).
 *
 * Pure: no I/O, no exit, no globals; built with -Wconversion. The order
 * follows the data: the help text, the option table, parsing one value,
 * parsing the command line, then the mode and the options each mode
 * refuses. What each option does is in the file that uses it.
 */
#include "options.h"

#include <linux/rtnetlink.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "netaddr.h"
#include "text.h"

static const char help_text[] =
	"usage: mmproxy [-l ADDR:PORT] [-4 ADDR:PORT] [-6 [ADDR]:PORT]\n"
	"               [--allowed-subnets FILE] [--mark N] [-v 0|1|2] [-q]\n"
	"               [-p tcp|udp] [--listeners N] [--max-connections N]\n"
	"               [--connections-per-process N] [--min-spare N]\n"
	"               [--max-spare N]\n"
	"               [--header-timeout S] [--connect-timeout S]\n"
	"               [--idle-timeout S] [--close-after S] [--max-flows N]\n"
	"               [--metrics ADDR:PORT] [--port-fallback]\n"
	"               [--dynamic-destination] [--listen-transparent]\n"
	"               [--inetd] [--tproxy] [--check] [--check-from ADDR]\n"
	"               [-t N] [--user NAME|UID] [--do-not-sandbox] [-h]\n"
	"               [--version]\n"
	"\n"
	"Unwraps the PROXY protocol (v1 and v2) and connects to the local\n"
	"application from the real client's address and port.\n"
	"\n"
	"  -l ADDR:PORT             listen here (default 0.0.0.0:8443); without -l,\n"
	"                           a connected socket on fd 0 means inetd mode\n"
	"  -4 ADDR:PORT             target for IPv4 clients (default 127.0.0.1:443)\n"
	"  -6 [ADDR]:PORT           target for IPv6 clients (default [::1]:443)\n"
	"  --allowed-subnets FILE   load balancer networks allowed to connect, one\n"
	"                           CIDR per line (default: every peer, with a warning)\n"
	"  --mark N                 SO_MARK for connections to the target (default none)\n"
	"  -v N                     0 quiet, 1 per-connection errors (default),\n"
	"                           2 one line per connection; -v with no number\n"
	"                           (cloudflare mmproxy's flag) means 2\n"
	"  -q, --quiet              the same as -v 0\n"
	"  -p tcp|udp               protocol (default tcp)\n"
	"  --listeners N            accept processes on SO_REUSEPORT sockets (default 1)\n"
	"  --max-connections N      live connections at most; more wait in the\n"
	"                           backlog (default 0: no cap); with --listeners,\n"
	"                           each accept process allows N/listeners, rounded up\n"
	"  --connections-per-process N\n"
	"                           a connection process serves N connections, one\n"
	"                           at a time, then exits (default 1000); 1: a fresh\n"
	"                           process for each connection\n"
	"  --min-spare N            connection processes kept waiting for the next\n"
	"                           connections (default 8)\n"
	"  --max-spare N            waiting processes above this exit (default 32)\n"
	"  --header-timeout S       wait this long for the PROXY header (default 5)\n"
	"  --connect-timeout S      wait this long for the target (default 5)\n"
	"  --idle-timeout S         end a connection that moved no byte either\n"
	"                           way for this long (default: never)\n"
	"  --close-after S          UDP: close a flow idle this long (default 60)\n"
	"  --max-flows N            UDP: live flows at most (default 65536)\n"
	"  --metrics ADDR:PORT      serve GET /metrics (Prometheus text) here\n"
	"                           (default: no endpoint)\n"
	"  --port-fallback          when the client's port is taken locally, keep its\n"
	"                           address with an ephemeral port\n"
	"  --dynamic-destination    connect to the destination named in the header\n"
	"  --listen-transparent     set IP_TRANSPARENT on the listening socket\n"
	"  --inetd                  the connection is fd 0 (xinetd, systemd Accept=yes)\n"
	"  --tproxy                 no PROXY header: take connections diverted by a\n"
	"                           TPROXY rule and connect from the client to the\n"
	"                           original destination (or to -4/-6 when given)\n"
	"  --check                  check the targets and the policy routing that\n"
	"                           spoofing needs, print how to fix what fails,\n"
	"                           and exit (0 when every check passes)\n"
	"  --check-from ADDR        spoofed source of --check's probe connection\n"
	"                           (default 192.0.2.1 and 2001:db8::1)\n"
	"  -t, --table N            routing table in the commands --check prints\n"
	"                           (default 123)\n"
	"  --user NAME|UID          started as root, run as this user with only the\n"
	"                           capabilities mmproxy uses (default: stay as started)\n"
	"  --do-not-sandbox         keep every capability and install no system call\n"
	"                           filter (default: both; see SECURITY in mmproxy(8))\n"
	"  -h, --help               this text\n"
	"  --version                print the version\n"
	"\n"
	"An option that means nothing in the mode mmproxy runs in is an error:\n"
	"with UDP, --listeners, --max-connections, --connections-per-process,\n"
	"--min-spare, --max-spare, --header-timeout, --connect-timeout,\n"
	"--idle-timeout, --port-fallback and --inetd; with TCP, --max-flows;\n"
	"with a connection handed over (--inetd, systemd Accept=yes), -l,\n"
	"--listeners, --max-connections, --connections-per-process,\n"
	"--min-spare, --max-spare and --listen-transparent; with a listening\n"
	"socket from systemd, -l, --inetd, --listeners and\n"
	"--listen-transparent. --metrics needs a long-lived mode.\n"
	"\n"
	"Also accepted, for command lines written for cloudflare mmproxy or\n"
	"go-mmproxy: one or two dashes on every long option; -a and\n"
	"--allowed-networks for --allowed-subnets; -m for --mark; --listen and\n"
	"--listen-addr for -l; --target-addr4, --target-addr6 for -4, -6;\n"
	"--verbose for -v 2;\n"
	"--force-real-client-port is ignored.\n";

const char *options_help_text(void)
{
	return help_text;
}

/* ---- the option table */

enum option_id {
	OPT_LISTEN,
	OPT_TARGET4,
	OPT_TARGET6,
	OPT_SUBNETS,
	OPT_MARK,
	OPT_VERBOSE,
	OPT_QUIET,
	OPT_TABLE,
	OPT_PROTOCOL,
	OPT_LISTENERS,
	OPT_MAX_CONNECTIONS,
	OPT_CONNECTIONS_PER_PROCESS,
	OPT_MIN_SPARE,
	OPT_MAX_SPARE,
	OPT_HEADER_TIMEOUT,
	OPT_CONNECT_TIMEOUT,
	OPT_IDLE_TIMEOUT,
	OPT_CLOSE_AFTER,
	OPT_MAX_FLOWS,
	OPT_METRICS,
	OPT_PORT_FALLBACK,
	OPT_DYNAMIC_DESTINATION,
	OPT_LISTEN_TRANSPARENT,
	OPT_INETD,
	OPT_CHECK,
	OPT_CHECK_FROM,
	OPT_TPROXY,
	OPT_USER,
	OPT_DO_NOT_SANDBOX,
	OPT_IGNORED_FLAG,
	OPT_HELP,
	OPT_VERSION,
};

struct option_name {
	const char *name;
	enum option_id id;
	bool takes_value;
};

/* The first name of each option is the one error messages use. */
static const struct option_name option_names[] = {
	{"l", OPT_LISTEN, true},
	{"listen", OPT_LISTEN, true},
	{"listen-addr", OPT_LISTEN, true},
	{"4", OPT_TARGET4, true},
	{"target-addr4", OPT_TARGET4, true},
	{"6", OPT_TARGET6, true},
	{"target-addr6", OPT_TARGET6, true},
	{"allowed-subnets", OPT_SUBNETS, true},
	{"a", OPT_SUBNETS, true},
	{"allowed-networks", OPT_SUBNETS, true},
	{"mark", OPT_MARK, true},
	{"m", OPT_MARK, true},
	{"v", OPT_VERBOSE, false},
	{"verbose", OPT_VERBOSE, false},
	{"q", OPT_QUIET, false},
	{"quiet", OPT_QUIET, false},
	{"t", OPT_TABLE, true},
	{"table", OPT_TABLE, true},
	{"p", OPT_PROTOCOL, true},
	{"listeners", OPT_LISTENERS, true},
	{"max-connections", OPT_MAX_CONNECTIONS, true},
	{"connections-per-process", OPT_CONNECTIONS_PER_PROCESS, true},
	{"min-spare", OPT_MIN_SPARE, true},
	{"max-spare", OPT_MAX_SPARE, true},
	{"header-timeout", OPT_HEADER_TIMEOUT, true},
	{"connect-timeout", OPT_CONNECT_TIMEOUT, true},
	{"idle-timeout", OPT_IDLE_TIMEOUT, true},
	{"close-after", OPT_CLOSE_AFTER, true},
	{"max-flows", OPT_MAX_FLOWS, true},
	{"metrics", OPT_METRICS, true},
	{"port-fallback", OPT_PORT_FALLBACK, false},
	{"dynamic-destination", OPT_DYNAMIC_DESTINATION, false},
	{"listen-transparent", OPT_LISTEN_TRANSPARENT, false},
	{"inetd", OPT_INETD, false},
	{"tproxy", OPT_TPROXY, false},
	{"check", OPT_CHECK, false},
	{"check-from", OPT_CHECK_FROM, true},
	{"user", OPT_USER, true},
	{"do-not-sandbox", OPT_DO_NOT_SANDBOX, false},
	{"force-real-client-port", OPT_IGNORED_FLAG, false},
	{"h", OPT_HELP, false},
	{"help", OPT_HELP, false},
	{"version", OPT_VERSION, false},
};

enum { OPTION_COUNT = sizeof option_names / sizeof option_names[0] };

/* ---- errors */

__attribute__((format(printf, 2, 3))) static int
fail(struct options_error *error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(error->text, sizeof error->text, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- one value */

static int parse_number(const char *option, const char *text,
			unsigned long min, unsigned long max,
			unsigned long *value, struct options_error *error)
{
	if (!text_parse_number(text, min, max, value))
		return fail(error, "%s: \"%s\": not a number from %lu to %lu",
			    option, text, min, max);
	return 0;
}

static int parse_address_option(const char *option, const char *text,
				struct sockaddr_storage *out,
				struct options_error *error)
{
	if (netaddr_parse(text, out) != 0)
		return fail(error,
			    "%s: \"%s\": not ADDR:PORT or [IPV6]:PORT with a "
			    "numeric address",
			    option, text);
	return 0;
}

/* A bare address, IPv4 or IPv6, no port: the family decides which it sets. */
static int parse_check_from(struct options *opts, const char *shown,
			    const char *value, struct options_error *error)
{
	struct sockaddr_storage addr;

	if (netaddr_parse_host(value, &addr) != 0)
		return fail(error,
			    "%s: \"%s\": not a numeric IPv4 or IPv6 address",
			    shown, value);
	if (addr.ss_family == AF_INET)
		opts->check_from4 = addr;
	else
		opts->check_from6 = addr;
	return 0;
}

static const struct option_name *find_option(const char *name,
					     size_t name_len)
{
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		if (strlen(option_names[i].name) == name_len &&
		    memcmp(option_names[i].name, name, name_len) == 0)
			return &option_names[i];
	}
	return NULL;
}

static bool is_verbosity_level(const char *text)
{
	return text != NULL && text[0] >= '0' && text[0] <= '9';
}

static void set_defaults(struct options *opts)
{
	memset(opts, 0, sizeof *opts);
	netaddr_parse("0.0.0.0:8443", &opts->listen_addr);
	netaddr_parse("127.0.0.1:443", &opts->target4);
	netaddr_parse("[::1]:443", &opts->target6);
	opts->verbosity = 1; /* per-connection errors */
	opts->protocol = PROTOCOL_TCP;
	opts->listeners = 1;
	/* Chosen from measurements: mmproxy.8 says why. */
	opts->connections_per_process = 1000;
	opts->min_spare = 8;
	opts->max_spare = 32;
	opts->header_timeout_ms = 5000;
	opts->connect_timeout_ms = 5000;
	opts->close_after_s = 60;
	opts->max_flows = 65536;
	opts->table = 123;
	/* Documentation addresses (RFC 5737, RFC 3849): never a real peer. */
	netaddr_parse_host("192.0.2.1", &opts->check_from4);
	netaddr_parse_host("2001:db8::1", &opts->check_from6);
}

static int apply_address(const struct option_name *opt, struct options *opts,
			 const char *shown, const char *value,
			 struct options_error *error)
{
	switch (opt->id) {
	case OPT_LISTEN:
		opts->listen_given = true;
		return parse_address_option(shown, value, &opts->listen_addr,
					    error);
	case OPT_TARGET4:
		if (parse_address_option(shown, value, &opts->target4, error))
			return -1;
		if (opts->target4.ss_family != AF_INET)
			return fail(error, "%s: \"%s\": not an IPv4 address",
				    shown, value);
		opts->target4_given = true;
		return 0;
	case OPT_TARGET6:
		if (parse_address_option(shown, value, &opts->target6, error))
			return -1;
		if (opts->target6.ss_family != AF_INET6)
			return fail(error,
				    "%s: \"%s\": not an IPv6 address in "
				    "brackets",
				    shown, value);
		opts->target6_given = true;
		return 0;
	case OPT_METRICS:
		opts->metrics_given = true;
		return parse_address_option(shown, value, &opts->metrics_addr,
					    error);
	default:
		return parse_check_from(opts, shown, value, error);
	}
}

/* Options whose value is a number: its range, and where it goes. */
static int apply_number(const struct option_name *opt, struct options *opts,
			const char *shown, const char *value,
			struct options_error *error)
{
	unsigned long n;

	switch (opt->id) {
	case OPT_MARK:
		if (parse_number(shown, value, 0, UINT32_MAX, &n, error))
			return -1;
		opts->mark = (uint32_t)n;
		opts->mark_given = true;
		return 0;
	case OPT_VERBOSE:
		if (parse_number(shown, value, 0, 2, &n, error))
			return -1;
		opts->verbosity = (int)n;
		return 0;
	case OPT_TABLE:
		if (parse_number(shown, value, 1, RT_TABLE_MAX, &n, error))
			return -1;
		opts->table = (uint32_t)n;
		return 0;
	case OPT_LISTENERS:
		if (parse_number(shown, value, 1, 256, &n, error))
			return -1;
		opts->listeners = (unsigned)n;
		return 0;
	case OPT_MAX_CONNECTIONS:
		if (parse_number(shown, value, 0, 1000000, &n, error))
			return -1;
		opts->max_connections = (unsigned)n;
		return 0;
	case OPT_CONNECTIONS_PER_PROCESS:
		if (parse_number(shown, value, 1, 1000000000, &n, error))
			return -1;
		opts->connections_per_process = (unsigned)n;
		return 0;
	case OPT_MIN_SPARE:
		if (parse_number(shown, value, 1, 4096, &n, error))
			return -1;
		opts->min_spare = (unsigned)n;
		return 0;
	case OPT_MAX_SPARE:
		if (parse_number(shown, value, 1, 65536, &n, error))
			return -1;
		opts->max_spare = (unsigned)n;
		return 0;
	case OPT_HEADER_TIMEOUT:
		if (parse_number(shown, value, 1, 3600, &n, error))
			return -1;
		opts->header_timeout_ms = (int)n * 1000;
		return 0;
	case OPT_CONNECT_TIMEOUT:
		if (parse_number(shown, value, 1, 3600, &n, error))
			return -1;
		opts->connect_timeout_ms = (int)n * 1000;
		return 0;
	case OPT_IDLE_TIMEOUT:
		if (parse_number(shown, value, 1, 86400, &n, error))
			return -1;
		opts->idle_timeout_ms = (int)n * 1000;
		return 0;
	case OPT_CLOSE_AFTER:
		if (parse_number(shown, value, 1, 86400, &n, error))
			return -1;
		opts->close_after_s = (unsigned)n;
		return 0;
	default: /* OPT_MAX_FLOWS */
		if (parse_number(shown, value, 1, 1000000, &n, error))
			return -1;
		opts->max_flows = (unsigned)n;
		return 0;
	}
}

/* Returns 0, -1 with error filled, or 1 for --help/--version (in *result). */
static int apply_option(struct options *opts, const struct option_name *opt,
			const char *shown, const char *value,
			enum options_result *result,
			struct options_error *error)
{
	opts->given |= UINT64_C(1) << opt->id;
	switch (opt->id) {
	case OPT_LISTEN:
	case OPT_TARGET4:
	case OPT_TARGET6:
	case OPT_CHECK_FROM:
	case OPT_METRICS:
		return apply_address(opt, opts, shown, value, error);
	case OPT_VERBOSE:
		if (value == NULL) {
			opts->verbosity = 2;
			return 0;
		}
		return apply_number(opt, opts, shown, value, error);
	case OPT_MARK:
	case OPT_TABLE:
	case OPT_LISTENERS:
	case OPT_MAX_CONNECTIONS:
	case OPT_CONNECTIONS_PER_PROCESS:
	case OPT_MIN_SPARE:
	case OPT_MAX_SPARE:
	case OPT_HEADER_TIMEOUT:
	case OPT_CONNECT_TIMEOUT:
	case OPT_IDLE_TIMEOUT:
	case OPT_CLOSE_AFTER:
	case OPT_MAX_FLOWS:
		return apply_number(opt, opts, shown, value, error);
	case OPT_SUBNETS:
		opts->subnets_path = value;
		return 0;
	case OPT_QUIET:
		opts->verbosity = 0;
		return 0;
	case OPT_CHECK:
		opts->check = true;
		return 0;
	case OPT_PROTOCOL:
		if (strcmp(value, "tcp") == 0)
			opts->protocol = PROTOCOL_TCP;
		else if (strcmp(value, "udp") == 0)
			opts->protocol = PROTOCOL_UDP;
		else
			return fail(error, "%s: \"%s\": not tcp or udp", shown,
				    value);
		return 0;
	case OPT_PORT_FALLBACK:
		opts->port_fallback = true;
		return 0;
	case OPT_DYNAMIC_DESTINATION:
		opts->dynamic_destination = true;
		return 0;
	case OPT_LISTEN_TRANSPARENT:
		opts->listen_transparent = true;
		return 0;
	case OPT_INETD:
		opts->force_inetd = true;
		return 0;
	case OPT_TPROXY:
		/* Its listening socket must be transparent, or the TPROXY
		 * rule finds no socket to divert to. */
		opts->tproxy = true;
		opts->listen_transparent = true;
		return 0;
	case OPT_USER:
		opts->user = value;
		return 0;
	case OPT_DO_NOT_SANDBOX:
		opts->do_not_sandbox = true;
		return 0;
	case OPT_IGNORED_FLAG:
		return 0;
	case OPT_HELP:
		*result = OPTIONS_HELP;
		return 1;
	case OPT_VERSION:
		*result = OPTIONS_VERSION;
		return 1;
	}
	return 0;
}

/* ---- the command line */

/*
 * go-mmproxy uses Go's flag package, which takes one or two dashes and
 * "-name=value". -v is the one option whose value is optional: go-mmproxy
 * reads "-v 2", cloudflare mmproxy reads "-v" as a flag; a following word
 * that is a number decides.
 */
enum options_result options_parse(int argc, char *const *argv,
				  struct options *opts,
				  struct options_error *error)
{
	enum options_result result = OPTIONS_RUN;

	set_defaults(opts);
	error->text[0] = '\0';
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (arg[0] != '-' || arg[1] == '\0') {
			fail(error, "unexpected argument \"%s\"", arg);
			return OPTIONS_ERROR;
		}
		const char *name = arg + (arg[1] == '-' ? 2 : 1);
		const char *equals = strchr(name, '=');
		size_t name_len = equals ? (size_t)(equals - name) : strlen(name);
		const struct option_name *opt = find_option(name, name_len);
		if (opt == NULL) {
			fail(error, "unknown option \"%s\"", arg);
			return OPTIONS_ERROR;
		}
		const char *value = equals ? equals + 1 : NULL;
		if (opt->id == OPT_VERBOSE) {
			if (value == NULL && i + 1 < argc &&
			    is_verbosity_level(argv[i + 1]))
				value = argv[++i];
		} else if (opt->takes_value && value == NULL) {
			if (i + 1 >= argc) {
				fail(error, "%s needs a value", arg);
				return OPTIONS_ERROR;
			}
			value = argv[++i];
		} else if (!opt->takes_value && value != NULL) {
			fail(error, "%.*s takes no value", (int)(equals - arg),
			     arg);
			return OPTIONS_ERROR;
		}
		int applied = apply_option(opts, opt, arg, value, &result,
					   error);
		if (applied < 0)
			return OPTIONS_ERROR;
		if (applied > 0)
			return result;
	}
	return OPTIONS_RUN;
}

/* ---- the mode, and the options each mode refuses */

static bool was_given(const struct options *opts, enum option_id id)
{
	return (opts->given & (UINT64_C(1) << id)) != 0;
}

/* The name an error message gives the option: its first in the table. */
static const char *option_shown(enum option_id id)
{
	for (size_t i = 0; i < OPTION_COUNT; i++)
		if (option_names[i].id == id)
			return option_names[i].name;
	return "";
}

/* Why option id means nothing in mode, or NULL when it means something. */
static const char *meaningless_reason(enum option_id id, enum launch_mode mode)
{
	switch (mode) {
	case MODE_UDP:
		switch (id) {
		case OPT_LISTENERS:
			return "one socket serves every flow";
		case OPT_MAX_CONNECTIONS:
			return "UDP has flows, see --max-flows";
		case OPT_CONNECTIONS_PER_PROCESS:
		case OPT_MIN_SPARE:
		case OPT_MAX_SPARE:
			return "one process serves every flow";
		case OPT_HEADER_TIMEOUT:
			return "each datagram carries its own header";
		case OPT_CONNECT_TIMEOUT:
			return "a flow's socket connects at once";
		case OPT_IDLE_TIMEOUT:
			return "an idle flow closes after --close-after";
		case OPT_PORT_FALLBACK:
			return "a flow whose client port is taken always takes "
			       "an ephemeral one";
		case OPT_INETD:
			return "UDP is a long-lived mode";
		default:
			return NULL;
		}
	case MODE_ONE_CONNECTION:
		switch (id) {
		case OPT_LISTEN:
		case OPT_LISTENERS:
		case OPT_LISTEN_TRANSPARENT:
			return "the connection is accepted already";
		case OPT_MAX_CONNECTIONS:
			return "the connection is accepted already (the inetd "
			       "or the socket unit sets the limit)";
		case OPT_CONNECTIONS_PER_PROCESS:
		case OPT_MIN_SPARE:
		case OPT_MAX_SPARE:
			return "the inetd or the socket unit starts one process "
			       "per connection";
		case OPT_MAX_FLOWS:
			return "flows are UDP's";
		case OPT_METRICS:
			return "a process of one connection serves no "
			       "endpoint (run a listener for the counters)";
		default:
			return NULL;
		}
	case MODE_ACTIVATED_LISTENER:
		switch (id) {
		case OPT_LISTEN:
		case OPT_LISTENERS:
			return "systemd passed the one listening socket";
		case OPT_LISTEN_TRANSPARENT:
			return "set Transparent=yes in the socket unit";
		case OPT_INETD:
			return "systemd passed a listening socket, not a "
			       "connection";
		case OPT_MAX_FLOWS:
			return "flows are UDP's";
		default:
			return NULL;
		}
	case MODE_STANDALONE:
		return id == OPT_MAX_FLOWS ? "flows are UDP's" : NULL;
	case MODE_CHECK:
		return NULL;
	}
	return NULL;
}

/* How an error message names the mode. */
static const char *mode_shown(const struct options *opts,
			      const struct inherited_fds *fds,
			      enum launch_mode mode)
{
	switch (mode) {
	case MODE_UDP:
		return fds->activated ? "a datagram socket on fd 3" : "-p udp";
	case MODE_ONE_CONNECTION:
		if (opts->force_inetd && !fds->activated)
			return "--inetd";
		return fds->activated ? "a connection on fd 3"
				      : "a connection on fd 0";
	case MODE_ACTIVATED_LISTENER:
		return "a listening socket on fd 3 (socket activation)";
	case MODE_STANDALONE:
		return "TCP";
	case MODE_CHECK:
		return "--check";
	}
	return "";
}

static int refuse_meaningless(const struct options *opts,
			      const struct inherited_fds *fds,
			      enum launch_mode mode,
			      struct options_error *error)
{
	for (unsigned id = 0; id <= OPT_VERSION; id++) {
		const char *why = meaningless_reason((enum option_id)id, mode);
		const char *name = option_shown((enum option_id)id);
		if (why != NULL && was_given(opts, (enum option_id)id))
			return fail(error, "%s%s with %s: %s",
				    name[1] ? "--" : "-", name,
				    mode_shown(opts, fds, mode), why);
	}
	return 0;
}

/*
 * --tproxy reads no header, so the options about the header's contents
 * make no sense with it, and it is TCP only.
 */
static int check_tproxy(const struct options *opts,
			const struct inherited_fds *fds,
			struct options_error *error)
{
	if (!opts->tproxy)
		return 0;
	if (opts->check)
		return fail(error,
			    "--check with --tproxy: the routing TPROXY needs "
			    "is of another kind (see TPROXY in mmproxy(8))");
	if (opts->protocol == PROTOCOL_UDP)
		return fail(error,
			    "--tproxy: only TCP is supported, not -p udp");
	if (opts->dynamic_destination)
		return fail(error, "--tproxy with --dynamic-destination: "
				   "there is no header; --tproxy connects to "
				   "the original destination already");
	if (fds->activated && fds->activated_datagram)
		return fail(error, "--tproxy: only TCP is supported, and the "
				   "socket passed on fd 3 is a datagram "
				   "socket");
	return 0;
}

static enum launch_mode decide_mode(const struct options *opts,
				    const struct inherited_fds *fds)
{
	if (opts->check)
		return MODE_CHECK;
	/* A datagram socket from systemd means UDP, whatever -p says. */
	if (opts->protocol == PROTOCOL_UDP ||
	    (fds->activated && fds->activated_datagram))
		return MODE_UDP;
	if (fds->activated)
		return fds->activated_listening ? MODE_ACTIVATED_LISTENER
						: MODE_ONE_CONNECTION;
	if (opts->force_inetd || (!opts->listen_given && fds->fd0_is_connection))
		return MODE_ONE_CONNECTION;
	return MODE_STANDALONE;
}

int options_choose_mode(const struct options *opts,
			const struct inherited_fds *fds, enum launch_mode *mode,
			struct options_error *error)
{
	error->text[0] = '\0';
	if (check_tproxy(opts, fds, error) != 0)
		return -1;
	/*
	 * Every peer may send headers without the file; with this option
	 * every peer would also choose where mmproxy connects.
	 */
	if (opts->dynamic_destination && opts->subnets_path == NULL &&
	    !opts->check)
		return fail(error, "--dynamic-destination without "
				   "--allowed-subnets: any peer could choose "
				   "where mmproxy connects; list the load "
				   "balancers in an --allowed-subnets file");
	*mode = decide_mode(opts, fds);
	if (*mode == MODE_UDP && fds->activated && !fds->activated_datagram)
		return fail(error, "-p udp: the socket passed on fd 3 is not a "
				   "datagram socket");
	return refuse_meaningless(opts, fds, *mode, error);
}
