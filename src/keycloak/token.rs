//! Keycloak access tokens: the claims edgeauth reads (roles, groups), and verification of the
//! RS256 signature against the realm's JWKS, keys chosen by `use=sig` and `kid`.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
struct RoleList {
    #[serde(default)]
    roles: Vec<String>,
}

/// The claims of a Keycloak access token that edgeauth uses.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessClaims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    pub exp: u64,
    /// Issued at: Keycloak's clock (design rule 7).
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    realm_access: Option<RoleList>,
    #[serde(default)]
    resource_access: Option<HashMap<String, RoleList>>,
    /// Present when the realm has a group-membership mapper.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// The profile scope's display name and the email scope's address, when granted.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// The client the token was issued to (OIDC Core §2).
    #[serde(default)]
    pub azp: Option<String>,
    /// The audience: one string or a list (RFC 7519 §4.1.3).
    #[serde(default)]
    pub aud: Option<serde_json::Value>,
}

impl AccessClaims {
    /// Realm roles, then the roles of `client_id`, without duplicates.
    pub fn roles(&self, client_id: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let realm = self.realm_access.iter().flat_map(|r| r.roles.iter());
        let client = self
            .resource_access
            .as_ref()
            .and_then(|m| m.get(client_id))
            .into_iter()
            .flat_map(|r| r.roles.iter());
        for r in realm.chain(client) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    /// Every client role the token carries, as `client:role` (access rules' client roles).
    pub fn client_roles(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (client, list) in self.resource_access.iter().flatten() {
            for r in &list.roles {
                out.push(format!("{client}:{r}"));
            }
        }
        out.sort();
        out
    }

    pub fn group_list(&self) -> Vec<String> {
        self.groups.clone().unwrap_or_default()
    }
}

/// The realm's signing keys.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|(k, a, _)| (k.clone(), *a)).collect();
        f.debug_struct("Jwks").field("keys", &kids).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signing key with the token's kid: refetch the JWKS once and retry.
    #[error("no signing key with kid {0:?}")]
    UnknownKid(Option<String>),
    #[error("token invalid: {0}")]
    Invalid(String),
}

impl Jwks {
    /// Reads a JWKS document, keeping RSA keys meant for signatures (use=sig or no use).
    pub fn parse(doc: &serde_json::Value) -> Self {
        let mut keys = Vec::new();
        for k in doc["keys"].as_array().into_iter().flatten() {
            let usable = k["kty"] == "RSA" && (k["use"].is_null() || k["use"] == "sig");
            let (Some(n), Some(e)) = (k["n"].as_str(), k["e"].as_str()) else {
                continue;
            };
            if !usable {
                continue;
            }
            let alg = match k["alg"].as_str() {
                None | Some("RS256") => Algorithm::RS256,
                Some("RS384") => Algorithm::RS384,
                Some("RS512") => Algorithm::RS512,
                Some("PS256") => Algorithm::PS256,
                Some(_) => continue,
            };
            if let Ok(key) = DecodingKey::from_rsa_components(n, e) {
                keys.push((k["kid"].as_str().map(str::to_owned), alg, key));
            }
        }
        Jwks { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies signature, expiry (60 s leeway) and issuer.
    pub fn verify(&self, token: &str, issuer: &str) -> Result<AccessClaims, VerifyError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| VerifyError::Invalid(e.to_string()))?;
        let Some((_, alg, key)) = self
            .keys
            .iter()
            .find(|(kid, alg, _)| *kid == header.kid && *alg == header.alg)
        else {
            return Err(VerifyError::UnknownKid(header.kid));
        };
        let mut v = Validation::new(*alg);
        v.leeway = 60;
        v.validate_aud = false;
        v.set_issuer(&[issuer]);
        jsonwebtoken::decode::<AccessClaims>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| VerifyError::Invalid(e.to_string()))
    }
}

/// Reads the claims of a token received straight from the token endpoint over the
/// authenticated channel, when the JWKS cannot be had (OIDC Core §3.1.3.7 allows trusting
/// the TLS channel for tokens received directly from the token endpoint).
pub fn claims_unverified(token: &str) -> Result<AccessClaims, VerifyError> {
    jsonwebtoken::dangerous::insecure_decode::<AccessClaims>(token)
        .map(|d| d.claims)
        .map_err(|e| VerifyError::Invalid(e.to_string()))
}

/// The `iat` of a token received straight from Keycloak, read only for Keycloak's clock.
pub fn issued_at(token: &str) -> Option<u64> {
    claims_unverified(token).ok()?.iat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_merge_realm_and_client() {
        let c: AccessClaims = serde_json::from_value(serde_json::json!({
            "exp": 1,
            "realm_access": {"roles": ["staff", "offline_access"]},
            "resource_access": {"edgeauth": {"roles": ["cashier", "staff"]}, "other": {"roles": ["x"]}},
            "groups": ["/front-desk"]
        }))
        .unwrap();
        assert_eq!(
            c.roles("edgeauth"),
            vec!["staff", "offline_access", "cashier"]
        );
        assert_eq!(c.group_list(), vec!["/front-desk"]);
        let bare: AccessClaims = serde_json::from_value(serde_json::json!({"exp": 1})).unwrap();
        assert!(bare.roles("edgeauth").is_empty());
    }

    #[test]
    fn jwks_keeps_signing_keys_only() {
        let doc = serde_json::json!({"keys": [
            {"kid": "enc", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"},
            {"kid": "sig", "kty": "RSA", "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kid": "ec", "kty": "EC", "use": "sig", "crv": "P-256", "x": "a", "y": "b"}
        ]});
        let j = Jwks::parse(&doc);
        assert_eq!(j.len(), 1);
        assert!(matches!(
            j.verify("garbage", "iss"),
            Err(VerifyError::Invalid(_))
        ));
    }
}
