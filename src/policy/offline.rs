//! Offline logins (design §3): a Keycloak user may sign in from the local hash only within
//! `offline.credentials_expiration` of their last online login; a session or login is served
//! as `cached` only within `token_grace_period` of its Keycloak tokens.

use crate::config::Config;
use crate::domain::AuthMode;
use crate::store::users::UserRecord;

#[derive(Debug, Clone)]
pub struct OfflinePolicy {
    window: u64,
    grace: u64,
}

impl OfflinePolicy {
    pub fn from_config(config: &Config) -> Self {
        OfflinePolicy {
            window: config.auth.offline.credentials_expiration.as_secs(),
            grace: config.keycloak.resilience.token_grace_period.as_secs(),
        }
    }

    /// Did `user` sign in online recently enough to sign in offline at `now`?
    pub fn within_window(&self, user: &UserRecord, now: u64) -> bool {
        user.last_online_auth
            .is_some_and(|t| now.saturating_sub(t) <= self.window)
    }

    /// Are Keycloak tokens obtained at `at` still good for serving from the cache at `now`?
    pub fn within_grace(&self, at: u64, now: u64) -> bool {
        now.saturating_sub(at) <= self.grace
    }

    /// The auth_mode of an offline login of `user`: `cached` while a Keycloak token of theirs
    /// is within the grace period, else `local`.
    pub fn login_mode(&self, user: &UserRecord, now: u64) -> AuthMode {
        if user.tokens_at.is_some_and(|t| self.within_grace(t, now)) {
            AuthMode::Cached
        } else {
            AuthMode::Local
        }
    }
}
