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
pub mod guard;
pub mod kv;
pub mod meta;
mod overlay;
pub mod queue;
pub mod regulation;
pub mod sessions;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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

/// What to run to put a good copy back; messages end with it.
pub const RESTORE_HINT: &str = "`edgeauth db restore SNAPSHOT` (snapshots are in the data dir's `snapshots/` unless `backup.dir` says otherwise)";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database {path} is locked by another process; is `edgeauth serve` running with this data dir?"
    )]
    Locked { path: PathBuf },
    #[error("database {path} is corrupt ({detail}); restore a good copy: {restore}")]
    Corrupt {
        path: PathBuf,
        detail: String,
        restore: String,
    },
    #[error(
        "database {path} is empty (0 bytes) although the data dir was set up before, so its data is gone; restore a good copy: {restore}, or remove it and seal.key to start a new, empty appliance"
    )]
    Empty { path: PathBuf, restore: String },
    #[error(
        "database {path} is missing although {key} is there, so this is not a new data dir; restore a good copy: {restore}, or remove {key} too to start a new, empty appliance"
    )]
    Missing {
        path: PathBuf,
        key: PathBuf,
        restore: String,
    },
    #[error(
        "database {path} was written by a newer edgeauth (schema {found}; this build reads up to {supported}); upgrade edgeauth or restore an older backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    /// The storage under the database fails (full disk, I/O error): writes are refused until
    /// the store has reopened the file (see [`Store::try_recover`]).
    #[error(
        "database {path}: storage failure ({detail}); check free space (`df`) and the device (`dmesg`); the database is reopened by itself once the fault clears"
    )]
    Unavailable { path: PathBuf, detail: String },
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

impl StoreError {
    /// A failure of the file or the device under it rather than of a request: answered with
    /// 503 `storage_unavailable`.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Corrupt { .. } | StoreError::Io { .. }
        )
    }

    /// Replaces the restore command in the message (the caller knows the snapshot to name).
    pub fn with_restore(self, hint: String) -> StoreError {
        match self {
            StoreError::Corrupt { path, detail, .. } => StoreError::Corrupt {
                path,
                detail,
                restore: hint,
            },
            StoreError::Empty { path, .. } => StoreError::Empty {
                path,
                restore: hint,
            },
            StoreError::Missing { path, key, .. } => StoreError::Missing {
                path,
                key,
                restore: hint,
            },
            other => other,
        }
    }

    pub(crate) fn at(self, at: &Path) -> StoreError {
        match self {
            StoreError::Corrupt {
                path,
                detail,
                restore,
            } if path.as_os_str().is_empty() => StoreError::Corrupt {
                path: at.to_path_buf(),
                detail,
                restore,
            },
            StoreError::Unavailable { path, detail } if path.as_os_str().is_empty() => {
                StoreError::Unavailable {
                    path: at.to_path_buf(),
                    detail,
                }
            }
            other => other,
        }
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        // The path is filled in by the Store call that met the error.
        match e {
            redb::Error::Corrupted(detail) => StoreError::Corrupt {
                path: PathBuf::new(),
                detail,
                restore: RESTORE_HINT.into(),
            },
            redb::Error::Io(io) => StoreError::Unavailable {
                path: PathBuf::new(),
                detail: io.to_string(),
            },
            redb::Error::PreviousIo => StoreError::Unavailable {
                path: PathBuf::new(),
                detail: "an earlier write failed, so redb refuses until the file is reopened"
                    .into(),
            },
            redb::Error::DatabaseClosed => StoreError::Unavailable {
                path: PathBuf::new(),
                detail: "the database is being reopened".into(),
            },
            other => StoreError::Db(other.to_string()),
        }
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
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

/// A storage fault in force: since when (Unix seconds) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub since: u64,
    pub detail: String,
    /// The last reopen found the file damaged: only a restore helps.
    pub corrupt: bool,
}

