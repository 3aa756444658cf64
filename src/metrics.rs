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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    keycloak_calls: Family<CallLabels, Counter>,
    keycloak_latency: Family<CallLabels, Histogram>,
    fallbacks: Counter,
    jwks: Family<ResultLabels, Counter>,
    circuit_state: Gauge,
    alerts: Family<NameLabels, Gauge>,
    logins: Family<LoginLabels, Counter>,
    sessions: Family<ModeLabels, Gauge>,
    validations: Family<ValidationLabels, Counter>,
    argon2_wait: Histogram,
    sync_cycles: Family<ResultLabels, Counter>,
    sync_items: Family<ResultLabels, Counter>,
    sync_open: Gauge,
    store_commits: Counter,
    log_dropped: Counter,
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
        let keycloak_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "keycloak_calls",
            "Calls to Keycloak by kind and outcome",
            keycloak_calls.clone(),
        );
        let keycloak_latency = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "keycloak_call_seconds",
            "Latency of calls to Keycloak",
            keycloak_latency.clone(),
        );
        let fallbacks = Counter::default();
        registry.register(
            "offline_fallbacks",
            "Logins answered from the local hash because Keycloak was unavailable",
            fallbacks.clone(),
        );
        let jwks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "jwks_cache",
            "JWKS cache lookups by result (hit, miss)",
            jwks.clone(),
        );
        let circuit_state = Gauge::default();
        registry.register(
            "circuit_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        let alerts = Family::<NameLabels, Gauge>::default();
        registry.register(
            "alert_active",
            "1 while the named alert is active",
            alerts.clone(),
        );
        let sync_cycles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "sync_cycles",
            "Sync cycles by result (complete, cut_short)",
            sync_cycles.clone(),
        );
        let sync_items = Family::<ResultLabels, Counter>::default();
        registry.register(
            "sync_items",
            "Queue items replayed by result (replayed, superseded, failed, dead), and users the pull disabled (disabled)",
            sync_items.clone(),
        );
        let sync_open = Gauge::default();
        registry.register(
            "sync_open_items",
            "Queued changes still pending or failed after the last sync cycle",
            sync_open.clone(),
        );
        let store_commits = Counter::default();
        registry.register(
            "store_commits",
            "Write transactions committed to the database (forward-auth and session checks make none)",
            store_commits.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log writer fell behind",
            log_dropped.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            sync_cycles,
            sync_items,
            sync_open,
            store_commits,
            log_dropped,
            keycloak_calls,
            keycloak_latency,
            fallbacks,
            jwks,
            circuit_state,
            alerts,
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

    pub fn keycloak_call(
        &self,
        kind: &'static str,
        outcome: &'static str,
        latency: Option<Duration>,
    ) {
        let l = CallLabels { kind, outcome };
        self.keycloak_calls.get_or_create(&l).inc();
        if let Some(d) = latency {
            self.keycloak_latency
                .get_or_create(&l)
                .observe(d.as_secs_f64());
        }
    }

    pub fn fallback(&self) {
        self.fallbacks.inc();
    }

    pub fn jwks(&self, result: &'static str) {
        self.jwks.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn set_circuit_state(&self, v: i64) {
        self.circuit_state.set(v);
    }

    /// Counts one sync cycle and what it did.
    /// One sync cycle: whether it was cut short, the items per result (`replayed`,
    /// `superseded`, `failed`, `dead`, `disabled`) and the items still open.
    pub fn sync_cycle(&self, cut_short: bool, items: &[(&'static str, u64)], open: u64) {
        let result = if cut_short { "cut_short" } else { "complete" };
        self.sync_cycles
            .get_or_create(&ResultLabels { result })
            .inc();
        for &(result, n) in items {
            if n > 0 {
                self.sync_items
                    .get_or_create(&ResultLabels { result })
                    .inc_by(n);
            }
        }
        self.sync_open.set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn set_alert(&self, name: &str, active: bool) {
        self.alerts
            .get_or_create(&NameLabels {
                name: name.to_owned(),
            })
            .set(i64::from(active));
    }

    /// The OpenMetrics text exposition, with the totals kept elsewhere (the store's commits,
    /// the log writer's drops) brought up to date first.
    pub fn encode(&self, store_commits: u64, log_dropped: u64) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Under the registry lock, so two scrapes cannot both add the same difference.
        for (c, n) in [
            (&self.store_commits, store_commits),
            (&self.log_dropped, log_dropped),
        ] {
            c.inc_by(n.saturating_sub(c.get()));
        }
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
        let text = m.encode(3, 0);
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
        assert!(text.contains("edgeauth_store_commits_total 3"), "{text}");
        // The totals follow their sources, whatever the number of scrapes.
        m.encode(5, 2);
        let text = m.encode(5, 2);
        assert!(text.contains("edgeauth_store_commits_total 5"), "{text}");
        assert!(
            text.contains("edgeauth_log_lines_dropped_total 2"),
            "{text}"
        );
    }
}
