/*
 * Unit tests for options.c: tables of command lines, each with the one
 * thing it must set or the error it must give, and of option sets with what
 * the process was handed, each with the mode it must choose or the
 * combination it must refuse.
 *
 * usage: options_test [GROUP-OR-CASE]
 *   With no argument every group runs. Prints "ok NAME" or "FAIL NAME: why"
 *   per case and exits 1 if any case failed.
 */
#include "options.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

#include "verdict.h"

/* ---- helpers */

enum { MAX_WORDS = 16 };

/* "a b c" into argv {"mmproxy", "a", "b", "c", NULL}; words have no spaces. */
static int split_words(const char *line, char *storage, size_t size,
		       char **argv)
{
	int argc = 0;

	snprintf(storage, size, "%s", line);
	argv[argc++] = "mmproxy";
	for (char *word = strtok(storage, " "); word && argc < MAX_WORDS;
	     word = strtok(NULL, " "))
		argv[argc++] = word;
	argv[argc] = NULL;
	return argc;
}

/* One field of the options as "name=value", the way the tables write it. */
static void field_text(const struct options *opts, const char *field,
		       char *out, size_t size)
{
	char addr[NETADDR_TEXT_SIZE];

	if (strcmp(field, "listen") == 0)
		snprintf(out, size, "listen=%s%s",
			 netaddr_format(&opts->listen_addr, addr, sizeof addr),
			 opts->listen_given ? "" : " (default)");
	else if (strcmp(field, "target4") == 0)
		snprintf(out, size, "target4=%s",
			 netaddr_format(&opts->target4, addr, sizeof addr));
	else if (strcmp(field, "target6") == 0)
		snprintf(out, size, "target6=%s",
			 netaddr_format(&opts->target6, addr, sizeof addr));
	else if (strcmp(field, "check-from4") == 0)
		snprintf(out, size, "check-from4=%s",
			 netaddr_format_host(&opts->check_from4, addr,
					     sizeof addr));
	else if (strcmp(field, "check-from6") == 0)
		snprintf(out, size, "check-from6=%s",
			 netaddr_format_host(&opts->check_from6, addr,
					     sizeof addr));
	else if (strcmp(field, "subnets") == 0)
		snprintf(out, size, "subnets=%s",
			 opts->subnets_path ? opts->subnets_path : "(none)");
	else if (strcmp(field, "mark") == 0)
		snprintf(out, size, opts->mark_given ? "mark=%u" : "mark=none",
			 opts->mark);
	else if (strcmp(field, "verbosity") == 0)
		snprintf(out, size, "verbosity=%d", opts->verbosity);
	else if (strcmp(field, "protocol") == 0)
		snprintf(out, size, "protocol=%s",
			 opts->protocol == PROTOCOL_UDP ? "udp" : "tcp");
	else if (strcmp(field, "listeners") == 0)
		snprintf(out, size, "listeners=%u", opts->listeners);
	else if (strcmp(field, "max-connections") == 0)
		snprintf(out, size, "max-connections=%u", opts->max_connections);
	else if (strcmp(field, "connections-per-process") == 0)
		snprintf(out, size, "connections-per-process=%u",
			 opts->connections_per_process);
	else if (strcmp(field, "min-spare") == 0)
		snprintf(out, size, "min-spare=%u", opts->min_spare);
	else if (strcmp(field, "max-spare") == 0)
		snprintf(out, size, "max-spare=%u", opts->max_spare);
	else if (strcmp(field, "header-timeout-ms") == 0)
		snprintf(out, size, "header-timeout-ms=%d",
			 opts->header_timeout_ms);
	else if (strcmp(field, "connect-timeout-ms") == 0)
		snprintf(out, size, "connect-timeout-ms=%d",
			 opts->connect_timeout_ms);
	else if (strcmp(field, "close-after") == 0)
		snprintf(out, size, "close-after=%u", opts->close_after_s);
	else if (strcmp(field, "max-flows") == 0)
		snprintf(out, size, "max-flows=%u", opts->max_flows);
	else if (strcmp(field, "table") == 0)
		snprintf(out, size, "table=%u", opts->table);
	else if (strcmp(field, "flags") == 0)
		snprintf(out, size,
			 "flags=%s%s%s%s%s%s",
			 opts->port_fallback ? " port-fallback" : "",
			 opts->dynamic_destination ? " dynamic-destination"
						   : "",
			 opts->listen_transparent ? " listen-transparent" : "",
			 opts->force_inetd ? " inetd" : "",
			 opts->tproxy ? " tproxy" : "",
			 opts->check ? " check" : "");
	else
		snprintf(out, size, "unknown field %s", field);
}

