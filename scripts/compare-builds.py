#!/usr/bin/env python3
"""Do two breakwater binaries say the same thing? (a refactor's proof)

    scripts/compare-builds.py OLD NEW [CAPTURE...] [--modes w1,w3,replay2,flows]
                              [--cases DIR] [--only TEXT] [--rules-dir DIR] [--keep DIR]
                              [--accept KEY]...
    scripts/compare-builds.py OLD NEW --callgrind [--cg-captures SMALL LARGE]
                              [--messages DIR... | --synth] [--cg-repeat 3]

Runs both binaries, one run at a time, on every pcap case (every *.pcap in
each folder of tests/pcap/, or --cases DIR) and on each extra CAPTURE (the
bench's big captures), and compares what they write. Needs root (DPDK EAL).

Rule sets per case, the ones tests/pcap/*_check.py use: every *.cf in the
case's folder (`--rules CASE/rules.cf`, also storm-flood's signals.cf), the
default rules (rules/) and --no-rules. storm-basic has rules and no capture:
its rules.cf is run on smtp-source-sessions' capture, as storm_check.py does.
Extra CAPTUREs run with the default rules only (as bench/run.sh does).
Both binaries get BW_RULES_DIR = this tree's rules/ (or --rules-dir), so the
default rules are the same files whichever tree a binary was built in, and a
BW_CACHE_DIR of their own in a temporary folder (no write to $HOME; neither
binary ever loads the other's compiled cache).

Modes (each run adds `-q --summary-json FILE`, records on stdout to a file):

  w1       --workers 1                 records byte for byte, in order
  w3       --workers 3                 records sorted first: different workers'
                                       records interleave in any order
  replay2  --replay 2                  records byte for byte, in order
  flows    --workers 1 --flows         records (flow records too) byte for byte

What may differ (everything else must be equal):

- Records: nothing, except in w3 with rules loaded: README's --workers row
  and tests/pcap/workers_check.py allow the order in which workers reach the
  shared storm tracker to change a behaviour hit's value, and so the score
  and the action, and the moment a storm event fires. There the comparison
  falls back to workers_check.py's: transaction records without score,
  action and behaviour hits (hits with a "value", and hits of metas over a
  track rule, read from the rule files and passed to its behaviour_free():
  such a meta hits when its behaviour rules do, so with storm-burst's
  rules.cf B_DICT_ATTACK comes and goes between runs of one binary; other
  hits compared); storm records without ts, value, num, den, first_seen,
  last_seen (rule, dir, per, key, window_s compared); flow records whole.
  The line says when that fallback was needed. Without rules, w3 records
  must be equal once sorted.
- Summary (--summary-json), IGNORED in every mode, being times or rates of
  time, which differ from run to run of one binary:
    wall_s, loop_s, loop_cpu_s             wall, packet loop and CPU seconds
    gbit_s, mpps, messages_per_s           rates over loop_s
    ns_per_packet, ns_per_message          loop_s divided by a count
    worker_wait_s.*                        seconds each worker waited
    replay.load_s, replay.rewrite_s,       replay: loading the capture, the
    replay.pass_s.*, replay.finish_s       address rewrite, each pass, the flush
    stages.*                               only with --stage-times (never passed
                                           here): TSC rate and clock figures
- Summary, NOT JUDGED, shown as a note on the line (outside w3): memory
  figures, memory_bytes, flow_memory_peak_bytes, replay.pool_bytes: a
  restructure may rightly change the size of its structures; the issue asks
  for equal counters. They are the same from run to run of one binary with
  one worker, so a change is real and worth a look.
- Summary, w3 only (workers_check.py's allowances): flows.peak and
  reassembly.out_of_order_peak_bytes (workers' peaks are summed, an upper
  bound that changes from run to run: flows.peak on storm-flood does), the
  memory figures (they change from run to run too: not even shown); with
  rules also verdicts.pass, .tag, .block, .other and .behaviour_hits (what
  behaviour-hit values, scores and actions add up to). worker_frames is
  compared: the buckets of flows are fixed at start.
- A key the summary writes twice is compared at both places ("workers",
  "workers#2"); key order is not compared. (Builds from before issue 13's summary
  fix wrote "workers" twice, a 1 and then the count: against those, give
  --accept workers --accept workers#2.)
- --accept KEY: a summary key the new build changes on purpose; its
  difference is shown as a note on the line and does not count.

Prints one line per (capture, rules, mode): `same` or `DIFFERENT` with the
first differing record line (and its first differing field) or summary key,
then `N same, M different`. A run that fails (exit status not 0) counts as
different. Exit status: 0 when all are the same, 1 otherwise, 2 on usage.

To prove the comparison can fail, BW_COMPARE_NEW_ARGS (BW_COMPARE_OLD_ARGS)
adds arguments to every run of that side only, e.g.
BW_COMPARE_NEW_ARGS="--max-flows 2"; the output says so at the top.

--callgrind measures instead the engine's instructions per byte for both
binaries the way bench/run.sh and bench/report.py do ("Instructions with
parsing"): two captures made by gen-smtp-pcap.py with run.sh's arguments
(--seed 1, the SpamAssassin corpus it fetches, or --synth --synth-count 2000
as run.sh --parse-synth; sizes 2M and 6M; or --cg-captures SMALL LARGE),
`BINARY --pcap CAPTURE` (rules/, records to /dev/null) under
`valgrind --tool=callgrind`, after one run under valgrind that fills the
side's rule cache for valgrind's CPU (the cache is keyed on the CPU features:
warmed natively, the first callgrind run would compile);
Ir/byte = (Ir(large) - Ir(small)) / (frame bytes(large) - frame bytes(small)),
so start-up cancels. --cg-repeat rounds (3), old and new in turn, and the
least total of each capture is used: here a run's start-up takes about 2.3
million more instructions (more dlopen and libcrypto work) while another
breakwater runs on the machine, which does not cancel when only one of the
two runs meets it; extra work only adds, so the least is the count. Beyond
that, totals move by 0.1 to 0.5 million between runs (up to ~0.1 Ir/byte:
printed as "rounds differ by"), the resolution of the ratio.
Prints every round, and Ir/byte old, new and their ratio (new / old).
"""
import argparse
import collections
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests", "pcap"))
from reportlib import callgrind_total, pcap_counts  # noqa: E402
from workers_check import behaviour_free  # noqa: E402

