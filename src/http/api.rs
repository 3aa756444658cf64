//! Handlers of the JSON API (design §6) and the probe endpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiJson, MalformedForwardedFor, Origin, Token, origin};
use crate::app::App;
use crate::auth::Client;
use crate::auth::login::LoginRequest;
use crate::auth::password::PasswordRequest;
use crate::auth::principal::{Credential, Principal, Via};
use crate::clock::rfc3339;
use crate::domain::AuthMode;
use crate::logsafe::clean;
use crate::store::users::UserRecord;

/// A note the access log appends to its line for this request (user, outcome).
#[derive(Debug, Clone)]
pub struct Note(pub String);

/// Where the request comes from, after trusted-proxy resolution; a malformed forwarded
/// address is refused with 400 (see [`MalformedForwardedFor::into_api_error`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Origin);

impl FromRequestParts<Arc<App>> for ClientAddr {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        origin(parts, &app.config.server)
            .map(ClientAddr)
            .map_err(MalformedForwardedFor::into_api_error)
    }
}

fn user_json(u: &UserRecord) -> Value {
    json!({
        "username": u.username.as_str(),
        "tenant": u.tenant.as_str(),
        "source": u.source.as_str(),
        "roles": u.roles,
        "groups": u.groups,
    })
}

/// What the request presents to say who it is (the session cookie or an `eas_` bearer), read
/// once; [`crate::auth::Auth::identify`] says who that is.
#[derive(Debug, Clone)]
pub struct Presented(pub Option<Credential>);

impl<S: Send + Sync> FromRequestParts<S> for Presented {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Token(token) = Token::from_request_parts(parts, state).await?;
        Ok(Presented(Credential::from_token(token.as_deref())))
    }
}

fn with_note(mut res: Response, note: String) -> Response {
    res.extensions_mut().insert(Note(note));
    res
}

pub async fn login(
    State(app): State<Arc<App>>,
    ClientAddr(from): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Response {
    let who = format!(
        "user={} tenant={}",
        clean(&req.username),
        clean(req.tenant.as_deref().unwrap_or("default"))
    );
    match app.auth.login(req, Client { ip: from.ip }).await {
        Ok(ok) => {
            let body = json!({
                "success": true,
                "session_id": ok.session_id.expose(),
                "auth_mode": ok.session.auth_mode,
                "keycloak_status": app.upstream.status().as_str(),
                "expires_at": rfc3339(ok.session.expires_at),
                "user": user_json(&ok.user),
                "warning": ok.warning,
            });
            let mut res = (StatusCode::OK, Json(body)).into_response();
            super::cookie::set(
                &mut res,
                &super::cookie::session(&app.config, &ok.session_id),
            );
            with_note(
                res,
                format!("{who} outcome=ok auth_mode={}", ok.session.auth_mode),
            )
        }
        Err(e) => {
            let e = ApiError::from(e);
            let note = format!("{who} outcome={}", e.code);
            with_note(e.into_response(), note)
        }
    }
}

pub async fn session(
    State(app): State<Arc<App>>,
    Presented(credential): Presented,
) -> Result<Response, ApiError> {
    Ok(match app.auth.identify(credential.as_ref()).await? {
        Principal::Session(v) => {
            app.metrics.validation("valid");
            let body = json!({
                "valid": true,
                "mode": v.mode,
                "via": Via::Session.as_str(),
                "expires_at": rfc3339(v.ends_at),
                "user": user_json(&v.user),
                "warning": v.warning,
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        Principal::Token(t) => {
            // A Keycloak access token: Keycloak verified the user (auth_mode keycloak), until
            // the token's exp; the user is what the token says, not a stored record.
            app.metrics.validation("valid");
            let body = json!({
                "valid": true,
                "mode": AuthMode::Keycloak,
                "via": Via::KeycloakToken.as_str(),
                "expires_at": rfc3339(t.expires_at),
                "user": {
                    "username": t.username,
                    "tenant": t.tenant.as_str(),
                    "source": "keycloak",
                    "roles": t.roles,
                    "groups": t.groups,
                    "client_roles": t.client_roles,
                    "name": t.name,
                    "email": t.email,
                },
                "client": t.client,
                "warning": null,
            });
            with_note(
                (StatusCode::OK, Json(body)).into_response(),
                format!("user={} via=keycloak_token", clean(&t.username)),
            )
        }
        other => {
            let reason = match other {
                Principal::Invalid(r) => r.as_str(),
                _ => "session_not_found",
            };
            app.metrics.validation(reason);
            let mut res = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"valid": false, "reason": reason})),
            )
                .into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edgeauth\""),
            );
            with_note(res, format!("reason={reason}"))
        }
    })
}

