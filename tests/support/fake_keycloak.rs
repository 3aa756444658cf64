//! In-process FAKE Keycloak for fast, deterministic fault tests.
//!
//! edgeauth must keep a site logging in through WAN and Keycloak outages, and it maps Keycloak's
//! exact OIDC responses (error codes, error descriptions, token claims) to its own decisions.
//! Testing that against a real Keycloak container is slow and cannot produce the failures that
//! matter on demand (a refused port, a black hole, a slow or broken proxy, key rotation, central
//! logout). This module runs a small HTTP server on 127.0.0.1 inside the test process that speaks
//! the subset of the Keycloak 26 OIDC protocol edgeauth uses, with the same JSON shapes, and lets
//! a plain `#[test]` inject faults synchronously.
//!
//! What it serves (realm `site`, confidential client `edgeauth` / `edgeauth-secret`):
//! * `GET  /realms/site/.well-known/openid-configuration`
//! * `GET  /realms/site/protocol/openid-connect/certs` (one `use: sig` RS256 key per published
//!   signing key, plus one `use: enc` RSA-OAEP key, as real Keycloak does)
//! * `POST /realms/site/protocol/openid-connect/token` (`password`, `refresh_token`,
//!   `client_credentials`), `.../logout` (refresh-token logout, 204) and `.../revoke` (200)
//! * `POST .../token/introspect` (RFC 7662, client-authenticated): `{"active": true, ...claims}`
//!   for an access token whose signature, expiry, session and user are good and whose `aud`
//!   names the asking client (Keycloak 26.7 logs "Client 'edgeauth' is not in the token
//!   audience" otherwise: see `set_audience_mapper`), else `{"active": false}`
//! * `GET  /health/ready` (`{"status":"UP","checks":[]}`; real Keycloak serves it on the
//!   management port, here it is the same port)
//! * the Admin REST API subset edgeauth's sync uses, under `/admin/realms/site` (see the
//!   "Admin REST API" section below): users (search, page, count, read, create, update, delete),
//!   `reset-password`, `credentials`, group membership, `groups`, `group-by-path`, realm and
//!   client role mappings, `clients`. Every call needs `Authorization: Bearer <access token of
//!   this fake's client_credentials grant>` (service account `service-account-edgeauth`, which
//!   holds `realm-management` `manage-users`); a user's token gets `403`, anything else `401`.
//!
//! Error shapes follow the Keycloak 26 sources (`ClientIdAndSecretAuthenticator`,
//! `AuthenticationProcessor.handleClientAuthException`, `ValidateUsername`, `ValidatePassword`,
//! `ResourceOwnerPasswordCredentialsGrantType`, `TokenManager`, `RefreshTokenGrantType`,
//! `LogoutEndpoint`). Notable Keycloak behaviours kept on purpose:
//! * a wrong or missing client secret is `401 unauthorized_client`, an unknown client id is
//!   `401 invalid_client` (both "Invalid client or Invalid client credentials");
//! * the grant type is checked before the client is authenticated;
//! * a disabled user gets `400 Account disabled` even with a wrong password (the username step
//!   runs before the password step);
//! * refresh of a centrally logged-out session is `400 Session not active`; refresh by a user
//!   disabled after login is `400 User disabled` (the session itself stays, as in Keycloak);
//! * an `id_token` (and `openid` in `scope`) is only returned when the request's `scope`
//!   contains `openid`;
//! * usernames are case-insensitive and reported lower-cased in `preferred_username`;
//! * access tokens carry `sid` but not `session_state` (removed from tokens in Keycloak 26; it
//!   stays in the token response); realm roles include Keycloak's defaults
//!   (`default-roles-site`, `offline_access`, `uma_authorization`).
//!
//! Refresh tokens are HS512 JWTs like Keycloak's (clients must treat them as opaque). Session
//! idle/max timeouts are not modelled beyond the refresh token's own 1800 s expiry.
//!
//! Faults ([`Fault`]) apply to every endpoint, health included. `set_fault` returns once the
//! server has applied the fault (for `Refused`: the listener is closed; when cleared: it listens
//! again on the same port), so a test can act right after it.
//!
//! Signing keys are TEST-ONLY RSA keys committed in `tests/fixtures/fake-keycloak-key-*.pem`,
//! with their JWK `kid`/`n`/`e` precomputed in `tests/fixtures/fake-keycloak-keys.json`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

const REALM: &str = "site";
const CLIENT_ID: &str = "edgeauth";
const DEFAULT_CLIENT_SECRET: &str = "edgeauth-secret";
const SERVICE_ACCOUNT_USERNAME: &str = "service-account-edgeauth";
const DEFAULT_ACCESS_TOKEN_LIFESPAN: Duration = Duration::from_secs(300);
const REFRESH_TOKEN_LIFESPAN_SECS: u64 = 1800;
/// Realm roles every Keycloak user gets through the `default-roles-<realm>` composite.
const DEFAULT_REALM_ROLES: [&str; 3] =
    ["default-roles-site", "offline_access", "uma_authorization"];
/// Client roles of the `account` client that come with the default roles (hence `aud: account`).
const ACCOUNT_CLIENT_ROLES: [&str; 3] = ["manage-account", "manage-account-links", "view-profile"];
/// The realm's password policy, as Keycloak's `length(8) and notUsername`; checked by the admin
/// API only (the sync helpers `add_user` / `set_password` set any password).
const PASSWORD_MIN_LENGTH: usize = 8;
/// Keycloak's `Constants.DEFAULT_MAX_RESULTS`, the user listing's default `max`.
const DEFAULT_MAX_RESULTS: usize = 100;
/// The clients of a fresh Keycloak 26 realm, plus `edgeauth`.
const CLIENT_IDS: [&str; 7] = [
    "account",
    "account-console",
    "admin-cli",
    "broker",
    CLIENT_ID,
    "realm-management",
    "security-admin-console",
];
/// How long `set_fault` waits for the server thread to apply a fault.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

const KEYS_JSON: &str = include_str!("../fixtures/fake-keycloak-keys.json");
const SIGNING_KEY_PEMS: [(&str, &str); 3] = [
    (
        "fake-keycloak-key-1.pem",
        include_str!("../fixtures/fake-keycloak-key-1.pem"),
    ),
    (
        "fake-keycloak-key-2.pem",
        include_str!("../fixtures/fake-keycloak-key-2.pem"),
    ),
    (
        "fake-keycloak-key-3.pem",
        include_str!("../fixtures/fake-keycloak-key-3.pem"),
    ),
];

/// A failure mode of the whole fake server (every endpoint, health included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Normal operation.
    None,
    /// The port is closed: connecting gets ECONNREFUSED; open connections are dropped. Clearing
    /// the fault listens again on the same port.
    Refused,
    /// TCP connections are accepted and never answered (held open, nothing read) until the fault
    /// clears or the fake is dropped. Requests on already-open keep-alive connections hang too.
    BlackHole,
    /// Every request is answered normally after this delay.
    Slow(Duration),
    /// Every request gets `500` with an HTML body (as from a proxy or a crashed server).
    Status500,
    /// Every request gets `200`, `Content-Type: application/json` and a body that is not JSON.
    Garbage,
}

