//! Consistent copies, checks, rotating snapshots and restores of the whole database.
//!
//! A backup reads one snapshot (a redb read transaction) and writes it into a new database
//! file, so it is consistent even while `edgeauth serve` keeps writing. Snapshots are such
//! backups taken every `backup.snapshot_interval` into `backup.dir`, the newest
//! `backup.snapshots` kept; each one records the identity of the sealing key (never the key),
//! so a restore can tell whether the `seal.key` beside it opens its secrets. A check (`db
//! check`, and `db restore` before it replaces anything) runs redb's integrity check through a
//! copy-on-write view, so the file checked is never modified.

use std::path::{Path, PathBuf};

use redb::{Database, Key, ReadableMultimapTable, ReadableTable, TableDefinition, Value};
use serde::Serialize;

use super::audit::AuditRecord;
use super::regulation::Strikes;
use super::sessions::SessionRecord;
use super::users::UserRecord;
use super::{
    AUDIT, KV, META, QUEUE, REGULATION, RESTORE_HINT, Result, SCHEMA_VERSION, SESSIONS, SYNC_LOG,
    Store, StoreError, USER_SESSIONS, USERS, decode, guard, overlay::Overlay,
};

/// Rows per table, as `db check` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub users: u64,
    pub sessions: u64,
    pub audit: u64,
    pub regulation: u64,
}

fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    let mut n = 0;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

impl Store {
    /// Writes a consistent copy of the database to `dest` (which must not exist).
    pub fn backup_to(&self, dest: &Path) -> Result<CheckReport> {
        let io = |detail: String| StoreError::Io {
            path: dest.to_path_buf(),
            detail,
        };
        if dest.exists() {
            return Err(io("already exists; choose a new file name".into()));
        }
        let tmp = dest.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let report = self.with_db(|db| {
            use redb::ReadableDatabase;
            let out = Database::create(&tmp).map_err(|e| io(e.to_string()))?;
            let src = db.begin_read()?;
            let dst = out.begin_write()?;
            copy_table(&src, &dst, META)?;
            copy_table(&src, &dst, KV)?;
            copy_table(&src, &dst, QUEUE)?;
            copy_table(&src, &dst, SYNC_LOG)?;
            let report = CheckReport {
                users: copy_table(&src, &dst, USERS)?,
                sessions: copy_table(&src, &dst, SESSIONS)?,
                audit: copy_table(&src, &dst, AUDIT)?,
                regulation: copy_table(&src, &dst, REGULATION)?,
            };
            {
                let from = src.open_multimap_table(USER_SESSIONS)?;
                let mut to = dst.open_multimap_table(USER_SESSIONS)?;
                for row in from.iter()? {
                    let (k, vals) = row?;
                    for v in vals {
                        to.insert(k.value(), v?.value())?;
                    }
                }
            }
            dst.commit()?;
            drop(out);
            Ok::<_, StoreError>(report)
        });
        match report {
            Ok(r) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
                std::fs::rename(&tmp, dest).map_err(|e| io(e.to_string()))?;
                sync_dir(dest);
                Ok(r)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Decodes every record of every table; the first unreadable one is the error.
    pub fn check_records(&self) -> Result<CheckReport> {
        self.with_db(|db| {
            use redb::ReadableDatabase;
            check_records(&db.begin_read()?)
        })
    }
}

fn check_records(tx: &redb::ReadTransaction) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    for row in tx.open_table(USERS)?.iter()? {
        let (k, v) = row?;
        decode::<UserRecord>("users", k.value(), v.value())?;
        r.users += 1;
    }
    for row in tx.open_table(SESSIONS)?.iter()? {
        let (_, v) = row?;
        decode::<SessionRecord>("sessions", "…", v.value())?;
        r.sessions += 1;
    }
    for row in tx.open_table(AUDIT)?.iter()? {
        let (k, v) = row?;
        decode::<AuditRecord>("audit", k.value(), v.value())?;
        r.audit += 1;
    }
    for row in tx.open_table(REGULATION)?.iter()? {
        let (k, v) = row?;
        decode::<Strikes>("regulation", k.value(), v.value())?;
        r.regulation += 1;
    }
    Ok(r)
}

/// What a check of a database file found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    pub rows: CheckReport,
    pub schema: u64,
    /// The identity of the sealing key the file's secrets are sealed with, when recorded.
    pub seal_key_id: Option<u64>,
}

