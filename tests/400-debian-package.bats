#!/usr/bin/env bats
# The Debian package, through its whole life on this machine: built from a
# clean clone (dpkg-buildpackage, and `make deb` for a rebuild with a new
# version), its files (dpkg -c) and lintian's verdict, installed with
# apt-get, its units checked by systemd-analyze verify, the installed
# mmproxy.service's command line run in this file's network namespace and
# relaying a spoofed connection, upgraded while a connection is open, then
# removed and purged, leaving nothing of it behind.
#
# systemd is not PID 1 on test machines, so no unit is started by systemd and
# the maintainer scripts skip their systemctl calls (they test for
# /run/systemd/system). To see what they would do under systemd, every apt-get
# run here goes through as_if_systemd: a private mount namespace in which
# /run/systemd/system exists, and a stand-in systemctl first on dpkg's PATH
# (apt-get's DPkg::Path) that records each call and answers is-enabled and
# is-active as told. A /usr/sbin/policy-rc.d (containers have one that
# forbids every start and stop) is covered there by one that allows all, as
# on a machine without it. The real maintainer scripts, deb-systemd-invoke
# and deb-systemd-helper run; the record shows what systemd would have been
# asked (nothing started on install, the listener restarted on upgrade,
# everything stopped on remove). What systemd would then do for the restart
# (KillMode=process: SIGTERM to the listener alone, then the unit's new
# ExecStart=) the test does itself. Enabling needs no systemd: it is
# deb-systemd-helper's symlinks in /etc/systemd/system and its state in
# /var/lib/systemd, which the test reads directly.
#
# The clone is of the committed tree (HEAD of the repository holding this
# file): uncommitted changes are not in the package. The test refuses to run
# where an mmproxy package is installed already, and purges the package it
# installed in teardown_file, even after a failure.

load helpers/common
load helpers/units

PKG_DIR=$BATS_FILE_TMPDIR/packages
SHIM_DIR=$BATS_FILE_TMPDIR/shim
SYSTEMCTL_LOG=$BATS_FILE_TMPDIR/systemctl.log
INSTALLED_MARK=$BATS_FILE_TMPDIR/installed-by-this-test
UNITS=(mmproxy-routing.service mmproxy.service mmproxy.socket mmproxy@.service)

setup_file() {
	local tool
	for tool in git dpkg-buildpackage dh lintian apt-get pkg-config systemd-analyze unshare; do
		command -v "$tool" >/dev/null || {
			echo "# $tool is missing: install .ci/run's packages (debhelper, lintian, pkgconf...)" >&2
			return 1
		}
	done
	if dpkg-query -W -f '${db:Status-Status}\n' mmproxy 2>/dev/null | grep -qv '^not-installed$'; then
		echo "# an mmproxy package is installed here; this test would replace it: purge it first" >&2
		return 1
	fi
	common_setup_file
	mkdir -p "$PKG_DIR/v1" "$PKG_DIR/v2" "$SHIM_DIR"
	write_systemctl_shim "$SHIM_DIR/systemctl"
	printf '#!/bin/sh\n# Every action allowed, as where there is no policy-rc.d.\nexit 0\n' \
		>"$SHIM_DIR/policy-rc.d"
	chmod 755 "$SHIM_DIR/policy-rc.d"
}

teardown_file() {
	common_teardown_file
	if [ -e "$INSTALLED_MARK" ]; then
		dpkg --purge mmproxy >&2 || echo "# could not purge mmproxy: dpkg --purge mmproxy" >&2
	fi
}

# ---- helpers

# A systemctl for as_if_systemd: records its arguments, one call a line;
# is-enabled and is-active answer from ENABLED_UNITS and ACTIVE_UNITS (unit
# names separated by spaces); every other call succeeds and does nothing.
write_systemctl_shim() {
	cat >"$1" <<'EOF'
#!/bin/bash
echo "$*" >>"$SYSTEMCTL_LOG"
words=()
for argument; do
	[[ $argument == -* ]] || words+=("$argument")
done
case ${words[0]:-} in
is-enabled)
	if [[ " $ENABLED_UNITS " == *" ${words[1]} "* ]]; then echo enabled; else echo disabled; exit 1; fi ;;
is-active)
	[[ " $ACTIVE_UNITS " == *" ${words[1]} "* ]] ;;
