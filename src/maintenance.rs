//! The periodic bookkeeping task: flushes session activity (rule 8), persists the clock floor
//! (rule 7), deletes ended sessions, stale regulation counters and old audit rows, and
//! refreshes the session gauges. Runs every [`TICK`] and once more at shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::store::StoreError;

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
    // Refreshes the gauges, and logs alerts that started or ended.
    let report = app.status()?;
    app.alert_log.observe(&app.metrics, &report.alerts);
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

async fn pass(app: &Arc<App>) {
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
