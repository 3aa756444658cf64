//! Cross-site request forgery guard for the pages' forms (login, logout, password change):
//! a double-submit token with an origin check, so a page on another site (or another app
//! under the cookie domain) cannot make a browser sign in, sign out or change a password.
//!
//! * The token is 32 random bytes (hex) in a cookie that is `HttpOnly`, `SameSite=Strict`,
//!   `Path=/`, host-only (no `Domain`, so other apps under the cookie domain never receive it)
//!   and, when browsers reach the appliance over TLS, `Secure` with the `__Host-` prefix (which
//!   browsers refuse to accept from a sibling subdomain: no cookie tossing). The same value is
//!   a hidden form field; a POST is accepted only when both are present and equal, compared in
//!   constant time.
//! * A POST whose `Origin` header names another origin (or `null`) is refused even with a
//!   matching token. Browsers send `Origin` on form posts; an old one that does not still has
//!   the token check.
//!
//! The token is not tied to a session (the login form has none yet); it is rotated at sign-in.

use axum::http::{HeaderMap, header};
use axum::response::Response;

use crate::crypto::{ct_eq, hex, random_bytes};

/// Bytes of randomness in a token (hex doubles it).
const TOKEN_BYTES: usize = 32;

/// The CSRF cookie's name and attributes, chosen once from the config.
#[derive(Debug, Clone)]
pub struct CsrfCookie {
    name: &'static str,
    secure: bool,
}

/// Why a form post was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No CSRF cookie came with the post (cookies off, or it expired with the browser session).
    NoCookie,
    /// The form's token is missing or differs from the cookie's.
    Mismatch,
    /// The post came from a page on another origin.
    CrossOrigin,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::NoCookie => "csrf_no_cookie",
            Refused::Mismatch => "csrf_mismatch",
            Refused::CrossOrigin => "csrf_cross_origin",
        }
    }

    /// What the person is told (the form is shown again with a fresh token).
    pub fn explain(self) -> &'static str {
        match self {
            Refused::NoCookie => {
                "Your browser did not send back this page's cookie. Allow cookies for this site, then send the form again."
            }
            Refused::Mismatch | Refused::CrossOrigin => {
                "This form had expired or came from another page, so nothing was done. Please send it again."
            }
        }
    }
}

impl CsrfCookie {
    pub fn new(secure: bool) -> Self {
        CsrfCookie {
            name: if secure {
                "__Host-edgeauth_csrf"
            } else {
                "edgeauth_csrf"
            },
            secure,
        }
    }

    /// A new random token.
    pub fn fresh() -> String {
        let mut b = [0u8; TOKEN_BYTES];
        random_bytes(&mut b);
        hex(&b)
    }

    /// The token the request's cookie holds, if it is well formed.
    pub fn presented(&self, headers: &HeaderMap) -> Option<String> {
        for v in headers.get_all(header::COOKIE) {
            let Ok(s) = v.to_str() else { continue };
            for pair in s.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=')
                    && name == self.name
                    && value.len() == TOKEN_BYTES * 2
                    && value.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Some(value.to_owned());
                }
            }
        }
        None
    }

    /// The request's token, or a new one that [`CsrfCookie::set`] must then send.
    pub fn token(&self, headers: &HeaderMap) -> (String, bool) {
        match self.presented(headers) {
            Some(t) => (t, false),
            None => (Self::fresh(), true),
        }
    }

    /// A page that carries a form: `render` gets the browser's token, or a new one, which is
    /// then set as the cookie on the page it rendered.
    pub fn page(&self, headers: &HeaderMap, render: impl FnOnce(&str) -> Response) -> Response {
        let (token, new) = self.token(headers);
        let mut res = render(&token);
        if new {
            self.set(&mut res, &token);
        }
        res
    }

    /// Adds the `Set-Cookie` for `token`.
    pub fn set(&self, res: &mut Response, token: &str) {
        let cookie = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict{}",
            self.name,
            if self.secure { "; Secure" } else { "" }
        );
        crate::http::cookie::set(res, &cookie);
    }

    /// Checks a form post: the origin, then the cookie's token against the form's.
    pub fn check(
        &self,
        headers: &HeaderMap,
        own_origin: Option<&str>,
        form_token: &str,
    ) -> Result<(), Refused> {
        if !same_origin(headers, own_origin) {
            return Err(Refused::CrossOrigin);
        }
        let Some(cookie) = self.presented(headers) else {
            return Err(Refused::NoCookie);
        };
        if form_token.len() != cookie.len() || !ct_eq(form_token.as_bytes(), cookie.as_bytes()) {
            return Err(Refused::Mismatch);
        }
        Ok(())
    }
}

/// No `Origin` header (an old browser: the token decides), or one that is this appliance:
/// `web.public_url`'s origin, or the scheme-less `Host` the request was sent to.
fn same_origin(headers: &HeaderMap, own_origin: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let serialized = url.origin().ascii_serialization();
    if serialized == "null" {
        return false;
    }
    if own_origin.is_some_and(|own| own == serialized) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // `http://a:8080` against `Host: a:8080`; a default port is left out of both.
    let authority = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return false,
    };
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn parts(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_token_must_match_the_cookie() {
        let c = CsrfCookie::new(false);
        let t = CsrfCookie::fresh();
        let cookie = format!("edgeauth_csrf={t}");
        let p = parts(&[("cookie", &cookie), ("host", "auth.site.lan")]);
        assert_eq!(c.check(&p, None, &t), Ok(()));
        assert_eq!(c.check(&p, None, ""), Err(Refused::Mismatch));
        assert_eq!(
            c.check(&p, None, &CsrfCookie::fresh()),
            Err(Refused::Mismatch)
        );
        let p = parts(&[("host", "auth.site.lan")]);
        assert_eq!(c.check(&p, None, &t), Err(Refused::NoCookie));
        // A malformed cookie is no cookie.
        let p = parts(&[("cookie", "edgeauth_csrf=abc")]);
        assert_eq!(c.check(&p, None, "abc"), Err(Refused::NoCookie));
        // The secure name is another cookie.
        let s = CsrfCookie::new(true);
        let p = parts(&[("cookie", &cookie)]);
        assert_eq!(s.check(&p, None, &t), Err(Refused::NoCookie));
    }

    #[test]
    fn another_origin_is_refused_even_with_the_token() {
        let c = CsrfCookie::new(false);
        let t = CsrfCookie::fresh();
        let cookie = format!("edgeauth_csrf={t}");
        let check = |origin: &str, host: &str, own: Option<&str>| {
            c.check(
                &parts(&[("cookie", &cookie), ("origin", origin), ("host", host)]),
                own,
                &t,
            )
        };
        assert_eq!(
            check("http://127.0.0.1:8080", "127.0.0.1:8080", None),
            Ok(())
        );
        assert_eq!(
            check(
                "https://auth.site.lan",
                "127.0.0.1:8080",
                Some("https://auth.site.lan")
            ),
            Ok(())
        );
        for (origin, host) in [
            ("https://evil.com", "auth.site.lan"),
            ("https://wiki.site.lan", "auth.site.lan"),
            ("null", "auth.site.lan"),
            ("http://127.0.0.1:8081", "127.0.0.1:8080"),
            ("garbage", "auth.site.lan"),
        ] {
            assert_eq!(
                check(origin, host, Some("https://auth.site.lan")),
                Err(Refused::CrossOrigin),
                "{origin}"
            );
        }
    }
}
