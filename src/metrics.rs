//! Prometheus metrics (`GET /metrics`), through prometheus-client.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::AuthMode;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    outcome: &'static str,
    auth_mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    auth_mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidationLabels {
    result: &'static str,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    logins: Family<LoginLabels, Counter>,
    sessions: Family<ModeLabels, Gauge>,
    validations: Family<ValidationLabels, Counter>,
    argon2_wait: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgeauth");
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "logins",
            "Login attempts by outcome and auth_mode",
            logins.clone(),
        );
        let sessions = Family::<ModeLabels, Gauge>::default();
        registry.register(
            "active_sessions",
            "Active sessions by auth_mode",
            sessions.clone(),
        );
        let validations = Family::<ValidationLabels, Counter>::default();
        registry.register(
            "session_validations",
            "Session validations by result",
            validations.clone(),
        );
        let argon2_wait =
            Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0]);
        registry.register(
            "argon2_wait_seconds",
            "Time a password hash waited for a hashing slot",
            argon2_wait.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            logins,
            sessions,
            validations,
            argon2_wait,
        }
    }

    pub fn login(&self, outcome: &'static str, auth_mode: Option<AuthMode>) {
        self.logins
            .get_or_create(&LoginLabels {
                outcome,
                auth_mode: auth_mode.map_or("none", AuthMode::as_str),
            })
            .inc();
    }

    pub fn validation(&self, result: &'static str) {
        self.validations
            .get_or_create(&ValidationLabels { result })
            .inc();
    }

    pub fn argon2_wait(&self, d: Duration) {
        self.argon2_wait.observe(d.as_secs_f64());
    }

    pub fn set_active_sessions(&self, mode: AuthMode, n: u64) {
        self.sessions
            .get_or_create(&ModeLabels {
                auth_mode: mode.as_str(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters() {
        let m = Metrics::new();
        m.login("ok", Some(AuthMode::Local));
        m.set_active_sessions(AuthMode::Local, 3);
        m.argon2_wait(Duration::from_millis(2));
        let text = m.encode();
        assert!(
            text.contains("edgeauth_logins_total{outcome=\"ok\",auth_mode=\"local\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("edgeauth_active_sessions{auth_mode=\"local\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("edgeauth_argon2_wait_seconds_count 1"),
            "{text}"
        );
    }
}
