//! /login and /logout: the sign-in form and its post (through [`crate::auth::Auth::login`], as
//! `POST /api/v1/login`), the "signed in as" page, and signing out (through
//! [`crate::auth::Auth::logout`]). After either, a browser is sent back to `rd` only when
//! [`safe_return`] allows it; otherwise it gets the local page.
//!
//! `GET /logout` only shows a one-button form: a GET must not change anything (link
//! prefetchers, mail scanners and `<img src>` on any page would sign people out), so an app's
//! "sign out" link points at `/logout?rd=...` and the person confirms.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;

use super::csrf::CsrfCookie;
use super::{
    Chrome, FormBody, Site, explain, html, message, not_a_form, query_param, see_other, with_note,
};
use crate::app::App;
use crate::auth::Client;
use crate::auth::login::LoginRequest;
use crate::crypto::Secret;
use crate::http::api::{ClientAddr, Presented};
use crate::http::error::ApiError;
use crate::http::redirect::safe_return;
use crate::logsafe::clean;
use crate::upstream::KeycloakStatus;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    chrome: &'a Chrome,
    csrf: &'a str,
    rd: Option<&'a str>,
    username: &'a str,
    tenant: &'a str,
    tenants: bool,
    offline: bool,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "signed_in.html")]
struct SignedInPage<'a> {
    chrome: &'a Chrome,
    csrf: &'a str,
    rd: Option<&'a str>,
    username: &'a str,
    offline_mode: bool,
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    chrome: &'a Chrome,
    csrf: &'a str,
    rd: Option<&'a str>,
    username: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOutPage<'a> {
    chrome: &'a Chrome,
}

/// Central sign-in cannot be asked now: the offline banner shows. That is keycloak_status
/// `offline` (the monitor finds Keycloak unreachable, or the circuit is open), when a sign-in
/// is answered from the credentials this site holds. Not while `degraded` (a half-open circuit,
/// the first probe not back yet, a client Keycloak refuses): a sign-in then still asks
/// Keycloak first, and the page would be wrong more often than right.
pub(super) fn offline(app: &App) -> bool {
    app.upstream.status() == KeycloakStatus::Offline
}

/// `rd` if it may be followed, in the form the parser wrote it.
fn safe_rd(app: &App, rd: Option<&str>) -> Option<String> {
    rd.and_then(|r| safe_return(&app.config.web, r))
}

/// The sign-in form (or, for a browser already signed in, the "signed in as" page: sending it
/// on to `rd` at once could loop between an app and this page when the app does not see the
/// cookie).
pub async fn form(
    State(app): State<Arc<App>>,
    Extension(site): Extension<Arc<Site>>,
    Presented(credential): Presented,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let rd = safe_rd(&app, query_param(&uri, "rd").as_deref());
    let signed_in = match app.auth.identify(credential.as_ref()).await {
        Ok(p) => p.subject().map(|s| s.username.to_owned()),
        Err(e) => {
            log::warn!("the login page could not read the session: {e}");
            None
        }
    };
    site.csrf.page(&headers, |token| match signed_in {
        Some(username) => html(
            StatusCode::OK,
            &SignedInPage {
                chrome: &site.chrome,
                csrf: token,
                rd: rd.as_deref(),
                username: &username,
                offline_mode: offline(&app),
            },
        ),
        None => html(
            StatusCode::OK,
            &LoginPage {
                chrome: &site.chrome,
                csrf: token,
                rd: rd.as_deref(),
                username: "",
                tenant: "",
                tenants: site.tenants,
                offline: offline(&app),
                error: None,
            },
        ),
    })
}

