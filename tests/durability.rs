//! Design rule 3: every 2xx is committed first. A SIGKILL right after an answer loses nothing.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Appliance, stdout};

#[test]
fn kill_9_right_after_a_login_loses_nothing() {
    let mut a = Appliance::new("");
    a.add_user("pia", "pia-password", &[]);
    a.start();
    let sid = a.session_id("pia", "pia-password");
    a.kill9();

    a.start();
    let r = a.check_session(&sid);
    assert_eq!(
        r.status, 200,
        "the session acknowledged before the crash is there: {}",
        r.text
    );
    assert_eq!(r.body["user"]["username"], "pia");
    a.stop();
    let audit = a.cli(&["audit", "--json"], None);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&audit)).unwrap();
    let login = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "login" && r["username"] == "pia")
        .expect("the login's audit row survived the crash");
    assert_eq!(login["outcome"], "ok");
    assert_eq!(login["auth_mode"], "local");
    assert_eq!(login["client_ip"], "127.0.0.1");
}

#[test]
fn kill_9_right_after_logout_and_password_change() {
    let mut a = Appliance::new("");
    a.add_user("quinn", "quinn-password", &[]);
    a.start();
    let sid = a.session_id("quinn", "quinn-password");
    assert_eq!(
        a.request(
            "POST",
            "/api/v1/logout",
            &[("authorization", &format!("Bearer {sid}"))],
            None
        )
        .status,
        200
    );
    let changed = a.post_json(
        "/api/v1/password",
        &serde_json::json!({"username": "quinn", "old_password": "quinn-password", "new_password": "quinn-password-2"}),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    a.kill9();
    a.start();
    assert_eq!(a.check_session(&sid).body["reason"], "revoked");
    assert_eq!(a.login("quinn", "quinn-password").status, 401);
    assert_eq!(a.login("quinn", "quinn-password-2").status, 200);
}

#[test]
fn data_survives_a_graceful_restart() {
    let mut a = Appliance::new("");
    a.add_user("rita", "rita-password", &["--role", "cashier"]);
    a.start();
    let sid = a.session_id("rita", "rita-password");
    a.stop();
    a.start();
    let r = a.check_session(&sid);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["user"]["roles"], serde_json::json!(["cashier"]));
}
