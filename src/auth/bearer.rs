//! Keycloak access tokens as bearers: turning a presented token into a principal. The checks
//! themselves are the upstream's (`Upstream::verify_bearer`, against the stored JWKS); this
//! module adds what makes them cheap and current on the forward-auth hot path:
//!
//! * a verified-token cache ([`TokenCache`]): bounded, keyed by the SHA-256 of the token (the
//!   token itself is never kept), each entry good until the earlier of the token's `exp` and
//!   `bearer.cache_ttl` after it was verified, so an RSA verification does not run per request
//!   (benches/bearer.rs measures both);
//! * optional RFC 7662 introspection while Keycloak is reachable (globally with
//!   `bearer.introspect`, or per access rule through [`super::principal::Identify`]): `active:
//!   false` refuses the token (`revoked`); Keycloak unreachable falls back to the offline
//!   checks (design rule 1); a refusal of the call itself is not an outage and refuses the
//!   token. Answers are cached for `bearer.introspect_cache`, never past `exp`.
//!
//! Nothing here writes to the store (design rule 8).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Auth;
use super::principal::{AccessToken, Identify, Principal, TokenPrincipal};
use super::session::InvalidReason;
use crate::config::Config;
use crate::keycloak::token::VerifyError;
use crate::upstream::{UpstreamError, VerifiedToken};

/// The `[bearer]` settings the auth service reads.
#[derive(Debug, Clone, Copy)]
pub struct BearerPolicy {
    pub enabled: bool,
    /// Introspect every token (not only those an access rule asks for).
    pub introspect: bool,
    pub introspect_cache: u64,
    pub cache_ttl: u64,
    pub cache_size: usize,
}

impl BearerPolicy {
    pub fn from_config(config: &Config) -> Self {
        let b = &config.bearer;
        BearerPolicy {
            enabled: b.enabled,
            introspect: b.introspect,
            introspect_cache: b.introspect_cache.as_secs(),
            cache_ttl: b.cache_ttl.as_secs(),
            cache_size: b.cache_size,
        }
    }
}

type Key = [u8; 32];

/// The missing-audience warning is logged once per process.
static AUDIENCE_HINT: AtomicBool = AtomicBool::new(false);

/// The cache key of a token: its SHA-256 (the token is a bearer secret; it is not kept).
pub fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug, Clone)]
struct Entry {
    principal: Arc<TokenPrincipal>,
    /// The verification is believed until then (appliance seconds, exclusive).
    verified_until: u64,
    /// Keycloak's last introspection answer and until when it is believed.
    introspected: Option<(bool, u64)>,
}

impl Entry {
    fn stale(&self, now: u64) -> bool {
        now >= self.verified_until && self.introspected.is_none_or(|(_, until)| now >= until)
    }
}

const SHARDS: usize = 16;

/// What the cache knows of a token now.
#[derive(Debug, Clone, Default)]
pub struct Cached {
    /// Verified, and still good.
    pub principal: Option<Arc<TokenPrincipal>>,
    /// Keycloak's introspection answer, still believed.
    pub active: Option<bool>,
}

/// Verified tokens and introspection answers, bounded by `bearer.cache_size` (a full shard
/// first drops what is stale, then takes no more: verification still works, only slower).
/// Only verified tokens enter it, so garbage cannot fill it.
#[derive(Debug)]
pub struct TokenCache {
    shards: [Mutex<HashMap<Key, Entry>>; SHARDS],
    per_shard: usize,
}

impl TokenCache {
    pub fn new(size: usize) -> Self {
        TokenCache {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            per_shard: size.div_ceil(SHARDS),
        }
    }

    fn shard(&self, k: &Key) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.shards[usize::from(k[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, k: &Key, now: u64) -> Cached {
        let shard = self.shard(k);
        let Some(e) = shard.get(k) else {
            return Cached::default();
        };
        Cached {
            principal: (now < e.verified_until).then(|| e.principal.clone()),
            active: e
                .introspected
                .filter(|(_, until)| now < *until)
                .map(|(a, _)| a),
        }
    }

    /// Remembers a verified token until `until` (already capped at its `exp`).
    pub fn verified(&self, k: Key, principal: Arc<TokenPrincipal>, until: u64, now: u64) {
        if until <= now || self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&k);
        if let Some(e) = shard.get_mut(&k) {
            e.principal = principal;
            e.verified_until = until;
            return;
        }
        if !Self::room(&mut shard, self.per_shard, now) {
            return;
        }
        shard.insert(
            k,
            Entry {
                principal,
                verified_until: until,
                introspected: None,
            },
        );
    }

    /// Remembers an introspection answer until `until` (already capped at the token's `exp`).
    pub fn introspected(
        &self,
        k: Key,
        principal: &Arc<TokenPrincipal>,
        active: bool,
        until: u64,
        now: u64,
    ) {
        if until <= now || self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&k);
        if let Some(e) = shard.get_mut(&k) {
            e.introspected = Some((active, until));
            return;
        }
        if !Self::room(&mut shard, self.per_shard, now) {
            return;
        }
        shard.insert(
            k,
            Entry {
                principal: principal.clone(),
                verified_until: now,
                introspected: Some((active, until)),
            },
        );
    }

