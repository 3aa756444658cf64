//! Request extractors: where a request comes from (X-Forwarded-For only from trusted proxies,
//! and whether operator rights may follow from its address), the presented session token
//! (cookie or bearer), and JSON bodies whose every rejection is an [`ApiError`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::config::ServerConfig;

pub const COOKIE_NAME: &str = "edgeauth_session";

/// The TCP peer of a connection, inserted by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Headers a proxy adds when it forwards a request. A request that carries one came through a
/// proxy (or pretends to), whatever its TCP peer, so no operator right follows from its address.
pub const FORWARDING_HEADERS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Where a request comes from, as far as the appliance can tell (design rule 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client: the TCP peer or, when the peer is a trusted proxy, the right-most
    /// `X-Forwarded-For` entry that is not a trusted proxy. `None` without a peer (unit tests).
    pub ip: Option<IpAddr>,
    /// Operator rights may follow from the address: the TCP peer is loopback, is not a
    /// configured proxy, and the request carries none of [`FORWARDING_HEADERS`].
    pub local: bool,
    /// A loopback peer outside `server.trusted_proxies` sent forwarding headers: a proxy on this
    /// box that the config does not name, which makes every client look local.
    pub unnamed_local_proxy: bool,
    /// The TCP peer is in `server.trusted_proxies`: its description of the request it forwards
    /// (`X-Forwarded-*`, forward-auth's `X-Original-*`) is believed.
    pub proxied: bool,
}

/// A trusted proxy passed on an `X-Forwarded-For` entry that is not a bare IP address
/// (`garbage`, `unknown`, `1.2.3.4:80`, `[::1]:80`, empty): the client cannot be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedForwardedFor(pub String);

impl MalformedForwardedFor {
    /// Refused: neither the proxy's address nor the raw text may stand for the client (the first
    /// would put its failures on the proxy's counter and could make it local, the second would
    /// let it mint a fresh regulation counter per request).
    pub fn into_api_error(self) -> ApiError {
        ApiError::bad_request(format!(
            "X-Forwarded-For holds \"{}\", which is not an IP address, so the client cannot be told",
            crate::logsafe::clean(&self.0)
        ))
    }
}

/// The request's [`Origin`] under `server.trusted_proxies`: `X-Forwarded-For` is read right to
/// left (RFC 7239 practice) and only while each hop so far is a trusted proxy; an entry that
/// has to be read and does not parse is [`MalformedForwardedFor`].
pub fn origin(parts: &Parts, server: &ServerConfig) -> Result<Origin, MalformedForwardedFor> {
    let Some(peer) = parts
        .extensions
        .get::<Peer>()
        .map(|p| p.0.ip().to_canonical())
    else {
        return Ok(Origin {
            ip: None,
            local: false,
            unnamed_local_proxy: false,
            proxied: false,
        });
    };
    let forwarded = FORWARDING_HEADERS
        .iter()
        .any(|h| parts.headers.contains_key(*h));
    let trusted = |ip: &IpAddr| server.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Ok(Origin {
            ip: Some(peer),
            local: peer.is_loopback() && !forwarded,
            unnamed_local_proxy: peer.is_loopback() && forwarded,
            proxied: false,
        });
    }
    let mut hops: Vec<&[u8]> = Vec::new();
    for v in parts.headers.get_all("x-forwarded-for") {
        hops.extend(v.as_bytes().split(|b| *b == b','));
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let ip = std::str::from_utf8(hop)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| MalformedForwardedFor(String::from_utf8_lossy(hop).trim().to_owned()))?
            .to_canonical();
        client = ip;
        if !trusted(&ip) {
            break;
        }
    }
    Ok(Origin {
        ip: Some(client),
        local: false,
        unnamed_local_proxy: false,
        proxied: true,
    })
}

/// The session id presented by `Authorization: Bearer` or the session cookie (bearer wins).
pub fn session_token(parts: &Parts) -> Option<String> {
    if let Some(v) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = v.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (it.next(), it.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim().to_owned());
        }
    }
    for v in parts.headers.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == COOKIE_NAME
            {
                return Some(value.trim_matches('"').to_owned());
            }
        }
    }
    None
}

/// The token, as an extractor.
#[derive(Debug, Clone)]
pub struct Token(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Token(session_token(parts)))
    }
}

