//! /status for operators: the status report ([`crate::app::App::status`], as
//! `GET /api/v1/status`) as a page readable at a glance at 3 a.m.: the mode as one big word (in
//! colour and in text), since when, then Keycloak and its circuit, the sync queue, sessions by
//! auth_mode and the alerts. It refreshes itself every 10 s. Who may see it is
//! [`crate::http::api::operator_access`]'s rule; anyone else signs in first or gets 403.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Chrome, Site, html, message, see_other};
use crate::app::App;
use crate::http::api::{ClientAddr, OperatorAccess, Presented, operator_access};
use crate::status::StatusReport;

/// How often the page reloads itself.
pub const REFRESH_SECS: u64 = 10;

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage<'a> {
    chrome: &'a Chrome,
    refresh: u64,
    /// `normal`, `degraded` or `offline` (the CSS class), and the word shown.
    mode: &'a str,
    mode_word: String,
    mode_says: &'static str,
    since: Option<String>,
    now: String,
    rows_keycloak: Vec<(&'static str, String)>,
    rows_sync: Vec<(&'static str, String)>,
    rows_sessions: Vec<(&'static str, String)>,
    rows_appliance: Vec<(&'static str, String)>,
    alerts: Vec<AlertRow<'a>>,
}

struct AlertRow<'a> {
    severity: &'a str,
    name: &'a str,
    since: String,
    message: &'a str,
}

pub async fn page(
    State(app): State<Arc<App>>,
    Extension(site): Extension<Arc<Site>>,
    ClientAddr(from): ClientAddr,
    Presented(credential): Presented,
) -> Response {
    match operator_access(&app, from, credential.as_ref()) {
        Ok(OperatorAccess::Granted) => {}
        Ok(OperatorAccess::SignIn) => {
            if let Some(res) = see_other("/login?rd=%2Fstatus") {
                return res;
            }
        }
        Ok(OperatorAccess::Refused) => {
            return message(
                &site,
                StatusCode::FORBIDDEN,
                "Operators only",
                "This page is for operators: sign in with an account that has the operator role, or open it on the appliance itself.",
            );
        }
        Err(e) => {
            return message(&site, e.status, "Status unavailable", &e.message);
        }
    }
    let a = app.clone();
    let report = match tokio::task::spawn_blocking(move || a.status()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            log::error!("status page: {e}");
            return message(
                &site,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Status unavailable",
                "The status could not be read; see the appliance's log.",
            );
        }
        Err(e) => {
            log::error!("status page: {e}");
            return message(
                &site,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Status unavailable",
                "The status could not be read; see the appliance's log.",
            );
        }
    };
    let now = app.clock.now();
    html(StatusCode::OK, &view(&site, &report, now))
}

fn view<'a>(site: &'a Site, r: &'a StatusReport, now: u64) -> StatusPage<'a> {
    let k = &r.keycloak;
    let disabled = k.status == "disabled";
    let (mode, mode_says) = match r.mode.as_str() {
        "offline" => (
            "offline",
            "Central sign-in (Keycloak) is unreachable: staff sign in with the credentials this site holds.",
        ),
        "degraded" => (
            "degraded",
            "Central sign-in (Keycloak) answers unreliably: sign-ins ask it first and fall back to this site's credentials.",
        ),
        _ if disabled => (
            "normal",
            "No central sign-in is configured: local users only.",
        ),
        _ => (
            "normal",
            "Central sign-in (Keycloak) answers: sign-ins are checked there.",
        ),
    };
    let since = match mode {
        "offline" => k
            .offline_since
            .as_deref()
            .or(k.circuit.as_ref().and_then(|c| c.opened_at.as_deref()))
            .map(|t| format!("since {}", when(t, now))),
        "degraded" => k
            .circuit
            .as_ref()
            .and_then(|c| c.opened_at.as_deref())
            .map(|t| format!("circuit opened {}", when(t, now))),
        _ if disabled => Some(format!("up since {}", when(&r.started_at, now))),
        _ => k
            .last_success
            .as_deref()
            .map(|t| format!("Keycloak last answered {}", when(t, now))),
    };
    let opt = |t: &Option<String>| {
        t.as_deref()
            .map_or_else(|| "never".to_owned(), |t| when(t, now))
    };
    let mut rows_keycloak = vec![("Keycloak", k.status.clone())];
    if !disabled {
        rows_keycloak.push(("Last check", opt(&k.last_check)));
        rows_keycloak.push(("Last answer", opt(&k.last_success)));
        if let Some(t) = &k.offline_since {
            rows_keycloak.push(("Unreachable since", when(t, now)));
        }
        if let Some(c) = &k.circuit {
            let mut circuit = format!("{} ({} failed calls)", c.state, c.failure_count);
            if let Some(t) = &c.opened_at {
                circuit.push_str(&format!(", opened {}", when(t, now)));
            }
            rows_keycloak.push(("Circuit", circuit));
        }
    }
    let s = &r.sync;
    let rows_sync = vec![
        ("Waiting", s.pending.to_string()),
        ("Failed, will retry", s.failed.to_string()),
        ("Dead (gave up)", s.dead.to_string()),
        ("Last cycle", opt(&s.last_cycle)),
    ];
    let n = &r.sessions;
    let rows_sessions = vec![
        ("Active", n.active.to_string()),
        ("Checked by Keycloak", n.keycloak.to_string()),
        ("From the token cache", n.cached.to_string()),
        ("Local credentials", n.local.to_string()),
        ("Ending within the hour", n.expiring_soon.to_string()),
    ];
    let rows_appliance = vec![
        ("Version", r.version.clone()),
        ("Started", when(&r.started_at, now)),
        ("Users", r.users.to_string()),
        (
            "Storage",
            match &r.storage.since {
                Some(t) => format!("{} since {}", r.storage.status, when(t, now)),
                None => r.storage.status.clone(),
            },
        ),
        (
            "Last snapshot",
            r.backup
                .last_snapshot
                .as_ref()
                .map_or_else(|| "none".to_owned(), |s| when(&s.at, now)),
        ),
    ];
    let alerts = r
        .alerts
        .iter()
        .map(|a| AlertRow {
            severity: if a.severity == "critical" {
                "critical"
            } else {
                "warning"
            },
            name: &a.name,
            since: when(&a.since, now),
            message: &a.message,
        })
        .collect();
    StatusPage {
        chrome: &site.chrome,
        refresh: REFRESH_SECS,
        mode,
        mode_word: mode.to_uppercase(),
        mode_says,
        since,
        now: crate::clock::rfc3339(now),
        rows_keycloak,
        rows_sync,
        rows_sessions,
        rows_appliance,
        alerts,
    }
}

/// An RFC 3339 time of the report with how long ago it was: `2026-11-29T02:14:00Z (48 min ago)`.
fn when(t: &str, now: u64) -> String {
    let Ok(at) = humantime::parse_rfc3339(t) else {
        return t.to_owned();
    };
    let at = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ago = now.saturating_sub(at);
    let words = match ago {
        0..=59 => format!("{ago} s ago"),
        60..=3599 => format!("{} min ago", ago / 60),
        3600..=172_799 => format!("{} h {} min ago", ago / 3600, ago % 3600 / 60),
        _ => format!("{} days ago", ago / 86_400),
    };
    format!("{t} ({words})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_say_how_long_ago() {
        let now = 1_800_000_000;
        let t = crate::clock::rfc3339(now - 48 * 60);
        assert_eq!(when(&t, now), format!("{t} (48 min ago)"));
        let t = crate::clock::rfc3339(now - 3 * 3600 - 120);
        assert_eq!(when(&t, now), format!("{t} (3 h 2 min ago)"));
        assert_eq!(when("not a time", now), "not a time");
    }
}
