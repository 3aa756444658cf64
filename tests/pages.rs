//! The browser pages of the real binary: the login form and its CSRF guard, sign-in with a
//! redirect back only to allowed places, regulation and offline messages, sign-out, password
//! change, the operators' status page, escaping, security headers and the logo.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::fake_keycloak::{FakeKeycloak, Fault};
use support::{Appliance, Reply};

const BANNER: &str =
    "central sign-in is unreachable; you are signing in with the credentials this site holds";

/// An agent that follows no redirect: the tests look at each `Location`.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A browser, as far as these pages care: a cookie jar and an `Origin` on its posts.
struct Browser<'a> {
    a: &'a Appliance,
    agent: ureq::Agent,
    cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    fn new(a: &'a Appliance) -> Self {
        Browser {
            a,
            agent: agent(),
            cookies: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(self.a.url(path));
        if !self.cookies.is_empty() {
            b = b.header("cookie", self.cookie_header());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = match body {
            Some(text) => self.agent.run(b.body(text.to_owned()).unwrap()),
            None => self.agent.run(b.body(()).unwrap()),
        }
        .unwrap();
        let status = res.status().as_u16();
        let headers: Vec<(String, String)> = res
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let pair = v.split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                self.cookies.retain(|(n, _)| n != name);
                if !v.contains("Max-Age=0") {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        let text = res.into_body().read_to_string().unwrap_or_default();
        Reply {
            status,
            headers,
            body: serde_json::Value::Null,
            text,
        }
    }

    fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, &[], None)
    }

    /// Posts a form as a browser does: urlencoded, with this appliance as `Origin`.
    fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let origin = format!("http://127.0.0.1:{}", self.a.port);
        self.post_with(path, fields, &[("origin", &origin)])
    }

    fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.send("POST", path, &h, Some(&body))
    }

    /// GET /login (with `rd`), then the CSRF token of its form.
    fn login_form(&mut self, rd: Option<&str>) -> (Reply, String) {
        let path = match rd {
            Some(rd) => format!("/login?rd={}", enc(rd)),
            None => "/login".into(),
        };
        let r = self.get(&path);
        assert_eq!(r.status, 200, "{}", r.text);
        let token = csrf_of(&r.text);
        (r, token)
    }

    /// Signs in through the form; the answer to the post.
    fn sign_in(&mut self, user: &str, password: &str, rd: Option<&str>) -> Reply {
        let (_, token) = self.login_form(None);
        let mut fields = vec![
            ("username", user),
            ("password", password),
            ("csrf", token.as_str()),
        ];
        if let Some(rd) = rd {
            fields.push(("rd", rd));
        }
        self.post("/login", &fields)
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The value of the form's hidden `csrf` field.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in:\n{html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn all_headers<'r>(r: &'r Reply, name: &str) -> Vec<&'r str> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn session_cookie(r: &Reply) -> Option<&str> {
    all_headers(r, "set-cookie")
        .into_iter()
        .find(|c| c.starts_with("edgeauth_session="))
}

fn assert_page_headers(r: &Reply) {
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/html; charset=utf-8"), "{ct}");
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script at all: {csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

fn page_appliance(extra: &str) -> Appliance {
    let mut a = Appliance::new(&format!(
        "[web]\ncookie_domain = \"site.lan\"\nredirect_hosts = [\"partner.example\"]\nsite_name = \"Corner Shop\"\n{extra}"
    ));
    a.add_user("alice", "alice-password", &["--role", "staff"]);
    a.start();
    a
}

#[test]
fn the_form_renders_with_csrf_and_security_headers() {
    let a = page_appliance("");
    let mut b = Browser::new(&a);
    let (r, token) = b.login_form(Some("https://pos.site.lan/till"));
    assert_page_headers(&r);
    let html = &r.text;
    for want in [
        "<html lang=\"en\">",
        "<form id=\"login\" method=\"post\" action=\"/login\">",
        "name=\"username\"",
        "autocomplete=\"username\"",
        "name=\"password\"",
        "autocomplete=\"current-password\"",
        "<label for=\"username\">",
        "<label for=\"password\">",
        "name=\"rd\" value=\"https://pos.site.lan/till\"",
        "Corner Shop",
        "<meta name=\"viewport\"",
    ] {
        assert!(html.contains(want), "{want} missing in:\n{html}");
    }
    assert!(!html.contains("<script"), "{html}");
    assert!(
        !html.contains("offline-banner"),
        "no Keycloak, no banner:\n{html}"
    );
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|c| c.is_ascii_hexdigit()));
    let set = all_headers(&r, "set-cookie");
    let csrf = set
        .iter()
        .find(|c| c.starts_with("edgeauth_csrf="))
        .unwrap_or_else(|| panic!("{set:?}"));
    assert!(
        csrf.starts_with(&format!("edgeauth_csrf={token};")),
        "{csrf}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(csrf.contains(attr), "{csrf}");
    }
    assert!(!csrf.contains("Domain="), "host-only: {csrf}");
    // A second visit keeps the token (two tabs both work).
    let (r2, token2) = b.login_form(None);
    assert_eq!(token2, token);
    assert!(all_headers(&r2, "set-cookie").is_empty());
    // The inline stylesheet is the one the CSP hash allows (no other style, no script).
    assert_eq!(r.text.matches("<style>").count(), 1);
}

#[test]
fn a_post_without_or_with_a_wrong_csrf_is_refused() {
    let a = page_appliance("");

    // No cookie, no token.
    let mut b = Browser::new(&a);
    let r = b.post(
        "/login",
        &[("username", "alice"), ("password", "alice-password")],
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("role=\"alert\""), "{}", r.text);
    assert!(session_cookie(&r).is_none());
    // The form is back, with a token that now works.
    let token = csrf_of(&r.text);
    let r = b.post(
        "/login",
        &[
            ("username", "alice"),
            ("password", "alice-password"),
            ("csrf", &token),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(session_cookie(&r).is_some());

    // The cookie, but a wrong or missing form token.
    let mut b = Browser::new(&a);
    b.login_form(None);
    for bad in ["", "00", &"0".repeat(64)] {
        let f: Vec<(&str, &str)> = vec![
            ("username", "alice"),
            ("password", "alice-password"),
            ("csrf", bad),
        ];
        let r = b.post("/login", &f);
        assert_eq!(r.status, 403, "{bad:?}: {}", r.text);
        assert!(session_cookie(&r).is_none());
    }

    // The right token, posted from another site (or another app under the cookie domain).
    let (_, token) = b.login_form(None);
    for origin in ["https://evil.com", "https://wiki.site.lan", "null"] {
        let r = b.post_with(
            "/login",
            &[
                ("username", "alice"),
                ("password", "alice-password"),
                ("csrf", &token),
            ],
            &[("origin", origin)],
        );
        assert_eq!(r.status, 403, "{origin}: {}", r.text);
        assert!(session_cookie(&r).is_none());
    }
    // A body that is not a form.
    let r = b.send(
        "POST",
        "/login",
        &[("content-type", "application/json")],
        Some("{\"username\":\"alice\"}"),
    );
    assert_eq!(r.status, 415, "{}", r.text);
}

#[test]
fn sign_in_sets_the_cookie_and_goes_back_to_a_safe_rd() {
    let a = page_appliance("");
    let mut b = Browser::new(&a);
    let r = b.sign_in(
        "alice",
        "alice-password",
        Some("https://pos.site.lan/till?x=1"),
    );
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("location"), Some("https://pos.site.lan/till?x=1"));
    let cookie = session_cookie(&r).unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Domain=site.lan"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // The CSRF token is rotated at sign-in.
    assert!(
        all_headers(&r, "set-cookie")
            .iter()
            .any(|c| c.starts_with("edgeauth_csrf="))
    );
    let sid = b.cookie("edgeauth_session").unwrap().to_owned();
    let s = a.check_session(&sid);
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.body["user"]["username"], "alice");

    // A same-origin path and a listed host are followed too.
    for (rd, want) in [
        ("/status", "/status"),
        (
            "https://partner.example/back",
            "https://partner.example/back",
        ),
        ("https://site.lan/", "https://site.lan/"),
    ] {
        let r = Browser::new(&a).sign_in("alice", "alice-password", Some(rd));
        assert_eq!((r.status, r.header("location")), (303, Some(want)), "{rd}");
    }

    // Without rd: the "signed in as" page, with a sign-out button.
    let mut b = Browser::new(&a);
    let r = b.sign_in("Alice", "alice-password", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("id=\"signed-in\""), "{}", r.text);
    assert!(r.text.contains("<strong>alice</strong>"), "{}", r.text);
    assert!(
        r.text
            .contains("<form id=\"logout\" method=\"post\" action=\"/logout\">")
    );
    assert!(session_cookie(&r).is_some());
    assert_page_headers(&r);
    // Back on /login while signed in: the same page, no redirect (no loop with an app).
    let r = b.get(&format!("/login?rd={}", enc("https://pos.site.lan/")));
    assert_eq!(r.status, 200);
    assert!(r.text.contains("id=\"signed-in\""), "{}", r.text);
    assert!(
        r.text.contains("href=\"https://pos.site.lan/\""),
        "{}",
        r.text
    );
}

#[test]
fn every_open_redirect_attempt_falls_back_to_the_local_page() {
    let a = page_appliance("");
    for rd in [
        "https://evil.com/",
        "http://evilsite.lan/",
        "https://site.lan.evil.com/",
        "//evil.com",
        "///evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "/.//evil.com",
        "javascript:alert(document.cookie)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://pos.site.lan@evil.com/",
        "https://user:pw@pos.site.lan/",
        "ftp://pos.site.lan/",
        "https://evil.partner.example/",
        "pos.site.lan",
        &format!("/{}", "a".repeat(3000)),
    ] {
        // Not offered on the form...
        let mut b = Browser::new(&a);
        let (form, _) = b.login_form(Some(rd));
        assert!(!form.text.contains("name=\"rd\""), "{rd}: {}", form.text);
        // ...and not followed when posted anyway.
        let r = b.sign_in("alice", "alice-password", Some(rd));
        assert_eq!(r.status, 200, "{rd}: {}", r.text);
        assert!(r.header("location").is_none(), "{rd}");
        assert!(r.text.contains("id=\"signed-in\""), "{rd}");
        assert!(!r.text.contains("evil"), "{rd}: {}", r.text);
    }
}

#[test]
fn crlf_in_rd_never_reaches_a_location_header() {
    let a = page_appliance("");
    for rd in [
        "/x\r\nSet-Cookie: evil=1",
        "/x%0d%0aSet-Cookie:%20evil=1",
        "/x%0D%0ALocation:%20https://evil.com",
        "https://pos.site.lan/\r\nX-Evil: 1",
        "https://pos.site.lan/%0aX-Evil:%201",
        "/x\nX-Evil: 1",
        "/x\u{0}",
    ] {
        let mut b = Browser::new(&a);
        let r = b.sign_in("alice", "alice-password", Some(rd));
        assert_eq!(r.status, 200, "{rd:?}: {}", r.text);
        assert!(r.header("location").is_none(), "{rd:?}");
        assert!(r.header("x-evil").is_none(), "{rd:?}");
        assert!(
            !all_headers(&r, "set-cookie")
                .iter()
                .any(|c| c.contains("evil")),
            "{rd:?}"
        );
        // Through sign-out as well.
        let token = b.cookie("edgeauth_csrf").unwrap().to_owned();
        let r = b.post("/logout", &[("csrf", &token), ("rd", rd)]);
        assert_eq!(r.status, 200, "{rd:?}: {}", r.text);
        assert!(r.header("location").is_none(), "{rd:?}");
        assert!(r.text.contains("id=\"signed-out\""));
    }
}

#[test]
fn wrong_credentials_then_regulation_with_the_wait() {
    let a = page_appliance("[regulation]\nmax_retries = 3\nban_time = \"4m\"\n");
    let mut b = Browser::new(&a);
    let wrong = b.sign_in("alice", "not-her-password", None);
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(wrong.text.contains("role=\"alert\""), "{}", wrong.text);
    assert!(
        wrong.text.contains("Wrong username or password."),
        "{}",
        wrong.text
    );
    // The username is kept, the password is not.
    assert!(wrong.text.contains("value=\"alice\""), "{}", wrong.text);
    assert!(!wrong.text.contains("not-her-password"));
    // An unknown user reads the same (no user enumeration).
    let unknown = Browser::new(&a).sign_in("mallory", "whatever-password", None);
    assert_eq!(unknown.status, 401);
    assert!(unknown.text.contains("Wrong username or password."));

    let mut last = None;
    for _ in 0..4 {
        let r = b.sign_in("alice", "not-her-password", None);
        if r.status == 429 {
            last = Some(r);
            break;
        }
    }
    let r = last.expect("a ban after max_retries");
    assert!(
        r.text
            .contains("Too many attempts; try again in 4 minutes."),
        "{}",
        r.text
    );
    assert!(r.text.contains("role=\"alert\""));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((181..=240).contains(&retry), "{retry}");
    // While banned, even the right password gets the wait, not a session.
    let r = b.sign_in("alice", "alice-password", None);
    assert_eq!(r.status, 429);
    assert!(session_cookie(&r).is_none());

    // A disabled account says so.
    a.add_user("dora", "dora-password", &[]);
    assert!(a.cli(&["user", "disable", "dora"], None).status.success());
    let r = Browser::new(&a).sign_in("dora", "dora-password", None);
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("This account is disabled."), "{}", r.text);
}

/// The markup is there as text: `&lt;script&gt;` or `&#60;script&#62;`.
fn escaped(html: &str) -> bool {
    html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;")
}

#[test]
fn a_username_with_markup_is_escaped() {
    let a = page_appliance("");
    let evil = "\"><script>alert(1)<x";
    // Echoed back in the form after a failed sign-in.
    let r = Browser::new(&a).sign_in(evil, "whatever-password", None);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(!r.text.contains("<script>"), "{}", r.text);
    assert!(escaped(&r.text), "{}", r.text);
    // And a real account with such a name, on the signed-in page.
    let name = "\"><script>alert(1)<";
    a.add_user(name, "script-password", &[]);
    let r = Browser::new(&a).sign_in(name, "script-password", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("id=\"signed-in\""));
    assert!(!r.text.contains("<script>"), "{}", r.text);
    assert!(escaped(&r.text), "{}", r.text);
}

#[test]
fn sign_out() {
    let a = page_appliance("");
    let mut b = Browser::new(&a);
    assert_eq!(b.sign_in("alice", "alice-password", None).status, 200);
    let sid = b.cookie("edgeauth_session").unwrap().to_owned();

    // GET shows a form and ends nothing.
    let r = b.get(&format!("/logout?rd={}", enc("https://pos.site.lan/")));
    assert_eq!(r.status, 200);
    assert_page_headers(&r);
    assert!(
        r.text
            .contains("<form id=\"logout\" method=\"post\" action=\"/logout\">")
    );
    assert!(r.text.contains("<strong>alice</strong>"), "{}", r.text);
    assert!(
        r.text
            .contains("name=\"rd\" value=\"https://pos.site.lan/\"")
    );
    assert_eq!(a.check_session(&sid).status, 200);

    // A post without the token ends nothing.
    let r = b.post("/logout", &[("csrf", "")]);
    assert_eq!(r.status, 403);
    assert_eq!(a.check_session(&sid).status, 200);

    // With it: the session ends, the cookie is cleared, "signed out".
    let token = csrf_of(&r.text);
    let r = b.post("/logout", &[("csrf", &token)]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("id=\"signed-out\""), "{}", r.text);
    let cleared = session_cookie(&r).unwrap();
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("Domain=site.lan"),
        "{cleared}"
    );
    assert_eq!(a.check_session(&sid).status, 401);

    // With a safe rd: a 303 there.
    let mut b = Browser::new(&a);
    assert_eq!(b.sign_in("alice", "alice-password", None).status, 200);
    let sid = b.cookie("edgeauth_session").unwrap().to_owned();
    let token = b.cookie("edgeauth_csrf").unwrap().to_owned();
    let r = b.post(
        "/logout",
        &[("csrf", &token), ("rd", "https://pos.site.lan/bye")],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("location"), Some("https://pos.site.lan/bye"));
    assert_eq!(a.check_session(&sid).status, 401);
}

