#!/usr/bin/env bash
# The cost of application metadata (issue #29): `vigil flows` with
# extraction on (the default) and off (`--no-app`), beside softflowd 1.1.0,
# on the same captures from the page cache, commands alternating round
# after round (RUNS rounds after a warm-up round).
#
#   scripts/bench-app.sh [PACKETS] [FLOWS]
#
# INPUTS (default "realistic:64 realistic:natural corpus") names the
# captures: the synthesizer's realistic mix (DNS among its UDP) with 64-byte
# and natural frames, and `corpus`: the capture corpus's captures with
# application traffic (TLS, HTTP, DNS, SSH, ICS), merged into one file and
# repeated until it holds PACKETS packets, each copy's addresses moved so
# that its flows are new ones.
#
# Needs: softflowd (apt-get install softflowd), python3, and for `corpus`
# VIGIL_PCAP_CORPUS (or ../shared/pcaps).
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-5000000}
flows=${2:-200000}
runs=${RUNS:-7}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
corpus=${VIGIL_PCAP_CORPUS:-../shared/pcaps}

cargo build --release --quiet
vigil=target/release/vigil
for input in ${INPUTS:-realistic:64 realistic:natural corpus}; do
  f="$dir/$input.pcap"
  if [ "$input" = corpus ]; then
    python3 scripts/app_corpus_mix.py "$corpus" "$packets" "$f"
  else
    traffic=${input%%:*}
    frame=${input#*:}
    $vigil bench --traffic "$traffic" --packets "$packets" --flows "$flows" --frame "$frame" --write-pcap "$f" 2>/dev/null
  fi
  n=$($vigil flows -r "$f" --format null 2>&1 | sed -n "s/^packets: \([0-9]*\).*/\1/p" | head -1)
  n=${n:-$packets}
  cat "$f" > /dev/null # into the page cache
  echo "== $input: $n packets ($(du -h "$f" | cut -f1)), $runs rounds"
  $vigil flows -r "$f" --format jsonl -q | python3 -c '
import json, sys, collections
c = collections.Counter(); flows = 0
for l in sys.stdin:
    r = json.loads(l); flows += 1
    a = r.get("app")
    if a: c[a["proto"]] += 1
print("  records:", flows, " with app metadata:", dict(c.most_common()))'
  python3 - "$runs" "$n" \
    "vigil flows, extraction on=$vigil flows -q --format null -r $f" \
    "vigil flows --no-app=$vigil flows -q --format null --no-app -r $f" \
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
on, off, sf = (name for name, _ in cmds)
for name, ts in times.items():
    print(f"  {name:<28} median {med[name]:7.3f} s  {n / med[name] / 1e6:6.2f} Mpps"
          f"  (runs: {', '.join(f'{t:.3f}' for t in ts)})")
ratio = statistics.median(b / a for a, b in zip(times[on], times[off]))
print(f"  on / off rate: {med[off] / med[on]:.3f} (median of per-round ratios {ratio:.3f});"
      f" on: {med[sf] / med[on]:.1f}x softflowd")
PY
done
