#!/usr/bin/env bats
# The command line: go-mmproxy's and cloudflare mmproxy's command lines work
# unchanged, each option does what --help says (checked end to end, with a
# real backend recording the peer it saw), bad arguments stop mmproxy at once
# with one line and exit 2, and the defaults are go-mmproxy's.

load helpers/common

# The one conn line (-v 2) for a client, once the connection has ended.
conn_line() {
	wait_for_log "$MMPROXY_LOG" "conn client=$1 " || return 1
	grep -E "conn client=$1 " "$MMPROXY_LOG" | tail -n 1
}

# A v1 and a v2 client through the listener on port $1 reach the backend
# from their own addresses; $2 tells the clients apart (192.0.2.$2).
relays_v1_and_v2() {
	local listen_port=$1 host=192.0.2.$2 version line
	for version in 1 2; do
		run ppclient "-$version" -s "$host:4000$version" -t hello --half-close -w 20 \
			"127.0.0.1:$listen_port"
		echo "$output"
		[ "$status" -eq 0 ]
		[ "$(field end "$output")" = eof ]
		[ "$(field received "$output")" = 5 ]
	done
	wait_for_file_lines "$BACKEND_LOG" 2
	for version in 1 2; do
		line=$(grep "^peer=$host:4000$version " "$BACKEND_LOG")
		echo "$line"
		[ "$(field bytes "$line")" = 5 ]
	done
}

# ---- the other mmproxies' command lines

@test "go-mmproxy's documented command line, single dashes, relays v1 and v2 clients with their addresses" {
	backend_start echo "$(port 1)"
	mmproxy_start -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" -6 "[::1]:$(port 1)" \
		-allowed-subnets "$ALLOWED_SUBNETS" -mark 0 -v 2 -listeners 2 -p tcp -close-after 30
	wait_for_listen "$(port 0)"

	relays_v1_and_v2 "$(port 0)" 10
	conn_line '192\.0\.2\.10:40001'
	conn_line '192\.0\.2\.10:40002'
}

@test "go-mmproxy's command line in the -flag=value and --flag=value forms relays v1 and v2 clients" {
	backend_start echo "$(port 1)"
	mmproxy_start -l="127.0.0.1:$(port 0)" --4="127.0.0.1:$(port 1)" -6="[::1]:$(port 1)" \
		--allowed-subnets="$ALLOWED_SUBNETS" -mark=0 --v=2 -listeners=2 --p=tcp \
		--close-after=30
	wait_for_listen "$(port 0)"

	relays_v1_and_v2 "$(port 0)" 11
	conn_line '192\.0\.2\.11:40001'
}

@test "cloudflare mmproxy's documented command line relays, and -v alone logs one line per connection" {
	backend_start echo "$(port 1)"
	mmproxy_start -a "$ALLOWED_SUBNETS" -l "127.0.0.1:$(port 0)" -4 "127.0.0.1:$(port 1)" \
		-6 "[::1]:$(port 1)" -m 0 -t 100 --do-not-sandbox --force-real-client-port -v
	wait_for_listen "$(port 0)"

	relays_v1_and_v2 "$(port 0)" 12
	conn=$(conn_line '192\.0\.2\.12:40001')
	[[ $conn == *" target=127.0.0.1:$(port 1) up=5 down=5 "*" end=done" ]]
	conn_line '192\.0\.2\.12:40002'
}

@test "cloudflare mmproxy's long options relay, and -q logs no line per connection" {
	backend_start echo "$(port 1)"
	mmproxy_start --allowed-networks "$ALLOWED_SUBNETS" --listen-addr "127.0.0.1:$(port 0)" \
		--target-addr4 "127.0.0.1:$(port 1)" --target-addr6 "[::1]:$(port 1)" -q
	wait_for_listen "$(port 0)"

	relays_v1_and_v2 "$(port 0)" 13
	# Once both connections are over, nothing was logged.
	wait_until 10 no_busy_children "$MMPROXY_PID"
	cat "$MMPROXY_LOG"
	[ ! -s "$MMPROXY_LOG" ]
}

