//! Health of Keycloak as the background monitor sees it, the appliance `mode` derived from it
//! and the breaker, and the monitor task itself.
//!
//! The monitor probes `health_url` (or the discovery document) every `health_check_interval`
//! with `health_check_timeout`. While Keycloak is unreachable it retries sooner, with capped
//! exponential backoff (1 s, 2 s, 4 s ... up to the interval) and ±25 % jitter, so a return is
//! noticed quickly without a thundering herd of sites. A call that finds Keycloak unreachable
//! while the monitor still thinks it reachable wakes the monitor at once, so those quick
//! retries start from the first failed login, not a whole interval later. Its failures count against the breaker
//! like a login's; its success closes the breaker at once (the cooldown only paces the trial
//! logins make while the monitor has not yet seen Keycloak back). It never runs inside a
//! login (design rule 2).

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::breaker::{BreakerView, CircuitState};
use super::{Unavailable, UnavailableKind, UpstreamError};

/// keycloak_status (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeycloakStatus {
    Online,
    Offline,
    Degraded,
    Disabled,
}

impl KeycloakStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeycloakStatus::Online => "online",
            KeycloakStatus::Offline => "offline",
            KeycloakStatus::Degraded => "degraded",
            KeycloakStatus::Disabled => "disabled",
        }
    }

    pub fn mode(self) -> Mode {
        match self {
            KeycloakStatus::Online | KeycloakStatus::Disabled => Mode::Normal,
            KeycloakStatus::Degraded => Mode::Degraded,
            KeycloakStatus::Offline => Mode::Offline,
        }
    }
}

/// The appliance's mode (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    Degraded,
    Offline,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Degraded => "degraded",
            Mode::Offline => "offline",
        }
    }
}

/// What the monitor has learned. Times are Unix seconds from the store's clock.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    /// None until the first probe has finished.
    pub reachable: Option<bool>,
    pub last_check: Option<u64>,
    pub last_success: Option<u64>,
    pub offline_since: Option<u64>,
    pub last_error: Option<String>,
    /// The client is misconfigured (invalid_client, unknown realm): an operator alert.
    pub misconfigured: Option<String>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Default)]
pub struct Health {
    inner: Mutex<HealthView>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthView> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> HealthView {
        self.lock().clone()
    }

    /// Records a reachable Keycloak; returns true when it was unreachable before.
    pub fn reachable(&self, now: u64) -> bool {
        let mut h = self.lock();
        let recovered = h.reachable == Some(false);
        h.reachable = Some(true);
        h.last_check = Some(now);
        h.last_success = Some(now);
        h.offline_since = None;
        h.last_error = None;
        h.consecutive_failures = 0;
        recovered
    }

    /// Records an unreachable Keycloak; returns true when it was reachable (or unknown) before.
    pub fn unreachable(&self, now: u64, error: String) -> bool {
        let mut h = self.lock();
        let went_down = h.reachable != Some(false);
        h.reachable = Some(false);
        h.last_check = Some(now);
        if h.offline_since.is_none() {
            h.offline_since = Some(now);
        }
        h.last_error = Some(error);
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        went_down
    }

    /// The last probe found Keycloak unreachable (no clone of the view).
    pub fn known_unreachable(&self) -> bool {
        self.lock().reachable == Some(false)
    }

    pub fn set_misconfigured(&self, why: Option<String>) {
        self.lock().misconfigured = why;
    }

    /// keycloak_status from the probe and the breaker.
    pub fn status(&self, breaker: &BreakerView) -> KeycloakStatus {
        let h = self.lock();
        match (h.reachable, breaker.state) {
            (Some(false), _) => KeycloakStatus::Offline,
            (_, CircuitState::Open) => KeycloakStatus::Offline,
            (None, _) | (_, CircuitState::HalfOpen) => KeycloakStatus::Degraded,
            (Some(true), CircuitState::Closed) if h.misconfigured.is_some() => {
                KeycloakStatus::Degraded
            }
            (Some(true), CircuitState::Closed) => KeycloakStatus::Online,
        }
    }
}

/// The delay before the next probe: the interval while reachable; while not, 1 s doubling per
/// consecutive failure, capped at the interval, with ±25 % jitter.
pub fn next_delay(interval: Duration, consecutive_failures: u32, jitter_unit: f64) -> Duration {
    let base = if consecutive_failures == 0 {
        interval
    } else {
        let exp = consecutive_failures.saturating_sub(1).min(16);
        Duration::from_secs(1u64 << exp).min(interval)
    };
    let factor = 0.75 + 0.5 * jitter_unit.clamp(0.0, 1.0);
    base.mul_f64(factor).max(Duration::from_millis(100))
}

