//! Login: the tiers of design §3.
//!
//! * Local users, or no Keycloak configured: the local argon2 hash.
//! * Keycloak users, `online-first` (default): ask Keycloak (bounded by `request_timeout`,
//!   skipped at once while the circuit is open). Ok: capture the argon2 hash, roles and groups,
//!   seal the tokens, auth_mode `keycloak`. Rejected: 401/403, never a fallback. Unavailable:
//!   the offline path.
//! * Keycloak users, `local-first`: answer from the local hash at once and confirm with
//!   Keycloak in the background, revoking the new session if Keycloak rejects it.
//! * Offline path: only within `offline.credentials_expiration` of the last online login, with
//!   its own lockout (`failed_login_attempts`, `failed_login_delay`); auth_mode `cached` when a
//!   Keycloak token was obtained within `token_grace_period`, else `local`.
//!
//! Every path: regulation first (a banned attempt never reaches a hash or Keycloak), the same
//! argon2 cost for unknown users, and one write transaction before the answer.

use std::sync::Arc;

mod local_first;
mod offline;

use local_first::local_first;
use offline::offline_login;

use super::regulation::{banned_for, ip_subject, record_failures, user_subject};
use super::session::new_session;
use super::{AuthError, Client, check_password_input, user_key};
use crate::app::App;
use crate::config::{AuthOrder, RegulationConfig};
use crate::crypto::{Secret, SessionId, Verified};
use crate::domain::{AuthMode, Source, UserKey};
use crate::keycloak::client::TokenSet;
use crate::keycloak::outcome::{Rejection, Unavailable, UpstreamError};
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::sessions::{RevokeReason, SealedTokens, SessionRecord};
use crate::store::users::UserRecord;
use crate::upstream::monitor::KeycloakStatus;
use crate::upstream::{Keycloak, Tier};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: Secret,
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoginOk {
    pub session_id: SessionId,
    pub session: SessionRecord,
    pub user: UserRecord,
    pub warning: Option<String>,
}

/// One login attempt: who, from where, when, and which regulation counters it touches.
#[derive(Clone)]
struct Attempt {
    key: UserKey,
    password: Secret,
    client: Client,
    now: u64,
    user_subject: String,
    ip_subject: Option<String>,
}

impl Attempt {
    fn offline_subject(&self) -> String {
        format!("off:{}", self.key.store_key())
    }

    fn audit(&self, outcome: &str, mode: Option<AuthMode>) -> AuditRecord {
        AuditRecord {
            at: self.now,
            event: AuditEvent::Login,
            tenant: self.key.tenant.to_string(),
            username: self.key.username.to_string(),
            client_ip: self.client.ip.map(|i| i.to_string()),
            outcome: outcome.into(),
            auth_mode: mode,
        }
    }
}

pub async fn login(
    app: &Arc<App>,
    req: LoginRequest,
    client: Client,
) -> Result<LoginOk, AuthError> {
    let key = user_key(req.tenant.as_deref(), &req.username)?;
    check_password_input("password", req.password.expose())?;
    let a = Attempt {
        user_subject: user_subject(&key),
        ip_subject: client.ip.map(ip_subject),
        key,
        password: req.password,
        client,
        now: app.clock.now(),
    };

    // Regulation, before any password work or Keycloak call.
    let (user, banned) = app.store.read(|r| {
        let mut banned = None;
        for s in std::iter::once(&a.user_subject).chain(a.ip_subject.as_ref()) {
            banned = banned.max(banned_for(r.strikes(s)?.as_ref(), a.now));
        }
        Ok((r.user(&a.key)?, banned))
    })?;
    if let Some(retry_after) = banned {
        audit_only(app, a.audit("too_many_attempts", None)).await?;
        app.metrics.login("too_many_attempts", None);
        return Err(AuthError::TooManyAttempts { retry_after });
    }

    let keycloak = app
        .keycloak
        .clone()
        .filter(|_| user.as_ref().is_none_or(|u| u.source == Source::Keycloak));
    let result = match keycloak {
        None => local_login(app, &a, user).await,
        Some(kc) => match app.config.auth.order {
            AuthOrder::OnlineFirst => online_first(app, &kc, &a, user).await,
            AuthOrder::LocalFirst => local_first(app, &kc, &a, user).await,
        },
    };
    match &result {
        Ok(ok) => {
            app.metrics.login("ok", Some(ok.session.auth_mode));
            log::debug!(
                "login ok user={} tenant={} auth_mode={}",
                a.key.username,
                a.key.tenant,
                ok.session.auth_mode
            );
        }
        Err(e) => app.metrics.login(error_label(e), None),
    }
    result
}

