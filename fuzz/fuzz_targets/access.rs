//! The access-rule matcher on any host, path, method and client address: never a panic, and
//! the path normalisation it relies on holds its promises (every reading starts with '/', has
//! no '//', '.' or '..' segment, and reads the same when normalised again).
#![no_main]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use edgeauth::access::{Request, Rules, path};
use edgeauth::auth::principal::{Subject, Via};
use edgeauth::config::Config;
use edgeauth::domain::AuthMode;
use libfuzzer_sys::fuzz_target;

const RULES: &str = r#"
[[access.rules]]
paths = ["/health", "/static/"]
policy = "bypass"
[[access.rules]]
networks = ["192.168.50.0/24", "fd00::/8"]
policy = "deny"
[[access.rules]]
hosts = ["pos.site.lan"]
methods = ["GET"]
roles = ["cashier"]
policy = "allow"
[[access.rules]]
hosts = ["*.site.lan"]
path_regex = "/admin(/.*)?"
groups = ["/it/admins"]
client_roles = ["wiki:admin"]
require = "all"
policy = "allow"
"#;

fn rules() -> &'static Rules {
    static RULES_ONCE: OnceLock<Rules> = OnceLock::new();
    RULES_ONCE.get_or_init(|| {
        let c = Config::parse(RULES, "fuzz.toml", Path::new("/")).unwrap_or_default();
        Rules::new(&c.access)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let (host, raw, method) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("GET"),
    );
    let ip: Option<IpAddr> = parts.next().and_then(|s| s.parse().ok());
    let (roles, groups, client_roles) = (
        vec!["cashier".to_owned()],
        vec!["/it/admins".to_owned()],
        vec!["wiki:admin".to_owned()],
    );
    let subject = Subject {
        tenant: "default",
        username: "fuzz",
        name: None,
        email: None,
        roles: &roles,
        client_roles: &client_roles,
        groups: &groups,
        auth_mode: AuthMode::Keycloak,
        via: Via::Session,
    };
    let m = rules().find(&Request { host, path: raw, method, ip });
    let _ = m.policy();
    let _ = m.decide(None).explain().to_string();
    let _ = m.decide(Some(&subject)).explain().to_string();
    if let Ok(readings) = path::readings(raw) {
        for r in &readings {
            assert!(r.starts_with('/'), "{raw:?} -> {r:?}");
            assert!(!r.contains("//"), "{raw:?} -> {r:?}");
            assert!(!r.split('/').any(|s| s == "." || s == ".."), "{raw:?} -> {r:?}");
            if !r.contains(['%', '\\', ';', '?', '#']) {
                assert_eq!(path::readings(r).as_deref(), Ok(std::slice::from_ref(r)), "{raw:?}");
            }
        }
    }
});
