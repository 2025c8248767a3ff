/*
 * Unit tests for metrics.c, metrics_http.c's request judge and reload.c:
 * tables of counters and the lines their renderings must hold, of request
 * bytes and the verdict they get, of errno values and their class; plus
 * the shared block counted from several processes at once, and reloads of
 * real files.
 *
 * usage: metrics_test [GROUP]
 *   Groups: prometheus, format, logline, truncate, judge, errno, shared,
 *   reload. With no argument every group runs. Prints "ok NAME" or
 *   "FAIL NAME: why" per case and exits 1 if any case failed.
 */
#define _GNU_SOURCE
#include "metrics.h"
#include "metrics_http.h"
#include "reload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "verdict.h"

/* Does text hold line as a whole line? */
static int has_line(const char *text, const char *line)
{
	size_t len = strlen(line);

	for (const char *at = strstr(text, line); at; at = strstr(at + 1, line))
		if ((at == text || at[-1] == '\n') && at[len] == '\n')
			return 1;
	return 0;
}

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

/* ---- Prometheus text: counters in, lines out */

typedef void setup_fn(struct metrics_counters *c);

static void nothing(struct metrics_counters *c)
{
	(void)c;
}

static void some_ends(struct metrics_counters *c)
{
	c->accepted = 7;
	c->ended[METRICS_END_DONE] = 2;
	c->ended[METRICS_END_HEALTH] = 1;
	c->ended[METRICS_END_NOT_ALLOWED] = 3;
}

static void more_ended_than_accepted(struct metrics_counters *c)
{
	c->accepted = 1;
	c->ended[METRICS_END_DONE] = 2;
}

static void bad_headers(struct metrics_counters *c)
{
	c->ended[METRICS_END_BAD_HEADER] = 3;
	c->bad_headers[PROXYHDR_EV2_CRC32C] = 2;
	c->bad_headers[PROXYHDR_EV1_PORT] = 1;
}

static void bytes_and_failures(struct metrics_counters *c)
{
	c->bytes_up = 1000;
	c->bytes_down = UINT64_MAX;
	c->connect_failures[METRICS_CONNECT_REFUSED] = 4;
	c->connect_failures[METRICS_CONNECT_ADDRESS_IN_USE] = 1;
}

static void reloads(struct metrics_counters *c)
{
	c->reloads_ok = 2;
	c->reloads_failed = 1;
	c->subnet_entries = 5;
	c->last_load_time_s = 1700000000;
}

static void udp(struct metrics_counters *c)
{
	c->udp_datagrams[METRICS_UDP_FROM_LB] = 10;
	c->udp_datagrams[METRICS_UDP_TO_BACKEND] = 8;
	c->udp_datagrams[METRICS_UDP_FROM_BACKEND] = 6;
	c->udp_datagrams[METRICS_UDP_TO_LB] = 6;
	c->udp_drops[METRICS_UDP_DROP_BAD_HEADER] = 2;
	c->udp_flows_opened = 3;
	c->udp_flows_expired = 1;
	c->udp_flows_live = 2;
}

struct render_case {
	const char *name;
	setup_fn *setup;
	unsigned show;
	const char *present[6]; /* whole lines the text must hold */
	const char *absent[3];	/* substrings it must not hold */
};

#define TCP METRICS_SHOW_TCP
#define UDP METRICS_SHOW_UDP