/* ---- parsing: every option, its aliases, its defaults */

struct parse_case {
	const char *name;
	const char *args;
	const char *expected; /* "field=value" as field_text() writes it */
};

static const struct parse_case parse_cases[] = {
	/* defaults: go-mmproxy's */
	{"default listen address", "", "listen=0.0.0.0:8443 (default)"},
	{"default IPv4 target", "", "target4=127.0.0.1:443"},
	{"default IPv6 target", "", "target6=[::1]:443"},
	{"default: no subnets file", "", "subnets=(none)"},
	{"default: no mark", "", "mark=none"},
	{"default verbosity is errors", "", "verbosity=1"},
	{"default protocol is tcp", "", "protocol=tcp"},
	{"default: one listener", "", "listeners=1"},
	{"default: no connection cap", "", "max-connections=0"},
	{"default: 1000 connections per process", "",
	 "connections-per-process=1000"},
	{"default: 8 spare processes at least", "", "min-spare=8"},
	{"default: 32 spare processes at most", "", "max-spare=32"},
	{"default header timeout 5 s", "", "header-timeout-ms=5000"},
	{"default connect timeout 5 s", "", "connect-timeout-ms=5000"},
	{"default close-after 60 s", "", "close-after=60"},
	{"default max-flows 65536", "", "max-flows=65536"},
	{"default table 123", "", "table=123"},
	{"default: no flags", "", "flags="},
	{"default --check source IPv4", "", "check-from4=192.0.2.1"},
	{"default --check source IPv6", "", "check-from6=2001:db8::1"},
	/* each option, in each spelling */
	{"-l", "-l 127.0.0.1:9000", "listen=127.0.0.1:9000"},
	{"--listen", "--listen [::]:9000", "listen=[::]:9000"},
	{"-listen-addr=", "-listen-addr=10.0.0.1:1", "listen=10.0.0.1:1"},
	{"-l :PORT is any IPv4 address", "-l :9000", "listen=0.0.0.0:9000"},
	{"-4", "-4 127.0.0.2:80", "target4=127.0.0.2:80"},
	{"--target-addr4", "--target-addr4 127.0.0.2:80",
	 "target4=127.0.0.2:80"},
	{"-6", "-6 [::2]:80", "target6=[::2]:80"},
	{"--target-addr6=", "--target-addr6=[::2]:80", "target6=[::2]:80"},
	{"--allowed-subnets", "--allowed-subnets f.txt", "subnets=f.txt"},
	{"-a", "-a f.txt", "subnets=f.txt"},
	{"--allowed-networks", "--allowed-networks=f.txt", "subnets=f.txt"},
	{"-allowed-subnets (one dash)", "-allowed-subnets f.txt",
	 "subnets=f.txt"},
	{"--mark", "--mark 7", "mark=7"},
	{"-m", "-m 0", "mark=0"},
	{"--mark at its maximum", "--mark 4294967295", "mark=4294967295"},
	{"-v with a level", "-v 0", "verbosity=0"},
	{"-v alone means 2", "-v", "verbosity=2"},
	{"-v alone before another option", "-v -p tcp", "verbosity=2"},
	{"-v=1", "-v=1", "verbosity=1"},
	{"--verbose", "--verbose", "verbosity=2"},
	{"-q", "-q", "verbosity=0"},
	{"--quiet after -v 2", "-v 2 --quiet", "verbosity=0"},
	{"-t", "-t 100", "table=100"},
	{"--table", "--table 4294967295", "table=4294967295"},
	{"-p udp", "-p udp", "protocol=udp"},
	{"-p tcp", "--p=tcp", "protocol=tcp"},
	{"--listeners", "--listeners 256", "listeners=256"},
	{"--max-connections", "--max-connections 1000000",
	 "max-connections=1000000"},
	{"--connections-per-process 1", "--connections-per-process 1",
	 "connections-per-process=1"},
	{"--connections-per-process", "--connections-per-process 1000000000",
	 "connections-per-process=1000000000"},
	{"--min-spare", "--min-spare 4096", "min-spare=4096"},
	{"--max-spare", "--max-spare 65536", "max-spare=65536"},
	{"--header-timeout", "--header-timeout 3600",
	 "header-timeout-ms=3600000"},
	{"--connect-timeout", "--connect-timeout 1", "connect-timeout-ms=1000"},
	{"--close-after", "--close-after 86400", "close-after=86400"},
	{"--max-flows", "--max-flows 1", "max-flows=1"},
	{"--port-fallback", "--port-fallback", "flags= port-fallback"},
	{"--dynamic-destination", "--dynamic-destination",
	 "flags= dynamic-destination"},
	{"--listen-transparent", "--listen-transparent",
	 "flags= listen-transparent"},
	{"--inetd", "--inetd", "flags= inetd"},
	{"--tproxy makes the listener transparent", "--tproxy",
	 "flags= listen-transparent tproxy"},
	{"--check", "--check", "flags= check"},
	{"--check-from IPv4", "--check-from 198.51.100.9",
	 "check-from4=198.51.100.9"},
	{"--check-from IPv6 leaves IPv4 alone", "--check-from 2001:db8::9",
	 "check-from4=192.0.2.1"},
	{"--check-from IPv6", "--check-from 2001:db8::9",
	 "check-from6=2001:db8::9"},
	{"--do-not-sandbox is ignored", "--do-not-sandbox", "flags="},
	{"--force-real-client-port is ignored", "--force-real-client-port",
	 "flags="},
	{"the last of two -l wins", "-l 10.0.0.1:1 -l 10.0.0.2:2",
	 "listen=10.0.0.2:2"},
	{"a leading zero is still decimal", "--listeners 08", "listeners=8"},
};

