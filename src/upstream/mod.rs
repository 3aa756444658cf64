//! The Keycloak tier: per-tenant clients, the shared breaker and health state, the persisted
//! discovery document and JWKS, and the background monitor.
//!
//! Every login-side call (grants, refresh, logout) goes through [`Keycloak::call`]: the breaker
//! decides whether to call at all, the call runs on the blocking pool bounded by
//! `request_timeout`, and its outcome feeds the breaker (only outages count) and the metrics.
//!
//! Admin-side calls (sync replay, pull, provisioning) go through [`Keycloak::admin_call`]
//! instead (design rule 9): they are not made while the circuit is open, but their outcome never
//! feeds the breaker, the health state or the mode. A refusal or an odd answer of the admin API
//! is recorded in [`AdminHealth`], which raises its own alert naming the endpoint and permission.

pub mod breaker;
pub mod monitor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::keycloak::admin;
use crate::keycloak::client::{ClientSettings, Endpoints, KeycloakClient};
pub use crate::keycloak::outcome::{Rejection, Unavailable, UnavailableKind, UpstreamError};
use crate::keycloak::token::{self, AccessClaims, Jwks, VerifyError};

use crate::config::{Config, ConfigError};
use crate::crypto::Secret;
use crate::domain::Tenant;
use crate::metrics::Metrics;
use crate::store::Store;
use breaker::{Admission, Breaker, BreakerConfig, CircuitState};
use monitor::{Health, KeycloakStatus};

/// One realm and client: what a tenant logs in against.
#[derive(Debug)]
pub struct Tier {
    pub client: KeycloakClient,
    endpoints: RwLock<Option<Endpoints>>,
    jwks: RwLock<Jwks>,
    kv_prefix: String,
}

