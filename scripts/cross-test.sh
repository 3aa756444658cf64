#!/usr/bin/env bash
# Runs the test suite for a cross target under qemu-user.
#
# Usage: scripts/cross-test.sh TARGET [extra cargo test args...]
#   e.g. scripts/cross-test.sh aarch64-unknown-linux-musl
#        scripts/cross-test.sh armv7-unknown-linux-gnueabihf
#
# cargo starts each test binary through CARGO_TARGET_<T>_RUNNER (qemu, from cross-env.sh).
# The integration tests start the edgeauth binary themselves; they read EDGEAUTH_TEST_RUNNER
# and put the same qemu in front of it, so no binfmt_misc handler is needed.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$script_dir/.."

(($# >= 1)) || { echo "usage: $0 TARGET [cargo test args...]" >&2; exit 2; }
target=$1; shift

if [[ "${SKIP_DEPS:-0}" != 1 ]]; then
  "$script_dir/install-cross-deps.sh" "$target"
fi
# shellcheck source=scripts/cross-env.sh
source "$script_dir/cross-env.sh"

runner_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUNNER"
export EDGEAUTH_TEST_RUNNER="${!runner_var:-}"
echo "cross-test: $target, runner: ${EDGEAUTH_TEST_RUNNER:-native}" >&2
# Everything but tests/keycloak_tier.rs: those are the Keycloak tier's fault tests against the
# fake Keycloak, built on wall-clock timeouts (request_timeout 1-2 s, black holes) that an
# emulated CPU cannot meet. The fake's own self-test and all unit tests do run here. Nor
# tests/clock.rs: libfaketime cannot reach into a static binary under qemu.
if (($# == 0)); then
  set -- --lib --bins --test api --test cli --test durability --test fake_keycloak
fi
exec cargo test --locked --target "$target" "$@"
