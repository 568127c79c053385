#!/usr/bin/env bash
# Stop the private PostgreSQL instance scripts/pg-start.sh DIR started, and remove DIR.
# Idempotent.
set -euo pipefail

DIR=${1:?usage: pg-stop.sh DIR}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi

if [ -f "$DIR/data/postmaster.pid" ] && [ -n "$BIN" ]; then
  "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null \
    && echo "pg-stop: stopped" >&2
fi
rm -rf "$DIR"
