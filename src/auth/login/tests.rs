//! The login decision table, in-process: a real store, hasher, policy and breaker, and an
//! upstream whose realm answers from a script (no network, cheap argon2). Each case takes
//! milliseconds; the black-box tests (`tests/`) and the e2e suite check the same paths from
//! outside.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::auth::tokens::TokenVault;
use crate::auth::{AuthParts, Settings};
use crate::clock::Clock;
use crate::config::{Config, Dur};
use crate::crypto::{Hasher, Sealer};
use crate::keycloak::token::VerifyError;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::store::Store;
use crate::sync::Queue;
use crate::upstream::{Identity, LoginApi, Unavailable, UnavailableKind, Upstream, UpstreamDeps};

/// What the scripted Keycloak answers to a password grant.
#[derive(Debug, Clone)]
enum Answer {
    Accept,
    Reject(Rejection),
    Down,
}

struct Script {
    answer: Mutex<Answer>,
    calls: AtomicUsize,
}

impl Script {
    fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl LoginApi for Script {
    fn password_grant(&self, _: &str, _: &Secret) -> Result<TokenSet, UpstreamError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.answer.lock().unwrap().clone() {
            Answer::Accept => Ok(TokenSet {
                access_token: "scripted".into(),
                refresh_token: Some("refresh".into()),
                expires_in: 300,
                refresh_expires_in: 1800,
            }),
            Answer::Reject(r) => Err(r.into()),
            Answer::Down => {
                Err(Unavailable::new(UnavailableKind::Connect, "connection refused").into())
            }
        }
    }
    fn refresh_grant(&self, _: &str) -> Result<TokenSet, UpstreamError> {
        Err(Unavailable::new(UnavailableKind::Connect, "scripted").into())
    }
    fn end_session(&self, _: &str) -> Result<(), UpstreamError> {
        Ok(())
    }
    fn probe(&self) -> Result<(), UpstreamError> {
        Ok(())
    }
    fn identity(&self, _: &str) -> Result<Identity, VerifyError> {
        Ok(Identity {
            roles: vec!["staff".into()],
            groups: vec!["/site".into()],
            ..Identity::default()
        })
    }
}

struct Harness {
    auth: Arc<Auth>,
    upstream: Arc<Upstream>,
    script: Arc<Script>,
    store: Arc<Store>,
    clock: Arc<Clock>,
    _dir: tempfile::TempDir,
}

fn config() -> Config {
    let mut c = Config::default();
    c.argon2.memory_kib = 256;
    c.argon2.iterations = 1;
    c
}

fn harness(c: Config, answer: Answer) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_or_create(dir.path()).unwrap());
    let clock = Arc::new(Clock::with_floor(0));
    let metrics = Arc::new(Metrics::new());
    let sealer = Sealer::create(&dir.path().join("seal.key")).unwrap();
    let script = Arc::new(Script {
        answer: Mutex::new(answer),
        calls: AtomicUsize::new(0),
    });
    let upstream = Arc::new(Upstream::scripted(
        script.clone(),
        &c.keycloak.resilience,
        UpstreamDeps {
            store: store.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            recovered: Arc::default(),
        },
    ));
    let auth = Arc::new(Auth::new(AuthParts {
        store: store.clone(),
        clock: clock.clone(),
        hasher: Hasher::new(&c.argon2).unwrap(),
        tokens: TokenVault::new(sealer.clone(), true),
        policy: Arc::new(Policy::from_config(&c)),
        upstream: upstream.clone(),
        metrics,
        queue: Queue::new(sealer),
        settings: Settings::from_config(&c),
    }));
    Harness {
        auth,
        upstream,
        script,
        store,
        clock,
        _dir: dir,
    }
}

/// A user as an earlier login or an operator left it.
struct Seed {
    source: Source,
    password: Option<&'static str>,
    enabled: bool,
    /// Seconds before now of the last online login (Keycloak users).
    online_ago: Option<u64>,
    /// Seconds before now of the last Keycloak tokens.
    tokens_ago: Option<u64>,
}

const KC: Seed = Seed {
    source: Source::Keycloak,
    password: Some("right-password"),
    enabled: true,
    online_ago: Some(3600),
    tokens_ago: Some(3600),
};

