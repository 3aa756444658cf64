//! One status and alerts model, shared by `GET /api/v1/status`, `edgeauth status` and the
//! metrics. Without a Keycloak tier the appliance is in mode `normal` with keycloak_status
//! `disabled`; the Keycloak fields are present (null) so clients can rely on the shape.

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::clock::rfc3339;
use crate::domain::AuthMode;
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub mode: String,
    pub version: String,
    pub started_at: String,
    pub keycloak: KeycloakStatus,
    pub sync: SyncStatus,
    pub sessions: SessionStatus,
    pub users: u64,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeycloakStatus {
    pub status: String,
    pub available: bool,
    pub last_check: Option<String>,
    pub last_success: Option<String>,
    pub offline_since: Option<String>,
    pub circuit: Option<CircuitStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CircuitStatus {
    pub state: String,
    pub failure_count: u32,
    pub opened_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncStatus {
    pub pending: u64,
    pub failed: u64,
    pub dead: u64,
    pub last_cycle: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionStatus {
    pub active: u64,
    pub keycloak: u64,
    pub cached: u64,
    pub local: u64,
    pub expiring_soon: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    pub name: String,
    pub severity: String,
    pub since: String,
    pub message: String,
}

/// "Expiring soon": sessions that end within this window.
pub const EXPIRING_SOON_SECS: u64 = 3600;

pub fn report(app: &App) -> Result<StatusReport, StoreError> {
    let now = app.clock.now();
    let idle = app.config.auth.session_idle.as_secs();
    let (counts, users) = app.store.read(|r| {
        Ok((
            r.session_counts(now, idle, EXPIRING_SOON_SECS)?,
            r.user_count()?,
        ))
    })?;
    for (mode, n) in [
        (AuthMode::Keycloak, counts.keycloak),
        (AuthMode::Cached, counts.cached),
        (AuthMode::Local, counts.local),
    ] {
        app.metrics.set_active_sessions(mode, n);
    }
    let mut alerts = Vec::new();
    if let Some(back) = app.clock.jump_back_at_start() {
        alerts.push(Alert {
            name: "clock_behind".into(),
            severity: "warning".into(),
            since: rfc3339(app.started_at),
            message: format!(
                "the system clock started {} behind the latest time the store saw",
                humantime::format_duration(back)
            ),
        });
    }
    Ok(StatusReport {
        mode: "normal".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339(app.started_at),
        keycloak: KeycloakStatus {
            status: "disabled".into(),
            available: false,
            last_check: None,
            last_success: None,
            offline_since: None,
            circuit: None,
        },
        sync: SyncStatus::default(),
        sessions: SessionStatus {
            active: counts.active,
            keycloak: counts.keycloak,
            cached: counts.cached,
            local: counts.local,
            expiring_soon: counts.expiring_soon,
        },
        users,
        alerts,
    })
}
