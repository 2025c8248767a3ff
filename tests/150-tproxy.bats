#!/usr/bin/env bats
# 150-tproxy: --tproxy, end to end, across three network namespaces.
#
# A TPROXY-diverted connection cannot start on the proxy's own host, so this
# file builds a small network: the client namespace (10.1.0.2) and the
# server namespace (10.2.0.2) are joined to the proxy namespace (10.1.0.1,
# 10.2.0.1; the file's usual $NETNS, where mmproxy runs) by two veth pairs.
# The client connects to the server's address, 10.2.0.2:80; in the proxy
# namespace a TPROXY rule diverts that to mmproxy's listening port, with the
# `-m socket` mark and the fwmark policy routing of mmproxy.8. The backend in
# the server namespace must then see the client's own address, 10.1.0.2,
# and every byte. Forwarding is on in the proxy namespace, as on a router:
# a connection that bypassed mmproxy would reach the backend from the same
# address, so each test also checks mmproxy's own line for the connection.
#
# The same network carries IPv6 (2001:db8:1::2 client, 2001:db8:1::1 and
# 2001:db8:2::1 proxy, 2001:db8:2::2 server), with the ip6tables and
# `ip -6` halves of the same rules, so the IPv6 tests follow the same path.
#
# systemd makes a transparent listening socket with Transparent=yes;
# systemd-socket-activate cannot, so in the inetd and connected-fd-3 tests
# tests/helpers/transparent sets IP_TRANSPARENT on its listener.

load helpers/common

TRANSPARENT=$REPO/tests/helpers/transparent
CLIENT_NS=$NETNS-client
SERVER_NS=$NETNS-server
CLIENT_IP=10.1.0.2
PROXY_IP=10.1.0.1
SERVER_IP=10.2.0.2
PROXY_SERVER_SIDE_IP=10.2.0.1
CLIENT_IP6=2001:db8:1::2
PROXY_IP6=2001:db8:1::1
SERVER_IP6=2001:db8:2::2
PROXY_SERVER_SIDE_IP6=2001:db8:2::1
SERVER_PORT=80       # what the client connects to, and what is diverted
OTHER_SERVER_PORT=81 # the -4 and -6 overrides' target

# ---- three namespaces

in_client() { ip netns exec "$CLIENT_NS" "$@"; }
in_server() { ip netns exec "$SERVER_NS" "$@"; }

# Each end namespace: lo up, one veth END_IF (ADDR/24, ADDR6/64) whose peer
# PROXY_IF (PROXY_ADDR/24, PROXY_ADDR6/64) is in the proxy namespace,
# default routes via the proxy. The IPv6 addresses skip duplicate address
# detection (nodad), so they are usable at once.
join_to_proxy() {
	local ns=$1 end_if=$2 addr=$3 addr6=$4 proxy_if=$5 proxy_addr=$6 proxy_addr6=$7
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip -n "$ns" link add "$end_if" type veth peer name "$proxy_if" netns "$NETNS"
	ip -n "$ns" addr add "$addr/24" dev "$end_if"
	ip -n "$ns" addr add "$addr6/64" dev "$end_if" nodad
	ip -n "$ns" link set "$end_if" up
	ip -n "$NETNS" addr add "$proxy_addr/24" dev "$proxy_if"
	ip -n "$NETNS" addr add "$proxy_addr6/64" dev "$proxy_if" nodad
	ip -n "$NETNS" link set "$proxy_if" up
	ip -n "$ns" -4 route add default via "$proxy_addr"
	ip -n "$ns" -6 route add default via "$proxy_addr6"
}

# firewall 4|6 ARGS...: iptables or ip6tables in the proxy namespace.
firewall() {
	local family=$1
	shift
	if [ "$family" = 6 ]; then
		netns_exec ip6tables "$@"
	else
		netns_exec iptables "$@"
	fi
}

