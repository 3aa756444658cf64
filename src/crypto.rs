//! Cryptographic primitives: password hashing, session ids, sealing.
//!
//! * argon2id with the configured parameters, behind a semaphore so a login storm cannot
//!   exhaust the box's memory (each hash holds `argon2.memory_kib`);
//! * a dummy verification for unknown users so that "no such user" costs what a wrong
//!   password costs;
//! * session ids: 256 random bits with the prefix `eas_`, stored only as their SHA-256;
//! * the sealing key (XChaCha20-Poly1305) kept in a 0600 file beside the database, used to seal
//!   Keycloak tokens and queued passwords at rest.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::Argon2Config;

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

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot stayed busy for `argon2.max_wait`.
    #[error("all {0} password hashing slots are busy")]
    Overloaded(usize),
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Match,
    /// The password is right but the hash was made with other parameters: rehash it.
    MatchNeedsRehash,
    NoMatch,
}

/// argon2 working memory kept between verifications. A fresh 19 MiB block costs ~20 % of a
/// verification in page faults alone; reusing one per slot removes that. The pool is emptied
/// after [`Hasher::trim_idle`]'s idle time so an idle appliance stays small.
#[derive(Default)]
struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
    /// Seconds since `epoch` of the last verification.
    last_used: AtomicU64,
    epoch: Option<Instant>,
}

impl MemoryPool {
    fn new() -> Self {
        MemoryPool {
            epoch: Some(Instant::now()),
            ..Default::default()
        }
    }
    fn elapsed(&self) -> u64 {
        self.epoch.map_or(0, |e| e.elapsed().as_secs())
    }
    fn take(&self) -> Vec<Block> {
        self.last_used.store(self.elapsed(), Ordering::Relaxed);
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }
    fn give(&self, mem: Vec<Block>) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mem);
    }
}

/// argon2id hashing with bounded concurrency.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    memory: Arc<MemoryPool>,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_wait: Duration,
    dummy_phc: Arc<str>,
    on_wait: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

impl Hasher {
    pub fn new(cfg: &Argon2Config) -> Result<Self, HashError> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| HashError::Failed(e.to_string()))?;
        // A PHC string with the configured parameters, a random salt and a random "hash":
        // verifying against it costs exactly one real verification and never matches.
        let mut fake = [0u8; 32];
        random_bytes(&mut fake);
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let dummy_phc = format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            cfg.memory_kib,
            cfg.iterations,
            cfg.parallelism,
            salt.as_str(),
            b64_nopad(&fake)
        );
        let max_concurrent = cfg.effective_max_concurrent();
        Ok(Hasher {
            params,
            memory: Arc::new(MemoryPool::new()),
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_wait: cfg.max_wait.0,
            dummy_phc: dummy_phc.into(),
            on_wait: None,
        })
    }

    /// Calls `f` with the time each hash waited for a slot (for the metrics).
    pub fn with_wait_observer(mut self, f: Arc<dyn Fn(Duration) + Send + Sync>) -> Self {
        self.on_wait = Some(f);
        self
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    async fn with_slot<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let started = Instant::now();
        let permit = tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Overloaded(self.max_concurrent))?
            .map_err(|_| HashError::Failed("hashing slots closed".into()))?;
        if let Some(f) = &self.on_wait {
            f(started.elapsed());
        }
        let out = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?;
        Ok(out)
    }

    /// Hashes a new password (argon2id, fresh salt, configured parameters).
    pub async fn hash(&self, password: &Secret) -> Result<String, HashError> {
        let password = password.clone();
        let params = self.params.clone();
        self.with_slot(move || hash_blocking(params, &password))
            .await?
    }

    /// Checks `password` against `phc`; with `None` (unknown user) it checks against the dummy
    /// hash, costs the same, and answers [`Verified::NoMatch`].
    pub async fn verify(
        &self,
        password: &Secret,
        phc: Option<&str>,
    ) -> Result<Verified, HashError> {
        let known = phc.is_some();
        let phc: String = phc
            .map(str::to_owned)
            .unwrap_or_else(|| self.dummy_phc.to_string());
        let password = password.clone();
        let params = self.params.clone();
        let pool = self.memory.clone();
        let verified = self
            .with_slot(move || {
                let mut mem = pool.take();
                let v = verify_blocking(&params, &password, &phc, &mut mem);
                pool.give(mem);
                v
            })
            .await?;
        Ok(if known { verified } else { Verified::NoMatch })
    }

    /// Frees the pooled working memory when no verification ran for `idle`.
    pub fn trim_idle(&self, idle: Duration) -> usize {
        let since = self
            .memory
            .elapsed()
            .saturating_sub(self.memory.last_used.load(Ordering::Relaxed));
        if since < idle.as_secs() {
            return 0;
        }
        let mut free = self.memory.free.lock().unwrap_or_else(|p| p.into_inner());
        let n = free.len();
        free.clear();
        free.shrink_to_fit();
        n
    }

    /// The same as [`Hasher::hash`] without the async slot; for the CLI and tests.
    pub fn hash_now(&self, password: &Secret) -> Result<String, HashError> {
        hash_blocking(self.params.clone(), password)
    }
}

fn hash_blocking(params: Params, password: &Secret) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Hasher::argon2(params)
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

