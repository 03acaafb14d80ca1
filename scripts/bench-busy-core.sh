#!/usr/bin/env bash
# Two file workers with one core shared with a busy loop: how much the
# relay's walking moves to the worker with time to spare.
#
#   scripts/bench-busy-core.sh [PACKETS] [FLOWS] [BINARY...]
#
# The workers are pinned one per core (by thread id: main, sink, worker 0,
# worker 1, in the order `run_shared` starts them), the busy loop to core 1.
# Each binary given (default: target/release/vigil) runs RUNS times (5),
# alternating; the median wall time is printed, and the chunks each worker
# walked in the last run. Needs: taskset (util-linux), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-20000000}
flows=${2:-200000}
shift $(( $# < 2 ? $# : 2 ))
bins=("$@")
[ ${#bins[@]} -gt 0 ] || { cargo build --release --quiet; bins=(target/release/vigil); }
runs=${RUNS:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"; kill $(jobs -p) 2>/dev/null || true' EXIT
f="$dir/bulk.pcap"
"${bins[0]}" bench --packets "$packets" --flows "$flows" --frame 64 --write-pcap "$f" 2>/dev/null
cat "$f" > /dev/null # into the page cache

one() { # binary -> wall ms; the relay's debug lines in $dir/log
  taskset -c 1 bash -c 'while :; do :; done' &
  local spin=$!
  local t0 t1
  t0=$(date +%s%N)
  RUST_LOG=vigil_sensor::fanout::relay=debug NO_COLOR=1 \
    "$1" flows -q --format null --workers 2 -r "$f" 2>"$dir/log" &
  local p=$!
  sleep 0.15
  local tids
  mapfile -t tids < <(ls "/proc/$p/task" | sort -n)
  taskset -pc 0 "${tids[2]}" >/dev/null
  taskset -pc 1 "${tids[3]}" >/dev/null
  wait "$p"
  t1=$(date +%s%N)
  kill "$spin"; wait "$spin" 2>/dev/null || true
  echo $(( (t1 - t0) / 1000000 ))
}

declare -A times
for r in $(seq 0 "$runs"); do
  for b in "${bins[@]}"; do
    t=$(one "$b")
    [ "$r" -eq 0 ] || times[$b]+="$t "
  done
done
for b in "${bins[@]}"; do
  python3 -c 'import sys, statistics as s; v=[int(x) for x in sys.argv[2].split()]; print(f"{sys.argv[1]}: median {s.median(v):.0f} ms (runs: {sys.argv[2].strip()})")' "$b" "${times[$b]}"
done
echo "last run, chunks walked:"
sed 's/\x1b\[[0-9;]*m//g' "$dir/log" | grep -o 'worker=[0-9]* .*walked=[0-9]* chunks=[0-9]*' | sed 's/ input=[^ ]*//' || true
