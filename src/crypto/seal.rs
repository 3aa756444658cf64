//! Sealing secrets at rest (Keycloak tokens, queued passwords) with XChaCha20-Poly1305 under
//! a key kept in a 0600 file beside the database.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{check_private, random_bytes, write_private};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("sealing key {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("sealed data could not be opened (wrong key or damaged)")]
    Open,
}

/// Seals secrets at rest with XChaCha20-Poly1305 under a key kept in a 0600 file.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(***)")
    }
}

pub const SEAL_KEY_FILE: &str = "seal.key";

impl Sealer {
    /// Loads the key at `path`, creating it (0600, 32 random bytes) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let file_err = |message: String| KeyError::File {
            path: path.to_path_buf(),
            message,
        };
        let key = match std::fs::read(path) {
            Ok(bytes) => {
                check_private(path).map_err(file_err)?;
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                random_bytes(&mut key);
                write_private(path, &key).map_err(|e| file_err(format!("cannot create: {e}")))?;
                key
            }
            Err(e) => return Err(file_err(format!("cannot read: {e}"))),
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| file_err(format!("must hold exactly 32 bytes, holds {}", key.len())))?;
        Ok(Sealer {
            cipher: Arc::new(cipher),
        })
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
        let s = Sealer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = s.seal(b"refresh-token", b"alice");
        assert!(!sealed.windows(7).any(|w| w == b"refresh"));
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed, b"alice").unwrap(), b"refresh-token");
        assert!(again.open(&sealed, b"bob").is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Sealer::load_or_create(&path).is_err());
    }
}
