#!/usr/bin/env python3
"""Footprint of the static release binaries (dist/edgeauth-<target>); called by scripts/bench-arm.sh.

Per target: size (and whether `file` says stripped), start-to-ready (spawn `edgeauth serve`
to the first 200 from /readyz, polled every 2 ms, existing store, default argon2; median of
10 runs after one warm-up run that creates the store), and idle RSS (VmRSS of the spawned
process 2 s after ready). ARM targets run under plain qemu-user (no -L), so their RSS is the
qemu process's: guest memory plus qemu itself plus its translated-code cache. To put a number
on qemu's share, a tiny static ARM program that only sleeps is run under the same qemu when
a cross gcc is installed ("qemu floor"). Traffic goes to 127.0.0.1 only, bounded in time.

Usage: bench_arm.py DIST_DIR TARGET...   (prints one block per target, then a table)"""
import atexit, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

RUNNERS = {"aarch64-unknown-linux-musl": ["qemu-aarch64"],
           "armv7-unknown-linux-gnueabihf": ["qemu-arm"],
           "x86_64-unknown-linux-musl": []}
FLOOR_CC = {"aarch64-unknown-linux-musl": "aarch64-linux-gnu-gcc",
            "armv7-unknown-linux-gnueabihf": "arm-linux-gnueabihf-gcc"}
RUNS = 10
POLL = 0.002
LIVE = []  # spawned processes, killed on exit (also on SIGTERM from bench-arm.sh's timeout)


def _cleanup():
    for p in LIVE:
        if p.poll() is None:
            p.kill(); p.wait()


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def ready(port):
    """One GET /readyz; True on a 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()


def spawn_ready(cmd, port, deadline=60.0):
    """Start cmd, poll /readyz every 2 ms; returns (process, seconds to ready)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    LIVE.append(p)
    while time.perf_counter() - t0 < deadline:
        if ready(port):
            return p, time.perf_counter() - t0
        if p.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited with {p.returncode} before it was ready")
        time.sleep(POLL)
    stop(p)
    raise SystemExit(f"not ready within {deadline} s: {' '.join(cmd)}")


def qemu_floor(target, d):
    """VmRSS of qemu running a static program that only sleeps, or None."""
    cc = FLOOR_CC.get(target)
    if not cc or not shutil.which(cc):
        return None
    src, exe = os.path.join(d, "sleep.c"), os.path.join(d, f"sleep-{target}")
    with open(src, "w") as f:
        f.write("#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n")
    subprocess.run([cc, "-static", "-O2", "-o", exe, src], check=True)
    p = subprocess.Popen(RUNNERS[target] + [exe])
    LIVE.append(p)
    try:
        time.sleep(1)
        return status(p.pid)
    finally:
        p.kill(); p.wait()


def bench(dist, target):
    binary = os.path.join(dist, f"edgeauth-{target}")
    d = tempfile.mkdtemp(prefix="edgeauth-bench-arm-")
    try:
        port = free_port()
        config = os.path.join(d, "edgeauth.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "data"\n')
        cmd = RUNNERS[target] + [binary, "--config", config, "serve"]
        p, warm = spawn_ready(cmd, port)          # creates the store
        stop(p)
        times = []
        for _ in range(RUNS):
            p, t = spawn_ready(cmd, port)
            times.append(t)
            stop(p)
        p, _ = spawn_ready(cmd, port)
        time.sleep(2)
        idle = status(p.pid)
        stop(p)
        floor = qemu_floor(target, d)
        desc = subprocess.run(["file", "-b", binary], capture_output=True, text=True).stdout.strip()
        return {
            "target": target, "size": os.path.getsize(binary),
            "stripped": ", stripped" in desc and "not stripped" not in desc,
            "runner": " ".join(RUNNERS[target]) or "native",
            "warmup": warm, "median": statistics.median(times), "min": min(times), "max": max(times),
            "idle": idle, "floor": floor,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def main():
    dist, targets = sys.argv[1], sys.argv[2:]
    print(f"== edgeauth ARM footprint ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start)")
    rows = []
    for t in targets:
        r = bench(dist, t)
        rows.append(r)
        i, fl = r["idle"], r["floor"]
        print(f"-- {t} ({r['runner']})")
        print(f"   size: {r['size']} bytes ({r['size'] / 1e6:.2f} MB), stripped: {'yes' if r['stripped'] else 'NO'}")
        print(f"   start-to-ready: median {r['median'] * 1000:.1f} ms, min {r['min'] * 1000:.1f}, "
              f"max {r['max'] * 1000:.1f} ({RUNS} runs, /readyz polled every 2 ms; first run creating the store {r['warmup'] * 1000:.1f} ms)")
        print(f"   idle RSS 2 s after ready: VmRSS {mib(i['VmRSS'])} (anon {mib(i['RssAnon'])}, file {mib(i['RssFile'])})")
        if fl:
            print(f"   qemu floor (static sleep program): VmRSS {mib(fl['VmRSS'])} (anon {mib(fl['RssAnon'])}, "
                  f"file {mib(fl['RssFile'])}); edgeauth minus floor: {mib(i['VmRSS'] - fl['VmRSS'])}")
    print()
    print("| target | run | size | start-to-ready (median / max) | idle VmRSS | qemu floor |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fl = mib(r["floor"]["VmRSS"]) if r["floor"] else "n/a"
        print(f"| `{r['target']}` | {r['runner']} | {r['size']:,} B | {r['median'] * 1000:.1f} ms / {r['max'] * 1000:.1f} ms "
              f"| {mib(r['idle']['VmRSS'])} | {fl} |")


if __name__ == "__main__":
    main()
