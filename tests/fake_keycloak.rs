//! Self-test of the in-process fake Keycloak (tests/support/fake_keycloak.rs): the Keycloak 26
//! response shapes edgeauth maps, token validation against the JWKS, sessions, key rotation,
//! counters and every fault.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use support::fake_keycloak::{FakeKeycloak, Fault};

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

fn token_url(kc: &FakeKeycloak) -> String {
    format!("{}/protocol/openid-connect/token", kc.issuer())
}

/// POSTs a form; returns status, content type and the body parsed as JSON (Null when empty).
fn post_form(agent: &ureq::Agent, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let mut response = agent
        .post(url)
        .send_form(form.iter().copied())
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

fn get_json(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    let mut response = agent.get(url).call().expect("GET");
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().expect("JSON body"))
}

fn login(agent: &ureq::Agent, kc: &FakeKeycloak, user: &str, password: &str) -> (u16, Value) {
    post_form(
        agent,
        &token_url(kc),
        &[
            ("grant_type", "password"),
            ("client_id", "edgeauth"),
            ("client_secret", "edgeauth-secret"),
            ("username", user),
            ("password", password),
            ("scope", "openid"),
        ],
    )
}

fn refresh(agent: &ureq::Agent, kc: &FakeKeycloak, refresh_token: &str) -> (u16, Value) {
    post_form(
        agent,
        &token_url(kc),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "edgeauth"),
            ("client_secret", "edgeauth-secret"),
            ("refresh_token", refresh_token),
        ],
    )
}

fn assert_error(actual: (u16, Value), status: u16, error: &str, description: &str) {
    let (got_status, body) = actual;
    assert_eq!(got_status, status, "status of {body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_description"], description, "{body}");
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Verifies a JWT against the JWKS key with the token's `kid` and `use: sig`.
fn verify(agent: &ureq::Agent, kc: &FakeKeycloak, token: &str, audience: &str) -> Value {
    let (_, jwks) = get_json(
        agent,
        &format!("{}/protocol/openid-connect/certs", kc.issuer()),
    );
    let kid = jsonwebtoken::decode_header(token)
        .expect("JWT header")
        .kid
        .expect("kid");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str() && k["use"] == "sig")
        .unwrap_or_else(|| panic!("no sig key {kid} in {jwks}"));
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .expect("RSA JWK");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[kc.issuer()]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("token validates")
        .claims
}

fn strings(value: &Value) -> HashSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn discovery_jwks_and_health() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    assert_eq!(kc.base_url(), format!("http://127.0.0.1:{}", kc.port()));
    assert_eq!(kc.issuer(), format!("{}/realms/site", kc.base_url()));
    assert_eq!(
        (kc.realm(), kc.client_id(), kc.client_secret()),
        ("site", "edgeauth", "edgeauth-secret")
    );

    let (status, doc) = get_json(
        &agent,
        &format!("{}/.well-known/openid-configuration", kc.issuer()),
    );
    assert_eq!(status, 200);
    let oidc = format!("{}/protocol/openid-connect", kc.issuer());
    assert_eq!(doc["issuer"], kc.issuer());
    assert_eq!(doc["token_endpoint"], format!("{oidc}/token"));
    assert_eq!(doc["end_session_endpoint"], format!("{oidc}/logout"));
    assert_eq!(doc["jwks_uri"], format!("{oidc}/certs"));
    assert_eq!(doc["revocation_endpoint"], format!("{oidc}/revoke"));
    assert_eq!(doc["authorization_endpoint"], format!("{oidc}/auth"));
    assert_eq!(doc["userinfo_endpoint"], format!("{oidc}/userinfo"));
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{oidc}/token/introspect")
    );
    assert!(strings(&doc["grant_types_supported"]).contains("password"));
    assert_eq!(doc["id_token_signing_alg_values_supported"][0], "RS256");

    let (status, jwks) = get_json(&agent, &format!("{oidc}/certs"));
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().unwrap();
    let sig: Vec<&Value> = keys.iter().filter(|k| k["use"] == "sig").collect();
    let enc: Vec<&Value> = keys.iter().filter(|k| k["use"] == "enc").collect();
    assert_eq!((sig.len(), enc.len()), (1, 1), "{jwks}");
    assert_eq!(sig[0]["kty"], "RSA");
    assert_eq!(sig[0]["alg"], "RS256");
    assert_eq!(sig[0]["e"], "AQAB");
    assert!(!sig[0]["n"].as_str().unwrap().contains('='));
    assert_eq!(enc[0]["alg"], "RSA-OAEP");
    assert_ne!(enc[0]["kid"], sig[0]["kid"]);

    let response = agent
        .get(&format!("{}/health/ready", kc.base_url()))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("date"), "Date header");
    let body: Value = response.into_body().read_json().unwrap();
    assert_eq!(body, serde_json::json!({"status": "UP", "checks": []}));
}

