#!/usr/bin/env bash
# Start pcscd with vsmartcard's virtual reader driver (vpcd) for the PC/SC tests, and wait
# until its two readers ("Virtual PCD 00 00" on 127.0.0.1:35963, "Virtual PCD 00 01" on
# 127.0.0.1:35964) are visible. Idempotent: installs the Debian packages only when missing,
# starts pcscd only when none runs. scripts/pcscd-stop.sh stops the pcscd started here.
#
# Environment: PCSCD_LOG (default /tmp/fare-validator-pcscd.log), PCSCD_WAIT_S (default 30).
set -euo pipefail

PACKAGES=(pcscd libpcsclite-dev vsmartcard-vpcd pcsc-tools pkg-config)
PIDFILE=/run/pcscd/fare-validator-pcscd.pid
LOG=${PCSCD_LOG:-/tmp/fare-validator-pcscd.log}
WAIT_S=${PCSCD_WAIT_S:-30}

say() { echo "pcscd-start: $*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

readers_visible() {
  local out
  out=$(timeout 5 pcsc_scan -r 2>/dev/null || true)
  grep -q "Virtual PCD 00 00" <<<"$out" && grep -q "Virtual PCD 00 01" <<<"$out"
}

if pgrep -x pcscd >/dev/null; then
  say "pcscd already running"
else
  mkdir -p /run/pcscd
  # Foreground mode in the background: logs go to $LOG (daemon mode logs to syslog).
  nohup pcscd --foreground >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  say "pcscd started (pid $(cat "$PIDFILE"), log $LOG)"
fi

for ((i = 0; i < WAIT_S * 2; i++)); do
  if readers_visible; then
    say "readers visible: Virtual PCD 00 00, Virtual PCD 00 01"
    exit 0
  fi
  sleep 0.5
done
say "vpcd readers not visible after ${WAIT_S}s"
timeout 5 pcsc_scan -r >&2 || true
tail -n 20 "$LOG" >&2 2>/dev/null || true
exit 1
