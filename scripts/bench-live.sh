#!/usr/bin/env bash
# Live capture benchmark: the highest rate `vigil sensor -i` sustains on a
# veth pair without kernel drops, with 1 and 2 workers, beside
# `tcpdump -w /dev/null` on the same traffic in the same run.
#
# Needs root and iproute2 (and tcpdump for the peer). Makes two network
# namespaces joined by a veth pair, synthesizes 64-byte frames, and for each
# capture program and each target rate: starts the capture on one end,
# sends the frames from the other with `vigil replay` (addresses rewritten
# into 127.0.0.0/8 and the test IPv6 prefix; nothing leaves the namespaces),
# stops the capture and reads its counters. Prints one row per run.
#
#   PACKETS=1000000 RATES="100000 200000 400000 0" scripts/bench-live.sh
#
# A rate of 0 sends as fast as the replayer can (one send() per frame).
set -euo pipefail
cd "$(dirname "$0")/.."

V=${VIGIL:-target/release/vigil}
PACKETS=${PACKETS:-1000000}
FLOWS=${FLOWS:-10000}
FRAME=${FRAME:-64}
RATES=${RATES:-"100000 200000 300000 400000 0"}
TOOLS=${TOOLS:-"vigil-1 vigil-2 tcpdump"}
[ -x "$V" ] || cargo build --release --quiet
[ "$(id -u)" = 0 ] || { echo "bench-live: needs root (network namespaces)"; exit 1; }

A=vigil-bench-a-$$
B=vigil-bench-b-$$
work=$(mktemp -d)
cleanup() {
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add va netns "$A" type veth peer name vb netns "$B"
for pair in "$A va" "$B vb"; do
  set -- $pair
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1"
  ip -n "$1" link set "$2" up
done

"$V" bench --packets "$PACKETS" --flows "$FLOWS" --frame "$FRAME" --write-pcap "$work/in.pcap" >/dev/null 2>&1

wait_for() { # file pattern
  for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "bench-live: capture did not start: $(cat "$1")" >&2; exit 1
}

printf '%-8s %10s %10s %10s %10s %8s %10s\n' tool target sent/s received dropped drop% ns/packet
for tool in $TOOLS; do
  for rate in $RATES; do
    err="$work/cap.err"
    : >"$err"
    case $tool in
      vigil-*)
        w=${tool#vigil-}
        ip netns exec "$B" "$V" sensor -i vb --workers "$w" -o /dev/null 2>"$err" &
        pid=$!
        wait_for "$err" "capturing on"
        ;;
      tcpdump)
        # The same kernel buffer as one vigil worker's ring (64 MiB).
        ip netns exec "$B" tcpdump -i vb -n -B 65536 -w /dev/null 2>"$err" &
        pid=$!
        wait_for "$err" "listening on"
        ;;
    esac
    sent=$(ip netns exec "$A" "$V" replay -r "$work/in.pcap" -i va --pps "$rate" 2>&1 |
      sed -n 's/.* \([0-9]*\) frames\/s.*/\1/p')
    sleep 1
    kill -INT "$pid"
    wait "$pid" || true
    case $tool in
      vigil-*)
        recv=$(sed -n 's/^kernel: received \([0-9]*\).*/\1/p' "$err")
        drop=$(sed -n 's/^kernel: received [0-9]*  dropped \([0-9]*\).*/\1/p' "$err")
        nspp=$(sed -n 's/^capture cpu: .*(\([0-9]*\) ns per packet)/\1/p' "$err")
        ;;
      tcpdump)
        recv=$(sed -n 's/^\([0-9]*\) packets received by filter/\1/p' "$err")
        drop=$(sed -n 's/^\([0-9]*\) packets dropped by kernel/\1/p' "$err")
        nspp=-
        ;;
    esac
    pct=$(awk -v d="${drop:-0}" -v r="${recv:-0}" 'BEGIN { if (r > 0) printf "%.3f", 100 * d / r; else print "-" }')
    printf '%-8s %10s %10s %10s %10s %8s %10s\n' "$tool" "${rate/#0/max}" "$sent" "${recv:-?}" "${drop:-?}" "$pct" "${nspp:-?}"
  done
done
