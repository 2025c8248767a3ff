#!/usr/bin/env bats
# The files in systemd/: the units pass systemd-analyze verify, keep the
# properties mmproxy depends on (KillMode=process, nothing written to the
# socket, CAP_NET_ADMIN without PrivateNetwork/PrivateUsers), the routing
# unit's own commands set up and tear down the policy routing idempotently,
# and xinetd accepts the shipped entry. systemd is not PID 1 on test
# machines, so nothing here starts a unit: the commands are run as systemd
# would run them, inside a private network namespace.

ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
UNITS="$ROOT/systemd"
MMPROXY="${MMPROXY:-$ROOT/mmproxy}"
case "$MMPROXY" in /*) ;; *) MMPROXY="$ROOT/$MMPROXY" ;; esac

# The value of KEY= lines in FILE, one per line (all of them, in order).
unit_values() {
	sed -n "s/^$2=//p" "$1"
}

# Copies the units to a temporary directory with mmproxy's path pointing at
# the built binary, as systemd-analyze checks that ExecStart= exists.
copy_units() {
	mkdir -p "$BATS_TEST_TMPDIR/units"
	cp "$UNITS"/*.service "$UNITS"/*.socket "$BATS_TEST_TMPDIR/units/"
	sed -i "s#/usr/local/sbin/mmproxy#$MMPROXY#" "$BATS_TEST_TMPDIR"/units/*
}

# Writes a script that runs KEY= commands of a unit the way systemd does: a
# leading "-" means a failure is ignored; any other failure stops the script
# with status 1.
exec_script() {
	local line prefix
	while IFS= read -r line; do
		prefix="${line%%[!@:+!-]*}"
		line="${line#"$prefix"}"
		if [[ "$prefix" == *-* ]]; then
			printf '%s 2>/dev/null || true\n' "$line"
		else
			printf '%s || { echo "failed: %s" >&2; exit 1; }\n' "$line" "$line"
		fi
	done < <(unit_values "$1" "$2")
}

@test "every unit passes systemd-analyze verify with no unknown key or section" {
	[ -x "$MMPROXY" ]
	copy_units
	cd "$BATS_TEST_TMPDIR/units"
	# --man=no: mmproxy(8) is not installed where the test runs.
	run systemd-analyze verify --man=no ./mmproxy.socket ./mmproxy@.service \
		./mmproxy.service ./mmproxy-routing.service
	echo "$output"
	[ "$status" -eq 0 ]
	# verify exits 0 on unknown keys: its messages are the real verdict.
	! grep -Eiq 'unknown (key|section|lvalue)|failed|invalid|not executable|ignoring' <<<"$output" || false
}

@test "mmproxy.service restarts only the listener, so established connections survive" {
	[ "$(unit_values "$UNITS/mmproxy.service" KillMode)" = process ]
	unit_values "$UNITS/mmproxy.service" ExecStart | grep -q -- ' -l '
	unit_values "$UNITS/mmproxy.service" LimitNOFILE | grep -Eq '^[0-9]{5,}$'
}

@test "mmproxy.socket hands each connection on port 8443 to mmproxy@.service" {
	[ "$(unit_values "$UNITS/mmproxy.socket" ListenStream)" = 8443 ]
	[ "$(unit_values "$UNITS/mmproxy.socket" Accept)" = yes ]
	unit_values "$UNITS/mmproxy@.service" ExecStart | grep -q -- '--inetd'
	[ "$(unit_values "$UNITS/mmproxy@.service" StandardInput)" = socket ]
}

@test "mmproxy@.service never lets standard output or error reach the socket" {
	[ "$(unit_values "$UNITS/mmproxy@.service" StandardOutput)" = journal ]
	[ "$(unit_values "$UNITS/mmproxy@.service" StandardError)" = journal ]
}

@test "both mmproxy services run unprivileged with CAP_NET_ADMIN and no network isolation" {
	local unit
	for unit in mmproxy.service mmproxy@.service; do
		[ "$(unit_values "$UNITS/$unit" DynamicUser)" = yes ]
		[ "$(unit_values "$UNITS/$unit" AmbientCapabilities)" = CAP_NET_ADMIN ]
		[ "$(unit_values "$UNITS/$unit" CapabilityBoundingSet)" = CAP_NET_ADMIN ]
		[ "$(unit_values "$UNITS/$unit" NoNewPrivileges)" = yes ]
		unit_values "$UNITS/$unit" RestrictAddressFamilies | grep -qw AF_INET6
		# Each of these would break spoofed connections.
		! grep -Eq '^(PrivateNetwork|PrivateUsers|IPAddressDeny)=' "$UNITS/$unit" || false
	done
}

@test "the routing unit's commands work and running them twice leaves each rule once" {
	exec_script "$UNITS/mmproxy-routing.service" ExecStart >"$BATS_TEST_TMPDIR/start.sh"
	grep -q 'ip rule add' "$BATS_TEST_TMPDIR/start.sh"
	run unshare -n bash -c "
		set -u
		ip link set lo up || exit 1
		bash '$BATS_TEST_TMPDIR/start.sh' || exit 1
		bash '$BATS_TEST_TMPDIR/start.sh' || exit 1
		ip -4 rule show; ip -6 rule show
		ip -4 route show table 123 | sed 's/^/v4 /'
		ip -6 route show table 123 | sed 's/^/v6 /'"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(grep -c 'from 127.0.0.1/8 iif lo lookup 123' <<<"$output")" -eq 1 ]
	[ "$(grep -c 'from ::1 iif lo lookup 123' <<<"$output")" -eq 1 ]
	[ "$(grep -Ec '^v4 local (default|0\.0\.0\.0/0) dev lo' <<<"$output")" -eq 1 ]
	[ "$(grep -Ec '^v6 local (default|::/0) dev lo' <<<"$output")" -eq 1 ]
}

@test "the routing unit's stop commands remove every rule and route it added" {
	exec_script "$UNITS/mmproxy-routing.service" ExecStart >"$BATS_TEST_TMPDIR/start.sh"
	exec_script "$UNITS/mmproxy-routing.service" ExecStop >"$BATS_TEST_TMPDIR/stop.sh"
	run unshare -n bash -c "
		set -u
		ip link set lo up || exit 1
		bash '$BATS_TEST_TMPDIR/start.sh' || exit 1
		bash '$BATS_TEST_TMPDIR/stop.sh' || exit 1
		echo stopped
		ip -4 rule show; ip -6 rule show
		ip -4 route show table 123; ip -6 route show table 123
		# Stopping a stopped unit is harmless too.
		bash '$BATS_TEST_TMPDIR/stop.sh' || exit 1"
	echo "$output"
	[ "$status" -eq 0 ]
	grep -q '^stopped' <<<"$output"
	! grep -q 'lookup 123' <<<"$output" || false
	! grep -q '^local' <<<"$output" || false
}

@test "the routing unit is a oneshot that stays active and runs before mmproxy" {
	[ "$(unit_values "$UNITS/mmproxy-routing.service" Type)" = oneshot ]
	[ "$(unit_values "$UNITS/mmproxy-routing.service" RemainAfterExit)" = yes ]
	unit_values "$UNITS/mmproxy-routing.service" Before | grep -qw mmproxy.service
	unit_values "$UNITS/mmproxy-routing.service" Before | grep -qw mmproxy.socket
	! grep -q '^User=' "$UNITS/mmproxy-routing.service" || false
}

@test "xinetd accepts the shipped entry and listens on port 8443" {
	[ -x "$MMPROXY" ]
	local conf="$BATS_TEST_TMPDIR/xinetd.conf"
	printf 'defaults\n{\n}\n' >"$conf"
	sed "s#/usr/local/sbin/mmproxy#$MMPROXY#" "$UNITS/mmproxy.xinetd" >>"$conf"
	run unshare -n bash -c "
		ip link set lo up || exit 1
		xinetd -f '$conf' -dontfork -pidfile '$BATS_TEST_TMPDIR/xinetd.pid' \
			>'$BATS_TEST_TMPDIR/xinetd.log' 2>&1 &
		pid=\$!
		for i in \$(seq 100); do
			ss -Hltn 'sport = :8443' | grep -q LISTEN && { echo listening; break; }
			kill -0 \$pid 2>/dev/null || break
			sleep 0.05
		done
		kill \$pid; wait \$pid"
	echo "$output"
	cat "$BATS_TEST_TMPDIR/xinetd.log"
	grep -q '^listening' <<<"$output"
	! grep -Eiq 'bad|unknown|error' "$BATS_TEST_TMPDIR/xinetd.log" || false
}