// clang-format off
static const struct render_case render_cases[] = {
	{"zero counters show as 0", nothing, TCP,
	 {"mmproxy_connections_accepted_total 0",
	  "mmproxy_connections_live 0",
	  "mmproxy_connections_ended_total{end=\"done\"} 0",
	  "mmproxy_reloads_total{result=\"ok\"} 0"},
	 {"mmproxy_udp_"}},
	{"live is accepted less ended", some_ends, TCP,
	 {"mmproxy_connections_accepted_total 7",
	  "mmproxy_connections_live 1",
	  "mmproxy_connections_ended_total{end=\"done\"} 2",
	  "mmproxy_connections_ended_total{end=\"health\"} 1"}, {NULL}},
	{"live is never below zero", more_ended_than_accepted, TCP,
	 {"mmproxy_connections_live 0"}, {NULL}},
	{"a refusal counts under its end and its reason", some_ends, TCP,
	 {"mmproxy_connections_ended_total{end=\"not-allowed\"} 3",
	  "mmproxy_connections_refused_total{reason=\"not-allowed\"} 3",
	  "mmproxy_connections_refused_total{reason=\"header-timeout\"} 0"},
	 {"refused_total{reason=\"done\"}", "refused_total{reason=\"health\"}"}},
	{"bad headers count by kind", bad_headers, TCP,
	 {"mmproxy_connections_refused_total{reason=\"bad-header\"} 3",
	  "mmproxy_bad_headers_total{kind=\"v2-crc32c\"} 2",
	  "mmproxy_bad_headers_total{kind=\"v1-port\"} 1",
	  "mmproxy_bad_headers_total{kind=\"v2-unique-id\"} 0"},
	 {"(null)", "kind=\"\""}},
	{"bytes each way and connect failures by class", bytes_and_failures, TCP,
	 {"mmproxy_bytes_total{direction=\"up\"} 1000",
	  "mmproxy_bytes_total{direction=\"down\"} 18446744073709551615",
	  "mmproxy_backend_connect_failures_total{class=\"refused\"} 4",
	  "mmproxy_backend_connect_failures_total{class=\"address-in-use\"} 1",
	  "mmproxy_backend_connect_failures_total{class=\"timeout\"} 0"}, {NULL}},
	{"reloads by result, entries and the last load's time", reloads, TCP,
	 {"mmproxy_reloads_total{result=\"ok\"} 2",
	  "mmproxy_reloads_total{result=\"failed\"} 1",
	  "mmproxy_allowed_subnets_entries 5",
	  "mmproxy_allowed_subnets_last_load_timestamp_seconds 1700000000"}, {NULL}},
	{"UDP datagrams by path, drops by reason, flows", udp, UDP,
	 {"mmproxy_udp_datagrams_total{path=\"from-lb\"} 10",
	  "mmproxy_udp_datagrams_total{path=\"to-lb\"} 6",
	  "mmproxy_udp_dropped_total{reason=\"bad-header\"} 2",
	  "mmproxy_udp_flows_opened_total 3",
	  "mmproxy_udp_flows_expired_total 1",
	  "mmproxy_udp_flows_live 2"},
	 {"mmproxy_connections_", "mmproxy_bytes_total"}},
	{"UDP shows evictions and reloads too", udp, UDP,
	 {"mmproxy_udp_flows_evicted_total 0",
	  "mmproxy_udp_dropped_total{reason=\"send-failed\"} 0",
	  "mmproxy_reloads_total{result=\"failed\"} 0"}, {NULL}},
};
// clang-format on

static void run_render_case(const struct render_case *rc)
{
	struct metrics_counters c;
	char text[32768];

	memset(&c, 0, sizeof c);
	rc->setup(&c);
	size_t len = metrics_render_prometheus(&c, rc->show, text, sizeof text);
	if (len >= sizeof text || strlen(text) != len) {
		fail(rc->name, "length %zu for a text of %zu", len,
		     strlen(text));
		return;
	}
	for (size_t i = 0; i < COUNT_OF(rc->present) && rc->present[i]; i++) {
		if (!has_line(text, rc->present[i])) {
			fail(rc->name, "no line \"%s\" in:\n%s", rc->present[i],
			     text);
			return;
		}
	}
	for (size_t i = 0; i < COUNT_OF(rc->absent) && rc->absent[i]; i++) {
		if (strstr(text, rc->absent[i]) != NULL) {
			fail(rc->name, "\"%s\" should not be there",
			     rc->absent[i]);
			return;
		}
	}
	pass(rc->name);
}

/* ---- the text's form: every sample under its family's HELP and TYPE */

static int is_name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || ch == '_';
}

/* "name 12" or "name{label=\"value\"} 12", and the name's length. */
static int sample_form(const char *line, size_t *name_len)
{
	const char *p = line;

	while (is_name_char(*p))
		p++;
	*name_len = (size_t)(p - line);
	if (*name_len == 0)
		return 0;
	if (*p == '{') {
		p++;
		while (is_name_char(*p))
			p++;
		if (strncmp(p, "=\"", 2) != 0)
			return 0;
		p += 2;
		while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		       *p == '-')
			p++;
		if (strncmp(p, "\"}", 2) != 0)
			return 0;
		p += 2;
	}
	if (*p++ != ' ' || *p < '0' || *p > '9')
		return 0;
	while (*p >= '0' && *p <= '9')
		p++;
	return *p == '\0';
}

