/*
 * mmproxy: unwrap the PROXY protocol for applications that cannot speak it.
 *
 * A load balancer connects and sends a PROXY header naming the real client.
 * mmproxy checks that the load balancer is allowed, opens a connection to the
 * local application from the client's own address and port (IP_TRANSPARENT),
 * and relays bytes both ways until both sides are done. Policy routing (see
 * README) brings the application's replies back to this host's loopback.
 *
 * One process per connection: a small accept loop forks, or inetd/systemd
 * hand us the connection on fd 0 or fd 3. UDP is a separate long-lived mode.
 *
 * The file follows the data: logging and options; the life of one
 * connection (allow, header, spoofed connect, relay); the launch modes that
 * start connections (accept loop, inetd, socket activation); the UDP mode;
 * and main(), which picks the mode.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "proxyhdr.h"
#include "subnets.h"

#define MMPROXY_VERSION "1.0.0"

/* Exit codes: 0 done (a refused connection is a job done), 1 system failure, 2 usage or config. */
enum { EXIT_SYSTEM = 1, EXIT_USAGE = 2 };

enum protocol { PROTOCOL_TCP, PROTOCOL_UDP };

struct options {
	struct sockaddr_storage listen_addr;
	struct sockaddr_storage target4;
	struct sockaddr_storage target6;
	bool listen_given;
	bool target4_given; /* --tproxy connects elsewhere unless told */
	bool target6_given;
	const char *subnets_path;
	bool mark_given;
	uint32_t mark;
	int verbosity;
	enum protocol protocol;
	unsigned listeners;
	unsigned max_connections;
	int header_timeout_ms;
	int connect_timeout_ms;
	unsigned close_after_s;
	unsigned max_flows;
	bool port_fallback;
	bool dynamic_destination;
	bool listen_transparent;
	bool force_inetd;
	bool tproxy;
	bool check;			       /* --check: test routing, then exit */
	uint32_t table;			       /* the routing table --check suggests */
	struct sockaddr_storage check_from4; /* spoofed source of --check's probe */
	struct sockaddr_storage check_from6;
};

/* ---- logging ---------------------------------------------------------- */

/*
 * The one piece of process-wide state: where log lines go, chosen once at
 * start. Under xinetd, or systemd Accept=yes with StandardError=socket, fd 2
 * is the client's own socket, and a log line there would corrupt the stream.
 */
static struct {
	bool use_syslog;
	int verbosity;
} logger = {false, 1};

enum { LOG_LEVEL_QUIET = 0, LOG_LEVEL_ERRORS = 1, LOG_LEVEL_CONNECTIONS = 2 };

__attribute__((format(printf, 2, 3))) static void log_msg(int priority,
							   const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int saved_errno = errno;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (logger.use_syslog) {
		syslog(priority, "%s", line);
	} else {
		char out[1100];
		int n = snprintf(out, sizeof out, "mmproxy[%ld]: %s\n",
				 (long)getpid(), line);
		if (n > 0) {
			size_t len = (size_t)n < sizeof out ? (size_t)n
							    : sizeof out - 1;
			/* A failed log write has nowhere to be reported. */
			ssize_t ignored = write(STDERR_FILENO, out, len);
			(void)ignored;
		}
	}
	errno = saved_errno;
}

/* Per-connection messages: shown from -v 1, the connection summary from -v 2. */
#define log_error(...)                                                         \
	do {                                                                   \
		if (logger.verbosity >= LOG_LEVEL_ERRORS)                      \
			log_msg(LOG_WARNING, __VA_ARGS__);                     \
	} while (0)

/* Start-up failures are printed whatever the verbosity, then we exit. */
__attribute__((format(printf, 2, 3), noreturn)) static void
die(int status, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (logger.use_syslog)
		syslog(LOG_ERR, "%s", line);
	else
		fprintf(stderr, "mmproxy: %s\n", line);
	exit(status);
}

/*
 * Allows one message per interval. When it allows one, held_back says how
 * many it refused since the last one it allowed, for that message to say.
 */
struct rate_limit {
	time_t last;
	unsigned suppressed;
	unsigned held_back;
};

static bool rate_limit_allows(struct rate_limit *limit, time_t interval_s)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (limit->last != 0 && now.tv_sec - limit->last < interval_s) {
		limit->suppressed++;
		return false;
	}
	limit->last = now.tv_sec;
	limit->held_back = limit->suppressed;
	limit->suppressed = 0;
	return true;
}

static int64_t monotonic_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* "1.2.3.4:80" or "[::1]:80"; IPv4-mapped IPv6 shown as IPv4. */
static const char *format_address(const struct sockaddr_storage *addr,
				  char *out, size_t size)
{
	char host[INET6_ADDRSTRLEN];

	if (addr->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)addr;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		snprintf(out, size, "%s:%u", host, ntohs(in->sin_port));
	} else if (addr->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)addr;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host,
				  sizeof host);
			snprintf(out, size, "%s:%u", host,
				 ntohs(in6->sin6_port));
		} else {
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
			snprintf(out, size, "[%s]:%u", host,
				 ntohs(in6->sin6_port));
		}
	} else {
		snprintf(out, size, "-");
	}
	return out;
}

#define ADDRESS_TEXT_SIZE (INET6_ADDRSTRLEN + 10)

/* ---- options ---------------------------------------------------------- */

static const char usage_text[] =
	"usage: mmproxy [-l ADDR:PORT] [-4 ADDR:PORT] [-6 [ADDR]:PORT]\n"
	"               [--allowed-subnets FILE] [--mark N] [-v 0|1|2] [-q]\n"
	"               [-p tcp|udp] [--listeners N] [--max-connections N]\n"
	"               [--header-timeout S] [--connect-timeout S]\n"
	"               [--close-after S] [--max-flows N] [--port-fallback]\n"
	"               [--dynamic-destination] [--listen-transparent]\n"
	"               [--inetd] [--tproxy] [--check] [--check-from ADDR]\n"
	"               [-t N] [-h] [--version]\n";

static const char help_text[] =
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
	"  --header-timeout S       wait this long for the PROXY header (default 5)\n"
	"  --connect-timeout S      wait this long for the target (default 5)\n"
	"  --close-after S          UDP: close a flow idle this long (default 60)\n"
	"  --max-flows N            UDP: live flows at most (default 65536)\n"
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
	"  -h, --help               this text\n"
	"  --version                print the version\n"
	"\n"
	"Also accepted, for command lines written for cloudflare mmproxy or\n"
	"go-mmproxy: one or two dashes on every long option; -a and\n"
	"--allowed-networks for --allowed-subnets; -m for --mark; --listen and\n"
	"--listen-addr for -l; --target-addr4, --target-addr6 for -4, -6;\n"
	"--verbose for -v 2;\n"
	"--do-not-sandbox and --force-real-client-port are ignored.\n";

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
	OPT_HEADER_TIMEOUT,
	OPT_CONNECT_TIMEOUT,
	OPT_CLOSE_AFTER,
	OPT_MAX_FLOWS,
	OPT_PORT_FALLBACK,
	OPT_DYNAMIC_DESTINATION,
	OPT_LISTEN_TRANSPARENT,
	OPT_INETD,
	OPT_CHECK,
	OPT_CHECK_FROM,
	OPT_TPROXY,
	OPT_IGNORED_FLAG,
	OPT_HELP,
	OPT_VERSION,
};

struct option_name {
	const char *name;
	enum option_id id;
	bool takes_value;
};

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
	{"header-timeout", OPT_HEADER_TIMEOUT, true},
	{"connect-timeout", OPT_CONNECT_TIMEOUT, true},
	{"close-after", OPT_CLOSE_AFTER, true},
	{"max-flows", OPT_MAX_FLOWS, true},
	{"port-fallback", OPT_PORT_FALLBACK, false},
	{"dynamic-destination", OPT_DYNAMIC_DESTINATION, false},
	{"listen-transparent", OPT_LISTEN_TRANSPARENT, false},
	{"inetd", OPT_INETD, false},
	{"tproxy", OPT_TPROXY, false},
	{"check", OPT_CHECK, false},
	{"check-from", OPT_CHECK_FROM, true},
	{"do-not-sandbox", OPT_IGNORED_FLAG, false},
	{"force-real-client-port", OPT_IGNORED_FLAG, false},
	{"h", OPT_HELP, false},
	{"help", OPT_HELP, false},
	{"version", OPT_VERSION, false},
};

__attribute__((format(printf, 1, 2), noreturn)) static void
usage_error(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	die(EXIT_USAGE, "%s (see mmproxy --help)", line);
}

/* The one number parser: decimal, no sign, within [min, max]. */
static unsigned long parse_number(const char *option, const char *text,
				  unsigned long min, unsigned long max)
{
	char *end;
	unsigned long value;

	errno = 0;
	if (text[0] < '0' || text[0] > '9')
		usage_error("%s: \"%s\": not a number from %lu to %lu", option,
			    text, min, max);
	value = strtoul(text, &end, 10);
	if (errno != 0 || *end != '\0' || value < min || value > max)
		usage_error("%s: \"%s\": not a number from %lu to %lu", option,
			    text, min, max);
	return value;
}

/*
 * "1.2.3.4:80", "[2001:db8::1]:80" or ":80" (any IPv4 address). Numeric
 * only: a name lookup at start would make the program depend on DNS.
 */
static int parse_address(const char *text, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port_text;
	size_t host_len;
	char *end;
	unsigned long port;

	memset(out, 0, sizeof *out);
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		host_len = (size_t)(close - text - 1);
		if (host_len >= sizeof host)
			return -1;
		memcpy(host, text + 1, host_len);
		port_text = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (colon == NULL)
			return -1;
		host_len = (size_t)(colon - text);
		if (host_len >= sizeof host)
			return -1;
		memcpy(host, text, host_len);
		port_text = colon + 1;
	}
	host[host_len] = '\0';
	if (port_text[0] < '0' || port_text[0] > '9')
		return -1;
	errno = 0;
	port = strtoul(port_text, &end, 10);
	if (errno != 0 || *end != '\0' || port > 65535)
		return -1;

	struct sockaddr_in *in = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
	if (text[0] != '[' && (host_len == 0 ||
			       inet_pton(AF_INET, host, &in->sin_addr) == 1)) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (text[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	return -1;
}

static void parse_address_option(const char *option, const char *text,
				 struct sockaddr_storage *out)
{
	if (parse_address(text, out) != 0)
		usage_error("%s: \"%s\": not ADDR:PORT or [IPV6]:PORT with a "
			    "numeric address",
			    option, text);
}

static const struct option_name *find_option(const char *name,
					     size_t name_len)
{
	for (size_t i = 0; i < sizeof option_names / sizeof option_names[0];
	     i++) {
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
	parse_address("0.0.0.0:8443", &opts->listen_addr);
	parse_address("127.0.0.1:443", &opts->target4);
	parse_address("[::1]:443", &opts->target6);
	opts->verbosity = LOG_LEVEL_ERRORS;
	opts->protocol = PROTOCOL_TCP;
	opts->listeners = 1;
	opts->header_timeout_ms = 5000;
	opts->connect_timeout_ms = 5000;
	opts->close_after_s = 60;
	opts->max_flows = 65536;
	opts->table = 123;
	/* Documentation addresses (RFC 5737, RFC 3849): never a real peer. */
	parse_address("192.0.2.1:0", &opts->check_from4);
	parse_address("[2001:db8::1]:0", &opts->check_from6);
}

/* A bare address, IPv4 or IPv6, no port: the family decides which it sets. */
static void parse_check_from(struct options *opts, const char *shown,
			     const char *value)
{
	struct sockaddr_in in = {.sin_family = AF_INET};
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};

	if (inet_pton(AF_INET, value, &in.sin_addr) == 1) {
		memset(&opts->check_from4, 0, sizeof opts->check_from4);
		memcpy(&opts->check_from4, &in, sizeof in);
	} else if (inet_pton(AF_INET6, value, &in6.sin6_addr) == 1) {
		memset(&opts->check_from6, 0, sizeof opts->check_from6);
		memcpy(&opts->check_from6, &in6, sizeof in6);
	} else {
		usage_error("%s: \"%s\": not a numeric IPv4 or IPv6 address",
			    shown, value);
	}
}

static void apply_option(struct options *opts, const struct option_name *opt,
			 const char *shown, const char *value)
{
	switch (opt->id) {
	case OPT_LISTEN:
		parse_address_option(shown, value, &opts->listen_addr);
		opts->listen_given = true;
		break;
	case OPT_TARGET4:
		parse_address_option(shown, value, &opts->target4);
		if (opts->target4.ss_family != AF_INET)
			usage_error("%s: \"%s\": not an IPv4 address", shown,
				    value);
		opts->target4_given = true;
		break;
	case OPT_TARGET6:
		parse_address_option(shown, value, &opts->target6);
		if (opts->target6.ss_family != AF_INET6)
			usage_error("%s: \"%s\": not an IPv6 address in "
				    "brackets",
				    shown, value);
		opts->target6_given = true;
		break;
	case OPT_SUBNETS:
		opts->subnets_path = value;
		break;
	case OPT_MARK:
		opts->mark = (uint32_t)parse_number(shown, value, 0, UINT32_MAX);
		opts->mark_given = true;
		break;
	case OPT_VERBOSE:
		opts->verbosity = value == NULL
					  ? LOG_LEVEL_CONNECTIONS
					  : (int)parse_number(shown, value, 0, 2);
		break;
	case OPT_QUIET:
		opts->verbosity = LOG_LEVEL_QUIET;
		break;
	case OPT_TABLE:
		opts->table = (uint32_t)parse_number(shown, value, 1,
						     RT_TABLE_MAX);
		break;
	case OPT_CHECK:
		opts->check = true;
		break;
	case OPT_CHECK_FROM:
		parse_check_from(opts, shown, value);
		break;
	case OPT_PROTOCOL:
		if (strcmp(value, "tcp") == 0)
			opts->protocol = PROTOCOL_TCP;
		else if (strcmp(value, "udp") == 0)
			opts->protocol = PROTOCOL_UDP;
		else
			usage_error("%s: \"%s\": not tcp or udp", shown, value);
		break;
	case OPT_LISTENERS:
		opts->listeners = (unsigned)parse_number(shown, value, 1, 256);
		break;
	case OPT_MAX_CONNECTIONS:
		opts->max_connections =
			(unsigned)parse_number(shown, value, 0, 1000000);
		break;
	case OPT_HEADER_TIMEOUT:
		opts->header_timeout_ms =
			(int)parse_number(shown, value, 1, 3600) * 1000;
		break;
	case OPT_CONNECT_TIMEOUT:
		opts->connect_timeout_ms =
			(int)parse_number(shown, value, 1, 3600) * 1000;
		break;
	case OPT_CLOSE_AFTER:
		opts->close_after_s =
			(unsigned)parse_number(shown, value, 1, 86400);
		break;
	case OPT_MAX_FLOWS:
		opts->max_flows =
			(unsigned)parse_number(shown, value, 1, 1000000);
		break;
	case OPT_PORT_FALLBACK:
		opts->port_fallback = true;
		break;
	case OPT_DYNAMIC_DESTINATION:
		opts->dynamic_destination = true;
		break;
	case OPT_LISTEN_TRANSPARENT:
		opts->listen_transparent = true;
		break;
	case OPT_INETD:
		opts->force_inetd = true;
		break;
	case OPT_TPROXY:
		opts->tproxy = true;
		break;
	case OPT_IGNORED_FLAG:
		break;
	case OPT_HELP:
		printf("%s%s", usage_text, help_text);
		exit(0);
	case OPT_VERSION:
		printf("mmproxy %s\n", MMPROXY_VERSION);
		exit(0);
	}
}

/*
 * --tproxy reads no header, so the options about the header's contents make
 * no sense with it; its listening socket must be transparent, or the TPROXY
 * rule finds no socket to divert to.
 */
static void check_option_combinations(struct options *opts)
{
	if (!opts->tproxy)
		return;
	if (opts->check)
		usage_error("--check with --tproxy: the routing TPROXY needs is "
			    "of another kind (see TPROXY in mmproxy(8))");
	if (opts->protocol == PROTOCOL_UDP)
		usage_error("--tproxy: only TCP is supported, not -p udp");
	if (opts->dynamic_destination)
		usage_error("--tproxy with --dynamic-destination: there is no "
			    "header; --tproxy connects to the original "
			    "destination already");
	opts->listen_transparent = true;
}

/*
 * Options take one or two dashes (go-mmproxy uses Go's flag package, which
 * takes both) and a value as the next word or after '='. -v is the one
 * option whose value is optional: go-mmproxy reads "-v 2", cloudflare
 * mmproxy reads "-v" as a flag; a following word that is a number decides.
 */
static void parse_options(int argc, char **argv, struct options *opts)
{
	set_defaults(opts);
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (arg[0] != '-' || arg[1] == '\0')
			usage_error("unexpected argument \"%s\"", arg);
		const char *name = arg + (arg[1] == '-' ? 2 : 1);
		const char *equals = strchr(name, '=');
		size_t name_len = equals ? (size_t)(equals - name) : strlen(name);
		const struct option_name *opt = find_option(name, name_len);
		if (opt == NULL)
			usage_error("unknown option \"%s\"", arg);

		const char *value = equals ? equals + 1 : NULL;
		if (opt->id == OPT_VERBOSE) {
			if (value == NULL && is_verbosity_level(argv[i + 1]))
				value = argv[++i];
		} else if (opt->takes_value && value == NULL) {
			if (i + 1 >= argc)
				usage_error("%s needs a value", arg);
			value = argv[++i];
		} else if (!opt->takes_value && value != NULL) {
			usage_error("%.*s takes no value", (int)(equals - arg),
				    arg);
		}
		apply_option(opts, opt, arg, value);
	}
	check_option_combinations(opts);
}

