#!/usr/bin/env bash
# inline: SIGHUP reloads the rules without stopping traffic. breakwater reads
# a live veth (net_af_packet) while smtp-source sends through it:
#   1. rules A: every transaction hits T_FROM;
#   2. a rule file with a syntax error + SIGHUP: the reload is refused with
#      file:line on stderr, and traffic is still scored by rules A;
#   3. rules B (adds T_NEW) + SIGHUP: later transactions hit T_NEW.
# No transaction may go unrecorded across the reloads.
# Needs root, iproute2, smtp-source/smtp-sink; skips (77) otherwise.
# Usage: reload.sh BREAKWATER [OPTION...]   (options added to breakwater's)
set -euo pipefail
BW=${1:?usage: reload.sh BREAKWATER [OPTION...]}
shift
extra=("$@")   # e.g. --workers 2

. "$(dirname "$0")/netns.sh"
netns_pair bwr 198.18.3.1 198.18.3.2

mkdir "$work/rules"
cat > "$work/rules/10_a.cf" <<'CF'
header   T_FROM  From =~ /sender\@example\.test/
describe T_FROM  The test sender
score    T_FROM  1.0
CF

ip netns exec "$NS_S" timeout 90 smtp-sink -u nobody "$A_S:25" 100 &
pids+=($!)
ip netns exec "$NS_S" "$BW" --iface "$IF_S" "${extra[@]}" --rules "$work/rules" \
	-o "$work/records.json" 2>"$work/stderr" &
bw=$!
pids+=($bw)
watchdog "$bw" 90

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

wait_socket "$bw"
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
