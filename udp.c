/*
 * udp: the long-lived datagram mode (see udp.h).
 *
 * The file follows the data: a flow and the proxy's state; opening a flow
 * (its entry in flowtable.c, its socket from spoof.c); a datagram from a
 * load balancer to its flow; replies back; set-up and the event loop.
 * Holds nothing of TCP; the socket from the client's address is spoof.c's.
 */
#define _GNU_SOURCE
#include "udp.h"

#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "endpoint.h"
#include "flowtable.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "proxyhdr.h"
#include "reload.h"
#include "sandbox.h"
#include "signals.h"
#include "sockets.h"
#include "spoof.h"

/*
 * Each datagram from the load balancer starts with a PROXY v2 header (DGRAM)
 * and the rest is payload. A flow is one (load balancer address:port,
 * client address:port) pair, with its own socket bound to the client's
 * address and connected to the target, so the application sees the client
 * and its replies come back to that socket, to be sent on to the load
 * balancer. The flows themselves are flowtable.c's.
 */
/* Room for one IP_PKTINFO or IPV6_PKTINFO control message. */
#define UDP_CONTROL_SIZE CMSG_SPACE(sizeof(struct in6_pktinfo))

/* A flow: its entry in the table (first, see flowtable.h), then its own. */
struct udp_flow {
	struct flow entry; /* load balancer, client, idle order */
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
};

enum {
	UDP_BATCH = 32,
	UDP_BUFFER_SIZE = 65536,
	UDP_RECEIVE_BUFFER = 4 << 20,
	/*
	 * Batches read from one socket before the loop moves on: a steady
	 * stream into the listening socket (even of datagrams dropped once
	 * read) must not starve the replies, nor the expiry of idle flows.
	 * epoll is level-triggered, so what is left is read on the next pass.
	 */
	UDP_LB_BATCHES_PER_PASS = 8,
	UDP_REPLY_BATCHES_PER_PASS = 2,
	/*
	 * Descriptors that are not flows: 0-2, the listening socket, epoll,
	 * signalfd, syslog's socket, and room to spare.
	 */
	UDP_OTHER_FDS = 16,
};

/* Why datagrams were dropped, counted for the log. */
enum udp_drop {
	UDP_DROP_NOT_ALLOWED,
	UDP_DROP_BAD_HEADER,
	UDP_DROP_NOT_DGRAM,
	UDP_DROP_FLOW_FAILED,
	UDP_DROP_COUNT,
};

static const char *const udp_drop_reasons[] = {
	[UDP_DROP_NOT_ALLOWED] = "load balancer not in allowed subnets",
	[UDP_DROP_BAD_HEADER] = "no valid PROXY v2 header",
	[UDP_DROP_NOT_DGRAM] = "header transport is not DGRAM",
	[UDP_DROP_FLOW_FAILED] = "could not open the flow's socket",
};

struct udp_proxy {
	const struct options *opts;
	struct subnets *allowed; /* replaced in place by a reload */
	struct metrics *metrics;
	int listen_fd;
	int epoll_fd;
	int signal_fd;
	struct flow_table flows;
	uint64_t drops[UDP_DROP_COUNT];
	uint64_t evictions;
	struct rate_limit drop_log;
	struct rate_limit eviction_log;
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

/* The flow a table entry belongs to: the entry is its first member. */
_Static_assert(offsetof(struct udp_flow, entry) == 0,
	       "flowtable.c hands out entries as struct flow");

static struct udp_flow *udp_flow_of(struct flow *entry)
{
	return (struct udp_flow *)entry;
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
		netaddr_format(&flow->entry.client_addr, client, sizeof client),
		netaddr_format(&flow->entry.lb_addr, lb, sizeof lb),
		netaddr_format(&flow->target_addr, target, sizeof target),
		proxy->flows.live);
}

static void udp_close_flow(struct udp_proxy *proxy, struct udp_flow *flow,
			   const char *why)
{
	close(flow->fd); /* also removes it from the epoll set */
	flow->fd = -1;   /* an event already fetched for it is stale */
	flow_table_remove(&proxy->flows, &flow->entry);
	udp_log_flow(why, proxy, flow);
}

