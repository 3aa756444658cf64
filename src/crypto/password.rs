//! argon2id password hashing with bounded concurrency and pooled working memory.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use super::{Secret, b64_nopad, ct_eq, random_bytes};
use crate::config::Argon2Config;

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
}
