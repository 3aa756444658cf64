//! Which proxy, if any, edgeauth goes through to reach a Keycloak URL. One rule, used by the
//! HTTP client and by `edgeauth diagnose`, so that diagnose tests the way logins really take.
//!
//! Like curl: `keycloak.proxy` if set (an empty value means no proxy at all), else
//! `http_proxy`/`HTTP_PROXY` for an `http://` URL, `https_proxy`/`HTTPS_PROXY` for an
//! `https://` one, `all_proxy`/`ALL_PROXY` as the fallback for both (lowercase first, empty
//! values count as unset). `no_proxy`/`NO_PROXY` exempts a host from either kind of proxy.
//! The environment is read through a lookup so the rule is testable without the process's.

use std::net::IpAddr;

/// Where a URL points: scheme, host (lowercase, IPv6 without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

/// Parses an `http://` or `https://` URL's scheme, host and port.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (https, rest) = if let Some(r) = strip_prefix_ci(url, "https://") {
        (true, r)
    } else if let Some(r) = strip_prefix_ci(url, "http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} is not an http(s) URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, p) = stripped.split_once(']').ok_or("bad IPv6 address")?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("bad port {p:?} in {url:?}"))?,
        None if https => 443,
        None => 80,
    };
    Ok(Target {
        https,
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The proxy chosen for a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The proxy URL as given (it may hold credentials: never print it).
    pub url: String,
    /// Where it came from: `keycloak.proxy` or the environment variable's name.
    pub source: String,
}

/// The proxy for `url`: `configured` (`keycloak.proxy`) or the environment read through
/// `env`, unless NO_PROXY exempts the host. `None`: connect directly.
pub fn for_url(
    url: &str,
    configured: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<Route> {
    let target = parse_url(url).ok()?;
    let first_set = |names: &[&'static str]| {
        names.iter().find_map(|name| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (*name, v))
        })
    };
    let route = match configured.map(str::trim) {
        Some("") => return None,
        Some(p) => Route {
            url: p.to_owned(),
            source: "keycloak.proxy".into(),
        },
        None => {
            let names: &[&'static str] = if target.https {
                &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
            } else {
                &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            };
            let (name, url) = first_set(names)?;
            Route {
                url,
                source: name.into(),
            }
        }
    };
    match first_set(&["no_proxy", "NO_PROXY"]) {
        Some((_, list)) if no_proxy_matches(&list, &target) => None,
        _ => Some(route),
    }
}

/// [`for_url`] with the process's environment.
pub fn from_process_env(url: &str, configured: Option<&str>) -> Option<Route> {
    for_url(url, configured, |name| std::env::var(name).ok())
}

/// Whether a NO_PROXY list exempts `t`: entries separated by commas or blanks, each `*`, a
/// host (matching it and its subdomains, with or without a leading `.` or `*.`), an IP
/// address (IPv6 bracketed when a port follows), or a CIDR block (matching IP literals only);
/// a host or address may end in `:port` to exempt that port only.
fn no_proxy_matches(list: &str, t: &Target) -> bool {
    let host = t.host.trim_end_matches('.');
    let host_ip: Option<IpAddr> = host.parse().ok();
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if entry.contains('/') {
                return match (entry.parse::<ipnet::IpNet>(), host_ip) {
                    (Ok(net), Some(ip)) => net.contains(&ip),
                    _ => false,
                };
            }
            let (pattern, port) = split_port(entry);
            if port.is_some_and(|p| p != t.port) {
                return false;
            }
            if let Ok(ip) = pattern.parse::<IpAddr>() {
                return host_ip == Some(ip);
            }
            let domain = pattern
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !domain.is_empty()
                && (host == domain
                    || host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.')))
        })
}

