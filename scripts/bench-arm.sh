#!/usr/bin/env bash
# Footprint of the static release binaries under qemu-user (docs/PERFORMANCE.md, "ARM builds"):
# size, start-to-ready (median of 10, /readyz polled every 2 ms), idle RSS 2 s after ready.
# ARM targets run under plain qemu-aarch64 / qemu-arm (no -L), x86_64-musl natively for comparison.
#
# Usage: scripts/bench-arm.sh [TARGET...]
#   default: aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl
# Uses dist/edgeauth-<target>; builds it with scripts/build-release.sh if missing
# (SKIP_BUILD=1: require it). DIST_DIR overrides dist/.
set -euo pipefail
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$script_dir/.."

if (($# > 0)); then targets=("$@"); else
  targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl)
fi
dist=${DIST_DIR:-$PWD/dist}
for t in "${targets[@]}"; do
  case "$t" in
    aarch64-unknown-linux-musl|armv7-unknown-linux-gnueabihf|x86_64-unknown-linux-musl) ;;
    *) echo "bench-arm: unsupported target '$t'" >&2; exit 2 ;;
  esac
  if [[ ! -x "$dist/edgeauth-$t" ]]; then
    if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
      echo "bench-arm: $dist/edgeauth-$t missing (SKIP_BUILD=1)" >&2; exit 2
    fi
    DIST_DIR=$dist scripts/build-release.sh "$t"
  fi
done
# Bounded: 12 starts per target plus two 2 s idle waits; qemu starts take well under a second.
exec timeout -k 10 600 python3 scripts/bench_arm.py "$dist" "${targets[@]}"
