#!/usr/bin/env bats
# UDP mode end to end: mmproxy -p udp between tests/helpers/udpclient (the
# load balancer: PROXY v2 DGRAM header + payload per datagram) and
# tests/helpers/backend -u (logs each datagram's peer and echoes it back),
# inside this file's private network namespace (see helpers/common.bash).
#
# Each test starts its own mmproxy, so a drop counter or the drop log's rate
# limit never carries over from one test to the next. A test that must know
# the backend saw nothing of a datagram sends a good one right after it from
# the same load balancer: mmproxy reads its socket in order and the backend
# logs in order, so once the good one is logged, a wrongly relayed bad one
# would be logged too.
#
# The test of a flood against a waiting reply stops mmproxy (SIGSTOP) while
# both queue up, and reads the order of what it did next from strace, so
# it does not depend on timing.

load helpers/common

UDPCLIENT=$REPO/tests/helpers/udpclient

setup_file() {
	require_executable "$UDPCLIENT"
	common_setup_file
}

udpclient() {
	netns_exec timeout 60 "$UDPCLIENT" "$@"
}

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# The backend on UDP (and TCP, which backend_start always adds) 127.0.0.1:PORT and [::1]:PORT.
udp_backend_start() {
	backend_start echo "$1" -u "127.0.0.1:$1" -u "[::1]:$1"
	wait_for_listen "$1" udp
}

# mmproxy -p udp on 127.0.0.1:LPORT relaying to the backend on BPORT.
udp_mmproxy_start() {
	local listen_port=$1 backend_port=$2
	shift 2
	mmproxy_start -p udp -l "127.0.0.1:$listen_port" -4 "127.0.0.1:$backend_port" \
		-6 "[::1]:$backend_port" --allowed-subnets "$ALLOWED_SUBNETS" -v 2 "$@"
	if ! wait_for_listen "$listen_port" udp; then
		echo "# mmproxy did not listen on udp 127.0.0.1:$listen_port; its stderr:" >&2
		sed 's/^/# /' "$MMPROXY_LOG" >&2
		return 1
	fi
}

# Fails when grep -E REGEX FILE matches (a bare `! grep` would not fail a bats test).
refute_log() {
	if grep -E -- "$1" "$2" >&2; then
		echo "# matched, and should not have: $1" >&2
		return 1
	fi
}

# The peers the backend saw, one a line, in order.
backend_peers() {
	grep -oE '^udp peer=[^ ]+' "$BACKEND_LOG" | cut -d= -f2
}

# udpclient's summary line says everything expected came back intact.
assert_all_replies() {
	local summary expected=$1
	summary=$(printf '%s\n' "$output" | tail -n 1)
	echo "# udpclient: $summary"
	[ "$status" -eq 0 ]
	[ "$(field replies "$summary")" = "$expected" ]
	[ "$(field mismatches "$summary")" = 0 ]
	[ "$(field unexpected "$summary")" = 0 ]
}

# The common half of each "bad datagram" test: the good datagram sent after
# the bad one came back, the backend saw it and nothing else, and mmproxy
# said why it dropped the bad one ($1: a regex for the reason and counters).
assert_dropped_then_good() {
	assert_all_replies 1
	wait_for_file_lines "$BACKEND_LOG" 1
	[ "$(backend_peers)" = 192.0.2.10:40000 ]
	wait_for_log "$MMPROXY_LOG" "udp: dropped a datagram from lb=127\.0\.0\.[0-9]+:[0-9]+: $1" 5
	refute_log 'client=192\.0\.2\.66' "$MMPROXY_LOG"
}

@test "an IPv4 client's datagram reaches the backend from the client's address and the reply reaches the load balancer" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	run udpclient -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_all_replies 1

	wait_for_file_lines "$BACKEND_LOG" 1
	[ "$(backend_peers)" = 192.0.2.10:40000 ]
	grep -qE "^udp peer=192\.0\.2\.10:40000 local=127\.0\.0\.1:$(port 1) bytes=64 " "$BACKEND_LOG"
	grep -qE "udp flow open client=192\.0\.2\.10:40000 lb=127\.0\.0\.1:[0-9]+ target=127\.0\.0\.1:$(port 1) flows=1$" "$MMPROXY_LOG"
}