esac
EOF
	chmod 755 "$1"
}

# as_if_systemd ENABLED ACTIVE APT-GET-ARGS...: apt-get with the maintainer
# scripts seeing systemd as PID 1 (see the top of this file); $SYSTEMCTL_LOG
# then holds what they asked systemctl.
as_if_systemd() {
	local enabled=$1 active=$2
	shift 2
	: >"$SYSTEMCTL_LOG"
	ENABLED_UNITS=$enabled ACTIVE_UNITS=$active SYSTEMCTL_LOG=$SYSTEMCTL_LOG \
		SHIM_DIR=$SHIM_DIR DEBIAN_FRONTEND=noninteractive \
		unshare --mount --propagation private sh -c '
			mount -t tmpfs mmproxy-test /run/systemd && mkdir /run/systemd/system || exit 1
			if [ -e /usr/sbin/policy-rc.d ]; then
				mount --bind "$SHIM_DIR/policy-rc.d" /usr/sbin/policy-rc.d || exit 1
			fi
			exec apt-get -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 \
				-o DPkg::Path="$SHIM_DIR:/usr/sbin:/usr/bin:/sbin:/bin" "$@"' \
			as_if_systemd "$@" </dev/null
}

# The systemctl calls that changed something (not daemon-reload and not the
# is-enabled/is-active questions), one a line.
systemctl_actions() {
	grep -Ev '(^| )(daemon-reload|is-enabled|is-active)( |$)' "$SYSTEMCTL_LOG" || true
}

package_status() {
	dpkg-query -W -f '${db:Status-Abbrev} ${Version}\n' mmproxy 2>/dev/null || echo "not known"
}

# The package file in directory $1 (apt-get install takes it as ./NAME).
the_deb() {
	local debs=("$1"/mmproxy_*.deb)
	[ "${#debs[@]}" -eq 1 ] && [ -f "${debs[0]}" ] || {
		echo "# expected one mmproxy_*.deb in $1, found: ${debs[*]}" >&2
		return 1
	}
	echo "${debs[0]}"
}

# Prepends a changelog entry for version $2 to the tree at $1.
bump_version() {
	local maintainer
	maintainer=$(cd "$1" && dpkg-parsechangelog -S Maintainer)
	{
		printf 'mmproxy (%s) unstable; urgency=medium\n\n' "$2"
		printf '  * A rebuild with a new version, for the upgrade test.\n\n'
		printf ' -- %s  %s\n\n' "$maintainer" "$(date -R)"
		cat "$1/debian/changelog"
	} >"$1/debian/changelog.new"
	mv "$1/debian/changelog.new" "$1/debian/changelog"
}

unit_dir() {
	pkg-config --variable=systemdsystemunitdir systemd
}

# One spoofed connection through the installed listener on 8443 reaches
# the backend on 443 from the client's address.
relay_once() {
	run ppclient -2 -s "$1" -n 1000 --half-close -w 10 127.0.0.1:8443
	echo "ppclient: $output"
	[ "$(field end "$output")" = eof ]
	[ "$(field received "$output")" = 1000 ]
	wait_until 10 grep -qF -- "peer=$1 " "$BACKEND_LOG"
	[ "$(field bytes "$(grep -F "peer=$1 " "$BACKEND_LOG")")" = 1000 ]
}

file_size() {
	stat -c %s "$1" 2>/dev/null || echo 0
}

# ---- the package's life, in order: each test builds on the one before

@test "dpkg-buildpackage builds mmproxy_VERSION_ARCH.deb in a clean clone, and make deb a rebuild with a new version" {
	local arch version
	arch=$(dpkg --print-architecture)
	git clone -q "$REPO" "$PKG_DIR/v1/mmproxy"
	cd "$PKG_DIR/v1/mmproxy"
	[ -z "$(git status --porcelain)" ]
	version=$(dpkg-parsechangelog -S Version)
	run dpkg-buildpackage -us -uc -b
	[ "$status" -eq 0 ] || { echo "$output" | tail -n 40; false; }
	[ -f "$PKG_DIR/v1/mmproxy_${version}_${arch}.deb" ]
	# What the build leaves in the tree, .gitignore covers.
	git status --porcelain
	[ -z "$(git status --porcelain)" ]
	# The package's version is the one mmproxy --version prints.
	[ "$(./mmproxy --version)" = "mmproxy $version" ]
	echo "$version" >"$PKG_DIR/v1/version"

	git clone -q "$REPO" "$PKG_DIR/v2/mmproxy"
	cd "$PKG_DIR/v2/mmproxy"
	bump_version . "$version+rebuild1"
	# The build dependencies are installed now, so make deb needs no apt-get.
	run make deb
	[ "$status" -eq 0 ] || { echo "$output" | tail -n 40; false; }
	[ -f "$PKG_DIR/v2/mmproxy_${version}+rebuild1_${arch}.deb" ]
	echo "$version+rebuild1" >"$PKG_DIR/v2/version"
}

