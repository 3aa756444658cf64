//! The HTTP API of the real binary: logins, sessions, logout, password change, regulation,
//! operator-only endpoints, malformed input and the listener's limits.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::Appliance;

#[test]
fn login_right_wrong_unknown_disabled() {
    let mut a = Appliance::new("");
    a.add_user(
        "alice",
        "alice-password",
        &["--role", "staff", "--group", "front-desk"],
    );
    a.add_user("dora", "dora-password", &[]);
    assert!(a.cli(&["user", "disable", "dora"], None).status.success());
    a.start();

    let ok = a.login("Alice", "alice-password");
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["success"], true);
    assert_eq!(ok.body["auth_mode"], "local");
    assert_eq!(ok.body["keycloak_status"], "disabled");
    assert_eq!(ok.body["user"]["username"], "alice");
    assert_eq!(ok.body["user"]["roles"], json!(["staff"]));
    assert_eq!(ok.body["user"]["groups"], json!(["front-desk"]));
    let sid = ok.body["session_id"].as_str().unwrap();
    assert!(sid.starts_with("eas_") && sid.len() >= 4 + 32, "{sid}");
    let cookie = ok.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with(&format!("edgeauth_session={sid}")),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP must not mark the cookie Secure"
    );

    let wrong = a.login("alice", "not-her-password");
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"));
    let unknown = a.login("mallory", "whatever-password");
    assert_eq!(
        (unknown.status, unknown.code()),
        (401, "invalid_credentials")
    );
    assert_eq!(
        unknown.body["error"]["message"],
        wrong.body["error"]["message"]
    );
    let disabled = a.login("dora", "dora-password");
    assert_eq!(
        (disabled.status, disabled.code()),
        (403, "account_disabled")
    );
    let disabled_wrong = a.login("dora", "not-dora");
    assert_eq!(
        disabled_wrong.status, 401,
        "a wrong password never learns the account is disabled"
    );

    // Never a password or a session id in the log.
    let log = a.log();
    for secret in ["alice-password", "not-her-password", "dora-password", sid] {
        assert!(!log.contains(secret), "log leaks {secret}:\n{log}");
    }
    assert!(log.contains("POST /api/v1/login 200"), "{log}");
}

#[test]
fn session_by_cookie_and_bearer_then_logout() {
    let mut a = Appliance::new("");
    a.add_user("bob", "bob-password", &[]);
    a.start();
    let sid = a.session_id("bob", "bob-password");

    let by_bearer = a.check_session(&sid);
    assert_eq!(by_bearer.status, 200, "{}", by_bearer.text);
    assert_eq!(by_bearer.body["valid"], true);
    assert_eq!(by_bearer.body["mode"], "local");
    assert_eq!(by_bearer.body["user"]["username"], "bob");
    let by_cookie = a.request(
        "GET",
        "/api/v1/session",
        &[("cookie", &format!("theme=dark; edgeauth_session={sid}"))],
        None,
    );
    assert_eq!(by_cookie.status, 200);

    let none = a.request("GET", "/api/v1/session", &[], None);
    assert_eq!(
        (none.status, none.body["reason"].as_str()),
        (401, Some("session_not_found"))
    );
    let garbage = a.check_session("eyJhbGciOiJSUzI1NiJ9.e30.sig");
    assert_eq!(garbage.body["reason"], "token_invalid");
    let unknown = a.check_session(&format!("eas_{}", "0".repeat(64)));
    assert_eq!(unknown.body["reason"], "session_not_found");

    let out = a.request(
        "POST",
        "/api/v1/logout",
        &[("authorization", &format!("Bearer {sid}"))],
        None,
    );
    assert_eq!(
        (out.status, out.body["success"].as_bool()),
        (200, Some(true))
    );
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = a.check_session(&sid);
    assert_eq!(
        (after.status, after.body["reason"].as_str()),
        (401, Some("revoked"))
    );
    // Idempotent, with or without a session.
    let again = a.request(
        "POST",
        "/api/v1/logout",
        &[("authorization", &format!("Bearer {sid}"))],
        None,
    );
    assert_eq!(again.status, 200);
    assert_eq!(a.request("POST", "/api/v1/logout", &[], None).status, 200);
}