@test "cloudflare mmproxy's --verbose means one line per connection" {
	backend_start echo "$(port 1)"
	mmproxy_start --allowed-networks "$ALLOWED_SUBNETS" --listen-addr "127.0.0.1:$(port 0)" \
		--target-addr4 "127.0.0.1:$(port 1)" --target-addr6 "[::1]:$(port 1)" --verbose
	wait_for_listen "$(port 0)"

	relays_v1_and_v2 "$(port 0)" 14
	conn_line '192\.0\.2\.14:40001'
}

# ---- what each option does

@test "--mark 123 sets fwmark 0x7b on the connection to the backend" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --mark 123
	release=$TEST_DIR/release

	start_bg client "$PPCLIENT" -1 -s 192.0.2.20:40000 -t hello --hold-until "$release" \
		--half-close -w 20 "127.0.0.1:$(port 0)"
	client_pid=$BG_PID
	wait_for_log "$BACKEND_ACCEPTS" "peer=192\.0\.2\.20:40000 "

	# The backend-side socket of mmproxy: local is the spoofed client.
	sockets=$(netns_exec ss -tienH state established "src 192.0.2.20:40000")
	echo "$sockets"
	[ "$(echo "$sockets" | grep -c '192\.0\.2\.20:40000')" = 1 ]
	[[ $sockets == *"127.0.0.1:$(port 1)"* ]]
	[[ $sockets == *"fwmark:0x7b"* ]]
	# The load balancer's side carries no mark.
	lb_side=$(netns_exec ss -tienH state established "dst 127.0.0.1:$(port 0)")
	echo "$lb_side"
	[ -n "$lb_side" ]
	[[ $lb_side != *fwmark* ]]

	touch "$release"
	wait_for_exit "$client_pid"
	[ "$(field end "$(cat "$TEST_DIR/client.out")")" = eof ]
}

@test "--dynamic-destination connects to the destination named in the header (port A to A, port B to B), not to -4" {
	backend_start echo "$(port 1)"
	log2=$TEST_DIR/backend2.log
	start_bg backend2 "$BACKEND" -t "127.0.0.1:$(port 2)" -o "$log2" -m echo
	wait_for_listen "$(port 2)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --dynamic-destination

	run ppclient -1 -s 192.0.2.21:40000 -d "127.0.0.1:$(port 2)" -t hello --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 5 ]
	run ppclient -2 -s 192.0.2.21:40001 -d "127.0.0.1:$(port 2)" -t hello --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]

	# A header naming another port reaches the application on that port.
	log3=$TEST_DIR/backend3.log
	start_bg backend3 "$BACKEND" -t "127.0.0.1:$(port 3)" -o "$log3" -m echo
	wait_for_listen "$(port 3)"
	run ppclient -2 -s 192.0.2.21:40002 -d "127.0.0.1:$(port 3)" -t hello --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]

	wait_for_file_lines "$log2" 2
	grep -q "^peer=192.0.2.21:40000 local=127.0.0.1:$(port 2) bytes=5 " "$log2"
	grep -q "^peer=192.0.2.21:40001 local=127.0.0.1:$(port 2) bytes=5 " "$log2"
	wait_for_file_lines "$log3" 1
	grep -q "^peer=192.0.2.21:40002 local=127.0.0.1:$(port 3) bytes=5 " "$log3"
	[ "$(wc -l <"$log3")" -eq 1 ]
	conn=$(conn_line '192\.0\.2\.21:40000')
	[[ $conn == *" target=127.0.0.1:$(port 2) "* ]]
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "without --dynamic-destination the header's destination is ignored and -4 is used" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.22:40000 -d "127.0.0.1:$(port 2)" -t hello --half-close -w 20 \
		"127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	wait_for_file_lines "$BACKEND_LOG" 1
	[[ $(cat "$BACKEND_LOG") == "peer=192.0.2.22:40000 local=127.0.0.1:$(port 1) "* ]]
}

@test "a client port held by a local listener fails the connection with bind-failed, without --port-fallback" {
	backend_start echo "$(port 1)"
	start_bg holder socat TCP-LISTEN:40000,bind=192.0.2.23,transparent,fork /dev/null
	wait_for_listen 40000
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	run ppclient -1 -s 192.0.2.23:40000 -t hello -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[[ $(field end "$output") =~ ^(eof|reset)$ ]]
	[ "$(field received "$output")" = 0 ]
	wait_for_log "$MMPROXY_LOG" "bind 192\.0\.2\.23:40000: Address already in use"
	conn=$(conn_line '192\.0\.2\.23:40000')
	[[ $conn == *" end=bind-failed" ]]
	[ ! -s "$BACKEND_ACCEPTS" ]
}

