#!/usr/bin/env bats
# Hardening (issue 13): what a hostile or broken peer could do to mmproxy
# over TCP, and the defaults that trust too much. A reset that arrives while
# nothing is wanted from its socket still ends the connection at once;
# keepalive and --idle-timeout end connections whose peer vanished; a v2
# header naming a datagram client is refused on a TCP connection; running
# without --allowed-subnets is said at start-up, and refused with
# --dynamic-destination, which also refuses to connect to mmproxy itself;
# a socket-activated process keeps no socket it does not use; with standard
# error closed, every process logs through syslog.

load helpers/common

# The -v 2 summary line of the connection from client $1 (a regex).
conn_line() {
	wait_for_log "$MMPROXY_LOG" "conn client=$1 " 10 || return 1
	grep -E "conn client=$1 " "$MMPROXY_LOG" | tail -n 1
}

# The one connection process under listener $1 (waits for it).
connection_child() {
	wait_until 10 eval '[ -n "$(children_of '"$1"')" ]' || return 1
	children_of "$1" | head -n 1
}

# Fails when grep -E REGEX FILE matches.
refute_log() {
	if grep -E -- "$1" "$2" >&2; then
		echo "# matched, and should not have: $1" >&2
		return 1
	fi
}

# ---- resets and vanished peers

@test "a client that half-closes and resets half a second later has its reset passed on to the backend at once" {
	backend_start hold "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	# The client's FIN reaches the backend; the backend (hold) answers
	# nothing, so mmproxy wants nothing more from the client's socket.
	run ppclient -2 -s 192.0.2.80:40000 -n 100 --half-close --reset-after-ms 500 -w 10 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = aborted ]

	# The backend saw the bytes and the FIN, then the reset, without having
	# to send anything to find out.
	wait_for_log "$BACKEND_LOG" "^peer=192\.0\.2\.80:40000 .* bytes=100 .*end=eof$" 5
	wait_for_log "$BACKEND_LOG" "^peer=192\.0\.2\.80:40000 .*end=reset$" 3
	[[ $(conn_line '192\.0\.2\.80:40000') == *" end=client-reset" ]]
}

@test "--idle-timeout 1 ends a connection that moved no byte for a second, with end=idle-timeout" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --idle-timeout 1

	run ppclient -2 -s 192.0.2.82:40000 -n 10 --hold-ms 8000 -w 10 "127.0.0.1:$(port 0)"
	echo "$output"
	# Ended by mmproxy well before the client's 8 s hold was over.
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 10 ]
	[ "$(field ms "$output")" -lt 6000 ]
	[[ $(conn_line '192\.0\.2\.82:40000') == *" end=idle-timeout" ]]
}

@test "--idle-timeout counts from the last byte, so a connection moving a byte every 0.6 s stays up" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --idle-timeout 2

	mkfifo "$TEST_DIR/payload"
	start_bg client "$PPCLIENT" -2 -s 192.0.2.83:40000 -f "$TEST_DIR/payload" --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	local client_pid=$BG_PID i
	exec 5<>"$TEST_DIR/payload"
	# One byte every 0.6 s for 3.6 s: never 2 s without one. (A pace,
	# not a wait for readiness.)
	for i in 1 2 3 4 5 6; do
		printf x >&5
		sleep 0.6
	done
	exec 5>&-
	wait_for_exit "$client_pid" 10
	summary=$(cat "$TEST_DIR/client.out")
	echo "$summary"
	[ "$(field end "$summary")" = eof ]
	[ "$(field received "$summary")" = 6 ]
	[[ $(conn_line '192\.0\.2\.83:40000') == *" end=done" ]]
}

@test "without --idle-timeout a connection quiet for 3 s stays open" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -2 -s 192.0.2.84:40000 -n 10 --hold-ms 3000 --half-close -w 10 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 10 ]
	[[ $(conn_line '192\.0\.2\.84:40000') == *" end=done" ]]
}

