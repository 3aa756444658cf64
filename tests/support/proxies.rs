//! The real reverse proxies in front of edgeauth for `tests/proxies.rs` and `tests/browser.rs`:
//! Debian's nginx (`auth_request`) and Caddy (`forward_auth`), as `scripts/tools.sh` installs
//! them, each run as a child process with its own temp prefix and config on a loopback port.
//! nginx runs unprivileged (as `nobody` when the tests run as root). The proxy configs are the
//! snippets the README shows (`dist/nginx/`, `dist/caddy/`) with their placeholders filled in,
//! so the docs are what is tested.
//!
//! A tool that is missing fails the test with the words of `scripts/tools.sh env`; it never
//! skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What `scripts/tools.sh env` said: its export lines, and its complaint when something is
/// missing.
struct Found {
    exports: String,
    missing: String,
}

static FOUND: OnceLock<Found> = OnceLock::new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn found() -> &'static Found {
    FOUND.get_or_init(|| {
        match Command::new(repo_root().join("scripts/tools.sh"))
            .arg("env")
            .output()
        {
            Ok(out) => Found {
                exports: String::from_utf8_lossy(&out.stdout).into_owned(),
                missing: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => Found {
                exports: String::new(),
                missing: format!("cannot run scripts/tools.sh: {e}"),
            },
        }
    })
}

/// The path of one tool (`EDGEAUTH_NGINX`, `EDGEAUTH_CADDY`, `EDGEAUTH_CHROMIUM`); fails the
/// test, naming what is missing, when it is not installed.
pub fn tool(var: &str) -> PathBuf {
    let f = found();
    f.exports
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .find_map(|l| l.strip_prefix(var)?.strip_prefix('='))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{var}: the real nginx, Caddy and Chromium are not all installed, so this test \
                 fails (run scripts/tools.sh, as scripts/test.sh does):\n{}",
                f.missing
            )
        })
}

/// A proxy config snippet (`path` under the repository) with each `(placeholder, value)`
/// replaced; a placeholder that is not in the file fails the test (the docs and the tests
/// would have drifted).
pub fn snippet(path: &str, fill: &[(&str, &str)]) -> String {
    let file = repo_root().join(path);
    let mut text =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    for (k, v) in fill {
        assert!(text.contains(k), "{} has no {k}", file.display());
        text = text.replace(k, v);
    }
    text
}

fn wait_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A running proxy (nginx or Caddy); killed when dropped.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Proxy {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// nginx with `servers` (server blocks) inside a minimal `http {}`, listening on `port`.
    /// Temp paths, pid and logs live in its own prefix; as root it runs as `nobody`.
    pub fn nginx(port: u16, servers: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display().to_string();
        let conf = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 128; }}\n\
             http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  \
             uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n{servers}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let log = dir.path().join("error.log");
        let mut cmd = if is_root() {
            use std::os::unix::fs::chown;
            // nobody:nogroup owns the prefix, so the unprivileged master can write there.
            chown(dir.path(), Some(65534), Some(65534)).unwrap();
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(tool("EDGEAUTH_NGINX"));
            c
        } else {
            Command::new(tool("EDGEAUTH_NGINX"))
        };
        let child = cmd
            .args(["-p", &p, "-c", &format!("{p}/nginx.conf"), "-e"])
            .arg(&log)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut proxy = Proxy {
            dir,
            port,
            child: Some(child),
            log,
        };
        let child = proxy.child.as_mut().unwrap();
        wait_port(port, child, "nginx", &proxy.log);
        // Unprivileged: the master itself (not only its workers) is not root.
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u != "0"),
            "nginx runs as root: {uid}"
        );
        proxy
    }

    /// Caddy with `caddyfile` (site blocks; the global options are added here), on `port`.
    pub fn caddy(port: u16, caddyfile: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let conf = format!(
            "{{\n\tadmin off\n\tauto_https off\n\thttp_port {port}\n\tpersist_config off\n\t\
             log {{\n\t\tlevel WARN\n\t}}\n}}\n\n{caddyfile}\n"
        );
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, conf).unwrap();
        let log = dir.path().join("caddy.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("EDGEAUTH_CADDY"))
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut proxy = Proxy {
            dir,
            port,
            child: Some(child),
            log,
        };
        let child = proxy.child.as_mut().unwrap();
        wait_port(port, child, "caddy", &proxy.log);
        proxy
    }
}

