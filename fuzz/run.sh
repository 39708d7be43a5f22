#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (default 180) on its seeds; findings go to artifacts/.
set -u
cd "$(dirname "$0")"
secs=${SECS:-180}
for t in form basic token manifest dn; do
  mkdir -p "corpus/$t"
  cp -n seeds/$t/* "corpus/$t/" 2>/dev/null
  echo "== $t ($secs s)"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 2>&1 | grep -E "^#[0-9]+.*(DONE|pulse)|Done|ERROR|panicked|SUMMARY|crash-|cov:" | tail -3
done
