#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, one after another, from the seeds in seeds/.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the stable toolchain use the
# nightly-only sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "== $target (${secs}s)"
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$secs" -max_len=4096 2>&1 \
    | grep -E '^(Done|==[0-9]+== ERROR|SUMMARY)|panicked' || true
done
