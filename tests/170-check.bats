#!/usr/bin/env bats
# mmproxy --check: one [ok] or [fail] line per check, a command under each
# routing failure that repairs it (applied here as printed, then checked
# again), exit 0 only when every check passes; and the start-up warning of
# a long-lived mode. Every test starts in a namespace WITHOUT the policy
# routing, and adds what it needs.

load helpers/common

setup() {
	common_setup
	remove_routing
}

remove_routing() {
	netns_exec ip rule del from 127.0.0.1/8 iif lo table 123 2>/dev/null || true
	netns_exec ip -6 rule del from ::1/128 iif lo table 123 2>/dev/null || true
	netns_exec ip rule del fwmark 7 table 100 2>/dev/null || true
	netns_exec ip route flush table 123 2>/dev/null || true
	netns_exec ip -6 route flush table 123 2>/dev/null || true
	netns_exec ip route flush table 100 2>/dev/null || true
	netns_exec sysctl -qw net.ipv4.tcp_fwmark_accept=0
}

add_readme_routing() {
	netns_exec ip rule add from 127.0.0.1/8 iif lo table 123
	netns_exec ip route add local 0.0.0.0/0 dev lo table 123
	netns_exec ip -6 rule add from ::1/128 iif lo table 123
	netns_exec ip -6 route add local ::/0 dev lo table 123
}

check() {
	run netns_exec "$MMPROXY" --check "$@"
	echo "$output"
}

# Runs, in the namespace, every command printed after "fix:".
apply_fixes() {
	local command
	while read -r command; do
		echo "# applying: $command"
		# shellcheck disable=SC2086
		netns_exec $command
	done < <(sed -n 's/^ *fix: //p' <<<"$output")
}

@test "--check passes every check, one [ok] line each, when the README's routing is in place" {
	add_readme_routing
	backend_start echo "$(port 1)"
	check -4 "127.0.0.1:$(port 1)" -6 "[::1]:$(port 1)"
	[ "$status" -eq 0 ]
	! grep -q '^\[fail\]' <<<"$output"
	[ "$(grep -c '^\[ok\]   ' <<<"$output")" -eq 10 ]
	grep -qx "\[ok\]   127.0.0.1:$(port 1) accepts a connection from 192.0.2.1 (spoofed)" <<<"$output"
	grep -qx "\[ok\]   \[::1\]:$(port 1) accepts a connection from 2001:db8::1 (spoofed)" <<<"$output"
	[ "${lines[-1]}" = "all 10 checks passed" ]
	# The probes were real connections: the application saw the spoofed ones.
	wait_for_log "$BACKEND_LOG" '^peer=192\.0\.2\.1:'
	wait_for_log "$BACKEND_LOG" '^peer=\[2001:db8::1\]:'
}

@test "--check without the routing fails, prints the README's commands, and they fix it" {
	backend_start echo "$(port 1)"
	check -4 "127.0.0.1:$(port 1)" -6 "[::1]:$(port 1)"
	[ "$status" -eq 1 ]
	grep -qx "\[ok\]   127.0.0.1:$(port 1) accepts connections" <<<"$output"
	grep -qx '       fix: ip rule add from 127.0.0.1/8 iif lo table 123' <<<"$output"
	grep -qx '       fix: ip route add local 0.0.0.0/0 dev lo table 123' <<<"$output"
	grep -qx '       fix: ip -6 rule add from ::1/128 iif lo table 123' <<<"$output"
	grep -qx '       fix: ip -6 route add local ::/0 dev lo table 123' <<<"$output"
	grep -q "^\[fail\] 127.0.0.1:$(port 1): replies from 127.0.0.1 to 192.0.2.1 do not come back to loopback" <<<"$output"
	[ "${lines[-1]}" = "8 of 10 checks failed" ]
	# No spoofed probe was sent while its replies would have been lost.
	! grep -q '^peer=192\.0\.2\.1:' "$BACKEND_LOG"

	apply_fixes
	check -4 "127.0.0.1:$(port 1)" -6 "[::1]:$(port 1)"
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "all 10 checks passed" ]
}

@test "--check with only the rule missing names only the rule" {
	backend_start echo "$(port 1)"
	netns_exec ip route add local 0.0.0.0/0 dev lo table 123
	check -4 "127.0.0.1:$(port 1)"
	[ "$status" -eq 1 ]
	grep -qx '\[ok\]   table 123 delivers every IPv4 address to lo' <<<"$output"
	[ "$(grep -c 'fix:' <<<"$output")" -eq 1 ]
	grep -qx '       fix: ip rule add from 127.0.0.1/8 iif lo table 123' <<<"$output"
}

