//! The sync queue and its worker (design §9), and the pull of central changes.
//!
//! * [`enqueue`] stores a change the site accepted while Keycloak was unreachable, its payload
//!   sealed, in the same transaction as the local change it mirrors.
//! * [`cycle`] replays open items in the order they were accepted, one user's items strictly
//!   in order (a failed item holds back that user's later ones); Keycloak unreachable stops the
//!   cycle without spending attempts; a refusal backs off exponentially and, after
//!   `max_attempts` (or at once when it cannot change, such as a password policy), the item is
//!   `dead` and raises an alert; a password Keycloak already holds a newer version of is
//!   `superseded`. Replays are idempotent (a user create that meets 409 reconciles).
//! * The pull sync disables users deleted or disabled centrally and refreshes roles and groups.
//! * Every cycle writes a sync-log record.

mod pull;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::auth::AuthError;
use crate::crypto::Secret;
use crate::domain::UserKey;
use crate::keycloak::admin::Admin;
use crate::keycloak::outcome::{Outcome, Rejection};
use crate::resilience::monitor::KeycloakStatus;
use crate::store::WriteTx;
use crate::store::queue::{ItemKind, ItemStatus, QueueItem, SyncLogRecord};

/// What an item asks Keycloak to do. Sealed at rest; never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    PasswordChange {
        password: Secret,
    },
    UserProvision {
        password: Secret,
        enabled: bool,
        groups: Vec<String>,
        #[serde(default)]
        profile: crate::keycloak::admin::Profile,
    },
    GroupChange {
        group: String,
        join: bool,
    },
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::PasswordChange { .. } => f.write_str("PasswordChange"),
            Payload::UserProvision { .. } => f.write_str("UserProvision"),
            Payload::GroupChange { group, join } => write!(f, "GroupChange({group}, join={join})"),
        }
    }
}

impl Payload {
    fn kind(&self) -> ItemKind {
        match self {
            Payload::PasswordChange { .. } => ItemKind::PasswordChange,
            Payload::UserProvision { .. } => ItemKind::UserProvision,
            Payload::GroupChange { .. } => ItemKind::GroupChange,
        }
    }
}

