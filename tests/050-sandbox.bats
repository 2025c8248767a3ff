#!/usr/bin/env bats
# The sandbox on its own: tests/helpers/sandboxed runs sandbox.c (the code
# mmproxy links) for one kind of process, then tries to open a file, to make
# an IPv4 socket and to run /bin/true, and prints what happened. Run as
# root, like CI. The end-to-end checks of mmproxy's own processes are in
# tests/330-least-privilege.bats.

SANDBOXED=$BATS_TEST_DIRNAME/helpers/sandboxed

# CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12).
KEPT=0000000000001400

setup() {
	if [ ! -x "$SANDBOXED" ]; then
		echo "# $SANDBOXED is missing: run 'make test-programs' first" >&2
		return 1
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "# these tests change users and capabilities: run them as root" >&2
		return 1
	fi
}

sandboxed() {
	run "$SANDBOXED" "$@"
	echo "$output"
	[ "$status" -eq 0 ]
}

# status NAME: the value of NAME= on the status line of the last run.
status_field() {
	grep '^status:' <<<"$output" | grep -oE "(^| )$1=[^ ]*" | sed "s/^ *$1=//"
}

@test "every kind of process is refused open() to write with EPERM and killed at execve()" {
	for kind in listener connection relay udp check metrics; do
		sandboxed "$kind"
		grep -qx 'open to write: refused (Operation not permitted)' <<<"$output"
		grep -qx 'execve: refused (killed by SIGSYS)' <<<"$output"
		[ "$(status_field Seccomp)" = 2 ]
		[ "$(status_field NoNewPrivs)" = 1 ]
	done
}

@test "only the listener and the UDP process may open a file to read (SIGHUP's reload)" {
	for kind in listener udp; do
		sandboxed "$kind"
		grep -qx 'open: allowed' <<<"$output"
	done
	for kind in connection relay check metrics; do
		sandboxed "$kind"
		grep -qx 'open: refused (Operation not permitted)' <<<"$output"
	done
}

@test "a relay and the metrics endpoint may not make a socket; the kinds that connect may" {
	for kind in relay metrics; do
		sandboxed "$kind"
		grep -qx 'socket: refused (Operation not permitted)' <<<"$output"
	done
	for kind in listener connection udp check; do
		sandboxed "$kind"
		grep -qx 'socket: allowed' <<<"$output"
	done
}

@test "the capabilities left are CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, bounding set included" {
	sandboxed connection
	[ "$(status_field CapEff)" = "$KEPT" ]
	[ "$(status_field CapPrm)" = "$KEPT" ]
	[ "$(status_field CapBnd)" = "$KEPT" ]
	[ "$(status_field Uid)" = 0 ]
}

@test "--do-not-sandbox lifts the filter and leaves the capabilities alone" {
	sandboxed --do-not-sandbox relay
	grep -qx 'open: allowed' <<<"$output"
	grep -qx 'socket: allowed' <<<"$output"
	grep -qx 'execve: allowed' <<<"$output"
	[ "$(status_field Seccomp)" = 0 ]
	[ "$(status_field NoNewPrivs)" = 0 ]
	[ "$(status_field CapEff)" = "$(awk '/^CapEff:/ {print $2}' /proc/self/status)" ]
}

@test "--user by name becomes that user with only the listed capabilities" {
	sandboxed --user nobody listener
	[ "$(status_field Uid)" = "$(id -u nobody)" ]
	[ "$(status_field CapEff)" = "$KEPT" ]
	[ "$(status_field CapPrm)" = "$KEPT" ]
	[ "$(status_field CapBnd)" = "$KEPT" ]
}

@test "--user by number works for a user with no passwd entry" {
	! getent passwd 4242 >/dev/null
	sandboxed --user 4242 relay
	[ "$(status_field Uid)" = 4242 ]
	[ "$(status_field CapEff)" = "$KEPT" ]
}

@test "--user with --do-not-sandbox still keeps only the listed capabilities" {
	sandboxed --do-not-sandbox --user 4242 relay
	[ "$(status_field Uid)" = 4242 ]
	[ "$(status_field CapEff)" = "$KEPT" ]
	[ "$(status_field Seccomp)" = 0 ]
}

@test "an unknown user name is a usage error" {
	run "$SANDBOXED" --user no-such-user-here relay
	[ "$status" -eq 2 ]
	[[ "$output" == *"--user no-such-user-here: no such user"* ]]
}

@test "bpf() kills the process unless the kernel relay asked for it" {
	sandboxed --try-bpf relay
	grep -qx 'bpf: refused (killed by SIGSYS)' <<<"$output"
	sandboxed --bpf --try-bpf relay
	grep -qx 'bpf: allowed' <<<"$output"
	grep -qx 'open: refused (Operation not permitted)' <<<"$output"
}
