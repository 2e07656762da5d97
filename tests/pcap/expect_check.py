#!/usr/bin/env python3
"""Check breakwater's transaction records against each capture's expected.json.

    expect_check.py BREAKWATER [CASE_DIR...]

With no CASE_DIR, every folder next to this script holding an expected.json
with a "transactions" list is checked (mangled/ and mangled-wrap/ hold a
different expected.json, mangle_check.py's, with no such list: skipped).

For each case: run `BREAKWATER --pcap CASE/capture.pcap -q --flows`, number
the sessions in the order their flows start (flow record ts_start; sessions
without any transaction record are not counted) and compare, field by field,
every expected transaction {"session": S, "tx": N, field: value...} with the
record of session S, tx N. Only the fields the expected entry names are
compared (those stable across re-captures: no ports, timestamps, Message-IDs
or queue ids); "attachments" is compared as the list of {name, type} (and
size when the expected entry gives one). A record with no expected entry, or
an expected entry with no record, is a mismatch too.

Prints one line per case and every mismatch (case, session, tx, field,
expected, got). An expected.json with "match": "mail_from+rcpt_to" (a
capture whose transaction order changes from one capture to the next, as a
relay's queue decides) is matched by those two fields instead of tx.
Exit status 0 when all match, 1 otherwise.
"""
import json
import os
import subprocess
import sys


def run_engine(bw, pcap):
    p = subprocess.run([bw, "--pcap", pcap, "-q", "--flows"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("breakwater exited %d: %s" % (
            p.returncode, p.stderr.decode(errors="replace").strip().splitlines()[-1:]))
    recs = [json.loads(l) for l in p.stdout.decode("utf-8", "replace").splitlines() if l.strip()]
    flows = sorted((r for r in recs if r.get("event") == "flow"),
                   key=lambda r: (r.get("ts_start", ""), r["flow_id"]))
    order = {f["flow_id"]: i for i, f in enumerate(flows)}
    txs = [r for r in recs if r.get("event") == "smtp"]
    for r in txs:
        if r["flow_id"] not in order:      # no flow record: put it last
            order[r["flow_id"]] = len(order)
    used = sorted({order[r["flow_id"]] for r in txs})
    renum = {s: i for i, s in enumerate(used)}
    return {(renum[order[r["flow_id"]]], r["tx"]): r for r in txs}


def got_value(rec, field, want):
    v = rec.get(field)
    if field == "attachments":
        keys = ("name", "type", "size")
        out = []
        for i, a in enumerate(v or []):
            w = want[i] if isinstance(want, list) and i < len(want) else {}
            out.append({k: a.get(k) for k in keys if k in w or k in ("name", "type")})
        return out
    return v


def check_case(bw, case_dir):
    with open(os.path.join(case_dir, "expected.json"), encoding="utf-8") as f:
        exp = json.load(f)
    pcap = os.path.join(case_dir, exp.get("capture", "capture.pcap"))
    got = run_engine(bw, pcap)
    problems = []
    seen = set()
    by_addr = exp.get("match") == "mail_from+rcpt_to"
    for i, e in enumerate(exp["transactions"]):
        if by_addr:
            # The order of transactions is not stable across re-captures:
            # the first unused record of that session with the same
            # mail_from and rcpt_to.
            key = next((k for k in sorted(got) if k not in seen and k[0] == e["session"]
                        and got[k].get("mail_from") == e.get("mail_from")
                        and got[k].get("rcpt_to") == e.get("rcpt_to")), None)
            if key is None:
                problems.append("session %d, expected entry %d (mail_from %s): no record" % (
                    e["session"], i, json.dumps(e.get("mail_from"))))
                continue
        else:
            key = (e["session"], e["tx"])
        seen.add(key)
        rec = got.get(key)
        if rec is None:
            problems.append("session %d tx %d: no record" % key)
            continue
        for field, want in e.items():
            if field in ("session", "tx"):
                continue
            have = got_value(rec, field, want)
            if have != want:
                problems.append("session %d tx %d %s: expected %s, got %s" % (
                    key[0], key[1], field, json.dumps(want, ensure_ascii=False),
                    json.dumps(have, ensure_ascii=False)))
    for key in sorted(set(got) - seen):
        r = got[key]
        problems.append("session %d tx %d: unexpected record (mail_from %s, rcpt_to %s)" % (
            key[0], key[1], json.dumps(r.get("mail_from")), json.dumps(r.get("rcpt_to"))))
    return len(exp["transactions"]), problems


def main(argv):
    if len(argv) < 2:
        print("usage: expect_check.py BREAKWATER [CASE_DIR...]", file=sys.stderr)
        return 2
    bw = argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    cases = argv[2:]
    if not cases:
        for name in sorted(os.listdir(here)):
            path = os.path.join(here, name, "expected.json")
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    if "transactions" in json.load(f):
                        cases.append(os.path.join(here, name))
    if not cases:
        print("expect_check: no expected.json with transactions found")
        return 1
    failed = 0
    for case in cases:
        name = os.path.basename(os.path.normpath(case))
        try:
            n, problems = check_case(bw, case)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
            print("%-22s FAIL: %s" % (name, e))
            failed += 1
            continue
        print("%-22s %2d transactions: %s" % (name, n, "ok" if not problems else
                                               "%d mismatches" % len(problems)))
        for p in problems:
            print("    " + p)
        failed += bool(problems)
    if failed:
        print("FAIL: %d of %d cases differ" % (failed, len(cases)))
        return 1
    print("OK: %d cases" % len(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
