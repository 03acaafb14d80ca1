#!/usr/bin/env bash
# Runs every fuzz target for a number of executions (default 10 million)
# from the project's seeds, one target after another, and prints each
# target's executions, rate and new coverage. Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh [RUNS] [TARGET...]
#
# The corpus grows in target/fuzz-corpus/TARGET (kept between runs); a
# crash leaves its input in fuzz/artifacts/TARGET and fails the script.
# Built as the issue asks: release with debug assertions and overflow
# checks (-a), and without AddressSanitizer (-s none): the fuzzed code is
# safe Rust (the capture layer's mmap and ring code is not on these
# paths), where ASan finds nothing, and its allocator, quarantine and leak
# scans cost more than the inputs themselves. SANITIZER=address puts it
# back.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode encap rewrite capture_file)
corpus="$PWD/target/fuzz-corpus"
cargo run -q -p vigil-sensor --features fuzzing --example fuzz_seeds -- "$corpus" >/dev/null
cd fuzz
san="${SANITIZER:-none}"
cargo +nightly fuzz build -a -s "$san"
for t in "${targets[@]}"; do
  log=$(mktemp)
  start=$(date +%s)
  cargo +nightly fuzz run -a -s "$san" "$t" "$corpus/$t" -- -runs="$runs" -detect_leaks=0 \
    -print_final_stats=1 >"$log" 2>&1 || { tail -40 "$log"; echo "fuzz: $t FAILED"; exit 1; }
  secs=$(( $(date +%s) - start ))
  execs=$(grep -Eo 'number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$')
  rate=$(grep -Eo 'average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$')
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
  echo "fuzz: $t: $execs executions in ${secs} s ($rate per second), $cov, no crash"
  rm -f "$log"
done
