//! HTTP Basic credentials (forward-auth, for devices that can do nothing else): verified like a
//! login, through the same tiers (regulation first, Keycloak online-first, the local hash when
//! it is unreachable) but without a session, and remembered for `forward_auth.basic_cache_ttl`
//! so argon2 and Keycloak are not asked on every request.
//!
//! The cache holds no password and no plain hash of one: an entry is keyed by an HMAC-SHA256 of
//! (tenant, username) and proves the password by an HMAC-SHA256 of (tenant, username, password),
//! both under a random key made at start and never stored, compared in constant time. Only a
//! verification that succeeded is remembered. A hit still reads the user and the bans (one read
//! transaction, nothing written): a disabled user, a ban, or a stored hash that changed since
//! (a password change here, or one Keycloak refused) ends it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::login::LoginRequest;
use super::principal::{BasicUser, Principal};
use super::{Auth, AuthError, Client, check_password_input, user_key};
use crate::crypto::{Secret, ct_eq, random_bytes};
use crate::domain::{AuthMode, UserKey};
use crate::policy::regulation::Subjects;
use crate::store::users::UserRecord;
use crate::upstream::KeycloakStatus;

type HmacSha256 = Hmac<Sha256>;

/// Entries kept at most; past it, expired ones are dropped, and if none are, nothing new is
/// remembered (each then costs a full verification, as without a cache).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    proof: [u8; 32],
    /// SHA-256 of the stored hash (PHC string) the verification saw.
    hash_seen: [u8; 32],
    until: u64,
    mode: AuthMode,
}

