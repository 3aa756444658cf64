//! The real Keycloak for the end-to-end suite (`tests/e2e.rs`): the server that
//! `scripts/keycloak.sh` runs (Keycloak from Maven Central with the `site` realm of
//! `tests/fixtures/keycloak-realm-site.json`), and the central administrator's actions on it
//! (the master realm's admin through the admin REST API).
//!
//! Where the server is comes from the `EDGEAUTH_KC_*` variables that `scripts/keycloak.sh env`
//! prints (`scripts/test.sh` exports them after starting it). Without them the suite starts the
//! server itself with `scripts/keycloak.sh start`, and leaves it running for the next run. It
//! never skips: a server that cannot be fetched or started fails every test, with the reason.
//!
//! The tests share one server and some of them stop it, so each test holds [`exclusive`] for
//! its whole run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The running server, as the tests see it.
pub struct RealKeycloak {
    pub url: String,
    pub realm: String,
    pub client_id: String,
    pub client_secret: String,
    pub health_url: String,
    admin_user: String,
    admin_password: String,
    agent: ureq::Agent,
    /// The master admin's token and when it was fetched (reused for 30 s of its 60).
    admin_token: Mutex<Option<(String, Instant)>>,
}

static SERVER: OnceLock<Result<RealKeycloak, String>> = OnceLock::new();
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// Serialises the e2e tests: one of them stops Keycloak, the others change the realm.
/// A test that panicked does not poison the rest.
pub fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(args: &[&str], envs: &[(&str, &str)]) -> Result<String, String> {
    let path = repo_root().join("scripts/keycloak.sh");
    let out = Command::new(&path)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "scripts/keycloak.sh {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn from_env() -> Option<Vec<(String, String)>> {
    let keys = [
        "EDGEAUTH_KC_URL",
        "EDGEAUTH_KC_REALM",
        "EDGEAUTH_KC_CLIENT",
        "EDGEAUTH_KC_SECRET",
        "EDGEAUTH_KC_ADMIN_USER",
        "EDGEAUTH_KC_ADMIN_PASSWORD",
        "EDGEAUTH_KC_HEALTH_URL",
    ];
    keys.iter()
        .map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// Parses the `export KEY=value` lines of `scripts/keycloak.sh env`.
fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn connect() -> Result<RealKeycloak, String> {
    let vars = match from_env() {
        Some(v) => v,
        None => {
            eprintln!(
                "e2e: EDGEAUTH_KC_* not set; starting Keycloak with scripts/keycloak.sh start \
                 (left running; scripts/keycloak.sh stop ends it)"
            );
            script(&["start"], &[])?;
            parse_exports(&script(&["env"], &[])?)
        }
    };
    let get = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{k} missing from scripts/keycloak.sh env"))
    };
    let kc = RealKeycloak {
        url: get("EDGEAUTH_KC_URL")?,
        realm: get("EDGEAUTH_KC_REALM")?,
        client_id: get("EDGEAUTH_KC_CLIENT")?,
        client_secret: get("EDGEAUTH_KC_SECRET")?,
        health_url: get("EDGEAUTH_KC_HEALTH_URL")?,
        admin_user: get("EDGEAUTH_KC_ADMIN_USER")?,
        admin_password: get("EDGEAUTH_KC_ADMIN_PASSWORD")?,
        agent: super::agent(),
        admin_token: Mutex::new(None),
    };
    kc.wait_ready(Duration::from_secs(60))?;
    Ok(kc)
}

/// The shared server; panics (fails the test) with the harness's own words if it is not there.
pub fn shared() -> &'static RealKeycloak {
    match SERVER.get_or_init(connect) {
        Ok(kc) => kc,
        Err(e) => panic!("the real Keycloak is not available, so the e2e suite fails:\n{e}"),
    }
}

/// A name no earlier run used (Keycloak keeps users across runs with KEEP_DATA=1).
pub fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{prefix}-{}", n % 1_000_000_000)
}

/// A direct grant's failure, as Keycloak said it.
#[derive(Debug)]
pub struct GrantError {
    pub status: u16,
    pub body: Value,
}

impl RealKeycloak {
    fn ports(&self) -> (String, String) {
        let port = self.url.rsplit(':').next().unwrap_or_default().to_owned();
        let mgmt = self
            .health_url
            .split(':')
            .nth(2)
            .and_then(|p| p.split('/').next())
            .unwrap_or_default()
            .to_owned();
        (port, mgmt)
    }

