//! Password change by the user (`POST /api/v1/password`): proves the old password under the
//! same regulation as a login, enforces the local policy, and revokes the user's other
//! sessions in the same transaction that stores the new hash.

use serde::Serialize;

use super::{Attempt, Auth, AuthError, Client, check_password_input, user_key};
use crate::crypto::{Secret, SessionDigest, Verified};
use crate::domain::Source;
use crate::policy::{Action, Decision};
use crate::store::audit::AuditEvent;
use crate::store::sessions::RevokeReason;
use crate::store::users::UserRecord;
use crate::upstream::{Rejection, UpstreamError};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct PasswordRequest {
    pub username: String,
    pub old_password: Secret,
    pub new_password: Secret,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Where the new password took effect (design §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordMode {
    Synchronized,
    LocalOnlyQueued,
    LocalOnly,
}

#[derive(Debug, Clone, Serialize)]
pub struct PasswordChanged {
    pub local_updated: bool,
    pub keycloak_updated: bool,
    pub mode: PasswordMode,
    /// Other sessions of the user that were ended.
    #[serde(skip)]
    pub revoked_sessions: u64,
}

impl Auth {
    pub async fn change_password(
        &self,
        req: PasswordRequest,
        current: Option<SessionDigest>,
        client: Client,
    ) -> Result<PasswordChanged, AuthError> {
        let key = user_key(req.tenant.as_deref(), &req.username)?;
        check_password_input("old_password", req.old_password.expose())?;
        check_password_input("new_password", req.new_password.expose())?;
        let a = Attempt::new(
            key,
            req.old_password,
            client,
            self.clock.now(),
            AuditEvent::PasswordChange,
        );
        let user = self.admit(&a).await?;
        let keycloak_user =
            self.upstream.enabled() && user.as_ref().is_some_and(|u| u.source == Source::Keycloak);

        // Is the old password right? Keycloak decides while it answers; the local hash otherwise.
        let online = keycloak_user && self.old_password_online(&a).await?;
        if !online {
            let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
            if self.hasher.verify(&a.password, hash).await? == Verified::NoMatch {
                return Err(self.fail(&a, "invalid_credentials", false).await?);
            }
        }
        let Some(user) = user else {
            return Err(self.fail(&a, "invalid_credentials", false).await?);
        };
        if !user.enabled {
            return Err(AuthError::AccountDisabled);
        }
        self.policy
            .check_new_password(
                a.key.username.as_str(),
                req.new_password.expose(),
                Some(a.password.expose()),
            )
            .map_err(AuthError::WeakPassword)?;

        // Keycloak users: the central password first (its policy may refuse), else queue or deny.
        let mode = if !keycloak_user {
            PasswordMode::LocalOnly
        } else if online && self.new_password_online(&a, &req.new_password).await? {
            PasswordMode::Synchronized
        } else if self.policy.when_unavailable(Action::PasswordChange) == Decision::Deny {
            self.audit_only(a.audit("degraded_mode_forbidden", None))
                .await?;
            return Err(AuthError::DegradedModeForbidden(
                "Keycloak is unreachable and this site does not accept password changes until it is back".into(),
            ));
        } else {
            PasswordMode::LocalOnlyQueued
        };
        let revoked = self
            .store_password(&a, user, &req.new_password, mode, current)
            .await?;
        log::debug!(
            "password changed user={} tenant={} mode={mode:?} revoked_sessions={revoked}",
            a.key.username,
            a.key.tenant
        );
        Ok(PasswordChanged {
            local_updated: true,
            keycloak_updated: mode == PasswordMode::Synchronized,
            mode,
            revoked_sessions: revoked,
        })
    }

    /// The old password, asked of Keycloak: true when it accepted it, false when it could not
    /// be asked; a refusal is the answer.
    async fn old_password_online(&self, a: &Attempt) -> Result<bool, AuthError> {
        let asked = self
            .upstream
            .password_grant(&a.key.tenant, a.key.username.as_str(), &a.password)
            .await;
        match asked {
            Ok(_) => Ok(true),
            Err(UpstreamError::Rejected(Rejection::AccountDisabled)) => {
                Err(AuthError::AccountDisabled)
            }
            Err(UpstreamError::Rejected(_)) => {
                Err(self.fail(a, "invalid_credentials", false).await?)
            }
            Err(UpstreamError::Unavailable(_)) => Ok(false),
        }
    }

    /// The new password, set in Keycloak: true when it took it, false when it could not be
    /// asked; a refusal (its password policy) is the answer.
    async fn new_password_online(&self, a: &Attempt, new: &Secret) -> Result<bool, AuthError> {
        let (u, p) = (a.key.username.to_string(), new.clone());
        let out = self
            .upstream
            .admin("reset_password", &a.key.tenant, move |admin| {
                admin.for_user(&u, |admin, id| admin.reset_password(id, &p))
            })
            .await;
        match out {
            Ok(()) => Ok(true),
            Err(UpstreamError::Rejected(Rejection::Other { description, .. })) => {
                self.audit_only(a.audit("weak_password", None)).await?;
                Err(AuthError::WeakPassword(description))
            }
            Err(UpstreamError::Rejected(r)) => {
                self.audit_only(a.audit("keycloak_rejected", None)).await?;
                Err(AuthError::WeakPassword(r.to_string()))
            }
            Err(UpstreamError::Unavailable(_)) => Ok(false),
        }
    }

    /// Stores the new hash, revokes the user's other sessions (keeping the caller's own), ends
    /// the user's ban and queues the change when it is queued: one transaction.
    async fn store_password(
        &self,
        a: &Attempt,
        mut user: UserRecord,
        new: &Secret,
        mode: PasswordMode,
        current: Option<SessionDigest>,
    ) -> Result<u64, AuthError> {
        user.password_hash = Some(self.hasher.hash(new).await?);
        user.updated_at = a.now;
        let queued =
            (mode == PasswordMode::LocalOnlyQueued).then(|| crate::sync::Payload::PasswordChange {
                password: new.clone(),
            });
        let (row, now) = (a.audit("ok", None), a.now);
        let (queue, regulator) = (self.queue.clone(), self.policy.regulator.clone());
        self.write(move |w| {
            let key = user.key();
            // Keep the caller's own session only if it belongs to this user.
            let keep = match current {
                Some(d) => w.session(&d)?.filter(|s| s.user_key() == key).map(|_| d),
                None => None,
            };
            w.put_user(&user)?;
            let n =
                w.revoke_user_sessions(&key, RevokeReason::PasswordChanged, now, keep.as_ref())?;
            regulator.clear_user(w, &key)?;
            if let Some(p) = &queued {
                queue.enqueue(w, &key, p, now)?;
            }
            w.append_audit(&row)?;
            Ok(n)
        })
        .await
    }
}
