//! Authentication: login, sessions, who a request is ([`principal`]), password changes,
//! account administration, the sealed token cache and the token refresher. [`Auth`] is the
//! service: the composition root builds it from the narrow things it uses (store, clock,
//! hasher, token sealing, policy, upstream, metrics, sync queue); nothing here sees `App`.
//! Everything speaks domain types and returns [`AuthError`], whose code string is written once
//! ([`AuthError::code`]); the HTTP layer adds the status code (`http::error`).

pub mod accounts;
pub mod basic;
pub mod bearer;
pub mod login;
pub mod password;
pub mod principal;
pub mod refresh;
pub mod session;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{AuthOrder, Config};
use crate::crypto::{HashError, Hasher, Secret};
use crate::domain::{AuthMode, Tenant, UserKey, Username};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::policy::regulation::Subjects;
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::users::UserRecord;
use crate::store::{Store, StoreError};
use crate::sync::Queue;
use crate::upstream::Upstream;
use session::Activity;
use tokens::TokenVault;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error(
        "Keycloak wants an action on this account first (for example changing a temporary password); sign in to Keycloak's account console, then try again"
    )]
    AccountSetupRequired,
    #[error("too many failed attempts; try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    #[error("the appliance is busy verifying other logins; try again shortly")]
    Overloaded,
    #[error("{0}")]
    WeakPassword(String),
    #[error(
        "Keycloak is unreachable and this account has not signed in online recently enough to be let in offline"
    )]
    OfflineLoginExpired,
    #[error("Keycloak is unreachable and offline logins are not allowed at this site")]
    OfflineLoginNotAllowed,
    /// The action needs Keycloak and the current mode or policy forbids it.
    #[error("{0}")]
    DegradedModeForbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The error's code (API bodies, metrics labels, access log): written here and nowhere else.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::BadRequest(_) => "bad_request",
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::AccountDisabled => "account_disabled",
            AuthError::AccountSetupRequired => "account_setup_required",
            AuthError::TooManyAttempts { .. } => "too_many_attempts",
            AuthError::Overloaded => "overloaded",
            AuthError::WeakPassword(_) => "weak_password",
            AuthError::OfflineLoginExpired => "offline_login_expired",
            AuthError::OfflineLoginNotAllowed => "offline_login_not_allowed",
            AuthError::DegradedModeForbidden(_) => "degraded_mode_forbidden",
            AuthError::Store(s) if s.is_storage() => "storage_unavailable",
            AuthError::Store(_) | AuthError::Internal(_) => "internal_error",
        }
    }
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded(_) => AuthError::Overloaded,
            HashError::Failed(m) => AuthError::Internal(m),
        }
    }
}

/// Who is asking: recorded in the audit log and used by regulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
}

/// Parses the (tenant?, username) pair of a request body.
pub fn user_key(tenant: Option<&str>, username: &str) -> Result<UserKey, AuthError> {
    let tenant = match tenant {
        None | Some("") => Tenant::default_tenant(),
        Some(t) => Tenant::parse(t).map_err(AuthError::BadRequest)?,
    };
    let username = Username::parse(username).map_err(AuthError::BadRequest)?;
    Ok(UserKey::new(tenant, username))
}

