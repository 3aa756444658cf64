//! The `audit` table: every login attempt and account change, in order. Never a password.

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{AUDIT, ReadTx, Result, WriteTx, decode, encode};
use crate::domain::AuthMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    Login,
    /// HTTP Basic credentials verified at forward-auth (a login without a session).
    BasicAuth,
    Logout,
    PasswordChange,
    UserAdmin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: u64,
    pub event: AuditEvent,
    pub tenant: String,
    pub username: String,
    pub client_ip: Option<String>,
    /// `ok`, `invalid_credentials`, `account_disabled`, `too_many_attempts`, ...
    pub outcome: String,
    pub auth_mode: Option<AuthMode>,
}

impl ReadTx {
    /// The newest `limit` rows, oldest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<(u64, AuditRecord)>> {
        let t = self.tx.open_table(AUDIT)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in t.iter()?.rev().take(limit) {
            let (k, v) = row?;
            out.push((k.value(), decode("audit", k.value(), v.value())?));
        }
        out.reverse();
        Ok(out)
    }

    pub fn audit_count(&self) -> Result<u64> {
        Ok(self.tx.open_table(AUDIT)?.len()?)
    }
}

impl WriteTx {
    /// Appends a row; its id is one more than the last.
    pub fn append_audit(&mut self, rec: &AuditRecord) -> Result<u64> {
        let mut t = self.tx.open_table(AUDIT)?;
        let id = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        t.insert(id, encode(rec).as_slice())?;
        Ok(id)
    }

    /// Deletes rows written before `before` (Unix seconds). Rows are in time order, so this
    /// stops at the first younger row.
    pub fn purge_audit(&mut self, before: u64) -> Result<u64> {
        let mut t = self.tx.open_table(AUDIT)?;
        let mut n = 0;
        loop {
            let Some((id, at)) = t.first()?.map(|(k, v)| {
                let at = decode::<AuditRecord>("audit", k.value(), v.value())
                    .map(|r| r.at)
                    .unwrap_or(0);
                (k.value(), at)
            }) else {
                break;
            };
            if at >= before {
                break;
            }
            t.remove(id)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn row(at: u64) -> AuditRecord {
        AuditRecord {
            at,
            event: AuditEvent::Login,
            tenant: "default".into(),
            username: "alice".into(),
            client_ip: Some("127.0.0.1".into()),
            outcome: "ok".into(),
            auth_mode: Some(AuthMode::Local),
        }
    }

    #[test]
    fn append_recent_purge() {
        let (_d, s) = temp_store();
        for at in [10, 20, 30, 40] {
            s.write(|w| w.append_audit(&row(at))).unwrap();
        }
        let recent = s.read(|r| r.recent_audit(2)).unwrap();
        assert_eq!(
            recent.iter().map(|(id, r)| (*id, r.at)).collect::<Vec<_>>(),
            vec![(3, 30), (4, 40)]
        );
        assert_eq!(s.write(|w| w.purge_audit(25)).unwrap(), 2);
        assert_eq!(s.read(|r| r.audit_count()).unwrap(), 2);
        assert_eq!(s.write(|w| w.append_audit(&row(50))).unwrap(), 5);
    }
}
