#!/usr/bin/env bash
# inline: breakwater --iface reads a live interface through DPDK's
# net_af_packet. Two network namespaces joined by a veth pair; Postfix's
# smtp-sink serves in one, smtp-source sends from the other, and breakwater
# runs in the server's namespace on its veth end. Stopped with SIGINT, it
# must have written one record per session with the reassembled bytes and
# one record per transaction.
#
# Needs root, iproute2, smtp-source/smtp-sink; skips (77) otherwise.
# Usage: live_iface.sh BREAKWATER [OPTION...]   (options added to breakwater's)
set -euo pipefail
BW=${1:?usage: live_iface.sh BREAKWATER [OPTION...]}
shift
extra=("$@")   # e.g. --workers 2
# one worker: 4 sessions; with --workers, 32, so that every worker gets
# some (checked below from the summary's workers line)
msgs=4
[ ${#extra[@]} -gt 0 ] && msgs=32

. "$(dirname "$0")/netns.sh"
netns_pair bwl 198.18.1.1 198.18.1.2

ip netns exec "$NS_S" timeout 60 smtp-sink -u nobody "$A_S:25" 100 &
pids+=($!)
ip netns exec "$NS_S" "$BW" --iface "$IF_S" "${extra[@]}" --flows -o "$work/records.json" 2>"$work/stderr" &
bw=$!
pids+=($bw)
watchdog "$bw" 60
wait_socket "$bw"   # the af_packet port is open once the receive loop runs
sleep 1

ip netns exec "$NS_C" timeout 30 smtp-source -s 2 -m "$msgs" -r 3 -l 2000 -f sender@example.test \
	-t rcpt@example.test "$A_S:25"
sleep 1
kill -INT "$bw"
wait "$bw" || { echo "breakwater exited with $?" >&2; cat "$work/stderr" >&2; exit 1; }

python3 - "$work/records.json" "$A_C" "$A_S" "$msgs" "$work/stderr" <<'PY'
import json, re, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
msgs = int(sys.argv[4])
flows = [r for r in recs if r.get("event") == "flow"]
client, server = sys.argv[2], sys.argv[3]
ok = True
def fail(msg):
    global ok
    ok = False
    print("FAIL:", msg, file=sys.stderr)
# smtp-source -m N: N messages, one session each (-s 2: two at a time)
if len(flows) != msgs:
    fail(f"expected {msgs} flow records, got {len(flows)}")
for f in flows:
    if f["src_ip"] != client or f["dest_ip"] != server or f["dest_port"] != 25:
        fail(f"unexpected endpoints: {f}")
    # each session carries one message of 2000 bytes plus the commands
    if f["reasm_toserver"] < 2000 or f["reasm_toclient"] == 0:
        fail(f"too few reassembled bytes: {f}")
    if f["gaps_toserver"] or f["gaps_toclient"]:
        fail(f"gaps on a lossless link: {f}")
txs = [r for r in recs if r.get("event") == "smtp"]
if len(txs) != msgs:
    fail(f"expected {msgs} transaction records, got {len(txs)}")
# with workers: each of them ran frames (the flows really were spread)
m = re.search(r"workers:\s+(\d+); frames run by each ([\d /]+);", open(sys.argv[5]).read())
if msgs != 4:
    if not m:
        fail("no workers line in the summary")
    else:
        frames = [int(x) for x in m.group(2).split("/")]
        if len(frames) != int(m.group(1)) or min(frames) == 0:
            fail(f"a worker ran no frame: {m.group(0)}")
        else:
            print("frames per worker:", frames)
# smtp-source -r 3 numbers its recipients: 3rcpt@, 2rcpt@, rcpt@
for t in txs:
    if t["mail_from"] != "sender@example.test" or t["rcpt_to"] != ["3rcpt@example.test", "2rcpt@example.test", "rcpt@example.test"] or not t["accepted"]:
        fail(f"unexpected transaction: {t}")
print(f"{len(flows)} flows seen live, {sum(f['reasm_toserver'] for f in flows)} bytes client->server")
sys.exit(0 if ok else 1)
PY
