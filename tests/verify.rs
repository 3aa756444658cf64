//! Forward-auth (`GET/HEAD /api/v1/verify`) against the real binary: the nginx and the
//! Caddy/Traefik dialects, trusted and untrusted peers, identity headers, hostile input, and
//! HTTP Basic (right, wrong, cached, regulated, offline) with the fake Keycloak.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use support::fake_keycloak::{FakeKeycloak, Fault};
use support::{Appliance, online, wait_status};

/// The proxy's address (127.0.0.1 stays the operator's, for the status checks).
const PROXY: &str = "127.0.0.3";

/// The config every test starts from: a proxy on 127.0.0.3, browsers reach edgeauth at
/// https://auth.site.lan, the cookie covers site.lan.
const BASE: &str = "[server]\ntrusted_proxies = [\"127.0.0.3/32\"]\n\
    [web]\npublic_url = \"https://auth.site.lan\"\ncookie_domain = \"site.lan\"\n";

struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn headers_named(&self, name: &str) -> usize {
        self.head
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .count()
    }
    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body).unwrap_or(Value::Null)["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// A TCP connection to the appliance from the loopback address `from` ([`PROXY`] is the
/// trusted proxy; 127.0.0.2 is not).
fn connect_from(from: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse::<SocketAddr>().unwrap())
            .unwrap();
        let s = sock
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s
    })
}