/// Handle to a running fake Keycloak; the server stops when this is dropped.
pub struct FakeKeycloak {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKeycloak {
    /// Starts the fake on `127.0.0.1:<free port>`: realm `site`, client `edgeauth`, secret
    /// `edgeauth-secret`, direct access grants on, access tokens valid 300 s, no users.
    pub fn start() -> FakeKeycloak {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake keycloak");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared::new(port));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-keycloak-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fake keycloak runtime");
                runtime.block_on(serve(listener, server_shared, shutdown_rx));
                // Dropping the runtime cancels every connection task, closing held sockets.
            })
            .expect("spawn fake keycloak thread");
        FakeKeycloak {
            shared,
            shutdown,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    pub fn realm(&self) -> &str {
        REALM
    }

    pub fn client_id(&self) -> &str {
        CLIENT_ID
    }

    /// The secret the client was started with (`edgeauth-secret`); it does not follow
    /// `set_client_secret`, which simulates a misconfiguration on the Keycloak side.
    pub fn client_secret(&self) -> &str {
        DEFAULT_CLIENT_SECRET
    }

    /// `base_url() + "/realms/site"`, the `iss` of every token.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Adds (or replaces, keeping its `sub`, `createdTimestamp` and password credential id) an
    /// enabled user. Usernames are case-insensitive. `client_roles` are roles of the `edgeauth`
    /// client; `groups` are group names or paths (`"ops"` becomes `"/ops"`), created in the realm
    /// (with their parents) if missing. An empty `password` means no password credential. The
    /// realm password policy is not applied here.
    pub fn add_user(
        &self,
        username: &str,
        password: &str,
        realm_roles: &[&str],
        client_roles: &[&str],
        groups: &[&str],
    ) {
        let key = username.to_lowercase();
        let mut realm = self.shared.realm();
        let groups: Vec<String> = groups.iter().map(|g| group_path(g)).collect();
        for path in &groups {
            realm.ensure_group(path);
        }
        let mut user = User::new(&key);
        if let Some(old) = realm.users.remove(&key) {
            user.id = old.id;
            user.created_ms = old.created_ms;
            user.password = old.password;
        }
        user.enabled = true;
        if password.is_empty() {
            user.password = None;
        } else {
            user.set_password(password);
        }
        user.realm_roles = realm_roles.iter().map(|r| r.to_string()).collect();
        user.client_roles = client_roles.iter().map(|r| r.to_string()).collect();
        user.groups = groups;
        realm.users.insert(key, user);
    }

    /// Sets the user's password (no policy check); the credential's `createdDate` becomes now.
    pub fn set_password(&self, username: &str, password: &str) {
        let mut realm = self.shared.realm();
        let user = realm
            .users
            .get_mut(&username.to_lowercase())
            .unwrap_or_else(|| panic!("fake keycloak: no user {username:?}"));
        user.set_password(password);
    }

    pub fn set_enabled(&self, username: &str, enabled: bool) {
        let mut realm = self.shared.realm();
        let user = realm
            .users
            .get_mut(&username.to_lowercase())
            .unwrap_or_else(|| panic!("fake keycloak: no user {username:?}"));
        user.enabled = enabled;
    }

    /// Central logout (admin "sign out" of the user): every session of the user ends, so all of
    /// its refresh tokens get `Session not active`. Issued access tokens stay valid until `exp`.
    pub fn logout_user(&self, username: &str) {
        let key = username.to_lowercase();
        self.shared
            .realm()
            .sessions
            .retain(|_, session| session.username != key);
    }

    /// Applies a fault and returns once the server thread has applied it.
    pub fn set_fault(&self, fault: Fault) {
        let generation = {
            let mut applied = lock(&self.shared.applied);
            applied.requested += 1;
            applied.requested
        };
        self.shared.fault.send_replace((fault, generation));
        let applied = lock(&self.shared.applied);
        let (applied, timeout) = self
            .shared
            .applied_cv
            .wait_timeout_while(applied, APPLY_TIMEOUT, |a| a.done < generation)
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            !timeout.timed_out() || applied.done >= generation,
            "fake keycloak: fault {fault:?} not applied within {APPLY_TIMEOUT:?}"
        );
    }

    /// Lifespan of access tokens issued from now on (`expires_in`, `exp - iat`). Default 300 s.
    pub fn set_access_token_lifespan(&self, d: Duration) {
        self.shared.realm().access_token_lifespan = d;
    }

    /// Changes the secret Keycloak expects, to simulate a misconfigured client.
    pub fn set_client_secret(&self, secret: &str) {
        self.shared.realm().client_secret = secret.to_string();
    }

    /// Adds (or removes) an Audience protocol mapper that puts `edgeauth` in the `aud` of the
    /// access tokens it issues (`["edgeauth", "account"]`), which Keycloak's introspection
    /// requires of the asking client.
    pub fn set_audience_mapper(&self, on: bool) {
        self.shared.realm().audience_mapper = on;
    }

    pub fn set_direct_access_grants(&self, enabled: bool) {
        self.shared.realm().direct_access_grants = enabled;
    }

    /// Moves to the next fixture signing key (cycling through three), which signs from now on.
    /// With `keep_old_in_jwks` the previously published keys stay in the JWKS; without, only the
    /// new signing key (and the `enc` key) are published.
    pub fn rotate_keys(&self, keep_old_in_jwks: bool) {
        let count = self.shared.keys.len();
        let mut realm = self.shared.realm();
        let next = (realm.current_key + 1) % count;
        realm.current_key = next;
        if keep_old_in_jwks {
            realm.published_keys.retain(|&k| k != next);
            realm.published_keys.insert(0, next);
        } else {
            realm.published_keys = vec![next];
        }
    }

    /// Number of HTTP requests (since start or `reset_counters`) whose path ends with
    /// `path_suffix`, e.g. `"/token"`, `"/certs"`, `"/health/ready"`. Requests answered by a
    /// fault count; connections black-holed or refused before any request was read do not.
    pub fn requests(&self, path_suffix: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path.ends_with(path_suffix))
            .count()
    }

    /// `requests("/protocol/openid-connect/token")`.
    pub fn token_requests(&self) -> usize {
        self.requests("/protocol/openid-connect/token")
    }

    pub fn reset_counters(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The user's id (`sub`, and `{id}` in the admin API).
    pub fn user_id(&self, username: &str) -> Option<String> {
        let realm = self.shared.realm();
        realm
            .users
            .get(&username.to_lowercase())
            .map(|u| u.id.clone())
    }

    pub fn user_exists(&self, username: &str) -> bool {
        self.user_id(username).is_some()
    }

    /// True if `password` is the user's current password.
    pub fn check_password(&self, username: &str, password: &str) -> bool {
        let realm = self.shared.realm();
        realm
            .users
            .get(&username.to_lowercase())
            .and_then(|u| u.password.as_ref())
            .is_some_and(|p| p.value == password)
    }

    /// `createdDate` (ms since the epoch) of the user's password credential.
    pub fn password_created_ms(&self, username: &str) -> Option<u64> {
        let realm = self.shared.realm();
        realm
            .users
            .get(&username.to_lowercase())
            .and_then(|u| u.password.as_ref())
            .map(|p| p.created_ms)
    }

    /// Overrides the `createdDate` of the user's password credential (which must exist), e.g. to
    /// make Keycloak's password newer than a change queued at the site.
    pub fn set_password_created_ms(&self, username: &str, ms: u64) {
        let mut realm = self.shared.realm();
        let password = realm
            .users
            .get_mut(&username.to_lowercase())
            .and_then(|u| u.password.as_mut())
            .unwrap_or_else(|| panic!("fake keycloak: no password for user {username:?}"));
        password.created_ms = ms;
    }

    /// The user's group paths (`"/ops"`), sorted; empty for an unknown user.
    pub fn user_groups(&self, username: &str) -> Vec<String> {
        let realm = self.shared.realm();
        let mut groups = realm
            .users
            .get(&username.to_lowercase())
            .map(|u| u.groups.clone())
            .unwrap_or_default();
        groups.sort();
        groups
    }

    /// Deletes the user and its sessions (as the admin console does); no-op if unknown.
    pub fn delete_user(&self, username: &str) {
        let key = username.to_lowercase();
        let mut realm = self.shared.realm();
        realm.users.remove(&key);
        realm.sessions.retain(|_, session| session.username != key);
    }

    /// Creates a group by name or path (and its missing parents) and returns its id.
    pub fn add_group(&self, path: &str) -> String {
        self.shared.realm().ensure_group(&group_path(path))
    }

    /// Number of admin API requests (paths under `/admin/`, since start or `reset_counters`) with
    /// this method whose `path?query` contains `path_contains`, e.g. `("PUT",
    /// "/reset-password")`, `("POST", "/users")`. Requests answered by a fault count.
    pub fn admin_requests(&self, method: &str, path_contains: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path.starts_with("/admin/") && r.method.eq_ignore_ascii_case(method))
            .filter(|r| {
                let target = match &r.query {
                    Some(query) => format!("{}?{query}", r.path),
                    None => r.path.clone(),
                };
                target.contains(path_contains)
            })
            .count()
    }

    /// The next `count` client-credentials token requests (the service account's, which the sync
    /// makes first) are answered only after `delay`, as by a Keycloak that has just started and
    /// is still cold. Login grants and the health endpoint are not slowed.
    pub fn set_cold_service_tokens(&self, count: usize, delay: Duration) {
        self.shared.realm().cold_service_tokens = (count, delay);
    }

    /// Every admin API call (before authentication) answers this status and JSON body instead,
    /// e.g. `Some((500, r#"{"error":"unknown_error"}"#.into()))`; `None` clears it. The other
    /// endpoints are not affected; [`Fault`]s still apply first.
    pub fn set_admin_fault(&self, fault: Option<(u16, String)>) {
        let fault = fault.map(|(status, body)| {
            let status = StatusCode::from_u16(status)
                .unwrap_or_else(|_| panic!("fake keycloak: bad admin fault status {status}"));
            (status, body)
        });
        self.shared.realm().admin_fault = fault;
    }
}

