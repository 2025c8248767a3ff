/*
 * Unit tests for flowtable.c: scripts of steps on a small table (insert,
 * find, touch, remove, expire at a time), each step with what the table
 * must answer, plus the cap and a table of many flows.
 *
 * usage: flowtable_test [GROUP-OR-CASE]
 *   With no argument every group runs. Prints "ok NAME" or "FAIL NAME: why"
 *   per case and exits 1 if any case failed.
 */
#include "flowtable.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "netaddr.h"

#include "verdict.h"

static int selected(const char *selection, const char *group, const char *name)
{
	return selection == NULL || strcmp(selection, group) == 0 ||
	       strcmp(selection, name) == 0;
}

/* A caller's flow: the table's entry first, then its own fields. */
struct test_flow {
	struct flow entry;
	int tag;
};

/* ---- scripts */

enum op {
	INSERT,	 /* pair at time: expect "ok" or "full" */
	FIND,	 /* pair: expect "found" or "absent" */
	TOUCH,	 /* pair at time */
	REMOVE,	 /* pair */
	EXPIRE,	 /* at time: expect the pairs that expire, oldest first */
	WAIT,	 /* at time: expect flow_table_wait_ms() */
	COUNT,	 /* expect the live count */
};

struct step {
	enum op op;
	const char *lb;
	const char *client; /* "-" for a flow without client */
	int64_t time_ms;
	const char *expected;
};

struct script {
	const char *name;
	unsigned max_flows;
	int64_t idle_limit_ms;
	struct step steps[12];
};

#define LB1 "10.0.0.1:5000"
#define LB2 "10.0.0.2:5000"
#define C1 "192.0.2.1:40000"
#define C2 "192.0.2.2:40000"
#define C3 "[2001:db8::3]:40000"

static const struct script scripts[] = {
	{"an inserted flow is found; another pair is not", 8, 1000, {
		{INSERT, LB1, C1, 0, "ok"},
		{FIND, LB1, C1, 0, "found"},
		{FIND, LB1, C2, 0, "absent"},
		{FIND, LB2, C1, 0, "absent"},
		{FIND, LB1, "192.0.2.1:40001", 0, "absent"},
		{COUNT, NULL, NULL, 0, "1"},
	}},
	{"the same client through two load balancers is two flows", 8, 1000, {
		{INSERT, LB1, C1, 0, "ok"},
		{INSERT, LB2, C1, 0, "ok"},
		{FIND, LB1, C1, 0, "found"},
		{FIND, LB2, C1, 0, "found"},
		{COUNT, NULL, NULL, 0, "2"},
	}},
	{"a flow without client (LOCAL) is found by its load balancer", 8, 1000, {
		{INSERT, LB1, "-", 0, "ok"},
		{FIND, LB1, "-", 0, "found"},
		{FIND, LB2, "-", 0, "absent"},
		{FIND, LB1, C1, 0, "absent"},
	}},
	{"flows expire in order of last activity, not of insertion", 8, 1000, {
		{INSERT, LB1, C1, 0, "ok"},
		{INSERT, LB1, C2, 100, "ok"},
		{INSERT, LB1, C3, 200, "ok"},
		{TOUCH, LB1, C1, 300, NULL},
		{EXPIRE, NULL, NULL, 999, ""},
		{EXPIRE, NULL, NULL, 1100, C2},
		{EXPIRE, NULL, NULL, 1300, C3 " " C1},
		{COUNT, NULL, NULL, 0, "0"},
		{FIND, LB1, C1, 0, "absent"},
	}},
	{"a flow expires exactly at the idle limit", 8, 1000, {
		{INSERT, LB1, C1, 0, "ok"},
		{EXPIRE, NULL, NULL, 999, ""},
		{EXPIRE, NULL, NULL, 1000, C1},
	}},
	{"the wait is until the oldest flow is due, a second at most", 8, 5000, {
		{WAIT, NULL, NULL, 0, "-1"},
		{INSERT, LB1, C1, 0, "ok"},
		{WAIT, NULL, NULL, 4500, "500"},
		{WAIT, NULL, NULL, 100, "1000"},
		{WAIT, NULL, NULL, 6000, "0"},
	}},
	{"the cap refuses one more flow, and a closed one makes room", 2, 1000, {
		{INSERT, LB1, C1, 0, "ok"},
		{INSERT, LB1, C2, 0, "ok"},
		{INSERT, LB1, C3, 0, "full"},
		{COUNT, NULL, NULL, 0, "2"},
		{REMOVE, LB1, C1, 0, NULL},
		{FIND, LB1, C1, 0, "absent"},
		{INSERT, LB1, C3, 0, "ok"},
		{FIND, LB1, C3, 0, "found"},
		{FIND, LB1, C2, 0, "found"},
		{INSERT, LB2, C1, 0, "full"},
	}},
	{"an expired flow makes room under the cap", 1, 1000, {
		{INSERT, LB1, C1, 0, "ok"},
		{INSERT, LB1, C2, 10, "full"},
		{EXPIRE, NULL, NULL, 1000, C1},
		{INSERT, LB1, C2, 1000, "ok"},
	}},
	{"removing the middle flow keeps the order of the others", 8, 1000, {
		{INSERT, LB1, C1, 0, "ok"},
		{INSERT, LB1, C2, 1, "ok"},
		{INSERT, LB1, C3, 2, "ok"},
		{REMOVE, LB1, C2, 0, NULL},
		{EXPIRE, NULL, NULL, 5000, C1 " " C3},
	}},
};

