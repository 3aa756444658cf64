//! Every rule shape, the first-match order, all/any, both default policies, and the path
//! normalisation attacks.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::auth::principal::Via;
use crate::config::{Config, ConfigError};
use crate::domain::AuthMode;

fn config(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "t.toml", Path::new("/etc/edgeauth"))
}

fn rules(text: &str) -> Rules {
    Rules::new(&config(text).unwrap().access)
}

/// A user's subject, owned.
struct User {
    tenant: String,
    name: String,
    roles: Vec<String>,
    client_roles: Vec<String>,
    groups: Vec<String>,
}

fn user(name: &str) -> User {
    User {
        tenant: "default".into(),
        name: name.into(),
        roles: vec![],
        client_roles: vec![],
        groups: vec![],
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl User {
    fn roles(mut self, r: &[&str]) -> Self {
        self.roles = strings(r);
        self
    }
    fn client_roles(mut self, r: &[&str]) -> Self {
        self.client_roles = strings(r);
        self
    }
    fn groups(mut self, g: &[&str]) -> Self {
        self.groups = strings(g);
        self
    }
    fn tenant(mut self, t: &str) -> Self {
        self.tenant = t.into();
        self
    }
    fn subject(&self) -> Subject<'_> {
        Subject {
            tenant: &self.tenant,
            username: &self.name,
            name: None,
            email: None,
            roles: &self.roles,
            client_roles: &self.client_roles,
            groups: &self.groups,
            auth_mode: AuthMode::Keycloak,
            via: Via::Session,
        }
    }
}

struct Req {
    host: &'static str,
    path: &'static str,
    method: &'static str,
    ip: Option<IpAddr>,
}

fn req(host: &'static str, path: &'static str) -> Req {
    Req {
        host,
        path,
        method: "GET",
        ip: Some([10, 0, 0, 9].into()),
    }
}

impl Req {
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }
    fn no_ip(mut self) -> Self {
        self.ip = None;
        self
    }
    fn get(&self) -> Request<'_> {
        Request {
            host: self.host,
            path: self.path,
            method: self.method,
            ip: self.ip,
        }
    }
}

/// (rule index, verdict) for a request and an optional user.
fn decide(r: &Rules, q: &Req, u: Option<&User>) -> (Option<usize>, Verdict) {
    let s = u.map(User::subject);
    let d = r.find(&q.get()).decide(s.as_ref());
    (d.rule, d.verdict)
}

const SITE: &str = r#"
[access]
default_policy = "deny"

[[access.rules]]
paths = ["/health", "/static/"]
policy = "bypass"

[[access.rules]]
hosts = ["pos.site.lan"]
roles = ["cashier"]
policy = "allow"

[[access.rules]]
hosts = ["*.site.lan"]
paths = ["/admin"]
groups = ["/it/admins"]
policy = "allow"

[[access.rules]]
networks = ["192.168.50.0/24"]
policy = "deny"

[[access.rules]]
hosts = ["wiki.site.lan"]
policy = "allow"
"#;

#[test]
fn bypass_needs_no_one_and_first_match_wins() {
    let r = rules(SITE);
    // Rule 0 comes before the cashier rule: /health on the POS host is public.
    assert_eq!(
        decide(&r, &req("pos.site.lan", "/health"), None),
        (Some(0), Verdict::Bypass)
    );
    assert_eq!(
        decide(&r, &req("wiki.site.lan", "/static/app.css?v=3"), None),
        (Some(0), Verdict::Bypass)
    );
    let m = r.find(&req("any", "/health/live").get());
    assert_eq!(m.policy(), Policy::Bypass);
    assert_eq!(m.rule(), Some(0));
}

#[test]
fn path_prefixes_match_at_a_segment_boundary() {
    let r = rules(SITE);
    for p in ["/health", "/health/", "/health/x/y"] {
        assert_eq!(decide(&r, &req("h", p), None).0, Some(0), "{p}");
    }
    for p in ["/healthz", "/health-admin", "/static", "/Health"] {
        assert_ne!(decide(&r, &req("h", p), None).0, Some(0), "{p}");
    }
}

