#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (the integration tests
# drive the real edgeauth binary on loopback, against an in-process fake Keycloak where the
# Keycloak tier is concerned), then the same tests for aarch64 under qemu, a check that the
# aarch64 and armv7 release binaries are static and within their size budget, and a name
# resolution test of both (/etc/hosts, DNS, NXDOMAIN) under plain qemu (scripts/cross-dns-test.sh).
# This is the README's test command and what CI runs.
#
# EDGEAUTH_SKIP_CROSS=1 skips the cross part (for quick local iteration; CI never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (unit, integration, and each benchmark run once)"
cargo test --locked --all-targets

if [[ "${EDGEAUTH_SKIP_CROSS:-0}" == 1 ]]; then
  echo "EDGEAUTH_SKIP_CROSS=1: skipping the aarch64/armv7 tests under qemu"
  exit 0
fi

step "tests for aarch64-unknown-linux-musl under qemu-aarch64"
scripts/cross-test.sh aarch64-unknown-linux-musl

step "aarch64 release binary: static, size budget 8 MB"
scripts/build-release.sh aarch64-unknown-linux-musl

step "armv7 release binary: static, size budget 8 MB"
scripts/build-release.sh armv7-unknown-linux-gnueabihf

step "name resolution of the armv7 and aarch64 release binaries under plain qemu (hosts, DNS, NXDOMAIN)"
scripts/cross-dns-test.sh armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl
