#!/usr/bin/env bash
# Name resolution of the static release binaries, run the way a minimal box runs them.
#
# Usage: scripts/cross-dns-test.sh [TARGET...]
#   default targets: armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl
#   also supported:  x86_64-unknown-linux-musl (runs natively)
#
# For each target it takes dist/edgeauth-<target> (built with scripts/build-release.sh TARGET
# if missing) and runs `edgeauth --config FILE diagnose` under plain qemu-arm / qemu-aarch64
# (no -L: no foreign shared libraries or sysroot, like a minimal box). diagnose resolves the
# [keycloak] host with std's ToSocketAddrs, i.e. libc getaddrinfo, the same path the HTTP
# client uses, and prints `OK   dns  HOST -> ADDR, ...` or `FAIL dns ...`. Cases:
#   hosts    keycloak-hosts.site.test, only in the private /etc/hosts    -> OK, 10.9.8.7
#   dns      keycloak.edgeauth.test, only answered by
#            scripts/dns-test-responder.py on 127.0.0.1:53              -> OK, 10.20.30.40
#   unknown  keycloak-unknown.site.test (NXDOMAIN)                        -> FAIL dns line in < 5 s
# Only the dns line is checked (the tcp check after it fails: nothing listens there).
#
# Isolation: everything runs inside private mount + network + pid namespaces (unshare; as
# root directly, otherwise in a user namespace with --map-root-user). Private copies of
# /etc/hosts, /etc/resolv.conf and /etc/nsswitch.conf (`hosts: files dns`) are bind-mounted
# over the real ones inside the mount namespace only; the real files are never modified.
# resolv.conf cannot name a port, so the responder needs 127.0.0.1:53: the private network
# namespace has only `lo`, so that port never collides with a resolver on the host and no
# query can leave the machine. When the namespace's first process exits, the kernel kills
# everything left in its pid namespace (responder, qemu), so nothing outlives the test.
#
# Prints one PASS/FAIL line per target and case; exits non-zero if any case failed.
# Env:
#   SKIP_BUILD=1                  require dist/edgeauth-<target>, never build it
#   SKIP_DEPS=1                   don't run scripts/install-cross-deps.sh when qemu is missing
#   DIST_DIR                      where the binaries are (default: <repo>/dist)
#   EDGEAUTH_DNS_TEST_RUN_TIMEOUT seconds per binary run (default 30)
set -euo pipefail

script_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
script_dir=$(dirname "$script_path")
repo_root=$(cd "$script_dir/.." && pwd)

all_targets=(armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
default_targets=(armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl)

hosts_name=keycloak-hosts.site.test
hosts_addr=10.9.8.7
dns_name=keycloak.edgeauth.test     # the responder answers *.edgeauth.test
dns_addr=10.20.30.40
unknown_name=keycloak-unknown.site.test
unknown_max_ms=5000
run_timeout=${EDGEAUTH_DNS_TEST_RUN_TIMEOUT:-30}

die() { echo "cross-dns-test: ERROR: $*" >&2; exit 2; }
say() { echo "cross-dns-test: $*" >&2; }

runner_for() {
  case "$1" in
    aarch64-*) echo qemu-aarch64 ;;
    armv7-*)   echo qemu-arm ;;
    x86_64-*)  echo "" ;;
  esac
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ------------------------------------------------------------------ inside the namespaces
inner() {
  local work=$1; shift
  local failures=0
  responder_pid=""   # global: the EXIT trap runs after this function has returned

  # lo is down in a fresh network namespace; 127.0.0.1 needs it up.
  if command -v ip >/dev/null; then
    ip link set lo up
  else
    python3 - <<'PY'
import fcntl, socket, struct
s = socket.socket()
req = struct.pack("16sH14s", b"lo", 0, b"")
flags = struct.unpack("16sH14s", fcntl.ioctl(s, 0x8913, req))[1]          # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, b""))    # SIOCSIFFLAGS, IFF_UP
PY
  fi

  local f
  for f in hosts resolv.conf nsswitch.conf; do
    [[ -e /etc/$f ]] || die "/etc/$f does not exist (or is a dangling symlink); cannot bind-mount over it"
    mount --bind "$work/etc/$f" "/etc/$f"
    cmp -s "$work/etc/$f" "/etc/$f" || die "bind mount over /etc/$f did not take effect"
  done

  trap 'if [[ -n "${responder_pid:-}" ]]; then kill "$responder_pid" 2>/dev/null || true; fi' EXIT
  python3 -u "$script_dir/dns-test-responder.py" >"$work/responder.log" 2>&1 &
  responder_pid=$!
  # Ready when both the UDP and the TCP socket are bound to 127.0.0.1:53 (0100007F:0035).
  local deadline=$(($(now_ms) + 10000))
  until grep -q '0100007F:0035 ' /proc/net/udp 2>/dev/null && grep -q '0100007F:0035 ' /proc/net/tcp 2>/dev/null; do
    if ! kill -0 "$responder_pid" 2>/dev/null || (($(now_ms) > deadline)); then
      awk '{ print "  responder: " $0 }' "$work/responder.log" >&2
      die "dns-test-responder.py did not start listening on 127.0.0.1:53"
    fi
    sleep 0.05
  done

  local t runner bin case name want_ok want_addr out rc start ms dnsline verdict why
  for t in "$@"; do
    runner=$(runner_for "$t")
    bin="$work/bin/edgeauth-$t"
    for case in hosts dns unknown; do
      case "$case" in
        hosts)   name=$hosts_name;   want_ok=1; want_addr=$hosts_addr ;;
        dns)     name=$dns_name;     want_ok=1; want_addr=$dns_addr ;;
        unknown) name=$unknown_name; want_ok=0; want_addr="" ;;
      esac
      start=$(now_ms)
      rc=0
      # $runner is empty for the native target (unquoted on purpose: no empty argument).
      # shellcheck disable=SC2086
      out=$(cd "$work/$t" && timeout -k 2 "$run_timeout" $runner "$bin" --config "config-$case.toml" diagnose 2>&1) || rc=$?
      ms=$(($(now_ms) - start))
      dnsline=$(grep -E '^(OK  |FAIL) dns ' <<<"$out" | head -n 1 || true)
      why=""
      if ((rc == 124 || rc == 137)); then
        why="timed out after ${run_timeout}s"
      elif [[ -z "$dnsline" ]]; then
        why="no dns line (exit $rc)"
      elif ((want_ok)); then
        if [[ "$dnsline" != "OK   dns "* ]]; then
          why="expected OK"
        elif ! grep -qE -- "-> (.*, )?${want_addr//./\\.}(,|\$)" <<<"$dnsline"; then
          why="expected address $want_addr"
        elif [[ "$case" == dns ]] && ! grep -q "q=$name type=1 " "$work/responder.log"; then
          why="the responder saw no A query for $name"
        fi
      else
        if [[ "$dnsline" != "FAIL dns "* ]]; then
          why="expected FAIL"
        elif ((ms >= unknown_max_ms)); then
          why="took ${ms} ms (limit ${unknown_max_ms} ms)"
        elif ((rc == 0)); then
          why="exit status 0 despite a failed check"
        fi
      fi
      if [[ -z "$why" ]]; then verdict=PASS; else verdict=FAIL; failures=$((failures + 1)); fi
      printf '%s %-30s %-7s %s  (%d ms)%s\n' "$verdict" "$t" "$case" "${dnsline:-<none>}" "$ms" "${why:+  <- $why}"
      if [[ -n "$why" ]]; then awk '{ print "    | " $0 }' <<<"$out"; fi
    done
  done
  return $((failures > 0 ? 1 : 0))
}

