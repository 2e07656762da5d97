#!/usr/bin/env bash
# Set up, build and run every test tier: the README's second command, and
# what CI runs (.ci/run). Needs root for the packages and the inline tier.
#
#   scripts/test.sh            all tiers, then the sanitizer build's unit tier and
#                              the worker-thread tests
#   BW_SUITES="unit" scripts/test.sh   only those suites
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

suites=${BW_SUITES:-"unit pcap inline compat fuzz"}
werror=()
[ -n "${CI:-}" ] && werror=(--werror)

status=0
summary=()
# compiled rule databases go to a cache inside the build, not the user's home
export BW_CACHE_DIR=${BW_CACHE_DIR:-$PWD/build/rules-cache}

run_suites() {   # build dir, label, suites... (or tests by name: =NAME)
	local dir=$1 label=$2
	shift 2
	local args=()
	for s in "$@"; do
		case $s in
		=*) args+=("${s#=}") ;;
		*) args+=(--suite "$s") ;;
		esac
	done
	if meson test -C "$dir" --print-errorlogs --num-processes 2 "${args[@]}"; then :; else status=1; fi
	local log="$dir/meson-logs/testlog.json"
	if [ -f "$log" ]; then
		summary+=("$label: $(python3 - "$log" <<'PY'
import json, sys
ok = fail = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skip += 1
    else: fail += 1
print(f"{ok} passed, {fail} failed, {skip} skipped")
PY
)")
	fi
}

echo "== build (debugoptimized, -Wall -Wextra${werror:+ -Werror})" >&2
if [ ! -f build/build.ninja ]; then
	meson setup build "${werror[@]}" >/dev/null
else
	meson configure build "${werror[@]}" >/dev/null 2>&1 || true
fi
ninja -C build
read -r -a suite_list <<<"$suites"
# only suites that exist in this build
present=()
for s in "${suite_list[@]}"; do
	[ "$s" = fuzz ] && continue   # its own build below
	if meson test -C build --list --suite "$s" >/dev/null 2>&1 &&
	   [ -n "$(meson test -C build --list --suite "$s" 2>/dev/null)" ]; then
		present+=("$s")
	fi
done
if [ ${#present[@]} -gt 0 ]; then
	run_suites build "tests" "${present[@]}"
fi

if [[ " $suites " == *" unit "* ]]; then
	echo "== sanitizer build (ASan + UBSan), unit suite" >&2
	if [ ! -f build-asan/build.ninja ]; then
		meson setup build-asan "${werror[@]}" -Db_sanitize=address,undefined \
			-Db_lundef=false -Dbuildtype=debug >/dev/null
	fi
	ninja -C build-asan
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	run_suites build-asan "sanitizers" unit
	# the worker threads under the sanitizers: every committed capture
	# with 3 workers, and the live runs with 2 (rings, queues, a reload)
	if [[ " ${present[*]} " == *" pcap "* ]]; then
		run_suites build-asan "sanitizers, workers" =workers
	fi
	if [[ " ${present[*]} " == *" inline "* ]]; then
		run_suites build-asan "sanitizers, live workers" =live_iface-workers \
			=live_iface-queues =reload-workers
	fi
fi

if [[ " $suites " == *" fuzz "* ]]; then
	echo "== fuzz build (clang, libFuzzer + ASan + UBSan), fuzz suite" >&2
	if [ ! -f build-fuzz/build.ninja ]; then
		CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
			-Db_lundef=false >/dev/null
	fi
	ninja -C build-fuzz
	run_suites build-fuzz "fuzzers" fuzz
fi

echo >&2
for line in "${summary[@]}"; do echo "$line" >&2; done
# one closing line for CI: the totals of every run above
python3 - "${summary[@]}" <<'PY'
import re, sys
p = f = s = 0
for line in sys.argv[1:]:
    m = re.search(r"(\d+) passed, (\d+) failed, (\d+) skipped", line)
    if m:
        p += int(m[1]); f += int(m[2]); s += int(m[3])
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $status
