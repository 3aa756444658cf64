//! Account administration for operators (`edgeauth user ...`): add, list, show, enable,
//! disable, remove, set a password. The same functions serve the admin socket (while `serve`
//! runs) and direct database access (while it does not).

use serde::{Deserialize, Serialize};

use super::{Auth, AuthError};
use crate::crypto::Secret;
use crate::domain::{Source, Tenant, UserKey};
use crate::policy::{Action, Decision};
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::sessions::RevokeReason;
use crate::store::users::UserRecord;
use crate::sync::Payload;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user {0} already exists")]
    Exists(UserKey),
    #[error("no user {0}")]
    NotFound(UserKey),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<crate::store::StoreError> for AccountError {
    fn from(e: crate::store::StoreError) -> Self {
        AccountError::Auth(AuthError::Store(e))
    }
}

/// A user as operators and the API see it: never the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub username: String,
    pub tenant: String,
    pub source: Source,
    pub roles: Vec<String>,
    /// `client:role` for every client the user's last token named (access rules see them).
    #[serde(default)]
    pub client_roles: Vec<String>,
    pub groups: Vec<String>,
    pub enabled: bool,
    pub has_password: bool,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_online_auth: Option<u64>,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            username: u.username.to_string(),
            tenant: u.tenant.to_string(),
            source: u.source,
            roles: u.roles.clone(),
            client_roles: u.client_roles.clone(),
            groups: u.groups.clone(),
            enabled: u.enabled,
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
            last_online_auth: u.last_online_auth,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub key: UserKey,
    /// E-mail and names for a new Keycloak user (Keycloak 26 requires them by default).
    pub profile: crate::keycloak::admin::Profile,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub source: Source,
    pub password: Secret,
}

fn clean_names(kind: &str, names: &[String]) -> Result<Vec<String>, AccountError> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim();
        if n.is_empty() || n.len() > 255 || n.chars().any(char::is_control) {
            return Err(AccountError::Invalid(format!(
                "{kind} {n:?} is not a valid name"
            )));
        }
        if !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

fn admin_audit(key: &UserKey, now: u64, outcome: &str) -> AuditRecord {
    AuditRecord {
        at: now,
        event: AuditEvent::UserAdmin,
        tenant: key.tenant.to_string(),
        username: key.username.to_string(),
        client_ip: None,
        outcome: outcome.into(),
        auth_mode: None,
    }
}

impl Auth {
    pub async fn add(&self, new: NewUser) -> Result<UserView, AccountError> {
        self.policy
            .check_new_password(new.key.username.as_str(), new.password.expose(), None)
            .map_err(AccountError::Invalid)?;
        super::check_password_input("password", new.password.expose())?;
        let roles = clean_names("role", &new.roles)?;
        let groups = clean_names("group", &new.groups)?;
        if self.store.read(|r| r.user(&new.key))?.is_some() {
            return Err(AccountError::Exists(new.key));
        }
        // Keycloak users: provisioned centrally now, or queued while Keycloak is unreachable.
        let queued = if new.source == Source::Keycloak {
            self.provision(&new, &groups).await?
        } else {
            None
        };
        let phc = self
            .hasher
            .hash(&new.password)
            .await
            .map_err(AuthError::from)?;
        let now = self.clock.now();
        let user = UserRecord {
            tenant: new.key.tenant.clone(),
            username: new.key.username.clone(),
            source: new.source,
            password_hash: Some(phc),
            roles,
            groups,
            client_roles: Vec::new(),
            name: None,
            email: None,
            enabled: true,
            created_at: now,
            updated_at: now,
            // Keycloak accepted (or will accept) this password now: it may be used offline.
            last_online_auth: (new.source == Source::Keycloak).then_some(now),
            tokens_at: None,
        };
        let (u, queue) = (user.clone(), self.queue.clone());
        let created = self
            .write(move |w| {
                if w.user(&u.key())?.is_some() {
                    return Ok(false);
                }
                w.put_user(&u)?;
                if let Some(p) = &queued {
                    queue.enqueue(w, &u.key(), p, now)?;
                }
                w.append_audit(&admin_audit(&u.key(), now, "user_added"))?;
                Ok(true)
            })
            .await?;
        if !created {
            return Err(AccountError::Exists(new.key));
        }
        log::info!(
            "user added user={} tenant={} source={}",
            user.username,
            user.tenant,
            user.source.as_str()
        );
        Ok(UserView::from(&user))
    }

