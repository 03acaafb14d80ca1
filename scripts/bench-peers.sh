#!/usr/bin/env bash
# Packet rate of `vigil flows` against softflowd 1.1.0 (Debian) on the same
# synthesized captures, read from the page cache, in one run.
#
#   scripts/bench-peers.sh [PACKETS] [FLOWS]
#
# Needs: softflowd and hyperfine (apt-get install softflowd hyperfine).
# softflowd exports NetFlow v9 to 127.0.0.1 (loopback only); nothing listens.
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-5000000}
flows=${2:-200000}
runs=${RUNS:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

cargo build --release --quiet
vigil=target/release/vigil
for frame in 64 imix; do
  f="$dir/bulk-$frame.pcap"
  $vigil bench --packets "$packets" --flows "$flows" --frame "$frame" --write-pcap "$f" 2>/dev/null
  cat "$f" > /dev/null # into the page cache
  echo "== $frame-byte frames: $packets packets over $flows flows ($(du -h "$f" | cut -f1))"
  hyperfine --runs "$runs" --warmup 1 --export-json "$dir/$frame.json" \
    -n "vigil flows (1 worker)" "$vigil flows -q --format null -r $f" \
    -n "vigil flows (2 workers)" "$vigil flows -q --format null --workers 2 -r $f" \
    -n "softflowd 1.1.0" "softflowd -r $f -n 127.0.0.1:9995 -v 9 -d -m 524288" >/dev/null
  python3 - "$dir/$frame.json" "$packets" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
n = int(sys.argv[2])
base = None
for r in res:
    med = r["median"]
    mpps = n / med / 1e6
    if r["command"].startswith("softflowd"):
        base = mpps
    print(f"  {r['command']:<26} median {med:8.3f} s  {mpps:7.2f} Mpps  (runs: {', '.join(f'{t:.3f}' for t in r['times'])})")
for r in res:
    if not r["command"].startswith("softflowd") and base:
        print(f"  {r['command']:<26} {n / r['median'] / 1e6 / base:6.1f}x softflowd")
PY
done