# tproxy_rules 4|6 SERVER_ADDR: the rules of mmproxy.8's TPROXY section for
# one family. Packets of established connections (a socket matches them) are
# marked and routed locally; new ones to the server's port go through the
# DIVERT chain, which each test points at its own mmproxy port (divert_to).
tproxy_rules() {
	local family=$1 server=$2 everywhere=0.0.0.0/0
	if [ "$family" = 6 ]; then
		everywhere=::/0
		netns_exec sysctl -qw net.ipv6.conf.all.forwarding=1
	else
		netns_exec sysctl -qw net.ipv4.ip_forward=1
	fi
	firewall "$family" -t mangle -N DIVERT
	firewall "$family" -t mangle -A PREROUTING -p tcp -m socket -j MARK --set-mark 1
	firewall "$family" -t mangle -A PREROUTING -p tcp -d "$server" --dport "$SERVER_PORT" -j DIVERT
	netns_exec ip "-$family" rule add fwmark 1 lookup 100
	netns_exec ip "-$family" route add local "$everywhere" dev lo table 100
}

# Both families' DIVERT chains to PORT.
divert_to() {
	local family
	for family in 4 6; do
		firewall "$family" -t mangle -F DIVERT
		firewall "$family" -t mangle -A DIVERT -p tcp -j TPROXY --on-port "$1" --tproxy-mark 1
	done
}

remove_end_namespaces() {
	local ns
	for ns in "$CLIENT_NS" "$SERVER_NS"; do
		netns_kill_all "$ns"
		ip netns delete "$ns" 2>/dev/null || true
	done
}

setup_file() {
	require_executable "$TRANSPARENT"
	if ! command -v iptables >/dev/null || ! command -v ip6tables >/dev/null; then
		echo "# iptables or ip6tables is missing: apt-get install iptables" >&2
		return 1
	fi
	common_setup_file
	remove_end_namespaces
	join_to_proxy "$CLIENT_NS" c0 "$CLIENT_IP" "$CLIENT_IP6" \
		p0 "$PROXY_IP" "$PROXY_IP6"
	join_to_proxy "$SERVER_NS" s0 "$SERVER_IP" "$SERVER_IP6" \
		p1 "$PROXY_SERVER_SIDE_IP" "$PROXY_SERVER_SIDE_IP6"
	tproxy_rules 4 "$SERVER_IP"
	tproxy_rules 6 "$SERVER_IP6"
}

teardown_file() {
	# Everything in the end namespaces is this file's: kill it all.
	remove_end_namespaces
	common_teardown_file
}

setup() {
	common_setup
	divert_to "$(port 0)"
}

teardown() {
	common_teardown
	netns_kill_all "$CLIENT_NS"
	netns_kill_all "$SERVER_NS"
}

# ---- processes in the three namespaces

_server_listens() {
	[ -n "$(in_server ss -ltnH "sport = :$1")" ]
}

# The echo backend (or MODE) on ports 80 and 81 of the server's IPv4 and
# IPv6 addresses, in the server namespace.
server_start() {
	BACKEND_LOG=$TEST_DIR/backend.log
	BACKEND_ACCEPTS=$TEST_DIR/backend.accepts
	: >"$BACKEND_LOG"
	: >"$BACKEND_ACCEPTS"
	start_bg backend ip netns exec "$SERVER_NS" "$BACKEND" \
		-t "$SERVER_IP:$SERVER_PORT" -t "$SERVER_IP:$OTHER_SERVER_PORT" \
		-t "[$SERVER_IP6]:$SERVER_PORT" -t "[$SERVER_IP6]:$OTHER_SERVER_PORT" \
		-o "$BACKEND_LOG" -A "$BACKEND_ACCEPTS" -m "${1:-echo}" "${@:2}"
	BACKEND_PID=$BG_PID
	wait_until 10 _server_listens "$SERVER_PORT"
}

# tproxy_start_on HOST [ARGS...]: mmproxy --tproxy -v 2 ARGS on HOST (as
# written before :PORT) and the test's port, standalone.
tproxy_start_on() {
	mmproxy_start -l "$1:$(port 0)" --tproxy -v 2 "${@:2}"
	wait_for_listen "$(port 0)"
}

# On 0.0.0.0.
tproxy_start() {
	tproxy_start_on 0.0.0.0 "$@"
}

# client [PPCLIENT OPTIONS...]: a plain TCP client (no PROXY header) in the
# client namespace, to the server's address unless told otherwise.
client() {
	in_client "$PPCLIENT" --no-header -w 20 "$@"
}