    /// Creates a Keycloak user centrally; while Keycloak is unreachable, returns the queue
    /// item that will, when `degraded.allow_user_creation` allows.
    async fn provision(
        &self,
        new: &NewUser,
        groups: &[String],
    ) -> Result<Option<Payload>, AccountError> {
        if !self.upstream.enabled() {
            return Err(AccountError::Invalid(
                "no Keycloak is configured; add a local user with --local".into(),
            ));
        }
        self.upstream.refresh_if_stale().await;
        let (u, p, g, profile) = (
            new.key.username.to_string(),
            new.password.clone(),
            groups.to_vec(),
            new.profile.clone(),
        );
        let out = self
            .upstream
            .admin("provision", &new.key.tenant, move |admin| {
                let id = admin.create_user(&u, Some(&p), true, &profile)?;
                for group in g {
                    admin.set_group(&id, &group, true)?;
                }
                Ok(())
            })
            .await;
        let u = match out {
            Ok(()) => return Ok(None),
            Err(UpstreamError::Rejected(r)) => {
                return Err(AccountError::Invalid(format!(
                    "Keycloak refused the new user: {r}"
                )));
            }
            Err(UpstreamError::Unavailable(u)) => u,
        };
        if self.policy.when_unavailable(Action::UserCreation) == Decision::Deny {
            return Err(AccountError::Invalid(format!(
                "Keycloak is unreachable ({u}) and degraded.allow_user_creation is false; try again when it is back, or add a local user with --local"
            )));
        }
        log::info!(
            "Keycloak unavailable ({u}); {} is created here and queued for Keycloak",
            new.key
        );
        Ok(Some(Payload::UserProvision {
            password: new.password.clone(),
            enabled: true,
            groups: groups.to_vec(),
            profile: new.profile.clone(),
        }))
    }

    pub fn list(&self, tenant: Option<&Tenant>) -> Result<Vec<UserView>, AccountError> {
        let users = self.store.read(|r| r.users(tenant))?;
        Ok(users.iter().map(UserView::from).collect())
    }

    pub fn show(&self, key: &UserKey) -> Result<UserView, AccountError> {
        self.store
            .read(|r| r.user(key))?
            .map(|u| UserView::from(&u))
            .ok_or_else(|| AccountError::NotFound(key.clone()))
    }

    /// Enables or disables a user; disabling revokes every session at once.
    pub async fn set_enabled(&self, key: &UserKey, enabled: bool) -> Result<u64, AccountError> {
        let now = self.clock.now();
        let k = key.clone();
        let revoked = self
            .write(move |w| {
                let Some(mut u) = w.user(&k)? else {
                    return Ok(None);
                };
                u.enabled = enabled;
                u.updated_at = now;
                w.put_user(&u)?;
                let n = if enabled {
                    0
                } else {
                    w.revoke_user_sessions(&k, RevokeReason::UserDisabled, now, None)?
                };
                let outcome = if enabled {
                    "user_enabled"
                } else {
                    "user_disabled"
                };
                w.append_audit(&admin_audit(&k, now, outcome))?;
                Ok(Some(n))
            })
            .await?
            .ok_or_else(|| AccountError::NotFound(key.clone()))?;
        log::info!(
            "user {} user={} tenant={} revoked_sessions={revoked}",
            if enabled { "enabled" } else { "disabled" },
            key.username,
            key.tenant
        );
        Ok(revoked)
    }

    /// Removes a user and every session of theirs.
    pub async fn remove(&self, key: &UserKey) -> Result<u64, AccountError> {
        let now = self.clock.now();
        let (k, regulator) = (key.clone(), self.policy.regulator.clone());
        let removed = self
            .write(move |w| {
                if !w.remove_user(&k)? {
                    return Ok(None);
                }
                let n = w.delete_user_sessions(&k)?;
                regulator.clear_user(w, &k)?;
                w.append_audit(&admin_audit(&k, now, "user_removed"))?;
                Ok(Some(n))
            })
            .await?
            .ok_or_else(|| AccountError::NotFound(key.clone()))?;
        log::info!(
            "user removed user={} tenant={} sessions_deleted={removed}",
            key.username,
            key.tenant
        );
        Ok(removed)
    }