@test "with --port-fallback, a client port held by a local listener is replaced by an ephemeral one" {
	backend_start echo "$(port 1)"
	start_bg holder socat TCP-LISTEN:40000,bind=192.0.2.24,transparent,fork /dev/null
	wait_for_listen 40000
	mmproxy_start_listener "$(port 0)" "$(port 1)" --port-fallback

	run ppclient -1 -s 192.0.2.24:40000 -t hello --half-close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 5 ]
	wait_for_file_lines "$BACKEND_LOG" 1
	line=$(cat "$BACKEND_LOG")
	[[ $line == "peer=192.0.2.24:"* ]]
	[[ $line != "peer=192.0.2.24:40000 "* ]]
}

# The same client address and port, twice at once, to the same backend (two
# load balancers naming one client, or a client port reused while the first
# connection lives): the second connection's 4-tuple is taken.
second_connection_same_client() {
	local client=$1 release=$TEST_DIR/release
	start_bg first "$PPCLIENT" -1 -s "$client" -t first-connection --hold-until "$release" \
		--half-close -w 20 "127.0.0.1:$(port 0)"
	FIRST_PID=$BG_PID
	wait_for_log "$BACKEND_ACCEPTS" "peer=${client//./\\.} "
	run ppclient -1 -s "$client" -t hello --half-close -w 20 "127.0.0.1:$(port 0)"
	echo "$output"
	SECOND_OUTPUT=$output
	touch "$release"
	wait_for_exit "$FIRST_PID"
}

@test "a second connection from a client address and port already connected to the backend fails and is logged, without --port-fallback" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)"

	second_connection_same_client 192.0.2.25:40000
	[[ $(field end "$SECOND_OUTPUT") =~ ^(eof|reset)$ ]]
	[ "$(field received "$SECOND_OUTPUT")" = 0 ]
	# bind() succeeds (SO_REUSEADDR), connect() finds the 4-tuple taken.
	wait_for_log "$MMPROXY_LOG" \
		"connect 127\.0\.0\.1:$(port 1) from 192\.0\.2\.25:40000: Cannot assign requested address"
	wait_for_log "$MMPROXY_LOG" "conn client=192\.0\.2\.25:40000 .* up=0 down=0 .*end=backend-refused$"
	# The backend saw the first connection only.
	[ "$(grep -c . "$BACKEND_ACCEPTS")" = 1 ]
}

@test "with --port-fallback, a second connection from a client address and port already connected gets an ephemeral port" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --port-fallback

	second_connection_same_client 192.0.2.26:40000
	[ "$(field end "$SECOND_OUTPUT")" = eof ]
	[ "$(field received "$SECOND_OUTPUT")" = 5 ]
	wait_for_file_lines "$BACKEND_LOG" 2
	cat "$BACKEND_LOG"
	[ -z "$(grep '^peer=192\.0\.2\.26:40000 .* bytes=5 ' "$BACKEND_LOG")" ]
	grep -E '^peer=192\.0\.2\.26:[0-9]+ .* bytes=5 ' "$BACKEND_LOG"
}

