//! JWT and JWKS parsing (src/keycloak/token.rs): any JWKS document and any token are read,
//! verified or refused without a panic, and nothing unsigned verifies.
//!
//! Input: `token NUL issuer [NUL jwks-json]`, readable so the seeds in fuzz/seeds/jwt are real
//! tokens; without a JWKS part the fake Keycloak's test keys are used.
#![no_main]

use edgeauth::keycloak::token::{
    BearerRules, Jwks, claims_unverified, is_jwt_shaped, issued_at, peek_issuer,
};
use libfuzzer_sys::fuzz_target;

/// The fake Keycloak's test keys (n, e, kid): a JWKS that real signatures are checked against.
const TEST_KEYS: &str = include_str!("../../tests/fixtures/fake-keycloak-keys.json");

fn test_jwks() -> &'static Jwks {
    static KEYS: std::sync::OnceLock<Jwks> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let doc: serde_json::Value = serde_json::from_str(TEST_KEYS).unwrap_or_default();
        let jwks = Jwks::parse(&serde_json::json!({ "keys": doc["signing"] }));
        assert!(!jwks.is_empty(), "the test keys parse");
        jwks
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let token = parts.next().unwrap_or_default();
    let issuer = parts.next().unwrap_or_default();
    let given;
    let jwks = match parts.next() {
        Some(doc) => {
            given = Jwks::parse(&serde_json::from_str(doc).unwrap_or_default());
            &given
        }
        None => test_jwks(),
    };
    let _ = jwks.len();
    if let Ok(claims) = jwks.verify(token, issuer) {
        // Verified: a JWS signed by one of the keys, so three parts and a known issuer.
        assert_eq!(token.split('.').count(), 3);
        let _ = claims.roles("edgeauth");
    }
    // A presented bearer: only an allowed alg, an access token, within its times.
    let _ = (is_jwt_shaped(token), peek_issuer(token));
    if let Ok(claims) = jwks.verify_access(token, issuer, &BearerRules::default(), 1_800_000_000) {
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(claims.typ.as_deref(), Some("Bearer"));
        let _ = claims.issued_to(&["edgeauth".to_owned()]);
    }
    if let Ok(claims) = claims_unverified(token) {
        let _ = claims.roles("edgeauth");
        let _ = claims.group_list();
    }
    let _ = issued_at(token);
});
