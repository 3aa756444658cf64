//! The browser pages (design §6): /login, /logout, /password, /status and the site's logo,
//! rendered on the server so they work without JavaScript on an old tablet, with a keyboard
//! and with a screen reader. They call the same [`crate::auth::Auth`] methods as the JSON API
//! (same tiers, regulation and audit) and show [`crate::upstream::Upstream::status`].
//!
//! Templates are compiled into the binary by askama (HTML auto-escaping; nothing is read from
//! disk per request); the one stylesheet is inline and allowed by its hash in the
//! Content-Security-Policy, which allows no script at all. Forms are guarded by [`csrf`];
//! where a browser may be sent afterwards is [`super::redirect::safe_return`]'s call.

mod csrf;
mod login;
mod password;
mod status;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::api::Note;
use crate::app::App;
use crate::auth::AuthError;
use crate::config::Config;

/// The stylesheet, inline in every page (one request per page, nothing else to fetch).
const CSS: &str = include_str!("style.css");

/// The routes of the pages, with their security headers.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    let site = Arc::new(Site::new(&app.config, app.logo.is_some()));
    Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", get(login::logout_form).post(login::logout))
        .route("/password", get(password::form).post(password::submit))
        .route("/status", get(status::page))
        .route("/static/logo", get(logo))
        .layer(axum::Extension(site.clone()))
        .layer(map_response_with_state(site, security_headers))
}

/// What every page shares, worked out once at start: branding, the CSP, the CSRF cookie.
#[derive(Debug)]
pub struct Site {
    chrome: Chrome,
    csp: HeaderValue,
    csrf: csrf::CsrfCookie,
    /// `web.public_url`'s origin (`https://auth.site.lan`), for the CSRF origin check.
    own_origin: Option<String>,
    /// Ask for an organisation (tenant) on the forms: `[tenants.*]` are configured.
    tenants: bool,
    min_password_length: usize,
}

/// The page frame: site name, logo, stylesheet.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub site_name: String,
    pub has_logo: bool,
    pub css: &'static str,
}

impl Site {
    fn new(config: &Config, has_logo: bool) -> Site {
        let https = config.server.tls_enabled()
            || config
                .web
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"));
        let own_origin = config
            .web
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization());
        Site {
            chrome: Chrome {
                site_name: config.web.site_name.trim().to_owned(),
                has_logo,
                css: CSS,
            },
            csp: content_security_policy(config),
            csrf: csrf::CsrfCookie::new(https),
            own_origin,
            tenants: !config.tenants.is_empty(),
            min_password_length: config.auth.min_password_length,
        }
    }
}

/// The pages' Content-Security-Policy: no script, no plugin, no frame, the inline stylesheet by
/// its hash (`'unsafe-inline'` after it is ignored by every browser that knows hashes and
/// keeps the page styled on one that predates them), images from this origin (the logo), and
/// forms that post here or, through the redirect after sign-in, to the hosts `rd` may name.
fn content_security_policy(config: &Config) -> HeaderValue {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
    let mut form_action = vec!["'self'".to_owned()];
    let mut hosts: Vec<String> = Vec::new();
    if let Some(d) = config
        .web
        .cookie_domain
        .as_deref()
        .map(|d| d.trim_start_matches('.'))
        .filter(|d| !d.is_empty())
    {
        hosts.push(d.to_owned());
        hosts.push(format!("*.{d}"));
    }
    hosts.extend(config.web.redirect_hosts.iter().cloned());
    if let Some(own) = config
        .web
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
    {
        hosts.push(own);
    }
    for h in hosts {
        // Only names a CSP source can hold (the config check keeps them so): never a `;`.
        if h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.*[]:".contains(&b))
        {
            form_action.push(format!("http://{h}:*"));
            form_action.push(format!("https://{h}:*"));
        }
    }
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{hash}' 'unsafe-inline'; img-src 'self'; \
         form-action {}; frame-ancestors 'none'; base-uri 'none'",
        form_action.join(" ")
    );
    HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
}

