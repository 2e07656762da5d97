#!/usr/bin/env python3
"""Check breakwater --replay (passes from memory) and --stage-times.

    replay_check.py BREAKWATER CAPTURE [--passes N] [--keep DIR]

Runs BREAKWATER --pcap CAPTURE --flows as a user would (through net_pcap),
then with --replay N --stage-times, and checks:

- the replay's records are N copies of the plain run's: pass k's record of a
  transaction (or flow) has every address moved by k times the summary's
  replay.addr_stride (IPv4: the whole address; IPv6: its first 32 bits), its
  timestamps moved by k times replay.ts_shift_ns, a flow_id of its own, and
  every other field equal (helo, mail_from, rcpt_to, subject, score, hits,
  anomalies, sizes, packet counts, ...);
- the summary (--summary-json): N times the packets, flows, sessions,
  transactions, messages, verdicts and records of one run, and the same
  anomaly counters N times over (no new kind);
- checksum counters survive the rewriting: on a copy of CAPTURE with a few
  TCP and IPv4 checksums spoiled, the replay counts N times the plain run's
  bad checksums (right ones stay right, wrong ones wrong);
- --replay 1 writes exactly the plain run's records;
- --stage-times prints the summary's stages line and fills "stages" in the
  JSON (every stage, shares adding up to 1); without it there is neither;
- --replay without --pcap, or with 0, is a usage error (exit 2); a capture
  over --replay-mem is refused (exit 1) with the reason.

No timing is checked. Exit 0 when all holds, 1 otherwise (every mismatch
printed).
"""
import argparse
import calendar
import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pcaplib  # noqa: E402

STAGES = ("decode", "flow", "reassembly", "smtp", "message", "match", "storm", "output", "other")
TS_FIELDS = ("ts", "ts_start", "ts_end", "first_seen", "last_seen")
ADDR_FIELDS = ("src_ip", "dest_ip")


