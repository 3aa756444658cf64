//! Keycloak access tokens as bearers, against the fake Keycloak: a token from its password
//! grant is a principal on `/api/v1/session` online, with Keycloak down, and after a restart
//! with Keycloak still down (the JWKS is persisted); ID and refresh tokens, other clients'
//! tokens, tampered and expired tokens are refused; unknown key ids refetch the JWKS at most
//! once per interval and only while Keycloak is reachable; introspection refuses a token whose
//! session was ended centrally, and falls back to the offline checks when Keycloak is down.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::fake_keycloak::{FakeKeycloak, Fault};
use support::{Appliance, Reply, online, wait_status};

/// The fake's password grant, straight to it (as an app does): the whole token response.
fn grant(kc: &FakeKeycloak, user: &str, password: &str, scope: &str) -> Value {
    let mut res = support::agent()
        .post(format!("{}/protocol/openid-connect/token", kc.issuer()))
        .send_form([
            ("grant_type", "password"),
            ("client_id", kc.client_id()),
            ("client_secret", kc.client_secret()),
            ("username", user),
            ("password", password),
            ("scope", scope),
        ])
        .unwrap();
    assert_eq!(res.status(), 200);
    res.body_mut().read_json().unwrap()
}

fn access_token(kc: &FakeKeycloak, user: &str, password: &str) -> String {
    grant(kc, user, password, "profile email")["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn session(a: &Appliance, token: &str) -> Reply {
    a.check_session(token)
}

fn assert_refused(r: &Reply, reason: &str) {
    assert_eq!(
        (
            r.status,
            r.body["valid"].as_bool(),
            r.body["reason"].as_str()
        ),
        (401, Some(false), Some(reason)),
        "{}",
        r.text
    );
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn assert_alice(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text);
    let b = &r.body;
    assert_eq!(
        (
            b["valid"].as_bool(),
            b["mode"].as_str(),
            b["via"].as_str(),
            b["user"]["username"].as_str(),
            b["user"]["tenant"].as_str(),
            b["user"]["source"].as_str(),
        ),
        (
            Some(true),
            Some("keycloak"),
            Some("keycloak_token"),
            Some("alice"),
            Some("default"),
            Some("keycloak")
        ),
        "{}",
        r.text
    );
    let roles = strings(&b["user"]["roles"]);
    for role in ["staff", "cashier", "offline_access"] {
        assert!(roles.contains(&role.to_owned()), "{role} in {roles:?}");
    }
    assert!(
        !roles.contains(&"manage-account".to_owned()),
        "another client's roles are client_roles only: {roles:?}"
    );
    assert!(
        strings(&b["user"]["client_roles"]).contains(&"edgeauth:cashier".to_owned()),
        "{}",
        r.text
    );
    assert_eq!(strings(&b["user"]["groups"]), ["/front-desk"]);
}

fn with_alice(kc: &FakeKeycloak) {
    kc.add_user(
        "alice",
        "alice-password-1",
        &["staff"],
        &["cashier"],
        &["front-desk"],
    );
}

#[test]
fn a_keycloak_token_is_accepted_online_offline_and_after_a_restart_offline() {
    let kc = FakeKeycloak::start();
    with_alice(&kc);
    let mut a = online(&kc, "");
    let token = access_token(&kc, "alice", "alice-password-1");
    assert_alice(&session(&a, &token));

    // Keycloak down: the stored JWKS verifies it; nothing is asked of Keycloak.
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    assert_alice(&session(&a, &token));

    // A restart with Keycloak still down: keys and issuer come from the database.
    a.stop();
    a.start();
    assert_alice(&session(&a, &token));
    let log = a.log();
    assert!(!log.contains("eyJ"), "no token in the log:\n{log}");
}

#[test]
fn other_tokens_and_broken_ones_are_refused() {
    let kc = FakeKeycloak::start();
    with_alice(&kc);
    let a = online(&kc, "");
    let all = grant(&kc, "alice", "alice-password-1", "openid profile");
    let access = all["access_token"].as_str().unwrap();
    assert_alice(&session(&a, access));

    // An ID token (typ ID, aud edgeauth: right issuer, key and client) is not a bearer.
    assert_refused(
        &session(&a, all["id_token"].as_str().unwrap()),
        "token_invalid",
    );
    // A refresh token (HS512, typ Refresh).
    assert_refused(
        &session(&a, all["refresh_token"].as_str().unwrap()),
        "token_invalid",
    );
    // A tampered payload: the realm roles of an administrator.
    let parts: Vec<&str> = access.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64_decode(parts[1])).unwrap();
    claims["realm_access"]["roles"] = json!(["staff", "edgeauth-operator"]);
    let forged = format!("{}.{}.{}", parts[0], b64(&claims.to_string()), parts[2]);
    assert_refused(&session(&a, &forged), "token_invalid");
    // alg none, and HS256 "signed" with the realm's public key.
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    assert_refused(&session(&a, &none), "token_invalid");
    let kid = jsonwebtoken::decode_header(access).unwrap().kid.unwrap();
    let jwks: Value = support::agent()
        .get(format!("{}/protocol/openid-connect/certs", kc.issuer()))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let n = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()["n"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid);
    let hs = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(n.as_bytes())).unwrap();
    assert_refused(&session(&a, &hs), "token_invalid");
    // Not a JWT, not a session: malformed.
    assert_refused(&session(&a, "eyJhbGciOiJSUzI1NiJ9.e30"), "token_invalid");
    drop(a);

    // Tokens for other clients only: this appliance accepts the "pos" app's tokens, and
    // edgeauth's own token (azp edgeauth, aud account) is not one.
    let pos = online(&kc, "[bearer]\naudiences = [\"pos\"]\n");
    assert_refused(&session(&pos, access), "token_invalid");
    drop(pos);
    let account = online(&kc, "[bearer]\naudiences = [\"pos\", \"account\"]\n");
    assert_alice(&session(&account, access));
    drop(account);
    let off = online(&kc, "[bearer]\nenabled = false\n");
    assert_refused(&session(&off, access), "token_invalid");
}

