//! Forward-auth, `GET/HEAD /api/v1/verify`: the question nginx (`auth_request`), Caddy
//! (`forward_auth`) and Traefik (`ForwardAuth`) ask before each request to a protected app.
//!
//! 1. Which request is asked about ([`Target`]): `X-Original-URL` + `X-Original-Method`
//!    (nginx), or `X-Forwarded-Method/-Proto/-Host/-Uri` (Caddy, Traefik), believed only from a
//!    peer in `server.trusted_proxies`. From any other peer they are ignored and nothing can be
//!    asked: 403 `untrusted_proxy` when it sent them, 400 when nobody did. Both dialects at
//!    once is 400 (one of them came from the client through a proxy that passed it on).
//!    Nothing a client writes into those headers can grant anything (design rule 10).
//! 2. Which access rule decides (`app.access`, [`crate::access`]), with the client address that
//!    [`super::extract::origin`] resolves (network rules).
//! 3. Who asks, when the rule allows someone (not for a bypass or deny rule):
//!    [`crate::auth::Auth::identify_with`] (with the rule's `introspect`) on the session
//!    cookie, a bearer (`eas_` session id or Keycloak access token), or Basic credentials when
//!    `forward_auth.basic` is on.
//! 4. The answer: 200 with the identity headers ([`Prepared`]); 403 when a rule denies; when a
//!    sign-in is needed, 401 with `WWW-Authenticate`, plus for a browser the login URL: in
//!    `Location` on the 401 for nginx (which cannot follow a redirect from `auth_request`; its
//!    config turns it into a 302), as a 302 (303 after a non-GET) for Caddy and Traefik.
//!
//! It only reads (design rule 8): a session check is one read transaction; Basic credentials
//! are verified like a login (which writes) only when the short cache does not know them.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64ct::Encoding;

use super::api::Note;
use super::error::ApiError;
use super::extract::{COOKIE_NAME, origin};
use super::redirect::{login_url, public_base};
use crate::access;
use crate::app::App;
use crate::auth::principal::{Credential, Identify, Principal, Subject};
use crate::auth::{AuthError, Client};
use crate::config::Config;
use crate::crypto::Secret;
use crate::logsafe::clean;

/// Everything about the answers that the config fixes, built once with the router.
#[derive(Debug)]
pub struct Prepared {
    /// One name per [`Field`], `None` when left out.
    names: [Option<HeaderName>; FIELDS],
    /// Where the login page is (see [`public_base`]).
    base: String,
    basic: bool,
    /// `WWW-Authenticate` for browsers, and for other clients (Basic first when it is on, so
    /// a device that reads only the first challenge answers with Basic).
    challenge_browser: HeaderValue,
    challenge_api: HeaderValue,
}

const FIELDS: usize = 10;

impl Prepared {
    pub fn new(config: &Config) -> Self {
        let h = config.forward_auth.headers.all();
        let names = std::array::from_fn(|i| {
            let name = h[i].1;
            // Names were checked at load (config::forward_auth); an odd one is left out.
            (!name.is_empty())
                .then(|| HeaderName::from_bytes(name.as_bytes()).ok())
                .flatten()
        });
        let bearer = HeaderValue::from_static("Bearer realm=\"edgeauth\"");
        let basic = config.forward_auth.basic;
        Prepared {
            names,
            base: public_base(config),
            basic,
            challenge_api: if basic {
                HeaderValue::from_static(
                    "Basic realm=\"edgeauth\", charset=\"UTF-8\", Bearer realm=\"edgeauth\"",
                )
            } else {
                bearer.clone()
            },
            challenge_browser: bearer,
        }
    }
}

/// Which proxy asks: it decides how "sign in first" is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `X-Original-URL`: nginx `auth_request`, which passes on only 2xx, 401 and 403.
    Nginx,
    /// `X-Forwarded-Uri`/`-Host`: Caddy and Traefik, which pass any answer on to the client.
    Forwarded,
}

