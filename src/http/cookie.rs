//! The session cookie, one home for its attributes: the JSON API's login and logout and the
//! browser pages set and clear it the same way. Scoped to `web.cookie_domain` when set, so one
//! sign-in covers every app under that domain; `Secure` whenever browsers reach the appliance
//! over TLS (its own, or a proxy's in front of it, as `web.public_url` says).

use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::extract::COOKIE_NAME;
use crate::config::Config;
use crate::crypto::SessionId;

fn attributes(config: &Config) -> String {
    let mut a = String::from("; HttpOnly; SameSite=Lax; Path=/");
    if let Some(d) = config
        .web
        .cookie_domain
        .as_deref()
        .filter(|d| !d.is_empty())
    {
        a.push_str("; Domain=");
        a.push_str(d);
    }
    let https = config
        .web
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    if config.server.tls_enabled() || https {
        a.push_str("; Secure");
    }
    a
}

/// `Set-Cookie` value that starts a session.
pub fn session(config: &Config, id: &SessionId) -> String {
    format!(
        "{COOKIE_NAME}={}{}; Max-Age={}",
        id.expose(),
        attributes(config),
        config.auth.session_ttl.as_secs()
    )
}

/// `Set-Cookie` value that ends it in the browser.
pub fn cleared(config: &Config) -> String {
    format!("{COOKIE_NAME}={}; Max-Age=0", attributes(config))
}

/// Adds a `Set-Cookie` header (appends: a response may set several cookies).
pub fn set(res: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_and_secure_follow_the_config() {
        let mut c = Config::default();
        let id = SessionId::generate();
        let plain = session(&c, &id);
        assert!(
            !plain.contains("Domain=") && !plain.contains("Secure"),
            "{plain}"
        );
        c.web.cookie_domain = Some("site.lan".into());
        c.web.public_url = Some("https://auth.site.lan".into());
        let scoped = session(&c, &id);
        assert!(scoped.contains("; Domain=site.lan"), "{scoped}");
        assert!(scoped.contains("; Secure"), "{scoped}");
        assert!(cleared(&c).contains("Max-Age=0"));
    }
}
