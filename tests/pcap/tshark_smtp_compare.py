#!/usr/bin/env python3
"""Compare breakwater's helo / mail_from / rcpt_to with tshark's SMTP dissector.

    tshark_smtp_compare.py BREAKWATER [CAPTURE...]

With no CAPTURE, every tests/pcap/*/capture.pcap is compared. For each
capture: `BREAKWATER --pcap CAPTURE -q` gives the transaction records;
`tshark -r CAPTURE -Y smtp.req -T fields -e tcp.stream -e ip.src ... -e
smtp.command_line` gives, per TCP stream, the client command lines the
dissector found (smtp.command_line holds the whole line, so commands without
a parameter keep their place; smtp.req.command/parameter would not line up).
From tshark's lines each stream is cut into transactions (MAIL starts one,
RCPT adds a recipient, the latest HELO/EHLO is the helo) and compared, in
order, with the flow's records that have a mail_from (records of a session
that went TLS before MAIL, or of a mid-stream pickup that saw no MAIL, have
none and are not compared).

tshark's SMTP dissector reads every TCP segment of a pipelined command batch
as if it started a line: when Postfix writes a batch larger than a segment
(a MAIL with 40 RCPTs), the line cut at the segment end becomes two bogus
"commands" (`RCPT TO:` with no address, then `<use 25@...`), so tshark loses
or mangles recipients. Such disagreements are accepted only when listed in
EXPLAINED below (case, mail_from of the transaction, field) AND tshark's own
lines for that stream show the symptom (a line whose verb is not an SMTP
command, or a RCPT/MAIL without its <address>); the raw client bytes (tshark
follow,tcp,raw) must then contain exactly the engine's recipients. Anything
else is a failure.

Exit status: 0 when everything agrees or disagrees only as explained, 1
otherwise, 77 (skip) when tshark is not installed.
"""
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys

# (case folder, mail_from of the transaction, field) -> why tshark is wrong.
# "*" as mail_from: any transaction of that case (which one is hit depends on
# the order the relay sends its messages in, which changes between captures).
EXPLAINED = {
    ("postfix-relay", "list@client.example.test", "rcpt_to"):
        "Postfix pipelines MAIL + 40 RCPT + DATA in one write (about 3 KB) that TCP "
        "splits into segments, cutting RCPT lines at segment ends. tshark's SMTP "
        "dissector parses each segment as if it started a line: the cut line becomes "
        "a RCPT whose parameter lacks the address or is truncated ('RCPT TO:', "
        "'...user8@sink.ex') plus a bogus command ('<user25@sink...', 'ample.test'), "
        "so tshark loses or truncates recipients. The raw client stream holds 40 "
        "whole 'RCPT TO:<...>' lines, as breakwater reports.",
    ("postfix-relay", "*", "transaction"):
        "tshark enters message mode on the client's pipelined DATA without waiting "
        "for the server's reply. Postfix answers carol's DATA with '554 5.5.1 Error: "
        "no valid recipients' (bad2 was rejected), then sends RSET and the next "
        "MAIL/RCPT/DATA batch; tshark shows those as 'DATA fragment' until the next "
        "message's final '.', so the transaction after the rejected DATA is missing "
        "from its output. The raw bytes hold its MAIL and RCPT lines.",
    ("bdat", "*", "transaction"):
        "tshark 4.0's SMTP dissector does not follow the pipelined MAIL/RCPT/BDAT "
        "batches of this session: every client segment after EHLO is shown as "
        "'DATA fragment' (it has no BDAT state), so it reports no MAIL or RCPT at "
        "all. The raw client stream holds the five MAIL FROM:<tester@...> "
        "transactions breakwater reports.",
    ("mangled", "sender@client.example.test", "rcpt_to"):
        "mangle.py reorders segments (see mangled/mangle.txt). tshark's SMTP "
        "dissector reads the command segments in capture order, not sequence "
        "order, so the second transaction's 'RCPT TO:<2rcpt@...>' and "
        "'RCPT TO:<rcpt@...>' come out swapped; in the reassembled stream (tshark "
        "follow, sequence order) 2rcpt comes first, as in breakwater's record.",
}

VERBS = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP",
         "NOOP", "QUIT", "AUTH", "STARTTLS", "XCLIENT", "XFORWARD", "ETRN", "TURN",
         "ATRN", "SIZE", "SEND", "SOML", "SAML"}
AGG = "\x1f"


