#!/usr/bin/env bats
# Robustness of the listener and its connection processes: many and faulty
# connections leave nothing behind, SIGTERM spares established connections,
# running out of file descriptors or reaching --max-connections only pauses
# accepting, and broken v2 headers are refused without harm. All load is
# bounded in count and time. tests/310-pool.bats has the pool's own rules.

load helpers/common

V2_SIGNATURE=0d0a0d0a000d0a515549540a
# 192.0.2.60:40000 -> 127.0.0.1:443, the 12 bytes of a v2 TCP4 address block.
V2_TCP4_ADDRESSES=c000023c7f0000019c4001bb

# Every connection child gone, only the listener left.
no_children() {
	[ -z "$(children_of "$MMPROXY_PID")" ]
}

# Each process's descriptors, one line a process: "PID: TARGET TARGET...".
fd_targets() {
	local pid fd
	for pid in "$@"; do
		echo "$pid: $(for fd in /proc/"$pid"/fd/*; do readlink "$fd"; done | sort | tr '\n' ' ')"
	done
}

# A plain connection through mmproxy works end to end.
assert_relay_works() {
	local client=$1 output
	output=$(ppclient -1 -s "$client" -n 10000 --half-close -w 20 "127.0.0.1:$(port 0)")
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 10000 ]
	wait_for_log "$BACKEND_LOG" "^peer=$client .* bytes=10000 "
}

@test "after 1,000 connections, some of them faulty, the listener and its waiting processes hold the fds they started with" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --header-timeout 30
	target="127.0.0.1:$(port 0)"
	fds_at_start=$(fd_count "$MMPROXY_PID")
	wait_until 10 eval '[ -n "$(children_of "$MMPROXY_PID")" ]'
	# What every waiting process holds, its PID aside.
	spare_fds=$(fd_targets "$(children_of "$MMPROXY_PID" | head -1)" | cut -d: -f2)

	# 600 good ones, 50 at a time.
	run ppclient -c 600 -P 50 -q -s 192.0.2.20:10000 -n 2000 --half-close -w 30 "$target"
	echo "$output"
	[ "$output" = "connections=600 ok=600 failed=0" ]

	# 100 that send garbage instead of a header.
	run ppclient -c 100 -P 50 --garbage 64 -w 30 "$target"
	[ "$(grep -c 'end=timeout' <<<"$output")" -eq 0 ]
	[ "$(grep -cE 'end=(eof|reset)' <<<"$output")" -eq 100 ]

	# 100 that reset the connection in the middle of the stream.
	run ppclient -c 100 -P 50 -q -s 192.0.2.21:10000 -n 200000 --hold-ms 20 --reset -w 30 "$target"
	echo "$output"
	[[ $output == *" failed=0" ]]

	# 100 silent ones, killed while mmproxy waits for their header.
	start_bg silent "$PPCLIENT" -c 100 -P 100 --no-header --hold-ms 60000 -w 60 "$target"
	silent_pid=$BG_PID
	wait_until 20 eval '[ "$(children_of "$MMPROXY_PID" | wc -l)" -ge 100 ]'
	kill_tree "$silent_pid" KILL

	# 100 while the backend is down.
	kill "$BACKEND_PID"
	wait_for_no_listen "$(port 1)"
	run ppclient -c 100 -P 20 -s 192.0.2.22:10000 -t hello -w 30 "$target"
	[ "$(grep -cE 'end=(eof|reset)' <<<"$output")" -eq 100 ]
	wait_until 10 eval '[ "$(grep -c "end=backend-refused" "$MMPROXY_LOG")" -eq 100 ]'

	wait_until 30 no_busy_children "$MMPROXY_PID"
	is_alive "$MMPROXY_PID"
	wait_until 10 eval '[ "$(fd_count "$MMPROXY_PID")" -eq "$fds_at_start" ]'
	# Processes that served hundreds of connections hold what they held
	# before the first one.
	fd_targets $(children_of "$MMPROXY_PID")
	[ -z "$(fd_targets $(children_of "$MMPROXY_PID") | cut -d: -f2 | grep -vxF "$spare_fds")" ]

	backend_start echo "$(port 1)"
	assert_relay_works 192.0.2.23:40000
}

