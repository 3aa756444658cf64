//! Tests of config parsing and validation.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("/etc/edgeauth"))
}

#[test]
fn reference_file_equals_embedded_defaults() {
    let mut parsed = Config::parse(REFERENCE_TOML, "config/edgeauth.toml", Path::new(""))
        .expect("reference config parses");
    // The reference file writes the data dir relative to itself; defaults use the cwd.
    parsed.server.data_dir = Config::default().server.data_dir;
    parsed.origin = String::new();
    assert_eq!(parsed, Config::default());
}

#[test]
fn empty_file_is_defaults_with_resolved_paths() {
    let c = parse("").unwrap();
    assert_eq!(
        c.server.data_dir,
        Path::new("/etc/edgeauth/./edgeauth-data")
    );
    assert_eq!(c.auth.session_ttl, Dur::secs(8 * 3600));
}

#[test]
fn unknown_key_is_named() {
    let e = parse("[server]\nlisen = \"127.0.0.1:1\"\n").unwrap_err();
    assert_eq!(e.file, "test.toml");
    assert!(e.message.contains("lisen"), "{e}");
    assert_eq!(e.key.as_deref(), Some("server.lisen"));
}

#[test]
fn bad_duration_names_key_and_form() {
    let e = parse("[auth]\nsession_ttl = \"8 hours please\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("auth.session_ttl"));
    assert!(e.message.contains("\"72h\""), "{e}");
}

#[test]
fn wrong_type_names_key() {
    let e = parse("[regulation]\nmax_retries = \"five\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("regulation.max_retries"));
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let e = parse("[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.listen"));
    let ok =
        parse("[server]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n")
            .unwrap();
    assert_eq!(
        ok.server.tls_cert.unwrap(),
        Path::new("/etc/edgeauth/c.pem")
    );
}

#[test]
fn half_tls_is_refused() {
    let e = parse("[server]\ntls_cert = \"c.pem\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.tls_key"));
}

#[test]
fn syntax_error_is_one_line() {
    let e = parse("[server\n").unwrap_err();
    assert!(e.key.is_none());
    assert!(!e.message.contains('\n'));
}