/// Longest password accepted, so a megabyte "password" cannot make argon2 do extra work.
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub fn check_password_input(field: &str, password: &str) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::BadRequest(format!(
            "`{field}` must not be empty"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadRequest(format!(
            "`{field}` is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The settings the auth service reads from `[auth]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub order: AuthOrder,
    pub session_ttl: u64,
    pub session_idle: u64,
    /// `forward_auth.basic_cache_ttl`, seconds.
    pub basic_cache_ttl: u64,
    /// Keycloak access tokens as bearers (`[bearer]`).
    pub bearer: bearer::BearerPolicy,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            order: config.auth.order,
            session_ttl: config.auth.session_ttl.as_secs(),
            session_idle: config.auth.session_idle.as_secs(),
            basic_cache_ttl: config.forward_auth.basic_cache_ttl.as_secs(),
            bearer: bearer::BearerPolicy::from_config(config),
        }
    }
}

/// The parts the auth service is built from.
#[derive(Debug)]
pub struct AuthParts {
    pub store: Arc<Store>,
    pub clock: Arc<Clock>,
    pub hasher: Hasher,
    pub tokens: TokenVault,
    pub policy: Arc<Policy>,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    pub queue: Queue,
    pub settings: Settings,
}

/// The authentication service: logins, sessions, password changes, accounts, the refresher.
#[derive(Debug)]
pub struct Auth {
    store: Arc<Store>,
    clock: Arc<Clock>,
    hasher: Hasher,
    tokens: TokenVault,
    policy: Arc<Policy>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    queue: Queue,
    settings: Settings,
    /// Last use of each session since the last flush (design rule 8).
    activity: Activity,
    /// Basic credentials verified lately (forward-auth).
    basic: basic::BasicCache,
    /// Verified Keycloak access tokens and introspection answers.
    bearer_cache: bearer::TokenCache,
}

impl Auth {
    pub fn new(p: AuthParts) -> Self {
        let basic = basic::BasicCache::new(p.settings.basic_cache_ttl);
        Auth {
            store: p.store,
            clock: p.clock,
            hasher: p.hasher,
            tokens: p.tokens,
            policy: p.policy,
            upstream: p.upstream,
            metrics: p.metrics,
            queue: p.queue,
            bearer_cache: bearer::TokenCache::new(p.settings.bearer.cache_size),
            settings: p.settings,
            activity: Activity::default(),
            basic,
        }
    }

    /// Runs a store write on the blocking pool (a commit waits for fsync).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::store::WriteTx) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T, AuthError> {
        Ok(self.store.write_blocking(f).await?)
    }

    async fn audit_only(&self, row: AuditRecord) -> Result<(), AuthError> {
        self.write(move |w| w.append_audit(&row).map(|_| ())).await
    }

    /// Regulation before any password work or Keycloak call (design §3): reads the user and
    /// the bans on the user and the client IP. A banned attempt is audited and refused.
    async fn admit(&self, a: &Attempt) -> Result<Option<UserRecord>, AuthError> {
        let regulator = &self.policy.regulator;
        let (user, banned) = self
            .store
            .read(|r| Ok((r.user(&a.key)?, regulator.banned(r, &a.subjects, a.now)?)))?;
        if let Some(retry_after) = banned {
            self.audit_only(a.audit("too_many_attempts", None)).await?;
            return Err(AuthError::TooManyAttempts { retry_after });
        }
        Ok(user)
    }

    /// A wrong password: counts a failure against the user and the IP (and the offline
    /// lockout when `offline`), writes the audit row, and says what to answer.
    async fn fail(
        &self,
        a: &Attempt,
        outcome: &str,
        offline: bool,
    ) -> Result<AuthError, AuthError> {
        let (regulator, subjects) = (self.policy.regulator.clone(), a.subjects.clone());
        let (row, now) = (a.audit(outcome, None), a.now);
        let retry = self
            .write(move |w| {
                let retry = regulator.record_failure(w, &subjects, offline, now)?;
                w.append_audit(&row)?;
                Ok(retry)
            })
            .await?;
        let what = match a.event {
            AuditEvent::PasswordChange => "password change",
            _ => "login",
        };
        log::debug!(
            "{what} failed user={} tenant={} outcome={outcome}",
            a.key.username,
            a.key.tenant
        );
        Ok(match retry {
            Some(retry_after) => AuthError::TooManyAttempts { retry_after },
            None => AuthError::InvalidCredentials,
        })
    }
}

/// One attempt at an endpoint that takes a password: who, from where, when, and which
/// regulation counters it touches.
#[derive(Debug, Clone)]
struct Attempt {
    key: UserKey,
    password: Secret,
    client: Client,
    now: u64,
    subjects: Subjects,
    event: AuditEvent,
}

impl Attempt {
    fn new(key: UserKey, password: Secret, client: Client, now: u64, event: AuditEvent) -> Self {
        Attempt {
            subjects: Subjects::new(&key, client.ip),
            key,
            password,
            client,
            now,
            event,
        }
    }

    fn audit(&self, outcome: &str, mode: Option<AuthMode>) -> AuditRecord {
        AuditRecord {
            at: self.now,
            event: self.event,
            tenant: self.key.tenant.to_string(),
            username: self.key.username.to_string(),
            client_ip: self.client.ip.map(|i| i.to_string()),
            outcome: outcome.into(),
            auth_mode: mode,
        }
    }
}
