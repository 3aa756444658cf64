//! Domain vocabulary (design §4) as types: names that are validated once at the edge, and the
//! small enums every layer speaks (source, auth_mode). A value of these types is known good.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a user lives: mirrored from Keycloak, or only on this appliance (break-glass
/// operators; never sent to Keycloak).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Keycloak,
    Local,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Keycloak => "keycloak",
            Source::Local => "local",
        }
    }
}

/// How a session was verified (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Verified online by Keycloak.
    Keycloak,
    /// Offline, with a cached Keycloak token within `token_grace_period`.
    Cached,
    /// The local hash only.
    Local,
}

impl AuthMode {
    pub const ALL: [AuthMode; 3] = [AuthMode::Keycloak, AuthMode::Cached, AuthMode::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Keycloak => "keycloak",
            AuthMode::Cached => "cached",
            AuthMode::Local => "local",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const DEFAULT_TENANT: &str = "default";

/// A tenant name: 1–64 of `a-z 0-9 _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl Tenant {
    pub fn parse(s: &str) -> Result<Self, String> {
        validate_tenant(s).map(|()| Tenant(s.to_owned()))
    }
    pub fn default_tenant() -> Self {
        Tenant(DEFAULT_TENANT.to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tenant {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        validate_tenant(&s).map(|()| Tenant(s))
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> String {
        t.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn validate_tenant(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant {s:?} is not valid: use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        ))
    }
}

/// A username as Keycloak accepts it: 1–255 printable characters, no whitespace, no '/',
/// compared case-insensitively (Keycloak lowercases usernames), so stored lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.chars().count() <= 255
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/');
        if ok {
            Ok(Username(s.to_lowercase()))
        } else {
            Err(
                "username must be 1 to 255 characters with no spaces, control characters or '/'"
                    .into(),
            )
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Username::parse(&s)
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// (tenant, username): how users, sessions and tokens are keyed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    pub tenant: Tenant,
    pub username: Username,
}

impl UserKey {
    pub fn new(tenant: Tenant, username: Username) -> Self {
        UserKey { tenant, username }
    }

    /// The store key: `tenant/username` (a tenant never holds '/').
    pub fn store_key(&self) -> String {
        format!("{}/{}", self.tenant, self.username)
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.username, self.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        assert!(Tenant::parse("default").is_ok());
        assert!(Tenant::parse("site-7_b").is_ok());
        for bad in ["", "Default", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames_lowercase_and_reject_separators() {
        assert_eq!(
            Username::parse("Alice@Example.org").unwrap().as_str(),
            "alice@example.org"
        );
        for bad in ["", "a b", "a/b", "a\u{0}b", &"x".repeat(256)] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn store_key() {
        let k = UserKey::new(Tenant::default_tenant(), Username::parse("bob").unwrap());
        assert_eq!(k.store_key(), "default/bob");
        assert_eq!(k.to_string(), "bob@default");
    }
}
