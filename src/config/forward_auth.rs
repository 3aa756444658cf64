//! `[forward_auth]`: what `/api/v1/verify` tells the proxied apps and which credentials it
//! takes besides the session: the identity header names, and HTTP Basic for devices that can do
//! nothing else (off by default) with its short-lived cache of verified credentials.

use serde::{Deserialize, Serialize};

use super::Dur;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardAuthConfig {
    /// Accept `Authorization: Basic` at `/api/v1/verify`, verified like a login (regulation
    /// included) but without a session.
    pub basic: bool,
    /// How long a verified Basic credential is remembered (as a keyed hash, in memory), so
    /// argon2 and Keycloak are not asked on every request; `"0s"` asks every time.
    pub basic_cache_ttl: Dur,
    pub headers: IdentityHeaders,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig {
            basic: false,
            basic_cache_ttl: Dur::secs(60),
            headers: IdentityHeaders::default(),
        }
    }
}

/// The names of the identity headers on a 200 from `/api/v1/verify`; `""` leaves one out.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    pub user: String,
    pub name: String,
    pub email: String,
    pub groups: String,
    pub roles: String,
    pub client_roles: String,
    pub tenant: String,
    pub auth_mode: String,
    pub keycloak_status: String,
    pub via: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            user: "Remote-User".into(),
            name: "Remote-Name".into(),
            email: "Remote-Email".into(),
            groups: "Remote-Groups".into(),
            roles: "Remote-Roles".into(),
            client_roles: "Remote-Client-Roles".into(),
            tenant: "Remote-Tenant".into(),
            auth_mode: "Remote-Auth-Mode".into(),
            keycloak_status: "Remote-Keycloak-Status".into(),
            via: "Remote-Via".into(),
        }
    }
}

/// Headers an identity header may not be named after: the answer's own framing, caching,
/// redirect and cookie headers, and the request headers forward-auth reads.
const RESERVED: &[&str] = &[
    "authorization",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "date",
    "keep-alive",
    "location",
    "proxy-authenticate",
    "proxy-authorization",
    "retry-after",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "www-authenticate",
    "x-content-type-options",
];

impl IdentityHeaders {
    /// Every (key, name) pair, in the order the headers are sent.
    pub fn all(&self) -> [(&'static str, &str); 10] {
        [
            ("user", &self.user),
            ("name", &self.name),
            ("email", &self.email),
            ("groups", &self.groups),
            ("roles", &self.roles),
            ("client_roles", &self.client_roles),
            ("tenant", &self.tenant),
            ("auth_mode", &self.auth_mode),
            ("keycloak_status", &self.keycloak_status),
            ("via", &self.via),
        ]
    }

    /// The first bad name as (key, why): not an HTTP header name, reserved, or a repeat.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let all = self.all();
        for (i, (key, name)) in all.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let key = format!("forward_auth.headers.{key}");
            let token = name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err((
                    key,
                    format!(
                        "{name:?} is not an HTTP header name (letters, digits and -, at most 64 characters)"
                    ),
                ));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str())
                || lower.starts_with("x-forwarded-")
                || lower.starts_with("x-original-")
            {
                return Err((
                    key,
                    format!("{name:?} is a header HTTP or forward-auth itself uses; pick another"),
                ));
            }
            if let Some((other, _)) = all[..i].iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) {
                return Err((
                    key,
                    format!("{name:?} is already forward_auth.headers.{other}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_names_are_named() {
        assert_eq!(IdentityHeaders::default().check(), Ok(()));
        let bad = |f: fn(&mut IdentityHeaders)| {
            let mut h = IdentityHeaders::default();
            f(&mut h);
            h.check().unwrap_err()
        };
        let (key, why) = bad(|h| h.user = "Remote User".into());
        assert_eq!(key, "forward_auth.headers.user");
        assert!(why.contains("not an HTTP header name"), "{why}");
        let (key, _) = bad(|h| h.email = "Remote-User\r\nX: y".into());
        assert_eq!(key, "forward_auth.headers.email");
        let (key, why) = bad(|h| h.groups = "set-cookie".into());
        assert_eq!(key, "forward_auth.headers.groups");
        assert!(why.contains("pick another"), "{why}");
        let (_, why) = bad(|h| h.roles = "X-Forwarded-User".into());
        assert!(why.contains("pick another"), "{why}");
        let (key, why) = bad(|h| h.roles = "remote-user".into());
        assert_eq!(key, "forward_auth.headers.roles");
        assert!(why.contains("forward_auth.headers.user"), "{why}");
        let h = IdentityHeaders {
            via: String::new(),
            tenant: String::new(),
            ..IdentityHeaders::default()
        };
        assert_eq!(h.check(), Ok(()), "empty names leave headers out");
    }
}