#[test]
fn sessions_expire_by_ttl_and_by_idleness() {
    let mut ttl = Appliance::new("[auth]\nsession_ttl = \"2s\"\nsession_idle = \"1h\"\n");
    ttl.add_user("carol", "carol-password", &[]);
    ttl.start();
    let mut idle = Appliance::new("[auth]\nsession_ttl = \"1h\"\nsession_idle = \"2s\"\n");
    idle.add_user("carol", "carol-password", &[]);
    idle.start();

    let s_ttl = ttl.session_id("carol", "carol-password");
    let s_idle = idle.session_id("carol", "carol-password");
    let s_busy = idle.session_id("carol", "carol-password");
    // Keep one idle-limited session in use; its expiry moves with use.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(idle.check_session(&s_busy).status, 200);
    }
    assert_eq!(
        ttl.check_session(&s_ttl).body["reason"],
        "session_expired",
        "absolute TTL"
    );
    assert_eq!(
        idle.check_session(&s_idle).body["reason"],
        "session_expired",
        "idle timeout"
    );
    assert_eq!(
        idle.check_session(&s_busy).status,
        200,
        "a session in use stays valid"
    );
}

#[test]
fn password_change_revokes_other_sessions_and_keeps_the_callers() {
    let mut a = Appliance::new("");
    a.add_user("erin", "erin-old-password", &[]);
    a.start();
    let mine = a.session_id("erin", "erin-old-password");
    let other = a.session_id("erin", "erin-old-password");

    let weak = a.request(
        "POST",
        "/api/v1/password",
        &[("content-type", "application/json")],
        Some(&json!({"username": "erin", "old_password": "erin-old-password", "new_password": "short"}).to_string()),
    );
    assert_eq!((weak.status, weak.code()), (400, "weak_password"));
    let wrong = a.post_json("/api/v1/password", &json!({"username": "erin", "old_password": "nope-nope", "new_password": "erin-new-password"}));
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"));

    let ok = a.request(
        "POST",
        "/api/v1/password",
        &[("content-type", "application/json"), ("authorization", &format!("Bearer {mine}"))],
        Some(&json!({"username": "erin", "old_password": "erin-old-password", "new_password": "erin-new-password"}).to_string()),
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        ok.body,
        json!({"success": true, "local_updated": true, "keycloak_updated": false, "mode": "local_only"})
    );
    assert_eq!(a.login("erin", "erin-old-password").status, 401);
    assert_eq!(a.login("erin", "erin-new-password").status, 200);
    assert_eq!(
        a.check_session(&mine).status,
        200,
        "the caller's own session is kept"
    );
    assert_eq!(a.check_session(&other).body["reason"], "revoked");
    assert!(!a.log().contains("erin-new-password"));
}

#[test]
fn regulation_bans_user_and_survives_restart() {
    let mut a = Appliance::new(
        "[regulation]\nmax_retries = 3\nmax_retries_per_ip = 100\nfind_time = \"1m\"\nban_time = \"1h\"\n",
    );
    a.add_user("frank", "frank-password", &[]);
    a.add_user("grace", "grace-password", &[]);
    a.start();
    for _ in 0..2 {
        assert_eq!(a.login("frank", "bad-password").status, 401);
    }
    let third = a.login("frank", "bad-password");
    assert_eq!((third.status, third.code()), (429, "too_many_attempts"));
    let retry: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    // The right password is refused too while banned, and is not even checked.
    let banned = a.login("frank", "frank-password");
    assert_eq!(banned.status, 429);
    // Other users are unaffected.
    assert_eq!(a.login("grace", "grace-password").status, 200);

    a.stop();
    a.start();
    let after = a.login("frank", "frank-password");
    assert_eq!(
        after.status, 429,
        "a restart must not lift the ban: {}",
        after.text
    );
    assert!(after.header("retry-after").unwrap().parse::<u64>().unwrap() > 3500);
    // The operator's password reset lifts it.
    assert!(
        a.cli(
            &["user", "passwd", "frank", "--password-stdin"],
            Some("frank-new-password\n")
        )
        .status
        .success()
    );
    assert_eq!(a.login("frank", "frank-new-password").status, 200);
}

