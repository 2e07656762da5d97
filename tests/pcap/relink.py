#!/usr/bin/env python3
"""Rewrite the link layer of an Ethernet capture.

    relink.py null|vlan|qinq IN.pcap OUT.pcap

null  BSD loopback (DLT_NULL, linktype 0): the 14-byte Ethernet header is
      replaced by a 4-byte address family in the writer's (little-endian,
      host) byte order: 2 for IPv4, 24 (NetBSD/OpenBSD AF_INET6) for IPv6.
      Frames that are neither IPv4 nor IPv6 (ARP) cannot be carried and are
      left out.
vlan  802.1Q: a tag (TPID 0x8100, PCP 0, VID 100) after the MAC addresses.
qinq  802.1ad: an outer tag (TPID 0x88a8, VID 200) and an inner 802.1Q tag
      (VID 100).
Everything else (timestamps, IP packets) is kept byte for byte, so the TCP
streams of OUT equal those of IN.
"""
import struct
import sys

import pcaplib


def main():
    kind, src, dst = sys.argv[1:4]
    hdr, pkts = pcaplib.read_pcap(src)
    if hdr.linktype != pcaplib.LINKTYPE_ETHERNET:
        sys.exit("relink: %s is not an Ethernet capture" % src)
    out = []
    for p in pkts:
        d = p.data
        et = struct.unpack("!H", d[12:14])[0]
        q = p.copy()
        if kind == "null":
            if et == 0x0800:
                fam = 2
            elif et == 0x86DD:
                fam = 24
            else:
                continue
            q.data = struct.pack("<I", fam) + d[14:]
            q.orig_len = p.orig_len - 10
        elif kind == "vlan":
            q.data = d[:12] + struct.pack("!HH", 0x8100, 100) + d[12:]
            q.orig_len = p.orig_len + 4
        elif kind == "qinq":
            q.data = d[:12] + struct.pack("!HHHH", 0x88A8, 200, 0x8100, 100) + d[12:]
            q.orig_len = p.orig_len + 8
        else:
            sys.exit("relink: unknown kind %s (null, vlan, qinq)" % kind)
        out.append(q)
    lt = pcaplib.LINKTYPE_NULL if kind == "null" else pcaplib.LINKTYPE_ETHERNET
    pcaplib.write_pcap(dst, hdr.with_linktype(lt), out)
    print("relink: %s: %d of %d frames written as %s" % (dst, len(out), len(pkts), kind),
          file=sys.stderr)


if __name__ == "__main__":
    main()