    pub fn token_url(&self) -> String {
        format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.url, self.realm
        )
    }

    pub fn is_ready(&self) -> bool {
        self.agent
            .get(&self.health_url)
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while !self.is_ready() {
            if start.elapsed() > limit {
                return Err(format!("{} not ready after {limit:?}", self.health_url));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Stops the server (SIGTERM through the harness). [`Self::start_again`] brings it back
    /// with its data; the returned guard does so if the test fails before that.
    pub fn stop(&'static self) -> Restart {
        script(&["stop"], &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!self.is_ready(), "Keycloak still answers after stop");
        Restart {
            kc: self,
            done: false,
        }
    }

    fn restart(&self) -> Result<Duration, String> {
        // A token from before the stop need not survive it.
        *self.admin_token.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let (port, mgmt) = self.ports();
        let started = Instant::now();
        script(
            &["start", "--port", &port, "--mgmt-port", &mgmt],
            &[("KEEP_DATA", "1")],
        )?;
        self.wait_ready(Duration::from_secs(60))?;
        Ok(started.elapsed())
    }

    // ---- the central administrator (master realm admin) ----

    fn admin_token(&self) -> String {
        let mut cached = self.admin_token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, at)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(30)
        {
            return token.clone();
        }
        let token = self.fetch_admin_token();
        *cached = Some((token.clone(), Instant::now()));
        token
    }

    fn fetch_admin_token(&self) -> String {
        let r = self
            .agent
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.url
            ))
            .send_form([
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", self.admin_user.as_str()),
                ("password", self.admin_password.as_str()),
            ])
            .expect("admin token request");
        let status = r.status().as_u16();
        let body: Value = r.into_body().read_json().expect("admin token JSON");
        assert_eq!(status, 200, "admin token: {body}");
        body["access_token"]
            .as_str()
            .expect("admin access_token")
            .to_owned()
    }

    /// One admin API call on the `site` realm; asserts a 2xx and returns the JSON body (Null
    /// when empty).
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.admin_root(method, &format!("/realms/{}{path}", self.realm), body)
    }

    /// One admin API call below `/admin` (e.g. `/realms` to create a realm).
    pub fn admin_root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}/admin{path}", self.url))
            .header("authorization", format!("Bearer {}", self.admin_token()))
            .header("content-type", "application/json");
        let res = match body {
            Some(b) => self.agent.run(req.body(b.to_string()).expect("request")),
            None => self.agent.run(req.body(()).expect("request")),
        }
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
        let status = res.status().as_u16();
        let text = res.into_body().read_to_string().unwrap_or_default();
        assert!(
            (200..300).contains(&status),
            "admin {method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub fn user(&self, username: &str) -> Option<Value> {
        let found = self.admin(
            "GET",
            &format!("/users?username={username}&exact=true"),
            None,
        );
        found.as_array().and_then(|a| a.first()).cloned()
    }

    pub fn user_id(&self, username: &str) -> String {
        self.user(username)
            .and_then(|u| u["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no Keycloak user {username}"))
    }

    /// Creates a user who can log in at once, with realm roles and groups (paths).
    pub fn create_user(&self, username: &str, password: &str, roles: &[&str], groups: &[&str]) {
        self.admin(
            "POST",
            "/users",
            Some(json!({
                "username": username,
                "enabled": true,
                "emailVerified": true,
                "email": format!("{username}@site.test"),
                "firstName": "E2e",
                "lastName": username,
                "groups": groups,
                "credentials": [{"type": "password", "value": password, "temporary": false}],
            })),
        );
        if !roles.is_empty() {
            let id = self.user_id(username);
            let reps: Vec<Value> = roles
                .iter()
                .map(|r| self.admin("GET", &format!("/roles/{r}"), None))
                .collect();
            self.admin(
                "POST",
                &format!("/users/{id}/role-mappings/realm"),
                Some(Value::Array(reps)),
            );
        }
    }

    pub fn set_password(&self, username: &str, password: &str) {
        self.reset_password(username, password, false);
    }

    /// An admin's reset-password; `temporary` makes the user change it at the next login.
    pub fn reset_password(&self, username: &str, password: &str, temporary: bool) {
        let id = self.user_id(username);
        self.admin(
            "PUT",
            &format!("/users/{id}/reset-password"),
            Some(json!({"type": "password", "value": password, "temporary": temporary})),
        );
    }

    pub fn set_enabled(&self, username: &str, enabled: bool) {
        let id = self.user_id(username);
        self.admin(
            "PUT",
            &format!("/users/{id}"),
            Some(json!({"enabled": enabled})),
        );
    }

    /// Ends every Keycloak session of the user (the admin console's "Sign out").
    pub fn logout_user(&self, username: &str) {
        let id = self.user_id(username);
        self.admin("POST", &format!("/users/{id}/logout"), None);
    }

    pub fn user_groups(&self, username: &str) -> Vec<String> {
        let id = self.user_id(username);
        self.admin("GET", &format!("/users/{id}/groups"), None)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g["path"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The password grant as the edgeauth client, straight to Keycloak (not through edgeauth).
    pub fn direct_grant(&self, username: &str, password: &str) -> Result<Value, GrantError> {
        let res = self
            .agent
            .post(self.token_url())
            .send_form([
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ])
            .expect("token request");
        let status = res.status().as_u16();
        let body: Value = res.into_body().read_json().unwrap_or(Value::Null);
        if status == 200 {
            Ok(body)
        } else {
            Err(GrantError { status, body })
        }
    }

    /// Sets (or with `None` removes) an attribute of the edgeauth client, e.g.
    /// `access.token.lifespan`.
    pub fn set_client_attribute(&self, key: &str, value: Option<&str>) {
        let clients = self.admin(
            "GET",
            &format!("/clients?clientId={}", self.client_id),
            None,
        );
        let mut client = clients
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .expect("the edgeauth client");
        let id = client["id"].as_str().expect("client id").to_owned();
        let attrs = client["attributes"]
            .as_object_mut()
            .expect("client attributes");
        match value {
            Some(v) => attrs.insert(key.to_owned(), json!(v)),
            None => attrs.insert(key.to_owned(), json!("")),
        };
        self.admin("PUT", &format!("/clients/{id}"), Some(client));
    }

    /// Adds a new RSA signing key with a higher priority than any other: Keycloak signs new
    /// tokens with it from now on (key rotation as an administrator does it). The guard
    /// removes it again.
    pub fn rotate_signing_key(&self) -> RotatedKey<'_> {
        let realm = self.admin("GET", "", None);
        let parent = realm["id"].as_str().expect("realm id").to_owned();
        let name = unique("e2e-rotated");
        self.admin(
            "POST",
            "/components",
            Some(json!({
                "name": name,
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": parent,
                "config": {
                    "priority": ["1000"],
                    "enabled": ["true"],
                    "active": ["true"],
                    "keySize": ["2048"],
                    "algorithm": ["RS256"],
                },
            })),
        );
        let found = self.admin("GET", &format!("/components?name={name}"), None);
        let id = found
            .as_array()
            .and_then(|a| a.first())
            .and_then(|c| c["id"].as_str())
            .expect("the new key component")
            .to_owned();
        RotatedKey { kc: self, id }
    }

    /// The kid of the active RS256 key Keycloak signs with now.
    pub fn active_kid(&self) -> String {
        let keys = self.admin("GET", "/keys", None);
        keys["active"]["RS256"]
            .as_str()
            .expect("an active RS256 key")
            .to_owned()
    }
}

