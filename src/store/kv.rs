//! The `kv` table: documents fetched from Keycloak (discovery, JWKS), persisted so that the
//! appliance starts and validates tokens while Keycloak is unreachable (design rule 5).

use super::{KV, ReadTx, Result, WriteTx};

impl ReadTx {
    pub fn kv(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let t = self.tx.open_table(KV)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }
}

impl WriteTx {
    pub fn put_kv(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.tx.open_table(KV)?.insert(key, value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::temp_store;

    #[test]
    fn put_get() {
        let (_d, s) = temp_store();
        assert_eq!(s.read(|r| r.kv("a")).unwrap(), None);
        s.write(|w| w.put_kv("a", b"{}")).unwrap();
        assert_eq!(s.read(|r| r.kv("a")).unwrap().as_deref(), Some(&b"{}"[..]));
    }
}
