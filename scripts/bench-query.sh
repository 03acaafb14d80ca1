#!/usr/bin/env bash
# The analysts' slow questions of issue #32, each a whole `vigil query`
# process over a filled embedded store, and the same questions to nfdump
# over the same flows written by nfcapd, alternating, RUNS rounds (default
# 5) after a warm-up; medians printed. Several builds may be given: each
# reads its own store directory (a build reads only its schema).
#
#   scripts/bench-query.sh NFCAPD_DIR VIGIL:STORE_DIR [VIGIL:STORE_DIR…]
#
# Fill a store:    vigil bench --modes store --store-flows 10000000 --store-dir DIR --runs 1
# Fill NFCAPD_DIR: nfcapd -w NFCAPD_DIR -p 9995 -B 8388608 &
#                  vigil bench --store-flows 10000000 --netflow-to 127.0.0.1:9995
#                  (then stop nfcapd with SIGTERM, which closes its file)
set -euo pipefail
cd "$(dirname "$0")/.."
nf=$(realpath "$1")
shift
runs=${RUNS:-5}
python3 - "$runs" "$nf" "$@" <<'PY'
import statistics, subprocess, sys, time
runs, nf, builds = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
questions = [
    ("--top src --by bytes", "-s srcip/bytes -n 10"),
    ("--top dst --by bytes 'not proto 255'", "-s dstip/bytes -n 10 'not proto 255'"),
    ("--top src --by flows 'dst port 502'", "-s srcip/flows -n 10 'dst port 502'"),
    ("--top dport --by packets 'src net 10.1.0.0/16'", "-s dstport/packets -n 10 'src net 10.1.0.0/16'"),
    ("--count 'tcp and not dst port 80'", "-s proto/flows -n 10 'proto tcp and not dst port 80'"),
    ("--series 1m 'src net 10.2.0.0/16'", None),
]
cmds = []
for b in builds:
    exe, store = b.split(":", 1)
    for v, _ in questions:
        cmds.append((f"{exe} {v}", f"{exe} query --data-dir {store} {v}"))
for _, n in questions:
    if n:
        cmds.append((f"nfdump {n}", f"nfdump -R {nf} -q {n}"))
times = {name: [] for name, _ in cmds}
for r in range(runs + 1):
    for name, c in cmds:
        t = time.monotonic()
        out = subprocess.run(c, shell=True, capture_output=True, text=True)
        dt = time.monotonic() - t
        if out.returncode != 0:
            sys.exit(f"{c}: exit {out.returncode}: {out.stderr}")
        if r > 0:
            times[name].append(dt)
        elif "nfdump" in name or "--count" in name:
            print(f"  [{name}]\n" + "\n".join("    " + l for l in out.stdout.splitlines()[:4]))
for name, _ in cmds:
    v = times[name]
    print(f"{statistics.median(v) * 1e3:9.0f} ms  (max {max(v) * 1e3:.0f})  {name}")
PY
