#!/usr/bin/env bash
# Install everything needed to cross-build edgeauth release binaries on a
# Debian 12 (bookworm) amd64 host:
#   - rustup targets: aarch64-unknown-linux-musl, armv7-unknown-linux-gnueabihf,
#     x86_64-unknown-linux-musl
#   - cross C toolchains (ring compiles C/asm), static armhf glibc (libc.a),
#     musl-gcc for x86_64 musl, qemu-user (test runner), file (static check).
#
# Idempotent: only installs what is missing, prints nothing when everything
# is already present (unless VERBOSE=1).
#
# Usage: scripts/install-cross-deps.sh [TARGET...]   (default: all three)
# Env:   WITH_BINFMT=1  also install qemu-user-binfmt (ARM targets); optional: the
#                       integration tests put qemu in front of the binary themselves
#                       (EDGEAUTH_TEST_RUNNER, set by scripts/cross-test.sh).
#                       Not needed for release builds.
#        SKIP_APT=1     don't touch apt (just report what is missing, fail if any)
#        VERBOSE=1      say what was checked
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)

all_targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl)
if (($# > 0)); then targets=("$@"); else targets=("${all_targets[@]}"); fi

log() { if [[ "${VERBOSE:-0}" == 1 ]]; then echo "install-cross-deps: $*" >&2; fi; }
say() { echo "install-cross-deps: $*" >&2; }
die() { echo "install-cross-deps: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- apt packages
pkgs=(file)
for t in "${targets[@]}"; do
  case "$t" in
    aarch64-unknown-linux-musl)
      # gcc: linker driver + CC for ring. Rust ships musl libc.a/crt objects
      # for this target ("self-contained"), but ring's C includes <stdint.h>,
      # which the cross gcc forwards to the libc headers: libc6-dev-arm64-cross
      # (only a Recommends of the cross gcc) provides them. Without it:
      # "fatal error: bits/libc-header-start.h: No such file or directory".
      pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) ;;
    armv7-unknown-linux-gnueabihf)
      # libc6-dev-armhf-cross is only a Recommends of the cross gcc, but we
      # need its libc.a/libpthread.a etc. for +crt-static.
      pkgs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user) ;;
    x86_64-unknown-linux-musl)
      # musl-gcc: compile ring's C against musl headers (host gcc + glibc
      # headers can leave glibc-only symbols such as __*_chk behind).
      pkgs+=(musl-tools) ;;
    *) die "unsupported target '$t' (supported: ${all_targets[*]})" ;;
  esac
done
if [[ "${WITH_BINFMT:-0}" == 1 ]]; then
  for t in "${targets[@]}"; do
    [[ "$t" == x86_64-* ]] || pkgs+=(qemu-user-binfmt)
  done
fi
# de-duplicate, keep order
mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | awk '!seen[$0]++')

is_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for p in "${pkgs[@]}"; do
  if is_installed "$p"; then log "apt: $p already installed"; else missing+=("$p"); fi
done

if ((${#missing[@]} > 0)); then
  if [[ "${SKIP_APT:-0}" == 1 ]]; then
    die "missing apt packages (SKIP_APT=1): ${missing[*]}"
  fi
  command -v apt-get >/dev/null || die "apt-get not found; install manually: ${missing[*]}"
  sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  say "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # --no-install-recommends: qemu-user would otherwise always pull
  # qemu-user-binfmt; builds don't need it (cargo calls qemu explicitly via
  # CARGO_TARGET_*_RUNNER), only the integration tests do (WITH_BINFMT=1).
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- rustup targets
command -v rustup >/dev/null || die "rustup not found (install Rust via rustup first)"
# Run from the repo root so a rust-toolchain.toml there selects the toolchain.
cd "$repo_root"
installed_targets=$(rustup target list --installed)
missing_targets=()
for t in "${targets[@]}"; do
  if grep -qx -- "$t" <<<"$installed_targets"; then
    log "rustup: target $t already installed"
  else
    missing_targets+=("$t")
  fi
done
if ((${#missing_targets[@]} > 0)); then
  say "adding rustup targets: ${missing_targets[*]}"
  rustup target add "${missing_targets[@]}" >/dev/null
fi

# ---------------------------------------------------------------- sanity check
need_cmds=(file)
for t in "${targets[@]}"; do
  case "$t" in
    aarch64-unknown-linux-musl)    need_cmds+=(aarch64-linux-gnu-gcc qemu-aarch64) ;;
    armv7-unknown-linux-gnueabihf) need_cmds+=(arm-linux-gnueabihf-gcc qemu-arm) ;;
    x86_64-unknown-linux-musl)     need_cmds+=(musl-gcc) ;;
  esac
done
for c in "${need_cmds[@]}"; do
  command -v "$c" >/dev/null || die "'$c' still not found after install"
done
for t in "${targets[@]}"; do
  if [[ "$t" == armv7-unknown-linux-gnueabihf && ! -f /usr/arm-linux-gnueabihf/lib/libc.a ]]; then
    die "/usr/arm-linux-gnueabihf/lib/libc.a missing (libc6-dev-armhf-cross)"
  fi
done
log "all cross dependencies present"
