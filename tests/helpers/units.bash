# tests/helpers/units.bash: a unit's ExecStart= as the words systemd would
# run, for the bats files that run the shipped or the installed units'
# command lines (130-systemd-units.bats, 400-debian-package.bats).
#
#   unit_command UNIT [ENVIRONMENT_FILE]
#       sets the array UNIT_COMMAND to UNIT's ExecStart= with the variables
#       of ENVIRONMENT_FILE (default: the unit's EnvironmentFile=) expanded
#       the way systemd.service(5) says: "${NAME}" is replaced within its
#       word, "$NAME" standing alone becomes the value split at white space
#       (no word at all when it is empty). The file is read as a shell
#       would (KEY=VALUE, double quotes around values with spaces), which
#       for these files gives what systemd's parser gives.
# Only what the shipped units use is handled: one ExecStart= line, no
# quoting inside it, no specifiers (%i) and no "-@:+!" prefixes.

unit_command() {
	local unit=$1 environment_file=${2:-} line
	[ -n "$environment_file" ] || environment_file=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$unit")
	[ -r "$environment_file" ] || {
		echo "# $unit: environment file \"$environment_file\" is not readable" >&2
		return 1
	}
	line=$(sed -n 's/^ExecStart=//p' "$unit")
	[ "$(grep -c . <<<"$line")" -eq 1 ] || {
		echo "# $unit: expected one ExecStart= line, got: $line" >&2
		return 1
	}
	mapfile -d '' UNIT_COMMAND < <(env -i bash -c '
		set -f
		set -a
		. "$1" || exit 1
		set +a
		for word in $2; do
			if [[ $word =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
				for part in ${!BASH_REMATCH[1]}; do printf "%s\0" "$part"; done
				continue
			fi
			while [[ $word =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
				word=${word/"${BASH_REMATCH[0]}"/${!BASH_REMATCH[1]}}
			done
			printf "%s\0" "$word"
		done' unit_command "$environment_file" "$line")
	[ "${#UNIT_COMMAND[@]}" -gt 0 ]
}
