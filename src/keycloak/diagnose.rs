//! `edgeauth diagnose`: what an operator runs at 3 a.m. when logins fall back to the cache.
//! One line per check, OK or FAIL with the reason: DNS, TCP, TLS chain and certificate expiry,
//! discovery, JWKS, clock skew against Keycloak's Date header (or a token's `iat`), client credentials, health.
//! When a proxy applies to Keycloak ([`super::proxy`]), DNS and TCP test the proxy (which
//! resolves Keycloak's name itself), the TLS check opens its tunnel with HTTP CONNECT, and the
//! HTTP checks use the client's own agent: the way logins go.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::client::{Endpoints, KeycloakClient};
use super::outcome::{Rejection, UpstreamError};
use super::proxy::{Route, Target, parse_url};
use super::token::Jwks;

/// Certificates that expire within this window are reported.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
/// Clock skew beyond this is a failure (token expiry checks tolerate 60 s).
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Fail,
    /// Could not be checked: an earlier failure (which already fails the run), or a way to
    /// Keycloak this check cannot take on its own (the detail says which).
    Skip,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK  ",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub result: Verdict,
    pub detail: String,
}

impl Check {
    /// False only for a failure: a skipped check does not fail the run by itself.
    pub fn ok(&self) -> bool {
        self.result != Verdict::Fail
    }
}

/// `{name, result, ok, detail}`; `ok` is derived, and kept for scripts reading `--json`.
impl serde::Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Check", 4)?;
        st.serialize_field("name", self.name)?;
        st.serialize_field("result", &self.result)?;
        st.serialize_field("ok", &self.ok())?;
        st.serialize_field("detail", &self.detail)?;
        st.end()
    }
}

fn check(name: &'static str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            result: Verdict::Ok,
            detail,
        },
        Err(detail) => Check {
            name,
            result: Verdict::Fail,
            detail,
        },
    }
}

fn skipped(name: &'static str, detail: String) -> Check {
    Check {
        name,
        result: Verdict::Skip,
        detail,
    }
}

/// The proxy on the way to Keycloak, as diagnose uses it.
struct Via {
    host: String,
    port: u16,
    protocol: ureq::ProxyProtocol,
    /// `Proxy-Authorization` for CONNECT, when the proxy URL holds credentials.
    authorization: Option<String>,
    source: String,
}

impl Via {
    fn new(route: &Route) -> Result<Self, String> {
        let p = ureq::Proxy::new(&route.url)
            .map_err(|e| format!("{}: not a usable proxy URL ({e})", route.source))?;
        let authorization = (p.username().is_some() || p.password().is_some()).then(|| {
            let pair = format!(
                "{}:{}",
                p.username().unwrap_or_default(),
                p.password().unwrap_or_default()
            );
            format!("Basic {}", crate::crypto::b64_padded(pair.as_bytes()))
        });
        Ok(Via {
            host: p
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: p.port(),
            protocol: p.protocol(),
            authorization,
            source: route.source.clone(),
        })
    }
}

/// Opens a tunnel to `t` through an HTTP proxy (HTTP CONNECT, as the client's ureq does).
fn connect_tunnel(
    sock: &mut TcpStream,
    t: &Target,
    authorization: Option<&str>,
) -> Result<(), String> {
    let authority = if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(a) = authorization {
        request.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    request.push_str("\r\n");
    sock.write_all(request.as_bytes())
        .map_err(|e| format!("proxy: {e}"))?;
    // The answer's head, byte by byte: what follows it belongs to the TLS handshake.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err("the proxy's answer to CONNECT has an oversized head".into());
        }
        match sock.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "the proxy closed the connection on CONNECT {authority}"
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("proxy, CONNECT {authority}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default().trim();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("the proxy refused CONNECT {authority}: {status}"))
    }
}

