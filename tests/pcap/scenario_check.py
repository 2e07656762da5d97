#!/usr/bin/env python3
"""pcap: storm scenarios made with real MTAs, end to end.

  scenario_check.py BREAKWATER CASE [--twice]

CASE is storm-loop, storm-flood or storm-burst (folders beside this file,
each with capture.pcap, rules.cf and README.md; captures are made by
scripts/make-captures.sh). Replays the capture with the case's rules.cf and
checks:

  1. every storm event against a naive reference model of the track rules,
     recounted from the transaction records themselves (every key of a
     transaction updated, then a crossing emitted before that transaction's
     record): rule, dir, per-key, key and value at the crossing, and no
     event the model does not expect;
  2. every transaction's behaviour hits: a track rule is on a transaction
     exactly when one of its keys is over, with that key's value;
  3. score = sum of the hits, action from the rules' thresholds;
  4. the case's own expectations (see CASES below): which events, which
     transactions carry which hits, the legitimate bulk sender below block.

--twice is the property test: the capture followed by itself shifted by
SHIFT seconds (longer than every window) as new flows (replay_twice.py)
gives, for the second copy, the same storm "up" events (rule, key, value)
with timestamps shifted by exactly SHIFT, and the same transactions (score,
action, hits); checks 1-4 hold on each copy.
"""
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
SHIFT = 7200                     # > every window in the cases' rules.cf
LEGIT = "alice@client.example.test"
UNKNOWN_CODES = {550, 551, 553}  # the captures' user-unknown replies (550 5.1.1)

# grammar name -> name in the storm event's "per" (the same words since the
# event names its key as the rule does)
PER_NAME = {k: k for k in ("rcpt", "sender", "client_ip", "message_id", "helo",
                           "fingerprint", "sender_domain", "client_net")}


def ts_us(s):
    d = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(d.replace(tzinfo=datetime.timezone.utc).timestamp()) * 1_000_000 + d.microsecond


def load_rules(path):
    tracks, scores, actions = {}, {}, {}
    for line in open(path):
        line = line.split("#")[0].strip()
        w = line.split()
        if not w:
            continue
        if w[0] == "track":
            m = re.match(r"track\s+(\S+)\s+(count|distinct (\S+)|ratio (\S+))\s+per\s+(\S+)\s+over\s+"
                         r"(\d+)([smhd]?)\s+>\s+(\S+)(?:\s+min\s+(\d+))?$", line)
            if not m:
                raise SystemExit(f"{path}: track rule the checker does not model: {line}")
            mul = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(7)]
            tracks[m.group(1)] = {
                "measure": m.group(2).split()[0], "item": m.group(3) or m.group(4),
                "key": m.group(5), "window_s": int(m.group(6)) * mul,
                "thr": float(m.group(8)), "min": int(m.group(9) or 0)}
        elif w[0] == "score":
            scores[w[1]] = float(w[2])
        elif w[0] == "action":
            actions[w[1]] = float(w[2])
    return tracks, scores, actions


def items(tx, what):
    """The values of one grammar item/key for a transaction record."""
    if what == "client_ip":
        return [tx["src_ip"]]
    if what == "sender":
        return [tx["mail_from"].lower()] if tx["mail_from"] else []
    if what == "sender_domain":
        return [tx["mail_from"].lower().rsplit("@", 1)[1]] if "@" in (tx["mail_from"] or "") else []
    if what == "rcpt":
        return [r.lower() for r in tx["rcpt_to"]]
    if what == "rejected_rcpt":
        return [r.lower() for r, c in zip(tx["rcpt_to"], tx["rcpt_replies"]) if c in UNKNOWN_CODES]
    if what == "message_id":
        return [tx["message_id"]] if tx["message_id"] else []
    if what == "helo":
        return [tx["helo"].lower()] if tx["helo"] else []
    return None                  # fingerprint: not in the record, checked by the case


