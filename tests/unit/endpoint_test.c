/*
 * Unit tests for endpoint.c: a table of PROXY headers, the load balancer
 * they came from and the options, each with the client the connection must
 * come from (or none) and the target it must reach; and --tproxy's target.
 *
 * usage: endpoint_test [GROUP-OR-CASE]
 *   With no argument every group runs. Prints "ok NAME" or "FAIL NAME: why"
 *   per case and exits 1 if any case failed.
 */
#include "endpoint.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "netaddr.h"

#include "verdict.h"

/* ---- helpers */

/* The options a command line gives; words have no spaces. */
static int options_from(const char *line, struct options *opts)
{
	char storage[256], *argv[16];
	int argc = 0;
	struct options_error error;

	snprintf(storage, sizeof storage, "%s", line);
	argv[argc++] = "mmproxy";
	for (char *word = strtok(storage, " "); word && argc < 15;
	     word = strtok(NULL, " "))
		argv[argc++] = word;
	argv[argc] = NULL;
	return options_parse(argc, argv, opts, &error) == OPTIONS_RUN ? 0 : -1;
}

/* A v2 LOCAL header, as a load balancer's health check sends it. */
static const uint8_t v2_local[] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
	0x20, /* version 2, command LOCAL */
	0x00, /* family UNSPEC, transport UNSPEC */
	0x00, 0x00, /* no address block */
};

/* "v2-local", or a v1 line without its CRLF. */
static int header_from(const char *text, struct proxyhdr *header)
{
	uint8_t bytes[256];
	size_t len;

	if (strcmp(text, "v2-local") == 0) {
		memcpy(bytes, v2_local, sizeof v2_local);
		len = sizeof v2_local;
	} else {
		len = (size_t)snprintf((char *)bytes, sizeof bytes, "%s\r\n",
				       text);
	}
	return proxyhdr_parse(bytes, len, header, NULL) == PROXYHDR_COMPLETE
		       ? 0
		       : -1;
}

static int selected(const char *selection, const char *group, const char *name)
{
	return selection == NULL || strcmp(selection, group) == 0 ||
	       strcmp(selection, name) == 0;
}

/* ---- the endpoints of a TCP connection */

struct choose_case {
	const char *name;
	const char *header; /* a v1 line, or "v2-local" */
	const char *lb;	    /* the load balancer's end, ADDR:PORT */
	const char *args;   /* the options */
	const char *client; /* from where, or "-" for our own address */
	const char *target;
};

static const struct choose_case choose_cases[] = {
	{"an IPv4 client goes to the IPv4 target",
	 "PROXY TCP4 192.0.2.1 198.51.100.1 40000 443", "10.0.0.1:5000", "",
	 "192.0.2.1:40000", "127.0.0.1:443"},
	{"an IPv6 client goes to the IPv6 target",
	 "PROXY TCP6 2001:db8::1 2001:db8::2 40000 443", "10.0.0.1:5000",
	 "-6 [::1]:8080", "[2001:db8::1]:40000", "[::1]:8080"},
	{"the client's family decides, not the load balancer's",
	 "PROXY TCP4 192.0.2.1 198.51.100.1 40000 443", "[2001:db8::9]:5000",
	 "", "192.0.2.1:40000", "127.0.0.1:443"},
	{"an IPv4-mapped client counts as IPv4",
	 "PROXY TCP6 ::ffff:192.0.2.7 ::ffff:198.51.100.1 40000 443",
	 "10.0.0.1:5000", "-4 127.0.0.2:80", "192.0.2.7:40000",
	 "127.0.0.2:80"},
	{"UNKNOWN connects from our own address to the lb's family target",
	 "PROXY UNKNOWN", "10.0.0.1:5000", "", "-", "127.0.0.1:443"},
	{"UNKNOWN from an IPv6 load balancer goes to the IPv6 target",
	 "PROXY UNKNOWN", "[2001:db8::9]:5000", "", "-", "[::1]:443"},
	{"UNKNOWN from an IPv4-mapped load balancer goes to the IPv4 target",
	 "PROXY UNKNOWN", "[::ffff:10.0.0.1]:5000", "", "-", "127.0.0.1:443"},
	{"LOCAL connects from our own address", "v2-local", "10.0.0.1:5000",
	 "", "-", "127.0.0.1:443"},
	{"a header naming its own connection carries no client",
	 "PROXY TCP4 10.0.0.1 198.51.100.1 5000 443", "10.0.0.1:5000", "", "-",
	 "127.0.0.1:443"},
	{"... even through an IPv4-mapped load balancer address",
	 "PROXY TCP4 10.0.0.1 198.51.100.1 5000 443",
	 "[::ffff:10.0.0.1]:5000", "", "-", "127.0.0.1:443"},
	{"the same address from another port is a client",
	 "PROXY TCP4 10.0.0.1 198.51.100.1 5001 443", "10.0.0.1:5000", "",
	 "10.0.0.1:5001", "127.0.0.1:443"},
	{"--dynamic-destination goes where the header says",
	 "PROXY TCP4 192.0.2.1 198.51.100.1 40000 8443", "10.0.0.1:5000",
	 "--dynamic-destination", "192.0.2.1:40000", "198.51.100.1:8443"},
	{"--dynamic-destination unmaps an IPv4-mapped destination",
	 "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.1 40000 8443",
	 "10.0.0.1:5000", "--dynamic-destination", "192.0.2.1:40000",
	 "198.51.100.1:8443"},
	{"--dynamic-destination with IPv6",
	 "PROXY TCP6 2001:db8::1 2001:db8::2 40000 8443", "10.0.0.1:5000",
	 "--dynamic-destination", "[2001:db8::1]:40000", "[2001:db8::2]:8443"},
	{"--dynamic-destination does not apply without a client",
	 "PROXY UNKNOWN", "10.0.0.1:5000", "--dynamic-destination", "-",
	 "127.0.0.1:443"},
};

