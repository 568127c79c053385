#!/usr/bin/env bash
# Start a private PostgreSQL instance for the clearing tests in the folder DIR (made if
# missing): initdb, then pg_ctl start on a free loopback port, its unix socket in DIR too; no
# system service is used or touched. Installs Debian's postgresql with apt-get when no initdb
# is found. As root (CI), the server runs as the user postgres (it refuses root), and DIR is
# handed to it. Prints the URL for FARE_VALIDATOR_PG_URL on standard output; scripts/pg-stop.sh
# DIR stops it.
#
#   url=$(bash scripts/pg-start.sh /tmp/fv-pg) && export FARE_VALIDATOR_PG_URL=$url
#
# Environment: PG_WAIT_S (default 30).
set -euo pipefail

DIR=${1:?usage: pg-start.sh DIR}
WAIT_S=${PG_WAIT_S:-30}
DB=fare_validator

say() { echo "pg-start: $*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN=$(find_bin)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  say "no initdb: installing Debian's postgresql"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  BIN=$(find_bin)
fi
[ -x "$BIN/initdb" ] || { say "initdb not found after install"; exit 1; }

mkdir -p "$DIR"
AS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$DIR"
  chmod 700 "$DIR"
  AS=(runuser -u postgres --)
fi

if [ ! -f "$DIR/data/PG_VERSION" ]; then
  "${AS[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 40000))
  port_in_use "$port" && continue
  if "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t "$WAIT_S" \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$DIR" \
      start >/dev/null; then
    "${AS[@]}" "$BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB"
    echo "$port" >"$DIR/port"
    say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data $DIR/data)"
    echo "postgres://postgres@127.0.0.1:$port/$DB"
    exit 0
  fi
  say "could not start on port $port; trying another"
  tail -n 5 "$DIR/server.log" >&2 || true
done
say "no port found to start on"
exit 1
