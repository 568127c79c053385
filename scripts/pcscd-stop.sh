#!/usr/bin/env bash
# Stop the pcscd that scripts/pcscd-start.sh started (by its recorded pid). A pcscd started
# otherwise (by systemd, by hand) is left alone. Idempotent.
set -euo pipefail

PIDFILE=/run/pcscd/fare-validator-pcscd.pid

say() { echo "pcscd-stop: $*" >&2; }

if [ ! -f "$PIDFILE" ]; then
  say "no pcscd started by pcscd-start.sh"
  exit 0
fi
pid=$(cat "$PIDFILE")
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pcscd ]; then
  kill "$pid"
  for _ in $(seq 1 50); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ]; then
    say "pcscd $pid did not stop on TERM; sending KILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
  say "pcscd $pid stopped"
else
  say "pcscd $pid no longer running"
fi
rm -f "$PIDFILE"
