#!/usr/bin/env bats
# The counters' texts, the endpoint's request judge and the reload of the
# allowed subnets, piece by piece. Each test runs one group of
# tests/unit/metrics_test (built by `make test`, under ASan and UBSan); the
# cases themselves are tables in tests/unit/metrics_test.c.

run_group() {
	run "$BATS_TEST_DIRNAME/unit/metrics_test" "$@"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"ok "* ]]
	[[ "$output" != *"FAIL "* ]]
}

@test "each counter shows in the Prometheus text under its name and labels" {
	run_group prometheus
}

@test "every sample follows its family's HELP and TYPE lines" {
	run_group format
}

@test "the SIGUSR1 log line holds the same counters and fits one line" {
	run_group logline
}

@test "a text cut by a small buffer is terminated and says the size it needs" {
	run_group truncate
}

@test "the endpoint answers GET /metrics only and judges garbage at once" {
	run_group judge
}

@test "failed connects to the target are classed by errno" {
	run_group errno
}

@test "counts added by several processes at once are exact" {
	run_group shared
}

@test "a reload replaces the allowed subnets only when the whole file is good" {
	run_group reload
}

@test "the metrics unit test refuses a group it does not know" {
	run "$BATS_TEST_DIRNAME/unit/metrics_test" no-such-group
	[ "$status" -eq 2 ]
}
