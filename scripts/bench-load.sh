#!/usr/bin/env bash
# Load and footprint figures of the release binary on loopback (docs/PERFORMANCE.md):
# session validation req/s over HTTP (wrk), idle RSS, start-to-ready time, binary size.
# Usage: scripts/bench-load.sh [seconds-of-load]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package)"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --locked --bin edgeauth
exec python3 scripts/bench_load.py "${1:-10}"
