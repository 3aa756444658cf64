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
use crate::keycloak::outcome::UpstreamError;
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

pub async fn add(app: &Arc<App>, new: NewUser) -> Result<UserView, AccountError> {
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
    if app.store.read(|r| r.user(&new.key))?.is_some() {
        return Err(AccountError::Exists(new.key));
    }
    // Keycloak users: provisioned centrally now, or queued while Keycloak is unreachable.
    let mut queued = None;
    if new.source == Source::Keycloak {
        let kc = app.keycloak.clone().ok_or_else(|| {
            AccountError::Invalid("no Keycloak is configured; add a local user with --local".into())
        })?;
        crate::upstream::monitor::refresh_if_stale(app, &kc).await;
        let tier = kc.tier(&new.key.tenant);
        let (k, t, u, p, g) = (
            kc.clone(),
            tier.clone(),
            new.key.username.to_string(),
            new.password.clone(),
            groups.clone(),
        );
        let profile = new.profile.clone();
        let out = kc
            .admin_call(&app.metrics, "provision", app.clock.now(), move || {
                let admin = crate::keycloak::admin::Admin::new(&t, &k.admin_tokens);
                let id = admin.create_user(&u, Some(&p), true, &profile)?;
                for group in g {
                    admin.set_group(&id, &group, true)?;
                }
                Ok(())
            })
            .await;
        match out {
            Ok(()) => {}
            Err(UpstreamError::Rejected(r)) => {
                return Err(AccountError::Invalid(format!(
                    "Keycloak refused the new user: {r}"
                )));
            }
            Err(UpstreamError::Unavailable(u)) if app.config.degraded.allow_user_creation => {
                log::info!(
                    "Keycloak unavailable ({u}); {} is created here and queued for Keycloak",
                    new.key
                );
                queued = Some(crate::sync::Payload::UserProvision {
                    password: new.password.clone(),
                    enabled: true,
                    groups: groups.clone(),
                    profile: new.profile.clone(),
                });
            }
            Err(UpstreamError::Unavailable(u)) => {
                return Err(AccountError::Invalid(format!(
                    "Keycloak is unreachable ({u}) and degraded.allow_user_creation is false; try again when it is back, or add a local user with --local"
                )));
            }
        }
    }
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
        // Keycloak accepted (or will accept) this password now: it may be used offline.
        last_online_auth: (new.source == Source::Keycloak).then_some(now),
        tokens_at: None,
    };
    let (u, app2) = (user.clone(), app.clone());
    let created = super::write(&app.store, move |w| {
        if w.user(&u.key())?.is_some() {
            return Ok(false);
        }
        w.put_user(&u)?;
        if let Some(p) = &queued {
            crate::sync::enqueue(&app2, w, &u.key(), p, now)?;
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

/// Adds the user to a group (`join`) or removes them. Keycloak users: in Keycloak first, or
/// queued while it is unreachable when `degraded.allow_group_changes` allows.
pub async fn set_group(
    app: &Arc<App>,
    key: &UserKey,
    group: &str,
    join: bool,
) -> Result<Vec<String>, AccountError> {
    let group = clean_names("group", &[group.to_owned()])?
        .pop()
        .unwrap_or_default();
    let user = app
        .store
        .read(|r| r.user(key))?
        .ok_or_else(|| AccountError::NotFound(key.clone()))?;
    let mut queued = None;
    if user.source == Source::Keycloak
        && let Some(kc) = app.keycloak.clone()
    {
        crate::upstream::monitor::refresh_if_stale(app, &kc).await;
        let tier = kc.tier(&key.tenant);
        let (k, t, u, g) = (
            kc.clone(),
            tier.clone(),
            key.username.to_string(),
            group.clone(),
        );
        let out = kc
            .admin_call(&app.metrics, "group_change", app.clock.now(), move || {
                let admin = crate::keycloak::admin::Admin::new(&t, &k.admin_tokens);
                admin.for_user(&u, |admin, id| admin.set_group(id, &g, join))
            })
            .await;
        match out {
            Ok(()) => {}
            Err(UpstreamError::Rejected(r)) => {
                return Err(AccountError::Invalid(format!(
                    "Keycloak refused the group change: {r}"
                )));
            }
            Err(UpstreamError::Unavailable(_)) if app.config.degraded.allow_group_changes => {
                queued = Some(crate::sync::Payload::GroupChange {
                    group: group.clone(),
                    join,
                });
            }
            Err(UpstreamError::Unavailable(u)) => {
                return Err(AccountError::Invalid(format!(
                    "Keycloak is unreachable ({u}) and degraded.allow_group_changes is false; try again when it is back"
                )));
            }
        }
    }
    let now = app.clock.now();
    let (k, app2) = (key.clone(), app.clone());
    let groups = super::write(&app.store, move |w| {
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
            crate::sync::enqueue(&app2, w, &k, p, now)?;
        }
        w.append_audit(&admin_audit(
            &k,
            now,
            if join { "group_added" } else { "group_removed" },
        ))?;
        Ok(Some(u.groups))
    })
    .await?
    .ok_or_else(|| AccountError::NotFound(key.clone()))?;
    Ok(groups)
}
