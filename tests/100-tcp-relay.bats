#!/usr/bin/env bats
# The TCP relay in standalone mode (forking listener): mmproxy reads the PROXY
# header, connects to the backend from the client's address and port, and
# moves every byte both ways until both sides close. tests/helpers/backend
# records the peer it saw and a CRC-32 of the bytes; tests/helpers/ppclient
# plays the load balancer and prints the same checksums from its side.

load helpers/common

# The one conn line (-v 2) for a client, once the connection has ended.
conn_line() {
	wait_for_log "$MMPROXY_LOG" "conn client=$1 " || return 1
	grep -E "conn client=$1 " "$MMPROXY_LOG" | tail -n 1
}

@test "an IPv4 client named in a v1 header reaches the backend from its own address and port" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.10:40000 -t hello --half-close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 5 ]

	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	[[ $line == "peer=192.0.2.10:40000 local=127.0.0.1:$(port 1) "* ]]
	[ "$(field bytes "$line")" = 5 ]
	[ "$(field crc "$line")" = "$(field crc_sent "$output")" ]
	conn=$(conn_line '192\.0\.2\.10:40000')
	[[ $conn == *" target=127.0.0.1:$(port 1) up=5 down=5 "*" end=done" ]]
}

@test "an IPv6 client named in a v2 header reaches the IPv6 backend from [2001:db8::10]:40001" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -2 -s '[2001:db8::10]:40001' -d '[::1]:443' -t hello --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]

	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	[[ $line == "peer=[2001:db8::10]:40001 local=[::1]:$(port 1) "* ]]
	[ "$(field crc "$line")" = "$(field crc_sent "$output")" ]
}

@test "a v1 header split byte by byte across segments is accepted" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.11:40000 --split 1 --split-delay 5 -t hello --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 5 ]

	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	[[ $line == "peer=192.0.2.11:40000 "* ]]
	[ "$(field bytes "$line")" = 5 ]
}

@test "a v2 header split byte by byte across segments is accepted" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -2 -s 192.0.2.12:40000 --split 1 --split-delay 5 -t hello --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]

	wait_for_file_lines "$BACKEND_LOG" 1
	[[ $(cat "$BACKEND_LOG") == "peer=192.0.2.12:40000 "*" bytes=5 "* ]]
}

@test "payload sent in the same write as the header reaches the backend intact" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.13:40000 --with-payload -n 100000 --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	v1_crc=$(field crc_sent "$output")
	[ "$(field crc_received "$output")" = "$v1_crc" ]

	run ppclient -2 -s 192.0.2.13:40001 --with-payload -n 100000 --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]

	wait_for_file_lines "$BACKEND_LOG" 2
	for client in 192.0.2.13:40000 192.0.2.13:40001; do
		line=$(grep "^peer=$client " "$BACKEND_LOG")
		[ "$(field bytes "$line")" = 100000 ]
		[ "$(field crc "$line")" = "$v1_crc" ]
	done
}

@test "16 MiB each way at the same time arrive intact on both sides" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.14:40000 -n 16777216 --half-close -w 60 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]
	[ "$(field sent "$output")" = 16777216 ]
	[ "$(field received "$output")" = 16777216 ]
	crc=$(field crc_sent "$output")
	[ "$(field crc_received "$output")" = "$crc" ]

	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	[ "$(field bytes "$line")" = 16777216 ]
	[ "$(field crc "$line")" = "$crc" ]
	[ "$(field sent "$line")" = 16777216 ]
	[ "$(field crc_sent "$line")" = "$crc" ]
}

@test "after the client shuts down writing, the backend's reply still reaches the client in full" {
	backend_start sink "$(port 1)" -R 1048576
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.15:40000 -n 1000 --half-close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]

	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	[ "$(field bytes "$line")" = 1000 ]
	[ "$(field end "$line")" = eof ]
	# The backend only replied after it saw our EOF: all of it came back.
	[ "$(field received "$output")" = 1048576 ]
	[ "$(field crc_received "$output")" = "$(field crc_sent "$line")" ]
}