MODES = {
    "w1": ["--workers", "1"],
    "w3": ["--workers", "3"],
    "replay2": ["--replay", "2"],
    "flows": ["--workers", "1", "--flows"],
}
MODE_LABEL = {"w1": "w1", "w3": "w3 sorted", "replay2": "replay2", "flows": "flows"}

# Case folders with rules and no capture: whose capture their checker uses.
BORROWED = {"storm-basic": "smtp-source-sessions/capture.pcap"}   # storm_check.py

# Summary keys never compared (times, see the docstring); a key matches an
# entry equal to it or starting with it and a dot.
IGNORED = ("wall_s", "loop_s", "loop_cpu_s", "gbit_s", "mpps", "messages_per_s",
           "ns_per_packet", "ns_per_message", "worker_wait_s", "replay.load_s",
           "replay.rewrite_s", "replay.pass_s", "replay.finish_s", "stages")
MEMORY = ("memory_bytes", "flow_memory_peak_bytes", "replay.pool_bytes")
W3_PEAKS = ("flows.peak", "reassembly.out_of_order_peak_bytes")
W3_VERDICTS = ("verdicts.pass", "verdicts.tag", "verdicts.block", "verdicts.other",
               "verdicts.behaviour_hits")
# Storm record fields that depend on when a worker reached the tracker.
STORM_TIMING = ("ts", "value", "num", "den", "first_seen", "last_seen")


def matches(key, names):
    return any(key == n or key.startswith(n + ".") for n in names)


def load_summary(path):
    """The summary JSON flattened to {dotted.key: value}; list items by index;
    a key repeated in one object gets '#2', '#3'... so neither copy is lost."""
    def pairs(items):
        seen = collections.Counter()
        out = {}
        for k, v in items:
            seen[k] += 1
            out[k if seen[k] == 1 else "%s#%d" % (k, seen[k])] = v
        return out

    def flat(v, prefix, out):
        if isinstance(v, dict):
            for k, x in v.items():
                flat(x, prefix + k + ".", out)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                flat(x, prefix + str(i) + ".", out)
        else:
            out[prefix[:-1]] = v
        return out

    with open(path) as f:
        return flat(json.load(f, object_pairs_hook=pairs), "", {})


