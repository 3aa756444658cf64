//! The HTTP client for one Keycloak realm and client: ureq with rustls (ring), the configured
//! CA, the proxy [`super::proxy`] chooses, and timeouts. Every method is blocking (run it on the blocking pool) and ends in an
//! `Result<T, UpstreamError>`; transport failures are classified here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::outcome::{Unavailable, UnavailableKind, UpstreamError, classify_error};
use crate::crypto::Secret;

/// What a client is configured with (from `[keycloak]`, or a `[tenants.NAME]` override).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub server: String,
    pub realm: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub health_url: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    pub proxy: Option<String>,
    pub request_timeout: Duration,
    pub health_timeout: Duration,
}

/// The endpoints edgeauth uses; from discovery when known, else Keycloak's fixed layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Endpoints {
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RFC 7662 token introspection (absent from discovery documents persisted before it was
    /// read: [`Endpoints::introspection`] falls back to Keycloak's layout).
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

impl Endpoints {
    pub fn conventional(server: &str, realm: &str) -> Self {
        let issuer = format!("{}/realms/{realm}", server.trim_end_matches('/'));
        Endpoints {
            token_endpoint: format!("{issuer}/protocol/openid-connect/token"),
            jwks_uri: format!("{issuer}/protocol/openid-connect/certs"),
            end_session_endpoint: Some(format!("{issuer}/protocol/openid-connect/logout")),
            revocation_endpoint: Some(format!("{issuer}/protocol/openid-connect/revoke")),
            introspection_endpoint: Some(format!(
                "{issuer}/protocol/openid-connect/token/introspect"
            )),
            issuer,
        }
    }

    /// The introspection endpoint: discovered, else Keycloak's fixed layout.
    pub fn introspection(&self) -> String {
        self.introspection_endpoint
            .clone()
            .unwrap_or_else(|| format!("{}/protocol/openid-connect/token/introspect", self.issuer))
    }
}

/// A token endpoint answer. Never logged (it holds bearer tokens).
#[derive(Clone, Deserialize, serde::Serialize)]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: u64,
    #[serde(default)]
    pub refresh_expires_in: u64,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// An admin API answer, before interpretation.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

#[derive(Clone)]
pub struct KeycloakClient {
    settings: Arc<ClientSettings>,
    agent: ureq::Agent,
    health_agent: ureq::Agent,
}

impl std::fmt::Debug for KeycloakClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakClient")
            .field("server", &self.settings.server)
            .field("realm", &self.settings.realm)
            .field("client_id", &self.settings.client_id)
            .finish()
    }
}

/// Longest body read from Keycloak (a JWKS or token answer is a few KiB).
const MAX_BODY: u64 = 1 << 20;

/// An agent for requests to `url` (the server, or the health URL), bounded by `timeout`.
/// The certificates of a PEM bundle (`keycloak.ca_file`); an error if it holds none.
pub fn ca_certs(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c.to_owned())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

fn build_agent(s: &ClientSettings, url: &str, timeout: Duration) -> Result<ureq::Agent, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(pem) = &s.ca_pem {
        let certs = ca_certs(pem).map_err(|e| format!("keycloak.ca_file {e}"))?;
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
    }
    let cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!("edgeauth/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build());
    // Always set: ureq's own default reads the environment by rules of its own.
    let proxy = match super::proxy::from_process_env(url, s.proxy.as_deref()) {
        Some(route) => Some(
            ureq::Proxy::new(&route.url)
                .map_err(|e| format!("{}: not a usable proxy URL ({e})", route.source))?,
        ),
        None => None,
    };
    Ok(cfg.proxy(proxy).build().into())
}

fn transport(e: ureq::Error) -> Unavailable {
    use ureq::Error as E;
    let kind = match &e {
        E::Timeout(_) => UnavailableKind::Timeout,
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => UnavailableKind::Tls,
        E::Io(io)
            if io.kind() == std::io::ErrorKind::TimedOut
                || io.kind() == std::io::ErrorKind::WouldBlock =>
        {
            UnavailableKind::Timeout
        }
        E::Io(_) | E::HostNotFound | E::ConnectionFailed | E::ConnectProxyFailed(_) => {
            UnavailableKind::Connect
        }
        E::Protocol(_) | E::BodyExceedsLimit(_) | E::LargeResponseHeader(..) | E::Json(_) => {
            UnavailableKind::Garbage
        }
        E::BadUri(_) | E::InvalidProxyUrl => UnavailableKind::Misconfigured,
        _ => UnavailableKind::Connect,
    };
    Unavailable::new(kind, e.to_string())
}

