#!/usr/bin/env bats
# Launch modes: the same spoofed connection must work however mmproxy is
# started. Under xinetd (the shipped systemd/mmproxy.xinetd entry, with this
# test's ports and paths), under systemd-socket-activate as systemd would start
# mmproxy@.service (connection on fd 0) or a socket-activated service
# (LISTEN_FDS=1: a connection, or a listening socket, on fd 3), and with no
# mode option at all when fd 0 is a connected socket. Every test checks what
# the backend saw: the client named in the PROXY header as the peer, and the
# exact bytes.

load helpers/common

# xinetd wants an absolute server path (MMPROXY=./mmproxy-asan is allowed).
case "$MMPROXY" in /*) ;; *) MMPROXY="$REPO/${MMPROXY#./}" ;; esac

# Under xinetd fd 2 is the client: the mmproxy.xinetd entry, with this test's
# listen port, backend port, allow-list and binary, and -v 2 so that a log
# line written to the wrong place would show up at the client. xinetd's own
# log goes to $TEST_DIR/xinetd.log.
# The entry's --user NAME (it starts mmproxy as root), kept in the tests'.
entry_user() {
	grep -E '^[[:space:]]*server_args' "$REPO/systemd/mmproxy.xinetd" |
		grep -oE -- '--user [^ ]+'
}

xinetd_start() {
	local listen_port=$1 backend_port=$2 conf=$TEST_DIR/xinetd.conf
	shift 2
	printf 'defaults\n{\n\tlog_type = FILE %s\n}\n' "$TEST_DIR/xinetd.log" >"$conf"
	sed -E \
		-e "s#^([[:space:]]*port[[:space:]]*=).*#\1 $listen_port#" \
		-e "s#^([[:space:]]*bind[[:space:]]*=).*#\1 127.0.0.1#" \
		-e "s#^([[:space:]]*server[[:space:]]*=).*#\1 $MMPROXY#" \
		-e "s#^([[:space:]]*server_args[[:space:]]*=).*#\1 $(entry_user) --inetd -4 127.0.0.1:$backend_port -6 [::1]:$backend_port --allowed-subnets $ALLOWED_SUBNETS -v 2 $*#" \
		"$REPO/systemd/mmproxy.xinetd" >>"$conf"
	# The entry itself must not have changed shape under us.
	grep -q "server_args.*--allowed-subnets $ALLOWED_SUBNETS" "$conf"
	grep -Eq "^[[:space:]]*wait[[:space:]]*= no" "$conf"
	start_bg xinetd xinetd -f "$conf" -dontfork -pidfile "$TEST_DIR/xinetd.pid"
	wait_for_listen "$listen_port"
}

# The usual target and allow-list for a backend on $1, -v 2.
target_args() {
	echo "-4 127.0.0.1:$1 -6 [::1]:$1 --allowed-subnets $ALLOWED_SUBNETS -v 2"
}

# relay_ok [PPCLIENT OPTIONS...] ADDR:PORT: one connection with 1000 bytes
# and a half-close; the echo backend's bytes all come back.
relay_ok() {
	run ppclient -n 1000 --half-close -w 10 "$@"
	echo "ppclient: $output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]
	[ "$(field sent "$output")" = 1000 ]
	[ "$(field received "$output")" = 1000 ]
	[ "$(field crc_received "$output")" = "$(field crc_sent "$output")" ]
	CLIENT_CRC=$(field crc_sent "$output")
}

# backend_saw PEER [N]: the backend's Nth line (default the last) is a whole
# connection from PEER that carried the client's bytes.
backend_saw() {
	local line
	wait_for_file_lines "$BACKEND_LOG" "${2:-1}"
	line=$(sed -n "${2:-\$}p" "$BACKEND_LOG")
	echo "backend: $line"
	[ "$(field peer "$line")" = "$1" ]
	[ "$(field bytes "$line")" = 1000 ]
	[ "$(field crc "$line")" = "$CLIENT_CRC" ]
	[ "$(field end "$line")" = eof ]
}

# ---- xinetd

@test "under xinetd, a v1 client reaches the backend from its own address" {
	backend_start echo "$(port 1)"
	xinetd_start "$(port 0)" "$(port 1)"
	relay_ok -1 -s 192.0.2.10:40000 "127.0.0.1:$(port 0)"
	backend_saw 192.0.2.10:40000
}

@test "under xinetd, a v2 client reaches the backend from its own address" {
	backend_start echo "$(port 1)"
	xinetd_start "$(port 0)" "$(port 1)"
	relay_ok -2 -s 198.51.100.7:40001 "127.0.0.1:$(port 0)"
	backend_saw 198.51.100.7:40001
}

@test "under xinetd, an IPv6 client reaches the IPv6 backend from its own address" {
	backend_start echo "$(port 1)"
	xinetd_start "$(port 0)" "$(port 1)"
	relay_ok -2 -s '[2001:db8::10]:40002' "127.0.0.1:$(port 0)"
	backend_saw '[2001:db8::10]:40002'
	[ "$(field local "$(tail -n 1 "$BACKEND_LOG")")" = "[::1]:$(port 1)" ]
}

@test "under xinetd with -v 2, the client receives the backend's bytes and nothing else" {
	backend_start sink "$(port 1)" -R 5000
	xinetd_start "$(port 0)" "$(port 1)"
	run ppclient -2 -n 1000 --half-close -w 10 -o "$TEST_DIR/received" "127.0.0.1:$(port 0)"
	echo "ppclient: $output"
	[ "$(field end "$output")" = eof ]
	wait_for_file_lines "$BACKEND_LOG" 1
	local line
	line=$(tail -n 1 "$BACKEND_LOG")
	echo "backend: $line"
	[ "$(field sent "$line")" = 5000 ]
	[ "$(field received "$output")" = 5000 ]
	[ "$(field crc_received "$output")" = "$(field crc_sent "$line")" ]
	! grep -aq mmproxy "$TEST_DIR/received" || false
}

@test "under xinetd, a load balancer outside the allowed subnets gets no bytes back" {
	write_allowed_subnets "$ALLOWED_SUBNETS" 10.0.0.0/8
	backend_start echo "$(port 1)"
	xinetd_start "$(port 0)" "$(port 1)"
	run ppclient -1 -n 1000 --half-close -w 10 -o "$TEST_DIR/received" "127.0.0.1:$(port 0)"
	echo "ppclient: $output"
	[[ "$(field end "$output")" =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]
	[ ! -s "$TEST_DIR/received" ]
	# mmproxy exits after refusing; the backend never heard of it.
	wait_until 5 bash -c "! pgrep -P \$(cat '$TEST_DIR/xinetd.pid') >/dev/null"
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "under xinetd, a bad header gets no bytes back, not even an error message" {
	backend_start echo "$(port 1)"
	xinetd_start "$(port 0)" "$(port 1)"
	run ppclient --garbage 64 -n 100 --half-close -w 10 -o "$TEST_DIR/received" "127.0.0.1:$(port 0)"
	echo "ppclient: $output"
	[[ "$(field end "$output")" =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]
	[ ! -s "$TEST_DIR/received" ]
	[ ! -s "$BACKEND_ACCEPTS" ]
}

# ---- systemd socket activation (systemd-socket-activate stands in for PID 1)

@test "with the connection on fd 0 and --inetd (mmproxy@.service), the client reaches the backend" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)")
	relay_ok -1 -s 192.0.2.20:40010 "127.0.0.1:$(port 0)"
	backend_saw 192.0.2.20:40010
	wait_for_log "$MMPROXY_LOG" 'conn client=192\.0\.2\.20:40010 .*end=done'
}

@test "with a connection on fd 0 and no mode option, mmproxy picks inetd mode itself" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- $(target_args "$(port 1)")
	relay_ok -2 -s 192.0.2.21:40011 "127.0.0.1:$(port 0)"
	backend_saw 192.0.2.21:40011
}

@test "with a connected socket on fd 3 (LISTEN_FDS=1, Accept=yes), the client reaches the backend" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept -- $(target_args "$(port 1)")
	relay_ok -2 -s 192.0.2.22:40012 "127.0.0.1:$(port 0)"
	backend_saw 192.0.2.22:40012
	wait_for_log "$MMPROXY_LOG" 'conn client=192\.0\.2\.22:40012 .*end=done'
}

@test "with a listening socket on fd 3 (LISTEN_FDS=1), mmproxy serves one connection after another" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" -- $(target_args "$(port 1)")
	relay_ok -1 -s 192.0.2.23:40013 "127.0.0.1:$(port 0)"
	backend_saw 192.0.2.23:40013 1
	relay_ok -2 -s 192.0.2.24:40014 "127.0.0.1:$(port 0)"
	backend_saw 192.0.2.24:40014 2
	relay_ok -2 -s '[2001:db8::24]:40015' "127.0.0.1:$(port 0)"
	backend_saw '[2001:db8::24]:40015' 3
	# Still the one process systemd started, and still listening.
	is_alive "$(cat "$TEST_DIR/activate.pid")"
	wait_for_listen "$(port 0)"
}

@test "an IPv6 load balancer and an IPv6 client work through socket activation" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "[::1]:$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)")
	relay_ok -2 -s '[2001:db8::30]:40020' "[::1]:$(port 0)"
	backend_saw '[2001:db8::30]:40020'
	[ "$(field local "$(tail -n 1 "$BACKEND_LOG")")" = "[::1]:$(port 1)" ]
}

@test "on a dual-stack socket like ListenStream=8443, an IPv4 load balancer matches its IPv4 subnet" {
	# systemd's ListenStream=PORT listens on [::]:PORT; IPv4 load balancers
	# then arrive as ::ffff:127.0.0.1, and 127.0.0.1/32 must still allow them.
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)")
	relay_ok -1 -s 192.0.2.40:40030 "127.0.0.1:$(port 0)"
	backend_saw 192.0.2.40:40030
}

# ---- exit status per connection: systemd keeps a failed unit for each
# mmproxy@.service instance that exits non-zero, so a refusal or a load
# balancer that goes away must end with 0 (systemd-socket-activate reports
# "Child PID died with code N").

# children_exited_ok N: N children ended, every one with status 0.
children_exited_ok() {
	wait_until 10 bash -c "[ \$(grep -c 'died with code' '$TEST_DIR/activate.err') -ge $1 ]"
	echo "exits:"
	grep 'died with code' "$TEST_DIR/activate.err"
	! grep -q 'died with code [^0]' "$TEST_DIR/activate.err" || false
	! grep -q 'killed by signal\|dumped core' "$TEST_DIR/activate.err" || false
}

@test "with Accept=yes, a refused load balancer ends mmproxy with status 0 and one log line" {
	write_allowed_subnets "$ALLOWED_SUBNETS" 10.0.0.0/8
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)")
	run ppclient -1 -n 100 --half-close -w 10 "127.0.0.1:$(port 0)"
	echo "ppclient: $output"
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" 'refused lb=127\.0\.0\.1:[0-9]+: not in allowed subnets'
	children_exited_ok 1
	[ ! -s "$BACKEND_ACCEPTS" ]
}

_exits_at_least() {
	[ "$(grep -c 'died with code' "$TEST_DIR/activate.err")" -ge "$1" ]
}

# reset_check END_REGEX PPCLIENT_OPTIONS...: one connection that sends its
# header (or none) and resets at once, as haproxy's checks do; its mmproxy
# ends with status 0 after logging exactly one -v 2 line, whose end= matches.
reset_check() {
	local expected=$1 exits lines line
	shift
	exits=$(grep -c 'died with code' "$TEST_DIR/activate.err" || true)
	lines=$(grep -Ec '^mmproxy\[[0-9]+\]: ' "$MMPROXY_LOG" || true)
	ppclient "$@" --reset -w 5 "127.0.0.1:$(port 0)"
	wait_until 10 _exits_at_least $((exits + 1))
	echo "after ppclient $*:"
	grep -E '^mmproxy\[[0-9]+\]: |died with code' "$MMPROXY_LOG" | tail -n +$((lines + exits + 1)) || true
	grep -q 'died with code 0$' <(grep 'died with code' "$TEST_DIR/activate.err" | tail -n 1)
	[ "$(grep -Ec '^mmproxy\[[0-9]+\]: ' "$MMPROXY_LOG")" -eq $((lines + 1)) ]
	line=$(grep -E '^mmproxy\[[0-9]+\]: ' "$MMPROXY_LOG" | tail -n 1)
	[[ "$line" =~ \ conn\ .*\ end=($expected)$ ]]
}

@test "with Accept=yes, a v2 LOCAL check that resets at once exits 0 and is logged as health" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)")
	reset_check health -2 --local
	reset_check health -2 --local
}

@test "with Accept=yes, a v1 UNKNOWN check that resets at once exits 0 and is logged as health" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)")
	reset_check health -1 --unknown
	reset_check health -1 --unknown
}

@test "with Accept=yes, a connection that resets before any header exits 0 with one log line" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)")
	reset_check 'health|client-reset' --no-header
	reset_check 'health|client-reset' --no-header
}

@test "with Accept=yes, a header that never comes ends mmproxy with status 0 after the timeout" {
	backend_start echo "$(port 1)"
	# shellcheck disable=SC2046
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- --inetd $(target_args "$(port 1)") --header-timeout 1
	run ppclient --no-header --hold-ms 3000 -w 10 "127.0.0.1:$(port 0)"
	echo "ppclient: $output"
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" 'conn client=- lb=127\.0\.0\.1:[0-9]+ .*end=header-timeout'
	children_exited_ok 1
	[ ! -s "$BACKEND_ACCEPTS" ]
}
