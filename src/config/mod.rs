//! Configuration: TOML in, a validated [`Config`] out.
//!
//! `edgeauth serve` with no file runs on the embedded defaults (design §8): data in
//! `./edgeauth-data`, plain HTTP on `127.0.0.1:8080`, no Keycloak. Every error names the file,
//! the key and the form that was expected, because the person reading it is an operator at a
//! console during an outage, not the author of the code.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod access;
pub mod bearer;
pub mod forward_auth;
mod url;
pub(crate) mod validate;
pub mod web;

/// The environment variable that names a config file when `--config` is not given.
pub const CONFIG_ENV: &str = "EDGEAUTH_CONFIG";

/// The documented reference config shipped in the repository. Its values are the defaults;
/// a unit test keeps the two in step.
pub const REFERENCE_TOML: &str = include_str!("../../config/edgeauth.toml");

/// A duration written as `"90s"`, `"15m"`, `"72h"` or `"30d"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|_| {
            serde::de::Error::custom(format!(
                "expected a duration like \"90s\", \"15m\", \"72h\" or \"30d\", got {s:?}"
            ))
        })
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub argon2: Argon2Config,
    pub regulation: RegulationConfig,
    pub keycloak: KeycloakConfig,
    pub degraded: DegradedConfig,
    pub alerts: AlertsConfig,
    pub audit: AuditConfig,
    pub backup: BackupConfig,
    pub web: web::WebConfig,
    pub forward_auth: forward_auth::ForwardAuthConfig,
    pub bearer: bearer::BearerConfig,
    /// Access rules for forward-auth (`crate::access` matches them).
    pub access: access::AccessConfig,
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Where this config came from (a file path, or the embedded defaults); for messages.
    #[serde(skip)]
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR ranges).
    pub trusted_proxies: Vec<IpNet>,
    /// Sessions whose user holds this role may read `/api/v1/status` from anywhere.
    pub operator_role: String,
    /// Serve `/metrics` to every client, not only local clients and operators.
    pub public_metrics: bool,
    /// Connections served at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address may hold open at once (trusted proxies are exempt), so
    /// one address cannot take every connection.
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            data_dir: PathBuf::from("./edgeauth-data"),
            trusted_proxies: Vec::new(),
            operator_role: "edgeauth-operator".into(),
            public_metrics: false,
            max_connections: 1024,
            max_connections_per_ip: 64,
        }
    }
}

impl ServerConfig {
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthOrder {
    OnlineFirst,
    LocalFirst,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub order: AuthOrder,
    pub session_ttl: Dur,
    pub session_idle: Dur,
    pub min_password_length: usize,
    pub offline: OfflineConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            order: AuthOrder::OnlineFirst,
            session_ttl: Dur::secs(8 * 3600),
            session_idle: Dur::secs(30 * 60),
            min_password_length: 8,
            offline: OfflineConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    pub allow: bool,
    pub credentials_expiration: Dur,
    pub failed_login_attempts: u32,
    pub failed_login_delay: Dur,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            allow: true,
            credentials_expiration: Dur::secs(72 * 3600),
            failed_login_attempts: 5,
            failed_login_delay: Dur::secs(5 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; `None` means one per CPU core.
    pub max_concurrent: Option<usize>,
    /// How long a login waits for a hashing slot before it is answered 503 `overloaded`.
    pub max_wait: Dur,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: None,
            max_wait: Dur::secs(2),
        }
    }
}

