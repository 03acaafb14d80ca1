#!/usr/bin/env bash
# A ClickHouse server (Debian's clickhouse-server package) of its own in
# DIR, listening on 127.0.0.1 only, HTTP on PORT (default 8123): for the
# ClickHouse benchmarks (`vigil bench --modes clickhouse`). Runs in the
# foreground; stop it with Ctrl-C or SIGTERM. Its data stays in DIR.
#
#   scripts/clickhouse-local.sh DIR [PORT]
set -euo pipefail
dir=$(mkdir -p "$1" && realpath "$1")
port=${2:-8123}
bin=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
cat > "$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$port</http_port>
  <tcp_port>$((port + 1000))</tcp_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
cat > "$dir/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
EOF
exec "$bin" --config-file="$dir/config.xml"
