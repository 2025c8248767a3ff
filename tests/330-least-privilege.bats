#!/usr/bin/env bats
# Least privilege, seen from outside: /proc/PID/status of each kind of
# mmproxy process while it works. A listener and the UDP process keep
# CAP_NET_ADMIN and CAP_NET_BIND_SERVICE and nothing else; a connection
# process, once its last spoofed connection is made, keeps no capability at
# all, nor does the --metrics endpoint; each has no_new_privs and a seccomp
# filter; --user changes the user; --do-not-sandbox turns all of it off and says so. (tests/050-sandbox.bats
# shows what the filters refuse.)

load helpers/common

# CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12).
KEPT=0000000000001400
NONE=0000000000000000

# status_of PID NAME: the first value of NAME in /proc/PID/status.
status_of() {
	awk -v name="$2:" '$1 == name {print $2; exit}' "/proc/$1/status"
}

# assert_sandboxed PID CAPS [UID]: CapEff and CapPrm are CAPS, the bounding
# set holds no more than the two kept bits, no_new_privs and a filter are on.
assert_sandboxed() {
	local pid=$1 caps=$2 uid=${3:-0}
	echo "# pid $pid: $(grep -E '^(Uid|Cap(Eff|Prm|Bnd)|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tr '\t\n' '  ')"
	[ "$(status_of "$pid" CapEff)" = "$caps" ]
	[ "$(status_of "$pid" CapPrm)" = "$caps" ]
	[ "$(status_of "$pid" CapBnd)" = "$KEPT" ]
	[ "$(status_of "$pid" NoNewPrivs)" = 1 ]
	[ "$(status_of "$pid" Seccomp)" = 2 ]
	[ "$(status_of "$pid" Uid)" = "$uid" ]
}

# hold_connection LPORT CLIENT: a connection through mmproxy that has
# relayed 1000 bytes both ways and stays open until release_connection.
hold_connection() {
	HOLD_FILE=$TEST_DIR/release
	start_bg client "$PPCLIENT" -s "$2" -n 1000 --hold-until "$HOLD_FILE" --half-close \
		-o "$TEST_DIR/received" -w 30 "127.0.0.1:$1"
	CLIENT_PID=$BG_PID
	wait_until 10 eval '[ "$(stat -c %s "$TEST_DIR/received" 2>/dev/null)" = 1000 ]'
}

