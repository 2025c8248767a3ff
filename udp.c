/*
 * udp: the long-lived datagram mode (see udp.h).
 *
 * The file follows the data: a flow and the proxy's state; the flow table
 * (hash, idle order, expiry, the cap); opening a flow; a datagram from a
 * load balancer to its flow; replies back; set-up and the event loop.
 * Holds nothing of TCP; the socket from the client's address is spoof.c's.
 */
#define _GNU_SOURCE
#include "udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "endpoint.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "proxyhdr.h"
#include "reload.h"
#include "signals.h"
#include "sockets.h"
#include "spoof.h"

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
	struct subnets *allowed; /* replaced in place by a reload */
	struct metrics *metrics;
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
		bytes = netaddr_bytes(addr, &len);
		port = htons(netaddr_port(addr));
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
		if (netaddr_same(&flow->lb_addr, lb) &&
		    netaddr_same(&flow->client_addr, client))
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
	char client[NETADDR_TEXT_SIZE], lb[NETADDR_TEXT_SIZE],
		target[NETADDR_TEXT_SIZE];

	if (!log_wants(LOG_LEVEL_CONNECTIONS))
		return;
	log_msg(LOG_INFO, "udp flow %s client=%s lb=%s target=%s flows=%u",
		event,
		netaddr_format(&flow->client_addr, client, sizeof client),
		netaddr_format(&flow->lb_addr, lb, sizeof lb),
		netaddr_format(&flow->target_addr, target, sizeof target),
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
	       now_ms - proxy->idle_head->last_active_ms >= proxy->idle_limit_ms) {
		udp_close_flow(proxy, proxy->idle_head, "closed (idle)");
		metrics_count_udp_flow(proxy->metrics, METRICS_UDP_FLOW_EXPIRED);
	}
}

/* The shared counters' name for each drop reason. */
static const enum metrics_udp_drop metrics_drop_of[] = {
	[UDP_DROP_NOT_ALLOWED] = METRICS_UDP_DROP_NOT_ALLOWED,
	[UDP_DROP_BAD_HEADER] = METRICS_UDP_DROP_BAD_HEADER,
	[UDP_DROP_NOT_DGRAM] = METRICS_UDP_DROP_NOT_DGRAM,
	[UDP_DROP_FLOW_LIMIT] = METRICS_UDP_DROP_FLOW_LIMIT,
	[UDP_DROP_FLOW_FAILED] = METRICS_UDP_DROP_FLOW_FAILED,
};

