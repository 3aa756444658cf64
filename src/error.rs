//! The top-level error of the binary, mapped once to an exit code and a one-line message.
//!
//! Exit codes: 0 success; 1 the operation was refused or failed (no such user, user exists,
//! bad password); 2 usage or configuration error; 3 the database or a key file cannot be used
//! (locked, corrupt, newer schema, unreadable); 4 the server or a socket failed at runtime.

use crate::auth::AuthError;
use crate::auth::accounts::AccountError;
use crate::config::ConfigError;
use crate::crypto::KeyError;
use crate::store::StoreError;
use crate::sync::SyncError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Runtime(String),
    /// An error reported by a running server over the admin socket, with its exit code.
    #[error("{1}")]
    Remote(i32, String),
}

impl AppError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Refused(_) => 1,
            AppError::Config(_) | AppError::Usage(_) => 2,
            AppError::Store(_) | AppError::Key(_) => 3,
            AppError::Runtime(_) => 4,
            AppError::Remote(code, _) => *code,
        }
    }
}

impl From<AccountError> for AppError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Auth(a) => a.into(),
            other => AppError::Refused(other.to_string()),
        }
    }
}

impl From<SyncError> for AppError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Store(s) => AppError::Store(s),
            SyncError::NotConfigured => AppError::Usage(e.to_string()),
            SyncError::Internal(m) => AppError::Runtime(m),
        }
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(s) => AppError::Store(s),
            AuthError::Internal(m) => AppError::Runtime(m),
            other => AppError::Refused(other.to_string()),
        }
    }
}