fn roots(ca_pem: Option<&[u8]>) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            for c in CertificateDer::pem_slice_iter(pem) {
                store
                    .add(c.map_err(|e| format!("ca_file: {e}"))?)
                    .map_err(|e| format!("ca_file: {e}"))?;
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

/// TLS to Keycloak at `addr`, or through the HTTP proxy at `addr` when `via` is set.
fn tls_check(
    t: &Target,
    addr: std::net::SocketAddr,
    via: Option<&Via>,
    ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Vec<Check> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let run = || -> Result<(String, String), String> {
        let roots = Arc::new(roots(ca_pem)?);
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let name = ServerName::try_from(t.host.clone()).map_err(|e| format!("server name: {e}"))?;
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name.clone())
            .map_err(|e| e.to_string())?;
        let mut sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        if let Some(v) = via {
            connect_tunnel(&mut sock, t, v.authorization.as_deref())?;
        }
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| format!("handshake failed: {e}"))?;
        }
        let certs: Vec<CertificateDer<'static>> = conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        let version = conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let chain = format!(
            "{version}, chain of {} certificates verified{}",
            certs.len(),
            if via.is_some() {
                " (through the proxy)"
            } else {
                ""
            }
        );
        // Expiry: verify the same chain as of EXPIRY_WARNING from now.
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let later = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + EXPIRY_WARNING;
        let (leaf, rest) = certs
            .split_first()
            .ok_or("the server sent no certificate")?;
        let expiry = match verifier.verify_server_cert(
            leaf,
            rest,
            &name,
            &[],
            UnixTime::since_unix_epoch(later),
        ) {
            Ok(_) => Ok(format!(
                "valid for at least {} more days",
                EXPIRY_WARNING.as_secs() / 86400
            )),
            Err(e) => Err(format!(
                "a certificate of the chain expires within {} days ({e})",
                EXPIRY_WARNING.as_secs() / 86400
            )),
        }?;
        Ok((chain, expiry))
    };
    match run() {
        Ok((chain, expiry)) => vec![check("tls", Ok(chain)), check("cert_expiry", Ok(expiry))],
        Err(e) if e.starts_with("a certificate") => {
            vec![
                check("tls", Ok("chain verified".into())),
                check("cert_expiry", Err(e)),
            ]
        }
        Err(e) => vec![check("tls", Err(e))],
    }
}

/// Keycloak's clock as read from a token it issued: `iat`, between our `before` and `after`.
#[derive(Debug, Clone, Copy)]
struct IssuedAt {
    before: u64,
    iat: u64,
    after: u64,
}

