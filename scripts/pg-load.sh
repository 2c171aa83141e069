#!/usr/bin/env bash
# Load test of one shared PostgreSQL database (docs/reports.md, "Load test"): starts a private
# server from Debian's postgresql (installed by `make setup`) on a Unix socket in a temporary
# folder, runs target/release/plateqc-pgload against a fresh database, and removes the server
# again. Arguments go to plateqc-pgload (e.g. --sites 8 --secs 20 --sizes 10000,100000,1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL server binaries not found: run make setup" >&2; exit 1; }
dir=$(mktemp -d /tmp/plateqc-pgload.XXXXXX)
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
cleanup() { as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
# Durable as a production server would be (fsync on); sized for a small host.
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-k $dir -c listen_addresses='' -c max_connections=100 -c shared_buffers=256MB" start >/dev/null
as_owner "$bin/psql" -h "$dir" -U postgres -q -c "CREATE DATABASE qc" postgres
target/release/plateqc-pgload "postgres://postgres@localhost/qc?host=$dir" "$@"
