#!/usr/bin/env bash
# Forward-auth load comparison over loopback (docs/PERFORMANCE.md): edgeauth (cookie, eas_
# bearer, Keycloak JWT), oauth2-proxy's /oauth2/auth (cookie session, bearer JWT), Authelia's
# forward-auth (when built, see docs/PERFORMANCE.md), nginx alone vs nginx + edgeauth.
# Same wrk settings for all (1 thread, 8 connections), runs interleaved A B C A B C ...
# It reports figures; it does not assert speed.
#
#   scripts/load.sh            CI mode: 2 rounds x 3 s, edgeauth and oauth2-proxy (~30 s)
#   scripts/load.sh --full     the docs figures: 5 rounds x 10 s, plus nginx, plus Authelia if
#                              AUTHELIA_BIN names a binary (or /work/authelia-build/authelia-bin exists)
#
# Keycloak targets need the env of `scripts/keycloak.sh env` (a running Keycloak; this script
# never starts or stops one). Installs (idempotent): wrk, nginx (Debian, --full only), and
# oauth2-proxy ${OAUTH2_PROXY_VERSION} into $EDGEAUTH_CACHE/load/bin by `go install`.
# EDGEAUTH_BIN=path skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

OAUTH2_PROXY_VERSION=v7.15.6
CACHE=${EDGEAUTH_CACHE:-$HOME/.cache/edgeauth}/load
mkdir -p "$CACHE/bin"

mode=ci
args=(--rounds 2 --seconds 3)
for a in "$@"; do
  case $a in
    --full) mode=full; args=(--rounds 5 --seconds 10 --nginx) ;;
    *) echo "usage: scripts/load.sh [--full]" >&2; exit 2 ;;
  esac
done

apt_install() {
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
    echo "load: installing $2 (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
apt_install wrk wrk

if [ -z "${EDGEAUTH_BIN:-}" ]; then
  cargo build --release --locked --bin edgeauth
  EDGEAUTH_BIN=${CARGO_TARGET_DIR:-target}/release/edgeauth
fi
export EDGEAUTH_BIN=$(realpath "$EDGEAUTH_BIN")

if [ -n "${EDGEAUTH_KC_URL:-}" ] && command -v go >/dev/null 2>&1; then
  if [ ! -x "$CACHE/bin/oauth2-proxy" ] || [ "$(cat "$CACHE/bin/.oauth2-proxy-version" 2>/dev/null)" != "$OAUTH2_PROXY_VERSION" ]; then
    echo "load: go install oauth2-proxy $OAUTH2_PROXY_VERSION"
    GOBIN="$CACHE/bin" GOFLAGS= go install "github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION"
    echo "$OAUTH2_PROXY_VERSION" > "$CACHE/bin/.oauth2-proxy-version"
  fi
  # Mints oauth2-proxy's cookie session with its own session store (scripts/o2p-session).
  (cd scripts/o2p-session && GOFLAGS= go build -o "$CACHE/bin/o2p-session" .)
  export OAUTH2_PROXY_BIN=$CACHE/bin/oauth2-proxy O2P_SESSION_BIN=$CACHE/bin/o2p-session
fi

if [ $mode = full ]; then
  apt_install nginx nginx
  export NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
  if [ -z "${AUTHELIA_BIN:-}" ] && [ -x /work/authelia-build/authelia-bin ]; then
    export AUTHELIA_BIN=/work/authelia-build/authelia-bin
  fi
fi

exec python3 scripts/load.py "${args[@]}"