@test "an IPv6 client's datagram reaches the IPv6 backend from the client's address and the reply reaches the load balancer" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	run udpclient -s '[2001:db8::10]:40000' "127.0.0.1:$(port 0)"
	assert_all_replies 1

	wait_for_file_lines "$BACKEND_LOG" 1
	[ "$(backend_peers)" = '[2001:db8::10]:40000' ]
	grep -qE "^udp peer=\[2001:db8::10\]:40000 local=\[::1\]:$(port 1) bytes=64 " "$BACKEND_LOG"
	grep -qE "udp flow open client=\[2001:db8::10\]:40000 lb=127\.0\.0\.1:[0-9]+ target=\[::1\]:$(port 1) flows=1$" "$MMPROXY_LOG"
}

@test "two clients at once through one load balancer each get their own flow" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	run udpclient --clients 2 -w 5 "127.0.0.1:$(port 0)" # 198.51.100.1 and .2
	assert_all_replies 2

	wait_for_file_lines "$BACKEND_LOG" 2
	[ "$(backend_peers | sort | tr '\n' ' ')" = "198.51.100.1:40000 198.51.100.2:40000 " ]
	grep -q 'udp flow open client=198\.51\.100\.2:40000 .* flows=2$' "$MMPROXY_LOG"
}

@test "one client seen through two load balancers: each load balancer gets its own replies" {
	udp_backend_start "$(port 1)"
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.0/8
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	# Two flows for 192.0.2.10:40000, one per load balancer, then each
	# load balancer again: every reply must reach the one that asked.
	for round in 1 2; do
		for lb in 127.0.0.2 127.0.0.3; do
			run udpclient -b "$lb:$(port 5)" -s 192.0.2.10:40000 -n 3 -w 5 \
				"127.0.0.1:$(port 0)"
			echo "round $round lb $lb: $output"
			assert_all_replies 3
		done
	done
	[ "$(grep -c 'udp flow open client=192\.0\.2\.10:40000 ' "$MMPROXY_LOG")" -eq 2 ]
	# The backend sees the client's address from both; the second flow
	# could not share the first one's port.
	[ "$(backend_peers | cut -d: -f1 | sort -u)" = 192.0.2.10 ]
	[ "$(backend_peers | sort -u | wc -l)" -eq 2 ]
}

@test "datagrams whose flow cannot be opened are dropped with rate-limited log lines, not one each" {
	udp_backend_start "$(port 1)"
	# The header names a destination this namespace has no route to.
	udp_mmproxy_start "$(port 0)" "$(port 1)" --dynamic-destination -v 1

	run udpclient -s 192.0.2.10:40000 -d 203.0.113.1:53 -n 100 -w 2 "127.0.0.1:$(port 0)"
	echo "$output"
	wait_for_log "$MMPROXY_LOG" "could not open the flow's socket: Network is unreachable"
	[ "$(grep -c 'udp' "$MMPROXY_LOG")" -le 2 ]
	[ ! -s "$BACKEND_LOG" ]
}

@test "listening on 0.0.0.0, replies leave from the address the load balancer sent to" {
	udp_backend_start "$(port 1)"
	mmproxy_start -p udp -l "0.0.0.0:$(port 0)" -4 "127.0.0.1:$(port 1)" \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 2
	wait_for_listen "$(port 0)" udp

	# udpclient's socket is connected to 127.0.0.5: a reply from the
	# route's own choice of source (127.0.0.1) would never reach it.
	run udpclient -s 192.0.2.10:40000 -n 3 -w 5 "127.0.0.5:$(port 0)"
	assert_all_replies 3
}