/// How the store (re)opens its file; a test swaps in a backend that fails on demand.
pub type Opener =
    Arc<dyn Fn(&Path, bool) -> std::result::Result<Database, redb::DatabaseError> + Send + Sync>;

fn file_opener() -> Opener {
    Arc::new(|path: &Path, create: bool| {
        let mut b = Database::builder();
        // Every open verifies the checksum of every page of the committed trees, so a damaged
        // file is refused with an error where a plain open may panic inside redb.
        b.set_cache_size(8 << 20).set_check_integrity_on_open(true);
        if create { b.create(path) } else { b.open(path) }
    })
}

/// The open database. Shared by every task; after a storage fault it reopens its file (see
/// [`Store::try_recover`]) without a restart.
pub struct Store {
    /// `None` while a reopen is under way or has failed.
    db: RwLock<Option<Arc<Database>>>,
    path: Arc<Path>,
    opener: Opener,
    fault: Mutex<Option<Fault>>,
    faulted: AtomicBool,
    /// Held by the one reopen that may run at a time.
    reopening: Mutex<()>,
    /// Write transactions committed through [`Store::write`] since open: the proof that the
    /// forward-auth path only reads (design rule 8), in tests and as a metric.
    commits: AtomicU64,
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

/// How long a reopen waits for the transactions in flight on the old handle.
const REOPEN_DRAIN: Duration = Duration::from_secs(5);

impl Store {
    /// Opens the existing database in `data_dir`; a missing or empty file is an error (never
    /// silently a new database: see `App::open` for when one is created).
    pub fn open(data_dir: &Path) -> Result<Store> {
        let path = data_dir.join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => {
                return Err(StoreError::Empty {
                    path,
                    restore: RESTORE_HINT.into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Io {
                    path,
                    detail: "does not exist".into(),
                });
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path,
                    detail: e.to_string(),
                });
            }
        }
        Self::open_with(data_dir, file_opener(), false)
    }

    /// Creates a new database in `data_dir` (made 0700 if needed); refuses an existing file.
    pub fn create(data_dir: &Path) -> Result<Store> {
        let path = data_dir.join(DB_FILE);
        if path.exists() {
            return Err(StoreError::Io {
                path,
                detail: "already exists; a new database is only made in a new data dir".into(),
            });
        }
        Self::open_with(data_dir, file_opener(), true)
    }

    /// Opens the database in `data_dir`, creating it when missing: for scratch stores and
    /// tests only. The appliance's own data dir goes through `App::open`.
    pub fn open_or_create(data_dir: &Path) -> Result<Store> {
        if data_dir.join(DB_FILE).exists() {
            Self::open(data_dir)
        } else {
            Self::create(data_dir)
        }
    }

    /// Opens with `opener` (tests inject storage faults this way).
    pub fn open_with(data_dir: &Path, opener: Opener, create: bool) -> Result<Store> {
        ensure_private_dir(data_dir)?;
        let path: Arc<Path> = data_dir.join(DB_FILE).into();
        let _guard = guard::Guard::enter(&path);
        let db = opener(&path, create).map_err(|e| map_open_error(&path, e))?;
        if create {
            set_private(&path)?;
        }
        let store = Store {
            db: RwLock::new(Some(Arc::new(db))),
            path,
            opener,
            fault: Mutex::new(None),
            faulted: AtomicBool::new(false),
            reopening: Mutex::new(()),
            commits: AtomicU64::new(0),
        };
        store.init_schema()?;
        Ok(store)
    }

    fn init_schema(&self) -> Result<()> {
        let path = self.path.to_path_buf();
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
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current handle, or the fault that keeps it closed.
    fn handle(&self) -> Result<Arc<Database>> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner()).clone();
        db.ok_or_else(|| {
            let fault = self.fault();
            match fault {
                Some(f) if f.corrupt => StoreError::Corrupt {
                    path: self.path.to_path_buf(),
                    detail: f.detail,
                    restore: RESTORE_HINT.into(),
                },
                other => StoreError::Unavailable {
                    path: self.path.to_path_buf(),
                    detail: other
                        .map(|f| f.detail)
                        .unwrap_or_else(|| "the database is being reopened".into()),
                },
            }
        })
    }

    /// Fills in the path of an error met on this store, and records a storage fault.
    fn note(&self, e: StoreError) -> StoreError {
        let e = e.at(&self.path);
        match &e {
            StoreError::Unavailable { detail, .. } => self.set_fault(detail, false),
            StoreError::Corrupt { detail, .. } => self.set_fault(detail, false),
            _ => {}
        }
        e
    }

    fn set_fault(&self, detail: &str, corrupt: bool) {
        let mut f = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_mut() {
            Some(existing) => {
                existing.corrupt = corrupt;
                if existing.detail != detail {
                    existing.detail = detail.to_owned();
                }
            }
            None => {
                log::error!(
                    "database {}: storage failure ({detail}); writes answer 503 storage_unavailable until the database is reopened",
                    self.path.display()
                );
                *f = Some(Fault {
                    since: unix_now(),
                    detail: detail.to_owned(),
                    corrupt,
                });
                self.faulted.store(true, Ordering::Release);
            }
        }
    }

    /// The storage fault in force, if any.
    pub fn fault(&self) -> Option<Fault> {
        if !self.faulted.load(Ordering::Acquire) {
            return None;
        }
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a storage fault: checks that the device takes a write again, then closes the
    /// database (waiting for transactions in flight), reopens it with its integrity check and
    /// proves it writable. One reopen at a time; returns `Ok(true)` when the store is healthy
    /// again, `Ok(false)` when there was nothing to do or another reopen is running.
    pub fn try_recover(&self) -> Result<bool> {
        if !self.faulted.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Ok(_one) = self.reopening.try_lock() else {
            return Ok(false);
        };
        let _guard = guard::Guard::enter(&self.path);
        if let Err(e) = probe_device(&self.path) {
            return Err(self.note(StoreError::Unavailable {
                path: self.path.to_path_buf(),
                detail: e,
            }));
        }
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut old) = old {
            let deadline = Instant::now() + REOPEN_DRAIN;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still) => {
                        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(still);
                        return Ok(false);
                    }
                }
            }
        }
        let db = match (self.opener)(&self.path, false) {
            Ok(db) => db,
            Err(e) => {
                let e = map_open_error(&self.path, e);
                if let StoreError::Corrupt { detail, .. } = &e {
                    self.set_fault(detail, true);
                } else {
                    self.set_fault(&e.to_string(), false);
                }
                return Err(e);
            }
        };
        // Proves the file takes a commit before requests are let in again.
        let probe = (|| -> Result<()> {
            let tx = db.begin_write()?;
            tx.open_table(META)?.insert("last_reopen", unix_now())?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = probe {
            let e = self.note(e);
            return Err(e);
        }
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
        let was = self.fault.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.faulted.store(false, Ordering::Release);
        if let Some(f) = was {
            log::warn!(
                "database {} reopened after a storage failure of {} s ({}); writes are accepted again",
                self.path.display(),
                unix_now().saturating_sub(f.since),
                f.detail
            );
        }
        Ok(true)
    }

    /// Runs `f` on a read snapshot. Microseconds; safe on the async hot path (rule 8).
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx) -> Result<T>) -> Result<T> {
        let _guard = guard::Guard::enter(&self.path);
        let db = self.handle()?;
        let out = (|| {
            let tx = ReadTx {
                tx: db.begin_read()?,
            };
            f(&tx)
        })();
        out.map_err(|e| self.note(e))
    }

    /// Runs `f` in a write transaction and commits (fsync) when it returns `Ok`; on `Err`
    /// nothing is written.
    pub fn write<T>(&self, f: impl FnOnce(&mut WriteTx) -> Result<T>) -> Result<T> {
        let _guard = guard::Guard::enter(&self.path);
        let db = self.handle()?;
        let out = (|| {
            let mut tx = WriteTx {
                tx: db.begin_write()?,
            };
            let out = f(&mut tx)?;
            tx.tx.commit()?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            Ok(out)
        })();
        out.map_err(|e| self.note(e))
    }

    /// Write transactions committed through [`Store::write`] since the store was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` on the raw handle (backups and checks), with the same fault handling.
    pub(crate) fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let _guard = guard::Guard::enter(&self.path);
        let db = self.handle()?;
        f(&db).map_err(|e| self.note(e))
    }
}