impl Argon2Config {
    pub fn effective_max_concurrent(&self) -> usize {
        self.max_concurrent.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegulationConfig {
    pub max_retries: u32,
    pub max_retries_per_ip: u32,
    pub find_time: Dur,
    pub ban_time: Dur,
}

impl Default for RegulationConfig {
    fn default() -> Self {
        RegulationConfig {
            max_retries: 5,
            max_retries_per_ip: 20,
            find_time: Dur::secs(120),
            ban_time: Dur::secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeycloakConfig {
    /// Base URL of Keycloak, e.g. `https://sso.example.org`. Unset: no Keycloak, local users only.
    pub server: Option<String>,
    pub realm: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub health_url: Option<String>,
    pub proxy: Option<String>,
    pub resilience: ResilienceConfig,
    pub sync: SyncConfig,
}

impl KeycloakConfig {
    pub fn enabled(&self) -> bool {
        self.server.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    pub failure_threshold: u32,
    pub cooldown: Dur,
    pub half_open_timeout: Dur,
    pub health_check_interval: Dur,
    pub health_check_timeout: Dur,
    pub request_timeout: Dur,
    pub cache_tokens: bool,
    pub token_grace_period: Dur,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            failure_threshold: 3,
            cooldown: Dur::secs(60),
            half_open_timeout: Dur::secs(10),
            health_check_interval: Dur::secs(30),
            health_check_timeout: Dur::secs(2),
            request_timeout: Dur::secs(5),
            cache_tokens: true,
            token_grace_period: Dur::secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub enabled: bool,
    pub interval: Dur,
    pub batch: u32,
    pub max_attempts: u32,
    /// First delay after a refused replay; doubles per attempt, at most an hour.
    pub retry_delay: Dur,
    /// Which users the pull looks up: those this site knows, one lookup each, or the whole
    /// realm, listed page by page (fewer calls when most of the realm uses this site).
    pub pull: PullScope,
    /// Admin API calls a second the pull makes at most (jittered), so a recovering Keycloak
    /// that a thousand sites come back to is not flooded (docs/PERFORMANCE.md has the sums).
    pub pull_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullScope {
    Known,
    Realm,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: true,
            interval: Dur::secs(15 * 60),
            batch: 100,
            max_attempts: 10,
            retry_delay: Dur::secs(30),
            pull: PullScope::Known,
            pull_rate: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordChangePolicy {
    Queue,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradedConfig {
    pub allow_login: bool,
    pub password_change: PasswordChangePolicy,
    pub allow_user_creation: bool,
    pub allow_group_changes: bool,
}

impl Default for DegradedConfig {
    fn default() -> Self {
        DegradedConfig {
            allow_login: true,
            password_change: PasswordChangePolicy::Queue,
            allow_user_creation: false,
            allow_group_changes: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub keycloak_down_after: Dur,
    pub sync_queue_over: u64,
    pub circuit_open: bool,
    pub expiring_cached_sessions_over: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            keycloak_down_after: Dur::secs(300),
            sync_queue_over: 100,
            circuit_open: true,
            expiring_cached_sessions_over: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Audit rows older than this are deleted by the periodic cleanup.
    pub retention: Dur,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention: Dur::secs(90 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// How many snapshots to keep (the oldest beyond are deleted); 0 turns snapshots off.
    pub snapshots: usize,
    /// How often a snapshot is taken while serving.
    pub snapshot_interval: Dur,
    /// Where snapshots go; unset: `snapshots/` in the data dir.
    pub dir: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            snapshots: 7,
            snapshot_interval: Dur::secs(6 * 3600),
            dir: None,
        }
    }
}

impl BackupConfig {
    /// The folder snapshots go to.
    pub fn snapshot_dir(&self, data_dir: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| data_dir.join("snapshots"))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub realm: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
}

/// Where the running config came from; logged once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Defaults,
    File(PathBuf),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Defaults => f.write_str("embedded defaults"),
            ConfigSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A config problem: which file, which key, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// One line of plain text: control characters that the file put into a key or a parser's
    /// message (a NUL, an escape sequence, a newline in a quoted key) are shown escaped, so an
    /// error can neither break the line nor drive the operator's terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, message) = (Printable(&self.file), Printable(&self.message));
        match &self.key {
            Some(k) => write!(f, "config {file}: key `{}`: {message}", Printable(k)),
            None => write!(f, "config {file}: {message}"),
        }
    }
}

/// Text with its control characters escaped (`\u{0}`, `\n`).
struct Printable<'a>(&'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// Loads the config named by `explicit`, else by `EDGEAUTH_CONFIG`, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        match explicit.map(Path::to_path_buf).or(from_env) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                    file: path.display().to_string(),
                    key: None,
                    message: format!("cannot read: {e}"),
                })?;
                let base = path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."));
                let config = Config::parse(&text, &path.display().to_string(), &base)?;
                Ok((config, ConfigSource::File(path)))
            }
            None => {
                let config = Config {
                    origin: "<embedded defaults>".into(),
                    ..Config::default()
                };
                config.validate("<embedded defaults>")?;
                Ok((config, ConfigSource::Defaults))
            }
        }
    }

    /// Parses and validates TOML text. Relative paths are taken from `base` (the file's folder).
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
            file: file.into(),
            key: None,
            message: one_line(&e.to_string()),
        })?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError {
                file: file.into(),
                key: (path != "." && !path.is_empty()).then_some(path),
                message: one_line(&e.into_inner().to_string()),
            }
        })?;
        config.resolve_paths(base);
        config.origin = file.to_owned();
        config.validate(file)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.data_dir);
        if let Some(p) = self.backup.dir.as_mut() {
            fix(p);
        }
        for p in [
            &mut self.server.tls_cert,
            &mut self.server.tls_key,
            &mut self.web.logo,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        for p in [
            &mut self.keycloak.client_secret_file,
            &mut self.keycloak.ca_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        for t in self.tenants.values_mut() {
            if let Some(p) = t.client_secret_file.as_mut() {
                fix(p);
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
