//! Operator commands (`edgeauth user ...`, `status`, `db ...`, `audit`) as one request type,
//! executed the same way whether it arrives over the admin socket from a CLI process while
//! `serve` runs, or is run directly on the database while it does not.

pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::accounts::{AccountError, NewUser};
use crate::crypto::Secret;
use crate::domain::{Source, Tenant, UserKey, Username};
use crate::error::AppError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AdminRequest {
    UserAdd {
        tenant: String,
        username: String,
        roles: Vec<String>,
        groups: Vec<String>,
        local: bool,
        password: Secret,
        #[serde(default)]
        profile: crate::keycloak::admin::Profile,
    },
    UserList {
        tenant: Option<String>,
    },
    UserShow {
        tenant: String,
        username: String,
    },
    UserSetEnabled {
        tenant: String,
        username: String,
        enabled: bool,
    },
    UserRemove {
        tenant: String,
        username: String,
    },
    UserPasswd {
        tenant: String,
        username: String,
        password: Secret,
    },
    UserGroup {
        tenant: String,
        username: String,
        group: String,
        join: bool,
    },
    SyncOnce,
    SyncList,
    SyncRetry {
        id: u64,
    },
    SyncDrop {
        id: u64,
    },
    Status,
    DbCheck,
    DbBackup {
        path: PathBuf,
    },
    Audit {
        limit: usize,
    },
}

/// The answer on the wire: data, or an error with the exit code the CLI should use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AdminResponse {
    Ok { data: Value },
    Err { exit_code: i32, message: String },
}

