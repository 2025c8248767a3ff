# tests/helpers/metrics.bash: scraping mmproxy's --metrics endpoint in a
# test, for the bats files that load it after helpers/common.
#
#   scrape PORT                GET /metrics with curl; the samples, parsed by
#                              Debian's prometheus_client (scrape.py), go to
#                              $TEST_DIR/scrape.txt, one "NAME{LABELS} VALUE" a line
#   metric NAME{LABELS}        its value in the last scrape; fails when absent
#   expect_metric NAME VALUE   fails, saying why, unless the last scrape has it
#   require_scrape_tools       fails, saying what to install, without curl or
#                              Debian's python3-prometheus-client (setup_file)

SCRAPE=$REPO/tests/helpers/scrape.py

require_scrape_tools() {
	[ -x /usr/bin/curl ] || {
		echo "# curl is missing: apt-get install curl" >&2
		return 1
	}
	/usr/bin/python3 -c 'import prometheus_client.parser' || {
		echo "# python3-prometheus-client is missing: apt-get install python3-prometheus-client" >&2
		return 1
	}
}

scrape() {
	netns_exec curl -sSf --max-time 10 "http://127.0.0.1:$1/metrics" >"$TEST_DIR/scrape.raw" &&
		/usr/bin/python3 "$SCRAPE" <"$TEST_DIR/scrape.raw" >"$TEST_DIR/scrape.txt"
}

metric() {
	awk -v name="$1" '$1 == name { print $2; found = 1 } END { exit !found }' "$TEST_DIR/scrape.txt"
}

expect_metric() {
	local got
	got=$(metric "$1") || {
		echo "# $1 is not in the scrape" >&2
		return 1
	}
	if [ "$got" != "$2" ]; then
		echo "# $1 is $got, expected $2" >&2
		return 1
	fi
}