/// The request the proxy asks about.
#[derive(Debug)]
struct Target<'a> {
    dialect: Dialect,
    scheme: &'a str,
    /// As sent, with its port: for the return URL.
    authority: &'a str,
    /// Lower-case, without the port: for the rules.
    host: Cow<'a, str>,
    /// From the first `/`, with the query: for the return URL.
    uri: &'a str,
    method: &'a str,
}

impl Target<'_> {
    /// The path without the query (the rules match on it).
    fn path(&self) -> &str {
        self.uri.split(['?', '#']).next().unwrap_or("/")
    }

    /// The URL to come back to after sign-in.
    fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.uri)
    }
}

/// Headers that describe the forwarded request (never believed from an untrusted peer).
const DESCRIPTION: [&str; 6] = [
    "x-original-url",
    "x-original-method",
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
];

fn text<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut all = h.get_all(name).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "{name} is sent more than once"
        )));
    }
    // Visible ASCII only: no control character, no space, nothing a header could be split on.
    match v.to_str() {
        Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(s)),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be printable ASCII without spaces"
        ))),
    }
}

fn required<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    text(h, name)?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} is missing; see the proxy snippets in dist/"
        ))
    })
}

fn method<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    let m = required(h, name)?;
    if m.len() > 32 || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        return Err(ApiError::bad_request(format!(
            "{name} is not an HTTP method"
        )));
    }
    Ok(m)
}

/// `host[:port]` → the lower-case host for the rules; refuses anything else (userinfo,
/// a path, spaces, a bad port).
fn host_of<'a>(authority: &'a str, header: &str) -> Result<Cow<'a, str>, ApiError> {
    let bad = || ApiError::bad_request(format!("{header} does not hold a valid host[:port]"));
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (&authority[..ip.len() + 2], after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if !after_port_ok(port)
        || host.is_empty()
        || host.len() > 255
        || !(host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
    {
        return Err(bad());
    }
    Ok(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

fn after_port_ok(port: Option<&str>) -> bool {
    port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
}

fn scheme_ok(s: &str) -> bool {
    s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")
}

impl<'a> Target<'a> {
    /// Reads the request the proxy asks about; `proxied` says whether the peer is trusted.
    fn read(h: &'a HeaderMap, proxied: bool) -> Result<Self, ApiError> {
        if !proxied {
            return Err(if DESCRIPTION.iter().any(|n| h.contains_key(*n)) {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "untrusted_proxy",
                    "this peer is not in server.trusted_proxies, so the request it describes (X-Original-*, X-Forwarded-*) is not believed; name the proxy there",
                )
            } else {
                no_description()
            });
        }
        let nginx = h.contains_key("x-original-url") || h.contains_key("x-original-method");
        let forwarded = h.contains_key("x-forwarded-uri") || h.contains_key("x-forwarded-method");
        if nginx && forwarded {
            // One of the two came from the client through a proxy that passes it on: which
            // one cannot be told, so neither is believed.
            return Err(ApiError::bad_request(
                "both X-Original-* (nginx) and X-Forwarded-Uri/-Method (Caddy, Traefik) were sent;                  the proxy must drop the ones it does not set (see dist/)",
            ));
        }
        if nginx {
            let url = required(h, "x-original-url")?;
            let bad = || ApiError::bad_request("X-Original-URL is not an absolute http(s) URL");
            let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
            if !scheme_ok(scheme) {
                return Err(bad());
            }
            let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, uri) = rest.split_at(split);
            if !(uri.is_empty() || uri.starts_with('/')) {
                return Err(bad());
            }
            return Ok(Target {
                dialect: Dialect::Nginx,
                scheme,
                authority,
                host: host_of(authority, "X-Original-URL")?,
                uri: if uri.is_empty() { "/" } else { uri },
                method: method(h, "x-original-method")?,
            });
        }
        if forwarded {
            let scheme = required(h, "x-forwarded-proto")?;
            if !scheme_ok(scheme) {
                return Err(ApiError::bad_request(
                    "X-Forwarded-Proto is not http or https",
                ));
            }
            let authority = required(h, "x-forwarded-host")?;
            let uri = required(h, "x-forwarded-uri")?;
            if !uri.starts_with('/') {
                return Err(ApiError::bad_request(
                    "X-Forwarded-Uri does not start with /",
                ));
            }
            return Ok(Target {
                dialect: Dialect::Forwarded,
                scheme,
                authority,
                host: host_of(authority, "X-Forwarded-Host")?,
                uri,
                method: method(h, "x-forwarded-method")?,
            });
        }
        Err(no_description())
    }
}

fn no_description() -> ApiError {
    ApiError::bad_request(
        "forward-auth needs the request it is asked about: X-Original-URL and X-Original-Method \
         (nginx), or X-Forwarded-Method, -Proto, -Host and -Uri (Caddy, Traefik), from a proxy in \
         server.trusted_proxies",
    )
}

/// A browser that can follow a redirect to the login page (not a script's XHR).
fn is_browser(h: &HeaderMap) -> bool {
    let accepts_html = h.get_all(header::ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(9)
            .any(|w| w.eq_ignore_ascii_case(b"text/html"))
    });
    let xhr = h
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
    accepts_html && !xhr
}

