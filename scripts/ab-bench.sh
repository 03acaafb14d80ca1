#!/usr/bin/env bash
# Compares builds of `vigil` on this machine's noisy CPU by alternating them:
# each round runs every binary once, so a slow spell of the VM hits all of
# them alike. Prints, per run, the median Mpps of dispatch with 1 worker and
# fanout with 1 and 2 workers.
#
#   scripts/ab-bench.sh ROUNDS BINARY... (FRAME=imix for IMIX frames)
#
# Keep the builds to compare with e.g. `cp target/release/vigil /tmp/before`.
set -euo pipefail
rounds=$1
shift
for r in $(seq "$rounds"); do
  for b in "$@"; do
    out=$("$b" bench --modes dispatch,fanout --runs 3 ${FRAME:+--frame "$FRAME"} 2>&1)
    pick() { echo "$out" | awk -v p="$1" -v w="$2" '$1==p && $2==w {print $3}'; }
    echo "round $r $(basename "$b"): dispatch/1 $(pick dispatch 1)  fanout/1 $(pick fanout 1)  fanout/2 $(pick fanout 2)"
  done
done
