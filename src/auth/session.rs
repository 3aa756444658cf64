//! Sessions: creation, validation (the hot path: reads only, rule 8), logout, and the
//! in-memory activity map that records last use and is flushed to the store in batches.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::{Auth, AuthError, Client};
use crate::crypto::{SessionDigest, SessionId};
use crate::domain::AuthMode;
use crate::store::StoreError;
use crate::store::audit::{AuditEvent, AuditRecord};
use crate::store::sessions::{RevokeReason, SessionRecord};
use crate::store::users::UserRecord;
use crate::upstream::KeycloakStatus;

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

impl Auth {
    /// Writes the batched last-use times to the store in one transaction.
    pub fn flush_activity(&self) -> Result<usize, StoreError> {
        let seen = self.activity.snapshot();
        if seen.is_empty() {
            return Ok(0);
        }
        self.store.write(|w| w.touch_sessions(&seen))?;
        self.activity.flushed(&seen);
        Ok(seen.len())
    }

    /// A fresh session record for `user`, starting at `now`.
    pub(super) fn new_session(
        &self,
        user: &UserRecord,
        auth_mode: AuthMode,
        now: u64,
    ) -> SessionRecord {
        SessionRecord {
            tenant: user.tenant.clone(),
            username: user.username.clone(),
            auth_mode,
            created_at: now,
            last_seen: now,
            expires_at: now.saturating_add(self.settings.session_ttl),
            revoked_at: None,
            revoked_reason: None,
            keycloak: None,
        }
    }

    /// Checks a presented session id. Reads only; the use is recorded in memory.
    pub fn validate(&self, token: &str) -> Result<SessionCheck, StoreError> {
        let Some(id) = SessionId::parse(token) else {
            return Ok(SessionCheck::Invalid(InvalidReason::TokenInvalid));
        };
        self.validate_digest(id.digest())
    }

    pub(super) fn validate_digest(
        &self,
        digest: SessionDigest,
    ) -> Result<SessionCheck, StoreError> {
        let now = self.clock.now();
        let idle = self.settings.session_idle;
        let found = self.store.read(|r| {
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
        let last_seen = self
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
            && self.upstream.status() == KeycloakStatus::Offline;
        let (mode, warning) = if offline {
            // Served from the cache, for at most token_grace_period after the tokens were renewed.
            let renewed = session
                .keycloak
                .as_ref()
                .map_or(session.created_at, |t| t.renewed_at);
            if !self.policy.offline.within_grace(renewed, now) {
                return Ok(SessionCheck::Invalid(InvalidReason::SessionExpired));
            }
            (
                AuthMode::Cached,
                Some(
                    "Keycloak is unreachable; this session is served from the site's cache"
                        .to_owned(),
                ),
            )
        } else {
            (session.auth_mode, None)
        };
        self.activity.touch(&digest, now);
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

    /// Ends the session `digest` names, if it exists. Idempotent; every call is audited.
    pub(super) async fn end_session(
        &self,
        digest: SessionDigest,
        client: Client,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let ip = client.ip.map(|i| i.to_string());
        let revoked = self
            .write(move |w| {
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
        self.activity.forget(&digest);
        if let Some(s) = revoked {
            log::debug!("logout user={} tenant={}", s.username, s.tenant);
            self.end_keycloak_session(&s);
        }
        Ok(())
    }

    /// Ends the Keycloak session behind a site session, in the background (the user's logout
    /// is already committed and answered). Skipped while Keycloak is unreachable.
    fn end_keycloak_session(&self, s: &SessionRecord) {
        let Some(sealed) = s.keycloak.as_ref() else {
            return;
        };
        if !self.upstream.enabled() || self.upstream.status() == KeycloakStatus::Offline {
            return;
        }
        let key = s.user_key();
        let Some(refresh) = self.tokens.open(&key, sealed).and_then(|t| t.refresh_token) else {
            return;
        };
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            match upstream.end_session(&key.tenant, refresh).await {
                Ok(()) => log::debug!("Keycloak session of {key} ended"),
                Err(e) => log::info!("Keycloak logout of {key} did not complete: {e:?}"),
            }
        });
    }
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