/* ---- allowed subnets --------------------------------------------------- */

static void warn_masked_subnet(void *context, size_t line, const char *text,
			       const char *reason)
{
	const char *path = context;
	log_msg(LOG_WARNING, "%s:%zu: \"%s\": %s", path, line, text, reason);
}

/* Fail closed: a file that cannot be used stops mmproxy; it never allows all. */
static void load_allowed_subnets(const char *path, struct subnets *table)
{
	struct subnets_error error;

	memset(table, 0, sizeof *table);
	if (subnets_load(path, table, &error, warn_masked_subnet,
			 (void *)path) != 0) {
		if (error.line == 0)
			die(EXIT_USAGE, "%s: %s", path, error.reason);
		die(EXIT_USAGE, "%s:%zu: \"%s\": %s", path, error.line,
		    error.text, error.reason);
	}
}

/* ---- sockets ------------------------------------------------------------ */

static socklen_t address_length(const struct sockaddr_storage *addr)
{
	return addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in);
}

/* The address itself, in network order: 16 bytes for IPv6, else 4. */
static const uint8_t *address_bytes(const struct sockaddr_storage *addr,
				    size_t *len)
{
	if (addr->ss_family == AF_INET6) {
		*len = 16;
		return ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
	}
	*len = 4;
	return (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr;
}

/* Same family, address and port. */
static bool same_address(const struct sockaddr_storage *a,
			 const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
	}
	return true; /* AF_UNSPEC: no address, e.g. a UDP flow without client */
}

static int set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static int set_int_option(int fd, int level, int name, int value)
{
	return setsockopt(fd, level, name, &value, sizeof value);
}

static bool is_socket_of_type(int fd, int type)
{
	int actual;
	socklen_t len = sizeof actual;

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &actual, &len) == 0 &&
	       actual == type;
}

static bool is_listening_socket(int fd)
{
	int listening;
	socklen_t len = sizeof listening;

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) ==
		       0 &&
	       listening;
}

static bool is_connected_stream_socket(int fd)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof peer;

	return is_socket_of_type(fd, SOCK_STREAM) && !is_listening_socket(fd) &&
	       getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
}

/* An IPv4 or IPv6 socket: writing a log line there would reach a client. */
static bool is_network_socket(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof local;

	if (getsockname(fd, (struct sockaddr *)&local, &len) != 0)
		return false;
	return local.ss_family == AF_INET || local.ss_family == AF_INET6;
}

/* Close with a RST rather than a FIN, so the other side sees an abort. */
static void close_with_reset(int fd)
{
	struct linger linger = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
	close(fd);
}

static int open_listener(const struct options *opts, bool reuse_port)
{
	char text[ADDRESS_TEXT_SIZE];
	const struct sockaddr_storage *addr = &opts->listen_addr;
	int type = opts->protocol == PROTOCOL_UDP ? SOCK_DGRAM : SOCK_STREAM;
	int fd = socket(addr->ss_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	format_address(addr, text, sizeof text);
	if (fd < 0)
		die(EXIT_SYSTEM, "socket for %s: %s", text, strerror(errno));
	if (set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0 ||
	    (reuse_port &&
	     set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1) != 0))
		die(EXIT_SYSTEM, "setsockopt on %s: %s", text, strerror(errno));
	/* [::] takes IPv4 too, whatever net.ipv6.bindv6only says. */
	if (addr->ss_family == AF_INET6 &&
	    set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0) != 0)
		die(EXIT_SYSTEM, "IPV6_V6ONLY off on %s: %s", text,
		    strerror(errno));
	if (opts->listen_transparent) {
		int level = addr->ss_family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
		int name = addr->ss_family == AF_INET6 ? IPV6_TRANSPARENT
						       : IP_TRANSPARENT;
		if (set_int_option(fd, level, name, 1) != 0)
			die(EXIT_SYSTEM,
			    "--listen-transparent on %s: %s (IP_TRANSPARENT "
			    "needs CAP_NET_ADMIN)",
			    text, strerror(errno));
	}
	if (bind(fd, (const struct sockaddr *)addr, address_length(addr)) != 0)
		die(EXIT_SYSTEM, "bind %s: %s", text, strerror(errno));
	if (type == SOCK_STREAM && listen(fd, SOMAXCONN) != 0)
		die(EXIT_SYSTEM, "listen %s: %s", text, strerror(errno));
	return fd;
}

/* ---- one connection: allow, header, spoofed connect --------------------- */

/* How a connection ended: the short reason code of the -v 2 summary line. */
enum connection_end {
	END_DONE,             /* both sides closed, the client first */
	END_BACKEND_CLOSED,   /* both sides closed, the backend first */
	END_HEALTH,           /* a check: connect and close, or LOCAL/UNKNOWN with no data */
	END_NOT_ALLOWED,      /* the load balancer is not in the allowed subnets */
	END_NOT_DIVERTED,     /* --tproxy: addressed to this host, not diverted */
	END_NO_HEADER,        /* the first bytes are not PROXY protocol */
	END_BAD_HEADER,       /* a PROXY header that breaks the spec */
	END_HEADER_TIMEOUT,   /* no complete header in time */
	END_HEADER_TRUNCATED, /* the load balancer closed in the middle of the header */
	END_BIND_FAILED,      /* could not take the client's address */
	END_BACKEND_REFUSED,  /* the target refused or is unreachable */
	END_CONNECT_TIMEOUT,  /* the target did not answer in time */
	END_CLIENT_RESET,     /* the load balancer side reset; the backend was reset too */
	END_BACKEND_RESET,    /* the backend reset; the client was reset too */
	END_ERROR,            /* a system call failed */
};

static const char *const end_names[] = {
	[END_DONE] = "done",
	[END_BACKEND_CLOSED] = "backend-closed",
	[END_HEALTH] = "health",
	[END_NOT_ALLOWED] = "not-allowed",
	[END_NOT_DIVERTED] = "not-diverted",
	[END_NO_HEADER] = "no-header",
	[END_BAD_HEADER] = "bad-header",
	[END_HEADER_TIMEOUT] = "header-timeout",
	[END_HEADER_TRUNCATED] = "header-truncated",
	[END_BIND_FAILED] = "bind-failed",
	[END_BACKEND_REFUSED] = "backend-refused",
	[END_CONNECT_TIMEOUT] = "connect-timeout",
	[END_CLIENT_RESET] = "client-reset",
	[END_BACKEND_RESET] = "backend-reset",
	[END_ERROR] = "error",
};

/*
 * With --tproxy there is no load balancer: lb_fd and lb_addr are the
 * client's own connection, and destination_addr is where it was going.
 */
struct connection {
	int lb_fd;
	int backend_fd;
	struct sockaddr_storage lb_addr;     /* the load balancer's end */
	struct sockaddr_storage client_addr; /* the client, from the header */
	struct sockaddr_storage destination_addr; /* --tproxy: our own end */
	struct sockaddr_storage target_addr;
	bool tproxy;
	bool spoofed; /* false for LOCAL/UNKNOWN: connect from our own address */
	uint64_t bytes_up;   /* client to backend */
	uint64_t bytes_down; /* backend to client */
	int64_t start_ms;
	enum connection_end end;
};

/* Peer bytes for a log line: printable ASCII kept, the rest as \xNN, capped. */
static const char *escape_bytes(const uint8_t *bytes, size_t len, char *out,
				size_t size)
{
	size_t used = 0;

	for (size_t i = 0; i < len && used + 5 < size; i++) {
		if (bytes[i] >= 0x20 && bytes[i] < 0x7f && bytes[i] != '\\' &&
		    bytes[i] != '"')
			out[used++] = (char)bytes[i];
		else
			used += (size_t)snprintf(out + used, size - used,
						 "\\x%02x", bytes[i]);
	}
	out[used] = '\0';
	return out;
}

static void log_header_problem(const struct connection *conn,
			       enum proxyhdr_error error, const uint8_t *bytes,
			       size_t len)
{
	char lb[ADDRESS_TEXT_SIZE], shown[80];

	format_address(&conn->lb_addr, lb, sizeof lb);
	escape_bytes(bytes, len < 16 ? len : 16, shown, sizeof shown);
	if (error == PROXYHDR_ENOT_PROXY)
		log_error("lb=%s: no PROXY header: is send-proxy enabled on "
			  "the load balancer? (first bytes \"%s\")",
			  lb, shown);
	else
		log_error("lb=%s: invalid PROXY header: %s (first bytes \"%s\")",
			  lb, proxyhdr_strerror(error), shown);
}

/*
 * Wait for the header bytes to grow, up to the deadline. Returns 1 when
 * there is something new to peek at, 0 on timeout, -1 on error; *peer_closed
 * tells that no more bytes will come.
 */
static int wait_for_more_header(int fd, int64_t deadline_ms, bool *peer_closed)
{
	for (;;) {
		int64_t remaining = deadline_ms - monotonic_ms();
		if (remaining <= 0)
			return 0;
		struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};
		int ready = poll(&pfd, 1, (int)remaining);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
			return ready;
		*peer_closed = (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
		return 1;
	}
}

