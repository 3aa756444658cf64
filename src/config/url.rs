//! URL keys (`keycloak.server`, `keycloak.health_url`, `keycloak.proxy`) checked at load.
//!
//! A typo in one of them (`"http://"`, a space, `"not a url"`) would otherwise be accepted and
//! show up much later as a Keycloak outage. They are parsed with the `http` crate's `Uri`, the
//! parser the Keycloak client (ureq) itself uses, so what passes here is what the client takes.

use std::net::Ipv6Addr;

use ureq::http::Uri;

/// The schemes the client's proxy support understands (ureq's `ProxyProtocol`).
const PROXY_SCHEMES: &[&str] = &["http", "https", "socks4", "socks4a", "socks5", "socks5h"];

/// Keycloak's base URL: `http(s)://host[:port][/path]`, no credentials, query or fragment.
pub fn check_base(text: &str) -> Result<(), String> {
    let uri = parse(text, "https://sso.example.org")?;
    web_scheme(&uri, text)?;
    host(&uri, text, false)?;
    if text.contains(['?', '#']) {
        return Err(format!(
            "a base URL takes no query or fragment (`?`, `#`), got {text:?}"
        ));
    }
    Ok(())
}

/// A full URL to call (the health endpoint): `http(s)://host[:port][/path][?query]`.
pub fn check_endpoint(text: &str) -> Result<(), String> {
    let uri = parse(text, "https://sso.example.org:9000/health/ready")?;
    web_scheme(&uri, text)?;
    host(&uri, text, false)?;
    if text.contains('#') {
        return Err(format!(
            "a URL to call takes no fragment (`#`), got {text:?}"
        ));
    }
    Ok(())
}

/// A proxy: `""` (no proxy at all), or `[scheme://][user:password@]host[:port]` with a scheme
/// of [`PROXY_SCHEMES`] (`http` when left out, as curl and ureq read it). The value may hold
/// credentials, so messages never repeat it.
pub fn check_proxy(text: &str) -> Result<(), String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(());
    }
    let full = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let example = "http://proxy.site.lan:3128";
    if text != trimmed || full.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain spaces or control characters; expected a URL like {example:?}"
        ));
    }
    let uri: Uri = full.parse().map_err(|e| {
        format!("is not a proxy URL ({e}); expected a URL like {example:?} or \"\" for none")
    })?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    if !PROXY_SCHEMES.contains(&scheme.as_str()) {
        return Err(format!(
            "scheme {scheme:?} is not one of {}; expected a URL like {example:?}",
            PROXY_SCHEMES.join(", ")
        ));
    }
    host(&uri, "the proxy URL", true)?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "a proxy URL is scheme, host and port only; expected a URL like {example:?}"
        ));
    }
    Ok(())
}

fn parse(text: &str, example: &str) -> Result<Uri, String> {
    if text.is_empty() {
        return Err(format!("is empty; expected a URL like {example:?}"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain spaces or control characters, got {text:?}; expected a URL like {example:?}"
        ));
    }
    text.parse::<Uri>()
        .map_err(|e| format!("is not a URL ({e}), got {text:?}; expected a URL like {example:?}"))
}

fn web_scheme(uri: &Uri, text: &str) -> Result<(), String> {
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "https") => Ok(()),
        _ => Err(format!(
            "must start with https:// (or http://), got {text:?}"
        )),
    }
}

/// The authority has a plausible host (a DNS name or an IP address) and, if given, a port;
/// credentials only where `userinfo_ok` (a proxy).
fn host(uri: &Uri, shown: &str, userinfo_ok: bool) -> Result<(), String> {
    let Some(authority) = uri.authority() else {
        return Err(format!("{shown:?} has no host"));
    };
    if authority.as_str().contains('@') && !userinfo_ok {
        return Err(format!(
            "{shown:?} holds credentials (`user@`); they do not belong in this URL"
        ));
    }
    let host = authority.host();
    let ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !ok {
        return Err(format!("{shown:?} has no valid host name or address"));
    }
    let after_host = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h);
    if let Some(port) = after_host[host.len()..].strip_prefix(':')
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!("{shown:?} has a bad port {port:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        for good in [
            "https://sso.example.org",
            "http://127.0.0.1:8080",
            "https://sso.example.org/auth/",
            "https://[::1]:8443",
            "HTTPS://SSO.example.org",
        ] {
            assert_eq!(check_base(good), Ok(()), "{good}");
        }
        for bad in [
            "http://",
            "https://",
            "sso.example.org",
            "ftp://sso.example.org",
            "https://sso example.org",
            " https://sso.example.org",
            "https://sso.example.org ",
            "https://sso.example.org:99999",
            "https://sso.example.org:0",
            "https://sso.example.org:x",
            "https://:8080",
            "https://user:pw@sso.example.org",
            "https://sso.example.org/?x=1",
            "https://sso.example.org#top",
            "https://[::zz]",
            "https://sso.exa%mple.org",
            "not a url",
            "",
        ] {
            assert!(check_base(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            check_endpoint("https://sso.example.org:9000/health/ready"),
            Ok(())
        );
        assert_eq!(check_endpoint("http://10.0.0.5/health?full=1"), Ok(()));
        for bad in ["not a url", "http://", "https://h/x#y", "/health/ready"] {
            assert!(check_endpoint(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn proxy_urls() {
        for good in [
            "",
            "  ",
            "http://proxy.site.lan:3128",
            "proxy.site.lan:3128",
            "http://u:p%40ss@proxy.site.lan:3128/",
            "socks5h://10.0.0.1:1080",
        ] {
            assert_eq!(check_proxy(good), Ok(()), "{good:?}");
        }
        for bad in [
            "http://",
            "ftp://proxy:21",
            "http://proxy .lan:3128",
            "http://proxy:3128/path",
            "http://proxy:notaport",
        ] {
            assert!(check_proxy(bad).is_err(), "{bad:?} must be refused");
        }
        let e = check_proxy("http://user:hunter2@proxy lan").unwrap_err();
        assert!(!e.contains("hunter2"), "never repeat a proxy URL: {e}");
    }
}