/// Checks the database file at `path` the way `db check` does: redb's integrity check of every
/// page, the schema, and every record. The file is not modified (the check's repairs stay in
/// memory), and a running server's lock is respected.
pub fn check_file(path: &Path) -> Result<FileCheck> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
        restore: RESTORE_HINT.into(),
    };
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => {
            return Err(StoreError::Empty {
                path: path.to_path_buf(),
                restore: RESTORE_HINT.into(),
            });
        }
        Ok(m) if !m.is_file() => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                detail: "is not a file".into(),
            });
        }
        Ok(_) => {}
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                detail: e.to_string(),
            });
        }
    }
    // Read-write only so that redb's exclusive lock can be taken; nothing is written. A file
    // that cannot be opened for writing (a read-only stick) is checked without locks.
    let open_err = |e: std::io::Error| StoreError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot open for checking: {e}"),
    };
    let (file, locking) = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => (f, true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            (std::fs::File::open(path).map_err(open_err)?, false)
        }
        Err(e) => return Err(open_err(e)),
    };
    let backend = Overlay::new(file, locking).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let at: std::sync::Arc<Path> = path.into();
    let _guard = guard::Guard::enter(&at);
    let db = Database::builder()
        .set_cache_size(8 << 20)
        .set_check_integrity_on_open(true)
        .create_with_backend(backend)
        .map_err(|e| super::map_open_error(path, e))?;
    use redb::ReadableDatabase;
    let tx = db.begin_read().map_err(|e| StoreError::from(e).at(path))?;
    let (schema, seal_key_id, rows) = (|| -> Result<(Option<u64>, Option<u64>, CheckReport)> {
        let rt = super::ReadTx { tx };
        Ok((
            rt.schema_version()?,
            rt.seal_key_id()?,
            check_records(&rt.tx)?,
        ))
    })()
    .map_err(|e| match e {
        StoreError::Db(d) if d.contains("does not exist") => {
            corrupt(format!("not an edgeauth database: {d}"))
        }
        other => other.at(path),
    })?;
    let schema = schema.ok_or_else(|| corrupt("no schema version recorded".into()))?;
    if schema > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: schema,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(FileCheck {
        rows,
        schema,
        seal_key_id,
    })
}

/// Flushes a directory entry change (a rename) to the device; best effort.
pub(crate) fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// One snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub file: PathBuf,
    /// When it was taken (the appliance's clock, Unix seconds), from its name.
    pub at: u64,
    pub seal_key_id: String,
    pub bytes: u64,
}

const SNAPSHOT_PREFIX: &str = "edgeauth-";
const SNAPSHOT_SUFFIX: &str = ".redb";

/// The 16 hex digits a key identity is written as.
pub fn key_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// `edgeauth-<unix seconds, 12 digits>-<key id>.redb`: names sort by time.
fn snapshot_name(at: u64, key_id: u64) -> String {
    format!(
        "{SNAPSHOT_PREFIX}{at:012}-{}{SNAPSHOT_SUFFIX}",
        key_id_hex(key_id)
    )
}

