#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 60), one after another, on one core.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Corpora stay small and
# committed under fuzz/corpus/ and only read here: a run writes what it finds (and libFuzzer's
# reduced inputs, which replace and delete the originals) into a scratch folder given first, so
# the committed seeds never change under git. To shrink one: cargo +nightly fuzz cmin TARGET.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target" "$scratch/$target"
  echo "== $target, ${seconds}s"
  cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -jobs=1 -workers=1 \
    -print_final_stats=1 2>&1 | grep -E "stat::number_of_executed_units|ERROR|SUMMARY|crash-|Done" || true
done
ls artifacts/*/crash-* 2>/dev/null && { echo "crashes found: see fuzz/artifacts"; exit 1; } || echo "no crashes"
