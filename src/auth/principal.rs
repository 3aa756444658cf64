//! Who a request is: one answer for every endpoint. A request presents a [`Credential`] (a
//! session id from the session cookie or an `eas_` bearer, a Keycloak access token as a
//! bearer, or HTTP Basic at forward-auth; the HTTP layer reads the headers), and
//! [`Auth::identify`] turns it into a [`Principal`]. Appliance-issued tokens become more kinds
//! of [`Credential`] here.

use std::sync::Arc;

use super::session::{InvalidReason, SessionCheck, ValidSession};
use super::{Auth, AuthError, Client};
use crate::crypto::{Secret, SessionDigest, SessionId};
use crate::domain::AuthMode;
use crate::store::users::UserRecord;

/// A Keycloak access token as presented (a JWT). Never shown: its Debug is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

/// What a request presents to say who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A session id (`eas_...`), from the session cookie or `Authorization: Bearer`.
    Session(SessionId),
    /// Something shaped like a JWT (not `eas_`): a Keycloak access token, to be verified.
    KeycloakToken(AccessToken),
    /// `Authorization: Basic` (forward-auth only, when `forward_auth.basic` is on): verified like
    /// a login, without a session ([`super::basic`]). The username is as sent, unparsed.
    Basic { username: String, password: Secret },
    /// Something presented that is no credential this appliance issues.
    Malformed,
}

impl Credential {
    /// The credential in a presented token (the cookie's value or the bearer), if any.
    pub fn from_token(token: Option<&str>) -> Option<Credential> {
        token.map(|t| match SessionId::parse(t) {
            Some(id) => Credential::Session(id),
            None if crate::keycloak::token::is_jwt_shaped(t) => {
                Credential::KeycloakToken(AccessToken(t.to_owned()))
            }
            None => Credential::Malformed,
        })
    }

    /// The session it names, valid or not (logout ends it; a password change keeps it).
    pub fn session_digest(&self) -> Option<SessionDigest> {
        match self {
            Credential::Session(id) => Some(id.digest()),
            Credential::KeycloakToken(_) | Credential::Basic { .. } | Credential::Malformed => None,
        }
    }
}

/// Who a request is.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Nothing was presented.
    Anonymous,
    /// Something was presented and it does not stand for anyone (design §6 reasons).
    Invalid(InvalidReason),
    /// A signed-in user, through a valid session.
    Session(Box<ValidSession>),
    /// A signed-in user, through a Keycloak access token that verified.
    Token(std::sync::Arc<TokenPrincipal>),
    /// A user whose Basic credentials were verified for this request (no session).
    Basic(Box<BasicUser>),
}

/// A user who presented a verified Basic credential.
#[derive(Debug, Clone)]
pub struct BasicUser {
    pub user: UserRecord,
    /// How the credential was verified (`keycloak`, `cached` or `local`), as for a login.
    pub mode: AuthMode,
}

/// What a verified Keycloak access token says about its user, read once from its claims in
/// the same shape a login stores (design rule 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrincipal {
    pub tenant: crate::domain::Tenant,
    /// `preferred_username` (else `sub`).
    pub username: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Realm roles and the tenant client's roles.
    pub roles: Vec<String>,
    /// Every client role, as `client:role`.
    pub client_roles: Vec<String>,
    pub groups: Vec<String>,
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
    /// The client it was issued to (`azp`).
    pub client: Option<String>,
    /// Its `aud` names the tenant's client, which Keycloak requires to introspect it.
    pub introspectable: bool,
}

/// How a principal proved who it is (the `Remote-Via`-style detail for logs and headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The site session (cookie or `eas_` bearer).
    Session,
    /// A Keycloak access token as a bearer.
    KeycloakToken,
    /// HTTP Basic credentials, verified per request (cached briefly).
    Basic,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Session => "session",
            Via::KeycloakToken => "keycloak_token",
            Via::Basic => "basic",
        }
    }
}

/// What access rules and identity headers see of a signed-in principal, borrowed from it.
/// `roles` are realm roles plus the tenant client's roles (as stored from the token);
/// `client_roles` are `client:role` for every client the token named.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub tenant: &'a str,
    pub username: &'a str,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub roles: &'a [String],
    pub client_roles: &'a [String],
    pub groups: &'a [String],
    pub auth_mode: AuthMode,
    pub via: Via,
}

