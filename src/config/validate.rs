//! The rules of a config that no type can express; every error names the key.
//!
//! Every number and duration has a range here, checked at load: a value the types accept but
//! the code cannot live with (a semaphore of 3e18 permits, a session that ends after the year
//! 9999) must stop the start with a line naming the key, never abort the process later.
//! The ranges are generous; they keep out typos and overflows, not unusual sites.

use std::time::Duration;

use super::{Config, ConfigError, Dur};

const SECOND: u64 = 1;
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const YEAR: u64 = 366 * DAY;

/// A key's value and the range it must be in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bound {
    /// A duration and its allowed `lo ..= hi`.
    Dur(Duration, Duration, Duration),
    /// A whole number (`None`: left out, a default applies) and its allowed `lo ..= hi`.
    Num(Option<u64>, u64, u64),
}

fn dur(value: Dur, lo: u64, hi: u64) -> Bound {
    Bound::Dur(value.0, Duration::from_secs(lo), Duration::from_secs(hi))
}

fn dur_ms(value: Dur, lo: u64, hi: u64) -> Bound {
    Bound::Dur(
        value.0,
        Duration::from_millis(lo),
        Duration::from_millis(hi),
    )
}

fn num(value: impl TryInto<u64>, lo: u64, hi: u64) -> Bound {
    Bound::Num(Some(value.try_into().unwrap_or(u64::MAX)), lo, hi)
}

fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A duration in the largest whole unit that fits (`"366d"`, not `"1year 15h 10m 48s"`), in
/// the form the config takes.
pub(super) fn show(d: Duration) -> String {
    let s = d.as_secs();
    let text = match () {
        _ if d.subsec_nanos() != 0 => return format!("\"{}\"", humantime::format_duration(d)),
        _ if s == 0 => "0s".to_owned(),
        _ if s.is_multiple_of(DAY) => format!("{}d", s / DAY),
        _ if s.is_multiple_of(HOUR) => format!("{}h", s / HOUR),
        _ if s.is_multiple_of(MINUTE) => format!("{}m", s / MINUTE),
        _ => format!("{s}s"),
    };
    format!("\"{text}\"")
}

