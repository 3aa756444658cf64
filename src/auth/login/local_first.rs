//! `auth.order = "local-first"`: the local hash answers at once and Keycloak confirms in the
//! background, upgrading the session or revoking it.

use super::*;
use crate::crypto::SessionDigest;
use crate::upstream::{KeycloakStatus, Unavailable, UnavailableKind};

impl Auth {
    /// `local-first`: the local hash answers now; Keycloak confirms in the background.
    pub(super) async fn local_first(
        self: &Arc<Self>,
        a: &Attempt,
        user: Option<UserRecord>,
    ) -> Result<LoginOk, AuthError> {
        if self.upstream.status() == KeycloakStatus::Offline {
            let why = Unavailable::new(UnavailableKind::CircuitOpen, "Keycloak is offline");
            return self.offline_login(a, user, why).await;
        }
        let local_ok = match user.as_ref() {
            Some(u) if u.enabled && u.password_hash.is_some() => {
                self.verify(a, Some(u)).await? != Verified::NoMatch
            }
            _ => false,
        };
        let (Some(u), true) = (user.clone(), local_ok) else {
            // Nothing local to answer from (first login, or a changed password): ask Keycloak.
            return self.online_first(a, user).await;
        };
        let ok = self
            .succeed(a, u, false, AuthMode::Local, None, None)
            .await?;
        let (auth, attempt, digest) = (self.clone(), a.clone(), ok.session_id.digest());
        tokio::spawn(async move { auth.confirm_in_background(attempt, digest).await });
        Ok(ok)
    }

    async fn confirm_in_background(&self, a: Attempt, digest: SessionDigest) {
        let outcome = self
            .upstream
            .password_grant(&a.key.tenant, a.key.username.as_str(), &a.password)
            .await;
        let now = self.clock.now();
        let result = match outcome {
            Ok(tokens) => {
                let sealed = self.tokens.keep(&a.key, &tokens, now);
                let key = a.key.clone();
                self.write(move |w| {
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
                self.write(move |w| {
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
}
