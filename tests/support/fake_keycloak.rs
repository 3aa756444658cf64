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
//! * `GET  /health/ready` (`{"status":"UP","checks":[]}`; real Keycloak serves it on the
//!   management port, here it is the same port)
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

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

    /// Adds (or replaces, keeping its `sub`) an enabled user. Usernames are case-insensitive.
    /// `client_roles` are roles of the `edgeauth` client; `groups` are group names or paths
    /// (`"ops"` becomes `"/ops"`).
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
        let id = realm
            .users
            .get(&key)
            .map(|u| u.id.clone())
            .unwrap_or_else(uuid);
        let user = User {
            id,
            username: key.clone(),
            password: password.to_string(),
            enabled: true,
            realm_roles: realm_roles.iter().map(|r| r.to_string()).collect(),
            client_roles: client_roles.iter().map(|r| r.to_string()).collect(),
            groups: groups
                .iter()
                .map(|g| {
                    if g.starts_with('/') {
                        g.to_string()
                    } else {
                        format!("/{g}")
                    }
                })
                .collect(),
        };
        realm.users.insert(key, user);
    }

    pub fn set_password(&self, username: &str, password: &str) {
        let mut realm = self.shared.realm();
        let user = realm
            .users
            .get_mut(&username.to_lowercase())
            .unwrap_or_else(|| panic!("fake keycloak: no user {username:?}"));
        user.password = password.to_string();
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
            .filter(|path| path.ends_with(path_suffix))
            .count()
    }

    /// `requests("/protocol/openid-connect/token")`.
    pub fn token_requests(&self) -> usize {
        self.requests("/protocol/openid-connect/token")
    }

    pub fn reset_counters(&self) {
        lock(&self.shared.requests).clear();
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
    requests: Mutex<Vec<String>>,
    keys: Vec<SigningKey>,
    enc_jwk: Value,
    refresh_secret: Vec<u8>,
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
    access_token_lifespan: Duration,
    current_key: usize,
    /// Indexes into `Shared::keys` published in the JWKS, current first.
    published_keys: Vec<usize>,
    users: HashMap<String, User>,
    /// Active user sessions by id (`sid`).
    sessions: HashMap<String, Session>,
    service_account_id: String,
}

struct User {
    id: String,
    username: String,
    password: String,
    enabled: bool,
    realm_roles: Vec<String>,
    client_roles: Vec<String>,
    groups: Vec<String>,
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
                access_token_lifespan: DEFAULT_ACCESS_TOKEN_LIFESPAN,
                current_key: 0,
                published_keys: vec![0],
                users: HashMap::new(),
                sessions: HashMap::new(),
                service_account_id: uuid(),
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
        .route("/health", get(health))
        .route("/health/ready", get(health))
        .route("/health/live", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), faults))
        .with_state(shared)
}

async fn faults(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    lock(&shared.requests).push(request.uri().path().to_string());
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
    if form.get("password") != Some(&user.password) {
        return Err(invalid_user_credentials());
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
            "realm-management": { "roles": ["view-users", "query-users", "query-groups"] },
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
        "aud": "account",
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
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
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