fn error_label(e: &AuthError) -> &'static str {
    match e {
        AuthError::InvalidCredentials => "invalid_credentials",
        AuthError::AccountDisabled => "account_disabled",
        AuthError::AccountSetupRequired => "account_setup_required",
        AuthError::TooManyAttempts { .. } => "too_many_attempts",
        AuthError::Overloaded => "overloaded",
        AuthError::OfflineLoginExpired => "offline_login_expired",
        AuthError::OfflineLoginNotAllowed => "offline_login_not_allowed",
        _ => "error",
    }
}

async fn audit_only(app: &App, row: AuditRecord) -> Result<(), AuthError> {
    super::write(&app.store, move |w| w.append_audit(&row).map(|_| ())).await
}

/// Verifies against the user's hash, or the dummy hash (same cost, never a match).
async fn verify(app: &App, a: &Attempt, user: Option<&UserRecord>) -> Result<Verified, AuthError> {
    Ok(app
        .hasher
        .verify(&a.password, user.and_then(|u| u.password_hash.as_deref()))
        .await?)
}

/// Counts a failure against the user and the IP (and the offline lockout when `offline`),
/// writes the audit row, and says whether a ban started.
async fn fail(
    app: &App,
    a: &Attempt,
    outcome: &str,
    offline: bool,
) -> Result<AuthError, AuthError> {
    let reg = app.config.regulation.clone();
    let off = &app.config.auth.offline;
    let offline_cfg = RegulationConfig {
        ban_time: off.failed_login_delay,
        ..reg.clone()
    };
    let mut subjects = vec![(a.user_subject.clone(), reg.max_retries, reg.clone())];
    if let Some(ip) = &a.ip_subject {
        subjects.push((ip.clone(), reg.max_retries_per_ip, reg.clone()));
    }
    if offline {
        subjects.push((a.offline_subject(), off.failed_login_attempts, offline_cfg));
    }
    let row = a.audit(outcome, None);
    let now = a.now;
    let retry = super::write(&app.store, move |w| {
        let retry = record_failures(w, &subjects, now)?;
        w.append_audit(&row)?;
        Ok(retry)
    })
    .await?;
    log::debug!(
        "login failed user={} tenant={} outcome={outcome}",
        a.key.username,
        a.key.tenant
    );
    Ok(match retry {
        Some(retry_after) => AuthError::TooManyAttempts { retry_after },
        None => AuthError::InvalidCredentials,
    })
}

/// Local users, or no Keycloak: the local hash is the whole truth.
async fn local_login(
    app: &Arc<App>,
    a: &Attempt,
    user: Option<UserRecord>,
) -> Result<LoginOk, AuthError> {
    let verified = verify(app, a, user.as_ref()).await?;
    let matched = verified != Verified::NoMatch;
    match user {
        Some(u) if matched && u.enabled => {
            let rehash = if verified == Verified::MatchNeedsRehash {
                app.hasher.hash(&a.password).await.ok()
            } else {
                None
            };
            let mut u = u;
            let changed = rehash.is_some();
            if let Some(phc) = rehash {
                u.password_hash = Some(phc);
                u.updated_at = a.now;
            }
            succeed(app, a, u, changed, AuthMode::Local, None, None).await
        }
        Some(_) if matched => {
            audit_only(app, a.audit("account_disabled", None)).await?;
            Err(AuthError::AccountDisabled)
        }
        _ => Err(fail(app, a, "invalid_credentials", false).await?),
    }
}

