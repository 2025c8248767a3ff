#!/usr/bin/env bats
# The files in systemd/: the units pass systemd-analyze verify, keep the
# properties mmproxy depends on (KillMode=process, nothing written to the
# socket, CAP_NET_ADMIN without PrivateNetwork/PrivateUsers), the routing
# unit's own commands set up and tear down the policy routing idempotently,
# and the shipped command lines (ExecStart=, the xinetd entry) relay a
# spoofed connection on the shipped ports (8443 to 443). systemd is not PID 1
# on test machines, so nothing here starts a unit: the commands are run as
# systemd would run them, inside a private network namespace.

load helpers/common
load helpers/units

teardown() {
	common_teardown
	if [ -n "${PUBLIC_DIR:-}" ]; then rm -rf "$PUBLIC_DIR"; fi
}

ROOT=$REPO
UNITS="$ROOT/systemd"
case "$MMPROXY" in /*) ;; *) MMPROXY="$ROOT/$MMPROXY" ;; esac

# The unit's ExecStart= as words, with the shipped settings
# (systemd/mmproxy.default, installed as the units' EnvironmentFile=)
# expanded, and the installed paths replaced by the built binary and this
# test's allow-list (127.0.0.1/32 and ::1/128).
shipped_command() {
	[ "$(unit_values "$1" EnvironmentFile)" = /etc/default/mmproxy ]
	unit_command "$1" "$UNITS/mmproxy.default"
	SHIPPED=("${UNIT_COMMAND[@]/#\/usr\/local\/sbin\/mmproxy/$MMPROXY}")
	SHIPPED=("${SHIPPED[@]/#\/etc\/mmproxy\/allowed-subnets.txt/$ALLOWED_SUBNETS}")
	[[ "${SHIPPED[0]}" == "$MMPROXY" ]]
	[[ " ${SHIPPED[*]} " == *" $ALLOWED_SUBNETS "* ]]
}

# The system calls a unit's SystemCallFilter= allows, one per line: each
# @group expanded (recursively) from `systemd-analyze syscall-filter`.
allowed_syscalls() {
	local entry
	for entry in $(unit_values "$1" SystemCallFilter); do
		[[ "$entry" != "~"* ]] || { echo "deny lists are not handled: $entry" >&2; return 1; }
		if [[ "$entry" == @* ]]; then
			systemd-analyze syscall-filter 2>/dev/null | awk -v want="$entry" '
				/^@/ { group = $1; next }
				/^[[:space:]]+#/ || NF == 0 { next }
				{ members[group] = members[group] " " $1 }
				END {
					todo[1] = want; n = 1; seen[want] = 1
					while (n > 0) {
						count = split(members[todo[n--]], list, " ")
						for (i = 1; i <= count; i++) {
							if (list[i] !~ /^@/) print list[i]
							else if (!(list[i] in seen)) { seen[list[i]] = 1; todo[++n] = list[i] }
						}
					}
				}'
		else
			echo "$entry"
		fi
	done | sort -u
}

need_strace() {
	if ! command -v strace >/dev/null; then
		echo "# strace is missing: install it (apt-get install strace; .ci/run's package list)" >&2
		return 1
	fi
}

# The names of the system calls in strace output files.
traced_syscalls() {
	sed -nE 's/^([0-9]+ +)?([a-z_0-9]+)\(.*/\2/p' "$@" | sort -u
}

# Exercise the relay: v2 IPv4 and IPv6, bulk (mmproxy may splice() then),
# a LOCAL check that resets, a bad header.
exercise_8443() {
	relay_through_8443 "$1"
	relay_through_8443 "$2"
	run ppclient -1 -s 192.0.2.99:40099 -n 4000000 --half-close -w 30 127.0.0.1:8443
	echo "bulk: $output"
	[ "$(field received "$output")" = 4000000 ]
	ppclient -2 --local --reset -w 5 127.0.0.1:8443 || true
	ppclient --garbage 32 -w 5 127.0.0.1:8443 || true
}

# One spoofed connection to 127.0.0.1:8443 reaches the backend on 443.
relay_through_8443() {
	run ppclient -2 -s "$1" -n 1000 --half-close -w 10 127.0.0.1:8443
	echo "ppclient: $output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 1000 ]
	# This connection's own line: earlier relays logged theirs already.
	wait_until 10 grep -qF -- "peer=$1 " "$BACKEND_LOG"
	line=$(grep -F "peer=$1 " "$BACKEND_LOG" | tail -n 1)
	echo "backend: $line"
	[ "$(field bytes "$line")" = 1000 ]
}

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

