//! The `meta` table: schema version and the clock floor (design rule 7).

use redb::ReadableTable;

use super::{META, ReadTx, Result, WriteTx};

const SCHEMA_VERSION: &str = "schema_version";
const CLOCK_FLOOR: &str = "clock_floor";
/// The identity of the sealing key this database's secrets are sealed with (never the key).
const SEAL_KEY_ID: &str = "seal_key_id";

impl ReadTx {
    /// The latest time this store has seen (Unix seconds), 0 for a new store.
    pub fn clock_floor(&self) -> Result<u64> {
        let t = self.tx.open_table(META)?;
        Ok(t.get(CLOCK_FLOOR)?.map(|v| v.value()).unwrap_or(0))
    }

    /// The identity of the sealing key recorded by the first start, if any.
    pub fn seal_key_id(&self) -> Result<Option<u64>> {
        let t = self.tx.open_table(META)?;
        Ok(t.get(SEAL_KEY_ID)?.map(|v| v.value()))
    }

    pub fn schema_version(&self) -> Result<Option<u64>> {
        let t = self.tx.open_table(META)?;
        Ok(t.get(SCHEMA_VERSION)?.map(|v| v.value()))
    }
}

impl WriteTx {
    pub(crate) fn schema_version(&mut self) -> Result<Option<u64>> {
        let t = self.tx.open_table(META)?;
        Ok(t.get(SCHEMA_VERSION)?.map(|v| v.value()))
    }

    pub(crate) fn set_schema_version(&mut self, v: u64) -> Result<()> {
        self.tx.open_table(META)?.insert(SCHEMA_VERSION, v)?;
        Ok(())
    }

    pub fn set_seal_key_id(&mut self, id: u64) -> Result<()> {
        self.tx.open_table(META)?.insert(SEAL_KEY_ID, id)?;
        Ok(())
    }

    /// Raises the stored clock floor to `now` (never lowers it).
    pub fn raise_clock_floor(&mut self, now: u64) -> Result<()> {
        let mut t = self.tx.open_table(META)?;
        let old = t.get(CLOCK_FLOOR)?.map(|v| v.value()).unwrap_or(0);
        if now > old {
            t.insert(CLOCK_FLOOR, now)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::temp_store;

    #[test]
    fn clock_floor_only_rises() {
        let (_d, s) = temp_store();
        assert_eq!(s.read(|r| r.clock_floor()).unwrap(), 0);
        s.write(|w| w.raise_clock_floor(100)).unwrap();
        s.write(|w| w.raise_clock_floor(50)).unwrap();
        assert_eq!(s.read(|r| r.clock_floor()).unwrap(), 100);
    }
}