static int parse_pair(const struct step *step, struct sockaddr_storage *lb,
		      struct sockaddr_storage *client)
{
	if (netaddr_parse(step->lb, lb) != 0)
		return -1;
	if (strcmp(step->client, "-") == 0) {
		memset(client, 0, sizeof *client);
		client->ss_family = AF_UNSPEC;
		return 0;
	}
	return netaddr_parse(step->client, client);
}

/* Runs one step; writes what the table answered into got. */
static int run_step(struct flow_table *table, const struct step *step,
		    char *got, size_t size)
{
	struct sockaddr_storage lb, client;
	struct flow *flow;

	got[0] = '\0';
	if (step->lb != NULL && parse_pair(step, &lb, &client) != 0)
		return -1;
	switch (step->op) {
	case INSERT:
		flow = flow_table_insert(table, &lb, &client, step->time_ms);
		if (flow != NULL)
			((struct test_flow *)flow)->tag = 1;
		snprintf(got, size, "%s", flow ? "ok" : "full");
		return 0;
	case FIND:
		flow = flow_table_find(table, &lb, &client);
		snprintf(got, size, "%s", flow ? "found" : "absent");
		return 0;
	case TOUCH:
	case REMOVE:
		flow = flow_table_find(table, &lb, &client);
		if (flow == NULL)
			return -1;
		if (step->op == TOUCH)
			flow_table_touch(table, flow, step->time_ms);
		else
			flow_table_remove(table, flow);
		return 0;
	case EXPIRE: {
		size_t used = 0;
		while ((flow = flow_table_expired(table, step->time_ms))) {
			char text[NETADDR_TEXT_SIZE];
			used += (size_t)snprintf(
				got + used, size - used, "%s%s",
				used ? " " : "",
				netaddr_format(&flow->client_addr, text,
					       sizeof text));
			flow_table_remove(table, flow);
		}
		return 0;
	}
	case WAIT:
		snprintf(got, size, "%d",
			 flow_table_wait_ms(table, step->time_ms));
		return 0;
	case COUNT:
		snprintf(got, size, "%u", table->live);
		return 0;
	}
	return -1;
}

static void run_scripts(const char *selection)
{
	for (size_t i = 0; i < sizeof scripts / sizeof scripts[0]; i++) {
		const struct script *script = &scripts[i];
		struct flow_table table;
		bool ok = true;

		if (!selected(selection, "scripts", script->name))
			continue;
		if (flow_table_init(&table, script->max_flows,
				    sizeof(struct test_flow),
				    script->idle_limit_ms, 12345) != 0) {
			fail(script->name, "init failed");
			continue;
		}
		for (size_t s = 0; ok && s < 12; s++) {
			const struct step *step = &script->steps[s];
			char got[256];
			if (step->op == INSERT && step->lb == NULL)
				break; /* the end of the script */
			if (run_step(&table, step, got, sizeof got) != 0) {
				fail(script->name, "step %zu: bad step", s + 1);
				ok = false;
			} else if (step->expected &&
				   strcmp(got, step->expected) != 0) {
				fail(script->name, "step %zu: got \"%s\", want "
						   "\"%s\"",
				     s + 1, got, step->expected);
				ok = false;
			}
		}
		flow_table_free(&table);
		if (ok)
			pass(script->name);
	}
}

/* ---- many flows: every one found, the entries handed out in order */

static void run_many(const char *selection)
{
	const char *name = "65536 flows in one table are each found, and the "
			   "cap holds at 65536";
	struct flow_table table;
	struct sockaddr_storage lb, client;
	unsigned missing = 0;
	const unsigned count = 65536;

	if (!selected(selection, "many", name))
		return;
	if (flow_table_init(&table, count, sizeof(struct test_flow), 1000,
			    7) != 0) {
		fail(name, "init failed");
		return;
	}
	netaddr_parse(LB1, &lb);
	netaddr_parse("192.0.2.0:0", &client);
	for (unsigned i = 0; i < count; i++) {
		netaddr_set_port(&client, (uint16_t)i);
		if (flow_table_insert(&table, &lb, &client, i) == NULL)
			missing++;
	}
	for (unsigned i = 0; i < count; i++) {
		netaddr_set_port(&client, (uint16_t)i);
		struct flow *flow = flow_table_find(&table, &lb, &client);
		if (flow == NULL || flow->last_active_ms != (int64_t)i)
			missing++;
	}
	netaddr_parse(LB2, &lb);
	if (missing != 0)
		fail(name, "%u flows missing or wrong", missing);
	else if (flow_table_insert(&table, &lb, &client, 0) != NULL)
		fail(name, "the 65537th flow was let in");
	else
		pass(name);
	flow_table_free(&table);
}

int main(int argc, char **argv)
{
	const char *selection = argc > 1 ? argv[1] : NULL;

	run_scripts(selection);
	run_many(selection);
	return failures == 0 ? 0 : 1;
}
