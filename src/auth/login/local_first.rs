//! `auth.order = "local-first"`: the local hash answers at once and Keycloak confirms in the
//! background, upgrading the session or revoking it.

use super::*;

/// `local-first`: the local hash answers now; Keycloak confirms in the background.
pub(super) async fn local_first(
    app: &Arc<App>,
    kc: &Arc<Keycloak>,
    a: &Attempt,
    user: Option<UserRecord>,
) -> Result<LoginOk, AuthError> {
    if kc.status() == KeycloakStatus::Offline {
        let why = Unavailable::new(
            crate::keycloak::outcome::UnavailableKind::CircuitOpen,
            "Keycloak is offline",
        );
        return offline_login(app, a, user, why).await;
    }
    let local_ok = match user.as_ref() {
        Some(u) if u.enabled && u.password_hash.is_some() => {
            verify(app, a, Some(u)).await? != Verified::NoMatch
        }
        _ => false,
    };
    let (Some(u), true) = (user.clone(), local_ok) else {
        // Nothing local to answer from (first login, or a changed password): ask Keycloak.
        return online_first(app, kc, a, user).await;
    };
    let ok = succeed(app, a, u, false, AuthMode::Local, None, None).await?;
    let (app2, kc2, digest) = (app.clone(), kc.clone(), ok.session_id.digest());
    let attempt = a.clone();
    tokio::spawn(async move { confirm_in_background(app2, kc2, attempt, digest).await });
    Ok(ok)
}

async fn confirm_in_background(
    app: Arc<App>,
    kc: Arc<Keycloak>,
    a: Attempt,
    digest: crate::crypto::SessionDigest,
) {
    let tier = kc.tier(&a.key.tenant);
    let outcome = password_grant(&app, &kc, &tier, &a).await;
    if let Ok(tokens) = &outcome {
        observe_keycloak_time(&app, tokens);
    }
    let now = app.clock.now();
    let result = match outcome {
        Ok(tokens) => {
            let sealed = app
                .config
                .keycloak
                .resilience
                .cache_tokens
                .then(|| seal_tokens(&app, &a.key, &tokens, now));
            let key = a.key.clone();
            crate::auth::write(&app.store, move |w| {
                if let Some(mut s) = w.session(&digest)? {
                    s.auth_mode = AuthMode::Keycloak;
                    s.keycloak = sealed.clone();
                    w.insert_session(&digest, &s)?;
                }
                if let Some(mut u) = w.user(&key)? {
                    u.last_online_auth = Some(now);
                    if sealed.is_some() {
                        u.tokens_at = Some(now);
                    }
                    w.put_user(&u)?;
                }
                Ok(())
            })
            .await
        }
        Err(UpstreamError::Rejected(r)) => {
            log::info!(
                "Keycloak rejected the local-first login of {} ({r}); revoking its session",
                a.key
            );
            let (key, disabled) = (a.key.clone(), r == Rejection::AccountDisabled);
            crate::auth::write(&app.store, move |w| {
                w.revoke_session(&digest, RevokeReason::KeycloakRejected, now)?;
                if let Some(mut u) = w.user(&key)? {
                    if disabled {
                        u.enabled = false;
                    } else {
                        u.password_hash = None;
                    }
                    u.updated_at = now;
                    w.put_user(&u)?;
                }
                Ok(())
            })
            .await
        }
        Err(UpstreamError::Unavailable(_)) => Ok(()),
    };
    if let Err(e) = result {
        log::error!("background confirmation of {} failed: {e}", a.key);
    }
}
