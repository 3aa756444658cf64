//! The sealed token cache: a session made online keeps the user's Keycloak tokens, sealed at
//! rest (design rule 4) with the user key as associated data.

use crate::crypto::Sealer;
use crate::domain::UserKey;
use crate::keycloak::client::TokenSet;
use crate::store::sessions::SealedTokens;

#[derive(Clone)]
pub struct TokenVault {
    sealer: Sealer,
    /// `keycloak.resilience.cache_tokens`: keep a login's tokens in its session.
    cache: bool,
}

impl std::fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVault")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl TokenVault {
    pub fn new(sealer: Sealer, cache: bool) -> Self {
        TokenVault { sealer, cache }
    }

    /// Seals a token set for a session, when tokens are cached at all.
    pub fn keep(&self, key: &UserKey, tokens: &TokenSet, now: u64) -> Option<SealedTokens> {
        self.cache.then(|| self.seal(key, tokens, now))
    }

    /// Seals a token set for storage in a session (AAD: the user key).
    pub fn seal(&self, key: &UserKey, tokens: &TokenSet, now: u64) -> SealedTokens {
        let plain = serde_json::to_vec(tokens).unwrap_or_default();
        let sealed = self.sealer.seal(&plain, key.store_key().as_bytes());
        SealedTokens {
            sealed_hex: crate::crypto::hex(&sealed),
            access_expires_at: now.saturating_add(tokens.expires_in),
            refresh_expires_at: now.saturating_add(tokens.refresh_expires_in),
            renewed_at: now,
        }
    }

    /// Opens sealed tokens; `None` when they cannot be read (damaged, or another key).
    pub fn open(&self, key: &UserKey, sealed: &SealedTokens) -> Option<TokenSet> {
        let bytes = crate::crypto::unhex(&sealed.sealed_hex)?;
        let plain = self.sealer.open(&bytes, key.store_key().as_bytes()).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}