@test "listening on [::], replies to IPv4 and IPv6 load balancers leave from the address each sent to" {
	udp_backend_start "$(port 1)"
	netns_exec ip -6 addr add 2001:db8::5/128 dev lo
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 ::1/128
	mmproxy_start -p udp -l "[::]:$(port 0)" -4 "127.0.0.1:$(port 1)" -6 "[::1]:$(port 1)" \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 2
	wait_for_listen "$(port 0)" udp

	run udpclient -s 192.0.2.10:40000 -n 3 -w 5 "127.0.0.5:$(port 0)"
	assert_all_replies 3
	run udpclient -b "[::1]" -s "[2001:db8::10]:40000" -n 3 -w 5 "[2001:db8::5]:$(port 0)"
	assert_all_replies 3
}

@test "500 clients at once each keep their own source address and all replies come back" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	# 198.51.100.1-254, then 10.0.0.1-246; two datagrams each, round by round.
	run udpclient --clients 500 -n 2 -w 20 -L "$TEST_DIR/clients.txt" "127.0.0.1:$(port 0)"
	assert_all_replies 1000
	[ "$(field complete "$(printf '%s\n' "$output" | tail -n 1)")" = 500/500 ]

	wait_for_file_lines "$BACKEND_LOG" 1000
	[ "$(wc -l <"$BACKEND_LOG")" -eq 1000 ]
	[ "$(backend_peers | sort -u | wc -l)" -eq 500 ]
	diff <(sort "$TEST_DIR/clients.txt") <(backend_peers | sort -u)
	[ "$(grep -c 'udp flow open ' "$MMPROXY_LOG")" -eq 500 ]
	grep -q 'udp flow open .* flows=500$' "$MMPROXY_LOG"
}

@test "an idle flow closes after --close-after and the same client's next datagram opens a new flow" {
	local lb started elapsed
	lb=127.0.0.1:$(port 5) # one load balancer address:port, so the flow key repeats
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)" --close-after 1

	run udpclient -b "$lb" -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_all_replies 1
	started=$(now_ms)
	refute_log 'udp flow closed' "$MMPROXY_LOG"
	[ -n "$(netns_exec ss -uanH src 192.0.2.10:40000)" ]

	# Closed within a second of the 1 s deadline (2.5 s leaves room for a slow machine).
	wait_for_log "$MMPROXY_LOG" "udp flow closed \(idle\) client=192\.0\.2\.10:40000 lb=$lb .*flows=0$" 5
	elapsed=$(($(now_ms) - started))
	echo "# closed ${elapsed} ms after the reply came back"
	[ "$elapsed" -le 2500 ]
	[ -z "$(netns_exec ss -uanH src 192.0.2.10:40000)" ]

	run udpclient -b "$lb" -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_all_replies 1
	[ "$(grep -c "udp flow open client=192\.0\.2\.10:40000 lb=$lb " "$MMPROXY_LOG")" -eq 2 ]
	[ "$(grep 'udp flow open ' "$MMPROXY_LOG" | tail -n 1 | grep -oE 'flows=[0-9]+$')" = flows=1 ]
	wait_for_file_lines "$BACKEND_LOG" 2
	[ "$(backend_peers | sort | uniq -c | awk '{print $1, $2}')" = "2 192.0.2.10:40000" ]
}

@test "garbage is dropped with a log line even at -v 1, and a good datagram right after gets through" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)" -v 1

	run udpclient --bad garbage -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_dropped_then_good 'no valid PROXY v2 header \(dropped so far: 0 not allowed, 1 bad header, 0 not DGRAM, 0 socket failure\)'
	refute_log 'udp flow open' "$MMPROXY_LOG"
}

@test "a truncated v2 header is dropped with a log line, and a good datagram right after gets through" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	run udpclient --bad truncated -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_dropped_then_good 'no valid PROXY v2 header \(dropped so far: 0 not allowed, 1 bad header, 0 not DGRAM, 0 socket failure\)'
}

