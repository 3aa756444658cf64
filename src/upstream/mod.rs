//! Keycloak as a stateful dependency: the one component that knows whether Keycloak can be
//! asked. It owns the per-tenant realm clients ([`realm`]), the circuit breaker ([`breaker`]),
//! the health state and its background monitor ([`monitor`]), the admin side's own health and
//! the service account's token. Every call returns `Result<T, UpstreamError>`: `Ok`,
//! `Rejected` (Keycloak said no) or `Unavailable` (it could not be asked), design rule 1.
//! [`Upstream::status`] is the one answer to "is Keycloak there" (keycloak_status and mode).
//!
//! * Login-side calls (password and refresh grants, logout) go through the breaker: it decides
//!   whether to call at all, the call runs on the blocking pool bounded by `request_timeout`,
//!   and its outcome feeds the breaker (only outages count) and the metrics.
//! * Presented Keycloak access tokens ([`Upstream::verify_bearer`]) are verified against the
//!   stored JWKS of the realm whose issuer they name, without a call; an unknown `kid`
//!   refetches the JWKS through the breaker, at most once per `bearer.jwks_refetch_interval`
//!   per realm and only while Keycloak is not known to be unreachable. RFC 7662 introspection
//!   ([`Upstream::introspect`]) is a login-side call: it asks the same server the same kind of
//!   question as a refresh grant ("is this user's session still good"), so its outages feed the
//!   breaker, and an open circuit makes every bearer fall back to the offline checks at once
//!   instead of each request waiting out `request_timeout`.
//! * Admin-side calls (sync replay, pull, provisioning) go through [`Upstream::admin`] (design
//!   rule 9): they are not made while the circuit is open, but their outcome never feeds the
//!   breaker, the health state or the mode. A refusal or an odd answer of the admin API is
//!   recorded in [`AdminHealth`], which raises its own alert naming the endpoint and role.
//!
//! The protocol code it drives is stateless and lives in [`crate::keycloak`].

pub mod breaker;
pub mod monitor;
pub mod realm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::keycloak::outcome::{Rejection, Unavailable, UnavailableKind, UpstreamError};
pub use monitor::{HealthView, KeycloakStatus, Mode};
pub use realm::{Identity, LoginApi, Realm};

use crate::clock::Clock;
use crate::config::{Config, ConfigError, ResilienceConfig};
use crate::crypto::Secret;
use crate::domain::Tenant;
use crate::keycloak::admin::{Admin, TokenCache};
use crate::keycloak::client::TokenSet;
use crate::keycloak::token::{self, AccessClaims, BearerRules, VerifyError};
use crate::metrics::Metrics;
use crate::store::Store;
use breaker::{Admission, Breaker, BreakerConfig, BreakerView, CircuitState};
use monitor::Health;

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

/// The narrow things the upstream uses.
#[derive(Debug, Clone)]
pub struct UpstreamDeps {
    pub store: Arc<Store>,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    /// Notified when the monitor sees Keycloak come back (it wakes the sync worker).
    pub recovered: Arc<tokio::sync::Notify>,
}

/// How presented Keycloak access tokens are judged, from `[bearer]`.
#[derive(Debug, Clone, Default)]
pub struct BearerSettings {
    pub rules: BearerRules,
    /// Clients a token must be issued to or for; empty: the tenant's own client_id.
    pub audiences: Vec<String>,
}

impl BearerSettings {
    pub fn from_config(config: &Config) -> Self {
        let b = &config.bearer;
        BearerSettings {
            rules: BearerRules {
                algorithms: b
                    .algorithms
                    .iter()
                    .filter_map(|a| token::algorithm_named(a))
                    .collect(),
                leeway: b.leeway.as_secs(),
            },
            audiences: b.audiences.clone(),
        }
    }
}

/// A presented access token that verified, and the tenant whose realm and client it is for.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub tenant: Tenant,
    /// The tenant's client (its roles are the token's `roles`).
    pub client_id: String,
    pub claims: AccessClaims,
}

enum Realms {
    /// No Keycloak is configured: local users only, keycloak_status `disabled`.
    None,
    Keycloak {
        default: Arc<Realm>,
        tenants: HashMap<String, Arc<Realm>>,
    },
    /// In-process tests: the login side answers from a script; there is no admin side.
    Scripted(Arc<dyn LoginApi>),
}

/// What the status report shows of the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamView {
    pub status: KeycloakStatus,
    pub health: HealthView,
    pub breaker: BreakerView,
    pub admin_problem: Option<AdminProblem>,
}

