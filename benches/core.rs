//! Criterion benchmarks of the hot paths, in-process:
//! - session validation (a redb read transaction plus the activity map);
//! - a full local login with the default argon2 parameters, next to a bare argon2id
//!   verification of the same parameters: the difference is edgeauth's overhead (regulation
//!   read, session insert, audit row, one fsync'd commit).
//!
//! Run: `cargo bench --bench core`. Figures go in docs/PERFORMANCE.md.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use criterion::{Criterion, criterion_group, criterion_main};
use edgeauth::app::App;
use edgeauth::auth::Client;
use edgeauth::auth::login::LoginRequest;
use edgeauth::auth::session::SessionCheck;
use edgeauth::config::Config;
use edgeauth::crypto::Secret;

fn app(dir: &std::path::Path) -> Arc<App> {
    let mut config = Config::default();
    config.server.data_dir = dir.to_path_buf();
    App::open(config).expect("open app")
}

fn add_user(rt: &tokio::runtime::Runtime, app: &Arc<App>, name: &str, password: &str) {
    use edgeauth::auth::accounts::NewUser;
    use edgeauth::domain::{Source, Tenant, UserKey, Username};
    rt.block_on(app.auth.add(NewUser {
        key: UserKey::new(Tenant::default_tenant(), Username::parse(name).unwrap()),
        profile: Default::default(),
        roles: vec!["staff".into()],
        groups: vec![],
        source: Source::Local,
        password: Secret::new(password),
    }))
    .expect("add user");
}

fn request(name: &str, password: &str) -> LoginRequest {
    LoginRequest {
        username: name.into(),
        password: Secret::new(password),
        tenant: None,
    }
}

fn bench_session_validation(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    add_user(&rt, &app, "bench", "bench-password");
    let ok = rt
        .block_on(
            app.auth
                .login(request("bench", "bench-password"), Client { ip: None }),
        )
        .unwrap();
    let sid = ok.session_id.expose().to_owned();
    c.bench_function("session_validation_in_process", |b| {
        b.iter(|| match app.auth.validate(&sid).unwrap() {
            SessionCheck::Valid(v) => v,
            SessionCheck::Invalid(r) => panic!("{r:?}"),
        })
    });
}

fn bench_login_vs_argon2(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    add_user(&rt, &app, "bench", "bench-password");

    let defaults = Config::default().argon2;
    let params = Params::new(
        defaults.memory_kib,
        defaults.iterations,
        defaults.parallelism,
        None,
    )
    .unwrap();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let phc = argon
        .hash_password(b"bench-password", &salt)
        .unwrap()
        .to_string();

    let mut g = c.benchmark_group("login_default_argon2");
    g.sample_size(30).measurement_time(Duration::from_secs(15));
    g.bench_function("bare_argon2id_verify", |b| {
        b.iter(|| {
            let parsed = PasswordHash::new(&phc).unwrap();
            Argon2::default()
                .verify_password(b"bench-password", &parsed)
                .unwrap()
        })
    });
    g.bench_function("hasher_verify_blocking_pool", |b| {
        let pw = Secret::new("bench-password");
        b.iter(|| rt.block_on(app.hasher.verify(&pw, Some(&phc))).unwrap())
    });
    g.bench_function("edgeauth_login", |b| {
        b.iter(|| {
            rt.block_on(
                app.auth
                    .login(request("bench", "bench-password"), Client { ip: None }),
            )
            .unwrap()
        })
    });
    g.finish();
}

/// The floor under any acknowledged write (rule 3): one small redb commit with fsync.
fn bench_commit(c: &mut Criterion) {
    use edgeauth::store::audit::{AuditEvent, AuditRecord};
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let row = AuditRecord {
        at: 1,
        event: AuditEvent::Login,
        tenant: "default".into(),
        username: "bench".into(),
        client_ip: None,
        outcome: "ok".into(),
        auth_mode: None,
    };
    c.bench_function("store_commit_one_audit_row", |b| {
        b.iter(|| app.store.write(|w| w.append_audit(&row)).unwrap())
    });
}

criterion_group!(
    benches,
    bench_session_validation,
    bench_login_vs_argon2,
    bench_commit
);
criterion_main!(benches);