@test "SIGTERM stops the listener promptly while an established connection keeps relaying to its end" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	mkfifo "$TEST_DIR/payload"
	start_bg client "$PPCLIENT" -1 -s 192.0.2.30:40000 -f "$TEST_DIR/payload" --half-close -w 60 \
		"127.0.0.1:$(port 0)"
	client_pid=$BG_PID
	# Opened after the client started, so the client holds no writer itself;
	# read-write, so opening never blocks. Closing it is the payload's EOF.
	exec 5<>"$TEST_DIR/payload"

	head -c 100000 /dev/urandom >&5
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	grep -q '^accept peer=192.0.2.30:40000 ' "$BACKEND_ACCEPTS"

	kill -TERM "$MMPROXY_PID"
	wait_for_exit "$MMPROXY_PID" 5
	wait_for_no_listen "$(port 0)"

	# The connection outlives its listener: more data, both ways.
	head -c 100000 /dev/urandom >&5
	exec 5>&-
	wait_for_exit "$client_pid" 30
	summary=$(cat "$TEST_DIR/client.out")
	echo "$summary"
	[ "$(field end "$summary")" = eof ]
	[ "$(field sent "$summary")" = 200000 ]
	[ "$(field received "$summary")" = 200000 ]
	[ "$(field crc_received "$summary")" = "$(field crc_sent "$summary")" ]
	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	[ "$(field bytes "$line")" = 200000 ]
	[ "$(field crc "$line")" = "$(field crc_sent "$summary")" ]
}

@test "with --connections-per-process 1, the listener survives running out of file descriptors and serves again afterwards" {
	backend_start echo "$(port 1)"
	start_bg mmproxy prlimit --nofile=32 "$MMPROXY" -l "127.0.0.1:$(port 0)" \
		-4 "127.0.0.1:$(port 1)" -6 "[::1]:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" -v 2 \
		--connections-per-process 1
	MMPROXY_PID=$BG_PID
	MMPROXY_LOG=$TEST_DIR/mmproxy.err
	wait_for_listen "$(port 0)"
	# prlimit exec()s mmproxy: the recorded PID is mmproxy's own.
	[ "$(readlink "/proc/$MMPROXY_PID/exe")" = "$(readlink -f "$MMPROXY")" ]
	target="127.0.0.1:$(port 0)"

	# More connections held open at once than it has descriptors.
	start_bg held "$PPCLIENT" -c 64 -P 64 -s 192.0.2.31:10000 -t hi \
		--hold-until "$TEST_DIR/release" --half-close -w 60 "$target"
	held_pid=$BG_PID
	wait_until 30 eval '[ "$(wc -l <"$BACKEND_ACCEPTS")" -ge 64 ]'
	touch "$TEST_DIR/release"
	wait_for_exit "$held_pid" 30
	grep -q '^connections=64 ok=64 failed=0$' "$TEST_DIR/held.out"
	wait_until 20 no_children

	# Now leave it no descriptor at all for accept(): EMFILE on every try.
	free_fd=$(lowest_free_fd "$MMPROXY_PID")
	prlimit --pid "$MMPROXY_PID" --nofile="$free_fd:32" # soft limit only
	rm -f "$TEST_DIR/release"
	start_bg starved "$PPCLIENT" -c 5 -P 5 -s 192.0.2.32:10000 -t hi --half-close -w 60 "$target"
	starved_pid=$BG_PID
	wait_for_log "$MMPROXY_LOG" "accept: Too many open files"
	ticks=$(cpu_ticks "$MMPROXY_PID")
	sleep 1 # an observation window, not a readiness wait
	is_alive "$MMPROXY_PID"
	# Paused, not spinning on accept(): well under half a CPU for that second.
	[ $(($(cpu_ticks "$MMPROXY_PID") - ticks)) -lt 50 ]

	# Descriptors back: the waiting connections are served, and new ones too.
	prlimit --pid "$MMPROXY_PID" --nofile=32:32
	wait_for_exit "$starved_pid" 30
	cat "$TEST_DIR/starved.out"
	grep -q '^connections=5 ok=5 failed=0$' "$TEST_DIR/starved.out"
	assert_relay_works 192.0.2.33:40000
	is_alive "$MMPROXY_PID"
}