static void run_parse_cases(const char *selection);

/* ---- parsing: every bad value, one message each */

struct error_case {
	const char *name;
	const char *args;
	enum options_result result;
	const char *message; /* a piece of the error text */
};

static const struct error_case error_cases[] = {
	{"--help", "--help", OPTIONS_HELP, NULL},
	{"-h before a bad option", "-h --bogus", OPTIONS_HELP, NULL},
	{"--version", "--version", OPTIONS_VERSION, NULL},
	{"a bad option before --help", "--bogus --help", OPTIONS_ERROR,
	 "unknown option \"--bogus\""},
	{"an unknown long option", "--no-such-option", OPTIONS_ERROR,
	 "unknown option \"--no-such-option\""},
	{"an unknown short option", "-x", OPTIONS_ERROR,
	 "unknown option \"-x\""},
	{"a prefix is no option", "--list 1", OPTIONS_ERROR,
	 "unknown option \"--list\""},
	{"a word that is no option", "extra", OPTIONS_ERROR,
	 "unexpected argument \"extra\""},
	{"a lone dash", "-", OPTIONS_ERROR, "unexpected argument \"-\""},
	{"a missing value", "--mark", OPTIONS_ERROR, "--mark needs a value"},
	{"a missing address", "-4", OPTIONS_ERROR, "-4 needs a value"},
	{"a value for a flag", "--port-fallback=yes", OPTIONS_ERROR,
	 "--port-fallback takes no value"},
	{"-l without a port", "-l 127.0.0.1", OPTIONS_ERROR,
	 "-l: \"127.0.0.1\": not ADDR:PORT"},
	{"-l with a name", "-l localhost:80", OPTIONS_ERROR,
	 "-l: \"localhost:80\": not ADDR:PORT"},
	{"-l port over 65535", "-l 127.0.0.1:65536", OPTIONS_ERROR,
	 "not ADDR:PORT"},
	{"-l IPv6 without brackets", "-l ::1:80", OPTIONS_ERROR,
	 "not ADDR:PORT"},
	{"-l bracket not closed", "-l [::1:80", OPTIONS_ERROR,
	 "not ADDR:PORT"},
	{"-l signed port", "-l 127.0.0.1:+80", OPTIONS_ERROR, "not ADDR:PORT"},
	{"-4 with IPv6", "-4 [::1]:80", OPTIONS_ERROR,
	 "-4: \"[::1]:80\": not an IPv4 address"},
	{"-6 with IPv4", "-6 127.0.0.1:80", OPTIONS_ERROR,
	 "-6: \"127.0.0.1:80\": not an IPv6 address in brackets"},
	{"--mark negative", "--mark -1", OPTIONS_ERROR,
	 "--mark: \"-1\": not a number from 0 to 4294967295"},
	{"--mark too big", "--mark 4294967296", OPTIONS_ERROR,
	 "not a number from 0 to 4294967295"},
	{"--mark hex", "--mark 0x10", OPTIONS_ERROR, "not a number"},
	{"--mark empty", "--mark=", OPTIONS_ERROR, "not a number"},
	{"-v 3", "-v 3", OPTIONS_ERROR, "-v: \"3\": not a number from 0 to 2"},
	{"-v=x", "-v=x", OPTIONS_ERROR, "not a number from 0 to 2"},
	{"-t 0", "-t 0", OPTIONS_ERROR, "-t: \"0\": not a number from 1"},
	{"-p sctp", "-p sctp", OPTIONS_ERROR, "-p: \"sctp\": not tcp or udp"},
	{"-p UDP", "-p UDP", OPTIONS_ERROR, "not tcp or udp"},
	{"--listeners 0", "--listeners 0", OPTIONS_ERROR,
	 "--listeners: \"0\": not a number from 1 to 256"},
	{"--connections-per-process 0", "--connections-per-process 0",
	 OPTIONS_ERROR,
	 "--connections-per-process: \"0\": not a number from 1 to "
	 "1000000000"},
	{"--min-spare 0", "--min-spare 0", OPTIONS_ERROR,
	 "--min-spare: \"0\": not a number from 1 to 4096"},
	{"--max-spare 65537", "--max-spare 65537", OPTIONS_ERROR,
	 "--max-spare: \"65537\": not a number from 1 to 65536"},
	{"--listeners 257", "--listeners 257", OPTIONS_ERROR,
	 "not a number from 1 to 256"},
	{"--max-connections over", "--max-connections 1000001", OPTIONS_ERROR,
	 "not a number from 0 to 1000000"},
	{"--header-timeout 0", "--header-timeout 0", OPTIONS_ERROR,
	 "not a number from 1 to 3600"},
	{"--connect-timeout 3601", "--connect-timeout 3601", OPTIONS_ERROR,
	 "not a number from 1 to 3600"},
	{"--close-after 0", "--close-after 0", OPTIONS_ERROR,
	 "not a number from 1 to 86400"},
	{"--max-flows 0", "--max-flows 0", OPTIONS_ERROR,
	 "not a number from 1 to 1000000"},
	{"--max-flows with a space", "--max-flows= 5", OPTIONS_ERROR,
	 "not a number"},
	{"--check-from with a port", "--check-from 192.0.2.1:80", OPTIONS_ERROR,
	 "--check-from: \"192.0.2.1:80\": not a numeric IPv4 or IPv6 address"},
};