/// `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address or a host, into pattern and port.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    if entry.parse::<IpAddr>().is_ok() {
        return (entry, None);
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse().ok())
        }
        _ => (entry, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC_HTTPS: &str = "https://sso.site.lan";
    const KC_HTTP: &str = "http://sso.site.lan:8080/auth";

    fn route(url: &str, configured: Option<&str>, env: &[(&str, &str)]) -> Option<String> {
        for_url(url, configured, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .map(|r| format!("{} from {}", r.url, r.source))
    }

    #[test]
    fn the_variable_follows_the_scheme() {
        let https = [("HTTPS_PROXY", "http://s:1")];
        let http = [("HTTP_PROXY", "http://h:1")];
        assert_eq!(
            route(KC_HTTPS, None, &https).as_deref(),
            Some("http://s:1 from HTTPS_PROXY")
        );
        // HTTPS_PROXY is not for an http:// Keycloak, HTTP_PROXY not for an https:// one.
        assert_eq!(route(KC_HTTP, None, &https), None);
        assert_eq!(route(KC_HTTPS, None, &http), None);
        assert_eq!(
            route(KC_HTTP, None, &http).as_deref(),
            Some("http://h:1 from HTTP_PROXY")
        );
        assert_eq!(route(KC_HTTP, None, &[]), None);
    }

    #[test]
    fn all_proxy_is_the_fallback_for_both() {
        let env = [("ALL_PROXY", "http://a:1")];
        assert_eq!(
            route(KC_HTTPS, None, &env).as_deref(),
            Some("http://a:1 from ALL_PROXY")
        );
        assert_eq!(
            route(KC_HTTP, None, &env).as_deref(),
            Some("http://a:1 from ALL_PROXY")
        );
        // The scheme's own variable wins over ALL_PROXY.
        let both = [("ALL_PROXY", "http://a:1"), ("HTTPS_PROXY", "http://s:1")];
        assert_eq!(
            route(KC_HTTPS, None, &both).as_deref(),
            Some("http://s:1 from HTTPS_PROXY")
        );
        assert_eq!(
            route(KC_HTTP, None, &both).as_deref(),
            Some("http://a:1 from ALL_PROXY")
        );
    }

    #[test]
    fn lowercase_wins_and_empty_is_unset() {
        let env = [
            ("https_proxy", "http://low:1"),
            ("HTTPS_PROXY", "http://up:1"),
        ];
        assert_eq!(
            route(KC_HTTPS, None, &env).as_deref(),
            Some("http://low:1 from https_proxy")
        );
        let env = [("http_proxy", "http://low:1"), ("all_proxy", "http://a:1")];
        assert_eq!(
            route(KC_HTTP, None, &env).as_deref(),
            Some("http://low:1 from http_proxy")
        );
        let env = [("https_proxy", " "), ("HTTPS_PROXY", "http://up:1")];
        assert_eq!(
            route(KC_HTTPS, None, &env).as_deref(),
            Some("http://up:1 from HTTPS_PROXY")
        );
    }

    #[test]
    fn keycloak_proxy_wins_over_the_environment() {
        let env = [("HTTPS_PROXY", "http://s:1"), ("ALL_PROXY", "http://a:1")];
        assert_eq!(
            route(KC_HTTPS, Some("http://cfg:3128"), &env).as_deref(),
            Some("http://cfg:3128 from keycloak.proxy")
        );
        // For either scheme.
        assert_eq!(
            route(KC_HTTP, Some("http://cfg:3128"), &[]).as_deref(),
            Some("http://cfg:3128 from keycloak.proxy")
        );
        // An empty keycloak.proxy turns proxies off, the environment's too.
        assert_eq!(route(KC_HTTPS, Some(""), &env), None);
    }

    #[test]
    fn no_proxy_exempts_configured_and_environment_proxies() {
        let cfg = Some("http://cfg:3128");
        let env = |no: &'static str| [("HTTPS_PROXY", "http://s:1"), ("NO_PROXY", no)];
        assert_eq!(route(KC_HTTPS, None, &env("sso.site.lan")), None);
        assert_eq!(route(KC_HTTPS, cfg, &[("NO_PROXY", "sso.site.lan")]), None);
        assert_eq!(route(KC_HTTPS, cfg, &[("no_proxy", "sso.site.lan")]), None);
        // Lowercase first, like the proxy variables.
        assert!(
            route(
                KC_HTTPS,
                cfg,
                &[("no_proxy", "other.lan"), ("NO_PROXY", "sso.site.lan")]
            )
            .is_some()
        );
        assert!(route(KC_HTTPS, None, &env("other.lan")).is_some());
    }

    #[test]
    fn no_proxy_forms() {
        let exempt =
            |no: &str, url: &str| route(url, Some("http://p:1"), &[("NO_PROXY", no)]).is_none();
        // Domain suffixes, with or without a leading dot or `*.`, case-insensitive.
        for no in [
            "site.lan",
            ".site.lan",
            "*.site.lan",
            "SITE.LAN",
            "site.lan.",
        ] {
            assert!(exempt(no, "https://sso.site.lan"), "{no}");
            assert!(exempt(no, "https://site.lan"), "{no}");
            assert!(!exempt(no, "https://othersite.lan"), "{no}");
        }
        assert!(!exempt("sso.site.lan", "https://site.lan"));
        // Lists, blanks, `*`.
        assert!(exempt("a.lan, sso.site.lan", "https://sso.site.lan"));
        assert!(exempt("a.lan sso.site.lan", "https://sso.site.lan"));
        assert!(exempt("*", "https://anything.example"));
        assert!(!exempt("", "https://sso.site.lan"));
        // Ports: the default port counts.
        assert!(exempt("sso.site.lan:443", "https://sso.site.lan"));
        assert!(!exempt("sso.site.lan:8443", "https://sso.site.lan"));
        assert!(exempt("site.lan:8080", KC_HTTP));
        // IP literals, IPv6 with or without brackets and port, and CIDR blocks.
        assert!(exempt("10.0.0.5", "http://10.0.0.5:8080"));
        assert!(!exempt("10.0.0.5", "http://10.0.0.50:8080"));
        assert!(exempt("10.0.0.5:8080", "http://10.0.0.5:8080"));
        assert!(exempt("::1", "http://[::1]:8080"));
        assert!(exempt("[::1]:8080", "http://[::1]:8080"));
        assert!(!exempt("[::1]:9000", "http://[::1]:8080"));
        assert!(exempt("10.0.0.0/8", "https://10.1.2.3"));
        assert!(!exempt("10.0.0.0/8", "https://11.1.2.3"));
        assert!(exempt("fd00::/8", "https://[fd12::1]"));
        assert!(!exempt("10.0.0.0/8", "https://sso.site.lan"));
    }

    #[test]
    fn parses_urls() {
        let t = parse_url("https://sso.example.org").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port),
            (true, "sso.example.org", 443)
        );
        let t = parse_url("http://127.0.0.1:8081/auth").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port),
            (false, "127.0.0.1", 8081)
        );
        let t = parse_url("https://[::1]:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        let t = parse_url("HTTPS://u:p@SSO.Example.org?x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("sso.example.org", 443));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("https://").is_err());
        // An unreadable Keycloak URL has no proxy (the client reports the URL itself).
        assert_eq!(route("ftp://x", Some("http://p:1"), &[]), None);
    }
}
