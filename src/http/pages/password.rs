//! /password: the password-change form and its post, through the same
//! [`crate::auth::Auth::change_password`] as `POST /api/v1/password` (old password under
//! regulation, the local rules, Keycloak first, queued or refused while it is unreachable), and
//! the result said in words.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::login::offline;
use super::{Chrome, FormBody, Site, explain, html, not_a_form, with_note};
use crate::app::App;
use crate::auth::Client;
use crate::auth::password::{PasswordMode, PasswordRequest};
use crate::auth::principal::Credential;
use crate::crypto::Secret;
use crate::http::api::{ClientAddr, Presented};
use crate::http::error::ApiError;
use crate::logsafe::clean;

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage<'a> {
    chrome: &'a Chrome,
    csrf: &'a str,
    username: &'a str,
    tenant: &'a str,
    tenants: bool,
    offline: bool,
    hint: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "password_done.html")]
struct DonePage<'a> {
    chrome: &'a Chrome,
    mode: &'a str,
    result: &'a str,
    revoked: u64,
}

/// Where the new password took effect, in words.
fn result_words(mode: PasswordMode) -> (&'static str, &'static str) {
    match mode {
        PasswordMode::Synchronized => (
            "synchronized",
            "Your new password is set here and in central sign-in.",
        ),
        PasswordMode::LocalOnlyQueued => (
            "local_only_queued",
            "Your new password works at this site now. Central sign-in is unreachable, so the change \
             waits in a queue and is sent there when it is back; until then other sites still take \
             the old one.",
        ),
        PasswordMode::LocalOnly => (
            "local_only",
            "Your new password is set. This account is kept at this site only.",
        ),
    }
}

fn hint(site: &Site) -> String {
    format!(
        "At least {} characters, not your username, not the current password.",
        site.min_password_length
    )
}

pub async fn form(
    State(app): State<Arc<App>>,
    Extension(site): Extension<Arc<Site>>,
    Presented(credential): Presented,
    headers: HeaderMap,
) -> Response {
    let signed_in = app
        .auth
        .identify(credential.as_ref())
        .await
        .ok()
        .and_then(|p| {
            p.subject()
                .map(|s| (s.username.to_owned(), s.tenant.to_owned()))
        });
    let (username, tenant) = signed_in.unwrap_or_default();
    let tenant = if tenant == "default" { "" } else { &tenant };
    site.csrf.page(&headers, |token| {
        html(
            StatusCode::OK,
            &PasswordPage {
                chrome: &site.chrome,
                csrf: token,
                username: &username,
                tenant,
                tenants: site.tenants,
                offline: offline(&app),
                hint: hint(&site),
                error: None,
            },
        )
    })
}

pub async fn submit(
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
    let (username, tenant) = (form.get("username"), form.get("tenant"));
    let who = format!(
        "page=password user={} tenant={}",
        clean(username),
        clean(if tenant.is_empty() { "default" } else { tenant })
    );
    let again = |status: StatusCode, error: String, retry_after: Option<u64>| {
        let mut res = site.csrf.page(&headers, |token| {
            html(
                status,
                &PasswordPage {
                    chrome: &site.chrome,
                    csrf: token,
                    username,
                    tenant,
                    tenants: site.tenants,
                    offline: offline(&app),
                    hint: hint(&site),
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
    if form.get("new") != form.get("confirm") {
        let res = again(
            StatusCode::BAD_REQUEST,
            "The two new passwords differ; type the same new password twice.".into(),
            None,
        );
        return with_note(res, format!("{who} outcome=confirm_mismatch"));
    }
    let req = PasswordRequest {
        username: username.to_owned(),
        old_password: Secret::new(form.get("current")),
        new_password: Secret::new(form.get("new")),
        tenant: (!tenant.is_empty()).then(|| tenant.to_owned()),
    };
    let current = credential.as_ref().and_then(Credential::session_digest);
    match app
        .auth
        .change_password(req, current, Client { ip: from.ip })
        .await
    {
        Ok(done) => {
            let (mode, result) = result_words(done.mode);
            let res = html(
                StatusCode::OK,
                &DonePage {
                    chrome: &site.chrome,
                    mode,
                    result,
                    revoked: done.revoked_sessions,
                },
            );
            with_note(res, format!("{who} outcome=ok mode={mode}"))
        }
        Err(e) => {
            let words = explain(&e);
            let api = ApiError::from(e);
            let note = format!("{who} outcome={}", api.code);
            with_note(again(api.status, words, api.retry_after), note)
        }
    }
}