impl Drop for FakeKeycloak {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State

struct Shared {
    port: u16,
    base_url: String,
    issuer: String,
    /// Current fault and the generation of the `set_fault` call that set it.
    fault: watch::Sender<(Fault, u64)>,
    applied: Mutex<Applied>,
    applied_cv: Condvar,
    realm: Mutex<RealmState>,
    requests: Mutex<Vec<RequestRecord>>,
    keys: Vec<SigningKey>,
    enc_jwk: Value,
    refresh_secret: Vec<u8>,
}

struct RequestRecord {
    method: String,
    path: String,
    query: Option<String>,
}

#[derive(Default)]
struct Applied {
    requested: u64,
    done: u64,
}

struct SigningKey {
    kid: String,
    n: String,
    e: String,
    encoding: EncodingKey,
}

struct RealmState {
    client_secret: String,
    direct_access_grants: bool,
    /// An Audience mapper on the client: its access tokens name it in `aud`.
    audience_mapper: bool,
    access_token_lifespan: Duration,
    current_key: usize,
    /// Indexes into `Shared::keys` published in the JWKS, current first.
    published_keys: Vec<usize>,
    users: HashMap<String, User>,
    /// Active user sessions by id (`sid`).
    sessions: HashMap<String, Session>,
    service_account_id: String,
    /// The realm's id (`containerId` of realm roles); a UUID, as for realms created in 26.
    realm_id: String,
    /// Group path (`/parent/child`) to group id.
    groups: BTreeMap<String, String>,
    /// Stable role ids, by `realm:<name>` or `<clientId>:<name>`.
    role_ids: HashMap<String, String>,
    /// Client id to the client's internal id (UUID).
    client_uuids: Vec<(&'static str, String)>,
    /// See `FakeKeycloak::set_admin_fault`.
    admin_fault: Option<(StatusCode, String)>,
    /// See `FakeKeycloak::set_cold_service_tokens`: (requests left, delay).
    cold_service_tokens: (usize, Duration),
}

struct User {
    id: String,
    /// Lower-cased, as Keycloak stores it.
    username: String,
    password: Option<Password>,
    enabled: bool,
    /// Lower-cased, as Keycloak stores it.
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email_verified: bool,
    /// `createdTimestamp`, ms.
    created_ms: u64,
    /// e.g. `UPDATE_PASSWORD` after a temporary password.
    required_actions: Vec<String>,
    realm_roles: Vec<String>,
    client_roles: Vec<String>,
    /// Group paths, e.g. `/ops`.
    groups: Vec<String>,
}

/// The user's password credential.
struct Password {
    /// Kept when the password is reset, as Keycloak does.
    credential_id: String,
    value: String,
    /// `createdDate`, ms.
    created_ms: u64,
}

impl User {
    /// A new user as the admin API creates it: disabled unless told otherwise.
    fn new(username: &str) -> User {
        User {
            id: uuid(),
            username: username.to_string(),
            password: None,
            enabled: false,
            email: None,
            first_name: None,
            last_name: None,
            email_verified: false,
            created_ms: now_ms(),
            required_actions: Vec::new(),
            realm_roles: Vec::new(),
            client_roles: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Creates or resets the password credential (same id, `createdDate` now).
    fn set_password(&mut self, value: &str) {
        let credential_id = match &self.password {
            Some(p) => p.credential_id.clone(),
            None => uuid(),
        };
        self.password = Some(Password {
            credential_id,
            value: value.to_string(),
            created_ms: now_ms(),
        });
    }
}

struct Session {
    username: String,
    started: u64,
    /// The `scope` string of the session's tokens.
    scope: String,
}

impl Shared {
    fn new(port: u16) -> Shared {
        let base_url = format!("http://127.0.0.1:{port}");
        let issuer = format!("{base_url}/realms/{REALM}");
        let (keys, enc_jwk) = load_keys();
        let mut refresh_secret = vec![0u8; 64];
        getrandom::getrandom(&mut refresh_secret).expect("random refresh-token secret");
        let (fault, _) = watch::channel((Fault::None, 0));
        Shared {
            port,
            base_url,
            issuer,
            fault,
            applied: Mutex::new(Applied::default()),
            applied_cv: Condvar::new(),
            realm: Mutex::new(RealmState {
                client_secret: DEFAULT_CLIENT_SECRET.to_string(),
                direct_access_grants: true,
                audience_mapper: false,
                access_token_lifespan: DEFAULT_ACCESS_TOKEN_LIFESPAN,
                current_key: 0,
                published_keys: vec![0],
                users: HashMap::new(),
                sessions: HashMap::new(),
                service_account_id: uuid(),
                realm_id: uuid(),
                groups: BTreeMap::new(),
                role_ids: HashMap::new(),
                client_uuids: CLIENT_IDS.iter().map(|&c| (c, uuid())).collect(),
                admin_fault: None,
                cold_service_tokens: (0, Duration::ZERO),
            }),
            requests: Mutex::new(Vec::new()),
            keys,
            enc_jwk,
            refresh_secret,
        }
    }

    fn realm(&self) -> MutexGuard<'_, RealmState> {
        lock(&self.realm)
    }

    fn current_fault(&self) -> Fault {
        self.fault.borrow().0
    }

    fn mark_applied(&self, generation: u64) {
        let mut applied = lock(&self.applied);
        if generation > applied.done {
            applied.done = generation;
            self.applied_cv.notify_all();
        }
    }
}

impl RealmState {
    /// The id of the group at `path` (normalized), creating it and its parents if missing.
    fn ensure_group(&mut self, path: &str) -> String {
        let mut end = 0;
        loop {
            end = path[end + 1..]
                .find('/')
                .map_or(path.len(), |i| end + 1 + i);
            let prefix = &path[..end];
            if !self.groups.contains_key(prefix) {
                self.groups.insert(prefix.to_string(), uuid());
            }
            if end == path.len() {
                return self.groups[path].clone();
            }
        }
    }

    fn role_id(&mut self, container: &str, name: &str) -> String {
        self.role_ids
            .entry(format!("{container}:{name}"))
            .or_insert_with(uuid)
            .clone()
    }

    fn client_uuid(&self, client_id: &str) -> Option<&str> {
        self.client_uuids
            .iter()
            .find(|(c, _)| *c == client_id)
            .map(|(_, id)| id.as_str())
    }

    fn user_key_by_id(&self, id: &str) -> Option<String> {
        self.users
            .iter()
            .find(|(_, u)| u.id == id)
            .map(|(key, _)| key.clone())
    }

    fn group_path_by_id(&self, id: &str) -> Option<String> {
        self.groups
            .iter()
            .find(|(_, gid)| *gid == id)
            .map(|(path, _)| path.clone())
    }
}

/// `"ops"`, `"/ops"` and `"/ops/"` all become `"/ops"`.
fn group_path(name_or_path: &str) -> String {
    let trimmed = name_or_path.trim_matches('/');
    format!("/{trimmed}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn load_keys() -> (Vec<SigningKey>, Value) {
    let doc: Value = serde_json::from_str(KEYS_JSON).expect("fake-keycloak-keys.json");
    let keys = doc["signing"]
        .as_array()
        .expect("signing keys")
        .iter()
        .map(|jwk| {
            let file = jwk["file"].as_str().expect("file");
            let pem = SIGNING_KEY_PEMS
                .iter()
                .find(|(name, _)| *name == file)
                .unwrap_or_else(|| panic!("no embedded PEM for {file}"))
                .1;
            SigningKey {
                kid: jwk["kid"].as_str().expect("kid").to_string(),
                n: jwk["n"].as_str().expect("n").to_string(),
                e: jwk["e"].as_str().expect("e").to_string(),
                encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("fixture RSA key"),
            }
        })
        .collect();
    let enc = &doc["encryption"];
    let enc_jwk = json!({
        "kid": enc["kid"],
        "kty": "RSA",
        "alg": "RSA-OAEP",
        "use": "enc",
        "n": enc["n"],
        "e": enc["e"],
    });
    (keys, enc_jwk)
}

// ---------------------------------------------------------------------------------------------
// Server: accept loop with fault control

async fn serve(
    first: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = router(shared.clone());
    let mut fault_rx = shared.fault.subscribe();
    let mut listener = Some(TcpListener::from_std(first).expect("tokio listener"));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let (fault, generation) = *fault_rx.borrow_and_update();
        if fault == Fault::Refused {
            listener = None;
            shared.mark_applied(generation);
            tokio::select! {
                _ = fault_rx.changed() => continue,
                _ = shutdown.changed() => break,
            }
        }
        if listener.is_none() {
            match bind_same_port(shared.port) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    // The old socket may linger briefly; retry until it can be bound again.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        shared.mark_applied(generation);
        let Some(active) = listener.as_ref() else {
            continue;
        };
        tokio::select! {
            accepted = active.accept() => match accepted {
                Ok((stream, _)) => spawn_connection(stream, &shared, &router),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = fault_rx.changed() => {}
            _ = shutdown.changed() => break,
        }
    }
}

fn bind_same_port(port: u16) -> io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

fn spawn_connection(stream: tokio::net::TcpStream, shared: &Arc<Shared>, router: &Router) {
    let mut fault_rx = shared.fault.subscribe();
    let black_hole = shared.current_fault() == Fault::BlackHole;
    let router = router.clone();
    tokio::spawn(async move {
        if black_hole {
            // Hold the socket without reading or answering until the fault changes.
            let _held = stream;
            let _ = fault_rx.wait_for(|(f, _)| *f != Fault::BlackHole).await;
            return;
        }
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
        tokio::select! {
            _ = connection => {}
            // The port "went away": drop open keep-alive connections too.
            _ = fault_rx.wait_for(|(f, _)| *f == Fault::Refused) => {}
        }
    });
}

// ---------------------------------------------------------------------------------------------
// HTTP routes

fn router(shared: Arc<Shared>) -> Router {
    let oidc = format!("/realms/{REALM}/protocol/openid-connect");
    Router::new()
        .route(
            &format!("/realms/{REALM}/.well-known/openid-configuration"),
            get(discovery),
        )
        .route(&format!("{oidc}/certs"), get(certs))
        .route(&format!("{oidc}/token"), post(token))
        .route(&format!("{oidc}/logout"), post(logout))
        .route(&format!("{oidc}/revoke"), post(revoke))
        .route(&format!("{oidc}/token/introspect"), post(introspect))
        .route("/health", get(health))
        .route("/health/ready", get(health))
        .route("/health/live", get(health))
        .route(&format!("/admin/realms/{REALM}/{{*rest}}"), any(admin))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), faults))
        .with_state(shared)
}

async fn faults(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    lock(&shared.requests).push(RequestRecord {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().map(str::to_string),
    });
    match shared.current_fault() {
        Fault::None => next.run(request).await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Fault::Status500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
            "<html><head><title>500 Internal Server Error</title></head><body>\
             <h1>500 Internal Server Error</h1><p>Something went wrong.</p></body></html>\n",
        )
            .into_response(),
        Fault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "<html><body>Captive portal: please sign in</body></html>{\"access_tok",
        )
            .into_response(),
        Fault::BlackHole => {
            // A request on a connection opened before the fault: never answer while it lasts.
            let mut fault_rx = shared.fault.subscribe();
            let _ = fault_rx.wait_for(|(f, _)| *f != Fault::BlackHole).await;
            next.run(request).await
        }
        // The connection task drops this connection; never answer on it.
        Fault::Refused => std::future::pending().await,
    }
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({
            "error": "Unable to find matching target resource method",
            "error_description": "For more on this error consult the server log."
        }),
    )
}

