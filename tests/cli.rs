//! The command line and config: errors that name file and key, the embedded defaults, admin
//! commands while serving (admin socket) and while stopped (direct), init and TLS.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Appliance, cli_with, stderr, stdout};

fn bad_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.toml");
    std::fs::write(&path, text).unwrap();
    let out = cli_with(&path, &["status"], None);
    (out.status.code().unwrap_or(-1), stderr(&out))
}

#[test]
fn config_errors_name_file_key_and_form() {
    let (code, err) = bad_config("[server]\nlisen = \"127.0.0.1:1\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("site.toml") && err.contains("server.lisen") && err.contains("unknown field"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let (code, err) = bad_config("[auth]\nsession_ttl = \"eight hours\"\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("auth.session_ttl") && err.contains("\"15m\""),
        "{err}"
    );

    let (code, err) = bad_config("[server]\nlisten = \"0.0.0.0:8080\"\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("server.listen") && err.contains("tls_cert"),
        "{err}"
    );

    let (code, err) = bad_config("[argon2]\nmemory_kib = 1\n");
    assert_eq!(code, 2);
    assert!(err.contains("argon2.memory_kib"), "{err}");

    let (code, err) = bad_config("not toml at all [");
    assert_eq!(code, 2);
    assert!(err.contains("site.toml"), "{err}");

    let out = support::edgeauth()
        .args(["--config", "/nonexistent/edgeauth.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/edgeauth.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_on_embedded_defaults_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let child = support::edgeauth()
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("EDGEAUTH_CONFIG")
        .env("EDGEAUTH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = support::agent();
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent
        .get("http://127.0.0.1:8080/readyz")
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "defaults did not serve on 127.0.0.1:8080"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("embedded defaults"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("local users only") && line.contains("127.0.0.1:8080"),
        "{line}"
    );
    assert!(dir.path().join("edgeauth-data/edgeauth.redb").exists());
    assert!(dir.path().join("edgeauth-data/seal.key").exists());
}

#[test]
fn edgeauth_config_env_names_the_file() {
    let a = Appliance::new("");
    let out = support::edgeauth()
        .args(["user", "add", "viaenv", "--local", "--password-stdin"])
        .env("EDGEAUTH_CONFIG", &a.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"viaenv-password\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        a.data_dir().join("edgeauth.redb").exists(),
        "the env config's data_dir was used"
    );
}

#[test]
fn admin_commands_while_stopped_and_while_serving() {
    let mut a = Appliance::new("");
    // Stopped: direct database access.
    a.add_user("mia", "mia-password", &["--role", "nurse"]);
    let dup = a.cli(
        &["user", "add", "mia", "--local", "--password-stdin"],
        Some("another-password\n"),
    );
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let weak = a.cli(
        &["user", "add", "ned", "--local", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(weak.status.code(), Some(1), "{}", stderr(&weak));
    let no_tty = a.cli(&["user", "add", "ned", "--local"], None);
    assert_eq!(no_tty.status.code(), Some(2));
    assert!(
        stderr(&no_tty).contains("--password-stdin"),
        "{}",
        stderr(&no_tty)
    );

    a.start();
    // Serving: the same commands go over the admin socket.
    a.add_user("ned", "ned-password", &[]);
    let list = a.cli(&["user", "list", "--json"], None);
    assert!(list.status.success(), "{}", stderr(&list));
    let users: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["mia", "ned"]);
    assert!(!stdout(&list).contains("argon2"), "no hash in output");
    assert_eq!(
        a.login("ned", "ned-password").status,
        200,
        "a user added through the socket logs in at once"
    );

    let show = a.cli(&["user", "show", "mia"], None);
    assert!(stdout(&show).contains("nurse"), "{}", stdout(&show));
    let missing = a.cli(&["user", "show", "nobody"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no user nobody@default"),
        "{}",
        stderr(&missing)
    );

    // Disable ends sessions at once; enable lets the user back in.
    let sid = a.session_id("mia", "mia-password");
    let dis = a.cli(&["user", "disable", "mia"], None);
    assert!(
        stdout(&dis).contains("1 sessions ended"),
        "{}",
        stdout(&dis)
    );
    assert_eq!(a.check_session(&sid).body["reason"], "revoked");
    assert_eq!(a.login("mia", "mia-password").status, 403);
    assert!(a.cli(&["user", "enable", "mia"], None).status.success());
    assert_eq!(a.login("mia", "mia-password").status, 200);

    let status = a.cli(&["status", "--json"], None);
    let st: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(st["mode"], "normal");
    assert_eq!(st["users"], 2);
    assert!(stdout(&a.cli(&["status"], None)).contains("mode:      normal"));

    // A consistent backup while serving, then a check of it.
    let backup = a.dir.path().join("backup.redb");
    let b = a.cli(&["db", "backup", backup.to_str().unwrap()], None);
    assert!(b.status.success(), "{}", stderr(&b));
    let again = a.cli(&["db", "backup", backup.to_str().unwrap()], None);
    assert_eq!(
        again.status.code(),
        Some(3),
        "never overwrites: {}",
        stderr(&again)
    );
    assert!(a.cli(&["db", "check"], None).status.success());

    // A second server on the same data dir fails clearly.
    let second = support::edgeauth()
        .args(["--config", a.config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(3));
    assert!(stderr(&second).contains("locked"), "{}", stderr(&second));

    let removed = a.cli(&["user", "remove", "ned"], None);
    assert!(removed.status.success());
    assert_eq!(a.login("ned", "ned-password").status, 401);

    a.stop();
    // Stopped again: check runs redb's integrity check too; the backup restores.
    let check = a.cli(&["db", "check"], None);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("database OK: 1 users"),
        "{}",
        stdout(&check)
    );
    let audit = a.cli(&["audit", "--json", "--limit", "100"], None);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&audit)).unwrap();
    let outcomes: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    for o in [
        "user_added",
        "user_disabled",
        "user_enabled",
        "user_removed",
        "ok",
        "account_disabled",
    ] {
        assert!(outcomes.contains(&o), "audit lacks {o}: {outcomes:?}");
    }

    std::fs::remove_file(a.data_dir().join("edgeauth.redb")).unwrap();
    let r = a.cli(&["db", "restore", backup.to_str().unwrap()], None);
    assert!(r.status.success(), "{}", stderr(&r));
    let restored = a.cli(&["user", "list", "--json"], None);
    let users: serde_json::Value = serde_json::from_str(&stdout(&restored)).unwrap();
    assert_eq!(
        users.as_array().unwrap().len(),
        2,
        "the backup holds mia and ned"
    );
}

#[test]
fn corrupt_database_is_one_clear_line() {
    let a = Appliance::new("");
    std::fs::create_dir_all(a.data_dir()).unwrap();
    std::fs::write(a.data_dir().join("edgeauth.redb"), vec![0x42u8; 128 * 1024]).unwrap();
    for args in [&["db", "check"][..], &["user", "list"][..], &["serve"][..]] {
        let out = a.cli(args, None);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("edgeauth:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains("edgeauth.redb"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn init_then_serve_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let out = support::edgeauth()
        .args([
            "init",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("edgeauth.toml");
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);
    let again = support::edgeauth()
        .args(["init", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "init never overwrites");

    // Fast hashing for the test: append to the generated config.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(support::FAST_ARGON2);
    std::fs::write(&config, text).unwrap();
    let add = cli_with(
        &config,
        &["user", "add", "olga", "--local", "--password-stdin"],
        Some("olga-password\n"),
    );
    assert!(add.status.success(), "{}", stderr(&add));

    let mut child = support::edgeauth()
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pem = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent
        .get(format!("{url}/readyz"))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "TLS listener not ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    let res = agent
        .post(format!("{url}/api/v1/login"))
        .send_json(json!({"username": "olga", "password": "olga-password"}))
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = support::agent()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .call();
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs `edgeauth serve` on `text` (in a fresh dir, beside `files`) and expects it to refuse to
/// start: its exit code and stderr. A server that starts anyway is killed and fails the test.
fn serve_refuses(text: &str, files: &[(&str, &str, u32)]) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (name, body, mode) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let path = dir.path().join("site.toml");
    let port = support::free_port();
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{text}"),
    )
    .unwrap();
    let mut child = support::edgeauth()
        .args(["--config", path.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("serve started on {text:?}: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

#[test]
fn out_of_range_values_and_url_typos_stop_serve_with_one_line() {
    let kc = "[keycloak]\nrealm = \"site\"\nclient_id = \"edgeauth\"\n";
    for (text, key) in [
        (
            "max_connections = 3000000000000000000\n".to_owned(),
            "server.max_connections",
        ),
        (
            "[argon2]\nmax_concurrent = 3000000000000000000\n".into(),
            "argon2.max_concurrent",
        ),
        (
            "[auth]\nsession_ttl = \"8000y\"\n".into(),
            "auth.session_ttl",
        ),
        (
            "[keycloak.resilience]\nrequest_timeout = \"0s\"\n".into(),
            "keycloak.resilience.request_timeout",
        ),
        (format!("{kc}server = \"http://\"\n"), "keycloak.server"),
        (
            format!("{kc}server = \"https://sso example.org\"\n"),
            "keycloak.server",
        ),
        (
            format!("{kc}server = \"https://sso.site.lan\"\nhealth_url = \"not a url\"\n"),
            "keycloak.health_url",
        ),
        (
            format!("{kc}server = \"https://sso.site.lan\"\nproxy = \"http://\"\n"),
            "keycloak.proxy",
        ),
    ] {
        let (code, err) = serve_refuses(&text, &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("site.toml") && err.contains(&format!("`{key}`")),
            "{text}: {err}"
        );
    }
}

#[test]
fn a_client_secret_open_to_others_is_refused_like_ssh_does() {
    let kc = "[keycloak]\nserver = \"http://127.0.0.1:9\"\nrealm = \"site\"\nclient_id = \"edgeauth\"\nclient_secret_file = \"client-secret\"\n";
    let (code, err) = serve_refuses(kc, &[("client-secret", "s3cret\n", 0o644)]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("keycloak.client_secret_file")
            && err.contains("client-secret")
            && err.contains("0644")
            && err.contains("chmod 600 "),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the secret is never shown: {err}");

    let ca = format!("{kc}ca_file = \"missing-ca.pem\"\n");
    let (code, err) = serve_refuses(&ca, &[("client-secret", "s3cret\n", 0o600)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("keycloak.ca_file") && err.contains("missing-ca.pem"),
        "{err}"
    );
    let (code, err) = serve_refuses(
        &format!("{kc}ca_file = \"ca.pem\"\n"),
        &[
            ("client-secret", "s3cret\n", 0o600),
            ("ca.pem", "not a certificate\n", 0o644),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("keycloak.ca_file") && err.contains("no PEM certificate"),
        "{err}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `edgeauth user list | head -1`: the pipe closes before the command writes. The read end
    // is closed before the command starts, so its first write always meets a closed pipe.
    let a = Appliance::new("");
    a.add_user("mia", "mia-password", &[]);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = support::edgeauth()
        .arg("--config")
        .arg(&a.config)
        .args(["user", "list"])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).is_empty(),
        "no panic, no noise: {}",
        stderr(&out)
    );
}