/* Take exactly the header's bytes out of the socket; what follows stays for the relay. */
static int consume_header(int fd, uint8_t *buffer, size_t header_len)
{
	while (header_len > 0) {
		ssize_t n = recv(fd, buffer, header_len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		header_len -= (size_t)n;
	}
	return 0;
}

/* Where reading the header stands after one look at the socket. */
enum header_step {
	HEADER_DONE,   /* complete and consumed */
	HEADER_FAILED, /* conn->end says why */
	HEADER_WAIT,   /* a piece is missing: wait for more bytes */
	HEADER_AGAIN,  /* look again at once (EINTR, a bigger buffer) */
};

struct header_reader {
	uint8_t *buffer;
	size_t capacity;
	bool heap_buffer;
	bool seen_bytes;   /* the load balancer sent something */
	bool peer_closed;  /* and will send nothing more */
	bool lowat_raised; /* SO_RCVLOWAT must go back to 1 */
};

/* Judge the len bytes peeked so far. */
static enum header_step judge_header_bytes(struct connection *conn,
					   struct header_reader *reader,
					   size_t len, struct proxyhdr *header)
{
	enum proxyhdr_error error = PROXYHDR_OK;

	switch (proxyhdr_parse(reader->buffer, len, header, &error)) {
	case PROXYHDR_COMPLETE:
		/* Until the relay says otherwise, a failure is ours. */
		conn->end = END_ERROR;
		return consume_header(conn->lb_fd, reader->buffer,
				      header->header_len) == 0
			       ? HEADER_DONE
			       : HEADER_FAILED;
	case PROXYHDR_INVALID:
		log_header_problem(conn, error, reader->buffer, len);
		conn->end = error == PROXYHDR_ENOT_PROXY ? END_NO_HEADER
							 : END_BAD_HEADER;
		return HEADER_FAILED;
	case PROXYHDR_NEED_MORE:
		break;
	}
	if (len == reader->capacity && !reader->heap_buffer) {
		/*
		 * Only a v2 header with large TLVs gets here. Look again with
		 * room for any header before deciding anything, even when the
		 * peer has closed: the rest may well be in the socket.
		 */
		reader->buffer = malloc(PROXYHDR_MAX_LEN);
		if (reader->buffer == NULL) {
			conn->end = END_ERROR;
			return HEADER_FAILED;
		}
		reader->heap_buffer = true;
		reader->capacity = PROXYHDR_MAX_LEN;
		return HEADER_AGAIN;
	}
	if (reader->peer_closed) {
		conn->end = END_HEADER_TRUNCATED;
		return HEADER_FAILED;
	}
	if (set_int_option(conn->lb_fd, SOL_SOCKET, SO_RCVLOWAT,
			   (int)len + 1) != 0) {
		conn->end = END_ERROR;
		return HEADER_FAILED;
	}
	reader->lowat_raised = true;
	return HEADER_WAIT;
}

/* Peek at what has arrived and judge it. */
static enum header_step examine_header(struct connection *conn,
				       struct header_reader *reader,
				       struct proxyhdr *header)
{
	ssize_t n = recv(conn->lb_fd, reader->buffer, reader->capacity,
			 MSG_PEEK);

	if (n < 0 && errno == EINTR)
		return HEADER_AGAIN;
	if (n < 0 && errno == EAGAIN)
		return HEADER_WAIT;
	if (n == 0 || (n < 0 && errno == ECONNRESET && !reader->seen_bytes)) {
		/* Connect and close, or reset, with nothing sent: a check. */
		conn->end = END_HEALTH;
		return HEADER_FAILED;
	}
	if (n < 0) {
		conn->end = errno == ECONNRESET ? END_CLIENT_RESET : END_ERROR;
		return HEADER_FAILED;
	}
	reader->seen_bytes = true;
	return judge_header_bytes(conn, reader, (size_t)n, header);
}

static void log_header_wait_end(const struct connection *conn,
				const struct options *opts)
{
	char lb[ADDRESS_TEXT_SIZE];

	/* Every connection passes here: format only for a line to log. */
	if (conn->end == END_HEADER_TIMEOUT)
		log_error("lb=%s: no complete PROXY header after %d s",
			  format_address(&conn->lb_addr, lb, sizeof lb),
			  opts->header_timeout_ms / 1000);
	else if (conn->end == END_HEADER_TRUNCATED)
		log_error("lb=%s: closed in the middle of the PROXY header",
			  format_address(&conn->lb_addr, lb, sizeof lb));
}

/*
 * Read the PROXY header, however it is split, within the header timeout.
 * We peek, so nothing is taken from the socket until the parser has the
 * whole header; then exactly the header is consumed. While a piece is
 * missing, SO_RCVLOWAT is raised past what was peeked, so poll() sleeps
 * until a new byte arrives instead of reporting the unread bytes again.
 */
/*
 * The phases of a connection (header, connect, relay) are kept out of line
 * so that their frames share one stretch of stack instead of adding up:
 * the stack pages a connection's process writes are most of its memory.
 */
#define CONNECTION_PHASE __attribute__((noinline))

CONNECTION_PHASE static int read_proxy_header(struct connection *conn,
					      const struct options *opts,
					      struct proxyhdr *header)
{
	/*
	 * Room for any v1 header and for v2 with a few TLVs: a child's
	 * memory is mostly the stack pages it touches, so bigger headers
	 * get a heap buffer instead.
	 */
	uint8_t first_buffer[640];
	struct header_reader reader = {.buffer = first_buffer,
				       .capacity = sizeof first_buffer};
	int64_t deadline_ms = conn->start_ms + opts->header_timeout_ms;
	enum header_step step;

	while ((step = examine_header(conn, &reader, header)) != HEADER_DONE &&
	       step != HEADER_FAILED) {
		if (step == HEADER_AGAIN)
			continue;
		int ready = wait_for_more_header(conn->lb_fd, deadline_ms,
						 &reader.peer_closed);
		if (ready <= 0) {
			conn->end = ready == 0 ? END_HEADER_TIMEOUT : END_ERROR;
			step = HEADER_FAILED;
			break;
		}
	}
	if (reader.lowat_raised &&
	    set_int_option(conn->lb_fd, SOL_SOCKET, SO_RCVLOWAT, 1) != 0)
		step = HEADER_FAILED;
	if (reader.heap_buffer)
		free(reader.buffer);
	log_header_wait_end(conn, opts);
	return step == HEADER_DONE ? 0 : -1;
}

/* ::ffff:a.b.c.d as the IPv4 address it stands for; anything else unchanged. */
static void unmap_ipv4(struct sockaddr_storage *addr)
{
	const struct sockaddr_in6 *in6 = (const void *)addr;

	if (addr->ss_family != AF_INET6 ||
	    !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
		return;
	struct sockaddr_in in = {.sin_family = AF_INET,
				 .sin_port = in6->sin6_port};
	memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
	memset(addr, 0, sizeof *addr);
	memcpy(addr, &in, sizeof in);
}

/*
 * The client a header names, as *client; false when it names none (LOCAL,
 * UNKNOWN, UNSPEC and UNIX families), and *client is then AF_UNSPEC.
 */
static bool header_client(const struct proxyhdr *header,
			  struct sockaddr_storage *client)
{
	if (header->family != AF_INET && header->family != AF_INET6) {
		memset(client, 0, sizeof *client);
		client->ss_family = AF_UNSPEC;
		return false;
	}
	*client = header->src;
	unmap_ipv4(client);
	return true;
}

/*
 * The target follows the client's family from the header, not the family the
 * load balancer used to reach us; with --dynamic-destination it is the
 * header's destination. Without a client (client NULL) it is the target of
 * the load balancer's family, so health checks reach the application.
 */
static struct sockaddr_storage choose_target(const struct options *opts,
					     const struct proxyhdr *header,
					     const struct sockaddr_storage *client,
					     const struct sockaddr_storage *lb)
{
	struct sockaddr_storage family_of = client ? *client : *lb;

	if (client != NULL && opts->dynamic_destination) {
		struct sockaddr_storage target = header->dst;
		unmap_ipv4(&target);
		return target;
	}
	unmap_ipv4(&family_of);
	return family_of.ss_family == AF_INET ? opts->target4 : opts->target6;
}

/*
 * Without a client in the header, connect from our own address. A header
 * naming the very connection it came on carries no client either: haproxy's
 * check-send-proxy sends one, and on a shared host that address is taken.
 */
static void choose_endpoints(struct connection *conn,
			     const struct options *opts,
			     const struct proxyhdr *header)
{
	struct sockaddr_storage lb = conn->lb_addr;

	unmap_ipv4(&lb);
	conn->spoofed = header_client(header, &conn->client_addr) &&
			!same_address(&conn->client_addr, &lb);
	if (!conn->spoofed)
		conn->client_addr = lb; /* for the log line */
	conn->target_addr = choose_target(
		opts, header, conn->spoofed ? &conn->client_addr : NULL, &lb);
}

/*
 * Is addr one of this host's own addresses? Ask the routing table, as a
 * connect() of a UDP socket does (no packet is sent): the route to a local
 * address picks that very address as the source. Loopback addresses are
 * all local, whatever source their route picks. A bind() probe would be
 * fooled by net.ipv4.ip_nonlocal_bind. Returns 1, 0, or -1 on error.
 */
static int is_local_address(const struct sockaddr_storage *addr)
{
	const struct sockaddr_in *in = (const void *)addr;
	const struct sockaddr_in6 *in6 = (const void *)addr;
	struct sockaddr_storage source;
	socklen_t len = sizeof source;

	if (addr->ss_family == AF_INET &&
	    (ntohl(in->sin_addr.s_addr) >> 24) == IN_LOOPBACKNET)
		return 1;
	if (addr->ss_family == AF_INET6 &&
	    IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
		return 1;
	int fd = socket(addr->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)addr, address_length(addr)) !=
		    0 ||
	    getsockname(fd, (struct sockaddr *)&source, &len) != 0) {
		int saved_errno = errno;
		close(fd);
		errno = saved_errno;
		/* No route to it at all: certainly not one of ours. */
		return errno == ENETUNREACH || errno == EHOSTUNREACH ? 0 : -1;
	}
	close(fd);
	size_t addr_len, source_len;
	const uint8_t *bytes = address_bytes(addr, &addr_len);
	const uint8_t *source_bytes = address_bytes(&source, &source_len);
	return addr_len == source_len &&
	       memcmp(bytes, source_bytes, addr_len) == 0;
}

/*
 * --tproxy: the kernel handed us the client's own connection, so the peer
 * is the client and our end of it is the address the client meant to reach.
 * Filled in before the allow check, so every log line can name both.
 */
static int identify_tproxy_ends(struct connection *conn)
{
	socklen_t len = sizeof conn->destination_addr;

	conn->client_addr = conn->lb_addr;
	unmap_ipv4(&conn->client_addr);
	if (getsockname(conn->lb_fd, (struct sockaddr *)&conn->destination_addr,
			&len) != 0)
		return -1;
	unmap_ipv4(&conn->destination_addr);
	return 0;
}

/* The original destination, unless -4/-6 name a target for its family. */
static struct sockaddr_storage
choose_tproxy_target(const struct options *opts, const struct connection *conn)
{
	int family = conn->destination_addr.ss_family;

	if (family == AF_INET && opts->target4_given)
		return opts->target4;
	if (family == AF_INET6 && opts->target6_given)
		return opts->target6;
	return conn->destination_addr;
}

/*
 * The step that stands in for the header in --tproxy mode. A connection
 * addressed to this host itself was not diverted (a client reached the
 * listening port directly): its "original destination" is our own
 * listener, and connecting there would start the same connection again,
 * without end. So it is refused, with or without -4/-6: the listener is
 * only for diverted traffic.
 */
static int take_tproxy_endpoints(struct connection *conn,
				 const struct options *opts)
{
	char client[ADDRESS_TEXT_SIZE], destination[ADDRESS_TEXT_SIZE];
	int local = is_local_address(&conn->destination_addr);

	if (local < 0) {
		int error = errno;
		log_error("route lookup for %s: %s",
			  format_address(&conn->destination_addr, destination,
					 sizeof destination),
			  strerror(error));
		conn->end = END_ERROR;
		return -1;
	}
	if (local > 0) {
		log_error("refused client=%s: destination %s is this host's "
			  "own address, so the connection was not diverted "
			  "by TPROXY",
			  format_address(&conn->client_addr, client,
					 sizeof client),
			  format_address(&conn->destination_addr, destination,
					 sizeof destination));
		conn->end = END_NOT_DIVERTED;
		return -1;
	}
	conn->spoofed = true;
	conn->target_addr = choose_tproxy_target(opts, conn);
	/* Until the relay says otherwise, a failure is ours. */
	conn->end = END_ERROR;
	return 0;
}

/*
 * Fill in the client and the target: from the PROXY header, or, with
 * --tproxy, from the connection itself.
 */
CONNECTION_PHASE static int take_endpoints(struct connection *conn,
					   const struct options *opts)
{
	struct proxyhdr header;

	if (opts->tproxy)
		return take_tproxy_endpoints(conn, opts);
	if (read_proxy_header(conn, opts, &header) != 0)
		return -1;
	choose_endpoints(conn, opts, &header);
	return 0;
}

/*
 * IP_TRANSPARENT and SO_MARK fail with EPERM without CAP_NET_ADMIN; a bind
 * to a port below 1024 (a client's source port) fails with EACCES without
 * CAP_NET_BIND_SERVICE, which IP_TRANSPARENT does not stand in for.
 */
static const char *capability_hint(int error)
{
	if (error == EPERM)
		return " (mmproxy needs CAP_NET_ADMIN for this)";
	if (error == EACCES)
		return " (a port below 1024 needs CAP_NET_BIND_SERVICE)";
	return "";
}

/* Options that must be on the backend socket before bind(). */
static int prepare_backend_socket(int fd, const struct connection *conn,
				  const struct options *opts)
{
	int family = conn->target_addr.ss_family;

	if (conn->spoofed) {
		int level = family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
		int name = family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
		if (set_int_option(fd, level, name, 1) != 0) {
			log_error("setsockopt %s: %s%s",
				  family == AF_INET6 ? "IPV6_TRANSPARENT"
						     : "IP_TRANSPARENT",
				  strerror(errno), capability_hint(errno));
			return -1;
		}
		/* A previous connection's TIME_WAIT must not block this one. */
		if (set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0)
			return -1;
	}
	if (opts->mark_given && set_int_option(fd, SOL_SOCKET, SO_MARK,
					       (int)opts->mark) != 0) {
		log_error("setsockopt SO_MARK %u: %s%s", opts->mark,
			  strerror(errno), capability_hint(errno));
		return -1;
	}
	/* Only a latency hint: a failure changes nothing that matters. */
	(void)set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	return 0;
}

/* Bind to addr, with its own port or, when any_port, one the kernel picks. */
static int bind_address(int fd, const struct sockaddr_storage *addr,
			bool any_port)
{
	struct sockaddr_storage source = *addr;

	if (any_port && source.ss_family == AF_INET)
		((struct sockaddr_in *)&source)->sin_port = 0;
	else if (any_port)
		((struct sockaddr_in6 *)&source)->sin6_port = 0;
	return bind(fd, (struct sockaddr *)&source, address_length(&source));
}

/* Wait for a non-blocking connect() to finish; returns 0 or an errno value. */
static int finish_connect(int fd, int timeout_ms)
{
	int64_t deadline_ms = monotonic_ms() + timeout_ms;

	for (;;) {
		int64_t remaining = deadline_ms - monotonic_ms();
		if (remaining <= 0)
			return ETIMEDOUT;
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int ready = poll(&pfd, 1, (int)remaining);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready < 0)
			return errno;
		if (ready == 0)
			return ETIMEDOUT;
		int error = 0;
		socklen_t len = sizeof error;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
			return errno;
		return error;
	}
}

enum { SOCKET_FAILED = -1, BIND_FAILED = -2 };

/*
 * A socket for the backend, bound to the client's address when spoofing.
 * Returns the fd; SOCKET_FAILED, logged here; or BIND_FAILED with errno
 * set, for the caller to retry or report.
 */
static int open_backend_socket(const struct connection *conn,
			       const struct options *opts, bool any_port)
{
	int fd = socket(conn->target_addr.ss_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		log_error("socket: %s", strerror(errno));
		return SOCKET_FAILED;
	}
	if (prepare_backend_socket(fd, conn, opts) != 0) {
		close(fd);
		return SOCKET_FAILED;
	}
	if (conn->spoofed &&
	    bind_address(fd, &conn->client_addr, any_port) != 0) {
		int saved_errno = errno;
		close(fd);
		errno = saved_errno;
		return BIND_FAILED;
	}
	return fd;
}

static int connect_to_target(int fd, const struct connection *conn,
			     const struct options *opts)
{
	if (connect(fd, (const struct sockaddr *)&conn->target_addr,
		    address_length(&conn->target_addr)) == 0)
		return 0;
	return errno == EINPROGRESS
		       ? finish_connect(fd, opts->connect_timeout_ms)
		       : errno;
}

/*
 * With --port-fallback, a client port that is taken here gets a second try
 * from an ephemeral port: taken by a listening socket, bind() says
 * EADDRINUSE; taken by a live connection to the same target (the same
 * 4-tuple), connect() says EADDRNOTAVAIL; below 1024 without
 * CAP_NET_BIND_SERVICE, bind() says EACCES.
 */