class Model:
    """Naive recount of the track rules over the transaction records; the
    state is dropped when the clock jumps past the longest window (--twice)."""

    def __init__(self, tracks):
        self.tracks = {n: t for n, t in tracks.items() if self.modelled(t)}
        self.maxwin = max((t["window_s"] for t in tracks.values()), default=0) * 1_000_000
        self.last = None
        self.reset()

    @staticmethod
    def modelled(t):
        dummy = {"src_ip": "", "mail_from": "", "rcpt_to": [], "rcpt_replies": [],
                 "message_id": None, "helo": ""}
        return items(dummy, t["key"]) is not None and \
            (t["measure"] == "count" or items(dummy, t["item"]) is not None)

    def reset(self):
        self.count = defaultdict(int)
        self.sets = defaultdict(set)
        self.num = defaultdict(int)
        self.den = defaultdict(int)
        self.over = set()

    def value(self, name, t, k):
        if t["measure"] == "count":
            return self.count[(name, k)]
        if t["measure"] == "distinct":
            return len(self.sets[(name, k)])
        den = self.den[(name, k)]
        return self.num[(name, k)] / den if den else 0.0

    def is_over(self, name, t, k):
        if t["measure"] == "ratio" and self.den[(name, k)] < max(t["min"], 1):
            return False
        return self.value(name, t, k) > t["thr"]

    def feed(self, tx):
        """Update with one transaction; return (expected up events, {rule: [values of over keys]})."""
        now = ts_us(tx["ts"])
        if self.last is not None and now - self.last > self.maxwin:
            self.reset()
        self.last = now
        events, hits = [], {}
        for name, t in self.tracks.items():
            keys = sorted(set(items(tx, t["key"])))
            for k in keys:
                if t["measure"] == "count":
                    self.count[(name, k)] += 1
                elif t["measure"] == "distinct":
                    self.sets[(name, k)].update(items(tx, t["item"]))
                else:
                    self.num[(name, k)] += len(items(tx, t["item"]))
                    self.den[(name, k)] += len(tx["rcpt_to"])
                if self.is_over(name, t, k):
                    if (name, k) not in self.over:
                        self.over.add((name, k))
                        events.append((name, "up", PER_NAME[t["key"]], k, self.value(name, t, k)))
                    hits.setdefault(name, []).append(self.value(name, t, k))
        return events, hits