#[test]
fn roles_allow_and_refuse() {
    let r = rules(SITE);
    let q = req("pos.site.lan", "/till");
    let anna = user("anna").roles(&["cashier"]);
    let bob = user("bob").roles(&["cook"]);
    assert_eq!(decide(&r, &q, Some(&anna)), (Some(1), Verdict::Allow));
    assert_eq!(decide(&r, &q, Some(&bob)), (Some(1), Verdict::Deny));
    assert_eq!(decide(&r, &q, None), (Some(1), Verdict::SignIn));
    let d = r.find(&q.get()).decide(Some(&anna.subject()));
    assert_eq!(
        d.why,
        Why::Subject(SubjectCheck::Held(Item::Role("cashier")))
    );
    let text = d.explain().to_string();
    assert!(
        text.contains("access.rules[1]") && text.contains("role \"cashier\""),
        "{text}"
    );
    let text = r
        .find(&q.get())
        .decide(Some(&bob.subject()))
        .explain()
        .to_string();
    assert!(text.contains("none of: role \"cashier\""), "{text}");
}

#[test]
fn hosts_exact_wildcard_case_and_port() {
    let r = rules(SITE);
    let admin = user("ida").groups(&["/it/admins"]);
    for host in [
        "wiki.site.lan",
        "a.b.site.lan",
        "WIKI.Site.LAN:8443",
        "wiki.site.lan.",
    ] {
        assert_eq!(
            decide(&r, &req(host, "/admin/users"), Some(&admin)),
            (Some(2), Verdict::Allow),
            "{host}"
        );
    }
    // The wildcard is not the apex, nor a name that merely ends the same way.
    for host in ["site.lan", "evilsite.lan", "site.lan.evil"] {
        assert_ne!(
            decide(&r, &req(host, "/admin"), Some(&admin)).0,
            Some(2),
            "{host}"
        );
    }
    assert_eq!(
        decide(
            &r,
            &req("POS.SITE.LAN:443", "/"),
            Some(&user("x").roles(&["cashier"]))
        ),
        (Some(1), Verdict::Allow)
    );
}

#[test]
fn groups_match_by_path_and_top_level_name() {
    let r = rules(
        r#"
[[access.rules]]
groups = ["front-desk", "/it/admins"]
policy = "allow"
"#,
    );
    let q = req("h", "/");
    for g in ["front-desk", "/front-desk", "/it/admins", "it/admins"] {
        assert_eq!(
            decide(&r, &q, Some(&user("u").groups(&[g]))).1,
            Verdict::Allow,
            "{g}"
        );
    }
    for g in ["admins", "/other/front-desk", "/it", "Front-Desk"] {
        assert_eq!(
            decide(&r, &q, Some(&user("u").groups(&[g]))).1,
            Verdict::Deny,
            "{g}"
        );
    }
}