@test "--listeners 2 runs two accept processes that serve 20 connections and stop together on SIGTERM" {
	backend_start echo "$(port 1)"
	mmproxy_start_listener "$(port 0)" "$(port 1)" --listeners 2

	# Two listening sockets on the port, one in each accept process.
	wait_until 10 eval '[ "$(netns_exec ss -ltnpH "sport = :$(port 0)" | grep -c .)" = 2 ]'
	listening=$(netns_exec ss -ltnpH "sport = :$(port 0)")
	echo "$listening"
	# The sibling is the first one's child on the other socket (each
	# socket is held by its accept process and that one's pool).
	sibling=$(grep -v "pid=$MMPROXY_PID," <<<"$listening" | grep -o 'pid=[0-9]*' |
		cut -d= -f2 | grep -xF "$(children_of "$MMPROXY_PID")")
	[ "$(echo "$sibling" | grep -c .)" = 1 ]
	[[ $listening == *"pid=$MMPROXY_PID,"* ]]
	[[ $listening == *"pid=$sibling,"* ]]

	# 20 connections at once, held: the kernel spreads them over both
	# (all 20 on one socket: 1 chance in 2^19).
	release=$TEST_DIR/release
	start_bg clients "$PPCLIENT" -1 -s 192.0.2.30:41000 -c 20 -P 20 -t hello \
		--hold-until "$release" --half-close -w 30 "127.0.0.1:$(port 0)"
	clients_pid=$BG_PID
	wait_for_file_lines "$BACKEND_ACCEPTS" 20
	first_connections=$(busy_children_of "$MMPROXY_PID" | grep -c .)
	sibling_connections=$(busy_children_of "$sibling" | grep -c .)
	echo "first=$first_connections sibling=$sibling_connections"
	[ "$((first_connections + sibling_connections))" = 20 ]
	[ "$first_connections" -gt 0 ]
	[ "$sibling_connections" -gt 0 ]
	touch "$release"
	wait_for_exit "$clients_pid" 30
	cat "$TEST_DIR/clients.out"
	grep -q '^connections=20 ok=20 failed=0$' "$TEST_DIR/clients.out"
	wait_for_file_lines "$BACKEND_LOG" 20
	[ "$(grep -c ' bytes=5 .*end=eof$' "$BACKEND_LOG")" = 20 ]

	kill -TERM "$MMPROXY_PID"
	wait_for_exit "$MMPROXY_PID"
	wait_for_exit "$sibling"
	wait_for_no_listen "$(port 0)"
}

# ---- bad arguments

# mmproxy ARGS... must stop with exit 2, one line on stderr naming $1 (a
# regex), nothing on stdout, and listen nowhere.
refuses() {
	local expected=$1 stdout_file=$TEST_DIR/stdout stderr_file=$TEST_DIR/stderr
	shift
	timeout 10 ip netns exec "$NETNS" "$MMPROXY" "$@" >"$stdout_file" 2>"$stderr_file" &&
		status=0 || status=$?
	echo "mmproxy $* -> status=$status"
	sed 's/^/  stderr: /' "$stderr_file"
	sed 's/^/  stdout: /' "$stdout_file"
	[ "$status" -eq 2 ]
	[ "$(grep -c . "$stderr_file")" = 1 ]
	[ ! -s "$stdout_file" ]
	grep -qE "^mmproxy: .*$expected" "$stderr_file"
	[ -z "$(netns_exec ss -ltnuH)" ]
}

@test "bad arguments stop mmproxy with one line on stderr and exit 2, and nothing listens" {
	local ok=(-l "127.0.0.1:$(port 0)" --allowed-subnets "$ALLOWED_SUBNETS")
	refuses 'unknown option "--no-such-option"' "${ok[@]}" --no-such-option
	refuses 'unknown option "-x"' "${ok[@]}" -x
	refuses '--mark needs a value' "${ok[@]}" --mark
	refuses '-4 needs a value' "${ok[@]}" -4
	refuses '-4: "\[::1\]:80": not an IPv4 address' "${ok[@]}" -4 '[::1]:80'
	refuses '-6: "127\.0\.0\.1:80": not an IPv6 address' "${ok[@]}" -6 127.0.0.1:80
	refuses '-l: "nonsense": not ADDR:PORT' --allowed-subnets "$ALLOWED_SUBNETS" -l nonsense
	refuses '--listeners: "0": not a number from 1 to 256' "${ok[@]}" --listeners 0
	refuses '--mark: "-1": not a number from 0 to 4294967295' "${ok[@]}" --mark -1
	refuses '-v: "3": not a number from 0 to 2' "${ok[@]}" -v 3
	refuses '-p: "sctp": not tcp or udp' "${ok[@]}" -p sctp
	refuses 'unexpected argument "extra"' "${ok[@]}" extra
	refuses '--port-fallback.* takes no value' "${ok[@]}" --port-fallback=yes
}

