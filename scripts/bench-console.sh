#!/usr/bin/env bash
# Server time of each web console page (its Server-Timing header) over a
# stored data directory, e.g. the 10 M flows of
#   vigil bench --modes store --store-flows 10000000 --store-dir DIR
#
#   scripts/bench-console.sh DIR [RUNS]
#   CONFIG=collector.toml scripts/bench-console.sh DIR [RUNS]
#
# Starts `vigil collector` (target/release) on DIR with the console on a free
# loopback port, asks each page RUNS times (default 5) and prints the median
# and the slowest server time of each, in ms. With CONFIG the collector reads
# that file too (e.g. `[store] engine = "clickhouse"` with the database
# `vigil bench --modes clickhouse --store-flows 10000000` filled: vigil_bench).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$1"
runs="${2:-5}"
bin=target/release/vigil
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
grpc=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
config=()
[ -n "${CONFIG:-}" ] && config=(--config "$CONFIG")
"$bin" collector "${config[@]}" --data-dir "$dir" --listen "127.0.0.1:$grpc" --http-listen "127.0.0.1:$port" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/sensors" && break
  sleep 0.1
done
pages=(
  "/?range=all"
  "/alerts"
  "/sensors"
  "/flows?range=all"
  "/flows?range=all&filter=dst+port+502"
  "/flows?range=all&filter=not+proto+255"
  "/flows?range=all&filter=src+net+10.1.0.0/16"
  "/flows?range=all&filter=tcp+and+not+dst+port+80&offset=5000"
  "/flows?since=2026-01-01T00:10:00Z&until=2026-01-01T00:20:00Z"
  "/flows?since=2026-01-01T00:10:00Z&until=2026-01-01T00:20:00Z&filter=dst+port+502"
)
printf "%-80s %10s %10s\n" page "median ms" "slowest ms"
for p in "${pages[@]}"; do
  times=()
  for _ in $(seq 1 "$runs"); do
    t=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port$p" | tr -d '\r' | awk -F'dur=' 'tolower($0) ~ /^server-timing/ {print $2}')
    times+=("$t")
  done
  sorted=$(printf "%s\n" "${times[@]}" | sort -n)
  median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
  slowest=$(echo "$sorted" | tail -1)
  printf "%-80s %10s %10s\n" "$p" "$median" "$slowest"
done