#[test]
fn users_client_roles_tenants_and_require_all() {
    let r = rules(
        r#"
[[access.rules]]
paths = ["/one"]
users = ["Anna"]
policy = "allow"

[[access.rules]]
paths = ["/pos"]
client_roles = ["pos:till"]
policy = "allow"

[[access.rules]]
paths = ["/all"]
roles = ["cashier"]
client_roles = ["pos:till"]
groups = ["shop"]
require = "all"
policy = "allow"

[[access.rules]]
paths = ["/north"]
tenants = ["north"]
policy = "allow"

[[access.rules]]
paths = ["/north-cashiers"]
tenants = ["north"]
roles = ["cashier"]
policy = "allow"
"#,
    );
    // Usernames are compared lower-cased, as they are stored.
    assert_eq!(
        decide(&r, &req("h", "/one"), Some(&user("anna"))).1,
        Verdict::Allow
    );
    assert_eq!(
        decide(&r, &req("h", "/one"), Some(&user("annabel"))).1,
        Verdict::Deny
    );
    // Client roles are client:role; a realm role of the same name does not count.
    let till = user("t").client_roles(&["pos:till"]);
    assert_eq!(decide(&r, &req("h", "/pos"), Some(&till)).1, Verdict::Allow);
    let wrong = user("t")
        .client_roles(&["wiki:till"])
        .roles(&["till", "pos:till"]);
    assert_eq!(decide(&r, &req("h", "/pos"), Some(&wrong)).1, Verdict::Deny);
    // All: every item, any: one.
    let full = user("f")
        .roles(&["cashier"])
        .client_roles(&["pos:till"])
        .groups(&["/shop"]);
    assert_eq!(decide(&r, &req("h", "/all"), Some(&full)).1, Verdict::Allow);
    let partial = user("p").roles(&["cashier"]).client_roles(&["pos:till"]);
    let d = r
        .find(&req("h", "/all").get())
        .decide(Some(&partial.subject()));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(
        d.why,
        Why::Subject(SubjectCheck::Missing(Item::Group("shop")))
    );
    assert!(d.explain().to_string().contains("lacks group \"shop\""));
    // Tenants: a gate on top of the items.
    let north = user("n").tenant("north");
    assert_eq!(
        decide(&r, &req("h", "/north"), Some(&north)).1,
        Verdict::Allow
    );
    assert_eq!(
        decide(&r, &req("h", "/north"), Some(&user("n"))).1,
        Verdict::Deny
    );
    assert_eq!(decide(&r, &req("h", "/north"), None).1, Verdict::SignIn);
    let south_cashier = user("c").roles(&["cashier"]).tenant("south");
    let d = r
        .find(&req("h", "/north-cashiers").get())
        .decide(Some(&south_cashier.subject()));
    assert_eq!(d.why, Why::Subject(SubjectCheck::WrongTenant));
}

#[test]
fn any_of_several_keys() {
    let r = rules(
        r#"
[[access.rules]]
users = ["root"]
roles = ["admin"]
groups = ["ops"]
policy = "allow"
"#,
    );
    let q = req("h", "/");
    assert_eq!(decide(&r, &q, Some(&user("root"))).1, Verdict::Allow);
    assert_eq!(
        decide(&r, &q, Some(&user("x").roles(&["admin"]))).1,
        Verdict::Allow
    );
    assert_eq!(
        decide(&r, &q, Some(&user("x").groups(&["ops"]))).1,
        Verdict::Allow
    );
    assert_eq!(
        decide(&r, &q, Some(&user("x").roles(&["ops"]))).1,
        Verdict::Deny
    );
}

#[test]
fn allow_without_subject_is_any_signed_in_user() {
    let r = rules(SITE);
    let q = req("wiki.site.lan", "/page");
    assert_eq!(decide(&r, &q, Some(&user("z"))), (Some(4), Verdict::Allow));
    assert_eq!(decide(&r, &q, None), (Some(4), Verdict::SignIn));
}

#[test]
fn deny_rule_and_networks_v4() {
    let r = rules(SITE);
    let guest = req("wiki.site.lan", "/page").ip("192.168.50.7");
    assert_eq!(
        decide(&r, &guest, Some(&user("z"))),
        (Some(3), Verdict::Deny)
    );
    assert_eq!(r.find(&guest.get()).policy(), Policy::Deny);
    // An IPv4-mapped IPv6 address is the IPv4 address.
    let mapped = req("wiki.site.lan", "/page").ip("::ffff:192.168.50.7");
    assert_eq!(decide(&r, &mapped, None), (Some(3), Verdict::Deny));
    let staff = req("wiki.site.lan", "/page").ip("192.168.51.7");
    assert_eq!(
        decide(&r, &staff, Some(&user("z"))),
        (Some(4), Verdict::Allow)
    );
}

#[test]
fn networks_v6_and_unknown_client_address() {
    let r = rules(
        r#"
[[access.rules]]
networks = ["fd00:1::/64", "10.1.2.3"]
policy = "bypass"

[[access.rules]]
hosts = ["h"]
policy = "allow"
"#,
    );
    assert_eq!(
        decide(&r, &req("h", "/").ip("fd00:1::42"), None).1,
        Verdict::Bypass
    );
    assert_eq!(
        decide(&r, &req("h", "/").ip("10.1.2.3"), None).1,
        Verdict::Bypass
    );
    assert_eq!(
        decide(&r, &req("h", "/").ip("fd00:2::42"), None),
        (Some(1), Verdict::SignIn)
    );
    assert_eq!(
        decide(&r, &req("h", "/").ip("10.1.2.4"), None),
        (Some(1), Verdict::SignIn)
    );
    // A rule that looks at the network cannot decide without an address: refused, never
    // skipped (a skipped deny would let a later allow through).
    let d = r.find(&req("h", "/").no_ip().get()).decide(None);
    assert_eq!((d.rule, d.verdict), (Some(0), Verdict::Deny));
    assert_eq!(d.why, Why::Unclear(Unclear::NoClientAddress));
}

