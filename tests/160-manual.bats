#!/usr/bin/env bats
# The manual and --help agree: every option --help names (its table, its
# usage lines and the aliases it lists for the other mmproxies' command
# lines) is in mmproxy.8's OPTIONS, each option of the table with an entry of
# its own, and every entry there is an option --help names; the SYNOPSIS
# names the options the usage names. Both lists come from the real --help
# and mmproxy.8, so a new option needs no change here. And the page is clean
# for mandoc -T lint and for man(1).

REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
MMPROXY=${MMPROXY:-$REPO/mmproxy}
case "$MMPROXY" in /*) ;; *) MMPROXY="$REPO/$MMPROXY" ;; esac
MANUAL=$REPO/mmproxy.8

setup() {
	[ -x "$MMPROXY" ] || {
		echo "# $MMPROXY is missing: run 'make test-programs' first" >&2
		return 1
	}
	HELP=$("$MMPROXY" --help)
}

# ---- the names, one a line, sorted

# The option names in text on stdin: -x or --name, at the start of a word,
# after a bracket, a parenthesis, a slash, a comma or a bar.
option_names() {
	grep -oE '(^|[][[:space:](/,|])--?[[:alnum:]][-[:alnum:]]*' |
		sed -E 's/^[^-]//' | LC_ALL=C sort -u
}

# --help's usage: the lines up to the first blank one.
help_usage() {
	printf '%s\n' "$HELP" | sed '/^$/q'
}

# --help's option table: the first column of each line that starts with two
# spaces and a dash ("  -q, --quiet   ..."), up to two spaces.
help_table_columns() {
	printf '%s\n' "$HELP" | sed -nE 's/^  (-[^ ].*)$/\1/p' | sed -E 's/  .*//'
}

# The first name of each row of the table: the option's own name.
help_primary_names() {
	help_table_columns | while read -r column; do
		printf '%s\n' "$column" | option_names_in_order | head -n 1
	done | LC_ALL=C sort -u
}

option_names_in_order() {
	grep -oE '(^|[][[:space:](/,|])--?[[:alnum:]][-[:alnum:]]*' | sed -E 's/^[^-]//'
}

# A section of the manual, without its .Sh line.
manual_section() {
	awk -v name="$1" '/^\.Sh / { inside = ($0 == ".Sh " name); next } inside' "$MANUAL"
}

# The OPTIONS list: the section from its first .It on.
manual_option_list() {
	manual_section OPTIONS | sed -n '/^\.It /,$p'
}

# Names after "Fl" in mdoc text on stdin, with their dash: ".Fl -mark" is --mark.
fl_names() {
	grep -oE '(^\.|[[:space:]])Fl[[:space:]]+[^[:space:]]+' |
		sed -E 's/^.?Fl[[:space:]]+/-/; s/=.*//' | LC_ALL=C sort -u
}

# The options with an entry of their own: ".It Fl NAME".
manual_entries() {
	manual_option_list | grep -E '^\.It Fl ' | fl_names
}

# The entries' names without dashes, in the manual's order.
manual_entry_keys_in_order() {
	manual_option_list | sed -nE 's/^\.It Fl -?([^[:space:]]+).*/\1/p'
}

# Names of the first set ($1) missing from the second ($2).
missing() {
	LC_ALL=C comm -23 <(printf '%s\n' "$1" | grep .) <(printf '%s\n' "$2" | grep .) | tr '\n' ' '
}

# ---- the tests

@test "the names this file reads from --help and mmproxy.8 are there to read" {
	[ "$(help_primary_names | grep -c .)" -ge 15 ]
	[ "$(help_usage | option_names | grep -c .)" -ge 15 ]
	[ "$(manual_entries | grep -c .)" -ge 15 ]
	[ "$(manual_section SYNOPSIS | fl_names | grep -c .)" -ge 15 ]
	help_primary_names | grep -qx -- --allowed-subnets
	manual_entries | grep -qx -- --allowed-subnets
}

@test "every option in --help's table has its own entry in mmproxy.8's OPTIONS" {
	absent=$(missing "$(help_primary_names)" "$(manual_entries)")
	echo "in --help, without an .It Fl entry in mmproxy.8: $absent"
	[ -z "$absent" ]
}

@test "every option name --help mentions, aliases for the other mmproxies included, is in mmproxy.8's OPTIONS" {
	# Another spelling may be an entry or an "Also spelled" in one.
	absent=$(missing "$(printf '%s\n' "$HELP" | option_names)" "$(manual_option_list | fl_names)")
	echo "in --help, not in mmproxy.8's OPTIONS: $absent"
	[ -z "$absent" ]
}

@test "every entry in mmproxy.8's OPTIONS is an option --help names" {
	absent=$(missing "$(manual_entries)" "$(printf '%s\n' "$HELP" | option_names)")
	echo "in mmproxy.8's OPTIONS, not in --help: $absent"
	[ -z "$absent" ]
}

@test "mmproxy.8's SYNOPSIS names the options --help's usage names, and no other" {
	usage=$(help_usage | option_names)
	synopsis=$(manual_section SYNOPSIS | fl_names)
	echo "usage: $(tr '\n' ' ' <<<"$usage")"
	echo "SYNOPSIS: $(tr '\n' ' ' <<<"$synopsis")"
	[ -z "$(missing "$usage" "$synopsis")" ]
	[ -z "$(missing "$synopsis" "$usage")" ]
}

@test "mmproxy.8's OPTIONS are in alphabetical order" {
	keys=$(manual_entry_keys_in_order)
	echo "$keys" | tr '\n' ' '
	diff -u <(echo "$keys") <(echo "$keys" | LC_ALL=C sort)
}

@test "mandoc -T lint finds no warning in mmproxy.8" {
	command -v mandoc >/dev/null || {
		echo "# mandoc is missing: apt-get install mandoc (.ci/run's package list)" >&2
		return 1
	}
	# -W warning: errors and warnings, not the style notes about this
	# machine's manual database.
	run mandoc -T lint -W warning "$MANUAL"
	echo "$output"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
}

@test "man -l formats mmproxy.8 without a warning" {
	command -v man >/dev/null || {
		echo "# man is missing: apt-get install man-db (.ci/run's package list)" >&2
		return 1
	}
	out=$BATS_TEST_TMPDIR/man.out
	err=$BATS_TEST_TMPDIR/man.err
	MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings=all -l "$MANUAL" \
		>"$out" 2>"$err"
	cat "$err"
	[ ! -s "$err" ]
	grep -q 'unwrap the PROXY protocol' "$out"
	grep -q -- '--allowed-subnets' "$out"
}
