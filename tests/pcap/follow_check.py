#!/usr/bin/env python3
"""Compare breakwater's reassembled TCP streams with tshark's "follow tcp".

    follow_check.py BREAKWATER CAPTURE... [--ports 25,587,2525] [--keep DIR]

For each capture: run `BREAKWATER --pcap CAPTURE --flows --dump-streams DIR`,
read its flow records (JSON lines, "event":"flow") and, for every TCP stream
tshark sees (`tshark -q -z follow,tcp,raw,N` for every tcp.stream index N, all
in one tshark run), find the breakwater flow with the same 5-tuple and compare
both directions byte for byte. The client (flow src) is the side tshark calls
node 0 or node 1, whichever has the flow's src address and port.

Streams on ports breakwater does not follow (--ports, default 25, 587 and
2525) are listed as skipped. A stream tshark shows with missing segments
("[N bytes missing in capture file]") is compared with the marker removed,
which is what breakwater writes too (gap bytes are left out of the dumps).
Also checked: each record's reasm_toserver/reasm_toclient equals the size of
its dump file.

Prints one line per capture (flows compared, skipped, mismatches with the
first differing offset). Exit status: 0 all equal, 1 a mismatch or a
breakwater failure, 77 (skip) when tshark is not installed.
"""
import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

GAP_MARK = re.compile(rb"\[(\d+) bytes missing in capture file\]\x00?")


