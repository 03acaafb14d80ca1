#!/usr/bin/env bash
# The ClickHouse store's tests against the engine of a current ClickHouse
# release (chDB, from PyPI), besides Debian's 18.16 that the test suite starts
# by itself: the store must keep to SQL and formats both understand.
#
#   scripts/check-current-clickhouse.sh [CHDB_VERSION]
#
# Installs chdb-core into a virtual environment under target/, serves the
# store's HTTP requests with scripts/chdb-http.py on a loopback port, and runs
# `cargo test --test integration clickhouse` against it
# (VIGIL_CLICKHOUSE_URL). Exit status: the tests'; 0 with a printed reason
# when chDB cannot be installed here. The tests that need a server of their
# own (killing it mid-ingest) still use 18.16; HTTPS is not served by the shim.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${1:-26.9.0}"
venv="target/chdb-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import chdb" 2>/dev/null; then
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check "chdb-core==$version"; then
    echo "skipped: chdb-core $version could not be installed (PyPI unreachable?)"
    exit 0
  fi
fi
engine=$("$venv/bin/python" -c "from chdb import session; print(session.Session().query('SELECT version()', 'TabSeparated').bytes().decode().strip())")
echo "current ClickHouse engine: $engine (chdb-core $version)"

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" scripts/chdb-http.py "$port" "$data/db" > "$data/log" 2>&1 &
shim=$!
trap 'kill $shim 2>/dev/null; wait $shim 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  curl -sf -X POST "http://127.0.0.1:$port/?user=default" --data-binary 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 $shim 2>/dev/null || { cat "$data/log"; echo "chdb-http did not start"; exit 1; }
  sleep 0.2
done
VIGIL_CLICKHOUSE_URL="http://127.0.0.1:$port" cargo test --locked --test integration clickhouse::
