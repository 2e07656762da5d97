#!/usr/bin/env python3
"""Rewrite a real capture's TCP sequence space.

    reseq.py wrap IN.pcap OUT.pcap
        Shift every flow's sequence and acknowledgement numbers, per direction,
        so that each direction's stream crosses 2^32 (wraps to 0) 1000 bytes
        into its data, or in the middle when it carries fewer. Payloads are
        untouched, so tshark's streams and breakwater's must be the same.
    reseq.py midstream IN.pcap OUT.pcap
        Leave out the first third of the packets, so that the flows start
        without a handshake, some in the middle of a message: breakwater
        has to pick them up mid-stream.
Checksums are recomputed for rewritten segments. SACK blocks in TCP options
are not rewritten (the input must have none: captures on a lossless veth).
"""
import sys

import pcaplib

SYN, ACKF = 0x02, 0x10
MOD = 1 << 32


def main():
    kind, src, dst = sys.argv[1:4]
    hdr, pkts = pcaplib.read_pcap(src)
    lt = hdr.linktype
    views = [pcaplib.tcp_view(lt, p.data) for p in pkts]
    isn, total = {}, {}
    for v in views:
        if v is None:
            continue
        k = v.key()
        if v.flags & SYN:
            isn[k] = v.seq
        if v.pay_len and k in isn:
            end = (v.seq - isn[k] - 1 + v.pay_len) % MOD
            total[k] = max(total.get(k, 0), end)
    out = []
    if kind == "wrap":
        shift = {}
        for k, s in isn.items():
            at = 1000 if total.get(k, 0) > 2000 else total.get(k, 0) // 2
            # new ISN such that new_isn + 1 + at == 2^32
            shift[k] = (MOD - 1 - at - s) % MOD
        for p, v in zip(pkts, views):
            q = p.copy()
            if v is not None and v.key() in shift:
                rk = (v.dst, v.dport, v.src, v.sport)
                seq = (v.seq + shift[v.key()]) % MOD
                ack = (v.ack + shift[rk]) % MOD if (v.flags & ACKF and rk in shift) else None
                q.data = pcaplib.rebuild_tcp(lt, p.data, v, seq,
                                             bytes(p.data[v.pay_off:v.pay_off + v.pay_len]), ack=ack)
                q.orig_len = p.orig_len - len(p.data) + len(q.data)
            out.append(q)
    elif kind == "midstream":
        out = [p.copy() for p in pkts[len(pkts) // 3:]]
    else:
        sys.exit("reseq: unknown kind %s (wrap, midstream)" % kind)
    pcaplib.write_pcap(dst, hdr, out)


if __name__ == "__main__":
    main()