static void check_form(const char *name, unsigned show)
{
	struct metrics_counters c;
	char text[32768], family[128] = "";
	int families = 0, samples = 0;

	memset(&c, 0xff, sizeof c); /* the widest numbers */
	metrics_render_prometheus(&c, show, text, sizeof text);
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		size_t len;
		if (strncmp(line, "# HELP ", 7) == 0) {
			snprintf(family, sizeof family, "%.*s",
				 (int)strcspn(line + 7, " "), line + 7);
			families++;
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			const char *type = line + 7 + strlen(family) + 1;
			if (strncmp(line + 7, family, strlen(family)) != 0 ||
			    (strcmp(type, "counter") != 0 &&
			     strcmp(type, "gauge") != 0) ||
			    (strcmp(type, "counter") == 0) !=
				    (strstr(family, "_total") != NULL)) {
				fail(name, "TYPE line \"%s\" after HELP of %s",
				     line, family);
				return;
			}
			continue;
		}
		if (!sample_form(line, &len) || len != strlen(family) ||
		    strncmp(line, family, len) != 0) {
			fail(name, "sample \"%s\" is not of family %s", line,
			     family);
			return;
		}
		samples++;
	}
	if (families < 5 || samples < families) {
		fail(name, "%d families, %d samples", families, samples);
		return;
	}
	pass(name);
}

static void test_form(void)
{
	check_form("every TCP sample follows its family's HELP and TYPE", TCP);
	check_form("every UDP sample follows its family's HELP and TYPE", UDP);
}

/* ---- one log line */

struct log_case {
	const char *name;
	setup_fn *setup;
	unsigned show;
	const char *expected;
};

// clang-format off
static const struct log_case log_cases[] = {
	{"the log line of a quiet TCP proxy", nothing, TCP,
	 "metrics accepted=0 live=0 ended=- bad_headers=- bytes_up=0 bytes_down=0 connect_failures=- reloads_ok=0 reloads_failed=0 subnet_entries=0 subnets_loaded_at=0"},
	{"the log line names non-zero ends only", some_ends, TCP,
	 "metrics accepted=7 live=1 ended=done:2,health:1,not-allowed:3 bad_headers=- bytes_up=0 bytes_down=0 connect_failures=- reloads_ok=0 reloads_failed=0 subnet_entries=0 subnets_loaded_at=0"},
	{"the log line has bad header kinds and failure classes", bad_headers, TCP,
	 "metrics accepted=0 live=0 ended=bad-header:3 bad_headers=v1-port:1,v2-crc32c:2 bytes_up=0 bytes_down=0 connect_failures=- reloads_ok=0 reloads_failed=0 subnet_entries=0 subnets_loaded_at=0"},
	{"the log line of a UDP proxy", udp, UDP,
	 "metrics udp_datagrams=from-lb:10,to-backend:8,from-backend:6,to-lb:6 udp_dropped=bad-header:2 udp_flows_opened=3 udp_flows_expired=1 udp_flows_evicted=0 udp_flows_live=2 reloads_ok=0 reloads_failed=0 subnet_entries=0 subnets_loaded_at=0"},
	{"the log line counts reloads", reloads, UDP,
	 "metrics udp_datagrams=- udp_dropped=- udp_flows_opened=0 udp_flows_expired=0 udp_flows_evicted=0 udp_flows_live=0 reloads_ok=2 reloads_failed=1 subnet_entries=5 subnets_loaded_at=1700000000"},
};
// clang-format on

static void run_log_case(const struct log_case *lc)
{
	struct metrics_counters c;
	char line[1024];

	memset(&c, 0, sizeof c);
	lc->setup(&c);
	size_t len = metrics_render_log_line(&c, lc->show, line, sizeof line);
	if (len != strlen(lc->expected) || strcmp(line, lc->expected) != 0)
		fail(lc->name, "got \"%s\"", line);
	else
		pass(lc->name);
}

/* Every counter at its widest still fits one syslog-sized line. */
static void test_log_line_fits(void)
{
	static const char name[] = "the widest log line fits in 1024 bytes";
	struct metrics_counters c;
	char line[1024];

	memset(&c, 0, sizeof c);
	c.accepted = c.bytes_up = c.bytes_down = 1000000000000ULL;
	for (size_t i = 0; i < METRICS_END_COUNT; i++)
		c.ended[i] = 1000000;
	for (size_t i = 0; i < COUNT_OF(c.bad_headers); i++)
		c.bad_headers[i] = 1000;
	for (size_t i = 0; i < METRICS_CONNECT_CLASS_COUNT; i++)
		c.connect_failures[i] = 1000;
	size_t len = metrics_render_log_line(&c, TCP, line, sizeof line);
	if (len >= sizeof line)
		fail(name, "needs %zu bytes", len);
	else
		pass(name);
}

