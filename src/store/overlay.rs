//! A copy-on-write view of a database file: reads come from the file, writes stay in memory.
//!
//! redb's integrity check repairs what it checks and commits, so checking the real file would
//! change it. `edgeauth db check` and `edgeauth db restore` check through this view instead:
//! the file stays byte-identical, and a full disk cannot stop a check. The file's locks are
//! taken through redb's own file backend, so a check still meets a running server's lock.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::Mutex;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

const BLOCK: u64 = 4096;

pub(crate) struct Overlay {
    base: FileBackend,
    /// Off for a file opened read-only (a snapshot on a read-only stick): redb then runs
    /// without locks, which its exclusive-writer mode supports.
    locking: bool,
    state: Mutex<State>,
}

struct State {
    len: u64,
    /// Bytes of the file below this offset are still visible (a shrink hides the rest).
    base_visible: u64,
    blocks: HashMap<u64, Box<[u8]>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Overlay")
    }
}

impl Overlay {
    /// With `locking`, `file` must be open for reading and writing (redb's exclusive lock
    /// needs a writable descriptor); nothing is ever written through it.
    pub(crate) fn new(file: File, locking: bool) -> io::Result<Overlay> {
        let len = file.metadata()?.len();
        let base = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Overlay {
            base,
            locking,
            state: Mutex::new(State {
                len,
                base_visible: len,
                blocks: HashMap::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `out.len()` bytes at `offset` from the file, zeros past its visible end.
    fn read_base(&self, visible: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        out.fill(0);
        if offset >= visible {
            return Ok(());
        }
        let n = (visible - offset).min(out.len() as u64) as usize;
        self.base.read(offset, &mut out[..n])
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let st = self.state();
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|e| *e <= st.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        self.read_base(st.base_visible, offset, out)?;
        let mut block = offset / BLOCK * BLOCK;
        while block < end {
            if let Some(data) = st.blocks.get(&block) {
                let from = offset.max(block);
                let to = end.min(block + BLOCK);
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - block) as usize..(to - block) as usize]);
            }
            block += BLOCK;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state();
        if len < st.len {
            st.base_visible = st.base_visible.min(len);
            st.blocks.retain(|b, _| *b < len);
            let tail = len / BLOCK * BLOCK;
            if let Some(data) = st.blocks.get_mut(&tail) {
                data[(len - tail) as usize..].fill(0);
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.state();
        let end = offset + data.len() as u64;
        if end > st.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "write past the end",
            ));
        }
        let mut block = offset / BLOCK * BLOCK;
        while block < end {
            if !st.blocks.contains_key(&block) {
                let mut fresh = vec![0u8; BLOCK as usize].into_boxed_slice();
                self.read_base(st.base_visible, block, &mut fresh)?;
                st.blocks.insert(block, fresh);
            }
            let from = offset.max(block);
            let to = end.min(block + BLOCK);
            if let Some(b) = st.blocks.get_mut(&block) {
                b[(from - block) as usize..(to - block) as usize]
                    .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            }
            block += BLOCK;
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.base.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if !self.locking {
            return Err(BackendError::Unsupported);
        }
        self.base.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        if !self.locking {
            return Err(BackendError::Unsupported);
        }
        self.base.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !self.locking {
            return Err(BackendError::Unsupported);
        }
        self.base.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !self.locking {
            return Err(BackendError::Unsupported);
        }
        self.base.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !self.locking {
            return Err(BackendError::Unsupported);
        }
        self.base.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if !self.locking {
            return Err(BackendError::Unsupported);
        }
        self.base.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 10_000]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let o = Overlay::new(f, true).unwrap();
        o.write(4090, &[1u8; 20]).unwrap();
        o.set_len(20_000).unwrap();
        o.write(15_000, &[2u8; 3]).unwrap();
        let mut out = vec![0u8; 20_000];
        o.read(0, &mut out).unwrap();
        assert_eq!(&out[4088..4092], &[7, 7, 1, 1]);
        assert_eq!(&out[4108..4112], &[1, 1, 7, 7]);
        assert_eq!(out[12_000], 0);
        assert_eq!(&out[15_000..15_003], &[2, 2, 2]);
        o.set_len(100).unwrap();
        o.set_len(5000).unwrap();
        let mut out = vec![9u8; 5000];
        o.read(0, &mut out).unwrap();
        assert_eq!(out[99], 7);
        assert!(out[100..].iter().all(|b| *b == 0));
        assert_eq!(std::fs::read(&p).unwrap(), vec![7u8; 10_000]);
    }
}
