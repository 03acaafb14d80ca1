#!/usr/bin/env bash
# Packet rate of `vigil flows` against softflowd 1.1.0 (Debian) on the same
# synthesized captures, read from the page cache, in one run.
#
#   scripts/bench-peers.sh [PACKETS] [FLOWS]
#
# INPUTS (default "bulk:64 bulk:imix realistic:64 realistic:natural") names
# the captures: the synthesizer's bulk traffic (every flow alike,
# round-robin) and its realistic mix (`vigil bench --traffic realistic`:
# Zipf flow sizes, random interleaving, DNS, ICMP, ESP, full TCP
# conversations), each with 64-byte frames and with IMIX or natural sizes.
#
# Needs: softflowd (apt-get install softflowd) and python3.
# softflowd exports NetFlow v9 to 127.0.0.1 (loopback only); nothing listens.
#
# The commands run in turn, round after round (RUNS rounds after one warm-up
# round), rather than each command's runs in a row: on a shared VM a core's
# speed drifts over seconds, and interleaving gives every command the same
# drift. Each round also runs two one-worker processes side by side on two
# copies of the capture: what the machine's two cores give at that moment
# for two independent streams. It is a reference, not a bound: the two
# processes stream two files through the memory bus where two workers stream
# one, and with large frames two workers do better.
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-5000000}
flows=${2:-200000}
runs=${RUNS:-7}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

cargo build --release --quiet
vigil=target/release/vigil
for input in ${INPUTS:-bulk:64 bulk:imix realistic:64 realistic:natural}; do
  traffic=${input%%:*}
  frame=${input#*:}
  f="$dir/$traffic-$frame.pcap"
  $vigil bench --traffic "$traffic" --packets "$packets" --flows "$flows" --frame "$frame" --write-pcap "$f" 2>/dev/null
  cp "$f" "$f.copy"
  cat "$f" "$f.copy" > /dev/null # into the page cache
  echo "== $traffic traffic, $frame frames: $packets packets over $flows flows ($(du -h "$f" | cut -f1)), $runs rounds"
  python3 - "$runs" "$packets" \
    "vigil flows (1 worker)=$vigil flows -q --format null -r $f" \
    "vigil flows (2 workers)=$vigil flows -q --format null --workers 2 -r $f" \
    "two 1-worker runs at once=$vigil flows -q --format null -r $f & $vigil flows -q --format null -r $f.copy; wait" \
    "softflowd 1.1.0=softflowd -r $f -n 127.0.0.1:9995 -v 9 -d -m 524288" <<'PY'
import statistics, subprocess, sys, time
runs, n = int(sys.argv[1]), int(sys.argv[2])
cmds = [a.split("=", 1) for a in sys.argv[3:]]
times = {name: [] for name, _ in cmds}
for r in range(runs + 1):
    for name, cmd in cmds:
        t = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r > 0:
            times[name].append(time.perf_counter() - t)
med = {name: statistics.median(ts) for name, ts in times.items()}
w1, w2, pair, sf = (name for name, _ in cmds)
for name, ts in times.items():
    packets = 2 * n if name == pair else n
    print(f"  {name:<26} median {med[name]:7.3f} s  {packets / med[name] / 1e6:6.2f} Mpps"
          f"  (runs: {', '.join(f'{t:.3f}' for t in ts)})")
per_round = statistics.median(a / b for a, b in zip(times[w1], times[w2]))
pair_ratio = statistics.median(2 * a / b for a, b in zip(times[w1], times[pair]))
print(f"  2 workers / 1 worker: {med[w1] / med[w2]:.2f}x (median of per-round ratios {per_round:.2f}x);"
      f" two 1-worker processes at once / 1 worker: {pair_ratio:.2f}x")
for name in (w1, w2):
    print(f"  {name:<26} {med[sf] / med[name]:6.1f}x softflowd")
PY
done
