#!/usr/bin/env bash
# Two builds of `vigil` side by side, alternating, on the same inputs: is a
# change neutral for speed? Rounds interleave the builds (each round runs
# every command of every build once), so a slow spell of this VM hits both
# alike; medians and the median of per-round ratios are printed.
#
#   scripts/bench-before-after.sh BEFORE AFTER [PACKETS] [FLOWS]
#
# Commands: `vigil flows` on synthesized 64-byte and IMIX captures with 1
# and 2 workers, `vigil flows` on every capture of the corpus (real
# traffic; VIGIL_PCAP_CORPUS or ../shared/pcaps), and the transport bench
# (`vigil bench --modes transport`: sensor -> spool -> gRPC -> collector ->
# SQLite) on the 64-byte capture. RUNS rounds (default 7) after a warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(realpath "$1")
after=$(realpath "$2")
packets=${3:-5000000}
flows=${4:-200000}
runs=${RUNS:-7}
corpus=${VIGIL_PCAP_CORPUS:-$(cd .. && pwd)/shared/pcaps}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for frame in 64 imix; do
  "$after" bench --packets "$packets" --flows "$flows" --frame "$frame" --write-pcap "$dir/bulk-$frame.pcap" 2>/dev/null
  cat "$dir/bulk-$frame.pcap" > /dev/null
done
echo "inputs: $packets packets over $flows flows (64-byte and IMIX), $(ls "$corpus"/*.pcap* | wc -l) corpus captures; $runs rounds"
python3 - "$runs" "$before" "$after" "$dir" "$corpus" <<'PY'
import glob, re, statistics, subprocess, sys, time
runs, before, after, d, corpus = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
files = " ".join(sorted(glob.glob(f"{corpus}/*.pcap*")))
cmds = [
    ("flows 64 B, 1 worker", f"flows -q --format null -r {d}/bulk-64.pcap"),
    ("flows 64 B, 2 workers", f"flows -q --format null --workers 2 -r {d}/bulk-64.pcap"),
    ("flows IMIX, 1 worker", f"flows -q --format null -r {d}/bulk-imix.pcap"),
    ("flows IMIX, 2 workers", f"flows -q --format null --workers 2 -r {d}/bulk-imix.pcap"),
    ("flows corpus, 1 worker", "flows -q --format null " + " ".join(f"-r {f}" for f in files.split())),
    ("transport (flows/s)", f"bench --modes transport --runs 1 -r {d}/bulk-64.pcap"),
]
res = {(b, n): [] for b in ("before", "after") for n, _ in cmds}
for r in range(runs + 1):
    for name, args in cmds:
        for label, binary in (("before", before), ("after", after)):
            t = time.perf_counter()
            out = subprocess.run(f"{binary} {args}", shell=True, capture_output=True, text=True)
            dt = time.perf_counter() - t
            if name.startswith("transport"):
                m = re.search(r"median: (\d+) flows/s", out.stdout + out.stderr)
                v = float(m.group(1)) if m else float("nan")
            else:
                v = dt
            if r > 0:
                res[(label, name)].append(v)
for name, _ in cmds:
    b, a = res[("before", name)], res[("after", name)]
    ratio = statistics.median(x / y for x, y in zip(b, a))
    unit = "flows/s" if name.startswith("transport") else "s"
    better = "after/before" if unit == "flows/s" else "before/after"
    if unit == "flows/s":
        ratio = 1 / ratio
    print(f"  {name:<24} before median {statistics.median(b):10.3f} {unit}  after {statistics.median(a):10.3f} {unit}"
          f"  per-round {better} {ratio:.3f}")
    print(f"    before: {', '.join(f'{x:.3f}' for x in b)}")
    print(f"    after:  {', '.join(f'{x:.3f}' for x in a)}")
PY