async fn health() -> Response {
    json_response(StatusCode::OK, json!({"status": "UP", "checks": []}))
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    let iss = &shared.issuer;
    let oidc = format!("{iss}/protocol/openid-connect");
    // Two literals: one `json!` this size exceeds the default macro recursion limit.
    let mut doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "introspection_endpoint": format!("{oidc}/token/introspect"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "frontchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "jwks_uri": format!("{oidc}/certs"),
        "check_session_iframe": format!("{oidc}/login-status-iframe.html"),
        "grant_types_supported": [
            "authorization_code",
            "client_credentials",
            "implicit",
            "password",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:uma-ticket",
            "urn:openid:params:grant-type:ciba"
        ],
        "acr_values_supported": ["0", "1"],
        "response_types_supported": [
            "code", "none", "id_token", "token", "id_token token",
            "code id_token", "code token", "code id_token token"
        ],
        "subject_types_supported": ["public", "pairwise"],
        "prompt_values_supported": ["none", "login", "consent"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "userinfo_signing_alg_values_supported": ["RS256", "none"],
        "request_object_signing_alg_values_supported": ["RS256", "none"],
        "response_modes_supported": [
            "query", "fragment", "form_post", "query.jwt", "fragment.jwt",
            "form_post.jwt", "jwt"
        ],
        "registration_endpoint": format!("{iss}/clients-registrations/openid-connect"),
    });
    let auth_methods = json!([
        "private_key_jwt",
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
        "client_secret_jwt"
    ]);
    let more = json!({
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "HS256", "HS512"],
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "claims_supported": [
            "aud", "sub", "iss", "auth_time", "name", "given_name", "family_name",
            "preferred_username", "email", "acr"
        ],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": true,
        "scopes_supported": [
            "openid", "basic", "roles", "web-origins", "acr", "profile", "email",
            "address", "phone", "offline_access", "microprofile-jwt", "organization"
        ],
        "request_parameter_supported": true,
        "request_uri_parameter_supported": true,
        "require_request_uri_registration": true,
        "code_challenge_methods_supported": ["plain", "S256"],
        "tls_client_certificate_bound_access_tokens": true,
        "revocation_endpoint": format!("{oidc}/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "device_authorization_endpoint": format!("{oidc}/auth/device"),
        "backchannel_token_delivery_modes_supported": ["poll", "ping"],
        "backchannel_authentication_endpoint": format!("{oidc}/ext/ciba/auth"),
        "require_pushed_authorization_requests": false,
        "pushed_authorization_request_endpoint": format!("{oidc}/ext/par/request"),
        "authorization_response_iss_parameter_supported": true
    });
    if let (Some(doc), Value::Object(more)) = (doc.as_object_mut(), more) {
        doc.extend(more);
    }
    json_response(StatusCode::OK, doc)
}

async fn certs(State(shared): State<Arc<Shared>>) -> Response {
    let published = shared.realm().published_keys.clone();
    let mut keys: Vec<Value> = published
        .iter()
        .map(|&i| {
            let key = &shared.keys[i];
            json!({
                "kid": key.kid,
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "n": key.n,
                "e": key.e,
            })
        })
        .collect();
    // Real Keycloak lists its RSA-OAEP encryption key too; clients must pick `use: sig`.
    keys.insert(0, shared.enc_jwk.clone());
    json_response(StatusCode::OK, json!({ "keys": keys }))
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let grant_type = match form.get("grant_type") {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing form parameter: grant_type",
            );
        }
        Some(g) => g.as_str(),
    };
    if !matches!(
        grant_type,
        "password" | "refresh_token" | "client_credentials" | "authorization_code"
    ) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    if let Err(refusal) = authenticate_client(&shared, &headers, &form) {
        return refusal.into_response();
    }
    if grant_type == "client_credentials" {
        let cold = {
            let mut realm = shared.realm();
            let (left, delay) = realm.cold_service_tokens;
            if left > 0 {
                realm.cold_service_tokens.0 = left - 1;
                Some(delay)
            } else {
                None
            }
        };
        if let Some(delay) = cold {
            tokio::time::sleep(delay).await;
        }
    }
    let response = match grant_type {
        "password" => password_grant(&shared, &form),
        "refresh_token" => refresh_grant(&shared, &form),
        "client_credentials" => client_credentials_grant(&shared, &form),
        // The fake never issues authorization codes.
        _ => Err(Refusal::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Code not valid",
        )),
    };
    match response {
        Ok(body) => {
            let mut response = json_response(StatusCode::OK, body);
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    if let Err(refusal) = authenticate_client(&shared, &headers, &form) {
        return refusal.into_response();
    }
    let Some(refresh_token) = form.get("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "No refresh token",
        );
    };
    // Keycloak does not check expiry here, and answers 204 when the session is already gone.
    let claims = match verify_refresh_token(&shared, refresh_token, false) {
        Ok(claims) => claims,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(sid) = claims["sid"].as_str() {
        shared.realm().sessions.remove(sid);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    if let Err(refusal) = authenticate_client(&shared, &headers, &form) {
        return refusal.into_response();
    }
    let Some(token) = form.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Token not provided",
        );
    };
    // Revoking a refresh token ends its (client) session; anything else is accepted silently.
    if let Ok(claims) = verify_refresh_token(&shared, token, false)
        && let Some(sid) = claims["sid"].as_str()
    {
        shared.realm().sessions.remove(sid);
    }
    StatusCode::OK.into_response()
}

/// RFC 7662 as Keycloak answers it: inactive (`{"active": false}`, 200) for anything but an
/// access token signed with one of the realm's keys, unexpired, whose session is still there
/// and whose user is enabled.
async fn introspect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    if let Err(refusal) = authenticate_client(&shared, &headers, &form) {
        return refusal.into_response();
    }
    let inactive = || json_response(StatusCode::OK, json!({"active": false}));
    let Some(token) = form.get("token") else {
        return inactive();
    };
    let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else {
        return inactive();
    };
    let Some(key) = shared.keys.iter().find(|k| k.kid == kid) else {
        return inactive();
    };
    let Ok(decoding) = DecodingKey::from_rsa_components(&key.n, &key.e) else {
        return inactive();
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_issuer(&[&shared.issuer]);
    let Ok(data) = jsonwebtoken::decode::<Value>(token, &decoding, &validation) else {
        return inactive();
    };
    let mut claims = data.claims;
    let realm = shared.realm();
    let session_user = claims["sid"]
        .as_str()
        .and_then(|sid| realm.sessions.get(sid))
        .map(|s| s.username.clone());
    let enabled = session_user
        .as_ref()
        .and_then(|u| realm.users.get(u))
        .is_some_and(|u| u.enabled);
    let audience = match &claims["aud"] {
        Value::String(a) => a == CLIENT_ID,
        Value::Array(list) => list.iter().any(|a| a == CLIENT_ID),
        _ => false,
    };
    if claims["typ"] != "Bearer" || !enabled || !audience {
        return inactive();
    }
    claims["active"] = json!(true);
    claims["client_id"] = claims["azp"].clone();
    claims["username"] = claims["preferred_username"].clone();
    claims["token_type"] = json!("Bearer");
    json_response(StatusCode::OK, claims)
}

// ---------------------------------------------------------------------------------------------
// Grants

/// Confidential client authentication, `client_secret_basic` or `client_secret_post`, with
/// Keycloak 26's responses.
fn authenticate_client(
    shared: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), Refusal> {
    let mut client_id = None;
    let mut secret = None;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        match parse_basic(value) {
            Some((id, s)) => {
                client_id = Some(id);
                secret = Some(s);
            }
            None if !form.contains_key("client_id") => {
                return Err(Refusal::BasicChallenge);
            }
            None => {}
        }
    }
    if let Some(id) = form.get("client_id") {
        client_id = Some(id.clone());
    }
    if let Some(s) = form.get("client_secret") {
        secret = Some(s.clone());
    }
    let Some(client_id) = client_id else {
        return Err(Refusal::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "Missing client_id parameter",
        ));
    };
    if client_id != CLIENT_ID {
        return Err(Refusal::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        ));
    }
    let expected = shared.realm().client_secret.clone();
    if secret.as_deref() != Some(expected.as_str()) {
        return Err(Refusal::oauth(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        ));
    }
    Ok(())
}

fn password_grant(shared: &Shared, form: &HashMap<String, String>) -> Result<Value, Refusal> {
    let mut realm = shared.realm();
    if !realm.direct_access_grants {
        return Err(Refusal::oauth(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "Client not allowed for direct access grants",
        ));
    }
    let Some(username) = form.get("username") else {
        return Err(Refusal::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "Missing parameter: username",
        ));
    };
    let key = username.to_lowercase();
    let Some(user) = realm.users.get(&key) else {
        return Err(invalid_user_credentials());
    };
    if !user.enabled {
        return Err(Refusal::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Account disabled",
        ));
    }
    let password_ok = match (&user.password, form.get("password")) {
        (Some(password), Some(given)) => password.value == *given,
        _ => false,
    };
    if !password_ok {
        return Err(invalid_user_credentials());
    }
    if !user.required_actions.is_empty() {
        return Err(invalid_grant("Account is not fully set up"));
    }
    let scope = granted_scope(form.get("scope").map(String::as_str));
    let sid = uuid();
    let started = now();
    realm.sessions.insert(
        sid.clone(),
        Session {
            username: key.clone(),
            started,
            scope: scope.clone(),
        },
    );
    let user = &realm.users[&key];
    Ok(issue_user_tokens(
        shared, &realm, user, &sid, started, &scope,
    ))
}

