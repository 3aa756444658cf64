//! One realm and client: what a tenant logs in against. It keeps the discovery document and
//! the JWKS (persisted in the store, so a cold start during an outage has them: design rule 5)
//! and answers the login side's protocol calls ([`LoginApi`]). Blocking; [`super::Upstream`]
//! runs these calls on the blocking pool, through its breaker.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::crypto::Secret;
use crate::domain::Tenant;
use crate::keycloak::client::{ClientSettings, Endpoints, KeycloakClient, TokenSet};
use crate::keycloak::outcome::{Unavailable, UnavailableKind, UpstreamError};
use crate::keycloak::token::{self, AccessClaims, BearerRules, Jwks, VerifyError};
use crate::metrics::Metrics;
use crate::store::Store;

/// What a user's access token says about them at this site (design rule 9: the one source of a
/// Keycloak user's roles and groups).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// Every client role in the token, as `client:role`.
    pub client_roles: Vec<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// The login side's calls to one realm, blocking. [`Realm`] asks Keycloak; in-process tests
/// give [`super::Upstream::scripted`] a script instead.
pub trait LoginApi: Send + Sync + 'static {
    /// The resource owner password grant: the user's password, checked by Keycloak.
    fn password_grant(&self, username: &str, password: &Secret) -> Result<TokenSet, UpstreamError>;
    fn refresh_grant(&self, refresh_token: &str) -> Result<TokenSet, UpstreamError>;
    /// Ends the Keycloak session behind `refresh_token`.
    fn end_session(&self, refresh_token: &str) -> Result<(), UpstreamError>;
    /// The monitor's health probe.
    fn probe(&self) -> Result<(), UpstreamError>;
    /// Roles and groups from an access token just received from the token endpoint.
    fn identity(&self, access_token: &str) -> Result<Identity, VerifyError>;
}

/// At most one JWKS refetch per interval for tokens with an unknown `kid`: a stranger can put
/// any kid in a bearer, and each would otherwise cost a call to Keycloak.
#[derive(Debug)]
pub struct RefetchGate {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl RefetchGate {
    pub fn new(interval: Duration) -> Self {
        RefetchGate {
            interval,
            last: Mutex::new(None),
        }
    }