impl Drop for Proxy {
    /// SIGTERM first: nginx's master then ends its workers (a SIGKILLed master leaves them
    /// running, holding the port); SIGKILL only if it has not gone within 5 s.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP/1.1 answer as the wire had it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `GET path` on 127.0.0.1:`port` with `Host: host` and the given extra headers, one request
/// on one connection (the client a test needs: any Host, any forged header, no redirects
/// followed, no cookie jar).
pub fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub const POS: &str = "pos.site.lan";
pub const WIKI: &str = "wiki.site.lan";
pub const AUTH: &str = "auth.site.lan";

/// The config of the test site: cookies for `site.lan`, the proxy on loopback trusted, the
/// login page at auth.site.lan through the proxy on `proxy_port`; health checks bypass, a
/// network rule that a forged `X-Forwarded-For` must not reach, and the wiki only for `staff`.
pub fn site_config(proxy_port: u16) -> String {
    format!(
        r#"
[server]
trusted_proxies = ["127.0.0.1/32"]
[web]
public_url = "http://{AUTH}:{proxy_port}"
cookie_domain = "site.lan"
site_name = "Test site"
[access]
default_policy = "signed_in"
rules = [
  {{ hosts = ["{POS}", "{WIKI}"], paths = ["/health"], policy = "bypass" }},
  {{ hosts = ["{POS}"], networks = ["10.9.9.0/24"], policy = "bypass" }},
  {{ hosts = ["{WIKI}"], policy = "allow", roles = ["staff"] }},
]
"#
    )
}

/// nginx on `port` with one `auth_request` server per `(host, upstream)` app (the README's
/// `dist/nginx/edgeauth.conf`) and edgeauth's own pages at [`AUTH`]
/// (`tests/fixtures/proxies/nginx-auth.conf`), all asking the edgeauth at `edgeauth`.
pub fn nginx_site(port: u16, edgeauth: &str, apps: &[(&str, &str)]) -> Proxy {
    let listen = format!("127.0.0.1:{port}");
    let mut servers = String::new();
    for (host, upstream) in apps {
        servers.push_str(&snippet(
            "dist/nginx/edgeauth.conf",
            &[
                ("listen 80;", &format!("listen {listen};")),
                ("server_name _;", &format!("server_name {host};")),
                ("EDGEAUTH", edgeauth),
                ("APP", upstream),
            ],
        ));
    }
    servers.push_str(&snippet(
        "tests/fixtures/proxies/nginx-auth.conf",
        &[
            ("LISTEN", &listen),
            ("AUTH_HOST", AUTH),
            ("EDGEAUTH", edgeauth),
        ],
    ));
    Proxy::nginx(port, &servers)
}

/// Caddy on `port` with one `forward_auth` site per `(host, upstream)` app (the README's
/// `dist/caddy/Caddyfile`), asking the edgeauth at `edgeauth`.
pub fn caddy_site(port: u16, edgeauth: &str, apps: &[(&str, &str)]) -> Proxy {
    let mut sites = String::new();
    for (host, upstream) in apps {
        sites.push_str(&snippet(
            "dist/caddy/Caddyfile",
            &[
                (
                    ":80 {",
                    &format!("http://{host}:{port} {{\n\tbind 127.0.0.1"),
                ),
                ("EDGEAUTH", edgeauth),
                ("APP", upstream),
            ],
        ));
    }
    Proxy::caddy(port, &sites)
}
