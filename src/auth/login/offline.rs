//! The offline path: the local hash while Keycloak cannot be asked, as [`crate::policy`] says:
//! `degraded.allow_login`, the offline window, the offline lockout, the token grace.

use super::*;
use crate::policy::{Action, Decision};
use crate::upstream::Unavailable;

impl Auth {
    /// Keycloak cannot be asked: the local hash, within the offline limits.
    pub(super) async fn offline_login(
        &self,
        a: &Attempt,
        user: Option<UserRecord>,
        why: Unavailable,
    ) -> Result<LoginOk, AuthError> {
        self.metrics.fallback();
        if self.policy.when_unavailable(Action::Login) != Decision::Allow {
            self.audit_only(a.audit("offline_login_not_allowed", None))
                .await?;
            return Err(AuthError::OfflineLoginNotAllowed);
        }
        let regulator = &self.policy.regulator;
        let locked = self
            .store
            .read(|r| regulator.offline_locked(r, &a.subjects, a.now))?;
        if let Some(retry_after) = locked {
            self.audit_only(a.audit("offline_locked_out", None)).await?;
            return Err(AuthError::TooManyAttempts { retry_after });
        }
        let verified = self.verify(a, user.as_ref()).await?;
        let Some(u) = user.filter(|_| verified != Verified::NoMatch) else {
            return Err(self.fail(a, "invalid_credentials", true).await?);
        };
        if !u.enabled {
            self.audit_only(a.audit("account_disabled", None)).await?;
            return Err(AuthError::AccountDisabled);
        }
        if !self.policy.offline.within_window(&u, a.now) {
            self.audit_only(a.audit("offline_login_expired", None))
                .await?;
            return Err(AuthError::OfflineLoginExpired);
        }
        let mode = self.policy.offline.login_mode(&u, a.now);
        log::info!(
            "offline login of {} ({mode}): Keycloak unavailable ({why})",
            a.key
        );
        let warning = Some(
            "Keycloak is unreachable; signed in from this site's cached credentials".to_owned(),
        );
        self.succeed(a, u, false, mode, None, warning).await
    }
}