impl Harness {
    async fn seed(&self, name: &str, s: Seed) {
        let now = self.clock.now();
        let hash = match s.password {
            Some(p) => Some(self.auth.hasher.hash(&Secret::new(p)).await.unwrap()),
            None => None,
        };
        let u = UserRecord {
            tenant: crate::domain::Tenant::default_tenant(),
            username: crate::domain::Username::parse(name).unwrap(),
            source: s.source,
            password_hash: hash,
            roles: Vec::new(),
            groups: Vec::new(),
            client_roles: Vec::new(),
            name: None,
            email: None,
            enabled: s.enabled,
            created_at: now,
            updated_at: now,
            last_online_auth: s.online_ago.map(|a| now - a),
            tokens_at: s.tokens_ago.map(|a| now - a),
        };
        self.store.write(|w| w.put_user(&u)).unwrap();
    }

    async fn login(&self, name: &str, password: &str) -> Result<LoginOk, AuthError> {
        let req = LoginRequest {
            username: name.into(),
            password: Secret::new(password),
            tenant: None,
        };
        self.auth.login(req, Client { ip: None }).await
    }

    fn user(&self, name: &str) -> Option<UserRecord> {
        let key = crate::auth::user_key(None, name).unwrap();
        self.store.read(|r| r.user(&key)).unwrap()
    }
}

fn mode(r: &Result<LoginOk, AuthError>) -> AuthMode {
    r.as_ref().unwrap().session.auth_mode
}

#[tokio::test]
async fn online_ok_signs_in_with_keycloak_and_captures_the_user() {
    let h = harness(config(), Answer::Accept);
    let r = h.login("newcomer", "right-password").await;
    assert_eq!(mode(&r), AuthMode::Keycloak);
    let u = h.user("newcomer").unwrap();
    assert_eq!(u.source, Source::Keycloak);
    assert!(u.password_hash.is_some(), "hash captured for offline use");
    assert_eq!(u.roles, vec!["staff".to_owned()], "roles from the token");
    assert!(
        r.unwrap().session.keycloak.is_some(),
        "tokens sealed in the session"
    );
}

#[tokio::test]
async fn online_rejected_never_falls_back_and_clears_a_stale_hash() {
    let h = harness(config(), Answer::Reject(Rejection::InvalidCredentials));
    h.seed("alice", KC).await;
    let r = h.login("alice", "right-password").await;
    assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    assert!(h.user("alice").unwrap().password_hash.is_none());
}

#[tokio::test]
async fn online_disabled_disables_here_too() {
    let h = harness(config(), Answer::Reject(Rejection::AccountDisabled));
    h.seed("alice", KC).await;
    let r = h.login("alice", "right-password").await;
    assert!(matches!(r, Err(AuthError::AccountDisabled)), "{r:?}");
    assert!(!h.user("alice").unwrap().enabled);
}

#[tokio::test]
async fn online_not_set_up_is_its_own_answer() {
    let h = harness(config(), Answer::Reject(Rejection::AccountNotSetUp));
    let r = h.login("alice", "right-password").await;
    assert!(matches!(r, Err(AuthError::AccountSetupRequired)), "{r:?}");
}

#[tokio::test]
async fn unavailable_falls_back_to_the_cache_within_the_limits() {
    let h = harness(config(), Answer::Down);
    h.seed("cached", KC).await;
    h.seed(
        "stale",
        Seed {
            tokens_ago: Some(48 * 3600),
            ..KC
        },
    )
    .await;
    let r = h.login("cached", "right-password").await;
    assert_eq!(
        mode(&r),
        AuthMode::Cached,
        "tokens within token_grace_period"
    );
    assert!(r.unwrap().warning.is_some());
    assert_eq!(
        mode(&h.login("stale", "right-password").await),
        AuthMode::Local,
        "tokens older than the grace period"
    );
    let wrong = h.login("cached", "wrong-password").await;
    assert!(matches!(wrong, Err(AuthError::InvalidCredentials)));
    let unknown = h.login("nobody", "right-password").await;
    assert!(matches!(unknown, Err(AuthError::InvalidCredentials)));
}

