#!/usr/bin/env bats
# The relay (relay.c) on its own, over real TCP pairs on 127.0.0.1: half-
# close passed on each way, a reset on either side, bulk through splice()
# and without a pipe, and bytes the caller peeked (a PROXY header) dropped.
# Each test runs one case of tests/unit/relay_test (built by `make test`,
# under ASan and UBSan); the cases are a table in tests/unit/relay_test.c.

run_case() {
	run timeout 60 "$BATS_TEST_DIRNAME/unit/relay_test" "$1"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == "ok $1" ]]
}

@test "the client's half-close reaches the backend, whose reply still flows" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "the backend's half-close reaches the client, whose bytes still flow" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "a reset from the client ends the relay as the client's" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "a reset from the backend ends the relay as the backend's" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "1 MiB each way arrives intact through splice()" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "1 MiB each way arrives intact when no pipe can be made" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "skipped bytes are dropped and what came with them is relayed" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "skipped bytes that came alone are dropped, and later bytes flow" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "after skipped bytes, 1 MiB each way arrives intact through splice()" {
	run_case "$BATS_TEST_DESCRIPTION"
}

@test "after skipped bytes, 1 MiB each way arrives intact without a pipe" {
	run_case "$BATS_TEST_DESCRIPTION"
}