    fn room(shard: &mut HashMap<Key, Entry>, cap: usize, now: u64) -> bool {
        if shard.len() >= cap {
            shard.retain(|_, e| !e.stale(now));
        }
        shard.len() < cap
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The principal a verified token stands for: the tenant client's roles with the realm's, as a
/// login stores them.
pub fn principal_of(v: &VerifiedToken) -> Option<TokenPrincipal> {
    let c = &v.claims;
    let username = c
        .preferred_username
        .clone()
        .or_else(|| c.sub.clone())
        .filter(|u| !u.is_empty())?;
    Some(TokenPrincipal {
        tenant: v.tenant.clone(),
        username,
        name: c.name.clone(),
        email: c.email.clone(),
        roles: c.roles(&v.client_id),
        client_roles: c.client_roles(),
        groups: c.group_list(),
        expires_at: c.exp,
        client: c.azp.clone(),
        introspectable: c.audience_names(&v.client_id),
    })
}

impl Auth {
    /// Who a presented Keycloak access token is (see the module doc).
    pub(super) async fn identify_token(&self, token: &AccessToken, options: Identify) -> Principal {
        if !self.settings.bearer.enabled {
            return Principal::Invalid(InvalidReason::TokenInvalid);
        }
        let now = self.clock.now();
        let k = key(token.expose());
        let cached = self.bearer_cache.get(&k, now);
        let principal = match cached.principal {
            Some(p) => p,
            None => match self.upstream.verify_bearer(token.expose()).await {
                Ok(v) => match principal_of(&v) {
                    Some(p) => {
                        let p = Arc::new(p);
                        let until = p
                            .expires_at
                            .min(now.saturating_add(self.settings.bearer.cache_ttl));
                        self.bearer_cache.verified(k, p.clone(), until, now);
                        p
                    }
                    None => {
                        log::debug!("a Keycloak token refused: no preferred_username or sub");
                        return Principal::Invalid(InvalidReason::TokenInvalid);
                    }
                },
                Err(e) => {
                    log::debug!("a Keycloak token refused: {e}");
                    return Principal::Invalid(match e {
                        VerifyError::Expired => InvalidReason::SessionExpired,
                        _ => InvalidReason::TokenInvalid,
                    });
                }
            },
        };
        if !(options.introspect || self.settings.bearer.introspect) {
            return Principal::Token(principal);
        }
        let active = match cached.active {
            Some(a) => a,
            None => match self
                .upstream
                .introspect(&principal.tenant, token.expose())
                .await
            {
                Ok(active) => {
                    let until = principal
                        .expires_at
                        .min(now.saturating_add(self.settings.bearer.introspect_cache));
                    self.bearer_cache
                        .introspected(k, &principal, active, until, now);
                    active
                }
                Err(UpstreamError::Unavailable(u)) => {
                    log::debug!("introspection unavailable ({u}); the offline checks decide");
                    true
                }
                Err(UpstreamError::Rejected(r)) => {
                    log::warn!(
                        "Keycloak refused to introspect a token of {} ({r}); refused (check the client may introspect)",
                        principal.tenant
                    );
                    return Principal::Invalid(InvalidReason::TokenInvalid);
                }
            },
        };
        if active {
            return Principal::Token(principal);
        }
        if !principal.introspectable && !AUDIENCE_HINT.swap(true, Ordering::Relaxed) {
            log::warn!(
                "Keycloak says a token of {} is not active, and its aud does not name this \
                 appliance's client: Keycloak (26.7 and later) introspects a token only for a \
                 client in its audience, so every such token is refused; add an Audience mapper \
                 for the client to the token's client (README, \"Keycloak tokens as bearers\")",
                principal.tenant
            );
        }
        Principal::Invalid(InvalidReason::Revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Tenant;

    fn who(name: &str, exp: u64) -> Arc<TokenPrincipal> {
        Arc::new(TokenPrincipal {
            tenant: Tenant::default_tenant(),
            username: name.into(),
            name: None,
            email: None,
            roles: vec!["staff".into()],
            client_roles: Vec::new(),
            groups: Vec::new(),
            expires_at: exp,
            client: Some("edgeauth".into()),
            introspectable: true,
        })
    }

    #[test]
    fn entries_end_at_their_until_and_never_before_now() {
        let c = TokenCache::new(100);
        let (k, p) = (key("t1"), who("alice", 1_100));
        c.verified(k, p.clone(), 1_060, 1_000);
        assert_eq!(
            c.get(&k, 1_059).principal.map(|p| p.username.clone()),
            Some("alice".into())
        );
        assert!(c.get(&k, 1_060).principal.is_none(), "not past its until");
        assert!(c.get(&key("t2"), 1_000).principal.is_none());
        // An until already past is not stored.
        c.verified(key("t3"), p.clone(), 1_000, 1_000);
        assert!(c.get(&key("t3"), 999).principal.is_none());
        // Introspection answers have their own until.
        c.introspected(k, &p, false, 1_030, 1_000);
        assert_eq!(c.get(&k, 1_029).active, Some(false));
        assert_eq!(c.get(&k, 1_030).active, None);
    }

    #[test]
    fn the_cache_is_bounded_and_makes_room_from_stale_entries() {
        let c = TokenCache::new(16);
        let p = who("a", 10_000);
        let mut taken = 0;
        for i in 0..1_000 {
            c.verified(key(&format!("t{i}")), p.clone(), 2_000, 1_000);
        }
        for i in 0..1_000 {
            if c.get(&key(&format!("t{i}")), 1_000).principal.is_some() {
                taken += 1;
            }
        }
        assert!(c.len() <= 16 + SHARDS, "bounded: {}", c.len());
        assert_eq!(taken, c.len());
        // Later, the stale ones make room for new tokens.
        c.verified(key("late"), p.clone(), 3_000, 2_500);
        assert!(c.get(&key("late"), 2_500).principal.is_some());
        let off = TokenCache::new(0);
        off.verified(key("x"), p, 2_000, 1_000);
        assert!(off.is_empty());
    }
}
