/*
 * options: the command line, parsed and checked, and the launch mode it
 * chooses.
 *
 * Holds the option table, defaults, value parsing, --help's text, and the
 * one place that decides the mode and refuses options that mean nothing in
 * it. Pure: no I/O, no exit, no logging; errors come back as text for
 * main() to print. Holds nothing of what the modes do with the options.
 */
#ifndef OPTIONS_H
#define OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sandbox.h"

#define MMPROXY_VERSION "1.0.0"

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
	unsigned connections_per_process; /* 1: a fresh process each */
	unsigned min_spare;		  /* the pool's waiting processes */
	unsigned max_spare;
	int header_timeout_ms;
	int connect_timeout_ms;
	int idle_timeout_ms; /* TCP: end a connection quiet this long; 0 never */
	unsigned close_after_s;
	unsigned max_flows;
	bool port_fallback;
	bool dynamic_destination;
	bool listen_transparent;
	bool force_inetd;
	bool tproxy;
	bool check;			     /* --check: test routing, then exit */
	uint32_t table;			     /* the routing table --check suggests */
	struct sockaddr_storage check_from4; /* spoofed source of --check's probe */
	struct sockaddr_storage check_from6;
	bool metrics_given;
	struct sockaddr_storage metrics_addr; /* --metrics: the endpoint */
	uint64_t given; /* which options the command line named: for the mode's checks */
	const char *user;    /* --user NAME|UID, or NULL */
	bool do_not_sandbox; /* --do-not-sandbox */
	/* Not from the command line: main() fills it in at start-up. */
	struct sandbox_policy sandbox;
};

/* One line for the user, without the program's name. */
struct options_error {
	char text[512];
};

enum options_result {
	OPTIONS_RUN,	 /* *opts is filled in */
	OPTIONS_HELP,	 /* print options_help_text() and exit 0 */
	OPTIONS_VERSION, /* print the version and exit 0 */
	OPTIONS_ERROR,	 /* a usage error: error->text says what, exit 2 */
};

/*
 * Options take one or two dashes and a value as the next word or after
 * '='. argv[argc] must be NULL, as main() receives it.
 */
enum options_result options_parse(int argc, char *const *argv,
				  struct options *opts,
				  struct options_error *error);

/* The SYNOPSIS and every option: what --help prints. */
const char *options_help_text(void);

/* How mmproxy runs. */
enum launch_mode {
	MODE_CHECK,		 /* --check: test the routing, print, exit */
	MODE_ONE_CONNECTION,	 /* inetd, systemd Accept=yes: one connection */
	MODE_ACTIVATED_LISTENER, /* systemd Accept=no: accept on its socket */
	MODE_STANDALONE,	 /* our own accept processes on -l */
	MODE_UDP,		 /* the long-lived datagram mode */
};

/* What the process was handed, as main() found it. */
struct inherited_fds {
	bool activated;		   /* systemd passed a socket on fd 3 */
	bool activated_datagram;   /* ... a datagram socket */
	bool activated_listening;  /* ... a listening stream socket */
	bool fd0_is_connection;	   /* fd 0 is a connected TCP socket */
};

/*
 * The one place that decides the mode, from the options and what was
 * handed over, and refuses options that mean nothing in that mode
 * (`-p udp --listeners 4`). Returns 0 and *mode, or -1 with error filled.
 */
int options_choose_mode(const struct options *opts,
			const struct inherited_fds *fds, enum launch_mode *mode,
			struct options_error *error);

#endif
