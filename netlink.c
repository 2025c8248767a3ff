/*
 * netlink: rtnetlink requests and answers for --check (see netlink.h).
 *
 * One request, every answer handed to a visitor; then the visitors for the
 * three questions. Holds no reporting. Runs before any fork, never on a
 * connection's path.
 */
#include "netlink.h"

#include <errno.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <unistd.h>

#include "netaddr.h"

/* ---- one request, every answer handed to a visitor */

struct netlink_request {
	struct nlmsghdr header;
	union {
		struct rtmsg route;
		struct fib_rule_hdr rule;
	} body;
	char attributes[64]; /* room for a source, a destination and a mark */
};

static void netlink_request_init(struct netlink_request *req, uint16_t type,
				 bool dump, int family)
{
	memset(req, 0, sizeof *req);
	req->header.nlmsg_len = NLMSG_LENGTH(sizeof req->body);
	req->header.nlmsg_type = type;
	req->header.nlmsg_flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);
	req->header.nlmsg_seq = 1;
	/* rtmsg and fib_rule_hdr both start with the family. */
	req->body.route.rtm_family = (unsigned char)family;
}

static void netlink_add_attribute(struct netlink_request *req, uint16_t type,
				  const void *data, size_t len)
{
	struct rtattr *attr =
		(struct rtattr *)((char *)req + NLMSG_ALIGN(req->header.nlmsg_len));

	attr->rta_type = type;
	attr->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(attr), data, len);
	req->header.nlmsg_len = NLMSG_ALIGN(req->header.nlmsg_len) +
				RTA_ALIGN(attr->rta_len);
}

typedef void netlink_visitor(struct nlmsghdr *msg, void *context);

/* Returns 0, or an errno value: the kernel's answer to a request, or ours. */
static int netlink_exchange(struct netlink_request *req, netlink_visitor *visit,
			    void *context)
{
	/*
	 * A dump's messages come in batches of up to 32 KiB. Static, not on
	 * the stack: only the checks touch it, before any fork.
	 */
	static char buffer[32768] __attribute__((aligned(NLMSG_ALIGNTO)));
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	bool dump = req->header.nlmsg_flags & NLM_F_DUMP;
	int error = 0;
	bool done = false;

	if (fd < 0)
		return errno;
	if (sendto(fd, req, req->header.nlmsg_len, 0,
		   (struct sockaddr *)&kernel, sizeof kernel) < 0) {
		error = errno;
		done = true;
	}
	while (!done) {
		ssize_t got = recv(fd, buffer, sizeof buffer, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			error = got < 0 ? errno : EPROTO;
			break;
		}
		int left = (int)got;
		for (struct nlmsghdr *msg = (struct nlmsghdr *)buffer;
		     !done && NLMSG_OK(msg, left); msg = NLMSG_NEXT(msg, left)) {
			if (msg->nlmsg_type == NLMSG_DONE) {
				done = true;
			} else if (msg->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *answer = NLMSG_DATA(msg);
				error = -answer->error;
				done = true;
			} else {
				visit(msg, context);
				done = !dump;
			}
		}
	}
	close(fd);
	return error;
}

/* ---- what the kernel would do with a reply */

/* The table from RTA_TABLE: rtm_table holds only tables below 256. */
static uint32_t route_table(struct nlmsghdr *msg)
{
	struct rtmsg *route = NLMSG_DATA(msg);
	uint32_t table = route->rtm_table;
	int len = (int)RTM_PAYLOAD(msg);

	for (struct rtattr *attr = RTM_RTA(route); RTA_OK(attr, len);
	     attr = RTA_NEXT(attr, len))
		if (attr->rta_type == RTA_TABLE &&
		    RTA_PAYLOAD(attr) == sizeof table)
			memcpy(&table, RTA_DATA(attr), sizeof table);
	return table;
}

static void read_route_answer(struct nlmsghdr *msg, void *context)
{
	struct route_answer *answer = context;

	if (msg->nlmsg_type != RTM_NEWROUTE)
		return;
	answer->answered = true;
	answer->type = ((struct rtmsg *)NLMSG_DATA(msg))->rtm_type;
	answer->table = route_table(msg);
}

/* `ip route get TO from FROM [mark N]`: FROM is the application's side. */
int netlink_route_get(const struct sockaddr_storage *from,
		      const struct sockaddr_storage *to, const uint32_t *mark,
		      struct route_answer *answer)
{
	struct netlink_request req;
	size_t len;
	const uint8_t *bytes = netaddr_bytes(from, &len);