/// Sends `bytes` as is and reads the answer to the end (the request says Connection: close).
fn send(a: &Appliance, from: &str, bytes: &[u8]) -> Raw {
    let mut s = connect_from(from, a.port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Raw {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn verify_as(a: &Appliance, from: &str, method: &str, headers: &[(&str, &str)]) -> Raw {
    let mut req =
        format!("{method} /api/v1/verify HTTP/1.1\r\nHost: auth.site.lan\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    send(a, from, req.as_bytes())
}

/// From the trusted proxy.
fn verify(a: &Appliance, headers: &[(&str, &str)]) -> Raw {
    verify_as(a, PROXY, "GET", headers)
}

const NGINX: [(&str, &str); 3] = [
    ("X-Original-URL", "https://pos.site.lan/till?open=1"),
    ("X-Original-Method", "GET"),
    ("X-Forwarded-For", "10.1.2.3"),
];

fn forwarded(method: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "wiki.site.lan"),
        ("X-Forwarded-Uri", "/page/1?x=y"),
        ("X-Forwarded-For", "10.1.2.3"),
    ]
}

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

const BROWSER: (&str, &str) = ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8");
const API: (&str, &str) = ("Accept", "application/json");

fn local_appliance(extra: &str) -> Appliance {
    let mut a = Appliance::new(&format!("{BASE}{extra}"));
    a.add_user(
        "alice",
        "alice-password",
        &["--role", "staff", "--role", "till", "--group", "front-desk"],
    );
    a.start();
    a
}

fn cookie(a: &Appliance, user: &str, password: &str) -> String {
    format!("edgeauth_session={}", a.session_id(user, password))
}

const LOGIN: &str = "https://auth.site.lan/login?rd=";

#[test]
fn nginx_dialect_answers() {
    let a = local_appliance("");
    let c = cookie(&a, "alice", "alice-password");

    let ok = verify(&a, &with(&NGINX, &[("Cookie", &c)]));
    assert_eq!(ok.status, 200, "{}\n{}", ok.head, ok.body);
    assert_eq!(ok.header("remote-user"), Some("alice"));
    assert_eq!(ok.header("remote-roles"), Some("staff,till"));
    assert_eq!(ok.header("remote-groups"), Some("front-desk"));
    assert_eq!(ok.header("remote-auth-mode"), Some("local"));
    assert_eq!(ok.header("remote-keycloak-status"), Some("disabled"));
    assert_eq!(ok.header("remote-tenant"), Some("default"));
    assert_eq!(ok.header("remote-via"), Some("session"));
    assert_eq!(ok.header("remote-email"), None, "a local user has no email");
    assert_eq!(ok.header("location"), None);

    // A browser that is not signed in: 401 and the login URL for nginx's error_page.
    let r = verify(&a, &with(&NGINX, &[BROWSER]));
    assert_eq!((r.status, r.code().as_str()), (401, "sign_in_required"));
    assert_eq!(
        r.header("location"),
        Some(format!("{LOGIN}https%3A%2F%2Fpos.site.lan%2Ftill%3Fopen%3D1").as_str())
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"edgeauth\"")
    );
    assert_eq!(r.header("remote-user"), None);
    // An API client: 401 and no login URL (nginx then answers it 401, not a redirect).
    let r = verify(&a, &with(&NGINX, &[API]));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("location"), None);
    assert!(r.header("www-authenticate").is_some());
    // An XHR from a page is not sent to a login page either.
    let r = verify(
        &a,
        &with(&NGINX, &[BROWSER, ("X-Requested-With", "XMLHttpRequest")]),
    );
    assert_eq!((r.status, r.header("location")), (401, None));

    // HEAD: the same answer without a body.
    let h = verify_as(&a, PROXY, "HEAD", &with(&NGINX, &[("Cookie", &c)]));
    assert_eq!(h.status, 200);
    assert_eq!(h.header("remote-user"), Some("alice"));
    let h = verify_as(&a, PROXY, "HEAD", &with(&NGINX, &[BROWSER]));
    assert_eq!(h.status, 401);
    assert!(h.header("location").unwrap().starts_with(LOGIN));
    assert_eq!(h.body, "", "HEAD has no body");

    // After logout the same cookie is refused.
    let sid = c.trim_start_matches("edgeauth_session=");
    let out = a.request(
        "POST",
        "/api/v1/logout",
        &[("authorization", &format!("Bearer {sid}"))],
        None,
    );
    assert_eq!(out.status, 200);
    let r = verify(&a, &with(&NGINX, &[("Cookie", &c), API]));
    assert_eq!(r.status, 401);
    // A bearer works like the cookie.
    let sid = a.session_id("alice", "alice-password");
    let r = verify(
        &a,
        &with(&NGINX, &[("Authorization", &format!("Bearer {sid}"))]),
    );
    assert_eq!((r.status, r.header("remote-user")), (200, Some("alice")));
    // The access log names the sign-in, never the cookie.
    let log = a.log();
    assert!(log.contains("GET /api/v1/verify 401"), "{log}");
    assert!(!log.contains(&sid), "{log}");
}

#[test]
fn caddy_and_traefik_dialect_answers() {
    let a = local_appliance("");
    let c = cookie(&a, "alice", "alice-password");
    let rd = format!("{LOGIN}https%3A%2F%2Fwiki.site.lan%2Fpage%2F1%3Fx%3Dy");

    let ok = verify(&a, &with(&forwarded("GET"), &[("Cookie", &c)]));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("remote-user"), Some("alice"));

    // A browser: 302 to the login page with the way back; 303 after a POST.
    let r = verify(&a, &with(&forwarded("GET"), &[BROWSER]));
    assert_eq!((r.status, r.header("location")), (302, Some(rd.as_str())));
    let r = verify(&a, &with(&forwarded("POST"), &[BROWSER]));
    assert_eq!((r.status, r.header("location")), (303, Some(rd.as_str())));
    // An API client: 401 with WWW-Authenticate, JSON like the rest of the API.
    let r = verify(&a, &with(&forwarded("GET"), &[API]));
    assert_eq!((r.status, r.code().as_str()), (401, "sign_in_required"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"edgeauth\"")
    );
    assert_eq!(r.header("location"), None);
    // HEAD
    let h = verify_as(&a, PROXY, "HEAD", &with(&forwarded("GET"), &[BROWSER]));
    assert_eq!((h.status, h.header("location")), (302, Some(rd.as_str())));
    let h = verify_as(
        &a,
        PROXY,
        "HEAD",
        &with(&forwarded("GET"), &[("Cookie", &c)]),
    );
    assert_eq!((h.status, h.header("remote-user")), (200, Some("alice")));
    assert_eq!(h.body, "");
}

