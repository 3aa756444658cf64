//! The Keycloak tier against the in-process fake Keycloak (fast fault tests; the real
//! Keycloak suite is its own): online logins, central changes honoured, outages, offline
//! limits, the circuit breaker, black holes, cold starts, local-first, status and alerts.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_keycloak::{FakeKeycloak, Fault};

use support::{appliance, online, status, wait_status};

#[test]
fn online_login_maps_roles_and_groups_and_captures_the_user() {
    let kc = FakeKeycloak::start();
    kc.add_user(
        "alice",
        "alice-pw-1",
        &["staff"],
        &["cashier"],
        &["front-desk"],
    );
    let mut a = online(&kc, "");
    let r = a.login("alice", "alice-pw-1");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["auth_mode"], "keycloak");
    assert_eq!(
        r.body["keycloak_status"],
        "online",
        "{}\n{}",
        status(&a),
        a.log()
    );
    assert_eq!(r.body["user"]["source"], "keycloak");
    let roles: Vec<&str> = r.body["user"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"staff") && roles.contains(&"cashier"),
        "{roles:?}"
    );
    assert_eq!(r.body["user"]["groups"], json!(["/front-desk"]));
    let sid = r.body["session_id"].as_str().unwrap();
    let s = a.check_session(sid);
    assert_eq!((s.status, s.body["mode"].as_str()), (200, Some("keycloak")));

    // The user now exists locally as a Keycloak user; its hash and tokens are never shown.
    let show = a.cli(&["user", "show", "alice", "--json"], None);
    let u: serde_json::Value = serde_json::from_str(&support::stdout(&show)).unwrap();
    assert_eq!(u["source"], "keycloak");
    assert!(u["last_online_auth"].as_u64().is_some());
    let log = a.log();
    assert!(
        !log.contains("alice-pw-1") && !log.contains("eyJ"),
        "no password or token in the log:\n{log}"
    );
    // The sealed tokens are not in the database in clear.
    a.stop();
    let db = std::fs::read(a.data_dir().join("edgeauth.redb")).unwrap();
    assert!(
        !db.windows(3).any(|w| w == b"eyJ"),
        "a JWT is stored in clear"
    );
}

#[test]
fn central_password_change_and_disable_are_honoured_online() {
    let kc = FakeKeycloak::start();
    kc.add_user("bob", "bob-old-pw", &["staff"], &[], &[]);
    kc.add_user("carl", "carl-pw-123", &[], &[], &[]);
    let a = online(&kc, "");
    assert_eq!(a.login("bob", "bob-old-pw").status, 200);
    let carl = a.session_id("carl", "carl-pw-123");

    kc.set_password("bob", "bob-new-pw");
    let old = a.login("bob", "bob-old-pw");
    assert_eq!(
        (old.status, old.code()),
        (401, "invalid_credentials"),
        "the old password is refused while online"
    );
    assert_eq!(a.login("bob", "bob-new-pw").status, 200);

    kc.set_enabled("carl", false);
    let d = a.login("carl", "carl-pw-123");
    assert_eq!((d.status, d.code()), (403, "account_disabled"));
    assert_eq!(
        a.check_session(&carl).body["reason"],
        "revoked",
        "a central disable ends the site's sessions"
    );

    // And after an outage, the old password is not accepted from a stale cache either.
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    assert_eq!(a.login("bob", "bob-old-pw").status, 401);
    assert_eq!(a.login("bob", "bob-new-pw").status, 200);
    assert_eq!(
        a.login("carl", "carl-pw-123").status,
        403,
        "disabled locally too"
    );
}

