//! Test support: runs the real `edgeauth` binary in a temp dir on a free loopback port, with a
//! config the test chooses, and talks to it over HTTP (ureq) and through the CLI.
#![allow(dead_code)]
pub mod connect_proxy;
pub mod fake_keycloak;
pub mod fault_proxy;
pub mod real_keycloak;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_edgeauth");

/// Fast argon2 parameters so tests spend their time on behaviour, not hashing.
pub const FAST_ARGON2: &str = "[argon2]\nmemory_kib = 256\niterations = 1\nparallelism = 1\n";

/// A command that runs the edgeauth binary; through `EDGEAUTH_TEST_RUNNER` (for example
/// `qemu-aarch64`) when the tests run for another architecture.
pub fn edgeauth() -> Command {
    match std::env::var("EDGEAUTH_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut cmd = Command::new(parts.next().unwrap_or_default());
            cmd.args(parts).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    child: Option<Child>,
    pub agent: ureq::Agent,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

impl Appliance {
    /// A stopped appliance whose config is FAST_ARGON2 plus `extra` TOML.
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("edgeauth.toml");
        let text = format!(
            "{extra}\n[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{}",
            if extra.contains("[argon2]") {
                ""
            } else {
                FAST_ARGON2
            }
        );
        std::fs::write(&config, fix_sections(&text)).unwrap();
        Appliance {
            dir,
            port,
            config,
            child: None,
            agent: agent(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// The server's log so far. The server writes its log in batches from a thread of its own
    /// (src/logsink.rs), so a line reaches the file a little after it is logged: while the
    /// server runs, a request to a marker path is a barrier (lines keep their order, so once
    /// its access-log line is in the file, every line logged before it is too).
    pub fn log(&self) -> String {
        let read = || std::fs::read_to_string(self.log_path()).unwrap_or_default();
        if self.child.is_none() {
            return read();
        }
        static BARRIER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let marker = format!(
            "/log-barrier-{}",
            BARRIER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        if self.agent.get(self.url(&marker)).call().is_err() {
            return read(); // not answering (TLS, or stopped): the log is as it is
        }
        let t0 = std::time::Instant::now();
        loop {
            let log = read();
            if log.contains(&format!("{marker} ")) || t0.elapsed() > Duration::from_secs(10) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts `edgeauth serve` and waits until /readyz answers 200.
    pub fn start(&mut self) -> &mut Self {
        self.start_with(edgeauth(), &[])
    }

    /// Like [`Appliance::start`], through `cmd` (`edgeauth()` behind a wrapper) with `env`.
    pub fn start_with(&mut self, mut cmd: Command, env: &[(&str, &str)]) -> &mut Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = cmd
            .args(["--config", self.config.to_str().unwrap(), "serve"])
            .env("EDGEAUTH_LOG", "info")
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.agent.get(&self.url("/readyz")).call()
                && r.status() == 200
            {
                return self;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("edgeauth serve exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "edgeauth did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait (graceful).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("edgeauth did not stop on SIGTERM:\n{}", self.log());
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = match body {
            Some(text) => self.agent.run(b.body(text.to_owned()).unwrap()),
            None => self.agent.run(b.body(()).unwrap()),
        }
        .unwrap();
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = res.into_body().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(&body.to_string()),
        )
    }

    pub fn login(&self, user: &str, password: &str) -> Reply {
        self.post_json(
            "/api/v1/login",
            &serde_json::json!({"username": user, "password": password}),
        )
    }

    /// Logs in and returns the session id, asserting 200.
    pub fn session_id(&self, user: &str, password: &str) -> String {
        let r = self.login(user, password);
        assert_eq!(r.status, 200, "login {user}: {}", r.text);
        r.body["session_id"].as_str().unwrap().to_owned()
    }

    pub fn check_session(&self, sid: &str) -> Reply {
        self.request(
            "GET",
            "/api/v1/session",
            &[("authorization", &format!("Bearer {sid}"))],
            None,
        )
    }

    /// Runs the CLI with this appliance's config; `stdin` is piped in.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli_with(&self.config, args, stdin)
    }

    /// `user add NAME --local --password-stdin` plus `extra` args; asserts success.
    pub fn add_user(&self, name: &str, password: &str, extra: &[&str]) {
        let mut args = vec!["user", "add", name, "--local", "--password-stdin"];
        args.extend_from_slice(extra);
        let out = self.cli(&args, Some(&format!("{password}\n")));
        assert!(
            out.status.success(),
            "user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn cli_with(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = edgeauth();
    cmd.arg("--config").arg(config).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Merges a repeated `[server]` header written by a test's `extra` into one table. Each
/// `[[array.of.tables]]` header starts its own table, as in TOML.
fn fix_sections(text: &str) -> String {
    let mut tables: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("[[") && t.ends_with("]]") {
            tables.push((t.to_owned(), Vec::new()));
        } else if t.starts_with('[') && t.ends_with(']') {
            let name = t.to_owned();
            if !tables.iter().any(|(n, _)| *n == name) {
                tables.push((name.clone(), Vec::new()));
            }
            let idx = tables.iter().position(|(n, _)| *n == name).unwrap();
            let entry = tables.remove(idx);
            tables.push(entry);
        } else if !t.is_empty()
            && let Some(last) = tables.last_mut()
        {
            last.1.push(line.to_owned());
        }
    }
    tables
        .into_iter()
        .map(|(n, lines)| format!("{n}\n{}\n", lines.join("\n")))
        .collect()
}

// ---- Appliances wired to the fake Keycloak ----

/// Deep-merges `over` into `base` (tables merge, values replace).
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// An appliance wired to `kc`, with quick resilience settings, overridden by `extra` TOML.
pub fn appliance(kc: &fake_keycloak::FakeKeycloak, extra: &str) -> Appliance {
    appliance_at(
        &kc.base_url(),
        kc.realm(),
        kc.client_id(),
        kc.client_secret(),
        extra,
    )
}

/// An appliance wired to the Keycloak at `server` (a fake, the real one, or a fault proxy in
/// front of it) with quick resilience settings, overridden by `extra` TOML.
pub fn appliance_at(
    server: &str,
    realm: &str,
    client_id: &str,
    client_secret: &str,
    extra: &str,
) -> Appliance {
    let base = format!(
        "[keycloak]\nserver = \"{server}\"\nrealm = \"{realm}\"\nclient_id = \"{client_id}\"\nclient_secret_file = \"client-secret\"\n\
         [keycloak.resilience]\nfailure_threshold = 2\ncooldown = \"1s\"\nhalf_open_timeout = \"1s\"\n\
         health_check_interval = \"1s\"\nhealth_check_timeout = \"2s\"\nrequest_timeout = \"2s\"\n",
    );
    let mut table: toml::Table = base.parse().unwrap();
    merge(&mut table, extra.parse().unwrap());
    let a = Appliance::new(&toml::to_string(&table).unwrap());
    write_secret(
        &a.dir.path().join("client-secret"),
        &format!("{client_secret}\n"),
    );
    a
}

/// Writes a client secret file as an operator must: mode 0600 (edgeauth refuses a secret its
/// group or others may read, as ssh does a private key).
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The value of one Prometheus sample of `/metrics` (`name{labels}` exactly as exposed), 0
/// when absent.
pub fn metric(a: &Appliance, sample: &str) -> f64 {
    a.request("GET", "/metrics", &[], None)
        .text
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub fn status(a: &Appliance) -> serde_json::Value {
    a.request("GET", "/api/v1/status", &[], None).body
}

/// Waits until the status's keycloak.status is `want` (the monitor probes every second).
pub fn wait_status(a: &Appliance, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        let s = status(a);
        if s["keycloak"]["status"] == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "keycloak status never became {want}: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An appliance wired to `kc` (see [`appliance`]), started, with Keycloak seen online.
pub fn online(kc: &fake_keycloak::FakeKeycloak, extra: &str) -> Appliance {
    let mut a = appliance(kc, extra);
    a.start();
    wait_status(&a, "online");
    a
}

/// Every check `edgeauth diagnose` prints for an http:// server, in order.
pub const DIAGNOSE_CHECKS: [&str; 8] = [
    "config",
    "dns",
    "tcp",
    "discovery",
    "jwks",
    "clock_skew",
    "client_credentials",
    "health",
];

/// The line of `edgeauth diagnose`'s output for check `name` (`OK   name  detail`).
pub fn diagnose_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line:\n{out}"))
}

/// Asserts that every check of [`DIAGNOSE_CHECKS`] says OK.
pub fn assert_diagnose_all_ok(out: &str) {
    for name in DIAGNOSE_CHECKS {
        let line = diagnose_line(out, name);
        assert!(line.starts_with("OK"), "{line}\n{out}");
    }
}

/// Four logins of `user` into a black hole, with `request_timeout` as configured and
/// `failure_threshold = 2`: all answered from the cache. The first one or two wait about the
/// timeout; then the circuit is open and the rest answer at once (no call, no probe in the
/// login path). One, when the health monitor's probe (woken by the first failure, or still
/// in flight from before) is the other failure that opens the circuit. Returns the durations.
pub fn black_hole_logins(
    a: &Appliance,
    user: &str,
    password: &str,
    request_timeout: Duration,
) -> Vec<Duration> {
    let times: Vec<Duration> = (0..4)
        .map(|_| {
            let t = Instant::now();
            let r = a.login(user, password);
            let took = t.elapsed();
            assert_eq!(
                (r.status, r.body["auth_mode"].as_str()),
                (200, Some("cached")),
                "{}",
                r.text
            );
            took
        })
        .collect();
    let waited = times
        .iter()
        .take_while(|t| **t >= request_timeout.mul_f64(0.9))
        .count();
    assert!(
        (1..=2).contains(&waited),
        "one or two logins wait for request_timeout: {times:?}"
    );
    for t in &times[..waited] {
        assert!(
            *t < request_timeout + Duration::from_secs(2),
            "bounded by request_timeout: {times:?}"
        );
    }
    for t in &times[waited..] {
        assert!(*t < Duration::from_millis(500), "circuit open: {times:?}");
    }
    times
}

/// `edgeauth` with its wall clock two days behind (the monotonic clock left alone).
pub fn two_days_behind() -> Command {
    clock_shifted("-2d")
}

/// `edgeauth` with its wall clock moved by `offset` (libfaketime's form: "-2d", "+10m"), the
/// monotonic clock left alone.
pub fn clock_shifted(offset: &str) -> Command {
    // libfaketime preloaded into edgeauth itself, not the `faketime` wrapper: the wrapper forks,
    // so killing it (the harness's Drop) left edgeauth running as an orphan.
    let lib = [
        "x86_64-linux-gnu",
        "aarch64-linux-gnu",
        "arm-linux-gnueabihf",
    ]
    .iter()
    .map(|arch| std::path::PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1")))
    .find(|p| p.exists());
    let lib = lib.unwrap_or_else(|| {
        panic!(
            "these tests need Debian's faketime (libfaketime): apt-get install -y faketime, or run scripts/test.sh, which installs it"
        )
    });
    let mut cmd = edgeauth();
    cmd.env("LD_PRELOAD", lib)
        .env("FAKETIME", offset)
        .env("DONT_FAKE_MONOTONIC", "1");
    cmd
}