@test "both mmproxy services read their targets from /etc/default/mmproxy, which sets every variable they use" {
	local unit name
	for unit in mmproxy.service mmproxy@.service; do
		[ "$(unit_values "$UNITS/$unit" EnvironmentFile)" = /etc/default/mmproxy ]
		for name in $(unit_values "$UNITS/$unit" ExecStart | grep -oE '\$\{?[A-Za-z_][A-Za-z0-9_]*' | tr -d '${'); do
			echo "$unit: $name"
			grep -Eq "^$name=" "$UNITS/mmproxy.default"
		done
	done
	# The shipped values are the ports the units and the xinetd entry use.
	grep -qx 'MMPROXY_LISTEN=0.0.0.0:8443' "$UNITS/mmproxy.default"
	grep -qx 'MMPROXY_TARGETS="-4 127.0.0.1:443 -6 \[::1\]:443"' "$UNITS/mmproxy.default"
}

@test "mmproxy.service restarts only the listener, so established connections survive" {
	[ "$(unit_values "$UNITS/mmproxy.service" KillMode)" = process ]
	unit_values "$UNITS/mmproxy.service" ExecStart | grep -q -- ' -l '
	unit_values "$UNITS/mmproxy.service" LimitNOFILE | grep -Eq '^[0-9]{5,}$'
}