fn parse_snapshot_name(name: &str) -> Option<(u64, String)> {
    let body = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    let (at, id) = body.split_once('-')?;
    (at.len() == 12 && id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    Some((at.parse().ok()?, id.to_owned()))
}

/// The snapshots in `dir`, oldest first.
pub fn list_snapshots(dir: &Path) -> Vec<SnapshotInfo> {
    let mut out: Vec<SnapshotInfo> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (at, seal_key_id) = parse_snapshot_name(&name)?;
            let bytes = e.metadata().ok()?.len();
            Some(SnapshotInfo {
                file: e.path(),
                at,
                seal_key_id,
                bytes,
            })
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

impl Store {
    /// Takes a snapshot into `dir` (made 0700 if needed) named for `now` and `key_id`,
    /// verifies it, and deletes the oldest beyond `keep`.
    pub fn snapshot(&self, dir: &Path, now: u64, key_id: u64, keep: usize) -> Result<SnapshotInfo> {
        super::ensure_private_dir(dir)?;
        let dest = dir.join(snapshot_name(now, key_id));
        if dest.exists() {
            return Err(StoreError::Io {
                path: dest,
                detail: "a snapshot of this second exists already".into(),
            });
        }
        self.backup_to(&dest)?;
        // Read back through the integrity check: a card that wrote garbage fails here, not at
        // the restore.
        if let Err(e) = check_file(&dest) {
            let _ = std::fs::remove_file(&dest);
            return Err(e);
        }
        let all = list_snapshots(dir);
        for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
            if let Err(e) = std::fs::remove_file(&old.file) {
                log::warn!("cannot delete the old snapshot {}: {e}", old.file.display());
            }
        }
        let bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        Ok(SnapshotInfo {
            file: dest,
            at: now,
            seal_key_id: key_id_hex(key_id),
            bytes,
        })
    }
}

/// Copies `src` over the database `dest` (which must not be open): through a temporary file
/// beside it, synced, then renamed; an existing `dest` is first renamed to `<dest>.replaced-<now>`,
/// which is returned.
pub fn replace_file(src: &Path, dest: &Path, now: u64) -> Result<Option<PathBuf>> {
    let io = |path: &Path, e: std::io::Error| StoreError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let tmp = dest.with_extension("restoring");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut from = std::fs::File::open(src).map_err(|e| io(src, e))?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        let copied = std::io::copy(&mut from, &mut to).and_then(|n| to.sync_all().map(|_| n));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp, e));
        }
    }
    let kept = if dest.exists() {
        let aside = PathBuf::from(format!("{}.replaced-{now}", dest.display()));
        std::fs::rename(dest, &aside).map_err(|e| io(dest, e))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&tmp, dest).map_err(|e| io(dest, e))?;
    sync_dir(dest);
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::testing::temp_store;
    use crate::store::users::sample;

    #[test]
    fn backup_is_a_readable_copy() {
        let (dir, s) = temp_store();
        s.write(|w| w.put_user(&sample("alice"))).unwrap();
        s.write(|w| {
            w.insert_session(
                &[7; 32],
                &crate::store::sessions::SessionRecord {
                    tenant: crate::domain::Tenant::default_tenant(),
                    username: crate::domain::Username::parse("alice").unwrap(),
                    auth_mode: crate::domain::AuthMode::Local,
                    created_at: 1,
                    last_seen: 1,
                    expires_at: 9,
                    revoked_at: None,
                    revoked_reason: None,
                    keycloak: None,
                },
            )
        })
        .unwrap();
        let dest_dir = dir.path().join("restore");
        std::fs::create_dir(&dest_dir).unwrap();
        let dest = dest_dir.join(crate::store::DB_FILE);
        let rep = s.backup_to(&dest).unwrap();
        assert_eq!((rep.users, rep.sessions), (1, 1));
        assert!(s.backup_to(&dest).is_err(), "never overwrites");
        let before = std::fs::read(&dest).unwrap();
        let checked = super::check_file(&dest).unwrap();
        assert_eq!(checked.rows, rep);
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            before,
            "a check changes nothing"
        );
        let copy = Store::open(&dest_dir).unwrap();
        assert_eq!(copy.check_records().unwrap(), rep);
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use crate::store::testing::temp_store;
    use crate::store::users::sample;

    #[test]
    fn snapshots_rotate_and_record_the_key_identity() {
        let (dir, s) = temp_store();
        s.write(|w| {
            w.set_seal_key_id(0xabcd)?;
            w.put_user(&sample("alice"))
        })
        .unwrap();
        let snaps = dir.path().join("snapshots");
        for t in 0..4 {
            s.snapshot(&snaps, 1_000 + t, 0xabcd, 2).unwrap();
        }
        let all = list_snapshots(&snaps);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].at, 1_003);
        assert_eq!(all[1].seal_key_id, "000000000000abcd");
        let c = check_file(&all[1].file).unwrap();
        assert_eq!((c.rows.users, c.seal_key_id), (1, Some(0xabcd)));
    }

    #[test]
    fn replace_keeps_the_old_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        let kept = replace_file(&a, &b, 7).unwrap().unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert_eq!(std::fs::read(kept).unwrap(), b"old");
    }
}

/// The snapshots taken so far, as status shows them.
#[derive(Debug, Clone, Default)]
pub struct SnapshotState {
    pub last_good: Option<SnapshotInfo>,
    pub kept: usize,
    /// When the last attempt failed, and why (cleared by the next good one).
    pub last_error: Option<(u64, String)>,
}