def compare_summaries(a, b, mode, rules, accept=()):
    """(first difference or None, [memory notes], [w3 allowances used]).
    Keys in accept (--accept) differ on purpose: shown as a note."""
    notes, allowed = [], []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if va == vb or matches(k, IGNORED):
            continue
        if k in accept:
            notes.append("accepted %s %s -> %s" % (k, va, vb))
            continue
        if matches(k, MEMORY):
            if mode != "w3":
                notes.append("%s %s -> %s" % (k, va, vb))
            continue
        if mode == "w3" and (matches(k, W3_PEAKS) or (rules and matches(k, W3_VERDICTS))):
            allowed.append(k)
            continue
        return "summary %s: old %s, new %s" % (k, va, vb), notes, allowed
    return None, notes, allowed


def first_field(la, lb):
    """The first field where two record lines differ, or ''."""
    try:
        ja, jb = json.loads(la), json.loads(lb)
    except ValueError:
        return ""
    if not isinstance(ja, dict) or not isinstance(jb, dict):
        return ""
    for k in list(ja) + [k for k in jb if k not in ja]:
        if ja.get(k, "<absent>") != jb.get(k, "<absent>"):
            return " (field %s: old %s, new %s)" % (k, short(json.dumps(ja.get(k, "<absent>"))),
                                                   short(json.dumps(jb.get(k, "<absent>"))))
    if list(ja) != list(jb):
        return " (field order)"
    return ""


def short(s, n=160):
    return s if len(s) <= n else s[:n] + "..."


def first_line_diff(la, lb, what):
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return "%s line %d differs%s: old %s / new %s" % (
                what, i + 1, first_field(x, y), short(x), short(y))
    if len(la) != len(lb):
        i = min(len(la), len(lb))
        extra = la[i] if len(la) > len(lb) else lb[i]
        return "%s: old %d lines, new %d; first extra (line %d, %s): %s" % (
            what, len(la), len(lb), i + 1, "old" if len(la) > len(lb) else "new", short(extra))
    return None


def identity(line):
    """What names a record whatever its content: a transaction by its flow
    and index, a flow by its id, a storm event by rule, key and direction."""
    try:
        r = json.loads(line)
    except ValueError:
        return line
    if not isinstance(r, dict):
        return line
    return (r.get("event"), r.get("flow_id"), r.get("tx"), r.get("rule"), r.get("key"),
            r.get("dir"))


def multiset_diff(la, lb, what):
    """The first line only old has and the first only new has (sorted lists
    misalign after one difference, so line numbers would say nothing)."""
    ca, cb = collections.Counter(la), collections.Counter(lb)
    oa, ob = sorted(ca - cb), sorted(cb - ca)
    if not oa and not ob:
        return None
    msg = "%s: %d only in old, %d only in new" % (what, sum((ca - cb).values()),
                                                  sum((cb - ca).values()))
    if oa and ob:
        # the same record on both sides, by its identity, else the first of each
        ids = {}
        for line in ob:
            ids.setdefault(identity(line), line)
        pair = next(((x, ids[identity(x)]) for x in oa if identity(x) in ids), (oa[0], ob[0]))
        oa[0], ob[0] = pair
        msg += "; %s%s" % ("same record" if identity(pair[0]) == identity(pair[1])
                           else "first of each", first_field(*pair) or " differs")
    if oa:
        msg += "; old: " + short(oa[0])
    if ob:
        msg += "; new: " + short(ob[0])
    return msg


def behaviour_rules(path):
    """The names of the track rules in a rule file or folder (its *.cf) and of
    the metas that depend on one, however deeply: whether such a rule hits
    follows from behaviour-hit values, so it may differ with workers too."""
    files = sorted(glob.glob(os.path.join(path, "*.cf"))) if os.path.isdir(path) else [path]
    tracks, metas = set(), {}
    for fn in files:
        with open(fn, errors="replace") as f:
            for line in f:
                tok = line.split(None, 2)
                if len(tok) >= 2 and tok[0] == "track":
                    tracks.add(tok[1])
                elif len(tok) == 3 and tok[0] == "meta":
                    metas[tok[1]] = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", tok[2]))
    out, grew = set(tracks), True
    while grew:
        grew = False
        for name, deps in metas.items():
            if name not in out and deps & out:
                out.add(name)
                grew = True
    return out


def workers_free(line, brules):
    """A record without what the workers' order at the storm tracker may change
    (workers_check.py's allowance), as canonical JSON."""
    r = json.loads(line)
    if r.get("event") == "smtp":
        r = behaviour_free(r, brules)
    elif r.get("event") == "storm":
        r = {k: v for k, v in r.items() if k not in STORM_TIMING}
    return json.dumps(r, sort_keys=True)