/// Verified Basic credentials, in memory.
pub struct BasicCache {
    key: [u8; 32],
    ttl: u64,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for BasicCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCache")
            .field("ttl", &self.ttl)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

fn stored_hash_digest(u: &UserRecord) -> [u8; 32] {
    u.password_hash
        .as_deref()
        .map_or([0; 32], |h| Sha256::digest(h.as_bytes()).into())
}

impl BasicCache {
    /// A cache whose entries live `ttl` seconds (0: nothing is remembered), under a fresh key.
    pub fn new(ttl: u64) -> Self {
        let mut key = [0u8; 32];
        random_bytes(&mut key);
        BasicCache {
            key,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut m) = HmacSha256::new_from_slice(&self.key) else {
            return [0; 32];
        };
        for p in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            m.update(&(p.len() as u64).to_le_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    fn id(&self, key: &UserKey) -> [u8; 32] {
        self.mac(&[
            b"id",
            key.tenant.as_str().as_bytes(),
            key.username.as_str().as_bytes(),
        ])
    }

    fn proof(&self, key: &UserKey, password: &Secret) -> [u8; 32] {
        self.mac(&[
            b"proof",
            key.tenant.as_str().as_bytes(),
            key.username.as_str().as_bytes(),
            password.expose().as_bytes(),
        ])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The remembered verification of exactly this password, if still fresh.
    fn get(&self, key: &UserKey, password: &Secret, now: u64) -> Option<Entry> {
        if self.ttl == 0 {
            return None;
        }
        let id = self.id(key);
        let entry = *self.lock().get(&id)?;
        let proof = self.proof(key, password);
        (ct_eq(&entry.proof, &proof) && now < entry.until).then_some(entry)
    }

    fn put(&self, key: &UserKey, password: &Secret, user: &UserRecord, mode: AuthMode, now: u64) {
        if self.ttl == 0 {
            return;
        }
        let (id, proof) = (self.id(key), self.proof(key, password));
        let mut m = self.lock();
        if m.len() >= MAX_ENTRIES && !m.contains_key(&id) {
            m.retain(|_, e| e.until > now);
            if m.len() >= MAX_ENTRIES {
                return;
            }
        }
        m.insert(
            id,
            Entry {
                proof,
                hash_seen: stored_hash_digest(user),
                until: now.saturating_add(self.ttl),
                mode,
            },
        );
    }

    fn forget(&self, key: &UserKey) {
        let id = self.id(key);
        self.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Auth {
    /// Who a Basic credential is: the cache, else a full verification (see the module doc).
    /// A malformed username or password is `InvalidCredentials` (never echoed back).
    pub(super) async fn identify_basic(
        self: &Arc<Self>,
        username: &str,
        password: &Secret,
        client: Client,
    ) -> Result<Principal, AuthError> {
        let Ok(key) = user_key(None, username) else {
            return Err(AuthError::InvalidCredentials);
        };
        if check_password_input("password", password.expose()).is_err() {
            return Err(AuthError::InvalidCredentials);
        }
        let now = self.clock.now();
        if let Some(entry) = self.basic.get(&key, password, now) {
            let (regulator, subjects) = (&self.policy.regulator, Subjects::new(&key, client.ip));
            let (user, banned) = self
                .store
                .read(|r| Ok((r.user(&key)?, regulator.banned(r, &subjects, now)?)))?;
            if let Some(retry_after) = banned {
                return Err(AuthError::TooManyAttempts { retry_after });
            }
            match user {
                Some(u) if u.enabled && stored_hash_digest(&u) == entry.hash_seen => {
                    let offline = entry.mode == AuthMode::Keycloak
                        && self.upstream.status() == KeycloakStatus::Offline;
                    let mode = if offline {
                        AuthMode::Cached
                    } else {
                        entry.mode
                    };
                    return Ok(Principal::Basic(Box::new(BasicUser { user: u, mode })));
                }
                _ => self.basic.forget(&key),
            }
        }
        let req = LoginRequest {
            username: username.to_owned(),
            password: password.clone(),
            tenant: None,
        };
        let ok = self.login_sessionless(req, client).await?;
        self.basic
            .put(&key, password, &ok.user, ok.session.auth_mode, now);
        Ok(Principal::Basic(Box::new(BasicUser {
            mode: ok.session.auth_mode,
            user: ok.user,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Source, Tenant, Username};

    fn user(hash: &str) -> UserRecord {
        UserRecord {
            tenant: Tenant::default_tenant(),
            username: Username::parse("dev").unwrap(),
            source: Source::Local,
            password_hash: Some(hash.into()),
            roles: vec![],
            groups: vec![],
            client_roles: vec![],
            name: None,
            email: None,
            enabled: true,
            created_at: 0,
            updated_at: 0,
            last_online_auth: None,
            tokens_at: None,
        }
    }

    #[test]
    fn only_the_same_password_within_the_ttl_hits() {
        let c = BasicCache::new(60);
        let k = UserKey::new(Tenant::default_tenant(), Username::parse("dev").unwrap());
        let other = UserKey::new(Tenant::parse("clinic").unwrap(), k.username.clone());
        let right = Secret::new("right-password");
        c.put(&k, &right, &user("$argon2id$x"), AuthMode::Local, 100);
        assert!(c.get(&k, &right, 100).is_some());
        assert!(c.get(&k, &right, 159).is_some());
        assert!(c.get(&k, &right, 160).is_none(), "expired");
        assert!(c.get(&k, &Secret::new("wrong-password"), 100).is_none());
        assert!(c.get(&other, &right, 100).is_none(), "another tenant");
        assert_eq!(c.len(), 1);
        c.forget(&k);
        assert!(c.is_empty());
        // Keyed per process: another cache's proof of the same password differs.
        let d = BasicCache::new(60);
        assert_ne!(c.proof(&k, &right), d.proof(&k, &right));
        // A zero TTL remembers nothing.
        let z = BasicCache::new(0);
        z.put(&k, &right, &user("h"), AuthMode::Local, 100);
        assert!(z.get(&k, &right, 100).is_none() && z.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = BasicCache::new(60);
        let p = Secret::new("pw");
        for i in 0..MAX_ENTRIES + 10 {
            let k = UserKey::new(
                Tenant::default_tenant(),
                Username::parse(&format!("u{i}")).unwrap(),
            );
            c.put(&k, &p, &user("h"), AuthMode::Local, 0);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        // Once the old entries have expired, new ones take their place.
        let k = UserKey::new(Tenant::default_tenant(), Username::parse("late").unwrap());
        c.put(&k, &p, &user("h"), AuthMode::Local, 61);
        assert_eq!(c.len(), 1);
        assert!(c.get(&k, &p, 61).is_some());
    }
}
