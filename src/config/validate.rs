//! The rules of a config that no type can express; every error names the key.

use std::time::Duration;

use super::{Config, ConfigError};

impl Config {
    /// Checks the rules no type can express. Errors name the key.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: file.into(),
            key: Some(key.into()),
            message,
        };
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
        if s.max_connections == 0 {
            return Err(err("server.max_connections", "must be at least 1".into()));
        }
        if s.max_connections_per_ip == 0 || s.max_connections_per_ip > s.max_connections {
            return Err(err(
                "server.max_connections_per_ip",
                format!(
                    "must be between 1 and server.max_connections ({}), got {}",
                    s.max_connections, s.max_connections_per_ip
                ),
            ));
        }
        if s.operator_role.trim().is_empty() {
            return Err(err("server.operator_role", "must not be empty".into()));
        }
        let b = &self.backup;
        if b.snapshots > 100 {
            return Err(err(
                "backup.snapshots",
                "must be between 0 (no snapshots) and 100".into(),
            ));
        }
        if b.snapshot_interval.0 < Duration::from_secs(600)
            || b.snapshot_interval.0 > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(err(
                "backup.snapshot_interval",
                "must be between \"10m\" and \"30d\"".into(),
            ));
        }
        let a = &self.auth;
        if a.session_ttl.0 < Duration::from_secs(1) {
            return Err(err("auth.session_ttl", "must be at least \"1s\"".into()));
        }
        if a.session_idle.0 < Duration::from_secs(1) {
            return Err(err("auth.session_idle", "must be at least \"1s\"".into()));
        }
        if a.min_password_length == 0 || a.min_password_length > 1024 {
            return Err(err(
                "auth.min_password_length",
                "must be between 1 and 1024".into(),
            ));
        }
        if a.offline.failed_login_attempts == 0 {
            return Err(err(
                "auth.offline.failed_login_attempts",
                "must be at least 1".into(),
            ));
        }
        let g = &self.argon2;
        if g.memory_kib < 8 * g.parallelism.max(1) || g.memory_kib > 4 * 1024 * 1024 {
            return Err(err(
                "argon2.memory_kib",
                "must be between 8 × parallelism and 4194304 (4 GiB); OWASP's floor is 19456"
                    .into(),
            ));
        }
        if g.iterations == 0 || g.iterations > 64 {
            return Err(err("argon2.iterations", "must be between 1 and 64".into()));
        }
        if g.parallelism == 0 || g.parallelism > 16 {
            return Err(err("argon2.parallelism", "must be between 1 and 16".into()));
        }
        if g.max_concurrent == Some(0) {
            return Err(err(
                "argon2.max_concurrent",
                "must be at least 1 (leave it out to use one per CPU core)".into(),
            ));
        }
        let r = &self.regulation;
        if r.max_retries == 0 {
            return Err(err("regulation.max_retries", "must be at least 1".into()));
        }
        if r.max_retries_per_ip == 0 {
            return Err(err(
                "regulation.max_retries_per_ip",
                "must be at least 1".into(),
            ));
        }
        if r.find_time.0.is_zero() {
            return Err(err("regulation.find_time", "must be longer than 0s".into()));
        }
        if r.ban_time.0.is_zero() {
            return Err(err("regulation.ban_time", "must be longer than 0s".into()));
        }
        let k = &self.keycloak;
        if let Some(server) = &k.server {
            if !(server.starts_with("https://") || server.starts_with("http://")) {
                return Err(err(
                    "keycloak.server",
                    format!("expected a URL like \"https://sso.example.org\", got {server:?}"),
                ));
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
        if k.resilience.failure_threshold == 0 {
            return Err(err(
                "keycloak.resilience.failure_threshold",
                "must be at least 1".into(),
            ));
        }
        if k.resilience.request_timeout.0.is_zero() {
            return Err(err(
                "keycloak.resilience.request_timeout",
                "must be longer than 0s".into(),
            ));
        }
        let rate = k.sync.pull_rate;
        if !(rate.is_finite() && (0.01..=100.0).contains(&rate)) {
            return Err(err(
                "keycloak.sync.pull_rate",
                format!("must be between 0.01 and 100 admin calls a second, got {rate}"),
            ));
        }
        for name in self.tenants.keys() {
            if let Err(why) = crate::domain::validate_tenant(name) {
                return Err(err(&format!("tenants.{name}"), why));
            }
        }
        Ok(())
    }
}
