#!/usr/bin/env bash
# Nothing lost: a 5 M-packet replay streams to a collector that is killed
# with SIGKILL and restarted three times, and left down for a minute once;
# afterwards the store must hold exactly the flows `vigil flows` computes
# offline from the same capture — none missing, none twice.
#
#   scripts/chaos.sh [PACKETS] [OUTAGE_SECONDS]     (defaults 5000000, 60)
#
# Everything runs on loopback in a temporary directory. Needs a release
# build (cargo build --release).
set -euo pipefail
PACKETS=${1:-5000000}
OUTAGE=${2:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VIGIL=${VIGIL:-$ROOT/target/release/vigil}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"

echo "chaos: synthesizing $PACKETS packets"
"$VIGIL" bench --packets "$PACKETS" --flows 400000 --frame 80 --write-pcap capture.pcap
"$VIGIL" flows -q -r capture.pcap --format csv | tail -n +2 | sort > offline.csv
TOTAL=$(wc -l < offline.csv)
echo "chaos: $TOTAL flow records offline"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_collector() {
  "$VIGIL" collector --listen "127.0.0.1:$PORT" --data-dir data 2>>collector.log &
  COLLECTOR=$!
}
stored() {
  "$VIGIL" query --data-dir data --count --format csv 2>/dev/null | tail -1 | cut -d, -f1 || echo 0
}

start_collector
sleep 0.5
"$VIGIL" sensor -r capture.pcap --collector "http://127.0.0.1:$PORT" --sensor-id chaos \
  --spool-dir spool --batch-flows 512 --drain-timeout $((OUTAGE * 3 + 300))s 2>sensor.log &
SENSOR=$!

for round in 1 2 3; do
  target=$((TOTAL * round / 4))
  until [ "$(stored)" -ge "$target" ]; do sleep 0.1; done
  kill -9 "$COLLECTOR"; wait "$COLLECTOR" 2>/dev/null || true
  echo "chaos: kill $round (SIGKILL) with $(stored) of $TOTAL stored"
  if [ "$round" = 2 ]; then
    echo "chaos: collector down for ${OUTAGE}s"
    sleep "$OUTAGE"
  fi
  start_collector
done

wait "$SENSOR" || { echo "chaos: sensor failed"; cat sensor.log; exit 1; }
kill "$COLLECTOR"; wait "$COLLECTOR" 2>/dev/null || true
"$VIGIL" query --data-dir data --format csv -n 1000000000 | tail -n +2 | sort > stored.csv
"$VIGIL" query --data-dir data --status
if diff -q offline.csv stored.csv >/dev/null; then
  echo "chaos: PASS: the store holds exactly the $TOTAL offline flow records"
else
  echo "chaos: FAIL: missing $(comm -23 offline.csv stored.csv | wc -l), extra $(comm -13 offline.csv stored.csv | wc -l)"
  exit 1
fi
