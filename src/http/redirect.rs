//! Where a browser may be sent: the one home of the redirect rules (design rule 10, "a redirect
//! target only when it is allowed"). [`safe_return`] decides whether the `rd` a browser brought
//! to /login or /logout may be followed after sign-in or sign-out; [`login_url`] is the login
//! page with the URL to come back to, where forward-auth sends a browser that is not signed in.
//!
//! The target is parsed with the `url` crate, a WHATWG URL parser, so the host it sees is the
//! host a browser would go to (`https://site.lan@evil.com` is `evil.com` to both; a browser
//! reads `/\evil.com` as `//evil.com`, so backslashes are refused outright). What goes into the
//! `Location` header is the parser's serialization, never the raw input.

use std::fmt::Write;

use url::{Host, Url};

use crate::config::Config;
use crate::config::web::WebConfig;

/// The longest `rd` considered (an app URL with a long query is still well under this).
pub const MAX_RETURN_LEN: usize = 2048;

/// The base a relative `rd` is resolved against, only to see that it stays on it.
const SAME_ORIGIN: &str = "http://edgeauth.invalid/";

/// The `Location` to send a browser back to after sign-in or sign-out, or `None` when `rd` is
/// not a place this appliance sends browsers to. Accepted:
/// * a same-origin path starting with a single `/` (`/status`, `/x?y=1`);
/// * an `http`/`https` URL without user info whose host is `web.cookie_domain` or a name
///   under it at a label boundary (`pos.site.lan` under `site.lan`, never `evilsite.lan`), is
///   listed in `web.redirect_hosts` (exact, or `*.name` for any name under `name`), or is
///   `web.public_url`'s own host.
///
/// Refused: anything else, and anything with a control character, space or backslash, raw or
/// percent-encoded, or longer than [`MAX_RETURN_LEN`].
pub fn safe_return(web: &WebConfig, rd: &str) -> Option<String> {
    if rd.is_empty() || rd.len() > MAX_RETURN_LEN || !clean(rd) {
        return None;
    }
    if rd.starts_with('/') {
        return same_origin_path(rd);
    }
    let url = Url::parse(rd).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = match url.host()? {
        Host::Domain(d) => d.to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => format!("[{ip}]"),
    };
    allowed_host(web, &host).then(|| url.to_string())
}

/// No control character or backslash, raw or percent-encoded (`%0d%0a`, `%09`, `%5c`), no raw
/// space (`%20` is fine), and no broken percent escape that a later decoder might read
/// differently.
fn clean(s: &str) -> bool {
    let bad = |b: u8| b < 0x20 || b == 0x7f || b == b'\\';
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if bad(b) || b == b' ' {
            return false;
        }
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return false;
            };
            // hi and lo are hex digits (< 16), so this is one byte.
            if bad(u8::try_from(hi * 16 + lo).unwrap_or(0)) {
                return false;
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    true
}

/// A path on this origin: one leading `/` (not `//`, which is another host), resolved against
/// a placeholder origin and kept only if it stays there.
fn same_origin_path(rd: &str) -> Option<String> {
    if rd.starts_with("//") {
        return None;
    }
    let base = Url::parse(SAME_ORIGIN).ok()?;
    let url = base.join(rd).ok()?;
    if url.origin() != base.origin() {
        return None;
    }
    // Path, query and fragment as the parser serialized them.
    let full = url.as_str();
    let rest = full.get(SAME_ORIGIN.len() - 1..)?;
    // Dot segments may have made `//host` of it (`/.//evil.com`): a browser reads that as a host.
    (rest.starts_with('/') && !rest.starts_with("//")).then(|| rest.to_owned())
}

