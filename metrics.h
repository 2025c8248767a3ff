/*
 * metrics: mmproxy's counters, kept in memory that every process of one
 * mmproxy shares, and their two renderings (Prometheus text, one log line).
 *
 * The block is mapped MAP_SHARED|MAP_ANONYMOUS by the long-lived process
 * before it forks anything, so connection processes, the UDP loop and the
 * metrics endpoint's process all see the same counters. Every update is one
 * relaxed atomic add: counts are exact, and no lock exists for a process to
 * die holding. Each metrics_count_* function takes a NULL block and does
 * nothing then (inetd-style processes, and mmproxy without --metrics).
 *
 * Not here: serving the endpoint (metrics_http.c), deciding what happened
 * to a connection (the connection and UDP code say it, by name).
 */
#ifndef METRICS_H
#define METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "proxyhdr.h"

/*
 * How a connection ended: the end= reasons of the -v 2 summary line, and
 * the labels of the ended and refused counters. connection.c decides them.
 */
enum metrics_end {
	METRICS_END_DONE,             /* both sides closed, the client first */
	METRICS_END_BACKEND_CLOSED,   /* both sides closed, the backend first */
	METRICS_END_HEALTH,           /* a check: connect and close, or LOCAL/UNKNOWN with no data */
	METRICS_END_NOT_ALLOWED,      /* the load balancer is not in the allowed subnets */
	METRICS_END_NOT_DIVERTED,     /* --tproxy: addressed to this host, not diverted */
	METRICS_END_NO_HEADER,        /* the first bytes are not PROXY protocol */
	METRICS_END_BAD_HEADER,       /* a PROXY header that breaks the spec */
	METRICS_END_HEADER_TIMEOUT,   /* no complete header in time */
	METRICS_END_HEADER_TRUNCATED, /* the load balancer closed in the middle of the header */
	METRICS_END_BIND_FAILED,      /* could not take the client's address */
	METRICS_END_BACKEND_REFUSED,  /* the target refused or is unreachable */
	METRICS_END_CONNECT_TIMEOUT,  /* the target did not answer in time */
	METRICS_END_CLIENT_RESET,     /* the load balancer side reset; the backend was reset too */
	METRICS_END_BACKEND_RESET,    /* the backend reset; the client was reset too */
	METRICS_END_IDLE_TIMEOUT,     /* no byte either way for --idle-timeout; both reset */
	METRICS_END_LOOP,             /* --dynamic-destination named mmproxy itself */
	METRICS_END_ERROR,            /* a system call failed */
	METRICS_END_COUNT,
};

/*
 * Why a connection to the target failed, by errno: EADDRINUSE (the client's
 * port is taken here), EADDRNOTAVAIL (that 4-tuple is live), EPERM or
 * EACCES (a capability is missing), ECONNREFUSED, ETIMEDOUT, ENETUNREACH or
 * EHOSTUNREACH; FAMILY: the client and the target differ in family.
 */
enum metrics_connect_class {
	METRICS_CONNECT_ADDRESS_IN_USE,
	METRICS_CONNECT_ADDRESS_UNAVAILABLE,
	METRICS_CONNECT_PERMISSION,
	METRICS_CONNECT_REFUSED,
	METRICS_CONNECT_TIMEOUT,
	METRICS_CONNECT_UNREACHABLE,
	METRICS_CONNECT_FAMILY,
	METRICS_CONNECT_OTHER,
	METRICS_CONNECT_CLASS_COUNT,
};

/* Why a datagram from a load balancer went no further. */
enum metrics_udp_drop {
	METRICS_UDP_DROP_NOT_ALLOWED,
	METRICS_UDP_DROP_BAD_HEADER,
	METRICS_UDP_DROP_NOT_DGRAM,
	METRICS_UDP_DROP_FLOW_FAILED,
	METRICS_UDP_DROP_SEND_FAILED, /* the target's socket refused it */
	METRICS_UDP_DROP_COUNT,
};

/* Where datagrams went: received from, or sent to, one of the two ends. */
enum metrics_udp_path {
	METRICS_UDP_FROM_LB,
	METRICS_UDP_TO_BACKEND,
	METRICS_UDP_FROM_BACKEND,
	METRICS_UDP_TO_LB,
	METRICS_UDP_PATH_COUNT,
};

