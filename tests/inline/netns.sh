# Sourced by the inline tests: two network namespaces joined by a veth pair,
# torn down on exit with everything the test started.
#
#   netns_pair PREFIX CLIENT_ADDR SERVER_ADDR
# sets NS_C NS_S (namespaces), IF_C IF_S (veth ends), A_C A_S (addresses,
# 198.18.0.0/15 only), work (a scratch directory) and pids (append the PID
# of every background process: cleanup stops them by PID). Skips (77)
# without root or the tools.
netns_pair() {
	local prefix=$1
	[ "$(id -u)" -eq 0 ] || { echo "skip: needs root" >&2; exit 77; }
	for t in ip smtp-source smtp-sink python3; do
		command -v "$t" >/dev/null || { echo "skip: $t missing" >&2; exit 77; }
	done
	NS_C=$prefix-c-$$ NS_S=$prefix-s-$$
	IF_C=${prefix}c$$ IF_S=${prefix}s$$
	IF_C=${IF_C:0:15} IF_S=${IF_S:0:15}
	A_C=$2 A_S=$3
	work=$(mktemp -d "/tmp/$prefix.XXXXXX")
	chmod 755 "$work"
	pids=()
	trap netns_cleanup EXIT

	ip netns add "$NS_C"
	ip netns add "$NS_S"
	ip link add "$IF_C" netns "$NS_C" type veth peer name "$IF_S" netns "$NS_S"
	ip -n "$NS_C" addr add "$A_C/24" dev "$IF_C"
	ip -n "$NS_S" addr add "$A_S/24" dev "$IF_S"
	for ns in "$NS_C" "$NS_S"; do ip -n "$ns" link set lo up; done
	ip -n "$NS_C" link set "$IF_C" up
	ip -n "$NS_S" link set "$IF_S" up
	if command -v ethtool >/dev/null; then
		# forwarded frames otherwise carry partial checksums; MTU-sized segments
		ip netns exec "$NS_C" ethtool -K "$IF_C" tx off tso off gso off >/dev/null 2>&1 || true
		ip netns exec "$NS_S" ethtool -K "$IF_S" tx off tso off gso off gro off >/dev/null 2>&1 || true
	fi
}

netns_cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	ip netns del "$NS_C" 2>/dev/null || true
	ip netns del "$NS_S" 2>/dev/null || true
	rm -rf "$work"
}

# Waits (10 s at most) until process $1 holds a socket: breakwater's
# af_packet port is open once its receive loop runs.
wait_socket() {
	for _ in $(seq 1 100); do
		ls -l "/proc/$1/fd" 2>/dev/null | grep -q 'socket:' && return 0
		sleep 0.1
	done
}

# Sends SIGINT to process $1 after $2 seconds unless the test ends first:
# bounds a breakwater run without timeout(1), which forwards only the first
# SIGHUP and dies of the second.
watchdog() {
	( sleep "$2" & s=$!; trap 'kill $s 2>/dev/null; exit 0' TERM; wait $s; kill -INT "$1" 2>/dev/null ) &
	pids+=($!)
}