def run(bw, cap, rules):
    out = subprocess.run([bw, "--pcap", cap, "--rules", rules, "-q"],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def segments(recs):
    """[(storm events before this transaction, transaction)] in record order."""
    segs, pending = [], []
    for r in recs:
        if r["event"] == "storm":
            pending.append(r)
        elif r["event"] == "smtp":
            segs.append((pending, r))
            pending = []
    return segs, pending


def same(a, b):
    return abs(a - b) < 1e-9


def generic_checks(recs, tracks, scores, actions, fails, tag=""):
    model = Model(tracks)
    segs, trailing = segments(recs)
    for ev in trailing:
        fails.append(f"{tag}storm event after the last transaction: {ev}")
    for i, (evs, tx) in enumerate(segs):
        want, mhits = model.feed(tx)
        got = [(e["rule"], e["dir"], e["per"], e["key"], e["value"]) for e in evs
               if e["rule"] in model.tracks and e["dir"] == "up"]
        if sorted(got, key=str) != sorted(want, key=str) and not (
                len(got) == len(want) and all(g[:4] == w[:4] and same(g[4], w[4])
                                              for g, w in zip(sorted(got, key=str), sorted(want, key=str)))):
            fails.append(f"{tag}tx #{i + 1} ({tx['src_ip']}): storm events {got}, model expects {want}")
        for e in evs:
            if e["dir"] == "up" and e["window_s"] != tracks[e["rule"]]["window_s"]:
                fails.append(f"{tag}event {e['rule']} window_s {e['window_s']}")
            if e["dir"] == "up" and not (ts_us(e["first_seen"]) <= ts_us(e["last_seen"])):
                fails.append(f"{tag}event {e['rule']} {e['key']}: first_seen after last_seen")
        hits = {h["rule"]: h for h in tx["hits"]}
        for name in model.tracks:
            if (name in hits) != (name in mhits):
                fails.append(f"{tag}tx #{i + 1} ({tx['src_ip']}): {name} hit {name in hits}, model says "
                             f"{name in mhits} {mhits.get(name)}")
            elif name in hits and not any(same(hits[name]["value"], v) for v in mhits[name]):
                fails.append(f"{tag}tx #{i + 1}: {name} value {hits[name]['value']}, model {mhits[name]}")
        for name, h in hits.items():
            if name in tracks and h.get("window_s") != tracks[name]["window_s"]:
                fails.append(f"{tag}tx #{i + 1}: {name} hit without its window: {h}")
            if name in scores and not same(h["score"], scores[name]):
                fails.append(f"{tag}tx #{i + 1}: {name} score {h['score']}, rules say {scores[name]}")
        if not same(tx["score"], sum(h["score"] for h in tx["hits"])):
            fails.append(f"{tag}tx #{i + 1}: score {tx['score']} is not the sum of its hits")
        reached = [(v, a) for a, v in actions.items() if tx["score"] >= v]
        want_action = max(reached)[1] if reached else "pass"
        if tx["action"] != want_action:
            fails.append(f"{tag}tx #{i + 1}: action {tx['action']} for score {tx['score']}, want {want_action}")
    return segs


# --- per-case expectations ------------------------------------------------------

def ups(recs):
    return [(e["rule"], e["key"], e["value"]) for e in recs if e["event"] == "storm" and e["dir"] == "up"]


def check_loop(recs, segs, fails, bw):
    txs = [t for _, t in segs]
    if len(txs) != 29:
        fails.append(f"loop: {len(txs)} hops, want 29 (hopcount_limit 30)")
    mids = {t["message_id"] for t in txs}
    if len(mids) != 1:
        fails.append(f"loop: {len(mids)} Message-IDs, want 1")
    mid = next(iter(mids))
    for k, t in enumerate(txs, 1):
        hits = {h["rule"]: h for h in t["hits"]}
        if t["received_count"] != k:
            fails.append(f"loop hop {k}: received_count {t['received_count']}")
        if t["src_ip"] != ("198.18.0.1" if k % 2 else "198.18.0.2"):
            fails.append(f"loop hop {k}: from {t['src_ip']}, the MTAs should alternate")
        for rule, on, val in (("L_DUP_MSGID", k >= 4, k), ("L_DUP_BODY", k >= 4, k),
                              ("L_MSGID_CLIENTS", k >= 2, min(k, 2)),
                              ("L_RCVD_HOPS", k > 10, None), ("L_MAIL_LOOP", k > 10, None)):
            if (rule in hits) != on:
                fails.append(f"loop hop {k}: {rule} {'missing' if on else 'unexpected'}")
            elif on and val is not None and hits[rule]["value"] != val:
                fails.append(f"loop hop {k}: {rule} value {hits[rule]['value']}, want {val}")
        if t["action"] != ("block" if k > 10 else "tag" if k >= 4 else "pass"):
            fails.append(f"loop hop {k}: action {t['action']}")
    if not txs[-1]["last_reply"].startswith("554 5.4.0"):
        fails.append(f"loop: last hop's reply {txs[-1]['last_reply']!r}, want Postfix's 554 5.4.0 too many hops")
    want = [("L_MSGID_CLIENTS", mid, 2), ("L_DUP_MSGID", mid, 4), ("L_DUP_BODY", None, 4)]
    got = ups(recs)
    if [(r, v) for r, _, v in got] != [(r, v) for r, _, v in want] or got[0][1] != mid or got[1][1] != mid:
        fails.append(f"loop: storm events {got}, want {want} (body_hash key any)")
    # The shipped rules (rules/): BW_DUP_MSGID from hop 4, BW_RCVD_OVER_25 and
    # the BW_MAIL_LOOP meta from hop 26, which blocks.
    shipped = [r for r in run(bw, os.path.join(HERE, "storm-loop", "capture.pcap"),
                              os.path.join(HERE, "..", "..", "rules")) if r["event"] == "smtp"]
    for k, t in enumerate(shipped, 1):
        names = {h["rule"] for h in t["hits"]}
        if ("BW_MAIL_LOOP" in names) != (k >= 26) or ("BW_DUP_MSGID" in names) != (k >= 4):
            fails.append(f"loop hop {k} with rules/: hits {sorted(names)}")
        if (t["action"] == "block") != (k >= 26):
            fails.append(f"loop hop {k} with rules/: action {t['action']}")


def check_legit(txs, fails, name, n=40):
    legit = [t for t in txs if t["mail_from"] == LEGIT]
    if len(legit) != n or len({r for t in legit for r in t["rcpt_to"]}) != n:
        fails.append(f"{name}: legitimate sender: {len(legit)} transactions, want {n} to {n} distinct recipients")
    for t in legit:
        if t["rcpt_replies"] != [250]:
            fails.append(f"{name}: legitimate message refused: {t['rcpt_replies']}")
        if t["action"] == "block":
            fails.append(f"{name}: legitimate sender blocked: {t['rcpt_to']} score {t['score']} {t['hits']}")
    return legit


def check_flood(recs, segs, fails, bw):
    txs = [t for _, t in segs]
    flood = [t for t in txs if t["rcpt_to"] == ["full@sink.example.test"]]
    bounces = [t for t in txs if t["mail_from"] == ""]
    legit = check_legit(txs, fails, "flood")
    if len(flood) != 45 or any(t["rcpt_replies"] != [452] for t in flood):
        fails.append(f"flood: {len(flood)} flood transactions (want 45, all 452)")
    if len(bounces) != 22 or any(t["rcpt_to"] != ["victim@client.example.test"] for t in bounces):
        fails.append(f"flood: {len(bounces)} bounces (want 22 to victim@client.example.test)")
    want = {("F_RCPT_FANIN", "full@sink.example.test", 3), ("F_RCPT_STORM", "full@sink.example.test", 21),
            ("F_SENDER_STORM", "victim@client.example.test", 21), ("F_SENDER_STORM", LEGIT, 21),
            ("F_FANOUT", "198.18.0.1", 31), ("F_RCPT_STORM", "victim@client.example.test", 21)}
    got = ups(recs)
    if set(got) != want or len(got) != len(want):
        fails.append(f"flood: storm events: unexpected {sorted(set(got) - want)}, missing "
                     f"{sorted(want - set(got))} ({len(got)} events)")
    for i, t in enumerate(flood, 1):
        if any(h["rule"] == "F_REJECTS" for h in t["hits"]):
            fails.append("flood: F_REJECTS fired on 452 over-quota replies")
        if (t["action"] == "block") != (i >= 21):
            fails.append(f"flood message {i}: action {t['action']} {t['hits']}")
    for i, t in enumerate(bounces, 1):
        if (any(h["rule"] == "F_BACKSCATTER" for h in t["hits"])) != (i >= 21):
            fails.append(f"flood bounce {i}: F_BACKSCATTER {t['hits']}")
    if any(any(h["rule"] == "F_BACKSCATTER" for h in t["hits"]) for t in txs if t["mail_from"]):
        fails.append("flood: F_BACKSCATTER on a transaction with a sender")
    if max(t["score"] for t in legit) >= 3:
        fails.append("flood: the legitimate sender reached tag")


def check_burst(recs, segs, fails, bw):
    txs = [t for _, t in segs]
    legit = check_legit(txs, fails, "burst")
    bots = [t for t in txs if t["src_ip"].startswith("198.18.2.")]
    if len(bots) != 40 or len({t["src_ip"] for t in bots}) != 40 or len({t["helo"] for t in bots}) != 40:
        fails.append(f"burst: {len(bots)} bot sessions, want 40 from 40 addresses with 40 HELOs")
    got = ups(recs)
    want = {("B_REJECTS", f"198.18.2.{100 + i}", 0.8) for i in range(1, 41)}
    for rcpt in ["info"] + ["unknown-" + n for n in ("admin", "john", "mary", "peter", "web", "hr")]:
        want |= {("B_FANIN", rcpt + "@sink.example.test", 11), ("B_HELO_FANIN", rcpt + "@sink.example.test", 11)}
    want.add(("B_FANOUT", "198.18.0.1", 31))
    if {(r, k, round(v, 6)) for r, k, v in got} != want or len(got) != len(want):
        g = {(r, k, round(v, 6)) for r, k, v in got}
        fails.append(f"burst: storm events: unexpected {sorted(g - want)}, missing {sorted(want - g)} "
                     f"({len(got)} events)")
    for i, t in enumerate(bots, 1):
        if t["rcpt_replies"] != [250, 550, 550, 550, 550]:
            fails.append(f"burst bot {i}: replies {t['rcpt_replies']}")
        names = {h["rule"] for h in t["hits"]}
        if "B_REJECTS" not in names or ("B_DICT_ATTACK" in names) != ("B_FANIN" in names):
            fails.append(f"burst bot {i}: hits {sorted(names)}")
        if (t["action"] == "block") != (i >= 11):
            fails.append(f"burst bot {i}: action {t['action']} (want block from the 11th)")
    if any(h["rule"] in ("B_REJECTS", "B_FANIN", "B_DICT_ATTACK") for t in legit for h in t["hits"]):
        fails.append("burst: the legitimate sender carries an attack rule")


CASES = {"storm-loop": check_loop, "storm-flood": check_flood, "storm-burst": check_burst}


def main():
    args = [a for a in sys.argv[1:] if a != "--twice"]
    twice = "--twice" in sys.argv[1:]
    if len(args) != 2 or args[1] not in CASES:
        raise SystemExit(f"usage: scenario_check.py BREAKWATER {{{','.join(CASES)}}} [--twice]")
    bw, case = args
    d = os.path.join(HERE, case)
    rules = os.path.join(d, "rules.cf")
    tracks, scores, actions = load_rules(rules)
    fails = []
    if not twice:
        recs = run(bw, os.path.join(d, "capture.pcap"), rules)
        segs = generic_checks(recs, tracks, scores, actions, fails)
        CASES[case](recs, segs, fails, bw)
        n_tx, n_ev = len(segs), sum(r["event"] == "storm" for r in recs)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cap2 = os.path.join(tmp, "twice.pcap")
            subprocess.run([sys.executable, os.path.join(HERE, "replay_twice.py"),
                            os.path.join(d, "capture.pcap"), cap2, "--shift", str(SHIFT)], check=True)
            recs = run(bw, cap2, rules)
        t0 = ts_us(next(r["ts"] for r in recs if r["event"] == "smtp"))
        cut = t0 + SHIFT * 1_000_000 - 1_000_000
        # the copies are SHIFT seconds apart: split records on the clock
        first = [r for r in recs if ts_us(r["ts"]) < cut]
        second = [r for r in recs if ts_us(r["ts"]) >= cut]
        # the down events of the first copy's keys (windows expiring) are not
        # part of the comparison; they must only be for keys that went up
        downs = [r for r in second if r["event"] == "storm" and r["dir"] == "down"]
        upk = {(r["rule"], r["key"]) for r in first if r["event"] == "storm" and r["dir"] == "up"}
        for r in downs:
            if (r["rule"], r["key"]) not in upk:
                fails.append(f"twice: down event for a key that never went up: {r}")
        second = [r for r in second if not (r["event"] == "storm" and r["dir"] == "down")]
        for tag, part in (("copy 1: ", first), ("copy 2: ", second)):
            segs = generic_checks(part, tracks, scores, actions, fails, tag)
            CASES[case](part, segs, fails, bw)
        e1 = [r for r in first if r["event"] == "storm"]
        e2 = [r for r in second if r["event"] == "storm"]
        if len(e1) != len(e2):
            fails.append(f"twice: {len(e1)} storm events in copy 1, {len(e2)} in copy 2")
        for a, b in zip(e1, e2):
            if (a["rule"], a["dir"], a["per"], a["key"], a["value"]) != (b["rule"], b["dir"], b["per"], b["key"], b["value"]):
                fails.append(f"twice: copy 1 event {a} != copy 2 event {b}")
            for f in ("ts", "first_seen", "last_seen"):
                if ts_us(b[f]) - ts_us(a[f]) != SHIFT * 1_000_000:
                    fails.append(f"twice: {a['rule']} {a['key']} {f} shifted by "
                                 f"{(ts_us(b[f]) - ts_us(a[f])) / 1e6}s, want {SHIFT}s")
        t1 = [r for r in first if r["event"] == "smtp"]
        t2 = [r for r in second if r["event"] == "smtp"]
        for a, b in zip(t1, t2):
            if (a["score"], a["action"], a["hits"]) != (b["score"], b["action"], b["hits"]) or \
                    a["src_port"] == b["src_port"] or ts_us(b["ts"]) - ts_us(a["ts"]) != SHIFT * 1_000_000:
                fails.append(f"twice: transaction differs: {a['ts']} {a['hits']} / {b['ts']} {b['hits']}")
        if len(t1) != len(t2):
            fails.append(f"twice: {len(t1)} transactions in copy 1, {len(t2)} in copy 2")
        n_tx, n_ev = len(t1) + len(t2), len(e1) + len(e2)
        print(f"twice: {len(downs)} down events between the copies")
    for f in fails[:60]:
        print("FAIL:", f)
    if len(fails) > 60:
        print(f"FAIL: ... {len(fails) - 60} more")
    print(f"{case}{' --twice' if twice else ''}: {n_tx} transactions, {n_ev} storm events checked, "
          f"{len(fails)} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