#[test]
fn password_change() {
    let a = page_appliance("");
    let mut b = Browser::new(&a);
    let r = b.get("/password");
    assert_eq!(r.status, 200);
    assert_page_headers(&r);
    for want in [
        "autocomplete=\"current-password\"",
        "autocomplete=\"new-password\"",
        "name=\"confirm\"",
        "<label for=\"new\">",
    ] {
        assert!(r.text.contains(want), "{want}: {}", r.text);
    }
    let token = csrf_of(&r.text);
    let change = |b: &mut Browser, current: &str, new: &str, confirm: &str| {
        b.post(
            "/password",
            &[
                ("username", "alice"),
                ("current", current),
                ("new", new),
                ("confirm", confirm),
                ("csrf", &token),
            ],
        )
    };
    let r = change(&mut b, "alice-password", "new-alice-pw", "other-alice-pw");
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("role=\"alert\""));
    let r = change(&mut b, "wrong-password", "new-alice-pw", "new-alice-pw");
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("Wrong username or password."));
    let r = change(&mut b, "alice-password", "short", "short");
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("at least 8 characters"), "{}", r.text);
    let r = b.post(
        "/password",
        &[
            ("username", "alice"),
            ("current", "alice-password"),
            ("new", "new-alice-pw"),
            ("confirm", "new-alice-pw"),
        ],
    );
    assert_eq!(r.status, 403, "no token: {}", r.text);
    let r = change(&mut b, "alice-password", "new-alice-pw", "new-alice-pw");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("id=\"password-changed\""), "{}", r.text);
    assert!(r.text.contains("data-mode=\"local_only\""), "{}", r.text);
    assert!(r.text.contains("kept at this site only"), "{}", r.text);
    assert_eq!(a.login("alice", "new-alice-pw").status, 200);
    assert_eq!(a.login("alice", "alice-password").status, 401);
}

