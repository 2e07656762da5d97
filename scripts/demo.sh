#!/usr/bin/env bash
# Set up, build, and run breakwater on a capture bundled in the repository:
# the README's first command. Records go to stdout, the summary to stderr.
#
#   scripts/demo.sh [CAPTURE]   (default: tests/pcap/postfix-relay/capture.pcap)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if [ ! -f build/build.ninja ]; then
	meson setup build >/dev/null
fi
ninja -C build >/dev/null
capture=${1:-tests/pcap/postfix-relay/capture.pcap}
echo "== breakwater --pcap $capture" >&2
exec build/engine/breakwater --pcap "$capture"