# keepalive_timers CLIENT LISTEN_PORT BACKEND_PORT: mmproxy's end of the
# load balancer's connection on LISTEN_PORT, then its end of the connection
# from CLIENT to the backend, as `ss -o` shows them (timers included).
keepalive_timers() {
	wait_until 5 eval "[ -n \"\$(netns_exec ss -tnoH state established '( dport = :$3 )' | grep -F '$1')\" ]" ||
		return 1
	netns_exec ss -tnoH state established "( sport = :$2 )"
	netns_exec ss -tnoH state established "( dport = :$3 )" | grep -F "$1"
}

@test "the load balancer's socket has TCP keepalive on, and the backend's unless the backend is on loopback" {
	# A second backend address that is not loopback, on lo, with the
	# README's rule for its replies.
	netns_exec ip addr add 192.0.2.200/32 dev lo
	netns_exec ip rule add from 192.0.2.200 iif lo table 123
	backend_start echo "$(port 1)" -t "192.0.2.200:$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	start_bg mmproxy-far "$MMPROXY" -l "127.0.0.1:$(port 2)" -4 "192.0.2.200:$(port 1)" \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 2
	wait_for_listen "$(port 2)"

	start_bg near "$PPCLIENT" -2 -s 192.0.2.85:40000 -n 10 --hold-ms 5000 -w 10 \
		"127.0.0.1:$(port 0)"
	start_bg far "$PPCLIENT" -2 -s 192.0.2.86:40000 -n 10 --hold-ms 5000 -w 10 \
		"127.0.0.1:$(port 2)"
	local near far
	near=$(keepalive_timers 192.0.2.85:40000 "$(port 0)" "$(port 1)")
	far=$(keepalive_timers 192.0.2.86:40000 "$(port 2)" "$(port 1)")
	echo "# loopback backend: $near"
	echo "# 192.0.2.200 backend: $far"
	[ "$(grep -c 'timer:(keepalive,' <<<"$near")" = 1 ]
	[[ $(head -n 1 <<<"$near") == *"timer:(keepalive,"* ]]
	[ "$(grep -c 'timer:(keepalive,' <<<"$far")" = 2 ]
	[[ $(tail -n 1 <<<"$far") == *"192.0.2.200:$(port 1)"*"timer:(keepalive,"* ]]
}

# ---- the header's transport

# v2 PROXY headers with DGRAM transport (raw, so nothing fixes them up).
V2_SIG=0d0a0d0a000d0a515549540a
V2_INET_DGRAM=${V2_SIG}2112000cc00002557f0000019c4001bb           # 192.0.2.85:40000 -> 127.0.0.1:443
V2_INET6_DGRAM=${V2_SIG}21220024$(printf '20010db8%024x%032x' 0x85 1)9c4001bb  # [2001:db8::85]:40000 -> [::1]:443
V2_INET_UNSPEC=${V2_SIG}2110000cc00002557f0000019c4001bb          # transport UNSPEC

# refused_transport HEX: the header is refused with a log line naming the
# transport, and the backend never sees a connection.
refused_transport() {
	run ppclient --header-hex "$1" -t hello -w 10 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "lb=127\.0\.0\.1:[0-9]+: .*transport is not STREAM" 5
	wait_for_log "$MMPROXY_LOG" "conn .*end=bad-header$" 5
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "on a TCP connection, a v2 header with DGRAM transport and an IPv4 client is refused" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	refused_transport "$V2_INET_DGRAM"
}

@test "on a TCP connection, a v2 header with DGRAM transport and an IPv6 client is refused" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	refused_transport "$V2_INET6_DGRAM"
}

@test "on a TCP connection, a v2 header with UNSPEC transport and an IPv4 client is refused" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	refused_transport "$V2_INET_UNSPEC"
}

# ---- trust: no --allowed-subnets

