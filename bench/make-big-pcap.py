#!/usr/bin/env python3
"""Write a large SMTP capture by repeating a small one as distinct flows.

Input: one or more classic pcap files (Ethernet, optionally 802.1Q-tagged;
microsecond or nanosecond timestamps; either byte order; .gz is read
transparently), or --synth for a built-in synthetic SMTP capture when no real
one is at hand. pcapng is not read: convert it with `editcap -F pcap`.

The kept packets (IPv4 TCP with an SMTP port on one side, or all IPv4 TCP with
--all-tcp) form a template. Copy k of the template gets, for every client
endpoint (the side that is not the SMTP port), a new IPv4 address from
100.64.0.0/10 that is unique to (k, endpoint) and a new source port, so every
copy is a new set of flows; servers keep their addresses, as an MTA's traffic
would. IPv4 header and TCP checksums are first made correct in the template
(full recompute, where the packet was captured whole) and then updated
incrementally per copy (RFC 1624), so the output has valid checksums
everywhere it can.

Timestamps: gaps inside the template longer than --max-gap are shortened to
it (real captures are sometimes several sessions months apart), then copy k
is shifted forward by whole template spans. With --concurrency C, C copies
run side by side (starts staggered evenly over one span, packets merged in
time order), so the engine holds C flows at once rather than one.

Deterministic: the same inputs and options give the same bytes.

Usage: make-big-pcap.py [-o OUT] [--size 256M] [--concurrency C] IN.pcap...
       make-big-pcap.py --synth [-o OUT] [--size 256M]
"""

import argparse
import gzip
import hashlib
import struct
import sys

SMTP_PORTS = {25, 465, 587, 2525}
CLIENT_NET = 0x64400000          # 100.64.0.0/10 (shared address space)
CLIENT_NET_SIZE = 1 << 22
PORT_LO, PORT_SPAN = 1024, 64512

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
DLT_EN10MB = 1


def die(msg):
    print("make-big-pcap: " + msg, file=sys.stderr)
    sys.exit(1)


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper().rstrip("B")
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


# --- reading ---------------------------------------------------------------

def read_pcap(path):
    """Returns (nanos, linktype, [(ts_ns, orig_len, bytes)])."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        die(f"{path}: {e.strerror or e}")
    if len(data) < 24:
        die(f"{path}: too short for a pcap header")
    magic_le = struct.unpack_from("<I", data, 0)[0]
    magic_be = struct.unpack_from(">I", data, 0)[0]
    if magic_le in (MAGIC_US, MAGIC_NS):
        e, magic = "<", magic_le
    elif magic_be in (MAGIC_US, MAGIC_NS):
        e, magic = ">", magic_be
    elif magic_le == 0x0A0D0D0A:
        die(f"{path}: pcapng; convert with `editcap -F pcap IN OUT`")
    else:
        die(f"{path}: not a pcap file (magic {magic_le:#x})")
    nanos = magic == MAGIC_NS
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(e + "IIII")
    pkts = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = rec.unpack_from(data, off)
        off += 16
        if off + incl > len(data):
            print(f"make-big-pcap: {path}: truncated last record, ignored",
                  file=sys.stderr)
            break
        ts = sec * 1_000_000_000 + (frac if nanos else frac * 1000)
        pkts.append((ts, orig, data[off:off + incl]))
        off += incl
    return nanos, linktype, pkts


# --- checksums -------------------------------------------------------------

def csum_add(data):
    """Ones'-complement sum of data as big-endian 16-bit words (unfolded)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    n = len(data) // 2
    return sum(struct.unpack(f"!{n}H", data))


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def word_delta(old, new):
    """Sum to add to a checksum's complement when 16-bit word old becomes new."""
    return (~old & 0xFFFF) + new


def inc_update(ck, delta):
    """RFC 1624 eqn. 3: HC' = ~(~HC + sum(~m + m'))."""
    return ~fold((~ck & 0xFFFF) + delta) & 0xFFFF


