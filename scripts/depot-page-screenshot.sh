#!/usr/bin/env bash
# A screenshot of the depot manager's page after a demo day, for people to look at:
#   bash scripts/depot-page-screenshot.sh [OUT.png]
# Runs a small demo day into a temporary folder, serves the page on 127.0.0.1, and has Debian's
# headless Chromium (apt-get install chromium; fonts-noto-cjk for the Chinese labels) draw it.
# Everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-depot-page.png}
case $out in /*) ;; *) out="$PWD/$out" ;; esac
tmp=$(mktemp -d)
trap 'kill "${station:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cargo build --release --quiet
bin=target/release/fare-validator
"$bin" demo --buses 6 --taps-per-bus 200 --data "$tmp/day" >/dev/null
"$bin" depot serve --db "$tmp/day/depot.db" --listen 127.0.0.1:0 --http 127.0.0.1:0 >"$tmp/serve.out" &
station=$!
for _ in $(seq 50); do grep -q page "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
page=$(sed -n 's/.*"page":"\([^"]*\)".*/\1/p' "$tmp/serve.out")
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$tmp/profile" --window-size=1200,1600 --screenshot="$out" "$page" 2>/dev/null
echo "wrote $out ($page)"
