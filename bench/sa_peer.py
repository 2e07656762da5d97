#!/usr/bin/env python3
"""The peer for bench/run.sh: SpamAssassin's messages/s, local tests only.

Starts `spamd --local` with one child (-x: no user config; as root, -u
nobody) on a free 127.0.0.1 port with a pidfile, sends the first --sample
messages of a gen-smtp-pcap.py capture (its .truth.jsonl, transactions that
carried a message, in order; files relative to --root) one at a time through
`spamc -c` (no size cap: -s 100000000, so nothing passes unscanned), and
stops spamd by the PID it wrote. Two untimed messages first (the child's
first scan compiles what SpamAssassin defers). Prints one line:
    sa messages=N ok=N errors=N seconds=S msgps=X bytes=B version=V
Standard library only.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--truth", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    if not (shutil.which("spamd") and shutil.which("spamc")):
        print("sa skipped: spamd/spamc not installed (Debian packages spamd and spamc)")
        return 0
    files = []
    for line in open(a.truth):
        t = json.loads(line)
        if t.get("data"):
            files.append(os.path.join(a.root, t["file"]))
            if len(files) == a.sample:
                break
    port = free_port()
    pidf = os.path.join(a.workdir, "spamd.pid")
    cmd = ["spamd", "--local", "--max-children", "1", "--min-children", "1",
           "-i", f"127.0.0.1:{port}", "-x", "-r", pidf, "-s", "stderr"]
    if os.getuid() == 0:
        cmd += ["-u", "nobody"]
    log = open(os.path.join(a.workdir, "spamd.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    spamc = ["spamc", "-d", "127.0.0.1", "-p", str(port), "-x", "-s", "100000000", "-c"]
    try:
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end:
            if proc.poll() is not None:
                sys.exit("spamd exited; see spamd.log")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        for f in files[:2]:
            subprocess.run(spamc, input=open(f, "rb").read(), capture_output=True)
        ok = err = size = 0
        t0 = time.monotonic()
        for f in files:
            data = open(f, "rb").read()
            r = subprocess.run(spamc, input=data, capture_output=True)
            out = r.stdout.decode(errors="replace").strip()
            if r.returncode in (0, 1) and "/" in out and out != "0/0":
                ok += 1
                size += len(data)
            else:
                err += 1
        t = time.monotonic() - t0
        ver = subprocess.run(["spamd", "--version"], capture_output=True,
                             text=True).stdout.splitlines()
        ver = ver[0].split()[-1] if ver else "?"
        print(f"sa messages={len(files)} ok={ok} errors={err} seconds={t:.3f} "
              f"msgps={ok / t:.3f} bytes={size} version={ver}")
    finally:
        # stop spamd by the PID it wrote (else the one we started)
        pid = proc.pid
        try:
            pid = int(open(pidf).read().strip())
        except (OSError, ValueError):
            pass
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
