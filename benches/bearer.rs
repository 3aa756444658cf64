//! What the verified-token cache saves: `Auth::identify` of a Keycloak access token (the
//! forward-auth hot path for apps that send one), in-process, with the cache on (a SHA-256 of
//! the token and a sharded map lookup) and off (`bearer.cache_ttl = "0s"`: the whole check,
//! RS256 signature included, per request). The token comes from the fake Keycloak's password
//! grant; its JWKS is fetched once, on the first unknown kid.
//!
//! Run: `cargo bench --bench bearer`. Figures in docs/PERFORMANCE.md.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../tests/support/fake_keycloak.rs"]
mod fake_keycloak;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use edgeauth::app::App;
use edgeauth::auth::principal::{Credential, Principal};
use edgeauth::config::Config;
use fake_keycloak::FakeKeycloak;

fn app(dir: &Path, kc: &FakeKeycloak, cache_ttl: &str) -> Arc<App> {
    let secret = dir.join("client-secret");
    std::fs::write(&secret, kc.client_secret()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[server]\ndata_dir = \"data\"\n[keycloak]\nserver = \"{}\"\nrealm = \"{}\"\n\
         client_id = \"{}\"\nclient_secret_file = \"client-secret\"\n\
         [bearer]\ncache_ttl = \"{cache_ttl}\"\n",
        kc.base_url(),
        kc.realm(),
        kc.client_id()
    );
    let config = Config::parse(&text, "bench.toml", dir).unwrap();
    App::open(config).expect("open app")
}

fn token(kc: &FakeKeycloak) -> String {
    let mut res = ureq::post(format!("{}/protocol/openid-connect/token", kc.issuer()))
        .send_form([
            ("grant_type", "password"),
            ("client_id", kc.client_id()),
            ("client_secret", kc.client_secret()),
            ("username", "alice"),
            ("password", "alice-password-1"),
        ])
        .unwrap();
    let body: serde_json::Value = res.body_mut().read_json().unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn bench_identify_token(c: &mut Criterion) {
    let kc = FakeKeycloak::start();
    kc.add_user(
        "alice",
        "alice-password-1",
        &["staff"],
        &["cashier"],
        &["front-desk"],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let credential = Credential::from_token(Some(&token(&kc))).unwrap();
    for (name, ttl) in [
        ("identify_keycloak_token_cached", "60s"),
        ("identify_keycloak_token_uncached", "0s"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), &kc, ttl);
        // The first check fetches the JWKS (an unknown kid); from then on no call is made.
        match rt.block_on(app.auth.identify(Some(&credential))).unwrap() {
            Principal::Token(t) => assert_eq!(t.username, "alice"),
            other => panic!("{other:?}"),
        }
        c.bench_function(name, |b| {
            b.iter(|| match rt.block_on(app.auth.identify(Some(&credential))) {
                Ok(Principal::Token(t)) => t,
                other => panic!("{other:?}"),
            })
        });
    }
}

criterion_group!(benches, bench_identify_token);
criterion_main!(benches);
