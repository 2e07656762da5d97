#!/usr/bin/env bash
# Re-create every committed capture under tests/pcap/ from scratch.
#
#   scripts/make-captures.sh            # all cases
#   scripts/make-captures.sh CASE...    # only these cases (folder names)
#
# Every capture is real traffic between real programs (Postfix's smtp-source,
# smtp-sink, smtpd and smtp client; swaks), recorded with tcpdump inside two
# network namespaces joined by a veth pair. Nothing touches the host's own
# network: the namespaces use 198.18.0.0/15 (benchmarking range) and the ULA
# prefix fd00:198:18::/64, and no interface is left in the root namespace.
# Checksum offload, TSO, GSO and GRO are off on both veth ends, so checksums
# in the captures are correct and segments are MTU-sized like on a wire.
#
# The link-type variants (DLT_NULL, 802.1Q, QinQ) are rewritten from an
# Ethernet capture by tests/pcap/relink.py; the mangled capture is made by
# tests/pcap/mangle.py with a fixed seed from a real capture, which also
# writes its expected output. Captures differ from run to run (timestamps,
# ports, sequence numbers); the checks never depend on those.
#
# Needs root, tcpdump, postfix (smtp-source, smtp-sink, postfix), swaks,
# iproute2, ethtool, openssl, python3. Everything it starts stops by itself
# (timeouts) and is stopped by PID on exit; the namespaces are removed.
# KEEP_WORK=1 keeps the scratch directory (Postfix configs and logs) for a look.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PCAPS=$ROOT/tests/pcap
NS_C=${BWCAP_NS_C:-bwcap-cli}   # overridable, so two runs on one host do not collide
NS_S=${BWCAP_NS_S:-bwcap-srv}
IF_C=bwcap-c0
IF_S=bwcap-s0
V4_C=198.18.0.1
V4_S=198.18.0.2
V6_C=fd00:198:18::1
V6_S=fd00:198:18::2

