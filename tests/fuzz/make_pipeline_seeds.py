#!/usr/bin/env python3
"""Writes seeds for fuzz_pipeline from committed captures.

  make_pipeline_seeds.py OUTDIR CAPTURE...

fuzz_pipeline's input is a sequence of raw IPv4/IPv6 frames, each prefixed
by a 2-byte big-endian length and a 1-byte clock step (x 100 ms). Each
capture becomes one seed: its frames with the link header stripped, in
order, with a clock step of 0 (the whole session inside one instant, so no
timeout cuts it short). Seeds start the fuzzer inside real SMTP sessions
(messages, MIME, rules, storm keys) instead of having it find TCP first.
Standard library only; re-run it when captures are re-made.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pcap"))
import pcaplib  # noqa: E402


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for cap in sys.argv[2:]:
        hdr, pkts = pcaplib.read_pcap(cap)
        buf = bytearray()
        for p in pkts:
            lp = pcaplib.link_payload(hdr.linktype, p.data)
            if not lp or lp[1] not in (0x0800, 0x86DD):
                continue
            frame = bytes(p.data[lp[0]:])[:0xFFFF]
            buf += struct.pack("!HB", len(frame), 0) + frame
        name = os.path.basename(os.path.dirname(os.path.abspath(cap)))
        with open(os.path.join(out, f"seed-{name}"), "wb") as f:
            f.write(bytes(buf))
        print(f"{name}: {len(buf)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