if [[ "${1:-}" == __inner ]]; then
  shift
  inner "$@"
  exit $?
fi

# ------------------------------------------------------------------ outside
if (($# > 0)); then targets=("$@"); else targets=("${default_targets[@]}"); fi
for t in "${targets[@]}"; do
  case " ${all_targets[*]} " in
    *" $t "*) ;;
    *) die "unsupported target '$t' (supported: ${all_targets[*]})" ;;
  esac
done

dist=${DIST_DIR:-$repo_root/dist}
for t in "${targets[@]}"; do
  if [[ ! -x "$dist/edgeauth-$t" ]]; then
    [[ "${SKIP_BUILD:-0}" != 1 ]] || die "$dist/edgeauth-$t missing (SKIP_BUILD=1; run scripts/build-release.sh $t)"
    say "$dist/edgeauth-$t missing: building it"
    DIST_DIR=$dist "$script_dir/build-release.sh" "$t" >&2
  fi
  runner=$(runner_for "$t")
  if [[ -n "$runner" ]] && ! command -v "$runner" >/dev/null; then
    [[ "${SKIP_DEPS:-0}" != 1 ]] || die "$runner not found (SKIP_DEPS=1)"
    "$script_dir/install-cross-deps.sh" "$t"
  fi
done
for c in unshare python3 timeout mount; do
  command -v "$c" >/dev/null || die "'$c' not found"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/edgeauth-dns-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc" "$work/bin"
cat >"$work/etc/hosts" <<EOF
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
$hosts_addr $hosts_name
EOF
cat >"$work/etc/resolv.conf" <<'EOF'
nameserver 127.0.0.1
options timeout:1 attempts:1
EOF
# Pinned, so the result does not depend on the host's NSS setup (musl ignores this file).
echo 'hosts: files dns' >"$work/etc/nsswitch.conf"
for t in "${targets[@]}"; do
  # A private copy: the test must not see dist/ change under it.
  install -m 0755 "$dist/edgeauth-$t" "$work/bin/edgeauth-$t"
  mkdir -p "$work/$t/data"
  echo "dns-test-secret" >"$work/$t/secret"
  chmod 600 "$work/$t/secret"
  for case in hosts dns unknown; do
    case "$case" in
      hosts) name=$hosts_name ;; dns) name=$dns_name ;; unknown) name=$unknown_name ;;
    esac
    cat >"$work/$t/config-$case.toml" <<EOF
[server]
data_dir = "data"
[keycloak]
server = "http://$name:8080"
realm = "site"
client_id = "edgeauth"
client_secret_file = "secret"
[keycloak.resilience]
request_timeout = "1s"
EOF
  done
done

ns=(unshare --mount --net --pid --fork --kill-child --mount-proc --propagation private)
if [[ $EUID -ne 0 ]]; then ns=(unshare --user --map-root-user --mount --net --pid --fork --kill-child --mount-proc); fi
total_timeout=$((20 + ${#targets[@]} * 3 * (run_timeout + 3)))

start=$(now_ms)
rc=0
timeout -k 5 "$total_timeout" "${ns[@]}" bash "$script_path" __inner "$work" "${targets[@]}" || rc=$?
secs=$(awk -v ms=$(($(now_ms) - start)) 'BEGIN { printf "%.1f", ms / 1000 }')
case "$rc" in
  0) say "all cases passed (${#targets[@]} targets, ${secs}s)" ;;
  124|137) say "FAILED: timed out after ${total_timeout}s"; exit 1 ;;
  *) say "FAILED (exit $rc, ${secs}s)"; exit 1 ;;
esac