#[tokio::test]
async fn an_open_circuit_makes_no_call_and_falls_back() {
    let mut c = config();
    c.keycloak.resilience.failure_threshold = 1;
    let h = harness(c, Answer::Down);
    h.seed("alice", KC).await;
    assert_eq!(
        mode(&h.login("alice", "right-password").await),
        AuthMode::Cached
    );
    assert_eq!(h.script.calls(), 1);
    h.script.set(Answer::Accept);
    let r = h.login("alice", "right-password").await;
    assert_eq!(
        mode(&r),
        AuthMode::Cached,
        "circuit open: the cache answers"
    );
    assert_eq!(h.script.calls(), 1, "no call while the circuit is open");
}

#[tokio::test]
async fn local_users_never_ask_keycloak() {
    let h = harness(config(), Answer::Reject(Rejection::InvalidCredentials));
    h.seed(
        "admin",
        Seed {
            source: Source::Local,
            online_ago: None,
            tokens_ago: None,
            ..KC
        },
    )
    .await;
    assert_eq!(
        mode(&h.login("admin", "right-password").await),
        AuthMode::Local
    );
    let wrong = h.login("admin", "wrong-password").await;
    assert!(matches!(wrong, Err(AuthError::InvalidCredentials)));
    assert_eq!(h.script.calls(), 0);
}

#[tokio::test]
async fn a_disabled_user_is_refused_with_the_right_password_only() {
    let h = harness(config(), Answer::Down);
    let disabled = Seed {
        enabled: false,
        ..KC
    };
    h.seed("gone", disabled).await;
    h.seed(
        "gone-local",
        Seed {
            source: Source::Local,
            enabled: false,
            ..KC
        },
    )
    .await;
    for name in ["gone", "gone-local"] {
        let r = h.login(name, "right-password").await;
        assert!(
            matches!(r, Err(AuthError::AccountDisabled)),
            "{name}: {r:?}"
        );
        let r = h.login(name, "wrong-password").await;
        assert!(
            matches!(r, Err(AuthError::InvalidCredentials)),
            "{name}: {r:?}"
        );
    }
}

#[tokio::test]
async fn degraded_allow_login_false_refuses_offline_logins() {
    let mut c = config();
    c.degraded.allow_login = false;
    let h = harness(c, Answer::Down);
    h.seed("alice", KC).await;
    let r = h.login("alice", "right-password").await;
    assert!(matches!(r, Err(AuthError::OfflineLoginNotAllowed)), "{r:?}");
}

#[tokio::test]
async fn the_offline_window_ends_offline_logins() {
    let h = harness(config(), Answer::Down);
    h.seed(
        "old",
        Seed {
            online_ago: Some(73 * 3600),
            ..KC
        },
    )
    .await;
    h.seed(
        "never",
        Seed {
            online_ago: None,
            ..KC
        },
    )
    .await;
    for name in ["old", "never"] {
        let r = h.login(name, "right-password").await;
        assert!(
            matches!(r, Err(AuthError::OfflineLoginExpired)),
            "{name}: {r:?}"
        );
    }
}

#[tokio::test]
async fn the_offline_lockout_holds_even_the_right_password() {
    let mut c = config();
    c.auth.offline.failed_login_attempts = 2;
    c.auth.offline.failed_login_delay = Dur::secs(300);
    c.keycloak.resilience.failure_threshold = 100;
    let h = harness(c, Answer::Down);
    h.seed("alice", KC).await;
    let first = h.login("alice", "wrong-password").await;
    assert!(
        matches!(first, Err(AuthError::InvalidCredentials)),
        "{first:?}"
    );
    let second = h.login("alice", "wrong-password").await;
    assert!(
        matches!(second, Err(AuthError::TooManyAttempts { .. })),
        "{second:?}"
    );
    let right = h.login("alice", "right-password").await;
    assert!(
        matches!(right, Err(AuthError::TooManyAttempts { .. })),
        "locked out offline: {right:?}"
    );
    h.script.set(Answer::Accept);
    assert_eq!(
        mode(&h.login("alice", "right-password").await),
        AuthMode::Keycloak,
        "the offline lockout does not hold online logins"
    );
}