impl IssuedAt {
    /// Our clock minus Keycloak's, 0 when `iat` falls within the request.
    fn skew(self) -> (u64, bool) {
        if self.iat < self.before {
            (self.before - self.iat, true)
        } else if self.iat > self.after {
            (self.iat - self.after, false)
        } else {
            (0, true)
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Compares the local clock with Keycloak's: its Date header, or, since Keycloak 26 sends
/// none itself (only a proxy in front of it may add one), the `iat` of the client_credentials
/// token of [`credentials_check`].
fn clock_check(client: &KeycloakClient, issued: Option<IssuedAt>) -> Check {
    let agent = client.agent();
    let url = client.discovery_url();
    let r = (|| {
        let before = unix_now();
        let res = agent.get(&url).call().map_err(|e| e.to_string())?;
        let date = res.headers().get("date").and_then(|v| v.to_str().ok());
        let ((skew, ahead), source) = match (date, issued) {
            (Some(date), _) => {
                let theirs = httpdate_parse(date)
                    .ok_or_else(|| format!("unreadable Date header {date:?}"))?;
                ((before.abs_diff(theirs), before >= theirs), "Date header")
            }
            (None, Some(i)) => (i.skew(), "token iat"),
            (None, None) => return Ok(None),
        };
        let text = format!(
            "local clock {} Keycloak's by {skew} s ({source})",
            if ahead { "ahead of" } else { "behind" }
        );
        if Duration::from_secs(skew) > MAX_SKEW {
            Err(format!("{text}; fix NTP on this box"))
        } else {
            Ok(Some(text))
        }
    })();
    match r {
        Ok(Some(text)) => check("clock_skew", Ok(text)),
        Ok(None) => skipped(
            "clock_skew",
            "Keycloak sent no Date header, and without client credentials no token to read its clock from".into(),
        ),
        Err(e) => check("clock_skew", Err(e)),
    }
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix seconds.
fn httpdate_parse(s: &str) -> Option<u64> {
    httpdate::parse_http_date(s)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn credentials_check(client: &KeycloakClient, ep: &Endpoints) -> (Check, Option<IssuedAt>) {
    // The client_credentials grant proves the secret without touching any user's
    // brute-force counter. Keycloak answers a good secret without a service account with
    // "not enabled to retrieve service account"; a bad one with "Invalid client".
    let s = client.settings();
    let agent = client.agent();
    let before = unix_now();
    let mut issued = None;
    let r = agent
        .post(&ep.token_endpoint)
        .send_form([
            ("grant_type", "client_credentials"),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.expose()),
        ])
        .map_err(|e| e.to_string())
        .and_then(|res| {
            let status = res.status().as_u16();
            let body = res.into_body().read_to_string().unwrap_or_default();
            let lower = body.to_ascii_lowercase();
            issued = issued_at(&body).map(|iat| IssuedAt {
                before,
                iat,
                after: unix_now(),
            });
            if (200..300).contains(&status) || lower.contains("service account") {
                Ok(format!("client {} accepted", s.client_id))
            } else if lower.contains("invalid client") || status == 401 {
                Err(format!("client {} refused: {}", s.client_id, body.trim()))
            } else {
                Err(format!("HTTP {status}: {}", body.trim()))
            }
        });
    (check("client_credentials", r), issued)
}

/// The `iat` of the access token in a token response; only read for its time, never trusted.
fn issued_at(body: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Iat {
        iat: u64,
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let token = v.get("access_token")?.as_str()?;
    jsonwebtoken::dangerous::insecure_decode::<Iat>(token)
        .ok()
        .map(|d| d.claims.iat)
}

/// Runs every check against `client`'s Keycloak. Blocking; reads only (the discovery document
/// it fetches is used for the later checks, not kept).
pub fn run(client: &KeycloakClient) -> Vec<Check> {
    let s = client.settings();
    let mut out = Vec::new();
    let target = match parse_url(&s.server) {
        Ok(t) => t,
        Err(e) => return vec![check("config", Err(e))],
    };
    out.push(check(
        "config",
        Ok(format!(
            "{} realm {} client {}",
            s.server, s.realm, s.client_id
        )),
    ));
    // The same choice as the client's agent: through a proxy, DNS and TCP test the proxy.
    let via = match super::proxy::from_process_env(&s.server, s.proxy.as_deref())
        .map(|r| Via::new(&r))
        .transpose()
    {
        Ok(v) => v,
        Err(e) => {
            out.push(check("dns", Err(e)));
            return out;
        }
    };
    let (host, port) = match &via {
        Some(v) => (v.host.as_str(), v.port),
        None => (target.host.as_str(), target.port),
    };
    let addrs: Vec<std::net::SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            let what = match &via {
                Some(v) => format!("proxy {host} (from {})", v.source),
                None => host.to_owned(),
            };
            out.push(check("dns", Err(format!("{what}: {e}"))));
            return out;
        }
    };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    let dns = match &via {
        Some(v) => format!(
            "{host} -> {} (via proxy, from {}; Keycloak's name {} is resolved by the proxy)",
            shown.join(", "),
            v.source,
            target.host
        ),
        None => format!("{host} -> {}", shown.join(", ")),
    };
    out.push(check("dns", Ok(dns)));
    let Some(addr) = addrs.first().copied() else {
        return out;
    };
    let tcp = TcpStream::connect_timeout(&addr, s.request_timeout)
        .map(|_| match via {
            Some(_) => format!("{addr} accepts connections (the proxy)"),
            None => format!("{addr} accepts connections"),
        })
        .map_err(|e| format!("{addr}: {e}"));
    let tcp_ok = tcp.is_ok();
    out.push(check("tcp", tcp));
    if !tcp_ok {
        return out;
    }
    if target.https {
        match &via {
            Some(v) if v.protocol != ureq::ProxyProtocol::Http => out.push(skipped(
                "tls",
                format!(
                    "not checked on its own through a {} proxy; discovery below goes through it",
                    v.protocol
                ),
            )),
            _ => out.extend(tls_check(
                &target,
                addr,
                via.as_ref(),
                s.ca_pem.as_deref(),
                s.request_timeout,
            )),
        }
    }
    let (discovery, ep) = match client.get_json::<Endpoints>(&client.discovery_url()) {
        Ok(ep) => (Ok(format!("issuer {}", ep.issuer)), ep),
        Err(e) => (
            Err(e.to_string()),
            Endpoints::conventional(&s.server, &s.realm),
        ),
    };
    out.push(check("discovery", discovery));
    let jwks = match client.get_json::<serde_json::Value>(&ep.jwks_uri) {
        Ok(doc) => {
            let n = Jwks::parse(&doc).len();
            if n > 0 {
                Ok(format!("{n} RSA signing keys"))
            } else {
                Err("no RSA signing key".into())
            }
        }
        Err(e) => Err(e.to_string()),
    };
    out.push(check("jwks", jwks));
    let (credentials, issued) = credentials_check(client, &ep);
    out.push(clock_check(client, issued));
    out.push(credentials);
    let health = match client.probe() {
        Ok(()) | Err(UpstreamError::Rejected(Rejection::InvalidCredentials)) => {
            Ok("healthy".to_owned())
        }
        Err(e) => Err(e.to_string()),
    };
    out.push(check("health", health));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_from_a_tokens_iat() {
        let at = |iat| IssuedAt {
            before: 100,
            iat,
            after: 102,
        };
        assert_eq!(at(101).skew(), (0, true), "issued during the request");
        assert_eq!(at(40).skew(), (60, true), "Keycloak behind: we are ahead");
        assert_eq!(at(172).skew(), (70, false), "Keycloak ahead: we are behind");
        let token = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3OTU0MDAyMjN9.c2ln";
        assert_eq!(
            issued_at(&format!("{{\"access_token\":\"{token}\"}}")),
            Some(1_795_400_223)
        );
        assert_eq!(issued_at("{\"error\":\"invalid_client\"}"), None);
        assert_eq!(issued_at("not json"), None);
    }

    /// A one-shot proxy that answers CONNECT with `answer` and hands back the request head.
    fn tunnel_through(
        answer: &'static str,
        t: &Target,
        auth: Option<&str>,
    ) -> (Result<(), String>, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            conn.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(head).unwrap()
        });
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = connect_tunnel(&mut sock, t, auth);
        (r, proxy.join().unwrap())
    }

    #[test]
    fn tls_check_tunnels_with_connect() {
        let t = parse_url("https://keycloak.invalid:8443").unwrap();
        let (r, head) = tunnel_through(
            "HTTP/1.1 200 Connection established\r\n\r\n",
            &t,
            Some("Basic dTpw"),
        );
        assert_eq!(r, Ok(()));
        assert!(
            head.starts_with("CONNECT keycloak.invalid:8443 HTTP/1.1\r\n")
                && head.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{head}"
        );
        let v6 = parse_url("https://[fd00::1]").unwrap();
        let (r, head) = tunnel_through("HTTP/1.0 200 OK\r\nVia: x\r\n\r\n", &v6, None);
        assert_eq!(r, Ok(()));
        assert!(head.starts_with("CONNECT [fd00::1]:443 "), "{head}");
        assert!(!head.contains("Proxy-Authorization"), "{head}");
        let (r, _) = tunnel_through(
            "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
            &t,
            None,
        );
        assert_eq!(
            r,
            Err("the proxy refused CONNECT keycloak.invalid:8443: HTTP/1.1 407 Proxy Authentication Required".into())
        );
    }

    #[test]
    fn via_reads_the_proxy_url() {
        let route = |url: &str| Route {
            url: url.into(),
            source: "keycloak.proxy".into(),
        };
        let v = Via::new(&route("http://u:p%40ss@proxy.site.lan:3128")).unwrap();
        assert_eq!((v.host.as_str(), v.port), ("proxy.site.lan", 3128));
        assert_eq!(
            v.authorization,
            Some(format!("Basic {}", crate::crypto::b64_padded(b"u:p@ss")))
        );
        let v = Via::new(&route("http://[::1]:3128")).unwrap();
        assert_eq!(
            (v.host.as_str(), v.port, v.authorization),
            ("::1", 3128, None)
        );
        let v = Via::new(&route("proxy.site.lan:3128")).unwrap();
        assert_eq!(v.protocol, ureq::ProxyProtocol::Http);
        assert!(Via::new(&route("gopher://p")).is_err());
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(
            httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(httpdate_parse("garbage"), None);
    }
}
