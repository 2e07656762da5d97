"""Minimal classic-pcap reading and writing for the pcap test helpers (stdlib only).

read_pcap(path) -> (header, [Packet]); write_pcap(path, header, packets).
Packet.data is the captured frame; ts is (sec, frac) in the file's own
resolution (micro or nano), kept as read so rewriting loses nothing.
tcp_view(linktype, data) finds the IP and TCP headers of an Ethernet, VLAN,
QinQ, Linux cooked (v1, v2) or DLT_NULL frame carrying IPv4 or IPv6.
"""
import struct

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True),
}


class PcapHeader:
    def __init__(self, raw):
        if raw[:4] not in MAGICS:
            raise ValueError("not a classic pcap file (pcapng is not supported here)")
        self.raw = bytearray(raw)
        self.endian, self.nano = MAGICS[raw[:4]]
        self.linktype = struct.unpack(self.endian + "I", raw[20:24])[0]

    def with_linktype(self, linktype):
        h = PcapHeader(bytes(self.raw))
        struct.pack_into(h.endian + "I", h.raw, 20, linktype)
        h.linktype = linktype
        return h


class Packet:
    __slots__ = ("ts_sec", "ts_frac", "orig_len", "data", "index")

    def __init__(self, ts_sec, ts_frac, orig_len, data, index):
        self.ts_sec, self.ts_frac, self.orig_len = ts_sec, ts_frac, orig_len
        self.data, self.index = data, index

    def copy(self):
        return Packet(self.ts_sec, self.ts_frac, self.orig_len, self.data, self.index)


def read_pcap(path):
    with open(path, "rb") as f:
        raw = f.read()
    hdr = PcapHeader(raw[:24])
    e = hdr.endian
    pkts, off, i = [], 24, 0
    while off + 16 <= len(raw):
        sec, frac, incl, orig = struct.unpack(e + "IIII", raw[off:off + 16])
        data = raw[off + 16:off + 16 + incl]
        if len(data) < incl:
            break               # truncated last record
        pkts.append(Packet(sec, frac, orig, data, i))
        off += 16 + incl
        i += 1
    return hdr, pkts


def write_pcap(path, hdr, pkts):
    e = hdr.endian
    out = [bytes(hdr.raw)]
    for p in pkts:
        out.append(struct.pack(e + "IIII", p.ts_sec, p.ts_frac, len(p.data), p.orig_len))
        out.append(bytes(p.data))
    with open(path, "wb") as f:
        f.write(b"".join(out))


def link_payload(linktype, data):
    """Return (offset of the network header, ethertype) or None."""
    if linktype == LINKTYPE_ETHERNET:
        off, et = 14, struct.unpack("!H", data[12:14])[0]
        while et in (0x8100, 0x88A8, 0x9100) and len(data) >= off + 4:
            et = struct.unpack("!H", data[off + 2:off + 4])[0]
            off += 4
        return off, et
    if linktype == LINKTYPE_LINUX_SLL:
        return 16, struct.unpack("!H", data[14:16])[0]
    if linktype == LINKTYPE_LINUX_SLL2:
        return 20, struct.unpack("!H", data[0:2])[0]
    if linktype == LINKTYPE_NULL:
        fam = struct.unpack("<I", data[:4])[0]
        if fam > 0xFFFF:
            fam = struct.unpack(">I", data[:4])[0]
        return 4, 0x0800 if fam == 2 else 0x86DD
    return None


class TcpView:
    """Offsets and fields of one TCP segment inside a frame."""
    __slots__ = ("ip_off", "ipv6", "tcp_off", "pay_off", "pay_len", "src", "dst",
                 "sport", "dport", "seq", "ack", "flags")

    def key(self):
        return (self.src, self.sport, self.dst, self.dport)


def tcp_view(linktype, data):
    lp = link_payload(linktype, data)
    if lp is None:
        return None
    off, et = lp
    v = TcpView()
    v.ip_off = off
    if et == 0x0800 and len(data) >= off + 20:
        ihl = (data[off] & 0x0F) * 4
        if data[off + 9] != 6:
            return None
        total = struct.unpack("!H", data[off + 2:off + 4])[0]
        v.ipv6, v.src, v.dst = False, bytes(data[off + 12:off + 16]), bytes(data[off + 16:off + 20])
        v.tcp_off = off + ihl
        end = off + total
    elif et == 0x86DD and len(data) >= off + 40:
        if data[off + 6] != 6:
            return None         # extension headers are not needed by these helpers
        plen = struct.unpack("!H", data[off + 4:off + 6])[0]
        v.ipv6, v.src, v.dst = True, bytes(data[off + 8:off + 24]), bytes(data[off + 24:off + 40])
        v.tcp_off = off + 40
        end = off + 40 + plen
    else:
        return None
    t = v.tcp_off
    v.sport, v.dport, v.seq, v.ack = struct.unpack("!HHII", data[t:t + 12])
    doff = (data[t + 12] >> 4) * 4
    v.flags = data[t + 13]
    v.pay_off = t + doff
    v.pay_len = max(0, min(end, len(data)) - v.pay_off)
    return v


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def rebuild_tcp(linktype, data, v, seq, payload, flags=None, ack=None):
    """A copy of frame `data` (TCP view v) with a new sequence number (and
    acknowledgement number when given) and payload; IP length and IP/TCP
    checksums recomputed."""
    d = bytearray(data[:v.pay_off]) + payload
    t = v.tcp_off
    struct.pack_into("!I", d, t + 4, seq)
    if ack is not None:
        struct.pack_into("!I", d, t + 8, ack)
    if flags is not None:
        d[t + 13] = flags
    tcp_len = len(d) - t
    if v.ipv6:
        struct.pack_into("!H", d, v.ip_off + 4, len(d) - v.ip_off - 40)
        pseudo = v.src + v.dst + struct.pack("!IxxxB", tcp_len, 6)
    else:
        o = v.ip_off
        struct.pack_into("!H", d, o + 2, len(d) - o)
        struct.pack_into("!H", d, o + 10, 0)
        ihl = (d[o] & 0x0F) * 4
        struct.pack_into("!H", d, o + 10, _csum(bytes(d[o:o + ihl])))
        pseudo = v.src + v.dst + struct.pack("!xBH", 6, tcp_len)
    struct.pack_into("!H", d, t + 16, 0)
    struct.pack_into("!H", d, t + 16, _csum(pseudo + bytes(d[t:])))
    return bytes(d)


def ip_str(b):
    import ipaddress
    return str(ipaddress.ip_address(b))