fn basic_auth(id: &str, secret: &str) -> String {
    // RFC 6749 §2.3.1: form-urlencode both parts before base64.
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "Basic {}",
        crate::crypto::b64_padded(format!("{}:{}", enc(id), enc(secret)).as_bytes())
    )
}

impl KeycloakClient {
    pub fn new(settings: ClientSettings) -> Result<Self, String> {
        let agent = build_agent(&settings, &settings.server, settings.request_timeout)?;
        let health_url = settings.health_url.as_deref().unwrap_or(&settings.server);
        let health_agent = build_agent(&settings, health_url, settings.health_timeout)?;
        Ok(KeycloakClient {
            settings: Arc::new(settings),
            agent,
            health_agent,
        })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The agent behind every request but the health probe (CA, proxy, request timeout), for
    /// the raw requests of `edgeauth diagnose`.
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    pub fn discovery_url(&self) -> String {
        format!(
            "{}/realms/{}/.well-known/openid-configuration",
            self.settings.server.trim_end_matches('/'),
            self.settings.realm
        )
    }

    fn read_json<T: DeserializeOwned>(
        res: ureq::http::Response<ureq::Body>,
    ) -> Result<T, UpstreamError> {
        let status = res.status().as_u16();
        let mut body = res.into_body();
        let text = match body.with_config().limit(MAX_BODY).read_to_string() {
            Ok(t) => t,
            Err(e) => return Err(UpstreamError::Unavailable(transport(e))),
        };
        if (200..300).contains(&status) {
            return match serde_json::from_str(&text) {
                Ok(v) => Ok(v),
                Err(e) => Err(UpstreamError::Unavailable(Unavailable::new(
                    UnavailableKind::Garbage,
                    format!("HTTP {status} with an unreadable body: {e}"),
                ))),
            };
        }
        Err(match classify_error(status, &text) {
            Ok(r) => r.into(),
            Err(u) => u.into(),
        })
    }

    /// GET a JSON document (discovery, JWKS) with the request timeout.
    pub fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, UpstreamError> {
        match self
            .agent
            .get(url)
            .header("accept", "application/json")
            .call()
        {
            Ok(res) => Self::read_json(res),
            Err(e) => Err(UpstreamError::Unavailable(transport(e))),
        }
    }

    fn token_call(&self, endpoint: &str, form: &[(&str, &str)]) -> Result<TokenSet, UpstreamError> {
        let auth = basic_auth(
            &self.settings.client_id,
            self.settings.client_secret.expose(),
        );
        match self
            .agent
            .post(endpoint)
            .header("authorization", auth)
            .send_form(form.iter().copied())
        {
            Ok(res) => Self::read_json(res),
            Err(e) => Err(UpstreamError::Unavailable(transport(e))),
        }
    }

    /// The resource-owner password grant (the client needs Direct Access Grants).
    pub fn password_grant(
        &self,
        ep: &Endpoints,
        username: &str,
        password: &Secret,
    ) -> Result<TokenSet, UpstreamError> {
        self.token_call(
            &ep.token_endpoint,
            &[
                ("grant_type", "password"),
                ("username", username),
                ("password", password.expose()),
                ("scope", "openid"),
            ],
        )
    }

    pub fn refresh_grant(
        &self,
        ep: &Endpoints,
        refresh_token: &str,
    ) -> Result<TokenSet, UpstreamError> {
        self.token_call(
            &ep.token_endpoint,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
    }

    /// Ends the Keycloak session behind `refresh_token` (back-channel logout).
    pub fn logout(&self, ep: &Endpoints, refresh_token: &str) -> Result<(), UpstreamError> {
        let Some(url) = ep.end_session_endpoint.as_deref() else {
            return Ok(());
        };
        let auth = basic_auth(
            &self.settings.client_id,
            self.settings.client_secret.expose(),
        );
        match self
            .agent
            .post(url)
            .header("authorization", auth)
            .send_form([("refresh_token", refresh_token)])
        {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Self::read_json::<serde_json::Value>(res).map(|_| ()),
            Err(e) => Err(UpstreamError::Unavailable(transport(e))),
        }
    }

    /// RFC 7662 introspection of an access token with the client's credentials: is it still
    /// active (not expired, its session not ended, its user not disabled)? An answer without a
    /// boolean `active` is not Keycloak's (Garbage).
    pub fn introspect(&self, ep: &Endpoints, token: &str) -> Result<bool, UpstreamError> {
        let auth = basic_auth(
            &self.settings.client_id,
            self.settings.client_secret.expose(),
        );
        let answer = match self
            .agent
            .post(&ep.introspection())
            .header("authorization", auth)
            .header("accept", "application/json")
            .send_form([("token", token), ("token_type_hint", "access_token")])
        {
            Ok(res) => Self::read_json::<serde_json::Value>(res)?,
            Err(e) => return Err(UpstreamError::Unavailable(transport(e))),
        };
        answer["active"].as_bool().ok_or_else(|| {
            Unavailable::new(
                UnavailableKind::Garbage,
                "the introspection answer has no boolean `active`",
            )
            .into()
        })
    }

    /// The service account's token (client_credentials grant), for the admin API.
    pub fn client_credentials(&self, ep: &Endpoints) -> Result<TokenSet, UpstreamError> {
        self.token_call(&ep.token_endpoint, &[("grant_type", "client_credentials")])
    }

    /// One admin API request with a bearer token. Transport failures are Unavailable; any
    /// HTTP answer is returned as it is, for the admin layer to judge.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        bearer: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<RawResponse, Unavailable> {
        let builder = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {bearer}"))
            .header("accept", "application/json");
        let result = match body {
            Some(json) => {
                let req = builder
                    .header("content-type", "application/json")
                    .body(json.to_string())
                    .map_err(|e| Unavailable::new(UnavailableKind::Misconfigured, e.to_string()))?;
                self.agent.run(req)
            }
            None => {
                let req = builder
                    .body(())
                    .map_err(|e| Unavailable::new(UnavailableKind::Misconfigured, e.to_string()))?;
                self.agent.run(req)
            }
        };
        let res = result.map_err(transport)?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res
            .into_body()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(transport)?;
        Ok(RawResponse {
            status,
            location,
            body: text,
        })
    }

    /// The health probe: `health_url` if set, else the discovery document; bounded by
    /// `health_check_timeout`. Healthy is a 2xx with a JSON body (Keycloak's health answer,
    /// or the discovery document) whose `status`, if any, is `UP`: a proxy's or captive
    /// portal's HTML page answering 200 is not Keycloak.
    pub fn probe(&self) -> Result<(), UpstreamError> {
        let url = self
            .settings
            .health_url
            .clone()
            .unwrap_or_else(|| self.discovery_url());
        match self.health_agent.get(&url).call() {
            Ok(res) if res.status().is_success() => {
                let body = res
                    .into_body()
                    .with_config()
                    .limit(MAX_BODY)
                    .read_to_string()
                    .unwrap_or_default();
                match serde_json::from_str::<serde_json::Value>(&body) {
                    Ok(v) if v.get("status").is_none_or(|s| s == "UP") => Ok(()),
                    Ok(v) => Err(UpstreamError::Unavailable(Unavailable::new(
                        UnavailableKind::Status,
                        format!("{url} reports status {}", v["status"]),
                    ))),
                    Err(_) => Err(UpstreamError::Unavailable(Unavailable::new(
                        UnavailableKind::Garbage,
                        format!("{url} answered 2xx with a body that is not Keycloak's JSON"),
                    ))),
                }
            }
            Ok(res) => Err(UpstreamError::Unavailable(Unavailable::new(
                if res.status().is_server_error() {
                    UnavailableKind::Status
                } else {
                    UnavailableKind::Misconfigured
                },
                format!("{url} answered HTTP {}", res.status().as_u16()),
            ))),
            Err(e) => Err(UpstreamError::Unavailable(transport(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_encodes_like_rfc6749() {
        assert_eq!(
            basic_auth("edgeauth", "s3cret"),
            "Basic ZWRnZWF1dGg6czNjcmV0"
        );
        // ':' in a secret is form-encoded first.
        assert_eq!(
            basic_auth("a", "b:c"),
            format!("Basic {}", crate::crypto::b64_padded(b"a:b%3Ac"))
        );
    }

    #[test]
    fn conventional_endpoints() {
        let e = Endpoints::conventional("https://sso.example.org/", "staff");
        assert_eq!(e.issuer, "https://sso.example.org/realms/staff");
        assert_eq!(
            e.token_endpoint,
            "https://sso.example.org/realms/staff/protocol/openid-connect/token"
        );
    }

    #[test]
    fn refused_port_is_unavailable_connect() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = KeycloakClient::new(ClientSettings {
            server: format!("http://127.0.0.1:{port}"),
            realm: "r".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            health_url: None,
            ca_pem: None,
            proxy: None,
            request_timeout: Duration::from_millis(500),
            health_timeout: Duration::from_millis(500),
        })
        .unwrap();
        match c.probe() {
            Err(UpstreamError::Unavailable(u)) => {
                assert_eq!(u.kind, UnavailableKind::Connect, "{u}")
            }
            other => panic!("{other:?}"),
        }
    }
}