#[test]
fn methods() {
    let r = rules(
        r#"
[[access.rules]]
methods = ["GET", "head"]
roles = ["viewer"]
policy = "allow"

[[access.rules]]
roles = ["editor"]
policy = "allow"
"#,
    );
    let viewer = user("v").roles(&["viewer"]);
    assert_eq!(
        decide(&r, &req("h", "/"), Some(&viewer)),
        (Some(0), Verdict::Allow)
    );
    assert_eq!(
        decide(&r, &req("h", "/").method("HEAD"), Some(&viewer)).1,
        Verdict::Allow
    );
    assert_eq!(
        decide(&r, &req("h", "/").method("get"), Some(&viewer)).0,
        Some(0)
    );
    assert_eq!(
        decide(&r, &req("h", "/").method("POST"), Some(&viewer)),
        (Some(1), Verdict::Deny)
    );
}

#[test]
fn path_regex_is_anchored_and_combines_with_paths() {
    let r = rules(
        r#"
[[access.rules]]
path_regex = "/api/v[0-9]+/public/.*"
policy = "bypass"

[[access.rules]]
paths = ["/files"]
path_regex = ".*\\.pdf"
policy = "deny"
"#,
    );
    assert_eq!(
        decide(&r, &req("h", "/api/v2/public/x"), None).1,
        Verdict::Bypass
    );
    // Anchored at both ends: no match in the middle of a path.
    assert_eq!(
        decide(&r, &req("h", "/x/api/v2/public/x"), None).1,
        Verdict::SignIn
    );
    assert_eq!(
        decide(&r, &req("h", "/api/vx/public/x"), None).1,
        Verdict::SignIn
    );
    // Both keys must match.
    assert_eq!(
        decide(&r, &req("h", "/files/a.pdf"), None),
        (Some(1), Verdict::Deny)
    );
    assert_eq!(
        decide(&r, &req("h", "/files/a.txt"), None),
        (None, Verdict::SignIn)
    );
    assert_eq!(
        decide(&r, &req("h", "/other/a.pdf"), None),
        (None, Verdict::SignIn)
    );
}

#[test]
fn default_policies() {
    let lenient = rules("");
    assert_eq!(lenient.default_policy(), DefaultPolicy::SignedIn);
    let q = req("any.host", "/anything");
    assert_eq!(decide(&lenient, &q, None), (None, Verdict::SignIn));
    assert_eq!(
        decide(&lenient, &q, Some(&user("u"))),
        (None, Verdict::Allow)
    );
    assert_eq!(lenient.find(&q.get()).policy(), Policy::Allow);
    assert!(!lenient.find(&q.get()).introspect());

    let strict = rules("[access]\ndefault_policy = \"deny\"\n");
    assert_eq!(decide(&strict, &q, None), (None, Verdict::Deny));
    assert_eq!(decide(&strict, &q, Some(&user("u"))), (None, Verdict::Deny));
    let text = strict.find(&q.get()).decide(None).explain().to_string();
    assert!(text.contains("default_policy = \"deny\""), "{text}");
}

#[test]
fn introspect_is_per_rule() {
    let r = rules(
        r#"
[[access.rules]]
paths = ["/api"]
introspect = true
policy = "allow"
"#,
    );
    assert!(r.find(&req("h", "/api/x").get()).introspect());
    assert!(!r.find(&req("h", "/web").get()).introspect());
}

// ---- normalisation ----

const PUBLIC_ADMIN: &str = r#"
[access]
default_policy = "deny"

[[access.rules]]
paths = ["/public"]
policy = "bypass"

[[access.rules]]
paths = ["/admin"]
groups = ["admins"]
policy = "allow"