/// Every page answer (forms, redirects, the logo) carries these.
async fn security_headers(State(site): State<Arc<Site>>, mut res: Response) -> Response {
    let h = res.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert_with(|| site.csp.clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// The logo, from memory, with its content type. An SVG opened on its own runs no script
/// (`sandbox`).
async fn logo(State(app): State<Arc<App>>) -> Response {
    let Some(logo) = app.logo.clone() else {
        return (StatusCode::NOT_FOUND, "no logo is configured").into_response();
    };
    let mut res = Bytes::from(logo.bytes.clone()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(logo.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    res
}

/// A rendered page with its status; a template that fails to render (it cannot, short of a
/// bug) is a plain 500.
fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            log::error!("page failed to render: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be shown; see the appliance's log",
            )
                .into_response()
        }
    }
}

/// A 303 to `location` (already checked by `safe_return`, so it holds no byte that breaks a
/// header; if it did, the local page is shown instead by the caller).
fn see_other(location: &str) -> Option<Response> {
    let value = HeaderValue::from_str(location).ok()?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    res.headers_mut().insert(header::LOCATION, value);
    Some(res)
}

fn with_note(mut res: Response, note: String) -> Response {
    res.extensions_mut().insert(Note(note));
    res
}

/// A form body (`application/x-www-form-urlencoded`), the first value of each field.
#[derive(Debug, Default)]
struct FormBody(Vec<(String, String)>);

impl FormBody {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Option<FormBody> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())?;
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return None;
        }
        Some(FormBody(
            url::form_urlencoded::parse(body).into_owned().collect(),
        ))
    }

    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The first value of `name` in the request's query string.
fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The page for a form that was not sent as a form.
fn not_a_form(site: &Site) -> Response {
    message(
        site,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Not a form",
        "This address takes the form on its page; open the page and send it from there.",
    )
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    chrome: &'a Chrome,
    heading: &'a str,
    message: &'a str,
}

fn message(site: &Site, status: StatusCode, heading: &str, text: &str) -> Response {
    html(
        status,
        &MessagePage {
            chrome: &site.chrome,
            heading,
            message: text,
        },
    )
}

/// "4 minutes", "1 minute", "30 seconds": how long to wait, rounded up.
pub fn wait_words(secs: u64) -> String {
    let secs = secs.max(1);
    if secs < 60 {
        return format!("{secs} second{}", if secs == 1 { "" } else { "s" });
    }
    let min = secs.div_ceil(60);
    format!("{min} minute{}", if min == 1 { "" } else { "s" })
}

/// What a person is told when a sign-in or password change fails. The wording never tells an
/// unknown user from a wrong password.
fn explain(e: &AuthError) -> String {
    match e {
        AuthError::InvalidCredentials => "Wrong username or password.".into(),
        AuthError::TooManyAttempts { retry_after } => format!(
            "Too many attempts; try again in {}.",
            wait_words(*retry_after)
        ),
        AuthError::AccountDisabled => "This account is disabled. Ask your administrator.".into(),
        AuthError::OfflineLoginExpired => {
            "Central sign-in is unreachable, and this account has not signed in \
             online recently enough to be let in with the credentials this site holds. Try again \
             when the network is back, or ask your administrator."
                .into()
        }
        AuthError::OfflineLoginNotAllowed => {
            "Central sign-in is unreachable, and this site does not allow \
             signing in without it. Try again when the network is back."
                .into()
        }
        AuthError::Overloaded => {
            "The appliance is busy checking other sign-ins; try again in a moment.".into()
        }
        AuthError::Store(s) if s.is_storage() => {
            "The appliance cannot save anything right now; nothing was changed. \
             Try again shortly."
                .into()
        }
        AuthError::Store(_) | AuthError::Internal(_) => {
            "Something went wrong on the appliance; try again, and tell your administrator if it \
             keeps happening."
                .into()
        }
        AuthError::BadRequest(m) => sentence(&m.replace('`', "")),
        AuthError::AccountSetupRequired
        | AuthError::WeakPassword(_)
        | AuthError::DegradedModeForbidden(_) => sentence(&e.to_string()),
    }
}

/// A message as a sentence: capital first letter, full stop.
fn sentence(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut chars = s.trim().chars();
    if let Some(c) = chars.next() {
        out.extend(c.to_uppercase());
    }
    out.extend(chars);
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_said_in_words_rounded_up() {
        assert_eq!(wait_words(0), "1 second");
        assert_eq!(wait_words(30), "30 seconds");
        assert_eq!(wait_words(60), "1 minute");
        assert_eq!(wait_words(181), "4 minutes");
        assert_eq!(wait_words(240), "4 minutes");
    }

    #[test]
    fn the_csp_allows_no_script_and_the_stylesheet_by_hash() {
        let mut c = Config::default();
        c.web.cookie_domain = Some("site.lan".into());
        c.web.redirect_hosts = vec!["*.apps.lan".into()];
        let csp = content_security_policy(&c);
        let csp = csp.to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("https://*.site.lan:*"), "{csp}");
        assert!(csp.contains("http://*.apps.lan:*"), "{csp}");
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS));
        assert!(csp.contains(&format!("'sha256-{hash}'")), "{csp}");
    }

    #[test]
    fn messages_are_sentences() {
        assert_eq!(
            explain(&AuthError::TooManyAttempts { retry_after: 230 }),
            "Too many attempts; try again in 4 minutes."
        );
        assert_eq!(
            explain(&AuthError::BadRequest(
                "`password` must not be empty".into()
            )),
            "Password must not be empty."
        );
    }
}
