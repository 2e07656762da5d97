#!/usr/bin/env bash
# Install what breakwater needs to build and test, from Debian 12's packages.
# Idempotent: packages already present are not reinstalled, apt-get update
# runs only when something is missing. Needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential meson ninja-build pkg-config
  libdpdk-dev dpdk libhyperscan-dev libjemalloc-dev libroaring-dev
  libpcap-dev libpcre2-dev libssl-dev libxxhash-dev
  tshark tcpdump postfix swaks iproute2 ethtool
  clang libclang-rt-14-dev valgrind python3 spamassassin
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present" >&2
  exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix asks how to configure itself; the tests run their own instances.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