/// What the request presents: `Authorization: Bearer`, `Authorization: Basic` (only when
/// `basic` is on; otherwise it belongs to the app and is ignored), else the session cookie.
fn presented(h: &HeaderMap, basic: bool) -> Option<Credential> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Credential::from_token(Some(rest.trim()));
        }
        if basic && scheme.eq_ignore_ascii_case("basic") {
            return Some(basic_credential(rest.trim()));
        }
    }
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == COOKIE_NAME
            {
                return Credential::from_token(Some(value.trim_matches('"')));
            }
        }
    }
    None
}

/// `base64(username:password)` (RFC 7617, UTF-8); anything else is [`Credential::Malformed`].
fn basic_credential(b64: &str) -> Credential {
    let decoded = base64ct::Base64::decode_vec(b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    match decoded.as_deref().and_then(|s| s.split_once(':')) {
        Some((user, password)) if !user.is_empty() => Credential::Basic {
            username: user.to_owned(),
            password: Secret::new(password),
        },
        _ => Credential::Malformed,
    }
}

/// Adds `text` as header `name`, without control characters (so no CR/LF can end the header)
/// and trimmed; non-ASCII is sent as UTF-8. Nothing is sent for an empty value.
fn put(out: &mut HeaderMap, name: &Option<HeaderName>, text: &str, buf: &mut String) {
    let Some(name) = name else { return };
    buf.clear();
    buf.extend(text.chars().filter(|c| !c.is_control()));
    let v = buf.trim();
    if v.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(v) {
        out.insert(name.clone(), v);
    }
}

/// A list, comma-separated; a comma inside an item is sent as `%2C`.
fn put_list(out: &mut HeaderMap, name: &Option<HeaderName>, items: &[String], buf: &mut String) {
    if name.is_none() || items.is_empty() {
        return;
    }
    let mut joined = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            joined.push(',');
        }
        for c in item.chars() {
            if c == ',' {
                joined.push_str("%2C");
            } else {
                joined.push(c);
            }
        }
    }
    put(out, name, &joined, buf);
}

/// The identity headers for `s` (see `[forward_auth.headers]`).
fn identity(p: &Prepared, s: &Subject<'_>, keycloak_status: &str, out: &mut HeaderMap) {
    let n = &p.names;
    let mut buf = String::new();
    put(out, &n[0], s.username, &mut buf);
    put(out, &n[1], s.name.unwrap_or(""), &mut buf);
    put(out, &n[2], s.email.unwrap_or(""), &mut buf);
    put_list(out, &n[3], s.groups, &mut buf);
    put_list(out, &n[4], s.roles, &mut buf);
    put_list(out, &n[5], s.client_roles, &mut buf);
    put(out, &n[6], s.tenant, &mut buf);
    put(out, &n[7], s.auth_mode.as_str(), &mut buf);
    put(out, &n[8], keycloak_status, &mut buf);
    put(out, &n[9], s.via.as_str(), &mut buf);
}

fn with_note(mut res: Response, note: String) -> Response {
    res.extensions_mut().insert(Note(note));
    res
}

