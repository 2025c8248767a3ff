#!/usr/bin/env bats
# `make install` and `make uninstall`, into a DESTDIR: every file lands where
# the README says, the units and the xinetd entry name the installed binary,
# the installed units pass systemd-analyze verify, nothing is enabled, the
# operator's settings files are never overwritten, and uninstall removes
# exactly what install put there (the settings files only while unchanged).

REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
UNITS=(mmproxy-routing.service mmproxy.service mmproxy.socket mmproxy@.service)

setup() {
	[ -x "$REPO/mmproxy" ] || {
		echo "# $REPO/mmproxy is missing: run 'make test-programs' first" >&2
		return 1
	}
	DEST=$BATS_TEST_TMPDIR/dest
	mkdir -p "$DEST"
}

# Every file and symlink under $1, relative to it, sorted.
files_under() {
	(cd "$1" && find . \( -type f -o -type l \) -printf '%P\n' | LC_ALL=C sort)
}

# The values of KEY= in a unit or xinetd file, one a line.
values() {
	sed -nE "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1"
}

# The installed files for PREFIX $1 (SBINDIR, MANDIR, UNITDIR defaults).
expected_files() {
	local prefix=${1#/} unit
	{
		echo "etc/xinetd.d/mmproxy"
		echo "etc/default/mmproxy"
		echo "etc/mmproxy/allowed-subnets.txt"
		echo "$prefix/sbin/mmproxy"
		echo "$prefix/share/man/man8/mmproxy.8"
		for unit in "${UNITS[@]}"; do echo "$prefix/lib/systemd/system/$unit"; done
	} | LC_ALL=C sort
}

# The installed units and xinetd entry under $DEST for PREFIX $1 run the
# installed binary, and differ from the shipped ones in that path alone (and
# the xinetd entry's disable = yes).
installed_files_name_binary() {
	local prefix=$1 unitdir=$DEST$1/lib/systemd/system unit line
	for unit in mmproxy.service mmproxy@.service; do
		line=$(values "$unitdir/$unit" ExecStart)
		echo "$unit: ExecStart=$line"
		[[ $line == "$prefix/sbin/mmproxy "* ]]
	done
	for unit in "${UNITS[@]}"; do
		diff -u "$REPO/systemd/$unit" \
			<(sed "s#$prefix/sbin/mmproxy#/usr/local/sbin/mmproxy#g" "$unitdir/$unit")
	done
	[ "$(values "$DEST/etc/xinetd.d/mmproxy" server)" = "$prefix/sbin/mmproxy" ]
	[ "$(values "$DEST/etc/xinetd.d/mmproxy" disable)" = yes ]
	[[ $(values "$DEST/etc/xinetd.d/mmproxy" server_args) == *" /etc/mmproxy/allowed-subnets.txt"* ]]
}

@test "make install PREFIX=/usr puts the binary, the manual, the units and the xinetd entry in place" {
	run make -s -C "$REPO" install DESTDIR="$DEST" PREFIX=/usr
	echo "$output"
	[ "$status" -eq 0 ]
	diff -u <(expected_files /usr) <(files_under "$DEST")

	cmp "$REPO/mmproxy" "$DEST/usr/sbin/mmproxy"
	[ "$(stat -c %a "$DEST/usr/sbin/mmproxy")" = 755 ]
	"$DEST/usr/sbin/mmproxy" --version | grep -q '^mmproxy '
	# The manual names the installed paths.
	diff -u "$REPO/mmproxy.8" <(sed -e 's#/usr/sbin/mmproxy#/usr/local/sbin/mmproxy#g' \
		-e 's#/usr/lib/systemd/system#/usr/local/lib/systemd/system#g' \
		"$DEST/usr/share/man/man8/mmproxy.8")
	grep -q '^\.It Pa /usr/lib/systemd/system/mmproxy\.service$' "$DEST/usr/share/man/man8/mmproxy.8"
	for file in "$DEST/usr/share/man/man8/mmproxy.8" "$DEST"/usr/lib/systemd/system/* \
		"$DEST/etc/xinetd.d/mmproxy"; do
		[ "$(stat -c %a "$file")" = 644 ]
	done
	installed_files_name_binary /usr
	! grep -rq /usr/local "$DEST/usr/lib/systemd/system" "$DEST/etc" \
		"$DEST/usr/share/man/man8/mmproxy.8" || false
}

@test "make install puts a settings file for the units and an allowed-subnets file that allows no one" {
	make -s -C "$REPO" install DESTDIR="$DEST" PREFIX=/usr
	cmp "$REPO/systemd/mmproxy.default" "$DEST/etc/default/mmproxy"
	cmp "$REPO/systemd/allowed-subnets.txt" "$DEST/etc/mmproxy/allowed-subnets.txt"
	[ "$(stat -c %a "$DEST/etc/default/mmproxy")" = 644 ]
	# Readable by the units' dynamic user.
	[ "$(stat -c %a "$DEST/etc/mmproxy/allowed-subnets.txt")" = 644 ]
	# Nothing but comments: mmproxy refuses to start until a line is added.
	! grep -v '^#' "$DEST/etc/mmproxy/allowed-subnets.txt" | grep -q . || false
	run "$REPO/mmproxy" -l 127.0.0.1:0 -4 127.0.0.1:1 \
		--allowed-subnets "$DEST/etc/mmproxy/allowed-subnets.txt"
	echo "$output"
	[ "$status" -eq 2 ]
	[[ $output == *"allowed-subnets.txt: no subnets in file"* ]]
}

@test "make install never overwrites the settings files, and make uninstall keeps them once edited" {
	make -s -C "$REPO" install DESTDIR="$DEST" PREFIX=/usr
	echo 10.0.0.5/32 >>"$DEST/etc/mmproxy/allowed-subnets.txt"
	sed -i 's/^MMPROXY_LISTEN=.*/MMPROXY_LISTEN=0.0.0.0:9443/' "$DEST/etc/default/mmproxy"
	cp "$DEST/etc/mmproxy/allowed-subnets.txt" "$DEST/etc/default/mmproxy" "$BATS_TEST_TMPDIR/"
	make -s -C "$REPO" install DESTDIR="$DEST" PREFIX=/usr
	cmp "$BATS_TEST_TMPDIR/allowed-subnets.txt" "$DEST/etc/mmproxy/allowed-subnets.txt"
	cmp "$BATS_TEST_TMPDIR/mmproxy" "$DEST/etc/default/mmproxy"
	make -s -C "$REPO" uninstall DESTDIR="$DEST" PREFIX=/usr
	diff -u <(printf '%s\n' etc/default/mmproxy etc/mmproxy/allowed-subnets.txt) \
		<(files_under "$DEST")
}

@test "make install with no PREFIX installs under /usr/local, the xinetd entry in /etc" {
	run make -s -C "$REPO" install DESTDIR="$DEST"
	echo "$output"
	[ "$status" -eq 0 ]
	diff -u <(expected_files /usr/local) <(files_under "$DEST")
	installed_files_name_binary /usr/local
}

@test "the installed units pass systemd-analyze verify and run the installed binary" {
	command -v systemd-analyze >/dev/null || {
		echo "# systemd-analyze is missing: apt-get install systemd" >&2
		return 1
	}
	make -s -C "$REPO" install DESTDIR="$DEST" PREFIX=/usr
	# A root for verify: the installed tree plus the system's targets and
	# slices, which the units' default dependencies name.
	root=$BATS_TEST_TMPDIR/root
	cp -a "$DEST/." "$root/"
	cp /lib/systemd/system/*.target /lib/systemd/system/*.slice "$root/usr/lib/systemd/system/"
	# mmproxy.service's ExecReload= runs the system's kill(1).
	mkdir -p "$root/bin"
	cp /bin/kill "$root/bin/"
	cd "$root/usr/lib/systemd/system"
	# --man=no: man pages are not looked up in the root.
	run systemd-analyze verify --man=no --root="$root" "${UNITS[@]}"
	echo "$output"
	[ "$status" -eq 0 ]
	! grep -Eiq 'unknown (key|section|lvalue)|failed|invalid|not executable|ignoring' <<<"$output" || false

	# verify does check that ExecStart= runs an executable file in the root.
	rm "$root/usr/sbin/mmproxy"
	run systemd-analyze verify --man=no --root="$root" mmproxy.service
	echo "$output"
	[[ $output == *"/usr/sbin/mmproxy is not executable"* ]]
}

@test "make uninstall removes every file make install put there, and nothing else" {
	mkdir -p "$DEST/usr/sbin" "$DEST/etc/xinetd.d" "$DEST/usr/lib/systemd/system"
	echo keep >"$DEST/usr/sbin/other"
	echo keep >"$DEST/etc/xinetd.d/other"
	echo keep >"$DEST/usr/lib/systemd/system/other.service"
	before=$(files_under "$DEST")

	make -s -C "$REPO" install DESTDIR="$DEST" PREFIX=/usr
	[ "$(files_under "$DEST" | grep -c .)" = $((3 + 3 + 2 + ${#UNITS[@]})) ]
	run make -s -C "$REPO" uninstall DESTDIR="$DEST" PREFIX=/usr
	echo "$output"
	[ "$status" -eq 0 ]
	diff -u <(echo "$before") <(files_under "$DEST")

	# The same for the default PREFIX, from an empty DESTDIR.
	rm -rf "$DEST" && mkdir "$DEST"
	make -s -C "$REPO" install DESTDIR="$DEST"
	make -s -C "$REPO" uninstall DESTDIR="$DEST"
	[ -z "$(files_under "$DEST")" ]
}
