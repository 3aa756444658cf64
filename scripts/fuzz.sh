#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each and fails if one crashes:
#   scripts/fuzz.sh [SECONDS]      (default 60 per target)
#
# Targets (fuzz/fuzz_targets/): config (TOML text -> Config + validate), access (the access
# rules and path normalisation on any request), router (the HTTP
# router in-process: methods, paths, headers, cookies, bearers, forwarded addresses, JSON
# bodies) and jwt (JWKS documents and tokens). Each starts from its seed corpus in
# fuzz/seeds/TARGET (kept small, in the repo; never written to: new inputs go to a temp dir).
# A crash leaves its input in fuzz/artifacts/TARGET/; replay it with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# and, once fixed, copy it into fuzz/seeds/TARGET so it stays fixed.
#
# Needs the nightly toolchain and cargo-fuzz: installed here when missing (rustup, crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1)); then
  echo "usage: $0 [SECONDS per target]" >&2
  exit 2
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# The fuzz crate is a workspace of its own with its own lock file; build every target first so
# the timed runs measure fuzzing, not compiling.
started=$SECONDS
cargo +nightly fuzz build --sanitizer none
echo "fuzz targets built in $((SECONDS - started)) s"

mapfile -t targets < <(cargo +nightly fuzz list)
failed=()
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  log="$work/log"
  mkdir -p "fuzz/artifacts/$t" "$work/corpus"
  echo "== fuzz $t for ${secs} s"
  if cargo +nightly fuzz run --sanitizer none "$t" "$work/corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1536 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    found=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
    echo "   $t: ${runs:-?} executions in ${secs} s, ${found:-?} new inputs, no crash"
  else
    echo "   $t: CRASH (or fuzzer error); the end of its log:"
    tail -40 "$log" | sed 's/^/   | /'
    ls "fuzz/artifacts/$t/" 2>/dev/null | sed 's/^/   artifact: /' || true
    failed+=("$t")
  fi
  rm -rf "$work"
done

if ((${#failed[@]})); then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${secs} s each, no crash"