@test "--max-connections 5 lets 5 held connections through and serves the rest as the first ones end" {
	backend_start sink "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --max-connections 5

	start_bg held "$PPCLIENT" -c 10 -P 10 -s 192.0.2.40:10000 -t hi \
		--hold-until "$TEST_DIR/release" --half-close -w 60 "127.0.0.1:$(port 0)"
	held_pid=$BG_PID
	wait_for_file_lines "$BACKEND_ACCEPTS" 5
	sleep 0.5 # an observation window: no sixth connection may arrive
	[ "$(wc -l <"$BACKEND_ACCEPTS")" -eq 5 ]
	[ "$(children_of "$MMPROXY_PID" | wc -l)" -eq 5 ]
	[ "$(grep -c 'connection limit 5 reached' "$MMPROXY_LOG")" -eq 1 ]

	touch "$TEST_DIR/release"
	wait_for_exit "$held_pid" 30
	cat "$TEST_DIR/held.out"
	grep -q '^connections=10 ok=10 failed=0$' "$TEST_DIR/held.out"
	wait_for_file_lines "$BACKEND_LOG" 10
	[ "$(grep -c ' end=eof$' "$BACKEND_LOG")" -eq 10 ]
}

@test "an idle relayed connection's process owns at most two pages (its stack page and its copy of libc's data)" {
	[[ $MMPROXY != *-asan ]] || skip "a sanitizer build has shadow memory of its own"
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	start_bg held "$PPCLIENT" -c 20 -P 20 -s 192.0.2.50:10000 -t hi \
		--hold-until "$TEST_DIR/release" --half-close -w 60 "127.0.0.1:$(port 0)"
	held_pid=$BG_PID
	wait_for_file_lines "$BACKEND_ACCEPTS" 20
	local child dirty worst=0
	for child in $(children_of "$MMPROXY_PID"); do
		dirty=$(awk '/^Private_Dirty:/ {print $2}' "/proc/$child/smaps_rollup")
		echo "# child $child: Private_Dirty ${dirty} kB"
		[ "$dirty" -gt "$worst" ] && worst=$dirty
	done
	touch "$TEST_DIR/release"
	wait_for_exit "$held_pid" 30
	[ "$worst" -le 8 ]
}