pub async fn logout(
    State(app): State<Arc<App>>,
    ClientAddr(from): ClientAddr,
    Presented(credential): Presented,
) -> Result<Response, ApiError> {
    app.auth
        .logout(credential.as_ref(), Client { ip: from.ip })
        .await?;
    let mut res = (StatusCode::OK, Json(json!({"success": true}))).into_response();
    super::cookie::set(&mut res, &super::cookie::cleared(&app.config));
    Ok(res)
}

pub async fn password(
    State(app): State<Arc<App>>,
    ClientAddr(from): ClientAddr,
    Presented(credential): Presented,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> Response {
    let who = format!(
        "user={} tenant={}",
        clean(&req.username),
        clean(req.tenant.as_deref().unwrap_or("default"))
    );
    let current = credential.as_ref().and_then(Credential::session_digest);
    match app
        .auth
        .change_password(req, current, Client { ip: from.ip })
        .await
    {
        Ok(done) => {
            let body = json!({
                "success": true,
                "local_updated": done.local_updated,
                "keycloak_updated": done.keycloak_updated,
                "mode": done.mode,
            });
            with_note(
                (StatusCode::OK, Json(body)).into_response(),
                format!("{who} outcome=ok"),
            )
        }
        Err(e) => {
            let e = ApiError::from(e);
            let note = format!("{who} outcome={}", e.code);
            with_note(e.into_response(), note)
        }
    }
}

/// Whether a request may see operator views (`GET /api/v1/status`, `/metrics`, the /status
/// page): the one home of that rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAccess {
    /// A client on this box that no proxy forwarded ([`Origin::local`]), or a principal
    /// holding `server.operator_role`.
    Granted,
    /// Nobody is signed in: signing in as an operator would help.
    SignIn,
    /// Signed in, without the operator role.
    Refused,
}

pub async fn operator_access(
    app: &App,
    from: Origin,
    credential: Option<&Credential>,
) -> Result<OperatorAccess, ApiError> {
    if from.local {
        return Ok(OperatorAccess::Granted);
    }
    if credential.is_none() {
        return Ok(OperatorAccess::SignIn);
    }
    let principal = app.auth.identify(credential).await?;
    Ok(if principal.has_role(&app.config.server.operator_role) {
        OperatorAccess::Granted
    } else if principal.subject().is_some() {
        OperatorAccess::Refused
    } else {
        OperatorAccess::SignIn
    })
}

async fn is_operator(
    app: &App,
    from: Origin,
    credential: Option<&Credential>,
) -> Result<bool, ApiError> {
    Ok(operator_access(app, from, credential).await? == OperatorAccess::Granted)
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "operators only: call from the appliance itself (not through a proxy) or with an operator's session",
    )
}

pub async fn status(
    State(app): State<Arc<App>>,
    ClientAddr(from): ClientAddr,
    Presented(credential): Presented,
) -> Result<Response, ApiError> {
    if !is_operator(&app, from, credential.as_ref()).await? {
        return Err(forbidden());
    }
    let a = app.clone();
    let report = tokio::task::spawn_blocking(move || a.status())
        .await
        .map_err(|e| ApiError::from(crate::auth::AuthError::Internal(e.to_string())))??;
    Ok((StatusCode::OK, Json(report)).into_response())
}

pub async fn metrics(
    State(app): State<Arc<App>>,
    ClientAddr(from): ClientAddr,
    Presented(credential): Presented,
) -> Result<Response, ApiError> {
    if !app.config.server.public_metrics && !is_operator(&app, from, credential.as_ref()).await? {
        return Err(forbidden());
    }
    let mut res = app
        .metrics
        .encode(app.store.commits(), crate::logsink::dropped())
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(res)
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if let Some(f) = app.store.fault() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("the store cannot be written: {}", f.detail),
        )
        .into_response();
    }
    match app.store.read(|r| r.clock_floor()) {
        Ok(_) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(e) => {
            log::error!("not ready: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the store cannot be read",
            )
            .into_response()
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