# --- template --------------------------------------------------------------

class TPacket:
    __slots__ = ("ts", "orig_len", "buf", "ip_off", "l4_off",
                 "client_is_src", "endpoint")


def build_template(files, all_tcp, max_gap_ns):
    """Reads the inputs into one time-ordered list of TPacket with correct
    checksums. Returns (nanos, packets, endpoints, servers, stats)."""
    out = []
    stats = {"read": 0, "kept": 0, "not_ipv4_tcp": 0, "not_smtp": 0,
             "fragment": 0, "truncated": 0, "ip_csum_fixed": 0,
             "tcp_csum_fixed": 0}
    endpoints = {}      # (ip, port) of a client -> index
    servers = set()
    nanos_all = True
    base = 0            # where the next file's packets start in template time
    for path in files:
        nanos, linktype, pkts = read_pcap(path)
        nanos_all = nanos_all and nanos
        if linktype != DLT_EN10MB:
            die(f"{path}: link type {linktype}; only Ethernet (1) is handled")
        kept = []
        for ts, orig_len, data in pkts:
            stats["read"] += 1
            p = parse_packet(ts, orig_len, data, all_tcp, stats)
            if p is not None:
                kept.append(p)
        kept.sort(key=lambda p: p.ts)   # stable: ties keep file order
        prev = None
        t = base
        for p in kept:
            if prev is not None:
                t += min(p.ts - prev, max_gap_ns)
            prev = p.ts
            p.ts = t
            out.append(p)
        if kept:
            base = t + max_gap_ns
    for p in out:
        b = p.buf
        ip = p.ip_off
        src = bytes(b[ip + 12:ip + 16])
        dst = bytes(b[ip + 16:ip + 20])
        sport = struct.unpack_from("!H", b, p.l4_off)[0]
        dport = struct.unpack_from("!H", b, p.l4_off + 2)[0]
        cli = (src, sport) if p.client_is_src else (dst, dport)
        srv = dst if p.client_is_src else src
        servers.add(srv)
        p.endpoint = endpoints.setdefault(cli, len(endpoints))
        stats["kept"] += 1
    return nanos_all, out, endpoints, servers, stats


def parse_packet(ts, orig_len, data, all_tcp, stats):
    b = bytearray(data)
    off = 14
    if len(b) < 14:
        stats["not_ipv4_tcp"] += 1
        return None
    etype = struct.unpack_from("!H", b, 12)[0]
    while etype in (0x8100, 0x88A8) and len(b) >= off + 4:
        etype = struct.unpack_from("!H", b, off + 2)[0]
        off += 4
    if etype != 0x0800 or len(b) < off + 20 or b[off] >> 4 != 4:
        stats["not_ipv4_tcp"] += 1
        return None
    ihl = (b[off] & 0x0F) * 4
    if ihl < 20 or b[off + 9] != 6 or len(b) < off + ihl + 20:
        stats["not_ipv4_tcp"] += 1
        return None
    frag = struct.unpack_from("!H", b, off + 6)[0]
    if frag & 0x3FFF:                    # MF set or offset non-zero
        stats["fragment"] += 1
        return None
    l4 = off + ihl
    sport, dport = struct.unpack_from("!HH", b, l4)
    if dport in SMTP_PORTS and sport not in SMTP_PORTS:
        client_is_src = True
    elif sport in SMTP_PORTS and dport not in SMTP_PORTS:
        client_is_src = False
    elif all_tcp:
        client_is_src = sport > dport   # the higher port is the client
    else:
        stats["not_smtp"] += 1
        return None
    # Checksums: make them right in the template when the packet is whole.
    total_len = struct.unpack_from("!H", b, off + 2)[0]
    whole = len(b) >= off + total_len and total_len >= ihl + 20
    if not whole:
        stats["truncated"] += 1
    old = struct.unpack_from("!H", b, off + 10)[0]
    struct.pack_into("!H", b, off + 10, 0)
    ipck = ~fold(csum_add(b[off:off + ihl])) & 0xFFFF
    struct.pack_into("!H", b, off + 10, ipck)
    if ipck != old:
        stats["ip_csum_fixed"] += 1
    if whole:
        seg = b[l4:off + total_len]
        old = struct.unpack_from("!H", b, l4 + 16)[0]
        pseudo = csum_add(b[off + 12:off + 20]) + 6 + len(seg)
        seg[16:18] = b"\0\0"
        tck = ~fold(pseudo + csum_add(seg)) & 0xFFFF
        struct.pack_into("!H", b, l4 + 16, tck)
        if tck != old:
            stats["tcp_csum_fixed"] += 1
    p = TPacket()
    p.ts, p.orig_len, p.buf = ts, orig_len, bytes(b)
    p.ip_off, p.l4_off, p.client_is_src = off, l4, client_is_src
    p.endpoint = None
    return p


