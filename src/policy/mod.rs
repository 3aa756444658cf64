//! Policy: the site's rules, each written once and built from config. Services ask; they do
//! not re-derive a rule from config themselves.
//!
//! * [`Policy::when_unavailable`]: what the site does with an action while Keycloak cannot be
//!   asked (`[degraded]`, `auth.offline.allow`): allow it locally, queue it for Keycloak, or
//!   deny it.
//! * [`regulation::Regulator`]: failed attempts per user, per client IP and (offline) per user
//!   again, with bans; used by every endpoint that takes a password.
//! * [`offline`]: the offline window, the offline lockout and the token grace period.
//! * [`Policy::check_new_password`]: the local password rules.

pub mod offline;
pub mod regulation;

use crate::config::{Config, DegradedConfig, PasswordChangePolicy};
use offline::OfflinePolicy;
use regulation::Regulator;

/// An action whose handling depends on Keycloak being reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A login of a Keycloak user from the local hash.
    Login,
    /// A user's own password change (`POST /api/v1/password`).
    PasswordChange,
    /// An operator's `user add` of a Keycloak user.
    UserCreation,
    /// An operator's group change of a Keycloak user.
    GroupChange,
}

/// What the site does with an [`Action`] while Keycloak cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done from the site's own data (offline login).
    Allow,
    /// Done at the site and queued for Keycloak (sync queue).
    Queue,
    /// Refused until Keycloak is back.
    Deny,
}

#[derive(Debug, Clone)]
pub struct Policy {
    degraded: DegradedConfig,
    offline_allowed: bool,
    min_password_length: usize,
    pub offline: OfflinePolicy,
    pub regulator: Regulator,
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        Policy {
            degraded: config.degraded.clone(),
            offline_allowed: config.auth.offline.allow,
            min_password_length: config.auth.min_password_length,
            offline: OfflinePolicy::from_config(config),
            regulator: Regulator::from_config(config),
        }
    }

    /// What the site does with `action` while Keycloak cannot be asked (design §3, `[degraded]`).
    pub fn when_unavailable(&self, action: Action) -> Decision {
        let queue_or_deny = |allowed: bool| {
            if allowed {
                Decision::Queue
            } else {
                Decision::Deny
            }
        };
        match action {
            Action::Login if self.offline_allowed && self.degraded.allow_login => Decision::Allow,
            Action::Login => Decision::Deny,
            Action::PasswordChange => {
                queue_or_deny(self.degraded.password_change == PasswordChangePolicy::Queue)
            }
            Action::UserCreation => queue_or_deny(self.degraded.allow_user_creation),
            Action::GroupChange => queue_or_deny(self.degraded.allow_group_changes),
        }
    }

    /// The local password rules. Returns the reason a new password is refused.
    pub fn check_new_password(
        &self,
        username: &str,
        new: &str,
        old: Option<&str>,
    ) -> Result<(), String> {
        password_rules(self.min_password_length, username, new, old)
    }
}

fn password_rules(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules_hold() {
        assert!(password_rules(8, "alice", "short", None).is_err());
        assert!(password_rules(8, "alice12345", "ALICE12345", None).is_err());
        assert!(password_rules(8, "alice", "same-password", Some("same-password")).is_err());
        assert!(password_rules(8, "alice", "a-new-password", Some("old")).is_ok());
        assert!(
            password_rules(3, "bob", "ééé", None).is_ok(),
            "counts characters, not bytes"
        );
    }

    #[test]
    fn degraded_decisions_follow_config() {
        let mut c = Config::default();
        let p = Policy::from_config(&c);
        assert_eq!(p.when_unavailable(Action::Login), Decision::Allow);
        assert_eq!(p.when_unavailable(Action::PasswordChange), Decision::Queue);
        assert_eq!(p.when_unavailable(Action::UserCreation), Decision::Deny);
        assert_eq!(p.when_unavailable(Action::GroupChange), Decision::Deny);
        c.auth.offline.allow = false;
        c.degraded.password_change = PasswordChangePolicy::Deny;
        c.degraded.allow_user_creation = true;
        let p = Policy::from_config(&c);
        assert_eq!(p.when_unavailable(Action::Login), Decision::Deny);
        assert_eq!(p.when_unavailable(Action::PasswordChange), Decision::Deny);
        assert_eq!(p.when_unavailable(Action::UserCreation), Decision::Queue);
        c.auth.offline.allow = true;
        c.degraded.allow_login = false;
        assert_eq!(
            Policy::from_config(&c).when_unavailable(Action::Login),
            Decision::Deny
        );
    }
}