fn refresh_grant(shared: &Shared, form: &HashMap<String, String>) -> Result<Value, Refusal> {
    let Some(refresh_token) = form.get("refresh_token") else {
        return Err(Refusal::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "No refresh token",
        ));
    };
    let claims = verify_refresh_token(shared, refresh_token, true)?;
    let sid = claims["sid"].as_str().unwrap_or_default();
    let realm = shared.realm();
    let Some(session) = realm.sessions.get(sid) else {
        return Err(invalid_grant("Session not active"));
    };
    let Some(user) = realm.users.get(&session.username) else {
        return Err(invalid_grant("Invalid refresh token"));
    };
    if !user.enabled {
        return Err(invalid_grant("User disabled"));
    }
    // Keycloak's default (revoke refresh token off): a new refresh token is issued and the old
    // one stays usable until it expires or the session ends.
    Ok(issue_user_tokens(
        shared,
        &realm,
        user,
        sid,
        session.started,
        &session.scope,
    ))
}

fn client_credentials_grant(
    shared: &Shared,
    form: &HashMap<String, String>,
) -> Result<Value, Refusal> {
    let realm = shared.realm();
    let scope = granted_scope(form.get("scope").map(String::as_str));
    // Keycloak 26 issues no refresh token and no id_token for client credentials by default.
    let scope = scope.trim_start_matches("openid ").to_string();
    let iat = now();
    let lifespan = realm.access_token_lifespan.as_secs();
    let claims = json!({
        "exp": iat + lifespan,
        "iat": iat,
        "jti": uuid(),
        "iss": shared.issuer,
        "aud": ["realm-management", "account"],
        "sub": realm.service_account_id,
        "typ": "Bearer",
        "azp": CLIENT_ID,
        "acr": "1",
        "realm_access": { "roles": DEFAULT_REALM_ROLES },
        "resource_access": {
            "realm-management": {
                "roles": ["manage-users", "view-users", "query-users", "query-groups", "view-clients", "query-clients"]
            },
            "account": { "roles": ACCOUNT_CLIENT_ROLES },
        },
        "scope": scope,
        "clientHost": "127.0.0.1",
        "email_verified": false,
        "preferred_username": SERVICE_ACCOUNT_USERNAME,
        "clientAddress": "127.0.0.1",
        "client_id": CLIENT_ID,
    });
    let access_token = sign_rs256(shared, &realm, &claims);
    Ok(json!({
        "access_token": access_token,
        "expires_in": lifespan,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": scope,
    }))
}

/// The `scope` Keycloak reports: `openid` only if requested, plus the default `profile email`.
fn granted_scope(requested: Option<&str>) -> String {
    let openid = requested.is_some_and(|s| s.split_whitespace().any(|s| s == "openid"));
    if openid {
        "openid profile email".to_string()
    } else {
        "profile email".to_string()
    }
}

fn issue_user_tokens(
    shared: &Shared,
    realm: &RealmState,
    user: &User,
    sid: &str,
    auth_time: u64,
    scope: &str,
) -> Value {
    let iat = now();
    let lifespan = realm.access_token_lifespan.as_secs();
    let mut realm_roles = user.realm_roles.clone();
    for role in DEFAULT_REALM_ROLES {
        if !realm_roles.iter().any(|r| r == role) {
            realm_roles.push(role.to_string());
        }
    }
    let mut resource_access = serde_json::Map::new();
    if !user.client_roles.is_empty() {
        resource_access.insert(CLIENT_ID.to_string(), json!({ "roles": user.client_roles }));
    }
    resource_access.insert(
        "account".to_string(),
        json!({ "roles": ACCOUNT_CLIENT_ROLES }),
    );
    let access_claims = json!({
        "exp": iat + lifespan,
        "iat": iat,
        "auth_time": auth_time,
        "jti": uuid(),
        "iss": shared.issuer,
        "aud": if realm.audience_mapper { json!([CLIENT_ID, "account"]) } else { json!("account") },
        "sub": user.id,
        "typ": "Bearer",
        "azp": CLIENT_ID,
        "sid": sid,
        "acr": "1",
        "realm_access": { "roles": realm_roles },
        "resource_access": resource_access,
        "scope": scope,
        "email_verified": false,
        "preferred_username": user.username,
        "groups": user.groups,
    });
    let access_token = sign_rs256(shared, realm, &access_claims);
    let refresh_claims = json!({
        "exp": iat + REFRESH_TOKEN_LIFESPAN_SECS,
        "iat": iat,
        "jti": uuid(),
        "iss": shared.issuer,
        "aud": shared.issuer,
        "sub": user.id,
        "typ": "Refresh",
        "azp": CLIENT_ID,
        "sid": sid,
        "scope": format!("{scope} basic web-origins acr roles"),
    });
    let mut refresh_header = Header::new(Algorithm::HS512);
    refresh_header.kid = Some("fake-keycloak-hmac".to_string());
    let refresh_token = jsonwebtoken::encode(
        &refresh_header,
        &refresh_claims,
        &EncodingKey::from_secret(&shared.refresh_secret),
    )
    .expect("sign refresh token");
    let mut response = json!({
        "access_token": access_token,
        "expires_in": lifespan,
        "refresh_expires_in": REFRESH_TOKEN_LIFESPAN_SECS,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
    });
    if scope.split_whitespace().any(|s| s == "openid") {
        let id_claims = json!({
            "exp": iat + lifespan,
            "iat": iat,
            "auth_time": auth_time,
            "jti": uuid(),
            "iss": shared.issuer,
            "aud": CLIENT_ID,
            "sub": user.id,
            "typ": "ID",
            "azp": CLIENT_ID,
            "sid": sid,
            "at_hash": at_hash(&access_token),
            "acr": "1",
            "email_verified": false,
            "preferred_username": user.username,
            "groups": user.groups,
        });
        response["id_token"] = Value::String(sign_rs256(shared, realm, &id_claims));
    }
    response["not-before-policy"] = json!(0);
    response["session_state"] = json!(sid);
    response["scope"] = json!(scope);
    response
}

fn sign_rs256(shared: &Shared, realm: &RealmState, claims: &Value) -> String {
    let key = &shared.keys[realm.current_key];
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign RS256 token")
}

/// Verifies a refresh token's signature (and expiry when `check_expiry`), with Keycloak's
/// `invalid_grant` descriptions. The session is not looked at here.
fn verify_refresh_token(
    shared: &Shared,
    token: &str,
    check_expiry: bool,
) -> Result<Value, Refusal> {
    let mut validation = Validation::new(Algorithm::HS512);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(&shared.refresh_secret),
        &validation,
    )
    .map_err(|_| invalid_grant("Invalid refresh token"))?
    .claims;
    if claims["typ"] != "Refresh" {
        return Err(invalid_grant("Invalid refresh token"));
    }
    if check_expiry && claims["exp"].as_u64().unwrap_or(0) < now() {
        return Err(invalid_grant("Token is not active"));
    }
    if claims["azp"] != CLIENT_ID {
        return Err(invalid_grant(
            "Invalid refresh token. Token client and authorized client don't match",
        ));
    }
    Ok(claims)
}

// ---------------------------------------------------------------------------------------------
// Admin REST API
//
// Shapes follow Keycloak 26 (`UsersResource`, `UserResource`, `GroupsResource`,
// `RoleMapperResource`, `ClientsResource`, `KeycloakErrorHandler`, `ErrorResponse`) and the
// bodies a live 26.x answers. Notable behaviours kept on purpose:
// * errors come in three shapes: `{"error": ".."}` (401, 403, 404s, `No password provided`),
//   `{"errorMessage": ".."}` (409s, `User name is missing`, `Password policy not met`) and the
//   OAuth pair (`Cannot parse the JSON`, a reset-password policy violation, 500s);
// * a user created without `"enabled": true` is disabled; usernames and emails are lower-cased;
// * `PUT /users/{id}` merges; the username cannot be changed (409 if another user has it);
// * `reset-password` keeps the credential id, sets `createdDate` to now and clears any
//   `UPDATE_PASSWORD`; `"temporary": true` adds it, and the password grant then answers
//   `400 Account is not fully set up`;
// * a group path unknown to `POST /users` is a 500 and no user is created;
// * `role-mappings/realm` lists direct mappings, which include the composite
//   `default-roles-site` every user gets; `.../realm/composite` lists the effective ones.
// JSON object keys come out sorted (serde_json without `preserve_order`), not in Keycloak's order.

