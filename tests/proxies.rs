#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! edgeauth behind the real proxies: Debian's nginx with `auth_request` and Caddy with
//! `forward_auth` (both from `scripts/tools.sh`), configured with the snippets the README
//! shows (`dist/nginx/edgeauth.conf`, `dist/caddy/Caddyfile`, placeholders filled in), in front of two echo apps (`pos.site.lan`, `wiki.site.lan`), with local users (no
//! Keycloak needed). The tests speak raw HTTP to the proxy, as a browser or an API client
//! would, with any `Host` and any forged header.
//!
//! `scripts/test.sh` runs this target after `scripts/tools.sh`; without the tools every test
//! fails and says so (never skipped).

mod support;

use support::echo_app::EchoApp;
use support::proxies::{AUTH, Answer, POS, Proxy, WIKI, caddy_site, get, nginx_site, site_config};
use support::{Appliance, free_port};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Nginx,
    Caddy,
}

/// The whole site: edgeauth with alice (staff) and carol (no role), two apps, one proxy.
struct Site {
    a: Appliance,
    _pos: EchoApp,
    _wiki: EchoApp,
    proxy: Proxy,
}

impl Site {
    fn start(kind: Kind) -> Site {
        let port = free_port();
        let mut a = Appliance::new(&site_config(port));
        a.add_user("alice", "alice-password-1", &["--role", "staff"]);
        a.add_user("carol", "carol-password-1", &[]);
        a.start();
        let (pos, wiki) = (EchoApp::start("pos"), EchoApp::start("wiki"));
        let edgeauth = format!("127.0.0.1:{}", a.port);
        let proxy = match kind {
            Kind::Nginx => nginx_site(port, &edgeauth, &[(POS, &pos.addr()), (WIKI, &wiki.addr())]),
            Kind::Caddy => caddy_site(port, &edgeauth, &[(POS, &pos.addr()), (WIKI, &wiki.addr())]),
        };
        Site {
            a,
            _pos: pos,
            _wiki: wiki,
            proxy,
        }
    }

    /// The `Cookie` header of a JSON sign-in.
    fn cookie(&self, user: &str, password: &str) -> String {
        format!("edgeauth_session={}", self.a.session_id(user, password))
    }

    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        get(
            self.proxy.port,
            &format!("{host}:{}", self.proxy.port),
            path,
            headers,
        )
    }

    /// Context for a failed assertion: both logs.
    fn logs(&self) -> String {
        format!(
            "--- proxy log\n{}\n--- edgeauth log\n{}",
            self.proxy.log(),
            self.a.log()
        )
    }

    /// The login URL the proxy must send a browser to for `path` on `host`.
    fn login_for(&self, host: &str, path: &str) -> String {
        let rd: String = format!("http://{host}:{}{path}", self.proxy.port)
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("http://{AUTH}:{}/login?rd={rd}", self.proxy.port)
    }
}

const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
const API: (&str, &str) = ("accept", "application/json");

/// The app answered (not the proxy or edgeauth), and it was told `user`.
fn assert_app_saw(site: &Site, r: &Answer, app: &str, user: Option<&str>) {
    assert_eq!(r.status, 200, "{r:?}\n{}", site.logs());
    assert_eq!(r.header("x-echo-app"), Some(app), "{r:?}");
    assert_eq!(
        r.headers_named("x-echo-remote-user"),
        user.into_iter().collect::<Vec<_>>(),
        "{r:?}"
    );
}

fn not_signed_in_is_sent_to_the_login_page(site: &Site, accept: (&str, &str)) {
    let r = site.get(POS, "/till?x=1", &[accept]);
    assert_eq!(r.status, 302, "{r:?}\n{}", site.logs());
    assert_eq!(
        r.header("location"),
        Some(site.login_for(POS, "/till?x=1").as_str()),
        "{r:?}"
    );
    assert_eq!(
        r.header("x-echo-app"),
        None,
        "the app was not reached: {r:?}"
    );
}

fn an_api_client_gets_401(site: &Site) {
    let r = site.get(POS, "/till", &[API]);
    assert_eq!(r.status, 401, "{r:?}\n{}", site.logs());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );
    assert_eq!(r.header("location"), None, "{r:?}");
    assert_eq!(r.header("x-echo-app"), None, "{r:?}");
}

fn signed_in_reaches_both_apps_with_identity_headers(site: &Site) {
    let cookie = site.cookie("alice", "alice-password-1");
    for (host, app) in [(POS, "pos"), (WIKI, "wiki")] {
        let r = site.get(host, "/till", &[BROWSER, ("cookie", &cookie)]);
        assert_app_saw(site, &r, app, Some("alice"));
        assert!(
            r.body.contains("<strong id=\"user\">alice</strong>"),
            "{r:?}"
        );
        assert_eq!(r.header("x-echo-remote-auth-mode"), Some("local"), "{r:?}");
        assert_eq!(
            r.header("x-echo-remote-keycloak-status"),
            Some("disabled"),
            "{r:?}"
        );
        assert!(
            r.header("x-echo-remote-roles")
                .is_some_and(|v| v.split(',').any(|r| r.trim() == "staff")),
            "{r:?}"
        );
    }
}

