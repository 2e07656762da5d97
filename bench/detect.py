#!/usr/bin/env python3
"""Score breakwater's verdicts against gen-smtp-pcap.py's ground truth.

    detect.py RECORDS.jsonl TRUTH.truth.jsonl [--events FILE.events.json] [--json]

RECORDS is breakwater's output on the generator's capture
(`breakwater --pcap X.pcap --rules DIR ... > RECORDS.jsonl`): one JSON object
a line, "event":"smtp" transaction records and "event":"storm" records (flow
records and anything else are ignored; lines that are not JSON are counted).
TRUTH is the generator's X.truth.jsonl; the per-event summary is read from
X.events.json beside it when present (scenario captures; --events names
another). A capture made without --scenario has no events: every
transaction is background and only the spam figures apply.

Join. A record and a truth line are the same transaction when they have the
same client and server address and port and the same index in the session
(`tx`). The generator rarely reuses a client port towards the same server,
but it may; when a key occurs more than once, the k-th record (in time order)
takes the k-th truth line (in time order). Records with no truth line and
truth lines with no record are counted, never fatal.

Figures:
- spam: positive = breakwater's action is above pass (tag or block with the
  default rules); truth = the message's corpus label. Over transactions
  whose message was sent (truth "data") and labelled spam or ham: precision,
  recall, F1, accuracy, for the background alone and for all traffic
  (event messages carry the label of the corpus message they were made from;
  greetings are ham; bounces are unlabelled and left out).
- events: a transaction is *flagged* when it carries a behaviour hit (a hit
  with a measured value and window: a `track` rule) or its action is block.
  Per event type: transactions, flagged, recall (flagged / transactions),
  precision as if this type were the only attack (flagged of this type over
  flagged of this type plus the false alarms), per role (flood/bounce, original/copy, ...), the
  behaviour rules that fired, and per event: the messages that passed
  before the first detection (transactions accepted by the server before the
  first flagged one), the detection time (first flagged transaction minus
  the event's first transaction) and the first storm record on the event's
  key (client, recipient, Message-ID). For the legitimate bulk sender
  ("bulk") flagged transactions are false positives: tagged and blocked are
  reported, recall is not meaningful.
- false alarms: benign transactions (background, the bulk sender) flagged,
  except background corpus spam blocked on its content alone (a right
  verdict, no behaviour involved; counted apart as spam_blocked); the
  background's by behaviour rule.

Prints a report, or with --json one JSON object (bench/run.sh reads it).
Exit status 0, or 2 when an input cannot be read.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

BENIGN_TYPES = ("bulk",)


def ts_s(v):
    """ISO 8601 (breakwater's and the generator's "...Z") -> seconds, or None."""
    if not v:
        return None
    try:
        return datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError, TypeError):
        return None


def read_jsonl(path, what):
    out, bad = [], 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"detect: cannot read {what} {path}: {e}", file=sys.stderr)
        sys.exit(2)
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                o = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(o, dict):
                out.append(o)
            else:
                bad += 1
    return out, bad


def key_of(r):
    try:
        return (str(r["src_ip"]), int(r["src_port"]), str(r["dest_ip"]),
                int(r["dest_port"]), int(r["tx"]))
    except (KeyError, TypeError, ValueError):
        return None


def is_track_hit(h):
    return isinstance(h, dict) and "window_s" in h


def flagged(rec):
    return rec.get("action") == "block" or any(is_track_hit(h) for h in rec.get("hits") or ())


def false_alarm(t, r):
    """A benign transaction (background or the bulk sender) flagged, except
    corpus spam blocked on its content alone (a right verdict, no behaviour)."""
    if r is None or not flagged(r):
        return False
    if t.get("event") is not None and t.get("event_type") not in BENIGN_TYPES:
        return False
    return not (t.get("label") == "spam"
                and not any(is_track_hit(h) for h in r.get("hits") or ()))


def positive(rec):
    return rec.get("action") not in (None, "pass")


def ratio(a, b):
    return round(a / b, 4) if b else None


def prf(tp, fp, fn, tn):
    p, r = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = round(2 * p * r / (p + r), 4) if p and r else (0.0 if p is not None and
                                                         r is not None else None)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": p, "recall": r,
            "f1": f1, "accuracy": ratio(tp + tn, tp + fp + fn + tn)}


def key_values(key):
    """Strings in an event's key (lists flattened), lower-cased."""
    out = set()
    if isinstance(key, dict):
        for v in key.values():
            for x in (v if isinstance(v, list) else [v]):
                if isinstance(x, str):
                    out.add(x.lower())
    return out