static bool should_retry_with_any_port(const struct connection *conn,
				       const struct options *opts,
				       bool any_port, int error)
{
	return conn->spoofed && opts->port_fallback && !any_port &&
	       (error == EADDRINUSE || error == EADDRNOTAVAIL ||
		error == EACCES);
}

CONNECTION_PHASE static int connect_backend(struct connection *conn,
					    const struct options *opts)
{
	/* Formatted only for a log line: snprintf costs time and stack. */
	char target[ADDRESS_TEXT_SIZE], client[ADDRESS_TEXT_SIZE];
	bool any_port = false;

	if (conn->spoofed &&
	    conn->client_addr.ss_family != conn->target_addr.ss_family) {
		log_error("client %s and target %s differ in address family",
			  format_address(&conn->client_addr, client,
					 sizeof client),
			  format_address(&conn->target_addr, target,
					 sizeof target));
		conn->end = END_BIND_FAILED;
		return -1;
	}
	for (;;) {
		int fd = open_backend_socket(conn, opts, any_port);
		if (fd == BIND_FAILED &&
		    should_retry_with_any_port(conn, opts, any_port, errno)) {
			any_port = true;
			continue;
		}
		int bind_error = errno;
		if (fd == BIND_FAILED)
			log_error("bind %s: %s%s",
				  format_address(&conn->client_addr, client,
						 sizeof client),
				  strerror(bind_error),
				  capability_hint(bind_error));
		if (fd < 0) {
			/* A socket we cannot set up is not the client's
			 * doing: end=error, exit 1, so it shows. */
			conn->end = fd == BIND_FAILED ? END_BIND_FAILED
						      : END_ERROR;
			return -1;
		}
		int error = connect_to_target(fd, conn, opts);
		if (error == 0) {
			conn->backend_fd = fd;
			return 0;
		}
		close(fd);
		if (should_retry_with_any_port(conn, opts, any_port, error)) {
			any_port = true;
			continue;
		}
		log_error("connect %s from %s: %s",
			  format_address(&conn->target_addr, target,
					 sizeof target),
			  conn->spoofed ? format_address(&conn->client_addr,
							 client, sizeof client)
					: "mmproxy's own address",
			  strerror(error));
		conn->end = error == ETIMEDOUT ? END_CONNECT_TIMEOUT
					       : END_BACKEND_REFUSED;
		return -1;
	}
}

/* ---- relay -------------------------------------------------------------- */

/*
 * One direction of the relay. Small messages go through a small buffer
 * with read()/send(): for them that is cheaper than splice(), and a
 * connection that never carries bulk never creates a pipe. Once a read
 * fills the buffer, the direction switches to splice() through a pipe, so
 * bulk bytes are never copied to user space. Both directions' buffers fit
 * in one page: an idle connection's memory is mostly its stack pages.
 *
 * We read only when the buffer or pipe is empty: a pipe counts its room in
 * slots, not bytes, so "not full" cannot be known in advance, and a splice
 * that fails for want of room would look like an empty socket.
 */
struct relay_direction {
	int from_fd;
	int to_fd;
	int pipe_fds[2]; /* -1 until the direction carries bulk */
	size_t buffer_start;
	size_t pending;     /* bytes read and not yet written */
	bool wants_pipe;    /* the last read filled the buffer */
	bool read_closed;   /* from_fd sent EOF */
	bool write_shut;    /* shutdown(to_fd, SHUT_WR) done */
	bool reset;         /* one side failed: reset both */
	bool reset_by_from; /* the failure was on from_fd's side */
	uint64_t bytes;
	uint8_t buffer[1024];
};

enum { SPLICE_CHUNK = 65536 };

static void relay_direction_init(struct relay_direction *dir, int from_fd,
				 int to_fd)
{
	dir->from_fd = from_fd;
	dir->to_fd = to_fd;
	dir->pipe_fds[0] = dir->pipe_fds[1] = -1;
	dir->buffer_start = dir->pending = 0;
	dir->wants_pipe = dir->read_closed = dir->write_shut = false;
	dir->reset = dir->reset_by_from = false;
	dir->bytes = 0;
}

static void relay_direction_release(struct relay_direction *dir)
{
	if (dir->pipe_fds[0] >= 0) {
		close(dir->pipe_fds[0]);
		close(dir->pipe_fds[1]);
	}
}

static bool uses_pipe(const struct relay_direction *dir)
{
	return dir->pipe_fds[0] >= 0;
}

/* Returns bytes read, 0 at EOF, -1 with errno (EAGAIN: nothing there now). */
static ssize_t relay_read(struct relay_direction *dir)
{
	ssize_t n;

	/* Without a pipe (EMFILE...), the buffer still does the job. */
	if (dir->wants_pipe && !uses_pipe(dir) &&
	    pipe2(dir->pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0)
		dir->pipe_fds[0] = dir->pipe_fds[1] = -1;
	dir->wants_pipe = false;
	do {
		if (uses_pipe(dir))
			n = splice(dir->from_fd, NULL, dir->pipe_fds[1], NULL,
				   SPLICE_CHUNK,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		else
			n = read(dir->from_fd, dir->buffer, sizeof dir->buffer);
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		dir->pending = (size_t)n;
		dir->buffer_start = 0;
		dir->wants_pipe = (size_t)n == sizeof dir->buffer;
	}
	return n;
}

static ssize_t relay_write(struct relay_direction *dir)
{
	ssize_t n;

	do {
		if (uses_pipe(dir))
			n = splice(dir->pipe_fds[0], NULL, dir->to_fd, NULL,
				   dir->pending,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		else
			n = send(dir->to_fd, dir->buffer + dir->buffer_start,
				 dir->pending, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		dir->pending -= (size_t)n;
		dir->buffer_start += (size_t)n;
		dir->bytes += (uint64_t)n;
	}
	return n;
}

/*
 * Move what can be moved now without blocking. readable/writable come from
 * poll(); after a read we write at once, since the other socket is almost
 * always ready, which saves a poll() round per message.
 */
static void relay_shovel(struct relay_direction *dir, bool readable,
			 bool writable)
{
	bool just_read = false;

	if (readable && !dir->read_closed && dir->pending == 0) {
		ssize_t n = relay_read(dir);
		if (n == 0) {
			dir->read_closed = true;
		} else if (n > 0) {
			just_read = true;
		} else if (errno != EAGAIN) {
			dir->reset = true;
			dir->reset_by_from = true;
			return;
		}
	}
	if (dir->pending > 0 && (writable || just_read)) {
		if (relay_write(dir) < 0 && errno != EAGAIN) {
			dir->reset = true; /* to_fd's side failed */
			return;
		}
	}
	if (dir->read_closed && dir->pending == 0 && !dir->write_shut) {
		/* Half-close: the other direction keeps flowing. */
		if (shutdown(dir->to_fd, SHUT_WR) != 0 && errno != ENOTCONN) {
			dir->reset = true;
			return;
		}
		dir->write_shut = true;
	}
}

static short relay_events_for(const struct relay_direction *reading,
			      const struct relay_direction *writing)
{
	short events = 0;

	if (!reading->read_closed && reading->pending == 0)
		events |= POLLIN;
	if (writing->pending > 0)
		events |= POLLOUT;
	return events;
}

/* A pending socket error (a RST) on fd, as poll's POLLERR reports it. */
static bool has_socket_error(int fd)
{
	int error = 0;
	socklen_t len = sizeof error;

	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0 ||
	       error != 0;
}

/*
 * Relay until both directions are done: each side's EOF becomes a
 * shutdown(SHUT_WR) of the other side; a reset on either side resets both.
 */
CONNECTION_PHASE static void relay(struct connection *conn)
{
	struct relay_direction up, down; /* up: client to backend */
	bool backend_closed_first = false;

	relay_direction_init(&up, conn->lb_fd, conn->backend_fd);
	relay_direction_init(&down, conn->backend_fd, conn->lb_fd);
	conn->end = END_DONE;
	while (!(up.write_shut && down.write_shut)) {
		short lb_wanted = relay_events_for(&up, &down);
		short backend_wanted = relay_events_for(&down, &up);
		/*
		 * A socket we want nothing from stays out of poll(): once its
		 * peer's FIN is in and our side is shut, poll() reports
		 * POLLHUP on it at once, forever, and the loop would spin
		 * while the other side drains slowly.
		 */
		struct pollfd fds[2] = {
			{.fd = lb_wanted ? conn->lb_fd : -1, .events = lb_wanted},
			{.fd = backend_wanted ? conn->backend_fd : -1,
			 .events = backend_wanted},
		};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			conn->end = END_ERROR;
			break;
		}
		short lb_events = fds[0].revents, backend_events = fds[1].revents;
		if ((lb_events & POLLERR) && has_socket_error(conn->lb_fd)) {
			conn->end = END_CLIENT_RESET;
			break;
		}
		if ((backend_events & POLLERR) &&
		    has_socket_error(conn->backend_fd)) {
			conn->end = END_BACKEND_RESET;
			break;
		}
		bool was_down_open = !down.read_closed;
		relay_shovel(&up, lb_events & (POLLIN | POLLHUP | POLLRDHUP),
			     backend_events & POLLOUT);
		relay_shovel(&down, backend_events & (POLLIN | POLLHUP | POLLRDHUP),
			     lb_events & POLLOUT);
		if (up.reset || down.reset) {
			bool lb_failed = up.reset ? up.reset_by_from
						  : !down.reset_by_from;
			conn->end = lb_failed ? END_CLIENT_RESET
					      : END_BACKEND_RESET;
			break;
		}
		if (was_down_open && down.read_closed && !up.read_closed)
			backend_closed_first = true;
		if ((lb_events | backend_events) & POLLNVAL) {
			conn->end = END_ERROR;
			break;
		}
	}
	if (conn->end == END_DONE && backend_closed_first)
		conn->end = END_BACKEND_CLOSED;
	conn->bytes_up = up.bytes;
	conn->bytes_down = down.bytes;
	relay_direction_release(&up);
	relay_direction_release(&down);
}

/* ---- the life of one connection ----------------------------------------- */

static void log_connection_summary(const struct connection *conn)
{
	char client[ADDRESS_TEXT_SIZE], lb[ADDRESS_TEXT_SIZE],
		target[ADDRESS_TEXT_SIZE];
	/* --tproxy has no load balancer: lb= shows where the client was going. */
	const struct sockaddr_storage *lb_shown =
		conn->tproxy ? &conn->destination_addr : &conn->lb_addr;

	if (logger.verbosity < LOG_LEVEL_CONNECTIONS)
		return;
	log_msg(LOG_INFO,
		"conn client=%s lb=%s target=%s up=%llu down=%llu ms=%lld "
		"end=%s",
		conn->client_addr.ss_family ? format_address(&conn->client_addr,
							     client,
							     sizeof client)
					    : "-",
		format_address(lb_shown, lb, sizeof lb),
		conn->target_addr.ss_family ? format_address(&conn->target_addr,
							     target,
							     sizeof target)
					    : "-",
		(unsigned long long)conn->bytes_up,
		(unsigned long long)conn->bytes_down,
		(long long)(monotonic_ms() - conn->start_ms),
		end_names[conn->end]);
}

static bool is_normal_end(enum connection_end end)
{
	return end == END_DONE || end == END_BACKEND_CLOSED ||
	       end == END_HEALTH;
}

/* Ends the connection the way its end calls for: a RST where something failed. */
static void close_connection(struct connection *conn)
{
	bool abort = !is_normal_end(conn->end) &&
		     conn->end != END_NOT_ALLOWED &&
		     conn->end != END_NOT_DIVERTED;

	if (conn->backend_fd >= 0) {
		if (abort)
			close_with_reset(conn->backend_fd);
		else
			close(conn->backend_fd);
	}
	if (abort)
		close_with_reset(conn->lb_fd);
	else
		close(conn->lb_fd);
}

/*
 * Who is the load balancer? Our accept loop already knows, and made the
 * socket non-blocking; with a socket from inetd or systemd, ask. Returns 0,
 * 1 when the peer is already gone (a check that connected and reset at
 * once, as haproxy's do), or -1 on a system error.
 */
static int identify_load_balancer(struct connection *conn,
				  const struct sockaddr_storage *accepted_peer)
{
	socklen_t len = sizeof conn->lb_addr;

	if (accepted_peer != NULL) {
		conn->lb_addr = *accepted_peer;
		return 0;
	}
	if (getpeername(conn->lb_fd, (struct sockaddr *)&conn->lb_addr, &len) !=
	    0)
		return errno == ENOTCONN ? 1 : -1;
	if (set_nonblocking(conn->lb_fd) != 0 ||
	    set_int_option(conn->lb_fd, IPPROTO_TCP, TCP_NODELAY, 1) != 0)
		return errno == ECONNRESET ? 1 : -1;
	return 0;
}

/* A check without a client that carried nothing, whoever closed it and how. */
static bool is_health_check(const struct connection *conn)
{
	return (is_normal_end(conn->end) || conn->end == END_CLIENT_RESET) &&
	       !conn->spoofed && conn->bytes_up == 0 && conn->bytes_down == 0;
}

/* With --tproxy the peer is the client itself, and the check applies to it. */
static bool is_allowed_peer(const struct connection *conn,
			    const struct subnets *allowed)
{
	char peer[ADDRESS_TEXT_SIZE];

	if (allowed == NULL ||
	    subnets_contains(allowed, (const struct sockaddr *)&conn->lb_addr))
		return true;
	log_error("refused %s=%s: not in allowed subnets",
		  conn->tproxy ? "client" : "lb",
		  format_address(&conn->lb_addr, peer, sizeof peer));
	return false;
}

/*
 * Handle one connection from a load balancer (with --tproxy, from a client),
 * from the allow check to the end of the relay. Returns the process exit
 * status: 0 when the job was done (a refusal is a job done), 1 on a system
 * error.
 */
static int handle_connection(int lb_fd,
			     const struct sockaddr_storage *accepted_peer,
			     const struct options *opts,
			     const struct subnets *allowed)
{
	struct connection conn = {.lb_fd = lb_fd, .backend_fd = -1,
				  .tproxy = opts->tproxy, .end = END_ERROR};

	conn.start_ms = monotonic_ms();
	int identified = identify_load_balancer(&conn, accepted_peer);
	if (identified == 0 && conn.tproxy)
		identified = identify_tproxy_ends(&conn);
	if (identified < 0) {
		log_error("connection on fd %d: %s", lb_fd, strerror(errno));
		close(lb_fd);
		return EXIT_SYSTEM;
	}
	if (identified > 0) {
		conn.end = END_HEALTH;
	} else if (!is_allowed_peer(&conn, allowed)) {
		conn.end = END_NOT_ALLOWED;
	} else if (take_endpoints(&conn, opts) == 0 &&
		   connect_backend(&conn, opts) == 0) {
		relay(&conn);
		if (is_health_check(&conn))
			conn.end = END_HEALTH;
	}
	log_connection_summary(&conn);
	close_connection(&conn);
	return conn.end == END_ERROR ? EXIT_SYSTEM : 0;
}

/* ---- launch mode: the forking accept loop ------------------------------- */

struct listener {
	int listen_fd;
	int signal_fd;
	unsigned live_children;
	unsigned max_children; /* 0: no cap */
	int64_t paused_until_ms;
	struct rate_limit accept_error_log;
	struct rate_limit limit_log;
	pid_t *sibling_pids; /* other accept processes, for --listeners */
	unsigned sibling_count;
};

/* After EMFILE and friends, stop accepting this long, then try again. */
enum { ACCEPT_BACKOFF_MS = 100, LOG_INTERVAL_S = 10, ACCEPT_BATCH = 32 };

/* The signals the accept loop reads from its signalfd. */
static void listener_signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
}

static void reap_children(struct listener *l)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		bool was_sibling = false;
		for (unsigned i = 0; i < l->sibling_count; i++) {
			if (l->sibling_pids[i] == pid) {
				l->sibling_pids[i] = 0;
				was_sibling = true;
				log_msg(LOG_ERR, "accept process %ld exited",
					(long)pid);
			}
		}
		if (!was_sibling && l->live_children > 0)
			l->live_children--;
	}
}