pub struct Upstream {
    realms: Realms,
    bearer: BearerSettings,
    breaker: Breaker,
    health: Health,
    /// The service account's admin API token.
    admin_tokens: Arc<TokenCache>,
    /// The admin side's own health (design rule 9): never feeds the breaker or the mode.
    admin_health: AdminHealth,
    /// Wakes the health monitor when a call finds Keycloak unreachable before the monitor
    /// did, so the monitor's quick retries (not its long interval) notice the return.
    monitor_wakeup: tokio::sync::Notify,
    recovered: Arc<tokio::sync::Notify>,
    health_interval: Duration,
    clock: Arc<Clock>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the upstream from `[keycloak]` and `[tenants.*]`; without a server it is
    /// disabled (local users only).
    pub fn from_config(config: &Config, deps: UpstreamDeps) -> Result<Self, ConfigError> {
        let mut default = None;
        let mut tenants = HashMap::new();
        for (name, settings) in realm::settings(config)? {
            let realm = Realm::new(
                settings,
                deps.store.clone(),
                deps.metrics.clone(),
                config.bearer.jwks_refetch_interval.0,
            )
            .map_err(|message| ConfigError {
                file: config.origin.clone(),
                key: Some(
                    name.as_ref()
                        .map_or("keycloak".into(), |n| format!("tenants.{n}")),
                ),
                message,
            })?;
            match name {
                None => default = Some(Arc::new(realm)),
                Some(n) => {
                    tenants.insert(n, Arc::new(realm));
                }
            }
        }
        let realms = match default {
            Some(default) => Realms::Keycloak { default, tenants },
            None => Realms::None,
        };
        let mut upstream = Self::new(realms, &config.keycloak.resilience, deps);
        upstream.bearer = BearerSettings::from_config(config);
        Ok(upstream)
    }

    /// An upstream whose login side answers from `script` (in-process tests of the login
    /// decisions), with the real breaker and health state.
    pub fn scripted(
        script: Arc<dyn LoginApi>,
        resilience: &ResilienceConfig,
        deps: UpstreamDeps,
    ) -> Self {
        Self::new(Realms::Scripted(script), resilience, deps)
    }

    fn new(realms: Realms, r: &ResilienceConfig, deps: UpstreamDeps) -> Self {
        Upstream {
            realms,
            bearer: BearerSettings::default(),
            breaker: Breaker::new(BreakerConfig {
                failure_threshold: r.failure_threshold,
                cooldown: r.cooldown.0,
                half_open_timeout: r.half_open_timeout.0,
            }),
            health: Health::default(),
            admin_tokens: Arc::default(),
            admin_health: AdminHealth::default(),
            monitor_wakeup: tokio::sync::Notify::new(),
            recovered: deps.recovered,
            health_interval: r.health_check_interval.0,
            clock: deps.clock,
            metrics: deps.metrics,
        }
    }

    /// Is a Keycloak configured at all?
    pub fn enabled(&self) -> bool {
        !matches!(self.realms, Realms::None)
    }

    /// keycloak_status (design §4), from the monitor's probes and the breaker; its
    /// [`KeycloakStatus::mode`] is the appliance's mode.
    pub fn status(&self) -> KeycloakStatus {
        if !self.enabled() {
            return KeycloakStatus::Disabled;
        }
        self.health.status(&self.breaker.view(Instant::now()))
    }

    /// The health, breaker and admin side as the status report shows them; `None` when no
    /// Keycloak is configured.
    pub fn view(&self) -> Option<UpstreamView> {
        if !self.enabled() {
            return None;
        }
        let breaker = self.breaker.view(Instant::now());
        Some(UpstreamView {
            status: self.health.status(&breaker),
            health: self.health.view(),
            breaker,
            admin_problem: self.admin_health.problem(),
        })
    }

    fn login_api(&self, tenant: &Tenant) -> Option<Arc<dyn LoginApi>> {
        match &self.realms {
            Realms::None => None,
            Realms::Keycloak { .. } => self.realm(tenant).map(|r| r as Arc<dyn LoginApi>),
            Realms::Scripted(s) => Some(s.clone()),
        }
    }

    fn realm(&self, tenant: &Tenant) -> Option<Arc<Realm>> {
        match &self.realms {
            Realms::Keycloak { default, tenants } => Some(
                tenants
                    .get(tenant.as_str())
                    .cloned()
                    .unwrap_or_else(|| default.clone()),
            ),
            _ => None,
        }
    }

