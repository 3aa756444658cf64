#!/usr/bin/env bash
# The whole test suite, as CI runs it (this is the README's test command):
#   1. formatting and lints, the module layering (scripts/arch-metrics.py --check: no import
#      cycle, no App below the composition root), and the dependency policy (cargo deny:
#      licenses, duplicate crates, sources; deny.toml);
#   2. unit and integration tests (the real edgeauth binary on loopback, against an in-process
#      fake Keycloak for the Keycloak tier's fault tests), and each benchmark run once; then
#      each fuzz target for 60 s (scripts/fuzz.sh: config parser, HTTP router, JWT; a crash
#      fails the run);
#   3. the end-to-end suite (tests/e2e.rs) against a real Keycloak that scripts/keycloak.sh
#      fetches from Maven Central (checksums verified, cached in ~/.cache/edgeauth) and starts
#      on 127.0.0.1 with the test realm; it fails, never skips, if Keycloak cannot be had;
#      then, while that Keycloak runs, a short load comparison of forward-auth (scripts/load.sh:
#      edgeauth and oauth2-proxy, 2 interleaved rounds of 3 s; it reports figures, it does not
#      judge speed, and fails only if a target stops answering 2xx);
#   4. the same tests for aarch64 under qemu, a check that the aarch64 and armv7 release
#      binaries are static and within their size budget, and a name resolution test of both
#      (/etc/hosts, DNS, NXDOMAIN) under plain qemu (scripts/cross-dns-test.sh).
#
# For quick local iteration only (CI never sets them):
#   EDGEAUTH_SKIP_E2E=1    skip step 3          EDGEAUTH_SKIP_CROSS=1  skip step 4
#   EDGEAUTH_SKIP_FUZZ=1   skip the fuzzing of step 2
#   --fast                 all three
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == --fast ]]; then
  EDGEAUTH_SKIP_E2E=1
  EDGEAUTH_SKIP_CROSS=1
  EDGEAUTH_SKIP_FUZZ=1
elif (($#)); then
  echo "usage: $0 [--fast]" >&2
  exit 2
fi

step() { printf '\n== %s\n' "$*"; }

# tests/clock.rs runs the binary with its clock set back by libfaketime (Debian's faketime).
if ! command -v faketime >/dev/null 2>&1; then
  step "installing faketime (Debian package, for tests/clock.rs)"
  apt-get update -qq && apt-get install -y -qq faketime >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

# docs/ARCHITECTURE.md's layering: no import cycle, no App below the composition root.
step "module layering (scripts/arch-metrics.py --check)"
python3 scripts/arch-metrics.py --check >/dev/null || {
  python3 scripts/arch-metrics.py | sed -n '1,/top-level module edges/p'
  exit 1
}

# The advisory check needs the RustSec database from the internet, which CI cannot fetch:
# docs/SECURITY.md says how to run it where there is internet.
if ! cargo deny --version >/dev/null 2>&1; then
  step "installing cargo-deny (crates.io)"
  cargo install cargo-deny --locked
fi
step "cargo deny check licenses bans sources (deny.toml)"
cargo deny --frozen check licenses bans sources

# Every test target but e2e, which needs the real Keycloak (step 3).
targets=(--lib --bins --benches)
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ $name == e2e ]] || targets+=(--test "$name")
done
step "cargo test (unit, integration against the fake Keycloak, and each benchmark run once)"
cargo test --locked "${targets[@]}"

if [[ ${EDGEAUTH_SKIP_FUZZ:-0} == 1 ]]; then
  echo "EDGEAUTH_SKIP_FUZZ=1: NOT fuzzing"
else
  step "fuzzing: each target for 60 s (scripts/fuzz.sh; installs nightly and cargo-fuzz if missing)"
  started=$SECONDS
  scripts/fuzz.sh 60
  echo "fuzzing: $((SECONDS - started)) s"
fi

if [[ ${EDGEAUTH_SKIP_E2E:-0} == 1 ]]; then
  echo "EDGEAUTH_SKIP_E2E=1: NOT running the end-to-end suite against a real Keycloak"
else
  step "end-to-end suite against a real Keycloak (scripts/keycloak.sh, tests/e2e.rs)"
  cargo test --locked --test e2e --no-run
  # Leave a Keycloak that was already running (a developer's) as it was; stop the one we start.
  if ! scripts/keycloak.sh status >/dev/null 2>&1; then
    trap 'scripts/keycloak.sh stop || true' EXIT
  fi
  started=$SECONDS
  scripts/keycloak.sh start
  echo "Keycloak ready in $((SECONDS - started)) s"
  eval "$(scripts/keycloak.sh env)"
  started=$SECONDS
  cargo test --locked --test e2e
  echo "end-to-end suite: $((SECONDS - started)) s"
  step "load comparison: edgeauth and oauth2-proxy forward-auth (scripts/load.sh; figures, no speed check)"
  started=$SECONDS
  scripts/load.sh
  echo "load comparison: $((SECONDS - started)) s"
  if [[ -n $(trap -p EXIT) ]]; then
    scripts/keycloak.sh stop
    trap - EXIT
  fi
fi

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
