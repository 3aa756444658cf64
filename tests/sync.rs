//! The sync queue and two-way user sync against the fake Keycloak's admin API (design §9):
//! changes accepted during an outage reach Keycloak exactly once when it returns, and changes
//! made centrally reach the site.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_keycloak::{FakeKeycloak, Fault};
use support::{Appliance, appliance, online, status, stdout, wait_status};

fn change_password(a: &Appliance, user: &str, old: &str, new: &str) -> support::Reply {
    a.post_json(
        "/api/v1/password",
        &json!({"username": user, "old_password": old, "new_password": new}),
    )
}

/// An appliance whose `user` logged in online, then changed their password during an outage:
/// one `password_change` item is queued. Keycloak is still refusing connections on return.
fn queued_change(user: &str, old: &str, new: &str, extra: &str) -> (FakeKeycloak, Appliance) {
    let kc = FakeKeycloak::start();
    kc.add_user(user, old, &[], &[], &[]);
    let a = online(&kc, &format!("[keycloak.sync]\ninterval = \"1h\"\n{extra}"));
    assert_eq!(a.login(user, old).status, 200);
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    let r = change_password(&a, user, old, new);
    assert_eq!(r.body["mode"], "local_only_queued", "{}", r.text);
    (kc, a)
}

fn sync_once(a: &Appliance) -> String {
    let out = a.cli(&["sync", "--once"], None);
    assert!(out.status.success(), "{}", support::stderr(&out));
    stdout(&out)
}

#[test]
fn password_change_online_is_synchronized_and_policy_refusals_change_nothing() {
    let kc = FakeKeycloak::start();
    kc.add_user("ada", "ada-pw-1234", &[], &[], &[]);
    let a = online(&kc, "");
    assert_eq!(a.login("ada", "ada-pw-1234").status, 200);
    let r = change_password(&a, "ada", "ada-pw-1234", "ada-pw-5678");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["mode"], "synchronized");
    assert_eq!(r.body["keycloak_updated"], true);
    assert!(kc.check_password("ada", "ada-pw-5678"));
    // Keycloak's own policy (not the username) refuses: 400 with its message, nothing changes.
    let weak = change_password(&a, "ada", "ada-pw-5678", "ADA");
    assert_eq!(weak.status, 400);
    let weak = change_password(&a, "ada", "ada-pw-5678", "ada-is-ok-here");
    assert_eq!(weak.status, 200, "{}", weak.text);
    assert_eq!(status(&a)["sync"]["pending"], 0);
}

#[test]
fn outage_password_change_is_queued_then_replayed_exactly_once() {
    let kc = FakeKeycloak::start();
    kc.add_user("bea", "bea-old-pw1", &[], &[], &[]);
    let a = online(&kc, "[keycloak.sync]\ninterval = \"1h\"\n");
    assert_eq!(a.login("bea", "bea-old-pw1").status, 200);
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    let r = change_password(&a, "bea", "bea-old-pw1", "bea-new-pw2");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["mode"], "local_only_queued");
    assert_eq!(r.body["keycloak_updated"], false);
    assert_eq!(status(&a)["sync"]["pending"], 1);
    assert_eq!(
        a.login("bea", "bea-new-pw2").status,
        200,
        "offline, the new password works at once"
    );
    let listed = stdout(&a.cli(&["sync", "--list"], None));
    assert!(
        listed.contains("password_change") && listed.contains("bea@default"),
        "{listed}"
    );
    assert!(
        !listed.contains("bea-new-pw2"),
        "never a secret in the listing"
    );

    // Keycloak back: the monitor wakes the worker; the change reaches Keycloak once.
    kc.reset_counters();
    kc.set_fault(Fault::None);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while status(&a)["sync"]["pending"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never drained: {}",
            status(&a)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(kc.check_password("bea", "bea-new-pw2"));
    assert_eq!(kc.admin_requests("PUT", "/reset-password"), 1);
    sync_once(&a);
    assert_eq!(
        kc.admin_requests("PUT", "/reset-password"),
        1,
        "replayed exactly once"
    );
    wait_status(&a, "online");
    assert_eq!(
        a.login("bea", "bea-old-pw1").status,
        401,
        "the old password is refused online"
    );
    let ok = a.login("bea", "bea-new-pw2");
    assert_eq!(
        (ok.status, ok.body["auth_mode"].as_str()),
        (200, Some("keycloak"))
    );
    let log = a.log();
    assert!(
        !log.contains("bea-new-pw2") && !log.contains("bea-old-pw1"),
        "no password in the log"
    );
    let st = status(&a);
    assert!(st["sync"]["last_cycle"].as_str().is_some(), "{st}");
}