impl super::Upstream {
    /// The monitor task: probes Keycloak until `stop` fires. Also fetches the discovery
    /// document and JWKS when they are missing (cold start) and after every recovery.
    pub async fn run_monitor(
        self: std::sync::Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if !self.enabled() {
            return;
        }
        loop {
            let _ = self.probe_now().await;
            let failures = self.health.view().consecutive_failures;
            let jitter = crate::crypto::random_unit();
            tokio::select! {
                _ = tokio::time::sleep(next_delay(self.health_interval, failures, jitter)) => {}
                _ = self.monitor_wakeup.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One probe, recorded as the monitor records it: reachable closes the breaker and wakes
    /// the sync worker on recovery; unreachable counts against the breaker.
    pub async fn probe_now(&self) -> Result<(), UpstreamError> {
        let Some(api) = self.login_api(&crate::domain::Tenant::default_tenant()) else {
            return Ok(());
        };
        let outcome = tokio::task::spawn_blocking(move || api.probe())
            .await
            .unwrap_or_else(|e| {
                Err(Unavailable::new(UnavailableKind::Connect, e.to_string()).into())
            });
        let now = self.clock.now();
        match &outcome {
            Ok(()) | Err(UpstreamError::Rejected(_)) => {
                if self.health.reachable(now) {
                    log::info!("Keycloak is reachable again; replaying the sync queue");
                    self.recovered.notify_one();
                }
                // A good probe is direct evidence that Keycloak is back: close the breaker now
                // rather than after the cooldown, which only paces login-driven trials.
                self.breaker.success();
                let realms = self.realms();
                let _ = tokio::task::spawn_blocking(move || refresh_documents(&realms)).await;
            }
            Err(UpstreamError::Unavailable(u)) => {
                if self.health.unreachable(now, u.to_string()) {
                    log::warn!("Keycloak is unreachable: {u}");
                }
                if u.kind.is_outage() && self.breaker.failure(std::time::Instant::now()) {
                    log::warn!("circuit breaker opened by the health monitor");
                }
            }
        }
        self.metrics
            .set_circuit_state(match self.breaker.view(std::time::Instant::now()).state {
                CircuitState::Closed => 0,
                CircuitState::HalfOpen => 1,
                CircuitState::Open => 2,
            });
        outcome
    }

    /// Before an operator's action that needs Keycloak: when it does not look online, look
    /// again now rather than act on the last probe's view.
    pub async fn refresh_if_stale(&self) {
        if self.status() != KeycloakStatus::Online {
            let _ = self.probe_now().await;
        }
    }

    /// Test support: what the monitor would have found.
    #[cfg(test)]
    pub(crate) fn set_reachable(&self, reachable: bool, now: u64) {
        if reachable {
            self.health.reachable(now);
            self.breaker.success();
        } else {
            self.health.unreachable(now, "scripted".into());
        }
    }
}

/// Fetches discovery and JWKS for every realm that lacks them (cold start, first contact).
/// Blocking. Later JWKS changes are picked up on an unknown kid.
fn refresh_documents(realms: &[std::sync::Arc<super::Realm>]) {
    for realm in realms {
        if !realm.has_discovery() {
            match realm.refresh_discovery() {
                Ok(()) => {
                    if let Err(e) = realm.refresh_jwks() {
                        log::warn!("cannot fetch the JWKS: {e}");
                    }
                }
                Err(e) => log::warn!("cannot fetch the discovery document: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::breaker::CircuitState;

    fn view(state: CircuitState) -> BreakerView {
        BreakerView {
            state,
            failure_count: 0,
            open_for: None,
        }
    }

    #[test]
    fn status_from_probe_and_breaker() {
        let h = Health::default();
        assert_eq!(
            h.status(&view(CircuitState::Closed)),
            KeycloakStatus::Degraded,
            "not probed yet"
        );
        assert!(!h.reachable(10));
        assert_eq!(
            h.status(&view(CircuitState::Closed)),
            KeycloakStatus::Online
        );
        assert_eq!(
            h.status(&view(CircuitState::HalfOpen)),
            KeycloakStatus::Degraded
        );
        assert_eq!(h.status(&view(CircuitState::Open)), KeycloakStatus::Offline);
        assert!(h.unreachable(20, "refused".into()));
        assert!(!h.unreachable(25, "refused".into()));
        assert_eq!(h.view().offline_since, Some(20));
        assert_eq!(
            h.status(&view(CircuitState::Closed)),
            KeycloakStatus::Offline
        );
        assert_eq!(KeycloakStatus::Offline.mode(), Mode::Offline);
        assert!(h.reachable(30), "recovery is reported once");
        assert_eq!(h.view().offline_since, None);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let i = Duration::from_secs(30);
        assert_eq!(next_delay(i, 0, 0.5), i);
        assert_eq!(next_delay(i, 1, 0.5), Duration::from_secs(1));
        assert_eq!(next_delay(i, 3, 0.5), Duration::from_secs(4));
        assert_eq!(next_delay(i, 10, 0.5), i, "capped at the interval");
        assert_eq!(next_delay(i, 1, 0.0), Duration::from_millis(750));
        assert_eq!(next_delay(i, 1, 1.0), Duration::from_millis(1250));
    }
}
