#!/usr/bin/env bats
# --metrics and SIGUSR1 end to end, TCP: a known mix of connections through
# a real listener, then every counter scraped with curl and read by a real
# Prometheus text parser (Debian's python3-prometheus-client, through
# tests/helpers/scrape.py), compared with what was sent and with the -v 2
# summary lines. Then the endpoint's manners, and scrapers that misbehave
# while connections are relayed.

load helpers/common
load helpers/metrics

LOADGEN=$REPO/tests/bench/loadgen

setup_file() {
	require_scrape_tools
	require_executable "$LOADGEN"
	common_setup_file
}

# All connections so far have ended and been counted.
_all_counted() {
	scrape "$1" && [ "$(metric mmproxy_connections_accepted_total)" = "$2" ] &&
		[ "$(metric mmproxy_connections_live)" = 0 ]
}

# The sum of NAME= over the -v 2 summary lines.
log_sum() {
	grep -oE " $1=[0-9]+ " "$MMPROXY_LOG" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }'
}

hex_of() {
	printf '%s' "$1" | od -An -tx1 | tr -d ' \n'
}

ENDS="done backend-closed health not-allowed not-diverted no-header bad-header
header-timeout header-truncated bind-failed backend-refused connect-timeout
client-reset backend-reset idle-timeout loop error"

@test "after a known mix of connections, every counter equals what was sent" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --header-timeout 1 --metrics "127.0.0.1:$(port 2)"
	wait_for_listen "$(port 2)"
	target=127.0.0.1:$(port 0)

	# 3 good ones, 1000 bytes each way.
	run ppclient -c 3 -q -s 192.0.2.10:41000 -n 1000 --half-close -w 20 "$target"
	[ "$output" = "connections=3 ok=3 failed=0" ]
	# 2 from a load balancer that is not in the list.
	ppclient -b 127.0.0.2 -n 10 -w 10 "$target" || true
	ppclient -b 127.0.0.2 -n 10 -w 10 "$target" || true
	# 1 that is no PROXY header, 2 that are bad ones.
	ppclient --garbage 64 -w 10 "$target" || true
	ppclient -2 --bad-crc32c -n 10 -w 10 "$target" || true
	ppclient --header-hex "$(hex_of $'PROXY TCP4 192.0.2.1 127.0.0.1 99999 443\r\n')" -w 10 "$target" || true
	# 1 header that never ends, 1 check that connects and closes, 1 reset
	# by the client once the target is connected.
	ppclient --header-hex "$(hex_of PROXY)" --hold-ms 3000 -w 10 "$target" || true
	ppclient --no-header --close -w 10 "$target" || true
	ppclient -s 192.0.2.11:41000 --hold-ms 300 --reset -w 10 "$target" || true

	wait_until 15 _all_counted "$(port 2)" 11
	cat "$TEST_DIR/scrape.txt"
	expect_metric 'mmproxy_connections_ended_total{end="done"}' 3
	expect_metric 'mmproxy_connections_ended_total{end="not-allowed"}' 2
	expect_metric 'mmproxy_connections_ended_total{end="no-header"}' 1
	expect_metric 'mmproxy_connections_ended_total{end="bad-header"}' 2
	expect_metric 'mmproxy_connections_ended_total{end="header-timeout"}' 1
	expect_metric 'mmproxy_connections_ended_total{end="health"}' 1
	expect_metric 'mmproxy_connections_ended_total{end="client-reset"}' 1
	# Every end reason, the ones above and the zeros, as the summary lines say.
	for end in $ENDS; do
		expect_metric "mmproxy_connections_ended_total{end=\"$end\"}" "$(grep -c " end=$end\$" "$MMPROXY_LOG")"
	done
	for reason in not-allowed not-diverted no-header bad-header header-timeout header-truncated loop; do
		expect_metric "mmproxy_connections_refused_total{reason=\"$reason\"}" \
			"$(metric "mmproxy_connections_ended_total{end=\"$reason\"}")"
	done
	expect_metric 'mmproxy_bad_headers_total{kind="v2-crc32c"}' 1
	expect_metric 'mmproxy_bad_headers_total{kind="v1-port"}' 1
	[ "$(grep -c '^mmproxy_bad_headers_total' "$TEST_DIR/scrape.txt")" -eq 14 ]
	[ "$(awk '/^mmproxy_bad_headers_total/ { s += $2 } END { print s }' "$TEST_DIR/scrape.txt")" -eq 2 ]
	expect_metric 'mmproxy_bytes_total{direction="up"}' 3000
	expect_metric 'mmproxy_bytes_total{direction="down"}' 3000
	expect_metric 'mmproxy_bytes_total{direction="up"}' "$(log_sum up)"
	expect_metric 'mmproxy_bytes_total{direction="down"}' "$(log_sum down)"
	[ "$(awk '/^mmproxy_backend_connect_failures_total/ { s += $2 } END { print s }' "$TEST_DIR/scrape.txt")" -eq 0 ]
	expect_metric 'mmproxy_reloads_total{result="ok"}' 0
	expect_metric 'mmproxy_allowed_subnets_entries' 2
	# A TCP listener shows no UDP families.
	! grep -q '^mmproxy_udp_' "$TEST_DIR/scrape.txt"
}