[[access.rules]]
policy = "allow"
"#;

#[test]
fn dot_segments_and_double_slashes_cannot_reach_past_a_rule() {
    let r = rules(PUBLIC_ADMIN);
    let staff = user("s");
    for p in [
        "/public/../admin",
        "/public/./../admin/x",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/x/../../../admin",
    ] {
        assert_eq!(
            decide(&r, &req("h", p), Some(&staff)),
            (Some(1), Verdict::Deny),
            "{p} is /admin"
        );
        assert_eq!(
            decide(&r, &req("h", p), None),
            (Some(1), Verdict::SignIn),
            "{p}"
        );
    }
    assert_eq!(
        decide(&r, &req("h", "/public//x/./y"), None).1,
        Verdict::Bypass
    );
    assert_eq!(
        decide(&r, &req("h", "/admin/../public/x"), None).1,
        Verdict::Bypass
    );
}

#[test]
fn ambiguous_paths_are_refused_where_the_answer_depends_on_them() {
    let r = rules(PUBLIC_ADMIN);
    for p in [
        // %2F: a single segment to one backend, /public/../admin to another.
        "/public%2F..%2Fadmin",
        "/public/x%2F..%2F..%2Fadmin",
        // Backslashes, raw and encoded.
        "/public\\..\\admin",
        "/public/%5C..%5Cadmin",
        // Tomcat reads `..;` as `..`.
        "/public/..;/admin",
        "/public/%2e%2e;x=y/admin",
    ] {
        // The first rule whose answer differs between the readings refuses it: /public
        // (one reading is under it) or /admin (one reading is /admin).
        let d = r.find(&req("h", p).get()).decide(None);
        assert_eq!(
            (d.verdict, d.why),
            (Verdict::Deny, Why::Unclear(Unclear::Ambiguous)),
            "{p}"
        );
        assert!(matches!(d.rule, Some(0 | 1)), "{p}");
    }
    // Where both readings agree, they decide as usual.
    assert_eq!(
        decide(&r, &req("h", "/public/a%2Fb"), None).1,
        Verdict::Bypass
    );
    assert_eq!(
        decide(&r, &req("h", "/public/page;jsessionid=1"), None).1,
        Verdict::Bypass
    );
    assert_eq!(
        decide(&r, &req("h", "/admin%2Fusers"), Some(&user("u"))),
        (Some(1), Verdict::Deny)
    );
}

#[test]
fn paths_that_cannot_be_normalised_never_match_by_accident() {
    let r = rules(PUBLIC_ADMIN);
    let long = format!("/public/{}%41", "a".repeat(MAX_LONG));
    let long: &'static str = Box::leak(long.into_boxed_str());
    for (p, why) in [
        ("/public/%00", Unclear::Control),
        ("/public/a%0d%0aX: y", Unclear::Control),
        ("/public/%zz", Unclear::BadEscape),
        ("/public/%4", Unclear::BadEscape),
        ("/public/%ff", Unclear::NotUtf8),
        ("/public/%c3", Unclear::NotUtf8),
        ("public", Unclear::NotAbsolute),
        ("*", Unclear::NotAbsolute),
        (long, Unclear::TooLong),
    ] {
        let u = user("u");
        let d = r.find(&req("h", p).get()).decide(Some(&u.subject()));
        assert_eq!(
            (d.rule, d.verdict, d.why),
            (Some(0), Verdict::Deny, Why::Unclear(why)),
            "{p}"
        );
    }
    // A rule that does not look at the path still decides such a request.
    let host_only = rules("[[access.rules]]\nhosts = [\"public.site.lan\"]\npolicy = \"bypass\"\n");
    assert_eq!(
        decide(&host_only, &req("public.site.lan", "/%zz"), None),
        (Some(0), Verdict::Bypass)
    );
}

const MAX_LONG: usize = path::MAX_PATH;

