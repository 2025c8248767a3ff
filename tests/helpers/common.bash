# tests/helpers/common.bash: shared setup for mmproxy's end-to-end bats files.
#
# Each bats file runs in its own private network namespace (named
# mmproxy-test-<bats root pid>-<file name>), with lo up and the policy routing
# from the README, so spoofed clients (192.0.2.0/24, 2001:db8::/32) come back
# to lo. Every process is started inside it through start_bg and recorded,
# and teardown kills only what was recorded (and what those processes forked),
# by PID, even after a failure.
#
# Usage in a bats file:
#   load helpers/common          # gives setup_file/teardown_file/setup/teardown
#   @test "a sentence a user would agree with" {
#       backend_start echo "$(port 1)"              # BACKEND_LOG, BACKEND_ACCEPTS
#       mmproxy_start_listener "$(port 0)" "$(port 1)" --header-timeout 1
#       run ppclient -s 192.0.2.10:40000 -n 1000 --half-close "127.0.0.1:$(port 0)"
#       [ "$(field end "$output")" = eof ]
#       wait_for_file_lines "$BACKEND_LOG" 1
#       grep -q '^peer=192.0.2.10:40000 ' "$BACKEND_LOG"
#   }
# A file that needs its own setup_file/setup/teardown/teardown_file defines
# it after `load` and calls common_setup_file / common_setup / common_teardown
# / common_teardown_file from it.
#
# Functions (all run things inside the namespace):
#   netns_exec CMD...             run CMD in the namespace (foreground)
#   start_bg NAME CMD...          start CMD in the background; stdout/stderr go to
#                                 $TEST_DIR/NAME.out and NAME.err, the PID to
#                                 NAME.pid and to BG_PID; recorded for teardown.
#                                 stdin is /dev/null: to feed data later, start
#                                 ppclient -f FIFO, then open the FIFO read-write
#                                 (exec 5<>FIFO) and close it for EOF
#   kill_recorded                 kill what this test started (and its children)
#   port N                        a port for this test: 20000 + 10*test number + N
#   wait_until SECONDS CMD...     poll CMD every 20 ms until it succeeds; CMD's
#                                 arguments are expanded once, so a condition
#                                 on changing state goes through eval in single
#                                 quotes: wait_until 10 eval '[ "$(wc -l <"$F")" -ge 5 ]'
#   wait_for_listen PORT [tcp|udp] [SECONDS]   until something listens on PORT
#   wait_for_no_listen PORT [tcp|udp] [SECONDS]
#   wait_for_file_lines FILE N [SECONDS]       until FILE has at least N lines
#   wait_for_log FILE REGEX [SECONDS]          until grep -E REGEX FILE matches
#   wait_for_exit PID [SECONDS]                until PID is gone (or a zombie)
#   is_alive PID                  running (not a zombie)
#   kill_tree PID [SIGNAL]        signal PID and everything it forked (KILL);
#                                 only for processes this test started
#   children_of PID               PIDs whose parent is PID, one a line
#   fd_count PID                  how many fds PID has open
#   lowest_free_fd PID            the number PID's next open() would get
#   cpu_ticks PID                 user + system CPU time of PID, in ticks
#   cpu_ticks_during PID SECONDS  ticks PID uses over the next SECONDS
#   field NAME LINE               the value of NAME=VALUE in LINE
#   write_allowed_subnets FILE [CIDR...]   default 127.0.0.1/32 and ::1/128
#   backend_start MODE PORT [BACKEND OPTIONS...]
#                                 tests/helpers/backend on 127.0.0.1:PORT and
#                                 [::1]:PORT; BACKEND_PID, BACKEND_LOG,
#                                 BACKEND_ACCEPTS; waits until it listens
#   mmproxy_start ARGS...         start mmproxy with exactly ARGS (no waiting);
#                                 MMPROXY_PID, MMPROXY_LOG (its stderr)
#   mmproxy_start_listener LPORT BPORT [EXTRA ARGS...]
#                                 mmproxy -l $LISTEN_ADDR:LPORT -4 127.0.0.1:BPORT
#                                 -6 [::1]:BPORT --allowed-subnets $ALLOWED_SUBNETS
#                                 -v 2 EXTRA..., then waits until it listens
#   activate_start LISTEN OPTIONS... -- ARGS...
#                                 mmproxy under systemd-socket-activate on
#                                 LISTEN; ACTIVATE_PID, MMPROXY_LOG
#   ppclient ARGS...              tests/helpers/ppclient in the namespace
# Variables: REPO, MMPROXY (env overrides, default $REPO/mmproxy), BACKEND,
# PPCLIENT, NETNS, TEST_DIR (this test's files), ALLOWED_SUBNETS (written by
# setup: 127.0.0.1/32 and ::1/128), LISTEN_ADDR (default 127.0.0.1).

REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
MMPROXY=${MMPROXY:-$REPO/mmproxy}
BACKEND=$REPO/tests/helpers/backend
PPCLIENT=$REPO/tests/helpers/ppclient
NETNS="mmproxy-test-${BATS_ROOT_PID:-$$}-$(basename "$BATS_TEST_FILENAME" .bats)"
FILE_PIDS="$BATS_FILE_TMPDIR/pids.file" # started in setup_file: kept for the file
TEST_PIDS="$BATS_FILE_TMPDIR/pids.test" # started in a test: killed in teardown
TEST_DIR=${BATS_TEST_TMPDIR:-$BATS_FILE_TMPDIR}
LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1}

# ---- the namespace

netns_exec() {
	ip netns exec "$NETNS" "$@"
}

netns_setup() {
	netns_exec ip link set lo up
	netns_exec ip rule add from 127.0.0.1/8 iif lo table 123
	netns_exec ip route add local 0.0.0.0/0 dev lo table 123
	netns_exec ip -6 rule add from ::1/128 iif lo table 123
	netns_exec ip -6 route add local ::/0 dev lo table 123
}

# Namespaces this file created in a bats run that died (its root PID is
# gone): their processes and the namespace itself.
netns_remove_stale() {
	local name root_pid
	for name in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		[[ $name =~ ^mmproxy-test-([0-9]+)- ]] || continue
		root_pid=${BASH_REMATCH[1]}
		[ -d "/proc/$root_pid" ] && continue
		netns_kill_all "$name"
		ip netns delete "$name" 2>/dev/null || true
	done
}

# Every process in namespace $1 is one a test started (the namespace is private).
netns_kill_all() {
	local pids
	pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null || true
	wait_until 5 _none_alive $pids || true
}

netns_create() {
	netns_remove_stale
	if ip netns list | awk '{print $1}' | grep -qx "$NETNS"; then
		netns_kill_all "$NETNS"
		ip netns delete "$NETNS"
	fi
	ip netns add "$NETNS"
	netns_setup
}

netns_delete() {
	netns_kill_all "$NETNS"
	ip netns delete "$NETNS" 2>/dev/null || true
}

# ---- processes

_starttime() {
	# Field 22 of /proc/PID/stat, counted after the ")" that ends the name.
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	# shellcheck disable=SC2086
	set -- $stat
	echo "${20}"
}

is_alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat:0:1}" != Z ] && [ "${stat:0:1}" != X ]
}

_none_alive() {
	local pid
	for pid in "$@"; do
		is_alive "$pid" && return 1
	done
	return 0
}

children_of() {
	pgrep -P "$1" || true
}

# The children of $1 that serve a connection: they hold a TCP socket that
# is not listening, where a pool's waiting processes hold only the
# listening one. A connection process whose connection is over has closed
# its sockets (TIME_WAIT belongs to no process).
busy_children_of() {
	local children
	children=$(children_of "$1")
	[ -n "$children" ] || return 0
	netns_exec ss -HtanpO | awk '$1 != "LISTEN"' | grep -o 'pid=[0-9]*' |
		cut -d= -f2 | sort -u | grep -xF "$children" || true
}

# No connection is served any more: every child of $1 waits or is gone.
no_busy_children() {
	[ -z "$(busy_children_of "$1")" ]
}

# PID and everything below it, parents first.
_tree() {
	local pid child
	for pid in "$@"; do
		echo "$pid"
		for child in $(pgrep -P "$pid"); do
			_tree "$child"
		done
	done
}

kill_tree() {
	local victims
	mapfile -t victims < <(_tree "$1")
	kill -"${2:-KILL}" "${victims[@]}" 2>/dev/null || true
}

