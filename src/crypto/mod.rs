//! Cryptographic primitives: password hashing, session ids, sealing.
//!
//! * [`password`]: argon2id with the configured parameters, behind a semaphore so a login
//!   storm cannot exhaust the box's memory, and a dummy verification for unknown users so that
//!   "no such user" costs what a wrong password costs;
//! * session ids (here): 256 random bits with the prefix `eas_`, stored only as their SHA-256;
//! * [`seal`]: the sealing key (XChaCha20-Poly1305) kept in a 0600 file beside the database,
//!   used to seal Keycloak tokens and queued passwords at rest.

pub mod password;
pub mod seal;

use std::fmt;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use password::{HashError, Hasher, Verified};
pub use seal::{KeyError, SEAL_KEY_FILE, Sealer};

/// A password or other secret held in memory: never printed, wiped is not promised.
#[derive(Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Fills `buf` from the operating system's CSPRNG.
#[allow(clippy::panic)]
pub fn random_bytes(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all; there is no safe way to
    // continue without one, so this is the one place edgeauth stops on an environment fault.
    if let Err(e) = getrandom::getrandom(buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
}

/// A uniform value in [0, 1] for jitter (monitor probes, sync retries, the pull's pacing).
pub fn random_unit() -> f64 {
    let mut b = [0u8; 2];
    random_bytes(&mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// Lower-case hex of `bytes` (session ids, sealed blobs in JSON records).
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of a hex string; `None` when it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Standard-alphabet base64 (RFC 4648 §4), without padding as PHC strings want it.
pub(crate) fn b64_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 0x3f) as usize;
            out.push(char::from(ALPHABET[idx]));
        }
    }
    out
}

/// Standard-alphabet base64 with `=` padding (HTTP Basic credentials).
pub(crate) fn b64_padded(bytes: &[u8]) -> String {
    let mut s = b64_nopad(bytes);
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

/// The prefix that tells an edgeauth session id from a Keycloak JWT.
pub const SESSION_PREFIX: &str = "eas_";

/// A session id as handed to the client. Only [`SessionId::digest`] is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(***)")
    }
}

/// The SHA-256 of a session id: the key under which a session is stored.
pub type SessionDigest = [u8; 32];

impl SessionId {
    /// 256 random bits, hex, behind the `eas_` prefix.
    pub fn generate() -> Self {
        let mut raw = [0u8; 32];
        random_bytes(&mut raw);
        SessionId(format!("{SESSION_PREFIX}{}", hex(&raw)))
    }

    /// Accepts only the exact shape [`SessionId::generate`] makes.
    pub fn parse(s: &str) -> Option<Self> {
        let body = s.strip_prefix(SESSION_PREFIX)?;
        (body.len() == 64
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| SessionId(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> SessionDigest {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Constant-time equality for secrets compared outside argon2.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Writes `bytes` to a new file readable by its owner only; fails if the file exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Refuses a secret file (sealing key, client secret) that its group or others may read or
/// write, as ssh refuses such a private key: the line names the mode and the fix.
pub fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "is open to group or others (mode {:04o}; a secret must be 0600 or stricter): run `chmod 600 {}`",
            mode & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        let id = SessionId::generate();
        assert!(id.expose().starts_with("eas_"));
        assert_eq!(id.expose().len(), 4 + 64);
        assert_eq!(SessionId::parse(id.expose()), Some(id.clone()));
        assert_ne!(SessionId::generate(), id);
        assert!(SessionId::parse("eas_short").is_none());
        assert!(SessionId::parse("eyJhbGciOi.x.y").is_none());
        assert!(SessionId::parse(&id.expose().to_uppercase()).is_none());
        assert_eq!(format!("{id:?}"), "SessionId(***)");
    }

    #[test]
    fn base64_matches_phc_alphabet() {
        assert_eq!(b64_nopad(b"hello"), "aGVsbG8");
        assert_eq!(b64_nopad(&[0xff, 0xff, 0xff]), "////");
    }
}