/* ---- the mode: what was handed over, and the options each mode refuses */

enum handed { NOTHING, FD0_CONNECTION, ACTIVATED_LISTENER,
	      ACTIVATED_CONNECTION, ACTIVATED_DATAGRAM };

struct mode_case {
	const char *name;
	const char *args;
	enum handed handed;
	int mode;	     /* an enum launch_mode, or -1 for a refusal */
	const char *message; /* a piece of the refusal */
};

static const struct mode_case mode_cases[] = {
	/* the mode */
	{"plain TCP is the standalone listener", "", NOTHING, MODE_STANDALONE,
	 NULL},
	{"--check whatever was handed", "--check", ACTIVATED_LISTENER,
	 MODE_CHECK, NULL},
	{"-p udp", "-p udp", NOTHING, MODE_UDP, NULL},
	{"--inetd", "--inetd", NOTHING, MODE_ONE_CONNECTION, NULL},
	{"a connection on fd 0 without -l", "", FD0_CONNECTION,
	 MODE_ONE_CONNECTION, NULL},
	{"-l wins over a connection on fd 0", "-l 127.0.0.1:1",
	 FD0_CONNECTION, MODE_STANDALONE, NULL},
	{"a listening socket from systemd", "", ACTIVATED_LISTENER,
	 MODE_ACTIVATED_LISTENER, NULL},
	{"a connection from systemd", "", ACTIVATED_CONNECTION,
	 MODE_ONE_CONNECTION, NULL},
	{"--inetd with a connection from systemd", "--inetd",
	 ACTIVATED_CONNECTION, MODE_ONE_CONNECTION, NULL},
	{"a datagram socket from systemd means UDP", "", ACTIVATED_DATAGRAM,
	 MODE_UDP, NULL},
	{"even with -p tcp", "-p tcp", ACTIVATED_DATAGRAM, MODE_UDP, NULL},
	{"--tproxy standalone", "--tproxy", NOTHING, MODE_STANDALONE, NULL},
	{"--close-after with TCP, as go-mmproxy's command line has it",
	 "-p tcp --close-after 30 --listeners 2", NOTHING, MODE_STANDALONE,
	 NULL},
	{"--dynamic-destination with UDP",
	 "-p udp --dynamic-destination --allowed-subnets f", NOTHING, MODE_UDP,
	 NULL},
	{"--dynamic-destination without --allowed-subnets",
	 "--dynamic-destination", NOTHING, -1,
	 "--dynamic-destination without --allowed-subnets"},
	{"--max-connections with systemd's listening socket",
	 "--max-connections 5", ACTIVATED_LISTENER, MODE_ACTIVATED_LISTENER,
	 NULL},
	/* what --tproxy refuses */
	{"--tproxy with --check", "--tproxy --check", NOTHING, -1,
	 "--check with --tproxy"},
	{"--tproxy with -p udp", "--tproxy -p udp", NOTHING, -1,
	 "--tproxy: only TCP is supported, not -p udp"},
	{"--tproxy with --dynamic-destination",
	 "--tproxy --dynamic-destination", NOTHING, -1,
	 "--tproxy with --dynamic-destination"},
	{"--tproxy with a datagram socket", "--tproxy", ACTIVATED_DATAGRAM, -1,
	 "the socket passed on fd 3 is a datagram socket"},
	{"-p udp with a stream socket from systemd", "-p udp",
	 ACTIVATED_LISTENER, -1,
	 "-p udp: the socket passed on fd 3 is not a datagram socket"},
	/* UDP */
	{"UDP refuses --listeners", "-p udp --listeners 4", NOTHING, -1,
	 "--listeners with -p udp: one socket serves every flow"},
	{"UDP refuses --idle-timeout", "-p udp --idle-timeout 30", NOTHING, -1,
	 "--idle-timeout with -p udp: an idle flow closes after --close-after"},
	{"UDP refuses --listeners 1 too", "--listeners 1 -p udp", NOTHING, -1,
	 "--listeners with -p udp"},
	{"UDP refuses --max-connections", "-p udp --max-connections 3",
	 NOTHING, -1, "--max-connections with -p udp"},
	{"UDP refuses --connections-per-process",
	 "-p udp --connections-per-process 1", NOTHING, -1,
	 "--connections-per-process with -p udp: one process serves every "
	 "flow"},
	{"UDP refuses --min-spare", "-p udp --min-spare 2", NOTHING, -1,
	 "--min-spare with -p udp"},
	{"UDP refuses --header-timeout", "-p udp --header-timeout 3", NOTHING,
	 -1, "--header-timeout with -p udp"},
	{"UDP refuses --connect-timeout", "-p udp --connect-timeout 3",
	 NOTHING, -1, "--connect-timeout with -p udp"},
	{"UDP refuses --port-fallback", "-p udp --port-fallback", NOTHING, -1,
	 "--port-fallback with -p udp"},
	{"UDP refuses --inetd", "-p udp --inetd", NOTHING, -1,
	 "--inetd with -p udp"},
	{"UDP from systemd refuses --listeners", "--listeners 2",
	 ACTIVATED_DATAGRAM, -1,
	 "--listeners with a datagram socket on fd 3"},
	/* TCP */
	{"TCP refuses --max-flows", "--max-flows 10", NOTHING, -1,
	 "--max-flows with TCP: flows are UDP's"},
	{"inetd refuses --max-flows", "--inetd --max-flows 10", NOTHING, -1,
	 "--max-flows with --inetd"},
	{"systemd's listener refuses --max-flows", "--max-flows 10",
	 ACTIVATED_LISTENER, -1, "--max-flows with a listening socket"},
	/* a connection handed over */
	{"--inetd refuses -l", "--inetd -l 127.0.0.1:1", NOTHING, -1,
	 "-l with --inetd: the connection is accepted already"},
	{"--inetd refuses --listeners", "--inetd --listeners 2", NOTHING, -1,
	 "--listeners with --inetd"},
	{"--inetd refuses --max-connections", "--inetd --max-connections 2",
	 NOTHING, -1, "--max-connections with --inetd"},
	{"--inetd refuses --connections-per-process",
	 "--inetd --connections-per-process 5", NOTHING, -1,
	 "--connections-per-process with --inetd: the inetd or the socket "
	 "unit starts one process per connection"},
	{"--inetd refuses --max-spare", "--inetd --max-spare 5", NOTHING, -1,
	 "--max-spare with --inetd"},
	{"--inetd refuses --listen-transparent",
	 "--inetd --listen-transparent", NOTHING, -1,
	 "--listen-transparent with --inetd"},
	{"fd 0 refuses --listeners", "--listeners 2", FD0_CONNECTION, -1,
	 "--listeners with a connection on fd 0"},
	{"systemd's connection refuses -l", "-l 127.0.0.1:1",
	 ACTIVATED_CONNECTION, -1, "-l with a connection on fd 3"},
	/* a listening socket from systemd */
	{"systemd's listener refuses -l", "-l 127.0.0.1:1",
	 ACTIVATED_LISTENER, -1, "-l with a listening socket on fd 3"},
	{"systemd's listener refuses --listeners", "--listeners 2",
	 ACTIVATED_LISTENER, -1, "--listeners with a listening socket"},
	{"systemd's listener refuses --inetd", "--inetd", ACTIVATED_LISTENER,
	 -1, "--inetd with a listening socket on fd 3 (socket activation): "
	     "systemd passed a listening socket, not a connection"},
	{"systemd's listener refuses --listen-transparent",
	 "--listen-transparent", ACTIVATED_LISTENER, -1,
	 "set Transparent=yes in the socket unit"},
};