@test "a load balancer outside the allowed subnets is dropped with a log line, and an allowed one right after gets through" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)" # allowed: 127.0.0.1/32 and ::1/128

	run udpclient -b 127.0.0.2 --expect 0 -s 192.0.2.66:40066 "127.0.0.1:$(port 0)"
	[ "$status" -eq 0 ]
	[ "$(field sent "$output")" = 1 ]

	run udpclient -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_dropped_then_good 'load balancer not in allowed subnets \(dropped so far: 1 not allowed, 0 bad header, 0 not DGRAM, 0 socket failure\)'
	grep -qE 'dropped a datagram from lb=127\.0\.0\.2:' "$MMPROXY_LOG"
}

@test "a v2 header with STREAM transport is dropped with a log line, and a good datagram right after gets through" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	run udpclient --bad stream -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_dropped_then_good 'header transport is not DGRAM \(dropped so far: 0 not allowed, 0 bad header, 1 not DGRAM, 0 socket failure\)'
}

@test "a v1 text header is dropped with a log line, and a good datagram right after gets through" {
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"

	run udpclient --bad v1 -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_dropped_then_good 'no valid PROXY v2 header \(dropped so far: 0 not allowed, 1 bad header, 0 not DGRAM, 0 socket failure\)'
}

# udp_client_at INDEX: one datagram from client 198.51.100.(INDEX+1) through
# load balancer $lb, and its reply back.
udp_client_at() {
	run udpclient -b "$lb" --clients 1 --first "$1" "127.0.0.1:$(port 0)"
	assert_all_replies 1
}

@test "with --max-flows 3 a 4th client evicts the least recently used flow, with a log line, and every client is served" {
	local lb
	lb=127.0.0.1:$(port 5) # one load balancer address:port, so flow keys repeat
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)" --max-flows 3

	udp_client_at 0 # 198.51.100.1
	udp_client_at 1 # 198.51.100.2
	udp_client_at 2 # 198.51.100.3
	udp_client_at 0 # .1 again: now .2 is the least recently used
	udp_client_at 3 # 198.51.100.4 takes .2's place

	wait_for_log "$MMPROXY_LOG" "udp flow closed \(evicted\) client=198\.51\.100\.2:40000 lb=$lb " 5
	wait_for_log "$MMPROXY_LOG" "udp: the flow table is full \(--max-flows 3\): evicted the least recently used flow \(evicted so far: 1\)" 5
	refute_log 'flow limit reached' "$MMPROXY_LOG"

	# .1, .3 and .4 keep their flows; .2 comes back with a new one,
	# evicting .3, the least recently used by then.
	udp_client_at 0
	udp_client_at 3
	udp_client_at 1
	wait_for_log "$MMPROXY_LOG" "udp flow closed \(evicted\) client=198\.51\.100\.3:40000 " 5
	[ "$(grep -c 'udp flow open ' "$MMPROXY_LOG")" -eq 5 ]
	[ "$(grep -c 'udp flow open client=198\.51\.100\.2:' "$MMPROXY_LOG")" -eq 2 ]
	wait_for_file_lines "$BACKEND_LOG" 8
	[ "$(wc -l <"$BACKEND_LOG")" -eq 8 ]
}

# The soft and hard "Max open files" of process $1.
open_file_limits() {
	awk '/^Max open files/ { print $4, $5 }' "/proc/$1/limits"
}

@test "a soft open-file limit below --max-flows is raised to the hard limit at start-up" {
	udp_backend_start "$(port 1)"
	start_bg mmproxy prlimit --nofile=64:4096 "$MMPROXY" -p udp -l "127.0.0.1:$(port 0)" \
		-4 "127.0.0.1:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" --max-flows 1000 -v 2
	MMPROXY_PID=$BG_PID MMPROXY_LOG=$TEST_DIR/mmproxy.err
	wait_for_listen "$(port 0)" udp
	[ "$(open_file_limits "$MMPROXY_PID")" = "4096 4096" ]
	refute_log 'max-flows' "$MMPROXY_LOG"

	# 100 clients at once all get their own flow: more than 64 descriptors.
	run udpclient --clients 100 "127.0.0.1:$(port 0)"
	assert_all_replies 100
	refute_log 'could not open the flow' "$MMPROXY_LOG"
}

