#!/usr/bin/env bats
# mmproxy behind a real haproxy (Debian's 2.6), the setup it exists for.
# haproxy announces a chosen client address without a second host:
# `tcp-request connection set-src ipv4(192.0.2.10)` (or ipv6(2001:db8::10))
# in its frontends, `send-proxy` or `send-proxy-v2` towards mmproxy, and
# `check check-send-proxy` health checks every 200 ms. The client connects to
# haproxy without a PROXY header; the backend must see the set-src address
# and every byte; the health checks must keep the server UP without a single
# error line from mmproxy.

load helpers/common

HAPROXY_SERVER=mmproxy
HAPROXY_BACKEND=be_mmproxy

# haproxy_start PROXY_OPTION MMPROXY_PORT IPV4_FRONTEND_PORT IPV6_FRONTEND_PORT
# PROXY_OPTION is send-proxy or send-proxy-v2. Stats socket: $HAPROXY_STATS.
haproxy_start() {
	local proxy_option=$1 mmproxy_port=$2 frontend4_port=$3 frontend6_port=$4
	local cfg=$TEST_DIR/haproxy.cfg
	HAPROXY_STATS=$TEST_DIR/haproxy.sock
	cat >"$cfg" <<-CFG
		global
		    stats socket $HAPROXY_STATS mode 600 level admin
		defaults
		    mode tcp
		    timeout connect 2s
		    timeout client 10s
		    timeout server 10s
		frontend fe_ipv4
		    bind 127.0.0.1:$frontend4_port
		    tcp-request connection set-src ipv4(192.0.2.10)
		    default_backend $HAPROXY_BACKEND
		frontend fe_ipv6
		    bind [::1]:$frontend6_port
		    tcp-request connection set-src ipv6(2001:db8::10)
		    default_backend $HAPROXY_BACKEND
		backend $HAPROXY_BACKEND
		    server $HAPROXY_SERVER 127.0.0.1:$mmproxy_port $proxy_option check check-send-proxy inter 200ms fall 2 rise 1
	CFG
	start_bg haproxy haproxy -f "$cfg" -db
	wait_for_listen "$frontend4_port"
	wait_for_listen "$frontend6_port"
}

# The status column of `show stat` for mmproxy's server line (UP, DOWN, ...).
haproxy_server_status() {
	echo "show stat" | netns_exec socat -t 2 - "UNIX-CONNECT:$HAPROXY_STATS" |
		awk -F, -v b="$HAPROXY_BACKEND" -v s="$HAPROXY_SERVER" \
			'$1 == b && $2 == s { print $18 }'
}

_server_is() {
	[ "$(haproxy_server_status)" = "$1" ]
}

# start everything for proxy option $1: backend (echo), mmproxy, haproxy.
start_chain() {
	PASSIVE_OPENS_BEFORE=$(passive_opens)
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	haproxy_start "$1" "$(port 0)" "$(port 2)" "$(port 3)"
	# Wait for the first check, so that a DOWN server is not what we test.
	wait_until 10 _server_is UP
}

# through_haproxy ADDR:PORT BYTES: a client without a PROXY header sends
# BYTES and half-closes; the echo backend's bytes all come back.
through_haproxy() {
	run ppclient --no-header -n "$2" --half-close -w 20 "$1"
	echo "ppclient: $output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = "$2" ]
	[ "$(field crc_received "$output")" = "$(field crc_sent "$output")" ]
	CLIENT_CRC=$(field crc_sent "$output")
}

# backend_saw_address ADDR_REGEX BYTES: the backend logged a whole connection
# from ADDR (any port: haproxy picks it) that carried the client's bytes.
# Health checks may reach the backend too, so this is not the last line.
backend_saw_address() {
	local line
	if ! wait_for_log "$BACKEND_LOG" "^peer=$1:[0-9]+ .*bytes=$2 crc=$CLIENT_CRC .*end=eof$" 5; then
		cat "$BACKEND_LOG"
		return 1
	fi
	line=$(grep -E "^peer=$1:[0-9]+ " "$BACKEND_LOG" | tail -n 1)
	echo "backend: $line"
	BACKEND_LOCAL=$(field local "$line")
}

# mmproxy_logged_client ADDR_REGEX BYTES: its -v 2 line for that connection.
mmproxy_logged_client() {
	wait_for_log "$MMPROXY_LOG" "conn client=$1:[0-9]+ lb=127\.0\.0\.1:[0-9]+ target=[^ ]+ up=$2 down=$2 ms=[0-9]+ end=done$" 5
}

# mmproxy_log_only_ends REASON_REGEX: every line mmproxy logged is a -v 2
# connection line whose end= matches: no refusal, no header error, no failed
# connect or bind. (The start-up note that the tests run it as root aside.)
mmproxy_log_only_ends() {
	local unexpected
	unexpected=$(grep -Ev -e "^(mmproxy\[[0-9]+\]: )?conn .* end=($1)\$" \
		-e ': running as root' "$MMPROXY_LOG" || true)
	if [ -n "$unexpected" ]; then
		echo "unexpected mmproxy log lines ($(wc -l <<<"$unexpected") of $(wc -l <"$MMPROXY_LOG")):"
		sed -E 's/mmproxy\[[0-9]+\]/mmproxy[PID]/; s/:[0-9]+/:PORT/g' <<<"$unexpected" | sort | uniq -c
		return 1
	fi
}