static struct inherited_fds fds_for(enum handed handed)
{
	struct inherited_fds fds = {.activated = handed >= ACTIVATED_LISTENER};

	fds.fd0_is_connection = handed == FD0_CONNECTION;
	fds.activated_listening = handed == ACTIVATED_LISTENER;
	fds.activated_datagram = handed == ACTIVATED_DATAGRAM;
	return fds;
}

/* ---- runners */

static int selected(const char *selection, const char *group, const char *name)
{
	return selection == NULL || strcmp(selection, group) == 0 ||
	       strcmp(selection, name) == 0;
}

static void run_parse_cases(const char *selection)
{
	for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0];
	     i++) {
		const struct parse_case *c = &parse_cases[i];
		char storage[256], *argv[MAX_WORDS + 1], got[256], field[64];
		struct options opts;
		struct options_error error;

		if (!selected(selection, "parse", c->name))
			continue;
		int argc = split_words(c->args, storage, sizeof storage, argv);
		enum options_result result =
			options_parse(argc, argv, &opts, &error);
		if (result != OPTIONS_RUN) {
			fail(c->name, "\"%s\": result %d, error \"%s\"",
			     c->args, result, error.text);
			continue;
		}
		snprintf(field, sizeof field, "%.*s",
			 (int)strcspn(c->expected, "="), c->expected);
		field_text(&opts, field, got, sizeof got);
		if (strcmp(got, c->expected) != 0)
			fail(c->name, "\"%s\": got \"%s\", want \"%s\"",
			     c->args, got, c->expected);
		else
			pass(c->name);
	}
}