#[test]
fn readings() {
    let one = |p: &str| path::readings(p).unwrap();
    assert_eq!(one("/a/b"), ["/a/b"]);
    assert_eq!(one(""), ["/"]);
    assert_eq!(one("/"), ["/"]);
    assert_eq!(one("/a/b/"), ["/a/b/"]);
    assert_eq!(one("/a/."), ["/a/"]);
    assert_eq!(one("/a/b/.."), ["/a/"]);
    assert_eq!(one("/.."), ["/"]);
    assert_eq!(one("/../.."), ["/"]);
    assert_eq!(one("///a//b"), ["/a/b"]);
    assert_eq!(one("/a?x=/../admin#f"), ["/a"]);
    assert_eq!(one("/caf%C3%A9"), ["/café"]);
    assert_eq!(one("/%252F"), ["/%2F"]);
    assert_eq!(one("/a%2fb"), ["/a%2Fb", "/a/b"]);
    assert_eq!(one("/a;p/b"), ["/a;p/b", "/a/b"]);
    assert_eq!(one("/a\\b"), ["/a\\b", "/a/b"]);
    assert_eq!(path::readings("/a%"), Err(Unclear::BadEscape));
}

#[test]
fn config_errors_name_the_rule_index_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[access.rules]]\npolicy = \"allow\"\n[[access.rules]]\npolicy = \"allow\"\n[[access.rules]]\nhosts = [\"a\"]\npolicy = \"allow\"\n",
            "access.rules[1]",
            "never reached",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\npolicy = \"allow\"\n[[access.rules]]\nnetworks = [\"10.0.0.0/33\"]\npolicy = \"deny\"\n",
            "access.rules[1].networks[0]",
            "\"10.0.0.0/33\" is not a CIDR network",
        ),
        (
            "[[access.rules]]\nnetworks = [\"10.0.0.1/8\"]\npolicy = \"deny\"\n",
            "access.rules[0].networks[0]",
            "10.0.0.0/8",
        ),
        (
            "[[access.rules]]\nhost = [\"a\"]\npolicy = \"deny\"\n",
            "access.rules[0].host",
            "unknown field",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\n",
            "access.rules[0]",
            "missing field `policy`",
        ),
        (
            "[[access.rules]]\npolicy = \"permit\"\n",
            "access.rules[0].policy",
            "unknown variant",
        ),
        (
            "[[access.rules]]\nhosts = [\"a:80\"]\npolicy = \"deny\"\n",
            "access.rules[0].hosts[0]",
            "without a port",
        ),
        (
            "[[access.rules]]\nhosts = [\"a.*.lan\"]\npolicy = \"deny\"\n",
            "access.rules[0].hosts[0]",
            "not a host name",
        ),
        (
            "[[access.rules]]\npaths = [\"/public/../admin\"]\npolicy = \"bypass\"\n",
            "access.rules[0].paths[0]",
            "'..' segment",
        ),
        (
            "[[access.rules]]\npaths = [\"api\"]\npolicy = \"bypass\"\n",
            "access.rules[0].paths[0]",
            "start with '/'",
        ),
        (
            "[[access.rules]]\npaths = [\"/a%2Fb\"]\npolicy = \"bypass\"\n",
            "access.rules[0].paths[0]",
            "'%'",
        ),
        (
            "[[access.rules]]\npath_regex = \"/api/(\"\npolicy = \"bypass\"\n",
            "access.rules[0].path_regex",
            "is not a regex",
        ),
        (
            "[[access.rules]]\nmethods = [\"GET POST\"]\npolicy = \"bypass\"\n",
            "access.rules[0].methods[0]",
            "not an HTTP method",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\nroles = [\"x\"]\npolicy = \"deny\"\n",
            "access.rules[0].roles",
            "only applies to policy = \"allow\"",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\nintrospect = true\npolicy = \"bypass\"\n",
            "access.rules[0].introspect",
            "only applies",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\nclient_roles = [\"till\"]\npolicy = \"allow\"\n",
            "access.rules[0].client_roles[0]",
            "client:role",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\nusers = [\"a\", \"b\"]\nrequire = \"all\"\npolicy = \"allow\"\n",
            "access.rules[0].users",
            "no one can match",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\nrequire = \"all\"\npolicy = \"allow\"\n",
            "access.rules[0].require",
            "needs users",
        ),
        (
            "[[access.rules]]\nhosts = []\npolicy = \"allow\"\n",
            "access.rules[0].hosts",
            "empty list",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\nusers = [\"a b\"]\npolicy = \"allow\"\n",
            "access.rules[0].users[0]",
            "username",
        ),
        (
            "[[access.rules]]\nhosts = [\"a\"]\ntenants = [\"North\"]\npolicy = \"allow\"\n",
            "access.rules[0].tenants[0]",
            "tenant",
        ),
        (
            "[access]\ndefault_policy = \"bypass\"\n",
            "access.default_policy",
            "unknown variant",
        ),
    ];
    for (text, key, message) in cases {
        let e = config(text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(*key), "{text}\n{e}");
        assert!(e.message.contains(message), "{text}\n{e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}

#[test]
fn describe_writes_the_rule_on_one_line() {
    let r = rules(SITE);
    let d = r.describe(1).unwrap();
    assert!(
        d.contains("hosts = [\"pos.site.lan\"]")
            && d.contains("policy = \"allow\"")
            && d.contains("roles = [\"cashier\"]"),
        "{d}"
    );
    assert!(!d.contains('\n'));
}

#[test]
fn the_reference_config_examples_parse_and_decide_as_their_comments_say() {
    let text = crate::config::REFERENCE_TOML;
    let examples = &text[text.find("# Examples:").unwrap()..text.find("# Per-tenant").unwrap()];
    let toml: String = examples
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with("[[access.rules]]")
                || l.split_once(" = ")
                    .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let r = rules(&toml);
    assert_eq!(r.len(), 5, "{toml}");
    assert_eq!(
        decide(&r, &req("pos.site.lan", "/static/app.js"), None).1,
        Verdict::Bypass
    );
    assert_eq!(
        decide(&r, &req("pos.site.lan", "/").ip("192.168.50.3"), None),
        (Some(1), Verdict::Deny)
    );
    let till = user("t").client_roles(&["pos:till"]);
    assert_eq!(
        decide(&r, &req("pos.site.lan", "/"), Some(&till)),
        (Some(2), Verdict::Allow)
    );
    let admin = user("a").groups(&["/it/admins", "/it/on-call"]);
    assert_eq!(
        decide(&r, &req("wiki.site.lan", "/admin"), Some(&admin)).1,
        Verdict::Allow
    );
    let half = user("a").groups(&["/it/admins"]);
    assert_eq!(
        decide(&r, &req("wiki.site.lan", "/admin"), Some(&half)).1,
        Verdict::Deny
    );
    assert_eq!(
        decide(&r, &req("wiki.site.lan", "/history/12/edit"), Some(&admin)),
        (Some(4), Verdict::Deny)
    );
    assert_eq!(
        decide(&r, &req("wiki.site.lan", "/history/12"), Some(&half)),
        (None, Verdict::Allow)
    );
}

/// Many paths built from the pieces attacks are made of: normalising never panics, a reading
/// is already normal (normalising it again changes nothing), and no reading climbs out of `/`.
#[test]
fn normalisation_is_total_and_idempotent() {
    const PIECES: &[&str] = &[
        "/", "..", ".", "%2e", "%2E%2e", "%2F", "%2f", "\\", "%5c", ";", ";x=1", "a", "admin",
        "public", "%", "%0", "%00", "%0a", "%c3%a9", "%ff", "//", "?", "#", "é", "%41",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    for _ in 0..20_000 {
        let mut p = String::from(if next(8) == 0 { "" } else { "/" });
        for _ in 0..next(9) {
            p.push_str(PIECES[next(PIECES.len())]);
        }
        let Ok(readings) = path::readings(&p) else {
            continue;
        };
        assert!(matches!(readings.len(), 1 | 2), "{p:?}");
        for r in &readings {
            assert!(r.starts_with('/'), "{p:?} -> {r:?}");
            assert!(
                !r.contains("//") && !r.split('/').any(|s| s == "." || s == ".."),
                "{p:?} -> {r:?}"
            );
            if !r.contains(['%', '\\', ';']) {
                assert_eq!(
                    path::readings(r).unwrap(),
                    std::slice::from_ref(r),
                    "{p:?} -> {r:?}"
                );
            }
        }
    }
}
