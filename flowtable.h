/*
 * flowtable: the UDP mode's flows, found by (load balancer, client), kept
 * in order of last activity, capped. Pure.
 *
 * Every flow has the same idle limit, so the order of last activity is also
 * the order of expiry: expiring never scans a live flow. Entries come from
 * a pool reserved at start and touched only as the flow count grows.
 * Holds no sockets, no logging and no clock: the caller passes the time and
 * closes what an expired flow holds. A caller's flow struct starts with a
 * struct flow and names its size to flow_table_init().
 */
#ifndef FLOWTABLE_H
#define FLOWTABLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct flow {
	struct sockaddr_storage lb_addr;
	struct sockaddr_storage client_addr; /* AF_UNSPEC: LOCAL or UNSPEC */
	int64_t last_active_ms;
	struct flow *hash_next; /* in its bucket, or in the free list */
	struct flow *idle_prev; /* toward the least recently active */
	struct flow *idle_next;
};

struct flow_table {
	uint8_t *pool;	     /* max_flows entries of entry_size */
	size_t entry_size;
	unsigned max_flows;
	unsigned handed_out; /* pool entries used at least once */
	struct flow *free_flows;
	struct flow **buckets;
	size_t bucket_mask;
	uint32_t hash_seed;
	struct flow *idle_head; /* least recently active */
	struct flow *idle_tail;
	unsigned live;
	int64_t idle_limit_ms;
};

/*
 * Room for max_flows entries of entry_size bytes (at least a struct flow),
 * each closed idle_limit_ms after its last activity. hash_seed should be
 * random: flooding one hash chain must take more than knowing the hash.
 * Returns 0, or -1 when memory is short.
 */
int flow_table_init(struct flow_table *table, unsigned max_flows,
		    size_t entry_size, int64_t idle_limit_ms,
		    uint32_t hash_seed);
void flow_table_free(struct flow_table *table);

/* The live flow for this pair (same family, address and port), or NULL. */
struct flow *flow_table_find(const struct flow_table *table,
			     const struct sockaddr_storage *lb,
			     const struct sockaddr_storage *client);

/*
 * A new live flow for the pair, last active at now_ms, every byte past its
 * key zeroed; NULL at the cap. The pair must not have a flow already.
 */
struct flow *flow_table_insert(struct flow_table *table,
			       const struct sockaddr_storage *lb,
			       const struct sockaddr_storage *client,
			       int64_t now_ms);

/* Activity in either direction: the flow becomes the most recently active. */
void flow_table_touch(struct flow_table *table, struct flow *flow,
		      int64_t now_ms);

/* The flow is closed; its entry is kept for a later insert. */
void flow_table_remove(struct flow_table *table, struct flow *flow);

/* The least recently active flow, or NULL when there is none. */
struct flow *flow_table_oldest(const struct flow_table *table);

/* The least recently active flow if it is due at now_ms, else NULL. */
struct flow *flow_table_expired(const struct flow_table *table, int64_t now_ms);

/* How long to sleep until the next flow is due: -1 (none), 0 to 1000 ms. */
int flow_table_wait_ms(const struct flow_table *table, int64_t now_ms);

#endif