/* ---- too small a buffer: the length needed, a cut text, no overflow */

static void test_truncate(void)
{
	static const char name[] = "a small buffer gets a cut, terminated text";
	struct metrics_counters c;

	memset(&c, 0, sizeof c);
	some_ends(&c);
	size_t needed = metrics_render_prometheus(&c, TCP | UDP, NULL, 0);
	char *full = malloc(needed + 1);
	if (full == NULL || metrics_render_prometheus(&c, TCP | UDP, full,
						      needed + 1) != needed) {
		fail(name, "no full text of %zu bytes", needed);
		free(full);
		return;
	}
	/* Exact-size heap buffers: ASan sees any byte written past them. */
	for (size_t size = 1; size <= needed; size += 97) {
		char *cut = malloc(size);
		if (cut == NULL)
			break;
		size_t len =
			metrics_render_prometheus(&c, TCP | UDP, cut, size);
		int ok = len == needed && strlen(cut) == size - 1 &&
			 memcmp(cut, full, size - 1) == 0;
		free(cut);
		if (!ok) {
			fail(name, "size %zu: wrong cut", size);
			free(full);
			return;
		}
	}
	free(full);
	pass(name);
}

/* ---- the endpoint's request judge */

struct judge_case {
	const char *name;
	const char *request;
	enum metrics_http_verdict expected;
};