@test "--check with --mark and --table suggests a fwmark rule in that table, then a way to mark the replies, and both work" {
	backend_start echo "$(port 1)"
	check -4 "127.0.0.1:$(port 1)" --mark 7 --table 100 --connect-timeout 1
	[ "$status" -eq 1 ]
	grep -qx '       fix: ip rule add fwmark 7 table 100' <<<"$output"
	grep -qx '       fix: ip route add local 0.0.0.0/0 dev lo table 100' <<<"$output"
	apply_fixes

	# Marked replies would come back now, but the application's carry no mark.
	check -4 "127.0.0.1:$(port 1)" --mark 7 --table 100 --connect-timeout 1
	[ "$status" -eq 1 ]
	grep -q "^\[fail\] 127.0.0.1:$(port 1): a connection from 192.0.2.1 (spoofed) failed: Connection timed out" <<<"$output"
	grep -qx '       fix: sysctl -w net.ipv4.tcp_fwmark_accept=1' <<<"$output"
	grep -qx '        or: iptables -t mangle -I PREROUTING -m mark --mark 7 -j CONNMARK --save-mark' <<<"$output"
	apply_fixes

	check -4 "127.0.0.1:$(port 1)" --mark 7 --table 100 --connect-timeout 1
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "all 5 checks passed" ]
}

@test "--check reports an application that does not listen, and exits 1" {
	add_readme_routing
	check -4 "127.0.0.1:$(port 1)"
	[ "$status" -eq 1 ]
	grep -q "^\[fail\] 127.0.0.1:$(port 1) does not accept connections: Connection refused" <<<"$output"
	grep -qx "\[ok\]   127.0.0.1:$(port 1): replies from 127.0.0.1 to 192.0.2.1 come back to loopback" <<<"$output"
}

@test "--check-from chooses the spoofed address of the probe; an address of this host is refused as one" {
	add_readme_routing
	backend_start echo "$(port 1)"
	check -4 "127.0.0.1:$(port 1)" --check-from 198.51.100.7
	[ "$status" -eq 0 ]
	wait_for_log "$BACKEND_LOG" '^peer=198\.51\.100\.7:'

	check -4 "127.0.0.1:$(port 1)" --check-from 127.0.0.5
	[ "$status" -eq 1 ]
	grep -qx '\[fail\] 127.0.0.5 is an address of this host: name another with --check-from' <<<"$output"

	check --check-from 192.0.2.300
	[ "$status" -eq 2 ]
}

@test "--check with -p udp checks the routing, and makes no connection" {
	add_readme_routing
	backend_start echo "$(port 1)"
	check -p udp -4 "127.0.0.1:$(port 1)"
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "all 3 checks passed" ]
	! grep -q 'accepts' <<<"$output"
	[ ! -s "$BACKEND_LOG" ]
}

@test "--check with --tproxy is a usage error" {
	check --tproxy
	[ "$status" -eq 2 ]
	grep -q -- '--check with --tproxy' <<<"$output"
}

@test "a listener started without the routing warns with the fix, connects nothing, and keeps running" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" -v 1
	wait_for_log "$MMPROXY_LOG" 'spoofing will not work: 127\.0\.0\.1:[0-9]+: replies from 127\.0\.0\.1 to 192\.0\.2\.1 do not come back'
	grep -q '  fix: ip rule add from 127.0.0.1/8 iif lo table 123' "$MMPROXY_LOG"
	grep -q '  fix: ip -6 route add local ::/0 dev lo table 123' "$MMPROXY_LOG"
	is_alive "$MMPROXY_PID"
	[ ! -s "$BACKEND_LOG" ]
}

@test "a UDP listener started without the routing warns too" {
	mmproxy_start -p udp -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" \
		--allowed-subnets "$ALLOWED_SUBNETS"
	wait_for_log "$MMPROXY_LOG" 'spoofing will not work'
	is_alive "$MMPROXY_PID"
}

@test "-q silences the start-up warning, and with the routing in place there is none" {
	mmproxy_start_listener "$(port 0)" "$(port 1)" -q
	kill_recorded
	! grep -q 'spoofing will not work' "$MMPROXY_LOG"

	add_readme_routing
	mmproxy_start_listener "$(port 2)" "$(port 1)" -v 1
	is_alive "$MMPROXY_PID"
	! grep -q 'spoofing will not work' "$MMPROXY_LOG"
}
