//! Sealing secrets at rest (Keycloak tokens, queued passwords) with XChaCha20-Poly1305 under
//! a key kept in a 0600 file beside the database.
//!
//! The key is made once, on the first start of a new data dir, and never silently again: a
//! new key would leave every sealed secret in the store unreadable. Its identity (a hash of
//! it, see [`Sealer::id`]) is recorded in the database and in each snapshot's name, so a
//! restore can tell whether a key and a database belong together.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use sha2::Digest;

use super::{check_private, random_bytes, write_private};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("sealing key {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "sealing key {path} is missing, and database {db} holds data sealed with it (key id {id}); put back the seal.key kept with your backups (it is never regenerated, which would make the sealed Keycloak tokens and queued passwords unreadable)"
    )]
    Missing {
        path: PathBuf,
        db: PathBuf,
        id: String,
    },
    #[error(
        "sealing key {path} (id {found}) is not the key of database {db} (id {expected}); put back the seal.key kept with that database's backups"
    )]
    Mismatch {
        path: PathBuf,
        db: PathBuf,
        found: String,
        expected: String,
    },
    #[error("sealed data could not be opened (wrong key or damaged)")]
    Open,
}

/// Seals secrets at rest with XChaCha20-Poly1305 under a key kept in a 0600 file.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
    id: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(***)")
    }
}

pub const SEAL_KEY_FILE: &str = "seal.key";

impl Sealer {
    /// Loads the key at `path`, which must exist (0600, 32 bytes).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let file_err = |message: String| KeyError::File {
            path: path.to_path_buf(),
            message,
        };
        let key = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        check_private(path).map_err(file_err)?;
        Self::from_key(path, &key)
    }

    /// Makes a new key at `path` (0600, 32 random bytes); fails if the file exists. Only the
    /// first start of a new data dir calls this.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let mut key = vec![0u8; 32];
        random_bytes(&mut key);
        write_private(path, &key).map_err(|e| KeyError::File {
            path: path.to_path_buf(),
            message: format!("cannot create: {e}"),
        })?;
        Self::from_key(path, &key)
    }

    fn from_key(path: &Path, key: &[u8]) -> Result<Self, KeyError> {
        let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| KeyError::File {
            path: path.to_path_buf(),
            message: format!("must hold exactly 32 bytes, holds {}", key.len()),
        })?;
        let digest = sha2::Sha256::new()
            .chain_update(b"edgeauth seal key id\0")
            .chain_update(key)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Ok(Sealer {
            cipher: Arc::new(cipher),
            id: u64::from_be_bytes(id),
        })
    }

    /// The key's identity: 64 bits of a hash of it, safe to show and to store beside the data.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Encrypts `plain`; `context` (e.g. the record's key) is bound as associated data.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        random_bytes(&mut nonce);
        let payload = chacha20poly1305::aead::Payload {
            msg: plain,
            aad: context,
        };
        let mut out = nonce.to_vec();
        // Encryption with a valid key and an in-memory buffer cannot fail.
        if let Ok(ct) = self.cipher.encrypt(XNonce::from_slice(&nonce), payload) {
            out.extend_from_slice(&ct);
        }
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < 24 + 16 {
            return Err(KeyError::Open);
        }
        let (nonce, ct) = sealed.split_at(24);
        let payload = chacha20poly1305::aead::Payload {
            msg: ct,
            aad: context,
        };
        self.cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| KeyError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_roundtrip_and_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEAL_KEY_FILE);
        assert!(Sealer::load(&path).is_err(), "never made by a load");
        let s = Sealer::create(&path).unwrap();
        assert!(Sealer::create(&path).is_err(), "never overwritten");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = s.seal(b"refresh-token", b"alice");
        assert!(!sealed.windows(7).any(|w| w == b"refresh"));
        let again = Sealer::load(&path).unwrap();
        assert_eq!(again.id(), s.id());
        assert_eq!(again.open(&sealed, b"alice").unwrap(), b"refresh-token");
        assert!(again.open(&sealed, b"bob").is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Sealer::load(&path).is_err());
    }
}