impl Config {
    /// Every number and duration key, its value and its allowed range: the one list of them.
    pub(super) fn bounds(&self) -> Vec<(&'static str, Bound)> {
        let (s, a, g, r, k) = (
            &self.server,
            &self.auth,
            &self.argon2,
            &self.regulation,
            &self.keycloak,
        );
        let (kr, ks, al) = (&k.resilience, &k.sync, &self.alerts);
        vec![
            ("server.max_connections", num(s.max_connections, 1, 65_536)),
            (
                "server.max_connections_per_ip",
                num(s.max_connections_per_ip, 1, 65_536),
            ),
            ("backup.snapshots", num(self.backup.snapshots, 0, 100)),
            (
                "backup.snapshot_interval",
                dur(self.backup.snapshot_interval, 10 * MINUTE, 30 * DAY),
            ),
            ("auth.session_ttl", dur(a.session_ttl, SECOND, YEAR)),
            ("auth.session_idle", dur(a.session_idle, SECOND, YEAR)),
            (
                "auth.min_password_length",
                num(a.min_password_length, 1, 1024),
            ),
            (
                "auth.offline.credentials_expiration",
                dur(a.offline.credentials_expiration, 0, YEAR),
            ),
            (
                "auth.offline.failed_login_attempts",
                num(a.offline.failed_login_attempts, 1, 1000),
            ),
            (
                "auth.offline.failed_login_delay",
                dur(a.offline.failed_login_delay, SECOND, 30 * DAY),
            ),
            ("argon2.memory_kib", num(g.memory_kib, 8, 4 * 1024 * 1024)),
            ("argon2.iterations", num(g.iterations, 1, 64)),
            ("argon2.parallelism", num(g.parallelism, 1, 16)),
            (
                "argon2.max_concurrent",
                Bound::Num(g.max_concurrent.map(wide), 1, 256),
            ),
            ("argon2.max_wait", dur(g.max_wait, 0, 30 * SECOND)),
            ("regulation.max_retries", num(r.max_retries, 1, 1_000_000)),
            (
                "regulation.max_retries_per_ip",
                num(r.max_retries_per_ip, 1, 1_000_000),
            ),
            ("regulation.find_time", dur(r.find_time, SECOND, 30 * DAY)),
            ("regulation.ban_time", dur(r.ban_time, SECOND, YEAR)),
            (
                "keycloak.resilience.failure_threshold",
                num(kr.failure_threshold, 1, 1000),
            ),
            (
                "keycloak.resilience.cooldown",
                dur(kr.cooldown, SECOND, DAY),
            ),
            (
                "keycloak.resilience.half_open_timeout",
                dur(kr.half_open_timeout, SECOND, 10 * MINUTE),
            ),
            (
                "keycloak.resilience.health_check_interval",
                dur(kr.health_check_interval, SECOND, DAY),
            ),
            (
                "keycloak.resilience.health_check_timeout",
                dur_ms(kr.health_check_timeout, 100, 10 * MINUTE * 1000),
            ),
            (
                "keycloak.resilience.request_timeout",
                dur_ms(kr.request_timeout, 100, 10 * MINUTE * 1000),
            ),
            (
                "keycloak.resilience.token_grace_period",
                dur(kr.token_grace_period, 0, YEAR),
            ),
            ("keycloak.sync.interval", dur(ks.interval, SECOND, 7 * DAY)),
            ("keycloak.sync.batch", num(ks.batch, 1, 10_000)),
            ("keycloak.sync.max_attempts", num(ks.max_attempts, 1, 1000)),
            (
                "keycloak.sync.retry_delay",
                dur(ks.retry_delay, SECOND, DAY),
            ),
            (
                "alerts.keycloak_down_after",
                dur(al.keycloak_down_after, 0, 30 * DAY),
            ),
            (
                "alerts.sync_queue_over",
                num(al.sync_queue_over, 0, 100_000_000),
            ),
            (
                "alerts.expiring_cached_sessions_over",
                num(al.expiring_cached_sessions_over, 0, 100_000_000),
            ),
            (
                "audit.retention",
                dur(self.audit.retention, HOUR, 10 * YEAR),
            ),
            (
                "forward_auth.basic_cache_ttl",
                dur(self.forward_auth.basic_cache_ttl, 0, HOUR),
            ),
            ("bearer.leeway", dur(self.bearer.leeway, 0, 5 * MINUTE)),
            (
                "bearer.jwks_refetch_interval",
                dur(self.bearer.jwks_refetch_interval, SECOND, DAY),
            ),
            (
                "bearer.introspect_cache",
                dur(self.bearer.introspect_cache, SECOND, HOUR),
            ),
            ("bearer.cache_ttl", dur(self.bearer.cache_ttl, 0, HOUR)),
            (
                "bearer.cache_size",
                num(self.bearer.cache_size, 0, 1_000_000),
            ),
        ]
    }