enum metrics_udp_flow_event {
	METRICS_UDP_FLOW_OPENED,
	METRICS_UDP_FLOW_EXPIRED, /* idle past --close-after */
	METRICS_UDP_FLOW_EVICTED, /* closed to make room for another */
	METRICS_UDP_FLOW_CLOSED,  /* at exit: only the live count changes */
};

/*
 * Every field is 64 bits wide and is read and written whole, atomically:
 * metrics_snapshot() copies the block word by word.
 */
struct metrics_counters {
	uint64_t accepted;
	uint64_t ended[METRICS_END_COUNT];
	/* By proxyhdr_error; [PROXYHDR_OK] counts well-formed headers whose
	 * transport is not a stream (DGRAM or UNSPEC naming a client). */
	uint64_t bad_headers[PROXYHDR_EV2_CRC32C_TWICE + 1];
	uint64_t bytes_up;				 /* client to backend */
	uint64_t bytes_down;				 /* backend to client */
	uint64_t connect_failures[METRICS_CONNECT_CLASS_COUNT];
	uint64_t reloads_ok;
	uint64_t reloads_failed;
	uint64_t
		last_load_time_s; /* Unix time of the last good load, 0: none */
	uint64_t subnet_entries;  /* entries in force */
	uint64_t udp_datagrams[METRICS_UDP_PATH_COUNT];
	uint64_t udp_drops[METRICS_UDP_DROP_COUNT];
	uint64_t udp_flows_opened;
	uint64_t udp_flows_expired;
	uint64_t udp_flows_evicted;
	uint64_t udp_flows_live;
};

/* The shared block. Opaque on purpose: only the functions below touch it. */
struct metrics;

/* Which families a rendering shows: a TCP mode's, a UDP mode's, or both. */
enum {
	METRICS_SHOW_TCP = 1,
	METRICS_SHOW_UDP = 2,
};

/* Maps a zeroed shared block; NULL with errno set on failure. */
struct metrics *metrics_open(void);

void metrics_count_accepted(struct metrics *m);
void metrics_count_end(struct metrics *m, enum metrics_end end);

/* END's name: "done", "client-reset"... as the summary line shows it. */
const char *metrics_end_name(enum metrics_end end);
void metrics_count_bad_header(struct metrics *m, enum proxyhdr_error error);
void metrics_add_bytes(struct metrics *m, uint64_t up, uint64_t down);
/* error: the errno of the failed bind() or connect(); 0 for a family mismatch. */
void metrics_count_connect_failure(struct metrics *m, int error);

/* A good load (at start or on SIGHUP): entries in force, and when. */
void metrics_note_subnets_loaded(struct metrics *m, size_t entries, time_t now);
void metrics_count_reload(struct metrics *m, bool ok);

void metrics_count_udp_datagrams(struct metrics *m, enum metrics_udp_path path,
				 uint64_t count);
void metrics_count_udp_drop(struct metrics *m, enum metrics_udp_drop reason);
void metrics_count_udp_flow(struct metrics *m,
			    enum metrics_udp_flow_event event);

/* A copy of every counter, each read atomically. */
void metrics_snapshot(const struct metrics *m, struct metrics_counters *out);

/*
 * Pure: the counters in the Prometheus text exposition format (version
 * 0.0.4), the families that show selects, each with # HELP and # TYPE.
 * Writes at most size bytes, NUL-terminated when size > 0, and returns the
 * length the whole text needs (as snprintf does): a result >= size means
 * out was too small and holds a cut text.
 */
size_t metrics_render_prometheus(const struct metrics_counters *c,
				 unsigned show, char *out, size_t size);

/*
 * Pure: the same counters as one line of NAME=VALUE words, labelled
 * families as NAME=LABEL:VALUE,LABEL:VALUE with their non-zero members only
 * ("-" when all are zero). Returns what metrics_render_prometheus returns.
 */
size_t metrics_render_log_line(const struct metrics_counters *c, unsigned show,
			       char *out, size_t size);

/* SIGUSR1: the log line above, logged whatever the verbosity; NULL m: none. */
void metrics_log(const struct metrics *m, unsigned show);

/* Pure: the class of a failed bind() or connect()'s errno. */
enum metrics_connect_class metrics_connect_class_of(int error);

#endif
