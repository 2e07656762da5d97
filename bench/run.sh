#!/usr/bin/env bash
# One command for breakwater's benchmark (see bench/README.md).
#
# Builds a release tree of its own, makes the big capture in /tmp if it is not
# there yet, then runs, interleaved, REPEAT times each: the engine on the big
# capture (decode + flow + reassembly), once as a user runs it and once per
# --engine-args variant (default: --no-flows, i.e. without the per-flow JSON
# records), rx_ceiling on the same file (DPDK receive alone, the I/O
# ceiling), memcpy_bench (the memory ceiling); once:
# flow_mem (flow state per flow) and, unless --no-callgrind, callgrind
# instruction counts per packet and per byte on two small captures (their
# difference cancels start-up); unless --no-perf, one more engine run under
# `perf record -e cpu-clock` (software sampling: this VM has no hardware
# counters) for where the time goes. Writes the markdown report to stdout, or
# to bench/REPORT.md with --report.
#
# Usage: bench/run.sh [--report] [--repeat N] [--size 256M] [--concurrency C]
#                     [--source FILE]... [--synth] [--build DIR] [--no-callgrind]
#                     [--engine-args "ARGS"]... [--no-perf] [--keep]
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
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done

log() { echo "bench: $*" >&2; }

# Engine variants: variant 0 is the engine as a user runs it.
[ ${#variants[@]} -eq 0 ] && variants=("--no-flows")
variants=("" "${variants[@]}")

# --- build --------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$root" --buildtype=release >/dev/null
else
  meson configure "$build" -Dbuildtype=release >/dev/null
fi
targets=(engine/breakwater bench/rx_ceiling bench/memcpy_bench bench/flow_mem)
ninja -C "$build" "${targets[@]}" >/dev/null
engine="$build/engine/breakwater"
rx="$build/bench/rx_ceiling"
mcpy="$build/bench/memcpy_bench"
fmem="$build/bench/flow_mem"

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
} >"$res/meta"

# Warm the page cache so the first run does not measure the disk.
cat "$big" >/dev/null

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
  log "round $i/$repeat: memcpy_bench"
  "$mcpy" >"$res/memcpy.$i.out" 2>/dev/null
done

"$fmem" >"$res/flow_mem.out" 2>/dev/null || log "flow_mem failed"

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$res/meta"

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
fi

# --- where the time goes (sampling, on the big capture) ----------------------------
if [ -n "$perf" ] && command -v perf >/dev/null &&
   perf record -q -e cpu-clock -o "$res/perf-probe.data" true >/dev/null 2>&1; then
  # Start sampling after most of the EAL start-up: 80% of (wall - engine
  # time) of round 1.
  delay=$(python3 - "$res" <<'EOF'
import re, sys
d = sys.argv[1]
wall = float(open(f"{d}/engine.1.time").read().split()[-2])
m = re.search(r"([\d.]+)\s*s in the packet loop|over\s+([\d.]+)\s*s",
              open(f"{d}/engine.1.err").read())
print(max(0, int((wall - (float(m.group(1) or m.group(2)) if m else wall)) * 800)))
EOF
  ) || delay=0
  echo "perf_delay_ms=$delay" >>"$res/meta"
  log "perf record: engine (from ${delay} ms)"
  if perf record -q -e cpu-clock -F 5000 -D "$delay" -o "$res/perf.data" \
       "$engine" --pcap "$big" >/dev/null 2>"$res/perf-engine.err"; then
    perf report -i "$res/perf.data" --stdio --no-children --sort dso,symbol \
      2>/dev/null >"$res/perf.txt" || true
    perf report -i "$res/perf.data" --stdio --no-children --sort dso \
      2>/dev/null >"$res/perf-dso.txt" || true
  else
    log "perf record of the engine failed"
  fi
fi

if [ -n "$report" ]; then
  python3 "$here/report.py" "$res" >"$report"
  log "wrote $report"
else
  python3 "$here/report.py" "$res"
fi
