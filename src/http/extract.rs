//! Request extractors: the client's address (X-Forwarded-For only from trusted proxies), the
//! presented session token (cookie or bearer), and JSON bodies whose every rejection is an
//! [`ApiError`].

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

/// The client address after applying `server.trusted_proxies`.
pub fn client_ip(parts: &Parts, server: &ServerConfig) -> Option<IpAddr> {
    let peer = parts.extensions.get::<Peer>()?.0.ip();
    let trusted = |ip: &IpAddr| server.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    // Walk X-Forwarded-For from the right, skipping our own proxies.
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in parts.headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else { return Some(peer) };
        for part in s.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return Some(peer),
            }
        }
    }
    Some(
        hops.into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer),
    )
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
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the body is too large",
                    )
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

    #[test]
    fn forwarded_for_only_from_trusted() {
        let p = parts("10.0.0.9:1", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            client_ip(&p, &server(&[])),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(&p, &server(&["10.0.0.0/24"])),
            Some("1.2.3.4".parse().unwrap())
        );
        // A client cannot hide behind a forged left-most entry.
        let p = parts(
            "10.0.0.9:1",
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.8")],
        );
        assert_eq!(
            client_ip(&p, &server(&["10.0.0.0/24"])),
            Some("1.2.3.4".parse().unwrap())
        );
        let p = parts("10.0.0.9:1", &[("x-forwarded-for", "garbage")]);
        assert_eq!(
            client_ip(&p, &server(&["10.0.0.0/24"])),
            Some("10.0.0.9".parse().unwrap())
        );
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
