#!/usr/bin/env python3
"""A small SMTP client that speaks BDAT (RFC 3030 CHUNKING) to a real server.

Used by scripts/make-captures.sh to record tests/pcap/bdat: none of Postfix's
smtp client, smtp-source or swaks ever sends BDAT. The bytes on the wire come
from the kernel's TCP stack; the server is a real Postfix smtpd.

    bdat_client.py HOST PORT

Session (one TCP connection), every transaction pipelined as RFC 3030 allows:
  1. MAIL, 2 x RCPT, one "BDAT n LAST" holding the whole message.
  2. MAIL, RCPT, three chunks whose boundaries fall inside lines (one inside
     a CRLF pair), a line starting with "." that must NOT be unstuffed in a
     BDAT chunk, and a chunk that begins with "\\r\\n.\\r\\n" (not an end
     marker under BDAT).
  3. MAIL, RCPT, two chunks then "BDAT 0 LAST".
  4. MAIL, RCPT, RSET: a transaction abandoned before any data.
  5. MAIL, RCPT to a rejected recipient, "BDAT n LAST": the server answers
     the BDAT with 554 (no valid recipients) and discards the chunk.
  6. NOOP, QUIT.
Exits non-zero when a reply is not the one expected.
"""
import socket
import sys


def message(subject, body_lines):
    head = ("From: BDAT Tester <tester@client.example.test>\r\n"
            "To: <bdat@sink.example.test>\r\n"
            "Subject: %s\r\n"
            "Message-ID: <%s@client.example.test>\r\n"
            "Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
            "\r\n" % (subject, subject.replace(" ", "-")))
    return (head + "".join(line + "\r\n" for line in body_lines)).encode()


class Client:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=20)
        self.buf = b""

    def reply(self):
        """Read one (possibly multi-line) reply; return (code, text)."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise SystemExit("bdat_client: connection closed")
                self.buf += data
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("ascii", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def send(self, data):
        self.sock.sendall(data)

    def expect(self, *codes):
        code, text = self.reply()
        if code not in codes:
            raise SystemExit("bdat_client: expected %s, got %s" % (codes, text))
        return text


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    c = Client(host, port)
    c.expect(220)
    c.send(b"EHLO bdat-client.example.test\r\n")
    if "CHUNKING" not in c.expect(250):
        raise SystemExit("bdat_client: server does not offer CHUNKING")

    # 1: one chunk with LAST, pipelined with MAIL and RCPT.
    m = message("one chunk", ["A short message in a single BDAT LAST chunk."])
    c.send(b"MAIL FROM:<tester@client.example.test> BODY=8BITMIME\r\n"
           b"RCPT TO:<one@sink.example.test>\r\n"
           b"RCPT TO:<two@sink.example.test>\r\n"
           + b"BDAT %d LAST\r\n" % len(m) + m)
    c.expect(250); c.expect(250); c.expect(250); c.expect(250)

    # 2: three chunks cut inside lines; dot lines are literal under BDAT.
    m = message("three chunks", ["line %03d of a chunked message" % i for i in range(60)]
                + [".a line with a leading dot, kept as is", "..two dots", "",
                   ".", "the lone dot above is data, not an end marker", "end"])
    cut1 = m.index(b"line 010") + 4           # inside a line
    cut2 = m.index(b"\r\n", m.index(b"line 040")) + 1   # between CR and LF
    chunks = [m[:cut1], m[cut1:cut2], m[cut2:]]
    c.send(b"MAIL FROM:<tester@client.example.test>\r\n"
           b"RCPT TO:<three@sink.example.test>\r\n"
           + b"BDAT %d\r\n" % len(chunks[0]) + chunks[0]
           + b"BDAT %d\r\n" % len(chunks[1]) + chunks[1]
           + b"BDAT %d LAST\r\n" % len(chunks[2]) + chunks[2])
    c.expect(250); c.expect(250); c.expect(250); c.expect(250); c.expect(250)

    # 3: data chunks, then an empty last chunk; the second chunk starts with
    # CRLF.CRLF, which is data under BDAT.
    m = message("zero last", ["first part", "", "second part"])
    cut = m.index(b"\r\n", m.index(b"first part"))
    part2 = b"\r\n.\r\n" + m[cut + 2:]
    c.send(b"MAIL FROM:<tester@client.example.test>\r\n"
           b"RCPT TO:<zero@sink.example.test>\r\n"
           + b"BDAT %d\r\n" % cut + m[:cut]
           + b"BDAT %d\r\n" % len(part2) + part2
           + b"BDAT 0 LAST\r\n")
    c.expect(250); c.expect(250); c.expect(250); c.expect(250); c.expect(250)

    # 4: abandoned transaction.
    c.send(b"MAIL FROM:<tester@client.example.test>\r\n"
           b"RCPT TO:<never@sink.example.test>\r\n"
           b"RSET\r\n")
    c.expect(250); c.expect(250); c.expect(250)

    # 5: the only recipient is rejected; the BDAT chunk is refused.
    m = message("refused", ["nobody will read this"])
    c.send(b"MAIL FROM:<tester@client.example.test>\r\n"
           b"RCPT TO:<bad-bdat@sink.example.test>\r\n"
           + b"BDAT %d LAST\r\n" % len(m) + m)
    c.expect(250); c.expect(550, 554); c.expect(554, 503)

    c.send(b"NOOP\r\nQUIT\r\n")
    c.expect(250); c.expect(221)
    c.sock.close()


if __name__ == "__main__":
    main()
