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