# client_relays_ok [PPCLIENT OPTIONS...] ADDR:PORT: 1000 bytes there and
# back with a half-close.
client_relays_ok() {
	run client -n 1000 --half-close "$@"
	echo "client: $output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 1000 ]
	[ "$(field crc_received "$output")" = "$(field crc_sent "$output")" ]
	CLIENT_CRC=$(field crc_sent "$output")
}

# server_saw PEER_ADDR LOCAL: the backend's last line is a whole connection
# from the client's own address (IPv6 in brackets) to LOCAL, with the
# client's bytes.
server_saw() {
	local line
	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(tail -n 1 "$BACKEND_LOG")
	echo "backend: $line"
	[[ $(field peer "$line") == "$1":* ]]
	[ "$(field local "$line")" = "$2" ]
	[ "$(field bytes "$line")" = 1000 ]
	[ "$(field crc "$line")" = "$CLIENT_CRC" ]
	[ "$(field end "$line")" = eof ]
}

# mmproxy_saw LB TARGET: mmproxy's summary line of a finished connection
# from the client, the original destination as lb=. A diverted connection
# is of one family, so LB's family tells which of the client's addresses to expect.
mmproxy_saw() {
	local line client=$CLIENT_IP
	[[ $1 == \[* ]] && client="[$CLIENT_IP6]"
	wait_for_log "$MMPROXY_LOG" ' conn client='
	line=$(grep ' conn client=' "$MMPROXY_LOG" | tail -n 1)
	echo "mmproxy: $line"
	[[ $(field client "$line") == "$client":* ]]
	[ "$(field lb "$line")" = "$1" ]
	[ "$(field target "$line")" = "$2" ]
	[ "$(field end "$line")" = done ]
}


# Only the launcher and its children (with no busy one: its waiting
# connection processes) are left in the proxy namespace.
_only_launcher_left() {
	local kept
	kept=$(printf '%s\n' "$1" $(children_of "$1"))
	[ "$(ip netns pids "$NETNS" | grep -cvxF "$kept")" -eq 0 ]
}

# ---- the standalone listener

@test "a diverted connection reaches the server from the client's own address and port" {
	server_start
	tproxy_start
	client_relays_ok -b "$CLIENT_IP:40001" "$SERVER_IP:$SERVER_PORT"
	server_saw "$CLIENT_IP" "$SERVER_IP:$SERVER_PORT"
	grep -q "^peer=$CLIENT_IP:40001 " "$BACKEND_LOG"
	mmproxy_saw "$SERVER_IP:$SERVER_PORT" "$SERVER_IP:$SERVER_PORT"
	wait_until 10 no_busy_children "$MMPROXY_PID"
}

# answer_after_half_close_ok DESTINATION CLIENT_HOST UP DOWN: the client
# sends UP bytes to DESTINATION and half-closes; the server (started as
# `server_start sink -R DOWN`) answers only after that EOF reached it. Both
# byte counts and checksums, the client's own address at the server, and
# mmproxy's line.
answer_after_half_close_ok() {
	local destination=$1 client_host=$2 up=$3 down=$4 line
	run client -n "$up" --half-close "$destination"
	echo "client: $output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = "$down" ]
	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(tail -n 1 "$BACKEND_LOG")
	echo "backend: $line"
	[[ $(field peer "$line") == "$client_host":* ]]
	[ "$(field bytes "$line")" = "$up" ]
	[ "$(field crc "$line")" = "$(field crc_sent "$output")" ]
	[ "$(field sent "$line")" = "$down" ]
	[ "$(field crc_sent "$line")" = "$(field crc_received "$output")" ]
	wait_for_log "$MMPROXY_LOG" " up=$up down=$down .*end=done"
}

@test "a few megabytes each way arrive intact, and the half-close reaches the server" {
	# sink: the server answers only after the client's EOF reached it.
	server_start sink -R 3000000
	tproxy_start
	answer_after_half_close_ok "$SERVER_IP:$SERVER_PORT" "$CLIENT_IP" 4000000 3000000
}

@test "-4 sends diverted IPv4 connections to its target instead of the original destination" {
	server_start
	tproxy_start -4 "$SERVER_IP:$OTHER_SERVER_PORT"
	client_relays_ok "$SERVER_IP:$SERVER_PORT"
	server_saw "$CLIENT_IP" "$SERVER_IP:$OTHER_SERVER_PORT"
	mmproxy_saw "$SERVER_IP:$SERVER_PORT" "$SERVER_IP:$OTHER_SERVER_PORT"
}

@test "-6 alone leaves IPv4 connections on their original destination" {
	server_start
	tproxy_start -6 "[2001:db8::1]:$OTHER_SERVER_PORT"
	client_relays_ok "$SERVER_IP:$SERVER_PORT"
	server_saw "$CLIENT_IP" "$SERVER_IP:$SERVER_PORT"
}

# refused_as_not_diverted CLIENT_HOST LISTENER: a connection from the client
# straight to mmproxy's listener (addressed to this host, so not diverted) is
# refused with a line saying so; mmproxy stays up; the server sees nothing.
refused_as_not_diverted() {
	local client_host=$1 listener=$2
	run client -n 1000 --half-close "$listener"
	echo "client: $output"
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "end=not-diverted"
	grep -F "refused client=$client_host:" "$MMPROXY_LOG" |
		grep -qF ": destination $listener is this host's own address"
	wait_until 10 no_busy_children "$MMPROXY_PID"
	is_alive "$MMPROXY_PID"
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "a connection straight to the listener, not diverted, is refused and never reaches the server" {
	server_start
	tproxy_start
	refused_as_not_diverted "$CLIENT_IP" "$PROXY_IP:$(port 0)"
}

@test "--allowed-subnets filters the clients themselves" {
	server_start
	write_allowed_subnets "$ALLOWED_SUBNETS" 10.9.0.0/16
	tproxy_start --allowed-subnets "$ALLOWED_SUBNETS"
	run client -n 1000 --half-close "$SERVER_IP:$SERVER_PORT"
	echo "client: $output"
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "end=not-allowed"
	grep -q "refused client=$CLIENT_IP:[0-9]*: not in allowed subnets" "$MMPROXY_LOG"
	grep -q "lb=$SERVER_IP:$SERVER_PORT .*end=not-allowed" "$MMPROXY_LOG"
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "twenty diverted connections leave no process behind but the listener and its waiting ones" {
	server_start
	tproxy_start
	run client -n 1000 --half-close -c 20 -P 5 -q "$SERVER_IP:$SERVER_PORT"
	echo "client: $output"
	[ "$status" -eq 0 ]
	[[ $output == *"ok=20 failed=0"* ]]
	wait_for_file_lines "$BACKEND_LOG" 20
	[ "$(grep -c "^peer=$CLIENT_IP:" "$BACKEND_LOG")" -eq 20 ]
	wait_until 10 no_busy_children "$MMPROXY_PID"
	wait_until 10 _only_launcher_left "$MMPROXY_PID"
}

# ---- IPv6, and both families on one listener

@test "a diverted IPv6 connection reaches the server from the client's own IPv6 address and port" {
	server_start
	tproxy_start_on "[::]"
	client_relays_ok -b "[$CLIENT_IP6]:40001" "[$SERVER_IP6]:$SERVER_PORT"
	server_saw "[$CLIENT_IP6]" "[$SERVER_IP6]:$SERVER_PORT"
	grep -q "^peer=\[$CLIENT_IP6\]:40001 " "$BACKEND_LOG"
	mmproxy_saw "[$SERVER_IP6]:$SERVER_PORT" "[$SERVER_IP6]:$SERVER_PORT"
	wait_until 10 no_busy_children "$MMPROXY_PID"
}

@test "an IPv6 server's answer after the client's half-close arrives intact" {
	server_start sink -R 300000
	tproxy_start_on "[::]"
	answer_after_half_close_ok "[$SERVER_IP6]:$SERVER_PORT" "[$CLIENT_IP6]" 400000 300000
}

@test "-6 sends diverted IPv6 connections to its target instead of the original destination" {
	server_start
	tproxy_start_on "[::]" -6 "[$SERVER_IP6]:$OTHER_SERVER_PORT"
	client_relays_ok "[$SERVER_IP6]:$SERVER_PORT"
	server_saw "[$CLIENT_IP6]" "[$SERVER_IP6]:$OTHER_SERVER_PORT"
	mmproxy_saw "[$SERVER_IP6]:$SERVER_PORT" "[$SERVER_IP6]:$OTHER_SERVER_PORT"
}

@test "an IPv6 connection straight to the listener, not diverted, is refused and never reaches the server" {
	server_start
	tproxy_start_on "[::]"
	refused_as_not_diverted "[$CLIENT_IP6]" "[$PROXY_IP6]:$(port 0)"
}

@test "one listener on [::] relays diverted IPv4 connections, from the client's IPv4 address, and IPv6 ones" {
	server_start
	tproxy_start_on "[::]"
	client_relays_ok -b "$CLIENT_IP:40002" "$SERVER_IP:$SERVER_PORT"
	server_saw "$CLIENT_IP" "$SERVER_IP:$SERVER_PORT"
	grep -q "^peer=$CLIENT_IP:40002 " "$BACKEND_LOG"
	mmproxy_saw "$SERVER_IP:$SERVER_PORT" "$SERVER_IP:$SERVER_PORT"
	client_relays_ok "[$SERVER_IP6]:$SERVER_PORT"
	server_saw "[$CLIENT_IP6]" "[$SERVER_IP6]:$SERVER_PORT"
	mmproxy_saw "[$SERVER_IP6]:$SERVER_PORT" "[$SERVER_IP6]:$SERVER_PORT"
}

@test "an IPv4 connection straight to a listener on [::] is refused and never reaches the server" {
	server_start
	tproxy_start_on "[::]"
	refused_as_not_diverted "$CLIENT_IP" "$PROXY_IP:$(port 0)"
}

# ---- the other launch modes

# relays_one_per_connection OPTIONS...: under systemd-socket-activate with
# OPTIONS (one mmproxy per connection), whose listening socket is made
# transparent as Transparent=yes would, a diverted connection is relayed
# from the client's address, and its process ends with it.
relays_one_per_connection() {
	server_start
	activate_start "0.0.0.0:$(port 0)" "$@" -- --tproxy -v 2
	run "$TRANSPARENT" "$ACTIVATE_PID"
	[ "$status" -eq 0 ]
	client_relays_ok "$SERVER_IP:$SERVER_PORT"
	server_saw "$CLIENT_IP" "$SERVER_IP:$SERVER_PORT"
	mmproxy_saw "$SERVER_IP:$SERVER_PORT" "$SERVER_IP:$SERVER_PORT"
	wait_until 10 _only_launcher_left "$ACTIVATE_PID"
}

@test "inetd mode (systemd-socket-activate --accept --inetd) relays a diverted connection" {
	relays_one_per_connection --accept --inetd
}

@test "a connected socket on fd 3 (systemd-socket-activate --accept) relays a diverted connection" {
	relays_one_per_connection --accept
}

@test "a listening socket on fd 3 is made transparent by mmproxy itself and relays diverted connections" {
	server_start
	activate_start "0.0.0.0:$(port 0)" -- --tproxy -v 2
	# Until mmproxy runs, the socket is not transparent and TPROXY drops
	# what it would divert: a connection straight to the port starts
	# mmproxy (systemd-socket-activate execs it on the first connection),
	# which refuses that one and makes the socket transparent.
	run client -n 10 "$PROXY_IP:$(port 0)"
	echo "client: $output"
	wait_for_log "$MMPROXY_LOG" "end=not-diverted"
	client_relays_ok "$SERVER_IP:$SERVER_PORT"
	server_saw "$CLIENT_IP" "$SERVER_IP:$SERVER_PORT"
	mmproxy_saw "$SERVER_IP:$SERVER_PORT" "$SERVER_IP:$SERVER_PORT"
	wait_until 10 no_busy_children "$ACTIVATE_PID"
}

# ---- what --tproxy does not do

@test "--tproxy with -p udp is a usage error" {
	run "$MMPROXY" --tproxy -p udp -l 127.0.0.1:1
	[ "$status" -eq 2 ]
	[[ $output == *"--tproxy: only TCP is supported"* ]]
}