cpu_ticks() {
	# utime + stime of PID, in clock ticks.
	local stat
	stat=$(cat "/proc/$1/stat") || return 1
	stat=${stat##*) }
	# shellcheck disable=SC2086
	set -- $stat
	echo $((${12} + ${13}))
}

cpu_ticks_during() {
	local before after
	before=$(cpu_ticks "$1") || return 1
	sleep "$2"
	after=$(cpu_ticks "$1") || return 1
	echo $((after - before))
}

fd_count() {
	local fds=(/proc/"$1"/fd/*)
	echo "${#fds[@]}"
}

lowest_free_fd() {
	local fd=0
	while [ -e "/proc/$1/fd/$fd" ]; do
		fd=$((fd + 1))
	done
	echo "$fd"
}

start_bg() {
	local name=$1 pid_file
	shift
	pid_file=$TEST_PIDS
	[ -n "${BATS_TEST_NUMBER:-}" ] || pid_file=$FILE_PIDS
	ip netns exec "$NETNS" "$@" >"$TEST_DIR/$name.out" 2>"$TEST_DIR/$name.err" </dev/null 3>&- &
	BG_PID=$!
	echo "$BG_PID $(_starttime "$BG_PID") $name" >>"$pid_file"
	echo "$BG_PID" >"$TEST_DIR/$name.pid"
}

# Kill the processes recorded in pid file $1 that are still the ones we
# started (same start time), with everything they forked.
_kill_pid_file() {
	local file=$1 pid start name victims=()
	[ -f "$file" ] || return 0
	while read -r pid start name; do
		[ -n "$pid" ] || continue
		[ "$(_starttime "$pid")" = "$start" ] || continue
		mapfile -t -O "${#victims[@]}" victims < <(_tree "$pid")
	done <"$file"
	if [ "${#victims[@]}" -gt 0 ]; then
		kill -TERM "${victims[@]}" 2>/dev/null || true
		if ! wait_until 3 _none_alive "${victims[@]}"; then
			kill -KILL "${victims[@]}" 2>/dev/null || true
			wait_until 5 _none_alive "${victims[@]}" || true
		fi
	fi
	# Reap the ones that are our own children.
	while read -r pid start name; do
		[ -n "$pid" ] && { wait "$pid" 2>/dev/null || true; }
	done <"$file"
	: >"$file"
}

# What is left in the namespace that no setup_file process accounts for:
# e.g. mmproxy's connection children after their listener exited.
_kill_test_orphans() {
	local keep=() pid orphans=() start name
	if [ -f "$FILE_PIDS" ]; then
		while read -r pid start name; do
			[ -n "$pid" ] && mapfile -t -O "${#keep[@]}" keep < <(_tree "$pid")
		done <"$FILE_PIDS"
	fi
	for pid in $(ip netns pids "$NETNS" 2>/dev/null); do
		[[ " ${keep[*]} " == *" $pid "* ]] || orphans+=("$pid")
	done
	[ "${#orphans[@]}" -gt 0 ] || return 0
	kill -KILL "${orphans[@]}" 2>/dev/null || true
	wait_until 5 _none_alive "${orphans[@]}" || true
}

kill_recorded() {
	_kill_pid_file "$TEST_PIDS"
	_kill_test_orphans
}

# ---- waiting, always with a deadline

_now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

wait_until() {
	local seconds=$1 deadline
	shift
	deadline=$(($(_now_ms) + seconds * 1000))
	until "$@"; do
		if [ "$(_now_ms)" -ge "$deadline" ]; then
			echo "# gave up after ${seconds}s waiting for: $*" >&2
			return 1
		fi
		sleep 0.02
	done
}

_is_listening() {
	local flag=-ltnH
	[ "${2:-tcp}" = udp ] && flag=-lunH
	[ -n "$(netns_exec ss "$flag" "sport = :$1")" ]
}

_is_not_listening() {
	! _is_listening "$@"
}

wait_for_listen() {
	wait_until "${3:-10}" _is_listening "$1" "${2:-tcp}"
}

wait_for_no_listen() {
	wait_until "${3:-10}" _is_not_listening "$1" "${2:-tcp}"
}

_has_lines() {
	[ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]
}

wait_for_file_lines() {
	wait_until "${3:-10}" _has_lines "$1" "$2"
}

wait_for_log() {
	wait_until "${3:-10}" grep -qE -- "$2" "$1"
}

wait_for_exit() {
	wait_until "${2:-10}" _none_alive "$1"
}

# ---- tools

port() {
	echo $((20000 + 10 * ${BATS_TEST_NUMBER:-0} + $1))
}

# field NAME LINE: the value of NAME=VALUE (the last such line if several).
field() {
	printf '%s\n' "$2" | grep -oE "(^| )$1=[^ ]*" | tail -n 1 | sed "s/^ *$1=//"
}

write_allowed_subnets() {
	local file=$1
	shift
	[ "$#" -gt 0 ] || set -- 127.0.0.1/32 ::1/128
	printf '%s\n' "$@" >"$file"
}

require_executable() {
	if [ ! -x "$1" ]; then
		echo "# $1 is missing: run 'make test-programs' (or 'make test') first" >&2
		return 1
	fi
}

backend_start() {
	local mode=$1 backend_port=$2
	shift 2
	BACKEND_LOG=$TEST_DIR/backend.log
	BACKEND_ACCEPTS=$TEST_DIR/backend.accepts
	: >"$BACKEND_LOG"
	: >"$BACKEND_ACCEPTS"
	start_bg backend "$BACKEND" -t "127.0.0.1:$backend_port" -t "[::1]:$backend_port" \
		-o "$BACKEND_LOG" -A "$BACKEND_ACCEPTS" -m "$mode" "$@"
	BACKEND_PID=$BG_PID
	wait_for_listen "$backend_port"
}

mmproxy_start() {
	start_bg mmproxy "$MMPROXY" "$@"
	MMPROXY_PID=$BG_PID
	MMPROXY_LOG=$TEST_DIR/mmproxy.err
}

# activate_start LISTEN OPTIONS... -- MMPROXY ARGS...: mmproxy as a
# socket-activated service would start it, under systemd-socket-activate on
# LISTEN (ADDR:PORT); ACTIVATE_PID is the launcher's, and its stderr and
# mmproxy's are $TEST_DIR/activate.err (MMPROXY_LOG).
activate_start() {
	local listen=$1 listen_port=${1##*:}
	shift
	local options=()
	while [ "$1" != -- ]; do
		options+=("$1")
		shift
	done
	shift
	start_bg activate systemd-socket-activate "${options[@]}" -l "$listen" "$MMPROXY" "$@"
	ACTIVATE_PID=$BG_PID
	MMPROXY_LOG=$TEST_DIR/activate.err
	wait_for_listen "$listen_port"
}

mmproxy_start_listener() {
	local listen_port=$1 backend_port=$2 listen=$LISTEN_ADDR:$1
	shift 2
	[[ $LISTEN_ADDR == *:* ]] && listen="[$LISTEN_ADDR]:$listen_port"
	mmproxy_start -l "$listen" -4 "127.0.0.1:$backend_port" -6 "[::1]:$backend_port" \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 2 "$@"
	if ! wait_for_listen "$listen_port"; then
		echo "# mmproxy did not listen on $listen; its stderr:" >&2
		sed 's/^/# /' "$MMPROXY_LOG" >&2
		return 1
	fi
}

ppclient() {
	netns_exec "$PPCLIENT" "$@"
}

# On failure, show what the background processes said.
dump_test_files() {
	local file
	for file in "$TEST_DIR"/*.err "$TEST_DIR"/*.out "$TEST_DIR"/*.log; do
		[ -s "$file" ] || continue
		echo "# ---- $(basename "$file") (last 30 lines)"
		tail -n 30 "$file" | sed 's/^/#   /'
	done
}

# ---- bats hooks

common_setup_file() {
	require_executable "$BACKEND"
	require_executable "$PPCLIENT"
	require_executable "$MMPROXY"
	netns_create
}

common_teardown_file() {
	_kill_pid_file "$TEST_PIDS"
	_kill_pid_file "$FILE_PIDS"
	netns_delete
}

common_setup() {
	ALLOWED_SUBNETS=$TEST_DIR/allowed.txt
	write_allowed_subnets "$ALLOWED_SUBNETS"
}

common_teardown() {
	[ -n "${BATS_TEST_COMPLETED:-}" ] || dump_test_files
	kill_recorded
}

setup_file() { common_setup_file; }
teardown_file() { common_teardown_file; }
setup() { common_setup; }
teardown() { common_teardown; }
