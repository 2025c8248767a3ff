#!/usr/bin/env bats
# The allow-list: which load balancers may send PROXY headers.
# Each test runs one group of tests/unit/subnets_test (built by `make test`);
# the cases themselves are tables in tests/unit/subnets_test.c.

run_group() {
	run "$BATS_TEST_DIRNAME/unit/subnets_test" "$@"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"ok "* ]]
	[[ "$output" != *"FAIL "* ]]
}

@test "IPv4 and IPv6 CIDR entries parse" {
	run_group cidr
}

@test "a bare IPv4 address means /32" {
	run_group "a bare IPv4 address is /32"
}

@test "a bare IPv6 address means /128" {
	run_group "a bare IPv6 address is /128"
}

@test "blank lines, comments, surrounding blanks and CRLF endings are ignored" {
	run_group layout
}

@test "host bits past the prefix are cleared, with one warning per line" {
	run_group hostbits
}

@test "a prefix over 32 is an error naming the line" {
	run_group "a prefix over 32 is an error"
}

@test "a bad prefix length is an error with its reason" {
	run_group prefix
}

@test "a bad address or extra text on a line is an error" {
	run_group address
}

@test "an error names the right line and escapes what it quotes" {
	run_group report
}

@test "a file without any subnet is an error, not an allow-nobody list" {
	run_group empty
}

@test "a failed parse leaves the table empty and a second parse appends" {
	run_group table
}

@test "addresses match up to the edges of a range and not one past" {
	run_group match
}

@test "a v4-mapped IPv6 peer matches IPv4 entries and nothing else crosses families" {
	run_group mapped
}

@test "an unreadable or missing file is an error on line 0" {
	run_group load
}

@test "Cloudflare's published ranges load and match" {
	run_group cloudflare "$BATS_TEST_DIRNAME/unit/data/cloudflare-ranges.txt"
}

@test "a 10,000-line file loads and matches" {
	run_group big "$BATS_TEST_TMPDIR/allowed-10000.txt"
}