@test "an option that means nothing in the chosen mode stops mmproxy with one line naming both, and exit 2" {
	local ok=(-l "127.0.0.1:$(port 0)" --allowed-subnets "$ALLOWED_SUBNETS")
	refuses '--listeners with -p udp: one socket serves every flow' "${ok[@]}" -p udp --listeners 4
	refuses '--max-connections with -p udp' "${ok[@]}" -p udp --max-connections 10
	refuses '--header-timeout with -p udp' "${ok[@]}" --header-timeout 3 -p udp
	refuses '--port-fallback with -p udp' "${ok[@]}" -p udp --port-fallback
	refuses '--inetd with -p udp' "${ok[@]}" -p udp --inetd
	refuses '--max-flows with TCP: flows are UDP' "${ok[@]}" --max-flows 10
	refuses '-l with --inetd: the connection is accepted already' "${ok[@]}" --inetd
	refuses '--listeners with --inetd' --allowed-subnets "$ALLOWED_SUBNETS" --inetd --listeners 2
}

@test "--help exits 0 and names every option mmproxy accepts" {
	run timeout 10 "$MMPROXY" --help
	[ "$status" -eq 0 ]
	help=$output
	[[ $help == usage:* ]]
	# Every name in option_names, as -x or --name, not as part of a longer name.
	names=$(sed -n '/^static const struct option_name option_names\[\]/,/^};/p' \
		"$REPO/options.c" | grep -oE '^\s*\{"[^"]+"' | grep -oE '[^"{[:space:]]+')
	[ "$(echo "$names" | grep -c .)" -ge 30 ]
	missing=
	for name in $names; do
		if [ "${#name}" = 1 ]; then dashes=-; else dashes=--; fi
		printf '%s\n' "$help" | grep -qE -- "(^|[^-[:alnum:]])$dashes$name([^-[:alnum:]]|$)" ||
			missing="$missing $dashes$name"
	done
	echo "missing from --help:$missing"
	[ -z "$missing" ]

	run timeout 10 "$MMPROXY" -h
	[ "$status" -eq 0 ]
	[ "$output" = "$help" ]
}

@test "--version exits 0 and prints the version" {
	run timeout 10 "$MMPROXY" --version
	echo "$output"
	[ "$status" -eq 0 ]
	[[ $output =~ ^mmproxy\ [0-9]+\.[0-9]+ ]]
	[ "$(echo "$output" | grep -c .)" = 1 ]
}

# ---- defaults

@test "with no -l, -4 or -6 and no connection on fd 0, mmproxy listens on 0.0.0.0:8443 and relays to 127.0.0.1:443, as go-mmproxy does" {
	backend_start echo 443
	mmproxy_start --allowed-subnets "$ALLOWED_SUBNETS" -v 2
	wait_for_listen 8443
	listening=$(netns_exec ss -ltnH "sport = :8443")
	echo "$listening"
	[[ $listening == *" 0.0.0.0:8443 "* ]]

	run ppclient -1 -s 192.0.2.40:40000 -t hello --half-close -w 20 127.0.0.1:8443
	echo "$output"
	[ "$(field end "$output")" = eof ]
	run ppclient -2 -s '[2001:db8::40]:40000' -t hello --half-close -w 20 127.0.0.1:8443
	echo "$output"
	[ "$(field end "$output")" = eof ]
	wait_for_file_lines "$BACKEND_LOG" 2
	grep -q '^peer=192\.0\.2\.40:40000 local=127\.0\.0\.1:443 bytes=5 ' "$BACKEND_LOG"
	grep -q '^peer=\[2001:db8::40\]:40000 local=\[::1\]:443 bytes=5 ' "$BACKEND_LOG"
}

@test "--listen-transparent lets mmproxy listen on an address that is not this host's, as TPROXY setups need" {
	write_allowed_subnets "$ALLOWED_SUBNETS"
	run netns_exec timeout 5 "$MMPROXY" -l "198.51.100.7:$(port 0)" -v 0
	echo "$output"
	[ "$status" -eq 1 ]
	[[ $output == *"bind 198.51.100.7:$(port 0): Cannot assign requested address"* ]]

	mmproxy_start -l "198.51.100.7:$(port 0)" --listen-transparent \
		--allowed-subnets "$ALLOWED_SUBNETS" -v 0
	wait_until 10 eval '[ -n "$(netns_exec ss -ltnH src "198.51.100.7:$(port 0)")" ]'
}