    /// May an unknown kid refetch now? A yes is taken: the next one waits out the interval.
    pub fn claim(&self, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[derive(Debug)]
pub struct Realm {
    pub client: KeycloakClient,
    endpoints: RwLock<Option<Endpoints>>,
    jwks: RwLock<Jwks>,
    /// Unknown-kid refetches, shared by the login side and presented bearers.
    refetch: RefetchGate,
    kv_prefix: String,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

/// Checks the files `[keycloak]` and `[tenants.*]` name (the secrets, their modes) before the
/// data dir is touched, so that a config error never creates a database on its way out.
pub fn preflight(config: &crate::config::Config, file: &str) -> Result<(), ConfigError> {
    let k = &config.keycloak;
    if k.server.is_none() {
        return Ok(());
    }
    read_secret(
        k.client_secret_file.as_deref(),
        "keycloak.client_secret_file",
        file,
    )?;
    for (name, t) in &config.tenants {
        if let Some(p) = &t.client_secret_file {
            read_secret(Some(p), &format!("tenants.{name}.client_secret_file"), file)?;
        }
    }
    Ok(())
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
    crate::crypto::check_private(path).map_err(|why| err(format!("{} {why}", path.display())))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(err(format!("{} is empty", path.display())));
    }
    Ok(Secret::new(secret))
}

/// The client settings of every realm `[keycloak]` and `[tenants.*]` name: the default first
/// (`None`), then each tenant's. Empty when no Keycloak is configured.
pub fn settings(config: &Config) -> Result<Vec<(Option<String>, ClientSettings)>, ConfigError> {
    let k = &config.keycloak;
    let file = config.origin.as_str();
    let Some(server) = k.server.clone() else {
        return Ok(Vec::new());
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
    let realm = k.realm.clone().unwrap_or_default();
    let client_id = k.client_id.clone().unwrap_or_default();
    let secret = read_secret(
        k.client_secret_file.as_deref(),
        "keycloak.client_secret_file",
        file,
    )?;
    let mut out = vec![(None, settings(&realm, &client_id, secret.clone()))];
    for (name, t) in &config.tenants {
        let key = format!("tenants.{name}.client_secret_file");
        let secret = match &t.client_secret_file {
            Some(p) => read_secret(Some(p), &key, file)?,
            None => secret.clone(),
        };
        out.push((
            Some(name.clone()),
            settings(
                t.realm.as_deref().unwrap_or(&realm),
                t.client_id.as_deref().unwrap_or(&client_id),
                secret,
            ),
        ));
    }
    Ok(out)
}

/// The client of `tenant`'s realm (the default realm for a tenant without its own), for
/// `diagnose`. `None` when no Keycloak is configured.
pub fn client_for(config: &Config, tenant: &Tenant) -> Result<Option<KeycloakClient>, ConfigError> {
    let all = settings(config)?;
    let chosen = all
        .iter()
        .find(|(name, _)| name.as_deref() == Some(tenant.as_str()))
        .or_else(|| all.first());
    chosen
        .map(|(name, s)| {
            KeycloakClient::new(s.clone()).map_err(|message| ConfigError {
                file: config.origin.clone(),
                key: Some(
                    name.as_ref()
                        .map_or("keycloak".into(), |n| format!("tenants.{n}")),
                ),
                message,
            })
        })
        .transpose()
}

impl Realm {
    pub(super) fn new(
        settings: ClientSettings,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        refetch_interval: Duration,
    ) -> Result<Self, String> {
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
        Ok(Realm {
            client,
            endpoints: RwLock::new(endpoints),
            jwks: RwLock::new(jwks),
            refetch: RefetchGate::new(refetch_interval),
            kv_prefix,
            store,
            metrics,
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
    pub fn refresh_discovery(&self) -> Result<(), UpstreamError> {
        let ep = self
            .client
            .get_json::<Endpoints>(&self.client.discovery_url())?;
        let bytes = serde_json::to_vec(&ep).unwrap_or_default();
        let key = format!("{}/discovery", self.kv_prefix);
        if let Err(e) = self.store.write(|w| w.put_kv(&key, &bytes)) {
            log::warn!("cannot persist the discovery document: {e}");
        }
        if let Ok(mut slot) = self.endpoints.write() {
            *slot = Some(ep);
        }
        Ok(())
    }

    /// Fetches and persists the JWKS. Blocking.
    pub fn refresh_jwks(&self) -> Result<usize, UpstreamError> {
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
        let key = format!("{}/jwks", self.kv_prefix);
        // Unchanged (a refetch for a made-up kid): no write, so a bearer never makes one
        // unless Keycloak's keys really changed (design rule 8).
        let stored = self.store.read(|r| r.kv(&key)).ok().flatten();
        if stored.as_deref() != Some(&bytes[..])
            && let Err(e) = self.store.write(|w| w.put_kv(&key, &bytes))
        {
            log::warn!("cannot persist the JWKS: {e}");
        }
        let n = jwks.len();
        if let Ok(mut slot) = self.jwks.write() {
            *slot = jwks;
        }
        Ok(n)
    }

    /// Verifies an access token just received from the token endpoint with the cached JWKS; an
    /// unknown kid refetches the JWKS once. Blocking (it may fetch).
    pub fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let issuer = self.endpoints().issuer;
        let first = self
            .jwks
            .read()
            .map(|j| j.verify(token, &issuer))
            .unwrap_or(Err(VerifyError::UnknownKid(None)));
        match first {
            Err(VerifyError::UnknownKid(kid)) => {
                self.metrics.jwks("miss");
                // Not through the bearer refetch gate: this token came from Keycloak's token
                // endpoint over the authenticated channel, so its kid is one Keycloak signs
                // with now (a rotation), and logins are regulated and cost argon2. Sharing the
                // gate let a login just before the monitor's first fetch hold a rotation back
                // for a whole interval.
                match self.refresh_jwks() {
                    Ok(_) => self
                        .jwks
                        .read()
                        .map(|j| j.verify(token, &issuer))
                        .unwrap_or(Err(VerifyError::UnknownKid(kid))),
                    _ => Err(VerifyError::UnknownKid(kid)),
                }
            }
            other => {
                self.metrics.jwks("hit");
                other
            }
        }
    }

    /// The realm's issuer: discovered, else Keycloak's layout.
    pub fn issuer(&self) -> String {
        self.endpoints().issuer
    }

    pub fn client_id(&self) -> &str {
        &self.client.settings().client_id
    }

    /// May a token with an unknown kid refetch the JWKS now ([`RefetchGate`])?
    pub fn claim_refetch(&self) -> bool {
        self.refetch.claim(Instant::now())
    }

    /// Verifies a presented access token against the stored JWKS only (no call): see
    /// [`Jwks::verify_access`]. `now` is the appliance's clock.
    pub fn verify_access(
        &self,
        token: &str,
        rules: &BearerRules,
        now: u64,
    ) -> Result<AccessClaims, VerifyError> {
        let issuer = self.issuer();
        self.jwks
            .read()
            .map(|j| j.verify_access(token, &issuer, rules, now))
            .unwrap_or(Err(VerifyError::UnknownKid(None)))
    }

    /// RFC 7662: is this access token still active? Blocking.
    pub fn introspect(&self, token: &str) -> Result<bool, UpstreamError> {
        self.client.introspect(&self.endpoints(), token)
    }

    /// Claims of a token just received from the token endpoint: verified when the JWKS can be
    /// had, else read from the authenticated TLS channel's answer (OIDC Core §3.1.3.7).
    pub fn claims_from_token_endpoint(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        match self.verify(token) {
            Ok(c) => Ok(c),
            Err(VerifyError::UnknownKid(_)) => token::claims_unverified(token),
            Err(e) => Err(e),
        }
    }
}

impl LoginApi for Realm {
    fn password_grant(&self, username: &str, password: &Secret) -> Result<TokenSet, UpstreamError> {
        self.client
            .password_grant(&self.endpoints(), username, password)
    }

    fn refresh_grant(&self, refresh_token: &str) -> Result<TokenSet, UpstreamError> {
        self.client.refresh_grant(&self.endpoints(), refresh_token)
    }

    fn end_session(&self, refresh_token: &str) -> Result<(), UpstreamError> {
        self.client.logout(&self.endpoints(), refresh_token)
    }

    fn probe(&self) -> Result<(), UpstreamError> {
        self.client.probe()
    }

    fn identity(&self, access_token: &str) -> Result<Identity, VerifyError> {
        let c = self.claims_from_token_endpoint(access_token)?;
        Ok(Identity {
            roles: c.roles(&self.client.settings().client_id),
            groups: c.group_list(),
            client_roles: c.client_roles(),
            name: c.name.clone(),
            email: c.email.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refetch_gate_opens_once_per_interval() {
        let gate = RefetchGate::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(gate.claim(t0), "the first unknown kid refetches");
        assert!(!gate.claim(t0), "a second at once does not");
        assert!(!gate.claim(t0 + Duration::from_secs(59)));
        assert!(
            gate.claim(t0 + Duration::from_secs(60)),
            "after the interval"
        );
        assert!(!gate.claim(t0 + Duration::from_secs(61)));
        // A clock read out of order (another thread) never panics or reopens the gate.
        assert!(!gate.claim(t0));
    }
}