impl Principal {
    /// The signed-in subject, if this principal is one.
    pub fn subject(&self) -> Option<Subject<'_>> {
        match self {
            Principal::Session(v) => Some(Subject {
                tenant: v.user.tenant.as_str(),
                username: v.user.username.as_str(),
                name: v.user.name.as_deref(),
                email: v.user.email.as_deref(),
                roles: &v.user.roles,
                client_roles: &v.user.client_roles,
                groups: &v.user.groups,
                auth_mode: v.mode,
                via: Via::Session,
            }),
            Principal::Token(t) => Some(Subject {
                tenant: t.tenant.as_str(),
                username: &t.username,
                name: t.name.as_deref(),
                email: t.email.as_deref(),
                roles: &t.roles,
                client_roles: &t.client_roles,
                groups: &t.groups,
                auth_mode: AuthMode::Keycloak,
                via: Via::KeycloakToken,
            }),
            Principal::Basic(b) => Some(Subject {
                tenant: b.user.tenant.as_str(),
                username: b.user.username.as_str(),
                name: b.user.name.as_deref(),
                email: b.user.email.as_deref(),
                roles: &b.user.roles,
                client_roles: &b.user.client_roles,
                groups: &b.user.groups,
                auth_mode: b.mode,
                via: Via::Basic,
            }),
            Principal::Anonymous | Principal::Invalid(_) => None,
        }
    }

    /// Does this principal hold `role` (the operator role, later access rules)?
    pub fn has_role(&self, role: &str) -> bool {
        match self {
            Principal::Session(v) => v.user.roles.iter().any(|r| r == role),
            Principal::Token(t) => t.roles.iter().any(|r| r == role),
            Principal::Basic(b) => b.user.roles.iter().any(|r| r == role),
            Principal::Anonymous | Principal::Invalid(_) => false,
        }
    }
}

/// How to identify: what the endpoint (or the access rule that matched) asks for besides
/// the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identify {
    /// Introspect a Keycloak access token (RFC 7662) while Keycloak is reachable, whatever
    /// `bearer.introspect` says (an access rule's `introspect`).
    pub introspect: bool,
    /// Who asks (regulation and the audit of Basic credentials count against this address).
    pub client: Client,
}

impl Auth {
    /// Who presents `credential`, with the default options. Reads only (the hot path, design
    /// rule 8); a Keycloak access token may cost a JWKS refetch or an introspection call.
    pub async fn identify(
        self: &Arc<Self>,
        credential: Option<&Credential>,
    ) -> Result<Principal, AuthError> {
        self.identify_with(credential, Identify::default()).await
    }

    /// Who presents `credential`, with `options` (the verify handler passes the matched
    /// access rule's and the client's address). Basic credentials are a login without a
    /// session: a wrong one is `InvalidCredentials` (counted by regulation), a banned user or
    /// address `TooManyAttempts`; a verified one is remembered briefly, so most requests only
    /// read.
    pub async fn identify_with(
        self: &Arc<Self>,
        credential: Option<&Credential>,
        options: Identify,
    ) -> Result<Principal, AuthError> {
        Ok(match credential {
            None => Principal::Anonymous,
            Some(Credential::Malformed) => Principal::Invalid(InvalidReason::TokenInvalid),
            Some(Credential::Session(id)) => match self.validate_digest(id.digest())? {
                SessionCheck::Valid(v) => Principal::Session(v),
                SessionCheck::Invalid(r) => Principal::Invalid(r),
            },
            Some(Credential::KeycloakToken(t)) => self.identify_token(t, options).await,
            Some(Credential::Basic { username, password }) => {
                self.identify_basic(username, password, options.client)
                    .await?
            }
        })
    }

    /// Ends the session a request presents, if any. Idempotent; every call is audited.
    pub async fn logout(
        &self,
        credential: Option<&Credential>,
        client: Client,
    ) -> Result<(), AuthError> {
        match credential.and_then(Credential::session_digest) {
            Some(digest) => self.end_session(digest, client).await,
            None => Ok(()),
        }
    }
}
