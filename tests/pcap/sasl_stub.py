#!/usr/bin/env python3
"""A tiny Dovecot-protocol SASL authenticator for a private Postfix instance.

Used by scripts/make-captures.sh so that a real Postfix smtpd performs AUTH
PLAIN and AUTH LOGIN on the wire (334 challenges, 235 success, 535 failure)
without installing Dovecot or Cyrus sasldb. Postfix's smtpd talks to it with
smtpd_sasl_type = dovecot and smtpd_sasl_path = private/auth.

    sasl_stub.py SOCKET_PATH SECONDS

Accepts every user whose password is "s3cret-" followed by anything; refuses
the rest. One thread per connection (each smtpd process keeps one open);
exits after SECONDS.
"""
import base64
import os
import socket
import sys
import threading
import time


def serve(conn):
    conn.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
                 b"SPID\t%d\nCUID\t1\nCOOKIE\t%s\nDONE\n" % (os.getpid(), b"0" * 32))
    state = {}  # id -> (mech, step, user)
    buf = b""
    while True:
        data = conn.recv(4096)
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            f = line.decode("utf-8", "replace").split("\t")
            if f[0] == "AUTH":
                rid, mech = f[1], f[2].upper()
                resp = next((x[5:] for x in f[3:] if x.startswith("resp=")), None)
                state[rid] = [mech, 0, ""]
                out = step(state, rid, resp)
            elif f[0] == "CONT":
                out = step(state, f[1], f[2] if len(f) > 2 else "")
            else:
                continue        # VERSION, CPID
            conn.sendall(out.encode() + b"\n")


def step(state, rid, resp):
    mech, n, user = state[rid]
    if mech == "PLAIN":
        if resp is None:
            state[rid][1] = 1
            return "CONT\t%s\t" % rid
        parts = base64.b64decode(resp or "").split(b"\0")
        user, pw = parts[1].decode(), parts[2].decode() if len(parts) > 2 else ""
        return verdict(rid, user, pw)
    if mech == "LOGIN":
        if n == 0 and resp is None:
            state[rid][1] = 1
            return "CONT\t%s\t%s" % (rid, base64.b64encode(b"Username:").decode())
        if n in (0, 1):
            state[rid][1] = 2
            state[rid][2] = base64.b64decode(resp or "").decode()
            return "CONT\t%s\t%s" % (rid, base64.b64encode(b"Password:").decode())
        return verdict(rid, user, base64.b64decode(resp or "").decode())
    return "FAIL\t%s\treason=unsupported mechanism" % rid


def verdict(rid, user, pw):
    if pw.startswith("s3cret-"):
        return "OK\t%s\tuser=%s" % (rid, user)
    return "FAIL\t%s\tuser=%s" % (rid, user)


def main():
    path, seconds = sys.argv[1], float(sys.argv[2])
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(8)
    deadline = time.monotonic() + seconds

    def run(conn):
        try:
            serve(conn)
        except (OSError, IndexError, ValueError, UnicodeError):
            pass
        finally:
            conn.close()

    while time.monotonic() < deadline:
        srv.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            break
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        threading.Thread(target=run, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
