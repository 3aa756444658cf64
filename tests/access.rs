//! `edgeauth access check` through the binary: the rule that decides and why, for a user read
//! from the store (stopped) and over the admin socket (serving), and one line for bad input.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Appliance, stderr, stdout};

const RULES: &str = r#"
[access]
default_policy = "signed_in"

[[access.rules]]
paths = ["/health"]
policy = "bypass"

[[access.rules]]
hosts = ["pos.site.lan"]
roles = ["cashier"]
policy = "allow"

[[access.rules]]
hosts = ["*.site.lan"]
paths = ["/admin"]
groups = ["admins", "it"]
require = "all"
policy = "allow"

[[access.rules]]
networks = ["192.168.50.0/24"]
policy = "deny"
"#;

fn check(a: &Appliance, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["access", "check"];
    all.extend_from_slice(args);
    let out = a.cli(&all, None);
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

#[test]
fn access_check_names_the_rule_the_verdict_and_the_reason() {
    let mut a = Appliance::new(RULES);
    a.add_user("anna", "anna-password", &["--role", "cashier"]);
    a.add_user("bob", "bob-password", &["--group", "admins"]);

    // Stopped: the user comes from the store.
    let (code, out, err) = check(
        &a,
        &[
            "--url",
            "https://POS.site.lan:8443/till?x=1",
            "--user",
            "anna",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("user:      anna@default"), "{out}");
    assert!(
        out.contains("access.rules[0] { paths = [\"/health\"], policy = \"bypass\" }: skipped: its paths do not match"),
        "{out}"
    );
    assert!(
        out.contains("access.rules[1]") && out.contains("matches"),
        "{out}"
    );
    assert!(out.contains("verdict:   allow (200)"), "{out}");
    assert!(
        out.contains("access.rules[1] decides allow: the user has role \"cashier\""),
        "{out}"
    );

    // Anonymous: the same rule asks for a sign-in.
    let (code, out, _) = check(&a, &["--url", "https://pos.site.lan/till"]);
    assert_eq!(code, 0);
    assert!(out.contains("verdict:   sign in"), "{out}");
    assert!(out.contains("user:      none"), "{out}");

    a.start();
    // Serving: the user comes over the admin socket. What was missing is named.
    let (code, out, err) = check(
        &a,
        &[
            "--url",
            "https://wiki.site.lan/public/../admin/x",
            "--user",
            "bob",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("path:      /admin/x"), "{out}");
    assert!(out.contains("verdict:   deny (403)"), "{out}");
    assert!(
        out.contains(
            "access.rules[2] decides deny: require = \"all\" and the user lacks group \"it\""
        ),
        "{out}"
    );

    // A bypass, a deny by network, the default policy.
    let (_, out, _) = check(&a, &["--url", "http://any.lan/health/live"]);
    assert!(out.contains("verdict:   bypass"), "{out}");
    let (_, out, _) = check(
        &a,
        &[
            "--url",
            "https://wiki.site.lan/x",
            "--from",
            "192.168.50.9",
            "--method",
            "post",
        ],
    );
    assert!(
        out.contains("request:   POST https://wiki.site.lan/x from 192.168.50.9"),
        "{out}"
    );
    assert!(
        out.contains("access.rules[3] decides deny: a deny rule"),
        "{out}"
    );
    let (_, out, _) = check(
        &a,
        &[
            "--url",
            "https://wiki.site.lan/x",
            "--from",
            "10.0.0.1",
            "--user",
            "anna",
        ],
    );
    assert!(
        out.contains("no rule matches; access.default_policy = \"signed_in\" decides allow"),
        "{out}"
    );

    // Bad input: one line and a non-zero exit.
    for (args, code, words) in [
        (vec!["--url", "not a url"], 2, "is not a URL"),
        (vec!["--url", "/till"], 2, "absolute http or https URL"),
        (
            vec!["--url", "https://a/", "--from", "1.2.3"],
            2,
            "is not an IP address",
        ),
        (
            vec!["--url", "https://a/", "--method", "GE T"],
            2,
            "not an HTTP method",
        ),
        (
            vec!["--url", "https://a/", "--user", "ghost"],
            1,
            "no user ghost@default",
        ),
    ] {
        let (c, out, err) = check(&a, &args);
        assert_eq!(c, code, "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.is_empty(), "{out}");
    }
}

#[test]
fn a_bad_rule_stops_the_command_with_its_index_and_key() {
    let a = Appliance::new(
        "[[access.rules]]\npaths = [\"/x\"]\npolicy = \"bypass\"\n[[access.rules]]\nnetworks = [\"10.0.0.0/33\"]\npolicy = \"deny\"\n",
    );
    let (code, _, err) = check(&a, &["--url", "https://a/"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("access.rules[1].networks[0]")
            && err.contains("\"10.0.0.0/33\" is not a CIDR network"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