#[test]
fn only_a_trusted_proxy_describes_the_request() {
    let a = local_appliance("");
    let c = cookie(&a, "alice", "alice-password");
    // 127.0.0.2 is not in trusted_proxies: whatever it describes is not believed, even with a
    // valid session, and it learns no identity.
    for headers in [
        with(&NGINX, &[("Cookie", &c)]),
        with(&forwarded("GET"), &[("Cookie", &c)]),
        vec![("X-Original-URL", "https://pos.site.lan/"), ("Cookie", &c)],
        vec![("X-Forwarded-Uri", "/"), ("Cookie", &c)],
    ] {
        let r = verify_as(&a, "127.0.0.2", "GET", &headers);
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "untrusted_proxy"),
            "{headers:?}"
        );
        assert_eq!(r.header("remote-user"), None);
    }
    // Without any description there is nothing to decide on, from anyone.
    let r = verify_as(&a, "127.0.0.2", "GET", &[("Cookie", &c)]);
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    let r = verify(&a, &[("Cookie", &c)]);
    assert_eq!(r.status, 400);

    // Through the trusted proxy, spoofed identity and forwarding headers grant nothing.
    let spoofed = [
        ("Remote-User", "admin"),
        ("Remote-Groups", "admins"),
        ("X-Forwarded-User", "admin"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("Forwarded", "for=127.0.0.1"),
        API,
    ];
    let r = verify(&a, &with(&NGINX, &spoofed));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("remote-user"), None);
    // A client's X-Original-URL passed on by Caddy or Traefik next to their X-Forwarded-*: which
    // describes the request cannot be told, so neither does.
    let r = verify(
        &a,
        &with(
            &forwarded("GET"),
            &[
                ("X-Original-URL", "https://public.site.lan/"),
                ("X-Original-Method", "GET"),
                ("Cookie", &c),
            ],
        ),
    );
    assert_eq!((r.status, r.header("remote-user")), (400, None));
    // A malformed forwarded address is refused, not taken as the proxy's.
    let r = verify(
        &a,
        &[
            ("X-Original-URL", "https://pos.site.lan/"),
            ("X-Original-Method", "GET"),
            ("X-Forwarded-For", "not-an-ip"),
            ("Cookie", &c),
        ],
    );
    assert_eq!(r.status, 400);
}