    /// Checks the rules no type can express. Errors name the key.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: file.into(),
            key: Some(key.into()),
            message,
        };
        for (key, bound) in self.bounds() {
            match bound {
                Bound::Dur(v, lo, hi) if v < lo || v > hi => {
                    return Err(err(
                        key,
                        format!(
                            "must be between {} and {}, got \"{}\"",
                            show(lo),
                            show(hi),
                            humantime::format_duration(v)
                        ),
                    ));
                }
                Bound::Num(Some(v), lo, hi) if v < lo || v > hi => {
                    return Err(err(key, format!("must be between {lo} and {hi}, got {v}")));
                }
                _ => {}
            }
        }
        let s = &self.server;
        match (&s.tls_cert, &s.tls_key) {
            (Some(_), None) => {
                return Err(err(
                    "server.tls_key",
                    "is missing: tls_cert is set, so tls_key must name the private key (PEM)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "server.tls_cert",
                    "is missing: tls_key is set, so tls_cert must name the certificate chain (PEM)"
                        .into(),
                ));
            }
            _ => {}
        }
        if !s.tls_enabled() && !s.listen.ip().is_loopback() {
            return Err(err(
                "server.listen",
                format!(
                    "plain HTTP on the non-loopback address {} would send passwords in clear; \
                     set server.tls_cert and server.tls_key (`edgeauth init` makes a self-signed pair) \
                     or listen on 127.0.0.1 behind a TLS proxy and name that proxy in \
                     server.trusted_proxies (such as [\"127.0.0.1/32\"]), or every client looks \
                     local",
                    s.listen
                ),
            ));
        }
        if s.operator_role.trim().is_empty() {
            return Err(err("server.operator_role", "must not be empty".into()));
        }
        let g = &self.argon2;
        if g.memory_kib < 8 * g.parallelism {
            return Err(err(
                "argon2.memory_kib",
                format!(
                    "must be at least 8 × parallelism ({}), got {}; OWASP's floor is 19456",
                    8 * g.parallelism,
                    g.memory_kib
                ),
            ));
        }
        let k = &self.keycloak;
        if let Some(server) = &k.server {
            if let Err(why) = super::url::check_base(server) {
                return Err(err("keycloak.server", why));
            }
            if k.realm.as_deref().is_none_or(str::is_empty) {
                return Err(err(
                    "keycloak.realm",
                    "is required when keycloak.server is set".into(),
                ));
            }
            if k.client_id.as_deref().is_none_or(str::is_empty) {
                return Err(err(
                    "keycloak.client_id",
                    "is required when keycloak.server is set".into(),
                ));
            }
        }
        if let Some(health) = &k.health_url
            && let Err(why) = super::url::check_endpoint(health)
        {
            return Err(err("keycloak.health_url", why));
        }
        if let Some(proxy) = &k.proxy
            && let Err(why) = super::url::check_proxy(proxy)
        {
            return Err(err("keycloak.proxy", why));
        }
        let rate = k.sync.pull_rate;
        if !(rate.is_finite() && (0.01..=100.0).contains(&rate)) {
            return Err(err(
                "keycloak.sync.pull_rate",
                format!("must be between 0.01 and 100 admin calls a second, got {rate}"),
            ));
        }
        if let Err((key, why)) = self.forward_auth.headers.check() {
            return Err(err(&key, why));
        }
        let b = &self.bearer;
        if b.algorithms.is_empty() {
            return Err(err(
                "bearer.algorithms",
                "must name at least one algorithm, such as [\"RS256\"] (set bearer.enabled = false to accept no Keycloak token)".into(),
            ));
        }
        for a in &b.algorithms {
            if !super::bearer::ALGORITHMS.contains(&a.as_str()) {
                return Err(err(
                    "bearer.algorithms",
                    format!(
                        "{a:?} is not accepted: only the asymmetric RS256, RS384, RS512 and PS256 \
                         (\"none\" and HS* would let anyone who has the realm's public key sign tokens)"
                    ),
                ));
            }
        }
        if let Some(a) = b.audiences.iter().find(|a| a.trim().is_empty()) {
            return Err(err(
                "bearer.audiences",
                format!("{a:?}: a client id must not be empty"),
            ));
        }
        if let Err((key, why)) = self.access.check() {
            return Err(err(&key, why));
        }
        for name in self.tenants.keys() {
            if let Err(why) = crate::domain::validate_tenant(name) {
                return Err(err(&format!("tenants.{name}"), why));
            }
        }
        self.web.check().map_err(|(key, why)| err(&key, why))?;
        Ok(())
    }
}
