#!/usr/bin/env bats
# SIGHUP in the long-lived TCP modes: the allowed subnets file is read
# again, all or nothing, for the connections accepted after it; the ones
# already running are not touched. The second load balancer is 127.0.0.2
# (ppclient -b), which the default allowed list (127.0.0.1/32, ::1/128)
# does not hold.

load helpers/common

LB2=127.0.0.2

# reload_and_wait REGEX: SIGHUP to mmproxy, then its next "reload:" line,
# which must match REGEX.
reload_and_wait() {
	local before line
	before=$(grep -c ': reload: ' "$MMPROXY_LOG" || true)
	kill -HUP "$MMPROXY_PID"
	wait_until 10 eval '[ "$(grep -c ": reload: " "$MMPROXY_LOG")" -gt '"$before"' ]'
	line=$(grep ': reload: ' "$MMPROXY_LOG" | tail -n 1)
	echo "# $line"
	[[ $line =~ $1 ]]
}

# admitted LB CLIENT: a connection from load balancer LB naming CLIENT
# reaches the backend and comes back whole.
admitted() {
	local output
	output=$(ppclient -b "$1" -s "$2" -n 1000 --half-close -w 10 "127.0.0.1:$(port 0)")
	echo "# $output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 1000 ]
	wait_for_log "$BACKEND_LOG" "^peer=$2 .* bytes=1000 "
}

# refused LB CLIENT: that connection is refused as not allowed, and the
# backend never sees CLIENT.
refused() {
	ppclient -b "$1" -s "$2" -n 1000 --half-close -w 10 "127.0.0.1:$(port 0)" || true
	wait_for_log "$MMPROXY_LOG" "refused lb=$1:[0-9]+: not in allowed subnets"
	wait_for_log "$MMPROXY_LOG" " lb=$1:[0-9]+ .* end=not-allowed$"
	! grep -q "^peer=$2 " "$BACKEND_LOG"
}

@test "a reload that adds a load balancer admits it" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	refused "$LB2" 192.0.2.30:40000
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 ::1/128 "$LB2/32"
	reload_and_wait "reload: $ALLOWED_SUBNETS: 3 entries in force$"
	admitted "$LB2" 192.0.2.31:40000
	admitted 127.0.0.1 192.0.2.32:40000
}

@test "a reload that removes a load balancer refuses it" {
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 "$LB2/32"
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	admitted "$LB2" 192.0.2.33:40000
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32
	reload_and_wait "reload: $ALLOWED_SUBNETS: 1 entries in force$"
	refused "$LB2" 192.0.2.34:40000
	admitted 127.0.0.1 192.0.2.35:40000
}

@test "a broken file changes nothing, and the log names its line and reason" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 "$LB2/32" 10.0.0.0/33
	reload_and_wait "reload: $ALLOWED_SUBNETS:3: \"10.0.0.0/33\": prefix length over 32; keeping the 2 entries in force$"
	refused "$LB2" 192.0.2.36:40000
	admitted 127.0.0.1 192.0.2.37:40000
	# A file that is gone changes nothing either.
	rm "$ALLOWED_SUBNETS"
	reload_and_wait "reload: $ALLOWED_SUBNETS: No such file or directory; keeping the 2 entries in force$"
	admitted 127.0.0.1 192.0.2.38:40000
	kill -USR1 "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" ': metrics .* reloads_ok=0 reloads_failed=2 subnet_entries=2 '
	is_alive "$MMPROXY_PID"
}

@test "a connection open across a reload that removes its load balancer moves every byte" {
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 "$LB2/32"
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	mkfifo "$TEST_DIR/payload"
	start_bg client "$PPCLIENT" -b "$LB2" -s 192.0.2.39:40000 -f "$TEST_DIR/payload" \
		--half-close -w 30 "127.0.0.1:$(port 0)"
	exec 5<>"$TEST_DIR/payload"
	head -c 300000 /dev/urandom >"$TEST_DIR/first"
	head -c 300000 /dev/urandom >"$TEST_DIR/second"
	cat "$TEST_DIR/first" >&5
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32
	reload_and_wait "1 entries in force$"
	refused "$LB2" 192.0.2.40:40000
	cat "$TEST_DIR/second" >&5
	exec 5>&-
	wait_for_exit "$(cat "$TEST_DIR/client.pid")" 20
	output=$(cat "$TEST_DIR/client.out")
	echo "# $output"
	[ "$(field end "$output")" = eof ]
	[ "$(field sent "$output")" = 600000 ]
	[ "$(field received "$output")" = 600000 ]
	[ "$(field crc_received "$output")" = "$(field crc_sent "$output")" ]
	wait_for_log "$BACKEND_LOG" "^peer=192.0.2.39:40000 .* bytes=600000 crc=$(field crc_sent "$output") "
	wait_for_log "$MMPROXY_LOG" "client=192.0.2.39:40000 .* up=600000 down=600000 .* end=done$"
}

@test "with --listeners 2, a reload reaches every accept process" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --listeners 2
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 "$LB2/32"
	reload_and_wait "3 entries in force$|2 entries in force$"
	# Both accept processes log their reload; the first alone counts it.
	wait_until 10 eval '[ "$(grep -c ": reload: .*: 2 entries in force$" "$MMPROXY_LOG")" -eq 2 ]'
	# The kernel spreads these among both processes: all are admitted.
	run ppclient -c 40 -P 4 -q -b "$LB2" -s 192.0.2.41:40000 -n 100 --half-close -w 30 "127.0.0.1:$(port 0)"
	[ "$output" = "connections=40 ok=40 failed=0" ]
	[ "$(grep -c 'end=not-allowed' "$MMPROXY_LOG")" -eq 0 ]
	kill -USR1 "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" ': metrics .* reloads_ok=1 reloads_failed=0 subnet_entries=2 '
}

@test "a socket-activated listening socket reloads on SIGHUP" {
	backend_start echo "$(port 1)"
	activate_start "127.0.0.1:$(port 0)" -- -4 "127.0.0.1:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" -v 2
	MMPROXY_PID=$ACTIVATE_PID
	refused "$LB2" 192.0.2.42:40000
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 "$LB2/32"
	reload_and_wait "2 entries in force$"
	admitted "$LB2" 192.0.2.43:40000
}

@test "a reload without --allowed-subnets changes nothing and says so" {
	backend_start echo "$(port 1)"
	mmproxy_start -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" -v 2
	wait_for_listen "$(port 0)"
	reload_and_wait "reload: no --allowed-subnets file to read$"
	admitted "$LB2" 192.0.2.44:40000
}

@test "SIGHUP and SIGUSR1 to a connection's own process do not end it" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	start_bg client "$PPCLIENT" -s 192.0.2.45:40000 -n 1000 --hold-until "$TEST_DIR/go" \
		--half-close -w 20 "127.0.0.1:$(port 0)"
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	child=$(children_of "$MMPROXY_PID" | head -n 1)
	[ -n "$child" ]
	kill -HUP "$child"
	kill -USR1 "$child"
	touch "$TEST_DIR/go"
	wait_for_exit "$(cat "$TEST_DIR/client.pid")" 20
	[ "$(field end "$(cat "$TEST_DIR/client.out")")" = eof ]
	[ "$(field received "$(cat "$TEST_DIR/client.out")")" = 1000 ]
}
