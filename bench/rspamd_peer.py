#!/usr/bin/env python3
"""The second peer for bench/run.sh: rspamd's messages/s, local rules only.

Starts its own rspamd (Debian's package; 3.4 in bookworm) in the foreground
as a child process, from a configuration written under a temporary folder
(/etc/rspamd's stock files are included, nothing there is changed): exactly
one normal worker (count = 1: one core) on a free 127.0.0.1 port, no
controller, no proxy, no fuzzy storage, no Redis, no statistics (Bayes), and
as its only DNS resolver a stub in this script (DnsStub) that refuses every
query at once and counts them, so that nothing leaves the machine and
nothing waits for a timeout. Then, per mode:

  default  rspamd's own rules (rspamd.lua, the regexp and chartable C
           modules, the Lua plugins) less what needs the network or Redis
  sa       its spamassassin module loading the stock SpamAssassin rules
           (--sa-rules DIR/*.cf) and nothing else: no rspamd.lua rules, no C
           filters, no other plugin
  both     default plus the spamassassin module (the issue's configuration:
           its Hyperscan regexp count is the issue's)

It waits (bounded, --ready-timeout) until the worker says it loaded its
Hyperscan database (the hs_helper process compiles it on first start; with
--hs-cache DIR the compiled databases are kept for the next run), sends
--warmup messages untimed, then times --passes passes over the messages,
one at a time (POST /checkv2, the message as the body, as rspamc does; the
client asks for keep-alive, rspamd 3.4 closes the connection after each
reply, so each message is a new loopback connection), and stops rspamd by
its PID (also on errors or when interrupted).

Messages: the first --sample messages of a gen-smtp-pcap.py capture (its
.truth.jsonl, transactions that carried a message, in order; files relative
to --root), as bench/sa_peer.py picks them, or the files of --messages DIR.
Prints one line per mode:
    rspamd mode=M messages=N ok=N errors=N seconds=S msgps=X bytes=B
           version=V hs_regexps=H ... loadavg_start=a,b,c loadavg_end=a,b,c
or one line "rspamd skipped: WHY". Standard library only.
"""
import argparse
import glob
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Lua plugins switched off in the default mode (enabled = false in the
# instance's override.d), and why. The C modules dkim and fuzzy_check are
# left out of options.filters instead (network lookups / fuzzy storage).
DISABLED = {
    "rbl": "DNS blocklists (RBL, DNSWL)",
    "surbl": "DNS URL blocklists (converted to rbl rules)",
    "asn": "DNS lookups of the sender's ASN",
    "spf": "DNS lookups",
    "dmarc": "DNS lookups (and Redis reports)",
    "arc": "DNS key lookups",
    "dkim_signing": "signing outbound mail, not scoring",
    "bimi": "DNS and HTTP lookups, Redis",
    "mx_check": "DNS lookups (off by default anyway)",
    "url_redirector": "HTTP requests, Redis",
    "neural": "Redis",
    "ratelimit": "Redis",
    "greylist": "Redis",
    "replies": "Redis",
    "reputation": "DNS and Redis",
    "history_redis": "Redis",
    "dynamic_conf": "Redis",
    "bayes_expiry": "Redis (no statistics here)",
    "clustering": "Redis",
    "maps_stats": "Redis",
    "once_received": "PTR lookups of the sender's address",
}
# Modules kept with their network parts off (override.d/MODULE.conf).
PARTIAL = {
    # hfilter: keep the local checks (URL-only messages, bounce recipients),
    # drop the ones that resolve names (HELO, client hostname, From domain,
    # Message-ID domain)
    "hfilter": "helo_enabled = false;\nhostname_enabled = false;\n"
               "from_enabled = false;\nmid_enabled = false;\n",
    # phishing: keep the URL/text comparison, drop the PhishTank DNS lookups
    # of every URL (on by default) and the OpenPhish feed (off already)
    "phishing": "phishtank_enabled = false;\nopenphish_enabled = false;\n",
}

# a cold start: the main process finds no database, hs_helper compiles it and
# the worker loads it; a warm one (--hs-cache): the main process loads it
# before it forks the worker, and hs_helper compiles nothing
HS_LOADED = re.compile(r"\((normal|main)\).*hyperscan database of (\d+) regexps has been loaded")
HS_COMPILED = re.compile(r"compiled (\d+) regular expressions to the hyperscan tree")
REGEXP_MODULE = re.compile(r"init internal regexp module, (\d+) regexp rules")
SA_FILE = re.compile(r"loading SA rules from (\S+)")
DNS_REQ = re.compile(r"dns req: (\d+)")
TASK_TIME = re.compile(r"rspamd_task_write_log: .* time: ([\d.]+)ms")
HS_CLASS = re.compile(r"compiled class .* to cache \w+, \d+/(\d+) regexps")
HS_PREFILTER = re.compile(r"cannot compile .* to hyperscan: .*try prefilter")


class DnsStub:
    """rspamd's only resolver: a UDP socket on 127.0.0.1 that answers every
    query at once with REFUSED and counts the names asked, so that no lookup
    leaves the machine and none waits for a timeout. The modules that
    resolve names are disabled; the count says whether anything still asks
    (rspamd's map watcher asks for maps.rspamd.com, outside the timed run)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.names = []
        self.done = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.done:
            try:
                d, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(d) < 17:
                continue
            i, labels = 12, []
            while i < len(d) and d[i] and len(labels) < 128:
                labels.append(d[i + 1:i + 1 + d[i]].decode("ascii", "replace"))
                i += 1 + d[i]
            self.names.append(".".join(labels))
            # header: same id, QR=1, opcode and RD copied, RA=1, RCODE=5
            # (REFUSED); the question echoed, no answers
            flags = bytes([0x80 | (d[2] & 0x79), 0x80 | 5])
            try:
                self.sock.sendto(d[:2] + flags + d[4:6] + bytes(6) + d[12:i + 5], addr)
            except OSError:
                pass

    def close(self):
        self.done = True
        self.thread.join(timeout=2)
        self.sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return ",".join(f.read().split()[:3])
    except OSError:
        return "?"


def pick_messages(a):
    files = []
    if a.messages:
        for d in a.messages:
            files += sorted(p for p in glob.glob(os.path.join(d, "*")) if os.path.isfile(p))
        return files[:a.sample]
    with open(a.truth) as f:
        for line in f:
            t = json.loads(line)
            if t.get("data"):
                files.append(os.path.join(a.root, t["file"]))
                if len(files) == a.sample:
                    break
    return files


def write_config(top, mode, port, sa_rules, hs_cache, dns_port):
    """Writes the instance's configuration under top; returns rspamd's argv tail."""
    local = os.path.join(top, "local")
    for d in ("local.d", "override.d"):
        os.makedirs(os.path.join(local, d), exist_ok=True)
    for d in ("db", "run", "log"):
        os.makedirs(os.path.join(top, d), exist_ok=True)
    own_rules = mode in ("default", "both")
    sa = mode in ("sa", "both")
    if own_rules:
        lua = "$RULESDIR/rspamd.lua"
        plugins = "${PLUGINSDIR}"
        filters = '"chartable,regexp"'       # not dkim, not fuzzy_check
        for m in DISABLED:
            with open(os.path.join(local, "override.d", f"{m}.conf"), "w") as f:
                f.write(f"# {DISABLED[m]}\nenabled = false;\n")
        for m, text in PARTIAL.items():
            with open(os.path.join(local, "override.d", f"{m}.conf"), "w") as f:
                f.write(text)
    else:
        # no rspamd rules: an empty rules file, a plugin folder holding only
        # the spamassassin module, no C filters
        lua = os.path.join(top, "empty.lua")
        open(lua, "w").close()
        plugins = os.path.join(top, "plugins")
        os.makedirs(plugins, exist_ok=True)
        os.symlink("/usr/share/rspamd/plugins/spamassassin.lua",
                   os.path.join(plugins, "spamassassin.lua"))
        filters = "[]"
    if sa:
        with open(os.path.join(local, "override.d", "spamassassin.conf"), "w") as f:
            f.write(f'ruleset = "{os.path.join(sa_rules, "*.cf")}";\n')
    with open(os.path.join(local, "override.d", "options.inc"), "w") as f:
        f.write(f"filters = {filters};\n"
                f'hs_cache_dir = "{hs_cache}";\n'
                # local rules only: the resolver is DnsStub, which refuses
                # every query at once
                f'dns {{\n  nameserver = ["127.0.0.1:{dns_port}"];\n  timeout = 1s;\n'
                '  retransmits = 1;\n}\n')
    # common.conf less statistic.conf (Bayes needs Redis), and the worker
    # sections of rspamd.conf less controller, proxy and fuzzy
    conf = os.path.join(top, "rspamd.conf")
    with open(conf, "w") as f:
        f.write(f"""# written by breakwater's bench/rspamd_peer.py (mode {mode})
lua = "{lua}";
.include "$CONFDIR/metrics.conf"
.include "$CONFDIR/actions.conf"
.include "$CONFDIR/groups.conf"
.include "$CONFDIR/composites.conf"
.include "$CONFDIR/modules.conf"
.include "$CONFDIR/settings.conf"
modules {{
  path = "{plugins}";
}}
options {{
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}
logging {{
  type = "file";
  filename = "$LOGDIR/rspamd.log";
  .include "$CONFDIR/logging.inc"
}}
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  count = 1;
  .include "$CONFDIR/worker-normal.inc"
}}
""")
    return ["-c", conf, "--var", f"LOCAL_CONFDIR={local}",
            "--var", f"DBDIR={os.path.join(top, 'db')}",
            "--var", f"RUNDIR={os.path.join(top, 'run')}",
            "--var", f"LOGDIR={os.path.join(top, 'log')}"]


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def stop(proc):
    """Stops the rspamd we started: SIGTERM to its main process (which stops
    its workers), SIGKILL after 20 s; then whatever is left of its own
    process group (it was started in a new session, so the group is ours)."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for _ in range(50):
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_mode(a, mode, messages, version):
    top = tempfile.mkdtemp(prefix=f"breakwater-rspamd-{mode}.")
    port = free_port()
    # one cache folder per mode: rspamd removes the files its own
    # configuration does not use when it stops
    hs_cache = os.path.join(a.hs_cache, mode) if a.hs_cache else os.path.join(top, "hs_cache")
    logf = os.path.join(top, "log", "rspamd.log")
    dns = DnsStub()
    out = open(os.path.join(a.workdir, f"rspamd-{mode}.out"), "w")
    proc = conn = None
    try:
        os.makedirs(hs_cache, exist_ok=True)
        argv = write_config(top, mode, port, a.sa_rules, hs_cache, dns.port)
        cmd = ["rspamd", "-f"]
        if os.getuid() == 0:
            # rspamd refuses to run its workers as root: its own user, which
            # must be able to write the instance's folders and the cache
            try:
                pw = pwd.getpwnam("_rspamd")
                for d in (top, hs_cache):
                    for root, dirs, files in os.walk(d):
                        for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                            os.lchown(n, pw.pw_uid, pw.pw_gid)
                cmd += ["-u", "_rspamd", "-g", "_rspamd"]
            except KeyError:
                cmd += ["-i"]
        cmd += argv
        la0 = loadavg()
        t_start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        # ready: the port accepts and the worker loaded its Hyperscan database
        deadline = time.monotonic() + a.ready_timeout
        hs = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rspamd ({mode}) exited with {proc.returncode}; "
                                   f"see rspamd-{mode}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rspamd ({mode}) not ready after {a.ready_timeout} s "
                                   f"(Hyperscan compile?); see rspamd-{mode}.log")
            text = read_log(logf)
            loaded = dict(HS_LOADED.findall(text))
            if "normal" in loaded:
                hs = int(loaded["normal"])
            elif "main" in loaded and HS_COMPILED.search(text):
                hs = int(loaded["main"])
                time.sleep(1.5)               # hs_helper's postponed notice
            if hs is not None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    pass
            time.sleep(0.5)
        startup = time.monotonic() - t_start

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        keepalive = [0, 0]    # responses, responses that keep the connection

        def check(data):
            conn.request("POST", "/checkv2", body=data,
                         headers={"Connection": "keep-alive"})
            r = conn.getresponse()
            body = r.read()
            keepalive[0] += 1
            keepalive[1] += 0 if r.will_close else 1
            if r.status != 200:
                return None
            j = json.loads(body)
            return None if "error" in j or "action" not in j else j

        bodies = []
        for p in messages:
            with open(p, "rb") as f:
                bodies.append(f.read())
        for data in bodies[:a.warmup]:
            try:
                check(data)
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
        log_before = len(read_log(logf))
        dns_before = len(dns.names)
        ok = ok1 = err = size = 0
        actions = {}
        nsym = 0
        pass_rates = []
        t = 0.0
        for p in range(a.passes):
            ok_p = 0
            t0 = time.monotonic()
            for data in bodies:
                try:
                    j = check(data)
                except (OSError, http.client.HTTPException, ValueError):
                    conn.close()
                    j = None
                if j is None:
                    err += 1
                    continue
                ok_p += 1
                if p == 0:
                    ok1 += 1
                    size += len(data)
                    act = j["action"].replace(" ", "_")
                    actions[act] = actions.get(act, 0) + 1
                    nsym += len(j.get("symbols", {}))
            dt = time.monotonic() - t0
            t += dt
            ok += ok_p
            pass_rates.append(ok_p / dt if dt > 0 else 0.0)
        la1 = loadavg()
        time.sleep(0.5)                       # the worker's last log lines
        text = read_log(logf)
        timed_log = text[log_before:]
        dns_req = sum(int(x) for x in DNS_REQ.findall(timed_log))
        asked = dns.names[dns_before:]
        # rspamd's own wall time per message (its task log), median
        task_ms = sorted(float(x) for x in TASK_TIME.findall(timed_log))
        rx = REGEXP_MODULE.search(text)
        compiled = [int(x) for x in HS_COMPILED.findall(text)]
        classes = HS_CLASS.findall(text)
        fields = {
            "mode": mode, "messages": len(bodies), "passes": a.passes,
            "ok": ok, "errors": err,
            "seconds": f"{t:.3f}", "msgps": f"{ok / t:.3f}" if t > 0 else "0",
            "pass_msgps": ",".join(f"{x:.1f}" for x in pass_rates),
            "bytes": size, "version": version, "hs_regexps": hs,
            # on a cold start (nothing in the cache): what hs_helper compiled,
            # the regexps of the compiled classes, and those Hyperscan cannot
            # take as they are (lookarounds...: prefilter + PCRE)
            "hs_compiled": max(compiled) if compiled and max(compiled) else "cached",
            "re_class_regexps": sum(int(n) for n in classes) if classes else "cached",
            "hs_prefilter": len(HS_PREFILTER.findall(text)) if classes else "cached",
            "regexp_module_rules": rx.group(1) if rx else 0,
            "sa_files": len(set(SA_FILE.findall(text))),
            "symbols_per_msg": f"{nsym / ok1:.1f}" if ok1 else "0",
            "task_ms_median": f"{task_ms[len(task_ms) // 2]:.2f}" if task_ms else "?",
            "dns_req": dns_req, "dns_queries": len(asked),
            "dns_queries_total": len(dns.names),
            "warmup": min(a.warmup, len(bodies)),
            "keepalive": f"{keepalive[1]}/{keepalive[0]}",
            "startup_s": f"{startup:.1f}",
            "loadavg_start": la0, "loadavg_end": la1,
        }
        fields.update(sorted(actions.items()))
        print("rspamd " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
    finally:
        if conn is not None:
            conn.close()
        if proc is not None:
            stop(proc)
        dns.close()
        out.close()
        try:
            shutil.copyfile(logf, os.path.join(a.workdir, f"rspamd-{mode}.log"))
        except OSError:
            pass
        if not a.keep:
            shutil.rmtree(top, ignore_errors=True)
        else:
            print(f"rspamd_peer: kept {top}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--truth", help="X.truth.jsonl of a gen-smtp-pcap.py capture")
    ap.add_argument("--root", help="the folder the truth's files are relative to")
    ap.add_argument("--messages", action="append",
                    help="a folder of messages instead of --truth (repeatable)")
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5,
                    help="untimed messages first (the first of the sample)")
    ap.add_argument("--passes", type=int, default=1,
                    help="timed passes over the sample (the same messages again)")
    ap.add_argument("--mode", action="append", choices=["default", "sa", "both"],
                    help="repeatable; default: all three")
    ap.add_argument("--sa-rules", default="/usr/share/spamassassin")
    ap.add_argument("--hs-cache", help="keep rspamd's compiled Hyperscan databases here")
    ap.add_argument("--ready-timeout", type=float, default=900,
                    help="seconds to wait for the worker (cold Hyperscan compile)")
    ap.add_argument("--workdir", default=".", help="rspamd-MODE.{log,out} go here")
    ap.add_argument("--keep", action="store_true", help="keep the instance folders")
    a = ap.parse_args()
    if not a.messages and not (a.truth and a.root):
        ap.error("--truth and --root, or --messages")
    modes = a.mode or ["default", "sa", "both"]
    if not shutil.which("rspamd"):
        print("rspamd skipped: rspamd not installed (Debian package rspamd)")
        return 0
    if not glob.glob(os.path.join(a.sa_rules, "*.cf")):
        for m in modes:
            if m != "default":
                print(f"rspamd mode={m} skipped: no stock SpamAssassin rules in {a.sa_rules}")
        modes = [m for m in modes if m == "default"]
    ver = subprocess.run(["rspamd", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version\s+(\S+)", ver)
    version = m.group(1) if m else "?"
    messages = pick_messages(a)
    if not messages:
        sys.exit("rspamd_peer: no messages")
    os.makedirs(a.workdir, exist_ok=True)
    if a.hs_cache:
        a.hs_cache = os.path.abspath(a.hs_cache)

    def on_term(signum, frame):
        raise SystemExit(f"rspamd_peer: signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    rc = 0
    for mode in modes:
        try:
            run_mode(a, mode, messages, version)
        except RuntimeError as e:
            print(f"rspamd_peer: {e}", file=sys.stderr)
            print(f"rspamd mode={mode} failed")
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