#[test]
fn hostile_input_is_refused_and_never_echoed() {
    let a = local_appliance("[forward_auth]\nbasic = true\n");
    let c = cookie(&a, "alice", "alice-password");

    // CR/LF in the original URL: hyper refuses the header itself; percent-encoded, it stays
    // encoded in the login URL; raw non-ASCII or spaces are refused.
    let r = send(
        &a,
        PROXY,
        b"GET /api/v1/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Original-URL: https://pos/\rSet-Cookie: a=b\r\nX-Original-Method: GET\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.head);
    assert_eq!(r.headers_named("set-cookie"), 0);
    let r = verify(
        &a,
        &[
            (
                "X-Original-URL",
                "https://pos.site.lan/%0d%0aSet-Cookie:%20a=b",
            ),
            ("X-Original-Method", "GET"),
            BROWSER,
        ],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.headers_named("set-cookie"), 0);
    assert!(
        r.header("location")
            .unwrap()
            .contains("%250d%250aSet-Cookie")
    );
    for (url, method) in [
        ("https://pos.site.lan/a b", "GET"),
        ("https://pos.site.lan/é", "GET"),
        ("https://evil@pos.site.lan/", "GET"),
        ("pos.site.lan/", "GET"),
        ("https://pos.site.lan/", "GET\tX"),
    ] {
        let r = verify(
            &a,
            &[
                ("X-Original-URL", url),
                ("X-Original-Method", method),
                ("Cookie", &c),
            ],
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "{url:?}"
        );
        assert_eq!(r.header("remote-user"), None);
    }

    // A username with CR/LF in Basic credentials: refused, never echoed into a header.
    let b64 = |s: &str| base64_encode(s.as_bytes());
    let evil = format!(
        "Basic {}",
        b64("alice\r\nRemote-User: admin:alice-password")
    );
    let r = verify(&a, &with(&NGINX, &[("Authorization", &evil)]));
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_credentials"));
    assert!(!r.head.contains("admin"), "{}", r.head);
    assert_eq!(r.header("remote-user"), None);

    // Forged and mangled cookies: 401, not 500.
    for bad in [
        format!("edgeauth_session=eas_{}", "0".repeat(64)),
        format!("edgeauth_session=eas_{}", "g".repeat(64)),
        "edgeauth_session=eas_".to_owned(),
        format!(
            "edgeauth_session={}",
            c.trim_start_matches("edgeauth_session=").to_uppercase()
        ),
        format!("{c}x"),
        "edgeauth_session=\"\"".to_owned(),
        "edgeauth_session=%00%0d%0a".to_owned(),
    ] {
        let r = verify(&a, &with(&NGINX, &[("Cookie", &bad), API]));
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "sign_in_required"),
            "{bad}"
        );
    }

    // An oversized cookie: 431 from the listener, as JSON; a large one within the limit: 401.
    let huge = format!("edgeauth_session={}", "a".repeat(256 * 1024));
    let r = verify(&a, &with(&NGINX, &[("Cookie", &huge)]));
    assert_eq!(
        (r.status, r.code().as_str()),
        (431, "headers_too_large"),
        "{}",
        r.head
    );
    let big = format!("edgeauth_session={}", "a".repeat(40 * 1024));
    let r = verify(&a, &with(&NGINX, &[("Cookie", &big), API]));
    assert_eq!(r.status, 401);
    // Too many headers: 431 as well.
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = verify(&a, &with(&NGINX, &refs));
    assert_eq!(r.status, 431);
    // The appliance is still serving.
    let r = verify(&a, &with(&NGINX, &[("Cookie", &c)]));
    assert_eq!(r.status, 200);
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

#[test]
fn basic_is_off_unless_configured() {
    let a = local_appliance("");
    let r = verify(
        &a,
        &with(
            &NGINX,
            &[("Authorization", &basic("alice", "alice-password")), API],
        ),
    );
    assert_eq!((r.status, r.code().as_str()), (401, "sign_in_required"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"edgeauth\"")
    );
}