@test "systemctl reload mmproxy sends SIGHUP to the listener alone" {
	[ "$(unit_values "$UNITS/mmproxy.service" ExecReload)" = '/bin/kill -HUP $MAINPID' ]
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

@test "both mmproxy services run unprivileged with CAP_NET_ADMIN, CAP_NET_BIND_SERVICE and no network isolation" {
	local unit
	for unit in mmproxy.service mmproxy@.service; do
		[ "$(unit_values "$UNITS/$unit" DynamicUser)" = yes ]
		[ "$(unit_values "$UNITS/$unit" AmbientCapabilities)" = "CAP_NET_ADMIN CAP_NET_BIND_SERVICE" ]
		[ "$(unit_values "$UNITS/$unit" CapabilityBoundingSet)" = "CAP_NET_ADMIN CAP_NET_BIND_SERVICE" ]
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

@test "mmproxy.service's command line listens on 0.0.0.0:8443 and relays to 443" {
	shipped_command "$UNITS/mmproxy.service"
	backend_start echo 443
	start_bg listener "${SHIPPED[@]}"
	wait_for_listen 8443
	netns_exec ss -Hltn 'sport = :8443' | grep -q '0\.0\.0\.0:8443'
	relay_through_8443 192.0.2.50:40000
}

@test "with KillMode=process, a restart of mmproxy.service lets an established connection finish" {
	# systemctl restart with KillMode=process: SIGTERM to the listener only,
	# then a new listener on the same port while the old children run on.
	[ "$(unit_values "$UNITS/mmproxy.service" KillMode)" = process ]
	shipped_command "$UNITS/mmproxy.service"
	backend_start echo 443
	start_bg listener "${SHIPPED[@]}"
	local old_listener=$BG_PID
	wait_for_listen 8443
	start_bg client "$PPCLIENT" -2 -s 192.0.2.54:40006 -n 1000 \
		--hold-until "$TEST_DIR/go" --half-close -w 20 127.0.0.1:8443
	local client=$BG_PID
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	kill -TERM "$old_listener"
	wait_for_exit "$old_listener"
	# The connection's process must not keep the listening socket open.
	wait_for_no_listen 8443 tcp 5
	start_bg listener2 "${SHIPPED[@]}"
	wait_for_listen 8443
	touch "$TEST_DIR/go"
	wait_for_exit "$client"
	echo "client: $(cat "$TEST_DIR/client.out")"
	[ "$(field end "$(cat "$TEST_DIR/client.out")")" = eof ]
	[ "$(field received "$(cat "$TEST_DIR/client.out")")" = 1000 ]
	wait_for_file_lines "$BACKEND_LOG" 1
	[ "$(field peer "$(head -n 1 "$BACKEND_LOG")")" = 192.0.2.54:40006 ]
	[ "$(field bytes "$(head -n 1 "$BACKEND_LOG")")" = 1000 ]
	# And the new listener serves new connections.
	: >"$BACKEND_LOG"
	relay_through_8443 192.0.2.55:40007
}

@test "mmproxy@.service's command line relays a connection handed over by mmproxy.socket" {
	shipped_command "$UNITS/mmproxy@.service"
	local listen
	listen=$(unit_values "$UNITS/mmproxy.socket" ListenStream)
	backend_start echo 443
	# Accept=yes with StandardInput=socket: the connection on fd 0.
	start_bg activate systemd-socket-activate --accept --inetd -l "$listen" "${SHIPPED[@]}"
	wait_for_listen 8443
	relay_through_8443 192.0.2.51:40001
	relay_through_8443 '[2001:db8::51]:40002'
}

@test "as an unprivileged user with only the units' capabilities, mmproxy still spoofs" {
	# What DynamicUser=yes, AmbientCapabilities=, CapabilityBoundingSet= and
	# NoNewPrivileges=yes amount to, done with setpriv: uid/gid 65534, no
	# groups, only the listed capabilities.
	local caps
	caps=$(unit_values "$UNITS/mmproxy.service" AmbientCapabilities |
		tr 'A-Z ' 'a-z\n' | sed -n 's/^cap_\(.\+\)/+\1/p' | paste -sd,)
	[ "$caps" = "$(unit_values "$UNITS/mmproxy.service" CapabilityBoundingSet |
		tr 'A-Z ' 'a-z\n' | sed -n 's/^cap_\(.\+\)/+\1/p' | paste -sd,)" ]
	[ -n "$caps" ]
	# The allow-list must be readable by that user, like /etc/mmproxy's.
	PUBLIC_DIR=$(mktemp -d /tmp/mmproxy-130.XXXXXX)
	chmod 755 "$PUBLIC_DIR"
	ALLOWED_SUBNETS=$PUBLIC_DIR/allowed.txt
	write_allowed_subnets "$ALLOWED_SUBNETS"
	chmod 644 "$ALLOWED_SUBNETS"
	shipped_command "$UNITS/mmproxy.service"
	backend_start echo 443
	start_bg listener setpriv --reuid=65534 --regid=65534 --clear-groups --nnp \
		--inh-caps="-all,$caps" --ambient-caps="-all,$caps" --bounding-set="-all,$caps" \
		"${SHIPPED[@]}"
	wait_for_listen 8443
	relay_through_8443 192.0.2.53:40004
	relay_through_8443 '[2001:db8::53]:40005'
	# A client port below 1024 (NTP's, say) needs CAP_NET_BIND_SERVICE too.
	relay_through_8443 192.0.2.53:123
	# The listener really runs unprivileged.
	grep -Eq '^Uid:[[:space:]]+65534' "/proc/$(pgrep -P "$BG_PID" -x mmproxy || echo "$BG_PID")/status" ||
		grep -Eq '^Uid:[[:space:]]+65534' "/proc/$BG_PID/status"
}

@test "with CAP_NET_ADMIN alone, a client port below 1024 fails naming CAP_NET_BIND_SERVICE, and --port-fallback lets it through" {
	PUBLIC_DIR=$(mktemp -d /tmp/mmproxy-130.XXXXXX)
	chmod 755 "$PUBLIC_DIR"
	ALLOWED_SUBNETS=$PUBLIC_DIR/allowed.txt
	write_allowed_subnets "$ALLOWED_SUBNETS"
	chmod 644 "$ALLOWED_SUBNETS"
	backend_start echo 443
	for fallback in "" --port-fallback; do
		start_bg "listener$fallback" setpriv --reuid=65534 --regid=65534 --clear-groups \
			--nnp --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin \
			--bounding-set=-all,+net_admin "$MMPROXY" -l 127.0.0.1:8443 \
			-4 127.0.0.1:443 --allowed-subnets "$ALLOWED_SUBNETS" -v 2 $fallback
		listener=$BG_PID
		wait_for_listen 8443
		run ppclient -2 -s 192.0.2.58:123 -t hello --half-close -w 10 127.0.0.1:8443
		echo "$fallback: $output"
		if [ -z "$fallback" ]; then
			[ "$(field received "$output")" = 0 ]
			wait_for_log "$TEST_DIR/listener.err" \
				"bind 192\.0\.2\.58:123: Permission denied \(a port below 1024 needs CAP_NET_BIND_SERVICE\)"
		else
			[ "$(field received "$output")" = 5 ]
			wait_until 10 grep -qE '^peer=192\.0\.2\.58:[0-9]+ ' "$BACKEND_LOG"
			! grep -q '^peer=192\.0\.2\.58:123 ' "$BACKEND_LOG" || false
		fi
		# setpriv exec()s mmproxy: the recorded PID is the listener's.
		kill -TERM "$listener"
		wait_for_exit "$listener"
		wait_for_no_listen 8443
	done
}

@test "every system call mmproxy.service's listener makes is allowed by its SystemCallFilter=" {
	need_strace
	allowed_syscalls "$UNITS/mmproxy.service" >"$TEST_DIR/allowed-syscalls"
	grep -qx socket "$TEST_DIR/allowed-syscalls"
	shipped_command "$UNITS/mmproxy.service"
	backend_start echo 443
	start_bg listener strace -f -qq -o "$TEST_DIR/strace.txt" "${SHIPPED[@]}"
	wait_for_listen 8443
	exercise_8443 192.0.2.56:40008 '[2001:db8::56]:40009'
	kill -TERM "$(pgrep -P "$BG_PID" -x "$(basename "$MMPROXY")")"
	wait_for_exit "$BG_PID"
	traced_syscalls "$TEST_DIR/strace.txt" >"$TEST_DIR/used-syscalls"
	grep -qx accept4 "$TEST_DIR/used-syscalls" || grep -qx accept "$TEST_DIR/used-syscalls"
	echo "used but not allowed:"
	! comm -23 "$TEST_DIR/used-syscalls" "$TEST_DIR/allowed-syscalls" | grep . || false
}

@test "with --metrics, a scrape, a reload and SIGUSR1, every system call of mmproxy.service's processes is allowed" {
	need_strace
	command -v curl >/dev/null || {
		echo "# curl is missing: apt-get install curl" >&2
		return 1
	}
	allowed_syscalls "$UNITS/mmproxy.service" >"$TEST_DIR/allowed-syscalls"
	shipped_command "$UNITS/mmproxy.service"
	backend_start echo 443
	start_bg listener strace -f -qq -o "$TEST_DIR/strace.txt" "${SHIPPED[@]}" --metrics 127.0.0.1:9199
	wait_for_listen 8443
	wait_for_listen 9199
	exercise_8443 192.0.2.59:40012 '[2001:db8::59]:40013'
	listener=$(pgrep -P "$BG_PID" -x "$(basename "$MMPROXY")")
	netns_exec curl -sSf -o /dev/null http://127.0.0.1:9199/metrics
	netns_exec curl -sS -o /dev/null http://127.0.0.1:9199/other
	kill -HUP "$listener"
	wait_for_log "$TEST_DIR/listener.err" ': reload: .* entries in force$'
	kill -USR1 "$listener"
	wait_for_log "$TEST_DIR/listener.err" ': metrics accepted='
	kill -TERM "$listener"
	wait_for_exit "$BG_PID"
	traced_syscalls "$TEST_DIR/strace.txt" >"$TEST_DIR/used-syscalls"
	grep -qx close_range "$TEST_DIR/used-syscalls"
	echo "used but not allowed:"
	! comm -23 "$TEST_DIR/used-syscalls" "$TEST_DIR/allowed-syscalls" | grep . || false
}

@test "every system call mmproxy@.service makes is allowed by its SystemCallFilter=" {
	need_strace
	allowed_syscalls "$UNITS/mmproxy@.service" >"$TEST_DIR/allowed-syscalls"
	shipped_command "$UNITS/mmproxy@.service"
	backend_start echo 443
	start_bg activate systemd-socket-activate --accept --inetd -l 8443 \
		strace -ff -qq -o "$TEST_DIR/strace.txt" "${SHIPPED[@]}"
	wait_for_listen 8443
	exercise_8443 192.0.2.57:40010 '[2001:db8::57]:40011'
	wait_until 10 bash -c "[ \$(grep -c 'died with code' '$TEST_DIR/activate.err') -ge 4 ]"
	traced_syscalls "$TEST_DIR"/strace.txt* >"$TEST_DIR/used-syscalls"
	grep -qx connect "$TEST_DIR/used-syscalls"
	echo "used but not allowed:"
	! comm -23 "$TEST_DIR/used-syscalls" "$TEST_DIR/allowed-syscalls" | grep . || false
}

@test "xinetd runs the shipped entry on port 8443 and it relays to 443" {
	local conf="$TEST_DIR/xinetd.conf"
	printf 'defaults\n{\n\tlog_type = FILE %s\n}\n' "$TEST_DIR/xinetd.log" >"$conf"
	sed -e "s#/usr/local/sbin/mmproxy#$MMPROXY#" \
		-e "s#/etc/mmproxy/allowed-subnets.txt#$ALLOWED_SUBNETS#" \
		"$UNITS/mmproxy.xinetd" >>"$conf"
	grep -q "server_args.*$ALLOWED_SUBNETS" "$conf"
	backend_start echo 443
	start_bg xinetd xinetd -f "$conf" -dontfork -pidfile "$TEST_DIR/xinetd.pid"
	wait_for_listen 8443
	relay_through_8443 192.0.2.52:40003
	cat "$TEST_DIR/xinetd.log" "$TEST_DIR/xinetd.err" 2>/dev/null || true
	! grep -Eiq 'bad|unknown|error' "$TEST_DIR/xinetd.err" || false
}
