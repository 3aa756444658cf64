//! Keycloak access tokens: the claims edgeauth reads (roles, groups), and verification of the
//! signature against the realm's JWKS, keys chosen by `use=sig` and `kid`.
//!
//! Two callers. The login side reads tokens it has just received from the token endpoint
//! ([`Jwks::verify`]). A bearer presented by a client (an app sending its user's Keycloak
//! access token) is a claim by a stranger, so [`Jwks::verify_access`] checks everything: the
//! `alg` against an allow-list before any key is looked at, the key's own `alg`, the signature,
//! the exact issuer, that it is an access token (`typ: Bearer`, not an ID or refresh token),
//! and `exp`/`nbf` on the appliance's clock (design rule 7) with a small leeway. The audience
//! is checked by the caller, which knows the accepted clients ([`AccessClaims::issued_to`]).

use std::collections::HashMap;

use base64ct::{Base64UrlUnpadded, Encoding};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;

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
    pub iss: Option<String>,
    /// Keycloak's token type: `Bearer` (access), `ID`, `Refresh`, `Logout`...
    #[serde(default)]
    pub typ: Option<String>,
    /// Not before (RFC 7519 §4.1.5); Keycloak rarely sets it.
    #[serde(default)]
    pub nbf: Option<u64>,
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

    /// Was the token issued to (`azp`) or for (`aud`, a string or a list) one of `clients`?
    pub fn issued_to(&self, clients: &[String]) -> bool {
        self.azp
            .as_deref()
            .is_some_and(|a| clients.iter().any(|c| c == a))
            || clients.iter().any(|c| self.audience_names(c))
    }

    /// Does `aud` name `client`? (Keycloak 26.7 introspects a token only for a client in it.)
    pub fn audience_names(&self, client: &str) -> bool {
        match &self.aud {
            Some(serde_json::Value::String(a)) => a == client,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a == client),
            _ => false,
        }
    }
}

/// What a presented access token must satisfy besides its signature and issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerRules {
    /// The `alg` values accepted (asymmetric only: `bearer.algorithms`).
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock difference forgiven on `exp` and `nbf`.
    pub leeway: u64,
}

impl Default for BearerRules {
    fn default() -> Self {
        BearerRules {
            algorithms: vec![Algorithm::RS256],
            leeway: 30,
        }
    }
}

/// The asymmetric algorithm named `name` that the JWKS reader keeps keys for; `None` for any
/// other (`none`, `HS256`, typos). In step with `config::bearer::ALGORITHMS` (a test).
pub fn algorithm_named(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "RS384" => Some(Algorithm::RS384),
        "RS512" => Some(Algorithm::RS512),
        "PS256" => Some(Algorithm::PS256),
        _ => None,
    }
}

/// Does `token` look like a JWS in compact form (three base64url parts, the first two not
/// empty)? Decides only which kind of credential a bearer is, never whether it is good.
pub fn is_jwt_shaped(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let b64url = |x: &str| {
        x.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s)
}

