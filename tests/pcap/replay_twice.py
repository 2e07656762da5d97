#!/usr/bin/env python3
"""Write a capture followed by itself again, shifted in time, as new flows.

  replay_twice.py IN.pcap OUT.pcap --shift SECONDS

The second copy is every packet of IN with SECONDS added to its timestamp
and the client port (the side that is not an SMTP port) of every TCP segment
rewritten (p -> 1024 + (p - 1024 + 20000) mod 64512), so each of its flows is
new while the client and server addresses stay the same (the storm keys do
not change). IP and TCP checksums are recomputed (pcaplib.rebuild_tcp).
Packets that are not TCP are copied as they are. Used by the property test
of scenario_check.py --twice: the second copy, replayed after every window
of the first has expired, must give the same storm events shifted by SECONDS.
"""
import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pcaplib  # noqa: E402

SMTP_PORTS = {25, 465, 587, 2525}


def new_port(p):
    return 1024 + (p - 1024 + 20000) % 64512


def shifted(hdr, p, shift):
    q = p.copy()
    q.ts_sec = p.ts_sec + shift
    v = pcaplib.tcp_view(hdr.linktype, p.data)
    if v is None:
        return q
    d = bytearray(p.data)
    t = v.tcp_off
    if v.dport in SMTP_PORTS and v.sport not in SMTP_PORTS:
        struct.pack_into("!H", d, t, new_port(v.sport))
    elif v.sport in SMTP_PORTS and v.dport not in SMTP_PORTS:
        struct.pack_into("!H", d, t + 2, new_port(v.dport))
    else:
        return q
    payload = bytes(d[v.pay_off:v.pay_off + v.pay_len])
    q.data = pcaplib.rebuild_tcp(hdr.linktype, bytes(d), v, v.seq, payload)
    if p.orig_len == len(p.data):
        q.orig_len = len(q.data)
    return q


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--shift", type=int, required=True, help="seconds added to the second copy")
    a = ap.parse_args()
    hdr, pkts = pcaplib.read_pcap(a.inp)
    if pkts and pkts[-1].ts_sec - pkts[0].ts_sec >= a.shift:
        sys.exit("replay_twice: the shift must be longer than the capture")
    pcaplib.write_pcap(a.out, hdr, pkts + [shifted(hdr, p, a.shift) for p in pkts])


if __name__ == "__main__":
    main()
