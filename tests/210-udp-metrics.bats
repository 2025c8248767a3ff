#!/usr/bin/env bats
# UDP mode's counters and reload end to end: known flows, drops and
# expiries through mmproxy -p udp, scraped with curl and read by a real
# Prometheus text parser (tests/helpers/scrape.py, Debian's
# python3-prometheus-client); SIGHUP admitting and removing a load
# balancer while a flow it opened lives on; SIGUSR1's line.

load helpers/common
load helpers/metrics

UDPCLIENT=$REPO/tests/helpers/udpclient
LB2=127.0.0.2

setup_file() {
	require_executable "$UDPCLIENT"
	require_scrape_tools
	common_setup_file
}

udpclient() {
	netns_exec timeout 60 "$UDPCLIENT" "$@"
}

udp_start() {
	backend_start echo "$(port 1)" -u "127.0.0.1:$(port 1)"
	wait_for_listen "$(port 1)" udp
	mmproxy_start -p udp -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 2 --metrics "127.0.0.1:$(port 2)" "$@"
	wait_for_listen "$(port 0)" udp
	wait_for_listen "$(port 2)"
}

_scraped_equals() {
	scrape "$(port 2)" && [ "$(metric "$1")" = "$2" ]
}

# udpclient's last line: every expected reply came back, intact.
assert_replies() {
	local summary
	summary=$(printf '%s\n' "$output" | tail -n 1)
	echo "# udpclient: $summary"
	[ "$status" -eq 0 ]
	[ "$(field replies "$summary")" = "$1" ]
	[ "$(field mismatches "$summary")" = 0 ]
}

@test "after known UDP flows, drops and expiries, every counter equals what was sent" {
	udp_start --close-after 1
	target=127.0.0.1:$(port 0)

	# 3 clients, 4 datagrams each, every one answered.
	run udpclient --clients 3 -n 4 -w 10 "$target"
	assert_replies 12
	wait_until 10 _scraped_equals mmproxy_udp_flows_expired_total 3
	expect_metric mmproxy_udp_flows_live 0

	# A bad datagram before a good one, three times; then one from a load
	# balancer that is not in the list.
	run udpclient --bad garbage -s 192.0.2.60:40000 -w 10 "$target"
	assert_replies 1
	run udpclient --bad stream -s 192.0.2.61:40000 -w 10 "$target"
	assert_replies 1
	run udpclient --bad v1 -s 192.0.2.62:40000 -w 10 "$target"
	assert_replies 1
	run udpclient -b "$LB2" -s 192.0.2.63:40000 --expect 0 "$target"
	[ "$status" -eq 0 ]

	wait_until 10 _scraped_equals 'mmproxy_udp_dropped_total{reason="not-allowed"}' 1
	cat "$TEST_DIR/scrape.txt"
	expect_metric 'mmproxy_udp_datagrams_total{path="from-lb"}' 19
	expect_metric 'mmproxy_udp_datagrams_total{path="to-backend"}' 15
	expect_metric 'mmproxy_udp_datagrams_total{path="from-backend"}' 15
	expect_metric 'mmproxy_udp_datagrams_total{path="to-lb"}' 15
	expect_metric 'mmproxy_udp_dropped_total{reason="bad-header"}' 2
	expect_metric 'mmproxy_udp_dropped_total{reason="not-dgram"}' 1
	expect_metric 'mmproxy_udp_dropped_total{reason="flow-failed"}' 0
	expect_metric 'mmproxy_udp_dropped_total{reason="send-failed"}' 0
	expect_metric mmproxy_udp_flows_opened_total 6
	expect_metric mmproxy_udp_flows_evicted_total 0
	# The backend saw exactly the datagrams counted as sent to it.
	[ "$(grep -c '^udp peer=' "$BACKEND_LOG")" -eq 15 ]
	# A UDP proxy shows no TCP families.
	! grep -q '^mmproxy_connections_' "$TEST_DIR/scrape.txt"
	wait_until 10 _scraped_equals mmproxy_udp_flows_expired_total 6
	expect_metric mmproxy_udp_flows_live 0
}

@test "at --max-flows, a new flow evicts the least recently used one, counted as evicted" {
	udp_start --max-flows 1
	run udpclient -s 192.0.2.64:40000 -w 10 "127.0.0.1:$(port 0)"
	assert_replies 1
	run udpclient -s 192.0.2.65:40000 -w 10 "127.0.0.1:$(port 0)"
	assert_replies 1
	wait_until 10 _scraped_equals mmproxy_udp_flows_evicted_total 1
	expect_metric mmproxy_udp_flows_opened_total 2
	expect_metric mmproxy_udp_flows_live 1
	expect_metric mmproxy_udp_flows_expired_total 0
}

@test "a UDP reload admits a new load balancer, and a flow it opened lives on after a reload removes it" {
	udp_start
	target=127.0.0.1:$(port 0)
	run udpclient -b "$LB2:$(port 5)" -s 192.0.2.66:40000 --expect 0 "$target"
	wait_until 10 _scraped_equals 'mmproxy_udp_dropped_total{reason="not-allowed"}' 1

	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 "$LB2/32"
	kill -HUP "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" ": reload: $ALLOWED_SUBNETS: 2 entries in force$"
	run udpclient -b "$LB2:$(port 5)" -s 192.0.2.67:40000 -n 3 -w 10 "$target"
	assert_replies 3

	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32
	kill -HUP "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" ": reload: $ALLOWED_SUBNETS: 1 entries in force$"
	# The same load balancer socket and client: the flow it has.
	run udpclient -b "$LB2:$(port 5)" -s 192.0.2.67:40000 -n 3 -w 10 "$target"
	assert_replies 3
	# Another client through it would be a new flow: refused.
	run udpclient -b "$LB2:$(port 5)" -s 192.0.2.68:40000 --expect 0 "$target"
	wait_until 10 _scraped_equals 'mmproxy_udp_dropped_total{reason="not-allowed"}' 2
	! grep -q '^udp peer=192\.0\.2\.68:' "$BACKEND_LOG"
	expect_metric mmproxy_udp_flows_opened_total 1
	expect_metric 'mmproxy_reloads_total{result="ok"}' 2
	expect_metric mmproxy_allowed_subnets_entries 1

	# A broken file changes nothing.
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32 "$LB2/32" nonsense
	kill -HUP "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" ": reload: $ALLOWED_SUBNETS:3: \"nonsense\": .*; keeping the 1 entries in force$"
	run udpclient -b "$LB2:$(port 5)" -s 192.0.2.69:40000 --expect 0 "$target"
	wait_until 10 _scraped_equals 'mmproxy_udp_dropped_total{reason="not-allowed"}' 3
	expect_metric 'mmproxy_reloads_total{result="failed"}' 1
}

@test "SIGUSR1 in UDP mode logs the UDP counters as one line" {
	udp_start
	run udpclient --clients 2 -n 2 -w 10 "127.0.0.1:$(port 0)"
	assert_replies 4
	kill -USR1 "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" ': metrics '
	line=$(grep ': metrics ' "$MMPROXY_LOG")
	echo "# $line"
	[ "$(field udp_datagrams "$line")" = from-lb:4,to-backend:4,from-backend:4,to-lb:4 ]
	[ "$(field udp_flows_live "$line")" = 2 ]
	[ "$(field udp_dropped "$line")" = - ]
}