#[test]
fn basic_local_right_wrong_regulated() {
    let a = local_appliance("[forward_auth]\nbasic = true\n[regulation]\nmax_retries = 3\n");
    let right = basic("alice", "alice-password");
    let r = verify(&a, &with(&forwarded("GET"), &[("Authorization", &right)]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("remote-user"), Some("alice"));
    assert_eq!(r.header("remote-via"), Some("basic"));
    assert_eq!(r.header("remote-auth-mode"), Some("local"));
    // Basic makes no session.
    assert_eq!(
        support::status(&a)["sessions"]["active"],
        0,
        "{}",
        support::status(&a)
    );

    // Wrong: 401 with a Basic challenge (first, for devices that read only one).
    let wrong = basic("alice", "not-her-password");
    let r = verify(
        &a,
        &with(&forwarded("GET"), &[("Authorization", &wrong), BROWSER]),
    );
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_credentials"));
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Basic realm=\"edgeauth\""),
        "{}",
        r.head
    );
    // An API client that is not signed in is told Basic is possible too.
    let r = verify(&a, &with(&forwarded("GET"), &[API]));
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));

    // Two more wrong ones ban alice (max_retries = 3): even the right password is refused,
    // 429 with Retry-After for Caddy/Traefik, 401 for nginx (which passes on only 401/403).
    for _ in 0..2 {
        let r = verify(&a, &with(&forwarded("GET"), &[("Authorization", &wrong)]));
        assert!(matches!(r.status, 401 | 429), "{}", r.body);
    }
    let r = verify(&a, &with(&forwarded("GET"), &[("Authorization", &right)]));
    assert_eq!((r.status, r.code().as_str()), (429, "too_many_attempts"));
    assert!(r.header("retry-after").is_some());
    let r = verify(&a, &with(&NGINX, &[("Authorization", &right)]));
    assert_eq!((r.status, r.code().as_str()), (401, "too_many_attempts"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("remote-user"), None);
    // A cached credential of a user disabled here ends at once (a hit still reads the user).
    let a = local_appliance("[forward_auth]\nbasic = true\n");
    let r = verify(&a, &with(&NGINX, &[("Authorization", &right)]));
    assert_eq!(r.status, 200);
    assert!(a.cli(&["user", "disable", "alice"], None).status.success());
    let r = verify(&a, &with(&NGINX, &[("Authorization", &right)]));
    assert_eq!((r.status, r.code().as_str()), (403, "account_disabled"));
    // Never a password in the log.
    let log = a.log();
    assert!(!log.contains("alice-password") && !log.contains("not-her-password"));
}

#[test]
fn basic_through_keycloak_is_cached_and_wrong_is_never_cached() {
    let kc = FakeKeycloak::start();
    kc.add_user("dev", "dev-password", &["scanner"], &[], &["devices"]);
    let a = online(
        &kc,
        &format!("{BASE}[forward_auth]\nbasic = true\nbasic_cache_ttl = \"60s\"\n"),
    );
    kc.reset_counters();
    let right = basic("dev", "dev-password");
    let r = verify(&a, &with(&NGINX, &[("Authorization", &right)]));
    assert_eq!(r.status, 200, "{}\n{}", r.body, a.log());
    assert_eq!(r.header("remote-auth-mode"), Some("keycloak"));
    assert_eq!(r.header("remote-keycloak-status"), Some("online"));
    assert!(
        r.header("remote-roles").unwrap().contains("scanner"),
        "{}",
        r.head
    );
    assert_eq!(kc.token_requests(), 1);
    // Cached: the next ones ask neither Keycloak nor argon2.
    for _ in 0..5 {
        let r = verify(&a, &with(&NGINX, &[("Authorization", &right)]));
        assert_eq!(r.status, 200);
    }
    assert_eq!(kc.token_requests(), 1, "answered from the cache");
    // A wrong password is asked about (never answered from the right one's entry) and refused;
    // asked again, Keycloak is asked again: it was not remembered as right.
    let wrong = basic("dev", "dev-passwore");
    for n in 2..=3 {
        let r = verify(&a, &with(&NGINX, &[("Authorization", &wrong)]));
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_credentials"));
        assert_eq!(kc.token_requests(), n);
    }
    // The right one is still remembered after the wrong ones.
    let r = verify(&a, &with(&NGINX, &[("Authorization", &right)]));
    assert_eq!((r.status, kc.token_requests()), (200, 3));
}

