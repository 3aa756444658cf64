//! Consistent copies and record-level checks of the whole database.
//!
//! A backup reads one snapshot (a redb read transaction) and writes it into a new database
//! file, so it is consistent even while `edgeauth serve` keeps writing.

use std::path::Path;

use redb::{Database, Key, ReadableMultimapTable, ReadableTable, TableDefinition, Value};
use serde::Serialize;

use super::audit::AuditRecord;
use super::regulation::Strikes;
use super::sessions::SessionRecord;
use super::users::UserRecord;
use super::{
    AUDIT, KV, META, QUEUE, REGULATION, Result, SESSIONS, SYNC_LOG, Store, StoreError,
    USER_SESSIONS, USERS, decode,
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
        let report = (|| {
            let out = Database::create(&tmp).map_err(|e| io(e.to_string()))?;
            let src = self.db_begin_read()?;
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
            Ok::<_, StoreError>(report)
        })();
        match report {
            Ok(r) => {
                std::fs::rename(&tmp, dest).map_err(|e| io(e.to_string()))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600));
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
        let tx = self.db_begin_read()?;
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

    fn db_begin_read(&self) -> Result<redb::ReadTransaction> {
        use redb::ReadableDatabase;
        Ok(self.db.begin_read()?)
    }
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
        let copy = Store::open(&dest_dir).unwrap();
        assert_eq!(copy.check_records().unwrap(), rep);
    }
}
