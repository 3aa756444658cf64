# shellcheck shell=bash
# Per-target cross-compilation environment for edgeauth.
#
#   source scripts/cross-env.sh          # in bash: export everything below
#   scripts/cross-env.sh                 # executed: print the export lines (for CI / eval)
#
# Then e.g.:
#   cargo build --release --locked --target aarch64-unknown-linux-musl
#   cargo test --target aarch64-unknown-linux-musl       # runs under qemu-aarch64
#   cargo test --target armv7-unknown-linux-gnueabihf    # runs under qemu-arm
#
# Only target-scoped variables are set (CARGO_TARGET_<TRIPLE>_*, CC_<triple>,
# AR_<triple>), so native/host builds in the same shell are unaffected.
# We deliberately use env vars instead of a committed .cargo/config.toml: the
# tool names below are Debian/Ubuntu cross-toolchain names, and a committed
# config would force them (and the qemu runner) on every developer and on
# `cross` users, whose images provide their own toolchains.
#
# Targets:
#   aarch64-unknown-linux-musl     static (musl is static by default), qemu-aarch64
#   armv7-unknown-linux-gnueabihf  static glibc via +crt-static, qemu-arm
#                                  (rustup has no armv7-unknown-linux-musleabihf std here)
#   x86_64-unknown-linux-musl      static-pie, runs natively on x86_64 hosts
#
# Knobs (set before sourcing):
#   EDGEAUTH_QEMU_ARM_SYSROOT  if set (e.g. /usr/arm-linux-gnueabihf), the armv7
#                              runner becomes "qemu-arm -L $EDGEAUTH_QEMU_ARM_SYSROOT".
#                              Default: plain qemu-arm, i.e. like a minimal box with
#                              no armhf shared libs. A static binary does not need
#                              -L; with -L a test would also pass if the binary were
#                              accidentally dynamic, or if it depended on NSS modules
#                              that only the cross sysroot has. See docs/CROSS.md.
#
# NOTE: if RUSTFLAGS or CARGO_ENCODED_RUSTFLAGS is set, cargo IGNORES
# CARGO_TARGET_<TRIPLE>_RUSTFLAGS, so the armv7 build silently loses
# +crt-static (becomes dynamic). build-release.sh refuses to run in that case.

_edgeauth_cross_env_vars() {
  local arm_runner="qemu-arm"
  if [[ -n "${EDGEAUTH_QEMU_ARM_SYSROOT:-}" ]]; then
    arm_runner="qemu-arm -L ${EDGEAUTH_QEMU_ARM_SYSROOT}"
  fi
  # name=value pairs, one per line
  cat <<VARS
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64
CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar
CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS=-C target-feature=+crt-static
CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER=${arm_runner}
CC_x86_64_unknown_linux_musl=musl-gcc
VARS
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  # executed, not sourced: print shell-quoted export lines
  while IFS='=' read -r _k _v; do
    printf 'export %s=%q\n' "$_k" "$_v"
  done < <(_edgeauth_cross_env_vars)
  exit 0
fi

while IFS='=' read -r _k _v; do
  export "$_k=$_v"
done < <(_edgeauth_cross_env_vars)
unset _k _v
unset -f _edgeauth_cross_env_vars

if [[ -n "${RUSTFLAGS:-}${CARGO_ENCODED_RUSTFLAGS:-}" ]]; then
  echo "cross-env.sh: warning: RUSTFLAGS/CARGO_ENCODED_RUSTFLAGS is set; cargo will ignore" \
       "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS (+crt-static)" >&2
fi