/// "Sign in first", as each dialect wants it.
fn sign_in(p: &Prepared, t: &Target<'_>, browser: bool, why: &str) -> Response {
    let login = browser.then(|| login_url(&p.base, Some(&t.url())));
    let location = login.as_deref().and_then(|l| HeaderValue::from_str(l).ok());
    let mut res = match (t.dialect, location) {
        (Dialect::Forwarded, Some(loc)) => {
            let status = if matches!(t.method, "GET" | "HEAD") {
                StatusCode::FOUND
            } else {
                StatusCode::SEE_OTHER
            };
            let mut res = status.into_response();
            res.headers_mut().insert(header::LOCATION, loc);
            return res;
        }
        (Dialect::Nginx, loc) => {
            let mut res = unauthorized(why);
            if let Some(loc) = loc {
                res.headers_mut().insert(header::LOCATION, loc);
            }
            res
        }
        (Dialect::Forwarded, None) => unauthorized(why),
    };
    let challenge = if browser {
        &p.challenge_browser
    } else {
        &p.challenge_api
    };
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge.clone());
    res
}

fn unauthorized(why: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "sign_in_required", why).into_response()
}

/// A Basic credential (or the store) failed. nginx passes on only 401 and 403 (any other
/// status becomes its own 500), so a ban is a 401 there, with `Retry-After` either way.
fn refused(p: &Prepared, dialect: Dialect, e: AuthError) -> Response {
    let mut err = ApiError::from(e);
    if dialect == Dialect::Nginx && err.status == StatusCode::TOO_MANY_REQUESTS {
        err.status = StatusCode::UNAUTHORIZED;
    }
    let code = err.code;
    let mut res = err.into_response();
    if res.status() == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, p.challenge_api.clone());
    }
    with_note(res, format!("verify outcome={code}"))
}

/// `GET/HEAD /api/v1/verify` (see the module doc).
pub async fn verify(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Arc<Prepared>>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let from = match origin(&parts, &app.config.server) {
        Ok(o) => o,
        Err(e) => return e.into_api_error().into_response(),
    };
    let h = &parts.headers;
    let t = match Target::read(h, from.proxied) {
        Ok(t) => t,
        Err(e) => {
            let note = format!("verify outcome={}", e.code);
            return with_note(e.into_response(), note);
        }
    };
    decide(&app, &p, &t, h, from.ip).await
}

async fn decide(
    app: &Arc<App>,
    p: &Prepared,
    t: &Target<'_>,
    h: &HeaderMap,
    ip: Option<IpAddr>,
) -> Response {
    let request = access::Request {
        host: &t.host,
        path: t.path(),
        method: t.method,
        ip,
    };
    let matched = app.access.find(&request);
    // Who asks matters only to a rule that allows someone; a bypass or deny rule answers
    // without it (and a Basic credential is then not verified for nothing).
    let principal = if matched.policy() != access::Policy::Allow {
        Principal::Anonymous
    } else {
        let credential = presented(h, p.basic);
        let options = Identify {
            introspect: matched.introspect(),
            client: Client { ip },
        };
        match app.auth.identify_with(credential.as_ref(), options).await {
            Ok(principal) => principal,
            Err(e) => return refused(p, t.dialect, e),
        }
    };
    let subject = principal.subject();
    let decision = matched.decide(subject.as_ref());
    match (decision.verdict, subject) {
        (access::Verdict::Allow, Some(s)) => {
            let mut res = StatusCode::OK.into_response();
            identity(p, &s, app.upstream.status().as_str(), res.headers_mut());
            res
        }
        (access::Verdict::Bypass | access::Verdict::Allow, _) => StatusCode::OK.into_response(),
        (access::Verdict::Deny, s) => {
            let res = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an access rule does not let you reach this URL",
            )
            .into_response();
            let note = format!(
                "verify outcome=forbidden rule={} user={} host={} path={}",
                rule_name(decision.rule),
                s.map_or("-", |s| s.username),
                clean(&t.host),
                clean(t.path())
            );
            with_note(res, note)
        }
        (access::Verdict::SignIn, _) => {
            let why = match &principal {
                Principal::Invalid(r) => match r.as_str() {
                    "session_expired" => "the session has expired; sign in again",
                    "revoked" => "the session was ended; sign in again",
                    _ => "the session is not valid; sign in",
                },
                _ => "sign in first",
            };
            let res = sign_in(p, t, is_browser(h), why);
            let note = format!(
                "verify outcome=sign_in rule={} host={} path={}",
                rule_name(decision.rule),
                clean(&t.host),
                clean(t.path())
            );
            with_note(res, note)
        }
    }
}

