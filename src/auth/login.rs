//! Login. Today one tier: the local argon2 hash (local users, no Keycloak). The Keycloak tier
//! (design §3: online-first, falling back only on Unavailable) plugs in before the local check.
//!
//! Order of a login, and why:
//! 1. parse the request (bad input: 400, nothing recorded);
//! 2. regulation: a banned user or IP is refused before any password work (429);
//! 3. a hashing slot (503 `overloaded` when none frees in `argon2.max_wait`);
//! 4. verify against the user's hash, or the dummy hash for unknown users (same cost);
//! 5. one write transaction: the session, the audit row, the counters; then the answer.

use std::sync::Arc;

use super::regulation::{after_failure, banned_for, ip_subject, user_subject};
use super::session::new_session;
use super::{AuthError, Client, check_password_input, user_key};
use crate::app::App;
use crate::crypto::{Secret, SessionId, Verified};
use crate::domain::{AuthMode, UserKey};
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::sessions::SessionRecord;
use crate::store::users::UserRecord;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: Secret,
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoginOk {
    pub session_id: SessionId,
    pub session: SessionRecord,
    pub user: UserRecord,
    pub warning: Option<String>,
}

/// What a failed attempt did to the counters, decided inside the write transaction.
struct FailureOutcome {
    retry_after: Option<u64>,
}

pub async fn login(
    app: &Arc<App>,
    req: LoginRequest,
    client: Client,
) -> Result<LoginOk, AuthError> {
    let key = user_key(req.tenant.as_deref(), &req.username)?;
    check_password_input("password", req.password.expose())?;
    let now = app.clock.now();

    // 2. Regulation, before any password work.
    let subjects = Subjects::new(&key, client);
    let (user, banned) = app.store.read(|r| {
        let mut banned = None;
        for s in subjects.all() {
            if let Some(secs) = banned_for(r.strikes(s)?.as_ref(), now) {
                banned = Some(banned.unwrap_or(0).max(secs));
            }
        }
        Ok((r.user(&key)?, banned))
    })?;
    if let Some(retry_after) = banned {
        audit_only(app, &key, client, now, "too_many_attempts").await?;
        app.metrics.login("too_many_attempts", None);
        return Err(AuthError::TooManyAttempts { retry_after });
    }

    // 3–4. Verify (the dummy hash for unknown users: the same cost, never a match).
    let verified = match app
        .hasher
        .verify(
            &req.password,
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => {
            app.metrics.login("overloaded", None);
            return Err(e.into());
        }
    };
    let matched = matches!(verified, Verified::Match | Verified::MatchNeedsRehash);

    match user {
        Some(user) if matched && user.enabled => {
            let rehash = if verified == Verified::MatchNeedsRehash {
                app.hasher.hash(&req.password).await.ok()
            } else {
                None
            };
            succeed(app, user, client, now, rehash, subjects).await
        }
        Some(_) if matched => {
            // Right password, disabled account: say so (the caller proved the password), but
            // count nothing against the user.
            audit_only(app, &key, client, now, "account_disabled").await?;
            app.metrics.login("account_disabled", None);
            Err(AuthError::AccountDisabled)
        }
        _ => {
            let out = fail(app, &key, client, now, subjects).await?;
            app.metrics.login("invalid_credentials", None);
            log::debug!(
                "login failed user={} tenant={} ip={}",
                key.username,
                key.tenant,
                ip_text(client)
            );
            match out.retry_after {
                Some(retry_after) => Err(AuthError::TooManyAttempts { retry_after }),
                None => Err(AuthError::InvalidCredentials),
            }
        }
    }
}

/// The regulation subjects of one attempt: the user, and the client IP when known.
#[derive(Clone)]
struct Subjects {
    user: String,
    ip: Option<String>,
}

impl Subjects {
    fn new(key: &UserKey, client: Client) -> Self {
        Subjects {
            user: user_subject(key),
            ip: client.ip.map(ip_subject),
        }
    }
    fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.user.as_str()).chain(self.ip.as_deref())
    }
}

fn ip_text(client: Client) -> String {
    client.ip.map_or_else(|| "-".into(), |i| i.to_string())
}

fn audit_row(
    key: &UserKey,
    client: Client,
    now: u64,
    outcome: &str,
    mode: Option<AuthMode>,
) -> AuditRecord {
    AuditRecord {
        at: now,
        event: AuditEvent::Login,
        tenant: key.tenant.to_string(),
        username: key.username.to_string(),
        client_ip: client.ip.map(|i| i.to_string()),
        outcome: outcome.into(),
        auth_mode: mode,
    }
}

async fn audit_only(
    app: &App,
    key: &UserKey,
    client: Client,
    now: u64,
    outcome: &str,
) -> Result<(), AuthError> {
    let row = audit_row(key, client, now, outcome, None);
    super::write(&app.store, move |w| w.append_audit(&row).map(|_| ())).await
}

async fn fail(
    app: &App,
    key: &UserKey,
    client: Client,
    now: u64,
    subjects: Subjects,
) -> Result<FailureOutcome, AuthError> {
    let row = audit_row(key, client, now, "invalid_credentials", None);
    let cfg = app.config.regulation.clone();
    super::write(&app.store, move |w| {
        let mut retry_after = None;
        let limits = [
            (Some(subjects.user), cfg.max_retries),
            (subjects.ip, cfg.max_retries_per_ip),
        ];
        for (subject, limit) in limits {
            let Some(subject) = subject else { continue };
            let s = after_failure(w.strikes(&subject)?, now, limit, &cfg);
            if let Some(secs) = banned_for(Some(&s), now) {
                retry_after = Some(retry_after.unwrap_or(0u64).max(secs));
            }
            w.put_strikes(&subject, &s)?;
        }
        w.append_audit(&row)?;
        Ok(FailureOutcome { retry_after })
    })
    .await
}

async fn succeed(
    app: &App,
    mut user: UserRecord,
    client: Client,
    now: u64,
    rehash: Option<String>,
    subjects: Subjects,
) -> Result<LoginOk, AuthError> {
    let mode = AuthMode::Local;
    let session_id = SessionId::generate();
    let digest = session_id.digest();
    let session = new_session(app, &user, mode, now);
    let row = audit_row(&user.key(), client, now, "ok", Some(mode));
    let rehashed = rehash.is_some();
    if let Some(phc) = rehash {
        user.password_hash = Some(phc);
        user.updated_at = now;
    }
    let (s, u) = (session.clone(), user.clone());
    super::write(&app.store, move |w| {
        w.insert_session(&digest, &s)?;
        w.append_audit(&row)?;
        w.clear_strikes(&subjects.user)?;
        if rehashed {
            w.put_user(&u)?;
        }
        Ok(())
    })
    .await?;
    app.metrics.login("ok", Some(mode));
    log::debug!(
        "login ok user={} tenant={} auth_mode={} ip={}",
        user.username,
        user.tenant,
        mode,
        ip_text(client)
    );
    Ok(LoginOk {
        session_id,
        session,
        user,
        warning: None,
    })
}