async fn admin(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = shared.realm().admin_fault.clone();
    if let Some((status, body)) = fault {
        return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    if let Err(refusal) = admin_authorize(&shared, &headers) {
        return refusal.into_response();
    }
    let prefix = format!("/admin/realms/{REALM}/");
    let rest = uri.path().strip_prefix(&prefix).unwrap_or_default();
    let segments: Vec<String> = rest.split('/').map(path_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = parse_form(uri.query().unwrap_or_default().as_bytes());
    let mut realm = shared.realm();
    let realm = &mut *realm;
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["users"]) => list_users(realm, &query),
        ("POST", ["users"]) => create_user(&shared, realm, &body),
        ("GET", ["users", "count"]) => {
            let count = matching_users(realm, &query).len();
            json_response(StatusCode::OK, json!(count))
        }
        ("GET", ["users", id]) => with_user(realm, id, |_, u| {
            json_response(StatusCode::OK, user_rep(u, false, UserAccess::Full))
        }),
        ("PUT", ["users", id]) => update_user(realm, id, &body),
        ("DELETE", ["users", id]) => match realm.user_key_by_id(id) {
            Some(key) => {
                realm.users.remove(&key);
                realm.sessions.retain(|_, session| session.username != key);
                StatusCode::NO_CONTENT.into_response()
            }
            None => user_not_found(),
        },
        ("PUT", ["users", id, "reset-password"]) => reset_password(realm, id, &body),
        ("GET", ["users", id, "credentials"]) => with_user(realm, id, |_, u| {
            let credentials: Vec<Value> = u.password.iter().map(credential_rep).collect();
            json_response(StatusCode::OK, json!(credentials))
        }),
        ("GET", ["users", id, "groups"]) => with_user(realm, id, |realm, u| {
            let mut paths = u.groups.clone();
            paths.sort();
            let groups: Vec<Value> = paths
                .iter()
                .filter_map(|path| {
                    let id = realm.groups.get(path)?;
                    let mut rep = json!({
                        "id": id,
                        "name": group_name(path),
                        "path": path,
                        "subGroups": [],
                    });
                    if let Some(parent) = parent_group_path(path) {
                        rep["parentId"] = json!(realm.groups.get(parent));
                    }
                    Some(rep)
                })
                .collect();
            json_response(StatusCode::OK, json!(groups))
        }),
        ("PUT", ["users", id, "groups", group_id]) => membership(realm, id, group_id, true),
        ("DELETE", ["users", id, "groups", group_id]) => membership(realm, id, group_id, false),
        ("GET", ["users", id, "role-mappings", "realm"]) => realm_role_mappings(realm, id, false),
        ("GET", ["users", id, "role-mappings", "realm", "composite"]) => {
            realm_role_mappings(realm, id, true)
        }
        ("GET", ["users", id, "role-mappings", "clients", client]) => {
            client_role_mappings(realm, id, client)
        }
        ("GET", ["groups"]) => list_groups(realm, &query),
        ("GET", ["group-by-path", path @ ..]) => group_by_path(realm, &group_path(&path.join("/"))),
        ("GET", ["clients"]) => list_clients(realm, &query),
        (_, segments) if admin_route_exists(segments) => error_message(
            StatusCode::METHOD_NOT_ALLOWED,
            "HTTP 405 Method Not Allowed",
        ),
        _ => admin_not_found(),
    }
}

fn admin_route_exists(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["users"]
            | ["users", _]
            | ["users", _, "reset-password" | "credentials" | "groups"]
            | ["users", _, "groups", _]
            | ["users", _, "role-mappings", "realm"]
            | ["users", _, "role-mappings", "realm", "composite"]
            | ["users", _, "role-mappings", "clients", _]
            | ["groups"]
            | ["group-by-path", ..]
            | ["clients"]
    )
}

fn admin_not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({
            "error": "Unable to find matching target resource method",
            "error_description": "For more on this error consult the server log."
        }),
    )
}

/// The bearer token must be an unexpired access token of this realm, signed by a published key,
/// issued to the service account (client credentials grant). A token of a user with a live
/// session is authenticated but has no `realm-management` role: 403.
fn admin_authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), AdminError> {
    let unauthorized = || AdminError::Message(StatusCode::UNAUTHORIZED, "HTTP 401 Unauthorized");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(unauthorized)?;
    let claims = verify_access_token(shared, token).ok_or_else(unauthorized)?;
    let realm = shared.realm();
    if claims["sub"].as_str() == Some(realm.service_account_id.as_str()) {
        return Ok(());
    }
    let sid = claims["sid"].as_str().unwrap_or_default();
    if realm.sessions.contains_key(sid) {
        Err(AdminError::Message(
            StatusCode::FORBIDDEN,
            "HTTP 403 Forbidden",
        ))
    } else {
        Err(unauthorized())
    }
}

fn verify_access_token(shared: &Shared, token: &str) -> Option<Value> {
    let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
    let published = shared.realm().published_keys.clone();
    let key = published
        .iter()
        .map(|&i| &shared.keys[i])
        .find(|k| k.kid == kid)?;
    let decoding = DecodingKey::from_rsa_components(&key.n, &key.e).ok()?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.set_issuer(&[&shared.issuer]);
    let claims = jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .ok()?
        .claims;
    (claims["typ"] == "Bearer").then_some(claims)
}

/// An admin API error, rendered in one of Keycloak's three shapes.
enum AdminError {
    /// `{"error": ..}`.
    Message(StatusCode, &'static str),
    /// `{"errorMessage": ..}`.
    Representation(StatusCode, &'static str),
    /// `{"error": .., "error_description": ..}`.
    OAuth(StatusCode, &'static str, &'static str),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match self {
            AdminError::Message(status, message) => error_message(status, message),
            AdminError::Representation(status, message) => error_representation(status, message),
            AdminError::OAuth(status, error, description) => {
                oauth_error(status, error, description)
            }
        }
    }
}

const SERVER_ERROR: AdminError = AdminError::OAuth(
    StatusCode::INTERNAL_SERVER_ERROR,
    "unknown_error",
    "For more on this error consult the server log.",
);

/// `{"error": message}`, Keycloak's rendering of a `WebApplicationException`.
fn error_message(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }))
}

/// `{"errorMessage": message}`, Keycloak's `ErrorResponse.error` / `ErrorResponse.exists`.
fn error_representation(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "errorMessage": message }))
}

fn user_not_found() -> Response {
    error_message(StatusCode::NOT_FOUND, "User not found")
}

/// An uncaught exception in Keycloak.
fn server_error() -> Response {
    SERVER_ERROR.into_response()
}

fn with_user(
    realm: &mut RealmState,
    id: &str,
    f: impl FnOnce(&RealmState, &User) -> Response,
) -> Response {
    match realm.users.values().find(|u| u.id == id) {
        Some(user) => f(realm, user),
        None => user_not_found(),
    }
}

#[derive(Clone, Copy)]
enum UserAccess {
    /// The one-key block of a listing.
    List,
    /// The block of a single read.
    Full,
}

fn user_rep(user: &User, brief: bool, access: UserAccess) -> Value {
    let mut rep = json!({
        "id": user.id,
        "username": user.username,
        "emailVerified": user.email_verified,
        "enabled": user.enabled,
        "createdTimestamp": user.created_ms,
    });
    for (field, value) in [
        ("email", &user.email),
        ("firstName", &user.first_name),
        ("lastName", &user.last_name),
    ] {
        if let Some(value) = value {
            rep[field] = json!(value);
        }
    }
    if !brief {
        rep["totp"] = json!(false);
        rep["disableableCredentialTypes"] = json!([]);
        rep["requiredActions"] = json!(user.required_actions);
        rep["notBefore"] = json!(0);
    }
    // The service account holds manage-users and view-users, not impersonation.
    rep["access"] = match access {
        UserAccess::List => json!({ "manage": true }),
        UserAccess::Full => json!({
            "manageGroupMembership": true,
            "resetPassword": true,
            "view": true,
            "mapRoles": true,
            "impersonate": false,
            "manage": true,
        }),
    };
    rep
}

/// The users matching `username`, `email`, `firstName`, `lastName` (case-insensitive
/// substrings, equality with `exact=true`) and `search` (prefix of any of the four; `*` is a
/// wildcard, `"quotes"` mean equality), sorted by username.
fn matching_users<'a>(realm: &'a RealmState, query: &HashMap<String, String>) -> Vec<&'a User> {
    let exact = query.get("exact").is_some_and(|e| e == "true");
    let mut users: Vec<&User> = realm
        .users
        .values()
        .filter(|u| {
            let fields = [
                ("username", Some(u.username.as_str())),
                ("email", u.email.as_deref()),
                ("firstName", u.first_name.as_deref()),
                ("lastName", u.last_name.as_deref()),
            ];
            let filters_match = fields.iter().all(|(param, value)| {
                match query.get(*param).filter(|w| !w.is_empty()) {
                    None => true,
                    Some(wanted) => {
                        let value = value.unwrap_or_default().to_lowercase();
                        let wanted = wanted.to_lowercase();
                        if exact {
                            value == wanted
                        } else {
                            value.contains(&wanted)
                        }
                    }
                }
            });
            let search_matches = match query.get("search").map(|s| s.trim()) {
                None | Some("") => true,
                Some(term) => fields
                    .iter()
                    .any(|(_, value)| value.is_some_and(|v| search_matches(v, term))),
            };
            filters_match && search_matches
        })
        .collect();
    users.sort_by(|a, b| a.username.cmp(&b.username));
    users
}

fn search_matches(value: &str, term: &str) -> bool {
    let value = value.to_lowercase();
    let term = term.to_lowercase();
    if term.len() >= 2 && term.starts_with('"') && term.ends_with('"') {
        return value == term[1..term.len() - 1];
    }
    let mut parts = term.split('*');
    let mut rest = value.as_str();
    if let Some(head) = parts.next() {
        match rest.strip_prefix(head) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    for part in parts.filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// `first` and `max` (defaulting to `default_max`); a bad or negative value is ignored.
fn page<T>(items: Vec<T>, query: &HashMap<String, String>, default_max: Option<usize>) -> Vec<T> {
    let number = |name: &str| query.get(name).and_then(|v| v.trim().parse::<usize>().ok());
    let first = number("first").unwrap_or(0);
    let max = number("max").or(default_max).unwrap_or(usize::MAX);
    items.into_iter().skip(first).take(max).collect()
}

fn list_users(realm: &RealmState, query: &HashMap<String, String>) -> Response {
    let brief = query
        .get("briefRepresentation")
        .is_some_and(|b| b == "true");
    let users = page(
        matching_users(realm, query),
        query,
        Some(DEFAULT_MAX_RESULTS),
    );
    let reps: Vec<Value> = users
        .into_iter()
        .map(|u| user_rep(u, brief, UserAccess::List))
        .collect();
    json_response(StatusCode::OK, json!(reps))
}

/// The writable part of a `UserRepresentation`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserInput {
    username: Option<String>,
    enabled: Option<bool>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email_verified: Option<bool>,
    required_actions: Option<Vec<String>>,
    credentials: Option<Vec<CredentialInput>>,
    groups: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct CredentialInput {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
    temporary: Option<bool>,
}

/// `Ok(None)` for an empty or `null` body; the 400 Keycloak answers for one that does not
/// parse (`invalid_request`) or does not bind (`unknown_error`).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, AdminError> {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() || text.trim() == "null" {
        return Ok(None);
    }
    serde_json::from_slice::<T>(body).map(Some).map_err(|e| {
        let error = if e.is_data() {
            "unknown_error"
        } else {
            "invalid_request"
        };
        AdminError::OAuth(StatusCode::BAD_REQUEST, error, "Cannot parse the JSON")
    })
}