fn segment<T: DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = Base64UrlUnpadded::decode_vec(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The JOSE header fields read before any key is chosen.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct RawIssuer {
    #[serde(default)]
    iss: Option<String>,
}

/// The token's `iss`, UNVERIFIED: only to choose which realm's keys and exact issuer the
/// token is then verified against.
pub fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    segment::<RawIssuer>(payload)?.iss
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
    /// An `alg` outside the allow-list (`none`, HS*), or not the one of the key with this kid.
    #[error("algorithm refused: {0}")]
    Algorithm(String),
    #[error("issuer is not the realm's")]
    Issuer,
    #[error("issued to no accepted client (azp/aud)")]
    Audience,
    /// An ID, refresh or logout token: not a bearer credential.
    #[error("not an access token (typ {0:?})")]
    NotAccessToken(Option<String>),
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
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

impl Jwks {
    /// Verifies a presented access token (see the module doc): `alg` allowed (before any key
    /// is looked at), a key with its `kid` and the same `alg`, the signature, `iss` exactly
    /// `issuer`, `typ` Bearer, and `exp`/`nbf` against `now` (the appliance's clock, Unix
    /// seconds) with `rules.leeway`.
    pub fn verify_access(
        &self,
        token: &str,
        issuer: &str,
        rules: &BearerRules,
        now: u64,
    ) -> Result<AccessClaims, VerifyError> {
        let header = token
            .split('.')
            .next()
            .and_then(segment::<RawHeader>)
            .ok_or_else(|| VerifyError::Invalid("unreadable header".into()))?;
        let alg = algorithm_named(&header.alg)
            .filter(|a| rules.algorithms.contains(a))
            .ok_or_else(|| {
                VerifyError::Algorithm(crate::logsafe::clean(&header.alg).to_string())
            })?;
        let mut same_kid = self.keys.iter().filter(|(kid, _, _)| *kid == header.kid);
        let Some((_, key_alg, key)) = same_kid.clone().find(|(_, a, _)| *a == alg) else {
            return Err(match same_kid.next() {
                Some((_, a, _)) => {
                    VerifyError::Algorithm(format!("{alg:?} for a key published for {a:?}"))
                }
                None => VerifyError::UnknownKid(header.kid),
            });
        };
        let mut v = Validation::new(*key_alg);
        // Time is the appliance's, judged below; jsonwebtoken would read the system clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "iss"]);
        v.set_issuer(&[issuer]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => VerifyError::Issuer,
                _ => VerifyError::Invalid(e.to_string()),
            })?;
        if claims.typ.as_deref() != Some("Bearer") {
            return Err(VerifyError::NotAccessToken(
                claims
                    .typ
                    .as_deref()
                    .map(|t| crate::logsafe::clean(t).to_string()),
            ));
        }
        if now >= claims.exp.saturating_add(rules.leeway) {
            return Err(VerifyError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(rules.leeway))
        {
            return Err(VerifyError::NotYetValid);
        }
        Ok(claims)
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

    // ---- presented access tokens (verify_access), signed with the fake Keycloak's test keys --

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    const ISS: &str = "http://kc.test/realms/site";
    const NOW: u64 = 1_800_000_000;
    const KEYS: &str = include_str!("../../tests/fixtures/fake-keycloak-keys.json");
    const PEM_1: &str = include_str!("../../tests/fixtures/fake-keycloak-key-1.pem");
    const PEM_2: &str = include_str!("../../tests/fixtures/fake-keycloak-key-2.pem");

    fn fixture(i: usize) -> Value {
        serde_json::from_str::<Value>(KEYS).unwrap()["signing"][i].clone()
    }

    fn kid(i: usize) -> String {
        fixture(i)["kid"].as_str().unwrap().to_owned()
    }

    /// The JWKS publishing key 1 only (key 2 stays unpublished: an unknown kid).
    fn jwks() -> Jwks {
        let k = fixture(0);
        Jwks::parse(&json!({"keys": [{
            "kid": k["kid"], "kty": "RSA", "alg": "RS256", "use": "sig", "n": k["n"], "e": k["e"]
        }]}))
    }

    fn claims() -> Value {
        json!({
            "exp": NOW + 300, "iat": NOW, "iss": ISS, "aud": "account", "azp": "edgeauth",
            "typ": "Bearer", "sub": "u-1", "preferred_username": "alice",
            "realm_access": {"roles": ["staff"]},
        })
    }

    fn sign_with(pem: &str, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &h,
            claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn sign(claims: &Value) -> String {
        sign_with(PEM_1, &kid(0), claims)
    }

    fn b64(v: &Value) -> String {
        Base64UrlUnpadded::encode_string(v.to_string().as_bytes())
    }

    fn check(token: &str) -> Result<AccessClaims, VerifyError> {
        jwks().verify_access(token, ISS, &BearerRules::default(), NOW)
    }

    fn with(key: &str, value: Value) -> Value {
        let mut c = claims();
        c[key] = value;
        c
    }

    #[test]
    fn a_good_access_token_is_accepted() {
        let c = check(&sign(&claims())).unwrap();
        assert_eq!(c.preferred_username.as_deref(), Some("alice"));
        assert!(c.issued_to(&["edgeauth".into()]));
        assert!(c.issued_to(&["account".into()]));
        assert!(!c.issued_to(&["pos".into()]));
        let listed = check(&sign(&with("aud", json!(["pos", "wiki"])))).unwrap();
        assert!(listed.issued_to(&["wiki".into()]));
    }

    #[test]
    fn expiry_and_not_before_are_judged_on_the_given_clock_with_the_leeway() {
        let rules = BearerRules::default();
        // exp 10 s ago: within the 30 s leeway; 31 s ago: expired.
        let t = sign(&with("exp", json!(NOW - 10)));
        assert!(check(&t).is_ok());
        let t = sign(&with("exp", json!(NOW - 31)));
        assert_eq!(check(&t).unwrap_err(), VerifyError::Expired);
        // The same token, a minute earlier on the appliance's clock, is fine: the system clock
        // is not what decides.
        assert!(jwks().verify_access(&t, ISS, &rules, NOW - 60).is_ok());
        let t = sign(&with("nbf", json!(NOW + 20)));
        assert!(check(&t).is_ok());
        let t = sign(&with("nbf", json!(NOW + 120)));
        assert_eq!(check(&t).unwrap_err(), VerifyError::NotYetValid);
        let strict = BearerRules { leeway: 0, ..rules };
        let t = sign(&with("exp", json!(NOW)));
        assert_eq!(
            jwks().verify_access(&t, ISS, &strict, NOW).unwrap_err(),
            VerifyError::Expired
        );
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let t = sign(&with("iss", json!("http://kc.test/realms/other")));
        assert_eq!(check(&t).unwrap_err(), VerifyError::Issuer);
        let t = sign(&with("iss", json!(format!("{ISS}/"))));
        assert_eq!(check(&t).unwrap_err(), VerifyError::Issuer);
        let mut c = claims();
        c.as_object_mut().unwrap().remove("iss");
        assert!(matches!(check(&sign(&c)), Err(VerifyError::Invalid(_))));
    }

    #[test]
    fn alg_none_is_refused_before_any_key_is_looked_at() {
        let header = json!({"alg": "none", "typ": "JWT", "kid": kid(0)});
        let t = format!("{}.{}.", b64(&header), b64(&claims()));
        assert!(is_jwt_shaped(&t));
        assert_eq!(
            check(&t).unwrap_err(),
            VerifyError::Algorithm("none".into())
        );
        let t = format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&claims()));
        assert_eq!(
            check(&t).unwrap_err(),
            VerifyError::Algorithm("None".into())
        );
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        // The classic key confusion: the "secret" is the realm's public key, which anyone has.
        let k = fixture(0);
        for secret in [
            k["n"].as_str().unwrap().as_bytes().to_vec(),
            jwks_public_pem().into_bytes(),
        ] {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid(0));
            let t =
                jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(
                check(&t).unwrap_err(),
                VerifyError::Algorithm("HS256".into())
            );
        }
    }

    /// Some text standing for "the public key's bytes" as an attacker would use them.
    fn jwks_public_pem() -> String {
        let k = fixture(0);
        format!("{}.{}", k["n"].as_str().unwrap(), k["e"].as_str().unwrap())
    }

    #[test]
    fn an_algorithm_outside_the_allow_list_or_not_the_keys_is_refused() {
        let mut h = Header::new(Algorithm::RS512);
        h.kid = Some(kid(0));
        let key = EncodingKey::from_rsa_pem(PEM_1.as_bytes()).unwrap();
        let t = jsonwebtoken::encode(&h, &claims(), &key).unwrap();
        // RS512 is not allowed by default ...
        assert_eq!(
            check(&t).unwrap_err(),
            VerifyError::Algorithm("RS512".into())
        );
        // ... and when allowed, the key with this kid is published for RS256 only.
        let rules = BearerRules {
            algorithms: vec![Algorithm::RS256, Algorithm::RS512],
            leeway: 30,
        };
        assert!(matches!(
            jwks().verify_access(&t, ISS, &rules, NOW),
            Err(VerifyError::Algorithm(_))
        ));
    }

    #[test]
    fn an_unknown_kid_is_reported_for_the_caller_to_refetch() {
        let t = sign_with(PEM_2, &kid(1), &claims());
        assert_eq!(
            check(&t).unwrap_err(),
            VerifyError::UnknownKid(Some(kid(1)))
        );
        // Key 2's signature under key 1's kid: a bad signature, not an unknown kid.
        let t = sign_with(PEM_2, &kid(0), &claims());
        assert!(matches!(check(&t), Err(VerifyError::Invalid(_))));
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let t = sign(&claims());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = with("realm_access", json!({"roles": ["staff", "admin"]}));
        let t = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
        assert!(matches!(check(&t), Err(VerifyError::Invalid(_))), "{t}");
        // One flipped character in the signature too.
        let mut sig = parts[2].to_owned();
        let last = if sig.ends_with('A') { "B" } else { "A" };
        sig.replace_range(sig.len() - 1.., last);
        let t = format!("{}.{}.{}", parts[0], parts[1], sig);
        assert!(matches!(check(&t), Err(VerifyError::Invalid(_))));
    }

    #[test]
    fn id_refresh_and_untyped_tokens_are_refused() {
        for typ in [
            json!("ID"),
            json!("Refresh"),
            json!("Logout"),
            json!("bearer"),
        ] {
            let t = sign(&with("typ", typ.clone()));
            assert!(
                matches!(check(&t), Err(VerifyError::NotAccessToken(_))),
                "{typ}"
            );
        }
        let mut c = claims();
        c.as_object_mut().unwrap().remove("typ");
        assert_eq!(
            check(&sign(&c)).unwrap_err(),
            VerifyError::NotAccessToken(None)
        );
        // Keycloak signs its refresh tokens with HS512: refused by the allow-list already.
        let mut h = Header::new(Algorithm::HS512);
        h.kid = Some("hmac".into());
        let t = jsonwebtoken::encode(
            &h,
            &with("typ", json!("Refresh")),
            &EncodingKey::from_secret(b"realm-hmac"),
        )
        .unwrap();
        assert_eq!(
            check(&t).unwrap_err(),
            VerifyError::Algorithm("HS512".into())
        );
    }

    #[test]
    fn shapes_and_issuer_peeking() {
        let t = sign(&claims());
        assert!(is_jwt_shaped(&t));
        assert_eq!(peek_issuer(&t).as_deref(), Some(ISS));
        for bad in [
            "", "eas_abc", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b+/.c", "a b.c.d",
        ] {
            assert!(!is_jwt_shaped(bad), "{bad}");
        }
        assert_eq!(peek_issuer("x.!!.y"), None);
        assert!(matches!(check("x.y.z"), Err(VerifyError::Invalid(_))));
        for name in crate::config::bearer::ALGORITHMS {
            assert!(algorithm_named(name).is_some(), "{name}");
        }
        for name in ["none", "HS256", "HS512", "ES256", "rs256"] {
            assert!(algorithm_named(name).is_none(), "{name}");
        }
    }
}
