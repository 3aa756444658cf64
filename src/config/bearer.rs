//! `[bearer]`: Keycloak access tokens presented as `Authorization: Bearer` by the site's apps
//! (and their API clients). They are verified on the appliance against the realm's persisted
//! JWKS, so they keep working through an outage; these keys say what is accepted.

use serde::{Deserialize, Serialize};

use super::Dur;

/// The `alg` values `bearer.algorithms` may name: the asymmetric ones the JWKS reader keeps
/// keys for (`keycloak::token::algorithm_named` maps each; a test there keeps them in step).
/// Never `none` or HS*: an HMAC "signed" with the realm's public key would verify.
pub const ALGORITHMS: [&str; 4] = ["RS256", "RS384", "RS512", "PS256"];

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BearerConfig {
    /// Accept Keycloak access tokens as bearers at all.
    pub enabled: bool,
    /// The `alg` values accepted (asymmetric only: RS256, RS384, RS512, PS256).
    pub algorithms: Vec<String>,
    /// Clients a token must be issued to (`azp`) or for (`aud`). Empty: the tenant's own
    /// `client_id`.
    pub audiences: Vec<String>,
    /// Clock difference forgiven on `exp` and `nbf`.
    pub leeway: Dur,
    /// A token with a key id the stored JWKS lacks refetches it at most this often per realm.
    pub jwks_refetch_interval: Dur,
    /// Ask Keycloak (RFC 7662) whether each token is still active, while it is reachable.
    pub introspect: bool,
    /// How long an introspection answer is believed (never past the token's `exp`).
    pub introspect_cache: Dur,
    /// How long a verified token is remembered, so its signature is not checked per request
    /// (never past its `exp`); 0s turns the cache off.
    pub cache_ttl: Dur,
    /// Tokens remembered at most.
    pub cache_size: usize,
}

impl Default for BearerConfig {
    fn default() -> Self {
        BearerConfig {
            enabled: true,
            algorithms: vec!["RS256".into()],
            audiences: Vec::new(),
            leeway: Dur::secs(30),
            jwks_refetch_interval: Dur::secs(60),
            introspect: false,
            introspect_cache: Dur::secs(30),
            cache_ttl: Dur::secs(60),
            cache_size: 10_000,
        }
    }
}