#[test]
fn status_is_for_operators_only() {
    let a = page_appliance("");
    a.add_user("olga", "olga-password", &["--role", "edgeauth-operator"]);
    // Loopback, no proxy in between: an operator.
    let mut b = Browser::new(&a);
    let r = b.get("/status");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_page_headers(&r);
    for want in [
        "<meta http-equiv=\"refresh\" content=\"10\">",
        "class=\"mode mode-normal\"",
        ">NORMAL<",
        "local users only",
        "Sessions by auth mode",
        "Sync queue",
        "id=\"alerts\"",
    ] {
        assert!(r.text.contains(want), "{want}: {}", r.text);
    }
    // Through a proxy (any forwarding header) and not signed in: the login page first.
    let proxied = [("x-forwarded-for", "10.1.1.1")];
    let r = b.send("GET", "/status", &proxied, None);
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("location"), Some("/login?rd=%2Fstatus"));
    // Signed in without the operator role: refused.
    assert_eq!(b.sign_in("alice", "alice-password", None).status, 200);
    let r = b.send("GET", "/status", &proxied, None);
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("Operators only"));
    // An operator's session: shown.
    let mut o = Browser::new(&a);
    assert_eq!(o.sign_in("olga", "olga-password", None).status, 200);
    let r = o.send("GET", "/status", &proxied, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(">NORMAL<"));
}