static void udp_expire_flows(struct udp_proxy *proxy, int64_t now_ms)
{
	struct flow *expired;

	while ((expired = flow_table_expired(&proxy->flows, now_ms)) != NULL) {
		udp_close_flow(proxy, udp_flow_of(expired), "closed (idle)");
		metrics_count_udp_flow(proxy->metrics, METRICS_UDP_FLOW_EXPIRED);
	}
}

static bool udp_table_is_full(const struct udp_proxy *proxy)
{
	return proxy->flows.live >= proxy->flows.max_flows;
}

/*
 * The table is full: the least recently used flow makes room, so a burst
 * of new clients never locks the next ones out until --close-after. Its
 * client's next datagram opens a new flow (and evicts another).
 */
static void udp_evict_flow(struct udp_proxy *proxy)
{
	proxy->evictions++;
	if (log_wants(LOG_LEVEL_ERRORS) &&
	    rate_limit_allows(&proxy->eviction_log, LOG_INTERVAL_S))
		log_msg(LOG_WARNING,
			"udp: the flow table is full (--max-flows %u): evicted "
			"the least recently used flow (evicted so far: %llu)",
			proxy->flows.max_flows,
			(unsigned long long)proxy->evictions);
	udp_close_flow(proxy, udp_flow_of(flow_table_oldest(&proxy->flows)),
		       "closed (evicted)");
	metrics_count_udp_flow(proxy->metrics, METRICS_UDP_FLOW_EVICTED);
}

