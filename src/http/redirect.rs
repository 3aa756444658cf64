//! Where browsers are sent: the login page with the URL to come back to ([`login_url`]). One
//! home, so forward-auth and the pages build the same address.

use std::fmt::Write;

use crate::config::Config;

/// The URL browsers reach the appliance at, without a trailing `/`: `web.public_url`, else
/// built from `server.listen` and TLS (an unspecified listen address becomes `localhost`).
pub fn public_base(config: &Config) -> String {
    if let Some(u) = config.web.public_url.as_deref().filter(|u| !u.is_empty()) {
        return u.trim_end_matches('/').to_owned();
    }
    let scheme = if config.server.tls_enabled() {
        "https"
    } else {
        "http"
    };
    let listen = config.server.listen;
    let port = listen.port();
    match listen.ip() {
        ip if ip.is_unspecified() => format!("{scheme}://localhost:{port}"),
        std::net::IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}"),
        std::net::IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}"),
    }
}

/// `<base>/login`, with `?rd=<return URL>` percent-encoded (every byte but RFC 3986's
/// unreserved characters), so no byte of the return URL can end a header or a parameter.
pub fn login_url(base: &str, rd: Option<&str>) -> String {
    let mut out = String::with_capacity(base.len() + 10 + rd.map_or(0, |r| r.len() * 3));
    out.push_str(base);
    out.push_str("/login");
    if let Some(rd) = rd.filter(|r| !r.is_empty()) {
        out.push_str("?rd=");
        for b in rd.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_from_public_url_or_listen() {
        let mut c = Config::default();
        assert_eq!(public_base(&c), "http://127.0.0.1:8080");
        c.server.listen = "[::1]:9443".parse().unwrap();
        assert_eq!(public_base(&c), "http://[::1]:9443");
        c.server.listen = "0.0.0.0:443".parse().unwrap();
        c.server.tls_cert = Some("c.pem".into());
        c.server.tls_key = Some("k.pem".into());
        assert_eq!(public_base(&c), "https://localhost:443");
        c.web.public_url = Some("https://auth.site.lan/".into());
        assert_eq!(public_base(&c), "https://auth.site.lan");
    }

    #[test]
    fn login_url_encodes_the_return_url() {
        let base = "https://auth.site.lan";
        assert_eq!(login_url(base, None), "https://auth.site.lan/login");
        assert_eq!(login_url(base, Some("")), "https://auth.site.lan/login");
        assert_eq!(
            login_url(base, Some("https://pos.site.lan/a b?x=1&y=ü")),
            "https://auth.site.lan/login?rd=https%3A%2F%2Fpos.site.lan%2Fa%20b%3Fx%3D1%26y%3D%C3%BC"
        );
        let evil = login_url(base, Some("https://x/\r\nSet-Cookie: a=b"));
        assert!(
            evil.bytes().all(|b| b.is_ascii_graphic()),
            "only printable ASCII: {evil:?}"
        );
        assert!(evil.contains("%0D%0ASet-Cookie%3A%20a%3Db"), "{evil}");
    }
}
