//! The token refresher (design §11). While Keycloak is online it renews the tokens of sessions
//! that were used since their last renewal, shortly before the access token expires. An idle
//! session is left alone so that its Keycloak session idles out as the realm intends, and the
//! site session follows it. A refresh Keycloak rejects (central logout, disable) revokes the
//! site session; an Unavailable one leaves it valid within the offline limits.
//! Renewals are capped per tick and taken in random order, so a Keycloak that just came back
//! is not hit by every session at once.
//!
//! A renewed access token also renews the user's roles and groups at the site: they are what
//! the token carries (design rule 9), so a role granted or taken centrally reaches offline
//! logins at the next renewal.
//!
//! The refresher's job (catching central logouts and disables) depends only on the login
//! side's view of Keycloak: it runs whenever that is not offline. The admin side (sync, pull)
//! cannot change that view.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::keycloak::outcome::UpstreamError;
use crate::store::sessions::RevokeReason;
use crate::upstream::monitor::KeycloakStatus;

pub const TICK: Duration = Duration::from_secs(2);
/// Renewals started per tick at most.
pub const MAX_PER_TICK: usize = 20;
/// Renew when the access token has less than this left.
pub const MARGIN_SECS: u64 = 60;

pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(kc) = app.keycloak.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
        if kc.status() == KeycloakStatus::Offline {
            continue;
        }
        if let Err(e) = tick(&app).await {
            log::error!("token refresh failed: {e}");
        }
    }
}

async fn tick(app: &Arc<App>) -> Result<(), super::AuthError> {
    let Some(kc) = app.keycloak.clone() else {
        return Ok(());
    };
    let now = app.clock.now();
    let idle = app.config.auth.session_idle.as_secs();
    let mut due: Vec<_> = app
        .store
        .read(|r| r.sessions_with_tokens())?
        .into_iter()
        .filter(|(d, s)| {
            let Some(t) = &s.keycloak else { return false };
            let last_used = app
                .activity
                .get(d)
                .map_or(s.last_seen, |a| a.max(s.last_seen));
            now < s.ends_at(last_used, idle)
                && last_used > t.renewed_at
                && t.access_expires_at.saturating_sub(now) <= MARGIN_SECS
        })
        .collect();
    // Random order, so that a capped tick does not always favour the same sessions.
    for i in (1..due.len()).rev() {
        let mut b = [0u8; 4];
        crate::crypto::random_bytes(&mut b);
        due.swap(i, u32::from_le_bytes(b) as usize % (i + 1));
    }
    for (digest, session) in due.into_iter().take(MAX_PER_TICK) {
        let key = session.user_key();
        let Some(sealed) = session.keycloak.as_ref() else {
            continue;
        };
        let Some(refresh) =
            super::login::open_tokens(app, &key, sealed).and_then(|t| t.refresh_token)
        else {
            continue;
        };
        let tier = kc.tier(&key.tenant);
        let t = tier.clone();
        let out = kc
            .call(&app.metrics, "refresh_grant", move || {
                t.client.refresh_grant(&t.endpoints(), &refresh)
            })
            .await;
        if let Ok(tokens) = &out {
            super::login::observe_keycloak_time(app, tokens);
        }
        let now = app.clock.now();
        match out {
            Ok(tokens) => {
                let sealed = super::login::seal_tokens(app, &key, &tokens, now);
                let claims = super::login::token_claims(app, &tier, &key, &tokens).await?;
                let client_id = tier.client.settings().client_id.clone();
                let k = key.clone();
                super::write(&app.store, move |w| {
                    if let Some(mut s) = w.session(&digest)?
                        && s.revoked_at.is_none()
                    {
                        s.keycloak = Some(sealed);
                        w.insert_session(&digest, &s)?;
                    }
                    if let Some(mut u) = w.user(&k)? {
                        u.tokens_at = Some(now);
                        if let Some(c) = &claims {
                            u.roles = c.roles(&client_id);
                            u.groups = c.group_list();
                        }
                        w.put_user(&u)?;
                    }
                    Ok(())
                })
                .await?;
                log::debug!("tokens of a session of {key} renewed");
            }
            Err(UpstreamError::Rejected(r)) => {
                super::write(&app.store, move |w| {
                    w.revoke_session(&digest, RevokeReason::KeycloakRejected, now)
                        .map(|_| ())
                })
                .await?;
                app.activity.forget(&digest);
                log::info!(
                    "Keycloak refused to renew a session of {key} ({r}); the site session is revoked"
                );
            }
            // Keycloak went away mid-tick: keep every session, try again when it is back.
            Err(UpstreamError::Unavailable(_)) => break,
        }
    }
    Ok(())
}
