#!/usr/bin/env bats
# The kept fuzz corpus (tests/fuzz/corpus: seeds and any past crashers)
# replayed through the fuzz harness's property checks, under ASan and UBSan,
# without needing clang or libFuzzer. `make fuzz` explores further.

@test "every input in the kept fuzz corpus passes the parser's property checks" {
	run "$BATS_TEST_DIRNAME/fuzz/replay_proxyhdr" "$BATS_TEST_DIRNAME/fuzz/corpus"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"replayed "* ]]
}

@test "every input in the kept subnets fuzz corpus passes the subnet parser's property checks" {
	run "$BATS_TEST_DIRNAME/fuzz/replay_subnets" "$BATS_TEST_DIRNAME/fuzz/subnets-corpus"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"replayed "* ]]
}

@test "every input in the kept metrics endpoint corpus passes the request judge's property checks" {
	run "$BATS_TEST_DIRNAME/fuzz/replay_metrics_http" "$BATS_TEST_DIRNAME/fuzz/metrics-http-corpus"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"replayed "* ]]
}