def run_breakwater(bw, pcap, dump_dir):
    cmd = [bw, "--pcap", pcap, "--flows", "--dump-streams", dump_dir, "-q"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("breakwater exited %d: %s" % (p.returncode,
                           p.stderr.decode(errors="replace").strip().splitlines()[-1:]))
    flows = []
    for line in p.stdout.decode(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        if rec.get("event") == "flow":
            flows.append(rec)
    return flows


def norm_ip(s):
    import ipaddress
    return str(ipaddress.ip_address(s.strip("[]")))


def split_node(s):
    """'198.18.0.1:25' or 'fd00::1:25' or '[fd00::1]:25' -> (ip, port)."""
    host, port = s.rsplit(":", 1)
    return norm_ip(host), int(port)


def tshark_streams(tshark, pcap):
    """Return {index: (node0, node1, bytes0, bytes1, gaps)} for every TCP stream."""
    p = subprocess.run([tshark, "-r", pcap, "-T", "fields", "-e", "tcp.stream"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300, check=True)
    idx = sorted({int(x) for x in p.stdout.split() if x.strip()})
    if not idx:
        return {}
    args = [tshark, "-r", pcap, "-q"]
    for n in idx:
        args += ["-z", "follow,tcp,raw,%d" % n]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=600,
                       check=True)
    out = {}
    cur = None
    for line in p.stdout.decode(errors="replace").splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            cur = {"n": int(line.split()[-1]), "nodes": [None, None],
                   "data": [bytearray(), bytearray()]}
            out[cur["n"]] = cur
        elif cur is None or line.startswith("="):
            continue
        elif line.startswith("Node 0: "):
            cur["nodes"][0] = split_node(line[8:].strip())
        elif line.startswith("Node 1: "):
            cur["nodes"][1] = split_node(line[8:].strip())
        elif line.startswith("Follow:"):
            continue
        elif line.strip():
            side = 1 if line.startswith("\t") else 0
            cur["data"][side] += bytes.fromhex(line.strip())
    res = {}
    for n, s in out.items():
        gaps = 0
        datas = []
        for d in s["data"]:
            gaps += len(GAP_MARK.findall(bytes(d)))
            datas.append(GAP_MARK.sub(b"", bytes(d)))
        res[n] = (s["nodes"][0], s["nodes"][1], datas[0], datas[1], gaps)
    return res


def first_diff(a, b):
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i
    return min(len(a), len(b)) if len(a) != len(b) else None


def show(b, i):
    return repr(bytes(b[max(0, i - 8):i + 24]))


def check(bw, tshark, pcap, ports, keep):
    name = os.path.relpath(pcap)
    dump = tempfile.mkdtemp(prefix="bw-follow-") if not keep else keep
    problems, compared, skipped = [], 0, []
    try:
        try:
            flows = run_breakwater(bw, pcap, dump)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            return ["%s: %s" % (name, e)], 0, []
        by_key = collections.defaultdict(list)
        for f in sorted(flows, key=lambda r: (r.get("ts_start", ""), r.get("flow_id", 0))):
            try:
                a = (norm_ip(f["src_ip"]), int(f["src_port"]))
                b = (norm_ip(f["dest_ip"]), int(f["dest_port"]))
            except (KeyError, ValueError) as e:
                problems.append("flow record without a usable 5-tuple (%s): %s" % (e, f))
                continue
            by_key[frozenset((a, b))].append(f)
            fid = f.get("flow_id")
            for d in ("toserver", "toclient"):
                path = os.path.join(dump, "%s.%s" % (fid, d))
                size = os.path.getsize(path) if os.path.exists(path) else 0
                want = f.get("reasm_" + d)
                if want is not None and want != size:
                    problems.append("flow %s %s: reasm_%s=%s but the dump has %d bytes"
                                    % (fid, d, d, want, size))
        for n, (n0, n1, d0, d1, gaps) in sorted(tshark_streams(tshark, pcap).items()):
            if n0 is None or n1 is None:
                continue
            if n0[1] not in ports and n1[1] not in ports:
                skipped.append("stream %d (%s:%d <-> %s:%d, not an SMTP port)"
                               % (n, n0[0], n0[1], n1[0], n1[1]))
                continue
            cands = by_key.get(frozenset((n0, n1)))
            if not cands:
                if not d0 and not d1:
                    skipped.append("stream %d (no payload, no flow record)" % n)
                    continue
                problems.append("stream %d %s:%d <-> %s:%d: no breakwater flow"
                                % (n, n0[0], n0[1], n1[0], n1[1]))
                continue
            f = cands.pop(0)
            fid = f.get("flow_id")
            client = (norm_ip(f["src_ip"]), int(f["src_port"]))
            want = {"toserver": d0 if n0 == client else d1,
                    "toclient": d1 if n0 == client else d0}
            compared += 1
            for d in ("toserver", "toclient"):
                path = os.path.join(dump, "%s.%s" % (fid, d))
                got = open(path, "rb").read() if os.path.exists(path) else b""
                i = first_diff(want[d], got)
                if i is not None:
                    problems.append(
                        "stream %d = flow %s %s: first difference at offset %d "
                        "(tshark %d bytes, breakwater %d bytes)\n      tshark:     %s\n"
                        "      breakwater: %s"
                        % (n, fid, d, i, len(want[d]), len(got), show(want[d], i), show(got, i)))
        for key, rest in by_key.items():
            for f in rest:
                if f.get("reasm_toserver", 0) or f.get("reasm_toclient", 0):
                    problems.append("flow %s (%s:%s -> %s:%s) has data but no tshark stream"
                                    % (f.get("flow_id"), f["src_ip"], f["src_port"],
                                       f["dest_ip"], f["dest_port"]))
    finally:
        if not keep:
            shutil.rmtree(dump, ignore_errors=True)
    return problems, compared, skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("breakwater")
    ap.add_argument("captures", nargs="+")
    ap.add_argument("--ports", default="25,587,2525")
    ap.add_argument("--keep", help="keep the dumps of a single capture in this directory")
    ap.add_argument("--tshark", default=shutil.which("tshark"))
    a = ap.parse_args()
    if not a.tshark:
        print("follow_check: tshark not found, skipping")
        return 77
    ports = {int(p) for p in a.ports.split(",")}
    failed = 0
    for pcap in a.captures:
        problems, compared, skipped = check(a.breakwater, a.tshark, pcap, ports, a.keep)
        status = "FAIL" if problems else "ok  "
        print("%s %s: %d flows compared, %d skipped" % (status, pcap, compared, len(skipped)))
        for s in skipped:
            print("     skipped %s" % s)
        for p in problems:
            print("     MISMATCH %s" % p)
        failed += bool(problems)
    print("follow_check: %d of %d captures differ" % (failed, len(a.captures)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
