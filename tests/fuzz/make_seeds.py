#!/usr/bin/env python3
"""Writes seed inputs for the fuzz harnesses from committed captures.

  make_seeds.py pipeline|smtp|message OUTDIR CAPTURE...

Seeds start a fuzzer inside real SMTP traffic (made by real MTAs, see
tests/pcap/*/README.md) instead of having it find TCP and SMTP first. One
seed per capture (smtp, pipeline) or per message (message):
- pipeline: fuzz_pipeline's input, raw IPv4/IPv6 frames (link header
  stripped) each prefixed by a 2-byte big-endian length and a 1-byte clock
  step of 0;
- smtp: fuzz_smtp's script, config byte 0, then the payloads of the first
  port-25/587/2525 TCP connection in capture order with FF 00 (client) /
  FF 01 (server) direction directives and FF 03 split points between
  segments (0xFF data bytes doubled);
- message: fuzz_message's input, config byte 0, then each message the
  client sent after DATA (up to the CRLF.CRLF), as on the wire.
Retransmissions are not removed: they are input too. Standard library only;
re-run it when the captures are re-made.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pcap"))
import pcaplib  # noqa: E402

SMTP_PORTS = (25, 587, 2525)


def pipeline_seed(hdr, pkts):
    buf = bytearray()
    for p in pkts:
        lp = pcaplib.link_payload(hdr.linktype, p.data)
        if not lp or lp[1] not in (0x0800, 0x86DD):
            continue
        frame = bytes(p.data[lp[0]:])[:0xFFFF]
        buf += struct.pack("!HB", len(frame), 0) + frame
    return [bytes(buf)]


def segments(hdr, pkts):
    """(toserver, payload) of the first SMTP connection, in capture order."""
    conn = None
    for p in pkts:
        v = pcaplib.tcp_view(hdr.linktype, p.data)
        if not v or not v.pay_len:
            continue
        if v.dport in SMTP_PORTS:
            key, toserver = (v.src, v.sport, v.dst, v.dport), True
        elif v.sport in SMTP_PORTS:
            key, toserver = (v.dst, v.dport, v.src, v.sport), False
        else:
            continue
        if conn is None:
            conn = key
        if key == conn:
            yield toserver, bytes(p.data[v.pay_off:v.pay_off + v.pay_len])


def smtp_seed(hdr, pkts):
    buf, cur = bytearray(b"\x00"), None
    for toserver, pay in segments(hdr, pkts):
        d = 0 if toserver else 1
        buf += b"\xff\x03" if d == cur else bytes([0xFF, d])
        cur = d
        buf += pay.replace(b"\xff", b"\xff\xff")
    return [bytes(buf)] if len(buf) > 1 else []


def message_seeds(hdr, pkts):
    client = b"".join(pay for toserver, pay in segments(hdr, pkts) if toserver)
    out, pos = [], 0
    while True:
        i = client.find(b"DATA\r\n", pos)
        if i < 0:
            break
        start = i + 6
        end = client.find(b"\r\n.\r\n", start)
        if end < 0:
            break
        out.append(b"\x00" + client[start:end + 2])
        pos = end + 5
    return out


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("pipeline", "smtp", "message"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, out = sys.argv[1], sys.argv[2]
    make = {"pipeline": pipeline_seed, "smtp": smtp_seed, "message": message_seeds}[kind]
    os.makedirs(out, exist_ok=True)
    for cap in sys.argv[3:]:
        hdr, pkts = pcaplib.read_pcap(cap)
        name = os.path.basename(os.path.dirname(os.path.abspath(cap)))
        for i, seed in enumerate(make(hdr, pkts)):
            fn = f"seed-{name}" + (f"-{i}" if kind == "message" else "")
            with open(os.path.join(out, fn), "wb") as f:
                f.write(seed)
            print(f"{kind} {fn}: {len(seed)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