pub(crate) fn map_open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Corrupt {
                path,
                detail,
                restore: RESTORE_HINT.into(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::WouldBlock =>
        {
            StoreError::Locked { path }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Corrupt {
                path,
                detail: format!("not a redb database: {io}"),
                restore: RESTORE_HINT.into(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => StoreError::Unavailable {
            path,
            detail: io.to_string(),
        },
        other => StoreError::Corrupt {
            path,
            detail: other.to_string(),
            restore: RESTORE_HINT.into(),
        },
    }
}

/// Writes, syncs and removes a small file beside the database: is the device writable again?
fn probe_device(db: &Path) -> std::result::Result<(), String> {
    use std::io::Write;
    let probe = db.with_extension("probe");
    let r = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    r.map_err(|e| format!("the data dir does not take a write yet: {e}"))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
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
        let store = Store::open_or_create(dir.path()).unwrap();
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
            let s = Store::create(dir.path()).unwrap();
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
        let _s = Store::create(dir.path()).unwrap();
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

#[cfg(test)]
mod fault_tests {
    use super::*;
    use redb::backends::FileBackend;
    use redb::{BackendError, StorageBackend};
    use std::ops::Bound;

    /// A file backend whose writes fail with "No space left on device" while `full` is set.
    #[derive(Debug)]
    struct Flaky {
        inner: FileBackend,
        full: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(28))
            } else {
                Ok(())
            }
        }
    }

    impl StorageBackend for Flaky {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.inner.close()
        }
        fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_range(s, e)
        }
        fn try_lock_shared_range(
            &self,
            s: Bound<u64>,
            e: Bound<u64>,
        ) -> Result<bool, BackendError> {
            self.inner.try_lock_shared_range(s, e)
        }
        fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_range(s, e)
        }
        fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_shared_range(s, e)
        }
        fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.unlock_range(s, e)
        }
        fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.query_lock_range(s, e)
        }
    }

    #[test]
    fn a_failed_write_is_a_fault_and_a_reopen_ends_it_without_losing_commits() {
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicBool::new(false));
        let f = full.clone();
        let opener: Opener = Arc::new(move |path: &Path, create: bool| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .open(path)?;
            let backend = Flaky {
                inner: FileBackend::new(file)?,
                full: f.clone(),
            };
            Database::builder()
                .set_check_integrity_on_open(true)
                .create_with_backend(backend)
        });
        let s = Store::open_with(dir.path(), opener, true).unwrap();
        for i in 0..20 {
            s.write(|w| w.put_kv(&format!("acked-{i}"), b"x")).unwrap();
        }
        full.store(true, Ordering::SeqCst);
        let e = s.write(|w| w.put_kv("lost", b"x")).unwrap_err();
        assert!(e.is_storage(), "{e}");
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
        assert!(s.fault().is_some());
        // While the device is full, a reopen is not even tried.
        assert!(s.try_recover().is_err());
        let again = s.write(|w| w.put_kv("lost2", b"x")).unwrap_err();
        assert!(again.is_storage(), "{again}");
        full.store(false, Ordering::SeqCst);
        assert!(s.try_recover().unwrap(), "reopened");
        assert!(s.fault().is_none());
        s.write(|w| w.put_kv("after", b"x")).unwrap();
        for i in 0..20 {
            assert!(s.read(|r| r.kv(&format!("acked-{i}"))).unwrap().is_some());
        }
        assert!(s.read(|r| r.kv("lost")).unwrap().is_none());
        assert!(s.read(|r| r.kv("after")).unwrap().is_some());
    }
}
