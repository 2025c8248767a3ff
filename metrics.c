/*
 * metrics: the shared counter block, the atomic adds that feed it, and the
 * two renderings of a snapshot (Prometheus text and one log line).
 *
 * The renderings are pure (counters in, text out) and table-driven: a
 * labelled family is a name, a label and the label's values, so a new
 * member is one line. Live connections are not counted separately: every
 * accepted connection ends exactly once with one end reason, so the number
 * live is accepted less ended, and no process that dies half-way can leave
 * a gauge counting it. Refusals are the ends that are refusals, by the same
 * counters, so the two families can never disagree.
 *
 * metrics_log() is the one function here that does I/O: SIGUSR1's line.
 * Not here: the endpoint that serves the text (metrics_http.c).
 */
#define _GNU_SOURCE
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"

struct metrics {
	struct metrics_counters counters;
};

_Static_assert(sizeof(struct metrics_counters) % sizeof(uint64_t) == 0,
	       "the snapshot copies the counters as 64-bit words");

/* ---- the shared block and its updates ---------------------------------- */

struct metrics *metrics_open(void)
{
	void *block = mmap(NULL, sizeof(struct metrics), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return block == MAP_FAILED ? NULL : block;
}

/* Relaxed: each counter stands alone, and only its total must be exact. */
static void add(uint64_t *counter, uint64_t amount)
{
	__atomic_fetch_add(counter, amount, __ATOMIC_RELAXED);
}

static void store(uint64_t *counter, uint64_t value)
{
	__atomic_store_n(counter, value, __ATOMIC_RELAXED);
}

void metrics_count_accepted(struct metrics *m)
{
	if (m != NULL)
		add(&m->counters.accepted, 1);
}

void metrics_count_end(struct metrics *m, enum metrics_end end)
{
	if (m != NULL && end < METRICS_END_COUNT)
		add(&m->counters.ended[end], 1);
}

void metrics_count_bad_header(struct metrics *m, enum proxyhdr_error error)
{
	size_t kinds = sizeof m->counters.bad_headers /
		       sizeof m->counters.bad_headers[0];

	if (m != NULL && (size_t)error < kinds)
		add(&m->counters.bad_headers[error], 1);
}

void metrics_add_bytes(struct metrics *m, uint64_t up, uint64_t down)
{
	if (m == NULL)
		return;
	add(&m->counters.bytes_up, up);
	add(&m->counters.bytes_down, down);
}

enum metrics_connect_class metrics_connect_class_of(int error)
{
	switch (error) {
	case 0:
		return METRICS_CONNECT_FAMILY;
	case EADDRINUSE:
		return METRICS_CONNECT_ADDRESS_IN_USE;
	case EADDRNOTAVAIL:
		return METRICS_CONNECT_ADDRESS_UNAVAILABLE;
	case EPERM:
	case EACCES:
		return METRICS_CONNECT_PERMISSION;
	case ECONNREFUSED:
		return METRICS_CONNECT_REFUSED;
	case ETIMEDOUT:
		return METRICS_CONNECT_TIMEOUT;
	case ENETUNREACH:
	case EHOSTUNREACH:
		return METRICS_CONNECT_UNREACHABLE;
	default:
		return METRICS_CONNECT_OTHER;
	}
}

void metrics_count_connect_failure(struct metrics *m, int error)
{
	if (m == NULL)
		return;
	enum metrics_connect_class class = metrics_connect_class_of(error);
	add(&m->counters.connect_failures[class], 1);
}

void metrics_note_subnets_loaded(struct metrics *m, size_t entries, time_t now)
{
	if (m == NULL)
		return;
	store(&m->counters.subnet_entries, entries);
	store(&m->counters.last_load_time_s, now > 0 ? (uint64_t)now : 0);
}

void metrics_count_reload(struct metrics *m, bool ok)
{
	if (m != NULL)
		add(ok ? &m->counters.reloads_ok : &m->counters.reloads_failed,
		    1);
}

void metrics_count_udp_datagrams(struct metrics *m, enum metrics_udp_path path,
				 uint64_t count)
{
	if (m != NULL && path < METRICS_UDP_PATH_COUNT && count > 0)
		add(&m->counters.udp_datagrams[path], count);
}

void metrics_count_udp_drop(struct metrics *m, enum metrics_udp_drop reason)
{
	if (m != NULL && reason < METRICS_UDP_DROP_COUNT)
		add(&m->counters.udp_drops[reason], 1);
}

void metrics_count_udp_flow(struct metrics *m,
			    enum metrics_udp_flow_event event)
{
	if (m == NULL)
		return;
	switch (event) {
	case METRICS_UDP_FLOW_OPENED:
		add(&m->counters.udp_flows_opened, 1);
		add(&m->counters.udp_flows_live, 1);
		return;
	case METRICS_UDP_FLOW_EXPIRED:
		add(&m->counters.udp_flows_expired, 1);
		break;
	case METRICS_UDP_FLOW_EVICTED:
		add(&m->counters.udp_flows_evicted, 1);
		break;
	case METRICS_UDP_FLOW_CLOSED:
		break;
	}
	/* Adding all ones subtracts one. */
	add(&m->counters.udp_flows_live, UINT64_MAX);
}

void metrics_snapshot(const struct metrics *m, struct metrics_counters *out)
{
	const uint64_t *from = (const uint64_t *)&m->counters;
	uint64_t *to = (uint64_t *)out;
	size_t words = sizeof *out / sizeof(uint64_t);

	/*
	 * Last field first: an end is read before the accept that preceded
	 * it, so accepted less ended is never below zero.
	 */
	for (size_t i = words; i-- > 0;)
		to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

/* ---- names --------------------------------------------------------------- */

static const char *const end_names[METRICS_END_COUNT] = {
	[METRICS_END_DONE] = "done",
	[METRICS_END_BACKEND_CLOSED] = "backend-closed",
	[METRICS_END_HEALTH] = "health",
	[METRICS_END_NOT_ALLOWED] = "not-allowed",
	[METRICS_END_NOT_DIVERTED] = "not-diverted",
	[METRICS_END_NO_HEADER] = "no-header",
	[METRICS_END_BAD_HEADER] = "bad-header",
	[METRICS_END_HEADER_TIMEOUT] = "header-timeout",
	[METRICS_END_HEADER_TRUNCATED] = "header-truncated",
	[METRICS_END_BIND_FAILED] = "bind-failed",
	[METRICS_END_BACKEND_REFUSED] = "backend-refused",
	[METRICS_END_CONNECT_TIMEOUT] = "connect-timeout",
	[METRICS_END_CLIENT_RESET] = "client-reset",
	[METRICS_END_BACKEND_RESET] = "backend-reset",
	[METRICS_END_IDLE_TIMEOUT] = "idle-timeout",
	[METRICS_END_LOOP] = "loop",
	[METRICS_END_ERROR] = "error",
};

const char *metrics_end_name(enum metrics_end end)
{
	return end_names[end];
}

/* The ends that are refusals: the connection never reached the target. */
static const enum metrics_end refusals[] = {
	METRICS_END_NOT_ALLOWED,    METRICS_END_NOT_DIVERTED,
	METRICS_END_NO_HEADER,	    METRICS_END_BAD_HEADER,
	METRICS_END_HEADER_TIMEOUT, METRICS_END_HEADER_TRUNCATED,
	METRICS_END_LOOP,
};

/* NULL: not a kind of bad header ("not PROXY" is no-header). */
static const char *const bad_header_names[PROXYHDR_EV2_CRC32C_TWICE + 1] = {
	[PROXYHDR_OK] = "not-stream",
	[PROXYHDR_EV1_TOO_LONG] = "v1-too-long",
	[PROXYHDR_EV1_SYNTAX] = "v1-syntax",
	[PROXYHDR_EV1_PROTOCOL] = "v1-protocol",
	[PROXYHDR_EV1_ADDRESS] = "v1-address",
	[PROXYHDR_EV1_PORT] = "v1-port",
	[PROXYHDR_EV2_VERSION] = "v2-version",
	[PROXYHDR_EV2_COMMAND] = "v2-command",
	[PROXYHDR_EV2_FAMILY] = "v2-family",
	[PROXYHDR_EV2_ADDR_LEN] = "v2-address-length",
	[PROXYHDR_EV2_TLV] = "v2-tlv",
	[PROXYHDR_EV2_CRC32C] = "v2-crc32c",
	[PROXYHDR_EV2_UNIQUE_ID] = "v2-unique-id",
	[PROXYHDR_EV2_CRC32C_TWICE] = "v2-crc32c-twice",
};

static const char *const connect_class_names[METRICS_CONNECT_CLASS_COUNT] = {
	[METRICS_CONNECT_ADDRESS_IN_USE] = "address-in-use",
	[METRICS_CONNECT_ADDRESS_UNAVAILABLE] = "address-not-available",
	[METRICS_CONNECT_PERMISSION] = "permission",
	[METRICS_CONNECT_REFUSED] = "refused",
	[METRICS_CONNECT_TIMEOUT] = "timeout",
	[METRICS_CONNECT_UNREACHABLE] = "unreachable",
	[METRICS_CONNECT_FAMILY] = "family-mismatch",
	[METRICS_CONNECT_OTHER] = "other",
};

static const char *const udp_path_names[METRICS_UDP_PATH_COUNT] = {
	[METRICS_UDP_FROM_LB] = "from-lb",
	[METRICS_UDP_TO_BACKEND] = "to-backend",
	[METRICS_UDP_FROM_BACKEND] = "from-backend",
	[METRICS_UDP_TO_LB] = "to-lb",
};

static const char *const udp_drop_names[METRICS_UDP_DROP_COUNT] = {
	[METRICS_UDP_DROP_NOT_ALLOWED] = "not-allowed",
	[METRICS_UDP_DROP_BAD_HEADER] = "bad-header",
	[METRICS_UDP_DROP_NOT_DGRAM] = "not-dgram",
	[METRICS_UDP_DROP_FLOW_FAILED] = "flow-failed",
	[METRICS_UDP_DROP_SEND_FAILED] = "send-failed",
};

/* ---- text that grows, snprintf-style ------------------------------------- */

struct text {
	char *out;
	size_t size;
	size_t len; /* what the whole text needs, even past size */
};

__attribute__((format(printf, 2, 3))) static void append(struct text *t,
							 const char *fmt, ...)
{
	size_t room = t->len < t->size ? t->size - t->len : 0;
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(room > 0 ? t->out + t->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		t->len += (size_t)n;
}

static size_t finish(struct text *t)
{
	if (t->size > 0 && t->len >= t->size)
		t->out[t->size - 1] = '\0';
	else if (t->size > 0)
		t->out[t->len] = '\0';
	return t->len;
}

/* ---- Prometheus text ------------------------------------------------------ */

/* One labelled family: values[i] under label="names[i]"; a NULL name is no member. */
struct family {
	const char *name;
	const char *type;
	const char *help;
	const char *label;
	const char *const *names;
	size_t count;
};

static void describe(struct text *t, const char *name, const char *type,
		     const char *help)
{
	append(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(struct text *t, const char *name, const char *type,
		   const char *help, uint64_t value)
{
	describe(t, name, type, help);
	append(t, "%s %llu\n", name, (unsigned long long)value);
}

static void labelled(struct text *t, const struct family *f,
		     const uint64_t *values)
{
	describe(t, f->name, f->type, f->help);
	for (size_t i = 0; i < f->count; i++)
		if (f->names[i] != NULL)
			append(t, "%s{%s=\"%s\"} %llu\n", f->name, f->label,
			       f->names[i], (unsigned long long)values[i]);
}

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static const struct family ended_family = {
	.name = "mmproxy_connections_ended_total",
	.type = "counter",
	.help = "Connections ended, by the end= reason of the summary line.",
	.label = "end",
	.names = end_names,
	.count = COUNT_OF(end_names),
};
static const struct family bad_header_family = {
	.name = "mmproxy_bad_headers_total",
	.type = "counter",
	.help = "Connections refused for an invalid PROXY header, by what was "
		"wrong.",
	.label = "kind",
	.names = bad_header_names,
	.count = COUNT_OF(bad_header_names),
};
static const struct family connect_family = {
	.name = "mmproxy_backend_connect_failures_total",
	.type = "counter",
	.help = "Connections to the target (spoofed or not) that failed, by "
		"errno class.",
	.label = "class",
	.names = connect_class_names,
	.count = COUNT_OF(connect_class_names),
};
static const struct family udp_path_family = {
	.name = "mmproxy_udp_datagrams_total",
	.type = "counter",
	.help = "UDP datagrams received from or sent to the load balancers and "
		"the target.",
	.label = "path",
	.names = udp_path_names,
	.count = COUNT_OF(udp_path_names),
};
static const struct family udp_drop_family = {
	.name = "mmproxy_udp_dropped_total",
	.type = "counter",
	.help = "UDP datagrams from load balancers that were dropped, by "
		"reason.",
	.label = "reason",
	.names = udp_drop_names,
	.count = COUNT_OF(udp_drop_names),
};

/* accepted less ended; never below zero, whatever a snapshot caught. */
static uint64_t live_connections(const struct metrics_counters *c)
{
	uint64_t ended = 0;

	for (size_t i = 0; i < METRICS_END_COUNT; i++)
		ended += c->ended[i];
	return c->accepted > ended ? c->accepted - ended : 0;
}

static void refused_family(struct text *t, const struct metrics_counters *c)
{
	static const char name[] = "mmproxy_connections_refused_total";

	describe(t, name, "counter",
		 "Connections refused before reaching the target, by reason "
		 "(the same counts as their end= reasons).");
	for (size_t i = 0; i < COUNT_OF(refusals); i++)
		append(t, "%s{reason=\"%s\"} %llu\n", name,
		       end_names[refusals[i]],
		       (unsigned long long)c->ended[refusals[i]]);
}

static void tcp_families(struct text *t, const struct metrics_counters *c)
{
	scalar(t, "mmproxy_connections_accepted_total", "counter",
	       "Connections accepted.", c->accepted);
	scalar(t, "mmproxy_connections_live", "gauge",
	       "Connections accepted and not yet ended.", live_connections(c));
	labelled(t, &ended_family, c->ended);
	refused_family(t, c);
	labelled(t, &bad_header_family, c->bad_headers);
	describe(t, "mmproxy_bytes_total", "counter",
		 "Payload bytes relayed by connections that ended: up is "
		 "client to target, down is target to client.");
	append(t, "mmproxy_bytes_total{direction=\"up\"} %llu\n",
	       (unsigned long long)c->bytes_up);
	append(t, "mmproxy_bytes_total{direction=\"down\"} %llu\n",
	       (unsigned long long)c->bytes_down);
	labelled(t, &connect_family, c->connect_failures);
}

static void reload_families(struct text *t, const struct metrics_counters *c)
{
	describe(t, "mmproxy_reloads_total", "counter",
		 "SIGHUP reloads of the allowed-subnets file, by result.");
	append(t, "mmproxy_reloads_total{result=\"ok\"} %llu\n",
	       (unsigned long long)c->reloads_ok);
	append(t, "mmproxy_reloads_total{result=\"failed\"} %llu\n",
	       (unsigned long long)c->reloads_failed);
	scalar(t, "mmproxy_allowed_subnets_entries", "gauge",
	       "Entries of the allowed-subnets file in force.",
	       c->subnet_entries);
	scalar(t, "mmproxy_allowed_subnets_last_load_timestamp_seconds",
	       "gauge",
	       "When the allowed-subnets file in force was read (at start or "
	       "by the last good reload), in Unix time; 0 without a file.",
	       c->last_load_time_s);
}

static void udp_families(struct text *t, const struct metrics_counters *c)
{
	labelled(t, &udp_path_family, c->udp_datagrams);
	labelled(t, &udp_drop_family, c->udp_drops);
	scalar(t, "mmproxy_udp_flows_opened_total", "counter",
	       "UDP flows opened.", c->udp_flows_opened);
	scalar(t, "mmproxy_udp_flows_expired_total", "counter",
	       "UDP flows closed after --close-after seconds idle.",
	       c->udp_flows_expired);
	scalar(t, "mmproxy_udp_flows_evicted_total", "counter",
	       "UDP flows closed to make room for another.",
	       c->udp_flows_evicted);
	scalar(t, "mmproxy_udp_flows_live", "gauge", "UDP flows open now.",
	       c->udp_flows_live);
}

size_t metrics_render_prometheus(const struct metrics_counters *c,
				 unsigned show, char *out, size_t size)
{
	struct text t = {out, size, 0};

	if (show & METRICS_SHOW_TCP)
		tcp_families(&t, c);
	if (show & METRICS_SHOW_UDP)
		udp_families(&t, c);
	reload_families(&t, c);
	return finish(&t);
}

/* ---- one log line ---------------------------------------------------------- */

/* " key=name:value,name:value", non-zero members only, or " key=-". */
static void log_family(struct text *t, const char *key,
		       const char *const *names, const uint64_t *values,
		       size_t count)
{
	bool any = false;

	append(t, " %s=", key);
	for (size_t i = 0; i < count; i++) {
		if (names[i] == NULL || values[i] == 0)
			continue;
		append(t, "%s%s:%llu", any ? "," : "", names[i],
		       (unsigned long long)values[i]);
		any = true;
	}
	if (!any)
		append(t, "-");
}

static void log_tcp(struct text *t, const struct metrics_counters *c)
{
	append(t, " accepted=%llu live=%llu", (unsigned long long)c->accepted,
	       (unsigned long long)live_connections(c));
	log_family(t, "ended", end_names, c->ended, METRICS_END_COUNT);
	log_family(t, "bad_headers", bad_header_names, c->bad_headers,
		   COUNT_OF(bad_header_names));
	append(t, " bytes_up=%llu bytes_down=%llu",
	       (unsigned long long)c->bytes_up,
	       (unsigned long long)c->bytes_down);
	log_family(t, "connect_failures", connect_class_names,
		   c->connect_failures, METRICS_CONNECT_CLASS_COUNT);
}

static void log_udp(struct text *t, const struct metrics_counters *c)
{
	log_family(t, "udp_datagrams", udp_path_names, c->udp_datagrams,
		   METRICS_UDP_PATH_COUNT);
	log_family(t, "udp_dropped", udp_drop_names, c->udp_drops,
		   METRICS_UDP_DROP_COUNT);
	append(t,
	       " udp_flows_opened=%llu udp_flows_expired=%llu "
	       "udp_flows_evicted=%llu udp_flows_live=%llu",
	       (unsigned long long)c->udp_flows_opened,
	       (unsigned long long)c->udp_flows_expired,
	       (unsigned long long)c->udp_flows_evicted,
	       (unsigned long long)c->udp_flows_live);
}

size_t metrics_render_log_line(const struct metrics_counters *c, unsigned show,
			       char *out, size_t size)
{
	struct text t = {out, size, 0};

	append(&t, "metrics");
	if (show & METRICS_SHOW_TCP)
		log_tcp(&t, c);
	if (show & METRICS_SHOW_UDP)
		log_udp(&t, c);
	append(&t,
	       " reloads_ok=%llu reloads_failed=%llu subnet_entries=%llu "
	       "subnets_loaded_at=%llu",
	       (unsigned long long)c->reloads_ok,
	       (unsigned long long)c->reloads_failed,
	       (unsigned long long)c->subnet_entries,
	       (unsigned long long)c->last_load_time_s);
	return finish(&t);
}

void metrics_log(const struct metrics *m, unsigned show)
{
	struct metrics_counters counters;
	char line[1024];

	if (m == NULL)
		return;
	metrics_snapshot(m, &counters);
	metrics_render_log_line(&counters, show, line, sizeof line);
	log_msg(LOG_INFO, "%s", line);
}