def compare_records(a, b, mode, rules, brules):
    """(first difference or None, number of records that needed the workers
    allowance). a, b: the stdout bytes of the two runs."""
    if a == b:
        return None, 0
    la, lb = a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines()
    if mode != "w3":
        return first_line_diff(la, lb, "record") or "records differ (bytes)", 0
    sa, sb = sorted(la), sorted(lb)
    if sa == sb:
        return None, 0
    if not rules:
        return multiset_diff(sa, sb, "sorted records"), 0
    fa = sorted(workers_free(x, brules) for x in la)
    fb = sorted(workers_free(x, brules) for x in lb)
    if fa != fb:
        return multiset_diff(fa, fb, "sorted records (behaviour values, score, action, "
                             "storm timing left out)"), 0
    return None, sum((collections.Counter(sa) - collections.Counter(sb)).values())


class Runner:
    def __init__(self, args, tmp):
        self.tmp = tmp
        self.timeout = args.timeout
        self.rules_dir = args.rules_dir
        self.sides = {}
        for side, binary in (("old", args.old), ("new", args.new)):
            cache = os.path.join(tmp, "cache-" + side)
            os.makedirs(cache)
            extra = shlex.split(os.environ.get("BW_COMPARE_%s_ARGS" % side.upper(), ""))
            self.sides[side] = (os.path.abspath(binary), cache, extra)

    def env(self, side):
        e = dict(os.environ)
        e["BW_CACHE_DIR"] = self.sides[side][1]
        e["BW_RULES_DIR"] = self.rules_dir
        return e

    def run(self, side, argv, tag):
        """Runs one side; (exit status, stdout bytes, summary or None, stderr)."""
        binary, _cache, extra = self.sides[side]
        out = os.path.join(self.tmp, "%s-%s.out" % (tag, side))
        summ = os.path.join(self.tmp, "%s-%s.json" % (tag, side))
        with open(out, "wb") as fo:
            try:
                p = subprocess.run([binary] + argv + extra + ["-q", "--summary-json", summ],
                                   stdout=fo, stderr=subprocess.PIPE, env=self.env(side),
                                   timeout=self.timeout)
                rc, err = p.returncode, p.stderr.decode(errors="replace")
            except subprocess.TimeoutExpired:
                rc, err = -1, "timed out after %d s" % self.timeout
        with open(out, "rb") as f:
            data = f.read()
        summary = None
        if rc == 0:
            try:
                summary = load_summary(summ)
            except (OSError, ValueError) as e:
                rc, err = -2, "summary JSON unreadable: %s" % e
        for p in (out, summ):
            if os.path.exists(p):
                os.unlink(p)
        return rc, data, summary, err


def jobs(args):
    """(capture, rules label, rules argv) to compare, in a stable order, plus
    the configuration errors to report as differences."""
    out, errors = [], []
    cases = sorted(d for d in glob.glob(os.path.join(args.cases, "*")) if os.path.isdir(d))
    for d in cases:
        name = os.path.basename(d)
        caps = sorted(glob.glob(os.path.join(d, "*.pcap")))
        cfs = sorted(glob.glob(os.path.join(d, "*.cf")))
        if not caps and cfs:
            if name in BORROWED and os.path.exists(os.path.join(args.cases, BORROWED[name])):
                for cf in cfs:
                    out.append((os.path.join(args.cases, BORROWED[name]),
                                os.path.relpath(cf, ROOT), ["--rules", cf]))
            else:
                errors.append("%s: rule files and no capture, and no capture known to "
                              "borrow (BORROWED in %s)" % (d, os.path.basename(__file__)))
            continue
        for cap in caps:
            for cf in cfs:
                out.append((cap, os.path.relpath(cf, ROOT), ["--rules", cf]))
            out.append((cap, "rules/", []))
            out.append((cap, "no-rules", ["--no-rules"]))
    for cap in args.captures:
        out.append((cap, "rules/", []))
    if args.only:
        out = [j for j in out if args.only in j[0] or args.only in j[1]]
    return out, errors