def run(bw, args, timeout=120):
    p = subprocess.run([bw] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def records(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def ts_us(s):
    t = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    frac = s[20:-1] if len(s) > 20 else "0"
    return calendar.timegm(t) * 1000000 + int(frac.ljust(6, "0")[:6])


def moved(addr, k, stride):
    if addr is None:
        return None
    a = ipaddress.ip_address(addr)
    if a.version == 4:
        return ipaddress.ip_address((int(a) + k * stride) & 0xffffffff)
    first = (int(a) >> 96) & 0xffffffff
    rest = int(a) & ((1 << 96) - 1)
    return ipaddress.ip_address((((first + k * stride) & 0xffffffff) << 96) | rest)


def key(r, k=0, stride=0):
    """A record's identity across passes (storm records have none: theirs is
    their rule, key and time, which a replay does not move alike)."""
    if r.get("event") == "storm":
        return ("storm", r.get("rule"), r.get("key"), r.get("dir"), r.get("ts"))
    return (r.get("event"), moved(r.get("src_ip"), k, stride), r.get("src_port"),
            moved(r.get("dest_ip"), k, stride), r.get("dest_port"), r.get("tx"))


def spoil_checksums(src, dst):
    """A copy of src with the TCP checksum of three TCP frames and the IPv4
    header checksum of one spoiled. Returns how many of each."""
    hdr, pkts = pcaplib.read_pcap(src)
    tcp_bad = ip_bad = 0
    tcp_seen = 0
    for p in pkts:
        v = pcaplib.tcp_view(hdr.linktype, p.data)
        if v is None:
            continue
        tcp_seen += 1
        d = bytearray(p.data)
        if tcp_seen in (3, 6, 9):
            c = struct.unpack_from("!H", d, v.tcp_off + 16)[0]
            struct.pack_into("!H", d, v.tcp_off + 16, c ^ 0x1234)
            tcp_bad += 1
        elif tcp_seen == 12 and not v.ipv6:
            c = struct.unpack_from("!H", d, v.ip_off + 10)[0]
            struct.pack_into("!H", d, v.ip_off + 10, c ^ 0x0f0f)
            ip_bad += 1
        p.data = bytes(d)
    pcaplib.write_pcap(dst, hdr, pkts)
    return tcp_bad, ip_bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("breakwater")
    ap.add_argument("capture")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--keep", help="write outputs here instead of a temp dir")
    a = ap.parse_args()
    n = a.passes
    bw = a.breakwater
    tmp = a.keep or tempfile.mkdtemp(prefix="replay-check-")
    os.makedirs(tmp, exist_ok=True)
    errors = []

    def err(msg):
        errors.append(msg)
        if len(errors) <= 60:
            print("FAIL: " + msg)

    try:
        j = lambda name: os.path.join(tmp, name)  # noqa: E731
        rc, _, e_plain = run(bw, ["--pcap", a.capture, "--flows", "-o", j("plain.jsonl"),
                                  "--summary-json", j("plain.json")])
        if rc != 0:
            err("plain run exited %d: %s" % (rc, e_plain.strip()[-400:]))
            return 1
        rc, _, e_rep = run(bw, ["--pcap", a.capture, "--flows", "--replay", str(n),
                                "--stage-times", "-o", j("replay.jsonl"),
                                "--summary-json", j("replay.json")])
        if rc != 0:
            err("--replay %d exited %d: %s" % (n, rc, e_rep.strip()[-400:]))
            return 1
        plain, rep = records(j("plain.jsonl")), records(j("replay.jsonl"))
        with open(j("plain.json")) as f:
            sp = json.load(f)
        with open(j("replay.json")) as f:
            sr = json.load(f)

        # -- the records, pass by pass
        if not any(r.get("event") == "smtp" for r in plain):
            err("the plain run wrote no transaction record: nothing to compare")
        if len(rep) != n * len(plain):
            err("%d records with --replay %d, expected %d x %d" % (len(rep), n, n, len(plain)))
        rp = sr.get("replay") or {}
        stride, shift_ns = rp.get("addr_stride"), rp.get("ts_shift_ns")
        if not stride or not shift_ns:
            err("summary-json has no replay.addr_stride / ts_shift_ns: %r" % rp)
            return 1
        if shift_ns % 1000:
            err("ts_shift_ns %d is not whole microseconds" % shift_ns)
        by_key = {}
        for r in rep:
            by_key.setdefault(key(r), []).append(r)
        flow_ids = [set() for _ in range(n)]
        for k in range(n):
            for p in plain:
                got = by_key.get(key(p, k, stride), [])
                if len(got) != 1:
                    err("pass %d: %d records for %r" % (k, len(got), key(p, k, stride)))
                    continue
                r = got[0]
                flow_ids[k].add(r.get("flow_id"))
                for f in sorted(set(p) | set(r)):
                    if f in ADDR_FIELDS or f == "flow_id":
                        continue
                    if f in TS_FIELDS and p.get(f) is not None:
                        if r.get(f) is None or \
                           ts_us(r[f]) != ts_us(p[f]) + k * shift_ns // 1000:
                            err("pass %d %r: %s %s, expected %s + %d x %d ns" % (
                                k, key(p), f, r.get(f), p[f], k, shift_ns))
                    elif p.get(f) != r.get(f):
                        err("pass %d %r: %s differs: %r vs %r" % (
                            k, key(p), f, r.get(f), p.get(f)))
        for k in range(1, n):
            if flow_ids[k] & flow_ids[0]:
                err("pass %d reuses flow ids of pass 0" % k)

        # -- the summary: N times one run
        def scaled(path):
            pv, rv = sp, sr
            for part in path.split("."):
                pv = (pv or {}).get(part)
                rv = (rv or {}).get(part)
            if pv is None or rv != n * pv:
                err("summary %s: %r with --replay %d, one run %r" % (path, rv, n, pv))
        for path in ("packets", "bytes", "tcp_packets", "flow_packets", "records",
                     "flows.created", "flows.fin", "flows.rst", "flows.timeout",
                     "flows.evicted", "flows.eof", "reassembly.delivered_bytes",
                     "reassembly.gaps", "reassembly.gap_bytes",
                     "reassembly.retransmitted_segments", "reassembly.overlap_bytes",
                     "smtp.sessions", "smtp.transactions", "smtp.complete", "smtp.accepted",
                     "smtp.messages", "smtp.message_bytes"):
            scaled(path)
        if sp.get("verdicts"):
            for path in ("messages", "pass", "tag", "block", "behaviour_hits",
                         "storm_events_up", "storm_events_down"):
                scaled("verdicts." + path)
        pa, ra = sp.get("anomalies", {}), sr.get("anomalies", {})
        if set(pa) != set(ra):
            err("anomaly kinds differ: %s with --replay, %s in one run" % (sorted(ra), sorted(pa)))
        for name, v in pa.items():
            if ra.get(name) != n * v:
                err("anomaly %s: %r with --replay %d, one run %d" % (name, ra.get(name), n, v))
        if sr.get("passes") != n or not sr.get("from_memory"):
            err("summary-json passes %r from_memory %r" % (sr.get("passes"), sr.get("from_memory")))
        if sp.get("passes") != 1 or sp.get("from_memory") or sp.get("replay") is not None:
            err("the plain run's summary-json says it replayed: %r" % sp.get("replay"))
        if len(rp.get("pass_s", [])) != n:
            err("replay.pass_s has %d entries, expected %d" % (len(rp.get("pass_s", [])), n))
        if "replay:" not in e_rep or "%d passes from memory" % n not in e_rep:
            err("the summary has no replay line:\n" + e_rep)
        if "replay:" in e_plain:
            err("the plain run's summary has a replay line")

        # -- stage times
        stage_lines = [l for l in e_rep.splitlines() if l.strip().startswith("stages:")]
        if len(stage_lines) != 1:
            err("--stage-times: %d stages lines in the summary:\n%s" % (len(stage_lines), e_rep))
        else:
            for s in STAGES:
                if " %s " % s not in stage_lines[0]:
                    err("stages line lacks %s: %s" % (s, stage_lines[0]))
        st = sr.get("stages")
        if not st:
            err("summary-json has no stages with --stage-times")
        else:
            missing = [s for s in STAGES if s not in st]
            if missing:
                err("summary-json stages lack %s" % missing)
            else:
                total = sum(st[s]["share"] for s in STAGES)
                if abs(total - 1.0) > 1e-3:
                    err("stage shares add up to %g" % total)
                for s in STAGES:
                    if st[s]["s"] < 0 or st[s]["ns_per_packet"] < 0:
                        err("stage %s negative: %r" % (s, st[s]))
        if sp.get("stages") is not None or any(l.strip().startswith("stages:")
                                               for l in e_plain.splitlines()):
            err("stage figures without --stage-times")

        # -- checksum counters through the rewriting
        bad = j("bad-checksums.pcap")
        tcp_bad, ip_bad = spoil_checksums(a.capture, bad)
        rc1, _, e1 = run(bw, ["--pcap", bad, "-q", "-o", os.devnull,
                              "--summary-json", j("bad-plain.json")])
        rc2, _, e2 = run(bw, ["--pcap", bad, "-q", "-o", os.devnull, "--replay", str(n),
                              "--summary-json", j("bad-replay.json")])
        if rc1 or rc2:
            err("runs on the spoiled capture exited %d, %d: %s %s" % (rc1, rc2, e1, e2))
        else:
            with open(j("bad-plain.json")) as f:
                bp = json.load(f)["anomalies"]
            with open(j("bad-replay.json")) as f:
                br = json.load(f)["anomalies"]
            if bp.get("tcp_bad_checksum", 0) != tcp_bad or \
               bp.get("ipv4_bad_checksum", 0) != ip_bad:
                err("spoiled capture, one run: %r, expected tcp %d ipv4 %d" % (bp, tcp_bad, ip_bad))
            for name in ("tcp_bad_checksum", "ipv4_bad_checksum"):
                if br.get(name, 0) != n * bp.get(name, 0):
                    err("spoiled capture: %s %r with --replay %d, one run %r" % (
                        name, br.get(name), n, bp.get(name)))
            if set(bp) != set(br):
                err("spoiled capture: anomaly kinds %s vs %s" % (sorted(br), sorted(bp)))

        # -- --replay 1 is the plain run
        rc, _, e = run(bw, ["--pcap", a.capture, "--flows", "--replay", "1", "-q",
                            "-o", j("replay1.jsonl")])
        if rc != 0:
            err("--replay 1 exited %d: %s" % (rc, e.strip()[-400:]))
        elif records(j("replay1.jsonl")) != plain:
            err("--replay 1 records differ from the plain run's")

        # -- usage and refusal
        rc, _, e = run(bw, ["--iface", "lo", "--replay", "2"])
        if rc != 2:
            err("--replay with --iface: exit %d, expected 2 (%s)" % (rc, e.strip()))
        rc, _, e = run(bw, ["--pcap", a.capture, "--replay", "0"])
        if rc != 2:
            err("--replay 0: exit %d, expected 2 (%s)" % (rc, e.strip()))
        rc, out, e = run(bw, ["--pcap", a.capture, "--replay", "2", "--replay-mem", "1K"])
        if rc != 1 or "--replay-mem" not in e or out:
            err("--replay-mem 1K: exit %d, stderr %r, expected 1 and the reason" % (rc, e.strip()))
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%s: %d passes, %d records per pass, %d problems" % (
        os.path.basename(os.path.dirname(os.path.abspath(a.capture))), n,
        len(plain) if "plain" in dir() else 0, len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