#[test]
fn the_logo_is_served_from_memory_and_a_bad_one_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("logo.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n-not-really-a-picture-").unwrap();
    let a = page_appliance(&format!("logo = \"{}\"\n", png.display()));
    // Read once at start: removing the file changes nothing.
    std::fs::remove_file(&png).unwrap();
    let mut b = Browser::new(&a);
    let r = b.get("/static/logo");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("sandbox")
    );
    let (form, _) = b.login_form(None);
    assert!(
        form.text.contains("<img src=\"/static/logo\" alt=\"\">"),
        "{}",
        form.text
    );

    // Missing or oversized: a config error naming web.logo, before anything starts.
    for (file, bytes) in [
        ("missing.png", None),
        ("big.png", Some(vec![0u8; 300 * 1024])),
    ] {
        let path = dir.path().join(file);
        if let Some(b) = bytes {
            std::fs::write(&path, b).unwrap();
        }
        let c = Appliance::new(&format!("[web]\nlogo = \"{}\"\n", path.display()));
        let out = c.cli(&["serve"], None);
        assert!(!out.status.success());
        let err = support::stderr(&out);
        assert!(err.contains("web.logo") && err.contains(file), "{err}");
    }
    // Without a logo, none is served.
    let c = page_appliance("");
    assert_eq!(Browser::new(&c).get("/static/logo").status, 404);
}