/// `host` (lower-case, as the parser gives it) is under the cookie domain, listed in
/// `web.redirect_hosts`, or `web.public_url`'s host.
fn allowed_host(web: &WebConfig, host: &str) -> bool {
    let under = |domain: &str| {
        let d = domain.trim_start_matches('.').to_ascii_lowercase();
        !d.is_empty()
            && (host == d
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')))
    };
    if web.cookie_domain.as_deref().is_some_and(under) {
        return true;
    }
    let listed = web
        .redirect_hosts
        .iter()
        .any(|h| match h.strip_prefix("*.") {
            Some(parent) => under(parent) && host.len() > parent.len(),
            None => h.eq_ignore_ascii_case(host),
        });
    if listed {
        return true;
    }
    web.public_url
        .as_deref()
        .and_then(|u| Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|own| own == host)
}

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

    fn web() -> WebConfig {
        WebConfig {
            public_url: Some("https://auth.site.lan".into()),
            cookie_domain: Some("site.lan".into()),
            redirect_hosts: vec!["partner.example".into(), "*.apps.example".into()],
            ..WebConfig::default()
        }
    }

    fn ok(rd: &str) -> String {
        safe_return(&web(), rd).unwrap_or_else(|| panic!("{rd:?} should be accepted"))
    }

    #[test]
    fn accepted_shapes() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/status"), "/status");
        assert_eq!(ok("/a/b?c=d&e=%20#f"), "/a/b?c=d&e=%20#f");
        assert_eq!(ok("https://site.lan/"), "https://site.lan/");
        assert_eq!(
            ok("https://pos.site.lan/till?x=1"),
            "https://pos.site.lan/till?x=1"
        );
        assert_eq!(
            ok("http://wiki.site.lan:8080/p"),
            "http://wiki.site.lan:8080/p"
        );
        assert_eq!(ok("https://a.b.site.lan"), "https://a.b.site.lan/");
        // Hosts are compared as the parser normalises them.
        assert_eq!(ok("HTTPS://POS.Site.LAN/X"), "https://pos.site.lan/X");
        assert_eq!(
            ok("https://partner.example/back"),
            "https://partner.example/back"
        );
        assert_eq!(ok("https://x.apps.example/"), "https://x.apps.example/");
        assert_eq!(
            ok("https://auth.site.lan/status"),
            "https://auth.site.lan/status"
        );
        // Non-ASCII is percent-encoded by the serializer, never sent raw.
        assert_eq!(ok("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(
            ok("https://pos.site.lan/caf\u{e9}"),
            "https://pos.site.lan/caf%C3%A9"
        );
    }

    #[test]
    fn refused_schemes_and_shapes() {
        for rd in [
            "",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "java\tscript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox",
            "file:///etc/passwd",
            "ftp://pos.site.lan/",
            "ws://pos.site.lan/",
            "blob:https://pos.site.lan/x",
            "pos.site.lan/x",
            "status",
            "?rd=x",
            "#x",
            "//evil.com",
            "//evil.com/x",
            "///evil.com",
            "https:evil.com",
            "https:/evil.com",
            "http://",
            "/.//evil.com",
            "/..//evil.com",
            "/%2e//evil.com",
            "/a/..//evil.com",
            "/./%2e/.//evil.com",
        ] {
            assert_eq!(safe_return(&web(), rd), None, "{rd:?}");
        }
    }

    #[test]
    fn refused_hosts() {
        for rd in [
            "https://evil.com/",
            "https://evilsite.lan/",
            "https://site.lan.evil.com/",
            "https://pos.site.lan.evil.com/",
            "https://xsite.lan/",
            "https://site.lan./",
            "https://lan/",
            "https://apps.example/",
            "https://xapps.example/",
            "https://partner.example.evil/",
            "https://evil.partner.example/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://2130706433/",
            "https://0x7f.1/",
        ] {
            assert_eq!(safe_return(&web(), rd), None, "{rd:?}");
        }
    }

    #[test]
    fn refused_user_info() {
        for rd in [
            "https://site.lan@evil.com/",
            "https://pos.site.lan@evil.com",
            "https://user:pw@pos.site.lan/",
            "https://user@pos.site.lan/",
            "https://:pw@pos.site.lan/",
            "https://evil.com%40pos.site.lan/",
            "https://evil.com#@pos.site.lan/",
            "https://evil.com?@pos.site.lan/",
        ] {
            assert_eq!(safe_return(&web(), rd), None, "{rd:?}");
        }
    }

    #[test]
    fn refused_backslashes_and_control_characters() {
        for rd in [
            "/\\evil.com",
            "\\\\evil.com",
            "\\/evil.com",
            "/%5cevil.com",
            "/%5Cevil.com",
            "https://pos.site.lan\\@evil.com/",
            "https://evil.com\\.site.lan/",
            "/x\r\nSet-Cookie: a=b",
            "/x%0d%0aSet-Cookie:%20a=b",
            "/x%0D%0ALocation:%20https://evil.com",
            "https://pos.site.lan/%0a",
            "/x\n",
            "\n/x",
            " /x",
            "/x y",
            "/\t/evil.com",
            "/%09/evil.com",
            "/x\u{0}",
            "/x%00",
            "/x%7f",
            "/x\u{7f}",
            "/x%",
            "/x%2",
            "/x%zz",
            "https://pos.site.lan/\u{1b}[31m",
        ] {
            assert_eq!(safe_return(&web(), rd), None, "{rd:?}");
        }
    }

    #[test]
    fn refused_when_over_long() {
        let long = format!("/{}", "a".repeat(MAX_RETURN_LEN));
        assert_eq!(safe_return(&web(), &long), None);
        let fits = format!("/{}", "a".repeat(MAX_RETURN_LEN - 1));
        assert!(safe_return(&web(), &fits).is_some());
    }

    #[test]
    fn without_a_cookie_domain_only_listed_hosts_and_paths() {
        let w = WebConfig::default();
        assert_eq!(safe_return(&w, "https://pos.site.lan/"), None);
        assert_eq!(safe_return(&w, "/status").as_deref(), Some("/status"));
        let w = WebConfig {
            redirect_hosts: vec!["10.0.0.5".into()],
            ..WebConfig::default()
        };
        assert_eq!(
            safe_return(&w, "http://10.0.0.5:3000/").as_deref(),
            Some("http://10.0.0.5:3000/")
        );
        assert_eq!(safe_return(&w, "http://10.0.0.6/"), None);
    }

    #[test]
    fn nothing_accepted_ever_holds_a_header_breaking_byte() {
        for rd in ["/a?b=%0d", "https://pos.site.lan/é?x=\u{2028}", "/ok"] {
            if let Some(loc) = safe_return(&web(), rd) {
                assert!(
                    loc.bytes().all(|b| (0x21..0x7f).contains(&b)),
                    "{rd:?} -> {loc:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod login_tests {
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