static void run_error_cases(const char *selection)
{
	for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0];
	     i++) {
		const struct error_case *c = &error_cases[i];
		char storage[256], *argv[MAX_WORDS + 1];
		struct options opts;
		struct options_error error;

		if (!selected(selection, "errors", c->name))
			continue;
		int argc = split_words(c->args, storage, sizeof storage, argv);
		enum options_result result =
			options_parse(argc, argv, &opts, &error);
		if (result != c->result)
			fail(c->name, "\"%s\": result %d, want %d (\"%s\")",
			     c->args, result, c->result, error.text);
		else if (c->message && strstr(error.text, c->message) == NULL)
			fail(c->name, "\"%s\": error \"%s\", want \"%s\" in it",
			     c->args, error.text, c->message);
		else
			pass(c->name);
	}
}

static void run_mode_cases(const char *selection)
{
	for (size_t i = 0; i < sizeof mode_cases / sizeof mode_cases[0]; i++) {
		const struct mode_case *c = &mode_cases[i];
		char storage[256], *argv[MAX_WORDS + 1];
		struct options opts;
		struct options_error error;
		struct inherited_fds fds = fds_for(c->handed);
		enum launch_mode mode = MODE_CHECK;

		if (!selected(selection, "modes", c->name))
			continue;
		int argc = split_words(c->args, storage, sizeof storage, argv);
		if (options_parse(argc, argv, &opts, &error) != OPTIONS_RUN) {
			fail(c->name, "\"%s\" does not parse: %s", c->args,
			     error.text);
			continue;
		}
		int status = options_choose_mode(&opts, &fds, &mode, &error);
		if (c->mode >= 0 && (status != 0 || (int)mode != c->mode))
			fail(c->name, "\"%s\": status %d mode %d, want mode %d "
				      "(\"%s\")",
			     c->args, status, mode, c->mode, error.text);
		else if (c->mode < 0 && status == 0)
			fail(c->name, "\"%s\": mode %d, want a refusal",
			     c->args, mode);
		else if (c->mode < 0 && strstr(error.text, c->message) == NULL)
			fail(c->name, "\"%s\": error \"%s\", want \"%s\" in it",
			     c->args, error.text, c->message);
		else
			pass(c->name);
	}
}

/* The help text names every option the table knows, once at least. */
static void run_help_case(const char *selection)
{
	const char *name = "--help names the options it explains";

	if (!selected(selection, "help", name))
		return;
	const char *help = options_help_text();
	if (strncmp(help, "usage: mmproxy ", 15) != 0 ||
	    strstr(help, "--max-flows N") == NULL ||
	    strstr(help, "An option that means nothing") == NULL)
		fail(name, "unexpected help text:\n%s", help);
	else
		pass(name);
}

int main(int argc, char **argv)
{
	const char *selection = argc > 1 ? argv[1] : NULL;

	run_parse_cases(selection);
	run_error_cases(selection);
	run_mode_cases(selection);
	run_help_case(selection);
	return failures == 0 ? 0 : 1;
}
