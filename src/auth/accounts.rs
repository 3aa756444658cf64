//! Account administration for operators (`edgeauth user ...`): add, list, show, enable,
//! disable, remove, set a password. The same functions serve the admin socket (while `serve`
//! runs) and direct database access (while it does not).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::AuthError;
use super::password::policy_check;
use crate::app::App;
use crate::crypto::Secret;
use crate::domain::{Source, Tenant, UserKey};
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::sessions::RevokeReason;
use crate::store::users::UserRecord;

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

pub async fn add(app: &Arc<App>, new: NewUser) -> Result<UserView, AccountError> {
    if new.source == Source::Keycloak {
        return Err(AccountError::Invalid(
            "provisioning users into Keycloak is not available in this build; add a local user with --local"
                .into(),
        ));
    }
    policy_check(
        app.config.auth.min_password_length,
        new.key.username.as_str(),
        new.password.expose(),
        None,
    )
    .map_err(AccountError::Invalid)?;
    super::check_password_input("password", new.password.expose())?;
    let roles = clean_names("role", &new.roles)?;
    let groups = clean_names("group", &new.groups)?;
    let phc = app
        .hasher
        .hash(&new.password)
        .await
        .map_err(AuthError::from)?;
    let now = app.clock.now();
    let user = UserRecord {
        tenant: new.key.tenant.clone(),
        username: new.key.username.clone(),
        source: new.source,
        password_hash: Some(phc),
        roles,
        groups,
        enabled: true,
        created_at: now,
        updated_at: now,
        last_online_auth: None,
        tokens_at: None,
    };
    let u = user.clone();
    let created = super::write(&app.store, move |w| {
        if w.user(&u.key())?.is_some() {
            return Ok(false);
        }
        w.put_user(&u)?;
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

pub fn list(app: &App, tenant: Option<&Tenant>) -> Result<Vec<UserView>, AccountError> {
    let users = app.store.read(|r| r.users(tenant))?;
    Ok(users.iter().map(UserView::from).collect())
}

pub fn show(app: &App, key: &UserKey) -> Result<UserView, AccountError> {
    app.store
        .read(|r| r.user(key))?
        .map(|u| UserView::from(&u))
        .ok_or_else(|| AccountError::NotFound(key.clone()))
}

/// Enables or disables a user; disabling revokes every session at once.
pub async fn set_enabled(
    app: &Arc<App>,
    key: &UserKey,
    enabled: bool,
) -> Result<u64, AccountError> {
    let now = app.clock.now();
    let k = key.clone();
    let revoked = super::write(&app.store, move |w| {
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
        w.append_audit(&admin_audit(
            &k,
            now,
            if enabled {
                "user_enabled"
            } else {
                "user_disabled"
            },
        ))?;
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
pub async fn remove(app: &Arc<App>, key: &UserKey) -> Result<u64, AccountError> {
    let now = app.clock.now();
    let k = key.clone();
    let removed = super::write(&app.store, move |w| {
        if !w.remove_user(&k)? {
            return Ok(None);
        }
        let n = w.delete_user_sessions(&k)?;
        w.clear_strikes(&super::regulation::user_subject(&k))?;
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

/// Sets a user's password (operator reset): revokes every session and clears the user's bans.
pub async fn set_password(
    app: &Arc<App>,
    key: &UserKey,
    password: &Secret,
) -> Result<u64, AccountError> {
    super::check_password_input("password", password.expose())?;
    policy_check(
        app.config.auth.min_password_length,
        key.username.as_str(),
        password.expose(),
        None,
    )
    .map_err(AccountError::Invalid)?;
    if app.store.read(|r| r.user(key))?.is_none() {
        return Err(AccountError::NotFound(key.clone()));
    }
    let phc = app.hasher.hash(password).await.map_err(AuthError::from)?;
    let now = app.clock.now();
    let k = key.clone();
    let revoked = super::write(&app.store, move |w| {
        let Some(mut u) = w.user(&k)? else {
            return Ok(None);
        };
        u.password_hash = Some(phc);
        u.updated_at = now;
        w.put_user(&u)?;
        let n = w.revoke_user_sessions(&k, RevokeReason::PasswordChanged, now, None)?;
        w.clear_strikes(&super::regulation::user_subject(&k))?;
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
