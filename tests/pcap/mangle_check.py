#!/usr/bin/env python3
"""Check breakwater against the expected output of a mangled capture.

    mangle_check.py BREAKWATER CASE_DIR...

CASE_DIR holds original.pcap, capture.pcap (made from it by mangle.py) and
expected.json (written by mangle.py at the same time). The check:
  1. re-runs mangle.py with the recorded seed on original.pcap and requires
     the result to equal capture.pcap byte for byte (so expected.json cannot
     go stale against the capture or the script);
  2. runs `BREAKWATER --pcap capture.pcap --flows --dump-streams DIR`;
  3. for every expected flow (matched on the 5-tuple) compares pkts_*,
     reasm_*, gaps_*, gap_bytes_* per direction and the sha256 of each dumped
     stream; on a content mismatch it names the first differing offset
     against the expected stream that mangle.py rebuilds.
Exit status 0 when everything matches, 1 otherwise.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS = ["pkts", "reasm", "gaps", "gap_bytes"]


def check(bw, case):
    exp = json.load(open(os.path.join(case, "expected.json")))
    cap = os.path.join(case, exp["capture"])
    orig = os.path.join(case, exp["original"])
    tmp = tempfile.mkdtemp(prefix="bw-mangle-")
    problems = []
    try:
        os.mkdir(os.path.join(tmp, "expected"))
        redo = os.path.join(tmp, "redo.pcap")
        subprocess.run([sys.executable, os.path.join(HERE, "mangle.py"), "--seed", str(exp["seed"]),
                        orig, redo, "--describe", os.path.join(tmp, "d.txt"),
                        "--streams", os.path.join(tmp, "expected")], check=True, timeout=300)
        if open(redo, "rb").read() != open(cap, "rb").read():
            problems.append("%s is not what `mangle.py --seed %s %s` makes: re-run "
                            "scripts/make-captures.sh mangled" % (cap, exp["seed"], orig))
            return problems
        dump = os.path.join(tmp, "dump")
        os.mkdir(dump)
        p = subprocess.run([bw, "--pcap", cap, "--flows", "--dump-streams", dump, "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        if p.returncode != 0:
            problems.append("breakwater exited %d: %s" % (p.returncode,
                            p.stderr.decode(errors="replace").strip()))
            return problems
        flows = [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]
        flows = [f for f in flows if f.get("event") == "flow"]
        for i, want in enumerate(exp["flows"]):
            key = (want["src_ip"], want["src_port"], want["dest_ip"], want["dest_port"])
            got = [f for f in flows
                   if (f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"]) == key]
            if len(got) != 1:
                problems.append("flow %s:%d -> %s:%d: %d breakwater records, expected 1" % (key + (len(got),)))
                continue
            f = got[0]
            for d in ("toserver", "toclient"):
                for field in FIELDS:
                    k = "%s_%s" % (field, d)
                    if f.get(k) != want[k]:
                        problems.append("flow %s %s: expected %s, got %s" % (f["flow_id"], k, want[k], f.get(k)))
                path = os.path.join(dump, "%s.%s" % (f["flow_id"], d))
                data = open(path, "rb").read() if os.path.exists(path) else b""
                if hashlib.sha256(data).hexdigest() != want["sha256_" + d]:
                    ref = open(os.path.join(tmp, "expected", "%d.%s" % (i, d)), "rb").read()
                    off = next((j for j in range(min(len(ref), len(data))) if ref[j] != data[j]),
                               min(len(ref), len(data)))
                    problems.append("flow %s %s stream: expected %d bytes (sha256 %s), got %d; "
                                    "first difference at offset %d: expected %r, got %r"
                                    % (f["flow_id"], d, len(ref), want["sha256_" + d][:16], len(data),
                                       off, ref[off:off + 16], data[off:off + 16]))
        return problems
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bw = sys.argv[1]
    failed = 0
    for case in sys.argv[2:]:
        problems = check(bw, case)
        print("%s %s" % ("FAIL" if problems else "ok  ", case))
        for p in problems:
            print("     MISMATCH " + p)
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
