#!/usr/bin/env bash
# The real things the proxy and browser tests put in front of edgeauth (docs/E2E.md):
#
#   scripts/tools.sh            install what is missing (idempotent; prints what it did)
#   scripts/tools.sh env        print export lines for the tests (EDGEAUTH_NGINX, EDGEAUTH_CADDY,
#                               EDGEAUTH_CHROMIUM) of what is there; exit 1 naming what is
#                               missing; installs nothing
#
# - nginx: Debian's nginx-light (it has the auth_request module), run by the tests as an
#   unprivileged process with its own prefix, config and loopback ports.
# - Chromium: Debian's chromium, run headless; tests/browser.rs drives it through the DevTools
#   protocol with the chromiumoxide crate (a dev-dependency: nothing to install here, and no
#   browser download, which this machine could not reach anyway).
# - Caddy: `go install github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION` from the Go
#   module proxy, cached in $EDGEAUTH_CACHE/tools/caddy-$CADDY_VERSION.
# - Traefik is not installed: `go install github.com/traefik/traefik/v3/cmd/traefik` is refused
#   (its go.mod has replace directives) and a build from the module source took too long here;
#   its config (dist/traefik/) is documented and untested (docs/E2E.md).
#
# Environment: EDGEAUTH_CACHE (cache root, default $HOME/.cache/edgeauth, as scripts/keycloak.sh).
# `apt-get update` runs only when a Debian package is missing.
set -euo pipefail

readonly CADDY_VERSION=v2.11.9
readonly CACHE_ROOT=${EDGEAUTH_CACHE:-$HOME/.cache/edgeauth}
readonly CADDY_DIR=$CACHE_ROOT/tools/caddy-$CADDY_VERSION
readonly CADDY=$CADDY_DIR/caddy
readonly NGINX=/usr/sbin/nginx
readonly CHROMIUM=/usr/bin/chromium

log() { printf 'tools.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

nginx_ok() { [[ -x $NGINX ]] && "$NGINX" -V 2>&1 | grep -q -- --with-http_auth_request_module; }
chromium_ok() { [[ -x $CHROMIUM ]]; }
caddy_ok() { [[ -x $CADDY ]] && "$CADDY" version >/dev/null 2>&1; }

cmd_env() {
    local missing=()
    if nginx_ok; then echo "export EDGEAUTH_NGINX=$NGINX"; else missing+=("nginx with auth_request ($NGINX)"); fi
    if chromium_ok; then echo "export EDGEAUTH_CHROMIUM=$CHROMIUM"; else missing+=("chromium ($CHROMIUM)"); fi
    if caddy_ok; then echo "export EDGEAUTH_CADDY=$CADDY"; else missing+=("caddy $CADDY_VERSION ($CADDY)"); fi
    if ((${#missing[@]})); then
        log "missing: ${missing[*]}; scripts/tools.sh installs them"
        exit 1
    fi
}

install_debian() {
    local packages=()
    if nginx_ok; then
        log "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') (Debian, $NGINX) already installed"
    else
        packages+=(nginx-light)
    fi
    if chromium_ok; then
        log "chromium: $("$CHROMIUM" --version 2>/dev/null | head -1) (Debian, $CHROMIUM) already installed"
    else
        packages+=(chromium)
    fi
    ((${#packages[@]})) || return 0
    log "installing Debian packages: ${packages[*]} (apt-get update first)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    nginx_ok || die "nginx-light installed, but $NGINX has no auth_request module"
    chromium_ok || die "chromium installed, but $CHROMIUM is missing"
    log "installed: ${packages[*]}"
}

install_caddy() {
    if caddy_ok; then
        log "caddy: $CADDY_VERSION cached in $CADDY_DIR"
        return 0
    fi
    command -v go >/dev/null || die "go not found (needed once to build Caddy)"
    log "building Caddy $CADDY_VERSION with go install (a few minutes, once)"
    local started=$SECONDS tmp
    mkdir -p "$CACHE_ROOT/tools"
    tmp=$(mktemp -d "$CACHE_ROOT/tools/caddy.XXXXXX")
    # Into a temp dir first: an interrupted build never leaves a half-written binary in the cache.
    if ! GOBIN=$tmp go install "github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION"; then
        rm -rf "$tmp"
        die "go install of Caddy $CADDY_VERSION failed"
    fi
    chmod 755 "$tmp"
    rm -rf "$CADDY_DIR"
    mv "$tmp" "$CADDY_DIR"
    caddy_ok || die "$CADDY does not run"
    log "caddy: $CADDY_VERSION built in $((SECONDS - started)) s, cached in $CADDY_DIR"
}

case ${1:-install} in
install)
    install_debian
    install_caddy
    log "browser driver: the chromiumoxide crate (a cargo dev-dependency, built with the tests)"
    ;;
env) cmd_env ;;
*)
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