fn rule_name(rule: Option<usize>) -> String {
    rule.map_or_else(|| "default".to_owned(), |i| i.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::Via;
    use crate::domain::AuthMode;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        h
    }

    #[test]
    fn identity_headers_never_carry_control_characters() {
        let p = Prepared::new(&Config::default());
        let (roles, groups) = (
            vec!["staff".to_owned(), "a,b".to_owned()],
            vec!["/front\r\ndesk".to_owned()],
        );
        let s = Subject {
            tenant: "default",
            username: "alice",
            name: Some("Zoë\r\nSet-Cookie: x=1 Ørsted\t"),
            email: None,
            roles: &roles,
            client_roles: &[],
            groups: &groups,
            auth_mode: AuthMode::Cached,
            via: Via::Session,
        };
        let mut out = HeaderMap::new();
        identity(&p, &s, "offline", &mut out);
        let get = |n: &str| out.get(n).map(|v| v.as_bytes().to_vec());
        assert_eq!(get("remote-user").unwrap(), b"alice");
        assert_eq!(
            String::from_utf8(get("remote-name").unwrap()).unwrap(),
            "ZoëSet-Cookie: x=1 Ørsted"
        );
        assert_eq!(get("remote-email"), None, "no email, no header");
        assert_eq!(get("remote-roles").unwrap(), b"staff,a%2Cb");
        assert_eq!(get("remote-groups").unwrap(), b"/frontdesk");
        assert_eq!(get("remote-client-roles"), None);
        assert_eq!(get("remote-auth-mode").unwrap(), b"cached");
        assert_eq!(get("remote-keycloak-status").unwrap(), b"offline");
        assert_eq!(get("remote-tenant").unwrap(), b"default");
        assert_eq!(get("remote-via").unwrap(), b"session");
        assert!(out.get("set-cookie").is_none());
        for v in out.values() {
            assert!(!v.as_bytes().iter().any(|b| *b < 0x20 || *b == 0x7f));
        }
    }

    #[test]
    fn header_names_follow_the_config() {
        let mut c = Config::default();
        c.forward_auth.headers.user = "X-Auth-User".into();
        c.forward_auth.headers.via = String::new();
        let p = Prepared::new(&c);
        let s = Subject {
            tenant: "default",
            username: "bob",
            name: None,
            email: Some("bob@site.lan"),
            roles: &[],
            client_roles: &[],
            groups: &[],
            auth_mode: AuthMode::Local,
            via: Via::Basic,
        };
        let mut out = HeaderMap::new();
        identity(&p, &s, "disabled", &mut out);
        assert_eq!(out.get("x-auth-user").unwrap(), "bob");
        assert!(out.get("remote-user").is_none() && out.get("remote-via").is_none());
        assert_eq!(out.get("remote-email").unwrap(), "bob@site.lan");
    }

    #[test]
    fn targets_of_both_dialects() {
        let h = headers(&[
            ("x-original-url", "https://POS.site.lan:8443/till/open?x=1"),
            ("x-original-method", "POST"),
        ]);
        let t = Target::read(&h, true).unwrap();
        assert_eq!(t.dialect, Dialect::Nginx);
        assert_eq!(
            (&*t.host, t.path(), t.method),
            ("pos.site.lan", "/till/open", "POST")
        );
        assert_eq!(t.url(), "https://POS.site.lan:8443/till/open?x=1");
        let h = headers(&[
            ("x-original-url", "http://wiki"),
            ("x-original-method", "GET"),
        ]);
        assert_eq!(Target::read(&h, true).unwrap().path(), "/");

        let h = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "[::1]:444"),
            ("x-forwarded-uri", "/a/b?c"),
        ]);
        let t = Target::read(&h, true).unwrap();
        assert_eq!(t.dialect, Dialect::Forwarded);
        assert_eq!((&*t.host, t.path()), ("[::1]", "/a/b"));
        assert_eq!(t.url(), "https://[::1]:444/a/b?c");
    }

    #[test]
    fn bad_or_untrusted_targets_are_refused() {
        let nginx = [
            ("x-original-url", "https://pos.site.lan/"),
            ("x-original-method", "GET"),
        ];
        let e = Target::read(&headers(&nginx), false).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (403, "untrusted_proxy"));
        let e = Target::read(&headers(&[]), false).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = Target::read(&headers(&[]), true).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        for (url, method) in [
            ("pos.site.lan/x", "GET"),
            ("javascript://x/", "GET"),
            ("https://user@pos/", "GET"),
            ("https://pos:99999/", "GET"),
            ("https://pos site/", "GET"),
            ("https://pos/", "G ET"),
            ("https://pos/", ""),
            ("https:///x", "GET"),
            ("https://pos\\evil/", "GET"),
        ] {
            let h = headers(&[("x-original-url", url), ("x-original-method", method)]);
            assert!(Target::read(&h, true).is_err(), "{url} {method}");
        }
        let mut h = headers(&nginx);
        h.insert(
            "x-original-url",
            HeaderValue::from_bytes(b"https://pos/\xc3\xa9").unwrap(),
        );
        assert!(Target::read(&h, true).is_err(), "non-ASCII");
        let mut h = headers(&nginx);
        h.append("x-original-url", HeaderValue::from_static("https://evil/"));
        assert!(Target::read(&h, true).is_err(), "twice");
        let both = [
            ("x-original-url", "https://public.site.lan/"),
            ("x-original-method", "GET"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "pos.site.lan"),
            ("x-forwarded-uri", "/admin"),
        ];
        for drop in 0..2 {
            let mixed: Vec<_> = both
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, p)| *p)
                .collect();
            assert!(Target::read(&headers(&mixed), true).is_err(), "ambiguous");
        }
        let h = headers(&[("x-forwarded-host", "pos"), ("x-forwarded-uri", "/")]);
        assert!(Target::read(&h, true).is_err(), "no method, no proto");
        let h = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "pos, evil"),
            ("x-forwarded-uri", "/"),
        ]);
        assert!(Target::read(&h, true).is_err(), "a list of hosts");
    }

    #[test]
    fn credentials_presented() {
        let b64 = |s: &str| base64ct::Base64::encode_string(s.as_bytes());
        let h = headers(&[("authorization", &format!("Basic {}", b64("dev:pa:ss")))]);
        match presented(&h, true) {
            Some(Credential::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.expose()), ("dev", "pa:ss"));
            }
            other => panic!("{other:?}"),
        }
        // Basic off: the header is the app's business; the cookie answers.
        let h = headers(&[
            ("authorization", &format!("Basic {}", b64("dev:x"))),
            ("cookie", "a=b; edgeauth_session=nonsense"),
        ]);
        assert!(matches!(presented(&h, false), Some(Credential::Malformed)));
        let h = headers(&[("authorization", "Basic !!!")]);
        assert!(matches!(presented(&h, true), Some(Credential::Malformed)));
        let h = headers(&[("authorization", &format!("Basic {}", b64(":x")))]);
        assert!(matches!(presented(&h, true), Some(Credential::Malformed)));
        assert!(presented(&headers(&[]), true).is_none());
    }

    #[test]
    fn who_is_a_browser() {
        assert!(is_browser(&headers(&[("accept", "text/html,*/*;q=0.8")])));
        assert!(!is_browser(&headers(&[("accept", "application/json")])));
        assert!(!is_browser(&headers(&[])));
        assert!(!is_browser(&headers(&[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest")
        ])));
    }
}