/// Writes the session, the audit row and the user changes in one transaction.
async fn succeed(
    app: &Arc<App>,
    a: &Attempt,
    user: UserRecord,
    user_changed: bool,
    mode: AuthMode,
    tokens: Option<SealedTokens>,
    warning: Option<String>,
) -> Result<LoginOk, AuthError> {
    let session_id = SessionId::generate();
    let digest = session_id.digest();
    let mut session = new_session(app, &user, mode, a.now);
    session.keycloak = tokens;
    let row = a.audit("ok", Some(mode));
    let (s, u, subjects) = (
        session.clone(),
        user.clone(),
        [a.user_subject.clone(), a.offline_subject()],
    );
    super::write(&app.store, move |w| {
        if user_changed {
            w.put_user(&u)?;
        }
        w.insert_session(&digest, &s)?;
        w.append_audit(&row)?;
        for subject in &subjects {
            w.clear_strikes(subject)?;
        }
        Ok(())
    })
    .await?;
    Ok(LoginOk {
        session_id,
        session,
        user,
        warning,
    })
}

/// Seals a token set for storage in a session (AAD: the user key).
pub fn seal_tokens(app: &App, key: &UserKey, tokens: &TokenSet, now: u64) -> SealedTokens {
    let plain = serde_json::to_vec(tokens).unwrap_or_default();
    let sealed = app.sealer.seal(&plain, key.store_key().as_bytes());
    SealedTokens {
        sealed_hex: sealed.iter().map(|b| format!("{b:02x}")).collect(),
        access_expires_at: now.saturating_add(tokens.expires_in),
        refresh_expires_at: now.saturating_add(tokens.refresh_expires_in),
        renewed_at: now,
    }
}

/// Adopts Keycloak's clock from the `iat` of tokens it has just issued (design rule 7).
pub fn observe_keycloak_time(app: &App, tokens: &TokenSet) {
    if let Some(iat) = crate::keycloak::token::issued_at(&tokens.access_token) {
        app.clock.observe_keycloak(iat);
    }
}

