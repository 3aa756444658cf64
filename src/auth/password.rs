//! Password change by the user (`POST /api/v1/password`): proves the old password under the
//! same regulation as a login, enforces the local policy, and revokes the user's other
//! sessions in the same transaction that stores the new hash.

use std::sync::Arc;

use serde::Serialize;

use super::regulation::{banned_for, ip_subject, record_failures, user_subject};
use super::{AuthError, Client, check_password_input, user_key};
use crate::app::App;
use crate::config::PasswordChangePolicy;
use crate::crypto::{Secret, SessionDigest, Verified};
use crate::domain::Source;
use crate::keycloak::admin::Admin;
use crate::keycloak::outcome::{Rejection, UpstreamError};
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
    let keycloak = app
        .keycloak
        .clone()
        .filter(|_| user.as_ref().is_some_and(|u| u.source == Source::Keycloak));
    let audit = |outcome: &str| AuditRecord {
        at: now,
        event: AuditEvent::PasswordChange,
        tenant: key.tenant.to_string(),
        username: key.username.to_string(),
        client_ip: client.ip.map(|i| i.to_string()),
        outcome: outcome.into(),
        auth_mode: None,
    };
    let fail = |us: String, is: Option<String>| {
        let cfg = app.config.regulation.clone();
        let row = audit("invalid_credentials");
        async move {
            let mut subjects = vec![(us, cfg.max_retries, cfg.clone())];
            if let Some(is) = is {
                subjects.push((is, cfg.max_retries_per_ip, cfg.clone()));
            }
            let retry = super::write(&app.store, move |w| {
                let retry = record_failures(w, &subjects, now)?;
                w.append_audit(&row)?;
                Ok(retry)
            })
            .await?;
            Ok::<AuthError, AuthError>(match retry {
                Some(retry_after) => AuthError::TooManyAttempts { retry_after },
                None => AuthError::InvalidCredentials,
            })
        }
    };

    // Is the old password right? Keycloak decides while it answers; the local hash otherwise.
    let mut online = false;
    if let Some(kc) = &keycloak {
        let tier = kc.tier(&key.tenant);
        let (t, u, p) = (
            tier.clone(),
            key.username.to_string(),
            req.old_password.clone(),
        );
        match kc
            .call(&app.metrics, "password_grant", move || {
                t.client.password_grant(&t.endpoints(), &u, &p)
            })
            .await
        {
            Ok(_) => online = true,
            Err(UpstreamError::Rejected(Rejection::AccountDisabled)) => {
                return Err(AuthError::AccountDisabled);
            }
            Err(UpstreamError::Rejected(_)) => return Err(fail(us, is).await?),
            Err(UpstreamError::Unavailable(_)) => {}
        }
    }
    let user = if online {
        user
    } else {
        let verified = app
            .hasher
            .verify(
                &req.old_password,
                user.as_ref().and_then(|u| u.password_hash.as_deref()),
            )
            .await?;
        if verified == Verified::NoMatch {
            return Err(fail(us, is).await?);
        }
        user
    };
    let Some(user) = user else {
        return Err(fail(us, is).await?);
    };
    if !user.enabled {
        return Err(AuthError::AccountDisabled);
    }
    policy_check(
        app.config.auth.min_password_length,
        key.username.as_str(),
        req.new_password.expose(),
        Some(req.old_password.expose()),
    )
    .map_err(AuthError::WeakPassword)?;

    // Keycloak users: the central password first (its policy may refuse), else queue or deny.
    let mut mode = PasswordMode::LocalOnly;
    if let Some(kc) = &keycloak {
        let mut reached = false;
        if online {
            let tier = kc.tier(&key.tenant);
            let (k, t, u, p) = (
                kc.clone(),
                tier.clone(),
                key.username.to_string(),
                req.new_password.clone(),
            );
            let out = kc
                .admin_call(&app.metrics, "reset_password", app.clock.now(), move || {
                    let admin = Admin::new(&t, &k.admin_tokens);
                    admin.for_user(&u, |admin, id| admin.reset_password(id, &p))
                })
                .await;
            match out {
                Ok(()) => {
                    reached = true;
                    mode = PasswordMode::Synchronized;
                }
                Err(UpstreamError::Rejected(Rejection::Other { description, .. })) => {
                    audit_only(app, audit("weak_password")).await?;
                    return Err(AuthError::WeakPassword(description));
                }
                Err(UpstreamError::Rejected(r)) => {
                    audit_only(app, audit("keycloak_rejected")).await?;
                    return Err(AuthError::WeakPassword(r.to_string()));
                }
                Err(UpstreamError::Unavailable(_)) => {}
            }
        }
        if !reached {
            if app.config.degraded.password_change == PasswordChangePolicy::Deny {
                audit_only(app, audit("degraded_mode_forbidden")).await?;
                return Err(AuthError::DegradedModeForbidden(
                    "Keycloak is unreachable and this site does not accept password changes until it is back".into(),
                ));
            }
            mode = PasswordMode::LocalOnlyQueued;
        }
    }

    let phc = app.hasher.hash(&req.new_password).await?;
    let mut updated = user;
    updated.password_hash = Some(phc);
    updated.updated_at = now;
    let keep = current;
    let row = audit("ok");
    let queued =
        (mode == PasswordMode::LocalOnlyQueued).then(|| crate::sync::Payload::PasswordChange {
            password: req.new_password.clone(),
        });
    let app2 = app.clone();
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
        if let Some(p) = &queued {
            crate::sync::enqueue(&app2, w, &updated.key(), p, now)?;
        }
        w.append_audit(&row)?;
        Ok(n)
    })
    .await?;
    log::debug!(
        "password changed user={} tenant={} mode={mode:?} revoked_sessions={revoked}",
        key.username,
        key.tenant
    );
    Ok(PasswordChanged {
        local_updated: true,
        keycloak_updated: mode == PasswordMode::Synchronized,
        mode,
        revoked_sessions: revoked,
    })
}

async fn audit_only(app: &App, row: AuditRecord) -> Result<(), AuthError> {
    super::write(&app.store, move |w| w.append_audit(&row).map(|_| ())).await
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