def compare(args):
    tmp = tempfile.mkdtemp(prefix="bw-compare-", dir=args.keep)
    runner = Runner(args, tmp)
    same = diff = 0
    for side in ("old", "new"):
        if runner.sides[side][2]:
            print("NOTE: the %s side runs with extra arguments %s (BW_COMPARE_%s_ARGS)" %
                  (side.upper(), runner.sides[side][2], side.upper()))
    print("old: %s\nnew: %s\nrules/: %s" % (runner.sides["old"][0], runner.sides["new"][0],
                                            args.rules_dir))
    todo, errors = jobs(args)
    for e in errors:
        print("DIFFERENT  %s" % e)
        diff += 1
    modes = args.modes.split(",")
    brules = {}      # rule file or folder -> its behaviour-derived rule names
    n = 0
    try:
        for cap, rlabel, rargs in todo:
            shown = os.path.relpath(cap, ROOT) if cap.startswith(ROOT + os.sep) else cap
            for mode in modes:
                n += 1
                argv = ["--pcap", cap] + rargs + MODES[mode]
                tag = "%04d" % n
                ra = runner.run("old", argv, tag)
                rb = runner.run("new", argv, tag)
                rules = rlabel != "no-rules"
                rfile = rargs[1] if rargs[:1] == ["--rules"] else args.rules_dir
                what, notes = None, []
                if ra[0] != 0 or rb[0] != 0:
                    what = "exit status old %d, new %d: %s" % (
                        ra[0], rb[0], short(" ".join((ra[3] if ra[0] else rb[3]).split()[-40:]), 300))
                else:
                    if mode == "w3" and rules and rfile not in brules:
                        brules[rfile] = behaviour_rules(rfile)
                    what, loose = compare_records(ra[1], rb[1], mode, rules,
                                                  brules.get(rfile, ()))
                    nrec = ra[1].count(b"\n")
                    if not what:
                        what, notes, allowed = compare_summaries(ra[2], rb[2], mode, rules,
                                                                 args.accept)
                        if loose:
                            notes.append("%d records differ only where workers may "
                                         "(behaviour values, score, action, storm timing)" % loose)
                        if allowed:
                            notes.append("workers allowance on " + ", ".join(allowed))
                line = "%-10s %-9s %s [%s]" % ("DIFFERENT" if what else "same",
                                               MODE_LABEL[mode], shown, rlabel)
                if what:
                    diff += 1
                    line += ": " + what
                else:
                    same += 1
                    line += " %d records" % nrec
                    if notes:
                        line += "; note: " + "; ".join(notes)
                print(line, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d same, %d different" % (same, diff))
    return 1 if diff else 0


# --- callgrind ---------------------------------------------------------------

def make_cg_captures(args, tmp):
    """The two gen-smtp-pcap.py captures of bench/run.sh's callgrind rows with
    parsing (its pgen_args, sizes 2M and 6M); returns (paths, description)."""
    gen = os.path.join(ROOT, "bench", "gen-smtp-pcap.py")
    gargs = ["--seed", "1"]
    if args.synth:
        gargs += ["--synth", "--synth-count", "2000"]
        what = "--synth --synth-count 2000"
    else:
        dirs = args.messages
        if not dirs:
            p = subprocess.run([sys.executable, gen, "--fetch-only"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                sys.exit("compare-builds: no corpus (%s); use --synth or --messages DIR" %
                         p.stderr.strip().splitlines()[-1:])
            dirs = p.stdout.split()
        gargs += ["--messages"] + dirs
        what = "--messages " + " ".join(os.path.basename(d) for d in dirs)
    caps = []
    for s, size in ((1, "2M"), (2, "6M")):
        cap = os.path.join(tmp, "smtp-small%d.pcap" % s)
        subprocess.run([sys.executable, gen, "-o", cap, "--truth", cap[:-5] + ".truth.jsonl",
                        "--size", size] + gargs, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        caps.append(cap)
    return caps, "gen-smtp-pcap.py --seed 1 %s, --size 2M and 6M" % what


def callgrind(args):
    if not shutil.which("valgrind"):
        sys.exit("compare-builds: valgrind is not installed")
    tmp = tempfile.mkdtemp(prefix="bw-compare-cg-", dir=args.keep)
    runner = Runner(args, tmp)
    try:
        if args.cg_captures:
            caps, what = args.cg_captures, "given captures"
        else:
            caps, what = make_cg_captures(args, tmp)
        counts = [pcap_counts(c) for c in caps]
        if None in counts or counts[1][1] <= counts[0][1]:
            sys.exit("compare-builds: the second capture must be larger than the first")
        dp, db = counts[1][0] - counts[0][0], counts[1][1] - counts[0][1]
        print("captures (%s): %s packets / %s bytes and %s / %s" %
              (what, counts[0][0], counts[0][1], counts[1][0], counts[1][1]))
        print("engine: BINARY --pcap CAPTURE (rules/ %s), under valgrind --tool=callgrind" %
              args.rules_dir)
        for side in ("old", "new"):
            binary, _cache, extra = runner.sides[side]
            # Warm the rule cache, under valgrind: the cache is keyed on the
            # CPU features Hyperscan sees, and valgrind's CPU is not the host's.
            # A cold first run would compile under callgrind and start-up would
            # no longer cancel between the two captures.
            subprocess.run(["valgrind", "--tool=none", binary, "--pcap", caps[0], "-q"] + extra,
                           env=runner.env(side), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
        totals = {"old": ([], []), "new": ([], [])}   # side -> (small's, large's)
        for rep in range(args.cg_repeat):
            for side in ("old", "new"):          # interleaved, round by round
                binary, _cache, extra = runner.sides[side]
                for i, cap in enumerate(caps):
                    cg = os.path.join(tmp, "cg-%s-%d-%d.out" % (side, rep + 1, i + 1))
                    p = subprocess.run(["valgrind", "--tool=callgrind",
                                        "--callgrind-out-file=" + cg, binary, "--pcap", cap]
                                       + extra, env=runner.env(side), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
                    total = None
                    if os.path.exists(cg):
                        with open(cg) as f:
                            total = callgrind_total(f.read())
                    if p.returncode != 0 or total is None:
                        sys.exit("compare-builds: callgrind run of %s on %s failed: %s" %
                                 (side, cap, p.stderr[-500:]))
                    totals[side][i].append(total)
                print("round %d %s: Ir %d and %d" % (rep + 1, side, totals[side][0][-1],
                                                     totals[side][1][-1]), flush=True)
        per_byte = {}
        for side in ("old", "new"):
            small, large = min(totals[side][0]), min(totals[side][1])
            if large <= small:
                sys.exit("compare-builds: %s: %d instructions on the small capture, %d on "
                         "the large: start-up did not cancel" % (side, small, large))
            per_byte[side] = (large - small) / db
            spread = max(max(t) - min(t) for t in totals[side])
            print("%s: least Ir %d and %d: %.3f Ir/byte, %.0f Ir/packet (rounds differ by "
                  "up to %d Ir, %.3f Ir/byte)" %
                  (side, small, large, per_byte[side], (large - small) / dp, spread,
                   spread / db))
        print("Ir/byte old %.3f, new %.3f, ratio %.4f" %
              (per_byte["old"], per_byte["new"], per_byte["new"] / per_byte["old"]))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("captures", nargs="*", help="extra captures, run with rules/")
    ap.add_argument("--modes", default="w1,w3,replay2,flows")
    ap.add_argument("--cases", default=os.path.join(ROOT, "tests", "pcap"))
    ap.add_argument("--only", help="only captures or rule files whose path contains this")
    ap.add_argument("--rules-dir", default=os.path.join(ROOT, "rules"))
    ap.add_argument("--keep", help="make the temporary folder in DIR and keep it")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per run")
    ap.add_argument("--accept", action="append", default=[], metavar="KEY",
                    help="a summary key the new build changes on purpose (flattened, "
                         "e.g. workers#2): its difference is a note, not a failure")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--cg-captures", nargs=2, metavar=("SMALL", "LARGE"))
    ap.add_argument("--messages", nargs="+", help="message folders for the callgrind captures")
    ap.add_argument("--synth", action="store_true", help="generated messages (callgrind)")
    ap.add_argument("--cg-repeat", type=int, default=3,
                    help="callgrind rounds per binary; each capture's least total is used")
    args = ap.parse_args()
    for m in args.modes.split(","):
        if m not in MODES:
            ap.error("unknown mode %s (modes: %s)" % (m, ",".join(MODES)))
    for b in (args.old, args.new):
        if not os.access(b, os.X_OK):
            ap.error("%s is not an executable" % b)
    for c in args.captures + (args.cg_captures or []):
        if not os.path.isfile(c):
            ap.error("%s: no such capture" % c)
    args.captures = [os.path.abspath(c) for c in args.captures]
    args.rules_dir = os.path.abspath(args.rules_dir)
    args.cases = os.path.abspath(args.cases)
    if os.geteuid() != 0:
        print("compare-builds: needs root (DPDK EAL)", file=sys.stderr)
        return 2
    return callgrind(args) if args.callgrind else compare(args)


if __name__ == "__main__":
    sys.exit(main())