@test "when the backend closes first, the client sees EOF and the connection's process exits" {
	backend_start close "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.16:40000 -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(field end "$output")" = eof ]

	conn=$(conn_line '192\.0\.2\.16:40000')
	[[ $conn =~ end=(backend-closed|done)$ ]]
	wait_until 10 no_busy_children "$MMPROXY_PID"
	is_alive "$MMPROXY_PID"
}

@test "when the backend is down, the client is closed promptly and the log names the target and the error" {
	# Nothing listens on port 1.
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.17:40000 -t hello -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]

	wait_for_log "$MMPROXY_LOG" "connect 127\.0\.0\.1:$(port 1) from 192\.0\.2\.17:40000: Connection refused"
	conn=$(conn_line '192\.0\.2\.17:40000')
	[[ $conn == *" end=backend-refused" ]]
	is_alive "$MMPROXY_PID"
}

@test "a client that sends nothing is dropped after --header-timeout and the timeout is logged" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --header-timeout 1

	run ppclient --no-header -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	# Not before the timeout it was given.
	[ "$(field ms "$output")" -ge 900 ]

	# The draft says "header timeout after 1 s"; any line naming the load
	# balancer and the 1 s will do.
	wait_for_log "$MMPROXY_LOG" "lb=127\.0\.0\.1:[0-9]+: .*(timeout|PROXY header).* after 1 s"
	wait_for_log "$MMPROXY_LOG" "conn .*end=header-timeout$"
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "a client that sends no PROXY header is dropped at once with a hint, and the backend sees nothing" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --header-timeout 5

	run ppclient --no-header -t $'GET / HTTP/1.0\r\n\r\n' -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	# At once: well before the 5 s header timeout.
	[ "$(field ms "$output")" -lt 4000 ]

	wait_for_log "$MMPROXY_LOG" "lb=127\.0\.0\.1:[0-9]+: no PROXY header: is send-proxy enabled on the load balancer\?"
	wait_for_log "$MMPROXY_LOG" "conn .*end=no-header$"
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "a load balancer outside the allowed subnets never reaches the backend and the refusal is logged" {
	write_allowed_subnets "$ALLOWED_SUBNETS" 127.0.0.1/32
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -b 127.0.0.2 -1 -s 192.0.2.18:40000 -t hello -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "refused lb=127\.0\.0\.2:[0-9]+: not in allowed subnets"
	[ ! -s "$BACKEND_ACCEPTS" ]

	# The allowed load balancer still gets through.
	run ppclient -b 127.0.0.1 -1 -s 192.0.2.18:40001 -t hello --half-close -w 20 "127.0.0.1:$(port 0)"
	[ "$(field end "$output")" = eof ]
	wait_for_file_lines "$BACKEND_LOG" 1
	[[ $(cat "$BACKEND_LOG") == "peer=192.0.2.18:40001 "* ]]
	! grep -q 192.0.2.18:40000 "$BACKEND_ACCEPTS"
}

@test "a v2 LOCAL health check is a normal end and logs no error" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -2 --local --close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$status" -eq 0 ]

	wait_for_log "$MMPROXY_LOG" "conn .*end=health$"
	# Only the conn line: no warning, no error (but the start-up's note
	# that the test runs mmproxy as root).
	run grep -v -e ': conn ' -e ': running as root' "$MMPROXY_LOG"
	echo "$output"
	[ "$status" -eq 1 ]
}

@test "a subnets file with a bad line stops mmproxy with exit 2 naming the file and the line, and nothing listens" {
	printf '127.0.0.1/32\n10.0.0.0/33\n::1/128\n' >"$ALLOWED_SUBNETS"

	run timeout 10 ip netns exec "$NETNS" "$MMPROXY" -l "127.0.0.1:$(port 0)" \
		-4 "127.0.0.1:$(port 1)" --allowed-subnets "$ALLOWED_SUBNETS" -v 2
	echo "$output"
	[ "$status" -eq 2 ]
	[[ $output == *"$ALLOWED_SUBNETS:2: \"10.0.0.0/33\""* ]]
	_is_not_listening "$(port 0)"
}