static void run_choose_cases(const char *selection)
{
	for (size_t i = 0; i < sizeof choose_cases / sizeof choose_cases[0];
	     i++) {
		const struct choose_case *c = &choose_cases[i];
		struct options opts;
		struct proxyhdr header;
		struct sockaddr_storage lb;
		struct endpoints got;
		char client[NETADDR_TEXT_SIZE], target[NETADDR_TEXT_SIZE];

		if (!selected(selection, "choose", c->name))
			continue;
		if (options_from(c->args, &opts) != 0 ||
		    header_from(c->header, &header) != 0 ||
		    netaddr_parse(c->lb, &lb) != 0) {
			fail(c->name, "bad case: options, header or lb");
			continue;
		}
		endpoint_choose(&opts, &header, &lb, &got);
		struct sockaddr_storage lb_unmapped = lb;
		netaddr_unmap(&lb_unmapped);
		netaddr_format(&got.client, client, sizeof client);
		netaddr_format(&got.target, target, sizeof target);
		const char *from = got.spoofed ? client : "-";
		if (strcmp(from, c->client) != 0 ||
		    strcmp(target, c->target) != 0)
			fail(c->name, "from %s to %s, want from %s to %s", from,
			     target, c->client, c->target);
		else if (!got.spoofed && !netaddr_same(&got.client, &lb_unmapped))
			fail(c->name, "without a client, the log names %s, not "
				      "the load balancer",
			     client);
		else
			pass(c->name);
	}
}

/* ---- the client a header names, for UDP flows */

struct client_case {
	const char *name;
	const char *header;
	const char *client; /* "-" for none (AF_UNSPEC) */
};

static const struct client_case client_cases[] = {
	{"TCP4 names its source", "PROXY TCP4 192.0.2.1 198.51.100.1 1 2",
	 "192.0.2.1:1"},
	{"TCP6 names its source", "PROXY TCP6 2001:db8::1 2001:db8::2 1 2",
	 "[2001:db8::1]:1"},
	{"an IPv4-mapped source is unmapped",
	 "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.1 1 2", "192.0.2.1:1"},
	{"UNKNOWN names none", "PROXY UNKNOWN", "-"},
	{"LOCAL names none", "v2-local", "-"},
};

static void run_client_cases(const char *selection)
{
	for (size_t i = 0; i < sizeof client_cases / sizeof client_cases[0];
	     i++) {
		const struct client_case *c = &client_cases[i];
		struct proxyhdr header;
		struct sockaddr_storage client;
		char text[NETADDR_TEXT_SIZE];

		if (!selected(selection, "client", c->name))
			continue;
		if (header_from(c->header, &header) != 0) {
			fail(c->name, "bad case: header");
			continue;
		}
		bool named = endpoint_header_client(&header, &client);
		netaddr_format(&client, text, sizeof text);
		if (named != (strcmp(c->client, "-") != 0) ||
		    strcmp(text, c->client) != 0 ||
		    (!named && client.ss_family != AF_UNSPEC))
			fail(c->name, "got %s (named %d), want %s", text, named,
			     c->client);
		else
			pass(c->name);
	}
}

/* ---- --tproxy: the original destination unless -4/-6 say otherwise */

struct tproxy_case {
	const char *name;
	const char *destination;
	const char *args;
	const char *target;
};

static const struct tproxy_case tproxy_cases[] = {
	{"the original IPv4 destination", "198.51.100.1:80", "--tproxy",
	 "198.51.100.1:80"},
	{"the original IPv6 destination", "[2001:db8::2]:80", "--tproxy",
	 "[2001:db8::2]:80"},
	{"-4 replaces an IPv4 destination", "198.51.100.1:80",
	 "--tproxy -4 127.0.0.1:8080", "127.0.0.1:8080"},
	{"-4 leaves an IPv6 destination alone", "[2001:db8::2]:80",
	 "--tproxy -4 127.0.0.1:8080", "[2001:db8::2]:80"},
	{"-6 replaces an IPv6 destination", "[2001:db8::2]:80",
	 "--tproxy -6 [::1]:8080", "[::1]:8080"},
};

static void run_tproxy_cases(const char *selection)
{
	for (size_t i = 0; i < sizeof tproxy_cases / sizeof tproxy_cases[0];
	     i++) {
		const struct tproxy_case *c = &tproxy_cases[i];
		struct options opts;
		struct sockaddr_storage destination, target;
		char text[NETADDR_TEXT_SIZE];

		if (!selected(selection, "tproxy", c->name))
			continue;
		if (options_from(c->args, &opts) != 0 ||
		    netaddr_parse(c->destination, &destination) != 0) {
			fail(c->name, "bad case");
			continue;
		}
		target = endpoint_tproxy_target(&opts, &destination);
		netaddr_format(&target, text, sizeof text);
		if (strcmp(text, c->target) != 0)
			fail(c->name, "got %s, want %s", text, c->target);
		else
			pass(c->name);
	}
}

int main(int argc, char **argv)
{
	const char *selection = argc > 1 ? argv[1] : NULL;

	run_choose_cases(selection);
	run_client_cases(selection);
	run_tproxy_cases(selection);
	return failures == 0 ? 0 : 1;
}