/* error: an errno value that says more, or 0. */
static void udp_count_drop(struct udp_proxy *proxy, enum udp_drop reason,
			   const struct sockaddr_storage *lb, int error)
{
	char lb_text[NETADDR_TEXT_SIZE];

	proxy->drops[reason]++;
	metrics_count_udp_drop(proxy->metrics, metrics_drop_of[reason]);
	if (log_wants(LOG_LEVEL_ERRORS) &&
	    rate_limit_allows(&proxy->drop_log, LOG_INTERVAL_S))
		log_msg(LOG_WARNING,
			"udp: dropped a datagram from lb=%s: %s%s%s%s (dropped "
			"so far: %llu not allowed, %llu bad header, %llu not "
			"DGRAM, %llu flow limit, %llu socket failure)",
			netaddr_format(lb, lb_text, sizeof lb_text),
			udp_drop_reasons[reason], error ? ": " : "",
			error ? strerror(error) : "",
			error ? spoof_capability_hint(error) : "",
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
 * kernel picks instead (SPOOF_PORT_FALLBACK), so the application sees the
 * client's address with another port, and each load balancer gets its own
 * replies. So does a port below 1024 without CAP_NET_BIND_SERVICE. Returns
 * the fd, or -1 with errno set.
 */
static int udp_open_flow_socket(const struct udp_proxy *proxy,
				const struct udp_flow *flow)
{
	const struct options *opts = proxy->opts;
	bool spoofed = flow->client_addr.ss_family != AF_UNSPEC;
	struct spoof_options spoof = {
		.mark = opts->mark_given ? &opts->mark : NULL,
		.port = SPOOF_PORT_FALLBACK,
		.connect_timeout_ms = opts->connect_timeout_ms,
	};
	struct spoof_failure failure;
	int fd = spoof_open(SOCK_DGRAM, spoofed ? &flow->client_addr : NULL,
			    &flow->target_addr, &spoof, &failure);

	if (fd < 0)
		errno = failure.error;
	return fd;
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
	flow->target_addr = endpoint_target(
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
	metrics_count_udp_flow(proxy->metrics, METRICS_UDP_FLOW_OPENED);
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
	/*
	 * The allowed subnets decide who may open a flow. A flow opened
	 * before a reload that removed its load balancer lives on until it
	 * goes idle, as a TCP connection does; so a peer outside the set is
	 * refused at once only while no flow exists, and otherwise once it
	 * is known to have none. Anything wrong from such a peer counts as
	 * "not allowed".
	 */
	bool admitted = proxy->allowed == NULL ||
			subnets_contains(proxy->allowed,
					 (const struct sockaddr *)lb);

	if (!admitted && proxy->live_flows == 0) {
		udp_count_drop(proxy, UDP_DROP_NOT_ALLOWED, lb, 0);
		return NULL;
	}
	if (proxyhdr_parse(datagram, len, &header, NULL) != PROXYHDR_COMPLETE ||
	    header.version != 2) {
		udp_count_drop(proxy,
			       admitted ? UDP_DROP_BAD_HEADER
					: UDP_DROP_NOT_ALLOWED,
			       lb, 0);
		return NULL;
	}
	/* Spec 2.2: UNSPEC transport goes with LOCAL or UNSPEC family only. */
	if (header.command == PROXYHDR_CMD_PROXY &&
	    header.transport != PROXYHDR_TRANSPORT_DGRAM &&
	    !(header.transport == PROXYHDR_TRANSPORT_UNSPEC &&
	      header.family == AF_UNSPEC)) {
		udp_count_drop(proxy,
			       admitted ? UDP_DROP_NOT_DGRAM
					: UDP_DROP_NOT_ALLOWED,
			       lb, 0);
		return NULL;
	}
	struct sockaddr_storage client;
	endpoint_header_client(&header, &client);
	struct udp_flow *flow = udp_find_flow(proxy, lb, &client);
	if (flow == NULL && !admitted) {
		udp_count_drop(proxy, UDP_DROP_NOT_ALLOWED, lb, 0);
		return NULL;
	}
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
	if (log_wants(LOG_LEVEL_ERRORS) &&
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
			metrics_count_udp_drop(proxy->metrics,
					       METRICS_UDP_DROP_SEND_FAILED);
			sent++;
			continue;
		}
		metrics_count_udp_datagrams(proxy->metrics,
					    METRICS_UDP_TO_BACKEND, (uint64_t)n);
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
		metrics_count_udp_datagrams(proxy->metrics, METRICS_UDP_FROM_LB,
					    (uint64_t)count);
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
			msg->msg_namelen = netaddr_length(&flow->lb_addr);
			if (flow->reply_control_len > 0) {
				msg->msg_control = flow->reply_control.bytes;
				msg->msg_controllen = flow->reply_control_len;
			}
		}
		metrics_count_udp_datagrams(proxy->metrics,
					    METRICS_UDP_FROM_BACKEND,
					    (uint64_t)count);
		int sent = count > 0 ? sendmmsg(proxy->listen_fd,
						proxy->messages,
						(unsigned)count, 0)
				     : 0;
		if (sent < 0 && errno != EAGAIN)
			udp_log_send_error(proxy, "reply to the load balancer",
					   errno);
		if (sent > 0)
			metrics_count_udp_datagrams(proxy->metrics,
						    METRICS_UDP_TO_LB,
						    (uint64_t)sent);
		udp_touch_flow(proxy, flow, monotonic_ms());
		if (count < UDP_BATCH)
			return;
	}
}

static int udp_setup(struct udp_proxy *proxy, int listen_fd,
		     const struct options *opts, struct subnets *allowed,
		     struct metrics *metrics)
{
	size_t buckets = 1;

	memset(proxy, 0, sizeof *proxy);
	proxy->opts = opts;
	proxy->allowed = allowed;
	proxy->metrics = metrics;
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
	proxy->signal_fd = signals_open_fd();
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
	while (proxy->idle_head) {
		udp_close_flow(proxy, proxy->idle_head, "closed (exit)");
		metrics_count_udp_flow(proxy->metrics, METRICS_UDP_FLOW_CLOSED);
	}
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

/*
 * The loop's signals. SIGHUP: every new flow from now on is checked
 * against the new set; flows already open stay. The metrics endpoint is
 * the only child, reaped when it ends. Returns true to stop.
 */
static bool udp_handle_signals(struct udp_proxy *proxy, pid_t *metrics_pid)
{
	struct signals_seen seen = signals_read(proxy->signal_fd);

	if (seen.child_exited && *metrics_pid > 0 &&
	    waitpid(*metrics_pid, NULL, WNOHANG) == *metrics_pid) {
		log_msg(LOG_ERR, "metrics process %ld exited",
			(long)*metrics_pid);
		*metrics_pid = 0;
	}
	if (seen.reload && !seen.stop)
		reload_and_log(proxy->opts->subnets_path, proxy->allowed,
			       proxy->metrics);
	if (seen.report)
		metrics_log(proxy->metrics, METRICS_SHOW_UDP);
	return seen.stop;
}

int udp_run(int listen_fd, const struct options *opts,
	    struct subnets *allowed, struct metrics *metrics,
	    pid_t metrics_pid)
{
	struct udp_proxy proxy;
	struct epoll_event events[64];

	if (udp_setup(&proxy, listen_fd, opts, allowed, metrics) != 0)
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
				if (udp_handle_signals(&proxy, &metrics_pid)) {
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