# --- synthetic input -------------------------------------------------------

def synth_packets():
    """A small deterministic SMTP capture: four sessions with messages of
    2 KB to 60 KB, 1448-byte data segments, delayed ACKs, both directions.
    Returns pcap file bytes (microsecond timestamps, Ethernet)."""
    pkts = []
    t = [1_700_000_000_000_000]          # microseconds

    def frame(src, dst, sport, dport, seq, ack, flags, payload, smac, dmac):
        ip_total = 20 + 20 + len(payload)
        iph = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_total, 0,
                                    0x4000, 64, 6, 0, src, dst))
        struct.pack_into("!H", iph, 10, ~fold(csum_add(iph)) & 0xFFFF)
        tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack,
                                    5 << 4, flags, 64240, 0, 0)) + payload
        pseudo = csum_add(src + dst) + 6 + len(tcp)
        struct.pack_into("!H", tcp, 16, ~fold(pseudo + csum_add(tcp)) & 0xFFFF)
        return dmac + smac + b"\x08\x00" + bytes(iph) + bytes(tcp)

    server = bytes([192, 0, 2, 25])
    smac, cmac = b"\x02\x00\x00\x00\x00\x25", b"\x02\x00\x00\x00\x00\x01"
    sizes = [2_000, 9_000, 24_000, 60_000]
    for i, size in enumerate(sizes):
        client = bytes([198, 51, 100, 10 + i])
        cport = 40000 + i
        cseq, sseq = 1000 * (i + 1), 500000 * (i + 1)

        def c2s(flags, payload=b""):
            nonlocal cseq
            pkts.append((t[0], frame(client, server, cport, 25, cseq, sseq,
                                     flags, payload, cmac, smac)))
            cseq = (cseq + len(payload) + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
            t[0] += 40

        def s2c(flags, payload=b""):
            nonlocal sseq
            pkts.append((t[0], frame(server, client, 25, cport, sseq, cseq,
                                     flags, payload, smac, cmac)))
            sseq = (sseq + len(payload) + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
            t[0] += 40

        SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
        # handshake (ack fields of the SYN are not meaningful; fine for replay)
        c2s(SYN)
        s2c(SYN | ACK)
        c2s(ACK)
        dialog = [
            ("s", b"220 mx.example.net ESMTP ready\r\n"),
            ("c", b"EHLO client%d.example.org\r\n" % i),
            ("s", b"250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n"
                  b"250-8BITMIME\r\n250 SMTPUTF8\r\n"),
            ("c", b"MAIL FROM:<sender%d@example.org> SIZE=%d\r\n" % (i, size)),
            ("s", b"250 2.1.0 Ok\r\n"),
            ("c", b"RCPT TO:<user%d@example.net>\r\n" % i),
            ("s", b"250 2.1.5 Ok\r\n"),
            ("c", b"DATA\r\n"),
            ("s", b"354 End data with <CR><LF>.<CR><LF>\r\n"),
        ]
        for side, payload in dialog:
            (c2s if side == "c" else s2c)(PSH | ACK, payload)
        hdr = (b"From: Sender %d <sender%d@example.org>\r\n"
               b"To: <user%d@example.net>\r\n"
               b"Subject: quarterly report %d\r\n"
               b"Message-ID: <%d.bench@example.org>\r\n"
               b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
               b"\r\n" % (i, i, i, i, i))
        line = b"The quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet.\r\n"
        body = hdr + line * max(1, (size - len(hdr)) // len(line)) + b".\r\n"
        n = 0
        for off in range(0, len(body), 1448):
            c2s(ACK | (PSH if off + 1448 >= len(body) else 0), body[off:off + 1448])
            n += 1
            if n % 2 == 0:
                s2c(ACK)
        s2c(PSH | ACK, b"250 2.0.0 Ok: queued as %05X\r\n" % (0xA000 + i))
        c2s(PSH | ACK, b"QUIT\r\n")
        s2c(PSH | ACK, b"221 2.0.0 Bye\r\n")
        s2c(FIN | ACK)
        c2s(FIN | ACK)
        s2c(ACK)
        t[0] += 200_000
    out = [struct.pack("<IHHiIII", MAGIC_US, 2, 4, 0, 0, 65535, DLT_EN10MB)]
    for ts, fr in pkts:
        out.append(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000,
                               len(fr), len(fr)))
        out.append(fr)
    return b"".join(out)


# --- writing ---------------------------------------------------------------

def client_addr(copy, endpoint, n_endpoints):
    idx = (copy * n_endpoints + endpoint) % CLIENT_NET_SIZE
    return CLIENT_NET + idx


def make_copy_deltas(copy, endpoints, n_endpoints):
    """For each endpoint of the template: (new ip bytes, new port, delta for
    the IP checksum, delta for the TCP checksum)."""
    res = []
    for (ip, port), e in sorted(endpoints.items(), key=lambda kv: kv[1]):
        nip = client_addr(copy, e, n_endpoints)
        nport = PORT_LO + (port + copy * 7919) % PORT_SPAN
        o_hi, o_lo = struct.unpack("!HH", ip)
        n_hi, n_lo = nip >> 16, nip & 0xFFFF
        d_ip = word_delta(o_hi, n_hi) + word_delta(o_lo, n_lo)
        d_tcp = d_ip + word_delta(port, nport)
        res.append((struct.pack("!I", nip), struct.pack("!H", nport), d_ip, d_tcp))
    return res


def render(p, deltas):
    """The bytes of template packet p rewritten for one copy."""
    nip, nport, d_ip, d_tcp = deltas[p.endpoint]
    b = bytearray(p.buf)
    ip, l4 = p.ip_off, p.l4_off
    if p.client_is_src:
        b[ip + 12:ip + 16] = nip
        b[l4:l4 + 2] = nport
    else:
        b[ip + 16:ip + 20] = nip
        b[l4 + 2:l4 + 4] = nport
    ck = (b[ip + 10] << 8) | b[ip + 11]
    ck = inc_update(ck, d_ip)
    b[ip + 10], b[ip + 11] = ck >> 8, ck & 0xFF
    if len(b) >= l4 + 18:
        ck = (b[l4 + 16] << 8) | b[l4 + 17]
        ck = inc_update(ck, d_tcp)
        b[l4 + 16], b[l4 + 17] = ck >> 8, ck & 0xFF
    return b


def main():
    ap = argparse.ArgumentParser(
        description="Repeat an SMTP capture as distinct flows up to a size.")
    ap.add_argument("inputs", nargs="*", help="pcap files (the template)")
    ap.add_argument("-o", "--output", default="big.pcap")
    ap.add_argument("--size", default="256M",
                    help="minimum output size (bytes; K/M/G suffixes)")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="copies interleaved in time (flows held at once)")
    ap.add_argument("--max-gap", type=float, default=1.0,
                    help="longest gap kept between template packets, seconds")
    ap.add_argument("--all-tcp", action="store_true",
                    help="keep every IPv4 TCP packet, not only SMTP ports")
    ap.add_argument("--synth", action="store_true",
                    help="use a built-in synthetic SMTP capture as the template")
    ap.add_argument("--write-synth", metavar="FILE",
                    help="write the synthetic template capture to FILE and exit")
    args = ap.parse_args()

    if args.write_synth:
        with open(args.write_synth, "wb") as f:
            f.write(synth_packets())
        return
    files = list(args.inputs)
    tmp_synth = None
    if args.synth:
        import tempfile
        fd, tmp_synth = tempfile.mkstemp(suffix=".pcap")
        with open(fd, "wb") as f:
            f.write(synth_packets())
        files.append(tmp_synth)
    if not files:
        die("no input (give pcap files or --synth)")
    try:
        nanos, tpl, endpoints, servers, stats = build_template(
            files, args.all_tcp, int(args.max_gap * 1e9))
    finally:
        if tmp_synth:
            import os
            os.unlink(tmp_synth)
    if not tpl:
        die(f"no usable packets in the input ({stats})")
    for s in servers:
        v = struct.unpack("!I", s)[0]
        if CLIENT_NET <= v < CLIENT_NET + CLIENT_NET_SIZE:
            die("a server address lies in 100.64.0.0/10, where clients are rewritten to")
    size = parse_size(args.size)
    conc = max(1, args.concurrency)
    n_ep = len(endpoints)
    span = tpl[-1].ts - tpl[0].ts + int(args.max_gap * 1e9)
    t0 = tpl[0].ts
    copy_bytes = sum(16 + len(p.buf) for p in tpl)
    copies = max(1, -(-(size - 24) // copy_bytes))
    if copies * n_ep > CLIENT_NET_SIZE:
        print("make-big-pcap: more client endpoints than 100.64.0.0/10 holds; "
              "addresses repeat (ports still differ)", file=sys.stderr)
    start_ns = 1_700_000_000 * 1_000_000_000   # 2023-11-14, fixed: deterministic
    rec_le = struct.Struct("<IIII")
    magic = MAGIC_NS if nanos else MAGIC_US
    digest = hashlib.sha256()
    written = 0
    n_pkts = 0
    with open(args.output, "wb", buffering=0) as f:
        hdr = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, DLT_EN10MB)
        f.write(hdr)
        digest.update(hdr)
        written += len(hdr)
        chunk = []
        chunk_bytes = 0
        for wave_start in range(0, copies, conc):
            wave = range(wave_start, min(copies, wave_start + conc))
            wave_no = wave_start // conc
            stagger = span // conc
            events = []
            for j, k in enumerate(wave):
                base = start_ns + wave_no * (span + stagger * conc) + j * stagger
                deltas = make_copy_deltas(k, endpoints, n_ep)
                for i, p in enumerate(tpl):
                    events.append((base + p.ts - t0, j, i, deltas))
            if len(wave) > 1:
                events.sort(key=lambda e: (e[0], e[1], e[2]))
            for ts, _j, i, deltas in events:
                p = tpl[i]
                b = render(p, deltas)
                sec, ns = divmod(ts, 1_000_000_000)
                frac = ns if nanos else ns // 1000
                chunk.append(rec_le.pack(sec, frac, len(b), max(p.orig_len, len(b))))
                chunk.append(b)
                chunk_bytes += 16 + len(b)
                n_pkts += 1
                if chunk_bytes >= 8 << 20:
                    data = b"".join(chunk)
                    f.write(data)
                    digest.update(data)
                    written += len(data)
                    chunk, chunk_bytes = [], 0
        if chunk:
            data = b"".join(chunk)
            f.write(data)
            digest.update(data)
            written += len(data)
    print(f"make-big-pcap: {args.output}: {written} bytes, {n_pkts} packets, "
          f"{copies} copies x {len(tpl)} packets, {copies * n_ep} client flows, "
          f"concurrency {conc}, template {stats}, sha256 {digest.hexdigest()[:16]}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
