//! `[web]`: how browsers reach the appliance and what its pages look like. Shared by the
//! browser pages (login, redirects back) and forward-auth (the login URL it sends a browser to).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The URL browsers reach edgeauth at, e.g. `https://auth.site.lan`; login redirects
    /// point here. Unset: built from `server.listen` (fine for one host, not for proxies).
    pub public_url: Option<String>,
    /// The cookie domain, e.g. `site.lan`: one sign-in then covers `pos.site.lan` and
    /// `wiki.site.lan`. Unset: the cookie is host-only.
    pub cookie_domain: Option<String>,
    /// Hosts besides those under `cookie_domain` that `rd=` may send a browser back to
    /// (exact names, or `*.example.lan`).
    pub redirect_hosts: Vec<String>,
    /// Shown in the pages' title and heading.
    pub site_name: String,
    /// A logo file shown on the pages (PNG, SVG or JPEG, at most 256 KiB).
    pub logo: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            public_url: None,
            cookie_domain: None,
            redirect_hosts: Vec::new(),
            site_name: "edgeauth".into(),
            logo: None,
        }
    }
}

/// The largest logo file accepted (`web.logo`).
pub const LOGO_MAX_BYTES: usize = 256 * 1024;

/// The logo file, read once at start: its bytes and the content type they are served with.
#[derive(Clone, PartialEq, Eq)]
pub struct Logo {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

impl std::fmt::Debug for Logo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logo")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// A host name as `cookie_domain` and `redirect_hosts` take it: letters, digits, `-` and dots
/// between labels, no scheme, port or path.
fn check_host(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is not a host name (such as \"site.lan\"; no scheme, port, path or leading dot)",
            crate::logsafe::clean(name)
        ))
    }
}

impl WebConfig {
    /// The rules of `[web]` no type can express; the error names the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        if let Some(d) = &self.cookie_domain
            && !d.is_empty()
        {
            check_host(d).map_err(|m| ("web.cookie_domain".to_owned(), m))?;
        }
        for (i, h) in self.redirect_hosts.iter().enumerate() {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let ip = name.parse::<std::net::Ipv4Addr>().is_ok();
            if !ip {
                check_host(name).map_err(|m| (format!("web.redirect_hosts[{i}]"), m))?;
            }
        }
        let name = self.site_name.trim();
        if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
            return Err((
                "web.site_name".into(),
                "must be 1 to 80 characters of text without control characters".into(),
            ));
        }
        Ok(())
    }

    /// Reads `web.logo` once: at most [`LOGO_MAX_BYTES`], a PNG, JPEG or SVG by its first
    /// bytes. A missing, unreadable, oversized or unknown file is an error naming the path.
    pub fn load_logo(&self) -> Result<Option<Logo>, String> {
        let Some(path) = &self.logo else {
            return Ok(None);
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the logo {}: {e}", path.display()))?;
        if meta.len() > LOGO_MAX_BYTES as u64 {
            return Err(format!(
                "the logo {} has {} bytes; at most {LOGO_MAX_BYTES} are served",
                path.display(),
                meta.len()
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the logo {}: {e}", path.display()))?;
        if bytes.len() > LOGO_MAX_BYTES {
            return Err(format!(
                "the logo {} grew past {LOGO_MAX_BYTES} bytes while it was read",
                path.display()
            ));
        }
        let content_type = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            "image/png"
        } else if bytes.starts_with(b"\xff\xd8\xff") {
            "image/jpeg"
        } else if looks_like_svg(&bytes) {
            "image/svg+xml"
        } else {
            return Err(format!(
                "the logo {} is not a PNG, JPEG or SVG file",
                path.display()
            ));
        };
        Ok(Some(Logo {
            bytes,
            content_type,
        }))
    }
}

/// An SVG document: UTF-8 text whose root element (after an XML declaration, comments or a
/// doctype) is `<svg`.
fn looks_like_svg(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let head: String = text.chars().take(4096).collect();
    head.contains("<svg")
        && head
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with('<')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_site_name_are_checked() {
        let mut w = WebConfig::default();
        assert!(w.check().is_ok());
        w.cookie_domain = Some("https://site.lan".into());
        assert_eq!(w.check().unwrap_err().0, "web.cookie_domain");
        w.cookie_domain = Some(".site.lan".into());
        assert_eq!(w.check().unwrap_err().0, "web.cookie_domain");
        w.cookie_domain = Some("site.lan".into());
        w.redirect_hosts = vec!["*.apps.lan".into(), "10.0.0.5".into(), "a:80".into()];
        assert_eq!(w.check().unwrap_err().0, "web.redirect_hosts[2]");
        w.redirect_hosts.pop();
        assert!(w.check().is_ok());
        w.site_name = "a\nb".into();
        assert_eq!(w.check().unwrap_err().0, "web.site_name");
    }

    #[test]
    fn the_logo_is_read_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WebConfig {
            logo: Some(dir.path().join("missing.png")),
            ..WebConfig::default()
        };
        assert!(w.load_logo().unwrap_err().contains("missing.png"));
        let png = dir.path().join("logo.png");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\nrest").unwrap();
        w.logo = Some(png);
        assert_eq!(w.load_logo().unwrap().unwrap().content_type, "image/png");
        let svg = dir.path().join("logo.svg");
        std::fs::write(
            &svg,
            "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        )
        .unwrap();
        w.logo = Some(svg);
        assert_eq!(
            w.load_logo().unwrap().unwrap().content_type,
            "image/svg+xml"
        );
        let big = dir.path().join("big.png");
        std::fs::write(&big, vec![0u8; LOGO_MAX_BYTES + 1]).unwrap();
        w.logo = Some(big);
        assert!(w.load_logo().unwrap_err().contains("at most"));
        let txt = dir.path().join("x.txt");
        std::fs::write(&txt, "hello").unwrap();
        w.logo = Some(txt);
        assert!(w.load_logo().unwrap_err().contains("not a PNG"));
    }
}
