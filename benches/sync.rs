//! The sync queue under load: RSS of a serving appliance holding 10,000 pending items, and the
//! drain rate (items/s) of `edgeauth sync --once` replaying them to the fake Keycloak's admin
//! API (find user, read the password credential, reset-password: three calls per item, and
//! one fsync'd commit per item).
//!
//! `cargo bench --bench sync` prints the figures for docs/PERFORMANCE.md; under `cargo test`
//! (no `--bench`) it runs with 20 items as a smoke test.

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

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeauth::config::Config;
use edgeauth::crypto::Secret;
use edgeauth::domain::{Tenant, UserKey, Username};
use fake_keycloak::FakeKeycloak;

/// Kills the server when dropped, so a failed assertion leaves no process behind.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 10_000 } else { 20 };
    let kc = FakeKeycloak::start();
    for i in 0..n {
        kc.add_user(&format!("user{i:05}"), "old-password-1", &[], &[], &[]);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), kc.client_secret()).unwrap();
    // edgeauth refuses a secret its group or others may read.
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_path = dir.path().join("edgeauth.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
             [keycloak]\nserver = \"{}\"\nrealm = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"secret\"\n\
             [keycloak.sync]\nbatch = {n}\ninterval = \"24h\"\n",
            kc.base_url(),
            kc.realm(),
            kc.client_id()
        ),
    )
    .unwrap();

    // Queue the items directly through the library, as an outage would have.
    let (config, _) = Config::load(Some(&config_path)).unwrap();
    let app = edgeauth::app::App::open(config).unwrap();
    let now = app.clock.now();
    let t = Instant::now();
    app.store
        .write(|w| {
            for i in 0..n {
                let key = UserKey::new(
                    Tenant::default_tenant(),
                    Username::parse(&format!("user{i:05}")).unwrap(),
                );
                let payload = edgeauth::sync::Payload::PasswordChange {
                    password: Secret::new("new-password-2"),
                };
                app.sync.queue().enqueue(w, &key, &payload, now)?;
            }
            Ok(())
        })
        .unwrap();
    let enqueue = t.elapsed();
    drop(app);

    let child = Command::new(env!("CARGO_BIN_EXE_edgeauth"))
        .args(["--config", config_path.to_str().unwrap(), "serve"])
        .env("EDGEAUTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgeauth"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(&["status", "--json"]).status.success() {
        assert!(Instant::now() < deadline, "edgeauth did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        matches!(server.0.try_wait(), Ok(None)),
        "the server exited: {}",
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
    );
    let idle_rss = rss_kib(server.0.id());
    let st: serde_json::Value = serde_json::from_slice(&cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["sync"]["pending"], n as u64);
    let status_rss = rss_kib(server.0.id());

    let t = Instant::now();
    let out = cli(&["sync", "--once"]);
    let drain = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_rss = rss_kib(server.0.id());
    let st: serde_json::Value = serde_json::from_slice(&cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["sync"]["pending"], 0, "{st}");
    assert!(kc.check_password("user00000", "new-password-2"));
    drop(server);

    println!(
        "== sync queue, {n} pending password changes, fake Keycloak on loopback (release build)"
    );
    println!(
        "enqueue {n} items in one transaction: {:.2} s",
        enqueue.as_secs_f64()
    );
    println!(
        "RSS serving with {n} pending: idle {:.1} MiB, after a status read {:.1} MiB, after the drain {:.1} MiB",
        idle_rss as f64 / 1024.0,
        status_rss as f64 / 1024.0,
        after_rss as f64 / 1024.0
    );
    println!(
        "drain: {n} items in {:.2} s = {:.0} items/s ({})",
        drain.as_secs_f64(),
        n as f64 / drain.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
}