/* Reads every pending signal; returns true when one of them asks us to stop. */
static bool read_signals(int signal_fd, bool *child_exited)
{
	struct signalfd_siginfo info;
	bool stop = false;

	while (read(signal_fd, &info, sizeof info) == sizeof info) {
		if (info.ssi_signo == SIGCHLD)
			*child_exited = true;
		else
			stop = true;
	}
	return stop;
}

/* Returns true when the listener must stop. */
static bool handle_signals(struct listener *l)
{
	bool child_exited = false;
	bool stop = read_signals(l->signal_fd, &child_exited);

	if (child_exited)
		reap_children(l);
	return stop;
}

static void stop_siblings(const struct listener *l)
{
	for (unsigned i = 0; i < l->sibling_count; i++)
		if (l->sibling_pids[i] > 0)
			kill(l->sibling_pids[i], SIGTERM);
}

static void pause_accepting(struct listener *l, const char *why, int error)
{
	l->paused_until_ms = monotonic_ms() + ACCEPT_BACKOFF_MS;
	if (rate_limit_allows(&l->accept_error_log, LOG_INTERVAL_S)) {
		log_msg(LOG_WARNING,
			"%s: %s; pausing accept for %d ms (%u similar "
			"messages held back since the last one)",
			why, strerror(error), ACCEPT_BACKOFF_MS,
			l->accept_error_log.held_back);
	}
}

/* The child side of a fork: it owns the connection and nothing else. */
__attribute__((noreturn)) static void
run_connection_child(struct listener *l, int client_fd,
		     const struct sockaddr_storage *peer,
		     const struct options *opts, const struct subnets *allowed)
{
	sigset_t only_interrupt;

	close(l->listen_fd);
	close(l->signal_fd);
	/*
	 * SIGTERM ends a connection as usual; a terminal's ^C is for the
	 * listener, so it stays blocked: connections run to their end.
	 */
	sigemptyset(&only_interrupt);
	sigaddset(&only_interrupt, SIGINT);
	if (sigprocmask(SIG_SETMASK, &only_interrupt, NULL) != 0)
		_exit(EXIT_SYSTEM);
	_exit(handle_connection(client_fd, peer, opts, allowed));
}

static bool is_at_limit(const struct listener *l)
{
	return l->max_children != 0 && l->live_children >= l->max_children;
}

/* Out of line: only the loop's frame above the child's (see run_listener). */
__attribute__((noinline)) static void
accept_connections(struct listener *l, const struct options *opts,
		   const struct subnets *allowed)
{
	for (int i = 0; i < ACCEPT_BATCH && !is_at_limit(l); i++) {
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof peer;
		int client_fd = accept4(l->listen_fd, (struct sockaddr *)&peer,
					&peer_len, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (client_fd < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == ECONNABORTED || errno == EPROTO ||
			    errno == EPERM)
				continue;
			pause_accepting(l, "accept", errno);
			return;
		}
		/*
		 * _Fork(), not fork(): it skips the atfork handlers and the
		 * resets of glibc's internal locks and thread stacks, whose
		 * writes to libc pages after every fork would turn each
		 * child's copy of those pages private (16 KiB more per
		 * connection). Safe only while this process never has a
		 * second thread: no lock can be held at the fork.
		 */
		pid_t pid = _Fork();
		if (pid == 0)
			run_connection_child(l, client_fd, &peer, opts,
					     allowed);
		if (pid < 0) {
			close_with_reset(client_fd);
			pause_accepting(l, "fork", errno);
			return;
		}
		close(client_fd);
		l->live_children++;
	}
	if (is_at_limit(l) && rate_limit_allows(&l->limit_log, LOG_INTERVAL_S))
		log_msg(LOG_WARNING,
			"connection limit %u reached: new connections wait in "
			"the backlog",
			l->max_children);
}

/*
 * The accept loop never dies of an accept error: EMFILE, ENFILE, ENOBUFS
 * and the like pause it briefly, and at the connection limit it simply
 * leaves the listening socket out of poll() so the backlog holds new
 * connections. SIGTERM or SIGINT stops it at once; connections live on in
 * their own processes.
 *
 * Out of line, so that run_listener can choose where its frame starts (see
 * there); it counts children in a copy of the listener in that frame,
 * since a page the loop writes after a fork is the child's.
 */
__attribute__((noinline)) static int
accept_loop(const struct listener *set_up, const struct options *opts,
	    const struct subnets *allowed)
{
	struct listener copy = *set_up;
	struct listener *l = &copy;

	for (;;) {
		int64_t now = monotonic_ms();
		bool paused = l->paused_until_ms > now;
		bool accepting = !paused && !is_at_limit(l);
		struct pollfd fds[2] = {
			{.fd = l->signal_fd, .events = POLLIN},
			{.fd = accepting ? l->listen_fd : -1, .events = POLLIN},
		};
		int timeout_ms = paused ? (int)(l->paused_until_ms - now) : -1;
		if (poll(fds, 2, timeout_ms) < 0) {
			if (errno == EINTR)
				continue;
			die(EXIT_SYSTEM, "poll: %s", strerror(errno));
		}
		if ((fds[0].revents & POLLIN) && handle_signals(l)) {
			stop_siblings(l);
			return 0;
		}
		if (fds[1].revents & POLLIN)
			accept_connections(l, opts, allowed);
	}
}

/*
 * An idle connection's memory is mostly stack pages: those its process
 * writes, and those the accept loop writes after the fork, whose original
 * then belongs to the child alone. Both write just below the accept loop's
 * frame: the loop, accept and fork, and in the child the phases of a
 * connection (CONNECTION_PHASE), about 3.5 KiB together. Started near the
 * top of a page, all of it fits in that page: one stack page a connection,
 * where a frame starting anywhere would straddle two or three.
 */
#define STACK_PAGE 4096
#define STACK_ROOM_WANTED 4032

static int run_listener(struct listener *l, const struct options *opts,
			const struct subnets *allowed)
{
	char here;
	size_t padding = ((uintptr_t)&here + STACK_PAGE - STACK_ROOM_WANTED) %
			 STACK_PAGE;
	/* alloca: the stack pointer stays moved while the loop runs. */
	char *pad = __builtin_alloca(padding + 1);
	__asm__ volatile("" : : "r"(pad) : "memory");
	sigset_t signals;

	listener_signal_set(&signals);
	l->signal_fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
	/* Accepted sockets inherit TCP_NODELAY: small messages go at once. */
	if (l->signal_fd < 0 || set_nonblocking(l->listen_fd) != 0 ||
	    set_int_option(l->listen_fd, IPPROTO_TCP, TCP_NODELAY, 1) != 0)
		die(EXIT_SYSTEM, "accept loop set-up: %s", strerror(errno));
	return accept_loop(l, opts, allowed);
}

/*
 * --listeners N: N accept processes, each on its own SO_REUSEPORT socket so
 * the kernel spreads connections among them. All sockets are bound before
 * any process starts, so a bad address stops everything at once.
 */
static int run_standalone(const struct options *opts,
			  const struct subnets *allowed)
{
	unsigned count = opts->listeners;
	unsigned per_listener_cap =
		(opts->max_connections + count - 1) / count;
	/*
	 * On the heap, not the stack: every stack page the accept loop
	 * writes after a fork becomes a private copy in that child.
	 */
	int *fds = calloc(count, sizeof *fds);
	pid_t *pids = calloc(count, sizeof *pids);
	int status;

	if (fds == NULL || pids == NULL)
		die(EXIT_SYSTEM, "calloc: %s", strerror(errno));
	for (unsigned i = 0; i < count; i++)
		fds[i] = open_listener(opts, count > 1);
	pid_t first_pid = getpid();
	for (unsigned i = 1; i < count; i++) {
		pids[i - 1] = fork();
		if (pids[i - 1] < 0)
			die(EXIT_SYSTEM, "fork: %s", strerror(errno));
		if (pids[i - 1] == 0) {
			/* An accept process goes when the first one goes. */
			if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
				die(EXIT_SYSTEM, "prctl: %s", strerror(errno));
			/* The first may have gone before prctl() took effect. */
			if (getppid() != first_pid)
				_exit(0);
			for (unsigned j = 0; j < count; j++)
				if (j != i)
					close(fds[j]);
			struct listener sibling = {.listen_fd = fds[i],
						   .max_children =
							   per_listener_cap};
			status = run_listener(&sibling, opts, allowed);
			free(fds);
			free(pids);
			return status;
		}
	}
	for (unsigned i = 1; i < count; i++)
		close(fds[i]);
	struct listener first = {.listen_fd = fds[0],
				 .max_children = per_listener_cap,
				 .sibling_pids = pids,
				 .sibling_count = count - 1};
	status = run_listener(&first, opts, allowed);
	free(fds);
	free(pids);
	return status;
}

/* ---- launch modes: inetd and systemd socket activation ------------------ */

/*
 * systemd passes sockets from fd 3 on, for the process named in LISTEN_PID.
 * The variables are cleared so that nothing we start takes them for its own.
 */
static int socket_activation_fd(void)
{
	const char *pid_text = getenv("LISTEN_PID");
	const char *fds_text = getenv("LISTEN_FDS");
	char *end;
	long pid, fds;

	if (pid_text == NULL || fds_text == NULL)
		return -1;
	errno = 0;
	pid = strtol(pid_text, &end, 10);
	if (errno != 0 || *end != '\0' || pid != (long)getpid())
		return -1;
	fds = strtol(fds_text, &end, 10);
	if (errno != 0 || *end != '\0' || fds < 1 || fds > INT_MAX - 3)
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (fds > 1)
		log_msg(LOG_WARNING, "%ld sockets passed; using the first",
			fds);
	if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0)
		die(EXIT_SYSTEM, "socket activation fd 3: %s", strerror(errno));
	return 3;
}

/*
 * Under xinetd, or systemd Accept=yes with StandardOutput/StandardError left
 * on the socket, fds 1 and 2 are the client. Nothing may ever be written
 * there: point them at /dev/null and log to syslog instead. Closed standard
 * fds are opened on /dev/null so sockets never land on 0-2 by accident.
 */