@test "a target that refuses is counted as a failed connect of class refused" {
	mmproxy_start_listener "$(port 0)" "$(port 1)" --metrics "127.0.0.1:$(port 2)"
	wait_for_listen "$(port 2)"
	ppclient -s 192.0.2.12:41000 -t hello -w 10 "127.0.0.1:$(port 0)" || true
	ppclient -s 192.0.2.12:41001 -t hello -w 10 "127.0.0.1:$(port 0)" || true
	wait_until 10 _all_counted "$(port 2)" 2
	expect_metric 'mmproxy_connections_ended_total{end="backend-refused"}' 2
	expect_metric 'mmproxy_backend_connect_failures_total{class="refused"}' 2
	expect_metric 'mmproxy_backend_connect_failures_total{class="timeout"}' 0
}

@test "a connection that is still open counts as live until it ends" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --metrics "127.0.0.1:$(port 2)"
	wait_for_listen "$(port 2)"
	start_bg client "$PPCLIENT" -s 192.0.2.13:41000 -t hello --hold-until "$TEST_DIR/go" \
		--half-close -w 20 "127.0.0.1:$(port 0)"
	wait_for_file_lines "$BACKEND_ACCEPTS" 1
	scrape "$(port 2)"
	expect_metric mmproxy_connections_accepted_total 1
	expect_metric mmproxy_connections_live 1
	touch "$TEST_DIR/go"
	wait_until 10 _all_counted "$(port 2)" 1
	expect_metric 'mmproxy_connections_ended_total{end="done"}' 1
	expect_metric 'mmproxy_bytes_total{direction="up"}' 5
}

@test "SIGUSR1 logs the counters as one line" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" -v 1
	run ppclient -c 2 -q -s 192.0.2.14:41000 -n 100 --half-close -w 20 "127.0.0.1:$(port 0)"
	[ "$output" = "connections=2 ok=2 failed=0" ]
	ppclient -b 127.0.0.2 -t x -w 10 "127.0.0.1:$(port 0)" || true
	kill -USR1 "$MMPROXY_PID"
	wait_for_log "$MMPROXY_LOG" ': metrics '
	line=$(grep ': metrics ' "$MMPROXY_LOG")
	echo "$line"
	[ "$(field accepted "$line")" = 3 ]
	[ "$(field live "$line")" = 0 ]
	[ "$(field ended "$line")" = done:2,not-allowed:1 ]
	[ "$(field bytes_up "$line")" = 200 ]
	[ "$(field subnet_entries "$line")" = 2 ]
	is_alive "$MMPROXY_PID"
}