fn key(tenant: &str, username: &str) -> Result<UserKey, AppError> {
    let tenant = Tenant::parse(tenant).map_err(AppError::Usage)?;
    let username = Username::parse(username).map_err(AppError::Usage)?;
    Ok(UserKey::new(tenant, username))
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Runs one operator command against an open appliance.
pub async fn execute(app: &Arc<App>, req: AdminRequest) -> Result<Value, AppError> {
    match req {
        AdminRequest::UserAdd { .. }
        | AdminRequest::UserList { .. }
        | AdminRequest::UserShow { .. }
        | AdminRequest::UserSetEnabled { .. }
        | AdminRequest::UserRemove { .. }
        | AdminRequest::UserPasswd { .. }
        | AdminRequest::UserGroup { .. } => user(app, req).await,
        AdminRequest::SyncOnce
        | AdminRequest::SyncList
        | AdminRequest::SyncRetry { .. }
        | AdminRequest::SyncDrop { .. } => sync(app, req).await,
        AdminRequest::Status
        | AdminRequest::DbCheck
        | AdminRequest::DbBackup { .. }
        | AdminRequest::Audit { .. } => ops(app, req).await,
    }
}

fn misrouted() -> AppError {
    AppError::Runtime("an admin request reached the wrong handler".into())
}

/// `edgeauth user ...`
async fn user(app: &Arc<App>, req: AdminRequest) -> Result<Value, AppError> {
    match req {
        AdminRequest::UserAdd {
            tenant,
            username,
            roles,
            groups,
            local,
            password,
            profile,
        } => {
            let source = if local || !app.config.keycloak.enabled() {
                Source::Local
            } else {
                Source::Keycloak
            };
            let view = app
                .auth
                .add(NewUser {
                    profile,
                    key: key(&tenant, &username)?,
                    roles,
                    groups,
                    source,
                    password,
                })
                .await?;
            Ok(to_value(&view))
        }
        AdminRequest::UserList { tenant } => {
            let tenant = tenant
                .map(|t| Tenant::parse(&t).map_err(AppError::Usage))
                .transpose()?;
            Ok(to_value(&app.auth.list(tenant.as_ref())?))
        }
        AdminRequest::UserShow { tenant, username } => {
            Ok(to_value(&app.auth.show(&key(&tenant, &username)?)?))
        }
        AdminRequest::UserSetEnabled {
            tenant,
            username,
            enabled,
        } => {
            let n = app
                .auth
                .set_enabled(&key(&tenant, &username)?, enabled)
                .await?;
            Ok(json!({"revoked_sessions": n}))
        }
        AdminRequest::UserRemove { tenant, username } => {
            let n = app.auth.remove(&key(&tenant, &username)?).await?;
            Ok(json!({"deleted_sessions": n}))
        }
        AdminRequest::UserPasswd {
            tenant,
            username,
            password,
        } => {
            let n = app
                .auth
                .set_password(&key(&tenant, &username)?, &password)
                .await?;
            Ok(json!({"revoked_sessions": n}))
        }
        AdminRequest::UserGroup {
            tenant,
            username,
            group,
            join,
        } => {
            let groups = app
                .auth
                .set_group(&key(&tenant, &username)?, &group, join)
                .await?;
            Ok(json!({"groups": groups}))
        }
        _ => Err(misrouted()),
    }
}

/// `edgeauth sync ...`
async fn sync(app: &Arc<App>, req: AdminRequest) -> Result<Value, AppError> {
    match req {
        AdminRequest::SyncOnce => {
            if !app.upstream.enabled() {
                return Err(AppError::Usage(
                    "no Keycloak is configured; there is nothing to sync".into(),
                ));
            }
            // An operator asking is a reason to look now, not to wait for the next probe.
            if let Err(crate::upstream::UpstreamError::Unavailable(u)) =
                app.upstream.probe_now().await
            {
                return Err(AppError::Refused(format!(
                    "Keycloak is unreachable ({u}); the queue is kept for later"
                )));
            }
            let r = app.sync.cycle(crate::sync::Scope::ReplayAndPull).await?;
            Ok(to_value(&r))
        }
        AdminRequest::SyncList => {
            let items = app.store.read(|r| r.queue_items())?;
            Ok(Value::Array(
                items
                    .iter()
                    .filter(|i| {
                        !matches!(
                            i.status,
                            crate::store::queue::ItemStatus::Done
                                | crate::store::queue::ItemStatus::Superseded
                        )
                    })
                    .map(|i| {
                        json!({
                            "id": i.id, "tenant": i.tenant, "username": i.username, "kind": i.kind,
                            "status": i.status, "attempts": i.attempts, "queued_at": i.queued_at,
                            "next_attempt_at": i.next_attempt_at, "last_error": i.last_error,
                        })
                    })
                    .collect(),
            ))
        }
        AdminRequest::SyncRetry { id } => {
            let now = app.clock.now();
            let found = app
                .store
                .write_blocking(move |w| {
                    let Some(mut item) = w.queue_item(id)? else {
                        return Ok(None);
                    };
                    if item.status != crate::store::queue::ItemStatus::Dead {
                        return Ok(Some(false));
                    }
                    item.status = crate::store::queue::ItemStatus::Pending;
                    item.attempts = 0;
                    item.next_attempt_at = now;
                    item.updated_at = now;
                    w.put_queue_item(&item)?;
                    Ok(Some(true))
                })
                .await?;
            match found {
                None => Err(AppError::Refused(format!("no queue item #{id}"))),
                Some(false) => Err(AppError::Refused(format!(
                    "queue item #{id} is not dead; only dead items are retried by hand"
                ))),
                Some(true) => {
                    app.sync.wake();
                    Ok(json!({"id": id, "status": "pending"}))
                }
            }
        }
        AdminRequest::SyncDrop { id } => {
            let dropped = app
                .store
                .write_blocking(move |w| {
                    let Some(item) = w.queue_item(id)? else {
                        return Ok(None);
                    };
                    if item.status.is_open() {
                        return Ok(Some(false));
                    }
                    w.remove_queue_item(id).map(Some)
                })
                .await?;
            match dropped {
                None => Err(AppError::Refused(format!("no queue item #{id}"))),
                Some(false) => Err(AppError::Refused(format!(
                    "queue item #{id} is still pending; only finished or dead items are dropped"
                ))),
                Some(true) => {
                    log::info!("sync queue item #{id} dropped by an operator");
                    Ok(json!({"id": id, "dropped": true}))
                }
            }
        }
        _ => Err(misrouted()),
    }
}

/// `edgeauth status`, `db ...`, `audit`.
async fn ops(app: &Arc<App>, req: AdminRequest) -> Result<Value, AppError> {
    match req {
        AdminRequest::Status => {
            let a = app.clone();
            let r = blocking(move || a.status().map_err(AppError::from)).await?;
            Ok(to_value(&r))
        }
        AdminRequest::DbCheck => {
            let a = app.clone();
            let r = blocking(move || a.store.check_records().map_err(AppError::from)).await?;
            Ok(to_value(&r))
        }
        AdminRequest::DbBackup { path } => {
            if path.is_relative() {
                return Err(AppError::Usage(format!(
                    "backup path {} must be absolute",
                    path.display()
                )));
            }
            let a = app.clone();
            let p = path.clone();
            let r = blocking(move || a.store.backup_to(&p).map_err(AppError::from)).await?;
            log::info!("backup written to {}", path.display());
            Ok(json!({"path": path, "rows": r}))
        }
        AdminRequest::Audit { limit } => {
            let rows = app.store.read(|r| r.recent_audit(limit.min(10_000)))?;
            Ok(Value::Array(
                rows.into_iter()
                    .map(|(id, r)| {
                        let mut v = to_value(&r);
                        if let Some(o) = v.as_object_mut() {
                            o.insert("id".into(), json!(id));
                        }
                        v
                    })
                    .collect(),
            ))
        }
        _ => Err(misrouted()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Runtime(e.to_string()))?
}

impl From<Result<Value, AppError>> for AdminResponse {
    fn from(r: Result<Value, AppError>) -> Self {
        match r {
            Ok(data) => AdminResponse::Ok { data },
            Err(e) => AdminResponse::Err {
                exit_code: e.exit_code(),
                message: e.to_string(),
            },
        }
    }
}

impl From<AccountError> for AdminResponse {
    fn from(e: AccountError) -> Self {
        Err::<Value, _>(AppError::from(e)).into()
    }
}
