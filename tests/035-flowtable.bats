#!/usr/bin/env bats
# The UDP flow table (flowtable.c), checked without sockets: find, insert,
# expire in order of last activity, the cap. Each test runs one group of
# tests/unit/flowtable_test (built by `make test`, under ASan and UBSan);
# the scripts are tables in tests/unit/flowtable_test.c.

run_group() {
	run "$BATS_TEST_DIRNAME/unit/flowtable_test" "$1"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"ok "* ]]
	[[ "$output" != *"FAIL "* ]]
}

@test "flows are found by load balancer and client, expire oldest first at the idle limit, and stop at the cap" {
	run_group scripts
}

@test "a full table of 65,536 flows finds every one and lets no more in" {
	run_group many
}