#[test]
fn keycloak_needs_realm_and_client() {
    let e = parse("[keycloak]\nserver = \"https://sso\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("keycloak.realm"));
}

#[test]
fn the_seed_profiles_are_valid_configs() {
    let base = "[keycloak]\nserver = \"https://sso\"\nrealm = \"r\"\nclient_id = \"c\"\n";
    let fast = "[keycloak.resilience]\nfailure_threshold = 1\ncooldown = \"30s\"\nrequest_timeout = \"2s\"\nhealth_check_interval = \"15s\"\n[auth]\norder = \"local-first\"\n";
    let strict = "[keycloak.resilience]\nfailure_threshold = 5\ncooldown = \"120s\"\nrequest_timeout = \"10s\"\ntoken_grace_period = \"4h\"\n[auth.offline]\ncredentials_expiration = \"12h\"\nfailed_login_attempts = 3\n[degraded]\npassword_change = \"deny\"\n";
    let f = parse(&format!("{base}{fast}")).unwrap();
    assert_eq!(
        (f.keycloak.resilience.failure_threshold, f.auth.order),
        (1, AuthOrder::LocalFirst)
    );
    let s = parse(&format!("{base}{strict}")).unwrap();
    assert_eq!(s.degraded.password_change, PasswordChangePolicy::Deny);
    assert_eq!(s.auth.offline.credentials_expiration, Dur::secs(12 * 3600));
    let balanced = parse(base).unwrap();
    assert_eq!(balanced.keycloak.resilience, ResilienceConfig::default());
}

#[test]
fn trusted_proxies_take_cidrs() {
    let c = parse("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]\n").unwrap();
    assert_eq!(c.server.trusted_proxies.len(), 2);
    let e = parse("[server]\ntrusted_proxies = [\"nonsense\"]\n").unwrap_err();
    assert!(e.key.unwrap().starts_with("server.trusted_proxies"));
}

/// `key = value` as a one-key TOML file (`a.b.c` is `[a.b]` `c = ...`).
fn one_key(key: &str, value: &str) -> String {
    let (section, field) = key.rsplit_once('.').unwrap();
    format!("[{section}]\n{field} = {value}\n")
}

fn toml_value(b: &validate::Bound, pick: impl Fn(u128, u128) -> u128) -> String {
    match *b {
        validate::Bound::Dur(_, lo, hi) => {
            let ms = pick(lo.as_millis(), hi.as_millis());
            let d = std::time::Duration::from_millis(ms as u64);
            format!("\"{}\"", humantime::format_duration(d))
        }
        validate::Bound::Num(_, lo, hi) => pick(lo.into(), hi.into()).to_string(),
    }
}

#[test]
fn every_number_and_duration_is_bounded_at_both_ends() {
    let bounds = Config::default().bounds();
    assert!(bounds.len() >= 30, "every numeric key has a range");
    for (key, b) in &bounds {
        // The ends themselves are accepted ...
        for end in [toml_value(b, |lo, _| lo), toml_value(b, |_, hi| hi)] {
            let text = one_key(key, &end);
            if let Err(e) = parse(&text) {
                panic!("{key} = {end} must be accepted: {e}");
            }
        }
        // ... one step beyond either is refused, naming the key and the range.
        let mut beyond = vec![toml_value(b, |_, hi| hi + 1)];
        if !matches!(b, validate::Bound::Dur(_, lo, _) if lo.is_zero())
            && !matches!(b, validate::Bound::Num(_, 0, _))
        {
            beyond.push(toml_value(b, |lo, _| lo - 1));
        }
        for v in beyond {
            let e = parse(&one_key(key, &v)).expect_err(&format!("{key} = {v} is refused"));
            assert_eq!(e.key.as_deref(), Some(*key), "{e}");
            assert!(e.message.contains("between"), "{e}");
        }
    }
}

#[test]
fn values_that_used_to_kill_the_process_are_refused_at_load() {
    let e = parse("[server]\nmax_connections = 3000000000000000000\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.max_connections"));
    assert!(e.message.contains("between 1 and 65536"), "{e}");
    let e = parse("[argon2]\nmax_concurrent = 3000000000000000000\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("argon2.max_concurrent"));
    let e = parse("[auth]\nsession_ttl = \"8000y\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("auth.session_ttl"));
    assert!(e.to_string().starts_with("config test.toml: key `auth.session_ttl`: must be between \"1s\" and \"366d\", got \"8000years\""), "{e}");
}

#[test]
fn keycloak_url_typos_are_refused_at_load() {
    let kc = |extra: &str| format!("[keycloak]\nrealm = \"r\"\nclient_id = \"c\"\n{extra}\n");
    for (extra, key) in [
        ("server = \"http://\"", "keycloak.server"),
        ("server = \"https://sso example.org\"", "keycloak.server"),
        ("server = \"sso.example.org\"", "keycloak.server"),
        (
            "server = \"https://sso\"\nhealth_url = \"not a url\"",
            "keycloak.health_url",
        ),
        (
            "server = \"https://sso\"\nproxy = \"http://\"",
            "keycloak.proxy",
        ),
    ] {
        let e = parse(&kc(extra)).expect_err(extra);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
    }
    let ok = parse(&kc(
        "server = \"https://sso.example.org\"\nhealth_url = \"https://sso.example.org:9000/health/ready\"\nproxy = \"\"",
    ));
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn the_reference_file_shows_every_range() {
    for (key, b) in Config::default().bounds() {
        let (section, field) = key.rsplit_once('.').unwrap();
        let mut current = "";
        let line = REFERENCE_TOML
            .lines()
            .find(|l| {
                if let Some(s) = l.strip_prefix('[') {
                    current = s.trim_end_matches(']');
                }
                current == section
                    && l.trim_start_matches("# ")
                        .starts_with(&format!("{field} = "))
            })
            .unwrap_or_else(|| panic!("{key} is not in config/edgeauth.toml"));
        let hi = match b {
            validate::Bound::Num(_, _, hi) => hi.to_string(),
            validate::Bound::Dur(_, _, hi) => validate::show(hi).trim_matches('"').to_owned(),
        };
        assert!(line.contains(&format!(", {hi}]")), "{key}: {line}");
    }
}

#[test]
fn errors_are_one_line_of_plain_text_whatever_the_file_holds() {
    // Found by fuzz/fuzz_targets/config.rs: the parser quotes the offending line, NULs included.
    let e = parse("[auth]\nsession_ttl = \"80t\0\0\x1b[31m0y\"\n").unwrap_err();
    let line = e.to_string();
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(line.contains("\\u{0}"), "{line:?}");
    let e = parse("[tenants.\"a\\nb\"]\nrealm = \"r\"\n").unwrap_err();
    let line = e.to_string();
    assert!(!line.chars().any(char::is_control), "{line:?}");
}

#[test]
fn bearer_algorithms_are_asymmetric_only() {
    for bad in ["none", "HS256", "HS512", "ES256", "rs256"] {
        let e = parse(&format!("[bearer]\nalgorithms = [\"RS256\", \"{bad}\"]\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("bearer.algorithms"), "{e}");
        assert!(e.message.contains(bad), "{e}");
    }
    let e = parse("[bearer]\nalgorithms = []\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("bearer.algorithms"));
    let e = parse("[bearer]\naudiences = [\"pos\", \" \"]\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("bearer.audiences"));
    let ok =
        parse("[bearer]\nalgorithms = [\"RS256\", \"PS256\"]\naudiences = [\"pos\"]\n").unwrap();
    assert_eq!(ok.bearer.audiences, ["pos"]);
}