    fn realms(&self) -> Vec<Arc<Realm>> {
        match &self.realms {
            Realms::Keycloak { default, tenants } => std::iter::once(default)
                .chain(tenants.values())
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Adopts Keycloak's clock from the `iat` of tokens it has just issued (design rule 7).
    fn observe_time(&self, tokens: &TokenSet) {
        if let Some(iat) = crate::keycloak::token::issued_at(&tokens.access_token) {
            self.clock.observe_keycloak(iat);
        }
    }

    /// The password grant: does Keycloak accept this user's password now?
    pub async fn password_grant(
        &self,
        tenant: &Tenant,
        username: &str,
        password: &Secret,
    ) -> Result<TokenSet, UpstreamError> {
        let api = self.login_api(tenant).ok_or_else(not_configured)?;
        let (u, p) = (username.to_owned(), password.clone());
        let tokens = self
            .call("password_grant", move || api.password_grant(&u, &p))
            .await?;
        self.observe_time(&tokens);
        Ok(tokens)
    }

    /// Renews a session's tokens.
    pub async fn refresh_grant(
        &self,
        tenant: &Tenant,
        refresh_token: String,
    ) -> Result<TokenSet, UpstreamError> {
        let api = self.login_api(tenant).ok_or_else(not_configured)?;
        let tokens = self
            .call("refresh_grant", move || api.refresh_grant(&refresh_token))
            .await?;
        self.observe_time(&tokens);
        Ok(tokens)
    }

    /// Ends the Keycloak session behind a site session.
    pub async fn end_session(
        &self,
        tenant: &Tenant,
        refresh_token: String,
    ) -> Result<(), UpstreamError> {
        let api = self.login_api(tenant).ok_or_else(not_configured)?;
        self.call("logout", move || api.end_session(&refresh_token))
            .await
    }

    /// Roles and groups from an access token just received from Keycloak (a login or a
    /// refresh): the one source of a Keycloak user's roles and groups (design rule 9). `None`
    /// when the token cannot be read, and the stored roles stay.
    pub async fn identity(&self, tenant: &Tenant, tokens: &TokenSet) -> Option<Identity> {
        let api = self.login_api(tenant)?;
        let access = tokens.access_token.clone();
        let read = tokio::task::spawn_blocking(move || api.identity(&access)).await;
        match read {
            Ok(Ok(identity)) => Some(identity),
            Ok(Err(e)) => {
                log::warn!(
                    "Keycloak's access token for a user of {tenant} could not be read ({e}); keeping the stored roles"
                );
                None
            }
            Err(e) => {
                log::warn!(
                    "reading Keycloak's access token failed ({e}); keeping the stored roles"
                );
                None
            }
        }
    }

    /// Verifies a presented Keycloak access token: the realm is the one whose issuer equals the
    /// token's `iss` (read unverified only to choose it), then everything is checked against
    /// that realm's stored keys and exact issuer ([`Realm::verify_access`]) on the appliance's
    /// clock, and the token must be issued to or for an accepted client. Among tenants sharing
    /// the realm, the one whose client the token names wins (else the first, default first).
    /// An unknown kid refetches the JWKS at most once per interval, while Keycloak is not known
    /// to be unreachable and the breaker admits the call; otherwise it is refused.
    pub async fn verify_bearer(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let iss = token::peek_issuer(token).ok_or(VerifyError::Issuer)?;
        let candidates: Vec<(Tenant, Arc<Realm>)> = self
            .tenant_realms()
            .into_iter()
            .filter(|(_, r)| r.issuer() == iss)
            .collect();
        let Some((_, realm)) = candidates.first().cloned() else {
            return Err(VerifyError::Issuer);
        };
        let now = self.clock.now();
        let rules = &self.bearer.rules;
        let claims = match realm.verify_access(token, rules, now) {
            Err(VerifyError::UnknownKid(kid)) => {
                self.metrics.jwks("miss");
                if self.health.known_unreachable() || !realm.claim_refetch() {
                    return Err(VerifyError::UnknownKid(kid));
                }
                let fetcher = realm.clone();
                match self.call("jwks", move || fetcher.refresh_jwks()).await {
                    Ok(_) => realm.verify_access(token, rules, now),
                    Err(e) => {
                        log::info!("a token with an unknown key id: the JWKS refetch failed ({e})");
                        Err(VerifyError::UnknownKid(kid))
                    }
                }
            }
            other => {
                self.metrics.jwks("hit");
                other
            }
        }?;
        let (tenant, realm) = candidates
            .iter()
            .find(|(_, r)| claims.issued_to(&[r.client_id().to_owned()]))
            .unwrap_or(&candidates[0])
            .clone();
        let client_id = realm.client_id().to_owned();
        let accepted = if self.bearer.audiences.is_empty() {
            std::slice::from_ref(&client_id)
        } else {
            &self.bearer.audiences[..]
        };
        if !claims.issued_to(accepted) {
            return Err(VerifyError::Audience);
        }
        Ok(VerifiedToken {
            tenant,
            client_id,
            claims,
        })
    }

    /// RFC 7662 introspection of a presented access token by `tenant`'s client: a login-side
    /// call through the breaker (see the module doc). `Ok(false)`: Keycloak says it is no
    /// longer active.
    pub async fn introspect(&self, tenant: &Tenant, token: &str) -> Result<bool, UpstreamError> {
        let realm = self.realm(tenant).ok_or_else(not_configured)?;
        let token = token.to_owned();
        self.call("introspect", move || realm.introspect(&token))
            .await
    }

    /// Every realm with the tenant it serves: the default first.
    fn tenant_realms(&self) -> Vec<(Tenant, Arc<Realm>)> {
        match &self.realms {
            Realms::Keycloak { default, tenants } => {
                let mut named: Vec<(Tenant, Arc<Realm>)> = tenants
                    .iter()
                    .filter_map(|(n, r)| Tenant::parse(n).ok().map(|t| (t, r.clone())))
                    .collect();
                named.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                let mut out = vec![(Tenant::default_tenant(), default.clone())];
                out.extend(named);
                out
            }
            _ => Vec::new(),
        }
    }

    /// Makes one admin-API call for `tenant`'s realm on the blocking pool (design rule 9). No
    /// call is made while the circuit is open (the login side found Keycloak unreachable), but
    /// the outcome never counts against the breaker, the health state or the mode: an admin
    /// refusal, 5xx or odd answer is recorded in [`AdminHealth`] (an alert); a transport
    /// failure only wakes the monitor, whose probe decides. `kind` labels the metrics.
    pub async fn admin<T: Send + 'static>(
        &self,
        kind: &'static str,
        tenant: &Tenant,
        f: impl FnOnce(&Admin) -> Result<T, UpstreamError> + Send + 'static,
    ) -> Result<T, UpstreamError> {
        let realm = self.realm(tenant).ok_or_else(not_configured)?;
        if self.breaker.view(Instant::now()).state == CircuitState::Open {
            self.metrics.keycloak_call(kind, "circuit_open", None);
            return Err(circuit_open());
        }
        let tokens = self.admin_tokens.clone();
        let started = Instant::now();
        let out = run_blocking(move || {
            let admin = Admin::new(&realm.client, realm.endpoints(), &tokens);
            f(&admin)
        })
        .await;
        self.metrics
            .keycloak_call(kind, label(&out), Some(started.elapsed()));
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
                    if self.admin_health.set(&u.detail, self.clock.now()) {
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

    /// Makes one login-side call through the breaker on the blocking pool. `kind` labels the
    /// metrics.
    async fn call<T: Send + 'static>(
        &self,
        kind: &'static str,
        f: impl FnOnce() -> Result<T, UpstreamError> + Send + 'static,
    ) -> Result<T, UpstreamError> {
        if self.breaker.admit(Instant::now()) == Admission::Refused {
            self.metrics.keycloak_call(kind, "circuit_open", None);
            return Err(circuit_open());
        }
        let started = Instant::now();
        let out = run_blocking(f).await;
        self.metrics
            .keycloak_call(kind, label(&out), Some(started.elapsed()));
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

fn not_configured() -> UpstreamError {
    Unavailable::new(UnavailableKind::Misconfigured, "no Keycloak is configured").into()
}

fn circuit_open() -> UpstreamError {
    Unavailable::new(UnavailableKind::CircuitOpen, "the circuit breaker is open").into()
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UpstreamError> + Send + 'static,
) -> Result<T, UpstreamError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(o) => o,
        Err(e) => {
            Err(Unavailable::new(UnavailableKind::Connect, format!("call aborted: {e}")).into())
        }
    }
}

fn label<T>(out: &Result<T, UpstreamError>) -> &'static str {
    match out {
        Ok(_) => "ok",
        Err(e) => e.label(),
    }
}