/// The realm password policy (`length(8) and notUsername`): Keycloak's message key and English
/// message for the first rule the password breaks.
fn password_policy_error(username: &str, password: &str) -> Option<(&'static str, &'static str)> {
    // Java's String.length(): UTF-16 code units.
    if password.encode_utf16().count() < PASSWORD_MIN_LENGTH {
        return Some((
            "invalidPasswordMinLengthMessage",
            "Invalid password: minimum length 8.",
        ));
    }
    if password == username {
        return Some((
            "invalidPasswordNotUsernameMessage",
            "Invalid password: must not be equal to the username.",
        ));
    }
    None
}

/// Checks a `credentials` array as `RepresentationToModel.createCredentials` would, and returns
/// the password to set and whether it is temporary.
fn credentials_password(
    username: &str,
    credentials: Option<&[CredentialInput]>,
) -> Result<Option<(String, bool)>, AdminError> {
    let mut password = None;
    for credential in credentials.unwrap_or_default() {
        if credential.kind.as_deref().is_some_and(|k| k != "password") {
            // Other credential types (otp, ...) need hashed data the fake does not model.
            return Err(SERVER_ERROR);
        }
        let value = match &credential.value {
            Some(v) if !v.trim().is_empty() => v,
            // A password credential without a value must carry hashed data: Keycloak fails.
            _ => return Err(SERVER_ERROR),
        };
        if password_policy_error(username, value).is_some() {
            return Err(AdminError::Representation(
                StatusCode::BAD_REQUEST,
                "Password policy not met",
            ));
        }
        password = Some((value.clone(), credential.temporary == Some(true)));
    }
    Ok(password)
}

fn set_required_action(user: &mut User, action: &str, on: bool) {
    user.required_actions.retain(|a| a != action);
    if on {
        user.required_actions.push(action.to_string());
    }
}

/// Keycloak stores an empty name or email as absent, and emails lower-cased.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn email_taken(realm: &RealmState, email: &str, except_id: Option<&str>) -> bool {
    realm
        .users
        .values()
        .any(|u| u.email.as_deref() == Some(email) && Some(u.id.as_str()) != except_id)
}