static void protect_standard_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		bool closed = fcntl(fd, F_GETFD) < 0;
		if (!closed && (fd == 0 || !is_network_socket(fd)))
			continue;
		int null_fd = open("/dev/null", O_RDWR);
		if (null_fd < 0)
			_exit(EXIT_SYSTEM);
		if (null_fd != fd) {
			if (dup2(null_fd, fd) < 0)
				_exit(EXIT_SYSTEM);
			close(null_fd);
		}
		if (fd == STDERR_FILENO)
			logger.use_syslog = true;
	}
	if (logger.use_syslog)
		openlog("mmproxy", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

/* ---- UDP: the long-lived datagram mode ---------------------------------- */

/*
 * Each datagram from the load balancer starts with a PROXY v2 header (DGRAM)
 * and the rest is payload. A flow is one (load balancer address:port,
 * client address:port) pair, with its own socket bound to the client's
 * address and connected to the target, so the application sees the client
 * and its replies come back to that socket, to be sent on to the load
 * balancer. Flows live in a hash table for lookup and in a list ordered by
 * last activity: since every flow has the same idle limit, that order is
 * also expiry order, so expiring never scans a live flow.
 */
/* Room for one IP_PKTINFO or IPV6_PKTINFO control message. */
#define UDP_CONTROL_SIZE CMSG_SPACE(sizeof(struct in6_pktinfo))

struct udp_flow {
	struct sockaddr_storage lb_addr;
	struct sockaddr_storage client_addr; /* AF_UNSPEC for LOCAL/UNSPEC */
	struct sockaddr_storage target_addr;
	/*
	 * For replies: the address the load balancer sent to, as a PKTINFO
	 * control message. On a socket bound to 0.0.0.0 or [::] the route
	 * would otherwise pick the source, and a load balancer whose socket
	 * is connected to the address it used drops replies from another.
	 */
	union {
		struct cmsghdr align;
		uint8_t bytes[UDP_CONTROL_SIZE];
	} reply_control;
	size_t reply_control_len;
	int fd;
	int64_t last_active_ms;
	struct udp_flow *hash_next;
	struct udp_flow *idle_prev; /* toward the least recently active */
	struct udp_flow *idle_next;
};

enum {
	UDP_BATCH = 32,
	UDP_BUFFER_SIZE = 65536,
	UDP_RECEIVE_BUFFER = 4 << 20,
};

/* Why datagrams were dropped, counted for the log. */
enum udp_drop {
	UDP_DROP_NOT_ALLOWED,
	UDP_DROP_BAD_HEADER,
	UDP_DROP_NOT_DGRAM,
	UDP_DROP_FLOW_LIMIT,
	UDP_DROP_FLOW_FAILED,
	UDP_DROP_COUNT,
};

static const char *const udp_drop_reasons[] = {
	[UDP_DROP_NOT_ALLOWED] = "load balancer not in allowed subnets",
	[UDP_DROP_BAD_HEADER] = "no valid PROXY v2 header",
	[UDP_DROP_NOT_DGRAM] = "header transport is not DGRAM",
	[UDP_DROP_FLOW_LIMIT] = "flow limit reached",
	[UDP_DROP_FLOW_FAILED] = "could not open the flow's socket",
};

struct udp_proxy {
	const struct options *opts;
	const struct subnets *allowed;
	int listen_fd;
	int epoll_fd;
	int signal_fd;
	struct udp_flow *flow_pool; /* max_flows entries, reserved up front */
	unsigned flows_handed_out;  /* pool entries used at least once */
	struct udp_flow *free_flows; /* closed flows, for reuse */
	uint32_t hash_seed;
	struct udp_flow **buckets;
	size_t bucket_mask;
	struct udp_flow *idle_head; /* least recently active */
	struct udp_flow *idle_tail;
	unsigned live_flows;
	int64_t idle_limit_ms;
	uint64_t drops[UDP_DROP_COUNT];
	struct rate_limit drop_log;
	struct rate_limit send_error_log;
	/* Receive batch: one buffer per datagram, allocated once. */
	uint8_t *buffers;
	struct mmsghdr messages[UDP_BATCH];
	struct iovec iovecs[UDP_BATCH];
	struct sockaddr_storage sources[UDP_BATCH];
	union {
		struct cmsghdr align;
		uint8_t bytes[UDP_CONTROL_SIZE];
	} controls[UDP_BATCH];
	/* Forwarding batch: payloads inside the receive buffers. */
	struct mmsghdr send_messages[UDP_BATCH];
	struct iovec send_iovecs[UDP_BATCH];
};

/* FNV-1a over the parts of an address that identify it. */
static uint32_t hash_address(uint32_t hash, const struct sockaddr_storage *addr)
{
	const uint8_t *bytes = NULL;
	size_t len = 0;
	uint16_t port = 0;

	/* AF_UNSPEC (a flow without client) hashes as no address at all. */
	if (addr->ss_family == AF_INET || addr->ss_family == AF_INET6) {
		bytes = address_bytes(addr, &len);
		port = addr->ss_family == AF_INET6
			       ? ((const struct sockaddr_in6 *)addr)->sin6_port
			       : ((const struct sockaddr_in *)addr)->sin_port;
	}
	for (size_t i = 0; i < len; i++)
		hash = (hash ^ bytes[i]) * 16777619u;
	hash = (hash ^ (port & 0xff)) * 16777619u;
	return (hash ^ (uint32_t)(port >> 8)) * 16777619u;
}

static struct udp_flow **udp_bucket(struct udp_proxy *proxy,
				    const struct sockaddr_storage *lb,
				    const struct sockaddr_storage *client)
{
	uint32_t hash = hash_address(hash_address(proxy->hash_seed, lb), client);
	return &proxy->buckets[hash & proxy->bucket_mask];
}

static struct udp_flow *udp_find_flow(struct udp_proxy *proxy,
				      const struct sockaddr_storage *lb,
				      const struct sockaddr_storage *client)
{
	for (struct udp_flow *flow = *udp_bucket(proxy, lb, client); flow;
	     flow = flow->hash_next)
		if (same_address(&flow->lb_addr, lb) &&
		    same_address(&flow->client_addr, client))
			return flow;
	return NULL;
}

static void idle_list_remove(struct udp_proxy *proxy, struct udp_flow *flow)
{
	if (flow->idle_prev)
		flow->idle_prev->idle_next = flow->idle_next;
	else
		proxy->idle_head = flow->idle_next;
	if (flow->idle_next)
		flow->idle_next->idle_prev = flow->idle_prev;
	else
		proxy->idle_tail = flow->idle_prev;
	flow->idle_prev = flow->idle_next = NULL;
}

static void idle_list_append(struct udp_proxy *proxy, struct udp_flow *flow)
{
	flow->idle_prev = proxy->idle_tail;
	flow->idle_next = NULL;
	if (proxy->idle_tail)
		proxy->idle_tail->idle_next = flow;
	else
		proxy->idle_head = flow;
	proxy->idle_tail = flow;
}

/* Activity in either direction keeps a flow alive. */
static void udp_touch_flow(struct udp_proxy *proxy, struct udp_flow *flow,
			   int64_t now_ms)
{
	flow->last_active_ms = now_ms;
	if (proxy->idle_tail != flow) {
		idle_list_remove(proxy, flow);
		idle_list_append(proxy, flow);
	}
}

static void udp_log_flow(const char *event, const struct udp_proxy *proxy,
			 const struct udp_flow *flow)
{
	char client[ADDRESS_TEXT_SIZE], lb[ADDRESS_TEXT_SIZE],
		target[ADDRESS_TEXT_SIZE];

	if (logger.verbosity < LOG_LEVEL_CONNECTIONS)
		return;
	log_msg(LOG_INFO, "udp flow %s client=%s lb=%s target=%s flows=%u",
		event,
		format_address(&flow->client_addr, client, sizeof client),
		format_address(&flow->lb_addr, lb, sizeof lb),
		format_address(&flow->target_addr, target, sizeof target),
		proxy->live_flows);
}

/*
 * A flow entry: a closed one if any, else the next never-used one of the
 * pool, so the pool's pages are touched only as the flow count grows.
 */
static struct udp_flow *udp_take_flow(struct udp_proxy *proxy)
{
	struct udp_flow *flow = proxy->free_flows;

	if (flow != NULL) {
		proxy->free_flows = flow->hash_next;
		return flow;
	}
	if (proxy->flows_handed_out < proxy->opts->max_flows)
		return &proxy->flow_pool[proxy->flows_handed_out++];
	return NULL;
}

static void udp_release_flow(struct udp_proxy *proxy, struct udp_flow *flow)
{
	flow->hash_next = proxy->free_flows;
	proxy->free_flows = flow;
}

static void udp_close_flow(struct udp_proxy *proxy, struct udp_flow *flow,
			   const char *why)
{
	struct udp_flow **link = udp_bucket(proxy, &flow->lb_addr,
					    &flow->client_addr);

	while (*link != flow)
		link = &(*link)->hash_next;
	*link = flow->hash_next;
	idle_list_remove(proxy, flow);
	close(flow->fd); /* also removes it from the epoll set */
	proxy->live_flows--;
	udp_log_flow(why, proxy, flow);
	udp_release_flow(proxy, flow);
}

static void udp_expire_flows(struct udp_proxy *proxy, int64_t now_ms)
{
	while (proxy->idle_head &&
	       now_ms - proxy->idle_head->last_active_ms >= proxy->idle_limit_ms)
		udp_close_flow(proxy, proxy->idle_head, "closed (idle)");
}

/* error: an errno value that says more, or 0. */
static void udp_count_drop(struct udp_proxy *proxy, enum udp_drop reason,
			   const struct sockaddr_storage *lb, int error)
{
	char lb_text[ADDRESS_TEXT_SIZE];

	proxy->drops[reason]++;
	if (logger.verbosity >= LOG_LEVEL_ERRORS &&
	    rate_limit_allows(&proxy->drop_log, LOG_INTERVAL_S))
		log_msg(LOG_WARNING,
			"udp: dropped a datagram from lb=%s: %s%s%s%s (dropped "
			"so far: %llu not allowed, %llu bad header, %llu not "
			"DGRAM, %llu flow limit, %llu socket failure)",
			format_address(lb, lb_text, sizeof lb_text),
			udp_drop_reasons[reason], error ? ": " : "",
			error ? strerror(error) : "",
			error ? capability_hint(error) : "",
			(unsigned long long)proxy->drops[UDP_DROP_NOT_ALLOWED],
			(unsigned long long)proxy->drops[UDP_DROP_BAD_HEADER],
			(unsigned long long)proxy->drops[UDP_DROP_NOT_DGRAM],
			(unsigned long long)proxy->drops[UDP_DROP_FLOW_LIMIT],
			(unsigned long long)proxy->drops[UDP_DROP_FLOW_FAILED]);
}

/*
 * The flow's socket: from the client's address when there is one, to the
 * target. The same client seen through a second load balancer is a second
 * flow, whose socket cannot share the first one's address and port: the
 * kernel would hand every reply to one of the two. It takes a port the
 * kernel picks instead, so the application sees the client's address with
 * another port, and each load balancer gets its own replies. So does a
 * port below 1024 without CAP_NET_BIND_SERVICE. Returns the fd, or -1 with
 * errno set.
 */
static int udp_open_flow_socket(const struct udp_proxy *proxy,
				const struct udp_flow *flow)
{
	const struct options *opts = proxy->opts;
	int family = flow->target_addr.ss_family;
	bool spoofed = flow->client_addr.ss_family != AF_UNSPEC;
	int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (spoofed &&
	    (set_int_option(fd, family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP,
			    family == AF_INET6 ? IPV6_TRANSPARENT
					       : IP_TRANSPARENT,
			    1) != 0 ||
	     (bind_address(fd, &flow->client_addr, false) != 0 &&
	      ((errno != EADDRINUSE && errno != EACCES) ||
	       bind_address(fd, &flow->client_addr, true) != 0))))
		goto fail;
	if (opts->mark_given &&
	    set_int_option(fd, SOL_SOCKET, SO_MARK, (int)opts->mark) != 0)
		goto fail;
	if (connect(fd, (const struct sockaddr *)&flow->target_addr,
		    address_length(&flow->target_addr)) != 0)
		goto fail;
	return fd;
fail:;
	int saved_errno = errno;
	close(fd);
	errno = saved_errno;
	return -1;
}

static struct udp_flow *udp_open_flow(struct udp_proxy *proxy,
				      const struct sockaddr_storage *lb,
				      const struct sockaddr_storage *client,
				      const struct proxyhdr *header,
				      int64_t now_ms)
{
	struct udp_flow *flow = udp_take_flow(proxy);

	if (flow == NULL) {
		udp_count_drop(proxy, UDP_DROP_FLOW_LIMIT, lb, 0);
		return NULL;
	}
	memset(flow, 0, sizeof *flow);
	flow->lb_addr = *lb;
	flow->client_addr = *client;
	flow->target_addr = choose_target(
		proxy->opts, header,
		client->ss_family != AF_UNSPEC ? client : NULL, lb);
	flow->fd = udp_open_flow_socket(proxy, flow);
	struct epoll_event event = {.events = EPOLLIN, .data.ptr = flow};
	if (flow->fd < 0 || epoll_ctl(proxy->epoll_fd, EPOLL_CTL_ADD, flow->fd,
				      &event) != 0) {
		int error = errno;
		if (flow->fd >= 0)
			close(flow->fd);
		udp_release_flow(proxy, flow);
		udp_count_drop(proxy, UDP_DROP_FLOW_FAILED, lb, error);
		return NULL;
	}
	struct udp_flow **bucket = udp_bucket(proxy, &flow->lb_addr,
					      &flow->client_addr);
	flow->hash_next = *bucket;
	*bucket = flow;
	flow->last_active_ms = now_ms;
	idle_list_append(proxy, flow);
	proxy->live_flows++;
	udp_log_flow("open", proxy, flow);
	return flow;
}

/*
 * One datagram from a load balancer: check it, parse its header, find or
 * open its flow. Returns the flow, with *header_len the bytes before the
 * payload, or NULL when the datagram is dropped.
 */
static struct udp_flow *udp_flow_for(struct udp_proxy *proxy,
				     const uint8_t *datagram, size_t len,
				     const struct sockaddr_storage *lb,
				     int64_t now_ms, size_t *header_len)
{
	struct proxyhdr header;

	if (proxy->allowed &&
	    !subnets_contains(proxy->allowed, (const struct sockaddr *)lb)) {
		udp_count_drop(proxy, UDP_DROP_NOT_ALLOWED, lb, 0);
		return NULL;
	}
	if (proxyhdr_parse(datagram, len, &header, NULL) != PROXYHDR_COMPLETE ||
	    header.version != 2) {
		udp_count_drop(proxy, UDP_DROP_BAD_HEADER, lb, 0);
		return NULL;
	}
	/* Spec 2.2: UNSPEC transport goes with LOCAL or UNSPEC family only. */
	if (header.command == PROXYHDR_CMD_PROXY &&
	    header.transport != PROXYHDR_TRANSPORT_DGRAM &&
	    !(header.transport == PROXYHDR_TRANSPORT_UNSPEC &&
	      header.family == AF_UNSPEC)) {
		udp_count_drop(proxy, UDP_DROP_NOT_DGRAM, lb, 0);
		return NULL;
	}
	struct sockaddr_storage client;
	header_client(&header, &client);
	struct udp_flow *flow = udp_find_flow(proxy, lb, &client);
	if (flow == NULL)
		flow = udp_open_flow(proxy, lb, &client, &header, now_ms);
	if (flow != NULL) {
		udp_touch_flow(proxy, flow, now_ms);
		*header_len = header.header_len;
	}
	return flow;
}

/* A failed send, logged at most once an interval. */
static void udp_log_send_error(struct udp_proxy *proxy, const char *what,
			       int error)
{
	if (logger.verbosity >= LOG_LEVEL_ERRORS &&
	    rate_limit_allows(&proxy->send_error_log, LOG_INTERVAL_S)) {
		log_msg(LOG_WARNING, "udp %s: %s (%u similar messages held "
				     "back since the last one)",
			what, strerror(error), proxy->send_error_log.held_back);
	}
}

/* Send the payloads gathered for one flow with one system call. */
static void udp_send_payloads(struct udp_proxy *proxy, struct udp_flow *flow,
			      struct mmsghdr *messages, unsigned count)
{
	unsigned sent = 0;

	while (sent < count) {
		int n = sendmmsg(flow->fd, messages + sent, count - sent, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* ECONNREFUSED: an earlier datagram found no listener. */
			if (errno != EAGAIN && errno != ECONNREFUSED)
				udp_log_send_error(proxy, "send to the target",
						   errno);
			/* This datagram is lost, as UDP allows; not the rest. */
			sent++;
			continue;
		}
		sent += (unsigned)n;
	}
}

static void udp_setup_batch(struct udp_proxy *proxy, bool with_sources)
{
	for (int i = 0; i < UDP_BATCH; i++) {
		proxy->iovecs[i].iov_base = proxy->buffers +
					    (size_t)i * UDP_BUFFER_SIZE;
		proxy->iovecs[i].iov_len = UDP_BUFFER_SIZE;
		memset(&proxy->messages[i].msg_hdr, 0,
		       sizeof proxy->messages[i].msg_hdr);
		proxy->messages[i].msg_hdr.msg_iov = &proxy->iovecs[i];
		proxy->messages[i].msg_hdr.msg_iovlen = 1;
		if (with_sources) {
			proxy->messages[i].msg_hdr.msg_name = &proxy->sources[i];
			proxy->messages[i].msg_hdr.msg_namelen =
				sizeof proxy->sources[i];
			proxy->messages[i].msg_hdr.msg_control =
				proxy->controls[i].bytes;
			proxy->messages[i].msg_hdr.msg_controllen =
				sizeof proxy->controls[i].bytes;
		}
	}
}

/*
 * Keep the address this datagram was sent to, as the control message that
 * makes replies leave from it. The latest datagram wins, as for lb_addr.
 */
static void udp_note_local_address(struct udp_flow *flow,
				   struct msghdr *received)
{
	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(received); cmsg;
	     cmsg = CMSG_NXTHDR(received, cmsg)) {
		struct cmsghdr *reply = &flow->reply_control.align;
		if (cmsg->cmsg_level == IPPROTO_IP &&
		    cmsg->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo info;
			memcpy(&info, CMSG_DATA(cmsg), sizeof info);
			/*
			 * ipi_spec_dst is the local address the kernel would
			 * answer from: the destination for unicast, the
			 * interface's address for a broadcast.
			 */
			struct in_pktinfo out = {.ipi_spec_dst =
							 info.ipi_spec_dst};
			reply->cmsg_level = IPPROTO_IP;
			reply->cmsg_type = IP_PKTINFO;
			reply->cmsg_len = CMSG_LEN(sizeof out);
			memcpy(CMSG_DATA(reply), &out, sizeof out);
			flow->reply_control_len = CMSG_SPACE(sizeof out);
		} else if (cmsg->cmsg_level == IPPROTO_IPV6 &&
			   cmsg->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo info;
			memcpy(&info, CMSG_DATA(cmsg), sizeof info);
			/* A multicast group is no source: let the route pick. */
			if (IN6_IS_ADDR_MULTICAST(&info.ipi6_addr)) {
				flow->reply_control_len = 0;
				continue;
			}
			struct in6_pktinfo out = {.ipi6_addr = info.ipi6_addr};
			reply->cmsg_level = IPPROTO_IPV6;
			reply->cmsg_type = IPV6_PKTINFO;
			reply->cmsg_len = CMSG_LEN(sizeof out);
			memcpy(CMSG_DATA(reply), &out, sizeof out);
			flow->reply_control_len = CMSG_SPACE(sizeof out);
		}
	}
}

