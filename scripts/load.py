#!/usr/bin/env python3
"""Forward-auth load comparison over loopback; called by scripts/load.sh (docs/PERFORMANCE.md).

Every target gets the same wrk settings (1 thread, 8 connections, --latency), and the runs are
interleaved: round 1 runs A B C ..., round 2 runs A B C ... again, so drift on the shared box
hits every target alike. Per target it prints the median over rounds of req/s, p50 and p99,
and the req/s range. It reports figures; it never fails on speed (only on a target that does
not answer 2xx, which would make its figure meaningless).

Targets (each only when its prerequisites are there; the script says which it skipped):
  edgeauth cookie / eas_ bearer / Keycloak JWT bearer   (GET /api/v1/verify when the build has
      it, else GET /api/v1/session, the same cookie -> identify -> validate -> answer -> log path)
  oauth2-proxy /oauth2/auth with its cookie session and with a bearer JWT   (needs Keycloak)
  Authelia /api/authz/forward-auth with its session cookie   (AUTHELIA_BIN; never in CI)
  nginx alone vs nginx + edgeauth (auth_request) in front of the same app   (--nginx / --full)

Environment: EDGEAUTH_BIN, OAUTH2_PROXY_BIN, O2P_SESSION_BIN, AUTHELIA_BIN, NGINX_BIN, and the
Keycloak variables of `scripts/keycloak.sh env` (EDGEAUTH_KC_URL, _REALM, _CLIENT, _SECRET,
_HEALTH_URL). Traffic goes to 127.0.0.1 only.
"""
import argparse, base64, json, os, re, shutil, signal, socket, statistics, subprocess, sys
import tempfile, time, urllib.error, urllib.parse, urllib.request

CONNS, THREADS = 8, 1
KC_USER, KC_PASSWORD = "alice", "alice-password-1"
LOCAL_USER, LOCAL_PASSWORD = "bench", "bench-password-1"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(url, headers=None, data=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except OSError:
        return None, {}, b""


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def wait_http(url, ok=lambda s: s is not None and s < 500, deadline=30.0, proc=None):
    t0 = time.time()
    while time.time() - t0 < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"load: {url}: the server exited ({proc.returncode})")
        if ok(http(url)[0]):
            return
        time.sleep(0.05)
    raise SystemExit(f"load: {url} did not answer within {deadline}s")


class Procs:
    """Every process this script starts, stopped by its own pid at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, logfile, env=None, cwd=None):
        f = open(logfile, "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


# ---------------------------------------------------------------- wrk


def wrk(url, headers, seconds):
    argv = ["wrk", "-t", str(THREADS), "-c", str(CONNS), "-d", f"{seconds}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "requests": requests, "p50": p50, "p99": p99, "bad": int(bad.group(1)) if bad else 0,
            "errors": errors.group(1) if errors else ""}


def cpu_seconds(pids):
    """User + system CPU time of these processes and their children's live threads."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def with_children(pid):
    """pid and the processes it started (nginx's workers)."""
    out = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


# ---------------------------------------------------------------- Keycloak


def kc_env():
    need = ["EDGEAUTH_KC_URL", "EDGEAUTH_KC_REALM", "EDGEAUTH_KC_CLIENT", "EDGEAUTH_KC_SECRET"]
    if not all(os.environ.get(k) for k in need):
        return None
    kc = {k: os.environ[k] for k in need}
    kc["EDGEAUTH_KC_HEALTH_URL"] = os.environ.get("EDGEAUTH_KC_HEALTH_URL", "")
    base = f"{kc['EDGEAUTH_KC_URL']}/realms/{kc['EDGEAUTH_KC_REALM']}"
    if http(f"{base}/.well-known/openid-configuration")[0] != 200:
        log(f"load: Keycloak at {kc['EDGEAUTH_KC_URL']} does not answer: Keycloak targets skipped")
        return None
    kc["issuer"] = base
    return kc