[ "$(id -u)" -eq 0 ] || { echo "make-captures: needs root (network namespaces)" >&2; exit 1; }
for t in tcpdump smtp-source smtp-sink swaks postfix ip ethtool openssl python3; do
  command -v "$t" >/dev/null || { echo "make-captures: $t not found (scripts/setup.sh)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/bwcap.XXXXXX)
chmod 755 "$WORK"
PIDS=()          # background processes this script started
PF_PIDS=()       # PIDs of the Postfix masters this script started

log() { echo "make-captures: $*" >&2; }

stop_pid() {     # stop one process we started, by PID, and reap it
  local p=$1
  kill "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

cleanup() {
  local p d
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  for p in "${PF_PIDS[@]}"; do   # a Postfix master we started, still running
    pf_alive "$p" && kill "$p" 2>/dev/null || true
  done
  ip netns del "$NS_C" 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- network -----------------------------------------------------------------

net_up() {       # fresh namespaces and veth for one case
  net_down
  ip netns add "$NS_C"
  ip netns add "$NS_S"
  ip link add "$IF_C" netns "$NS_C" type veth peer name "$IF_S" netns "$NS_S"
  local ns dev a4 a6
  for ns in "$NS_C" "$NS_S"; do
    if [ "$ns" = "$NS_C" ]; then dev=$IF_C a4=$V4_C a6=$V6_C; else dev=$IF_S a4=$V4_S a6=$V6_S; fi
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$a4/24" dev "$dev"
    ip -n "$ns" addr add "$a6/64" dev "$dev" nodad
    ip netns exec "$ns" ethtool -K "$dev" tx off tso off gso off gro off >/dev/null 2>&1 || true
    ip -n "$ns" link set "$dev" up
  done
}

net_down() {
  ip netns del "$NS_C" 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
}

wait_listen() {  # NS PORT: wait until something listens on PORT in NS
  local i
  for i in $(seq 1 100); do
    ip netns exec "$1" ss -Hltn "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  log "nothing listens on port $2 in $1"; return 1
}

# --- capture -----------------------------------------------------------------

TD_PID=
cap_start() {    # OUTFILE [tcpdump args...]: record on the server's veth
  local out=$1; shift
  local args=(-i "$IF_S")
  [ $# -gt 0 ] && args=("$@")
  : > "$WORK/tcpdump.err"
  ip netns exec "$NS_S" timeout 120 tcpdump -Z root -U -n -s 0 "${args[@]}" -w "$out" \
    2>"$WORK/tcpdump.err" &
  TD_PID=$!; PIDS+=("$TD_PID")
  local i
  for i in $(seq 1 100); do
    grep -q 'listening on' "$WORK/tcpdump.err" && return 0
    sleep 0.1
  done
  log "tcpdump did not start: $(cat "$WORK/tcpdump.err")"; return 1
}

cap_stop() {     # let FINs and last ACKs land, then stop tcpdump
  sleep 1
  kill -INT "$TD_PID" 2>/dev/null || true
  wait "$TD_PID" 2>/dev/null || true
  grep -E 'packets (captured|dropped by kernel)' "$WORK/tcpdump.err" | tr '\n' ' ' >&2; echo >&2
  TD_PID=
}

# --- servers -----------------------------------------------------------------

SINK_PID=
sink_start() {   # PORT [smtp-sink options...]: smtp-sink on SINK_HOST (default: all IPv4)
  local port=$1; shift
  ip netns exec "$NS_S" timeout 60 smtp-sink -u nobody -h sink.example.test "$@" \
    "${SINK_HOST:-}:$port" 64 >"$WORK/sink.log" 2>&1 &
  SINK_PID=$!; PIDS+=("$SINK_PID")
  wait_listen "$NS_S" "$port"
}

sink_stop() { stop_pid "$SINK_PID"; SINK_PID=; }

# A private Postfix instance: its own config, queue and data directories under
# $WORK, no chroot, logging to a file. NAME selects the role:
#   sink   smtpd on V4_S/V6_S ports 25, 465 (wrapper mode) and 587 (AUTH
#          PLAIN/LOGIN through tests/pcap/sasl_stub.py), STARTTLS with a
#          self-signed certificate, PIPELINING and CHUNKING, rejects recipients whose local part starts with "bad",
#          delivers everything to the discard transport.
#   relay  smtpd on 127.0.0.1:25 (injection, not on the captured veth), relays
#          everything to [V4_S]:25 with the Postfix smtp client, caching the
#          connection so several transactions share one session.
pf_start() {     # NAME NS
  local name=$1 ns=$2 d=$WORK/pf-$1
  mkdir -p "$d/etc" "$d/queue" "$d/data"
  chown postfix "$d/data"
  sed -E 's/^([a-z]+ +(inet|unix|unix-dgram|fifo|pass) +[-yn] +[-yn] +)y /\1n /' \
    /etc/postfix/master.cf > "$d/etc/master.cf"
  cat > "$d/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
maillog_file_prefixes = $WORK
biff = no
append_dot_mydomain = no
smtputf8_enable = no
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_protocols = all
smtpd_banner = \$myhostname ESMTP Postfix
EOF
  if [ "$name" = sink ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=sink.example.test \
      -keyout "$d/etc/key.pem" -out "$d/etc/cert.pem" 2>/dev/null
    cat >> "$d/etc/main.cf" <<EOF
myhostname = sink.example.test
inet_interfaces = $V4_S, $V6_S
mynetworks = 198.18.0.0/15, [fd00:198:18::]/64
relay_domains =
default_transport = discard:
relay_transport = discard:
smtpd_tls_security_level = may
smtpd_tls_cert_file = $d/etc/cert.pem
smtpd_tls_key_file = $d/etc/key.pem
smtpd_recipient_restrictions = check_recipient_access regexp:$d/etc/rcpt.re, permit_mynetworks, reject
EOF
    # "bad..." (also "1bad...", smtp-source's numbered recipients): 554 5.1.1
    # (access_map_reject_code); "unknown-...": 550 5.1.1 as for an unknown
    # virtual mailbox; "full@...": 452 over quota, as a mailbox store answers it.
    printf '%s\n' '/^[0-9]*bad/ REJECT 5.1.1 User unknown in virtual mailbox table' \
      '/^unknown-/ 550 5.1.1 User unknown in virtual mailbox table' \
      '/^full@/ 452 4.2.2 Mailbox full' > "$d/etc/rcpt.re"
    cat >> "$d/etc/master.cf" <<EOF
465       inet  n       -       n       -       -       smtpd
  -o smtpd_tls_wrappermode=yes
587       inet  n       -       n       -       -       smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=private/auth
EOF
  elif [ "$name" = loop-a ] || [ "$name" = loop-b ]; then
    # Two of these relay loop.example.test to each other: a forwarding loop
    # that runs until the hop limit (Received count) bounces the message.
    # Injection on 127.0.0.1 (not captured); bounces are discarded locally.
    local me=$V4_C peer=$V4_S
    [ "$name" = loop-b ] && me=$V4_S peer=$V4_C
    cat >> "$d/etc/main.cf" <<EOF
myhostname = $name.example.test
inet_interfaces = 127.0.0.1, $me
inet_protocols = ipv4
mynetworks = 127.0.0.0/8, 198.18.0.0/15
relay_domains = loop.example.test
transport_maps = inline:{loop.example.test=smtp:[$peer]:25}
default_transport = discard:
smtp_bind_address = $me
smtp_tls_security_level = none
hopcount_limit = ${LOOP_HOPS:-30}
EOF
  else
    cat >> "$d/etc/main.cf" <<EOF
myhostname = relay.example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [$V4_S]:25
smtp_bind_address = $V4_C
smtp_tls_security_level = none
smtp_connection_cache_destinations = $V4_S, [$V4_S], [$V4_S]:25
smtp_connection_reuse_time_limit = 60s
defer_transports = smtp
smtp_connection_cache_time_limit = 30s
smtp_destination_recipient_limit = 50
smtp_destination_concurrency_limit = 1
initial_destination_concurrency = 1
EOF
  fi
  ip netns exec "$ns" postfix -c "$d/etc" check >/dev/null 2>&1 || true
  ip netns exec "$ns" postfix -c "$d/etc" start >/dev/null 2>&1 ||
    { log "postfix $name did not start"; cat "$d/maillog" >&2 2>/dev/null; return 1; }
  PF_PIDS+=("$(tr -dc 0-9 < "$d/queue/pid/master.pid")")
  if [ "$name" = sink ]; then wait_listen "$ns" 25; else wait_listen "$ns" 25; fi
}

pf_alive() {     # PID: is it still a Postfix master (the pid file outlives it)?
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = master ]
}

pf_stop() {      # NAME NS
  local pid i
  pid=$(tr -dc 0-9 < "$WORK/pf-$1/queue/pid/master.pid" 2>/dev/null || true)
  ip netns exec "$2" postfix -c "$WORK/pf-$1/etc" stop >/dev/null 2>&1 || true
  for i in $(seq 1 50); do
    pf_alive "$pid" || return 0
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
}

pf_release() {   # NAME NS: let the relay deliver what it holds (defer_transports)
  local d=$WORK/pf-$1/etc
  postconf -c "$d" -e 'defer_transports =' >/dev/null
  ip netns exec "$2" postfix -c "$d" reload >/dev/null 2>&1
  sleep 1
  ip netns exec "$2" postfix -c "$d" flush >/dev/null 2>&1
}

pf_wait_empty() { # NAME: wait until the relay's queue is empty (delivered)
  local q=$WORK/pf-$1/queue i
  for i in $(seq 1 300); do
    [ -z "$(find "$q/incoming" "$q/active" "$q/deferred" "$q/maildrop" -type f 2>/dev/null | head -1)" ] &&
      [ "$i" -gt 10 ] && return 0
    sleep 0.1
  done
  log "relay queue not empty after 30s"; find "$q" -path '*/deferred/*' -type f >&2; return 1
}

# --- clients -----------------------------------------------------------------

in_cli() { ip netns exec "$NS_C" timeout 60 "$@"; }

swaks_cli() {    # swaks in the client namespace, quiet unless it fails
  if ! in_cli swaks --helo client.example.test "$@" >"$WORK/swaks.log" 2>&1; then
    log "swaks failed:"; tail -20 "$WORK/swaks.log" >&2; return 1
  fi
}

source_cli() {   # smtp-source in the client namespace
  in_cli smtp-source -M client.example.test -f sender@client.example.test "$@"
}

# Body files for swaks: a plain text body, a text attachment and a small
# binary attachment (bytes 0..255 repeated, so base64 covers every value).
make_bodies() {
  cat > "$WORK/body.txt" <<'EOF'
Hello,

this is a plain message sent by swaks through a network namespace, so that
breakwater's tests have a real capture of a simple SMTP session.
.A line that starts with a dot must be dot-stuffed on the wire.
..And this one starts with two.

Regards
EOF
  for i in $(seq 1 40); do echo "report line $i: the quick brown fox jumps over the lazy dog"; done \
    > "$WORK/report.txt"
  python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 24)' > "$WORK/blob.bin"
  python3 -c 'for i in range(1200): print("line %05d of a long message, several full TCP segments ......" % i)' \
    > "$WORK/long.txt"
}

newcase() {      # NAME: fresh folder (keeps README.md and expected files)
  mkdir -p "$PCAPS/$1"
  rm -f "$PCAPS/$1"/*.pcap
  log "== $1"
}

# --- cases -------------------------------------------------------------------

case_smtp_source_sessions() {
  local c=smtp-source-sessions; newcase $c; net_up
  sink_start 25
  cap_start "$PCAPS/$c/capture.pcap"
  source_cli -s 3 -m 9 -r 4 -d -l 2500 -S "breakwater pcap test" \
    -t rcpt@sink.example.test "inet:$V4_S:25"
  cap_stop; sink_stop
}

case_smtp_sink_reject() {
  local c=smtp-sink-reject; newcase $c; net_up
  # -f RCPT: every RCPT gets 550; -r MAIL would be soft. smtp-source -A goes
  # on after a rejection, so the session still sends DATA and the message.
  sink_start 2525 -f RCPT
  cap_start "$PCAPS/$c/capture.pcap"
  source_cli -A -s 1 -m 2 -r 3 -d -l 300 -t rcpt@sink.example.test "inet:$V4_S:2525"
  cap_stop; sink_stop
}

case_postfix_relay() {
  local c=postfix-relay; newcase $c; net_up
  pf_start sink "$NS_S"
  pf_start relay "$NS_C"
  # Messages are injected on the relay's loopback (not captured) while the
  # relay holds them (defer_transports = smtp); released together, its smtp
  # client delivers them over the veth in one cached session: pipelined
  # MAIL/RCPT.../DATA, per-recipient rejections, RSET between transactions,
  # then the bounces for the rejected recipients (null sender).
  local to="" i
  for i in $(seq 1 40); do
    if [ $((i % 7)) -eq 0 ]; then to+="bad$i@sink.example.test,"; else to+="user$i@sink.example.test,"; fi
  done
  swaks_cli --server 127.0.0.1 --from list@client.example.test --to "${to%,}" \
    --header 'Subject: forty recipients, pipelined' --body "@$WORK/body.txt"
  swaks_cli --server 127.0.0.1 --from alice@client.example.test \
    --to r1@sink.example.test,r2@sink.example.test,r3@sink.example.test \
    --header 'Subject: three recipients' --body "@$WORK/report.txt"
  swaks_cli --server 127.0.0.1 --from bob@client.example.test --to big@sink.example.test \
    --header 'Subject: a long message' --body "@$WORK/long.txt"
  swaks_cli --server 127.0.0.1 --from carol@client.example.test --to bad2@sink.example.test \
    --header 'Subject: every recipient rejected' --body "@$WORK/body.txt"
  cap_start "$PCAPS/$c/capture.pcap"
  pf_release relay "$NS_C"
  pf_wait_empty relay || true
  pf_stop relay "$NS_C"
  cap_stop
  pf_stop sink "$NS_S"
}

case_bdat() {
  local c=bdat; newcase $c; net_up
  # The Postfix smtp client never sends BDAT, nor do smtp-source and swaks:
  # tests/pcap/bdat_client.py (stdlib sockets, the kernel's TCP) speaks BDAT
  # to the real Postfix smtpd, which offers CHUNKING.
  pf_start sink "$NS_S"
  cap_start "$PCAPS/$c/capture.pcap"
  in_cli python3 "$PCAPS/bdat_client.py" "$V4_S" 25
  cap_stop
  pf_stop sink "$NS_S"
}

case_swaks_plain() {
  local c=swaks-plain; newcase $c; net_up
  sink_start 25
  cap_start "$PCAPS/$c/capture.pcap"
  swaks_cli --server "$V4_S" --from alice@client.example.test --to bob@sink.example.test \
    --header 'Subject: plain message' --body "@$WORK/body.txt"
  cap_stop; sink_stop
}

case_swaks_attach() {
  local c=swaks-attach; newcase $c; net_up
  sink_start 25
  cap_start "$PCAPS/$c/capture.pcap"
  swaks_cli --server "$V4_S" --pipeline --from alice@client.example.test \
    --to bob@sink.example.test,carol@sink.example.test \
    --header 'Subject: =?UTF-8?B?UmFwcG9ydCBtZW5zdWVsIOKAkyBwacOoY2VzIGpvaW50ZXM=?=' \
    --attach-type text/plain --attach-name report.txt --attach "@$WORK/report.txt" \
    --attach-type application/octet-stream --attach-name blob.bin --attach "@$WORK/blob.bin" \
    --body "@$WORK/body.txt"
  cap_stop; sink_stop
}

case_swaks_auth() {
  local c=swaks-auth; newcase $c; net_up
  # A real Postfix smtpd on 587 offering AUTH PLAIN LOGIN in clear; the
  # credentials are checked by tests/pcap/sasl_stub.py (Dovecot protocol).
  pf_start sink "$NS_S"
  python3 "$PCAPS/sasl_stub.py" "$WORK/pf-sink/queue/private/auth" 60 &
  PIDS+=("$!")
  local i; for i in $(seq 1 50); do [ -S "$WORK/pf-sink/queue/private/auth" ] && break; sleep 0.1; done
  cap_start "$PCAPS/$c/capture.pcap"
  swaks_cli --server "$V4_S" --port 587 --auth PLAIN --auth-user alice@client.example.test \
    --auth-password 's3cret-plain' --from alice@client.example.test --to bob@sink.example.test \
    --header 'Subject: auth plain' --body "@$WORK/body.txt"
  swaks_cli --server "$V4_S" --port 587 --auth LOGIN --auth-user bob@client.example.test \
    --auth-password 's3cret-login' --from bob@client.example.test --to alice@sink.example.test \
    --header 'Subject: auth login' --body "@$WORK/body.txt"
  # A wrong password: 535, then swaks gives up and quits.
  in_cli swaks --helo client.example.test --server "$V4_S" --port 587 --auth LOGIN \
    --auth-user mallory@client.example.test --auth-password 'wrong' \
    --from mallory@client.example.test --to alice@sink.example.test \
    --body "@$WORK/body.txt" >/dev/null 2>&1 && { log "AUTH with a wrong password succeeded"; return 1; }
  cap_stop
  pf_stop sink "$NS_S"
}

case_swaks_starttls() {
  local c=swaks-starttls; newcase $c; net_up
  pf_start sink "$NS_S"
  cap_start "$PCAPS/$c/capture.pcap"
  swaks_cli --server "$V4_S" --tls --from alice@client.example.test --to bob@sink.example.test \
    --header 'Subject: over starttls' --body "@$WORK/body.txt"
  # Port 465: TLS from the first byte (counted, not parsed).
  swaks_cli --server "$V4_S" --port 465 --tls-on-connect --from alice@client.example.test \
    --to bob@sink.example.test --header 'Subject: implicit tls' --body "@$WORK/body.txt"
  cap_stop
  pf_stop sink "$NS_S"
}

case_ipv6() {
  local c=ipv6; newcase $c; net_up
  SINK_HOST="[$V6_S]" sink_start 25
  cap_start "$PCAPS/$c/capture.pcap"
  source_cli -6 -s 2 -m 4 -r 2 -d -l 2000 -t rcpt@sink.example.test "inet:[$V6_S]:25"
  # (swaks would need IO::Socket::INET6 for IPv6, which Debian's swaks lacks.)
  cap_stop; sink_stop
}

case_linux_cooked() {
  local c
  for c in linux-sll linux-sll2; do
    newcase $c; net_up
    sink_start 25
    if [ $c = linux-sll ]; then cap_start "$PCAPS/$c/capture.pcap" -i any -y LINUX_SLL
    else cap_start "$PCAPS/$c/capture.pcap" -i any; fi   # tcpdump 4.99 default: LINUX_SLL2
    source_cli -s 2 -m 4 -r 2 -d -l 1800 -t rcpt@sink.example.test "inet:$V4_S:25"
    cap_stop; sink_stop
  done
}

case_link_rewrites() { # from the Ethernet capture of swaks-attach
  local src=$PCAPS/swaks-attach/capture.pcap c kind
  [ -f "$src" ] || case_swaks_attach
  for kind in null vlan qinq; do
    c=link-$kind; newcase $c
    python3 "$PCAPS/relink.py" "$kind" "$src" "$PCAPS/$c/capture.pcap"
  done
}

case_seq_rewrites() { # from real captures, by tests/pcap/reseq.py
  [ -f "$PCAPS/swaks-attach/capture.pcap" ] || case_swaks_attach
  [ -f "$PCAPS/smtp-source-sessions/capture.pcap" ] || case_smtp_source_sessions
  newcase seq-wrap
  python3 "$PCAPS/reseq.py" wrap "$PCAPS/swaks-attach/capture.pcap" "$PCAPS/seq-wrap/capture.pcap"
  newcase midstream
  python3 "$PCAPS/reseq.py" midstream "$PCAPS/smtp-source-sessions/capture.pcap" \
    "$PCAPS/midstream/capture.pcap"
}

case_mangled() {
  local c=mangled; newcase $c; net_up
  sink_start 25
  cap_start "$PCAPS/$c/original.pcap"
  # Two messages in one session, long enough for runs of full segments.
  source_cli -s 1 -m 2 -r 2 -d -l 12000 -t rcpt@sink.example.test "inet:$V4_S:25"
  cap_stop; sink_stop
  python3 "$PCAPS/mangle.py" --seed 1 "$PCAPS/$c/original.pcap" "$PCAPS/$c/capture.pcap" \
    --describe "$PCAPS/$c/mangle.txt" --expect "$PCAPS/$c/expected.json"
  # The same over a sequence wrap: seed 3 drops a segment that spans 2^32 in
  # each direction.
  [ -f "$PCAPS/seq-wrap/capture.pcap" ] || case_seq_rewrites
  c=mangled-wrap; newcase $c
  cp "$PCAPS/seq-wrap/capture.pcap" "$PCAPS/$c/original.pcap"
  python3 "$PCAPS/mangle.py" --seed 3 "$PCAPS/$c/original.pcap" "$PCAPS/$c/capture.pcap" \
    --describe "$PCAPS/$c/mangle.txt" --expect "$PCAPS/$c/expected.json"
}

# --- storm scenarios (behaviour rules; see each folder's README.md) -----------

pf_wait_log() {  # PATTERN SECONDS LOG...: wait until a Postfix log shows PATTERN
  local pat=$1 secs=$2 i; shift 2
  for i in $(seq 1 $((secs * 10))); do
    cat "$@" 2>/dev/null | grep -q -- "$pat" && return 0
    sleep 0.1
  done
  log "no '$pat' in $* after ${secs}s"; return 1
}

case_storm_loop() {
  local c=storm-loop; newcase $c; net_up
  # A real forwarding loop: loop-a (198.18.0.1) and loop-b (198.18.0.2) each
  # relay loop.example.test to the other. One message injected on loop-a's
  # loopback bounces between them, one SMTP session per hop, each hop adding
  # a Received line, until hopcount_limit (LOOP_HOPS, 30 here instead of
  # Postfix's 50, to keep the capture small, but past the shipped rules'
  # BW_RCVD_OVER_25) makes Postfix bounce it.
  pf_start loop-a "$NS_C"
  pf_start loop-b "$NS_S"
  cap_start "$PCAPS/$c/capture.pcap" -i "$IF_S" tcp port 25
  swaks_cli --server 127.0.0.1 --from origin@origin.example.test --to victim@loop.example.test \
    --header 'Subject: forwarded round and round' --body "@$WORK/body.txt"
  pf_wait_log 'status=bounced' 60 "$WORK/pf-loop-a/maillog" "$WORK/pf-loop-b/maillog" || true
  pf_wait_empty loop-a || true
  pf_wait_empty loop-b || true
  cap_stop
  grep -h 'status=bounced' "$WORK/pf-loop-a/maillog" "$WORK/pf-loop-b/maillog" >&2 || true
  pf_stop loop-a "$NS_C"
  pf_stop loop-b "$NS_S"
}

cli_addrs() {     # FIRST LAST: add 198.18.2.FIRST..LAST to the client's veth (bots)
  local i
  for i in $(seq "$1" "$2"); do ip -n "$NS_C" addr add "198.18.2.$i/32" dev "$IF_C"; done
  ip -n "$NS_S" route add 198.18.2.0/24 dev "$IF_S"
}

swaks_from() {   # ADDR HELO swaks-args...: one swaks session from ADDR (a 4xx/5xx is no failure)
  local a=$1 h=$2; shift 2
  in_cli swaks --local-interface "$a" --helo "$h" --server "$V4_S" "$@" >"$WORK/swaks.log" 2>&1 || true
}

legit_bulk() {   # I: message I of the legitimate bulk sender (personal greetings, all accepted)
  local n; n=$(printf %02d "$1")
  swaks_from "$V4_C" mail.client.example.test --from alice@client.example.test \
    --to "friend$n@sink.example.test" --header "Subject: Happy new year, friend $n" \
    --body "Dear friend $n, all the best for the new year. Alice"
}

case_storm_flood() {
  local c=storm-flood i b; newcase $c; net_up
  # A flood on one mailbox: 3 clients (198.18.2.11-13) send 45 messages to
  # full@sink.example.test, which a real Postfix smtpd answers with
  # "452 4.2.2 Mailbox full" (access map); the forged envelope sender is
  # victim@client.example.test. Interleaved: the target's side bouncing to
  # that sender (null sender, 198.18.0.2 -> smtp-sink on 198.18.0.1) for
  # every second flood message, and a legitimate bulk sender (198.18.0.1,
  # alice@) mailing 40 personal greetings to 40 distinct friends, all accepted.
  cli_addrs 11 13
  pf_start sink "$NS_S"
  ip netns exec "$NS_C" timeout 120 smtp-sink -u nobody -h client.example.test "$V4_C:25" 64 \
    >"$WORK/sink-cli.log" 2>&1 &
  local cli_sink=$!; PIDS+=("$cli_sink"); wait_listen "$NS_C" 25
  cap_start "$PCAPS/$c/capture.pcap" -i "$IF_S" tcp port 25
  for i in $(seq 1 45); do
    b=198.18.2.$((11 + i % 3))
    swaks_from "$b" "bulk$((11 + i % 3)).example.net" --from victim@client.example.test \
      --to full@sink.example.test --header "Subject: offer number $i" --body "Buy now, offer $i."
    [ "$i" -le 40 ] && legit_bulk "$i"
    if [ $((i % 2)) -eq 0 ]; then
      ip netns exec "$NS_S" timeout 60 swaks --local-interface "$V4_S" --helo sink.example.test \
        --server "$V4_C" --from '<>' --to victim@client.example.test \
        --header "Subject: Undelivered Mail Returned to Sender" \
        --body "full@sink.example.test: 452 4.2.2 Mailbox full (offer $i)" >"$WORK/swaks.log" 2>&1 || true
    fi
  done
  cap_stop
  stop_pid "$cli_sink"
  pf_stop sink "$NS_S"
}

case_storm_burst() {
  local c=storm-burst i n h a r; newcase $c; net_up
  # A botnet-like dictionary attack: 40 clients (198.18.2.101-140), each with
  # its own random-looking HELO and sender, one session each to a small
  # recipient set on a real Postfix smtpd: info@ exists, the unknown-* names
  # get "550 5.1.1 User unknown" (4 of 5 recipients rejected per session).
  # Interleaved, the legitimate bulk sender (198.18.0.1) mails 40 personal
  # greetings to 40 distinct friends, all accepted.
  local names=(unknown-admin unknown-john unknown-mary unknown-peter unknown-web unknown-hr)
  cli_addrs 101 140
  pf_start sink "$NS_S"
  cap_start "$PCAPS/$c/capture.pcap" -i "$IF_S" tcp port 25
  for i in $(seq 1 40); do
    a=198.18.2.$((100 + i))
    h=$(printf 'h%04x-%x.dyn.example.net' $(( (i * 7919) % 65536 )) $(( (i * 104729) % 4096 )))
    r=info@sink.example.test
    for n in 0 1 2 3; do r+=",${names[$(( (i + n) % 6 ))]}@sink.example.test"; done
    swaks_from "$a" "$h" --from "$(printf 'u%05d' $(( (i * 31337) % 100000 )))@$h" --to "$r" \
      --header "Subject: Invoice $i" --body "Please see the invoice, ref $i."
    legit_bulk "$i"
  done
  cap_stop
  pf_stop sink "$NS_S"
}

ALL=(smtp-source-sessions smtp-sink-reject postfix-relay bdat swaks-plain
     swaks-attach swaks-auth swaks-starttls ipv6 linux-cooked link-rewrites seq-rewrites
     mangled storm-loop storm-flood storm-burst)

make_bodies
[ $# -gt 0 ] || set -- "${ALL[@]}"
for name in "$@"; do
  fn=case_${name//-/_}
  declare -F "$fn" >/dev/null || { log "unknown case $name (known: ${ALL[*]})"; exit 2; }
  "$fn"
  net_down
done
ls -l "$PCAPS"/*/*.pcap >&2
