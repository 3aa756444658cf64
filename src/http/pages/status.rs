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
    rows_keycloak: Rows,
    rows_sync: Rows,
    rows_sessions: Rows,
    rows_appliance: Rows,
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
    match operator_access(&app, from, credential.as_ref()).await {
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

type Rows = Vec<(&'static str, String)>;

fn view<'a>(site: &'a Site, r: &'a StatusReport, now: u64) -> StatusPage<'a> {
    let (mode, mode_says, since) = mode_line(r, now);
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
        rows_keycloak: keycloak_rows(r, now),
        rows_sync: sync_rows(r, now),
        rows_sessions: session_rows(r),
        rows_appliance: appliance_rows(r, now),
        alerts,
    }
}

/// The mode (its CSS class and word), what it means for sign-ins, and since when.
fn mode_line(r: &StatusReport, now: u64) -> (&'static str, &'static str, Option<String>) {
    let k = &r.keycloak;
    let opened = k.circuit.as_ref().and_then(|c| c.opened_at.as_deref());
    match r.mode.as_str() {
        "offline" => (
            "offline",
            "Central sign-in (Keycloak) is unreachable: staff sign in with the credentials this site holds.",
            k.offline_since
                .as_deref()
                .or(opened)
                .map(|t| format!("Since {}", when(t, now))),
        ),
        "degraded" => (
            "degraded",
            "Central sign-in (Keycloak) answers unreliably: sign-ins ask it first and fall back to this site's credentials.",
            opened.map(|t| format!("Circuit opened {}", when(t, now))),
        ),
        _ if k.status == "disabled" => (
            "normal",
            "No central sign-in is configured: local users only.",
            Some(format!("Up since {}", when(&r.started_at, now))),
        ),
        _ => (
            "normal",
            "Central sign-in (Keycloak) answers: sign-ins are checked there.",
            k.last_success
                .as_deref()
                .map(|t| format!("Keycloak last answered {}", when(t, now))),
        ),
    }
}

fn when_or_never(t: Option<&str>, now: u64) -> String {
    t.map_or_else(|| "never".to_owned(), |t| when(t, now))
}

fn keycloak_rows(r: &StatusReport, now: u64) -> Rows {
    let k = &r.keycloak;
    let mut rows = vec![("Keycloak", k.status.clone())];
    if k.status == "disabled" {
        return rows;
    }
    rows.push(("Last check", when_or_never(k.last_check.as_deref(), now)));
    rows.push(("Last answer", when_or_never(k.last_success.as_deref(), now)));
    if let Some(t) = &k.offline_since {
        rows.push(("Unreachable since", when(t, now)));
    }
    if let Some(c) = &k.circuit {
        let mut circuit = format!("{} ({} failed calls)", c.state, c.failure_count);
        if let Some(t) = &c.opened_at {
            circuit.push_str(&format!(", opened {}", when(t, now)));
        }
        rows.push(("Circuit", circuit));
    }
    rows
}

fn sync_rows(r: &StatusReport, now: u64) -> Rows {
    let s = &r.sync;
    vec![
        ("Waiting", s.pending.to_string()),
        ("Failed, will retry", s.failed.to_string()),
        ("Dead (gave up)", s.dead.to_string()),
        ("Last cycle", when_or_never(s.last_cycle.as_deref(), now)),
    ]
}

fn session_rows(r: &StatusReport) -> Rows {
    let n = &r.sessions;
    vec![
        ("Active", n.active.to_string()),
        ("Checked by Keycloak", n.keycloak.to_string()),
        ("From the token cache", n.cached.to_string()),
        ("Local credentials", n.local.to_string()),
        ("Ending within the hour", n.expiring_soon.to_string()),
    ]
}

fn appliance_rows(r: &StatusReport, now: u64) -> Rows {
    vec![
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
    ]
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
