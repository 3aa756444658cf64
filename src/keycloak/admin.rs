//! The Keycloak admin REST API, as the service account of edgeauth's client sees it
//! (client_credentials; realm-management roles `view-users` and `manage-users`, and nothing
//! else: [`needed_role`] is the one home of which call needs which). Used by the sync queue's
//! replay, the pull sync and provisioning, always through `upstream::Upstream::admin`, so that none
//! of its answers touches the login side (design rule 9). Every method is blocking and ends in
//! a `Result<T, UpstreamError>`: 5xx and transport failures are Unavailable; a 401/403 that survives a fresh
//! token means the service account lacks a role, which is a misconfiguration that names the
//! endpoint and the role, not a user's problem.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Endpoints, KeycloakClient, RawResponse};
use super::outcome::{Rejection, Unavailable, UnavailableKind, UpstreamError};
use crate::crypto::Secret;

/// The profile fields a new Keycloak user gets. Keycloak 26's default user profile requires
/// e-mail, first and last name: a user created without them cannot log in with a password
/// ("Account is not fully set up") until they are filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

/// A user as the admin API shows it (the fields edgeauth reads).
#[derive(Debug, Clone, Deserialize)]
pub struct KcUser {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct KcGroup {
    id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct KcCredential {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, rename = "createdDate")]
    created_date: Option<u64>,
}

/// The service account's token, reused until shortly before it expires.
#[derive(Debug, Default)]
pub struct TokenCache {
    token: Mutex<Option<(Secret, Instant)>>,
}

/// The admin API of one realm: its client, its token endpoint and the service account's
/// token cache (owned by the caller, `upstream::Upstream`).
pub struct Admin<'a> {
    client: &'a KeycloakClient,
    endpoints: Endpoints,
    cache: &'a TokenCache,
}

/// The realm-management role the service account needs for `method` on an admin path: reads
/// need `view-users` (users, credentials, group membership, group-by-path), writes
/// `manage-users`. The README lists exactly these two; the e2e realm grants exactly these two.
pub fn needed_role(method: &str) -> &'static str {
    if method.eq_ignore_ascii_case("GET") {
        "view-users"
    } else {
        "manage-users"
    }
}