#[test]
fn token_endpoint_error_shapes() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    let url = token_url(&kc);
    kc.add_user("alice", "pw", &[], &[], &[]);
    kc.add_user("dave", "pw", &[], &[], &[]);
    kc.set_enabled("dave", false);

    let password_grant = |client_id: &str, secret: &str, user: &str, pw: &str| {
        post_form(
            &agent,
            &url,
            &[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("username", user),
                ("password", pw),
            ],
        )
    };
    let bad_client = "Invalid client or Invalid client credentials";
    assert_error(
        password_grant("edgeauth", "wrong", "alice", "pw"),
        401,
        "unauthorized_client",
        bad_client,
    );
    assert_error(
        password_grant("nobody", "edgeauth-secret", "alice", "pw"),
        401,
        "invalid_client",
        bad_client,
    );
    assert_error(
        password_grant("edgeauth", "edgeauth-secret", "mallory", "pw"),
        401,
        "invalid_grant",
        "Invalid user credentials",
    );
    assert_error(
        password_grant("edgeauth", "edgeauth-secret", "alice", "wrong"),
        401,
        "invalid_grant",
        "Invalid user credentials",
    );
    assert_error(
        password_grant("edgeauth", "edgeauth-secret", "dave", "pw"),
        400,
        "invalid_grant",
        "Account disabled",
    );
    kc.set_direct_access_grants(false);
    assert_error(
        password_grant("edgeauth", "edgeauth-secret", "alice", "pw"),
        400,
        "unauthorized_client",
        "Client not allowed for direct access grants",
    );
    kc.set_direct_access_grants(true);

    kc.set_client_secret("rotated");
    assert_error(
        password_grant("edgeauth", "edgeauth-secret", "alice", "pw"),
        401,
        "unauthorized_client",
        bad_client,
    );
    assert_eq!(password_grant("edgeauth", "rotated", "alice", "pw").0, 200);
    kc.set_client_secret("edgeauth-secret");

    let with_client = |extra: &[(&str, &str)]| {
        let mut form = vec![
            ("client_id", "edgeauth"),
            ("client_secret", "edgeauth-secret"),
        ];
        form.extend_from_slice(extra);
        post_form(&agent, &url, &form)
    };
    assert_error(
        with_client(&[("grant_type", "urn:example:magic")]),
        400,
        "unsupported_grant_type",
        "Unsupported grant_type",
    );
    assert_error(
        with_client(&[]),
        400,
        "invalid_request",
        "Missing form parameter: grant_type",
    );
    assert_error(
        with_client(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "garbage"),
        ]),
        400,
        "invalid_grant",
        "Invalid refresh token",
    );
    assert_error(
        with_client(&[("grant_type", "refresh_token")]),
        400,
        "invalid_request",
        "No refresh token",
    );
}

#[test]
fn password_grant_tokens_validate_against_jwks() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    kc.add_user(
        "Alice",
        "s3cret pw&=",
        &["site-admin"],
        &["operator", "viewer"],
        &["ops", "/site/leads"],
    );
    kc.set_access_token_lifespan(Duration::from_secs(120));

    // client_secret_basic, with a password that needs form encoding.
    let mut response = agent
        .post(&token_url(&kc))
        .header(
            "Authorization",
            format!("Basic {}", base64(b"edgeauth:edgeauth-secret")),
        )
        .send_form([
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "s3cret pw&="),
            ("scope", "openid"),
        ])
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.body_mut().read_json().unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 120);
    assert_eq!(body["refresh_expires_in"], 1800);
    assert_eq!(body["not-before-policy"], 0);
    assert_eq!(body["scope"], "openid profile email");
    assert!(body["refresh_token"].as_str().unwrap().len() > 20);
    let session_state = body["session_state"].as_str().unwrap();

    let access = verify(
        &agent,
        &kc,
        body["access_token"].as_str().unwrap(),
        "account",
    );
    assert_eq!(access["iss"], kc.issuer());
    assert_eq!(access["azp"], "edgeauth");
    assert_eq!(access["typ"], "Bearer");
    assert_eq!(access["preferred_username"], "alice");
    assert_eq!(access["sid"], session_state);
    assert_eq!(access["scope"], "openid profile email");
    assert_eq!(
        access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(),
        120
    );
    assert_eq!(access["sub"].as_str().unwrap().len(), 36);
    let realm_roles = strings(&access["realm_access"]["roles"]);
    assert!(realm_roles.contains("site-admin"), "{realm_roles:?}");
    assert!(
        realm_roles.contains("default-roles-site"),
        "{realm_roles:?}"
    );
    assert_eq!(
        strings(&access["resource_access"]["edgeauth"]["roles"]),
        HashSet::from(["operator".to_string(), "viewer".to_string()])
    );
    assert_eq!(
        strings(&access["groups"]),
        HashSet::from(["/ops".to_string(), "/site/leads".to_string()])
    );

    let id = verify(&agent, &kc, body["id_token"].as_str().unwrap(), "edgeauth");
    assert_eq!(id["typ"], "ID");
    assert_eq!(id["sub"], access["sub"]);
    assert_eq!(id["preferred_username"], "alice");

    // Same user, same sub; no client roles means no "edgeauth" entry; no openid, no id_token.
    kc.add_user("alice", "pw", &[], &[], &[]);
    let (status, body) = post_form(
        &agent,
        &token_url(&kc),
        &[
            ("grant_type", "password"),
            ("client_id", "edgeauth"),
            ("client_secret", "edgeauth-secret"),
            ("username", "ALICE"),
            ("password", "pw"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.get("id_token").is_none());
    assert_eq!(body["scope"], "profile email");
    let again = verify(
        &agent,
        &kc,
        body["access_token"].as_str().unwrap(),
        "account",
    );
    assert_eq!(again["sub"], access["sub"]);
    assert!(
        again["resource_access"].get("edgeauth").is_none(),
        "{again}"
    );
}

#[test]
fn refresh_logout_and_user_changes() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    kc.add_user("bob", "pw", &["user"], &[], &[]);

    let (status, first) = login(&agent, &kc, "bob", "pw");
    assert_eq!(status, 200);
    let rt1 = first["refresh_token"].as_str().unwrap().to_string();
    let (status, second) = refresh(&agent, &kc, &rt1);
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2, "refresh token rotates");
    assert_eq!(second["session_state"], first["session_state"]);
    assert!(second["id_token"].is_string());
    verify(
        &agent,
        &kc,
        second["access_token"].as_str().unwrap(),
        "account",
    );
    assert_eq!(
        refresh(&agent, &kc, &rt1).0,
        200,
        "old refresh token still valid"
    );

    // Central logout ends every session of the user.
    let (_, other) = login(&agent, &kc, "bob", "pw");
    kc.logout_user("bob");
    for token in [&rt2, other["refresh_token"].as_str().unwrap()] {
        assert_error(
            refresh(&agent, &kc, token),
            400,
            "invalid_grant",
            "Session not active",
        );
    }

    // Logout endpoint (refresh token + client auth): 204, then the session is gone.
    let (_, third) = login(&agent, &kc, "bob", "pw");
    let rt3 = third["refresh_token"].as_str().unwrap();
    let logout_url = format!("{}/protocol/openid-connect/logout", kc.issuer());
    let logout = |token: &str| {
        post_form(
            &agent,
            &logout_url,
            &[
                ("client_id", "edgeauth"),
                ("client_secret", "edgeauth-secret"),
                ("refresh_token", token),
            ],
        )
    };
    assert_eq!(logout(rt3), (204, Value::Null));
    assert_error(
        refresh(&agent, &kc, rt3),
        400,
        "invalid_grant",
        "Session not active",
    );
    assert_error(
        logout("nonsense"),
        400,
        "invalid_grant",
        "Invalid refresh token",
    );

    let (_, fourth) = login(&agent, &kc, "bob", "pw");
    let revoke_url = format!("{}/protocol/openid-connect/revoke", kc.issuer());
    let (status, _) = post_form(
        &agent,
        &revoke_url,
        &[
            ("client_id", "edgeauth"),
            ("client_secret", "edgeauth-secret"),
            ("token", fourth["access_token"].as_str().unwrap()),
        ],
    );
    assert_eq!(status, 200);

    // Password change and disabling.
    kc.set_password("bob", "new");
    assert_eq!(login(&agent, &kc, "bob", "pw").0, 401);
    let (status, fifth) = login(&agent, &kc, "bob", "new");
    assert_eq!(status, 200);
    kc.set_enabled("bob", false);
    assert_error(
        refresh(&agent, &kc, fifth["refresh_token"].as_str().unwrap()),
        400,
        "invalid_grant",
        "User disabled",
    );
    assert_error(
        login(&agent, &kc, "bob", "new"),
        400,
        "invalid_grant",
        "Account disabled",
    );
    kc.set_enabled("bob", true);
    assert_eq!(
        refresh(&agent, &kc, fifth["refresh_token"].as_str().unwrap()).0,
        200
    );
}