/// A JSON body whose rejections are JSON errors.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(match rej {
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
                }
                JsonRejection::JsonDataError(e) => ApiError::bad_request(format!(
                    "the body has the wrong shape: {}",
                    e.body_text()
                )),
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::payload_too_large()
                }
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut p, _) = b.body(()).unwrap().into_parts();
        p.extensions.insert(Peer(peer.parse().unwrap()));
        p
    }

    fn server(trusted: &[&str]) -> ServerConfig {
        ServerConfig {
            trusted_proxies: trusted.iter().map(|s| s.parse().unwrap()).collect(),
            ..ServerConfig::default()
        }
    }

    fn ip(parts: &Parts, server: &ServerConfig) -> Option<IpAddr> {
        origin(parts, server).unwrap().ip
    }

    #[test]
    fn forwarded_for_only_from_trusted() {
        let p = parts("10.0.0.9:1", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(ip(&p, &server(&[])), Some("10.0.0.9".parse().unwrap()));
        assert_eq!(
            ip(&p, &server(&["10.0.0.0/24"])),
            Some("1.2.3.4".parse().unwrap())
        );
        // A client cannot hide behind a forged left-most entry.
        let p = parts(
            "10.0.0.9:1",
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.8")],
        );
        assert_eq!(
            ip(&p, &server(&["10.0.0.0/24"])),
            Some("1.2.3.4".parse().unwrap())
        );
        // Junk left of the first untrusted hop is never read.
        let p = parts("10.0.0.9:1", &[("x-forwarded-for", "garbage, 1.2.3.4")]);
        assert_eq!(
            ip(&p, &server(&["10.0.0.0/24"])),
            Some("1.2.3.4".parse().unwrap())
        );
        // Repeated headers are one list, in order.
        let mut b = Request::builder()
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-for", "10.0.0.7");
        b = b.header("x-real-ip", "9.9.9.9");
        let (mut p, _) = b.body(()).unwrap().into_parts();
        p.extensions.insert(Peer("10.0.0.9:1".parse().unwrap()));
        assert_eq!(
            ip(&p, &server(&["10.0.0.0/24"])),
            Some("1.2.3.4".parse().unwrap())
        );
        // An IPv4 peer seen through a dual-stack socket is the IPv4 address.
        let p = parts("[::ffff:10.0.0.9]:1", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            ip(&p, &server(&["10.0.0.0/24"])),
            Some("1.2.3.4".parse().unwrap())
        );
    }

    #[test]
    fn a_malformed_forwarded_entry_is_never_the_proxy() {
        for bad in [
            "garbage",
            "1.2.3.4:80",
            "unknown",
            "[::1]:80",
            "",
            " ",
            "1.2.3.4, ",
        ] {
            let p = parts("127.0.0.1:1", &[("x-forwarded-for", bad)]);
            let got = origin(&p, &server(&["127.0.0.1/32"]));
            assert!(
                matches!(got, Err(MalformedForwardedFor(_))),
                "{bad:?}: {got:?}"
            );
        }
        let p = parts("10.0.0.9:1", &[("x-forwarded-for", "1.2.3.4, x, 10.0.0.8")]);
        assert_eq!(
            origin(&p, &server(&["10.0.0.0/8"])),
            Err(MalformedForwardedFor("x".into()))
        );
        let mut p = parts("10.0.0.9:1", &[]);
        p.headers.insert(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert!(origin(&p, &server(&["10.0.0.0/8"])).is_err());
        // Not from a trusted proxy, the header is not read at all.
        let p = parts("10.0.0.9:1", &[("x-forwarded-for", "garbage")]);
        assert_eq!(ip(&p, &server(&[])), Some("10.0.0.9".parse().unwrap()));
    }

    #[test]
    fn operator_rights_never_follow_a_forwarded_request() {
        let local = |peer: &str, headers: &[(&str, &str)], trusted: &[&str]| {
            origin(&parts(peer, headers), &server(trusted)).unwrap()
        };
        assert!(local("127.0.0.1:1", &[], &[]).local);
        assert!(local("[::1]:1", &[], &["10.0.0.0/8"]).local);
        assert!(local("[::ffff:127.0.0.1]:1", &[], &[]).local);
        assert!(!local("10.0.0.9:1", &[], &[]).local);
        // Through a proxy on loopback, named or not, with any forwarding header.
        for h in FORWARDING_HEADERS {
            let o = local("127.0.0.1:1", &[(h, "10.1.1.1")], &[]);
            assert!(!o.local && o.unnamed_local_proxy, "{h}");
        }
        let o = local(
            "127.0.0.1:1",
            &[("x-forwarded-for", "127.0.0.1")],
            &["127.0.0.1/32"],
        );
        assert!(!o.local && !o.unnamed_local_proxy);
        assert_eq!(o.ip, Some("127.0.0.1".parse().unwrap()));
        // The configured proxy itself, even without headers, speaks for its clients.
        assert!(!local("127.0.0.1:1", &[], &["127.0.0.0/8"]).local);
    }

    #[test]
    fn token_from_bearer_or_cookie() {
        let p = parts(
            "127.0.0.1:1",
            &[("cookie", "a=b; edgeauth_session=eas_x; c=d")],
        );
        assert_eq!(session_token(&p).as_deref(), Some("eas_x"));
        let p = parts(
            "127.0.0.1:1",
            &[
                ("authorization", "Bearer eas_y"),
                ("cookie", "edgeauth_session=eas_x"),
            ],
        );
        assert_eq!(session_token(&p).as_deref(), Some("eas_y"));
        let p = parts("127.0.0.1:1", &[("authorization", "Basic Zm9v")]);
        assert_eq!(session_token(&p), None);
    }
}