@test "--dynamic-destination without --allowed-subnets stops mmproxy with exit 2, and nothing listens" {
	run netns_exec timeout 5 "$MMPROXY" -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" --dynamic-destination
	echo "$output"
	[ "$status" -eq 2 ]
	[ "$(wc -l <<<"$output")" -eq 1 ]
	[[ $output == *"--dynamic-destination"*"--allowed-subnets"* ]]
	_is_not_listening "$(port 0)"
}

@test "without --allowed-subnets the listener warns at start-up at -v 1, and says nothing with -q" {
	mmproxy_start -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" -v 1
	wait_for_listen "$(port 0)"
	wait_for_log "$MMPROXY_LOG" "no --allowed-subnets: any peer may send PROXY headers and choose a source address"
	[ "$(grep -c 'no --allowed-subnets' "$MMPROXY_LOG")" -eq 1 ]
	kill_recorded

	mmproxy_start -l "127.0.0.1:$(port 2)" -4 "127.0.0.1:$(port 1)" -q
	wait_for_listen "$(port 2)"
	[ ! -s "$MMPROXY_LOG" ]
}

@test "without --allowed-subnets a UDP proxy warns at start-up at -v 1" {
	mmproxy_start -p udp -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" -v 1
	wait_for_listen "$(port 0)" udp
	wait_for_log "$MMPROXY_LOG" "no --allowed-subnets: any peer may send PROXY headers and choose a source address"
}

@test "without --allowed-subnets each socket-activated connection process warns once at -v 1" {
	backend_start echo "$(port 1)"
	activate_start "127.0.0.1:$(port 0)" --accept -- -4 "127.0.0.1:$(port 1)" -v 1
	run ppclient -2 -s 192.0.2.86:40000 -t hello --half-close -w 10 "127.0.0.1:$(port 0)"
	[ "$(field end "$output")" = eof ]
	run ppclient -2 -s 192.0.2.86:40001 -t hello --half-close -w 10 "127.0.0.1:$(port 0)"
	[ "$(field end "$output")" = eof ]
	wait_until 5 eval '[ "$(grep -c "no --allowed-subnets" "$MMPROXY_LOG")" -ge 2 ]'
	# One line per process: two processes, two lines, each its own PID.
	[ "$(grep 'no --allowed-subnets' "$MMPROXY_LOG" | grep -oE 'mmproxy\[[0-9]+\]' | sort -u | wc -l)" -eq 2 ]
	[ "$(grep -c 'no --allowed-subnets' "$MMPROXY_LOG")" -eq 2 ]
}

# ---- trust: --dynamic-destination loops

@test "--dynamic-destination refuses a header naming mmproxy's own listening address and port" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --dynamic-destination

	run ppclient -2 -s 192.0.2.87:40000 -d "127.0.0.1:$(port 0)" -t hello -w 10 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	wait_for_log "$MMPROXY_LOG" "destination 127\.0\.0\.1:$(port 0) is mmproxy's own" 5
	[[ $(conn_line '192\.0\.2\.87:40000') == *" end=loop" ]]
	# Only the one connection: mmproxy never connected to itself.
	[ "$(grep -c ' conn ' "$MMPROXY_LOG")" -eq 1 ]

	# Another of this host's addresses on the same port loops just the same.
	run ppclient -2 -s 192.0.2.87:40001 -d "127.0.0.2:$(port 0)" -t hello -w 10 "127.0.0.1:$(port 0)"
	[[ $(conn_line '192\.0\.2\.87:40001') == *" end=loop" ]]

	# The backend's port on this host is fine.
	run ppclient -2 -s 192.0.2.87:40002 -d "127.0.0.1:$(port 1)" -t hello --half-close -w 10 \
		"127.0.0.1:$(port 0)"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 5 ]
}

# ---- descriptors