fn verify_blocking(
    params: &Params,
    password: &Secret,
    phc: &str,
    mem: &mut Vec<Block>,
) -> Verified {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return Verified::NoMatch;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Verified::NoMatch;
    };
    // Verification uses the parameters stored in the PHC string, whatever the config says now.
    let (Ok(algorithm), Ok(version), Ok(stored)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed.version.map_or(Ok(Version::V0x13), Version::try_from),
        Params::try_from(&parsed),
    ) else {
        return Verified::NoMatch;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return Verified::NoMatch;
    };
    if mem.len() != stored.block_count() {
        mem.clear();
        mem.resize(stored.block_count(), Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    if Argon2::new(algorithm, version, stored.clone())
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            salt,
            &mut out,
            mem.as_mut_slice(),
        )
        .is_err()
    {
        return Verified::NoMatch;
    }
    if !ct_eq(&out, expected.as_bytes()) {
        return Verified::NoMatch;
    }
    let current = algorithm == Algorithm::Argon2id
        && version == Version::V0x13
        && stored.m_cost() == params.m_cost()
        && stored.t_cost() == params.t_cost()
        && stored.p_cost() == params.p_cost();
    if current {
        Verified::Match
    } else {
        Verified::MatchNeedsRehash
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all; there is no safe way to
    // continue without one, so this is the one place edgeauth stops on an environment fault.
    if let Err(e) = getrandom::getrandom(buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
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

fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "is readable by group or others (mode {:o}); run `chmod 600 {}`",
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Argon2Config {
        Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: Some(1),
            max_wait: crate::config::Dur::secs(1),
        }
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(&fast()).unwrap();
        let phc = h.hash(&Secret::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(
            h.verify(&Secret::new("correct horse"), Some(&phc))
                .await
                .unwrap(),
            Verified::Match
        );
        assert_eq!(
            h.verify(&Secret::new("wrong"), Some(&phc)).await.unwrap(),
            Verified::NoMatch
        );
        assert_eq!(
            h.verify(&Secret::new("correct horse"), None).await.unwrap(),
            Verified::NoMatch
        );
        assert_eq!(
            h.verify(&Secret::new("x"), Some("not a phc"))
                .await
                .unwrap(),
            Verified::NoMatch
        );
    }

    #[tokio::test]
    async fn other_params_need_rehash() {
        let old = Hasher::new(&fast()).unwrap();
        let phc = old.hash(&Secret::new("pw")).await.unwrap();
        let new = Hasher::new(&Argon2Config {
            memory_kib: 128,
            ..fast()
        })
        .unwrap();
        assert_eq!(
            new.verify(&Secret::new("pw"), Some(&phc)).await.unwrap(),
            Verified::MatchNeedsRehash
        );
    }

    #[tokio::test]
    async fn memory_pool_is_reused_then_trimmed() {
        let h = Hasher::new(&fast()).unwrap();
        let phc = h.hash(&Secret::new("pw")).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                h.verify(&Secret::new("pw"), Some(&phc)).await.unwrap(),
                Verified::Match
            );
        }
        assert_eq!(
            h.memory.free.lock().unwrap().len(),
            1,
            "one slot, one block reused"
        );
        assert_eq!(
            h.trim_idle(Duration::from_secs(3600)),
            0,
            "recently used: kept"
        );
        assert_eq!(h.trim_idle(Duration::ZERO), 1);
        assert_eq!(
            h.verify(&Secret::new("pw"), Some(&phc)).await.unwrap(),
            Verified::Match
        );
    }

    #[test]
    fn verifies_hashes_made_by_the_reference_implementation() {
        // argon2's own PasswordHasher output must verify through our pooled path.
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let phc = Argon2::default()
            .hash_password(b"reference", &salt)
            .unwrap()
            .to_string();
        let mut mem = Vec::new();
        let p = Params::new(64, 1, 1, None).unwrap();
        assert_eq!(
            verify_blocking(&p, &Secret::new("reference"), &phc, &mut mem),
            Verified::MatchNeedsRehash
        );
        assert_eq!(
            verify_blocking(&p, &Secret::new("other"), &phc, &mut mem),
            Verified::NoMatch
        );
        let mut bad = phc.clone();
        bad.pop();
        bad.push(if phc.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            verify_blocking(&p, &Secret::new("reference"), &bad, &mut mem),
            Verified::NoMatch
        );
    }

    #[test]
    fn dummy_phc_parses_with_configured_params() {
        let h = Hasher::new(&fast()).unwrap();
        let parsed = PasswordHash::new(&h.dummy_phc).unwrap();
        let p = Params::try_from(&parsed).unwrap();
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (64, 1, 1));
        assert_eq!(parsed.hash.unwrap().len(), 32);
    }

    #[tokio::test]
    async fn slots_bound_concurrency() {
        let cfg = Argon2Config {
            memory_kib: 4096,
            iterations: 3,
            max_wait: crate::config::Dur(Duration::from_millis(1)),
            ..fast()
        };
        let h = Hasher::new(&cfg).unwrap();
        let pw = Secret::new("pw");
        let results = futures_join(&h, &pw).await;
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(HashError::Overloaded(1))))
        );
    }

    async fn futures_join(h: &Hasher, pw: &Secret) -> Vec<Result<String, HashError>> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (h, pw) = (h.clone(), pw.clone());
            set.spawn(async move { h.hash(&pw).await });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    }

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

    #[test]
    fn base64_matches_phc_alphabet() {
        assert_eq!(b64_nopad(b"hello"), "aGVsbG8");
        assert_eq!(b64_nopad(&[0xff, 0xff, 0xff]), "////");
    }
}
