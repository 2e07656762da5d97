#!/usr/bin/env python3
"""Reorder, duplicate and drop TCP segments of a capture, with a fixed seed,
and write what a reassembler must make of the result.

    mangle.py [--seed N] IN.pcap OUT.pcap [--describe OUT.txt] [--expect OUT.json]

Operations, on segments that carry data (SYN, FIN and RST segments and the
first and last data segment of each direction are never touched):
  drop     a segment is left out; no two dropped segments are neighbours in
           the stream, so each drop is one gap of exactly its length.
  reorder  a segment is moved later, past up to 3 packets, but never past a
           packet of its peer that acknowledges any of its bytes (the peer
           cannot have acked what it had not received; an engine may declare
           a gap when the peer acks past a hole) and never past a FIN or RST.
  dup      an exact copy is inserted a few packets after the segment.
  overlap  a retransmission spanning the end of one segment and the start of
           the next is inserted right after the first. Bytes of it that an
           earlier packet (in the new order) already carried are replaced by
           '~': under the engine's "first wins" policy they must lose. Bytes
           nobody carried yet are the true ones. Some overlaps are placed
           where the later segment is already queued out of order, so that
           "first wins" is checked against buffered data too. Overlaps never
           touch dropped bytes.
Timestamps stay non-decreasing (a moved packet takes its predecessor's time
when its own is earlier).

The expectation (--expect), per flow and direction: packets (up to the one
that ends the flow: its first RST or its second FIN), reassembled
bytes, gaps and gap bytes, and the sha256 of the reassembled stream, i.e.
the original stream without the dropped bytes. A dropped segment becomes a
gap once the peer acks past it or the flow ends; both always happen here.
"""
import argparse
import hashlib
import json
import random
import sys

import pcaplib

FIN, SYN, RST = 0x01, 0x02, 0x04
MOD = 1 << 32


class Seg:
    """One packet of the capture, with its place in a TCP stream."""

    def __init__(self, pkt, view, flow, direction):
        self.pkt, self.v, self.flow, self.dir = pkt, view, flow, direction
        self.rel = None         # offset of the first payload byte in its stream
        self.len = view.pay_len if view else 0
        self.payload = b""
        self.tag = "orig"

    @property
    def end(self):
        return self.rel + self.len


class Flow:
    def __init__(self, client, server):
        self.client, self.server = client, server   # (ip bytes, port)
        self.isn = [None, None]                     # per direction: seq of the SYN
        self.true = [bytearray(), bytearray()]      # original stream contents
        self.have = [bytearray(), bytearray()]      # 1 where the original carried the byte


def load(path):
    hdr, pkts = pcaplib.read_pcap(path)
    flows, segs = {}, []
    for p in pkts:
        v = pcaplib.tcp_view(hdr.linktype, p.data)
        if v is None:
            segs.append(Seg(p, None, None, None))
            continue
        a, b = (v.src, v.sport), (v.dst, v.dport)
        key = frozenset((a, b))
        if key not in flows:
            # The client sent the SYN; without one, the non-SMTP-port side.
            if (v.flags & SYN and not v.flags & 0x10) or v.dport in (25, 587, 2525, 465):
                flows[key] = Flow(a, b)
            else:
                flows[key] = Flow(b, a)
        f = flows[key]
        d = 0 if a == f.client else 1
        s = Seg(p, v, f, d)
        s.payload = bytes(p.data[v.pay_off:v.pay_off + v.pay_len])
        if v.flags & SYN:
            f.isn[d] = v.seq
        segs.append(s)
    for s in segs:
        if s.flow is None:
            continue
        f = s.flow
        if f.isn[s.dir] is None:
            sys.exit("mangle: flow without a SYN in one direction; use a complete capture")
        s.rel = (s.v.seq - f.isn[s.dir] - 1) % MOD
        if s.v.flags & SYN:
            s.rel = 0
        if s.len:
            t, h = f.true[s.dir], f.have[s.dir]
            if len(t) < s.end:
                t.extend(b"\0" * (s.end - len(t)))
                h.extend(b"\0" * (s.end - len(h)))
            for i, byte in enumerate(s.payload):
                o = s.rel + i
                if h[o] and t[o] != byte:
                    sys.exit("mangle: the original capture has conflicting overlaps")
                t[o], h[o] = byte, 1
    for f in flows.values():
        for d in (0, 1):
            if 0 in f.have[d]:
                sys.exit("mangle: the original capture already misses bytes")
    return hdr, segs, flows


def peer_ack_rel(s, other):
    """How far packet `other` (from s's peer) acknowledges s's direction."""
    if other.v is None or not other.v.flags & 0x10:
        return -1
    return (other.v.ack - s.flow.isn[s.dir] - 1) % MOD


def can_pass(s, other):
    """May data segment s be moved after packet `other`?"""
    if other.flow is not s.flow:
        return True
    if other.v.flags & (FIN | RST | SYN):
        return False
    if other.dir != s.dir:
        ack = peer_ack_rel(s, other)
        if ack > s.rel:
            return False
    return True


