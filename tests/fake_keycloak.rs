//! Self-test of the in-process fake Keycloak (tests/support/fake_keycloak.rs): the Keycloak 26
//! response shapes edgeauth maps, token validation against the JWKS, sessions, key rotation,
//! counters and every fault.

mod support;

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