#[test]
fn client_credentials_grant() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    let (status, body) = post_form(
        &agent,
        &token_url(&kc),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "edgeauth"),
            ("client_secret", "edgeauth-secret"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["refresh_expires_in"], 0);
    let claims = verify(
        &agent,
        &kc,
        body["access_token"].as_str().unwrap(),
        "account",
    );
    assert_eq!(claims["preferred_username"], "service-account-edgeauth");
    assert_eq!(claims["azp"], "edgeauth");
    assert_eq!(claims["client_id"], "edgeauth");
}

#[test]
fn rotate_keys_and_counters() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    kc.add_user("carol", "pw", &[], &[], &[]);
    let certs = format!("{}/protocol/openid-connect/certs", kc.issuer());
    let sig_kids = || -> Vec<String> {
        let (_, jwks) = get_json(&agent, &certs);
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["use"] == "sig")
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let kid_of = |body: &Value| {
        jsonwebtoken::decode_header(body["access_token"].as_str().unwrap())
            .unwrap()
            .kid
            .unwrap()
    };

    let original = sig_kids();
    let (_, before) = login(&agent, &kc, "carol", "pw");
    assert_eq!(vec![kid_of(&before)], original);

    kc.rotate_keys(true);
    let (_, after) = login(&agent, &kc, "carol", "pw");
    let new_kid = kid_of(&after);
    assert_ne!(new_kid, original[0]);
    let kept = sig_kids();
    assert_eq!(kept.len(), 2);
    assert!(kept.contains(&new_kid) && kept.contains(&original[0]));
    verify(
        &agent,
        &kc,
        before["access_token"].as_str().unwrap(),
        "account",
    );
    verify(
        &agent,
        &kc,
        after["access_token"].as_str().unwrap(),
        "account",
    );

    kc.rotate_keys(false);
    let (_, third) = login(&agent, &kc, "carol", "pw");
    assert_eq!(sig_kids(), vec![kid_of(&third)]);
    assert!(!sig_kids().contains(&new_kid));

    // Counters: 3 logins so far, 6 certs fetches (4 sig_kids calls + 2 verify).
    assert_eq!(kc.token_requests(), 3);
    assert_eq!(kc.requests("/protocol/openid-connect/token"), 3);
    assert_eq!(kc.requests("/certs"), 6);
    kc.reset_counters();
    assert_eq!(kc.token_requests(), 0);
    agent
        .get(&format!("{}/health/ready", kc.base_url()))
        .call()
        .unwrap();
    get_json(
        &agent,
        &format!("{}/.well-known/openid-configuration", kc.issuer()),
    );
    assert_eq!(kc.requests("/health/ready"), 1);
    assert_eq!(kc.requests("/.well-known/openid-configuration"), 1);
    assert_eq!(kc.requests("/certs"), 0);
}

