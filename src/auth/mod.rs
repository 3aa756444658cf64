//! Authentication rules: login, sessions, password changes, account administration and the
//! regulation policy. Everything here speaks domain types and returns [`AuthError`], which the
//! HTTP layer maps to status codes in exactly one place (`http::error`).

pub mod accounts;
pub mod login;
pub mod password;
pub mod refresh;
pub mod regulation;
pub mod session;

use std::net::IpAddr;

use crate::crypto::HashError;
use crate::domain::{Tenant, UserKey, Username};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error(
        "Keycloak wants an action on this account first (for example changing a temporary password); sign in to Keycloak's account console, then try again"
    )]
    AccountSetupRequired,
    #[error("too many failed attempts; try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    #[error("the appliance is busy verifying other logins; try again shortly")]
    Overloaded,
    #[error("{0}")]
    WeakPassword(String),
    #[error(
        "Keycloak is unreachable and this account has not signed in online recently enough to be let in offline"
    )]
    OfflineLoginExpired,
    #[error("Keycloak is unreachable and offline logins are not allowed at this site")]
    OfflineLoginNotAllowed,
    /// The action needs Keycloak and the current mode or policy forbids it.
    #[error("{0}")]
    DegradedModeForbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded(_) => AuthError::Overloaded,
            HashError::Failed(m) => AuthError::Internal(m),
        }
    }
}

/// Who is asking: recorded in the audit log and used by regulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
}

/// Parses the (tenant?, username) pair of a request body.
pub fn user_key(tenant: Option<&str>, username: &str) -> Result<UserKey, AuthError> {
    let tenant = match tenant {
        None | Some("") => Tenant::default_tenant(),
        Some(t) => Tenant::parse(t).map_err(AuthError::BadRequest)?,
    };
    let username = Username::parse(username).map_err(AuthError::BadRequest)?;
    Ok(UserKey::new(tenant, username))
}

/// Longest password accepted, so a megabyte "password" cannot make argon2 do extra work.
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub fn check_password_input(field: &str, password: &str) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::BadRequest(format!(
            "`{field}` must not be empty"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadRequest(format!(
            "`{field}` is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Runs a store write on the blocking pool (a commit waits for fsync).
pub(crate) async fn write<T: Send + 'static>(
    store: &std::sync::Arc<crate::store::Store>,
    f: impl FnOnce(&mut crate::store::WriteTx) -> crate::store::Result<T> + Send + 'static,
) -> Result<T, AuthError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.write(f))
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
        .map_err(AuthError::Store)
}
