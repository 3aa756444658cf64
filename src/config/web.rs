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
