//! Sessions: creation, validation (the hot path: reads only, rule 8), logout, and the
//! in-memory activity map that records last use and is flushed to the store in batches.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::{AuthError, Client};
use crate::app::App;
use crate::crypto::{SessionDigest, SessionId};
use crate::domain::AuthMode;
use crate::store::StoreError;
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::sessions::{RevokeReason, SessionRecord};
use crate::store::users::UserRecord;
use crate::upstream::monitor::KeycloakStatus;

/// Why a presented session is not valid (design §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidReason {
    SessionNotFound,
    SessionExpired,
    TokenInvalid,
    Revoked,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::SessionNotFound => "session_not_found",
            InvalidReason::SessionExpired => "session_expired",
            InvalidReason::TokenInvalid => "token_invalid",
            InvalidReason::Revoked => "revoked",
        }
    }
}

/// A session that validated.
#[derive(Debug, Clone)]
pub struct ValidSession {
    pub digest: SessionDigest,
    pub session: SessionRecord,
    pub user: UserRecord,
    /// When it ends unless used again (the earlier of TTL and idle timeout).
    pub ends_at: u64,
    /// How it is served now: a `keycloak` session is `cached` while Keycloak is unreachable.
    pub mode: AuthMode,
    pub warning: Option<String>,
}

#[derive(Debug, Clone)]
pub enum SessionCheck {
    Valid(Box<ValidSession>),
    Invalid(InvalidReason),
}

const SHARDS: usize = 16;

/// Last use of each session since the last flush, sharded to keep lock contention low.
#[derive(Debug)]
pub struct Activity {
    shards: [Mutex<HashMap<SessionDigest, u64>>; SHARDS],
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

impl Activity {
    fn shard(&self, d: &SessionDigest) -> std::sync::MutexGuard<'_, HashMap<SessionDigest, u64>> {
        let i = usize::from(d[0]) % SHARDS;
        // A poisoned shard only means another thread panicked mid-insert; the map is still usable.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records use at `now`; returns the previous unflushed use, if any.
    pub fn touch(&self, d: &SessionDigest, now: u64) -> Option<u64> {
        self.shard(d).insert(*d, now)
    }

    pub fn get(&self, d: &SessionDigest) -> Option<u64> {
        self.shard(d).get(d).copied()
    }

    pub fn forget(&self, d: &SessionDigest) {
        self.shard(d).remove(d);
    }

    /// A copy of everything unflushed.
    pub fn snapshot(&self) -> Vec<(SessionDigest, u64)> {
        let mut out = Vec::new();
        for s in &self.shards {
            let m = s.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(m.iter().map(|(k, v)| (*k, *v)));
        }
        out
    }

