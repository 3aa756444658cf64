//! The `regulation` table: failure counters and bans per user and per client IP, kept in the
//! store so that a restart does not hand an attacker a fresh budget.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{REGULATION, ReadTx, Result, WriteTx, decode, encode};

/// Failures inside the current window, and a ban once they pass the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strikes {
    pub failures: u32,
    pub window_start: u64,
    /// Unix seconds until which attempts are refused; 0 when not banned.
    pub banned_until: u64,
}

impl ReadTx {
    pub fn strikes(&self, key: &str) -> Result<Option<Strikes>> {
        let t = self.tx.open_table(REGULATION)?;
        match t.get(key)? {
            Some(v) => Ok(Some(decode("regulation", key, v.value())?)),
            None => Ok(None),
        }
    }
}

impl WriteTx {
    pub fn strikes(&mut self, key: &str) -> Result<Option<Strikes>> {
        let t = self.tx.open_table(REGULATION)?;
        match t.get(key)? {
            Some(v) => Ok(Some(decode("regulation", key, v.value())?)),
            None => Ok(None),
        }
    }

    pub fn put_strikes(&mut self, key: &str, s: &Strikes) -> Result<()> {
        self.tx
            .open_table(REGULATION)?
            .insert(key, encode(s).as_slice())?;
        Ok(())
    }

    pub fn clear_strikes(&mut self, key: &str) -> Result<()> {
        self.tx.open_table(REGULATION)?.remove(key)?;
        Ok(())
    }

    /// Deletes counters whose window and ban are both over at `now`.
    pub fn purge_strikes(&mut self, now: u64, find_time: u64) -> Result<u64> {
        let mut t = self.tx.open_table(REGULATION)?;
        let before = t.len_hint();
        t.retain(|_, v| {
            serde_json::from_slice::<Strikes>(v)
                .map(|s| s.banned_until > now || s.window_start.saturating_add(find_time) > now)
                .unwrap_or(false)
        })?;
        Ok(before.saturating_sub(t.len_hint()))
    }
}

trait LenHint {
    fn len_hint(&self) -> u64;
}

impl<T: redb::ReadableTableMetadata> LenHint for T {
    fn len_hint(&self) -> u64 {
        self.len().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[test]
    fn put_get_clear_purge() {
        let (_d, s) = temp_store();
        let live = Strikes {
            failures: 2,
            window_start: 100,
            banned_until: 0,
        };
        let banned = Strikes {
            failures: 5,
            window_start: 10,
            banned_until: 500,
        };
        let old = Strikes {
            failures: 1,
            window_start: 10,
            banned_until: 0,
        };
        s.write(|w| {
            w.put_strikes("u:default/a", &live)?;
            w.put_strikes("u:default/b", &banned)?;
            w.put_strikes("ip:10.0.0.1", &old)
        })
        .unwrap();
        assert_eq!(s.read(|r| r.strikes("u:default/a")).unwrap(), Some(live));
        assert_eq!(s.write(|w| w.purge_strikes(150, 120)).unwrap(), 1);
        assert!(s.read(|r| r.strikes("ip:10.0.0.1")).unwrap().is_none());
        s.write(|w| w.clear_strikes("u:default/a")).unwrap();
        assert!(s.read(|r| r.strikes("u:default/a")).unwrap().is_none());
        assert_eq!(s.read(|r| r.strikes("u:default/b")).unwrap(), Some(banned));
    }
}