/// The sign-in post: the CSRF check, then [`crate::auth::Auth::login`]; on success the session
/// cookie and a 303 to a safe `rd` (or the "signed in as" page), else the form again with what
/// went wrong.
pub async fn submit(
    State(app): State<Arc<App>>,
    Extension(site): Extension<Arc<Site>>,
    ClientAddr(from): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(form) = FormBody::parse(&headers, &body) else {
        return not_a_form(&site);
    };
    let rd = safe_rd(&app, Some(form.get("rd")).filter(|r| !r.is_empty()));
    let (username, tenant) = (form.get("username"), form.get("tenant"));
    let who = format!(
        "page=login user={} tenant={}",
        clean(username),
        clean(if tenant.is_empty() { "default" } else { tenant })
    );
    let again = |status: StatusCode, error: String, retry_after: Option<u64>| {
        let mut res = site.csrf.page(&headers, |token| {
            html(
                status,
                &LoginPage {
                    chrome: &site.chrome,
                    csrf: token,
                    rd: rd.as_deref(),
                    username,
                    tenant,
                    tenants: site.tenants,
                    offline: offline(&app),
                    error: Some(error),
                },
            )
        });
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    };
    if let Err(why) = site
        .csrf
        .check(&headers, site.own_origin.as_deref(), form.get("csrf"))
    {
        let res = again(StatusCode::FORBIDDEN, why.explain().into(), None);
        return with_note(res, format!("{who} outcome={}", why.as_str()));
    }
    let req = LoginRequest {
        username: username.to_owned(),
        password: Secret::new(form.get("password")),
        tenant: (!tenant.is_empty()).then(|| tenant.to_owned()),
    };
    match app.auth.login(req, Client { ip: from.ip }).await {
        Ok(ok) => {
            // A new token at sign-in: one planted before it is worth nothing after.
            let token = CsrfCookie::fresh();
            let mut res = match rd.as_deref().and_then(see_other) {
                Some(res) => res,
                None => html(
                    StatusCode::OK,
                    &SignedInPage {
                        chrome: &site.chrome,
                        csrf: &token,
                        rd: None,
                        username: ok.user.username.as_str(),
                        offline_mode: offline(&app),
                    },
                ),
            };
            crate::http::cookie::set(
                &mut res,
                &crate::http::cookie::session(&app.config, &ok.session_id),
            );
            site.csrf.set(&mut res, &token);
            with_note(
                res,
                format!("{who} outcome=ok auth_mode={}", ok.session.auth_mode),
            )
        }
        Err(e) => {
            let words = explain(&e);
            let api = ApiError::from(e);
            let note = format!("{who} outcome={}", api.code);
            with_note(again(api.status, words, api.retry_after), note)
        }
    }
}

/// The sign-out form (nothing is ended by a GET).
pub async fn logout_form(
    State(app): State<Arc<App>>,
    Extension(site): Extension<Arc<Site>>,
    Presented(credential): Presented,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let rd = safe_rd(&app, query_param(&uri, "rd").as_deref());
    let username = app
        .auth
        .identify(credential.as_ref())
        .await
        .ok()
        .and_then(|p| p.subject().map(|s| s.username.to_owned()));
    site.csrf.page(&headers, |token| {
        html(
            StatusCode::OK,
            &LogoutPage {
                chrome: &site.chrome,
                csrf: token,
                rd: rd.as_deref(),
                username: username.as_deref(),
                error: None,
            },
        )
    })
}

/// The sign-out post: the CSRF check, then [`crate::auth::Auth::logout`] (audited, idempotent),
/// the cookie cleared, and a 303 to a safe `rd` or the "signed out" page.
pub async fn logout(
    State(app): State<Arc<App>>,
    Extension(site): Extension<Arc<Site>>,
    ClientAddr(from): ClientAddr,
    Presented(credential): Presented,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(form) = FormBody::parse(&headers, &body) else {
        return not_a_form(&site);
    };
    let rd = safe_rd(&app, Some(form.get("rd")).filter(|r| !r.is_empty()));
    if let Err(why) = site
        .csrf
        .check(&headers, site.own_origin.as_deref(), form.get("csrf"))
    {
        let username = app
            .auth
            .identify(credential.as_ref())
            .await
            .ok()
            .and_then(|p| p.subject().map(|s| s.username.to_owned()));
        let res = site.csrf.page(&headers, |token| {
            html(
                StatusCode::FORBIDDEN,
                &LogoutPage {
                    chrome: &site.chrome,
                    csrf: token,
                    rd: rd.as_deref(),
                    username: username.as_deref(),
                    error: Some(why.explain()),
                },
            )
        });
        return with_note(res, format!("page=logout outcome={}", why.as_str()));
    }
    if let Err(e) = app
        .auth
        .logout(credential.as_ref(), Client { ip: from.ip })
        .await
    {
        let words = explain(&e);
        let api = ApiError::from(e);
        let res = message(&site, api.status, "Not signed out", &words);
        return with_note(res, format!("page=logout outcome={}", api.code));
    }
    let mut res = match rd.as_deref().and_then(see_other) {
        Some(res) => res,
        None => html(
            StatusCode::OK,
            &SignedOutPage {
                chrome: &site.chrome,
            },
        ),
    };
    crate::http::cookie::set(&mut res, &crate::http::cookie::cleared(&app.config));
    with_note(res, "page=logout outcome=ok".into())
}