@test "the package holds the binary, the manual, the units, the disabled xinetd entry and the settings files as conffiles" {
	local deb unitdir
	deb=$(the_deb "$PKG_DIR/v1")
	unitdir=$(unit_dir)
	dpkg -c "$deb" >"$BATS_TEST_TMPDIR/contents"
	cat "$BATS_TEST_TMPDIR/contents"
	diff -u <({
		printf '%s\n' etc/default/mmproxy etc/mmproxy/allowed-subnets.txt etc/xinetd.d/mmproxy \
			usr/sbin/mmproxy usr/share/man/man8/mmproxy.8.gz \
			usr/share/doc/mmproxy/README.gz usr/share/doc/mmproxy/README.md.gz \
			usr/share/doc/mmproxy/changelog.gz usr/share/doc/mmproxy/copyright \
			usr/share/lintian/overrides/mmproxy
		printf "${unitdir#/}/%s\n" "${UNITS[@]}"
	} | LC_ALL=C sort) <(awk '$1 !~ /^d/ { sub("^\\./", "", $6); print $6 }' \
		"$BATS_TEST_TMPDIR/contents" | LC_ALL=C sort)
	grep -Eq '^-rwxr-xr-x root/root .* \./usr/sbin/mmproxy$' "$BATS_TEST_TMPDIR/contents"

	# Every file under /etc is a conffile (purge removes them; an upgrade
	# keeps the operator's edits).
	diff -u <(printf '%s\n' /etc/default/mmproxy /etc/mmproxy/allowed-subnets.txt /etc/xinetd.d/mmproxy) \
		<(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | LC_ALL=C sort)
	dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./etc/xinetd.d/mmproxy |
		grep -Eq '^[[:space:]]*disable[[:space:]]*=[[:space:]]*yes[[:space:]]*$'
	# The copyright file is machine-readable and names the license.
	dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/share/doc/mmproxy/copyright >"$BATS_TEST_TMPDIR/copyright"
	grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' "$BATS_TEST_TMPDIR/copyright"
	grep -qx 'License: BSD-2-Clause' "$BATS_TEST_TMPDIR/copyright"
}

@test "lintian finds no error and no warning in the package, and every override says why" {
	local changes
	changes=("$PKG_DIR"/v1/mmproxy_*.changes)
	run lintian --fail-on error,warning "${changes[0]}"
	echo "$output"
	[ "$status" -eq 0 ]
	! grep -Eq '^[EW]: ' <<<"$output" || false
	# Each override follows a comment.
	awk '/^[^#]/ && prev !~ /^#/ { print "uncommented: " $0; bad = 1 } { prev = $0 } END { exit bad }' \
		"$PKG_DIR/v1/mmproxy/debian/mmproxy.lintian-overrides"
}

