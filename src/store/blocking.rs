//! Store writes from async code: a commit waits for fsync, so it runs on the blocking pool.

use std::sync::Arc;

use super::{Result, Store, StoreError, WriteTx};

impl Store {
    /// Runs [`Store::write`] on the blocking pool and waits for its commit.
    pub async fn write_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut WriteTx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(f))
            .await
            .map_err(|e| StoreError::Db(format!("the write did not complete: {e}")))?
    }
}