/*
 * Forward a received batch: runs of datagrams for the same flow (a busy
 * client) leave in one sendmmsg().
 */
static void udp_forward_batch(struct udp_proxy *proxy, unsigned count)
{
	struct udp_flow *run_flow = NULL;
	unsigned run_length = 0;
	int64_t now_ms = monotonic_ms();

	for (unsigned i = 0; i < count; i++) {
		uint8_t *datagram = proxy->iovecs[i].iov_base;
		size_t len = proxy->messages[i].msg_len, header_len = 0;
		struct udp_flow *flow = udp_flow_for(
			proxy, datagram, len, &proxy->sources[i], now_ms,
			&header_len);
		if (flow != run_flow && run_length > 0) {
			udp_send_payloads(proxy, run_flow,
					  proxy->send_messages, run_length);
			run_length = 0;
		}
		run_flow = flow;
		if (flow == NULL)
			continue;
		udp_note_local_address(flow, &proxy->messages[i].msg_hdr);
		struct iovec *payload = &proxy->send_iovecs[run_length];
		payload->iov_base = datagram + header_len;
		payload->iov_len = len - header_len;
		struct msghdr *msg = &proxy->send_messages[run_length].msg_hdr;
		memset(msg, 0, sizeof *msg);
		msg->msg_iov = payload;
		msg->msg_iovlen = 1;
		run_length++;
	}
	if (run_length > 0)
		udp_send_payloads(proxy, run_flow, proxy->send_messages,
				  run_length);
}

static void udp_receive_from_load_balancers(struct udp_proxy *proxy)
{
	for (;;) {
		udp_setup_batch(proxy, true);
		int count = recvmmsg(proxy->listen_fd, proxy->messages,
				     UDP_BATCH, MSG_DONTWAIT, NULL);
		if (count < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_error("udp recvmmsg: %s", strerror(errno));
			return;
		}
		udp_forward_batch(proxy, (unsigned)count);
		if (count < UDP_BATCH)
			return;
	}
}

/* Replies from the application go back, as plain payload, to the flow's load balancer. */
static void udp_relay_replies(struct udp_proxy *proxy, struct udp_flow *flow)
{
	for (;;) {
		udp_setup_batch(proxy, false);
		int count = recvmmsg(flow->fd, proxy->messages, UDP_BATCH,
				     MSG_DONTWAIT, NULL);
		if (count < 0) {
			/* ECONNREFUSED: an earlier datagram found no listener. */
			if (errno == EINTR || errno == ECONNREFUSED)
				continue;
			return;
		}
		for (int i = 0; i < count; i++) {
			struct msghdr *msg = &proxy->messages[i].msg_hdr;
			proxy->iovecs[i].iov_len = proxy->messages[i].msg_len;
			msg->msg_name = &flow->lb_addr;
			msg->msg_namelen = address_length(&flow->lb_addr);
			if (flow->reply_control_len > 0) {
				msg->msg_control = flow->reply_control.bytes;
				msg->msg_controllen = flow->reply_control_len;
			}
		}
		if (count > 0 &&
		    sendmmsg(proxy->listen_fd, proxy->messages,
			     (unsigned)count, 0) < 0 &&
		    errno != EAGAIN)
			udp_log_send_error(proxy, "reply to the load balancer",
					   errno);
		udp_touch_flow(proxy, flow, monotonic_ms());
		if (count < UDP_BATCH)
			return;
	}
}

static int udp_setup(struct udp_proxy *proxy, int listen_fd,
		     const struct options *opts, const struct subnets *allowed)
{
	sigset_t signals;
	size_t buckets = 1;

	memset(proxy, 0, sizeof *proxy);
	proxy->opts = opts;
	proxy->allowed = allowed;
	proxy->listen_fd = listen_fd;
	proxy->idle_limit_ms = (int64_t)opts->close_after_s * 1000;
	while (buckets < opts->max_flows)
		buckets <<= 1;
	proxy->bucket_mask = buckets - 1;
	/* Reserved, not touched: pages are used only as flows appear. */
	proxy->flow_pool = calloc(opts->max_flows, sizeof *proxy->flow_pool);
	proxy->buckets = calloc(buckets, sizeof *proxy->buckets);
	proxy->buffers = malloc((size_t)UDP_BATCH * UDP_BUFFER_SIZE);
	if (!proxy->flow_pool || !proxy->buckets || !proxy->buffers)
		return -1;
	/* Flooding one hash chain must take more than knowing FNV-1a. */
	if (getrandom(&proxy->hash_seed, sizeof proxy->hash_seed, 0) !=
	    sizeof proxy->hash_seed)
		return -1;
	listener_signal_set(&signals);
	proxy->signal_fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
	proxy->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (proxy->signal_fd < 0 || proxy->epoll_fd < 0 ||
	    set_nonblocking(listen_fd) != 0)
		return -1;
	/*
	 * Bursts from every client arrive on this one socket; the default
	 * buffer overflows long before the loop falls behind on average.
	 * SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN.
	 */
	if (set_int_option(listen_fd, SOL_SOCKET, SO_RCVBUFFORCE,
			   UDP_RECEIVE_BUFFER) != 0)
		set_int_option(listen_fd, SOL_SOCKET, SO_RCVBUF,
			       UDP_RECEIVE_BUFFER);
	/*
	 * Each datagram's destination address, for the replies' source. An
	 * IPv6 socket reports IPv4 datagrams as IPV6_PKTINFO with a mapped
	 * address, and takes it back the same way.
	 */
	struct sockaddr_storage local;
	socklen_t local_len = sizeof local;
	if (getsockname(listen_fd, (struct sockaddr *)&local, &local_len) != 0)
		return -1;
	if (local.ss_family == AF_INET6
		    ? set_int_option(listen_fd, IPPROTO_IPV6, IPV6_RECVPKTINFO,
				     1) != 0
		    : set_int_option(listen_fd, IPPROTO_IP, IP_PKTINFO, 1) != 0)
		return -1;
	/* data.ptr NULL marks the listening socket, the proxy itself the signals. */
	struct epoll_event listen_event = {.events = EPOLLIN, .data.ptr = NULL};
	struct epoll_event signal_event = {.events = EPOLLIN, .data.ptr = proxy};
	if (epoll_ctl(proxy->epoll_fd, EPOLL_CTL_ADD, listen_fd,
		      &listen_event) != 0 ||
	    epoll_ctl(proxy->epoll_fd, EPOLL_CTL_ADD, proxy->signal_fd,
		      &signal_event) != 0)
		return -1;
	return 0;
}

static void udp_teardown(struct udp_proxy *proxy)
{
	while (proxy->idle_head)
		udp_close_flow(proxy, proxy->idle_head, "closed (exit)");
	close(proxy->epoll_fd);
	close(proxy->signal_fd);
	free(proxy->flow_pool);
	free(proxy->buckets);
	free(proxy->buffers);
}

/* Sleep until the least recently active flow is due, or a second at most. */
static int udp_wait_ms(const struct udp_proxy *proxy, int64_t now_ms)
{
	if (proxy->idle_head == NULL)
		return -1;
	int64_t due = proxy->idle_head->last_active_ms + proxy->idle_limit_ms -
		      now_ms;
	return due <= 0 ? 0 : due > 1000 ? 1000 : (int)due;
}

static int run_udp(int listen_fd, const struct options *opts,
		   const struct subnets *allowed)
{
	struct udp_proxy proxy;
	struct epoll_event events[64];

	if (udp_setup(&proxy, listen_fd, opts, allowed) != 0)
		die(EXIT_SYSTEM, "udp set-up: %s", strerror(errno));
	for (;;) {
		int count = epoll_wait(proxy.epoll_fd, events, 64,
				       udp_wait_ms(&proxy, monotonic_ms()));
		if (count < 0 && errno != EINTR)
			die(EXIT_SYSTEM, "epoll_wait: %s", strerror(errno));
		for (int i = 0; i < count; i++) {
			void *source = events[i].data.ptr;
			if (source == NULL) {
				udp_receive_from_load_balancers(&proxy);
			} else if (source == &proxy) {
				bool child_exited = false;
				if (read_signals(proxy.signal_fd,
						 &child_exited)) {
					udp_teardown(&proxy);
					return 0;
				}
			} else {
				udp_relay_replies(&proxy, source);
			}
		}
		udp_expire_flows(&proxy, monotonic_ms());
	}
}

/* ---- routing self-check (--check) --------------------------------------- */

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

struct check_run {
	bool as_warnings; /* start-up: only failures, as log warnings */
	unsigned passed;
	unsigned failed;
};

__attribute__((format(printf, 3, 4))) static void
check_report(struct check_run *run, bool ok, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (ok)
		run->passed++;
	else
		run->failed++;
	if (!run->as_warnings)
		printf("%s %s\n", ok ? "[ok]  " : "[fail]", line);
	else if (!ok)
		log_msg(LOG_WARNING, "spoofing will not work: %s", line);
}

/*
 * A command that repairs the failure reported just before; label is "fix",
 * or "or"/"and" for an alternative.
 */
__attribute__((format(printf, 3, 4))) static void
check_fix(const struct check_run *run, const char *label, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (run->as_warnings)
		log_msg(LOG_WARNING, "  %s: %s", label, line);
	else
		printf("%10s: %s\n", label, line);
}

/* The address alone, without the port. */
static const char *format_host(const struct sockaddr_storage *addr, char *out,
			       size_t size)
{
	size_t len;
	const uint8_t *bytes = address_bytes(addr, &len);

	if (inet_ntop(addr->ss_family, bytes, out, (socklen_t)size) == NULL)
		snprintf(out, size, "-");
	return out;
}

/* -- rtnetlink: one request, every answer handed to a visitor */

struct netlink_request {
	struct nlmsghdr header;
	union {
		struct rtmsg route;
		struct fib_rule_hdr rule;
	} body;
	char attributes[64]; /* room for a source, a destination and a mark */
};

static void netlink_request_init(struct netlink_request *req, uint16_t type,
				 bool dump, int family)
{
	memset(req, 0, sizeof *req);
	req->header.nlmsg_len = NLMSG_LENGTH(sizeof req->body);
	req->header.nlmsg_type = type;
	req->header.nlmsg_flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);
	req->header.nlmsg_seq = 1;
	/* rtmsg and fib_rule_hdr both start with the family. */
	req->body.route.rtm_family = (unsigned char)family;
}

static void netlink_add_attribute(struct netlink_request *req, uint16_t type,
				  const void *data, size_t len)
{
	struct rtattr *attr =
		(struct rtattr *)((char *)req + NLMSG_ALIGN(req->header.nlmsg_len));

	attr->rta_type = type;
	attr->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(attr), data, len);
	req->header.nlmsg_len = NLMSG_ALIGN(req->header.nlmsg_len) +
				RTA_ALIGN(attr->rta_len);
}

typedef void netlink_visitor(struct nlmsghdr *msg, void *context);

/* Returns 0, or an errno value: the kernel's answer to a request, or ours. */
static int netlink_exchange(struct netlink_request *req, netlink_visitor *visit,
			    void *context)
{
	/*
	 * A dump's messages come in batches of up to 32 KiB. Static, not on
	 * the stack: only the checks touch it, before any fork.
	 */
	static char buffer[32768] __attribute__((aligned(NLMSG_ALIGNTO)));
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	bool dump = req->header.nlmsg_flags & NLM_F_DUMP;
	int error = 0;
	bool done = false;

	if (fd < 0)
		return errno;
	if (sendto(fd, req, req->header.nlmsg_len, 0,
		   (struct sockaddr *)&kernel, sizeof kernel) < 0) {
		error = errno;
		done = true;
	}
	while (!done) {
		ssize_t got = recv(fd, buffer, sizeof buffer, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			error = got < 0 ? errno : EPROTO;
			break;
		}
		int left = (int)got;
		for (struct nlmsghdr *msg = (struct nlmsghdr *)buffer;
		     !done && NLMSG_OK(msg, left); msg = NLMSG_NEXT(msg, left)) {
			if (msg->nlmsg_type == NLMSG_DONE) {
				done = true;
			} else if (msg->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *answer = NLMSG_DATA(msg);
				error = -answer->error;
				done = true;
			} else {
				visit(msg, context);
				done = !dump;
			}
		}
	}
	close(fd);
	return error;
}

/* -- what the kernel would do with a reply */

struct route_answer {
	bool answered;
	uint8_t type;
	uint32_t table;
};

/* The table from RTA_TABLE: rtm_table holds only tables below 256. */
static uint32_t route_table(struct nlmsghdr *msg)
{
	struct rtmsg *route = NLMSG_DATA(msg);
	uint32_t table = route->rtm_table;
	int len = (int)RTM_PAYLOAD(msg);

	for (struct rtattr *attr = RTM_RTA(route); RTA_OK(attr, len);
	     attr = RTA_NEXT(attr, len))
		if (attr->rta_type == RTA_TABLE &&
		    RTA_PAYLOAD(attr) == sizeof table)
			memcpy(&table, RTA_DATA(attr), sizeof table);
	return table;
}

