#!/bin/sh
# The long crash loop (issue 12): kill -9 at random points in a mix of acknowledged writes
# (logins, password changes, user adds), ROUNDS rounds (default 200); every write answered
# 2xx must survive. Prints "crash loop: R rounds, A acknowledged writes, L lost (seed S)".
# Set EDGEAUTH_CRASH_SEED to replay a run. The short version runs with the tests:
# `cargo test --test crash_loop`.
set -eu
cd "$(dirname "$0")/.."
rounds="${1:-200}"
EDGEAUTH_CRASH_ROUNDS="$rounds" cargo test --release --test crash_loop -- --nocapture 2>&1 \
    | grep -E '^(crash loop:|LOST|test result)'