#[test]
fn outage_offline_logins_in_cached_and_local_modes() {
    let kc = FakeKeycloak::start();
    kc.add_user("dana", "dana-pw-123", &["staff"], &[], &["/ward"]);
    let mut cached = appliance(&kc, "");
    cached.start();
    let mut local = appliance(&kc, "[keycloak.resilience]\ncache_tokens = false\n");
    local.start();
    for a in [&cached, &local] {
        wait_status(a, "online");
    }
    let online_sid = cached.session_id("dana", "dana-pw-123");
    assert_eq!(local.login("dana", "dana-pw-123").status, 200);

    kc.set_fault(Fault::Refused);
    for a in [&cached, &local] {
        wait_status(a, "offline");
    }
    let c = cached.login("dana", "dana-pw-123");
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(
        (
            c.body["auth_mode"].as_str(),
            c.body["keycloak_status"].as_str()
        ),
        (Some("cached"), Some("offline"))
    );
    assert!(c.body["warning"].as_str().is_some());
    let l = local.login("dana", "dana-pw-123");
    assert_eq!(
        (l.status, l.body["auth_mode"].as_str()),
        (200, Some("local"))
    );
    assert_eq!(cached.login("dana", "wrong-password").status, 401);
    assert_eq!(cached.login("nobody", "whatever-pw").status, 401);

    // A session made online stays valid through the outage, reported as cached.
    let s = cached.check_session(&online_sid);
    assert_eq!(s.status, 200);
    assert_eq!(s.body["mode"], "cached");
    assert!(s.body["warning"].as_str().unwrap().contains("unreachable"));
    let st = status(&cached);
    assert_eq!(st["mode"], "offline");
    assert!(st["keycloak"]["offline_since"].as_str().is_some());

    // Keycloak back: mode normal again, online logins again.
    kc.set_fault(Fault::None);
    wait_status(&cached, "online");
    assert_eq!(status(&cached)["mode"], "normal");
    assert_eq!(cached.check_session(&online_sid).body["mode"], "keycloak");
    assert_eq!(
        cached.login("dana", "dana-pw-123").body["auth_mode"],
        "keycloak"
    );
}

#[test]
fn offline_limits_expiration_lockout_and_policy() {
    let kc = FakeKeycloak::start();
    for u in ["erin", "fred", "gina"] {
        kc.add_user(u, &format!("{u}-pw-123"), &[], &[], &[]);
    }
    let mut a = appliance(
        &kc,
        "[auth.offline]\ncredentials_expiration = \"2s\"\nfailed_login_attempts = 2\nfailed_login_delay = \"1h\"\n[regulation]\nmax_retries = 50\nmax_retries_per_ip = 100\n",
    );
    a.start();
    let mut strict = appliance(&kc, "[degraded]\nallow_login = false\n");
    strict.start();
    wait_status(&a, "online");
    wait_status(&strict, "online");
    for u in ["erin", "fred"] {
        assert_eq!(a.login(u, &format!("{u}-pw-123")).status, 200);
    }
    assert_eq!(strict.login("gina", "gina-pw-123").status, 200);
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    wait_status(&strict, "offline");

    // Offline lockout: two failures, then even the right password waits.
    assert_eq!(a.login("fred", "bad-password").status, 401);
    let locked = a.login("fred", "bad-password");
    assert_eq!((locked.status, locked.code()), (429, "too_many_attempts"));
    assert_eq!(a.login("fred", "fred-pw-123").status, 429);

    let no = strict.login("gina", "gina-pw-123");
    assert_eq!((no.status, no.code()), (403, "offline_login_not_allowed"));

    std::thread::sleep(Duration::from_millis(2500));
    let expired = a.login("erin", "erin-pw-123");
    assert_eq!(
        (expired.status, expired.code()),
        (403, "offline_login_expired")
    );
    assert_eq!(
        a.login("erin", "wrong-pw-here").status,
        401,
        "a wrong password learns nothing about expiry"
    );
}

