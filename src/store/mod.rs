//! The store: one redb file in the data dir, typed tables, one write transaction per user
//! action (design rule 3: a 2xx is sent only after its commit).
//!
//! Callers never see redb: they get a [`ReadTx`] or [`WriteTx`] whose typed methods live in one
//! module per table family ([`users`], [`sessions`], [`audit`], [`regulation`], [`meta`]).
//! Records are JSON so that a field added later reads old rows, and every decode failure is a
//! [`StoreError::Decode`] naming the table and key, never a panic.

pub mod audit;
pub mod backup;
mod blocking;
pub mod kv;
pub mod meta;
pub mod queue;
pub mod regulation;
pub mod sessions;
pub mod users;

use std::path::{Path, PathBuf};

use redb::{Database, MultimapTableDefinition, ReadableDatabase, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The schema this build writes. A file with a higher number is refused.
pub const SCHEMA_VERSION: u64 = 1;
pub const DB_FILE: &str = "edgeauth.redb";

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(crate) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
pub(crate) const USER_SESSIONS: MultimapTableDefinition<&str, &[u8]> =
    MultimapTableDefinition::new("user_sessions");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub(crate) const REGULATION: TableDefinition<&str, &[u8]> = TableDefinition::new("regulation");
/// Cached documents from Keycloak (discovery, JWKS), so a cold start during an outage serves.
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Changes accepted during an outage, replayed to Keycloak in order (design §9).
pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("sync_queue");
/// One record per sync cycle.
pub(crate) const SYNC_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("sync_log");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database {path} is locked by another process; is `edgeauth serve` running with this data dir?"
    )]
    Locked { path: PathBuf },
    #[error(
        "database {path} is corrupt ({detail}); restore it from a backup made with `edgeauth db backup`"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "database {path} was written by a newer edgeauth (schema {found}; this build reads up to {supported}); upgrade edgeauth or restore an older backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("database {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("database record in table `{table}` key {key:?} cannot be read: {detail}")]
    Decode {
        table: &'static str,
        key: String,
        detail: String,
    },
    #[error("database error: {0}")]
    Db(String),
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::Corrupted(detail) => StoreError::Corrupt { path: PathBuf::from("<open database>"), detail },
                    other => StoreError::Db(other.to_string()),
                }
            }
        }
    )*};
}
db_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A consistent snapshot for reading.
pub struct ReadTx {
    pub(crate) tx: redb::ReadTransaction,
}

/// One write transaction; committed by [`Store::write`] when the closure returns `Ok`.
pub struct WriteTx {
    pub(crate) tx: redb::WriteTransaction,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        Self::open_inner(data_dir, false)
    }

    /// Opens the database and runs redb's full integrity check first (for `db check`).
    pub fn open_checked(data_dir: &Path) -> Result<Store> {
        Self::open_inner(data_dir, true)
    }

    fn open_inner(data_dir: &Path, check: bool) -> Result<Store> {
        ensure_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let existed = path.exists();
        let map_open = |e: redb::DatabaseError| match e {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => {
                StoreError::Locked { path: path.clone() }
            }
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                StoreError::Corrupt {
                    path: path.clone(),
                    detail,
                }
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock =>
            {
                StoreError::Locked { path: path.clone() }
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) => StoreError::Io {
                path: path.clone(),
                detail: io.to_string(),
            },
            other => StoreError::Corrupt {
                path: path.clone(),
                detail: other.to_string(),
            },
        };
        let mut db = Database::builder()
            .set_cache_size(8 << 20)
            .create(&path)
            .map_err(map_open)?;
        if !existed {
            set_private(&path)?;
        }
        if check {
            match db.check_integrity() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(StoreError::Corrupt {
                        path,
                        detail: "integrity check repaired damage; verify the data".into(),
                    });
                }
                Err(e) => return Err(map_open(e)),
            }
        }
        let store = Store { db, path };
        store.init_schema()?;
        Ok(store)
    }

    fn init_schema(&self) -> Result<()> {
        let path = self.path.clone();
        self.write(|w| {
            let found = w.schema_version()?;
            match found {
                None => w.set_schema_version(SCHEMA_VERSION)?,
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path,
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
            }
            // Open every table once so readers never meet a missing one.
            w.tx.open_table(USERS)?;
            w.tx.open_table(SESSIONS)?;
            w.tx.open_multimap_table(USER_SESSIONS)?;
            w.tx.open_table(AUDIT)?;
            w.tx.open_table(REGULATION)?;
            w.tx.open_table(KV)?;
            w.tx.open_table(QUEUE)?;
            w.tx.open_table(SYNC_LOG)?;
            Ok(())
        })
        .map_err(|e| match e {
            StoreError::Corrupt { detail, .. } => StoreError::Corrupt {
                path: self.path.clone(),
                detail,
            },
            other => other,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read snapshot. Microseconds; safe on the async hot path (rule 8).
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx) -> Result<T>) -> Result<T> {
        let tx = ReadTx {
            tx: self.db.begin_read()?,
        };
        f(&tx)
    }

    /// Runs `f` in a write transaction and commits (fsync) when it returns `Ok`; on `Err`
    /// nothing is written.
    pub fn write<T>(&self, f: impl FnOnce(&mut WriteTx) -> Result<T>) -> Result<T> {
        let mut tx = WriteTx {
            tx: self.db.begin_write()?,
        };
        let out = f(&mut tx)?;
        tx.tx.commit()?;
        Ok(out)
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain structs to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: impl std::fmt::Display,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        table,
        key: key.to_string(),
        detail: e.to_string(),
    })
}

fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            detail: format!("cannot create the data dir: {e}"),
        })
}

fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        StoreError::Io {
            path: path.to_path_buf(),
            detail: format!("cannot make the file private: {e}"),
        }
    })
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.write(|w| w.set_schema_version(SCHEMA_VERSION + 1))
                .unwrap();
        }
        let e = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(e, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{e}"
        );
        assert!(e.to_string().contains("newer edgeauth"));
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _s = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 64 * 1024]).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(e, StoreError::Corrupt { .. } | StoreError::Io { .. }),
            "{e}"
        );
    }

    #[test]
    fn db_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _s) = testing::temp_store();
        let mode = std::fs::metadata(dir.path().join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