fn aad(tenant: &str, username: &str) -> Vec<u8> {
    format!("sync_queue/{tenant}/{username}").into_bytes()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Queues `payload` for `user` inside the caller's transaction (so the local change and its
/// queue item commit together). Returns the item id.
pub fn enqueue(
    app: &App,
    w: &mut WriteTx,
    user: &UserKey,
    payload: &Payload,
    now: u64,
) -> crate::store::Result<u64> {
    let (tenant, username) = (user.tenant.to_string(), user.username.to_string());
    let plain = serde_json::to_vec(payload).unwrap_or_default();
    let sealed = app.sealer.seal(&plain, &aad(&tenant, &username));
    w.enqueue(QueueItem {
        id: 0,
        tenant,
        username,
        kind: payload.kind(),
        payload_hex: hex(&sealed),
        queued_at: now,
        queued_at_ms: now_ms(now),
        attempts: 0,
        next_attempt_at: now,
        status: ItemStatus::Pending,
        last_error: None,
        updated_at: now,
    })
}

/// Milliseconds for `now` (Unix seconds from the monotonic clock), with the system clock's
/// sub-second part when it agrees with `now`.
fn now_ms(now: u64) -> u64 {
    let sys = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if sys / 1000 == now {
        sys
    } else {
        now.saturating_mul(1000)
    }
}

fn open_payload(app: &App, item: &QueueItem) -> Option<Payload> {
    let sealed = unhex(&item.payload_hex)?;
    let plain = app
        .sealer
        .open(&sealed, &aad(&item.tenant, &item.username))
        .ok()?;
    serde_json::from_slice(&plain).ok()
}

/// The result of replaying one item when Keycloak answered yes.
enum Replayed {
    Done,
    Superseded,
}

/// Refusals that no retry can change (a password policy, a user deleted centrally).
fn permanent(r: &Rejection) -> bool {
    match r {
        Rejection::Other { status, error, .. } => {
            (*status == 400 && error.starts_with("invalidPassword")) || *status == 404
        }
        _ => false,
    }
}

fn replay(kc: &crate::keycloak::Keycloak, item: &QueueItem, payload: Payload) -> Outcome<Replayed> {
    let Ok(tenant) = crate::domain::Tenant::parse(&item.tenant) else {
        return Outcome::Rejected(Rejection::Other {
            status: 400,
            error: "bad_tenant".into(),
            description: item.tenant.clone(),
        });
    };
    let tier = kc.tier(&tenant);
    let admin = Admin::new(&tier, &kc.admin_tokens);
    macro_rules! ok {
        ($e:expr) => {
            match $e {
                Outcome::Ok(v) => v,
                Outcome::Rejected(r) => return Outcome::Rejected(r),
                Outcome::Unavailable(u) => return Outcome::Unavailable(u),
            }
        };
    }
    match payload {
        Payload::PasswordChange { password } => admin.for_user(&item.username, |admin, id| {
            // Keycloak's password is newer than our queued change: the central one wins.
            let queued_ms = if item.queued_at_ms > 0 {
                item.queued_at_ms
            } else {
                item.queued_at.saturating_mul(1000) + 999
            };
            if let Some(created) = ok!(admin.password_created_ms(id))
                && created > queued_ms
            {
                return Outcome::Ok(Replayed::Superseded);
            }
            ok!(admin.reset_password(id, &password));
            Outcome::Ok(Replayed::Done)
        }),
        Payload::UserProvision {
            password,
            enabled,
            groups,
            profile,
        } => {
            let id = ok!(admin.create_user(&item.username, Some(&password), enabled, &profile));
            for g in groups {
                ok!(admin.set_group(&id, &g, true));
            }
            Outcome::Ok(Replayed::Done)
        }
        Payload::GroupChange { group, join } => admin.for_user(&item.username, |admin, id| {
            ok!(admin.set_group(id, &group, join));
            Outcome::Ok(Replayed::Done)
        }),
    }
}

/// Backoff after `attempts` failures: `base` seconds doubling, at most an hour.
pub fn backoff(base: u64, attempts: u32) -> u64 {
    base.max(1)
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(16))
        .min(3600)
}

/// What one cycle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    pub replayed: u64,
    pub superseded: u64,
    pub failed: u64,
    pub dead: u64,
    pub pulled: u64,
    pub disabled: u64,
    pub error: Option<String>,
}