def mangle(segs, flows, rng, log):
    data = [s for s in segs if s.flow is not None and s.len > 0 and not s.v.flags & (FIN | SYN | RST)]
    by_dir = {}
    for s in data:
        by_dir.setdefault((id(s.flow), s.dir), []).append(s)
    for lst in by_dir.values():
        lst.sort(key=lambda s: s.rel)
    inner = {k: lst[1:-1] for k, lst in by_dir.items()}

    # drop: 2 per direction where there are enough segments, never neighbours
    dropped = set()
    for k in sorted(inner, key=lambda k: (k[1], min(s.pkt.index for s in by_dir[k]))):
        cand = [s for s in inner[k]]
        rng.shuffle(cand)
        want = 2 if len(cand) >= 6 else (1 if len(cand) >= 2 else 0)
        lst = by_dir[k]
        for s in cand:
            if want == 0:
                break
            i = lst.index(s)
            if lst[i - 1] in dropped or lst[i + 1] in dropped:
                continue
            dropped.add(s)
            want -= 1
            log.append("drop     pkt %d: %s rel %d..%d (%d bytes)"
                       % (s.pkt.index + 1, dname(s), s.rel, s.end, s.len))
    order = [s for s in segs if s not in dropped]

    # reorder: move a few data segments later
    inner_segs = inner_set(inner)
    movable = [s for s in data if s not in dropped and s in inner_segs]
    rng.shuffle(movable)
    moved = []
    for s in movable:
        if len(moved) == 4:
            break
        i = order.index(s)
        steps = 0
        for j in range(i + 1, min(len(order), i + 1 + rng.randint(1, 3))):
            if not can_pass(s, order[j]):
                break
            steps += 1
        if steps == 0:
            continue
        # moving past only unrelated packets reorders nothing: require one of its own flow
        if not any(order[j].flow is s.flow for j in range(i + 1, i + 1 + steps)):
            continue
        order.pop(i)
        order.insert(i + steps, s)
        moved.append(s)
        log.append("reorder  pkt %d: %s rel %d..%d moved %d packets later"
                   % (s.pkt.index + 1, dname(s), s.rel, s.end, steps))

    # overlap: a retransmission over the end of one segment and the start of
    # the next, placed right after the first. Prefer pairs whose second
    # segment is already queued out of order at that point.
    placed = 0
    pairs = []
    for k, lst in by_dir.items():
        for a, b in zip(lst, lst[1:]):
            if a in dropped or b in dropped or a.end != b.rel:
                continue
            pairs.append((a, b))
    rng.shuffle(pairs)
    pairs.sort(key=lambda ab: 0 if order.index(ab[1]) < order.index(ab[0]) else 1)

    for a, b in pairs:
        if placed == 3:
            break
        ia, ib = order.index(a), order.index(b)
        # b queued out of order before a: go between them, so the overlap
        # brings a's tail new and meets b's head in the out-of-order queue
        pos = ib + 1 if ib < ia else ia + 1
        k = rng.randint(1, min(a.len, 300))
        m = rng.randint(1, min(b.len, 300))
        start, end = a.end - k, b.rel + m
        seg = make_segment(a, start, end, order[:pos], "overlap")
        if seg is None:
            continue
        order.insert(pos, seg)
        placed += 1
        log.append("overlap  after pkt %d: %s rel %d..%d, %d bytes already carried sent as '~'%s"
                   % (order[pos - 1].pkt.index + 1, dname(a), start, end, seg.poisoned,
                      " (over data queued out of order)" if ib < ia else ""))

    # dup: exact copies a few packets later
    cand = [s for s in order if s.flow is not None and s.len > 0 and s.tag == "orig"
            and not s.v.flags & (FIN | SYN | RST)]
    rng.shuffle(cand)
    for s in cand[:4]:
        i = order.index(s)
        j = min(len(order), i + 1 + rng.randint(0, 3))
        c = Seg(s.pkt.copy(), s.v, s.flow, s.dir)
        c.rel, c.len, c.payload, c.tag = s.rel, s.len, s.payload, "dup"
        order.insert(j, c)
        log.append("dup      pkt %d: %s rel %d..%d, copy %d packets later"
                   % (s.pkt.index + 1, dname(s), s.rel, s.end, j - i - 1))
    return order, dropped


def inner_set(inner):
    return {s for lst in inner.values() for s in lst}


def dname(s):
    return "toserver" if s.dir == 0 else "toclient"


