#!/usr/bin/env bats
# Where a connection goes (endpoint.c), checked without sockets: from which
# client address to which target, for every kind of header. Each test runs
# one group of tests/unit/endpoint_test (built by `make test`, under ASan
# and UBSan); the cases are tables in tests/unit/endpoint_test.c.

run_group() {
	run "$BATS_TEST_DIRNAME/unit/endpoint_test" "$1"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"ok "* ]]
	[[ "$output" != *"FAIL "* ]]
}

@test "a header's client reaches the target of its own family; LOCAL, UNKNOWN and a self-naming header connect from our own address" {
	run_group choose
}

@test "the client a header names is unmapped from IPv4-mapped IPv6, and LOCAL and UNKNOWN name none" {
	run_group client
}

@test "--tproxy goes to the original destination unless -4 or -6 names a target for its family" {
	run_group tproxy
}