#[test]
fn fault_refused_then_back_on_same_port() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(2));
    let health = format!("{}/health/ready", kc.base_url());
    let port = kc.port();
    assert_eq!(agent.get(&health).call().unwrap().status(), 200);

    kc.set_fault(Fault::Refused);
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("port closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let err = agent.get(&health).call().expect_err("refused");
    assert!(
        !matches!(err, ureq::Error::Timeout(_)),
        "want a connection error, got {err:?}"
    );

    kc.set_fault(Fault::None);
    assert_eq!(kc.port(), port);
    assert_eq!(agent.get(&health).call().unwrap().status(), 200);
}

#[test]
fn fault_black_hole_times_out() {
    let kc = FakeKeycloak::start();
    let health = format!("{}/health/ready", kc.base_url());
    let keep_alive = agent(Duration::from_millis(300));
    assert_eq!(keep_alive.get(&health).call().unwrap().status(), 200);

    kc.set_fault(Fault::BlackHole);
    // A fresh connection is accepted but never answered.
    let mut stream = TcpStream::connect(("127.0.0.1", kc.port())).expect("accepted");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let err = stream.read(&mut [0u8; 16]).expect_err("no answer");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    let fresh = agent(Duration::from_millis(300));
    let started = Instant::now();
    let err = fresh.get(&health).call().expect_err("black hole");
    assert!(matches!(err, ureq::Error::Timeout(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The pooled keep-alive connection hangs too.
    let err = keep_alive.get(&health).call().expect_err("black hole");
    assert!(matches!(err, ureq::Error::Timeout(_)), "{err:?}");

    kc.set_fault(Fault::None);
    assert_eq!(fresh.get(&health).call().unwrap().status(), 200);

    // Dropping the fake mid-fault releases held connections and the port.
    kc.set_fault(Fault::BlackHole);
    let port = kc.port();
    let mut held = TcpStream::connect(("127.0.0.1", port)).expect("accepted");
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let started = Instant::now();
    drop(kc);
    assert!(started.elapsed() < Duration::from_secs(1), "drop is prompt");
    match held.read(&mut [0u8; 16]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("held connection not closed: {other:?}"),
    }
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("port released");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn fault_slow_status500_garbage() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    let health = format!("{}/health/ready", kc.base_url());
    let discovery = format!("{}/.well-known/openid-configuration", kc.issuer());

    kc.set_fault(Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(get_json(&agent, &discovery).0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    kc.set_fault(Fault::Status500);
    for url in [&health, &discovery] {
        let mut response = agent.get(url).call().unwrap();
        assert_eq!(response.status(), 500);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(response.headers().contains_key("date"));
        assert!(
            response
                .body_mut()
                .read_to_string()
                .unwrap()
                .contains("<html>")
        );
    }
    let (status, _) = agent
        .post(&token_url(&kc))
        .send_form([("grant_type", "password")])
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 500);

    kc.set_fault(Fault::Garbage);
    let mut response = agent.get(&health).call().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.body_mut().read_to_string().unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    kc.set_fault(Fault::None);
    assert_eq!(get_json(&agent, &health).0, 200);
    assert_eq!(kc.requests("/health/ready"), 3);
}

// ---------------------------------------------------------------------------------------------
// Admin REST API

fn admin_url(kc: &FakeKeycloak, path: &str) -> String {
    format!("{}/admin/realms/site{path}", kc.base_url())
}

/// An access token of the client_credentials grant (service account `service-account-edgeauth`).
fn service_token(agent: &ureq::Agent, kc: &FakeKeycloak) -> String {
    let (status, body) = post_form(
        agent,
        &token_url(kc),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "edgeauth"),
            ("client_secret", "edgeauth-secret"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// One admin API call: status, `Location` header and the body as JSON (Null when empty).
fn admin_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let with_auth = |builder: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match &auth {
        Some(a) => builder.header("Authorization", a),
        None => builder,
    };
    let with_auth_body = |builder: ureq::RequestBuilder<ureq::typestate::WithBody>| match &auth {
        Some(a) => builder.header("Authorization", a),
        None => builder,
    };
    let result = match (method, body) {
        ("GET", _) => with_auth(agent.get(url)).call(),
        ("DELETE", _) => with_auth(agent.delete(url)).call(),
        ("POST", Some(json)) => with_auth_body(agent.post(url)).send_json(json),
        ("PUT", Some(json)) => with_auth_body(agent.put(url)).send_json(json),
        ("PUT", None) => with_auth_body(agent.put(url)).send_empty(),
        (m, _) => panic!("unsupported {m}"),
    };
    let mut response = result.expect("admin call");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let text = response.body_mut().read_to_string().expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, location, body)
}

#[test]
fn admin_api_auth_faults_and_counters() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    kc.add_user("alice", "alice-pw-1", &[], &[], &[]);
    let users = admin_url(&kc, "/users?username=alice&exact=true");

    let unauthorized = serde_json::json!({"error": "HTTP 401 Unauthorized"});
    assert_eq!(
        admin_call(&agent, "GET", &users, None, None),
        (401, None, unauthorized.clone())
    );
    assert_eq!(
        admin_call(&agent, "GET", &users, Some("not.a.jwt"), None),
        (401, None, unauthorized.clone())
    );
    let (_, login_body) = login(&agent, &kc, "alice", "alice-pw-1");
    let user_token = login_body["access_token"].as_str().unwrap();
    assert_eq!(
        admin_call(&agent, "GET", &users, Some(user_token), None),
        (
            403,
            None,
            serde_json::json!({"error": "HTTP 403 Forbidden"})
        )
    );
    // A user token whose session has ended is not authenticated at all.
    kc.logout_user("alice");
    assert_eq!(
        admin_call(&agent, "GET", &users, Some(user_token), None),
        (401, None, unauthorized.clone())
    );
    // A token signed with a key no longer published is rejected.
    let token = service_token(&agent, &kc);
    let (status, _, found) = admin_call(&agent, "GET", &users, Some(&token), None);
    assert_eq!((status, found.as_array().unwrap().len()), (200, 1));
    kc.rotate_keys(false);
    assert_eq!(admin_call(&agent, "GET", &users, Some(&token), None).0, 401);
    let token = service_token(&agent, &kc);
    assert_eq!(admin_call(&agent, "GET", &users, Some(&token), None).0, 200);

    // Unknown paths and methods, after authentication.
    assert_eq!(
        admin_call(&agent, "GET", &admin_url(&kc, "/nope"), Some(&token), None).0,
        404
    );
    assert_eq!(
        admin_call(&agent, "GET", &admin_url(&kc, "/nope"), None, None).0,
        401
    );
    assert_eq!(
        admin_call(
            &agent,
            "DELETE",
            &admin_url(&kc, "/users/count"),
            Some(&token),
            None
        )
        .0,
        404,
        "DELETE /users/{{id}} with id `count`: User not found"
    );

    // Admin fault: every admin call, before authentication; other endpoints unaffected.
    kc.set_admin_fault(Some((
        500,
        r#"{"error":"unknown_error","error_description":"boom"}"#.to_string(),
    )));
    for token in [None, Some(token.as_str())] {
        let (status, _, body) = admin_call(&agent, "GET", &users, token, None);
        assert_eq!(status, 500);
        assert_eq!(body["error_description"], "boom");
    }
    assert_eq!(login(&agent, &kc, "alice", "alice-pw-1").0, 200);
    kc.set_admin_fault(Some((503, "{}".to_string())));
    assert_eq!(admin_call(&agent, "GET", &users, Some(&token), None).0, 503);
    kc.set_admin_fault(None);
    assert_eq!(admin_call(&agent, "GET", &users, Some(&token), None).0, 200);

    // The server-wide faults apply to the admin API too.
    kc.set_fault(Fault::Status500);
    assert_eq!(
        agent
            .get(&users)
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap()
            .status(),
        500
    );
    kc.set_fault(Fault::None);

    // Counters: by method and path (with the query).
    assert_eq!(kc.admin_requests("GET", "/users"), 12);
    assert_eq!(
        kc.admin_requests("GET", "/users?username=alice&exact=true"),
        12
    );
    assert_eq!(kc.admin_requests("get", "/nope"), 2);
    assert_eq!(kc.admin_requests("DELETE", "/users/"), 1);
    assert_eq!(kc.admin_requests("POST", "/users"), 0);
    kc.reset_counters();
    assert_eq!(kc.admin_requests("GET", "/users"), 0);
}

#[test]
fn admin_api_users() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    kc.add_user("Alice", "alice-pw-1", &[], &[], &["ops"]);
    let token = service_token(&agent, &kc);
    let call = |method: &str, path: &str, body: Option<Value>| {
        admin_call(&agent, method, &admin_url(&kc, path), Some(&token), body)
    };

    // Find by exact username (case-insensitive), 0 or 1 element.
    let (status, _, found) = call("GET", "/users?username=ALICE&exact=true", None);
    assert_eq!(status, 200);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1);
    let alice = &found[0];
    let alice_id = kc.user_id("alice").unwrap();
    assert_eq!(alice["id"], alice_id.as_str());
    assert_eq!(alice_id.len(), 36);
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["enabled"], true);
    assert_eq!(alice["emailVerified"], false);
    assert_eq!(alice["requiredActions"], serde_json::json!([]));
    assert!(alice.get("email").is_none(), "{alice}");
    let created = alice["createdTimestamp"].as_u64().unwrap();
    assert!(created > 1_600_000_000_000, "ms: {created}");
    assert_eq!(alice["access"], serde_json::json!({"manage": true}));
    assert_eq!(
        call("GET", "/users?username=alic&exact=true", None).2,
        serde_json::json!([])
    );
    assert_eq!(
        call("GET", "/users?username=lic", None).2[0]["username"],
        "alice"
    );

    // Create: 201, Location, empty body; then the user reads back; then 409.
    let (status, location, body) = call(
        "POST",
        "/users",
        Some(serde_json::json!({
            "username": "Bob",
            "enabled": true,
            "email": "Bob@Example.org",
            "firstName": "Bob",
            "credentials": [{"type": "password", "value": "bob-pw-123", "temporary": false}],
            "groups": ["/ops"],
        })),
    );
    assert_eq!((status, &body), (201, &Value::Null));
    let bob_id = kc.user_id("bob").expect("bob created");
    assert_eq!(
        location.as_deref(),
        Some(admin_url(&kc, &format!("/users/{bob_id}")).as_str())
    );
    let (status, _, bob) = admin_call(&agent, "GET", &location.unwrap(), Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(bob["username"], "bob");
    assert_eq!(bob["email"], "bob@example.org");
    assert_eq!(bob["firstName"], "Bob");
    assert!(bob.get("lastName").is_none());
    assert_eq!(bob["totp"], false);
    assert_eq!(bob["access"]["manage"], true);
    assert_eq!(bob["access"]["impersonate"], false);
    assert!(kc.user_exists("BOB"));
    assert!(kc.check_password("bob", "bob-pw-123"));
    assert_eq!(kc.user_groups("bob"), vec!["/ops".to_string()]);
    let (status, tokens) = login(&agent, &kc, "bob", "bob-pw-123");
    assert_eq!(status, 200, "{tokens}");
    let claims = verify(
        &agent,
        &kc,
        tokens["access_token"].as_str().unwrap(),
        "account",
    );
    assert_eq!(claims["sub"], bob_id.as_str());
    assert_eq!(claims["groups"], serde_json::json!(["/ops"]));

    let conflict = |body: Value| call("POST", "/users", Some(body));
    assert_eq!(
        conflict(serde_json::json!({"username": "BOB", "enabled": true})),
        (
            409,
            None,
            serde_json::json!({"errorMessage": "User exists with same username"})
        )
    );
    assert_eq!(
        conflict(serde_json::json!({"username": "bobby", "email": "BOB@example.org"})),
        (
            409,
            None,
            serde_json::json!({"errorMessage": "User exists with same email"})
        )
    );
    assert_eq!(
        conflict(serde_json::json!({"enabled": true})),
        (
            400,
            None,
            serde_json::json!({"errorMessage": "User name is missing"})
        )
    );
    let (status, _, body) = conflict(serde_json::json!({"username": "x", "enabled": "yes"}));
    assert_eq!(
        (status, &body["error"]),
        (400, &serde_json::json!("unknown_error"))
    );
    // An unknown group path fails the create (500) and creates nobody.
    assert_eq!(
        conflict(serde_json::json!({"username": "carol", "groups": ["/nope"]})).0,
        500
    );
    assert!(!kc.user_exists("carol"));
    // A password breaking the policy on create.
    assert_eq!(
        conflict(serde_json::json!({
            "username": "carol",
            "credentials": [{"type": "password", "value": "short", "temporary": false}],
        })),
        (
            400,
            None,
            serde_json::json!({"errorMessage": "Password policy not met"})
        )
    );
    assert!(!kc.user_exists("carol"));

    // Created without "enabled": disabled, no credential: the grant refuses.
    assert_eq!(conflict(serde_json::json!({"username": "carol"})).0, 201);
    let carol_id = kc.user_id("carol").unwrap();
    assert_eq!(
        call("GET", &format!("/users/{carol_id}"), None).2["enabled"],
        false
    );
    assert_eq!(
        call("GET", &format!("/users/{carol_id}/credentials"), None).2,
        serde_json::json!([])
    );

    // Partial update: disable (the grant then says so), other fields kept, re-enable.
    let bob_path = format!("/users/{bob_id}");
    assert_eq!(
        call(
            "PUT",
            &bob_path,
            Some(serde_json::json!({"enabled": false}))
        ),
        (204, None, Value::Null)
    );
    let bob = call("GET", &bob_path, None).2;
    assert_eq!(
        (&bob["enabled"], &bob["email"]),
        (
            &serde_json::json!(false),
            &serde_json::json!("bob@example.org")
        )
    );
    assert_error(
        login(&agent, &kc, "bob", "bob-pw-123"),
        400,
        "invalid_grant",
        "Account disabled",
    );
    assert_eq!(
        call(
            "PUT",
            &bob_path,
            Some(serde_json::json!({"enabled": true, "lastName": "B"}))
        )
        .0,
        204
    );
    assert_eq!(call("GET", &bob_path, None).2["lastName"], "B");
    assert_eq!(login(&agent, &kc, "bob", "bob-pw-123").0, 200);
    assert_eq!(
        call(
            "PUT",
            &bob_path,
            Some(serde_json::json!({"username": "alice"}))
        ),
        (
            409,
            None,
            serde_json::json!({"errorMessage": "User exists with same username"})
        )
    );

    // Paging (sorted by username) and count.
    for name in ["dave", "erin", "frank"] {
        kc.add_user(name, "pw-12345678", &[], &[], &[]);
    }
    let names = |path: &str| -> Vec<String> {
        call("GET", path, None)
            .2
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("/users?first=0&max=100"),
        ["alice", "bob", "carol", "dave", "erin", "frank"]
    );
    assert_eq!(names("/users?first=2&max=2"), ["carol", "dave"]);
    assert_eq!(
        names("/users?first=4&max=2&briefRepresentation=true"),
        ["erin", "frank"]
    );
    assert_eq!(names("/users?first=6&max=2"), Vec::<String>::new());
    assert_eq!(names("/users?search=da"), ["dave"]);
    let brief = call("GET", "/users?first=0&max=1&briefRepresentation=true", None).2;
    assert!(brief[0].get("requiredActions").is_none(), "{brief}");
    assert!(brief[0]["createdTimestamp"].is_u64());
    assert_eq!(
        call("GET", "/users/count", None),
        (200, None, serde_json::json!(6))
    );

    // Delete: 204, then 404 everywhere; the sync API agrees.
    assert_eq!(call("DELETE", &bob_path, None), (204, None, Value::Null));
    let not_found = (404, None, serde_json::json!({"error": "User not found"}));
    assert_eq!(call("GET", &bob_path, None), not_found);
    assert_eq!(call("DELETE", &bob_path, None), not_found);
    assert_eq!(
        call("PUT", &bob_path, Some(serde_json::json!({"enabled": true}))),
        not_found
    );
    assert!(!kc.user_exists("bob"));
    assert_eq!(call("GET", "/users/count", None).2, 5);
    assert_error(
        login(&agent, &kc, "bob", "bob-pw-123"),
        401,
        "invalid_grant",
        "Invalid user credentials",
    );
    kc.delete_user("dave");
    assert!(!kc.user_exists("dave"));
    assert_eq!(
        call("GET", "/users?username=dave&exact=true", None).2,
        serde_json::json!([])
    );
    assert_eq!(kc.admin_requests("POST", "/users"), 8);
    assert_eq!(kc.admin_requests("DELETE", &bob_id), 2);
}

#[test]
fn admin_api_passwords() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    kc.add_user("alice", "alice-old-pw", &[], &[], &[]);
    let token = service_token(&agent, &kc);
    let id = kc.user_id("alice").unwrap();
    let reset = |value: Value| {
        admin_call(
            &agent,
            "PUT",
            &admin_url(&kc, &format!("/users/{id}/reset-password")),
            Some(&token),
            Some(value),
        )
    };
    let credentials = || {
        admin_call(
            &agent,
            "GET",
            &admin_url(&kc, &format!("/users/{id}/credentials")),
            Some(&token),
            None,
        )
    };

    // Credentials list: one password credential, no secret.
    let (status, _, list) = credentials();
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let credential = &list[0];
    assert_eq!(credential["type"], "password");
    assert_eq!(credential["id"].as_str().unwrap().len(), 36);
    assert!(credential.get("value").is_none() && credential.get("secretData").is_none());
    assert_eq!(
        credential["createdDate"].as_u64(),
        kc.password_created_ms("alice")
    );
    let data: Value = serde_json::from_str(credential["credentialData"].as_str().unwrap()).unwrap();
    assert_eq!(data["algorithm"], "argon2");

    // Reset: 204; createdDate advances; the new password works in the grant, the old does not.
    kc.set_password_created_ms("alice", 1_000);
    assert_eq!(kc.password_created_ms("alice"), Some(1_000));
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        reset(serde_json::json!({"type": "password", "value": "alice-new-pw", "temporary": false})),
        (204, None, Value::Null)
    );
    let created = kc.password_created_ms("alice").unwrap();
    assert!(created >= before, "{created} < {before}");
    let (_, _, list) = credentials();
    assert_eq!(list[0]["createdDate"].as_u64(), Some(created));
    assert_eq!(
        list[0]["id"], credential["id"],
        "reset keeps the credential id"
    );
    assert!(kc.check_password("alice", "alice-new-pw"));
    assert!(!kc.check_password("alice", "alice-old-pw"));
    assert_eq!(login(&agent, &kc, "alice", "alice-new-pw").0, 200);
    assert_error(
        login(&agent, &kc, "alice", "alice-old-pw"),
        401,
        "invalid_grant",
        "Invalid user credentials",
    );

    // Policy violations (Keycloak 26's shape); nothing changes.
    assert_eq!(
        reset(serde_json::json!({"type": "password", "value": "short", "temporary": false})),
        (
            400,
            None,
            serde_json::json!({
                "error": "invalidPasswordMinLengthMessage",
                "error_description": "Invalid password: minimum length 8."
            })
        )
    );
    assert_eq!(
        reset(serde_json::json!({"type": "password", "value": "alice", "temporary": false})).0,
        400
    );
    kc.add_user("longusername", "pw-12345678", &[], &[], &[]);
    let long_id = kc.user_id("longusername").unwrap();
    let (status, _, body) = admin_call(
        &agent,
        "PUT",
        &admin_url(&kc, &format!("/users/{long_id}/reset-password")),
        Some(&token),
        Some(serde_json::json!({"type": "password", "value": "longusername", "temporary": false})),
    );
    assert_eq!(
        (status, body),
        (
            400,
            serde_json::json!({
                "error": "invalidPasswordNotUsernameMessage",
                "error_description": "Invalid password: must not be equal to the username."
            })
        )
    );
    assert!(kc.check_password("alice", "alice-new-pw"));
    assert_eq!(kc.password_created_ms("alice"), Some(created));
    assert_eq!(
        reset(serde_json::json!({"type": "password"})),
        (
            400,
            None,
            serde_json::json!({"error": "No password provided"})
        )
    );

    // A temporary password: the grant refuses until a permanent one is set.
    assert_eq!(
        reset(serde_json::json!({"type": "password", "value": "temp-pw-123", "temporary": true})).0,
        204
    );
    let user = admin_call(
        &agent,
        "GET",
        &admin_url(&kc, &format!("/users/{id}")),
        Some(&token),
        None,
    )
    .2;
    assert_eq!(
        user["requiredActions"],
        serde_json::json!(["UPDATE_PASSWORD"])
    );
    assert_error(
        login(&agent, &kc, "alice", "temp-pw-123"),
        400,
        "invalid_grant",
        "Account is not fully set up",
    );
    assert_eq!(
        reset(serde_json::json!({"type": "password", "value": "alice-3rd-pw", "temporary": false}))
            .0,
        204
    );
    assert_eq!(login(&agent, &kc, "alice", "alice-3rd-pw").0, 200);

    // The sync API's set_password updates createdDate too.
    kc.set_password_created_ms("alice", 2_000);
    kc.set_password("alice", "alice-4th-pw");
    assert!(kc.password_created_ms("alice").unwrap() >= created);
    assert_eq!(kc.admin_requests("PUT", "/reset-password"), 7);
    assert_eq!(
        reset(serde_json::json!({"value": "whatever-123"})).0,
        204,
        "type is not checked"
    );
    assert_eq!(kc.password_created_ms("nobody"), None);
    assert!(!kc.check_password("nobody", "x"));
}

