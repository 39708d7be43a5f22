#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (default 180) on its seeds; findings go to artifacts/.
set -u
cd "$(dirname "$0")"
secs=${SECS:-180}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz --version 0.13.2" >&2; exit 1; }
status=0
for t in form basic token manifest dn; do
  mkdir -p "corpus/$t"
  cp -n seeds/$t/* "corpus/$t/" 2>/dev/null
  echo "== $t ($secs s)"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 >"corpus/$t.log" 2>&1
  rc=$?
  grep -E "^#[0-9]+.*(DONE|pulse)|Done|ERROR|panicked|SUMMARY|crash-|cov:" "corpus/$t.log" | tail -3
  # A finding, or a build that failed, fails the run (the log says which).
  [ "$rc" -eq 0 ] || { echo "$t: exit $rc, see fuzz/corpus/$t.log" >&2; status=1; }
done
exit $status