#[test]
fn basic_falls_back_offline_without_the_cache() {
    let kc = FakeKeycloak::start();
    kc.add_user("dev", "dev-password", &[], &[], &[]);
    let a = online(
        &kc,
        &format!("{BASE}[forward_auth]\nbasic = true\nbasic_cache_ttl = \"0s\"\n"),
    );
    kc.reset_counters();
    let right = basic("dev", "dev-password");
    for n in 1..=2 {
        let r = verify(&a, &with(&forwarded("GET"), &[("Authorization", &right)]));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(kc.token_requests(), n, "no cache: Keycloak every time");
    }
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    let r = verify(&a, &with(&forwarded("GET"), &[("Authorization", &right)]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("remote-keycloak-status"), Some("offline"));
    assert!(
        matches!(r.header("remote-auth-mode"), Some("cached" | "local")),
        "{}",
        r.head
    );
    let r = verify(
        &a,
        &with(
            &forwarded("GET"),
            &[("Authorization", &basic("dev", "wrong-password")), API],
        ),
    );
    assert_eq!(r.status, 401);
}

#[test]
fn the_session_cookie_covers_the_cookie_domain() {
    let a = local_appliance("");
    let r = a.login("alice", "alice-password");
    let set = r.header("set-cookie").unwrap();
    assert!(set.contains("; Domain=site.lan"), "{set}");
    assert!(set.contains("; Secure"), "public_url is https: {set}");
    // And that cookie, sent to an app under the domain, is accepted there.
    let c = set.split(';').next().unwrap();
    let r = verify(&a, &with(&forwarded("GET"), &[("Cookie", c)]));
    assert_eq!(r.status, 200);
}

/// Rules in the order they are tried; BASE's proxy and the users of [`local_appliance`].
const RULES: &str = r#"
[[access.rules]]
paths = ["/health"]
policy = "bypass"

[[access.rules]]
hosts = ["pos.site.lan"]
roles = ["cashier"]
policy = "allow"

[[access.rules]]
networks = ["10.9.0.0/16"]
policy = "deny"

[[access.rules]]
hosts = ["intranet.site.lan"]
networks = ["10.7.0.0/16"]
policy = "bypass"
"#;

fn url(host_path: &str) -> [(&'static str, String); 2] {
    [
        ("X-Original-URL", format!("https://{host_path}")),
        ("X-Original-Method", "GET".to_owned()),
    ]
}

fn ask(a: &Appliance, target: &[(&'static str, String); 2], more: &[(&str, &str)]) -> Raw {
    let mut h: Vec<(&str, &str)> = target.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.extend_from_slice(more);
    verify(a, &h)
}

#[test]
fn access_rules_decide_and_denied_is_403() {
    let a = local_appliance(RULES);
    a.add_user("carol", "carol-password", &["--role", "cashier"]);
    let alice = cookie(&a, "alice", "alice-password");
    let carol = cookie(&a, "carol", "carol-password");

    // A bypass rule: 200 without identity, signed in or not.
    for c in ["", alice.as_str()] {
        let r = ask(&a, &url("wiki.site.lan/health"), &[("Cookie", c), API]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("remote-user"), None);
    }
    // Signed in, but the rule wants a cashier: 403, JSON, no identity; carol is one.
    let r = ask(
        &a,
        &url("pos.site.lan/till"),
        &[("Cookie", &alice), BROWSER],
    );
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    assert_eq!(
        (r.header("remote-user"), r.header("location")),
        (None, None)
    );
    let r = ask(&a, &url("POS.site.lan:443/till"), &[("Cookie", &carol)]);
    assert_eq!((r.status, r.header("remote-user")), (200, Some("carol")));
    // Not signed in, on a rule that needs someone: sign in first.
    let r = ask(&a, &url("pos.site.lan/till"), &[BROWSER]);
    assert_eq!(r.status, 401);
    assert!(r.header("location").unwrap().starts_with(LOGIN));
    // The same in the Caddy/Traefik dialect: 403 for alice, 302 for a browser.
    let pos = |m| {
        let mut f = forwarded(m);
        f[2] = ("X-Forwarded-Host", "pos.site.lan");
        f
    };
    let r = verify(&a, &with(&pos("GET"), &[("Cookie", &alice)]));
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    let h = verify_as(&a, PROXY, "HEAD", &with(&pos("GET"), &[("Cookie", &alice)]));
    assert_eq!((h.status, h.body.as_str()), (403, ""));
    let r = verify(&a, &with(&pos("GET"), &[BROWSER]));
    assert_eq!(r.status, 302);
    // The default policy (signed_in) elsewhere.
    let r = ask(&a, &url("wiki.site.lan/page"), &[("Cookie", &alice)]);
    assert_eq!((r.status, r.header("remote-user")), (200, Some("alice")));
    // The access log says which rule refused.
    assert!(
        a.log().contains("verify outcome=forbidden rule=1 "),
        "{}",
        a.log()
    );
}

#[test]
fn network_rules_see_the_client_the_listener_resolves() {
    let a = local_appliance(RULES);
    let alice = cookie(&a, "alice", "alice-password");
    // The proxy says the client is 10.9.1.1: the network deny rule refuses even alice.
    let r = ask(
        &a,
        &url("wiki.site.lan/"),
        &[("Cookie", &alice), ("X-Forwarded-For", "10.9.1.1")],
    );
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    // The intranet is open to 10.7/16: from there, no sign-in.
    let r = ask(
        &a,
        &url("intranet.site.lan/"),
        &[("X-Forwarded-For", "10.7.0.5"), API],
    );
    assert_eq!(r.status, 200);
    // A client elsewhere that writes 10.7.0.5 into its own X-Forwarded-For, which the proxy
    // appends to: the right-most untrusted entry is the client, and it is not let in.
    let r = ask(
        &a,
        &url("intranet.site.lan/"),
        &[("X-Forwarded-For", "10.7.0.5, 192.168.1.20"), API],
    );
    assert_eq!(r.status, 401);
    // From an untrusted peer, nothing it says about the request or the client counts.
    let mut h: Vec<(&str, &str)> = vec![
        ("X-Original-URL", "https://intranet.site.lan/"),
        ("X-Original-Method", "GET"),
        ("X-Forwarded-For", "10.7.0.5"),
    ];
    let r = verify_as(&a, "127.0.0.2", "GET", &h);
    assert_eq!((r.status, r.code().as_str()), (403, "untrusted_proxy"));
    h.push(("Cookie", &alice));
    let r = verify_as(&a, "127.0.0.2", "GET", &h);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("remote-user"), None);
}

#[test]
fn a_keycloak_token_through_forward_auth() {
    let kc = FakeKeycloak::start();
    kc.add_user(
        "alice",
        "alice-password-1",
        &["staff"],
        &["cashier"],
        &["front-desk"],
    );
    let a = online(&kc, BASE);
    let mut res = support::agent()
        .post(format!("{}/protocol/openid-connect/token", kc.issuer()))
        .send_form([
            ("grant_type", "password"),
            ("client_id", kc.client_id()),
            ("client_secret", kc.client_secret()),
            ("username", "alice"),
            ("password", "alice-password-1"),
            ("scope", "profile email"),
        ])
        .unwrap();
    let body: Value = res.body_mut().read_json().unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let r = verify(&a, &with(&NGINX, &[("Authorization", &bearer)]));
    assert_eq!(r.status, 200, "{}\n{}", r.body, a.log());
    assert_eq!(r.header("remote-user"), Some("alice"));
    assert_eq!(r.header("remote-via"), Some("keycloak_token"));
    assert_eq!(r.header("remote-auth-mode"), Some("keycloak"));
    assert!(
        r.header("remote-client-roles")
            .is_some_and(|v| v.contains(":cashier")),
        "{}",
        r.head
    );
    // A tampered token is not signed in: a browser goes to the login page.
    let mut bad = token.clone();
    bad.pop();
    let r = verify(
        &a,
        &with(
            &forwarded("GET"),
            &[("Authorization", &format!("Bearer {bad}x")), BROWSER],
        ),
    );
    assert_eq!(r.status, 302, "{}", r.body);
    // Offline, the stored JWKS still verifies it.
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    let r = verify(&a, &with(&NGINX, &[("Authorization", &bearer)]));
    assert_eq!(
        (r.status, r.header("remote-keycloak-status")),
        (200, Some("offline"))
    );
}