// clang-format off
static const struct judge_case judge_cases[] = {
	{"GET /metrics with headers is answered", "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", METRICS_HTTP_OK},
	{"bare LF line ends are accepted", "GET /metrics HTTP/1.0\n\n", METRICS_HTTP_OK},
	{"a query string is ignored", "GET /metrics?name[]=up HTTP/1.1\r\n\r\n", METRICS_HTTP_OK},
	{"another path is not found", "GET / HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND},
	{"a longer path is not found", "GET /metrics/x HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND},
	{"a shorter path is not found", "GET /metric HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND},
	{"POST is not allowed", "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", METRICS_HTTP_BAD_METHOD},
	{"HEAD is not allowed", "HEAD /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD_METHOD},
	{"methods are case-sensitive", "get /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD_METHOD},
	{"nothing yet needs more", "", METRICS_HTTP_NEED_MORE},
	{"half a method needs more", "GE", METRICS_HTTP_NEED_MORE},
	{"a request line alone needs more", "GET /metrics HTTP/1.1\r\n", METRICS_HTTP_NEED_MORE},
	{"headers without the empty line need more", "GET /metrics HTTP/1.1\r\nHost: x\r\n", METRICS_HTTP_NEED_MORE},
	{"a TLS hello is refused at its first byte", "\x16\x03\x01\x02", METRICS_HTTP_BAD_REQUEST},
	{"a leading space is refused", " GET /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD_REQUEST},
	{"a control byte in the method is refused", "GE\x01 /metrics", METRICS_HTTP_BAD_REQUEST},
	{"a line without a version is refused", "GET /metrics\r\n\r\n", METRICS_HTTP_BAD_REQUEST},
	{"HTTP/2 in a request line is refused", "GET /metrics HTTP/2.0\r\n\r\n", METRICS_HTTP_BAD_REQUEST},
	{"two spaces before the path are refused", "GET  /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD_REQUEST},
	{"a version with more after it is refused", "GET /metrics HTTP/1.1 x\r\n\r\n", METRICS_HTTP_BAD_REQUEST},
};
// clang-format on

static void run_judge_case(const struct judge_case *jc)
{
	enum metrics_http_verdict got =
		metrics_http_judge(jc->request, strlen(jc->request));

	if (got != jc->expected)
		fail(jc->name, "verdict %d, expected %d", got, jc->expected);
	else
		pass(jc->name);
}

/* Headers that never end: more is wanted up to the cap, and no further. */
static void test_judge_cap(void)
{
	static const char name[] =
		"no end of headers within 4096 bytes is too large";
	char *request = malloc(METRICS_HTTP_REQUEST_MAX);

	if (request == NULL) {
		fail(name, "malloc");
		return;
	}
	memset(request, 'a', METRICS_HTTP_REQUEST_MAX);
	memcpy(request, "GET /metrics HTTP/1.1\r\nX: ", 26);
	enum metrics_http_verdict below =
		metrics_http_judge(request, METRICS_HTTP_REQUEST_MAX - 1);
	enum metrics_http_verdict at =
		metrics_http_judge(request, METRICS_HTTP_REQUEST_MAX);
	free(request);
	if (below != METRICS_HTTP_NEED_MORE || at != METRICS_HTTP_TOO_LARGE)
		fail(name, "verdicts %d below the cap, %d at it", below, at);
	else
		pass(name);
}

/* ---- errno classes */

struct errno_case {
	int error;
	enum metrics_connect_class expected;
};

static void test_errno_classes(void)
{
	static const char name[] =
		"each errno of a failed connect has its class";
	static const struct errno_case cases[] = {
		{EADDRINUSE, METRICS_CONNECT_ADDRESS_IN_USE},
		{EADDRNOTAVAIL, METRICS_CONNECT_ADDRESS_UNAVAILABLE},
		{EPERM, METRICS_CONNECT_PERMISSION},
		{EACCES, METRICS_CONNECT_PERMISSION},
		{ECONNREFUSED, METRICS_CONNECT_REFUSED},
		{ETIMEDOUT, METRICS_CONNECT_TIMEOUT},
		{ENETUNREACH, METRICS_CONNECT_UNREACHABLE},
		{EHOSTUNREACH, METRICS_CONNECT_UNREACHABLE},
		{0, METRICS_CONNECT_FAMILY},
		{EMFILE, METRICS_CONNECT_OTHER},
	};

	for (size_t i = 0; i < COUNT_OF(cases); i++) {
		if (metrics_connect_class_of(cases[i].error) !=
		    cases[i].expected) {
			fail(name, "errno %d: class %d, expected %d",
			     cases[i].error,
			     metrics_connect_class_of(cases[i].error),
			     cases[i].expected);
			return;
		}
	}
	pass(name);
}

/* ---- the shared block, from several processes */

enum { WRITERS = 4, ADDS_EACH = 20000 };

static void test_shared_counts(void)
{
	static const char name[] =
		"counts from four processes at once are exact";
	struct metrics *m = metrics_open();
	struct metrics_counters c;
	int children_ok = 1;

	if (m == NULL) {
		fail(name, "metrics_open: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < WRITERS; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			fail(name, "fork: %s", strerror(errno));
			return;
		}
		if (pid > 0)
			continue;
		for (int j = 0; j < ADDS_EACH; j++) {
			metrics_count_accepted(m);
			metrics_count_end(m, METRICS_END_DONE);
			metrics_add_bytes(m, 3, 5);
			metrics_count_udp_flow(m, METRICS_UDP_FLOW_OPENED);
			metrics_count_udp_flow(m, METRICS_UDP_FLOW_EXPIRED);
		}
		_exit(0);
	}
	for (int i = 0; i < WRITERS; i++) {
		int status;
		if (wait(&status) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			children_ok = 0;
	}
	metrics_snapshot(m, &c);
	uint64_t n = (uint64_t)WRITERS * ADDS_EACH;
	if (!children_ok || c.accepted != n || c.ended[METRICS_END_DONE] != n ||
	    c.bytes_up != 3 * n || c.bytes_down != 5 * n ||
	    c.udp_flows_opened != n || c.udp_flows_expired != n ||
	    c.udp_flows_live != 0)
		fail(name, "accepted=%llu done=%llu up=%llu live flows=%llu",
		     (unsigned long long)c.accepted,
		     (unsigned long long)c.ended[METRICS_END_DONE],
		     (unsigned long long)c.bytes_up,
		     (unsigned long long)c.udp_flows_live);
	else
		pass(name);
}

static void test_null_block(void)
{
	static const char name[] = "counting into no block does nothing";

	metrics_count_accepted(NULL);
	metrics_count_end(NULL, METRICS_END_DONE);
	metrics_count_bad_header(NULL, PROXYHDR_EV2_TLV);
	metrics_add_bytes(NULL, 1, 1);
	metrics_count_connect_failure(NULL, ECONNREFUSED);
	metrics_note_subnets_loaded(NULL, 1, 1);
	metrics_count_reload(NULL, true);
	metrics_count_udp_datagrams(NULL, METRICS_UDP_FROM_LB, 1);
	metrics_count_udp_drop(NULL, METRICS_UDP_DROP_NOT_DGRAM);
	metrics_count_udp_flow(NULL, METRICS_UDP_FLOW_OPENED);
	pass(name);
}

/* ---- reload of real files */

static int write_text(const char *path, const char *text)
{
	FILE *file = fopen(path, "w");

	if (file == NULL)
		return -1;
	fputs(text, file);
	return fclose(file);
}

struct reload_case {
	const char *name;
	const char *text; /* NULL: the file does not exist */
	int expected;
	size_t entries_after;
	const char *message; /* a substring of the message */
};

// clang-format off
static const struct reload_case reload_cases[] = {
	{"a good file replaces the set", "10.0.0.0/8\n192.0.2.0/24\n2001:db8::/32\n", 0, 3, ": 3 entries in force"},
	{"a bad line keeps the set and is named", "10.0.0.0/8\n10.0.0.0/33\n", -1, 1, ":2: \"10.0.0.0/33\": prefix length over 32; keeping the 1 entries in force"},
	{"an empty file keeps the set", "# nothing\n", -1, 1, "no subnets in file; keeping the 1 entries"},
	{"a missing file keeps the set", NULL, -1, 1, "No such file or directory; keeping the 1 entries"},
};
// clang-format on

static void run_reload_case(const struct reload_case *rc, const char *dir)
{
	char path[256], message[512];
	struct subnets in_force;
	struct subnets_error error;
	struct metrics *m = metrics_open();
	struct metrics_counters c;

	snprintf(path, sizeof path, "%s/allowed", dir);
	memset(&in_force, 0, sizeof in_force);
	unlink(path);
	if (m == NULL ||
	    subnets_parse("127.0.0.1/32\n", 13, &in_force, &error, NULL,
			  NULL) != 0 ||
	    (rc->text != NULL && write_text(path, rc->text) != 0)) {
		fail(rc->name, "set-up failed");
		return;
	}
	int result = reload_allowed_subnets(path, &in_force, m, NULL, NULL,
					    message, sizeof message);
	metrics_snapshot(m, &c);
	uint64_t want_ok = rc->expected == 0, want_failed = rc->expected != 0;
	if (result != rc->expected || in_force.count != rc->entries_after ||
	    strstr(message, path) == NULL ||
	    strstr(message, rc->message) == NULL || c.reloads_ok != want_ok ||
	    c.reloads_failed != want_failed ||
	    c.subnet_entries != (rc->expected == 0 ? rc->entries_after : 0))
		fail(rc->name, "result %d, %zu entries, \"%s\"", result,
		     in_force.count, message);
	else
		pass(rc->name);
	subnets_free(&in_force);
	unlink(path);
}

static void test_reloads(void)
{
	char dir[] = "/tmp/metrics_test.XXXXXX";

	if (mkdtemp(dir) == NULL) {
		fail("reload", "mkdtemp: %s", strerror(errno));
		return;
	}
	for (size_t i = 0; i < COUNT_OF(reload_cases); i++)
		run_reload_case(&reload_cases[i], dir);
	rmdir(dir);
}

/* ---- main */

int main(int argc, char **argv)
{
	const char *selection = argc > 1 ? argv[1] : NULL;
	static const struct {
		const char *group;
		void (*run)(void);
	} groups[] = {
		{"format", test_form},	       {"logline", test_log_line_fits},
		{"truncate", test_truncate},   {"judge", test_judge_cap},
		{"errno", test_errno_classes}, {"shared", test_shared_counts},
		{"shared", test_null_block},   {"reload", test_reloads},
	};
	int ran = 0;

	for (size_t i = 0; i < COUNT_OF(render_cases); i++)
		if (selection == NULL || strcmp(selection, "prometheus") == 0) {
			run_render_case(&render_cases[i]);
			ran++;
		}
	for (size_t i = 0; i < COUNT_OF(log_cases); i++)
		if (selection == NULL || strcmp(selection, "logline") == 0) {
			run_log_case(&log_cases[i]);
			ran++;
		}
	for (size_t i = 0; i < COUNT_OF(judge_cases); i++)
		if (selection == NULL || strcmp(selection, "judge") == 0) {
			run_judge_case(&judge_cases[i]);
			ran++;
		}
	for (size_t i = 0; i < COUNT_OF(groups); i++)
		if (selection == NULL ||
		    strcmp(selection, groups[i].group) == 0) {
			groups[i].run();
			ran++;
		}
	if (ran == 0) {
		fprintf(stderr, "metrics_test: no group named \"%s\"\n",
			selection);
		return 2;
	}
	printf("# %d cases, %d failed\n", ran, failures);
	return failures == 0 ? 0 : 1;
}
