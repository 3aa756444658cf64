//! Every failure of the HTTP API as `{"error": {"code", "message"}}`: the one place where
//! domain errors become status codes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A body over [`super::BODY_LIMIT`], declared or sent.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is too large (at most {} bytes)",
                super::BODY_LIMIT
            ),
        )
    }
}

impl From<AuthError> for ApiError {
    /// The status of each error; its code string is [`AuthError::code`]'s.
    fn from(e: AuthError) -> Self {
        let status = match &e {
            AuthError::BadRequest(_) | AuthError::WeakPassword(_) => StatusCode::BAD_REQUEST,
            AuthError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            AuthError::AccountDisabled
            | AuthError::AccountSetupRequired
            | AuthError::OfflineLoginExpired
            | AuthError::OfflineLoginNotAllowed
            | AuthError::DegradedModeForbidden(_) => StatusCode::FORBIDDEN,
            AuthError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Store(s) if s.is_storage() => {
                log::error!("request refused: {e}");
                let mut out = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.code(),
                    "the appliance cannot write to its storage right now; nothing was changed, try again shortly",
                );
                out.retry_after = Some(5);
                return out;
            }
            AuthError::Store(_) | AuthError::Internal(_) => {
                log::error!("request failed: {e}");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.code(),
                    "the appliance could not complete the request; see its log",
                );
            }
        };
        let mut out = ApiError::new(status, e.code(), e.to_string());
        out.retry_after = match e {
            AuthError::TooManyAttempts { retry_after } => Some(retry_after.max(1)),
            AuthError::Overloaded => Some(1),
            _ => None,
        };
        out
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        AuthError::Store(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut res = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    }
}