fn create_user(shared: &Shared, realm: &mut RealmState, body: &[u8]) -> Response {
    let input = match parse_body::<UserInput>(body) {
        Ok(Some(input)) => input,
        Ok(None) => return server_error(),
        Err(refusal) => return refusal.into_response(),
    };
    let username = match non_empty(input.username) {
        Some(u) => u.trim().to_lowercase(),
        None => {
            return error_representation(StatusCode::BAD_REQUEST, "User name is missing");
        }
    };
    if realm.users.contains_key(&username) {
        return error_representation(StatusCode::CONFLICT, "User exists with same username");
    }
    let email = non_empty(input.email).map(|e| e.to_lowercase());
    if let Some(email) = &email
        && email_taken(realm, email, None)
    {
        return error_representation(StatusCode::CONFLICT, "User exists with same email");
    }
    let groups: Vec<String> = input
        .groups
        .unwrap_or_default()
        .iter()
        .map(|g| group_path(g))
        .collect();
    if groups.iter().any(|g| !realm.groups.contains_key(g)) {
        // RuntimeException("Unable to find group specified by path: ..."): 500, rolled back.
        return server_error();
    }
    let password = match credentials_password(&username, input.credentials.as_deref()) {
        Ok(password) => password,
        Err(refusal) => return refusal.into_response(),
    };
    let mut user = User::new(&username);
    user.enabled = input.enabled.unwrap_or(false);
    user.email = email;
    user.first_name = non_empty(input.first_name);
    user.last_name = non_empty(input.last_name);
    user.email_verified = input.email_verified.unwrap_or(false);
    user.required_actions = input.required_actions.unwrap_or_default();
    user.groups = groups;
    if let Some((value, temporary)) = password {
        user.set_password(&value);
        if temporary {
            set_required_action(&mut user, "UPDATE_PASSWORD", true);
        }
    }
    let location = format!("{}/admin/realms/{REALM}/users/{}", shared.base_url, user.id);
    realm.users.insert(username, user);
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn update_user(realm: &mut RealmState, id: &str, body: &[u8]) -> Response {
    let Some(key) = realm.user_key_by_id(id) else {
        return user_not_found();
    };
    let input = match parse_body::<UserInput>(body) {
        Ok(Some(input)) => input,
        Ok(None) => {
            return error_representation(StatusCode::BAD_REQUEST, "Could not update user!");
        }
        Err(refusal) => return refusal.into_response(),
    };
    // The username cannot be edited (realm default); asking for one another user has is 409.
    if let Some(wanted) = non_empty(input.username).map(|u| u.trim().to_lowercase())
        && wanted != key
        && realm.users.contains_key(&wanted)
    {
        return error_representation(StatusCode::CONFLICT, "User exists with same username");
    }
    let email = input
        .email
        .map(|e| non_empty(Some(e)).map(|e| e.to_lowercase()));
    if let Some(Some(email)) = &email
        && email_taken(realm, email, Some(id))
    {
        return error_representation(StatusCode::CONFLICT, "User exists with same email");
    }
    let password = match credentials_password(&key, input.credentials.as_deref()) {
        Ok(password) => password,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(user) = realm.users.get_mut(&key) else {
        return user_not_found();
    };
    if let Some(enabled) = input.enabled {
        user.enabled = enabled;
    }
    if let Some(email) = email {
        user.email = email;
    }
    if let Some(first_name) = input.first_name {
        user.first_name = non_empty(Some(first_name));
    }
    if let Some(last_name) = input.last_name {
        user.last_name = non_empty(Some(last_name));
    }
    if let Some(verified) = input.email_verified {
        user.email_verified = verified;
    }
    if let Some(actions) = input.required_actions {
        user.required_actions = actions;
    }
    if let Some((value, temporary)) = password {
        user.set_password(&value);
        set_required_action(user, "UPDATE_PASSWORD", temporary);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn reset_password(realm: &mut RealmState, id: &str, body: &[u8]) -> Response {
    let Some(key) = realm.user_key_by_id(id) else {
        return user_not_found();
    };
    let input = match parse_body::<CredentialInput>(body) {
        Ok(input) => input,
        Err(refusal) => return refusal.into_response(),
    };
    // Keycloak ignores `type` here: whatever it says, the password is set.
    let Some(CredentialInput {
        value: Some(value),
        temporary,
        ..
    }) = input
    else {
        return error_message(StatusCode::BAD_REQUEST, "No password provided");
    };
    if value.trim().is_empty() {
        return error_message(StatusCode::BAD_REQUEST, "Empty password not allowed");
    }
    if let Some((error, description)) = password_policy_error(&key, &value) {
        return oauth_error(StatusCode::BAD_REQUEST, error, description);
    }
    let Some(user) = realm.users.get_mut(&key) else {
        return user_not_found();
    };
    user.set_password(&value);
    set_required_action(user, "UPDATE_PASSWORD", temporary == Some(true));
    StatusCode::NO_CONTENT.into_response()
}

/// A password credential as `GET /users/{id}/credentials` lists it: no secret; the hashing
/// parameters (Keycloak 26's argon2id defaults) as a JSON string.
fn credential_rep(password: &Password) -> Value {
    json!({
        "id": password.credential_id,
        "type": "password",
        "createdDate": password.created_ms,
        "credentialData": "{\"hashIterations\":5,\"algorithm\":\"argon2\",\"additionalParameters\":\
            {\"hashLength\":[\"32\"],\"memory\":[\"7168\"],\"type\":[\"id\"],\"version\":[\"1.3\"],\
            \"parallelism\":[\"1\"]}}",
    })
}

fn membership(realm: &mut RealmState, id: &str, group_id: &str, join: bool) -> Response {
    let Some(key) = realm.user_key_by_id(id) else {
        return user_not_found();
    };
    let Some(path) = realm.group_path_by_id(group_id) else {
        return error_message(StatusCode::NOT_FOUND, "Group not found");
    };
    let Some(user) = realm.users.get_mut(&key) else {
        return user_not_found();
    };
    user.groups.retain(|g| *g != path);
    if join {
        user.groups.push(path);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn group_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

fn parent_group_path(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

fn child_group_paths<'a>(realm: &'a RealmState, path: &'a str) -> impl Iterator<Item = &'a str> {
    realm
        .groups
        .keys()
        .filter(move |p| parent_group_path(p) == Some(path))
        .map(String::as_str)
}

/// A group as `GET /groups` lists it; `keep` (a search) nests the kept descendants.
fn group_list_rep(realm: &RealmState, path: &str, keep: Option<&HashSet<&str>>) -> Value {
    let children: Vec<&str> = child_group_paths(realm, path).collect();
    let sub_groups: Vec<Value> = match keep {
        None => Vec::new(),
        Some(keep) => children
            .iter()
            .filter(|child| {
                keep.iter()
                    .any(|k| *k == **child || k.starts_with(&format!("{child}/")))
            })
            .map(|child| group_list_rep(realm, child, Some(keep)))
            .collect(),
    };
    let mut rep = json!({
        "id": realm.groups[path],
        "name": group_name(path),
        "path": path,
        "subGroupCount": children.len(),
        "subGroups": sub_groups,
        "access": {
            "view": true,
            "viewMembers": true,
            "manageMembers": true,
            "manage": true,
            "manageMembership": true,
        },
    });
    if let Some(parent) = parent_group_path(path) {
        rep["parentId"] = json!(realm.groups.get(parent));
    }
    rep
}

/// `GET /groups`: top-level groups by name. With `search` (case-insensitive substring of the
/// name, equality with `exact=true`): the matches anywhere in the tree are paged, and returned
/// under their top-level ancestors.
fn list_groups(realm: &RealmState, query: &HashMap<String, String>) -> Response {
    let exact = query.get("exact").is_some_and(|e| e == "true");
    let reps: Vec<Value> = match query.get("search").map(|s| s.trim().to_lowercase()) {
        Some(term) if !term.is_empty() => {
            let matched: Vec<&str> = realm
                .groups
                .keys()
                .map(String::as_str)
                .filter(|path| {
                    let name = group_name(path).to_lowercase();
                    if exact {
                        name == term
                    } else {
                        name.contains(&term)
                    }
                })
                .collect();
            let matched = page(matched, query, None);
            let mut roots: Vec<String> = matched
                .iter()
                .map(|path| format!("/{}", path[1..].split('/').next().unwrap_or_default()))
                .collect();
            roots.sort();
            roots.dedup();
            let keep: HashSet<&str> = matched.into_iter().collect();
            roots
                .iter()
                .map(|root| group_list_rep(realm, root, Some(&keep)))
                .collect()
        }
        _ => {
            let tops: Vec<&str> = realm
                .groups
                .keys()
                .map(String::as_str)
                .filter(|path| parent_group_path(path).is_none())
                .collect();
            page(tops, query, None)
                .into_iter()
                .map(|path| group_list_rep(realm, path, None))
                .collect()
        }
    };
    json_response(StatusCode::OK, json!(reps))
}

fn group_by_path(realm: &RealmState, path: &str) -> Response {
    let Some(id) = realm.groups.get(path) else {
        return error_message(StatusCode::NOT_FOUND, "Group path does not exist");
    };
    let mut rep = json!({
        "id": id,
        "name": group_name(path),
        "path": path,
        "subGroupCount": child_group_paths(realm, path).count(),
        "subGroups": [],
        "attributes": {},
        "realmRoles": [],
        "clientRoles": {},
    });
    if let Some(parent) = parent_group_path(path) {
        rep["parentId"] = json!(realm.groups.get(parent));
    }
    json_response(StatusCode::OK, rep)
}

fn role_rep(realm: &mut RealmState, container: Option<&str>, name: &str) -> Value {
    let (container_key, container_id) = match container {
        Some(client_id) => (
            client_id.to_string(),
            realm.client_uuid(client_id).unwrap_or_default().to_string(),
        ),
        None => ("realm".to_string(), realm.realm_id.clone()),
    };
    let mut rep = json!({
        "id": realm.role_id(&container_key, name),
        "name": name,
        "composite": container.is_none() && name == DEFAULT_REALM_ROLES[0],
        "clientRole": container.is_some(),
        "containerId": container_id,
    });
    let description = match (container, name) {
        (None, "default-roles-site") => Some("${role_default-roles}"),
        (None, "offline_access") => Some("${role_offline-access}"),
        (None, "uma_authorization") => Some("${role_uma_authorization}"),
        _ => None,
    };
    if let Some(description) = description {
        rep["description"] = json!(description);
    }
    rep
}

/// Direct realm role mappings (every user has `default-roles-site`), or with `composite` the
/// effective realm roles.
fn realm_role_mappings(realm: &mut RealmState, id: &str, composite: bool) -> Response {
    let Some(key) = realm.user_key_by_id(id) else {
        return user_not_found();
    };
    let mut names = realm.users[&key].realm_roles.clone();
    let defaults: &[&str] = if composite {
        &DEFAULT_REALM_ROLES
    } else {
        &DEFAULT_REALM_ROLES[..1]
    };
    names.extend(defaults.iter().map(|r| r.to_string()));
    names.sort();
    names.dedup();
    let reps: Vec<Value> = names
        .iter()
        .map(|name| role_rep(realm, None, name))
        .collect();
    json_response(StatusCode::OK, json!(reps))
}

/// Direct role mappings of one client (by its internal id): the user's `edgeauth` roles, none
/// for the other clients.
fn client_role_mappings(realm: &mut RealmState, id: &str, client_uuid: &str) -> Response {
    let Some(key) = realm.user_key_by_id(id) else {
        return user_not_found();
    };
    let Some(client_id) = realm
        .client_uuids
        .iter()
        .find(|(_, uuid)| uuid == client_uuid)
        .map(|(client_id, _)| *client_id)
    else {
        return error_message(StatusCode::NOT_FOUND, "Client not found");
    };
    let mut names = if client_id == CLIENT_ID {
        realm.users[&key].client_roles.clone()
    } else {
        Vec::new()
    };
    names.sort();
    names.dedup();
    let reps: Vec<Value> = names
        .iter()
        .map(|name| role_rep(realm, Some(client_id), name))
        .collect();
    json_response(StatusCode::OK, json!(reps))
}

/// `GET /clients`: all clients, or those whose `clientId` equals `clientId` (contains it,
/// case-insensitively, with `search=true`).
fn list_clients(realm: &RealmState, query: &HashMap<String, String>) -> Response {
    let search = query.get("search").is_some_and(|s| s == "true");
    let wanted = query.get("clientId").filter(|c| !c.is_empty());
    let clients: Vec<&(&str, String)> = realm
        .client_uuids
        .iter()
        .filter(|(client_id, _)| match wanted {
            None => true,
            Some(w) if search => client_id.to_lowercase().contains(&w.to_lowercase()),
            Some(w) => client_id == w,
        })
        .collect();
    let reps: Vec<Value> = page(clients, query, None)
        .into_iter()
        .map(|(client_id, uuid)| client_rep(realm, client_id, uuid))
        .collect();
    json_response(StatusCode::OK, json!(reps))
}

fn client_rep(realm: &RealmState, client_id: &str, uuid: &str) -> Value {
    let ours = client_id == CLIENT_ID;
    let public = matches!(
        client_id,
        "account" | "account-console" | "admin-cli" | "security-admin-console"
    );
    let bearer_only = matches!(client_id, "broker" | "realm-management");
    json!({
        "id": uuid,
        "clientId": client_id,
        "surrogateAuthRequired": false,
        "enabled": true,
        "alwaysDisplayInConsole": false,
        "clientAuthenticatorType": "client-secret",
        "redirectUris": [],
        "webOrigins": [],
        "notBefore": 0,
        "bearerOnly": bearer_only,
        "consentRequired": false,
        "standardFlowEnabled": !bearer_only && client_id != "admin-cli",
        "implicitFlowEnabled": false,
        "directAccessGrantsEnabled": if ours { realm.direct_access_grants } else { client_id == "admin-cli" },
        "serviceAccountsEnabled": ours,
        "publicClient": public,
        "frontchannelLogout": true,
        "protocol": "openid-connect",
        "attributes": {},
        "authenticationFlowBindingOverrides": {},
        "fullScopeAllowed": true,
        "nodeReRegistrationTimeout": -1,
        "defaultClientScopes": ["web-origins", "acr", "profile", "roles", "basic", "email"],
        "optionalClientScopes": ["address", "phone", "organization", "offline_access", "microprofile-jwt"],
        "access": { "view": true, "configure": false, "manage": false },
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({ "error": error, "error_description": description }),
    )
}

/// Why a request is refused, rendered as Keycloak renders it.
enum Refusal {
    /// `{"error": .., "error_description": ..}` with this status.
    OAuth {
        status: StatusCode,
        error: &'static str,
        description: &'static str,
    },
    /// An `Authorization` header that is not Basic, and no `client_id` form field: 401 with
    /// `WWW-Authenticate` and no body.
    BasicChallenge,
}

impl Refusal {
    fn oauth(status: StatusCode, error: &'static str, description: &'static str) -> Refusal {
        Refusal::OAuth {
            status,
            error,
            description,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::OAuth {
                status,
                error,
                description,
            } => oauth_error(status, error, description),
            Refusal::BasicChallenge => {
                let mut response = StatusCode::UNAUTHORIZED.into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"site\""),
                );
                response
            }
        }
    }
}

fn invalid_grant(description: &'static str) -> Refusal {
    Refusal::oauth(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_user_credentials() -> Refusal {
    Refusal::oauth(
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
        "Invalid user credentials",
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit in u64")
}

/// A random version-4 UUID string.
fn uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("random uuid");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// OIDC `at_hash`: base64url of the left half of SHA-256 of the access token.
fn at_hash(access_token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(access_token.as_bytes());
    base64url_encode(&digest[..16])
}

/// `application/x-www-form-urlencoded`; the first occurrence of a name wins (as `getFirst`).
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let mut form = HashMap::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        form.entry(form_decode(name)).or_insert(form_decode(value));
    }
    form
}

fn form_decode(bytes: &[u8]) -> String {
    unescape(bytes, true)
}

/// Percent-decoding of one URL path segment (`+` stays `+`).
fn path_decode(segment: &str) -> String {
    unescape(segment.as_bytes(), false)
}

fn unescape(bytes: &[u8], plus_is_space: bool) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 section 2.3.1).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((
        form_decode(&decoded[..colon]),
        form_decode(&decoded[colon + 1..]),
    ))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn base64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
