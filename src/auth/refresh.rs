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

use super::{Auth, AuthError};
use crate::store::sessions::RevokeReason;
use crate::upstream::{KeycloakStatus, UpstreamError};

pub const TICK: Duration = Duration::from_secs(2);
/// Renewals started per tick at most.
pub const MAX_PER_TICK: usize = 20;
/// Renew when the access token has less than this left.
pub const MARGIN_SECS: u64 = 60;

impl Auth {
    /// The refresher task: a tick every [`TICK`] while Keycloak is not offline.
    pub async fn run_refresher(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if !self.upstream.enabled() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
            if self.upstream.status() == KeycloakStatus::Offline {
                continue;
            }
            if let Err(e) = self.refresh_tick().await {
                log::error!("token refresh failed: {e}");
            }
        }
    }

    async fn refresh_tick(&self) -> Result<(), AuthError> {
        let now = self.clock.now();
        let idle = self.settings.session_idle;
        let mut due: Vec<_> = self
            .store
            .read(|r| r.sessions_with_tokens())?
            .into_iter()
            .filter(|(d, s)| {
                let Some(t) = &s.keycloak else { return false };
                let last_used = self
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
            let Some(refresh) = session
                .keycloak
                .as_ref()
                .and_then(|sealed| self.tokens.open(&key, sealed))
                .and_then(|t| t.refresh_token)
            else {
                continue;
            };
            let out = self.upstream.refresh_grant(&key.tenant, refresh).await;
            let now = self.clock.now();
            match out {
                Ok(tokens) => self.renewed(digest, &key, tokens, now).await?,
                Err(UpstreamError::Rejected(r)) => {
                    self.write(move |w| {
                        w.revoke_session(&digest, RevokeReason::KeycloakRejected, now)
                            .map(|_| ())
                    })
                    .await?;
                    self.activity.forget(&digest);
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

    /// Stores a session's renewed tokens, and the user's roles and groups from them.
    async fn renewed(
        &self,
        digest: crate::crypto::SessionDigest,
        key: &crate::domain::UserKey,
        tokens: crate::keycloak::client::TokenSet,
        now: u64,
    ) -> Result<(), AuthError> {
        let sealed = self.tokens.seal(key, &tokens, now);
        let identity = self.upstream.identity(&key.tenant, &tokens).await;
        let k = key.clone();
        self.write(move |w| {
            if let Some(mut s) = w.session(&digest)?
                && s.revoked_at.is_none()
            {
                s.keycloak = Some(sealed);
                w.insert_session(&digest, &s)?;
            }
            if let Some(mut u) = w.user(&k)? {
                u.tokens_at = Some(now);
                if let Some(id) = identity {
                    u.roles = id.roles;
                    u.groups = id.groups;
                    u.client_roles = id.client_roles;
                    u.name = id.name;
                    u.email = id.email;
                }
                w.put_user(&u)?;
            }
            Ok(())
        })
        .await?;
        log::debug!("tokens of a session of {key} renewed");
        Ok(())
    }
}