def kc_tokens(kc):
    """A fresh token response (access, id, refresh) by the password grant: tokens live 5 min."""
    body = urllib.parse.urlencode({
        "grant_type": "password", "client_id": kc["EDGEAUTH_KC_CLIENT"],
        "client_secret": kc["EDGEAUTH_KC_SECRET"], "username": KC_USER,
        "password": KC_PASSWORD, "scope": "openid"}).encode()
    s, _, b = http(f"{kc['issuer']}/protocol/openid-connect/token", data=body)
    if s != 200:
        raise SystemExit(f"load: Keycloak token request: {s} {b[:200]!r}")
    return json.loads(b)


# ---------------------------------------------------------------- the servers


def start_edgeauth(procs, d, kc, bin_):
    port = free_port()
    cfg = os.path.join(d, "edgeauth.toml")
    text = (f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{d}/edgeauth-data"\n'
            'trusted_proxies = ["127.0.0.1/32"]\npublic_metrics = true\n')
    if kc:
        secret = os.path.join(d, "kc-secret")
        with open(secret, "w") as f:
            f.write(kc["EDGEAUTH_KC_SECRET"] + "\n")
        os.chmod(secret, 0o600)
        text += (f'[keycloak]\nserver = "{kc["EDGEAUTH_KC_URL"]}"\n'
                 f'realm = "{kc["EDGEAUTH_KC_REALM"]}"\nclient_id = "{kc["EDGEAUTH_KC_CLIENT"]}"\n'
                 f'client_secret_file = "{secret}"\n')
        if kc["EDGEAUTH_KC_HEALTH_URL"]:
            text += f'health_url = "{kc["EDGEAUTH_KC_HEALTH_URL"]}"\n'
    with open(cfg, "w") as f:
        f.write(text)
    if not kc:
        subprocess.run([bin_, "--config", cfg, "user", "add", LOCAL_USER, "--local",
                        "--password-stdin"], input=LOCAL_PASSWORD + "\n", text=True,
                       check=True, capture_output=True)
    env = dict(os.environ, EDGEAUTH_LOG="info")
    p = procs.start([bin_, "--config", cfg, "serve"], os.path.join(d, "edgeauth.log"), env=env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz", ok=lambda s: s == 200, proc=p)
    user, pw = (KC_USER, KC_PASSWORD) if kc else (LOCAL_USER, LOCAL_PASSWORD)
    s, _, b = http(f"{base}/api/v1/login", headers={"content-type": "application/json"},
                   data=json.dumps({"username": user, "password": pw}).encode())
    if s != 200:
        raise SystemExit(f"load: edgeauth login: {s} {b[:300]!r}")
    sid = json.loads(b)["session_id"]
    # The forward-auth endpoint when this build has it (an nginx auth_request subrequest),
    # else the session check, which runs the same path.
    fwd = ["X-Original-URL: http://app.site.test/", "X-Original-Method: GET"]
    path, extra = "/api/v1/verify", fwd
    if http(f"{base}{path}", headers=hdict([f"Cookie: edgeauth_session={sid}"] + fwd))[0] != 200:
        path, extra = "/api/v1/session", []
    log(f"load: edgeauth {bin_} on {base}, endpoint {path}")
    return {"base": base, "url": base + path, "path": path, "sid": sid, "extra": extra,
            "log": os.path.join(d, "edgeauth.log"), "pid": p.pid}


def store_commits(ea):
    """edgeauth_store_commits_total, or None on a build without it."""
    s, _, b = http(f"{ea['base']}/metrics")
    m = re.search(rb"^edgeauth_store_commits_total (\d+)", b, re.M) if s == 200 else None
    return int(m.group(1)) if m else None


def hdict(lines):
    return dict(l.split(": ", 1) for l in lines)


def start_oauth2_proxy(procs, d, kc, bin_):
    port = free_port()
    secret = base64.urlsafe_b64encode(os.urandom(32)).decode()
    argv = [bin_, "--provider=keycloak-oidc", f"--oidc-issuer-url={kc['issuer']}",
            f"--client-id={kc['EDGEAUTH_KC_CLIENT']}", f"--client-secret={kc['EDGEAUTH_KC_SECRET']}",
            f"--cookie-secret={secret}", "--cookie-secure=false", "--email-domain=*",
            "--upstream=static://200", f"--http-address=127.0.0.1:{port}",
            f"--redirect-url=http://127.0.0.1:{port}/oauth2/callback", "--code-challenge-method=S256",
            # Bearer JWTs: Keycloak's access tokens name the client in azp, not aud.
            "--skip-jwt-bearer-tokens=true", "--oidc-audience-claim=aud", "--oidc-audience-claim=azp"]
    p = procs.start(argv, os.path.join(d, "oauth2-proxy.log"))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/ping", ok=lambda s: s == 200, proc=p)
    log(f"load: oauth2-proxy {bin_} on {base}")
    return {"base": base, "url": f"{base}/oauth2/auth", "secret": secret, "pid": p.pid}


def o2p_cookie(o2p, tokens):
    out = subprocess.run([os.environ["O2P_SESSION_BIN"], o2p["secret"]], input=json.dumps(tokens),
                         capture_output=True, text=True, check=True).stdout.strip()
    return out


AUTHELIA_CONFIG = """
server:
  address: 'tcp://127.0.0.1:{port}/'
log:
  level: 'info'
theme: 'light'
identity_validation:
  reset_password:
    jwt_secret: '{secret1}'
authentication_backend:
  password_reset:
    disable: true
  file:
    path: '{d}/users.yml'
    password:
      algorithm: 'argon2'
      argon2:
        variant: 'argon2id'
        iterations: 1
        memory: 65536
        parallelism: 2
access_control:
  default_policy: 'one_factor'
session:
  secret: '{secret2}'
  cookies:
    - domain: 'site.test'
      authelia_url: 'https://auth.site.test'
storage:
  encryption_key: '{secret3}'
  local:
    path: '{d}/authelia.sqlite3'
notifier:
  filesystem:
    filename: '{d}/notification.txt'
"""


def start_authelia(procs, d, bin_):
    port = free_port()
    ad = os.path.join(d, "authelia")
    os.makedirs(ad, exist_ok=True)
    h = subprocess.run([bin_, "crypto", "hash", "generate", "argon2", "--password", LOCAL_PASSWORD,
                        "--no-confirm"], capture_output=True, text=True, check=True).stdout
    digest = re.search(r"(\$argon2\S+)", h).group(1)
    with open(os.path.join(ad, "users.yml"), "w") as f:
        f.write(f"users:\n  {LOCAL_USER}:\n    displayname: 'Bench'\n    password: '{digest}'\n"
                f"    email: 'bench@site.test'\n    groups: []\n")
    sec = lambda: base64.b32encode(os.urandom(40)).decode().lower()
    cfg = os.path.join(ad, "configuration.yml")
    with open(cfg, "w") as f:
        f.write(AUTHELIA_CONFIG.format(port=port, d=ad, secret1=sec(), secret2=sec(), secret3=sec()))
    p = procs.start([bin_, "--config", cfg], os.path.join(d, "authelia.log"),
                    env=dict(os.environ, X_AUTHELIA_CONFIG_FILTERS=""), cwd=ad)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/health", ok=lambda s: s == 200, proc=p)
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "auth.site.test",
           "X-Forwarded-URI": "/", "X-Forwarded-For": "127.0.0.1"}
    s, hs, b = http(f"{base}/api/firstfactor", data=json.dumps(
        {"username": LOCAL_USER, "password": LOCAL_PASSWORD, "keepMeLoggedIn": False}).encode(),
        headers=dict(fwd, **{"content-type": "application/json"}))
    cookie = None
    for k, v in (hs.items() if hs else []):
        if k.lower() == "set-cookie" and v.startswith("authelia_session="):
            cookie = v.split(";", 1)[0]
    if s != 200 or not cookie:
        raise SystemExit(f"load: Authelia first factor: {s} {b[:300]!r}")
    app = ["X-Forwarded-Method: GET", "X-Forwarded-Proto: https", "X-Forwarded-Host: app.site.test",
           "X-Forwarded-URI: /", "X-Forwarded-For: 127.0.0.1", f"Cookie: {cookie}"]
    log(f"load: Authelia {bin_} on {base}")
    return {"url": f"{base}/api/authz/forward-auth", "headers": app, "pid": p.pid}