/// A realm created for one test (a second tenant's realm); deleted on drop.
pub struct TempRealm<'a> {
    kc: &'a RealKeycloak,
    pub name: String,
}

impl RealKeycloak {
    /// Creates realm `name` with a confidential client `client_id`/`secret` (direct access
    /// grants) and users given as (username, password).
    pub fn create_realm(
        &self,
        name: &str,
        client_id: &str,
        secret: &str,
        users: &[(&str, &str)],
    ) -> TempRealm<'_> {
        let users: Vec<Value> = users
            .iter()
            .map(|(u, p)| {
                json!({
                    "username": u, "enabled": true, "emailVerified": true,
                    "email": format!("{u}@{name}.test"), "firstName": "E2e", "lastName": u,
                    "credentials": [{"type": "password", "value": p, "temporary": false}],
                })
            })
            .collect();
        self.admin_root(
            "POST",
            "/realms",
            Some(json!({
                "realm": name,
                "enabled": true,
                "clients": [{
                    "clientId": client_id, "enabled": true, "publicClient": false,
                    "clientAuthenticatorType": "client-secret", "secret": secret,
                    "standardFlowEnabled": false, "directAccessGrantsEnabled": true,
                }],
                "users": users,
            })),
        );
        TempRealm {
            kc: self,
            name: name.to_owned(),
        }
    }
}

impl Drop for TempRealm<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.kc
                .admin_root("DELETE", &format!("/realms/{}", self.name), None)
        }));
    }
}

/// Brings Keycloak back after [`RealKeycloak::stop`], even when the test fails first.
pub struct Restart {
    kc: &'static RealKeycloak,
    done: bool,
}

impl Restart {
    /// Starts Keycloak again with the data it had; returns how long that took.
    pub fn start_again(mut self) -> Duration {
        self.done = true;
        self.kc.restart().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.kc.restart()
        {
            eprintln!("e2e: could not restart Keycloak after a failed test: {e}");
        }
    }
}

/// A signing key added by [`RealKeycloak::rotate_signing_key`]; removed on drop.
pub struct RotatedKey<'a> {
    kc: &'a RealKeycloak,
    pub id: String,
}

impl Drop for RotatedKey<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.kc
                .admin("DELETE", &format!("/components/{}", self.id), None)
        }));
    }
}

/// The `kid` in a JWT's header.
pub fn kid_of(jwt: &str) -> Option<String> {
    jsonwebtoken::decode_header(jwt).ok()?.kid
}