#[test]
fn circuit_opens_and_closes_when_keycloak_returns() {
    let kc = FakeKeycloak::start();
    kc.add_user("hana", "hana-pw-123", &[], &[], &[]);
    // A slow monitor so the logins, not the probes, open the circuit.
    let a = online(
        &kc,
        "[keycloak.resilience]\nhealth_check_interval = \"30s\"\n",
    );
    assert_eq!(a.login("hana", "hana-pw-123").status, 200);
    kc.set_fault(Fault::Status500);
    for _ in 0..2 {
        let r = a.login("hana", "hana-pw-123");
        assert_eq!(
            (r.status, r.body["auth_mode"].as_str()),
            (200, Some("cached")),
            "{}",
            r.text
        );
    }
    let st = status(&a);
    assert_eq!(st["keycloak"]["circuit"]["state"], "open", "{st}");
    assert!(
        st["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "circuit_open"),
        "{st}"
    );
    kc.reset_counters();
    let r = a.login("hana", "hana-pw-123");
    assert_eq!(r.body["auth_mode"], "cached");
    assert_eq!(kc.token_requests(), 0, "an open circuit makes no call");

    kc.set_fault(Fault::None);
    std::thread::sleep(Duration::from_millis(1100)); // cooldown
    let trial = a.login("hana", "hana-pw-123");
    assert_eq!(
        trial.body["auth_mode"], "keycloak",
        "the half-open trial succeeded: {}",
        trial.text
    );
    assert_eq!(status(&a)["keycloak"]["circuit"]["state"], "closed");
    // The first failed login wakes the monitor, whose failed probe may be the second failure
    // that opens the circuit before the second login asks Keycloak.
    let failed = support::metric(
        &a,
        "edgeauth_keycloak_calls_total{kind=\"password_grant\",outcome=\"status\"}",
    );
    assert!((1.0..=2.0).contains(&failed), "{failed}");
    assert_eq!(
        support::metric(
            &a,
            "edgeauth_keycloak_calls_total{kind=\"password_grant\",outcome=\"circuit_open\"}"
        ),
        3.0 - failed
    );
    assert_eq!(support::metric(&a, "edgeauth_offline_fallbacks_total"), 3.0);
}

#[test]
fn black_hole_bounds_the_first_logins_then_answers_at_once() {
    let kc = FakeKeycloak::start();
    kc.add_user("ivan", "ivan-pw-123", &[], &[], &[]);
    let a = online(
        &kc,
        "[keycloak.resilience]\nhealth_check_interval = \"30s\"\ncooldown = \"60s\"\nrequest_timeout = \"1s\"\n",
    );
    assert_eq!(a.login("ivan", "ivan-pw-123").status, 200);
    kc.set_fault(Fault::BlackHole);
    // request_timeout = 1 s bounds the first one or two (failure_threshold = 2, the woken monitor
    // may be the other failure), then the circuit is open.
    support::black_hole_logins(&a, "ivan", "ivan-pw-123", Duration::from_secs(1));
}

#[test]
fn cold_start_during_an_outage_serves_known_users() {
    let kc = FakeKeycloak::start();
    kc.add_user("june", "june-pw-123", &["nurse"], &[], &[]);
    let mut a = online(&kc, "");
    assert_eq!(a.login("june", "june-pw-123").status, 200);
    a.stop();
    kc.set_fault(Fault::Refused);
    let started = Instant::now();
    a.start();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the appliance starts without Keycloak"
    );
    let r = a.login("june", "june-pw-123");
    assert_eq!(
        (r.status, r.body["auth_mode"].as_str()),
        (200, Some("cached")),
        "{}",
        r.text
    );
    assert!(
        r.body["user"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("nurse")),
        "{}",
        r.text
    );
    assert_eq!(a.login("stranger", "stranger-pw").status, 401);
}

#[test]
fn banned_attempts_never_reach_keycloak() {
    let kc = FakeKeycloak::start();
    kc.add_user("kim", "kim-pw-1234", &[], &[], &[]);
    let a = online(&kc, "[regulation]\nmax_retries = 3\n");
    for _ in 0..3 {
        a.login("kim", "guess-guess");
    }
    kc.reset_counters();
    let r = a.login("kim", "kim-pw-1234");
    assert_eq!(r.status, 429);
    assert_eq!(
        kc.token_requests(),
        0,
        "the site bans before Keycloak's brute-force detector counts"
    );
}

