#!/bin/sh
# soak.sh [CONNECTIONS [PARALLEL [SEED [LOSS_PERCENT]]]]
#
# Builds soak (kernrelay.c and soak.c) and runs it as root in a private
# network namespace with only lo. LOSS_PERCENT > 0 drops that share of TCP
# segments on input with nftables, so that TCP retransmits into the relay's
# sockets. Prints soak's RESULT line; exits with its status.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
connections=${1:-2000}
parallel=${2:-4}
seed=${3:-1}
loss=${4:-0}

${CC:-cc} -std=gnu11 -O2 -g -Wall -Wextra -Wshadow -I"$here" -I"$top" \
	-o "$here/soak" "$here/soak.c" "$here/kernrelay.c" -lpthread -lm

if [ "$loss" != 0 ] && ! command -v nft >/dev/null; then
	echo "soak.sh: LOSS_PERCENT needs nft (apt-get install nftables)" >&2
	exit 2
fi
exec unshare -n sh -c '
	set -e
	ip link set lo up
	if [ "$4" != 0 ]; then
		nft add table inet soak
		nft add chain inet soak input "{ type filter hook input priority 0; }"
		nft add rule inet soak input meta l4proto tcp numgen random mod 100 "<" "$4" drop
	fi
	"$5" "$1" "$2" "$3"
	status=$?
	[ "$4" = 0 ] || echo "TCP segments retransmitted: $(awk "/^Tcp:/ { n++ } n == 2 && /^Tcp:/ { print \$13; exit }" /proc/net/snmp)"
	exit $status
' soak "$connections" "$parallel" "$seed" "$loss" "$here/soak"