fn a_denied_user_gets_403(site: &Site) {
    let cookie = site.cookie("carol", "carol-password-1");
    let r = site.get(WIKI, "/page", &[BROWSER, ("cookie", &cookie)]);
    assert_eq!(r.status, 403, "{r:?}\n{}", site.logs());
    assert_eq!(r.header("x-echo-app"), None, "{r:?}");
    // The default policy lets any signed-in user into pos.
    let r = site.get(POS, "/till", &[BROWSER, ("cookie", &cookie)]);
    assert_app_saw(site, &r, "pos", Some("carol"));
}

fn bypass_paths_need_no_sign_in_and_carry_no_identity(site: &Site) {
    let r = site.get(POS, "/health", &[API]);
    assert_app_saw(site, &r, "pos", None);
    // A forged identity on a public path does not reach the app either.
    let r = site.get(POS, "/health", &[API, ("remote-user", "admin")]);
    assert_app_saw(site, &r, "pos", None);
}

fn a_forged_remote_user_never_reaches_the_app(site: &Site) {
    // Not signed in: the forged header is no sign-in.
    let r = site.get(
        POS,
        "/till",
        &[BROWSER, ("remote-user", "alice"), ("remote-roles", "staff")],
    );
    assert_eq!(r.status, 302, "{r:?}\n{}", site.logs());
    // Signed in as carol, claiming alice: the app hears carol, once, and no forged roles.
    let cookie = site.cookie("carol", "carol-password-1");
    let r = site.get(
        POS,
        "/till",
        &[
            BROWSER,
            ("cookie", &cookie),
            ("remote-user", "alice"),
            ("Remote-User", "alice"),
            ("remote-roles", "staff"),
        ],
    );
    assert_app_saw(site, &r, "pos", Some("carol"));
    assert!(
        r.headers_named("x-echo-remote-roles")
            .iter()
            .all(|v| !v.contains("staff")),
        "{r:?}"
    );
    // And the wiki (staff only) stays closed to her.
    let r = site.get(
        WIKI,
        "/",
        &[BROWSER, ("cookie", &cookie), ("remote-roles", "staff")],
    );
    assert_eq!(r.status, 403, "{r:?}");
}

fn spoofed_forwarding_headers_do_not_help(site: &Site) {
    let forged = [
        BROWSER,
        ("x-forwarded-uri", "/health"),
        ("x-forwarded-host", POS),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "http"),
        ("x-original-url", "http://pos.site.lan/health"),
        ("x-original-method", "GET"),
        // The network that a rule lets in without sign-in.
        ("x-forwarded-for", "10.9.9.9"),
        ("x-real-ip", "10.9.9.9"),
    ];
    let r = site.get(POS, "/till", &forged);
    assert_eq!(r.status, 302, "{r:?}\n{}", site.logs());
    assert_eq!(
        r.header("location"),
        Some(site.login_for(POS, "/till").as_str())
    );
    // A denied user cannot claim another host or path either.
    let cookie = site.cookie("carol", "carol-password-1");
    let mut with_cookie = forged.to_vec();
    with_cookie.push(("cookie", &cookie));
    let r = site.get(WIKI, "/page", &with_cookie);
    assert_eq!(r.status, 403, "{r:?}\n{}", site.logs());
}

#[test]
fn nginx_auth_request_in_front_of_two_apps() {
    let site = Site::start(Kind::Nginx);
    // nginx cannot follow a redirect from auth_request: edgeauth's 401 + Location becomes a
    // 302 through error_page for a browser; an API client keeps the 401 and its challenge.
    not_signed_in_is_sent_to_the_login_page(&site, BROWSER);
    an_api_client_gets_401(&site);
    signed_in_reaches_both_apps_with_identity_headers(&site);
    a_denied_user_gets_403(&site);
    bypass_paths_need_no_sign_in_and_carry_no_identity(&site);
    a_forged_remote_user_never_reaches_the_app(&site);
    spoofed_forwarding_headers_do_not_help(&site);
    // The login page is reachable through the proxy at auth.site.lan.
    let r = site.get(AUTH, "/healthz", &[]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn caddy_forward_auth_in_front_of_two_apps() {
    let site = Site::start(Kind::Caddy);
    // A browser is redirected; an API client gets 401 with a challenge.
    not_signed_in_is_sent_to_the_login_page(&site, BROWSER);
    an_api_client_gets_401(&site);
    signed_in_reaches_both_apps_with_identity_headers(&site);
    a_denied_user_gets_403(&site);
    bypass_paths_need_no_sign_in_and_carry_no_identity(&site);
    a_forged_remote_user_never_reaches_the_app(&site);
    spoofed_forwarding_headers_do_not_help(&site);
}
