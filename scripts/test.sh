#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (the integration tests
# drive the real edgeauth binary on loopback). This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (unit, integration, and each benchmark run once)"
cargo test --locked --all-targets
