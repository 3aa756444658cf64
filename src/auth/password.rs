//! Password change by the user (`POST /api/v1/password`): proves the old password under the
//! same regulation as a login, enforces the local policy, and revokes the user's other
//! sessions in the same transaction that stores the new hash.

use std::sync::Arc;

use serde::Serialize;

use super::regulation::{after_failure, banned_for, ip_subject, user_subject};
use super::{AuthError, Client, check_password_input, user_key};
use crate::app::App;
use crate::crypto::{Secret, SessionDigest, Verified};
use crate::domain::Source;
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::sessions::RevokeReason;

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

/// The local password policy. Returns the reason a password is refused.
pub fn policy_check(
    min_len: usize,
    username: &str,
    new: &str,
    old: Option<&str>,
) -> Result<(), String> {
    if new.chars().count() < min_len {
        return Err(format!(
            "the new password must be at least {min_len} characters long"
        ));
    }
    if new.eq_ignore_ascii_case(username) {
        return Err("the new password must not be the username".into());
    }
    if old == Some(new) {
        return Err("the new password must differ from the old one".into());
    }
    Ok(())
}

pub async fn change_password(
    app: &Arc<App>,
    req: PasswordRequest,
    current: Option<SessionDigest>,
    client: Client,
) -> Result<PasswordChanged, AuthError> {
    let key = user_key(req.tenant.as_deref(), &req.username)?;
    check_password_input("old_password", req.old_password.expose())?;
    check_password_input("new_password", req.new_password.expose())?;
    let now = app.clock.now();
    let (us, is) = (user_subject(&key), client.ip.map(ip_subject));

    let (user, banned) = app.store.read(|r| {
        let mut banned = banned_for(r.strikes(&us)?.as_ref(), now);
        if let Some(is) = &is {
            banned = banned.max(banned_for(r.strikes(is)?.as_ref(), now));
        }
        Ok((r.user(&key)?, banned))
    })?;
    if let Some(retry_after) = banned {
        return Err(AuthError::TooManyAttempts { retry_after });
    }
    let verified = app
        .hasher
        .verify(
            &req.old_password,
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
        )
        .await?;
    let audit = |outcome: &str| AuditRecord {
        at: now,
        event: AuditEvent::PasswordChange,
        tenant: key.tenant.to_string(),
        username: key.username.to_string(),
        client_ip: client.ip.map(|i| i.to_string()),
        outcome: outcome.into(),
        auth_mode: None,
    };
    let user = match user {
        Some(u) if verified != Verified::NoMatch => u,
        _ => {
            let cfg = app.config.regulation.clone();
            let row = audit("invalid_credentials");
            let retry = super::write(&app.store, move |w| {
                let mut retry = None;
                for (subject, limit) in [(Some(us), cfg.max_retries), (is, cfg.max_retries_per_ip)]
                {
                    let Some(subject) = subject else { continue };
                    let s = after_failure(w.strikes(&subject)?, now, limit, &cfg);
                    retry = retry.max(banned_for(Some(&s), now));
                    w.put_strikes(&subject, &s)?;
                }
                w.append_audit(&row)?;
                Ok(retry)
            })
            .await?;
            return Err(match retry {
                Some(retry_after) => AuthError::TooManyAttempts { retry_after },
                None => AuthError::InvalidCredentials,
            });
        }
    };
    if !user.enabled {
        return Err(AuthError::AccountDisabled);
    }
    if user.source == Source::Keycloak {
        return Err(AuthError::DegradedModeForbidden(
            "this user's password lives in Keycloak, and this appliance has no Keycloak connection to change it"
                .into(),
        ));
    }
    policy_check(
        app.config.auth.min_password_length,
        key.username.as_str(),
        req.new_password.expose(),
        Some(req.old_password.expose()),
    )
    .map_err(AuthError::WeakPassword)?;

    let phc = app.hasher.hash(&req.new_password).await?;
    let mut updated = user;
    updated.password_hash = Some(phc);
    updated.updated_at = now;
    let keep = current;
    let row = audit("ok");
    let revoked = super::write(&app.store, move |w| {
        // Keep the caller's own session only if it belongs to this user.
        let keep = match keep {
            Some(d) => w_session_owner(w, &d)?
                .filter(|k| *k == updated.key())
                .map(|_| d),
            None => None,
        };
        w.put_user(&updated)?;
        let n = w.revoke_user_sessions(
            &updated.key(),
            RevokeReason::PasswordChanged,
            now,
            keep.as_ref(),
        )?;
        w.clear_strikes(&us_for(&updated))?;
        w.append_audit(&row)?;
        Ok(n)
    })
    .await?;
    log::debug!(
        "password changed user={} tenant={} mode=local_only revoked_sessions={revoked}",
        key.username,
        key.tenant
    );
    Ok(PasswordChanged {
        local_updated: true,
        keycloak_updated: false,
        mode: PasswordMode::LocalOnly,
        revoked_sessions: revoked,
    })
}

fn us_for(u: &crate::store::users::UserRecord) -> String {
    user_subject(&u.key())
}

fn w_session_owner(
    w: &mut crate::store::WriteTx,
    d: &SessionDigest,
) -> crate::store::Result<Option<crate::domain::UserKey>> {
    Ok(w.session(d)?.map(|s| s.user_key()))
}

#[cfg(test)]
mod tests {
    use super::policy_check;

    #[test]
    fn policy() {
        assert!(policy_check(8, "alice", "short", None).is_err());
        assert!(policy_check(8, "alice12345", "ALICE12345", None).is_err());
        assert!(policy_check(8, "alice", "same-password", Some("same-password")).is_err());
        assert!(policy_check(8, "alice", "a-new-password", Some("old")).is_ok());
        assert!(
            policy_check(3, "bob", "ééé", None).is_ok(),
            "counts characters, not bytes"
        );
    }
}