/// One sync cycle: replay the queue, then pull central changes. Needs Keycloak.
pub async fn cycle(app: &Arc<App>) -> Result<CycleReport, AuthError> {
    let Some(kc) = app.keycloak.clone() else {
        return Err(AuthError::BadRequest("no Keycloak is configured".into()));
    };
    let started = app.clock.now();
    let mut report = CycleReport::default();
    let items = app.store.read(|r| r.queue_items())?;
    let mut held_back: HashSet<(String, String)> = HashSet::new();
    let max_attempts = app.config.keycloak.sync.max_attempts;
    let batch = app.config.keycloak.sync.batch as usize;
    let mut tried = 0usize;
    for item in items.into_iter().filter(|i| i.status.is_open()) {
        let who = (item.tenant.clone(), item.username.clone());
        if held_back.contains(&who) {
            continue;
        }
        let now = app.clock.now();
        if item.next_attempt_at > now || tried >= batch {
            held_back.insert(who);
            continue;
        }
        tried += 1;
        let Some(payload) = open_payload(app, &item) else {
            // Sealed with another key or damaged: nothing can replay it.
            finish(
                app,
                item,
                ItemStatus::Dead,
                Some("the payload cannot be unsealed".into()),
            )
            .await?;
            report.dead += 1;
            continue;
        };
        let (k, i) = (kc.clone(), item.clone());
        let outcome = kc
            .call(&app.metrics, "sync_replay", move || replay(&k, &i, payload))
            .await;
        match outcome {
            Outcome::Ok(Replayed::Done) => {
                log::info!(
                    "sync: replayed {:?} #{} for {}@{}",
                    item.kind,
                    item.id,
                    item.username,
                    item.tenant
                );
                finish(app, item, ItemStatus::Done, None).await?;
                report.replayed += 1;
            }
            Outcome::Ok(Replayed::Superseded) => {
                log::info!(
                    "sync: #{} for {}@{} superseded by a newer central password",
                    item.id,
                    item.username,
                    item.tenant
                );
                finish(app, item, ItemStatus::Superseded, None).await?;
                report.superseded += 1;
            }
            Outcome::Rejected(r) => {
                held_back.insert(who);
                let mut item = item;
                item.attempts = item.attempts.saturating_add(1);
                let dead = permanent(&r) || item.attempts >= max_attempts;
                item.next_attempt_at = app.clock.now().saturating_add(backoff(
                    app.config.keycloak.sync.retry_delay.as_secs(),
                    item.attempts,
                ));
                let status = if dead {
                    ItemStatus::Dead
                } else {
                    ItemStatus::Failed
                };
                log::warn!(
                    "sync: #{} for {}@{} refused by Keycloak ({r}); now {:?}",
                    item.id,
                    item.username,
                    item.tenant,
                    status
                );
                finish(app, item, status, Some(r.to_string())).await?;
                if dead {
                    report.dead += 1
                } else {
                    report.failed += 1
                }
            }
            Outcome::Unavailable(u) => {
                // Not the item's fault: stop, spend no attempt, try again when Keycloak is back.
                report.error = Some(u.to_string());
                break;
            }
        }
    }
    if report.error.is_none() && app.config.keycloak.sync.enabled {
        match pull::pull(app, &kc).await {
            Ok((pulled, disabled)) => {
                report.pulled = pulled;
                report.disabled = disabled;
            }
            Err(e) => report.error = Some(e.to_string()),
        }
    }
    let record = SyncLogRecord {
        started,
        completed: app.clock.now(),
        processed: report.replayed + report.superseded,
        failed: report.failed + report.dead,
        pulled: report.pulled,
        error: report.error.clone(),
    };
    crate::auth::write(&app.store, move |w| w.append_sync_log(&record).map(|_| ())).await?;
    Ok(report)
}

async fn finish(
    app: &App,
    mut item: QueueItem,
    status: ItemStatus,
    error: Option<String>,
) -> Result<(), AuthError> {
    item.status = status;
    item.last_error = error;
    item.updated_at = app.clock.now();
    crate::auth::write(&app.store, move |w| w.put_queue_item(&item)).await
}

/// The worker: a cycle every `keycloak.sync.interval`, and at once when the monitor sees
/// Keycloak come back (or an operator asks).
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(kc) = app.keycloak.clone() else {
        return;
    };
    let interval = app
        .config
        .keycloak
        .sync
        .interval
        .0
        .max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = app.sync_wakeup.notified() => {}
            _ = stop.changed() => return,
        }
        if kc.status() == KeycloakStatus::Offline {
            continue;
        }
        match cycle(&app).await {
            Ok(r) if r.replayed + r.superseded + r.failed + r.dead + r.disabled > 0 => log::info!(
                "sync cycle: {} replayed, {} superseded, {} failed, {} dead, {} users pulled, {} disabled",
                r.replayed,
                r.superseded,
                r.failed,
                r.dead,
                r.pulled,
                r.disabled
            ),
            Ok(_) => {}
            Err(e) => log::error!("sync cycle failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(30, 1), 30);
        assert_eq!(backoff(30, 2), 60);
        assert_eq!(backoff(30, 4), 240);
        assert_eq!(backoff(30, 20), 3600);
        assert_eq!(backoff(1, 3), 4);
    }

    #[test]
    fn policy_refusals_are_permanent() {
        let policy = Rejection::Other {
            status: 400,
            error: "invalidPasswordMinLengthMessage".into(),
            description: String::new(),
        };
        assert!(permanent(&policy));
        assert!(!permanent(&Rejection::Other {
            status: 409,
            error: String::new(),
            description: String::new()
        }));
        assert_eq!(
            format!(
                "{:?}",
                Payload::PasswordChange {
                    password: Secret::new("x")
                }
            ),
            "PasswordChange"
        );
    }
}
