//! The `sync_queue` and `sync_log` tables (design §9). An item is a change the site accepted
//! while Keycloak was unreachable; its payload (a password, say) is sealed. Items are replayed
//! in id order, which is the order they were accepted in.

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{QUEUE, ReadTx, Result, SYNC_LOG, WriteTx, decode, encode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    PasswordChange,
    UserProvision,
    GroupChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Pending,
    Done,
    /// Tried and failed; retried after `next_attempt_at`.
    Failed,
    /// Gave up after `max_attempts` (or a refusal that cannot change): an alert.
    Dead,
    /// Keycloak already holds a newer change: not replayed.
    Superseded,
}

impl ItemStatus {
    pub fn is_open(self) -> bool {
        matches!(self, ItemStatus::Pending | ItemStatus::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: u64,
    pub tenant: String,
    pub username: String,
    pub kind: ItemKind,
    /// The sealed payload, hex (never shown, never logged).
    pub payload_hex: String,
    pub queued_at: u64,
    /// The same instant in milliseconds, compared with Keycloak's credential `createdDate`.
    #[serde(default)]
    pub queued_at_ms: u64,
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub status: ItemStatus,
    pub last_error: Option<String>,
    pub updated_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncLogRecord {
    pub started: u64,
    pub completed: u64,
    pub processed: u64,
    pub failed: u64,
    pub pulled: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub pending: u64,
    pub failed: u64,
    pub dead: u64,
}

impl ReadTx {
    pub fn queue_items(&self) -> Result<Vec<QueueItem>> {
        let t = self.tx.open_table(QUEUE)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(decode("sync_queue", k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn queue_item(&self, id: u64) -> Result<Option<QueueItem>> {
        let t = self.tx.open_table(QUEUE)?;
        match t.get(id)? {
            Some(v) => Ok(Some(decode("sync_queue", id, v.value())?)),
            None => Ok(None),
        }
    }

    pub fn queue_counts(&self) -> Result<QueueCounts> {
        let mut c = QueueCounts::default();
        for i in self.queue_items()? {
            match i.status {
                ItemStatus::Pending => c.pending += 1,
                ItemStatus::Failed => c.failed += 1,
                ItemStatus::Dead => c.dead += 1,
                ItemStatus::Done | ItemStatus::Superseded => {}
            }
        }
        Ok(c)
    }

    pub fn last_sync(&self) -> Result<Option<SyncLogRecord>> {
        let t = self.tx.open_table(SYNC_LOG)?;
        match t.last()? {
            Some((k, v)) => Ok(Some(decode("sync_log", k.value(), v.value())?)),
            None => Ok(None),
        }
    }

    pub fn sync_log_len(&self) -> Result<u64> {
        Ok(self.tx.open_table(SYNC_LOG)?.len()?)
    }
}

impl WriteTx {
    /// Appends an item; its id (the next after the last) is set here and returned.
    pub fn enqueue(&mut self, mut item: QueueItem) -> Result<u64> {
        let mut t = self.tx.open_table(QUEUE)?;
        let id = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        item.id = id;
        t.insert(id, encode(&item).as_slice())?;
        Ok(id)
    }

    pub fn put_queue_item(&mut self, item: &QueueItem) -> Result<()> {
        self.tx
            .open_table(QUEUE)?
            .insert(item.id, encode(item).as_slice())?;
        Ok(())
    }

    pub fn queue_item(&mut self, id: u64) -> Result<Option<QueueItem>> {
        let t = self.tx.open_table(QUEUE)?;
        match t.get(id)? {
            Some(v) => Ok(Some(decode("sync_queue", id, v.value())?)),
            None => Ok(None),
        }
    }

    pub fn remove_queue_item(&mut self, id: u64) -> Result<bool> {
        Ok(self.tx.open_table(QUEUE)?.remove(id)?.is_some())
    }

    /// Deletes finished items (done, superseded) last updated before `before`.
    pub fn purge_queue(&mut self, before: u64) -> Result<u64> {
        let mut t = self.tx.open_table(QUEUE)?;
        let len = t.len()?;
        t.retain(|_, v| {
            serde_json::from_slice::<QueueItem>(v)
                .map(|i| {
                    i.status.is_open() || i.status == ItemStatus::Dead || i.updated_at >= before
                })
                .unwrap_or(true)
        })?;
        Ok(len.saturating_sub(t.len()?))
    }

    pub fn append_sync_log(&mut self, r: &SyncLogRecord) -> Result<u64> {
        let mut t = self.tx.open_table(SYNC_LOG)?;
        let id = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        t.insert(id, encode(r).as_slice())?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn item(user: &str, status: ItemStatus) -> QueueItem {
        QueueItem {
            id: 0,
            tenant: "default".into(),
            username: user.into(),
            kind: ItemKind::PasswordChange,
            payload_hex: "00".into(),
            queued_at: 10,
            queued_at_ms: 10_000,
            attempts: 0,
            next_attempt_at: 10,
            status,
            last_error: None,
            updated_at: 10,
        }
    }

    #[test]
    fn enqueue_count_purge() {
        let (_d, s) = temp_store();
        let a = s
            .write(|w| w.enqueue(item("a", ItemStatus::Pending)))
            .unwrap();
        let b = s.write(|w| w.enqueue(item("b", ItemStatus::Done))).unwrap();
        s.write(|w| w.enqueue(item("c", ItemStatus::Dead))).unwrap();
        assert_eq!((a, b), (1, 2));
        let c = s.read(|r| r.queue_counts()).unwrap();
        assert_eq!((c.pending, c.failed, c.dead), (1, 0, 1));
        assert_eq!(
            s.write(|w| w.purge_queue(11)).unwrap(),
            1,
            "only the done item goes"
        );
        assert_eq!(s.read(|r| r.queue_items()).unwrap().len(), 2);
        s.write(|w| {
            w.append_sync_log(&SyncLogRecord {
                started: 1,
                completed: 2,
                ..Default::default()
            })
        })
        .unwrap();
        assert_eq!(s.read(|r| r.last_sync()).unwrap().unwrap().completed, 2);
    }
}