NGINX_CONF = """
worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  upstream app {{ server 127.0.0.1:{app}; keepalive 32; }}
  upstream edgeauth {{ server {edgeauth}; keepalive 32; }}
  # The app: the same tiny answer behind both fronts.
  server {{ listen 127.0.0.1:{app}; location / {{ return 200 "ok\\n"; }} }}
  # nginx alone in front of the app.
  server {{
    listen 127.0.0.1:{alone};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  # nginx + edgeauth: every request asks edgeauth first (auth_request).
  server {{
    listen 127.0.0.1:{guarded};
    location / {{
      auth_request /_edgeauth;
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
    }}
    location = /_edgeauth {{
      internal;
      proxy_pass http://edgeauth{path};{method}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}
  }}
}}
"""


def start_nginx(procs, d, ea, bin_):
    nd = os.path.join(d, "nginx")
    os.makedirs(os.path.join(nd, "tmp"), exist_ok=True)
    app, alone, guarded = free_port(), free_port(), free_port()
    conf = os.path.join(nd, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(d=nd, app=app, alone=alone, guarded=guarded,
                                  edgeauth=ea["base"].removeprefix("http://"), path=ea["path"],
                                  # nginx does not read the body of an auth_request answer, so
                                  # it closes the upstream connection after one with a body.
                                  # The session check's 200 has a JSON body: ask it by HEAD.
                                  # (verify's 200 has none, and is asked by GET as dist/ does.)
                                  method=" proxy_method HEAD;" if ea["path"] == "/api/v1/session" else ""))
    p = procs.start([bin_, "-p", nd, "-c", conf], os.path.join(d, "nginx.log"))
    wait_http(f"http://127.0.0.1:{alone}/", ok=lambda s: s == 200, proc=p)
    s = http(f"http://127.0.0.1:{guarded}/", headers={"Cookie": f"edgeauth_session={ea['sid']}"})[0]
    if s != 200:
        raise SystemExit(f"load: nginx + edgeauth answered {s}")
    log(f"load: nginx {bin_}: alone on {alone}, with edgeauth on {guarded}")
    return {"alone": f"http://127.0.0.1:{alone}/", "guarded": f"http://127.0.0.1:{guarded}/",
            "pid": p.pid}


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--nginx", action="store_true")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    procs = Procs()
    d = tempfile.mkdtemp(prefix="edgeauth-load-")
    try:
        kc = kc_env()
        ea = start_edgeauth(procs, d, kc, os.environ["EDGEAUTH_BIN"])
        cookie = f"Cookie: edgeauth_session={ea['sid']}"
        # name -> (url, function giving the headers for this round)
        eap = lambda: [ea["pid"]]
        targets = {
            "edgeauth cookie": (ea["url"], lambda t: ea["extra"] + [cookie], eap),
            "edgeauth eas_ bearer": (ea["url"], lambda t: ea["extra"] + [f"Authorization: Bearer {ea['sid']}"], eap),
        }
        skipped = []
        tokens = kc_tokens(kc) if kc else None
        if kc:
            jwt = [f"Authorization: Bearer {tokens['access_token']}"]
            if http(ea["url"], headers=hdict(ea["extra"] + jwt))[0] == 200:
                targets["edgeauth Keycloak JWT"] = (
                    ea["url"], lambda t: ea["extra"] + [f"Authorization: Bearer {t['access_token']}"], eap)
            else:
                skipped.append("edgeauth Keycloak JWT (this build does not take JWT bearers)")
        else:
            skipped.append("Keycloak targets (no Keycloak: eval \"$(scripts/keycloak.sh env)\")")
        if kc and os.environ.get("OAUTH2_PROXY_BIN"):
            o2p = start_oauth2_proxy(procs, d, kc, os.environ["OAUTH2_PROXY_BIN"])
            op = lambda: [o2p["pid"]]
            targets["oauth2-proxy cookie"] = (o2p["url"], lambda t: [f"Cookie: {o2p_cookie(o2p, t)}"], op)
            targets["oauth2-proxy JWT"] = (o2p["url"], lambda t: [f"Authorization: Bearer {t['access_token']}"], op)
        elif kc:
            skipped.append("oauth2-proxy (OAUTH2_PROXY_BIN not set)")
        if os.environ.get("AUTHELIA_BIN"):
            au = start_authelia(procs, d, os.environ["AUTHELIA_BIN"])
            targets["Authelia cookie"] = (au["url"], lambda t: au["headers"], lambda: [au["pid"]])
        if args.nginx and os.environ.get("NGINX_BIN"):
            ng = start_nginx(procs, d, ea, os.environ["NGINX_BIN"])
            targets["nginx alone -> app"] = (ng["alone"], lambda t: [cookie], lambda: with_children(ng["pid"]))
            targets["nginx + edgeauth -> app"] = (
                ng["guarded"], lambda t: [cookie], lambda: with_children(ng["pid"]) + [ea["pid"]])
        elif args.nginx:
            skipped.append("nginx (NGINX_BIN not set)")

        results = {name: [] for name in targets}
        log(f"load: {len(targets)} targets, {args.rounds} interleaved rounds of {args.seconds}s each, "
            f"wrk -t{THREADS} -c{CONNS}")
        for r in range(args.rounds):
            if kc:
                tokens = kc_tokens(kc)  # Keycloak's tokens live 5 minutes: fresh ones each round
            for name, (url, headers, pids) in targets.items():
                h = headers(tokens)
                s = http(url, headers=hdict(h))[0]
                if s is None or not 200 <= s < 300:
                    raise SystemExit(f"load: {name}: {url} answered {s} before the run")
                c0 = store_commits(ea) if name.startswith("edgeauth") else None
                watched = pids()
                cpu0 = cpu_seconds(watched)
                res = wrk(url, h, args.seconds)
                # CPU the server(s) spent per request: steadier than req/s on a shared box.
                res["cpu_us"] = (cpu_seconds(watched) - cpu0) * 1e6 / max(1, res["requests"])
                if c0 is not None:
                    # Design rule 8: forward-auth only reads. The activity flush (one commit
                    # every 10 s for all sessions) is the only writer during a run.
                    res["commits"] = store_commits(ea) - c0
                if res["bad"] or res["errors"]:
                    raise SystemExit(f"load: {name}: {res['bad']} answers not 2xx, socket errors "
                                     f"{res['errors'] or 'none'}: its figure would mean nothing")
                results[name].append(res)
                log(f"  round {r + 1} {name:26} {res['rps']:>9.0f} req/s  p50 {res['p50']:.3f} ms"
                    f"  p99 {res['p99']:.3f} ms  server CPU {res['cpu_us']:.1f} µs/req")

        summary = {}
        print(f"\nwrk -t{THREADS} -c{CONNS} --latency, {args.rounds} interleaved rounds x {args.seconds}s; "
              f"medians over rounds; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print("| target | req/s | p50 ms | p99 ms | server CPU µs/req | req/s range |")
        print("|---|---|---|---|---|---|")
        for name, rs in results.items():
            m = {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99", "cpu_us")}
            lo, hi = min(x["rps"] for x in rs), max(x["rps"] for x in rs)
            summary[name] = dict(m, rps_min=lo, rps_max=hi, runs=rs)
            print(f"| {name} | {m['rps']:,.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['cpu_us']:.1f} "
                  f"| {lo:,.0f}–{hi:,.0f} |")
        runs = [x for name, rs in results.items() for x in rs if "commits" in x]
        if runs:
            n = sum(x["rps"] * args.seconds for x in runs)
            print(f"\nedgeauth store commits during {n:,.0f} forward-auth requests: "
                  f"{sum(x['commits'] for x in runs)} (the 10 s activity flush; none per request)")
        if "nginx alone -> app" in summary:
            a, g = summary["nginx alone -> app"], summary["nginx + edgeauth -> app"]
            print(f"\nnginx + edgeauth adds {1000 * (g['p50'] - a['p50']):.0f} µs at p50 and "
                  f"{1000 * (g['p99'] - a['p99']):.0f} µs at p99 over nginx alone")
        for s in skipped:
            print(f"skipped: {s}")
        with open(ea["log"], "rb") as f:
            lines = sum(1 for _ in f)
        print(f"edgeauth wrote {lines:,} log lines (the access log is on)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=1)
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