#[test]
fn kill_9_between_queueing_and_replay_loses_nothing() {
    let (kc, mut a) = queued_change("cid", "cid-old-pw1", "cid-new-pw2", "");
    a.kill9();
    kc.set_fault(Fault::None);
    let out = sync_once(&a);
    assert!(out.contains("1 replayed"), "{out}");
    assert!(kc.check_password("cid", "cid-new-pw2"));
    sync_once(&a);
    assert_eq!(
        kc.admin_requests("PUT", "/reset-password"),
        1,
        "once, across the crash"
    );
}

#[test]
fn provisioning_offline_reconciles_with_a_409() {
    let kc = FakeKeycloak::start();
    let mut a = appliance(
        &kc,
        "[degraded]\nallow_user_creation = true\n[keycloak.sync]\ninterval = \"1h\"\n",
    );
    let mut strict = appliance(&kc, "");
    a.start();
    strict.start();
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    wait_status(&strict, "offline");
    let refused = strict.cli(
        &["user", "add", "dan", "--password-stdin"],
        Some("dan-pw-1234\n"),
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        support::stderr(&refused).contains("allow_user_creation"),
        "{}",
        support::stderr(&refused)
    );

    let added = a.cli(
        &["user", "add", "dan", "--password-stdin", "--group", "/ward"],
        Some("dan-pw-1234\n"),
    );
    assert!(added.status.success(), "{}", support::stderr(&added));
    assert!(stdout(&added).contains("(keycloak)"));
    assert_eq!(
        a.login("dan", "dan-pw-1234").status,
        200,
        "usable at once, offline"
    );
    // Meanwhile someone created the same user centrally.
    kc.set_fault(Fault::None);
    kc.add_user("dan", "central-pw-99", &[], &[], &[]);
    kc.add_group("/ward");
    let out = sync_once(&a);
    assert!(
        out.contains("1 replayed") && out.contains("0 dead"),
        "{out}"
    );
    assert!(
        kc.check_password("dan", "dan-pw-1234"),
        "reconciled: the site's password is set"
    );
    assert!(
        kc.user_groups("dan").contains(&"/ward".to_owned()),
        "{:?}",
        kc.user_groups("dan")
    );

    // Online, provisioning goes straight to Keycloak.
    let online = strict.cli(
        &[
            "user",
            "add",
            "eve",
            "--password-stdin",
            "--email",
            "eve@site.test",
            "--first-name",
            "Eve",
            "--last-name",
            "Ng",
        ],
        Some("eve-pw-1234\n"),
    );
    assert!(online.status.success(), "{}", support::stderr(&online));
    assert!(kc.user_exists("eve"));
}

#[test]
fn a_newer_central_password_supersedes_the_queued_one() {
    let (kc, mut a) = queued_change("fay", "fay-old-pw1", "fay-site-pw2", "");
    a.stop();
    // Centrally, later: the help desk resets her password.
    kc.set_fault(Fault::None);
    kc.set_password("fay", "fay-central-pw3");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    kc.set_password_created_ms("fay", now_ms + 5_000);
    let out = sync_once(&a);
    assert!(out.contains("1 superseded"), "{out}");
    assert!(
        kc.check_password("fay", "fay-central-pw3"),
        "the central change wins"
    );
    assert_eq!(kc.admin_requests("PUT", "/reset-password"), 0);
}