fn read_secret(
    path: Option<&std::path::Path>,
    key: &str,
    file: &str,
) -> Result<Secret, ConfigError> {
    let err = |message: String| ConfigError {
        file: file.into(),
        key: Some(key.into()),
        message,
    };
    let path = path.ok_or_else(|| {
        err("is required when keycloak.server is set (a file holding the client secret)".into())
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(err(format!("{} is empty", path.display())));
    }
    Ok(Secret::new(secret))
}

impl Tier {
    fn new(settings: ClientSettings, store: &Store) -> Result<Self, String> {
        let kv_prefix = format!("keycloak/{}/{}", settings.realm, settings.client_id);
        let client = KeycloakClient::new(settings)?;
        let endpoints = store
            .read(|r| r.kv(&format!("{kv_prefix}/discovery")))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Endpoints>(&b).ok());
        let jwks = store
            .read(|r| r.kv(&format!("{kv_prefix}/jwks")))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|doc| Jwks::parse(&doc))
            .unwrap_or_default();
        Ok(Tier {
            client,
            endpoints: RwLock::new(endpoints),
            jwks: RwLock::new(jwks),
            kv_prefix,
        })
    }

    /// Discovered endpoints, or Keycloak's fixed layout until discovery has been fetched.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
            .read()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| {
                let s = self.client.settings();
                Endpoints::conventional(&s.server, &s.realm)
            })
    }

    pub fn has_discovery(&self) -> bool {
        self.endpoints.read().map(|e| e.is_some()).unwrap_or(false)
    }

    /// Fetches and persists the discovery document. Blocking.
    pub fn refresh_discovery(&self, store: &Store) -> Result<(), UpstreamError> {
        let ep = self
            .client
            .get_json::<Endpoints>(&self.client.discovery_url())?;
        let bytes = serde_json::to_vec(&ep).unwrap_or_default();
        if let Err(e) = store.write(|w| w.put_kv(&format!("{}/discovery", self.kv_prefix), &bytes))
        {
            log::warn!("cannot persist the discovery document: {e}");
        }
        if let Ok(mut slot) = self.endpoints.write() {
            *slot = Some(ep);
        }
        Ok(())
    }

    /// Fetches and persists the JWKS. Blocking.
    pub fn refresh_jwks(&self, store: &Store) -> Result<usize, UpstreamError> {
        let doc = self
            .client
            .get_json::<serde_json::Value>(&self.endpoints().jwks_uri)?;
        let jwks = Jwks::parse(&doc);
        if jwks.is_empty() {
            return Err(Unavailable::new(
                UnavailableKind::Garbage,
                "the JWKS holds no RSA signing key",
            )
            .into());
        }
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        if let Err(e) = store.write(|w| w.put_kv(&format!("{}/jwks", self.kv_prefix), &bytes)) {
            log::warn!("cannot persist the JWKS: {e}");
        }
        let n = jwks.len();
        if let Ok(mut slot) = self.jwks.write() {
            *slot = jwks;
        }
        Ok(n)
    }

    /// Verifies an access token with the cached JWKS; an unknown kid refetches the JWKS once.
    /// Blocking (it may fetch).
    pub fn verify(
        &self,
        store: &Store,
        metrics: &Metrics,
        token: &str,
    ) -> Result<AccessClaims, VerifyError> {
        let issuer = self.endpoints().issuer;
        let first = self
            .jwks
            .read()
            .map(|j| j.verify(token, &issuer))
            .unwrap_or(Err(VerifyError::UnknownKid(None)));
        match first {
            Err(VerifyError::UnknownKid(kid)) => {
                metrics.jwks("miss");
                match self.refresh_jwks(store) {
                    Ok(_) => self
                        .jwks
                        .read()
                        .map(|j| j.verify(token, &issuer))
                        .unwrap_or(Err(VerifyError::UnknownKid(kid))),
                    _ => Err(VerifyError::UnknownKid(kid)),
                }
            }
            other => {
                metrics.jwks("hit");
                other
            }
        }
    }

    /// Claims of a token just received from the token endpoint: verified when the JWKS can be
    /// had, else read from the authenticated TLS channel's answer (OIDC Core §3.1.3.7).
    pub fn claims_from_token_endpoint(
        &self,
        store: &Store,
        metrics: &Metrics,
        token: &str,
    ) -> Result<AccessClaims, VerifyError> {
        match self.verify(store, metrics, token) {
            Ok(c) => Ok(c),
            Err(VerifyError::UnknownKid(_)) => token::claims_unverified(token),
            Err(e) => Err(e),
        }
    }
}

/// What the admin API (sync, pull, provisioning) last met that an operator must fix: a refusal
/// (a missing realm-management role), a 5xx or an answer in an unexpected shape. Cleared by
/// the next admin call that succeeds. Never read by the login side.
#[derive(Debug, Default)]
pub struct AdminHealth {
    problem: Mutex<Option<AdminProblem>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminProblem {
    pub detail: String,
    /// Unix seconds (the appliance clock) when this problem was first seen.
    pub since: u64,
}

impl AdminHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<AdminProblem>> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn problem(&self) -> Option<AdminProblem> {
        self.lock().clone()
    }

    /// Records a problem; returns true when it is new (not the one already recorded).
    fn set(&self, detail: &str, now: u64) -> bool {
        let mut slot = self.lock();
        match slot.as_mut() {
            Some(p) if p.detail == detail => false,
            _ => {
                *slot = Some(AdminProblem {
                    detail: detail.to_owned(),
                    since: now,
                });
                true
            }
        }
    }

    fn clear(&self) -> bool {
        self.lock().take().is_some()
    }
}

/// The whole tier: one breaker and health state for the Keycloak server, a client per tenant.
#[derive(Debug)]
pub struct Keycloak {
    default: Arc<Tier>,
    tenants: HashMap<String, Arc<Tier>>,
    pub breaker: Breaker,
    pub health: Health,
    /// The service account's admin API token.
    pub admin_tokens: admin::TokenCache,
    /// The admin side's own health (design rule 9): never feeds the breaker or the mode.
    pub admin_health: AdminHealth,
    /// Wakes the health monitor when a call finds Keycloak unreachable before the monitor
    /// did, so the monitor's quick retries (not its long interval) notice the return.
    pub monitor_wakeup: tokio::sync::Notify,
}