static void read_route_answer(struct nlmsghdr *msg, void *context)
{
	struct route_answer *answer = context;

	if (msg->nlmsg_type != RTM_NEWROUTE)
		return;
	answer->answered = true;
	answer->type = ((struct rtmsg *)NLMSG_DATA(msg))->rtm_type;
	answer->table = route_table(msg);
}

/* `ip route get TO from FROM [mark N]`: FROM is the application's side. */
static int lookup_reply_route(const struct sockaddr_storage *from,
			      const struct sockaddr_storage *to,
			      const uint32_t *mark, struct route_answer *answer)
{
	struct netlink_request req;
	size_t len;
	const uint8_t *bytes = address_bytes(from, &len);

	netlink_request_init(&req, RTM_GETROUTE, false, from->ss_family);
	/* Without it, IPv4 answers with the route's table, not the rule's. */
	req.body.route.rtm_flags = RTM_F_LOOKUP_TABLE;
	req.body.route.rtm_src_len = (unsigned char)(len * 8);
	req.body.route.rtm_dst_len = (unsigned char)(len * 8);
	netlink_add_attribute(&req, RTA_SRC, bytes, len);
	bytes = address_bytes(to, &len);
	netlink_add_attribute(&req, RTA_DST, bytes, len);
	if (mark != NULL)
		netlink_add_attribute(&req, RTA_MARK, mark, sizeof *mark);
	memset(answer, 0, sizeof *answer);
	return netlink_exchange(&req, read_route_answer, answer);
}

static bool is_delivered_to_loopback(const struct route_answer *answer)
{
	/* From the local table it would mean the address is our own. */
	return answer->answered && answer->type == RTN_LOCAL &&
	       answer->table != RT_TABLE_LOCAL;
}

/* -- the rule and the route the README sets up, for telling what is missing */

struct rule_search {
	const uint8_t *source; /* the application's address */
	size_t source_len;
	const uint32_t *mark;
	uint32_t table;
	bool found;
};

static bool prefix_covers(const uint8_t *prefix, unsigned bits,
			  const uint8_t *addr, size_t addr_len)
{
	if (bits > addr_len * 8)
		return false;
	if (memcmp(prefix, addr, bits / 8) != 0)
		return false;
	if (bits % 8 == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - bits % 8));
	return (prefix[bits / 8] & mask) == (addr[bits / 8] & mask);
}

/*
 * A rule that sends the application's replies to the table: from a prefix
 * holding its address (or from all), on lo or any input, and with a fwmark
 * selector only if it is ours. Rare selectors (tos, uid range...) are not
 * looked at: this only tells the user what is missing.
 */
static void find_reply_rule(struct nlmsghdr *msg, void *context)
{
	struct rule_search *search = context;
	struct fib_rule_hdr *rule = NLMSG_DATA(msg);
	int len = (int)(msg->nlmsg_len - NLMSG_LENGTH(sizeof *rule));
	uint32_t table = rule->table;
	const uint8_t *source = NULL;
	bool other_input = false;
	bool mark_matches = true;

	if (msg->nlmsg_type != RTM_NEWRULE || rule->action != FR_ACT_TO_TBL ||
	    (rule->flags & FIB_RULE_INVERT) || rule->dst_len != 0)
		return;
	for (struct rtattr *attr =
		     (struct rtattr *)((char *)rule + NLMSG_ALIGN(sizeof *rule));
	     RTA_OK(attr, len); attr = RTA_NEXT(attr, len)) {
		size_t size = RTA_PAYLOAD(attr);
		if (attr->rta_type == FRA_TABLE && size == sizeof table) {
			memcpy(&table, RTA_DATA(attr), sizeof table);
		} else if (attr->rta_type == FRA_SRC &&
			   size == search->source_len) {
			source = RTA_DATA(attr);
		} else if (attr->rta_type == FRA_IIFNAME) {
			other_input = strncmp(RTA_DATA(attr), "lo", size) != 0;
		} else if (attr->rta_type == FRA_FWMARK && size == 4) {
			uint32_t mark;
			memcpy(&mark, RTA_DATA(attr), sizeof mark);
			mark_matches = search->mark != NULL &&
				       *search->mark == mark;
		}
	}
	if (table == search->table && !other_input && mark_matches &&
	    (rule->src_len == 0 ||
	     (source != NULL && prefix_covers(source, rule->src_len,
					      search->source,
					      search->source_len))))
		search->found = true;
}

struct local_route_search {
	uint32_t table;
	bool found;
};

static void find_local_default_route(struct nlmsghdr *msg, void *context)
{
	struct local_route_search *search = context;
	struct rtmsg *route = NLMSG_DATA(msg);

	if (msg->nlmsg_type == RTM_NEWROUTE && route->rtm_type == RTN_LOCAL &&
	    route->rtm_dst_len == 0 && route_table(msg) == search->table)
		search->found = true;
}

/* -- the checks, one line each */

/* How a rule's source prefix is written in the README: all of 127/8. */
static void reply_rule_source(const struct sockaddr_storage *target, char *out,
			      size_t size)
{
	char host[INET6_ADDRSTRLEN];
	size_t len;
	const uint8_t *bytes = address_bytes(target, &len);

	if (len == 4 && bytes[0] == 127)
		snprintf(out, size, "127.0.0.1/8");
	else
		snprintf(out, size, "%s/%zu",
			 format_host(target, host, sizeof host), len * 8);
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

static void check_reply_rule(struct check_run *run, const struct options *opts,
			     const struct sockaddr_storage *target,
			     const char *shown)
{
	struct rule_search search = {.mark = opts->mark_given ? &opts->mark
							      : NULL,
				     .table = opts->table};
	struct netlink_request req;
	char source[INET6_ADDRSTRLEN + 5];
	const char *ip = target->ss_family == AF_INET6 ? "ip -6" : "ip";

	search.source = address_bytes(target, &search.source_len);
	netlink_request_init(&req, RTM_GETRULE, true, target->ss_family);
	int error = netlink_exchange(&req, find_reply_rule, &search);
	if (error != 0) {
		check_report(run, false, "%s: cannot list the rules: %s",
			     shown, strerror(error));
		return;
	}
	if (search.found) {
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

static void check_local_route(struct check_run *run, const struct options *opts,
			      const struct sockaddr_storage *target)
{
	struct local_route_search search = {.table = opts->table};
	struct netlink_request req;
	bool ipv6 = target->ss_family == AF_INET6;

	netlink_request_init(&req, RTM_GETROUTE, true, target->ss_family);
	int error = netlink_exchange(&req, find_local_default_route, &search);
	if (error != 0) {
		check_report(run, false, "cannot list the routes: %s",
			     strerror(error));
		return;
	}
	if (search.found) {
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
static enum reply_routing check_reply_routing(struct check_run *run,
					      const struct options *opts,
					      const struct sockaddr_storage *target,
					      const struct sockaddr_storage *spoof)
{
	char shown[ADDRESS_TEXT_SIZE], from[INET6_ADDRSTRLEN];
	char to[INET6_ADDRSTRLEN];
	const uint32_t *mark = opts->mark_given ? &opts->mark : NULL;
	struct route_answer answer, unmarked;

	format_address(target, shown, sizeof shown);
	format_host(target, from, sizeof from);
	format_host(spoof, to, sizeof to);
	int error = lookup_reply_route(target, spoof, mark, &answer);
	if (error == 0 && is_delivered_to_loopback(&answer)) {
		check_report(run, true, "%s: a rule sends its replies to "
					"table %u",
			     shown, answer.table);
		check_report(run, true, "table %u delivers %s to lo",
			     answer.table, to);
		check_report(run, true, "%s: replies from %s to %s come back "
					"to loopback",
			     shown, from, to);
		if (mark == NULL || (lookup_reply_route(target, spoof, NULL,
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

/* Returns 0 or an errno value; a spoofed probe is made like a real one. */
static int probe_connection(const struct options *opts,
			    const struct sockaddr_storage *target,
			    const struct sockaddr_storage *spoof)
{
	struct connection conn;

	memset(&conn, 0, sizeof conn);
	conn.target_addr = *target;
	conn.spoofed = spoof != NULL;
	if (spoof != NULL)
		conn.client_addr = *spoof;
	int fd = open_backend_socket(&conn, opts, true);
	if (fd < 0)
		return errno;
	int error = connect_to_target(fd, &conn, opts);
	close(fd);
	return error;
}

static bool check_plain_connection(struct check_run *run,
				   const struct options *opts,
				   const struct sockaddr_storage *target)
{
	char shown[ADDRESS_TEXT_SIZE];
	int error = probe_connection(opts, target, NULL);

	format_address(target, shown, sizeof shown);
	if (error == 0)
		check_report(run, true, "%s accepts connections", shown);
	else
		check_report(run, false, "%s does not accept connections: %s "
					 "(is the application running, and "
					 "are -4/-6 right?)",
			     shown, strerror(error));
	return error == 0;
}

static void check_spoofed_connection(struct check_run *run,
				     const struct options *opts,
				     const struct sockaddr_storage *target,
				     const struct sockaddr_storage *spoof,
				     enum reply_routing routing)
{
	char shown[ADDRESS_TEXT_SIZE], from[INET6_ADDRSTRLEN];

	format_address(target, shown, sizeof shown);
	format_host(spoof, from, sizeof from);
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
					: capability_hint(error));
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

static void check_target(struct check_run *run, const struct options *opts,
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
static void run_checks(struct check_run *run, const struct options *opts,
		       bool probes)
{
	bool both = !opts->target4_given && !opts->target6_given;
	/* A sandbox without AF_NETLINK: one line, not one per check. */
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);

	if (fd < 0) {
		check_report(run, false, "cannot ask the kernel about routing: "
					 "socket(AF_NETLINK): %s",
			     strerror(errno));
		return;
	}
	close(fd);
	probes = probes && opts->protocol == PROTOCOL_TCP;
	if (opts->target4_given || both)
		check_target(run, opts, &opts->target4, &opts->check_from4,
			     probes);
	if (opts->target6_given || both)
		check_target(run, opts, &opts->target6, &opts->check_from6,
			     probes);
}

/* mmproxy --check: every line on stdout, exit 0 only when all pass. */
static int run_check_command(const struct options *opts)
{
	struct check_run run = {.as_warnings = false};

	run_checks(&run, opts, true);
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
static void warn_about_routing(const struct options *opts)
{
	struct check_run run = {.as_warnings = true};

	if (opts->verbosity == LOG_LEVEL_QUIET || opts->tproxy)
		return;
	run_checks(&run, opts, false);
}

/* ---- main --------------------------------------------------------------- */

/*
 * --tproxy on a listening socket systemd made: without IP_TRANSPARENT the
 * TPROXY rule finds no socket to divert to and drops the packets. The
 * unit's Transparent=yes does this before the first connection; doing it
 * here too keeps a unit that lacks it from failing silently once we run.
 */
static void make_transparent(int listen_fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof local;

	if (getsockname(listen_fd, (struct sockaddr *)&local, &len) != 0)
		die(EXIT_SYSTEM, "socket activation fd %d: %s", listen_fd,
		    strerror(errno));
	int level = local.ss_family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
	int name = local.ss_family == AF_INET6 ? IPV6_TRANSPARENT
					       : IP_TRANSPARENT;
	if (set_int_option(listen_fd, level, name, 1) != 0)
		die(EXIT_SYSTEM,
		    "--tproxy on socket activation fd %d: %s (IP_TRANSPARENT "
		    "needs CAP_NET_ADMIN)",
		    listen_fd, strerror(errno));
}

/* Runs the launch mode that the options and the inherited fds call for. */
static int run_launch_mode(struct options *opts, int activated_fd,
			   bool one_connection, const struct subnets *allowed)
{
	if (one_connection)
		return handle_connection(activated_fd >= 0 ? activated_fd : 0,
					 NULL, opts, allowed);
	warn_about_routing(opts);

	/* The accept loop's signals arrive through a signalfd, never async. */
	sigset_t signals;
	listener_signal_set(&signals);
	if (sigprocmask(SIG_BLOCK, &signals, NULL) != 0)
		die(EXIT_SYSTEM, "sigprocmask: %s", strerror(errno));

	if (opts->protocol == PROTOCOL_UDP && activated_fd >= 0 &&
	    !is_socket_of_type(activated_fd, SOCK_DGRAM))
		die(EXIT_USAGE, "-p udp: the socket passed on fd 3 is not a "
				"datagram socket");
	if (opts->protocol == PROTOCOL_UDP)
		return run_udp(activated_fd >= 0 ? activated_fd
						 : open_listener(opts, false),
			       opts, allowed);
	if (activated_fd >= 0) {
		if (opts->tproxy)
			make_transparent(activated_fd);
		struct listener l = {.listen_fd = activated_fd,
				     .max_children = opts->max_connections};
		return run_listener(&l, opts, allowed);
	}
	return run_standalone(opts, allowed);
}

int main(int argc, char **argv)
{
	struct options opts;
	struct subnets table;
	const struct subnets *allowed = NULL;

	protect_standard_fds();
	parse_options(argc, argv, &opts);
	logger.verbosity = opts.verbosity;
	if (opts.check)
		return run_check_command(&opts);
	/*
	 * SIGPIPE: a write to a reset socket is an error we handle. SIGHUP: a
	 * closed terminal must not cut established connections; to reload
	 * the subnets file, restart (connections live on).
	 */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR ||
	    signal(SIGHUP, SIG_IGN) == SIG_ERR)
		die(EXIT_SYSTEM, "signal: %s", strerror(errno));

	int activated_fd = socket_activation_fd();
	if (activated_fd >= 0 && is_socket_of_type(activated_fd, SOCK_DGRAM)) {
		if (opts.tproxy)
			die(EXIT_USAGE, "--tproxy: only TCP is supported, and "
					"the socket passed on fd 3 is a "
					"datagram socket");
		opts.protocol = PROTOCOL_UDP;
	}
	bool one_connection =
		opts.protocol == PROTOCOL_TCP &&
		(activated_fd >= 0 ? !is_listening_socket(activated_fd)
				   : opts.force_inetd ||
					     (!opts.listen_given &&
					      is_connected_stream_socket(0) &&
					      is_network_socket(0)));

	if (opts.subnets_path != NULL) {
		load_allowed_subnets(opts.subnets_path, &table);
		allowed = &table;
	} else if (!opts.tproxy &&
		   (!one_connection || opts.verbosity >= LOG_LEVEL_CONNECTIONS)) {
		/* --tproxy reads no header: a client can only be itself. */
		log_msg(LOG_WARNING, "no --allowed-subnets: any peer may send "
				     "PROXY headers and choose a source address");
	}

	int status = run_launch_mode(&opts, activated_fd, one_connection,
				     allowed);
	if (allowed != NULL)
		subnets_free(&table);
	return status;
}