@test "when the hard open-file limit cannot hold --max-flows, mmproxy says so and evicts at the number that fits" {
	udp_backend_start "$(port 1)"
	start_bg mmproxy prlimit --nofile=64:64 "$MMPROXY" -p udp -l "127.0.0.1:$(port 0)" \
		-4 "127.0.0.1:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" --max-flows 1000 -v 2
	MMPROXY_PID=$BG_PID MMPROXY_LOG=$TEST_DIR/mmproxy.err
	wait_for_listen "$(port 0)" udp
	wait_for_log "$MMPROXY_LOG" "--max-flows 1000 needs more open files than the limit of 64: using --max-flows [0-9]+" 5
	local cap
	cap=$(grep -oE 'using --max-flows [0-9]+' "$MMPROXY_LOG" | grep -oE '[0-9]+$')
	echo "# cap: $cap"
	[ "$cap" -gt 0 ] && [ "$cap" -lt 64 ]

	# More clients than fit: each still gets its reply, the oldest flows
	# make room, and no socket fails for want of a descriptor.
	run udpclient --clients 100 --window 1 "127.0.0.1:$(port 0)"
	assert_all_replies 100
	wait_for_log "$MMPROXY_LOG" "udp flow closed \(evicted\) " 5
	refute_log 'could not open the flow' "$MMPROXY_LOG"
}

@test "under socket activation a datagram socket on fd 3 relays a datagram with the client's address" {
	udp_backend_start "$(port 1)"
	# Without --accept, systemd-socket-activate binds, then execs mmproxy with the socket on fd 3.
	start_bg activate systemd-socket-activate --datagram -l "127.0.0.1:$(port 0)" \
		"$MMPROXY" -4 "127.0.0.1:$(port 1)" -6 "[::1]:$(port 1)" \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 2
	local log=$TEST_DIR/activate.err
	wait_for_listen "$(port 0)" udp

	run udpclient -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_all_replies 1

	wait_for_file_lines "$BACKEND_LOG" 1
	[ "$(backend_peers)" = 192.0.2.10:40000 ]
	grep -qE "udp flow open client=192\.0\.2\.10:40000 lb=127\.0\.0\.1:[0-9]+ target=127\.0\.0\.1:$(port 1) flows=1$" "$log"
}

@test "SIGTERM makes the UDP proxy close its flows and exit promptly with status 0" {
	local rc=0
	udp_backend_start "$(port 1)"
	udp_mmproxy_start "$(port 0)" "$(port 1)"
	run udpclient -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	assert_all_replies 1

	kill -TERM "$MMPROXY_PID"
	wait_for_exit "$MMPROXY_PID" 2
	wait "$MMPROXY_PID" || rc=$?
	[ "$rc" -eq 0 ]
	grep -qE 'udp flow closed \(exit\) client=192\.0\.2\.10:40000 .*flows=0$' "$MMPROXY_LOG"
	[ -z "$(netns_exec ss -uanH src 192.0.2.10:40000)" ]
	[ -z "$(netns_exec ss -lunH "sport = :$(port 0)")" ]
}

# The fd (in the mmproxy process) of the UDP socket bound to ADDR:PORT $1.
udp_socket_fd() {
	netns_exec ss -uanpH "src $1" | grep -oE 'fd=[0-9]+' | head -n 1 | cut -d= -f2
}

# Like udp_socket_fd, the process id.
udp_socket_pid() {
	netns_exec ss -uanpH "src $1" | grep -oE 'pid=[0-9]+' | head -n 1 | cut -d= -f2
}

# The receive queue of the UDP socket bound to $1, in bytes, and its drop count.
udp_socket_queue() {
	netns_exec ss -uanmH "src $1" | awk '{print $2}'
}
udp_socket_drops() {
	netns_exec ss -uanmH "src $1" | grep -oE ',d[0-9]+\)' | grep -oE '[0-9]+'
}

