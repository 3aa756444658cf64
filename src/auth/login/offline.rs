//! The offline path: the local hash while Keycloak cannot be asked, within
//! `offline.credentials_expiration`, with its own lockout and `degraded.allow_login`.

use super::*;

/// Keycloak cannot be asked: the local hash, within the offline limits.
pub(super) async fn offline_login(
    app: &Arc<App>,
    a: &Attempt,
    user: Option<UserRecord>,
    why: Unavailable,
) -> Result<LoginOk, AuthError> {
    app.metrics.fallback();
    let off = &app.config.auth.offline;
    if !off.allow || !app.config.degraded.allow_login {
        audit_only(app, a.audit("offline_login_not_allowed", None)).await?;
        return Err(AuthError::OfflineLoginNotAllowed);
    }
    let locked = app
        .store
        .read(|r| Ok(banned_for(r.strikes(&a.offline_subject())?.as_ref(), a.now)))?;
    if let Some(retry_after) = locked {
        audit_only(app, a.audit("offline_locked_out", None)).await?;
        return Err(AuthError::TooManyAttempts { retry_after });
    }
    let verified = verify(app, a, user.as_ref()).await?;
    let Some(u) = user.filter(|_| verified != Verified::NoMatch) else {
        return Err(fail(app, a, "invalid_credentials", true).await?);
    };
    if !u.enabled {
        audit_only(app, a.audit("account_disabled", None)).await?;
        return Err(AuthError::AccountDisabled);
    }
    let window = off.credentials_expiration.as_secs();
    if u.last_online_auth
        .is_none_or(|t| a.now.saturating_sub(t) > window)
    {
        audit_only(app, a.audit("offline_login_expired", None)).await?;
        return Err(AuthError::OfflineLoginExpired);
    }
    let grace = app.config.keycloak.resilience.token_grace_period.as_secs();
    let mode = if u
        .tokens_at
        .is_some_and(|t| a.now.saturating_sub(t) <= grace)
    {
        AuthMode::Cached
    } else {
        AuthMode::Local
    };
    log::info!(
        "offline login of {} ({mode}): Keycloak unavailable ({why})",
        a.key
    );
    let warning =
        Some("Keycloak is unreachable; signed in from this site's cached credentials".to_owned());
    succeed(app, a, u, false, mode, None, warning).await
}