@test "with two sockets passed (LISTEN_FDS=2), the second is closed in every process" {
	backend_start hold "$(port 1)"
	start_bg activate systemd-socket-activate -l "127.0.0.1:$(port 0)" -l "127.0.0.1:$(port 2)" \
		"$MMPROXY" -4 "127.0.0.1:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" -v 2
	MMPROXY_LOG=$TEST_DIR/activate.err
	wait_for_listen "$(port 0)"

	start_bg client "$PPCLIENT" -2 -s 192.0.2.88:40000 -n 10 --hold-ms 5000 -w 10 \
		"127.0.0.1:$(port 0)"
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	local child
	child=$(connection_child "$(cat "$TEST_DIR/activate.pid")")
	echo "# connection process $child: $(ls -l /proc/"$child"/fd | tail -n +2)"
	# A listening socket lives while any process holds it: nobody does.
	wait_for_no_listen "$(port 2)"
}

# A syslog for one process tree: in a mount namespace of its own, /dev is
# a fresh tmpfs holding /dev/null and a /dev/log socket whose datagrams
# are appended, one a line, to $SYSLOG_FILE; then CMD runs.
start_with_private_syslog() {
	SYSLOG_FILE=$TEST_DIR/syslog
	: >"$SYSLOG_FILE"
	start_bg syslogged unshare -m bash -c '
		mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 || exit 1
		/usr/bin/python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(\"/dev/log\")
with open(sys.argv[1], \"ab\", 0) as f:
    while True:
        f.write(s.recv(65536) + b\"\\n\")
" "$0" &
		for i in $(seq 250); do [ -S /dev/log ] && break; sleep 0.02; done
		exec "$@"' "$SYSLOG_FILE" "$@"
}

@test "without --allowed-subnets each inetd-style connection process warns once, through syslog" {
	backend_start echo "$(port 1)"
	# Standard error closed, as it is useless under xinetd: mmproxy then
	# logs through syslog.
	start_with_private_syslog systemd-socket-activate --accept --inetd -l "127.0.0.1:$(port 0)" \
		bash -c 'exec 2>&- "$@"' mmproxy "$MMPROXY" --inetd -4 "127.0.0.1:$(port 1)" -v 1
	wait_for_listen "$(port 0)"
	run ppclient -2 -s 192.0.2.89:40000 -t hello --half-close -w 10 "127.0.0.1:$(port 0)"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 5 ]
	run ppclient -2 -s 192.0.2.89:40001 -t hello --half-close -w 10 "127.0.0.1:$(port 0)"
	[ "$(field end "$output")" = eof ]
	wait_until 5 eval '[ "$(grep -c "no --allowed-subnets" "$SYSLOG_FILE")" -ge 2 ]'
	cat "$SYSLOG_FILE"
	# Two processes, one line each, tagged mmproxy[PID] by syslog(3).
	[ "$(grep -c 'no --allowed-subnets' "$SYSLOG_FILE")" -eq 2 ]
	[ "$(grep 'no --allowed-subnets' "$SYSLOG_FILE" | grep -oE 'mmproxy\[[0-9]+\]' | sort -u | wc -l)" -eq 2 ]
}

@test "a listener started with standard error closed logs its connections through syslog, from the connection processes" {
	backend_start echo "$(port 1)"
	start_with_private_syslog bash -c 'exec 2>&- "$@"' mmproxy "$MMPROXY" \
		-l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" -v 2
	wait_for_listen "$(port 0)"
	run ppclient -2 -s 192.0.2.91:40000 -t hello --half-close -w 10 "127.0.0.1:$(port 0)"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 5 ]
	wait_for_log "$SYSLOG_FILE" "conn client=192\.0\.2\.91:40000 .*end=done"
	cat "$SYSLOG_FILE"
	# Logged by a connection process, whose parent is the listener.
	pid=$(grep -E "conn client=192\.0\.2\.91:40000 " "$SYSLOG_FILE" | grep -oE 'mmproxy\[[0-9]+\]' | tr -dc 0-9)
	listener=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status")
	[ "$(readlink "/proc/$listener/exe")" = "$(readlink -f "$MMPROXY")" ]
	[ "$(readlink "/proc/$(awk '/^PPid:/ {print $2}' "/proc/$listener/status")/exe")" != "$(readlink -f "$MMPROXY")" ]
}
