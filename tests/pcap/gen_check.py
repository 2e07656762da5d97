#!/usr/bin/env python3
"""Check bench/gen-smtp-pcap.py against breakwater (and tshark, when present).

    gen_check.py BREAKWATER [--gen GENERATOR] [--keep DIR]

Generates a small capture with --synth (no corpus needed: about 80 sessions
with pipelining, HELO, BDAT, rejected recipients, several transactions per
session) into a temporary folder, twice with the same seed, and checks:

- determinism: both runs wrote the same pcap and ground-truth bytes;
- validity (when tshark is installed): no frame with a bad IPv4 or TCP
  checksum, malformed, or flagged by TCP analysis (lost segment, ACK of
  unseen data, retransmission, out of order, window problems);
- breakwater's records (`BREAKWATER --pcap X -q`) against the ground truth:
  the same number of transactions, and for each (src_ip, src_port, dest_ip,
  dest_port, tx): helo, mail_from, rcpt_to, rcpt_rejected, size, accepted,
  bdat, and status "complete" exactly when the message was sent; no
  anomalies; the summary's flow and gap counters.

Prints every mismatch; exit status 0 when all agree, 1 otherwise. No timing
is checked.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GEN_DEFAULT = os.path.join(HERE, "..", "..", "bench", "gen-smtp-pcap.py")
GEN_ARGS = ["--synth", "--synth-count", "120", "--sessions", "80", "--seed", "7",
            "--concurrency", "16", "--pipeline", "0.5", "--helo", "0.15", "--bdat", "0.3",
            "--reject", "0.2", "--max-tx", "4", "--max-rcpt", "5", "--clients", "40"]
FIELDS = ("helo", "mail_from", "rcpt_to", "rcpt_rejected", "size", "accepted", "bdat")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def generate(gen, out):
    p = subprocess.run([sys.executable, gen, "-o", out] + GEN_ARGS,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("generator exited %d: %s" % (
            p.returncode, p.stderr.decode(errors="replace").strip()[-500:]))
    return out[:-5] + ".truth.jsonl"


def tshark_problems(pcap):
    tshark = shutil.which("tshark")
    if not tshark:
        return None
    filt = ("tcp.checksum.status==0 || ip.checksum.status==0 || _ws.malformed || "
            "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment || "
            "tcp.analysis.retransmission || tcp.analysis.out_of_order || "
            "tcp.analysis.window_full || tcp.analysis.zero_window || "
            "_ws.expert.severity >= warning")
    p = subprocess.run([tshark, "-n", "-r", pcap, "-o", "tcp.check_checksum:TRUE",
                        "-o", "ip.check_checksum:TRUE", "-Y", filt],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
    return [l for l in p.stdout.decode(errors="replace").splitlines() if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("breakwater")
    ap.add_argument("--gen", default=GEN_DEFAULT)
    ap.add_argument("--keep", help="write the capture and outputs here instead of a temp dir")
    a = ap.parse_args()

    tmp = a.keep or tempfile.mkdtemp(prefix="gen-check-")
    os.makedirs(tmp, exist_ok=True)
    errors = []
    try:
        pcap = os.path.join(tmp, "gen.pcap")
        truth_path = generate(a.gen, pcap)
        again = os.path.join(tmp, "gen2.pcap")
        truth2 = generate(a.gen, again)
        if sha(pcap) != sha(again) or sha(truth_path) != sha(truth2):
            errors.append("not deterministic: two runs with the same seed differ")

        bad = tshark_problems(pcap)
        if bad is None:
            print("gen_check: tshark not installed, validity not checked")
        elif bad:
            errors.append(f"tshark flags {len(bad)} frames, first: {bad[0]}")

        with open(truth_path) as f:
            truth = [json.loads(l) for l in f if l.strip()]
        p = subprocess.run([a.breakwater, "--pcap", pcap], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=300)
        err = p.stderr.decode(errors="replace")
        if p.returncode != 0:
            raise RuntimeError("breakwater exited %d: %s" % (
                p.returncode, err.strip().splitlines()[-1:]))
        recs = [json.loads(l) for l in p.stdout.decode("utf-8", "replace").splitlines()
                if l.strip()]
        recs = [r for r in recs if r.get("event") == "smtp"]

        def key(r):
            return (r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"], r["tx"])

        got = {}
        for r in recs:
            if key(r) in got:
                errors.append(f"two records for {key(r)}")
            got[key(r)] = r
        sessions = {t["session"] for t in truth}
        if len(recs) != len(truth):
            errors.append(f"{len(recs)} records, ground truth has {len(truth)} transactions")
        for t in truth:
            r = got.pop(key(t), None)
            if r is None:
                errors.append(f"no record for {key(t)} (session {t['session']})")
                continue
            for fld in FIELDS:
                if r.get(fld) != t[fld]:
                    errors.append(f"{key(t)} {fld}: expected {t[fld]!r}, got {r.get(fld)!r}")
            want = "complete" if t["data"] else "incomplete"
            if r.get("status") != want:
                errors.append(f"{key(t)} status: expected {want}, got {r.get('status')}")
            if r.get("anomalies"):
                errors.append(f"{key(t)} anomalies: {r['anomalies']}")
        for k in got:
            errors.append(f"record {k} not in the ground truth")

        m = re.search(r"flows:\s+(\d+) created .*?ended fin (\d+)", err)
        if not m or int(m.group(1)) != len(sessions) or int(m.group(2)) != len(sessions):
            errors.append(f"summary: expected {len(sessions)} flows created and ended by "
                          f"FIN: {m.group(0) if m else 'no flows line'}")
        m = re.search(r"reassembly:.*?(\d+) gaps", err)
        if not m or m.group(1) != "0":
            errors.append(f"summary: gaps: {m.group(0) if m else 'no reassembly line'}")
        m = re.search(r"anomalies:\s*(.*)", err)
        if not m or m.group(1).strip() != "none":
            errors.append(f"summary: anomalies: {m.group(1) if m else '?'}")

        print(f"gen_check: {len(sessions)} sessions, {len(truth)} transactions in the "
              f"ground truth, {len(recs)} records; {len(errors)} problems")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for e in errors[:50]:
        print("  " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