#[test]
fn an_expired_token_is_refused_after_the_leeway() {
    let kc = FakeKeycloak::start();
    with_alice(&kc);
    let a = online(&kc, "[bearer]\nleeway = \"1s\"\ncache_ttl = \"1h\"\n");
    kc.set_access_token_lifespan(Duration::from_secs(3));
    let token = access_token(&kc, "alice", "alice-password-1");
    let issued = Instant::now();
    let r = session(&a, &token);
    // Accepted (and cached for an hour) while it lives; a box so loaded that the first check
    // came after exp cannot say that, but the refusal below holds either way.
    if issued.elapsed() < Duration::from_secs(2) {
        assert_eq!(r.status, 200, "{}\n{}", r.text, a.log());
        assert_alice(&r);
    }
    // exp + leeway passed: refused, though it was cached for an hour (never past exp).
    std::thread::sleep(Duration::from_millis(5_100).saturating_sub(issued.elapsed()));
    assert_refused(&session(&a, &token), "session_expired");
}

/// A token the fake's key 3 signs with a key id nobody published.
fn forged_kid(kc: &FakeKeycloak, kid: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    let key = include_str!("fixtures/fake-keycloak-key-3.pem");
    jsonwebtoken::encode(
        &h,
        &json!({"iss": kc.issuer(), "exp": now + 300, "iat": now, "typ": "Bearer",
                "azp": "edgeauth", "preferred_username": "mallory", "sub": "m"}),
        &EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn unknown_key_ids_refetch_the_jwks_at_most_once_per_interval_and_only_online() {
    let kc = FakeKeycloak::start();
    with_alice(&kc);
    let a = online(&kc, "[bearer]\njwks_refetch_interval = \"3s\"\n");
    let before = access_token(&kc, "alice", "alice-password-1");
    assert_alice(&session(&a, &before));
    let certs = "/protocol/openid-connect/certs";
    // The monitor fetches the JWKS right after its first good probe, which may be just after
    // "online" shows: let any refetch the first check made age out of its interval.
    assert!(kc.requests(certs) >= 1);
    std::thread::sleep(Duration::from_millis(3_100));

    // Keycloak rotates its key: the first token signed with it refetches the JWKS once.
    kc.rotate_keys(true);
    kc.reset_counters();
    let rotated_at = Instant::now();
    let rotated = access_token(&kc, "alice", "alice-password-1");
    assert_alice(&session(&a, &rotated));
    assert_eq!(kc.requests(certs), 1, "one refetch for the new key");
    assert_alice(&session(&a, &before));

    // A flood of made-up key ids within the interval: refused, and no more refetches.
    for i in 0..20 {
        assert_refused(
            &session(&a, &forged_kid(&kc, &format!("nope-{i}"))),
            "token_invalid",
        );
    }
    // At most one refetch per 3 s interval since the rotation's (on a box so loaded that the
    // flood outlasted the interval, one more is allowed: the gate is per interval, not ever).
    let intervals = (rotated_at.elapsed().as_secs_f64() / 3.0) as usize;
    assert!(
        kc.requests(certs) <= 1 + intervals,
        "the gate held: {} refetches in {:?}",
        kc.requests(certs),
        rotated_at.elapsed()
    );

    // After the interval, one more.
    std::thread::sleep(Duration::from_millis(3_100));
    for i in 0..5 {
        assert_refused(
            &session(&a, &forged_kid(&kc, &format!("again-{i}"))),
            "token_invalid",
        );
    }
    let intervals = (rotated_at.elapsed().as_secs_f64() / 3.0) as usize;
    let n = kc.requests(certs);
    assert!(
        n >= 2 && n <= 1 + intervals,
        "one refetch per interval: {n} in {:?}",
        rotated_at.elapsed()
    );

    // Keycloak unreachable (it answers 500): no refetch at all, whatever the interval.
    kc.set_fault(Fault::Status500);
    wait_status(&a, "offline");
    std::thread::sleep(Duration::from_millis(3_100));
    let counted = kc.requests(certs);
    assert_refused(&session(&a, &forged_kid(&kc, "offline")), "token_invalid");
    assert_eq!(kc.requests(certs), counted, "no refetch while offline");
    assert_alice(&session(&a, &rotated));
}

#[test]
fn introspection_refuses_a_centrally_ended_session_and_falls_back_when_keycloak_is_down() {
    let kc = FakeKeycloak::start();
    with_alice(&kc);
    kc.add_user("bob", "bob-password-1", &[], &[], &[]);
    let a = online(
        &kc,
        "[bearer]\nintrospect = true\nintrospect_cache = \"3s\"\n",
    );
    let introspect = "/token/introspect";

    // Keycloak introspects only for a client in the token's aud: without an Audience mapper
    // every token is "not active", and the log says what to add.
    let plain = access_token(&kc, "alice", "alice-password-1");
    assert_refused(&session(&a, &plain), "revoked");
    assert!(a.log().contains("add an Audience mapper"), "{}", a.log());

    kc.set_audience_mapper(true);
    let alice = access_token(&kc, "alice", "alice-password-1");
    let bob = access_token(&kc, "bob", "bob-password-1");
    kc.reset_counters();
    let asked = Instant::now();
    assert_alice(&session(&a, &alice));
    assert_alice(&session(&a, &alice));
    // Within introspect_cache (3 s, on a clock of whole seconds) the second is answered from
    // the cache.
    if asked.elapsed() < Duration::from_millis(1_900) {
        assert_eq!(kc.requests(introspect), 1, "the answer is cached");
    }
    assert_eq!(session(&a, &bob).status, 200);

    // The administrator signs alice out in Keycloak: her token is still signed and unexpired,
    // but no longer active; refused once the cached answer is older than introspect_cache.
    kc.logout_user("alice");
    std::thread::sleep(Duration::from_millis(4_100));
    assert_refused(&session(&a, &alice), "revoked");
    assert_eq!(session(&a, &bob).status, 200);

    // Keycloak down: the offline checks decide (design rule 1: only an outage falls back).
    kc.set_fault(Fault::Refused);
    wait_status(&a, "offline");
    std::thread::sleep(Duration::from_millis(4_100));
    let r = session(&a, &bob);
    assert_eq!(
        (r.status, r.body["user"]["username"].as_str()),
        (200, Some("bob")),
        "{}",
        r.text
    );
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| A.iter().position(|&x| x == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &v)| n | v << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
