//! The HTTP face of the appliance: the router with its limits and access log ([`router`]) and
//! the listener with TLS and connection timeouts ([`server`]).

pub mod api;
pub mod cookie;
pub mod error;
pub mod extract;
pub mod pages;
pub mod redirect;
pub mod server;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::App;
use crate::clock::http_date;
use crate::logsafe::clean;
use error::ApiError;

/// Largest request body accepted (a login is a few hundred bytes).
pub const BODY_LIMIT: usize = 16 * 1024;
/// A request that has not been answered by then gets 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(app: Arc<App>) -> Router {
    let forward_auth = Arc::new(verify::Prepared::new(&app.config));
    Router::new()
        // GET also answers HEAD (axum drops the body).
        .route(
            "/api/v1/verify",
            get(verify::verify).layer(axum::Extension(forward_auth)),
        )
        .route("/api/v1/login", post(api::login))
        .route("/api/v1/session", get(api::session))
        .route("/api/v1/logout", post(api::logout))
        .route("/api/v1/password", post(api::password))
        .route("/api/v1/status", get(api::status))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .merge(pages::routes(&app))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn(declared_length))
        .layer(from_fn(deadline))
        .layer(from_fn_with_state(app.clone(), access_log))
        .with_state(app)
}

async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took too long",
        )
        .into_response(),
    }
}

/// Refuses a declared `Content-Length` over [`BODY_LIMIT`] before any of the body is read,
/// and closes the connection rather than wait for a body it will not take. (A chunked body
/// over the limit is cut off by `DefaultBodyLimit` as it is read.) Hyper itself has already
/// refused a malformed, negative or conflicting length.
async fn declared_length(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        let mut res = ApiError::payload_too_large().into_response();
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    next.run(req).await
}

/// One info line per request: client, method, path (never the query), status, time, note;
/// every client-supplied part through [`clean`]. Also sets the headers every answer carries
/// (`Date` from the appliance's clock), and notices a proxy on this box that
/// `server.trusted_proxies` does not name.
///
/// This runs on every forward-auth request, so it allocates nothing of its own: the line is
/// formatted once, by the logger, into [`crate::logsink`], which writes it off the request path.
async fn access_log(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let client = match extract::origin(&parts, &app.config.server) {
        Ok(o) => {
            if o.unnamed_local_proxy {
                app.local_proxy.seen(app.clock.now());
            }
            Client::Ip(o.ip)
        }
        Err(_) => Client::Unresolved,
    };
    let logging = log::log_enabled!(log::Level::Info);
    // A `Uri` clone shares its bytes (no copy); the method is an enum for the usual ones.
    let seen = logging.then(|| (parts.method.clone(), parts.uri.clone()));
    let mut res = next.run(Request::from_parts(parts, body)).await;
    let headers = res.headers_mut();
    // The appliance's time (design rule 7), not the system clock hyper would write.
    if let Some(date) = date_header(app.clock.now()) {
        headers.insert(header::DATE, date);
    }
    // No answer is cached unless its handler says so (the logo does).
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Some((method, uri)) = seen {
        let note = res
            .extensions()
            .get::<api::Note>()
            .map(|n| n.0.as_str())
            .unwrap_or("");
        // Tenths of a millisecond, rounded, without float formatting.
        let tenths = (started.elapsed().as_micros() + 50) / 100;
        log::info!(
            "{} {} {} {} {}.{}ms {}",
            client,
            clean(method.as_str()),
            clean(uri.path()),
            res.status().as_u16(),
            tenths / 10,
            tenths % 10,
            note
        );
    }
    res
}

/// The client as the access log names it.
enum Client {
    Ip(Option<std::net::IpAddr>),
    Unresolved,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Ip(Some(ip)) => ip.fmt(f),
            Client::Ip(None) => f.write_str("-"),
            Client::Unresolved => f.write_str("unresolved"),
        }
    }
}

/// The `Date` header for `unix`, formatted once a second per worker thread (a `HeaderValue`
/// clone shares its bytes).
fn date_header(unix: u64) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.try_borrow_mut().ok()?;
        if let Some((at, v)) = last.as_ref()
            && *at == unix
        {
            return Some(v.clone());
        }
        let v = HeaderValue::from_str(&http_date(unix)).ok()?;
        *last = Some((unix, v.clone()));
        Some(v)
    })
}