#[test]
fn admin_api_groups_roles_and_clients() {
    let kc = FakeKeycloak::start();
    let agent = agent(Duration::from_secs(5));
    kc.add_user(
        "alice",
        "alice-pw-1",
        &["site-admin"],
        &["operator", "viewer"],
        &["ops", "/site/leads"],
    );
    let nurses_id = kc.add_group("nurses");
    assert_eq!(kc.add_group("/nurses/"), nurses_id, "stable ids");
    let token = service_token(&agent, &kc);
    let call = |method: &str, path: &str| {
        admin_call(&agent, method, &admin_url(&kc, path), Some(&token), None)
    };
    let id = kc.user_id("alice").unwrap();

    // Groups: top level only, by name; search nests matches under their top-level ancestor.
    let (status, _, groups) = call("GET", "/groups");
    assert_eq!(status, 200);
    let paths: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/nurses", "/ops", "/site"]);
    assert_eq!(groups[0]["id"], nurses_id.as_str());
    assert_eq!(groups[0]["name"], "nurses");
    assert_eq!(groups[0]["subGroups"], serde_json::json!([]));
    assert_eq!(groups[2]["subGroupCount"], 1);
    let (_, _, found) = call("GET", "/groups?search=OPS");
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["path"], "/ops");
    let (_, _, found) = call("GET", "/groups?search=lead");
    assert_eq!(found[0]["path"], "/site");
    assert_eq!(found[0]["subGroups"][0]["path"], "/site/leads");
    assert_eq!(found[0]["subGroups"][0]["parentId"], found[0]["id"]);
    assert_eq!(call("GET", "/groups?search=zzz").2, serde_json::json!([]));
    let (status, _, leads) = call("GET", "/group-by-path/site/leads");
    assert_eq!(status, 200);
    assert_eq!(
        (&leads["name"], &leads["path"]),
        (
            &serde_json::json!("leads"),
            &serde_json::json!("/site/leads")
        )
    );
    assert_eq!(
        call("GET", "/group-by-path/site/nope"),
        (
            404,
            None,
            serde_json::json!({"error": "Group path does not exist"})
        )
    );

    // Membership: list, join, leave (idempotent), unknown group.
    let user_group_paths = || -> Vec<String> {
        call("GET", &format!("/users/{id}/groups"))
            .2
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(user_group_paths(), ["/ops", "/site/leads"]);
    let membership = format!("/users/{id}/groups/{nurses_id}");
    assert_eq!(
        admin_call(
            &agent,
            "PUT",
            &admin_url(&kc, &membership),
            Some(&token),
            None
        ),
        (204, None, Value::Null)
    );
    assert_eq!(user_group_paths(), ["/nurses", "/ops", "/site/leads"]);
    assert_eq!(kc.user_groups("alice"), ["/nurses", "/ops", "/site/leads"]);
    let ops_id = groups[1]["id"].as_str().unwrap();
    assert_eq!(
        call("DELETE", &format!("/users/{id}/groups/{ops_id}")).0,
        204
    );
    assert_eq!(
        call("DELETE", &format!("/users/{id}/groups/{ops_id}")).0,
        204
    );
    assert_eq!(kc.user_groups("alice"), ["/nurses", "/site/leads"]);
    assert_eq!(
        call("DELETE", &format!("/users/{id}/groups/no-such-group")),
        (404, None, serde_json::json!({"error": "Group not found"}))
    );
    let (_, tokens) = login(&agent, &kc, "alice", "alice-pw-1");
    let claims = verify(
        &agent,
        &kc,
        tokens["access_token"].as_str().unwrap(),
        "account",
    );
    assert_eq!(
        claims["groups"],
        serde_json::json!(["/site/leads", "/nurses"])
    );

    // Realm role mappings: direct ones (with the composite default role), then effective ones.
    let (status, _, realm_roles) = call("GET", &format!("/users/{id}/role-mappings/realm"));
    assert_eq!(status, 200);
    let site_admin = realm_roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "site-admin")
        .unwrap_or_else(|| panic!("{realm_roles}"));
    assert_eq!(site_admin["composite"], false);
    assert_eq!(site_admin["clientRole"], false);
    assert_eq!(site_admin["id"].as_str().unwrap().len(), 36);
    let realm_id = site_admin["containerId"].as_str().unwrap();
    let names: HashSet<String> = realm_roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        HashSet::from(["site-admin".into(), "default-roles-site".into()])
    );
    let (_, _, effective) = call("GET", &format!("/users/{id}/role-mappings/realm/composite"));
    assert_eq!(effective.as_array().unwrap().len(), 4, "{effective}");
    let again = call("GET", &format!("/users/{id}/role-mappings/realm")).2;
    assert_eq!(again, realm_roles, "stable role ids");

    // Clients and client role mappings.
    let (status, _, clients) = call("GET", "/clients?clientId=edgeauth");
    assert_eq!(status, 200);
    assert_eq!(clients.as_array().unwrap().len(), 1);
    assert_eq!(clients[0]["clientId"], "edgeauth");
    assert_eq!(clients[0]["serviceAccountsEnabled"], true);
    let client_uuid = clients[0]["id"].as_str().unwrap();
    assert_ne!(client_uuid, realm_id);
    assert_eq!(
        call("GET", "/clients?clientId=nope").2,
        serde_json::json!([])
    );
    assert!(call("GET", "/clients").2.as_array().unwrap().len() > 1);
    let (status, _, client_roles) = call(
        "GET",
        &format!("/users/{id}/role-mappings/clients/{client_uuid}"),
    );
    assert_eq!(status, 200);
    let names: Vec<&str> = client_roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["operator", "viewer"]);
    assert_eq!(client_roles[0]["clientRole"], true);
    assert_eq!(client_roles[0]["composite"], false);
    assert_eq!(client_roles[0]["containerId"], client_uuid);
    assert_eq!(
        call(
            "GET",
            &format!("/users/{id}/role-mappings/clients/no-such-client")
        ),
        (404, None, serde_json::json!({"error": "Client not found"}))
    );
    assert_eq!(
        call("GET", "/users/no-such-user/role-mappings/realm"),
        (404, None, serde_json::json!({"error": "User not found"}))
    );
}