@test "apt-get installs the package, and installing enables and starts nothing" {
	cd "$PKG_DIR/v1"
	touch "$INSTALLED_MARK"
	# Nothing enabled, nothing running: a first install.
	run as_if_systemd "" "" install ./mmproxy_*.deb
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(package_status)" = "ii  $(cat version)" ]
	dpkg -L mmproxy >"$PKG_DIR/dpkg-L"
	grep -qx /usr/sbin/mmproxy "$PKG_DIR/dpkg-L"
	[ "$(/usr/sbin/mmproxy --version)" = "mmproxy $(cat version)" ]

	# The scripts ran as under systemd (they reloaded it), asked whether
	# the units are enabled, and started or enabled nothing.
	echo "systemctl calls:"; cat "$SYSTEMCTL_LOG"
	grep -qw daemon-reload "$SYSTEMCTL_LOG"
	grep -q 'is-enabled.*mmproxy.service' "$SYSTEMCTL_LOG"
	[ -z "$(systemctl_actions)" ]
	# Enabling would have left symlinks in /etc/systemd/system, where
	# deb-systemd-helper puts them whether systemd runs or not. Its state
	# file for each unit names the symlinks that enabling would make (for
	# purge to remove): none of them exists.
	[ -z "$(find /etc/systemd/system -name '*mmproxy*')" ]
	for unit in mmproxy-routing.service mmproxy.service mmproxy.socket; do
		state=/var/lib/systemd/deb-systemd-helper-enabled/$unit.dsh-also
		echo "$state:"; cat "$state"
		grep -q "/$unit\$" "$state"
		while IFS= read -r link; do [ ! -e "$link" ] && [ ! -L "$link" ]; done <"$state"
		! deb-systemd-helper --quiet was-enabled "$unit" || false
	done
	# The xinetd entry is there, disabled.
	grep -Eq '^[[:space:]]*disable[[:space:]]*=[[:space:]]*yes' /etc/xinetd.d/mmproxy
}

@test "the installed units pass systemd-analyze verify, their manual included" {
	local unitdir
	unitdir=$(unit_dir)
	for unit in "${UNITS[@]}"; do [ -f "$unitdir/$unit" ]; done
	cd "$BATS_TEST_TMPDIR"
	# By name: systemd-analyze loads them from the system unit directory,
	# checks that ExecStart= is executable and that man:mmproxy(8) exists.
	run systemd-analyze verify mmproxy.socket mmproxy@.service mmproxy.service mmproxy-routing.service
	echo "$output"
	[ "$status" -eq 0 ]
	# verify exits 0 on unknown keys: its messages are the real verdict.
	! grep -Eiq 'unknown (key|section|lvalue)|failed|invalid|not executable|ignoring|not found' <<<"$output" || false
	[ "$(sed -n 's/^EnvironmentFile=//p' "$unitdir/mmproxy.service")" = /etc/default/mmproxy ]
	[ "$(sed -n 's/^EnvironmentFile=//p' "$unitdir/mmproxy@.service")" = /etc/default/mmproxy ]
}

@test "with the allowed-subnets file as installed, the installed mmproxy.service refuses to start" {
	unit_command "$(unit_dir)/mmproxy.service"
	[ "${UNIT_COMMAND[0]}" = /usr/sbin/mmproxy ]
	run netns_exec "${UNIT_COMMAND[@]}"
	echo "$output"
	[ "$status" -eq 2 ]
	[[ $output == *"/etc/mmproxy/allowed-subnets.txt: no subnets in file"* ]]
}