#[test]
fn misconfigured_client_is_an_operator_alert_not_a_wrong_password() {
    let kc = FakeKeycloak::start();
    kc.add_user("lena", "lena-pw-123", &[], &[], &[]);
    let a = online(&kc, "");
    assert_eq!(a.login("lena", "lena-pw-123").status, 200);
    kc.set_client_secret("rotated-centrally");
    let r = a.login("lena", "lena-pw-123");
    assert_eq!(
        (r.status, r.body["auth_mode"].as_str()),
        (200, Some("cached")),
        "the site keeps working: {}",
        r.text
    );
    let st = status(&a);
    let alert = st["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "keycloak_misconfigured")
        .cloned();
    assert!(
        alert.is_some_and(|x| x["message"].as_str().unwrap().contains("Invalid client")),
        "{st}"
    );
    assert_eq!(
        st["keycloak"]["circuit"]["state"], "closed",
        "a misconfiguration is not an outage"
    );
}

#[test]
fn local_first_answers_at_once_and_keycloak_can_revoke() {
    let kc = FakeKeycloak::start();
    kc.add_user("mona", "mona-pw-123", &[], &[], &[]);
    let a = online(&kc, "[auth]\norder = \"local-first\"\n");
    let first = a.login("mona", "mona-pw-123");
    assert_eq!(
        first.body["auth_mode"], "keycloak",
        "no local hash yet: online"
    );
    kc.set_fault(Fault::Slow(Duration::from_millis(800))); // under the 2 s timeouts
    let t = Instant::now();
    let quick = a.login("mona", "mona-pw-123");
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "local-first does not wait for Keycloak"
    );
    assert_eq!(
        (quick.status, quick.body["auth_mode"].as_str()),
        (200, Some("local"))
    );
    let sid = quick.body["session_id"].as_str().unwrap().to_owned();
    // The background confirmation upgrades the session.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(a.check_session(&sid).body["mode"], "keycloak");

    kc.set_fault(Fault::None);
    kc.set_password("mona", "mona-pw-456");
    let stale = a.login("mona", "mona-pw-123");
    assert_eq!(stale.status, 200, "answered from the stale local hash");
    let stale_sid = stale.body["session_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.check_session(&stale_sid).status == 200 {
        assert!(
            Instant::now() < deadline,
            "Keycloak's rejection must revoke the session"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a.check_session(&stale_sid).body["reason"], "revoked");
    assert_eq!(
        a.login("mona", "mona-pw-123").status,
        401,
        "the stale hash is gone"
    );
}

#[test]
fn diagnose_reports_each_check() {
    let kc = FakeKeycloak::start();
    let mut a = appliance(&kc, "");
    // Through /etc/hosts: the DNS line must resolve localhost.
    let text = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("http://127.0.0.1:", "http://localhost:");
    std::fs::write(&a.config, text).unwrap();
    let ok = a.cli(&["diagnose"], None);
    let out = support::stdout(&ok);
    assert!(ok.status.success(), "{out}{}", support::stderr(&ok));
    support::assert_diagnose_all_ok(&out);
    assert!(out.contains("localhost -> "), "{out}");

    // While serving, too (the store is locked), and with a rotated secret: one FAIL, exit 1.
    a.start();
    kc.set_client_secret("rotated-centrally");
    let bad = a.cli(&["diagnose"], None);
    assert_eq!(bad.status.code(), Some(1));
    let out = support::stdout(&bad);
    let line = support::diagnose_line(&out, "client_credentials");
    assert!(
        line.starts_with("FAIL") && line.contains("Invalid client"),
        "{out}"
    );
    kc.set_fault(Fault::Refused);
    let down = a.cli(&["diagnose", "--json"], None);
    let checks: serde_json::Value = serde_json::from_str(&support::stdout(&down)).unwrap();
    let tcp = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tcp")
        .unwrap();
    assert_eq!(tcp["ok"], false, "{checks}");
}

/// The proxy variables, all cleared for the diagnose runs below.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// `edgeauth diagnose` with no proxy variable but those of `env`: (success, stdout).
fn diagnose_with_env(a: &support::Appliance, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = support::edgeauth();
    cmd.arg("--config").arg(&a.config).arg("diagnose");
    for name in PROXY_VARS {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let text = support::stdout(&out);
    (
        out.status.success(),
        format!("{text}{}", support::stderr(&out)),
    )
}

#[test]
fn diagnose_goes_the_way_of_the_proxy() {
    let kc = FakeKeycloak::start();
    let port: u16 = kc.base_url().rsplit(':').next().unwrap().parse().unwrap();
    let fake: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let proxy =
        support::connect_proxy::ConnectProxy::start(vec![("keycloak.invalid".into(), fake)]);

    // A Keycloak name only the proxy resolves: DNS and TCP test the proxy, the rest go through it.
    let a = support::appliance_at(
        &format!("http://keycloak.invalid:{port}"),
        kc.realm(),
        kc.client_id(),
        kc.client_secret(),
        &format!("[keycloak]\nproxy = \"{}\"", proxy.url()),
    );
    let (ok, out) = diagnose_with_env(&a, &[]);
    assert!(ok, "{out}");
    support::assert_diagnose_all_ok(&out);
    assert!(
        support::diagnose_line(&out, "dns").contains(
            "127.0.0.1 -> 127.0.0.1 (via proxy, from keycloak.proxy; \
             Keycloak's name keycloak.invalid is resolved by the proxy)"
        ),
        "{out}"
    );
    assert!(
        support::diagnose_line(&out, "tcp").contains("(the proxy)"),
        "{out}"
    );
    assert!(
        proxy.seen().contains(&format!("keycloak.invalid:{port}")),
        "{:?}",
        proxy.seen()
    );

    // NO_PROXY exempts the host from the configured proxy too: then the name is ours to resolve.
    let (ok, out) = diagnose_with_env(&a, &[("NO_PROXY", ".invalid")]);
    assert!(!ok, "{out}");
    let dns = support::diagnose_line(&out, "dns");
    assert!(
        dns.starts_with("FAIL") && dns.contains("keycloak.invalid"),
        "{out}"
    );

    // ... and from it in the HTTP client: a dead configured proxy is not used for 127.0.0.1.
    let dead = support::free_port();
    let b = support::appliance(
        &kc,
        &format!("[keycloak]\nproxy = \"http://127.0.0.1:{dead}\""),
    );
    let (ok, out) = diagnose_with_env(&b, &[("no_proxy", "localhost,127.0.0.1")]);
    assert!(ok, "{out}");
    support::assert_diagnose_all_ok(&out);

    // An http:// Keycloak takes HTTP_PROXY (or ALL_PROXY), never HTTPS_PROXY.
    let c = support::appliance(&kc, "");
    let (ok, out) = diagnose_with_env(&c, &[("HTTPS_PROXY", &format!("http://127.0.0.1:{dead}"))]);
    assert!(ok, "{out}");
    support::assert_diagnose_all_ok(&out);
    let before = proxy.seen().len();
    let (ok, out) = diagnose_with_env(&c, &[("HTTP_PROXY", &proxy.url())]);
    assert!(ok, "{out}");
    assert!(
        support::diagnose_line(&out, "dns").contains("from HTTP_PROXY"),
        "{out}"
    );
    assert!(proxy.seen().len() > before, "{:?}", proxy.seen());
}

#[test]
fn refresher_renews_used_sessions_and_a_central_logout_revokes() {
    let kc = FakeKeycloak::start();
    kc.add_user("nora", "nora-pw-123", &[], &[], &[]);
    kc.add_user("otto", "otto-pw-123", &[], &[], &[]);
    kc.set_access_token_lifespan(Duration::from_secs(30)); // within the refresh margin at once
    let a = online(&kc, "");
    let nora = a.session_id("nora", "nora-pw-123");
    let otto = a.session_id("otto", "otto-pw-123");
    kc.reset_counters();
    // nora uses her session; otto's stays idle and is not renewed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while kc.token_requests() == 0 {
        assert_eq!(a.check_session(&nora).status, 200);
        assert!(
            Instant::now() < deadline,
            "a used session is renewed before its access token expires"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Once nobody uses the sessions, renewals stop: idle sessions idle out as the realm intends.
    std::thread::sleep(Duration::from_millis(2500));
    let settled = kc.token_requests();
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(
        kc.token_requests(),
        settled,
        "idle sessions are not renewed"
    );

    kc.logout_user("nora");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = a.check_session(&nora);
        if r.status == 401 {
            assert_eq!(r.body["reason"], "revoked");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a rejected refresh revokes the site session"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        a.check_session(&otto).status,
        200,
        "other users are unaffected"
    );
}

#[test]
fn jwks_rotation_is_picked_up_on_an_unknown_kid() {
    let kc = FakeKeycloak::start();
    kc.add_user("pam", "pam-pw-1234", &["staff"], &[], &[]);
    let a = online(&kc, "");
    assert_eq!(a.login("pam", "pam-pw-1234").body["auth_mode"], "keycloak");
    let before = kc.requests("/certs");
    kc.rotate_keys(false);
    let r = a.login("pam", "pam-pw-1234");
    assert_eq!(
        (r.status, r.body["auth_mode"].as_str()),
        (200, Some("keycloak")),
        "{}",
        r.text
    );
    assert!(
        r.body["user"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("staff"))
    );
    assert_eq!(
        kc.requests("/certs"),
        before + 1,
        "one refetch for the new kid"
    );
    let m = a.request("GET", "/metrics", &[], None).text;
    assert!(
        m.contains("edgeauth_jwks_cache_total{result=\"miss\"}"),
        "{m}"
    );
    a.login("pam", "pam-pw-1234");
    assert_eq!(kc.requests("/certs"), before + 1, "the new key is cached");
}

#[test]
fn garbage_answers_are_unavailable_and_a_long_outage_raises_keycloak_down() {
    let kc = FakeKeycloak::start();
    kc.add_user("quin", "quin-pw-123", &[], &[], &[]);
    let a = online(&kc, "[alerts]\nkeycloak_down_after = \"1s\"\n");
    assert_eq!(a.login("quin", "quin-pw-123").status, 200);
    kc.set_fault(Fault::Garbage);
    let r = a.login("quin", "quin-pw-123");
    assert_eq!(
        (r.status, r.body["auth_mode"].as_str()),
        (200, Some("cached")),
        "{}",
        r.text
    );
    wait_status(&a, "offline");
    std::thread::sleep(Duration::from_millis(1500));
    let st = status(&a);
    let down = st["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "keycloak_down")
        .cloned();
    assert!(down.is_some_and(|d| d["severity"] == "critical"), "{st}");
    kc.set_fault(Fault::None);
    wait_status(&a, "online");
    assert!(
        status(&a)["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["name"] != "keycloak_down")
    );
}
