#!/usr/bin/env bats
# The pool of connection processes (the default for -l and for a listening
# socket from systemd): a process serves one connection after another and
# keeps nothing of the last; --connections-per-process bounds how many; the
# pool grows for a burst and shrinks after it; a refused load balancer costs
# no work (with --connections-per-process 1, no fork); SIGTERM, a listener
# that is gone and a SIGHUP reload let established connections finish and
# take no new ones into old processes; running out of descriptors in a
# waiting process only pauses it; an idle connection stays at two pages in a
# process that served others before; ps and pgrep -f find every process by
# its command line.

load helpers/common

# The pid that logged the summary line of the connection from client $1.
pid_of_connection() {
	grep -E "client=$1 " "$MMPROXY_LOG" | sed -nE 's/^mmproxy\[([0-9]+)\]: conn .*/\1/p'
}

# relays CLIENT: one connection from CLIENT with 1000 bytes and a
# half-close, all echoed back, and its summary line logged.
relays() {
	run ppclient -2 -s "$1" -n 1000 --half-close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 1000 ]
	wait_for_log "$MMPROXY_LOG" "conn client=$1 .*end=(done|backend-closed)$"
}

# Each process's descriptors: "TARGET TARGET..." for PID $1.
fd_targets() {
	local fd
	for fd in /proc/"$1"/fd/*; do readlink "$fd"; done | sort | tr '\n' ' '
}

# The mmproxy processes in the test's namespace.
mmproxy_processes() {
	local pid
	for pid in $(ip netns pids "$NETNS"); do
		[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$MMPROXY")" ] && echo "$pid"
	done
	return 0
}

# hold_one_connection CLIENT: a connection whose payload comes from fd 5
# (a FIFO), so that the test decides when it ends; CLIENT_PID is its client.
hold_one_connection() {
	mkfifo "$TEST_DIR/payload"
	start_bg client "$PPCLIENT" -1 -s "$1" -f "$TEST_DIR/payload" --half-close -w 60 \
		"127.0.0.1:$(port 0)"
	CLIENT_PID=$BG_PID
	exec 5<>"$TEST_DIR/payload"
	head -c 50000 /dev/urandom >&5
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
}

# finish_held_connection: the rest of the payload, EOF, and every byte back.
finish_held_connection() {
	head -c 50000 /dev/urandom >&5
	exec 5>&-
	wait_for_exit "$CLIENT_PID" 30
	summary=$(cat "$TEST_DIR/client.out")
	echo "$summary"
	[ "$(field end "$summary")" = eof ]
	[ "$(field received "$summary")" = 100000 ]
	[ "$(field crc_received "$summary")" = "$(field crc_sent "$summary")" ]
}

@test "one connection process serves connection after connection and holds the same descriptors before and after each" {
	[[ $MMPROXY != *-asan ]] || skip "a sanitizer build keeps descriptors of its own"
	backend_start echo "$(port 1)"
	# One process in all, so every connection goes to it.
	mmproxy_start_listener "$(port 0)" "$(port 1)" --max-connections 1
	wait_until 10 eval '[ "$(children_of "$MMPROXY_PID" | wc -l)" -eq 1 ]'
	child=$(children_of "$MMPROXY_PID")
	before=$(fd_targets "$child")
	echo "before: $before"

	relays 192.0.2.80:40000
	# A bulk one, which makes the relay take pipes for splice().
	run ppclient -1 -s 192.0.2.80:40001 -n 3000000 --half-close -w 30 "127.0.0.1:$(port 0)"
	[ "$(field received "$output")" = 3000000 ]
	# One the backend refuses (nothing listens there any more).
	kill "$BACKEND_PID"
	wait_for_no_listen "$(port 1)"
	run ppclient -1 -s 192.0.2.80:40002 -t hello -w 20 "127.0.0.1:$(port 0)"
	wait_for_log "$MMPROXY_LOG" "client=192\.0\.2\.80:40002 .*end=backend-refused"
	backend_start echo "$(port 1)"
	relays 192.0.2.80:40003

	for port in 40000 40001 40002 40003; do
		[ "$(pid_of_connection "192\.0\.2\.80:$port")" = "$child" ]
	done
	wait_until 10 no_busy_children "$MMPROXY_PID"
	after=$(fd_targets "$child")
	echo "after:  $after"
	[ "$before" = "$after" ]
}

@test "with --connections-per-process 3, a process serves three connections and then a fresh one takes over" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --max-connections 1 --connections-per-process 3
	for i in 1 2 3 4 5 6 7; do
		relays "192.0.2.81:4000$i"
	done
	pids=$(for i in 1 2 3 4 5 6 7; do pid_of_connection "192\.0\.2\.81:4000$i"; done)
	echo "$pids"
	[ "$(sed -n 1,3p <<<"$pids" | sort -u | wc -l)" -eq 1 ]
	[ "$(sed -n 4,6p <<<"$pids" | sort -u | wc -l)" -eq 1 ]
	[ "$(sort -u <<<"$pids" | wc -l)" -eq 3 ]
	# The first one is gone, and the third serves on.
	! is_alive "$(sed -n 1p <<<"$pids")"
	[ "$(children_of "$MMPROXY_PID")" = "$(sed -n 7p <<<"$pids")" ]
}

@test "with --connections-per-process 1, the listener refuses a load balancer outside the allowed subnets without forking" {
	backend_start echo "$(port 1)"
	write_allowed_subnets "$ALLOWED_SUBNETS" 198.51.100.0/24
	mmproxy_start_listener "$(port 0)" "$(port 1)" --connections-per-process 1
	run ppclient -1 -s 192.0.2.82:40000 -t hello -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "^mmproxy\[$MMPROXY_PID\]: refused lb=127\.0\.0\.1:[0-9]+: not in allowed subnets"
	wait_for_log "$MMPROXY_LOG" "^mmproxy\[$MMPROXY_PID\]: conn .*end=not-allowed$"
	[ -z "$(children_of "$MMPROXY_PID")" ]
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "in the pool, a load balancer outside the allowed subnets is refused by a waiting process before any other work" {
	backend_start echo "$(port 1)"
	write_allowed_subnets "$ALLOWED_SUBNETS" 198.51.100.0/24
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	run ppclient -1 -s 192.0.2.83:40000 -t hello -w 20 "127.0.0.1:$(port 0)"
	wait_for_log "$MMPROXY_LOG" "refused lb=127\.0\.0\.1:[0-9]+: not in allowed subnets"
	line=$(grep 'refused lb=' "$MMPROXY_LOG")
	[[ $line != "mmproxy[$MMPROXY_PID]"* ]]
	! grep -q 'invalid PROXY header\|header' "$MMPROXY_LOG"
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "bursts of 40 connections at once are served as the pool grows, and the spares above --max-spare leave after each" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --min-spare 2 --max-spare 4
	wait_until 10 eval '[ "$(children_of "$MMPROXY_PID" | wc -l)" -eq 2 ]'

	# The second burst meets a pool that shrank: it must grow again.
	for burst in 1 2 3; do
		rm -f "$TEST_DIR/release"
		start_bg held "$PPCLIENT" -c 40 -P 40 -s "192.0.2.84:${burst}0000" -t hi \
			--hold-until "$TEST_DIR/release" --half-close -w 60 "127.0.0.1:$(port 0)"
		held_pid=$BG_PID
		wait_for_file_lines "$BACKEND_ACCEPTS" $((burst * 40))
		[ "$(busy_children_of "$MMPROXY_PID" | wc -l)" -eq 40 ]
		touch "$TEST_DIR/release"
		wait_for_exit "$held_pid" 30
		grep -q '^connections=40 ok=40 failed=0$' "$TEST_DIR/held.out"
		# Once a second the listener asks the spares above 4 to go.
		wait_until 10 eval '[ "$(children_of "$MMPROXY_PID" | wc -l)" -le 4 ]'
	done
	relays 192.0.2.84:40000
}

@test "on SIGTERM the waiting processes exit at once and a busy one finishes its connection and takes no other" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --min-spare 4
	hold_one_connection 192.0.2.85:40000
	busy=$(busy_children_of "$MMPROXY_PID")
	[ -n "$busy" ]
	wait_until 10 eval '[ "$(children_of "$MMPROXY_PID" | wc -l)" -ge 5 ]'

	kill -TERM "$MMPROXY_PID"
	wait_for_exit "$MMPROXY_PID" 5
	wait_for_no_listen "$(port 0)"
	# Only the busy process is left.
	wait_until 5 eval '[ "$(mmproxy_processes)" = "$busy" ]'

	finish_held_connection
	wait_for_exit "$busy" 10
	[ -z "$(mmproxy_processes)" ]
}

@test "a connection process whose listener is gone finishes its connection and takes no other" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --min-spare 4
	hold_one_connection 192.0.2.86:40000
	busy=$(busy_children_of "$MMPROXY_PID")
	[ -n "$busy" ]

	kill -KILL "$MMPROXY_PID"
	wait_for_exit "$MMPROXY_PID" 5
	wait_until 5 eval '[ "$(mmproxy_processes)" = "$busy" ]'
	wait_for_no_listen "$(port 0)"

	finish_held_connection
	wait_for_exit "$busy" 10
}

@test "SIGHUP reloads the allowed subnets: a bad file keeps the set in force, a good one applies to new connections, an established one carries on" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --min-spare 3
	hold_one_connection 192.0.2.87:40000
	busy=$(busy_children_of "$MMPROXY_PID")
	wait_until 10 eval '[ "$(children_of "$MMPROXY_PID" | wc -l)" -ge 4 ]'
	old_spares=$(children_of "$MMPROXY_PID" | grep -vx "$busy")

	# A bad file: one line naming file, line and reason; nothing changes.
	printf '127.0.0.1/32\n10.0.0.0/33\n' >"$ALLOWED_SUBNETS"
	kill -HUP "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" "$ALLOWED_SUBNETS:2: \"10\.0\.0\.0/33\": .*; keeping the 2 entries in force"
	relays 192.0.2.87:40001
	for pid in $old_spares; do is_alive "$pid"; done

	# A good one without this host: new connections are refused.
	write_allowed_subnets "$ALLOWED_SUBNETS" 198.51.100.0/24
	kill -HUP "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" "reload: $ALLOWED_SUBNETS: 1 entries in force"
	run ppclient -1 -s 192.0.2.87:40002 -t hello -w 20 "127.0.0.1:$(port 0)"
	wait_for_log "$MMPROXY_LOG" "refused lb=127\.0\.0\.1:[0-9]+: not in allowed subnets"
	# The old spares are gone; the busy one still relays, to its end.
	for pid in $old_spares; do wait_for_exit "$pid" 5; done
	is_alive "$busy"
	finish_held_connection
	wait_for_exit "$busy" 10
	is_alive "$MMPROXY_PID"
}

@test "ps and pgrep -f find the listener and its connection processes by their command line, and a connection process shows its real argv and environment" {
	backend_start echo "$(port 1)"
	export MMPROXY_TEST_MARK="pool naming $BATS_TEST_NUMBER"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --min-spare 2
	hold_one_connection 192.0.2.90:40000
	child=$(busy_children_of "$MMPROXY_PID")
	[ -n "$child" ]
	expected="$MMPROXY -l 127.0.0.1:$(port 0) -4 127.0.0.1:$(port 1) -6 [::1]:$(port 1) --allowed-subnets $ALLOWED_SUBNETS -v 2 --min-spare 2"

	echo "# ps: $(ps -o args= -p "$child")"
	[ "$(ps -o args= -p "$child")" = "$expected" ]
	[ "$(ps -o args= -p "$MMPROXY_PID")" = "$expected" ]
	[ "$(tr '\0' ' ' <"/proc/$child/cmdline")" = "$expected " ]
	tr '\0' '\n' <"/proc/$child/environ" | grep -qx "MMPROXY_TEST_MARK=$MMPROXY_TEST_MARK"
	# Every process of this mmproxy, and nothing else, by its command line.
	found=$(pgrep -f -- "-l 127\.0\.0\.1:$(port 0) " | sort -n)
	echo "# pgrep: $(echo $found); ours: $(mmproxy_processes | sort -n | tr '\n' ' ')"
	[ "$found" = "$(mmproxy_processes | sort -n)" ]
	grep -qx "$child" <<<"$found"
	grep -qx "$MMPROXY_PID" <<<"$found"
	[ "$(wc -l <<<"$found")" -ge 3 ]
	finish_held_connection
}

# idle_pages_after_served VERBOSITY: four processes serve ten connections
# each, then each holds an idle one; none may own more than two pages. A
# process gives back the stack pages below its loop only after a connection
# that logged (-v 2 logs every connection, -v 1 none of these), so both ways
# are checked.
idle_pages_after_served() {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --max-connections 4 --min-spare 4 -v "$1"
	run ppclient -c 40 -P 4 -q -s 192.0.2.88:10000 -n 5000 --half-close -w 30 "127.0.0.1:$(port 0)"
	[ "$output" = "connections=40 ok=40 failed=0" ]
	wait_until 10 no_busy_children "$MMPROXY_PID"
	served=$(children_of "$MMPROXY_PID")

	start_bg held "$PPCLIENT" -c 4 -P 4 -s 192.0.2.88:20000 -t hi \
		--hold-until "$TEST_DIR/release" --half-close -w 60 "127.0.0.1:$(port 0)"
	held_pid=$BG_PID
	wait_for_file_lines "$BACKEND_ACCEPTS" 44
	local child dirty worst=0
	for child in $(busy_children_of "$MMPROXY_PID"); do
		grep -qx "$child" <<<"$served"
		dirty=$(awk '/^Private_Dirty:/ {print $2}' "/proc/$child/smaps_rollup")
		echo "# child $child: Private_Dirty ${dirty} kB"
		[ "$dirty" -gt "$worst" ] && worst=$dirty
	done
	touch "$TEST_DIR/release"
	wait_for_exit "$held_pid" 30
	[ "$worst" -le 8 ]
}

@test "an idle connection held by a process that served connections before owns at most two pages, after connections that logged" {
	[[ $MMPROXY != *-asan ]] || skip "a sanitizer build has shadow memory of its own"
	idle_pages_after_served 2
}

@test "an idle connection held by a process that served connections before owns at most two pages, after connections that logged nothing" {
	[[ $MMPROXY != *-asan ]] || skip "a sanitizer build has shadow memory of its own"
	idle_pages_after_served 1
}

@test "waiting processes that run out of file descriptors pause, say so, and serve again afterwards" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --max-connections 2 --min-spare 2
	wait_until 10 eval '[ "$(children_of "$MMPROXY_PID" | wc -l)" -eq 2 ]'
	old_spares=$(children_of "$MMPROXY_PID")
	# New spares inherit a limit that leaves them no descriptor for
	# accept(): EMFILE on every try. (The listener opens nothing more.)
	prlimit --pid "$MMPROXY_PID" --nofile="$(lowest_free_fd "$(head -1 <<<"$old_spares")"):1024"
	kill -USR2 $old_spares
	for pid in $old_spares; do wait_for_exit "$pid" 5; done
	start_bg starved "$PPCLIENT" -c 3 -P 3 -s 192.0.2.89:10000 -t hi --half-close -w 60 \
		"127.0.0.1:$(port 0)"
	starved_pid=$BG_PID
	wait_for_log "$MMPROXY_LOG" "accept: Too many open files; pausing accept for 100 ms"
	child=$(children_of "$MMPROXY_PID" | head -1)
	ticks=$(cpu_ticks_during "$child" 1)
	# Paused, not spinning on accept(): well under half a CPU for that second.
	[ "$ticks" -lt 50 ]
	[ ! -s "$BACKEND_ACCEPTS" ]

	for pid in "$MMPROXY_PID" $(children_of "$MMPROXY_PID"); do
		prlimit --pid "$pid" --nofile=1024:1024
	done
	wait_for_exit "$starved_pid" 30
	cat "$TEST_DIR/starved.out"
	grep -q '^connections=3 ok=3 failed=0$' "$TEST_DIR/starved.out"
	is_alive "$MMPROXY_PID"
}