#[test]
fn refused_replays_back_off_then_die_and_can_be_retried() {
    let (kc, mut a) = queued_change(
        "gus",
        "gus-old-pw1",
        "gus-new-pw2",
        "max_attempts = 2\nretry_delay = \"3s\"\n",
    );
    a.stop();
    kc.set_fault(Fault::None);
    kc.set_admin_fault(Some((400, r#"{"error":"unknown_error"}"#.into())));
    let first = sync_once(&a);
    assert!(first.contains("1 failed"), "{first}");
    let again = sync_once(&a);
    // The clock has whole seconds: with a 1 s delay, a second run that starts just after a
    // second boundary found the item due (and dead) on a loaded box. 3 s leaves 2 s for it.
    assert!(
        again.contains("0 failed") && again.contains("0 replayed") && again.contains("0 dead"),
        "backing off: {again}"
    );
    std::thread::sleep(Duration::from_millis(3200));
    let dead = sync_once(&a);
    assert!(
        dead.contains("1 dead"),
        "{dead}\nnow {:?}\n{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH),
        stdout(&a.cli(&["sync", "--list", "--json"], None))
    );
    let listed = stdout(&a.cli(&["sync", "--list"], None));
    assert!(listed.contains("dead"), "{listed}");
    let st: serde_json::Value =
        serde_json::from_str(&stdout(&a.cli(&["status", "--json"], None))).unwrap();
    assert_eq!(st["sync"]["dead"], 1);
    assert!(
        st["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "sync_dead_items"),
        "{st}"
    );
    let id = listed
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches('#')
        .to_owned();
    let pending = a.cli(&["sync", "--drop", &id], None);
    assert_eq!(
        pending.status.code(),
        Some(0),
        "a dead item may be dropped: {}",
        support::stderr(&pending)
    );
    assert_eq!(
        a.cli(&["sync", "--retry", &id], None).status.code(),
        Some(1),
        "gone after the drop"
    );
}

#[test]
fn retry_puts_a_dead_item_back() {
    let (kc, mut a) = queued_change("hal", "hal-old-pw1", "hal-new-pw2", "max_attempts = 1\n");
    a.stop();
    kc.set_fault(Fault::None);
    kc.set_admin_fault(Some((400, r#"{"error":"unknown_error"}"#.into())));
    assert!(sync_once(&a).contains("1 dead"));
    kc.set_admin_fault(None);
    let listed = stdout(&a.cli(&["sync", "--list"], None));
    let id = listed
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches('#')
        .to_owned();
    assert!(a.cli(&["sync", "--retry", &id], None).status.success());
    assert!(sync_once(&a).contains("1 replayed"));
    assert!(kc.check_password("hal", "hal-new-pw2"));
}

#[test]
fn pull_sync_disables_a_centrally_disabled_user_and_ends_their_sessions() {
    pull_sync_in_scope("known");
}

#[test]
fn pull_sync_by_realm_listing_does_the_same() {
    pull_sync_in_scope("realm");
}

fn pull_sync_in_scope(scope: &str) {
    let kc = FakeKeycloak::start();
    kc.add_user("ivy", "ivy-pw-1234", &["staff"], &[], &["/a"]);
    kc.add_user("jon", "jon-pw-1234", &["staff"], &[], &[]);
    for i in 0..5 {
        kc.add_user(&format!("other{i}"), "other-pw-123", &[], &[], &[]);
    }
    let a = online(
        &kc,
        &format!("[keycloak.sync]\ninterval = \"1h\"\npull = \"{scope}\"\nbatch = 3\n"),
    );
    let ivy = a.session_id("ivy", "ivy-pw-1234");
    let jon = a.session_id("jon", "jon-pw-1234");
    kc.set_enabled("ivy", false);
    kc.delete_user("jon");
    let out = sync_once(&a);
    assert!(out.contains("2 disabled"), "{out}");
    assert_eq!(a.check_session(&ivy).body["reason"], "revoked");
    assert_eq!(a.check_session(&jon).body["reason"], "revoked");
    let show: serde_json::Value =
        serde_json::from_str(&stdout(&a.cli(&["user", "show", "ivy", "--json"], None))).unwrap();
    assert_eq!(show["enabled"], false);
}

/// Polls `f` every 100 ms for at most `limit`; on failure prints the appliance's log and its
/// sync metrics, so a failure says why.
fn eventually(a: &Appliance, limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        if start.elapsed() > limit {
            let metrics = a.request("GET", "/metrics", &[], None).text;
            let sync: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("edgeauth_sync") || l.contains("kind=\"sync"))
                .collect();
            panic!(
                "{what}: not within {limit:?}\nstatus: {}\nsync metrics:\n{}\nlog:\n{}",
                status(a),
                sync.join("\n"),
                a.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replay_cut_short_by_a_cold_keycloak_is_retried_within_seconds_not_an_interval() {
    // Keycloak comes back cold: its health endpoint answers at once, but the service account's
    // first token takes longer than request_timeout, so the first replay is cut short.
    let (kc, a) = queued_change(
        "gil",
        "gil-old-pw1",
        "gil-new-pw2",
        "[keycloak.resilience]\nrequest_timeout = \"1s\"\n",
    );
    kc.set_cold_service_tokens(1, Duration::from_millis(2500));
    kc.set_fault(Fault::None);
    wait_status(&a, "online");
    // The interval is an hour: only a quick retry drains the queue within this bound.
    eventually(&a, Duration::from_secs(20), "the queue drains", || {
        status(&a)["sync"]["pending"] == 0
    });
    assert!(kc.check_password("gil", "gil-new-pw2"));
    assert!(
        support::metric(&a, "edgeauth_sync_cycles_total{result=\"cut_short\"}") >= 1.0,
        "the first cycle was cut short"
    );
    let log = a.log();
    assert!(
        log.contains("WARN") && log.contains("sync: cycle cut short (timeout"),
        "the cut-short cycle is logged at warn with its cause:\n{log}"
    );
    assert_eq!(
        kc.admin_requests("PUT", "/reset-password"),
        1,
        "replayed exactly once"
    );
}

#[test]
fn admin_api_refusals_and_odd_answers_never_degrade_the_login_side() {
    let kc = FakeKeycloak::start();
    kc.add_user("hal", "hal-pw-1234", &["staff"], &[], &[]);
    kc.set_access_token_lifespan(Duration::from_secs(30));
    let a = online(&kc, "[keycloak.sync]\ninterval = \"1h\"\n");
    let sid = a.session_id("hal", "hal-pw-1234");

    // The service account lacks a role: the admin API answers 403.
    kc.set_admin_fault(Some((403, r#"{"error":"unknown_error"}"#.into())));
    let out = a.cli(&["sync", "--once"], None);
    let text = format!("{}{}", stdout(&out), support::stderr(&out));
    assert!(text.contains("403"), "{text}");
    let st = status(&a);
    assert_eq!(
        (st["keycloak"]["status"].as_str(), st["mode"].as_str()),
        (Some("online"), Some("normal")),
        "{st}"
    );
    let alerts = st["alerts"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = alerts.iter().filter_map(|x| x["name"].as_str()).collect();
    assert!(!names.contains(&"keycloak_misconfigured"), "{st}");
    let admin = alerts
        .iter()
        .find(|x| x["name"] == "keycloak_admin_api")
        .unwrap_or_else(|| panic!("an alert of its own: {st}"));
    let message = admin["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("GET /admin/realms/{realm}/users")
            && message.contains("realm-management role view-users"),
        "names the endpoint and the permission: {message}"
    );

    // The refresher still catches a central logout.
    assert_eq!(a.check_session(&sid).status, 200);
    kc.logout_user("hal");
    eventually(&a, Duration::from_secs(15), "the site session ends", || {
        a.check_session(&sid).status == 401
    });

    // An admin answer in an unexpected shape, cycle after cycle, never opens the login circuit.
    kc.set_admin_fault(Some((200, "<html>not the admin API</html>".into())));
    for _ in 0..4 {
        a.cli(&["sync", "--once"], None);
    }
    let st = status(&a);
    assert_eq!(st["keycloak"]["circuit"]["state"], "closed", "{st}");
    assert_eq!(st["keycloak"]["status"], "online", "{st}");
    assert_eq!(a.login("hal", "hal-pw-1234").body["auth_mode"], "keycloak");

    // Fixed centrally: the alert clears with the next good admin answer.
    kc.set_admin_fault(None);
    sync_once(&a);
    let st = status(&a);
    assert!(
        !st["alerts"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["name"] == "keycloak_admin_api")),
        "{st}"
    );
}

#[test]
fn offline_roles_and_groups_are_those_of_the_token_even_after_a_pull() {
    let kc = FakeKeycloak::start();
    kc.add_user(
        "ivo",
        "ivo-pw-1234",
        &["site-manager"],
        &["till-open"],
        &["shop-floor"],
    );
    kc.set_access_token_lifespan(Duration::from_secs(30));
    let a = online(&kc, "[keycloak.sync]\ninterval = \"1h\"\n");
    let online_login = a.login("ivo", "ivo-pw-1234");
    assert_eq!(
        online_login.body["auth_mode"], "keycloak",
        "{}",
        online_login.text
    );
    let roles = online_login.body["user"]["roles"].clone();
    let groups = online_login.body["user"]["groups"].clone();
    assert!(roles.to_string().contains("till-open"), "{roles}");
    sync_once(&a);
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    let offline = a.login("ivo", "ivo-pw-1234");
    assert_eq!(offline.body["auth_mode"], "cached", "{}", offline.text);
    assert_eq!(offline.body["user"]["roles"], roles, "{}", offline.text);
    assert_eq!(offline.body["user"]["groups"], groups, "{}", offline.text);

    // A role taken centrally reaches the site at the next token renewal, not through the pull.
    kc.set_fault(Fault::None);
    wait_status(&a, "online");
    let sid = a.session_id("ivo", "ivo-pw-1234");
    kc.add_user(
        "ivo",
        "ivo-pw-1234",
        &["site-manager"],
        &[],
        &["shop-floor"],
    );
    eventually(
        &a,
        Duration::from_secs(15),
        "the renewal drops till-open",
        || {
            a.check_session(&sid);
            let show = stdout(&a.cli(&["user", "show", "ivo", "--json"], None));
            show.contains("site-manager") && !show.contains("till-open")
        },
    );
}

#[test]
fn a_superseded_site_password_no_longer_signs_in_offline() {
    let (kc, a) = queued_change("jan", "jan-old-pw1", "jan-site-pw2", "");
    // Centrally, later: the help desk resets his password.
    kc.set_password("jan", "jan-central-pw3");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    kc.set_password_created_ms("jan", now_ms + 5_000);
    // Keycloak back: the worker replays at once, and the queued password is superseded.
    kc.set_fault(Fault::None);
    eventually(
        &a,
        Duration::from_secs(20),
        "the item is superseded",
        || {
            let st = status(&a);
            st["sync"]["pending"] == 0 && st["sync"]["failed"] == 0 && st["sync"]["dead"] == 0
        },
    );
    // The next outage, with no online login in between.
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    let site = a.login("jan", "jan-site-pw2");
    assert_eq!(
        (site.status, site.code()),
        (401, "invalid_credentials"),
        "the superseded site password must not sign in: {}",
        site.text
    );
    assert_ne!(a.login("jan", "jan-central-pw3").status, 200);
}

#[test]
fn the_pull_makes_one_admin_call_per_user_and_none_per_user_that_does_not_change() {
    let kc = FakeKeycloak::start();
    let names: Vec<String> = (0..6).map(|i| format!("pat{i}")).collect();
    for n in &names {
        kc.add_user(n, "pat-pw-1234", &["staff"], &["till-open"], &["/a"]);
    }
    let a = online(
        &kc,
        "[keycloak.sync]\ninterval = \"1h\"\npull_rate = 20.0\n",
    );
    for n in &names {
        assert_eq!(a.login(n, "pat-pw-1234").status, 200);
    }
    kc.reset_counters();
    let out = sync_once(&a);
    assert!(out.contains("6 users pulled"), "{out}");
    assert_eq!(
        kc.admin_requests("GET", "/clients"),
        0,
        "no per-user client lookup"
    );
    assert_eq!(kc.admin_requests("GET", "/role-mappings"), 0);
    assert_eq!(
        kc.admin_requests("GET", "/users"),
        names.len(),
        "one lookup per user"
    );
}
