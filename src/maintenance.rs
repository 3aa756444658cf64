//! The periodic bookkeeping task: flushes session activity (rule 8), persists the clock floor
//! (rule 7), deletes ended sessions, stale regulation counters and old audit rows, refreshes
//! the session gauges and takes the rotating database snapshots. Runs every [`TICK`] and once
//! more at shutdown. Beside it, [`recover`] reopens the database after a storage fault.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::store::StoreError;
use crate::store::backup::{SnapshotInfo, list_snapshots};

pub const TICK: Duration = Duration::from_secs(10);

/// Pooled argon2 memory is freed after this long without a login.
pub const HASH_MEMORY_IDLE: Duration = Duration::from_secs(60);

/// Ended sessions are kept this long so that validation can say why they ended.
pub const KEEP_ENDED_SESSIONS: u64 = 24 * 3600;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub touched: usize,
    pub sessions: u64,
    pub strikes: u64,
    pub audit: u64,
}

/// One pass. Flushing activity and the clock floor share one transaction; the purges another.
pub fn run_once(app: &App) -> Result<Swept, StoreError> {
    let swept = sweep(app);
    // Refreshes the gauges, and logs alerts that started or ended (also when the sweep failed:
    // a storage fault is one of them).
    let report = app.status()?;
    app.alert_log.observe(&app.metrics, &report.alerts);
    swept
}

fn sweep(app: &App) -> Result<Swept, StoreError> {
    let touched = app.auth.flush_activity()?;
    let now = app.clock.now();
    let cfg = &app.config;
    let idle = cfg.auth.session_idle.as_secs();
    let find_time = cfg.regulation.find_time.as_secs();
    let audit_before = now.saturating_sub(cfg.audit.retention.as_secs());
    let (sessions, strikes, audit) = app.store.write(|w| {
        w.raise_clock_floor(now)?;
        Ok((
            w.purge_sessions(now, idle, KEEP_ENDED_SESSIONS)?,
            w.purge_strikes(now, find_time)?,
            w.purge_audit(audit_before)?,
        ))
    })?;
    app.hasher.trim_idle(HASH_MEMORY_IDLE);
    Ok(Swept {
        touched,
        sessions,
        strikes,
        audit,
    })
}

/// Runs [`run_once`] every [`TICK`] until `stop` fires, then once more.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        pass(&app).await;
    }
    pass(&app).await;
}

/// A failed snapshot is tried again after this long (or the interval, if shorter).
pub const SNAPSHOT_RETRY: u64 = 600;

/// Takes a snapshot when one is due (`backup.snapshot_interval` after the newest good one);
/// `None` when none is due, snapshots are off, or the store is in a fault.
pub fn snapshot_if_due(app: &App) -> Option<Result<SnapshotInfo, StoreError>> {
    let cfg = &app.config.backup;
    if cfg.snapshots == 0 || app.store.fault().is_some() {
        return None;
    }
    let now = app.clock.now();
    let interval = cfg.snapshot_interval.as_secs();
    {
        let st = app.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = st
            .last_good
            .as_ref()
            .map_or(0, |s| s.at.saturating_add(interval));
        if let Some((failed, _)) = &st.last_error {
            due = due.max(failed.saturating_add(interval.min(SNAPSHOT_RETRY)));
        }
        if now < due {
            return None;
        }
    }
    let dir = cfg.snapshot_dir(app.data_dir());
    let r = app
        .store
        .snapshot(&dir, now, app.sealer.id(), cfg.snapshots);
    let mut st = app.snapshots.lock().unwrap_or_else(|p| p.into_inner());
    match &r {
        Ok(s) => {
            st.last_good = Some(s.clone());
            st.kept = list_snapshots(&dir).len();
            st.last_error = None;
        }
        Err(e) => st.last_error = Some((now, e.to_string())),
    }
    Some(r)
}

async fn pass(app: &Arc<App>) {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || snapshot_if_due(&a)).await {
        Ok(Some(Ok(s))) => log::info!(
            "snapshot written to {} ({} bytes)",
            s.file.display(),
            s.bytes
        ),
        Ok(Some(Err(e))) => log::error!("snapshot failed: {e}"),
        Ok(None) => {}
        Err(e) => log::error!("snapshot task failed: {e}"),
    }
    let a = app.clone();
    match tokio::task::spawn_blocking(move || run_once(&a)).await {
        Ok(Ok(s)) if s.sessions + s.strikes + s.audit > 0 => log::info!(
            "cleanup: {} ended sessions, {} regulation counters, {} audit rows deleted",
            s.sessions,
            s.strikes,
            s.audit
        ),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => log::error!("maintenance failed: {e}"),
        Err(e) => log::error!("maintenance task failed: {e}"),
    }
}

/// How often a store in a fault is tried again, at first and at most.
pub const RECOVER_FIRST: Duration = Duration::from_secs(1);
pub const RECOVER_MAX: Duration = Duration::from_secs(15);

/// Watches for a storage fault and reopens the database once the device takes writes again
/// (design rule 3 holds throughout: a write that failed was answered 503, never 2xx).
pub async fn recover(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut wait = RECOVER_FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if app.store.fault().is_none() {
            wait = RECOVER_FIRST;
            continue;
        }
        let a = app.clone();
        match tokio::task::spawn_blocking(move || a.store.try_recover()).await {
            Ok(Ok(true)) => {
                wait = RECOVER_FIRST;
                let a = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Ok(r) = a.status() {
                        a.alert_log.observe(&a.metrics, &r.alerts);
                    }
                })
                .await;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                log::debug!("database not reopened yet: {e}");
                wait = (wait * 2).min(RECOVER_MAX);
            }
            Err(e) => log::error!("database reopen task failed: {e}"),
        }
    }
}
