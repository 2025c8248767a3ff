#!/usr/bin/env bats
# The command line (options.c), checked without sockets: every option in
# every spelling, every bad value, and the one place that chooses the mode
# and refuses the options that mean nothing in it. Each test runs one group
# of tests/unit/options_test (built by `make test`, under ASan and UBSan);
# the cases are tables in tests/unit/options_test.c.

run_group() {
	run "$BATS_TEST_DIRNAME/unit/options_test" "$1"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"ok "* ]]
	[[ "$output" != *"FAIL "* ]]
}

@test "every option, in each of its spellings, sets what it names, and the defaults are go-mmproxy's" {
	run_group parse
}

@test "every bad value and unknown word is refused with a message naming the option and the value" {
	run_group errors
}

@test "the mode follows the options and what was handed over, and options meaningless in it are refused" {
	run_group modes
}

@test "--help's text starts with the usage and says which options each mode refuses" {
	run_group help
}