/// `/users/3f2a.../credentials?x=y` as `/users/{id}/credentials`: an endpoint an operator can
/// look up, without ids or query strings.
fn endpoint(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .enumerate()
        .map(|(i, seg)| {
            let prev = path.split('/').nth(i.wrapping_sub(1)).unwrap_or("");
            if i > 0 && matches!(prev, "users" | "groups" | "clients") && !seg.is_empty() {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn unexpected(client_id: &str, method: &str, path: &str, r: &RawResponse) -> UpstreamError {
    let what = format!("{method} /admin/realms/{{realm}}{}", endpoint(path));
    if r.status >= 500 {
        return UpstreamError::Unavailable(Unavailable::new(
            UnavailableKind::Status,
            format!("{what} answered HTTP {}", r.status),
        ));
    }
    if r.status == 401 || r.status == 403 {
        return UpstreamError::Unavailable(Unavailable::new(
            UnavailableKind::Misconfigured,
            format!(
                "the admin API refused {what} with HTTP {}: give the service account of client {client_id} the realm-management role {}",
                r.status,
                needed_role(method)
            ),
        ));
    }
    // Keycloak's admin errors: {"errorMessage": ...} or {"error": ..., "error_description": ...}.
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let error = v["error"]
        .as_str()
        .or(v["errorMessage"].as_str())
        .unwrap_or("")
        .to_owned();
    let description = v["error_description"]
        .as_str()
        .or(v["errorMessage"].as_str())
        .unwrap_or(&r.body)
        .to_owned();
    UpstreamError::Rejected(Rejection::Other {
        status: r.status,
        error,
        description,
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &str, r: &RawResponse) -> Result<T, UpstreamError> {
    match serde_json::from_str(&r.body) {
        Ok(v) => Ok(v),
        Err(e) => Err(UpstreamError::Unavailable(Unavailable::new(
            UnavailableKind::Garbage,
            format!(
                "the admin API answered GET /admin/realms/{{realm}}{} in an unexpected shape: {e}",
                endpoint(path)
            ),
        ))),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl<'a> Admin<'a> {
    pub fn new(client: &'a KeycloakClient, endpoints: Endpoints, cache: &'a TokenCache) -> Self {
        Admin {
            client,
            endpoints,
            cache,
        }
    }

    fn base(&self) -> String {
        let s = self.client.settings();
        format!("{}/admin/realms/{}", s.server, enc(&s.realm))
    }

    fn token(&self, fresh: bool) -> Result<Secret, UpstreamError> {
        let mut slot = self.cache.token.lock().unwrap_or_else(|p| p.into_inner());
        if !fresh
            && let Some((t, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let tokens = self.client.client_credentials(&self.endpoints)?;
        let life = Duration::from_secs(tokens.expires_in.saturating_sub(10).max(5));
        let t = Secret::new(tokens.access_token);
        *slot = Some((t.clone(), crate::clock::later(Instant::now(), life)));
        Ok(t)
    }

    /// One request; a 401 gets one retry with a fresh token.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<RawResponse, UpstreamError> {
        let url = format!("{}{path}", self.base());
        let mut fresh = false;
        loop {
            let token = self.token(fresh)?;
            let r = self.client.send(method, &url, token.expose(), body)?;
            if r.status == 401 && !fresh {
                fresh = true;
                continue;
            }
            return Ok(r);
        }
    }

    fn refusal<T>(&self, method: &str, path: &str, r: &RawResponse) -> Result<T, UpstreamError> {
        Err(unexpected(
            &self.client.settings().client_id,
            method,
            path,
            r,
        ))
    }

    fn expect_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<RawResponse, UpstreamError> {
        let r = self.call(method, path, body)?;
        if (200..300).contains(&r.status) {
            Ok(r)
        } else {
            self.refusal(method, path, &r)
        }
    }

    /// A GET whose 2xx answer is JSON of type `T`.
    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, UpstreamError> {
        let r = self.expect_ok("GET", path, None)?;
        parse(path, &r)
    }

    /// The user with exactly this username, if any.
    pub fn find_user(&self, username: &str) -> Result<Option<KcUser>, UpstreamError> {
        let users: Vec<KcUser> = self.get_json(&format!(
            "/users?username={}&exact=true&briefRepresentation=true",
            enc(username)
        ))?;
        Ok(users
            .into_iter()
            .find(|u| u.username.eq_ignore_ascii_case(username)))
    }

    /// Every user of the realm, `page` at a time.
    pub fn all_users(&self, page: u32) -> Result<Vec<KcUser>, UpstreamError> {
        let mut out = Vec::new();
        let mut first = 0u32;
        loop {
            let batch: Vec<KcUser> = self.get_json(&format!(
                "/users?first={first}&max={page}&briefRepresentation=true"
            ))?;
            let n = batch.len() as u32;
            out.extend(batch);
            if n < page {
                return Ok(out);
            }
            first = first.saturating_add(n);
        }
    }

    /// Finds the user by username and runs `f` with their id; a user Keycloak does not have is
    /// Rejected with 404 `user_not_found` (deleted centrally: no retry will help).
    pub fn for_user<T>(
        &self,
        username: &str,
        f: impl FnOnce(&Self, &str) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        match self.find_user(username)? {
            Some(u) => f(self, &u.id),
            None => Err(UpstreamError::Rejected(Rejection::Other {
                status: 404,
                error: "user_not_found".into(),
                description: format!("Keycloak has no user {username}"),
            })),
        }
    }

    /// Creates the user; a 409 (it exists) reconciles with the existing user. Returns its id.
    pub fn create_user(
        &self,
        username: &str,
        password: Option<&Secret>,
        enabled: bool,
        profile: &Profile,
    ) -> Result<String, UpstreamError> {
        let mut rep = json!({"username": username, "enabled": enabled});
        if let Some(e) = &profile.email {
            // The operator vouches for it: no verification e-mail from a site appliance.
            rep["email"] = json!(e);
            rep["emailVerified"] = json!(true);
        }
        if let Some(f) = &profile.first_name {
            rep["firstName"] = json!(f);
        }
        if let Some(l) = &profile.last_name {
            rep["lastName"] = json!(l);
        }
        if let Some(p) = password {
            rep["credentials"] =
                json!([{"type": "password", "value": p.expose(), "temporary": false}]);
        }
        let r = self.call("POST", "/users", Some(&rep))?;
        match r.status {
            201 => {
                let id = r
                    .location
                    .as_deref()
                    .and_then(|l| l.rsplit('/').next())
                    .map(str::to_owned);
                match id {
                    Some(id) if !id.is_empty() => Ok(id),
                    _ => match self.find_user(username)? {
                        Some(u) => Ok(u.id),
                        None => Err(UpstreamError::Unavailable(Unavailable::new(
                            UnavailableKind::Garbage,
                            "201 without the new user",
                        ))),
                    },
                }
            }
            409 => {
                // Idempotent replay: it is already there (perhaps from our own earlier attempt).
                let existing = self.find_user(username)?;
                let Some(u) = existing else {
                    return Err(UpstreamError::Rejected(Rejection::Other {
                        status: 409,
                        error: "conflict".into(),
                        description: "a user with this username or e-mail exists".into(),
                    }));
                };
                if let Some(p) = password {
                    self.reset_password(&u.id, p)?;
                }
                if u.enabled != enabled {
                    self.set_enabled(&u.id, enabled)?;
                }
                Ok(u.id)
            }
            _ => self.refusal("POST", "/users", &r),
        }
    }

    /// Sets a permanent password. A password-policy refusal is Rejected with Keycloak's text.
    pub fn reset_password(&self, id: &str, password: &Secret) -> Result<(), UpstreamError> {
        let body = json!({"type": "password", "value": password.expose(), "temporary": false});
        self.expect_ok(
            "PUT",
            &format!("/users/{}/reset-password", enc(id)),
            Some(&body),
        )?;
        Ok(())
    }

    /// When the user's current password credential was created (ms since the epoch).
    pub fn password_created_ms(&self, id: &str) -> Result<Option<u64>, UpstreamError> {
        let creds: Vec<KcCredential> = self.get_json(&format!("/users/{}/credentials", enc(id)))?;
        Ok(creds
            .into_iter()
            .filter(|c| c.kind == "password")
            .filter_map(|c| c.created_date)
            .max())
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), UpstreamError> {
        self.expect_ok(
            "PUT",
            &format!("/users/{}", enc(id)),
            Some(&json!({"enabled": enabled})),
        )?;
        Ok(())
    }

    fn group_id(&self, path: &str) -> Result<Option<String>, UpstreamError> {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let by_path = format!(
            "/group-by-path{}",
            path.split('/').map(enc).collect::<Vec<_>>().join("/")
        );
        let r = self.call("GET", &by_path, None)?;
        if r.status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&r.status) {
            return self.refusal("GET", "/group-by-path/{path}", &r);
        }
        let g: KcGroup = parse("/group-by-path/{path}", &r)?;
        Ok(Some(g.id))
    }

    /// Joins (`join`) or leaves a group given by path. An unknown group is Rejected.
    pub fn set_group(&self, id: &str, path: &str, join: bool) -> Result<(), UpstreamError> {
        let Some(gid) = self.group_id(path)? else {
            return Err(UpstreamError::Rejected(Rejection::Other {
                status: 404,
                error: "group_not_found".into(),
                description: format!("Keycloak has no group {path}"),
            }));
        };
        let method = if join { "PUT" } else { "DELETE" };
        self.expect_ok(
            method,
            &format!("/users/{}/groups/{}", enc(id), enc(&gid)),
            None,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_hide_ids_and_queries() {
        assert_eq!(
            endpoint("/users/3f2a-11/credentials"),
            "/users/{id}/credentials"
        );
        assert_eq!(endpoint("/users?username=ann&exact=true"), "/users");
        assert_eq!(endpoint("/users/ab/groups/cd"), "/users/{id}/groups/{id}");
        assert_eq!(endpoint("/group-by-path/{path}"), "/group-by-path/{path}");
    }

    #[test]
    fn a_refusal_names_the_endpoint_and_the_one_role_it_needs() {
        let r = RawResponse {
            status: 403,
            location: None,
            body: r#"{"error":"unknown_error"}"#.into(),
        };
        let UpstreamError::Unavailable(u) =
            unexpected("edgeauth", "GET", "/users/x/credentials", &r)
        else {
            panic!("a 403 is a misconfiguration");
        };
        assert_eq!(u.kind, UnavailableKind::Misconfigured);
        assert!(
            u.detail
                .contains("GET /admin/realms/{realm}/users/{id}/credentials")
                && u.detail.contains("client edgeauth")
                && u.detail.contains("role view-users")
                && !u.detail.contains("manage-users"),
            "{}",
            u.detail
        );
        let UpstreamError::Unavailable(u) =
            unexpected("edgeauth", "PUT", "/users/x/reset-password", &r)
        else {
            panic!("a 403 is a misconfiguration");
        };
        assert!(u.detail.contains("role manage-users"), "{}", u.detail);
        let bad = RawResponse {
            status: 200,
            location: None,
            body: "<html>".into(),
        };
        let Err(UpstreamError::Unavailable(u)) = parse::<Vec<KcUser>>("/users?x=1", &bad) else {
            panic!("HTML is not the admin API's JSON");
        };
        assert_eq!(u.kind, UnavailableKind::Garbage);
        assert!(
            u.detail.contains("/admin/realms/{realm}/users in"),
            "{}",
            u.detail
        );
    }
}