#[tokio::test]
async fn regulation_bans_before_keycloak_is_asked() {
    let mut c = config();
    c.regulation.max_retries = 2;
    let h = harness(c, Answer::Reject(Rejection::InvalidCredentials));
    for _ in 0..2 {
        let _ = h.login("alice", "wrong-password").await;
    }
    let calls = h.script.calls();
    let r = h.login("alice", "right-password").await;
    assert!(matches!(r, Err(AuthError::TooManyAttempts { .. })), "{r:?}");
    assert_eq!(
        h.script.calls(),
        calls,
        "a banned attempt never reaches Keycloak"
    );
}

#[tokio::test]
async fn local_first_answers_from_the_hash_and_confirms_in_the_background() {
    let mut c = config();
    c.auth.order = AuthOrder::LocalFirst;
    let h = harness(c, Answer::Accept);
    h.seed("alice", KC).await;
    let r = h.login("alice", "right-password").await;
    assert_eq!(mode(&r), AuthMode::Local, "answered from the local hash");
    let digest = r.unwrap().session_id.digest();
    for _ in 0..200 {
        let s = h.store.read(|r| r.session(&digest)).unwrap().unwrap();
        if s.auth_mode == AuthMode::Keycloak {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the background confirmation did not upgrade the session");
}

#[tokio::test]
async fn local_first_without_a_hash_asks_keycloak_and_offline_uses_the_cache() {
    let mut c = config();
    c.auth.order = AuthOrder::LocalFirst;
    let h = harness(c, Answer::Accept);
    assert_eq!(
        mode(&h.login("newcomer", "right-password").await),
        AuthMode::Keycloak
    );
    h.seed("alice", KC).await;
    h.upstream.set_reachable(false, h.clock.now());
    let calls = h.script.calls();
    assert_eq!(
        mode(&h.login("alice", "right-password").await),
        AuthMode::Cached
    );
    assert_eq!(h.script.calls(), calls, "offline: no call");
}

/// Design rule 8: checking who a request is (the session check and forward-auth) commits
/// nothing, whatever the answer; only sign-in and sign-out do.
#[tokio::test]
async fn identify_never_writes_to_the_store() {
    use crate::auth::principal::{Credential, Principal};
    use crate::upstream::KeycloakStatus;
    let h = harness(config(), Answer::Accept);
    h.seed(
        "local-one",
        Seed {
            source: Source::Local,
            ..KC
        },
    )
    .await;
    let kc = h.login("newcomer", "right-password").await.unwrap();
    let local = h.login("local-one", "right-password").await.unwrap();
    let gone = h.login("local-one", "right-password").await.unwrap();
    let gone_credential = Credential::from_token(Some(gone.session_id.expose()));
    h.auth
        .logout(gone_credential.as_ref(), Client { ip: None })
        .await
        .unwrap();
    let before = h.store.commits();
    let presented = [
        Credential::from_token(Some(kc.session_id.expose())),
        Credential::from_token(Some(local.session_id.expose())),
        gone_credential,
        Credential::from_token(Some(
            "eas_0000000000000000000000000000000000000000000000000000000000000000",
        )),
        Credential::from_token(Some("not-a-session")),
        None,
    ];
    let mut valid = 0;
    for _ in 0..500 {
        for c in &presented {
            if let Principal::Session(_) = h.auth.identify(c.as_ref()).await.unwrap() {
                valid += 1;
            }
        }
    }
    assert_eq!(valid, 1000, "the two live sessions are valid every time");
    assert_eq!(
        h.store.commits(),
        before,
        "a session check committed a write"
    );
    // Offline too: a Keycloak session served from the cache is still only read. (The failed
    // logins that open the circuit write their audit rows first.)
    h.script.set(Answer::Down);
    for _ in 0..5 {
        let _ = h.login("newcomer", "right-password").await;
    }
    assert_eq!(h.upstream.status(), KeycloakStatus::Offline);
    let before = h.store.commits();
    let r = h.auth.identify(presented[0].as_ref()).await.unwrap();
    assert!(matches!(r, Principal::Session(ref v) if v.mode == AuthMode::Cached));
    for c in &presented {
        h.auth.identify(c.as_ref()).await.unwrap();
    }
    assert_eq!(h.store.commits(), before, "an offline session check wrote");
    // The counter does count: a sign-out is one commit at least.
    let c = Credential::from_token(Some(local.session_id.expose()));
    h.auth
        .logout(c.as_ref(), Client { ip: None })
        .await
        .unwrap();
    assert!(h.store.commits() > before);
}
