/*
 * flowtable: the UDP flows' table (see flowtable.h).
 *
 * Pure: no I/O, no clock, no globals; built with -Wconversion. A hash table
 * of chains for lookup, a doubly linked list in order of last activity for
 * expiry, a free list over a pool for entries.
 */
#include "flowtable.h"

#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

int flow_table_init(struct flow_table *table, unsigned max_flows,
		    size_t entry_size, int64_t idle_limit_ms,
		    uint32_t hash_seed)
{
	size_t buckets = 1;

	memset(table, 0, sizeof *table);
	while (buckets < max_flows)
		buckets <<= 1;
	table->entry_size = entry_size;
	table->max_flows = max_flows;
	table->bucket_mask = buckets - 1;
	table->hash_seed = hash_seed;
	table->idle_limit_ms = idle_limit_ms;
	/* Reserved, not touched: pages are used only as flows appear. */
	table->pool = calloc(max_flows, entry_size);
	table->buckets = calloc(buckets, sizeof *table->buckets);
	if (table->pool == NULL || table->buckets == NULL) {
		flow_table_free(table);
		return -1;
	}
	return 0;
}

void flow_table_free(struct flow_table *table)
{
	free(table->pool);
	free(table->buckets);
	table->pool = NULL;
	table->buckets = NULL;
}

/* FNV-1a over the parts of an address that identify it. */
static uint32_t hash_address(uint32_t hash, const struct sockaddr_storage *addr)
{
	const uint8_t *bytes = NULL;
	size_t len = 0;
	uint16_t port = netaddr_port(addr);

	/* AF_UNSPEC (a flow without client) hashes as no address at all. */
	if (addr->ss_family == AF_INET || addr->ss_family == AF_INET6)
		bytes = netaddr_bytes(addr, &len);
	for (size_t i = 0; i < len; i++)
		hash = (hash ^ bytes[i]) * 16777619u;
	hash = (hash ^ (uint32_t)(port & 0xff)) * 16777619u;
	return (hash ^ (uint32_t)(port >> 8)) * 16777619u;
}

static struct flow **bucket_for(const struct flow_table *table,
				const struct sockaddr_storage *lb,
				const struct sockaddr_storage *client)
{
	uint32_t hash = hash_address(hash_address(table->hash_seed, lb), client);
	return &table->buckets[hash & table->bucket_mask];
}

struct flow *flow_table_find(const struct flow_table *table,
			     const struct sockaddr_storage *lb,
			     const struct sockaddr_storage *client)
{
	for (struct flow *flow = *bucket_for(table, lb, client); flow;
	     flow = flow->hash_next)
		if (netaddr_same(&flow->lb_addr, lb) &&
		    netaddr_same(&flow->client_addr, client))
			return flow;
	return NULL;
}

static void idle_list_remove(struct flow_table *table, struct flow *flow)
{
	if (flow->idle_prev)
		flow->idle_prev->idle_next = flow->idle_next;
	else
		table->idle_head = flow->idle_next;
	if (flow->idle_next)
		flow->idle_next->idle_prev = flow->idle_prev;
	else
		table->idle_tail = flow->idle_prev;
	flow->idle_prev = flow->idle_next = NULL;
}

static void idle_list_append(struct flow_table *table, struct flow *flow)
{
	flow->idle_prev = table->idle_tail;
	flow->idle_next = NULL;
	if (table->idle_tail)
		table->idle_tail->idle_next = flow;
	else
		table->idle_head = flow;
	table->idle_tail = flow;
}

/*
 * A closed entry if any, else the next never-used one of the pool, so the
 * pool's pages are touched only as the flow count grows.
 */
static struct flow *take_entry(struct flow_table *table)
{
	struct flow *flow = table->free_flows;

	if (flow != NULL) {
		table->free_flows = flow->hash_next;
		return flow;
	}
	if (table->handed_out < table->max_flows)
		return (struct flow *)(table->pool + (size_t)table->handed_out++ *
							     table->entry_size);
	return NULL;
}

struct flow *flow_table_insert(struct flow_table *table,
			       const struct sockaddr_storage *lb,
			       const struct sockaddr_storage *client,
			       int64_t now_ms)
{
	struct flow *flow = take_entry(table);

	if (flow == NULL)
		return NULL;
	memset(flow, 0, table->entry_size);
	flow->lb_addr = *lb;
	flow->client_addr = *client;
	flow->last_active_ms = now_ms;
	struct flow **bucket = bucket_for(table, lb, client);
	flow->hash_next = *bucket;
	*bucket = flow;
	idle_list_append(table, flow);
	table->live++;
	return flow;
}

void flow_table_touch(struct flow_table *table, struct flow *flow,
		      int64_t now_ms)
{
	flow->last_active_ms = now_ms;
	if (table->idle_tail != flow) {
		idle_list_remove(table, flow);
		idle_list_append(table, flow);
	}
}

void flow_table_remove(struct flow_table *table, struct flow *flow)
{
	struct flow **link = bucket_for(table, &flow->lb_addr,
					&flow->client_addr);

	while (*link != flow)
		link = &(*link)->hash_next;
	*link = flow->hash_next;
	idle_list_remove(table, flow);
	table->live--;
	flow->hash_next = table->free_flows;
	table->free_flows = flow;
}

struct flow *flow_table_oldest(const struct flow_table *table)
{
	return table->idle_head;
}

struct flow *flow_table_expired(const struct flow_table *table, int64_t now_ms)
{
	struct flow *oldest = table->idle_head;

	if (oldest != NULL &&
	    now_ms - oldest->last_active_ms >= table->idle_limit_ms)
		return oldest;
	return NULL;
}

int flow_table_wait_ms(const struct flow_table *table, int64_t now_ms)
{
	if (table->idle_head == NULL)
		return -1;
	int64_t due = table->idle_head->last_active_ms + table->idle_limit_ms -
		      now_ms;
	return due <= 0 ? 0 : due > 1000 ? 1000 : (int)due;
}