impl Keycloak {
    /// Builds the tier from `[keycloak]` and `[tenants.*]`; `None` when no server is configured.
    pub fn from_config(
        config: &Config,
        store: &Store,
        file: &str,
    ) -> Result<Option<Keycloak>, ConfigError> {
        let k = &config.keycloak;
        let Some(server) = k.server.clone() else {
            return Ok(None);
        };
        let r = &k.resilience;
        let ca_pem = match &k.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| ConfigError {
                file: file.into(),
                key: Some("keycloak.ca_file".into()),
                message: format!("cannot read {}: {e}", p.display()),
            })?),
            None => None,
        };
        let settings = |realm: &str, client_id: &str, secret: Secret| ClientSettings {
            server: server.trim_end_matches('/').to_owned(),
            realm: realm.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: secret,
            health_url: k.health_url.clone(),
            ca_pem: ca_pem.clone(),
            proxy: k.proxy.clone(),
            request_timeout: r.request_timeout.0,
            health_timeout: r.health_check_timeout.0,
        };
        let bad = |key: &str, message: String| ConfigError {
            file: file.into(),
            key: Some(key.into()),
            message,
        };
        let realm = k.realm.clone().unwrap_or_default();
        let client_id = k.client_id.clone().unwrap_or_default();
        let secret = read_secret(
            k.client_secret_file.as_deref(),
            "keycloak.client_secret_file",
            file,
        )?;
        let default = Tier::new(settings(&realm, &client_id, secret.clone()), store)
            .map_err(|m| bad("keycloak", m))?;
        let mut tenants = HashMap::new();
        for (name, t) in &config.tenants {
            let key = format!("tenants.{name}.client_secret_file");
            let secret = match &t.client_secret_file {
                Some(p) => read_secret(Some(p), &key, file)?,
                None => secret.clone(),
            };
            let tier = Tier::new(
                settings(
                    t.realm.as_deref().unwrap_or(&realm),
                    t.client_id.as_deref().unwrap_or(&client_id),
                    secret,
                ),
                store,
            )
            .map_err(|m| bad(&format!("tenants.{name}"), m))?;
            tenants.insert(name.clone(), Arc::new(tier));
        }
        Ok(Some(Keycloak {
            default: Arc::new(default),
            tenants,
            breaker: Breaker::new(BreakerConfig {
                failure_threshold: r.failure_threshold,
                cooldown: r.cooldown.0,
                half_open_timeout: r.half_open_timeout.0,
            }),
            health: Health::default(),
            admin_tokens: admin::TokenCache::default(),
            admin_health: AdminHealth::default(),
            monitor_wakeup: tokio::sync::Notify::new(),
        }))
    }

    pub fn tier(&self, tenant: &Tenant) -> Arc<Tier> {
        self.tenants
            .get(tenant.as_str())
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }

    pub fn tiers(&self) -> impl Iterator<Item = &Arc<Tier>> {
        std::iter::once(&self.default).chain(self.tenants.values())
    }

    pub fn status(&self) -> KeycloakStatus {
        self.health.status(&self.breaker.view(Instant::now()))
    }

    /// Makes one admin-API call on the blocking pool (design rule 9). No call is made while the
    /// circuit is open (the login side found Keycloak unreachable), but the outcome never counts
    /// against the breaker, the health state or the mode: an admin refusal, 5xx or odd answer is
    /// recorded in [`AdminHealth`] (an alert); a transport failure only wakes the monitor, whose
    /// probe decides. `kind` labels the metrics; `now` dates a new problem.
    pub async fn admin_call<T: Send + 'static>(
        &self,
        metrics: &Metrics,
        kind: &'static str,
        now: u64,
        f: impl FnOnce() -> Result<T, UpstreamError> + Send + 'static,
    ) -> Result<T, UpstreamError> {
        if self.breaker.view(Instant::now()).state == CircuitState::Open {
            metrics.keycloak_call(kind, "circuit_open", None);
            return Err(UpstreamError::Unavailable(Unavailable::new(
                UnavailableKind::CircuitOpen,
                "the circuit breaker is open",
            )));
        }
        let started = Instant::now();
        let out = Self::run_blocking(f).await;
        metrics.keycloak_call(kind, out_label(&out), Some(started.elapsed()));
        match &out {
            Ok(_) | Err(UpstreamError::Rejected(_)) => {
                if self.admin_health.clear() {
                    log::info!("the Keycloak admin API answers as expected again");
                }
            }
            Err(UpstreamError::Unavailable(u)) => match u.kind {
                UnavailableKind::Misconfigured
                | UnavailableKind::Garbage
                | UnavailableKind::Status => {
                    if self.admin_health.set(&u.detail, now) {
                        log::warn!(
                            "Keycloak admin API ({kind}): {u}; logins are not affected, queued changes and the pull wait"
                        );
                    }
                }
                UnavailableKind::CircuitOpen => {}
                UnavailableKind::Connect | UnavailableKind::Timeout | UnavailableKind::Tls => {
                    if !self.health.known_unreachable() {
                        self.monitor_wakeup.notify_one();
                    }
                }
            },
        }
        out
    }

    async fn run_blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, UpstreamError> + Send + 'static,
    ) -> Result<T, UpstreamError> {
        match tokio::task::spawn_blocking(f).await {
            Ok(o) => o,
            Err(e) => Err(UpstreamError::Unavailable(Unavailable::new(
                UnavailableKind::Connect,
                format!("call aborted: {e}"),
            ))),
        }
    }

    /// Makes one login-side call through the breaker on the blocking pool. `kind` labels the
    /// metrics.
    pub async fn call<T: Send + 'static>(
        &self,
        metrics: &Metrics,
        kind: &'static str,
        f: impl FnOnce() -> Result<T, UpstreamError> + Send + 'static,
    ) -> Result<T, UpstreamError> {
        let admission = self.breaker.admit(Instant::now());
        if admission == Admission::Refused {
            metrics.keycloak_call(kind, "circuit_open", None);
            return Err(UpstreamError::Unavailable(Unavailable::new(
                UnavailableKind::CircuitOpen,
                "the circuit breaker is open",
            )));
        }
        let started = Instant::now();
        let out = Self::run_blocking(f).await;
        metrics.keycloak_call(kind, out_label(&out), Some(started.elapsed()));
        match &out {
            Ok(_) | Err(UpstreamError::Rejected(_)) => {
                self.breaker.success();
                self.health.set_misconfigured(None);
            }
            Err(UpstreamError::Unavailable(u)) if u.kind.is_outage() => {
                if self.breaker.failure(Instant::now()) {
                    log::warn!("circuit breaker opened: Keycloak unreachable ({u})");
                }
                if !self.health.known_unreachable() {
                    self.monitor_wakeup.notify_one();
                }
            }
            Err(UpstreamError::Unavailable(u)) => {
                if u.kind == UnavailableKind::Misconfigured {
                    self.health.set_misconfigured(Some(u.detail.clone()));
                }
                // An answer came back, so the server is reachable.
                self.breaker.success();
            }
        }
        out
    }
}

fn out_label<T>(out: &Result<T, UpstreamError>) -> &'static str {
    match out {
        Ok(_) => "ok",
        Err(UpstreamError::Rejected(_)) => "rejected",
        Err(UpstreamError::Unavailable(u)) => u.kind.as_str(),
    }
}