	netlink_request_init(&req, RTM_GETROUTE, false, from->ss_family);
	/* Without it, IPv4 answers with the route's table, not the rule's. */
	req.body.route.rtm_flags = RTM_F_LOOKUP_TABLE;
	req.body.route.rtm_src_len = (unsigned char)(len * 8);
	req.body.route.rtm_dst_len = (unsigned char)(len * 8);
	netlink_add_attribute(&req, RTA_SRC, bytes, len);
	bytes = netaddr_bytes(to, &len);
	netlink_add_attribute(&req, RTA_DST, bytes, len);
	if (mark != NULL)
		netlink_add_attribute(&req, RTA_MARK, mark, sizeof *mark);
	memset(answer, 0, sizeof *answer);
	return netlink_exchange(&req, read_route_answer, answer);
}

/* ---- the rule and the route the README sets up, for telling what is missing */

struct rule_search {
	const uint8_t *source; /* the application's address */
	size_t source_len;
	const uint32_t *mark;
	uint32_t table;
	bool found;
};

static bool prefix_covers(const uint8_t *prefix, unsigned bits,
			  const uint8_t *addr, size_t addr_len)
{
	if (bits > addr_len * 8)
		return false;
	if (memcmp(prefix, addr, bits / 8) != 0)
		return false;
	if (bits % 8 == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - bits % 8));
	return (prefix[bits / 8] & mask) == (addr[bits / 8] & mask);
}

/*
 * A rule that sends the application's replies to the table: from a prefix
 * holding its address (or from all), on lo or any input, and with a fwmark
 * selector only if it is ours. Rare selectors (tos, uid range...) are not
 * looked at: this only tells the user what is missing.
 */
static void find_reply_rule(struct nlmsghdr *msg, void *context)
{
	struct rule_search *search = context;
	struct fib_rule_hdr *rule = NLMSG_DATA(msg);
	int len = (int)(msg->nlmsg_len - NLMSG_LENGTH(sizeof *rule));
	uint32_t table = rule->table;
	const uint8_t *source = NULL;
	bool other_input = false;
	bool mark_matches = true;

	if (msg->nlmsg_type != RTM_NEWRULE || rule->action != FR_ACT_TO_TBL ||
	    (rule->flags & FIB_RULE_INVERT) || rule->dst_len != 0)
		return;
	for (struct rtattr *attr =
		     (struct rtattr *)((char *)rule + NLMSG_ALIGN(sizeof *rule));
	     RTA_OK(attr, len); attr = RTA_NEXT(attr, len)) {
		size_t size = RTA_PAYLOAD(attr);
		if (attr->rta_type == FRA_TABLE && size == sizeof table) {
			memcpy(&table, RTA_DATA(attr), sizeof table);
		} else if (attr->rta_type == FRA_SRC &&
			   size == search->source_len) {
			source = RTA_DATA(attr);
		} else if (attr->rta_type == FRA_IIFNAME) {
			other_input = strncmp(RTA_DATA(attr), "lo", size) != 0;
		} else if (attr->rta_type == FRA_FWMARK && size == 4) {
			uint32_t mark;
			memcpy(&mark, RTA_DATA(attr), sizeof mark);
			mark_matches = search->mark != NULL &&
				       *search->mark == mark;
		}
	}
	if (table == search->table && !other_input && mark_matches &&
	    (rule->src_len == 0 ||
	     (source != NULL && prefix_covers(source, rule->src_len,
					      search->source,
					      search->source_len))))
		search->found = true;
}

struct local_route_search {
	uint32_t table;
	bool found;
};

static void find_local_default_route(struct nlmsghdr *msg, void *context)
{
	struct local_route_search *search = context;
	struct rtmsg *route = NLMSG_DATA(msg);

	if (msg->nlmsg_type == RTM_NEWROUTE && route->rtm_type == RTN_LOCAL &&
	    route->rtm_dst_len == 0 && route_table(msg) == search->table)
		search->found = true;
}

int netlink_find_reply_rule(const struct sockaddr_storage *source,
			    const uint32_t *mark, uint32_t table, bool *found)
{
	struct rule_search search = {.mark = mark, .table = table};
	struct netlink_request req;

	search.source = netaddr_bytes(source, &search.source_len);
	netlink_request_init(&req, RTM_GETRULE, true, source->ss_family);
	int error = netlink_exchange(&req, find_reply_rule, &search);
	*found = search.found;
	return error;
}

int netlink_find_local_default_route(int family, uint32_t table, bool *found)
{
	struct local_route_search search = {.table = table};
	struct netlink_request req;

	netlink_request_init(&req, RTM_GETROUTE, true, family);
	int error = netlink_exchange(&req, find_local_default_route, &search);
	*found = search.found;
	return error;
}

int netlink_available(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);

	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}