def make_segment(model, start, end, before, tag):
    """A new segment of model's direction carrying stream bytes start..end;
    bytes that a packet in `before` already carried become b'~'. None when a
    byte nobody carried yet lies at or below what the peer already acked."""
    f, d = model.flow, model.dir
    true = f.true[d]
    if end > len(true):
        return None
    carried = bytearray(end - start)
    acked = -1
    for o in before:
        if o.flow is not f:
            continue
        if o.dir == d and o.len:
            lo, hi = max(start, o.rel), min(end, o.end)
            for x in range(lo, hi):
                carried[x - start] = 1
        elif o.dir != d:
            acked = max(acked, peer_ack_rel(model, o))
    first_new = next((i for i, c in enumerate(carried) if not c), None)
    if first_new is not None and start + first_new < acked:
        return None
    payload = bytes(b"~"[0] if carried[i] else true[start + i] for i in range(end - start))
    seq = (f.isn[d] + 1 + start) % MOD
    p = model.pkt.copy()
    p.data = pcaplib.rebuild_tcp(LINKTYPE, model.pkt.data, model.v, seq, payload,
                                 flags=model.v.flags & ~(FIN | SYN | RST))
    p.orig_len = len(p.data)
    p.index = -1
    s = Seg(p, pcaplib.tcp_view(LINKTYPE, p.data), f, d)
    s.rel, s.len, s.payload, s.tag = start, end - start, payload, tag
    s.poisoned = sum(carried)
    return s


LINKTYPE = pcaplib.LINKTYPE_ETHERNET


def expect(order, flows, streams_dir=None):
    """Replay `order` through a first-wins model; return per-flow facts."""
    out = []
    for fi, f in enumerate(flows.values()):
        # The flow ends with its first RST or its second FIN; packets after
        # that (the last ACK of a FIN close) are not counted in pkts_*.
        close_pos, fins = len(order) - 1, set()
        for i, s in enumerate(order):
            if s.flow is not f:
                continue
            if s.v.flags & RST:
                close_pos = i
                break
            if s.v.flags & FIN:
                fins.add(s.dir)
                if len(fins) == 2:
                    close_pos = i
                    break
        rec = {"src_ip": pcaplib.ip_str(f.client[0]), "src_port": f.client[1],
               "dest_ip": pcaplib.ip_str(f.server[0]), "dest_port": f.server[1]}
        for d, name in ((0, "toserver"), (1, "toclient")):
            n = len(f.true[d])
            got, have = bytearray(n), bytearray(n)
            pkts = 0
            for s in order[:close_pos + 1]:
                if s.flow is f and s.dir == d:
                    pkts += 1
            for s in order:
                if s.flow is not f or s.dir != d:
                    continue
                for i, byte in enumerate(s.payload):
                    o = s.rel + i
                    if not have[o]:
                        got[o], have[o] = byte, 1
            gaps, gap_bytes, i = 0, 0, 0
            while i < n:
                if not have[i]:
                    j = i
                    while j < n and not have[j]:
                        j += 1
                    gaps += 1
                    gap_bytes += j - i
                    i = j
                else:
                    i += 1
            stream = bytes(b for b, h in zip(got, have) if h)
            want = bytes(b for b, h in zip(f.true[d], have) if h)
            if stream != want:
                sys.exit("mangle: internal error: first-wins stream differs from the original")
            rec["pkts_" + name] = pkts
            rec["reasm_" + name] = len(stream)
            rec["gaps_" + name] = gaps
            rec["gap_bytes_" + name] = gap_bytes
            rec["sha256_" + name] = hashlib.sha256(stream).hexdigest()
            if streams_dir:
                with open("%s/%d.%s" % (streams_dir, fi, name), "wb") as fh:
                    fh.write(stream)
        out.append(rec)
    return out


def main():
    global LINKTYPE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--describe")
    ap.add_argument("--expect")
    ap.add_argument("--streams", help="write the expected streams to DIR/<n>.toserver|.toclient "
                    "(n: the flow's position in --expect)")
    a = ap.parse_args()
    hdr, segs, flows = load(a.input)
    LINKTYPE = hdr.linktype
    rng = random.Random(a.seed)
    log = []
    order, _ = mangle(segs, flows, rng, log)
    prev = (0, 0)
    out = []
    for s in order:
        p = s.pkt.copy()
        if (p.ts_sec, p.ts_frac) < prev:
            p.ts_sec, p.ts_frac = prev
        prev = (p.ts_sec, p.ts_frac)
        out.append(p)
    pcaplib.write_pcap(a.output, hdr, out)
    exp = expect(order, flows, a.streams)
    head = ("mangle.py --seed %d: %s -> %s (%d -> %d packets)\n"
            "packet numbers are 1-based positions in the input\n"
            % (a.seed, a.input.split("/")[-1], a.output.split("/")[-1], len(segs), len(out)))
    if a.describe:
        with open(a.describe, "w") as fh:
            fh.write(head + "\n".join(log) + "\n")
    else:
        sys.stderr.write(head + "\n".join(log) + "\n")
    if a.expect:
        with open(a.expect, "w") as fh:
            json.dump({"capture": a.output.split("/")[-1], "original": a.input.split("/")[-1],
                       "seed": a.seed, "policy": "first wins; gaps omitted from streams",
                       "flows": exp}, fh, indent=1, sort_keys=True)
            fh.write("\n")


if __name__ == "__main__":
    main()