# mapping_of ADDRESS MAPS_FILE: the /proc/PID/maps line holding ADDRESS
# (a number), or nothing.
mapping_of() {
	local range start end
	while read -r range _; do
		start=$((0x${range%-*}))
		end=$((0x${range#*-}))
		if ((start <= $1 && $1 < end)); then
			grep -m1 "^$range " "$2"
			return 0
		fi
	done <"$2"
}

# The address AT_EXECFN (31) has in /proc/PID/auxv: the program's name, at
# the top of the stack the kernel set up.
execfn_address() {
	od -An -t u8 -w16 -v "/proc/$1/auxv" | awk '$1 == 31 {print $2; exit}'
}

@test "a connection process runs on a stack just below its heap, above a 1 MiB guard, and has no copy of the original stack" {
	[[ $MMPROXY != *-asan ]] || skip "a sanitizer build keeps the stack it started on"
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	start_bg held "$PPCLIENT" -1 -s 192.0.2.51:10000 -t hi \
		--hold-until "$TEST_DIR/release" --half-close -w 60 "127.0.0.1:$(port 0)"
	held_pid=$BG_PID
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	child=$(busy_children_of "$MMPROXY_PID" | head -n 1)
	cp "/proc/$child/maps" "$TEST_DIR/child.maps"
	cp "/proc/$MMPROXY_PID/maps" "$TEST_DIR/listener.maps"
	touch "$TEST_DIR/release"
	wait_for_exit "$held_pid" 30
	cat "$TEST_DIR/child.maps"

	# Guard, stack, one free page, heap: three lines in a row.
	run grep -B2 ' \[heap\]$' "$TEST_DIR/child.maps"
	[ "${#lines[@]}" -eq 3 ]
	read -r guard guard_perms _ <<<"${lines[0]}"
	read -r stack stack_perms _ <<<"${lines[1]}"
	read -r heap _ <<<"${lines[2]}"
	[[ ${lines[1]} == *' [stack]' ]]
	[ "$guard_perms" = ---p ]
	[ "$stack_perms" = rw-p ]
	[ $((0x${guard#*-})) -eq $((0x${stack%-*})) ]
	[ $((0x${guard#*-} - 0x${guard%-*})) -eq $((1024 * 1024)) ]
	[ $((0x${stack#*-} - 0x${stack%-*})) -ge $((256 * 1024)) ]
	[ $((0x${stack#*-} + 4096)) -eq $((0x${heap%-*})) ]

	# The kernel's stack, where the program's name still is, is the
	# listener's alone.
	execfn=$(execfn_address "$MMPROXY_PID")
	[ -n "$execfn" ]
	[ -n "$(mapping_of "$execfn" "$TEST_DIR/listener.maps")" ]
	[ -z "$(mapping_of "$execfn" "$TEST_DIR/child.maps")" ]
}

@test "a v2 header with a wrong CRC32C is refused and never reaches the backend" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -2 --bad-crc32c -s 192.0.2.50:40000 -t hello -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "lb=127\.0\.0\.1:[0-9]+: invalid PROXY header: .*CRC"
	wait_for_log "$MMPROXY_LOG" "conn .*end=bad-header$"
	[ ! -s "$BACKEND_ACCEPTS" ]

	# The same header with the right checksum is accepted.
	run ppclient -2 --crc32c -s 192.0.2.50:40001 -t hello --half-close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	grep -q '^accept peer=192.0.2.50:40001 ' "$BACKEND_ACCEPTS"
}

@test "malformed v2 headers (length or a TLV past the end) are refused and the listener stays up" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	target="127.0.0.1:$(port 0)"

	# A NOOP TLV claiming 16 value bytes, in a header that ends right after it.
	run ppclient --header-hex "$V2_SIGNATURE 21 11 000f $V2_TCP4_ADDRESSES 04 0010" -t hello \
		-w 20 "$target"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	wait_for_log "$MMPROXY_LOG" "invalid PROXY header: .*TLV"

	# A length too short for the TCP4 address block.
	run ppclient --header-hex "$V2_SIGNATURE 21 11 0008 c000023c7f000001" -t hello -w 20 "$target"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	[ "$(grep -c 'invalid PROXY header' "$MMPROXY_LOG")" -eq 2 ]

	# A length of 255 with only the address block sent, then EOF.
	run ppclient --header-hex "$V2_SIGNATURE 21 11 00ff $V2_TCP4_ADDRESSES" --half-close \
		-w 20 "$target"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	# Refused at the EOF, not after the 5 s header timeout.
	[ "$(field ms "$output")" -lt 4000 ]
	wait_until 10 eval '[ "$(grep -c "conn client=- " "$MMPROXY_LOG")" -eq 3 ]'
	# Each refusal has its own line naming the load balancer.
	[ "$(grep -cE '^mmproxy\[[0-9]+\]: lb=127\.0\.0\.1:[0-9]+: ' "$MMPROXY_LOG")" -eq 3 ]

	[ ! -s "$BACKEND_ACCEPTS" ]
	is_alive "$MMPROXY_PID"
	assert_relay_works 192.0.2.61:40000
}

@test "waiting for the rest of a header split over slow segments costs no CPU" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --header-timeout 10
	# A 28-byte v2 header in 4 pieces, 800 ms apart: 2.4 s of waiting.
	start_bg slow "$PPCLIENT" -2 -s 192.0.2.70:40000 --split 7 --split-delay 800 \
		-t hello --half-close -w 20 "127.0.0.1:$(port 0)"
	slow_pid=$BG_PID
	wait_until 5 eval '[ -n "$(busy_children_of "$MMPROXY_PID")" ]'
	child=$(busy_children_of "$MMPROXY_PID")
	ticks=$(cpu_ticks_during "$child" 1.5)
	echo "child $child used $ticks ticks while waiting"
	# A poll() that kept waking on the bytes already there would burn ~150.
	[ "$ticks" -le 5 ]
	wait_for_exit "$slow_pid"
	wait_for_log "$BACKEND_LOG" "^peer=192\.0\.2\.70:40000 .* bytes=5 "
}
