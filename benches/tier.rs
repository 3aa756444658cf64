//! Login latency of the Keycloak tier against the in-process fake Keycloak, through the real
//! release binary over loopback HTTP: online, during a black-hole outage before and after the
//! circuit opens, offline (refused), and the time from Keycloak's return to mode `normal`.
//! Default argon2 parameters throughout (a login that goes online also captures the hash).
//!
//! `cargo bench --bench tier` prints the figures for docs/PERFORMANCE.md. Under `cargo test`
//! (no `--bench` argument) it runs one login per scenario as a smoke test.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[path = "../tests/support/fake_keycloak.rs"]
#[allow(dead_code)]
mod fake_keycloak;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_keycloak::{FakeKeycloak, Fault};

struct Appliance {
    _dir: tempfile::TempDir,
    port: u16,
    child: Child,
    agent: ureq::Agent,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(kc: &FakeKeycloak, resilience: &str) -> Appliance {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("secret"), kc.client_secret()).unwrap();
    // edgeauth refuses a secret its group or others may read.
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = dir.path().join("edgeauth.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
             [keycloak]\nserver = \"{}\"\nrealm = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"secret\"\n\
             [keycloak.resilience]\n{resilience}\n[regulation]\nmax_retries = 100000\nmax_retries_per_ip = 100000\n",
            kc.base_url(),
            kc.realm(),
            kc.client_id()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edgeauth"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("EDGEAUTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let a = Appliance {
        _dir: dir,
        port,
        child,
        agent,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "edgeauth did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    a
}

impl Appliance {
    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        match self
            .agent
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .call()
        {
            Ok(r) => {
                let s = r.status().as_u16();
                (
                    s,
                    r.into_body().read_json().unwrap_or(serde_json::Value::Null),
                )
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// One login; returns its latency and auth_mode.
    fn login(&self, user: &str, pw: &str) -> (Duration, String) {
        let t = Instant::now();
        let r = self
            .agent
            .post(format!("http://127.0.0.1:{}/api/v1/login", self.port))
            .send_json(serde_json::json!({"username": user, "password": pw}))
            .unwrap();
        let took = t.elapsed();
        assert_eq!(r.status(), 200, "login failed");
        let v: serde_json::Value = r.into_body().read_json().unwrap();
        (took, v["auth_mode"].as_str().unwrap_or("").to_owned())
    }

    fn wait_status(&self, want: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        while self.get("/api/v1/status").1["keycloak"]["status"] != want {
            assert!(t.elapsed() < limit, "never {want}");
            std::thread::sleep(Duration::from_millis(5));
        }
        t.elapsed()
    }
}

fn summary(label: &str, mut v: Vec<Duration>, mode: &str) {
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{label:<44} n={:<4} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  auth_mode {mode}",
        v.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        v[v.len() - 1].as_secs_f64() * 1000.0
    );
}

fn run_logins(a: &Appliance, n: usize) -> (Vec<Duration>, String) {
    let mut out = Vec::with_capacity(n);
    let mut mode = String::new();
    for _ in 0..n {
        let (d, m) = a.login("bench", "bench-password-1");
        out.push(d);
        mode = m;
    }
    (out, mode)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100 } else { 1 };
    let kc = FakeKeycloak::start();
    kc.add_user("bench", "bench-password-1", &["staff"], &[], &["/site"]);
    // request_timeout 1 s (default 5 s) keeps the black-hole phase short; threshold 3.
    let a = start(
        &kc,
        "failure_threshold = 3\ncooldown = \"600s\"\nrequest_timeout = \"1s\"\nhealth_check_interval = \"600s\"",
    );
    a.wait_status("online", Duration::from_secs(10));
    a.login("bench", "bench-password-1");

    let (online, mode) = run_logins(&a, n);
    println!(
        "== login latency through edgeauth (release), fake Keycloak on loopback, default argon2id"
    );
    summary("online (Keycloak answers)", online, &mode);

    kc.set_fault(Fault::BlackHole);
    let (before, mode) = run_logins(&a, 3);
    summary("black hole, before the circuit opens (3)", before, &mode);
    let (after, mode) = run_logins(&a, n);
    summary("black hole, circuit open", after, &mode);
    drop(a);

    kc.set_fault(Fault::None);
    let b = start(&kc, "health_check_interval = \"1s\"");
    b.wait_status("online", Duration::from_secs(20));
    b.login("bench", "bench-password-1"); // the offline path needs one online login first
    kc.set_fault(Fault::Refused);
    b.wait_status("offline", Duration::from_secs(20));
    let (offline, mode) = run_logins(&b, n);
    summary("offline (refused), monitor says offline", offline, &mode);
    drop(b);

    // Recovery with the default monitor settings (interval 30 s, backoff 1 s doubling).
    kc.set_fault(Fault::None);
    let c = start(&kc, "");
    c.wait_status("online", Duration::from_secs(40));
    println!(
        "== time from Keycloak's return to mode normal (defaults: interval 30s, backoff from 1s, ±25% jitter)"
    );
    for outage in if full { vec![5u64, 20, 60] } else { vec![1] } {
        kc.set_fault(Fault::Refused);
        std::thread::sleep(Duration::from_secs(outage));
        c.wait_status("offline", Duration::from_secs(60));
        kc.set_fault(Fault::None);
        let t = Instant::now();
        while c.get("/api/v1/status").1["mode"] != "normal" {
            assert!(t.elapsed() < Duration::from_secs(90), "never normal");
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "after a {outage:>3} s outage: normal in {:>6.2} s",
            t.elapsed().as_secs_f64()
        );
    }
}
