#!/usr/bin/env python3
"""Measures the release binary on loopback; called by scripts/bench-load.sh.

Traffic goes to 127.0.0.1 only, bounded in time. Prints one summary block."""
import json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

BIN = os.path.abspath("target/release/edgeauth")
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def write_config(d, port, extra=""):
    path = os.path.join(d, "edgeauth.toml")
    with open(path, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "data"\n{extra}')
    return path


def get(url, headers=None, data=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def start(config, log_level="info"):
    env = dict(os.environ, EDGEAUTH_LOG=log_level)
    return subprocess.Popen([BIN, "--config", config, "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(port, deadline=10.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline:
        if get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
            return time.perf_counter() - t0
        time.sleep(0.001)
    raise SystemExit("edgeauth did not become ready")


def stop(p):
    p.terminate(); p.wait(timeout=15)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wrk(url, sid, seconds, conns=64, threads=2):
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--latency",
                          "-H", f"Authorization: Bearer {sid}", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, int(non2xx.group(1)) if non2xx else 0


def main():
    d = tempfile.mkdtemp(prefix="edgeauth-bench-")
    try:
        port = free_port()
        config = write_config(d, port)
        subprocess.run([BIN, "--config", config, "user", "add", "bench", "--local", "--password-stdin"],
                       input="bench-password\n", text=True, check=True, capture_output=True)

        # Start-to-ready: spawn to the first 200 from /readyz, 10 runs on an existing store.
        times = []
        for _ in range(10):
            p = start(config)
            times.append(wait_ready(port))
            stop(p)

        p = start(config)
        wait_ready(port)
        time.sleep(2)
        idle_rss = rss_kib(p.pid)
        status, body = get(f"http://127.0.0.1:{port}/api/v1/login", {"content-type": "application/json"},
                           json.dumps({"username": "bench", "password": "bench-password"}).encode())
        assert status == 200, body
        sid = json.loads(body)["session_id"]
        after_login_rss = rss_kib(p.pid)
        url = f"http://127.0.0.1:{port}/api/v1/session"
        rps, p50, p99, bad = wrk(url, sid, SECONDS)
        loaded_rss = rss_kib(p.pid)
        # The argon2 memory pool is freed after 60 s without logins (maintenance runs every 10 s).
        time.sleep(75)
        trimmed_rss = rss_kib(p.pid)
        stop(p)

        p = start(config, "warn")
        wait_ready(port)
        rps_quiet, p50_q, p99_q, bad_q = wrk(url, sid, SECONDS)
        stop(p)

        size = os.path.getsize(BIN)
        print("== edgeauth load figures (loopback, release build)")
        print(f"cores: {os.cpu_count()}   wrk: 2 threads, 64 connections, {SECONDS}s, same machine")
        print(f"session validation over HTTP, access log on (info):  {rps:,.0f} req/s  p50 {p50}  p99 {p99}  non-2xx {bad}")
        print(f"session validation over HTTP, access log off (warn): {rps_quiet:,.0f} req/s  p50 {p50_q}  p99 {p99_q}  non-2xx {bad_q}")
        print(f"start-to-ready: median {statistics.median(times)*1000:.1f} ms, max {max(times)*1000:.1f} ms (10 runs)")
        print(f"RSS: idle {idle_rss/1024:.1f} MiB, after one login {after_login_rss/1024:.1f} MiB, after load {loaded_rss/1024:.1f} MiB, 75 s later {trimmed_rss/1024:.1f} MiB")
        print(f"binary: {size/1e6:.2f} MB ({size} bytes), {BIN}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