#[test]
fn regulation_bans_an_ip_spraying_many_users() {
    let mut a = Appliance::new(
        "[regulation]\nmax_retries = 100\nmax_retries_per_ip = 4\nban_time = \"10m\"\n",
    );
    a.add_user("henry", "henry-password", &[]);
    a.start();
    let codes: Vec<u16> = (0..4)
        .map(|i| a.login(&format!("user{i}"), "guess-guess").status)
        .collect();
    assert_eq!(codes, vec![401, 401, 401, 429]);
    assert_eq!(
        a.login("henry", "henry-password").status,
        429,
        "the IP is banned for every user"
    );
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let mut a = Appliance::new(
        "[regulation]\nmax_retries = 100\nmax_retries_per_ip = 2\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    a.add_user("ivan", "ivan-password", &["--role", "edgeauth-operator"]);
    a.add_user("judy", "judy-password", &[]);
    a.start();
    let via = |ip: &str, user: &str, pw: &str| {
        a.request(
            "POST",
            "/api/v1/login",
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", ip),
            ],
            Some(&json!({"username": user, "password": pw}).to_string()),
        )
    };
    assert_eq!(via("10.9.9.9", "x", "bad-guess").status, 401);
    assert_eq!(via("10.9.9.9", "y", "bad-guess").status, 429);
    assert_eq!(
        via("10.8.8.8", "judy", "judy-password").status,
        200,
        "another client behind the proxy is unaffected"
    );

    // Status is operator-only: a forwarded LAN client is refused, an operator's session is not.
    let anon = a.request(
        "GET",
        "/api/v1/status",
        &[("x-forwarded-for", "10.8.8.8")],
        None,
    );
    assert_eq!((anon.status, anon.code()), (403, "forbidden"));
    let judy = via("10.8.8.8", "judy", "judy-password").body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let staff = a.request(
        "GET",
        "/api/v1/status",
        &[
            ("x-forwarded-for", "10.8.8.8"),
            ("authorization", &format!("Bearer {judy}")),
        ],
        None,
    );
    assert_eq!(staff.status, 403);
    let ivan = via("10.7.7.7", "ivan", "ivan-password").body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let op = a.request(
        "GET",
        "/api/v1/status",
        &[
            ("x-forwarded-for", "10.8.8.8"),
            ("authorization", &format!("Bearer {ivan}")),
        ],
        None,
    );
    assert_eq!(op.status, 200, "{}", op.text);
    assert_eq!(op.body["mode"], "normal");
    assert_eq!(op.body["keycloak"]["status"], "disabled");
    assert!(op.body["sessions"]["active"].as_u64().unwrap() >= 3);
    let metrics = a.request("GET", "/metrics", &[("x-forwarded-for", "10.8.8.8")], None);
    assert_eq!(metrics.status, 403);
}

#[test]
fn status_probes_and_metrics_from_loopback() {
    let mut a = Appliance::new("");
    a.add_user("kate", "kate-password", &[]);
    a.start();
    a.session_id("kate", "kate-password");
    a.login("kate", "wrong-password");
    assert_eq!(a.request("GET", "/healthz", &[], None).status, 200);
    assert_eq!(a.request("GET", "/readyz", &[], None).status, 200);
    let st = a.request("GET", "/api/v1/status", &[], None);
    assert_eq!(st.status, 200);
    for key in ["mode", "keycloak", "sync", "sessions", "alerts"] {
        assert!(
            st.body.get(key).is_some(),
            "status lacks {key}: {}",
            st.text
        );
    }
    let m = a.request("GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    assert!(
        m.text
            .contains("edgeauth_logins_total{outcome=\"ok\",auth_mode=\"local\"} 1"),
        "{}",
        m.text
    );
    assert!(
        m.text.contains(
            "edgeauth_logins_total{outcome=\"invalid_credentials\",auth_mode=\"none\"} 1"
        ),
        "{}",
        m.text
    );
    assert!(
        m.text.contains("edgeauth_argon2_wait_seconds_count"),
        "{}",
        m.text
    );
    assert!(
        m.text
            .contains("edgeauth_active_sessions{auth_mode=\"local\"} 1"),
        "{}",
        m.text
    );
}

