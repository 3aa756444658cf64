//! The sync queue and its worker (design §9), and the pull of central changes.
//!
//! * [`enqueue`] stores a change the site accepted while Keycloak was unreachable, its payload
//!   sealed, in the same transaction as the local change it mirrors.
//! * [`cycle`] replays open items in the order they were accepted, one user's items strictly
//!   in order (a failed item holds back that user's later ones); Keycloak unreachable stops the
//!   cycle without spending attempts; a refusal backs off exponentially and, after
//!   `max_attempts` (or at once when it cannot change, such as a password policy), the item is
//!   `dead` and raises an alert; a password Keycloak already holds a newer version of is
//!   `superseded`. Replays are idempotent (a user create that meets 409 reconciles). A queued
//!   password that never reaches Keycloak (superseded or dead) also ends the local hash built on
//!   it, so it cannot sign in during the next outage.
//! * The pull sync disables users deleted or disabled centrally ([`pull`]).
//! * Every cycle writes a sync-log record.
//! * [`run`], the worker: a cycle cut short by an outage (or by a cold Keycloak too slow for
//!   `request_timeout`) while items are open is retried within seconds, backing off with jitter
//!   up to `interval`, and says so at warn; the pull runs on the worker's own jittered schedule,
//!   never on the wake-up after a recovery, so sites do not pull in step.
//!
//! Every admin call goes through [`Upstream::admin`] (design rule 9): nothing the admin API
//! answers changes the login side's circuit, status or mode.
//!
//! [`Queue`] seals and opens items (the auth services enqueue through it); [`Syncer`] is the
//! worker, built by the composition root from the store, clock, hasher, queue, upstream and
//! metrics. (Not `Sync`: that name is std's marker trait.)

mod pull;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::SyncConfig;
use crate::crypto::{Hasher, Sealer, Secret};
use crate::domain::{Tenant, UserKey};
use crate::keycloak::admin::Admin;
use crate::metrics::Metrics;
use crate::store::queue::{ItemKind, ItemStatus, QueueItem, SyncLogRecord};
use crate::store::{Store, StoreError, WriteTx};
use crate::upstream::monitor::next_delay;
use crate::upstream::{KeycloakStatus, Rejection, Upstream, UpstreamError};

/// Why a sync cycle could not run or finish (Keycloak not answering is not one: that ends the
/// cycle early and is reported in [`CycleReport::error`]).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no Keycloak is configured")]
    NotConfigured,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

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

/// The durable queue's sealing: what the auth services use to queue a change.
#[derive(Clone)]
pub struct Queue {
    sealer: Sealer,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queue")
    }
}

impl Queue {
    pub fn new(sealer: Sealer) -> Self {
        Queue { sealer }
    }

    /// Queues `payload` for `user` inside the caller's transaction (so the local change and
    /// its queue item commit together). Returns the item id.
    pub fn enqueue(
        &self,
        w: &mut WriteTx,
        user: &UserKey,
        payload: &Payload,
        now: u64,
    ) -> crate::store::Result<u64> {
        let (tenant, username) = (user.tenant.to_string(), user.username.to_string());
        let plain = serde_json::to_vec(payload).unwrap_or_default();
        let sealed = self.sealer.seal(&plain, &aad(&tenant, &username));
        w.enqueue(QueueItem {
            id: 0,
            tenant,
            username,
            kind: payload.kind(),
            payload_hex: crate::crypto::hex(&sealed),
            queued_at: now,
            queued_at_ms: now_ms(now),
            attempts: 0,
            next_attempt_at: now,
            status: ItemStatus::Pending,
            last_error: None,
            updated_at: now,
        })
    }