def bare(param):
    """'FROM:<a@b> SIZE=1' -> 'a@b'; None when there is no <...> address."""
    m = re.match(r"(?i)\s*(?:FROM|TO)\s*:\s*<([^>]*)>", param)
    return m.group(1) if m else None


def tshark_lines(tshark, pcap):
    """{stream: (client 5-tuple, [command line, ...])}"""
    p = subprocess.run([tshark, "-r", pcap, "-d", "tcp.port==2525,smtp", "-Y", "smtp.req",
                        "-T", "fields",
                        "-E", "aggregator=" + AGG, "-e", "tcp.stream", "-e", "ip.src",
                        "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst",
                        "-e", "tcp.dstport", "-e", "smtp.command_line"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300, check=True)
    out = collections.OrderedDict()
    for row in p.stdout.decode("utf-8", "replace").splitlines():
        f = row.split("\t")
        if len(f) < 8 or not f[7]:
            continue
        src = (f[1] or f[2]).split(AGG)[-1]   # tunnels: innermost address
        dst = (f[4] or f[5]).split(AGG)[-1]
        key = (src, int(f[3].split(AGG)[0]), dst, int(f[6].split(AGG)[0]))
        ent = out.setdefault(int(f[0].split(AGG)[0]), (key, []))
        for line in f[7].split(AGG):
            if line.endswith("\\r\\n"):
                line = line[:-4]
            elif line.endswith("\\n"):
                line = line[:-2]
            ent[1].append(line)
    return out


def tshark_txs(lines):
    """Transactions from tshark's lines; also the split-line symptoms seen."""
    txs, helo, symptoms = [], None, []
    for line in lines:
        verb, _, param = line.partition(" ")
        uverb = verb.upper()
        if uverb not in VERBS:
            symptoms.append("bogus command %r" % line[:40])
            continue
        if uverb in ("HELO", "EHLO"):
            helo = param.strip()
        elif uverb == "MAIL":
            a = bare(param)
            if a is None:
                symptoms.append("MAIL without address %r" % line[:40])
            txs.append({"helo": helo, "mail_from": a, "rcpt_to": []})
        elif uverb == "RCPT":
            a = bare(param)
            if a is None:
                symptoms.append("RCPT without address %r" % line[:40])
            elif txs:
                txs[-1]["rcpt_to"].append(a)
    return txs, symptoms


def raw_txs(tshark, pcap, stream):
    """[(helo, mail_from, [rcpt...])] from the raw client bytes of a stream, in
    sequence order (tshark follow,tcp,raw reassembles; a missing segment is a
    marker, removed). Only lines starting with a verb count, so message lines
    are passed over (none in these captures starts with MAIL/RCPT/HELO/EHLO)."""
    p = subprocess.run([tshark, "-r", pcap, "-q", "-z", "follow,tcp,raw,%d" % stream],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300, check=True)
    data = bytearray()
    started = False
    for line in p.stdout.decode().splitlines():
        if line.startswith("Node 1:"):
            started = True
            continue
        if not started or line.startswith("=") or not line.strip() or line.startswith("\t"):
            continue
        data += bytes.fromhex(line.strip())
    data = re.sub(rb"\[\d+ bytes missing in capture file\]\x00?", b"", bytes(data))
    txs, helo = [], None
    for ln in data.split(b"\r\n"):
        s = ln.decode("latin1")
        verb = s[:5].upper()
        if verb in ("EHLO ", "HELO "):
            helo = s[5:].strip()
        elif verb == "MAIL ":
            txs.append((helo, bare(s[5:]), []))
        elif verb == "RCPT " and txs:
            txs[-1][2].append(bare(s[5:]))
    return txs


def engine_records(bw, pcap):
    p = subprocess.run([bw, "--pcap", pcap, "-q"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("breakwater exited %d" % p.returncode)
    import ipaddress
    flows = collections.defaultdict(list)
    for l in p.stdout.decode("utf-8", "replace").splitlines():
        if not l.strip():
            continue
        r = json.loads(l)
        if r.get("event") != "smtp":
            continue
        key = (str(ipaddress.ip_address(r["src_ip"])), r["src_port"],
               str(ipaddress.ip_address(r["dest_ip"])), r["dest_port"])
        flows[key].append(r)
    for v in flows.values():
        v.sort(key=lambda r: r["tx"])
    return flows


def compare(bw, tshark, pcap):
    import difflib
    import ipaddress
    case = os.path.basename(os.path.dirname(os.path.abspath(pcap)))
    eng = engine_records(bw, pcap)
    ts = tshark_lines(tshark, pcap)
    problems, explained, n_tx = [], [], 0
    seen = set()

    def report(stream, etx, field, what, key):
        """A disagreement: explained when listed in EXPLAINED and the raw
        client bytes give exactly breakwater's transactions."""
        why = EXPLAINED.get((case, key, field)) or EXPLAINED.get((case, "*", field))
        if why:
            raw = [t for t in raw_txs(tshark, pcap, stream)]
            mine = [(r.get("helo"), r.get("mail_from"), r.get("rcpt_to")) for r in etx]
            if raw == mine:
                explained.append("stream %d %s\n        why: %s" % (stream, what, why))
                return
            what += " (raw bytes do not match breakwater either)"
        problems.append("stream %d %s" % (stream, what))

    for stream, (key, lines) in ts.items():
        key = (str(ipaddress.ip_address(key[0])), key[1], str(ipaddress.ip_address(key[2])),
               key[3])
        seen.add(key)
        ttx, symptoms = tshark_txs(lines)
        etx = [r for r in eng.get(key, []) if r.get("mail_from") is not None]
        sm = difflib.SequenceMatcher(a=[t["mail_from"] for t in ttx],
                                     b=[r["mail_from"] for r in etx], autojunk=False)
        for op, a0, a1, b0, b1 in sm.get_opcodes():
            if op == "equal" or (op == "replace" and a1 - a0 == b1 - b0):
                pairs = list(zip(ttx[a0:a1], etx[b0:b1]))
            else:
                pairs = []
                for t in ttx[a0:a1]:
                    report(stream, etx, "transaction",
                           "transaction MAIL FROM %s only in tshark" % json.dumps(t["mail_from"]),
                           t["mail_from"])
                for r in etx[b0:b1]:
                    report(stream, etx, "transaction",
                           "tx %d (MAIL FROM %s) missing in tshark%s" % (
                               r["tx"], json.dumps(r["mail_from"]),
                               "; tshark symptoms: " + "; ".join(symptoms[:3])
                               if symptoms else ""), r["mail_from"])
            for t, r in pairs:
                n_tx += 1
                for field in ("helo", "mail_from", "rcpt_to"):
                    tv, ev = t[field], r.get(field)
                    if tv == ev:
                        continue
                    if field == "rcpt_to":
                        what = "tx %d rcpt_to: tshark %d rcpts, breakwater %d" % (
                            r["tx"], len(tv), len(ev))
                        if set(tv) == set(ev):
                            what += " (same set, other order)"
                        else:
                            what += " (only tshark: %s; only breakwater: %s)" % (
                                sorted(set(tv) - set(ev)), sorted(set(ev) - set(tv)))
                    else:
                        what = "tx %d %s: tshark %s, breakwater %s" % (
                            r["tx"], field, json.dumps(tv), json.dumps(ev))
                    if symptoms:
                        what += "; tshark symptoms: " + "; ".join(symptoms[:3])
                    report(stream, etx, field, what, r.get("mail_from"))
    for key, recs in eng.items():
        if key not in seen and any(r.get("mail_from") is not None for r in recs):
            problems.append("flow %s: breakwater has transactions, tshark no commands" % (key,))
    return case, n_tx, problems, explained


def main(argv):
    if len(argv) < 2:
        print("usage: tshark_smtp_compare.py BREAKWATER [CAPTURE...]", file=sys.stderr)
        return 2
    tshark = shutil.which("tshark")
    if not tshark:
        print("tshark_smtp_compare: tshark not found, skipping")
        return 77
    bw = argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    caps = argv[2:] or sorted(glob.glob(os.path.join(here, "*", "capture.pcap")))
    bad = 0
    for pcap in caps:
        try:
            case, n, problems, explained = compare(bw, tshark, pcap)
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
            print("%-22s FAIL: %s" % (pcap, e))
            bad += 1
            continue
        state = "agree" if not problems and not explained else (
            "%d explained disagreements" % len(explained) if not problems else
            "%d DISAGREEMENTS" % len(problems))
        print("%-22s %2d transactions: %s" % (case, n, state))
        for m in explained:
            print("    explained: " + m)
        for m in problems:
            print("    " + m)
        bad += bool(problems)
    if bad:
        print("FAIL: %d captures with unexplained disagreements" % bad)
        return 1
    print("OK: %d captures" % len(caps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