    /// Sets a user's password (operator reset): revokes every session and clears the user's
    /// bans.
    pub async fn set_password(
        &self,
        key: &UserKey,
        password: &Secret,
    ) -> Result<u64, AccountError> {
        super::check_password_input("password", password.expose())?;
        self.policy
            .check_new_password(key.username.as_str(), password.expose(), None)
            .map_err(AccountError::Invalid)?;
        if self.store.read(|r| r.user(key))?.is_none() {
            return Err(AccountError::NotFound(key.clone()));
        }
        let phc = self.hasher.hash(password).await.map_err(AuthError::from)?;
        let now = self.clock.now();
        let (k, regulator) = (key.clone(), self.policy.regulator.clone());
        let revoked = self
            .write(move |w| {
                let Some(mut u) = w.user(&k)? else {
                    return Ok(None);
                };
                u.password_hash = Some(phc);
                u.updated_at = now;
                w.put_user(&u)?;
                let n = w.revoke_user_sessions(&k, RevokeReason::PasswordChanged, now, None)?;
                regulator.clear_user(w, &k)?;
                w.append_audit(&admin_audit(&k, now, "password_set"))?;
                Ok(Some(n))
            })
            .await?
            .ok_or_else(|| AccountError::NotFound(key.clone()))?;
        log::info!(
            "password set by operator user={} tenant={} revoked_sessions={revoked}",
            key.username,
            key.tenant
        );
        Ok(revoked)
    }

    /// Adds the user to a group (`join`) or removes them. Keycloak users: in Keycloak first,
    /// or queued while it is unreachable when `degraded.allow_group_changes` allows.
    pub async fn set_group(
        &self,
        key: &UserKey,
        group: &str,
        join: bool,
    ) -> Result<Vec<String>, AccountError> {
        let group = clean_names("group", &[group.to_owned()])?
            .pop()
            .unwrap_or_default();
        let user = self
            .store
            .read(|r| r.user(key))?
            .ok_or_else(|| AccountError::NotFound(key.clone()))?;
        let queued = if user.source == Source::Keycloak && self.upstream.enabled() {
            self.group_change_upstream(key, &group, join).await?
        } else {
            None
        };
        let now = self.clock.now();
        let (k, queue) = (key.clone(), self.queue.clone());
        let groups = self
            .write(move |w| {
                let Some(mut u) = w.user(&k)? else {
                    return Ok(None);
                };
                u.groups.retain(|g| *g != group);
                if join {
                    u.groups.push(group.clone());
                }
                u.updated_at = now;
                w.put_user(&u)?;
                if let Some(p) = &queued {
                    queue.enqueue(w, &k, p, now)?;
                }
                let outcome = if join { "group_added" } else { "group_removed" };
                w.append_audit(&admin_audit(&k, now, outcome))?;
                Ok(Some(u.groups))
            })
            .await?
            .ok_or_else(|| AccountError::NotFound(key.clone()))?;
        Ok(groups)
    }

    /// A Keycloak user's group change, in Keycloak; while it is unreachable, the queue item
    /// that will make it, when `degraded.allow_group_changes` allows.
    async fn group_change_upstream(
        &self,
        key: &UserKey,
        group: &str,
        join: bool,
    ) -> Result<Option<Payload>, AccountError> {
        self.upstream.refresh_if_stale().await;
        let (u, g) = (key.username.to_string(), group.to_owned());
        let out = self
            .upstream
            .admin("group_change", &key.tenant, move |admin| {
                admin.for_user(&u, |admin, id| admin.set_group(id, &g, join))
            })
            .await;
        match out {
            Ok(()) => Ok(None),
            Err(UpstreamError::Rejected(r)) => Err(AccountError::Invalid(format!(
                "Keycloak refused the group change: {r}"
            ))),
            Err(UpstreamError::Unavailable(u)) => {
                match self.policy.when_unavailable(Action::GroupChange) {
                    Decision::Deny => Err(AccountError::Invalid(format!(
                        "Keycloak is unreachable ({u}) and degraded.allow_group_changes is false; try again when it is back"
                    ))),
                    Decision::Queue | Decision::Allow => Ok(Some(Payload::GroupChange {
                        group: group.to_owned(),
                        join,
                    })),
                }
            }
        }
    }
}