# TCP connections accepted in the namespace (the kernel's PassiveOpens).
passive_opens() {
	netns_exec awk '/^Tcp:/ { if (!col) { for (i = 1; i <= NF; i++) if ($i == "PassiveOpens") col = i } else print $col }' /proc/net/snmp
}

# Connections mmproxy accepted since start_chain: all of them but the
# backend's (no client goes through haproxy in the health check tests).
mmproxy_accepts() {
	echo $(($(passive_opens) - PASSIVE_OPENS_BEFORE - $(wc -l <"$BACKEND_ACCEPTS")))
}

_mmproxy_accepted_at_least() {
	[ "$(mmproxy_accepts)" -ge "$1" ]
}

# At -v 2 mmproxy logs one line per connection: once haproxy's checks (every
# 200 ms) have made 8 connections, at least 5 lines must follow.
wait_for_check_lines() {
	wait_until 10 _mmproxy_accepted_at_least 8
	if ! wait_for_file_lines "$MMPROXY_LOG" 5 3; then
		echo "mmproxy accepted $(mmproxy_accepts) health check connections and logged" \
			"$(wc -l <"$MMPROXY_LOG") lines; -v 2 promises one line per connection:"
		cat "$MMPROXY_LOG"
		return 1
	fi
}

# ---- data through haproxy

@test "haproxy send-proxy (v1): the backend sees haproxy's IPv4 client and every byte" {
	start_chain send-proxy
	through_haproxy "127.0.0.1:$(port 2)" 200000
	backend_saw_address '192\.0\.2\.10' 200000
	[ "$BACKEND_LOCAL" = "127.0.0.1:$(port 1)" ]
	mmproxy_logged_client '192\.0\.2\.10' 200000
}

@test "haproxy send-proxy-v2: the backend sees haproxy's IPv4 client and every byte" {
	start_chain send-proxy-v2
	through_haproxy "127.0.0.1:$(port 2)" 200000
	backend_saw_address '192\.0\.2\.10' 200000
	[ "$BACKEND_LOCAL" = "127.0.0.1:$(port 1)" ]
	mmproxy_logged_client '192\.0\.2\.10' 200000
}

@test "haproxy send-proxy (v1): an IPv6 client reaches the IPv6 backend from its own address" {
	start_chain send-proxy
	through_haproxy "[::1]:$(port 3)" 50000
	backend_saw_address '\[2001:db8::10\]' 50000
	[ "$BACKEND_LOCAL" = "[::1]:$(port 1)" ]
	mmproxy_logged_client '\[2001:db8::10\]' 50000
}

@test "haproxy send-proxy-v2: an IPv6 client reaches the IPv6 backend from its own address" {
	start_chain send-proxy-v2
	through_haproxy "[::1]:$(port 3)" 50000
	backend_saw_address '\[2001:db8::10\]' 50000
	[ "$BACKEND_LOCAL" = "[::1]:$(port 1)" ]
	mmproxy_logged_client '\[2001:db8::10\]' 50000
}

@test "mmproxy's -v 2 line names haproxy's client, the target and the bytes moved" {
	start_chain send-proxy-v2
	through_haproxy "127.0.0.1:$(port 2)" 12345
	wait_for_log "$MMPROXY_LOG" "conn client=192\.0\.2\.10:[0-9]+ lb=127\.0\.0\.1:[0-9]+ target=127\.0\.0\.1:$(port 1) up=12345 down=12345 ms=[0-9]+ end=done"
}

# ---- health checks
# haproxy 2.6 checks connect, send a header and reset at once. With
# send-proxy-v2 the header is LOCAL; with send-proxy (v1) it is
# "PROXY TCP4 <haproxy's address> <mmproxy's address> <its port> <our port>",
# naming the load balancer's own connection.

@test "haproxy's v1 health checks keep the server UP and mmproxy logs no error for them" {
	start_chain send-proxy
	wait_for_check_lines
	[ "$(haproxy_server_status)" = UP ]
	mmproxy_log_only_ends 'health|client-reset'
}

@test "haproxy's v1 health checks are logged as end=health" {
	start_chain send-proxy
	wait_for_check_lines
	mmproxy_log_only_ends health
}

@test "haproxy's v2 health checks (LOCAL) keep the server UP and are logged as end=health" {
	start_chain send-proxy-v2
	wait_for_check_lines
	[ "$(haproxy_server_status)" = UP ]
	mmproxy_log_only_ends health
}

@test "haproxy marks the server DOWN when mmproxy stops, and UP again when it is back" {
	start_chain send-proxy-v2
	kill "$MMPROXY_PID"
	wait_for_exit "$MMPROXY_PID"
	wait_until 10 _server_is DOWN
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	wait_until 10 _server_is UP
	through_haproxy "127.0.0.1:$(port 2)" 1000
	backend_saw_address '192\.0\.2\.10' 1000
}

# ---- the backend behind mmproxy is down

@test "when mmproxy's backend is down, haproxy's client is closed and mmproxy says why" {
	start_chain send-proxy-v2
	kill "$BACKEND_PID"
	wait_for_exit "$BACKEND_PID"
	run ppclient --no-header -n 1000 --half-close -w 20 "127.0.0.1:$(port 2)"
	echo "ppclient: $output"
	[[ "$(field end "$output")" =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "connect 127\.0\.0\.1:$(port 1) from 192\.0\.2\.10:[0-9]+: Connection refused"
	wait_for_log "$MMPROXY_LOG" "conn client=192\.0\.2\.10:[0-9]+ .*end=backend-refused"
}