# ... and nothing the sandbox refused was logged on the way.
release_connection() {
	touch "$HOLD_FILE"
	wait_for_exit "$CLIENT_PID" 10
	[ "$(field end "$(cat "$TEST_DIR/client.out")")" = eof ]
	if grep -h 'not permitted' "$TEST_DIR"/*.err; then
		echo "# a call was refused" >&2
		return 1
	fi
}

# The one process PID started, and it must be mmproxy.
only_child() {
	local children
	children=$(children_of "$1")
	[ "$(echo "$children" | wc -l)" = 1 ] || return 1
	[ "$(cat "/proc/$children/comm")" = "$(basename "$MMPROXY" | cut -c1-15)" ] || return 1
	echo "$children"
}

# The one child of PID serving a connection (a pool's spares wait beside it).
only_busy_child() {
	local busy
	busy=$(busy_children_of "$1")
	[ -n "$busy" ] && [ "$(echo "$busy" | wc -l)" = 1 ] || return 1
	echo "$busy"
}

# The child of PID named NAME (comm), exactly one.
child_named() {
	local pid found=
	for pid in $(children_of "$1"); do
		if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then
			[ -z "$found" ] || return 1
			found=$pid
		fi
	done
	[ -n "$found" ] && echo "$found"
}

@test "a listener keeps only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, with no_new_privs and a filter" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	assert_sandboxed "$MMPROXY_PID" "$KEPT"
}

@test "a connection process in the middle of its last relay holds no capability" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --connections-per-process 1
	hold_connection "$(port 0)" 192.0.2.40:40000
	child=$(only_child "$MMPROXY_PID")
	assert_sandboxed "$child" "$NONE"
	release_connection
	wait_for_file_lines "$BACKEND_LOG" 1
	grep -q '^peer=192.0.2.40:40000 ' "$BACKEND_LOG"
}

@test "a pool process in the middle of a relay that is not its last keeps only the two capabilities and a filter" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	hold_connection "$(port 0)" 192.0.2.48:40000
	wait_until 10 eval '[ -n "$(busy_children_of "$MMPROXY_PID")" ]'
	child=$(only_busy_child "$MMPROXY_PID")
	assert_sandboxed "$child" "$KEPT"
	release_connection
	wait_for_file_lines "$BACKEND_LOG" 1
	grep -q '^peer=192.0.2.48:40000 ' "$BACKEND_LOG"
}

@test "an inetd-mode process in the middle of its relay holds no capability" {
	backend_start echo "$(port 1)"
	activate_start "127.0.0.1:$(port 0)" --accept --inetd -- --inetd -4 "127.0.0.1:$(port 1)" \
		-6 "[::1]:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" -v 2
	hold_connection "$(port 0)" 192.0.2.41:40000
	child=$(only_child "$ACTIVATE_PID")
	assert_sandboxed "$child" "$NONE"
	release_connection
	wait_for_file_lines "$BACKEND_LOG" 1
	grep -q '^peer=192.0.2.41:40000 ' "$BACKEND_LOG"
}

@test "a client's reset reaches the backend as a reset under the relay's narrowed filter" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	run ppclient -s 192.0.2.47:40000 -n 100000 --reset -w 10 "127.0.0.1:$(port 0)"
	echo "$output"
	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	echo "backend: $line"
	[ "$(field peer "$line")" = 192.0.2.47:40000 ]
	[ "$(field end "$line")" = reset ]
	wait_for_log "$MMPROXY_LOG" 'conn client=192\.0\.2\.47:40000 .*end=client-reset'
}

@test "the UDP process keeps only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, with no_new_privs and a filter" {
	backend_start echo "$(port 1)" -u "127.0.0.1:$(port 1)"
	wait_for_listen "$(port 1)" udp
	mmproxy_start -p udp -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" \
		-6 "[::1]:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" -v 2
	wait_for_listen "$(port 0)" udp
	run netns_exec "$REPO/tests/helpers/udpclient" -s 192.0.2.42:40000 -n 10 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$status" -eq 0 ]
	assert_sandboxed "$MMPROXY_PID" "$KEPT"
}

@test "the metrics endpoint holds no capability, with no_new_privs and a filter, and still answers" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --metrics "127.0.0.1:$(port 2)"
	wait_for_listen "$(port 2)"
	endpoint=$(child_named "$MMPROXY_PID" mmproxy-metrics)
	assert_sandboxed "$endpoint" "$NONE"
	run netns_exec curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
		"http://127.0.0.1:$(port 2)/metrics"
	echo "$output"
	[ "$output" = 200 ]
	[ -d "/proc/$endpoint" ]
}

@test "under the listener's filter, SIGHUP reads the allowed-subnets file again" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 ::1/128 10.0.0.0/8
	kill -HUP "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" "reload: $ALLOWED_SUBNETS: 3 entries in force"
	! grep -q 'not permitted' "$MMPROXY_LOG"
}

@test "with --user, the listener and its connection processes run as that user and still spoof" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --user nobody \
		--connections-per-process 1
	assert_sandboxed "$MMPROXY_PID" "$KEPT" "$(id -u nobody)"
	hold_connection "$(port 0)" 192.0.2.43:40000
	assert_sandboxed "$(only_child "$MMPROXY_PID")" "$NONE" "$(id -u nobody)"
	release_connection
	wait_for_file_lines "$BACKEND_LOG" 1
	grep -q '^peer=192.0.2.43:40000 ' "$BACKEND_LOG"
	! grep -q 'running as root' "$MMPROXY_LOG"
}

@test "a numeric --user with no passwd entry runs as that uid" {
	! getent passwd 4242 >/dev/null
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --user 4242
	assert_sandboxed "$MMPROXY_PID" "$KEPT" 4242
	[ "$(status_of "$MMPROXY_PID" Gid)" = 4242 ]
	[ "$(status_of "$MMPROXY_PID" Groups)" = "" ]
}

@test "under xinetd, the shipped entry's --user runs each connection as that user" {
	local user
	user=$(grep -E '^[[:space:]]*server_args' "$REPO/systemd/mmproxy.xinetd" |
		grep -oE -- '--user [^ ]+' | cut -d' ' -f2)
	[ -n "$user" ]
	backend_start echo "$(port 1)"
	conf=$TEST_DIR/xinetd.conf
	printf 'defaults\n{\n\tlog_type = FILE %s\n}\n' "$TEST_DIR/xinetd.log" >"$conf"
	sed -E -e "s#^([[:space:]]*port[[:space:]]*=).*#\1 $(port 0)#" \
		-e "s#^([[:space:]]*bind[[:space:]]*=).*#\1 127.0.0.1#" \
		-e "s#^([[:space:]]*server[[:space:]]*=).*#\1 $MMPROXY#" \
		-e "s#127\.0\.0\.1:443#127.0.0.1:$(port 1)#; s#\[::1\]:443#[::1]:$(port 1)#" \
		-e "s#/etc/mmproxy/allowed-subnets\.txt#$ALLOWED_SUBNETS#" \
		"$REPO/systemd/mmproxy.xinetd" >>"$conf"
	grep -q "server_args.*--user $user .*--allowed-subnets $ALLOWED_SUBNETS" "$conf"
	start_bg xinetd xinetd -f "$conf" -dontfork -pidfile "$TEST_DIR/xinetd.pid"
	xinetd_pid=$BG_PID
	wait_for_listen "$(port 0)"
	hold_connection "$(port 0)" 192.0.2.44:40000
	assert_sandboxed "$(only_child "$xinetd_pid")" "$NONE" "$(id -u "$user")"
	release_connection
	wait_for_file_lines "$BACKEND_LOG" 1
	grep -q '^peer=192.0.2.44:40000 ' "$BACKEND_LOG"
}

@test "started as root without --user, a listener says so once" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	run ppclient -s 192.0.2.45:40000 -n 10 --half-close "127.0.0.1:$(port 0)"
	run ppclient -s 192.0.2.45:40001 -n 10 --half-close "127.0.0.1:$(port 0)"
	wait_for_file_lines "$BACKEND_LOG" 2
	[ "$(grep -c 'running as root' "$MMPROXY_LOG")" = 1 ]
}

@test "--do-not-sandbox keeps every capability and installs no filter, and says so" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --do-not-sandbox
	grep -q -- '--do-not-sandbox: every capability kept and no system call filter' "$MMPROXY_LOG"
	hold_connection "$(port 0)" 192.0.2.46:40000
	child=$(only_busy_child "$MMPROXY_PID")
	for pid in "$MMPROXY_PID" "$child"; do
		[ "$(status_of "$pid" Seccomp)" = 0 ]
		[ "$(status_of "$pid" NoNewPrivs)" = 0 ]
		[ "$(status_of "$pid" CapEff)" = "$(status_of $$ CapEff)" ]
	done
	release_connection
}

@test "--user needs mmproxy started as root: otherwise it stops with exit 1 and says why" {
	run netns_exec setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$MMPROXY" -l "127.0.0.1:$(port 0)" --user 4242
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"mmproxy: dropping privileges: setgroups: Operation not permitted (--user needs mmproxy started as root)"* ]]
}

@test "an unknown --user is a usage error" {
	run netns_exec "$MMPROXY" -l "127.0.0.1:$(port 0)" --user no-such-user-here
	echo "$output"
	[ "$status" -eq 2 ]
	[[ "$output" == *"mmproxy: --user no-such-user-here: no such user in /etc/passwd"* ]]
}