# From strace's log $1, the calls on fd $2 in order, one a line: R for a
# recvmmsg that returned datagrams, S for a sendmmsg that sent some
# (both the old and the new loop use only these on the listening socket).
calls_on_fd() {
	sed -nE "s/^([0-9]+ +)?recvmmsg\($2, .*\) = [1-9][0-9]*( .*)?$/R/p
		s/^([0-9]+ +)?sendmmsg\($2, .*\) = [1-9][0-9]*( .*)?$/S/p" "$1"
}

# From strace's log $1: how many datagrams recvmmsg returned on fd $2, and
# how many sendmmsg sent on it, as "RECEIVED SENT".
datagrams_on_fd() {
	sed -nE "s/^([0-9]+ +)?(recv|send)mmsg\($2, .*\) = ([0-9]+)( .*)?$/\2 \3/p" "$1" |
		awk '{ n[$1] += $2 } END { print n["recv"] + 0, n["send"] + 0 }'
}

@test "a flood of datagrams from the load balancers does not hold back a reply already waiting for its client" {
	local lb listen trace=$TEST_DIR/strace.log pid listen_fd calls
	lb=127.0.0.1:$(port 5) listen=127.0.0.1:$(port 0)
	udp_backend_start "$(port 1)"
	# strace records the order of the system calls, so nothing here depends on timing.
	start_bg mmproxy strace -f -o "$trace" -e trace=recvmmsg,sendmmsg \
		"$MMPROXY" -p udp -l "$listen" -4 "127.0.0.1:$(port 1)" \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 1
	MMPROXY_PID=$BG_PID MMPROXY_LOG=$TEST_DIR/mmproxy.err
	wait_for_listen "$(port 0)" udp

	# One flow, with its reply back.
	run udpclient -b "$lb" -s 192.0.2.10:40000 "$listen"
	assert_all_replies 1
	pid=$(udp_socket_pid "$listen")
	listen_fd=$(udp_socket_fd "$listen")
	echo "# mmproxy pid=$pid listening socket fd=$listen_fd"
	[ -n "$pid" ] && [ -n "$listen_fd" ]

	# A second datagram on that flow, held in the backend while it is stopped.
	kill -STOP "$BACKEND_PID"
	start_bg second timeout 60 "$UDPCLIENT" -b "$lb" -s 192.0.2.10:40000 -w 30 "$listen"
	local second=$BG_PID
	wait_until 10 eval '[ "$(udp_socket_queue 127.0.0.1:$(port 1))" -gt 0 ]'
	kill -STOP "$pid"

	# With mmproxy stopped, 400 datagrams of garbage (more than 8 batches
	# of 32) queue up on the listening socket, all of them (no drop), and
	# only then the backend's echo on the flow's socket: the listening
	# socket is ready first, as it is under a steady flood.
	netns_exec bash -c "exec 3>/dev/udp/127.0.0.1/$(port 0)
		for ((i = 0; i < 400; i++)); do printf 'not a PROXY header' >&3; done"
	[ "$(udp_socket_drops "$listen")" = 0 ]
	echo "# listening socket queue: $(udp_socket_queue "$listen") bytes"
	kill -CONT "$BACKEND_PID"
	wait_until 10 eval '[ "$(udp_socket_queue 192.0.2.10:40000)" -gt 0 ]'

	kill -CONT "$pid"
	wait "$second"
	sed 's/^/# second: /' "$TEST_DIR/second.out"
	wait_for_log "$MMPROXY_LOG" 'udp: dropped a datagram .*no valid PROXY v2 header' 5
	# strace has logged it all: 2 good datagrams and 400 bad ones in, 2 replies out.
	wait_until 10 eval '[ "$(datagrams_on_fd "$trace" "$listen_fd")" = "402 2" ]'

	# The reply left (S) while some of the flood was still to be read (R
	# after it); a loop that drains the listening socket first sends it last.
	calls=$(calls_on_fd "$trace" "$listen_fd" | tr -d '\n')
	echo "# calls on the listening socket (R receive, S send): $calls"
	[[ $calls =~ ^RSR+SR+$ ]]
}
