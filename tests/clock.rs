//! Design rule 7 against the real binary, its system clock set two days back with libfaketime
//! (Debian's `faketime`, which scripts/test.sh installs): the appliance's time keeps moving
//! from the latest time the store saw, and adopts Keycloak's clock when it sees it.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeauth::clock::{http_date, rfc3339};
use support::fake_keycloak::FakeKeycloak;
use support::{Appliance, appliance, status, two_days_behind, wait_status};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `Date` header of a fresh answer, and whether it is within `slack` seconds before the
/// real time (this test process's clock is not faked).
fn date_is_real_time(a: &Appliance, slack: u64) -> (String, bool) {
    let date = a
        .request("GET", "/healthz", &[], None)
        .header("date")
        .unwrap_or_default()
        .to_owned();
    let now = unix_now();
    let real = (now.saturating_sub(slack)..=now + 1).any(|t| http_date(t) == date);
    (date, real)
}

fn clock_alert(a: &Appliance) -> Option<String> {
    status(a)["alerts"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == "clock_behind")
        .map(|x| x["message"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn after_a_restart_two_days_in_the_past_sessions_still_expire_on_time() {
    let mut a = Appliance::new("[auth]\nsession_ttl = \"3s\"\nsession_idle = \"1h\"\n");
    a.add_user("olga", "olga-password", &[]);
    a.start();
    a.stop(); // persists the clock floor
    a.start_with(two_days_behind(), &[]);
    let alert = clock_alert(&a);
    assert!(
        alert
            .as_deref()
            .is_some_and(|m| m.contains("started") && m.contains("behind the latest time")),
        "the system clock runs two days behind: {alert:?}\n{}",
        a.log()
    );

    let sid = a.session_id("olga", "olga-password");
    assert_eq!(a.check_session(&sid).status, 200);
    let (date, real) = date_is_real_time(&a, 10);
    assert!(
        real,
        "Date {date:?} is the appliance's time, not the system clock's"
    );

    std::thread::sleep(Duration::from_millis(3500));
    // The old clock stood still at the floor until the system clock caught up: two days.
    assert_eq!(
        a.check_session(&sid).body["reason"],
        "session_expired",
        "the session TTL runs while the system clock is behind"
    );
    let (date, real) = date_is_real_time(&a, 10);
    assert!(real, "Date {date:?} moves on with the appliance's time");
}

#[test]
fn keycloaks_clock_is_adopted_at_login() {
    let kc = FakeKeycloak::start();
    kc.add_user("pia", "pia-password", &[], &[], &[]);
    // A new store: nothing tells the appliance that its system clock is two days behind...
    let mut a = appliance(&kc, "");
    a.start_with(two_days_behind(), &[]);
    wait_status(&a, "online");
    let (date, real) = date_is_real_time(&a, 10);
    assert!(!real, "two days behind at first: {date:?}");
    assert_eq!(clock_alert(&a), None);

    // ...until Keycloak issues a token: its `iat` is Keycloak's clock.
    let r = a.login("pia", "pia-password");
    assert_eq!(r.status, 200, "{}", r.text);
    let (date, real) = date_is_real_time(&a, 10);
    assert!(real, "Keycloak's clock adopted: {date:?}\n{}", a.log());
    let alert = clock_alert(&a).unwrap_or_default();
    assert!(
        alert.contains("follows Keycloak's clock"),
        "the system clock is still two days behind: {alert:?}"
    );
    // The session started at the adopted time, so it ends 8 h (the default TTL) from now.
    let ends = r.body["expires_at"].as_str().unwrap_or_default();
    let now = unix_now();
    assert!(
        (now - 10..=now + 1).any(|t| rfc3339(t + 8 * 3600) == ends),
        "expires_at {ends}"
    );
    let s = a.check_session(r.body["session_id"].as_str().unwrap());
    assert_eq!(s.status, 200, "{}", s.text);
}