    fn open(&self, item: &QueueItem) -> Option<Payload> {
        let sealed = crate::crypto::unhex(&item.payload_hex)?;
        let plain = self
            .sealer
            .open(&sealed, &aad(&item.tenant, &item.username))
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
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

/// Replays one item through the admin API. Blocking.
fn replay(admin: &Admin, item: &QueueItem, payload: Payload) -> Result<Replayed, UpstreamError> {
    match payload {
        Payload::PasswordChange { password } => admin.for_user(&item.username, |admin, id| {
            // Keycloak's password is newer than our queued change: the central one wins.
            let queued_ms = if item.queued_at_ms > 0 {
                item.queued_at_ms
            } else {
                item.queued_at.saturating_mul(1000) + 999
            };
            if let Some(created) = admin.password_created_ms(id)?
                && created > queued_ms
            {
                return Ok(Replayed::Superseded);
            }
            admin.reset_password(id, &password)?;
            Ok(Replayed::Done)
        }),
        Payload::UserProvision {
            password,
            enabled,
            groups,
            profile,
        } => {
            let id = admin.create_user(&item.username, Some(&password), enabled, &profile)?;
            for g in groups {
                admin.set_group(&id, &g, true)?;
            }
            Ok(Replayed::Done)
        }
        Payload::GroupChange { group, join } => admin.for_user(&item.username, |admin, id| {
            admin.set_group(id, &group, join)?;
            Ok(Replayed::Done)
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
    /// Why the cycle stopped early: Keycloak (or its admin API) did not answer.
    pub error: Option<String>,
    /// Items still pending or failed when the cycle ended.
    pub open: u64,
}

/// Whether a cycle pulls central changes after the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Replay the queue only (the wake-up after a recovery, a quick retry).
    Replay,
    /// Replay, then pull (the worker's schedule, an operator's `edgeauth sync`).
    ReplayAndPull,
}

/// The sync worker and its one-off cycles, built from the narrow parts it uses.
#[derive(Debug)]
pub struct Syncer {
    store: Arc<Store>,
    clock: Arc<Clock>,
    hasher: Hasher,
    queue: Queue,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    config: SyncConfig,
    wakeup: Arc<tokio::sync::Notify>,
}

/// The parts a [`Syncer`] is built from.
#[derive(Debug)]
pub struct SyncerParts {
    pub store: Arc<Store>,
    pub clock: Arc<Clock>,
    pub hasher: Hasher,
    pub queue: Queue,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    pub config: SyncConfig,
    /// Notified by the upstream's monitor when Keycloak comes back, and by [`Syncer::wake`].
    pub wakeup: Arc<tokio::sync::Notify>,
}

impl Syncer {
    pub fn new(p: SyncerParts) -> Self {
        Syncer {
            store: p.store,
            clock: p.clock,
            hasher: p.hasher,
            queue: p.queue,
            upstream: p.upstream,
            metrics: p.metrics,
            config: p.config,
            wakeup: p.wakeup,
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Wakes the worker for a replay now (an operator retried an item).
    pub fn wake(&self) {
        self.wakeup.notify_one();
    }

    /// One sync cycle: replay the queue, then (with [`Scope::ReplayAndPull`]) pull central
    /// changes. Needs Keycloak.
    pub async fn cycle(&self, scope: Scope) -> Result<CycleReport, SyncError> {
        if !self.upstream.enabled() {
            return Err(SyncError::NotConfigured);
        }
        let started = self.clock.now();
        let mut report = CycleReport::default();
        let items = self.store.read(|r| r.queue_items())?;
        let mut held_back: HashSet<(String, String)> = HashSet::new();
        let mut tried = 0usize;
        for item in items.into_iter().filter(|i| i.status.is_open()) {
            let who = (item.tenant.clone(), item.username.clone());
            if held_back.contains(&who) {
                continue;
            }
            if item.next_attempt_at > self.clock.now() || tried >= self.config.batch as usize {
                held_back.insert(who);
                continue;
            }
            tried += 1;
            let Some(payload) = self.queue.open(&item) else {
                // Sealed with another key or damaged: nothing can replay it.
                let why = "the payload cannot be unsealed".to_owned();
                self.finish(item, ItemStatus::Dead, Some(why)).await?;
                report.dead += 1;
                continue;
            };
            let forget = matches!(payload, Payload::PasswordChange { .. }).then(|| payload.clone());
            match self.replay(&item, payload).await {
                Ok(Replayed::Done) => {
                    log::info!(
                        "sync: replayed {:?} #{} for {}@{}",
                        item.kind,
                        item.id,
                        item.username,
                        item.tenant
                    );
                    self.finish(item, ItemStatus::Done, None).await?;
                    report.replayed += 1;
                }
                Ok(Replayed::Superseded) => {
                    log::info!(
                        "sync: #{} for {}@{} superseded by a newer central password",
                        item.id,
                        item.username,
                        item.tenant
                    );
                    let key = item.clone();
                    self.finish(item, ItemStatus::Superseded, None).await?;
                    self.forget_local_hash(&key, forget.as_ref()).await?;
                    report.superseded += 1;
                }
                Err(UpstreamError::Rejected(r)) => {
                    held_back.insert(who);
                    if self.refused(item, &r, forget.as_ref()).await? {
                        report.dead += 1
                    } else {
                        report.failed += 1
                    }
                }
                Err(UpstreamError::Unavailable(u)) => {
                    // Not the item's fault: stop, spend no attempt, try again when Keycloak is back.
                    report.error = Some(u.to_string());
                    break;
                }
            }
        }
        if report.error.is_none() && scope == Scope::ReplayAndPull && self.config.enabled {
            match self.pull().await {
                Ok(p) => {
                    report.pulled = p.looked_up;
                    report.disabled = p.disabled;
                }
                Err(pull::Stop::Unavailable(u)) => report.error = Some(u.to_string()),
                Err(pull::Stop::Failed(e)) => return Err(e),
            }
        }
        let counts = self.store.read(|r| r.queue_counts())?;
        report.open = counts.pending + counts.failed;
        self.metrics.sync_cycle(
            report.error.is_some(),
            &[
                ("replayed", report.replayed),
                ("superseded", report.superseded),
                ("failed", report.failed),
                ("dead", report.dead),
                ("disabled", report.disabled),
            ],
            report.open,
        );
        let record = SyncLogRecord {
            started,
            completed: self.clock.now(),
            processed: report.replayed + report.superseded,
            failed: report.failed + report.dead,
            pulled: report.pulled,
            error: report.error.clone(),
        };
        self.store
            .write_blocking(move |w| w.append_sync_log(&record).map(|_| ()))
            .await?;
        Ok(report)
    }

    async fn replay(&self, item: &QueueItem, payload: Payload) -> Result<Replayed, UpstreamError> {
        let Ok(tenant) = Tenant::parse(&item.tenant) else {
            return Err(UpstreamError::Rejected(Rejection::Other {
                status: 400,
                error: "bad_tenant".into(),
                description: item.tenant.clone(),
            }));
        };
        let i = item.clone();
        self.upstream
            .admin("sync_replay", &tenant, move |admin| {
                replay(admin, &i, payload)
            })
            .await
    }

    /// Keycloak refused an item: it backs off, or is `dead` when no retry can change the
    /// answer or it has used its attempts. Returns whether it is dead.
    async fn refused(
        &self,
        mut item: QueueItem,
        r: &Rejection,
        forget: Option<&Payload>,
    ) -> Result<bool, SyncError> {
        item.attempts = item.attempts.saturating_add(1);
        let dead = permanent(r) || item.attempts >= self.config.max_attempts;
        item.next_attempt_at = self
            .clock
            .now()
            .saturating_add(backoff(self.config.retry_delay.as_secs(), item.attempts));
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
        let key = item.clone();
        self.finish(item, status, Some(r.to_string())).await?;
        if dead {
            self.forget_local_hash(&key, forget).await?;
        }
        Ok(dead)
    }

    async fn finish(
        &self,
        mut item: QueueItem,
        status: ItemStatus,
        error: Option<String>,
    ) -> Result<(), SyncError> {
        item.status = status;
        item.last_error = error;
        item.updated_at = self.clock.now();
        Ok(self
            .store
            .write_blocking(move |w| w.put_queue_item(&item))
            .await?)
    }

    /// A queued password that will never reach Keycloak (superseded by a central change, or
    /// dead) must not keep signing in offline: the local hash is cleared when it is the one
    /// built on that password (an online login since then has replaced it with the central one's).
    async fn forget_local_hash(
        &self,
        item: &QueueItem,
        payload: Option<&Payload>,
    ) -> Result<(), SyncError> {
        let Some(Payload::PasswordChange { password }) = payload else {
            return Ok(());
        };
        let (Ok(tenant), Ok(username)) = (
            Tenant::parse(&item.tenant),
            crate::domain::Username::parse(&item.username),
        ) else {
            return Ok(());
        };
        let key = UserKey::new(tenant, username);
        let Some(user) = self.store.read(|r| r.user(&key))? else {
            return Ok(());
        };
        let Some(phc) = user.password_hash.as_deref() else {
            return Ok(());
        };
        let verified = self
            .hasher
            .verify(password, Some(phc))
            .await
            .map_err(|e| SyncError::Internal(e.to_string()))?;
        if verified != crate::crypto::password::Verified::Match {
            return Ok(());
        }
        let (k, stale, now) = (key.clone(), phc.to_owned(), self.clock.now());
        self.store
            .write_blocking(move |w| {
                if let Some(mut u) = w.user(&k)?
                    && u.password_hash.as_deref() == Some(stale.as_str())
                {
                    u.password_hash = None;
                    u.updated_at = now;
                    w.put_user(&u)?;
                }
                Ok(())
            })
            .await?;
        log::warn!(
            "sync: the site password of {key} never reached Keycloak (item #{} {:?}); it no longer signs in offline until the next online login",
            item.id,
            item.status
        );
        Ok(())
    }

    /// The worker. A replay-and-pull cycle on its own schedule (every `keycloak.sync.interval`,
    /// ±25 % jitter, not moved by wake-ups), and a replay at once when the monitor sees
    /// Keycloak come back. A cycle cut short while items are open is retried after 1 s, 2 s,
    /// 4 s ... (±25 % jitter) up to the interval: a Keycloak that is still warming up, too slow
    /// for `request_timeout`, costs seconds, not a whole interval.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if !self.upstream.enabled() {
            return;
        }
        let interval = self.config.interval.0.max(Duration::from_secs(1));
        let jittered = |d: Duration| d.mul_f64(0.75 + 0.5 * crate::crypto::random_unit());
        let mut scheduled = tokio::time::Instant::now() + jittered(interval);
        let mut retries: u32 = 0;
        loop {
            let retry_at = (retries > 0).then(|| {
                tokio::time::Instant::now()
                    + next_delay(interval, retries, crate::crypto::random_unit())
            });
            let wake = retry_at.map_or(scheduled, |r| r.min(scheduled));
            let scope = tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= scheduled {
                        scheduled = tokio::time::Instant::now() + jittered(interval);
                        Scope::ReplayAndPull
                    } else {
                        Scope::Replay
                    }
                }
                _ = self.wakeup.notified() => Scope::Replay,
                _ = stop.changed() => return,
            };
            if self.upstream.status() == KeycloakStatus::Offline {
                // The monitor wakes this worker when Keycloak is back; keep any quick retry going.
                continue;
            }
            match self.cycle(scope).await {
                Ok(r) => retries = after_cycle(&r, retries, interval),
                Err(e) => log::error!("sync cycle failed: {e}"),
            }
        }
    }
}

/// Logs what a cycle did; returns the quick-retry count for the next one.
fn after_cycle(r: &CycleReport, retries: u32, interval: Duration) -> u32 {
    if r.replayed + r.superseded + r.failed + r.dead + r.disabled > 0 {
        log::info!(
            "sync cycle: {} replayed, {} superseded, {} failed, {} dead, {} users pulled, {} disabled",
            r.replayed,
            r.superseded,
            r.failed,
            r.dead,
            r.pulled,
            r.disabled
        );
    }
    match (&r.error, r.open) {
        (Some(cause), open) if open > 0 => {
            let retries = retries.saturating_add(1);
            log::warn!(
                "sync: cycle cut short ({cause}); {open} queued changes wait; retry {retries} within {}",
                humantime::format_duration(next_delay(interval, retries, 1.0))
            );
            retries
        }
        (Some(cause), _) => {
            log::warn!("sync: cycle cut short ({cause}); nothing is queued");
            0
        }
        (None, _) => 0,
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
