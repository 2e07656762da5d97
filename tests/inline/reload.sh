#!/usr/bin/env bash
# inline: SIGHUP reloads the rules without stopping traffic. breakwater reads
# a live veth (net_af_packet) while smtp-source sends through it:
#   1. rules A: every transaction hits T_FROM;
#   2. a rule file with a syntax error + SIGHUP: the reload is refused with
#      file:line on stderr, and traffic is still scored by rules A;
#   3. rules B (adds T_NEW) + SIGHUP: later transactions hit T_NEW.
# No transaction may go unrecorded across the reloads.
# Needs root, iproute2, smtp-source/smtp-sink; skips (77) otherwise.
# Usage: reload.sh BREAKWATER
set -euo pipefail
BW=${1:?usage: reload.sh BREAKWATER}

[ "$(id -u)" -eq 0 ] || { echo "skip: needs root" >&2; exit 77; }
for t in ip smtp-source smtp-sink python3; do
	command -v "$t" >/dev/null || { echo "skip: $t missing" >&2; exit 77; }
done

tag=$$
NS_C=bwr-c-$tag NS_S=bwr-s-$tag
IF_C=bwrc$tag IF_S=bwrs$tag
IF_C=${IF_C:0:15} IF_S=${IF_S:0:15}
A_C=198.18.3.1 A_S=198.18.3.2
work=$(mktemp -d /tmp/bw-reload.XXXXXX)
chmod 755 "$work"
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	ip netns del "$NS_C" 2>/dev/null || true
	ip netns del "$NS_S" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$NS_C"
ip netns add "$NS_S"
ip link add "$IF_C" netns "$NS_C" type veth peer name "$IF_S" netns "$NS_S"
ip -n "$NS_C" addr add "$A_C/24" dev "$IF_C"
ip -n "$NS_S" addr add "$A_S/24" dev "$IF_S"
for ns in "$NS_C" "$NS_S"; do ip -n "$ns" link set lo up; done
ip -n "$NS_C" link set "$IF_C" up
ip -n "$NS_S" link set "$IF_S" up
if command -v ethtool >/dev/null; then
	ip netns exec "$NS_C" ethtool -K "$IF_C" tx off tso off gso off >/dev/null 2>&1 || true
	ip netns exec "$NS_S" ethtool -K "$IF_S" tx off tso off gso off gro off >/dev/null 2>&1 || true
fi

mkdir "$work/rules"
cat > "$work/rules/10_a.cf" <<'CF'
header   T_FROM  From =~ /sender\@example\.test/
describe T_FROM  The test sender
score    T_FROM  1.0
CF

ip netns exec "$NS_S" timeout 90 smtp-sink -u nobody "$A_S:25" 100 &
pids+=($!)
# not under timeout(1): it forwards only the first SIGHUP and dies of the
# second; a watchdog bounds the run instead
ip netns exec "$NS_S" "$BW" --iface "$IF_S" --rules "$work/rules" \
	-o "$work/records.json" 2>"$work/stderr" &
bw=$!
pids+=($bw)
( sleep 90 & s=$!; trap 'kill $s 2>/dev/null; exit 0' TERM; wait $s; kill -INT "$bw" 2>/dev/null ) &
pids+=($!)

wait_for() {   # pattern in breakwater's stderr, within 30 s
	for _ in $(seq 1 300); do
		grep -q "$1" "$work/stderr" && return 0
		sleep 0.1
	done
	echo "FAIL: '$1' never appeared on stderr:" >&2
	cat "$work/stderr" >&2
	exit 1
}
send() {       # N messages
	ip netns exec "$NS_C" timeout 30 smtp-source -s 1 -m "$1" -f sender@example.test \
		-t rcpt@example.test "$A_S:25"
}

for _ in $(seq 1 100); do
	ls -l "/proc/$bw/fd" 2>/dev/null | grep -q 'socket:' && break
	sleep 0.1
done
sleep 1
send 2
sleep 0.5

# 2: a broken rule file is refused; the running rules stay
cat > "$work/rules/20_broken.cf" <<'CF'
header T_BROKEN From =~ /unclosed(/
CF
kill -HUP "$bw"
wait_for "reload refused"
grep -q "20_broken.cf:1" "$work/stderr" || { echo "FAIL: refusal does not name file:line" >&2; cat "$work/stderr" >&2; exit 1; }
send 2
sleep 0.5

# 3: good rules are swapped in
rm "$work/rules/20_broken.cf"
cat > "$work/rules/20_b.cf" <<'CF'
header   T_NEW  From =~ /example/
describe T_NEW  Added by the reload
score    T_NEW  2.0
CF
kill -HUP "$bw"
wait_for "rules reloaded"
send 2
sleep 1
kill -INT "$bw"
wait "$bw" || { echo "breakwater exited with $?" >&2; cat "$work/stderr" >&2; exit 1; }

python3 - "$work/records.json" <<'PY'
import json, sys
txs = [json.loads(l) for l in open(sys.argv[1])]
txs = [t for t in txs if t.get("event") == "smtp"]
fails = []
if len(txs) != 6:
    fails.append(f"expected 6 transactions, got {len(txs)}")
txs.sort(key=lambda t: t["ts"])
for i, t in enumerate(txs):
    rules = {h["rule"] for h in t["hits"]}
    want = {"T_FROM"} if i < 4 else {"T_FROM", "T_NEW"}
    if rules != want:
        fails.append(f"transaction {i + 1}: hits {sorted(rules)}, want {sorted(want)}")
for f in fails:
    print("FAIL:", f)
print(f"{len(txs)} transactions across two reloads (one refused)")
sys.exit(1 if fails else 0)
PY
