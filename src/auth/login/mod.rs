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
//! argon2 cost for unknown users, and one write transaction before the answer. The degraded
//! and offline rules come from [`crate::policy`]; whether Keycloak can be asked, from
//! [`crate::upstream::Upstream`].

use std::sync::Arc;

mod local_first;
mod offline;
#[cfg(test)]
mod tests;

use super::{Attempt, Auth, AuthError, Client, check_password_input, user_key};
use crate::config::AuthOrder;
use crate::crypto::{Secret, SessionId, Verified};
use crate::domain::{AuthMode, Source};
use crate::keycloak::client::TokenSet;
use crate::store::audit::AuditEvent;
use crate::store::sessions::{RevokeReason, SealedTokens, SessionRecord};
use crate::store::users::UserRecord;
use crate::upstream::{Rejection, UpstreamError};

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

impl Auth {
    /// One login (design §3): the tiers above, then the metrics.
    pub async fn login(
        self: &Arc<Self>,
        req: LoginRequest,
        client: Client,
    ) -> Result<LoginOk, AuthError> {
        let result = self.attempt(req, client, AuditEvent::Login).await;
        match &result {
            Ok(ok) => {
                self.metrics.login("ok", Some(ok.session.auth_mode));
                log::debug!(
                    "login ok user={} tenant={} auth_mode={}",
                    ok.user.username,
                    ok.user.tenant,
                    ok.session.auth_mode
                );
            }
            Err(e) => self.metrics.login(e.code(), None),
        }
        result
    }

    /// A login that opens no session (HTTP Basic at forward-auth, [`super::basic`]): the same
    /// tiers, audited as `basic_auth`. The returned session record is never stored and its id
    /// never handed out; the caller reads the user and the auth_mode.
    pub(super) async fn login_sessionless(
        self: &Arc<Self>,
        req: LoginRequest,
        client: Client,
    ) -> Result<LoginOk, AuthError> {
        self.attempt(req, client, AuditEvent::BasicAuth).await
    }

    async fn attempt(
        self: &Arc<Self>,
        req: LoginRequest,
        client: Client,
        event: AuditEvent,
    ) -> Result<LoginOk, AuthError> {
        let key = user_key(req.tenant.as_deref(), &req.username)?;
        check_password_input("password", req.password.expose())?;
        let a = Attempt::new(key, req.password, client, self.clock.now(), event);
        self.decide(&a).await
    }

    /// Which path answers: regulation first, then local users (or no Keycloak) from the
    /// local hash, Keycloak users in `auth.order`.
    async fn decide(self: &Arc<Self>, a: &Attempt) -> Result<LoginOk, AuthError> {
        let user = self.admit(a).await?;
        let keycloak_user = user.as_ref().is_none_or(|u| u.source == Source::Keycloak);
        if !self.upstream.enabled() || !keycloak_user {
            return self.local_login(a, user).await;
        }
        match self.settings.order {
            AuthOrder::OnlineFirst => self.online_first(a, user).await,
            AuthOrder::LocalFirst => self.local_first(a, user).await,
        }
    }

    /// Verifies against the user's hash, or the dummy hash (same cost, never a match).
    async fn verify(&self, a: &Attempt, user: Option<&UserRecord>) -> Result<Verified, AuthError> {
        Ok(self
            .hasher
            .verify(&a.password, user.and_then(|u| u.password_hash.as_deref()))
            .await?)
    }

    /// Local users, or no Keycloak: the local hash is the whole truth.
    async fn local_login(
        &self,
        a: &Attempt,
        user: Option<UserRecord>,
    ) -> Result<LoginOk, AuthError> {
        let verified = self.verify(a, user.as_ref()).await?;
        let matched = verified != Verified::NoMatch;
        match user {
            Some(mut u) if matched && u.enabled => {
                let rehash = if verified == Verified::MatchNeedsRehash {
                    self.hasher.hash(&a.password).await.ok()
                } else {
                    None
                };
                let changed = rehash.is_some();
                if let Some(phc) = rehash {
                    u.password_hash = Some(phc);
                    u.updated_at = a.now;
                }
                self.succeed(a, u, changed, AuthMode::Local, None, None)
                    .await
            }
            Some(_) if matched => {
                self.audit_only(a.audit("account_disabled", None)).await?;
                Err(AuthError::AccountDisabled)
            }
            _ => Err(self.fail(a, "invalid_credentials", false).await?),
        }
    }

    /// Writes the session (none for a sessionless attempt), the audit row and the user changes
    /// in one transaction.
    async fn succeed(
        &self,
        a: &Attempt,
        user: UserRecord,
        user_changed: bool,
        mode: AuthMode,
        tokens: Option<SealedTokens>,
        warning: Option<String>,
    ) -> Result<LoginOk, AuthError> {
        let session_id = SessionId::generate();
        let digest = session_id.digest();
        let mut session = self.new_session(&user, mode, a.now);
        session.keycloak = tokens;
        let row = a.audit("ok", Some(mode));
        let (s, u) = (session.clone(), user.clone());
        let (regulator, subjects) = (self.policy.regulator.clone(), a.subjects.clone());
        let opens_session = a.event != AuditEvent::BasicAuth;
        self.write(move |w| {
            if user_changed {
                w.put_user(&u)?;
            }
            if opens_session {
                w.insert_session(&digest, &s)?;
            }
            w.append_audit(&row)?;
            regulator.record_success(w, &subjects)
        })
        .await?;
        Ok(LoginOk {
            session_id,
            session,
            user,
            warning,
        })
    }

    async fn online_first(
        self: &Arc<Self>,
        a: &Attempt,
        user: Option<UserRecord>,
    ) -> Result<LoginOk, AuthError> {
        let asked = self
            .upstream
            .password_grant(&a.key.tenant, a.key.username.as_str(), &a.password)
            .await;
        match asked {
            Ok(tokens) => self.online_success(a, user, tokens).await,
            Err(UpstreamError::Rejected(r)) => self.online_rejected(a, user, r).await,
            Err(UpstreamError::Unavailable(u)) => self.offline_login(a, user, u).await,
        }
    }

    /// Keycloak said yes: capture the hash, roles and groups; seal the tokens.
    async fn online_success(
        &self,
        a: &Attempt,
        user: Option<UserRecord>,
        tokens: TokenSet,
    ) -> Result<LoginOk, AuthError> {
        let identity = self.upstream.identity(&a.key.tenant, &tokens).await;
        // The session starts after Keycloak's answer, on a clock that may just have moved to
        // Keycloak's (by this login or a concurrent one): it must not start in the past.
        let a = &Attempt {
            now: self.clock.now(),
            ..a.clone()
        };
        // Capture the hash for offline use: reuse the stored one when it still matches (no
        // write amplification), else hash anew. Either way one argon2 operation.
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let stored_matches = match stored.as_deref() {
            Some(phc) => self.hasher.verify(&a.password, Some(phc)).await? == Verified::Match,
            None => false,
        };
        let phc = if stored_matches {
            stored
        } else {
            Some(self.hasher.hash(&a.password).await?)
        };
        let mut u = user.unwrap_or_else(|| UserRecord {
            tenant: a.key.tenant.clone(),
            username: a.key.username.clone(),
            source: Source::Keycloak,
            password_hash: None,
            roles: Vec::new(),
            groups: Vec::new(),
            client_roles: Vec::new(),
            name: None,
            email: None,
            enabled: true,
            created_at: a.now,
            updated_at: a.now,
            last_online_auth: None,
            tokens_at: None,
        });
        u.password_hash = phc;
        u.enabled = true;
        if let Some(id) = identity {
            u.roles = id.roles;
            u.groups = id.groups;
            u.client_roles = id.client_roles;
            u.name = id.name;
            u.email = id.email;
        }
        u.last_online_auth = Some(a.now);
        u.updated_at = a.now;
        let sealed = self.tokens.keep(&a.key, &tokens, a.now);
        if sealed.is_some() {
            u.tokens_at = Some(a.now);
        }
        self.succeed(a, u, true, AuthMode::Keycloak, sealed, None)
            .await
    }

    /// Keycloak said no. Never a fallback (design rule 1).
    async fn online_rejected(
        &self,
        a: &Attempt,
        user: Option<UserRecord>,
        r: Rejection,
    ) -> Result<LoginOk, AuthError> {
        match r {
            Rejection::AccountDisabled => {
                // Disabled centrally: disabled here too, and every session ends.
                let (key, now, row) = (a.key.clone(), a.now, a.audit("account_disabled", None));
                self.write(move |w| {
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
                // Keycloak is the source of truth: a local hash that still accepts this
                // password is from before a central change, so it goes. Verifying costs what
                // the dummy costs.
                if self.verify(a, user.as_ref()).await? != Verified::NoMatch {
                    self.forget_hash(a).await?;
                }
                Err(self.fail(a, "invalid_credentials", false).await?)
            }
            Rejection::AccountNotSetUp => {
                // The password was right; nothing is cached from a login that did not complete.
                log::info!(
                    "Keycloak refused the login of {}: the account needs an action in Keycloak first",
                    a.key
                );
                self.audit_only(a.audit("account_setup_required", None))
                    .await?;
                Err(AuthError::AccountSetupRequired)
            }
            other => {
                log::info!("Keycloak refused the login of {}: {other}", a.key);
                self.audit_only(a.audit("keycloak_rejected", None)).await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Clears a local hash that Keycloak no longer accepts.
    async fn forget_hash(&self, a: &Attempt) -> Result<(), AuthError> {
        let (key, now) = (a.key.clone(), a.now);
        self.write(move |w| {
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
        Ok(())
    }
}