/// Opens sealed tokens; `None` when they cannot be read (damaged, or another key).
pub fn open_tokens(app: &App, key: &UserKey, sealed: &SealedTokens) -> Option<TokenSet> {
    let bytes: Option<Vec<u8>> = (0..sealed.sealed_hex.len())
        .step_by(2)
        .map(|i| {
            sealed
                .sealed_hex
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let plain = app.sealer.open(&bytes?, key.store_key().as_bytes()).ok()?;
    serde_json::from_slice(&plain).ok()
}

async fn password_grant(
    app: &App,
    kc: &Keycloak,
    tier: &Arc<Tier>,
    a: &Attempt,
) -> Result<TokenSet, UpstreamError> {
    let (t, username, password) = (tier.clone(), a.key.username.to_string(), a.password.clone());
    kc.call(&app.metrics, "password_grant", move || {
        t.client
            .password_grant(&t.endpoints(), &username, &password)
    })
    .await
}

async fn online_first(
    app: &Arc<App>,
    kc: &Arc<Keycloak>,
    a: &Attempt,
    user: Option<UserRecord>,
) -> Result<LoginOk, AuthError> {
    let tier = kc.tier(&a.key.tenant);
    match password_grant(app, kc, &tier, a).await {
        Ok(tokens) => online_success(app, &tier, a, user, tokens).await,
        Err(UpstreamError::Rejected(r)) => online_rejected(app, a, user, r).await,
        Err(UpstreamError::Unavailable(u)) => offline_login(app, a, user, u).await,
    }
}

/// The claims of an access token just received from Keycloak (a login or a refresh): the one
/// source of a Keycloak user's roles and groups (design rule 9). `None` when the token cannot
/// be read, and the stored roles stay.
pub async fn token_claims(
    app: &App,
    tier: &Arc<Tier>,
    key: &UserKey,
    tokens: &TokenSet,
) -> Result<Option<crate::keycloak::token::AccessClaims>, AuthError> {
    let (t, store, metrics, access) = (
        tier.clone(),
        app.store.clone(),
        app.metrics.clone(),
        tokens.access_token.clone(),
    );
    let claims = tokio::task::spawn_blocking(move || {
        t.claims_from_token_endpoint(&store, &metrics, &access)
    })
    .await
    .map_err(|e| AuthError::Internal(e.to_string()))?;
    Ok(match claims {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!(
                "Keycloak's access token for {key} could not be read ({e}); keeping the stored roles"
            );
            None
        }
    })
}

/// Keycloak said yes: capture the hash, roles and groups; seal the tokens.
async fn online_success(
    app: &Arc<App>,
    tier: &Arc<Tier>,
    a: &Attempt,
    user: Option<UserRecord>,
    tokens: TokenSet,
) -> Result<LoginOk, AuthError> {
    let claims = token_claims(app, tier, &a.key, &tokens).await?;
    observe_keycloak_time(app, &tokens);
    // The session starts after Keycloak's answer, on a clock that may just have moved to
    // Keycloak's (by this login or a concurrent one): it must not start in the past.
    let a = &Attempt {
        now: app.clock.now(),
        ..a.clone()
    };
    // Capture the hash for offline use: reuse the stored one when it still matches (no write
    // amplification), else hash anew. Either way one argon2 operation.
    let stored_matches = match user.as_ref().and_then(|u| u.password_hash.as_deref()) {
        Some(phc) => app.hasher.verify(&a.password, Some(phc)).await? == Verified::Match,
        None => false,
    };
    let phc = if stored_matches {
        user.as_ref().and_then(|u| u.password_hash.clone())
    } else {
        Some(app.hasher.hash(&a.password).await?)
    };
    let client_id = tier.client.settings().client_id.clone();
    let mut u = user.unwrap_or_else(|| UserRecord {
        tenant: a.key.tenant.clone(),
        username: a.key.username.clone(),
        source: Source::Keycloak,
        password_hash: None,
        roles: Vec::new(),
        groups: Vec::new(),
        enabled: true,
        created_at: a.now,
        updated_at: a.now,
        last_online_auth: None,
        tokens_at: None,
    });
    u.password_hash = phc;
    u.enabled = true;
    if let Some(c) = &claims {
        u.roles = c.roles(&client_id);
        u.groups = c.group_list();
    }
    u.last_online_auth = Some(a.now);
    u.updated_at = a.now;
    let sealed = app
        .config
        .keycloak
        .resilience
        .cache_tokens
        .then(|| seal_tokens(app, &a.key, &tokens, a.now));
    if sealed.is_some() {
        u.tokens_at = Some(a.now);
    }
    succeed(app, a, u, true, AuthMode::Keycloak, sealed, None).await
}

/// Keycloak said no. Never a fallback (design rule 1).
async fn online_rejected(
    app: &Arc<App>,
    a: &Attempt,
    user: Option<UserRecord>,
    r: Rejection,
) -> Result<LoginOk, AuthError> {
    match r {
        Rejection::AccountDisabled => {
            // Disabled centrally: disabled here too, and every session ends.
            let (key, now, row) = (a.key.clone(), a.now, a.audit("account_disabled", None));
            super::write(&app.store, move |w| {
                if let Some(mut u) = w.user(&key)? {
                    u.enabled = false;
                    u.updated_at = now;
                    w.put_user(&u)?;
                    w.revoke_user_sessions(&key, RevokeReason::KeycloakRejected, now, None)?;
                }
                w.append_audit(&row)?;
                Ok(())
            })
            .await?;
            Err(AuthError::AccountDisabled)
        }
        Rejection::InvalidCredentials => {
            // Keycloak is the source of truth: a local hash that still accepts this password is
            // from before a central change, so it goes. Verifying costs what the dummy costs.
            if verify(app, a, user.as_ref()).await? != Verified::NoMatch {
                let (key, now) = (a.key.clone(), a.now);
                super::write(&app.store, move |w| {
                    if let Some(mut u) = w.user(&key)? {
                        u.password_hash = None;
                        u.updated_at = now;
                        w.put_user(&u)?;
                    }
                    Ok(())
                })
                .await?;
                log::info!(
                    "the cached password of {} no longer matches Keycloak's; cleared",
                    a.key
                );
            }
            Err(fail(app, a, "invalid_credentials", false).await?)
        }
        Rejection::AccountNotSetUp => {
            // The password was right; nothing is cached from a login that did not complete.
            log::info!(
                "Keycloak refused the login of {}: the account needs an action in Keycloak first",
                a.key
            );
            audit_only(app, a.audit("account_setup_required", None)).await?;
            Err(AuthError::AccountSetupRequired)
        }
        other => {
            log::info!("Keycloak refused the login of {}: {other}", a.key);
            audit_only(app, a.audit("keycloak_rejected", None)).await?;
            Err(AuthError::InvalidCredentials)
        }
    }
}
