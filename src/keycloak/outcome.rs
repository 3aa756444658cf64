//! Design rule 1: every call to Keycloak ends in exactly one of `Ok`, `Err(Rejected)` or
//! `Err(Unavailable)` ([`UpstreamError`]).
//! Only Unavailable counts against the circuit breaker and only Unavailable allows the offline
//! fallback. A misconfigured client (wrong secret, direct grants off) is neither the user's
//! fault nor an outage: it is [`UnavailableKind::Misconfigured`], which allows the fallback
//! (the site keeps working) but does not trip the breaker, and raises an operator alert.

use std::fmt;

use crate::logsafe::clean;

/// How a call to Keycloak did not succeed: it answered no, or it could not be asked. Calls
/// return `Result<T, UpstreamError>`, so `?` passes both on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Keycloak answered, and the answer was no. Never a fallback, never a breaker failure.
    #[error("{0}")]
    Rejected(Rejection),
    /// Keycloak could not be asked, or its answer was not Keycloak's.
    #[error("{0}")]
    Unavailable(Unavailable),
}

impl UpstreamError {
    /// The metrics label of a call that ended in this error.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Rejected(_) => "rejected",
            UpstreamError::Unavailable(u) => u.kind.as_str(),
        }
    }
}

impl From<Rejection> for UpstreamError {
    fn from(r: Rejection) -> Self {
        UpstreamError::Rejected(r)
    }
}

impl From<Unavailable> for UpstreamError {
    fn from(u: Unavailable) -> Self {
        UpstreamError::Unavailable(u)
    }
}

/// Keycloak answered, and the answer was no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// `invalid_grant` "Invalid user credentials" (also what a brute-force-locked user gets).
    InvalidCredentials,
    /// `invalid_grant` "Account disabled".
    AccountDisabled,
    /// `invalid_grant` "Account is not fully set up": the password was right, but Keycloak
    /// wants an action first (a temporary password to change, a profile to complete).
    AccountNotSetUp,
    /// A refresh token Keycloak no longer honours (central logout, expiry, disable).
    SessionNotActive(String),
    /// Any other 4xx with an OAuth error body.
    Other {
        status: u16,
        error: String,
        description: String,
    },
}

/// Keycloak's own words are outside text: written through [`clean`] (they reach log lines).
impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::InvalidCredentials => f.write_str("invalid user credentials"),
            Rejection::AccountDisabled => f.write_str("account disabled"),
            Rejection::AccountNotSetUp => f.write_str("account is not fully set up"),
            Rejection::SessionNotActive(d) => write!(f, "session not active ({})", clean(d)),
            Rejection::Other {
                status,
                error,
                description,
            } => write!(f, "{status} {}: {}", clean(error), clean(description)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableKind {
    /// Connection refused, reset, unreachable, DNS failure.
    Connect,
    /// No answer within the timeout (a black hole or an overloaded server).
    Timeout,
    Tls,
    /// A 5xx status.
    Status,
    /// An answer that is not what Keycloak sends (not JSON, wrong shape, HTML error page).
    Garbage,
    /// The client is misconfigured: `invalid_client`, `unauthorized_client`, unknown realm.
    Misconfigured,
    /// The circuit is open: no call was made.
    CircuitOpen,
}

impl UnavailableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UnavailableKind::Connect => "connect",
            UnavailableKind::Timeout => "timeout",
            UnavailableKind::Tls => "tls",
            UnavailableKind::Status => "status",
            UnavailableKind::Garbage => "garbage",
            UnavailableKind::Misconfigured => "misconfigured",
            UnavailableKind::CircuitOpen => "circuit_open",
        }
    }

    /// Does this failure say Keycloak (or the path to it) is down? Only those trip the breaker.
    pub fn is_outage(self) -> bool {
        !matches!(
            self,
            UnavailableKind::Misconfigured | UnavailableKind::CircuitOpen
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub kind: UnavailableKind,
    pub detail: String,
}

impl Unavailable {
    pub fn new(kind: UnavailableKind, detail: impl Into<String>) -> Self {
        Unavailable {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), clean(&self.detail))
    }
}

/// Maps a non-2xx OAuth error answer to Rejected or Unavailable (Keycloak's real bodies).
pub fn classify_error(status: u16, body: &str) -> ErrorClass {
    if status >= 500 {
        return Err(Unavailable::new(
            UnavailableKind::Status,
            format!("HTTP {status}"),
        ));
    }
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let Ok(e) = serde_json::from_str::<OAuthError>(body) else {
        // 404 for an unknown realm, a proxy's HTML page...: not Keycloak's OAuth answer.
        let kind = if status == 404 {
            UnavailableKind::Misconfigured
        } else {
            UnavailableKind::Garbage
        };
        return Err(Unavailable::new(
            kind,
            format!("HTTP {status} without an OAuth error body"),
        ));
    };
    let desc = e.error_description.to_ascii_lowercase();
    match e.error.as_str() {
        "invalid_client" | "unauthorized_client" | "unsupported_grant_type" | "invalid_scope" => {
            Err(Unavailable::new(
                UnavailableKind::Misconfigured,
                format!("{}: {}", e.error, e.error_description),
            ))
        }
        "invalid_grant" if desc.contains("disabled") => Ok(Rejection::AccountDisabled),
        "invalid_grant" if desc.contains("not fully set up") => Ok(Rejection::AccountNotSetUp),
        "invalid_grant" if desc.contains("invalid user credentials") => {
            Ok(Rejection::InvalidCredentials)
        }
        "invalid_grant"
            if desc.contains("not active")
                || desc.contains("invalid refresh token")
                || desc.contains("expired") =>
        {
            Ok(Rejection::SessionNotActive(e.error_description))
        }
        _ => Ok(Rejection::Other {
            status,
            error: e.error,
            description: e.error_description,
        }),
    }
}

pub type ErrorClass = Result<Rejection, Unavailable>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keycloak_bodies() {
        let c = |s, b: &str| classify_error(s, b);
        assert_eq!(
            c(
                401,
                r#"{"error":"invalid_grant","error_description":"Invalid user credentials"}"#
            ),
            Ok(Rejection::InvalidCredentials)
        );
        assert_eq!(
            c(
                400,
                r#"{"error":"invalid_grant","error_description":"Account is not fully set up"}"#
            ),
            Ok(Rejection::AccountNotSetUp)
        );
        assert_eq!(
            c(
                400,
                r#"{"error":"invalid_grant","error_description":"Account disabled"}"#
            ),
            Ok(Rejection::AccountDisabled)
        );
        assert!(matches!(
            c(
                400,
                r#"{"error":"invalid_grant","error_description":"Session not active"}"#
            ),
            Ok(Rejection::SessionNotActive(_))
        ));
        for body in [
            r#"{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}"#,
            r#"{"error":"unauthorized_client","error_description":"Client not allowed for direct access grants"}"#,
        ] {
            assert_eq!(
                c(401, body).unwrap_err().kind,
                UnavailableKind::Misconfigured
            );
        }
        assert_eq!(c(503, "").unwrap_err().kind, UnavailableKind::Status);
        assert_eq!(c(400, "<html>").unwrap_err().kind, UnavailableKind::Garbage);
        assert_eq!(
            c(404, "Not Found").unwrap_err().kind,
            UnavailableKind::Misconfigured
        );
        assert!(!UnavailableKind::Misconfigured.is_outage());
        assert!(UnavailableKind::Timeout.is_outage());
    }
}