#[test]
fn the_offline_banner_shows_while_keycloak_is_unreachable() {
    let kc = FakeKeycloak::start();
    kc.add_user("kim", "kim-password", &["staff"], &[], &[]);
    let mut a = support::appliance(&kc, "");
    a.add_user("alice", "alice-password", &[]);
    a.start();
    support::wait_status(&a, "online");
    let mut b = Browser::new(&a);
    let (r, _) = b.login_form(None);
    assert!(!r.text.contains("offline-banner"), "{}", r.text);
    // Kim signs in online once, so the site holds her credentials.
    let r = b.sign_in("kim", "kim-password", None);
    assert_eq!(r.status, 200, "{}", r.text);

    kc.set_fault(Fault::Refused);
    let started = Instant::now();
    let r = loop {
        let (r, _) = Browser::new(&a).login_form(None);
        if r.text.contains("offline-banner") {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no banner: {}",
            r.text
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        r.text.contains(&format!(
            "<p class=\"banner\" id=\"offline-banner\">{BANNER}</p>"
        )),
        "{}",
        r.text
    );
    // Signing in still works, from the credentials this site holds.
    let mut k = Browser::new(&a);
    let r = k.sign_in("kim", "kim-password", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("id=\"signed-in\""));
    assert!(
        r.text
            .contains("you are signed in with the credentials this site holds")
    );
    // A password change is queued until central sign-in is back, and says so.
    let r = k.get("/password");
    assert!(r.text.contains("value=\"kim\""), "{}", r.text);
    let token = csrf_of(&r.text);
    let r = k.post(
        "/password",
        &[
            ("username", "kim"),
            ("current", "kim-password"),
            ("new", "kim-new-password"),
            ("confirm", "kim-new-password"),
            ("csrf", &token),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("data-mode=\"local_only_queued\""),
        "{}",
        r.text
    );
    assert!(r.text.contains("waits in a queue"), "{}", r.text);
    // The status page shows the mode in words, with since when.
    let r = Browser::new(&a).get("/status");
    assert!(r.text.contains(">OFFLINE<"), "{}", r.text);
    assert!(r.text.contains("class=\"mode mode-offline\""));
    assert!(r.text.contains("id=\"mode-since\""), "{}", r.text);
    kc.set_fault(Fault::None);
}