#[test]
fn malformed_requests_get_json_errors() {
    let mut a = Appliance::new("");
    a.start();
    let ct = [("content-type", "application/json")];
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "/api/v1/login",
            Some("{\"username\": \"a\""),
            &ct,
            400,
            "bad_request",
        ),
        ("/api/v1/login", Some("[1,2,3]"), &ct, 400, "bad_request"),
        (
            "/api/v1/login",
            Some("{\"username\": 5, \"password\": \"x\"}"),
            &ct,
            400,
            "bad_request",
        ),
        (
            "/api/v1/login",
            Some("{\"password\": \"x\"}"),
            &ct,
            400,
            "bad_request",
        ),
        (
            "/api/v1/login",
            Some("{\"username\": \"a b\", \"password\": \"x\"}"),
            &ct,
            400,
            "bad_request",
        ),
        (
            "/api/v1/login",
            Some("{\"username\": \"a\", \"password\": \"\"}"),
            &ct,
            400,
            "bad_request",
        ),
        (
            "/api/v1/login",
            Some("{\"username\": \"a\", \"password\": \"x\", \"tenant\": \"Bad/Tenant\"}"),
            &ct,
            400,
            "bad_request",
        ),
        (
            "/api/v1/login",
            Some("username=a&password=b"),
            &[("content-type", "application/x-www-form-urlencoded")],
            415,
            "unsupported_media_type",
        ),
        (
            "/api/v1/login",
            Some("{}"),
            &[],
            415,
            "unsupported_media_type",
        ),
        (
            "/api/v1/password",
            Some("not json"),
            &ct,
            400,
            "bad_request",
        ),
    ];
    for (path, body, headers, status, code) in cases {
        let r = a.request("POST", path, headers, body);
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{path} {body:?}: {}",
            r.text
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let huge = format!(
        "{{\"username\": \"a\", \"password\": \"{}\"}}",
        "x".repeat(64 * 1024)
    );
    // The server answers 413 and closes the connection without reading the rest of the body,
    // so this request gets an agent of its own (a pooled connection the server closed must not
    // be reused by the next request), and a retry if the close beats the client's write.
    let mut too_large = None;
    for _ in 0..5 {
        let res = support::agent()
            .post(a.url("/api/v1/login"))
            .header("content-type", "application/json")
            .send(huge.as_str());
        if let Ok(res) = res {
            let status = res.status().as_u16();
            too_large = Some((status, res.into_body().read_to_string().unwrap_or_default()));
            break;
        }
    }
    let (status, body) = too_large.expect("an oversized body gets an answer");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    let long_pw = json!({"username": "a", "password": "x".repeat(2000)});
    assert_eq!(a.post_json("/api/v1/login", &long_pw).status, 400);
    let r = a.request("GET", "/api/v1/login", &[], None);
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    let r = a.request("GET", "/nowhere", &[], None);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_eq!(
        a.request("GET", "/readyz", &[], None).status,
        200,
        "still serving"
    );
}

#[test]
fn more_concurrent_logins_than_hashing_slots() {
    // One slot, slow enough hashes: a burst queues briefly; past max_wait it gets 503.
    let argon =
        "[argon2]\nmemory_kib = 8192\niterations = 3\nparallelism = 1\nmax_concurrent = 1\n";
    let mut patient = Appliance::new(&format!("{argon}max_wait = \"30s\"\n"));
    patient.add_user("liam", "liam-password", &[]);
    patient.start();
    let mut hasty = Appliance::new(&format!("{argon}max_wait = \"1ms\"\n"));
    hasty.add_user("liam", "liam-password", &[]);
    hasty.start();

    let burst = |a: &Appliance| -> Vec<(u16, String, Option<String>)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let r = a.login("liam", "liam-password");
                        (
                            r.status,
                            r.code().to_owned(),
                            r.header("retry-after").map(str::to_owned),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let all_ok = burst(&patient);
    assert!(all_ok.iter().all(|(s, _, _)| *s == 200), "{all_ok:?}");
    let mixed = burst(&hasty);
    assert!(mixed.iter().any(|(s, _, _)| *s == 200), "{mixed:?}");
    let overloaded: Vec<_> = mixed.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!overloaded.is_empty(), "{mixed:?}");
    assert!(
        overloaded
            .iter()
            .all(|(_, c, r)| c == "overloaded" && r.is_some()),
        "{mixed:?}"
    );
    assert!(
        mixed.iter().all(|(s, _, _)| *s == 200 || *s == 503),
        "{mixed:?}"
    );
}

#[test]
fn slow_headers_are_cut_off() {
    let mut a = Appliance::new("");
    a.start();
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "a client that never finishes its headers is dropped ({waited:?})"
    );
    assert_eq!(a.request("GET", "/healthz", &[], None).status, 200);
}