@test "a missing subnets file stops mmproxy with exit 2, and nothing listens" {
	run timeout 10 ip netns exec "$NETNS" "$MMPROXY" -l "127.0.0.1:$(port 0)" \
		-4 "127.0.0.1:$(port 1)" --allowed-subnets "$TEST_DIR/no-such-file" -v 2
	echo "$output"
	[ "$status" -eq 2 ]
	[[ $output == *"$TEST_DIR/no-such-file"* ]]
	_is_not_listening "$(port 0)"
}

@test "a TCP4 header arriving over an IPv6 load balancer connection goes to the -4 target" {
	backend_start echo "$(port 1)"
	LISTEN_ADDR=::1 mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.19:40000 -d 127.0.0.1:443 -t hello --half-close -w 20 \
		"[::1]:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]

	wait_for_file_lines "$BACKEND_LOG" 1
	[[ $(cat "$BACKEND_LOG") == "peer=192.0.2.19:40000 local=127.0.0.1:$(port 1) "* ]]
	conn=$(conn_line '192\.0\.2\.19:40000')
	[[ $conn == *" lb=[::1]:"*" target=127.0.0.1:$(port 1) "* ]]
}

@test "a slow client reading a large reply after the backend closed costs no CPU while it waits" {
	# 4 MiB is more than the sockets on the way can hold: mmproxy keeps
	# bytes pending, with the backend's FIN in and its own side shut.
	backend_start sink "$(port 1)" -R 4194304
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	start_bg slow "$PPCLIENT" -1 -s 192.0.2.19:40000 -t request --half-close \
		--read-after-ms 2500 -w 20 -o "$TEST_DIR/reply" "127.0.0.1:$(port 0)"
	slow_pid=$BG_PID
	wait_for_file_lines "$BACKEND_LOG" 1
	child=$(busy_children_of "$MMPROXY_PID")
	[ -n "$child" ]
	ticks=$(cpu_ticks_during "$child" 1)
	echo "child $child used $ticks ticks while the client did not read"
	[ "$ticks" -le 5 ]

	wait_for_exit "$slow_pid"
	output=$(cat "$TEST_DIR/slow.out")
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 4194304 ]
	[ "$(field crc_received "$output")" = "$(field crc_sent "$(cat "$BACKEND_LOG")")" ]
}

@test "a v2 header with 60,000 bytes of TLVs, split across segments, is read whole and the payload after it arrives intact" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	# One NOOP TLV (type 0x04) of 60,000 zero bytes: far past the first
	# buffer, so the header is peeked again into a bigger one.
	tlv="04ea60$(printf '%0120000d' 0)"
	run ppclient -2 -s 192.0.2.18:40000 --tlv "$tlv" --split 16384 --split-delay 50 \
		-n 100000 --half-close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 100000 ]
	wait_for_log "$BACKEND_LOG" "^peer=192\.0\.2\.18:40000 .* bytes=100000 crc=$(field crc_sent "$output") "
}

@test "a v2 header over 640 bytes whose end arrives with the payload and the FIN is read whole" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	# A 1000-byte NOOP TLV: the header's first piece leaves mmproxy waiting,
	# then its end, the payload and the half-close arrive together.
	tlv="0403e8$(printf '%02000d' 0)"
	for i in 1 2 3 4 5 6; do
		run ppclient -2 -s "192.0.2.17:4000$i" --tlv "$tlv" --split 600 --split-delay 50 \
			--with-payload -t hello --half-close -w 10 "127.0.0.1:$(port 0)"
		echo "$output"
		[ "$(field end "$output")" = eof ]
		[ "$(field received "$output")" = 5 ]
	done
	! grep -q header-truncated "$MMPROXY_LOG" || false
}
