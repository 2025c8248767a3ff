#!/usr/bin/env bats
# The PROXY header parser and builders (proxyhdr.c), checked without sockets.
# Each test runs one group of tests/unit/proxyhdr_test (built by `make test`,
# under ASan and UBSan); the cases are tables in tests/unit/proxyhdr_test.c.

run_group() {
	run "$BATS_TEST_DIRNAME/unit/proxyhdr_test" "$1"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"ok "* ]]
	[[ "$output" != *"FAIL "* ]]
}

@test "well-formed v1 lines for TCP4, TCP6 and UNKNOWN are accepted" {
	run_group v1-accept
}

@test "v1 lines that break the spec in any field are refused with the right reason" {
	run_group v1-invalid
}

@test "a partial header is refused as soon as it cannot become valid, and waits otherwise" {
	run_group early
}

@test "well-formed v2 headers of every family, LOCAL included, are accepted" {
	run_group v2-accept
}

@test "v2 headers with a bad signature, version, command, family, length, TLV or checksum are refused" {
	run_group v2-invalid
}

@test "a valid header split at any byte waits for the rest, and payload after it is not counted" {
	run_group split
}

@test "headers built by proxyhdr_build_v1 and _v2 parse back to the same addresses" {
	run_group roundtrip
}

@test "proxyhdr_find_tlv finds the first TLV of a type and nothing in v1" {
	run_group tlv
}

@test "CRC32C matches the RFC 3720 check values and a bit-by-bit reference, by CPU instruction and by table" {
	run_group crc
}

@test "a header with more than one CRC32C TLV is refused, and the largest valid header is accepted" {
	run_group crc-tlv
}

@test "every parse error has its own sentence" {
	run_group strerror
}

@test "the unit test refuses a group it does not know" {
	run "$BATS_TEST_DIRNAME/unit/proxyhdr_test" no-such-group
	[ "$status" -eq 2 ]
}
