#!/usr/bin/env bash
# Build static edgeauth release binaries for small ARM boxes (and x86_64).
#
# Usage: scripts/build-release.sh [TARGET...]
#   default targets: aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl
#
# For each target: cargo build --release --locked --target T --bin edgeauth,
# verify the artifact is statically linked for the right architecture (fails
# loudly otherwise), print its size, copy it to dist/edgeauth-<target>, and
# (re)write dist/SHA256SUMS for every dist/edgeauth-* present.
#
# Env:
#   SKIP_DEPS=1          don't run scripts/install-cross-deps.sh
#   EDGEAUTH_BIN         binary name (default: edgeauth)
#   EDGEAUTH_PROFILE     cargo profile (default: release)
#   DIST_DIR             output directory (default: <repo>/dist)
#   CARGO_TARGET_DIR     honoured as usual (default: <repo>/target)
#   CARGO_BUILD_JOBS     honoured by cargo (e.g. 1 on a shared 2-core box)
#   ALLOW_RUSTFLAGS=1    proceed even though RUSTFLAGS is set (see below)
#   EDGEAUTH_MAX_BYTES   size budget per binary (default 8000000: fail above it)
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
cd "$repo_root"

all_targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl)
if (($# > 0)); then targets=("$@"); else targets=("${all_targets[@]}"); fi

bin=${EDGEAUTH_BIN:-edgeauth}
profile=${EDGEAUTH_PROFILE:-release}
dist=${DIST_DIR:-$repo_root/dist}

die() { echo "build-release: ERROR: $*" >&2; exit 1; }
say() { echo "build-release: $*" >&2; }

for t in "${targets[@]}"; do
  case " ${all_targets[*]} " in
    *" $t "*) ;;
    *) die "unsupported target '$t' (supported: ${all_targets[*]})" ;;
  esac
done

# RUSTFLAGS / CARGO_ENCODED_RUSTFLAGS make cargo ignore
# CARGO_TARGET_<TRIPLE>_RUSTFLAGS, i.e. armv7 would lose +crt-static.
if [[ -n "${RUSTFLAGS:-}${CARGO_ENCODED_RUSTFLAGS:-}" && "${ALLOW_RUSTFLAGS:-0}" != 1 ]]; then
  die "RUSTFLAGS/CARGO_ENCODED_RUSTFLAGS is set; it would override the per-target
  rustflags (armv7 +crt-static). Unset it, or put flags in CARGO_TARGET_<TRIPLE>_RUSTFLAGS,
  or set ALLOW_RUSTFLAGS=1 (the static check below will still fail a dynamic binary)."
fi

if [[ "${SKIP_DEPS:-0}" != 1 ]]; then
  "$script_dir/install-cross-deps.sh" "${targets[@]}"
fi

# shellcheck source=scripts/cross-env.sh
source "$script_dir/cross-env.sh"

# Where does cargo put artifacts? (honours CARGO_TARGET_DIR and config build.target-dir)
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n "$target_dir" ]] || target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
# "release" and "dev" map to directories "release" and "debug"
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac

expected_arch() {
  case "$1" in
    aarch64-*) echo "ARM aarch64" ;;
    armv7-*)   echo "ARM, EABI5" ;;
    x86_64-*)  echo "x86-64" ;;
  esac
}

check_static() {
  local t=$1 f=$2 desc
  desc=$(file -b "$f")
  echo "  file: $desc"
  [[ "$desc" == *ELF* ]] || die "$t: $f is not an ELF file"
  [[ "$desc" == *"$(expected_arch "$t")"* ]] || die "$t: wrong architecture (want '$(expected_arch "$t")'): $desc"
  if [[ "$desc" == *"dynamically linked"* || ( "$desc" != *"statically linked"* && "$desc" != *"static-pie linked"* ) ]]; then
    die "$t: $f is NOT statically linked: $desc"
  fi
  if command -v readelf >/dev/null; then
    if readelf -lW "$f" | grep -q 'Requesting program interpreter'; then
      die "$t: $f has a PT_INTERP (dynamic loader) entry"
    fi
    if readelf -dW "$f" 2>/dev/null | grep -q '(NEEDED)'; then
      die "$t: $f has DT_NEEDED shared library entries: $(readelf -dW "$f" | grep NEEDED | tr -s ' ')"
    fi
  fi
}

mkdir -p "$dist"
summary=()
for t in "${targets[@]}"; do
  say "building $bin for $t (profile $profile)"
  start=$SECONDS
  cargo build --profile "$profile" --locked --target "$t" --bin "$bin"
  secs=$((SECONDS - start))
  art="$target_dir/$t/$profile_dir/$bin"
  [[ -f "$art" ]] || die "$t: expected artifact not found: $art"
  echo "== $t"
  check_static "$t" "$art"
  bytes=$(stat -c %s "$art")
  mib=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1000000 }')
  echo "  size: $bytes bytes ($mb MB, $mib MiB), build ${secs}s"
  # The product's budget (docs/PERFORMANCE.md): a stripped binary of 8 MB or less.
  max=${EDGEAUTH_MAX_BYTES:-8000000}
  ((bytes <= max)) || die "$t: $bytes bytes is over the size budget of $max bytes"
  install -m 0755 "$art" "$dist/$bin-$t"
  summary+=("$(printf '%-32s %10s bytes  %6s MiB  %4ss' "$t" "$bytes" "$mib" "$secs")")
done

# Checksums for everything in dist/ (relative names, verify with: cd dist && sha256sum -c SHA256SUMS)
(
  cd "$dist"
  shopt -s nullglob
  files=("$bin"-*)
  sha256sum -- "${files[@]}" > SHA256SUMS.tmp
  mv SHA256SUMS.tmp SHA256SUMS
)

echo
echo "== summary ($dist)"
printf '%s\n' "${summary[@]}"
echo "== $dist/SHA256SUMS"
cat "$dist/SHA256SUMS"