@test "the installed mmproxy.service relays a spoofed connection, and an upgrade restarts it while that connection keeps moving bytes" {
	# The operator names the load balancer (here the test's own ppclient).
	printf '%s\n' 127.0.0.1/32 ::1/128 >>/etc/mmproxy/allowed-subnets.txt
	unit_command "$(unit_dir)/mmproxy.service"
	echo "ExecStart: ${UNIT_COMMAND[*]}"
	backend_start echo 443
	start_bg listener "${UNIT_COMMAND[@]}"
	local listener=$BG_PID
	wait_for_listen 8443
	netns_exec ss -Hltn 'sport = :8443' | grep -q '0\.0\.0\.0:8443'
	relay_once 192.0.2.40:40400

	# A connection that stays open across the upgrade.
	mkfifo "$TEST_DIR/payload"
	start_bg client "$PPCLIENT" -2 -s 192.0.2.41:40401 -f "$TEST_DIR/payload" \
		-o "$TEST_DIR/received" --half-close -w 120 127.0.0.1:8443
	local client=$BG_PID
	exec 5<>"$TEST_DIR/payload"
	head -c 100000 /dev/urandom >&5
	wait_until 20 eval '[ "$(file_size "$TEST_DIR/received")" -ge 100000 ]'
	grep -q '^accept peer=192.0.2.41:40401 ' "$BACKEND_ACCEPTS"

	# The upgrade, with the routing and the listener enabled and running.
	cd "$PKG_DIR/v2"
	run as_if_systemd "mmproxy-routing.service mmproxy.service" \
		"mmproxy-routing.service mmproxy.service" install ./mmproxy_*.deb 5>&-
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(package_status)" = "ii  $(cat version)" ]
	echo "systemctl calls:"; cat "$SYSTEMCTL_LOG"
	# The listener is restarted; the routing is neither stopped nor
	# restarted (its rules carry the open connections' replies); the socket,
	# neither enabled nor running, is left alone.
	diff -u <(echo "--quiet --system restart mmproxy.service") \
		<(systemctl_actions | grep -vx -- '--quiet --system start mmproxy-routing.service')
	# The operator's edit survives the upgrade, with no .dpkg-new beside it.
	grep -qx 127.0.0.1/32 /etc/mmproxy/allowed-subnets.txt
	[ -z "$(find /etc/mmproxy /etc/default /etc/xinetd.d -name 'mmproxy.dpkg-*' -o -name 'allowed-subnets.txt.dpkg-*')" ]

	# What systemd does for that restart with KillMode=process: SIGTERM to
	# the listener alone, then the unit's ExecStart= as installed now.
	kill -TERM "$listener"
	wait_for_exit "$listener"
	wait_for_no_listen 8443
	unit_command "$(unit_dir)/mmproxy.service"
	# Not holding fd 5, the FIFO's writer: closing it must be the EOF.
	start_bg listener2 "${UNIT_COMMAND[@]}" 5>&-
	wait_for_listen 8443

	# The open connection still moves bytes both ways, to its end.
	head -c 100000 /dev/urandom >&5
	exec 5>&-
	wait_for_exit "$client" 60
	summary=$(cat "$TEST_DIR/client.out")
	echo "client: $summary"
	[ "$(field end "$summary")" = eof ]
	[ "$(field sent "$summary")" = 200000 ]
	[ "$(field received "$summary")" = 200000 ]
	[ "$(field crc_received "$summary")" = "$(field crc_sent "$summary")" ]
	wait_until 10 grep -q '^peer=192.0.2.41:40401 ' "$BACKEND_LOG"
	[ "$(field bytes "$(grep '^peer=192.0.2.41:40401 ' "$BACKEND_LOG")")" = 200000 ]
	# And the new listener serves new connections.
	relay_once 192.0.2.42:40402
}

@test "removing the package stops its units and keeps the settings; purging leaves nothing of it" {
	local all="mmproxy-routing.service mmproxy.service mmproxy.socket" path
	run as_if_systemd "$all" "$all" remove mmproxy
	echo "$output"
	[ "$status" -eq 0 ]
	echo "systemctl calls:"; cat "$SYSTEMCTL_LOG"
	# The listener and the socket stop first, then the routing they need.
	diff -u <(printf '%s\n' "stop mmproxy.service mmproxy.socket" "stop mmproxy-routing.service") \
		<(systemctl_actions)
	[ "$(package_status)" = "rc  $(cat "$PKG_DIR/v2/version")" ]
	[ ! -e /usr/sbin/mmproxy ]
	[ ! -e "$(unit_dir)/mmproxy.service" ]
	# Conffiles stay until purge, with the operator's edit.
	grep -qx 127.0.0.1/32 /etc/mmproxy/allowed-subnets.txt
	[ -f /etc/default/mmproxy ]

	run as_if_systemd "" "" purge mmproxy
	echo "$output"
	[ "$status" -eq 0 ]
	[ -z "$(systemctl_actions)" ]
	run dpkg-query -W mmproxy
	[ "$status" -ne 0 ]
	rm -f "$INSTALLED_MARK"
	# Of every path the package held (dpkg -L after install), only
	# directories that other packages share may remain.
	while IFS= read -r path; do
		[ -e "$path" ] || continue
		if [ ! -d "$path" ] || { ! dpkg -S "$path" >/dev/null 2>&1 && [ -z "$(ls -A "$path")" ]; }; then
			echo "left behind: $path"
			false
		fi
	done <"$PKG_DIR/dpkg-L"
	[ ! -e /etc/mmproxy ]
	# Nor anything else by name: conffiles, deb-systemd-helper's state,
	# enablement symlinks, dpkg's own files.
	run find /etc /lib/systemd /usr/lib/systemd /var/lib/systemd /usr/sbin /usr/share/doc \
		/usr/share/man/man8 -name '*mmproxy*'
	echo "$output"
	[ -z "$output" ]
	[ -z "$(find /var/lib/dpkg/info -name 'mmproxy.*' -o -name 'mmproxy:*')" ]
}