def main():
    ap = argparse.ArgumentParser(description="breakwater's verdicts against the ground truth")
    ap.add_argument("records", help="breakwater's JSON lines")
    ap.add_argument("truth", help="the generator's .truth.jsonl")
    ap.add_argument("--events", help="the generator's .events.json "
                    "(default: beside TRUTH)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()

    recs_all, bad_rec = read_jsonl(a.records, "records")
    truth, bad_truth = read_jsonl(a.truth, "truth")
    ev_path = a.events
    if ev_path is None:
        base = a.truth[:-len(".truth.jsonl")] if a.truth.endswith(".truth.jsonl") else a.truth
        ev_path = base + ".events.json" if os.path.exists(base + ".events.json") else None
    summary = {}
    if ev_path:
        try:
            with open(ev_path) as f:
                summary = json.load(f)
        except (OSError, ValueError) as e:
            print(f"detect: cannot read events {ev_path}: {e}", file=sys.stderr)
            sys.exit(2)

    txs = [r for r in recs_all if r.get("event") == "smtp"]
    storms = [r for r in recs_all if r.get("event") == "storm"]
    no_rules = sum(1 for r in txs if "action" not in r)

    # --- join -----------------------------------------------------------------
    by_key = {}
    unkeyed = 0
    for r in sorted(txs, key=lambda r: ts_s(r.get("ts")) or 0.0):
        k = key_of(r)
        if k is None:
            unkeyed += 1
            continue
        by_key.setdefault(k, []).append(r)
    truth_keys = {}
    for i, t in enumerate(truth):
        k = key_of(t)
        if k is not None:
            truth_keys.setdefault(k, []).append(i)
    match = [None] * len(truth)      # truth index -> record
    unmatched_rec = unkeyed
    for k, rs in by_key.items():
        idx = truth_keys.get(k, [])
        for j, r in enumerate(rs):
            if j < len(idx):
                match[idx[j]] = r
            else:
                unmatched_rec += 1
    unmatched_truth = sum(1 for m in match if m is None)

    # --- spam -----------------------------------------------------------------
    def spam_counts(sel):
        c = [0, 0, 0, 0]          # tp fp fn tn
        for t, r in sel:
            if not t.get("data") or t.get("label") not in ("spam", "ham") or r is None:
                continue
            pos, spam = positive(r), t["label"] == "spam"
            c[0 if pos and spam else 1 if pos else 2 if spam else 3] += 1
        return prf(*c)

    pairs = list(zip(truth, match))
    spam = {"background": spam_counts([p for p in pairs if p[0].get("event") is None]),
            "all": spam_counts(pairs)}

    # --- events ---------------------------------------------------------------
    events = {e["id"]: e for e in summary.get("events", []) if isinstance(e, dict)}
    for t in truth:                       # truth without a summary (or a partial one)
        e = t.get("event")
        if e is not None and e not in events:
            events[e] = {"id": e, "type": t.get("event_type"), "key": {}}
    ev_tx = {e: [] for e in events}
    for t, r in pairs:
        e = t.get("event")
        if e is not None:
            ev_tx[e].append((t, r))
    for e in ev_tx:
        ev_tx[e].sort(key=lambda p: (p[0].get("event_seq") is None, p[0].get("event_seq") or 0,
                                     ts_s(p[0].get("ts")) or 0.0))

    benign_flagged = sum(1 for t, r in pairs if false_alarm(t, r))
    storm_ups = sorted((s for s in storms if s.get("dir") == "up"),
                       key=lambda s: ts_s(s.get("ts")) or 0.0)

    per_event = []
    for eid, e in events.items():
        lst = ev_tx[eid]
        start = ts_s(e.get("start")) or (ts_s(lst[0][0].get("ts")) if lst else None)
        n_flag, first, passed, roles, rules = 0, None, 0, {}, {}
        actions = {}
        for i, (t, r) in enumerate(lst):
            role = t.get("role") or "-"
            ro = roles.setdefault(role, {"transactions": 0, "flagged": 0, "unmatched": 0})
            ro["transactions"] += 1
            if r is None:
                ro["unmatched"] += 1
                continue
            act = r.get("action", "none")
            actions[act] = actions.get(act, 0) + 1
            for h in r.get("hits") or ():
                if is_track_hit(h):
                    rules[h.get("rule")] = rules.get(h.get("rule"), 0) + 1
            if flagged(r):
                n_flag += 1
                ro["flagged"] += 1
                if first is None:
                    first = (i, r)
            elif first is None and t.get("accepted"):
                passed += 1
        for ro in roles.values():
            ro["recall"] = ratio(ro["flagged"], ro["transactions"])
        kv = key_values(e.get("key"))
        first_storm = next((s for s in storm_ups
                            if str(s.get("key", "")).lower() in kv
                            and (start is None or (ts_s(s.get("ts")) or 0) >= start - 1)),
                           None)
        det = None
        if first is not None and start is not None:
            ft = ts_s(first[1].get("ts"))
            det = round(ft - start, 3) if ft is not None else None
        per_event.append({
            "id": eid, "type": e.get("type"), "start": e.get("start"),
            "transactions": len(lst), "unmatched": sum(1 for _, r in lst if r is None),
            "flagged": n_flag, "recall": ratio(n_flag, len(lst)),
            "actions": actions, "behaviour_hits": rules, "roles": roles,
            "detected": first is not None,
            "first_detection_seq": first[0] if first else None,
            "passed_before_detection": passed,
            "detection_s": det,
            "first_storm": ({"rule": first_storm.get("rule"), "key": first_storm.get("key"),
                             "value": first_storm.get("value"), "ts": first_storm.get("ts"),
                             "after_s": round(ts_s(first_storm.get("ts")) - start, 3)
                             if start is not None and ts_s(first_storm.get("ts")) else None}
                            if first_storm else None)})

    types = {}
    for pe in per_event:
        ty = types.setdefault(pe["type"], {
            "events": 0, "detected": 0, "transactions": 0, "flagged": 0, "unmatched": 0,
            "passed_before_detection": 0, "detection_s": [], "actions": {},
            "behaviour_hits": {}, "roles": {}})
        ty["events"] += 1
        ty["detected"] += pe["detected"]
        ty["transactions"] += pe["transactions"]
        ty["flagged"] += pe["flagged"]
        ty["unmatched"] += pe["unmatched"]
        ty["passed_before_detection"] += pe["passed_before_detection"]
        if pe["detection_s"] is not None:
            ty["detection_s"].append(pe["detection_s"])
        for src, dst in ((pe["actions"], ty["actions"]), (pe["behaviour_hits"],
                                                          ty["behaviour_hits"])):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        for role, ro in pe["roles"].items():
            d = ty["roles"].setdefault(role, {"transactions": 0, "flagged": 0})
            d["transactions"] += ro["transactions"]
            d["flagged"] += ro["flagged"]
    for name, ty in types.items():
        ty["recall"] = ratio(ty["flagged"], ty["transactions"])
        benign = name in BENIGN_TYPES
        ty["benign"] = benign
        ty["precision"] = (None if benign else
                           ratio(ty["flagged"], ty["flagged"] + benign_flagged))
        d = ty.pop("detection_s")
        ty["detection_s"] = ({"first": min(d), "median": statistics.median(d), "max": max(d)}
                             if d else None)
        for ro in ty["roles"].values():
            ro["recall"] = ratio(ro["flagged"], ro["transactions"])
        ty["blocked"] = ty["actions"].get("block", 0)
        ty["tagged"] = ty["actions"].get("tag", 0)

    attack_flagged = sum(t["flagged"] for n, t in types.items() if n not in BENIGN_TYPES)
    attack_tx = sum(t["transactions"] for n, t in types.items() if n not in BENIGN_TYPES)
    bg_fp, bg_n, bg_rules, bg_spam_blocked = 0, 0, {}, 0
    for t, r in pairs:
        if t.get("event") is None:
            bg_n += 1
            if r is not None and flagged(r) and not false_alarm(t, r):
                bg_spam_blocked += 1
            elif false_alarm(t, r):
                bg_fp += 1
                for h in r.get("hits") or ():
                    if is_track_hit(h):
                        bg_rules[h.get("rule")] = bg_rules.get(h.get("rule"), 0) + 1
                if r.get("action") == "block":
                    bg_rules["(block)"] = bg_rules.get("(block)", 0) + 1
    storm_count = {}
    for s in storms:
        k = f"{s.get('rule')} {s.get('dir')}"
        storm_count[k] = storm_count.get(k, 0) + 1

    res = {
        "records": {"transactions": len(txs), "storm": len(storms),
                    "other": len(recs_all) - len(txs) - len(storms),
                    "not_json": bad_rec, "without_action": no_rules},
        "truth": {"transactions": len(truth), "not_json": bad_truth,
                  "events_file": ev_path},
        "join": {"matched": len(truth) - unmatched_truth,
                 "unmatched_records": unmatched_rec, "unmatched_truth": unmatched_truth},
        "spam": spam,
        "behaviour": {"attack_transactions": attack_tx, "attack_flagged": attack_flagged,
                      "recall": ratio(attack_flagged, attack_tx),
                      "precision": ratio(attack_flagged, attack_flagged + benign_flagged),
                      "false_alarms": benign_flagged},
        "background": {"transactions": bg_n, "false_alarms": bg_fp, "by_rule": bg_rules,
                       "spam_blocked": bg_spam_blocked},
        "types": types, "events": per_event, "storm_records": storm_count,
    }
    if a.json:
        json.dump(res, sys.stdout, indent=1, sort_keys=False)
        print()
        return 0
    report(res)
    return 0


def fmt(v):
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def report(res):
    rc, j = res["records"], res["join"]
    print(f"records: {rc['transactions']} transactions, {rc['storm']} storm, "
          f"{rc['not_json']} not JSON; truth: {res['truth']['transactions']} transactions; "
          f"matched {j['matched']}, unmatched records {j['unmatched_records']}, "
          f"unmatched truth {j['unmatched_truth']}")
    if rc["without_action"]:
        print(f"  ({rc['without_action']} records carry no action: run with rules)")
    print("\nspam (positive: action above pass; truth: corpus label; messages sent)")
    print(f"  {'':12} {'tp':>6} {'fp':>6} {'fn':>6} {'tn':>6} {'precision':>9} "
          f"{'recall':>7} {'F1':>6}")
    for name, s in res["spam"].items():
        print(f"  {name:12} {s['tp']:6} {s['fp']:6} {s['fn']:6} {s['tn']:6} "
              f"{fmt(s['precision']):>9} {fmt(s['recall']):>7} {fmt(s['f1']):>6}")
    b = res["behaviour"]
    print(f"\nbehaviour (flagged: a track hit or block): attacks {b['attack_flagged']}/"
          f"{b['attack_transactions']} flagged (recall {fmt(b['recall'])}, precision "
          f"{fmt(b['precision'])}); false alarms {b['false_alarms']} "
          f"(background {res['background']['false_alarms']}/"
          f"{res['background']['transactions']}"
          f"{' ' + str(res['background']['by_rule']) if res['background']['by_rule'] else ''}"
          f"; background spam blocked on content: {res['background']['spam_blocked']})")
    print(f"  {'type':16} {'ev':>3} {'det':>3} {'tx':>6} {'flagged':>7} {'recall':>7} "
          f"{'prec':>6} {'passed':>6} {'tag':>5} {'block':>5}  detection s (first/median/max)")
    for name, t in res["types"].items():
        d = t["detection_s"]
        ds = "-" if not d else f"{d['first']:.1f} / {d['median']:.1f} / {d['max']:.1f}"
        print(f"  {name:16} {t['events']:3} {t['detected']:3} {t['transactions']:6} "
              f"{t['flagged']:7} {fmt(t['recall']):>7} {fmt(t['precision']):>6} "
              f"{t['passed_before_detection']:6} {t['tagged']:5} {t['blocked']:5}  {ds}")
        roles = ", ".join(f"{k} {v['flagged']}/{v['transactions']}"
                          for k, v in t["roles"].items())
        hits = ", ".join(f"{k} {v}" for k, v in sorted(t["behaviour_hits"].items()))
        print(f"  {'':16} roles: {roles}; behaviour hits: {hits or 'none'}"
              f"{'  (benign: flagged = false positives)' if t['benign'] else ''}")
    print("\nevents:")
    for e in res["events"]:
        fs = e["first_storm"]
        print(f"  {e['id']} ({e['type']}): {e['flagged']}/{e['transactions']} flagged, "
              f"first at #{fmt(e['first_detection_seq'])} after {fmt(e['detection_s'])} s, "
              f"{e['passed_before_detection']} accepted before; first storm: "
              + (f"{fs['rule']} on {fs['key']} = {fs['value']} after {fmt(fs['after_s'])} s"
                 if fs else "none"))
    if res["storm_records"]:
        print("\nstorm records: " + ", ".join(f"{k} {v}" for k, v in
                                            sorted(res["storm_records"].items())))


if __name__ == "__main__":
    sys.exit(main())
