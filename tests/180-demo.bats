#!/usr/bin/env bats
# `make demo` (tests/demo): it shows the application seeing the client named
# in the PROXY header, and it leaves nothing behind, neither its network
# namespace nor a process, whether it succeeds, fails or is interrupted.
# The demo makes its own namespace; this file needs none.

REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
MMPROXY=${MMPROXY:-$REPO/mmproxy}
case "$MMPROXY" in /*) ;; *) MMPROXY="$REPO/$MMPROXY" ;; esac

# The namespace name and the PIDs the demo announced in its output.
demo_netns() { grep -oE 'mmproxy-demo-[0-9]+' <<<"$1" | head -n 1; }
demo_pids() { grep -oE '(backend|mmproxy) pid [0-9]+' <<<"$1" | awk '{print $3}'; }

# The demo's namespace is gone, and so is every process it announced (a PID
# reused since by an unrelated program does not count), and its files.
left_nothing_behind() {
	local output=$1 netns pid
	netns=$(demo_netns "$output")
	[ -n "$netns" ]
	if ip netns list | awk '{print $1}' | grep -qx "$netns"; then
		echo "namespace $netns is still there"
		return 1
	fi
	for pid in $(demo_pids "$output"); do
		if [ -d "/proc/$pid" ] && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$REPO"/* ]]; then
			echo "process $pid is still running: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
			return 1
		fi
	done
	# Its files (/tmp/NAMESPACE.XXXXXX) too.
	[ -z "$(find /tmp -maxdepth 1 -name "$netns.*")" ]
}

setup() {
	for program in "$MMPROXY" "$REPO/tests/helpers/backend" "$REPO/tests/helpers/ppclient"; do
		[ -x "$program" ] || {
			echo "# $program is missing: run 'make test-programs' first" >&2
			return 1
		}
	done
}

@test "make demo shows the application seeing the client named in the PROXY header, and cleans up" {
	run make -s -C "$REPO" demo MMPROXY="$MMPROXY"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(printf '%s\n' "$output" | tail -n 1)" = "the application saw 192.0.2.10:40000" ]
	# The narrative shows mmproxy's own -v 2 line for the connection.
	[[ $output == *"conn client=192.0.2.10:40000 lb=127.0.0.1:"*" end=done"* ]]
	[[ $output == *"peer=192.0.2.10:40000 local=127.0.0.1:8080 bytes=5 "* ]]
	[ "$(demo_pids "$output" | grep -c .)" = 2 ]
	left_nothing_behind "$output"
}

@test "the demo says FAILED, exits 1 and cleans up when mmproxy does not start" {
	run env MMPROXY=/bin/false "$REPO/tests/demo"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ $output == *"demo: FAILED: mmproxy does not listen on 8443"* ]]
	[[ $output != *"the application saw"* ]]
	left_nothing_behind "$output"
}

@test "the demo interrupted by Ctrl-C (SIGINT) removes its namespace and stops what it started" {
	# A stand-in mmproxy that never listens holds the demo at step 3.
	fake=$BATS_TEST_TMPDIR/fake-mmproxy
	printf '#!/bin/sh\nexec sleep 60\n' >"$fake"
	chmod +x "$fake"
	out=$BATS_TEST_TMPDIR/demo.out
	# A background job ignores SIGINT unless told otherwise.
	MMPROXY=$fake env --default-signal=INT "$REPO/tests/demo" >"$out" 2>&1 &
	demo=$!
	for _ in $(seq 200); do
		grep -q '^   mmproxy pid ' "$out" && break
		sleep 0.05
	done
	cat "$out"
	grep -q '^   mmproxy pid ' "$out"
	fake_pid=$(demo_pids "$(cat "$out")" | tail -n 1)
	kill -0 "$fake_pid"

	kill -INT "$demo"
	status=0
	wait "$demo" || status=$?
	cat "$out"
	[ "$status" -eq 130 ]
	grep -q 'demo: interrupted' "$out"
	left_nothing_behind "$(cat "$out")"
	# The stand-in (a sleep, outside the repository) is gone too.
	! kill -0 "$fake_pid" 2>/dev/null || [ "$(cat "/proc/$fake_pid/comm")" != sleep ]
}
