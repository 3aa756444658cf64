//! One status and alerts model, shared by `GET /api/v1/status`, `edgeauth status` and the
//! metrics. Without Keycloak the appliance is in mode `normal` with keycloak_status `disabled`
//! and the Keycloak fields are null, so clients can rely on the shape.

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, rfc3339};
use crate::config::AlertsConfig;
use crate::domain::AuthMode;
use crate::metrics::Metrics;
use crate::store::backup::SnapshotState;
use crate::store::{Store, StoreError};
use crate::upstream::breaker::CircuitState;
use crate::upstream::{KeycloakStatus, Mode, Upstream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub mode: String,
    pub version: String,
    pub started_at: String,
    pub keycloak: KeycloakReport,
    pub sync: SyncStatus,
    pub sessions: SessionStatus,
    pub users: u64,
    pub storage: StorageStatus,
    pub backup: BackupStatus,
    pub alerts: Vec<Alert>,
}

/// The `keycloak` object of the report (its `status` is [`KeycloakStatus`] as a string).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageStatus {
    /// `ok`, `unavailable` (writes refused until the database is reopened) or `corrupt`.
    pub status: String,
    pub since: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupStatus {
    pub dir: String,
    pub kept: usize,
    pub last_snapshot: Option<SnapshotStatus>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub file: String,
    pub at: String,
    pub bytes: u64,
    pub seal_key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeycloakReport {
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

/// What the report is made from: the narrow parts, handed over by the composition root.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub store: &'a Store,
    pub clock: &'a Clock,
    pub upstream: &'a Upstream,
    pub metrics: &'a Metrics,
    pub alerts: &'a AlertsConfig,
    /// `auth.session_idle`, in seconds.
    pub session_idle: u64,
    pub started_at: u64,
    /// The snapshots taken so far (newest good one, how many kept, the last failure).
    pub snapshots: SnapshotState,
    /// Where the snapshots go, and the command that restores one (for the alerts).
    pub snapshot_dir: String,
    pub restore_hint: String,
    /// Since when a proxy on this box is not named in `server.trusted_proxies`.
    pub local_proxy_since: Option<u64>,
}

pub fn report(i: &Inputs) -> Result<StatusReport, StoreError> {
    let now = i.clock.now();
    let idle = i.session_idle;
    let read = i.store.read(|r| {
        Ok((
            r.session_counts(now, idle, EXPIRING_SOON_SECS)?,
            r.user_count()?,
            r.queue_counts()?,
            r.last_sync()?,
        ))
    });
    // A storage fault must not hide the status that reports it.
    let (counts, users, queue, last_sync) = match read {
        Ok(v) => v,
        Err(e) if e.is_storage() => Default::default(),
        Err(e) => return Err(e),
    };
    for (mode, n) in [
        (AuthMode::Keycloak, counts.keycloak),
        (AuthMode::Cached, counts.cached),
        (AuthMode::Local, counts.local),
    ] {
        i.metrics.set_active_sessions(mode, n);
    }
    let alerts_cfg = i.alerts;
    let mut alerts = Vec::new();
    let storage = storage_section(i, &mut alerts);
    let backup = backup_section(i, &mut alerts);
    alerts.extend(clock_alert(i));
    // Stays until a restart: the fix is in the config.
    if let Some(since) = i.local_proxy_since {
        alerts.push(Alert {
            name: "unnamed_local_proxy".into(),
            severity: "warning".into(),
            since: rfc3339(since),
            message: LocalProxyHint::MESSAGE.into(),
        });
    }
    let (mode, keycloak) = keycloak_section(i, now, &counts, &mut alerts);
    let open = queue.pending + queue.failed;
    if open > alerts_cfg.sync_queue_over {
        alerts.push(Alert {
            name: "sync_queue_over".into(),
            severity: "warning".into(),
            since: rfc3339(now),
            message: format!(
                "{open} changes wait for Keycloak (threshold {})",
                alerts_cfg.sync_queue_over
            ),
        });
    }
    if queue.dead > 0 {
        alerts.push(Alert {
            name: "sync_dead_items".into(),
            severity: "critical".into(),
            since: rfc3339(now),
            message: format!(
                "{} queued changes could not be replayed to Keycloak; see `edgeauth sync --list`",
                queue.dead
            ),
        });
    }
    Ok(StatusReport {
        mode: mode.as_str().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339(i.started_at),
        keycloak,
        sync: SyncStatus {
            pending: queue.pending,
            failed: queue.failed,
            dead: queue.dead,
            last_cycle: last_sync.map(|l| rfc3339(l.completed)),
        },
        sessions: SessionStatus {
            active: counts.active,
            keycloak: counts.keycloak,
            cached: counts.cached,
            local: counts.local,
            expiring_soon: counts.expiring_soon,
        },
        users,
        storage,
        backup,
        alerts,
    })
}

/// The storage part of the report, and its alert while the store is faulted.
fn storage_section(i: &Inputs, alerts: &mut Vec<Alert>) -> StorageStatus {
    match &i.store.fault() {
        None => StorageStatus {
            status: "ok".into(),
            since: None,
            detail: None,
        },
        Some(f) => {
            alerts.push(Alert {
                name: if f.corrupt { "database_corrupt" } else { "storage_unavailable" }.into(),
                severity: "critical".into(),
                since: rfc3339(f.since),
                message: if f.corrupt {
                    format!(
                        "database {} is damaged ({}); logins that write answer 503; stop edgeauth and restore: {}",
                        i.store.path().display(),
                        f.detail,
                        i.restore_hint
                    )
                } else {
                    format!(
                        "database {} cannot be written ({}); writes answer 503 storage_unavailable and /readyz 503 until the database reopens by itself; check free space and the device",
                        i.store.path().display(),
                        f.detail
                    )
                },
            });
            StorageStatus {
                status: if f.corrupt { "corrupt" } else { "unavailable" }.into(),
                since: Some(rfc3339(f.since)),
                detail: Some(f.detail.clone()),
            }
        }
    }
}

/// The snapshots part of the report, and its alert when the last snapshot failed.
fn backup_section(i: &Inputs, alerts: &mut Vec<Alert>) -> BackupStatus {
    let snaps = i.snapshots.clone();
    if let Some((at, why)) = &snaps.last_error {
        alerts.push(Alert {
            name: "snapshot_failed".into(),
            severity: "warning".into(),
            since: rfc3339(*at),
            message: format!("the last database snapshot failed: {why}"),
        });
    }
    BackupStatus {
        dir: i.snapshot_dir.clone(),
        kept: snaps.kept,
        last_snapshot: snaps.last_good.map(|s| SnapshotStatus {
            file: s.file.display().to_string(),
            at: rfc3339(s.at),
            bytes: s.bytes,
            seal_key_id: s.seal_key_id,
        }),
        last_error: snaps.last_error.map(|(_, e)| e),
    }
}

/// `clock_behind`, live: ends once NTP sets the system clock right (design rule 7).
fn clock_alert(i: &Inputs) -> Option<Alert> {
    let behind = i.clock.system_behind()?;
    let behind = humantime::format_duration(behind);
    let (since, message) = match (i.clock.jump_back_at_start(), i.clock.keycloak_since()) {
        (_, Some(t)) => (
            t,
            format!(
                "the system clock is {behind} behind the appliance's time, which follows Keycloak's clock since {}; check NTP / RTC",
                rfc3339(t)
            ),
        ),
        (Some(back), None) => (
            i.started_at,
            format!(
                "the system clock started {} behind the latest time the store saw and is {behind} behind the appliance's time; check NTP / RTC",
                humantime::format_duration(back)
            ),
        ),
        (None, None) => (
            i.started_at,
            format!("the system clock went back: it is {behind} behind the appliance's time"),
        ),
    };
    Some(Alert {
        name: "clock_behind".into(),
        severity: "warning".into(),
        since: rfc3339(since),
        message,
    })
}

/// The Keycloak part of the report, the appliance's mode, and the Keycloak alerts.
fn keycloak_section(
    i: &Inputs,
    now: u64,
    counts: &crate::store::sessions::SessionCounts,
    alerts: &mut Vec<Alert>,
) -> (Mode, KeycloakReport) {
    let alerts_cfg = i.alerts;
    match i.upstream.view() {
        None => (
            Mode::Normal,
            KeycloakReport {
                status: "disabled".into(),
                available: false,
                last_check: None,
                last_success: None,
                offline_since: None,
                circuit: None,
            },
        ),
        Some(view) => {
            let (b, h, status) = (view.breaker, view.health, view.status);
            let opened_at = b.open_for.map(|d| now.saturating_sub(d.as_secs()));
            if let Some(since) = h.offline_since
                && now.saturating_sub(since) >= alerts_cfg.keycloak_down_after.as_secs()
            {
                alerts.push(Alert {
                    name: "keycloak_down".into(),
                    severity: "critical".into(),
                    since: rfc3339(since),
                    message: format!(
                        "Keycloak has been unreachable for {}: {}",
                        humantime::format_duration(Duration::from_secs(now.saturating_sub(since))),
                        h.last_error.as_deref().unwrap_or("no answer")
                    ),
                });
            }
            if alerts_cfg.circuit_open && b.state == CircuitState::Open {
                alerts.push(Alert {
                    name: "circuit_open".into(),
                    severity: "warning".into(),
                    since: rfc3339(opened_at.unwrap_or(now)),
                    message: format!("the circuit breaker is open after {} failed calls; logins use the local cache", b.failure_count),
                });
            }
            if let Some(why) = &h.misconfigured {
                alerts.push(Alert {
                    name: "keycloak_misconfigured".into(),
                    severity: "critical".into(),
                    since: rfc3339(h.last_check.unwrap_or(now)),
                    message: format!("Keycloak refuses this appliance's client: {why}; check keycloak.client_id, the secret file and Direct Access Grants"),
                });
            }
            if let Some(p) = view.admin_problem {
                alerts.push(Alert {
                    name: "keycloak_admin_api".into(),
                    severity: "critical".into(),
                    since: rfc3339(p.since),
                    message: format!(
                        "{}; logins are not affected, but queued changes and the pull of central changes wait",
                        p.detail
                    ),
                });
            }
            if status == KeycloakStatus::Offline
                && counts.cached_expiring_soon > alerts_cfg.expiring_cached_sessions_over
            {
                alerts.push(Alert {
                    name: "cached_sessions_expiring".into(),
                    severity: "warning".into(),
                    since: rfc3339(now),
                    message: format!(
                        "{} sessions served from the cache end within the hour while Keycloak is unreachable",
                        counts.cached_expiring_soon
                    ),
                });
            }
            (
                status.mode(),
                KeycloakReport {
                    status: status.as_str().into(),
                    available: status == KeycloakStatus::Online,
                    last_check: h.last_check.map(rfc3339),
                    last_success: h.last_success.map(rfc3339),
                    offline_since: h.offline_since.map(rfc3339),
                    circuit: Some(CircuitStatus {
                        state: b.state.as_str().into(),
                        failure_count: b.failure_count,
                        opened_at: opened_at.map(rfc3339),
                    }),
                },
            )
        }
    }
}

/// Logs each alert once when it starts and once when it ends, and mirrors them as metrics.
#[derive(Debug, Default)]
pub struct AlertLog {
    active: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl AlertLog {
    pub fn observe(&self, metrics: &Metrics, alerts: &[Alert]) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let now: std::collections::BTreeSet<String> =
            alerts.iter().map(|a| a.name.clone()).collect();
        for a in alerts.iter().filter(|a| !active.contains(&a.name)) {
            log::warn!("ALERT {} started ({}): {}", a.name, a.severity, a.message);
            metrics.set_alert(&a.name, true);
        }
        for gone in active.difference(&now) {
            log::info!("ALERT {gone} ended");
            metrics.set_alert(gone, false);
        }
        *active = now;
    }
}

/// Remembers that a proxy on this box is not named in `server.trusted_proxies` (see
/// `http::extract::Origin::unnamed_local_proxy`): one warning in the log, and an alert in status from then on.
#[derive(Debug, Default)]
pub struct LocalProxyHint {
    since: AtomicU64,
}

impl LocalProxyHint {
    /// Notes a request from such a proxy at `now` (seconds); warns the first time.
    pub fn seen(&self, now: u64) {
        if self
            .since
            .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            log::warn!("{}", Self::MESSAGE);
        }
    }

    /// When the first such request came, if one did.
    pub fn since(&self) -> Option<u64> {
        Some(self.since.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }

    pub const MESSAGE: &str = "requests from loopback carry proxy headers (X-Forwarded-For, Forwarded, X-Real-IP) \
        but loopback is not in server.trusted_proxies: a proxy on this box makes every client look local \
        and share one regulation counter; add its address (such as \"127.0.0.1/32\") to \
        server.trusted_proxies. Until then such requests get no operator rights";
}
