#!/usr/bin/env bats
# The benchmark (tests/bench/run, `make bench`) is not a test of speed: this
# only checks that a one-second run of every scenario completes and prints
# its table, so the benchmark does not rot. Numbers are never asserted.

setup() {
	REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
	for program in mmproxy tests/bench/loadgen tests/bench/echo tests/bench/forkcost; do
		[ -x "$REPO/$program" ] || {
			echo "# $program is not built: run make test-programs" >&2
			return 1
		}
	done
}

# The table line of scenario $1 (the first: the CPU section repeats names).
row() {
	grep -m1 -E "^$1 " <<<"$output"
}

@test "a one-second benchmark run completes and prints a ratio to direct for every scenario, and the header parse time" {
	cd "$REPO"
	run env BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_IDLE_CONNS=50 \
		BENCH_PINGPONG_CONNS=10 BENCH_RESULTS_DIR="$BATS_TEST_TMPDIR" \
		BENCH_EXTRA= BENCH_SCENARIOS= BENCH_PER_CONNECTION=0 timeout 120 tests/bench/run
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"scenario "*" direct "*" mmproxy "*" ratio"* ]]
	for scenario in pingpong bulk-echo bulk-oneway-1 bulk-oneway-8 \
		connrate udp-oneway udp-rr; do
		line=$(row "$scenario")
		[ -n "$line" ] || { echo "no row for $scenario"; return 1; }
		read -r _ _ direct proxied ratio _ <<<"$line"
		[[ $direct =~ ^[0-9.]+$ && $proxied =~ ^[0-9.]+$ ]] ||
			{ echo "$scenario: no numbers: $line"; return 1; }
		[[ $ratio =~ ^[0-9]+\.[0-9]{2}$ ]] ||
			{ echo "$scenario: no ratio: $line"; return 1; }
	done
	# idle has no direct counterpart: a proxy's memory per connection.
	read -r _ unit direct proxied ratio _ <<<"$(row idle)"
	[ "$unit" = KiB/conn ]
	[ "$direct" = - ]
	[ "$ratio" = n/a ]
	[[ $proxied =~ ^[0-9]+\.[0-9]$ ]]
	# ... and what the host gives up for it, beside direct's own.
	read -r _ unit direct proxied ratio _ <<<"$(row idle-system)"
	[ "$unit" = KiB/conn ]
	[[ $direct =~ ^-?[0-9]+\.[0-9]$ ]]
	[[ $proxied =~ ^\+-?[0-9]+\.[0-9]$ ]]
	# The machine's fork cost, and the floor of a process per connection.
	[[ "$output" =~ "fork + exit + wait of a small static process: "[0-9]+" us" ]]
	[[ "$output" =~ "the floor of a process per connection), median: "-?[0-9.]+" KiB" ]]
	# The proxy's CPU per unit of work is measured too.
	read -r _ unit cpu _ <<<"$(grep -A1 '^CPU time' <<<"$output" | tail -n 1)"
	[ "$unit" = us/msg ]
	[[ $cpu =~ ^[0-9]+\.[0-9]{2}$ ]]
	# So is the parse time of the largest valid PROXY header.
	read -r _ bytes us parses <<<"$(grep -E '^v2-largest-valid ' <<<"$output")"
	[ "$bytes" = 65551 ]
	[[ $us =~ ^[0-9]+\.[0-9]{3}$ && $parses =~ ^[0-9]+$ ]]
	# The table is saved.
	ls "$BATS_TEST_TMPDIR"/*.txt
}