@test "the endpoint answers GET /metrics only: 404 for another path, 405 for another method" {
	mmproxy_start_listener "$(port 0)" "$(port 1)" --metrics "127.0.0.1:$(port 2)"
	wait_for_listen "$(port 2)"
	url=http://127.0.0.1:$(port 2)
	run netns_exec curl -s -o /dev/null -w '%{http_code} %{content_type}' "$url/metrics"
	[ "$output" = "200 text/plain; version=0.0.4; charset=utf-8" ]
	run netns_exec curl -s -o /dev/null -w '%{http_code}' "$url/"
	[ "$output" = 404 ]
	run netns_exec curl -s -o /dev/null -w '%{http_code}' "$url/metrics/../x"
	[ "$output" = 404 ]
	run netns_exec curl -s -o /dev/null -w '%{http_code}' -X POST -d x=1 "$url/metrics"
	[ "$output" = 405 ]
	run netns_exec curl -s -I -o /dev/null -w '%{http_code}' "$url/metrics"
	[ "$output" = 405 ]
}

@test "without --metrics no metrics socket is opened and no endpoint process runs" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"
	# The backend's two sockets and mmproxy's one, nothing else.
	[ "$(netns_exec ss -Hltn | wc -l)" -eq 3 ]
	# The pool's waiting processes are mmproxy; no child is the endpoint.
	for pid in $(children_of "$MMPROXY_PID"); do
		[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != mmproxy-metrics ]
	done
}

@test "--metrics for one connection's process (inetd mode) is a usage error" {
	run netns_exec "$MMPROXY" --inetd --metrics 127.0.0.1:9 -4 127.0.0.1:9
	echo "$output"
	[ "$status" -eq 2 ]
	[[ $output == *"--metrics with --inetd: a process of one connection serves no endpoint"* ]]
}

@test "--metrics on an address in use stops start-up with the address and the reason" {
	backend_start echo "$(port 1)"
	run netns_exec "$MMPROXY" -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" --metrics "127.0.0.1:$(port 1)"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ $output == *"--metrics 127.0.0.1:$(port 1): Address already in use"* ]]
}

_established_to() {
	[ "$(netns_exec ss -Htn state established "dport = :$1" | wc -l)" -ge "$2" ]
}

@test "scrapers that send nothing or garbage do not slow proxying, and are cut off" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" -v 1 --metrics "127.0.0.1:$(port 2)"
	wait_for_listen "$(port 2)"
	# More silent scrapers than the endpoint has slots, and one sending
	# a megabyte of garbage.
	start_bg silent "$PPCLIENT" -c 12 -P 12 --no-header --hold-ms 30000 -w 30 "127.0.0.1:$(port 2)"
	start_bg garbage "$PPCLIENT" --garbage 60000 -n 1000000 -w 30 "127.0.0.1:$(port 2)"
	wait_until 10 _established_to "$(port 2)" 8

	# Ping-pong through mmproxy meanwhile: every exchange comes back.
	run netns_exec "$LOADGEN" pingpong -c 8 -s 6 -d 1 -t "127.0.0.1:$(port 0)" -p v2 --setup-timeout 10
	echo "$output"
	[ "$status" -eq 0 ]
	[[ $output == *RESULT\ [1-9]* ]]
	run ppclient -c 100 -P 10 -q -s 192.0.2.15:41000 -n 2000 --half-close -w 30 "127.0.0.1:$(port 0)"
	[ "$output" = "connections=100 ok=100 failed=0" ]

	# The garbage sender got its 400 and is gone; the silent ones are
	# reset at their deadline, so a real scrape is answered.
	wait_for_exit "$(cat "$TEST_DIR/garbage.pid")" 20
	grep -qE 'end=(reset|eof)' "$TEST_DIR/garbage.out"
	scrape "$(port 2)"
	[ "$(metric mmproxy_connections_accepted_total)" -ge 100 ]
	wait_for_exit "$(cat "$TEST_DIR/silent.pid")" 30
	[ "$(grep -c 'end=timeout' "$TEST_DIR/silent.out")" -eq 0 ]
	is_alive "$MMPROXY_PID"
}