    /// Drops entries that were flushed and not touched since.
    pub fn flushed(&self, done: &[(SessionDigest, u64)]) {
        for (d, at) in done {
            let mut m = self.shard(d);
            if m.get(d).is_some_and(|v| v <= at) {
                m.remove(d);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes the batched last-use times to the store in one transaction.
pub fn flush_activity(app: &App) -> Result<usize, StoreError> {
    let seen = app.activity.snapshot();
    if seen.is_empty() {
        return Ok(0);
    }
    app.store.write(|w| w.touch_sessions(&seen))?;
    app.activity.flushed(&seen);
    Ok(seen.len())
}

/// A fresh session record for `user`, starting at `now`.
pub fn new_session(app: &App, user: &UserRecord, auth_mode: AuthMode, now: u64) -> SessionRecord {
    SessionRecord {
        tenant: user.tenant.clone(),
        username: user.username.clone(),
        auth_mode,
        created_at: now,
        last_seen: now,
        expires_at: now.saturating_add(app.config.auth.session_ttl.as_secs()),
        revoked_at: None,
        revoked_reason: None,
        keycloak: None,
    }
}

/// Checks a presented session id. Reads only; the use is recorded in memory.
pub fn validate(app: &App, token: &str) -> Result<SessionCheck, StoreError> {
    let Some(id) = SessionId::parse(token) else {
        return Ok(SessionCheck::Invalid(InvalidReason::TokenInvalid));
    };
    let digest = id.digest();
    let now = app.clock.now();
    let idle = app.config.auth.session_idle.as_secs();
    let found = app.store.read(|r| {
        let Some(s) = r.session(&digest)? else {
            return Ok(None);
        };
        let user = r.user(&s.user_key())?;
        Ok(Some((s, user)))
    })?;
    let Some((session, user)) = found else {
        return Ok(SessionCheck::Invalid(InvalidReason::SessionNotFound));
    };
    if session.revoked_at.is_some() {
        return Ok(SessionCheck::Invalid(InvalidReason::Revoked));
    }
    let last_seen = app
        .activity
        .get(&digest)
        .map_or(session.last_seen, |a| a.max(session.last_seen));
    if now >= session.ends_at(last_seen, idle) {
        return Ok(SessionCheck::Invalid(InvalidReason::SessionExpired));
    }
    let Some(user) = user.filter(|u| u.enabled) else {
        return Ok(SessionCheck::Invalid(InvalidReason::Revoked));
    };
    let offline = session.auth_mode == AuthMode::Keycloak
        && app
            .keycloak
            .as_ref()
            .is_some_and(|k| k.status() == KeycloakStatus::Offline);
    let (mode, warning) = if offline {
        // Served from the cache, for at most token_grace_period after the tokens were renewed.
        let grace = app.config.keycloak.resilience.token_grace_period.as_secs();
        let renewed = session
            .keycloak
            .as_ref()
            .map_or(session.created_at, |t| t.renewed_at);
        if now.saturating_sub(renewed) > grace {
            return Ok(SessionCheck::Invalid(InvalidReason::SessionExpired));
        }
        (
            AuthMode::Cached,
            Some(
                "Keycloak is unreachable; this session is served from the site's cache".to_owned(),
            ),
        )
    } else {
        (session.auth_mode, None)
    };
    app.activity.touch(&digest, now);
    let ends_at = session.ends_at(now, idle);
    Ok(SessionCheck::Valid(Box::new(ValidSession {
        digest,
        session,
        user,
        ends_at,
        mode,
        warning,
    })))
}

/// Ends the presented session, if it exists. Idempotent; every call is audited.
pub async fn logout(app: &App, token: Option<&str>, client: Client) -> Result<(), AuthError> {
    let Some(id) = token.and_then(SessionId::parse) else {
        return Ok(());
    };
    let digest = id.digest();
    let now = app.clock.now();
    let ip = client.ip.map(|i| i.to_string());
    let revoked = super::write(&app.store, move |w| {
        let Some(s) = w.revoke_session(&digest, RevokeReason::Logout, now)? else {
            return Ok(None);
        };
        if s.revoked_at.is_none() {
            w.append_audit(&AuditRecord {
                at: now,
                event: AuditEvent::Logout,
                tenant: s.tenant.to_string(),
                username: s.username.to_string(),
                client_ip: ip,
                outcome: "ok".into(),
                auth_mode: Some(s.auth_mode),
            })?;
        }
        Ok(Some(s))
    })
    .await?;
    app.activity.forget(&digest);
    if let Some(s) = revoked {
        log::debug!("logout user={} tenant={}", s.username, s.tenant);
        end_keycloak_session(app, &s);
    }
    Ok(())
}

/// Ends the Keycloak session behind a site session, in the background (the user's logout is
/// already committed and answered). Skipped while Keycloak is unreachable.
pub fn end_keycloak_session(app: &App, s: &SessionRecord) {
    let (Some(kc), Some(sealed)) = (app.keycloak.clone(), s.keycloak.as_ref()) else {
        return;
    };
    if kc.status() == KeycloakStatus::Offline {
        return;
    }
    let key = s.user_key();
    let Some(tokens) = super::login::open_tokens(app, &key, sealed) else {
        return;
    };
    let Some(refresh) = tokens.refresh_token else {
        return;
    };
    let metrics = app.metrics.clone();
    tokio::spawn(async move {
        let tier = kc.tier(&key.tenant);
        let out = kc
            .call(&metrics, "logout", move || {
                tier.client.logout(&tier.endpoints(), &refresh)
            })
            .await;
        match out {
            Ok(()) => {
                log::debug!("Keycloak session of {key} ended")
            }
            other => log::info!("Keycloak logout of {key} did not complete: {other:?}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_flush_keeps_newer_touches() {
        let a = Activity::default();
        a.touch(&[1; 32], 10);
        a.touch(&[2; 32], 10);
        let snap = a.snapshot();
        a.touch(&[2; 32], 20);
        a.flushed(&snap);
        assert_eq!(a.get(&[1; 32]), None);
        assert_eq!(a.get(&[2; 32]), Some(20));
        assert_eq!(a.len(), 1);
    }
}
