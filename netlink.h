/*
 * netlink: the three rtnetlink questions --check asks the kernel.
 *
 * Holds building a request, the exchange with the kernel, and reading the
 * answers: where would a reply go (`ip route get`), is there a rule that
 * sends it to a table (`ip rule`), does a table deliver every address to lo
 * (`ip route show table`). Holds no reporting and no advice: check.h.
 */
#ifndef NETLINK_H
#define NETLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Can this process talk rtnetlink at all? 0, or an errno value. */
int netlink_available(void);

struct route_answer {
	bool answered;
	uint8_t type;	/* RTN_LOCAL, RTN_UNICAST... */
	uint32_t table; /* the table the route came from */
};

/*
 * `ip route get TO from FROM [mark N]` (mark NULL: none). Returns 0 with
 * *answer, or an errno value: the kernel's answer, or ours.
 */
int netlink_route_get(const struct sockaddr_storage *from,
		      const struct sockaddr_storage *to, const uint32_t *mark,
		      struct route_answer *answer);

/*
 * Is there a rule sending packets from source (an address of family) to
 * table: from a prefix holding it (or from all), on lo or any input, with
 * a fwmark selector only if it is mark? Returns 0 with *found, or an
 * errno value.
 */
int netlink_find_reply_rule(const struct sockaddr_storage *source,
			    const uint32_t *mark, uint32_t table, bool *found);

/* Does table hold "local 0.0.0.0/0" (or "::/0") for family? As above. */
int netlink_find_local_default_route(int family, uint32_t table, bool *found);

#endif