/* The shared counters' name for each drop reason. */
static const enum metrics_udp_drop metrics_drop_of[] = {
	[UDP_DROP_NOT_ALLOWED] = METRICS_UDP_DROP_NOT_ALLOWED,
	[UDP_DROP_BAD_HEADER] = METRICS_UDP_DROP_BAD_HEADER,
	[UDP_DROP_NOT_DGRAM] = METRICS_UDP_DROP_NOT_DGRAM,
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
			"DGRAM, %llu socket failure)",
			netaddr_format(lb, lb_text, sizeof lb_text),
			udp_drop_reasons[reason], error ? ": " : "",
			error ? strerror(error) : "",
			error ? spoof_capability_hint(error) : "",
			(unsigned long long)proxy->drops[UDP_DROP_NOT_ALLOWED],
			(unsigned long long)proxy->drops[UDP_DROP_BAD_HEADER],
			(unsigned long long)proxy->drops[UDP_DROP_NOT_DGRAM],
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
	bool spoofed = flow->entry.client_addr.ss_family != AF_UNSPEC;
	struct spoof_options spoof = {
		.mark = opts->mark_given ? &opts->mark : NULL,
		.port = SPOOF_PORT_FALLBACK,
		.connect_timeout_ms = opts->connect_timeout_ms,
	};
	struct spoof_failure failure;
	int fd = spoof_open(SOCK_DGRAM, spoofed ? &flow->entry.client_addr : NULL,
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
	if (udp_table_is_full(proxy))
		udp_evict_flow(proxy);
	struct flow *entry = flow_table_insert(&proxy->flows, lb, client, now_ms);

	struct udp_flow *flow = udp_flow_of(entry);
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
		flow_table_remove(&proxy->flows, entry);
		udp_count_drop(proxy, UDP_DROP_FLOW_FAILED, lb, error);
		return NULL;
	}
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

	if (!admitted && proxy->flows.live == 0) {
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
	struct flow *entry = flow_table_find(&proxy->flows, lb, &client);
	if (entry == NULL && !admitted) {
		udp_count_drop(proxy, UDP_DROP_NOT_ALLOWED, lb, 0);
		return NULL;
	}
	struct udp_flow *flow =
		entry != NULL ? udp_flow_of(entry)
			      : udp_open_flow(proxy, lb, &client, &header, now_ms);
	if (flow != NULL) {
		flow_table_touch(&proxy->flows, &flow->entry, now_ms);
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
		/* A new flow may evict the run's: send the run first. */
		if (run_length > 0 && udp_table_is_full(proxy)) {
			udp_send_payloads(proxy, run_flow,
					  proxy->send_messages, run_length);
			run_length = 0;
			run_flow = NULL;
		}
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
	for (int batch = 0; batch < UDP_LB_BATCHES_PER_PASS; batch++) {
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
	for (int batch = 0; batch < UDP_REPLY_BATCHES_PER_PASS; batch++) {
		if (flow->fd < 0) /* closed earlier in this pass */
			return;
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
			msg->msg_name = &flow->entry.lb_addr;
			msg->msg_namelen = netaddr_length(&flow->entry.lb_addr);
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
		flow_table_touch(&proxy->flows, &flow->entry, monotonic_ms());
		if (count < UDP_BATCH)
			return;
	}
}

/*
 * Each flow holds a descriptor. Outside a unit that sets LimitNOFILE, the
 * soft limit is usually 1024: raise it to the hard limit, as a server that
 * needs descriptors should. If even that cannot hold --max-flows, say so
 * and use what fits; the table then evicts at that size instead of
 * failing to open sockets. Returns the number of flows to allow.
 */
static unsigned udp_flows_that_fit(unsigned wanted)
{
	struct rlimit limit;
	rlim_t needed = (rlim_t)wanted + UDP_OTHER_FDS;

	if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
		die(EXIT_SYSTEM, "getrlimit RLIMIT_NOFILE: %s",
		    strerror(errno));
	if (limit.rlim_cur < needed) {
		/* An unlimited hard limit still has the kernel's nr_open. */
		limit.rlim_cur = limit.rlim_max == RLIM_INFINITY
					 ? needed
					 : limit.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
			die(EXIT_SYSTEM, "setrlimit RLIMIT_NOFILE %llu: %s",
			    (unsigned long long)limit.rlim_cur,
			    strerror(errno));
	}
	if (limit.rlim_cur >= needed)
		return wanted;
	if (limit.rlim_cur <= 2 * UDP_OTHER_FDS)
		die(EXIT_SYSTEM,
		    "--max-flows %u: the open file limit of %llu leaves "
		    "almost no room for flows; raise it (LimitNOFILE=)",
		    wanted, (unsigned long long)limit.rlim_cur);
	unsigned fit = (unsigned)(limit.rlim_cur - UDP_OTHER_FDS);
	log_msg(LOG_WARNING,
		"--max-flows %u needs more open files than the limit of %llu: "
		"using --max-flows %u (raise the hard limit, LimitNOFILE=, for "
		"more)",
		wanted, (unsigned long long)limit.rlim_cur, fit);
	return fit;
}

static int udp_setup(struct udp_proxy *proxy, int listen_fd,
		     const struct options *opts, struct subnets *allowed,
		     struct metrics *metrics)
{
	uint32_t hash_seed;

	memset(proxy, 0, sizeof *proxy);
	proxy->opts = opts;
	proxy->allowed = allowed;
	proxy->metrics = metrics;
	proxy->listen_fd = listen_fd;
	/* Flooding one hash chain must take more than knowing FNV-1a. */
	if (getrandom(&hash_seed, sizeof hash_seed, 0) != sizeof hash_seed)
		return -1;
	if (flow_table_init(&proxy->flows, udp_flows_that_fit(opts->max_flows),
			    sizeof(struct udp_flow),
			    (int64_t)opts->close_after_s * 1000, hash_seed) != 0)
		return -1;
	proxy->buffers = malloc((size_t)UDP_BATCH * UDP_BUFFER_SIZE);
	if (proxy->buffers == NULL)
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
	struct flow *oldest;

	while ((oldest = flow_table_oldest(&proxy->flows)) != NULL) {
		udp_close_flow(proxy, udp_flow_of(oldest), "closed (exit)");
		metrics_count_udp_flow(proxy->metrics, METRICS_UDP_FLOW_CLOSED);
	}
	close(proxy->epoll_fd);
	close(proxy->signal_fd);
	flow_table_free(&proxy->flows);
	free(proxy->buffers);
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
	if (sandbox_install_filter(&opts->sandbox, SANDBOX_UDP) != 0)
		die(EXIT_SYSTEM, "system call filter: %s", strerror(errno));
	for (;;) {
		int count = epoll_wait(proxy.epoll_fd, events, 64,
				       flow_table_wait_ms(&proxy.flows,
							  monotonic_ms()));
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

